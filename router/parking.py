"""Whether a channel that asked to be routed has stepped on into its wait.

Asterisk can lose a Redirect that lands while the channel steps from one
dialplan application to the next: ``__ast_pbx_run`` (main/pbx.c) moves to the
next priority with ``ast_channel_priority_set(c, ast_channel_priority(c) + 1)``
without the channel lock, after checking for a hang-up, while AMI Redirect
(``ast_async_goto``) sets context, extension and priority under it. A Redirect
between the two leaves the channel at the target's context and extension with
the old priority plus one: a call that skips steps, or (where that priority
does not exist) one hung up as "Auto fallthrough". Still so in Asterisk 22.10
and on master (docs/asterisk.md, "A Redirect Asterisk can lose").

The routing request is the step right before ``Wait``; that window is open
from the moment ``UserEvent`` publishes the request until the channel is at
the next priority (and again after every step that returns at once, should
a dialplan have some between the request and ``Wait``). Asterisk publishes a
step's ``Newexten`` only after the write, so the router sends its Redirect
once it has read the requesting channel's ``Newexten`` for ``Wait``: from then
on a Redirect interrupts ``Wait``, and ``__ast_pbx_run`` takes that path under
its ``AST_SOFTHANGUP_ASYNCGOTO`` check, never the racy one.

``MusicOnHold`` and ``WaitExten`` (router/dialplan.py ``PARK_APPLICATIONS``)
are waits as ``Wait`` is: each blocks for the whole wait, and a Redirect
interrupts it the same safe way.

The event is published microseconds after the request and nearly always
arrives with it or before the decision is ready, so the wait is usually none
(``callrouter_park_waits_total``). It is bounded: a channel whose ``Newexten`` does
not come (Asterisk filters it away: an old ``eventfilter`` line; or the step
after the request is not ``Wait``) is redirected after :data:`PARK_TIMEOUT`
anyway, with a warning; after :data:`BLIND_AFTER` such misses in a row and no
arrival, the router stops waiting until one arrives again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from router.ami.message import Event, sent_by_channel
from router.ami.protocol import raw_header
from router.dialplan import PARK_APPLICATIONS

__all__ = ["BLIND_AFTER", "PARK_TIMEOUT", "ParkOutcome", "Parking"]

log = logging.getLogger("router.parking")

#: How long a decided call waits for its channel to be seen in Wait.
PARK_TIMEOUT = 0.25
#: Misses in a row (and no arrival) after which the router stops waiting.
BLIND_AFTER = 3
#: What :meth:`Parking.reached` found (``callrouter_park_waits_total``).
ParkOutcome = Literal["at-once", "waited", "missed", "blind", "unwatched"]
#: Requesting channels remembered at most (oldest forgotten first).
_KEPT = 4096


class _Spot:
    """Where one channel sent its request, and whether it has moved on."""

    __slots__ = ("context", "exten", "priority", "reached", "waiter")

    def __init__(self, context: str | None, exten: str | None, priority: int | None) -> None:
        self.context = context
        self.exten = exten
        self.priority = priority
        self.reached = False
        self.waiter: asyncio.Future[bool] | None = None

    def same(self, context: str | None, exten: str | None, priority: int | None) -> bool:
        return (self.context, self.exten, self.priority) == (context, exten, priority)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class Parking:
    """Requesting channels and whether each has been seen in Wait.

    Fed twice, both idempotent: :meth:`scan` looks ahead through a batch of
    events before the engine handles them one by one (so a request routed in
    the batch already knows about its channel's ``Newexten`` later in it), and
    the engine's own handling calls :meth:`requested` and :meth:`stepped`.
    :meth:`note_raw` is the parser's (the engine's event narrowing): a
    request's raw text, so that its channel's ``Wait`` step in the same read
    is parsed rather than dropped; :meth:`peek_raw` the TCP client's.
    """

    def __init__(self, request_event: str, *, timeout: float = PARK_TIMEOUT) -> None:
        self.request_event = request_event
        self.timeout = timeout
        self._spots: OrderedDict[str, _Spot] = OrderedDict()
        #: How many of them are not yet seen in Wait (the narrowing's question).
        self._open = 0
        #: Misses since the last arrival; at BLIND_AFTER the router stops waiting.
        self._misses = 0

    @property
    def blind(self) -> bool:
        """Asterisk has not sent the step after a request lately: do not wait."""
        return self._misses >= BLIND_AFTER

    @property
    def watching(self) -> bool:
        """Whether any requesting channel is not yet seen in Wait."""
        return self._open > 0

    def expects(self, channel: str) -> bool:
        """Whether ``channel``'s ``Newexten`` is wanted (event narrowing)."""
        spot = self._spots.get(channel)
        return spot is not None and not spot.reached

    # -- feeding -------------------------------------------------------------------

    def _spot(
        self, channel: str, context: str | None, exten: str | None, priority: int | None
    ) -> None:
        spot = self._spots.get(channel)
        if spot is not None and spot.same(context, exten, priority):
            return  # the same request, seen again (raw, then scanned, then handled)
        if spot is not None:
            self._drop(spot)  # a new request replaces one nobody routes now
        self._spots[channel] = _Spot(context, exten, priority)
        self._spots.move_to_end(channel)
        self._open += 1
        if len(self._spots) > _KEPT:
            _, oldest = self._spots.popitem(last=False)
            self._drop(oldest)

    def _drop(self, spot: _Spot) -> None:
        """A spot is forgotten (or replaced): its wait, if any, ends."""
        if not spot.reached:
            self._open -= 1
        if spot.waiter is not None and not spot.waiter.done():
            spot.waiter.set_result(False)

    def note_raw(self, block: str) -> bool:
        """A ``UserEvent``'s raw text (a :data:`~router.ami.protocol.Narrower`
        for it): a request's channel is watched from here on. Always True:
        the event itself is parsed as ever."""
        if raw_header(block, "UserEvent") == self.request_event:
            channel = raw_header(block, "Channel")
            if channel and _raw_from_channel(block):
                self._spot(
                    channel,
                    raw_header(block, "Context"),
                    raw_header(block, "Exten"),
                    _int(raw_header(block, "Priority")),
                )
        return True

    def peek_raw(self, request: str, step: str) -> None:
        """A request's raw text and its channel's ``Wait`` step read with it,
        both not yet parsed (the TCP client's look ahead, router.ami.tcp
        ``set_urgent``): the request is then decided and acted on before the
        events between the two are parsed."""
        self.note_raw(request)
        self.stepped_raw(step)

    def requested(self, event: Event) -> None:
        """A routing request: its channel is watched until it moves on."""
        channel = event.get("Channel")
        if channel:
            self._spot(
                channel, event.get("Context"), event.get("Exten"), _int(event.get("Priority"))
            )

    def stepped(self, event: Event) -> None:
        """A ``Newexten``: its channel is in ``Wait`` when it is the ``Wait``
        step after its request."""
        spot = self._spots.get(event.get("Channel") or "")
        if spot is not None and not spot.reached:
            self._step(
                spot,
                event.get("Application"),
                event.get("Context"),
                event.get("Exten"),
                event.get("Priority"),
            )

    def stepped_raw(self, block: str) -> None:
        """:meth:`stepped` from a ``Newexten``'s raw text (the engine's
        narrowing): the step is known as soon as its bytes are read, and the
        channel's later steps in the same read are then dropped unparsed."""
        spot = self._spots.get(raw_header(block, "Channel") or "")
        if spot is not None and not spot.reached:
            self._step(
                spot,
                raw_header(block, "Application"),
                raw_header(block, "Context"),
                raw_header(block, "Exten"),
                raw_header(block, "Priority"),
            )

    def _step(
        self,
        spot: _Spot,
        application: str | None,
        context: str | None,
        exten: str | None,
        priority_text: str | None,
    ) -> None:
        # Wait itself, not just any later step: a step that returns at once
        # (Ringing, Set, NoOp: a dialplan pasted before the request moved to
        # the end) opens the same window again when it ends.
        if application not in PARK_APPLICATIONS:
            return
        if (context, exten) == (spot.context, spot.exten) and spot.priority is not None:
            priority = _int(priority_text)
            if priority is None or priority <= spot.priority:
                return  # a Wait before the request, read late (a backlog's reordering)
        spot.reached = True
        self._open -= 1
        self._misses = 0
        if spot.waiter is not None and not spot.waiter.done():
            spot.waiter.set_result(True)

    def scan(self, items: Sequence[object]) -> None:
        """Look ahead through a batch (events and stream gaps): its requests,
        then their channels' steps after them."""
        if len(items) < 2:
            return  # the engine's handling of the one event notes the same
        # Steps matter only while a request waits for one (most reads of a busy
        # PBX hold none of the kind).
        watching = self._open > 0
        for item in items:
            if type(item) is not Event:
                continue
            name = item.name
            if name == "Newexten":
                if watching:
                    self.stepped(item)
            elif (
                name == "UserEvent"
                and item.get("UserEvent") == self.request_event
                and sent_by_channel(item)
            ):
                self.requested(item)
                watching = True

    def forget(self, channel: str) -> None:
        """The channel hung up."""
        spot = self._spots.pop(channel, None)
        if spot is not None:
            self._drop(spot)

    # -- waiting -------------------------------------------------------------------

    async def reached(self, channel: str, deadline: float) -> ParkOutcome:
        """Wait (bounded by :attr:`timeout` and by ``deadline``, a
        ``time.monotonic()`` value) until ``channel`` is seen in Wait.

        ``at-once``: it was; ``waited``: it was after a wait; ``unwatched``:
        nothing is known of it (a request the router made up itself: reconcile
        finds such channels already in ``Wait``), or it hung up or asked again
        meanwhile; ``missed``: it did not show up in time; ``blind``: not
        waited for, as the last calls' steps did not show up either. The
        caller acts in every case unless its deadline has passed.
        """
        spot = self._spots.get(channel)
        if spot is None:
            return "unwatched"
        if spot.reached:
            return "at-once"
        if self.blind:
            return "blind"
        loop = asyncio.get_running_loop()
        waiter = spot.waiter
        if waiter is None or waiter.done():
            waiter = spot.waiter = loop.create_future()
        # A bare timer, as the Redirect confirmations use (router/executor.py):
        # no timeout scope on the routing task, which may be in its eager start.
        delay = max(0.0, min(self.timeout, deadline - time.monotonic()))
        timer = loop.call_later(delay, _settle, waiter)
        try:
            arrived = await waiter
        finally:
            timer.cancel()
        if arrived:
            return "waited"
        if self._spots.get(channel) is not spot:
            return "unwatched"
        self._misses += 1
        if self._misses == BLIND_AFTER:
            log.warning(
                "%d calls in a row were not seen past their request within %.0f ms "
                "(no Newexten of the step after it): Redirects are sent without "
                "waiting for it until one is. Asterisk can lose a Redirect that "
                "lands between two steps; check that the step after the request is "
                "Wait and that its Newexten reaches callrouter (read = dialplan for "
                "the manager user, the eventfilter lines of `callrouter check "
                "--manager-conf`, and no Newexten in [general] disabledevents of "
                "manager.conf; docs/asterisk.md)",
                BLIND_AFTER,
                self.timeout * 1000,
            )
        else:
            log.info(
                "%s: not seen in Wait within %.0f ms; redirecting anyway",
                channel,
                delay * 1000,
            )
        return "missed"


def _raw_from_channel(block: str) -> bool:
    """:func:`~router.ami.message.sent_by_channel` on a narrower's raw text: a
    channel's dialplan sent the ``UserEvent`` (its ``Channel`` line comes
    first). The AMI action ``UserEvent`` writes its key first and then any
    ``Channel`` its sender chose: taken as a request, it replaced the named
    channel's (another call's) and ended that call's wait for its ``Wait``
    step, so its Redirect went out in the window Asterisk can lose it in."""
    channel = block.find("\nChannel: ")
    return 0 <= channel < block.find("\nUserEvent: ")


def _settle(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
