"""The 1C side of the contract without HTTP: a data table and its answers.

The test double serves these answers over HTTP; keeping them here, pure, means
the matching rules (last 10 digits, a manager preferred, then the most recently
changed) and the event validation are tested without a server, and read like
the BSL module in ``examples/onec`` that a 1C developer will write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from callrouter_onec.phone import digits_only, normalize

__all__ = [
    "DEMO_DATA",
    "Directory",
    "EventBook",
    "EventError",
    "EventReceipt",
    "load_directory",
]

#: The data file shipped with the package; the demo and the tests use it.
DEMO_DATA = "demo.json"

EVENTS = frozenset({"ringing", "answered", "hangup", "missed", "transferred", "missed_closed"})
TRANSFERS = frozenset({"blind", "attended"})
DIRECTIONS = frozenset({"in", "out", "internal"})
STATUSES = frozenset({"ANSWER", "NOANSWER", "BUSY", "CANCEL", "FAILED"})
REQUIRED = ("event", "call_id", "direction", "from", "to", "ts")
MATCH_DIGITS = 10
#: The BSL module's limits (README: ИдентификаторЗвонка is Строка 64, ИдентификаторСобытия
#: Строка 150; a 1C date ends with the year 9999).
MAX_CALL_ID = 64
MAX_EVENT_ID = 150
MAX_TS = 253402300800


@dataclass(frozen=True, slots=True)
class _Entry:
    """One phone of one client, possibly through one of its contact persons."""

    client: Mapping[str, Any]
    contact: Mapping[str, Any] | None


@dataclass
class Directory:
    """Clients, their contact persons and managers, indexed by the digits 1C matches on."""

    managers: dict[str, dict[str, Any]]
    clients: list[dict[str, Any]]
    _index: dict[str, list[_Entry]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for client in self.clients:
            for phone in client.get("phones", []):
                self._add(phone, _Entry(client, None))
            for contact in client.get("contacts", []):
                for phone in contact.get("phones", []):
                    self._add(phone, _Entry(client, contact))

    def _add(self, phone: str, entry: _Entry) -> None:
        # The extension is cut first ("+7 (495) 111-22-33, доб. 123" is 74951112233),
        # as the contract says and the BSL index (НомерБезДобавочного) does.
        key = (normalize(phone).number or digits_only(phone))[-MATCH_DIGITS:]
        self._index.setdefault(key, []).append(entry)

    def responsible(self, phone: str) -> dict[str, Any]:
        """The 200 body for ``v1/responsible/{phone}``; ``found: false`` when nobody matches."""
        entries = self._index.get(phone[-MATCH_DIGITS:], [])
        by_client: dict[str, _Entry] = {}
        for entry in entries:  # a client's own number beats one of its contacts
            known = by_client.get(entry.client["id"])
            if known is None or (known.contact is not None and entry.contact is None):
                by_client[entry.client["id"]] = entry
        if not by_client:
            return {
                "found": False,
                "phone": phone,
                "client": None,
                "contact": None,
                "manager": None,
                "candidates": 0,
            }
        best = max(
            by_client.values(),
            key=lambda e: (e.client.get("manager") is not None, e.client.get("changed", "")),
        )
        client, contact = best.client, best.contact
        manager = self.managers.get(client["manager"]) if client.get("manager") else None
        return {
            "found": True,
            "phone": phone,
            "client": {
                "id": client["id"],
                "type": client["type"],
                "name": client["name"],
                "inn": client.get("inn"),
            },
            "contact": None if contact is None else {"id": contact["id"], "name": contact["name"]},
            "manager": None
            if manager is None
            else {
                "id": manager["id"],
                "name": manager["name"],
                "extension": manager.get("extension"),
                "mobile": manager.get("mobile"),
            },
            "candidates": len(by_client),
        }

    def numbers(self) -> list[str]:
        """Every indexed number, as stored: handy for demos and end-to-end tests."""
        found = [p for c in self.clients for p in c.get("phones", [])]
        found += [p for c in self.clients for k in c.get("contacts", []) for p in k["phones"]]
        return found


def load_directory(path: str | Path | None = None) -> Directory:
    """Read a data file (see ``data/demo.json`` for the format); the shipped demo by default."""
    if path is None:
        text = resources.files("callrouter_onec").joinpath("data", DEMO_DATA).read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8-sig")
    raw = json.loads(text)
    managers = {m["key"]: m for m in raw["managers"]}
    for client in raw["clients"]:
        if client.get("manager") and client["manager"] not in managers:
            raise ValueError(f"client {client['name']!r}: unknown manager {client['manager']!r}")
    return Directory(managers, raw["clients"])


class EventError(ValueError):
    """A call event 1C would refuse; ``code`` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class EventReceipt:
    id: str
    duplicate: bool
    payload: Mapping[str, Any]


