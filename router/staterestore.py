"""Putting a ``callrouter state backup`` back into ``[router] state_dir``.

The documented rollback was a ``cp`` of the backup over the folder, with the
service stopped: it left the files the newer version made that the backup
lacks (``calllife.json``), the ``-wal`` of a database beside its restored
copy (SQLite would replay it into the wrong file), and it never checked that
the folder copied was a whole backup, or that no callrouter still ran there.

:func:`restore_state` does it in steps, and changes nothing before the last:

1. The state folder is held to what ``callrouter run`` holds it to (only
   root and its owner can change it: router/private_dir.py), and so is the
   backup folder; the one must not be in the other.
2. The backup must be one ``state backup`` made whole: every file its
   :data:`~router.statebackup.MANIFEST` lists, nothing else, no copy left
   under a temporary name (a backup cut short). A backup made before
   manifests (no manifest, nothing but files) is restored with a note.
3. No ``callrouter run`` may hold the state folder: run locks the folder
   itself for its whole run, and the restore takes that lock and keeps it to
   the end (a router started meanwhile refuses to start). Nor may a process
   hold a lock on a file in it (an ``sqlite3`` shell), named by its pid.
4. Each file is copied into the state folder under a temporary name,
   ``.NAME.restore-PID`` (0600, owned by the state folder's owner, as ``run``
   needs it), checked against the manifest's size and SHA-256, a database
   also with ``PRAGMA quick_check`` (SQLite opens it by its name: the name
   is held to the file written, and the file SQLite holds to it too).
5. Only then: every file of the state folder (its databases' ``-wal`` and
   ``-shm`` too) is moved, never deleted, into a new folder in it,
   ``before-restore-TIME``, and each copy renamed to its name. Folders in the
   state folder are left where they are (a backup holds none).

Every file is opened relative to a descriptor of its folder, with
``O_NOFOLLOW``: a symbolic link in either folder is never followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import sqlite3
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote

from router.aside import sqlite_holds
from router.errors import ConfigError, StateRestoreError
from router.logsafe import escape_controls
from router.private_dir import private_dir_problem, private_group
from router.statebackup import (
    MANIFEST,
    MANIFEST_FORMAT,
    MAX_ENTRIES,
    MAX_PLAIN_BYTES,
    READ_CHUNK,
    READ_FLAGS,
    SQLITE_MAGIC,
    refuse_shared_backup_dir,
    sidecar_suffix,
)

__all__ = [
    "ASIDE_PREFIX",
    "Holder",
    "RestoreReport",
    "Restored",
    "folder_lock_holder",
    "lock_folder",
    "lock_holder",
    "lock_state_folder",
    "restore_state",
]

#: The folder, in the state folder, that what was there before goes to.
ASIDE_PREFIX: Final = "before-restore-"
#: The manifest's ``made_by`` is said up to this many characters.
MAX_MADE_BY: Final = 100
#: A manifest larger than this is none ``state backup`` wrote (1000 files).
MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
#: SQLite's file header: bytes 18 and 19 are 2 in WAL mode, 1 with a rollback journal.
_HEADER: Final = 100
_WAL_MODE: Final = (
    "a database in WAL mode: `callrouter state backup` makes each one a single file "
    "(journal_mode delete); copied some other way, it may lack what was in its -wal"
)
#: A folder in a folder: never through a link.
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: The state folder and the backup's, by the path given: a link on the way is
#: followed (``/var/lib/callrouter`` is one into ``/var/lib/private`` under
#: ``DynamicUser=yes``), as private_dir_problem walked and checked it.
_TOP_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: ``struct flock`` on Linux: l_type, l_whence, l_start, l_len, l_pid (padded).
_FLOCK: Final = "hhqqi0q"


@dataclass(frozen=True, slots=True)
class Holder:
    """A process holding a lock on a file of the state folder."""

    name: str
    pid: int
    command: str

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid > 0 else "another process"
        return f"{who} ({self.command})" if self.command else who

    @property
    def restoring(self) -> bool:
        """Whether this is a ``callrouter state restore`` (its command line)."""
        return " state restore " in f" {self.command} "


@dataclass(frozen=True, slots=True)
class Restored:
    name: str
    size: int
    kind: str  # "sqlite" or "file"


@dataclass(slots=True)
class RestoreReport:
    #: The files put back, in name order.
    restored: list[Restored] = field(default_factory=list)
    #: Names moved into :attr:`aside` that the backup has no file for.
    moved_aside: list[str] = field(default_factory=list)
    #: Names moved into :attr:`aside` that a restored file took the place of.
    replaced: list[str] = field(default_factory=list)
    #: Folders of the state folder, left where they are.
    folders_kept: list[str] = field(default_factory=list)
    #: The folder what was there before went to (None: the state folder was empty).
    aside: Path | None = None
    #: The manifest's ``made_by`` (``callrouter 0.2.0``); None: no manifest.
    made_by: str | None = None


@dataclass(frozen=True, slots=True)
class _Listed:
    name: str
    size: int
    sha256: str | None
    kind: str | None


def restore_state(
    backup: Path, state_dir: Path, *, clock: Callable[[], float] = time.time
) -> RestoreReport:
    """Make ``state_dir`` hold exactly the files of ``backup`` (a folder
    ``callrouter state backup`` made); what it held before goes to a new
    folder in it. Raises StateRestoreError naming the file and the reason,
    having changed nothing in ``state_dir``, for every refusal (module
    docstring). Blocking (file system calls)."""
    try:
        return _restore(backup, state_dir, clock)
    except StateRestoreError as exc:
        # A name in the backup is not ours: its newline wrote a line of its
        # own under the error (the CLI keeps an error's newlines), its ESC is
        # escaped there too (hattack45). Said on one line, each escaped.
        raise StateRestoreError(escape_controls(str(exc))) from None


def _restore(backup: Path, state_dir: Path, clock: Callable[[], float]) -> RestoreReport:
    _refuse_overlap(backup, state_dir)
    owner = _check_state_dir(state_dir)
    _check_backup_dir(backup)
    with _folder(backup, "backup folder") as bfd, _folder(state_dir, "state folder") as sfd:
        listed, made_by = _whole_backup(backup, bfd)
        _hold_state_folder(state_dir, sfd)  # held until the folder's descriptor closes
        _refuse_held(state_dir, sfd)
        _refuse_too_large(backup, listed, state_dir, sfd)
        report = RestoreReport(made_by=made_by)
        temps: dict[str, str] = {}
        done = False
        try:
            for item in listed:
                temp = f".{item.name}.restore-{os.getpid()}"
                temps[item.name] = temp
                report.restored.append(_copy_in(backup, bfd, item, state_dir, sfd, temp, owner))
            _refuse_held(state_dir, sfd)  # an sqlite3 shell opened meanwhile
            _switch(state_dir, sfd, temps, owner, clock, report)
            done = True
        finally:
            if not done:
                for temp in temps.values():
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=sfd)
    return report


# -- the folders ----------------------------------------------------------------


def _refuse_overlap(backup: Path, state_dir: Path) -> None:
    folder, source = state_dir.resolve(), backup.resolve()
    if source == folder or folder in source.parents or source in folder.parents:
        raise StateRestoreError(
            f"{backup}: the state folder {state_dir} is this folder, or in it, or it in this "
            "one: give the folder `callrouter state backup` made, outside the state folder"
        )


def _check_state_dir(state_dir: Path) -> tuple[int, int]:
    """The state folder's owner (uid, gid), once it is held to what ``run``
    holds it to for that owner: nobody else can change it."""
    try:
        info = state_dir.stat()
    except OSError as exc:
        raise StateRestoreError(f"{state_dir}: the state folder: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StateRestoreError(f"{state_dir}: the state folder is not a folder")
    me = os.geteuid()
    if me not in (0, info.st_uid):
        raise StateRestoreError(
            f"{state_dir}: belongs to uid {info.st_uid} (the service's user), and this "
            f"runs as uid {me}: the files restored must be the service's; run it as root "
            "or as that user"
        )
    try:
        problem = private_dir_problem(state_dir, me=info.st_uid)
    except OSError as exc:
        raise StateRestoreError(f"{state_dir}: cannot check the state folder: {exc}") from None
    if problem is not None:
        raise StateRestoreError(
            f"{state_dir}: {problem}; `callrouter run` refuses such a state_dir, and files "
            "written there could be swapped for links (docs/security.md, Local users and files)"
        )
    return info.st_uid, info.st_gid


def _check_backup_dir(backup: Path) -> None:
    refuse_shared_backup_dir(
        backup, StateRestoreError, "another user could have changed the backup"
    )


@contextlib.contextmanager
def _folder(path: Path, what: str) -> Iterator[int]:
    try:
        fd = os.open(path, _TOP_FLAGS)
    except OSError as exc:
        raise StateRestoreError(f"{path}: cannot open the {what}: {exc.strerror or exc}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _names(path: Path, fd: int) -> list[str]:
    try:
        names = os.listdir(fd)
    except OSError as exc:
        raise StateRestoreError(f"{path}: cannot read the folder: {exc.strerror or exc}") from None
    if len(names) > MAX_ENTRIES:
        raise StateRestoreError(
            f"{path}: more than {MAX_ENTRIES} entries: not what callrouter keeps or backs up"
        )
    return sorted(names)


# -- the backup -----------------------------------------------------------------


def _whole_backup(backup: Path, bfd: int) -> tuple[list[_Listed], str | None]:
    """The files to restore, once the folder is known to be a whole backup
    (module docstring, step 2); and the manifest's ``made_by``."""
    names = _names(backup, bfd)
    files: dict[str, int] = {}
    for name in names:
        if name.endswith(".partial") and name.startswith("."):
            raise StateRestoreError(
                f"{backup / name}: a copy under its temporary name: the backup was cut short "
                "(a full disk, a kill) and is not whole; restore another backup"
            )
        if name == MANIFEST:
            continue
        try:
            info = os.lstat(name, dir_fd=bfd)
        except OSError as exc:
            raise StateRestoreError(f"{backup / name}: {exc.strerror or exc}") from None
        why = _not_backed_up(name, info.st_mode, names)
        if why is not None:
            raise StateRestoreError(
                f"{backup / name}: {why}: `callrouter state backup` never makes one; "
                "not a backup folder, or one changed since"
            )
        _refuse_others_file(backup / name, info)
        files[name] = info.st_size
    if MANIFEST not in names:
        if not files:
            raise StateRestoreError(f"{backup}: no files: not a backup")
        listed = [_Listed(name, size, None, None) for name, size in files.items()]
        return listed, None
    listed, made_by = _read_manifest(backup, bfd)
    for item in listed:
        if item.name not in files:
            raise StateRestoreError(
                f"{backup / item.name}: missing: the backup's manifest ({MANIFEST}) lists it; "
                "the backup is not whole"
            )
        if files[item.name] != item.size:
            raise StateRestoreError(
                f"{backup / item.name}: {files[item.name]} bytes, the manifest says {item.size}: "
                "changed or cut short since the backup"
            )
    extra = sorted(set(files) - {item.name for item in listed})
    if extra:
        raise StateRestoreError(
            f"{backup / extra[0]}: not in the backup's manifest ({MANIFEST}): put there after "
            "the backup; move it away, or restore another backup"
        )
    return listed, made_by


