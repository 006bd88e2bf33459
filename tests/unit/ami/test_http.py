"""The lean HTTP/1.1 layer: framing with bytes, the pool against a local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import SupportsIndex
from urllib.parse import parse_qsl

import pytest

from router import eager
from router.ami.client import AJAMClient, ClientSettings
from router.ami.http import (
    MAX_INTERIM,
    ConnectionPool,
    HTTPError,
    HTTPProtocolError,
    ResponseParser,
    StaleConnectionError,
    build_request,
)
from router.errors import AMIConnectionError, AMIProtocolError, AMITimeoutError
from tests.unit.ami.conftest import Handler

ASTERISK_LOGIN = (
    b"HTTP/1.1 200 OK\r\nServer: Asterisk/22.10.1\r\nDate: Mon, 23 Nov 2026 19:08:53 GMT\r\n"
    b"Cache-Control: no-cache, no-store\r\nContent-Length: 68\r\nContent-type: text/plain\r\n"
    b'Set-Cookie: mansession_id="0badcafe"; Version=1; Max-Age=60\r\n'
    b"Pragma: SuppressEvents\r\n\r\n"
    b"Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n"
)


def test_request_bytes() -> None:
    raw = build_request(
        "POST",
        "/asterisk/rawman",
        "127.0.0.1:8088",
        b"Action=Ping",
        [("Cookie", 'mansession_id="0badcafe"')],
    )
    assert raw == (
        b"POST /asterisk/rawman HTTP/1.1\r\nHost: 127.0.0.1:8088\r\n"
        b'Cookie: mansession_id="0badcafe"\r\nContent-Length: 11\r\n\r\n'
        b"Action=Ping"
    )
    with pytest.raises(ValueError, match="line break"):
        build_request("POST", "/", "h", b"", [("X", "a\r\nInjected: 1")])
    for bad in ("a\nb", "a\rb", "a\0b"):
        with pytest.raises(ValueError, match="line break or NUL"):
            build_request("POST", "/", "h", b"", [("X", bad)])
        with pytest.raises(ValueError, match="line break or NUL"):
            build_request("POST", "/", "h", b"", [(bad, "v")])


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_parser_any_chunking(chunk: int) -> None:
    parser = ResponseParser()
    response = None
    for i in range(0, len(ASTERISK_LOGIN), chunk):
        response = parser.feed(ASTERISK_LOGIN[i : i + chunk]) or response
    assert response is not None
    assert response.status_code == 200
    assert response.headers.get("SET-COOKIE", "").startswith('mansession_id="0badcafe"')
    assert response.headers.get("content-type") == "text/plain"
    assert response.content.endswith(b"Authentication accepted\r\n\r\n")
    assert response.keep_alive


def test_parser_chunked_close_and_errors() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nHello\r\n6; ext=1\r\n world\r\n0\r\n\r\n"
    )
    response = ResponseParser().feed(chunked)
    assert response is not None
    assert response.content == b"Hello world"
    eof = ResponseParser()
    assert eof.feed(b"HTTP/1.0 200 OK\r\n\r\nbody until close") is None
    closed = eof.finish()
    assert closed.content == b"body until close"
    assert not closed.keep_alive
    with pytest.raises(HTTPError, match="not an HTTP response"):
        ResponseParser().feed(b"Response: Success\r\n\r\n")
    half = ResponseParser()
    half.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    with pytest.raises(HTTPError, match="closed in the middle"):
        half.finish()
    with pytest.raises(HTTPError, match=r"too large.*\[asterisk\] max_response_bytes"):
        ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    return head + await reader.readexactly(length)


async def requests(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request on a connection, until the client closes it."""
    while True:
        try:
            yield await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


def _settings(port: int) -> ClientSettings:
    return ClientSettings(
        url=f"http://127.0.0.1:{port}/asterisk", username="u", secret="s", request_timeout=2
    )


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def test_pool_reuses_connections(server: Callable[[Handler], Awaitable[int]]) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(answer(b"Response: Success\r\n\r\n"))
            await writer.drain()
        writer.close()

    pool = ConnectionPool("127.0.0.1", await server(handler))
    request = build_request("POST", "/", "x", b"Action=Ping")
    for _ in range(5):
        assert (await pool.request(request, timeout=2)).status_code == 200
    await pool.aclose()
    assert connections == 1


