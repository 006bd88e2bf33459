"""The engine schedules ``schedule:`` rules as check validated them: classic cron
weekdays in the rules' zone ([plugins.timefuncs] timezone), never the host's;
its own timed jobs never outlive their interval, and a skipped run is quiet."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.builtin.timefuncs import time_zone
from router.clock_step import last_run_before
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.errors import StateFileDenied
from router.plugins import Plugins
from router.rules.cron import cron_trigger
from router.schedule_runs import LastRun, ScheduleRuns
from tests.unit.test_engine_unit import FakeClient
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from apscheduler.job import Job

    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: sunday-report
    schedule: "0 9 * * 0"
    do:
      - ami: {action: Ping}
  - name: sunday-too
    schedule: "30 9 * * 7"
    do:
      - ami: {action: Ping}
"""


async def test_schedules_fire_on_sunday_in_the_rules_zone(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
        '[plugins.timefuncs]\ntimezone = "Asia/Vladivostok"\n'
    )
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=FakeClient(),  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False),
        options=EngineOptions(watch_interval=0),
    )
    await engine.start()
    try:
        tuesday = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
        fire = {}
        for name in ("sunday-report", "sunday-too"):
            job = engine.scheduler.get_job(f"rule:{name}")
            assert job is not None, f"{name} was not scheduled"
            fire[name] = job.trigger.get_next_fire_time(None, tuesday).astimezone(UTC)
        # 09:00 and 09:30 on Sunday in Vladivostok (UTC+10) are 23:00 and
        # 23:30 UTC on Saturday.
        assert fire == {
            "sunday-report": datetime(2026, 12, 5, 23, 0, tzinfo=UTC),
            "sunday-too": datetime(2026, 12, 5, 23, 30, tzinfo=UTC),
        }
    finally:
        await engine.stop()


async def test_a_stalled_asterisk_skips_no_heartbeat_and_says_nothing_of_the_scheduler(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: while Asterisk did not answer, every heartbeat run waited for the
    request timeout (10 s) and apscheduler logged ``Execution of job
    "Engine._heartbeat ..." skipped: maximum number of running instances
    reached`` every interval. A run is bounded by half the interval now, so
    one starts at every tick, and a skipped run of any job is not said at
    WARNING."""
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n    do:\n"
        "      - redirect: {context: queues, exten: sales}\n"
    )
    stalled = asyncio.Event()

    async def userevent(sent: object) -> None:
        if stalled.is_set():
            await asyncio.sleep(5)  # Asterisk does not answer
        return None

    ajam_replay.on("UserEvent", userevent)
    engine = await engine_factory(
        tmp_path / "rules.yaml",
        options=EngineOptions(watch_interval=0, live_heartbeat=0.2, live_settle=0),
    )
    stalled.set()
    before = ajam_replay.count("UserEvent")
    # One a tick, none skipped: unbounded, each run waited out the stall (5 s)
    # and at most three could start within the deadline. Waited for, not slept
    # for: on a loaded host the ticks come late (a fixed 1.3 s saw four).
    await eventually(
        lambda: ajam_replay.count("UserEvent") - before >= 5, "five heartbeats during the stall"
    )

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    # The stall itself is said once, after a second without an answer (hops32:
    # /readyz went on saying ready over AJAM), never a line per heartbeat run:
    # three more runs after it, still one line.
    await eventually(lambda: any("heartbeat" in m for m in warned()), "the stall said")
    runs = ajam_replay.count("UserEvent")
    await eventually(lambda: ajam_replay.count("UserEvent") - runs >= 3, "three runs more")
    said = warned()
    assert not [m for m in said if "maximum number of running instances" in m]
    told = [m for m in said if "heartbeat" in m]
    assert len(told) == 1
    assert told[0].startswith("Asterisk does not answer: this router's heartbeat")
    assert engine.ready.is_set()
    # A job whose run outlives its interval (a plugin's, a slow disk): skipped quietly.
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(0.5)

    engine.schedule("test:slow", slow, every=0.1)
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.sleep(0.4)
    engine.scheduler.remove_job("test:slow")
    await asyncio.sleep(0.2)  # its run ends
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if "maximum number of running instances" in m]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_after_a_stall_each_job_runs_once_late_and_nothing_is_missed(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A process stopped for 8 s (kill -STOP) logged apscheduler's WARNING
    "Run time of job ... was missed" for every job, and a job (a schedule:
    rule's among them) due in the stall did not run at all: the default grace
    is 1 s."""
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n    do:\n"
        "      - redirect: {context: queues, exten: sales}\n"
    )
    engine = await engine_factory(
        tmp_path / "rules.yaml", options=EngineOptions(watch_interval=0, live_heartbeat=0)
    )
    runs: list[float] = []

    async def tick() -> None:
        runs.append(time.monotonic())

    engine.schedule("test:tick", tick, every=2.5)
    await asyncio.sleep(0.2)
    # The whole process stops (no loop turn) past the run due at 2.5 s, and
    # wakes more than apscheduler's default grace (1 s) after it.
    time.sleep(3.7)  # noqa: ASYNC251 (the stall is the point)
    await asyncio.sleep(0.3)
    assert len(runs) == 1, "the run due in the stall did not run, once, after it"
    assert not [r for r in caplog.records if "was missed" in r.getMessage()]


