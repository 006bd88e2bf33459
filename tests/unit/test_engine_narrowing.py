"""The engine parses only the Newexten and CEL records it reads (issue 16).

A call makes one ``Newexten`` per dialplan step; the engine reads the step
into the inbound context (the prefetch trigger) and a Redirect's landing (its
confirmation), and of its CEL records the kinds the call life folds; it asks
its client to drop the rest unparsed (router/narrowing.py). Anyone
else who reads them (a rule, a plugin, the HTTP API for ``Newexten``,
``events = "all"``) turns that off.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from router.ami.message import Event
from router.calls import Call
from router.config import load_config
from router.engine import Engine
from router.hookspecs import hookimpl
from router.plugins import Plugins
from tests.unit.client_stub import Told

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

ROUTE = """version: 1
rules:
  - name: everyone
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""


class Reads:
    """A plugin whose ``callrouter_event`` reads these events (and says so)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        pass

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        return self.names


def write(tmp_path: Path, text: str = ROUTE) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text, encoding="utf-8")
    return rules


def newexten(channel: str, context: str, priority: str) -> str:
    """An event's raw text as a narrower sees it."""
    return (
        f"Event: Newexten\nPrivilege: dialplan,all\nChannel: {channel}\nContext: {context}\n"
        f"Exten: 74950000001\nPriority: {priority}\nApplication: NoOp"
    )


