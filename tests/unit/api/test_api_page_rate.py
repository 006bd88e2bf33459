"""The live page's requests counted against the token that signed it in
(:mod:`router.api.page_rate`), and the 429s the listener answers before the
app counted in ``callrouter_api_rate_limited_total`` (issue 16).

The unit tests drive :class:`PageRate` with a clock of their own; the others
sign in and load the page over real sockets against :class:`ApiServer`
(uvicorn with :mod:`router.api.protocol`), as a browser does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from router.api.app import build_app
from router.api.auth import Authenticator, RateLimiter
from router.api.context import ApiContext
from router.api.page_rate import PageRate, page_path
from router.api.server import ApiServer
from router.api.settings import ApiSettings, TokenSettings
from router.metrics import API_RATE_LIMITS, Metrics
from router.testing import StubEngine


def token(name: str, *, rate: float = 1.0, burst: int = 4) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=hashlib.sha256(f"cr_{name}".encode()).digest(),
        allow=("ui:read", "calls:read"),
        extensions=("*",),
        rate=rate,
        burst=burst,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def page_rate(clock: Clock, *tokens: TokenSettings) -> PageRate:
    """A PageRate whose cookies are ``callrouter_ui=<token name>.<session>``."""
    by_name = {t.name: t for t in tokens}
    authenticator = Authenticator(ApiSettings(tokens=by_name), RateLimiter(clock))

    def sessions(cookie: bytes) -> TokenSettings | None:
        value = cookie.partition(b"callrouter_ui=")[2]
        return by_name.get(value.partition(b".")[0].decode())

    return PageRate(authenticator, sessions)


def served(rate: PageRate, cookies: list[bytes], target: bytes = b"/ui/static/app.js") -> int:
    """How many of one request from each of ``cookies`` the page's rate serves."""
    results = [rate.wait(b"GET", target, cookie) for cookie in cookies]
    assert all(found is not None for found, _ in results)
    return sum(wait == 0.0 for _, wait in results)


def test_sessions_of_one_token_together_get_no_more_than_the_tokens_rate() -> None:
    """Counted by its session (anonymous_rate each), a holder of the token
    signed in S times and got S times that rate on the page's paths; every
    session of one token now spends the token's one bucket (issue 16)."""
    clock = Clock()
    ops, desk = token("ops", rate=2.0, burst=4), token("desk", rate=2.0, burst=4)
    rate = page_rate(clock, ops, desk)
    sessions = [b"callrouter_ui=ops.%d" % n for n in range(50)]
    assert served(rate, sessions) == 4  # the token's burst, not 50 sessions' 200
    assert served(rate, sessions) == 0
    clock.now += 1.0
    assert served(rate, sessions) == 2  # then the token's rate, not 50 times it
    # Another token's sessions keep their own whole bucket.
    assert served(rate, [b"callrouter_ui=desk.%d" % n for n in range(50)]) == 4
    # What is refused says how long to wait for the token's rate.
    assert rate.wait(b"GET", b"/ui/", sessions[7]) == (ops, 0.5)
    # The token's API requests spend the same bucket: one token, one rate.
    assert rate.tokens.over_rate(b"Bearer cr_ops") == (ops, 0.5)


def test_the_requests_the_app_takes_are_checked_not_taken_twice() -> None:
    """The page's stream and its explain take from the token's bucket in the
    app (router.api.ui require): the listener only checks them, so one
    request spends one; past the rate it refuses them before the app."""
    clock = Clock()
    ops = token("ops", rate=1.0, burst=2)
    rate = page_rate(clock, ops)
    cookie = b"lang=ru; callrouter_ui=ops.1"
    for method, target in (
        (b"GET", b"/ui/stream"),
        (b"HEAD", b"/ui/stream"),
        (b"POST", b"/ui/explain"),
    ):
        assert [rate.wait(method, target, cookie) for _ in range(5)] == [(ops, 0.0)] * 5
    assert served(rate, [cookie] * 3, b"/ui/session") == 2  # taken: the app takes none
    assert rate.wait(b"GET", b"/ui/stream", cookie) == (ops, 1.0)
    # Another method on those paths is the app's 405, which takes nothing: taken here.
    clock.now += 2.0
    assert served(rate, [cookie] * 3, b"/ui/explain") == 2


@pytest.mark.parametrize(
    "target",
    [b"/healthz", b"/metrics", b"/api/v1/calls", b"/ui/login", b"/ui/%6cogin", b"/ui", b"/x/ui/"],
)
def test_a_session_cookie_off_the_live_pages_paths_takes_nothing_of_its_token(
    target: bytes,
) -> None:
    """hreview49b: a valid session cookie sent with a request that is no page's
    (a health check, the metrics, an API request refused, the sign-in, however
    spelt) is counted by its address, as any request without a token: none
    of it is the page's, nor spends its token's rate."""
    clock = Clock()
    ops = token("ops", rate=1.0, burst=2)
    rate = page_rate(clock, ops)
    assert page_path(target) is None
    for _ in range(5):
        assert rate.wait(b"GET", target, b"callrouter_ui=ops.1") == (None, 0.0)
        assert rate.wait(b"GET", target, None, ops) == (None, 0.0)
    assert served(rate, [b"callrouter_ui=ops.1"] * 3, b"/ui/%73ession") == 2  # its burst whole


