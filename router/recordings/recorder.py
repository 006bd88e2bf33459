"""The recorder: the ``record`` rule action, and closing files when calls end.

A built-in plugin (``recordings``, listed through :mod:`router.builtin.recordings`),
written as any plugin would be. It registers the ``record`` action (refused at
load when router.toml has no ``[recordings]``). A call still waiting in
``callrouter-inbound`` is handed to the dialplan
(:func:`~router.recordings.mixmonitor.hand_to_dialplan`): its Redirect passes
through ``[callrouter-record]``, which starts MixMonitor, so the least-privilege
manager user records the common case. A call met later (an ``on: event`` rule,
a ``record`` after the ``redirect``) gets the AMI ``MixMonitor``
(:func:`~router.recordings.mixmonitor.start_recording`, ``write = system``).
It closes every file
of the catalog still ``recording`` when its channel's ``MixMonitorStop`` or
``Hangup`` arrives, when the call ends, or, for anything missed (a restart, a
stream gap), on a sweep every few seconds once the call is gone and its channel
with it. An attended transfer that renames a recorded channel by a masquerade
(``AttendedTransfer`` with ``DestType: App``, :mod:`router.recordings.masquerade`)
moves its files to the new name, which they then close with; so does a file
still open seconds after its channel's Hangup that a channel new then holds
(an INVITE with Replaces, :mod:`router.recordings.replaced`). Closed files
wait in the catalog for a receiver (the 1C plugin); retention runs every
minute.

Who may fetch a recording with a token: the extensions whose phone leg was on
the call while it was recorded (:func:`live_extensions`): the live legs when it
starts, with the legs bridged with them (:meth:`Recorder.present_extensions`, which
the API's start asks too), every leg that hangs up while it runs, the live legs when it ends, and
every leg that shares a bridge with one of the call's legs while it runs (a leg
bridged in from another call: ``BridgeEnter``, :mod:`router.recordings.bridges`).
A leg that hung up before (a queue member who rang and was cancelled, a manager
who transferred the caller away) is left out. After a stream gap who is in which
bridge is forgotten, then rebuilt from the reconcile's channel listing and
``BridgeList`` (:meth:`Recorder.callrouter_channels_listed`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from router.dialplan import INBOUND_CONTEXT, RECORD_CONTEXT, shown
from router.errors import AMIPrivilegeError
from router.hookspecs import hookimpl
from router.recordings.bridges import BridgeMembers, bridged_channels, conversations, is_holding
from router.recordings.closer import REAL_CLOCK, Clock, close_recording
from router.recordings.masquerade import renamed_by_transfer
from router.recordings.mixmonitor import hand_to_dialplan, start_recording, stop_recording
from router.recordings.naming import FORMATS, LEGS
from router.recordings.replaced import FOLLOW_AFTER, arrivals, find_moved
from router.recordings.retention import apply_retention
from router.recordings.settings import RecordingSettings
from router.recordings.store import Origin, Recording, RecordingStore
from router.rules.registry import ActionSpec, ParamSpec, Registry

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.message import Event
    from router.ami.stream import StreamGap
    from router.calls import Call
    from router.config import Config
    from router.hookspecs import EngineAPI
    from router.metrics import Metrics, QueueGauge
    from router.rules.decision import Action

__all__ = ["RECORD", "Recorder", "call_extensions", "live_extensions", "make_plugin"]

log = logging.getLogger("router.recordings")

#: A phone channel's endpoint: ``PJSIP/101-0000002a`` -> ``101``.
_PHONE = re.compile(r"^(?:PJSIP|SIP|IAX2|DAHDI)/([0-9A-Za-z_+-]{1,40}?)-[0-9a-f]+$")
SWEEP_EVERY = 5.0
#: Times the max_duration sweep asks Asterisk to stop one file before it gives
#: up on it (an ERROR): a refusal that lasts is no passing AMI failure.
OVERLONG_TRIES = 5
RETENTION_EVERY = 60.0
#: Seconds between readings of the catalog for /metrics (off the loop, never at scrape).
METRICS_EVERY = 15.0
#: Seconds a stop waits for a retention pass under way before closing the catalog.
RETENTION_STOP_WAIT = 10.0


def _check_record(params: Mapping[str, object]) -> None:
    legs = params.get("legs")
    if isinstance(legs, str) and "{" not in legs and legs not in LEGS:
        raise ValueError(f"legs {legs!r} is not one of {', '.join(LEGS)}")
    fmt = params.get("format")
    if isinstance(fmt, str) and "{" not in fmt and fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def _check_rendered(params: Mapping[str, str]) -> None:
    """What a template filled in, as :func:`_check_record` holds the file's
    values: ``explain`` showed ``record(format=mp4)`` matched, and ``run``
    then failed the recording, the rule's other actions going ahead."""
    legs = params.get("legs")
    if legs and legs not in LEGS:
        raise ValueError(f"legs {shown(legs)} is not one of {', '.join(LEGS)}")
    fmt = params.get("format")
    if fmt and fmt not in FORMATS:
        raise ValueError(f"format {shown(fmt)} is not one of {', '.join(FORMATS)}")


