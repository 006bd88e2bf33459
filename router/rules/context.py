"""What a trigger tells the rules: the names an expression may use.

The same table drives load-time checking (``caller.numbr`` is caught when the
file is read) and run time (the evaluator only reads declared fields), so the
two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

__all__ = [
    "ALLOWED_ATTRS",
    "FIELDS",
    "TRIGGER_NAMES",
    "CallInfo",
    "Caller",
    "Context",
    "EventFields",
    "TriggerKind",
]

TriggerKind = Literal["call", "event", "schedule"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: ``number`` is normalized, ``raw`` is what Asterisk sent."""

    number: str
    raw: str = ""
    name: str = ""
    internal: bool = False


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The channel being routed, as the call tracker knows it."""

    channel: str = ""
    uniqueid: str = ""
    linkedid: str = ""
    context: str = ""
    exten: str = ""
    vars: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


class EventFields(Mapping[str, str]):
    """AMI event fields, case-insensitive (``event.cause`` reads ``Cause``)."""

    __slots__ = ("_fields", "name")

    def __init__(self, name: str, fields: Mapping[str, str]) -> None:
        self.name = name
        self._fields = {key.lower(): value for key, value in fields.items()}
        self._fields.setdefault("event", name)

    def __getitem__(self, key: str) -> str:
        return self._fields[key.lower()]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        return self._fields.get(key.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"EventFields({self.name!r}, {self._fields!r})"


#: Names each trigger provides (``lists`` is added for every trigger).
TRIGGER_NAMES: Mapping[str, tuple[str, ...]] = {
    "call": ("caller", "did", "call", "now"),
    "event": ("event", "call", "now"),
    "schedule": ("now",),
}

#: Fields of the context objects; None means any field (event fields, lists).
FIELDS: Mapping[str, tuple[str, ...] | None] = {
    "caller": ("number", "raw", "name", "internal"),
    "call": ("channel", "uniqueid", "linkedid", "context", "exten", "vars"),
    "now": ("year", "month", "day", "hour", "minute", "second"),
    "did": (),
    "event": None,
    "lists": None,
}

#: What the evaluator lets an expression read, by type (mappings are always readable).
ALLOWED_ATTRS: Mapping[type, frozenset[str]] = {
    Caller: frozenset(FIELDS["caller"] or ()),
    CallInfo: frozenset(FIELDS["call"] or ()),
    datetime: frozenset(FIELDS["now"] or ()),
}


@dataclass(frozen=True, slots=True)
class Context:
    """Everything one trigger firing provides; build it with the class methods.

    ``rule`` is set for a schedule firing: the scheduler fires one rule.
    """

    kind: TriggerKind
    now: datetime
    caller: Caller | None = None
    did: str | None = None
    call: CallInfo | None = None
    event: EventFields | None = None
    rule: str | None = None

    @classmethod
    def for_call(
        cls, caller: Caller, did: str, *, call: CallInfo | None = None, now: datetime | None = None
    ) -> Context:
        return cls("call", now or datetime.now(UTC), caller=caller, did=did, call=call)

    @classmethod
    def for_event(
        cls,
        name: str,
        fields: Mapping[str, str],
        *,
        call: CallInfo | None = None,
        now: datetime | None = None,
    ) -> Context:
        return cls("event", now or datetime.now(UTC), call=call, event=EventFields(name, fields))

    @classmethod
    def for_schedule(cls, rule: str, *, now: datetime | None = None) -> Context:
        return cls("schedule", now or datetime.now(UTC), rule=rule)

    def names(self) -> dict[str, object]:
        """The expression names this trigger provides (``lists`` comes from the rule set)."""
        if self.kind == "call":
            return {"caller": self.caller, "did": self.did, "call": self.call, "now": self.now}
        if self.kind == "event":
            return {"event": self.event, "call": self.call, "now": self.now}
        return {"now": self.now}

    def describe(self, now: datetime | None = None) -> str:
        """One line for traces: what fired, at ``now`` (default: :attr:`now`;
        the rules' trace gives the same instant in their time zone)."""
        when = (now or self.now).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        if self.kind == "call":
            number = self.caller.number if self.caller else "?"
            return f"call from {number} to {self.did} at {when}"
        if self.kind == "event":
            return f"event {self.event.name if self.event else '?'} at {when}"
        return f"schedule of rule {self.rule!r} at {when}"
