"""Call history into 1C, off the routing path and never lost silently.

Events go to a SQLite file first and to 1C afterwards, so neither a 1C outage
nor a callrouter restart loses them, and a call never waits for 1C. The queue
is idempotent by the event's ``event_id`` (by (call_id, event) for a body
without one) on our side too: a repeated enqueue of the same fact, a replay
after a gap included, is ignored even after it was delivered.

Order is kept per call: a call's next event is posted only after 1C answered
the one before (``duplicate: true`` included), so a ``hangup`` never overtakes
its ``ringing``. A post that timed out may still be finished by 1C later, even
after the retry and the call's next event; that late copy is a repeat of
(call_id, event), which 1C's idempotency ignores, so the first copy of each
event 1C records comes in order. Calls do not wait for each other beyond one
failed post: the oldest waiting event of each call is sent, those that failed
least often first, so one event 1C keeps failing cannot hold back everyone's
history for the days it is retried.

The sender backs off exponentially while 1C is unavailable, with one WARNING
when delivery starts failing (the HTTP status or what went wrong, and the
URL's path; never the body) and one INFO when 1C takes events again, not a
line per retry. It drops an
event, with a WARNING naming the call, the event and its age, once it has
waited ``max_age`` (3 days by default: 1C servers are down for hours during
updates), when 1C rejects it as invalid (400), or when the file holds
``max_rows`` rows of undelivered events (the bound on its size on disk).

SQLite never runs on the event loop: another process holding a write lock
(a backup tool, an admin's ``sqlite3`` shell) used to freeze all routing for
the 5 s busy timeout per write. :class:`HistorySender` does every database
call on one worker thread of its own, so the routing path only hands an event
over and returns; a locked database is retried on that thread (short busy
timeout, backoff) until the lock goes, and no event is lost. WAL mode with
``synchronous=NORMAL`` keeps each commit cheap.

The file holds callers' numbers: it is created ``0600`` in a ``0700``
directory (SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files the
database file's mode), and pruned on the sender's cadence, not only at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from callrouter_onec.errors import OneCBadRequest, OneCUnavailable
from callrouter_onec.missed import MISSED_MAX_AGE, MISSED_MAX_ROWS, MissedBook, MissedFact
from callrouter_onec.models import EVENT_FIELDS, EventAck
from callrouter_onec.state_file import WrittenBackFile
from router import (
    FileOutOfSight,
    Supervised,
    check_db_writable,
    peek_db,
    seen_identity,
    set_aside_odd_db_files,
    state_db_error,
)

__all__ = [
    "BUSY_TIMEOUT",
    "EVENT_KINDS",
    "FILENAME",
    "MAX_AGE",
    "MAX_ROWS",
    "CallRecord",
    "HistoryQueue",
    "HistorySender",
    "QueuedEvent",
    "build_event",
    "wait_set",
]

log = logging.getLogger(__name__)

EventKind = Literal["ringing", "answered", "hangup", "missed", "transferred"]
EVENT_KINDS: tuple[EventKind, ...] = ("ringing", "answered", "hangup", "missed", "transferred")
_FINAL = frozenset({"hangup", "missed"})
FILENAME = "onec-history.sqlite3"
#: Seconds SQLite itself waits for another connection's lock before the writer
#: thread backs off and retries; short, so stopping is never held up for long.
BUSY_TIMEOUT = 0.25
#: Rows the file holds at most (about 1 KB each): undelivered events first, then
#: the newest delivered and dropped ones.
MAX_ROWS = 100_000
#: Seconds an undelivered event is retried before it is dropped (3 days).
MAX_AGE = 3 * 86400.0
#: Drop lines written one by one per pruning; the rest are counted in one line.
_DROP_LINES = 20


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


def build_event(
    kind: EventKind, call: CallRecord, *, ts: float | None = None, tz: tzinfo | None = None
) -> dict[str, Any]:
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
    moment = {
        "ringing": call.started_at,
        "answered": call.answered_at,
        "hangup": call.ended_at,
        "missed": call.ended_at,
    }.get(kind)
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
        "owner": None,
        "talk_seconds": None,
        "transfer": None,
        "hangup_by": None,
        "replayed": False,
        "closed_by": None,
        "closed_at": None,
        "closed_direction": None,
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


class HistoryQueue(WrittenBackFile):
    """The durable queue: one SQLite file, one row per (call_id, event).

    Delivered and dropped rows are kept for ``retention`` seconds so that a late
    duplicate is still recognised. The file holds at most ``max_rows`` rows:
    pruning drops the oldest undelivered events beyond that (logged), and keeps
    only as many delivered and dropped ones as there is room left.
    Every method blocks on SQLite (up to :data:`BUSY_TIMEOUT` on a lock held
    elsewhere, then ``sqlite3.OperationalError``): call them off the event loop,
    as :class:`HistorySender` does. They are safe from any thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention: float = 7 * 86400,
        max_rows: int = MAX_ROWS,
        clock: Callable[[], float] = time.time,
        missed_max_age: float = MISSED_MAX_AGE,
        missed_max_rows: int = MISSED_MAX_ROWS,
    ) -> None:
        target = Path(path)
        if target.is_dir():
            target = target / FILENAME
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = target
        self.retention = retention
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        #: What :meth:`counts` found last (shown while the queue is busy).
        self._counts: dict[str, int] = {}
        #: Pending events and when the oldest was queued, kept under the lock
        #: on every write here and published in one assignment: :meth:`depth`
        #: reads it without SQLite or the lock (``/metrics``, on the loop).
        self._depth: tuple[int, float | None] = (0, None)
        #: The id of that oldest pending event (None: none known).
        self._oldest_id: int | None = None
        self._missed_limits = (missed_max_age, missed_max_rows)
        #: What :meth:`put_back` found ("deleted", "replaced") when the file it
        #: wrote back could not be opened; None: the connection is open.
        self._unopened: str | None = None
        #: The copy :meth:`put_back` could not move in place and opened instead
        #: (it holds every row); None: the connection is on ``path``.
        self._at: Path | None = None
        set_aside_odd_db_files(target)  # no link followed, no FIFO opened (issue 16)
        create_private(target)
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            # Another user's file SQLite opened read-only refuses the start naming
            # it: every event's write failed all run (issue 16).
            raise state_db_error(target, exc) from exc
        self.prune()

    def _connect(self) -> None:
        """Open the file; nothing changes unless all of it succeeds (the
        connection, the missed calls and the file's identity go together)."""
        target = self.path if self._at is None else self._at
        db = sqlite3.connect(
            target, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            check_db_writable(db)  # not another user's, opened read-only
            converted = _migrate(db)
            db.executescript(_SCHEMA)
            db.execute(_ROLLBACK_TRIGGER)
            max_age, max_rows = self._missed_limits
            missed = MissedBook(db, max_age=max_age, max_rows=max_rows)
            #: The file the connection has open (device, inode): see :meth:`put_back`.
            identity = seen_identity(target)
            pending = db.execute("SELECT count(*) FROM events WHERE state = 'pending'").fetchone()
            first = _first_pending(db)
        except BaseException:
            db.close()
            raise
        self._db, self.missed, self._file = db, missed, identity
        self._unopened = None
        self._counted(int(pending[0]), first)
        if converted is not None:
            # Said once, at the start that changed the file: an administrator
            # upgrading read nothing of it, and a rollback needs to know (issue 16).
            log.info(
                "onec: history file %s from a version before event ids converted: %d "
                "rows kept, %d of them pending (docs/operations.md, Upgrading)",
                target,
                converted,
                int(pending[0]),
            )

    def _counted(self, pending: int, first: tuple[int, float | None] | None) -> None:
        """Under the lock: the pending count and the oldest pending row, as read."""
        if first is None:
            self._oldest_id, self._depth = None, (0, None)
        else:
            self._oldest_id, self._depth = first[0], (max(pending, 1), first[1])

    def depth(self) -> tuple[int, float | None]:
        """Events waiting for 1C and the time the oldest was queued (None: none).

        Read from memory, never from SQLite and without the lock (one tuple,
        replaced whole), so any thread may ask at any time (``/metrics``,
        rendered in a worker thread beside the loop): kept on
        every insert and every event leaving ``pending`` through this object,
        and counted from the file when it is opened, at each :meth:`prune`
        and at each :meth:`recount`, which brings in what another process
        wrote meanwhile (``callrouter history replay``, which also sends).
        """
        return self._depth

    def recount(self) -> tuple[int, float | None]:
        """Count the pending events from the file again (blocks: off the loop)."""
        with self._lock:
            if self._unopened is None:  # not reopened here: kept as they were
                self._recount()
            return self._depth

    def _recount(self) -> None:
        pending = self._db.execute("SELECT count(*) FROM events WHERE state = 'pending'")
        self._counted(int(pending.fetchone()[0]), _first_pending(self._db))

    def _added(self, row_id: int | None, created: float) -> None:
        """Under the lock: one pending event inserted."""
        depth, oldest = self._depth
        if self._oldest_id is None and row_id is not None:
            self._oldest_id, oldest = row_id, created
        self._depth = (depth + 1, oldest)

    def _left(self, row_id: int) -> None:
        """Under the lock: a pending event was sent or dropped. The oldest is
        looked up again (by the index on state and id) when it was that one."""
        depth, oldest = self._depth
        depth -= 1
        if row_id != self._oldest_id and depth > 0:
            self._depth = (depth, oldest)
            return
        first = _first_pending(self._db)
        self._counted(depth if first is None else max(depth, 1), first)

    @property
    def unopened(self) -> str | None:
        """``"deleted"`` or ``"replaced"`` while the file :meth:`put_back`
        wrote back for that reason cannot be opened; None: the file is open."""
        return self._unopened

    def _ready(self) -> None:
        """Under the lock: the file :meth:`put_back` wrote back and could not
        open (a nearly full disk) is opened now, or ``sqlite3.OperationalError``
        says why not, which the sender retries (the event waits in memory):
        the closed connection raised ``ProgrammingError``, never retried, so
        each call event with a missed-call fact was lost with a traceback."""
        if self._unopened is None:
            return
        try:
            if self._at is None:
                create_private(self.path)  # deleted again meanwhile: made 0600 first
            self._connect()
        except (OSError, sqlite3.Error) as exc:
            if self._at is not None:
                raise sqlite3.OperationalError(
                    f"{self.path} was written again from the open file as {self._at}, "
                    f"which could not take its place and cannot be opened: {exc}"
                ) from exc
            raise sqlite3.OperationalError(
                f"{self.path} was written back but cannot be opened again: {exc}"
            ) from exc

    def put_back(self) -> str | None:
        """Write the file again where it belongs when it was deleted or replaced
        while open; returns ``"deleted"`` or ``"replaced"``, or None when it is
        where it was.

        SQLite goes on with the file it has open, deleted or not: the events not
        yet sent, the ids sent and the open missed calls were lost at the next
        start, and nothing said so. The open file is copied to its place
        (``VACUUM INTO``, :func:`router.write_back`) and opened there; a file
        put in its place is moved aside first, as ``NAME.replaced-TIME``.

        The open connection is closed before the copy is opened (they would
        share the ``-wal`` and ``-shm`` files by name): when opening the copy
        fails, the copy holds every row and is the file in use, opened again
        at the next call (:meth:`_ready`, each raising ``OperationalError``
        until it opens), and the next look returns what was found. When the
        copy cannot be moved in place (the folder made read-only) it is opened
        where it is (``_at``), and the next look moves it in place.
        """
        with self._lock:
            return self._put_back_open_file()

    def __enter__(self) -> HistoryQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, payload: Mapping[str, Any]) -> bool:
        """Store an event body; ``False`` if its event id was already queued.

        The key is ``event_id`` when the body has one, else (call_id, event):
        a replayed fact already queued or sent is not sent again.
        """
        with self._lock:
            self._ready()
            return self._insert(payload)

    def enqueue_call_event(self, payload: Mapping[str, Any], fact: MissedFact | None) -> int:
        """Store a call event and settle missed calls with it; returns events queued.

        One transaction, so an event and the ``missed_closed`` it causes are
        never half stored. A repeated event id changes nothing, not even the
        open missed calls: what was settled once is not settled again.
        """
        with self._lock:
            self._ready()
            counted = (self._depth, self._oldest_id)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                added = 0
                if self._insert(payload):
                    added = 1
                    if fact is not None:
                        for closed in self.missed.settle(payload, fact, self._clock()):
                            added += self._insert(closed)
                self._db.execute("COMMIT")
            except BaseException:
                _roll_back(self._db)
                self._depth, self._oldest_id = counted
                raise
            return added

    def _insert(self, payload: Mapping[str, Any]) -> bool:
        call_id, event = payload.get("call_id"), payload.get("event")
        if not isinstance(call_id, str) or not isinstance(event, str):
            raise ValueError("an event needs string 'call_id' and 'event'")
        event_id = payload.get("event_id")
        if event_id is not None and (not isinstance(event_id, str) or not event_id):
            raise ValueError("an event's 'event_id' must be a non-empty string")
        key = event_id or f"{call_id}/{event}"
        body = json.dumps(payload, ensure_ascii=False)
        created = self._clock()
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO events (event_id, call_id, event, payload, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, call_id, event, body, created),
        )
        if cursor.rowcount != 1:
            return False
        self._added(cursor.lastrowid, created)
        return True

    def pending(self, limit: int = 100) -> list[QueuedEvent]:
        """Events not yet delivered, oldest first (so 1C sees a call's events in order)."""
        with self._lock:
            self._ready()
            rows = self._db.execute(
                "SELECT id, call_id, event, payload, created, attempts FROM events "
                "WHERE state = 'pending' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return self._queued(rows)

    def due(self, limit: int = 100) -> list[QueuedEvent]:
        """The next event of each call: its oldest undelivered one.

        Those that failed least often come first, then the oldest: a call's
        events go out in order, and an event 1C keeps failing goes last.
        """
        with self._lock:
            self._ready()
            rows = self._db.execute(
                "SELECT id, call_id, event, payload, created, attempts FROM events AS e "
                "WHERE state = 'pending' AND NOT EXISTS (SELECT 1 FROM events AS p WHERE "
                "p.call_id = e.call_id AND p.state = 'pending' AND p.id < e.id) "
                "ORDER BY attempts, id LIMIT ?",
                (limit,),
            ).fetchall()
            return self._queued(rows)

    def _queued(self, rows: list[Any]) -> list[QueuedEvent]:
        """The rows as events, under the lock. A row this queue cannot have
        written (damaged or tampered: a payload that is no JSON object, a time
        that is no number) is marked dropped with an ERROR naming the file:
        read as it was, it raised in every ``due`` and stopped every delivery
        to 1C for good (a pending row leaves only by delivery, by expiry after
        a failed post, or past ``max_rows``)."""
        events: list[QueuedEvent] = []
        for row_id, call_id, event, body, created, attempts in rows:
            try:
                payload = json.loads(body)
            except (TypeError, ValueError, RecursionError):
                payload = None
            if (
                isinstance(payload, dict)
                and isinstance(call_id, str)
                and isinstance(event, str)
                and isinstance(created, int | float)
                and math.isfinite(created)
                and isinstance(attempts, int)
            ):
                events.append(QueuedEvent(row_id, call_id, event, payload, created, attempts))
                continue
            log.error(
                "1C history: %s holds event %d (%.40r of call %.40r) that callrouter "
                "cannot have written (damaged or tampered); dropped",
                self.path.name,
                row_id,
                event,
                call_id,
            )
            self._db.execute(
                "UPDATE events SET state = 'dropped', updated = ?, detail = ? WHERE id = ?",
                (self._clock(), "not a row callrouter writes", row_id),
            )
            self._left(row_id)
        return events

    def open_missed(self, number: str | None = None) -> list[dict[str, Any]]:
        """Missed calls not closed yet (of the normalized ``number``), oldest first."""
        with self._lock:
            self._ready()
            return self.missed.open_calls(number)

    def now(self) -> float:
        """The queue's clock (``created`` and ``updated`` are on it)."""
        return self._clock()

    def pending_count(self) -> int:
        return self.counts().get("pending", 0)

    def counts(self, *, wait: float | None = None) -> dict[str, int]:
        """Rows by state. ``wait``: seconds at most to wait for the queue
        (another thread writing it, :meth:`put_back` copying the whole file),
        then the counts taken last: what the plugin's status, asked on the
        event loop, shows rather than block the loop for the copy; and those
        while the file written back is not open yet (:meth:`put_back`)."""
        if not self._lock.acquire(timeout=-1 if wait is None else max(0.0, wait)):
            return dict(self._counts)
        try:
            if self._unopened is not None:  # not reopened here: the loop asks too
                return dict(self._counts)
            rows = self._db.execute("SELECT state, count(*) FROM events GROUP BY state")
            self._counts = dict(rows)
            return dict(self._counts)
        finally:
            self._lock.release()

    def mark_sent(self, row_id: int, detail: str | None = None) -> None:
        self._set(row_id, "sent", detail)

    def mark_dropped(self, row_id: int, detail: str) -> None:
        self._set(row_id, "dropped", detail)

    def mark_failed(self, row_id: int, detail: str) -> None:
        with self._lock:
            self._ready()
            self._db.execute(
                "UPDATE events SET attempts = attempts + 1, updated = ?, detail = ? WHERE id = ?",
                (self._clock(), detail, row_id),
            )

    def expired(self, max_age: float) -> list[QueuedEvent]:
        """Pending events enqueued more than ``max_age`` seconds ago."""
        cutoff = self._clock() - max_age
        return [e for e in self.pending(limit=-1) if e.created <= cutoff]

    def frequent_callers(self, limit: int = 100, since: float | None = None) -> list[str]:
        """The customers who rang most often (``ringing`` events of inbound calls),
        most frequent first.

        What the warm-up job refreshes before the working day: the history we
        already keep for 1C doubles as the list of callers worth caching. Only
        the retained rows count (``retention``, a week by default). An outbound or
        internal call's ``from`` is the extension that dialled, never looked up:
        left out, so it takes no customer's place (an event without a direction,
        a rule's ``notify``, counts as inbound).
        """
        cutoff = self._clock() - self.retention if since is None else since
        with self._lock:
            self._ready()
            rows = self._db.execute(
                "SELECT json_extract(payload, '$.from') AS number, "
                "count(DISTINCT call_id) AS calls FROM events WHERE event = 'ringing' "
                "AND coalesce(json_extract(payload, '$.direction'), 'in') = 'in' "
                "AND created >= ? AND number IS NOT NULL "
                "AND number != '' GROUP BY number ORDER BY calls DESC, max(id) DESC LIMIT ?",
                (cutoff, limit),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def prune(self) -> int:
        """Keep the file within ``max_rows`` rows and ``retention``; returns rows removed.

        Undelivered events beyond ``max_rows`` (the oldest) are dropped with a
        WARNING each: the queue's size on disk is bounded even when 1C stays
        away for days.
        """
        now = self._clock()
        with self._lock:
            self._ready()
            self.missed.prune(now)
            old = self._db.execute(
                "DELETE FROM events WHERE state != 'pending' AND updated < ?",
                (now - self.retention,),
            ).rowcount
            pending = self._db.execute(
                "SELECT count(*) FROM events WHERE state = 'pending'"
            ).fetchone()[0]
            full: list[tuple[str, str, float]] = []
            if pending > self.max_rows:
                full = self._db.execute(
                    "SELECT call_id, event, created FROM events WHERE state = 'pending' "
                    "ORDER BY id LIMIT ?",
                    (pending - self.max_rows,),
                ).fetchall()
                self._db.execute(
                    "UPDATE events SET state = 'dropped', updated = ?, detail = ? WHERE id IN "
                    "(SELECT id FROM events WHERE state = 'pending' ORDER BY id LIMIT ?)",
                    (now, "queue full (events_max_rows)", pending - self.max_rows),
                )
            room = max(0, self.max_rows - min(pending, self.max_rows))
            over = self._db.execute(
                "DELETE FROM events WHERE state != 'pending' AND id NOT IN (SELECT id FROM "
                "events WHERE state != 'pending' ORDER BY id DESC LIMIT ?)",
                (room,),
            ).rowcount
            self._counted(min(pending, self.max_rows), _first_pending(self._db))
        for call_id, event, created in full[:_DROP_LINES]:
            log.warning(
                "1C history: dropped %s of call %s, %s old, undelivered: the queue "
                "holds at most %d rows (events_max_rows)",
                event,
                call_id,
                _age(now - created),
                self.max_rows,
            )
        if len(full) > _DROP_LINES:
            log.warning(
                "1C history: dropped %d more undelivered events: the queue holds at "
                "most %d rows (events_max_rows)",
                len(full) - _DROP_LINES,
                self.max_rows,
            )
        return old + over

    def _set(self, row_id: int, state: str, detail: str | None) -> None:
        with self._lock:
            self._ready()
            was = self._db.execute("SELECT state FROM events WHERE id = ?", (row_id,)).fetchone()
            self._db.execute(
                "UPDATE events SET state = ?, updated = ?, detail = ? WHERE id = ?",
                (state, self._clock(), detail, row_id),
            )
            if was is not None and was[0] == "pending" and state != "pending":
                self._left(row_id)


_SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        call_id TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        updated REAL,
        detail TEXT
    );
    CREATE INDEX IF NOT EXISTS events_state ON events (state, id);
    CREATE INDEX IF NOT EXISTS events_call ON events (call_id, state, id);
"""


#: A version from before event ids (November 2026, callrouter 0.1) run again on
#: this file after a rollback without ``state restore`` inserts rows with no
#: ``event_id`` (``INSERT OR IGNORE INTO events (call_id, event, payload,
#: created)``): NOT NULL made SQLite drop every one of them without a word, so
#: none of that run's call events reached 1C (issue 16). This trigger stores
#: such a row under its old key, ``call_id/event``, as :func:`_migrate` keys the
#: rows of that version's file, and a repeat of the key stays one row, as it
#: was there. It fires before the NOT NULL check; this version always gives an
#: ``event_id``, so its own inserts never meet it.
_ROLLBACK_TRIGGER = """
    CREATE TRIGGER IF NOT EXISTS events_without_id BEFORE INSERT ON events
    WHEN NEW.event_id IS NULL
    BEGIN
        INSERT OR IGNORE INTO events (event_id, call_id, event, payload, created, attempts,
                                      state, updated, detail)
        VALUES (NEW.call_id || '/' || NEW.event, NEW.call_id, NEW.event, NEW.payload,
                NEW.created, coalesce(NEW.attempts, 0), coalesce(NEW.state, 'pending'),
                NEW.updated, NEW.detail);
        SELECT RAISE(IGNORE);
    END
"""


def _first_pending(db: sqlite3.Connection) -> tuple[int, float | None] | None:
    """The oldest pending row's id and creation time (None: a time that is no
    number, which :meth:`HistoryQueue.due` drops); None when nothing is pending."""
    row = db.execute(
        "SELECT id, created FROM events WHERE state = 'pending' ORDER BY id LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    created = row[1]
    if isinstance(created, int | float) and math.isfinite(created):
        return int(row[0]), float(created)
    return int(row[0]), None


def _migrate(db: sqlite3.Connection) -> int | None:
    """A file from before event ids (one row per (call_id, event)) keeps every row:
    their number, or None when the file needed no conversion.

    SQLite cannot drop a UNIQUE constraint, so the table is copied once; the
    old key becomes the event id, which is what the double and 1C fall back to
    for a body without ``event_id``.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if not columns or "event_id" in columns:
        return None
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE events RENAME TO events_before_ids")
        db.execute("DROP INDEX IF EXISTS events_state")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT INTO events (id, event_id, call_id, event, payload, created, attempts, "
            "state, updated, detail) SELECT id, call_id || '/' || event, call_id, event, "
            "payload, created, attempts, state, updated, detail FROM events_before_ids"
        )
        kept = db.execute("SELECT count(*) FROM events").fetchone()[0]
        db.execute("DROP TABLE events_before_ids")
        db.execute("COMMIT")
    except BaseException:
        _roll_back(db)
        raise
    return int(kept)


