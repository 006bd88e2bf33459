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

A token scoped to some extensions learns nothing of the others' events, not
even when or how many: a wait wakes it only for an event it may see (else at
its timeout), and a cursor it gets is an event it sees, one of its own lost
(below), the clock at that moment (:meth:`EventFeed.position`), or the
mark of a stretch the router saw nothing in (below), never another
extension's event. A position handed out is remembered, so a later
event's cursor is above it and resuming from it loses nothing; an event it
may not see between its cursor and the clock is scanned again next time, so
for nothing.

That has to hold after a crash too, when nothing was written at stop and the
clock may have been set back meanwhile. The file holds a reservation (hi/lo,
as sequence caches do): a ceiling above every cursor handed out, written and
synced before any cursor above the last one is handed out, and new events of
the next run go above it. Asked for ahead of need (at most one write per
``_RESERVE_STEP`` of cursors, on the worker thread), it rarely holds an
answer back; when it does (a stalled disk), readers get what is below it and
the rest once it is written.

Memory and disk are bounded by ``retention`` seconds and ``max_events``
events. A client whose cursor is older than what is kept gets the events
still kept with ``gap: true``: it lost some, and should refresh its view
(the calls list) instead of trusting the feed for that stretch. The bound
is shared, with no minimum per extension: a busy extension's events can
push a quiet one's out early (docs/api.md says why). What was
dropped is kept per extension (the newest dropped cursor of each), so the
gap a reader is told is about events it may see, never others'.
A cursor past every one the feed has handed out and past the clock (a
forged one, or one from a run whose file was lost after the clock was set
back) is a gap too, answered at once with the clock's cursor: echoed back,
it was a cursor no event would ever come after.

The feed also tells the stretches in which the router itself saw nothing,
so had nothing to keep: while callrouter was stopped (a restart, an upgrade,
a crash) and while its AMI event stream was lost (:meth:`EventFeed.blind`,
on a :class:`~router.ami.stream.StreamGap`). Calls rang and ended meanwhile,
and a reader that trusted the feed across such a stretch kept a stale view.
Each stretch is a mark, a cursor at its end: new events go above it, and a
reader whose cursor is below it is told ``gap: true`` once, on the page that
passes it (a page that stops short of it, at ``limit``, tells nothing yet:
told early, a reader would refresh, then apply older events over it). The
end alone says who is told: a cursor from before the stretch or from within
it (a position handed out while the stream was lost) is below it; one after
it is not. The stretch is everyone's, so it is told whatever a token's
scope: it is no extension's event, and the mark is the clock at the
stretch's end or, when the clock is behind a cursor handed out, the next
multiple of ``_RESERVE_STEP`` above them (as the reservation, it says
nothing of any event); a scoped reader learns only that callrouter was
away, which every reader learns alike. At start the mark is above what the
file says the last run may have handed out: the position written at a clean
stop, else (a crash) the reservation synced before any cursor past it went
out; so it needs nothing more written, and a reader of any earlier run,
whatever the last run's own marks, is below it.

