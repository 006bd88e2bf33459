"""A caller's name and number are cut where they enter callrouter (issue 16).

The attack: ``Originate Local/74951234567@hostile`` with ``HNAME`` of 1,000
characters and a dialplan doing ``Set(CALLERID(name)=${HNAME}${HNAME}...)``.
Asterisk keeps a caller ID whole, and so did callrouter: the call tracker, each
event of the API feed (``GET /api/v1/events`` showed a 4,000-character
``caller_name``; 10,000 events, some 40 MB), the live page and the call life
sent to 1C. Each entry point now cuts them with :mod:`router.callerid`, the
same way, and a cut number is no number to the rules, lists and 1C.
"""

from __future__ import annotations

import json
from pathlib import Path

from router import NumberKind, number_digits, parse_number
from router.api.feed import EventFeed
from router.api.intake import FeedIntake
from router.builtin.directory import Directory
from router.builtin.numbers import is_internal, register
from router.callerid import CUT_MARK, MAX_NUMBER, MAX_TEXT, cut_number, was_cut
from router.calllife.fold import Folder
from router.calllife.model import CallEvent, CelRecord
from router.calls import VARIABLES_MAX, CallTracker
from router.dialplan import Dialplan
from router.plugin_registry import plugin_registry
from router.rules import load_rules
from router.rules.evaluate import evaluate_rules
from router.rules.registry import Registry
from router.rules.ruleset import call_context
from router.testing import make_decision, make_event
from router.testing.cel import Cel, as_ami

LINKEDID = "1714557600.42"
CHANNEL = f"Local/74951234567@hostile-{LINKEDID};2"
HNAME = "L" * 1000
#: ``Set(CALLERID(name)=${HNAME}${HNAME}${HNAME}${HNAME})``.
NAME = HNAME * 4
#: A caller ID number as long, that starts like a real number and ends like
#: another: ``digits()`` of the whole reads 11 digits, of its start 10.
NUMBER = "7916123456 " + "L" * 3000 + "7"


def _snapshot(name: str, /, **fields: str):  # type: ignore[no-untyped-def]
    return make_event(
        name,
        Channel=CHANNEL,
        Uniqueid=LINKEDID,
        Linkedid=LINKEDID,
        CallerIDNum=NUMBER,
        CallerIDName=NAME,
        Context="callrouter-inbound",
        Exten="74951234567",
        **fields,
    )


def _is_cut(text: str, limit: int) -> bool:
    return len(text) == limit and text.endswith(CUT_MARK)


def test_the_call_tracker_keeps_the_callers_texts_cut() -> None:
    tracker = CallTracker()
    call = tracker.feed(_snapshot("Newchannel", ChannelStateDesc="Ring")).call
    assert call is not None
    assert _is_cut(call.caller_name, MAX_TEXT), len(call.caller_name)
    assert call.caller_name == NAME[: MAX_TEXT - 1] + CUT_MARK
    assert _is_cut(call.caller_number, MAX_NUMBER), len(call.caller_number)
    # A channel variable's value (VarSet: HNAME itself, or a SIP header) and
    # the timeline's detail of it: 64 of each per call, each as long as sent.
    tracker.feed(_snapshot("VarSet", Variable="HNAME", Value=NAME))
    assert _is_cut(call.variables["HNAME"], MAX_TEXT)
    assert max(len(entry.detail) for entry in call.timeline) == MAX_TEXT
    assert VARIABLES_MAX * MAX_TEXT < 64 * 1024  # a call's variables stay small


def test_the_routing_request_and_the_tracker_cut_alike() -> None:
    tracker = CallTracker()
    call = tracker.feed(_snapshot("Newchannel")).call
    assert call is not None
    request = Dialplan().request(
        _snapshot("UserEvent", UserEvent="CallRouterRequest", DID="74951234567", Wait="4")
    )
    assert request is not None
    assert request.caller_name == call.caller_name
    assert request.caller == call.caller_number
    assert _is_cut(request.caller, MAX_NUMBER)


async def test_the_feed_shows_the_same_cut_name_in_every_event() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    tracker = CallTracker()
    call = tracker.feed(_snapshot("Newchannel")).call
    assert call is not None
    dial = {"DestChannel": "PJSIP/101-00000002", "Timestamp": "1714557601.25"}
    intake.callrouter_event(_snapshot("DialBegin", **dial), call)
    intake.callrouter_event(_snapshot("DialEnd", DialStatus="ANSWER", **dial), call)
    intake.callrouter_decision(call, make_decision(), None, "executed")
    call.ended = 1.0
    intake.callrouter_call_end(call)
    events = feed.read(0).events
    assert [e.kind for e in events] == ["ringing", "answered", "hangup"]
    names = {e.data["caller_name"] for e in events if "caller_name" in e.data}
    numbers = {e.data["caller"] for e in events}
    assert names == {call.caller_name}, [len(n) for n in names]
    assert numbers == {call.caller_number}, [len(n) for n in numbers]
    # An attended transfer to an outside party names it by its caller ID.
    intake.callrouter_event(
        make_event(
            "AttendedTransfer",
            Result="Success",
            OrigTransfererChannel="PJSIP/101-00000002",
            OrigTransfererLinkedid=LINKEDID,
            TransferTargetCallerIDNum=NUMBER,
        ),
        call,
    )
    assert _is_cut(feed.read(0).events[-1].data["target"], MAX_NUMBER)


