"""State files deleted or replaced while ``callrouter run`` runs: written back, or said once.

SQLite goes on with the file it has open when it is deleted (``rm``) or
replaced (a backup copied over it, ``mv``): every write then goes to a file
nobody will open again, and the next start opens an empty one or the copy,
losing what the table of docs/operations.md (State and backups) says. The 1C
plugin writes its history file back (callrouter_onec/history.py); the API's
event feed (``api-events.sqlite3``) and the recordings catalog
(``recordings.sqlite``) are written back the same way from the file open
(:class:`WatchedFile` ``put_back``), a WARNING saying so once, from a timed look
at each and one at the stop. A file with no way back is said once, a WARNING
naming it and what is lost. A file ``stat`` cannot look at (EACCES after a
``chmod`` of the state folder) is no deleted one: said once as such, with the
errno's text, and nothing is written over it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from router.recordings.store import FileOutOfSight

__all__ = ["StateFileWatch", "WatchedFile"]

log = logging.getLogger("router.engine")

#: Seconds between two looks at the files (the engine's timed job).
CHECK_EVERY = 5.0


def _identity(path: Path) -> tuple[int, int] | str | None:
    """The file's (device, inode), None when there is none, or why ``stat``
    cannot tell (the errno's text: ``Permission denied`` after a ``chmod`` of
    the state folder), which is no sign the file went."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return found.st_dev, found.st_ino


@dataclass
class WatchedFile:
    """One state file, and what is lost with the file in use."""

    path: Path
    #: Said after "... : " in the WARNING: what the next start loses.
    lost: str
    #: Whether callrouter has the file open (until it does, nothing is watched:
    #: a file left by an earlier run and unused now may go).
    opened: Callable[[], bool] = lambda: True
    #: Writes the file back from the open one when it was deleted or replaced:
    #: ``"deleted"``, ``"replaced"`` or None (where it was); None: no way back.
    put_back: Callable[[], Awaitable[str | None]] | None = None
    #: The file first seen there (the one opened); None until it is.
    seen: tuple[int, int] | None = field(default=None, init=False)
    #: Said already for the file now there (None: nothing said; a text: why
    #: it could not be looked at).
    said: tuple[int, int] | str | None = field(default=None, init=False)
    warned: bool = field(default=False, init=False)
    #: Why the last write back failed (said once per reason).
    failing: str | None = field(default=None, init=False)


class StateFileWatch:
    """Looks at each state file now and then (:meth:`check`)."""

    def __init__(self, files: list[WatchedFile]) -> None:
        self.files = files
        self.check()  # the files open now are the ones to keep

    async def look(self) -> None:
        """The engine's timed job (a few ``stat`` calls): files with a way back
        written back (:meth:`put_back`), the others looked at (:meth:`check`)."""
        for watched in self.files:
            if watched.put_back is not None and watched.opened():
                await self.put_back(watched)
        self.check()

    async def put_back(self, watched: WatchedFile) -> str | None:
        """Write ``watched`` back if it was deleted or replaced; said once."""
        assert watched.put_back is not None
        path = watched.path
        try:
            what = await watched.put_back()
        except FileOutOfSight as exc:
            # Not gone, maybe: nothing is written over a file that may be there.
            reason = exc.strerror or str(exc)
            if reason != watched.failing:
                log.warning(
                    "%s cannot be looked at: %s; it is not written back while so: callrouter "
                    "goes on with the file it has open; give the service's user its state "
                    "folder back (docs/operations.md, Troubleshooting)",
                    path,
                    reason,
                )
            watched.failing = reason
            return None
        except (OSError, sqlite3.Error) as exc:
            reason = str(exc) or type(exc).__name__
            if reason != watched.failing:
                log.error(
                    "%s is no longer the file in use (deleted or replaced while callrouter "
                    "ran) and cannot be written again: %s; the next start loses %s unless it can",
                    path,
                    reason,
                    watched.lost,
                )
            watched.failing = reason
            return None
        watched.failing = None
        if what == "deleted":
            log.warning(
                "%s was deleted while callrouter ran: written again from the open file; "
                "to empty it, stop the service first (docs/operations.md, Troubleshooting)",
                path,
            )
        elif what == "replaced":
            log.warning(
                "%s was replaced while callrouter ran: the file put there is moved aside as "
                "%s.replaced-TIME and %s written again from the open file; restore state "
                "files with the service stopped (docs/operations.md, Troubleshooting)",
                path,
                path.name,
                path.name,
            )
        return what

    def check(self) -> int:
        """Look at each file with no way back; returns how many were said just
        now (a WARNING each)."""
        said = 0
        for watched in self.files:
            if watched.put_back is not None:
                continue
            found = _identity(watched.path)
            if watched.seen is None:
                if watched.opened() and not isinstance(found, str):
                    watched.seen = found  # the file open (None: created at its first write)
                continue
            if found == watched.seen or (watched.warned and found == watched.said):
                continue
            watched.warned, watched.said = True, found
            said += 1
            if isinstance(found, str):
                log.warning(
                    "%s cannot be looked at: %s; callrouter goes on with the file it has "
                    "open; give the service's user its state folder back "
                    "(docs/operations.md, Troubleshooting)",
                    watched.path,
                    found,
                )
                continue
            what = "deleted" if found is None else "replaced"
            log.warning(
                "%s was %s while callrouter ran: callrouter goes on with the file it "
                "has open, which the next start no longer finds, and so loses %s; "
                "restore state files with the service stopped (docs/operations.md, "
                "Troubleshooting)",
                watched.path,
                what,
                watched.lost,
            )
        return said
