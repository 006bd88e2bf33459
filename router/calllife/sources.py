"""Reading CEL records back from where Asterisk stored them.

``sqlite:///PATH``: the file cel_sqlite3_custom writes (an Asterisk on this
host), opened read-only. ``postgresql://...``: the table cel_pgsql writes (a
remote Asterisk), through psycopg 3, an optional dependency (the ``pgsql``
extra: ``pip install './[pgsql]'`` from a checkout) imported only when such a
source is used. Both are blocking: callers run them in a worker thread.

A read returns whole calls: every record of every Linkedid that has a record
in the time window, so a call that began before the window folds complete.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from router.calllife.model import CelRecord, OversizedRecord
from router.calllife.settings import HistorySettings
from router.errors import ConfigError, HistorySourceError

__all__ = [
    "CEL_INDEXES",
    "CelSource",
    "PostgresSource",
    "SqliteSource",
    "group_calls",
    "open_source",
]

log = logging.getLogger("router.calllife")

#: The two indexes docs/history.md (+ru) gives a large cel_sqlite3_custom
#: store: without them a replay's read scans the table while Asterisk's writer
#: waits for it. The sandbox creates them as an administrator would; a test
#: keeps the pages' command equal to this and checks the replay's searches use
#: them.
CEL_INDEXES = (
    "CREATE INDEX IF NOT EXISTS cel_time ON cel (CAST(eventtime AS REAL));\n"
    "CREATE INDEX IF NOT EXISTS cel_linkedid ON cel (linkedid);"
)

#: Records read at most per replay: a bound on memory, not a normal limit
#: (a busy PBX writes some 20 records per call).
MAX_ROWS = 2_000_000


class CelSource(Protocol):
    """Where stored CEL records come from (blocking)."""

    def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
        """Every record of each call with a record in ``[since, until]``, by Linkedid."""
        ...


def group_calls(rows: Iterable[CelRecord]) -> dict[str, list[CelRecord]]:
    """Records by Linkedid, each call's in order (time, then storage order)."""
    calls: dict[str, list[CelRecord]] = {}
    for record in rows:
        calls.setdefault(record.linkedid, []).append(record)
    for records in calls.values():
        records.sort(key=lambda r: (r.at, r.seq))
    return dict(sorted(calls.items(), key=lambda item: (item[1][0].at, item[1][0].seq)))


