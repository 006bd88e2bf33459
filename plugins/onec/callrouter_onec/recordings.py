"""Recordings into 1C: a durable upload queue, chunked, resumable and idempotent.

callrouter's recorder closes a call's recording and leaves it in its catalog
(``router.RecordingStore``, the outbox). This module copies each closed file
into its own SQLite queue (``onec-recordings.sqlite`` in the state folder,
0600) and delivers it to the 1C HTTP service:

* **push** (``[recordings] mode = "push"``, the default): the bytes go in
  chunks, ``PUT {BASE}/v1/calls/{call_id}/recordings/{part}`` with
  ``Content-Range: bytes START-END/SIZE`` and the whole file's SHA-256. 1C
  answers how many bytes it holds (``received``), so after a 1C outage or a
  router restart ``GET`` of the same URL says where to go on: nothing is
  sent twice and nothing is lost. A chunk that does not start where 1C's
  bytes end is 409 with 1C's ``received``, and the upload continues from
  there. When 1C holds ``SIZE`` bytes it checks the hash and stores the file
  in the call's document; a repeat of a stored file (same call, part and
  hash) is answered ``complete`` again and stored once.
* **pull** (``mode = "pull"``): 1C gets a short-lived signed link to
  callrouter's API instead (``POST`` of the same URL with
  ``{"recording_url": ...}``) and fetches the file itself; the link is
  signed when sent, so a queue that waited out an outage never hands 1C an
  expired one.

Either way the key is the call id and the part (``event_id``
``<call_id>/recording/<part>``, as history events), and the file is
confirmed back to callrouter's catalog only once 1C holds exactly its bytes
(push) so that retention never deletes what 1C does not have. Failures back
off exponentially (``events_retry_min`` to ``events_retry_max``) and never
give up while the file exists (1C away altogether is told once when it starts
and once when it ends, not per file and retry); a file that disappeared, or an answer a retry
would not change (a 400, ``already_stored``, other bytes at the file's name),
marks the upload failed, here and in the catalog (``upload_error``, which
``callrouter recordings status`` lists). ``callrouter recordings retry``
asks for it again through the catalog (``retry_asked_at``): the next step
puts an upload given up before that moment back in the queue, once.

A ``done`` row is forgotten :data:`KEEP_DONE_DAYS` days after 1C got the file,
and a ``failed`` one as long after it failed, at most :data:`PRUNE_BATCH` a
minute, but never while the catalog still holds that file as ``closed`` (pull
mode, where nothing confirms it; a file 1C refused): the row is what keeps the
file or its link from being sent to 1C again on the next step. The queue's file
deleted or replaced while the service runs is written back from the open one
(:meth:`UploadQueue.put_back`, within :data:`FILE_CHECK_EVERY` and at a stop),
as the 1C history's is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import httpx

from callrouter_onec.client import (
    OneCSettings,
    basic_auth_header,
    fetch_bounded,
    transport_problem,
)
from callrouter_onec.errors import OneCUnavailable
from callrouter_onec.history import create_private
from callrouter_onec.state_file import WrittenBackFile
from router import (
    FileOutOfSight,
    NotTheRecording,
    cancel_and_wait,
    check_db_writable,
    open_recording,
    recording_key_problem,
    seen_identity,
    set_aside_odd_db_files,
    state_db_error,
)

if TYPE_CHECKING:  # pragma: no cover
    from router import EngineAPI, Recording, RecordingSettings, RecordingStore

__all__ = [
    "CATALOG_PAGE",
    "CHUNK",
    "FILENAME",
    "KEEP_DONE_DAYS",
    "PRUNE_BATCH",
    "RecordingUploader",
    "TransferStatus",
    "Upload",
    "UploadQueue",
    "start_uploads",
]

log = logging.getLogger("callrouter_onec.recordings")

FILENAME: Final = "onec-recordings.sqlite"
#: Bytes per PUT: small enough for 1C's request limits, large enough to be quick.
CHUNK: Final = 1 << 20
#: The receiver name callrouter's catalog records for files 1C confirmed.
RECEIVER: Final = "onec"
POLL: Final = 1.0
#: Closed files of the catalog read per step.
CATALOG_PAGE: Final = 500
#: Days a delivered upload's row is kept (docs/recordings.md); and rows looked at per pass.
KEEP_DONE_DAYS: Final = 30
PRUNE_BATCH: Final = 1000
#: Seconds between two prunes of the queue.
PRUNE_EVERY: Final = 60.0
#: Seconds between two looks at the queue's file (deleted or replaced: written back).
FILE_CHECK_EVERY: Final = 5.0
#: Catalog states whose file a pull-mode link in the call's ``hangup`` may name.
_LINKABLE: Final = ("recording", "closed", "delivered")
#: Unforeseen upload failures remembered as logged with their traceback.
UNEXPECTED_KEPT: Final = 1000
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS uploads (
    call_id TEXT NOT NULL,
    part TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    duration REAL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    queued_at REAL NOT NULL,
    done_at REAL,
    PRIMARY KEY (call_id, part, sha256)
);
"""


@dataclass(frozen=True, slots=True)
class Upload:
    call_id: str
    part: str
    sha256: str
    file: Path
    size: int
    content_type: str
    duration: float | None
    attempts: int = 0

    @property
    def event_id(self) -> str:
        return f"{self.call_id}/recording/{self.part}"

    @property
    def path(self) -> str:
        return f"/v1/calls/{self.call_id}/recordings/{self.part}"