@dataclass
class EventBook:
    """Registered call events, idempotent as the contract requires.

    The key is ``event_id`` when the body has one (a ring group's three
    ``ringing`` events are three facts), else (call_id, event). Every body
    received is kept, duplicates included, in arrival order.
    """

    receipts: list[EventReceipt] = field(default_factory=list)
    _ids: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def events(self, call_id: str | None = None) -> list[Mapping[str, Any]]:
        """First copies only (what 1C stored), of ``call_id`` or of every call."""
        return [
            r.payload
            for r in self.receipts
            if not r.duplicate and (call_id is None or r.payload.get("call_id") == call_id)
        ]

    def story(self, call_id: str) -> list[Mapping[str, Any]]:
        """One call's whole story as 1C stored it: its events, then the missed
        calls it closed (``missed_closed`` naming it in ``closed_by``)."""
        own = self.events(call_id)
        closed = [
            p
            for p in self.events()
            if p.get("event") == "missed_closed" and p.get("closed_by") == call_id
        ]
        return own + closed

    def register(self, body: bytes) -> EventReceipt:
        try:
            payload = json.loads(body.decode("utf-8-sig"))
        except ValueError as exc:
            raise EventError("invalid_json", f"body is not JSON: {exc}") from exc
        except RecursionError:  # nested past the interpreter's limit: still just bad JSON
            raise EventError("invalid_json", "body is not JSON: nested too deep") from None
        if not isinstance(payload, dict):
            raise EventError("invalid_json", "body is not a JSON object")
        for name in REQUIRED:
            if payload.get(name) in (None, ""):
                raise EventError("missing_field", f"field {name!r} is required")
        _check(payload)
        event_id = payload.get("event_id")
        key = (
            ("", event_id)
            if isinstance(event_id, str)
            else (str(payload["call_id"]), str(payload["event"]))
        )
        known = self._ids.get(key)
        receipt = EventReceipt(known or str(uuid.uuid4()), known is not None, payload)
        self._ids.setdefault(key, receipt.id)
        self.receipts.append(receipt)
        return receipt


def _one_of(value: object, allowed: frozenset[str]) -> bool:
    """``value`` is one of the words ``allowed`` (a list or object is not, and is no error)."""
    return isinstance(value, str) and value in allowed


def _check(payload: Mapping[str, Any]) -> None:
    if not _one_of(payload["event"], EVENTS):
        raise EventError("invalid_event", f"unknown event {payload['event']!r}")
    if not _one_of(payload["direction"], DIRECTIONS):
        raise EventError("invalid_event", f"unknown direction {payload['direction']!r}")
    if payload.get("status") is not None and not _one_of(payload["status"], STATUSES):
        raise EventError("invalid_event", f"unknown status {payload['status']!r}")
    # The BSL module's bounds: its register's dimensions, and the dates 1C has.
    if not isinstance(payload["call_id"], str) or len(payload["call_id"]) > MAX_CALL_ID:
        raise EventError("invalid_event", f"call_id must be a string of at most {MAX_CALL_ID}")
    ts = payload["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts < MAX_TS:
        raise EventError("invalid_event", "ts must be Unix seconds (a 1C date: years 1970-9999)")
    # Absent or null alike: keyed by (call_id, event), as the BSL module does
    # (``Данные.Получить("event_id")`` is Неопределено for both).
    event_id = payload.get("event_id")
    if event_id is not None and not (
        isinstance(event_id, str) and 0 < len(event_id) <= MAX_EVENT_ID
    ):
        raise EventError(
            "invalid_event", f"event_id must be a non-empty string of at most {MAX_EVENT_ID}"
        )
    _check_life(payload)


def _nullable(payload: Mapping[str, Any], name: str, *types: type) -> None:
    value = payload.get(name)
    if value is not None and (
        (isinstance(value, bool) and bool not in types) or not isinstance(value, types)
    ):
        raise EventError(
            "invalid_event", f"{name} must be {' or '.join(t.__name__ for t in types)} or null"
        )


def _check_life(payload: Mapping[str, Any]) -> None:
    """The fields callrouter's call life adds (docs/onec.md, the history contract)."""
    _nullable(payload, "extension", str)
    _nullable(payload, "hangup_by", str)
    _nullable(payload, "talk_seconds", int, float)
    _nullable(payload, "replayed", bool)
    transfer = payload.get("transfer")
    if transfer is not None:
        if not isinstance(transfer, dict) or not _one_of(transfer.get("kind"), TRANSFERS):
            raise EventError(
                "invalid_event", "transfer must be {kind: blind|attended, from, to} or null"
            )
        for end in ("from", "to"):
            if transfer.get(end) is not None and not isinstance(transfer[end], str):
                raise EventError("invalid_event", f"transfer.{end} must be a string or null")
    owner = payload.get("owner")
    if owner is not None and (
        not isinstance(owner, dict)
        or not all(
            owner.get(k) is None or isinstance(owner[k], str) for k in ("manager_id", "extension")
        )
    ):
        raise EventError("invalid_event", "owner must be {manager_id, extension} or null")
    if payload["event"] == "missed_closed":
        for name in ("closed_by", "closed_at"):
            if payload.get(name) in (None, ""):
                raise EventError("missing_field", f"field {name!r} is required for missed_closed")
        if not isinstance(payload["closed_by"], str):
            raise EventError("invalid_event", "closed_by must be a call id (a string)")
