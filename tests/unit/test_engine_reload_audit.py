"""The dialplan audit runs again when Asterisk reports a dialplan reload
(issue 16): a ``Reload`` event whose ``Module`` is ``pbx_config`` (``module
reload pbx_config``, the AMI ``Reload`` action) or ``All`` (``core reload``),
as Asterisk 22.10 sends them (checked on the sandbox; ``dialplan reload``
sends no event). A reload storm makes one audit per interval, not one each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import router.dialplan_watch
import router.engine
from router.ami.message import Event, Response
from router.ami.protocol import ActionResult
from router.ami.stream import StreamGap
from router.dialplan import INBOUND_CONTEXT, missing_target
from router.errors import AMIActionError, AMIConnectionError
from router.testing.asterisk import dialplan_globals, dialplan_steps
from tests.unit.client_stub import EVERYONE, ClientStub, engine_on


class NoInbound(ClientStub):
    """An Asterisk whose reloaded dialplan lost ``[callrouter-inbound]``."""

    def __init__(self) -> None:
        self.inbound_asked = 0

    async def action(
        self, name: str, params: Mapping[str, Any] | None = None, **_: Any
    ) -> ActionResult:
        assert name == "ShowDialPlan", name
        context = dict(params or {}).get("Context")
        if context == INBOUND_CONTEXT:
            self.inbound_asked += 1
            raise AMIActionError(
                name, Response((("Response", "Error"), ("Message", "Did not find context")))
            )
        return ActionResult(Response((("Response", "Success"),)))


#: The inbound context the package ships (router/dialplan_lint.py passes it).
SNIPPET = Path(__file__).parents[2] / "examples" / "asterisk" / "extensions.conf"


def reload(module: str) -> Event:
    return Event((("Event", "Reload"), ("Module", module), ("Status", "0")))


async def settle(engine: router.engine.Engine) -> None:
    while (task := engine.dialplan_watch.after_reload) is not None:
        await asyncio.wait((task,))
    await asyncio.sleep(0)


@pytest.mark.parametrize("module", ["pbx_config", "pbx_config.so", "All"])
async def test_a_dialplan_reload_is_audited_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, module: str
) -> None:
    caplog.set_level(logging.WARNING, logger="router.engine")
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.handle_event(reload(module))
    await settle(engine)
    assert client.inbound_asked == 1
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dialplan: ")]
    assert warned
    assert INBOUND_CONTEXT in warned[0]


async def test_another_modules_reload_is_not(tmp_path: Path) -> None:
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    for module in ("res_pjsip.so", "manager", "cdr"):
        await engine.handle_event(reload(module))
    await settle(engine)
    assert client.inbound_asked == 0


async def test_a_reload_storm_makes_one_audit_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty reloads at once (a script reloading in a loop): the first is
    audited at once, the others by a single audit one interval later."""
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 0.3)
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    for _ in range(50):
        await engine.handle_event(reload("pbx_config"))
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    assert client.inbound_asked == 1
    await settle(engine)
    assert client.inbound_asked == 2
    await asyncio.sleep(0.4)
    assert client.inbound_asked == 2  # nothing more without a reload


