"""A lean HTTP/1.1 keep-alive client for AJAM, for when every millisecond counts.

Why not only httpx: in the route benchmark (docs/performance.md) httpx took
about two thirds of the router's CPU and most of its latency on top of
Asterisk: each request walks its auth, redirect, cookie and event layers and
anyio's stream wrappers. AJAM needs none of that. It needs a POST with a form
body, one cookie, keep-alive connections that Asterisk closes when idle, and
a Content-Length answer. This module does exactly that, so the AJAM client
defaults to it (``[asterisk] http_client = "native"``) and keeps httpx for
HTTP Digest (``router.ami.httpx_transport``).

Like the AMI layer, the framing is sans-I/O (:func:`build_request`,
:class:`ResponseParser`, tested with bytes); :class:`ConnectionPool` is the
thin asyncio part, one implementation of the client's
:class:`~router.ami.transport.Transport` seam. The response types and errors
here are that seam's vocabulary.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from router import eager
from router.ami.numbers import ascii_hex, ascii_int

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_INTERIM",
    "AuthChallengeError",
    "ConnectFailedError",
    "ConnectionPool",
    "HTTPError",
    "HTTPProtocolError",
    "HTTPRequest",
    "HTTPResponse",
    "Headers",
    "ResponseParser",
    "StaleConnectionError",
    "UnfinishedAnswerError",
    "build_request",
]

#: Largest response head we read; Asterisk's are a few hundred bytes.
MAX_HEAD = 64 * 1024
#: Largest body by default (``[asterisk] max_response_bytes``); the AMI layer's own bound.
MAX_BODY = 32 * 1024 * 1024
#: Longest chunk-size line (hex digits plus extensions) we wait for.
_MAX_CHUNK_LINE = 1024
#: Interim (1xx) responses skipped before the final one; a server sends one, if any.
MAX_INTERIM = 8

#: The HTTP versions we read: HTTP/1.0 and HTTP/1.1 (HTTP/1.x in general).
_VERSION = re.compile(r"HTTP/1\.[0-9]", re.ASCII)
#: A header name (RFC 9110 ``token``): no blank, no colon, no control character.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
#: What a header value may not hold once the head is cut into lines: a bare
#: CR or LF, which another parser may read as the end of the line. (A NUL is
#: left to whoever reads the value: the session cookie is checked whole.)
_BAD_VALUE = re.compile("[\r\n]")
_BLANK = " \t"


class HTTPError(ConnectionError):
    """The server's answer is not HTTP we understand (or it broke mid-answer)."""


class HTTPProtocolError(HTTPError):
    """Bytes that are not an HTTP response we accept: malformed or over a bound.

    The only error :class:`ResponseParser` raises for bad input; the AJAM
    client maps it onto :class:`~router.errors.AMIProtocolError`.
    """


class AuthChallengeError(HTTPError):
    """The server asks for authentication this client does not implement
    (a Digest ``algorithm`` or ``qop`` it does not know): no retry will help.

    The AJAM client maps it onto :class:`~router.errors.AMIAuthenticationError`;
    a challenge that is malformed, rather than unsupported, is an
    :class:`HTTPProtocolError`.
    """


class ConnectFailedError(HTTPError):
    """No connection to the server could be opened (refused, unresolvable name).

    For transports whose library says so in its own terms (httpx's
    ``ConnectError``); the native pool lets the ``OSError`` through.
    """


class UnfinishedAnswerError(TimeoutError):
    """The request's time ran out after its answer had begun: something
    answers HTTP there, and did not finish (it trickles its answer, or holds
    the rest back). A ``TimeoutError``, as a request that got no byte."""


class StaleConnectionError(HTTPError):
    """A pooled keep-alive connection was closed by the server before answering.

    Nothing reached Asterisk's action handler, so a caller may retry once on a
    fresh connection when repeating is safe.
    """


