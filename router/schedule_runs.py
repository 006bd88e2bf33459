"""The last run of each ``missed: run-once`` schedule rule, kept in state_dir (issue 16).

``missed: run-once`` made up a run missed in a stall or jumped over by a clock
step, but a run due while callrouter was not running at all (stopped, crashed,
restarting) was never made up: nothing kept the time of the last run across a
restart, so a ``night-mode`` due at 19:00 while the service was down for an
upgrade left the PBX in day mode until the next morning's switch. So each such
rule's last run (the time it was due) is kept in ``state_dir/schedule-runs.json``
with the schedule it was due under (cron text and zone), and at start
:func:`missed_while_stopped` says which rules missed a run meanwhile: those
whose rule still exists, still says ``missed: run-once``, under the very same
schedule, and whose last missed run is no older than :data:`MAKE_UP_WITHIN`,
are made up once; every other miss is only said.

The file is callrouter's alone, as ``ui-sessions.json`` is: written whole under
a temporary name (``O_EXCL | O_NOFOLLOW``, 0600 whatever the umask) and renamed
into place; read without following a link, only when it is a regular file of
callrouter's user that nobody else may read or write (another user who could
write it could make a rule run at a restart). Anything else at its name refuses
the start (:class:`router.errors.StateFileDenied`), the file left as it is, the
error naming the fix; a damaged file of ours (not this JSON, too large) is set
aside as ``schedule-runs.json.bad`` with a WARNING and the start goes on as
with no file (nothing is made up this once). ``callrouter state backup`` copies
it (see docs/operations.md, State and backups): restored, it makes up the run
due since the backup, which is the state a restored PBX should be in.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from apscheduler.triggers.base import BaseTrigger

from router import jsonsafe
from router.aside import move_aside
from router.clock_step import last_run_before
from router.errors import StateFileDenied
from router.private_file import read_private, user_name, write_private

__all__ = [
    "FILE_NAME",
    "MAKE_UP_WITHIN",
    "MAX_BYTES",
    "MAX_RULES",
    "KeptRuns",
    "LastRun",
    "MissedRun",
    "OnceRules",
    "ScheduleRuns",
    "missed_while_stopped",
]

log = logging.getLogger(__name__)

#: The file in ``state_dir``.
FILE_NAME: Final = "schedule-runs.json"
#: A run missed while callrouter was not running whose time is further back
#: than this is not made up: a week, so a rule that fires at least once a week
#: (a mode switch, a weekly report) is always made up, however long the
#: outage, and a monthly or yearly one missed long ago is not run for a
#: period long past. Said in docs/rules.md.
MAKE_UP_WITHIN: Final = timedelta(days=7)
#: Rules kept at most: more than any rule set has ``missed: run-once`` rules.
MAX_RULES: Final = 10_000
#: A file larger than this is not ours: a full one (MAX_RULES entries of a
#: 100-character name and a long cron line) is well under it.
MAX_BYTES: Final = 4 * 1024 * 1024
#: A kept run's ``last`` in this year or later is no run callrouter made: the
#: runs after it cannot be counted (a datetime past year 9999 overflows), and a
#: damaged file with one crashed the start (hrev50b).
_LAST_YEAR_BOUND: Final = 9000


@dataclass(frozen=True, slots=True)
class LastRun:
    """A rule's last run: when it was due (aware, UTC), under which schedule."""

    #: The rule's cron text, as written.
    schedule: str
    #: The zone it fired in (``[plugins.timefuncs] timezone``).
    zone: str
    last: datetime

    def same_schedule(self, schedule: str, zone: str) -> bool:
        return self.schedule == schedule and self.zone == zone


@dataclass(frozen=True, slots=True)
class MissedRun:
    """A run of ``name`` due while callrouter was not running: the last one
    missed (``due``), made up or not (``why_not`` says why not)."""

    name: str
    due: datetime
    #: The last run kept for it.
    since: LastRun
    why_not: str | None = None

    @property
    def made_up(self) -> bool:
        return self.why_not is None


