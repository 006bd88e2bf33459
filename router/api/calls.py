"""Click-to-call and the live calls: ``/api/v1/calls``, hang up, transfer.

Click-to-call rings the manager first and then dials the customer: one AMI
``Originate`` of ``[api] originate_channel`` (the manager's phone) into
``[api] outbound_context`` at ``dial_prefix`` + the number, normalized by the
number plan routing uses. The call's id is chosen here and given to Asterisk
as ``ChannelId``, so the first channel's Uniqueid, hence the call's Linkedid,
is that id: ``GET /api/v1/calls/{id}`` finds the call in the engine's tracker
as soon as Asterisk reports it. ``Originate`` with ``Async`` only says the
request was queued; progress is what the events say (:class:`Origination`,
fed by ``EngineAPI.watch``): the new channel, ``OriginateResponse`` (the
manager answered, or why not), the dial, the answer, the end.

Visibility: a token sees a call when one of the call's extensions (a phone
channel's endpoint, an extension dialled through ``callrouter-dial``, the
``from`` of a click-to-call) matches its patterns; for any other call the
answer is 404, the same as for a call that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from router import dialplan
from router.ami.message import Event
from router.ami.numbers import ascii_int
from router.api.auth import Token, audit_of, authorize
from router.api.context import UnansweredAction, read_json
from router.api.dial_settings import (
    REQUEST_VARIABLE,
    DialSettings,
    bad_value,
    call_variable_problem,
)
from router.api.dialing import Dialing, channel_extension
from router.api.errors import ApiError, refuse_unknown_fields, single_header
from router.api.text import shown_did
from router.callerid import MAX_NUMBER, MAX_TEXT, cut_text

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.stream import StreamGap
    from router.api.context import ApiContext
    from router.api.feed import EventFeed
    from router.calls import Call, Channel

__all__ = [
    "DIAL_CONTEXT",
    "OPENAPI",
    "Origination",
    "Originations",
    "live_extensions",
    "no_such_channel",
    "require_live_leg",
    "routes",
]

#: The shipped dialplan's context that rings one extension (transfers go there).
DIAL_CONTEXT: Final = dialplan.DIAL_CONTEXT
#: The leg's DTMF features as Asterisk reads them back (``T``: may transfer).
_FEATURES_VARIABLE: Final = "CHANNEL(dtmf_features)"
#: The leg's state as Asterisk has it now (its ``ChannelStateDesc``: ``Up``, ``Ringing``...).
_STATE_VARIABLE: Final = "CHANNEL(state)"
#: Click-to-call calls remembered per token (after they end too), for ``GET /calls/{id}``.
_KEPT: Final = 1_000
_PROGRESS_MAX: Final = 32
#: Seconds past ``originate_timeout`` and ``ami_timeout`` a click-to-call may
#: stay ``originating`` (no event of it at all) before it counts as failed: a
#: loaded Asterisk queues an Originate late, but not minutes late.
_GIVE_UP_MARGIN: Final = 10.0
#: The ``reason`` of a click-to-call given up on.
NOT_SEEN: Final = "Asterisk showed no sign of the call"
#: Idempotency-Keys remembered per token.
_IDEMPOTENCY_MAX: Final = 10_000
_KEY: Final = 255
_VARIABLES_MAX: Final = 32
_VALUE_MAX: Final = 256
#: C0 controls and DEL: no value needs them (CR, LF and NUL would add AMI headers).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_CREATE_KEYS: Final = ("from", "to", "variables")
_TRANSFER_KEYS: Final = ("to", "mode", "from")
#: Seconds a transfer from a leg answered but in no bridge yet waits for its
#: bridge while the application that will bridge it still runs (docs/api.md,
#: Transfers): Asterisk bridges the two legs a few milliseconds after the answer
#: 1C is told of, or seconds after it when a Dial's ``U()`` gosub, ``A()``
#: announcement or ``D()`` digits, or a Queue's gosub, come first.
BRIDGE_WAIT: Final = 15.0
#: Seconds it waits when no such application is known (the engine saw no
#: ``Newexten`` of the leg's Dial, a stream gap): the bound before 15 s was.
BRIDGE_WAIT_UNKNOWN: Final = 2.0
#: The applications (casefolded) that bridge a leg they rang, or that runs
#: them, once it answers.
_BRIDGING: Final = frozenset({"dial", "queue", "followme", "retrydial", "bridge"})
#: Asterisk's refusal of a BlindTransfer of a channel in no bridge (``manager.c``:
#: ``AST_BRIDGE_TRANSFER_INVALID``).
_NOT_BRIDGED: Final = "Transfer invalid"
#: Its refusal of one alone in its bridge, the other side not in yet (``bridge.c``
#: finds no transferee: ``AST_BRIDGE_TRANSFER_FAIL``). Dial's two legs enter one
#: after the other, so a BlindTransfer between the two gets this.
_ALONE_IN_BRIDGE: Final = "Transfer failed"
#: Asterisk's states (``ChannelStateDesc``) of a leg that rings, not answered:
#: called (``Down``, ``Pre-ring``, ``Ringing``) or calling (``Ring``).
_RINGING: Final = frozenset({"Down", "Pre-ring", "Ringing", "Ring"})

State = Literal["originating", "ringing", "answered", "dialing", "connected", "failed", "ended"]
_ORDER: Final[tuple[State, ...]] = ("originating", "ringing", "answered", "dialing", "connected")


@dataclass(slots=True)
class Origination:
    """One click-to-call as the events show it."""

    id: str
    action_id: str
    extension: str
    number: str
    dial: str
    created: float
    state: State = "originating"
    reason: str | None = None
    #: Asterisk's ``Timestamp`` of the first new channel (None until then).
    first_channel_at: float | None = None
    #: The token that placed it: each token's calls are bounded on their own.
    owner: str = ""
    #: ``failed`` only because no event came in time (:meth:`Originations.give_up`):
    #: an event of the call after that brings it back (:meth:`revive`).
    given_up: bool = False
    #: The manager picked up (the call passed ``answered``): what ``answered``
    #: says of the call once the tracker has let go of it (ended).
    answered: bool = False
    #: The events seen, the last ``_PROGRESS_MAX`` (None until the first: an empty
    #: ``deque`` is 760 B, most of what a click-to-call kept costs).
    progress: deque[dict[str, Any]] | None = None

    def advance(self, state: State) -> list[State]:
        """Move forward only: a late event never takes a call back.

        Returns the states passed, in order. Asterisk does not order the
        ``OriginateResponse`` against the dialplan's own events, so a call can
        be seen dialling before it is seen answered; the states skipped are
        returned too, so the feed always tells ringing, answered, dialing,
        connected in that order.
        """
        if self.state in ("failed", "ended"):
            return []
        if state in ("failed", "ended"):
            self.state = state
            return [state]
        now, then = _ORDER.index(self.state), _ORDER.index(state)
        if then <= now:
            return []
        self.state = state
        passed = list(_ORDER[now + 1 : then + 1])
        self.answered = self.answered or "answered" in passed
        return passed

    def revive(self) -> bool:
        """Take back a ``failed`` that was only a give-up: Asterisk carried the
        Originate out after all (a loaded PBX, past the margin), so the call
        rings the manager; its state follows the events again from
        ``originating``. True when it was given up."""
        if not self.given_up:
            return False
        self.given_up = False
        self.state, self.reason = "originating", None
        return True

    def note(self, step: dict[str, Any]) -> None:
        """Add one event to :attr:`progress` (the oldest goes past ``_PROGRESS_MAX``)."""
        if self.progress is None:
            self.progress = deque(maxlen=_PROGRESS_MAX)
        self.progress.append(step)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.extension,
            "to": self.number,
            "dialled": self.dial,
            "state": self.state,
            "reason": self.reason,
            "progress": list(self.progress or ()),
        }


#: OriginateResponse ``Reason`` codes (AST_CONTROL_*) as words.
_REASONS: Final = {
    "0": "no such extension or channel",
    "1": "hung up",
    "3": "no answer",
    "4": "answered",
    "5": "busy",
    "8": "congestion",
}


class Originations:
    """Click-to-call calls by id and by ActionID, fed by the engine's events.

    Bounded per token (``kept`` each, the oldest forgotten first): a token that
    places many calls forgets its own, never another token's.
    """

    def __init__(self, feed: EventFeed | None = None, kept: int | None = None) -> None:
        self._by_id: dict[str, Origination] = {}
        self._by_action: dict[str, str] = {}
        #: Each owner's call ids, oldest first.
        self._by_owner: dict[str, OrderedDict[str, None]] = {}
        self._kept = _KEPT if kept is None else kept
        #: Told each state a click-to-call reaches (kind ``click_to_call``), at
        #: the ``from`` extension: 1C's panel sees its own call progress.
        self._feed = feed

    def add(self, origination: Origination) -> None:
        self.discard(origination.id)
        self._by_id[origination.id] = origination
        self._by_action[origination.action_id] = origination.id
        mine = self._by_owner.setdefault(origination.owner, OrderedDict())
        mine[origination.id] = None
        while len(mine) > self._kept:
            old_id, _ = mine.popitem(last=False)
            old = self._by_id.pop(old_id, None)
            if old is not None:
                self._by_action.pop(old.action_id, None)

    def get(self, call_id: str) -> Origination | None:
        return self._by_id.get(call_id)

    def discard(self, call_id: str) -> None:
        old = self._by_id.pop(call_id, None)
        if old is None:
            return
        self._by_action.pop(old.action_id, None)
        mine = self._by_owner.get(old.owner)
        if mine is not None:
            mine.pop(call_id, None)
            if not mine:
                del self._by_owner[old.owner]

    def observe(self, item: Event | StreamGap, call: Call | None) -> None:
        """``EngineAPI.watch`` listener: one event's meaning for our calls."""
        if not self._by_id or not isinstance(item, Event):
            return  # no click-to-call to follow: every event costs this test only
        origination = self._find(item, call)
        if origination is None:
            return
        name = item.name
        stamp = item.timestamp
        target: State
        reason: str | None = None
        if name == "OriginateResponse":
            if item.get("Response") == "Success":
                target = "answered"
            else:
                target = "failed"
                code = item.get("Reason")
                # A number from Asterisk; any other text is cut as a caller's is.
                reason = _REASONS.get(code or "", cut_text(code) if code is not None else None)
        elif name == "Newchannel":
            target = "ringing"
        elif name == "DialBegin" or (name == "Newexten" and item.get("Application") == "Dial"):
            target = "dialing"
        elif (name == "DialEnd" and item.get("DialStatus") == "ANSWER") or (
            name == "BridgeEnter" and (ascii_int(item.get("BridgeNumChannels")) or 0) >= 2
        ):
            target = "connected"
        elif name == "Hangup" and call is not None and call.ended is not None:
            target = "ended"
        else:
            return
        # A call given up on (no event in time) exists after all: it comes back,
        # and its state follows the events again.
        origination.revive()
        if name == "Newchannel" and origination.first_channel_at is None:
            origination.first_channel_at = stamp
        if target == "failed":
            origination.reason = reason
        passed = origination.advance(target)
        origination.note({"event": name, "channel": item.get("Channel"), "at": stamp})
        self._publish(origination, passed, stamp)

    def give_up(self, call_id: str) -> None:
        """A click-to-call still ``originating`` when it would have rung out
        counts as ``failed``: an Originate Asterisk did not answer in time and
        never carried out (or whose answer a stream gap lost) stayed
        ``originating`` for ever, in ``GET /calls/{id}``, in the replay of its
        Idempotency-Key and for 1C's panel, which waited for an end. Not
        for good: an event of the call that comes later brings it back
        (:meth:`Origination.revive`), as the call rings the manager."""
        origination = self._by_id.get(call_id)
        if origination is None or origination.state != "originating":
            return
        origination.reason = NOT_SEEN
        origination.given_up = True
        self._publish(origination, origination.advance("failed"), time.time())

    def _publish(self, origination: Origination, passed: list[State], stamp: float | None) -> None:
        if self._feed is None:
            return
        for state in passed:
            self._feed.publish(
                "click_to_call",
                origination.extension,
                {
                    "state": state,
                    "to": origination.number,
                    "reason": origination.reason,
                },
                call_id=origination.id,
                ts=stamp,
            )

    def _find(self, event: Event, call: Call | None) -> Origination | None:
        if event.name == "OriginateResponse":
            call_id = self._by_action.get(event.get("ActionID") or "")
            return self._by_id.get(call_id) if call_id else None
        linkedid = call.linkedid if call is not None else event.get("Linkedid")
        return self._by_id.get(linkedid) if linkedid else None