async def test_the_audit_waiting_for_its_turn_ends_with_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop does not wait for an audit waiting for its turn, nor counts it
    as a decision in flight."""
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 30.0)
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.handle_event(reload("pbx_config"))
    await settle(engine)
    await engine.handle_event(reload("pbx_config"))
    waiting = engine.dialplan_watch.after_reload
    assert waiting is not None
    assert waiting not in engine.router.tasks
    await asyncio.wait_for(engine.stop(), 5)
    await asyncio.sleep(0)
    assert waiting.cancelled()
    assert client.inbound_asked == 1


def test_reload_is_among_the_events_asked_for() -> None:
    from router.ami.event_filter import CORE_EVENTS

    assert "Reload" in CORE_EVENTS


class Flaky(ClientStub):
    """An Asterisk whose ``[callrouter-inbound]`` is fine, and whose answers
    to ``ShowDialPlan`` fail while ``down`` (a timeout, a connection cut
    mid-audit) or wait on ``gate`` when one is set."""

    def __init__(self) -> None:
        self.down = False
        #: Audits begun (each asks for the inbound context first).
        self.asked = 0
        self.gate: asyncio.Event | None = None

    async def action(
        self, name: str, params: Mapping[str, Any] | None = None, **_: Any
    ) -> ActionResult:
        if name == "Getvar":  # the snippet's [globals], loaded with it
            text = SNIPPET.read_text(encoding="utf-8")
            value = dialplan_globals(text).get(dict(params or {}).get("Variable", ""), "")
            return ActionResult(Response((("Response", "Success"), ("Value", value))), ())
        assert name == "ShowDialPlan", name
        self.asked += dict(params or {}).get("Context") == INBOUND_CONTEXT
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise AMIConnectionError(f"ShowDialPlan: timed out after 5 s ({self.asked})")
        steps = dialplan_steps(SNIPPET.read_text(encoding="utf-8"), INBOUND_CONTEXT)
        listed = (Event((("Event", "ListDialplan"), *step.items())) for step in steps)
        return ActionResult(Response((("Response", "Success"),)), tuple(listed))


async def test_a_timed_check_that_cannot_read_the_dialplan_says_it_did_not_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asterisk slow or gone for one timed look: that is no change of the
    dialplan, and the look after it, finding what was there, says nothing."""
    client = Flaky()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    caplog.clear()
    caplog.set_level(logging.INFO, logger="router.engine")
    client.down = True
    await engine.dialplan_watch.now_and_then()
    await engine.dialplan_watch.now_and_then()
    client.down = False
    await engine.dialplan_watch.now_and_then()
    assert client.asked == 4
    said = [r.getMessage() for r in caplog.records if "dialplan" in r.getMessage()]
    assert said == [], "\n".join(said)


