"""A small mxml reply must not freeze the event loop (issue 16, attacker's review).

lxml's ``Element.items()`` is quadratic in an element's attribute count: one
``<generic>`` with 60,000 attributes (half a megabyte) stalled the loop 16 s.
It was reachable with the default ``format = "rawman"`` too, because the body
was parsed as the peer's Content-Type said. Each test failed before the fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import httpx
import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.protocol import MAX_MXML_FIELDS, parse_body, parse_mxml
from router.errors import AMIProtocolError
from tests.unit.ami.conftest import Handler


def many_attributes(count: int, action_id: str = "x") -> bytes:
    """The probe's body: one <generic> holding ``count`` attributes."""
    return (
        b"<ajax-response><response><generic response='Success' actionid='"
        + action_id.encode()
        + b"' "
        + b" ".join(b"a%d=''" % i for i in range(count))
        + b"/></response></ajax-response>"
    )


def test_an_element_with_too_many_attributes_is_refused_before_reading_them() -> None:
    with pytest.raises(AMIProtocolError, match=f"more than {MAX_MXML_FIELDS}"):
        parse_mxml(many_attributes(60_000))
    with pytest.raises(AMIProtocolError, match=f"more than {MAX_MXML_FIELDS}"):
        parse_body(many_attributes(MAX_MXML_FIELDS - 1), "text/xml")


@pytest.mark.parametrize("count", [3, 200, MAX_MXML_FIELDS - 4])
def test_attributes_are_read_in_order_however_many(count: int) -> None:
    """Past a few attributes they are read by one walk, not by name; same result."""
    body = (
        b"<ajax-response><response><generic event='UserEvent' name='a &amp; b &lt;c&gt;' "
        + b" ".join(b"k%d='v%d'" % (i, i) for i in range(count))
        + b" chanvariable='x=1' chanvariable-2='y=2'/></response></ajax-response>"
    )
    (event,) = parse_mxml(body)
    assert event.fields[:2] == (("Event", "UserEvent"), ("name", "a & b <c>"))
    assert event.fields[2 : 2 + count] == tuple((f"k{i}", f"v{i}") for i in range(count))
    assert event.getall("chanvariable") == ["x=1", "y=2"]
    assert len(event.fields) == count + 4


def test_the_format_asked_for_is_parsed_not_the_peers_content_type() -> None:
    rawman = b"Response: Success\r\nMessage: ok\r\n\r\n"
    with pytest.raises(AMIProtocolError, match="'text/xml' to a rawman request"):
        parse_body(many_attributes(5), "text/xml", expect="rawman")
    with pytest.raises(AMIProtocolError, match="text/plain; charset=utf-8' to a mxml request"):
        parse_body(rawman, "text/plain; charset=utf-8", expect="mxml")
    (ok,) = parse_body(rawman, "text/plain", expect="rawman")
    assert ok.get("Message") == "ok"
    (xml,) = parse_body(many_attributes(1), "text/xml", expect="mxml")
    assert xml.get("a0") == ""
    # No Content-Type: the format asked for, whatever the first byte.
    with pytest.raises(AMIProtocolError):
        parse_body(many_attributes(1), None, expect="rawman")


@pytest.mark.parametrize(("fmt", "count"), [("rawman", 5_000), ("mxml", 20_000)])
async def test_a_client_refuses_the_probes_reply(
    server: Callable[[Handler], Awaitable[int]], fmt: str, count: int
) -> None:
    """rawman (the default): a text/xml answer is refused unparsed; mxml: the
    element is refused at its attribute count. Before, both were parsed (the
    probe's 60,000 attributes in 16 s)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            fields = dict(parse_qsl(body.decode()))
            if fields["Action"] == "Login":
                if fmt == "rawman":
                    reply = f"Response: Success\r\nActionID: {fields['ActionID']}\r\n\r\n".encode()
                    kind = b"text/plain"
                else:
                    reply = (
                        b"<ajax-response><response type='object' id='unknown'>"
                        b"<generic response='Success' actionid='"
                        + fields["ActionID"].encode()
                        + b"'/></response></ajax-response>"
                    )
                    kind = b"text/xml"
            else:
                reply = many_attributes(count, fields["ActionID"])
                kind = b"text/xml"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: "
                + kind
                + b'\r\nSet-Cookie: mansession_id="0badcafe"\r\nContent-Length: '
                + str(len(reply)).encode()
                + b"\r\n\r\n"
                + reply
            )
            await writer.drain()
        writer.close()

    port = await server(handler)
    settings = ClientSettings(
        url=f"http://127.0.0.1:{port}/asterisk",
        username="u",
        secret="s",
        format=fmt,  # type: ignore[arg-type]
        request_timeout=5,
    )
    async with AJAMClient(settings) as client:
        await client.login()
        expected = "not rawman" if fmt == "rawman" else f"more than {MAX_MXML_FIELDS}"
        with pytest.raises(AMIProtocolError, match=expected):
            await client.wait_event(timeout=1)


async def test_the_httpx_path_parses_the_format_asked_for_too() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/xml"}, content=many_attributes(1))

    client = AJAMClient(
        ClientSettings(url="http://asterisk.test/", username="u", secret="s", http_client="httpx"),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(AMIProtocolError, match="not rawman"):
        await client.login()
    await client.aclose()
