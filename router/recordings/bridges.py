"""Which channels share a bridge now, from ``BridgeEnter`` and ``BridgeLeave``.

The recorder counts a phone among a recording's readers when its leg was on the
call while it was recorded. The call tracker groups legs by Linkedid, and
Asterisk gives every channel of a bridge the oldest Linkedid among them: a leg
bridged in from an older call (the ``Bridge`` action, a transfer of a call the
agent held) keeps its own Linkedid, and the recorded call's legs take it, only
as each next sends an event. So the Linkedid alone does not say, when that leg
enters, that it joined the recorded conversation; the bridge it entered does.

A holding bridge is no conversation: a parking lot is one bridge for every call
parked in it, and ``BridgeWait`` one for every channel waiting there; they hear
music or an announcement, not each other, and anyone may dial the lot. Entering
one is leaving the conversation (:func:`is_holding`), else a phone parked
beside a recorded caller would read the recording.

Sans-I/O, bounded: a channel is in one bridge at a time (entering another
moves it), ``Hangup`` and ``BridgeLeave`` drop it, and past :data:`MAX_CHANNELS`
the oldest entries go. A stream gap forgets every membership (:meth:`BridgeMembers.clear`):
a ``BridgeLeave`` lost in it would leave a departed leg in its old bridge, and whoever
joined that bridge later would be counted a reader of the departed leg's recording.

The memberships are then rebuilt from what Asterisk says now
(:meth:`BridgeMembers.rebuild`: the reconcile's channel listing, each channel's
``BridgeId``, kept only for bridges ``BridgeList`` names as no holding bridge),
so a leg bridged before the gap is seen again beside those who join after it.
The listing is older than every event handled after the gap: a channel such an
event named (entered, left, hung up) keeps what the event said, and a rebuild
meant for an earlier gap, or one that comes after its own, changes nothing.
The rebuild is a merge, not a replacement: a channel that entered a bridge
while ``BridgeList`` was asked found none of the legs the rebuild puts back
there, though they were in it (no event since moved them), so the rebuild
answers those meetings (:attr:`Rebuilt.meetings`) as a ``BridgeEnter`` would
have, and the legs put back meet each other, as a recording started meanwhile
(whose readers :meth:`BridgeMembers.beside` answered without them) must hear.
Until the rebuild, and for what it cannot vouch for, it fails closed: a leg not
known to be bridged is not counted beside anyone (docs/recordings.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "MAX_BRIDGE_ID",
    "MAX_CHANNELS",
    "BridgeMembers",
    "Rebuilt",
    "bridged_channels",
    "conversations",
    "is_holding",
]

#: Channels remembered at most (the live channels of a busy PBX, with room to spare).
MAX_CHANNELS: Final = 50_000
#: The longest bridge id kept (``BridgeUniqueid``, ``BridgeId``): Asterisk makes
#: a UUID, 36 characters; as long as a ``Uniqueid`` may be
#: (``router.calls.IDENTITY_LIMITS``). A longer one is no bridge Asterisk names
#: (a hostile AMI peer's 64 KiB id for each of :data:`MAX_CHANNELS` channels
#: held about 3 GB): the channel is taken to be in no bridge known.
MAX_BRIDGE_ID: Final = 151


def is_holding(technology: str, bridge_type: str) -> bool:
    """Is a bridge (``BridgeEnter``'s ``BridgeTechnology``, ``BridgeType``) one whose
    channels do not hear each other: a parking lot, ``BridgeWait``?"""
    return technology.strip().lower() == "holding_bridge" or bridge_type.strip().lower() in (
        "parking",
        "holding",
    )


class _Fields(Protocol):
    """An AMI event's fields (:class:`router.ami.message.Event`), read by name."""

    def get(self, key: str, default: str | None = None) -> str | None: ...


def bridged_channels(listing: Iterable[_Fields], limit: int = MAX_CHANNELS) -> dict[str, str]:
    """Channel -> ``BridgeId`` from ``CoreShowChannel`` items (channels in no bridge
    left out), at most ``limit``. Asterisk's text is only ever a key here."""
    bridged: dict[str, str] = {}
    for item in listing:
        if len(bridged) >= limit:
            break
        channel, bridge = item.get("Channel") or "", item.get("BridgeId") or ""
        if channel and bridge and len(bridge) <= MAX_BRIDGE_ID:
            bridged[channel] = bridge
    return bridged


def conversations(bridges: Iterable[_Fields], among: Iterable[str]) -> set[str]:
    """The bridges of ``among`` that ``BridgeListItem`` items name as no holding
    bridge: a bridge not listed, or listed without its type, is not one."""
    wanted = set(among)
    found: set[str] = set()
    for item in bridges:
        bridge = item.get("BridgeUniqueid") or ""
        kind, technology = item.get("BridgeType"), item.get("BridgeTechnology")
        if bridge not in wanted or not kind or not technology:
            continue
        if not is_holding(technology, kind):
            found.add(bridge)
    return found


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """What :meth:`BridgeMembers.rebuild` put back, and who met whom only through it."""

    #: Channels put back in their bridge.
    restored: int = 0
    #: Each (channel, others): ``channel`` shares, or shared since the clear, a
    #: bridge with ``others``, legs put back there, as a ``BridgeEnter`` of
    #: ``channel`` among ``others`` would say; whoever records either counts both.
    meetings: tuple[tuple[str, frozenset[str]], ...] = ()


class BridgeMembers:
    """Channel -> the bridge it is in, and back."""

    def __init__(self, max_channels: int = MAX_CHANNELS) -> None:
        self._bridge_of: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}
        self._max = max_channels
        #: Bumped by every :meth:`clear`: a rebuild names the one it is for.
        self._generation = 0
        #: Channels an event named since the last :meth:`clear`, while a rebuild
        #: is still to come (None: none is, nothing to remember).
        self._since_clear: set[str] | None = set()
        #: Bridge -> the channels that entered it since that clear (same lifetime),
        #: and how many such entries: a rebuild pairs them with the legs it puts back.
        self._entered: dict[str, set[str]] = {}
        self._entries = 0

    def __len__(self) -> int:
        return len(self._bridge_of)

    @property
    def generation(self) -> int:
        """Which :meth:`clear` the memberships follow (for :meth:`rebuild`)."""
        return self._generation

    @property
    def rebuild_pending(self) -> bool:
        """Were the memberships forgotten (or never known: a fresh start) and not yet rebuilt?"""
        return self._since_clear is not None

    def enter(self, channel: str, bridge: str) -> frozenset[str]:
        """``channel`` entered ``bridge``; the others in it now. A ``bridge``
        longer than :data:`MAX_BRIDGE_ID` is none known: ``channel`` left its
        own, and meets nobody."""
        if len(bridge) > MAX_BRIDGE_ID:
            self.leave(channel)
            return frozenset()
        self._heard(channel, bridge)
        return self._put(channel, bridge)

    def beside(self, channels: Iterable[str]) -> set[str]:
        """The channels sharing a bridge with any of ``channels`` (those not included)."""
        wanted = set(channels)
        found: set[str] = set()
        for channel in wanted:
            bridge = self._bridge_of.get(channel)
            if bridge is not None:
                found |= self._members.get(bridge, set())
        return found - wanted

    def clear(self) -> None:
        """Forget every membership (events were lost: who is where is unknown)."""
        self._bridge_of.clear()
        self._members.clear()
        self._generation += 1
        self._since_clear = set()
        self._entered, self._entries = {}, 0

    def leave(self, channel: str) -> None:
        """``channel`` left its bridge (or hung up)."""
        self._heard(channel)
        self._drop(channel)

    def rebuild(self, bridged: Iterable[tuple[str, str]], *, generation: int) -> Rebuilt:
        """Put back who is in which bridge from a listing taken after the
        :meth:`clear` numbered ``generation``: pairs of (channel, bridge), holding
        bridges and bridges not vouched for already left out by the caller.

        Only once per clear, and only for that clear: a later one makes this
        listing stale. A channel an event named since the clear is left as the
        event put it (the event is newer). A channel that entered a bridge since
        the clear met there the legs put back in it (the listing is older than its
        entry, and no event moved them since): :attr:`Rebuilt.meetings` says so,
        whether it is still there or not, as do the legs put back in one bridge.
        """
        heard, entered = self._since_clear, self._entered
        if heard is None or generation != self._generation:
            return Rebuilt()
        self._since_clear = None
        self._entered, self._entries = {}, 0
        put: dict[str, set[str]] = {}
        for channel, bridge in bridged:
            if (
                channel
                and bridge
                and len(bridge) <= MAX_BRIDGE_ID
                and channel not in heard
                and channel not in self._bridge_of
            ):
                self._put(channel, bridge)
                put.setdefault(bridge, set()).add(channel)
        meetings: list[tuple[str, frozenset[str]]] = []
        for bridge, channels in sorted(put.items()):
            # Those the bound evicted meanwhile are no longer known to be there.
            back = frozenset(c for c in channels if self._bridge_of.get(c) == bridge)
            if len(back) > 1:
                first = min(back)
                meetings.append((first, back - {first}))
            if back:
                meetings.extend((c, back) for c in sorted(entered.get(bridge, ())))
        return Rebuilt(sum(len(c) for c in put.values()), tuple(meetings))

    def _heard(self, channel: str, entered: str = "") -> None:
        """An event named ``channel`` (which ``entered`` that bridge, if given): a
        rebuild to come must leave it alone, and pair it with the legs it puts back
        in that bridge."""
        heard = self._since_clear
        if heard is None:
            return
        if len(heard) >= self._max or self._entries >= self._max:
            # Too many to keep track of: give the rebuild up (fail closed) rather
            # than let an older listing undo a newer event.
            self._since_clear = None
            self._entered, self._entries = {}, 0
            return
        heard.add(channel)
        if entered:
            joined = self._entered.setdefault(entered, set())
            if channel not in joined:
                joined.add(channel)
                self._entries += 1

    def _put(self, channel: str, bridge: str) -> frozenset[str]:
        self._drop(channel)
        while len(self._bridge_of) >= self._max:
            self._drop(next(iter(self._bridge_of)))
        self._bridge_of[channel] = bridge
        members = self._members.setdefault(bridge, set())
        others = frozenset(members)
        members.add(channel)
        return others

    def _drop(self, channel: str) -> None:
        bridge = self._bridge_of.pop(channel, None)
        if bridge is None:
            return
        members = self._members.get(bridge)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._members[bridge]
