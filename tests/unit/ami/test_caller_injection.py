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

from xml.sax.saxutils import escape as xml_escape

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from router.ami.message import Event, sent_by_channel
from router.ami.protocol import RawmanParser, parse_mxml, raw_header
from router.calls import CallTracker, oversized, smuggled
from router.dialplan import Dialplan

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


def assert_the_channels_own(event: Event) -> None:
    """``event``, a request callrouter acts on, names the sandbox channel's own
    context, extension, priority and Uniqueid, whatever the number brought in."""
    assert event.get("Channel") == CHANNEL
    assert event.get("Context") == "callrouter-inbound"
    assert event.get("Exten") == "74951234567"
    assert event.get("Priority") == "8"
    assert event.get("Uniqueid") == "sandbox-1.4"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=NUMBERS, chunk=st.sampled_from([5, 64, 4096]))
# Found by the CI run of 2026-12-07 22:40: a read cut inside the blank lines a
# number wrote left a block starting with LF, parsed without its narrower.
@example(number="\r\n\r\n\r\n\r\nEvent: UserEvent", chunk=5)
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
            assert_the_channels_own(event)


def request_text(number: str, *, exten: str = "74951234567", body: str = "") -> str:
    """The request a dialplan sends from ``exten``, as Asterisk 22 writes it in
    rawman: the snapshot (with the number as it is), then the request's name,
    then the keys the dialplan passed (``body``)."""
    snapshot = SNAPSHOT.format(privilege="user", number=number)
    snapshot = snapshot.replace("Exten: 74951234567", f"Exten: {exten}")
    return f"Event: UserEvent\r\n{snapshot}UserEvent: CallRouterRequest\r\n{body}\r\n"


def asterisk_mxml(text: str) -> bytes:
    """The /mxml body Asterisk 22 (manager.c ``xml_translate``) makes of the
    rawman ``text``: an element a block, each key lower-cased with any other
    character than a letter or digit as ``_``, and a key met again (as
    spelled: ``strcmp``) given ``-2``, ``-3``..."""
    elements = []
    for block in text.split("\r\n\r\n"):
        counts: dict[str, int] = {}
        attributes = []
        for line in block.split("\r\n"):
            key, colon, value = line.partition(": ")
            if not colon:
                continue
            counts[key] = counts.get(key, 0) + 1
            name = "".join(c.lower() if c.isascii() and c.isalnum() else "_" for c in key)
            if counts[key] > 1:
                name += f"-{counts[key]}"
            attributes.append(f"{name}='{xml_escape(value, {chr(39): '&apos;'})}'")
        if attributes:
            elements.append(
                f"<response type='object' id='unknown'><generic {' '.join(attributes)} />"
                "</response>"
            )
    return ("<ajax-response>\n" + "\n".join(elements) + "\n</ajax-response>\n").encode()


def both_formats(text: str) -> list[Event]:
    """The request ``text`` as callrouter reads it over rawman and over mxml."""
    events = []
    for messages in (RawmanParser().feed(text.encode()), parse_mxml(asterisk_mxml(text))):
        [event] = [m for m in messages if isinstance(m, Event)]
        events.append(event)
    return events


def test_a_number_cannot_choose_the_did_of_a_dialplan_announcing_from_s() -> None:
    """Issue 16: a dialplan that sends its request from ``s`` without a ``DID:``
    key had its DID read as the first ``DID`` of the event: the one a number
    ``1\\r\\nDID: 74950000001`` writes into the snapshot, so a caller chose
    whose rules routed the call (no key twice, so none refused it). Only the
    keys the dialplan passed are read, over rawman and mxml: the DID stays
    ``s``, and a passed ``DID`` is the one read. Nor does the number choose
    the request's ``Wait``."""
    dialplan = Dialplan()
    forged = "1\r\nDID: 74950000001\r\nWait: 0.2"
    for event in both_formats(request_text(forged, exten="s", body="Wait: 4\r\n")):
        assert smuggled(event) is None  # one DID, one Wait: nothing twice
        request = dialplan.request(event)
        assert request is not None
        assert (request.did, request.wait) == ("s", 4.0)
    # The key in another case: over rawman the passed one is read. Over mxml
    # Asterisk writes both as ``did`` (it counts repeats case-sensitively),
    # which is no XML: that element is skipped, unread, and the rest of the
    # poll read (tests/unit/ami/test_mxml_broken_elements.py; before, the
    # poll was refused whole).
    text = request_text("1\r\ndid: 74950000001", exten="s", body="DID: 74951234567\r\n")
    [event] = [m for m in RawmanParser().feed(text.encode()) if isinstance(m, Event)]
    request = dialplan.request(event)
    assert request is not None
    assert request.did == "74951234567"
    poll = asterisk_mxml(f"{text}\r\nEvent: WaitEventComplete\r\n\r\n")
    assert [m.get("Event") for m in parse_mxml(poll)] == ["WaitEventComplete"]


def test_over_mxml_a_did_a_number_brought_in_is_smuggled_as_over_rawman() -> None:
    """Issue 16: over mxml a request's ``DID`` arrives as ``did`` (mxml keeps
    only the keys callrouter knows in Asterisk's spelling), twice when a
    number brought one in: the check of keys Asterisk writes once compared
    them as spelled and passed it, and the first, the caller's, was the
    request's DID. Both formats now refuse the same requests, naming the key
    as it arrived."""
    body = "DID: 74951234567\r\nCaller: 79161234567\r\nWait: 4\r\n"
    for number, key, as_mxml in (
        ("1\r\nDID: 74950000001", "DID", "did"),
        ("1\r\nCaller: 74950000001", "Caller", "caller"),
        ("1\r\nExten: 900", "Exten", "Exten"),
        ("79161234567", None, None),
    ):
        rawman, mxml = both_formats(request_text(number, exten="s", body=body))
        assert smuggled(rawman) == key
        assert smuggled(mxml) == as_mxml
        assert CallTracker().refuses(mxml) is (key is not None)
        request = Dialplan().request(mxml)
        assert request is not None
        assert request.did == ("900" if key == "Exten" else "74951234567")


