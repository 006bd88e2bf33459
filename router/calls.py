"""The call tracker: AMI events folded into calls, by Linkedid, and forgotten.

Asterisk reports channels; people think in calls. A call here is every
channel sharing a Linkedid, with what routing and plugins need to know:
caller, DID, state, whether anyone answered, variables seen, a timeline.
A call leaves memory when its last channel hangs up; a time-to-live guard
removes calls whose Hangup was lost (a stream gap), so memory stays bounded
however long the service runs.

The tracker calls nobody back: :meth:`CallTracker.feed` says what the event
started and what it ended (:class:`Fed`), and the engine tells the plugins,
in the order it happened.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, KeysView, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from router.ami.message import Event, normalize_key, sent_by_channel
from router.ami.numbers import ascii_int
from router.callerid import cut_number, cut_text
from router.logsafe import ThrottledWarning, escape_controls

__all__ = [
    "ANSWERED_STATE",
    "CHANNELS_MAX",
    "IDENTITY_LIMITS",
    "TIMELINE_CHARS_MAX",
    "TIMELINE_MAX",
    "TRACKED_CHANNELS_MAX",
    "VARIABLES_MAX",
    "VARIABLE_NAME_MAX",
    "Call",
    "CallTracker",
    "Channel",
    "Fed",
    "TimelineEntry",
    "dialplan_half",
    "listed_twice",
    "oversized",
    "smuggled",
]

log = logging.getLogger("router.calls")

#: How many timeline entries a call keeps; a stuck call must not grow forever.
TIMELINE_MAX = 64
#: Characters of timeline details kept per call, all entries together: a
#: detail is cut to 500 characters (router.callerid.MAX_TEXT), so 64 of them
#: were 32,000 characters a call, some 3 GB over 100,000 tracked calls. Past
#: it the oldest entries go; a normal call's 64 details take a few thousand
#: (issue 16).
TIMELINE_CHARS_MAX = 8192
#: Variables kept per call, for the same reason.
VARIABLES_MAX = 64
#: The longest variable name kept in ``Call.variables``. Asterisk sets no
#: bound (main/chanvars.c ``ast_var_assign`` copies any length), so this is a
#: sane one: a dialplan's names are a word or two; a longer name is not kept
#: (cut, two names could become one), its value being cut to 500 characters
#: (issue 16).
VARIABLE_NAME_MAX = 80
#: Channels kept per call (a conference of hundreds shares one Linkedid).
#: Past it the hung-up ones go (:attr:`Fed.forgotten`); a call of this many
#: live channels follows no more. Without it a call whose first leg stayed up
#: kept every channel that ever came and went (a queue ringing agents for
#: hours, a hostile AMI peer), and each Hangup walked them all (issue 16).
CHANNELS_MAX = 1000
#: Channels kept across all calls (hung-up ones of live calls included); past
#: it the oldest calls go, as past ``max_calls``. Without it the bound was
#: ``max_calls`` x :data:`CHANNELS_MAX`, a hundred million (issue 16).
TRACKED_CHANNELS_MAX = 100_000

#: The longest identity field Asterisk 22 can send, in characters; an event
#: with a longer one came from no Asterisk (a hostile or broken AMI peer) and
#: is not tracked (:func:`oversized`). From include/asterisk/channel.h:
#:
#:   #define AST_MAX_EXTENSION       80  /*!< Max length of an extension */
#:   #define AST_MAX_CONTEXT         80  /*!< Max length of a context */
#:   #define AST_MAX_PUBLIC_UNIQUEID 149
#:   #define AST_MAX_UNIQUEID        (AST_MAX_PUBLIC_UNIQUEID + 2 + 1)
#:   #define AST_CHANNEL_NAME        80  /*!< Max length of an ast_channel name */
#:
#: Sizes of C buffers with their NUL: a context or an extension is at most
#: 79 characters (80 is let pass: one of slack costs nothing), a Uniqueid (a
#: Linkedid is one) 151 (a ``;2`` may follow the public 149). A channel name
#: is no such buffer in Asterisk 22 (a string field: main/channel_internal_api.c
#: ``ast_channel_name_build_va``): a Local channel is named
#: ``Local/<exten>@<context>-<8 hex>;2``, about 180 characters, and a
#: masqueraded one gains ``<ZOMBIE>``; 256 leaves room for a long endpoint
#: name. A ``Priority`` is a C int, so at most 11 characters (:data:`_PRIORITY`).
IDENTITY_LIMITS: dict[str, int] = {
    "Linkedid": 151,
    "Uniqueid": 151,
    "Channel": 256,
    "Context": 80,
    "Exten": 80,
}
_PRIORITY = re.compile(r"-?[0-9]{1,10}")
_LIMITS = tuple(IDENTITY_LIMITS.items())
#: The identity keys by their folded spelling (:func:`normalize_key`), for an
#: event that spells one otherwise (mxml, a peer's ``LINKEDID``, CEL's
#: ``LinkedID``); ``Priority`` with the length :data:`_PRIORITY` allows.
_FOLDED: dict[str, tuple[str, int]] = {
    normalize_key(key): (key, limit) for key, limit in [*IDENTITY_LIMITS.items(), ("Priority", 11)]
}
#: Keys as an event spelled them that fold to none of :data:`_FOLDED`'s
#: (``Event``, ``Device``, ``State``...): a few hundred in all of Asterisk's
#: events; bounded against a peer's made-up ones, as ``normalize_key``'s memo.
_PLAIN: set[str] = set()
_PLAIN_MAX = 4096
_PLAIN_KEY_MAX = 128
#: The keys :func:`oversized` checks, as Asterisk spells them (and the tracker reads them).
_AS_SPELLED = frozenset((*IDENTITY_LIMITS, "Priority"))
#: :func:`_identity_spelling`'s answers.
_NONE, _ASTERISKS, _OTHERWISE = 0, 1, 2
#: Seconds between two warnings of events not tracked for an oversized field.
_REFUSED_EVERY = 60.0
_UNKNOWN = ("", "<unknown>")


#: The ``ChannelStateDesc`` of a leg that answered: the only channel state the
#: tracker acts on (the engine asks Asterisk for no other ``Newstate`` but a
#: call life listener's ``Ringing``, unless the HTTP API, a rule or a plugin
#: reads them).
ANSWERED_STATE = "Up"


@dataclass(slots=True)
class Channel:
    name: str
    uniqueid: str
    context: str = ""
    exten: str = ""
    priority: str = ""
    state: str = ""
    hung_up: bool = False
    #: A ``BridgeEnter`` of this channel was seen: it is (or was) in a bridge.
    #: Not cleared on leaving one.
    entered_bridge: bool = False
    #: The bridge it last entered (``BridgeUniqueid``), "" when not known or
    #: when it was seen leaving it.
    bridge: str = ""
    #: How many channels share :attr:`bridge`, as the last ``BridgeEnter`` into
    #: it or ``BridgeLeave`` from it of a channel of the call said
    #: (``BridgeNumChannels``): 1 while this one is alone in it, the other
    #: side not in yet or gone; 0 when not known. ``BridgeLeave`` reaches the
    #: engine when something asks for it: the HTTP API (its transfers read
    #: this, router.ami.event_filter ``API_EVENTS``), recordings.
    bridge_channels: int = 0
    #: The dialplan application it runs now, as its last ``Newexten`` named it
    #: (``Dial``, ``Queue``, ...); "" before its first. A leg a ``Dial`` made
    #: has none of its own but in a ``U()`` gosub.
    application: str = ""
    #: The channel whose ``Dial`` (or ``Queue``) rang this one (``DialBegin``);
    #: "" when none did (the caller's leg, an originated one).
    dialed_by: str = ""
    #: The session of Asterisk's event stream it was first seen in
    #: (:meth:`CallTracker.new_session`).
    session: int = 0


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: float
    event: str
    detail: str = ""


@dataclass(slots=True)
class Call:
    """One call: all channels sharing a Linkedid."""

    linkedid: str
    started: float
    #: The inbound leg's latest non-empty caller ID number up to the call's
    #: first ring (``DialBegin``): a dialplan's ``Set(CALLERID(num)=...)``
    #: (``NewCallerid``) before the routing request is the number the call was
    #: routed with, and the one the feed, the rules and 1C are told.
    caller_number: str = ""
    #: The inbound leg's latest non-empty caller ID name up to the call's first
    #: ring (``DialBegin``): a dialplan's ``Set(CALLERID(name)=...)``
    #: after the channel appeared (``NewCallerid``, then every event of that
    #: channel) names the caller, as the feed's ``ringing`` shows it.
    caller_name: str = ""
    did: str = ""
    channels: dict[str, Channel] = field(default_factory=dict)
    answered: bool = False
    ended: float | None = None
    #: The channel waiting in the inbound context for a routing decision.
    waiting_channel: str | None = None
    #: Set once a routing decision was taken: requests after that are ignored.
    routed: bool = False
    #: A dialplan step the next Redirect of ``waiting_channel`` passes through
    #: before its target, which goes along in ``CALLROUTER_NEXT``
    #: (``callrouter-record``, set by the ``record`` action); used once.
    redirect_via: str | None = None
    #: The channel the caller's number was read from (the inbound leg), whose
    #: number and name ``caller_number`` and ``caller_name`` follow; ``""``
    #: once the call rang (``DialBegin``).
    caller_leg: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    timeline: deque[TimelineEntry] = field(default_factory=lambda: deque(maxlen=TIMELINE_MAX))
    #: Characters of the details in ``timeline`` (:data:`TIMELINE_CHARS_MAX`).
    timeline_chars: int = field(default=0, repr=False, compare=False)
    #: Scratch space for plugins (e.g. a prefetch task), keyed by plugin name.
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def active_channels(self) -> list[Channel]:
        return [c for c in self.channels.values() if not c.hung_up]

    @property
    def state(self) -> str:
        if self.ended is not None:
            return "ended"
        if self.answered:
            return "answered"
        if self.routed:
            return "routed"
        return "ringing"

    def to_dict(self) -> dict[str, object]:
        return {
            "linkedid": self.linkedid,
            "caller": self.caller_number,
            "caller_name": self.caller_name,
            "did": self.did,
            "state": self.state,
            "answered": self.answered,
            "channels": sorted(self.channels),
        }


def dialplan_half(channel: str) -> bool:
    """Whether ``channel`` is a ``Local`` channel's ``;2`` half, the one that
    runs the dialplan of ``Local/EXTEN@CONTEXT`` (a trunk's context that dials
    ``Local/${EXTEN}@callrouter-inbound``, an ``Originate`` of such a channel)."""
    return channel.startswith("Local/") and channel.endswith(";2")


class Fed(NamedTuple):
    """What one event did to the calls (a tuple: this is made for every event)."""

    #: The call the event belongs to, None for an event of no call.
    call: Call | None
    #: The event started ``call``.
    started: bool = False
    #: Calls that ended, in the order they ended: ``call`` after its last
    #: Hangup, and the oldest calls a full tracker let go to make room.
    ended: tuple[Call, ...] = ()
    #: Hung-up channels ``call`` let go to make room (:data:`CHANNELS_MAX`):
    #: what was kept of them may go too.
    forgotten: tuple[Channel, ...] = ()
    #: The event was not tracked: a field of it is longer than Asterisk can
    #: send (:func:`oversized`); nothing else should be done with it.
    refused: bool = False


_NOTHING = Fed(None)
_REFUSED = Fed(None, refused=True)


def oversized(event: Event) -> tuple[str, int] | None:
    """The identity field of ``event`` Asterisk could not have sent, and its
    length: longer than :data:`IDENTITY_LIMITS`, or a ``Priority`` that is
    no integer. None for an event Asterisk could have sent.

    Read as the tracker reads them (the key as Asterisk spells it, else any
    spelling), so no spelling of a key slips a long value past the check."""
    # Every event passes here (about 1 us for one that spells all six keys):
    # the keys as spelled first, then one pass over the fields only when one
    # is missing (a CEL record's LinkedID, a Dial event without a caller),
    # instead of a scan of them for each missing key.
    get = event.spelled().get
    for key, limit in _LIMITS:
        value = get(key)
        if value is None:
            return _oversized_spelled(event)
        if len(value) > limit:
            return key, len(value)
    priority = get("Priority")
    if priority is None:
        return _oversized_spelled(event)
    return _bad_priority(priority)


def _oversized_spelled(event: Event) -> tuple[str, int] | None:
    """:func:`oversized` for an event missing a key as Asterisk spells it: one
    pass over its fields checks every one whose key folds to an identity key,
    in any spelling (what the tracker reads, the first of them, among them)."""
    folded = _FOLDED.get
    for name, value in event.fields:
        known = folded(normalize_key(name))
        if known is None or not value:
            continue
        key, limit = known
        if key == "Priority":
            bad = _bad_priority(value)
            if bad is not None:
                return bad
        elif len(value) > limit:
            return key, len(value)
    return None


#: Keys a snapshot writes after its numbers and before its ``Context``: one
#: between the two of a repeated key says the first came in with a number.
_AFTER_NUMBERS: tuple[str, ...] = (
    "CallerIDName",
    # A CEL record writes its CallerIDnum then CallerIDname: a key the number
    # brought in (an Exten, Channel or LinkedID of another call) came before
    # the record's own, and the call life read it (issue 16).
    "CallerIDname",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
)


#: Keys a snapshot writes right after its ``Exten``, in this order: a caller
#: chooses the dialled number too (a SIP request URI's user, which PJSIP
#: decodes), and a line it brings in comes between the ``Exten`` and these.
_AFTER_EXTEN: tuple[str, ...] = ("Priority", "Uniqueid", "Linkedid")


#: Keys of a channel snapshot, each with any prefix: Asterisk 22's
#: ``ast_manager_build_channel_state_string_prefix``.
_SNAPSHOT_SUFFIXES: tuple[str, ...] = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)


#: Keys Asterisk writes once in an event, each with any prefix (``Dest``,
#: ``LocalOne``...): a channel snapshot's, a step's, a dialplan UserEvent's
#: name and the shipped request's keys. Asterisk 22 writes ``CallerIDNum``
#: (and a step's ``AppData``, a UserEvent's values) as they are, line breaks
#: and all, and a SIP caller chooses the number: ``1%0D%0AExten: 900`` in
#: the From user puts an ``Exten: 900`` line before the snapshot's own
#: ``Context``, ``Exten``, ``Priority``, ``Uniqueid`` and ``Linkedid``, and
#: the first of a key is the one read (:func:`smuggled`, issue 16).
_ONCE_SUFFIXES: tuple[str, ...] = (
    *_SNAPSHOT_SUFFIXES,
    "Extension",
    "Application",
    "UserEvent",
    "DID",
    "Caller",
    # A CEL record's own spellings (cel_manager.c): its number, then these.
    "EventName",
    "UniqueID",
    "LinkedID",
    "Peer",
)


#: The key lists above folded as mxml folds keys (:func:`normalize_key`):
#: over ``/mxml`` a key Asterisk does not document arrives lower-cased (a
#: request's ``DID`` as ``did``), and compared as spelled it was no key
#: written once, so a ``DID`` a number brought in passed (issue 16).
_AFTER_NUMBERS_FOLDED: tuple[str, ...] = tuple(normalize_key(k) for k in _AFTER_NUMBERS)
_SNAPSHOT_FOLDED: tuple[str, ...] = tuple(normalize_key(k) for k in _SNAPSHOT_SUFFIXES)
_ONCE_FOLDED: tuple[str, ...] = tuple(normalize_key(k) for k in _ONCE_SUFFIXES)
_AFTER_EXTEN_FOLDED: tuple[str, ...] = tuple(normalize_key(k) for k in _AFTER_EXTEN)


#: The prefixes of the channel snapshots Asterisk 22 writes into events
#: (``ast_manager_build_channel_state_string_prefix``), as router/ami/catalog.json
#: lists their ``CallerIDNum`` keys.
_SNAPSHOT_PREFIXES: tuple[str, ...] = (
    "",
    "Dest",
    "LocalOne",
    "LocalTwo",
    "M",
    "OrigTransferer",
    "Parkee",
    "Parker",
    "Retriever",
    "SecondTransferer",
    "Source",
    "Spyee",
    "Spyer",
    "Target",
    "TransferTarget",
    "Transferee",
    "Transferer",
)
#: A snapshot's ``CallerIDNum`` (as Asterisk spells it, with its prefix) and
#: the ``Linkedid`` that closes it, :data:`_SNAPSHOT_SPAN` keys later when
#: nothing came in between: every key from the caller's numbers to the
#: dialled number's ``Exten`` and the three after it.
_SNAPSHOT_ENDS: dict[str, str] = {f"{p}CallerIDNum": f"{p}Linkedid" for p in _SNAPSHOT_PREFIXES}
_SNAPSHOT_NUMBERS: frozenset[str] = frozenset(_SNAPSHOT_ENDS)
_PREFIXED_NUMBERS: frozenset[str] = _SNAPSHOT_NUMBERS - {"CallerIDNum"}
_SNAPSHOT_SPAN = _SNAPSHOT_SUFFIXES.index("Linkedid") - _SNAPSHOT_SUFFIXES.index("CallerIDNum")
#: The events whose snapshots Asterisk writes with a prefix (a ``DialBegin``'s
#: ``Dest``...), as router/ami/catalog.json lists them: only theirs are looked
#: for, so the usual event pays no set operation.
_PREFIXED_EVENTS: frozenset[str] = frozenset(
    (
        "AgentCalled",
        "AgentComplete",
        "AgentConnect",
        "AgentDump",
        "AgentRingNoAnswer",
        "AttendedTransfer",
        "BlindTransfer",
        "ChanSpyStart",
        "ChanSpyStop",
        "DialBegin",
        "DialEnd",
        "DialState",
        "LocalBridge",
        "LocalOptimizationBegin",
        "LocalOptimizationEnd",
        "MCID",
        "ParkedCall",
        "ParkedCallGiveUp",
        "ParkedCallSwap",
        "ParkedCallTimeOut",
        "Pickup",
        "UnParkedCall",
    )
)
#: Where an event's own snapshot writes its ``CallerIDNum``: after ``Event``,
#: ``Privilege``, ``Timestamp``, ``SystemName``, ``Channel``, ``ChannelState``
#: and ``ChannelStateDesc`` (looked for at once, else searched), and its
#: ``Linkedid``.
_NUMBER_AT = 7
_LINKEDID_AT = _NUMBER_AT + _SNAPSHOT_SPAN


def _in_place(fields: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``fields`` has its ``CallerIDNum`` right after its
    ``ChannelStateDesc`` at :data:`_NUMBER_AT`, as Asterisk writes an event's
    own snapshot with ``Timestamp`` and ``SystemName``. Then it is the
    snapshot's, or a number's line with a ``ChannelStateDesc`` one before it
    (the snapshot's own at 5, no ``Timestamp``): two lines, both read after
    the snapshot's own, and the snapshot's ``Linkedid`` 10 keys on."""
    return (
        len(fields) > _LINKEDID_AT
        and fields[_NUMBER_AT][0] == "CallerIDNum"
        and fields[_NUMBER_AT - 1][0] == "ChannelStateDesc"
    )


