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
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from router.aside import named_db_error, not_a_file, sqlite_holds
from router.calllife.model import MAX_FIELD, CelRecord, OversizedRecord
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
#: (a busy PBX writes some 20 records per call). A window holding more is
#: read up to it, with a WARNING naming the store, the window and the count
#: (:func:`_bounded_rows`): the calls of the rows past it are missing or
#: incomplete.
MAX_ROWS = 2_000_000
#: Characters of text one read holds at most: each value is cut where it is
#: read (:data:`_TEXT_LIMITS`), and this bounds their sum. Asterisk's
#: records hold some 200 characters each, so :data:`MAX_ROWS` of them stay
#: below it; rows of 8,000 (each value as long as a record keeps it: a
#: broken or hostile writer's) reach it at some 67,000 (issue 16).
MAX_TEXT_CHARS = 512 * 1024 * 1024
#: Seconds one read may take (the query and taking its rows): past it the
#: read fails, naming the indexes that make it fast (SQLite: interrupted;
#: PostgreSQL: its ``statement_timeout``).
READ_SECONDS = 300.0
#: Seconds a connection to PostgreSQL may take (libpq's ``connect_timeout``,
#: unless the url sets one): libpq waits for ever for a server that accepted
#: the connection and says nothing.
CONNECT_SECONDS = 10
#: Times a record may have: Unix seconds from 1970 to the end of year 9999
#: (what ``datetime`` shows). A stored row's ``eventtime`` outside (negative,
#: 1e300, NaN, infinite) is no Asterisk's: it would sort first or last in its
#: call and make it start in 1969 or never end (issue 16).
LATEST_TIME = 253_402_300_799.0

#: What a stored value is cut to where it is read (SQL ``substr``): a little
#: over what :meth:`CelRecord.build` keeps, so its checks (an identity field
#: longer than Asterisk writes) and cuts see the same; the rest never leaves
#: the database.
_TEXT_LIMITS = {"eventextra": 4 * MAX_FIELD + 1, "extra": 4 * MAX_FIELD + 1}
_TEXT_LIMIT = MAX_FIELD + 1
#: SQLite's steps between two looks at the read's deadline (:data:`READ_SECONDS`).
_PROGRESS_STEPS = 100_000
#: A stored ``eventtime`` is read as text at most this long (a number's).
_TIME_CHARS = 64


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
    writes (:class:`~router.calllife.model.OversizedRecord`) or an
    ``eventtime`` that is no time (:func:`_event_time`): said once, after the
    read, naming the first (its field, never its value)."""

    __slots__ = ("count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first: OversizedRecord | str | None = None

    def note(self, exc: OversizedRecord | str) -> None:
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


def _text(value: object) -> str:
    """A stored value as text: bytes (a BLOB where text belongs) decoded as
    :func:`_lenient` does, not shown as ``b'...'``; NULL as empty."""
    if isinstance(value, bytes):
        return _lenient(value)
    return "" if value is None else str(value)


def _record(
    row: Mapping[str, Any], at: float, seq: int, refused: _Refused | None = None
) -> CelRecord | None:
    get = row.get
    try:
        return CelRecord.build(
            event=_text(get("eventtype")),
            at=at,
            uniqueid=_text(get("uniqueid")),
            linkedid=_text(get("linkedid")),
            extra=_text(get("extra")),
            seq=seq,
            channel=_text(get("channame")),
            context=_text(get("context")),
            exten=_text(get("exten")),
            cid_num=_text(get("cid_num")),
            cid_name=_text(get("cid_name")),
            cid_dnid=_text(get("cid_dnid")),
            application=_text(get("appname")),
            appdata=_text(get("appdata")),
            peer=_text(get("peer")),
        )
    except OversizedRecord as exc:
        # No Asterisk's row: cut, it was folded into a call (issue 16).
        if refused is not None:
            refused.note(exc)
        return None
    except ValueError:
        return None  # a row of no call (no Linkedid): nothing to fold


def _event_time(value: object, seq: object, refused: _Refused) -> float | None:
    """A stored row's ``eventtime`` as Unix seconds, or None (noted in
    ``refused``) when it is no time a record may have (:data:`LATEST_TIME`):
    text that is no number, NaN, infinite, negative, past the year 9999."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        at: float | None = moment.timestamp()
    elif value is None or isinstance(value, bool):
        at = None
    else:
        try:
            at = float(value)  # type: ignore[arg-type]  # text, bytes, a number, a Decimal
        except (TypeError, ValueError, OverflowError):
            at = None
    if at is not None and math.isfinite(at) and 0.0 <= at <= LATEST_TIME:
        return at
    refused.note(f"row {str(seq)[:20]}: its eventtime is no Unix time from 1970 to 9999")
    return None