def _not_backed_up(name: str, mode: int, names: list[str]) -> str | None:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if name.startswith("."):
        return "a hidden file"
    suffix = sidecar_suffix(name, names)
    if suffix is not None:
        return f"SQLite's {suffix} file (a backup holds each database as one file)"
    return None


def _refuse_others_file(path: Path, info: os.stat_result) -> None:
    """Refuse a file of the backup (``info``) that a user other than root and
    this one may write. The folder is held to that (:func:`_check_backup_dir`),
    but a file in it another user owns or may write (a careless chmod, a copy
    keeping their owner) they could have changed, its manifest with it
    (hattack45): ``recordings.key`` signs the recordings' links."""
    if info.st_uid not in (0, os.geteuid()):
        who = f"belongs to uid {info.st_uid}"
    elif info.st_mode & stat.S_IWOTH:
        who = "is writable by every user"
    elif info.st_mode & stat.S_IWGRP and not private_group(info.st_gid, info.st_uid):
        who = f"is writable by its group (gid {info.st_gid})"
    else:
        return
    raise StateRestoreError(
        f"{path}: {who}, who could have changed it since the backup: make it root's or "
        "yours and writable by you alone (a backup's files are 0600), or restore another backup"
    )


def _read_manifest(backup: Path, bfd: int) -> tuple[list[_Listed], str | None]:
    where = backup / MANIFEST
    try:
        fd = os.open(MANIFEST, READ_FLAGS, dir_fd=bfd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StateRestoreError(f"{where}: not a regular file")
            _refuse_others_file(where, info)
            body = os.read(fd, MAX_MANIFEST_BYTES + 1)
        finally:
            os.close(fd)
    except StateRestoreError:
        raise  # an OSError too, said already: not a read's failure
    except OSError as exc:
        raise StateRestoreError(f"{where}: cannot read the manifest: {exc}") from None
    if len(body) > MAX_MANIFEST_BYTES:
        raise StateRestoreError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes: no manifest")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateRestoreError(f"{where}: not the manifest JSON: {exc}") from None
    except RecursionError:
        # Arrays in arrays, thousands deep: json's decoder recursed out of the
        # stack (a traceback, not an error naming the file: issue 16).
        raise StateRestoreError(
            f"{where}: not the manifest JSON: arrays or objects nested thousands deep"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("format"), int):
        raise StateRestoreError(f'{where}: no "format" number: not a backup\'s manifest')
    made_by = data.get("made_by")
    if isinstance(made_by, str):
        # Printed: a version's name, not the 4 MiB a crafted manifest may hold.
        made_by = made_by[:MAX_MADE_BY]
    if data["format"] > MANIFEST_FORMAT:
        raise StateRestoreError(
            f"{where}: format {data['format']} (made by {made_by!r}); this "
            f"callrouter reads format {MANIFEST_FORMAT} at most: restore with the version that "
            "made the backup, or a later one"
        )
    files = data.get("files")
    if not isinstance(files, list):
        raise StateRestoreError(f'{where}: "files" is not a list')
    if len(files) > MAX_ENTRIES:
        # Never a state folder's backup (state backup copies at most this
        # many); and each name is looked up, not compared with every other.
        raise StateRestoreError(
            f'{where}: "files" lists {len(files)} files; a backup holds at most {MAX_ENTRIES}'
        )
    listed: list[_Listed] = []
    seen: set[str] = set()
    for number, item in enumerate(files, 1):
        name = item.get("name") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        digest = item.get("sha256") if isinstance(item, dict) else None
        kind = item.get("kind") if isinstance(item, dict) else None
        if (
            not isinstance(name, str)
            or not name
            or "/" in name
            or "\0" in name
            or name.startswith(".")
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(digest, str)
            or not re.fullmatch(r"[0-9a-f]{64}", digest)
            or kind not in ("sqlite", "file")
        ):
            raise StateRestoreError(
                f'{where}: file {number} of "files": expected name, size, sha256 and kind '
                f"(sqlite or file), got {escape_controls(repr(item))[:200]}"
            )
        if name in seen:
            raise StateRestoreError(f"{where}: lists {escape_controls(name)!r} twice")
        if kind == "file" and size > MAX_PLAIN_BYTES:
            raise StateRestoreError(
                f"{where}: lists {escape_controls(name)!r} of {size} bytes, not SQLite: "
                f"`callrouter state backup` leaves out such a file (over {MAX_PLAIN_BYTES} bytes)"
            )
        seen.add(name)
        listed.append(_Listed(name, size, digest, kind))
    if not listed:
        raise StateRestoreError(f"{where}: lists no file: nothing to restore")
    # Never None with a manifest: None says there was none.
    return listed, made_by if isinstance(made_by, str) and made_by else "an unnamed version"


def _refuse_too_large(backup: Path, listed: list[_Listed], state_dir: Path, sfd: int) -> None:
    """Refuse, before anything is copied, a backup larger than the space free
    in the state folder's file system: a sparse file of terabytes (a few
    blocks in the backup) was written out whole until the disk was full."""
    needed = sum(item.size for item in listed)
    try:
        info = os.fstatvfs(sfd)
    except OSError:
        return  # not told: ENOSPC says it, and the copies are removed
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise StateRestoreError(
            f"{backup}: its files are {needed} bytes, and {state_dir} has {free} bytes free: "
            "make room first (the files there now are moved aside, not deleted); nothing "
            "was changed"
        )


# -- a running router -------------------------------------------------------------


def lock_holder(fd: int) -> int | None:
    """The pid of a process holding a lock that conflicts with a write lock on
    the whole file ``fd`` (``F_GETLK``; 0 or -1 when the kernel cannot say,
    an open file description lock), None when there is none."""
    asked = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    kind, _whence, _start, _length, pid = struct.unpack(
        _FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, asked)
    )
    return None if kind == fcntl.F_UNLCK else pid


