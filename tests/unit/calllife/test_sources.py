"""Reading stored CEL: cel_sqlite3_custom's file and cel_pgsql's table.

The SQLite file here is written with the schema Asterisk 22 created in the
sandbox (tests/integration/test_call_life.py reads a file Asterisk wrote);
PostgreSQL is exercised here through a fake DB-API connection that checks the
SQL and returns rows typed as psycopg returns them (eventtime a naive
datetime in UTC, as cel_pgsql writes with usegmtime=yes), and in the sandbox
test against a real PostgreSQL that the sandbox's cel_pgsql writes to.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.calllife.fold import Folder
from router.calllife.settings import HistorySettings
from router.calllife.sources import CEL_INDEXES, PostgresSource, SqliteSource, open_source
from router.errors import ConfigError, HistorySourceError
from router.testing.cel import answered_call, write_sqlite


def test_sqlite_reads_whole_calls_in_the_window(tmp_path: Path) -> None:
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    # A window that holds only the call's end still returns all of the call.
    last = call.records[-1].at
    calls = SqliteSource(db).read(last - 0.001, last + 1)
    assert list(calls) == [call.linkedid]
    assert [r.key for r in calls[call.linkedid]] == [r.key for r in call.records]
    assert SqliteSource(db).read(last + 10) == {}


def test_a_record_whose_extra_nests_past_the_parsers_limit_fails_no_replay(
    tmp_path: Path,
) -> None:
    """Issue 16: a CEL ``extra`` of ``{"a": [[[[...`` (the 2,048 characters a
    record keeps) made ``json.loads`` raise RecursionError, which the record's
    ``except ValueError`` let through: the whole read failed, every replay with
    it while the record was in the window (the mark stays before a failed one).
    The record is read with no extra, and the call with it."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE cel SET eventextra = ? WHERE rowid = 1", ('{"a": ' + "[" * 3000,))
    con.close()
    calls = SqliteSource(db).read(0)
    assert [r.key[:2] for r in calls[call.linkedid]] == [r.key[:2] for r in call.records]
    assert calls[call.linkedid][0].extra == {}


@pytest.mark.parametrize(
    ("column", "limit"),
    [("linkedid", 151), ("uniqueid", 151), ("channame", 256), ("context", 80), ("exten", 80)],
)
def test_a_stored_row_with_an_identity_longer_than_asterisk_writes_is_not_folded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, column: str, limit: int
) -> None:
    """Issue 16 (hattack38): a stored CEL row was cut to 512 characters a
    field, so a row no Asterisk wrote (a Linkedid of 600 characters, a
    context of 300) was folded into a call of the cut values. Its identity
    fields are held to Asterisk's limits (router.calls.IDENTITY_LIMITS, as
    live events): the row is left out, said once per read with the field and
    its length, and the rest of the call is read as ever. One just at the
    limit is read."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute(f"UPDATE cel SET {column} = ? WHERE rowid IN (2, 3)", ("7" * (limit + 1),))
        con.execute(f"UPDATE cel SET {column} = ? WHERE rowid = 4", ("7" * limit,))
    con.close()
    with caplog.at_level("WARNING", logger="router.calllife"):
        calls = SqliteSource(db).read(0)
    kept = [r.key for r in calls.get(call.linkedid, [])] + [
        r.key for linkedid, records in calls.items() if linkedid != call.linkedid for r in records
    ]
    assert len(kept) == len(call.records) - 2
    kept_records = [r for records in calls.values() for r in records]
    assert all(len(r.uniqueid) <= 151 and len(r.linkedid) <= 151 for r in kept_records)
    [said] = [r.getMessage() for r in caplog.records if "not folded" in r.getMessage()]
    field = {"channame": "channel"}.get(column, column)
    assert "2 stored row(s) not folded into any call: CEL record" in said
    assert f"with a {field} of {limit + 1} characters: no Asterisk writes one longer" in said
    assert f"longer than {limit} (a broken or hostile writer" in said
    assert "7" * 20 not in said  # the length, never the value


def test_a_stored_rows_long_text_is_cut_not_refused(tmp_path: Path) -> None:
    """An app's data is any text a dialplan (or a SIP peer) gave it: cut to
    512 characters, the row still folded (issue 16)."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE cel SET appdata = ?, peer = ? WHERE rowid = 1", ("x" * 5000, "y" * 900))
    con.close()
    records = SqliteSource(db).read(0)[call.linkedid]
    assert [r.key for r in records] == [r.key for r in call.records]
    assert (len(records[0].appdata), len(records[0].peer)) == (512, 512)


def test_a_pgsql_row_with_a_long_linkedid_is_not_folded() -> None:
    """The same for cel_pgsql's rows: a Linkedid of 600 characters was cut to
    512 and read as a call of its own (issue 16)."""
    rows = pg_rows()
    rows[0] = (*rows[0][:12], "9" * 600, *rows[0][13:])
    calls = PostgresSource("postgresql://x@db/a", connect=lambda dsn: FakeConnection(rows)).read(0)
    assert list(calls) == [answered_call().linkedid]
    assert len(calls[answered_call().linkedid]) == len(rows) - 1


DOCS = Path(__file__).parents[3] / "docs"


@pytest.mark.parametrize("page", [DOCS / "history.md", DOCS / "ru" / "history.md"], ids=str)
def test_the_documented_indexes_serve_the_replays_read(page: Path, tmp_path: Path) -> None:
    """docs/history.md's two indexes, created as written (the `sqlite3` command's
    SQL), make both of the replay's searches index searches, and the read still
    returns the same calls: a changed query that they no longer serve fails here."""
    import re

    [block] = re.findall(r"```sh\nsqlite3 (\S+) \\\n\s*'(.*?)'\n```", page.read_text(), re.S)
    path, sql = block
    assert path == "/var/log/asterisk/cel.db"
    # What the sandbox creates (router.sandbox) is what the page tells.
    assert sql.split() == CEL_INDEXES.split()
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    before = SqliteSource(db).read(0)
    con = sqlite3.connect(db)
    try:
        con.executescript(sql)
        plan = [
            row[3] for row in con.execute("EXPLAIN QUERY PLAN " + SqliteSource(db).query, (0, 1))
        ]
    finally:
        con.close()
    assert any(step.startswith("SEARCH cel USING INDEX cel_linkedid") for step in plan), plan
    assert any(step.startswith("SEARCH cel USING INDEX cel_time") for step in plan), plan
    assert not any(step.startswith("SCAN cel") for step in plan), plan
    assert SqliteSource(db).read(0) == before


def test_sqlite_is_opened_read_only(tmp_path: Path) -> None:
    """callrouter never writes to Asterisk's file (root ignores file modes, so ask SQLite)."""
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    con = SqliteSource(db)._connect()
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            con.execute("DELETE FROM cel")
    finally:
        con.close()


def test_sqlite_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(HistorySourceError, match=r"\[history\] cel: .*nope.db: no such file"):
        SqliteSource(tmp_path / "nope.db").read(0)
    db = tmp_path / "cel.db"
    write_sqlite(db, [])
    with pytest.raises(HistorySourceError, match="reading table 'cdr'"):
        SqliteSource(db, "cdr").read(0)


class FakeCursor:
    def __init__(self, rows: list[tuple[Any, ...]], seen: list[tuple[str, Any]]) -> None:
        self.rows = rows
        self.seen = seen

    def execute(self, query: str, params: Any) -> None:
        self.seen.append((query, params))

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        batch, self.rows = self.rows[:size], self.rows[size:]
        return batch

    def close(self) -> None:
        pass


class FakeConnection:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.seen: list[tuple[str, Any]] = []
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.rows, self.seen)

    def close(self) -> None:
        self.closed = True


def pg_rows() -> list[tuple[Any, ...]]:
    """answered_call() as cel_pgsql stores it (its stock columns)."""
    return [
        (
            n,
            r.event,
            datetime.fromtimestamp(r.at, UTC).replace(tzinfo=None),
            r.cid_name,
            r.cid_num,
            r.cid_dnid,
            r.context,
            r.exten,
            r.channel,
            r.application,
            r.appdata,
            r.uniqueid,
            r.linkedid,
            r.peer,
            r.extra_text,
        )
        for n, r in enumerate(answered_call().records, 1)
    ]


def test_postgres_reads_cel_pgsql_rows_into_the_same_story() -> None:
    connection = FakeConnection(pg_rows())
    dsns: list[str] = []

    def connect(dsn: str) -> FakeConnection:
        dsns.append(dsn)
        return connection

    source = PostgresSource("postgresql://callrouter@db/asterisk", "public.cel", connect)
    calls = source.read(1_700_000_000.0, 1_700_000_100.0)
    assert dsns == ["postgresql://callrouter@db/asterisk"]
    [(query, params)] = connection.seen
    assert "FROM public.cel WHERE linkedid IN (SELECT DISTINCT linkedid FROM public.cel" in query
    assert params == (datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 22, 15, 0))
    assert connection.closed
    call = answered_call()
    [records] = calls.values()
    assert [r.key for r in records] == [r.key for r in call.records]
    assert all(abs(a.at - b.at) < 1e-5 for a, b in zip(records, call.records, strict=True))
    events = Folder().replay(call.linkedid, records)
    assert [(e.kind, e.extension) for e in events] == [
        ("ringing", "101"),
        ("answered", "101"),
        ("hangup", "101"),
    ]


