"""The sans-I/O layer against bytes a real Asterisk 22.10.1 sent (tests/fixtures/ami)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.ami.message import Event, Message, Response
from router.ami.protocol import (
    LONG_LINES,
    MAX_ANSWER_LINES,
    MAX_BODY_BYTES,
    MAX_EVENT_LINES,
    MAX_LINE_BYTES,
    MIN_MESSAGE_BYTES,
    STRAYS,
    Action,
    LeftOutItem,
    ListCollector,
    RawmanParser,
    UnreadableAnswer,
    assemble_result,
    encode_form,
    encode_query,
    encode_rawman,
    parse_body,
    parse_mxml,
    parse_rawman,
    split_waitevent,
)
from router.ami.protocol import _LongLines as LongLines
from router.ami.protocol import _Strays as Strays
from router.errors import AMIProtocolError, AMIValidationError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "ami"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture(params=["rawman", "mxml"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def parse(name: str, fmt: str) -> list[Message]:
    return parse_body(load(f"{name}.{fmt}"), "text/xml" if fmt == "mxml" else "text/plain")


def test_login_response(fmt: str) -> None:
    (msg,) = parse("login", fmt)
    assert isinstance(msg, Response)
    assert msg.ok
    assert msg.message == "Authentication accepted"
    assert msg.action_id == "login-1"
    assert msg["actionid"] == msg["ActionID"] == "login-1"


def test_errors_are_responses_not_exceptions(fmt: str) -> None:
    (denied,) = parse("not_logged_in", fmt)
    assert isinstance(denied, Response)
    assert not denied.ok
    assert denied.message == "Permission denied"
    (missing,) = parse("redirect_missing", fmt)
    assert missing.get("Message") == "Channel does not exist: Local/x"


def test_repeated_keys_keep_order(fmt: str) -> None:
    (msg,) = parse("command", fmt)
    outputs = msg.getall("Output")
    assert len(outputs) == 2
    assert outputs[0].startswith("System uptime:")
    assert outputs[1].startswith("Last reload:")
    assert msg.to_dict()["Output"] == outputs


def test_cyrillic_and_xml_specials_round_trip(fmt: str) -> None:
    messages = parse("waitevent_call", fmt)
    (user,) = [m for m in messages if m.get("UserEvent") == "CRTest"]
    assert user["Name"] == "Кириллица & <теги> 'апостроф' \"кавычки\""
    # mxml folds 'Bar-Baz' to 'bar_baz'; lookups fold the same way in both formats.
    assert user["Bar-Baz"] == "x"
    assert user.get("bar_baz") == "x"
    caller = next(m for m in messages if m.get("CallerIDName") not in (None, "<unknown>"))
    assert caller["CallerIDName"] == "Пётр Иванов"


def test_mxml_restores_known_key_spelling() -> None:
    (msg,) = parse("coresettings", "mxml")
    keys = msg.keys()
    assert "Response" in keys
    assert "AMIversion" in keys
    assert msg["amiversion"] == msg["AMIversion"]


def test_waitevent_reply_splits_into_events(fmt: str) -> None:
    response, events = split_waitevent(parse("waitevent_call", fmt))
    assert response.ok
    assert response.message == "Waiting for Event completed."
    assert all(isinstance(e, Event) for e in events)
    names = [e.name for e in events]
    assert "WaitEventComplete" not in names
    # A Local call in order: channels appear before the dialplan runs their UserEvent.
    assert names.index("Newchannel") < names.index("UserEvent")
    request = next(e for e in events if e.get("UserEvent") == "RouteRequest")
    assert request["DID"] == "74952293042"
    assert request["Caller"] == "+79161234567"
    assert request["Context"] == "incoming"


def test_event_list_complete(fmt: str) -> None:
    result = assemble_result(parse("coreshowchannels", fmt))
    assert result.is_list
    assert result.complete
    assert result.closing is not None
    assert result.closing.name == "CoreShowChannelsComplete"
    assert int(result.closing["ListItems"]) == len(result.items) == 2
    assert {i.name for i in result.items} == {"CoreShowChannel"}


def test_empty_event_list(fmt: str) -> None:
    result = assemble_result(parse("coreshowchannels_empty", fmt))
    assert result.is_list
    assert result.complete
    assert result.items == ()
    assert result.closing is not None
    assert result.closing["ListItems"] == "0"


def test_queue_status_list_with_mixed_items(fmt: str) -> None:
    result = assemble_result(parse("queuestatus", fmt))
    assert result.complete
    assert result.items[0].name == "QueueParams"
    assert result.items[0]["Queue"] == "sales"


def test_plain_action_is_complete(fmt: str) -> None:
    result = assemble_result(parse("ping", fmt))
    assert not result.is_list
    assert result.complete
    assert result.response["Ping"] == "Pong"


def test_truncated_list_is_a_protocol_error() -> None:
    body = load("coreshowchannels.rawman")
    cut = body[: body.index(b"Event: CoreShowChannelsComplete")]
    with pytest.raises(AMIProtocolError, match="truncated"):
        assemble_result(parse_rawman(cut))
    assert not assemble_result(parse_rawman(cut), strict=False).complete


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"<html><body>404 Not Found</body></html>",
        b"Hello world\r\n\r\n",
        b"Channel: x\r\nResponse: Success\r\n\r\n",
        b"Response: Success\r\nMessage: cut in the mid",
        b"\x00\xff\xfe garbage \x00",
        b"A" * 70_000 + b"\r\n\r\n",
    ],
)
def test_garbage_rawman_raises_protocol_error_only(body: bytes) -> None:
    with pytest.raises(AMIProtocolError):
        parse_rawman(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<ajax-response>",
        b"<html><body/></html>",
        b"<ajax-response><response><generic/></response></ajax-response>",
        b"<ajax-response><response><generic channel='x'/></response></ajax-response>",
        b"<ajax-response><banana/></ajax-response>",
        b"<ajax-response></ajax-response>",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<ajax-response><response><generic response='&e;'/></response></ajax-response>",
        load("waitevent_call.mxml")[:-40],
    ],
)
def test_garbage_mxml_raises_protocol_error_only(body: bytes) -> None:
    with pytest.raises(AMIProtocolError):
        parse_mxml(body)


def test_body_size_is_bounded() -> None:
    with pytest.raises(AMIProtocolError, match="exceeds"):
        parse_rawman(load("listcommands.rawman"), max_size=100)
    with pytest.raises(AMIProtocolError, match="exceeds"):
        parse_mxml(load("listcommands.mxml"), max_size=100)


# No deadline: a loaded CI machine (2 workers on 2 cores) stalled one example
# past Hypothesis's 200 ms, a red run; speed is measured in bench/, not here.
@settings(deadline=None)
@given(st.binary(max_size=512))
def test_fuzzed_rawman_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(AMIProtocolError):
        parse_rawman(data)


@settings(deadline=None)
@given(st.binary(max_size=512))
def test_fuzzed_mxml_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(AMIProtocolError):
        parse_mxml(data)


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=64))
def test_incremental_parser_any_chunking(chunk: int) -> None:
    """A TCP stream may split anywhere, even inside a Cyrillic letter."""
    body = load("waitevent_call.rawman")
    parser = RawmanParser()
    got: list[Message] = []
    for i in range(0, len(body), chunk):
        got.extend(parser.feed(body[i : i + chunk]))
    parser.close()
    assert got == parse_rawman(body)


def test_incremental_parser_banner_and_truncation() -> None:
    parser = RawmanParser(banner=True)
    assert parser.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n") == []
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    with pytest.raises(AMIProtocolError, match="truncated"):
        parser.close()
    with pytest.raises(AMIProtocolError, match="banner"):
        RawmanParser(banner=True).feed(b"HTTP/1.1 200 OK\r\n")


def test_incremental_parser_bounds_buffer() -> None:
    parser = RawmanParser(max_buffer=1024)
    with pytest.raises(AMIProtocolError):
        parser.feed(b"Event: X\r\nK: " + b"v" * 2000)


# ------------------------------------------------------------------ encoding


def test_encode_query_escapes_plus_space_cyrillic_and_specials() -> None:
    action = Action.build(
        "Setvar",
        {"Variable": "CR", "Value": "Иванов & <Ко> a+b =c"},
        action_id="7",
    )
    query = encode_query(action)
    assert query.startswith("Action=Setvar&ActionID=7&Variable=CR&Value=")
    assert "+" not in query
    assert "%2B" in query
    assert "%20" in query
    assert "%26" in query
    assert "%D0%98" in query  # 'И' as UTF-8


def test_get_gives_the_first_of_a_repeated_key_in_any_spelling() -> None:
    """``get`` answers from a dict of the keys as spelled (issue 16: built once per
    message); the first value of a repeated key wins, as the scan it replaced gave."""
    msg = Event((("Event", "X"), ("Output", "one"), ("Output", "two"), ("Cause-txt", "busy")))
    assert msg.get("Output") == "one"
    assert msg.get("output") == "one"  # through the folded index
    assert msg.get("cause_txt") == "busy"
    assert msg.get("Missing") is None
    assert msg.get("Missing", "d") == "d"
    assert msg.get("Output") == "one"  # the second lookup, from the built dict


def test_spelled_gives_the_first_value_of_each_key_as_spelled_and_nothing_folded() -> None:
    """``spelled`` is what ``get`` reads first (issue 16: a CEL record's fifteen
    reads are dict lookups on it); another spelling is not in it, ``get`` finds it."""
    msg = Event((("Event", "X"), ("Output", "one"), ("Output", "two"), ("Cause-txt", "busy")))
    assert dict(msg.spelled()) == {"Event": "X", "Output": "one", "Cause-txt": "busy"}
    assert msg.spelled().get("cause_txt") is None
    assert msg.get("cause_txt") == "busy"
    assert msg.spelled() is msg.spelled()  # built once per message


_KEYS = st.sampled_from(
    ["Linkedid", "LinkedID", "linkedid", "Cause", "cause", "Cause-txt", "cause_txt", "Output", "X"]
)


@settings(deadline=None)
@given(
    fields=st.lists(st.tuples(_KEYS, st.text(max_size=3)), max_size=80),
    asked=st.lists(_KEYS, max_size=4),
)
def test_a_miss_scanned_answers_what_the_folded_index_answers(
    fields: list[tuple[str, str]], asked: list[str]
) -> None:
    """A lookup that misses the keys as spelled folds them one by one instead of
    building the folded index (issue 16: a DialState's Linkedid, a Hangup's
    guarded ``cause``): the same answers as a message whose index is built,
    for ``get`` and ``getall``, in any order of asking, short and long messages."""
    scanned = Event((("Event", "X"), *fields))
    indexed = Event((("Event", "X"), *fields))
    indexed["Event"]  # builds the folded index
    for key in asked + asked:
        assert scanned.get(key) == indexed.get(key)
        assert scanned.get(key, "d") == indexed.get(key, "d")
        assert scanned.getall(key) == indexed.getall(key)


def test_encode_repeated_variables_and_python_values() -> None:
    action = Action.build(
        "Originate",
        {
            "Channel": "Local/1@sink",
            "Async": True,
            "Priority": 1,
            "Timeout": None,
            "Variable": {"A": "1", "B": "два"},
        },
    )
    assert action.params == (
        ("Channel", "Local/1@sink"),
        ("Async", "true"),
        ("Priority", "1"),
        ("Variable", "A=1"),
        ("Variable", "B=два"),
    )
    form = encode_form(action).decode()
    assert form.count("Variable=") == 2
    raw = encode_rawman(action)
    assert raw.startswith(b"Action: Originate\r\n")
    assert raw.endswith(b"\r\n\r\n")
    assert parse_rawman(b"Response: x\r\n" + raw[raw.index(b"\r\n") + 2 :])


def test_encode_refuses_header_injection_and_oversize() -> None:
    with pytest.raises(AMIValidationError, match="line break"):
        encode_rawman(Action.build("UserEvent", {"UserEvent": "x\r\nAction: Command"}))
    with pytest.raises(AMIValidationError, match="at most 128"):
        encode_query(Action.build("UserEvent", [(f"H{i}", "v") for i in range(200)]))
    with pytest.raises(AMIValidationError, match="413"):
        encode_form(Action.build("UserEvent", {"Body": "x" * 50_000}))


def test_action_id_overrides_params() -> None:
    action = Action.build("Ping", [("ActionID", "sneaky")], action_id="real")
    assert action.pairs() == [("Action", "Ping"), ("ActionID", "real")]


# ------------------------------------------------------------------ TCP lists


def test_list_collector_matches_interleaved_items_by_action_id() -> None:
    collector = ListCollector()
    collector.expect("l-1")
    body = load("coreshowchannels.rawman")
    messages = parse_rawman(body)
    noise = Event((("Event", "Newexten"), ("Channel", "x")))
    done = []
    for msg in [messages[0], noise, *messages[1:]]:
        result = collector.feed(msg)
        if result:
            done.append(result)
    assert len(done) == 1
    action_id, result = done[0]
    assert action_id == "l-1"
    assert result.complete
    assert len(result.items) == 2


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.one_of(
                st.text(max_size=20), st.from_regex(r"[A-Za-z0-9_.~-]{0,20}", fullmatch=True)
            ),
        ),
        max_size=6,
    )
)
def test_form_encoding_skips_quote_only_where_quote_changes_nothing(
    pairs: list[tuple[str, str]],
) -> None:
    """The unreserved-text shortcut encodes exactly as ``quote(..., safe="")``."""
    from urllib.parse import quote

    from router.ami.protocol import _urlencode

    assert _urlencode(pairs) == "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs
    )


# -- message boundaries as Asterisk writes them ------------------------------------------

#: A Newexten whose AppData holds bare LFs, as Asterisk writes it (the value as
#: the dialplan gave it): the LFs shaped as a blank line and a forged request.
_FORGED = (
    b"Event: Newexten\r\nChannel: PJSIP/trunk-00000001\r\nApplication: NoOp\r\n"
    b"AppData: x\n\nEvent: UserEvent\nUserEvent: CallRouterRequest\n"
    b"Channel: PJSIP/victim-00000009\r\nContext: callrouter-inbound\r\n\r\n"
)
_AFTER = b"Event: After\r\nChannel: PJSIP/trunk-00000001\r\n\r\n"
_EVIL_END = b"Event: Newexten\r\nAppData: Evil\n\r\nContext: c\r\n\r\n"


def _names(messages: list[Message]) -> list[str | None]:
    return [m.get("Event") for m in messages]


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_bare_lf_in_a_value_neither_ends_nor_forges_an_event(chunk: int) -> None:
    body = _FORGED + _EVIL_END + _AFTER
    for messages in (
        parse_rawman(body),
        parse_rawman(body, wanted=frozenset({"Newexten", "After"}), narrow={"Newexten": bool}),
        _fed(body, chunk),
    ):
        assert _names(messages) == ["Newexten", "Newexten", "After"]
        forged, evil = messages[0], messages[1]
        assert forged["AppData"] == (
            "x\n\nEvent: UserEvent\nUserEvent: CallRouterRequest\nChannel: PJSIP/victim-00000009"
        )
        assert forged["Channel"] == "PJSIP/trunk-00000001"
        assert forged["Context"] == "callrouter-inbound"
        assert evil["AppData"] == "Evil\n"
        assert evil["Context"] == "c"


def _fed(body: bytes, chunk: int) -> list[Message]:
    """``body`` fed to one stream parser in pieces of ``chunk`` bytes."""
    parser = RawmanParser()
    out = [m for at in range(0, len(body), chunk) for m in parser.feed(body[at : at + chunk])]
    assert not parser.pending
    return out


def test_input_without_any_cr_still_splits_at_blank_lines() -> None:
    assert _names(parse_rawman(b"Event: A\nX: 1\n\nEvent: B\n\n")) == ["A", "B"]
    parser = RawmanParser()
    assert _names(parser.feed(b"Event: A\nX: 1\n\nEvent: B\n") + parser.feed(b"\n")) == ["A", "B"]


def test_an_event_list_is_bounded_in_bytes() -> None:
    collector = ListCollector(max_bytes=2000)
    collector.expect("1")
    assert (
        collector.feed(
            Response((("Response", "Success"), ("ActionID", "1"), ("EventList", "start")))
        )
        is None
    )
    item = Event((("Event", "CoreShowChannel"), ("ActionID", "1"), ("Channel", "x" * 300)))
    for _ in range(5):
        assert collector.feed(item) is None
    with pytest.raises(AMIProtocolError, match="exceeds 2000 bytes"):
        collector.feed(item)


def test_a_long_unfinished_message_in_small_reads_is_scanned_once() -> None:
    """16 MB of one message in 4 KB reads: each read looked for a message end
    in the whole buffer, 22 s of CPU for what takes well under one."""
    parser = RawmanParser()
    piece = b"Key: " + b"v" * 4000 + b"\r\n"
    # An answer: its 4,000 lines are more than an event may have (MAX_EVENT_LINES).
    parser.feed(b"Response: Success\r\n")
    started = time.process_time()
    for _ in range(16 * 1024 * 1024 // len(piece)):
        assert parser.feed(piece) == []
    assert len(parser.feed(b"\r\n")) == 1
    assert time.process_time() - started < 5.0  # about 0.1 s; quadratic was 20+ s


def test_a_key_repeated_many_times_is_indexed_in_linear_time() -> None:
    message = Response((("Response", "Success"), *(("K", "v") for _ in range(150_000))))
    started = time.process_time()
    assert message.action_id is None
    assert len(message.getall("K")) == 150_000
    assert time.process_time() - started < 5.0  # about 0.05 s; quadratic was 25 s


def _event_of(lines: int, *, bare_lf: bool = False) -> bytes:
    head = b"Event: Newchannel\r\n" + (b"AppData: a\nb\r\n" if bare_lf else b"")
    return head + b"".join(b"H%d: v\r\n" % i for i in range(lines - head.count(b"\r\n"))) + b"\r\n"


@pytest.mark.parametrize("bare_lf", [False, True])
def test_an_event_of_100000_headers_is_refused_before_its_lines_are_split(bare_lf: bool) -> None:
    """1.1 MB on the wire made a message of 100,000 fields: 12 MB held, and its
    first lookup indexed them for 0.7 s; a 32 MB one (within max_response_bytes)
    held a gigabyte and stalled the event loop 12 s."""
    body = _event_of(100_000, bare_lf=bare_lf)
    started = time.process_time()
    with pytest.raises(AMIProtocolError, match=r"an event of 100000 lines, more than 1000 .*Newc"):
        parse_rawman(body)
    parser = RawmanParser()
    for at in range(0, len(body) - 65536, 65536):
        assert parser.feed(body[at : at + 65536]) == []
    with pytest.raises(AMIProtocolError, match="an event of 100000 lines"):
        parser.feed(body[at + 65536 :])
    assert time.process_time() - started < 1.0  # a count, no split: about 0.01 s


def test_an_event_of_the_largest_size_and_a_long_command_output_still_parse() -> None:
    assert len(parse_rawman(_event_of(MAX_EVENT_LINES))[0]) == MAX_EVENT_LINES
    output = b"Response: Success\r\nMessage: Command output follows\r\n"
    output += b"Output: line\r\n" * 50_000 + b"\r\n"
    assert len(parse_rawman(output)[0].getall("Output")) == 50_000
    huge = b"Response: Success\r\n" + b"Output: x\r\n" * MAX_ANSWER_LINES + b"\r\n"
    with pytest.raises(AMIProtocolError, match=f"an answer of {MAX_ANSWER_LINES + 1} lines"):
        parse_rawman(huge)


def test_a_real_asterisk_writes_bare_lfs_in_appdata_and_they_stay_there() -> None:
    """Captured from the sandbox's Asterisk 22: priority 1 of a context is
    ``NoOp(${STRFTIME(${EPOCH},,x%n%nEvent: UserEvent%n...)})`` (strftime's
    ``%n`` is a LF), and Newexten's AppData carries the substituted text, LFs
    and all, between CR LF line ends."""
    raw = load("newexten_bare_lf.rawman")
    assert b"AppData: x\n\nEvent: UserEvent\n" in raw
    for messages in (parse_rawman(raw), _fed(raw, 1), _fed(raw, 64)):
        assert _names(messages) == ["Newexten"]
        assert messages[0]["AppData"] == (
            "x\n\nEvent: UserEvent\nUserEvent: CallRouterRequest\nChannel: PJSIP/victim"
        )
        assert messages[0]["Channel"] == "Local/s@lftest2-00000001;2"


@pytest.mark.parametrize(
    "block",
    [
        b"\x1b" * 60_000 + b"\r\n\r\n",  # no "Key: Value" line at all
        b"\x1b" * 60_000 + b": v\r\n\r\n",  # a first key that is neither Event nor Response
    ],
)
def test_a_protocol_error_quotes_the_peers_bytes_only_in_part(
    block: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The error becomes a WARNING at each reconnect (router.ami.tcp) and the
    gap's reason: a hostile peer's 60 KB line (240 KB as repr) is not quoted whole.
    A stream skips such a block (a caller's number can bring one in, issue 16)
    and its WARNING quotes none of it; a body of nothing else is an error."""
    with pytest.raises(AMIProtocolError) as info:
        parse_rawman(block)
    assert len(str(info.value)) < 400
    parser = RawmanParser(banner=False)
    with caplog.at_level(logging.WARNING, logger="router.ami"):
        assert parser.feed(block) == []
    assert parser.strays == 1
    assert "\x1b" not in caplog.text
    assert all(len(record.getMessage()) < 400 for record in caplog.records)


