"""The difference between Asterisk's clock and this host's (``Engine._measure_clock``,
``Router.clock_offset``), measured from a Ping's ``Timestamp`` (issue 16).

The answer's ``Timestamp`` is Asterisk's clock somewhere between the Ping's
sending and its answer's arrival: a round trip of R seconds leaves the
difference uncertain by R/2. A Ping answered late (a busy Asterisk, a slow
network, a login in front of it) must not be taken for a clock difference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from router.ami.message import Response
from router.ami.protocol import ActionResult
from router.engine import Engine, EngineOptions
from router.errors import AMITimeoutError
from router.plugins import Plugins
from router.testing.builders import make_config
from tests.unit.client_stub import EVERYONE, ClientStub, engine_on
from tests.unit.waiting import eventually


class Clock:
    """This host's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Pinged(ClientStub):
    """Answers each Ping with Asterisk's time: this host's plus ``skew``,
    read ``asked`` seconds after the Ping left and answered ``answered``
    seconds after that (the round trip is their sum)."""

    def __init__(self, clock: Clock, *, skew: float, delays: list[tuple[float, float]]) -> None:
        self.clock = clock
        self.skew = skew
        self.delays = delays
        self.pings = 0

    async def send(self, name: str, params: Any = None, **_: Any) -> ActionResult:
        assert name == "Ping", name
        asked, answered = self.delays[min(self.pings, len(self.delays) - 1)]
        self.pings += 1
        self.clock.now += asked
        stamp = self.clock.now + self.skew
        self.clock.now += answered
        fields = (("Response", "Success"), ("Ping", "Pong"), ("Timestamp", f"{stamp:.6f}"))
        return ActionResult(Response(fields))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


