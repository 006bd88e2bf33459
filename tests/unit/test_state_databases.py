"""The SQLite files in ``state_dir`` are opened as callrouter's own files (issue 16).

SQLite follows a symbolic link at a database's name (it wrote the database,
its ``-wal`` and ``-shm`` where the link pointed; a dangling link made a file
there), opens a FIFO or device it finds (a FIFO at ``-journal`` blocked the
start, and ``callrouter state backup``, for ever) and told only "disk I/O
error" of a folder. Now whatever is at those names and is not a regular file
is set aside before SQLite opens the database (``router/aside.py``), the link
itself and never what it points to, and a fresh database is made; the backup
refuses such a database, naming the file, and touches nothing. A test that
regresses to a blocking open would hang: those opens run in a thread that a
writer opened afterwards frees.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from callrouter_onec.history import FILENAME as HISTORY_NAME
from callrouter_onec.history import HistoryQueue
from callrouter_onec.recordings import FILENAME as UPLOADS_NAME
from callrouter_onec.recordings import UploadQueue

from router import aside as aside_module
from router.api.feed import FILENAME as FEED_NAME
from router.api.feed import EventFeed
from router.aside import (
    check_db_writable,
    db_cantopen,
    db_denied,
    named_db_error,
    set_aside_odd_db_files,
    state_db_error,
)
from router.errors import StateBackupError, StateFileDenied
from router.recordings.store import DB_NAME, RecordingStore
from router.statebackup import backup_state
from tests.unit.fifo_read import without_blocking
from tests.unit.stranger import ROOT_ONLY, STRANGER, as_stranger, folder_in_tmp


def _open_feed(state_dir: Path) -> None:
    asyncio.run(EventFeed.open(state_dir).aclose())


def _open_catalog(state_dir: Path) -> None:
    RecordingStore(state_dir).close()


#: Each database of state_dir, opened as at start.
SITES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "feed": (FEED_NAME, _open_feed),
    "catalog": (DB_NAME, _open_catalog),
}


def _a_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    db.close()


def _aside(state_dir: Path, name: str) -> list[Path]:
    return sorted(state_dir.glob(f"{name}.unreadable-*"))


@pytest.mark.parametrize("site", SITES)
def test_a_link_to_a_database_elsewhere_is_set_aside_not_written(
    tmp_path: Path, site: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, open_it = SITES[site]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "other.sqlite"
    _a_database(victim)
    before = victim.read_bytes()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / name).symlink_to(victim)
    with caplog.at_level(logging.ERROR):
        open_it(state_dir)
    assert victim.read_bytes() == before
    assert sorted(p.name for p in elsewhere.iterdir()) == ["other.sqlite"]  # no -wal, -shm
    (aside,) = _aside(state_dir, name)
    assert aside.is_symlink()
    assert os.readlink(aside) == str(victim)
    path = state_dir / name
    assert path.is_file()
    assert not path.is_symlink()
    assert any(
        f"{path} is a symbolic link (not followed)" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("site", SITES)
def test_a_dangling_link_makes_no_file_where_it_points(tmp_path: Path, site: str) -> None:
    name, open_it = SITES[site]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / name).symlink_to(tmp_path / "nowhere.sqlite")
    open_it(state_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert (state_dir / name).is_file()


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_a_fifo_at_a_database_name_does_not_block_the_start(
    tmp_path: Path, site: str, suffix: str
) -> None:
    name, open_it = SITES[site]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _a_database(state_dir / name)
    fifo = state_dir / f"{name}{suffix}"
    if suffix == "":
        (state_dir / name).unlink()
    os.mkfifo(fifo)
    outcome = without_blocking(lambda: open_it(state_dir), fifo)
    assert outcome is None
    (aside,) = _aside(state_dir, f"{name}{suffix}")
    assert aside.is_fifo()
    if suffix:  # the good database beside it is kept, not set aside
        assert _aside(state_dir, name) == []
        db = sqlite3.connect(state_dir / name)
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
        db.close()


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_folder_at_a_database_name_is_set_aside(tmp_path: Path, site: str, suffix: str) -> None:
    name, open_it = SITES[site]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / f"{name}{suffix}").mkdir()
    open_it(state_dir)
    (aside,) = _aside(state_dir, f"{name}{suffix}")
    assert aside.is_dir()
    assert (state_dir / name).is_file()


def test_a_device_is_never_opened(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / DB_NAME).symlink_to("/dev/zero")
    _open_catalog(state_dir)
    (aside,) = _aside(state_dir, DB_NAME)
    assert os.readlink(aside) == "/dev/zero"


def test_what_cannot_be_set_aside_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / DB_NAME
    path.symlink_to("/dev/zero")

    def refused(path: Path, aside: Path) -> Path:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(aside_module, "move_aside", refused)
    with pytest.raises(OSError, match="move it away and start again") as caught:
        set_aside_odd_db_files(path)
    assert f"{path} is a symbolic link" in str(caught.value)
    assert "Permission denied" in str(caught.value)
    assert path.is_symlink()


@pytest.mark.parametrize("suffix", ["-journal", "-wal", "-shm"])
def test_the_backup_refuses_an_odd_side_file_and_does_not_block(
    tmp_path: Path, suffix: str
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _a_database(state_dir / DB_NAME)
    fifo = state_dir / f"{DB_NAME}{suffix}"
    os.mkfifo(fifo)
    outcome = without_blocking(lambda: list(backup_state(state_dir, tmp_path / "copy")), fifo)
    assert isinstance(outcome, StateBackupError)
    assert f"{DB_NAME}{suffix} is not a regular file" in str(outcome)
    assert fifo.is_fifo()  # the backup changes nothing in the state folder


def test_a_catalog_that_is_no_database_is_an_error_naming_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / DB_NAME
    path.write_bytes(b"not SQLite\n" * 1000)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        RecordingStore(state_dir)
    message = str(caught.value)
    assert message.startswith(f"{path}: file is not a database")
    assert "move it away" in message
    assert path.read_bytes() == b"not SQLite\n" * 1000  # kept as it was


def test_a_lock_is_told_as_it_was(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError) as caught:
        raise named_db_error(tmp_path, sqlite3.OperationalError("database is locked"))
    assert str(caught.value) == "database is locked"


def _open_history(state_dir: Path) -> None:
    HistoryQueue(state_dir).close()


def _open_uploads(state_dir: Path) -> None:
    UploadQueue(state_dir / UPLOADS_NAME).close()


#: Every SQLite state file callrouter and the 1C plugin write all run, opened as at start.
WRITTEN: dict[str, tuple[str, Callable[[Path], None]]] = {
    **SITES,
    "onec-history": (HISTORY_NAME, _open_history),
    "onec-uploads": (UPLOADS_NAME, _open_uploads),
}


@ROOT_ONLY
@pytest.mark.parametrize("site", sorted(WRITTEN))
def test_another_users_file_sqlite_opens_read_only_refuses_the_start(site: str) -> None:
    """Issue 16: a state file of another user (root's, 0644) opens read-only in
    SQLite, which says nothing until the first write: the recordings catalog
    and the 1C plugin's queues then failed at every write all run (the history
    queue at its first prune, with SQLite's bare "attempt to write a readonly
    database"). Each refuses the start naming the file, as the event feed
    does, and the file is kept as it was. Run as another user: root writes
    through any mode."""
    name, open_it = WRITTEN[site]
    with folder_in_tmp("callrouter-state-") as base:
        os.chmod(base, 0o755)  # the stranger reaches the state folder
        state = base / "state"
        state.mkdir(mode=0o700)
        open_it(state)  # made by root, as a start under sudo would
        path = state / name
        kept = path.read_bytes()
        os.chown(state, STRANGER, STRANGER)
        os.chmod(path, 0o644)

        def start() -> str:
            try:
                open_it(state)
            except StateFileDenied as exc:
                return f"refused: {exc}"
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            return "started"

        said = as_stranger(start)
        assert said.startswith(
            f"refused: [Errno 13] {path}: SQLite: attempt to write a readonly database: "
        ), said
        assert f"chown {STRANGER} {path}" in said
        # Said as it is: SQLite read it, only its writes are refused.
        assert f"({STRANGER}) may not open or write this state file" in said
        assert os.stat(path).st_uid == 0
        assert path.read_bytes() == kept


def test_a_writable_database_passes_the_check_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    _a_database(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA user_version = 7")
    before = path.read_bytes()
    check_db_writable(db)
    assert not db.in_transaction
    assert db.execute("PRAGMA user_version").fetchone() == (7,)
    db.close()
    assert path.read_bytes() == before


def test_a_database_another_process_is_writing_passes_the_check(tmp_path: Path) -> None:
    """Its write lock held past the busy timeout: writable, the check cannot
    tell more and does not refuse the start for it."""
    path = tmp_path / "x.sqlite3"
    _a_database(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        check_db_writable(db)
        assert not db.in_transaction
    finally:
        db.close()
        writer.execute("ROLLBACK")
        writer.close()


def _sqlite_error(name: str) -> sqlite3.OperationalError:
    """The error SQLite raises with the extended result code ``name``."""
    exc = sqlite3.OperationalError("attempt to write a readonly database")
    exc.sqlite_errorname = name
    return exc


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("SQLITE_READONLY", None),
        ("SQLITE_READONLY_CANTLOCK", "its shared-memory file {path}-shm is read-only"),
        ("SQLITE_READONLY_CANTINIT", "its shared-memory file {path}-shm is read-only"),
        ("SQLITE_READONLY_RECOVERY", "shared-memory file {path}-shm is read-only"),
        ("SQLITE_READONLY_ROLLBACK", "rolled back into the read-only file"),
        ("SQLITE_READONLY_DIRECTORY", "its folder {folder} is not writable"),
    ],
)
def test_sqlites_permission_codes_refuse_the_start_saying_which_file(
    tmp_path: Path, code: str, said: str | None
) -> None:
    """https://www.sqlite.org/rescode.html: each of these is a permission, of
    the file, its -shm or its folder: the start is refused, naming the one
    to give back to callrouter's user (issue 16)."""
    path = tmp_path / "x.sqlite3"
    error = state_db_error(path, _sqlite_error(code))
    assert isinstance(error, StateFileDenied)
    assert db_denied(_sqlite_error(code))
    message = str(error)
    assert message.startswith(f"[Errno 13] {path}: SQLite: attempt to write a readonly database")
    if said is not None:
        assert said.format(path=path, folder=tmp_path) in message
    else:
        assert "SQLite: attempt to write a readonly database: the user" in message


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("SQLITE_CANTOPEN_ISDIR", "a folder is at the database's name, not a file"),
        ("SQLITE_CANTOPEN_NOTEMPDIR", "SQLite found no folder for its temporary files"),
        ("SQLITE_CANTOPEN_FULLPATH", "SQLite could not make the file's full path"),
        ("SQLITE_CANTOPEN_CONVPATH", "the path could not be converted"),
        ("SQLITE_CANTOPEN_SYMLINK", "a symbolic link is at the database's name"),
    ],
)
def test_sqlites_cantopen_codes_that_are_no_permission_are_said_as_what_they_are(
    tmp_path: Path, code: str, said: str
) -> None:
    """https://www.sqlite.org/rescode.html: these SQLITE_CANTOPEN_* codes say
    why the file cannot be opened, and none is a permission: they were all
    "denied", and the start advised a chown that changed nothing (issue 16)."""
    path = tmp_path / "x.sqlite3"
    exc = _sqlite_error(code)
    assert not db_denied(exc)
    assert db_cantopen(exc)
    error = state_db_error(path, exc)
    assert not isinstance(error, StateFileDenied)
    assert isinstance(error, sqlite3.OperationalError)
    assert str(error).startswith(f"{path}: attempt to write a readonly database ({code}: {said}")
    assert "chown" not in str(error)
    assert not list(tmp_path.iterdir())  # nothing set aside, nothing made