async def test_a_schedule_rule_due_in_a_stall_acts_once_the_instance_has_settled(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
) -> None:
    """hnew31's trial (kill -STOP for 10 s over a `schedule: "* * * * *"` rule's
    minute, on the sandbox): the run due in the stall ran late, as rules.md
    says, but just as the live-instance guard rejoined as a newcomer and
    settled again, so the rule sent nothing and said nothing; the Setvar came
    only a minute later. A run that finds the guard settling waits for it (up
    to the settle), as a routing decision does, then acts."""
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: night\n    schedule: '0 19 * * *'\n    do:\n"
        "      - ami: {action: Setvar, variable: CALLROUTER_MODE, value: night}\n"
    )
    engine = await engine_factory(
        tmp_path / "rules.yaml",
        options=EngineOptions(watch_interval=0, live_heartbeat=0.2, live_settle=0.3),
    )
    await asyncio.sleep(0.4)  # settled after the start
    job = engine.scheduler.get_job("rule:night")
    assert job is not None
    job.modify(next_run_time=datetime.now(UTC) + timedelta(seconds=0.2))
    # The whole process stops past the run and past the guard's stall bound
    # (2.5 heartbeats): on waking it rejoins as a newcomer and settles again.
    time.sleep(0.9)  # noqa: ASYNC251 (the stall is the point)
    await asyncio.sleep(0.8)
    assert ajam_replay.count("Setvar") == 1, "the schedule rule's late run sent nothing"


async def test_a_plugins_every_job_first_runs_one_interval_after_it_is_scheduled(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """docs/plugins.md, Timed jobs: the first run of an ``every`` job is ``every``
    seconds away, not at once (a plugin reads what it needs at start itself)."""
    (tmp_path / "rules").mkdir()
    engine = await engine_factory(tmp_path / "rules")
    before = datetime.now(UTC)
    engine.schedule("vip:reload", lambda: None, every=600)
    after = datetime.now(UTC)
    job = engine.scheduler.get_job("vip:reload")
    assert job is not None
    assert before + timedelta(seconds=600) <= job.next_run_time
    assert job.next_run_time <= after + timedelta(seconds=600)


async def test_a_run_too_late_to_make_up_is_said_naming_the_rule(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hsched48's trial (this host's clock stepped forward 13 h 30 min, over a
    `schedule: "*/2 * * * mon-fri"` rule's runs): the run skipped was said only
    in apscheduler's words, `Run time of job "Engine._run_schedule (trigger:
    cron[month='*', ...])" was missed by 0:01:42`, naming no rule."""
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: night-mode\n    schedule: '0 19 * * *'\n    do:\n"
        "      - ami: {action: Setvar, variable: CALLROUTER_MODE, value: night}\n"
    )
    engine = await engine_factory(
        tmp_path / "rules.yaml", options=EngineOptions(watch_interval=0, live_heartbeat=0)
    )
    job = engine.scheduler.get_job("rule:night-mode")
    assert job is not None
    # Due 90 s ago: past the 60 s grace, as after a forward step over it.
    job.modify(next_run_time=datetime.now(UTC) - timedelta(seconds=90))
    caplog.set_level(logging.WARNING)
    await eventually(
        lambda: any(
            "schedule night-mode: the run due at" in r.getMessage() for r in caplog.records
        ),
        "the skipped run said",
    )
    (said,) = [r.getMessage() for r in caplog.records if "schedule night-mode" in r.getMessage()]
    assert said.endswith(" MSK")  # the next run, in the rules' zone
    assert re.search(
        r" MSK was skipped, 1 min 3\d s late \(not made up: the process stopped for more than 60 s",
        said,
    ), said
    assert not [r for r in caplog.records if "was missed" in r.getMessage()]
    assert ajam_replay.count("Setvar") == 0


