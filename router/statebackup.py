"""A consistent copy of ``[router] state_dir`` while callrouter runs.

The state folder holds SQLite files in WAL mode (the API's feed, the
recordings catalog, the 1C plugin's queues): a ``cp`` of one while the
service writes can pair a database file with a ``-wal`` of another moment, or
miss the ``-wal`` and the commits in it, and the ``sqlite3`` shell that would
do it right is not installed beside callrouter. Each SQLite file is copied
here with SQLite's online backup API in one step (one read transaction: a
snapshot, never blocking the service's writes in WAL mode) into a single
self-contained file (rollback journal, no ``-wal``), and checked
(``PRAGMA quick_check``). The other files (``calllife.json``,
``forwarding.json``, ``recordings.key``, ``schedule-runs.json``) are replaced
by rename whenever callrouter writes them, so a plain read gets one whole
version. The live
page's session key (``ui-sessions.json``) is left out: see :data:`UI_SESSIONS`.

Every file of the folder is copied, not a list of names: a plugin's state is
backed up too. Left out, each with its reason: sub-folders, symbolic links,
SQLite's ``-wal``/``-shm``/``-journal`` (in the copy already), temporary
files (a leading dot: a write in progress) and the files callrouter set
aside as unreadable (``*.bad``, ``*.bad-N``, ``*.unreadable-*``). The copies
are 0600 in a new 0700 folder: the state holds callers' numbers and the links' key.

Beside the copies, :data:`MANIFEST` lists each file with its size and
SHA-256, and the version that made the backup: ``callrouter state restore``
(router/staterestore.py) restores only a backup whose every file it names is
there as it was. It is given its name last, after every copy got its own:
a backup with a manifest is a whole one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import stat
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote

from router import __version__
from router.aside import SQLITE_SIDECARS
from router.errors import StateBackupError
from router.private_dir import private_dir_problem

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MAX_ENTRIES",
    "MAX_PLAIN_BYTES",
    "READ_CHUNK",
    "READ_FLAGS",
    "Copied",
    "Skipped",
    "backup_state",
    "file_sha256",
    "refuse_shared_backup_dir",
    "sidecar_suffix",
    "source_problem",
]

#: The backup's list of its files (a leading dot: never a state file's name,
#: since a backup leaves those out, and never copied by ``cp BACKUP/*``).
MANIFEST: Final = ".callrouter-backup.json"
#: The manifest's ``format``; a restore refuses a later one it cannot read.
MANIFEST_FORMAT: Final = 1

#: The first bytes of every SQLite database file.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: SQLite's side files: their content is in the backup API's copy.
SIDECARS: Final = SQLITE_SIDECARS
#: The live page's session key (router/api/session_store.py ``FILE_NAME``): never
#: backed up. A backup is kept longer, and in more places, than the state folder,
#: and the key signs the page's cookies for as long as it is kept.
UI_SESSIONS: Final = "ui-sessions.json"
#: A state folder with more entries than this is not callrouter's (a wrong path).
MAX_ENTRIES: Final = 1000
#: A file that is not SQLite and larger than this is no state callrouter keeps
#: (forwarding.json is at most 4 MiB): left out, not read.
MAX_PLAIN_BYTES: Final = 64 * 1024 * 1024
#: Seconds SQLite waits for a lock the service holds (a checkpoint) before failing.
BUSY_TIMEOUT: Final = 5.0
#: How much a copy or a checksum reads at a time (state backup and restore).
READ_CHUNK: Final = 1 << 20
#: A file of a state or backup folder is opened to read with these: never
#: through a symbolic link, never waiting on a FIFO (state backup and restore).
READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Copied:
    name: str
    size: int
    kind: Literal["sqlite", "file"]


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    why: str


def backup_state(source: Path, target: Path) -> Iterator[Copied | Skipped]:
    """Copy ``source``'s files into the new folder ``target``, one result a file.

    Raises StateBackupError when ``target`` exists and is not empty, when
    ``source`` is no folder or too large a one, and for a file that cannot be
    copied (after the files before it: the caller reports what was done).
    The copies are made under temporary names and given theirs only once
    every file is copied: a backup that fails (or is not read to its end)
    leaves none of them behind.
    """
    _refuse_inside(source, target)
    entries = _entries(source)
    _make_target(target)
    _refuse_shared(target)
    names = {entry.name for entry in entries}
    #: The copies made so far, under their temporary names (:func:`_partial`).
    made: list[str] = []
    listed: list[Copied] = []
    left_out: list[Skipped] = []
    done = False
    try:
        for entry in entries:
            why = _left_out(entry, names)
            if why is not None:
                left_out.append(Skipped(entry.name, why))
                yield left_out[-1]
                continue
            path = Path(entry.path)
            partial = target / _partial(entry.name)
            try:
                if _is_sqlite(path):
                    made.append(entry.name)
                    listed.append(Copied(entry.name, _copy_sqlite(path, partial), "sqlite"))
                    yield listed[-1]
                    continue
                size = os.stat(path, follow_symlinks=False).st_size
                if size > MAX_PLAIN_BYTES:
                    left_out.append(
                        Skipped(entry.name, f"larger than {MAX_PLAIN_BYTES} bytes and not SQLite")
                    )
                    yield left_out[-1]
                    continue
                made.append(entry.name)
                listed.append(Copied(entry.name, _copy_plain(path, partial), "file"))
                yield listed[-1]
            except (OSError, sqlite3.Error) as exc:
                raise StateBackupError(
                    f"{path}: not backed up: {exc}; nothing was kept in {target}"
                ) from None
        try:
            made.append(MANIFEST)  # removed with the copies if what follows fails
            _write_manifest(source, target, listed, left_out)
            _sync_folder(target)
            for name in made:
                os.rename(target / _partial(name), target / name)
            _sync_folder(target)
        except OSError as exc:
            raise StateBackupError(
                f"{target}: the copies could not be put in place: {exc}; nothing was kept"
            ) from None
        done = True
    finally:
        if not done:
            # A backup stopped part way (a full disk, an error, a caller that
            # stopped reading) leaves no file that looks like a backup: the
            # copies went under temporary names, and a copy cut short by a full
            # disk, kept under its own name, was restored as the state by a
            # later ``cp`` of the folder (issue 16).
            _remove_copies(target, made)


def source_problem(source: Path) -> str | None:
    """What ``callrouter run`` would refuse about ``source`` as its state folder
    (another local user can change what it holds: router/private_dir.py), as
    its sentence with the fix; None when nothing, or when the folder cannot be
    looked at (:func:`backup_state` then says why it cannot be read).

    Asked as the folder's owner, the service's user, whoever runs the backup:
    root backing up a DynamicUser's folder is no reason to warn. Not a
    refusal: the state of an older install, made before run refused such a
    folder, is backed up before an upgrade all the same (issue 16).
    """
    try:
        return private_dir_problem(source, me=source.stat().st_uid)
    except OSError:
        return None


def _write_manifest(
    source: Path, target: Path, copies: list[Copied], left_out: list[Skipped]
) -> None:
    """:data:`MANIFEST`, under its temporary name: each copy's name, size and
    SHA-256 (of the copy as written, read back), what was left out and why,
    and the version that made the backup."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "made_by": f"callrouter {__version__}",
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "state_dir": os.path.abspath(source),
        "files": [
            {
                "name": copy.name,
                "size": copy.size,
                "sha256": file_sha256(target / _partial(copy.name)),
                "kind": copy.kind,
            }
            for copy in copies
        ],
        "left_out": [{"name": skipped.name, "why": skipped.why} for skipped in left_out],
    }
    # ASCII: a name that is not UTF-8 (a plugin's file; Python holds its bytes
    # as lone surrogates) is written as its \\udcXX escape, which the restore
    # reads back to the same name; as UTF-8 it could not be encoded, and the
    # backup ended in a UnicodeEncodeError's traceback (hattack45).
    body = (json.dumps(manifest, indent=1) + "\n").encode("ascii")
    with os.fdopen(_create_private(target / _partial(MANIFEST)), "wb") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())