def test_a_bogus_cookie_is_no_pages_and_a_bearer_token_is_counted_like_a_session() -> None:
    """A cookie the page's check refuses is counted by its address (None
    here). A valid token in an Authorization header on the page's paths (the
    page never sends one) was counted nowhere; it spends its token's rate."""
    clock = Clock()
    ops, desk = token("ops", rate=1.0, burst=2), token("desk", rate=1.0, burst=2)
    rate = page_rate(clock, ops, desk)
    for cookie in (None, b"", b"callrouter_ui=forged.1", b"lang=ru"):
        assert rate.wait(b"GET", b"/ui/", cookie) == (None, 0.0)
    assert [rate.wait(b"GET", b"/ui/static/app.js", None, desk)[1] for _ in range(3)] == [
        0.0,
        0.0,
        1.0,
    ]
    # Bearer only, on the stream: the app takes nothing for it (its 401), so taken here.
    assert rate.wait(b"GET", b"/ui/stream", None, ops) == (ops, 0.0)
    assert rate.wait(b"GET", b"/ui/stream", None, ops) == (ops, 0.0)
    assert rate.wait(b"GET", b"/ui/stream", None, ops) == (ops, 1.0)
    # Both: the session's token, by which the app serves the page.
    clock.now += 2.0
    assert rate.wait(b"GET", b"/ui/", b"callrouter_ui=desk.1", ops) == (desk, 0.0)


# -- over real sockets ---------------------------------------------------------

Serve = Callable[..., Any]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """``await serve(metrics, **settings)`` -> the server: torn down after the test."""
    started: list[tuple[ApiServer, StubEngine]] = []

    async def start(metrics: Metrics, **changes: Any) -> ApiServer:
        settings = ApiSettings(port=0, **changes)
        stub = StubEngine(state_dir=tmp_path)
        server = ApiServer(build_app(ApiContext(stub, settings, metrics=metrics)), settings)
        await server.start()
        started.append((server, stub))
        return server

    yield start
    for server, stub in started:
        await server.stop()
        await stub.aclose()


async def exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """The heads of the answers to ``requests``, one after another on one
    connection (each sent once the answer before it is in)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        heads = []
        for request in requests:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            await reader.readexactly(int(length[1]) if length else 0)
            heads.append(head)
        return heads
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def sign_in(name: str) -> bytes:
    body = b'{"token": "cr_%s"}' % name.encode()
    return (
        b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Callrouter-UI: 1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def get(path: bytes, cookie: bytes = b"", extra: bytes = b"") -> bytes:
    cookie_line = b"Cookie: callrouter_ui=%s\r\n" % cookie if cookie else b""
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s\r\n" % (path, cookie_line, extra)


def limited(metrics: Metrics, limit: str) -> float:
    value = metrics.registry.get_sample_value("callrouter_api_rate_limited_total", {"limit": limit})
    assert value is not None, limit
    return value


async def test_sessions_of_one_token_get_its_rate_together_over_the_listener(
    serve: Serve,
) -> None:
    """A holder of one token signs in S = 12 times and loads the page's files
    with every session at once: together they get the token's burst (6),
    not twelve sessions' anonymous burst (12 x 40), from loopback too (a
    reverse proxy's clients, never counted per address). A second token's
    sessions keep theirs, and each refusal is counted in the metric."""
    ops, desk = token("ops", rate=0.001, burst=18), token("desk", rate=0.001, burst=18)
    metrics = Metrics(event_names=())
    server = await serve(metrics, tokens=MappingProxyType({"ops": ops, "desk": desk}))
    cookies: dict[str, list[bytes]] = {}
    for name in ("ops", "desk"):
        heads = await exchange(server.port, [sign_in(name)] * 12)  # 12 of the burst's 18
        assert [status(h) for h in heads] == [200] * 12
        cookies[name] = [
            re.search(rb"(?im)^set-cookie: callrouter_ui=([^;]+);", h)[1]  # type: ignore[index]
            for h in heads
        ]
        assert len(set(cookies[name])) == 12
    load = [b"/ui/", b"/ui/static/app.js", b"/ui/static/style.css", b"/ui/session"]
    statuses = []
    for cookie in cookies["ops"]:
        statuses += [status(h) for h in await exchange(server.port, [get(p, cookie) for p in load])]
    assert statuses.count(200) == 6  # what the sign-ins left of the token's burst
    assert statuses.count(429) == 12 * len(load) - 6
    assert limited(metrics, "page") == 12 * len(load) - 6
    # Refused before the app: no audit line, no callrouter_api_requests_total.
    assert (
        metrics.registry.get_sample_value(
            "callrouter_api_requests_total", {"operation": "ui:static", "status": "429"}
        )
        is None
    )
    # The other token's sessions: their own bucket, whole.
    heads = await exchange(server.port, [get(b"/ui/session", c) for c in cookies["desk"][:6]])
    assert [status(h) for h in heads] == [200] * 6
    # The token's own API requests spend the same bucket: "ops" has none left.
    heads = await exchange(
        server.port, [get(b"/api/v1/calls", extra=b"Authorization: Bearer cr_ops\r\n")]
    )
    assert status(heads[0]) == 429
    assert limited(metrics, "token") == 1


async def test_every_429_before_the_app_is_counted_by_its_limit_only(serve: Serve) -> None:
    """A token's 429 answered before the app wrote no audit line and counted
    in no metric, only a warning a minute; so did the anonymous rate's. Each
    is counted in callrouter_api_rate_limited_total by a label from a fixed
    set: never a token's name, never an address."""
    ops = token("ops", rate=0.001, burst=2)
    metrics = Metrics(event_names=())
    for limit in API_RATE_LIMITS:
        assert limited(metrics, limit) == 0.0  # each series there from the start
    server = await serve(
        metrics,
        tokens=MappingProxyType({"ops": ops}),
        anonymous_rate=0.001,
        anonymous_burst=2,
        anonymous_loopback=True,
    )
    bearer = get(b"/api/v1/calls", extra=b"Authorization: Bearer cr_ops\r\n")
    heads = await exchange(server.port, [bearer] * 5)
    assert [status(h) for h in heads] == [200, 200, 429, 429, 429]
    assert limited(metrics, "token") == 3
    # The app's own 429s are not the listener's: none here (it refused them all).
    assert (
        metrics.registry.get_sample_value(
            "callrouter_api_requests_total", {"operation": "calls:read", "status": "429"}
        )
        is None
    )
    heads = await exchange(server.port, [get(b"/healthz")] * 3)
    assert [status(h) for h in heads] == [200, 200, 429]
    assert limited(metrics, "address") == 1
    exposition = metrics.registry.collect()
    labels = {
        sample.labels.get("limit")
        for family in exposition
        if family.name == "callrouter_api_rate_limited"
        for sample in family.samples
    }
    assert labels == set(API_RATE_LIMITS)  # no "ops", no "127.0.0.1"


