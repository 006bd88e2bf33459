"""The event feed over HTTP: ``GET /api/v1/events`` (long-poll) and ``/events/stream`` (SSE).

1C's ``HTTPСоединение`` long-polls: it asks with the last cursor it saw and
gets an answer at once when something happened after it, else after
``timeout`` seconds with no events and the cursor to ask with next. Browsers
use Server-Sent Events, which resume by themselves with ``Last-Event-ID``.

A token sees only the events of the extensions its patterns cover (events of
no extension only with ``"*"``); ``extension=`` narrows that further, and
nothing it gets (a cursor, when an answer comes) tells of other events
(:mod:`router.api.feed`). A client
behind the retention window gets what is left with ``gap: true`` (SSE: an
event ``gap``) rather than a 410: it keeps its loop, and knows to refresh;
so does one from before a stretch callrouter saw nothing in (a restart, the
AMI stream lost), whatever its scope.

Bounds: ``timeout`` at most :data:`MAX_TIMEOUT`, ``limit`` at most
:data:`MAX_LIMIT`, and ``[api] events_waiters`` open reads per token (429
past it), so a client loop gone wild cannot hold unbounded memory or tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from router.api.auth import Audit, Token, authorize
from router.api.context import ApiContext
from router.api.errors import (
    ApiError,
    bad_parameter,
    problem_responses,
    refuse_repeated_query,
    refuse_unknown_query,
    single_header,
)
from router.api.feed import EventFeed, FeedEvent, Page, Visible
from router.api.intake import MAX_CARD_TEXT
from router.callerid import MAX_NUMBER, MAX_TEXT
from router.logsafe import escape_controls
from router.tasks import cancel_and_wait

__all__ = [
    "EXTENSION_PATTERN",
    "FEED_KINDS",
    "HEARTBEAT",
    "MAX_CURSOR",
    "MAX_LIMIT",
    "MAX_STREAM",
    "MAX_TIMEOUT",
    "OPENAPI",
    "SEND_DEADLINE",
    "routes",
    "sse_frame",
]

log = logging.getLogger("router.api")

#: The highest cursor taken (a signed 64-bit integer): past it, 400. Cursors
#: are wall-clock microseconds (about 1.8e15); one ahead of the feed is a gap.
MAX_CURSOR = (1 << 63) - 1
#: Longest a long-poll may wait; under common proxies' 60 s idle timeout.
MAX_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 25.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: Seconds between SSE comments when nothing happens (proxies close idle streams).
HEARTBEAT = 15.0
#: The reconnection delay (ms) an SSE client is told to use.
RETRY_MS = 3000
#: Longest an SSE stream stays open (``timeout``): then the browser reconnects.
MAX_STREAM = 3600.0
#: Seconds one chunk of a stream may wait for the client to take it; then the
#: stream ends and its slot is free (a little over the server's write deadline).
SEND_DEADLINE = 12.0


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise bad_parameter(name, f"a number {low:g}..{high:g}", text)
    return value


def _cursor(text: str | None, name: str, where: str = "query parameter") -> int | None:
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_CURSOR):
        raise bad_parameter(
            name,
            f"a cursor (an integer 0..{MAX_CURSOR} from an earlier answer)",
            text,
            where=where,
        )
    return int(text)


_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
#: What ``extension=`` may be, as the OpenAPI document declares it.
EXTENSION_PATTERN = r"[0-9A-Za-z#+_.-]{1,40}"
_EXTENSION = re.compile(EXTENSION_PATTERN)


def _visible(token: Token, narrow: str | None) -> Visible:
    everything = "*" in token.extensions

    def visible(extension: str | None) -> bool:
        if extension is None:
            return everything and narrow is None
        return (narrow is None or extension == narrow) and token.sees(extension)

    return visible


def sse_frame(event: FeedEvent) -> str:
    """One event as an SSE message: ``id`` is the cursor, ``event`` the kind."""
    data = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.cursor}\nevent: {event.kind}\ndata: {data}\n\n"


def _gap_frame(cursor: int) -> str:
    data = json.dumps({"gap": True, "cursor": cursor})
    return f"event: gap\ndata: {data}\n\n"


class _Waiters:
    """Open reads per token: a bound, released however the read ends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def enter(self, token: Token) -> None:
        count = self.open.get(token.name, 0)
        if count >= self.limit:
            raise ApiError(
                429,
                f"token {token.name!r} already has {count} open event reads "
                f"([api] events_waiters = {self.limit}); close one or reuse the loop",
                headers={"Retry-After": "1"},
            )
        self.open[token.name] = count + 1

    def leave(self, token: Token) -> None:
        count = self.open.get(token.name, 1) - 1
        if count > 0:
            self.open[token.name] = count
        else:
            self.open.pop(token.name, None)


