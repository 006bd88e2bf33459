"""``callrouter check --asterisk`` (router/commands/preflight.py) on the replaying fake.

The fake answers as Asterisk 22 does: a ``Redirect`` of a channel that does not
exist is an error only after the class check, a ``UserEvent`` comes back to a
session that reads ``user``, ``ShowDialPlan`` lists what a handler gives.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import router.dialplan_watch
from router.ami.stream import StreamGap
from router.api.settings import ApiSettings
from router.commands.preflight import PROBE_EVENT, check_asterisk
from router.dialplan_lint import Finding, lint_inbound
from router.liveguard import Claim, LiveGuard, heartbeat_key
from router.privileges import ORIGINATE, REDIRECT, needed
from router.rules.registry import Registry
from router.rules.ruleset import RedirectTarget, load_rules
from router.testing import config_from_toml
from router.testing.asterisk import dialplan_steps, shipped_dialplan
from router.testing.replay import SentAction
from tests.unit.ami_answers import denied, error
from tests.unit.test_dialplan_lint import (
    dial_context_before_internal_forwards,
    shipped,
    with_playback_before_wait,
)
from tests.unit.test_liveguard import signed_as_before_at
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

REPO = Path(__file__).parents[2]
#: What Debian's package says (the sandbox's, in the page's example).
VERSION = "22.10.1+dfsg+~cs6.17.60671434-1"


def dialplan_answer(sent: SentAction) -> bytes:
    """``ShowDialPlan`` for the shipped inbound context, as Asterisk 22 writes it."""
    return steps_answer(sent, shipped())


def older_inbound() -> list[dict[str, str]]:
    """The shipped inbound context as copied before it set its own defaults of
    CALLROUTER_WAIT and CALLROUTER_DEFAULT: it read them from [globals] alone."""
    defaults = ("CALLROUTER_WAIT=", "CALLROUTER_DEFAULT=")
    items = [i for i in shipped() if not i["AppData"].startswith(defaults)]
    assert len(items) == len(shipped()) - 2
    return [{**item, "Priority": str(n)} for n, item in enumerate(items, 1)]


def older_answer(sent: SentAction) -> bytes:
    """``ShowDialPlan`` for :func:`older_inbound`."""
    return steps_answer(sent, older_inbound())


def steps_answer(sent: SentAction, items: list[dict[str, str]]) -> bytes:
    """``ShowDialPlan`` listing ``items``, as Asterisk 22 writes it."""
    aid = sent.action_id or ""
    blocks = [
        f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
        "Message: DialPlan list will follow\r\n"
    ]
    for item in items:
        fields = {**item, "ActionID": aid}
        blocks.append("".join(f"{k}: {v}\r\n" for k, v in fields.items()))
    blocks.append(
        f"Event: ShowDialPlanComplete\r\nEventList: Complete\r\nListItems: {len(items)}\r\n"
        f"ListExtensions: 1\r\nListPriorities: {len(items)}\r\nListContexts: 1\r\n"
        f"ActionID: {aid}\r\n"
    )
    return ("\r\n".join(blocks) + "\r\n").encode()


def dialplan_with(extensions: dict[str, set[str]] | None) -> Callable[[SentAction], object]:
    """``ShowDialPlan`` as Asterisk answers it: the shipped inbound context and
    the default route it falls back to, and ``extensions`` (context -> extension
    names; None: any context has any extension); "Did not find ..." for the rest."""

    def answer(sent: SentAction) -> object:
        context, exten = sent.get("Context") or "", sent.get("Extension")
        if context in ("callrouter-inbound", "callrouter-default"):
            return dialplan_answer(sent)
        known = None if extensions is None else extensions.get(context)
        if extensions is not None and known is None:
            return error(f"Did not find context {context}")
        if exten is not None and known is not None and exten not in known:
            return error(f"Did not find extension {exten}@{context}")
        return dialplan_answer(sent)  # any listing: the check looks only at success

    return answer


#: Where callrouter usually runs: on the PBX, over loopback (no transport advice).
LOOPBACK = "http://127.0.0.1:8088/asterisk"


async def run(replay: ReplayAsterisk, url: str = LOOPBACK, **options: Any) -> list[Finding]:
    client = replay.client(url=url)
    try:
        return await check_asterisk(client, listen=1.0, **options)
    finally:
        await client.aclose()


async def test_a_sound_setup_passes_every_check(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    found = await run(ajam_replay)
    assert [f.level for f in found] == ["ok"] * 5, found
    texts = [f.text for f in found]
    assert texts[0] == f"logged in to {LOOPBACK} as 'router'"
    assert texts[1] == "Redirect allowed (write = call)"
    assert texts[2].startswith("[callrouter-inbound] '_X.' priority 8: the request, then Wait")
    assert texts[3].startswith("UserEvents reach this user (its own came back in ")
    assert texts[4] == "no callrouter is live on this Asterisk now"
    # Nothing was moved: the Redirect named a channel no driver makes.
    (redirect,) = ajam_replay.sent("Redirect", probes=True)
    assert redirect.get("Channel") == "callrouter-check/no-such-channel"
    assert [u.get("UserEvent") for u in ajam_replay.sent("UserEvent")] == [PROBE_EVENT]


async def test_no_user_events_fail_with_the_causes_to_check(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    ajam_replay.read = frozenset({"call", "dialplan", "system"})
    found = await run(ajam_replay)
    (fail,) = [f for f in found if f.level == "fail"]
    assert fail.text.startswith("Asterisk sends this user no UserEvent (its own did not come")
    assert "(callrouter check --manager-conf) and that" in fail.text
    found = await run(ajam_replay, suggested_flags=" --username watcher")
    (fail,) = [f for f in found if f.level == "fail"]
    assert "(callrouter check --manager-conf --username watcher) and that" in fail.text
    for cause in ("add user to the read line of manager.conf [", "eventfilter", "disabledevents"):
        assert cause in fail.text


async def test_a_live_router_is_named(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    key = heartbeat_key(ajam_replay.secret)  # run with the same manager secret
    other = LiveGuard(Claim("3f2a9c1d", 1_795_000_000.417, "pbx", 812), key=key)
    ajam_replay.queue_event({"Event": "UserEvent", "Privilege": "user,all", **other.beat()})
    found = await run(ajam_replay)
    assert found[-1].text == (
        "a callrouter is live on this Asterisk: instance 3f2a9c1d on host pbx, pid 812, "
        "live since 2026-11-18 11:06:40.417 UTC"
    )


async def test_a_replayed_old_heartbeat_is_no_live_router(ajam_replay: ReplayAsterisk) -> None:
    """A signed beat recorded an hour ago and replayed (any manager user who
    reads ``user`` can) was listed as a live callrouter, though ``run``
    ignores a beat more than 30 s off Asterisk's clock: check applies the
    same rule, and says what it heard."""
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    key = heartbeat_key(ajam_replay.secret)
    recorded = LiveGuard(
        Claim("3f2a9c1d", 1_795_000_000.417, "pbx", 812),
        key=key,
        asterisk_clock=lambda: time.time() - 3600,
    )
    ajam_replay.queue_event({"Event": "UserEvent", "Privilege": "user,all", **recorded.beat()})
    found = await run(ajam_replay)
    assert not [f for f in found if f.text.startswith("a callrouter is live on")], found
    assert found[-2] == Finding("ok", "no callrouter is live on this Asterisk now")
    assert found[-1].level == "advice"
    assert found[-1].text.startswith(
        "a stale CallRouterLive heartbeat was not counted as a live callrouter (instance "
        "3f2a9c1d on host pbx, pid 812, live since 2026-11-18 11:06:40.417 UTC): sent 3600 s "
        "ago on Asterisk's clock, more than 30 s from now"
    )


async def test_a_fresh_heartbeat_without_event_timestamps_is_dated_by_a_ping(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Without ``timestampevents`` the beat's age is read against a Ping's time."""
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    key = heartbeat_key(ajam_replay.secret)
    old = LiveGuard(Claim("0ld0ld00", 1, "pbx", 9), key=key, asterisk_clock=lambda: 1000.0)
    new = LiveGuard(Claim("3f2a9c1d", 1_795_000_000.417, "pbx", 812), key=key)
    for guard in (old, new):
        ajam_replay.queue_event(
            {"Event": "UserEvent", "Privilege": "user,all", "Timestamp": "", **guard.beat()}
        )
    found = await run(ajam_replay)
    live = [f.text for f in found if f.text.startswith("a callrouter is live on")]
    assert live == [
        "a callrouter is live on this Asterisk: instance 3f2a9c1d on host pbx, pid 812, "
        "live since 2026-11-18 11:06:40.417 UTC"
    ]


async def test_a_heartbeat_of_another_secret_is_advice_not_a_live_router(
    ajam_replay: ReplayAsterisk,
) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    other = LiveGuard(Claim("3f2a9c1d", 1, "pbx", 812), key=heartbeat_key("another secret"))
    ajam_replay.queue_event({"Event": "UserEvent", "Privilege": "user,all", **other.beat()})
    found = await run(ajam_replay)
    assert found[-2] == Finding("ok", "no callrouter is live on this Asterisk now")
    assert found[-1].level == "advice"
    assert found[-1].text.startswith(
        "a CallRouterLive heartbeat not signed with this config's key (instance 3f2a9c1d "
        "on host pbx, pid 812, live since 1970-01-01 00:00:01.000 UTC): a callrouter run "
        "with another [asterisk] secret"
    )


