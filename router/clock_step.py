"""This host's wall clock stepped (NTP after a long drift, ``date -s``, a VM
restored from a snapshot): noticed within a second, from the wall clock against
the monotonic one, which no step moves.

Two things read the wall clock and went wrong after a step. apscheduler dates
its timed jobs by it: a step back of 3 hours held every interval job, the live
heartbeat and the keepalive among them, for 3 hours (the heartbeat's silence
then read as a stall of the process, and another instance would have taken
over). And a routing request's age is Asterisk's ``Timestamp`` against this
clock plus the difference measured at start (router/asterisk_clock.py): a step
forward of 3 hours made every request 3 hours old, and every call took its
default route until the next event stream gap. So on a step the engine dates
its jobs again from the clock as it now is and measures Asterisk's clock again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import BaseCombiningTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from router.tasks import cancel_and_wait
from router.wording import duration

if TYPE_CHECKING:  # pragma: no cover
    from apscheduler.job import Job

__all__ = [
    "STEP",
    "ClockStepWatch",
    "describe_step",
    "due_within_grace",
    "last_run_before",
    "reschedule_from_now",
]

log = logging.getLogger("router.engine")

#: A change of the wall clock against the monotonic one that counts as a step,
#: in seconds: NTP slews at most 0.5 ms a second, and a late wake-up moves both.
STEP = 1.0
#: How often the clocks are compared, in seconds.
CHECK_EVERY = 1.0


class ClockStepWatch:
    """Calls ``on_step(seconds)`` (positive: forward) when the wall clock steps."""

    def __init__(
        self,
        on_step: Callable[[float], Awaitable[None] | None],
        *,
        wall: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        every: float = CHECK_EVERY,
        step: float = STEP,
    ) -> None:
        self._on_step = on_step
        self._wall = wall or _wall
        self._monotonic = monotonic or _monotonic
        self._every = every
        self._step = step
        self._skew = self._wall() - self._monotonic()
        self._task: asyncio.Task[None] | None = None

    def check(self) -> float:
        """The step since the last check, in seconds (0.0: none)."""
        skew = self._wall() - self._monotonic()
        moved, self._skew = skew - self._skew, skew
        return moved if abs(moved) >= self._step else 0.0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._skew = self._wall() - self._monotonic()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="callrouter-clock-step"
            )

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)  # a cancelled cancel() is not swallowed (issue 16)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            moved = self.check()
            if not moved:
                continue
            # A failure is said and the watch goes on: ended, it left every later
            # step unnoticed (and the jobs held as long as a step back).
            try:
                result = self._on_step(moved)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("dealing with this host's clock step %s failed", describe_step(moved))


def _wall() -> float:
    return time.time()


def _monotonic() -> float:
    return time.monotonic()


def describe_step(seconds: float) -> str:
    """``forward by 3 h 0 min 2 s``, ``back by 12.5 s``, ``forward by 6 d 0 h
    22 min 0 s`` (:func:`router.wording.duration`)."""
    way = "forward" if seconds > 0 else "back"
    return f"{way} by {duration(seconds)}"


def due_within_grace(job: Job, now: datetime) -> bool:
    """Whether ``job`` was due at or before ``now``, late by no more than its
    misfire grace: apscheduler runs it when it wakes."""
    due = job.next_run_time
    if due is None or due > now:
        return False
    grace = job.misfire_grace_time
    return grace is None or (now - due).total_seconds() <= grace


#: Runs :func:`last_run_before` counts at most: one firing more often over a
#: step has its last run about the moment the step ended.
_RUNS_COUNTED = 1000


def last_run_before(trigger: BaseTrigger, due: datetime, now: datetime) -> datetime:
    """The last time ``trigger`` fires at or before ``now``, from ``due`` (its
    first run missed); ``now`` when it fires more than :data:`_RUNS_COUNTED`
    times in between (every minute over a step of a day)."""
    last = due
    for _ in range(_RUNS_COUNTED):
        # The next after ``last`` (asked from ``last`` itself, a cron gives it back).
        fire = trigger.get_next_fire_time(last, last + timedelta(microseconds=1))
        if fire is None or fire > now:
            return last
        last = fire
    return now


def reschedule_from_now(scheduler: BaseScheduler, stepped: float) -> int:
    """Date every interval and cron job of ``scheduler`` again after the clock
    stepped by ``stepped`` seconds (positive: forward).

    An interval job keeps the wait it had left (its next run, moved by the
    step, at most an interval away), and one due meanwhile (the heartbeat,
    after the time it took to notice the step) runs now; then every interval.
    Running every job at once instead gave a plugin's job scheduled every 24
    hours an extra run at each step. A cron job runs at its next time on the clock as
    it now is, a ``schedule:`` rule restricting both day fields (two crons, either
    firing: router/rules/cron.py) too. Returns how many were dated again."""
    count = 0
    now = datetime.now(scheduler.timezone)
    moved = timedelta(seconds=stepped)
    for job in scheduler.get_jobs():
        trigger = job.trigger
        if isinstance(trigger, IntervalTrigger):
            interval = timedelta(seconds=trigger.interval_length)
            due = job.next_run_time
            # The same moment on the clock as it now is; within [now, now + interval].
            when = now if due is None else min(max(due + moved, now), now + interval)
            # next_run_time too: a trigger alone is first due an interval after
            # its start (apscheduler dates the first run after the moment it is
            # asked), so one due now would wait a whole interval more.
            job.modify(
                trigger=IntervalTrigger(
                    seconds=trigger.interval_length,
                    start_date=when,
                    timezone=trigger.timezone,
                    jitter=trigger.jitter,
                ),
                next_run_time=when,
            )
        elif isinstance(trigger, CronTrigger | BaseCombiningTrigger):
            if due_within_grace(job, now):
                # A run a small step forward passed (19:00:00 from 18:59:59 to
                # 19:00:02) runs now, as apscheduler runs one as late without
                # a step: dated again, the day's run was skipped.
                continue
            job.modify(next_run_time=trigger.get_next_fire_time(None, now))
        else:
            continue
        count += 1
    if scheduler.running:
        scheduler.wakeup()
    return count
