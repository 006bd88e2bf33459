"""What goes into the event feed: AMI events and routing decisions, as 1C reads them.

A plugin like the built-ins (same hooks, registered through the same
``Plugins.register``), made around the feed the API serves, so nothing here
asks the engine for anything it does not already tell every plugin.

Kinds (``docs/api.md``, "The event feed"):

* ``ringing``: an extension's phone rings (``DialBegin``). For a routed call
  it carries the caller card the rules' lookup returned (``card``, from
  ``Trace.lookup_values``): the one 1C request that routed the call also
  serves the screen pop; the feed never asks 1C again.
* ``answered``: that extension picked up (``DialEnd``, ``ANSWER``).
* ``missed``: it rang and did not answer (``DialEnd``, any other status).
* ``transferred``: a successful blind or attended transfer, at the
  transferring extension.
* ``hangup``: the call ended; once for each extension that talked, or once
  with no extension when none was involved.
* ``presence`` (hint state, ``ExtensionStatus``) and ``device``
  (``DeviceStateChange``); ``dnd`` and ``forwarding`` come from the API's
  forwarding endpoints.

The card is 1C's answer, which anyone who edits a client card in 1C shapes
(up to ``[plugins.onec] max_body``, 1 MiB): in the feed, each of its texts is
cut to :data:`MAX_CARD_TEXT` characters, and a card whose JSON is still over
:data:`MAX_CARD` bytes goes as null, so the feed's memory, its file and each
answer stay bounded by the number of events, not by what 1C holds.

The decision of a routed call can come after its ``DialBegin`` (the Redirect's
confirmation and the dial arrive in one batch of events): the ringing then
waits for the decision, at most :data:`CARD_WAIT` seconds from the call's first
held event, and goes without a card if none comes. The call's ``DialEnd``
events that come meanwhile wait behind its ringings (a queue member busy at
once ends before the others ring, or before the decision): releasing the held
ringings at a member's end sent every other member's without its card. At most
:data:`_PENDING_MAX` events are held per call; past that they go at once.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.api.feed import EventFeed
from router.api.text import mend_surrogates, shown_did
from router.builtin.extension_state import state_name
from router.callerid import cut, cut_number, cut_text
from router.calls import IDENTITY_LIMITS
from router.hookspecs import RouteOutcome, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from router.ami.message import Event
    from router.ami.stream import StreamGap
    from router.api.settings import ApiSettings
    from router.calls import Call
    from router.plugins import Plugins
    from router.rules.decision import Decision, Trace

__all__ = [
    "API_FEED",
    "CARD_LOOKUP",
    "CARD_WAIT",
    "MAX_CARD",
    "MAX_CARD_TEXT",
    "FeedIntake",
    "endpoint",
    "feed_card",
    "open_feed",
]

#: The name its plugin is registered under.
API_FEED = "api_feed"

#: The lookup whose answer is the caller card (``[api] events_card_lookup``).
CARD_LOOKUP = "onec.responsible"
#: Devices whose phone :class:`FeedIntake` remembers (a PBX has one or two per
#: extension; names past it are worked out each time).
_PHONES_MAX = 4096
#: The longest device name remembered there: a channel's (:func:`_named`).
_PHONE_NAME_MAX = IDENTITY_LIMITS["Channel"]
#: Not in :attr:`FeedIntake._phones` yet.
_UNSEEN: Any = object()
#: Seconds a routed call's ringing waits for its decision (and card).
CARD_WAIT = 1.0
#: Calls remembered at once; the oldest is forgotten first (a lost Hangup).
_CALLS_MAX = 10_000
#: Events one call holds while its ringings wait for the decision (a queue
#: rings each member once; 100 is more than any queue's members at once).
_PENDING_MAX = 100
#: Extensions one call remembers the caller it rang them with (its ``hangup``
#: names it): the newest ones, those that talked kept first. A ring group that
#: loops rings the same few; one that rings 1,000 kept 1,000 pairs of texts
#: per call, times the 10,000 calls remembered.
RANG_WITH_MAX = 64
#: Largest card (UTF-8 JSON bytes) a ringing carries; a larger one goes as null.
MAX_CARD = 8 * 1024
#: Longest text (a name, an id) in a card, in characters; longer ones are cut, ending in "…".
MAX_CARD_TEXT = 500
#: What Asterisk writes for a caller ID it does not have: no text for the feed,
#: as the call tracker has it (``router.calls``), so every event says ``""``.
_UNKNOWN = "<unknown>"


def open_feed(settings: ApiSettings, state_dir: Path, plugins: Plugins) -> EventFeed:
    """The feed ``[api]`` serves, with what the last run kept, fed from now on.

    Its intake is registered like any plugin (named ``api_feed``), so it gets
    events and decisions in the engine's order, isolated like the others.
    """
    feed = EventFeed.open(
        state_dir, retention=settings.events_retention, max_events=settings.events_max
    )
    intake = FeedIntake(feed, card_lookup=settings.events_card_lookup)
    plugins.register(intake, name=API_FEED, builtin=True)
    return feed


def _named(name: str | None, limit: str = "Channel") -> str:
    """An event's channel or device name (or with ``limit="Linkedid"`` a call's
    id), "" when longer than Asterisk makes one (``router.calls.IDENTITY_LIMITS``):
    the tracker bounds an event's own ``Channel`` and ``Linkedid``, not a
    ``DestChannel``, a ``Device`` or a transfer's ``TransfererChannel``, and a
    hostile AMI peer's 60 KB name was published whole, 10,000 events kept."""
    return name if name and len(name) <= IDENTITY_LIMITS[limit] else ""


