"""An /mxml answer with one message that is no XML keeps its others (issue 16).

Asterisk 22 writes each message of an /mxml answer as a line of its own and
writes a caller's values as they are (manager.c ``xml_translate``), so a value
a caller chose can make that line no XML. Captured on the sandbox's Asterisk
22.10.1 (``tests/fixtures/ami/waitevent_*``), a WaitEvent answer of a poll
during a call whose SIP ``From`` user was ``79161234567%0D%0Auniqueid%3A%20x``
(``uniqueid`` twice in one element), ``...%0D%0Aexten%3A%201`` (``exten``
twice), ``...%0D%0A%3A%20x`` (an attribute without a name),
``7916%01123`` (a control byte), or whose request URI's user was
``74951234567%FF`` (a byte that is not UTF-8). lxml refused each whole body,
and with it every other event of the poll (other callers' calls among them):
the event stream dropped the session and reconnected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from lxml import etree

from router.ami.client import AJAMClient, ClientSettings
from router.ami.message import Event, normalize_key
from router.ami.protocol import (
    BROKEN_ELEMENTS,
    MIN_MESSAGE_BYTES,
    assemble_result,
    parse_body,
    parse_mxml,
    split_waitevent,
)
from router.dialplan import Dialplan
from router.errors import AMIProtocolError
from tests.unit.ami.test_caller_injection import asterisk_mxml, request_text

FIXTURES = Path(__file__).parents[2] / "fixtures" / "ami"

#: Each capture: the events of its poll that are XML, in order, how many are
#: not, and lxml's reason for the first of those.
CAPTURES = {
    "waitevent_caller_uniqueid.mxml": (("DeviceStateChange",), 15, "Attribute uniqueid redefined"),
    "waitevent_caller_exten.mxml": (("TestEvent",), 8, "Attribute exten redefined"),
    "waitevent_caller_empty_key.mxml": (
        ("TestEvent", "DeviceStateChange"),
        15,
        "error parsing attribute name",
    ),
    "waitevent_caller_control_byte.mxml": (
        ("TestEvent", "DeviceStateChange"),
        17,
        "invalid character in attribute value",
    ),
    "waitevent_dialled_not_utf8.mxml": (
        (
            "ChallengeSent",
            "TestEvent",
            "SuccessfulAuth",
            "TestEvent",
            "TestEvent",
            "DeviceStateChange",
        ),
        17,
        "Invalid bytes in character encoding",
    ),
}
#: What the caller's lines said, which no event read may hold.
SMUGGLED = {("Uniqueid", "x"), ("Exten", "1"), ("CallerIDNum", "7916\x01123")}


def values(event: Event, key: str) -> list[str]:
    """Every value of ``key`` in ``event``, in any spelling."""
    return [v for k, v in event.fields if normalize_key(k) == normalize_key(key)]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_a_poll_keeps_every_event_but_the_ones_a_caller_broke(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = (FIXTURES / name).read_bytes()
    kept, broken, reason = CAPTURES[name]
    with pytest.raises(etree.XMLSyntaxError, match=reason):
        etree.fromstring(body)  # the capture is no XML as a whole
    before = BROKEN_ELEMENTS.count
    BROKEN_ELEMENTS._told = None  # said at once, whatever another test said
    with caplog.at_level(logging.WARNING, logger="router.ami"):
        response, events = split_waitevent(parse_body(body, "text/xml", expect="mxml"))
    assert response.ok
    assert tuple(e.name for e in events) == kept
    assert BROKEN_ELEMENTS.count - before == broken
    for event in events:
        for key, value in SMUGGLED:
            assert value not in values(event, key)
    said = [r.getMessage() for r in caplog.records if r.name == "router.ami"]
    assert len(said) == 1
    assert said[0].startswith(f"{broken} message(s) of an /mxml answer that are no XML")
    assert reason in said[0]


def test_another_callers_request_in_the_same_poll_is_routed() -> None:
    """The attacker's request is one element, the other caller's another:
    the other is read and routed, the attacker's is not read at all (neither
    its ``uniqueid`` nor the channel's own)."""
    attacker = request_text("1\r\nuniqueid: x", body="DID: 74951234567\r\n")
    victim = request_text("79161234567", body="DID: 74951234567\r\n").replace(
        "PJSIP/pstn-00000001", "PJSIP/pstn-00000002"
    )
    body = asterisk_mxml(
        "Response: Success\r\nMessage: Waiting for Event completed.\r\n\r\n"
        + attacker
        + "\r\n"
        + victim
        + "\r\nEvent: WaitEventComplete\r\n\r\n"
    )
    _, events = split_waitevent(parse_mxml(body))
    [request] = [e for e in events if isinstance(e, Event) and e.name == "UserEvent"]
    assert request.get("Channel") == "PJSIP/pstn-00000002"
    assert values(request, "Uniqueid") == ["sandbox-1.4"]
    assert Dialplan().request(request) is not None


