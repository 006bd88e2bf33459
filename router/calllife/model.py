"""What a call's life is made of: CEL records in, :class:`CallEvent` out.

Asterisk's Channel Event Logging is the one source of a call's life: the
same records arrive live (``Event: CEL`` over AMI, cel_manager) and are
stored by Asterisk (cel_sqlite3_custom, cel_pgsql), so history rebuilt after a
gap is folded by the same code as history seen live (router/calllife/fold.py).
Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "CallEvent",
    "CallEventKind",
    "CelRecord",
    "Direction",
    "EndStatus",
    "Transfer",
    "skim",
]

CallEventKind = Literal["ringing", "answered", "transferred", "hangup", "missed"]
Direction = Literal["in", "out", "internal"]
EndStatus = Literal["ANSWER", "NOANSWER", "BUSY", "CANCEL", "FAILED"]

#: Longest text kept from one CEL field: records come from Asterisk, but a
#: caller ID name or an app's data can be anything a SIP peer sent.
MAX_FIELD = 512


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

        Live records carry the AMI Timestamp (cel_manager writes EventTime to
        the second), stored ones the event time itself: a few milliseconds
        apart, so times compare within :data:`TIME_SLACK`.
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


#: How far the live and stored times of one CEL record may differ (seconds).
TIME_SLACK = 0.5


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
        extra_text = (extra or "").strip()[: 4 * MAX_FIELD]
        return cls(
            event[:64],
            at,
            uniqueid[:MAX_FIELD],
            linkedid[:MAX_FIELD],
            (channel or "")[:MAX_FIELD],
            (context or "")[:MAX_FIELD],
            (exten or "")[:MAX_FIELD],
            (cid_num or "")[:MAX_FIELD],
            (cid_name or "")[:MAX_FIELD],
            (cid_dnid or "")[:MAX_FIELD],
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

    For the records no handler of the fold reads (``CHAN_END``, ``BRIDGE_*``,
    ``APP_*``: half of a call's CEL), whose only effect is the call's
    bookkeeping (router/calllife/fold.py ``Folder.note``).
    """
    event = fields.get("EventName") or ""
    at = _live_time(fields.get("Timestamp"), fields.get("EventTime"))
    uniqueid = fields.get("UniqueID") or fields.get("Uniqueid", "") or ""
    linkedid = fields.get("LinkedID") or fields.get("Linkedid", "") or ""
    _check(event, at, uniqueid, linkedid)
    extra_text = (fields.get("Extra") or "").strip()[: 4 * MAX_FIELD]
    return linkedid[:MAX_FIELD], (event[:64], uniqueid[:MAX_FIELD], extra_text), at


def _check(event: str, at: float, uniqueid: str, linkedid: str) -> None:
    if not event or not uniqueid or not linkedid:
        raise ValueError("a CEL record needs an event name, a UniqueID and a LinkedID")
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
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _live_time(timestamp: str | None, event_time: str | None) -> float:
    """The record's time: the AMI ``Timestamp`` (sub-second, a few ms after the
    event), else ``EventTime`` (``%Y-%m-%d %H:%M:%S`` or Unix seconds, UTC)."""
    for text in (timestamp, event_time):
        if not text:
            continue
        text = text.strip()
        try:
            value = (
                float(text) if text.isascii() and text[:1].isdigit() and "-" not in text else None
            )
        except ValueError:
            value = None
        if value is None:
            try:
                value = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
        if math.isfinite(value):
            return value
    raise ValueError("a CEL record needs a Timestamp or an EventTime")