SQLite never runs on the event loop (as the 1C plugin's history queue): a
publication is handed to one worker thread that writes in batches, so a slow
disk or a backup tool's lock delays the file, never a waiting client.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import heapq
import itertools
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router import jsonsafe
from router.aside import (
    db_kept,
    kept_db_error,
    move_aside,
    set_aside_odd_db_files,
)
from router.callerid import cut_number, cut_text
from router.recordings.store import create_private, file_identity, write_back
from router.wording import counted

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
#: Microseconds of cursors one reservation covers ahead of need: a write (and
#: fsync) at most every 15 s of the clock; after a crash, new cursors run up
#: to twice that ahead of the clock until it catches up.
_RESERVE_STEP = 15_000_000
#: No ceiling (a feed without a file): nothing is held back.
_UNBOUNDED = (1 << 63) - 1
#: Extensions whose newest dropped cursor is kept apart: one per endpoint or
#: hint of the PBX; past it they fold into one value every reader is held to.
_MAX_DROPPED = 10_000
#: The newest drops (extension, cursor) a waiting reader reads to update what it
#: lost since its last look, instead of every extension's in ``_dropped`` (up to
#: :data:`_MAX_DROPPED`): more drops than this between two looks, and it reads them all.
_DROP_LOG = 4096
#: Blind stretches remembered apart (:meth:`EventFeed.blind`): past it the two
#: oldest marks fold into the later one, whose readers are then told at it, late
#: (after events they applied, so a refresh still ends right), never early.
_MAX_BLIND = 256
#: Cursors are wall-clock microseconds (about 1.8e15 in 2027); a value in the
#: file above this (year 2255) or not a number was not written by the feed:
#: it is left out with a warning, not let push every cursor past SQLite's range.
_MAX_CURSOR = 1 << 53
#: How far a position, reservation or dropped cursor in the file may be ahead
#: of both the clock and the file's newest event (microseconds: a year). The
#: feed writes them at most a reservation ahead of its clock; more is a clock
#: set back between runs (an NTP step is seconds, a virtual machine restored
#: from a snapshot days), else a value the feed did not write. Trusted, one far
#: ahead would put every cursor there: events would outlive ``retention`` (it
#: expires by cursor) and, near :data:`_MAX_CURSOR`, the run's own cursors would
#: pass it and the next start, leaving them out, would go below them.
_MAX_AHEAD = 366 * 86_400 * 1_000_000

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
    #: Pass this back as the next ``cursor``: the last event returned, or when
    #: the read saw all there is, the later of that and the clock; never an
    #: event the reader may not see (its value would tell when that was).
    cursor: int
    #: Events the reader may see were dropped (retention) after its cursor, or
    #: the page passes a stretch in which the router saw nothing (a restart,
    #: the AMI stream lost: :meth:`EventFeed.blind`).
    gap: bool = False


def json_dumps_default_str() -> Callable[[Any], str]:
    """``json.dumps(value, default=str)`` as one encoder made once, for one
    thread at a time: ``json.dumps`` makes its C encoder anew for each value,
    most of what a feed row's small dict costs (a BLF flood writes thousands a
    second; issue 16). The same text; a value that fails (a circular one)
    raises as ``json.dumps`` does and leaves the next one unaffected."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return functools.partial(json.dumps, default=str)
    markers: dict[int, Any] = {}
    encode = make(
        markers, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def dumps(value: Any) -> str:
        try:
            return "".join(encode(value, 0))
        except BaseException:
            markers.clear()  # what the failed value left for the circularity check
            raise

    return dumps


class FeedStore:
    """The feed's SQLite file, written on one worker thread.

    ``append`` only queues; a single flush job on the thread writes whatever
    queued meanwhile in one transaction. ``load`` runs once, before serving.
    """

    def __init__(self, path: Path, *, max_pending: int = MAX_EVENTS) -> None:
        self.path = path
        #: Events queued for the file at most: while the disk refuses writes (a
        #: lock, a full disk) the oldest beyond it are not written, and what
        #: they were is kept per extension (``_unwritten``) for the gap.
        self._max_pending = max(1, max_pending)
        self._unwritten: dict[str | None, int] = {}
        #: Past :data:`_MAX_DROPPED` extensions, ``_unwritten`` folds into this:
        #: the file's floor every reader behind it is told a gap from.
        self._unwritten_floor = 0
        self._overflowing = False
        #: A batch was refused (:meth:`_refused`) and its record is not written yet.
        self._refusing = False
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The file holds callers' numbers and 1C's cards: 0600 before SQLite
        # opens it (its -wal and -shm files take the database file's mode); an
        # existing one is never opened (closing it would drop this process's locks).
        # No link followed, no FIFO opened there (issue 16).
        set_aside_odd_db_files(path)
        create_private(path)
        #: The copy ``write_back`` could not move in place and opened instead (it
        #: holds every event); None: the connection is on ``path``.
        self._at: Path | None = None
        self._connect()
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS events (cursor INTEGER PRIMARY KEY,"
                " kind TEXT NOT NULL, extension TEXT, call_id TEXT, ts REAL NOT NULL,"
                " data TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)"
            )
            # The newest dropped cursor per extension (the key is the extension as
            # JSON, so null is one too): what a scoped reader's gap is told from.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS dropped"
                " (extension TEXT PRIMARY KEY, cursor INTEGER NOT NULL)"
            )
            self._db.commit()
        except BaseException:
            # Not left open until the error raised from here is collected (issue 16).
            self._db.close()
            raise
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-feed")
        self._lock = threading.Lock()
        self._pending: list[FeedEvent] = []
        #: Cursors of superseded state events the ring dropped: their rows go
        #: with the next batch, so a restart reads back the ring as it was.
        self._gone: list[int] = []
        self._prune: _Prune | None = None
        #: A ceiling asked for and not written yet, and whom to tell once it is.
        self._ceiling = 0
        self._reserved: Callable[[int], None] | None = None
        self._flushing = False
        self._closed = False
        #: The asks for a write back not served yet, one future each (:meth:`put_back`).
        self._asked: list[Future[str | None]] = []
        #: The highest value the file may say (:meth:`load` sets it from the clock).
        self._cap = _MAX_CURSOR
        #: ``json.dumps(data, default=str)`` of each row, made once for the
        #: worker (the one thread that writes rows): not an encoder per row.
        self._dumps = json_dumps_default_str()

    def _connect(self) -> None:
        target = self.path if self._at is None else self._at
        db = sqlite3.connect(target, timeout=_BUSY_TIMEOUT, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # A read opens the -wal and -shm now: opened first after the file is
            # deleted again, SQLite answers "disk I/O error" and nothing is written back.
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            db.close()
            raise
        self._db = db
        #: The file the connection has open (device, inode): :meth:`put_back`.
        self._file = file_identity(target)
        #: ``"deleted"`` or ``"replaced"`` while the file :meth:`put_back` wrote
        #: back for that reason is not open yet; None: it is open.
        self._unopened: str | None = None

    def _ready(self) -> None:
        """On the worker: the file :meth:`put_back` wrote back and could not open
        (a nearly full disk) is opened now, or ``sqlite3.OperationalError`` says
        why not, which the writes retry (the batch kept): the closed connection
        raised ``ProgrammingError``, each batch was lost with a traceback, the
        cursor reservation retried it for ever, and no write back came again."""
        if self._unopened is None:
            return
        try:
            self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise sqlite3.OperationalError(
                f"{self.path} was written back but cannot be opened again: {exc}"
            ) from exc

    def put_back(self) -> Future[str | None]:
        """The file deleted or replaced while open: written again where it
        belongs from the open one (``router.recordings.store.write_back``), on
        the worker thread, between two batches or between two tries of a write
        the file refuses (a full disk, a backup's lock: it waited behind them
        for as long as they failed); the future's result is ``"deleted"``,
        ``"replaced"`` or None (where it was, or closed). Asks while one
        waits are served by one write back, each with a future of its own: a
        shared one cancelled by one asker (``asyncio.wrap_future`` cancels it
        with the task) raised ``CancelledError`` in the others and no write
        back was done."""
        asked: Future[str | None] = Future()
        with self._lock:
            if self._closed:
                asked.set_result(None)
                return asked
            waiting = [f for f in self._asked if not f.cancelled()]  # bounded by the askers
            self._asked = [*waiting, asked]
            if waiting:
                return asked  # their job serves this one too
        try:
            self._pool.submit(self._serve_put_back)
        except RuntimeError:  # closed since: the pool shut down, nothing to write back
            with self._lock:
                self._asked = [f for f in self._asked if f is not asked]
            asked.set_result(None)
        return asked

    def _serve_put_back(self) -> None:
        """On the worker: the write back asked for (:meth:`put_back`), if any."""
        with self._lock:
            asked, self._asked = self._asked, []
        asked = [f for f in asked if f.set_running_or_notify_cancel()]
        if not asked:
            return
        try:
            what = self._put_back()
        except BaseException as exc:
            for future in asked:
                future.set_exception(exc)
            return
        for future in asked:
            future.set_result(what)

    def _put_back(self) -> str | None:
        if self._unopened is not None:
            what = self._unopened
            self._ready()
            if self._at is None:
                return what
        found = "deleted" if file_identity(self.path) is None else "replaced"

        def reopen(target: Path) -> None:
            self._unopened = found  # this is the file in use, opened or not
            self._at = None if target == self.path else target
            self._ready()

        return write_back(
            self.path, self._file, self._db, close=self._db.close, reopen=reopen, copied=self._at
        )

    def load(
        self, *, oldest: int, limit: int, now: int | None = None
    ) -> tuple[list[FeedEvent], int, dict[str | None, int]]:
        """The newest ``limit`` events from cursor ``oldest`` on, the cursor every
        reader lost up to (0: none), and the newest dropped cursor per extension:
        these tell a returning client of a gap. ``now``: the clock in microseconds,
        which with the newest event bounds what else the file may say
        (:data:`_MAX_AHEAD`); also for :meth:`issued` after it."""
        if now is None:
            now = int(time.time() * 1_000_000)
        newest = self._db.execute(
            "SELECT MAX(cursor) FROM events WHERE cursor <= ?", (_MAX_CURSOR,)
        ).fetchone()[0]
        top = max(now, newest if isinstance(newest, int) else 0)
        self._cap = min(_MAX_CURSOR, top + _MAX_AHEAD)
        rows = self._db.execute(
            "SELECT cursor, kind, extension, call_id, ts, data FROM events"
            " WHERE cursor >= ? AND cursor <= ? ORDER BY cursor DESC LIMIT ?",
            (oldest, _MAX_CURSOR, limit),
        ).fetchall()
        events: list[FeedEvent] = []
        for row in reversed(rows):
            event = _event(row)
            if event is None:
                log.warning(
                    "api feed: %s holds event %d with a kind, extension, call id or time"
                    " the feed never writes; left out",
                    self.path.name,
                    row[0],
                )
            else:
                events.append(event)
        first = rows[-1][0] if rows else None
        dropped: dict[str | None, int] = {}
        for key, cursor in self._db.execute("SELECT extension, cursor FROM dropped"):
            try:
                extension = jsonsafe.loads(key)
            except (TypeError, ValueError):
                continue
            value = self._sane(cursor, "dropped")
            if value and (extension is None or isinstance(extension, str)):
                dropped[extension] = value
        # The rows before the first kept (older than ``oldest``, past ``limit``):
        # each extension's newest is a gap for its readers, but a device's or
        # hint's state a newer row of the same key supersedes (kept or not) is
        # none, as in the ring (EventFeed._drop). Newest first: the first row of
        # a key met is its last state, any later one is superseded.
        seen = {key for event in events if (key := _state_key(event)) is not None}
        told: set[object] = set()
        for row in self._db.execute(
            "SELECT cursor, kind, extension, call_id, ts, data FROM events"
            " WHERE (? IS NULL OR cursor < ?) AND cursor <= ? ORDER BY cursor DESC",
            (first, first, _MAX_CURSOR),
        ):
            if row[1] in _STATE_KINDS and (event := _event(row)) is not None:
                key = _state_key(event)
                if key is not None:
                    if key in seen:
                        continue  # superseded: not a gap for anyone
                    seen.add(key)
            extension = row[2]
            if extension in told:
                continue  # its newest is told already
            told.add(extension)
            dropped[extension] = max(dropped.get(extension, 0), self._sane(row[0], "events"))
        # A file from before the dropped table holds here the newest dropped
        # cursor of anyone, its rows deleted: whose they were is gone, so every
        # reader behind it is told of a gap once, as that build told it. Not
        # told would be silent loss for a reader whose events were among them.
        row = self._db.execute("SELECT value FROM meta WHERE key = 'lost'").fetchone()
        return events, self._sane(row[0], "lost") if row else 0, dropped

    def _sane(self, value: object, key: str) -> int:
        """A cursor read from the file, or 0 for one the feed cannot have
        written (text, a negative number, past :data:`_MAX_CURSOR`, or more than
        :data:`_MAX_AHEAD` past the clock and every event): a tampered or damaged
        value is left out, not let stop the start or move every cursor; the
        feed starts from what the events and the clock say."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= self._cap:
            return value
        why = (
            "more than a year past the clock and every event"
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_CURSOR
            else "not a cursor"
        )
        log.warning(
            "api feed: %s holds a bad %s value %.40r (%s); left out",
            self.path.name,
            key,
            value,
            why,
        )
        return 0

    def append(self, event: FeedEvent, *, prune: _Prune | None = None, gone: int = 0) -> None:
        """Queue ``event``; ``prune`` (drop cursors up to, what was lost) and
        ``gone`` (a superseded event's cursor the ring dropped, else 0) ride along."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(event)
            if gone:
                self._gone.append(gone)
            if len(self._pending) > self._max_pending:
                self._overflow()
            if prune is not None:
                self._prune = prune
            if self._flushing:
                return
            self._flushing = True
        self._pool.submit(self._flush)

    def _overflow(self) -> None:
        """Drop the oldest queued events (the lock held): a stalled disk must
        not grow memory without bound. They stay in the ring for this run's
        readers; the file learns they were dropped, so a client resuming
        from before them after a restart is told of a gap."""
        excess = len(self._pending) - self._max_pending
        unwritten = self._unwritten
        for event in self._pending[:excess]:
            if event.cursor > unwritten.get(event.extension, 0):
                unwritten[event.extension] = event.cursor
        del self._pending[:excess]
        if len(unwritten) > _MAX_DROPPED:
            # As the ring's own record (EventFeed._drop): a stall under a flood
            # of ever new extensions (a hostile AMI peer's devices) kept one
            # entry each, without bound, and wrote them all to the file.
            self._unwritten_floor = max(self._unwritten_floor, *unwritten.values())
            unwritten.clear()
        # Rows to delete: as bounded. One left undeleted is read back at a
        # restart in place of an older event, which is then told as dropped.
        del self._gone[: max(0, len(self._gone) - self._max_pending)]
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "api feed: %s takes no writes and %d events wait for it; older ones"
                " are not written (readers resuming from them after a restart are told of a gap)",
                self.path.name,
                self._max_pending,
            )

    def reserve(self, ceiling: int, reserved: Callable[[int], None]) -> None:
        """Write ``ceiling`` (synced) on the worker, then call ``reserved(ceiling)``
        there: cursors up to it may be handed out. Asks not written yet merge."""
        with self._lock:
            if self._closed:
                return
            self._ceiling = max(self._ceiling, ceiling)
            self._reserved = reserved
            if self._flushing:
                return
            self._flushing = True
        self._pool.submit(self._flush)

    def reserve_now(self, ceiling: int) -> None:
        """Write ``ceiling`` now, on the calling thread: at start, before serving."""
        self._ready()
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO meta VALUES ('issued_ceiling', ?) ON CONFLICT(key) DO UPDATE"
                    " SET value = MAX(value, excluded.value)",
                    (ceiling,),
                )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def _write_ceiling(self, ceiling: int) -> bool:
        # Nothing above the ceiling is handed out until this is on disk: retried
        # (a backup's lock, a full disk) until it is, or the feed stops.
        delay = 0.05
        while True:
            try:
                self.reserve_now(ceiling)
                return True
            except sqlite3.Error as exc:
                if self._closed:
                    log.warning("api feed: the cursor reservation not written at stop: %s", exc)
                    return False
                if delay == 0.05:
                    log.warning("api feed: the cursor reservation not written, retrying: %s", exc)
                self._serve_put_back()  # a deleted file is written back meanwhile
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _flush(self) -> None:
        #: Batches in a row the file refused with an error no retry helps (:meth:`_refused`).
        refused = 0
        while True:
            with self._lock:
                if refused >= 2 and not (self._pending or self._gone or self._ceiling):
                    # The record of what was refused was itself refused: kept
                    # (bounded) for the next flush, not retried in a loop.
                    self._flushing = False
                    return
                batch, self._pending = self._pending, []
                gone, self._gone = self._gone, []
                unwritten, self._unwritten = self._unwritten, {}
                floor, self._unwritten_floor = self._unwritten_floor, 0
                prune, self._prune = self._prune, None
                ceiling, self._ceiling = self._ceiling, 0
                reserved = self._reserved
                if (
                    not batch
                    and prune is None
                    and not ceiling
                    and not unwritten
                    and not gone
                    and not floor
                ):
                    self._flushing = False
                    return
            try:
                # The reservation first: readers may wait for it, not for the batch.
                if ceiling and self._write_ceiling(ceiling) and reserved is not None:
                    reserved(ceiling)
            except Exception:
                # Never leave the writer stuck as "flushing": later events still go.
                log.exception("api feed: the cursor reservation could not be written")
            if not (batch or prune is not None or unwritten or gone or floor):
                continue
            try:
                if self._write(batch, prune, unwritten, gone, floor):
                    refused = 0
                    self._written_again()
            except Exception as exc:
                refused += 1
                self._refused(batch, unwritten, floor, exc)

    def _refused(
        self,
        batch: list[FeedEvent],
        unwritten: Mapping[str | None, int],
        floor: int,
        exc: Exception,
    ) -> None:
        """A batch the file refused with an error that is no lock (retried by
        :meth:`_write`): a damaged file, a value SQLite cannot bind. Its events
        are not written; they are recorded as dropped, as a stall's are
        (``_unwritten``, folded into ``_unwritten_floor`` past
        :data:`_MAX_DROPPED`), and so is the record the batch carried: a
        reader resuming from before them after a restart is told of a gap.
        They were lost with no record at all, that reader told nothing
        (issue 16). The ring still serves them to this run's readers. A
        pruning the batch carried is not kept: the rows it deleted stay in
        the file (read back, or told as dropped, at a restart) and the next
        one, every :data:`_PRUNE_EVERY` publications, says all it said."""
        with self._lock:
            record = self._unwritten
            for extension, cursor in unwritten.items():
                if cursor > record.get(extension, 0):
                    record[extension] = cursor
            for event in batch:
                if event.cursor > record.get(event.extension, 0):
                    record[event.extension] = event.cursor
            self._unwritten_floor = max(self._unwritten_floor, floor)
            if len(record) > _MAX_DROPPED:
                self._unwritten_floor = max(self._unwritten_floor, *record.values())
                record.clear()
            first = not self._refusing
            self._refusing = True
        if first:
            log.error(
                "api feed: %s refused a batch of %s (%s): recorded as dropped, so a reader"
                " resuming from before them after a restart is told of a gap",
                self.path.name,
                counted(len(batch), "event"),
                exc,
                exc_info=exc,
            )
        else:
            log.debug(
                "api feed: %s refused a batch of %d events: %s", self.path.name, len(batch), exc
            )

    def _written_again(self) -> None:
        """A batch was written: the end of an overflow, unless events were dropped
        since the batch was taken (their record is the next batch's to write). Under
        the lock, as :meth:`_overflow` sets the flag on the event loop's thread: a
        check here without it could clear the flag of a drop just made and say
        the file takes writes again before what was dropped is recorded."""
        with self._lock:
            recorded = not self._unwritten and not self._unwritten_floor
            recovered = self._overflowing and recorded
            if recovered:
                self._overflowing = False
            accepted = self._refusing and recorded
            if accepted:
                self._refusing = False
        if recovered:
            log.warning("api feed: %s takes writes again", self.path.name)
        if accepted:
            log.warning(
                "api feed: %s takes writes again; what it refused is recorded as dropped",
                self.path.name,
            )

    def _write_issued(self, issued: int) -> None:
        # A scoped reader's cursor may be the clock, above every event: the next
        # run's events go above it even when the clock was set back meanwhile.
        # The exact value replaces the reservation, which only a crash needs.
        try:
            self._ready()
            with self._db:
                self._db.execute(
                    "INSERT INTO meta VALUES ('issued', ?) ON CONFLICT(key) DO UPDATE"
                    " SET value = MAX(value, excluded.value)",
                    (issued,),
                )
                self._db.execute("DELETE FROM meta WHERE key = 'issued_ceiling'")
        except sqlite3.OperationalError as exc:
            log.warning("api feed: the last position handed out not written at stop: %s", exc)

    def _write(
        self,
        batch: list[FeedEvent],
        prune: _Prune | None,
        unwritten: Mapping[str | None, int] | None = None,
        gone: Iterable[int] = (),
        floor: int = 0,
    ) -> bool:
        """Write a batch, retried while the file is locked; False when the feed
        stopped before it could be written. ``gone``: rows to delete (superseded
        state events the ring dropped), some perhaps in this batch: a row both
        inserted and deleted here is not written at all. ``floor``: a cursor
        every reader behind lost events at (unwritten ones of too many
        extensions to record apart), 0 for none."""
        dumps = self._dumps
        doomed = set(gone)
        rows = [
            (e.cursor, e.kind, e.extension, e.call_id, e.ts, dumps(e.data))
            for e in batch
            if e.cursor not in doomed
        ]
        if doomed and batch:
            doomed.difference_update(e.cursor for e in batch)
        deleted = [(cursor,) for cursor in doomed]
        delay = 0.05
        while True:
            try:
                self._ready()
                with self._db:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", rows
                    )
                    if deleted:
                        self._db.executemany("DELETE FROM events WHERE cursor = ?", deleted)
                    if prune is not None:
                        # Not named ``floor``: the stall's own floor, below, is another.
                        upto, ring_floor, dropped = prune
                        self._db.execute("DELETE FROM events WHERE cursor <= ?", (upto,))
                        self._db.execute(
                            "INSERT INTO meta VALUES ('lost', ?) ON CONFLICT(key) DO UPDATE"
                            " SET value = MAX(value, excluded.value)",
                            (ring_floor,),
                        )
                        # What was folded into the floor goes; the rest stays,
                        # merged with the map: a record of events a stalled disk
                        # never took (``unwritten``) is not in the ring's map
                        # while they are in the ring, and replacing the table
                        # with the map lost it (a reader resuming from before
                        # them after a restart missed them without a gap).
                        self._db.execute(
                            "DELETE FROM dropped WHERE cursor <="
                            " (SELECT value FROM meta WHERE key = 'lost')"
                        )
                        self._db.executemany(
                            "INSERT INTO dropped VALUES (?, ?) ON CONFLICT(extension) DO UPDATE"
                            " SET cursor = MAX(cursor, excluded.cursor)",
                            [(json.dumps(e), c) for e, c in dropped.items()],
                        )
                    if floor:
                        self._db.execute(
                            "INSERT INTO meta VALUES ('lost', ?) ON CONFLICT(key) DO UPDATE"
                            " SET value = MAX(value, excluded.value)",
                            (floor,),
                        )
                    if unwritten:  # queued while the disk stalled, never written
                        self._db.executemany(
                            "INSERT INTO dropped VALUES (?, ?) ON CONFLICT(extension) DO UPDATE"
                            " SET cursor = MAX(cursor, excluded.cursor)",
                            [(json.dumps(e), c) for e, c in unwritten.items()],
                        )
                return True
            except sqlite3.OperationalError as exc:
                # Locked by another process (a backup): keep the batch, retry.
                if self._closed:
                    log.warning("api feed: %d events not written at stop: %s", len(rows), exc)
                    return False
                self._serve_put_back()  # a deleted file is written back meanwhile
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def issued(self) -> int:
        """The highest cursor the last run may have handed out: written at a clean
        stop, else (a crash) the ceiling it had reserved; 0: none kept."""
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE key IN ('issued', 'issued_ceiling')"
        ).fetchall()
        return max([0, *(self._sane(value, key) for key, value in rows)])

    def close(self, *, issued: int = 0) -> None:
        """Write what is queued and the highest cursor handed out (in place of the
        reservation), then close (blocking; ``EventFeed.aclose`` threads it)."""
        with self._lock:
            self._closed = True
        # One worker: this runs after any flush in progress, and writes the rest.
        self._pool.submit(self._flush).result()
        self._pool.submit(self._write_issued, issued).result()
        self._pool.shutdown(wait=True)
        self._db.close()

    def abandon(self) -> None:
        """Close without writing anything (blocking): the file is set aside, or
        the start refused. Left open, its connection kept the file set aside
        (and the -wal and -shm deleted after it) open, with its worker, until
        the garbage collector came by (issue 16)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


#: A pruning of the file: drop cursors up to, the floor, the newest dropped per extension.
_Prune = tuple[int, int, dict[str | None, int]]

#: What a state event is the state of: its kind, extension, and device (a
#: ``device`` event) or hint context (a ``presence`` one). A newer event of
#: the same key supersedes it (a reader of state needs only the latest), and
#: the same extension means the same readers see both.
_StateKey = tuple[str, str | None, str | None]
#: The kinds of :data:`_StateKey`: the feed's device and hint states.
_STATE_KINDS = frozenset(("device", "presence"))


def _state_key(event: FeedEvent) -> _StateKey | None:
    """The state ``event`` tells (:data:`_StateKey`), or None for any other event
    (a call's, ``dnd``, ``forwarding``; one read back from a file without a
    device name as text), which a newer one never supersedes."""
    kind = event.kind
    if kind == "device":
        name = event.data.get("device")
    elif kind == "presence":
        name = event.data.get("context")
        if name is None:
            return (kind, event.extension, None)
    else:
        return None
    if type(name) is not str:
        return None
    return (kind, event.extension, name)


def _ceiling(needed: int) -> int:
    """The reservation for cursors up to ``needed``: a multiple of the step, at
    least one step above it, so the next is asked for a step before it is reached."""
    return (needed // _RESERVE_STEP + 2) * _RESERVE_STEP


def _mark(now: int, top: int) -> int:
    """Where a blind stretch ending now is marked: the clock ``now``, above
    ``top`` (every cursor handed out); past it (the clock behind them, as just
    after a crash, or set back) the next multiple of the reservation's step,
    never ``top`` plus one, which would tell a scoped reader when another's
    event was."""
    if now > top:
        return now
    return (top // _RESERVE_STEP + 1) * _RESERVE_STEP


def _reserve_at_start(store: FeedStore, ceiling: int, written: int) -> int:
    """Write ``ceiling`` before serving; the ceiling the feed starts with.

    A file that was read but cannot be written now (a backup's lock, a full
    disk) is not unreadable: moved aside, its events would be lost. The feed
    starts with ``written`` (what the file already holds, above every cursor
    the last run handed out) as its ceiling, and the first cursor above it
    asks the worker, which retries until it is written. One that SQLite may
    never write (:func:`router.aside.db_denied`: its owner or mode) is raised.
    """
    try:
        store.reserve_now(ceiling)
    except sqlite3.OperationalError as exc:
        if db_kept(exc):
            # Not a passing lock: a file of another user (or mode) that SQLite
            # opened read-only, one moved away since it was opened, or a link
            # at its name (router.aside.db_kept), whose every write fails
            # alike; the feed would publish for good and store nothing.
            # EventFeed.open refuses the start naming it, the file kept
            # (issue 16).
            raise
        log.warning(
            "api feed: the cursor reservation not written at start (%s); answers wait"
            " for it, written once %s can be",
            exc,
            store.path.name,
        )
        return written
    return ceiling


def _event(row: tuple[Any, ...]) -> FeedEvent | None:
    """The event a row of the file holds; None for a row the feed cannot have
    written (a damaged or tampered file): a time that is no finite number, a
    kind that is no text. Its ``data``, when not a JSON object the answers can
    carry (nested past the parser's limit, ``NaN``), is read as ``{}``."""
    cursor, kind, extension, call_id, ts, data = row
    if not (
        isinstance(kind, str)
        and isinstance(extension, str | None)
        and isinstance(call_id, str | None)
        and isinstance(ts, int | float)
        and math.isfinite(ts)
    ):
        return None
    try:
        payload = jsonsafe.loads(data)
        # What an answer writes (JSONResponse refuses NaN and Infinity: a 500).
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    for key, cut in _CUT.items():
        value = payload.get(key)
        if isinstance(value, str):
            payload[key] = cut(value)
    return FeedEvent(int(cursor), kind, extension, call_id, float(ts), payload)


#: The caller's texts in an event's ``data``, cut where they enter callrouter
#: (router.callerid) and bounded so in the OpenAPI document; a file an earlier
#: version wrote (before issue 16) has them whole, and is read back cut.
_CUT: dict[str, Callable[[str], str]] = {
    "caller": cut_number,
    "did": cut_number,
    "target": cut_number,
    "caller_name": cut_text,
}


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
        dropped: Mapping[str | None, int] | None = None,
        issued: int = 0,
        reserved: int = 0,
        blind: int = 0,
    ) -> None:
        if retention <= 0 or max_events <= 0:
            raise ValueError("retention and max_events must be positive")
        self.retention = retention
        self.max_events = max_events
        self._store = store
        self._clock = clock
        # The ring: a list with a moving head (compacted now and then), and the
        # cursors beside it for bisect; a deque's middle is O(n) to index.
        kept = list(events)[-max_events:]
        #: None: a hole, where a superseded state event was dropped (:meth:`_drop_superseded`).
        self._events: list[FeedEvent | None] = list[FeedEvent | None](kept)
        self._cursors: list[int] = [e.cursor for e in kept]
        self._head = 0
        #: Superseded state events dropped from inside the ring: their places
        #: hold None (a hole) until the ring is compacted (:meth:`_compact`).
        self._holes = 0
        #: The newest event of each device's or hint's state (:func:`_state_key`)
        #: in the ring, and the cursors of the state events a newer one of the
        #: same key supersedes (a heap, oldest first): what a full ring drops first.
        self._latest: dict[_StateKey, int] = {}
        self._superseded: list[int] = []
        for event in self._events:
            if event is not None:
                self._supersede(event)
        self._last = self._cursors[-1] if self._cursors else 0
        #: Every reader behind this lost events (the file was lost, or more
        #: extensions dropped events than _MAX_DROPPED).
        self._floor = lost
        #: The newest cursor dropped from the ring, per extension: a reader
        #: behind one it may see lost events.
        self._dropped: dict[str | None, int] = dict(dropped or {})
        if len(self._dropped) > _MAX_DROPPED:
            # A file with more (an older build's, a stall's, a tampered one):
            # folded as :meth:`_drop` folds them, so a read walks at most
            # _MAX_DROPPED, not a million of them, until the next drop.
            self._floor = max(self._floor, *self._dropped.values())
            self._dropped.clear()
        #: The highest cursor dropped or lost, whoever's: new events go above it.
        self._lost = max([self._floor, *self._dropped.values()])
        #: The newest drops recorded in ``_dropped``, and how many ever were:
        #: a waiter updates its lost cursor from those since its last look (:meth:`_lost_since`).
        self._drop_log: deque[tuple[str | None, int]] = deque(maxlen=_DROP_LOG)
        self._drops = 0
        #: The highest position handed out (:meth:`position`): new events go above it.
        self._issued = max(issued, blind)
        #: The ends of the stretches the router saw nothing in (:meth:`blind`),
        #: in order: a reader below one is told a gap on the page that passes it.
        self._blind: list[int] = [blind] if blind > 0 else []
        #: No cursor above this is handed out: the file's reservation (``reserved``,
        #: written by :meth:`open`), raised by the worker thread once a higher
        #: one is written. A cursor above ``_ask_at`` asks for the next.
        self._reserved = _UNBOUNDED if store is None else reserved
        self._ask_at = _UNBOUNDED if store is None else reserved - _RESERVE_STEP
        self._waiters: set[asyncio.Future[None]] = set()
        self._ending = False
        #: The loop readers wait on, for the worker's wake-up after a reservation.
        self._loop: asyncio.AbstractEventLoop | None = None
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
        and clients resuming from an old cursor are told of the gap. A file
        another process holds locked is sound: an error naming it, the file
        left as it is.
        """
        path = state_dir / FILENAME
        oldest = int((clock() - retention) * 1_000_000)
        first: FeedStore | None = None
        try:
            store = first = FeedStore(path, max_pending=max_events)
            events, lost, dropped = store.load(
                oldest=oldest, limit=max_events, now=int(clock() * 1_000_000)
            )
            issued = store.issued()
            top = max(issued, lost, *dropped.values(), *(e.cursor for e in events[-1:]))
            now = int(clock() * 1_000_000)
            reserved = _reserve_at_start(store, _ceiling(max(top, now)), top)
            # callrouter was away from the last run's end to now: a blind stretch,
            # marked the microsecond before the start (a cursor of this run is
            # the clock again, not one past it), or past every cursor the last
            # run may have handed out.
            blind = _mark(now - 1, top)
        except sqlite3.DatabaseError as exc:
            if first is not None:
                first.abandon()  # before its file is set aside, or the start refused
            if str(getattr(exc, "sqlite_errorname", "")).startswith(
                ("SQLITE_BUSY", "SQLITE_LOCKED")
            ):
                # Another process holds the file (a second callrouter on this
                # state_dir, an sqlite3 shell in a transaction): the database is
                # sound, and setting it aside dropped its -wal, the events not
                # yet checkpointed with it.
                raise sqlite3.OperationalError(
                    f"{path}: {exc}: another process holds the event feed's database "
                    "(a second callrouter with this state_dir, an sqlite3 shell or a "
                    "copy in progress): end it and start again"
                ) from exc
            kept = kept_db_error(path, exc)
            if kept is not None:
                # The file is sound, and kept as it is: not callrouter's to open
                # or write any more (its owner or mode changed), moved or deleted
                # while it was opened (a restore, a person: what is at the name
                # now is not the file read), a folder or a link at its name. The
                # start is refused naming it (issue 16).
                raise kept from exc
            aside = move_aside(path, path.with_name(f"{path.name}.unreadable-{int(clock())}"))
            log.warning("api feed: %s is unreadable (%s); moved to %s", path, exc, aside.name)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            store = FeedStore(path, max_pending=max_events)
            # Every cursor up to now was lost with the file.
            events, lost, dropped = [], int(clock() * 1_000_000), {}
            issued = 0
            reserved = _reserve_at_start(store, _ceiling(lost), 0)
            blind = lost
        return cls(
            retention=retention,
            max_events=max_events,
            store=store,
            clock=clock,
            events=events,
            lost=lost,
            dropped=dropped,
            issued=issued,
            reserved=reserved,
            blind=blind,
        )

    def blind(self) -> int:
        """The router saw nothing until now (its AMI event stream was lost: a
        :class:`~router.ami.stream.StreamGap`): every reader whose cursor is
        below now is told ``gap: true`` once, on the page that passes now
        (waiting readers are woken for it), whatever its scope; new events go
        above it. The mark, returned: the clock, or past cursors handed out
        ahead of it the next multiple of the reservation's step (the module's
        docstring says why neither tells anything of an event)."""
        mark = _mark(int(self._clock() * 1_000_000), max(self._last, self._lost, self._issued))
        if mark > self._ask_at:
            self._reserve(mark)
        self._issued = max(self._issued, mark)
        marks = self._blind
        marks.append(mark)  # above every mark before it: new ones only grow
        if len(marks) > _MAX_BLIND:
            del marks[0]  # folded into the next: told there, later, not earlier
        self._wake()
        return mark

    def _blind_past(self, after: int, upto: int) -> bool:
        """A blind stretch ends in ``(after, upto]``: a page from ``after`` to
        ``upto`` passes it, and its reader is told of it."""
        marks = self._blind
        if not marks or marks[-1] <= after:
            return False
        index = bisect.bisect_right(marks, after)
        return index < len(marks) and marks[index] <= upto

    def _blind_ahead(self, after: int) -> int:
        """The first blind stretch's end past ``after``, 0 for none."""
        marks = self._blind
        if not marks or marks[-1] <= after:
            return 0
        return marks[bisect.bisect_right(marks, after)]

    def position(self) -> int:
        """A cursor for "from now on" that tells nothing of any event: the clock.

        Remembered, so every later event's cursor is above it. An event
        published earlier with a cursor above the clock (it went back) is
        still after it: the reader gets it, which loses nothing.
        """
        cursor = int(self._clock() * 1_000_000)
        if cursor > self._ask_at:
            self._reserve(cursor)
        # Not above the file's ceiling (a stalled disk): a lower cursor only
        # repeats a scan, and the ceiling is a multiple of the step, which says
        # nothing of any event.
        if cursor > self._reserved:
            cursor = self._reserved
        if cursor > self._issued:
            self._issued = cursor
        return cursor

    def _reserve(self, needed: int) -> None:
        """Ask the file for a ceiling above ``needed`` with room for the next
        ``_RESERVE_STEP``: it is written long before a cursor gets near it."""
        store = self._store
        if store is None:
            return
        ceiling = _ceiling(needed)
        self._ask_at = ceiling - _RESERVE_STEP
        store.reserve(ceiling, self._reserved_to)

    def _reserved_to(self, ceiling: int) -> None:
        # On the worker thread (the one writer of _reserved while the file is
        # open); readers held back by the old ceiling are woken on their loop.
        if ceiling <= self._reserved:
            return
        self._reserved = ceiling
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def end_waits(self) -> None:
        """callrouter is stopping: every wait answers now, and none starts, so
        long polls answer and event streams end their bodies before the
        server's grace runs out (then uvicorn cancelled them, logging
        ``ERROR Cancel N running task(s)`` at each stop with a 1C client
        connected); their clients come back with their cursor."""
        self._ending = True
        self._wake()

    @property
    def ending(self) -> bool:
        """Set by :meth:`end_waits` when callrouter stops: no reader waits again."""
        return self._ending

    @property
    def waiting(self) -> int:
        """Readers waiting now."""
        return len(self._waiters)

    def __len__(self) -> int:
        return len(self._events) - self._head - self._holes

    def _supersede(self, event: FeedEvent) -> None:
        """Index ``event`` if it is a state event: the one of its key before it
        becomes superseded, the first a full ring drops."""
        key = _state_key(event)
        if key is None:
            return
        older = self._latest.get(key)
        self._latest[key] = event.cursor
        if older is not None:
            heapq.heappush(self._superseded, older)

    def _drop_superseded(self) -> int:
        """Drop the oldest superseded state event from the ring; its cursor, or
        0 when none is left. Not a gap for anyone: the newer one is kept."""
        superseded = self._superseded
        cursors = self._cursors
        events = self._events
        head = self._head
        while superseded:
            cursor = heapq.heappop(superseded)
            # A flood's oldest superseded is mostly the oldest kept: no search then.
            if cursors[head] == cursor:
                index = head
            else:
                index = bisect.bisect_left(cursors, cursor, lo=head)
                if index >= len(cursors) or cursors[index] != cursor:
                    continue  # not in the ring (defensive: the head's are popped)
            if events[index] is None:
                continue
            events[index] = None
            if index == head:
                # The head moves past it and any holes after it.
                index += 1
                while events[index] is None:  # the newest event is no hole
                    index += 1
                    self._holes -= 1
                self._head = index
            else:
                self._holes += 1
            if self._holes > 1024 or self._head > 1024:
                self._tidy()
            return cursor
        return 0

    def _tidy(self) -> None:
        """Let the dropped head and the holes go once either is a quarter of the
        list: memory then holds at most a third more than max_events, or 1024
        (at half, up to twice as many), and a read skips as few holes."""
        head = self._head
        holes = self._holes
        if holes > 1024 and holes * 4 > len(self._events) - head:
            self._compact()
        elif head > 1024 and head * 4 > len(self._events):
            if holes:
                self._compact()
            else:
                del self._events[:head]
                del self._cursors[:head]
                self._head = 0

    def _skip_holes(self) -> None:
        events = self._events
        head = self._head
        end = len(events)
        while head < end and events[head] is None:
            head += 1
            self._holes -= 1
        self._head = head

    def _compact(self) -> None:
        """The ring without its dropped head and holes (:meth:`_tidy`): O(kept)."""
        kept: list[FeedEvent | None] = [
            e for e in itertools.islice(self._events, self._head, None) if e is not None
        ]
        self._events = kept
        self._cursors = [e.cursor for e in kept if e is not None]
        self._head = 0
        self._holes = 0

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
        # Above every cursor handed out or reported lost, whatever the clock says
        # (compared one by one: a max() of four new ints was a flood's costliest line).
        cursor = int(now * 1_000_000)
        floor = self._last
        if self._lost > floor:
            floor = self._lost
        if self._issued > floor:
            floor = self._issued
        if cursor <= floor:
            cursor = floor + 1
        if cursor > self._ask_at:
            self._reserve(cursor)
        event = FeedEvent(cursor, kind, extension, call_id, now if ts is None else ts, data)
        self._events.append(event)
        self._cursors.append(cursor)
        self._last = cursor
        if kind in _STATE_KINDS:  # _supersede inlined: a flood's every event
            key = _state_key(event)
            if key is not None:
                latest = self._latest
                older = latest.get(key)
                latest[key] = cursor
                if older is not None:
                    heapq.heappush(self._superseded, older)
        gone = 0
        if len(self._events) - self._head - self._holes > self.max_events:
            # Room: first a device's or hint's state a newer one supersedes.
            gone = self._drop_superseded()
            if not gone:
                self._drop(1)
        self._expire(now)
        if self._store is not None:
            self._since_prune += 1
            prune = None
            if self._since_prune >= _PRUNE_EVERY:
                self._since_prune = 0
                prune = (self._cursors[self._head] - 1, self._floor, dict(self._dropped))
            self._store.append(event, prune=prune, gone=gone)
        self._wake()
        return cursor

    def _drop(self, count: int) -> None:
        """Drop the ``count`` oldest places of the ring (holes among them).

        A state event a newer one of its key supersedes is no gap here either
        (its age expired it, :meth:`_expire`): the newer one is kept, or, dropped
        with it, tells the gap with its own, later cursor. Expiry counted it, and
        a reader behind a flood of states an hour old was told of a gap the size
        bound never told it of (issue 16)."""
        dropped = self._dropped
        latest = self._latest
        events = self._events
        drop_log = self._drop_log
        head = self._head
        for index in range(head, head + count):  # no slice: a full feed drops one at a time
            event = events[index]
            if event is None:
                self._holes -= 1
                continue
            if latest:
                key = _state_key(event)
                if key is not None:
                    newest = latest.get(key)
                    if newest is not None and newest > event.cursor:
                        continue  # superseded: not a gap for anyone
                    if newest == event.cursor:
                        del latest[key]  # the key's last state: gone, a gap as any event
            dropped[event.extension] = event.cursor
            drop_log.append((event.extension, event.cursor))
            self._drops += 1
        self._head = head = head + count
        self._skip_holes()
        last = self._cursors[head - 1]
        if last > self._lost:
            self._lost = last
        superseded = self._superseded
        # Superseded ones dropped with the head leave the heap: it stays within the ring.
        while superseded and superseded[0] <= last:
            heapq.heappop(superseded)
        if len(dropped) > _MAX_DROPPED:
            self._floor = max(self._floor, *dropped.values())
            dropped.clear()
        self._tidy()

    def _expire(self, now: float) -> None:
        horizon = int((now - self.retention) * 1_000_000)
        head = self._head
        if head >= len(self._cursors) or self._cursors[head] >= horizon:
            return  # the oldest kept is not stale (a publication's usual case)
        stale = bisect.bisect_left(self._cursors, horizon, lo=head) - head
        if stale > 0:
            self._drop(stale)

    def _lost_after(self, after: int, visible: Visible) -> int:
        """:meth:`_lost_for` for a reader at ``after``, or 0 when nothing was
        dropped past it (whoever's): a value at most ``after`` tells it no gap
        and moves no page's cursor, and a reader that keeps up (a stream's
        next page) asked every extension's record (up to 10,000) at each page
        under a flood of ever new devices (issue 16)."""
        return self._lost_for(visible) if self._lost > after else 0

    def _lost_for(self, visible: Visible) -> int:
        """The newest cursor dropped that ``visible`` lets through (or the floor)."""
        lost = self._floor
        for extension, cursor in self._dropped.items():
            if cursor > lost and visible(extension):
                lost = cursor
        return lost

    def _lost_since(self, visible: Visible, lost: int, seen: int) -> tuple[int, int]:
        """:meth:`_lost_for` of a reader that found ``lost`` after ``seen`` drops
        (``_drops``), from the drops since (what it had grows only, and a fold
        goes into the floor): a waiter woken by each event of a flood read
        every extension's drop, up to 10,000, at each wake (issue 16). And
        the drop count now, for the next look."""
        drops = self._drops
        new = drops - seen
        if new > len(self._drop_log):  # more than the log holds: all of them
            return self._lost_for(visible), drops
        for extension, cursor in itertools.islice(reversed(self._drop_log), new):
            if cursor > lost and visible(extension):
                lost = cursor
        return max(lost, self._floor), drops

    def _ahead(self, after: int) -> int | None:
        """The clock's cursor when ``after`` is past every cursor handed out
        (events, positions, what was lost) and past the clock too: the feed
        never gave it, and no event would come after it for as long as it is
        ahead. None for any other cursor. (Compared with every extension's
        newest event: a scoped reader learns only that no event is past its
        cursor and the clock, which the clock alone would tell it but for a
        burst's microseconds.)"""
        if after <= max(self._issued, self._last, self._lost):
            return None
        now = self.position()  # remembered: _issued is now at least the clock
        if after <= max(self._issued, self._last, self._lost):
            return None
        return now

    def _scan(
        self, after: int, visible: Visible, limit: int
    ) -> tuple[list[FeedEvent], int, bool, int]:
        """Visible events after ``after``; the last cursor looked at (internal:
        it may be another's event); whether ``limit`` stopped the scan; the
        file's ceiling it stopped at (later events are left for a later look,
        and the page's cursor stays at most this: the worker may raise the
        ceiling meanwhile, past events not looked at)."""
        found: list[FeedEvent] = []
        position = after
        # Sorted by cursor: start right after what the reader has seen.
        start = bisect.bisect_right(self._cursors, after, lo=self._head)
        events = self._events
        end = len(events)
        reserved = self._reserved
        if self._last > reserved:
            end = bisect.bisect_right(self._cursors, reserved, lo=start)
        for index in range(start, end):
            event = events[index]
            if event is None:  # a superseded state event dropped
                continue
            position = event.cursor
            if visible(event.extension):
                found.append(event)
                if len(found) >= limit:
                    return found, position, True, reserved
        return found, position, False, reserved

    def _page(
        self, after: int, lost: int, scan: tuple[list[FeedEvent], int, bool, int], gap: bool
    ) -> Page:
        found, _, full, reserved = scan
        if full:
            cursor = found[-1].cursor
        else:
            # Everything was looked at: on from the clock, never from another's
            # event (its cursor says when it was). Past the reader's own gap
            # too, even when nothing is kept after it: it is told once (once
            # the file's ceiling is past it: a stalled disk may tell it twice).
            cursor = max(lost, self.position())
            # Past a blind stretch the scan passed (the clock may be behind its
            # mark, just after a crash): it is told once.
            blind = self._blind_ahead(after)
            if blind > cursor:
                cursor = blind
            if cursor > reserved:
                cursor = reserved
            cursor = max(after, cursor, found[-1].cursor if found else 0)
        if not gap and self._blind_past(after, cursor):
            gap = True
        return Page(tuple(found), cursor, gap)

    def read(self, after: int, visible: Visible = _everything, limit: int = 100) -> Page:
        """Events after cursor ``after`` that ``visible`` lets through, at most ``limit``."""
        self._expire(self._clock())
        after = max(after, 0)
        ahead = self._ahead(after)
        if ahead is not None:
            after = ahead
        lost = self._lost_after(after, visible)
        gap = after < lost or ahead is not None
        return self._page(after, lost, self._scan(after, visible, limit), gap)

    async def wait(
        self, after: int, visible: Visible = _everything, timeout: float = 25.0, limit: int = 100
    ) -> Page:
        """Like :meth:`read`, but waits up to ``timeout`` seconds for an event to show.

        Answers at once when there is one, else when one the reader may see is
        published, else at the timeout: another's event never ends the wait.
        A cursor ahead of the feed (:meth:`_ahead`) is answered at once, a gap.
        """
        self._expire(self._clock())
        after = max(after, 0)
        ahead = self._ahead(after)
        if ahead is not None:
            after = ahead
        lost = self._lost_after(after, visible)
        seen = self._drops
        gap = after < lost or ahead is not None
        scan = self._scan(after, visible, limit)
        if self._ending or ahead is not None or self._blind_told(after):
            # callrouter is stopping (end_waits), the cursor was not ours, or the
            # reader is behind a blind stretch: told at once, not at its timeout.
            timeout = 0.0
        if scan[0] or timeout <= 0:
            return self._page(after, lost, scan, gap)
        loop = asyncio.get_running_loop()
        self._loop = loop
        deadline = loop.time() + timeout
        while not scan[0]:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                break
            finally:
                self._waiters.discard(waiter)
            if self._ending:
                break
            # On from where the last look ended: others' events are not scanned
            # twice. One the reader may see dropped meanwhile is a gap.
            self._expire(self._clock())
            lost, seen = self._lost_since(visible, lost, seen)
            gap = gap or scan[1] < lost
            scan = self._scan(scan[1], visible, limit)
            if self._blind_told(after):
                break  # a blind stretch ended (:meth:`blind`): told now
        return self._page(after, lost, scan, gap)

    def _blind_told(self, after: int) -> bool:
        """A page from ``after`` now would pass a blind stretch's end (one not
        held back by the file's ceiling, which would only answer empty)."""
        blind = self._blind_ahead(after)
        return 0 < blind <= self._reserved

    async def put_back(self) -> str | None:
        """The file deleted or replaced while the feed runs: written again from
        the open one (:meth:`FeedStore.put_back`); ``"deleted"``, ``"replaced"``
        or None (where it was, or no file)."""
        store = self._store
        if store is None:
            return None
        return await asyncio.wrap_future(store.put_back())

    async def aclose(self) -> None:
        """Write what is queued and close the file; the ring stays readable."""
        store, self._store = self._store, None
        if store is not None:
            # Every cursor handed out is at most this: the events (all written
            # now, or lost with a batch the file could not take) and positions.
            top = max(self._issued, self._last, self._lost)
            await asyncio.to_thread(store.close, issued=top)
            # Nothing is written any more: nothing to hold back for.
            self._reserved = self._ask_at = _UNBOUNDED