@dataclass(slots=True)
class _Remembered:
    fingerprint: str
    call_id: str
    expires: float


class IdempotencyKeys:
    """``Idempotency-Key`` per token: the same key and body -> the same call.

    Bounded per token by count (``kept``, oldest forgotten first: a token that
    sends many keys forgets its own, never another token's) and by age
    (``idempotency_ttl``).
    """

    def __init__(self, ttl: float, clock: Any = time.monotonic, kept: int | None = None) -> None:
        self.ttl = ttl
        self._clock = clock
        self._kept = _IDEMPOTENCY_MAX if kept is None else kept
        #: Each token's keys, oldest first (the TTL is the same for all).
        self._keys: dict[str, OrderedDict[str, _Remembered]] = {}

    def lookup(self, token: str, key: str, fingerprint: str) -> str | None:
        """The call made for this key, None for a new key; 409 for another body."""
        mine = self._keys.get(token)
        if mine is None:
            return None
        now = self._clock()
        while mine:
            oldest = next(iter(mine.values()))
            if oldest.expires > now:
                break
            mine.popitem(last=False)
        if not mine:
            del self._keys[token]
            return None
        found = mine.get(key)
        if found is None:
            return None
        if found.fingerprint != fingerprint:
            raise ApiError(
                409,
                "Idempotency-Key was already used with a different request body; "
                "use a new key for a new call",
                field="Idempotency-Key",
            )
        return found.call_id

    def remember(self, token: str, key: str, fingerprint: str, call_id: str) -> None:
        mine = self._keys.setdefault(token, OrderedDict())
        mine[key] = _Remembered(fingerprint, call_id, self._clock() + self.ttl)
        mine.move_to_end(key)
        while len(mine) > self._kept:
            mine.popitem(last=False)

    def forget(self, token: str, key: str) -> None:
        mine = self._keys.get(token)
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._keys[token]