@pytest.mark.parametrize("crlf", [True, False])
def test_a_body_of_a_million_tiny_messages_is_refused_before_they_are_made(
    crlf: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a hostile AJAM peer answered a poll with 32 MB of
    ``Event: Newchannel`` and a blank line, 1.6 million events: 670 MB held
    and 3.5 s of parse, then as many events for the engine, all within
    ``max_response_bytes``. A message costs ~400 bytes however short it is,
    so each counts at least ``MIN_MESSAGE_BYTES`` against the body's bound."""
    sep = "\r\n" if crlf else "\n"
    tiny = f"Event: Newchannel{sep}{sep}".encode()
    count = MAX_BODY_BYTES // MIN_MESSAGE_BYTES + 1
    body = tiny * count
    assert len(body) < MAX_BODY_BYTES
    from router.ami import protocol

    parse_blocks = protocol._parse_blocks
    parsed: list[int] = []

    def spied(*args: Any, **kwargs: Any) -> Any:
        parsed.append(len(args[0]))
        return parse_blocks(*args, **kwargs)

    monkeypatch.setattr(protocol, "_parse_blocks", spied)
    with pytest.raises(AMIProtocolError, match=f"{count} messages, more than"):
        parse_rawman(body)
    # No message made: nothing reached the parsing of blocks (read, not timed:
    # 0.5 s of a clock measured the host; issue 16).
    assert parsed == []
    # As many as that bound allows still parse, and so does a small body.
    assert len(parse_rawman(tiny * 1000)) == 1000
    assert len(parse_rawman(tiny * 10, max_size=10 * MIN_MESSAGE_BYTES)) == 10
    with pytest.raises(AMIProtocolError, match="11 messages, more than 10"):
        parse_rawman(tiny * 11, max_size=11 * MIN_MESSAGE_BYTES - 1)


def test_an_mxml_body_of_tiny_messages_is_bounded_as_rawman_is() -> None:
    """Issue 16: the same bound for mxml, before a message is made of them."""
    element = b"<response type='object' id='unknown'><generic event='A' /></response>"
    body = b"<ajax-response>" + element * 11 + b"</ajax-response>"
    with pytest.raises(AMIProtocolError, match="11 messages, more than 10"):
        parse_mxml(body, max_size=10 * MIN_MESSAGE_BYTES + MIN_MESSAGE_BYTES // 2)
    assert len(parse_mxml(body, max_size=11 * MIN_MESSAGE_BYTES)) == 11


def test_an_event_list_of_tiny_items_is_bounded_by_what_they_hold() -> None:
    """Issue 16: an endless list of ``Event: A`` items over TCP reached a
    million items (the item bound) within the byte bound: 630 MB held for
    one action. Each item counts at least ``MIN_MESSAGE_BYTES``."""
    collector = ListCollector(max_bytes=100 * MIN_MESSAGE_BYTES)
    collector.expect("1")
    start = Response((("Response", "Success"), ("ActionID", "1"), ("EventList", "start")))
    assert collector.feed(start) is None
    item = Event((("Event", "A"), ("ActionID", "1")))
    for _ in range(100):
        assert collector.feed(item) is None
    with pytest.raises(AMIProtocolError, match="exceeds"):
        collector.feed(item)


def _listing(app_data: bytes, *, crlf: bool = True) -> bytes:
    """A CoreShowChannels answer of three channels, the second's
    ``ApplicationData`` being ``app_data``."""
    blocks = [b"Response: Success\nActionID: 7\nEventList: start\nMessage: Channels will follow"]
    for n, data in ((1, b"1"), (2, app_data), (3, b"3")):
        blocks.append(
            b"Event: CoreShowChannel\nActionID: 7\nChannel: PJSIP/10%d-0000000%d\n"
            b"Uniqueid: 1.%d\nLinkedid: 1.%d\nApplicationData: %s" % (n, n, n, n, data)
        )
    blocks.append(
        b"Event: CoreShowChannelsComplete\nActionID: 7\nEventList: Complete\nListItems: 3"
    )
    body = b"\n\n".join(blocks) + b"\n\n"
    return body.replace(b"\n", b"\r\n") if crlf else body


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("crlf", [True, False], ids=["crlf", "lf"])
@pytest.mark.parametrize("size", [None, 1 << 18, 65536, 4096, 1000, 7])
def test_a_listing_item_with_a_line_too_long_is_skipped_and_the_rest_read(
    size: int | None, crlf: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16 (hattack38): one ``CoreShowChannel`` item with a line of over
    64 KiB (a hostile AMI peer's channel) failed the whole answer, so the
    whole reconcile: over AJAM the action failed, over TCP the connection was
    dropped and the reconcile after the reconnect read it again. That item
    is skipped, said once, and the other channels are listed; as a body and
    as a stream, however the reads cut it."""
    body = _listing(b"x" * (MAX_LINE_BYTES + 100), crlf=crlf)
    before = LONG_LINES.count
    if size is None:
        messages = parse_rawman(body)
    else:
        parser = RawmanParser()
        messages = [m for chunk in _chunks(body, size) for m in parser.feed(chunk)]
        assert not parser.pending
        assert parser.buffered == 0
    result = assemble_result(messages)
    assert result.complete
    assert [i.get("Channel") for i in result.items] == ["PJSIP/101-00000001", "PJSIP/103-00000003"]
    assert LONG_LINES.count == before + 1
    assert "x" * 64 not in caplog.text  # the peer's bytes are never logged


_LONG_LISTITEMS = b"ListItems: " + b"3" * (MAX_LINE_BYTES + 100)


@pytest.mark.parametrize(
    "closing",
    [b"ListItems: 3", b"", b"ListItems: 2", _LONG_LISTITEMS],
    ids=["counted", "no-count", "count-short", "count-too-long"],
)
@pytest.mark.parametrize("size", [None, 65536, 4096, 7])
def test_a_list_short_of_an_item_left_out_says_so_whatever_its_closing_event_counts(
    size: int | None, closing: bytes
) -> None:
    """Issue 16: an item with a line over 64 KiB was left out, and whether the
    answer said the list was short rested on its closing event's
    ``ListItems``: with none, with that line itself too long (kept without
    it) or with a count that leaves the item out (a hostile peer's), the
    answer came back ``unread_items`` 0, whole to every caller: the reconcile
    ended the live call whose channel it was, presence said complete. The
    parser's own count of items it left out holds, as a body (AJAM) and as a
    stream matched by ActionID (TCP), however the reads cut it."""
    body = _listing(b"x" * (MAX_LINE_BYTES + 100), crlf=False)
    body = body.replace(b"\nListItems: 3", b"\n" + closing if closing else b"")
    body = body.replace(b"\n", b"\r\n")
    messages = _read(body, size)
    for result in (
        assemble_result(messages),
        _collected(messages, "7"),
    ):
        assert result.complete
        assert [i.get("Channel") for i in result.items] == [
            "PJSIP/101-00000001",
            "PJSIP/103-00000003",
        ]
        assert result.left_out == 1
        assert result.unread_items == 1
    # The stand-in carries the event's name and ActionID, nothing of its text.
    (stand_in,) = [m for m in messages if type(m) is LeftOutItem]
    assert stand_in.fields == (("Event", "CoreShowChannel"), ("ActionID", "7"))


def _collected(messages: list[Message], action_id: str) -> Any:
    """The TCP client's path: ``messages`` matched to ``action_id``'s list."""
    collector = ListCollector()
    collector.expect(action_id)
    (done,) = [d for m in messages if (d := collector.feed(m)) is not None]
    assert done[0] == action_id
    return done[1]


def test_an_item_left_out_is_no_event_of_a_wait_event_reply() -> None:
    """A :class:`LeftOutItem` stands for an item in an action's list only: a
    ``WaitEvent`` reply holding one (an event with an ``ActionID`` and a line
    too long) delivers the events around it, not it."""
    long = b"Junk: " + b"j" * (MAX_LINE_BYTES + 1)
    body = (
        b"Response: Success\r\nActionID: w1\r\nMessage: Waiting for Event completed.\r\n\r\n"
        b"Event: Foo\r\nActionID: 9\r\n" + long + b"\r\n\r\n"
        b"Event: Bar\r\n\r\n"
        b"Event: WaitEventComplete\r\nActionID: w1\r\n\r\n"
    )
    result = assemble_result(parse_rawman(body))
    _, events = split_waitevent((result.response, *result.extra))
    assert [(type(e), e.name) for e in events] == [(Event, "Bar")]


def test_a_line_just_within_the_bound_is_read() -> None:
    value = b"x" * (MAX_LINE_BYTES - len(b"ApplicationData: ") - 2)
    messages = parse_rawman(_listing(value))
    assert [i.get("ApplicationData") for i in assemble_result(messages).items][1] == value.decode()


def _answer_with_a_long(where: str, *, action_id: bool = True, crlf: bool = True) -> bytes:
    """A ``Getvar`` answer with a line over 64 KiB (``where``: its ``Message``
    line before or after its ``ActionID`` line, or its ``Response`` line
    itself), then an event: the framing is whole, the blank line ends it."""
    long = b"m" * (MAX_LINE_BYTES + 100)
    lines = [b"Response: Success", b"ActionID: 1", b"Message: " + long, b"Value: 2"]
    if where == "after":
        lines[1], lines[2] = lines[2], lines[1]
    elif where == "response":
        lines[0] += long
        lines[2] = b"Message: ok"
    if not action_id:
        lines.remove(b"ActionID: 1")
    body = b"\n".join(lines) + b"\n\nEvent: Bar\nActionID: 1\n\n"
    return body.replace(b"\n", b"\r\n") if crlf else body


def _read(body: bytes, size: int | None) -> list[Message]:
    """``body`` parsed whole (``size`` None) or fed to a stream in reads of ``size``."""
    if size is None:
        return parse_rawman(body)
    parser = RawmanParser()
    messages = [m for chunk in _chunks(body, size) for m in parser.feed(chunk)]
    assert not parser.pending
    assert parser.buffered == 0
    return messages


@pytest.mark.parametrize("where", ["before", "after", "response"])
@pytest.mark.parametrize("crlf", [True, False], ids=["crlf", "lf"])
@pytest.mark.parametrize("size", [None, 1 << 18, 65536, 4096, 7])
def test_an_answer_with_a_line_too_long_fails_only_its_action(
    size: int | None, crlf: bool, where: str
) -> None:
    """Issue 16: an answer with a line over the bound was a protocol error
    although its block still ended at its blank line (over TCP the
    connection was dropped: every action in flight failed, the event stream
    reconnected with a gap). Its ``ActionID`` read, it stands for its
    action's answer, which fails naming the bound and the line's key; what
    follows is read on, as a body and as a stream, however the reads cut it."""
    messages = _read(_answer_with_a_long(where, crlf=crlf), size)
    assert [type(m) for m in messages] == [UnreadableAnswer, Event]
    answer = messages[0]
    assert isinstance(answer, Response)
    assert answer.action_id == "1"
    assert not answer.ok
    key = "Response" if where == "response" else "Message"
    with pytest.raises(AMIProtocolError) as raised:
        assemble_result(messages)
    assert str(raised.value) == (
        f"an AMI answer whose {key} line is over {MAX_LINE_BYTES} bytes (the parser's "
        "line bound): no Asterisk sends one (a broken or hostile AMI peer?)"
    )
    assert messages[1].get("Event") == "Bar"


@pytest.mark.parametrize("size", [None, 4096])
def test_an_answer_with_a_line_too_long_naming_no_action_is_still_refused(
    size: int | None,
) -> None:
    """Without a readable ``ActionID`` (none, or it is the long line) which
    action waits for it cannot be told: still a protocol error, naming the
    bound, never the peer's bytes."""
    bodies = [
        _answer_with_a_long("before", action_id=False),
        b"Response: Success\r\nActionID: 1" + b"j" * (MAX_LINE_BYTES + 1) + b"\r\n\r\n",
    ]
    for body, key in zip(bodies, ["Message", "ActionID"], strict=True):
        with pytest.raises(AMIProtocolError) as raised:
            _read(body, size)
        said = str(raised.value)
        assert f"whose {key} line is over {MAX_LINE_BYTES} bytes" in said
        assert "the action it answers cannot be told" in said
        assert "m" * 64 not in said
        assert "j" * 64 not in said


def test_a_long_line_of_a_block_neither_answer_nor_event_is_refused_at_once() -> None:
    """A banner's or a block's that is no answer nor event: refused as soon
    as the bound is passed, nothing read past."""
    parser = RawmanParser(banner=True)
    with pytest.raises(AMIProtocolError, match="without a newline"):
        parser.feed(b"Asterisk Call Manager/" + b"9" * (MAX_LINE_BYTES + 10))
    parser = RawmanParser()
    with pytest.raises(AMIProtocolError, match="without a newline"):
        parser.feed(b"Foo: " + b"9" * (MAX_LINE_BYTES + 10))
    with pytest.raises(AMIProtocolError, match="no AMI answer nor event"):
        parse_rawman(b"Foo: " + b"9" * (MAX_LINE_BYTES + 10) + b"\r\n\r\n")


def test_events_skipped_for_a_long_line_are_said_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of such events is one WARNING a minute, naming the event, with
    the count of those not said."""
    long_lines = LongLines()
    monkeypatch.setattr("router.ami.protocol.LONG_LINES", long_lines)
    body = _listing(b"x" * (MAX_LINE_BYTES + 1))
    with caplog.at_level("WARNING", logger="router.ami"):
        for _ in range(3):
            parse_rawman(body)
    said = [r.getMessage() for r in caplog.records if "was skipped" in r.getMessage()]
    assert len(said) == 1
    assert "an AMI event 'CoreShowChannel' with a line of over 65536 bytes" in said[0]
    assert long_lines.count == 3
    monkeypatch.setattr(long_lines, "_told", time.monotonic() - 61)
    with caplog.at_level("WARNING", logger="router.ami"):
        parse_rawman(body)
    assert "; 2 more since the last warning" in caplog.records[-1].getMessage()


def test_blocks_that_are_no_ami_message_are_said_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller number with a blank line at every step of a call: one WARNING
    a minute, the next one counting the blocks not said (issue 16)."""
    strays = Strays()
    monkeypatch.setattr("router.ami.protocol.STRAYS", strays)
    parser = RawmanParser(banner=False)
    stray = b"Event: Newexten\r\nCallerIDNum: 1\r\n\r\nx\r\nExten: 100\r\n\r\n"
    with caplog.at_level("WARNING", logger="router.ami"):
        for _ in range(3):
            parser.feed(stray)
    said = [r.getMessage() for r in caplog.records if "were skipped" in r.getMessage()]
    assert len(said) == 1
    assert said[0].startswith("1 block(s) of the AMI stream that are no AMI answer nor event")
    assert strays.count == 3
    monkeypatch.setattr(strays, "_told", time.monotonic() - 61)
    with caplog.at_level("WARNING", logger="router.ami"):
        parser.feed(stray)
    assert caplog.records[-1].getMessage().endswith("; 2 more since the last warning")
    assert strays.count == parser.strays == 4


def test_a_closing_event_kept_without_its_long_line_is_said_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_lines = LongLines()
    monkeypatch.setattr("router.ami.protocol.LONG_LINES", long_lines)
    with caplog.at_level("WARNING", logger="router.ami"):
        parse_rawman(_closing_listing("last"))
    assert long_lines.count == 1
    assert (
        "an AMI event 'CoreShowChannelsComplete' with a line of over 65536 bytes was kept "
        "without that line (it ends an event list)"
    ) in caplog.text


def test_a_peers_long_keys_are_folded_but_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys are folded through a bounded memo; a peer's keys may be a line
    long, and 4,096 of them held about 470 MB for the life of the process.
    A long key is folded each time instead; Asterisk's are remembered."""
    from router.ami import message

    monkeypatch.setattr(message, "_NORMALIZED", {})
    long_key = "Cause-Txt" * 2000
    event = Event((("Event", "Hangup"), (long_key, "x"), ("Cause-txt", "Normal")))
    assert event.get("cause_txt") == "Normal"  # a miss folds every key it passes
    assert event.get("cause_txt" * 2000) == "x"
    assert message.normalize_key(long_key) == "cause_txt" * 2000
    assert long_key not in message._NORMALIZED
    assert message._NORMALIZED["Cause-txt"] == "cause_txt"


_ODD_LINES = (
    "Key:NoSpace",  # no ": "
    "Two Words: v",  # a space in the key
    ": no key",
    " Lead: v",
    "Odd:Key: v",  # a colon in the key
    "plain text of a Command",
)


def test_lines_read_again_give_the_same_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line read before answers from the parser's memo (issue 16: most of
    an event's lines recur): the same pairs as read afresh, each odd line
    read afresh every time, so a block parses as it always did."""
    from router.ami import protocol

    monkeypatch.setattr(protocol, "_PAIRS", {})
    body = (
        "Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: PJSIP/101\r\n"
        + "".join(f"{line}\r\n" for line in _ODD_LINES)
        + "Value: a: b\r\nEmpty: \r\nCallerIDName: Иван\r\n\r\n"
    ).encode()
    first = parse_rawman(body)
    assert "Device: PJSIP/101" in protocol._PAIRS
    assert not set(_ODD_LINES) & set(protocol._PAIRS)
    for _ in range(2):
        again = parse_rawman(body)
        assert again == first
        assert [m.fields for m in again] == [m.fields for m in first]
    (event,) = first
    assert event.get("Value") == "a: b"
    assert event.get("Odd") == "Key: v"
    assert event.get("Empty") == ""
    assert event.get("opaque_data") == "Two Words: v\n: no key\n Lead: v\nplain text of a Command"


def test_the_parsers_memo_of_lines_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's unique lines never grow the memo past its bound, nor put a
    line longer than its bound in it: each is still read."""
    from router.ami import protocol

    monkeypatch.setattr(protocol, "_PAIRS", {})
    long_value = "x" * protocol._PAIR_LINE_MAX
    parser = RawmanParser()
    for n in range(3 * protocol._PAIRS_MAX):
        (event,) = parser.feed(f"Event: Junk\r\nJunk: {n}\r\nLong: {long_value}\r\n\r\n".encode())
        assert event.get("Junk") == str(n)
        assert event.get("Long") == long_value
        assert len(protocol._PAIRS) <= protocol._PAIRS_MAX
    assert all(len(line) <= protocol._PAIR_LINE_MAX for line in protocol._PAIRS)
    assert f"Long: {long_value}" not in protocol._PAIRS


def _closing_listing(where: str, *, crlf: bool = True) -> bytes:
    """:func:`_listing`'s answer (no item too long) whose closing
    ``CoreShowChannelsComplete`` has a line of over 64 KiB: its name line
    itself (``where="name"``), or a ``Junk`` line after its name, after its
    ``ActionID`` or at its end."""
    body = _listing(b"2", crlf=False)
    closing = b"Event: CoreShowChannelsComplete\nActionID: 7\nEventList: Complete\nListItems: 3"
    lines = closing.split(b"\n")
    junk = b"Junk: " + b"j" * (MAX_LINE_BYTES + 100)
    if where == "name":
        lines[0] += b"C" * (MAX_LINE_BYTES + 100)
    else:
        lines.insert({"after-name": 1, "after-id": 2, "last": len(lines)}[where], junk)
    body = body.replace(closing, b"\n".join(lines))
    return body.replace(b"\n", b"\r\n") if crlf else body


@pytest.mark.parametrize("where", ["name", "after-name", "after-id", "last"])
@pytest.mark.parametrize("crlf", [True, False], ids=["crlf", "lf"])
@pytest.mark.parametrize("size", [None, 1 << 18, 65536, 4096, 7])
def test_an_event_list_whose_closing_event_has_a_line_too_long_still_ends(
    size: int | None, crlf: bool, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: the closing event of a list (``EventList: Complete``) with a
    line of over 64 KiB was skipped like any such event, so the list never
    ended: over TCP the reconcile waited for it until its action timed out,
    over AJAM the body read as cut short. It is kept without its long lines
    (counted and said as a skipped event is) and ends its list; as a body and
    as a stream, however the reads cut it, wherever its long line is."""
    body = _closing_listing(where, crlf=crlf)
    before = LONG_LINES.count
    if size is None:
        messages = parse_rawman(body)
    else:
        parser = RawmanParser()
        messages = [m for chunk in _chunks(body, size) for m in parser.feed(chunk)]
        assert not parser.pending
        assert parser.buffered == 0
    result = assemble_result(messages)
    assert result.complete
    assert [i.get("Channel") for i in result.items] == [
        "PJSIP/101-00000001",
        "PJSIP/102-00000002",
        "PJSIP/103-00000003",
    ]
    assert result.closing is not None
    assert result.closing.name.startswith("CoreShowChannelsComplete")
    assert result.closing.get("ListItems") == "3"
    assert result.closing.get("Junk") is None
    assert all(len(v) <= 256 for _, v in result.closing.fields)
    assert LONG_LINES.count == before + 1
    assert "j" * 64 not in caplog.text  # the peer's bytes are never logged
    assert "C" * 64 not in caplog.text
    # The TCP client's path: items matched to their action by ActionID.
    collector = ListCollector()
    collector.expect("7")
    done = [d for m in messages if (d := collector.feed(m)) is not None]
    assert [(aid, len(r.items), r.complete) for aid, r in done] == [("7", 3, True)]


def _listing_closed_by_a_long(key: str, *, crlf: bool = True) -> bytes:
    """:func:`_listing`'s answer whose closing event's ``key`` line (its
    ``ActionID`` or ``EventList``) is over 64 KiB: the value goes on."""
    body = _listing(b"2", crlf=False)
    closing = b"Event: CoreShowChannelsComplete\nActionID: 7\nEventList: Complete\nListItems: 3"
    line = {"ActionID": b"ActionID: 7", "EventList": b"EventList: Complete"}[key]
    long = closing.replace(line, line + b"j" * (MAX_LINE_BYTES + 100))
    body = body.replace(closing, long)
    return body.replace(b"\n", b"\r\n") if crlf else body


@pytest.mark.parametrize("key", ["ActionID", "EventList"])
@pytest.mark.parametrize("crlf", [True, False], ids=["crlf", "lf"])
@pytest.mark.parametrize("size", [None, 1 << 18, 65536, 4096, 7])
def test_an_event_whose_action_id_or_event_list_line_is_too_long_is_an_error(
    size: int | None, crlf: bool, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: when the long line of a list's closing event was its
    ``ActionID`` (or its ``EventList``), the event was skipped as any such
    event, the list never ended, and its action waited until it timed out
    (over AJAM: "no closing 'EventList: Complete' (truncated)"). Which answer
    it is part of cannot be told: a protocol error naming the line and the
    bound, as a body and as a stream, however the reads cut it."""
    body = _listing_closed_by_a_long(key, crlf=crlf)
    expected = (
        rf"an AMI event 'CoreShowChannelsComplete' whose {key} line is over "
        rf"{MAX_LINE_BYTES} bytes \(the parser's line bound\)"
    )
    parser = RawmanParser()

    def read() -> None:
        if size is None:
            parse_rawman(body)
        else:
            for chunk in _chunks(body, size):
                parser.feed(chunk)

    with pytest.raises(AMIProtocolError, match=expected) as raised:
        read()
    assert "j" * 64 not in str(raised.value)  # the peer's bytes are never said
    assert "j" * 64 not in caplog.text


@pytest.mark.parametrize("size", [None, 4096])
def test_an_event_naming_no_action_with_a_long_event_list_line_is_skipped(
    size: int | None,
) -> None:
    """A long ``EventList`` line is an error only in an event that names an
    action (an ``ActionID``): no action waits for one that names none."""
    body = (
        b"Event: Foo\r\nEventList: Complete" + b"j" * (MAX_LINE_BYTES + 1) + b"\r\n\r\n"
        b"Event: Bar\r\n\r\n"
    )
    if size is None:
        messages = parse_rawman(body)
    else:
        parser = RawmanParser()
        messages = [m for chunk in _chunks(body, size) for m in parser.feed(chunk)]
        assert not parser.pending
    assert [m.name for m in messages] == ["Bar"]


@pytest.mark.parametrize("size", [None, 4096])
def test_an_event_with_a_line_too_long_and_no_list_to_end_is_still_skipped(
    size: int | None,
) -> None:
    """Only a list's end is kept without its long line: an item, or an event
    naming no ActionID, is skipped whole, whatever else it says (an item
    naming an ActionID leaves a :class:`LeftOutItem` for its list to count,
    holding none of its text)."""
    long = b"Junk: " + b"j" * (MAX_LINE_BYTES + 1)
    body = (
        b"Event: CoreShowChannel\r\nActionID: 7\r\n" + long + b"\r\nChannel: PJSIP/1-1\r\n\r\n"
        b"Event: Foo\r\nEventList: Complete\r\n" + long + b"\r\n\r\n"
        b"Event: Bar\r\n\r\n"
    )
    if size is None:
        messages = parse_rawman(body)
    else:
        parser = RawmanParser()
        messages = [m for chunk in _chunks(body, size) for m in parser.feed(chunk)]
        assert not parser.pending
    assert [(type(m), m.fields) for m in messages] == [
        (LeftOutItem, (("Event", "CoreShowChannel"), ("ActionID", "7"))),
        (Event, (("Event", "Bar"),)),
    ]


def test_a_stream_reads_on_after_an_event_whose_lines_are_all_too_long() -> None:
    """An event of nothing but long lines (its name's too) is read past whole,
    and the stream goes on with the next message, in either line ending."""
    for nl in (b"\r\n", b"\n"):
        parser = RawmanParser()
        long = b"x" * (MAX_LINE_BYTES + 10)
        assert parser.feed(b"Event: " + long) == []
        assert parser.feed(nl + long + nl + long) == []
        got = parser.feed(nl + nl + b"Response: Success" + nl + b"ActionID: 1" + nl + nl)
        assert [type(m).__name__ for m in got] == ["Response"]
        assert not parser.pending


@pytest.mark.parametrize("dropping", [False, True], ids=["reading", "dropping"])
def test_any_event_list_ends_at_its_closing_event_with_a_line_too_long(dropping: bool) -> None:
    """Not only ``CoreShowChannels``: whatever list an action collects ends at
    its ``EventList: Complete``, a line too long in it or not, and so while
    the TCP client drops the events of a flood (answers are still parsed)."""
    long = b"Junk: " + b"j" * (MAX_LINE_BYTES + 1)
    stream = (
        b"Response: Success\r\nActionID: b-1\r\nEventList: start\r\nMessage: Bridge listing\r\n\r\n"
        b"Event: BridgeListItem\r\nActionID: b-1\r\nBridgeUniqueid: 1\r\n\r\n"
        b"Event: Newexten\r\nChannel: PJSIP/1-1\r\n\r\n"
        b"Event: BridgeListComplete\r\nActionID: b-1\r\n" + long + b"\r\n"
        b"EventList: Complete\r\nListItems: 1\r\n\r\n"
        b"Event: Newexten\r\nChannel: PJSIP/1-2\r\n\r\n"
    )
    parser = RawmanParser()
    parser.dropping = dropping
    collector = ListCollector()
    collector.expect("b-1")
    done = [
        d for chunk in _chunks(stream, 4096) for m in parser.feed(chunk) if (d := collector.feed(m))
    ]
    assert [(aid, [i.get("BridgeUniqueid") for i in r.items], r.complete) for aid, r in done] == [
        ("b-1", ["1"], True)
    ]
    assert parser.dropped == (2 if dropping else 0)
    assert not parser.pending


def test_an_mxml_element_that_is_no_message_is_skipped_among_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: Asterisk's mxml is its rawman text cut at blank lines
    (manager.c xml_translate), so a caller number holding a blank line makes
    the rest of the event an element of its own: ``opaque-data`` when its next
    line has no colon, else its first key. It failed the whole poll (every
    event in it lost, the AJAM session dropped), again at each step of the
    call; now it is skipped and counted as the rawman parsers do."""
    head = b"<response type='object' id='unknown'><generic "
    body = (
        b"<ajax-response>\n"
        + head
        + b"response='Success' actionid='1' message='Waiting for Event completed.' />"
        b"</response>\n"
        + head
        + b"event='Newchannel' privilege='call,all' channel='PJSIP/trunk-1' "
        b"channelstate='4' channelstatedesc='Ring' calleridnum='1' /></response>\n"
        + head
        + b"opaque-data='x\nCallerIDName: n\nExten: 100' /></response>\n"
        + head
        + b"calleridname='n' exten='100' uniqueid='1.1' /></response>\n"
        + head
        + b"event='WaitEventComplete' actionid='1' /></response>\n"
        b"</ajax-response>\n"
    )
    before = STRAYS.count
    with caplog.at_level(logging.WARNING, logger="router.ami"):
        messages = parse_mxml(body)
    assert [type(m).__name__ for m in messages] == ["Response", "Event", "Event"]
    assert [m.get("Event") for m in messages[1:]] == ["Newchannel", "WaitEventComplete"]
    assert messages[1]["Channel"] == "PJSIP/trunk-1"
    assert STRAYS.count == before + 2
    # A body of nothing else is still an error (test_garbage_mxml_raises_...).
    with pytest.raises(AMIProtocolError, match="no AMI message"):
        parse_mxml(b"<ajax-response>" + head + b"exten='100' /></response></ajax-response>")
