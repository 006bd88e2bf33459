"""The plugin's own SQLite state files (the 1C history, the recordings upload
queue) written back when deleted or replaced while open.

Both queues keep the same state around :func:`router.write_back`: the copy
that is the file in use but not opened yet (``_unopened``), the copy opened
where it is because it could not take the file's place (``_at``). One
implementation here, so the two cannot drift apart as their two copies of it
did.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from router import seen_identity, write_back

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3


class WrittenBackFile:
    """Mixin of a queue whose SQLite file is written back from the open one.

    The queue sets these in its constructor and opens the file in ``_ready``
    (which opens the file in use when ``_unopened`` is set, or raises
    ``sqlite3.OperationalError`` saying why not); its ``_connect`` records the
    file it opened in ``_file``.
    """

    path: Path
    _db: sqlite3.Connection
    #: The file the connection has open (device, inode).
    _file: tuple[int, int] | None
    #: ``"deleted"`` or ``"replaced"`` while the file written back for that
    #: reason is not open yet; None: it is open.
    _unopened: str | None
    #: The copy opened where it is (its move in place refused); None: on ``path``.
    _at: Path | None

    def _ready(self) -> None:  # pragma: no cover - each queue has its own
        raise NotImplementedError

    def _put_back_open_file(self) -> str | None:
        """Under the queue's lock: the file written again where it belongs
        when it was deleted or replaced while open (:func:`router.write_back`);
        ``"deleted"``, ``"replaced"`` or None (where it was).

        A file written back before but not opened then is opened first, and
        a copy left in use by a refused move is moved in place now, with no
        new copy. The connection is closed before the swap (the last close
        removes ``-wal`` and ``-shm``, which the next would take for its own).
        """
        if self._unopened is not None:
            what = self._unopened
            self._ready()
            if self._at is None:
                return what
        found = seen_identity(self.path)
        if found == self._file:
            return None
        what = "deleted" if found is None else "replaced"

        def close() -> None:
            self._db.close()
            # The copy is the file in use from here on, opened or not: the
            # next look must not take it for one put there.
            self._unopened = what

        def reopen(target: Path) -> None:
            # Moved in place, or (the move refused) the copy, which holds every
            # row: left closed, every use raised ProgrammingError.
            self._at = None if target == self.path else target
            self._ready()  # failing (a full disk), the next use and look try again

        try:
            return write_back(
                self.path, self._file, self._db, close=close, reopen=reopen, copied=self._at
            )
        except OSError:
            if self._unopened is None or self._at is None:
                raise  # the copy opened where it is: the error names it
            # Neither moved in place nor opened: the write back's error said the
            # queue goes on in the copy, which it cannot open. Tried once more,
            # ``_ready`` says which file cannot be opened, and why.
            self._ready()
            raise

    @property
    def kept_at(self) -> Path | None:
        """The copy written from the open file that could not take the file's
        place (kept where it is, holding every row); None: none."""
        return self._at