def _outside(file: str, folder: Path) -> str | None:
    """Why ``file`` is not a recording in ``folder``, or None (blocking: it resolves
    both, so a ``..`` or a symbolic link on the way out of the folder is seen; a link
    at the file's own name pointing inside is refused when opened, :func:`_open`)."""
    if not os.path.isabs(file):
        return f"file {file[:80]!r} is not an absolute path"
    root = os.path.realpath(folder)
    real = os.path.realpath(file)
    if real == root or os.path.commonpath([root, real]) != root:
        return f"file {file[:80]!r} is not in the recordings folder {str(folder)!r}"
    return None


def _upload(r: list[Any], folder: Path | None = None) -> Upload | str:
    """An :class:`Upload` of a queue row's columns, or why they do not fit one.
    The call id and the part go into 1C's URL path: they are of the shape the
    catalog writes (``1714557600.42``, ``mix``), never a ``../`` or a ``?``.
    The file is in ``folder`` (``[recordings] local_dir``) when given: the row's
    hash is checked against the row itself, so a tampered queue could otherwise
    have any file callrouter can read sent to 1C."""
    call_id, part, sha256, file, size, content_type, duration, attempts = r
    texts = (call_id, part, sha256, file, content_type)
    types = ", ".join(type(v).__name__ for v in r)
    if not all(isinstance(v, str) and v and "\0" not in v for v in texts):
        return types
    problem = recording_key_problem(call_id, part)
    if problem is not None:
        return problem
    if not all(isinstance(v, int) and v >= 0 for v in (size, attempts)):
        return types
    if duration is not None and not isinstance(duration, int | float):
        return types
    if folder is not None and (problem := _outside(file, folder)) is not None:
        return problem
    return Upload(call_id, part, sha256, Path(file), size, content_type, duration, attempts)


