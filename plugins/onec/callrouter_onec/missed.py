"""Missed calls with an owner, closed when the customer is reached.

A customer who rang and got nobody is a task for someone: the responsible
manager from 1C's lookup, else the extension configured for the number they
dialled (``[plugins.onec] missed_owner``), else nobody in particular. The task
is done when a later call with that customer connects, whichever way it went
(they called again and someone answered, or someone called them back and they
picked up); 1C then gets ``missed_closed`` naming the missed call and the call
that reached the customer, so the callback task closes by itself.

Open missed calls live in the history's SQLite file (:class:`MissedBook`, run
on the history's database thread inside the transaction that stores the event
itself), keyed by the customer's normalized number. Connected calls are kept
too, for the same time: after a gap, replay may hand over the callback before
the missed call it answers (each call is replayed whole, calls in any order),
and the missed call must still come out closed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANY_DID",
    "MISSED_MAX_AGE",
    "MISSED_MAX_ROWS",
    "MissedBook",
    "MissedFact",
    "closed_event",
    "owner_of",
]

log = logging.getLogger(__name__)

#: Open missed calls older than this are forgotten (a week): nobody calls back later.
MISSED_MAX_AGE = 7 * 86400.0
#: At most this many open missed calls (and as many connected calls) are kept.
MISSED_MAX_ROWS = 10_000
#: The ``missed_owner`` key that stands for any dialled number.
ANY_DID = "*"


@dataclass(frozen=True, slots=True)
class MissedFact:
    """What settling needs beyond the payload: the customer's number and when.

    ``at`` is the missed call's start (a ``missed``) or the moment the call
    connected (an ``answered``), Unix seconds on Asterisk's clock.
    """

    number: str
    at: float


def owner_of(
    manager_id: str | None,
    manager_extension: str | None,
    did: str | None,
    table: Mapping[str, str],
) -> dict[str, Any] | None:
    """Who calls the customer back: the manager, else the DID's default, else ``None``."""
    if manager_id is not None:
        return {"manager_id": manager_id, "extension": manager_extension, "source": "lookup"}
    extension = table.get(did or "") if did else None
    if extension is None:
        extension = table.get(ANY_DID)
    if extension is None:
        return None
    return {"manager_id": None, "extension": extension, "source": "missed_owner"}


def closed_event(missed: Mapping[str, Any], closer: Mapping[str, Any]) -> dict[str, Any]:
    """``missed_closed`` for ``missed``, reached by the ``answered`` event ``closer``.

    The call id is the missed call's, so 1C finds the task it opened for it
    and the event queues behind that call's own events; ``closed_by`` is the
    call that reached the customer and ``extension`` who reached them.
    """
    return {
        "event": "missed_closed",
        "event_id": f"{missed['call_id']}/missed_closed",
        "call_id": missed["call_id"],
        "direction": missed.get("direction", "in"),
        "from": missed.get("from"),
        "to": missed.get("to"),
        "extension": closer.get("extension"),
        "manager_id": missed.get("manager_id"),
        "client_id": missed.get("client_id"),
        "owner": missed.get("owner"),
        "closed_by": closer["call_id"],
        "closed_direction": closer.get("direction"),
        "closed_at": closer.get("answered_at"),
        "status": None,
        "started_at": missed.get("started_at"),
        "answered_at": None,
        "ended_at": missed.get("ended_at"),
        "duration": None,
        "billsec": None,
        "talk_seconds": None,
        "hangup_by": None,
        "transfer": None,
        "replayed": bool(closer.get("replayed")),
        "ts": closer.get("ts"),
        "recording_url": None,
    }


def _stored(table: str, call_id: object, body: object) -> dict[str, Any] | None:
    """A payload this book wrote (a JSON object naming its call); None, with an
    ERROR, for a row it cannot have written (damaged or tampered): read as it
    was, it raised inside the transaction storing the event that met it, and
    that event (a callback's ``answered``) was lost, for every call with the
    customer's number until the row aged out."""
    try:
        value = json.loads(body) if isinstance(body, str | bytes) else None
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and isinstance(value.get("call_id"), str):
        return value
    log.error(
        "1C history: %s row of call %.40r is not one callrouter writes (damaged or "
        "tampered); left out",
        table,
        call_id,
    )
    return None


