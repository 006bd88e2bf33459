"""Retention: what happens to a recording's file once 1C has it, and the disk bound.

Run by the recorder every minute (and by hand through
:func:`apply_retention`). In order:

1. a delivered file is deleted or moved when ``after_delivery`` says so;
2. a delivered file older than ``max_age_days`` is deleted;
3. while the files on disk exceed ``max_bytes``, delivered files go, oldest first;
4. while they exceed ``hard_cap_bytes``, undelivered ones go too, oldest
   first, each logged as an error: the disk filling up would stop every
   recording, which is worse than losing the oldest undelivered one.

A file still being written is never touched, and nothing outside the
catalog is: retention deletes only paths callrouter itself named.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field

from router.recordings.settings import RecordingSettings
from router.recordings.store import Recording, RecordingStore

__all__ = ["RetentionReport", "apply_retention"]

log = logging.getLogger("router.recordings")

_DAY = 86400.0


@dataclass(slots=True)
class RetentionReport:
    deleted: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    #: Undelivered files deleted over the hard cap.
    lost: list[str] = field(default_factory=list)


def _delete(store: RecordingStore, rec: Recording, note: str) -> bool:
    if rec.file is not None:
        try:
            rec.file.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("retention: cannot delete %s: %s", rec.file, exc)
            return False
    store.mark_removed(rec.id, note)
    return True


def apply_retention(
    store: RecordingStore, settings: RecordingSettings, now: float | None = None
) -> RetentionReport:
    """One pass of the rules above; what it did."""
    now = time.time() if now is None else now
    report = RetentionReport()
    files = store.on_disk()
    kept: list[Recording] = []
    for rec in files:
        name = rec.file.name if rec.file is not None else rec.event_id
        if rec.state == "delivered" and settings.after_delivery == "delete":
            if _delete(store, rec, "deleted after delivery"):
                report.deleted.append(name)
                continue
        elif rec.state == "delivered" and settings.after_delivery == "move":
            assert settings.move_to is not None
            if rec.file is not None and rec.file.exists():
                try:
                    settings.move_to.mkdir(parents=True, exist_ok=True)
                    shutil.move(rec.file, settings.move_to / rec.file.name)
                except OSError as exc:
                    log.warning("retention: cannot move %s: %s", rec.file, exc)
                    kept.append(rec)
                    continue
            store.mark_removed(rec.id, f"moved to {settings.move_to}")
            report.moved.append(name)
            continue
        if (
            rec.state == "delivered"
            and settings.max_age_days
            and rec.closed_at is not None
            and now - rec.closed_at > settings.max_age_days * _DAY
        ) and _delete(store, rec, f"older than {settings.max_age_days:g} days"):
            report.deleted.append(name)
            continue
        kept.append(rec)
    total = sum(r.size or 0 for r in kept)
    if settings.max_bytes and total > settings.max_bytes:
        for rec in [r for r in kept if r.state == "delivered"]:
            if total <= settings.max_bytes:
                break
            if _delete(store, rec, f"over max_bytes {settings.max_bytes}"):
                total -= rec.size or 0
                kept.remove(rec)
                report.deleted.append(rec.file.name if rec.file else rec.event_id)
    if settings.hard_cap_bytes and total > settings.hard_cap_bytes:
        for rec in [r for r in kept if r.state == "closed"]:
            if total <= settings.hard_cap_bytes:
                break
            if _delete(store, rec, "undelivered, deleted over hard_cap_bytes"):
                total -= rec.size or 0
                name = rec.file.name if rec.file else rec.event_id
                report.lost.append(name)
                log.error(
                    "retention: deleted %s of call %s before delivery: the recordings exceed "
                    "hard_cap_bytes (%d)",
                    name,
                    rec.call_id,
                    settings.hard_cap_bytes,
                )
    return report
