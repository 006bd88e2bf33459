"""Headers that guard browsers: nosniff on every answer, and the Host check
against DNS rebinding (router/api/hosts.py), and the [api] keys behind them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from router.api.app import build_app
from router.api.context import ApiContext
from router.api.feed import EventFeed
from router.api.hosts import TrustedHosts, host_name, is_loopback, trusted_hosts
from router.api.live import LiveRing
from router.api.protocol import target_host
from router.api.server import ApiServer
from router.api.settings import DEFAULT_MAX_CONNECTIONS, ApiSettings, TokenSettings
from router.errors import ConfigError
from router.metrics import Metrics
from router.testing import StubEngine, config_from_toml

EVERYTHING = TokenSettings(
    name="all",
    digest=hashlib.sha256(b"cr_all").digest(),
    allow=("events:read", "ami:Ping", "ui:read"),
    extensions=("*",),
    rate=1000,
    burst=1000,
)
AUTH = {"Authorization": "Bearer cr_all"}


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


def app_over(stub: StubEngine, **changes: Any) -> Any:
    settings = ApiSettings(tokens=MappingProxyType({"all": EVERYTHING}), **changes)
    context = ApiContext(
        stub,
        settings,
        feed=EventFeed(),
        live=LiveRing(stub),
        metrics=Metrics(event_names=()),
    )
    return build_app(context)


# -- nosniff ---------------------------------------------------------------------------


async def test_every_answer_says_nosniff(stub: StubEngine) -> None:
    """A browser must never take an answer (a caller's name in JSON, a stream,
    a problem) for a page of another type."""
    transport = httpx.ASGITransport(app=app_over(stub))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        answers = [
            await client.get("/api/v1/openapi.json"),
            await client.get("/api/v1/nowhere"),
            await client.post("/api/v1/ami/Ping"),  # 401
            await client.delete("/api/v1/events"),  # 405
            await client.get("/api/v1/events?timeout=0", headers=AUTH),
            await client.get("/api/v1/events/stream?timeout=0", headers=AUTH),
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/metrics"),
            await client.get("/ui/"),
            await client.get("/ui/static/app.js"),
            await client.get("/ui/session"),
        ]
    statuses = {answer.status_code for answer in answers}
    assert {200, 401, 404, 405} <= statuses
    for answer in answers:
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], (
            answer.request.url,
            answer.status_code,
        )


# -- Host ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8089", "localhost"),
        ("127.0.0.1:8089", "127.0.0.1"),
        ("[::1]:8089", "[::1]"),
        ("[::1]", "[::1]"),
        ("pbx.example.", "pbx.example"),
        ("evil.example:80", "evil.example"),
        ("evil.example:x", None),
        ("[::1", None),
        ("[::1]x", None),
        ("", None),
        # An empty port is a port left out (RFC 3986); IPv6 in its one spelling.
        ("localhost:", "localhost"),
        ("[::1]:", "[::1]"),
        ("[2001:DB8:0:0::1]:8089", "[2001:db8::1]"),
    ],
)
def test_the_name_in_a_host_header(value: str, name: str | None) -> None:
    assert host_name(value) == name


def test_loopback_names() -> None:
    assert is_loopback("localhost")
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.3.2.1")
    assert is_loopback("[::1]")
    assert is_loopback("::1")
    assert not is_loopback("localhost.evil.example")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("0.0.0.0")


def test_which_listeners_check_the_host() -> None:
    loopback = trusted_hosts(ApiSettings())
    assert loopback is not None
    assert {"localhost", "127.0.0.1"} <= loopback
    v6 = trusted_hosts(ApiSettings(host="::1"))
    assert v6 is not None
    assert "[::1]" in v6
    # Another address is reached by names nobody told us: off...
    assert trusted_hosts(ApiSettings(host="0.0.0.0")) is None
    assert trusted_hosts(ApiSettings(host="10.0.0.5")) is None
    # ... unless allowed_hosts names them.
    named = trusted_hosts(ApiSettings(host="0.0.0.0", allowed_hosts=("pbx.example",)))
    assert named == {"pbx.example", "localhost"}
    address = trusted_hosts(ApiSettings(host="10.0.0.5", allowed_hosts=("pbx.example",)))
    assert address == {"pbx.example", "localhost", "10.0.0.5"}
    extra = trusted_hosts(ApiSettings(allowed_hosts=("callrouter.lan",)))
    assert extra is not None
    assert "callrouter.lan" in extra


def test_an_ipv6_listener_or_allowed_name_matches_however_it_is_spelled() -> None:
    allowed = trusted_hosts(ApiSettings(host="2001:db8:0:0::5", allowed_hosts=("[2001:DB8::7]",)))
    assert allowed is not None
    guard = TrustedHosts(app_over_nothing, allowed)
    assert guard.accepts("[2001:db8::5]:8089")
    assert guard.accepts("[2001:0db8:0000::7]")
    assert not guard.accepts("[2001:db8::8]")


async def app_over_nothing(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


async def test_a_non_loopback_listener_with_allowed_hosts_checks_them(stub: StubEngine) -> None:
    settings = ApiSettings(host="0.0.0.0", allowed_hosts=("pbx.example",))
    allowed = trusted_hosts(settings)
    assert allowed is not None
    app = TrustedHosts(app_over(stub), allowed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pbx.example") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/healthz", headers={"Host": "PBX.example:8443"})).is_success
        assert (await client.get("/healthz", headers={"Host": "other.example"})).status_code == 421


@pytest.fixture
async def loopback_server(stub: StubEngine) -> AsyncIterator[ApiServer]:
    settings = ApiSettings(
        port=0,
        tokens=MappingProxyType({"all": EVERYTHING}),
        allowed_hosts=("callrouter.lan",),
    )
    context = ApiContext(stub, settings, live=LiveRing(stub), metrics=Metrics(event_names=()))
    server = ApiServer(build_app(context), settings)
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/api/v1/openapi.json", "/ui/"])
async def test_a_rebound_name_reads_nothing_from_a_loopback_listener(
    loopback_server: ApiServer, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """DNS rebinding: the attacker's name now points at 127.0.0.1, and the
    browser sends its page's requests there with ``Host: evil.example``."""
    url = f"http://127.0.0.1:{loopback_server.port}{path}"
    async with httpx.AsyncClient() as client:
        refused = await client.get(url, headers={"Host": "evil.example"})
        spoofed_port = await client.get(
            url, headers={"Host": f"evil.example:{loopback_server.port}"}
        )
    assert refused.status_code == 421
    assert spoofed_port.status_code == 421
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert "allowed_hosts" in refused.json()["detail"]
    assert "evil.example" in caplog.text


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "callrouter.lan",
        "Callrouter.LAN:80",
    ],
)
async def test_a_loopback_listener_answers_its_own_names(
    loopback_server: ApiServer, host: str
) -> None:
    port = loopback_server.port
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"http://127.0.0.1:{port}/api/v1/openapi.json", headers={"Host": host.format(port=port)}
        )
    assert response.status_code == 200