# -- what a call looks like -------------------------------------------------------------


def call_extensions(call: Call | None, origination: Origination | None) -> set[str]:
    """Every extension a call involves: who may see it."""
    found: set[str] = set()
    if origination is not None:
        found.add(origination.extension)
    if call is not None:
        for channel in call.channels.values():
            ext = channel_extension(channel.name)
            if ext:
                found.add(ext)
            if channel.context == DIAL_CONTEXT and channel.exten:
                found.add(channel.exten)
    return found


def live_extensions(call: Call | None) -> set[str]:
    """The extensions on a call now: its live channels, and an extension being dialled.

    :func:`call_extensions` also counts legs that have hung up (a phone a queue
    rang that another agent answered, a manager who transferred the call or
    left a conference): enough to see the call, never to act on it.
    """
    found: set[str] = set()
    for channel in call.active_channels if call is not None else []:
        ext = channel_extension(channel.name)
        if ext:
            found.add(ext)
        if channel.context == DIAL_CONTEXT and channel.exten:
            found.add(channel.exten)
    return found


def no_such_channel(exc: BaseException) -> bool:
    """Asterisk's refusal of an action on a channel that has hung up meanwhile, as
    :meth:`~router.api.context.ApiContext.send` raises it (a 409 keeping the answer)."""
    if not isinstance(exc, ApiError):
        return False
    response = exc.extra.get("ami_response")
    message = response.get("Message") if isinstance(response, dict) else None
    return exc.status == 409 and message == "No such channel"


def require_live_leg(token: Token, call: Call | None) -> None:
    """409 unless one of the token's extensions is on ``call`` now (hangup, record)."""
    if not any(token.sees(ext) for ext in live_extensions(call)):
        raise ApiError(409, "the call has no live leg of an extension this token acts for")


def _call_view(
    ctx: ApiContext, call: Call | None, origination: Origination | None, call_id: str
) -> dict[str, Any]:
    decision = ctx.engine.decision(call_id) if call is not None else None
    view: dict[str, Any] = {
        "id": call_id,
        "state": (call.state if call is not None else "ended")
        if origination is None
        else origination.state,
        "caller": call.caller_number if call is not None else None,
        "caller_name": call.caller_name if call is not None else None,
        "did": (shown_did(call.did) or None) if call is not None else None,
        "answered": call.answered
        if call is not None
        else origination is not None and origination.answered,
        "extensions": sorted(call_extensions(call, origination)),
        "channels": [
            {
                "name": c.name,
                "state": c.state,
                "context": c.context,
                "exten": c.exten,
                "extension": channel_extension(c.name),
            }
            for c in (call.active_channels if call is not None else [])
        ],
        "rule": decision.get("rule") if decision else None,
        "outcome": decision.get("outcome") if decision else None,
        "click_to_call": origination.to_dict() if origination is not None else None,
    }
    return view


def _visible(token: Token, call: Call | None, origination: Origination | None) -> bool:
    return any(token.sees(ext) for ext in call_extensions(call, origination))


