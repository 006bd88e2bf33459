"""Reading a state file as it is, for ``callrouter check``: nothing written.

``callrouter run`` converts a state file an earlier version left (the 1C
plugin's history queue from before event ids, a recordings catalog from
before a column) as it opens it, and says so in its log, once, after the
fact. ``check`` says beforehand what ``run`` would convert, one line per file,
so the administrator upgrading backs the state up first (docs/operations.md,
Upgrading), and must change nothing on the way: SQLite opened even read-only
makes the ``-wal`` and ``-shm`` files of a file in WAL mode and leaves them
behind. :func:`peek_db` opens a file with no ``-wal`` as immutable (nothing
made beside it), one with a ``-wal`` (the service running, or stopped
uncleanly) read-only, since its last commits are there; never through a link,
a FIFO or a folder. One with a ``-wal`` and no ``-shm`` (no connection open
to it: a copy, a restore) is read from a private copy: SQLite would make its
``-shm`` beside it, as the user running ``check`` (root's, 0644: the service,
another user, could then not open the file to write, hrev50b).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import quote

__all__ = ["columns", "peek_db"]

#: Seconds a look waits for a lock the service holds.
BUSY_TIMEOUT: Final = 0.25


def _regular(path: str) -> bool | None:
    """True for a regular file, None for none, False for anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return stat.S_ISREG(mode)


@contextlib.contextmanager
def peek_db(path: Path) -> Iterator[sqlite3.Connection | None]:
    """``path`` opened read-only, writing and making nothing; None when it is
    not there. Raises ``OSError`` for a link, FIFO or folder there or beside it
    (SQLite would follow it or wait on it; ``run`` sets such files aside) and
    ``sqlite3.Error`` for a file SQLite cannot read."""
    name = str(path)
    found = _regular(name)
    if found is None:
        yield None
        return
    if not found:
        raise OSError(f"{path} is not a regular file (a symbolic link, FIFO, folder or device)")
    wal = shm = False
    for suffix in ("-wal", "-shm", "-journal"):
        side = _regular(name + suffix)
        if side is False:
            raise OSError(
                f"{path}{suffix} is not a regular file (a symbolic link, FIFO, folder or device)"
            )
        wal = wal or (suffix == "-wal" and side is True)
        shm = shm or (suffix == "-shm" and side is True)
    if wal and not shm:
        with tempfile.TemporaryDirectory(prefix="callrouter-check-") as folder:
            copy = os.path.join(folder, "peek.sqlite")
            _copy(name, copy)
            _copy(name + "-wal", copy + "-wal")
            db = sqlite3.connect(f"file:{quote(copy)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
            try:
                yield db
            finally:
                db.close()
        return
    # immutable=1 reads the file alone: right only when no -wal holds commits.
    flags = "mode=ro" if wal else "mode=ro&immutable=1"
    db = sqlite3.connect(f"file:{quote(name)}?{flags}", uri=True, timeout=BUSY_TIMEOUT)
    try:
        yield db
    finally:
        db.close()


def _copy(source: str, target: str) -> None:
    """``source``'s bytes into a new ``target``, never through a link or FIFO."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as reading:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{source} is not a regular file")
        with open(target, "xb") as writing:
            shutil.copyfileobj(reading, writing)


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The columns of ``table`` (empty: no such table)."""
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}
