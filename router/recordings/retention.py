"""Retention: what happens to a recording's file once 1C has it, and the disk bound.

Run by the recorder every minute (and by hand through
:func:`apply_retention`). In order:

1. a delivered file is deleted or moved when ``after_delivery`` says so;
2. a delivered file older than ``max_age_days`` is deleted, and so is what a
   failed recording left (an incomplete file: Asterisk crashed or never
   finished it), counted from when it failed; never before;
3. while the files on disk (failed ones' included) exceed ``max_bytes``,
   delivered files go, oldest first;
4. while they exceed ``hard_cap_bytes``, failed recordings' files go, then
   undelivered ones, oldest first, each logged as an error: the disk filling
   up would stop every recording, which is worse than losing the oldest
   undelivered one;
5. catalog rows ``removed`` (or ``missing``, or ``empty`` ones whose file went)
   more than :data:`KEEP_REMOVED_DAYS` days ago are
   forgotten, at most :data:`PRUNE_BATCH` a pass (a backlog goes over a few
   passes and never holds one up): until then the API's list of a call's
   recordings says what became of each file.

An ``empty`` file (no sound: nobody answered) goes as a delivered one does
in 1-3 (deleted, also under ``after_delivery = "move"``: no archive wants a
header), its row staying ``empty``. Before all that, a closed, delivered or
empty file no longer in its folder (deleted by hand) is marked ``missing``,
with one WARNING naming it: it no longer counts on disk, and nothing serves
or sends it.

A file still being written is never touched, and nothing outside the
catalog is: retention deletes only paths callrouter itself named. That holds
for a failed recording's file too: one that grew since the last pass, or
that Asterisk wrote to in the last :data:`STILL_WRITTEN` seconds, is counted
but not deleted (a call the tracker
dropped after 4 hours, a sweep before the reconcile at a start: its
MixMonitor writes on until the channel ends, and deleting the name would
free nothing while losing the call).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from router.recordings.files import NotARegularFile, move_into
from router.recordings.settings import RecordingSettings
from router.recordings.store import KEPT_STATES, Recording, RecordingStore

__all__ = [
    "KEEP_REMOVED_DAYS",
    "PRUNE_BATCH",
    "STILL_WRITTEN",
    "RetentionReport",
    "apply_retention",
    "folder_holds_files",
    "note_missing",
]

log = logging.getLogger("router.recordings")

_DAY = 86400.0
#: Days a ``removed`` row stays in the catalog (docs/recordings.md): longer than any
#: signed link lives (``url_ttl``, at most 7 days), for the API's list of a call.
KEEP_REMOVED_DAYS: Final = 30
#: Rows forgotten at most per pass.
PRUNE_BATCH: Final = 1000
#: Seconds since its last write within which a failed recording's file is taken
#: as still being written (MixMonitor writes it many times a second).
STILL_WRITTEN: Final = 60.0


@dataclass(slots=True)
class RetentionReport:
    deleted: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    #: Undelivered files deleted over the hard cap.
    lost: list[str] = field(default_factory=list)
    #: Catalog rows of removed files forgotten.
    pruned: int = 0
    #: Files it could not delete or move, each once, and the first reason (one
    #: WARNING a pass says so: a folder callrouter may not write to would otherwise
    #: log one line per file every minute).
    stuck: list[str] = field(default_factory=list)
    reason: str = ""
    #: What to do about the first reason.
    hint: str = "callrouter needs write access to the recordings folder"

    def could_not(self, what: str, path: Path, exc: OSError) -> None:
        if path.name not in self.stuck:
            self.stuck.append(path.name)
        if not self.reason:
            self.reason = f"cannot {what} {path}: {exc}"
            if isinstance(exc, FileExistsError):
                self.hint = "move or delete what holds that name in move_to"


def _failed_size(store: RecordingStore, rec: Recording, now: float) -> tuple[int, bool] | None:
    """What a failed recording's file holds now, and whether it is still being
    written (not to be deleted); None when it is gone (the row is marked removed)
    or is not a regular file (not counted, never touched)."""
    assert rec.file is not None
    try:
        info = os.lstat(rec.file)
    except FileNotFoundError:
        store.mark_removed(rec.id, f"failed ({rec.note[:200]}); the file is gone", now)
        return None
    except OSError as exc:
        log.warning("retention: cannot look at %s: %s", rec.file, exc)
        return rec.size or 0, True
    if not stat.S_ISREG(info.st_mode):
        return None
    grew = info.st_size != rec.size
    if grew:
        store.set_size(rec.id, info.st_size)
    return info.st_size, grew or 0 <= now - info.st_mtime < STILL_WRITTEN


def _delete(
    store: RecordingStore, rec: Recording, note: str, now: float, report: RetentionReport
) -> bool:
    if rec.file is not None:
        try:
            rec.file.unlink(missing_ok=True)
        except OSError as exc:
            report.could_not("delete", rec.file, exc)
            return False
    if rec.state == "empty":  # still listed as what it was: a call with no sound
        store.empty_file_removed(rec.id, f"no sound (0 s): not sent; its file: {note}", now)
    else:
        store.mark_removed(rec.id, note, now)
    return True


def _names_in(folders: set[Path]) -> dict[Path, set[str] | None]:
    """The names in each of ``folders`` (one listing each: a ``stat`` per file would
    cost a round trip each on an NFS mount); None for a folder that cannot be listed
    (then none of its files is taken for gone)."""
    found: dict[Path, set[str] | None] = {}
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                found[folder] = {entry.name for entry in entries}
        except OSError as exc:  # a folder gone altogether: a mount gone, not files
            log.debug("retention: cannot list %s: %s", folder, exc)
            found[folder] = None
    return found


def folder_holds_files(folder: Path) -> bool:
    """Whether ``folder`` is there and holds anything (blocking): a file found gone
    from it by a download or an upload is then taken for deleted (``missing``).
    Not from a folder gone or empty: an NFS share not mounted leaves its empty mount
    point, the very folder the recordings sit in, and its files come back once it
    is mounted; retention, which sees the whole folder, decides about those."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def note_missing(store: RecordingStore, rec: Recording, how: str, now: float) -> bool:
    """``rec``'s file is gone from disk (deleted by hand): the row is ``missing``, and
    one WARNING names the file (only the call that changed the row logs it). True
    when it did."""
    assert rec.file is not None
    note = f"the file {rec.file} is gone ({how}); it was {rec.state}"
    if not store.mark_missing(rec.id, note, now):
        return False
    log.warning(
        "recording %s of call %s: %s is gone (deleted outside callrouter, %s); it was %s, "
        "now missing",
        rec.part,
        rec.call_id,
        rec.file,
        how,
        rec.state,
    )
    return True


