"""Events handled in the read that brought them (EventStream.push_to, issue 16):
the engine takes a socket read's events at once when it is idle, and leaves
them to the poll loop when it is busy, so Asterisk's order always holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from router.ami.message import Event
from router.ami.stream import EventStream
from router.engine import Engine
from router.errors import AMIAuthenticationError
from router.hookspecs import hookimpl
from tests.unit.client_stub import EVERYONE, ClientStub, engine_on
from tests.unit.engine_tcp import engine_on_tcp

#: Engines here load installed plugins: one a plugin author installed (with
#: callrouter_call_start, its own metric families) changes what is asserted.
pytestmark = pytest.mark.usefixtures("only_shipped_plugins")

RULES = EVERYONE


def ev(name: str) -> Event:
    return Event((("Event", name), ("Channel", f"PJSIP/x-{name}")))


class Pushy(ClientStub):
    """A client that reads a socket, as the TCP client does: a read is offered
    to the push sink first and queued for ``wait_event`` when refused."""

    def __init__(self) -> None:
        self.session_generation = 1
        self.push: Callable[[list[Event]], bool] | None = None
        self.queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self.pushed: list[list[str]] = []
        self.queued: list[list[str]] = []

    def set_push(self, push: Callable[[list[Event]], bool] | None) -> None:
        self.push = push

    def read(self, *names: str) -> None:
        events = [ev(name) for name in names]
        if self.push is not None and self.queue.empty() and self.push(events):
            self.pushed.append(list(names))
            return
        self.queued.append(list(names))
        self.queue.put_nowait(events)

    async def wait_event(self, timeout: int = 20) -> list[Event]:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return []

    async def send(self, name: str, params: Any = None, **_: Any) -> Any:
        raise AssertionError(f"no action expected, got {name}")


class Seen:
    """Records the events plugins see; ``Slow`` waits for the gate."""

    __name__ = "seen_plugin"

    def __init__(self) -> None:
        self.order: list[str] = []
        self.gate = asyncio.Event()

    @hookimpl
    def callrouter_event(self, event: Event) -> Awaitable[None] | None:
        self.order.append(event.name)
        if event.name == "Slow":
            return self.gate.wait()  # type: ignore[return-value]
        return None


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, client: Pushy, *plugins: object
) -> AsyncIterator[tuple[Engine, asyncio.Task[None]]]:
    engine = await engine_on(tmp_path, RULES, client, *plugins)
    engine._stream = EventStream(client, poll_timeout=1)
    task = asyncio.create_task(engine.serve())
    try:
        await asyncio.wait_for(engine.ready.wait(), 5)
        yield engine, task
    finally:
        engine.request_stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 5)
        await engine.stop()


def refuse(engine: Engine, exc: Exception) -> None:
    """Handling an event named ``Refused`` raises ``exc``; the others go on as usual."""
    handle = engine.handle_event

    async def refusing(event: Event) -> None:
        if event.name == "Refused":
            raise exc
        await handle(event)

    engine.handle_event = refusing  # type: ignore[method-assign]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_an_idle_engine_handles_a_read_in_the_read_and_a_busy_one_queues_it(
    tmp_path: Path,
) -> None:
    client, seen = Pushy(), Seen()
    async with serving(tmp_path, client, seen) as (_engine, _task):
        # Before the first poll the stream cannot tell a gap from a session: it polls.
        client.read("First")
        await settle()
        assert client.queued == [["First"]]
        assert seen.order == ["First"]

        client.read("A")
        assert seen.order == ["First", "A"]  # handled before read() returned: no loop turn
        client.read("Slow")  # taken, then waits inside a plugin: the engine is busy
        assert client.pushed == [["A"], ["Slow"]]
        client.read("B")
        client.read("C")
        assert client.queued == [["First"], ["B"], ["C"]]
        await settle()
        assert seen.order == ["First", "A", "Slow"]  # B waits for Slow, though polled
        seen.gate.set()
        await settle()
        assert seen.order == ["First", "A", "Slow", "B", "C"]
        client.read("D")  # idle again: in the read
        assert seen.order[-1] == "D"
        assert client.pushed[-1] == ["D"]


async def test_a_new_session_is_reported_as_a_gap_before_its_events_are_pushed(
    tmp_path: Path,
) -> None:
    client, seen = Pushy(), Seen()
    async with serving(tmp_path, client, seen) as (engine, _task):
        gaps: list[str] = []

        async def on_gap(gap: Any) -> None:
            gaps.append(gap.reason)
            seen.order.append("gap")

        engine._on_gap = on_gap  # type: ignore[method-assign]
        client.read("First")
        await settle()
        client.session_generation = 2  # logged in again: the old session's queue is lost
        client.read("Next")
        assert client.queued[-1] == ["Next"]  # not pushed past the gap
        await settle()
        assert seen.order == ["First", "gap", "Next"]
        assert gaps == ["session"]
        client.read("Then")
        assert client.pushed == [["Then"]]


async def test_refused_credentials_in_a_pushed_event_end_serve_with_the_error(
    tmp_path: Path,
) -> None:
    client, seen = Pushy(), Seen()
    async with serving(tmp_path, client, seen) as (engine, task):
        client.read("First")
        await settle()
        refuse(engine, AMIAuthenticationError("Authentication failed"))
        client.read("Refused")
        assert client.pushed == [["Refused"]]
        with pytest.raises(AMIAuthenticationError, match="Authentication failed"):
            await asyncio.wait_for(task, 5)


async def test_a_failing_event_in_a_read_is_skipped_and_the_socket_never_sees_it(
    tmp_path: Path,
) -> None:
    client, seen = Pushy(), Seen()
    async with serving(tmp_path, client, seen) as (engine, task):
        client.read("First")
        await settle()
        refuse(engine, RuntimeError("tracker bug"))
        client.read("Refused", "After")  # must not raise into the read callback
        assert seen.order == ["First", "After"]
        assert not task.done()


async def test_stop_ends_a_read_still_waiting_on_a_plugin(tmp_path: Path) -> None:
    client, seen = Pushy(), Seen()
    async with serving(tmp_path, client, seen) as (engine, _task):
        client.read("First")
        await settle()
        client.read("Slow")  # its hook never returns (the gate stays shut)
        pushed = engine._pushed
        assert pushed is not None
    assert pushed.cancelled()


async def test_over_tcp_a_request_is_acted_on_before_the_rest_of_its_read_is_parsed(
    tmp_path: Path,
) -> None:
    """The engine gives the TCP client the request's own header line as the
    place to cut a read (router.ami.tcp): the Redirect is written while the
    events read with the request are still unparsed bytes; its channel's
    Wait step among them, which the Redirect waits for (router/parking.py),
    was looked at in the raw read."""
    async with engine_on_tcp(tmp_path, RULES) as (engine, fake, redirects):
        assert engine.ami.urgent_marker == b"\r\nUserEvent: CallRouterRequest\r\n"  # type: ignore[union-attr]
        conn = engine.ami._conn  # type: ignore[union-attr]
        assert conn is not None
        # Events the engine does not ask for are counted as the parser drops them.
        unwanted = b"Event: AgentLogin\r\nAgent: 1\r\n\r\n"
        request = (
            b"Event: UserEvent\r\n"
            b"Channel: PJSIP/a-00000001\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\n"
            b"CallerIDNum: 79161234567\r\nExten: 74950000001\r\nContext: callrouter-inbound\r\n"
            b"Priority: 6\r\nUserEvent: CallRouterRequest\r\nWait: 4\r\n\r\n"
        )
        wait_step = (
            b"Event: Newexten\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/a-00000001\r\n"
            b"Context: callrouter-inbound\r\nExten: 74950000001\r\nPriority: 7\r\n"
            b"Uniqueid: 1.1\r\nLinkedid: 1.1\r\nApplication: Wait\r\nAppData: 4\r\n\r\n"
        )
        skipped = conn._parser.skipped
        fake.push_raw(unwanted + request + unwanted + wait_step + unwanted * 3)
        for _ in range(200):
            if redirects and conn._parser.skipped == skipped + 5:
                break
            await asyncio.sleep(0.01)
        # Nothing of the read was parsed yet: not the unwanted event before
        # the request (nothing reads it, so the request went first, from its
        # own text: Engine._route_early), nor the one between it and its Wait
        # step, nor the three after; the step was looked at in the raw read
        # (router.ami.tcp, router/parking.py).
        assert redirects == [0]
        assert engine.metrics.park_waits.labels("at-once")._value.get() == 1


async def test_a_pushed_tasks_failure_is_logged_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pushed task's done callback runs outside any except block: its
    ``log.exception`` had no traceback to show ("NoneType: None"; issue 16)."""
    engine = await engine_on(tmp_path, RULES, Pushy())

    async def broken() -> bool:
        raise RuntimeError("handler bug")

    task = asyncio.ensure_future(broken())
    await asyncio.gather(task, return_exceptions=True)
    try:
        with caplog.at_level(logging.ERROR, logger="router.engine"):
            engine._pushed_done(task)
    finally:
        await engine.stop()
    (record,) = [r for r in caplog.records if "handling failed" in r.getMessage()]
    assert record.exc_info is not None
    assert record.exc_info[1] is task.exception()
    assert "RuntimeError: handler bug" in caplog.text
