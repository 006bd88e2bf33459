"""Answers of the 1C HTTP service as typed, frozen values.

1C modules are hand-written and sometimes answer an error with ``200`` and
text, or with JSON of another shape; a routing decision must never be taken
on such an answer. So every body is checked field by field here, without I/O,
and anything that does not fit raises :class:`ShapeError`, which the client
turns into :class:`~callrouter_onec.errors.OneCUnavailable`. Unknown extra keys
are ignored so that 1C may add fields without breaking us.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router import cut

__all__ = [
    "CLIENT_TYPES",
    "EVENT_FIELDS",
    "MAX_TEXT",
    "Client",
    "Contact",
    "EventAck",
    "Manager",
    "Ping",
    "Responsible",
    "ShapeError",
    "parse_error",
    "parse_event_ack",
    "parse_ping",
    "parse_responsible",
]

#: Every member of a call event's body, in the order of the history contract's table
#: (docs/onec.md): each body carries them all, null when one does not apply, so
#: a 1C reader may rely on the shape. ``event_id`` is left out only by a rule's
#: ``notify`` without a call (keyed by call_id and event, as the contract says).
EVENT_FIELDS: tuple[str, ...] = (
    "event",
    "event_id",
    "call_id",
    "direction",
    "from",
    "to",
    "extension",
    "manager_id",
    "client_id",
    "owner",
    "status",
    "started_at",
    "answered_at",
    "ended_at",
    "duration",
    "billsec",
    "talk_seconds",
    "transfer",
    "hangup_by",
    "replayed",
    "closed_by",
    "closed_at",
    "closed_direction",
    "ts",
    "recording_url",
)

#: The client kinds the contract names. Others are accepted (a 1C developer may
#: add one) because routing only needs the manager, not the kind.
CLIENT_TYPES = frozenset({"counterparty", "partner", "contact_person", "lead"})


#: Longest text of an answer (a name, an id), in characters; a longer one is
#: cut, ending in "…". max_body lets 1C answer a megabyte name, and each answer
#: is kept: in the lookup cache (by number, 50,000 of them), in the JSON decision
#: log line, in the decision records. Cut, not refused: a refusal would be a 1C
#: failure, and a few calls of one such card would open the circuit breaker for
#: every caller. The API's event feed cuts a caller card's texts to the same 500.
MAX_TEXT = 500


class ShapeError(ValueError):
    """A JSON body that does not have the shape the contract promises."""


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    type: str
    name: str
    inn: str | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Manager:
    id: str
    name: str
    extension: str | None = None
    mobile: str | None = None


@dataclass(frozen=True, slots=True)
class Responsible:
    """Who a number belongs to and who looks after them; ``found=False`` is an answer too."""

    found: bool
    phone: str
    client: Client | None = None
    contact: Contact | None = None
    manager: Manager | None = None
    candidates: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dicts in the contract's own shape, for rule expressions.

        Built by hand (a fresh dict each time: the cached answer is never
        shared with a rule): ``dataclasses.asdict`` deep-copies every value,
        and this runs for every routed call.
        """
        client, contact, manager = self.client, self.contact, self.manager
        return {
            "found": self.found,
            "phone": self.phone,
            "client": None
            if client is None
            else {"id": client.id, "type": client.type, "name": client.name, "inn": client.inn},
            "contact": None if contact is None else {"id": contact.id, "name": contact.name},
            "manager": None
            if manager is None
            else {
                "id": manager.id,
                "name": manager.name,
                "extension": manager.extension,
                "mobile": manager.mobile,
            },
            "candidates": self.candidates,
        }

    @property
    def extension(self) -> str | None:
        """The manager's extension, the one thing most rules route on."""
        return self.manager.extension if self.manager else None


@dataclass(frozen=True, slots=True)
class EventAck:
    id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Ping:
    version: str
    time: str


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, *, nullable: bool = False) -> str | None:
    if key not in obj:
        raise ShapeError(f"{where}.{key}: missing")
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ShapeError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return cut(value, MAX_TEXT)


def _req(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(obj, key, where)
    assert value is not None  # not nullable
    return value


def _opt(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    # Optional-by-contract fields (inn, mobile) may also be left out entirely.
    return _str(obj, key, where, nullable=True) if key in obj else None


def _nested(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    if key not in obj:
        raise ShapeError(f"{where}.{key}: missing")
    value = obj[key]
    return None if value is None else _object(value, f"{where}.{key}")


def parse_responsible(body: object) -> Responsible:
    """Check and convert the body of ``GET v1/responsible/{phone}``."""
    obj = _object(body, "responsible")
    found = obj.get("found")
    if not isinstance(found, bool):
        raise ShapeError("responsible.found: expected true or false")
    phone = _req(obj, "phone", "responsible")
    candidates = obj.get("candidates", 0)
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 0:
        raise ShapeError("responsible.candidates: expected a non-negative integer")

    c = _nested(obj, "client", "responsible")
    client = (
        None
        if c is None
        else Client(
            id=_req(c, "id", "client"),
            type=_req(c, "type", "client"),
            name=_req(c, "name", "client"),
            inn=_opt(c, "inn", "client"),
        )
    )
    p = _nested(obj, "contact", "responsible")
    contact = (
        None if p is None else Contact(id=_req(p, "id", "contact"), name=_req(p, "name", "contact"))
    )
    m = _nested(obj, "manager", "responsible")
    manager = (
        None
        if m is None
        else Manager(
            id=_req(m, "id", "manager"),
            name=_req(m, "name", "manager"),
            extension=_str(m, "extension", "manager", nullable=True),
            mobile=_opt(m, "mobile", "manager"),
        )
    )
    if found and client is None:
        raise ShapeError("responsible: found is true but client is null")
    if not found and (client or contact or manager):
        raise ShapeError("responsible: found is false but a client, contact or manager is given")
    return Responsible(found, phone, client, contact, manager, candidates)


def parse_event_ack(body: object) -> EventAck:
    """Check and convert the body of ``POST v1/calls/events``."""
    obj = _object(body, "event ack")
    if obj.get("result") != "ok":
        raise ShapeError('event ack: result is not "ok"')
    duplicate = obj.get("duplicate")
    if not isinstance(duplicate, bool):
        raise ShapeError("event ack.duplicate: expected true or false")
    return EventAck(_req(obj, "id", "event ack"), duplicate)


def parse_ping(body: object) -> Ping:
    """Check and convert the body of ``GET v1/ping``."""
    obj = _object(body, "ping")
    if obj.get("result") != "ok":
        raise ShapeError('ping: result is not "ok"')
    return Ping(_req(obj, "version", "ping"), _req(obj, "time", "ping"))


def parse_error(body: object) -> tuple[str, str] | None:
    """``(code, message)`` of a contract error body, or ``None`` if it is not one."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message", "")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    return code, message
