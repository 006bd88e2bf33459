"""The client's transport seam: one retry loop and one error mapping for every transport."""

from __future__ import annotations

import socket
from urllib.parse import parse_qsl

import httpx
import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.http import (
    ConnectFailedError,
    ConnectionPool,
    Headers,
    HTTPError,
    HTTPProtocolError,
    HTTPResponse,
    StaleConnectionError,
)
from router.ami.httpx_transport import HttpxTransport
from router.ami.transport import HTTPRequest, Transport
from router.errors import AMIConnectionError, AMIProtocolError, AMITimeoutError

URL = "http://pbx.test:8088/asterisk"
COOKIE = 'mansession_id="0badcafe"; Version=1; Max-Age=60'


class SeamAsterisk:
    """A :class:`Transport` that answers like Asterisk; ``fail`` makes one action fail."""

    def __init__(self) -> None:
        self.sent: list[HTTPRequest] = []
        self.fail: dict[str, BaseException] = {}
        self.closed = False

    def actions(self) -> list[str]:
        return [dict(parse_qsl(r.body.decode()))["Action"] for r in self.sent]

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        self.sent.append(request)
        action = dict(parse_qsl(request.body.decode()))["Action"]
        failure = self.fail.pop(action, None)
        if failure is not None:
            raise failure
        body = b"Response: Success\r\nMessage: ok\r\n\r\n"
        return HTTPResponse(200, Headers([("Set-Cookie", COOKIE)]), body)

    async def aclose(self) -> None:
        self.closed = True


def test_every_transport_is_a_transport() -> None:
    seam: Transport = SeamAsterisk()
    pool: Transport = ConnectionPool("127.0.0.1", 1)
    adapter: Transport = HttpxTransport("http://pbx.test:8088")
    assert {type(t).__name__ for t in (seam, pool, adapter)} == {
        "SeamAsterisk",
        "ConnectionPool",
        "HttpxTransport",
    }


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ConnectionPool),
        ({"http_client": "httpx"}, HttpxTransport),
        ({"auth": "digest"}, HttpxTransport),
    ],
)
async def test_native_mode_builds_no_httpx_client(
    settings: dict[str, str], expected: type[object]
) -> None:
    client = AJAMClient(ClientSettings(url=URL, username="u", secret="s", **settings))  # type: ignore[arg-type]
    assert type(client.transport) is expected
    await client.aclose()


async def test_an_injected_httpx_transport_runs_inside_httpx() -> None:
    mock = httpx.MockTransport(lambda r: httpx.Response(200, content=b"Response: Success\r\n\r\n"))
    client = AJAMClient(ClientSettings(url=URL, username="u", secret="s"), transport=mock)
    assert isinstance(client.transport, HttpxTransport)
    await client.aclose()


async def test_the_cookie_is_the_clients_and_closing_closes_the_transport() -> None:
    seam = SeamAsterisk()
    async with AJAMClient(
        ClientSettings(url=URL, username="u", secret="s"), transport=seam
    ) as client:
        await client.action("Ping")
    assert seam.actions() == ["Login", "Ping", "Logoff"]
    assert seam.sent[0].header("Cookie") is None
    assert [r.header("cookie") for r in seam.sent[1:]] == ['mansession_id="0badcafe"'] * 2
    assert {r.target for r in seam.sent} == {"/asterisk/rawman"}
    assert seam.closed


async def test_stale_connection_retried_once_for_idempotent_actions_only() -> None:
    seam = SeamAsterisk()
    async with AJAMClient(
        ClientSettings(url=URL, username="u", secret="s"), transport=seam
    ) as client:
        seam.fail["Ping"] = StaleConnectionError("server closed the idle connection")
        assert (await client.action("Ping")).ok
        seam.fail["Originate"] = StaleConnectionError("server closed the idle connection")
        with pytest.raises(AMIConnectionError, match=r"Originate: connection to .* broke"):
            await client.action("Originate", {"Channel": "Local/1@sink"})
    assert seam.actions().count("Ping") == 2
    assert seam.actions().count("Originate") == 1


@pytest.mark.parametrize(
    ("failure", "expected", "match"),
    [
        (TimeoutError(), AMITimeoutError, "Ping: no answer from .* within"),
        (ConnectFailedError("refused"), AMIConnectionError, "cannot connect to Asterisk"),
        (ConnectionRefusedError(111, "refused"), AMIConnectionError, "cannot connect"),
        (socket.gaierror(-2, "Name or service not known"), AMIConnectionError, "cannot connect"),
        (ConnectionResetError(104, "reset"), AMIConnectionError, "Ping: connection broke"),
        (HTTPProtocolError("not an HTTP response"), AMIProtocolError, "Ping: not an HTTP response"),
        (
            HTTPError("connection closed in the middle"),
            AMIConnectionError,
            "Ping: connection closed",
        ),
    ],
)
async def test_the_seams_errors_map_onto_the_tree_once(
    failure: BaseException, expected: type[Exception], match: str
) -> None:
    seam = SeamAsterisk()
    async with AJAMClient(
        ClientSettings(url=URL, username="u", secret="s"), transport=seam
    ) as client:
        seam.fail["Ping"] = failure
        with pytest.raises(expected, match=match):
            await client.action("Ping")
    assert seam.actions().count("Ping") == 1  # not a stale connection: not repeated


@pytest.mark.parametrize(
    ("failure", "seam_error"),
    [
        (httpx.ReadTimeout("slow"), TimeoutError),
        (httpx.ConnectError("refused"), ConnectFailedError),
        (httpx.RemoteProtocolError("Server disconnected"), StaleConnectionError),
        (httpx.ReadError("reset"), StaleConnectionError),
        (httpx.TooManyRedirects("loop"), HTTPError),
    ],
)
async def test_httpx_failures_come_out_as_the_seams(
    failure: Exception, seam_error: type[Exception]
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    adapter = HttpxTransport("http://pbx.test:8088", transport=httpx.MockTransport(fail))
    with pytest.raises(seam_error):
        await adapter.exchange(
            HTTPRequest("POST", "/asterisk/rawman", (), b"Action=Ping"), timeout=1
        )
    await adapter.aclose()