def _bounded_rows(
    cursor: Any, where: str, since: float, until: float | None, limit: int
) -> Iterator[Any]:
    """The rows of an executed query, fetched a batch at a time, while their
    text stays within :data:`MAX_TEXT_CHARS` (else :class:`HistorySourceError`).

    The query asks for ``limit`` + 1 rows (``limit`` is :data:`MAX_ROWS` as
    the query was made): a row past ``limit`` is not yielded but said, once,
    as a WARNING naming the store, the window and the count. That cut was
    silent: a replay's calls were missing or incomplete, and nothing said so
    (issue 16)."""
    total = 0
    taken = 0
    while True:
        batch = cursor.fetchmany(10_000)
        if not batch:
            return
        for row in batch:
            total += sum(len(v) for v in row if isinstance(v, str | bytes))
        if total > MAX_TEXT_CHARS:
            raise HistorySourceError(
                f"[history] cel: {where}: the calls in the window hold over {MAX_TEXT_CHARS} "
                "characters of text; no Asterisk writes that much (a broken or hostile writer "
                "of the CEL store?)"
            )
        if taken + len(batch) > limit:
            yield from batch[: limit - taken]
            log.warning(
                "[history] cel: %s: the calls with records from %s to %s hold over %d "
                "records (a replay's bound): only the first %d, in storage order, were "
                "read; the calls of the rest are missing or incomplete (replay a shorter "
                "window)",
                where,
                _moment(since),
                "now" if until is None else _moment(until),
                limit,
                limit,
            )
            return
        taken += len(batch)
        yield from batch


def _moment(at: float) -> str:
    """A window's end as a log says it: UTC, to the second."""
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return repr(at)


def _lenient(raw: bytes) -> str:
    """A stored text that is no UTF-8 (a caller's name as the phone sent it),
    its bad bytes read as U+FFFD, as AMI's are (router.ami.protocol)."""
    return raw.decode("utf-8", errors="replace")


class _Undecodable(Exception):
    """A stored text that is no UTF-8: the read starts again with :func:`_lenient`."""


def _open_file_name(fd: int, path: Path, info: os.stat_result) -> str:
    """The name SQLite is to open for the file open as ``fd`` (``info`` its
    ``fstat``): Linux's ``/proc/self/fd/N``, which SQLite resolves to that
    file's name as it opens it (the kernel's, kept through renames), its
    ``-wal`` and ``-journal`` found beside it. SQLite then opens that name:
    the file it holds is checked to be the one looked at
    (:func:`router.aside.sqlite_holds`). Without ``/proc``, ``path`` when it still names
    that file."""
    name = f"/proc/self/fd/{fd}"
    try:
        target = os.readlink(name)
    except OSError:
        target = None
    if target is not None and not target.endswith(" (deleted)"):
        return name
    if target is None:  # no /proc: the name, when it is still that file
        with contextlib.suppress(OSError):
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
                return str(path)
    raise HistorySourceError(
        f"[history] cel: {path}: was removed or replaced while being opened; "
        "the next replay reads the file there then"
    )


#: cel_sqlite3_custom's text columns the replay reads (docs/history.md's mapping).
_SQLITE_TEXTS = (
    "eventtype", "cidname", "cidnum", "ciddnid", "context", "exten", "channame",
    "appname", "appdata", "uniqueid", "linkedid", "peer", "eventextra",
)  # fmt: skip