def missed_while_stopped(
    kept: Mapping[str, LastRun],
    once: Mapping[str, tuple[str, str]],
    trigger_for: Callable[[str, str], BaseTrigger],
    now: datetime,
    *,
    within: timedelta = MAKE_UP_WITHIN,
) -> list[MissedRun]:
    """The runs missed between each kept last run and ``now``, by the last one
    due, in the order they were due (oldest first).

    ``once`` is the rules with ``missed: run-once`` now, by name, each with its
    (cron text, zone); ``trigger_for`` makes the trigger of a cron text in a
    zone (``ValueError`` if it cannot). A rule is made up only when it is in
    ``once`` with the schedule its run was kept under and its last missed run
    is at most ``within`` before ``now``; the runs are counted by the kept
    schedule, so a rule renamed, removed, set to ``missed: skip`` or given
    another schedule is said, never run."""
    missed: list[MissedRun] = []
    for name, run in kept.items():
        try:
            trigger = trigger_for(run.schedule, run.zone)
        except (ValueError, LookupError) as exc:
            log.warning(
                "schedule %s: the schedule kept for it in %s (%r in %s) is not one "
                "callrouter can count (%s): a run it missed is not made up",
                name,
                FILE_NAME,
                run.schedule,
                run.zone,
                exc,
            )
            continue
        first = trigger.get_next_fire_time(run.last, run.last + timedelta(microseconds=1))
        if first is None or first > now:
            continue
        due = last_run_before(trigger, first, now)
        missed.append(MissedRun(name, due, run, _why_not(name, run, once, now - due, within)))
    missed.sort(key=lambda m: (m.due, m.name))
    return missed


def _why_not(
    name: str,
    run: LastRun,
    once: Mapping[str, tuple[str, str]],
    late: timedelta,
    within: timedelta,
) -> str | None:
    now = once.get(name)
    if now is None:
        return (
            f"no schedule: rule named {name!r} with missed: run-once now (renamed, "
            "removed, or set to missed: skip)"
        )
    schedule, zone = now
    if not run.same_schedule(schedule, zone):
        return (
            f"its schedule changed since its last run ({run.schedule!r} in {run.zone}, "
            f"now {schedule!r} in {zone})"
        )
    if late > within:
        days = within.total_seconds() / 86400
        return f"more than {days:g} days ago, the most a run missed while stopped is made up"
    return None


