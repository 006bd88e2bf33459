"""CEL records -> call events: one state machine per Linkedid, no I/O.

The same :class:`Folder` folds records arriving live and records read back
from Asterisk's CEL store after a gap, so live and replayed history are built
by one code path and a fact gets the same ``event_id`` either way
(docs/history.md). What it decides:

* **legs**: every channel of the call. A PJSIP, SIP or IAX2 channel whose
  endpoint looks like an internal number (``is_internal``) is an extension's
  leg; Local channels are plumbing; any other channel is the outside line.
* **ringing** at an extension's leg that the call created (Dial, Queue): known
  for sure when the leg answers, or when it ends without answering unless it
  ended busy, rejected or unreachable (then the phone never rang). A live
  ``Newstate`` Ringing or ``DialState`` RINGING (:meth:`Folder.hint`) says it
  earlier; the event is the same either way.
* **ringing** of the first channel too when Asterisk dialled it for an
  ``Originate`` (a click-to-call rings the manager's phone first): its
  ANSWER or HANGUP names the application ``AppDial2``. Told once the
  customer's number is known (the far end answers, or the phone hangs up
  with the number it dialled), so it names the customer as the rest do.
* **answered** by which extension (an outbound call: when the far end answers),
  including a phone that takes the call without ringing: one that picked it
  up (``PICKUP``, ``*8``) or took a parked call back (its channel, started in
  a call of its own, enters this call's bridge: ``BRIDGE_ENTER``).
* **transferred**: blind and attended, who to whom.
* **hangup** when the Linkedid ends (``LINKEDID_END``): status, who hung up,
  talk time on Asterisk's clock; then **missed** for an inbound call nobody
  answered: one per customer call, however many phones rang. Asterisk may
  send and store ``LINKEDID_END`` a moment before its last legs' ``HANGUP``;
  live, the end then waits for the legs whose end still decides what is told
  (:meth:`CallFold.awaits`: the first channel's too, unless it is a phone that
  took up another call in a call that told nothing), at most :data:`END_GRACE`;
  a replay folds it after the call's other records. A Linkedid that
  ends while its first channel lives on, having told nothing, is no call of
  its own: that channel went on into another call (the phone that dialled
  ``*8`` or a parking space to take a call), which tells it.

Every fold is bounded (calls, legs per call, records per call) and a record
that makes no sense is ignored, never raised.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from router.calllife.model import CallEvent, CelRecord, Direction, EndStatus, Transfer

__all__ = [
    "END_GRACE",
    "FOLDED",
    "MAX_CALLS",
    "MAX_LEGS",
    "MAX_RECORDS",
    "CallFold",
    "Folder",
    "SeenIds",
    "extension_of",
    "plan_internal",
]

log = logging.getLogger("router.calllife")

#: Calls followed at once; past it the oldest is forgotten (logged).
MAX_CALLS = 10_000
#: Legs per call (a ring group of 60 phones is already unusual).
MAX_LEGS = 256
#: Calls at most with a live ringing sign that came before the call's first CEL
#: record (:meth:`Folder.hint`); the oldest are forgotten first.
MAX_EARLY = 1_000
#: Records per call; past it the call's records are ignored until it ends.
MAX_RECORDS = 5_000
#: Event ids remembered after their call ended, so a replay tells nothing twice.
MAX_EMITTED = 200_000
#: Event ids in one of :class:`SeenIds`'s sets. CPython grows a set 4x below
#: 50,000 entries and 2x above, at 60 % full: from 19,661 to 78,643 entries it
#: is a 2 MiB table, 28 B an id at 75,000; 3 or 4 sets for ``MAX_EMITTED``.
SEEN_GENERATION = 75_000
#: Seconds (this host's monotonic clock) a live ``LINKEDID_END`` waits for the
#: ends of the legs that decide what the call tells (:meth:`CallFold.awaits`).
#: Asterisk may send it ahead of its last legs' ``HANGUP`` (it stamps it on the
#: thread that drops the Linkedid's last reference: 0.3 ms ahead in a ring
#: group), but those come in the same burst of CEL, within one AJAM poll or the
#: next; a second covers a loaded host. It is also the most a call's end is
#: late when such a leg's end never comes here (its channel left the Linkedid).
END_GRACE = 1.0

#: Hangup causes of a leg that never rang: busy, rejected, unreachable, no such
#: number, congestion, no answer from the device at all (Q.850 numbers).
NOT_RANG_CAUSES = frozenset({1, 2, 3, 17, 18, 20, 21, 22, 27, 28, 29, 31, 34, 38, 41, 42, 44, 58})
#: "No answer" (Q.850 19), which PJSIP makes of a phone's ``480 Temporarily
#: Unavailable``: a phone on do-not-disturb answers so at once, without ringing;
#: one that rang a while first (a phone's own ring timer) did ring. A leg ended
#: so within this many seconds of its start never rang.
DND_WITHIN = 1.0
_PHONE_TECH = ("PJSIP/", "SIP/", "IAX2/")
#: What a phone dials for a feature of the PBX (``*8``, ``*97``, ``#21``).
_SERVICE_CODE = re.compile(r"[*#][0-9*#]{1,15}")
_CHANNEL = re.compile(r"^(?P<tech>[A-Za-z0-9]+)/(?P<name>.+?)(?:-[0-9a-fA-F]+)?(?:;[12])?$")
_DIAL_STATUS: dict[str, EndStatus] = {
    "ANSWER": "ANSWER",
    "BUSY": "BUSY",
    "NOANSWER": "NOANSWER",
    "CANCEL": "CANCEL",
    "CONGESTION": "FAILED",
    "CHANUNAVAIL": "FAILED",
    "INVALIDARGS": "FAILED",
}


def plan_internal(number: str) -> bool:
    """The default number plan's rule (router/builtin/numbers.py): up to five
    digits is an extension. The engine passes the configured plan's rule."""
    return number.isascii() and number.isdigit() and 0 < len(number) <= 5


def extension_of(channel: str, is_internal: Callable[[str], bool] = plan_internal) -> str | None:
    """The extension a phone channel belongs to (``PJSIP/101-0000002a`` -> ``101``), or None."""
    if not channel.startswith(_PHONE_TECH):
        return None
    match = _CHANNEL.match(channel)
    if match is None:
        return None
    name = match.group("name")
    return name if name.isascii() and name.isdigit() and is_internal(name) else None


