"""The recordings catalog: one SQLite file in ``state_dir``, 0600.

Every recording callrouter started is a row per file (``call_id``, ``part``)
that moves ``recording`` -> ``closed`` (the file is complete, hashed, maybe
transcoded) -> ``delivered`` (a receiver such as the 1C plugin confirmed it
has exactly these bytes) -> ``removed`` (retention deleted or moved it), or ->
``failed`` (the file never became complete; what Asterisk left of it, if
anything, stays in ``file`` and ``size`` for retention to count and, after
``max_age_days``, delete). A complete file with no sound (a WAV of its header
alone: the call nobody answered) is ``empty`` instead of ``closed``: listed,
never handed to a receiver; once retention deletes it, its row stays ``empty``
with no ``file`` until forgotten. A closed, delivered or empty file found gone
from disk (deleted by hand) is ``missing``
(:meth:`RecordingStore.mark_missing`). Each row says who started it
(:class:`Origin`: a rule, the API with its token, a plugin): the API stops
only what the API started, so a recording an administrator's rule requires is
out of an agent's reach. ``extensions`` are the phones whose leg was on the
call while it was recorded (the recorder adds them as legs come and go): whose
tokens may fetch it. It is the outbox between the core and whoever delivers: a
plugin polls :meth:`RecordingStore.closed` and answers with
:meth:`RecordingStore.confirm`, so a recording closed while the receiver or 1C
was down is still there after a restart, and retention never deletes what
nobody confirmed (below the hard cap).

The store is opened by the recorder, the API and the receiving plugin, each
with its own connection: WAL and a busy timeout make that safe, and every
method is short.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from router import jsonsafe
from router.aside import check_db_writable, move_aside, set_aside_odd_db_files, state_db_error
from router.errors import FileOutOfSight
from router.recordings.naming import FileName, check_call_id, check_part

__all__ = [
    "DB_NAME",
    "KEPT_STATES",
    "ORIGINS",
    "FileOutOfSight",
    "Origin",
    "Recording",
    "RecordingStore",
    "UsageReport",
    "catalog_conversions",
    "catalog_open",
    "file_identity",
    "put_back_catalog",
    "seen_identity",
    "write_back",
]

DB_NAME: Final = "recordings.sqlite"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    part TEXT NOT NULL,
    format TEXT NOT NULL,
    pbx_path TEXT NOT NULL,
    local_path TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    extensions TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    stop_seen_at REAL,
    closed_at REAL,
    file TEXT,
    content_type TEXT,
    size INTEGER,
    sha256 TEXT,
    duration REAL,
    delivered_at REAL,
    receiver TEXT,
    removed_at REAL,
    note TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT 'unknown',
    origin_by TEXT NOT NULL DEFAULT '',
    mixmonitor_id TEXT NOT NULL DEFAULT '',
    stop_asked_at REAL,
    upload_error TEXT NOT NULL DEFAULT '',
    upload_failed_at REAL,
    retry_asked_at REAL,
    UNIQUE (call_id, part)
);
CREATE INDEX IF NOT EXISTS recordings_state ON recordings (state, id);
"""
#: Columns added since the first catalog: (name, definition) for ``ALTER TABLE``.
#: A row written before has ``origin`` 'unknown': see :class:`Origin`.
_ADDED: Final = (
    ("origin", "TEXT NOT NULL DEFAULT 'unknown'"),
    ("origin_by", "TEXT NOT NULL DEFAULT ''"),
    ("mixmonitor_id", "TEXT NOT NULL DEFAULT ''"),
    ("stop_asked_at", "REAL"),
    ("upload_error", "TEXT NOT NULL DEFAULT ''"),
    ("upload_failed_at", "REAL"),
    ("retry_asked_at", "REAL"),
)
#: What started a recording (``Origin.kind``).
ORIGINS: Final = ("rule", "api", "plugin", "unknown")
#: The rows whose file is on disk: closed, delivered, and failed or empty ones that
#: (still) have a file.
_ON_DISK: Final = (
    "(state IN ('closed', 'delivered') OR (state IN ('failed', 'empty') AND file IS NOT NULL))"
)
#: The rows whose file callrouter believes is on disk, complete: a file gone from
#: there is ``missing`` (:meth:`RecordingStore.mark_missing`).
KEPT_STATES: Final = ("closed", "delivered", "empty")
#: Rows whose file is gone, forgotten :data:`~router.recordings.retention.KEEP_REMOVED_DAYS`
#: days after it went (``removed_at``).
_GONE: Final = "(state IN ('removed', 'missing') OR (state = 'empty' AND file IS NULL))"
#: A closed WAV of no sound: made ``empty`` at every start (a catalog written by a
#: callrouter before that state, whose such rows are still waiting for delivery).
_EMPTY_WAV: Final = "state = 'closed' AND format = 'wav' AND duration = 0"
#: Closed files the receiver gave up sending.
_GAVE_UP: Final = "(state = 'closed' AND upload_error != '')"
_COLUMNS: Final = (
    "id, call_id, part, format, pbx_path, local_path, channel, extensions, state, started_at, "
    "closed_at, file, content_type, size, sha256, duration, delivered_at, receiver, note, "
    "origin, origin_by, mixmonitor_id, stop_asked_at, upload_error, upload_failed_at, "
    "retry_asked_at"
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who started a recording, kept with it.

    ``kind`` is one of :data:`ORIGINS`: ``rule`` (a ``record`` action; ``by`` is the
    rule's name), ``api`` (``POST /api/v1/calls/{id}/recording``; ``by`` is the
    token's name and the extensions it had on the call), ``plugin`` (a plugin
    calling :mod:`router.recordings.mixmonitor` itself). ``unknown`` is a row a
    catalog held before origins were kept: nobody can say it was the API's, so the
    API's stop leaves it alone (a compliance recording wrongly stoppable is the
    worse mistake; such a row is a call that was live across the upgrade, and it
    still ends with the call or ``max_duration``).
    """

    kind: str
    by: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ORIGINS:
            raise ValueError(f"origin {self.kind!r} is not one of {', '.join(ORIGINS)}")


UNKNOWN: Final = Origin("unknown")


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording file as the catalog knows it."""

    id: int
    call_id: str
    part: str
    format: str
    pbx_path: str
    local_path: Path
    channel: str
    extensions: tuple[str, ...]
    state: str
    started_at: float
    closed_at: float | None = None
    #: The file to deliver (the transcoded one when transcoding is on).
    file: Path | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    duration: float | None = None
    delivered_at: float | None = None
    receiver: str | None = None
    note: str = ""
    origin: Origin = UNKNOWN
    #: The id Asterisk gave the MixMonitor writing this file (its AMI answer's
    #: ``MixMonitorID``); empty when unknown (started by ``[callrouter-record]``, or by
    #: an older callrouter). Files of one MixMonitor share it.
    mixmonitor_id: str = ""
    #: When callrouter asked Asterisk to stop this file's MixMonitor (the API's stop),
    #: so that the channel's ``MixMonitorStop``, which names no MixMonitor, closes
    #: these files and not another MixMonitor's still writing on the channel.
    stop_asked_at: float | None = None
    #: Why the receiver gave up sending this closed file (1C refused it, the file is
    #: gone), and when: it is not sent again unless asked (:meth:`RecordingStore.ask_retry`,
    #: ``callrouter recordings retry``). Empty while it is waiting or was never tried.
    upload_error: str = ""
    upload_failed_at: float | None = None
    #: When ``callrouter recordings retry`` last asked for this file to be sent again:
    #: a receiver sends again an upload it gave up on before that moment.
    retry_asked_at: float | None = None

    @property
    def event_id(self) -> str:
        """The idempotency key of this file at a receiver (as history's ``event_id``)."""
        return f"{self.call_id}/recording/{self.part}"


