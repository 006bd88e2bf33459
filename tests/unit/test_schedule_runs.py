"""The last runs of ``missed: run-once`` rules kept in state_dir, and the runs
missed while callrouter was not running (router/schedule_runs.py), on a fake
clock: every ``now`` here is given, none read."""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.base import BaseTrigger

from router.builtin.timefuncs import time_zone
from router.errors import StateFileDenied
from router.rules.cron import cron_trigger
from router.schedule_runs import (
    FILE_NAME,
    MAKE_UP_WITHIN,
    MAX_BYTES,
    KeptRuns,
    LastRun,
    ScheduleRuns,
    missed_while_stopped,
)
from router.statebackup import Copied, backup_state

MSK = "Europe/Moscow"
NIGHT = "0 19 * * *"
DAY = "0 9 * * *"


def _trigger(cron: str, zone: str) -> BaseTrigger:
    return cron_trigger(cron, time_zone(zone))


def _msk(text: str) -> datetime:
    """A moment written in Moscow time (UTC+3), as UTC."""
    return datetime.fromisoformat(text + "+03:00").astimezone(UTC)


def test_a_run_due_while_stopped_is_made_up_by_its_last_one() -> None:
    """Stopped from Monday 18:00 to Thursday 10:00 (Moscow): night-mode missed
    three runs; the one made up is the last, Wednesday 19:00."""
    kept = {"night-mode": LastRun(NIGHT, MSK, _msk("2026-12-06T19:00:00"))}
    (missed,) = missed_while_stopped(
        kept, {"night-mode": (NIGHT, MSK)}, _trigger, _msk("2026-12-10T10:00:00")
    )
    assert missed.name == "night-mode"
    assert missed.made_up
    assert missed.due == _msk("2026-12-09T19:00:00")


def test_nothing_is_missed_before_the_next_run_is_due() -> None:
    kept = {"night-mode": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))}
    now = _msk("2026-12-09T18:59:59")
    assert missed_while_stopped(kept, {"night-mode": (NIGHT, MSK)}, _trigger, now) == []


def test_runs_missed_are_in_the_order_their_last_runs_were_due() -> None:
    """day-mode's last missed (Thursday 09:00) before night-mode's (Wednesday
    19:00 is earlier: it comes first), whatever the order kept."""
    kept = {
        "day-mode": LastRun(DAY, MSK, _msk("2026-12-07T09:00:00")),
        "night-mode": LastRun(NIGHT, MSK, _msk("2026-12-07T19:00:00")),
    }
    once = {"day-mode": (DAY, MSK), "night-mode": (NIGHT, MSK)}
    missed = missed_while_stopped(kept, once, _trigger, _msk("2026-12-10T10:00:00"))
    assert [(m.name, m.due) for m in missed] == [
        ("night-mode", _msk("2026-12-09T19:00:00")),
        ("day-mode", _msk("2026-12-10T09:00:00")),
    ]
    assert all(m.made_up for m in missed)


def test_a_changed_schedule_renamed_rule_or_skip_rule_makes_no_run_up() -> None:
    kept = {
        "night-mode": LastRun(NIGHT, MSK, _msk("2026-12-07T19:00:00")),
        "late-mode": LastRun("0 22 * * *", MSK, _msk("2026-12-07T22:00:00")),
        "report": LastRun("0 20 * * *", MSK, _msk("2026-12-07T20:00:00")),
        "moved": LastRun(DAY, MSK, _msk("2026-12-07T09:00:00")),
    }
    once = {
        "night-mode": ("0 20 * * *", MSK),  # another time
        "late-mode-renamed": ("0 22 * * *", MSK),
        "moved": (DAY, "Asia/Vladivostok"),  # another zone
        # report: missed: skip now, so not among the run-once rules
    }
    missed = {
        m.name: m for m in missed_while_stopped(kept, once, _trigger, _msk("2026-12-09T23:00:00"))
    }
    assert set(missed) == {"night-mode", "late-mode", "report", "moved"}
    assert not any(m.made_up for m in missed.values())
    assert missed["night-mode"].why_not == (
        "its schedule changed since its last run ('0 19 * * *' in Europe/Moscow, "
        "now '0 20 * * *' in Europe/Moscow)"
    )
    assert "now '0 9 * * *' in Asia/Vladivostok" in (missed["moved"].why_not or "")
    for name in ("late-mode", "report"):
        assert f"no schedule: rule named {name!r} with missed: run-once now (renamed" in (
            missed[name].why_not or ""
        )