def test_postgres_failures_are_history_source_errors() -> None:
    def refuse(dsn: str) -> FakeConnection:
        raise OSError("connection refused")

    with pytest.raises(HistorySourceError, match="cannot connect: connection refused"):
        PostgresSource("postgresql://x@db/a", connect=refuse).read(0)


def test_postgres_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_psycopg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "psycopg":
            raise ImportError("No module named 'psycopg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    source = open_source(HistorySettings(cel="postgresql://callrouter@db/asterisk"))
    assert isinstance(source, PostgresSource)
    with pytest.raises(
        ConfigError, match=r"\[history\] cel: .*pip install 'psycopg>=3.1' .*\(its pgsql extra\)"
    ):
        source.read(0)


def test_open_source_by_scheme(tmp_path: Path) -> None:
    assert open_source(HistorySettings()) is None
    sqlite = open_source(HistorySettings(cel=f"sqlite://{tmp_path}/cel.db", table="cel"))
    assert sqlite == SqliteSource(tmp_path / "cel.db", "cel")


# -- an administrator's mistyped path, a hostile writer's rows (issue 16) ------------------


def _read_in_a_thread(source: SqliteSource) -> BaseException | dict[str, Any]:
    """``source.read(0)`` in a daemon thread: a read that blocks for ever (a
    FIFO opened) fails the test instead of hanging the suite."""
    import threading

    outcome: list[BaseException | dict[str, Any]] = []

    def read() -> None:
        try:
            outcome.append(source.read(0))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the read hangs"
    return outcome[0]


def test_a_fifo_at_the_path_is_refused_not_opened(tmp_path: Path) -> None:
    """SQLite opened a FIFO given as [history] cel and waited for a writer:
    the replay's worker thread hung for ever. It is refused, named."""
    import os

    fifo = tmp_path / "cel.db"
    os.mkfifo(fifo)
    error = _read_in_a_thread(SqliteSource(fifo))
    assert isinstance(error, HistorySourceError)
    assert f"[history] cel: {fifo}: is a FIFO, socket or device, not a file" in str(error)
    assert "cel_sqlite3_custom" in str(error)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.mkdir(), "is a folder, not a file"),  # SQLite said "disk I/O error"
        (None, "is a FIFO, socket or device, not a file"),  # /dev/null: "no such table"
    ],
    ids=["folder", "device"],
)
def test_a_folder_or_device_at_the_path_is_named_as_such(
    tmp_path: Path, make: Any, said: str
) -> None:
    path = tmp_path / "cel.db"
    if make is None:
        path = Path("/dev/null")
    else:
        make(path)
    with pytest.raises(HistorySourceError, match=rf"\[history\] cel: {path}: {said}"):
        SqliteSource(path).read(0)


