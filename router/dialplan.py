"""The contract with the dialplan, the one place it is written down: the names
the shipped snippet (``examples/asterisk/extensions.conf``) and callrouter
share, the routing request parsed from its ``UserEvent`` (or rebuilt from a
channel listing after a gap), the deadline arithmetic, which values may name a
location, and which fields of the request event can be believed.

The dialplan announces each inbound call with ``UserEvent(CallRouterRequest)``
carrying ``DID``, ``Caller`` and ``Wait``, sets ``CALLROUTER_DEADLINE`` (its
``EPOCH`` plus the wait) and ``CALLROUTER_DID`` on the channel, then waits in
``Wait()`` and goes to its default route. callrouter acts only before that
deadline minus a safety margin (:meth:`Dialplan.deadline`).

Two kinds of text reach Asterisk from callrouter and come from people who are
not the administrator: a rule's template filled in from a lookup (a 1C
manager card, a directory) and the caller's own number and name (whatever the
SIP ``From`` says). A location (``context``, ``exten``) built from such a value
ends up in ``Dial(PJSIP/${EXTEN})`` of the shipped dialplan, where ``&`` adds
a second channel and ``,`` adds Dial options; so every location is held to a
strict pattern before any action is sent (:class:`LocationPolicy`).

The request ``UserEvent`` mixes the channel snapshot Asterisk writes itself
(``Channel``, ``CallerIDNum``, ``Exten``, ...) with the keys the dialplan passes
as application arguments (``DID``, ``Caller``). Asterisk splits those arguments
on commas and keeps the last value of a repeated key, so an unfiltered caller
number such as ``7916...,DID: 7495...`` rewrites ``DID``. The snapshot comes
first and is not the caller's to write: :func:`request_did` and
:func:`request_caller` read it, and only fall back to the dialplan's keys when
the snapshot cannot carry the value.

Sans-I/O: imports nothing from the network side; the clocks are arguments.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from router.ami.message import Event, Message, normalize_key, sent_by_channel
from router.ami.numbers import ascii_float
from router.callerid import cut_number, cut_text

__all__ = [
    "DEADLINE_VARIABLE",
    "DECIDED_VARIABLE",
    "DEFAULT_LOCATION_PATTERN",
    "DIAL_CONTEXT",
    "DID_VARIABLE",
    "FELL_VARIABLE",
    "FWDINT_PREFIX",
    "INBOUND_CONTEXT",
    "LOCATION_PARAMS",
    "NEXT_CHARS",
    "NEXT_VARIABLE",
    "PARK_APPLICATIONS",
    "PART_SEPARATOR",
    "RECORD_CONTEXT",
    "RECORD_PATH_CHARS",
    "RECORD_VARIABLE",
    "REQUEST_EVENT",
    "RUN_BY_ASTERISK",
    "WAIT_APPLICATION",
    "Dialplan",
    "KnownContext",
    "LocationPolicy",
    "RoutingRequest",
    "argument_problem",
    "dialplan_value",
    "location_problem",
    "missing_target",
    "next_location",
    "request_caller",
    "request_did",
    "shown",
]

#: The ``UserEvent`` name the dialplan emits for each call to route.
REQUEST_EVENT: Final = "CallRouterRequest"
#: The context calls wait in (``[callrouter-inbound]`` of the snippet).
INBOUND_CONTEXT: Final = "callrouter-inbound"
#: The snippet's context that rings one extension (a rule's redirect to an
#: extension, the API's transfers and internal forwards go there).
DIAL_CONTEXT: Final = "callrouter-dial"
#: The global variable (``CALLROUTER_FWDINT_101``) that is ``1`` when an
#: extension's forward number is internal: ``[callrouter-dial]`` then dials it
#: through itself, not the outbound (trunk) context.
FWDINT_PREFIX: Final = "CALLROUTER_FWDINT_"
#: Channel variable: the ``EPOCH`` at which the dialplan stops waiting.
DEADLINE_VARIABLE: Final = "CALLROUTER_DEADLINE"
#: Channel variable: the DID, filtered to ``0-9*#+``.
DID_VARIABLE: Final = "CALLROUTER_DID"
#: Channel variable: set (to ``EPOCH``) when the wait ended without a
#: Redirect and the call took the default route; the reconcile at start
#: counts calls carrying it and not :data:`DECIDED_VARIABLE`
#: (``callrouter_fallthroughs_total{cause="down"}``).
FELL_VARIABLE: Final = "CALLROUTER_FELL"
#: Channel variable: set by a live callrouter (``Setvar``, after the decision
#: line) on a waiting channel it decided not to redirect, to the outcome
#: (``fell-through``, ``late``, ``failed``): the call was counted then, so a
#: later start does not count it as fallen while no callrouter ran. Not the
#: dialplan's: the snippet needs no change for it.
DECIDED_VARIABLE: Final = "CALLROUTER_DECIDED"
#: The step a recorded call passes through on its way to the rule's target
#: (``[callrouter-record]`` of the snippet): the dialplan starts ``MixMonitor``
#: itself, so callrouter's manager user needs no ``system`` write class.
RECORD_CONTEXT: Final = "callrouter-record"
#: Channel variable: the files ``[callrouter-record]`` records, ``mix^in^out``
#: (full paths; an empty part is not recorded).
RECORD_VARIABLE: Final = "CALLROUTER_RECORD"
#: Channel variable: the id of callrouter's own MixMonitor on the channel
#: (MixMonitor's ``i()`` option, in ``[callrouter-record]`` and in the AMI
#: action). ``StopMixMonitor`` names it: without a ``MixMonitorID`` Asterisk
#: stops the channel's newest MixMonitor, often the PBX's own recording
#: (FreePBX and many dialplans record every call).
MIXMONITOR_ID_VARIABLE: Final = "CALLROUTER_REC_ID"
#: Channel variable: where ``[callrouter-record]`` sends the call on,
#: ``context^exten^priority``.
NEXT_VARIABLE: Final = "CALLROUTER_NEXT"
#: Separates the parts of those two values: the location floor refuses it and
#: no recording path may hold it, so it cannot be smuggled in.
PART_SEPARATOR: Final = "^"
#: What ``[callrouter-record]`` keeps of ``CALLROUTER_RECORD`` (its ``FILTER``,
#: separator aside); a value with anything else is not recorded at all.
RECORD_PATH_CHARS: Final = frozenset(string.ascii_letters + string.digits + "/._-")
#: What it keeps of ``CALLROUTER_NEXT``: the characters a location may have
#: (``_NEVER`` leaves only ``.`` to a widened ``location_pattern``).
NEXT_CHARS: Final = frozenset(string.ascii_letters + string.digits + "*#+_.-")
#: The application a waiting channel is in, as ``CoreShowChannels`` lists it.
WAIT_APPLICATION: Final = "Wait"
#: The applications a channel may wait in after its request: each blocks for
#: the whole wait, and a Redirect interrupts it safely (router/parking.py).
#: ``MusicOnHold(class,seconds)`` plays music instead of ringback and
#: ``WaitExten(seconds)`` waits for digits; a step that ends at once
#: (``Ringing``, ``Playback`` of a prompt) is not a wait.
PARK_APPLICATIONS: Final = frozenset({WAIT_APPLICATION, "MusicOnHold", "WaitExten"})
#: Seconds the dialplan waits when the request does not say (key ``Wait``).
DEFAULT_WAIT: Final = 4.0
#: Act only this long before the dialplan gives up, so a Redirect is not
#: racing the fallback ``Goto``.
SAFETY_MARGIN: Final = 0.3
#: ``EPOCH`` (hence ``CALLROUTER_DEADLINE``) counts whole seconds.
_EPOCH_RESOLUTION: Final = 1.0

#: Letters, digits and ``*#+_-``, 1 to 80 characters: every extension and
#: context name a sane dialplan uses, and nothing Dial or Goto would parse.
DEFAULT_LOCATION_PATTERN: Final = r"[A-Za-z0-9*#+_-]{1,80}"

#: Never allowed, whatever ``location_pattern`` says: characters Asterisk
#: applications treat as syntax (argument and channel separators, variable and
#: expression markers, quoting), whitespace, control and non-ASCII characters.
_NEVER: Final = frozenset(",&|;:()[]{}$^\"'`\\@/<>=!?%~")
#: What the floor lets through, as one character class: printable ASCII
#: without space and without ``_NEVER`` (one C-level match on the routing
#: path instead of four tests per character).
_FLOOR: Final = re.compile(
    "[" + re.escape("".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in _NEVER)) + "]+"
)
_MAX_SHOWN: Final = 40


def shown(value: str) -> str:
    """A value fit for a log line: escaped by ``repr``, long ones cut.

    The value is untrusted: raw, it could carry terminal escape sequences or
    megabytes into the decision log.
    """
    if len(value) <= _MAX_SHOWN:
        return repr(value)
    return f"{value[:_MAX_SHOWN]!r}... ({len(value)} characters)"


@dataclass(frozen=True, slots=True)
class LocationPolicy:
    """Which strings may become a dialplan ``context`` or ``exten``.

    ``pattern`` must match the whole value (``[router] location_pattern`` in
    ``router.toml``). On top of it a fixed floor refuses the characters
    Asterisk parses as syntax, so widening the pattern (to allow ``.``, say)
    can never let ``&`` or ``,`` through.
    """

    pattern: str = DEFAULT_LOCATION_PATTERN
    _compiled: re.Pattern[str] | None = None

    @classmethod
    def from_pattern(cls, pattern: str) -> LocationPolicy:
        """Compiles ``pattern``; ``re.error`` for a bad one (config names the key)."""
        return cls(pattern, re.compile(pattern))

    def problem(self, name: str, value: str) -> str | None:
        """Why ``value`` cannot be the location parameter ``name``, or None if it can."""
        compiled = self._compiled or _DEFAULT
        if _FLOOR.fullmatch(value) is None or compiled.fullmatch(value) is None:
            allowed = (
                "letters, digits and *#+_-, 1 to 80 characters"
                if self.pattern == DEFAULT_LOCATION_PATTERN
                else f"location_pattern {self.pattern!r}"
            )
            return f"{name} {shown(value)} is not a safe dialplan location ({allowed})"
        return None


_DEFAULT: Final = re.compile(DEFAULT_LOCATION_PATTERN)


def argument_problem(name: str, value: str) -> str | None:
    """Why ``value``, which a template filled into an application's arguments
    (``originate``'s ``data``), could be more than one argument's text, or None.

    The floor of a location, without its pattern, and empty is fine (a
    template's ``None``): a 1C card's ``101&Local/666@somecontext`` in
    ``Dial(PJSIP/{...},20)`` would ring a second channel, its ``101,5,U(x)``
    add Dial options, its ``trunk/sip:+88...@host`` dial out.
    """
    if not value or _FLOOR.fullmatch(value) is not None:
        return None
    return (
        f"{name} filled in with {shown(value)}, which is not a single argument's text "
        "(letters, digits and *#+_.-: no spaces, , & | / @ : ( ) $ or the like)"
    )


#: Parameter names (any case) that are a dialplan location in the built-in
#: actions and in the headers of an ``ami`` action.
LOCATION_PARAMS: Final = frozenset({"context", "exten"})


#: Extensions Asterisk runs itself, never a place a call is sent to: ``h``
#: (the hangup handler), ``i`` (an invalid extension), ``t`` and ``T``
#: (timeouts), ``e`` (an exception). A Redirect there from a live call runs
#: that step and hangs the call up, where the context has one; a 1C card
#: saying ``h`` dropped the call (issue 16).
RUN_BY_ASTERISK: Final = frozenset({"h", "i", "t", "T", "e"})


def location_problem(
    params: Mapping[str, object], policy: LocationPolicy, *, templates: bool = True
) -> str | None:
    """Why the first refused location parameter in ``params`` is refused, or None.

    ``templates=False`` skips values still holding ``{`` (load time: such a
    value is known only when the rule runs, and is checked then).
    """
    for key, value in params.items():
        if value is None or key.lower() not in LOCATION_PARAMS:
            continue
        text = str(value)
        if not templates and "{" in text:
            continue
        problem = policy.problem(key, text)
        if problem is not None:
            return problem
        if key.lower() == "exten" and text in RUN_BY_ASTERISK:
            return (
                f"{key} {shown(text)} is an extension Asterisk runs itself (h: hangup, "
                "i: invalid, t and T: timeout, e: exception), never a place to send a call"
            )
    return None


class KnownContext(Protocol):
    """A context as the dialplan audit last read it
    (:class:`~router.dialplan_audit.ListedContext`)."""

    @property
    def missing(self) -> bool:
        """Whether Asterisk's dialplan had no such context at all."""
        ...

    def lacks(self, exten: str) -> bool:
        """Whether ``exten`` is surely not there (False when unsure)."""
        ...


def missing_target(params: Mapping[str, object], listing: Mapping[str, KnownContext]) -> str | None:
    """Why a ``redirect`` to ``params``' location would hang the call up, as
    ``listing`` (the dialplan audit's last read) tells it, or None.

    Asterisk accepts a Redirect to an extension its context lacks and hangs
    the call up, and so it does to a context the dialplan does not have. A
    context the listing does not hold, or holds open (an ``include``, a
    switch), is not judged. A dict lookup and a set lookup: it runs on every
    redirect a rule renders, so it asks nothing of Asterisk.
    """
    known = listing.get(str(params.get("context", ""))) if listing else None
    if known is None:
        return None
    exten = str(params.get("exten", "s"))
    if not known.lacks(exten):
        return None
    if known.missing:
        return (
            f"context {shown(str(params.get('context')))} is not in Asterisk's dialplan "
            "(no such context): Asterisk would accept the Redirect and hang the call up"
        )
    return (
        f"exten {shown(exten)} is not in context {shown(str(params.get('context')))} of "
        "Asterisk's dialplan: Asterisk would accept the Redirect and hang the call up"
    )


def next_location(context: str, exten: str, priority: str) -> str:
    """``CALLROUTER_NEXT``: the Redirect's target, for a step it passes through first.

    ``ValueError`` for a part the step's ``FILTER`` would change (the executor
    checked the location already; this is the contract's own guard).
    """
    for name, value in (("context", context), ("exten", exten), ("priority", priority)):
        if not value or not set(value) <= NEXT_CHARS:
            raise ValueError(f"{name} {shown(value)} cannot pass through {RECORD_CONTEXT}")
    return PART_SEPARATOR.join((context, exten, priority))


#: The ``UserEvent`` key, folded as :func:`normalize_key` folds it.
_USEREVENT_KEY: Final = normalize_key("UserEvent")


def dialplan_value(event: Message, key: str) -> str | None:
    """The first value of ``key`` among the keys the dialplan passed: those after
    the event's last ``UserEvent`` key, compared folded (mxml lower-cases keys).

    Asterisk writes a dialplan's ``UserEvent`` as the channel's snapshot, then
    ``UserEvent: <name>``, then the application's arguments; the caller's
    number is written within the snapshot as it is, and a number holding
    line breaks (``1\r\nDID: 900``) writes its own keys there, before that
    ``UserEvent`` line. Read as the first of the key in the whole event, such
    a line chose the DID of a dialplan that announces from ``s`` without a
    ``DID:`` key, and over mxml, where a repeated ``DID`` arrives as two
    ``did``, of one that passes it. None when the dialplan passed no such
    key. An event without a ``UserEvent`` key (an older dialplan's, rebuilt
    by hand) is read whole.
    """
    fields = event.fields
    wanted = normalize_key(key)
    start = 0
    for at in range(len(fields) - 1, -1, -1):
        if normalize_key(fields[at][0]) == _USEREVENT_KEY:
            start = at + 1
            break
    for name, value in fields[start:]:
        if normalize_key(name) == wanted:
            return value
    return None


def request_did(event: Message) -> str:
    """The number dialled, from the channel snapshot's ``Exten``.

    ``Message.get`` returns the first occurrence of a key, and Asterisk writes
    the snapshot before the dialplan's keys, so an ``Exten`` smuggled in
    through the caller ID cannot win (and is refused: router.calls.smuggled).
    The ``DID`` key the dialplan passed (:func:`dialplan_value`, never one a
    caller's number wrote) is used only when the snapshot has no real
    extension (a dialplan that announces from ``s``); such a dialplan must
    ``FILTER()`` what it passes (docs/asterisk.md).
    """
    exten = event.get("Exten") or ""
    if exten and exten != "s":
        return exten
    return dialplan_value(event, "DID") or exten


def request_caller(event: Message) -> str:
    """The caller's number, from the channel snapshot's ``CallerIDNum``.

    The ``Caller`` key of the shipped dialplan is filtered to digits and
    ``+``, which would lose what people write after the number (``доб. 12``);
    the snapshot keeps the number as the channel has it. Without one, the
    ``Caller`` key the dialplan passed (:func:`dialplan_value`).
    """
    number = event.get("CallerIDNum") or ""
    if number and number != "<unknown>":
        return number
    return dialplan_value(event, "Caller") or ""


def _float(text: str | None, default: float) -> float:
    # Outside text (a UserEvent's Wait/Timestamp, a channel variable): ASCII
    # digits only and finite; "nan", "inf", "1e999" or "٣" count as absent.
    value = ascii_float(text)
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """One call asking to be routed, as its request event tells it."""

    #: The channel waiting in the inbound context (the one a Redirect moves).
    channel: str
    #: Its Uniqueid; a request is acted on once per Uniqueid (channel names
    #: restart from 00000000 when Asterisk restarts, Uniqueids do not).
    uniqueid: str
    linkedid: str
    #: :func:`request_did` and :func:`request_caller`: the snapshot first.
    did: str
    caller: str
    caller_name: str
    context: str
    exten: str
    #: Seconds the dialplan waits, from when it sent the event.
    wait: float
    #: When Asterisk sent the event (its ``Timestamp``; None without one).
    timestamp: float | None
    #: The event itself, for the rules' view of the call.
    event: Event

    @property
    def key(self) -> str:
        """What "this request was seen already" is keyed by."""
        return self.uniqueid or self.channel


@dataclass(frozen=True, slots=True)
class Dialplan:
    """The protocol's parameters, as ``router.toml`` and the engine's options set them."""

    request_event: str = REQUEST_EVENT
    inbound_context: str = INBOUND_CONTEXT
    default_wait: float = DEFAULT_WAIT
    safety_margin: float = SAFETY_MARGIN

    def is_request(self, event: Event) -> bool:
        return event.name == "UserEvent" and event.get("UserEvent") == self.request_event

    def request(self, event: Event) -> RoutingRequest | None:
        """The request ``event`` carries, or None when it names no channel, or
        when no channel sent it (:func:`sent_by_channel`)."""
        channel = event.get("Channel") or ""
        if not channel or not sent_by_channel(event):
            return None
        if not event.get("Uniqueid") or not event.get("Linkedid"):
            # Asterisk writes both in every channel's snapshot: a request
            # without either was made up by a caller's or dialled number
            # holding blank lines, its snapshot's end cut off (issue 16,
            # router.calls.CallTracker.impostor).
            return None
        stamp = _float(event.get("Timestamp"), 0.0)
        return RoutingRequest(
            channel=channel,
            uniqueid=event.get("Uniqueid") or "",
            linkedid=event.get("Linkedid") or "",
            # Cut as the call tracker cuts them (router.callerid): a cut
            # number is no number to the rules, lists and 1C.
            did=cut_number(request_did(event)),
            caller=cut_number(request_caller(event)),
            caller_name=cut_text((event.get("CallerIDName") or "").replace("<unknown>", "")),
            context=event.get("Context") or "",
            exten=event.get("Exten") or "",
            wait=_float(dialplan_value(event, "Wait"), self.default_wait),
            timestamp=stamp or None,
            event=event,
        )

    def deadline(self, request: RoutingRequest, *, received: float, now: float) -> float:
        """When (on the ``received`` clock) the last action must be sent.

        ``received`` is when the request was in our hands (a monotonic clock),
        ``now`` the wall clock Asterisk stamps events with: the time the event
        spent on its way (at most the whole wait) is taken off the wait.
        """
        stamp = request.timestamp
        age = min(max(0.0, now - stamp), request.wait) if stamp else 0.0
        return received - age + request.wait - self.safety_margin

    def is_waiting(self, item: Event) -> bool:
        """Whether a ``CoreShowChannel`` item is a channel waiting for a decision."""
        return (
            item.get("Context") == self.inbound_context
            and item.get("Application") in PARK_APPLICATIONS
        )

    def listed_wait(self, deadline_variable: str | None, *, now: float) -> float | None:
        """Seconds a listed channel still waits, from its ``CALLROUTER_DEADLINE``;
        None when too little is left to act (or the variable is unreadable)."""
        remaining = _float(deadline_variable, 0.0) - now
        if remaining <= self.safety_margin + _EPOCH_RESOLUTION:
            return None
        return remaining - _EPOCH_RESOLUTION

    def listed_request(self, item: Event, *, did_variable: str | None, wait: float) -> Event:
        """The request event the dialplan sent for a listed waiting channel,
        rebuilt (its own event was lost in a gap, or sent before we started)."""
        channel = item.get("Channel") or ""
        number = item.get("CallerIDNum") or ""
        return Event(
            (
                ("Event", "UserEvent"),
                # The snapshot first, as Asterisk writes it (sent_by_channel).
                ("Channel", channel),
                ("Uniqueid", item.get("Uniqueid") or ""),
                ("Linkedid", item.get("Linkedid") or ""),
                ("Context", self.inbound_context),
                ("Exten", item.get("Exten") or ""),
                ("CallerIDNum", number),
                ("CallerIDName", item.get("CallerIDName") or ""),
                ("UserEvent", self.request_event),
                ("DID", did_variable or item.get("Exten") or ""),
                ("Caller", number),
                ("Wait", f"{wait:.3f}"),
            )
        )