def _cantopen(path: Path) -> sqlite3.OperationalError:
    """The plain SQLITE_CANTOPEN SQLite itself raises opening ``path``."""
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite3.connect(path).close()
    assert caught.value.sqlite_errorname == "SQLITE_CANTOPEN"
    return caught.value


def test_plain_cantopen_of_a_missing_folder_is_said_as_such_not_as_a_permission(
    tmp_path: Path,
) -> None:
    """A plain SQLITE_CANTOPEN was taken for a permission whatever its cause:
    a state folder removed under the service was said as "may not open or
    write this state file" with a chown of a file that is not there (issue
    16). The file system says what it is: the folder, ENOENT."""
    gone = tmp_path / "gone"
    path = gone / "x.sqlite3"
    exc = _cantopen(path)
    assert db_denied(exc)  # kept as it is: never set aside
    error = state_db_error(path, exc)
    assert not isinstance(error, StateFileDenied)
    assert str(error) == (
        f"{path}: unable to open database file (SQLITE_CANTOPEN: {gone}: ENOENT No such "
        "file or directory: its folder does not exist: make it (callrouter's user its "
        "owner, chmod 700)): the file is left as it is; start again once it is done"
    )
    assert not gone.exists()


def test_plain_cantopen_of_a_path_through_a_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"")
    path = tmp_path / "state" / "x.sqlite3"
    error = state_db_error(path, _cantopen(path))
    assert not isinstance(error, StateFileDenied)
    assert f"(SQLITE_CANTOPEN: {path}: ENOTDIR Not a directory: a part of its path" in str(error)
    assert "chown" not in str(error)


