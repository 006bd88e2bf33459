"""Call history into 1C, off the routing path and never lost silently.

Events go to a SQLite file first and to 1C afterwards, so neither a 1C outage
nor a callrouter restart loses them, and a call never waits for 1C. The queue
is idempotent by (call_id, event) on our side too: a repeated enqueue of the
same event is ignored even after it was delivered. The sender keeps order
(1C sees ``ringing`` before ``hangup``), backs off exponentially while 1C is
unavailable, drops an event with a log line once it has waited ``max_age``
(about 5 minutes, per the contract) or when 1C rejects it as invalid.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit is a write to
the WAL without fsync, well under a millisecond, so it runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from callrouter_onec.errors import OneCBadRequest, OneCUnavailable
from callrouter_onec.models import EventAck

__all__ = [
    "EVENT_KINDS",
    "CallRecord",
    "HistoryQueue",
    "HistorySender",
    "QueuedEvent",
    "build_event",
]

log = logging.getLogger(__name__)

EventKind = Literal["ringing", "answered", "hangup", "missed", "transferred"]
EVENT_KINDS: tuple[EventKind, ...] = ("ringing", "answered", "hangup", "missed", "transferred")
_FINAL = frozenset({"hangup", "missed"})
FILENAME = "onec-history.sqlite3"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What callrouter knows about one call; times aware (any zone) or naive in 1C's zone."""

    call_id: str
    direction: Literal["in", "out", "internal"]
    from_number: str
    to_number: str
    started_at: datetime
    extension: str | None = None
    manager_id: str | None = None
    client_id: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    status: Literal["ANSWER", "NOANSWER", "BUSY", "CANCEL", "FAILED"] | None = None
    recording_url: str | None = None


def build_event(kind: EventKind, call: CallRecord, *, ts: float | None = None,
                tz: tzinfo | None = None) -> dict[str, Any]:
    """The contract's event body for ``kind`` of ``call``.

    1C dates have no zone, so times are written in ``tz`` (1C's server zone;
    ``None`` means this machine's), while ``ts`` is Unix seconds UTC of the
    moment the event describes (``ts`` overrides it). ``status`` is null before
    the call ends, as the contract says; every key is always present so 1C's
    reader can rely on the shape.
    """
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event {kind!r}; known: {', '.join(EVENT_KINDS)}")
    final = kind in _FINAL
    moment = {"ringing": call.started_at, "answered": call.answered_at,
              "hangup": call.ended_at, "missed": call.ended_at}.get(kind)
    if ts is None:
        ts = _unix(moment, tz) if moment is not None else time.time()
    status = None
    if final:
        status = call.status or ("ANSWER" if call.answered_at else "NOANSWER")
    duration = billsec = None
    if final and call.ended_at is not None:
        duration = _seconds(call.started_at, call.ended_at, tz)
        billsec = _seconds(call.answered_at, call.ended_at, tz) if call.answered_at else 0
    return {
        "event": kind,
        "call_id": call.call_id,
        "direction": call.direction,
        "from": call.from_number,
        "to": call.to_number,
        "extension": call.extension,
        "manager_id": call.manager_id,
        "client_id": call.client_id,
        "status": status,
        "started_at": _local(call.started_at, tz),
        "answered_at": _local(call.answered_at, tz),
        "ended_at": _local(call.ended_at, tz) if final else None,
        "duration": duration,
        "billsec": billsec,
        "ts": int(ts),
        "recording_url": call.recording_url,
    }


def _aware(moment: datetime, tz: tzinfo | None) -> datetime:
    if moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()


def _local(moment: datetime | None, tz: tzinfo | None) -> str | None:
    if moment is None:
        return None
    local = _aware(moment, tz).astimezone(tz) if moment.tzinfo is not None else moment
    return local.replace(tzinfo=None).isoformat(timespec="seconds")


def _unix(moment: datetime, tz: tzinfo | None) -> float:
    return _aware(moment, tz).timestamp()


def _seconds(start: datetime, end: datetime, tz: tzinfo | None) -> int:
    return max(0, round(_unix(end, tz) - _unix(start, tz)))


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    id: int
    call_id: str
    event: str
    payload: dict[str, Any]
    created: float
    attempts: int


