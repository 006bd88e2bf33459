"""Closing a recording: wait until Asterisk finished the file, transcode, hash, catalog.

MixMonitor writes from its own thread and closes the file some time after
the channel hung up or ``StopMixMonitor``. A file is taken only once it is
complete: a WAV when its header accounts for every byte
(:func:`router.recordings.wav.parse_wav`) and its size held for half a
second, any other format when its size stopped changing for a second. Past
``[recordings] close_timeout`` without a complete file the row is marked
``failed`` with the reason (logged): the call itself is long over, so
nothing waits on this but the catalog. What it left on disk (an incomplete
WAV after an Asterisk crash) stays in the row, so that retention counts it
against ``max_bytes`` and ``hard_cap_bytes`` and deletes it after
``max_age_days``, and ``callrouter recordings status`` shows it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from router.errors import RecordingError
from router.recordings.files import open_regular
from router.recordings.naming import CONTENT_TYPES
from router.recordings.settings import RecordingSettings
from router.recordings.store import Recording, RecordingStore
from router.recordings.transcode import transcode
from router.recordings.wav import HEADER_BYTES, parse_wav

__all__ = [
    "REAL_CLOCK",
    "Clock",
    "close_recording",
    "file_digest",
    "full_disk",
    "wait_complete",
    "written_after",
]

log = logging.getLogger("router.recordings")

#: How often the file is looked at while Asterisk finishes it.
POLL = 0.2
#: A headerless file is complete once its size held this long.
STABLE = 1.0
#: A WAV whose header counts every byte is complete once that also held this long:
#: format_wav rewrites the header as it writes, so one consistent look could fall
#: between two of MixMonitor's last writes.
STABLE_WAV = 0.5
#: Asterisk 22 writes a recording through a buffer of this many bytes (measured on
#: the sandbox: a WAV grows by it every 2 s, a GSM file every 20 s).
WRITE_BUFFER = 32768
#: Bytes a second of each headerless format MixMonitor writes (8 kHz).
_RATES = {"gsm": 1650, "ulaw": 8000}
#: A recordings filesystem with fewer bytes free than this (for Asterisk's user,
#: ``f_bavail``) is taken as full when a file closes or fails: MixMonitor's writes
#: failed (``No space left on device`` in Asterisk's log), and a WAV closed then
#: holds the call only up to that moment, its header still consistent.
FULL_BELOW = 2 * WRITE_BUFFER


@dataclass(frozen=True, slots=True)
class Clock:
    """The closer's time: how long a file held its size, when a close gives up,
    and its waits between looks. The real one (:data:`REAL_CLOCK`) but in tests,
    which give one whose time passes only in its ``sleep``: what they prove
    (a file held 0.5 s, grew before the look) then does not depend on how fast
    a loaded machine runs them (issue 16)."""

    #: Seconds, never going back (``time.monotonic``).
    monotonic: Callable[[], float] = time.monotonic
    #: Waits this many seconds (``asyncio.sleep``).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


REAL_CLOCK: Final = Clock()


def quiet_after_stop(fmt: str) -> float:
    """How long a headerless file must not grow, after a ``MixMonitorStop`` that
    may be another MixMonitor's, before it is taken for finished: one and a half
    of Asterisk's write intervals (a GSM file 30 s). A WAV needs none: its header
    counts every byte only once MixMonitor closed it. Without this a file still
    written was complete after :data:`STABLE` (1 s) between two writes, closed and
    delivered cut short."""
    rate = _RATES.get(fmt)
    return 0.0 if rate is None else 1.5 * WRITE_BUFFER / rate


def _look(path: Path) -> tuple[int, bytes] | None:
    try:
        with open_regular(path) as fh:
            head = fh.read(HEADER_BYTES)
            fh.seek(0, 2)
            return fh.tell(), head
    except FileNotFoundError:
        return None


async def wait_complete(
    path: Path,
    fmt: str,
    timeout: float,
    *,
    quiet: float = 0.0,
    empty_ok: bool = False,
    clock: Clock = REAL_CLOCK,
) -> float | None:
    """Wait until ``path`` is complete; its duration for a WAV (None otherwise).

    ``quiet``: a headerless file is complete only once its size held this long
    (:func:`quiet_after_stop`), not :data:`STABLE`. RecordingError past
    ``timeout`` (no file, or one that never completed); an ``OSError`` at once
    when a symbolic link, a FIFO or another non-file holds the name
    (:func:`~router.recordings.files.open_regular`). ``empty_ok``: a headerless
    file still of 0 bytes at ``timeout`` (no ``quiet``: the call ended, or
    callrouter stopped it) is complete and empty, not failed: MixMonitor writes
    nothing while phones only ring (a missed call's GSM or ulaw file, measured
    on the sandbox), and a file that had sound gets it at its close, so only the
    whole ``timeout`` tells the two apart.
    """
    stable = max(STABLE, quiet)
    deadline = clock.monotonic() + timeout
    last: tuple[int, float] | None = None
    while True:
        seen = await asyncio.to_thread(_look, path)
        now = clock.monotonic()
        if seen is not None:
            size, head = seen
            if last is None or last[0] != size:
                last = (size, now)
            held = now - last[1]
            if fmt == "wav":
                info = parse_wav(head)
                if info is not None and info.complete(size) and held >= STABLE_WAV:
                    return info.duration
            elif size > 0 and held >= stable:
                return None
        if now >= deadline:
            if seen is not None and seen[0] == 0 and fmt != "wav" and empty_ok and not quiet:
                return None
            if seen is not None:
                raise RecordingError(f"{path.name}: incomplete after {timeout:g} s")
            raise RecordingError(f"{path.name}: {await asyncio.to_thread(_no_file, path, timeout)}")
        await clock.sleep(POLL)


def _no_file(path: Path, timeout: float) -> str:
    """Why no file came, for the failure's line (blocking): the folder callrouter
    looked in, and whether that folder is there at all (a ``local_dir`` that is not
    where callrouter sees Asterisk's ``dir`` fails every recording so)."""
    folder = path.parent
    said = f"no file in {folder} after {timeout:g} s"
    if not folder.is_dir():
        return (
            f"{said}; that folder does not exist here: is [recordings] local_dir the folder "
            "[recordings] dir is as callrouter sees it?"
        )
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return (
            f"{said}; that folder is on a read-only filesystem: Asterisk cannot create "
            "recordings in it (its log says 'app_mixmonitor.c: Cannot open ...')"
        )
    return said


def full_disk(folder: Path) -> str | None:
    """Why a recording in ``folder`` may be cut short, when the filesystem holding
    it is full (fewer than :data:`FULL_BELOW` bytes free); None otherwise, or when
    it cannot be asked (blocking)."""
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    free = found.f_bavail * found.f_frsize
    if free >= FULL_BELOW:
        return None
    return (
        f"the filesystem of {folder} was full ({free} bytes free): Asterisk could not "
        "write the recording's end (its log says 'No space left on device'); free space "
        "there ([recordings] hard_cap_bytes bounds callrouter's files, docs/recordings.md)"
    )


def _size(path: Path) -> int | None:
    """``path``'s size now (blocking); None when there is nothing there."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return None


async def _growing(path: Path, since: int | None, clock: Clock) -> bool:
    """Does ``path`` (a regular file) still grow (POLL * 2 at most)?

    Larger than ``since`` (its size when the close began), or over a moment. Asterisk
    22 writes a recording through a 32 KiB buffer: a WAV grows in steps of 32768
    bytes every 2 s, a GSM file every 20 s, so a look of a moment alone mostly sees
    no growth in a file still being written (measured on the sandbox).
    """
    before = await asyncio.to_thread(_size, path)
    if before is None:
        return False
    if since is not None and before > since:
        return True
    await clock.sleep(POLL * 2)
    after = await asyncio.to_thread(_size, path)
    return after is not None and after > before


def written_after(path: Path, when: float) -> bool:
    """Was ``path`` (a regular file itself) written after ``when`` (Unix time, this
    host's clock), by its modification time (blocking)? A look, no wait: what
    :func:`_growing` cannot tell in a moment (Asterisk writes in 32 KiB steps),
    a file's time since a moment well past tells."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_mtime > when


def left_on_disk(*paths: Path) -> tuple[Path | None, int | None]:
    """The first of ``paths`` that is a regular file itself, and its size (blocking).

    A symbolic link or anything else at the name is not callrouter's file: not counted.
    """
    for path in paths:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            return path, info.st_size
    return None, None


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of ``path`` (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def close_recording(
    recording: Recording,
    settings: RecordingSettings,
    store: RecordingStore,
    *,
    still_recording: Callable[[], bool] | None = None,
    unsure: bool = False,
    clock: Clock = REAL_CLOCK,
) -> Recording | None:
    """Wait for, transcode and catalog one file; the closed row, or None when it failed.

    A file that did not complete in time but still grows is being written by a
    MixMonitor that goes on: the row stays ``recording`` (for the channel's
    hang-up, the sweep or ``max_duration`` to end), instead of failing it while
    Asterisk writes on. ``still_recording`` is asked first when given (after a
    ``MixMonitorStop``: is the channel still up? That stop may have been of
    another MixMonitor on the channel, a PBX's own); without it the file alone
    decides (a call the tracker dropped after 4 hours whose Hangup never came
    because the call is still up). ``unsure``: that stop named none of the files
    callrouter asked to stop, so it may be another MixMonitor's; a headerless
    file is then finished only once it held its size past Asterisk's write
    interval (:func:`quiet_after_stop`). ``clock``: the waits' (:class:`Clock`).
    """
    source = recording.local_path
    target = source
    # After a MixMonitorStop that may be another's (``unsure``), a headerless file
    # still written holds its size between Asterisk's writes: it must hold longer.
    quiet = quiet_after_stop(recording.format) if unsure else 0.0
    timeout = max(settings.close_timeout, 2 * quiet)
    # Asked as the close begins (the call's end) and again when it ends: retention
    # may free the disk meanwhile, well before a file begun full fails.
    full = await asyncio.to_thread(full_disk, source.parent)
    try:
        began = await asyncio.to_thread(_size, source)
        try:
            duration = await wait_complete(
                source,
                recording.format,
                timeout,
                quiet=quiet,
                # Not on a full disk: there a file of 0 bytes is one Asterisk could
                # not write, which fails saying so, as before.
                empty_ok=full is None,
                clock=clock,
            )
        except RecordingError:
            if (still_recording is None or still_recording()) and await _growing(
                source, began, clock
            ):
                log.info(
                    "recording %s of call %s is still being written after %g s: "
                    "left open until its MixMonitor ends",
                    recording.part,
                    recording.call_id,
                    timeout,
                )
                return None
            raise
        file, content_type = source, CONTENT_TYPES[recording.format]
        # A WAV of its header alone (nobody answered: ringback is no sound on the
        # channel) is no recording for 1C: kept as ``empty``, never sent, and not
        # transcoded (an encoder makes a file of nothing, or refuses it).
        # A headerless file's emptiness is read off the hash's own read below:
        # one read before it missed MixMonitor's last write landing between the
        # two (its close on a loaded host), and a file with sound was ``empty``,
        # never sent and deleted as a call of no sound (hreview49).
        empty = recording.format == "wav" and duration == 0.0
        if settings.transcode != "off" and recording.format == "wav" and not empty:
            target = source.with_suffix("." + settings.transcode)
            try:
                await transcode(settings.transcode, source, target, settings.transcode_timeout)
            except RecordingError as exc:
                # The WAV is complete: deliver it rather than lose the call (and
                # leave a file that retention, counting closed files, never sees).
                # Whatever holds the target's name now is not callrouter's: transcode
                # removed its own output, or could not create it (O_EXCL: a file was
                # there), so it is never what a failure below leaves for retention.
                target = source
                log.error(
                    "recording %s of call %s: %s; delivering the WAV instead",
                    recording.part,
                    recording.call_id,
                    exc,
                )
            else:
                await asyncio.to_thread(source.unlink, missing_ok=True)
                file, content_type = target, CONTENT_TYPES[settings.transcode]
        size, sha256 = await asyncio.to_thread(file_digest, file)
        if recording.format != "wav":
            empty = size == 0
    except (RecordingError, OSError) as exc:
        full = full or await asyncio.to_thread(full_disk, source.parent)
        reason = f"{exc}; {full}" if full else str(exc)
        log.warning("recording %s of call %s failed: %s", recording.part, recording.call_id, reason)
        left, left_size = await asyncio.to_thread(left_on_disk, source, target)
        store.mark_failed(recording.id, reason, file=left, size=left_size)
        return None
    full = full or await asyncio.to_thread(full_disk, source.parent)
    store.mark_closed(
        recording.id,
        file=file,
        content_type=content_type,
        size=size,
        sha256=sha256,
        duration=duration,
        empty=empty,
        note=f"no sound (0 s): not sent; {full}" if empty and full else "",
    )
    log.log(
        logging.WARNING if full else logging.INFO,
        "recording %s of call %s closed: %s, %d bytes%s%s%s",
        recording.part,
        recording.call_id,
        file.name,
        size,
        f", {duration:.1f} s" if duration is not None else "",
        " (no sound: kept as empty, not sent)" if empty else "",
        f"; it may be cut short: {full}" if full else "",
    )
    return store.get(recording.call_id, recording.part)
