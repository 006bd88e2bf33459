"""What a call's life is made of: CEL records in, :class:`CallEvent` out.

Asterisk's Channel Event Logging is the one source of a call's life: the
same records arrive live (``Event: CEL`` over AMI, cel_manager) and are
stored by Asterisk (cel_sqlite3_custom, cel_pgsql), so history rebuilt after a
gap is folded by the same code as history seen live (router/calllife/fold.py).
Nothing here does I/O.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from router import jsonsafe
from router.callerid import cut_number, cut_text
from router.calls import IDENTITY_LIMITS

__all__ = [
    "CallEvent",
    "CallEventKind",
    "CelRecord",
    "Direction",
    "EndStatus",
    "IncompleteRecord",
    "OversizedRecord",
    "Transfer",
    "skim",
]

CallEventKind = Literal["ringing", "answered", "transferred", "hangup", "missed"]
Direction = Literal["in", "out", "internal"]
EndStatus = Literal["ANSWER", "NOANSWER", "BUSY", "CANCEL", "FAILED"]

#: Longest text kept from one CEL field: records come from Asterisk, but an
#: app's data can be anything a SIP peer sent. The caller ID and the numbers
#: dialled are cut shorter, as everywhere (router.callerid). The fields that
#: say whose record it is are not cut but checked (:class:`OversizedRecord`).
MAX_FIELD = 512

#: The record's fields that name its call, channel and place in the dialplan,
#: each with the key of :data:`router.calls.IDENTITY_LIMITS` that bounds it:
#: Asterisk writes none longer, to its CEL store as over AMI.
_IDENTITY_FIELDS = (
    ("uniqueid", "Uniqueid"),
    ("linkedid", "Linkedid"),
    ("channel", "Channel"),
    ("context", "Context"),
    ("exten", "Exten"),
)


class OversizedRecord(ValueError):
    """A CEL record with an identity field longer than Asterisk writes
    (:data:`router.calls.IDENTITY_LIMITS`): no Asterisk's record (a broken or
    hostile writer of the CEL store, or AMI peer), so it belongs to no call.

    Cut to :data:`MAX_FIELD` it was folded into a call of the cut Linkedid
    (issue 16). The message names the field and its length, never its value.
    """

    def __init__(self, event: str, field: str, length: int, limit: int) -> None:
        super().__init__(
            f"CEL record {event[:64]!r} with a {field} of {length} characters: "
            f"no Asterisk writes one longer than {limit}"
        )
        self.field = field
        self.length = length


class IncompleteRecord(ValueError):
    """A CEL record without a key every record has (its event name, UniqueID,
    LinkedID): none of Asterisk's whole records. A caller number with
    a blank line (Asterisk 22 writes it as it is) cuts each record of its call
    in two, and the head read as a record of its own."""


def _check_identity(event: str, *values: str) -> None:
    """Raise :class:`OversizedRecord` for the first of ``values`` (in the
    order of :data:`_IDENTITY_FIELDS`) longer than Asterisk writes it."""
    for (name, key), value in zip(_IDENTITY_FIELDS, values, strict=False):
        limit = IDENTITY_LIMITS[key]
        if len(value) > limit:
            raise OversizedRecord(event, name, len(value), limit)


@dataclass(frozen=True, slots=True)
class Transfer:
    """Who handed the call to whom: a phone's transfer key, the API or AMI."""

    kind: Literal["blind", "attended"]
    from_extension: str | None
    to_extension: str | None


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One fact of a call's life, as plugins receive it (``callrouter_call_event``).

    ``call_id`` is the call's Linkedid, stable across all its legs;
    ``event_id`` names the fact itself, so the same fact seen live and
    rebuilt from stored CEL after a gap has the same id (a receiver
    deduplicates by it). Times are Unix seconds on Asterisk's clock.
    ``replayed`` is True when the event was rebuilt from stored records.
    """

    kind: CallEventKind
    call_id: str
    event_id: str
    direction: Direction
    external: str | None
    did: str | None
    extension: str | None
    at: float
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    status: EndStatus | None = None
    hangup_by: str | None = None
    transfer: Transfer | None = None
    talk_seconds: float | None = None
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the transfer as a nested object or None)."""
        return asdict(self)

    def same_fact(self, other: CallEvent) -> bool:
        """Equal apart from when each side saw it: live and replayed copies of one fact.

        Live records carry cel_manager's EventTime, to the second, refined by
        the AMI Timestamp within it (``_live_time``); stored ones the event
        time itself: under a second apart, so times compare within
        :data:`TIME_SLACK`.
        """
        mine, theirs = self.to_dict(), other.to_dict()
        for key in ("at", "started_at", "answered_at", "ended_at", "talk_seconds"):
            a, b = mine.pop(key), theirs.pop(key)
            if (a is None) != (b is None) or (
                a is not None and b is not None and abs(a - b) > TIME_SLACK
            ):
                return False
        mine.pop("replayed")
        theirs.pop("replayed")
        return mine == theirs