class HistoryQueue:
    """The durable queue: one SQLite file, one row per (call_id, event).

    Delivered and dropped rows are kept for ``retention`` seconds so that a late
    duplicate is still recognised, then pruned.
    """

    def __init__(self, path: str | Path, *, retention: float = 7 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        target = Path(path)
        if target.is_dir():
            target = target / FILENAME
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                call_id TEXT NOT NULL,
                event TEXT NOT NULL,
                payload TEXT NOT NULL,
                created REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL DEFAULT 'pending',
                updated REAL,
                detail TEXT,
                UNIQUE (call_id, event)
            );
            CREATE INDEX IF NOT EXISTS events_state ON events (state, id);
        """)
        self.prune()

    def __enter__(self) -> HistoryQueue:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, payload: Mapping[str, Any]) -> bool:
        """Store an event body; ``False`` if this (call_id, event) was already queued."""
        call_id, event = payload.get("call_id"), payload.get("event")
        if not isinstance(call_id, str) or not isinstance(event, str):
            raise ValueError("an event needs string 'call_id' and 'event'")
        body = json.dumps(payload, ensure_ascii=False)
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (call_id, event, payload, created) "
                "VALUES (?, ?, ?, ?)", (call_id, event, body, self._clock()))
            return cursor.rowcount == 1

    def pending(self, limit: int = 100) -> list[QueuedEvent]:
        """Events not yet delivered, oldest first (so 1C sees a call's events in order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, call_id, event, payload, created, attempts FROM events "
                "WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [QueuedEvent(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def pending_count(self) -> int:
        return self.counts().get("pending", 0)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM events GROUP BY state")
            return dict(rows)

    def mark_sent(self, row_id: int, detail: str | None = None) -> None:
        self._set(row_id, "sent", detail)

    def mark_dropped(self, row_id: int, detail: str) -> None:
        self._set(row_id, "dropped", detail)

    def mark_failed(self, row_id: int, detail: str) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET attempts = attempts + 1, updated = ?, detail = ? "
                             "WHERE id = ?", (self._clock(), detail, row_id))

    def expired(self, max_age: float) -> list[QueuedEvent]:
        """Pending events enqueued more than ``max_age`` seconds ago."""
        cutoff = self._clock() - max_age
        return [e for e in self.pending(limit=-1) if e.created <= cutoff]

    def frequent_callers(self, limit: int = 100, since: float | None = None) -> list[str]:
        """The numbers that rang most often (``ringing`` events), most frequent first.

        What the warm-up job refreshes before the working day: the history we
        already keep for 1C doubles as the list of callers worth caching. Only
        the retained rows count (``retention``, a week by default).
        """
        cutoff = self._clock() - self.retention if since is None else since
        with self._lock:
            rows = self._db.execute(
                "SELECT json_extract(payload, '$.from') AS number, count(*) AS calls "
                "FROM events WHERE event = 'ringing' AND created >= ? AND number IS NOT NULL "
                "AND number != '' GROUP BY number ORDER BY calls DESC, max(id) DESC LIMIT ?",
                (cutoff, limit)).fetchall()
        return [str(row[0]) for row in rows]

    def prune(self) -> int:
        """Forget delivered and dropped rows older than ``retention``."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM events WHERE state != 'pending' AND updated < ?",
                                      (self._clock() - self.retention,))
            return cursor.rowcount

    def _set(self, row_id: int, state: str, detail: str | None) -> None:
        with self._lock:
            self._db.execute("UPDATE events SET state = ?, updated = ?, detail = ? WHERE id = ?",
                             (state, self._clock(), detail, row_id))


Poster = Callable[[Mapping[str, Any]], Awaitable[EventAck]]


class HistorySender:
    """Delivers the queue to 1C in the background (``post`` is ``OneCClient.post_event``).

    Pending rows from an earlier run are sent as soon as :meth:`start` is called.
    """

    def __init__(self, queue: HistoryQueue, post: Poster, *, max_age: float = 300.0,
                 base_delay: float = 1.0, max_delay: float = 60.0, batch: int = 100,
                 idle_poll: float = 5.0) -> None:
        self.queue = queue
        self.max_age = max_age
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = batch
        self.idle_poll = idle_poll
        self._post = post
        self._wake = asyncio.Event()
        self._retry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def submit(self, payload: Mapping[str, Any]) -> bool:
        """Queue an event and nudge the sender; ``False`` for a duplicate."""
        added = self.queue.enqueue(payload)
        if added:
            self._wake.set()
        return added

    def retry_now(self) -> None:
        """Cut a backoff short: something (a successful ping) says 1C is back.

        New events only wake an idle sender; they do not end a backoff, or a
        busy PBX would hammer a dead 1C with one retry per call.
        """
        self._retry.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="onec-history")

    async def stop(self) -> None:
        """Stop sending; undelivered rows stay on disk for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain(self, within: float) -> bool:
        """Wait until nothing is pending (tests, shutdown); ``False`` if ``within`` s pass first."""
        end = time.monotonic() + within
        while self.queue.pending_count():
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            rows = self.queue.pending(self.batch)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll)
                continue
            if await self.send_batch(rows):
                self.failures = 0
                continue
            self.failures += 1
            self._retry.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry.wait(), min(
                    self.base_delay * 2 ** (self.failures - 1), self.max_delay))

    async def send_batch(self, rows: list[QueuedEvent]) -> bool:
        """Send in order; stop at the first "1C unavailable" and report ``False``."""
        for row in rows:
            try:
                ack = await self._post(row.payload)
            except OneCBadRequest as exc:
                log.warning("1C history: dropped %s of call %s: 1C refused it (%s)",
                            row.event, row.call_id, exc)
                self.queue.mark_dropped(row.id, str(exc))
            except OneCUnavailable as exc:
                self.queue.mark_failed(row.id, str(exc))
                for old in self.queue.expired(self.max_age):
                    log.warning("1C history: dropped %s of call %s after %d attempts over "
                                "%g s: %s", old.event, old.call_id, old.attempts + 1,
                                self.max_age, exc)
                    self.queue.mark_dropped(old.id, str(exc))
                return False
            else:
                self.queue.mark_sent(row.id, ack.id)
        return True
