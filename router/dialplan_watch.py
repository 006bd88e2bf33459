"""The engine's looks at Asterisk's dialplan while it runs (router/dialplan_audit.py
judges what it reads).

What in the dialplan loses calls (a broken inbound context, a rule
redirecting where the dialplan has nothing) is logged at start, after each
rule reload, after each dialplan reload Asterisk reports (a ``Reload``
event), when Asterisk ends a boot callrouter saw part of (``FullyBooted``)
and, since ``dialplan reload`` raises no event, now and then
(``[router] dialplan_audit_interval``), that last one only when the findings
changed. Routing goes on whatever is found (fail open); each audit also
hands the executor the contexts it read, so a missing extension is known
before a call is redirected there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from router.dialplan_audit import audit_dialplan
from router.dialplan_listing import DialplanListing
from router.supervise import log_task_failure

if TYPE_CHECKING:
    from router.ami.connect import AMIClient
    from router.executor import Executor
    from router.metrics import Metrics
    from router.rules.ruleset import RuleSet

__all__ = ["AUDIT_INTERVAL", "DialplanWatch"]

log = logging.getLogger("router.engine")

#: The dialplan is audited after Asterisk's reload at most once in this many
#: seconds: reloads meanwhile (a script reloading in a loop) make one more
#: audit when the time is up, not one each.
AUDIT_INTERVAL = 10.0


class DialplanWatch:
    """When to audit the dialplan, and what to say of it (one per engine).

    ``connected`` says whether the session and its event stream are up (the
    timed look skips while they are not); ``spawn`` runs the listing's
    background questions where the engine drains its tasks.
    """

    def __init__(
        self,
        client: AMIClient,
        rules: Callable[[], RuleSet],
        executor: Executor,
        metrics: Metrics,
        *,
        recording: bool,
        forwarding: bool = False,
        connected: Callable[[], bool],
        stopping: asyncio.Event,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        stand_in: Callable[[], bool] = lambda: False,
    ) -> None:
        self._client = client
        self._rules = rules
        self._executor = executor
        self._metrics = metrics
        self._recording = recording
        #: ``[api]`` is on: it forwards, so ``[callrouter-dial]``'s branch is checked.
        self._forwarding = forwarding
        self._connected = connected
        self._stopping = stopping
        self._spawn = spawn
        #: Whether this callrouter may set the globals an older inbound context
        #: reads and Asterisk lacks (router/dialplan_audit.py; not in shadow
        #: mode), and those it set, with their values (and whether an audit
        #: found an older inbound context: router/dialplan_audit.py ``_SEEN``).
        self._stand_in = stand_in
        self.stand_ins: dict[str, str] = {}
        #: The audit Asterisk's reload asked for, while it waits for its turn
        #: or runs; when the last audit began (monotonic).
        self.after_reload: asyncio.Task[None] | None = None
        #: The audit :meth:`look_again` asked for, while it waits or runs.
        self.looking_again: asyncio.Task[None] | None = None
        #: Whether an audit has read the dialplan since the engine began.
        self._read_once = False
        self._audited_at = -math.inf
        #: When the last look :meth:`look_again` asked for began (monotonic).
        self._looked_at = -math.inf
        #: Whether the next FullyBooted ends a boot callrouter has not read
        #: the dialplan after: the one after the start, or after a reconnection.
        self._boot_owed = True
        #: Set by such a FullyBooted while a look waits for the interval's end
        #: (it goes at once) or reads (another follows it): the boot's ``why``.
        self._again: str | None = None
        self._waiting = False
        self._hurry = asyncio.Event()
        #: Whether the look :meth:`look_again` asked for is reading the dialplan,
        #: and a reconnection that came meanwhile (its ``why`` and ``say_all``):
        #: what that look reads may be from before it, so another look follows.
        self._reading = False
        self._later: tuple[str, bool] | None = None
        #: What the last audit found, as (level, text): a timed one logs only a change.
        self._findings: tuple[tuple[str, str], ...] | None = None
        #: Audits reading the dialplan now: the timed one waits for none.
        self._auditing = 0
        #: One audit reads and writes Asterisk at a time: two at once each
        #: wrote the stand-ins' marker from what it had read before the
        #: other's write, and the later write dropped a name from it.
        self._one_at_a_time = asyncio.Lock()

    def reloaded(self) -> None:
        """Asterisk reloaded its dialplan (a ``Reload`` event): audit it again,
        so that an inbound context the reload broke is logged now, not at the
        next start. One audit waits at a time, at most one per
        :data:`AUDIT_INTERVAL`; reloads meanwhile are covered by it."""
        if self.after_reload is not None or self._stopping.is_set():
            return
        task = asyncio.get_running_loop().create_task(
            self._audit_after_reload(), name="callrouter-dialplan-audit"
        )
        task.add_done_callback(partial(log_task_failure, logger=log))
        self.after_reload = task

    def look_again(self, why: str, *, say_all: bool = False, booted: bool = False) -> None:
        """Asterisk may have a dialplan other than the one last read: it says
        it has booted (``FullyBooted``, ``booted``: sent to every session when
        a boot ends, and with each login to a booted Asterisk over TCP), or the
        event stream came back after a reconnection (``why`` says which).

        A callrouter that logged in while Asterisk was still loading its
        modules (both started together, or Asterisk restarted under it) read
        a dialplan pbx_config had not loaded yet: every context missing, so
        every rule redirecting to one was refused and its calls took the next
        rule until the timed audit, minutes later (the sandbox's first call
        after such a boot went to the default route); and an Asterisk
        restarted to take an edited extensions.conf may lack a context the
        last audit found (over AJAM the stream's gap is all callrouter sees of a
        restart it logged in after). So once an audit has begun, each of these
        has the dialplan read again, logging only what changed (a
        reconnection costs one silent look); one look waits at a time.
        ``say_all``: log the findings even when unchanged (the stand-ins'
        WARNING, repeated while callrouter's values stand in).

        A look begins at most once per :data:`AUDIT_INTERVAL`: a peer sending
        FullyBooted after FullyBooted had the dialplan read back to back (some
        800 ShowDialPlan a second and a fifth of a core in callrouter); one
        asked for sooner after the last look waits for the interval's end and
        covers every ask meanwhile; a reconnection while a look reads has one
        more look follow it (what it reads may be from before the restart).
        But the first FullyBooted after the start or after a reconnection is
        read at once, cutting such a wait short (or following a look that is
        reading): the look the reconnection asked for
        may have read a dialplan still loading, and rules to contexts it lacked
        would be refused until the wait ended. A peer can have that once per
        reconnection, which the stream's backoff bounds."""
        if self._stopping.is_set():
            return
        if booted:
            urgent, self._boot_owed = self._boot_owed, False
        else:
            urgent, self._boot_owed = False, True  # its FullyBooted follows
        if not self._auditing and not self._read_once:
            return  # the start's audit has not begun: it reads the booted dialplan
        if self.looking_again is not None:
            if urgent:
                self._again = why
                if self._waiting:
                    self._hurry.set()
            elif not booted and self._reading:
                # Lost again while the look reads: it may read the dialplan from
                # before (or have its read cut short), and over AJAM no
                # FullyBooted follows a restart logged in after. One more look
                # after it, within the interval as any (issue 16).
                said_all = self._later is not None and self._later[1]
                self._later = (why, say_all or said_all)
            return
        task = asyncio.get_running_loop().create_task(
            self._look_again(why, say_all=say_all, urgent=urgent),
            name="callrouter-dialplan-look-again",
        )
        task.add_done_callback(self._boot_audited)
        self.looking_again = task

    async def _look_again(self, why: str, *, say_all: bool, urgent: bool) -> None:
        while True:
            await self._look_once(why, say_all=say_all, urgent=urgent)
            later, self._later = self._later, None
            if later is None:
                return
            (why, say_all), urgent = later, False

    async def _look_once(self, why: str, *, say_all: bool, urgent: bool) -> None:
        # A boot's FullyBooted may have come before this task's first step.
        urgent = urgent or self._again is not None
        wait = 0.0 if urgent else self._looked_at + AUDIT_INTERVAL - time.monotonic()
        if wait > 0:
            self._hurry.clear()
            self._waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._hurry.wait()
            finally:
                self._waiting = False
        again: str | None = self._again or why
        self._reading = True
        try:
            while again is not None:
                self._again = None
                self._looked_at = time.monotonic()
                await self.audit("a reconnection", changes_only=not say_all, changed=again)
                again = self._again
        finally:
            self._reading = False

    def _boot_audited(self, task: asyncio.Task[None]) -> None:
        self.looking_again = None
        log_task_failure(task, logger=log)

    def cancel(self) -> None:
        """Drop the audits a reload or a boot asked for (the engine's stop)."""
        for task in (self.after_reload, self.looking_again):
            if task is not None:
                task.cancel()

    async def _audit_after_reload(self) -> None:
        try:
            wait = self._audited_at + AUDIT_INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            # A reload from now on is one this audit may not see: it asks again.
            self.after_reload = None
        await self.audit("Asterisk's reload")

    async def now_and_then(self) -> None:
        """The timed look at the dialplan (``[router] dialplan_audit_interval``):
        Asterisk reports no ``dialplan reload``, so an inbound context one broke
        was never told. Silent unless the findings changed since the last
        audit; skipped while Asterisk is away (the stream says so) or an
        audit after a reload is due anyway or another audit is reading it
        (a look beside it would finish later with what it read earlier)."""
        if self._connected() and self.after_reload is None and not self._auditing:
            await self.audit("the timed check", changes_only=True)

    async def audit(
        self,
        when: str,
        *,
        changes_only: bool = False,
        changed: str = "found by the timed check: Asterisk reports no dialplan reload",
    ) -> None:
        """Log what in Asterisk's dialplan loses calls (router/dialplan_audit.py):
        a broken inbound context, a rule redirecting where the dialplan has
        nothing. Each is a WARNING; routing goes on (fail open).
        ``changes_only``: nothing is logged when the findings are the last
        audit's, nor when some of the dialplan could not be read (a timeout,
        Asterisk gone mid-look): that is no change of the dialplan, and the
        error's text differs each time; ``changed`` says why it was looked at
        when they did change."""
        self._audited_at = time.monotonic()
        targets, built = self._rules().redirect_targets()
        self._auditing += 1
        try:
            async with self._one_at_a_time:
                audit = await audit_dialplan(
                    self._client,
                    targets,
                    built,
                    recording=self._recording,
                    forwarding=self._forwarding,
                    stand_ins=self.stand_ins if self._stand_in() else None,
                )
        finally:
            self._auditing -= 1
        self._read_once = True
        if audit.contexts or not audit.unread:
            # Kept honest between audits: a "missing" extension is asked
            # about again in the background (router/dialplan_listing.py).
            self._executor.dialplan = DialplanListing(
                audit.contexts, ask=self._executor.presence, spawn=self._spawn
            )
        findings = audit.findings
        failed = sum(f.level == "fail" for f in findings)
        self._metrics.dialplan_problems.set(-1 if audit.unread and not failed else failed)
        seen = tuple((f.level, f.text) for f in findings)
        if changes_only and audit.unread:
            log.debug("dialplan: the timed check could not read all of it: %s", seen)
            return
        if changes_only and seen == self._findings:
            return
        self._findings = seen
        if changes_only:
            log.info("dialplan changed since it was last checked (%s)", changed)
        problems = [f for f in findings if f.level != "ok"]
        for finding in problems:
            level = logging.WARNING if finding.level == "fail" else logging.INFO
            log.log(level, "dialplan: %s", finding.text)
        if not problems:
            log.info("dialplan checked at %s: %s", when, "; ".join(f.text for f in findings))