async def _paused_night_mode(engine_factory: EngineFactory, tmp_path: Path) -> tuple[Engine, Job]:
    """An engine whose one rule sets night mode at 19:00, its scheduler paused so
    that a step is noticed before apscheduler wakes; the engine and the rule's job."""
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: night-mode\n    schedule: '0 19 * * *'\n    do:\n"
        "      - ami: {action: Setvar, variable: CALLROUTER_MODE, value: night}\n"
    )
    engine = await engine_factory(
        tmp_path / "rules.yaml", options=EngineOptions(watch_interval=0, live_heartbeat=0)
    )
    engine.scheduler.pause()
    job = engine.scheduler.get_job("rule:night-mode")
    assert job is not None
    return engine, job


async def test_a_run_a_clock_step_jumped_over_is_said_naming_the_rule(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hsched48's trial (the host's clock stepped forward 1 h over a
    `*/2 * * * mon-fri` rule and the 1C warm-up): the step watch dated the
    jobs again from the new time, and the runs jumped over were said nowhere."""
    engine, job = await _paused_night_mode(engine_factory, tmp_path)
    # The wall clock jumped 2 h forward over the run due 1 h ago.
    job.modify(next_run_time=datetime.now(UTC) - timedelta(hours=1))
    caplog.set_level(logging.WARNING)
    await engine._clock_stepped(7200.0)
    said = [r.getMessage() for r in caplog.records if "schedule night-mode" in r.getMessage()]
    assert len(said) == 1, said
    assert re.search(r" MSK was skipped, 1 h 0 min \d+ s late \(not made up", said[0]), said
    assert re.search(r"; next run \d{4}-\d\d-\d\d 19:00:00 MSK$", said[0]), said
    assert ajam_replay.count("Setvar") == 0


async def test_a_run_a_small_step_forward_passed_runs_now(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A step of a few seconds (NTP after a VM resumed: 18:59:59 to 19:00:02)
    over a run: dated again from the new time, the day's 19:00 run was skipped,
    where apscheduler runs one as late (within the 60 s grace) without a step."""
    engine, job = await _paused_night_mode(engine_factory, tmp_path)
    job.modify(next_run_time=datetime.now(UTC) - timedelta(seconds=2))
    caplog.set_level(logging.WARNING)
    await engine._clock_stepped(3.0)
    engine.scheduler.resume()
    await eventually(lambda: ajam_replay.count("Setvar") == 1, "the run passed over, run now")
    assert not [r for r in caplog.records if "was skipped" in r.getMessage()]


_MODES = """version: 1
rules:
  - name: day-mode
    schedule: '0 9 * * *'
    missed: run-once
    do:
      - ami: {action: Setvar, variable: CALLROUTER_MODE, value: day}
  - name: night-mode
    schedule: '0 19 * * *'
    missed: run-once
    do:
      - ami: {action: Setvar, variable: CALLROUTER_MODE, value: night}
  - name: report
    schedule: '0 20 * * *'
    do:
      - ami: {action: UserEvent, UserEvent: Report}
"""


async def _paused_modes(engine_factory: EngineFactory, tmp_path: Path) -> tuple[Engine, Job, Job]:
    """An engine whose day-mode and night-mode rules make up a missed run
    (``missed: run-once``), its scheduler paused; the engine and both jobs."""
    (tmp_path / "rules.yaml").write_text(_MODES)
    engine = await engine_factory(
        tmp_path / "rules.yaml", options=EngineOptions(watch_interval=0, live_heartbeat=0)
    )
    engine.scheduler.pause()
    day, night = (
        engine.scheduler.get_job("rule:day-mode"),
        engine.scheduler.get_job("rule:night-mode"),
    )
    assert day is not None
    assert night is not None
    return engine, day, night


def _modes(ajam_replay: ReplayAsterisk) -> list[str]:
    return [a["Value"] for a in ajam_replay.sent("Setvar")]


