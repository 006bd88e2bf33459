"""A routing request is decided and its Redirect written in the loop turn that
brought it (router.eager), not behind callbacks already queued (issue 16)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from router.ami.message import Event
from router.ami.protocol import ActionResult, assemble_result, parse_body
from router.hookspecs import hookimpl
from tests.unit.client_stub import EVERYONE, ClientStub, engine_on, first_to_102

RULES = EVERYONE

SLOW = first_to_102("slow", "lookup:\n  owner: never(caller.number)\nwhen: owner")

CHANNEL = "PJSIP/trunk-00000001"


class Wire(ClientStub):
    """A client that writes an action at once, as the TCP client does, and
    answers when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.answers: list[asyncio.Future[ActionResult]] = []

    async def send(self, name: str, params: Any = None, **_: Any) -> ActionResult:
        self.sent.append((name, dict(params or {})))
        answer: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        return await answer

    def answer_all(self) -> None:
        ok = assemble_result(parse_body(b"Response: Success\r\nMessage: ok\r\n\r\n", "text/plain"))
        for answer in self.answers:
            if not answer.done():
                answer.set_result(ok)


class Never:
    """A lookup that never answers: the deadline has to end it."""

    __name__ = "never_plugin"

    @hookimpl
    def callrouter_register(self, registry: Any) -> None:
        registry.add_lookup("never", self.never)

    async def never(self, number: str) -> None:
        await asyncio.Event().wait()


def request(wait: str = "4") -> list[Event]:
    common = {
        "Channel": CHANNEL,
        "Uniqueid": "1796140000.1",
        "Linkedid": "1796140000.1",
        "CallerIDNum": "79161234567",
        "CallerIDName": "<unknown>",
        "Context": "callrouter-inbound",
        "Exten": "74950000001",
    }
    return [
        Event(tuple({"Event": "Newchannel", **common, "ChannelState": "4"}.items())),
        Event(
            tuple(
                {
                    "Event": "UserEvent",
                    **common,
                    "Priority": "6",
                    "UserEvent": "CallRouterRequest",
                    "DID": "74950000001",
                    "Caller": "79161234567",
                    "Wait": wait,
                }.items()
            )
        ),
    ]


def wait_step(wait: str = "4") -> Event:
    """The step after the request, which a Redirect waits for (router/parking.py)."""
    fields = {"Event": "Newexten", "Channel": CHANNEL, "Context": "callrouter-inbound"}
    fields |= {"Exten": "74950000001", "Priority": "7"}
    # Asterisk writes the channel's Uniqueid and Linkedid with its every event.
    fields |= {"Uniqueid": "1796140000.1", "Linkedid": "1796140000.1"}
    fields |= {"Application": "Wait", "AppData": wait}
    return Event(tuple(fields.items()))


async def test_the_redirect_is_written_before_callbacks_queued_earlier_run(
    tmp_path: Path,
) -> None:
    wire = Wire()
    routing = await engine_on(tmp_path, RULES, wire)
    newchannel, ask = request()
    await routing.handle_event(newchannel)
    order: list[str] = []
    asyncio.get_running_loop().call_soon(order.append, "earlier calls' bookkeeping")
    # Read together, as Asterisk writes them: the request and its channel's next step.
    await routing._handle_items([ask, wait_step()])
    assert [name for name, _ in wire.sent] == ["Redirect"]
    assert wire.sent[0][1]["Context"] == "callrouter-dial"
    assert order == []  # the Redirect went first
    wire.answer_all()
    await asyncio.sleep(0)
    assert order == ["earlier calls' bookkeeping"]


async def test_a_lookup_past_the_deadline_ends_the_routing_not_the_event_reader(
    tmp_path: Path,
) -> None:
    """The lookup's timer is the routing's own: the engine's reader goes on."""
    wire = Wire()
    routing = await engine_on(tmp_path, SLOW, wire, Never())
    reader_survived: list[str] = []

    async def reader() -> None:
        for event in request(wait="1"):
            await routing.handle_event(event)
        await asyncio.sleep(1.5)  # past the deadline: a timer on this task would end it
        reader_survived.append("yes")

    await asyncio.wait_for(reader(), 5)
    assert reader_survived == ["yes"]
    (record,) = routing.records
    assert record.outcome == "late"
    lookups = record.lookups
    assert lookups
    assert lookups[0]["error"].startswith("timed out")
