"""A small state file only callrouter's user may read or write (issue 16).

The live page's session key (``ui-sessions.json``) and the schedule rules'
last runs (``schedule-runs.json``) are such files: another user who could
write one could sign pages in or make a rule run at the next start. Both are
written whole under a temporary name and renamed, and read through one
descriptor that follows no link and is checked before a byte is read. The
two stores had each their own copy of these steps; one here keeps them alike.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["read_private", "user_name", "write_private"]

_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def user_name() -> str:
    """The name of the user callrouter runs as (its uid when it has none), for
    a refusal's ``chown``."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def write_private(path: Path, body: bytes) -> None:
    """Write ``body`` as ``path`` whole, mode 0600 whatever the umask: a
    temporary file beside it (created new, no link followed), synced, renamed
    over the last one. A failure (a full disk) leaves the last one as it was
    and no temporary file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, _WRITE_FLAGS, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_private(
    path: Path, limit: int, refused: Callable[[str], Exception], exposed: str
) -> bytes:
    """At most ``limit + 1`` bytes of ``path`` (one past the bound: the caller
    says it is too large), read only when it is a regular file of callrouter's
    user that no one else may read or write. Otherwise raises what ``refused``
    makes of the reason; ``exposed`` says what others could do with it (the
    mode's refusal). ``FileNotFoundError`` passes through."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refused("is a symbolic link: callrouter never makes one there") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise refused(f"cannot be read ({exc.strerror})") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refused("is not a regular file")
        if info.st_uid != os.geteuid():
            raise refused(
                f"belongs to uid {info.st_uid}, not to callrouter's user (uid {os.geteuid()})"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise refused(f"has mode {mode:04o}: {exposed}")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)
