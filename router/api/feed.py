"""The live event feed 1C and browsers read: a cursor, a bounded ring, a file.

1C's ``HTTPСоединение`` cannot hold a websocket, so the feed is read by
long-polling with a cursor (``GET /api/v1/events``) or as Server-Sent Events;
either way a client that comes back with the last cursor it saw gets every
event after it exactly once. That holds across a router restart too: events
are written to a SQLite file in ``state_dir`` and read back at start.

Cursors are microseconds of the router's wall clock at publication, forced
to grow by at least one: monotonic within a run and across restarts (a crash
that loses the last unwritten events never hands their cursors to new events,
as a counter reloaded from the file would), and a cursor says roughly when
its event happened. Clients treat them as opaque integers.

Memory and disk are bounded by ``retention`` seconds and ``max_events``
events. A client whose cursor is older than what is kept gets the events
still kept with ``gap: true``: it lost some, and should refresh its view
(the calls list) instead of trusting the feed for that stretch.

SQLite never runs on the event loop (as the 1C plugin's history queue): a
publication is handed to one worker thread that writes in batches, so a slow
disk or a backup tool's lock delays the file, never a waiting client.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FILENAME",
    "MAX_EVENTS",
    "RETENTION",
    "EventFeed",
    "FeedEvent",
    "FeedStore",
    "Page",
    "Visible",
]

log = logging.getLogger(__name__)

FILENAME = "api-events.sqlite3"
#: Seconds an event stays readable (``[api] events_retention``).
RETENTION = 3600.0
#: Events kept at most, in memory and in the file (``[api] events_max``).
MAX_EVENTS = 10_000
#: Seconds SQLite waits for another connection's lock before the batch is retried.
_BUSY_TIMEOUT = 0.25
#: Publications between two prunings of the file.
_PRUNE_EVERY = 500

#: Which extensions a reader may see; ``None`` is an event of no extension.
Visible = Callable[[str | None], bool]


def _everything(extension: str | None) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event as clients get it (``to_dict`` is the JSON shape)."""

    cursor: int
    kind: str
    extension: str | None
    call_id: str | None
    #: Asterisk's timestamp of the event behind it (Unix seconds), else the router's.
    ts: float
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor,
            "kind": self.kind,
            "extension": self.extension,
            "call_id": self.call_id,
            "ts": self.ts,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class Page:
    """What one read returns: events after the cursor, and where to go on from."""

    events: tuple[FeedEvent, ...]
    #: Pass this back as the next ``cursor``: past every event this read looked
    #: at, those the reader may not see included, so they are not scanned again.
    cursor: int
    #: Events after the reader's cursor were dropped (retention) before it came back.
    gap: bool = False