RECORD = ActionSpec(
    "record",
    (
        ParamSpec("legs", doc="mix (default), both, in or out"),
        ParamSpec("format", doc="wav (default), gsm or ulaw"),
    ),
    doc="Record the call (the dialplan's [callrouter-record] starts MixMonitor on "
    "the call's way to its target); the file is named after the call id and "
    "delivered to 1C when the call ends ([recordings] in router.toml).",
    check=_check_record,
    rendered=_check_rendered,
)


def _still_waiting(call: Call) -> str | None:
    """The channel waiting in ``callrouter-inbound`` and not yet redirected, if any.

    Only that channel can be sent through ``[callrouter-record]``: a Redirect
    of a channel already talking would pull it out of its bridge.
    """
    name = call.waiting_channel
    channel = call.channels.get(name) if name else None
    if channel is None or channel.hung_up or channel.context != INBOUND_CONTEXT:
        return None
    return name


def phone_of(channel: str) -> str | None:
    """The phone a channel name is a leg of (``PJSIP/101-0000002a``: ``101``), if any."""
    matched = _PHONE.match(channel)
    return matched.group(1) if matched else None


def call_extensions(call: Call | None) -> set[str]:
    """The phones a call involves, legs that hung up included."""
    if call is None:
        return set()
    return {ext for c in call.channels.values() if (ext := phone_of(c.name))}


def live_extensions(call: Call | None) -> set[str]:
    """The phones on a call now (legs not hung up): present while it is recorded."""
    if call is None:
        return set()
    return {ext for c in call.active_channels if (ext := phone_of(c.name))}