async def test_a_timed_check_does_not_run_beside_another_audit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The timer fires while the audit after a reload (or the start's) is
    reading the dialplan: one look is enough, and two would log the same
    findings twice, or the older one's last."""
    client = Flaky()
    engine = await engine_on(tmp_path, EVERYONE, client)
    client.gate = asyncio.Event()
    caplog.set_level(logging.INFO, logger="router.engine")
    running = asyncio.ensure_future(engine.dialplan_watch.audit("Asterisk's reload"))
    await asyncio.sleep(0)
    assert client.asked == 1
    timed = asyncio.ensure_future(engine.dialplan_watch.now_and_then())
    await asyncio.sleep(0)
    client.gate.set()
    await asyncio.gather(running, timed)
    assert client.asked == 1
    checked = [r.getMessage() for r in caplog.records if "dialplan" in r.getMessage()]
    assert len(checked) == 1, checked


class Booting(Flaky):
    """An Asterisk still loading its modules until ``booted``: pbx_config has
    not loaded the dialplan, so every context is missing (as Asterisk 22.10
    answers a login a few milliseconds after its HTTP server is bound)."""

    def __init__(self) -> None:
        super().__init__()
        self.booted = False

    async def action(
        self, name: str, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> ActionResult:
        if name == "ShowDialPlan" and not self.booted:
            self.asked += dict(params or {}).get("Context") == INBOUND_CONTEXT
            if self.gate is not None:  # read before the boot ended, answered later
                await self.gate.wait()
            raise AMIActionError(
                name, Response((("Response", "Error"), ("Message", "Did not find context")))
            )
        return await super().action(name, params, **kwargs)

    async def send(
        self, name: str, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> ActionResult:
        """What a stream gap asks besides the dialplan (a Ping for the clock,
        the calls in progress): a Success with nothing listed."""
        if name in ("ShowDialPlan", "Getvar"):
            return await self.action(name, params, **kwargs)
        return ActionResult(Response((("Response", "Success"),)))


#: As Asterisk sends it to every session when a boot ends.
FULLY_BOOTED = Event(
    (("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted"))
)
#: Where EVERYONE's rule redirects: the snippet's [callrouter-dial] has it.
DIAL_101 = {"context": "callrouter-dial", "exten": "101"}


async def boot_audited(engine: router.engine.Engine) -> None:
    while (task := engine.dialplan_watch.looking_again) is not None:
        await asyncio.wait((task,))
    await asyncio.sleep(0)


async def test_a_dialplan_read_while_asterisk_booted_is_read_again_when_it_has(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """callrouter logged in while Asterisk was loading its modules (both
    started together, or Asterisk restarted under it): the start's audit
    found every context missing, so the rules redirecting there were refused.
    Asterisk's FullyBooted has the dialplan read again at once, not at the
    timed audit minutes later (the sandbox's first call after such a boot
    went to the default route)."""
    client = Booting()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    assert missing_target(DIAL_101, engine.executor.dialplan) is not None
    client.booted = True
    caplog.set_level(logging.INFO, logger="router.engine")
    caplog.clear()
    await engine.handle_event(FULLY_BOOTED)
    await boot_audited(engine)
    assert client.asked == 2
    assert missing_target(DIAL_101, engine.executor.dialplan) is None
    said = [r.getMessage() for r in caplog.records]
    assert (
        "dialplan changed since it was last checked (Asterisk finished booting after "
        "callrouter had read its dialplan)" in said
    ), said


async def test_a_fully_booted_reads_the_dialplan_again_and_says_only_a_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asterisk sends FullyBooted with every login to a booted Asterisk (a
    reconnect over TCP) and at the end of a restart, which may have taken an
    edited extensions.conf: each has the dialplan read again once, silent
    when nothing changed; a burst of them reads it once more."""
    client = Flaky()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.handle_event(FULLY_BOOTED)  # before any audit: the start's reads it
    await boot_audited(engine)
    assert client.asked == 0
    caplog.set_level(logging.INFO, logger="router.engine")
    await engine.dialplan_watch.audit("start")
    caplog.clear()
    for _ in range(3):
        await engine.handle_event(FULLY_BOOTED)
    await boot_audited(engine)
    assert client.asked == 2
    assert [r.getMessage() for r in caplog.records if "dialplan" in r.getMessage()] == []


async def test_a_restart_that_took_a_context_away_is_found_at_its_fully_booted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asterisk restarted (not reloaded) to take an edited extensions.conf
    without the rules' context: found when the restart ends, not by the timed
    look 300 s later, while Asterisk hung up every call redirected there."""
    client = Booting()
    client.booted = True
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    assert missing_target(DIAL_101, engine.executor.dialplan) is None
    client.booted = False  # the new dialplan has none of the contexts
    caplog.set_level(logging.INFO, logger="router.engine")
    caplog.clear()
    await engine.handle_event(FULLY_BOOTED)
    await boot_audited(engine)
    assert missing_target(DIAL_101, engine.executor.dialplan) is not None
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("dialplan changed since it was last checked (Asterisk finished"), said
    assert any("rule 'everyone' redirects to context 'callrouter-dial'" in m for m in said), said


async def test_a_fully_booted_during_an_audit_is_followed_by_another(tmp_path: Path) -> None:
    """The start's audit was reading when the boot ended: what it read may
    be from before, so another audit follows it; more FullyBooted events
    meanwhile add none."""
    client = Booting()
    engine = await engine_on(tmp_path, EVERYONE, client)
    client.gate = asyncio.Event()
    running = asyncio.ensure_future(engine.dialplan_watch.audit("start"))
    await asyncio.sleep(0)
    assert client.asked == 1
    client.booted = True
    for _ in range(5):
        await engine.handle_event(FULLY_BOOTED)
    client.gate.set()
    await running
    await boot_audited(engine)
    assert client.asked == 2
    assert missing_target(DIAL_101, engine.executor.dialplan) is None


async def test_a_flood_of_fully_booted_reads_the_dialplan_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile peer sending FullyBooted after FullyBooted had the dialplan
    read back to back, each look as soon as the last ended: some 800
    ShowDialPlan a second and a fifth of a core. The first look is at once;
    the next waits for the interval's end, covering the asks meanwhile, and
    ends with the engine."""
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 30.0)
    client = Booting()
    client.booted = True
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    assert client.asked == 1
    await engine.handle_event(FULLY_BOOTED)
    await boot_audited(engine)
    assert client.asked == 2  # the first look: at once
    for _ in range(50):
        await engine.handle_event(FULLY_BOOTED)
        for _ in range(5):
            await asyncio.sleep(0)
    assert client.asked == 2
    waiting = engine.dialplan_watch.looking_again
    assert waiting is not None
    assert not waiting.done()
    await asyncio.wait_for(engine.stop(), 5)
    await asyncio.sleep(0)
    assert waiting.cancelled()
    assert client.asked == 2


async def test_the_fully_booted_after_a_reconnection_is_read_at_once_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asterisk restarted under callrouter, which logged in again while it
    was loading its modules: the reconnection's look read a dialplan with no
    context yet. Its FullyBooted is read at once, not when the interval since
    the last look ends (rules to the contexts that read lacked would be
    refused until then); a look waiting for the interval goes with it. A
    peer closing each session it lets in gets one such look a reconnection
    (the stream's backoff bounds those: tests/unit/ami/test_stream.py)."""
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 30.0)
    client = Booting()
    client.booted = True
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    await engine.handle_event(FULLY_BOOTED)
    await boot_audited(engine)
    assert client.asked == 2
    client.booted = False  # restarting: no context loaded yet
    await engine._on_gap(StreamGap(100.0, 102.0, "reconnect", "closed"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert engine.dialplan_watch.looking_again is not None  # waits for the interval
    assert client.asked == 2
    client.booted = True
    await engine.handle_event(FULLY_BOOTED)
    await asyncio.wait_for(boot_audited(engine), 5)
    assert client.asked == 3
    assert missing_target(DIAL_101, engine.executor.dialplan) is None
    for _ in range(50):
        await engine._on_gap(StreamGap(100.0, 100.5, "reconnect", "closed"))
        for _ in range(3):
            await engine.handle_event(FULLY_BOOTED)
        await asyncio.wait_for(boot_audited(engine), 5)
    assert client.asked == 3 + 50  # one look a reconnection, not one a FullyBooted
    await asyncio.wait_for(engine.stop(), 5)


async def test_a_look_asked_for_within_the_interval_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look that waited for the interval reads the dialplan when it ends."""
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 0.2)
    client = Booting()
    client.booted = True
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    for _ in range(2):
        await engine.handle_event(FULLY_BOOTED)
        await boot_audited(engine)
    assert client.asked == 3


def test_fully_booted_is_among_the_events_asked_for() -> None:
    from router.ami.event_filter import CORE_EVENTS

    assert "FullyBooted" in CORE_EVENTS


async def test_a_reconnection_reads_the_dialplan_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over AJAM, a router that logs in again after Asterisk's restart has
    ended sees no FullyBooted (Asterisk 22.10 puts it in the Login answer
    only): the stream's gap is all it sees of the restart, which may have
    taken an edited extensions.conf. A gap of the client's own falling
    behind (overflow) is no sign of a restart."""
    from router.ami.stream import StreamGap

    client = Booting()
    client.booted = True
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    client.booted = False
    await engine._on_gap(StreamGap(100.0, 100.5, "overflow"))
    await boot_audited(engine)
    assert missing_target(DIAL_101, engine.executor.dialplan) is None
    caplog.set_level(logging.INFO, logger="router.engine")
    caplog.clear()
    await engine._on_gap(StreamGap(100.0, 102.0, "reconnect", "connection refused"))
    await boot_audited(engine)
    assert missing_target(DIAL_101, engine.executor.dialplan) is not None
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dialplan")]
    assert said[0] == (
        "dialplan changed since it was last checked (callrouter lost Asterisk for 2.0 s: "
        "a restart may have changed it)"
    ), said


async def test_a_reconnection_while_a_look_reads_is_looked_at_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnection's look was reading (the old dialplan, or a read Asterisk's
    restart cut short) when the stream lost Asterisk again: that reconnection's
    look was dropped, and over AJAM, which sees no FullyBooted after a restart
    it logged in after, the dialplan read before the restart stood until the
    timed audit, 300 s later (issue 16). It reads once more after the look in
    progress, within the interval as every look."""
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 0.05)
    client = Booting()
    client.booted = True
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.dialplan_watch.audit("start")
    assert client.asked == 1
    client.gate = asyncio.Event()
    await engine._on_gap(StreamGap(100.0, 100.5, "reconnect", "closed"))
    for _ in range(50):  # the look begins to read, and waits for its answer
        if client.asked == 2:
            break
        await asyncio.sleep(0.01)
    assert client.asked == 2
    client.booted = False  # restarted meanwhile, without the rules' contexts
    await engine._on_gap(StreamGap(101.0, 102.0, "reconnect", "closed"))
    client.gate.set()
    await asyncio.wait_for(boot_audited(engine), 5)
    assert client.asked == 3
    assert missing_target(DIAL_101, engine.executor.dialplan) is not None
    await asyncio.wait_for(engine.stop(), 5)
