"""The engine's side of the live-instance guard: the heartbeats it sends.

router/liveguard.py keeps the state with no I/O; this sends what it asks for
through the AMI client: the claim at start (on Asterisk's clock), a beat each
interval, an answer to a newcomer at once, a probe after an event stream gap,
``leaving`` at stop. It also says once when this session stops hearing its
own heartbeat (routing requests come the same way) and once when it hears it
again. Beats never hold up the engine: each is bounded, and one Asterisk
refuses (no ``write = user``) is a WARNING once, not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from router.ami.message import Event
from router.ami.numbers import ascii_float
from router.errors import AMIError, AMIPrivilegeError
from router.health import USER_EVENTS_MISSING
from router.liveguard import Claim, LiveGuard
from router.logsafe import escape_controls
from router.supervise import log_task_failure

if TYPE_CHECKING:
    from router.ami.connect import AMIClient

__all__ = ["SETTLE_WAIT_MAX", "LiveInstance"]

log = logging.getLogger("router.engine")

#: Heartbeats in a row Asterisk does not answer before it counts as not
#: answering (:attr:`LiveInstance.silent`): as many as the others miss before
#: taking over (router/liveguard.py).
_SILENT_BEATS = 3

#: Asterisk's clock to the microsecond (STRFTIME of func_strings), for the live claim.
_NOW_PRECISE = "STRFTIME(,UTC,%s.%6q)"


#: The longest a timed rule's run waits for this instance to settle
#: (:meth:`LiveInstance.settle`). Each stream gap begins a settle again: gaps
#: that keep coming within a settle (the native client's queue overflowing
#: under a flood, a gap a poll) held the run, with its decision made when it
#: was due and its job's one instance, for as long as they lasted. Past this it
#: goes on, and acts only if the instance acts: as late as a run still runs
#: after a stall (the scheduler's grace).
SETTLE_WAIT_MAX = 60.0


class LiveInstance:
    """This router's heartbeats on one Asterisk (one per engine).

    ``connected`` says whether the session and its event stream are up:
    while they are not, a heartbeat not heard back says nothing either way.
    Until :meth:`claim`, there is no guard: the engine acts (shadow
    instances and ``live_heartbeat = 0`` never claim).
    """

    def __init__(
        self,
        client: AMIClient,
        *,
        interval: float,
        settle: float,
        connected: Callable[[], bool],
        key: bytes,
        on_takeover: Callable[[Claim], None] | None = None,
        user: str = "USER",
        asterisk_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        #: Asterisk's wall clock as this host knows it: the beats' ``At``.
        self._asterisk_clock = asterisk_clock
        #: The manager user (``[asterisk] username``), named in the ERROR.
        self._user = user
        #: Told when this router takes over from one that went silent (LiveGuard).
        self._on_takeover = on_takeover
        #: Signs the beats (router.liveguard.heartbeat_key of the manager secret).
        self._key = key
        self._interval = interval
        self._settle = settle
        self._connected = connected
        self.guard: LiveGuard | None = None
        self._beats: set[asyncio.Task[Any]] = set()
        self._refused = False
        #: Whether the missing own heartbeat has been logged.
        self._deaf_logged = False
        #: When the first heartbeat Asterisk has not answered since went out
        #: (None: the last one was answered), and whether that was logged.
        self._unanswered_since: float | None = None
        self._silent_logged = False

    @property
    def deaf(self) -> bool:
        """This session has stopped hearing its own heartbeat while connected,
        and Asterisk answers the heartbeats it sends (a stopped or hung Asterisk
        sends no echo either, and is :attr:`silent`, not deaf)."""
        return (
            self.guard is not None
            and self.guard.deaf
            and self._connected()
            and self._unanswered_since is None
        )

    @property
    def unheard_for(self) -> float:
        """Seconds since the own heartbeat was last heard, when :attr:`deaf`."""
        return self.guard.unheard_for if self.guard is not None and self.deaf else 0.0

    @property
    def acting(self) -> bool:
        """No other live instance routes in this router's stead."""
        return self.guard is None or self.guard.acting

    def may_act(self) -> bool:
        """:attr:`acting`, after a stall of this process is noticed first, as
        the heartbeat and a decision (:meth:`standby`) notice it: otherwise the
        verdict drops a live peer whose beats are still queued unread (it took
        over during the stall) and this one acts as live beside it."""
        if self.guard is None:
            return True
        self.guard.check_in()
        return self.guard.acting

    def live_elsewhere(self) -> str:
        """While another live instance routes in this one's stead: which one
        (``instance 3f2a9c1d on host pbx``, for ``/readyz`` and systemd's
        status line); else empty."""
        blocker = self.guard.blocker() if self.guard is not None else None
        if blocker is None:
            return ""
        # Another instance's words (signed with our key, bounded): still escaped.
        return escape_controls(f"instance {blocker.instance} on host {blocker.host or '?'}")

    async def claim(self, clock_offset: float) -> None:
        """Claim to be live, on Asterisk's clock, and ask who else is.

        ``clock_offset`` (Asterisk's clock minus this host's) dates the claim
        when Asterisk cannot tell its time.
        """
        since = None
        # To the microsecond where func_strings is loaded (a manual run started
        # in the same second as the service is still the younger), else EPOCH.
        for variable in (_NOW_PRECISE, "EPOCH"):
            try:
                answer = await self._client.send("Getvar", {"Variable": variable}, validate=False)
            except AMIError:
                break  # this host's clock then, as far as it is Asterisk's (clock_offset)
            since = ascii_float(answer.response.get("Value"))
            if since is not None:
                break
        claim = Claim(
            secrets.token_hex(4),
            since if since is not None else time.time() + clock_offset,
            socket.gethostname(),
            os.getpid(),
        )
        self.guard = LiveGuard(
            claim,
            key=self._key,
            interval=self._interval,
            settle=self._settle,
            asterisk_clock=self._asterisk_clock,
            on_takeover=self._took_over,
        )
        await self._send(self.guard.probe())

    async def heartbeat(self) -> None:
        """One interval's beat (the engine's scheduler runs it)."""
        guard = self.guard
        if guard is not None and not guard.leaving:
            guard.check_in()  # a stall first: it changes the claim the beat carries
            guard.update()  # an instance that went silent is gone: log it now
            self._note_deaf(guard)
            # Bounded by half the interval: a run never outlives it, so a stalled
            # Asterisk skips no run (the event stream reports the stall).
            bound = self._interval / 2
            try:
                answered = await asyncio.wait_for(self._send(guard.beat()), bound)
            except TimeoutError:
                log.debug("live-instance heartbeat: no answer within %g s", bound)
                answered = False
            if answered:
                if self._unanswered_since is not None:
                    guard.heard_from_now()  # the echoes of the unanswered beats never came
                self._unanswered_since = None
            elif self._unanswered_since is None:
                self._unanswered_since = time.monotonic()
            self._note_silent()

    def observe(self, event: Event) -> None:
        """Another router's (or this one's own) heartbeat; a newcomer's probe
        is answered at once."""
        guard = self.guard
        if guard is not None and guard.observe(event) and not guard.leaving:
            self._spawn(guard.beat())

    def probe(self) -> None:
        """After an event stream gap: heartbeats were lost with it, so ask
        again before acting."""
        if self.guard is not None and not self.guard.leaving:
            self._unanswered_since = None  # the session is new: its beats are yet to go
            self._spawn(self.guard.probe())

    async def standby(self, deadline: float) -> str | None:
        """``shadow`` while another live instance routes, ``late`` when the
        wait for others' answers outlasted the deadline, else None: act."""
        guard = self.guard
        if guard is None:
            return None
        guard.check_in()  # a stall: another instance may have routed this call
        if not guard.settled:
            await guard.wait_settled(deadline)
        if guard.update() is not None:
            return "shadow"  # the other instance routes it: nothing to report as ours
        return "late" if time.monotonic() > deadline else None

    async def settle(self) -> None:
        """Wait out the settle after a start, a stream gap or a stall (and one
        begun meanwhile), so that a timed rule's run due then acts, as a
        decision does, rather than finding this instance not acting yet; at
        most :data:`SETTLE_WAIT_MAX` seconds."""
        guard = self.guard
        if guard is not None and not guard.leaving:
            guard.check_in()  # a stall: the run woke with the process
            await guard.wait_settled(guard.now() + SETTLE_WAIT_MAX)

    async def leave(self) -> None:
        """Tell the instance standing by to take over now (bounded: stopping waits)."""
        guard = self.guard
        if guard is not None and not guard.leaving:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send(guard.leave()), 1.0)

    def close(self) -> None:
        """Cancel the beats still being sent (the engine's stop)."""
        for beat in list(self._beats):
            beat.cancel()

    @property
    def silent(self) -> bool:
        """Asterisk has answered none of this router's heartbeats for three
        intervals while its session and event stream look up: a stopped or hung
        Asterisk, whose TCP connections stay open. Over AJAM the long poll then
        just waits (up to ``waitevent_timeout``) and the keepalive Ping up to
        half its interval; the beats go every ``interval`` seconds."""
        since = self._unanswered_since
        return (
            since is not None
            and time.monotonic() - since > _SILENT_BEATS * self._interval
            and self._connected()
        )

    def _took_over(self, gone: Claim) -> None:
        """LiveGuard's ``on_takeover``, passed on only while this router hears
        Asterisk: its event stream up, its last beat answered and heard back
        within an interval. With its own stream down (or its polls hung) it heard
        no beat of the other because it heard nothing: the other may well be
        routing the calls this one stood by for, and reconciling them at the
        stream's return, before the gap's probe, redirected them a second time.
        The gap's own reconcile and probe follow as after any gap."""
        guard = self.guard
        hears = (
            self._connected()
            and self._unanswered_since is None
            and (guard is None or guard.unheard_for <= self._interval)
        )
        if not hears:
            log.info(
                "the live callrouter %s went unheard while this router heard nothing "
                "of Asterisk (its event stream down): not taken for dead, the calls "
                "it stood by for are not reconciled as a takeover",
                escape_controls(gone.describe()),
            )
            return
        if self._on_takeover is not None:
            self._on_takeover(gone)

    def _note_silent(self) -> None:
        """Log once when Asterisk stops answering the beats, once when it answers again."""
        silent = self.silent
        if silent and not self._silent_logged:
            log.warning(
                "Asterisk does not answer: this router's heartbeat (a UserEvent "
                "action) has had no answer for %.0f s, while the connection stays "
                "open (a stopped or hung Asterisk); calls take the default route "
                "meanwhile, and /readyz says not ready",
                time.monotonic() - (self._unanswered_since or time.monotonic()),
            )
            self._silent_logged = True
        elif self._silent_logged and self._unanswered_since is None:
            log.info("Asterisk answers this router's heartbeat again")
            self._silent_logged = False

    def _note_deaf(self, guard: LiveGuard) -> None:
        """Log once when this session stops hearing its own heartbeat, and once
        when it hears it again: routing requests come the same way. While the
        stream is down nothing is known either way, and nothing is said."""
        if not self._connected() or self._unanswered_since is not None:
            return  # a stopped or hung Asterisk echoes nothing either: silent, not deaf
        deaf = guard.deaf
        if deaf and not self._deaf_logged:
            log.error(
                "%s", USER_EVENTS_MISSING.format(seconds=round(guard.unheard_for), user=self._user)
            )
        elif not deaf and self._deaf_logged:
            log.warning("this router's heartbeat arrives again: routing requests can reach it")
        self._deaf_logged = deaf

    def _spawn(self, fields: dict[str, str]) -> None:
        task = asyncio.ensure_future(self._send(fields))
        self._beats.add(task)
        task.add_done_callback(self._beats.discard)
        task.add_done_callback(partial(log_task_failure, logger=log))

    async def _send(self, fields: dict[str, str]) -> bool:
        """Send one beat; whether Asterisk answered the action (a refusal too)."""
        try:
            await self._client.send("UserEvent", fields, validate=False)
            if self.guard is not None:
                self.guard.sent()
        except AMIPrivilegeError as exc:
            if not self._refused:
                self._refused = True
                log.warning(
                    "live-instance heartbeat refused (%s): a second live callrouter "
                    "on this Asterisk would not be noticed",
                    exc,
                )
        except AMIError as exc:  # the stream notices a lost Asterisk and says so
            log.debug("live-instance heartbeat not sent: %s", exc)
            return False
        return True
