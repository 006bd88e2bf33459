"""Opening a recording's file without following what someone else put at its name.

A recording's name is predictable (the Linkedid, ``1733050000.42-mix.wav``) and
its folder is Asterisk's: whoever may write there (the ``asterisk`` account, a
dialplan ``System()``, another client of an NFS export) could put a symbolic
link to callrouter's own secrets (the link key, ``router.toml``) where the next
call's file will be, and callrouter would hash it, upload it to 1C and serve
it; or a FIFO, whose ``open`` blocks the reading thread for ever; or, where a
transcoded file is to be written, a link to a file the encoder would then
overwrite with callrouter's rights. So a recording is only ever read through
:func:`open_regular` (the last name must be the file itself, and a regular one;
the folder may be a link the administrator made) and written through
:func:`create_new` (a name nothing holds, never through a link).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["create_new", "open_regular"]


def open_regular(path: Path) -> BinaryIO:
    """``path`` open for reading when it is a regular file and no symbolic link.

    ``FileNotFoundError`` when nothing is there; another ``OSError`` naming the
    file for a link, a FIFO, a device or a folder (the open never blocks).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path.name} is a symbolic link, not a recording") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def create_new(path: Path) -> int:
    """A descriptor of ``path`` created anew for writing: whatever held the name (an
    old partial file, or a link someone put there) is removed first, and a name
    taken again before the create is an ``OSError`` (``O_EXCL``), never followed."""
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