def _is_local(channel: str) -> bool:
    return channel.startswith("Local/")


def _local_extension(channel: str, is_internal: Callable[[str], bool]) -> str | None:
    """The extension a Local channel dials (``Local/102@callrouter-dial-0000;1`` -> ``102``).

    AMI Atxfer (the HTTP API's attended transfer) consults through such a
    channel, so it is what the transfer went to.
    """
    match = _CHANNEL.match(channel) if _is_local(channel) else None
    if match is None:
        return None
    exten = match.group("name").partition("@")[0]
    return exten if exten.isascii() and exten.isdigit() and is_internal(exten) else None


@dataclass(slots=True)
class Leg:
    """One channel of the call, as far as the records told."""

    uniqueid: str
    channel: str
    extension: str | None
    started_at: float
    originator: bool = False
    answered_at: float | None = None
    ended_at: float | None = None
    cause: int | None = None
    rang: bool = False
    #: Left the call by a transfer (its hangup is not the call's end).
    transferred_away: bool = False
    #: Its CHAN_START was folded here: only such a leg can have rung in this
    #: call (a leg first seen later joined from elsewhere, or was seen mid-way).
    started_here: bool = False
    #: Asterisk dialled it for an ``Originate`` (a click-to-call's manager
    #: phone): the call's first channel, and still a phone that rang.
    originated: bool = False
    #: It answered an Originate: its ringing waits for the customer's number.
    ring_held: bool = False
    #: The first channel, answered the way a phone that takes up a call of
    #: another Linkedid is (:data:`_TAKER_ANSWERS`): it may go on in that call.
    taker: bool = False


