"""The request path: one routing request in, one decision out, on its deadline.

The :class:`Router` takes each ``UserEvent(CallRouterRequest)`` (or the request
rebuilt from a channel listing by :meth:`Router.reconcile`), works out how long
the dialplan still waits (router/dialplan.py), evaluates the rules under that
deadline, executes the decision unless it is late, shadowed or another live
instance routes, then writes the decision record and its log line and tells
the plugins. Exactly one decision is taken per waiting channel, however many
events, reloads or reconnects happen.

The engine (router/engine.py) wires it and owns everything with a life cycle:
the event stream, the scheduler, reloads, the live-instance guard. The Router
never imports it: what it needs from the engine comes in as arguments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from router import eager
from router.ami.message import Event
from router.ami.protocol import ActionResult
from router.callerid import cut
from router.calls import Call, CallTracker, Channel, listed_twice
from router.dialplan import (
    DEADLINE_VARIABLE,
    DECIDED_VARIABLE,
    DID_VARIABLE,
    FELL_VARIABLE,
    Dialplan,
    RoutingRequest,
)
from router.errors import AMIError
from router.executor import ActionOutcome, Executor
from router.hookspecs import RouteOutcome
from router.logsafe import escape_controls, escape_json_line
from router.metrics import Metrics
from router.parking import Parking
from router.plugins import Plugins
from router.request import RequestInfo, set_request
from router.rules.context import CallInfo
from router.rules.decision import Action
from router.rules.ruleset import RuleBook, call_context
from router.supervise import log_task_failure
from router.wording import counted

__all__ = ["SHOWN_FAILURES", "RouteRecord", "Router", "call_info", "cut_detail"]

log = logging.getLogger("router.routing")
decision_log = logging.getLogger("router.decision")

#: Channels remembered as routed, so a request is never acted on twice; entries
#: leave when their call ends, so this only bounds calls that never end.
_ROUTED_MEMORY = 100_000
#: Recent decisions kept in memory (status, tests, the demo); the log has them all.
_RECORDS_KEPT = 1_000
#: How much of a failed rule's error the decision line shows.
_ERROR_SHOWN = 200
#: Early-routed requests waiting to meet their call (each does within its read).
_EARLY_KEPT = 1_000
#: Calls the reconcile at start asks about falling through while callrouter was down.
_FALLEN_CHECKED = 500
#: Outcomes that leave the call to the dialplan's default route, counted in
#: ``callrouter_fallthroughs_total`` when decided: the waiting channel is
#: marked (:data:`~router.dialplan.DECIDED_VARIABLE`) so that a later start
#: does not count the call again as fallen while no callrouter ran.
_MARKED_OUTCOMES = frozenset({"fell-through", "late", "failed"})
#: Action kinds that take the call away from its wait (or end it): a decision
#: executed without one ("tag and go on": setvar, notify, record) leaves the
#: call to the default route as well, and is marked too. Which actions do is
#: their kind's ``ActionSpec.routes`` (:meth:`Router._moves`: a plugin's
#: kind, an ``ami`` action by its AMI action); this set is for a kind the
#: registry no longer has, and for a connection lost under an action.
_MOVING_KINDS = frozenset({"redirect", "hangup", "ami"})

#: What stands between a decision and its execution when other instances are
#: live: ``"shadow"``, ``"late"`` or None (act). The engine's live guard.
Standby = Callable[[float], Awaitable[str | None]]


class _AMI(Protocol):
    async def send(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        action_id: str | None = None,
        validate: bool = True,
        check: bool = True,
    ) -> ActionResult: ...


@dataclass(slots=True)
class RouteRecord:
    """One routing decision, as logged: the line an operator reads."""

    channel: str
    uniqueid: str
    linkedid: str
    caller: str
    did: str
    rules: tuple[str, ...]
    outcome: str
    actions: list[ActionOutcome]
    lookups: list[dict[str, Any]]
    evaluate_ms: float
    total_ms: float | None
    deadline_left_ms: float
    #: Rules passed over because an action could not be rendered safely (a
    #: lookup's extension that is not a dialplan location): rule and reason.
    rejected: list[dict[str, str]] = field(default_factory=list)
    #: Rules skipped because evaluating them raised (a plugin's function, a
    #: bound on call data): rule, stage (``if``, ``when``, ...) and the error.
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "decision",
            "channel": self.channel,
            "uniqueid": self.uniqueid,
            "call": self.linkedid,
            "caller": self.caller,
            "did": self.did,
            "rule": self.rules[0] if self.rules else None,
            "rules": list(self.rules),
            "outcome": self.outcome,
            "actions": [a.to_dict() for a in self.actions],
            "lookups": self.lookups,
            "evaluate_ms": round(self.evaluate_ms, 2),
            "total_ms": None if self.total_ms is None else round(self.total_ms, 2),
            "deadline_left_ms": round(self.deadline_left_ms, 1),
            "rejected": self.rejected,
            "errors": self.errors,
        }


async def _act_now(deadline: float) -> str | None:
    return None


class _HangUpMark:
    """One decision's word of its channel's Hangup: when it came (monotonic),
    or None while the channel is up (:meth:`Router.hung_up`)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


