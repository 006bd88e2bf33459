"""What the live page shows: the recent decisions with their traces, the calls, the health.

A plugin like the feed's intake (registered as ``api_live``), so it learns
of decisions through the same ``callrouter_decision`` hook as everyone else
and asks nothing of the engine beyond :class:`~router.hookspecs.EngineAPI`:
the decision record (the actions' outcomes, whether Asterisk confirmed them)
is ``EngineAPI.decision``, the trace comes with the hook. Memory is bounded:
the last :data:`KEEP` decisions; one whose JSON is over :data:`MAX_ENTRY`
bytes goes without its lookups' answers and then without its messages'
quoted parts (its rules' details and lookups' errors stay whole).

The page's streams wait on :meth:`LiveRing.wait`, woken when a decision is
taken or a call starts, changes state or ends: a call shows on the page as
soon as the engine has seen it, not at the next poll.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from router.api.text import mend_surrogates, shown_did, with_message_parts
from router.hookspecs import RouteOutcome, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.message import Event
    from router.calls import Call
    from router.hookspecs import EngineAPI
    from router.plugins import Plugins
    from router.rules.decision import Decision, Trace

__all__ = ["API_LIVE", "KEEP", "MAX_CALLS", "MAX_ENTRY", "LiveRing", "open_live"]

#: The name its plugin is registered under.
API_LIVE = "api_live"

#: Decisions kept for the page (a new page shows these at once).
KEEP = 200
#: Calls in progress listed at most (the newest first).
MAX_CALLS = 200
#: Largest decision entry (JSON bytes); past it the trace's lookup values are left out.
MAX_ENTRY = 64 * 1024
#: Calls whose decision is remembered (their rule, for the calls list), newest
#: kept: more than the calls ever listed, whatever falls out of :data:`KEEP`.
KEEP_DECIDED = 4096
#: Events that change what the calls list shows (state, who talks).
_CALL_EVENTS = frozenset({"Newchannel", "Newstate", "DialBegin", "DialEnd", "BridgeEnter"})


def open_live(plugins: Plugins, engine: EngineAPI) -> LiveRing:
    """The ring the live page reads, fed by the engine's hooks from now on."""
    ring = LiveRing(engine)
    plugins.register(ring, name=API_LIVE, builtin=True)
    return ring


def _json(value: Any) -> Any:
    # Texts encodable: a lone surrogate in one trace broke the page's stream.
    return mend_surrogates(json.loads(json.dumps(value, default=str, ensure_ascii=False)))