async def test_a_page_request_the_app_refuses_still_spends_its_tokens_rate(
    serve: Serve,
) -> None:
    """The listener leaves the explain's rate to the app, and the app refused
    one without the page's header (403) before taking it: such requests, with
    a valid session, were counted nowhere. The app takes first, so they are
    held to the token's rate like the rest (issue 16)."""
    ops = token("ops", rate=0.001, burst=4)
    metrics = Metrics(event_names=())
    server = await serve(metrics, tokens=MappingProxyType({"ops": ops}))
    [head] = await exchange(server.port, [sign_in("ops")])  # one of the four
    cookie = re.search(rb"(?im)^set-cookie: callrouter_ui=([^;]+);", head)[1]  # type: ignore[index]
    body = b"{}"
    explain = (
        b"POST /ui/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: callrouter_ui=%s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (cookie, len(body), body)
    )
    heads = await exchange(server.port, [explain] * 6)
    assert [status(h) for h in heads] == [403, 403, 403, 429, 429, 429]
    assert limited(metrics, "page") == 3  # refused before the app, the app's taken none


async def test_a_request_for_a_host_the_listener_refuses_is_counted_by_its_address(
    serve: Serve,
) -> None:
    """hrev50b: the listener only checks the rate of a bearer request to
    ``/api/v1`` and of the page's stream (the app takes them), but a ``Host``
    the listener does not go by is answered ``421`` before the app takes
    anything: such requests, with a valid token or session, were counted
    nowhere, however many. Refused before any token is accepted, they are
    counted by their address as every other refusal."""
    ops = token("ops", rate=0.001, burst=100)
    metrics = Metrics(event_names=())
    server = await serve(
        metrics,
        tokens=MappingProxyType({"ops": ops}),
        anonymous_rate=0.001,
        anonymous_burst=5,
        anonymous_loopback=True,
    )
    [head] = await exchange(server.port, [sign_in("ops")])  # one of the address's five
    cookie = re.search(rb"(?im)^set-cookie: callrouter_ui=([^;]+);", head)[1]  # type: ignore[index]
    elsewhere = b"Host: rebound.example\r\n"
    stream = b"GET /ui/stream HTTP/1.1\r\n%sCookie: callrouter_ui=%s\r\n\r\n" % (elsewhere, cookie)
    bearer = b"GET /api/v1/calls HTTP/1.1\r\n%sAuthorization: Bearer cr_ops\r\n\r\n" % elsewhere
    heads = await exchange(server.port, [stream, stream, bearer, bearer, stream])
    assert [status(h) for h in heads] == [421, 421, 421, 421, 429]
    assert limited(metrics, "address") == 1
    # Their token's own bucket is untouched: its requests for this host are served.
    heads = await exchange(
        server.port, [get(b"/api/v1/calls", extra=b"Authorization: Bearer cr_ops\r\n")]
    )
    assert status(heads[0]) == 200