def _reshaped(name: str, fields: tuple[tuple[str, str], ...], spelled: Mapping[str, str]) -> bool:
    """Whether a channel snapshot of the event holds a line Asterisk did not
    write there: its ``Linkedid`` is not :data:`_SNAPSHOT_SPAN` keys after
    its ``CallerIDNum``. The caller chooses the values in between (the
    numbers and names, the dialled number's ``Exten``), Asterisk writes them
    as they are, and a line they bring in may spell a key otherwise
    (``uniqueid: x``): a reader asking ``uniqueid`` got it first (issue 16).
    A few dict and index look-ups an event: no key is folded."""
    number = spelled.get("CallerIDNum")
    if number is not None:
        at = _NUMBER_AT
        if not _in_place(fields):
            at = fields.index(("CallerIDNum", number))  # the first: the snapshot's
        at += _SNAPSHOT_SPAN
        if at >= len(fields) or fields[at][0] != "Linkedid":
            return True
    if name not in _PREFIXED_EVENTS:
        return False
    ends = _SNAPSHOT_ENDS
    for key in _PREFIXED_NUMBERS.intersection(spelled):
        at = fields.index((key, spelled[key])) + _SNAPSHOT_SPAN
        if at >= len(fields) or fields[at][0] != ends[key]:
            return True
    return False


