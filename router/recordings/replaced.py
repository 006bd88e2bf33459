"""A recorded channel replaced by a SIP ``INVITE`` with ``Replaces``: where its
MixMonitor went.

For a channel in no bridge (in an application: ``Wait``, a queue, an IVR)
Asterisk 22's ``res_pjsip_refer`` answers such an INVITE with
``ast_channel_move(replaced, new)``, a masquerade: the replaced channel goes on
in its application, with its MixMonitor, under the new INVITE's channel name,
Uniqueid and Linkedid. AMI tells no ``Rename`` and no event naming both
channels (measured on Asterisk 22.10: the new channel's ``Newchannel``,
``Newstate`` ``Up``, ``Unhold`` and a ``Newexten`` at the replaced channel's
place in the dialplan, then the old name's ``Hangup``, no ``MixMonitorStop``).

So the recorder asks instead, only when a recorded channel hung up and its file
is not complete seconds later (a MixMonitor ends with its channel and closes
the file at once; after the move, Asterisk 22.10 wrote nothing more into it
until that MixMonitor ended, though the new channel's sound flowed: measured):
the channels that appeared just before that hang-up and are still up, newest
first and few, are asked for ``MIXMONITOR_FILENAME``, the variable MixMonitor
sets on its channel (and that moves with it). A channel is taken only when the value is
exactly one of the files callrouter had Asterisk write on the old channel: a
file name holds the call's id and the part, so no other channel has it. This
is the plain variable, never the ``MIXMONITOR(id,filename)`` function (a
``Getvar`` of it crashed Asterisk 22.10 on a MixMonitor writing only ``r()``/
``t()`` files, and callrouter refuses to send it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from router.errors import AMIError
from router.recordings.masquerade import CHANNEL

if TYPE_CHECKING:  # pragma: no cover
    from router.calls import Call

__all__ = ["FOLLOW_AFTER", "arrivals", "find_moved"]

log = logging.getLogger("router.recordings")

#: Seconds after a recorded channel's Hangup its file may take to complete before
#: the MixMonitor is looked for elsewhere (Asterisk closes it within milliseconds
#: of the hang-up; a slow disk may take longer, and then the look finds nothing).
FOLLOW_AFTER = 4.5
#: Channels of calls first seen up to this many seconds before the hang-up are
#: candidates (the replacing INVITE's channel comes milliseconds before it).
WINDOW = 10.0
#: Candidates asked at most, newest first: a busy PBX starts many calls a second.
CANDIDATES = 8
#: Seconds each Getvar may take.
ASK_TIMEOUT = 2.0

Send = Callable[[str, dict[str, str]], Awaitable[Any]]


def arrivals(calls: Iterable[Call], old: str, hung_up: float) -> list[str]:
    """The live channels of the calls first seen in the :data:`WINDOW` before
    ``hung_up`` (the tracker's monotonic clock) or after it, newest call first,
    at most :data:`CANDIDATES`; ``old`` and names no channel has are left out."""
    recent = sorted(
        (c for c in calls if c.ended is None and c.started >= hung_up - WINDOW),
        key=lambda c: c.started,
        reverse=True,
    )
    names: list[str] = []
    for call in recent:
        for channel in call.channels.values():
            name = channel.name
            if (
                name != old
                and not channel.hung_up
                and name not in names
                and CHANNEL.fullmatch(name) is not None
            ):
                names.append(name)
    return names[:CANDIDATES]


async def find_moved(send: Send, candidates: Iterable[str], files: Collection[str]) -> str | None:
    """The first of ``candidates`` whose ``MIXMONITOR_FILENAME`` is one of
    ``files`` (the paths Asterisk was given), or None. A channel gone, a
    refusal, an answer late: that candidate is passed over."""
    for name in candidates:
        try:
            answer = await asyncio.wait_for(
                send("Getvar", {"Channel": name, "Variable": "MIXMONITOR_FILENAME"}), ASK_TIMEOUT
            )
        except (AMIError, TimeoutError) as exc:
            log.debug("recordings: MIXMONITOR_FILENAME of %s not read: %s", name, exc)
            continue
        value = answer.response.get("Value")
        if isinstance(value, str) and value in files:
            return name
    return None