async def test_runs_a_clock_step_jumped_over_are_made_up_once_in_the_order_they_were_due(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A VM restored from a snapshot stepped its clock forward days over both
    mode switches: each run jumped over was said skipped, and the PBX stayed in
    the mode of the day the snapshot was taken until the next switch. With
    ``missed: run-once`` each rule runs once, the one whose last run jumped
    over was due last, last: here the hourly one (its first run jumped over
    was due 3 h ago, its last within the hour) after the daily one (2 h ago);
    a rule without it (report) is still skipped."""
    engine, day, night = await _paused_modes(engine_factory, tmp_path)
    now = datetime.now(UTC)
    # night-mode fires every hour here: the step jumped over its runs for 3 h.
    night.modify(trigger=cron_trigger("0 * * * *", UTC), next_run_time=now - timedelta(hours=3))
    day.modify(next_run_time=now - timedelta(hours=2))
    report = engine.scheduler.get_job("rule:report")
    assert report is not None
    report.modify(next_run_time=now - timedelta(hours=1))
    caplog.set_level(logging.WARNING)
    await engine._clock_stepped(6 * 86400.0)
    engine.scheduler.resume()
    await eventually(lambda: len(_modes(ajam_replay)) == 2, "both runs made up")
    assert _modes(ajam_replay) == ["day", "night"]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("schedule ")]
    assert len(said) == 3, said
    night_said = next(m for m in said if m.startswith("schedule night-mode"))
    # The last run jumped over: within the hour, at a full hour.
    assert re.search(
        r"the run due at \d{4}-\d\d-\d\d \d\d:00:00 MSK was missed, (\d+ min )?\d+(\.\d)? s "
        r"late \(run once now, as its rule says missed: run-once: ",
        night_said,
    ), night_said
    assert any(m.startswith("schedule report: ") and "was skipped" in m for m in said), said
    assert ajam_replay.count("UserEvent") == 0


async def test_a_run_missed_in_a_stall_is_made_up_once(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The process stopped for more than the 60 s grace over night-mode's
    run (its job due 90 s ago): with ``missed: run-once`` it runs, once."""
    engine, _day, night = await _paused_modes(engine_factory, tmp_path)
    night.modify(next_run_time=datetime.now(UTC) - timedelta(seconds=90))
    caplog.set_level(logging.WARNING)
    engine.scheduler.resume()
    await eventually(lambda: _modes(ajam_replay) == ["night"], "the missed run made up")
    (said,) = [r.getMessage() for r in caplog.records if "schedule night-mode" in r.getMessage()]
    assert re.search(r" was missed, 1 min 3\d s late \(run once now", said), said
    assert not [r for r in caplog.records if "was missed by" in r.getMessage()]


async def test_a_run_missed_as_the_make_up_ends_is_made_up_too(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hsched49's window: the make-up was a scheduler job with one instance. A
    run missed as it ended (its last look at the runs to make up done, its
    instance not yet counted off) was added as a job apscheduler refused
    ("maximum number of running instances"), and waited for the next missed
    run. Here day-mode's miss is said right after night-mode's make-up ends,
    with apscheduler's wake-up queued before the job's end is counted."""
    engine, _day, _night = await _paused_modes(engine_factory, tmp_path)
    loop = asyncio.get_running_loop()
    run = engine._run_schedule

    async def then_a_miss(name: str) -> None:
        await run(name)
        if name == "night-mode":
            now = datetime.now(UTC)
            loop.call_soon(engine._run_missed, "rule:day-mode", now - timedelta(hours=1), now)
            engine.scheduler.wakeup()

    monkeypatch.setattr(engine, "_run_schedule", then_a_miss)
    engine.scheduler.resume()
    now = datetime.now(UTC)
    engine._run_missed("rule:night-mode", now - timedelta(hours=2), now)
    await eventually(lambda: _modes(ajam_replay) == ["night", "day"], "both made up, in turn")


def _last_before(cron: str, now: datetime) -> datetime:
    """The last run of ``cron`` (Moscow) at or before ``now``."""
    trigger = cron_trigger(cron, time_zone("Europe/Moscow"))
    first = trigger.get_next_fire_time(None, now - timedelta(days=1, seconds=1))
    return last_run_before(trigger, first, now).astimezone(UTC)


async def test_a_run_missed_while_stopped_is_made_up_once_at_start_not_twice(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """callrouter stopped for two days: day-mode and night-mode (missed:
    run-once) each make up their last run once at start, in the order those
    were due, and keep it in state_dir/schedule-runs.json; report (skip) makes
    nothing up. A restart right after finds nothing missed."""
    (tmp_path / "rules.yaml").write_text(_MODES)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    now = datetime.now(UTC)
    two_days_ago = now - timedelta(days=2)
    ScheduleRuns(state).save(
        {
            name: LastRun(cron, "Europe/Moscow", two_days_ago)
            for name, cron in (("day-mode", "0 9 * * *"), ("night-mode", "0 19 * * *"))
        }
    )
    due = {
        mode: _last_before(cron, now)
        for mode, cron in (("day", "0 9 * * *"), ("night", "0 19 * * *"))
    }
    caplog.set_level(logging.WARNING)
    options = EngineOptions(watch_interval=0, live_heartbeat=0, check_privileges=False)
    await engine_factory(tmp_path / "rules.yaml", state_dir=state, options=options)
    await eventually(lambda: len(_modes(ajam_replay)) == 2, "both runs made up")
    assert _modes(ajam_replay) == sorted(due, key=lambda mode: due[mode])
    said = [
        r.getMessage()
        for r in caplog.records
        if "while callrouter was not running" in r.getMessage()
    ]
    assert len(said) == 2, said
    assert all(
        "(run once now, as its rule says missed: run-once; its last run kept" in m for m in said
    )
    await engine_factory.close()
    assert {name: run.last for name, run in ScheduleRuns(state).load().items()} == {
        "day-mode": due["day"],
        "night-mode": due["night"],
    }
    caplog.clear()
    again = await engine_factory(tmp_path / "rules.yaml", state_dir=state, options=options)
    # Queued at start, before start() returns: nothing was.
    assert again._making_up is None
    assert not [r for r in caplog.records if "was missed" in r.getMessage()]
    assert len(_modes(ajam_replay)) == 2


async def test_a_renamed_rule_or_a_changed_schedule_makes_no_run_up_and_says_so(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kept: 'evening-mode' (renamed night-mode since) and day-mode under its
    old time, 08:00. Neither run is made up, each said; the file then holds
    the rules as they are, counted from this start."""
    (tmp_path / "rules.yaml").write_text(_MODES)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    now = datetime.now(UTC)
    two_days_ago = now - timedelta(days=2)
    ScheduleRuns(state).save(
        {
            "evening-mode": LastRun("0 19 * * *", "Europe/Moscow", two_days_ago),
            "day-mode": LastRun("0 8 * * *", "Europe/Moscow", two_days_ago),
        }
    )
    caplog.set_level(logging.WARNING)
    engine = await engine_factory(tmp_path / "rules.yaml", state_dir=state)
    said = {
        r.getMessage().split(":")[0]: r.getMessage()
        for r in caplog.records
        if "while callrouter was not running" in r.getMessage()
    }
    assert set(said) == {"schedule evening-mode", "schedule day-mode"}
    assert (
        "not made up: no schedule: rule named 'evening-mode' with missed: run-once now"
        in (said["schedule evening-mode"])
    )
    assert (
        "not made up: its schedule changed since its last run ('0 8 * * *' in Europe/Moscow, "
        "now '0 9 * * *' in Europe/Moscow)" in said["schedule day-mode"]
    )
    assert engine._making_up is None
    await engine_factory.close()
    assert ajam_replay.count("Setvar") == 0
    kept = ScheduleRuns(state).load()
    assert set(kept) == {"day-mode", "night-mode"}
    assert all(run.last > two_days_ago + timedelta(days=1) for run in kept.values())


async def test_a_schedule_runs_file_others_may_write_refuses_the_start(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(_MODES)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    ScheduleRuns(state).save({})
    (state / "schedule-runs.json").chmod(0o666)
    with pytest.raises(StateFileDenied, match=r"schedule-runs.json: .* has mode 0666"):
        await engine_factory(tmp_path / "rules.yaml", state_dir=state)


async def test_the_start_counts_one_moment_for_runs_made_up_and_the_jobs_first_runs(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """A run due at the very moment the start counted missed runs up to is made
    up, not run by its job too; one due a moment later is the job's: the jobs
    were dated from the time they were added, a few ms after that moment, and
    a run due in between was neither made up nor run."""
    engine, _day, _night = await _paused_modes(engine_factory, tmp_path)
    due = _last_before("0 19 * * *", datetime.now(UTC))
    engine._schedule_rules(due)
    job = engine.scheduler.get_job("rule:night-mode")
    assert job is not None
    assert job.next_run_time == due + timedelta(days=1)
    engine._schedule_rules(due - timedelta(microseconds=1))
    job = engine.scheduler.get_job("rule:night-mode")
    assert job is not None
    assert job.next_run_time == due
