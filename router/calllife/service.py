"""The engine's side of the call life: live CEL in, replays after gaps, events out.

Live, the engine hands every ``CEL`` event (and the ``Newstate`` /
``DialState`` ringing signs) to :meth:`CallLife.ingest`; it folds them
(router/calllife/fold.py) and hands each new :class:`CallEvent` to ``emit``
(the plugins' ``callrouter_call_event``). After a stream gap, and at start,
it waits the settle delay, reads the gap's calls from the CEL store in a
worker thread and folds them with the same folder: only what was not told
yet goes out. A mark in the state dir (the time up to which everything was
told) tells a restarted router where to start reading; beside it, the calls
told to the end that such a read would meet again (its margin, or a long call
keeping the mark back), so a restart tells none of them twice. Nothing here
raises into the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router import jsonsafe
from router.aside import denied_state_file, move_aside
from router.calllife.fold import FOLDED, Folder, plan_internal
from router.calllife.model import CallEvent, CelRecord, IncompleteRecord, skim
from router.calllife.settings import HistorySettings
from router.calllife.sources import CelSource, open_source
from router.calls import IDENTITY_LIMITS
from router.errors import StateFileDenied
from router.tasks import cancel_and_wait
from router.textfiles import read_bounded
from router.wording import counted

__all__ = ["DIAL_RINGING", "LIVE_EVENTS", "MARK_FILE", "RINGING_STATE", "CallLife"]

log = logging.getLogger("router.calllife")

#: The events the call life reads: CEL itself and the live ringing signs.
LIVE_EVENTS = frozenset({"CEL", "Newstate", "DialState"})

#: The ``Newstate`` (``ChannelStateDesc`` of ``ChannelState`` 5) and the
#: ``DialState`` (``DialStatus``) that say a leg rings: the only ones of those
#: events the call life reads, so the engine asks Asterisk for no others
#: when nothing else reads them (router/narrowing.py).
RINGING_STATE = "Ringing"
DIAL_RINGING = "RINGING"
#: The file in the state dir holding the replay mark.
MARK_FILE = "calllife.json"
#: Seconds between two warnings of records not folded for a key missing.
_INCOMPLETE_EVERY = 60.0
#: A gap's replay reads this much before the gap began: the clocks of this
#: host and Asterisk's may differ a little, and reading more costs nothing
#: (what was told already is not told again).
GAP_MARGIN = 10.0
#: A gap's replay that leaves calls of before the gap's end open reads the store
#: once more this long after it (at least; twice ``settle_delay`` when longer):
#: Asterisk writes its CEL store late under load, and a call whose end it had not
#: written yet stayed open to 1C until the next gap or restart.
SECOND_LOOK = 5.0
#: How often the mark is written (seconds; and at stop).
MARK_EVERY = 5.0
#: Replays waiting or failed that the mark remembers (bounded).
MAX_PENDING = 32
#: A mark file's bytes besides its told calls, and the most one told call takes
#: (a Linkedid of non-ASCII written as ``\ud83d\ude00`` pairs, its time, the
#: punctuation): a larger file is no mark this service wrote, and is not read.
_MARK_BYTES = 4096
_TOLD_BYTES = 12 * IDENTITY_LIMITS["Linkedid"] + 48
#: Calls silent for this long are dropped from memory (their end was lost).
STALE_AFTER = 6 * 3600.0

Emit = Callable[[CallEvent], Awaitable[None]]


@dataclass(slots=True, eq=False)
class _Due:
    """One replay spawned: the starts it reads from (the earliest), and the end
    of the last gap it stands for (its second look goes by it)."""

    starts: list[float]
    gap_end: float | None


class CallLife:
    """Folds live CEL, replays gaps from the store, keeps the replay mark."""

    def __init__(
        self,
        settings: HistorySettings,
        emit: Emit,
        *,
        source: CelSource | None = None,
        clock: Callable[[], float] = time.time,
        is_internal: Callable[[str], bool] = plan_internal,
        listening: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self._emit = emit
        #: Whether anyone is told call events (a ``callrouter_call_event``
        #: plugin). While nobody is, nothing is replayed and the mark on disk
        #: is left as it was: a listener enabled later is told what it missed,
        #: as after a restart (bounded by ``replay_max_age``).
        self.listening = listening
        self.folder = Folder(max_calls=settings.max_calls, is_internal=is_internal)
        self.source = source if source is not None else _open(settings)
        self._clock = clock
        self._state_dir: Path | None = None
        self._mark_written: dict[str, Any] | None = None
        #: Why the last write of the mark failed (None: it did not): a full or
        #: read-only state folder is said once, and once more when it is written.
        self._write_failing: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Starts of the replays not finished yet (the mark stays before them).
        self._pending: list[float] = []
        self._replay_lock = asyncio.Lock()
        #: The gap's replay still waiting out its settle delay: a gap meanwhile
        #: joins it instead of reading the store once more (a peer whose events
        #: overflow the queue makes a gap of every poll).
        self._waiting: _Due | None = None
        #: Replays spawned and not finished (their second look included): while
        #: any is, the folder holds the live records of calls it does not follow.
        self._due = 0
        self._failures = 0
        #: Records without the keys every record has (:class:`IncompleteRecord`),
        #: and when that was last said (at most once a minute).
        self.incomplete = 0
        self._incomplete_told: float | None = None
        #: Events handed out, for status and tests.
        self.emitted = 0
        #: Tells the ends that waited :data:`~router.calllife.fold.END_GRACE` for
        #: their legs in vain (:meth:`Folder.expire`), while any waits.
        self._expiring: asyncio.Task[None] | None = None

    # -- live ---------------------------------------------------------------------

    async def ingest(self, name: str, fields: Any) -> None:
        """One live event (``CEL``, ``Newstate``, ``DialState``); never raises."""
        try:
            events = self._fold(name, fields)
        except IncompleteRecord as exc:
            # The head of a record a caller's number cut in two: no bug, and
            # not one of the three failures logged with their traceback, which
            # any caller used up at once, leaving later real ones unsaid.
            self.incomplete += 1
            now = time.monotonic()
            if self._incomplete_told is None or now - self._incomplete_told >= _INCOMPLETE_EVERY:
                self._incomplete_told = now
                log.warning(
                    "call life: an event %s was not folded: %s (%d such in all; a caller "
                    "number with a blank line, which Asterisk writes as it is, cuts the "
                    "records of its call in two; docs/asterisk.md)",
                    name[:64],
                    exc,
                    self.incomplete,
                )
            return
        except Exception:
            self._failures += 1
            if self._failures <= 3 or self._failures % 1000 == 0:
                log.exception("call life: event %s not folded (failure %d)", name, self._failures)
            return
        for event in events:
            await self._send(event)
        self._watch_ends()

    def _watch_ends(self) -> None:
        """While a call's end waits for its legs' (:attr:`Folder.ending`), a task
        tells it when the wait is over, should no live record come meanwhile."""
        if self.folder.ending is None or (self._expiring is not None and not self._expiring.done()):
            return
        self._expiring = self._spawn(self._expire_ends())

    async def _expire_ends(self) -> None:
        while (due := self.folder.ending) is not None:
            await asyncio.sleep(max(0.0, due - self.folder.clock()))
            try:
                events = self.folder.expire()
            except Exception:
                self._failures += 1
                log.exception("call life: a held call end not folded")
                return
            for event in events:
                await self._send(event)

    def _fold(self, name: str, fields: Any) -> list[CallEvent]:
        if name == "CEL":
            if fields.get("EventName") in FOLDED:
                return self.folder.feed(CelRecord.from_fields(fields))
            # A third of a call's records (CHAN_END, BRIDGE_EXIT, APP_*) only count
            # for its bookkeeping: no record is built for them.
            self.folder.note(*skim(fields))
            return []
        if name == "Newstate":
            if fields.get("ChannelState") == "5":
                return self.folder.hint(fields.get("Linkedid", ""), fields.get("Uniqueid", ""))
            return []
        if name == "DialState" and fields.get("DialStatus") == DIAL_RINGING:
            return self.folder.hint(fields.get("DestLinkedid", ""), fields.get("DestUniqueid", ""))
        return []

    async def _send(self, event: CallEvent) -> None:
        self.emitted += 1
        try:
            await self._emit(event)
        except Exception:  # the plugins facade logs its own; this is a backstop
            log.exception("call life: handing out %s failed", event.event_id)

    # -- the mark -------------------------------------------------------------------

    def mark(self) -> float | None:
        """Everything that happened before this time was told: the start of the
        oldest call still open, else now (nothing is open: all was told), and
        never past the start of a gap whose replay has not finished."""
        if self._state_dir is None:
            return None
        oldest = self.folder.oldest_open()
        mark = oldest if oldest is not None else self._clock()
        if self._pending:
            mark = min(mark, *self._pending)
        return mark

    def read_mark(self) -> float | None:
        mark, _ = self._read_mark_file()
        return mark

    def _read_mark_file(self) -> tuple[float | None, dict[str, float]]:
        """The mark and the calls told to the end beside it (``{}`` when none).
        Raises :class:`router.errors.StateFileDenied` when the file may not be read."""
        if self._state_dir is None:
            return None, {}
        path = self._state_dir / MARK_FILE
        try:
            # No link followed, a regular file only (a FIFO blocked the start for
            # ever), no more read than a mark of max_calls can hold (issue 16).
            raw = read_bounded(path, self._mark_limit(), follow_symlinks=False)
        except FileNotFoundError:
            return None, {}
        except PermissionError as exc:
            # Its owner or mode, not its content: kept, and the start refused
            # (set aside, the calls that ended while it was down were never told).
            raise denied_state_file(path, exc) from None
        except OSError as exc:
            # No file of ours: set aside, never followed nor lost, so the next
            # mark can be written in its place (a folder there refused it for ever).
            self._set_aside(path, exc)
            return None, {}
        try:
            data = jsonsafe.loads(raw.decode("utf-8"))
            value = data.get("mark")
            told = data.get("told", {})
        except (ValueError, AttributeError) as exc:
            log.warning("call life: %s unreadable (%s); no replay from it", path, exc)
            return None, {}
        if not (isinstance(value, int | float) and math.isfinite(value)):
            return None, {}
        ended: dict[str, float] = {}
        if isinstance(told, dict):
            for linkedid, at in list(told.items())[-self.settings.max_calls :]:
                if isinstance(at, int | float) and math.isfinite(at):
                    ended[str(linkedid)] = float(at)
        return float(value), ended

    def _mark_limit(self) -> int:
        """The most bytes a mark file this service wrote can hold."""
        return _MARK_BYTES + self.settings.max_calls * _TOLD_BYTES

    def _set_aside(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        try:
            aside = move_aside(path, path.with_name(f"{path.name}.unreadable-{int(self._clock())}"))
        except OSError as moving:
            log.warning(
                "call life: %s unreadable (%s), left in place (%s); no replay from it",
                path,
                reason,
                moving,
            )
            return
        log.warning(
            "call life: %s unreadable (%s): set aside as %s; no replay from it",
            path,
            reason,
            aside,
        )

    def told(self, mark: float) -> dict[str, float]:
        """The calls told to the end that a restart's replay from ``mark`` would
        read again; none that ended after a gap whose replay is still due (the
        gap may have lost some of their events, so a restart tells them again)."""
        before = min(self._pending) if self._pending else None
        return self.folder.told_since(mark - GAP_MARGIN, before)

    def _mark_data(self) -> dict[str, Any] | None:
        """What the mark file is to hold now; None when there is nothing new.

        Read on the event loop, never in a worker thread: the loop changes the
        folder with every record, and a thread walking it meanwhile (the open
        calls, the ended ones) fails with "changed size during iteration" or
        reads it half-changed."""
        if not self.listening():
            return None
        mark = self.mark()
        if self._state_dir is None or mark is None:
            return None
        data: dict[str, Any] = {"mark": mark, "told": self.told(mark)}
        return None if data == self._mark_written else data

    def _write_mark_file(self, data: dict[str, Any]) -> None:
        """Write ``data`` atomically (blocking: the file only, no folder read)."""
        assert self._state_dir is not None  # _mark_data gave data: there is one
        path = self._state_dir / MARK_FILE
        tmp = path.with_name(f".{MARK_FILE}.{os.getpid()}")
        try:
            # 0600 like every other state file (the told calls' ids are the
            # service's business), whatever the umask; never through a link.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                os.fchmod(out.fileno(), 0o600)  # a left-over temporary kept its mode
                out.write(json.dumps(data) + "\n")
            tmp.replace(path)
            self._mark_written = data
        except OSError as exc:
            with contextlib.suppress(OSError):  # a full disk: no half-written temporary left
                tmp.unlink()
            # Retried every few seconds: said when it starts (or its reason changes),
            # not at every try, which filled the journal while the disk was full.
            reason = f"{exc.strerror or exc}"
            if reason != self._write_failing:
                log.warning(
                    "call life: cannot write %s: %s; trying again every few seconds, "
                    "said again once it is written",
                    path,
                    exc,
                )
            self._write_failing = reason
            return
        if self._write_failing is not None:
            log.info("call life: %s written again", path)
            self._write_failing = None

    def write_mark(self) -> None:
        """Write the mark now, blocking (a first start; tests)."""
        data = self._mark_data()
        if data is not None:
            self._write_mark_file(data)

    async def _save(self) -> None:
        """The mark read here, on the loop; only the file written in a thread."""
        data = self._mark_data()
        if data is not None:
            await asyncio.to_thread(self._write_mark_file, data)

    async def save_mark(self) -> None:
        """The timed job: the mark to disk, the file off the event loop; stale calls dropped."""
        cutoff = self._clock() - STALE_AFTER
        dropped = self.folder.sweep(cutoff)
        if dropped:
            log.info(
                "call life: dropped %s with no record for hours", counted(len(dropped), "call")
            )
        await self._save()

    # -- replays ---------------------------------------------------------------------

    def start(self, state_dir: Path) -> None:
        """At engine start: replay from the saved mark (bounded by ``replay_max_age``)."""
        self._state_dir = state_dir
        try:
            mark, told = self._read_mark_file()
        except StateFileDenied:
            self._state_dir = None  # the stop writes no mark over the file kept
            raise
        self.folder.seed_told(told)
        if not self.listening():
            log.info(
                "call life: no plugin reads call events (callrouter_call_event); "
                "CEL is not followed and nothing is replayed"
            )
            return
        if self.source is None or mark is None:
            # Nothing rebuilds the calls already up: they are not told from
            # their middle (Folder.history_from; docs/history.md).
            self.folder.history_from = self._clock()
        if self.source is None:
            # Said once at each start: the history a plugin keeps (1C's) silently
            # lacks every call of the time callrouter was stopped otherwise.
            log.warning(
                "call life: no [history] cel store: calls that begin or end while "
                "callrouter is stopped, or while Asterisk's event stream is lost, are "
                "not told to the plugins that read call events (1C's call history); "
                "set [history] cel (docs/history.md#setting-up-cel)"
            )
            return
        if mark is None:
            log.info("call life: no replay mark yet in %s; history starts now", state_dir)
            # Now, not at the first timed save: a router killed before it would
            # otherwise find no mark again and never tell what ended meanwhile.
            self.write_mark()
            return
        since = max(mark - GAP_MARGIN, self._clock() - self.settings.replay_max_age)
        self._pending.append(since)
        self._spawn_replay(since, reason="start")

    def gap(self, since: float) -> None:
        """The event stream lost events from ``since`` (wall clock): replay them soon."""
        if not self.listening():
            return  # nobody to tell; the mark stays where the last listener left it
        if self.source is None:
            log.warning(
                "call life: events lost for a while; no [history] cel store to rebuild them from"
            )
            return
        start = since - GAP_MARGIN
        oldest = self.folder.oldest_open()
        if oldest is not None:
            start = min(start, oldest)
        if len(self._pending) >= MAX_PENDING:
            # Replays keep failing (the store unreadable): keep the earliest start only.
            self._pending[:] = [min(self._pending)]
        self._pending.append(start)
        waiting = self._waiting
        if waiting is not None:
            # Its read has not begun: it reads from this start too, and looks
            # a second time as this gap's replay would have.
            waiting.starts.append(start)
            waiting.gap_end = self._clock()
            if len(waiting.starts) > MAX_PENDING:
                # All of them read by that one replay, from the earliest: the
                # mark waits for that one only.
                first = min(waiting.starts)
                for covered in waiting.starts:
                    if covered != first:
                        with contextlib.suppress(ValueError):
                            self._pending.remove(covered)
                waiting.starts[:] = [first]
            return
        self._spawn_replay(start, reason="gap", gap_end=self._clock())

    def _spawn_replay(self, since: float, *, reason: str, gap_end: float | None = None) -> None:
        """Start :meth:`replay_later`; until it is done, live records of calls the
        folder does not follow wait for it (:meth:`Folder.hold`). A gap's replay
        is joined by the gaps that come while it waits out its settle delay."""
        self._due += 1
        self.folder.holding = True
        due = _Due([since], gap_end)
        if reason == "gap":
            self._waiting = due
        self._spawn(self._replay_then_release(due, reason=reason))

    async def _replay_then_release(self, due: _Due, *, reason: str) -> None:
        try:
            await self.replay_later(due, reason=reason)
        except asyncio.CancelledError:
            # Stopping: what is held is lost with the process; the mark stays
            # before it (:meth:`mark`), so the next start replays those calls.
            self._due -= 1
            raise
        self._due -= 1
        if self._due == 0:
            # No replay is due: what was held and no replay took is folded as it
            # came (its call was not in the store yet, or the read failed).
            for event in self.folder.release():
                await self._send(event)
            self._watch_ends()

    async def replay_later(self, due: _Due, *, reason: str) -> int:
        """Wait the settle delay, then :meth:`replay` from the earliest of
        ``due.starts``; logged, never raises.

        ``due.gap_end`` (a gap's): when calls that began before it are still open
        after the replay, or live records of a call the store did not hold yet
        are still held, a second look at the store (:data:`SECOND_LOOK`) tells
        the ends Asterisk wrote late; one that is really still up costs one
        read that tells nothing."""
        try:
            await asyncio.sleep(self.settings.settle_delay)
        finally:
            if self._waiting is due:
                self._waiting = None  # read from here on: a gap now spawns its own
        since, gap_end = min(due.starts), due.gap_end
        try:
            told = await self.replay(since, reason=reason)
        except Exception as exc:
            # The mark stays before this gap: the next start replays it again.
            log.error("call life: replay after %s failed: %s", reason, exc)
            return 0
        for start in due.starts:
            with contextlib.suppress(ValueError):
                self._pending.remove(start)
        oldest = self.folder.oldest_open()
        if gap_end is None or ((oldest is None or oldest > gap_end) and not self.folder.held):
            return told
        await asyncio.sleep(max(SECOND_LOOK, 2 * self.settings.settle_delay))
        try:
            return told + await self.replay(since, reason=f"{reason}, second look")
        except Exception as exc:
            log.error("call life: second look after %s failed: %s", reason, exc)
            return told

    async def replay(self, since: float, until: float | None = None, *, reason: str) -> int:
        """Read the calls with records since ``since`` and fold them; events told."""
        source = self.source
        if source is None:
            return 0
        async with self._replay_lock:
            calls = await asyncio.to_thread(source.read, since, until)
            told = 0
            for linkedid, records in calls.items():
                for event in self.folder.replay(linkedid, records):
                    await self._send(event)
                    told += 1
            self._watch_ends()
            log.info(
                "call life: replay (%s) read %d calls from %s; %d events were new",
                reason,
                len(calls),
                self.settings.where,
                told,
            )
            return told

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel pending replays; write the mark. A cancellation of the task
        that stops it is raised, not swallowed with the replays' (issue 16);
        the mark is written first all the same."""
        try:
            with contextlib.suppress(Exception):  # each replay logs its own failure
                await cancel_and_wait(*self._tasks)
        except asyncio.CancelledError:
            # A stop cut short (the shutdown's timeout, a second Ctrl-C) lost the
            # mark: the next start replayed from the last timed one, up to 5 s
            # older. One small file, written here, blocking: no await that one
            # more cancellation could cut before it is written.
            self.write_mark()
            raise
        await self._save()


def _open(settings: HistorySettings) -> CelSource | None:
    return open_source(settings)