def smuggled(event: Event) -> str | None:
    """A key ``event`` holds twice that Asterisk writes once (:data:`_ONCE_SUFFIXES`,
    in any spelling: mxml's lower-cased ``did`` is a ``DID``), the first
    brought in with a number: a snapshot's key (:data:`_AFTER_NUMBERS`)
    comes between the two. That first one reads
    first, and may name another extension, context or priority than the
    channel's. A key a dialplan's ``UserEvent`` repeats after the snapshot
    and its ``UserEvent`` key (``UserEvent(Mine,CallerIDName: x,Channel: y)``)
    is not one: the snapshot's reads first. So is a snapshot's Priority,
    Uniqueid or Linkedid seen twice after its Exten (:data:`_AFTER_EXTEN`:
    the dialled number's line), and any key written once whose first
    comes before a snapshot's Priority, Uniqueid or Linkedid and its
    second after them (a Newexten's ``Application``, a request's
    ``UserEvent``: the dialled number's line too). In a ``CEL`` record, which writes every key
    once, any key twice (in any spelling) is one.
    None for an event without one.

    A snapshot a line came into (:func:`_reshaped`) is read with its keys
    folded: a ``uniqueid`` before the snapshot's ``Uniqueid`` is the key
    twice, as a rule asking ``uniqueid`` reads it.

    Cheap for the usual event: its keys as a dict are as many as its fields,
    and its snapshot has its ``Linkedid`` where Asterisk writes it."""
    fields = event.fields
    name = event.name
    if name == "CEL":
        # cel_manager.c writes each key of a record once, and every value as
        # it is: a line CallerIDani, CallerIDdnid, Exten or AppData (a step's
        # arguments) brought in comes before the record's own UniqueID and
        # LinkedID with no snapshot key between to tell, in any spelling
        # (issue 16).
        return _repeated(fields)
    spelled = event.spelled()
    # A snapshot a value brought lines into is read with its keys folded: a
    # key repeated in another spelling (``uniqueid`` before the snapshot's
    # ``Uniqueid``) is a repeat too. Asterisk's own events are read as
    # spelled, with no key folded (issue 16).
    # The usual event (one snapshot, where Asterisk writes it) checked in
    # place: no call, no search (:func:`_in_place`).
    reshaped = (
        len(fields) <= _LINKEDID_AT
        or fields[_LINKEDID_AT][0] != "Linkedid"
        or fields[_NUMBER_AT][0] != "CallerIDNum"
        or fields[_NUMBER_AT - 1][0] != "ChannelStateDesc"
        or name in _PREFIXED_EVENTS
    ) and _reshaped(name, fields, spelled)
    if not reshaped and len(spelled) == len(fields):
        return None  # no key repeats
    body = len(fields)
    if name == "UserEvent":
        # A dialplan's UserEvent writes its snapshot, its UserEvent key, then
        # the administrator's own keys, which may repeat a snapshot's
        # (``UserEvent(Mine,CallerIDName: x,Channel: y)``): a snapshot key
        # lay between the two, and the event was refused, lost to plugins
        # and event rules. A number's line comes before the last UserEvent.
        ends = [at for at, (key, _) in enumerate(fields) if normalize_key(key) == "userevent"]
        if ends:
            body = ends[-1]
    first: dict[str, int] = {}
    #: Read off the fields once, at the first repeat (:class:`_Marks`): a
    #: repeat's look at the keys between cost a scan each, and a number of a
    #: thousand lines of one key took half a second an event (hreview49).
    marks: _Marks | None = None
    for at, (key, _) in enumerate(fields):
        mark = normalize_key(key) if reshaped else key
        was = first.get(mark)
        if was is None:
            first[mark] = at
            continue
        folded = normalize_key(key)  # in any spelling: mxml's "did" too
        if not folded.endswith(_ONCE_FOLDED):
            continue
        if marks is None:
            marks = _Marks(fields)
        if at <= body:
            if marks.after_exten(folded, was):
                return key
            # The first brought in with a number (its numbers' keys between)
            # or with the dialled number (the keys after its Exten between:
            # an Application, Extension or UserEvent line the sandbox's
            # Asterisk 22 wrote from ``sip:...%0D%0AApplication%3A%20Wait@``).
            end = at
        elif was < body and not folded.endswith(_SNAPSHOT_FOLDED):
            # A key of the request's own (DID, Caller) a number brought into
            # the snapshot, which writes no such key: its numbers' keys, or
            # the keys after its Exten (the dialled number's line), between.
            end = body
        else:
            continue  # the administrator's repeat of a snapshot's or own key
        if marks.between(was + 1, end):
            return key
    return None


