"""Reading the files an administrator names: whole, bounded, never blocking.

Rule files, ``router.toml`` and the directory are read whole into memory, at
start and at every reload. A path that names a FIFO (``--rules /dev/stdin``
under a service manager, a pipe someone made where a file was) made the read
block for ever, in the engine's reload too; a device such as ``/dev/zero``
never ends; and a file that grew after its size was looked at was read whole.
So a path that is not a regular file is refused before it is opened (opening
a device may act: ``/dev/watchdog`` arms the watchdog, a serial line raises its
modem lines; opening a FIFO frees a writer waiting for a reader), the file is
opened without blocking and must still be a regular file once open (no window
between a check and the read), it is read without blocking too (``/proc/kmsg``
is a "regular file" whose read waits for the kernel's next message), and at
most ``limit`` bytes are read. Symbolic links are followed: an administrator's
``/etc`` may well hold them.

The files callrouter keeps in its own ``state_dir`` (``forwarding.json``,
``calllife.json``) are read the same way, with ``follow_symlinks=False``
(issue 16): callrouter never writes a link there, so a link at such a name is
someone else's, and is refused, not followed.
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


def read_bounded(path: Path, limit: int, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    An ``OSError`` whose ``strerror`` says what is wrong (for a message that
    names the file): ``IsADirectoryError`` for a folder, ``EINVAL`` for a FIFO,
    socket or device, ``EAGAIN`` for a file whose read would wait (``/proc/kmsg``),
    :class:`FileTooBig` for a file over ``limit`` bytes; ``ELOOP`` for a
    symbolic link at ``path`` itself when not ``follow_symlinks`` (the folders
    above it may be links).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if follow_symlinks:
        mode = os.stat(path).st_mode
    else:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise _symlink()
        flags |= os.O_NOFOLLOW
    _check_regular(mode)  # before the open: opening a device may act
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise _symlink() from None  # made a link since the look above
        raise
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode)  # replaced since the look above
        if info.st_size > limit:
            raise FileTooBig(info.st_size, limit)
        # Still without blocking: a file on disk reads as ever, and a kernel
        # file whose read waits for something to happen says so instead.
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            try:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            except BlockingIOError:
                raise OSError(
                    errno.EAGAIN, "its read would wait for more to come (not a file on disk)"
                ) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:  # it grew after it was opened
        raise FileTooBig(size, limit)
    return b"".join(chunks)


def _symlink() -> OSError:
    return OSError(errno.ELOOP, "is a symbolic link: not followed")


def _check_regular(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)")