@dataclass(slots=True)
class CallFold:
    """One call's state: every record of one Linkedid, folded in order."""

    linkedid: str
    is_internal: Callable[[str], bool]
    replayed: bool = False
    legs: dict[str, Leg] = field(default_factory=dict)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    direction: Direction | None = None
    external: str | None = None
    did: str | None = None
    originator: Leg | None = None
    started_at: float | None = None
    answered_at: float | None = None
    #: The extension on the call now (answered, or the target of a transfer).
    current: str | None = None
    answered: bool = False
    transfers: int = 0
    first_hangup: tuple[str, float] | None = None
    #: An inbound call whose first channel is a ``Local`` one that started
    #: with no number (an ``Originate`` sets it after CHAN_START): its number
    #: is read from its later records (:meth:`_late_caller`).
    caller_late: bool = False
    hangup_source: str = ""
    dial_status: str = ""
    ended: bool = False
    last_at: float = 0.0
    records: int = 0
    #: Events this call decided so far (a Linkedid that told none may be no call
    #: of its own, see :meth:`_on_end`).
    told: int = 0
    #: Legs a live ringing sign named before their ``CHAN_START`` was folded:
    #: Asterisk sends a leg's ``Newstate`` Ringing and ``DialState`` RINGING
    #: ahead of its CEL records, so the sign waits for the leg here.
    hinted: set[str] = field(default_factory=set)
    #: Legs whose live ringing sign came while the number was late
    #: (``caller_late``), in the order the signs came: their ringing is told
    #: once the number is known, or at the leg's own answer or end (where a
    #: replay, which has no signs, tells it), or before the call's hangup; so
    #: live and replayed copies name the same number (the sign told it at
    #: once, ``external: null``, and the replay named the number).
    ring_late: dict[str, None] = field(default_factory=dict)
    #: Its ``LINKEDID_END``, come live while a leg whose end decides what the call
    #: tells had not ended here (:meth:`awaits`): folded once they end, or when
    #: :data:`END_GRACE` runs out (:meth:`Folder.expire`). The call is not ended
    #: meanwhile, so those legs' records are folded, in the order a replay folds
    #: them (LINKEDID_END last).
    end_held: CelRecord | None = None

    # -- folding -----------------------------------------------------------------

    def apply(self, record: CelRecord) -> list[CallEvent]:
        """Fold one record; the events it decides (none if it was seen before)."""
        if not self.note(record.key, record.at):
            return []
        events: list[CallEvent] = []
        if self.caller_late and self._late_caller(record):
            events += self._late_ringings()
        handler = _HANDLERS.get(record.event)
        if handler is not None:
            events += handler(self, record)
        self.told += len(events)
        return events

    def awaits(self) -> bool:
        """Whether a leg this call knows of has not ended here yet, and its end
        still decides what the call tells: a phone's leg that may have rung (its
        ``HANGUP`` tells its ``ringing``), one of the parties talking whose end
        is the call's (its time, who hung up), or the first channel (the status,
        who hung up, a click-to-call phone's ``ringing``). Not the first channel
        of a phone's call that told nothing, when that channel was answered the
        way a phone taking up another call is (:attr:`Leg.taker`: ``*8``, a
        parking space, a BLF key's ``Replaces``): Asterisk moves it into the call
        it took (a channel bridged with an older call's gets that Linkedid), and
        then its end never comes here. The others' ends come here: a channel
        that never answered was in no bridge (a click-to-call nobody picked up,
        a busy phone, a trunk that refused the call), one the dialplan answered
        stays in its call (a conference room, an announcement), and the outside
        line of an inbound call took no call up (a caller who gave up in the
        wait or after a greeting)."""
        for leg in self.legs.values():
            if leg.ended_at is not None:
                continue
            if leg.originator:
                if (
                    self.told
                    or self.ring_late
                    or leg.ring_held
                    or not leg.taker
                    or self.direction == "in"
                ):
                    return True
            elif leg.answered_at is None:
                if leg.extension is not None and leg.started_here and not leg.rang:
                    return True
            elif (
                self.answered
                and self.first_hangup is None
                and not leg.transferred_away
                and not _is_local(leg.channel)
                and (leg.extension is None or leg.extension == self.current)
            ):
                return True
        return False

    def end(self, record: CelRecord) -> list[CallEvent]:
        """Fold the ``LINKEDID_END`` ``record`` already counted (:attr:`end_held`)."""
        self.end_held = None
        if self.ended:
            return []
        events = self._on_end(record)
        self.told += len(events)
        return events

    def _late_caller(self, record: CelRecord) -> bool:
        """The number of an inbound call whose first channel, a ``Local`` one,
        started with none: Asterisk 22 writes both halves' CHAN_START of an
        ``Originate Channel=Local/...`` before it sets the Originate's caller
        ID. The first number of the ``;1`` half's later records, and the
        ``;2`` half's over it (the half that ran the dialplan, and the number
        it may have rewritten before the routing request). True once that
        number is known."""
        origin = self.originator
        number = _number(record.cid_num)
        if origin is None or number is None:
            return False
        if record.uniqueid == origin.uniqueid:
            if self.external is None:
                self.external = number
        elif record.channel == origin.channel.removesuffix(";1") + ";2":
            self.external = number
            self.caller_late = False
        return not self.caller_late

    def note(self, key: tuple[str, str, str], at: float) -> bool:
        """Count a record (``key``, ``at``) in the call's bookkeeping; False when it
        is one to ignore (seen before, the call ended, too many records)."""
        if self.ended or key in self.seen or self.records >= MAX_RECORDS:
            return False
        self.seen.add(key)
        self.records += 1
        self.last_at = max(self.last_at, at)
        return True

    def ringing_hint(self, uniqueid: str) -> list[CallEvent]:
        """A live sign that the leg ``uniqueid`` rings (Newstate 5, DialState RINGING)."""
        leg = self.legs.get(uniqueid)
        if leg is None:
            if not self.ended and len(self.hinted) < MAX_LEGS:
                self.hinted.add(uniqueid)  # told when its CHAN_START is folded
            return []
        if self.ended or leg.answered_at is not None or leg.ended_at is not None:
            return []
        events = self._ringing(leg, sign=True)
        self.told += len(events)
        return events

    def _leg(self, record: CelRecord) -> Leg | None:
        leg = self.legs.get(record.uniqueid)
        if leg is not None:
            return leg
        if len(self.legs) >= MAX_LEGS:
            return None
        # A leg whose start we did not see here: it joined from another call
        # (the target of an attended transfer keeps its own Linkedid's start).
        leg = Leg(
            record.uniqueid,
            record.channel,
            extension_of(record.channel, self.is_internal),
            record.at,
            # The Linkedid is its first channel's Uniqueid, whatever we saw first.
            originator=record.uniqueid == self.linkedid,
        )
        self.legs[record.uniqueid] = leg
        if leg.originator:
            self._start(leg, record)
        return leg

    def _on_pickup(self, record: CelRecord) -> list[CallEvent]:
        """A phone picked up the ringing leg ``record`` names (``*8``, Pickup()): the
        picker's channel, started in a call of its own, now answers this one."""
        picked = self._leg(record)
        extra = record.extra
        channel, uniqueid = extra.get("pickup_channel"), extra.get("pickup_channel_uniqueid")
        if not isinstance(channel, str) or not isinstance(uniqueid, str) or not uniqueid:
            return []
        rang = self._ringing(picked) if picked is not None else []  # only a ringing leg is
        return [*rang, *self._joined(uniqueid, channel, record.at)]

    def _on_bridge(self, record: CelRecord) -> list[CallEvent]:
        """A phone's leg first seen here entering the call's bridge joined it up from
        a call of its own (a parked call taken back: ParkedCall); a leg this call
        made, or an attended transfer's target (told by the transfer), is known."""
        if record.uniqueid in self.legs or record.uniqueid == self.linkedid:
            return []
        return self._joined(record.uniqueid, record.channel, record.at)

    def _joined(self, uniqueid: str, channel: str, at: float) -> list[CallEvent]:
        """The phone ``channel`` (``uniqueid``) took the call up without ringing in it."""
        extension = extension_of(channel, self.is_internal)
        if extension is None or uniqueid in self.legs or len(self.legs) >= MAX_LEGS:
            return []
        leg = Leg(uniqueid, channel, extension, at, answered_at=at)
        self.legs[uniqueid] = leg
        return self._took(leg, extension, at)

    def _on_start(self, record: CelRecord) -> list[CallEvent]:
        leg = self._leg(record)
        if leg is None:
            return []
        leg.started_here = True
        if record.uniqueid in self.hinted:
            self.hinted.discard(record.uniqueid)
            return self.ringing_hint(record.uniqueid)
        return []

    def _start(self, leg: Leg, record: CelRecord) -> None:
        """The call's first channel decides its direction and numbers."""
        self.originator = leg
        self.started_at = record.at
        caller = record.cid_num.strip()
        dialled = (record.cid_dnid or record.exten).strip()
        if leg.extension is not None or (caller and caller.isdigit() and self.is_internal(caller)):
            inside = bool(dialled) and dialled.isdigit() and self.is_internal(dialled)
            if leg.extension is None:  # a Local channel with an extension's number
                inside = bool(dialled) and self.is_internal(dialled)
            # A feature code (*8 pickup, *97 voicemail) is the PBX's, never a trunk's.
            inside = inside or _SERVICE_CODE.fullmatch(dialled) is not None
            self.direction = "internal" if inside else "out"
            self.external = None if not dialled or dialled == "s" else dialled
            if inside:
                # An internal call: the calling extension is its other party, and
                # what it dialled (a room, a parking space) is where it went.
                self.external, self.did = leg.extension or caller, dialled
        else:
            self.direction = "in"
            self.external = caller or None
            self.caller_late = not caller and _is_local(leg.channel) and leg.channel.endswith(";1")
            self.did = record.exten if record.exten and record.exten != "s" else None

    def _on_answer(self, record: CelRecord) -> list[CallEvent]:
        leg = self._leg(record)
        if leg is None or leg.answered_at is not None:
            return []
        leg.answered_at = record.at
        if leg.originator:
            # A click-to-call's manager picked up: their phone rang. Told with
            # the customer's number, which only the next legs show (its own
            # answered comes when the customer does, as for any outbound call).
            leg.ring_held = _originated(leg, record)
            leg.taker = record.application in _TAKER_ANSWERS
            return []
        events: list[CallEvent] = []
        if leg.extension is not None:
            events += self._ringing(leg)
            who: str | None = leg.extension
        elif _is_local(leg.channel) and not self._far_end_local(leg, record):
            return []
        elif self.direction == "out" and self.originator is not None:
            # The far end of an outbound call answered: the caller's extension talks.
            who = self.originator.extension
            if self.external is None:
                self.external = _number(record.cid_num) or _number(record.exten)
        else:
            return []  # the outside line of an inbound call, answered by the dialplan
        return [*self._held_ringing(), *events, *self._took(leg, who, record.at)]

    def _far_end_local(self, leg: Leg, record: CelRecord) -> bool:
        """A Local channel that answered as the outgoing line of an outbound call's
        ``Dial`` (its ``;1`` half, application ``AppDial``) before any outside
        channel did: the dialplan behind it answered the customer's number itself
        (``Dial(Local/${EXTEN}@sandbox-customer)``, the sandbox's ``[outbound]``).
        A Local route that dials a trunk is answered by the trunk first, so its
        Local half answering after it tells nothing more."""
        return (
            self.direction == "out"
            and self.originator is not None
            and not self.answered
            and record.application == "AppDial"
            and leg.channel.endswith(";1")
            and _local_extension(leg.channel, self.is_internal) is None
        )

    def _took(self, leg: Leg, who: str | None, at: float) -> list[CallEvent]:
        """``who`` (``leg``) is on the call from ``at``: its ``answered``."""
        if not self.answered:
            self.answered = True
            self.answered_at = at
        self.current = who
        return [self._event("answered", f"answered/{leg.uniqueid}", at, who)]

    def _on_hangup(self, record: CelRecord) -> list[CallEvent]:
        fresh = record.uniqueid not in self.legs
        leg = self._leg(record)
        if leg is None or leg.ended_at is not None:
            return []
        # A phone's leg first seen at its end came from a call of its own and was on
        # this one: one that took it up, as a BLF key's INVITE with Replaces of a
        # ringing leg does (no PICKUP, and its bridge entered under its own
        # Linkedid). If nobody else answered, it did, when the caller was answered.
        origin = self.originator
        took: list[CallEvent] = []
        if (
            fresh
            and leg.extension is not None
            and not leg.originator
            and not self.answered
            and origin is not None
            and origin.answered_at is not None
        ):
            leg.answered_at = origin.answered_at
            took = self._took(leg, leg.extension, origin.answered_at)
        leg.ended_at = record.at
        extra = record.extra
        cause = extra.get("hangupcause")
        leg.cause = cause if isinstance(cause, int) else None
        source = extra.get("hangupsource")
        status = extra.get("dialstatus")
        if leg.originator:
            self.hangup_source = source if isinstance(source, str) else ""
            self.dial_status = status if isinstance(status, str) else ""
        if (
            self.answered
            and self.first_hangup is None
            and (leg.originator or leg.answered_at is not None)
            and not leg.transferred_away
            and not _is_local(leg.channel)  # plumbing: a real leg's end follows
            # A phone no longer on the call (another took it over: an INVITE with
            # Replaces of its dialog) leaves a call that goes on.
            and (leg.originator or leg.extension is None or leg.extension == self.current)
        ):
            self.first_hangup = (
                source if isinstance(source, str) and source else leg.channel,
                record.at,
            )
        events: list[CallEvent] = took
        if leg.originator and _originated(leg, record):
            # The number the click-to-call dialled, when no far end answered.
            dialled = _number(record.exten)
            if (
                self.direction == "out"
                and self.external is None
                and dialled is not None
                and dialled.removeprefix("+").isdigit()
                and not self.is_internal(dialled)
            ):
                self.external = dialled
            events += self._held_ringing()
        if (
            leg.extension is not None
            and (not leg.originator or _originated(leg, record))
            and leg.answered_at is None
            and not _refused(leg)
        ):
            events += self._ringing(leg)
        return events

    def _on_blind(self, record: CelRecord) -> list[CallEvent]:
        leg = self._leg(record)
        target = record.extra.get("extension")
        to = target if isinstance(target, str) and target else None
        frm = self._transferer(leg, record)
        if leg is not None:
            leg.transferred_away = True
        if frm is not None and frm == self.current:
            self.current = None  # gone; the target is on the call once it answers
        return self._transfer(Transfer("blind", frm, to), record)

    def _on_attended(self, record: CelRecord) -> list[CallEvent]:
        leg = self._leg(record)
        extra = record.extra
        target = extra.get("transfer_target_channel_name")
        to = None
        if isinstance(target, str):
            to = extension_of(target, self.is_internal) or _local_extension(
                target, self.is_internal
            )
        if to is None:
            # The transferer's own consultation leg names the phone it spoke to.
            peer = extra.get("channel2_name")
            to = extension_of(peer, self.is_internal) if isinstance(peer, str) else None
            to = None if leg is not None and to == leg.extension else to
        if to is None:
            # Asterisk names no target ("N/A") when the consultation's Local
            # channel went first: the transferer consulted whoever answered last.
            to = self._consulted(leg)
        frm = self._transferer(leg, record)
        if leg is not None:
            leg.transferred_away = True
        target_id = extra.get("transfer_target_channel_uniqueid")
        if isinstance(target_id, str) and target_id not in ("", "N/A") and isinstance(target, str):
            joined = self.legs.get(target_id)
            if joined is None and len(self.legs) < MAX_LEGS:
                joined = Leg(target_id, target, to, record.at, answered_at=record.at)
                self.legs[target_id] = joined
        return self._transfer(Transfer("attended", frm, to), record)

    def _transferer(self, leg: Leg | None, record: CelRecord) -> str | None:
        """The extension that transferred: its phone's leg, or the Local channel
        it was reached through (``Local/101@...;1``, bridged with the customer:
        what the HTTP API transfers from), which names it."""
        if leg is not None and leg.extension is not None:
            return leg.extension
        return _local_extension(record.channel, self.is_internal)

    def _consulted(self, transferer: Leg | None) -> str | None:
        """The extension that answered last and is still on, other than the transferer's."""
        mine = transferer.extension if transferer is not None else None
        talking = [
            each
            for each in self.legs.values()
            if each.extension is not None
            and each.extension != mine
            and each.answered_at is not None
            and each.ended_at is None
        ]
        if not talking:
            return None
        return max(talking, key=lambda each: each.answered_at or 0.0).extension

    def _transfer(self, transfer: Transfer, record: CelRecord) -> list[CallEvent]:
        self.transfers += 1
        if transfer.to_extension is not None and transfer.kind == "attended":
            self.current = transfer.to_extension
        event = self._event(
            "transferred",
            f"transferred/{record.uniqueid}/{self.transfers}",
            record.at,
            transfer.from_extension,
            transfer=transfer,
        )
        return [event]

    def _on_end(self, record: CelRecord) -> list[CallEvent]:
        # The phone's own end was not seen, nor the number (ring_late).
        held = [*self._held_ringing(), *self._late_ringings()]
        self.ended = True
        origin = self.originator
        if not held and not self.told and origin is not None and origin.ended_at is None:
            # The first channel lives on under another Linkedid (a channel's ends
            # before its Linkedid's): the phone that dialled *8 or a parking space
            # is on another call now, which tells what it did.
            return []
        if self.answered_at is None and origin is not None and self._served():
            self.answered_at, self.current = origin.answered_at, origin.extension
        ended_at = self._ended_at(record.at)
        status = self._status()
        hangup_by = self._hangup_by()
        talk = (
            max(0.0, round(ended_at - self.answered_at, 3))
            if self.answered_at is not None
            else None
        )
        events = [
            *held,
            self._event(
                "hangup",
                "hangup",
                ended_at,
                self.current,
                ended_at=ended_at,
                status=status,
                hangup_by=hangup_by,
                talk_seconds=talk,
            ),
        ]
        if self.direction == "in" and status != "ANSWER":
            events.append(
                self._event(
                    "missed",
                    "missed",
                    ended_at,
                    None,
                    ended_at=ended_at,
                    status=status,
                    hangup_by=hangup_by,
                )
            )
        return events

    # -- deciding ----------------------------------------------------------------

    def _held_ringing(self) -> list[CallEvent]:
        """The ringing of an Originate's phone that answered, once (see ``ring_held``)."""
        origin = self.originator
        if origin is None or not origin.ring_held:
            return []
        origin.ring_held = False
        return self._ringing(origin)

    def _late_ringings(self) -> list[CallEvent]:
        """The ringings ``ring_late`` holds, in the order their signs came."""
        legs = [self.legs[key] for key in self.ring_late if key in self.legs]
        self.ring_late.clear()
        return [self._ringing_event(leg) for leg in legs]

    def _ringing(self, leg: Leg, *, sign: bool = False) -> list[CallEvent]:
        """The ``ringing`` of ``leg``, once: decided by its records (its answer
        or end, a pickup), or by a live ringing ``sign``, held in ``ring_late``
        while the number is late (the leg's records then tell it)."""
        if leg.uniqueid in self.ring_late:
            if sign:
                return []
            del self.ring_late[leg.uniqueid]
            return [self._ringing_event(leg)]
        if (
            leg.rang
            or leg.extension is None
            or (leg.originator and not leg.originated)
            or not leg.started_here
        ):
            return []
        leg.rang = True
        if sign and self.caller_late and len(self.ring_late) < MAX_LEGS:
            self.ring_late[leg.uniqueid] = None
            return []
        return [self._ringing_event(leg)]

    def _ringing_event(self, leg: Leg) -> CallEvent:
        event = self._event("ringing", f"ringing/{leg.uniqueid}", leg.started_at, leg.extension)
        # The call as it was when the phone began ringing, whenever that is told: live
        # signs tell it at once, the records when the leg answers or ends (a replay),
        # and one fact must read the same either way.
        answered = self.answered_at
        if answered is not None and answered > leg.started_at:
            event = replace(event, answered_at=None)
        return event

    def _ended_at(self, fallback: float) -> float:
        if self.first_hangup is not None:
            return self.first_hangup[1]
        origin = self.originator
        if origin is not None and origin.ended_at is not None and not origin.transferred_away:
            return origin.ended_at
        return fallback

    def _served(self) -> bool:
        """Whether the dialplan itself answered a phone's internal call that rang
        nobody (a conference room, voicemail): it was answered. Not an outbound
        one: a dialplan that answers to play "the line is busy" connected nobody."""
        origin = self.originator
        return (
            self.direction == "internal"
            and origin is not None
            and origin.answered_at is not None
            and all(each is origin or _is_local(each.channel) for each in self.legs.values())
        )

    def _status(self) -> EndStatus:
        if self.answered or self._served():
            return "ANSWER"
        status = _DIAL_STATUS.get(self.dial_status.upper())
        if status is not None:
            return status
        origin = self.originator
        if origin is not None and self.hangup_source == origin.channel:
            return "CANCEL"  # the caller hung up before anyone was dialled
        return "NOANSWER"

    def _hangup_by(self) -> str | None:
        source = self.first_hangup[0] if self.first_hangup is not None else self.hangup_source
        if not source:
            return None
        extension = extension_of(source, self.is_internal)
        if extension is not None:
            return extension
        if _is_local(source) or "/" not in source or source.startswith("dialplan/"):
            return None  # "dialplan/builtin": the dialplan's Hangup(), nobody's hand
        return "external"

    def _event(
        self,
        kind: str,
        suffix: str,
        at: float,
        extension: str | None,
        **fields: object,
    ) -> CallEvent:
        return CallEvent(
            kind=kind,  # type: ignore[arg-type]
            call_id=self.linkedid,
            event_id=f"{self.linkedid}/{suffix}",
            direction=self.direction or "in",
            external=self.external,
            did=self.did,
            extension=extension,
            at=at,
            started_at=self.started_at if self.started_at is not None else at,
            answered_at=self.answered_at,
            replayed=self.replayed,
            **fields,  # type: ignore[arg-type]
        )


