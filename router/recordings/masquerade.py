"""A recorded channel that an attended transfer renames: which name it takes.

Asterisk 22 completes an attended transfer whose one side talks in a two-party
bridge and whose other side is in an application (a queue, an IVR, ``Wait``)
by a masquerade (``main/bridge.c``, ``ast_bridge_transfer_attended``): the
party bridged with the transferer (the transferee) is moved into the
unbridged channel's place, ``ast_channel_move(unbridged, transferee)``. The
unbridged channel's object goes on running its application, and with it the
MixMonitors hooked on it (``channel_do_masquerade`` moves audiohooks only
towards it), but it takes the transferee's name, uniqueid and Linkedid, while
its old name is reported hung up. No ``Rename`` event tells it: only the
``AttendedTransfer`` event with ``DestType: App``, sent before that
``Hangup`` (seen on the sandbox with its phones: a MixMonitor on
``PJSIP/101-00000002`` went on as ``PJSIP/102-00000000``, ``StopMixMonitor``
on the old name answered ``No such channel``).

Which fields hold the names, as the sandbox showed for both directions: when
the original call is the bridged one (``OrigBridgeUniqueid``), the unbridged
channel is ``SecondTransfererChannel`` and the new name ``TransfereeChannel``;
when the consultation call is (``SecondBridgeUniqueid``), the unbridged one is
``OrigTransfererChannel`` and the new name ``TransferTargetChannel``.

Not every ``DestType: App`` is that masquerade. A bridge of more than two
channels, or one that transfers only as a whole (an ARI bridge, a conference),
gets a Local channel instead, masqueraded into the unbridged channel, which
keeps its name: only a ``basic`` bridge of two channels is followed. Every value
read from the event is checked (:data:`CHANNEL`) before it names anything.

A SIP ``INVITE`` with ``Replaces`` for a channel in no bridge is the same kind of
move (``res_pjsip_refer``: ``ast_channel_move(replaced, new)``) with no event
naming both channels: :mod:`router.recordings.replaced` finds the new name by
asking.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, NamedTuple

from router.ami.numbers import ascii_int

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.message import Event

__all__ = ["CHANNEL", "Rename", "renamed_by_transfer"]

#: A channel name that may be followed: a technology, a slash and printable ASCII
#: without the characters a channel list or a dialplan argument splits at, nor the
#: ``<ZOMBIE>`` mark of a masquerade's leftover. Anything else is not followed.
CHANNEL: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}/[A-Za-z0-9_.@;:+#*=~!$%/-]{1,200}")


class Rename(NamedTuple):
    """The unbridged channel's name before the transfer, and the name it goes on under."""

    old: str
    new: str


def renamed_by_transfer(event: Event) -> Rename | None:
    """The channel an ``AttendedTransfer`` renames by a masquerade, if it does (module doc)."""
    if event.get("Result") != "Success" or event.get("DestType") != "App":
        return None
    orig = bool(event.get("OrigBridgeUniqueid"))
    second = bool(event.get("SecondBridgeUniqueid"))
    if orig == second:
        return None
    bridged, old, new = (
        ("Orig", "SecondTransfererChannel", "TransfereeChannel")
        if orig
        else ("Second", "OrigTransfererChannel", "TransferTargetChannel")
    )
    if event.get(f"{bridged}BridgeType") != "basic":
        return None
    if ascii_int(event.get(f"{bridged}BridgeNumChannels")) != 2:
        return None
    before, after = event.get(old) or "", event.get(new) or ""
    if before == after or not (CHANNEL.fullmatch(before) and CHANNEL.fullmatch(after)):
        return None
    return Rename(before, after)
