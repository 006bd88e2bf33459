"""This host's wall clock stepped while callrouter runs (router/clock_step.py).

Seen with libfaketime on ``callrouter run`` against the sandbox: a step back of
3 hours held every timed job (apscheduler dates them by the wall clock), the
live heartbeat among them, which then read as a stall of the process; a step
forward of 3 hours made every routing request 3 hours old, and every call took
its default route (``late``) until the next event stream gap (issue 16).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from router.clock_step import ClockStepWatch, describe_step, reschedule_from_now
from router.engine import Engine, EngineOptions
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

HOURS_3 = 3 * 3600.0

RULES = """version: 1
rules:
  - name: sales
    on: call
    do:
      - redirect: {context: test-queue, exten: sales}
"""


def test_a_step_is_the_wall_clock_moving_against_the_monotonic_one() -> None:
    wall, mono = [1000.0], [50.0]
    watch = ClockStepWatch(lambda _: None, wall=lambda: wall[0], monotonic=lambda: mono[0])
    wall[0] += 10
    mono[0] += 10  # time passing, however long: no step
    assert watch.check() == 0.0
    wall[0] += 0.0005  # NTP slewing
    assert watch.check() == 0.0
    wall[0] -= HOURS_3
    assert watch.check() == -HOURS_3
    assert watch.check() == 0.0  # said once
    wall[0] += 90
    assert watch.check() == 90


def test_a_step_is_described_in_hours_minutes_and_seconds() -> None:
    assert describe_step(-HOURS_3) == "back by 3 h 0 min 0 s"
    assert describe_step(125) == "forward by 2 min 5 s"
    assert describe_step(1.5) == "forward by 1.5 s"


def test_a_step_of_days_is_said_in_days() -> None:
    """A VM restored from a week-old snapshot: its clock stepped forward
    6 days 22 min, said "forward by 144 h 22 min 0 s"."""
    assert describe_step(6 * 86400 + 22 * 60) == "forward by 6 d 0 h 22 min 0 s"
    assert describe_step(-(86400 + 5)) == "back by 1 d 0 h 0 min 5 s"
    assert describe_step(86399) == "forward by 23 h 59 min 59 s"


async def test_jobs_dated_by_a_clock_now_3_hours_back_run_again_within_their_interval() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)  # no DST change within the test's hours
    runs: list[float] = []
    scheduler.add_job(lambda: runs.append(time.monotonic()), "interval", seconds=0.2, id="beat")
    scheduler.add_job(lambda: None, "cron", minute="*", id="cron")
    scheduler.start()
    try:
        # What apscheduler holds after the clock went 3 hours back: the next runs
        # dated 3 hours (and an interval) ahead of the clock.
        ahead = datetime.now(scheduler.timezone) + timedelta(hours=3)
        for job in scheduler.get_jobs():
            job.modify(next_run_time=ahead)
        await asyncio.sleep(0.5)
        assert not runs
        assert reschedule_from_now(scheduler, -HOURS_3) == 2
        await eventually(lambda: len(runs) >= 2, "two runs of the 0.2 s job dated again")
        cron = scheduler.get_job("cron")
        assert cron is not None
        assert cron.next_run_time - datetime.now(scheduler.timezone) <= timedelta(minutes=1)
    finally:
        scheduler.shutdown(wait=False)


async def test_an_interval_job_dated_again_runs_now_not_an_interval_later() -> None:
    """hleft34c: the docstring (and operations.md) said an interval job dated
    again runs now, but apscheduler dates the first run of an interval
    trigger starting `now` after the moment it is asked, one interval later:
    after a step back a heartbeat waited a whole interval more (a standby
    takes over after three missed beats)."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    runs: list[float] = []
    scheduler.add_job(lambda: runs.append(time.monotonic()), "interval", seconds=30, id="beat")
    scheduler.start()
    try:
        ahead = datetime.now(scheduler.timezone) + timedelta(hours=3)
        job = scheduler.get_job("beat")
        assert job is not None
        job.modify(next_run_time=ahead)
        # Bounds on the moment it is dated again, not on when this test next gets
        # the CPU (a loaded machine paused it past a 1 s margin).
        before = datetime.now(scheduler.timezone)
        assert reschedule_from_now(scheduler, -HOURS_3) == 1
        after = datetime.now(scheduler.timezone)
        # Runs now: well within the 30 s an interval later would take.
        await eventually(lambda: runs, "the run of the job dated again")
        assert len(runs) == 1
        job = scheduler.get_job("beat")
        assert job is not None
        # Then every interval, from this run.
        assert before + timedelta(seconds=30) <= job.next_run_time
        assert job.next_run_time <= after + timedelta(seconds=30)
    finally:
        scheduler.shutdown(wait=False)


