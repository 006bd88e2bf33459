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
a FIFO or a folder.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
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
    wal = False
    for suffix in ("-wal", "-shm", "-journal"):
        side = _regular(name + suffix)
        if side is False:
            raise OSError(
                f"{path}{suffix} is not a regular file (a symbolic link, FIFO, folder or device)"
            )
        wal = wal or (suffix == "-wal" and side is True)
    # immutable=1 reads the file alone: right only when no -wal holds commits.
    flags = "mode=ro" if wal else "mode=ro&immutable=1"
    db = sqlite3.connect(f"file:{quote(name)}?{flags}", uri=True, timeout=BUSY_TIMEOUT)
    try:
        yield db
    finally:
        db.close()


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The columns of ``table`` (empty: no such table)."""
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}