def _phone(device: str) -> str | None:
    """The extension a ``DeviceStateChange``'s device is the phone of, or None."""
    device = _named(device)
    # A Local "device" is a dialplan construct, no phone: not presence.
    return None if device.lower().startswith("local/") else endpoint(device)


def endpoint(channel: str | None) -> str | None:
    """The extension behind a dialled channel: ``PJSIP/101-0000002a`` -> ``101``.

    A Local channel counts as the extension it dials (``Local/101@from-queue-
    0000001c;1`` -> ``101``): queues ring their members that way, and the
    phone's own channel inside it is the same extension (a ringing is
    published once per call and extension). None for what names no extension.
    """
    if not channel or "/" not in channel:
        return None
    tech, _, rest = channel.partition("/")
    if tech.lower() == "local":
        exten, at, _ = rest.partition("@")
        return exten or None if at else None
    name = rest.rsplit("-", 1)[0] if "-" in rest else rest
    return name or None


def _jsonable(value: object) -> Any:
    """A lookup answer as JSON values (1C's answer is JSON already; be sure),
    its texts encodable (:func:`~router.api.text.mend_surrogates`)."""
    try:
        return mend_surrogates(json.loads(json.dumps(value, default=str)))
    except ValueError:
        return None


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        return cut(value, MAX_CARD_TEXT)
    if isinstance(value, list):
        return [_cut(item) for item in value]
    if isinstance(value, dict):
        return {_cut(key): _cut(item) for key, item in value.items()}
    return value


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def feed_card(value: object) -> Any:
    """A lookup answer as a ringing's ``card``: JSON values, each text at most
    :data:`MAX_CARD_TEXT` characters, the whole at most :data:`MAX_CARD` bytes
    (else None)."""
    card = _cut(_jsonable(value))
    return card if _size(card) <= MAX_CARD else None