class MissedBook:
    """Open missed calls and recent connections in the history's database.

    Only ever used under :class:`~callrouter_onec.history.HistoryQueue`'s lock,
    on its database thread, inside its transaction.
    """

    def __init__(self, db: sqlite3.Connection, *, max_age: float, max_rows: int) -> None:
        self._db = db
        self.max_age = max_age
        self.max_rows = max_rows
        db.executescript("""
            CREATE TABLE IF NOT EXISTS missed_open (
                call_id TEXT PRIMARY KEY,
                number TEXT NOT NULL,
                at REAL NOT NULL,
                payload TEXT NOT NULL,
                created REAL NOT NULL
            );
            CREATE INDEX IF NOT EXISTS missed_open_number ON missed_open (number);
            CREATE TABLE IF NOT EXISTS connected (
                call_id TEXT NOT NULL,
                number TEXT NOT NULL,
                at REAL NOT NULL,
                payload TEXT NOT NULL,
                created REAL NOT NULL,
                PRIMARY KEY (call_id, number)
            );
            CREATE INDEX IF NOT EXISTS connected_number ON connected (number);
        """)

    def settle(
        self, payload: Mapping[str, Any], fact: MissedFact, now: float
    ) -> Iterator[dict[str, Any]]:
        """The ``missed_closed`` events ``payload`` causes; records it for later ones."""
        if not fact.number:
            return
        call_id = payload["call_id"]
        if payload["event"] == "missed":
            row = self._db.execute(
                "SELECT call_id, payload FROM connected WHERE number = ? AND at >= ? "
                "AND call_id != ? ORDER BY at LIMIT 1",
                (fact.number, fact.at, call_id),
            ).fetchone()
            closer = _stored("connected", row[0], row[1]) if row is not None else None
            if closer is not None:  # the callback came first (replay after a gap)
                yield closed_event(payload, closer)
                return
            self._db.execute(
                "INSERT OR IGNORE INTO missed_open (call_id, number, at, payload, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (call_id, fact.number, fact.at, json.dumps(payload, ensure_ascii=False), now),
            )
        elif payload["event"] == "answered":
            self._db.execute(
                "INSERT OR IGNORE INTO connected (call_id, number, at, payload, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (call_id, fact.number, fact.at, json.dumps(payload, ensure_ascii=False), now),
            )
            rows = self._db.execute(
                "SELECT call_id, payload FROM missed_open WHERE number = ? AND at <= ? "
                "AND call_id != ? ORDER BY at",
                (fact.number, fact.at, call_id),
            ).fetchall()
            for missed_id, body in rows:
                self._db.execute("DELETE FROM missed_open WHERE call_id = ?", (missed_id,))
                missed = _stored("missed_open", missed_id, body)
                if missed is not None:
                    yield closed_event(missed, payload)

    def open_calls(self, number: str | None = None) -> list[dict[str, Any]]:
        """Open missed calls (of ``number``), oldest first: status pages and tests."""
        query = "SELECT call_id, payload FROM missed_open"
        args: tuple[str, ...] = ()
        if number is not None:
            query, args = query + " WHERE number = ?", (number,)
        rows = self._db.execute(query + " ORDER BY at", args).fetchall()
        return [p for c, body in rows if (p := _stored("missed_open", c, body)) is not None]

    def prune(self, now: float) -> None:
        """Forget what is older than ``max_age`` and keep ``max_rows`` of each, newest."""
        for table in ("missed_open", "connected"):
            self._db.execute(f"DELETE FROM {table} WHERE created < ?", (now - self.max_age,))
            self._db.execute(
                f"DELETE FROM {table} WHERE rowid NOT IN "
                f"(SELECT rowid FROM {table} ORDER BY at DESC LIMIT ?)",
                (self.max_rows,),
            )