#: The keys whose presence between a key's two lines tells that a value brought
#: the first in: a snapshot's numbers' (:data:`_AFTER_NUMBERS`) or those after
#: its ``Exten`` (:data:`_AFTER_EXTEN`), with any prefix.
_BETWEEN_FOLDED: tuple[str, ...] = _AFTER_NUMBERS_FOLDED + _AFTER_EXTEN_FOLDED


class _Marks:
    """What :func:`smuggled` asks of an event's fields, read in one pass: how
    many of the keys :data:`_BETWEEN_FOLDED` lie before each field, and where
    each key (folded) is first."""

    __slots__ = ("_before", "_first")

    def __init__(self, fields: tuple[tuple[str, str], ...]) -> None:
        before = [0]
        first: dict[str, int] = {}
        count = 0
        for at, (name, _) in enumerate(fields):
            folded = normalize_key(name)
            first.setdefault(folded, at)
            if folded.endswith(_BETWEEN_FOLDED):
                count += 1
            before.append(count)
        self._before = before
        self._first = first

    def between(self, start: int, end: int) -> bool:
        """Whether one of those keys is among the fields ``start`` to ``end`` (excluded)."""
        return end > start and self._before[end] > self._before[start]

    def after_exten(self, folded: str, was: int) -> bool:
        """Whether ``folded``, one of the keys a snapshot writes after its
        ``Exten`` (:data:`_AFTER_EXTEN`, with its prefix), is seen at ``was``
        after that snapshot's ``Exten`` and again later: Asterisk writes it
        once there, and a line the dialled number brought in is the first
        (issue 16)."""
        for suffix in _AFTER_EXTEN_FOLDED:
            if folded.endswith(suffix):
                exten = folded[: -len(suffix)] + "exten"  # mxml's "uniqueid" too
                return self._first.get(exten, was) < was
        return False