def test_a_run_missed_longer_ago_than_the_bound_is_not_made_up() -> None:
    """A monthly report due on the 1st, callrouter stopped from the 30th to the
    9th of the next month: its run 8 days ago is past the week's bound; a
    daily rule stopped as long still makes up yesterday's run."""
    monthly = "0 8 1 * *"
    kept = {
        "monthly": LastRun(monthly, MSK, _msk("2026-11-01T08:00:00")),
        "night-mode": LastRun(NIGHT, MSK, _msk("2026-11-29T19:00:00")),
    }
    once = {"monthly": (monthly, MSK), "night-mode": (NIGHT, MSK)}
    now = _msk("2026-12-09T08:00:01")
    assert now - _msk("2026-12-01T08:00:00") > MAKE_UP_WITHIN
    missed = {m.name: m for m in missed_while_stopped(kept, once, _trigger, now)}
    assert missed["monthly"].due == _msk("2026-12-01T08:00:00")
    assert missed["monthly"].why_not == (
        "more than 7 days ago, the most a run missed while stopped is made up"
    )
    assert missed["night-mode"].made_up
    # Exactly at the bound: still made up.
    edge = missed_while_stopped(kept, once, _trigger, _msk("2026-12-01T08:00:00") + MAKE_UP_WITHIN)
    assert next(m for m in edge if m.name == "monthly").made_up


def test_a_kept_schedule_callrouter_cannot_count_is_said_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kept = {"night-mode": LastRun(NIGHT, "Mars/Olympus", _msk("2026-12-07T19:00:00"))}
    missed = missed_while_stopped(
        kept, {"night-mode": (NIGHT, MSK)}, _trigger, _msk("2026-12-09T23:00:00")
    )
    assert missed == []
    assert "schedule night-mode: the schedule kept for it in schedule-runs.json" in caplog.text


# -- the file -------------------------------------------------------------------------


def test_the_file_is_written_whole_0600_and_read_back(tmp_path: Path) -> None:
    os.umask(0o022)
    store = ScheduleRuns(tmp_path)
    runs = {"night-mode": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))}
    store.save(runs)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert ScheduleRuns(tmp_path).load() == runs
    assert json.loads(store.path.read_text())["rules"]["night-mode"] == {
        "schedule": NIGHT,
        "zone": MSK,
        "last": "2026-12-08T16:00:00+00:00",
    }
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary left


def test_no_file_is_no_run_kept(tmp_path: Path) -> None:
    assert ScheduleRuns(tmp_path).load() == {}


def test_a_link_at_its_name_refuses_the_start_naming_the_fix(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    ScheduleRuns(tmp_path).save({"a": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))})
    (tmp_path / FILE_NAME).rename(target)
    (tmp_path / FILE_NAME).symlink_to(target)
    with pytest.raises(StateFileDenied) as refused:
        ScheduleRuns(tmp_path).load()
    said = str(refused.value)
    assert f"{tmp_path / FILE_NAME}: the schedule rules' last runs file is a symbolic link" in said
    assert "Remove it" in said
    assert (tmp_path / FILE_NAME).is_symlink()  # left as it is


def test_a_file_others_may_read_refuses_the_start(tmp_path: Path) -> None:
    store = ScheduleRuns(tmp_path)
    store.save({"a": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))})
    store.path.chmod(0o644)
    with pytest.raises(StateFileDenied, match=r"has mode 0644: .*chmod 600 ") as refused:
        store.load()
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert f"(chown {user} {store.path}; chmod 600 {store.path})" in str(refused.value)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o644  # left as it is


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_file_refuses_the_start(tmp_path: Path) -> None:
    store = ScheduleRuns(tmp_path)
    store.save({"a": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))})
    os.chown(store.path, 65534, 65534)
    with pytest.raises(StateFileDenied, match=r"belongs to uid 65534, not to callrouter's user"):
        store.load()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "Expecting property name"),
        (b'{"version": 2, "rules": {}}', "not a version 1 schedule runs file"),
        (b'{"version": 1, "rules": {"a": {"schedule": 1}}}', "must be text"),
        (
            b'{"version": 1, "rules": {"a": {"schedule": "0 9 * * *", "zone": "UTC", '
            b'"last": "2026-12-08T09:00:00"}}}',
            "'last' has no offset",
        ),
        (
            # Read as it was, the runs after it overflowed a datetime: the
            # start crashed (OverflowError) instead of setting it aside (hrev50b).
            b'{"version": 1, "rules": {"a": {"schedule": "* * * * *", "zone": "UTC", '
            b'"last": "9999-12-31T23:59:59.999999+00:00"}}}',
            "'last' is in the year 9999",
        ),
        (b" " * (MAX_BYTES + 1), f"larger than {MAX_BYTES} bytes"),
    ],
)
def test_a_damaged_file_is_set_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, body: bytes, why: str
) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(body)
    path.chmod(0o600)
    assert ScheduleRuns(tmp_path).load() == {}
    assert not path.exists()
    assert (tmp_path / f"{FILE_NAME}.bad").read_bytes() == body
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert why in record.getMessage()
    assert "set aside as" in record.getMessage()


# -- kept in step with runs and rules ---------------------------------------------------


async def _settled(kept: KeptRuns) -> None:
    await kept.close()