def test_plain_cantopen_that_opens_now_is_said_as_passing(tmp_path: Path) -> None:
    """Too many files open, a disk full then freed: nothing the file system
    says now; no chown advised, nothing left in the folder."""
    path = tmp_path / "x.sqlite3"
    _a_database(path)
    kept = path.read_bytes()
    error = state_db_error(path, _sqlite_error("SQLITE_CANTOPEN"))
    assert not isinstance(error, StateFileDenied)
    assert "(SQLITE_CANTOPEN; the file and its folder open now: a passing cause" in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sqlite3"]
    assert path.read_bytes() == kept


@ROOT_ONLY
def test_plain_cantopen_of_a_folder_callrouter_may_not_enter_is_a_permission() -> None:
    """What a folder callrouter's user may not enter gives: a permission, the
    start refused naming the file, as before."""
    with folder_in_tmp("callrouter-state-") as base:
        os.chmod(base, 0o755)
        state = base / "state"
        state.mkdir(mode=0o700)  # root's: the stranger may not enter it
        path = state / "x.sqlite3"

        def start() -> str:
            try:
                sqlite3.connect(path).close()
            except sqlite3.Error as exc:
                error = state_db_error(path, exc)
                return f"{type(error).__name__}: {error}"
            return "opened"

        said = as_stranger(start)
    assert said.startswith(
        f"StateFileDenied: [Errno 13] {path}: SQLite: unable to open database file: "
    ), said
    assert f"chown {STRANGER} {path}" in said


