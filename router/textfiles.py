"""Reading the files an administrator names: whole, bounded, never blocking.

Rule files, ``router.toml`` and the directory are read whole into memory, at
start and at every reload. A path that names a FIFO (``--rules /dev/stdin``
under a service manager, a pipe someone made where a file was) made the read
block for ever, in the engine's reload too; a device such as ``/dev/zero``
never ends; and a file that grew after its size was looked at was read whole.
So the file is opened without blocking, must be a regular file once open (no
window between a check and the open), and at most ``limit`` bytes are read.
Symbolic links are followed: an administrator's ``/etc`` may well hold them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["FileTooBig", "read_bounded"]


class FileTooBig(OSError):
    """The file holds more than the reader's bound: ``size`` is what it held
    when opened (or what was read, if it grew since), ``limit`` the bound."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"bigger than {limit} bytes ({size} bytes)")
        self.size = size
        self.limit = limit


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    An ``OSError`` whose ``strerror`` says what is wrong (for a message that
    names the file): ``IsADirectoryError`` for a folder, ``EINVAL`` for a FIFO,
    socket or device, :class:`FileTooBig` for a file over ``limit`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)")
        if info.st_size > limit:
            raise FileTooBig(info.st_size, limit)
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:  # it grew after it was opened
        raise FileTooBig(size, limit)
    return b"".join(chunks)
