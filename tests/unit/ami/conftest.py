"""Fixtures shared by the AMI clients' tests (AJAM and TCP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from tests.unit import tls_files
from tests.unit.ami.tcp_fake import FakeAMI
from tests.unit.tls_files import Certificate

#: One connection's server side: reads the request, writes whatever the test wants.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """``await server(handler)`` -> the port of a loopback server running
    ``handler`` for each connection; all torn down after the test."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Each connection's handler ends (its writer closed) before the
            # test's loop does: no StreamWriter is collected on a closed loop.
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()
                handlers.discard(task)

        srv = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(srv)
        port: int = srv.sockets[0].getsockname()[1]
        return port

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()
    if handlers:
        await asyncio.wait(set(handlers), timeout=2)
    for task in set(handlers):
        task.cancel()


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAMI]:
    """A fake native AMI server on loopback (tests/unit/ami/tcp_fake.py), stopped after the test."""
    server = await FakeAMI().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def self_signed(tmp_path: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 (tests/unit/tls_files.py)."""
    return tls_files.self_signed(tmp_path)


@pytest.fixture
def name_only(tmp_path: Path) -> Certificate:
    """A self-signed certificate for the name ``localhost`` only, no address."""
    return tls_files.name_only(tmp_path)


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA file that vouches for another certificate than the server's."""
    return tls_files.other_ca(tmp_path)
