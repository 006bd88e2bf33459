"""GET /api/v1/events (long-poll) and /api/v1/events/stream (SSE), over the ASGI app."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from router.api import app as app_module
from router.api import events as events_module
from router.api.app import build_app, openapi_document
from router.api.context import ApiContext
from router.api.feed import EventFeed
from router.api.settings import ApiSettings, TokenSettings
from router.testing import StubEngine

TOKENS = {
    "t101": (("events:read",), ("101",)),
    "all": (("events:read",), ("*",)),
    "mgr1x": (("events:read",), ("1*",)),
    "nofeed": (("calls:read",), ("*",)),
}


def _token(name: str, allow: tuple[str, ...], extensions: tuple[str, ...]) -> TokenSettings:
    digest = hashlib.sha256(f"secret-{name}".encode()).digest()
    return TokenSettings(name, digest, allow, extensions, rate=1000.0, burst=1000)


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a test-side wait, bounded)."""
    async with asyncio.timeout(10):
        for _ in iter(condition, True):
            await asyncio.sleep(0.001)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


def make_app(tmp_path: Path, feed: EventFeed | None, **settings: Any):  # type: ignore[no-untyped-def]
    tokens = {name: _token(name, *grants) for name, grants in TOKENS.items()}
    api = ApiSettings(tokens=MappingProxyType(tokens), **settings)
    return build_app(ApiContext(engine=StubEngine(state_dir=tmp_path), settings=api, feed=feed))