class Router:
    """Routing requests to decisions: deadline, rules, actions, record, log, hook.

    ``rules`` and ``shadow`` may be replaced while running (a reload swaps
    the rule book); ``accepting`` turns False when the engine stops taking
    calls. ``tasks`` holds every routing in flight, for the engine's drain.
    """

    def __init__(
        self,
        *,
        ami: _AMI,
        tracker: CallTracker,
        executor: Executor,
        plugins: Plugins,
        rules: RuleBook,
        dialplan: Dialplan | None = None,
        log_format: str = "text",
        clock: Callable[[], datetime],
        standby: Standby = _act_now,
        shadow: bool = False,
        metrics: Metrics | None = None,
        parking: Parking | None = None,
    ) -> None:
        self._ami = ami
        #: Whether a requesting channel is seen in Wait (None: not watched).
        self._parking = parking
        self._tracker = tracker
        self._executor = executor
        self._plugins = plugins
        self.rules = rules
        self.dialplan = dialplan or Dialplan()
        self._json = log_format == "json"
        self._clock = clock
        self._standby = standby
        self.shadow = shadow
        #: Where decisions are counted (``/metrics``); None counts nothing.
        self.metrics = metrics
        self.accepting = True
        #: The last accepted request's routing stopped its first step at a
        #: hand-off (router.eager): the rest starts on the loop's next turn.
        self.starting = False
        self._routed: OrderedDict[str, None] = OrderedDict()
        #: Requests decided ``shadow`` because another live instance routed
        #: (standing by), until this one takes over (:meth:`forget_stood_by`).
        self._stood_by: OrderedDict[str, None] = OrderedDict()
        #: Channels whose request was routed early (:meth:`accept`), until the
        #: request comes again in order: the events read before it, handled
        #: after its Redirect was sent, are not that Redirect's landing.
        self.early: dict[str, str] = {}
        #: Channels whose decision is being taken -> a mark per decision in
        #: flight: when the channel's Hangup came meanwhile (:meth:`hung_up`;
        #: monotonic), or None. A caller gone before the deadline never took
        #: the default route. One mark each: two decisions of one channel
        #: (a second request of it read while the first is decided) used to
        #: share one, and the first to finish cleared the other's (issue 16).
        self._deciding: dict[str, list[_HangUpMark]] = {}
        #: Routings and other actions in flight (the engine drains them on stop).
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Every decision taken, newest last (bounded), for tests, the demo, status.
        self.records: list[RouteRecord] = []
        #: Whether a request without a ``Timestamp`` has been logged.
        self._unstamped_told = False
        #: Asterisk's wall clock minus this host's, in seconds (the engine
        #: measures it): a request's ``Timestamp`` and a channel's
        #: ``CALLROUTER_DEADLINE`` are on Asterisk's clock.
        self.clock_offset = 0.0

    @property
    def remembered(self) -> int:
        """How many channels are remembered as routed (bench/bench_memory.py)."""
        return len(self._routed)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._track(asyncio.ensure_future(coro))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        # Nobody awaits these tasks: a failure is logged with the task's name.
        task.add_done_callback(_log_task_failure)

    # -- calls ending --------------------------------------------------------------------

    def forget(self, ended: tuple[Call, ...]) -> None:
        """The calls' channels hung up and can ask for nothing more: forget
        them, so memory stays flat however many calls pass (the bound on the
        routed memory is a backstop)."""
        for call in ended:
            self.forget_channels(call.channels.values())

    def forget_channels(self, channels: Iterable[Channel]) -> None:
        """Hung-up channels a call let go (:attr:`router.calls.Fed.forgotten`)
        or that ended with it: what was kept of them goes."""
        for channel in channels:
            self._routed.pop(channel.uniqueid or channel.name, None)
            self._stood_by.pop(channel.uniqueid or channel.name, None)
            self._executor.forget(channel.name)
            self.early.pop(channel.name, None)

    async def end_calls(self, ended: tuple[Call, ...]) -> None:
        """Forget the calls, then ``callrouter_call_end`` for each, in the order they ended."""
        self.forget(ended)
        for call in ended:
            await self._plugins.call_end(call)

    # -- one request -----------------------------------------------------------------------

    def accept(
        self, event: Event, call: Call | None, *, early: bool = False, listed: bool = False
    ) -> bool:
        """Start routing a request unless it was routed already or we are stopping.

        ``early``: taken from the request's raw text before the events read
        with it ahead of it (router/engine.py ``_route_early``); the call
        may not be tracked yet, and is claimed when the request comes again
        in order. ``listed``: rebuilt by the reconcile from a channel listing
        (its wait comes from ``CALLROUTER_DEADLINE``, not from a ``Timestamp``).
        """
        request = self.dialplan.request(event)
        if request is None:
            return False
        if request.timestamp is None and not listed and not self._unstamped_told:
            self._unstamped_told = True
            log.warning(
                "routing requests carry no Timestamp: set timestampevents = yes in "
                "manager.conf [general], then manager reload (docs/asterisk-ajam.md); "
                "without it callrouter cannot tell how old a request is, and after a "
                "stall it may redirect a call that has already taken its default route"
            )
        if request.key in self._routed:
            if self.early.get(request.channel) == request.key:
                del self.early[request.channel]  # its read's events are all handled now
                if call is not None:
                    _claim(call, request)
            return False
        if not self.accepting:
            return False
        self._routed[request.key] = None
        if len(self._routed) > _ROUTED_MEMORY:
            self._routed.popitem(last=False)
        received = time.monotonic()
        now = time.time() + self.clock_offset
        deadline = self.dialplan.deadline(request, received=received, now=now)
        if call is not None:
            _claim(call, request)
        if early:
            self.early[request.channel] = request.key
            if len(self.early) > _EARLY_KEPT:
                self.early.pop(next(iter(self.early)))
        # Decided and sent in this loop turn, not behind the callbacks already
        # queued (router.eager): with a cached answer the Redirect is written
        # before accept returns.
        coro = self._route(request, call, deadline, received, early=early)
        try:
            task, self.starting = eager.start(coro, name=f"route {request.channel}")
        except Exception:
            self.starting = False
            log.exception("routing %s failed", request.channel)
            return True
        if task is not None:
            self._track(task)
        return True

    async def _route(
        self,
        request: RoutingRequest,
        call: Call | None,
        deadline: float,
        received: float,
        *,
        early: bool = False,
    ) -> None:
        # The channel snapshot, not the dialplan's DID/Caller keys: a caller
        # number with commas can rewrite those (router/dialplan.py).
        raw_caller, did, channel = request.caller, request.did, request.channel
        context = call_context(
            self.rules.registry,
            raw_caller,
            did,
            caller_name=request.caller_name,
            call=call_info(call, request.event),
            now=self._clock(),
        )
        started = time.monotonic()
        outcome = None
        linkedid = call.linkedid if call else request.linkedid
        caller = context.caller.number if context.caller else raw_caller
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        info = RequestInfo(
            channel=channel,
            uniqueid=request.uniqueid,
            linkedid=linkedid,
            caller=caller,
            did=did,
            deadline=deadline,
            done=done,
        )
        set_request(info)  # the fallback for code that cannot take the argument
        mark = _HangUpMark()
        self._deciding.setdefault(channel, []).append(mark)
        try:
            try:
                # No timeout around it: the evaluation bounds each lookup by the
                # deadline itself, and rules written for a failed lookup still
                # decide; a timer here would also end the eager start (router.eager).
                # The dialplan as last read: a rule redirecting to an extension it
                # surely lacks is rejected there and the next rule decides.
                outcome = await self.rules.evaluate(
                    context, deadline=deadline, request=info, dialplan=self._executor.dialplan
                )
            except Exception:
                log.exception("rule evaluation failed for %s", channel)
            evaluated = time.monotonic()
            # The caller hung up while the rules were evaluated (a slow 1C), before
            # the deadline, so the call never reached the default route. When the
            # Hangup came tells, not when the evaluation ended: a lookup 1C never
            # answers is cut at the deadline, so it ends at or past it (hreview48).
            gone_at = mark.at
            hung_up = gone_at is not None and gone_at <= deadline
            results: list[ActionOutcome] = []
            status: RouteOutcome
            moved = False
            if outcome is None:
                status = "caller-gone" if hung_up else "late"
            elif not outcome.decision.actions:
                # Nothing matched because a lookup ran out of time: the call was late.
                # Either way, a caller who hung up first never took the default
                # route: no fallthrough, nothing to mark (docs/operations.md, Metrics).
                status = (
                    "caller-gone"
                    if hung_up
                    else ("late" if outcome.trace.deadline_hit else "fell-through")
                )
            elif evaluated > deadline or outcome.trace.deadline_hit:
                # A lookup said the deadline came (router.LookupCutOff, a moment
                # before it): a later rule's match is as late as after a cut-off.
                status = "caller-gone" if hung_up else "late"
            elif self.shadow:
                status = "shadow"
            elif (standby := await self._standby(deadline)) is not None:
                status = "late" if standby == "late" else "shadow"
                if standby == "shadow":
                    # Another live instance routes it; should that one die before
                    # it does, the reconcile at the takeover routes it if it still waits.
                    self._stood_by[request.key] = None
                    if len(self._stood_by) > _ROUTED_MEMORY:
                        self._stood_by.popitem(last=False)
            elif not await self._parked(channel, deadline):
                status = "late"
            else:
                results = await self._executor.run(outcome.decision.actions, call, channel)
                bad = [r for r in results if r.status in ("failed", "no-executor", "unconfirmed")]
                gone = any(r.status == "channel-gone" for r in results)
                status = "caller-gone" if gone else ("failed" if bad else "executed")
                # A refused setvar (a 1C client name with a line break) beside a
                # confirmed redirect: "failed", but the call went where the rule
                # said, so it is neither a fallthrough nor left to the default route.
                moved = any(
                    result.status in ("confirmed", "ok") and self._moves(action)
                    for action, result in zip(outcome.decision.actions, results, strict=False)
                )
                if any(r.lost and r.kind in _MOVING_KINDS for r in results):
                    # The connection broke before Asterisk answered the Redirect:
                    # the reconcile that follows a reconnect routes the call again
                    # if it still waits in the inbound context (then the Redirect
                    # never ran; had it run, the call would be gone from there).
                    self._routed.pop(request.key, None)
                    log.info(
                        "%s: the connection to Asterisk broke before it answered the "
                        "decision: the reconcile after the reconnect routes the call "
                        "again if it still waits",
                        escape_controls(channel),
                    )
            total_ms = None
            confirmed = [r.event_timestamp for r in results if r.event_timestamp is not None]
            if confirmed and request.timestamp is not None:
                total_ms = (confirmed[-1] - request.timestamp) * 1000  # on Asterisk's own clock
            elif results:
                total_ms = (time.monotonic() - received) * 1000
            if not results and outcome is not None and outcome.decision.actions:
                # Not sent (shadow, late, standing by): the line shows what would
                # have been done, so a shadow trial can be compared with the PBX.
                results = [_planned(action) for action in outcome.decision.actions]
            trace = outcome.trace if outcome is not None else None
            record = RouteRecord(
                channel=channel,
                uniqueid=request.uniqueid,
                linkedid=linkedid,
                caller=caller,
                did=did,
                rules=outcome.decision.rules if outcome else (),
                outcome=status,
                actions=results,
                lookups=_lookups(trace),
                evaluate_ms=(evaluated - started) * 1000,
                total_ms=total_ms,
                deadline_left_ms=(deadline - evaluated) * 1000,
                rejected=_rejected(trace),
                errors=_errors(trace),
            )
            self._log_decision(record)
            if self.metrics is not None:
                self.metrics.decided(
                    record.rules,
                    status,
                    moved=moved,
                    evaluate_seconds=evaluated - started,
                    asterisk_seconds=(
                        confirmed[-1] - request.timestamp
                        if confirmed and request.timestamp is not None
                        else None
                    ),
                    lookups=_lookup_traces(trace),
                )
            if not self.shadow and (
                (status in _MARKED_OUTCOMES and not moved)
                or (
                    status == "executed"
                    and outcome is not None
                    and not any(self._moves(a) for a in outcome.decision.actions)
                )
            ):
                # Off the decision's path: the call is not redirected, nothing waits for this.
                self.spawn(self._mark_decided(channel, status))
            if early:
                # Routed before the events read with the request were handled: the
                # plugins hear of the decision after them (the read's own turn
                # handles them; a decision not sent has not waited for anything),
                # and by then the call is tracked.
                await eager.hand_off()
                if call is None:
                    call = self._tracker.by_channel(channel)
            if call is not None:
                await self._plugins.decision(
                    call, outcome.decision if outcome else None, trace, status
                )
        finally:
            marks = self._deciding.get(channel)
            if marks is not None:
                # This decision's own mark, by identity: another's stays.
                marks[:] = [m for m in marks if m is not mark]
                if not marks:
                    del self._deciding[channel]
            # Over: its decision was told, or never will be (an untracked call).
            if not done.done():  # a plugin may have cancelled it
                done.set_result(None)

    def hung_up(self, channel: str) -> None:
        """``channel``'s Hangup was handled: a decision in flight for it finds
        the caller gone (the engine calls this for every Hangup)."""
        marks = self._deciding.get(channel)
        if marks:
            now = time.monotonic()
            for mark in marks:
                if mark.at is None:
                    mark.at = now

    def _moves(self, action: Action) -> bool:
        """Whether ``action`` takes the call away from its wait or ends it: its
        kind's ``ActionSpec.routes`` (a plugin's kind too; an ``ami`` action
        by the AMI action it sends)."""
        spec = self.rules.registry.actions.get(action.kind)
        routes = spec.routes if spec is not None else action.kind in _MOVING_KINDS
        if not callable(routes):
            return routes
        try:
            return bool(routes(action.params))
        except Exception:  # a plugin's bug, said when the rule loaded; mark nothing
            return True

    async def _mark_decided(self, channel: str, status: str) -> None:
        """Mark a waiting channel this router decided to leave to the default
        route (``CALLROUTER_DECIDED``): counted now as ``no-rule``, ``late`` or
        ``failed``, it is not counted as ``down`` by a later start
        (:meth:`_fallen`). An instance standing by marks nothing (it sends
        Asterisk nothing; the live one decides and marks the call); one
        settling after its start marks once it knows it is the live one."""
        if await self._standby(math.inf) is not None:
            return
        try:
            await self._ami.send(
                "Setvar",
                {"Channel": channel, "Variable": DECIDED_VARIABLE, "Value": status},
                validate=False,
            )
        except AMIError as exc:  # hung up meanwhile, or Asterisk is gone: nothing to mark
            log.debug("%s not marked %s: %s", channel, DECIDED_VARIABLE, exc)

    async def _parked(self, channel: str, deadline: float) -> bool:
        """Wait until the channel is seen in Wait (router/parking.py),
        bounded; False only when the deadline passed meanwhile."""
        parking = self._parking
        if parking is None:
            return True
        outcome = await parking.reached(channel, deadline)
        if self.metrics is not None:
            self.metrics.parked(outcome)
        return outcome in ("at-once", "waited") or time.monotonic() <= deadline

    def _log_decision(self, record: RouteRecord) -> None:
        self.records.append(record)
        if len(self.records) > _RECORDS_KEPT:
            del self.records[: len(self.records) - _RECORDS_KEPT]
        # Caller and DID come from whoever places the call: control characters
        # are escaped here, so no log handler ever prints them raw.
        if self._json:
            decision_log.info(escape_json_line(json.dumps(record.to_dict(), ensure_ascii=False)))
        else:
            acts = ", ".join(f"{a.kind}:{a.status}" for a in record.actions) or "-"
            total = f"{record.total_ms:.1f} ms" if record.total_ms is not None else "-"
            rule = record.rules[0] if record.rules else "-"
            looked = ", ".join(_lookup_text(lookup) for lookup in record.lookups)
            line = (
                f"call {record.linkedid} from {record.caller} to {record.did}: rule {rule} "
                f"-> {record.outcome} [{acts}] in {total}"
                + (f"; lookups {looked}" if looked else "")
                + "".join(
                    f"; {a.kind} {a.status}: {cut_detail(a.detail)}"
                    for a in record.actions
                    if a.status in SHOWN_FAILURES and a.detail
                )
                + "".join(
                    f"; {a.kind} left out {k}: {why}"
                    for a in record.actions
                    for k, why in a.left_out.items()
                )
                + "".join(f"; rejected {r['rule']}: {r['reason']}" for r in record.rejected)
                + "".join(
                    f"; error {e['rule']} ({e['stage']}): {e['error']}" for e in record.errors
                )
            )
            decision_log.info("%s", escape_controls(line))

    # -- after a gap, at start, at a takeover ---------------------------------------------------

    def forget_stood_by(self) -> int:
        """This instance takes over from a live one that went silent: the
        requests it stood by for count as not routed, so the reconcile that
        follows routes those still waiting (the other may have died before
        routing them). One the other did redirect is no longer in the wait,
        and the reconcile lists only the channels still there. Returns how
        many were forgotten."""
        forgotten = 0
        for key in self._stood_by:
            if key in self._routed:
                del self._routed[key]
                forgotten += 1
        self._stood_by.clear()
        return forgotten

    async def reconcile(self, *, count_fallen: bool = False) -> int:
        """Route channels still waiting in the inbound context; forget dead calls;
        track the live calls the stream has not shown us.

        Calls already past the inbound context (routed before a restart, or
        started during a gap) are fed to the tracker from the listing, so their
        Hangup ends them and ``callrouter_call_end`` reports it (the 1C plugin
        owes them a final event); plugins then get the listing
        (``callrouter_channels_listed``). Returns how many waiting channels were
        (re)submitted for routing.

        ``count_fallen`` (the reconcile at start): calls still up that took
        the default route while no callrouter was running are counted as
        ``callrouter_fallthroughs_total{cause="down"}`` (:meth:`_fallen`).
        """
        listing = await self._ami.send("CoreShowChannels", {}, validate=False)
        # An item with an identity field longer than Asterisk sends (a hostile
        # or broken AMI peer: router.calls.oversized) is no channel of
        # Asterisk's: counted and said by the tracker, then left out of all
        # that follows, the plugins' listing and the Getvars included (issue 16).
        items = tuple(item for item in listing.items if not self._tracker.refuses(item))
        alive = {item.get("Channel") or "" for item in items}
        missing = tuple(
            call for call in self._tracker if not any(ch in alive for ch in call.channels)
        )
        gone = missing
        if unread := listing.unread_items:
            # An item skipped for a line over the parser's bound (a caller's
            # name or an application's data 64 KiB long), or over /mxml for
            # being no XML (a caller's number with a key in it:
            # router.ami.protocol.BROKEN_ELEMENTS), may be a live call's
            # channel, and which one cannot be told: a call missing from this
            # listing is not taken for gone. Its Hangup, the next whole
            # listing or the tracker's TTL ends it (issue 16).
            gone = ()
            log.warning(
                "reconcile: CoreShowChannels listed %d of the %d channels it counted (%s "
                "skipped for a line over the parser's bound, or over /mxml as no XML): "
                "%s not listed kept, not ended",
                len(listing.items),
                len(listing.items) + unread,
                counted(unread, "item"),
                counted(len(missing), "call"),
            )
        for call in gone:
            self._tracker.forget(call.linkedid)
        await self.end_calls(gone)
        # A channel listed twice: one of the two a caller's number made up
        # (router.calls.listed_twice): neither is tracked nor routed from here.
        twice = listed_twice(items)
        for at, item in enumerate(items):
            linkedid = item.get("Linkedid") or ""
            if not linkedid:
                continue
            if self._tracker.by_channel(item.get("Channel") or "") is not None:
                # Listed under its own Uniqueid after a gap: its name vouches
                # for it again (router.calls.CallTracker.impostor).
                self._tracker.vouch(item)
                continue
            if at in twice:
                continue
            fed = self._tracker.feed(item)
            await self.end_calls(fed.ended)
            if fed.started and fed.call is not None:
                await self._plugins.call_start(fed.call)
        # State plugins keep from events (who is in which bridge) is rebuilt from
        # this one listing, never a second CoreShowChannels of their own.
        await self._plugins.channels_listed(items)
        submitted = 0
        dialplan = self.dialplan
        for at, item in enumerate(items):
            channel = item.get("Channel") or ""
            if not dialplan.is_waiting(item) or (item.get("Uniqueid") or channel) in self._routed:
                continue
            if at in twice and not self._tracker.knows(item):
                continue
            wait = dialplan.listed_wait(
                await self._getvar(channel, DEADLINE_VARIABLE),
                now=time.time() + self.clock_offset,
            )
            if wait is None:
                continue
            synthetic = dialplan.listed_request(
                item, did_variable=await self._getvar(channel, DID_VARIABLE), wait=wait
            )
            fed = self._tracker.feed(synthetic)
            await self.end_calls(fed.ended)
            if self._parking is not None:
                # Listed in Wait: what the wait is for, whatever the stream showed.
                self._parking.forget(channel)
            if self.accept(synthetic, fed.call, listed=True):
                submitted += 1
        if submitted:
            log.info("reconcile: routing %s still waiting", counted(submitted, "call"))
        if count_fallen and self.metrics is not None:
            fallen = await self._fallen(items)
            if fallen:
                self.metrics.fell_while_down(fallen)
                log.info(
                    "reconcile: %s took the default route while callrouter was down",
                    counted(fallen, "call"),
                )
        return submitted

    async def _fallen(self, items: Sequence[Event]) -> int:
        """Calls in the listing with a channel that passed the dialplan's
        ``default`` label (it sets ``CALLROUTER_FELL``) and that no live
        callrouter decided (it sets ``CALLROUTER_DECIDED`` on the channels it
        leaves to the default route, :meth:`_mark_decided`): they fell
        through while no callrouter answered. No clock is compared, so the
        hosts' clocks do not matter, and a call a router counted as
        ``no-rule``, ``late`` or ``failed`` is never counted again at a
        restart. Any channel of the call may be the inbound one (a trunk's is
        the call's first, a Local channel's is not), so each is asked until
        its call is found; bounded by :data:`_FALLEN_CHECKED` channels."""
        fallen: set[str] = set()
        checked = 0
        for item in items:
            channel = item.get("Channel") or ""
            linkedid = item.get("Linkedid") or ""
            if not channel or linkedid in fallen or self.dialplan.is_waiting(item):
                continue
            checked += 1
            if checked > _FALLEN_CHECKED:
                break
            if await self._getvar(channel, FELL_VARIABLE) and not await self._getvar(
                channel, DECIDED_VARIABLE
            ):
                fallen.add(linkedid)
        return len(fallen)

    async def _getvar(self, channel: str, name: str) -> str | None:
        try:
            result = await self._ami.send(
                "Getvar", {"Channel": channel, "Variable": name}, validate=False
            )
        except AMIError:
            return None
        return result.response.get("Value") or None


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    log_task_failure(task, logger=log)