#: The application a phone's channel is answered in when it takes up a call of
#: another Linkedid, whose Linkedid it then gets (captured on Asterisk 22): none
#: (``Pickup()``, ``*8``; a BLF key's INVITE with ``Replaces``) or ``ParkedCall``.
#: One the dialplan answered itself (``Answer``, ``ConfBridge``, ``VoiceMail``,
#: ``Playback``) stays in its own call: a conference room's, an announcement's.
#: A taker answered otherwise (``Answer()`` before ``Pickup()``) only makes its
#: Linkedid's end, which tells nothing, wait :data:`END_GRACE`.
_TAKER_ANSWERS = frozenset({"", "ParkedCall"})

#: The application Asterisk names on a channel it dialled for an ``Originate``
#: (main/dial.c: ``AppDial2``, data ``(Outgoing Line)``); a Dial's callee is ``AppDial``.
_ORIGINATED_APP = "AppDial2"


def _originated(leg: Leg, record: CelRecord) -> bool:
    """Whether ``record`` shows the first channel ``leg`` was dialled by Asterisk for
    an Originate, so its phone rang (a phone that dialled out itself did not)."""
    if leg.originator and record.application == _ORIGINATED_APP:
        leg.originated = True
    return leg.originated


def _refused(leg: Leg) -> bool:
    """Whether the ended ``leg`` was refused by its phone, so it never rang."""
    if leg.cause is None:
        return False
    if leg.cause == 19 and leg.ended_at is not None:
        return leg.ended_at - leg.started_at < DND_WITHIN
    return leg.cause in NOT_RANG_CAUSES


