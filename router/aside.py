"""Moving a file aside under a name no other file holds (issue 16).

callrouter sets a file aside rather than delete it: a state file put where an
open one belongs (``NAME.replaced-TIME``), one it cannot read
(``NAME.unreadable-TIME``, ``forwarding.json.bad``). Those names were made of
the second, or of nothing, and moved with ``os.replace``: a second file set
aside under the same name (two replacements within one second, a second
damaged file) overwrote the first, which was someone's file, lost.

:func:`move_aside` never writes over a file: the name asked for when it is
free, else the first free of ``NAME-2``, ``NAME-3``, ... The file is linked
under the new name (``link`` fails rather than replace a file there), then its
old name removed. Where a hard link is refused (a file of another owner under
``fs.protected_hardlinks``, a file system with no hard links) it is renamed
to a name found free just before: only another process taking that very name
in between could be written over then.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from router.errors import StateFileDenied
from router.private_file import user_name

__all__ = [
    "SQLITE_DENIED",
    "SQLITE_NOT_DENIED",
    "SQLITE_SIDECARS",
    "cantopen_db_error",
    "check_db_writable",
    "db_cantopen",
    "db_denied",
    "db_kept",
    "db_moved",
    "denied_db_file",
    "denied_state_file",
    "kept_db_error",
    "move_aside",
    "moved_db_error",
    "named_db_error",
    "not_a_file",
    "set_aside_odd_db_files",
    "state_db_error",
]

_log = logging.getLogger("callrouter.state")

#: ``link`` errors where ``rename`` may still work: the file's owner or the
#: file system, not the names.
_NO_LINK = frozenset(
    {errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
)


def move_aside(path: Path, aside: Path) -> Path:
    """Move ``path`` to ``aside``, or to ``aside-2``, ``aside-3``, ... when a
    file is there: never over another file. Returns the name it got. Raises
    ``OSError`` as ``os.replace`` would (``path`` is then where it was);
    blocking (file system calls)."""
    number = 1
    while True:
        target = aside if number == 1 else aside.with_name(f"{aside.name}-{number}")
        try:
            os.link(path, target, follow_symlinks=False)
        except FileExistsError:
            number += 1
            continue
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            return _rename_to_free(path, aside, number)
        break
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # gone meanwhile: the name set aside holds it
    except OSError:
        os.unlink(target)  # left where it was, as a refused os.replace leaves it
        raise
    return target


def _rename_to_free(path: Path, aside: Path, number: int) -> Path:
    while True:
        target = aside if number == 1 else aside.with_name(f"{aside.name}-{number}")
        if not os.path.lexists(target):
            os.replace(path, target)
            return target
        number += 1


#: SQLite's side files of a database: opened (and written) by SQLite beside it.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def set_aside_odd_db_files(path: Path, *, clock: Callable[[], float] = time.time) -> list[Path]:
    """Before SQLite opens the database ``path`` in ``state_dir``: whatever is
    at its name or at its ``-wal``, ``-shm`` or ``-journal`` and is not a
    regular file is moved aside as ``NAME.unreadable-TIME`` (``-2``, ... when
    taken) and logged; returns the names it got (issue 16).

    SQLite follows a symbolic link at the database's name (the file, its
    ``-wal`` and ``-shm`` made and written where it points; a dangling one
    created there), opens a FIFO or device it finds (a FIFO at ``-journal``
    blocked the start for ever) and says only "disk I/O error" of a folder.
    callrouter never puts a link or anything but a file there, so such a
    thing is someone else's: the link itself is moved, never what it points
    to, and SQLite makes a fresh file. Looked at with ``lstat`` only: opening
    and closing the database file would drop the locks this process's
    connections hold on it. Raises ``OSError`` naming the file and what to do
    when it cannot be moved. Blocking (file system calls).
    """
    moved: list[Path] = []
    for name in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDECARS)):
        try:
            mode = os.lstat(name).st_mode
        except FileNotFoundError:
            continue
        what = not_a_file(mode)
        if what is None:
            continue
        try:
            aside = move_aside(name, name.with_name(f"{name.name}.unreadable-{int(clock())}"))
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"{name} is {what}, not a database file, and cannot be set aside ({exc.strerror});"
                " move it away and start again",
            ) from None
        _log.error("state file %s is %s, not a database file: set aside as %s", name, what, aside)
        moved.append(aside)
    return moved


def not_a_file(mode: int) -> str | None:
    """What a ``stat`` (or ``lstat``) ``st_mode`` says is at a database's name
    when it is not a regular file, for a message (``"a folder"``); None for a
    file. SQLite opens a FIFO or a device it is given (a FIFO blocks the
    opening thread for ever) and says only "disk I/O error" of a folder."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO, socket or device"


