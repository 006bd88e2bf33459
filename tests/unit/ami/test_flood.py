"""An event flood: the events the TCP client drops are counted, not parsed
(router.ami.protocol ``RawmanParser.dropping``, issue 16).

A hostile peer's trial found the client at 100 % CPU through a flood, most
of it parsing into messages events it was about to drop. The counts the
client reports (``N events ... dropped unhandled``) must stay the ones the
full parse gave, and the answers to actions must still get through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import router.ami.protocol as protocol
from router.ami.client import ClientSettings
from router.ami.message import Message, Response
from router.ami.protocol import Narrower, RawmanParser, _drop_blocks, _parse_blocks, raw_header
from router.ami.tcp import TCPClient
from router.errors import AMIEventsDropped
from tests.unit.ami.tcp_fake import FakeAMI

FIXTURES = Path(__file__).parents[2] / "fixtures" / "ami"
CAPTURE = (FIXTURES / "waitevent_call.rawman").read_bytes()
BARE_LF = (FIXTURES / "newexten_bare_lf.rawman").read_bytes()


def _ev(name: str, *headers: tuple[str, str]) -> bytes:
    lines = [f"Event: {name}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _flood(count: int, start: int = 0) -> bytes:
    return b"".join(
        _ev("Newstate", ("Channel", f"PJSIP/1-{i:08d}"), ("Seq", str(i)), ("Pad", "x" * 80))
        for i in range(start, start + count)
    )


class _Counting:
    """Counts the blocks made into messages (``_block_to_message``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made = 0
        real = protocol._block_to_message

        def counting(lines: Sequence[str]) -> Message:
            self.made += 1
            return real(lines)

        monkeypatch.setattr(protocol, "_block_to_message", counting)


def test_a_dropping_parser_counts_the_events_and_parses_none_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = _Counting(monkeypatch)
    parser = RawmanParser()
    parser.dropping = True
    data = _flood(1000)
    # Any chunking: a block cut across reads is counted once it is whole.
    assert parser.feed(data[:12345]) == []
    assert parser.feed(data[12345:]) == []
    assert parser.dropped == 1000
    assert made.made == 0
    parser.dropping = False
    assert [e.name for e in parser.feed(_ev("After"))] == ["After"]
    assert parser.dropped == 1000


def test_the_answers_read_while_dropping_are_parsed_and_other_clients_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A response, and an event of our action's list, come through a flood;
    an event carrying another client's ActionID is an event as any other."""
    made = _Counting(monkeypatch)
    parser = RawmanParser()
    parser.ours = lambda action_id: action_id.startswith("cr-")
    parser.dropping = True
    data = (
        _flood(50)
        + b"Response: Success\r\nActionID: cr-1\r\nEventList: start\r\n\r\n"
        + _ev("CoreShowChannel", ("ActionID", "cr-1"), ("Channel", "A"))
        + _ev("OriginateResponse", ("ActionID", "theirs-7"), ("Channel", "B"))
        + _flood(50, 50)
        + _ev("CoreShowChannelsComplete", ("ActionID", "cr-1"), ("EventList", "Complete"))
    )
    out = parser.feed(data)
    assert [(type(m).__name__, m.get("ActionID")) for m in out] == [
        ("Response", "cr-1"),
        ("Event", "cr-1"),
        ("Event", "cr-1"),
    ]
    assert parser.dropped == 101
    assert made.made == 3


def _same_counts(
    data: bytes,
    wanted: frozenset[str] | None,
    narrow: dict[str, Narrower] | None,
    ours: Callable[[str], bool] | None,
) -> None:
    """What the client keeps, skips and drops is the same counted as parsed:
    each answer parsed, each other event dropped, counted or (an odd block,
    parsed as ever) by the client."""
    parsed, skipped, stray = _parse_blocks(data, wanted, narrow, ours)
    kept, skipped_too, dropped, stray_too = _drop_blocks(data, wanted, narrow, ours)
    assert skipped_too == skipped
    assert stray_too == stray
    assert [m for m in parsed if m in kept] == kept

    def answer(m: Message) -> bool:
        if isinstance(m, Response):
            return True
        return m.action_id is not None and (ours is None or ours(m.action_id))

    assert [m for m in kept if answer(m)] == [m for m in parsed if answer(m)]
    events = sum(1 for m in parsed if not answer(m))
    assert dropped + sum(1 for m in kept if not answer(m)) == events


def _keeps_priority_1(block: str) -> bool:
    return raw_header(block, "Priority") == "1"


@pytest.mark.parametrize(
    "data",
    [
        CAPTURE,
        # Its events alone (no answer, no ActionID): counted by name in C.
        CAPTURE[CAPTURE.index(b"Event: ") : CAPTURE.index(b"Event: WaitEventComplete")],
        BARE_LF,
        _flood(20),
        _ev("X") * 5,  # blocks of one line
        _ev("Newexten", ("Priority", "1")) + b"\r\n" + _ev("Newexten", ("Priority", "2")),
        _ev("Newexten", ("Priority", "1"), ("AppData", "a\nPriority: 1")) + _flood(3),
        _ev("Odd\rName") + _ev("Newstate"),
        b"event: lower\r\nSeq: 1\r\n\r\n" + _flood(2),
        _ev("Newstate", ("actionid", "cr-9")) + _ev("Newstate", ("ActionID", "cr-8")),
        _ev("Newexten", ("ActionID", "theirs"), ("Priority", "5")),
    ],
)
@pytest.mark.parametrize(
    ("wanted", "narrow"),
    [
        (None, None),
        (frozenset({"Newstate", "Newexten", "UserEvent"}), None),
        (frozenset({"Newstate", "Newexten"}), {"Newexten": _keeps_priority_1}),
        (None, {"Newexten": _keeps_priority_1, "Newstate": lambda block: "Seq: 1" in block}),
    ],
)
def test_dropping_counts_what_the_parse_would_have_given(
    data: bytes,
    wanted: frozenset[str] | None,
    narrow: dict[str, Narrower] | None,
) -> None:
    for ours in (None, lambda action_id: action_id.startswith("cr-")):
        _same_counts(data, wanted, narrow, ours)


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_a_flood_past_the_bound_is_counted_unparsed_and_actions_answered(
    fake: FakeAMI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the first read dropped, the flood makes no messages: the gap says
    exactly how many events were dropped, and a Ping sent amid it is answered."""
    settings = ClientSettings(
        url=fake.url, username="router", secret=fake.secret, max_queued_events=10
    )
    async with TCPClient(settings) as client:
        for i in range(20):  # past the bound, a read each: dropping begins
            fake.push(("Event", "Burst"), ("Seq", str(i)))
            await asyncio.sleep(0.005)
        await _until(lambda: client._dropped + len(client._events) == 20)
        assert client._dropping is not None
        made = _Counting(monkeypatch)
        queued, before = len(client._events), client._dropped
        fake.push_raw(_flood(3000))
        ping = asyncio.ensure_future(client.send("Ping", validate=False))
        fake.push_raw(_flood(3000, 3000))
        assert (await asyncio.wait_for(ping, 5)).ok
        await _until(lambda: client._dropped == before + 6000)
        assert made.made == 1  # the Ping's answer, no event
        got, dropped = await _drain(client)
        assert got == queued
        assert str(dropped).startswith(f"{before + 6000} events ")


async def _drain(client: TCPClient) -> tuple[int, AMIEventsDropped]:
    """How many events ``wait_event`` hands over before it reports a drop."""
    got = 0
    while True:
        try:
            got += len(await client.wait_event(2))
        except AMIEventsDropped as exc:
            return got, exc


def test_a_block_a_caller_number_cut_off_is_skipped_while_dropping_too() -> None:
    """Issue 16: a caller number holding a blank line (Asterisk 22 writes
    ``CallerIDNum`` as it is) cuts each event of its call in two, and the
    second half is no AMI message. Read while events are dropped (a flood),
    it is skipped and counted in ``strays`` as a parse skips it, not the
    session's end with an ``AMIProtocolError``; the answer after it is read."""
    cut = (
        b"Event: Newchannel\r\nChannel: PJSIP/pstn-00000001\r\nCallerIDNum: 1\r\n\r\n"
        b"garbage\r\nCallerIDName: <unknown>\r\nUniqueid: 1.5\r\n\r\n"
    )
    answer = b"Response: Success\r\nActionID: cr-1\r\nPing: Pong\r\n\r\n"
    parser = RawmanParser()
    parser.dropping = True
    assert parser.feed(_flood(3) + cut + answer) == [
        Response((("Response", "Success"), ("ActionID", "cr-1"), ("Ping", "Pong")))
    ]
    assert parser.dropped == 4
    assert parser.strays == 1
    _same_counts(_flood(3) + cut + answer, None, None, None)