def file_sha256(path: Path) -> str:
    """The SHA-256 of the regular file ``path`` (never through a link), in hex."""
    digest = hashlib.sha256()
    with _open_read(path) as fd:
        while chunk := os.read(fd, READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _partial(name: str) -> str:
    """The name a copy is made under until every file is copied."""
    return f".{name}.partial"


def _remove_copies(target: Path, names: list[str]) -> None:
    for name in names:
        for leftover in (name, _partial(name), *(_partial(name) + s for s in SIDECARS)):
            with contextlib.suppress(OSError):
                (target / leftover).unlink()


def _refuse_inside(source: Path, target: Path) -> None:
    """A ``target`` in ``source`` (or ``source`` itself, through a symbolic
    link too) is refused: the next backup would copy this one into itself,
    and a state folder is the service's, not a place to keep copies."""
    folder, into = source.resolve(), target.resolve()
    if into == folder or folder in into.parents:
        where = (
            f"the state folder {source} itself"
            if into == folder
            else f"inside the state folder {source}"
        )
        raise StateBackupError(
            f"{target}: {where}: a backup there would be part "
            "of the next one and is lost with the folder; give a folder outside it"
        )


def _entries(source: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(source) as scan:
            entries = []
            for entry in scan:
                entries.append(entry)
                if len(entries) > MAX_ENTRIES:
                    raise StateBackupError(
                        f"{source}: more than {MAX_ENTRIES} entries: not a callrouter state_dir"
                    )
    except OSError as exc:
        raise StateBackupError(f"{source}: cannot read the state folder: {exc}") from None
    return sorted(entries, key=lambda e: e.name)


def _make_target(target: Path) -> None:
    """``target`` new (made 0700) or an empty folder: a backup never mixes with another."""
    try:
        target.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not target.is_dir() or any(target.iterdir()):
            raise StateBackupError(
                f"{target}: exists and is not an empty folder; name a new one"
            ) from None
    except OSError as exc:
        raise StateBackupError(f"{target}: cannot make the backup folder: {exc}") from None


def _refuse_shared(target: Path) -> None:
    """A ``target`` another local user can change is refused before anything is
    copied (issue 16): an empty folder they made (``/tmp/backup``, waiting for
    root's backup) let them swap a copy for a symbolic link after it was made
    and before SQLite wrote it, which SQLite follows (root's write where they
    chose), or for a FIFO, on which the backup waited for ever."""
    refuse_shared_backup_dir(target, StateBackupError, "or name a new folder, made 0700")


def refuse_shared_backup_dir(folder: Path, error: type[Exception], advice: str) -> None:
    """Raise ``error`` naming ``folder`` when it is not a backup folder only
    root and this user can change (router/private_dir.py), its sentence
    ending in ``advice``; or when it cannot be looked at. The backup's target
    (:func:`backup_state`) and the folder a restore reads
    (router/staterestore.py) are held to the same."""
    try:
        problem = private_dir_problem(folder, what="backup folder")
    except OSError as exc:
        raise error(f"{folder}: the backup folder: {exc.strerror or exc}") from None
    if problem is not None:
        raise error(
            f"{folder}: not a folder only root and this user can change: {problem}; {advice}"
        )


def _left_out(entry: os.DirEntry[str], names: set[str]) -> str | None:
    """Why ``entry`` is not copied, or None."""
    name = entry.name
    if entry.is_symlink():
        return "a symbolic link (not followed)"
    if entry.is_dir(follow_symlinks=False):
        return "a folder (only the state folder's own files are copied)"
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file"
    suffix = sidecar_suffix(name, names)
    if suffix is not None:
        return f"SQLite's {suffix} file: its content is in {name[: -len(suffix)]}'s copy"
    if name.startswith("."):
        return "a temporary file (a write in progress, or left by a crash)"
    if re.search(r"\.bad(-[0-9]+)?$", name) or ".unreadable-" in name:
        return "set aside by callrouter as unreadable: safe to delete once looked at"
    if name == UI_SESSIONS:
        return (
            "the live page's session key: a backup would carry it wherever it is kept, and "
            "no session is worth restoring (12 hours at most); a restore signs the page out"
        )
    return None


def sidecar_suffix(name: str, names: Collection[str]) -> str | None:
    """The suffix (:data:`SIDECARS`) that makes ``name`` SQLite's side file
    of a database in ``names`` (``feed.db-wal`` beside ``feed.db``), else
    None. A backup leaves such a file out, and a restore refuses one."""
    for suffix in SIDECARS:
        if name.endswith(suffix) and name[: -len(suffix)] in names:
            return suffix
    return None


def _is_sqlite(path: Path) -> bool:
    with _open_read(path) as fd:
        return os.read(fd, len(SQLITE_MAGIC)) == SQLITE_MAGIC


@contextlib.contextmanager
def _open_read(path: Path) -> Iterator[int]:
    fd = os.open(path, READ_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        yield fd
    finally:
        os.close(fd)


def _create_private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _copy_sqlite(path: Path, copy: Path) -> int:
    """One-step online backup of ``path`` into ``copy`` (0600), checked; its size."""
    for suffix in SIDECARS:
        # SQLite opens these as it finds them: a FIFO at -journal blocked the
        # backup for ever, a link would be followed (issue 16).
        try:
            mode = os.lstat(f"{path}{suffix}").st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            raise OSError(
                f"{path.name}{suffix} is not a regular file (a symbolic link, FIFO, folder or"
                " device): SQLite would follow it or wait on it; the service sets it aside at"
                " its next start, or move it away"
            )
    os.close(_create_private(copy))  # 0600 before SQLite opens it
    # Read-only: the backup never writes the service's file (its -wal and -shm
    # are opened as SQLite needs them; as root it keeps their owner).
    source = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        dest = sqlite3.connect(copy, timeout=BUSY_TIMEOUT)
        try:
            source.backup(dest)  # pages=-1: all in one step, one snapshot
            dest.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            (verdict,) = dest.execute("PRAGMA quick_check").fetchone()
        finally:
            dest.close()
    finally:
        source.close()
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"the copy fails SQLite's quick_check: {verdict}")
    _fsync(copy)
    return copy.stat().st_size


def _copy_plain(path: Path, copy: Path) -> int:
    size = 0
    with _open_read(path) as fd_in, os.fdopen(_create_private(copy), "wb") as out:
        # Bounded even if the file grows meanwhile (never one of callrouter's).
        while size <= MAX_PLAIN_BYTES and (chunk := os.read(fd_in, READ_CHUNK)):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem syncs a folder
        _fsync(path)
