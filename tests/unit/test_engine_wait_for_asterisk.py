"""``callrouter run`` waits at start for an Asterisk that does not answer
(``EngineOptions.wait_for_asterisk``, issue 16), but not for what waiting
does not mend, and not once it is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from router.config import AsteriskSettings
from router.engine import Engine, EngineOptions
from router.errors import AMIConnectionError
from router.plugins import Plugins
from router.testing.builders import make_config
from tests.unit.client_stub import EVERYONE, ClientStub


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "ami.pem", tmp_path / "ami.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@contextlib.asynccontextmanager
async def listening(context: ssl.SSLContext | None) -> AsyncIterator[int]:
    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def engine_at(tmp_path: Path, url: str, client: Any = None) -> Engine:
    rules = tmp_path / "rules.yaml"
    rules.write_text(EVERYONE, encoding="utf-8")
    config = make_config(state_dir=tmp_path / "state")
    config = replace(
        config,
        asterisk=AsteriskSettings(url=url, username="router", secret="s3cret"),
        router=replace(config.router, rules=(rules,)),
    )
    return Engine(
        config,
        plugins=Plugins.load(),
        client=client,
        options=EngineOptions(watch_interval=0, live_heartbeat=0, wait_for_asterisk=True),
    )


@pytest.mark.parametrize("scheme", ["tls", "https"])
async def test_an_untrusted_certificate_stops_the_start_at_once(
    tmp_path: Path, self_signed: ssl.SSLContext, scheme: str
) -> None:
    """A certificate callrouter does not trust is a setting to change
    (``verify``), not an Asterisk still starting: ``callrouter run`` exits
    with the message naming it, as before it waited for Asterisk; it waited
    for ever, a WARNING a minute."""
    async with listening(self_signed) as port:
        path = "/asterisk" if scheme == "https" else ""
        engine = engine_at(tmp_path, f"{scheme}://127.0.0.1:{port}{path}")
        try:
            with pytest.raises(AMIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.wait_for(engine.start(), 5)
        finally:
            await engine.stop()


async def test_a_tls_url_at_a_plain_port_stops_the_start_at_once(tmp_path: Path) -> None:
    """tls:// at a port that answers in plain text: the hint (use tcp://, or
    the tlsbindaddr port) is the exit message, not a WARNING a minute."""

    async def banner(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = engine_at(tmp_path, f"tls://127.0.0.1:{port}")
    try:
        with pytest.raises(AMIConnectionError, match="this port does not speak TLS"):
            await asyncio.wait_for(engine.start(), 5)
    finally:
        await engine.stop()
        server.close()
        await server.wait_closed()


class Away(ClientStub):
    """An Asterisk that does not answer: each login fails."""

    logged_in = False

    def __init__(self) -> None:
        self.logins = 0
        self.tried = asyncio.Event()

    async def login(self) -> None:
        self.logins += 1
        self.tried.set()
        raise AMIConnectionError("cannot connect to Asterisk at tcp://pbx:5038: refused")


async def test_a_stop_while_waiting_ends_the_wait_without_another_try(tmp_path: Path) -> None:
    """SIGTERM while the start waits for Asterisk: no further login is tried
    (one to an unreachable host takes up to connect_timeout, and one that
    succeeded went on to start plugins, the API and a reconcile only to stop)."""
    client = Away()
    engine = engine_at(tmp_path, "tcp://pbx:5038", client)
    start = asyncio.ensure_future(engine.start())
    try:
        await asyncio.wait_for(client.tried.wait(), 2)
        await asyncio.sleep(0.05)  # in the pause between two tries
        engine.request_stop()
        with pytest.raises(AMIConnectionError):
            await asyncio.wait_for(start, 2)
        assert client.logins == 1
    finally:
        start.cancel()
        await engine.stop()


async def test_a_second_stop_during_the_starts_decisions_stops_at_once(tmp_path: Path) -> None:
    """The first SIGTERM came while the engine started (the start's reconcile
    routing calls that waited, a plugin's slow startup): stop() drained the
    decisions in flight for drain_timeout, and a second SIGTERM did not cut
    it short, though docs/operations.md says a second signal stops at once."""
    engine = engine_at(tmp_path, "tcp://pbx:5038", ClientStub())
    await engine.setup()
    decision = asyncio.ensure_future(asyncio.sleep(30))
    engine.router._track(decision)  # a decision in flight (a slow lookup)
    engine.request_stop()  # before serve(): the start's turn
    stopping = asyncio.ensure_future(engine.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # the first signal lets decisions finish
    engine.request_stop()
    await asyncio.wait_for(stopping, 2)
    assert decision.cancelled()