def test_a_body_not_in_asterisks_shape_is_still_refused_whole() -> None:
    """Only Asterisk's shape is read an element a line: its first and last
    lines; anything else that is no XML is refused as before."""
    line = b"<response type='object' id='unknown'><generic event='A' a='1' a='2' /></response>"
    for body in (
        line,
        b"<ajax-response>" + line + b"</ajax-response>",
        b"<ajax-response>\n" + line + b"\n",
        b"<other>\n" + line + b"\n</ajax-response>\n",
    ):
        with pytest.raises(AMIProtocolError, match="malformed mxml: Attribute a redefined"):
            parse_mxml(body)
    # In Asterisk's shape with nothing else: no message left.
    with pytest.raises(AMIProtocolError, match="no AMI message"):
        parse_mxml(b"<ajax-response>\n" + line + b"\n</ajax-response>\n")


def test_a_broken_body_is_bounded_by_its_size_as_a_whole_one() -> None:
    """Read an element a line, a body counts its lines against the same
    bound as its elements (each at least MIN_MESSAGE_BYTES of the limit)."""
    line = b"<response type='object' id='unknown'><generic event='A' /></response>\n"
    bad = b"<response type='object' id='unknown'><generic event='B' b='1' b='2' /></response>\n"
    size = 64 * MIN_MESSAGE_BYTES
    few = b"<ajax-response>\n" + line * 10 + bad + b"</ajax-response>\n"
    assert len(parse_mxml(few, max_size=size)) == 10
    many = b"<ajax-response>\n" + b"\n" * 100 + line * 70 + bad + b"</ajax-response>\n"
    assert len(many) < size
    with pytest.raises(AMIProtocolError, match="a body of 171 messages, more than 64"):
        parse_mxml(many, max_size=size)


async def test_the_client_hands_on_the_polls_other_events() -> None:
    """Over the AJAM client (``format = "mxml"``): the poll's other events
    come back; before, the poll failed with a protocol error."""
    capture = (FIXTURES / "waitevent_caller_uniqueid.mxml").read_bytes()

    def handler(request: httpx.Request) -> httpx.Response:
        action = dict(httpx.QueryParams(request.content.decode()))["Action"]
        if action == "Login":
            content = (
                b"<ajax-response>\n<response type='object' id='unknown'><generic "
                b"response='Success' message='Authentication accepted' /></response>\n"
                b"</ajax-response>\n"
            )
        else:
            content = capture
        return httpx.Response(
            200,
            headers={"Content-Type": "text/xml", "Set-Cookie": 'mansession_id="0badcafe"'},
            content=content,
        )

    settings = ClientSettings(
        url="http://asterisk.test/asterisk",
        username="u",
        secret="s",
        format="mxml",
        http_client="httpx",
    )
    async with AJAMClient(settings, transport=httpx.MockTransport(handler)) as client:
        await client.login()
        events = await client.wait_event(timeout=1)
    assert [e.name for e in events] == ["DeviceStateChange"]


def test_a_listing_counts_the_item_a_caller_broke_as_unread() -> None:
    """A reconcile's CoreShowChannels lists the attacker's channel too: that
    item is skipped and the list still counts it (``ListItems``), so a
    reconcile ends no call it did not see (router.routing); before, the
    listing failed whole, and with it every reconcile while the call was up
    (seen on the sandbox: "reconcile after gap failed: CoreShowChannels:
    malformed mxml: Attribute uniqueid redefined")."""
    capture = (FIXTURES / "coreshowchannels.mxml").read_bytes()
    lines = capture.split(b"\n")
    lines[2] = lines[2].replace(b"calleridnum='+79161234567'", b"calleridnum='1' uniqueid='x'")
    result = assemble_result(parse_mxml(b"\n".join(lines)))
    assert result.complete
    assert [item.get("Channel") for item in result.items] == [
        "Local/74952293042@incoming-00000001;2"
    ]
    assert result.unread_items == 1
