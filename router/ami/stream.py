"""Asterisk's events as an async iterator, over one WaitEvent long-poll loop.

AJAM has no push: events queue per HTTP manager session and ``WaitEvent``
fetches them. This module runs exactly one such loop per client (a second
WaitEvent on the same session kicks the first), survives Asterisk going away
with capped exponential backoff, and, because events queued for a lost
session are gone for good, tells its consumer so with a :class:`StreamGap`
marker. Consumers then reconcile (``CoreShowChannels``) instead of assuming
nothing happened.

Subscriptions are globs on the event name, as in panoramisk::

    stream = EventStream(client)

    @stream.on("Queue*")
    async def queue_event(event): ...

    async for item in stream:              # Event or StreamGap
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from router import eager
from router.ami.message import Event
from router.errors import AMIAuthenticationError, AMIError, AMIEventsDropped, AMIProtocolError
from router.supervise import Throttle

__all__ = ["Backoff", "EventHandler", "EventStream", "StreamGap"]

log = logging.getLogger("router.ami.stream")

EventHandler = Callable[[Event], Awaitable[None] | None]


class _Poller(Protocol):
    """What the stream needs from a client; :class:`router.ami.client.AJAMClient` fits."""

    @property
    def session_generation(self) -> int: ...

    async def wait_event(self, timeout: int = 20) -> list[Event]: ...


#: What :meth:`EventStream.push_to` hands a read's events to: True when it took
#: them, False to leave them queued for the poll loop (it is busy).
PushSink = Callable[[list[Event]], bool]


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Events may have been lost between ``since`` and ``resumed`` (wall clock).

    ``reason`` says why: ``reconnect`` (Asterisk unreachable, then back),
    ``session`` (the manager session was replaced, its queue with it),
    ``overflow`` (the client dropped events it read: callrouter fell behind
    and its queue was full; native TCP AMI, :class:`~router.errors.AMIEventsDropped`).
    """

    since: float
    resumed: float
    reason: str
    error: str | None = None
    #: The stream did not log this loss: Asterisk (or what answers in its
    #: place) flaps, more than :data:`FLAPS_SAID` losses in a minute, so the
    #: consumer logs the gap at DEBUG too (a peer that lets callrouter log in
    #: and closes at once cannot fill the log).
    quiet: bool = False

    @property
    def duration(self) -> float:
        return max(0.0, self.resumed - self.since)


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with jitter, so a fleet does not reconnect in step.

    Capped at 1 s: calls keep arriving while Asterisk is away, and each one
    the router does not hear of takes the default route. A 10 s cap left the
    router deaf for up to 12 s after a restarted Asterisk answered again; a
    try a second costs a refused connect (or one short poll), nothing more;
    an outage is logged once, not at each try (a bad reply included).
    """

    initial: float = 0.25
    maximum: float = 1.0
    factor: float = 2.0
    jitter: float = 0.2
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def next_delay(self) -> float:
        self._next = (
            self.initial if self._next == 0.0 else min(self.maximum, self._next * self.factor)
        )
        return self._next * (1 + random.uniform(-self.jitter, self.jitter))


#: Losses of Asterisk a minute that are each logged (the loss, the resume,
#: the consumer's gap); past them, Asterisk flaps: one line a minute says how
#: many more there were, and the backoff is not reset by a session that came
#: back only to be lost again.
FLAPS_SAID = 5
_FLAP_WINDOW = 60.0


class _Flaps:
    """When the last losses said began (monotonic), to tell a flapping peer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._began: deque[float] = deque(maxlen=FLAPS_SAID)
        #: Since when losses are not said (None: Asterisk does not flap).
        self._quiet_since: float | None = None
        #: Losses not said since the last one said.
        self.unsaid = 0

    def flapping(self) -> bool:
        """More than :data:`FLAPS_SAID` losses said in the last minute."""
        began = self._began
        return len(began) == FLAPS_SAID and self._clock() - began[0] < _FLAP_WINDOW

    def begin(self) -> bool:
        """A loss begins: whether it is said (False: quiet, Asterisk flaps)."""
        now = self._clock()
        if self.flapping():
            if self._quiet_since is None:
                self._quiet_since = now
            if now - self._quiet_since < _FLAP_WINDOW:
                self.unsaid += 1
                return False
            self._quiet_since = now  # a minute of quiet: this loss says it
        else:
            self._quiet_since = None
        self._began.append(now)
        return True

    def said(self) -> str:
        """What a loss that is said adds about the ones that were not."""
        unsaid, self.unsaid = self.unsaid, 0
        if not unsaid:
            return ""
        return f" (Asterisk flaps: {unsaid} more losses since the last one logged)"


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    pats = list(patterns)
    if not pats or "*" in pats:
        return None
    return re.compile("|".join(fnmatch.translate(p.lower()) for p in pats))


#: A batch longer than this is a backlog: its urgent events are handed out
#: first (``EventStream(urgent=...)``); a shorter one keeps Asterisk's order.
URGENT_AFTER = 64