async def test_reused_connection_closed_unanswered_is_stale(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"Response: Success\r\n\r\n"))
        await writer.drain()
        await read_request(reader)  # the next request on this connection...
        writer.close()  # ...is never answered, as when Asterisk's idle timer fires

    pool = ConnectionPool("127.0.0.1", await server(handler))
    request = build_request("POST", "/", "x", b"Action=Ping")
    await pool.request(request, timeout=2)
    with pytest.raises(StaleConnectionError):
        await pool.request(request, timeout=2)
    assert (await pool.request(request, timeout=2)).status_code == 200  # fresh connection
    await pool.aclose()


async def test_connection_the_server_closed_while_idle_is_not_reused(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer(b"Response: Success\r\n\r\n"))
        await writer.drain()
        writer.close()

    pool = ConnectionPool("127.0.0.1", await server(handler))
    request = build_request("POST", "/", "x", b"Action=Ping")
    await pool.request(request, timeout=2)
    await asyncio.sleep(0.05)  # the close has arrived: the pool sees EOF and opens anew
    assert (await pool.request(request, timeout=2)).status_code == 200
    assert connections == 2
    await pool.aclose()


async def test_timeout_and_refused(server: Callable[[Handler], Awaitable[int]]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; ends when the client gives up
        writer.close()

    pool = ConnectionPool("127.0.0.1", await server(silent))
    with pytest.raises(TimeoutError):
        await pool.request(build_request("POST", "/", "x", b""), timeout=0.1)
    await pool.aclose()
    refused = ConnectionPool("127.0.0.1", 9)
    with pytest.raises(ConnectionRefusedError):
        await refused.request(build_request("POST", "/", "x", b""), timeout=2)


async def test_ajam_client_on_native_http(server: Callable[[Handler], Awaitable[int]]) -> None:
    """Login sets the cookie, the next actions send it back, expiry re-logs in,
    a stale pooled connection is retried for Ping but not for Originate."""
    seen: list[bytes] = []
    state = {"expire": False, "drop_originate": True}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for request in requests(reader):
            seen.append(request)
            body = request.split(b"\r\n\r\n", 1)[1]
            if body.startswith(b"Action=Originate") and state["drop_originate"]:
                state["drop_originate"] = False
                break
            if body.startswith(b"Action=Login"):
                reply = b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
            elif state["expire"] and b"0badcafe" in request:
                state["expire"] = False
                reply = b"Response: Error\r\nMessage: Permission denied\r\n\r\n"
            else:
                reply = b"Response: Success\r\nPing: Pong\r\n\r\n"
            writer.write(
                answer(reply, b'Set-Cookie: mansession_id="0badcafe"; Version=1; Max-Age=60\r\n')
            )
            await writer.drain()
        writer.close()

    port = await server(handler)
    settings = _settings(port)
    async with AJAMClient(settings) as client:
        assert isinstance(client.transport, ConnectionPool)
        assert (await client.action("Ping")).response["Ping"] == "Pong"
        assert b'Cookie: mansession_id="0badcafe"' in seen[-1]
        state["expire"] = True
        assert (await client.action("Ping")).ok
        assert client.session_generation == 2
        with pytest.raises(AMIConnectionError):
            await client.action("Originate", {"Channel": "Local/1@x", "Application": "Wait"})
    originates = [r for r in seen if b"Action=Originate" in r]
    assert len(originates) == 1  # never sent twice
    silent_settings = ClientSettings(url="http://127.0.0.1:9/asterisk", username="u", secret="s")
    client = AJAMClient(silent_settings)
    with pytest.raises(AMIConnectionError, match="cannot connect"):
        await client.login()
    await client.aclose()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; ends when the client gives up
        writer.close()

    silent_port = await server(silent)
    client = AJAMClient(
        ClientSettings(
            url=f"http://127.0.0.1:{silent_port}/asterisk",
            username="u",
            secret="s",
            request_timeout=0.2,
        )
    )
    with pytest.raises(AMITimeoutError, match="Login"):
        await client.login()
    await client.aclose()


async def test_a_request_is_written_in_the_callers_step(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    """A Redirect decided in the loop turn its request arrived in (router.eager)
    is written in that turn, on an idle connection: not a loop turn later,
    behind the callbacks already queued (the TCP client does the same)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            extra = b'Set-Cookie: mansession_id="0badcafe"\r\n' if b"Login" in request else b""
            writer.write(answer(b"Response: Success\r\nMessage: ok\r\n\r\n", extra))
            await writer.drain()
        writer.close()

    port = await server(handler)
    settings = _settings(port)
    async with AJAMClient(settings) as client:
        await client.login()
        await client.action("Ping")  # an idle keep-alive connection in the pool
        written: list[bytes] = []
        pool = client.transport
        assert isinstance(pool, ConnectionPool)
        (idle,) = pool._idle
        write = idle.write
        idle.write = lambda data: (written.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
        task, handed_off = eager.start(
            client.send(
                "Redirect", {"Channel": "PJSIP/a-1", "Context": "c", "Exten": "1", "Priority": "1"}
            )
        )
        # Nothing awaited yet: the first step alone wrote it.
        assert len(written) == 1
        assert b"Action=Redirect" in written[0]
        assert task is not None
        assert handed_off
        assert (await task).ok


async def test_a_request_cancelled_after_its_write_closes_its_connection(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    """Cancelled between the write in the caller's step and the wait for the
    answer (the engine stopping): the answer would be the connection's next
    bytes, so the connection is closed, never handed to the next request."""
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                writer.write(answer(b"Response: Success\r\n\r\n"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            # Closed with the answer unread: a reset, or an end of stream.
            writer.close()
            ended.set()

    pool = ConnectionPool("127.0.0.1", await server(handler))
    await pool.request(build_request("POST", "/", "h", b"a"), timeout=2)
    (idle,) = pool._idle
    task, handed_off = eager.start(pool.request(build_request("POST", "/", "h", b"b"), timeout=2))
    assert task is not None
    assert handed_off
    assert pool._idle == []  # taken, and the request written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert idle.is_closing()
    assert pool._idle == []
    await asyncio.wait_for(ended.wait(), 2)  # the server saw it closed
    await pool.aclose()


# -- issue 16: a keep-alive connection never gets out of step -------------------------
#
# An attacker's review found that a reused connection could hand one request
# the answer to another: bytes after a response (a second, unrequested
# response) were kept on the connection and read as the next request's answer,
# ``100 Continue`` was taken for the final answer, and ambiguous framings were
# guessed at. Each test below failed before the fix.


def test_interim_responses_are_skipped_to_the_final_one() -> None:
    final = answer(b"Response: Success\r\n\r\n")
    for interim in (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\nX: 1\r\n\r\n"):
        whole = ResponseParser().feed(interim + interim + final)
        assert whole is not None
        assert (whole.status_code, whole.content) == (200, b"Response: Success\r\n\r\n")
        split = ResponseParser()
        assert split.feed(interim) is None
        assert split.started
        response = split.feed(final)
        assert response is not None
        assert response.status_code == 200
    many = b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM + 1)
    with pytest.raises(HTTPProtocolError, match="interim"):
        ResponseParser().feed(many + final)
    with pytest.raises(HTTPProtocolError, match="101"):
        ResponseParser().feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n" + final)


@pytest.mark.parametrize(
    ("head", "error"),
    [
        # Two lengths: the first used to win silently; RFC 9112 section 6.3 says error.
        (b"Content-Length: 5\r\nContent-Length: 30\r\n", "conflicting Content-Length"),
        (b"Content-Length: 5, 30\r\n", "conflicting Content-Length"),
        # Transfer-Encoding beside Content-Length: used to be framed and reused.
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "both Transfer-Encoding"),
        (
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "both Transfer-Encoding",
        ),
        # Codings other than chunked alone: used to be read until close, undecoded.
        (b"Transfer-Encoding: gzip, chunked\r\n", "unsupported Transfer-Encoding"),
        (b"Transfer-Encoding: identity, chunked\r\n", "unsupported Transfer-Encoding"),
        (b"Transfer-Encoding: chunked, chunked\r\n", "unsupported Transfer-Encoding"),
        # A blank before the colon: one parser's length is another's unknown header.
        (b"Content-Length : 2\r\n", "malformed header line"),
        (b"X-A: a\rContent-Length: 2\r\n", "malformed header line"),
    ],
)
def test_ambiguous_framing_is_refused(head: bytes, error: str) -> None:
    with pytest.raises(HTTPProtocolError, match=error):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n5\r\nHello\r\n0\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match="not an HTTP response"):
        ResponseParser().feed(b"HTTP/1.X 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_the_ami_tcp_port_answering_http_is_named() -> None:
    """http:// to the manager's own port: its banner, then its answer to our
    request's lines, read as an HTTP head; the error now says which url fits."""
    with pytest.raises(HTTPProtocolError) as caught:
        ResponseParser().feed(
            b"Asterisk Call Manager/11.0.0\r\nResponse: Error\r\n"
            b"Message: Missing action in request\r\n\r\n"
        )
    assert str(caught.value) == (
        "not an HTTP response: 'Asterisk Call Manager/11.0.0': this is the manager's own "
        "TCP port, which takes a tcp://HOST:PORT url"
    )


def test_the_ami_tls_port_answering_https_is_named() -> None:
    """https:// to the manager's TLS port: the handshake passes, then its
    banner; the hint said a tcp:// url, which that port does not take."""
    with pytest.raises(HTTPProtocolError) as caught:
        ResponseParser(tls=True).feed(b"Asterisk Call Manager/11.0.0\r\n\r\n")
    assert str(caught.value) == (
        "not an HTTP response: 'Asterisk Call Manager/11.0.0': this is the manager's own "
        "TLS port (manager.conf tlsbindaddr), which takes a tls://HOST:PORT url"
    )


def test_a_close_with_no_answer_names_a_tls_port() -> None:
    """http:// to a TLS port (AJAM's or the manager's): it closes on the
    plain request without a byte; the error said "in the middle of the
    response", of a response that never began."""
    with pytest.raises(HTTPError) as caught:
        ResponseParser().finish()
    assert str(caught.value) == (
        "connection closed with no answer: a TLS port closes on a plain request "
        "(http.conf's tlsbindaddr port takes https://, manager.conf's tls://)"
    )
    with pytest.raises(HTTPError, match=r"^connection closed with no answer$"):
        ResponseParser(tls=True).finish()
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab") is None
    with pytest.raises(HTTPError, match="in the middle of the response"):
        parser.finish()


def test_unambiguous_variants_are_read() -> None:
    same = ResponseParser().feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nhi"
    )
    assert same is not None
    assert (same.content, same.keep_alive) == (b"hi", True)
    chunked = ResponseParser().feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    )
    assert chunked is not None
    assert chunked.content == b"hi"
    # obs-fold continues the header before it (RFC 9112 section 5.2): never a
    # header line of its own, so no Content-Length is smuggled in; read until close.
    folded = ResponseParser()
    assert folded.feed(b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 2\r\n\r\nhi") is None
    response = folded.finish()
    assert response.headers.get("x-a") == "a Content-Length: 2"
    assert response.headers.get("content-length") is None
    assert (response.content, response.keep_alive) == (b"hi", False)


@pytest.mark.parametrize(
    "connection",
    [b"Connection: keep-alive, close\r\n", b"Connection: keep-alive\r\nConnection: Close\r\n"],
)
def test_connection_close_is_a_token_of_a_list(connection: bytes) -> None:
    response = ResponseParser().feed(
        b"HTTP/1.1 200 OK\r\n" + connection + b"Content-Length: 2\r\n\r\nhi"
    )
    assert response is not None
    assert not response.keep_alive


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_have_no_body(status: bytes) -> None:
    response = ResponseParser().feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n")
    assert response is not None
    assert (response.content, response.keep_alive) == (b"", True)


@pytest.mark.parametrize(
    "data",
    [
        answer(b"hi") + b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGARBAGE",
    ],
)
def test_bytes_after_the_response_forbid_reusing_its_connection(data: bytes) -> None:
    parser = ResponseParser()
    response = parser.feed(data)
    assert response is not None
    assert response.content == b"hi"
    assert not response.keep_alive
    assert parser.surplus > 0


class CountingBuffer(bytearray):
    """A parser buffer that counts the bytes its searches look at."""

    looked_at = 0

    def find(  # type: ignore[override]
        self, sub: bytes, start: SupportsIndex | None = None, end: SupportsIndex | None = None
    ) -> int:
        CountingBuffer.looked_at += len(self) - (0 if start is None else int(start))
        return super().find(sub, start, end)


@pytest.mark.parametrize(
    ("prefix", "trickled"),
    [
        (b"", b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 20_000 + b"\r\nContent-Length: 0\r\n\r\n"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            b"X-Trailer: " + b"t" * 20_000 + b"\r\n\r\n",
        ),
    ],
)
def test_a_trickled_head_or_trailer_is_scanned_once(prefix: bytes, trickled: bytes) -> None:
    """One byte per read used to rescan the whole head (or trailers) each time:
    quadratic in the head's size, up to the 64 KiB bound."""
    parser = ResponseParser()
    parser._buffer = CountingBuffer()
    parser.feed(prefix)
    CountingBuffer.looked_at = 0
    response = None
    for i in range(len(trickled)):
        response = parser.feed(trickled[i : i + 1])
    assert response is not None
    assert CountingBuffer.looked_at < 5 * len(trickled)


def _ping_answer(request: bytes, extra: bytes = b"") -> bytes:
    aid = next(
        v for k, v in parse_qsl(request.split(b"\r\n\r\n", 1)[1].decode()) if k == "ActionID"
    )
    cookie = b'Set-Cookie: mansession_id="0badcafe"\r\n'
    return answer(f"Response: Success\r\nActionID: {aid}\r\n".encode() + extra + b"\r\n", cookie)


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a test-side wait, bounded)."""
    async with asyncio.timeout(5):
        for _ in iter(condition, True):
            await asyncio.sleep(0.001)


@pytest.mark.parametrize("late", [True, False])
async def test_an_unrequested_response_is_never_read_as_the_next_answer(
    server: Callable[[Handler], Awaitable[int]], late: bool
) -> None:
    """A second response after a Ping's answer, on the same connection: a while
    later (the connection is idle) or in the same write. It used to be read as
    the next request's answer (a Redirect answered by it), and every later
    request read the one before's."""
    smuggled = b"Response: Success\r\nMessage: smuggled\r\n\r\n"
    sent = asyncio.Event()
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for request in requests(reader):
            reply = _ping_answer(request, b"Ping: Pong\r\n")
            if b"Action=Ping" in request and not sent.is_set():
                if late:
                    writer.write(reply)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(answer(smuggled))
                else:
                    writer.write(reply + answer(smuggled))
                sent.set()
            else:
                writer.write(reply)
            await writer.drain()
        writer.close()

    port = await server(handler)
    settings = _settings(port)
    async with AJAMClient(settings) as client:
        await client.login()
        assert (await client.action("Ping")).response["Ping"] == "Pong"
        await sent.wait()
        pool = client.transport
        assert isinstance(pool, ConnectionPool)
        # Poisoned: closed at once (late), or never put back (same write).
        await _until(lambda: all(conn.is_closing() for conn in pool._idle))
        for name in ("Redirect", "Ping", "Ping"):
            result = await client.action(name, {"Channel": "x"} if name == "Redirect" else None)
            assert result.response.get("Message") != "smuggled"
            assert result.response["Ping"] == "Pong"
    assert connections == 2


