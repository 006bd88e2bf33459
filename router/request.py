"""The routing request being decided: what a lookup may want beyond its arguments.

A rule calls ``onec.responsible(caller.number)``; the 1C service also wants
the DID and the call id for its logs. A lookup that declares a parameter
named ``request`` gets these facts as a :class:`RequestInfo`, by name, the
way pluggy passes hook arguments: for call rules, event rules and
``explain`` alike (``router.rules.evaluate``). While it routes a call, the
engine also sets a context variable, read with :func:`current_request`: the
fallback for code that cannot take the argument (None outside a call's
routing). asyncio copies context variables into tasks.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

__all__ = ["RequestInfo", "current_request", "set_request"]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The request being decided.

    ``caller`` is the normalized caller number, ``did`` the number dialled,
    ``linkedid`` the call id; ``channel``/``uniqueid`` are empty where no
    channel waits (``explain``). ``deadline`` is a ``time.monotonic()`` value,
    None when nothing waits for the answer (event rules, ``explain``).

    ``done``, for a call the engine routes, is a future that completes (with
    None) when that routing is over: its ``callrouter_decision`` has run by
    then, or never will (the engine reports none for a call its tracker does
    not know at the routing's end). A plugin holding something back until the
    decision (the 1C plugin's call history) stops waiting there
    (``done.add_done_callback``; never set it). None where nobody routes
    (``explain``, event rules).
    """

    channel: str
    uniqueid: str
    linkedid: str
    caller: str
    did: str
    deadline: float | None = None
    done: asyncio.Future[None] | None = field(default=None, compare=False, repr=False)


_CURRENT: ContextVar[RequestInfo | None] = ContextVar("callrouter_request", default=None)


def current_request() -> RequestInfo | None:
    """The request whose rules are being evaluated, if any."""
    return _CURRENT.get()


def set_request(info: RequestInfo | None) -> Token[RequestInfo | None]:
    """For the engine (and tests): mark ``info`` as the request being decided."""
    return _CURRENT.set(info)