class FeedStore:
    """The feed's SQLite file, written on one worker thread.

    ``append`` only queues; a single flush job on the thread writes whatever
    queued meanwhile in one transaction. ``load`` runs once, before serving.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The file holds callers' numbers and 1C's cards: 0600 before SQLite
        # opens it (its -wal and -shm files take the database file's mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (cursor INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
            " extension TEXT, call_id TEXT, ts REAL NOT NULL, data TEXT NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")
        self._db.commit()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-feed")
        self._lock = threading.Lock()
        self._pending: list[FeedEvent] = []
        self._prune: tuple[int, int] | None = None
        self._flushing = False
        self._closed = False

    def load(self, *, oldest: int, limit: int) -> tuple[list[FeedEvent], int]:
        """The newest ``limit`` events from cursor ``oldest`` on, and the highest
        cursor ever dropped (0: none), which tells a returning client of a gap."""
        rows = self._db.execute(
            "SELECT cursor, kind, extension, call_id, ts, data FROM events"
            " WHERE cursor >= ? ORDER BY cursor DESC LIMIT ?",
            (oldest, limit),
        ).fetchall()
        events = [_event(row) for row in reversed(rows)]
        first = events[0].cursor if events else None
        (dropped,) = self._db.execute(
            "SELECT MAX(cursor) FROM events WHERE ? IS NULL OR cursor < ?", (first, first)
        ).fetchone()
        return events, max(int(dropped or 0), self._lost())

    def _lost(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'lost'").fetchone()
        return int(row[0]) if row else 0

    def append(self, event: FeedEvent, *, prune: tuple[int, int] | None = None) -> None:
        """Queue ``event``; ``prune`` = (drop cursors up to, lost so far) rides along."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(event)
            if prune is not None:
                self._prune = prune
            if self._flushing:
                return
            self._flushing = True
        self._pool.submit(self._flush)

    def _flush(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                prune, self._prune = self._prune, None
                if not batch and prune is None:
                    self._flushing = False
                    return
            try:
                self._write(batch, prune)
            except Exception:
                # Never leave the writer stuck as "flushing": later events still go.
                log.exception("api feed: %d events could not be written", len(batch))

    def _write(self, batch: list[FeedEvent], prune: tuple[int, int] | None) -> None:
        rows = [
            (e.cursor, e.kind, e.extension, e.call_id, e.ts, json.dumps(e.data, default=str))
            for e in batch
        ]
        delay = 0.05
        while True:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", rows
                    )
                    if prune is not None:
                        upto, lost = prune
                        self._db.execute("DELETE FROM events WHERE cursor <= ?", (upto,))
                        self._db.execute(
                            "INSERT INTO meta VALUES ('lost', ?) ON CONFLICT(key) DO UPDATE"
                            " SET value = MAX(value, excluded.value)",
                            (lost,),
                        )
                return
            except sqlite3.OperationalError as exc:
                # Locked by another process (a backup): keep the batch, retry.
                if self._closed:
                    log.warning("api feed: %d events not written at stop: %s", len(rows), exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        """Write what is queued, then close (blocking; ``EventFeed.aclose`` threads it)."""
        with self._lock:
            self._closed = True
        # One worker: this runs after any flush in progress, and writes the rest.
        self._pool.submit(self._flush).result()
        self._pool.shutdown(wait=True)
        self._db.close()


def _event(row: tuple[Any, ...]) -> FeedEvent:
    cursor, kind, extension, call_id, ts, data = row
    try:
        payload = json.loads(data)
    except ValueError:
        payload = {}
    return FeedEvent(int(cursor), kind, extension, call_id, float(ts), payload)


class EventFeed:
    """Events in cursor order, readable by cursor, with waiting readers woken at once."""

    def __init__(
        self,
        *,
        retention: float = RETENTION,
        max_events: int = MAX_EVENTS,
        store: FeedStore | None = None,
        clock: Callable[[], float] = time.time,
        events: Iterable[FeedEvent] = (),
        lost: int = 0,
    ) -> None:
        if retention <= 0 or max_events <= 0:
            raise ValueError("retention and max_events must be positive")
        self.retention = retention
        self.max_events = max_events
        self._store = store
        self._clock = clock
        # The ring: a list with a moving head (compacted now and then), and the
        # cursors beside it for bisect; a deque's middle is O(n) to index.
        self._events: list[FeedEvent] = list(events)[-max_events:]
        self._cursors: list[int] = [e.cursor for e in self._events]
        self._head = 0
        self._last = self._cursors[-1] if self._cursors else 0
        #: The highest cursor dropped from the ring: a reader behind it lost events.
        self._lost = lost
        self._waiters: set[asyncio.Future[None]] = set()
        self._since_prune = 0

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        retention: float = RETENTION,
        max_events: int = MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> EventFeed:
        """The feed kept in ``state_dir``: what the last run published is readable again.

        A file SQLite cannot read (a disk fault, a truncated copy) is moved
        aside with a warning and the feed starts empty: the API must come up,
        and clients resuming from an old cursor are told of the gap.
        """
        path = state_dir / FILENAME
        oldest = int((clock() - retention) * 1_000_000)
        try:
            store = FeedStore(path)
            events, lost = store.load(oldest=oldest, limit=max_events)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.unreadable-{int(clock())}")
            log.warning("api feed: %s is unreadable (%s); moved to %s", path, exc, aside.name)
            path.replace(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            store = FeedStore(path)
            # Every cursor up to now was lost with the file.
            events, lost = [], int(clock() * 1_000_000)
        return cls(
            retention=retention,
            max_events=max_events,
            store=store,
            clock=clock,
            events=events,
            lost=lost,
        )

    @property
    def last_cursor(self) -> int:
        return self._last

    @property
    def waiting(self) -> int:
        """Readers waiting now."""
        return len(self._waiters)

    def __len__(self) -> int:
        return len(self._events) - self._head

    def publish(
        self,
        kind: str,
        extension: str | None,
        data: Mapping[str, Any],
        *,
        call_id: str | None = None,
        ts: float | None = None,
    ) -> int:
        """Add an event and wake every waiting reader; its cursor.

        Cheap and synchronous: called from the engine's event hooks.
        """
        now = self._clock()
        # Above every cursor handed out or reported lost, whatever the clock says.
        cursor = max(self._last + 1, self._lost + 1, int(now * 1_000_000))
        event = FeedEvent(cursor, kind, extension, call_id, now if ts is None else ts, data)
        self._events.append(event)
        self._cursors.append(cursor)
        self._last = cursor
        if len(self) > self.max_events:
            self._drop(1)
        self._expire(now)
        if self._store is not None:
            self._since_prune += 1
            prune = None
            if self._since_prune >= _PRUNE_EVERY:
                self._since_prune = 0
                prune = (self._cursors[self._head] - 1, self._lost)
            self._store.append(event, prune=prune)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        return cursor

    def _drop(self, count: int) -> None:
        self._head += count
        self._lost = max(self._lost, self._cursors[self._head - 1])
        if self._head > 1024 and self._head * 2 > len(self._events):
            del self._events[: self._head]
            del self._cursors[: self._head]
            self._head = 0

    def _expire(self, now: float) -> None:
        horizon = int((now - self.retention) * 1_000_000)
        stale = bisect.bisect_left(self._cursors, horizon, lo=self._head) - self._head
        if stale > 0:
            self._drop(stale)

    def read(self, after: int, visible: Visible = _everything, limit: int = 100) -> Page:
        """Events after cursor ``after`` that ``visible`` lets through, at most ``limit``."""
        self._expire(self._clock())
        after = max(after, 0)
        gap = after < self._lost
        found: list[FeedEvent] = []
        # Past the gap even when nothing is kept after it: the reader is told
        # once, and its next read from this cursor is not a gap again.
        position = max(after, self._lost)
        # Sorted by cursor: start right after what the reader has seen.
        start = bisect.bisect_right(self._cursors, after, lo=self._head)
        events = self._events
        for index in range(start, len(events)):
            event = events[index]
            position = event.cursor
            if visible(event.extension):
                found.append(event)
                if len(found) >= limit:
                    break
        return Page(tuple(found), position, gap)

    async def wait(
        self, after: int, visible: Visible = _everything, timeout: float = 25.0, limit: int = 100
    ) -> Page:
        """Like :meth:`read`, but waits up to ``timeout`` seconds for an event to show.

        Answers at once when there is one; the returned cursor moves past
        events the reader may not see, so nothing is scanned twice.
        """
        page = self.read(after, visible, limit)
        if page.events or timeout <= 0:
            return page
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        gap = page.gap
        while not page.events:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                break
            finally:
                self._waiters.discard(waiter)
            page = self.read(page.cursor, visible, limit)
            gap = gap or page.gap
        return Page(page.events, page.cursor, gap)

    async def aclose(self) -> None:
        """Write what is queued and close the file; the ring stays readable."""
        store, self._store = self._store, None
        if store is not None:
            await asyncio.to_thread(store.close)