def denied_state_file(
    path: Path, exc: PermissionError, *, may_not: str = "read"
) -> StateFileDenied:
    """``exc`` (EACCES, EPERM) raised reading the state file ``path``, as the
    error that refuses the start: it names the file, the user callrouter runs
    as, what it ``may_not`` do with it and how to give the file back to it
    (issue 16).

    A file callrouter may not read is no damaged file: set aside as one, its
    content (every extension's forwarding) vanished from the service until
    someone put it back by hand, though only its owner or mode was wrong."""
    user = user_name()
    return StateFileDenied(
        exc.errno,
        f"{path}: {exc.strerror or exc}: the user callrouter runs as ({user}) may not {may_not} "
        f"this state file, so it is left as it is; give it back to that user "
        f"(chown {user} {path}; chmod 600 {path}; its folder {path.parent} owned by "
        f"{user} too, chmod 700) and start again",
    )


#: What :func:`named_db_error` tells to do with one of callrouter's own state files.
STATE_ADVICE = (
    "stop the service, move it away (a new one is made at start) or put back a backup,"
    " and start again"
)


def named_db_error(
    path: Path, exc: sqlite3.DatabaseError, *, advice: str = STATE_ADVICE
) -> sqlite3.DatabaseError:
    """``exc`` raised opening the database ``path``, as an error that names the
    file and says what to do (``advice``, by default for a state file) when the
    file is no SQLite database (SQLite said only "file is not a database");
    any other error as it was (issue 16)."""
    if getattr(exc, "sqlite_errorname", None) not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return exc
    return sqlite3.DatabaseError(
        f"{path}: {exc} (damaged, or another file put at its name): {advice}"
    )


#: SQLite's errors of a state file callrouter may not open or write: its owner
#: or mode (or its folder's) changed, or it is another user's file SQLite
#: opened read-only (root's, 0644). Not a damaged file: never set aside, the
#: start refused naming it (:func:`denied_db_file`). Each extended code of
#: these counts too, but for :data:`SQLITE_NOT_DENIED`.
SQLITE_DENIED = ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_AUTH")

#: ``SQLITE_READONLY_*`` codes no permission explains (issue 16). SQLite's
#: result codes (https://www.sqlite.org/rescode.html): ``_DBMOVED``, "the
#: database file has been moved since it was opened" (renamed or deleted
#: under the connection: a restore, a person's ``mv``), which opening the
#: file again ends. The others are a permission, of a file beside the
#: database or of its folder, and stay :func:`db_denied`: ``_CANTLOCK`` and
#: ``_CANTINIT`` (its ``-shm`` is read-only), ``_RECOVERY`` (its WAL needs
#: recovering, and only read access is available), ``_ROLLBACK`` (a hot
#: journal to roll back in a read-only file), ``_DIRECTORY`` (no permission
#: to make the journal in its folder): :func:`denied_db_file` names that one.
SQLITE_NOT_DENIED = ("SQLITE_READONLY_DBMOVED",)

