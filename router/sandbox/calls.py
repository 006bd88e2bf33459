"""Place test calls on a sandbox Asterisk and see where each one ends up.

A "phone call" here is a Local channel originated into the inbound context,
with caller ID and DID of our choosing. Each call's inbound half gets a
pre-assigned Uniqueid (Originate ``OtherChannelId``), so its events are
recognised without guessing; the first dialplan context it enters after the
inbound one is its destination: where callrouter redirected it, or the
default route when callrouter did nothing. Integration tests, the demo and
the benchmarks all drive calls through this.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from router.ami.client import AJAMClient
from router.ami.message import Event
from router.ami.stream import EventStream, StreamGap
from router.dialplan import INBOUND_CONTEXT, REQUEST_EVENT
from router.tasks import cancel_and_wait

__all__ = ["CallPlacer", "PlacedCall"]

_serial = itertools.count(1)


@dataclass(slots=True)
class PlacedCall:
    """One test call and what became of it."""

    did: str
    caller: str
    uniqueid: str
    channel: str = ""
    #: Asterisk ``Timestamp`` of the routing request (the dialplan's UserEvent).
    requested_at: float | None = None
    #: Context and extension the call first landed in after the inbound context.
    context: str | None = None
    exten: str | None = None
    landed_at: float | None = None
    hung_up: bool = False
    cause: str | None = None
    #: Channel variables seen set on the inbound channel (VarSet).
    variables: dict[str, str] = field(default_factory=dict)
    #: Times the call entered its landing context at priority 1: a second
    #: Redirect to the same place would make this 2.
    landings: int = 0
    #: Routing requests the call sent: more than one is a call that ran the
    #: inbound context again (a ``Goto`` back to its top).
    requests: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def destination(self) -> str:
        if self.context is not None:
            return f"{self.context},{self.exten}"
        return "hangup" if self.hung_up else "pending"

    @property
    def latency_ms(self) -> float | None:
        """Request to landing, on Asterisk's own clock."""
        if self.requested_at is None or self.landed_at is None:
            return None
        return (self.landed_at - self.requested_at) * 1000


class CallPlacer:
    """Originates calls and follows them through the event stream of ``client``."""

    def __init__(
        self,
        client: AJAMClient,
        *,
        inbound_context: str = INBOUND_CONTEXT,
        request_event: str = REQUEST_EVENT,
        ignore_contexts: Iterable[str] = (),
    ) -> None:
        self.client = client
        self.inbound = inbound_context
        self.request_event = request_event
        self.ignore = set(ignore_contexts)
        self.calls: dict[str, PlacedCall] = {}
        self.redirects: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._prefix = f"cp{os.getpid()}x{int(time.time() * 1000) % 100000}"

    async def __aenter__(self) -> CallPlacer:
        self._task = asyncio.ensure_future(self._watch())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hangup_all()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await cancel_and_wait(self._task)

    async def place(
        self,
        did: str,
        caller: str,
        *,
        caller_name: str = "",
        wait: float | None = None,
        hold: int = 60,
    ) -> PlacedCall:
        """Start a call from ``caller`` to ``did``; returns at once."""
        serial = next(_serial)
        uniqueid = f"{self._prefix}-{serial}-in"
        call = PlacedCall(did=did, caller=caller, uniqueid=uniqueid)
        self.calls[uniqueid] = call
        variables = {}
        if wait is not None:
            variables["__CALLROUTER_WAIT"] = f"{wait:g}"
        callerid = f'"{caller_name}" <{caller}>' if caller_name else caller
        await self.client.send(
            "Originate",
            {
                "Channel": f"Local/{did}@{self.inbound}",
                "Application": "Wait",
                "Data": str(hold),
                "CallerID": callerid,
                "Async": "true",
                "ChannelId": f"{self._prefix}-{serial}-out",
                "OtherChannelId": uniqueid,
                "Variable": [f"{k}={v}" for k, v in variables.items()] or None,
            },
            validate=False,
        )
        return call

    async def wait_all(self, calls: Iterable[PlacedCall], timeout: float) -> None:
        """Wait until every call landed somewhere (or hung up), up to ``timeout``."""
        pending = [c.done.wait() for c in calls if not c.done.is_set()]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), timeout)

    async def hangup_all(self) -> None:
        for call in self.calls.values():
            if call.channel and not call.hung_up:
                with contextlib.suppress(Exception):
                    await self.client.send(
                        "Hangup", {"Channel": call.channel}, validate=False, check=False
                    )

    async def _watch(self) -> None:
        stream = EventStream(
            self.client, ["Newexten", "UserEvent", "Hangup", "VarSet", "Newchannel"]
        )
        async for item in stream:
            if isinstance(item, StreamGap):
                continue
            self.observe(item)

    def observe(self, event: Event) -> None:
        call = self.calls.get(event.get("Uniqueid") or "")
        if call is None:
            return
        name = event.name
        if name == "Newchannel":
            call.channel = event.get("Channel") or ""
        elif name == "UserEvent" and event.get("UserEvent") == self.request_event:
            call.requests += 1
            call.requested_at = _stamp(event)
        elif name == "VarSet":
            call.variables[event.get("Variable") or ""] = event.get("Value") or ""
        elif name == "Newexten":
            context = event.get("Context") or ""
            if call.context is None and context != self.inbound and context not in self.ignore:
                call.context = context
                call.exten = event.get("Exten")
                call.landed_at = _stamp(event)
                call.done.set()
            if context == call.context and event.get("Priority") == "1":
                call.landings += 1
        elif name == "Hangup":
            call.hung_up = True
            call.cause = event.get("Cause")
            call.done.set()


def _stamp(event: Event) -> float:
    try:
        return float(event.get("Timestamp") or "")
    except ValueError:
        return time.time()