def _variables(value: object, settings: DialSettings) -> dict[str, str]:
    """A request's channel variables, each refused with the reason and its name.

    400 for what cannot be a variable (the name's syntax, a value that could add
    AMI headers or split the ``Variable`` header); 422 for a well-formed name the
    request may not set (:func:`~router.api.dial_settings.call_variable_problem`:
    callrouter's and Asterisk's reserved names, router.toml's own, and any name
    ``[api] call_variables`` does not allow). A channel variable shadows the
    dialplan's global of the same name, so a name is where the harm is:
    ``__CALLROUTER_DEFAULT`` once sent a transferred call to a context of the
    request's choosing.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "variables: expected an object of NAME: text", field="variables")
    if len(value) > _VARIABLES_MAX:
        raise ApiError(400, f"variables: at most {_VARIABLES_MAX} variables", field="variables")
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, text in value.items():
        where = f"variables.{name}"[:80]
        if not REQUEST_VARIABLE.fullmatch(name):
            raise ApiError(
                400,
                f"{where}: not a variable name (a letter, then letters, digits, _; "
                "up to 64; _ or __ before it to inherit)",
                field=where,
            )
        if not isinstance(text, str):
            raise ApiError(400, f"{where}: expected text", field=where)
        # Asterisk splits a Variable header at commas: "a,EVIL=1" would set two.
        if bad_value(text) or _CONTROL.search(text) or "," in text or len(text) > _VALUE_MAX:
            raise ApiError(
                400,
                f"{where}: no control characters or comma, at most {_VALUE_MAX} characters",
                field=where,
            )
        base = name.lstrip("_")
        if base.upper() in seen:
            raise ApiError(
                400,
                f"{where}: the same variable as {seen[base.upper()]!r} (leading _ only "
                "says how far it is inherited)",
                field=where,
            )
        seen[base.upper()] = name
        problem = call_variable_problem(name, settings)
        if problem is not None:
            raise ApiError(422, f"{where}: {problem}", field=where)
        out[name] = text
    return out


@dataclass(slots=True, eq=False)
class _BridgeWait:
    """One transfer waiting for its leg to share a bridge with someone."""

    #: The call of the leg (``Linkedid``): its channels' moves stir the wait.
    linkedid: str = ""
    woke: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a channel of the call moved (``Newexten``, ``DialEnd``,
    #: ``Hangup``): the transfer looks again whether a bridge is still coming.
    stirred: asyncio.Event = field(default_factory=asyncio.Event)
    #: The bridge the leg entered (``BridgeUniqueid``), "" until then.
    bridge: str = ""


class _BridgeWaits:
    """``EngineAPI.watch`` listener: wakes the transfers waiting for a leg's bridge.

    A leg is ready when it is in a bridge with another channel: its own
    ``BridgeEnter`` with ``BridgeNumChannels`` of 2 or more, or, when it came in
    first, the next ``BridgeEnter`` into that bridge. Its ``Hangup`` and a stream
    gap wake the wait too: the transfer then reads the tracker again. A move of
    any channel of its call stirs it: the transfer looks whether the
    application that would bridge the leg still runs (:func:`_bridge_coming`).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[_BridgeWait]] = {}

    @contextmanager
    def expect(self, channel: str, linkedid: str = "", bridge: str = "") -> Iterator[_BridgeWait]:
        """Follow ``channel`` (of the call ``linkedid``, in ``bridge`` when the
        tracker saw it enter one) while the block runs: ``woke`` is set when it
        is ready, ``stirred`` when its call moved."""
        wait = _BridgeWait(linkedid, bridge=bridge)
        self._waiting.setdefault(channel, []).append(wait)
        try:
            yield wait
        finally:
            mine = self._waiting.get(channel, [])
            if wait in mine:
                mine.remove(wait)
            if not mine:
                self._waiting.pop(channel, None)

    def observe(self, item: Event | StreamGap, call: Call | None) -> None:
        if not self._waiting:
            return
        if not isinstance(item, Event):  # a gap: the events that would tell are lost
            for waits in self._waiting.values():
                for wait in waits:
                    wait.woke.set()
            return
        name = item.name
        if name in ("Newexten", "DialEnd", "Hangup") and call is not None:
            for waits in self._waiting.values():
                for wait in waits:
                    if wait.linkedid == call.linkedid:
                        wait.stirred.set()
        if name == "Hangup":
            for wait in self._waiting.get(item.get("Channel") or "", ()):
                wait.woke.set()
            return
        if name != "BridgeEnter":
            return
        bridge = item.get("BridgeUniqueid") or ""
        together = (ascii_int(item.get("BridgeNumChannels")) or 0) >= 2
        for wait in self._waiting.get(item.get("Channel") or "", ()):
            wait.bridge = bridge
            if together:
                wait.woke.set()
        if together and bridge:
            for waits in self._waiting.values():
                for wait in waits:
                    if wait.bridge == bridge:
                        wait.woke.set()


def _leg_now(ctx: ApiContext, leg: str) -> tuple[Call | None, Channel | None]:
    """The call ``leg`` is on and its tracked channel, as the engine knows them now."""
    call = ctx.engine.calls.by_channel(leg)
    return call, call.channels.get(leg) if call is not None else None


def _unanswered(call: Call | None, chan: Channel | None) -> str | None:
    """Asterisk's state of a leg that has not answered yet (ringing), else None.

    Nothing bridges such a leg in the next moment, so a transfer refused for
    want of a bridge is refused at once. The called side rings in ``Down``
    (before the phone's ringing is heard) and ``Ringing``; the calling side is
    ``Ring`` until its Dial answers it, which Asterisk does a moment *after*
    the ``DialEnd`` 1C hears as ``answered``: ringing only while the call has
    no answer. Any other state (not known yet, ``Up``, one Asterisk names
    otherwise) is not taken for ringing: the transfer waits as before.
    """
    if chan is None or call is None or chan.state not in _RINGING:
        return None
    if chan.state == "Ring" and call.answered:
        return None
    return chan.state


async def _still_ringing(ctx: ApiContext, leg: str) -> str | None:
    """The state of ``leg`` when it has not answered yet (:func:`_unanswered`),
    as Asterisk has it now, else None.

    The engine knows the leg from Asterisk's events, which reach it a moment
    after the fact: a transfer asked the instant the phone answered (by the
    phone's own CRM button, a softphone, the office soak's worker) found the
    leg still ``Ringing`` in the tracker, and was refused 409 "has not answered
    (Asterisk's state: Ringing)" of a leg Asterisk had answered and was
    bridging. So a leg the engine sees ringing is asked of Asterisk
    (``Getvar`` of ``CHANNEL(state)``); when Asterisk does not say, the
    engine's view stands.
    """
    ringing = _unanswered(*_leg_now(ctx, leg))
    if ringing is None:
        return None
    try:
        answer = await ctx.send(
            "Getvar", {"Channel": leg, "Variable": _STATE_VARIABLE}, validate=False
        )
    except ApiError:  # no such channel (it hung up), no answer in time
        return ringing
    now = str(answer.response.get("Value") or "")
    if not now:
        return ringing
    call, _ = _leg_now(ctx, leg)
    if now not in _RINGING or (now == "Ring" and call is not None and call.answered):
        return None
    return now


def _hung_up(ctx: ApiContext, leg: str) -> bool:
    call, chan = _leg_now(ctx, leg)
    return call is None or call.ended is not None or chan is None or chan.hung_up