class UploadQueue(WrittenBackFile):
    """The uploads still owed to 1C; survives restarts (SQLite, 0600)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 before SQLite opens it, an existing file never opened (the locks).
        set_aside_odd_db_files(path)  # no link followed, no FIFO opened (issue 16)
        create_private(path)
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        #: ``"deleted"`` or ``"replaced"`` while the file :meth:`put_back` wrote back
        #: for that reason is not open yet; None: the connection is open.
        self._unopened: str | None = None
        #: The copy :meth:`put_back` could not move in place and opened instead (it
        #: holds every row); None: the connection is on ``path``.
        self._at: Path | None = None
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            # Another user's file SQLite opened read-only refuses the start naming
            # it: every upload's write failed all run (issue 16).
            raise state_db_error(path, exc) from exc

    def _connect(self) -> None:
        target = self.path if self._at is None else self._at
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=5)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            check_db_writable(db)  # not another user's, opened read-only
            db.executescript(_SCHEMA)
            #: The file the connection has open (device, inode): see :meth:`put_back`.
            identity = seen_identity(target)
        except BaseException:
            db.close()
            raise
        self._db, self._file = db, identity
        self._unopened = None

    def _ready(self) -> None:
        """Under the lock: the file :meth:`put_back` wrote back and could not open
        (a nearly full disk) is opened now, or ``sqlite3.OperationalError`` says
        why not, which the uploader waits out as any queue it cannot use (nothing
        lost, no traceback): the closed connection raised ``ProgrammingError``
        until the next look at the file, a traceback each step."""
        if self._unopened is None or self._closed:
            # Closed meanwhile (a step's thread left running past the stop):
            # opened now, the connection was never closed again.
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
        where it was (or the queue is closed).

        SQLite goes on with the file it has open, deleted or not: the uploads
        owed to 1C and how far each went were lost at the next start, which
        sent every undelivered file from its start again, and in pull mode
        links 1C already had. The open file is copied beside it (``VACUUM
        INTO``, :func:`router.write_back`), a file put in its place is moved
        aside first, as ``NAME.replaced-TIME``, as the 1C history's is
        (:meth:`callrouter_onec.history.HistoryQueue.put_back`), the connection
        is closed (the next would take its ``-wal`` for its own), the copy moved
        in place and opened there. A file ``stat`` cannot look at (EACCES)
        raises ``OSError``: nothing is written over it.

        The copy holds every row from then on: when it cannot be opened (a
        nearly full disk) it is opened at the next use (:meth:`_ready`), and
        when it cannot be moved in place (the folder made read-only) the
        connection is opened on the copy, and the next look moves it in place.
        """
        with self._lock:
            if self._closed:
                return None
            return self._put_back_open_file()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def add(self, rec: Recording, now: float | None = None) -> bool:
        """Queue a closed recording; False when this file (call, part, hash) is known."""
        if rec.file is None or rec.sha256 is None or rec.size is None:
            return False
        with self._lock:
            self._ready()
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO uploads (call_id, part, sha256, file, size, content_type,"
                " duration, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.call_id,
                    rec.part,
                    rec.sha256,
                    str(rec.file),
                    rec.size,
                    rec.content_type or "application/octet-stream",
                    rec.duration,
                    time.time() if now is None else now,
                ),
            )
            return cursor.rowcount == 1

    def requeue(self, rec: Recording) -> bool:
        """Send again an upload given up before ``callrouter recordings retry`` asked for
        it (``rec.retry_asked_at``); False when there is none (a failure after the ask
        is left: the retry was spent, and it is not sent again and again)."""
        if rec.retry_asked_at is None or rec.sha256 is None:
            return False
        with self._lock:
            self._ready()
            cursor = self._db.execute(
                "UPDATE uploads SET state = 'pending', attempts = 0, next_at = 0, "
                "last_error = '', done_at = NULL WHERE call_id = ? AND part = ? AND sha256 = ? "
                "AND state = 'failed' AND COALESCE(done_at, queued_at) < ?",
                (rec.call_id, rec.part, rec.sha256, rec.retry_asked_at),
            )
            return cursor.rowcount == 1

    def due(
        self, now: float | None = None, limit: int = 20, *, folder: Path | None = None
    ) -> list[Upload]:
        """The pending uploads whose time has come (blocking). A row this queue cannot
        have written (a damaged or tampered file: no text where a name goes, no byte
        count, a call id or part not of the catalog's shape, which would choose
        the path of 1C's URL, a file outside ``folder`` when given) is marked
        ``failed`` with an ERROR naming the file and row: built as it was
        (``Path(None)``), it raised in every step and nothing went."""
        with self._lock:
            self._ready()
            rows = self._db.execute(
                "SELECT rowid, call_id, part, sha256, file, size, content_type, duration, "
                "attempts FROM uploads WHERE state = 'pending' AND next_at <= ? "
                "ORDER BY next_at, queued_at LIMIT ?",
                (time.time() if now is None else now, limit),
            ).fetchall()
        due: list[Upload] = []
        for rowid, *r in rows:
            upload = _upload(r, folder)
            if isinstance(upload, Upload):
                due.append(upload)
                continue
            log.error(
                "onec: %s: uploads row %d is not one callrouter wrote (%s); marked failed",
                self.path,
                rowid,
                upload,
            )
            with self._lock:
                self._ready()
                self._db.execute(
                    "UPDATE uploads SET state = 'failed', done_at = ?, last_error = ? "
                    "WHERE rowid = ?",
                    (time.time(), "a damaged queue row: not sent", rowid),
                )
        return due

    def _set(self, upload: Upload, sql: str, *args: object) -> None:
        with self._lock:
            self._ready()
            self._db.execute(
                f"UPDATE uploads SET {sql} WHERE call_id = ? AND part = ? AND sha256 = ?",
                (*args, upload.call_id, upload.part, upload.sha256),
            )

    def done(self, upload: Upload) -> None:
        self._set(upload, "state = 'done', done_at = ?, last_error = ''", time.time())

    def retry(self, upload: Upload, error: str, next_at: float) -> None:
        self._set(
            upload,
            "attempts = attempts + 1, next_at = ?, last_error = ?",
            next_at,
            error[:300],
        )

    def fail(self, upload: Upload, error: str) -> None:
        self._set(upload, "state = 'failed', done_at = ?, last_error = ?", time.time(), error[:300])

    def prune(
        self,
        still_closed: Callable[[str, str, str], bool],
        done_before: float,
        after: int = 0,
        limit: int = PRUNE_BATCH,
    ) -> int:
        """Forget ``done`` and ``failed`` rows that ended before ``done_before`` past
        rowid ``after``, at most ``limit`` looked at; the rowid to go on from next time
        (0: start over). A failed row kept by an older version, with no end time,
        counts from when it was queued.

        ``still_closed(call_id, part, sha256)`` says the catalog still offers the
        file: its row stays, or the next step would queue and send it again (a
        file 1C refused would be refused again, and again).
        """
        with self._lock:
            self._ready()
            rows = self._db.execute(
                "SELECT rowid, call_id, part, sha256 FROM uploads "
                "WHERE state IN ('done', 'failed') AND COALESCE(done_at, queued_at) < ? "
                "AND rowid > ? ORDER BY rowid LIMIT ?",
                (done_before, after, max(1, limit)),
            ).fetchall()
        gone = [(r[1], r[2], r[3]) for r in rows if not still_closed(r[1], r[2], r[3])]
        with self._lock:
            self._ready()
            self._db.executemany(
                "DELETE FROM uploads WHERE call_id = ? AND part = ? AND sha256 = ? "
                "AND state IN ('done', 'failed')",
                gone,
            )
        return int(rows[-1][0]) if len(rows) == max(1, limit) else 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._ready()
            rows = self._db.execute("SELECT state, COUNT(*) FROM uploads GROUP BY state")
            return dict(rows.fetchall())


@dataclass(frozen=True, slots=True)
class TransferStatus:
    """What 1C holds of one file."""

    received: int
    complete: bool


class _Away(OSError):
    """1C itself is not there for any file: no connection, no whole answer in time, a
    5xx, or an answer off the contract for every file alike (:func:`_off_contract`).
    Every upload fails alike until it is back, so it is told once an outage
    (:meth:`RecordingUploader.deliver`), not once for each file at each retry."""


#: The statuses 1C's recordings service answers about one file (docs/recordings.md).
_FILE_ANSWERS: Final = frozenset({200, 400, 409, 422})


def _off_contract(status: int, what: str) -> OSError:
    """A failed answer of ``status`` to ``what``: about this file if the contract has
    the status, else :class:`_Away`. A 401 or 403 (1C's password changed), a 404 (its
    publication gone) or a redirect (never followed) is 1C's answer to every file: a
    WARNING per file per retry grew with the recordings waiting, as an outage did."""
    kind = OSError if status in _FILE_ANSWERS else _Away
    return kind(f"1C answered {status} to {what}")