def test_the_call_life_sent_to_1c_carries_the_same_cut_number() -> None:
    cel = Cel()
    trunk = cel.channel(
        "PJSIP/pstn", first=True, cid_num=NUMBER, cid_name=NAME, exten="74951234567"
    )
    cel.tick(2)
    phone = cel.channel("PJSIP/101")
    cel.tick(3)
    cel.hangup(phone, cause=19)
    cel.hangup(trunk, source=cel.name(trunk), dialstatus="NOANSWER")
    cel.end()
    folder = Folder()
    events: list[CallEvent] = []
    for record in cel.records:
        live = CelRecord.from_fields(as_ami(record))  # as cel_manager sends it
        assert len(live.cid_name) <= MAX_TEXT
        events += folder.feed(live)
    assert events
    assert {e.external for e in events} == {cut_number(NUMBER)}
    # Stored rows (a replay after a gap) are cut by the same rule.
    stored = CelRecord.build(
        event="CHAN_START", at=1.0, uniqueid="1.1", linkedid="1.1", cid_num=NUMBER, cid_name=NAME
    )
    assert stored.cid_num == cut_number(NUMBER)
    assert _is_cut(stored.cid_name, MAX_TEXT)


def test_a_cut_number_is_no_number_to_the_rules_lists_and_1c() -> None:
    """The digits of a cut number's start are another number: "7916123456"
    is read as 77916123456, a valid Russian mobile. It must not match a rule,
    a list or 1C's lookup as if it were the caller's."""
    cut = cut_number(NUMBER)
    assert was_cut(cut)
    assert was_cut(NUMBER)
    assert parse_number(cut).kind is NumberKind.INVALID
    assert parse_number(cut).number == ""
    assert parse_number(NUMBER).kind is NumberKind.INVALID
    registry = Registry()
    register(registry)  # the number plan, as the engine has it
    context = call_context(registry, cut, "74951234567")
    assert context.caller is not None
    assert context.caller.number == ""
    assert not context.caller.internal
    # Nor is a cut number an extension of this PBX: "1" and 63 letters.
    assert not is_internal(cut_number("1" + "L" * 100))
    # A real number, however it is written, is far below the bound.
    written = "+7 (916) 123-45-67 доб. 1234"
    assert len(written) < MAX_NUMBER
    assert parse_number(written).number == "79161234567"
    assert parse_number("101").kind is NumberKind.INTERNAL


#: A caller ID that starts with a real number and is cut where it enters
#: callrouter: its first 63 characters hold "79161234567" and letters.
REAL_START = cut_number("79161234567 " + "L" * 200 + "5")


async def test_a_rule_reading_digits_of_a_cut_text_reads_none(tmp_path: Path) -> None:
    """``last10(caller.raw)`` and ``digits(caller.raw)`` of a cut number read
    its start, "9161234567": a rule keyed on that real number matched a caller
    who sent another. They read no digits, as ``caller.number`` (parse_number)."""
    registry = plugin_registry()
    functions = {name: registry.functions[name].func for name in ("last10", "digits")}
    assert functions["last10"](REAL_START) == ""
    assert functions["digits"](REAL_START) == ""
    assert functions["last10"]("L" * 70 + "79161234567") == ""  # over 64: no number
    assert number_digits(REAL_START) == ""  # the public API's spelling too
    assert functions["last10"]("+7 (916) 123-45-67") == "9161234567"  # a whole one still reads
    assert functions["digits"]("8 916 123-45-67 доб. 12") == "8916123456712"
    assert Directory({"79161234567": {"extension": "101"}}).get(REAL_START) is None
    assert Directory({"no digits": {"extension": "101"}}).get(REAL_START) is None
    conditions = [
        'last10(caller.raw) == "9161234567"',
        'digits(caller.raw) == "79161234567"',
        'last10(caller.number) == "9161234567"',
    ]
    body = "".join(
        f"  - name: r{i}\n    on: call\n    if: {json.dumps(condition)}\n"
        f'    do: [{{redirect: {{context: c, exten: "{i}"}}}}]\n'
        for i, condition in enumerate(conditions)
    )
    path = tmp_path / "rules.yaml"
    path.write_text(f"version: 1\nrules:\n{body}", encoding="utf-8")
    ruleset = load_rules([path], registry)
    assert ruleset.errors == (), ruleset.errors
    cut = await ruleset.evaluate(call_context(registry, REAL_START, "74951234567"))
    assert cut.decision.rules == (), cut.decision
    whole = await ruleset.evaluate(call_context(registry, "8 916 123-45-67", "74951234567"))
    assert whole.decision.rules == ("r0",)
    # The linear walk (explain, event rules) reads the same functions.
    linear = await evaluate_rules(
        list(ruleset.rules), call_context(registry, REAL_START, "1"), registry, ruleset.lists
    )
    assert linear.decision.rules == ()


def test_one_cut_for_every_text_and_the_1c_plugin() -> None:
    """Issue 16: the cut ending in ``…`` was written five times (the caller's texts,
    the feed's card, a hook's wrong answer, a registered non-function, 1C's texts).
    ``router.cut`` is the one, public for the plugin: at most ``limit`` characters,
    the cut one ending in :data:`CUT_MARK`."""
    import router
    from router.callerid import cut

    assert router.cut is cut
    assert "cut" in router.__all__
    assert cut("x" * 80, 80) == "x" * 80
    assert cut("x" * 81, 80) == "x" * 79 + CUT_MARK
    assert len(cut("y" * 10_000, MAX_TEXT)) == MAX_TEXT