class Headers:
    """Response headers, looked up case-insensitively (``Set-Cookie``, ``set-cookie``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items = [(k.lower(), v) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``: for headers that come once."""
        key = name.lower()
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (``Set-Cookie`` comes once per cookie)."""
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def tokens(self, name: str) -> list[str]:
        """A list-valued header (``Connection``, ``Transfer-Encoding``) as its
        lower-cased tokens, over every line it comes on, empty ones left out."""
        return [
            token
            for value in self.get_all(name)
            for part in value.split(",")
            if (token := part.strip(" \t").lower())
        ]


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One request as the AJAM client means it; each transport frames it its own way."""

    method: str
    #: The request target: the URL's path (``/asterisk/rawman``), no host.
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """First value of a header, looked up case-insensitively."""
        key = name.lower()
        return next((v for k, v in self.headers if k.lower() == key), None)


@dataclass(slots=True)
class HTTPResponse:
    """Shaped like the parts of ``httpx.Response`` the AJAM client reads."""

    status_code: int
    headers: Headers
    content: bytes = b""
    keep_alive: bool = True


#: What would end a header line early (or a C string in Asterisk): refused.
_LINE_BREAK = re.compile("[\r\n\0]")


def build_request(
    method: str, target: str, host: str, body: bytes, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The request's bytes; header values with line breaks are refused."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers:
        if _LINE_BREAK.search(name) is not None or _LINE_BREAK.search(value) is not None:
            raise ValueError(f"header {name!r} contains a line break or NUL")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ResponseParser:
    """Incremental parser of one response: feed bytes until it returns the response.

    Every framing is bounded: the head (status line and headers) by
    ``max_head``, the body by ``max_body`` whether it is announced by
    ``Content-Length``, chunked (the chunk-size lines and trailers count
    against ``max_head``) or read until the peer closes. Each byte is scanned
    once for the end of a head or of the trailers, however the reads split
    them. Interim (1xx) responses are skipped, at most :data:`MAX_INTERIM`.
    A framing that is ambiguous (``Transfer-Encoding`` with ``Content-Length``,
    two different lengths, a transfer coding other than ``chunked``) is
    refused, as RFC 9112 section 6.3 asks, not guessed at. Bytes after the
    response (nobody asked for them) make it ``keep_alive=False``: its
    connection would read them as the next request's answer. Anything
    malformed or too big raises :class:`HTTPProtocolError`; a peer that closes
    mid-answer :class:`HTTPError`. Nothing else escapes.
    """

    def __init__(
        self, *, max_body: int = MAX_BODY, max_head: int = MAX_HEAD, tls: bool = False
    ) -> None:
        #: The request went over TLS (https://): a manager's banner then came
        #: from its TLS port, which takes tls://, not tcp://.
        self._tls = tls
        self._buffer = bytearray()
        #: Bytes at the start of the buffer already searched for the end of a
        #: head (or of the trailers): the next search starts 3 before them.
        self._scanned = 0
        self._head: HTTPResponse | None = None
        self._length: int | None = None
        self._chunked = False
        #: The last chunk was read: the trailer section (usually empty) follows.
        self._trailers = False
        self._max_body = max_body
        self._max_head = max_head
        self._body = bytearray()
        #: Bytes of chunk-size lines and trailers seen so far (bounded by max_head).
        self._framing = 0
        #: Interim (1xx) responses skipped so far.
        self._interim = 0
        self._received = False
        #: Bytes that came after the response (0 when it ended the data).
        self.surplus = 0

    @property
    def started(self) -> bool:
        """Any byte of an answer arrived (a 1xx too)."""
        return self._received

    def feed(self, data: bytes) -> HTTPResponse | None:
        if data:
            self._received = True
        self._buffer += data
        while self._head is None:
            end = self._buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0 or end > self._max_head:
                if len(self._buffer) > self._max_head:
                    raise HTTPProtocolError(f"response head over {self._max_head} bytes")
                self._scanned = len(self._buffer)
                return None
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self._scanned = 0
            self._parse_head(head)  # an interim response leaves _head None: the next one
        if self._chunked:
            return self._feed_chunked()
        if self._length is None:
            if len(self._buffer) > self._max_body:
                raise HTTPProtocolError(
                    f"response body is too large: over {self._max_body} bytes (read until close; "
                    "[asterisk] max_response_bytes)"
                )
            return None  # read to EOF: finish() completes it
        if len(self._buffer) >= self._length:
            return self._complete(bytes(self._buffer[: self._length]), self._length)
        return None

    def finish(self) -> HTTPResponse:
        """The peer closed the connection: complete a read-to-EOF body, or fail."""
        if self._head is not None and self._length is None and not self._chunked:
            self._head.content = bytes(self._buffer)
            self._head.keep_alive = False
            return self._head
        if not self._received:
            # Not a word back: "in the middle of the response" sent an
            # administrator who had put http:// on a TLS port looking for a
            # broken answer. Such a port closes on a plain request.
            hint = (
                ""
                if self._tls
                else ": a TLS port closes on a plain request (http.conf's tlsbindaddr "
                "port takes https://, manager.conf's tls://)"
            )
            raise HTTPError(f"connection closed with no answer{hint}")
        raise HTTPError("connection closed in the middle of the response")

    def _complete(self, content: bytes, used: int) -> HTTPResponse:
        """The response is whole; ``used`` bytes of the buffer were its last."""
        head = self._head
        assert head is not None
        head.content = content
        self.surplus = len(self._buffer) - used
        if self.surplus:
            # Nobody asked for them: on a reused connection they would be
            # taken for the next request's answer, and every later one's.
            head.keep_alive = False
        self._buffer.clear()
        return head

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        code = ascii_int(status[1]) if len(status) >= 2 and len(status[1]) == 3 else None
        if code is None or _VERSION.fullmatch(status[0]) is None:
            hint = ""
            if lines[0].startswith("Asterisk Call Manager/"):
                hint = (
                    ": this is the manager's own TLS port (manager.conf tlsbindaddr), "
                    "which takes a tls://HOST:PORT url"
                    if self._tls
                    else ": this is the manager's own TCP port, which takes a tcp://HOST:PORT url"
                )
            raise HTTPProtocolError(f"not an HTTP response: {lines[0][:80]!r}{hint}")
        items: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                # obs-fold: a user agent reads it as a space (RFC 9112 section 5.2),
                # never as a header line of its own.
                if not items:
                    raise HTTPProtocolError(f"malformed header line {line[:80]!r}")
                name, value = items[-1]
                items[-1] = (name, f"{value} {line.strip(_BLANK)}")
                continue
            name, sep, value = line.partition(":")
            if not sep or _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(value):
                # A blank before the colon too: one parser reads "Content-Length "
                # as the length, another as an unknown header (RFC 9112 section 5.1).
                raise HTTPProtocolError(f"malformed header line {line[:80]!r}")
            items.append((name, value.strip(_BLANK)))
        if 100 <= code < 200:
            if code == 101:
                raise HTTPProtocolError("HTTP 101 Switching Protocols: no upgrade was asked for")
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise HTTPProtocolError(f"more than {MAX_INTERIM} interim (1xx) responses")
            return  # e.g. 100 Continue: the final response follows
        headers = Headers(items)
        keep_alive = "close" not in headers.tokens("connection") and status[0] != "HTTP/1.0"
        self._head = HTTPResponse(code, headers, b"", keep_alive)
        if code in (204, 304):
            self._length = 0  # never a body, whatever the headers say (RFC 9112 section 6.3)
            return
        lengths = headers.get_all("content-length")
        if headers.get_all("transfer-encoding"):
            if lengths:
                raise HTTPProtocolError(
                    "response has both Transfer-Encoding and Content-Length: "
                    "its end is ambiguous (RFC 9112 section 6.3)"
                )
            codings = headers.tokens("transfer-encoding")
            if codings != ["chunked"]:
                raise HTTPProtocolError(
                    f"unsupported Transfer-Encoding {', '.join(codings)[:80]!r}: only chunked"
                )
            self._chunked = True
            return
        if lengths:
            values = {part.strip(_BLANK) for text in lengths for part in text.split(",")}
            if len(values) != 1:
                raise HTTPProtocolError(
                    f"conflicting Content-Length values {', '.join(sorted(values))[:80]!r}"
                )
            (text,) = values
            length = ascii_int(text)
            if length is None:
                raise HTTPProtocolError(f"bad Content-Length {text[:40]!r}")
            if length > self._max_body:
                raise HTTPProtocolError(
                    f"response body of {length} bytes is too large "
                    f"(limit {self._max_body}, [asterisk] max_response_bytes)"
                )
            self._length = length

    def _take_framing(self, size: int) -> None:
        self._framing += size
        if self._framing > self._max_head:
            raise HTTPProtocolError(f"chunk-size lines and trailers over {self._max_head} bytes")

    def _feed_chunked(self) -> HTTPResponse | None:
        buf = self._buffer
        while not self._trailers:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_CHUNK_LINE:
                    raise HTTPProtocolError("chunk-size line too long")
                return None
            if end > _MAX_CHUNK_LINE:
                raise HTTPProtocolError("chunk-size line too long")
            size_text = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
            size = ascii_hex(size_text.decode("latin-1"))
            if size is None:
                raise HTTPProtocolError(f"bad chunk size {size_text[:20]!r}")
            if len(self._body) + size > self._max_body:
                raise HTTPProtocolError(
                    f"chunked response body is too large: over {self._max_body} bytes "
                    "([asterisk] max_response_bytes)"
                )
            if size == 0:
                self._take_framing(end + 2)
                del buf[: end + 2]
                self._trailers = True
                self._scanned = 0
                break
            if len(buf) < end + 2 + size + 2:
                return None
            if bytes(buf[end + 2 + size : end + 4 + size]) != b"\r\n":
                raise HTTPProtocolError("chunk not followed by CRLF")
            self._take_framing(end + 4)
            self._body += buf[end + 2 : end + 2 + size]
            del buf[: end + 2 + size + 2]
        # Trailers (usually none) end with an empty line; bounded like the head.
        if buf[:2] == b"\r\n":
            used = 2
        else:
            tail = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if tail < 0:
                if self._framing + len(buf) > self._max_head:
                    raise HTTPProtocolError(f"chunked trailers over {self._max_head} bytes")
                self._scanned = len(buf)
                return None
            used = tail + 4
        self._take_framing(used)
        return self._complete(bytes(self._body), used)


#: Unread bytes a connection buffers before it stops reading from the socket.
_READ_HIGH_WATER = 256 * 1024


class _Connection(asyncio.Protocol):
    """One pooled socket, read only while a request waits on it.

    Bytes that arrive while the connection is idle answer no request: read
    later, they would be taken for the next request's answer, and every
    later request would read the one before's. Such a connection is closed
    at once, never reused.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        #: A request is out on it (from its first write to its whole answer).
        self.busy = True
        #: The peer sent its end, or the connection is gone (``error`` says why).
        self.eof = False
        self.lost = False
        self.error: Exception | None = None
        self.idle_since = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, by create_connection's contract.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Nobody's answer (a second response, a late one): poisoned.
            self.abort()
            return
        self._buffer += data
        if len(self._buffer) >= _READ_HIGH_WATER and not self._paused:
            self._paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the pool's side ---------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Open, not at its end, and nothing unread (checked before each reuse)."""
        return (
            not self.eof
            and not self.lost
            and not self._buffer
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.lost:
            raise ConnectionResetError("connection is closed")
        self.transport.write(data)

    async def read(self) -> bytes:
        """What arrived since the last read; ``b""`` at the end of the stream."""
        while not self._buffer:
            if self.lost and self.error is not None:
                raise self.error
            if self.eof or self.lost:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self.transport is not None and not self.lost:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping whatever is buffered either way."""
        self._buffer.clear()
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool:
    """Keep-alive connections to one host; one request per connection at a time.

    A connection goes back to the pool only when its answer was the last of
    what it had read, and the answer keeps it alive; one on which anything
    arrives while it is idle is closed then and there. So a request never
    reads an answer that was not to it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 20,
        keepalive_expiry: float = 10.0,
        connect_timeout: float = 3.0,
        max_body: int = MAX_BODY,
        max_head: int = MAX_HEAD,
        host_header: str | None = None,
    ) -> None:
        self.host = host
        #: The ``Host`` header :meth:`exchange` sends (the URL's netloc).
        self.host_header = host_header or f"{host}:{port}"
        self._max_body = max_body
        self._max_head = max_head
        self.port = port
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive_expiry = keepalive_expiry
        self._connect_timeout = connect_timeout
        self._closed = False

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        """The :class:`~router.ami.transport.Transport` seam: frame and send one request."""
        return await self.request(
            build_request(
                request.method, request.target, self.host_header, request.body, request.headers
            ),
            timeout=timeout,
        )

    async def request(self, request: bytes, *, timeout: float | None) -> HTTPResponse:
        """Send one request; raise :class:`StaleConnectionError` if a reused connection
        died before answering, :class:`HTTPError`/``OSError`` on other failures and
        ``TimeoutError`` when ``timeout`` passes.

        ``timeout`` bounds the whole request: the wait for a free connection
        slot, connecting, sending and the answer.
        """
        if self._closed:
            raise HTTPError("connection pool is closed")
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        if self._slots.locked():
            # Every connection is busy: the wait for one is part of the request's time.
            await eager.hand_off()
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()  # free: taken without a wait
        try:
            return await self._request_in_slot(request, deadline)
        finally:
            self._slots.release()

    async def _request_in_slot(self, request: bytes, deadline: float | None) -> HTTPResponse:
        # On an idle connection the request is written at once, in the
        # caller's step: a Redirect decided in the loop turn its request
        # arrived in (router.eager) leaves in that turn, as over TCP,
        # not a turn later behind the callbacks already queued. The wait
        # for the answer runs under asyncio.timeout, in the caller's task.
        conn = self._idle_connection()
        reused = conn is not None
        parser = ResponseParser(
            max_body=self._max_body, max_head=self._max_head, tls=self._ssl is not None
        )
        try:
            if conn is not None:
                conn.write(request)
            await eager.hand_off()
            async with asyncio.timeout_at(deadline):
                if conn is None:
                    conn = await self._connect()
                    conn.write(request)
                response = await self._exchange(conn, reused, parser)
        except BaseException as exc:
            # Written and not answered (cancelled, timed out, broken): the
            # connection's next bytes would be that answer, so it is not reused.
            if conn is not None:
                conn.abort()
            if isinstance(exc, TimeoutError) and parser.started:
                raise UnfinishedAnswerError("its answer began and did not end") from exc
            raise
        if response.keep_alive and not self._closed and conn.reusable:
            conn.busy = False  # from now on, any byte that arrives poisons it
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def _idle_connection(self) -> _Connection | None:
        """The newest idle connection still open, fresh and with nothing unread, or None."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self._keepalive_expiry and conn.reusable:
                conn.busy = True
                return conn
            conn.abort()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
            )
        return conn

    @staticmethod
    async def _exchange(conn: _Connection, reused: bool, parser: ResponseParser) -> HTTPResponse:
        """The answer to the request already written on ``conn``."""
        try:
            while True:
                data = await conn.read()
                if not data:
                    if reused and not parser.started:
                        raise StaleConnectionError("server closed the idle connection")
                    return parser.finish()
                response = parser.feed(data)
                if response is not None:
                    return response
        except (ConnectionResetError, BrokenPipeError) as exc:
            if reused and not parser.started:
                raise StaleConnectionError(str(exc) or type(exc).__name__) from exc
            raise

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