def _swap_inside_connect(monkeypatch: pytest.MonkeyPatch, swap: Any) -> None:
    """``swap()`` run as SQLite is asked to open the file: after every look
    callrouter takes at the name, before SQLite opens it (the gap a writer of
    the folder could use)."""
    connect = sqlite3.connect

    def swapped(*args: Any, **kwargs: Any) -> Any:
        swap()
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", swapped)


def test_a_fifo_put_at_the_name_after_the_check_is_not_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was looked at by its name, then opened by SQLite by the name
    again: a FIFO put there in between was opened and the replay's thread
    waited for a writer for ever (issue 16). The file looked at is the one
    read (SQLite opens it through the open descriptor), wherever it went."""
    import os

    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    moved = tmp_path / "moved.db"

    def swap() -> None:
        if not moved.exists():
            db.rename(moved)
            os.mkfifo(db)

    _swap_inside_connect(monkeypatch, swap)
    try:
        outcome = _read_in_a_thread(SqliteSource(db))
    finally:
        # A read left waiting on the FIFO (opened by its name) is let go.
        with contextlib.suppress(OSError):  # ENXIO: nobody waits on it
            os.close(os.open(db, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(outcome, dict), outcome
    assert [r.key for r in outcome[call.linkedid]] == [r.key for r in call.records]


def test_another_file_put_at_the_name_after_the_check_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    other = tmp_path / "other.db"
    write_sqlite(other, answered_call().records)
    _swap_inside_connect(monkeypatch, lambda: other.replace(db) if other.exists() else None)
    with pytest.raises(HistorySourceError, match=rf"\[history\] cel: {db}: "):
        SqliteSource(db).read(0)


def test_without_proc_the_name_is_opened_when_it_is_still_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    readlink = os.readlink

    def no_proc(path: str) -> str:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(2, "No such file or directory")
        return readlink(path)

    monkeypatch.setattr(os, "readlink", no_proc)
    assert list(SqliteSource(db).read(0)) == [call.linkedid]
    other = tmp_path / "other.db"
    write_sqlite(other, answered_call().records)
    real_open = os.open

    def open_then_swap(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if other.exists():
            other.replace(db)
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    with pytest.raises(HistorySourceError, match="removed or replaced while being opened"):
        SqliteSource(db).read(0)


def test_a_dangling_link_names_where_it_points(tmp_path: Path) -> None:
    link = tmp_path / "cel.db"
    link.symlink_to(tmp_path / "gone" / "cel.db")
    with pytest.raises(
        HistorySourceError,
        match=rf"{link}: a symbolic link to {tmp_path}/gone/cel.db, which does not exist",
    ):
        SqliteSource(link).read(0)


def test_a_file_that_is_no_sqlite_database_says_so_with_what_to_check(tmp_path: Path) -> None:
    path = tmp_path / "cel.db"
    path.write_text("Master.csv, not a database\n" * 200)
    with pytest.raises(HistorySourceError) as raised:
        SqliteSource(path).read(0)
    assert str(raised.value) == (
        f"[history] cel: {path}: file is not a database (damaged, or another file put at its "
        "name): check [history] cel: it names the file Asterisk's cel_sqlite3_custom writes "
        "(docs/history.md)"
    )


@pytest.mark.parametrize(
    "eventtime",
    ["-5", "1e300", "NaN", "inf", "-inf", "abc", 1e300, -1.0, float("inf"), b"\xff"],
    ids=repr,
)
def test_a_row_whose_eventtime_is_no_time_is_left_out_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, eventtime: Any
) -> None:
    """Issue 16: a stored row's eventtime of -5 or 1e300 was read as is (the
    row pulled in by its Linkedid): it sorted first or last in its call,
    which then began in 1969 or ended in no year a date can show; NaN and
    text were dropped without a word. Every such row is left out, said once
    with the file and the field, and the call is read without it."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE cel SET eventtime = ? WHERE rowid = 2", (eventtime,))
    con.close()
    with caplog.at_level("WARNING", logger="router.calllife"):
        calls = SqliteSource(db).read(0)
    records = calls[call.linkedid]
    assert [r.key for r in records] == [r.key for i, r in enumerate(call.records) if i != 1]
    [said] = [r.getMessage() for r in caplog.records if "not folded" in r.getMessage()]
    assert said.startswith(f"[history] cel: {db}: 1 stored row(s) not folded into any call: ")
    assert "row 2: its eventtime is no Unix time from 1970 to 9999" in said