def _bridge_coming(call: Call | None, leg: str) -> tuple[str, str]:
    """Whether a bridge is still coming for ``leg``, answered and in none yet.

    ``("bridging", what)``: the application that will bridge it runs, the leg's
    own (it placed the call: ``Dial``) or the one of the channel that rang it
    (``Dial``, ``Queue``, ...), which holds the bridge back while a ``U()``
    gosub or an ``A()`` announcement plays; ``("left", why)``: that channel
    hung up or went on to another application, so none is; ``("hung up", "")``:
    the leg did; ``("unknown", "")``: the engine saw no application of either
    (a lost event, a leg it never saw rung).
    """
    chan = call.channels.get(leg) if call is not None else None
    if call is None or call.ended is not None or chan is None or chan.hung_up:
        return "hung up", ""
    dialer = call.channels.get(chan.dialed_by) if chan.dialed_by else None
    for who in (chan, dialer):
        if who is not None and not who.hung_up and who.application.casefold() in _BRIDGING:
            return "bridging", f"{who.name} in {who.application}"
    if dialer is not None and dialer.hung_up:
        return "left", f"{dialer.name}, which rang it, hung up"
    if dialer is not None and dialer.application:
        return "left", f"{dialer.name}, which rang it, went on to {dialer.application}"
    return "unknown", ""