def test_the_write_check_raises_a_cantopen_code_it_meets(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_db_writable took every code but a permission's for another
    process's lock and let the file pass."""

    class Refusing:
        def execute(self, sql: str) -> None:
            raise _sqlite_error("SQLITE_CANTOPEN_ISDIR")

    with pytest.raises(sqlite3.OperationalError) as caught:
        check_db_writable(Refusing())  # type: ignore[arg-type]
    assert caught.value.sqlite_errorname == "SQLITE_CANTOPEN_ISDIR"


def test_a_database_moved_while_open_is_said_as_such_not_as_another_users(
    tmp_path: Path,
) -> None:
    """SQLITE_READONLY_DBMOVED is no permission: the file was renamed or
    deleted under the connection (a restore, a person's mv). It was taken
    for "another user's file" (chown advice); the write check let it pass
    as a lock, and every write then failed all run (issue 16)."""
    path = tmp_path / "x.sqlite3"
    _a_database(path)  # rollback journal: a moved file refuses writes
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        path.rename(tmp_path / "elsewhere.sqlite3")
        with pytest.raises(sqlite3.OperationalError) as caught:
            check_db_writable(db)
    finally:
        db.close()
    assert caught.value.sqlite_errorname == "SQLITE_READONLY_DBMOVED"
    assert not db_denied(caught.value)
    error = state_db_error(path, caught.value)
    assert not isinstance(error, StateFileDenied)
    assert str(error) == (
        f"{path}: attempt to write a readonly database (SQLITE_READONLY_DBMOVED: the file "
        "was moved or deleted while callrouter opened it, by another process: a state "
        "restore, a person): the file now at that name is left as it is; start again"
    )