def test_a_text_that_is_no_utf8_fails_no_read(tmp_path: Path) -> None:
    """Issue 16: a caller's name stored as the phone sent it (Latin-1, not
    UTF-8) made sqlite3 raise "Could not decode to UTF-8 column 'cidname'
    with text ..." for the whole read: every replay failed while it was in
    the window, its message carrying the caller's bytes. The bad bytes read
    as U+FFFD, as over AMI, and the call is read."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE cel SET cidname = CAST(? AS TEXT) WHERE rowid = 1", (b"P\xe9ter",))
        con.execute("UPDATE cel SET appdata = CAST(? AS TEXT) WHERE rowid = 2", (b"\xff\xfe",))
    con.close()
    records = SqliteSource(db).read(0)[call.linkedid]
    assert [r.key for r in records] == [r.key for r in call.records]
    assert records[0].cid_name == "P\ufffdter"
    assert records[1].appdata == "\ufffd\ufffd"


def test_a_blob_where_text_belongs_is_read_as_text(tmp_path: Path) -> None:
    """A BLOB in a text column was shown as Python's ``b'...'``."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE cel SET appdata = ? WHERE rowid = 1", (b"PJSIP/101",))
    con.close()
    assert SqliteSource(db).read(0)[call.linkedid][0].appdata == "PJSIP/101"


