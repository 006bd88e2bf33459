"""What a proxy or a port squatter on plain-HTTP AJAM can send (issue 10, items 7, 8, 16).

Each test first plays the attack seen in the review (it crashed or ate memory on
the code before the fix), then checks the documented behaviour: a protocol error,
a bounded buffer, a refused action, never anything else.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.http import HTTPProtocolError, ResponseParser
from router.ami.message import Event
from router.ami.numbers import ascii_float, ascii_hex, ascii_int
from router.ami.protocol import Action, encode_form, encode_query, encode_rawman
from router.ami.stream import Backoff, EventStream, StreamGap
from router.calls import CallTracker
from router.errors import (
    AMIAuthenticationError,
    AMIProtocolError,
    AMITimeoutError,
    AMIValidationError,
    ConfigError,
)
from tests.unit.ami.conftest import Handler

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


# -- numbers: ASCII digits only -------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["²", "1²", "٣", "１", "1_0", " 1", "1 ", "+1", "-1", "", "1\n", "9" * 19]
)
def test_ascii_int_refuses_what_python_would_accept_or_crash_on(text: str) -> None:
    assert ascii_int(text) is None


def test_ascii_numbers_accept_the_plain_forms() -> None:
    assert ascii_int("0") == 0
    assert ascii_int("200") == 200
    assert ascii_hex("1aF") == 0x1AF
    assert ascii_hex("0x10") is None
    assert ascii_hex("-1") is None
    assert ascii_float("4") == 4.0
    assert ascii_float("1733040000.25") == 1733040000.25
    for bad in ("nan", "inf", "1e999", "-1", "٣", "1.", ".5", "4 "):
        assert ascii_float(bad) is None, bad


# -- item 7: one malformed response used to end the process ---------------------------


@pytest.mark.parametrize(
    "head",
    [
        "HTTP/1.1 2²0 OK\r\nContent-Length: 0\r\n\r\n",  # status: isdigit() true, int() raises
        "HTTP/1.1 ²²² OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1²\r\n\r\n",  # Content-Length likewise
        "HTTP/1.1 200 OK\r\nContent-Length: ³\r\n\r\n",
        "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ],
)
def test_malformed_numbers_in_http_framing_are_protocol_errors(head: str) -> None:
    with pytest.raises(HTTPProtocolError):
        ResponseParser().feed(head.encode("latin-1"))


async def test_native_client_maps_a_bad_status_line_to_ami_protocol_error(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write("HTTP/1.1 2²0 OK\r\nContent-Length: 0\r\n\r\n".encode("latin-1"))
        await writer.drain()
        writer.close()

    port = await server(handler)
    client = AJAMClient(ClientSettings(url=f"http://127.0.0.1:{port}/", username="u", secret="s"))
    with pytest.raises(AMIProtocolError, match="not an HTTP response"):
        await client.login()
    await client.aclose()


def test_non_numeric_bridge_count_is_treated_as_absent() -> None:
    tracker = CallTracker()
    tracker.feed(
        Event(
            (
                ("Event", "Newchannel"),
                ("Channel", "PJSIP/a-1"),
                ("Linkedid", "L1"),
                ("Uniqueid", "L1"),
            )
        )
    )
    for count in ("²", "٢", "2abc", ""):
        call = tracker.feed(
            Event(
                (
                    ("Event", "BridgeEnter"),
                    ("Channel", "PJSIP/a-1"),
                    ("Uniqueid", "L1"),
                    ("Linkedid", "L1"),
                    ("BridgeNumChannels", count),
                )
            )
        ).call
        assert call is not None
        assert not call.answered
    call = tracker.feed(
        Event(
            (
                ("Event", "BridgeEnter"),
                ("Channel", "PJSIP/a-1"),
                ("Uniqueid", "L1"),
                ("Linkedid", "L1"),
                ("BridgeNumChannels", "2"),
            )
        )
    ).call
    assert call is not None
    assert call.answered


def test_wait_and_timestamp_that_are_not_plain_numbers_count_as_absent() -> None:
    from router.dialplan import _float

    for text in ("nan", "inf", "-inf", "1e999", "٣", "²", "4 ", "-2"):
        assert _float(text, 4.0) == 4.0, text
    assert _float("2.5", 4.0) == 2.5


class _Flaky:
    """A poller whose first answers raise what no parser foresaw."""

    session_generation = 1

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures

    async def wait_event(self, timeout: int = 20) -> list[Event]:
        if self.failures:
            raise self.failures.pop(0)
        return [Event((("Event", "Ping"),))]


async def test_event_stream_survives_an_unexpected_exception() -> None:
    stream = EventStream(
        _Flaky([ValueError("invalid literal for int()"), KeyError("x")]),
        backoff=Backoff(initial=0.001, maximum=0.001, jitter=0),
    )
    seen: list[object] = []
    async with asyncio.timeout(5):
        async for item in stream:
            seen.append(item)
            if isinstance(item, Event):
                break
    assert isinstance(seen[0], StreamGap)
    assert isinstance(seen[1], Event)


# -- item 8: bodies are bounded whatever the framing ----------------------------------


def feed_forever(parser: ResponseParser, data: bytes, times: int) -> None:
    """The attack: the same bytes again and again, as a hostile peer would."""
    for _ in range(times):
        parser.feed(data)


def test_chunked_body_stops_at_the_bound_before_buffering_it() -> None:
    parser = ResponseParser(max_body=1000)
    parser.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match=r"too large.*\[asterisk\] max_response_bytes"):
        feed_forever(parser, b"100\r\n" + b"x" * 0x100 + b"\r\n", 100)
    # One announced huge chunk is refused at its size line, before its bytes arrive.
    parser = ResponseParser(max_body=1000)
    with pytest.raises(HTTPProtocolError, match=r"too large.*\[asterisk\] max_response_bytes"):
        parser.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffff\r\n")


def test_read_until_close_body_is_bounded() -> None:
    parser = ResponseParser(max_body=1000)
    parser.feed(b"HTTP/1.0 200 OK\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match=r"too large.*\[asterisk\] max_response_bytes"):
        feed_forever(parser, b"y" * 64, 100)


def test_chunk_size_lines_and_trailers_are_bounded() -> None:
    parser = ResponseParser(max_head=4096)
    parser.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match="chunk-size line too long"):
        feed_forever(parser, b"1" * 64, 100)  # a size line that never ends
    parser = ResponseParser(max_head=4096)
    parser.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n")
    with pytest.raises(HTTPProtocolError, match="trailers"):
        feed_forever(parser, b"X-Trailer: 1\r\n", 1000)  # trailers that never end
    parser = ResponseParser(max_head=4096)
    parser.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match="chunk-size lines"):
        # one-byte chunks with long extensions, forever
        feed_forever(parser, b"1;" + b"e" * 100 + b"\r\nx\r\n", 10_000)


def test_a_head_that_never_ends_is_bounded() -> None:
    parser = ResponseParser(max_head=1024)
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(HTTPProtocolError, match="head over"):
        feed_forever(parser, b"X-Pad: " + b"p" * 50 + b"\r\n", 100)


async def test_native_client_stops_an_endless_chunked_body(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"z" * 0x10000 + b"\r\n"
        try:
            while sent < 64 * 1024 * 1024:  # would be 64 MiB without the bound
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        writer.close()

    port = await server(handler)
    client = AJAMClient(
        ClientSettings(
            url=f"http://127.0.0.1:{port}/", username="u", secret="s", max_response_bytes=256 * 1024
        )
    )
    with pytest.raises(AMIProtocolError, match=r"too large.*\[asterisk\] max_response_bytes"):
        await asyncio.wait_for(client.login(), 20)
    await client.aclose()
    assert sent < 8 * 1024 * 1024


def limited_httpx_client(handler: Callable[[httpx.Request], httpx.Response]) -> AJAMClient:
    """An httpx-based AJAM client on ``handler`` that reads at most 256 KiB an answer."""
    return AJAMClient(
        ClientSettings(
            url="http://asterisk.test/",
            username="u",
            secret="s",
            http_client="httpx",
            max_response_bytes=256 * 1024,
        ),
        transport=httpx.MockTransport(handler),
    )


async def test_httpx_client_stops_an_endless_body() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < 64 * 1024 * 1024:
            produced += 65536
            yield b"Response: Success\r\n" * 3449 + b"x" * 17

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/plain"}, content=endless())

    client = limited_httpx_client(handler)
    with pytest.raises(AMIProtocolError, match="max_response_bytes"):
        await client.login()
    await client.aclose()
    assert produced < 1024 * 1024


async def test_httpx_client_refuses_an_announced_oversize_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(10**9)}, content=b"")

    client = limited_httpx_client(handler)
    with pytest.raises(AMIProtocolError, match="over the limit"):
        await client.login()
    await client.aclose()


async def test_a_hostile_session_cookie_is_refused_not_sent_back(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"Response: Success\r\n\r\n"
        writer.write(
            OK_HEAD
            + b"Set-Cookie: mansession_id=a\x00b\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    port = await server(handler)
    client = AJAMClient(ClientSettings(url=f"http://127.0.0.1:{port}/", username="u", secret="s"))
    with pytest.raises(AMIProtocolError, match="cookie"):
        await client.login()
    await client.aclose()


# -- item 16: NUL bytes are refused, not silently truncated ----------------------------


@pytest.mark.parametrize("encode", [encode_form, encode_rawman])
def test_nul_in_an_action_value_is_refused_naming_the_header(
    encode: Callable[[Action], object],
) -> None:
    action = Action.build("Redirect", {"Channel": "PJSIP/a-1", "Exten": "101\x00&Local/666"})
    with pytest.raises(AMIValidationError, match="'Exten' contains a NUL byte"):
        encode(action)
    with pytest.raises(AMIValidationError, match="invalid parameter name"):
        encode(Action.build("Redirect", {"Ext\x00en": "101"}))


@pytest.mark.parametrize("encode", [encode_form, encode_query, encode_rawman])
def test_a_lone_surrogate_in_an_action_is_refused_naming_the_header(
    encode: Callable[[Action], object],
) -> None:
    """A value from a JSON answer ("\\udcff", which json.loads accepts: a 1C
    lookup's) is no text that can be sent: an AMIValidationError naming the
    header, as for a NUL, not a UnicodeEncodeError no caller expects."""
    action = Action.build("Setvar", {"Channel": "PJSIP/a-1", "Variable": "V", "Value": "a\udcff"})
    with pytest.raises(AMIValidationError, match="'Value' is not valid text"):
        encode(action)
    with pytest.raises(AMIValidationError, match="parameter name '\\\\udc80' is not valid text"):
        encode(Action.build("Setvar", {"\udc80": "1"}))


async def test_nul_through_the_typed_api_is_a_failed_action_not_a_truncated_one() -> None:
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200, content=b"Response: Success\r\n\r\n")

    client = AJAMClient(
        ClientSettings(url="http://asterisk.test/", username="u", secret="s", http_client="httpx"),
        transport=httpx.MockTransport(handler),
    )
    await client.login()
    with pytest.raises(AMIValidationError, match="NUL"):
        await client.send(
            "Redirect", {"Channel": "PJSIP/a-1", "Exten": "1\x00", "Context": "x", "Priority": 1}
        )
    assert not any(b"Redirect" in body for body in sent)
    await client.aclose()


def test_client_refuses_credentials_in_the_url_without_echoing_them() -> None:
    with pytest.raises(ConfigError, match="no credentials") as info:
        AJAMClient(
            ClientSettings(
                url="http://router:S3cr3t-0xC0FFEE-unique@pbx:8088/asterisk",
                username="router",
                secret="x",
            )
        )
    assert "S3cr3t" not in str(info.value)


def test_action_repr_hides_the_secret() -> None:
    login = Action.build("Login", {"Username": "router", "Secret": "S3cr3t-0xC0FFEE-unique"})
    assert "S3cr3t" not in repr(login)
    assert "router" in repr(login)


# -- issue 16: the httpx path (http_client = "httpx", every Digest setup) ----------------


def _httpx_client(handler: Callable[[httpx.Request], object], **kw: object) -> AJAMClient:
    return AJAMClient(
        ClientSettings(
            url="http://asterisk.test/",
            username="u",
            secret="s",
            http_client="httpx",
            **kw,  # type: ignore[arg-type]
        ),
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


async def test_httpx_client_refuses_a_compressed_answer_unread() -> None:
    """3,477 bytes of ``Content-Encoding: gzip, gzip`` inflated to 3.9 GB before
    their size was counted. Identity is asked for, and nothing else is read."""
    inner = gzip.compress(b"\0" * (8 * 1024 * 1024))
    bomb = gzip.compress(inner)
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding"))
        return httpx.Response(
            200,
            headers={"Content-Type": "text/plain", "Content-Encoding": "gzip, gzip"},
            content=bomb,
        )

    client = _httpx_client(handler, max_response_bytes=256 * 1024)
    with pytest.raises(AMIProtocolError, match=r"compressed answer \(Content-Encoding: gzip, gzip"):
        await client.login()
    await client.aclose()
    assert asked == ["identity"]


async def test_httpx_client_reads_an_identity_coded_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": "text/plain", "Content-Encoding": "identity"},
            content=b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n",
        )

    client = _httpx_client(handler)
    assert (await client.login()).ok
    await client.aclose()


async def test_httpx_client_bounds_the_whole_request_by_its_timeout() -> None:
    """A reply trickled a byte every 0.1 s: httpx's read timeout is per read, so
    with request_timeout = 2 the probe's took 21.6 s. Now one deadline."""
    body = b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"

    async def trickle() -> AsyncIterator[bytes]:
        for byte in body:
            await asyncio.sleep(0.1)
            yield bytes([byte])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/plain"}, content=trickle())

    client = _httpx_client(handler, request_timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AMITimeoutError, match="no answer"):
        await client.login()
    assert loop.time() - started < 3
    await client.aclose()


@pytest.mark.parametrize(
    ("challenge", "error", "message"),
    [
        # Unsupported: no retry helps, as with a wrong secret.
        (
            'Digest realm="a", nonce="n", algorithm=FOO, qop="auth"',
            AMIAuthenticationError,
            "algorithm 'FOO', which is not supported",
        ),
        (
            'Digest realm="a", nonce="n", algorithm=SHA-512-256, qop="auth"',
            AMIAuthenticationError,
            "algorithm 'SHA-512-256'",
        ),
        ('Digest realm="a", nonce="n", qop="auth-int"', AMIAuthenticationError, "auth-int"),
        ('Digest realm="a", nonce="n", qop="xyz"', AMIAuthenticationError, 'no qop="auth"'),
        # Malformed: a protocol error, like any bytes that are not HTTP we read.
        ('Digest ,,,=,"', AMIProtocolError, "malformed Digest challenge"),
        ('Digest realm="a", qop="auth"', AMIProtocolError, "malformed Digest challenge"),
        (
            'Digest realm="a", qop="auth", nonce="\xff\xfe"',
            AMIProtocolError,
            "not ASCII",
        ),
    ],
)
async def test_a_digest_challenge_that_cannot_be_answered_is_an_ami_error(
    challenge: str, error: type[Exception], message: str
) -> None:
    """httpx raised KeyError, NotImplementedError, ValueError or
    UnicodeEncodeError out of the client, past the AMIError tree."""
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(
            401, headers=[(b"WWW-Authenticate", challenge.encode("latin-1"))], content=b""
        )

    client = AJAMClient(
        ClientSettings(url="http://asterisk.test/", username="u", secret="s", auth="digest"),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(error, match=re.escape(message)):
        await client.login()
    await client.aclose()
    assert sent == [None]  # nothing half-built was sent


async def test_a_trickled_answer_is_not_said_as_nothing_answering(
    server: Callable[[Handler], Awaitable[int]],
) -> None:
    """Issue 16: a peer that answers the login's head at once and trickles
    its body a byte at a time is stopped at request_timeout (as ever), but
    the native client said "nothing answered HTTP there (a host that is down
    ...)": the one thing known is that something did. Now it says so."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK_HEAD + b"Content-Length: 1000\r\n\r\n")
        try:
            while True:
                writer.write(b"R")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, OSError):
            pass

    port = await server(handler)
    client = AJAMClient(
        ClientSettings(
            url=f"http://127.0.0.1:{port}/", username="u", secret="s", request_timeout=0.5
        )
    )
    with pytest.raises(AMITimeoutError) as info:
        await asyncio.wait_for(client.login(), 10)
    await client.aclose()
    said = str(info.value)
    assert "Login: its answer began and did not end within" in said
    assert "the port answers HTTP, and trickled this answer" in said
    assert "nothing answered" not in said
