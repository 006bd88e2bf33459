"""Events read only in part: a narrower sees an event's raw text and says
whether it is worth parsing (router.ami.protocol ``narrow``, issue 16).

The bytes are a real Asterisk 22 WaitEvent reply (``tests/fixtures/ami``):
one Local-channel call through a dialplan of several steps, whose
``Newexten`` events the engine needs only two of.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.ami.message import Event
from router.ami.protocol import RawmanParser, block_names, parse_rawman, raw_header

CAPTURE = (Path(__file__).parents[2] / "fixtures" / "ami" / "waitevent_call.rawman").read_bytes()


def first_step_only(block: str) -> bool:
    return raw_header(block, "Priority") == "1"


def steps(messages: list[object]) -> list[tuple[str | None, str | None]]:
    return [
        (m.get("Channel"), m.get("Priority"))
        for m in messages
        if isinstance(m, Event) and m.name == "Newexten"
    ]


def test_block_names_are_the_distinct_events_of_the_whole_blocks_before_end() -> None:
    # The real capture, cut at its UserEvent as the TCP client cuts a read at a
    # request: every event of the blocks ahead, read off their first lines.
    at = CAPTURE.index(b"Event: UserEvent\r\n")
    ahead = [m.name for m in parse_rawman(CAPTURE[:at]) if isinstance(m, Event)]
    assert ahead  # the capture has events before its UserEvent
    assert block_names(CAPTURE, at) == set(ahead)
    # The first block counts (no blank line before it); an action's answer has
    # no name; the block at ``end`` and after it are not looked at.
    data = (
        b"Event: Newchannel\r\nChannel: a\r\n\r\n"
        b"Response: Success\r\nActionID: 1\r\n\r\n"
        b"Event: Newexten\r\nChannel: a\r\n\r\n"
        b"Event: UserEvent\r\nUserEvent: CallRouterRequest\r\n\r\n"
        b"Event: Hangup\r\n\r\n"
    )
    assert block_names(data, data.index(b"Event: UserEvent")) == {"Newchannel", "Newexten"}
    assert block_names(data, 0) == set()
    # A name's bad bytes are replaced, as the parser decodes them.
    assert block_names(b"Event: Ne\xffw\r\n\r\nEvent: X\r\n\r\n", 13) == {"Ne\ufffdw"}


def test_raw_header_reads_one_value_from_the_raw_text() -> None:
    block = "Event: Newexten\nChannel: PJSIP/a-1\nContext: inbound\nPriority: 12"
    assert raw_header(block, "Channel") == "PJSIP/a-1"
    assert raw_header(block, "Priority") == "12"  # the last line has no newline
    assert raw_header(block, "Exten") is None
    assert raw_header(block, "Event") is None  # only lines after the first
    assert raw_header("Event: X\nContextual: no\nContext: yes", "Context") == "yes"


def test_narrowed_events_are_dropped_unparsed_and_the_rest_kept() -> None:
    whole = parse_rawman(CAPTURE)
    narrowed = parse_rawman(CAPTURE, narrow={"Newexten": first_step_only})
    assert steps(whole) == [
        ("Local/74952293042@incoming-00000000;1", "1"),
        ("Local/74952293042@incoming-00000000;2", "1"),
        ("Local/74952293042@incoming-00000000;2", "2"),
        ("Local/74952293042@incoming-00000000;2", "3"),
    ]
    assert steps(narrowed) == steps(whole)[:2]
    others = [m for m in whole if not (isinstance(m, Event) and m.name == "Newexten")]
    assert [m for m in narrowed if not (isinstance(m, Event) and m.name == "Newexten")] == others


@pytest.mark.parametrize("chunk", [1, 7, 64, len(CAPTURE)])
def test_the_stream_parser_narrows_alike_at_any_chunking(chunk: int) -> None:
    parser = RawmanParser()
    parser.narrow = {"Newexten": first_step_only}
    got: list[object] = []
    for at in range(0, len(CAPTURE), chunk):
        got.extend(parser.feed(CAPTURE[at : at + chunk]))
    assert got == parse_rawman(CAPTURE, narrow={"Newexten": first_step_only})
    assert parser.skipped == 2


def test_an_event_with_an_actionid_is_never_narrowed_away() -> None:
    body = (
        b"Event: Newexten\r\nChannel: A\r\nPriority: 5\r\nActionID: cr-1\r\n\r\n"
        b"Event: Newexten\r\nChannel: A\r\nPriority: 6\r\n\r\n"
    )
    got = parse_rawman(body, narrow={"Newexten": first_step_only})
    assert [m.get("Priority") for m in got] == ["5"]


def test_wanted_drops_before_narrow_is_asked() -> None:
    asked: list[str] = []

    def narrower(block: str) -> bool:
        asked.append(block.split("\n", 1)[0])
        return True

    got = parse_rawman(CAPTURE, wanted=frozenset({"UserEvent"}), narrow={"Newexten": narrower})
    assert asked == []
    assert {m.name for m in got if isinstance(m, Event)} == {"UserEvent", "WaitEventComplete"}


def test_an_unwanted_event_of_another_clients_action_is_dropped() -> None:
    """Asterisk sends every session the OriginateResponse of every client's Originate."""
    body = (
        b"Event: OriginateResponse\r\nActionID: gen-7\r\nResponse: Success\r\n\r\n"
        b"Event: OriginateResponse\r\nActionID: cr-ab-3\r\nResponse: Success\r\n\r\n"
        b"Event: CoreShowChannel\r\nActionID: cr-ab-4\r\nChannel: A\r\n\r\n"
        b"Event: UserEvent\r\nActionID: gen-8\r\nUserEvent: x\r\n\r\n"
    )

    def ours(action_id: str) -> bool:
        return action_id.startswith("cr-ab-")

    got = parse_rawman(body, wanted=frozenset({"UserEvent"}), ours=ours)
    assert [(m.get("Event"), m.action_id) for m in got] == [
        ("OriginateResponse", "cr-ab-3"),
        ("CoreShowChannel", "cr-ab-4"),
        ("UserEvent", "gen-8"),  # wanted: kept whoever asked
    ]
    # Without ``ours`` any ActionID keeps its event, as before.
    assert len(parse_rawman(body, wanted=frozenset({"UserEvent"}))) == 4