#: How far the live and stored times of one CEL record may differ (seconds):
#: live, the record's second is known and the Timestamp within it is late by
#: as much as Asterisk's CEL backends are behind.
TIME_SLACK = 1.0


@dataclass(frozen=True, slots=True)
class CelRecord:
    """One CEL record, whether it came as ``Event: CEL`` or as a stored row.

    ``extra`` is the record's JSON ``Extra`` (HANGUP: hangupcause,
    hangupsource, dialstatus; transfers: who and where), ``{}`` when empty or
    not JSON. ``seq`` orders stored rows written within the same microsecond.
    """

    event: str
    at: float
    uniqueid: str
    linkedid: str
    channel: str = ""
    context: str = ""
    exten: str = ""
    cid_num: str = ""
    cid_name: str = ""
    cid_dnid: str = ""
    application: str = ""
    appdata: str = ""
    peer: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    extra_text: str = ""
    seq: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two deliveries of a record the same record (times differ live
        and stored, so they are not part of it)."""
        return (self.event, self.uniqueid, self.extra_text)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], *, seq: int = 0) -> CelRecord:
        """A record from an ``Event: CEL``'s headers (names as cel_manager writes them).

        Raises ValueError when the record has no UniqueID, LinkedID or event name:
        it could belong to no call.
        """
        # Every live CEL record comes through here (nine for an answered
        # call): an AMI message hands its keys as spelled in one dict
        # (Message.spelled), so each of the fifteen reads is a dict lookup;
        # a key spelled otherwise is still found by the message's own get.
        spelled = getattr(fields, "spelled", None)
        exact: Mapping[str, str] = spelled() if spelled is not None else fields
        get = exact.get
        values = [get(key) for key in _LIVE_KEYS]
        if None in values:
            values = [
                fields.get(key, "") if value is None else value
                for key, value in zip(_LIVE_KEYS, values, strict=True)
            ]
        event, stamp, event_time, uniqueid, linkedid, *text, extra = values
        return cls._checked(
            event or "",
            _live_time(stamp, event_time),
            # cel_manager's spelling first: the other one is looked up only when
            # it is missing (a miss folds every key of the record).
            uniqueid or fields.get("Uniqueid", "") or "",
            linkedid or fields.get("Linkedid", "") or "",
            *text,  # type: ignore[arg-type]  # str: None was replaced above
            extra=extra or "",
            seq=seq,
        )

    @classmethod
    def build(
        cls,
        *,
        event: str,
        at: float,
        uniqueid: str,
        linkedid: str,
        extra: str = "",
        seq: int = 0,
        **text: str,
    ) -> CelRecord:
        """A record from plain values, bounded and checked (the one constructor
        every reader uses)."""
        return cls._checked(event, at, uniqueid, linkedid, extra=extra, seq=seq, **text)

    @classmethod
    def _checked(
        cls,
        event: str,
        at: float,
        uniqueid: str,
        linkedid: str,
        channel: str = "",
        context: str = "",
        exten: str = "",
        cid_num: str = "",
        cid_name: str = "",
        cid_dnid: str = "",
        application: str = "",
        appdata: str = "",
        peer: str = "",
        *,
        extra: str = "",
        seq: int = 0,
    ) -> CelRecord:
        _check(event, at, uniqueid, linkedid)
        _check_identity(event, uniqueid, linkedid, channel or "", context or "", exten or "")
        extra_text = (extra or "").strip()[: 4 * MAX_FIELD]
        return cls(
            event[:64],
            at,
            uniqueid,
            linkedid,
            channel or "",
            context or "",
            # The caller's texts and the numbers dialled are cut as the call
            # tracker cuts them (router.callerid): one call, one cut number in
            # the feed, the live page and the history 1C gets.
            cut_number(exten or ""),
            cut_number(cid_num or ""),
            cut_text(cid_name or ""),
            cut_number(cid_dnid or ""),
            (application or "")[:MAX_FIELD],
            (appdata or "")[:MAX_FIELD],
            (peer or "")[:MAX_FIELD],
            _extra(extra_text),
            extra_text,
            seq,
        )


def skim(fields: Mapping[str, str]) -> tuple[str, tuple[str, str, str], float]:
    """A live record's Linkedid, :attr:`CelRecord.key` and time, checked as
    :meth:`CelRecord.from_fields` checks them, without building the record.

    For the records no handler of the fold reads (``CHAN_END``, ``BRIDGE_EXIT``,
    ``APP_*``: a third of a call's CEL), whose only effect is the call's
    bookkeeping (router/calllife/fold.py ``Folder.note``).
    """
    event = fields.get("EventName") or ""
    at = _live_time(fields.get("Timestamp"), fields.get("EventTime"))
    uniqueid = fields.get("UniqueID") or fields.get("Uniqueid", "") or ""
    linkedid = fields.get("LinkedID") or fields.get("Linkedid", "") or ""
    _check(event, at, uniqueid, linkedid)
    _check_identity(event, uniqueid, linkedid)
    extra_text = (fields.get("Extra") or "").strip()[: 4 * MAX_FIELD]
    return linkedid, (event[:64], uniqueid, extra_text), at


def _check(event: str, at: float, uniqueid: str, linkedid: str) -> None:
    if not event or not uniqueid or not linkedid:
        raise IncompleteRecord("a CEL record needs an event name, a UniqueID and a LinkedID")
    if not math.isfinite(at):
        raise ValueError(f"CEL record {event} of {uniqueid}: time {at!r} is not finite")


#: The headers :meth:`CelRecord.from_fields` reads, in the order it unpacks them
#: (the text ones in the order of :meth:`CelRecord._checked`'s parameters).
_LIVE_KEYS = (
    "EventName",
    "Timestamp",
    "EventTime",
    "UniqueID",
    "LinkedID",
    "Channel",
    "Context",
    "Exten",
    "CallerIDnum",
    "CallerIDname",
    "CallerIDdnid",
    "Application",
    "AppData",
    "Peer",
    "Extra",
)


def _extra(text: str) -> Mapping[str, Any]:
    if not text.startswith("{"):
        return {}
    try:
        value = jsonsafe.loads(text)
    except ValueError:  # nested past the parser's limit too (router/jsonsafe.py)
        return {}
    return value if isinstance(value, dict) else {}


def _live_time(timestamp: str | None, event_time: str | None) -> float:
    """The record's time: the AMI ``Timestamp`` kept within the second that
    ``EventTime`` names, else whichever of the two there is.

    cel_manager writes ``EventTime`` to the second, on Asterisk's local clock
    (``%Y-%m-%d %H:%M:%S``, or Unix seconds); the ``Timestamp`` is when the
    manager event was made, after the record: a few milliseconds later, but
    most of a second when Asterisk's CEL backends fall behind (a slow disk
    under the SQLite file; 0.73 s with the whole test suite loading this
    machine). The record happened in EventTime's second and no later than the
    Timestamp, so the Timestamp is cut back to that second's end: live and
    stored times of one record differ by under a second however far behind
    the backends are.
    """
    stamp = _parse_seconds(timestamp.strip()) if timestamp else None
    # A second's records all carry its EventTime: parsed once (strptime ~10 us).
    named = _event_seconds(event_time.strip()) if event_time else None
    if stamp is None:
        if named is None:
            if not timestamp and not event_time:
                # Neither written: the head of a record a caller's number cut
                # in two (EventTime comes after AppData) on an Asterisk without
                # timestampevents, not a time Asterisk wrote wrong (issue 16).
                raise IncompleteRecord("a CEL record needs a Timestamp or an EventTime")
            raise ValueError("a CEL record needs a Timestamp or an EventTime")
        return named
    if named is None:
        return stamp
    # EventTime is local time written as if UTC: the zone's offset is the
    # difference rounded to a quarter hour (every zone is a multiple of one),
    # right while the Timestamp is under 7.5 minutes late.
    offset = round((stamp - named) / ZONE_STEP) * ZONE_STEP
    second = named + offset
    if second != math.floor(second):
        return second  # an EventTime with its fraction: exact already
    if stamp < second:
        return stamp  # a clock that stepped: nothing to correct by
    return min(stamp, second + LAST_MICROSECOND)


#: Time zone offsets come in quarter hours (Nepal +5:45, Chatham +12:45).
ZONE_STEP = 900.0
#: The last microsecond of a second, as a fraction of it.
LAST_MICROSECOND = 0.999999


def _parse_seconds(text: str) -> float | None:
    """Unix seconds from a Timestamp or an EventTime, None when unreadable."""
    value: float | None
    try:
        value = float(text) if text.isascii() and text[:1].isdigit() and "-" not in text else None
    except ValueError:
        value = None
    if value is None:
        try:
            value = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None
    return value if math.isfinite(value) else None


_event_seconds = functools.lru_cache(maxsize=64)(_parse_seconds)