def _number(text: str) -> str | None:
    text = text.strip()
    return text if text and text != "s" else None


_HANDLERS: dict[str, Callable[[CallFold, CelRecord], list[CallEvent]]] = {
    "CHAN_START": CallFold._on_start,
    "ANSWER": CallFold._on_answer,
    "HANGUP": CallFold._on_hangup,
    "BLINDTRANSFER": CallFold._on_blind,
    "ATTENDEDTRANSFER": CallFold._on_attended,
    "PICKUP": CallFold._on_pickup,
    "BRIDGE_ENTER": CallFold._on_bridge,
    "LINKEDID_END": CallFold._on_end,
}

#: The CEL events the fold reads; any other record only counts for its call.
FOLDED = frozenset(_HANDLERS)


class SeenIds:
    """Event ids handed out, the newest ``cap`` of them; past it the oldest goes first.

    Each id is kept once, as its UTF-8 bytes (``surrogatepass``: every string has
    bytes of its own, so two ids are one exactly when their strings are), in a
    ``deque`` for the order and in one of a few ``set`` generations to look it
    up: new ids go into the youngest set; at ``generation`` ids it is closed (no
    id is added to it again) and a new one begun; the oldest ids are taken from
    the oldest set, which is dropped once empty. A set only added to rebuilds
    its table only to grow it (to 2 MiB at most with the default ``generation``),
    one only taken from never does (``cap`` at least ``generation``). One set of
    all ``cap`` ids (before) rebuilt its 8 MiB table every ~115,000 ids with the
    old one still alive, and glibc's malloc kept each freed 8 MiB rather than
    give it back: VmRSS stepped up 8 MiB at a time, 16 MiB by 300,000 calls of
    ``bench_memory.py --call-life`` (bench/ANALYSIS.md, thirty-ninth session).
    """

    __slots__ = ("_closed", "_order", "_young", "cap", "generation")

    def __init__(self, cap: int, generation: int = SEEN_GENERATION) -> None:
        if cap <= 0 or generation <= 0:
            raise ValueError("cap and generation must be positive")
        self.cap = cap
        self.generation = generation
        #: Sets no id is added to again, the oldest first.
        self._closed: deque[set[bytes]] = deque()
        self._young: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._has(_key(event_id))

    def _has(self, key: bytes) -> bool:
        if key in self._young:
            return True
        for ids in reversed(self._closed):  # noqa: SIM110 (faster than any() of a generator)
            if key in ids:
                return True
        return False

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``: True when it is new, False when it was seen."""
        key = _key(event_id)
        if self._has(key):
            return False
        if len(self._young) >= self.generation:
            self._closed.append(self._young)
            self._young = set()
        self._young.add(key)
        self._order.append(key)
        if len(self._order) > self.cap:
            # The oldest id is in the oldest set: sets are begun in the ids' order.
            oldest = self._closed[0] if self._closed else self._young
            oldest.discard(self._order.popleft())
            if not oldest and self._closed:
                self._closed.popleft()
        return True


def _key(event_id: str) -> bytes:
    return event_id.encode("utf-8", "surrogatepass")


class Folder:
    """Every call's fold, by Linkedid; each event id handed out once per process.

    :meth:`feed` takes live records in arrival order; :meth:`replay` takes a
    call's stored records (read after a gap) and rebuilds it with the same
    fold, handing out only what was not handed out before. Bounded: at most
    ``max_calls`` calls, ended calls are forgotten at once (their ids kept).
    """

    def __init__(
        self,
        *,
        is_internal: Callable[[str], bool] = plan_internal,
        max_calls: int = MAX_CALLS,
        max_emitted: int = MAX_EMITTED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.is_internal = is_internal
        self.max_calls = max_calls
        #: This host's clock for :data:`END_GRACE` (monotonic: a step of the
        #: wall clock neither holds an end for an hour nor lets it go at once).
        self.clock = clock
        self._calls: OrderedDict[str, CallFold] = OrderedDict()
        self._emitted = SeenIds(max_emitted)
        #: Ended calls (Linkedid -> the time of their last record).
        self._ended: OrderedDict[str, float] = OrderedDict()
        #: Calls a previous run told to the end (the mark file's ``told``).
        self._told_before: set[str] = set()
        #: When history begins, if no replay rebuilds what came before (a start
        #: with no replay mark, or with no store): a call that began earlier is
        #: not told from its middle (:meth:`_before_history`).
        self.history_from: float | None = None
        #: Calls that began before ``history_from`` (their records are passed over).
        self._before: OrderedDict[str, None] = OrderedDict()
        #: Whether a replay is due (a gap's, the start's): live records of a call
        #: not followed yet, other than its first channel's CHAN_START, are then
        #: held for it (:meth:`hold`) rather than folded from the call's middle.
        self.holding = False
        #: The records held, by Linkedid, in arrival order (:meth:`release`).
        self._held: OrderedDict[str, list[CelRecord]] = OrderedDict()
        #: Ringing signs of legs whose call no record has opened yet, by Linkedid
        #: (:meth:`hint`): Asterisk's CEL runs behind its channel events under
        #: load, so a phone the routing dialled can ring before even the caller's
        #: CHAN_START arrives; the call takes them when it opens.
        self._early: OrderedDict[str, set[str]] = OrderedDict()
        #: Calls whose live ``LINKEDID_END`` waits for their legs' ends
        #: (:attr:`CallFold.end_held`), by Linkedid: until when (:attr:`clock`).
        #: Only calls followed, so bounded like them.
        self._ending: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, linkedid: object) -> bool:
        return linkedid in self._calls

    @property
    def max_emitted(self) -> int:
        """Event ids remembered at most after their call ended."""
        return self._emitted.cap

    def open_calls(self) -> Iterator[CallFold]:
        return iter(tuple(self._calls.values()))

    def oldest_open(self) -> float | None:
        """When the oldest call still followed started (the replay mark stays
        before it); a held call's start is its Linkedid's second, else its
        first held record's time."""
        starts = [c.started_at for c in self._calls.values() if c.started_at is not None]
        for linkedid, records in self._held.items():
            began = _began_at(linkedid)
            starts.append(min(r.at for r in records) if began is None else float(began))
        return min(starts) if starts else None

    @property
    def held(self) -> int:
        """Calls whose live records wait for a replay (:meth:`hold`)."""
        return len(self._held)

    def feed(self, record: CelRecord) -> list[CallEvent]:
        """One live record; the new events it decides, in order (after those of
        calls whose end waited long enough, :meth:`expire`)."""
        events = self.expire() if self._ending else []
        if self._holds(record.linkedid, record.event, record.uniqueid):
            self.hold(record)
            return events
        call = self._live_call(record.linkedid, record.event, record.uniqueid)
        if call is None:
            return events
        if record.event == "LINKEDID_END" and call.awaits():
            # Sent ahead of a leg's end that decides what is told: it waits for
            # that end, as a replay folds it after the call's other records.
            if call.note(record.key, record.at) and call.end_held is None:
                call.end_held = record
                self._ending[call.linkedid] = self.clock() + END_GRACE
            return events
        told = call.apply(record)
        if call.end_held is not None and not call.awaits():
            told += self._end(call)
        return events + self._finish(call, told)

    @property
    def ending(self) -> float | None:
        """When the first live ``LINKEDID_END`` waiting for its legs is due
        (:attr:`clock`), None when none waits: :meth:`expire` is to be called then."""
        return next(iter(self._ending.values()), None)

    def expire(self, now: float | None = None) -> list[CallEvent]:
        """Fold the live ``LINKEDID_END`` of every call whose legs did not end
        within :data:`END_GRACE` of it (at ``now``, :attr:`clock`'s); their events."""
        now = self.clock() if now is None else now
        events: list[CallEvent] = []
        while self._ending:
            linkedid, due = next(iter(self._ending.items()))
            if due > now:
                break
            call = self._calls.get(linkedid)
            if call is None or call.end_held is None:
                del self._ending[linkedid]  # forgotten or replayed meanwhile
                continue
            events += self._finish(call, self._end(call))
        return events

    def _end(self, call: CallFold) -> list[CallEvent]:
        """Fold the call's held ``LINKEDID_END`` (:attr:`CallFold.end_held`)."""
        self._ending.pop(call.linkedid, None)
        record = call.end_held
        return [] if record is None else call.end(record)

    def _holds(self, linkedid: str, event: str, uniqueid: str) -> bool:
        """Whether a live record of ``linkedid`` waits for the replay due.

        After a gap the stream comes back with the records Asterisk makes from
        then on, and with those of the gap it had not sent yet (under load its
        CEL runs seconds late): the end of a call whose start the gap took.
        Folded live, that call ended with what its last records say (no answer,
        nobody on it), and the replay that read the whole call a moment later
        told nothing of its end again: that call's ``hangup`` reached 1C
        without its numbers and extension. Held, the replay folds them after
        the stored ones."""
        if not self.holding or linkedid in self._calls:
            return False
        if linkedid in self._ended or linkedid in self._before:
            return False
        if linkedid in self._held:
            return True
        return not (event == "CHAN_START" and uniqueid == linkedid)

    def hold(self, record: CelRecord) -> None:
        """Keep a live record for the replay due (bounded like the calls followed)."""
        held = self._held.get(record.linkedid)
        if held is None:
            while len(self._held) >= self.max_calls:
                dropped, _ = self._held.popitem(last=False)
                log.warning(
                    "call life: holding %d calls; forgot the oldest %s", self.max_calls, dropped
                )
            held = self._held[record.linkedid] = []
        if len(held) < MAX_RECORDS:
            held.append(record)

    def release(self) -> list[CallEvent]:
        """No replay is due any more: fold the held records no replay took (their
        call was not in the store yet) as live ones; the events they decide."""
        self.holding = False
        events: list[CallEvent] = []
        while self._held:
            _, records = self._held.popitem(last=False)
            for record in records:
                events += self.feed(record)
        return events

    def note(self, linkedid: str, key: tuple[str, str, str], at: float) -> None:
        """A live record no handler reads (:data:`FOLDED`): what :meth:`feed` would
        do with it (the call opened if new, the record in its bookkeeping), without
        the record itself. One of a call held for a replay is left to the replay."""
        if self._holds(linkedid, key[0], key[1]):
            return
        call = self._live_call(linkedid, key[0], key[1])
        if call is not None:
            call.note(key, at)

    def _live_call(self, linkedid: str, event: str, uniqueid: str) -> CallFold | None:
        """The call a live record of ``linkedid`` belongs to, opened if new; None
        when its records are passed over (it ended, or began before history)."""
        if linkedid in self._ended or linkedid in self._before:
            return None
        call = self._calls.get(linkedid)
        if call is None:
            if self._before_history(linkedid, event, uniqueid):
                return None
            call = self._open(linkedid, replayed=False)
        return call

    def hint(self, linkedid: str, uniqueid: str) -> list[CallEvent]:
        """A live ringing sign for the leg ``uniqueid`` of call ``linkedid``."""
        call = self._calls.get(linkedid)
        if call is None:
            self._hint_early(linkedid, uniqueid)
            return []
        told = call.ringing_hint(uniqueid)
        if call.end_held is not None and not call.awaits():
            told += self._end(call)  # the ringing its end waited for is told
        return self._finish(call, told)

    def _hint_early(self, linkedid: str, uniqueid: str) -> None:
        """Keep the sign of a call not followed yet (bounded) for when it opens."""
        if not linkedid or not uniqueid or linkedid in self._ended or linkedid in self._before:
            return
        legs = self._early.get(linkedid)
        if legs is None:
            while len(self._early) >= MAX_EARLY:
                self._early.popitem(last=False)
            legs = self._early[linkedid] = set()
        if len(legs) < MAX_LEGS:
            legs.add(uniqueid)

    def replay(self, linkedid: str, records: Iterable[CelRecord]) -> list[CallEvent]:
        """Rebuild one call from all its stored records; the events not yet handed out.

        A call that is still up continues live from the rebuilt state, so its
        later live records fold on top of what the store held.
        """
        held = self._held.pop(linkedid, [])
        if linkedid in self._told_before:
            return []  # a previous run told it to the end; its events are 1C's already
        # The store holds the whole call: one passed over live is told in full.
        self._before.pop(linkedid, None)
        # Records held live came after the read began: folded after the stored
        # ones, in arrival order (one the store has too is seen once).
        # LINKEDID_END is the call's last record by definition, but Asterisk
        # stamps it on the thread that drops the last reference, so the store
        # can hold it a fraction of a millisecond before the last legs'
        # HANGUP (seen on the sandbox: a ring group's third leg, 0.3 ms
        # later); folded in time order, the call had ended and that leg's
        # ringing was never told by a replay. It is folded after the rest.
        ordered = sorted(records, key=lambda r: (r.event == "LINKEDID_END", r.at, r.seq)) + held
        fresh = CallFold(linkedid, self.is_internal, replayed=True)
        fresh.hinted |= self._early.pop(linkedid, set())
        events: list[CallEvent] = []
        for record in ordered:
            events += fresh.apply(record)
        live = self._calls.get(linkedid)
        if live is not None:
            # What the live fold knew and the store does not yet hold (a record
            # seen live after the read) must not be lost: fold it in as well.
            fresh.seen |= live.seen
            fresh.hinted |= live.hinted
            # Signs that wait for the number, of legs the store told no ringing of.
            late = [k for k in live.ring_late if k not in fresh.legs or not fresh.legs[k].rang]
            for leg_id, leg in live.legs.items():
                if leg_id not in fresh.legs:
                    fresh.legs[leg_id] = leg
                elif leg.rang:
                    fresh.legs[leg_id].rang = True
            fresh.ring_late.update(dict.fromkeys(late))
            del self._calls[linkedid]
            if fresh.ring_late and (fresh.ended or not fresh.caller_late):
                # The store knew the number (or the end): told now, before the end.
                end = next(
                    (i for i, e in enumerate(events) if e.kind in ("hangup", "missed")),
                    len(events),
                )
                events[end:end] = fresh._late_ringings()
            if live.end_held is not None and not fresh.ended:
                # The end came live, the store does not hold it yet: it goes on
                # waiting for the legs, in the rebuilt call.
                fresh.end_held = live.end_held
                if not fresh.awaits():
                    events += self._end(fresh)
        if not fresh.ended:
            fresh.replayed = False
            if linkedid not in self._ended:
                self._admit(linkedid, fresh)
        else:
            self._ending.pop(linkedid, None)
            if linkedid not in self._ended:
                self._remember_end(linkedid, fresh.last_at)
        return self._new(events)

    def sweep(self, older_than: float) -> list[str]:
        """Forget calls with no record since ``older_than`` (their end was lost)."""
        stale = [k for k, c in self._calls.items() if c.last_at < older_than]
        for linkedid in stale:
            del self._calls[linkedid]
            self._ending.pop(linkedid, None)
        return stale

    def _before_history(self, linkedid: str, event: str, uniqueid: str) -> bool:
        """Whether a call first seen with this record began before history did.

        Live, a call's first record is its first channel's ``CHAN_START`` (that
        channel's Uniqueid is the Linkedid). A call first seen by another record
        was already up; with nothing to rebuild its start from, what it would
        be told is a guess (a call answered before would end unanswered, a
        queue call as missed), so it is not told. The Linkedid's own time (Asterisk's
        Uniqueids are ``[system-]<Unix seconds>.<n>``) must say it began before
        ``history_from``: a record missing for another reason (CHAN_START left
        out of cel.conf's ``events``) never hides a call that began later.
        """
        if self.history_from is None or (event == "CHAN_START" and uniqueid == linkedid):
            return False
        began = _began_at(linkedid)
        if began is None or began >= math.floor(self.history_from):
            return False
        self._before[linkedid] = None
        while len(self._before) > self.max_calls:
            self._before.popitem(last=False)
        log.info("call life: call %s began before history did; it is not told", linkedid)
        return True

    def _open(self, linkedid: str, *, replayed: bool) -> CallFold:
        call = CallFold(linkedid, self.is_internal, replayed=replayed)
        call.hinted |= self._early.pop(linkedid, set())
        self._admit(linkedid, call)
        return call

    def _admit(self, linkedid: str, call: CallFold) -> None:
        while len(self._calls) >= self.max_calls:
            dropped, _ = self._calls.popitem(last=False)
            self._ending.pop(dropped, None)
            log.warning(
                "call life: following %d calls; forgot the oldest %s", self.max_calls, dropped
            )
        self._calls[linkedid] = call

    def _finish(self, call: CallFold, events: list[CallEvent]) -> list[CallEvent]:
        if call.ended:
            self._calls.pop(call.linkedid, None)
            self._remember_end(call.linkedid, call.last_at)
        return self._new(events)

    def told_since(self, since: float, before: float | None = None) -> dict[str, float]:
        """Calls told to the end whose last record is at ``since`` or later (and
        before ``before``): what a restarted router's replay would read again."""
        return {
            linkedid: at
            for linkedid, at in self._ended.items()
            if at >= since and (before is None or at < before)
        }

    def seed_told(self, told: dict[str, float]) -> None:
        """Calls a previous run told to the end: a replay tells them nothing again,
        and a late live record of one does not start a phantom call."""
        for linkedid, at in told.items():
            self._told_before.add(linkedid)
            self._remember_end(linkedid, at)

    def _remember_end(self, linkedid: str, at: float) -> None:
        self._ended[linkedid] = at
        while len(self._ended) > self.max_calls:
            self._ended.popitem(last=False)

    def _new(self, events: list[CallEvent]) -> list[CallEvent]:
        out: list[CallEvent] = []
        for event in events:
            if self._emitted.add(event.event_id):
                out.append(event)
        return out


_UNIQUEID_TIME = re.compile(r"(?:^|-)(\d{9,11})\.\d+$")


def _began_at(uniqueid: str) -> int | None:
    """The Unix second an Asterisk Uniqueid was made at, None for one of another
    shape (an Originate's own ``ChannelId``)."""
    match = _UNIQUEID_TIME.search(uniqueid)
    return int(match.group(1)) if match is not None else None


def strip_replayed(event: CallEvent) -> CallEvent:
    """The event as live folding would tell it (tests compare the two)."""
    return replace(event, replayed=False)