async def test_100_continue_is_not_the_answer(server: Callable[[Handler], Awaitable[int]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for request in requests(reader):
            if b"Action=Login" not in request:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(_ping_answer(request, b"Ping: Pong\r\n"))
            await writer.drain()
        writer.close()

    port = await server(handler)
    settings = _settings(port)
    async with AJAMClient(settings) as client:
        await client.login()
        for _ in range(3):  # was: HTTP 100 for the first, the one before's for the next
            assert (await client.action("Ping")).response["Ping"] == "Pong"


async def test_an_ambiguous_answer_is_a_protocol_error_and_its_connection_closed(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for request in requests(reader):
            if b"Action=Ping" in request and connections == 1:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nHello\r\n0\r\n\r\n"
                )
            else:
                writer.write(_ping_answer(request, b"Ping: Pong\r\n"))
            await writer.drain()
        writer.close()

    port = await server(handler)
    settings = _settings(port)
    async with AJAMClient(settings) as client:
        await client.login()
        with pytest.raises(AMIProtocolError, match="both Transfer-Encoding and Content-Length"):
            await client.action("Ping")
        assert (await client.action("Ping")).response["Ping"] == "Pong"
    assert connections == 2


async def test_the_wait_for_a_free_connection_is_inside_the_timeout(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    """With every connection busy, a request used to wait for one outside its
    timeout: as long as the request before it took, then its own timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    pool = ConnectionPool("127.0.0.1", await server(silent), max_connections=1)
    first = asyncio.create_task(pool.request(build_request("POST", "/", "x", b"a"), timeout=5))
    await _until(lambda: pool._slots.locked())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await pool.request(build_request("POST", "/", "x", b"b"), timeout=0.2)
    assert loop.time() - started < 2
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not pool._slots.locked()
    await pool.aclose()