#: ``SQLITE_CANTOPEN_*`` codes no permission explains either, each said as what
#: it is (https://www.sqlite.org/rescode.html): they were counted as "denied",
#: and the start advised a chown that changes nothing (issue 16). Neither is
#: the file damaged: it is never set aside (:func:`cantopen_db_error`).
_CANTOPEN_WHAT: Final = {
    "SQLITE_CANTOPEN_ISDIR": (
        "a folder is at the database's name, not a file: move it away, callrouter makes the file"
    ),
    "SQLITE_CANTOPEN_NOTEMPDIR": (
        "SQLite found no folder for its temporary files: set SQLITE_TMPDIR or TMPDIR to "
        "a folder callrouter's user may write in"
    ),
    "SQLITE_CANTOPEN_FULLPATH": (
        "SQLite could not make the file's full path (the working folder was deleted, or "
        "the path is too long): give state_dir as an absolute path to a folder that exists"
    ),
    "SQLITE_CANTOPEN_CONVPATH": (
        "the path could not be converted to the operating system's form (Cygwin): give "
        "state_dir as a path of this system"
    ),
    "SQLITE_CANTOPEN_SYMLINK": (
        "a symbolic link is at the database's name, and SQLite opens none: put the file "
        "itself there"
    ),
}

#: What the permission codes of :data:`SQLITE_DENIED` mean, for the message
#: that refuses the start: which file the user must be given.
_DENIED_WHAT = {
    "SQLITE_READONLY_CANTLOCK": "its shared-memory file {shm} is read-only",
    "SQLITE_READONLY_CANTINIT": "its shared-memory file {shm} is read-only",
    "SQLITE_READONLY_RECOVERY": (
        "its write-ahead log needs recovering and the file or its shared-memory file "
        "{shm} is read-only"
    ),
    "SQLITE_READONLY_ROLLBACK": (
        "a journal left by a crash must be rolled back into the read-only file"
    ),
    "SQLITE_READONLY_DIRECTORY": (
        "its folder {folder} is not writable: SQLite cannot make its journal there"
    ),
}


