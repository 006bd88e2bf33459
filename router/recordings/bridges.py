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
Failing closed, a leg already bridged before the gap is no longer seen beside those
who join after it (docs/recordings.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["MAX_CHANNELS", "BridgeMembers", "is_holding"]

#: Channels remembered at most (the live channels of a busy PBX, with room to spare).
MAX_CHANNELS: Final = 50_000


def is_holding(technology: str, bridge_type: str) -> bool:
    """Is a bridge (``BridgeEnter``'s ``BridgeTechnology``, ``BridgeType``) one whose
    channels do not hear each other: a parking lot, ``BridgeWait``?"""
    return technology.strip().lower() == "holding_bridge" or bridge_type.strip().lower() in (
        "parking",
        "holding",
    )


class BridgeMembers:
    """Channel -> the bridge it is in, and back."""

    def __init__(self, max_channels: int = MAX_CHANNELS) -> None:
        self._bridge_of: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}
        self._max = max_channels

    def __len__(self) -> int:
        return len(self._bridge_of)

    def enter(self, channel: str, bridge: str) -> frozenset[str]:
        """``channel`` entered ``bridge``; the others in it now."""
        self.leave(channel)
        while len(self._bridge_of) >= self._max:
            self.leave(next(iter(self._bridge_of)))
        self._bridge_of[channel] = bridge
        members = self._members.setdefault(bridge, set())
        others = frozenset(members)
        members.add(channel)
        return others

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

    def leave(self, channel: str) -> None:
        """``channel`` left its bridge (or hung up)."""
        bridge = self._bridge_of.pop(channel, None)
        if bridge is None:
            return
        members = self._members.get(bridge)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._members[bridge]