async def test_an_interval_job_keeps_the_wait_it_had_left_across_a_step() -> None:
    """Every interval job ran at once after a step: a plugin job scheduled every 24 h
    had an extra run each time the host's clock was put right. Its next run is
    the same moment on the clock as it now is."""
    scheduler = AsyncIOScheduler(timezone=UTC)  # 13 hours ahead: no DST change within
    runs: list[float] = []
    scheduler.add_job(lambda: runs.append(1.0), "interval", hours=24, id="daily")
    scheduler.start()
    try:
        job = scheduler.get_job("daily")
        assert job is not None
        # Due in 10 h on the old clock, which then went 3 h back: dated 13 h ahead.
        job.modify(next_run_time=datetime.now(scheduler.timezone) + timedelta(hours=13))
        assert reschedule_from_now(scheduler, -HOURS_3) == 1
        await asyncio.sleep(0.3)
        assert not runs
        job = scheduler.get_job("daily")
        assert job is not None
        left = job.next_run_time - datetime.now(scheduler.timezone)
        assert timedelta(hours=9, minutes=59) < left <= timedelta(hours=10)
        # Due in 2 h when the clock went 3 h forward: dated an hour ago, which
        # apscheduler would run at once; still 2 h away.
        job.modify(next_run_time=datetime.now(scheduler.timezone) - timedelta(hours=1))
        assert reschedule_from_now(scheduler, HOURS_3) == 1
        await asyncio.sleep(0.3)
        assert not runs
        job = scheduler.get_job("daily")
        assert job is not None
        left = job.next_run_time - datetime.now(scheduler.timezone)
        assert timedelta(hours=1, minutes=59) < left <= timedelta(hours=2)
        # One that was due while the step went unnoticed runs now.
        job.modify(next_run_time=datetime.now(scheduler.timezone) - timedelta(hours=1))
        assert reschedule_from_now(scheduler, 1800.0) == 1
        await eventually(lambda: runs, "the run of the job due meanwhile")
        assert runs == [1.0]
    finally:
        scheduler.shutdown(wait=False)


class _Shifted:
    """The ``time`` module of a host whose wall clock is ``by`` seconds off."""

    def __init__(self, by: float) -> None:
        self.by = by

    def time(self) -> float:
        return time.time() + self.by

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _shift_router_clock(monkeypatch: pytest.MonkeyPatch, by: float) -> None:
    """This host's clock (callrouter's) steps by ``by`` s; Asterisk's (the replay's) does not."""
    shifted = _Shifted(by)
    for module in ("router.routing", "router.asterisk_clock", "router.clock_step"):
        monkeypatch.setattr(f"{module}.time", shifted)

    class ShiftedDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + timedelta(seconds=by)

    for module in (
        "apscheduler.schedulers.base",
        "apscheduler.triggers.interval",
        "apscheduler.executors.base",
    ):
        monkeypatch.setattr(f"{module}.datetime", ShiftedDatetime)
    monkeypatch.setattr("router.clock_step.datetime", ShiftedDatetime)


async def _routed(engine: Engine, ajam_replay: ReplayAsterisk) -> str:
    before = len(engine.records)
    ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await ajam_replay.settle(engine)
    for _ in range(100):
        if len(engine.records) > before:
            break
        await asyncio.sleep(0.05)
    return engine.records[-1].outcome