class _Refused(Exception):
    """1C answered in a way a retry will not change (the file is marked failed)."""


class _Resume(Exception):
    """1C holds a different number of bytes than this chunk assumed."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


class _HashMismatch(_Resume):
    """1C held every byte and their SHA-256 was not the file's (422): it dropped them."""

    def __init__(self) -> None:
        super().__init__(0)


@dataclass(frozen=True, slots=True)
class _Answer:
    """1C's status and body (at most ``max_body`` bytes, undecoded)."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8-sig", errors="replace")


def _body(response: _Answer) -> dict[str, Any]:
    try:
        value = json.loads(response.content.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # A proxy's login or error page, a web server's: no file's answer (_Away).
        raise _Away(
            f"1C answered {response.status_code} with no JSON: {response.text[:120]!r}"
        ) from None
    if not isinstance(value, dict):
        raise _Away(f"1C answered {response.status_code} with JSON that is not an object")
    return value


def _status(body: dict[str, Any], size: int) -> TransferStatus:
    received = body.get("received")
    if isinstance(received, bool) or not isinstance(received, int) or not 0 <= received <= size:
        raise OSError(f"1C's received {received!r} is not a byte count of this file")
    return TransferStatus(received, bool(body.get("complete")) and received == size)


class OneCRecordings:
    """The HTTP side: status, one chunk, one link; every failure an ``OSError`` (retry)
    or ``_Refused`` (give up).

    Each request, its answer included, takes at most ``chunk_timeout`` seconds, and
    at most ``[plugins.onec] max_body`` bytes of an answer are read (undecoded: a
    compressed one is not inflated first), as the history client does: an endless
    or dripping answer (a hostile 1C, a proxy gone wrong) costs that much and no
    more. ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        settings: OneCSettings,
        *,
        chunk_timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._deadline = chunk_timeout
        self._limit = settings.max_body
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            transport=transport,
            headers={
                "Authorization": basic_auth_header(settings.username, settings.password),
                "Accept-Encoding": "identity",
            },
            timeout=httpx.Timeout(chunk_timeout, connect=max(settings.connect_timeout, 1.0)),
            follow_redirects=False,
            verify=settings.tls(),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> _Answer:
        try:
            async with asyncio.timeout(self._deadline):
                response, body = await fetch_bounded(
                    self._client, method, path, self._limit, **kwargs
                )
        except (TimeoutError, httpx.TimeoutException):
            raise _Away(f"1C gave no whole answer within {self._deadline:g} s") from None
        except OneCUnavailable as exc:
            raise _Away(f"1C's answer is unusable: {exc.detail}") from None
        except httpx.HTTPError as exc:
            raise _Away(f"1C unreachable: {transport_problem(exc)}") from None
        if response.status_code >= 500:
            raise _Away(f"1C answered {response.status_code} to {method} {path}")
        return _Answer(response.status_code, body)

    async def status(self, upload: Upload) -> TransferStatus:
        response = await self._send(
            "GET", upload.path, params={"sha256": upload.sha256, "size": str(upload.size)}
        )
        if response.status_code != 200:
            raise _off_contract(response.status_code, f"the status of {upload.path}")
        body = _body(response)
        status = _status(body, upload.size)
        if status.complete and str(body.get("sha256") or "").lower() != upload.sha256:
            # Its size alone proves nothing: 1C stores one file per call and part, and a
            # PUT of this one would be refused (409 already_stored).
            raise _Refused(
                f"1C holds another file for {upload.path} (SHA-256 {body.get('sha256')!r:.80})"
            )
        return status

    async def put(self, upload: Upload, start: int, data: bytes) -> TransferStatus:
        end = start + len(data) - 1
        response = await self._send(
            "PUT",
            upload.path,
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{end}/{upload.size}",
                "X-Recording-Sha256": upload.sha256,
                "X-Recording-Content-Type": upload.content_type,
                "X-Recording-Duration": "" if upload.duration is None else f"{upload.duration:.3f}",
                "X-Event-Id": upload.event_id,
            },
        )
        if response.status_code == 409:
            body = _body(response)
            error = body.get("error")  # 1C's: any JSON, not only the object it should be
            code = error.get("code") if isinstance(error, dict) else None
            if code == "offset_mismatch":
                raise _Resume(_status(body, upload.size).received)
            raise _Refused(f"1C refused {upload.path}: {response.text[:200]}")
        if response.status_code == 422:
            raise _HashMismatch  # the whole file did not hash right: 1C dropped it
        if response.status_code == 400:
            raise _Refused(f"1C refused {upload.path}: {response.text[:200]}")
        if response.status_code != 200:
            raise _off_contract(response.status_code, f"a chunk of {upload.path}")
        return _status(_body(response), upload.size)

    async def link(self, upload: Upload, url: str, expires: float) -> None:
        response = await self._send(
            "POST",
            upload.path,
            json={
                "event_id": upload.event_id,
                "call_id": upload.call_id,
                "part": upload.part,
                "recording_url": url,
                "expires": int(expires),
                "content_type": upload.content_type,
                "size": upload.size,
                "sha256": upload.sha256,
                "duration": upload.duration,
            },
        )
        if response.status_code == 400:
            raise _Refused(f"1C refused the link for {upload.path}: {response.text[:200]}")
        if response.status_code != 200:
            raise _off_contract(response.status_code, f"the link of {upload.path}")


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` is there and holds anything (blocking)."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


class RecordingUploader:
    """Moves closed recordings from callrouter's catalog into 1C, for ever, politely."""

    def __init__(
        self,
        store: RecordingStore,
        queue: UploadQueue,
        remote: OneCRecordings,
        settings: RecordingSettings,
        *,
        link: Callable[[str, str], tuple[str, float]] | None = None,
        chunk: int = CHUNK,
        retry_min: float = 1.0,
        retry_max: float = 60.0,
        poll: float = POLL,
    ) -> None:
        self.store = store
        self.queue = queue
        self.remote = remote
        self.settings = settings
        #: ``(call_id, part) -> (url, expires)`` for pull mode.
        self._link = link
        self.chunk = chunk
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.poll = poll
        self.failures = 0
        #: The catalog id the next step reads closed files after.
        self._after = 0
        #: The queue's rowid the next prune goes on from, and when it is due.
        self._prune_after = 0
        self._prune_at = 0.0
        self._task: asyncio.Task[None] | None = None
        #: Since when (monotonic) and how many attempts 1C has been away (:class:`_Away`).
        self._away_since: float | None = None
        self._away_attempts = 0
        #: Unforeseen failures already logged with their traceback (:meth:`_log_unexpected`).
        self._unexpected: set[tuple[str, str, str]] = set()
        #: Files whose failure was said at WARNING (:meth:`_not_delivered`), until
        #: delivered or sent again on request (``callrouter recordings retry``).
        self._failing: set[tuple[str, str]] = set()
        #: Looks at the queue's file on its own (an upload to a slow 1C takes long).
        self._watch: asyncio.Task[None] | None = None
        #: Why the last write back of the queue's file failed (said once per reason).
        self._put_back_failing: str | None = None
        #: One look at the queue's file at a time (:meth:`_check_file`).
        self._check_lock = threading.Lock()
        #: Why the last step could not use the queue or the catalog (said once per reason).
        self._store_failing: str | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="onec:recordings")
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_file(), name="onec:recordings-file")

    async def stop(self) -> None:
        task, self._task = self._task, None
        watch, self._watch = self._watch, None
        # A cancellation of the task that stops it is raised, not swallowed (issue 16).
        with contextlib.suppress(Exception):
            await cancel_and_wait(*(t for t in (task, watch) if t is not None))
        # Deleted since the last look (less than FILE_CHECK_EVERY ago): written back
        # before the stop closes it, or the next start sends everything again.
        if watch is not None:
            await self.check_file()

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(FILE_CHECK_EVERY)
            try:
                await self.check_file()
            except Exception:
                log.exception("onec: looking at the recordings queue's file failed; going on")

    async def check_file(self) -> str | None:
        """The queue's file deleted or replaced while it runs: written again from
        the open one (:meth:`UploadQueue.put_back`), a WARNING once; one that
        cannot be written again, an ERROR once per reason.

        The write-back and what is said of it are one step on a worker thread
        (:meth:`_check_file`): a :meth:`stop` that cancelled the look while the
        file was copied let the copy end and cut its WARNING off, and the look
        at the stop then found the file where it belongs and said nothing, so
        a deletion went unsaid (issue 16). A cancelled caller no longer waits,
        and the step still ends with its line."""
        return await asyncio.to_thread(self._check_file)

    def _check_file(self) -> str | None:
        """:meth:`check_file`'s step (blocking); one at a time, so a look at a
        stop waits for the one it cancelled and says a reason once."""
        path = self.queue.path
        with self._check_lock:
            return self._check_file_locked(path)

    def _check_file_locked(self, path: Path) -> str | None:
        try:
            what = self.queue.put_back()
        except (OSError, sqlite3.Error) as exc:
            seen = isinstance(exc, FileOutOfSight)
            reason = (exc.strerror if isinstance(exc, OSError) and seen else str(exc)) or (
                type(exc).__name__
            )
            if reason != self._put_back_failing:
                if seen:
                    log.warning(
                        "onec: %s cannot be looked at: %s; it is not written back while "
                        "so: callrouter goes on with the file it has open; give the "
                        "service's user its state folder back",
                        path,
                        reason,
                    )
                else:
                    log.error(
                        "onec: %s is no longer the file in use (deleted or replaced while "
                        "callrouter ran) and cannot be written again: %s; the uploads owed "
                        "to 1C start over at the next restart unless it can",
                        path,
                        reason,
                    )
            self._put_back_failing = reason
            return None
        self._put_back_failing = None
        if what == "deleted":
            log.warning(
                "onec: %s was deleted while callrouter ran: written again from the open "
                "file (the uploads owed to 1C and how far each went); to empty it, stop "
                "the service first",
                path,
            )
        elif what == "replaced":
            log.warning(
                "onec: %s was replaced while callrouter ran: the file put there is moved "
                "aside as %s.replaced-TIME and %s written again from the open file; "
                "restore state files with the service stopped (operations.md)",
                path,
                path.name,
                path.name,
            )
        return what

    def _store_failed(self, exc: sqlite3.OperationalError) -> None:
        """The queue or the catalog cannot be used now (a lock held elsewhere, a
        full disk, a file written back and not opened again): the step is tried
        again at the next poll, nothing lost (the rows stay; an upload 1C took
        whose end was not kept is asked 1C again, which answers it is complete).
        One WARNING when it starts or its reason changes, no traceback."""
        reason = str(exc) or type(exc).__name__
        if reason == self._store_failing:
            return
        self._store_failing = reason
        log.warning(
            "onec: the recordings queue %s or the catalog cannot be used now: %s; recordings "
            "wait (nothing is lost) and the step is tried again every %g s; said again "
            "once it works",
            self.queue.path,
            reason,
            self.poll,
        )

    def _store_works(self) -> None:
        if self._store_failing is not None:
            self._store_failing = None
            log.info("onec: the recordings queue and the catalog work again")

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except sqlite3.OperationalError as exc:
                self._store_failed(exc)
            except Exception:
                log.exception("onec: the recordings upload loop failed; going on")
            else:
                self._store_works()
            await asyncio.sleep(self.poll)

    async def step(self) -> int:
        """Take newly closed recordings in and deliver what is due; how many were delivered."""
        # One page of the catalog's closed files a step, from where the last one
        # ended, starting over after a short page: files that stay closed for good
        # (refused by 1C, pull links never opened) never hide newer ones, and a long
        # call's file (an older id, closed late) is met on the next round.
        fresh = await asyncio.to_thread(self.store.closed, self._after, CATALOG_PAGE)
        self._after = fresh[-1].id if len(fresh) == CATALOG_PAGE else 0
        for rec in fresh:
            if await asyncio.to_thread(self.queue.add, rec):
                log.info("onec: recording %s queued for 1C", rec.event_id)
            elif rec.retry_asked_at is not None and await asyncio.to_thread(
                self.queue.requeue, rec
            ):
                # Asked for again: its next failure is said at WARNING, not as a
                # retry (DEBUG) of the failures before it was given up.
                self._failing.discard((rec.event_id, rec.sha256 or ""))
                log.info(
                    "onec: recording %s queued for 1C again (callrouter recordings retry)",
                    rec.event_id,
                )
        delivered = 0
        due = await asyncio.to_thread(self.queue.due, folder=self.settings.local_dir)
        for upload in due:
            if await self.deliver(upload):
                delivered += 1
        if time.monotonic() >= self._prune_at:
            self._prune_at = time.monotonic() + PRUNE_EVERY
            await asyncio.to_thread(self.prune)
        return delivered

    def prune(self, now: float | None = None) -> None:
        """One bounded pass over the queue's ``done`` rows (blocking: run it in a thread)."""
        before = (time.time() if now is None else now) - KEEP_DONE_DAYS * 86400.0
        self._prune_after = self.queue.prune(
            self._still_closed, before, self._prune_after, PRUNE_BATCH
        )

    def _still_closed(self, call_id: str, part: str, sha256: str) -> bool:
        try:
            rec = self.store.get(call_id, part)
        except ValueError:
            return False
        return rec is not None and rec.state == "closed" and rec.sha256 == sha256

    def _unwanted(self, upload: Upload) -> str | None:
        """Why the catalog no longer wants this upload sent (its file is ``empty``:
        no sound), or None (blocking)."""
        try:
            rec = self.store.get(upload.call_id, upload.part)
        except ValueError:
            return None
        if rec is not None and rec.state == "empty" and rec.sha256 == upload.sha256:
            return rec.note or "no sound (0 s)"
        return None

    def _gone(self, upload: Upload) -> None:
        """The file is gone from disk: the catalog's row is ``missing`` (blocking).
        Not when its folder is gone or empty (a mount gone: an NFS share not mounted
        leaves its empty mount point, and the file comes back with it); callrouter's
        retention, which sees the whole folder, decides about those."""
        try:
            rec = self.store.get(upload.call_id, upload.part)
        except ValueError:
            return
        if rec is None or rec.file is None or rec.sha256 != upload.sha256:
            return
        if not _holds_files(rec.file.parent):
            return
        note = f"the file {rec.file} is gone (found by the 1C upload); it was {rec.state}"
        if self.store.mark_missing(rec.id, note):
            log.warning(
                "recording %s of call %s: %s is gone (deleted outside callrouter, found by "
                "the 1C upload); it was %s, now missing",
                rec.part,
                rec.call_id,
                rec.file,
                rec.state,
            )

    def _give_up(self, upload: Upload, reason: str) -> None:
        """The upload is ``failed`` in the queue, never sent again unless ``callrouter
        recordings retry`` asks; the catalog keeps the reason for ``recordings status``
        (blocking: run it in a thread)."""
        self.queue.fail(upload, reason)
        self.store.upload_failed(upload.call_id, upload.part, upload.sha256, reason)

    def _log_unexpected(self, upload: Upload, exc: Exception, wait: float) -> None:
        """An unforeseen failure of one upload: its traceback once per file and kind
        of failure, a WARNING line for each repeat (its backoff spaces them)."""
        key = (upload.event_id, upload.sha256, type(exc).__name__)
        if key in self._unexpected:
            log.warning(
                "onec: recording %s (%s) not delivered again (%s: %s); retrying in %.0f s",
                upload.event_id,
                upload.file,
                type(exc).__name__,
                exc,
                wait,
            )
            return
        if len(self._unexpected) >= UNEXPECTED_KEPT:
            self._unexpected.clear()
        self._unexpected.add(key)
        log.error(
            "onec: recording %s (%s) not delivered: unexpected %s: %s; retrying in %.0f s",
            upload.event_id,
            upload.file,
            type(exc).__name__,
            exc,
            wait,
            exc_info=exc,
        )

    def _not_delivered(self, upload: Upload, exc: OSError, wait: float) -> None:
        """One file not delivered (its read failed, or 1C's answer about it): a WARNING
        the first time, each retry after it at DEBUG until the file is delivered (or,
        given up, asked for again: its failure then is a WARNING again).

        A line per file per retry grew with the files waiting: a 1C answering every
        file's status with a byte count that is none, or a 400, logged more each
        minute for as long as it did. The queue keeps each file's last error."""
        key = (upload.event_id, upload.sha256)
        if key in self._failing:
            log.debug(
                "onec: recording %s not delivered again (%s); retrying in %.0f s",
                upload.event_id,
                exc,
                wait,
            )
            return
        if len(self._failing) >= UNEXPECTED_KEPT:
            self._failing.clear()
        self._failing.add(key)
        log.warning(
            "onec: recording %s not delivered (%s); retrying in %.0f s (its retries are "
            "logged at DEBUG until it is delivered)",
            upload.event_id,
            exc,
            wait,
        )

    def _away(self, upload: Upload, exc: _Away, wait: float) -> None:
        """1C is away: a WARNING when that starts, each file's retry at DEBUG after it.

        A line per file per retry grew with the files waiting: an outage of hours
        (1C's updates) logged more each minute than the one before."""
        self._away_attempts += 1
        if self._away_since is not None:
            log.debug(
                "onec: recording %s not delivered (%s); retrying in %.0f s",
                upload.event_id,
                exc,
                wait,
            )
            return
        self._away_since = time.monotonic()
        log.warning(
            "onec: recording %s not delivered (%s); retrying in %.0f s. Recordings wait "
            "in %s and are retried (every %.0f s at most); said again once 1C takes one",
            upload.event_id,
            exc,
            wait,
            self.queue.path,
            self.retry_max,
        )

    def _backoff(self, attempts: int) -> float:
        delay: float = min(self.retry_max, self.retry_min * 2.0 ** min(attempts, 20))
        return delay * (0.8 + 0.4 * random.random())

    async def deliver(self, upload: Upload) -> bool:
        """One attempt; True when 1C holds the file (or the link, in pull mode)."""
        try:
            unwanted = await asyncio.to_thread(self._unwanted, upload)
            if unwanted is not None:
                # Queued before the catalog called it empty (an upgrade's catalog):
                # 1C wants no recording of no sound.
                await asyncio.to_thread(self.queue.fail, upload, unwanted)
                log.info("onec: recording %s not sent: %s", upload.event_id, unwanted)
                return False
            if not await asyncio.to_thread(upload.file.exists):
                await asyncio.to_thread(self._give_up, upload, "the file is gone")
                log.error("onec: recording %s: the file %s is gone", upload.event_id, upload.file)
                await asyncio.to_thread(self._gone, upload)
                return False
            linked: float | None = None
            if self.settings.mode == "pull" and self._link is not None:
                url, expires = self._link(upload.call_id, upload.part)
                await self.remote.link(upload, url, expires)
                linked = expires
            else:
                await self._push(upload)
        except _Refused as exc:
            await asyncio.to_thread(self._give_up, upload, str(exc))
            log.error("onec: recording %s refused: %s", upload.event_id, exc)
            return False
        except _Away as exc:
            self.failures += 1
            wait = self._backoff(upload.attempts)
            await asyncio.to_thread(self.queue.retry, upload, str(exc), time.time() + wait)
            self._away(upload, exc, wait)
            return False
        except OSError as exc:
            self.failures += 1
            wait = self._backoff(upload.attempts)
            await asyncio.to_thread(self.queue.retry, upload, str(exc), time.time() + wait)
            self._not_delivered(upload, exc, wait)
            return False
        except Exception as exc:
            # A bug, or a 1C answer nobody foresaw: a failed attempt like any other
            # (counted, put off), or the same file would raise again at every step,
            # a traceback each second, and every upload behind it would wait.
            self.failures += 1
            wait = self._backoff(upload.attempts)
            error = f"{type(exc).__name__}: {exc}"
            await asyncio.to_thread(self.queue.retry, upload, error, time.time() + wait)
            self._log_unexpected(upload, exc, wait)
            return False
        self.failures = 0
        self._failing.discard((upload.event_id, upload.sha256))
        if self._away_since is not None:
            log.info(
                "onec: recordings reach 1C again after %.0f s (%d attempts failed meanwhile)",
                time.monotonic() - self._away_since,
                self._away_attempts,
            )
            self._away_since = None
            self._away_attempts = 0
        await asyncio.to_thread(self.queue.done, upload)
        if self.settings.mode == "push":
            await asyncio.to_thread(
                self.store.confirm, upload.call_id, upload.part, upload.sha256, RECEIVER
            )
        if linked is not None:
            # Only the link went: "delivered" would tell a 1C developer the file
            # is in 1C, while 1C still has to fetch it before the link expires.
            log.info(
                "onec: recording %s: 1C has its link (%d bytes to fetch before %s UTC)",
                upload.event_id,
                upload.size,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(linked)),
            )
        else:
            log.info("onec: recording %s delivered to 1C (%d bytes)", upload.event_id, upload.size)
        return True

    def link_for(self, call_id: str) -> str | None:
        """Pull mode: a signed link to the call's recording for its history event, or None.

        The call's ``hangup`` carries it as ``recording_url`` (the contract's field),
        signed now; the recording's own message, sent once the file is closed,
        carries a fresh one, so 1C has a valid link even after a long outage.
        """
        if self.settings.mode != "pull" or self._link is None:
            return None
        try:
            # A file still being written (the hang-up comes before its close) will be
            # served once closed; one of no sound, failed, gone or removed never is.
            parts = {r.part for r in self.store.for_call(call_id) if r.state in _LINKABLE}
        except ValueError:  # an id that cannot name a recording was never recorded
            return None
        for part in ("mix", "in", "out"):
            if part in parts:
                return self._link(call_id, part)[0]
        return None

    async def _push(self, upload: Upload) -> None:
        """One attempt: every chunk from 1C's count on. 1C's answers bound it: a 200 must
        count more bytes than before the chunk (otherwise the same chunk would go again
        at once, for ever), and 1C may ask for another offset 8 times at most."""
        status = await self.remote.status(upload)
        offset = status.received
        restarts = 0
        mismatched = False
        while not status.complete:
            # Never past the catalogued size: bytes written after the file was hashed
            # (appended to its name) are not the recording, and a chunk past SIZE is
            # one 1C refuses (400), which would fail the upload for good.
            want = min(self.chunk, upload.size - offset)
            data = await asyncio.to_thread(
                _read, self.settings.local_dir, upload.file, offset, want
            )
            if not data:
                raise _Refused(f"{upload.file} is shorter than its catalogued {upload.size} bytes")
            try:
                status = await self.remote.put(upload, offset, data)
            except _HashMismatch:
                # The bytes sent were not the ones hashed. Either the file changed at
                # its name since it was catalogued (sending it again cannot match, and
                # would send all of it again and again), or they were garbled on the
                # way: start over once, then later.
                digest = await asyncio.to_thread(
                    _digest, self.settings.local_dir, upload.file, upload.size
                )
                if digest != upload.sha256:
                    raise _Refused(
                        f"{upload.file} no longer holds the bytes catalogued (SHA-256 "
                        f"{digest[:16]}..., catalogued {upload.sha256[:16]}...): not sent again"
                    ) from None
                if mismatched:
                    raise OSError(
                        "1C's SHA-256 of the file did not match twice; trying again later"
                    ) from None
                mismatched = True
                offset = 0
                continue
            except _Resume as resume:
                restarts += 1
                if restarts > 8:
                    raise OSError("1C keeps asking for another offset") from None
                offset = resume.received
                continue
            if not status.complete and status.received <= offset:
                raise OSError(
                    f"1C took the chunk at {offset} but counts {status.received} bytes; "
                    "trying again later"
                )
            offset = status.received


def _open(folder: Path, path: Path) -> BinaryIO:
    """The recording, open; ``_Refused`` when it is not below ``folder`` (``[recordings]
    local_dir``) or a symbolic link, a FIFO or anything but a regular file holds its
    name or a name on the way down from ``folder`` (its folder is Asterisk's: whoever
    writes there must not make callrouter upload another file, or block). Each name
    is opened from the folder above it, never following a link
    (:func:`router.open_recording`): the check :meth:`UploadQueue.due` made of the
    resolved path holds at every read, not only when it was made."""
    try:
        return open_recording(folder, path)
    except NotTheRecording as exc:
        # Given up with one ERROR naming the file (:meth:`RecordingUploader.deliver`).
        raise _Refused(exc.strerror) from None


def _read(folder: Path, path: Path, offset: int, size: int) -> bytes:
    """``size`` bytes of the recording from ``offset`` (:func:`_open`)."""
    with _open(folder, path) as fh:
        fh.seek(offset)
        return fh.read(size)


def _digest(folder: Path, path: Path, size: int) -> str:
    """The SHA-256 of the first ``size`` bytes of the recording (blocking; :func:`_open`)."""
    digest = hashlib.sha256()
    with _open(folder, path) as fh:
        left = size
        while left > 0 and (data := fh.read(min(CHUNK, left))):
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


async def start_uploads(
    engine: EngineAPI,
    client: OneCSettings,
    state_dir: Path | None = None,
    *,
    retry_min: float = 1.0,
    retry_max: float = 60.0,
) -> RecordingUploader | None:
    """The uploader for this engine, started; None when ``[recordings]`` is off.

    ``retry_min``/``retry_max`` are ``[plugins.onec] events_retry_min``/``_max``:
    recordings back off as the call history does.
    """
    import router

    settings = engine.config.recordings
    store = await asyncio.to_thread(router.open_recordings, engine.config, engine.state_dir)
    if settings is None or store is None:
        return None
    queue = await asyncio.to_thread(UploadQueue, Path(state_dir or engine.state_dir) / FILENAME)
    link = None
    if settings.mode == "pull":
        signer = router.recording_signer(settings, engine.state_dir)
        base = settings.public_url or ""

        def link(call_id: str, part: str) -> tuple[str, float]:
            now = time.time()
            url = signer.url(base, call_id, part, settings.url_ttl, now=now)
            return url, now + settings.url_ttl

    uploader = RecordingUploader(
        store,
        queue,
        OneCRecordings(client),
        settings,
        link=link,
        retry_min=retry_min,
        retry_max=retry_max,
    )
    uploader.start()
    pending = queue.counts().get("pending", 0)
    if pending:
        log.info("onec: %d recordings left by the last run; delivering them", pending)
    return uploader


async def close_uploads(uploader: RecordingUploader | None) -> None:
    if uploader is None:
        return
    await uploader.stop()
    await uploader.remote.aclose()
    await asyncio.to_thread(uploader.queue.close)
    await asyncio.to_thread(uploader.store.close)