class _Refused:
    """Rows of one read not folded for an identity field longer than Asterisk
    writes (:class:`~router.calllife.model.OversizedRecord`): said once, after
    the read, naming the first (its field and length, never its value)."""

    __slots__ = ("count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first: OversizedRecord | None = None

    def note(self, exc: OversizedRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = exc

    def tell(self, where: str) -> None:
        if self.first is None:
            return
        log.warning(
            "[history] cel: %s: %d stored row(s) not folded into any call: %s "
            "(a broken or hostile writer of the CEL store?)",
            where,
            self.count,
            self.first,
        )


def _record(
    row: Mapping[str, Any], at: float, seq: int, refused: _Refused | None = None
) -> CelRecord | None:
    try:
        return CelRecord.build(
            event=str(row.get("eventtype") or ""),
            at=at,
            uniqueid=str(row.get("uniqueid") or ""),
            linkedid=str(row.get("linkedid") or ""),
            extra=str(row.get("extra") or ""),
            seq=seq,
            channel=str(row.get("channame") or ""),
            context=str(row.get("context") or ""),
            exten=str(row.get("exten") or ""),
            cid_num=str(row.get("cid_num") or ""),
            cid_name=str(row.get("cid_name") or ""),
            cid_dnid=str(row.get("cid_dnid") or ""),
            application=str(row.get("appname") or ""),
            appdata=str(row.get("appdata") or ""),
            peer=str(row.get("peer") or ""),
        )
    except OversizedRecord as exc:
        # No Asterisk's row: cut, it was folded into a call (issue 16).
        if refused is not None:
            refused.note(exc)
        return None
    except ValueError:
        return None  # a row of no call (no Linkedid): nothing to fold


@dataclass(frozen=True, slots=True)
class SqliteSource:
    """cel_sqlite3_custom's file (docs/history.md shows the mapping it expects).

    Columns as in the sandbox's cel_sqlite3_custom.conf: ``eventtype``,
    ``eventtime`` (Unix seconds, ``eventtime(float)``), ``cidname``,
    ``cidnum``, ``ciddnid``, ``context``, ``exten``, ``channame``,
    ``appname``, ``appdata``, ``uniqueid``, ``linkedid``, ``peer``,
    ``eventextra``.
    """

    path: Path
    table: str = "cel"

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise HistorySourceError(f"[history] cel: {self.path}: no such file")
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode=ro"
        try:
            con = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise HistorySourceError(f"[history] cel: {self.path}: {exc}") from exc
        con.row_factory = sqlite3.Row
        return con

    @property
    def query(self) -> str:
        """The replay's read; docs/history.md's two indexes serve both its searches."""
        # The table name was checked against an identifier pattern ([history] table).
        return (
            f"SELECT rowid AS seq, eventtype, eventtime, cidname, cidnum, ciddnid, context, "
            f"exten, channame, appname, appdata, uniqueid, linkedid, peer, eventextra "
            f"FROM {self.table} WHERE linkedid IN (SELECT DISTINCT linkedid FROM {self.table} "
            f"WHERE CAST(eventtime AS REAL) >= ? AND CAST(eventtime AS REAL) <= ?) "
            f"ORDER BY rowid LIMIT {MAX_ROWS}"
        )

    def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
        top = until if until is not None else 1e12
        query = self.query
        con = self._connect()
        try:
            rows = con.execute(query, (since, top)).fetchall()
        except sqlite3.Error as exc:
            raise HistorySourceError(
                f"[history] cel: {self.path}: reading table {self.table!r}: {exc}"
            ) from exc
        finally:
            con.close()
        out: list[CelRecord] = []
        refused = _Refused()
        for row in rows:
            try:
                at = float(row["eventtime"])
            except (TypeError, ValueError):
                continue
            mapped = {
                "eventtype": row["eventtype"],
                "uniqueid": row["uniqueid"],
                "linkedid": row["linkedid"],
                "extra": row["eventextra"],
                "channame": row["channame"],
                "context": row["context"],
                "exten": row["exten"],
                "cid_num": row["cidnum"],
                "cid_name": row["cidname"],
                "cid_dnid": row["ciddnid"],
                "appname": row["appname"],
                "appdata": row["appdata"],
                "peer": row["peer"],
            }
            record = _record(mapped, at, int(row["seq"]), refused)
            if record is not None:
                out.append(record)
        refused.tell(str(self.path))
        return group_calls(out)


#: A DB-API connection factory (tests pass a fake; the default is psycopg's).
Connect = Callable[[str], Any]

_PG_QUERY = (
    "SELECT id, eventtype, eventtime, cid_name, cid_num, cid_dnid, context, exten, channame, "
    "appname, appdata, uniqueid, linkedid, peer, extra FROM {table} WHERE linkedid IN "
    "(SELECT DISTINCT linkedid FROM {table} WHERE eventtime >= %s AND eventtime <= %s) "
    "ORDER BY id LIMIT {limit}"
)


@dataclass(frozen=True, slots=True)
class PostgresSource:
    """cel_pgsql's table (its stock schema: ``id``, ``eventtype``, ``eventtime``
    timestamp, ``cid_name``, ``cid_num``, ``cid_dnid``, ... ``extra``).

    ``eventtime`` is a timestamp without zone; cel_pgsql writes it in UTC when
    ``usegmtime=yes`` (docs/history.md asks for that), which is how it is read.
    """

    dsn: str
    table: str = "cel"
    connect: Connect | None = None

    def _connection(self) -> Any:
        connect = self.connect
        if connect is None:
            try:
                import psycopg  # type: ignore[import-not-found, unused-ignore]
            except ImportError as exc:
                raise ConfigError(
                    "[history] cel: a postgresql:// source needs psycopg 3: "
                    "pip install 'psycopg>=3.1' into callrouter's environment (its pgsql extra)"
                ) from exc
            connect = psycopg.connect
        try:
            return connect(self.dsn)
        except Exception as exc:  # the driver's own errors: one kind for the caller
            raise HistorySourceError(f"[history] cel: cannot connect: {exc}") from exc

    def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
        low = datetime.fromtimestamp(since, UTC).replace(tzinfo=None)
        high = datetime.fromtimestamp(until if until is not None else 4e9, UTC).replace(tzinfo=None)
        query = _PG_QUERY.format(table=self.table, limit=MAX_ROWS)
        con = self._connection()
        try:
            cur = con.cursor()
            try:
                cur.execute(query, (low, high))
                rows = cur.fetchall()
            except Exception as exc:
                raise HistorySourceError(
                    f"[history] cel: reading table {self.table!r}: {exc}"
                ) from exc
            finally:
                with contextlib.suppress(Exception):
                    cur.close()
        finally:
            with contextlib.suppress(Exception):
                con.close()
        names = (
            "id", "eventtype", "eventtime", "cid_name", "cid_num", "cid_dnid", "context",
            "exten", "channame", "appname", "appdata", "uniqueid", "linkedid", "peer", "extra",
        )  # fmt: skip
        out: list[CelRecord] = []
        refused = _Refused()
        for values in rows:
            row = dict(zip(names, values, strict=False))
            at = _pg_time(row.get("eventtime"))
            if at is None:
                continue
            record = _record(row, at, int(row.get("id") or 0), refused)
            if record is not None:
                out.append(record)
        refused.tell(f"table {self.table!r}")
        return group_calls(out)


def _pg_time(value: object) -> float | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def open_source(settings: HistorySettings, *, connect: Connect | None = None) -> CelSource | None:
    """The configured source, or None when ``[history] cel`` is not set."""
    path = settings.sqlite_path
    if path is not None:
        return SqliteSource(path, settings.table)
    if settings.cel is not None:
        return PostgresSource(settings.cel, settings.table, connect)
    return None


def iter_records(calls: Mapping[str, list[CelRecord]]) -> Iterator[CelRecord]:
    for records in calls.values():
        yield from records
