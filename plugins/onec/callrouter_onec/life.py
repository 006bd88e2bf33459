"""A call's life, as callrouter tells it, into the contract's event bodies.

callrouter folds Asterisk's CEL records into ``router.calllife.CallEvent``
(live and after a gap alike) and hands each to ``callrouter_call_event``.
This module turns one into the body 1C receives: the contract's fields, plus
``event_id`` (the idempotency key: the same fact has the same id live and
replayed), ``talk_seconds``, ``transfer``, ``hangup_by``, ``owner`` (on
``missed``) and ``replayed``. It reads the event through a protocol rather
than the class, so it holds no import of the core's internals and a test can
build events of its own.

Every key is always present (null when it does not apply) so 1C's reader can
rely on the shape; ``from`` and ``to`` are never empty, because the contract
makes them required and a body 1C refuses would be dropped, not retried.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Protocol

from callrouter_onec.phone import CountryRules, NumberKind, normalize

__all__ = [
    "ANONYMOUS",
    "KINDS",
    "MAX_PARTY_DIGITS",
    "CallEventLike",
    "TransferLike",
    "call_event_payload",
    "customer_number",
    "party",
]

#: The event kinds callrouter's call life produces.
KINDS = frozenset({"ringing", "answered", "transferred", "hangup", "missed"})
#: ``from`` of a caller who sent no number.
ANONYMOUS = "anonymous"
_FINAL = frozenset({"hangup", "missed"})


class TransferLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def from_extension(self) -> str | None: ...
    @property
    def to_extension(self) -> str | None: ...


class CallEventLike(Protocol):
    """The fields of ``router.calllife.CallEvent`` this plugin reads."""

    @property
    def kind(self) -> str: ...
    @property
    def call_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def external(self) -> str | None: ...
    @property
    def did(self) -> str | None: ...
    @property
    def extension(self) -> str | None: ...
    @property
    def at(self) -> float: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def hangup_by(self) -> str | None: ...
    @property
    def transfer(self) -> TransferLike | None: ...
    @property
    def talk_seconds(self) -> float | None: ...
    @property
    def replayed(self) -> bool: ...


def customer_number(
    event: CallEventLike, rules: CountryRules, known: str | None = None
) -> str | None:
    """The outside party's number as 1C matches it; ``None`` for internal or hidden ones.

    ``known`` is the number an inbound call was routed with (the call's, as the
    feed shows it), which wins over CEL's: CEL's first record has the number
    the channel started with, before a dialplan's ``Set(CALLERID(num)=...)``
    (or none at all).
    """
    raw = known or event.external
    if event.direction == "internal" or not raw:
        return None
    found = normalize(raw, rules)
    if found.kind is not NumberKind.EXTERNAL or not found.number:
        return None
    return found.number


#: The most digits of a number 1C is told (E.164 has 15; some carriers add a prefix).
MAX_PARTY_DIGITS = 32
#: A caller ID without digits is passed on only when it is a short ASCII word
#: (``anonymous``, ``Unknown``, a SIP user name): anything else is the caller's
#: free text, which would become the title of the callback task 1C creates.
_WORD = re.compile(r"[A-Za-z0-9+*#._-]{1,32}")
#: A feature code a phone dialled (``*97``): told as dialled, not as the number 97.
_CODE = re.compile(r"[*#][0-9*#]{1,15}")


def party(raw: str | None, rules: CountryRules) -> str | None:
    """What 1C is told of one end of a call given as ``raw`` (a caller ID, a DID).

    The normalized number when ``raw`` has up to :data:`MAX_PARTY_DIGITS`
    digits; else ``raw`` itself if it is a short ASCII word; else
    :data:`ANONYMOUS`. ``None`` for an empty ``raw``.
    """
    if not raw:
        return None
    found = normalize(raw, rules)
    if found.number and len(found.number) <= MAX_PARTY_DIGITS:
        return found.number
    if not found.number and _WORD.fullmatch(raw):
        return raw
    return ANONYMOUS


def _local(moment: float | None, tz: tzinfo | None) -> str | None:
    """1C's zoneless local time (``tz``: 1C's zone; ``None``: this machine's)."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz).replace(tzinfo=None).isoformat(timespec="seconds")


def call_event_payload(
    event: CallEventLike,
    *,
    rules: CountryRules,
    tz: tzinfo | None,
    manager_id: str | None = None,
    client_id: str | None = None,
    owner: Mapping[str, Any] | None = None,
    caller: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/calls/events`` for ``event`` (docs/onec.md, the history contract).

    ``caller``: the number an inbound call was routed with, told 1C rather
    than the event's (CEL's first record, before a dialplan's
    ``Set(CALLERID(num)=...)``), as the feed and the rules had it.
    """
    external = party(caller or event.external, rules)
    did = party(event.did, rules)
    extension = event.extension or None
    if event.direction == "out":
        from_number, to_number = extension, external
    elif event.direction == "internal":
        # Who called whom; a call the dialplan took itself (a conference room, a
        # feature code such as *97: told as dialled) went to the number dialled.
        from_number = external or extension
        dialled = event.did if event.did and _CODE.fullmatch(event.did) else did
        to_number = dialled if extension == from_number and dialled else extension
    else:
        from_number, to_number = external or ANONYMOUS, did or extension
    final = event.kind in _FINAL
    duration = billsec = None
    if final and event.started_at is not None and event.ended_at is not None:
        duration = max(0, round(event.ended_at - event.started_at))
        billsec = max(0, round(event.talk_seconds or 0.0))
    transfer = event.transfer
    status = event.status if final else None
    if final and status is None:
        status = "ANSWER" if event.answered_at is not None else "NOANSWER"
    return {
        "event": event.kind,
        "event_id": event.event_id,
        "call_id": event.call_id,
        "direction": event.direction,
        "from": from_number or to_number or ANONYMOUS,
        "to": to_number or from_number or ANONYMOUS,
        "extension": extension,
        "manager_id": manager_id,
        "client_id": client_id,
        "owner": dict(owner) if owner is not None and event.kind == "missed" else None,
        "status": status,
        "started_at": _local(event.started_at, tz),
        "answered_at": _local(event.answered_at, tz),
        "ended_at": _local(event.ended_at, tz) if final else None,
        "duration": duration,
        "billsec": billsec,
        "talk_seconds": event.talk_seconds,
        "hangup_by": event.hangup_by if final else None,
        "transfer": None
        if transfer is None
        else {
            "kind": transfer.kind,
            "from": transfer.from_extension,
            "to": transfer.to_extension,
        },
        "replayed": bool(event.replayed),
        "closed_by": None,
        "closed_at": None,
        "closed_direction": None,
        "ts": int(event.at),
        "recording_url": None,
    }