def conversion(path: Path) -> str | None:
    """What ``callrouter run`` would convert in the history file ``path`` at
    start (:func:`_migrate`), for ``callrouter check``: a line naming the file,
    or None when it needs nothing (or is not there). Read without writing
    anything (:func:`router.peek_db`: no ``-wal`` or ``-shm`` made beside it).
    Raises ``OSError`` or ``sqlite3.Error`` for a file that cannot be read."""
    target = path / FILENAME if path.is_dir() else path
    with peek_db(target) as db:
        if db is None:
            return None
        columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
        if not columns or "event_id" in columns:
            return None
        rows, pending = db.execute(
            "SELECT count(*), coalesce(sum(state = 'pending'), 0) FROM events"
        ).fetchone()
    return (
        f"{target}: history file from a version before event ids: callrouter run converts "
        f"it at start, keeping its {int(rows)} rows, {int(pending)} of them pending "
        "(docs/operations.md, Upgrading)"
    )


def _roll_back(db: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already: on a full disk
    (``SQLITE_FULL``) or an I/O error it rolls back itself, and a ``ROLLBACK``
    then raises "cannot rollback - no transaction is active", which hid the
    error that said what is wrong ("database or disk is full")."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _age(seconds: float) -> str:
    """``3d 2h``, ``5m 3s``: an age an operator reads at a glance."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def create_private(target: Path) -> None:
    """Create the database file ``0600`` before SQLite opens it.

    SQLite creates its ``-wal``, ``-shm`` and ``-journal`` files with the mode
    of the database file, so this one ``open`` covers all four, with no
    process-wide umask change (which would race other threads creating files).
    An existing file is tightened too (earlier versions created it ``0644``),
    by its name, never opened: closing any descriptor of a database file drops
    every POSIX lock this process holds on it, its open SQLite connections' too,
    and the next other process to close the file (a ``callrouter`` command)
    would take itself for the last, checkpoint and delete the WAL this one goes
    on writing into (as ``router.RecordingStore`` did, issue 16).
    """
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # a new file: no connection of this process has it open
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):  # absent, or not ours to change
            os.chmod(f"{target}{suffix}", 0o600)


Poster = Callable[[Mapping[str, Any]], Awaitable[EventAck]]


#: How often the sender looks that its file is still where it belongs, in seconds.
FILE_CHECK_EVERY = 5.0

#: Call events handed to the database thread and not yet stored, at most: while
#: the file cannot be written (a full or read-only state folder) they wait in
#: memory, and past this many new ones are dropped, said once, rather than grow
#: without bound (``callrouter history replay`` rebuilds them from CEL).
MAX_WAITING = 10_000


async def wait_set(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass, and let a cancellation through.

    Not ``asyncio.wait_for(event.wait(), ...)``: on Python 3.11 it returns
    normally when the event is set in the same loop step as the task is
    cancelled, and the sending loop went on: :meth:`HistorySender.stop` then
    waited for ever, and ``callrouter history replay`` ended on the shutdown
    hook's 10 s cut-off, "plugin 'onec' failed in callrouter_shutdown" (issue
    16). ``asyncio.timeout`` raises ``TimeoutError`` only for its own expiry.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class HistorySender:
    """Delivers the queue to 1C in the background (``post`` is ``OneCClient.post_event``).

    Pending rows from an earlier run are sent as soon as :meth:`start` is called.
    All SQLite work runs on one worker thread (``onec-history-db``), in order,
    so an event submitted before a read is seen by it. The sending loop is
    :class:`router.Supervised`: whatever 1C answers, it
    logs, backs off and goes on, and if it dies anyway it is logged and
    restarted. ``prune_interval`` is how often old rows are pruned.
    """

    def __init__(
        self,
        queue: HistoryQueue,
        post: Poster,
        *,
        max_age: float = MAX_AGE,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        batch: int = 100,
        idle_poll: float = 5.0,
        prune_interval: float = 3600.0,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.queue = queue
        self.max_waiting = max_waiting
        self.max_age = max_age
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = batch
        self.idle_poll = idle_poll
        self.prune_interval = prune_interval
        self._post = post
        self._wake = asyncio.Event()
        self._retry = asyncio.Event()
        self._runner = Supervised(
            "onec-history", self._run, restart_delay=base_delay, max_delay=max_delay, logger=log
        )
        #: The file's own schedule: a batch to a slow 1C (100 rows, each up to
        #: the client's timeout) held the look between batches for minutes.
        self._file_watch = Supervised(
            "onec-history-file",
            self._watch_file,
            restart_delay=base_delay,
            max_delay=max_delay,
            logger=log,
        )
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._last_prune = time.monotonic()
        self.failures = 0
        #: Since when delivery fails (monotonic), and the failed posts since then:
        #: one WARNING when it starts, one INFO when it recovers.
        self._failing_since: float | None = None
        self._failed_posts = 0
        #: Events handed over and not stored yet, and those dropped past
        #: ``max_waiting`` in the episode of drops going on, since when
        #: (guarded by ``_waiting_lock``: the loop and the database thread
        #: both count). An episode ends when half of ``max_waiting`` is
        #: free again: one ERROR when it starts, one INFO with the count when
        #: it ends, also while the file is merely slow (no write failing).
        self._waiting = 0
        self._dropped = 0
        self._dropping_since = 0.0
        self._waiting_lock = threading.Lock()
        #: Why storing fails (None: it does not): said once, and once more when
        #: an event is stored again (database thread only).
        self._store_failing: str | None = None
        self._store_failing_since = 0.0
        #: Events given up on at shutdown because the file could not be written.
        self._lost = 0
        self._file_checked = time.monotonic()
        #: Why putting the file back failed last (said once per reason).
        self._put_back_failing: str | None = None

    @property
    def running(self) -> bool:
        """Is the sending loop alive (it is restarted if it ever dies)?"""
        return self._runner.running

    @property
    def restarts(self) -> int:
        return self._runner.restarts

    @property
    def waiting(self) -> int:
        """Events handed over and not stored in the file yet (held in memory:
        a stop gives up on those it cannot store, one ERROR and a total)."""
        with self._waiting_lock:
            return self._waiting

    @property
    def store_failing(self) -> str | None:
        """Why storing fails now (a full or read-only folder); None: it does not."""
        return self._store_failing

    def submit(self, payload: Mapping[str, Any]) -> bool:
        """Hand an event to the database thread and return at once.

        ``True`` means accepted; a repeat of a (call_id, event) already queued
        or delivered is recognised on the database thread and ignored there.
        Never waits for SQLite: this runs on the routing path.
        """
        call_id, event = payload.get("call_id"), payload.get("event")
        if not isinstance(call_id, str) or not isinstance(event, str):
            raise ValueError("an event needs string 'call_id' and 'event'")
        with contextlib.suppress(RuntimeError):  # no loop (a sync caller): keep the last
            self._loop = asyncio.get_running_loop()
        return self._hand_over(payload, None)

    def submit_call_event(self, payload: Mapping[str, Any], fact: MissedFact | None) -> None:
        """As :meth:`submit`, and settle missed calls with it (:mod:`.missed`) in one go."""
        call_id, event = payload.get("call_id"), payload.get("event")
        if not isinstance(call_id, str) or not isinstance(event, str):
            raise ValueError("an event needs string 'call_id' and 'event'")
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._hand_over(payload, fact)

    def _hand_over(self, payload: Mapping[str, Any], fact: MissedFact | None) -> bool:
        """Queue the write on the database thread, unless ``max_waiting`` wait already."""
        first = False
        with self._waiting_lock:
            full = self._waiting >= self.max_waiting
            if full:
                self._dropped += 1
                first = self._dropped == 1
                if first:
                    self._dropping_since = time.monotonic()
            else:
                self._waiting += 1
        if not full:
            self._worker().submit(self._store, dict(payload), fact)
            return True
        if first:
            log.error(
                "1C history: %s of call %s dropped, and every call event after it until "
                "half of the %d waiting in memory are stored in %s (%s); one INFO counts "
                "them then; callrouter history replay rebuilds them from CEL",
                payload["event"],
                payload["call_id"],
                self.max_waiting,
                self.queue.path,
                self._store_failing or "the database is slow",
            )
        return False

    def retry_now(self) -> None:
        """Cut a backoff short: something (a successful ping) says 1C is back.

        New events only wake an idle sender; they do not end a backoff, or a
        busy PBX would hammer a dead 1C with one retry per call.
        """
        self._retry.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing.clear()
        self._runner.start()
        self._file_watch.start()

    async def stop(self) -> None:
        """Stop sending and finish the writes handed over; never raises.

        Undelivered rows stay on disk for the next start. A write still waiting
        for a lock held elsewhere gives up (logged) rather than hold shutdown.
        """
        await self._runner.stop()
        await self._file_watch.stop()
        self._closing.set()  # a write waiting for the file gives up: the check can run
        # The file deleted since the last look (up to FILE_CHECK_EVERY ago) was
        # lost with the process: what it held not yet sent is gone at the next start.
        self._file_checked = -math.inf
        try:
            await self._check_file_when_due()
        except Exception:
            log.exception("1C history: looking at %s while stopping failed", self.queue.path)
        executor, self._executor = self._executor, None
        if executor is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(executor, _nothing)
            except Exception:
                log.exception("1C history: the database thread failed while stopping")
            finally:
                executor.shutdown(wait=False)
        if self._lost > 1:
            log.error(
                "1C history: %d call events in all not stored in %s before shutdown",
                self._lost,
                self.queue.path,
            )
        self._lost = 0
        with self._waiting_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            self._drops_ended(dropped, stopping=True)

    async def flush(self) -> None:
        """Wait until every event submitted so far is in the database (tests, status)."""
        await self._db(_nothing)

    async def drain(self, within: float) -> bool:
        """Wait until nothing is pending (tests, shutdown); ``False`` if ``within`` s pass first."""
        end = time.monotonic() + within
        while True:
            # Bounded too: behind a write that waits for a full or read-only
            # folder the count never came, and a stop waited for the plugin
            # hook's cut-off (10 s) instead of drain_timeout.
            try:
                pending = await asyncio.wait_for(
                    self._db(self.queue.pending_count), max(0.0, end - time.monotonic())
                )
            except TimeoutError:
                return False
            if not pending:
                return True
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.02)

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="onec-history-db")
        return self._executor

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one queue method on the database thread (in submission order)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._worker(), functools.partial(fn, *args, **kwargs)
        )

    def _store(self, payload: dict[str, Any], fact: MissedFact | None = None) -> None:
        """On the database thread: insert, waiting out a lock held by another
        process or a file that cannot be written (a full or read-only folder)."""
        try:
            self._store_retrying(payload, fact)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
                dropped = 0
                if self._dropped and self._waiting <= self.max_waiting // 2:
                    dropped, self._dropped = self._dropped, 0
            if dropped:
                self._drops_ended(dropped)

    def _drops_ended(self, dropped: int, *, stopping: bool = False) -> None:
        """The INFO that ends an episode of drops past ``max_waiting``."""
        log.info(
            "1C history: %d call events were dropped over %s, %d waiting in memory to be "
            "stored in %s already; %s (callrouter history replay rebuilds the dropped "
            "ones from CEL)",
            dropped,
            _age(time.monotonic() - self._dropping_since),
            self.max_waiting,
            self.queue.path,
            "until this stop" if stopping else "room again, call events are taken again",
        )

    def _store_retrying(self, payload: dict[str, Any], fact: MissedFact | None) -> None:
        delay = 0.02
        while True:
            try:
                added = self.queue.enqueue_call_event(payload, fact)
            except sqlite3.OperationalError as exc:
                if self._closing.is_set():
                    self._lost += 1
                    if self._lost == 1:
                        log.error(
                            "1C history: %s of call %s not stored in %s before shutdown: "
                            "%s; callrouter history replay rebuilds it from CEL",
                            payload["event"],
                            payload["call_id"],
                            self.queue.path,
                            exc,
                        )
                    return
                self._store_failed(exc)
                self._closing.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception:
                log.exception(
                    "1C history: could not store %s of call %s",
                    payload["event"],
                    payload["call_id"],
                )
                return
            self._stored()
            if added and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                    self._loop.call_soon_threadsafe(self._wake.set)
            return

    def _store_failed(self, exc: sqlite3.OperationalError) -> None:
        """A write failed and is retried: one WARNING when it starts (or its reason
        changes), not one a try, every second, for each call event waiting."""
        reason = str(exc) or type(exc).__name__
        if reason == self._store_failing:
            return
        if self._store_failing is None:
            self._store_failing_since = time.monotonic()
        self._store_failing = reason
        log.warning(
            "1C history: cannot store call events in %s: %s; they wait in memory "
            "(up to %d) and are stored once it can be written, said again then",
            self.queue.path,
            reason,
            self.max_waiting,
        )

    def _stored(self) -> None:
        """An event was stored: one INFO if storing had been failing."""
        if self._store_failing is None:
            return
        log.info(
            "1C history: call events stored in %s again after %s",
            self.queue.path,
            _age(time.monotonic() - self._store_failing_since),
        )
        self._store_failing = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._prune_when_due()
                rows: list[QueuedEvent] = await self._db(self.queue.due, self.batch)
                if not rows:
                    await wait_set(self._wake, self.idle_poll)
                    continue
                delivered = await self._send(rows)
                sent = delivered == len(rows)
            except sqlite3.Error as exc:
                log.warning("1C history: database busy or failing, retrying: %s", exc)
                delivered, sent = 0, False
            if sent or delivered:
                # Progress: go on at once; an event that failed now goes last.
                self.failures = 0
                continue
            self.failures += 1
            self._retry.clear()
            await self._pause(
                self._retry, min(self.base_delay * 2 ** (self.failures - 1), self.max_delay)
            )

    async def _pause(self, event: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds`` or until ``event`` is set (the file is looked at
        meanwhile on its own schedule, :meth:`_watch_file`)."""
        await wait_set(event, seconds)

    async def _watch_file(self) -> None:
        """Look at the file every :data:`FILE_CHECK_EVERY`, whatever the sender
        does: in its backoff with 1C away (up to ``max_delay``, 60 s) or in a
        batch to a slow 1C (up to 100 rows, each up to the client's timeout),
        the look between two tries left a deleted file gone for minutes, and
        a crash then lost every event waiting for 1C."""
        while True:
            await asyncio.sleep(max(0.0, self._file_checked + FILE_CHECK_EVERY - time.monotonic()))
            await self._check_file_when_due()

    async def _check_file_when_due(self) -> None:
        """The file deleted or replaced while it runs: written again, said once.

        The write-back and what is said of it are one step on the database
        thread (:meth:`_check_file`): :meth:`stop` cancelled the look while
        the file was copied, the copy ended and its WARNING was cut off, and
        the look at the stop, queued behind it, found the file where it
        belongs and said nothing (issue 16)."""
        if time.monotonic() - self._file_checked < FILE_CHECK_EVERY:
            return
        self._file_checked = time.monotonic()
        await self._db(self._check_file)

    def _check_file(self) -> None:
        """On the database thread: :meth:`HistoryQueue.put_back`, and its line."""
        path = self.queue.path
        try:
            what = self.queue.put_back()
        except (OSError, sqlite3.Error) as exc:
            seen = isinstance(exc, FileOutOfSight)
            reason = (exc.strerror if isinstance(exc, FileOutOfSight) else str(exc)) or (
                type(exc).__name__
            )
            unopened, kept = self.queue.unopened, self.queue.kept_at
            if reason != self._put_back_failing and seen:
                log.warning(
                    "1C history: %s cannot be looked at: %s; it is not written back while "
                    "so: callrouter goes on with the file it has open; give the service's "
                    "user its state folder back",
                    path,
                    reason,
                )
            elif reason != self._put_back_failing and unopened is not None and kept is not None:
                why = exc.__cause__ or exc
                log.error(
                    "1C history: %s was %s while callrouter ran and is written again from "
                    "the open file as %s, which could not take its place and cannot be "
                    "opened either: %s; that copy holds every row and is kept there (do not "
                    "delete it); call events wait in memory (up to %d), and every %g s "
                    "callrouter tries again to open it and move it in place",
                    path,
                    unopened,
                    kept,
                    str(why) or type(why).__name__,
                    self.max_waiting,
                    FILE_CHECK_EVERY,
                )
            elif reason != self._put_back_failing and unopened is not None:
                why = exc.__cause__ or exc
                log.error(
                    "1C history: %s was %s while callrouter ran and is written again "
                    "from the open file, but cannot be opened again: %s; call events "
                    "wait in memory (up to %d) until it can, retried every %g s",
                    path,
                    unopened,
                    str(why) or type(why).__name__,
                    self.max_waiting,
                    FILE_CHECK_EVERY,
                )
            elif reason != self._put_back_failing:
                log.error(
                    "1C history: %s is no longer the file in use (deleted or replaced "
                    "while callrouter ran) and cannot be written again: %s; the events "
                    "not yet sent to 1C are lost at the next restart unless it can",
                    path,
                    reason,
                )
            self._put_back_failing = reason
            return
        self._put_back_failing = None
        if what == "deleted":
            log.warning(
                "1C history: %s was deleted while callrouter ran: written again from the "
                "open file (the events not yet sent to 1C, the ids sent, the open missed "
                "calls); to empty it, stop the service first",
                path,
            )
        elif what == "replaced":
            log.warning(
                "1C history: %s was replaced while callrouter ran: the file put there is "
                "moved aside as %s.replaced-TIME and %s written again from the open "
                "file; restore state files with the service stopped (operations.md)",
                path,
                path.name,
                path.name,
            )

    async def _prune_when_due(self) -> None:
        if time.monotonic() - self._last_prune < self.prune_interval:
            return
        self._last_prune = time.monotonic()
        pruned = await self._db(self.queue.prune)
        if pruned:
            log.debug("1C history: pruned %d old rows", pruned)

    async def _send(self, rows: list[QueuedEvent]) -> int:
        """Post rows in order until one fails; returns how many 1C answered (or refused)."""
        for done, row in enumerate(rows):
            try:
                ack = await self._post(complete(row.payload))
            except OneCBadRequest as exc:
                self._recovered()  # 1C answered: it is up, if it was not
                log.warning(
                    "1C history: dropped %s of call %s, %s old: 1C refused it (%s)",
                    row.event,
                    row.call_id,
                    _age(self.queue.now() - row.created),
                    exc,
                )
                await self._db(self.queue.mark_dropped, row.id, str(exc))
            except Exception as exc:
                # OneCUnavailable, or anything a hostile answer might still raise:
                # either way 1C gave no usable answer; retry later, never die.
                if not isinstance(exc, OneCUnavailable):
                    log.warning(
                        "1C history: unexpected %s sending %s of call %s",
                        type(exc).__name__,
                        row.event,
                        row.call_id,
                    )
                self._failing(exc)
                detail = str(exc) or type(exc).__name__
                await self._db(self.queue.mark_failed, row.id, detail)
                now = self.queue.now()
                for old in await self._db(self.queue.expired, self.max_age):
                    # An event behind its call's undelivered one was never posted:
                    # say so, not "after 0 attempts" with another event's failure.
                    tried = (
                        f"undelivered after {old.attempts} failed "
                        f"{'attempt' if old.attempts == 1 else 'attempts'}"
                        if old.attempts
                        else "never sent: it waited behind an earlier event of its call"
                    )
                    log.warning(
                        "1C history: dropped %s of call %s, %s old, %s (events_max_age %s): %s",
                        old.event,
                        old.call_id,
                        _age(now - old.created),
                        tried,
                        _age(self.max_age),
                        _failure(exc),
                    )
                    await self._db(self.queue.mark_dropped, old.id, detail)
                return done
            else:
                self._recovered()
                await self._db(self.queue.mark_sent, row.id, ack.id)
        return len(rows)

    def _failing(self, exc: Exception) -> None:
        """Count a failed post; the first of a run is one WARNING, the rest are quiet."""
        self._failed_posts += 1
        if self._failing_since is not None:
            return
        self._failing_since = time.monotonic()
        log.warning(
            "1C history: delivery to 1C failing (%s); retrying with backoff "
            "up to %g s, events wait in the queue; one line when it recovers",
            _failure(exc),
            self.max_delay,
        )

    def _recovered(self) -> None:
        """1C answered a post: one INFO if delivery had been failing."""
        if self._failing_since is None:
            return
        log.info(
            "1C history: delivery to 1C recovered after %d failed %s in %s",
            self._failed_posts,
            "attempt" if self._failed_posts == 1 else "attempts",
            _age(time.monotonic() - self._failing_since),
        )
        self._failing_since = None
        self._failed_posts = 0


def _failure(exc: Exception) -> str:
    """Why a post failed, for the log: the HTTP status (or what went wrong) and the
    URL's path, never the answer's body (1C's module error text)."""
    status = getattr(exc, "status", None)
    url = getattr(exc, "url", None)
    if isinstance(status, int) and 200 <= status < 300 and isinstance(exc, OneCUnavailable):
        # A 200 is no reason: say what was wrong with the answer, in our words
        # (the client's detail quotes no body), e.g. not JSON.
        what = f"HTTP {status}: {exc.detail}"
    elif isinstance(status, int):
        what = f"HTTP {status}"
    elif isinstance(exc, OneCUnavailable):
        what = exc.detail  # our own words (a timeout, a refused connection), no body
    else:
        what = type(exc).__name__
    path = urlsplit(url).path if isinstance(url, str) and url else "/v1/calls/events"
    return f"{what} from POST {path}"


def complete(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with every member of the history contract (``EVENT_FIELDS``):
    a row an earlier callrouter queued (still there after an upgrade) lacks
    ``owner``, ``talk_seconds``, ``transfer``, ``hangup_by``, ``replayed`` and
    the ``closed_*``; they go as null (``replayed`` false), as a new body
    has them. ``event_id`` stays out when it is: the event is then keyed by
    (``call_id``, ``event``)."""
    missing = [key for key in EVENT_FIELDS if key not in payload and key != "event_id"]
    if not missing:
        return payload
    return {**payload, **{key: (False if key == "replayed" else None) for key in missing}}


def _nothing() -> None:
    """Queued behind every handed-over write: when it has run, they have too."""
