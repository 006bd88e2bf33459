"""Builders of call-life events as callrouter hands them to plugins.

The plugin reads events through a protocol (``callrouter_onec.life.CallEventLike``);
these frozen dataclasses have the fields of ``router.CallEvent``
and ``Transfer``, so a test writes a call's life in a few lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

T0 = 1_714_557_600.0  # 2024-05-01 10:00:00 UTC (13:00 in Moscow)


@dataclass(frozen=True, slots=True)
class Transfer:
    kind: str
    from_extension: str | None
    to_extension: str | None


@dataclass(frozen=True, slots=True)
class LifeEvent:
    kind: str
    call_id: str
    event_id: str
    direction: str = "in"
    external: str | None = "8 (916) 123-45-67"
    did: str | None = "74951234567"
    extension: str | None = None
    at: float = T0
    started_at: float | None = T0
    answered_at: float | None = None
    ended_at: float | None = None
    status: str | None = None
    hangup_by: str | None = None
    transfer: Transfer | None = None
    talk_seconds: float | None = None
    replayed: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _event(
    kind: str, call_id: str, event_id: str, defaults: dict[str, Any], kw: dict[str, Any]
) -> LifeEvent:
    return LifeEvent(kind, call_id, event_id, **{**defaults, **kw})


def ringing(call_id: str, extension: str, *, at: float = T0 + 1, **kw: Any) -> LifeEvent:
    return _event(
        "ringing", call_id, f"{call_id}/ringing/{extension}", {"extension": extension, "at": at}, kw
    )


def answered(call_id: str, extension: str, *, at: float = T0 + 7, **kw: Any) -> LifeEvent:
    defaults = {"extension": extension, "at": at, "answered_at": at}
    return _event("answered", call_id, f"{call_id}/answered", defaults, kw)


def hangup(
    call_id: str, extension: str, *, answered_at: float = T0 + 7, at: float = T0 + 190, **kw: Any
) -> LifeEvent:
    defaults = {
        "extension": extension,
        "at": at,
        "answered_at": answered_at,
        "ended_at": at,
        "status": "ANSWER",
        "hangup_by": "external",
        "talk_seconds": at - answered_at,
    }
    return _event("hangup", call_id, f"{call_id}/hangup", defaults, kw)


def missed(call_id: str, *, at: float = T0 + 30, **kw: Any) -> LifeEvent:
    defaults = {"at": at, "ended_at": at, "status": "NOANSWER", "hangup_by": "external"}
    return _event("missed", call_id, f"{call_id}/missed", defaults, kw)