def routes(ctx: ApiContext) -> list[BaseRoute]:
    waiters = _Waiters(ctx.settings.events_waiters)

    def feed_or_503() -> EventFeed:
        if ctx.feed is None:
            raise ApiError(503, "the event feed is not running", headers={"Retry-After": "5"})
        return ctx.feed

    async def scope(request: Request, known: tuple[str, ...]) -> tuple[Token, Visible]:
        # Before the extension is read: the permission check must see the one
        # extension any proxy in front saw. A token is checked first, as for
        # every other 400 here.
        try:
            refuse_repeated_query((name for name, _ in request.query_params.multi_items()), known)
        except ApiError:
            await authorize(request, "events:read")
            raise
        narrow = request.query_params.get("extension") or None
        if narrow is not None and _EXTENSION.fullmatch(narrow) is None:
            # As the document declares it: no control character, no other
            # text goes on to the permission check and the audit line.
            await authorize(request, "events:read")
            raise bad_parameter(
                "extension", "an extension (1 to 40 letters, digits and #+_.-)", narrow
            )
        token = await authorize(request, "events:read", narrow)
        refuse_unknown_query(request.query_params.keys(), known)
        return token, _visible(token, narrow)

    async def poll(request: Request) -> Response:
        token, visible = await scope(request, ("cursor", "extension", "timeout", "limit"))
        feed = feed_or_503()
        after = _cursor(request.query_params.get("cursor"), "cursor")
        timeout = _number(request, "timeout", DEFAULT_TIMEOUT, 0, MAX_TIMEOUT)
        limit = int(_number(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT))
        if request.method == "HEAD":
            timeout = 0.0  # headers only: nothing to wait for
        waiters.enter(token)
        try:
            start = feed.position() if after is None else after
            page = await _unless_gone(
                request.receive, feed.wait(start, visible, timeout=timeout, limit=limit)
            )
        finally:
            waiters.leave(token)
        return JSONResponse(
            {
                "events": [event.to_dict() for event in page.events],
                "cursor": page.cursor,
                "gap": page.gap,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def stream(request: Request) -> Response:
        token, visible = await scope(request, ("cursor", "extension", "timeout"))
        feed = feed_or_503()
        resume = _cursor(
            single_header(request, "last-event-id", "Last-Event-ID"), "Last-Event-ID", "header"
        )
        if resume is None:
            resume = _cursor(request.query_params.get("cursor"), "cursor")
        lifetime = _number(request, "timeout", MAX_STREAM, 0, MAX_STREAM)
        waiters.enter(token)
        if request.method == "HEAD":
            # The stream's headers, and the end: a stream whose body goes
            # nowhere wrote nothing, so it held its place (and the
            # connection) for its whole timeout, up to an hour.
            waiters.leave(token)
            head = Response(media_type="text/event-stream", headers=_STREAM_HEADERS)
            del head.headers["content-length"]  # the stream's length is not 0
            return head
        start = feed.position() if resume is None else resume
        return _Stream(
            _frames(feed, start, visible, lifetime),
            release=lambda: waiters.leave(token),
            media_type="text/event-stream",
            headers=_STREAM_HEADERS,
        )

    return [
        Route("/api/v1/events", poll, methods=["GET"], name="events"),
        Route("/api/v1/events/stream", stream, methods=["GET"], name="events_stream"),
    ]


async def _gone(receive: Receive) -> None:
    """Return when the client has disconnected (its body, if any, is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(receive: Receive, wait: Awaitable[Page]) -> Page:
    """``wait``'s page, or :class:`ClientDisconnect` as soon as the client leaves.

    A long poll sends nothing until it answers, so nothing else notices a
    client gone: its ``events_waiters`` place stayed taken for its whole
    ``timeout``, and the client, back at once, was refused 429 meanwhile.
    """
    waiting = asyncio.ensure_future(wait)
    gone = asyncio.ensure_future(_gone(receive))
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            # The feed forgets its waiter before the place is given back.
            await cancel_and_wait(waiting)
    if waiting.done() and not waiting.cancelled():
        return waiting.result()
    raise ClientDisconnect


class _Stream(StreamingResponse):
    """An SSE response that gives its waiter slot back however it ends: sent
    out, cut by the client, cancelled before its body ever started, or
    dropped because the client took nothing for :data:`SEND_DEADLINE` seconds.

    Without that deadline a client that never reads would hold its slot (and
    the stream's ``timeout``) for ever: ``send`` waits while the connection's
    buffer is full. The server's own write deadline
    (:data:`router.api.protocol.WRITE_DEADLINE`, started when the buffer
    filled, so earlier) normally cuts the connection first and the stream ends
    as for a client gone; this one holds under any ASGI server.
    """

    def __init__(
        self, content: AsyncIterator[str], *, release: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._release: Callable[[], None] | None = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stalled = False

        async def send_in_time(message: Message) -> None:
            nonlocal stalled
            try:
                async with asyncio.timeout(SEND_DEADLINE):
                    await send(message)
            except TimeoutError:
                stalled = True
                raise

        try:
            await super().__call__(scope, receive, send_in_time)
        except TimeoutError:
            if not stalled:
                raise
            audit = scope.get("state", {}).get("audit")
            log.info(
                "API: dropped the stream %s of token %s: the client took nothing for %g s",
                escape_controls(str(scope.get("path"))[:96]),
                escape_controls(audit.token if isinstance(audit, Audit) else "-"),
                SEND_DEADLINE,
            )
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


async def _frames(
    feed: EventFeed, after: int, visible: Visible, lifetime: float
) -> AsyncIterator[str]:
    """The SSE body, for ``lifetime`` seconds: then the browser reconnects with
    Last-Event-ID (and the token is checked again). ``0``: what is there now."""
    deadline = asyncio.get_running_loop().time() + lifetime
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        left = deadline - asyncio.get_running_loop().time()
        page = await feed.wait(
            after, visible, timeout=max(0.0, min(HEARTBEAT, left)), limit=DEFAULT_LIMIT
        )
        if page.gap:
            # The cursor the gap is after: the reader's, or for one ahead of
            # the feed the clock's it is moved back to (never echoed).
            yield _gap_frame(min(after, page.cursor))
        if page.events:
            yield "".join(sse_frame(event) for event in page.events)
        elif page.cursor != after:
            # On to the clock (never to another's event): an id alone moves
            # Last-Event-ID on, so a reconnect does not scan them again.
            yield f": heartbeat\nid: {page.cursor}\n\n"
        elif left > 0:
            yield ": heartbeat\n\n"
        after = page.cursor
        if (left <= 0 and not page.events) or feed.ending:
            return  # callrouter is stopping: the client comes back with Last-Event-ID


#: Every ``kind`` the feed publishes (router/api/intake.py, calls.py, forwarding.py),
#: in docs/api.md's order; a test holds the page's table to it.
FEED_KINDS: tuple[str, ...] = (
    "ringing",
    "answered",
    "missed",
    "transferred",
    "hangup",
    "presence",
    "device",
    "dnd",
    "forwarding",
    "click_to_call",
)

#: A feed card's value (a lookup's answer, 1C's ``v1/responsible``): any JSON,
#: each text (and key) at most ``MAX_CARD_TEXT`` characters (router.api.intake).
_CARD_SCHEMA: dict[str, Any] = {
    "type": ["object", "array", "string", "number", "boolean", "null"],
    "maxLength": MAX_CARD_TEXT,
    "propertyNames": {"maxLength": MAX_CARD_TEXT},
    "additionalProperties": {"$ref": "#/components/schemas/FeedCard"},
    "items": {"$ref": "#/components/schemas/FeedCard"},
}

#: The fields of ``data`` whose length is bounded, whichever kind has them: the
#: caller writes its number and name, cut where they enter (router.callerid).
_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "caller": {"type": "string", "maxLength": MAX_NUMBER},
        "caller_name": {"type": "string", "maxLength": MAX_TEXT},
        "did": {"type": "string", "maxLength": MAX_NUMBER},
        "target": {"type": "string", "maxLength": MAX_NUMBER},
        "card": {"$ref": "#/components/schemas/FeedCard"},
    },
}

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["cursor", "kind", "extension", "call_id", "ts", "data"],
    "properties": {
        "cursor": {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_CURSOR},
        "kind": {
            "type": "string",
            "enum": list(FEED_KINDS),
            "description": "what happened; `data` depends on it (docs/api.md, the event feed)",
        },
        "extension": {"type": ["string", "null"]},
        "call_id": {"type": ["string", "null"], "description": "the call's Linkedid"},
        "ts": {"type": "number", "description": "Asterisk's timestamp (Unix seconds)"},
        "data": _DATA_SCHEMA,
    },
}

_COMMON_PARAMS: list[dict[str, Any]] = [
    {
        "name": "cursor",
        "in": "query",
        "description": "the cursor of the last answer; absent: only new events; 0: all kept",
        "schema": {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_CURSOR},
    },
    {
        "name": "extension",
        "in": "query",
        "description": "only this extension's events (within the token's)",
        "schema": {"type": "string", "pattern": f"^{EXTENSION_PATTERN}$"},
    },
]

#: This module's part of ``/api/v1/openapi.json``.
OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/v1/events": {
            "get": {
                "operationId": "pollEvents",
                "summary": "Long-poll the event feed from a cursor (events:read)",
                "parameters": [
                    *_COMMON_PARAMS,
                    {
                        "name": "timeout",
                        "in": "query",
                        "description": "seconds to wait when nothing is new",
                        "schema": {"type": "number", "minimum": 0, "maximum": MAX_TIMEOUT},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "Events after the cursor (maybe none), and the next cursor",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EventPage"}
                            }
                        },
                    },
                    **problem_responses(400, 403, 503),
                },
            }
        },
        "/api/v1/events/stream": {
            "get": {
                "operationId": "streamEvents",
                "summary": "The feed as Server-Sent Events, Last-Event-ID resumes (events:read)",
                "parameters": [
                    *_COMMON_PARAMS,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "the id of the last event seen: a cursor",
                        "schema": {"type": "string", "pattern": "^[0-9]{0,19}$"},
                    },
                    {
                        "name": "timeout",
                        "in": "query",
                        "description": "seconds the stream stays open (then reconnect); "
                        "0: the events there now",
                        "schema": {"type": "number", "minimum": 0, "maximum": MAX_STREAM},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "An endless text/event-stream: id = cursor, event = kind",
                        "content": {
                            "text/event-stream": {
                                # One SSE message (schemathesis checks each one):
                                # data is a FeedEvent as JSON text.
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "id": {"type": "string"},
                                        "event": {"type": "string"},
                                        "data": {"type": "string"},
                                        "retry": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    **problem_responses(400, 403, 503),
                },
            }
        },
    },
    "components": {
        "schemas": {
            "FeedEvent": _EVENT_SCHEMA,
            "FeedCard": _CARD_SCHEMA,
            "EventPage": {
                "type": "object",
                "required": ["events", "cursor", "gap"],
                "properties": {
                    "events": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/FeedEvent"},
                    },
                    "cursor": {
                        "type": "integer",
                        "format": "int64",
                        "minimum": 0,
                        "maximum": MAX_CURSOR,
                    },
                    "gap": {
                        "type": "boolean",
                        "description": "events after your cursor were dropped (retention), "
                        "callrouter saw nothing for a while after it (a restart, the AMI "
                        "stream lost), or your cursor is ahead of the feed: refresh, go on "
                        "from cursor",
                    },
                },
            },
        }
    },
}