#: Folders none of whose several catalogued files was there at the last pass (said once).
_VANISHED: set[Path] = set()


def _missing(store: RecordingStore, files: list[Recording], now: float) -> list[Recording]:
    """``files`` but those whose complete file is no longer in its folder, which are
    marked ``missing`` (:func:`note_missing`).

    A folder where none of two or more catalogued files is left is more likely a
    mount gone (an NFS share not mounted leaves its empty mount point) than files
    deleted one by one: nothing there is marked, and one WARNING says so until
    one of them is seen again."""
    kept_rows = [r for r in files if r.state in KEPT_STATES and r.file is not None]
    listed = _names_in({r.file.parent for r in kept_rows if r.file is not None})
    expected: dict[Path, int] = {}
    present: dict[Path, int] = {}
    for rec in kept_rows:
        assert rec.file is not None
        folder = rec.file.parent
        expected[folder] = expected.get(folder, 0) + 1
        names = listed.get(folder)
        if names is not None and rec.file.name in names:
            present[folder] = present.get(folder, 0) + 1
    for folder, count in expected.items():
        if listed.get(folder) is None or count < 2 or present.get(folder):
            _VANISHED.discard(folder)
            continue
        if folder not in _VANISHED:
            _VANISHED.add(folder)
            log.warning(
                "retention: none of the %d recordings catalogued in %s is there: is it "
                "mounted? Not marked missing (each is when a download or an upload finds "
                "it gone)",
                count,
                folder,
            )
        listed[folder] = None
    gone: set[int] = set()
    for rec in kept_rows:
        assert rec.file is not None
        names = listed.get(rec.file.parent)
        if names is None or rec.file.name in names:
            continue
        if os.path.lexists(rec.file):  # written since the listing (a race): not gone
            continue
        note_missing(store, rec, "found by retention", now)
        gone.add(rec.id)
    return [r for r in files if r.id not in gone]