async def test_a_ping_answered_late_is_no_clock_difference(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Asterisk's clock is this host's; it read it at once and its answer
    took 3 s to come back (a busy Asterisk, a backlog ahead of it on the
    socket). The midpoint of the round trip put Asterisk 1.5 s behind: every
    request then looked 1.5 s younger than it was, and a Redirect could be
    sent after the call had taken its default route."""
    caplog.set_level(logging.INFO, logger="router")
    client = Pinged(clock, skew=0.0, delays=[(0.0, 3.0)])
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine._measure_clock()
    assert engine.router.clock_offset == 0.0
    assert not [r for r in caplog.records if "Asterisk's clock is" in r.getMessage()]


async def test_the_quickest_of_a_few_pings_is_the_one_believed(
    tmp_path: Path, clock: Clock
) -> None:
    """One Ping held up 0.4 s on its way there, the next answered in 2 ms:
    the quick one tells the difference (10 s), to within a millisecond (the
    first alone said 10.2 s)."""
    client = Pinged(clock, skew=10.0, delays=[(0.4, 0.0), (0.001, 0.001)])
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine._measure_clock()
    assert engine.router.clock_offset == pytest.approx(10.0, abs=0.002)


async def test_a_slow_measurement_keeps_the_difference_known(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured at start (10 s, a quick Ping), then after a gap while
    Asterisk is busy (every Ping takes 4 s): the slow answers tell nothing
    better, so the 10 s stays; they were taken as "the clocks agree again"
    or as 8 s."""
    caplog.set_level(logging.INFO, logger="router")
    client = Pinged(clock, skew=10.0, delays=[(0.001, 0.001)])
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine._measure_clock()
    assert engine.router.clock_offset == pytest.approx(10.0, abs=0.002)
    client.delays = [(0.0, 4.0)]
    await engine._measure_clock()
    assert engine.router.clock_offset == pytest.approx(10.0, abs=0.002)
    assert not [r for r in caplog.records if "agree again" in r.getMessage()]


async def test_a_measurement_holds_the_reconcile_up_for_a_second_at_most(
    tmp_path: Path, clock: Clock
) -> None:
    """The reconcile after a gap waits for the measurement: with every Ping
    taking 0.6 s, two are sent, not three."""
    client = Pinged(clock, skew=10.0, delays=[(0.3, 0.3)])
    engine = await engine_on(tmp_path, EVERYONE, client)
    began = clock.now
    await engine._measure_clock()
    assert client.pings == 2
    assert clock.now - began == pytest.approx(1.2)


class NoGetvar(Pinged):
    """Pings answered at once; Getvar times out (the live claim's clock),
    UserEvent (the heartbeat) taken, the channel list empty."""

    async def send(self, name: str, params: Any = None, **kw: Any) -> ActionResult:
        if name == "Ping":
            return await super().send(name, params, **kw)
        if name == "Getvar":
            raise AMITimeoutError("Getvar: no answer from pbx within 10.0 s")
        if name == "CoreShowChannels":
            return ActionResult(Response((("Response", "Success"),)))
        assert name == "UserEvent", name
        return ActionResult(Response((("Response", "Success"),)))

    async def action(self, name: str, params: Any = None, **kw: Any) -> ActionResult:
        return ActionResult(Response((("Response", "Success"),)))


async def test_the_live_claim_without_asterisks_time_allows_for_the_difference(
    tmp_path: Path, clock: Clock
) -> None:
    """The live-instance claim is on Asterisk's clock, which the other
    instances' claims are on; when Getvar could not read it the claim took
    this host's clock as is, 10 s ahead here, and a second instance started
    later looked older than this one. The difference is known before the
    claim now (and the start's reconcile does not measure it again)."""
    client = NoGetvar(clock, skew=-10.0, delays=[(0.001, 0.001)])
    rules = tmp_path / "rules.yaml"
    rules.write_text(EVERYONE, encoding="utf-8")
    config = make_config(state_dir=tmp_path / "state")
    engine = Engine(
        replace(config, router=replace(config.router, rules=(rules,))),
        plugins=Plugins.load(),
        client=client,  # type: ignore[arg-type]
        options=EngineOptions(watch_interval=0, live_heartbeat=2.0, audit_dialplan=False),
    )
    await engine.start()
    try:
        guard = engine.live_instance.guard
        assert guard is not None
        assert guard.me.since == pytest.approx(clock.now - 10.0, abs=0.01)
        assert client.pings == 1
    finally:
        await engine.stop()


@pytest.mark.parametrize("asterisk_stepped", [False, True], ids=["another-host", "same-host"])
@pytest.mark.parametrize("step", [-10800.0, 10800.0], ids=["back", "forward"])
async def test_after_a_host_clock_step_the_heartbeat_is_dated_on_the_clock_measured_again(
    tmp_path: Path,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    step: float,
    asterisk_stepped: bool,
) -> None:
    """Asterisk's clock is 10 s ahead; this host's is stepped by 3 hours (and
    Asterisk's with it when on the same host), while Asterisk is busy (Pings
    answered in 4 s). Before: the slow measurement kept the 10 s (3 hours off
    for another host), and the jobs, the heartbeat among them, were dated
    again (run at once) before the Ping anyway: its ``At`` was 3 hours off,
    so a standby ignored every beat and took over. Now the measurement comes
    first and a slow answer 3 hours off the known difference is believed."""
    client = Pinged(clock, skew=10.0, delays=[(0.001, 0.001)])
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine._measure_clock()
    assert engine.router.clock_offset == pytest.approx(10.0, abs=0.002)
    clock.now += step
    if not asterisk_stepped:
        client.skew -= step  # Asterisk's clock did not move
    client.delays = [(0.0, 4.0)]
    seen: list[float] = []

    def reschedule(scheduler: object, stepped: float) -> int:
        seen.append(engine.live_instance._asterisk_clock() - (clock.now + client.skew))
        return 0

    monkeypatch.setattr("router.engine.reschedule_from_now", reschedule)
    engine._scheduler.start(paused=True)
    try:
        await engine._clock_stepped(step)
    finally:
        engine._scheduler.shutdown(wait=False)
    assert len(seen) == 1
    # The heartbeat dated again is dated on Asterisk's clock, to half the round trip.
    assert abs(seen[0]) <= 2.0 + 0.002, seen


class Hung(Pinged):
    """A Ping that is answered only when ``release`` is set."""

    release: asyncio.Event

    async def send(self, name: str, params: Any = None, **kw: Any) -> ActionResult:
        await self.release.wait()
        return await super().send(name, params, **kw)


async def test_a_hung_ping_holds_the_jobs_dated_again_for_a_moment_only(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs wait for the measurement after a step, but not for a Ping that
    hangs (up to ``request_timeout``, 10 s): a step back's heartbeat held that
    long reads as a silent instance to the standby."""
    monkeypatch.setattr("router.engine._MEASURE_FIRST", 0.1)
    client = Hung(clock, skew=10.0, delays=[(0.001, 0.001)])
    client.release = asyncio.Event()
    engine = await engine_on(tmp_path, EVERYONE, client)
    dated: list[bool] = []
    monkeypatch.setattr(
        "router.engine.reschedule_from_now", lambda scheduler, stepped: dated.append(True) or 0
    )
    engine._scheduler.start(paused=True)
    try:
        stepped = asyncio.ensure_future(engine._clock_stepped(-10800.0))
        # Dated once _MEASURE_FIRST (0.1 s) is up, the Ping still hanging:
        # waited for, not slept on (0.5 s was a time limit on a loaded loop).
        await eventually(lambda: dated, "the jobs waited for the hung Ping")
        assert dated == [True], "the jobs waited for the hung Ping"
        assert not stepped.done()  # the measurement goes on
        client.release.set()
        await asyncio.wait_for(stepped, 5)
    finally:
        engine._scheduler.shutdown(wait=False)
    assert engine.router.clock_offset == pytest.approx(10.0, abs=0.002)