def parsed(data: bytes, cuts: list[int], *, wanted: bool, dropping: bool) -> tuple[object, ...]:
    """What a parser makes of ``data`` read in pieces cut at ``cuts``: its
    messages, its counts, and whether it is left owing a message."""
    parser = RawmanParser()
    if wanted:
        parser.wanted = frozenset({"UserEvent"})
        parser.narrow = {"UserEvent": lambda block: "Exten: 900" not in block}
    parser.dropping = dropping
    messages = []
    start = 0
    for end in [*sorted(set(cuts)), len(data)]:
        if start < end:
            messages.extend(parser.feed(data[start:end]))
            start = end
    shown = [(type(m).__name__, m.fields) for m in messages]
    return shown, parser.skipped, parser.dropped, parser.strays, parser.pending


#: Values a caller or a dialplan (AppData) may write, bare LF and lone CR included.
VALUES = st.lists(st.sampled_from([*PIECES, "\r\n\r\n", "\r\n\r\n\r"]), max_size=6).map("".join)


@st.composite
def stream(draw: st.DrawFn) -> bytes:
    """A few events as Asterisk writes them, each with a value of the caller's
    (``CallerIDNum``) and of the dialplan's (``AppData``, which may hold a bare LF)."""
    out = []
    for at in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(["UserEvent", "Newexten", "Hangup"]))
        out.append(
            f"Event: {name}\r\nChannel: {CHANNEL}\r\nCallerIDNum: {draw(VALUES)}\r\n"
            f"AppData: {draw(VALUES)}\r\nUniqueid: sandbox-1.{at}\r\n\r\n"
        )
    return "".join(out).encode()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=stream(),
    cuts=st.lists(st.integers(0, 600), max_size=5),
    wanted=st.booleans(),
    dropping=st.booleans(),
)
# hreview49: a block after a blank line starting with a lone CR (a number
# "\r\n\r\n\rEvent: C") was an event when the read also held a bare LF (the
# exact path stripped CR and LF alike) and a stray when read alone.
@example(
    data=(
        b"Event: Newexten\r\nAppData: x\ny\r\n\r\n"
        b"Event: UserEvent\r\nCallerIDNum: 1\r\n\r\n\rEvent: UserEvent\r\nUniqueid: x\r\n\r\n"
    ),
    cuts=[33],
    wanted=False,
    dropping=False,
)
# Blank lines a number wrote after an event, read alone after it: no message
# is owed (``pending`` held the early route back, router/ami/tcp.py).
@example(
    data=b"Event: Hangup\r\nCallerIDNum: 1\r\n\r\n\r\n",
    cuts=[34],
    wanted=False,
    dropping=False,
)
def test_a_stream_reads_the_same_however_its_reads_are_cut(
    data: bytes, cuts: list[int], wanted: bool, dropping: bool
) -> None:
    """Whatever values callers and dialplans write, the parser returns the
    same messages, skips and drops the same events and owes the same when the
    stream comes in one read as in reads cut anywhere (router.ami.protocol:
    whole blocks are cut off the buffer, screened by their first line, and
    parsed one way for a read holding a bare LF and another for one without)."""
    whole = parsed(data, [], wanted=wanted, dropping=dropping)
    cut = [c for c in cuts if c < len(data)]
    assert parsed(data, cut, wanted=wanted, dropping=dropping) == whole


#: Lines a caller may bring in spelled otherwise than Asterisk spells them:
#: a reader asking ``uniqueid`` (any spelling) gets the first (hreview49).
OTHER_SPELLINGS = [
    "\r\n",
    "1",
    "uniqueid: v.2",
    "UNIQUEID: v.3",
    "exten: 901",
    "context: evil",
    "priority: 2",
    "channel: PJSIP/victim-00000003",
    "linkedid: v.2",
    "Linkedid: v.4",
    "ChannelStateDesc: Up",
    "CallerIDNum: 2",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    number=st.lists(st.sampled_from(OTHER_SPELLINGS), max_size=12).map("".join),
    timestamps=st.booleans(),
)
def test_a_request_read_in_any_spelling_is_its_channels_or_refused(
    number: str, timestamps: bool
) -> None:
    """Whatever lines a number brings in, in whatever spelling and wherever it
    leaves the snapshot's ``Linkedid`` (the in-place check of router.calls
    ``smuggled`` looks there first), a request callrouter acts on names the
    channel's own context, extension, priority and Uniqueid, read in any
    spelling as rules read them; with or without Asterisk's ``Timestamp`` and
    ``SystemName`` lines (``timestampevents``)."""
    text = asterisk_writes(number).decode()
    if timestamps:
        text = text.replace(
            "Privilege: user,all\r\n",
            "Privilege: user,all\r\nTimestamp: 1796129993.238821\r\nSystemName: pbx\r\n",
        )
    events = [m for m in RawmanParser().feed(text.encode()) if isinstance(m, Event)]
    for event in events:
        if (
            event.name == "UserEvent"
            and event.get("UserEvent") == "CallRouterRequest"
            and oversized(event) is None
            and smuggled(event) is None
        ):
            assert_the_channels_own(event)
            assert event.get("Linkedid") == "sandbox-1.4"