def test_a_read_holds_a_bounded_amount_of_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stored value is cut in SQLite to a little over what a record
    keeps, and the read's sum of text is bounded: rows of huge values (a
    hostile writer's) are an error naming the file, not memory without end."""
    from router.calllife import sources

    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE cel SET appdata = ?", ("x" * 1_000_000,))
    con.close()
    monkeypatch.setattr(sources, "MAX_TEXT_CHARS", 20_000)
    records = SqliteSource(db).read(0)[call.linkedid]  # within the bound: each value is cut
    assert {len(r.appdata) for r in records} == {512}
    monkeypatch.setattr(sources, "MAX_TEXT_CHARS", 2_000)
    with pytest.raises(
        HistorySourceError,
        match=rf"\[history\] cel: {db}: the calls in the window hold over 2000 characters",
    ):
        SqliteSource(db).read(0)


def test_a_window_over_the_row_bound_is_cut_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a replay's read stops at MAX_ROWS records (a bound on
    memory), and that cut was silent: the calls past it were missing or
    incomplete, nothing said so. It is a WARNING naming the store, the
    window (from, to) and the count; a window just within it says nothing."""
    from router.calllife import sources

    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    first, last = call.records[0].at, call.records[-1].at
    monkeypatch.setattr(sources, "MAX_ROWS", len(call.records))
    with caplog.at_level("WARNING", logger="router.calllife"):
        assert len(SqliteSource(db).read(first, last)[call.linkedid]) == len(call.records)
    assert not caplog.records
    monkeypatch.setattr(sources, "MAX_ROWS", 3)
    with caplog.at_level("WARNING", logger="router.calllife"):
        calls = SqliteSource(db).read(1_699_999_990.0, 1_700_000_100.0)
        pg = PostgresSource(
            "postgresql://db/asterisk", "cel", lambda dsn: FakeConnection(pg_rows())
        )
        pg_calls = pg.read(1_699_999_990.0, None)
    assert [r.key for r in calls[call.linkedid]] == [r.key for r in call.records[:3]]
    assert [r.key for r in pg_calls[call.linkedid]] == [r.key for r in call.records[:3]]
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"[history] cel: {db}: the calls with records from 2023-11-14 22:13:10 UTC to "
        "2023-11-14 22:15:00 UTC hold over 3 records (a replay's bound): only the first 3, "
        "in storage order, were read; the calls of the rest are missing or incomplete "
        "(replay a shorter window)",
        "[history] cel: table 'cel': the calls with records from 2023-11-14 22:13:10 UTC to "
        "now hold over 3 records (a replay's bound): only the first 3, in storage order, "
        "were read; the calls of the rest are missing or incomplete (replay a shorter window)",
    ]
    assert all(r.levelname == "WARNING" for r in caplog.records)


def test_a_read_past_its_deadline_is_stopped_naming_the_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has no timeout of its own: an unindexed read of a huge table ran
    as long as it took. Past READ_SECONDS it is interrupted, and the error
    says which indexes make it fast."""
    from router.calllife import sources

    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    monkeypatch.setattr(sources, "READ_SECONDS", -1.0)
    monkeypatch.setattr(sources, "_PROGRESS_STEPS", 1)
    with pytest.raises(
        HistorySourceError,
        match=r"reading table 'cel' took over -1 s and was stopped: create the two indexes",
    ):
        SqliteSource(db).read(0)