#: What cel_sqlite3_custom's file is, for the error of a file that is none.
_SQLITE_ADVICE = (
    "check [history] cel: it names the file Asterisk's cel_sqlite3_custom writes (docs/history.md)"
)


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
        # Looked at before anything opens it: opening a device may act, and
        # SQLite opens a FIFO (the thread waits for a writer for ever) or a
        # device it is given.
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            if os.path.islink(self.path):
                raise HistorySourceError(
                    f"[history] cel: {self.path}: a symbolic link to "
                    f"{os.readlink(self.path)}, which does not exist"
                ) from None
            raise HistorySourceError(f"[history] cel: {self.path}: no such file") from None
        except OSError as exc:
            raise HistorySourceError(f"[history] cel: {self.path}: {exc.strerror}") from None
        self._refuse_non_file(mode)
        # Then opened once, never blocking, and that open file looked at: a
        # FIFO or another file put at the name since the look above (a
        # time-of-check/time-of-use gap) is refused, not opened by SQLite.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise HistorySourceError(f"[history] cel: {self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            self._refuse_non_file(info.st_mode)
            if info.st_nlink == 0:
                raise HistorySourceError(
                    f"[history] cel: {self.path}: was removed or replaced while being opened; "
                    "the next replay reads the file there then"
                )
            con = self._sqlite(_open_file_name(fd, self.path, info))
            if sqlite_holds(info, besides=fd) is False:
                con.close()
                raise HistorySourceError(
                    f"[history] cel: {self.path}: was replaced while SQLite opened it (another "
                    "file put at its name); the next replay reads the file there then"
                )
            return con
        finally:
            # SQLite has its own descriptor now and has taken no lock yet
            # (closing a descriptor drops every POSIX lock this process holds
            # on the file: SQLite's too, were one taken).
            os.close(fd)

    def _refuse_non_file(self, mode: int) -> None:
        what = not_a_file(mode)
        if what is not None:
            raise HistorySourceError(
                f"[history] cel: {self.path}: is {what}, not a file; {_SQLITE_ADVICE}"
            )

    def _sqlite(self, name: str) -> sqlite3.Connection:
        # mode=ro: Asterisk writes the file meanwhile, so never immutable=1
        # (SQLite would take no lock and read pages half written).
        uri = f"file:{urllib.parse.quote(name)}?mode=ro"
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
        # Each text is cut in SQLite (no stored value reaches Python whole);
        # eventtime as stored, a number, or text cut to a number's length.
        texts = ", ".join(
            f"substr({name}, 1, {_TEXT_LIMITS.get(name, _TEXT_LIMIT)}) AS {name}"
            for name in _SQLITE_TEXTS
        )
        return (
            f"SELECT rowid AS seq, CASE WHEN typeof(eventtime) IN ('integer', 'real') "
            f"THEN eventtime ELSE substr(eventtime, 1, {_TIME_CHARS}) END AS eventtime, {texts} "
            f"FROM {self.table} WHERE linkedid IN (SELECT DISTINCT linkedid FROM {self.table} "
            f"WHERE CAST(eventtime AS REAL) >= ? AND CAST(eventtime AS REAL) <= ?) "
            f"ORDER BY rowid LIMIT {MAX_ROWS + 1}"
        )

    def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
        con = self._connect()
        try:
            try:
                return self._read(con, since, until)
            except _Undecodable:
                # A text that is no UTF-8 (a caller's name as a phone sent
                # it) failed the whole read, every replay while it was in the
                # window (issue 16). The rare read that meets one goes again,
                # its bad bytes read as U+FFFD (a factory costs every value).
                con.text_factory = _lenient
                return self._read(con, since, until)
        finally:
            con.close()

    def _read(
        self, con: sqlite3.Connection, since: float, until: float | None
    ) -> dict[str, list[CelRecord]]:
        top = until if until is not None else 1e12
        deadline = time.monotonic() + READ_SECONDS
        # SQLite has no timeout of its own: past the deadline the query is
        # interrupted (an unindexed scan of a huge table, a slow disk).
        con.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        out: list[CelRecord] = []
        refused = _Refused()
        where = str(self.path)
        try:
            query, limit = self.query, MAX_ROWS
            rows = _bounded_rows(con.execute(query, (since, top)), where, since, until, limit)
            for row in rows:
                seq = row["seq"]
                at = _event_time(row["eventtime"], seq, refused)
                if at is not None:
                    record = self._record(row, at, refused)
                    if record is not None:
                        out.append(record)
        except sqlite3.Error as exc:
            if str(exc).startswith("Could not decode to UTF-8"):
                raise _Undecodable from None  # its text is the stored value: not said
            if time.monotonic() > deadline:
                raise HistorySourceError(
                    f"[history] cel: {where}: reading table {self.table!r} took over "
                    f"{READ_SECONDS:g} s and was stopped: create the two indexes "
                    "docs/history.md gives"
                ) from None
            named = (
                named_db_error(self.path, exc, advice=_SQLITE_ADVICE)
                if isinstance(exc, sqlite3.DatabaseError)
                else exc
            )
            if named is not exc:
                raise HistorySourceError(f"[history] cel: {named}") from exc
            raise HistorySourceError(
                f"[history] cel: {where}: reading table {self.table!r}: {exc}"
            ) from exc
        finally:
            con.set_progress_handler(None, 0)
        refused.tell(where)
        return group_calls(out)

    @staticmethod
    def _record(row: sqlite3.Row, at: float, refused: _Refused) -> CelRecord | None:
        """One stored row (``at`` its time, read already) as a record."""
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
        return _record(mapped, at, int(row["seq"]), refused)