async def test_only_the_inbound_entry_and_the_landing_are_parsed(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    engine = await engine_factory(write(tmp_path), plugins=[Told()])
    # UserEvent is not narrowed, noted: a request's channel has its next step parsed.
    assert set(await engine.event_narrowing()) == {
        "Newexten",
        "CEL",
        "UserEvent",
        "Newstate",
        "DialState",
    }
    channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    for step in ("2", "3", "4"):  # the dialplan's steps before the request's answer
        ajam_replay.queue_event(
            {
                "Event": "Newexten",
                "Channel": channel,
                "Context": "callrouter-inbound",
                "Priority": step,
                "Linkedid": "x",
            }
        )
    await ajam_replay.settle(engine)
    (record,) = engine.records
    assert [(a.kind, a.status) for a in record.actions] == [("redirect", "confirmed")]
    call = engine.tracker.by_channel(channel)
    assert call is not None
    seen = [entry.detail for entry in call.timeline if entry.event == "Newexten"]
    # The entry (priority 1), the step after the request (Wait: the Redirect
    # waits for it, router/parking.py) and the landing; not 2, 3 or 4.
    assert [detail.split(" ")[0] for detail in seen] == [
        "callrouter-inbound,74950000001,1",
        "callrouter-inbound,74950000001,7",
        "callrouter-dial,101,1",
    ]


async def test_the_narrower_keeps_what_it_cannot_judge(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    engine = await engine_factory(write(tmp_path), plugins=[Told()])
    keep = (await engine.event_narrowing())["Newexten"]
    assert keep(newexten("PJSIP/a-1", "callrouter-inbound", "1"))
    assert not keep(newexten("PJSIP/a-1", "callrouter-inbound", "2"))
    assert not keep(newexten("PJSIP/a-1", "callrouter-dial", "1"))
    assert keep("Event: Newexten\nChannel: PJSIP/a-1\nContext: callrouter-inbound")
    assert keep("Event: Newexten\nChannel: PJSIP/a-1\nPriority: 1")
    future = engine.executor.confirmations.expect("PJSIP/a-1", "callrouter-dial")
    try:
        assert keep(newexten("PJSIP/a-1", "callrouter-dial", "1"))  # a Redirect waits for it
        assert keep(newexten("PJSIP/a-1", "callrouter-record", "4"))  # on its way there
        assert not keep(newexten("PJSIP/b-2", "callrouter-dial", "3"))
        assert keep("Event: Newexten\nContext: callrouter-dial\nPriority: 3")  # no Channel
    finally:
        engine.executor.confirmations.drop("PJSIP/a-1", future)


async def test_a_rule_or_a_plugin_reading_newexten_gets_every_one(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    steps = write(
        tmp_path,
        ROUTE
        + "  - name: steps\n    on: event New*\n"
        + "    do: [{ami: {action: UserEvent, userevent: x}}]\n",
    )
    engine = await engine_factory(steps, plugins=[Told()])
    # New* reads Newstate too; DialState stays the call life's alone.
    assert set(await engine.event_narrowing()) == {"CEL", "DialState"}

    (tmp_path / "p").mkdir()
    engine = await engine_factory(write(tmp_path / "p"), plugins=[Reads("Newexten", "CEL"), Told()])
    assert set(await engine.event_narrowing()) == {"Newstate", "DialState"}


async def test_only_the_cel_records_the_call_life_folds_are_parsed(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    from router.calllife.fold import FOLDED

    engine = await engine_factory(write(tmp_path), plugins=[Told()])
    keep = (await engine.event_narrowing())["CEL"]
    for name in FOLDED:
        assert keep(f"Event: CEL\nEventName: {name}\nUniqueID: 1.1\nLinkedID: 1.1")
    for name in ("CHAN_END", "BRIDGE_EXIT", "APP_START", "APP_END"):
        assert not keep(f"Event: CEL\nEventName: {name}\nUniqueID: 1.1\nLinkedID: 1.1")
    assert keep("Event: CEL\nEventname: CHAN_END\nUniqueID: 1.1")  # spelled otherwise: kept


async def test_the_api_and_events_all_turn_narrowing_off(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    from router.api.settings import ApiSettings

    engine = await engine_factory(write(tmp_path), api=ApiSettings(port=0), plugins=[Told()])
    assert set(await engine.event_narrowing()) == {"CEL"}  # the API reads every Newexten

    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://pbx.test/asterisk"\nusername = "router"\nsecret = "x"\n'
        'events = "all"\n'
        f'[router]\nrules = ["{write(tmp_path)}"]\nstate_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    engine = Engine(load_config(path), plugins=Plugins.load(disabled=["recordings"]))
    await engine.setup()
    assert await engine.event_narrowing() == {}


async def test_a_caller_name_cannot_hide_a_landing_from_the_narrower(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """Asterisk writes a channel's name before its caller ID: lines a hostile
    caller name smuggles in come after the real ``Channel``, which decides."""
    engine = await engine_factory(write(tmp_path), plugins=[Told()])
    keep = (await engine.event_narrowing())["Newexten"]
    future = engine.executor.confirmations.expect("PJSIP/a-1", "callrouter-dial")
    try:
        hostile = (
            "Event: Newexten\nChannel: PJSIP/a-1\nCallerIDNum: 79161234567\n"
            "CallerIDName: x\nChannel: PJSIP/other-9\nPriority: 7\n"
            "Context: callrouter-dial\nExten: 101\nPriority: 1"
        )
        assert keep(hostile)
    finally:
        engine.executor.confirmations.drop("PJSIP/a-1", future)


async def test_the_selection_asks_asterisk_to_drop_what_the_narrowing_would(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """The narrowed events' filters name a header, so Asterisk does not even
    write the steps and records the engine would drop: Newexten at the
    priorities calls enter a context at (1, and each redirect rule's), the
    CEL records the call life folds."""
    from router.ami.event_filter import HeaderFilter
    from router.calllife.fold import FOLDED

    selection = await (await engine_factory(write(tmp_path), plugins=[Told()])).event_selection()
    assert selection.narrowed == {
        HeaderFilter("Newexten", "Priority", frozenset({"1"})),
        # The step after the request, which a Redirect waits for (router/parking.py).
        HeaderFilter("Newexten", "Application", frozenset({"Wait"})),
        HeaderFilter("Newexten", "Application", frozenset({"MusicOnHold"})),
        HeaderFilter("Newexten", "Application", frozenset({"WaitExten"})),
        HeaderFilter("CEL", "EventName", FOLDED),
        # A leg answering (the tracker) or ringing (the call life's sign).
        HeaderFilter("Newstate", "ChannelStateDesc", frozenset({"Up"})),
        HeaderFilter("Newstate", "ChannelStateDesc", frozenset({"Ringing"})),
        HeaderFilter("DialState", "DialStatus", frozenset({"RINGING"})),
    }
    lines = selection.manager_conf_lines()
    assert "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1" in lines
    for application in ("MusicOnHold", "Wait", "WaitExten"):  # exact: no regex to run
        assert (
            "eventfilter(action(include),name(Newexten),header(Application),method(exact))="
            + application
            in lines
        )
    assert "eventfilter(action(include),name(Newexten))=" not in lines

    (tmp_path / "p3").mkdir()
    at_3 = ROUTE.replace('exten: "101"}', 'exten: "101", priority: 3}')
    selection = await (
        await engine_factory(write(tmp_path / "p3", at_3), plugins=[Told()])
    ).event_selection()
    (steps,) = [f for f in selection.narrowed if f.event == "Newexten" and f.header == "Priority"]
    assert steps.values == {"1", "3"}  # a landing at 3 must reach the confirmation

    (tmp_path / "tpl").mkdir()
    templated = ROUTE.replace('exten: "101"}', 'exten: "101", priority: "{did}"}')
    engine = await engine_factory(write(tmp_path / "tpl", templated), plugins=[Told()])
    assert not engine.setup_problems
    selection = await engine.event_selection()
    # A priority known per call only: every step.
    assert {f.event for f in selection.narrowed} == {"CEL", "Newstate", "DialState"}
    assert "Newexten" in set(await engine.event_narrowing())  # still narrowed on our side


async def test_whoever_reads_every_step_gets_it_from_asterisk_too(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    from router.api.settings import ApiSettings

    steps = ROUTE + "  - name: steps\n    on: event New*\n"
    steps += "    do: [{ami: {action: UserEvent, userevent: x}}]\n"
    selection = await (
        await engine_factory(write(tmp_path, steps), plugins=[Told()])
    ).event_selection()
    assert {f.event for f in selection.narrowed} == {"CEL", "DialState"}
    assert "eventfilter(action(include),name(Newexten))=" in selection.manager_conf_lines()

    (tmp_path / "api").mkdir()
    engine = await engine_factory(
        write(tmp_path / "api"), api=ApiSettings(port=0), plugins=[Told()]
    )
    assert {f.event for f in (await engine.event_selection()).narrowed} == {"CEL"}


async def test_without_a_call_life_listener_no_cel_is_asked_for(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """CEL and DialState are the call life's alone: with no plugin to tell
    (no ``callrouter_call_event``), Asterisk is not asked for them."""
    selection = await (await engine_factory(write(tmp_path))).event_selection()
    assert selection.names is not None
    assert "CEL" not in selection.names
    assert "DialState" not in selection.names
    assert {f.event for f in selection.narrowed} == {"Newexten", "Newstate"}
    assert not any("CEL" in line for line in selection.manager_conf_lines())

    (tmp_path / "life").mkdir()
    engine = await engine_factory(write(tmp_path / "life"), plugins=[Told()])
    selection = await engine.event_selection()
    assert selection.names is not None
    assert {"CEL", "DialState"} <= selection.names


async def test_without_a_listener_or_the_api_only_answering_newstates_are_read(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """The tracker reads a ``Newstate`` only to see a leg answer; the
    ``Ringing`` the shipped dialplan makes just before its request would be
    handled in the request's own read. Asterisk is asked for ``Up`` alone,
    and the client drops the others unparsed (AJAM, or a user without the
    lines); whoever reads every state (the API, a rule or a plugin) gets
    them all."""
    from router.ami.event_filter import HeaderFilter
    from router.api.settings import ApiSettings

    engine = await engine_factory(write(tmp_path))
    selection = await engine.event_selection()
    assert HeaderFilter("Newstate", "ChannelStateDesc", frozenset({"Up"})) in selection.narrowed
    lines = selection.manager_conf_lines()
    assert (
        "eventfilter(action(include),name(Newstate),header(ChannelStateDesc),method(exact))=Up"
        in lines
    )
    assert "eventfilter(action(include),name(Newstate))=" not in lines
    keep = (await engine.event_narrowing())["Newstate"]
    state = "Event: Newstate\nChannel: PJSIP/a-1\nChannelState: {}\nChannelStateDesc: {}"
    assert keep(state.format(6, "Up"))
    assert not keep(state.format(5, "Ringing"))
    assert not keep(state.format(4, "Ring"))
    assert keep("Event: Newstate\nChannel: PJSIP/a-1")  # cannot judge: kept

    # A leg answering is still seen: the call is answered, its ringing is not parsed.
    channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    ajam_replay.queue_event(
        {"Event": "Newstate", "Channel": channel, "ChannelStateDesc": "Ringing", "Linkedid": "x"}
    )
    await ajam_replay.settle(engine)
    call = engine.tracker.by_channel(channel)
    assert call is not None
    assert not any(entry.event == "Newstate" for entry in call.timeline)
    ajam_replay.queue_event(
        {
            "Event": "Newstate",
            "Channel": "PJSIP/101-00000002",
            "ChannelStateDesc": "Up",
            "Linkedid": call.linkedid,
        }
    )
    await ajam_replay.settle(engine)
    assert call.answered
    assert [entry.event for entry in call.timeline].count("Newstate") == 1

    for name, kwargs in (
        ("api", {"api": ApiSettings(port=0)}),
        ("plugin", {"plugins": [Reads("Newstate")]}),
    ):
        (tmp_path / name).mkdir()
        other = await engine_factory(write(tmp_path / name), **kwargs)
        assert "Newstate" not in await other.event_narrowing(), name
        assert not any(f.event == "Newstate" for f in (await other.event_selection()).narrowed)
    (tmp_path / "rule").mkdir()
    states = ROUTE + "  - name: states\n    on: event Newstate\n"
    states += "    do: [{ami: {action: UserEvent, userevent: x}}]\n"
    other = await engine_factory(write(tmp_path / "rule", states))
    assert "Newstate" not in await other.event_narrowing()


async def test_a_call_life_listener_gets_only_the_ringing_and_answering_states(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """With a plugin told the call life (the 1C plugin), the engine reads a
    ``Newstate`` to see a leg answer or ring, and a ``DialState`` to see it
    ring: Asterisk is asked for those alone, and the client drops the others
    (``Ring``, ``Dialing``, ``PROGRESS``...: some on every leg) unparsed.
    The API, a rule or a plugin that reads them gets every one."""
    from router.ami.event_filter import HeaderFilter
    from router.api.settings import ApiSettings

    engine = await engine_factory(write(tmp_path), plugins=[Told()])
    selection = await engine.event_selection()
    assert {f for f in selection.narrowed if f.event in ("Newstate", "DialState")} == {
        HeaderFilter("Newstate", "ChannelStateDesc", frozenset({"Up"})),
        HeaderFilter("Newstate", "ChannelStateDesc", frozenset({"Ringing"})),
        HeaderFilter("DialState", "DialStatus", frozenset({"RINGING"})),
    }
    lines = selection.manager_conf_lines()
    for line in (
        "eventfilter(action(include),name(Newstate),header(ChannelStateDesc),method(exact))=Up",
        "eventfilter(action(include),name(Newstate),header(ChannelStateDesc),method(exact))=Ringing",
        "eventfilter(action(include),name(DialState),header(DialStatus),method(exact))=RINGING",
    ):
        assert line in lines
    assert "eventfilter(action(include),name(Newstate))=" not in lines
    assert "eventfilter(action(include),name(DialState))=" not in lines
    narrowing = await engine.event_narrowing()
    state = "Event: Newstate\nChannel: PJSIP/a-1\nChannelState: {}\nChannelStateDesc: {}"
    keep = narrowing["Newstate"]
    assert keep(state.format(6, "Up"))
    assert keep(state.format(5, "Ringing"))
    for number, desc in ((4, "Ring"), (3, "Dialing"), (0, "Down"), (7, "Busy")):
        assert not keep(state.format(number, desc))
    assert keep("Event: Newstate\nChannel: PJSIP/a-1")  # cannot judge: kept
    dial = "Event: DialState\nDestChannel: PJSIP/101-1\nDialStatus: {}"
    keep = narrowing["DialState"]
    assert keep(dial.format("RINGING"))
    for status in ("PROGRESS", "PROCEEDING"):
        assert not keep(dial.format(status))
    assert keep("Event: DialState\nDestChannel: PJSIP/101-1")  # cannot judge: kept

    (tmp_path / "api").mkdir()
    other = await engine_factory(write(tmp_path / "api"), api=ApiSettings(port=0), plugins=[Told()])
    assert not {"Newstate", "DialState"} & set(await other.event_narrowing())
    (tmp_path / "plugin").mkdir()
    other = await engine_factory(write(tmp_path / "plugin"), plugins=[Told(), Reads("DialState")])
    assert "DialState" not in await other.event_narrowing()
    assert not any(f.event == "DialState" for f in (await other.event_selection()).narrowed)
    assert "Newstate" in await other.event_narrowing()


async def test_the_api_asks_for_bridgeleave_with_bridgeenter(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """A transfer of a leg the tracker counts alone in its bridge waits for the
    other side (router.api.calls); a leg left alone when the other side walked
    out is told by ``BridgeLeave`` only. With ``[api]`` the engine asked for
    ``BridgeEnter`` and not ``BridgeLeave``: such a leg kept the count 2. Both
    now, in the names, the ``Filter`` actions and the manager.conf lines; without
    the API, which alone reads the count, ``BridgeLeave`` stays out (an event
    more per leg for nobody)."""
    from router.ami.event_filter import API_EVENTS
    from router.api.settings import ApiSettings

    assert {"BridgeEnter", "BridgeLeave"} <= API_EVENTS
    (tmp_path / "api").mkdir()
    api = await engine_factory(write(tmp_path / "api"), api=ApiSettings(port=0))
    selection = await api.event_selection()
    assert selection.names is not None
    assert {"BridgeEnter", "BridgeLeave"} <= selection.names
    assert "BridgeLeave" in selection.include_filters()
    assert "eventfilter(action(include),name(BridgeLeave))=" in selection.manager_conf_lines()
    assert selection.classes is not None
    assert "call" in selection.classes

    (tmp_path / "core").mkdir()
    core = await engine_factory(write(tmp_path / "core"))
    alone = await core.event_selection()
    assert alone.names is not None
    assert "BridgeEnter" in alone.names
    assert "BridgeLeave" not in alone.names


async def test_the_apis_plugins_are_called_only_for_the_events_they_read(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """The API's feed and live page register as plugins once the engine has
    started, after the plugins were asked which events they read: until asked
    too, each was called for every event, a BLF flood's ``DeviceStateChange``
    at the live page's counter, an event nobody reads at both (issue 16)."""
    from router.api.settings import ApiSettings

    engine = await engine_factory(write(tmp_path), api=ApiSettings(port=0))
    dispatch = engine.plugins
    assert [i.plugin_name for i in dispatch._impls_for_event("DeviceStateChange")] == ["api_feed"]
    assert [i.plugin_name for i in dispatch._impls_for_event("Newchannel")] == ["api_live"]
    assert not dispatch.reads_event("VarSet")
    assert not dispatch.reads_event("PresenceStateChange")
