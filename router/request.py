"""The routing request being decided, visible to lookups without extra arguments.

A rule calls ``onec.responsible(caller.number)``; the 1C service also wants
the DID and the call id for its logs, and every lookup should respect the
call's deadline. Rather than widen every lookup's signature, the engine sets
this context variable while it evaluates a request, and a lookup reads it
with :func:`current_request` (None outside a routing decision: ``explain``,
event and schedule rules). asyncio copies context variables into tasks, so a
lookup that spawns one still sees it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

__all__ = ["RequestInfo", "current_request", "set_request"]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The call being routed: ``deadline`` is a ``time.monotonic()`` value."""

    channel: str
    uniqueid: str
    linkedid: str
    caller: str
    did: str
    deadline: float


_CURRENT: ContextVar[RequestInfo | None] = ContextVar("callrouter_request", default=None)


def current_request() -> RequestInfo | None:
    """The request whose rules are being evaluated, if any."""
    return _CURRENT.get()


def set_request(info: RequestInfo | None) -> Token[RequestInfo | None]:
    """For the engine (and tests): mark ``info`` as the request being decided."""
    return _CURRENT.set(info)
