"""A caller number holding line breaks, against the raw-text shortcuts (issue 16).

Asterisk 22 writes a channel's ``CallerIDNum`` into every event of the call as
the caller sent it, line breaks and all (checked on the sandbox: a SIP
``From`` user ``7916%0D%0AContext:%20injected`` gave the lines
``CallerIDNum: 7916`` and ``Context: injected`` ahead of the snapshot's own
``Context``; ``CallerIDName`` and ``ConnectedLineName`` are escaped, ``\\r\\n``).
Here events are written as Asterisk writes them, with such numbers, and each
raw-text verdict (the narrowers' ``raw_header``) is compared with the parsed
event's, and a request's identity with the channel's.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.ami.message import Event, sent_by_channel
from router.ami.protocol import RawmanParser, raw_header
from router.calls import oversized, smuggled

CHANNEL = "PJSIP/pstn-00000001"
SNAPSHOT = (
    "Privilege: {privilege},all\r\nChannel: " + CHANNEL + "\r\nChannelState: 4\r\n"
    "ChannelStateDesc: Ring\r\nCallerIDNum: {number}\r\nCallerIDName: <unknown>\r\n"
    "ConnectedLineNum: <unknown>\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\n"
    "AccountCode: \r\nContext: callrouter-inbound\r\nExten: 74951234567\r\nPriority: 8\r\n"
    "Uniqueid: sandbox-1.4\r\nLinkedid: sandbox-1.4\r\n"
)
#: Lines a caller may bring in, and the bytes that cut them.
PIECES = [
    "\r\n",
    "\n",
    "\r",
    "1",
    ": ",
    "Exten: 900",
    "Context: evil",
    "Priority: 1",
    "Channel: PJSIP/victim-00000002",
    "Application: Wait",
    "UserEvent: CallRouterRequest",
    "Uniqueid: v.1",
    "Linkedid: v.1",
    "DID: 5",
    "Event: UserEvent",
]
NUMBERS = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)
KEYS = ("Channel", "Context", "Exten", "Priority", "Application", "UserEvent", "Uniqueid")


def asterisk_writes(number: str) -> bytes:
    """A call's step into Wait after its request, as Asterisk 22 writes them."""
    request = (
        "Event: UserEvent\r\n"
        + SNAPSHOT.format(privilege="user", number=number)
        + "UserEvent: CallRouterRequest\r\nDID: 74951234567\r\nWait: 4\r\n\r\n"
    )
    step = (
        "Event: Newexten\r\n"
        + SNAPSHOT.format(privilege="dialplan", number=number).replace("Priority: 8", "Priority: 9")
        + "Extension: 74951234567\r\nApplication: Wait\r\nAppData: 4\r\n\r\n"
    )
    return (request + step).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=NUMBERS, chunk=st.sampled_from([5, 64, 4096]))
def test_raw_verdicts_are_the_parsed_events_and_a_request_is_its_channels(
    number: str, chunk: int
) -> None:
    """For every number: the parser reads on (a block that is no AMI message
    is skipped, never the session's end); each narrowed event's raw text says
    what its parsed event says, key by key (a bare LF in a value reads as a
    space there, router.ami.protocol ``_blocks``); and a request callrouter would
    act on (not refused: :func:`oversized`, :func:`smuggled`) from the
    caller's channel names the channel's own context, extension, priority
    and Uniqueid, whatever lines the number brought in, when it holds no
    blank line (one that does writes whole events: docs/asterisk.md)."""
    seen: list[str] = []

    def keep(block: str) -> bool:
        seen.append(block)
        return True

    data = asterisk_writes(number)
    parser = RawmanParser()
    parser.narrow = {"UserEvent": keep, "Newexten": keep}
    messages = []
    for at in range(0, len(data), chunk):
        messages.extend(parser.feed(data[at : at + chunk]))
    events = [m for m in messages if isinstance(m, Event) and m.name in ("UserEvent", "Newexten")]
    assert len(events) == len(seen)
    for event, text in zip(events, seen, strict=True):
        for key in KEYS:
            parsed = event.spelled().get(key)
            expected = None if parsed is None else parsed.replace("\n", " ")
            assert raw_header(text, key) == expected, (key, text)
    if "\r\n\r\n" in f"{number}\r\n":
        return  # whole events written: what callrouter cannot tell apart
    for event in events:
        if (
            event.name == "UserEvent"
            and event.get("UserEvent") == "CallRouterRequest"
            and sent_by_channel(event)
            and oversized(event) is None
            and smuggled(event) is None
        ):
            assert event.get("Channel") == CHANNEL
            assert event.get("Context") == "callrouter-inbound"
            assert event.get("Exten") == "74951234567"
            assert event.get("Priority") == "8"
            assert event.get("Uniqueid") == "sandbox-1.4"