#: Events Asterisk writes with a ``Channel`` but no channel snapshot, so no
#: ``Uniqueid``: the test framework's (an Asterisk built with
#: ``TEST_FRAMEWORK``, as the sandbox's, writes one at each call's
#: ``CallIDChange``). Any other naming a live channel without its
#: ``Uniqueid`` was cut off by a blank line a caller wrote (:meth:`CallTracker.impostor`).
_NO_SNAPSHOT = frozenset({"TestEvent"})

#: ASCII upper case to lower case, as Asterisk's ``strcasecmp`` folds names.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: What Asterisk skips at the start of an action's header value
#: (``ast_skip_blanks``: every byte below 33).
_SKIPPED = "".join(map(chr, range(33)))


def _fold(name: str) -> str:
    """A channel's name as Asterisk reads it in an action (a Redirect's
    ``Channel``) and compares it when it looks the channel up: without the
    blanks and control characters before it, in any ASCII case. On the
    sandbox's Asterisk 22.10.1 a Getvar of ``local/XX@SINK-00000004;2``, or
    of ``Local/xx@sink-00000004;2`` after a space, a tab or a ``\x01``,
    answered for ``Local/xx@sink-00000004;2`` (hrev50)."""
    return name.lstrip(_SKIPPED).translate(_ASCII_LOWER)


def listed_twice(items: Sequence[Event]) -> frozenset[int]:
    """The indexes of the items of a channel listing (``CoreShowChannels``)
    that name a channel another item names too, as Asterisk looks a channel up
    (:func:`_fold`: by its name in any case, after blanks, or by its
    ``Uniqueid``).

    Asterisk lists each channel once. A caller's number holding a blank line
    makes its own channel's item two: the second, made up, names whatever
    channel the number chose, completed by the rest of the real item (its
    ``Uniqueid``, and ``Context`` and ``Application`` of a channel waiting
    in the inbound context). A reconcile routed such an item as a second
    request of the channel it named, with the caller number the item gave,
    and redirected that channel (hrev50). Which of the two is Asterisk's is
    told only for a channel tracked under its ``Uniqueid``
    (:meth:`CallTracker.knows`); else neither is routed nor tracked from the
    listing (the channel still waiting takes its default route)."""
    keys: list[set[str]] = []
    counts: dict[str, int] = {}
    for item in items:
        mine = {_fold(v) for v in (item.get("Channel"), item.get("Uniqueid")) if v}
        keys.append(mine)
        for key in mine:
            counts[key] = counts.get(key, 0) + 1
    return frozenset(at for at, mine in enumerate(keys) if any(counts[k] > 1 for k in mine))


def _repeated(fields: tuple[tuple[str, str], ...]) -> str | None:
    """The first key of ``fields`` seen a second time in any spelling (a
    reader that asks ``uniqueid`` gets the first of ``UniqueID`` and
    ``Uniqueid``), as spelled the second time; None for none."""
    seen: set[str] = set()
    for key, _ in fields:
        norm = normalize_key(key)
        if norm in seen:
            return key
        seen.add(norm)
    return None


def _identity_spelling(keys: KeysView[str]) -> int:
    """How an event's ``keys`` (as spelled) name the keys :func:`oversized`
    checks: :data:`_NONE` in no spelling (then none is oversized, and the event
    names no call nor channel), :data:`_ASTERISKS` only as Asterisk spells them
    (a read of one as spelled is then the read in any spelling), else
    :data:`_OTHERWISE`. Keys found to be none of them are remembered
    (:data:`_PLAIN`), so an event made of them costs a subset test or two."""
    if keys <= _PLAIN:
        return _NONE
    rest = keys - _PLAIN
    if rest <= _AS_SPELLED:
        return _ASTERISKS
    spelling = _NONE
    for name in rest:
        if name in _AS_SPELLED:
            if spelling == _NONE:
                spelling = _ASTERISKS
        elif normalize_key(name) in _FOLDED:
            spelling = _OTHERWISE
        elif len(_PLAIN) < _PLAIN_MAX and len(name) <= _PLAIN_KEY_MAX:
            _PLAIN.add(name)
    return spelling


def _bad_priority(priority: str) -> tuple[str, int] | None:
    if priority and (len(priority) > 11 or _PRIORITY.fullmatch(priority) is None):
        return "Priority", len(priority)
    return None