def _hold_state_folder(state_dir: Path, sfd: int) -> None:
    """Take the lock ``callrouter run`` holds on its state folder for its whole
    run (``flock`` on the folder itself, router/engine.py), and keep it for the
    restore: a running router, with or without files open there, is refused,
    and one started during the restore refuses to start instead of opening
    files half put back."""
    try:
        held, holder = lock_folder(sfd)
    except OSError as exc:
        raise StateRestoreError(
            f"{state_dir}: cannot lock the state folder: {exc.strerror or exc}"
        ) from None
    if not held:
        return
    if holder is not None and holder.restoring:
        raise StateRestoreError(
            f"{state_dir}: being restored by {holder.describe()}, which holds the state "
            "folder's lock; wait for it to end"
        )
    who = f" ({holder.describe()})" if holder is not None else ""
    raise StateRestoreError(
        f"{state_dir}: in use by a running `callrouter run`{who}, which holds the "
        "state folder's lock; stop it first (systemctl stop callrouter), then restore"
    )


def lock_folder(fd: int) -> tuple[bool, Holder | None]:
    """Take the state folder's lock, ``flock`` on the folder ``fd`` itself, as
    ``callrouter run`` (router/engine.py) and ``callrouter state restore`` do
    for as long as they run. ``(False, None)``: taken, held until ``fd``
    closes. ``(True, holder)``: another process holds it, ``holder`` when
    ``/proc/locks`` tells who (:func:`folder_lock_holder`). Raises
    ``OSError`` when the folder cannot be locked at all."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, folder_lock_holder(fd)
    return False, None


def lock_state_folder(path: Path, *, key: str, where: str) -> int:
    """Lock ``path``, a state folder, as ``callrouter run`` does for its whole
    run (:func:`lock_folder`): the descriptor holding the lock, which closing
    drops. ``key`` is the setting that names the folder (``[router]
    state_dir``, a plugin's own ``[plugins.onec] state_dir``) and ``where``
    its file and line. Raises ``ConfigError`` naming them, the folder and
    the process that holds it when another one does: a second router would
    write the same state files."""
    try:
        # A folder its user may write in but not list (0300) passed the
        # write probe: its open failed with a traceback (issue 16).
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(
            f"{where}: {key}: cannot open {path} to lock it: "
            f"{exc.strerror or exc}; give the service's user a folder it may read "
            f"and write (chmod 700)"
        ) from None
    try:
        # Who holds it: a `callrouter state restore` takes this lock too,
        # and an administrator looking for a second `callrouter run`
        # would find none (hnewuser45's trial).
        held, holder = lock_folder(fd)
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"{where}: {key}: cannot lock {path}: {exc.strerror or exc}") from None
    if not held:
        return fd
    os.close(fd)
    if holder is not None and holder.restoring:
        # Started while a restore puts the files back (hattack45: it
        # was said as "another callrouter run", which is not there).
        raise ConfigError(
            f"{where}: {key}: {path} is being restored by "
            f"{holder.describe()}; start callrouter once it has ended"
        )
    by = f"; {holder.describe()} holds its lock" if holder is not None else ""
    raise ConfigError(
        f"{where}: {key}: {path} is in use by another "
        f"`callrouter run` (the service, or one started by hand with this "
        f"state folder) or a `callrouter state restore`{by}; two would "
        f"write the same state files: stop the other one first (a restore: "
        f"let it end), or give this one a state_dir of its own "
        f"(docs/operations.md, Two instances on one Asterisk)"
    )


#: ``/proc/locks`` is read no further than this (one line a lock on the host).
_MAX_PROC_LOCKS: Final = 1 << 20


def folder_lock_holder(sfd: int) -> Holder | None:
    """The process holding a ``flock`` on the folder ``sfd`` (a ``callrouter
    run``, or a ``callrouter state restore``, router/engine.py), from
    ``/proc/locks`` (``N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...``, the
    device in hex); None when it cannot be told."""
    st = os.fstat(sfd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", "rb") as locks:
            text = locks.read(_MAX_PROC_LOCKS).decode("ascii", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split()
        # A blocked waiter's line starts "N: ->"; only a holder's is ours.
        if len(words) >= 6 and words[1] == "FLOCK" and words[5] == device:
            with contextlib.suppress(ValueError):
                pid = int(words[4])
                return Holder(".", pid, _command_of(pid))
    return None


def _refuse_held(state_dir: Path, sfd: int) -> None:
    """Refuse while a process holds a lock on a file of the state folder.

    ``callrouter run`` keeps its databases (the API's event feed, the
    recordings catalog, the 1C plugin's queues) open for its whole run, and
    SQLite holds a lock on each and on its ``-shm`` meanwhile: those locks
    are the running router's own mark on the folder, read here with
    ``F_GETLK``, which names the process holding them."""
    for name in _names(state_dir, sfd):
        holder = _holder(sfd, name)
        if holder is not None:
            raise StateRestoreError(
                f"{state_dir / name}: held open and locked by {holder.describe()}: a callrouter "
                "(or an sqlite3 shell) runs on this state folder; stop it first (systemctl stop "
                "callrouter), then restore"
            )


def _holder(sfd: int, name: str) -> Holder | None:
    try:
        if not stat.S_ISREG(os.lstat(name, dir_fd=sfd).st_mode):
            return None
        fd = os.open(name, READ_FLAGS, dir_fd=sfd)
    except OSError:
        return None  # gone meanwhile, or not ours to open: nothing said of it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        pid = lock_holder(fd)
    finally:
        os.close(fd)
    if pid is None:
        return None
    return Holder(name, pid, _command_of(pid))


def _command_of(pid: int) -> str:
    """The command line of ``pid`` (``/proc``), bounded and escaped; empty
    when it cannot be read."""
    if pid <= 0:
        return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            raw = cmdline.read(512)
    except OSError:
        return ""
    words = raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")
    return escape_controls(" ".join(words))[:200]


# -- the copies -------------------------------------------------------------------


def _copy_in(
    backup: Path,
    bfd: int,
    item: _Listed,
    state_dir: Path,
    sfd: int,
    temp: str,
    owner: tuple[int, int],
) -> Restored:
    """``item`` copied into the state folder as ``temp`` (0600, the folder's
    owner's), checked against the manifest, and SQLite's quick_check."""
    source = backup / item.name
    digest = hashlib.sha256()
    size = 0
    try:
        fd_in = os.open(item.name, READ_FLAGS, dir_fd=bfd)
    except OSError as exc:
        raise StateRestoreError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd_out = os.open(temp, flags, 0o600, dir_fd=sfd)
        try:
            if not stat.S_ISREG(os.fstat(fd_in).st_mode):
                raise StateRestoreError(f"{source}: not a regular file")
            limit = item.size if item.sha256 is not None else None
            length = os.fstat(fd_in).st_size
            head = b""
            while chunk := os.read(fd_in, READ_CHUNK):
                if size == 0 and not chunk.startswith(SQLITE_MAGIC) and length > MAX_PLAIN_BYTES:
                    raise StateRestoreError(
                        f"{source}: {length} bytes and not SQLite: `callrouter state backup` "
                        f"leaves out such a file (over {MAX_PLAIN_BYTES} bytes)"
                    )
                if limit is not None and size + len(chunk) > limit:
                    raise StateRestoreError(
                        f"{source}: larger than the manifest's {limit} bytes: changed since"
                    )
                if size < _HEADER:
                    head += chunk[: _HEADER - size]
                digest.update(chunk)
                _write_all(fd_out, chunk)
                size += len(chunk)
            if os.geteuid() == 0:
                os.fchown(fd_out, *owner)
            os.fchmod(fd_out, 0o600)
            os.fsync(fd_out)
            written = os.fstat(fd_out)
        finally:
            os.close(fd_out)
    except StateRestoreError:
        raise  # an OSError too, said already: not the write's failure
    except OSError as exc:
        raise StateRestoreError(
            f"{state_dir / temp}: cannot write the copy of {source}: {exc.strerror or exc}; "
            "nothing in the state folder was changed"
        ) from None
    finally:
        os.close(fd_in)
    if item.sha256 is not None and (size != item.size or digest.hexdigest() != item.sha256):
        raise StateRestoreError(
            f"{source}: its SHA-256 is not the one in the backup's manifest ({MANIFEST}): "
            "changed or damaged since the backup; restore another backup"
        )
    sqlite = head.startswith(SQLITE_MAGIC)
    if item.kind == "sqlite" and not sqlite:
        raise StateRestoreError(f"{source}: the manifest says SQLite, the file is not one")
    if sqlite and head[18:20] == b"\x02\x02":
        # Said from the header, before SQLite opens the copy: opened, a WAL
        # database gets a -wal and -shm beside it, root's when root restores.
        raise StateRestoreError(f"{source}: {_WAL_MODE}")
    if sqlite:
        _quick_check(source, state_dir / temp, sfd, temp, written)
    return Restored(item.name, size, "sqlite" if sqlite else "file")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _quick_check(source: Path, copy: Path, sfd: int, temp: str, written: os.stat_result) -> None:
    """SQLite's ``quick_check`` of the copy, read-only (nothing made beside it).

    SQLite opens a file by its name, never a descriptor, and follows a link
    at it: the copy's name (in the state folder, which its owner may change
    when root restores) is held to the file written, ``written``, before
    SQLite opens it and after, and the file SQLite holds open meanwhile must
    be that one too (:func:`router.aside.sqlite_holds`). A link or another file put at
    the name was checked in its place and then renamed into the state
    folder, or put back once SQLite had opened the other (issue 16)."""
    _same_copy(source, sfd, temp, written)
    try:
        db = sqlite3.connect(f"file:{quote(str(copy))}?mode=ro", uri=True)
        try:
            (verdict,) = db.execute("PRAGMA quick_check").fetchone()
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            held = sqlite_holds(written)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateRestoreError(f"{source}: SQLite cannot read it: {exc}") from None
    if held is False:
        raise StateRestoreError(
            f"{source}: its copy {copy} was replaced while SQLite opened it: the file "
            "written is not the file SQLite checked; another process changes the state "
            "folder (its owner's?): nothing in it was changed"
        )
    _same_copy(source, sfd, temp, written)
    if verdict != "ok":
        raise StateRestoreError(f"{source}: fails SQLite's quick_check: {verdict}")
    if str(mode).lower() == "wal":
        # A database in WAL mode copied without its -wal (not a state backup's
        # copy, which is one file): the commits in its -wal are not in it.
        raise StateRestoreError(f"{source}: {_WAL_MODE}")


def _same_copy(source: Path, sfd: int, temp: str, written: os.stat_result) -> None:
    """Refuse unless ``temp`` in the state folder is still the file written."""
    try:
        now: os.stat_result | None = os.lstat(temp, dir_fd=sfd)
    except OSError:
        now = None
    if now is None or not stat.S_ISREG(now.st_mode) or not os.path.samestat(now, written):
        raise StateRestoreError(
            f"{source}: its copy {temp} in the state folder was replaced while being "
            "checked: the file written is not the file SQLite checked; another process "
            "changes the state folder (its owner's?): nothing in it was changed"
        )


# -- the switch -------------------------------------------------------------------


def _switch(
    state_dir: Path,
    sfd: int,
    temps: dict[str, str],
    owner: tuple[int, int],
    clock: Callable[[], float],
    report: RestoreReport,
) -> None:
    """Move what the state folder holds aside, then the copies to their names."""
    ours = set(temps.values())
    present = [n for n in _names(state_dir, sfd) if n not in ours]
    moving: list[str] = []
    for name in present:
        try:
            info = os.lstat(name, dir_fd=sfd)
        except FileNotFoundError:
            continue  # gone since the listing (an sqlite3 shell's -wal at its close)
        if stat.S_ISDIR(info.st_mode) and name not in temps:
            report.folders_kept.append(name)
        else:
            moving.append(name)
    moved: list[str] = []
    put: list[str] = []
    aside_fd: int | None = None
    # The renames (and their undoing) run with the signals that end a command
    # held back: a Ctrl-C, or the SIGHUP of an SSH session that dropped, ended
    # the restore between two renames, the state folder neither what it was
    # nor the backup, and the copies not yet renamed were deleted (issue 16).
    with _signals_held():
        try:
            if moving:
                aside = _make_aside(state_dir, sfd, owner, clock, set(temps))
                report.aside = state_dir / aside
                aside_fd = os.open(aside, _DIR_FLAGS, dir_fd=sfd)
                for name in moving:
                    os.rename(name, name, src_dir_fd=sfd, dst_dir_fd=aside_fd)
                    moved.append(name)
                    (report.replaced if name in temps else report.moved_aside).append(name)
            for name, temp in temps.items():
                os.rename(temp, name, src_dir_fd=sfd, dst_dir_fd=sfd)
                put.append(name)
            with contextlib.suppress(OSError):  # not every file system syncs a folder
                os.fsync(sfd)
                if aside_fd is not None:
                    os.fsync(aside_fd)
        except BaseException as exc:
            # Not only an OSError: whatever ends the switch half way (a signal
            # handler's exception, a KeyboardInterrupt where signals cannot be
            # held) undoes it, or says what is where.
            undone = _undo(sfd, aside_fd, moved, put, temps)
            if undone and report.aside is not None:
                with contextlib.suppress(OSError):  # empty again: not left behind
                    os.rmdir(report.aside.name, dir_fd=sfd)
            if undone and not isinstance(exc, OSError):
                raise
            raise StateRestoreError(
                f"{state_dir}: the files could not be put in place: {exc or type(exc).__name__}; "
                + (
                    "the state folder is as it was"
                    if undone
                    else "the state folder is part restored: "
                    + (
                        f"what was there is in {report.aside}"
                        if report.aside is not None
                        else "it held no file before"
                    )
                )
            ) from None
        finally:
            if aside_fd is not None:
                os.close(aside_fd)


#: The signals that end a command in a terminal or an SSH session (their
#: default action, or Python's KeyboardInterrupt).
_ENDING_SIGNALS: Final = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block :data:`_ENDING_SIGNALS` in this thread while the body runs: one
    sent meanwhile is delivered once it has ended (``callrouter state
    restore`` runs in its main thread, which Python's handlers run in)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _ENDING_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _make_aside(
    state_dir: Path, sfd: int, owner: tuple[int, int], clock: Callable[[], float], taken: set[str]
) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    number = 1
    while True:
        name = f"{ASIDE_PREFIX}{stamp}" + ("" if number == 1 else f"-{number}")
        number += 1
        if name in taken:
            continue
        try:
            os.mkdir(name, 0o700, dir_fd=sfd)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StateRestoreError(
                f"{state_dir / name}: cannot make the folder for what the state folder "
                f"holds now: {exc.strerror or exc}; nothing was changed"
            ) from None
        if os.geteuid() == 0:
            os.chown(name, *owner, dir_fd=sfd, follow_symlinks=False)
        return name


def _undo(
    sfd: int, aside_fd: int | None, moved: list[str], put: list[str], temps: dict[str, str]
) -> bool:
    """Put the state folder back as it was after a failed switch; whether it is."""
    try:
        for name in reversed(put):
            os.rename(name, temps[name], src_dir_fd=sfd, dst_dir_fd=sfd)
        if aside_fd is not None:
            for name in reversed(moved):
                os.rename(name, name, src_dir_fd=aside_fd, dst_dir_fd=sfd)
    except OSError:
        return False
    return True