def test_a_pgsql_row_whose_eventtime_is_no_time_is_left_out() -> None:
    """The same for cel_pgsql's rows; and an eventtime psycopg cannot load
    (``infinity``, a year past 9999: DataError for the whole fetch) is read
    as NULL by the query itself (checked against a real PostgreSQL in the
    sandbox's test)."""
    from decimal import Decimal

    rows = pg_rows()
    rows[1] = (*rows[1][:2], None, *rows[1][3:])
    rows[2] = (*rows[2][:2], Decimal("Infinity"), *rows[2][3:])
    rows[3] = (*rows[3][:2], float("nan"), *rows[3][3:])
    rows[4] = (*rows[4][:2], -5.0, *rows[4][3:])
    connection = FakeConnection(rows)
    calls = PostgresSource("postgresql://x@db/a", connect=lambda dsn: connection).read(0)
    assert len(calls[answered_call().linkedid]) == len(rows) - 4
    [(query, _)] = connection.seen
    assert (
        "CASE WHEN eventtime >= '1970-01-01' AND eventtime < '9999-12-31' THEN eventtime END"
    ) in query
    assert "substr(appdata, 1, 513)" in query


def test_psycopg_connects_with_a_timeout_and_a_statement_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq waited for ever for a server that accepted the connection and
    said nothing, and a query ran as long as it took: the read's conninfo
    sets both, unless the url does."""
    psycopg = pytest.importorskip("psycopg")
    seen: list[str] = []

    def connect(conninfo: str) -> FakeConnection:
        seen.append(conninfo)
        return FakeConnection(pg_rows())

    monkeypatch.setattr(psycopg, "connect", connect)
    PostgresSource("postgresql://callrouter@db/asterisk").read(0)
    PostgresSource("postgresql://callrouter@db/asterisk?connect_timeout=3&options=-c%20x%3D1").read(
        0
    )
    assert seen[0] == (
        "user=callrouter dbname=asterisk host=db connect_timeout=10 "
        "options='-c statement_timeout=300000'"
    )
    assert "connect_timeout=3" in seen[1]
    assert "statement_timeout" not in seen[1]


def test_a_file_put_at_the_name_while_sqlite_opens_it_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite does not open ``/proc/self/fd/N``: it reads that link (the
    file's name) and opens the name (strace: ``readlink`` then ``openat`` of
    ``.../cel.db``). Another file put at the name between the two was read
    as the CEL store (issue 16); the file SQLite holds open is now held to
    the one looked at."""
    import os
    import urllib.parse

    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    other = tmp_path / "other.db"
    write_sqlite(other, answered_call().records)
    connect = sqlite3.connect

    def as_sqlite_opens(database: str, *args: Any, **kwargs: Any) -> Any:
        link = urllib.parse.unquote(database.removeprefix("file:").partition("?")[0])
        name = os.readlink(link)  # SQLite's first step
        db.rename(tmp_path / "moved.db")  # the file looked at, still open
        other.replace(db)
        return connect(f"file:{urllib.parse.quote(name)}?mode=ro", *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", as_sqlite_opens)
    with pytest.raises(
        HistorySourceError, match=rf"\[history\] cel: {db}: was replaced while SQLite opened it"
    ):
        SqliteSource(db).read(0)