@pytest.mark.parametrize("step", [HOURS_3, -HOURS_3], ids=["forward", "back"])
async def test_calls_are_routed_and_the_heartbeat_goes_on_after_a_step(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: float,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    # A 2 s heartbeat: its stall mark (2.5 intervals of silence, 5 s) is then
    # 2 s past the longest silence a step makes (the last beat an interval
    # before it, the watch's second to notice it), room for a loaded host;
    # with 1 s beats a host at load 7 crossed it (2.6 s) with nothing wrong.
    options = EngineOptions(watch_interval=0, live_heartbeat=2.0, check_privileges=False)
    engine: Engine = await engine_factory(rules, options=options)
    await asyncio.sleep(1.2)  # past the live-instance settle time
    assert await _routed(engine, ajam_replay) == "executed"
    _shift_router_clock(monkeypatch, step)
    # The watch looks every second; wait for it to have said so rather than a
    # fixed sleep, then for a beat sent after it (a job still dated on the old
    # clock would hold the heartbeat for 3 hours: far past any deadline here).
    await eventually(lambda: "clock was stepped" in caplog.text, "the step noticed")
    beats = ajam_replay.count("UserEvent", probes=True)
    await eventually(
        lambda: ajam_replay.count("UserEvent", probes=True) > beats, "a heartbeat after the step"
    )
    assert await _routed(engine, ajam_replay) == "executed"
    said = [r.getMessage() for r in caplog.records if "clock was stepped" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"this host's clock was stepped {describe_step(step)}: ")
    assert said[0].endswith("dated again from now, and Asterisk's clock is measured again")
    assert "stalled" not in caplog.text
    assert "sent no heartbeat" not in caplog.text


async def test_a_schedule_rule_with_both_day_fields_is_dated_again_like_any_cron() -> None:
    """hreview35: a ``schedule:`` rule restricting both day fields ("0 9 1 * mon":
    the 1st or a Monday) is an OrTrigger of two crons (router/rules/cron.py),
    which reschedule_from_now passed over: after a step its next run stayed
    dated on the old clock, where every other cron job was dated again."""
    from router.rules.cron import cron_trigger

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(lambda: None, cron_trigger("* * 1-31 * 0-6", UTC), id="rule:x")
    scheduler.start()
    try:
        job = scheduler.get_job("rule:x")
        assert job is not None
        job.modify(next_run_time=datetime.now(scheduler.timezone) + timedelta(hours=3))
        assert reschedule_from_now(scheduler, -HOURS_3) == 1
        job = scheduler.get_job("rule:x")
        assert job is not None
        assert job.next_run_time - datetime.now(scheduler.timezone) <= timedelta(minutes=1)
    finally:
        scheduler.shutdown(wait=False)


async def test_a_failure_on_a_step_is_logged_and_the_watch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hreview35: an exception out of ``on_step`` ended the watch's task, said by
    nobody ("Task exception was never retrieved" at best, at exit): every later
    step went unnoticed, its timed jobs held for as long as a step back."""
    wall = [1000.0]
    steps: list[float] = []

    def on_step(seconds: float) -> None:
        steps.append(seconds)
        if len(steps) == 1:
            raise RuntimeError("boom")

    watch = ClockStepWatch(on_step, wall=lambda: wall[0], monotonic=lambda: 0.0, every=0.01)
    watch.start()
    try:
        wall[0] -= HOURS_3
        for _ in range(100):
            if steps:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        wall[0] += 60
        for _ in range(100):
            if len(steps) == 2:
                break
            await asyncio.sleep(0.01)
        assert steps == [-HOURS_3, 60]
        assert "boom" in caplog.text
    finally:
        await watch.cancel()


def test_the_last_run_a_step_jumped_over_is_found_and_counting_is_bounded() -> None:
    """The run a ``missed: run-once`` rule makes up stands for the last one
    jumped over (router/engine.py orders the rules by it)."""
    from datetime import UTC, datetime, timedelta

    from router.clock_step import last_run_before
    from router.rules.cron import cron_trigger

    now = datetime(2026, 12, 7, 20, 30, tzinfo=UTC)
    daily = cron_trigger("0 19 * * *", UTC)
    first = datetime(2026, 12, 1, 19, 0, tzinfo=UTC)
    assert last_run_before(daily, first, now) == datetime(2026, 12, 7, 19, 0, tzinfo=UTC)
    assert last_run_before(daily, first, now - timedelta(hours=2)) == datetime(
        2026, 12, 6, 19, 0, tzinfo=UTC
    )
    # Every minute over six days: more runs than counted, the last about now.
    assert last_run_before(cron_trigger("* * * * *", UTC), first, now) == now