@pytest.fixture(autouse=True)
def only_the_event_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app as build_app makes it, with this part's endpoints only: these
    tests stay about the feed whatever the other endpoint modules do."""
    monkeypatch.setattr(app_module, "ENDPOINT_MODULES", ("events",))


@pytest.fixture
def feed() -> EventFeed:
    return EventFeed()


@pytest.fixture
async def client(tmp_path: Path, feed: EventFeed) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(tmp_path, feed))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def test_long_poll_answers_at_once_with_events_after_the_cursor(
    client: httpx.AsyncClient, feed: EventFeed
) -> None:
    first = feed.publish("ringing", "101", {"card": {"client": "X"}}, call_id="c1", ts=1.5)
    second = feed.publish("answered", "101", {}, call_id="c1")
    response = await client.get("/api/v1/events?cursor=0&timeout=30", headers=auth("all"))
    assert response.status_code == 200
    body = response.json()
    assert [e["cursor"] for e in body["events"]] == [first, second]
    assert body["events"][0] == {
        "cursor": first,
        "kind": "ringing",
        "extension": "101",
        "call_id": "c1",
        "ts": 1.5,
        "data": {"card": {"client": "X"}},
    }
    assert body["cursor"] >= second  # the last event, or the clock past it
    assert body["gap"] is False
    third = feed.publish("hangup", "101", {})
    again = await client.get(f"/api/v1/events?cursor={body['cursor']}", headers=auth("all"))
    assert [e["cursor"] for e in again.json()["events"]] == [third]


async def test_long_poll_waits_for_an_event_and_returns_it(
    client: httpx.AsyncClient, feed: EventFeed
) -> None:
    start = feed.publish("ringing", "101", {})
    request = asyncio.create_task(
        client.get(f"/api/v1/events?cursor={start}&timeout=30", headers=auth("t101"))
    )
    await eventually(lambda: feed.waiting == 1)
    cursor = feed.publish("ringing", "101", {"n": 2})
    response = await asyncio.wait_for(request, 10)
    assert [e["cursor"] for e in response.json()["events"]] == [cursor]


async def test_long_poll_without_news_answers_after_the_timeout_with_no_events(
    client: httpx.AsyncClient, feed: EventFeed
) -> None:
    last = feed.publish("ringing", "101", {})
    response = await client.get("/api/v1/events?timeout=0.05", headers=auth("t101"))
    body = response.json()
    assert body == {"events": [], "cursor": body["cursor"], "gap": False}
    assert body["cursor"] > last
    later = feed.publish("ringing", "101", {})
    again = await client.get(f"/api/v1/events?cursor={body['cursor']}", headers=auth("t101"))
    assert [e["cursor"] for e in again.json()["events"]] == [later]


async def test_a_token_scoped_to_101_never_sees_102(
    client: httpx.AsyncClient, feed: EventFeed
) -> None:
    feed.publish("ringing", "102", {})
    mine = feed.publish("ringing", "101", {})
    feed.publish("ringing", "102", {})
    feed.publish("hangup", None, {})
    body = (await client.get("/api/v1/events?cursor=0&timeout=0", headers=auth("t101"))).json()
    assert [(e["extension"], e["cursor"]) for e in body["events"]] == [("101", mine)]
    refused = await client.get(
        "/api/v1/events?cursor=0&timeout=0&extension=102", headers=auth("t101")
    )
    assert refused.status_code == 403
    assert "102" in refused.json()["detail"]
    everything = (await client.get("/api/v1/events?cursor=0&timeout=0", headers=auth("all"))).json()
    assert [e["extension"] for e in everything["events"]] == ["102", "101", "102", None]


async def test_extension_narrows_a_prefix_token(client: httpx.AsyncClient, feed: EventFeed) -> None:
    feed.publish("ringing", "101", {})
    feed.publish("ringing", "102", {})
    feed.publish("ringing", "201", {})
    body = (
        await client.get("/api/v1/events?cursor=0&timeout=0&extension=102", headers=auth("mgr1x"))
    ).json()
    assert [e["extension"] for e in body["events"]] == ["102"]
    body = (await client.get("/api/v1/events?cursor=0&timeout=0", headers=auth("mgr1x"))).json()
    assert [e["extension"] for e in body["events"]] == ["101", "102"]


async def test_permission_and_token_are_required(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/events?timeout=0", headers=auth("nofeed"))
    assert missing.status_code == 403
    assert missing.json()["missing_permission"] == "events:read"
    assert (await client.get("/api/v1/events?timeout=0")).status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=-1", "cursor"),
        ("cursor=abc", "cursor"),
        ("timeout=61", "timeout"),
        ("timeout=nan", "timeout"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    response = await client.get(f"/api/v1/events?{query}", headers=auth("all"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("path", "name", "hint"),
    [
        ("/api/v1/events?curser=0&timeout=0", "curser", "cursor"),
        ("/api/v1/events?timeout=0&limt=5", "limt", "limit"),
        ("/api/v1/events/stream?timeout=0&extention=101", "extention", "extension"),
        ("/api/v1/events/stream?timeout=0&limit=5", "limit", None),  # the stream has none
        ("/api/v1/events?timeout=0&" + "x" * 500 + "=1", "x" * 40, None),
    ],
)
async def test_an_unknown_query_parameter_is_400_with_a_did_you_mean(
    client: httpx.AsyncClient, path: str, name: str, hint: str | None
) -> None:
    """A misspelt ``curser=0`` read only new events (the default): a 1C module
    resuming from its cursor never learnt why it missed the ones in between."""
    response = await client.get(path, headers=auth("all"))
    assert response.status_code == 400
    problem = response.json()
    assert problem["field"] == name
    assert problem.get("did_you_mean") == hint
    assert f"unknown query parameter {name!r}" in problem["detail"]
    assert (await client.get(path)).status_code == 401  # the token first, as for the rest


async def test_resume_by_cursor_gets_every_event_exactly_once_across_disconnects(
    client: httpx.AsyncClient, feed: EventFeed
) -> None:
    published: list[int] = []
    received: list[int] = []
    cursor = 0
    for round_ in range(6):
        published += [feed.publish("ringing", "101", {"r": round_}) for _ in range(round_ + 1)]
        # A client that dropped its connection mid-wait comes back with its cursor.
        dropped = asyncio.create_task(
            client.get(f"/api/v1/events?cursor={published[-1]}&timeout=30", headers=auth("all"))
        )
        await asyncio.sleep(0)
        dropped.cancel()
        body = (
            await client.get(
                f"/api/v1/events?cursor={cursor}&timeout=0&limit=2", headers=auth("t101")
            )
        ).json()
        received += [e["cursor"] for e in body["events"]]
        cursor = body["cursor"]
    while True:
        body = (
            await client.get(f"/api/v1/events?cursor={cursor}&timeout=0", headers=auth("t101"))
        ).json()
        if not body["events"]:
            break
        received += [e["cursor"] for e in body["events"]]
        cursor = body["cursor"]
    assert received == published


async def test_a_cursor_behind_retention_gets_gap_true(tmp_path: Path) -> None:
    feed = EventFeed(max_events=2)
    first = feed.publish("ringing", "101", {})
    for _ in range(3):
        feed.publish("ringing", "101", {})
    transport = httpx.ASGITransport(app=make_app(tmp_path, feed))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        body = (
            await client.get(f"/api/v1/events?cursor={first}&timeout=0", headers=auth("all"))
        ).json()
    assert body["gap"] is True
    assert len(body["events"]) == 2


async def test_a_gap_is_told_once_when_nothing_is_kept_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every event after the client's cursor expired: the answer says gap once and
    moves the cursor on; asking again from it is no gap (it was, every poll, and
    the stream sent ``gap`` with every heartbeat, so 1C refreshed for ever)."""
    now = [1_800_000_000.0]
    feed = EventFeed(retention=60, clock=lambda: now[0])
    old = feed.publish("ringing", "101", {})
    feed.publish("hangup", "101", {})
    now[0] += 61
    app = make_app(tmp_path, feed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        first = (
            await client.get(f"/api/v1/events?cursor={old}&timeout=0", headers=auth("all"))
        ).json()
        assert first["gap"] is True
        assert first["cursor"] > old
        again = (
            await client.get(
                f"/api/v1/events?cursor={first['cursor']}&timeout=0", headers=auth("all")
            )
        ).json()
        assert again == {"events": [], "cursor": first["cursor"], "gap": False}

    monkeypatch.setattr(events_module, "HEARTBEAT", 0.02)
    sse = SSEClient(app, "/api/v1/events/stream", {**auth("t101"), "Last-Event-ID": str(old)})
    await sse.until("event: gap")
    await sse.until(": heartbeat\n\n: heartbeat")
    await sse.close()
    assert [f.get("event") for f in sse.frames()].count("gap") == 1
    # The id that follows the gap is where a reconnect resumes: past the gap.
    assert {"id": str(first["cursor"])} in sse.frames()


async def test_a_cursor_ahead_of_the_feed_is_a_gap_not_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cursor=9999999999999999999`` was answered with itself and no gap, for
    ever: a client holding it never got an event. Past int64 it is 400; ahead
    of the feed, a gap at once with the clock's cursor, by poll and by stream."""
    now = [1_800_000_000.0]
    feed = EventFeed(clock=lambda: now[0])
    clock_cursor = int(now[0] * 1_000_000)
    app = make_app(tmp_path, feed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        huge = await client.get(
            "/api/v1/events?cursor=9999999999999999999&timeout=0", headers=auth("all")
        )
        assert huge.status_code == 400
        assert huge.json()["field"] == "cursor"
        for ahead in (clock_cursor + 1, events_module.MAX_CURSOR):
            async with asyncio.timeout(5):
                body = (
                    await client.get(
                        f"/api/v1/events?cursor={ahead}&timeout=30", headers=auth("t101")
                    )
                ).json()
            assert body == {"events": [], "cursor": clock_cursor, "gap": True}
        refused = await client.get(
            "/api/v1/events/stream",
            headers={**auth("t101"), "Last-Event-ID": "9999999999999999999"},
        )
        assert refused.status_code == 400
        assert refused.json()["field"] == "Last-Event-ID"

    monkeypatch.setattr(events_module, "HEARTBEAT", 0.02)
    ahead = str(events_module.MAX_CURSOR)
    sse = SSEClient(app, "/api/v1/events/stream", {**auth("t101"), "Last-Event-ID": ahead})
    await sse.until(": heartbeat\n\n: heartbeat")
    await sse.close()
    assert ahead not in sse.body.decode()
    gaps = [f for f in sse.frames() if f.get("event") == "gap"]
    assert [json.loads(f["data"]) for f in gaps] == [{"gap": True, "cursor": clock_cursor}]
    # A reconnect resumes from the clock's cursor, not the one it came with.
    assert {"id": str(clock_cursor)} in sse.frames()


async def test_open_reads_per_token_are_bounded(tmp_path: Path, feed: EventFeed) -> None:
    transport = httpx.ASGITransport(app=make_app(tmp_path, feed, events_waiters=2))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        waiting = [
            asyncio.create_task(client.get("/api/v1/events?timeout=30", headers=auth("t101")))
            for _ in range(2)
        ]
        await eventually(lambda: feed.waiting == 2)
        refused = await client.get("/api/v1/events?timeout=30", headers=auth("t101"))
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        # Another token has its own slots.
        other = await client.get("/api/v1/events?timeout=0", headers=auth("all"))
        assert other.status_code == 200
        feed.publish("ringing", "101", {})
        assert all(r.status_code == 200 for r in await asyncio.gather(*waiting))
        # The slots came back.
        again = await client.get("/api/v1/events?timeout=0", headers=auth("t101"))
        assert again.status_code == 200


async def test_no_feed_is_503(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=make_app(tmp_path, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/api/v1/events?timeout=0", headers=auth("all"))
    assert response.status_code == 503


# -- Server-Sent Events: driven over raw ASGI (the stream never ends by itself) ----


class SSEClient:
    """One SSE request on the app; ``frames()`` parses what arrived so far."""

    def __init__(self, app: Any, path: str, headers: dict[str, str], method: str = "GET") -> None:
        self.body = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self._disconnect = asyncio.Event()
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5000),
            "server": ("api", 80),
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not hasattr(self, "_sent_request"):
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def until(self, text: str) -> None:
        await eventually(lambda: text.encode() in self.body or self.task.done())

    async def close(self) -> None:
        self._disconnect.set()
        await asyncio.wait_for(self.task, 10)

    def frames(self) -> list[dict[str, str]]:
        out = []
        for block in self.body.decode().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                key, sep, value = line.partition(": ")
                if sep and key:
                    fields[key] = value
            if fields:
                out.append(fields)
        return out


async def test_sse_frames_events_with_the_cursor_as_id_and_resumes_from_last_event_id(
    tmp_path: Path, feed: EventFeed
) -> None:
    app = make_app(tmp_path, feed)
    first = feed.publish("ringing", "101", {"card": {"name": "Ромашка"}})
    sse = SSEClient(app, "/api/v1/events/stream?cursor=0", auth("t101"))
    await sse.until(f"id: {first}")
    assert sse.status == 200
    assert sse.headers["content-type"].startswith("text/event-stream")
    second = feed.publish("answered", "101", {})
    feed.publish("ringing", "102", {})  # never for this token
    await sse.until(f"id: {second}")
    await sse.close()
    frames = [f for f in sse.frames() if "data" in f]
    assert [(f["id"], f["event"]) for f in frames] == [
        (str(first), "ringing"),
        (str(second), "answered"),
    ]
    assert json.loads(frames[0]["data"])["data"]["card"] == {"name": "Ромашка"}
    assert sse.frames()[0] == {"retry": "3000"}
    assert feed.waiting == 0

    third = feed.publish("hangup", "101", {})
    again = SSEClient(
        app, "/api/v1/events/stream?cursor=0", {**auth("t101"), "Last-Event-ID": str(second)}
    )
    await again.until(f"id: {third}")
    await again.close()
    assert [f["id"] for f in again.frames() if "data" in f] == [str(third)]


async def test_sse_heartbeat_moves_the_id_past_invisible_events(
    tmp_path: Path, feed: EventFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On to the clock, never to the invisible event's cursor (it says when it was)."""
    monkeypatch.setattr(events_module, "HEARTBEAT", 0.02)
    app = make_app(tmp_path, feed)
    sse = SSEClient(app, "/api/v1/events/stream", auth("t101"))
    await sse.until("retry")
    hidden = feed.publish("ringing", "102", {})
    await eventually(lambda: any(int(f.get("id", 0)) > hidden for f in sse.frames()))
    await sse.close()
    ids = [f["id"] for f in sse.frames() if "id" in f]
    assert str(hidden) not in ids
    assert not any("data" in f for f in sse.frames())
    assert ": heartbeat" in sse.body.decode()
    mine = feed.publish("ringing", "101", {})
    again = SSEClient(
        app, "/api/v1/events/stream?timeout=0", {**auth("t101"), "Last-Event-ID": ids[-1]}
    )
    await again.until(f"id: {mine}")
    await again.close()


async def test_sse_streams_count_against_the_token_and_give_the_slot_back(
    tmp_path: Path, feed: EventFeed
) -> None:
    app = make_app(tmp_path, feed, events_waiters=1)
    sse = SSEClient(app, "/api/v1/events/stream", auth("t101"))
    await sse.until("retry")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        refused = await client.get("/api/v1/events?timeout=0", headers=auth("t101"))
        assert refused.status_code == 429
        await sse.close()
        allowed = await client.get("/api/v1/events?timeout=0", headers=auth("t101"))
        assert allowed.status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/events/stream", "/api/v1/events?timeout=60"])
async def test_a_head_answers_headers_and_ends_at_once(
    tmp_path: Path, feed: EventFeed, path: str
) -> None:
    """HEAD of the stream wrote nothing, so it held its events_waiters place
    (and the connection) for the stream's timeout, up to an hour."""
    app = make_app(tmp_path, feed, events_waiters=1)
    head = SSEClient(app, path, auth("t101"), method="HEAD")
    done, _ = await asyncio.wait({head.task}, timeout=5)
    assert done, "the HEAD is still open"
    assert head.status == 200
    if "stream" in path:  # (the server drops a HEAD's body: the poll's page goes nowhere)
        assert head.body == b""
        assert head.headers["content-type"].startswith("text/event-stream")
    assert head.headers["cache-control"] == "no-store"
    assert feed.waiting == 0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        after = await client.get("/api/v1/events?timeout=0", headers=auth("t101"))
    assert after.status_code == 200
    await head.close()


async def test_sse_bad_last_event_id_is_400(tmp_path: Path, feed: EventFeed) -> None:
    transport = httpx.ASGITransport(app=make_app(tmp_path, feed))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get(
            "/api/v1/events/stream", headers={**auth("t101"), "Last-Event-ID": "x1"}
        )
    assert response.status_code == 400
    assert response.json()["field"] == "Last-Event-ID"


def test_the_openapi_document_describes_both_endpoints() -> None:
    document = openapi_document([events_module])
    assert document["paths"]["/api/v1/events"]["get"]["operationId"] == "pollEvents"
    assert "text/event-stream" in str(document["paths"]["/api/v1/events/stream"])
    assert "EventPage" in document["components"]["schemas"]


async def test_the_listener_answers_without_waiting_for_the_clients_ack(tmp_path: Path) -> None:
    """TCP_NODELAY on the listening socket (accepted ones inherit it): without it
    every long-poll answer's body waited 40 ms for the delayed ACK of its headers."""
    import socket

    from router.api.server import ApiServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ApiSettings(port=port)
    server = ApiServer(make_app(tmp_path, EventFeed()), settings)
    await server.start()
    try:
        listener = server._socket
        assert listener is not None
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 401")
        writer.close()
    finally:
        await server.stop()


async def test_an_sse_stream_ends_after_its_timeout_and_gives_the_slot_back(
    tmp_path: Path, feed: EventFeed
) -> None:
    """Streams are bounded (the browser reconnects with Last-Event-ID, and the token
    is checked again); timeout=0 sends what is there now and ends."""
    first = feed.publish("ringing", "101", {})
    transport = httpx.ASGITransport(app=make_app(tmp_path, feed, events_waiters=1))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for _ in range(3):  # one slot: each ended stream gave it back
            response = await asyncio.wait_for(
                client.get("/api/v1/events/stream?cursor=0&timeout=0", headers=auth("t101")), 10
            )
            assert response.status_code == 200
            assert f"id: {first}\nevent: ringing\n" in response.text
        short = await asyncio.wait_for(
            client.get("/api/v1/events/stream?timeout=0.05", headers=auth("t101")), 10
        )
        assert short.text.startswith("retry: 3000\n\n")
        bad = await client.get("/api/v1/events/stream?timeout=3601", headers=auth("t101"))
        assert bad.status_code == 400
        assert bad.json()["field"] == "timeout"


async def test_a_scoped_long_poll_answers_at_its_timeout_whatever_others_do(
    client: httpx.AsyncClient, feed: EventFeed
) -> None:
    """Others' events neither end the wait nor show in the cursor it answers with."""
    start = feed.position()
    loop = asyncio.get_running_loop()
    began = loop.time()
    request = asyncio.create_task(
        client.get(f"/api/v1/events?cursor={start}&timeout=0.3", headers=auth("t101"))
    )
    await eventually(lambda: feed.waiting == 1)
    hidden = [feed.publish("ringing", "102", {}) for _ in range(20)]
    hidden.append(feed.publish("hangup", None, {}))
    body = (await asyncio.wait_for(request, 10)).json()
    assert loop.time() - began >= 0.3
    assert body["events"] == []
    assert body["gap"] is False
    assert body["cursor"] not in hidden
    assert body["cursor"] > hidden[-1]  # the clock at the answer


async def test_a_stream_open_when_the_server_stops_ends_cleanly(
    tmp_path: Path, feed: EventFeed, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM with a stream open (seen with callrouter run): after the server's
    grace the stream was cancelled mid-body and uvicorn logged the cancellation as
    'Exception in ASGI application' with a traceback. The stream now ends its body,
    and the client reconnects with Last-Event-ID as after any end."""
    import socket

    from router.api.server import ApiServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ApiServer(make_app(tmp_path, feed), ApiSettings(port=port))
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer secret-t101\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"retry: 3000"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        with caplog.at_level(logging.INFO):
            await server.stop()
        rest = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert rest.endswith(b"0\r\n\r\n")  # the chunked body's end: no cut connection
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("query", "headers", "detail"),
    [
        (
            "cursor=abc",
            {},
            "query parameter 'cursor': expected a cursor (an integer "
            f"0..{events_module.MAX_CURSOR} from an earlier answer), got 'abc'",
        ),
        ("timeout=99", {}, "query parameter 'timeout': expected a number 0..60, got '99'"),
        ("limit=0", {}, "query parameter 'limit': expected a number 1..1000, got '0'"),
    ],
)
async def test_a_bad_query_parameter_is_worded_one_way(
    client: httpx.AsyncClient, query: str, headers: dict[str, str], detail: str
) -> None:
    """``cursor: expected ...`` and ``query parameter 'timeout': expected ...`` were
    two shapes for one mistake (issue 16): every query parameter's error is now
    ``query parameter 'NAME': expected ..., got '...'``, as readyz's and a
    recording link's are (their tests), with the name in ``field``."""
    response = await client.get(f"/api/v1/events?{query}", headers={**auth("t101"), **headers})
    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert response.json()["field"] == query.partition("=")[0]


async def test_a_bad_last_event_id_is_worded_as_a_header(tmp_path: Path, feed: EventFeed) -> None:
    transport = httpx.ASGITransport(app=make_app(tmp_path, feed))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get(
            "/api/v1/events/stream", headers={**auth("t101"), "Last-Event-ID": "x1"}
        )
    assert response.json()["detail"] == (
        "header 'Last-Event-ID': expected a cursor (an integer "
        f"0..{events_module.MAX_CURSOR} from an earlier answer), got 'x1'"
    )


@pytest.mark.parametrize(
    "extension", ["%0d%0a", "1" * 41, "101%26102", "%EF%BC%91%EF%BC%90%EF%BC%91", "101%00", "*"]
)
@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/events/stream"])
async def test_an_extension_the_document_does_not_allow_is_400(
    client: httpx.AsyncClient, path: str, extension: str
) -> None:
    """The OpenAPI document declares ``extension`` as 1 to 40 letters, digits
    and ``#+_.-``; the server took anything a request line holds (issue 16):
    ``extension=%0d%0a`` answered 200 with no events, and the text went on to
    the permission check and the audit line. Now 400 naming it, as the
    document says, before any event is read."""
    response = await client.get(f"{path}?timeout=0&extension={extension}", headers=auth("all"))
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "extension"
    pattern = openapi_document()["paths"]["/api/v1/events"]["get"]["parameters"][1]["schema"]
    assert pattern == {"type": "string", "pattern": "^[0-9A-Za-z#+_.-]{1,40}$"}
    fine = await client.get(f"{path}?timeout=0&extension=1-x.2", headers=auth("all"))
    assert fine.status_code == 200


async def test_a_reader_from_before_a_restart_is_told_the_gap_by_poll_and_by_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a 1C panel resumed its cursor after callrouter restarted and got
    the new run's events with gap false, though calls had ended meanwhile. Now a
    cursor from the last run is told the gap once, whatever the token's scope."""
    old = EventFeed.open(tmp_path)
    behind = old.position()
    mine = old.publish("ringing", "101", {})
    await old.aclose()
    feed = EventFeed.open(tmp_path)
    new = feed.publish("hangup", "101", {})
    app = make_app(tmp_path, feed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        body = (
            await client.get(f"/api/v1/events?cursor={behind}&timeout=0", headers=auth("t101"))
        ).json()
        assert [e["cursor"] for e in body["events"]] == [mine, new]
        assert body["gap"] is True
        again = (
            await client.get(
                f"/api/v1/events?cursor={body['cursor']}&timeout=0", headers=auth("t101")
            )
        ).json()
        assert again["gap"] is False
        assert again["events"] == []
    monkeypatch.setattr(events_module, "HEARTBEAT", 0.02)
    sse = SSEClient(app, "/api/v1/events/stream", {**auth("t101"), "Last-Event-ID": str(mine)})
    await sse.until("event: gap")
    await sse.until("event: hangup")
    await sse.until(": heartbeat")  # a page after it: no second gap
    await sse.close()
    assert [f.get("event") for f in sse.frames()].count("gap") == 1
    assert [f["id"] for f in sse.frames() if f.get("event") == "hangup"] == [str(new)]
    await feed.aclose()