class ScheduleRuns:
    """``state_dir/schedule-runs.json``: :meth:`load` once at start,
    :meth:`save` after each run it keeps (blocking: one small file)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def load(self) -> dict[str, LastRun]:
        """The kept last runs; none when there is no file, or it was damaged
        (set aside, said). ``StateFileDenied`` when what is at the name is no
        file of ours: a link, a folder or device, another user's file, a file
        others may read or write."""
        try:
            raw = self._read()
        except FileNotFoundError:
            return {}
        try:
            return _parse(raw)
        except (ValueError, UnicodeDecodeError, OverflowError) as exc:
            try:
                bad = move_aside(self.path, self.path.with_name(f"{FILE_NAME}.bad"))
            except OSError as moving:
                raise StateFileDenied(
                    errno.EIO,
                    f"{self.path}: the schedule rules' last runs are unreadable ({exc}) "
                    f"and cannot be set aside ({moving.strerror or moving}): move it away "
                    "(the runs missed while callrouter was stopped are then not made up, "
                    "this once) and start again",
                ) from None
            log.warning(
                "schedule rules' last runs %s unreadable (%s): set aside as %s; a run "
                "missed while callrouter was stopped is not made up this once",
                self.path,
                exc,
                bad,
            )
            return {}

    def save(self, runs: Mapping[str, LastRun]) -> None:
        """Write ``runs`` whole: a temporary file renamed over the last one.
        ``OSError`` (a full disk) leaves the last one as it was."""
        data = {
            "version": 1,
            "rules": {
                name: {
                    "schedule": run.schedule,
                    "zone": run.zone,
                    "last": run.last.astimezone(UTC).isoformat(),
                }
                for name, run in sorted(runs.items())[:MAX_RULES]
            },
        }
        body = (json.dumps(data, sort_keys=True, indent=1) + "\n").encode("utf-8")
        write_private(self.path, body)

    def _read(self) -> bytes:
        # At most one byte past the bound: _parse says it is too large.
        return read_private(
            self.path,
            MAX_BYTES,
            self._refused,
            "another user who may write it could make a schedule: rule run at the next start",
        )

    def _refused(self, what: str) -> StateFileDenied:
        user = user_name()
        return StateFileDenied(
            errno.EPERM,
            f"{self.path}: the schedule rules' last runs file {what}; it is left as it "
            f"is. Remove it (a run missed while callrouter was stopped is then not made "
            f"up, this once), or, if it is the one callrouter made, give it back to "
            f"the user callrouter runs as (chown {user} {self.path}; chmod 600 "
            f"{self.path}), and start again",
        )


def _parse(raw: bytes) -> dict[str, LastRun]:
    if len(raw) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    data = jsonsafe.loads(raw.decode("utf-8"))
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError("not a version 1 schedule runs file")
    table = data.get("rules")
    if not isinstance(table, dict):
        raise ValueError("'rules' is not a table")
    if len(table) > MAX_RULES:
        raise ValueError(f"more than {MAX_RULES} rules")
    runs: dict[str, LastRun] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ValueError(f"rule {name!r}: not a table")
        schedule, zone, last = entry.get("schedule"), entry.get("zone"), entry.get("last")
        if not (isinstance(schedule, str) and isinstance(zone, str) and isinstance(last, str)):
            raise ValueError(f"rule {name!r}: 'schedule', 'zone' and 'last' must be text")
        if len(name) > 200 or len(schedule) > 1000 or len(zone) > 100:
            raise ValueError(f"rule {name[:40]!r}: longer than a rule's name, cron or zone")
        when = datetime.fromisoformat(last)
        if when.tzinfo is None:
            raise ValueError(f"rule {name!r}: 'last' has no offset")
        if when.year >= _LAST_YEAR_BOUND:
            raise ValueError(f"rule {name!r}: 'last' is in the year {when.year}")
        runs[name] = LastRun(schedule, zone, when.astimezone(UTC))
    return runs


#: The ``missed: run-once`` rules now, by name: (cron text, zone name).
OnceRules = Callable[[], Mapping[str, tuple[str, str]]]


class KeptRuns:
    """The last runs in memory and their file: read at start (:meth:`load`),
    looked at once for the runs missed meanwhile (:meth:`missed`), kept in step
    with the rules (:meth:`sync`, at start and after each reload) and with
    each run (:meth:`record`), written in a thread, one write at a time, the
    newest state last."""

    def __init__(self, state_dir: Path, once: OnceRules) -> None:
        self.file = ScheduleRuns(state_dir)
        self.runs: dict[str, LastRun] = {}
        self._once = once
        self._dirty = False
        self._writer: asyncio.Task[None] | None = None
        #: Why the last write failed, until one succeeds: said once, not per run.
        self._failing: str | None = None

    def load(self) -> None:
        """Read the file (blocking); ``StateFileDenied`` refuses the start."""
        self.runs = self.file.load()

    def missed(
        self, now: datetime, trigger_for: Callable[[str, str], BaseTrigger]
    ) -> list[MissedRun]:
        """The runs missed while callrouter was not running (see
        :func:`missed_while_stopped`). A rule's run too old to make up counts as
        run: it is not said again at the next start."""
        once = self._once()
        missed = missed_while_stopped(self.runs, once, trigger_for, now)
        for run in missed:
            spec = once.get(run.name)
            if not run.made_up and spec is not None and run.since.same_schedule(*spec):
                self.runs[run.name] = LastRun(*spec, run.due)
        return missed

    def sync(self, now: datetime) -> None:
        """One entry for each ``missed: run-once`` rule, none for any other: a
        rule new, or given another schedule, counts from ``now``; so does one
        whose last run is after ``now`` (this host's clock went back)."""
        runs: dict[str, LastRun] = {}
        for name, (schedule, zone) in self._once().items():
            run = self.runs.get(name)
            if run is None or not run.same_schedule(schedule, zone) or run.last > now:
                run = LastRun(schedule, zone, now)
            runs[name] = run
        if runs != self.runs:
            self.runs = runs
            self._save()

    def record(self, name: str, due: datetime) -> None:
        """``name``'s run due at ``due`` has run (on time, or made up)."""
        spec = self._once().get(name)
        if spec is None:
            return
        run = self.runs.get(name)
        last = due if run is None or not run.same_schedule(*spec) else max(run.last, due)
        self.runs[name] = LastRun(*spec, last.astimezone(UTC))
        self._save()

    async def close(self) -> None:
        """Wait for the write under way (the last state), bounded."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait((writer,), timeout=5.0)

    def _save(self) -> None:
        self._dirty = True
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="callrouter schedule runs"
            )

    async def _write(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await asyncio.to_thread(self.file.save, dict(self.runs))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if reason != self._failing:
                    log.warning(
                        "cannot write %s: %s; a run missed while callrouter is stopped "
                        "is counted from the last run written (tried again at the next run)",
                        self.file.path,
                        reason,
                    )
                self._failing = reason
                return
            if self._failing is not None:
                log.info("%s written again", self.file.path)
                self._failing = None