class CallTracker:
    """Folds events into :class:`Call` objects; bounded in count and age."""

    def __init__(
        self,
        *,
        ttl: float = 4 * 3600.0,
        max_calls: int = 100_000,
        max_channels: int = TRACKED_CHANNELS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._calls: dict[str, Call] = {}
        self._by_channel: dict[str, str] = {}
        #: The live channels' names, and their ``Uniqueid``, as Asterisk reads
        #: them in an action (:func:`_fold`), to the name as Asterisk wrote it
        #: (:meth:`_impostor`): ``pjsip/103-00000001``, `` PJSIP/103-00000001``
        #: or its Uniqueid in a made-up event names ``PJSIP/103-00000001`` to a
        #: Redirect (Asterisk looks a channel up by its Uniqueid too).
        self._folded: dict[str, str] = {}
        self._ttl = ttl
        self._max_calls = max_calls
        self._max_channels = max_channels
        #: Channels kept by the calls tracked (``len(call.channels)`` summed).
        self._channels = 0
        self._clock = clock
        #: Events not tracked for an oversized field (:func:`oversized`).
        self.refused = 0
        self._refused_warning = ThrottledWarning(_REFUSED_EVERY, clock)
        #: Its own minute, apart from the key-twice and oversized warnings: a
        #: caller's number with blank lines makes both kinds in one call, and
        #: whichever came first hid the other, so the line naming the live
        #: channel a caller tried to take over could go unsaid for a minute.
        self._impostor_warning = ThrottledWarning(_REFUSED_EVERY, clock)
        #: The event stream's session, counted up at each gap (:meth:`new_session`).
        self._session = 0

    @property
    def channels(self) -> int:
        """How many channels the calls tracked keep, hung-up ones included."""
        return self._channels

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    def get(self, linkedid: str) -> Call | None:
        return self._calls.get(linkedid)

    def by_channel(self, channel: str) -> Call | None:
        linkedid = self._by_channel.get(channel)
        return self._calls.get(linkedid) if linkedid else None

    def feed(self, event: Event) -> Fed:
        """Apply one event: the call it belongs to, whether it started it, and
        the calls that ended."""
        # Every event the engine handles comes through here: its keys as
        # Asterisk spelled them answer each read with a dict lookup, and a
        # miss asks the message (any spelling) as before.
        spelled = event.spelled()
        get = spelled.get
        linkedid = get("Linkedid")
        channel_name = get("Channel")
        spelling = (
            _identity_spelling(spelled.keys())
            if linkedid is None and channel_name is None
            else _OTHERWISE
        )
        if spelling == _NONE:
            # No call's (a DeviceStateChange: a BLF flood of them): nothing to
            # track or refuse, in a subset test instead of a pass over its keys
            # for each key missed and one for the check.
            return _NOTHING
        if spelling == _OTHERWISE:
            # (With the keys only as Asterisk spells them, as an ExtensionStatus
            # has Context and Exten, no other spelling of these two is there.)
            linkedid = linkedid or event.get("Linkedid")
            channel_name = channel_name or event.get("Channel")
        name = event.name
        if self.refuses(event):
            return _REFUSED
        if name == "UserEvent" and not sent_by_channel(event):
            # The AMI action UserEvent (a manager user, an API token, a rule):
            # its Channel, Linkedid and Context are its sender's words, so it
            # neither changes the calls tracked (nor, at the cap, evicts them)
            # nor hands a rule or plugin someone else's call to act on.
            return _NOTHING
        if channel_name and self._impostor(event, channel_name):
            return _REFUSED
        if not linkedid:
            return Fed(self.by_channel(channel_name)) if channel_name else _NOTHING
        call = self._calls.get(linkedid)
        started = call is None
        evicted: tuple[Call, ...] = ()
        forgotten: tuple[Channel, ...] = ()
        if call is None:
            if name == "Hangup":
                return _NOTHING  # the end of a call we never saw (or already forgot)
            if len(self._calls) >= self._max_calls:
                evicted = self.sweep(force_oldest=True)
            call = Call(linkedid, self._clock())
            self._calls[linkedid] = call
        now = self._clock()
        if channel_name:
            chan = call.channels.get(channel_name)
            if chan is None:
                chan, left = self._moved(channel_name, linkedid, now)
                if left is not None:
                    evicted = (*evicted, left)
                if chan is None:
                    chan = Channel(
                        channel_name,
                        get("Uniqueid") or event.get("Uniqueid") or "",
                        session=self._session,
                    )
                if len(call.channels) >= CHANNELS_MAX:
                    forgotten = _make_room(call)
                    self._channels -= len(forgotten)
                if len(call.channels) < CHANNELS_MAX:
                    if self._channels >= self._max_channels:
                        evicted = (*evicted, *self._make_space(call, now))
                    call.channels[channel_name] = chan
                    self._channels += 1
                    self._by_channel[channel_name] = linkedid
                    self._folded[_fold(channel_name)] = channel_name
                    if chan.uniqueid:
                        self._folded.setdefault(_fold(chan.uniqueid), channel_name)
                else:
                    # Followed by no call now (one it left above, if any, no
                    # longer has it): its index entry would outlive both calls.
                    self._unindex(channel_name, chan.uniqueid)
            context = get("Context")
            if context is None:
                context = event.get("Context")
            if context is not None:
                chan.context = context
                chan.exten = get("Exten") or event.get("Exten") or chan.exten
                chan.priority = get("Priority") or event.get("Priority") or chan.priority
            if name == "BridgeEnter":
                chan.entered_bridge = True
                _in_bridge(call, chan, get("BridgeUniqueid") or event.get("BridgeUniqueid"), event)
            elif name == "Newexten":
                chan.application = cut_text(get("Application") or event.get("Application") or "")
            elif name == "DialBegin":
                dest = call.channels.get(get("DestChannel") or event.get("DestChannel") or "")
                if dest is not None and dest is not chan:
                    dest.dialed_by = channel_name
            elif name == "BridgeLeave":
                _in_bridge(call, chan, None, event)
            state = get("ChannelStateDesc") or event.get("ChannelStateDesc")
            if state:
                chan.state = state
                if state == ANSWERED_STATE and not channel_name.startswith("Local/"):
                    call.answered = True
            if not call.caller_number or channel_name == call.caller_leg:
                number = get("CallerIDNum") or event.get("CallerIDNum") or ""
                if number not in _UNKNOWN:
                    # The caller's own texts, cut once here: the feed, the live
                    # page and the rules all read them from the call (router.callerid).
                    # The number follows the inbound leg until the call rings,
                    # as its name: a dialplan's Set(CALLERID(num)=8${CALLERID(num)})
                    # comes before the routing request, which has the new one.
                    call.caller_number = cut_number(number)
                    call.caller_leg = channel_name
            if channel_name == call.caller_leg:
                # The name follows the inbound leg until the call rings: the
                # trunk's Newchannel often has none, and the dialplan sets it
                # (Set(CALLERID(name)=...) from a CRM or a list) before Dial.
                cname = get("CallerIDName") or event.get("CallerIDName") or ""
                if cname not in _UNKNOWN:
                    call.caller_name = cut_text(cname)
        if name == "VarSet":
            var = event.get("Variable")
            if (
                var
                and len(var) <= VARIABLE_NAME_MAX
                and (var in call.variables or len(call.variables) < VARIABLES_MAX)
            ):
                call.variables[var] = cut_text(event.get("Value") or "")
        elif _answers(name, event):
            call.answered = True
        if name == "DialBegin":
            # The number and name it rang with stay the call's (the feed's
            # ringing shows them); an Answer() before (a greeting, an IVR) does
            # not fix them yet.
            call.caller_leg = ""
        _remember(call, TimelineEntry(now, name, cut_text(_detail(event))))
        if name == "Hangup" and channel_name:
            chan = call.channels.get(channel_name)
            if chan is not None:
                chan.hung_up = True
            self._unindex(channel_name, chan.uniqueid if chan is not None else "")
            if not call.active_channels:
                self._end(call, now)
                return Fed(call, started, (*evicted, call), forgotten)
        if evicted or started or forgotten:
            return Fed(call, started, evicted, forgotten)
        return Fed(call)

    def requested(self, call: Call, event: Event) -> None:
        """The routing request came from ``event``'s channel (or it stepped
        into the inbound context, where it sends one): that is the caller's
        leg, whose number and name (the ones the call is routed with)
        the call follows until it rings. It differs from the channel the number
        was first read from when the call came in through a ``Local`` channel:
        its ``;1`` half keeps the number the ``;2`` half's dialplan rewrote.

        A trunk's context that dials ``Local/${EXTEN}@callrouter-inbound``
        rings that Local channel first: its ``DialBegin`` is no ring of the
        caller's, so the first request of a call from a Local channel's ``;2``
        half is the caller's even after it."""
        channel = event.get("Channel")
        if not channel or channel == call.caller_leg:
            return
        if call.waiting_channel not in (None, channel):
            return  # routed from another channel already: its caller stays
        if not call.caller_leg and not dialplan_half(channel):
            return  # rung already (or never a number: the request's own is read)
        call.caller_leg = channel
        number = event.get("CallerIDNum") or ""
        if number not in _UNKNOWN:
            call.caller_number = cut_number(number)
        cname = event.get("CallerIDName") or ""
        if cname not in _UNKNOWN:
            call.caller_name = cut_text(cname)

    def _moved(self, channel: str, linkedid: str, now: float) -> tuple[Channel | None, Call | None]:
        """A channel known under another Linkedid: Asterisk gives every channel
        of a bridge the oldest Linkedid among them (two calls joined by the
        Bridge action, a conference, a transfer), so its events come under the
        new one from then on. It leaves its old call, which ends when no live
        channel is left there (else it would stay open, its leg never hung up,
        until the TTL). The channel and the call that ended, if any."""
        previous = self._by_channel.get(channel)
        if previous is None or previous == linkedid:
            return None, None
        old = self._calls.get(previous)
        if old is None:
            return None, None
        moved = old.channels.pop(channel, None)
        if moved is not None:
            self._channels -= 1
        if not old.active_channels:
            self._end(old, now)
            return moved, old
        return moved, None

    def _make_space(self, call: Call, now: float) -> tuple[Call, ...]:
        """Room for one more channel across all calls: the oldest calls other
        than ``call`` end (as past ``max_calls``); the ones that ended."""
        gone: list[Call] = []
        while self._channels >= self._max_channels:
            # Oldest first (the dict keeps the order calls started in).
            old = next((c for c in self._calls.values() if c is not call), None)
            if old is None:
                break
            self._end(old, now)
            gone.append(old)
        return tuple(gone)

    def refuses(self, event: Event) -> bool:
        """Whether ``event`` has a field no Asterisk sends (:func:`oversized`)
        or a key twice that Asterisk writes once (:func:`smuggled`): then it
        is not tracked, nor should anything else keep what it says. Kept, a
        stream of them with fresh Linkedids would hold about what the peer
        sent, up to the caps (issue 16). Counted in :attr:`refused` and said
        at most once a minute, naming the field and its length or the key
        repeated (never its value: the peer's bytes)."""
        problem = oversized(event)
        twice = smuggled(event) if problem is None else None
        if problem is None and twice is None:
            return False
        self.refused += 1
        name = event.name
        more = self._refused_warning.due()
        if more is None:
            return True
        if problem is None:
            log.warning(
                "an event %s with two %s lines is not tracked: Asterisk writes one, and a "
                "value brought the other in (a caller or dialled number holding CR LF, which "
                "Asterisk writes as it is; docs/asterisk.md)%s",
                name[:64],
                escape_controls(str(twice)[:64]),
                more,
            )
            return True
        key, length = problem
        log.warning(
            "an event %s with a %s of %d characters is not tracked: no Asterisk sends "
            "one longer than %s (a broken or hostile AMI peer?)%s",
            name[:64],
            key,
            length,
            "an integer" if key == "Priority" else f"{IDENTITY_LIMITS[key]} characters",
            more,
        )
        return True

    def new_session(self) -> None:
        """The event stream had a gap: Asterisk may have restarted, and a
        channel tracked before may be gone unseen, its name given again (the
        names' counter starts anew). Such a channel's name no longer vouches
        for its ``Uniqueid`` (:meth:`impostor`) until the reconcile lists it
        again under that one (:meth:`vouch`), or ends it."""
        self._session += 1

    def vouch(self, item: Event) -> None:
        """A channel listing's item (the reconcile's ``CoreShowChannel``): a
        tracked channel it lists under the ``Uniqueid`` the tracker knows it
        by is this session's again, judged by :meth:`impostor` again."""
        known = self._known(item)
        if known is not None:
            known.session = self._session

    def knows(self, item: Event) -> bool:
        """Whether ``item`` names a live channel tracked under its ``Uniqueid``
        (of the two items :func:`listed_twice` finds, Asterisk's)."""
        return self._known(item) is not None

    def _known(self, item: Event) -> Channel | None:
        channel = item.get("Channel") or ""
        linkedid = self._by_channel.get(channel)
        call = self._calls.get(linkedid) if linkedid is not None else None
        known = call.channels.get(channel) if call is not None else None
        if known is not None and known.uniqueid and known.uniqueid == item.get("Uniqueid"):
            return known
        return None

    def impostor(self, event: Event) -> str | None:
        """The channel ``event`` names, when the tracker knows that channel by
        another ``Uniqueid`` than the event's: no Asterisk's event, but one a
        caller's or dialled number made up between blank lines (issue 16).

        Asterisk writes a channel's number as it is, and a blank line in it
        ends the event there: what follows is read as an event of its own,
        made up by the caller, and the rest of the real event (the snapshot's
        ``Uniqueid`` and ``Linkedid``, the caller's own) is appended to its
        last block. On Asterisk 22 a SIP ``From`` user
        ``1%0D%0A%0D%0AEvent:%20UserEvent%0D%0AChannel:%20PJSIP/103-00000001``
        (79 bytes decoded, PJSIP's bound) made every event of the call read as
        one of ``PJSIP/103-00000001``, a call in progress between two phones: a
        routing request that was decided, whose Redirect would have moved
        that call, and Hangups that would have ended it for callrouter. A
        channel's name is its own while it lives (a masquerade swaps the
        ``Uniqueid`` with the name), so such an event is refused. So is one
        naming a live channel with no ``Uniqueid`` (a second blank line cut
        the real event's off; Asterisk writes one with every channel's
        event but its test framework's ``TestEvent``), or naming it as a
        Redirect's lookup finds it but Asterisk never writes it: in another
        case, after blanks, or by its ``Uniqueid`` (:func:`_fold`, hrev50).
        A channel not tracked, or tracked since before the stream's last gap
        (an Asterisk restart gives names again), cannot be told this way
        (docs/asterisk.md).
        """
        channel = event.get("Channel")
        if not channel:
            return None
        return channel if self._impostor(event, channel, say=False) else None

    def _impostor(self, event: Event, channel: str, *, say: bool = True) -> bool:
        linkedid = self._by_channel.get(channel)
        named = channel
        if linkedid is None:
            # Another spelling of a live channel's name is that channel to
            # Asterisk, and never what Asterisk writes for it (hrev50).
            spelled = self._folded.get(_fold(channel))
            if spelled is not None:
                linkedid = self._by_channel.get(spelled)
                channel = spelled
        call = self._calls.get(linkedid) if linkedid is not None else None
        known = call.channels.get(channel) if call is not None else None
        if known is None or not known.uniqueid or known.session != self._session:
            return False
        uniqueid = event.get("Uniqueid")
        if channel == named and (
            uniqueid == known.uniqueid or (uniqueid is None and event.name in _NO_SNAPSHOT)
        ):
            return False
        # (No Uniqueid at all: Asterisk writes one with every channel's
        # snapshot, and a second blank line a caller wrote cut it off, hrev50.)
        if not say:
            return True
        self.refused += 1
        more = self._impostor_warning.due()
        if more is not None:
            if channel != named:
                how = f"spelled {escape_controls(named[:80])}"
            elif uniqueid is None:
                how = "with no Uniqueid"
            else:
                how = "with another Uniqueid than its own"
            log.warning(
                "an event %s naming the channel %s %s is not tracked: Asterisk writes a "
                "channel's own, and a caller or dialled number holding blank lines (which "
                "Asterisk writes as they are) made this event up; docs/asterisk.md%s",
                event.name[:64],
                escape_controls(channel[:80]),
                how,
                more,
            )
        return True

    def _end(self, call: Call, now: float) -> None:
        call.ended = now
        if self._calls.pop(call.linkedid, None) is not None:
            self._channels -= len(call.channels)
        for name, chan in call.channels.items():
            self._unindex(name, chan.uniqueid)

    def _unindex(self, name: str, uniqueid: str) -> None:
        """``name`` (known by ``uniqueid``) is no live tracked channel's any more."""
        self._by_channel.pop(name, None)
        for key in (name, uniqueid):
            folded = _fold(key)
            if self._folded.get(folded) == name:
                del self._folded[folded]

    def forget(self, linkedid: str) -> Call | None:
        """End a call we know is gone (not listed by CoreShowChannels after a gap);
        the call it ended, if it was tracked."""
        call = self._calls.get(linkedid)
        if call is not None:
            self._end(call, self._clock())
        return call

    def sweep(self, *, force_oldest: bool = False) -> tuple[Call, ...]:
        """Drop calls older than the TTL (lost Hangups); the calls dropped, oldest first.

        Calls are kept in the order they started (a dict keeps insertion order
        and ``started`` is the clock at insertion), so the stale ones are a
        prefix: the walk stops at the first fresh call, and evicting the oldest
        one when full costs O(1), not a scan of every tracked call.
        """
        now = self._clock()
        stale: list[Call] = []
        for call in self._calls.values():
            if now - call.started <= self._ttl:
                break
            stale.append(call)
        if force_oldest and not stale and self._calls:
            stale = [next(iter(self._calls.values()))]
        for call in stale:
            self._end(call, now)
        return tuple(stale)


def _make_room(call: Call) -> tuple[Channel, ...]:
    """Let the hung-up channels of a full call go (their Hangup took them out
    of the channel index already); the ones that went."""
    gone = tuple(c for c in call.channels.values() if c.hung_up)
    for channel in gone:
        del call.channels[channel.name]
    return gone


def _in_bridge(call: Call, chan: Channel, entered: str | None, event: Event) -> None:
    """``chan`` entered the bridge ``entered`` (``BridgeEnter``) or left its
    bridge (``BridgeLeave``: None): the channels of ``call`` in that bridge
    share its new count (``BridgeNumChannels``), so a leg that came in first,
    alone, hears the other side join. Only these two events come here."""
    bridge = entered if entered is not None else event.get("BridgeUniqueid") or ""
    if len(bridge) > IDENTITY_LIMITS["Uniqueid"]:
        bridge = ""  # no bridge Asterisk names: shared with nobody known
    count = ascii_int(event.get("BridgeNumChannels")) or 0
    if entered is None:
        chan.bridge, chan.bridge_channels = "", 0
    else:
        chan.bridge, chan.bridge_channels = bridge, count
    if bridge:
        for other in call.channels.values():
            if other.bridge == bridge:
                other.bridge_channels = count


def _answers(name: str, event: Event) -> bool:
    if name == "DialEnd":
        return event.get("DialStatus") == "ANSWER"
    # An unparsable count (not ASCII digits) is treated as absent, never fatal.
    return name == "BridgeEnter" and (ascii_int(event.get("BridgeNumChannels")) or 0) >= 2


def _remember(call: Call, entry: TimelineEntry) -> None:
    """Append ``entry`` to the call's timeline: at most :data:`TIMELINE_MAX`
    entries and :data:`TIMELINE_CHARS_MAX` characters of details, the oldest
    going first."""
    timeline = call.timeline
    if len(timeline) == timeline.maxlen:
        call.timeline_chars -= len(timeline[0].detail)
    timeline.append(entry)
    call.timeline_chars += len(entry.detail)
    while call.timeline_chars > TIMELINE_CHARS_MAX and len(timeline) > 1:
        call.timeline_chars -= len(timeline.popleft().detail)


def _detail(event: Event) -> str:
    name = event.name
    if name == "Newexten":
        return (
            f"{event.get('Context')},{event.get('Exten')},{event.get('Priority')} "
            f"{event.get('Application')}"
        )
    if name == "Hangup":
        return f"{event.get('Channel')} cause {event.get('Cause')}"
    if name == "UserEvent":
        return event.get("UserEvent") or ""
    if name == "VarSet":
        return f"{event.get('Variable')}={event.get('Value')}"
    return event.get("Channel") or ""