@dataclass(frozen=True, slots=True)
class UsageReport:
    """What ``callrouter recordings status`` prints and a metric exports."""

    counts: dict[str, int]
    #: Closed, delivered and failed files still on disk.
    bytes_on_disk: int
    undelivered_bytes: int
    oldest_undelivered_at: float | None
    #: What failed recordings left on disk (incomplete files), part of ``bytes_on_disk``.
    failed_bytes: int = 0
    #: Closed files the receiver gave up sending (:attr:`Recording.upload_error`), and
    #: their bytes: part of ``undelivered_bytes``, but nothing is waiting for them.
    upload_failed: int = 0
    upload_failed_bytes: int = 0
    #: When the oldest closed file still waiting for its receiver was closed.
    oldest_waiting_at: float | None = None


def _extensions(text: object) -> tuple[str, ...]:
    """A row's ``extensions`` (a JSON list of texts, as :meth:`RecordingStore.start`
    writes it); none for anything else (a damaged or tampered catalog), so no
    extension reads the file: read as it was, it raised in every query that met
    the row (the sweep, the API's list, the uploads to 1C)."""
    try:
        value = jsonsafe.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return ()
    return tuple(value)


def _row(row: sqlite3.Row) -> Recording:
    return Recording(
        id=row["id"],
        call_id=row["call_id"],
        part=row["part"],
        format=row["format"],
        pbx_path=row["pbx_path"],
        local_path=Path(row["local_path"]),
        channel=row["channel"],
        extensions=_extensions(row["extensions"]),
        state=row["state"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        file=Path(row["file"]) if row["file"] else None,
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        duration=row["duration"],
        delivered_at=row["delivered_at"],
        receiver=row["receiver"],
        note=row["note"],
        origin=Origin(row["origin"] if row["origin"] in ORIGINS else "unknown", row["origin_by"]),
        mixmonitor_id=row["mixmonitor_id"],
        stop_asked_at=row["stop_asked_at"],
        upload_error=row["upload_error"],
        upload_failed_at=row["upload_failed_at"],
        retry_asked_at=row["retry_asked_at"],
    )


def create_private(target: Path) -> None:
    """The file exists with mode 0600 before SQLite opens it (its -wal/-shm inherit it).

    An existing file is never opened, only given its mode: closing any descriptor of
    a database file drops every POSIX lock this process holds on it (``fcntl`` locks
    belong to the process), its SQLite connections' too. The recorder, the 1C plugin
    and the API each open the catalog in the service's process; when the second did
    so, the first connection lost its lock, the next other process to close the
    catalog (``callrouter recordings status``) took itself for the last, checkpointed
    and deleted the WAL, and the service went on writing into the deleted one: no
    other process saw a file close or get delivered until the service stopped, and
    their writes (``recordings retry``) went into another WAL.
    """
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        with contextlib.suppress(OSError):  # not ours to change (another owner)
            os.chmod(target, 0o600)
        return
    os.close(fd)  # a new file: no connection of this process has it open


def file_identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), or None when there is none (or no look at it)."""
    try:
        return seen_identity(path)
    except OSError:
        return None


def seen_identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), None when there is none there; raises
    :class:`FileOutOfSight` (the errno's text) when ``stat`` cannot tell."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileOutOfSight(exc.errno, exc.strerror or type(exc).__name__, str(path)) from None
    return found.st_dev, found.st_ino


def write_back(
    path: Path,
    opened: tuple[int, int] | None,
    db: sqlite3.Connection,
    *,
    close: Callable[[], None],
    reopen: Callable[[Path], None],
    copied: Path | None = None,
) -> str | None:
    """Write an open SQLite file again where it belongs when it was deleted or
    replaced while open; returns ``"deleted"`` or ``"replaced"``, or None when
    the file there is still ``opened`` (its device and inode, as
    :func:`seen_identity` gave them for the file opened; None: nothing is
    done). Raises :class:`FileOutOfSight` when ``stat`` cannot tell what is
    there (EACCES after a ``chmod`` of the state folder): nothing is moved or
    written then. Public as ``router.write_back`` (docs/plugins.md): the 1C
    plugin's queues use it too. Blocking: run it off the event loop.

    SQLite goes on with the file it has open, deleted or not, and the next
    start finds none (or the one put there). The open file is copied beside
    ``path`` (``VACUUM INTO`` through ``db``, 0600), a file put in its place
    is moved aside as ``NAME.replaced-TIME`` (``-2``, ``-3`` added when that name
    is taken: :func:`router.aside.move_aside`), then every connection to the old
    file is closed (``close``), the copy takes its place and they are opened
    again there (``reopen(path)``). The caller keeps every connection of this
    process to the file from writing meanwhile (their locks), else a write
    after the copy is lost with the old file.

    When the copy cannot take its place (``os.replace`` refused: the folder
    made read-only, an I/O error) the connections, closed by then, are opened
    on the copy (``reopen(copy)``), which holds every row: the file goes on
    working and the ``OSError`` raised names the copy. The caller passes that
    copy as ``copied`` next time: it is moved in place then, with no new copy. A
    closed connection left as it was raised ``ProgrammingError`` at every use
    until the restart, and the next write back copied from it and failed too.
    ``copied`` is also a copy the caller made beforehand and knows holds every
    row (:func:`put_back_catalog`).
    """
    if opened is None:
        return None
    found = seen_identity(path)  # a file out of sight is not written over
    if found == opened:
        return None
    what = "deleted" if found is None else "replaced"
    copy = _copy(path, db) if copied is None else copied
    if found is not None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        try:
            move_aside(path, path.with_name(f"{path.name}.replaced-{stamp}"))
        except OSError:
            if copied is None:  # made here, in use nowhere: not left beside the file
                with contextlib.suppress(OSError):
                    copy.unlink()
            raise
    # Closed first: the last connection's close removes NAME-wal and NAME-shm,
    # which the one opened next would otherwise take for its own.
    close()
    try:
        os.replace(copy, path)
    except OSError as exc:
        with contextlib.suppress(OSError, sqlite3.Error):  # else opened at the next use
            reopen(copy)
        raise OSError(
            exc.errno,
            f"{exc.strerror or exc} (moving {copy.name} in its place; callrouter goes on "
            f"with that copy and tries again)",
        ) from exc
    reopen(path)
    return what


def _copy(path: Path, db: sqlite3.Connection) -> Path:
    """The file ``db`` has open copied beside ``path`` (``VACUUM INTO``, 0600)."""
    copy = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        copy.unlink()
    create_private(copy)  # empty and 0600: VACUUM INTO fills it
    try:
        db.execute("VACUUM INTO ?", (str(copy),))
    except BaseException:
        with contextlib.suppress(OSError):
            copy.unlink()
        raise
    return copy


#: The catalogs open in this process, by path: the recorder, the API and a
#: receiving plugin each have one; :func:`put_back_catalog` moves them all. A
#: store leaves its set when closed, and a path whose set is empty (its stores
#: closed, or collected unclosed) leaves the table: one entry per path ever
#: opened, kept for the process's life, grew it for ever (issue 16).
_OPEN: dict[Path, weakref.WeakSet[RecordingStore]] = {}
_OPEN_LOCK = threading.Lock()


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def catalog_open(path: Path) -> bool:
    """Whether a catalog at ``path`` is open in this process (the recorder, the
    API, a receiving plugin): only then is its file the engine's to watch; with
    ``[recordings]`` on but no part using it, a file left there may go."""
    with _OPEN_LOCK:
        return any(not s._closed for s in _OPEN.get(_key(path), ()))


#: Each open catalog's own connection for the copy of :func:`put_back_catalog`,
#: with the file it has open: through a store's connection, the copy held that
#: store's lock, and the recorder calls its store on the event loop (a deleted
#: 5 MB catalog held the loop 40 ms). Opened by a look that finds the catalog
#: where it was, closed with the last store or by a write back.
_SPARE: dict[Path, tuple[sqlite3.Connection, tuple[int, int] | None]] = {}
#: One write back at a time; taken before ``_OPEN_LOCK`` and the stores' locks.
_PUT_BACK_LOCK = threading.Lock()


def _drop_spare(key: Path) -> None:
    """Under ``_PUT_BACK_LOCK``: the spare connection of ``key`` closed."""
    spare = _SPARE.pop(key, None)
    if spare is not None:
        spare[0].close()


def _open_spare(key: Path, opened: tuple[int, int] | None) -> None:
    """Under ``_PUT_BACK_LOCK``, no store's lock held: a spare connection to the
    catalog at ``key``, which the stores have open (``opened``); none when it
    cannot be opened (the copy is then made through a store's connection, under
    its lock)."""
    if key in _SPARE or opened is None:
        return
    try:
        # mode=rw: a catalog deleted since the look is not made again here,
        # empty and with the umask's mode, for the next look to call "replaced".
        db = sqlite3.connect(
            f"file:{urllib.parse.quote(str(key))}?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=5.0,
        )
    except sqlite3.Error:
        return
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens -wal and -shm
        if file_identity(key) == opened:
            _SPARE[key] = (db, opened)
            return
    except sqlite3.Error:
        pass
    db.close()


def put_back_catalog(path: Path) -> str | None:
    """The catalog at ``path`` deleted or replaced while open in this process:
    written again from the open file (:func:`write_back`) and every connection
    of this process to it opened there; returns ``"deleted"``, ``"replaced"``
    or None (where it was, or not open here). Blocking: run it off the loop.

    The copy is made through a spare connection, with no store's lock held,
    and the stores' locks are taken for the swap only (closing, renaming,
    opening: no copy). A write through a store while the copy was made (its
    connection's ``total_changes`` moved) would be lost with the old file:
    then the copy is made again under the stores' locks, as when there is no
    spare connection.
    """
    key = _key(path)
    with _PUT_BACK_LOCK:
        with _OPEN_LOCK:
            # By the path as opened (``_key``): a state_dir given with ``..`` named
            # no open catalog, and a deleted one was never written back.
            stores = sorted((s for s in _OPEN.get(key, ()) if not s._closed), key=id)
        if not stores:
            _drop_spare(key)
            return None
        with contextlib.ExitStack() as held:
            for store in stores:
                held.enter_context(store._lock)
            stores = [s for s in stores if not s._closed]  # closed meanwhile
            if not stores:
                return None
            # Written back before but not opened again then (a nearly full disk):
            # opened now, or the error says why not, as at each use meanwhile.
            unopened = [s._unopened for s in stores if s._unopened is not None]
            for store in stores:
                store._ready()
            at = stores[0]._at  # a copy a failed swap left in use: moved in place now
            if unopened and at is None:
                return unopened[0]
            opened = stores[0]._file
            moving = [s for s in stores if s._file == opened]
            found = seen_identity(path)  # a file out of sight is not written over
            marks = {id(s): s._db.total_changes for s in moving}
        if found == opened:
            # For the copy, should it go: opened with no store's lock held, as the
            # first read may wait out another connection's lock (busy timeout 5 s)
            # and the recorder calls its store on the event loop. A store closed
            # meanwhile drops it as it takes ``_PUT_BACK_LOCK``, held here.
            _open_spare(key, opened)
            return None
        spare = _SPARE.get(key)
        copied = at
        if copied is None and spare is not None and spare[1] == opened:
            with contextlib.suppress(sqlite3.Error, OSError):  # else under the locks
                copied = _copy(path, spare[0])
        with contextlib.ExitStack() as held:
            for store in stores:  # no write of this process between copy and swap
                held.enter_context(store._lock)
            moving = [s for s in moving if not s._closed]  # closed meanwhile
            written = any(s._db.total_changes != marks[id(s)] for s in moving)
            if (written or not moving) and copied is not None and copied != at:
                with contextlib.suppress(OSError):  # a write came: copied again
                    copied.unlink()
                copied = at
            if not moving:
                return None
            try:
                what = "deleted" if seen_identity(path) is None else "replaced"

                def close() -> None:
                    _drop_spare(key)  # a connection to the old file too
                    for store in moving:
                        if not store._closed:
                            store._db.close()

                def reopen(target: Path) -> None:
                    for store in moving:  # this is the file in use, opened or not
                        store._unopened = what
                        store._at = None if target == path else target
                    for store in moving:
                        store._ready()

                return write_back(
                    path, opened, moving[0]._db, close=close, reopen=reopen, copied=copied
                )
            finally:
                # The spare's copy, unless moved in place or in use (a refused
                # move): the file found back where it was, out of sight, or not
                # moved aside left it in the state folder, a copy of every row.
                if copied not in (None, at) and all(s._at != copied for s in moving):
                    with contextlib.suppress(OSError):
                        copied.unlink()


class RecordingStore:
    """The catalog in ``state_dir``; see the module docstring for the states."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_NAME
        set_aside_odd_db_files(self.path)  # no link followed, no FIFO opened (issue 16)
        create_private(self.path)
        self._lock = threading.Lock()
        self._closed = False
        #: ``"deleted"`` or ``"replaced"`` while the file :func:`put_back_catalog`
        #: wrote back for that reason is not open yet; None: it is open.
        self._unopened: str | None = None
        #: The copy :func:`write_back` could not move in place and opened instead
        #: (it holds every row); None: the connection is on ``path``.
        self._at: Path | None = None
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            # Another user's file SQLite opened read-only refuses the start naming
            # it: every recording's write failed all run (issue 16).
            raise state_db_error(self.path, exc) from exc
        try:
            self._db.executescript(_SCHEMA)
            self._migrate()
        except BaseException:
            self._db.close()  # a file that is no catalog: not left open
            raise
        with _OPEN_LOCK:
            for gone in [key for key, stores in _OPEN.items() if not stores]:
                del _OPEN[gone]  # every store collected unclosed
            _OPEN.setdefault(_key(self.path), weakref.WeakSet()).add(self)

    def _connect(self) -> None:
        target = self.path if self._at is None else self._at
        self._db = sqlite3.connect(
            target, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # A read opens the -wal and -shm now: opened first after the file is
            # deleted again, SQLite answers "disk I/O error" and nothing is written back.
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            check_db_writable(self._db)  # not another user's, opened read-only
        except BaseException:
            self._db.close()
            raise
        #: The file the connection has open (device, inode): :func:`put_back_catalog`.
        self._file = file_identity(target)

    def _ready(self) -> None:
        """Under the lock: the file :func:`put_back_catalog` wrote back and could
        not open (a nearly full disk) is opened now, or ``sqlite3.OperationalError``
        says why not, which the recorder and the API handle as any failed write:
        the closed connection raised ``ProgrammingError`` at every use until
        the restart, and the next write back copied from it and failed too."""
        if self._unopened is None or self._closed:
            # Closed meanwhile (a step's thread left running past the stop):
            # opened now, the connection was never closed again.
            return
        try:
            self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise sqlite3.OperationalError(
                f"{self.path} was written back but cannot be opened again: {exc}"
            ) from exc
        self._unopened = None

    def _migrate(self) -> None:
        """Add the columns a catalog made by an older callrouter lacks.

        In one write transaction: the recorder, the API and a receiving plugin
        each open the catalog, and only the first to get here alters it.
        """
        with self._tx() as db:
            have = {row["name"] for row in db.execute("PRAGMA table_info(recordings)")}
            for name, definition in _ADDED:
                if name not in have:
                    db.execute(f"ALTER TABLE recordings ADD COLUMN {name} {definition}")
            # Files of no sound an older callrouter closed and did not deliver yet:
            # never sent now (a 1C developer wants no empty recording). Idempotent,
            # and the ``state`` index finds none at once when there are none.
            db.execute(
                f"UPDATE recordings SET state = 'empty', note = 'no sound (0 s): not sent' "
                f"WHERE {_EMPTY_WAV}"
            )

    def close(self) -> None:
        key = _key(self.path)
        with _OPEN_LOCK, self._lock:
            self._closed = True
            self._db.close()
            stores = _OPEN.get(key)
            if stores is not None:
                stores.discard(self)
                if not stores:
                    del _OPEN[key]
            last = not any(not s._closed for s in _OPEN.get(key, ()))
        if last:  # the write back's spare connection goes with the last store
            with _PUT_BACK_LOCK:
                _drop_spare(_key(self.path))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._ready()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # SQLite rolls back by itself on a full disk (SQLITE_FULL) or an I/O
                # error; a ROLLBACK then raised "cannot rollback - no transaction is
                # active", which hid "database or disk is full".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _select(self, where: str, args: Iterable[object] = ()) -> list[Recording]:
        with self._lock:
            self._ready()
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM recordings WHERE {where}", tuple(args)
            ).fetchall()
        return [_row(r) for r in rows]

    # -- the recorder -------------------------------------------------------------

    def start(
        self,
        names: Iterable[FileName],
        *,
        pbx_paths: Iterable[str],
        local_paths: Iterable[Path],
        channel: str,
        extensions: Iterable[str] = (),
        origin: Origin = UNKNOWN,
        now: float | None = None,
    ) -> list[Recording]:
        """Catalog the files a MixMonitor is about to write; the ones already known are
        left alone (a rule and the API asking for the same call record it once); a
        rule's or plugin's ask makes a file the API started theirs, which the API
        cannot stop."""
        started = time.time() if now is None else now
        fresh: list[tuple[str, str]] = []
        exts = json.dumps(sorted(set(extensions)))
        with self._tx() as db:
            for name, pbx, local in zip(names, pbx_paths, local_paths, strict=True):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO recordings (call_id, part, format, pbx_path, "
                    "local_path, channel, extensions, state, started_at, origin, origin_by) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'recording', ?, ?, ?)",
                    (
                        name.call_id,
                        name.part,
                        name.format,
                        pbx,
                        str(local),
                        channel,
                        exts,
                        started,
                        origin.kind,
                        origin.by[:200],
                    ),
                )
                if cursor.rowcount:
                    fresh.append((name.call_id, name.part))
                elif origin.kind != "api":
                    # A rule or plugin asking for a file the API is writing takes it
                    # over: else the token that started it first could stop it.
                    db.execute(
                        "UPDATE recordings SET origin = ?, origin_by = ? WHERE call_id = ?"
                        " AND part = ? AND state = 'recording' AND origin = 'api'",
                        (origin.kind, origin.by[:200], name.call_id, name.part),
                    )
        return [r for cid, part in fresh if (r := self.get(cid, part)) is not None]

    def forget(self, recording_id: int) -> None:
        """Drop a row whose MixMonitor Asterisk refused (no file will come)."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM recordings WHERE id = ? AND state = 'recording'", (recording_id,)
            )

    def set_mixmonitor_id(self, ids: Iterable[int], mixmonitor_id: str) -> None:
        """The MixMonitor Asterisk started for the rows ``ids`` (its AMI answer's id)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE recordings SET mixmonitor_id = ? WHERE id = ? AND state = 'recording'",
                [(mixmonitor_id[:80], rid) for rid in ids],
            )

    def ask_stop(
        self, ids: Iterable[int], *, asked: bool = True, now: float | None = None
    ) -> list[int]:
        """Note that the MixMonitor of the rows ``ids`` is being stopped (``asked``), or
        is not after all (Asterisk refused the stop): see :attr:`Recording.stop_asked_at`.

        Returns the rows whose mark changed: a row already marked keeps its mark (an
        earlier stop's, which a later refused one must not take back), so a caller
        that takes its mark back names only these.
        """
        when = (time.time() if now is None else now) if asked else None
        changed: list[int] = []
        with self._tx() as db:
            for rid in ids:
                cursor = db.execute(
                    "UPDATE recordings SET stop_asked_at = ? WHERE id = ? AND state = 'recording'"
                    " AND (stop_asked_at IS NULL) = ?",
                    (when, rid, asked),
                )
                if cursor.rowcount:
                    changed.append(rid)
        return changed

    def renew_stop(self, ids: Iterable[int], *, marked_before: float, now: float) -> list[int]:
        """Move the stop mark of the rows ``ids`` marked before ``marked_before`` to
        ``now``; the rows renewed. A stale mark (a crash between the mark and the
        stop, :func:`~router.recordings.ownership.stale_marks`) is asked again only
        through this: of two requests at once only one renews, and once renewed the
        mark is fresh, so the same MixMonitor id is not stopped twice in a row."""
        renewed: list[int] = []
        with self._tx() as db:
            for rid in ids:
                cursor = db.execute(
                    "UPDATE recordings SET stop_asked_at = ? WHERE id = ? AND state = 'recording'"
                    " AND stop_asked_at IS NOT NULL AND stop_asked_at < ?",
                    (now, rid, marked_before),
                )
                if cursor.rowcount:
                    renewed.append(rid)
        return renewed

    def unrenew_stop(self, marks: Mapping[int, float], *, renewed_at: float) -> list[int]:
        """Put back the stop marks ``marks`` (row id to its mark before
        :meth:`renew_stop`) of the rows whose mark is still the one renewed at
        ``renewed_at``; the rows put back. For a stop again that failed (Asterisk
        refused it or was out of reach): the renewed mark would keep the next
        request from trying for :data:`~router.recordings.ownership.STALE_STOP`
        seconds. A mark set or taken since is left alone (compare and set), and
        the row stays marked, so a ``MixMonitorStop`` still closes it."""
        restored: list[int] = []
        with self._tx() as db:
            for rid, mark in marks.items():
                cursor = db.execute(
                    "UPDATE recordings SET stop_asked_at = ? WHERE id = ? AND state = 'recording'"
                    " AND stop_asked_at = ?",
                    (mark, rid, renewed_at),
                )
                if cursor.rowcount:
                    restored.append(rid)
        return restored

    def rename_channel(self, old: str, new: str) -> list[int]:
        """The files still being written on ``old`` go on under ``new``: Asterisk moved
        their MixMonitor there by a masquerade (:mod:`router.recordings.masquerade`).
        The rows renamed; their call id, and so their file names, stay."""
        with self._tx() as db:
            ids = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM recordings WHERE state = 'recording' AND channel = ?"
                    " ORDER BY id",
                    (old,),
                ).fetchall()
            ]
            db.executemany(
                "UPDATE recordings SET channel = ? WHERE id = ? AND state = 'recording'",
                [(new, rid) for rid in ids],
            )
        return ids

    def add_extensions(
        self, call_id: str, extensions: Iterable[str], *, ids: Iterable[int] | None = None
    ) -> None:
        """Remember more extensions whose leg was on the call while it was recorded
        (who may fetch it with a token); of the rows ``ids`` only, when given."""
        wanted = None if ids is None else set(ids)
        added = set(extensions)
        if not added or wanted == set():
            return
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, extensions FROM recordings WHERE call_id = ?", (call_id,)
            ).fetchall()
            for row in rows:
                if wanted is not None and row["id"] not in wanted:
                    continue
                merged = sorted(set(_extensions(row["extensions"])) | added)
                db.execute(
                    "UPDATE recordings SET extensions = ? WHERE id = ?",
                    (json.dumps(merged), row["id"]),
                )

    def recording(self, call_id: str | None = None) -> list[Recording]:
        """Files still being written (of one call, or all)."""
        if call_id is None:
            return self._select("state = 'recording' ORDER BY id")
        return self._select("state = 'recording' AND call_id = ? ORDER BY id", (call_id,))

    def recording_on(self, channels: Iterable[str]) -> list[Recording]:
        """Files still being written on any of ``channels`` (whatever call id they have)."""
        names = json.dumps(sorted(set(channels)))
        return self._select(
            "state = 'recording' AND channel IN (SELECT value FROM json_each(?)) ORDER BY id",
            (names,),
        )

    def recording_of(self, call_ids: Iterable[str], channels: Iterable[str]) -> list[Recording]:
        """Files still being written of any of ``call_ids`` or on any of ``channels``,
        in one statement: a ``BridgeEnter`` into a conference asks for every call in it,
        on the event loop, and mostly nothing is being recorded (the ``state`` index
        then finds no row at once)."""
        calls = json.dumps(sorted(set(call_ids)))
        names = json.dumps(sorted(set(channels)))
        return self._select(
            "state = 'recording' AND (call_id IN (SELECT value FROM json_each(?))"
            " OR channel IN (SELECT value FROM json_each(?))) ORDER BY id",
            (calls, names),
        )

    def mark_closed(
        self,
        recording_id: int,
        *,
        file: Path,
        content_type: str,
        size: int,
        sha256: str,
        duration: float | None,
        empty: bool = False,
        note: str = "",
        now: float | None = None,
    ) -> None:
        """The file is complete: ``closed``, for a receiver to take; ``empty`` when it
        holds no sound (``empty``: a WAV of its header alone), which no receiver gets,
        with ``note`` (default: ``no sound (0 s): not sent``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE recordings SET state = ?, closed_at = ?, file = ?, "
                "content_type = ?, size = ?, sha256 = ?, duration = ?, note = ? "
                "WHERE id = ? AND state = 'recording'",
                (
                    "empty" if empty else "closed",
                    time.time() if now is None else now,
                    str(file),
                    content_type,
                    size,
                    sha256,
                    duration,
                    (note or "no sound (0 s): not sent")[:500] if empty else note[:500],
                    recording_id,
                ),
            )

    def mark_failed(
        self,
        recording_id: int,
        note: str,
        *,
        file: Path | None = None,
        size: int | None = None,
        now: float | None = None,
    ) -> None:
        """The file never became complete; ``file`` and ``size``: what is left on disk.

        ``closed_at`` is when it failed: retention's ``max_age_days`` counts from it.
        """
        with self._tx() as db:
            db.execute(
                "UPDATE recordings SET state = 'failed', note = ?, closed_at = ?, file = ?, "
                "size = ? WHERE id = ? AND state = 'recording'",
                (
                    note[:500],
                    time.time() if now is None else now,
                    None if file is None else str(file),
                    size,
                    recording_id,
                ),
            )

    # -- receivers ----------------------------------------------------------------

    def get(self, call_id: str, part: str) -> Recording | None:
        found = self._select("call_id = ? AND part = ?", (call_id, part))
        return found[0] if found else None

    def for_call(self, call_id: str) -> list[Recording]:
        return self._select("call_id = ? ORDER BY id", (check_call_id(call_id),))

    def closed(self, after_id: int = 0, limit: int = 100) -> list[Recording]:
        """Complete files nobody confirmed yet, oldest first, past ``after_id``."""
        return self._select(
            "state = 'closed' AND id > ? ORDER BY id LIMIT ?", (after_id, max(1, limit))
        )

    def confirm(
        self, call_id: str, part: str, sha256: str, receiver: str, now: float | None = None
    ) -> bool:
        """``receiver`` holds exactly this file (its SHA-256): retention may now act.

        False when no closed file with that hash exists (a stale receipt).
        """
        check_part(part)
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE recordings SET state = 'delivered', delivered_at = ?, receiver = ? "
                "WHERE call_id = ? AND part = ? AND sha256 = ? AND state = 'closed'",
                (time.time() if now is None else now, receiver[:64], call_id, part, sha256),
            )
            return cursor.rowcount == 1

    def upload_failed(
        self, call_id: str, part: str, sha256: str, reason: str, now: float | None = None
    ) -> bool:
        """The receiver gave up sending this closed file (its SHA-256): a retry would
        get the same answer. It stays ``closed`` (retention's ``hard_cap_bytes`` alone
        deletes it); ``callrouter recordings status`` lists it with ``reason`` and
        ``callrouter recordings retry`` asks for it again. False: no such closed file."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE recordings SET upload_error = ?, upload_failed_at = ? "
                "WHERE call_id = ? AND part = ? AND sha256 = ? AND state = 'closed'",
                (
                    reason[:500] or "gave up",
                    time.time() if now is None else now,
                    call_id,
                    part,
                    sha256,
                ),
            )
            return cursor.rowcount == 1

    def upload_failures(self, limit: int = 1000) -> list[Recording]:
        """Closed files the receiver gave up sending, oldest first."""
        return self._select(f"{_GAVE_UP} ORDER BY id LIMIT ?", (max(1, limit),))

    def ask_retry(self, ids: Iterable[int], now: float | None = None) -> list[int]:
        """Ask the receiver to send the closed files ``ids`` again, whatever it gave up
        on before now; their failure is forgotten. The rows asked for."""
        when = time.time() if now is None else now
        asked: list[int] = []
        with self._tx() as db:
            for rid in ids:
                cursor = db.execute(
                    "UPDATE recordings SET retry_asked_at = ?, upload_error = '', "
                    "upload_failed_at = NULL WHERE id = ? AND state = 'closed'",
                    (when, rid),
                )
                if cursor.rowcount:
                    asked.append(rid)
        return asked

    # -- retention and reports ---------------------------------------------------------

    def on_disk(self) -> list[Recording]:
        """Closed and delivered files, and what failed ones left (not removed), oldest first."""
        return self._select(f"{_ON_DISK} ORDER BY closed_at, id")

    def set_size(self, recording_id: int, size: int) -> None:
        """What a failed recording's file now holds (Asterisk may have written on)."""
        with self._tx() as db:
            db.execute(
                "UPDATE recordings SET size = ? WHERE id = ? AND state = 'failed'",
                (size, recording_id),
            )

    def prune(self, removed_before: float, limit: int) -> int:
        """Forget at most ``limit`` rows ``removed`` before ``removed_before``; how many.

        Their files are gone; the row only answered the API's list of the call's
        recordings (state and note) until then. Oldest first.
        """
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM recordings WHERE id IN (SELECT id FROM recordings "
                f"WHERE {_GONE} AND removed_at < ? ORDER BY id LIMIT ?)",
                (removed_before, max(1, limit)),
            )
            return cursor.rowcount

    def mark_missing(self, recording_id: int, note: str, now: float | None = None) -> bool:
        """The file of a closed, delivered or empty row is gone from disk, deleted by
        someone else than retention: ``missing`` (never served nor sent, no longer
        counted on disk), with ``note`` saying how it was found. True when the row
        changed (the caller logs that once); False: it was not in such a state."""
        marks = ", ".join("?" * len(KEPT_STATES))
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE recordings SET state = 'missing', removed_at = ?, note = ? "
                f"WHERE id = ? AND state IN ({marks}) AND file IS NOT NULL",
                (time.time() if now is None else now, note[:500], recording_id, *KEPT_STATES),
            )
            return cursor.rowcount == 1

    def empty_file_removed(self, recording_id: int, note: str, now: float | None = None) -> None:
        """Retention deleted an empty row's file: the row stays ``empty``, with no
        ``file``, and is forgotten as a removed one is."""
        with self._tx() as db:
            db.execute(
                "UPDATE recordings SET file = NULL, removed_at = ?, note = ? "
                "WHERE id = ? AND state = 'empty'",
                (time.time() if now is None else now, note[:500], recording_id),
            )

    def mark_removed(self, recording_id: int, note: str, now: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE recordings SET state = 'removed', removed_at = ?, note = ? WHERE id = ?",
                (time.time() if now is None else now, note[:500], recording_id),
            )

    def usage(self) -> UsageReport:
        with self._lock:
            self._ready()
            counts = {
                row[0]: row[1]
                for row in self._db.execute(
                    "SELECT state, COUNT(*) FROM recordings GROUP BY state"
                ).fetchall()
            }
            on_disk, undelivered, oldest, failed, refused, refused_bytes, waiting = (
                self._db.execute(
                    f"SELECT COALESCE(SUM(CASE WHEN {_ON_DISK} THEN size END), 0),"
                    " COALESCE(SUM(CASE WHEN state = 'closed' THEN size END), 0),"
                    " MIN(CASE WHEN state = 'closed' THEN closed_at END),"
                    " COALESCE(SUM(CASE WHEN state = 'failed' THEN size END), 0),"
                    f" COUNT(CASE WHEN {_GAVE_UP} THEN 1 END),"
                    f" COALESCE(SUM(CASE WHEN {_GAVE_UP} THEN size END), 0),"
                    " MIN(CASE WHEN state = 'closed' AND upload_error = '' THEN closed_at END)"
                    " FROM recordings"
                ).fetchone()
            )
        return UsageReport(
            counts,
            int(on_disk),
            int(undelivered),
            oldest,
            int(failed),
            upload_failed=int(refused),
            upload_failed_bytes=int(refused_bytes),
            oldest_waiting_at=waiting,
        )