async def _until_bridged(
    ctx: ApiContext, leg: str, wait: _BridgeWait, refused: Callable[[str], ApiError]
) -> None:
    """Wait for ``wait.woke`` (``leg`` bridged, hung up, a gap) while a bridge is
    coming (:func:`_bridge_coming`): up to :data:`BRIDGE_WAIT` while the
    application that will bridge it runs, :data:`BRIDGE_WAIT_UNKNOWN` when
    none is known. ``refused(why)`` is raised at once when it stops (hung up,
    went on elsewhere) or when the time is up."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not wait.woke.is_set():
        kind, what = _bridge_coming(_leg_now(ctx, leg)[0], leg)
        if kind == "hung up":
            raise _gone(leg)
        if kind == "left":
            raise refused(f"{what}: no bridge is coming")
        bound = BRIDGE_WAIT if kind == "bridging" else BRIDGE_WAIT_UNKNOWN
        left = started + bound - loop.time()
        if left <= 0:
            raise refused(f"{leg} entered no bridge with the other side within {bound:g} s")
        wait.stirred.clear()
        woke = asyncio.ensure_future(wait.woke.wait())
        stirred = asyncio.ensure_future(wait.stirred.wait())
        try:
            await asyncio.wait((woke, stirred), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woke.cancel()
            stirred.cancel()


def _gone(leg: str) -> ApiError:
    return ApiError(
        409, f"{leg} hung up before Asterisk bridged it: the call ended, nothing was transferred"
    )


async def _blind_transfer(
    ctx: ApiContext, waits: _BridgeWaits, leg: str, params: dict[str, Any]
) -> None:
    """BlindTransfer of ``leg``, once more after its bridge if Asterisk was early.

    1C hears ``answered`` (the answer) a few milliseconds before Asterisk puts
    the two legs into a bridge (36 ms seen on a loaded host); a BlindTransfer in
    between is refused with ``Transfer invalid``, or ``Transfer failed`` once the
    leg is in the bridge and the other side not yet. A leg never seen in a bridge,
    or seen in one alone (the tracker's ``BridgeNumChannels`` of 1: only
    ``Transfer failed`` then), gets up to :data:`BRIDGE_WAIT` seconds to share
    one with the other side while the application that will bridge it runs
    (:func:`_until_bridged`), and the
    transfer is sent again once, unless the leg hung up meanwhile (409, nothing
    moved). A leg still ringing, or whose Dial went on elsewhere, is refused at
    once: no bridge is coming for it.
    """
    call, chan = _leg_now(ctx, leg)
    bridged = chan is not None and chan.entered_bridge
    # Seen entering its bridge alone, the other side not in yet: the wait knows
    # that bridge, so the other side's BridgeEnter into it wakes it.
    alone = chan.bridge if chan is not None and chan.bridge_channels == 1 else ""
    with waits.expect(leg, call.linkedid if call is not None else "", alone) as wait:
        try:
            await ctx.send("BlindTransfer", params)
            return
        except ApiError as exc:
            if exc.status != 409:
                raise
            if bridged:
                early = bool(alone) and _ALONE_IN_BRIDGE in exc.detail
            else:
                early = _NOT_BRIDGED in exc.detail or _ALONE_IN_BRIDGE in exc.detail
            if not early:
                raise
            refused = exc
        ami_response = refused.extra.get("ami_response")
        ringing = await _still_ringing(ctx, leg)
        if ringing is not None:
            raise ApiError(
                409,
                f"{refused.detail}: {leg} has not answered (Asterisk's state: {ringing}), "
                "nothing was transferred",
                ami_response=ami_response,
            ) from None
        await _until_bridged(
            ctx,
            leg,
            wait,
            lambda why: ApiError(409, f"{refused.detail}: {why}", ami_response=ami_response),
        )
    if _hung_up(ctx, leg):
        raise _gone(leg)
    await ctx.send("BlindTransfer", params)


async def _attended_transfer(
    ctx: ApiContext, waits: _BridgeWaits, leg: str, params: dict[str, Any]
) -> None:
    """Atxfer from ``leg``, after its bridge if Asterisk has not bridged it yet.

    Asterisk gives a leg its transfer feature (option t, read back as
    ``CHANNEL(dtmf_features)``) as it bridges it, a moment after the answer 1C
    hears: a leg asked in between has none. As :func:`_blind_transfer`, a leg
    never seen in a bridge, or seen in one alone (the tracker's
    ``BridgeNumChannels`` of 1, the other side not in yet), waits for the
    other side (:func:`_until_bridged`) and is asked again; a leg that shares
    its bridge is refused at once, and so is a leg still ringing.
    """
    call, chan = _leg_now(ctx, leg)
    bridged = chan is not None and chan.entered_bridge
    # As the blind one: the other side's BridgeEnter into that bridge wakes it.
    alone = chan.bridge if chan is not None and chan.bridge_channels == 1 else ""
    with waits.expect(leg, call.linkedid if call is not None else "", alone) as wait:
        if await _may_transfer(ctx, leg):
            await ctx.send("Atxfer", params)
            return
        if bridged and not alone:
            raise _may_not_transfer(leg)
        ringing = await _still_ringing(ctx, leg)
        if ringing is not None:
            raise ApiError(
                409,
                f"{leg} has not answered (Asterisk's state: {ringing}): an attended "
                "transfer acts from a leg talking with the other side, nothing was transferred",
            )
        await _until_bridged(ctx, leg, wait, lambda why: _may_not_transfer(leg, f" ({why})"))
    if _hung_up(ctx, leg):
        raise _gone(leg)
    if not await _may_transfer(ctx, leg):
        raise _may_not_transfer(leg)
    await ctx.send("Atxfer", params)


# -- the endpoints ----------------------------------------------------------------------


def routes(ctx: ApiContext) -> list[BaseRoute]:
    settings = ctx.settings.dialing
    dialing = Dialing(ctx.engine.config, settings.dial_prefix)
    originations = Originations(ctx.feed)
    ctx.engine.watch(originations.observe)

    def ended_call(call_id: str) -> set[str] | None:
        origination = originations.get(call_id)
        if origination is None or origination.state not in ("ended", "failed"):
            return None  # unknown, or not yet begun (no channel): not ended
        if ctx.engine.calls.get(call_id) is not None:
            return None
        return call_extensions(None, origination)

    ctx.ended_call = ended_call
    waits = _BridgeWaits()
    ctx.engine.watch(waits.observe)
    keys = IdempotencyKeys(settings.idempotency_ttl)
    #: The keys whose Originate is out, by (token, key): set once Asterisk answered.
    pending: dict[tuple[str, str], asyncio.Event] = {}

    def find(token: Token, call_id: str) -> tuple[Call | None, Origination | None]:
        call = ctx.engine.calls.get(call_id)
        origination = originations.get(call_id)
        if (call is None and origination is None) or not _visible(token, call, origination):
            raise ApiError(404, f"no call {call_id[:80]!r} that this token may see")
        return call, origination

    async def create(request: Request) -> JSONResponse:
        token = await authorize(request, "calls:create")
        body = await read_json(request, required=True)
        refuse_unknown_fields(body, _CREATE_KEYS)
        if "from" not in body:
            raise ApiError(400, "from: required (the manager's extension)", field="from")
        if "to" not in body:
            raise ApiError(400, "to: required (the number to call)", field="to")
        extension = dialing.extension(body["from"], "from")
        await authorize(request, "calls:create", extension)
        number = dialing.number(body["to"], "to")
        variables = {**settings.variables, **_variables(body.get("variables"), settings)}
        key = single_header(request, "idempotency-key", "Idempotency-Key")
        fingerprint = hashlib.sha256(
            json.dumps(body, sort_keys=True, ensure_ascii=True).encode()
        ).hexdigest()
        if key is not None:
            if not key or len(key) > _KEY or not key.isascii() or not key.isprintable():
                raise ApiError(
                    400,
                    f"Idempotency-Key: 1 to {_KEY} printable ASCII characters",
                    field="Idempotency-Key",
                )
            known = keys.lookup(token.name, key, fingerprint)
            while known is not None and (sending := pending.get((token.name, key))) is not None:
                # The first request's Originate is still out (1C's client timed
                # out first and sent again): its answer decides what this one is.
                # Again while another's holds the key: of retries woken by a
                # refusal, the first tries again, and the rest wait for that try.
                await sending.wait()
                known = keys.lookup(token.name, key, fingerprint)
            if known is not None:
                origination = originations.get(known)
                return JSONResponse(
                    _call_view(ctx, ctx.engine.calls.get(known), origination, known),
                    status_code=200,
                    headers={"Location": f"/api/v1/calls/{known}", "Idempotent-Replayed": "true"},
                )
        ctx.require_asterisk()
        call_id = f"c2c-{secrets.token_hex(10)}"
        origination = Origination(
            id=call_id,
            action_id=f"callrouter-api-{call_id}",
            extension=extension,
            number=number.number,
            dial=number.dial,
            created=time.time(),
            owner=token.name,
        )
        params: dict[str, Any] = {
            "Channel": settings.originate_channel.format(extension=extension),
            "Context": settings.outbound_context,
            "Exten": number.dial,
            "Priority": 1,
            "CallerID": settings.caller_id.format(extension=extension, number=number.number),
            "Timeout": int(settings.originate_timeout * 1000),
            "Async": "true",
            "ChannelId": call_id,
        }
        if variables:
            params["Variable"] = variables
        # Rendered before the send: Asterisk may report the call's channels before
        # it answers the Originate, and the 201 is the call as queued (docs/api.md);
        # its progress is the GET's and the event feed's.
        created = JSONResponse(
            _call_view(ctx, None, origination, call_id),
            status_code=201,
            headers={"Location": f"/api/v1/calls/{call_id}"},
        )
        # Registered after everything that could raise and before the first await,
        # with the try that takes it back next: a retry racing this request finds
        # the call and waits for Asterisk's answer to it (a refusal frees the key);
        # nothing can leave a retry waiting for a send that never happens.
        originations.add(origination)
        sent = asyncio.Event()
        if key is not None:
            keys.remember(token.name, key, fingerprint, call_id)
            pending[(token.name, key)] = sent
        try:
            await ctx.send("Originate", params, action_id=origination.action_id)
        except UnansweredAction as exc:
            # Sent, but not answered in time: Asterisk may still place the call
            # (a loaded PBX answers late). The key keeps it, so 1C's retry after
            # its own timeout gets this call instead of ringing the manager twice;
            # its progress, if any, comes in the events and GET /calls/{id} as ever.
            retry = (
                "a retry with the same Idempotency-Key answers it instead of placing another"
                if key is not None
                else "GET /calls/{id} or the event feed tells; a retry places another call"
            )
            raise UnansweredAction(
                exc.status,
                f"{exc.detail}; the call {call_id!r} may still be placed: {retry}",
                headers=exc.headers,
                call_id=call_id,
            ) from None
        except ApiError:
            originations.discard(call_id)
            if key is not None:
                keys.forget(token.name, key)
            raise
        finally:
            if key is not None and pending.get((token.name, key)) is sent:
                del pending[(token.name, key)]
            sent.set()
            if originations.get(call_id) is origination:  # not refused
                # Bounded: a late Originate never carried out is not
                # ``originating`` for ever (:meth:`Originations.give_up`).
                asyncio.get_running_loop().call_later(
                    settings.originate_timeout + ctx.settings.ami_timeout + _GIVE_UP_MARGIN,
                    originations.give_up,
                    call_id,
                )
        return created

    async def list_calls(request: Request) -> JSONResponse:
        token = await authorize(request, "calls:read")
        calls = [
            _call_view(ctx, call, originations.get(call.linkedid), call.linkedid)
            for call in ctx.engine.calls
            if call.ended is None and _visible(token, call, originations.get(call.linkedid))
        ]
        return JSONResponse({"calls": calls})

    async def get_call(request: Request) -> JSONResponse:
        call_id = str(request.path_params["id"])
        audit_of(request).target = call_id  # which call, refused or not (as recordings)
        token = await authorize(request, "calls:read")
        call, origination = find(token, call_id)
        return JSONResponse(_call_view(ctx, call, origination, call_id))

    async def hangup(request: Request) -> JSONResponse:
        call_id = str(request.path_params["id"])
        audit_of(request).target = call_id  # which call, refused or not (as recordings)
        token = await authorize(request, "calls:hangup")
        call, _ = find(token, call_id)
        channels = [c.name for c in call.active_channels] if call is not None else []
        if not channels:
            raise ApiError(409, f"call {call_id!r} has no live channel to hang up")
        # Seeing a call is not enough to end it: a leg of 101 that hung up (a
        # queue's ring, a transfer, a conference left) keeps the call visible.
        require_live_leg(token, call)
        ctx.require_asterisk()
        gone: list[ApiError] = []
        for channel in channels:
            try:
                await ctx.send("Hangup", {"Channel": channel, "Cause": 16})
            except ApiError as exc:
                # Hanging up one leg of a bridged call ends its peer as well, so
                # the next Hangup finds no such channel: that one is done too.
                if not no_such_channel(exc):
                    raise
                gone.append(exc)
        if len(gone) == len(channels):
            raise gone[0]  # Asterisk had none of them: the call had ended already
        return JSONResponse({"id": call_id, "hung_up": channels}, status_code=202)

    async def transfer(request: Request) -> JSONResponse:
        call_id = str(request.path_params["id"])
        audit_of(request).target = call_id  # which call, refused or not (as recordings)
        token = await authorize(request, "calls:transfer")
        call, _ = find(token, call_id)
        body = await read_json(request, required=True)
        refuse_unknown_fields(body, _TRANSFER_KEYS)
        mode = body.get("mode", "blind")
        if mode not in ("blind", "attended"):
            raise ApiError(400, "mode: expected 'blind' or 'attended'", field="mode")
        if "to" not in body:
            raise ApiError(400, "to: required (the extension or number)", field="to")
        context, exten = _destination(dialing, settings.outbound_context, body["to"])
        leg = _transferring_leg(token, call, body.get("from"), dialing)
        ctx.require_asterisk()
        if mode == "blind":
            # BlindTransfer moves whoever is bridged with ``leg`` (the customer)
            # to the destination; the extension's own leg is released.
            # It waits (bounded) for a leg answered a moment ago to be bridged.
            params = {"Channel": leg, "Context": context, "Exten": exten}
            await _blind_transfer(ctx, waits, leg, params)
        else:
            # Atxfer dials the destination from ``leg``: the extension talks to
            # the target first and completes the transfer by hanging up. It
            # waits (bounded) as the blind one for Asterisk's bridge.
            params = {"Channel": leg, "Context": context, "Exten": exten}
            await _attended_transfer(ctx, waits, leg, params)
        return JSONResponse(
            {"id": call_id, "mode": mode, "channel": leg, "context": context, "exten": exten},
            status_code=202,
        )

    return [
        Route("/api/v1/calls", create, methods=["POST"], name="calls-create"),
        Route("/api/v1/calls", list_calls, methods=["GET"], name="calls-list"),
        Route("/api/v1/calls/{id}", get_call, methods=["GET"], name="calls-get"),
        Route("/api/v1/calls/{id}/hangup", hangup, methods=["POST"], name="calls-hangup"),
        Route("/api/v1/calls/{id}/transfer", transfer, methods=["POST"], name="calls-transfer"),
    ]


def _destination(dialing: Dialing, outbound: str, value: object) -> tuple[str, str]:
    """Where a transfer goes: an extension through ``callrouter-dial`` (so DND and
    forwarding apply), an outside number through the outbound context."""
    number = dialing.number(value, "to")
    if number.internal:
        return DIAL_CONTEXT, dialing.extension(number.number, "to")
    return outbound, number.dial


async def _may_transfer(ctx: ApiContext, leg: str) -> bool:
    """Whether Asterisk acts on an attended transfer from ``leg`` now.

    AMI Atxfer only queues the atxfer feature code and the digits on ``leg``
    as if its phone had pressed them; on a leg whose Dial or Queue did not
    allow transfers (option t, or T for the calling side) nothing acts on
    them and the customer hears tones. Asterisk reads the allowed features
    back as ``CHANNEL(dtmf_features)``, with ``T`` for transfers, once it has
    bridged the leg.
    """
    answer = await ctx.send(
        "Getvar", {"Channel": leg, "Variable": _FEATURES_VARIABLE}, validate=False
    )
    return "T" in (answer.response.get("Value") or "")


def _may_not_transfer(leg: str, why: str = "") -> ApiError:
    """The 409 for an attended transfer Asterisk would accept and then ignore."""
    return ApiError(
        409,
        f"{leg} may not transfer: Asterisk acts on an attended transfer only when "
        "the Dial or Queue that connected the extension has option t (T when the "
        f"extension placed the call){why}; see docs/api.md, Transfers",
        field="mode",
    )


def _transferring_leg(token: Token, call: Call | None, chosen: object, dialing: Dialing) -> str:
    """The channel of the extension that hands the call on (the token must see it).

    That extension's own leg is what BlindTransfer and Atxfer act from: its
    bridge partner (the customer) is the one who moves. Without ``from`` the
    call must have one such extension: the customer's side never transfers
    (the line the call came in on, a trunk, an outside number), and one
    extension's channels (a Local pair, its phone's leg) are one leg.
    """
    wanted = None if chosen is None else dialing.extension(chosen, "from")
    if wanted is not None and not token.sees(wanted):
        raise ApiError(403, f"token {token.name!r} may not act for extension {wanted!r}")
    by_extension: dict[str, list[str]] = {}
    for channel in call.active_channels if call is not None else []:
        ext = channel_extension(channel.name)
        if ext is not None and token.sees(ext) and (wanted is None or ext == wanted):
            by_extension.setdefault(ext, []).append(channel.name)
    if not by_extension:
        detail = "the call has no live leg of an extension this token acts for"
        if wanted is not None:  # say who is on it, of those the token may see
            on_it = _extensions_on(token, call, dialing)
            detail = f"from: extension {wanted} has no live leg on the call" + (
                f" (this token's extensions on it now: {', '.join(on_it)})" if on_it else ""
            )
        raise ApiError(409, detail, field="from")
    every = [name for names in by_extension.values() for name in names]
    if len(by_extension) > 1:
        assert call is not None
        came_in = channel_extension(call.waiting_channel or "")
        by_extension = {
            ext: names
            for ext, names in by_extension.items()
            if ext != came_in and dialing.internal(ext)
        }
    leg = _one_leg(next(iter(by_extension.values()))) if len(by_extension) == 1 else None
    if leg is None:
        raise ApiError(
            400,
            f"from: the call has several legs this token acts for ({', '.join(every)}); "
            + (
                "say which extension transfers"
                + (f' ("from": one of {", ".join(sorted(by_extension))})' if by_extension else "")
                if wanted is None
                else f"extension {wanted} is on it more than once"
            ),
            field="from",
        )
    return leg


def _extensions_on(token: Token, call: Call | None, dialing: Dialing) -> list[str]:
    """The internal extensions the token acts for that have a live leg on ``call``."""
    found = {
        ext
        for channel in (call.active_channels if call is not None else [])
        if (ext := channel_extension(channel.name)) is not None
        and token.sees(ext)
        and dialing.internal(ext)
    }
    return sorted(found)


def _one_leg(channels: list[str]) -> str | None:
    """One extension's leg among its channels, None if it has several.

    A Local channel pair counts once: its ``;1`` half is the one bridged with
    the other party (the ``;2`` half runs the dialplan towards the phone, and
    the phone's own channel is bridged with that), so it is what moves the
    customer; without a Local pair, the extension's one channel.
    """
    if len(channels) == 1:
        return channels[0]
    firsts = [c for c in channels if c.startswith("Local/") and c.endswith(";1")]
    if len(firsts) == 1:
        return firsts[0]
    own = [c for c in channels if not c.startswith("Local/")]
    return own[0] if not firsts and len(own) == 1 else None


_PROBLEM: dict[str, Any] = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_ID_PARAM: dict[str, Any] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The call's Linkedid (a click-to-call's id is its first channel's Uniqueid)",
    "schema": {"type": "string"},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _PROBLEM for code in codes}


_CALL_REF: Final = {"$ref": "#/components/schemas/Call"}
_NULLABLE_TEXT: Final = {"type": ["string", "null"]}

#: This module's part of ``/api/v1/openapi.json``.
OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/v1/calls": {
            "post": {
                "operationId": "createCall",
                "summary": "Click-to-call: ring the extension, then dial the number (calls:create)",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "The same key and body again return the same call",
                        "schema": {"type": "string", "minLength": 1, "maxLength": _KEY},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["from", "to"],
                                "additionalProperties": False,
                                "properties": {
                                    "from": {"type": "string", "description": "Extension"},
                                    "to": {"type": "string", "description": "Phone number"},
                                    "variables": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(_CALL_REF, "The call, originating"),
                    "200": _json(_CALL_REF, "The call made earlier for this Idempotency-Key"),
                    **_errors(400, 401, 403, 409, 413, 422, 429, 503),
                },
            },
            "get": {
                "operationId": "listCalls",
                "summary": "Live calls this token sees (calls:read)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["calls"],
                            "properties": {"calls": {"type": "array", "items": _CALL_REF}},
                        },
                        "Live calls",
                    ),
                    **_errors(401, 403, 429),
                },
            },
        },
        "/api/v1/calls/{id}": {
            "get": {
                "operationId": "getCall",
                "summary": "One call and, for a click-to-call, its progress (calls:read)",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": _json(_CALL_REF, "The call"),
                    **_errors(401, 403, 404, 429),
                },
            }
        },
        "/api/v1/calls/{id}/hangup": {
            "post": {
                "operationId": "hangupCall",
                "summary": "Hang up every channel of the call (calls:hangup)",
                "parameters": [_ID_PARAM],
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "hung_up": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "Hangup sent; the call's end follows as events",
                    ),
                    **_errors(401, 403, 404, 409, 429, 503),
                },
            }
        },
        "/api/v1/calls/{id}/transfer": {
            "post": {
                "operationId": "transferCall",
                "summary": "Blind (BlindTransfer) or attended (Atxfer) transfer (calls:transfer)",
                "parameters": [_ID_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["to"],
                                "additionalProperties": False,
                                "properties": {
                                    "to": {"type": "string"},
                                    "mode": {"enum": ["blind", "attended"]},
                                    "from": {
                                        "type": "string",
                                        "description": "The extension that transfers, "
                                        "when the call has several",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "mode": {"type": "string"},
                                "channel": {"type": "string"},
                                "context": {"type": "string"},
                                "exten": {"type": "string"},
                            },
                        },
                        "Transfer sent",
                    ),
                    **_errors(400, 401, 403, 404, 409, 413, 429, 503),
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Call": {
                "type": "object",
                "required": ["id", "state", "extensions", "channels"],
                "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string"},
                    # The caller writes them: cut where they enter (router.callerid).
                    "caller": {**_NULLABLE_TEXT, "maxLength": MAX_NUMBER},
                    "caller_name": {**_NULLABLE_TEXT, "maxLength": MAX_TEXT},
                    "did": {**_NULLABLE_TEXT, "maxLength": MAX_NUMBER},
                    "answered": {"type": "boolean"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                    "channels": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "state": {"type": "string"},
                                "context": {"type": "string"},
                                "exten": {"type": "string"},
                                "extension": _NULLABLE_TEXT,
                            },
                        },
                    },
                    "rule": _NULLABLE_TEXT,
                    "outcome": _NULLABLE_TEXT,
                    "click_to_call": {
                        "type": ["object", "null"],
                        "properties": {
                            "from": {"type": "string"},
                            "to": {"type": "string"},
                            "dialled": {"type": "string"},
                            "state": {"type": "string"},
                            "reason": _NULLABLE_TEXT,
                            "progress": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            }
        }
    },
}