async def test_a_live_router_of_a_version_before_at_is_named_as_one_to_upgrade(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Upgrading, step 2: the new version's check while the old one routes.
    Its heartbeat (no At) is signed with the same secret, so the advice says
    to upgrade the instances together, not that the secret differs."""
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    key = heartbeat_key(ajam_replay.secret)
    other = LiveGuard(Claim("3f2a9c1d", 1_795_000_000.417, "pbx", 812), key=key)
    ajam_replay.queue_event(
        {"Event": "UserEvent", "Privilege": "user,all", **signed_as_before_at(other.beat(), key)}
    )
    found = await run(ajam_replay)
    assert found[-2] == Finding("ok", "no callrouter is live on this Asterisk now")
    assert found[-1] == Finding(
        "advice",
        "a callrouter of an earlier version is live on this Asterisk (instance 3f2a9c1d on "
        "host pbx, pid 812, live since 2026-11-18 11:06:40.417 UTC): its heartbeat has no "
        "At, so this version and it do not notice each other and both would route every "
        "call; stop it before starting this one, and upgrade every instance on this "
        "Asterisk together (docs/operations.md, Upgrading)",
    )


async def test_refused_actions_and_a_missing_context_fail(ajam_replay: ReplayAsterisk) -> None:
    def no_context(sent: SentAction) -> list[tuple[str, str]]:
        return error("Did not find context callrouter-inbound")

    ajam_replay.on("Redirect", denied)
    ajam_replay.on("UserEvent", denied)
    ajam_replay.on("ShowDialPlan", no_context)
    found = await run(ajam_replay)
    assert [f.level for f in found] == ["ok", "fail", "fail", "fail"]
    assert found[1].text.startswith(
        "Asterisk refuses this user Redirect: add call to the write line of manager.conf [router]"
    )
    assert found[2].text.startswith("[callrouter-inbound] has no steps in Asterisk's dialplan")
    assert found[3].text.startswith(
        "Asterisk refuses this user UserEvent: add user to the write line of manager.conf [router]"
    )
    # it sent no UserEvent of its own, so nothing said whether one comes back
    # (hadmin41's trial: `read = call, user` passed unsaid beside this FAIL)
    assert (
        "until then this check cannot see whether the routing requests, UserEvents, "
        "reach this user (read = user) nor whether a callrouter is live" in found[3].text
    )


async def test_a_user_without_write_reporting_fails(ajam_replay: ReplayAsterisk) -> None:
    """A user without ``write = reporting`` passed (exit 0) with only "the
    dialplan could not be read" as ADVICE, though callrouter's reconcile after
    every gap (``CoreShowChannels``) is then refused: the check asks for the
    class with a ``CoreStatus`` and fails naming it."""

    ajam_replay.on("CoreStatus", denied)
    ajam_replay.on("ShowDialPlan", denied)
    found = await run(ajam_replay)
    refused = [f for f in found if f.text.startswith("Asterisk refuses this user CoreStatus")]
    assert refused == [
        Finding(
            "fail",
            "Asterisk refuses this user CoreStatus: add reporting to the write line of "
            "manager.conf [router] (beside the classes there), then asterisk -rx 'manager "
            "reload' (docs/asterisk.md, the manager user); without it the calls still waiting "
            "after a gap (a reconnect, "
            "an Asterisk restart) are not listed (CoreShowChannels) and take their default "
            "route, and the dialplan is not checked; asterisk -rx 'manager show user router' "
            "shows the classes Asterisk took (a class after a comma and a space is none: "
            "write them without spaces)",
        )
    ]
    # With the class the probe says nothing: no line more for the right user.
    ajam_replay.on("CoreStatus", lambda sent: {"CoreCurrentCalls": "0"})
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    assert not [f for f in await run(ajam_replay) if "CoreStatus" in f.text]


async def test_a_refused_corestatus_is_said_once_as_the_finding(
    ajam_replay: ReplayAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: over tls:// on the sandbox a user without ``write =
    reporting`` got the FAIL and, on stderr, the client's own WARNING for the
    first refusal (``CoreStatus: Permission denied: ... needs one of the write
    classes reporting, system``), which also offers ``system``: said once."""

    ajam_replay.on("CoreStatus", denied)
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    caplog.set_level(logging.WARNING)
    found = await run(ajam_replay)
    assert [f.level for f in found if "CoreStatus" in f.text] == ["fail"]
    assert "CoreStatus" not in caplog.text


async def test_originate_is_asked_for_where_the_configuration_dials(
    ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """``[api]`` (click-to-call) needs ``write = originate``: check asks for it
    as ``callrouter run`` does after its login (router/privileges.py), with an
    ``Originate`` that names no channel, so nothing is dialled."""

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    base = config_from_toml(
        tmp_path,
        f'[asterisk]\nurl = "{ajam_replay.url}"\nusername = "router"\nsecret = "s"\n'
        f'[router]\nrules = ["{rules}"]\n',
    )
    assert needed(base, load_rules(base.router.rules, Registry())) == (REDIRECT,)
    with_api = replace(base, api=ApiSettings())
    probes = needed(with_api, load_rules(base.router.rules, Registry()))
    assert probes == (REDIRECT, ORIGINATE)
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    ajam_replay.on("Originate", denied)
    found = await run(ajam_replay, probes=probes)
    assert found[1].text == "Redirect allowed (write = call)"
    assert found[2].level == "fail"
    assert found[2].text == (
        "Asterisk refuses this user Originate: add originate to the write line of "
        "manager.conf [router] (beside the classes there), then asterisk -rx 'manager "
        "reload' (docs/asterisk.md, the manager user); without it the API's click-to-call "
        "and the rules' originate actions fail; asterisk -rx 'manager show user router' "
        "shows the classes Asterisk took (a class after a comma and a space is none: write "
        "them without spaces)"
    )
    (originate,) = ajam_replay.sent("Originate", probes=True)
    assert originate.get("Channel") is None


async def test_each_redirect_target_asterisk_lacks_is_named(ajam_replay: ReplayAsterisk) -> None:
    """A Redirect to a context or extension the dialplan lacks is accepted, and
    Asterisk hangs the call up: each such rule action is named with its line."""
    ajam_replay.on("ShowDialPlan", dialplan_with({"queues": {"sales", "_v."}}))
    targets = [
        RedirectTarget("queues", "sales", "default", "rules/a.yaml:7"),
        RedirectTarget("queues", "vip", "vip", "rules/a.yaml:12"),
        RedirectTarget("queues", "kazan", "kazan", "rules/a.yaml:20"),
        RedirectTarget("ivr", None, "closed", "rules/b.yaml:3"),
    ]
    found = await run(ajam_replay, targets=targets, built=2)
    fails = [f.text for f in found if f.level == "fail"]
    assert fails == [
        "rules/a.yaml:12: rule 'vip' redirects to extension 'vip' of context 'queues', which "
        "has no such extension: Asterisk accepts the Redirect and hangs the call up (or sends "
        "it to that context's i extension); correct the extension in the rule, or add it to "
        "'queues' in extensions.conf and run asterisk -rx 'dialplan reload'",
        "rules/a.yaml:20: rule 'kazan' redirects to extension 'kazan' of context 'queues', "
        "which has no such extension: Asterisk accepts the Redirect and hangs the call up (or "
        "sends it to that context's i extension); correct the extension in the rule, or add "
        "it to 'queues' in extensions.conf and run asterisk -rx 'dialplan reload'",
        "rules/b.yaml:3: rule 'closed' redirects to context 'ivr', which Asterisk's dialplan "
        "does not have: Asterisk accepts the Redirect and hangs the call up; correct the "
        "context in the rule, or add the context 'ivr' to extensions.conf and run "
        "asterisk -rx 'dialplan reload'",
    ]
    # Asked once per place (and once more for a context whose extension is missing).
    asked = [(a.get("Context"), a.get("Extension")) for a in ajam_replay.sent("ShowDialPlan")]
    assert asked.count(("queues", "sales")) == 1


async def test_a_shipped_context_asterisk_lacks_is_named_with_where_to_paste_it_from(
    ajam_replay: ReplayAsterisk,
) -> None:
    """An earlier README said to paste [callrouter-inbound] alone (issue 16): the
    shipped rules' redirect to [callrouter-dial] then FAILed with "add the context
    'callrouter-dial' to extensions.conf", as if the administrator were to write
    it; it is in examples/asterisk/extensions.conf, to paste."""
    ajam_replay.on("ShowDialPlan", dialplan_with({"queues": {"sales"}}))
    targets = [
        RedirectTarget("callrouter-dial", None, "owner", "rules/inbound.yaml:54"),
        RedirectTarget("callrouter-record", "s", "rec", "rules/inbound.yaml:80"),
    ]
    found = await run(ajam_replay, targets=targets, built=2)
    fails = [f.text for f in found if f.level == "fail"]
    assert fails == [
        f"rules/inbound.yaml:{line}: rule {rule!r} redirects to context '{context}', which "
        "Asterisk's dialplan does not have: Asterisk accepts the Redirect and hangs the call "
        f"up; paste [{context}] of examples/asterisk/extensions.conf into extensions.conf "
        "(a copy older than it, or [callrouter-inbound] pasted alone, lacks it) and run "
        "asterisk -rx 'dialplan reload'"
        for line, rule, context in (
            (54, "owner", "callrouter-dial"),
            (80, "rec", "callrouter-record"),
        )
    ]


async def test_targets_asterisk_has_are_one_line(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_with(None))
    targets = [
        RedirectTarget("queues", "sales", "default", "rules/a.yaml:7"),
        RedirectTarget("queues", "sales", "other", "rules/a.yaml:9"),
        RedirectTarget("ivr", None, "closed", "rules/b.yaml:3"),
    ]
    found = await run(ajam_replay, targets=targets, built=1)
    assert (
        Finding(
            "ok",
            "the rules redirect to 2 places Asterisk's dialplan has (1 more is built per call)",
        )
        in found
    )


async def test_a_refused_login_is_one_failure(ajam_replay: ReplayAsterisk) -> None:
    client = ajam_replay.client(secret="wrong")
    try:
        (found,) = await check_asterisk(client, listen=1.0)
    finally:
        await client.aclose()
    assert found.level == "fail"
    # Asterisk's refusal names the user and the url itself: said once.
    assert found.text.startswith(
        f"Asterisk refused login for 'router' at {ajam_replay.url}/rawman: Authentication failed"
    )
    assert found.text.count(ajam_replay.url) == 1


DOCS = REPO / "docs"
PAGES = {"asterisk.md": "## Checking the setup", "ru/asterisk.md": "## Проверка настройки"}


def section(page: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(PAGES[page])
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_shows_what_the_command_prints(
    page: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/asterisk.md (+ru) "Checking the setup": the command parses as shown,
    the rules line is what it prints in examples/, and each ``asterisk:`` line is
    what the checks print for the shipped snippet (the fake stands in for
    Asterisk 22.10.1 at the example's url; only the echo's milliseconds vary)."""
    from router.cli import build_parser
    from router.commands.check import _LEVELS, plugin_registry
    from router.commands.check import run as run_check
    from router.config import load_config
    from router.rules import load_rules
    from router.testing import ReplayAsterisk

    (console,) = re.findall(r"```console\n(.*?)```", section(page), re.S)
    command, rules_line, blank, *shown = console.rstrip("\n").split("\n")
    args = build_parser().parse_args(shlex.split(command.removeprefix("$ "))[1:])
    assert args.asterisk
    assert str(args.config) == "router.toml"
    args.asterisk = False  # the rules alone here; Asterisk's side from the fake below
    monkeypatch.chdir(REPO / "examples")
    assert run_check(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == rules_line
    assert blank == ""
    config = load_config(REPO / "examples" / "router.toml", environ={"CALLROUTER_SECRET": "s"})
    registry = plugin_registry(args)
    targets, built = load_rules(
        [REPO / "examples" / p for p in config.router.rules], registry.registry
    ).redirect_targets()

    async def fake() -> list[Finding]:
        replay = ReplayAsterisk(url="http://127.0.0.1:8088/asterisk")
        replay.on("ShowDialPlan", dialplan_with(None))
        replay.on("CoreSettings", lambda sent: {"AsteriskVersion": VERSION})
        # The page's user is the least-privilege one: no write = system.
        replay.on("Filter", denied)
        filtering = config.asterisk.events == "auto"
        return await run(replay, targets=targets, built=built, filtering=filtering)

    printed = [f"asterisk: {_LEVELS[f.level]} {f.text}" for f in asyncio.run(fake())]

    def same(line: str) -> str:
        return re.sub(r"came back in [\d.]+ ms", "came back in N ms", line)

    assert [same(line) for line in shown] == [same(line) for line in printed]

    (failure,) = re.findall(r"```text\n(.*?)\n```", section(page), re.S)
    (finding,) = lint_inbound(with_playback_before_wait())
    assert failure == f"asterisk: {_LEVELS[finding.level]} {finding.text}"


ENGINE_RULES = """version: 1
rules:
  - name: sales
    on: call
    do:
      - redirect: {context: queues, exten: sales}
"""


async def test_the_engine_warns_at_start_and_after_a_reload_of_what_loses_calls(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`callrouter run` need not wait for an admin to run the check: the engine
    asks at start and after each reload, and logs each problem as a WARNING
    (routing goes on: fail open); a sound dialplan is one INFO line."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")
    ajam_replay.on("ShowDialPlan", dialplan_with({"queues": {"support"}}))
    rules = tmp_path / "rules.yaml"
    rules.write_text(ENGINE_RULES, encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0))

    def warned() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith("dialplan: ")
        ]

    await eventually(warned, "the warning at start")
    (warning,) = warned()
    assert engine.metrics.dialplan_problems._value.get() == 1
    assert warning.startswith("dialplan: ")
    assert "rules.yaml:6: rule 'sales' redirects to " in warning
    assert "extension 'sales' of context 'queues', which has no such extension" in warning
    caplog.clear()
    rules.write_text(ENGINE_RULES.replace("exten: sales", "exten: support"), encoding="utf-8")
    assert await engine.reload_in_thread() is not None

    def checked() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if "dialplan checked at reload" in r.getMessage()
        ]

    await eventually(checked, "the all-clear after the reload")
    assert not warned()
    assert "the rules redirect to 1 place Asterisk's dialplan has" in checked()[0]
    assert engine.metrics.dialplan_problems._value.get() == 0


def test_without_the_secret_or_a_router_toml_it_says_so_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    assert main(["check", "--asterisk", "rules"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "asterisk: FAIL   no router.toml to connect with: give --config PATH"
    )
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "tcp://127.0.0.1:5038"\nusername = "router"\n'
        'secret_env = "CR_CHECK_SECRET"\n[router]\nrules = ["rules"]\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("CR_CHECK_SECRET", raising=False)
    assert main(["check", "--asterisk"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "asterisk: FAIL   cannot log in: the environment variable secret_env "
        "(or --secret-env) names (the [asterisk] secret) is not set here (name not "
        "shown: it may be the secret itself, pasted by mistake; if so, put the secret "
        "in the environment and give the variable's name here)"
    )


async def test_a_thousand_targets_in_one_context_cost_one_listing(
    ajam_replay: ReplayAsterisk,
) -> None:
    """The engine asks at every start and reload: the extensions are matched
    against the context's own listing (its patterns), and only one that
    matches none is asked of Asterisk."""

    def listing(sent: SentAction) -> bytes:
        aid = sent.action_id or ""
        if sent.get("Context") != "queues":
            return dialplan_answer(sent)
        if sent.get("Extension") is not None:  # asked because no pattern matched
            error = f"Response: Error\r\nActionID: {aid}\r\nMessage: Did not find extension"
            return f"{error}\r\n\r\n".encode()
        return (
            f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n"
            f"Event: ListDialplan\r\nActionID: {aid}\r\nContext: queues\r\nExtension: _d.\r\n"
            "Priority: 1\r\nApplication: NoOp\r\nAppData: \r\nRegistrar: pbx_config\r\n\r\n"
            f"Event: ShowDialPlanComplete\r\nEventList: Complete\r\nListItems: 1\r\n"
            f"ActionID: {aid}\r\n\r\n"
        ).encode()

    ajam_replay.on("ShowDialPlan", listing)
    targets = [RedirectTarget("queues", f"d{i}", f"r{i}", f"rules/d.yaml:{i}") for i in range(1000)]
    targets.append(RedirectTarget("queues", "vip", "vip", "rules/v.yaml:3"))
    found = await run(ajam_replay, targets=targets)
    fails = [f.text for f in found if f.level == "fail"]
    assert len(fails) == 1
    assert fails[0].startswith("rules/v.yaml:3: rule 'vip' redirects to extension 'vip'")
    asked = [(a.get("Context"), a.get("Extension")) for a in ajam_replay.sent("ShowDialPlan")]
    assert asked == [
        ("callrouter-inbound", None),
        ("callrouter-default", None),  # the default route's context (CALLROUTER_DEFAULT)
        ("queues", None),
        ("queues", "vip"),
    ]


async def test_a_dialplan_that_cannot_be_read_is_minus_one_not_a_problem(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """``callrouter_dialplan_problems`` -1 (docs/operations.md): the user may not
    read the dialplan; nothing is known, so nothing is counted as lost."""
    from router.engine import EngineOptions

    ajam_replay.on("ShowDialPlan", denied)
    rules = tmp_path / "rules.yaml"
    rules.write_text(ENGINE_RULES, encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0))
    await eventually(lambda: engine.metrics.dialplan_problems._value.get() == -1, "-1")


def context_answer(context: str, items: list[dict[str, str]]) -> Callable[[SentAction], object]:
    """``ShowDialPlan``: the shipped inbound context, and ``context`` listing ``items``."""

    def answer(sent: SentAction) -> object:
        if sent.get("Context") != context:
            return dialplan_answer(sent)
        return steps_answer(sent, items)

    return answer


def record_context(*, with_id: bool) -> Callable[[SentAction], object]:
    """``ShowDialPlan``: the shipped inbound context and ``[callrouter-record]``, that
    one as shipped or as copied before its MixMonitor had ``i(CALLROUTER_REC_ID)``."""
    items = dialplan_steps(shipped_dialplan(), "callrouter-record")
    if not with_id:
        for item in items:
            item["AppData"] = item["AppData"].replace("i(CALLROUTER_REC_ID)", "")
    return context_answer("callrouter-record", items)


async def test_with_recordings_an_old_record_context_is_named(
    ajam_replay: ReplayAsterisk,
) -> None:
    """A [callrouter-record] copied before i(CALLROUTER_REC_ID) records, but
    callrouter never stops it early (max_duration, the API): the check says so; the
    shipped one is one ok line; without [recordings] it is not looked at."""
    ajam_replay.on("ShowDialPlan", record_context(with_id=False))
    found = await run(ajam_replay, recording=True)
    (advice,) = [f for f in found if "callrouter-record" in f.text]
    assert advice.level == "advice"
    assert "MixMonitor without i(CALLROUTER_REC_ID)" in advice.text
    assert "max_duration" in advice.text
    assert not [f for f in await run(ajam_replay) if "callrouter-record" in f.text]
    ajam_replay.on("ShowDialPlan", record_context(with_id=True))
    (ok,) = [f for f in await run(ajam_replay, recording=True) if "callrouter-record" in f.text]
    assert ok == Finding("ok", "[callrouter-record]: MixMonitor stores its id in CALLROUTER_REC_ID")


async def test_with_recordings_a_missing_record_context_fails(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_with({}))
    (fail,) = [f for f in await run(ajam_replay, recording=True) if "callrouter-record" in f.text]
    assert fail.level == "fail"


async def test_with_recordings_a_systemname_no_recording_can_be_named_after_fails(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Issue 16: Asterisk's systemname begins every Linkedid, and a recording is
    named after its call's Linkedid: with a space or a Cyrillic letter in it no
    call was recorded, one error per call, and the check said nothing. A host
    name with dots is one a recording can be named after; without
    [recordings] the name is not judged."""
    ajam_replay.on("ShowDialPlan", record_context(with_id=True))
    for name in ("АТС офис", "pbx office", "pbx..example"):
        ajam_replay.on("CoreSettings", lambda sent, name=name: {"SystemName": name})
        found = await run(ajam_replay, recording=True)
        (fail,) = [f for f in found if "systemname" in f.text]
        assert fail.level == "fail", name
        assert "asterisk.conf" in fail.text
        assert "no call would be recorded" in fail.text
        assert not [f for f in await run(ajam_replay) if "systemname" in f.text]
    for name in ("pbx.example.com", "pbx-1", ""):
        ajam_replay.on("CoreSettings", lambda sent, name=name: {"SystemName": name})
        assert not [f for f in await run(ajam_replay, recording=True) if "systemname" in f.text]
    # hreview48, on the sandbox's Asterisk 22: a host name of the right
    # characters, only longer than a Linkedid leaves room for, was told to
    # "use letters, digits, '_', '-' and single dots", the very ones it had.
    long_name = "asterisk-production-node-01.msk.example.com"
    ajam_replay.on("CoreSettings", lambda sent: {"SystemName": long_name})
    (fail,) = [f for f in await run(ajam_replay, recording=True) if "systemname" in f.text]
    assert fail.level == "fail"
    assert "43 characters, over 38" in fail.text
    ajam_replay.on("CoreSettings", lambda sent: {"SystemName": long_name[:38]})
    assert not [f for f in await run(ajam_replay, recording=True) if "systemname" in f.text]


def dial_context(text: str) -> Callable[[SentAction], object]:
    """``ShowDialPlan``: the shipped inbound context and ``[callrouter-dial]`` of ``text``."""
    return context_answer("callrouter-dial", dialplan_steps(text, "callrouter-dial"))


OLD_DIAL = "[callrouter-dial] has no CALLROUTER_FWDINT_${...} branch (a copy older than it)"


async def test_with_the_api_an_old_dial_context_is_advised_to_be_pasted_again(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Issue 16: the shipped [callrouter-dial] now dials an internal forward
    through itself (CALLROUTER_FWDINT_101); an admin's copy pasted before that
    dials it through the trunk. With [api] on (it forwards), the check says so;
    the shipped one is an ok line; without [api] it is not looked at."""
    ajam_replay.on("ShowDialPlan", dial_context(dial_context_before_internal_forwards()))
    found = await run(ajam_replay, forwarding=True)
    (advice,) = [f for f in found if "callrouter-dial" in f.text]
    assert advice.level == "advice"
    assert advice.text.startswith(OLD_DIAL)
    assert "forwarding an extension to an internal number" in advice.text
    assert not [f for f in await run(ajam_replay) if "callrouter-dial" in f.text]
    ajam_replay.on("ShowDialPlan", dial_context(shipped_dialplan()))
    (ok,) = [f for f in await run(ajam_replay, forwarding=True) if "callrouter-dial" in f.text]
    assert ok == Finding("ok", "[callrouter-dial] dials an internal forward through itself")


def test_check_asterisk_advises_an_old_dial_context_when_router_toml_has_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command asks it of [callrouter-dial] when router.toml turns the API on."""
    from router.cli import main
    from router.testing import ReplayAsterisk

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    base = (
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "secret"\n[router]\nrules = ["rules"]\n'
    )

    def fake(settings: object) -> object:
        replay = ReplayAsterisk(url="http://127.0.0.1:8088/asterisk")
        replay.on("ShowDialPlan", dial_context(dial_context_before_internal_forwards()))
        return replay.client(url="http://127.0.0.1:8088/asterisk")

    monkeypatch.setattr("router.ami.connect.open_client", fake)
    for api, said in (("", 0), ('[api]\nlisten = "127.0.0.1:18089"\n', 1)):
        (tmp_path / "router.toml").write_text(base + api, encoding="utf-8")
        main(["check", "--asterisk"])
        lines = capsys.readouterr().out.splitlines()
        advice = [line for line in lines if "callrouter-dial" in line]
        assert len(advice) == said, lines
        assert all(line.startswith(f"asterisk: ADVICE {OLD_DIAL}") for line in advice)


async def test_the_engine_with_the_api_says_an_old_dial_context_at_start(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`callrouter run` with [api] asks it too, as it asks the rest of the dialplan."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")
    ajam_replay.on("ShowDialPlan", dial_context(dial_context_before_internal_forwards()))
    rules = tmp_path / "rules.yaml"
    rules.write_text(ENGINE_RULES, encoding="utf-8")
    await engine_factory(rules, options=EngineOptions(watch_interval=0), api=ApiSettings(port=0))

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "[callrouter-dial]" in r.getMessage()]

    await eventually(said, "the advice at start")
    (advice,) = said()
    assert advice.startswith(f"dialplan: {OLD_DIAL}")


async def test_filtering_says_who_filters_event_names(
    ajam_replay: ReplayAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """Without write = system only manager.conf's eventfilter lines filter event
    names, and lines written for earlier rules can keep back what the rules now
    need: said as advice that names the comparison, not as "not filtered"."""
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    found = await run(ajam_replay, filtering=True)
    assert found[2] == Finding(
        "ok", "Filter allowed (write = system): callrouter filters event names itself"
    )
    (probe,) = ajam_replay.sent("Filter", probes=True)
    assert probe.get("Operation") == "CallRouterCheck"  # adds no filter

    ajam_replay.on("Filter", denied)
    caplog.set_level(logging.WARNING)
    found = await run(ajam_replay, filtering=True)
    assert found[2].level == "advice"
    assert found[2].text.startswith(
        "Asterisk refuses this user Filter (write = system), so callrouter does not filter "
        "event names itself: the class mask applies, and the eventfilter lines of "
        "manager.conf [router] if it has any;"
    )
    assert "callrouter check --manager-conf-file /etc/asterisk/manager.conf" in found[2].text
    assert "Filter" not in caplog.text  # told once, as the finding
    assert not any(f.level == "fail" for f in found)
    # check --username watcher: the comparison it suggests reads [watcher].
    found = await run(ajam_replay, filtering=True, suggested_flags=" --username watcher")
    assert (
        "callrouter check --manager-conf-file /etc/asterisk/manager.conf --username "
        "watcher (the manager.conf of Asterisk's configuration directory" in found[2].text
    )
    # Not every Asterisk keeps it in /etc/asterisk (a source build's
    # /usr/local/etc/asterisk): the finding says how to find the directory.
    assert "asterisk -rx 'core show settings' names" in found[2].text


def _compared_advice_quotes() -> dict[str, str]:
    """What docs/asterisk.md (+ru) quote of the Filter advice after a comparison."""
    root = Path(__file__).resolve().parents[2]
    quotes = {}
    for page in ("docs/asterisk.md", "docs/ru/asterisk.md"):
        text = " ".join((root / page).read_text(encoding="utf-8").split())
        [quotes[page]] = re.findall(
            r"`\.\.\. (so compare them: the manager\.conf lines[^`]*) \.\.\.`", text
        )
    return quotes


async def test_filtering_advice_after_the_comparison_does_not_ask_for_it_again(
    ajam_replay: ReplayAsterisk,
) -> None:
    """docs/operations.md, Upgrading step 2 runs `check --asterisk --manager-conf-file
    /etc/asterisk/manager.conf`: its output compared the file, then its ADVICE told the
    administrator to run `callrouter check --manager-conf-file /etc/asterisk/manager.conf`,
    the command just run. It now points at the comparison above, naming the file."""
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    ajam_replay.on("Filter", denied)
    found = await run(ajam_replay, filtering=True, compared="/etc/asterisk/manager.conf")
    assert found[2].level == "advice"
    assert found[2].text.startswith("Asterisk refuses this user Filter (write = system)")
    assert "callrouter check --manager-conf-file" not in found[2].text
    assert found[2].text.endswith(
        "so compare them: the manager.conf lines above are that comparison, of "
        "/etc/asterisk/manager.conf (docs/asterisk.md, Event filtering)"
    )
    # docs/asterisk.md (+ru), Checking the setup, quote it as it is said.
    for page, quoted in _compared_advice_quotes().items():
        assert quoted in found[2].text, page


@pytest.mark.parametrize("conf", ["missing", "no section"])
def test_filtering_advice_after_a_comparison_that_could_not_be_made_still_asks_for_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    conf: str,
) -> None:
    """`check --asterisk --manager-conf-file PATH` whose file could not be compared
    (a typo in PATH, no section of the user): the FAIL above says so, and the
    ADVICE said "the manager.conf lines above are that comparison", sending the
    administrator to a comparison that never was. It asks for one, as without it."""
    from router.cli import main
    from router.testing import ReplayAsterisk

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "secret"\n[router]\nrules = ["rules"]\n',
        encoding="utf-8",
    )
    manager_conf = tmp_path / "manager.conf"
    if conf == "no section":
        manager_conf.write_text("[general]\nenabled = yes\n", encoding="utf-8")

    def fake(settings: object) -> object:
        replay = ReplayAsterisk(url="http://127.0.0.1:8088/asterisk")
        replay.on("ShowDialPlan", dialplan_answer)
        replay.on("Filter", denied)
        return replay.client(url="http://127.0.0.1:8088/asterisk")

    monkeypatch.setattr("router.ami.connect.open_client", fake)
    main(["check", "--asterisk", "--manager-conf-file", str(manager_conf)])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("manager.conf: FAIL") for line in lines), lines
    (advice,) = [line for line in lines if "Asterisk refuses this user Filter" in line]
    assert "the manager.conf lines above are that comparison" not in advice
    assert "callrouter check --manager-conf-file /etc/asterisk/manager.conf" in advice


async def test_a_refusal_with_a_peers_long_hostile_message_is_quoted_in_part(
    ajam_replay: ReplayAsterisk,
) -> None:
    """A peer answering UserEvent with 10 kB of Message led by ESC and a bidi
    override: the finding quoted all of it (escaped by the printer only)."""

    def hostile(sent: SentAction) -> list[tuple[str, str]]:
        return error("\x1b[2J\u202e" + "M" * 10240)

    ajam_replay.on("ShowDialPlan", dialplan_answer)
    ajam_replay.on("UserEvent", hostile)
    found = await run(ajam_replay)
    (fail,) = [f for f in found if f.text.startswith("UserEvent could not be sent")]
    assert fail.text.startswith("UserEvent could not be sent: UserEvent: \\x1b[2J\\u202eMMM")
    assert fail.text.endswith("M…")
    assert len(fail.text) < 300


@pytest.mark.parametrize(
    ("url", "auth", "said"),
    [
        ("http://asterisk.test:8088/asterisk", "cookie", "the secret and then the session cookie"),
        ("http://10.0.0.5:8088/asterisk", "cookie", "use https://"),
        ("tcp://pbx.example:5038", "plain", 'the secret itself (auth = "plain")'),
        ("tcp://[2001:db8::5]:5038", "md5", "guessed offline"),
    ],
)
def test_a_plain_transport_to_another_host_is_advised_against(
    url: str, auth: str, said: str
) -> None:
    """tcp:// and http:// prove callrouter to whatever answers, never that
    peer to callrouter (a port squatter, a hop on the way): say so at check."""
    from router.commands.preflight import _plain_transport

    advice = _plain_transport(url, auth)
    assert advice is not None
    assert advice.level == "advice"
    assert said in advice.text
    assert "docs/security.md" in advice.text
    for quiet in (
        "tcp://127.0.0.1:5038",
        "tcp://localhost:5038",
        "http://[::1]:8088/asterisk",
        "tls://pbx.example:5039",
        "https://pbx.example:8089/asterisk",
    ):
        assert _plain_transport(quiet, auth) is None, quiet


def test_an_unverified_certificate_of_another_host_is_advised_against() -> None:
    """verify = false (--insecure) to another host: encrypted to whoever
    answers, as good as plain tcp:// for the secret; check said nothing."""
    from router.commands.preflight import _plain_transport

    for url, conf in (
        ("tls://pbx.example:5039", "manager.conf"),
        ("https://10.0.0.5:8089/asterisk", "http.conf"),
    ):
        advice = _plain_transport(url, "md5", verify=False)
        assert advice is not None, url
        assert advice.level == "advice"
        assert "with verify = false (or --insecure): the certificate is not checked" in (
            advice.text
        )
        assert f"the CA that signed {conf}'s tlscertfile as verify" in advice.text
        assert _plain_transport(url, "md5", verify=True) is None
        assert _plain_transport(url, "md5", verify="/etc/callrouter/ca.pem") is None
    assert _plain_transport("tls://127.0.0.1:5039", "md5", verify=False) is None


async def test_check_gives_the_advice_for_a_remote_plain_url(ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    found = await run(ajam_replay, url="http://asterisk.test:8088/asterisk")
    assert found[1].level == "advice"
    assert found[1].text.startswith("http:// to asterisk.test, not this host: ")


async def test_each_refusal_is_told_once_as_a_finding_not_also_as_a_client_warning(
    ajam_replay: ReplayAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """hnew31's trial with the sandbox's user `watcher` (write = none): before
    the findings, five bare lines (`Redirect: Permission denied: the manager
    user 'watcher' needs write class call (manager.conf)`, ...) reached the
    terminal, the client's once-per-action WARNINGs through Python's
    last-resort handler, each repeating a finding below it (the Filter probe
    alone was kept quiet)."""

    for action in ("CoreSettings", "Redirect", "Originate", "ShowDialPlan", "UserEvent", "Filter"):
        ajam_replay.on(action, denied)
    with caplog.at_level(logging.WARNING):
        found = await run(ajam_replay, probes=(REDIRECT, ORIGINATE), filtering=True)
    # Redirect, Originate, UserEvent, and ShowDialPlan: this replay allows CoreStatus
    # (write = system would), so the dialplan's class is named apart (issue 16).
    assert [f.level for f in found].count("fail") == 4
    assert not [r.getMessage() for r in caplog.records if "Permission denied" in r.getMessage()]


async def test_the_inbound_context_pasted_without_its_globals_fails(
    ajam_replay: ReplayAsterisk,
) -> None:
    """README's quick start said to paste `[callrouter-inbound]`: without the
    snippet's `[globals]`, `Wait()` does not wait and the default route's
    `Goto(,did,1)` runs the context again, round and round (seen on the
    sandbox Asterisk; issue 16). A copy from before the context set its own
    defaults still fails so."""
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()  # [callrouter-inbound] alone: no [globals]
    found = await run(ajam_replay)
    fails = [f.text for f in found if f.level == "fail"]
    assert len(fails) == 2, found
    assert fails[0].startswith(
        "[callrouter-inbound] reads ${CALLROUTER_WAIT}, which Asterisk has no value for: "
        "Wait(${CALLROUTER_WAIT}) does not wait"
    )
    assert fails[1].startswith(
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}, which Asterisk has no value for: "
    )
    assert "back to the top of [callrouter-inbound], again and again" in fails[1]
    for text in fails:
        assert text.endswith(
            "paste the [globals] of examples/asterisk/extensions.conf into extensions.conf "
            'too, then `asterisk -rx "dialplan reload"`'
        )
    asked = [g.get("Variable") for g in ajam_replay.sent("Getvar") if not g.get("Channel")]
    assert asked == ["CALLROUTER_WAIT", "CALLROUTER_DEFAULT"]
    # Set, as the whole snippet sets them: no finding, and the sound setup's
    # five OK lines (test_a_sound_setup_passes_every_check) stay five.
    ajam_replay.globals.update(CALLROUTER_WAIT="4", CALLROUTER_DEFAULT="callrouter-default")
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5


async def test_the_shipped_inbound_context_defaults_its_globals_itself(
    ajam_replay: ReplayAsterisk,
) -> None:
    """The context as shipped now sets CALLROUTER_WAIT (4) and CALLROUTER_DEFAULT
    (callrouter-default) when Asterisk has none: pasted alone it fails open, so
    check passes it and never asks Asterisk whether either is set."""
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    ajam_replay.globals.clear()
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5
    # Not whether either is set; CALLROUTER_WAIT's value, whether it is a
    # number (test_a_global_wait_that_is_no_number_is_named), and
    # CALLROUTER_DEFAULT's, whether Asterisk has that context
    # (test_a_default_route_to_a_context_asterisk_lacks_fails).
    asked = [g.get("Variable") for g in ajam_replay.sent("Getvar") if not g.get("Channel")]
    assert asked == ["CALLROUTER_WAIT", "CALLROUTER_DEFAULT"]


async def test_globals_the_inbound_context_sets_itself_are_not_asked(
    ajam_replay: ReplayAsterisk,
) -> None:
    def own_wait(sent: SentAction) -> object:
        """The older context with a first step of its own setting CALLROUTER_WAIT."""
        items = older_inbound()
        items.insert(0, {**items[0], "AppData": "CALLROUTER_WAIT=4"})
        return steps_answer(sent, [{**i, "Priority": str(n)} for n, i in enumerate(items, 1)])

    ajam_replay.on("ShowDialPlan", own_wait)
    ajam_replay.globals.clear()
    found = await run(ajam_replay)
    fails = [f.text for f in found if f.level == "fail"]
    assert [text.split(",")[0] for text in fails] == [
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}"
    ]
    # CALLROUTER_WAIT is asked once more, for its value: whether it is a number.
    asked = [g.get("Variable") for g in ajam_replay.sent("Getvar") if not g.get("Channel")]
    assert asked == ["CALLROUTER_DEFAULT", "CALLROUTER_WAIT"]


async def test_a_global_set_only_after_a_step_read_it_is_still_asked(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Set(CALLROUTER_WAIT=4) in place of Ringing comes after
    Set(CALLROUTER_DEADLINE=$[${EPOCH} + ${CALLROUTER_WAIT}]) has read it empty."""

    def late_wait(sent: SentAction) -> object:
        items = older_inbound()
        (ringing,) = [i for i in items if i["Application"] == "Ringing"]
        ringing.update(Application="Set", AppData="CALLROUTER_WAIT=4")
        return steps_answer(sent, items)

    ajam_replay.on("ShowDialPlan", late_wait)
    ajam_replay.globals.clear()
    found = await run(ajam_replay)
    fails = [f.text.split(",")[0] for f in found if f.level == "fail"]
    assert fails == [
        "[callrouter-inbound] reads ${CALLROUTER_WAIT}",
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}",
    ]


def len_default_answer(sent: SentAction) -> bytes:
    """The inbound context as the snippet shipped it before it checked that
    CALLROUTER_WAIT is a number: its default only for an empty one."""
    items = shipped()
    (first,) = [i for i in items if i["AppData"].startswith("CALLROUTER_WAIT=")]
    first["AppData"] = (
        "CALLROUTER_WAIT=${IF($[${LEN(${CALLROUTER_WAIT})} > 0]?${CALLROUTER_WAIT}:4)}"
    )
    return steps_answer(sent, items)


@pytest.mark.parametrize("value", ["four", "4s", "0", "-1", "0x4", "\x1b[2J"])
async def test_a_global_wait_that_is_no_number_is_named(
    ajam_replay: ReplayAsterisk, value: str
) -> None:
    """hleft33's trial: `CALLROUTER_WAIT = four` in [globals] went to Wait()
    and the deadline unchecked (`Wait(four)` does not wait, measured on
    Asterisk 22.10) while check said OK. The shipped context now waits its
    default 4 s for such a value: advice, naming it. A copy older than that
    check uses it as it is: a failure, saying to paste the contexts again.
    `0` is a number, just not a positive one: "not a number of seconds" read
    wrong for it (hast46's trial), so the finding says "positive"."""
    ajam_replay.globals.update(CALLROUTER_WAIT=value, CALLROUTER_DEFAULT="callrouter-default")
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    found = await run(ajam_replay)
    [advice] = [f.text for f in found if f.level != "ok"]
    assert advice.startswith(
        f"the global CALLROUTER_WAIT is {value!r}, not a positive number of seconds: "
        "[callrouter-inbound] waits its default 4 s instead;"
    ), advice
    assert "\x1b" not in advice
    assert [f.level for f in found].count("advice") == 1
    for older in (len_default_answer, older_answer):
        ajam_replay.on("ShowDialPlan", older)
        found = await run(ajam_replay)
        fails = [f.text for f in found if f.level == "fail"]
        assert len(fails) == 1, found
        assert fails[0].startswith(
            f"the global CALLROUTER_WAIT is {value!r}, not a positive number of seconds: "
            "[callrouter-inbound] (a copy older than the snippet's check of it) uses it as "
            "it is: its Wait() may not wait at all"
        ), fails[0]
        assert "paste the callrouter-* contexts of examples/asterisk/extensions.conf" in fails[0]


@pytest.mark.parametrize("value", ["4", "2.5", "10"])
async def test_a_global_wait_that_is_a_number_passes(
    ajam_replay: ReplayAsterisk, value: str
) -> None:
    ajam_replay.globals.update(CALLROUTER_WAIT=value, CALLROUTER_DEFAULT="callrouter-default")
    for answer in (dialplan_answer, len_default_answer, older_answer):
        ajam_replay.on("ShowDialPlan", answer)
        assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5


def default_route_dialplan(
    contexts: dict[str, list[str]], inbound: Callable[[SentAction], bytes] = dialplan_answer
) -> Callable[[SentAction], object]:
    """``ShowDialPlan``: the shipped inbound context (or ``inbound``'s), and
    ``contexts`` (context -> its extensions, one NoOp step each); "Did not
    find context" for the rest."""

    def answer(sent: SentAction) -> object:
        context = sent.get("Context") or ""
        if context == "callrouter-inbound":
            return inbound(sent)
        if context not in contexts:
            return error(f"Did not find context {context}")
        items = [
            {
                "Event": "ListDialplan",
                "Context": context,
                "Extension": exten,
                "Priority": "1",
                "Application": "NoOp",
                "AppData": "",
                "Registrar": "pbx_config",
            }
            for exten in contexts[context]
        ]
        return steps_answer(sent, items)

    return answer


async def test_a_default_route_to_a_context_asterisk_lacks_fails(
    ajam_replay: ReplayAsterisk,
) -> None:
    """hast46's trial: `CALLROUTER_DEFAULT=my-ivx` (a typo of my-ivr) in
    [globals] passed the whole check, and every call not routed in time was
    hung up (`Goto(my-ivx,...)`: "sent to invalid extension but no invalid
    handler", measured on Asterisk 22.10)."""
    ajam_replay.globals.update(CALLROUTER_DEFAULT="my-ivx")
    ajam_replay.on("ShowDialPlan", default_route_dialplan({"my-ivr": ["_X."]}))
    found = await run(ajam_replay)
    [fail] = [f.text for f in found if f.level != "ok"]
    assert fail.startswith(
        "the global CALLROUTER_DEFAULT is 'my-ivx', a context Asterisk's dialplan does not "
        "have: every call callrouter does not route in time"
    ), fail
    assert "set CALLROUTER_DEFAULT in [globals] to the context of your default route" in fail
    assert fail.endswith('then `asterisk -rx "dialplan reload"`')
    ajam_replay.globals.update(CALLROUTER_DEFAULT="my-ivr")
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5
    # Empty: the shipped context falls back to [callrouter-default], missing here.
    ajam_replay.globals.update(CALLROUTER_DEFAULT="")
    [fail] = [f.text for f in await run(ajam_replay) if f.level != "ok"]
    assert fail.startswith(
        "CALLROUTER_DEFAULT is empty, so [callrouter-inbound] falls back to "
        "[callrouter-default], a context Asterisk's dialplan does not have"
    ), fail


@pytest.mark.parametrize(
    ("value", "said"),
    [
        # Asterisk 22.10, hnewuser46's trial: the call ran the context again,
        # a request every CALLROUTER_WAIT, until the caller hung up.
        ("callrouter-inbound", "the context that sends the request itself"),
        # Goto(callrouter-default,s,5551234,1): "sent to invalid extension but
        # no invalid handler: context,exten,priority=callrouter-default,s,5551234".
        ("callrouter-default,s", "which holds a comma"),
        ("my-ivr,s,1", "which holds a comma"),
    ],
)
async def test_a_default_route_asterisk_cannot_take_fails(
    ajam_replay: ReplayAsterisk, value: str, said: str
) -> None:
    """hnewuser46's trial: a CALLROUTER_DEFAULT naming [callrouter-inbound] or
    holding a comma passed the check (the comma's context, taken up to it,
    exists), while every call not routed in time looped or was hung up."""
    ajam_replay.globals.update(CALLROUTER_DEFAULT=value)
    ajam_replay.on(
        "ShowDialPlan",
        default_route_dialplan({"my-ivr": ["_X."], "callrouter-default": ["_X."]}),
    )
    [fail] = [f for f in await run(ajam_replay) if f.level != "ok"]
    assert fail.level == "fail", fail.text
    assert fail.text.startswith(f"the global CALLROUTER_DEFAULT is {value!r}, {said}"), fail.text
    assert "set CALLROUTER_DEFAULT in [globals] to the context of your default route" in fail.text


@pytest.mark.parametrize(
    ("extensions", "level"),
    [
        (["s", "t"], "fail"),  # an IVR context: no DID reaches its s, nothing takes it
        # Its i extension takes the call (Asterisk: "sent to invalid extension",
        # set to i,1): not lost, only routed through the invalid-entry prompt.
        (["s", "i"], "advice"),
        (["s", "_X."], None),
        (["s", "74951234567"], None),  # a DID of its own
    ],
)
async def test_a_default_route_no_dialled_number_can_match_fails(
    ajam_replay: ReplayAsterisk, extensions: list[str], level: str | None
) -> None:
    """The default route is Goto(${CALLROUTER_DEFAULT},${CALLROUTER_DID},1): an
    IVR context with only s takes no call there; with an i, its i takes them."""
    ajam_replay.globals.update(CALLROUTER_DEFAULT="ivr-main")
    ajam_replay.on("ShowDialPlan", default_route_dialplan({"ivr-main": extensions}))
    found = [(f.level, f.text) for f in await run(ajam_replay) if f.level != "ok"]
    if level is None:
        assert found == []
        return
    [(said, text)] = found
    assert said == level, text
    assert text.startswith(
        "the global CALLROUTER_DEFAULT is 'ivr-main', a context with no extension a dialled "
        f"number can match (it has {', '.join(repr(e) for e in sorted(extensions))})"
    ), text
    assert "exten => _X.,1,Goto(s,1)" in text
    lost = "is hung up (sent to invalid extension)" in text
    assert lost == (level == "fail"), text
    assert ("goes to its i extension" in text) == (level == "advice"), text


@pytest.mark.parametrize(
    ("extensions", "lost"),
    [
        (["1", "2", "t", "i"], False),  # its i takes the call: an invalid-entry prompt
        (["1", "2", "t"], True),  # nothing takes it: hung up
        (["s", "1", "2", "#", "i"], False),
    ],
)
async def test_a_default_route_to_an_ivrs_options_is_advice(
    ajam_replay: ReplayAsterisk, extensions: list[str], lost: bool
) -> None:
    """An IVR context whose only extensions a dialled number could match are
    its options (`1`, `2`) passed: a call falling back carries its DID, none
    of them, and goes to the context's i or is hung up. Advice, as for an IVR
    with s and i: callrouter cannot tell the DIDs are not these numbers."""
    ajam_replay.globals.update(CALLROUTER_DEFAULT="ivr-main")
    ajam_replay.on("ShowDialPlan", default_route_dialplan({"ivr-main": extensions}))
    found = [(f.level, f.text) for f in await run(ajam_replay) if f.level != "ok"]
    [(level, text)] = found
    assert level == "advice", text
    numbers = sorted(e for e in extensions if e not in ("s", "t", "i"))
    assert text.startswith(
        "the global CALLROUTER_DEFAULT is 'ivr-main', a context whose only extensions a "
        f"dialled number can match are {', '.join(repr(n) for n in numbers)} (it has "
        f"{', '.join(repr(e) for e in sorted(extensions))}): an IVR's options?"
    ), text
    assert ("is hung up (sent to invalid extension)" in text) == lost, text
    assert ("goes to its i extension" in text) == (not lost), text
    assert "exten => _X.,1,Goto(s,1)" in text
    # Longer numbers are DIDs of its own: nothing to say.
    ajam_replay.on(
        "ShowDialPlan", default_route_dialplan({"ivr-main": [*extensions, "74951234567"]})
    )
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5


@pytest.mark.parametrize(
    ("value", "older", "said"),
    [
        # The shipped context's ${IF(...)} trims them to nothing: Goto(,DID,1)
        # stays in [callrouter-inbound], a request each time round.
        ("   ", False, "spaces alone: [callrouter-inbound] trims them to nothing"),
        ("\t", False, "spaces alone: [callrouter-inbound] trims them to nothing"),
        # An older copy hands Goto() the value as it is: no such context.
        (" my-ivr", True, "with spaces around the context's name"),
        ("my-ivr ", True, "with spaces around the context's name"),
    ],
)
async def test_a_default_route_with_spaces_asterisk_misreads_fails(
    ajam_replay: ReplayAsterisk, value: str, older: bool, said: str
) -> None:
    """A CALLROUTER_DEFAULT with spaces passed as the context without them (or,
    spaces alone, as empty: the shipped fallback): Asterisk reads them
    otherwise, and every call not routed in time looped or was hung up."""
    ajam_replay.globals.update(CALLROUTER_DEFAULT=value, CALLROUTER_WAIT="4")
    inbound = older_answer if older else dialplan_answer
    contexts = {"my-ivr": ["_X."], "callrouter-default": ["_X."]}
    ajam_replay.on("ShowDialPlan", default_route_dialplan(contexts, inbound))
    fails = [f for f in await run(ajam_replay) if f.level == "fail"]
    [fail] = [f for f in fails if "CALLROUTER_DEFAULT is" in f.text]
    assert fail.text.startswith(f"the global CALLROUTER_DEFAULT is {value!r}, {said}"), fail.text
    assert "set CALLROUTER_DEFAULT in [globals] to the context of your default route" in fail.text


async def test_spaces_the_shipped_context_trims_pass(ajam_replay: ReplayAsterisk) -> None:
    """The shipped context reads CALLROUTER_DEFAULT through ${IF(...)}, which
    trims spaces around it: ' my-ivr ' is my-ivr, which is checked."""
    ajam_replay.globals.update(CALLROUTER_DEFAULT=" my-ivr ")
    ajam_replay.on("ShowDialPlan", default_route_dialplan({"my-ivr": ["_X."]}))
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5
    ajam_replay.on("ShowDialPlan", default_route_dialplan({"my-ivr": ["s", "1", "i"]}))
    [advice] = [f.text for f in await run(ajam_replay) if f.level != "ok"]
    assert advice.startswith("the global CALLROUTER_DEFAULT is ' my-ivr ', a context whose only")


#: The globals `run` sets for :func:`older_inbound` in an Asterisk with none.
STOOD_IN = {
    "CALLROUTER_GLOBALS_BY": "callrouter:CALLROUTER_WAIT,CALLROUTER_DEFAULT",
    "CALLROUTER_WAIT": "4",
    "CALLROUTER_DEFAULT": "callrouter-default",
}
#: The snippet's [globals] that :func:`older_inbound` reads, with the line
#: that clears the marker, as a `dialplan reload` of them sets them.
SNIPPET_GLOBALS = {
    "CALLROUTER_GLOBALS_BY": "",
    "CALLROUTER_WAIT": "4",
    "CALLROUTER_DEFAULT": "callrouter-default",
}


def stood_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "callrouter set the global" in r.getMessage()
    ]


async def test_the_engine_sets_the_globals_an_older_inbound_context_lacks(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hleft33b: an older `[callrouter-inbound]` pasted without `[globals]`
    ran again and again (22 to 46 requests a call on Asterisk 22.10) while
    `run` only warned. `run` now sets the two globals to the snippet's values
    with Setvar (no channel: a global) and says so once, as a WARNING with
    what to paste; the timed check later says nothing new."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0))
    await eventually(lambda: stood_in(caplog), "the warning at start")
    assert ajam_replay.globals == STOOD_IN
    (warning,) = stood_in(caplog)
    assert (
        "[callrouter-inbound] reads ${CALLROUTER_WAIT} and ${CALLROUTER_DEFAULT}, which "
        "extensions.conf does not set"
    ) in warning
    assert (
        "callrouter set the globals CALLROUTER_WAIT=4, CALLROUTER_DEFAULT=callrouter-default"
    ) in warning
    assert "paste the [globals] of examples/asterisk/extensions.conf" in warning
    assert not [r for r in caplog.records if "Asterisk has no value" in r.getMessage()]
    sets = [s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]
    # The marker before each value: a stand-in never stands unmarked.
    assert [s.get("Variable") for s in sets] == [
        "CALLROUTER_GLOBALS_BY",
        "CALLROUTER_WAIT",
        "CALLROUTER_GLOBALS_BY",
        "CALLROUTER_DEFAULT",
    ]
    caplog.clear()
    await engine.dialplan_watch.now_and_then()  # the values stand: nothing new to say
    assert not [r for r in caplog.records if r.getMessage().startswith("dialplan")]
    assert len([s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]) == 4
    # Gone with a restarted Asterisk: the reconnection's gap audits again at
    # once, and sets them.
    ajam_replay.globals.clear()
    await engine._on_gap(StreamGap(time.time() - 1, time.time(), "reconnect"))
    while (task := engine.dialplan_watch.looking_again) is not None:
        await asyncio.wait((task,))
    assert ajam_replay.globals == STOOD_IN


async def test_the_warning_stops_once_the_globals_come_from_extensions_conf(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: the administrator, told by the WARNING, pasted the snippet's
    [globals] (the same values): callrouter still said it had set them, at
    each audit, until it restarted itself. The snippet's [globals] clears
    the marker (CALLROUTER_GLOBALS_BY=): after a `dialplan reload` the values
    are the file's and the warning stops, with no Asterisk restart. A
    reconnection to the same Asterisk (the marker kept) still says it."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 0.0)
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0))
    await eventually(lambda: stood_in(caplog), "the warning at start")

    async def gap() -> None:
        caplog.clear()
        await engine._on_gap(StreamGap(time.time() - 1, time.time(), "reconnect"))
        while (task := engine.dialplan_watch.looking_again) is not None:
            await asyncio.wait((task,))

    await gap()  # the same Asterisk: its values are still callrouter's
    assert stood_in(caplog)
    # The snippet's [globals] pasted, `dialplan reload` (no clearglobalvars).
    ajam_replay.globals.update(SNIPPET_GLOBALS)
    await gap()
    assert not stood_in(caplog), caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if w.startswith("dialplan")], warnings
    assert len([s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]) == 4
    # Gone again (the [globals] taken out, Asterisk restarted): set and said again.
    ajam_replay.globals.clear()
    await gap()
    assert stood_in(caplog)
    assert ajam_replay.globals == STOOD_IN


async def test_an_engine_that_found_the_globals_set_sets_them_after_a_restart(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: a second callrouter (a standby) started after the live one had
    set the globals found them set and remembered nothing, so after an Asterisk
    restart (its peer gone) its reconnection audited nothing: the older context
    ran round until the timed look (300 s). An older context seen is enough
    for each reconnection to audit again."""
    from router.engine import EngineOptions

    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 0.0)
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    ajam_replay.globals.update(CALLROUTER_WAIT="4", CALLROUTER_DEFAULT="callrouter-default")
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0))
    await eventually(lambda: engine.dialplan_watch._findings is not None, "the audit at start")
    assert not [s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]
    ajam_replay.globals.clear()  # Asterisk restarted
    await engine._on_gap(StreamGap(time.time() - 1, time.time(), "reconnect"))
    while (task := engine.dialplan_watch.looking_again) is not None:
        await asyncio.wait((task,))
    assert ajam_replay.globals == STOOD_IN


async def test_check_fails_the_globals_a_running_callrouter_set(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Issue 16: after `run` set CALLROUTER_WAIT and CALLROUTER_DEFAULT for an
    older inbound context, `check --asterisk` said OK (AMI shows a value, not
    where it came from): an administrator who trusted it never pasted
    [globals], and after the next Asterisk restart with callrouter down calls
    ran round. The marker `run` sets beside them tells them apart: check fails
    them as run's own WARNING does, until the snippet's [globals] clear it."""
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    ajam_replay.globals.update(STOOD_IN)
    found = await run(ajam_replay)
    fails = [f.text for f in found if f.level == "fail"]
    assert len(fails) == 1, found
    assert fails[0].startswith(
        "[callrouter-inbound] reads ${CALLROUTER_WAIT} and ${CALLROUTER_DEFAULT}, which "
        "extensions.conf does not set (a copy of [callrouter-inbound] pasted without the "
        "snippet's [globals]): callrouter set the globals CALLROUTER_WAIT=4, "
        "CALLROUTER_DEFAULT=callrouter-default in Asterisk (AMI Setvar; the global "
        "CALLROUTER_GLOBALS_BY says so), not the dialplan: Asterisk forgets them when it "
        "restarts, and with callrouter down then, a call runs the context again and again; "
        "paste the [globals] of examples/asterisk/extensions.conf into extensions.conf"
    ), fails[0]
    # The milestone-1 [globals] (no clearing line) pasted since: the mark stays.
    assert fails[0].endswith(
        "(if you have pasted [globals] since, paste the snippet's current [globals], whose "
        "CALLROUTER_GLOBALS_BY= line clears the mark, and reload again: an older copy "
        "leaves the mark until Asterisk restarts)"
    ), fails[0]
    assert not ajam_replay.sent("Setvar")  # a check changes nothing
    # The snippet's [globals] pasted and reloaded: the file's values, no finding.
    ajam_replay.globals.update(SNIPPET_GLOBALS)
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5
    # An Asterisk restart (or clearglobalvars = yes) with an older [globals]:
    # the mark is gone with the values run set, the file's values stay.
    del ajam_replay.globals["CALLROUTER_GLOBALS_BY"]
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5


async def test_check_names_only_the_globals_the_marker_names(
    ajam_replay: ReplayAsterisk,
) -> None:
    """[globals] set CALLROUTER_WAIT (4, the stand-in's value) and run set
    CALLROUTER_DEFAULT alone: only that one is run's. A marked value changed
    since (an older [globals] with another value, reloaded) is the file's."""
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    ajam_replay.globals.update(
        CALLROUTER_GLOBALS_BY="callrouter:CALLROUTER_DEFAULT",
        CALLROUTER_WAIT="4",
        CALLROUTER_DEFAULT="callrouter-default",
    )
    fails = [f.text for f in await run(ajam_replay) if f.level == "fail"]
    assert len(fails) == 1, fails
    assert fails[0].startswith(
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}, which extensions.conf does not "
        "set (a copy of [callrouter-inbound] pasted without the snippet's [globals]): "
        "callrouter set the global CALLROUTER_DEFAULT=callrouter-default in Asterisk"
    ), fails[0]
    ajam_replay.globals.update(STOOD_IN, CALLROUTER_WAIT="6", CALLROUTER_DEFAULT="other")
    assert [f.level for f in await run(ajam_replay)] == ["ok"] * 5


async def test_a_restarted_engine_says_the_globals_an_earlier_one_set(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: a callrouter started after another (or itself, restarted) had
    set the globals found them set and took them for the file's: no WARNING.
    The marker says whose they are: the WARNING, and nothing set over them;
    values with no marker (the administrator's) are left unsaid and unset."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    ajam_replay.globals.update(STOOD_IN)
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0))
    await eventually(lambda: stood_in(caplog), "the warning at start")
    assert not [s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]
    assert ajam_replay.globals == STOOD_IN
    # The administrator's values (an older [globals], no marker): said nothing of.
    ajam_replay.globals.clear()
    ajam_replay.globals.update(CALLROUTER_WAIT="4", CALLROUTER_DEFAULT="callrouter-default")
    caplog.clear()
    await engine.dialplan_watch.audit("the test")
    assert not stood_in(caplog), caplog.text
    assert not [s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]
    assert "CALLROUTER_GLOBALS_BY" not in ajam_replay.globals


async def test_the_engine_keeps_a_value_the_administrator_set(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only a global Asterisk has no value for is set: CALLROUTER_WAIT=6 stays,
    and CALLROUTER_DEFAULT is set only to a context Asterisk has (none here:
    the failure stays, saying why it was not set)."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")

    def no_default_route(sent: SentAction) -> object:
        if sent.get("Context") == "callrouter-default":
            return error("Did not find context callrouter-default")
        return older_answer(sent)

    ajam_replay.on("ShowDialPlan", no_default_route)
    ajam_replay.globals.clear()
    ajam_replay.globals["CALLROUTER_WAIT"] = "6"
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    await engine_factory(rules, options=EngineOptions(watch_interval=0))
    await eventually(lambda: [w for w in warned() if "CALLROUTER_DEFAULT" in w], "the warning")
    assert ajam_replay.globals == {"CALLROUTER_WAIT": "6"}
    assert not [s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]
    (warning,) = [w for w in warned() if "CALLROUTER_DEFAULT" in w]
    assert "which Asterisk has no value for" in warning
    assert warning.endswith(
        "(callrouter did not set it: Asterisk's dialplan has no [callrouter-default] to "
        "fall back to; paste it too)"
    )


async def test_a_shadow_engine_and_the_check_set_nothing(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A check changes nothing in Asterisk, and neither does a shadow instance:
    both say the failure as before."""
    from router.engine import EngineOptions

    caplog.set_level(logging.INFO, logger="router.engine")
    ajam_replay.on("ShowDialPlan", older_answer)
    ajam_replay.globals.clear()
    found = await run(ajam_replay)
    assert [f.text.split(",")[0] for f in found if f.level == "fail"] == [
        "[callrouter-inbound] reads ${CALLROUTER_WAIT}",
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}",
    ]
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    await engine_factory(rules, shadow=True, options=EngineOptions(watch_interval=0))
    await eventually(
        lambda: [r for r in caplog.records if "Asterisk has no value" in r.getMessage()],
        "the warnings at start",
    )
    assert ajam_replay.globals == {}
    assert not [s for s in ajam_replay.sent("Setvar") if not s.get("Channel")]


async def test_a_user_with_write_system_alone_is_told_showdialplan_needs_config_or_reporting(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Issue 16: CoreStatus (the reporting probe) is reporting or system, ShowDialPlan
    config or reporting. A user with ``write = system`` alone passed the probe and got
    only the audit's ADVICE that the dialplan could not be read. The check now fails
    naming what is missing; with ShowDialPlan allowed nothing more is said."""

    ajam_replay.on("CoreStatus", lambda sent: {"CoreCurrentCalls": "0"})
    ajam_replay.on("ShowDialPlan", denied)
    found = await run(ajam_replay)
    told = [f for f in found if "refuses ShowDialPlan" in f.text]
    assert told == [
        Finding(
            "fail",
            "Asterisk allows this user CoreStatus (write = reporting or system) but refuses "
            "ShowDialPlan (write = config or reporting): it has system, which the "
            "least-privilege user has not, and no reporting; add reporting to the write line "
            "of manager.conf [router] (beside the classes there), then asterisk -rx 'manager "
            "reload' (not config, which lets a leaked secret reconfigure the PBX; "
            "docs/asterisk.md, The manager user for callrouter); without it the dialplan is "
            "not checked (the inbound context, "
            "the rules' redirect targets) at start, after each dialplan reload and by "
            "callrouter check --asterisk; asterisk -rx 'manager show user router' shows the "
            "classes Asterisk took (a class after a comma and a space is none: write them "
            "without spaces)",
        )
    ]
    # Said once: the audit's advice that the dialplan could not be read repeated it.
    assert not [f for f in found if "could not be read" in f.text], found
    (probe,) = ajam_replay.sent("ShowDialPlan", probes=True)[:1]
    assert probe.get("Context") == "callrouter-check-no-such-context"
    ajam_replay.on("ShowDialPlan", dialplan_answer)
    assert not [f for f in await run(ajam_replay) if "ShowDialPlan" in f.text]


@pytest.fixture
def lifetimes_said(monkeypatch: pytest.MonkeyPatch) -> None:
    import router.ami.client as client_module

    monkeypatch.setattr(client_module, "_LIFETIME_SAID", {}, raising=False)


@pytest.mark.usefixtures("lifetimes_said")
async def test_an_httptimeout_of_10_s_or_less_is_advice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """manager.conf httptimeout at 10 s or less (the cookie's Max-Age) makes
    Asterisk answer every WaitEvent at once: busy polling, which the check
    passed. ADVICE naming the value and the fix, said once (not also as the
    client's WARNING); docs/asterisk.md (+ru) quote it as printed. Not a
    FAIL: calls are still routed, and a FAIL (exit code 1) is what stops
    routing, which a deploy script stops at."""
    from router.commands.check import _LEVELS
    from router.testing import ReplayAsterisk

    replay = ReplayAsterisk(httptimeout=10)
    replay.on("ShowDialPlan", dialplan_answer)
    with caplog.at_level(logging.WARNING, logger="router.ami.client"):
        found = await run(replay)
    (lifetime,) = [f for f in found if "httptimeout" in f.text]
    assert lifetime.level == "advice"
    assert not [f for f in found if f.level == "fail"], found
    assert lifetime.text.startswith("manager.conf [general] httptimeout is 10 s")
    assert "calls are still routed" in lifetime.text
    assert "asterisk -rx 'manager reload'" in lifetime.text
    assert not [r for r in caplog.records if "httptimeout" in r.getMessage()]
    printed = " ".join(f"asterisk: {_LEVELS[lifetime.level]} {lifetime.text}".split())
    for page in PAGES:
        text = " ".join(section(page).split())
        assert f"`{printed}`" in text, page


async def test_over_native_tcp_httptimeout_is_not_checked() -> None:
    """manager.conf httptimeout is the lifetime of an AJAM session: over
    tcp:// no WaitEvent is sent and it does not matter to routing, so the
    check says nothing of it, whatever the value (checked against the real
    Asterisk with httptimeout = 8: AJAM gave the line, TCP none)."""
    from router.ami.client import ClientSettings
    from router.ami.connect import open_client
    from tests.unit.ami.tcp_fake import FakeAMI

    fake = await FakeAMI(secret="s").start()
    client = open_client(ClientSettings(url=fake.url, username="router", secret="s"))
    try:
        found = await check_asterisk(client, listen=0.2)
    finally:
        await client.aclose()
        await fake.stop()
    assert found[0].text.startswith(f"logged in to {fake.url}"), found
    assert not [f for f in found if "httptimeout" in f.text or "WaitEvent" in f.text], found


@pytest.mark.usefixtures("lifetimes_said")
async def test_a_waitevent_timeout_not_below_httptimeout_less_10_is_advice() -> None:
    from router.testing import ReplayAsterisk

    replay = ReplayAsterisk(httptimeout=30)
    replay.on("ShowDialPlan", dialplan_answer)
    found = await run(replay)
    (lifetime,) = [f for f in found if "httptimeout" in f.text]
    assert lifetime.level == "advice"
    assert lifetime.text.startswith("[asterisk] waitevent_timeout (20 s) is not below")
    fine = ReplayAsterisk(httptimeout=31)
    fine.on("ShowDialPlan", dialplan_answer)
    assert not [f for f in await run(fine) if "httptimeout" in f.text]
