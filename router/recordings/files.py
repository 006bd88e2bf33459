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
the folder may be a link the administrator made), or, where the recordings
folder is known, through :func:`open_recording` (every name below that folder opened in
turn, none of them a link, nothing outside it), and written through
:func:`create_new` (a name nothing holds, never through a link).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from router.errors import NotTheRecording

__all__ = [
    "NotARegularFile",
    "NotTheRecording",
    "OutsideFolder",
    "create_new",
    "move_into",
    "open_recording",
    "open_regular",
]


class NotARegularFile(NotTheRecording):
    """What holds a recording's name is a symbolic link, a FIFO, a folder: not the file."""


class OutsideFolder(NotTheRecording):
    """A recording's path leaves the recordings folder: it names a file elsewhere, goes
    up with ``..``, or passes a symbolic link (or a non-folder) on the way down."""


#: ``link()`` errors that say the target folder is on another filesystem or takes no
#: hard links (vfat, some FUSE mounts): the file is then copied.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


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
    return _reader(fd, path.name, OSError)


def _reader(fd: int, name: str | Path, error: type[OSError]) -> BinaryIO:
    """The file open as ``fd`` (opened ``O_NONBLOCK``) to read, blocking again, when
    it is a regular file; else ``fd`` is closed and ``error`` raised naming ``name``."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(errno.EINVAL, f"{name} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _names_below(folder: Path, path: Path) -> tuple[Path, tuple[str, ...]]:
    """The folder as ``path`` spells it and the names from it down to the file;
    :class:`OutsideFolder` when ``path`` is not below ``folder`` (as written, or
    as the folder resolves: a catalog written before ``local_dir`` became a link)."""
    if path.is_absolute():
        for root in (folder, Path(os.path.realpath(folder))):
            try:
                names = path.relative_to(root).parts
            except ValueError:
                continue
            if names and not any(n in ("", ".", "..") for n in names):
                return root, names
    raise OutsideFolder(errno.EXDEV, f"{path} is not in the recordings folder {folder}")


def open_recording(folder: Path, path: Path) -> BinaryIO:
    """``path`` open for reading when it is a regular file below ``folder``, and no
    name on the way down from ``folder`` is a symbolic link.

    ``folder`` itself is opened as it is (the administrator may have made it a
    link); every name below it is then opened from the one above it
    (``openat``): the folders ``O_DIRECTORY | O_NOFOLLOW``, the file
    ``O_NOFOLLOW`` and never blocking, so a folder on the way that someone with
    write access below ``folder`` swapped for a link to ``/etc`` is never
    followed, even after any check of the path. :class:`OutsideFolder` naming
    ``path`` when it is not below ``folder`` or a name on the way is a link or
    not a folder; :class:`NotARegularFile` naming it for a link, a FIFO, a
    device or a folder at the file's own name (both :class:`NotTheRecording`);
    ``FileNotFoundError`` when nothing is there.
    """
    root, names = _names_below(folder, path)
    at = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            try:
                below = os.open(
                    name,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=at,
                )
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise OutsideFolder(
                    exc.errno,
                    f"{path}: {name} on the way is a symbolic link or not a folder: "
                    f"not in the recordings folder {folder}",
                ) from None
            os.close(at)
            at = below
        try:
            fd = os.open(
                names[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=at
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotARegularFile(
                    errno.ELOOP, f"{path} is a symbolic link, not a recording"
                ) from None
            raise
    finally:
        os.close(at)
    return _reader(fd, path, NotARegularFile)


def create_new(path: Path) -> int:
    """A descriptor of ``path`` created anew for writing: whatever held the name (an
    old partial file, or a link someone put there) is removed first, and a name
    taken again before the create is an ``OSError`` (``O_EXCL``), never followed."""
    path.unlink(missing_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)


def _taken(folder: Path, name: str, dir_fd: int) -> OSError:
    """The error for a name already held in the target folder, saying by what."""
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        what = "something"
    else:
        what = (
            "a symbolic link"
            if stat.S_ISLNK(mode)
            else "a folder"
            if stat.S_ISDIR(mode)
            else "a file"
            if stat.S_ISREG(mode)
            else "something that is not a file"
        )
    return FileExistsError(
        errno.EEXIST, f"{folder / name} is already {what}: never overwritten nor followed"
    )


def move_into(source: Path, folder: Path) -> Path:
    """Move the recording ``source`` into ``folder`` under its own name; the new path.

    Nothing is followed or overwritten: ``source`` must be a regular file itself
    (a symbolic link, a FIFO or a folder at its name is an ``OSError`` naming it,
    and stays where it is), and a name already held in ``folder`` (a file, a
    folder, a link to anywhere) is a ``FileExistsError`` saying by what. ``folder``
    itself may be a link (the administrator's, set in router.toml). A
    :class:`NotARegularFile` for ``source`` says it is not the recording. Within one
    filesystem the file gets a second name by ``link()``, which refuses an
    existing one, then loses its first; across filesystems it is copied into a
    file created ``O_EXCL | O_NOFOLLOW``, flushed to disk (``fsync``), and only
    then is ``source`` deleted. A failed copy leaves no partial file behind, and a
    ``source`` that cannot be deleted no second name in ``folder``.
    """
    name = source.name
    info = os.lstat(source)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise NotARegularFile(errno.EINVAL, f"{source} is {kind}, not the recording: not moved")
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.link(source, name, dst_dir_fd=folder_fd, follow_symlinks=False)
        except FileExistsError:
            raise _taken(folder, name, folder_fd) from None
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            _copy(source, folder, name, folder_fd)
        else:
            # The name was swapped for a link between the lstat and the link(): the
            # new name is then that link, which is taken back.
            if not stat.S_ISREG(os.lstat(name, dir_fd=folder_fd).st_mode):
                os.unlink(name, dir_fd=folder_fd)
                raise NotARegularFile(errno.EINVAL, f"{source} is not a regular file: not moved")
        try:
            os.unlink(source)
        except OSError:
            # Not allowed to delete it there (a service without Asterisk's group): the
            # new name is taken back, or the next pass would find it taken, by us.
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder_fd)
            raise
        with contextlib.suppress(OSError):
            os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return folder / name


def _copy(source: Path, folder: Path, name: str, folder_fd: int) -> None:
    """``source`` copied as ``name`` into the folder open as ``folder_fd``, flushed."""
    with open_regular(source) as src:
        info = os.fstat(src.fileno())
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                stat.S_IMODE(info.st_mode),
                dir_fd=folder_fd,
            )
        except FileExistsError:
            raise _taken(folder, name, folder_fd) from None
        try:
            with os.fdopen(fd, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fchmod(fd, stat.S_IMODE(info.st_mode))
                os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
                os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder_fd)
            raise
        finally:
            os.close(fd)