class EventStream:
    """The one WaitEvent loop of a client, as an async iterator of events and gaps."""

    def __init__(
        self,
        client: _Poller,
        patterns: Iterable[str] = ("*",),
        *,
        poll_timeout: int = 20,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        urgent: Callable[[Event], bool] | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        #: Told the error once an outage begins, by a consumer that says the
        #: loss and the resume (its :class:`StreamGap`) itself: the stream then
        #: logs neither (``callrouter events``); without it both are WARNINGs.
        self._on_lost = on_lost
        #: Events of a batch handed out before the others (routing requests).
        self._urgent = urgent
        self._filter = _compile(patterns)
        self._poll_timeout = poll_timeout
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._flaps = _Flaps()
        self._handlers: list[tuple[re.Pattern[str] | None, EventHandler]] = []
        self._running = False
        self._stopped = False
        self._unexpected = Throttle(log)
        #: The session generation of the last successful poll (None before the
        #: first), and when it came: a push is taken only within that session.
        self._generation: int | None = None
        self._last_ok = clock()
        self._sink: PushSink | None = None
        #: Events delivered and gaps reported, for status pages and tests.
        self.events_seen = 0
        self.gaps_seen = 0
        #: True from a failed poll until one succeeds: Asterisk is out of reach.
        self.failing = False

    def wants(self, name: str) -> bool:
        """Whether an event name matches the stream's glob subscriptions."""
        return self._filter is None or self._filter.match(name.lower()) is not None

    def on(self, pattern: str = "*") -> Callable[[EventHandler], EventHandler]:
        """Decorator: call ``handler(event)`` for events whose name matches ``pattern``."""

        def register(handler: EventHandler) -> EventHandler:
            self.add_handler(pattern, handler)
            return handler

        return register

    def add_handler(self, pattern: str, handler: EventHandler) -> None:
        self._handlers.append((_compile([pattern]), handler))

    def stop(self) -> None:
        """Ask the loop to end after the poll in flight."""
        self._stopped = True
        self._sink = None

    def push_to(self, sink: PushSink) -> bool:
        """Hand events to ``sink`` in the read that brought them, when it can take them.

        A poll loop hands events over a loop turn after they were read, through
        a woken future and the generators between the client and the consumer:
        about 40 us a read in the route benchmark, five reads a call. A client
        that reads a socket (``set_push``: native TCP AMI) can call ``sink``
        from the read instead. The poll loop keeps running beside it, for
        everything else: events ``sink`` refused (it was busy), the ones read
        while a gap is not yet reported (a new session, a lost connection:
        the gap comes first, as before), reconnecting, and the gaps
        themselves, and a read of more than :data:`URGENT_AFTER` events (a
        backlog, whose urgent events the poll loop hands over first, from
        every read queued behind it). Events matching no subscription glob
        are dropped here as by the poll; with handlers registered (:meth:`on`)
        nothing is pushed.
        Returns False for a client that cannot push (AJAM: every event comes
        through the poll).
        """
        set_push = getattr(self._client, "set_push", None)
        if set_push is None:
            return False
        self._sink = sink
        set_push(self._pushed)
        return True

    def _pushed(self, events: list[Event]) -> bool:
        sink = self._sink
        if (
            sink is None
            # A read this long is a backlog (a burst): the poll loop gathers
            # the reads behind it too and hands the routing requests over first.
            or (self._urgent is not None and len(events) > URGENT_AFTER)
            or self.failing
            or self._handlers
            or self._generation is None
            or self._generation != self._client.session_generation
        ):
            return False
        if self._filter is not None:
            events = [event for event in events if self.wants(event.name)]
        if events and not sink(events):
            return False
        self._last_ok = self._clock()
        self.events_seen += len(events)
        return True

    def _arrange(self, events: list[Event]) -> list[Event]:
        """A batch as the consumer gets it: urgent events first in a backlog,
        events no glob matches dropped."""
        urgent = self._urgent
        if urgent is not None and len(events) > URGENT_AFTER:
            first: list[Event] = []
            rest: list[Event] = []
            for event in events:
                (first if urgent(event) else rest).append(event)
            if first and rest:
                events = first + rest
        if self._filter is not None:
            events = [event for event in events if self.wants(event.name)]
        return events

    async def __aiter__(self) -> AsyncIterator[Event | StreamGap]:
        if self._running:
            raise AMIError("this event stream is already being iterated")
        self._running = True
        try:
            # Closed with this iterator: a poll sent ahead ends with it.
            async with contextlib.aclosing(self._loop()) as polls:
                async for item in polls:
                    if isinstance(item, StreamGap):
                        yield item
                        continue
                    for event in item:
                        # No coroutine per event when nobody subscribed.
                        if self._handlers:
                            await self._dispatch(event)
                        yield event
        finally:
            self._running = False

    async def batches(self) -> AsyncIterator[list[Event] | StreamGap]:
        """The stream a poll at a time: each poll's events as one list, in order,
        and the gaps between. What the engine reads: iterating event by event
        costs two async-generator steps per event, this two per poll."""
        if self._running:
            raise AMIError("this event stream is already being iterated")
        self._running = True
        try:
            async with contextlib.aclosing(self._loop()) as polls:
                async for item in polls:
                    if self._handlers and not isinstance(item, StreamGap):
                        for event in item:
                            await self._dispatch(event)
                    yield item
        finally:
            self._running = False

    async def _dispatch(self, event: Event) -> None:
        name = event.name.lower()
        for pattern, handler in self._handlers:
            if pattern is None or pattern.match(name):
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("event handler %r failed on %s", handler, event.name)

    def _holds_urgent(self, batch: list[Event]) -> bool:
        urgent = self._urgent
        return urgent is not None and any(urgent(event) for event in batch)

    async def _loop(self) -> AsyncGenerator[list[Event] | StreamGap, None]:
        client = self._client
        failing_since: float | None = None
        quiet = False
        last_error: str | None = None
        ahead: eager.Begun[list[Event]] | None = None
        try:
            while not self._stopped:
                # After a failure the next poll is short: a reachable Asterisk then
                # answers within a second, so ``failing`` (what the HTTP API's 503
                # goes by) ends as soon as Asterisk is back, not a long poll later.
                poll = self._poll_timeout if failing_since is None else 1
                try:
                    if ahead is not None:
                        polling, ahead = ahead, None
                        events = await polling
                    else:
                        events = await client.wait_event(poll)
                except AMIAuthenticationError:
                    raise  # wrong credentials do not heal by retrying
                except AMIEventsDropped as exc:
                    # Asterisk is there and the session lives: no backoff, no
                    # "lost"; the events dropped are a gap to reconcile.
                    now = self._clock()
                    self.gaps_seen += 1
                    yield StreamGap(min(exc.since, now), now, "overflow", str(exc))
                    self._last_ok = now
                    continue
                except Exception as exc:  # AMIError, OSError, or a bug: never the end of the stream
                    why = str(exc)
                    if isinstance(exc, AMIProtocolError):
                        # Said in the loss's line, once an outage: something
                        # answering every try with a page of its own (a proxy)
                        # would be a WARNING a second.
                        why = f"bad reply from Asterisk: {exc}"
                        log.debug("event stream: %s", why)
                    elif not isinstance(exc, AMIError | OSError):
                        # A bug on our side, or input no parser foresaw: the stream
                        # carries on (a gap is reported), and the traceback is kept.
                        self._unexpected.exception(
                            type(exc).__name__, "event stream: unexpected error, retrying"
                        )
                    self.failing = True
                    if failing_since is None:
                        failing_since = self._last_ok
                        said = self._flaps.begin()
                        quiet = not said
                        if not self._flaps.flapping():
                            self._backoff.reset()
                        # One line a loss, with the url and the reason (the
                        # native client leaves its own to DEBUG: router/ami/tcp.py);
                        # past FLAPS_SAID a minute, one line a minute.
                        if not said:
                            log.debug("event stream lost Asterisk again: %s", why)
                        elif self._on_lost is None:
                            log.warning(
                                "event stream lost Asterisk: %s; reconnecting%s",
                                why,
                                self._flaps.said(),
                            )
                        else:
                            log.debug("event stream lost Asterisk: %s", why)
                            self._on_lost(why)
                    last_error = str(exc)
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                now = self._clock()
                current = client.session_generation
                self.failing = False
                generation = self._generation
                if failing_since is not None:
                    if not self._flaps.flapping():
                        # (A session that comes back only to be lost again
                        # keeps the backoff growing, to its cap.)
                        self._backoff.reset()
                    self.gaps_seen += 1
                    (log.warning if self._on_lost is None and not quiet else log.debug)(
                        "event stream resumed after %.1f s", now - failing_since
                    )
                    yield StreamGap(failing_since, now, "reconnect", last_error, quiet=quiet)
                    failing_since = None
                    last_error = None
                elif generation is not None and current != generation:
                    # The client logged in again between polls (session expiry or
                    # restart noticed by another request): that session's queue is lost.
                    self.gaps_seen += 1
                    yield StreamGap(self._last_ok, now, "session")
                self._generation = current
                self._last_ok = now
                events = self._arrange(events)
                if events:
                    self.events_seen += len(events)
                    if self._sink is None and not self._stopped and not self._holds_urgent(events):
                        # The next poll goes out before this batch is handled: an
                        # event Asterisk queues meanwhile (a call's routing request,
                        # a moment after its first events) is then on its way back
                        # while we work, instead of waiting for that work and a new
                        # poll (over AJAM, half the requests at 50 calls a second
                        # did: bench/ANALYSIS.md). One loop turn writes its request.
                        # Not with a request in the batch: its Redirect would queue
                        # behind that poll, on our side and on Asterisk's. A client
                        # that pushes its reads (TCP) needs none of this.
                        # Begun, not a task: written now, in this turn, and
                        # read in this task when the batch is handled, at
                        # once if its answer came meanwhile, not a loop turn
                        # after a task's end (router.eager.begin).
                        ahead = eager.begin(client.wait_event(self._poll_timeout))
                    yield events
        finally:
            if ahead is not None:
                ahead.close()