@dataclass(slots=True)
class _CallState:
    decided: bool = False
    card: Any = None
    rules: tuple[str, ...] = ()
    #: Events waiting for the decision, in their order: (kind, extension,
    #: data, ts); a ``ringing`` gets the card and rules when it goes.
    pending: list[tuple[str, str, dict[str, Any], float | None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    talked: dict[str, None] = field(default_factory=dict)
    #: Extensions ringing now: a second DialBegin for one (a Local channel and
    #: the phone it dials) is the same ringing, and so is its second DialEnd.
    ringing: set[str] = field(default_factory=set)
    #: The caller number and name each extension was rung with (its ``ringing``):
    #: its ``hangup`` names the same, also when the call's own caller differs (a
    #: click-to-call transferred from the manager to a colleague rings the
    #: colleague with the customer's number).
    rang_with: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Channels the call dialled whose caller ID name Asterisk took from the
    #: dialling side (its ``DestCallerIDName`` is the dialler's caller or
    #: connected line name: Dial names a leg it creates so, as the outgoing leg
    #: of a click-to-call gets the manager phone's name), with that name. When
    #: such a leg dials in its turn (the customer's leg transferred to a
    #: colleague), its number is the customer's and that name is not: the
    #: ringing tells no name rather than one of another party. The newest
    #: :data:`RANG_WITH_MAX`.
    borrowed: dict[str, str] = field(default_factory=dict)
    #: ``missed`` of phones Dial or Queue cancelled while others still rang,
    #: waiting for what ends the others: Dial ends the other phones ``CANCEL``
    #: first and the one that answered ``ANSWER`` after them, so only then is it
    #: known who took the call (``answered_by``); Queue tells the ``ANSWER`` first.
    cancelled: list[tuple[str, dict[str, Any], float | None]] = field(default_factory=list)


class FeedIntake:
    """The plugin feeding :class:`~router.api.feed.EventFeed` (one per engine)."""

    def __init__(
        self, feed: EventFeed, *, card_lookup: str = CARD_LOOKUP, card_wait: float = CARD_WAIT
    ) -> None:
        self.feed = feed
        self.card_lookup = card_lookup
        self.card_wait = card_wait
        self._calls: OrderedDict[str, _CallState] = OrderedDict()
        #: ``DeviceStateChange`` device -> its phone's extension (None: no
        #: phone), worked out once per device: a BLF flood repeats a few hundred.
        self._phones: dict[str, str | None] = {}

    def _state(self, linkedid: str) -> _CallState:
        state = self._calls.get(linkedid)
        if state is None:
            if len(self._calls) >= _CALLS_MAX:
                old_id, old = self._calls.popitem(last=False)
                self._release(old_id, old)  # what it held goes, as after its wait
            state = self._calls[linkedid] = _CallState()
        return state

    # -- hooks ---------------------------------------------------------------

    @hookimpl
    def callrouter_decision(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        """Keep the card for the call's ringing; release a ringing that waited for it."""
        if call.ended is not None and call.linkedid not in self._calls:
            # The caller hung up before the decision came (a slow lookup, a
            # Redirect that waited for its confirmation): the call's hangup went
            # out and its state with it. A state made now would wait for an end
            # that never comes, a card in it, until 10,000 others pushed it out.
            return
        state = self._state(call.linkedid)
        state.decided = True
        if trace is not None:
            # Bounded once per call, and shared by its ringings (a queue rings many).
            state.card = feed_card(next(iter(trace.lookup_values(self.card_lookup)), None))
        if decision is not None:
            state.rules = decision.rules
        self._release(call.linkedid, state)

    @hookimpl
    def callrouter_stream_gap(self, gap: StreamGap) -> None:
        """Asterisk's events between ``gap.since`` and now never came: the feed
        tells every reader behind now of a gap (:meth:`EventFeed.blind`), so a
        panel reads the calls again rather than trust the feed for that stretch."""
        self.feed.blind()

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        """The events translated below (Asterisk sends no others: docs/asterisk.md)."""
        return (
            "AttendedTransfer",
            "BlindTransfer",
            "DeviceStateChange",
            "DialBegin",
            "DialEnd",
            "ExtensionStatus",
        )

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        """Translate one AMI event; only dictionary work on this hot path."""
        name = event.name
        if name == "DialBegin":
            self._dial_begin(event, call)
        elif name == "DialEnd":
            self._dial_end(event, call)
        elif name in ("BlindTransfer", "AttendedTransfer"):
            self._transfer(event)
        elif name == "ExtensionStatus":
            extension = _named(event.get("Exten"), "Exten")
            if extension:
                self.feed.publish(
                    "presence",
                    extension,
                    {
                        "state": state_name(event.get("Status")),
                        "status_text": cut_text(event.get("StatusText") or ""),
                        "context": _named(event.get("Context"), "Context"),
                    },
                    ts=event.timestamp,
                )
        elif name == "DeviceStateChange":
            device = event.get("Device") or ""
            phone = self._phones.get(device, _UNSEEN)
            if phone is _UNSEEN:
                phone = _phone(device)
                # Bounded in bytes too: a name over the Channel limit is no
                # phone's, and 4,096 of 64 KiB (a hostile peer's) held 256 MB.
                if len(self._phones) < _PHONES_MAX and len(device) <= _PHONE_NAME_MAX:
                    self._phones[device] = phone
            if phone:
                self.feed.publish(
                    "device",
                    phone,
                    {"device": device, "state": cut_text(event.get("State") or "").lower()},
                    ts=event.timestamp,
                )

    @hookimpl
    def callrouter_call_end(self, call: Call) -> None:
        """``hangup`` for each extension that talked (or one of no extension)."""
        state = self._calls.pop(call.linkedid, None)
        if state is None:
            state = _CallState()
        self._settle_cancelled(call.linkedid, state, next(iter(state.talked), None))
        if state.pending:
            self._release(call.linkedid, state)
        if state.timer is not None:
            state.timer.cancel()
        data = {
            "caller": call.caller_number,
            "caller_name": call.caller_name,
            "did": shown_did(call.did),
            "answered": call.answered,
        }
        for extension in state.talked or (None,):
            said = data
            if extension is not None and extension in state.rang_with:
                caller, caller_name = state.rang_with[extension]
                said = {**data, "caller": caller, "caller_name": caller_name}
            self.feed.publish("hangup", extension, said, call_id=call.linkedid)

    # -- translation ---------------------------------------------------------

    def _dial_begin(self, event: Event, call: Call | None) -> None:
        dest = _named(event.get("DestChannel"))
        extension = endpoint(dest)
        linkedid = event.get("Linkedid") or (call.linkedid if call else "")
        if extension is None or not linkedid:
            return
        state = self._state(linkedid)
        caller, caller_name = _rung_by(event, call, state)
        _borrowed(state, event)
        data: dict[str, Any] = {
            "caller": caller,
            "caller_name": caller_name,
            "did": shown_did(call.did) if call else "",
            "channel": dest,
        }
        if extension in state.ringing:
            return
        state.ringing.add(extension)
        self._rang_with(state, extension, (data["caller"], data["caller_name"]))
        if state.decided or call is None or not call.routed:
            self._publish(linkedid, state, "ringing", extension, data, event.timestamp)
        else:
            self._hold(linkedid, state, "ringing", extension, data, event.timestamp)

    @staticmethod
    def _rang_with(state: _CallState, extension: str, caller: tuple[str, str]) -> None:
        """Remember ``caller`` for ``extension``, the newest: past
        :data:`RANG_WITH_MAX` the oldest that did not talk goes (the oldest of
        all when each talked); its ``hangup`` then names the call's caller."""
        rang = state.rang_with
        rang.pop(extension, None)
        rang[extension] = caller
        if len(rang) > RANG_WITH_MAX:
            oldest = next((e for e in rang if e not in state.talked), next(iter(rang)))
            del rang[oldest]

    def _hold(
        self,
        linkedid: str,
        state: _CallState,
        kind: str,
        extension: str,
        data: dict[str, Any],
        ts: float | None,
    ) -> None:
        """Keep an event of the call until its decision, at most the wait.

        One timer per call, started by its first held event and never
        restarted by later ones: every event waits at most :attr:`card_wait`.
        """
        if len(state.pending) >= _PENDING_MAX:
            self._release(linkedid, state)
            self._publish(linkedid, state, kind, extension, data, ts)
            return
        state.pending.append((kind, extension, data, ts))
        if state.timer is None:
            state.timer = asyncio.get_running_loop().call_later(
                self.card_wait, self._card_timeout, linkedid
            )

    def _card_timeout(self, linkedid: str) -> None:
        state = self._calls.get(linkedid)
        if state is not None:
            state.timer = None
            self._release(linkedid, state)

    def _release(self, linkedid: str, state: _CallState) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        pending, state.pending = state.pending, []
        for kind, extension, data, ts in pending:
            self._publish(linkedid, state, kind, extension, data, ts)

    def _publish(
        self,
        linkedid: str,
        state: _CallState,
        kind: str,
        extension: str,
        data: dict[str, Any],
        ts: float | None,
    ) -> None:
        if kind == "ringing":
            data = {**data, "card": state.card, "rules": list(state.rules)}
        self.feed.publish(kind, extension, data, call_id=linkedid, ts=ts)

    def _dial_end(self, event: Event, call: Call | None) -> None:
        dest = _named(event.get("DestChannel"))
        extension = endpoint(dest)
        linkedid = event.get("Linkedid") or (call.linkedid if call else "")
        if extension is None or not linkedid:
            return
        state = self._calls.get(linkedid)
        if state is None or extension not in state.ringing:
            # The second end of one ringing, a dial begun before our start, or an
            # end told after the call's: nothing to keep for it.
            return
        state.ringing.discard(extension)
        status = cut_text(event.get("DialStatus") or "")
        data: dict[str, Any] = {
            "caller": cut_number(_caller_id(event.get("CallerIDNum")))
            or (call.caller_number if call else ""),
            "channel": dest,
            "status": status,
        }
        kind = "missed"
        if status == "ANSWER":
            kind = "answered"
            self._settle_cancelled(linkedid, state, extension)
            state.talked[extension] = None
        elif status == "CANCEL" and state.ringing:
            # A ring group's or queue's other phones end CANCEL when one answers, as
            # when the caller hangs up, and Dial ends them before its ANSWER: wait for what ends
            # the phones still ringing, so that ``answered_by`` tells the two apart
            # and a screen pop does not show a colleague's answered call as missed.
            state.cancelled.append((extension, data, event.timestamp))
            return
        else:
            by = next(iter(state.talked), None)
            data["answered_by"] = by
            self._settle_cancelled(linkedid, state, by)
        self._emit(linkedid, state, kind, extension, data, event.timestamp)

    def _settle_cancelled(self, linkedid: str, state: _CallState, by: str | None) -> None:
        """The ``missed`` waiting in ``state.cancelled``, now that ``by`` (or nobody) took it."""
        waiting, state.cancelled = state.cancelled, []
        for extension, data, ts in waiting:
            self._emit(linkedid, state, "missed", extension, {**data, "answered_by": by}, ts)

    def _emit(
        self,
        linkedid: str,
        state: _CallState,
        kind: str,
        extension: str,
        data: dict[str, Any],
        ts: float | None,
    ) -> None:
        if state.pending:
            # Behind the held ringings (never an end before its ringing), and
            # releasing none of them: the call's other ringings still wait for
            # the decision (a queue member busy at once ends before they ring).
            self._hold(linkedid, state, kind, extension, data, ts)
        else:
            self._publish(linkedid, state, kind, extension, data, ts)

    def _transfer(self, event: Event) -> None:
        if event.get("Result") not in (None, "Success"):
            return
        blind = event.name == "BlindTransfer"
        named = event.get("TransfererChannel" if blind else "OrigTransfererChannel")
        channel = _named(named)
        if named and not channel:
            return  # no channel Asterisk names, so no extension's
        linkedid = _named(
            event.get("TransfererLinkedid" if blind else "OrigTransfererLinkedid"), "Linkedid"
        )
        state = self._calls.get(linkedid) if linkedid else None
        if state is not None and state.pending:
            self._release(linkedid or "", state)  # never a transfer before its answer
        target = (
            event.get("Extension")
            if blind
            else endpoint(_named(event.get("TransferTargetChannel")))
            or event.get("TransferTargetCallerIDNum")
        )
        self.feed.publish(
            "transferred",
            endpoint(channel),
            # An attended transfer's target may be an outside caller's ID.
            {
                "how": "blind" if blind else "attended",
                "target": cut_number(target or ""),
                "channel": channel,
            },
            call_id=linkedid or None,
            ts=event.timestamp,
        )


def _rung_by(event: Event, call: Call | None, state: _CallState) -> tuple[str, str]:
    """The caller number and name a ``DialBegin`` rings with, both of one party.

    The event's number with its name; the call's number and name when the event
    has no number. A name the dialling leg was given from another party
    (:attr:`_CallState.borrowed`) is none; a number without a name takes the
    call's name when it is the call's number.
    """
    number = cut_number(_caller_id(event.get("CallerIDNum")))
    if not number:
        return (call.caller_number, call.caller_name) if call else ("", "")
    name = cut_text(_caller_id(event.get("CallerIDName")))
    if name and state.borrowed.get(event.get("Channel") or "") == name:
        name = ""
    if not name and call is not None and call.caller_number == number:
        name = call.caller_name
    return number, name


def _borrowed(state: _CallState, event: Event) -> None:
    """Remember a ``DialBegin``'s dialled leg whose name is the dialler's own
    or its connected line's (:attr:`_CallState.borrowed`)."""
    dest = event.get("DestChannel")
    name = cut_text(_caller_id(event.get("DestCallerIDName")))
    if not dest or not name or not event.get("Channel"):
        return
    theirs = (_caller_id(event.get("CallerIDName")), _caller_id(event.get("ConnectedLineName")))
    if name not in (cut_text(text) for text in theirs):
        return
    borrowed = state.borrowed
    borrowed.pop(dest, None)
    borrowed[dest] = name
    if len(borrowed) > RANG_WITH_MAX:
        del borrowed[next(iter(borrowed))]


def _caller_id(value: str | None) -> str:
    """A caller ID field of an event, with Asterisk's ``<unknown>`` as no text."""
    return "" if value is None or value == _UNKNOWN else value