class Recorder:
    """One engine's recorder; idle (the action refused) without ``[recordings]``."""

    def __init__(self) -> None:
        self.settings: RecordingSettings | None = None
        self.store: RecordingStore | None = None
        self._engine: EngineAPI | None = None
        self._closing: dict[int, asyncio.Task[Recording | None]] = {}
        #: A recorded channel that hung up while its file was still written: the
        #: look for the channel its MixMonitor went on under (replaced.py), one per
        #: old name, which every file of it waits for.
        self._following: dict[str, asyncio.Task[str | None]] = {}
        #: Rows whose MixMonitor was told StopMixMonitor for max_duration.
        self._stopped: set[int] = set()
        #: Rows whose max_duration stop failed, and how many times (retried at
        #: each sweep up to OVERLONG_TRIES).
        self._stop_failures: dict[int, int] = {}
        #: Who is in which bridge now: legs bridged in from another call read too.
        self._bridges = BridgeMembers()
        #: The rebuild of the memberships after a gap, asking BridgeList, if under way.
        self._rebuilding: asyncio.Task[None] | None = None
        #: Whether BridgeList's failure was logged (once, until it answers again).
        self._bridge_list_failing = False
        #: The retention pass running in its thread, if any (a stop waits for it).
        self._retaining: asyncio.Future[Any] | None = None
        self._queue: QueueGauge | None = None
        self._bytes: Any = None
        #: The closes' time (closer.py): a test's, whose time passes only as
        #: the close waits.
        self.close_clock: Clock = REAL_CLOCK

    @hookimpl
    def callrouter_configure(self, config: Config) -> None:
        self.settings = getattr(config, "recordings", None)

    @hookimpl
    def callrouter_metrics(self, metrics: Metrics) -> None:
        """The files 1C has not confirmed (queue ``recordings``) and the bytes on disk."""
        self._queue = metrics.queue("recordings")
        self._bytes = metrics.gauge(
            "callrouter_recordings_bytes",
            "Recordings on disk (on_disk) and those of them 1C has not confirmed (undelivered).",
            ["kind"],
        )

    async def refresh_metrics(self) -> None:
        if self.store is None or (self._queue is None and self._bytes is None):
            return
        usage = await asyncio.to_thread(self.store.usage)
        if self._queue is not None:
            # Only files on their way: one the receiver gave up on (a refused upload)
            # waits for `callrouter recordings retry`, not in the queue, and counted
            # it would keep an alert on the queue's age firing for ever.
            waiting = usage.counts.get("closed", 0) - usage.upload_failed
            self._queue.update(max(0, waiting), usage.oldest_waiting_at)
        if self._bytes is not None:
            self._bytes.labels("on_disk").set(usage.bytes_on_disk)
            self._bytes.labels("undelivered").set(usage.undelivered_bytes)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        configured = self.settings is not None

        def check(params: Mapping[str, object]) -> None:
            if not configured:
                raise ValueError("record needs a [recordings] table in router.toml (dir = ...)")
            _check_record(params)

        registry.add_action(replace(RECORD, check=check))

    @hookimpl
    def callrouter_startup(self, engine: EngineAPI) -> None:
        if self.settings is None:
            return
        self._engine = engine
        self.store = RecordingStore(engine.state_dir)
        engine.schedule("recordings:sweep", self.sweep, every=SWEEP_EVERY)
        if self.settings.max_duration:
            engine.schedule("recordings:max_duration", self.stop_overlong, every=SWEEP_EVERY)
        engine.schedule("recordings:retention", self.retention, every=RETENTION_EVERY)
        if self._queue is not None:
            engine.schedule("recordings:metrics", self.refresh_metrics, every=METRICS_EVERY)

    @hookimpl
    async def callrouter_execute(self, action: Action, call: Call, engine: EngineAPI) -> str | None:
        if action.kind != RECORD.name:
            return None
        if self.settings is None or self.store is None:
            raise ValueError("record needs a [recordings] table in router.toml")
        legs = action.params.get("legs") or None
        fmt = action.params.get("format") or None
        waiting = _still_waiting(call)
        if waiting is not None:
            started = await hand_to_dialplan(
                lambda name, headers: engine.ami.send(name, headers),
                self.store,
                self.settings,
                call_id=call.linkedid,
                channel=waiting,
                legs=legs,
                fmt=fmt,
                extensions=self.present_extensions(call),
                origin=Origin("rule", action.rule),
            )
            if started:
                call.redirect_via = RECORD_CONTEXT
        else:
            # For a call met later (an ``on: event`` rule), its first live channel.
            channel = call.waiting_channel or next(
                (c.name for c in call.channels.values() if not c.hung_up), ""
            )
            started = await start_recording(
                lambda name, headers: engine.ami.send(name, headers),
                self.store,
                self.settings,
                call_id=call.linkedid,
                channel=channel,
                legs=legs,
                fmt=fmt,
                extensions=self.present_extensions(call),
                origin=Origin("rule", action.rule),
            )
        if not started:
            return f"{call.linkedid}: already recording"
        return ", ".join(r.local_path.name for r in started)

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        """The events read below (Asterisk sends no others: docs/asterisk.md);
        none without ``[recordings]``, so an idle recorder costs a call nothing."""
        if self.settings is None:
            return ()
        return ("MixMonitorStop", "Hangup", "BridgeEnter", "BridgeLeave", "AttendedTransfer")

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        if self.store is None:
            return
        if event.name == "AttendedTransfer":
            self._transferred(event)
            return
        channel = event.get("Channel") or ""
        if event.name in ("BridgeEnter", "BridgeLeave"):
            bridge = event.get("BridgeUniqueid") or ""
            if is_holding(event.get("BridgeTechnology") or "", event.get("BridgeType") or ""):
                bridge = ""  # a parking lot: no conversation to join (bridges.py)
            self._bridged(event.name, channel, bridge, call)
            return
        if event.name == "Hangup":
            # Whether or not its call is still tracked (dropped after 4 hours).
            self._bridges.leave(channel)
        if event.name not in ("MixMonitorStop", "Hangup") or call is None:
            return
        # The call's files, and those on the channel that another call's id names (a
        # recording an attended transfer moved onto it: _transferred).
        found = (
            self.store.recording_of((call.linkedid,), (channel,))
            if channel
            else self.store.recording(call.linkedid)
        )
        running = [r for r in found if r.id not in self._closing]
        if not running:
            return
        # The channel was on the call while it was recorded: any leg that hangs up
        # now, and every leg still up when the recording ends here.
        own = phone_of(channel)
        present = {own} if own else set()
        rows = [r for r in running if r.channel == channel]
        here = present | live_extensions(call) if rows else present
        for call_id in sorted({r.call_id for r in running}):
            # Another call's file on this channel gets the channel's own phone only:
            # the legs of this call are no legs of that one (those sharing a bridge
            # with it were added as they entered).
            self.store.add_extensions(
                call_id,
                here if call_id == call.linkedid else present,
                ids=(r.id for r in running if r.call_id == call_id),
            )
        if rows:
            if event.name == "MixMonitorStop":
                # It names no MixMonitor: a PBX's own, stopped on the same channel,
                # must not fail ours, which goes on until the channel ends. When
                # callrouter stopped one of its own (the API's, beside a rule's), the
                # files it asked to stop are the ones that end.
                asked = [r for r in rows if r.stop_asked_at is not None]
                self._close(
                    asked or rows,
                    still_recording=lambda: _channel_up(call, channel),
                    unsure=not asked,
                )
            else:
                self._close(rows, hung_up=(time.time(), time.monotonic()))

    def _transferred(self, event: Event) -> None:
        """An attended transfer that moved the transferee into an unbridged channel's
        place by a masquerade (:mod:`router.recordings.masquerade`): that channel's
        MixMonitors go on under the transferee's name, so its files do too. Before,
        the old name's ``Hangup`` (which follows) closed them while Asterisk wrote on,
        and the API's stop and ``max_duration`` named a channel Asterisk no longer had
        (``No such channel``, taken for a stop done)."""
        store = self.store
        rename = renamed_by_transfer(event)
        if store is None or rename is None:
            return
        moved = self._rename(rename.old, rename.new)
        if not moved:
            return
        log.info(
            "attended transfer: %d recording file(s) on %s go on as %s (Asterisk moved "
            "the transferee into that channel's place)",
            len(moved),
            rename.old,
            rename.new,
        )

    def _rename(self, old: str, new: str) -> list[int]:
        """The files still written on ``old`` go on as ``new``'s (the ids moved);
        the leg now on them is ``new``'s, so its phone may read them."""
        store = self.store
        assert store is not None
        moved = store.rename_channel(old, new)
        phone = phone_of(new)
        if moved and phone:
            rows = [r for r in store.recording_on((new,)) if r.id in set(moved)]
            for call_id in sorted({r.call_id for r in rows}):
                store.add_extensions(
                    call_id, {phone}, ids=(r.id for r in rows if r.call_id == call_id)
                )
        return moved

    async def _went_on(self, row: Recording, hung_up: tuple[float, float]) -> bool:
        """Did ``row``'s MixMonitor go on under another channel after its channel's
        Hangup (an INVITE with Replaces, :mod:`router.recordings.replaced`)? Then
        the row is renamed to it and stays open: its file closes with that channel.
        Asked only of a file not complete :data:`~router.recordings.replaced.FOLLOW_AFTER`
        after the hang-up: MixMonitor ends with its channel and closes the file at
        once, and one moved writes nothing more until it ends (measured)."""
        monotonic = hung_up[1]
        old = row.channel
        follow = self._following.get(old)
        if follow is None:
            follow = asyncio.get_running_loop().create_task(
                self._follow(old, monotonic), name=f"recordings:follow:{old}"
            )
            self._following[old] = follow
            follow.add_done_callback(lambda _task: self._following.pop(old, None))
        new = await asyncio.shield(follow)
        store = self.store
        now = store.get(row.call_id, row.part) if store is not None and new else None
        return now is not None and now.state == "recording" and now.channel == new

    async def _went_on_safely(self, row: Recording, hung_up: tuple[float, float]) -> bool:
        """:meth:`_went_on`, whose failure (a bug, the catalog closed under it) is
        logged and leaves the file to its close as before, never unclosed."""
        try:
            return await self._went_on(row, hung_up)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "recording %s of call %s: looking for its channel failed", row.part, row.call_id
            )
            return False

    async def _follow(self, old: str, hung_up: float) -> str | None:
        """The channel ``old``'s files are written on now, renamed to it; None."""
        store, engine = self.store, self._engine
        if store is None or engine is None:
            return None
        files = {r.pbx_path for r in store.recording_on((old,))}
        candidates = arrivals(engine.calls, old, hung_up)
        if not files or not candidates:
            return None
        new = await find_moved(
            lambda name, headers: engine.ami.send(name, headers), candidates, files
        )
        if new is None:
            log.info(
                "recording on %s is still being written after its hang-up, and none of "
                "%d channels new then holds it (MIXMONITOR_FILENAME)",
                old,
                len(candidates),
            )
            return None
        moved = self._rename(old, new)
        log.info(
            "recording: %d file(s) on %s go on as %s (Asterisk moved that channel there "
            "for an INVITE with Replaces)",
            len(moved),
            old,
            new,
        )
        return new

    def _lives_on(self, row: Recording, call: Call | None = None) -> bool:
        """Is ``row``'s channel a live leg of a tracked call other than ``call``? Its
        MixMonitor then still writes, whatever became of the call the row is named
        after: an attended transfer moved it (:meth:`_transferred`), or the channel
        went on under an older call's Linkedid (a bridge)."""
        engine = self._engine
        if engine is None:
            return False
        holder = engine.calls.by_channel(row.channel)
        return holder is not None and holder is not call and holder.ended is None

    @hookimpl
    def callrouter_present_extensions(self, call: Call) -> set[str]:
        """For a recording the API starts: the legs bridged with the call's."""
        return self.present_extensions(call)

    def present_extensions(self, call: Call) -> set[str]:
        """The phones on ``call`` now: its live legs, and the legs sharing a bridge with
        them. A leg bridged in from an older call before a recording starts keeps its
        own Linkedid (:mod:`router.recordings.bridges`), and its ``BridgeEnter`` came
        when nothing was recorded: the call's legs alone would miss it."""
        legs = [c.name for c in call.active_channels]
        beside = self._bridges.beside(legs)
        return live_extensions(call) | {ext for c in beside if (ext := phone_of(c))}

    def _bridged(self, name: str, channel: str, bridge: str, call: Call | None) -> None:
        """A leg entered or left a bridge. Everyone in a bridge with a leg of a call
        being recorded is on that call while it is recorded: a leg bridged in from
        another call (an attended transfer, the ``Bridge`` action) keeps its own
        Linkedid while the recorded call is the newer (:mod:`router.recordings.bridges`),
        so the call's legs alone would miss it."""
        if not channel:
            return
        if name == "BridgeLeave" or not bridge:
            self._bridges.leave(channel)
            return
        others = self._bridges.enter(channel, bridge)
        if others:
            self._met([(channel, others, call)])

    def _met(self, meetings: Sequence[tuple[str, frozenset[str], Call | None]]) -> None:
        """Each (channel, others, channel's call if known) shares a bridge: the phones
        of all of them read the recordings of every call among them, in one query
        for all the meetings (a conference's every BridgeEnter names all its calls,
        and a rebuild may pair many)."""
        store, engine = self.store, self._engine
        if store is None:
            return
        groups: list[tuple[set[str], set[str], set[str]]] = []
        all_calls: set[str] = set()
        all_channels: set[str] = set()
        for channel, others, call in meetings:
            everyone = {channel, *others}
            phones = {ext for c in everyone if (ext := phone_of(c))}
            if not phones:
                continue
            calls = {call.linkedid} if call is not None else set()
            for other in others if call is not None else everyone:
                found = engine.calls.by_channel(other) if engine is not None else None
                if found is not None:
                    calls.add(found.linkedid)
            groups.append((calls, everyone, phones))
            all_calls |= calls
            all_channels |= everyone
        if not groups:
            return
        # The calls' recordings, and one on a channel of the bridge whose call the
        # tracker now files under the older Linkedid (its next event moved it).
        rows = [r for r in store.recording_of(all_calls, all_channels) if r.id not in self._closing]
        if not rows:
            return
        for calls, everyone, phones in groups:
            running: dict[str, set[int]] = {}
            for r in rows:
                if r.call_id in calls or r.channel in everyone:
                    running.setdefault(r.call_id, set()).add(r.id)
            for linkedid, ids in sorted(running.items()):
                store.add_extensions(linkedid, phones, ids=ids)

    @hookimpl
    def callrouter_stream_gap(self, gap: StreamGap) -> None:
        """Events were lost: forget who is in which bridge. A lost ``BridgeLeave`` would
        keep a departed leg in its old bridge, and a leg joining that bridge later would
        read the departed leg's recording; failing closed, legs bridged before the gap
        are not counted beside those who join after it until the reconcile's listing
        puts them back (:meth:`callrouter_channels_listed`)."""
        if len(self._bridges):
            log.info(
                "event stream gap (%s): forgetting %d bridge memberships",
                gap.reason,
                len(self._bridges),
            )
        self._bridges.clear()

    @hookimpl
    def callrouter_channels_listed(self, channels: Sequence[Event]) -> None:
        """The reconcile listed Asterisk's channels (at start, after a gap, at a takeover): put back
        who is in which bridge, if forgotten, from each channel's ``BridgeId``.

        The listing does not say what a bridge is, and a holding bridge (a parking
        lot) must never count: ``BridgeList`` says, asked in a task since the events
        wait for this hook. Events handled meanwhile win over the listing, and a
        bridge ``BridgeList`` does not name as a conversation is left out
        (:meth:`BridgeMembers.rebuild`: fail closed)."""
        if self.store is None or self._engine is None or not self._bridges.rebuild_pending:
            return
        generation = self._bridges.generation
        bridged = bridged_channels(channels)
        if self._rebuilding is not None:
            self._rebuilding.cancel()  # for an earlier listing: stale now
            self._rebuilding = None
        if not bridged:
            self._bridges.rebuild((), generation=generation)
            return
        self._rebuilding = asyncio.get_running_loop().create_task(
            self._rebuild(bridged, generation), name="recordings:bridges"
        )

    async def _rebuild(self, bridged: dict[str, str], generation: int) -> None:
        engine = self._engine
        if engine is None:
            return
        try:
            answer = await engine.ami.bridge_list()
        except Exception as exc:
            # Failing closed: the legs bridged before the gap stay uncounted.
            self._bridges.rebuild((), generation=generation)
            if not self._bridge_list_failing:
                self._bridge_list_failing = True
                hint = (
                    " (the manager user may not ask it)"
                    if isinstance(exc, AMIPrivilegeError)
                    else ""
                )
                log.warning(
                    "BridgeList failed%s: %s; legs already bridged (before an event "
                    "stream gap, or the start) are not counted beside those who join later",
                    hint,
                    exc,
                )
            return
        finally:
            if self._rebuilding is asyncio.current_task():
                self._rebuilding = None
        self._bridge_list_failing = False
        usable = conversations(answer.items, bridged.values())
        rebuilt = self._bridges.rebuild(
            ((c, b) for c, b in bridged.items() if b in usable), generation=generation
        )
        if rebuilt.restored:
            log.info(
                "bridge memberships rebuilt from Asterisk's listing: %d channels", rebuilt.restored
            )
        # Merged with the events handled meanwhile: who entered a bridge while
        # BridgeList was asked met the legs put back there (bridges.py).
        self._met([(channel, others, None) for channel, others in rebuilt.meetings])

    @hookimpl
    def callrouter_call_end(self, call: Call) -> None:
        if self.store is None:
            return
        # Not the files whose channel lives on in another call: their MixMonitor writes
        # on (an attended transfer moved it there) and ends with that channel.
        rows = [r for r in self.store.recording(call.linkedid) if not self._lives_on(r, call)]
        if rows:
            # Legs still up when the tracker ended the call (a gap, its 4 hours) were
            # present; every other leg told its Hangup (callrouter_event).
            self.store.add_extensions(
                call.linkedid,
                live_extensions(call),
                ids=(r.id for r in rows if r.id not in self._closing),
            )
            self._close(rows)

    @hookimpl
    async def callrouter_shutdown(self) -> None:
        rebuilding = self._rebuilding
        if rebuilding is not None:
            rebuilding.cancel()
            await asyncio.gather(rebuilding, return_exceptions=True)
        tasks = [*self._closing.values(), *self._following.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        retaining = self._retaining
        if retaining is not None and not retaining.done():
            # Its thread uses the catalog: closed under it, the pass would fail half
            # done (a file deleted, its row not marked). A hung mount is not waited out.
            await asyncio.wait({retaining}, timeout=RETENTION_STOP_WAIT)
            if not retaining.done():
                log.warning(
                    "stop: retention still busy after %g s (a slow mount?); "
                    "leaving the catalog to it",
                    RETENTION_STOP_WAIT,
                )
                self.store = None
                return
        if self.store is not None:
            self.store.close()
            self.store = None

    def sweep(self) -> None:
        """Close what no event closed: calls that ended while we were away."""
        if self.store is None or self._engine is None:
            return
        calls = self._engine.calls
        now = time.time()
        self._close(
            [
                r
                for r in self.store.recording()
                if calls.get(r.call_id) is None
                and now - r.started_at > SWEEP_EVERY
                and not self._lives_on(r)
            ]
        )

    async def stop_overlong(self) -> list[str]:
        """Stop callrouter's MixMonitors (by their ids, never another: see
        :func:`~router.recordings.mixmonitor.stop_recording`) writing a file longer
        than ``max_duration``; the channels stopped.

        The caller decides how long a call lasts (on hold, in a queue, in an IVR
        loop), and a file is counted against ``max_bytes`` and ``hard_cap_bytes``
        only once closed: without a bound, a few calls kept open for a day would
        fill the disk. The call goes on; its file closes on ``MixMonitorStop`` and
        is delivered as any other. A stop that fails (Asterisk down, a passing
        refusal) is tried again at the next sweeps, up to :data:`OVERLONG_TRIES`
        times a file: asked once, a file after one lost answer went on unbounded.
        """
        if self.store is None or self.settings is None or self._engine is None:
            return []
        limit = self.settings.max_duration
        if not limit:
            return []
        now = time.time()
        store = self.store
        rows = await asyncio.to_thread(store.recording)
        live = {r.id for r in rows}
        self._stopped &= live
        self._stop_failures = {k: v for k, v in self._stop_failures.items() if k in live}
        # Whether or not the call is still tracked: the tracker drops a call after
        # 4 hours (its Hangup taken as lost), and a row still ``recording`` then is a
        # MixMonitor still writing (closer.py), which max_duration (up to 7 days)
        # must stop all the same.
        overlong: dict[str, list[Recording]] = {}
        for r in rows:
            if now - r.started_at > limit and r.id not in self._stopped:
                overlong.setdefault(r.channel, []).append(r)
        stopped: list[str] = []
        engine = self._engine
        for channel, found in sorted(overlong.items()):
            self._stopped.update(r.id for r in found)
            done: set[int] = set()
            try:
                await stop_recording(
                    lambda name, headers: engine.ami.send(name, headers),
                    store,
                    found[0].call_id,
                    found,
                    done=done,
                )
            except Exception as exc:
                self._stop_failed([r for r in found if r.id not in done], channel, exc)
                continue
            log.warning("recording on %s stopped: longer than max_duration (%g s)", channel, limit)
            stopped.append(channel)
        return stopped

    def _stop_failed(self, rows: list[Recording], channel: str, exc: Exception) -> None:
        """Leave ``rows`` to the next sweep, unless they were tried often enough."""
        tries = 0
        for row in rows:
            tries = self._stop_failures.get(row.id, 0) + 1
            self._stop_failures[row.id] = tries
            if tries < OVERLONG_TRIES:
                self._stopped.discard(row.id)
        if tries < OVERLONG_TRIES:
            log.warning(
                "recording on %s: StopMixMonitor after max_duration failed (%s); "
                "trying again in %g s",
                channel,
                exc,
                SWEEP_EVERY,
            )
        else:
            log.error(
                "recording on %s: StopMixMonitor after max_duration failed %d times (%s); "
                "not tried again: stop it by hand (callrouter ami StopMixMonitor ...)",
                channel,
                tries,
                exc,
            )

    async def retention(self) -> None:
        """One pass of retention, in a thread: it deletes and moves files, on a mount
        (NFS, SSHFS) that may answer slowly or not at all, while the event loop routes."""
        if self.store is not None and self.settings is not None:
            retaining = asyncio.ensure_future(
                asyncio.to_thread(apply_retention, self.store, self.settings)
            )
            self._retaining = retaining
            await asyncio.shield(retaining)

    def _close(
        self,
        rows: list[Recording],
        *,
        still_recording: Callable[[], bool] | None = None,
        unsure: bool = False,
        hung_up: tuple[float, float] | None = None,
    ) -> None:
        """Close ``rows``' files. ``hung_up``: their channel's Hangup came then
        (``time.time()``, ``time.monotonic()``): a file still written after it is
        looked for on another channel first (:meth:`_went_on`)."""
        assert self.settings is not None
        assert self.store is not None
        for row in rows:
            if row.id in self._closing:
                continue
            task = asyncio.get_running_loop().create_task(
                self._close_one(row, still_recording, unsure, hung_up),
                name=f"recordings:close:{row.id}",
            )
            self._closing[row.id] = task
            task.add_done_callback(self._closed_one)

    async def _close_one(
        self,
        row: Recording,
        still_recording: Callable[[], bool] | None,
        unsure: bool,
        hung_up: tuple[float, float] | None,
    ) -> Recording | None:
        settings, store = self.settings, self.store
        assert settings is not None
        assert store is not None
        closing = asyncio.ensure_future(
            close_recording(
                row,
                settings,
                store,
                still_recording=still_recording,
                unsure=unsure,
                clock=self.close_clock,
            )
        )
        try:
            if hung_up is not None:
                # The close waits for Asterisk to finish the file meanwhile; one
                # still written seconds after the hang-up may be written elsewhere.
                done, _ = await asyncio.wait({closing}, timeout=FOLLOW_AFTER)
                if not done and await self._went_on_safely(row, hung_up):
                    closing.cancel()  # still waiting for the file: nothing done yet
                    await asyncio.gather(closing, return_exceptions=True)
                    return None
            return await closing
        except asyncio.CancelledError:
            closing.cancel()
            raise

    def _closed_one(self, task: asyncio.Task[Recording | None]) -> None:
        for rid, known in list(self._closing.items()):
            if known is task:
                del self._closing[rid]

    async def closed(self) -> None:
        """Wait for every file being closed now (tests)."""
        await asyncio.gather(*list(self._closing.values()), return_exceptions=True)


def _channel_up(call: Call, channel: str) -> bool:
    """Is ``channel`` of ``call`` still up (the call going on, the channel not hung up)?"""
    if call.ended is not None:
        return False
    known = call.channels.get(channel)
    return known is not None and not known.hung_up


def make_plugin() -> Recorder:
    return Recorder()
