"""A refused action on a live session: one decision fails with the reason, the
session stays (issue 11 item 8)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.unit.ami_answers import denied, error
from tests.unit.waiting import DEADLINE, eventually

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk, SentAction

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: mark
    on: call
    do:
      - ami: {action: DBPut, family: callrouter, key: last, val: "{caller.number}"}
      - redirect: {context: queues, exten: sales}
"""

ROUTE = """version: 1
rules:
  - name: sales
    on: call
    do:
      - redirect: {context: queues, exten: sales}
"""


async def test_permission_denied_fails_the_action_with_the_class_and_keeps_the_session(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    ajam_replay.on("DBPut", denied)
    engine = await engine_factory(rules)
    for caller in ("79161234567", "79161234568", "79161234569"):
        ajam_replay.inbound_call(caller=caller, did="74950000001")
        await ajam_replay.settle(engine)
    assert [r.outcome for r in engine.records] == ["failed"] * 3
    for record in engine.records:
        dbput, redirect = record.actions
        assert (dbput.status, dbput.detail) == (
            "failed",
            "DBPut: Permission denied: the manager user 'router' needs write "
            "class system (manager.conf)",
        )
        assert redirect.status == "confirmed"  # the next action still ran
    # One session all along: no re-login per call, so no event-stream gap.
    assert ajam_replay.count("Login") == 1
    assert ajam_replay.count("DBPut") == 3


async def test_a_user_that_may_not_list_channels_gets_one_warning_not_an_error(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: the read-only user docs/operations.md calls enough for shadow
    mode may not send ``CoreShowChannels`` (write = reporting or system). Each
    start logged ``ERROR reconcile at start failed``; now one WARNING says what
    is lost and which class to add, and a later gap says it no more."""
    from router.engine import LISTING_REFUSED

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    ajam_replay.on("CoreShowChannels", denied)
    engine = await engine_factory(rules, shadow=True)
    assert engine.ready.is_set()
    reason = (
        "CoreShowChannels: Permission denied: the manager user 'router' needs one of "
        "the write classes reporting, system (manager.conf)"
    )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warned if "CoreShowChannels" in w] == [
        LISTING_REFUSED.format(reason=reason)
    ]  # the client's own line for a refused action is not said twice
    assert "write = reporting" in LISTING_REFUSED
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    ajam_replay.expire_session()  # a stream gap: its reconcile is refused too
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    assert engine.metrics.stream_gaps.labels("session")._value.get() == 1
    assert ajam_replay.count("CoreShowChannels") == 2
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("CoreShowChannels" in r.getMessage() for r in said) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("page", ["operations.md", "ru/operations.md"])
def test_the_shadow_section_quotes_the_warning_as_logged(page: str) -> None:
    """docs/operations.md (+ru), shadow mode: the WARNING a read-only user gets
    at start is the line the engine writes."""
    from router.engine import LISTING_REFUSED

    text = (Path(__file__).parents[2] / "docs" / page).read_text(encoding="utf-8")
    reason = (
        "CoreShowChannels: Permission denied: the manager user 'shadow' needs one of "
        "the write classes reporting, system (manager.conf)"
    )
    assert f"```text\n{LISTING_REFUSED.format(reason=reason)}\n```" in text


def refusing_redirect(ajam_replay: ReplayAsterisk) -> dict[str, bool]:
    """Asterisk's answer to the probe's Redirect: "Permission denied" while the
    switch returned says ``now``, then that of a user allowed it (no such channel)."""
    refused = {"now": True}

    def redirect(sent: object) -> list[tuple[str, str]]:
        if refused["now"]:
            return error("Permission denied")
        return error("Channel does not exist: x")

    ajam_replay.on("Redirect", redirect)
    return refused


async def test_redirect_is_asked_for_again_after_a_new_login(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: the write-class probe runs after each login (router/privileges.py):
    a session keeps the classes of its login, so a user fixed in manager.conf
    shows at the next one (here, after the session expired), and readiness
    follows."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    refused = refusing_redirect(ajam_replay)
    caplog.set_level(logging.INFO, logger="router.engine")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    assert engine.health().checks["privileges"] is False
    assert ajam_replay.count("Redirect", probes=True) == 1
    refused["now"] = False  # manager.conf fixed, manager reload: a new login has it
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    assert ajam_replay.count("Redirect", probes=True) == 2
    assert engine.health().checks["privileges"] is True
    assert engine.health().ready, engine.health().reasons
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert "Asterisk allows the manager user 'router' Redirect now" in said


async def test_a_login_inside_an_action_is_probed_at_once(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """Issue 16: a login made inside an action (here the keepalive's Ping found
    the session gone after a restart with manager.conf fixed) was probed only
    once the event stream's long-poll came back and reported a gap; readiness
    kept the old user's refusal until then. The client tells the engine of
    every login, and the probe runs at once, with no gap."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    refused = refusing_redirect(ajam_replay)
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    assert engine.health().checks["privileges"] is False
    refused["now"] = False
    ajam_replay.expire_session()
    await engine._keepalive()  # Permission denied, a Ping on it too: logged in again
    assert ajam_replay.count("Login") == 2
    await eventually(lambda: engine.health().checks["privileges"], "the privileges check passing")
    assert engine.health().checks["privileges"] is True
    assert ajam_replay.count("Redirect", probes=True) == 2
    # The stream's poll is still out: no gap has been reported.
    assert engine.metrics.stream_gaps.labels("session")._value.get() == 0


async def test_a_hung_probe_after_a_new_login_holds_up_neither_the_reconcile_nor_routing(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: after a gap with a new session the probe was awaited in the
    gap's handling, first before the reconcile (which puts the gap's calls
    right), then after it: on an Asterisk that hangs, either it or every event
    after it (a new call's request) waited for the probe's actions to time
    out. The probe runs beside them; /readyz keeps its last answer meanwhile."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(ROUTE, encoding="utf-8")
    hang, hung, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def redirect(sent: SentAction) -> None:
        if sent.probe and hang.is_set():
            hung.set()
            await release.wait()  # an Asterisk that does not answer (till the test ends)

    ajam_replay.on("Redirect", redirect)
    # The hung probe's action waits out no timeout this test could reach: were
    # the reconcile or the routing held up by it, they would not settle at all
    # (not "within 8 s" of a 10 s timeout: a margin a loaded machine uses up, issue 16).
    settings = dataclasses.replace(ajam_replay.asterisk_settings(), request_timeout=3600.0)
    monkeypatch.setattr(ajam_replay, "asterisk_settings", lambda: settings)
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    try:
        hang.set()
        ajam_replay.clear()
        ajam_replay.expire_session()
        ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
        await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
        ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
        await asyncio.wait_for(hung.wait(), DEADLINE)
        await ajam_replay.settle(engine, timeout=DEADLINE)
        assert engine.metrics.stream_gaps.labels("session")._value.get() == 1
        assert ajam_replay.count("CoreShowChannels") == 1  # the gap's reconcile
        channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001")
        await ajam_replay.settle(engine, timeout=DEADLINE)
        [routed] = ajam_replay.sent("Redirect")
        assert routed["Channel"] == channel
        assert [r.outcome for r in engine.records] == ["executed"]
        assert not release.is_set()  # the probe still hangs
        assert engine.health().checks["privileges"] is True  # its last answer
    finally:
        release.set()


async def test_logins_during_a_probe_are_probed_after_it_one_probe_at_a_time(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """Issue 16: the probe runs in the background, never beside itself: a login
    while it waits for Asterisk (another session, maybe another user's
    classes) is probed once it is done."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(ROUTE, encoding="utf-8")
    hang, hung, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    out = {"now": 0, "most": 0}

    async def redirect(sent: SentAction) -> None:
        if not sent.probe:
            return
        out["now"] += 1
        out["most"] = max(out["most"], out["now"])
        try:
            if hang.is_set():
                hung.set()
                await release.wait()
        finally:
            out["now"] -= 1

    ajam_replay.on("Redirect", redirect)
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    hang.set()
    ajam_replay.expire_session()
    await engine._keepalive()  # logged in again: probed in the background
    await asyncio.wait_for(hung.wait(), 5)
    hang.clear()
    ajam_replay.expire_session()
    await engine._keepalive()  # and again, while that probe waits
    await asyncio.sleep(0.05)
    assert ajam_replay.count("Login") == 3
    assert ajam_replay.count("Redirect", probes=True) == 2  # the start's, the hung one
    release.set()
    await eventually(
        lambda: ajam_replay.count("Redirect", probes=True) == 3, "the third probe Redirect"
    )
    assert ajam_replay.count("Redirect", probes=True) == 3
    assert out["most"] == 1


async def test_a_session_lost_at_every_probe_does_not_loop_the_probe(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """Issue 16: a login during the probe is probed again after it. When every
    probe itself logs in again (a session that does not last: a proxy that
    drops the cookie, Asterisk restarting over and over), that was a loop with
    no pause, Login and the probe's actions back to back as fast as Asterisk
    answered, an ERROR logged at each. Past the first probe again, the next
    waits longer each time."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(ROUTE, encoding="utf-8")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))

    async def redirect(sent: SentAction) -> list[tuple[str, str]] | None:
        if not sent.probe or ajam_replay.count("Redirect", probes=True) > 50:
            return None  # (past 50 the loop is shown: ends it, the fake never yields)
        # The session is not kept: the action is refused, so is the Ping after
        # it, and the client logs in again inside the probe's action.
        ajam_replay.expire_session()
        return error("Permission denied")

    ajam_replay.on("Redirect", redirect)
    ajam_replay.expire_session()
    await engine._keepalive()  # logged in again: probed in the background
    await asyncio.sleep(0.5)
    # The start's login, the keepalive's, two in its probe (its Redirect
    # loses the session, so its CoreStatus finds it gone), two in the probe
    # of that (at once, as any login during a probe): then a pause.
    assert ajam_replay.count("Login") <= 6
    assert ajam_replay.count("Redirect", probes=True) <= 5  # each probe's, sent twice
    assert engine.privileges.prober is not None  # still on, at its pace


async def test_a_probe_that_fails_unexpectedly_does_not_stop_the_start_and_is_asked_again(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: an exception that is no AMI answer (a bug, a client fault)
    inside the write-class probe failed the start, and after a later login
    left that login counted as probed though nothing was asked."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    failures = {"left": 1}

    def redirect(sent: object) -> list[tuple[str, str]]:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("a fault of no AMI kind")
        return error("Permission denied")

    ajam_replay.on("Redirect", redirect)
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    await eventually(
        lambda: engine.health().checks["privileges"] is False, "the privileges check failing"
    )  # the background probe asks again at once
    assert ajam_replay.count("Redirect", probes=True) == 2
    assert engine.health().checks["privileges"] is False  # the second probe's answer
    failed = [r for r in caplog.records if "not checked; asked again later" in r.getMessage()]
    assert len(failed) == 1


async def test_a_user_without_write_reporting_is_warned_once_a_login_and_readyz_says_it(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: ``callrouter run`` learnt of a manager user without ``write =
    reporting`` only when the listing of the waiting calls (``CoreShowChannels``)
    was refused, and /readyz never said it. Each login's probe asks it with a
    ``CoreStatus``, as ``check --asterisk`` does (one action more at start):
    one WARNING a login naming the class and what is lost, /readyz's
    ``warnings`` (still ready: calls are routed), and the reconcile's refusal
    is not said again."""
    from router.engine import LISTING_REFUSED, EngineOptions
    from router.privilege_watch import PRIVILEGE_MISSING
    from router.privileges import REPORTING

    rules = tmp_path / "rules.yaml"
    rules.write_text(ROUTE, encoding="utf-8")
    allowed = {"now": False}

    def core_status(sent: SentAction) -> list[tuple[str, str]] | dict[str, str]:
        if allowed["now"]:
            return {"CoreCurrentCalls": "0"}
        return denied(sent)

    ajam_replay.on("CoreStatus", core_status)
    ajam_replay.on("CoreShowChannels", lambda sent: None if allowed["now"] else denied(sent))
    caplog.set_level(logging.INFO, logger="router.engine")
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    text = PRIVILEGE_MISSING.format(
        user="router", action="CoreStatus", cls="reporting", lost=REPORTING.lost
    )
    assert "write = reporting missing" in text
    assert ajam_replay.count("CoreStatus", probes=True) == 1  # one round trip at start

    def warned() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING
            and ("reporting" in r.getMessage() or "CoreShowChannels" in r.getMessage())
        ]

    assert warned() == [text]
    assert LISTING_REFUSED.split("(")[0] not in " ".join(warned())
    health = engine.health()
    assert health.ready, health.reasons
    assert health.checks["privileges"] is True
    assert health.warnings == (text,)
    assert health.to_dict()["warnings"] == [text]
    assert "warnings" not in health.to_dict(details=False)
    # systemd's status line says it briefly (systemctl status).
    assert health.status_line() == (
        "routing calls (1 rule); 1 warning: manager user router lacks write = reporting"
    )

    # A gap with a new login: probed again, said once more; its reconcile's
    # refusal is not a WARNING of its own.
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    await eventually(
        lambda: (
            ajam_replay.count("CoreStatus", probes=True) == 2 and engine.privileges.prober is None
        ),
        "both CoreStatus probes answered, the prober done",
    )
    assert ajam_replay.count("CoreShowChannels") == 2  # the start's, the gap's: both refused
    assert warned() == [text, text]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # manager.conf fixed, manager reload: the next login has the class.
    allowed["now"] = True
    ajam_replay.expire_session()
    await engine._keepalive()
    await eventually(lambda: not engine.health().warnings, "the warnings cleared")
    assert engine.health().warnings == ()
    assert "warnings" not in engine.health().to_dict()
    assert engine.health().status_line() == "routing calls (1 rule)"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "Asterisk allows the manager user 'router' CoreStatus now" in said


@pytest.mark.parametrize("page", ["asterisk.md", "ru/asterisk.md"])
def test_the_manager_user_section_quotes_the_reporting_warning_as_logged(page: str) -> None:
    """docs/asterisk.md (+ru), the manager user: the WARNING a user without
    ``write = reporting`` gets after each login is the line the engine writes."""
    from router.privilege_watch import PRIVILEGE_MISSING
    from router.privileges import REPORTING

    text = (Path(__file__).parents[2] / "docs" / page).read_text(encoding="utf-8")
    line = PRIVILEGE_MISSING.format(
        user="router", action="CoreStatus", cls="reporting", lost=REPORTING.lost
    )
    assert f"```text\n{line}\n```" in text