class LiveRing:
    """The last decisions (with traces) and a wake-up for everyone watching."""

    def __init__(
        self,
        engine: EngineAPI,
        *,
        keep: int = KEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        #: Linkedid -> the rule that routed it (None: none), for every call
        #: decided lately (:data:`KEEP_DECIDED`).
        self._decided: OrderedDict[str, str | None] = OrderedDict()
        self._seq = 0
        #: Bumped on every change; a watcher compares it with what it last sent.
        self.version = 0
        self._changed = asyncio.Event()
        #: Set by :meth:`end_waits` when callrouter stops: no watcher waits again.
        self.ending = False

    # -- reading -------------------------------------------------------------

    def decisions(self, after: int = 0) -> list[dict[str, Any]]:
        """Decisions with ``id`` above ``after``, oldest first."""
        return [entry for entry in self._entries if entry["id"] > after]

    @property
    def last_id(self) -> int:
        return self._seq

    def calls(self) -> list[dict[str, Any]]:
        """The calls in progress, newest first, each with its routing rule when one decided."""
        now = time.monotonic()
        rules = self._decided
        live = sorted(
            (call for call in self.engine.calls if call.ended is None),
            key=lambda call: call.started,
            reverse=True,
        )[:MAX_CALLS]
        return [
            {
                "call": call.linkedid,
                "caller": call.caller_number,
                "caller_name": call.caller_name,
                "did": shown_did(call.did),
                "state": shown_state(call, decided=call.linkedid in rules),
                "channels": len(call.active_channels),
                "age_s": round(max(0.0, now - call.started), 1),
                "rule": rules.get(call.linkedid),
            }
            for call in live
        ]

    def end_waits(self) -> None:
        """callrouter is stopping: every watcher wakes, and the live page's
        streams end before the server's grace runs out (see
        :meth:`router.api.feed.EventFeed.end_waits`)."""
        self.ending = True
        self._changed.set()

    async def wait(self, version: int, timeout: float) -> int:
        """The version once it differs from ``version``, or after ``timeout`` seconds."""
        if self.version == version and not self.ending:
            changed = self._changed
            try:
                async with asyncio.timeout(timeout):
                    await changed.wait()
            except TimeoutError:
                pass
        return self.version

    def _bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- hooks ---------------------------------------------------------------

    @hookimpl
    def callrouter_decision(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        """The decision as logged (actions and their confirmation) with its trace."""
        record = dict(self.engine.decision(call.linkedid) or {})
        self._seq += 1
        entry: dict[str, Any] = {
            "id": self._seq,
            "at": self._clock(),
            "call": call.linkedid,
            "caller": record.get("caller", call.caller_number),
            "caller_name": call.caller_name,
            "did": record.get("did", shown_did(call.did)),
            "rule": record.get("rule"),
            "rules": record.get("rules", list(decision.rules) if decision else []),
            "outcome": outcome,
            "actions": record.get("actions", []),
            "evaluate_ms": record.get("evaluate_ms"),
            "total_ms": record.get("total_ms"),
            "deadline_left_ms": record.get("deadline_left_ms"),
            "rejected": record.get("rejected", []),
            "trace": trace.to_dict() if trace is not None else None,
        }
        entry = _json(entry)
        with_message_parts(entry["trace"], entry["actions"])
        if len(json.dumps(entry, ensure_ascii=False)) > MAX_ENTRY and entry["trace"]:
            for rule in entry["trace"]["rules"]:
                for lookup in rule["lookups"]:
                    lookup["value"] = "(left out: the trace is over 64 KiB)"
            if len(json.dumps(entry, ensure_ascii=False)) > MAX_ENTRY:
                # The messages' quoted parts repeat their text (many times its
                # size for one quoting many short values): the page shows a
                # message without them as before, isolated whole.
                _drop_parts(entry)
        self._entries.append(entry)
        self._decided[call.linkedid] = entry["rule"]
        self._decided.move_to_end(call.linkedid)
        if len(self._decided) > KEEP_DECIDED:
            self._decided.popitem(last=False)
        self._bump()

    @hookimpl
    def callrouter_call_start(self, call: Call) -> None:
        self._bump()

    @hookimpl
    def callrouter_call_end(self, call: Call) -> None:
        self._bump()

    @hookimpl
    def callrouter_wanted_events(self) -> frozenset[str]:
        """The events counted below (Asterisk sends no others: docs/asterisk.md)."""
        return _CALL_EVENTS

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        if call is not None and event.name in _CALL_EVENTS:
            self._bump()


def shown_state(call: Call, *, decided: bool) -> str:
    """What the calls list says a call is doing, as a supervisor sees it:
    ``answered``; ``ringing`` while a phone it dialled rings (a Dial, a ring
    group, a queue; also on the default route), or before its routing request;
    ``deciding`` from the request until its decision is taken (a slow 1C
    shows here); ``routed`` once decided, until a phone rings. Before, a call
    said ``routed`` from its request on, with ``no rule`` while still
    undecided, and never ``ringing`` while its manager's phone rang."""
    state = call.state
    if state in ("answered", "ended"):
        return state
    if any(leg.dialed_by and not leg.hung_up for leg in call.channels.values()):
        return "ringing"
    if state == "routed" and not decided:
        return "deciding"
    return state


def _drop_parts(entry: dict[str, Any]) -> None:
    """Take :func:`router.api.text.with_message_parts`'s parts out of ``entry``."""
    trace = entry.get("trace")
    for rule in trace.get("rules", ()) if isinstance(trace, dict) else ():
        rule.pop("detail_parts", None)
        for lookup in rule.get("lookups", ()):
            lookup.pop("error_parts", None)
    for action in entry.get("actions") or ():
        if isinstance(action, dict):
            action.pop("detail_parts", None)