def _claim(call: Call, request: RoutingRequest) -> None:
    """The call is being routed: later requests of it are ignored."""
    call.routed = True
    call.waiting_channel = request.channel
    if not call.did:
        call.did = request.did


def call_info(call: Call | None, event: Event | None) -> CallInfo | None:
    """The rules' view of the call (``call.*`` in expressions)."""
    if event is None:
        if call is None:
            return None
        return CallInfo(
            channel=call.waiting_channel or "",
            uniqueid="",
            linkedid=call.linkedid,
            context="",
            exten="",
            vars=dict(call.variables),
        )
    # ``is not None``, not truth: an Event's truth is its length (a call each).
    get = event.get
    return CallInfo(
        channel=get("Channel") or (call.waiting_channel if call is not None else "") or "",
        uniqueid=get("Uniqueid") or "",
        linkedid=call.linkedid if call is not None else (get("Linkedid") or ""),
        context=get("Context") or "",
        exten=get("Exten") or "",
        vars=dict(call.variables) if call is not None else {},
    )


def _rejected(trace: Any) -> list[dict[str, str]]:
    """Rules whose actions could not be rendered (their reasons quote values
    escaped and cut, router/dialplan.py ``shown``)."""
    return [
        {"rule": rule.rule, "reason": rule.detail}
        for rule in getattr(trace, "rules", ())
        if rule.status == "rejected"
    ]


