"""Asking Asterisk only for the events callrouter needs (router.ami.event_filter).

The selection itself (names, classes from the catalog, plugins that want
everything), the Filter actions that bring a session to it, and the AJAM
client applying it at login and at a reload, on the replaying transport of
``test_client``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.event_filter import (
    API_EVENTS,
    CORE_EVENTS,
    EVERYTHING,
    EventSelection,
    HeaderFilter,
    class_of,
    filter_refused,
    plan_filters,
    select_events,
)
from router.ami.message import Response
from tests.unit.ami.test_client import URL, FakeAsterisk

CATALOG = {
    "UserEvent": ("user",),
    "Newchannel": ("call",),
    "Newstate": ("call",),
    "Hangup": ("call",),
    "DialEnd": ("call",),
    "BridgeEnter": ("call",),
    "FullyBooted": ("system",),
    "Reload": ("system",),
    "Shutdown": ("system",),
    "QueueCallerJoin": ("agent",),
    "QueueCallerLeave": ("agent",),
    "QueueMemberStatus": ("agent",),
    "Cdr": ("cdr",),
}


def test_core_only_asks_for_the_core_events_and_their_classes() -> None:
    selection = select_events(catalog=CATALOG)
    assert selection.names == CORE_EVENTS
    assert selection.classes == frozenset({"user", "call", "dialplan", "system"})
    assert selection.mask == "call,dialplan,system,user"
    assert selection.login_fields() == (("Events", "call,dialplan,system,user"),)
    assert selection.wants("Hangup")
    assert not selection.wants("VarSet")


def test_rule_events_and_globs_are_added_from_the_catalog() -> None:
    selection = select_events(rule_patterns=["Cdr", "QueueCaller*"], catalog=CATALOG)
    assert selection.names == CORE_EVENTS | {"Cdr", "QueueCallerJoin", "QueueCallerLeave"}
    assert selection.classes is not None
    assert {"cdr", "agent"} <= selection.classes


def test_a_glob_matching_nothing_known_asks_for_everything() -> None:
    assert select_events(rule_patterns=["Custom*"], catalog=CATALOG) == EVERYTHING
    assert select_events(rule_patterns=["*"], catalog=CATALOG) == EVERYTHING
    assert select_events(plugins=[["*"]], catalog=CATALOG) == EVERYTHING


def test_plugins_contribute_and_none_means_everything() -> None:
    some = select_events(plugins=[["Cdr"], ()], catalog=CATALOG)
    assert some.names == CORE_EVENTS | {"Cdr"}
    assert select_events(plugins=[["Cdr"], None], catalog=CATALOG) == EVERYTHING
    assert EVERYTHING.mask == "on"
    assert EVERYTHING.login_fields() == ()


def test_an_event_of_unknown_class_keeps_every_class_but_filters_names() -> None:
    selection = select_events(plugins=[["MyModuleEvent"]], catalog=CATALOG)
    assert selection.names == CORE_EVENTS | {"MyModuleEvent"}
    assert selection.classes is None
    assert selection.mask == "on"


def test_classes_of_the_real_catalog_and_the_verified_table() -> None:
    selection = select_events(core=CORE_EVENTS | API_EVENTS)
    assert selection.classes == frozenset({"call", "dialplan", "system", "user"})
    assert class_of("Newexten", {}) == ("dialplan",)
    assert class_of("Nope", {}) is None


def test_plan_filters_narrows_a_fresh_session_and_only_widens_after() -> None:
    actions, after = plan_filters(frozenset({"Hangup", "UserEvent"}), frozenset())
    assert [a.params for a in actions] == [
        (("Operation", "Add"), ("MatchCriteria", "action(include),name(Hangup)"), ("Filter", "")),
        (
            ("Operation", "Add"),
            ("MatchCriteria", "action(include),name(UserEvent)"),
            ("Filter", ""),
        ),
    ]
    assert after == frozenset({"Hangup", "UserEvent"})
    # A narrower set adds nothing: filters cannot be removed from a session.
    assert plan_filters(frozenset({"Hangup"}), after) == ((), after)
    wider, after2 = plan_filters(frozenset({"Hangup", "Cdr"}), after)
    assert [a.params[1][1] for a in wider] == ["action(include),name(Cdr)"]
    assert after2 == frozenset({"Hangup", "UserEvent", "Cdr"})
    # Everything again: one include filter every event matches.
    opened, after3 = plan_filters(None, after2)
    assert [a.params for a in opened] == [(("Operation", "Add"), ("Filter", "Event:"))]
    assert after3 is None
    assert plan_filters(frozenset({"Hangup"}), None) == ((), None)
    assert plan_filters(None, frozenset()) == ((), frozenset())


def test_manager_conf_lines_for_an_administrator() -> None:
    selection = EventSelection(frozenset({"Hangup", "UserEvent"}), frozenset({"call", "user"}))
    assert selection.manager_conf_lines() == [
        "eventfilter(action(include),name(Hangup))=",
        "eventfilter(action(include),name(UserEvent))=",
    ]
    assert EVERYTHING.manager_conf_lines() == []


NEWEXTEN_AT_1 = HeaderFilter("Newexten", "Priority", frozenset({"1"}))
FOLDED_CEL = HeaderFilter("CEL", "EventName", frozenset({"HANGUP", "CHAN_START"}))


def test_header_filters_in_manager_conf_and_in_filter_actions() -> None:
    """A narrowed event's filter names its header: exact for one value, an
    anchored regex for several (Asterisk 22's advanced filters)."""
    selection = EventSelection(
        frozenset({"CEL", "Hangup", "Newexten"}),
        frozenset({"call", "dialplan"}),
        frozenset({NEWEXTEN_AT_1, FOLDED_CEL}),
    )
    assert selection.manager_conf_lines() == [
        "eventfilter(action(include),name(CEL),header(EventName),method(regex))"
        "=^(CHAN_START|HANGUP)$",
        "eventfilter(action(include),name(Hangup))=",
        "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1",
    ]
    actions, after = plan_filters(selection.names, frozenset(), selection.narrowed)
    assert [dict(a.params) for a in actions] == [
        {
            "Operation": "Add",
            "MatchCriteria": "action(include),name(CEL),header(EventName),method(regex)",
            "Filter": "^(CHAN_START|HANGUP)$",
        },
        {"Operation": "Add", "MatchCriteria": "action(include),name(Hangup)", "Filter": ""},
        {
            "Operation": "Add",
            "MatchCriteria": "action(include),name(Newexten),header(Priority),method(exact)",
            "Filter": "1",
        },
    ]
    assert after == frozenset({FOLDED_CEL, "Hangup", NEWEXTEN_AT_1})


def test_a_narrowed_event_widens_to_all_of_it_and_never_back() -> None:
    """A reload that needs every Newexten (an ``on: event Newexten`` rule) adds
    the plain name filter; a session that has it gets no header filter after."""
    _, after = plan_filters(frozenset({"Newexten"}), frozenset(), frozenset({NEWEXTEN_AT_1}))
    assert after == frozenset({NEWEXTEN_AT_1})
    wider, after2 = plan_filters(frozenset({"Newexten"}), after)
    assert [a.params[1][1] for a in wider] == ["action(include),name(Newexten)"]
    assert plan_filters(frozenset({"Newexten"}), after2, frozenset({NEWEXTEN_AT_1})) == (
        (),
        after2,
    )
    # Another landing priority: one more filter, Asterisk ORs include filters.
    at_1_or_5 = HeaderFilter("Newexten", "Priority", frozenset({"1", "5"}))
    more, after3 = plan_filters(frozenset({"Newexten"}), after, frozenset({at_1_or_5}))
    assert [a.params[2][1] for a in more] == ["^(1|5)$"]
    # Back to priority 1 only: already let through, nothing to add.
    assert plan_filters(frozenset({"Newexten"}), after3, frozenset({NEWEXTEN_AT_1}))[0] == ()


def test_a_name_no_event_has_never_reaches_a_filter_or_a_manager_conf_line() -> None:
    """Rules' event names are checked at load; a plugin's answer is not: a name
    with a bracket or a line break would rewrite the criteria or the file."""
    selection = EventSelection(
        frozenset({"Hangup", "AOC-D", "Bad),name(X", "Bad\nread = all"}), None
    )
    assert selection.manager_conf_lines() == [
        "eventfilter(action(include),name(AOC-D))=",
        "eventfilter(action(include),name(Hangup))=",
    ]
    actions, after = plan_filters(selection.names, frozenset())
    assert [a.params[1][1] for a in actions] == [
        "action(include),name(AOC-D)",
        "action(include),name(Hangup)",
    ]
    assert after == frozenset({"AOC-D", "Hangup"})
    # Every event Asterisk documents keeps its filter.
    from router.ami.catalog import load_catalog

    every = frozenset(load_catalog().events)
    assert len(EventSelection(every, None).include_filters()) == len(every)


@pytest.mark.parametrize("value", ["", "1|2", "a b", "(x)", "1\n2", "^1$"])
def test_a_header_filter_value_needs_no_escaping_anywhere(value: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        HeaderFilter("Newexten", "Priority", frozenset({value}))
    with pytest.raises(ValueError, match="letters, digits"):
        HeaderFilter("Newexten", "Priority", frozenset())


def test_filter_refused_is_permission_denied_only() -> None:
    denied = Response((("Response", "Error"), ("Message", "Permission denied")))
    broken = Response((("Response", "Error"), ("Message", "Filter did not compile")))
    assert filter_refused(denied)
    assert not filter_refused(broken)


class FilteringAsterisk(FakeAsterisk):
    """Answers Filter and Events; ``system`` says whether the user may Filter."""

    def __init__(self, *, system: bool) -> None:
        super().__init__()
        self.system = system

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = super().__call__(request)
        params = self.requests[-1]
        if params["Action"].lower() == "filter" and not self.system:
            from tests.unit.ami.test_client import reply

            aid = params.get("ActionID", "")
            return reply(
                f"Response: Error\r\nActionID: {aid}\r\nMessage: Permission denied\r\n\r\n".encode()
            )
        return response

    def sent(self, action: str) -> list[dict[str, str]]:
        return [p for p in self.requests if p["Action"].lower() == action.lower()]


def client_for(pbx: FakeAsterisk) -> AJAMClient:
    settings = ClientSettings(url=URL, username="router", secret="pw")
    return AJAMClient(settings, transport=httpx.MockTransport(pbx))


SELECTION = EventSelection(frozenset({"Hangup", "UserEvent"}), frozenset({"call", "user"}))


async def test_login_asks_for_the_classes_and_adds_name_filters() -> None:
    pbx = FilteringAsterisk(system=True)
    client = client_for(pbx)
    client.event_selection = SELECTION
    async with client:
        login = pbx.sent("Login")[0]
        assert login["Events"] == "call,user"
        assert [f["MatchCriteria"] for f in pbx.sent("Filter")] == [
            "action(include),name(Hangup)",
            "action(include),name(UserEvent)",
        ]
        assert pbx.sent("Events") == []  # the Login header already set the mask
        # A reload that needs one more event and one more class: widened in place.
        await client.set_events(
            EventSelection(frozenset({"Hangup", "UserEvent", "Cdr"}), frozenset({"call", "cdr"}))
        )
        assert [e["EventMask"] for e in pbx.sent("Events")] == ["call,cdr"]
        assert pbx.sent("Filter")[-1]["MatchCriteria"] == "action(include),name(Cdr)"
        assert len(pbx.sent("Login")) == 1  # the session (and its queue) kept
        # Back to every event: the mask opens and one match-all filter is added.
        await client.set_events(EVERYTHING)
        assert pbx.sent("Events")[-1]["EventMask"] == "on"
        assert pbx.sent("Filter")[-1] == {
            "Action": "Filter",
            "Operation": "Add",
            "Filter": "Event:",
            "ActionID": pbx.sent("Filter")[-1]["ActionID"],
        }


async def test_every_login_filters_its_new_session_again() -> None:
    pbx = FilteringAsterisk(system=True)
    client = client_for(pbx)
    client.event_selection = SELECTION
    async with client:
        pbx.expire_next = 1
        await client.action("Ping")
        assert len(pbx.sent("Login")) == 2
        assert len(pbx.sent("Filter")) == 4
        assert all(login["Events"] == "call,user" for login in pbx.sent("Login"))


async def test_without_write_system_the_class_mask_alone_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="router.ami.client")
    pbx = FilteringAsterisk(system=False)
    client = client_for(pbx)
    client.event_selection = SELECTION
    async with client:
        assert pbx.sent("Login")[0]["Events"] == "call,user"
        assert len(pbx.sent("Filter")) == 1  # tried once, refused, not insisted
        assert "needs write = system" in caplog.text
        # manager.conf's eventfilter lines may filter them: not "are not filtered".
        assert "callrouter does not filter event names itself" in caplog.text
        assert "not filtered" not in caplog.text
        assert "check --manager-conf-file" in caplog.text
        await client.set_events(
            EventSelection(frozenset({"Hangup", "UserEvent", "Cdr"}), frozenset({"call", "cdr"}))
        )
        assert len(pbx.sent("Filter")) == 1
        assert pbx.sent("Events")[-1]["EventMask"] == "call,cdr"


async def test_everything_sends_no_filter_and_no_mask() -> None:
    pbx = FilteringAsterisk(system=True)
    async with client_for(pbx):
        assert "Events" not in pbx.sent("Login")[0]
        assert pbx.sent("Filter") == []
        assert pbx.sent("Events") == []


def test_events_key_is_read_and_a_bad_value_names_it(tmp_path: Path) -> None:
    from router.config import load_config
    from router.errors import ConfigError

    path = tmp_path / "router.toml"
    base = '[asterisk]\nurl = "http://pbx.test/asterisk"\nusername = "router"\nsecret = "x"\n'
    path.write_text(base, encoding="utf-8")
    assert load_config(path).asterisk.events == "auto"
    path.write_text(base + 'events = "all"\n', encoding="utf-8")
    assert load_config(path).asterisk.events == "all"
    path.write_text(base + 'events = "some"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[asterisk\] events"):
        load_config(path)


async def test_events_all_asks_for_everything_and_auto_for_the_selection(tmp_path: Path) -> None:
    from router.config import load_config
    from router.engine import Engine
    from router.plugins import Plugins

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: q\n    on: event QueueCallerJoin\n"
        "    do: [{ami: {action: UserEvent, userevent: x}}]\n",
        encoding="utf-8",
    )
    path = tmp_path / "router.toml"
    base = (
        '[asterisk]\nurl = "http://pbx.test/asterisk"\nusername = "router"\nsecret = "x"\n'
        "{events}"
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    for events, everything in (("", False), ('events = "all"\n', True)):
        path.write_text(base.format(events=events), encoding="utf-8")
        engine = Engine(load_config(path), plugins=Plugins.load(disabled=["recordings"]))
        await engine.setup()
        selection = await engine.event_selection()
        assert (selection == EVERYTHING) is everything
        if not everything:
            assert selection.names is not None
            assert "QueueCallerJoin" in selection.names
            assert "VarSet" not in selection.names


async def test_a_digest_client_filters_its_session_once() -> None:
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        from urllib.parse import parse_qsl

        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        seen.append(params)
        aid = params.get("ActionID", "")
        return httpx.Response(
            200,
            content=f"Response: Success\r\nActionID: {aid}\r\nMessage: ok\r\n\r\n".encode(),
            headers={"Content-Type": "text/plain"},
        )

    settings = ClientSettings(url=URL, username="router", secret="pw", auth="digest")
    client = AJAMClient(settings, transport=httpx.MockTransport(answer))
    await client.set_events(SELECTION)  # before the first request: nothing sent yet
    assert seen == []
    async with client:
        names = [p["Action"] for p in seen]
        assert names == ["Ping", "Events", "Filter", "Filter"]
