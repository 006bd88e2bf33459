"""Issue 10 items 11, 13 and 16 (1C): the history database never holds up routing,
is private to its owner, and is pruned while the router runs."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from on_the_loop import statements_on_this_thread

from callrouter_onec.history import FILENAME, CallRecord, HistoryQueue, HistorySender, build_event
from callrouter_onec.models import EventAck


def event(n: int) -> dict[str, Any]:
    return build_event(
        "ringing",
        CallRecord(
            f"1764590400.{n}",
            "in",
            "79161234567",
            "74951234567",
            started_at=datetime(2026, 12, 1, 12, 0, n),
        ),
    )


class Sink:
    """1C that accepts everything, recording what it got."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def __call__(self, payload: Mapping[str, Any]) -> EventAck:
        self.received.append(str(payload["call_id"]))
        return EventAck(f"id-{len(self.received)}", False)


async def test_a_locked_database_never_stalls_the_loop_and_loses_nothing(tmp_path: Path) -> None:
    queue = HistoryQueue(tmp_path)
    sink = Sink()
    sender = HistorySender(queue, sink, base_delay=0.01, max_delay=0.05, idle_poll=0.05)
    sender.start()
    # A backup tool (another connection) takes the write lock and keeps it.
    other = sqlite3.connect(queue.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    # None of SQLite's statements, where it waits for the lock, on the loop's
    # thread (on_the_loop.py: read, not timed; issue 16).
    on_the_loop, off_the_loop = statements_on_this_thread(queue)
    try:
        for n in range(5):  # what the decision hook does for five calls
            assert sender.submit(event(n))
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the lock is held well past SQLite's busy timeout
        assert sink.received == []
        other.execute("ROLLBACK")  # the backup is done
        assert await sender.drain(10.0)
        assert on_the_loop == []
        assert any(s.startswith("INSERT") for s in off_the_loop), off_the_loop
    finally:
        other.close()
        await sender.stop()
        queue.close()
    assert sorted(sink.received) == [f"1764590400.{n}" for n in range(5)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    queue = HistoryQueue(state / FILENAME)  # the directory does not exist yet
    try:
        queue.enqueue(event(1))
        assert mode(state) == 0o700
        files = sorted(state.iterdir())
        assert {f.name for f in files} >= {
            "onec-history.sqlite3",
            "onec-history.sqlite3-wal",
            "onec-history.sqlite3-shm",
        }
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        queue.close()


def test_an_old_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "onec-history.sqlite3"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    HistoryQueue(path).close()
    assert mode(path) == 0o600


async def test_rows_are_pruned_while_running(tmp_path: Path) -> None:
    queue = HistoryQueue(tmp_path, max_rows=3)
    sender = HistorySender(queue, Sink(), base_delay=0.01, idle_poll=0.02, prune_interval=0)
    sender.start()
    try:
        for n in range(10):
            sender.submit(event(n))
        assert await sender.drain(10.0)
        for _ in range(200):  # the next turn of the sender's loop prunes
            if queue.counts() == {"sent": 3}:
                break
            await asyncio.sleep(0.02)
        assert queue.counts() == {"sent": 3}
    finally:
        await sender.stop()
        queue.close()


def _count_elsewhere(path: Path, table: str) -> int:
    """Rows of ``table`` as another process sees them (opened, read, closed)."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        f"print(db.execute('SELECT COUNT(*) FROM {table}').fetchone()[0]); db.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_second_queue_in_the_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Issue 16: each HistoryQueue opened and closed the file before SQLite did, which
    dropped the POSIX locks of the process's connections already open; the next other
    process to close the file (a callrouter command) took itself for the last and
    deleted the WAL the first queue went on writing into, unseen by anyone else."""
    first = HistoryQueue(tmp_path)
    second = HistoryQueue(tmp_path)
    try:
        assert first.enqueue(event(1))
        assert _count_elsewhere(first.path, "events") == 1
        assert Path(f"{first.path}-wal").exists()
        assert first.enqueue(event(2))
        assert _count_elsewhere(first.path, "events") == 2
    finally:
        second.close()
        first.close()


def test_an_existing_history_file_is_made_private(tmp_path: Path) -> None:
    HistoryQueue(tmp_path).close()
    path = tmp_path / FILENAME
    path.chmod(0o644)
    HistoryQueue(tmp_path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