def _errors(trace: Any) -> list[dict[str, str]]:
    """Rules skipped because evaluating them raised; the error cut to
    :data:`_ERROR_SHOWN` characters (it may quote call data)."""
    return [
        {"rule": rule.rule, "stage": rule.stage, "error": cut_detail(rule.detail)}
        for rule in getattr(trace, "rules", ())
        if rule.status == "error"
    ]


#: Action statuses whose ``detail`` the text line shows: without it an
#: operator reads ``setvar:failed`` and cannot tell why (a client name from 1C
#: with a line break, which no AMI header may carry), while the JSON line has
#: had the detail all along.
SHOWN_FAILURES: Final = frozenset({"failed", "unconfirmed", "channel-gone", "no-executor"})


def cut_detail(text: str) -> str:
    """An error or an outcome's detail as a decision line shows it: at most
    :data:`_ERROR_SHOWN` characters, cut as callrouter cuts its texts."""
    return cut(text, _ERROR_SHOWN)


def _planned(action: Action) -> ActionOutcome:
    """An action that was decided but not sent: ``planned`` in the decision line."""
    detail = ", ".join(f"{key}={value}" for key, value in action.params.items())
    return ActionOutcome(action.kind, "planned", detail, left_out=dict(action.left_out))


def _lookup_text(lookup: Mapping[str, Any]) -> str:
    """``owner 12.3 ms``, ``, reused`` when prefetched, ``stale 412 s`` when the
    answer (a mapping) says it is that old (``stale``: a plugin's cache served
    it while it asks again), the error when it failed."""
    text = f"{lookup.get('name')} {float(lookup.get('ms') or 0.0):.1f} ms"
    if lookup.get("reused"):
        text += " reused"
    value = lookup.get("value")
    stale = value.get("stale") if isinstance(value, Mapping) else None
    if isinstance(stale, int | float) and not isinstance(stale, bool) and math.isfinite(stale):
        text += f" stale {stale:.0f} s"
    if lookup.get("error"):
        text += f" failed: {lookup['error']}"
    return text


def _lookup_traces(trace: Any) -> list[Any]:
    """The trace's ``LookupTrace`` objects, for the metrics (they carry ``lookup``)."""
    if trace is None:
        return []
    return [
        lookup for rule in getattr(trace, "rules", ()) for lookup in getattr(rule, "lookups", ())
    ]


def _lookups(trace: Any) -> list[dict[str, Any]]:
    if trace is None:
        return []
    out: list[dict[str, Any]] = []
    for rule in getattr(trace, "rules", ()):
        for lookup in getattr(rule, "lookups", ()):
            to_dict = getattr(lookup, "to_dict", None)
            if to_dict is not None:
                out.append(to_dict())
    return out