def db_denied(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's saying the file may not be opened or
    written (:data:`SQLITE_DENIED`), for its owner or mode (or its folder's,
    its ``-shm``'s); not :data:`SQLITE_NOT_DENIED`."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    return (
        name.startswith(SQLITE_DENIED)
        and name not in SQLITE_NOT_DENIED
        and name not in _CANTOPEN_WHAT
    )


def db_cantopen(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the ``SQLITE_CANTOPEN_*`` codes that say why
    the file cannot be opened, no permission among them (a folder or a link
    at its name, a path SQLite cannot make full): :func:`cantopen_db_error`."""
    return getattr(exc, "sqlite_errorname", None) in _CANTOPEN_WHAT


def cantopen_db_error(path: Path, exc: sqlite3.Error) -> sqlite3.OperationalError:
    """``exc`` (:func:`db_cantopen`) raised opening the state file ``path``, as
    an error that says what stands in the way, its code named: the file (if
    any) is left as it is, neither damaged nor another user's."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    return sqlite3.OperationalError(f"{path}: {exc} ({name}: {_CANTOPEN_WHAT[name]})")


def db_moved(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's ``SQLITE_READONLY_DBMOVED``: the database
    was renamed or deleted since the connection opened it, no permission
    problem (:data:`SQLITE_NOT_DENIED`)."""
    return getattr(exc, "sqlite_errorname", None) == "SQLITE_READONLY_DBMOVED"


def moved_db_error(path: Path, exc: sqlite3.Error) -> sqlite3.OperationalError:
    """``exc`` (:func:`db_moved`) raised opening the state file ``path``, as an
    error that says what happened: neither a permission (the advice to chown
    would mislead) nor a damaged file (setting aside whatever is at the name
    now would take a file another process just put there)."""
    return sqlite3.OperationalError(
        f"{path}: {exc} (SQLITE_READONLY_DBMOVED: the file was moved or deleted while "
        "callrouter opened it, by another process: a state restore, a person): "
        "the file now at that name is left as it is; start again"
    )


def denied_db_file(path: Path, exc: sqlite3.Error) -> StateFileDenied:
    """``exc`` (:func:`db_denied`) raised opening or writing the SQLite state
    file ``path``, as the error that refuses the start naming the file
    (:func:`denied_state_file`). Not "may not read": SQLite reads another
    user's 0644 file, opened read-only, and refuses only its writes. An
    extended code naming another file (its ``-shm``, its folder) says which."""
    what = _DENIED_WHAT.get(str(getattr(exc, "sqlite_errorname", "")))
    said = f"SQLite: {exc}"
    if what is not None:
        said += " (" + what.format(shm=f"{path}-shm", folder=path.parent) + ")"
    return denied_state_file(path, PermissionError(errno.EACCES, said), may_not="open or write")


def check_db_writable(db: sqlite3.Connection) -> None:
    """Raise SQLite's own ``SQLITE_READONLY`` when it opened ``db`` read-only.

    SQLite opens a file it may not write (another user's, 0644) read-only and
    says nothing: reads work, and every write fails, for the whole run (the
    queue keeps nothing, the catalog records nothing). The file's own
    ``user_version`` written again in a transaction rolled back tells at once
    and changes nothing (``BEGIN IMMEDIATE`` alone passes on a read-only
    file). A write lock another process holds past the connection's busy
    timeout leaves it untold: the writes wait that lock out as any other.
    Blocking; on a connection with no transaction open.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if db_kept(exc):
            raise
        return  # SQLITE_BUSY: another process is writing it
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        db.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        db.execute("ROLLBACK")


def db_kept(exc: BaseException) -> bool:
    """Whether ``exc``'s code says the SQLite state file is sound and is to be
    kept as it is (:func:`db_denied`, :func:`db_moved`, :func:`db_cantopen`):
    the start is refused with :func:`kept_db_error`."""
    return db_denied(exc) or db_moved(exc) or db_cantopen(exc)


#: What a plain ``SQLITE_CANTOPEN``'s cause (:func:`cantopen_cause`) needs
#: done, by ``errno``: none of them a permission, each was said as one.
_CANTOPEN_ERRNO: Final = {
    errno.ENOENT: "its folder does not exist: make it (callrouter's user its owner, chmod 700)",
    errno.ENOTDIR: "a part of its path is no folder: give a path of folders",
    errno.ENOSPC: "the disk is full: free space on it",
    errno.EDQUOT: "callrouter's user is over its disk quota: free space or raise the quota",
    errno.EMFILE: (
        "callrouter has too many files open: raise its limit (LimitNOFILE= in the "
        "systemd unit, ulimit -n)"
    ),
    errno.ENFILE: "the system has too many files open: raise fs.file-max, or close some",
    errno.EROFS: "its file system is mounted read-only: mount it read-write",
    errno.ELOOP: "a symbolic link is at its name, or too many on its path: put the file there",
    errno.ENAMETOOLONG: "its path is too long: give a shorter state_dir",
}

#: The name :func:`cantopen_cause` makes, and removes, to learn whether
#: SQLite could make a file (its journal, the database) in the folder.
_PROBE = ".{name}.cantopen-probe-{pid}"


def cantopen_cause(path: Path) -> OSError | None:
    """Why SQLite could not open the database ``path``, when it said only
    ``SQLITE_CANTOPEN`` (SQLite keeps the ``errno``, ``sqlite3_system_errno``,
    which Python does not give): the file system asked the same, the file
    opened for reading and writing as SQLite opens it (never blocking, never
    through a link), then a file made and removed in its folder, where SQLite
    makes the database and its journal. The first ``OSError`` met, its
    ``filename`` the file or folder it is about; None when every step
    passes now (the cause, too many files open, has passed)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        os.close(os.open(path, flags))
    except FileNotFoundError:
        pass  # SQLite would make it: the folder says whether it can
    except OSError as exc:
        return OSError(exc.errno, exc.strerror, str(path))
    folder = path.parent
    probe = folder / _PROBE.format(name=path.name, pid=os.getpid())
    try:
        made = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(probe, made, 0o600))
    except OSError as exc:
        return OSError(exc.errno, exc.strerror, str(folder))
    try:
        os.unlink(probe)
    except OSError as exc:
        return OSError(exc.errno, exc.strerror, str(folder))
    return None


def cantopen_errno_error(path: Path, exc: sqlite3.Error) -> Exception:
    """``exc``, a plain ``SQLITE_CANTOPEN`` raised opening or writing the
    state file ``path``, as what the file system says of it
    (:func:`cantopen_cause`): a permission (``EACCES``, ``EPERM``) refuses
    the start as another user's file does (:func:`denied_db_file`); any
    other ``errno`` (a folder missing, a full disk, too many files open) is
    said with its name and what to do. Each was said as "may not open or
    write", with a chown that changed nothing (issue 16). The file is
    neither damaged nor set aside."""
    cause = cantopen_cause(path)
    if cause is not None and cause.errno in (errno.EACCES, errno.EPERM):
        return denied_db_file(path, exc)
    if cause is None:
        return sqlite3.OperationalError(
            f"{path}: {exc} (SQLITE_CANTOPEN; the file and its folder open now: a "
            "passing cause, such as too many files open or a full disk freed since): "
            "the file is left as it is; start again"
        )
    code = errno.errorcode.get(cause.errno or 0, str(cause.errno))
    what = _CANTOPEN_ERRNO.get(cause.errno or 0, "")
    return sqlite3.OperationalError(
        f"{path}: {exc} (SQLITE_CANTOPEN: {cause.filename}: {code} {cause.strerror}"
        + (f": {what}" if what else "")
        + "): the file is left as it is; start again once it is done"
    )


def kept_db_error(path: Path, exc: sqlite3.Error) -> Exception | None:
    """``exc`` raised opening or writing the SQLite state file ``path``, as the
    error that refuses the start when its code says the file is sound and is
    to be kept as it is: not callrouter's to open or write (:func:`db_denied`,
    its owner or mode), moved or deleted while it was opened (:func:`db_moved`:
    what is at the name now is not the file read), a folder or a link at its
    name, a path SQLite cannot make whole (:func:`db_cantopen`). None for any
    other code: the file may be damaged."""
    if getattr(exc, "sqlite_errorname", None) == "SQLITE_CANTOPEN":
        return cantopen_errno_error(path, exc)
    if db_denied(exc):
        return denied_db_file(path, exc)
    if db_moved(exc):
        return moved_db_error(path, exc)
    if db_cantopen(exc):
        return cantopen_db_error(path, exc)
    return None


def state_db_error(path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """``exc`` raised opening callrouter's (or a plugin's) SQLite state file
    ``path``, for the start: :func:`kept_db_error` when its code says the file
    is sound (:class:`router.errors.StateFileDenied` naming the file when
    SQLite may not open or write it), else :func:`named_db_error` (issue 16)."""
    kept = kept_db_error(path, exc)
    return kept if kept is not None else named_db_error(path, exc)


def sqlite_holds(info: os.stat_result, *, besides: int = -1) -> bool | None:
    """Whether a descriptor of this process other than ``besides`` is open on
    the file ``info`` describes, from ``/proc/self/fd``; None when it cannot be
    told (no ``/proc``).

    SQLite opens a database by name only (even ``/proc/self/fd/N``: it reads
    that link, the file's name, and opens the name), so another file put at
    the name in between is the one it reads: a caller that looked at a file
    asks this once SQLite has opened it, to know SQLite holds that very file
    (the history's CEL replay, the state restore's quick_check)."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in fds:
        with contextlib.suppress(OSError, ValueError):
            number = int(name)
            if number != besides and os.path.samestat(os.fstat(number), info):
                return True
    return False