async def test_a_request_without_host_is_answered(loopback_server: ApiServer) -> None:
    """HTTP/1.0 tools may send none; no browser does, so it is no rebinding."""
    reader, writer = await asyncio.open_connection("127.0.0.1", loopback_server.port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()


@pytest.mark.parametrize("target", ["/healthz", "/metrics", "/api/v1/openapi.json", "*"])
async def test_an_http_1_1_request_without_host_is_refused(
    loopback_server: ApiServer, target: str
) -> None:
    """RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request that
    lacks Host; it was served. (HTTP/1.0 without one is, above.)"""
    method = "OPTIONS" if target == "*" else "GET"
    status = await _raw(loopback_server.port, f"{method} {target} HTTP/1.1\r\n\r\n".encode())
    assert status.startswith(b"HTTP/1.1 400"), status


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return status


@pytest.mark.parametrize(
    "hosts", [("localhost", "evil.example"), ("evil.example", "localhost"), ("localhost",) * 2]
)
async def test_a_request_with_two_host_headers_is_refused(
    loopback_server: ApiServer, hosts: tuple[str, ...]
) -> None:
    """RFC 9112 3.2: more than one Host is 400; the check read the first only,
    so ``Host: localhost`` then ``Host: evil.example`` was served."""
    head = "".join(f"Host: {host}\r\n" for host in hosts)
    status = await _raw(loopback_server.port, f"GET /metrics HTTP/1.1\r\n{head}\r\n".encode())
    assert status.startswith(b"HTTP/1.1 400"), status


@pytest.mark.parametrize(
    ("target", "host", "status"),
    [
        ("http://evil.example/metrics", "localhost", b"421"),
        ("http://evil.example:{port}/metrics", "localhost", b"421"),
        ("http://localhost@evil.example/metrics", "localhost", b"421"),
        ("http://127.0.0.1:{port}/metrics", "evil.example", b"200"),
        ("http://[::1]:{port}/metrics", "evil.example", b"200"),
        ("https://callrouter.lan/metrics", "evil.example", b"200"),
        ("http:///metrics", "localhost", b"400"),
        # HTTP/1.1 with no Host header: 400 (RFC 9112 3.2), target or not.
        ("http://[::1]:{port}/metrics", None, b"400"),
        ("https://callrouter.lan/metrics", None, b"400"),
        # HTTP/1.0 may lack it: the target's authority is checked.
        ("http://[::1]:{port}/metrics 1.0", None, b"200"),
        ("https://callrouter.lan/metrics 1.0", None, b"200"),
        ("http://evil.example/metrics 1.0", None, b"421"),
    ],
)
async def test_an_absolute_form_target_is_checked_as_the_host(
    loopback_server: ApiServer, target: str, host: str | None, status: bytes
) -> None:
    """RFC 9112 3.2.2: the authority of ``GET http://evil.example/metrics``
    replaces the Host header; it was dropped, and ``Host: localhost`` served."""
    port = loopback_server.port
    head = f"Host: {host}\r\n" if host else ""
    target, _, version = target.partition(" ")
    request = f"GET {target.format(port=port)} HTTP/{version or '1.1'}\r\n{head}\r\n"
    answer = await _raw(port, request.encode())
    assert answer.startswith(b"HTTP/1.1 " + status), answer


def test_the_host_of_a_request_target() -> None:
    headers = [(b"accept", b"*/*"), (b"host", b"localhost")]
    target_host(headers, b"/metrics")
    assert headers == [(b"accept", b"*/*"), (b"host", b"localhost")]
    target_host(headers, b"http://[::1]:8080/x?a=1")
    assert headers == [(b"accept", b"*/*"), (b"host", b"[::1]:8080")]
    no_host: list[tuple[bytes, bytes]] = []
    target_host(no_host, b"*")
    assert no_host == []
    target_host(no_host, b"http://Evil.Example/")
    assert no_host == [(b"host", b"Evil.Example")]
    for bad in (b"http:///metrics", b"evil.example:443"):
        with pytest.raises(ValueError, match="target"):
            target_host([], bad)
    with pytest.raises(ValueError, match="more than one Host"):
        target_host([(b"host", b"localhost"), (b"host", b"localhost")], b"/")
    for target in (b"/metrics", b"*", b"http://localhost/"):
        with pytest.raises(ValueError, match=r"HTTP/1\.1 request without a Host header"):
            target_host([], target, http_version="1.1")
        target_host([], target, http_version="1.0")
    target_host([(b"host", b"localhost")], b"/", http_version="1.1")


# -- the [api] keys --------------------------------------------------------------------


def test_max_connections_and_allowed_hosts_are_read_from_router_toml(tmp_path: Path) -> None:
    default = config_from_toml(tmp_path, "[api]\n").api
    assert default is not None
    assert default.max_connections == DEFAULT_MAX_CONNECTIONS
    assert default.allowed_hosts == ()
    read = config_from_toml(
        tmp_path,
        '[api]\nmax_connections = 64\nallowed_hosts = ["PBX.Example.", "10.0.0.5", "[fd00::1]"]\n',
    ).api
    assert read is not None
    assert read.max_connections == 64
    assert read.allowed_hosts == ("pbx.example", "10.0.0.5", "[fd00::1]")
    with pytest.raises(ConfigError, match=r"\[api\] max_connections"):
        config_from_toml(tmp_path, "[api]\nmax_connections = 0\n")
    for bad in ("http://pbx.example", "pbx.example:8089", "*.example", "a b"):
        with pytest.raises(ConfigError, match=r"\[api\] allowed_hosts: expected host names"):
            config_from_toml(tmp_path, f'[api]\nallowed_hosts = ["{bad}"]\n')