#: A DB-API connection factory (tests pass a fake; the default is psycopg's).
Connect = Callable[[str], Any]

#: cel_pgsql's text columns the replay reads, in the order of its query.
_PG_TEXTS = (
    "cid_name", "cid_num", "cid_dnid", "context", "exten", "channame",
    "appname", "appdata", "uniqueid", "linkedid", "peer", "extra",
)  # fmt: skip

# Each text cut in PostgreSQL, as SqliteSource.query does. An eventtime that
# psycopg cannot make a datetime of ('infinity', a year past 9999) failed the
# whole fetch: such a row's is read as NULL (and the row left out, said).
_PG_QUERY = (
    "SELECT id, substr(eventtype, 1, {limit_text}) AS eventtype, "
    "CASE WHEN eventtime >= '1970-01-01' AND eventtime < '9999-12-31' THEN eventtime END "
    "AS eventtime, "
    + ", ".join(f"substr({name}, 1, {_TEXT_LIMITS.get(name, _TEXT_LIMIT)})" for name in _PG_TEXTS)
    + " FROM {table} WHERE linkedid IN "
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
            dsn = _pg_conninfo(self.dsn)
        else:
            dsn = self.dsn
        try:
            return connect(dsn)
        except Exception as exc:  # the driver's own errors: one kind for the caller
            raise HistorySourceError(f"[history] cel: cannot connect: {exc}") from exc

    def read(self, since: float, until: float | None = None) -> dict[str, list[CelRecord]]:
        low = datetime.fromtimestamp(since, UTC).replace(tzinfo=None)
        high = datetime.fromtimestamp(until if until is not None else 4e9, UTC).replace(tzinfo=None)
        limit = MAX_ROWS
        query = _PG_QUERY.format(table=self.table, limit=limit + 1, limit_text=_TEXT_LIMIT)
        names = ("id", "eventtype", "eventtime", *_PG_TEXTS)
        where = f"table {self.table!r}"
        out: list[CelRecord] = []
        refused = _Refused()
        con = self._connection()
        try:
            cur = con.cursor()
            try:
                cur.execute(query, (low, high))
                for values in _bounded_rows(cur, where, since, until, limit):
                    row = dict(zip(names, values, strict=False))
                    seq = row.get("id")
                    at = _event_time(row.get("eventtime"), seq, refused)
                    if at is None:
                        continue
                    record = _record(row, at, _row_id(seq), refused)
                    if record is not None:
                        out.append(record)
            except HistorySourceError:
                raise
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
        refused.tell(where)
        return group_calls(out)


def _row_id(value: object) -> int:
    """A row's ``id`` as its place in storage order (0 when it is none)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _pg_conninfo(dsn: str) -> str:
    """``dsn`` with libpq's ``connect_timeout`` (:data:`CONNECT_SECONDS`) and a
    ``statement_timeout`` (:data:`READ_SECONDS`) unless it sets them itself:
    libpq waits for ever for a server that accepted the connection and says
    nothing, and PostgreSQL runs a query as long as it takes."""
    from psycopg import conninfo  # type: ignore[import-not-found, unused-ignore]

    try:
        given = conninfo.conninfo_to_dict(dsn)
    except Exception:  # the driver says what is wrong with it when it connects
        return dsn
    extra: dict[str, Any] = {}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = CONNECT_SECONDS
    if "options" not in given:
        extra["options"] = f"-c statement_timeout={int(READ_SECONDS * 1000)}"
    return str(conninfo.make_conninfo(dsn, **extra)) if extra else dsn


def open_source(settings: HistorySettings, *, connect: Connect | None = None) -> CelSource | None:
    """The configured source, or None when ``[history] cel`` is not set."""
    path = settings.sqlite_path
    if path is not None:
        return SqliteSource(path, settings.table)
    if settings.cel is not None:
        return PostgresSource(settings.cel, settings.table, connect)
    return None