def catalog_conversions(state_dir: Path) -> list[str]:
    """What ``callrouter run`` would convert in ``state_dir``'s catalog at start
    (:meth:`RecordingStore._migrate`), one line each naming the file, read
    without writing anything (:func:`router.state_peek.peek_db`): the columns
    an earlier version's catalog lacks, and closed WAV files of no sound it
    still meant to deliver, made ``empty`` (never sent). For ``callrouter
    check``, which said nothing of them: ``run`` converted the file silently."""
    from router.state_peek import columns, peek_db

    path = state_dir / DB_NAME
    with peek_db(path) as db:
        if db is None:
            return []
        have = columns(db, "recordings")
        if not have:
            return []
        lines: list[str] = []
        lacking = [name for name, _ in _ADDED if name not in have]
        if lacking:
            (rows,) = db.execute("SELECT count(*) FROM recordings").fetchone()
            lines.append(
                f"{path}: recordings catalog from an earlier version: callrouter run adds "
                f"the columns {', '.join(lacking)} at start, keeping its {rows} rows"
            )
        if {"state", "format", "duration"} <= have:
            (empty,) = db.execute(f"SELECT count(*) FROM recordings WHERE {_EMPTY_WAV}").fetchone()
            if empty:
                lines.append(
                    f"{path}: {empty} closed WAV recordings of no sound: callrouter run "
                    "marks them empty at start, and they are never sent"
                )
        return lines