async def test_a_run_made_up_is_kept_and_not_made_up_again_at_the_next_start(
    tmp_path: Path,
) -> None:
    """Two starts on a fake clock: the first makes night-mode's run up and keeps
    it as the last run; the second, an hour later, finds nothing missed."""
    once = {"night-mode": (NIGHT, MSK)}
    ScheduleRuns(tmp_path).save({"night-mode": LastRun(NIGHT, MSK, _msk("2026-12-07T19:00:00"))})
    first = KeptRuns(tmp_path, lambda: once)
    first.load()
    start = _msk("2026-12-08T20:00:00")
    (missed,) = first.missed(start, _trigger)
    assert missed.made_up
    first.sync(start)
    first.record("night-mode", missed.due)
    await _settled(first)
    second = KeptRuns(tmp_path, lambda: once)
    second.load()
    assert second.runs["night-mode"].last == _msk("2026-12-08T19:00:00")
    assert second.missed(start + timedelta(hours=1), _trigger) == []


async def test_a_run_not_made_up_is_kept_as_one_when_only_the_start_was_too_late(
    tmp_path: Path,
) -> None:
    """A run too old to make up is counted as run: not said at every start."""
    monthly = "0 8 1 * *"
    once = {"monthly": (monthly, MSK)}
    kept = KeptRuns(tmp_path, lambda: once)
    kept.runs = {"monthly": LastRun(monthly, MSK, _msk("2026-11-01T08:00:00"))}
    now = _msk("2026-12-20T08:00:00")
    (missed,) = kept.missed(now, _trigger)
    assert not missed.made_up
    assert kept.runs["monthly"].last == _msk("2026-12-01T08:00:00")
    assert kept.missed(now, _trigger) == []


async def test_sync_counts_a_new_or_changed_rule_from_now_and_forgets_gone_ones(
    tmp_path: Path,
) -> None:
    once = {"night-mode": ("0 20 * * *", MSK), "day-mode": (DAY, MSK)}
    kept = KeptRuns(tmp_path, lambda: once)
    kept.runs = {
        "night-mode": LastRun(NIGHT, MSK, _msk("2026-12-07T19:00:00")),
        "day-mode": LastRun(DAY, MSK, _msk("2026-12-08T09:00:00")),
        "gone": LastRun(DAY, MSK, _msk("2026-12-08T09:00:00")),
    }
    now = _msk("2026-12-08T12:00:00")
    kept.sync(now)
    await _settled(kept)
    assert ScheduleRuns(tmp_path).load() == {
        "night-mode": LastRun("0 20 * * *", MSK, now),
        "day-mode": LastRun(DAY, MSK, _msk("2026-12-08T09:00:00")),
    }


async def test_a_last_run_after_now_counts_from_now(tmp_path: Path) -> None:
    """This host's clock went back (or a file from a clock ahead): a last run in
    the future would hide every run until then."""
    once = {"night-mode": (NIGHT, MSK)}
    kept = KeptRuns(tmp_path, lambda: once)
    kept.runs = {"night-mode": LastRun(NIGHT, MSK, _msk("2027-06-01T19:00:00"))}
    now = _msk("2026-12-08T12:00:00")
    kept.sync(now)
    assert kept.runs["night-mode"].last == now
    await _settled(kept)


async def test_a_run_recorded_never_moves_the_last_run_back(tmp_path: Path) -> None:
    """A make-up of yesterday's run that ends after today's on-time run."""
    once = {"night-mode": (NIGHT, MSK)}
    kept = KeptRuns(tmp_path, lambda: once)
    kept.record("night-mode", _msk("2026-12-08T19:00:00"))
    kept.record("night-mode", _msk("2026-12-07T19:00:00"))
    kept.record("report", _msk("2026-12-08T19:00:00"))  # not run-once: not kept
    await _settled(kept)
    assert ScheduleRuns(tmp_path).load() == {
        "night-mode": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))
    }


async def test_a_write_that_fails_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    once = {"night-mode": (NIGHT, MSK)}
    kept = KeptRuns(tmp_path / "gone", lambda: once)  # no such folder: ENOENT
    for day in (7, 8, 9):
        kept.record("night-mode", _msk(f"2026-12-0{day}T19:00:00"))
        await _settled(kept)
    said = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(said) == 1, said
    (tmp_path / "gone").mkdir(mode=0o700)
    kept.record("night-mode", _msk("2026-12-10T19:00:00"))
    await _settled(kept)
    assert "written again" in caplog.text
    assert ScheduleRuns(tmp_path / "gone").load()["night-mode"].last == _msk("2026-12-10T19:00:00")


def test_a_state_backup_carries_the_file(tmp_path: Path) -> None:
    """Knowingly backed up (docs/operations.md, State and backups): restored, a
    run due since the backup is made up once, the state the PBX should be in;
    without it, nothing missed before the restore's start would be."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    ScheduleRuns(state).save({"night-mode": LastRun(NIGHT, MSK, _msk("2026-12-08T19:00:00"))})
    copied = [
        item.name for item in backup_state(state, tmp_path / "backup") if isinstance(item, Copied)
    ]
    assert copied == [FILE_NAME]
    assert ScheduleRuns(tmp_path / "backup").load() == ScheduleRuns(state).load()