def apply_retention(
    store: RecordingStore, settings: RecordingSettings, now: float | None = None
) -> RetentionReport:
    """One pass of the rules above; what it did."""
    now = time.time() if now is None else now
    report = RetentionReport()
    files = _missing(store, store.on_disk(), now)
    kept: list[Recording] = []
    sizes: dict[int, int] = {}
    #: Failed recordings' files still being written: counted, never deleted.
    written: set[int] = set()
    for rec in files:
        name = rec.file.name if rec.file is not None else rec.event_id
        if rec.state == "failed":
            seen = _failed_size(store, rec, now)
            if seen is None:
                continue
            sizes[rec.id], writing = seen
            if writing:
                written.add(rec.id)
            elif (
                settings.max_age_days
                and rec.closed_at is not None
                and now - rec.closed_at > settings.max_age_days * _DAY
            ) and _delete(
                store,
                rec,
                f"failed ({rec.note[:200]}); older than {settings.max_age_days:g} days",
                now,
                report,
            ):
                report.deleted.append(name)
                continue
            kept.append(rec)
            continue
        if rec.state == "empty" and settings.after_delivery != "keep":
            if _delete(store, rec, "deleted (after_delivery)", now, report):
                report.deleted.append(name)
                continue
        elif rec.state == "delivered" and settings.after_delivery == "delete":
            if _delete(store, rec, "deleted after delivery", now, report):
                report.deleted.append(name)
                continue
        elif rec.state == "delivered" and settings.after_delivery == "move":
            assert settings.move_to is not None
            note = f"moved to {settings.move_to}"
            if rec.file is not None and os.path.lexists(rec.file):
                try:
                    settings.move_to.mkdir(parents=True, exist_ok=True)
                    move_into(rec.file, settings.move_to)
                except NotARegularFile as exc:
                    # Someone put a link (or a FIFO, a folder) at the delivered file's
                    # name: not the recording, so neither moved nor touched; the row
                    # says so and is done with.
                    log.warning("retention: %s; left alone", exc.strerror)
                    store.mark_removed(rec.id, f"not moved: {exc.strerror}"[:300], now)
                    continue
                except OSError as exc:
                    report.could_not("move", rec.file, exc)
                    kept.append(rec)
                    continue
            store.mark_removed(rec.id, note, now)
            report.moved.append(name)
            continue
        if (
            rec.state in ("delivered", "empty")
            and settings.max_age_days
            and rec.closed_at is not None
            and now - rec.closed_at > settings.max_age_days * _DAY
        ) and _delete(store, rec, f"older than {settings.max_age_days:g} days", now, report):
            report.deleted.append(name)
            continue
        kept.append(rec)
    total = sum(sizes.get(r.id, r.size or 0) for r in kept)
    if settings.max_bytes and total > settings.max_bytes:
        for rec in [r for r in kept if r.state in ("delivered", "empty")]:
            if total <= settings.max_bytes:
                break
            if _delete(store, rec, f"over max_bytes {settings.max_bytes}", now, report):
                total -= rec.size or 0
                kept.remove(rec)
                report.deleted.append(rec.file.name if rec.file else rec.event_id)
    if settings.hard_cap_bytes and total > settings.hard_cap_bytes:
        # An incomplete file first: a complete one is worth more to whoever needs the call.
        over = [r for r in kept if r.state == "failed" and r.id not in written]
        over += [r for r in kept if r.state == "closed"]
        for rec in over:
            if total <= settings.hard_cap_bytes:
                break
            if _delete(
                store, rec, f"{_undelivered(rec)}, deleted over hard_cap_bytes", now, report
            ):
                total -= sizes.get(rec.id, rec.size or 0)
                name = rec.file.name if rec.file else rec.event_id
                report.lost.append(name)
                log.error(
                    "retention: deleted %s of call %s before delivery: the recordings exceed "
                    "hard_cap_bytes (%d)",
                    name,
                    rec.call_id,
                    settings.hard_cap_bytes,
                )
    report.pruned = store.prune(now - KEEP_REMOVED_DAYS * _DAY, PRUNE_BATCH)
    if report.stuck:
        log.warning(
            "retention: %d file(s) could not be deleted or moved, tried again next pass (%s); %s",
            len(report.stuck),
            report.reason,
            report.hint,
        )
    return report


def _undelivered(rec: Recording) -> str:
    return f"failed ({rec.note[:200]})" if rec.state == "failed" else "undelivered"
