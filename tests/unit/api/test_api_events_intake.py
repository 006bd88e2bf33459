"""What goes into the feed: AMI events and decisions -> ringing, answered, missed, ..."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial

import pytest

from router.ami.message import Event
from router.ami.stream import StreamGap
from router.api.feed import EventFeed
from router.api.intake import (
    _PENDING_MAX,
    MAX_CARD,
    MAX_CARD_TEXT,
    RANG_WITH_MAX,
    FeedIntake,
    endpoint,
    feed_card,
)
from router.calls import IDENTITY_LIMITS, Call, CallTracker
from router.plugins import Plugins
from router.testing import CallTimeline, make_decision, make_event, make_trace

LINKEDID = "1714557600.42"
CARD = {"client": {"id": "c-1", "name": "ООО Ромашка"}, "manager": {"extension": "101"}}


def dial(name: str, dest: str = "PJSIP/101-00000002", **fields: str):  # type: ignore[no-untyped-def]
    return make_event(
        name,
        Channel=f"Local/74951234567@callrouter-inbound-{LINKEDID};2",
        CallerIDNum="79161234567",
        CallerIDName="Ivan",
        Linkedid=LINKEDID,
        DestChannel=dest,
        Timestamp="1714557601.250000",
        **fields,
    )


def routed_call(intake: FeedIntake) -> Call:
    """An inbound call (LINKEDID) whose routing decision ``intake`` has had."""
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    intake.callrouter_decision(call, make_decision(), make_trace(), "executed")
    return call


def kinds(feed: EventFeed) -> list[tuple[str, str | None]]:
    return [(e.kind, e.extension) for e in feed.read(0, limit=1000).events]


@pytest.mark.parametrize(
    ("channel", "extension"),
    [
        ("PJSIP/101-0000002a", "101"),
        ("SIP/manager-7-00000001", "manager-7"),
        ("PJSIP/101", "101"),
        ("Local/101@from-queue-0000001c;1", "101"),
        ("Local/nothing", None),
        ("", None),
        ("nonsense", None),
    ],
)
def test_endpoint_of_a_channel(channel: str, extension: str | None) -> None:
    assert endpoint(channel) == extension


async def test_ringing_carries_the_card_the_routing_lookup_returned() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    calls = CallTimeline()
    call = calls.inbound_call(linkedid=LINKEDID)
    trace = make_trace(lookups={"onec.responsible": CARD})
    decision = make_decision(("redirect", {"context": "callrouter-dial", "exten": "101"}))
    intake.callrouter_decision(call, decision, trace, "executed")
    intake.callrouter_event(dial("DialBegin"), call)
    (event,) = feed.read(0).events
    assert event.kind == "ringing"
    assert event.extension == "101"
    assert event.call_id == LINKEDID
    assert event.ts == pytest.approx(1714557601.25)  # Asterisk's clock, not ours
    assert event.data["card"] == CARD
    assert event.data["caller"] == "79161234567"
    assert event.data["rules"] == ["rule"]


async def test_a_huge_card_from_1c_is_cut_in_the_feed() -> None:
    """Anyone who edits a client card in 1C shapes the card (up to max_body,
    1 MiB): each ringing kept it whole, in memory (10,000 events), in the file and
    in every answer, and a caller could ring it in again and again by spoofing
    the client's number. Texts are cut; a card still too big goes as null."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    calls = CallTimeline()
    name = "Ромашка " + "я" * 1_000_000
    card = {"client": {"id": "c-1", "type": "counterparty", "name": name}, "manager": None}
    for n in range(20):
        call = calls.inbound_call(linkedid=f"{LINKEDID}{n}")
        trace = make_trace(lookups={"onec.responsible": card})
        intake.callrouter_decision(call, make_decision(), trace, "executed")
        ringing = make_event(
            "DialBegin", Linkedid=f"{LINKEDID}{n}", DestChannel="PJSIP/101-00000002"
        )
        intake.callrouter_event(ringing, call)
    events = feed.read(0, limit=1000).events
    assert len(events) == 20
    for event in events:
        shown = event.data["card"]
        assert shown["client"]["id"] == "c-1"
        assert shown["client"]["type"] == "counterparty"
        assert shown["client"]["name"].startswith("Ромашка яяя")
        assert shown["client"]["name"].endswith("…")
        assert len(shown["client"]["name"]) == MAX_CARD_TEXT
    size = sum(len(json.dumps(e.to_dict(), ensure_ascii=False).encode()) for e in events)
    assert size < 20 * (MAX_CARD + 1024)

    # Many texts, each short: still over the bound, so no card at all.
    wide = {"client": {"id": "c-2", "name": "x"}, "notes": ["n" * 400] * 1000}
    call = calls.inbound_call(linkedid="1714557600.99")
    trace = make_trace(lookups={"onec.responsible": wide})
    intake.callrouter_decision(call, make_decision(), trace, "executed")
    ringing = make_event("DialBegin", Linkedid="1714557600.99", DestChannel="PJSIP/101-00000003")
    intake.callrouter_event(ringing, call)
    assert feed.read(events[-1].cursor).events[0].data["card"] is None


def test_a_card_within_the_bounds_is_kept_as_it_is() -> None:
    assert feed_card(CARD) == CARD
    assert feed_card(None) is None
    edge = {"name": "я" * MAX_CARD_TEXT}
    assert feed_card(edge) == edge


def test_a_lone_surrogate_in_the_card_is_mended() -> None:
    """Issue 16 (an attacker's trial): ``"\\ud800"`` in the card lookup's answer
    raised UnicodeEncodeError in the decision hook (logged as a plugin failure
    each call) and the ringing went without its card and rules."""
    card = {"client": {"name": "\ud800 x"}, "\udfff": "\ud83d\ude00"}
    assert feed_card(card) == {"client": {"name": "\ufffd x"}, "\ufffd": "\U0001f600"}


def test_a_long_text_is_cut_in_a_small_card_too() -> None:
    """docs/api.md: each text in the card is cut to 500 characters, whatever the
    card's size; only the card over 8 KiB goes as null. A 600-character name in a
    2 KiB card went whole."""
    long = "я" * (MAX_CARD_TEXT + 100)
    shown = feed_card({"client": {"id": "c-1", "name": long}, "notes": [long], long: 1})
    assert shown["client"]["name"] == long[: MAX_CARD_TEXT - 1] + "…"
    assert shown["notes"] == [long[: MAX_CARD_TEXT - 1] + "…"]
    assert list(shown)[-1] == long[: MAX_CARD_TEXT - 1] + "…"
    assert shown["client"]["id"] == "c-1"


async def test_a_dial_seen_before_its_decision_waits_for_the_card() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    intake.callrouter_event(dial("DialBegin"), call)
    assert kinds(feed) == []  # held for the decision
    intake.callrouter_decision(
        call, make_decision(), make_trace(lookups={"onec.responsible": CARD}), "executed"
    )
    (event,) = feed.read(0).events
    assert event.data["card"] == CARD


QUEUE = [f"Local/{n}@from-queue-0000000{n - 100};1" for n in (101, 102, 103)]
BUSY_AT_ONCE = {
    # Issue 16 (an attacker's trial): the busy member's dial begins and ends,
    # then the queue rings the others, all before the decision reaches the feed.
    "busy member first": [("DialBegin", 0), ("DialEnd", 0), ("DialBegin", 1), ("DialBegin", 2)],
    # ringall dials every member in one loop; the busy one's end comes after.
    "all dialled, then busy": [
        ("DialBegin", 0),
        ("DialBegin", 1),
        ("DialBegin", 2),
        ("DialEnd", 0),
    ],
}


@pytest.mark.parametrize("order", BUSY_AT_ONCE.values(), ids=list(BUSY_AT_ONCE))
async def test_a_queue_member_busy_at_once_leaves_every_ringing_its_card(
    order: list[tuple[str, int]],
) -> None:
    """A queue of three (101 busy at once, 102 and 103 ringing): a member's
    DialEnd before the decision released every ringing held for the call, so
    they went without card and rules (``[]``); each now waits, the busy
    member's ``missed`` after its ringing."""
    feed = EventFeed()
    intake = FeedIntake(feed, card_wait=5)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    for name, member in order:
        extra = {"DialStatus": "BUSY"} if name == "DialEnd" else {}
        intake.callrouter_event(dial(name, QUEUE[member], **extra), call)
    decision = make_decision(("queue", {"queue": "sales"}), rule="vip")
    trace = make_trace(lookups={"onec.responsible": CARD})
    intake.callrouter_decision(call, decision, trace, "executed")
    events = feed.read(0).events
    ringing = [e for e in events if e.kind == "ringing"]
    assert [(e.extension, e.data["card"], e.data["rules"]) for e in ringing] == [
        ("101", CARD, ["vip"]),
        ("102", CARD, ["vip"]),
        ("103", CARD, ["vip"]),
    ]
    # As they came: the busy member's missed after its ringing, not before the decision.
    expected = [("ringing" if name == "DialBegin" else "missed", f"{101 + m}") for name, m in order]
    assert [(e.kind, e.extension) for e in events] == expected
    assert intake._calls[LINKEDID].timer is None  # the wait ended with the decision


async def test_held_events_go_in_order_without_a_card_after_the_wait() -> None:
    """No decision within the wait: the held ringings and the busy member's
    ``missed`` go as they came, without a card, once (bounded by the wait)."""
    feed = EventFeed()
    intake = FeedIntake(feed, card_wait=0.01)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    for name, member in BUSY_AT_ONCE["all dialled, then busy"]:
        extra = {"DialStatus": "BUSY"} if name == "DialEnd" else {}
        intake.callrouter_event(dial(name, QUEUE[member], **extra), call)
    page = await asyncio.wait_for(feed.wait(0, timeout=5), 5)
    assert [(e.kind, e.extension, e.data.get("card")) for e in page.events] == [
        ("ringing", "101", None),
        ("ringing", "102", None),
        ("ringing", "103", None),
        ("missed", "101", None),
    ]


async def test_events_held_for_one_call_are_bounded() -> None:
    """A call whose dial events pile up before its decision (a queue of many
    members, a member ringing again and again) holds at most _PENDING_MAX of
    them: past that, what is held goes at once, without a card."""
    feed = EventFeed()
    intake = FeedIntake(feed, card_wait=60)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    for n in range(_PENDING_MAX + 10):
        channel = f"Local/{1000 + n}@from-queue-00000001;1"
        intake.callrouter_event(dial("DialBegin", channel), call)
        assert len(intake._calls[LINKEDID].pending) <= _PENDING_MAX
    assert len(kinds(feed)) >= _PENDING_MAX
    intake.callrouter_call_end(call)
    assert [k for k, _ in kinds(feed)].count("ringing") == _PENDING_MAX + 10


async def test_without_a_decision_the_ringing_goes_without_a_card_after_the_wait() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed, card_wait=0.01)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    intake.callrouter_event(dial("DialBegin"), call)
    page = await asyncio.wait_for(feed.wait(0, timeout=5), 5)
    assert [(e.kind, e.data["card"]) for e in page.events] == [("ringing", None)]


async def test_asterisk_s_unknown_caller_is_no_text_in_the_feed() -> None:
    """Asterisk writes ``<unknown>`` for a caller ID it does not have (seen on the
    sandbox: every trunk call without a name); ``ringing`` gave that text to 1C's
    screen pop while the call's ``hangup`` and ``GET /calls`` said ``""``."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID, routed=False)
    unknown = {"CallerIDNum": "<unknown>", "CallerIDName": "<unknown>"}
    begin, end = (
        make_event(
            name,
            Channel="PJSIP/trunk-01",
            Linkedid=LINKEDID,
            DestChannel="PJSIP/101-02",
            **unknown,
            **extra,
        )
        for name, extra in (("DialBegin", {}), ("DialEnd", {"DialStatus": "NOANSWER"}))
    )
    intake.callrouter_event(begin, call)
    intake.callrouter_event(end, call)
    ringing, missed = feed.read(0).events
    assert ringing.data["caller_name"] == ""
    assert ringing.data["caller"] == call.caller_number
    assert missed.data["caller"] == call.caller_number
    assert "<unknown>" not in json.dumps([ringing.data, missed.data])


async def test_the_extension_that_placed_a_call_gets_no_hangup() -> None:
    """docs/api.md: ``hangup`` goes to each extension that answered a ringing; 101
    dialling out (or a click-to-call's manager, whose leg Originate made) is the
    source of the dial, so its ringing, answer and end are the dialled endpoint's."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID, routed=False)
    for name, extra in (("DialBegin", {}), ("DialEnd", {"DialStatus": "ANSWER"})):
        event = make_event(
            name,
            Channel="PJSIP/101-01",
            CallerIDNum="101",
            Linkedid=LINKEDID,
            DestChannel="PJSIP/pstn-02",
            **extra,
        )
        intake.callrouter_event(event, call)
    intake.callrouter_call_end(call)
    assert kinds(feed) == [("ringing", "pstn"), ("answered", "pstn"), ("hangup", "pstn")]


async def test_a_call_not_routed_rings_at_once_without_a_card() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID, routed=False)
    intake.callrouter_event(dial("DialBegin"), call)
    assert kinds(feed) == [("ringing", "101")]


async def test_a_whole_call_ringing_missed_answered_transferred_hangup() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    intake.callrouter_event(dial("DialBegin", "PJSIP/101-01"), call)
    intake.callrouter_event(dial("DialBegin", "PJSIP/102-02"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="CANCEL"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/102-02", DialStatus="ANSWER"), call)
    intake.callrouter_event(
        make_event(
            "BlindTransfer",
            Result="Success",
            TransfererChannel="PJSIP/102-02",
            TransfererLinkedid=LINKEDID,
            Extension="103",
        ),
        call,
    )
    intake.callrouter_call_end(call)
    assert kinds(feed) == [
        ("ringing", "101"),
        ("ringing", "102"),
        ("missed", "101"),
        ("answered", "102"),
        ("transferred", "102"),
        ("hangup", "102"),
    ]
    transferred = feed.read(0, limit=100).events[4]
    assert transferred.data == {"how": "blind", "target": "103", "channel": "PJSIP/102-02"}
    assert intake._calls == {}  # nothing kept after the call


async def test_a_call_no_extension_took_ends_with_one_hangup_of_no_extension() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    intake.callrouter_decision(call, None, None, "late")
    intake.callrouter_call_end(call)
    (event,) = feed.read(0).events
    assert (event.kind, event.extension, event.data["answered"]) == ("hangup", None, False)


async def test_a_decision_after_the_call_ended_keeps_nothing() -> None:
    """A caller who hangs up while the routing waits (a Redirect waiting 3 s for its
    confirmation, a slow 1C) has its decision told after the call's end: each such
    call left a state (with its card) for an end that never came again, until
    10,000 of them, in a service that runs for months (the soak, issue 16)."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    calls = CallTimeline()
    trace = make_trace(lookups={"onec.responsible": CARD})
    for n in range(500):
        call = calls.inbound_call(linkedid=f"{LINKEDID}{n}")
        intake.callrouter_event(
            make_event("DialBegin", Linkedid=call.linkedid, DestChannel="PJSIP/101-00000002"),
            call,
        )
        call.ended = 1714557605.0 + n
        intake.callrouter_call_end(call)
        intake.callrouter_decision(call, make_decision(), trace, "failed")
        late_end = make_event(
            "DialEnd",
            Linkedid=call.linkedid,
            DestChannel="PJSIP/101-00000002",
            DialStatus="CANCEL",
        )
        intake.callrouter_event(late_end, call)
    assert len(intake._calls) == 0
    assert [e.kind for e in feed.read(0, limit=1000).events] == ["ringing", "hangup"] * 500


async def test_a_decision_between_the_end_and_its_hook_still_gives_the_card() -> None:
    """The tracker ended the call, its end hook has not run yet: the held ringing
    still gets the card, and the end hook then lets the state go."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID)
    intake.callrouter_event(dial("DialBegin"), call)
    call.ended = 1714557605.0
    trace = make_trace(lookups={"onec.responsible": CARD})
    intake.callrouter_decision(call, make_decision(), trace, "caller-gone")
    intake.callrouter_call_end(call)
    ringing, hangup = feed.read(0).events
    assert (ringing.kind, ringing.data["card"]) == ("ringing", CARD)
    assert hangup.kind == "hangup"
    assert intake._calls == {}


async def test_a_local_channel_and_the_phone_it_dials_are_one_ringing() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID, routed=False)
    intake.callrouter_event(dial("DialBegin", "Local/101@from-queue-00000001;1"), call)
    intake.callrouter_event(dial("DialBegin", "PJSIP/101-00000003"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-00000003", DialStatus="ANSWER"), call)
    intake.callrouter_event(
        dial("DialEnd", "Local/101@from-queue-00000001;1", DialStatus="ANSWER"), call
    )
    assert kinds(feed) == [("ringing", "101"), ("answered", "101")]


async def test_presence_and_device_state() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    intake.callrouter_event(
        make_event(
            "ExtensionStatus", Exten="101", Context="hints", Status="8", StatusText="Ringing"
        ),
        None,
    )
    intake.callrouter_event(
        make_event("DeviceStateChange", Device="PJSIP/102", State="INUSE"), None
    )
    intake.callrouter_event(make_event("DeviceStateChange", Device="Queue:sales", State="X"), None)
    intake.callrouter_event(
        make_event("DeviceStateChange", Device="Local/101@bench-phone", State="INUSE"), None
    )
    events = feed.read(0).events
    assert [(e.kind, e.extension, e.data["state"]) for e in events] == [
        ("presence", "101", "ringing"),
        ("device", "102", "inuse"),
    ]


async def test_failed_transfers_are_not_published() -> None:
    feed = EventFeed()
    FeedIntake(feed).callrouter_event(
        make_event("BlindTransfer", Result="Fail", TransfererChannel="PJSIP/101-1"), None
    )
    assert kinds(feed) == []


async def test_the_intake_registers_as_a_plugin_and_gets_events_through_the_facade() -> None:
    feed = EventFeed()
    plugins = Plugins.load(entry_points=False, extra=[FeedIntake(feed)])
    call = CallTimeline().inbound_call(linkedid=LINKEDID, routed=False)
    await plugins.event(dial("DialBegin"), call)
    assert kinds(feed) == [("ringing", "101")]


async def test_a_lost_event_stream_tells_every_feed_reader_behind_it_of_a_gap() -> None:
    """Issue 16: what Asterisk emitted while the AMI stream was lost never reaches
    the feed; a panel resuming from before it got the events after it with gap
    false and kept a stale state. The engine's stream gap reaches the intake
    through the plugin facade, and every reader behind it (any scope) is told."""
    feed = EventFeed()
    plugins = Plugins.load(entry_points=False, extra=[FeedIntake(feed)])
    call = CallTimeline().inbound_call(linkedid=LINKEDID, routed=False)
    before = feed.position()
    await plugins.event(dial("DialBegin"), call)
    ringing = feed.read(before, lambda extension: extension == "101")
    assert not ringing.gap
    await plugins.stream_gap(StreamGap(since=1.0, resumed=2.0, reason="reconnect"))
    after = feed.position()
    for cursor, scope in (
        (before, lambda extension: extension == "101"),
        (ringing.cursor, lambda extension: extension == "101"),
        (ringing.cursor, lambda extension: extension == "103"),
    ):
        page = feed.read(cursor, scope)
        assert page.gap
        assert not feed.read(page.cursor, scope).gap
    assert not feed.read(after).gap


async def test_a_ring_group_member_s_missed_names_the_colleague_who_took_the_call() -> None:
    """Asterisk ends the other phones of a ring group or queue ``CANCEL`` when one
    answers, as when the caller hangs up; the feed's ``missed`` was the same for
    both, and the 1C module popped "Пропущенный звонок" at every member of a group
    whose colleague had answered (issue 16). ``answered_by`` tells them apart."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    for phone in ("PJSIP/101-01", "PJSIP/102-02", "PJSIP/103-03"):
        intake.callrouter_event(dial("DialBegin", phone), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/103-03", DialStatus="BUSY"), call)
    # As Asterisk 22's Dial does it (measured on the sandbox): the other phones'
    # CANCEL first, then the ANSWER of the one that took it (Queue: the next test).
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="CANCEL"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/102-02", DialStatus="ANSWER"), call)
    events = [e for e in feed.read(0, limit=100).events if e.kind != "ringing"]
    assert [(e.kind, e.extension) for e in events] == [
        ("missed", "103"),
        ("missed", "101"),
        ("answered", "102"),
    ]
    ends = {e.extension: e.data for e in events}
    assert ends["103"]["answered_by"] is None  # busy before anyone answered
    assert ends["101"]["answered_by"] == "102"
    assert "answered_by" not in ends["102"]


async def test_a_queue_s_members_missed_follow_the_answer_and_name_who_took_it() -> None:
    """Asterisk 22's Queue (ringall, measured on the sandbox with ``callrouter events
    DialEnd``) tells the ANSWER first and ends the other members CANCEL after it,
    the other way round from Dial: their ``missed`` follow the ``answered`` and
    still name the member who took the call (docs/api.md, the feed's kinds)."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    for phone in ("PJSIP/101-01", "PJSIP/102-02", "PJSIP/103-03"):
        intake.callrouter_event(dial("DialBegin", phone), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/102-02", DialStatus="ANSWER"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="CANCEL"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/103-03", DialStatus="CANCEL"), call)
    events = [e for e in feed.read(0, limit=100).events if e.kind != "ringing"]
    assert [(e.kind, e.extension, e.data.get("answered_by")) for e in events] == [
        ("answered", "102", None),
        ("missed", "101", "102"),
        ("missed", "103", "102"),
    ]


async def test_a_ring_group_the_caller_left_is_missed_by_every_phone() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    for phone in ("PJSIP/101-01", "PJSIP/102-02"):
        intake.callrouter_event(dial("DialBegin", phone), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="CANCEL"), call)
    assert kinds(feed) == [("ringing", "101"), ("ringing", "102")]  # 101's end waits
    intake.callrouter_event(dial("DialEnd", "PJSIP/102-02", DialStatus="CANCEL"), call)
    ends = [(e.kind, e.extension, e.data["answered_by"]) for e in feed.read(0).events[2:]]
    assert ends == [("missed", "101", None), ("missed", "102", None)]


async def test_a_cancelled_ringing_still_waiting_goes_out_at_the_call_s_end() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    for phone in ("PJSIP/101-01", "PJSIP/102-02"):
        intake.callrouter_event(dial("DialBegin", phone), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="CANCEL"), call)
    intake.callrouter_call_end(call)  # 102's end was lost (an event gap)
    assert kinds(feed)[2:] == [("missed", "101"), ("hangup", None)]


async def test_a_missed_call_nobody_took_has_no_answered_by() -> None:
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    intake.callrouter_event(dial("DialBegin", "PJSIP/101-01"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="CANCEL"), call)
    missed = feed.read(0).events[-1]
    assert missed.kind == "missed"
    assert missed.data == {
        "caller": "79161234567",
        "channel": "PJSIP/101-01",
        "status": "CANCEL",
        "answered_by": None,
    }


async def test_asterisk_s_s_extension_is_no_dialled_number_in_the_feed() -> None:
    """A trunk that delivers no DID, and the trunk leg of a click-to-call, start at
    Asterisk's extension ``s``: the feed's ``ringing`` and ``hangup`` said
    ``"did": "s"`` and a 1C screen pop showed it as the number dialled (issue 16)."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = CallTimeline().inbound_call(linkedid=LINKEDID, did="s", routed=False)
    assert call.did == "s"
    intake.callrouter_event(dial("DialBegin", "PJSIP/101-01"), call)
    intake.callrouter_event(dial("DialEnd", "PJSIP/101-01", DialStatus="ANSWER"), call)
    intake.callrouter_call_end(call)
    dids = {e.kind: e.data.get("did") for e in feed.read(0).events}
    assert dids == {"ringing": "", "answered": None, "hangup": ""}


#: A trunk's call to 101, in the snapshots Asterisk 22 gives each of its events.
TRUNK = "PJSIP/trunk-00000001"
PHONE = "PJSIP/101-00000002"
#: What DialBegin and DialEnd of TRUNK to PHONE add to the trunk's snapshot.
DIAL_FIELDS = {
    "DestChannel": PHONE,
    "DestCallerIDNum": "101",
    "DestCallerIDName": "<unknown>",
    "DestUniqueid": "1714557601.43",
    "DestLinkedid": LINKEDID,
    "DialString": "101",
}


def trunk_leg(
    name: str,
    channel: str = TRUNK,
    *,
    num: str | None = None,
    cid: str = "<unknown>",
    **fields: str,
) -> Event:
    """Event ``name`` of ``channel`` (TRUNK or PHONE) with the channel's whole
    snapshot: caller ``num`` (TRUNK's 79161234567, PHONE's 101 when None) and
    name ``cid``; ``fields`` added or replacing the snapshot's."""
    snapshot = {
        "Channel": channel,
        "ChannelState": "4",
        "ChannelStateDesc": "Ring",
        "CallerIDNum": num if num is not None else "79161234567" if channel == TRUNK else "101",
        "CallerIDName": cid,
        "ConnectedLineNum": "<unknown>",
        "ConnectedLineName": "<unknown>",
        "Language": "ru",
        "AccountCode": "",
        "Context": "from-trunk",
        "Exten": "74951234567",
        "Priority": "2",
        "Uniqueid": "1714557600.42" if channel == TRUNK else "1714557601.43",
        "Linkedid": LINKEDID,
    }
    return make_event(name, **{**snapshot, **fields})


def as_the_engine_feeds(intake: FeedIntake) -> Callable[[Event], Call | None]:
    """``fed(event)``: the event to a call tracker first, then to ``intake``
    with its call (and the ends of the calls it ended), as the engine does;
    returns the event's call."""
    tracker = CallTracker()

    def fed(event: Event) -> Call | None:
        result = tracker.feed(event)
        if result.call is not None:
            intake.callrouter_event(event, result.call)
        for ended in result.ended:
            intake.callrouter_call_end(ended)
        return result.call

    return fed


async def test_the_hangup_names_the_caller_as_the_ringing_did() -> None:
    """A trunk's caller ID often has no name (``<unknown>`` in Newchannel); the
    dialplan sets one (``Set(CALLERID(name)=...)`` from a CRM or a list) before
    it dials: Asterisk 22 says so in ``NewCallerid``, and every later event of
    that channel carries it. The tracker kept the name of the first event with
    a number, so the feed's ``hangup`` (and ``GET /calls``) said
    ``caller_name: ""`` while the same call's ``ringing`` named the caller."""
    leg = partial(trunk_leg, cid="Иван Петров")
    feed = EventFeed()
    intake = FeedIntake(feed)
    fed = as_the_engine_feeds(intake)

    call = fed(leg("Newchannel", cid="<unknown>", Priority="1"))
    assert call is not None
    assert call.caller_name == ""
    fed(leg("NewCallerid", **{"CID-CallingPres": "0 (Presentation Allowed, Not Screened)"}))
    assert call.caller_name == "Иван Петров"
    fed(leg("VarSet", Variable="CALLERID(name)", Value="Иван Петров"))
    intake.callrouter_decision(call, make_decision(), make_trace(), "executed")
    fed(leg("DialBegin", **DIAL_FIELDS))
    fed(leg("Newchannel", channel=PHONE, cid="Менеджер"))  # the phone's own name
    fed(leg("DialEnd", DialStatus="ANSWER", **DIAL_FIELDS))
    # A name set after the call rang is not the one it was rung with.
    fed(leg("NewCallerid", cid="Переименован"))
    fed(leg("Hangup", channel=PHONE, cid="Менеджер", Cause="16"))
    fed(leg("Hangup", Cause="16"))
    events = feed.read(0).events
    assert [e.kind for e in events] == ["ringing", "answered", "hangup"]
    ringing, hangup = events[0], events[-1]
    assert ringing.data["caller_name"] == "Иван Петров"
    assert hangup.data["caller_name"] == ringing.data["caller_name"]
    assert hangup.data["caller"] == ringing.data["caller"] == "79161234567"
    assert call.to_dict()["caller_name"] == "Иван Петров"  # GET /calls


async def test_the_hangup_gives_the_callers_number_as_the_ringing_did() -> None:
    """A trunk gives the number as it likes (``9161234567``); the dialplan
    rewrites it before it asks for a route (``Set(CALLERID(num)=8${CALLERID(num)})``):
    Asterisk 22 says so in ``NewCallerid``, and every later event of that
    channel, the routing request included, carries the new one. The tracker
    kept the number of the call's first event, so the feed's ``ringing`` and
    ``answered`` said ``89161234567`` and its ``hangup`` (and ``GET /calls``)
    ``9161234567``."""
    leg = partial(trunk_leg, num="89161234567")
    feed = EventFeed()
    intake = FeedIntake(feed)
    fed = as_the_engine_feeds(intake)

    call = fed(leg("Newchannel", num="9161234567", Priority="1"))
    assert call is not None
    assert call.caller_number == "9161234567"
    fed(leg("NewCallerid", **{"CID-CallingPres": "0 (Presentation Allowed, Not Screened)"}))
    assert call.caller_number == "89161234567"
    fed(leg("UserEvent", UserEvent="CallRouterRequest", Priority="3"))  # the routing request
    intake.callrouter_decision(call, make_decision(), make_trace(), "executed")
    fed(leg("DialBegin", **DIAL_FIELDS))
    fed(leg("Newchannel", channel=PHONE, num="101"))
    fed(leg("DialEnd", DialStatus="ANSWER", **DIAL_FIELDS))
    # A number set after the call rang is not the one it was rung with.
    fed(leg("NewCallerid", num="+79161234567"))
    fed(leg("Hangup", channel=PHONE, num="101", Cause="16"))
    fed(leg("Hangup", Cause="16"))
    events = feed.read(0).events
    assert [e.kind for e in events] == ["ringing", "answered", "hangup"]
    assert [e.data["caller"] for e in events] == ["89161234567"] * 3
    assert call.to_dict()["caller"] == "89161234567"  # GET /calls


async def test_the_hangup_of_an_extension_a_call_was_transferred_to_names_whom_it_rang_with() -> (
    None
):
    """Seen on the sandbox (docs/api.md, the event feed): a click-to-call from 101
    to a customer, which 101 then blind-transferred to 102. 102's ``ringing`` and
    ``answered`` named the customer (``79161234567``, the Dial's caller ID), and its
    ``hangup`` named ``101``, the call's first caller: the docs say a hangup's
    caller is "as in its ringing and answered"."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    fed = as_the_engine_feeds(intake)
    local = "Local/102@callrouter-dial-00000004;2"
    phone = "PJSIP/102-00000005"

    def leg(name: str, channel: str, num: str, uniqueid: str, **fields: str) -> Event:
        return trunk_leg(name, channel, num=num, Uniqueid=uniqueid, **fields)

    call = fed(leg("Newchannel", PHONE, "101", LINKEDID, Priority="1"))
    assert call is not None
    assert call.caller_number == "101"
    fed(leg("Newchannel", local, "79161234567", "1714557602.44"))
    dial_fields = {
        "DestChannel": phone,
        "DestCallerIDNum": "102",
        "DestCallerIDName": "<unknown>",
        "DestUniqueid": "1714557603.45",
        "DestLinkedid": LINKEDID,
        "DialString": "102",
    }
    fed(leg("DialBegin", local, "79161234567", "1714557602.44", **dial_fields))
    fed(leg("Newchannel", phone, "102", "1714557603.45"))
    fed(leg("DialEnd", local, "79161234567", "1714557602.44", DialStatus="ANSWER", **dial_fields))
    fed(leg("Hangup", phone, "102", "1714557603.45", Cause="16"))
    fed(leg("Hangup", local, "79161234567", "1714557602.44", Cause="16"))
    fed(leg("Hangup", PHONE, "101", LINKEDID, Cause="16"))
    mine = [e for e in feed.read(0).events if e.extension == "102"]
    assert [e.kind for e in mine] == ["ringing", "answered", "hangup"]
    assert [e.data["caller"] for e in mine] == ["79161234567"] * 3
    assert mine[-1].data["caller_name"] == mine[0].data["caller_name"]


def rung(name: str, dest: str, number: str, **fields: str) -> Event:
    """``dial`` with the caller number the ring group rang ``dest`` with."""
    return make_event(
        name,
        Channel=f"Local/74951234567@callrouter-inbound-{LINKEDID};2",
        CallerIDNum=number,
        CallerIDName="Ivan",
        Linkedid=LINKEDID,
        DestChannel=dest,
        **fields,
    )


def test_a_call_ringing_1000_extensions_remembers_the_caller_of_64() -> None:
    """A ring group that rings 1,000 extensions (a loop in the dialplan): the
    caller each was rung with (its ``hangup`` names it) was kept for every
    one, per call, times the 10,000 calls remembered. The newest 64 are kept,
    the one that talked too, and the hangup is the one documented."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    sizes: list[int] = []
    for n in range(1000):
        dest = f"PJSIP/{1000 + n}-{n:08x}"
        number = f"7916{n:07d}"
        intake.callrouter_event(rung("DialBegin", dest, number), call)
        status = "ANSWER" if n == 100 else "NOANSWER"
        intake.callrouter_event(rung("DialEnd", dest, number, DialStatus=status), call)
        sizes.append(len(intake._calls[LINKEDID].rang_with))
    assert RANG_WITH_MAX == 64
    assert max(sizes) == RANG_WITH_MAX
    kept = intake._calls[LINKEDID].rang_with
    assert "1100" in kept  # talked: kept though 899 rang after it
    assert set(kept) == {"1100", *(str(1000 + n) for n in range(1000 - 63, 1000))}
    intake.callrouter_call_end(call)
    [hangup] = [e for e in feed.read(0, limit=10_000).events if e.kind == "hangup"]
    assert hangup.extension == "1100"
    assert hangup.data == {
        "caller": "79160000100",
        "caller_name": "Ivan",
        "did": hangup.data["did"],
        "answered": call.answered,
    }
    assert LINKEDID not in intake._calls


def test_an_extension_rung_again_is_the_newest_with_the_caller_of_its_last_ring() -> None:
    """A loop rings the same extension again: one entry, the last ring's caller."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    for n in range(3):
        for ext in ("101", "102"):
            dest = f"PJSIP/{ext}-{n:08x}"
            number = f"7916000000{n}"
            intake.callrouter_event(rung("DialBegin", dest, number), call)
            intake.callrouter_event(rung("DialEnd", dest, number, DialStatus="NOANSWER"), call)
    assert intake._calls[LINKEDID].rang_with == {
        "101": ("79160000002", "Ivan"),
        "102": ("79160000002", "Ivan"),
    }


def _clicked(name: str, channel: str, num: str, cid: str, line: str, **fields: str) -> Event:
    """An event of a click-to-call's channel, as captured on the sandbox (the
    API's ``caller_id = '"Phone {extension}" <{extension}>'``): caller ``num``
    and ``cid``, connected line ``line`` named ``Phone 101``."""
    return make_event(
        name,
        Channel=channel,
        CallerIDNum=num,
        CallerIDName=cid,
        ConnectedLineNum=line,
        ConnectedLineName="Phone 101",
        Linkedid="c2c-4a6a914c43faf65cf338",
        Uniqueid=channel,
        **fields,
    )


async def test_a_click_to_call_transferred_to_102_never_gives_the_customer_the_managers_name() -> (
    None
):
    """Seen on the sandbox (issue 16): a click-to-call from 101 ("Phone 101") to
    79161234567, blind-transferred to 102. Dial named the customer's leg with
    the number it dialled and the manager's name (the dialler's connected
    line); when that leg rang 102, the feed's ``ringing`` and ``hangup`` said
    ``caller: "79161234567"`` with ``caller_name: "Phone 101"``: the client's
    number with the manager's name. A number and a name tell one party."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    fed = as_the_engine_feeds(intake)
    manager = "Local/101@sandbox-phone-00000000;1"
    customer = "Local/79161234567@sandbox-customer-00000001;1"
    colleague = "Local/102@sandbox-phone-00000002;1"
    out = {"Context": "outbound", "Exten": "79161234567"}
    to_customer = {
        "DestChannel": customer,
        "DestCallerIDNum": "79161234567",
        "DestCallerIDName": "Phone 101",
    }
    to_colleague = {
        "DestChannel": colleague,
        "DestCallerIDNum": "102",
        "DestCallerIDName": "Phone 101",
        "Context": "callrouter-dial",
        "Exten": "102",
    }
    call = fed(_clicked("Newchannel", manager, "<unknown>", "<unknown>", "<unknown>"))
    assert call is not None
    fed(_clicked("Newchannel", customer, "<unknown>", "<unknown>", "<unknown>"))
    fed(_clicked("DialBegin", manager, "101", "Phone 101", "101", **out, **to_customer))
    fed(_clicked("DialEnd", manager, "101", "Phone 101", "101", DialStatus="ANSWER", **to_customer))
    fed(
        make_event(
            "BlindTransfer",
            Result="Success",
            TransfererChannel=manager,
            TransfererLinkedid=call.linkedid,
            TransfereeChannel=customer,
            Context="callrouter-dial",
            Extension="102",
        )
    )
    fed(_clicked("Hangup", manager, "101", "Phone 101", "101", **out))
    dialled = ("79161234567", "Phone 101", "101")
    fed(_clicked("Newchannel", colleague, "<unknown>", "<unknown>", "<unknown>"))
    fed(_clicked("DialBegin", customer, *dialled, **to_colleague))
    fed(_clicked("DialEnd", customer, *dialled, DialStatus="ANSWER", **to_colleague))
    fed(_clicked("Hangup", colleague, "102", "Phone 101", "79161234567"))
    fed(_clicked("Hangup", customer, *dialled, Context="callrouter-dial", Exten="102"))
    events = feed.read(0).events
    mine = [(e.kind, e.data.get("caller"), e.data.get("caller_name")) for e in events]
    assert [m for m in mine if m[0] in ("ringing", "hangup")] == [
        # The manager's leg rang the customer with the manager's number and name.
        ("ringing", "101", "Phone 101"),
        # 102 hears of the customer's number, and of no name rather than 101's.
        ("ringing", "79161234567", ""),
        ("hangup", "101", "Phone 101"),
        ("hangup", "79161234567", ""),
    ]
    assert [e.extension for e in events if e.kind == "ringing"] == ["79161234567", "102"]


async def test_a_ringing_takes_number_and_name_from_one_source() -> None:
    """A dial that tells a name but no number rang with the call's number and
    the event's name, two parties' texts in one ``ringing``: the call's number
    goes with the call's name. A leg dialled under a name of its own (not the
    dialler's) keeps it when it dials in its turn."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    call.caller_number, call.caller_name = "79161234567", "Ivan"
    inbound = f"Local/74951234567@callrouter-inbound-{LINKEDID};2"

    def begin(channel: str, num: str, name: str, dest: str, dest_name: str) -> Event:
        return make_event(
            "DialBegin",
            Channel=channel,
            CallerIDNum=num,
            CallerIDName=name,
            ConnectedLineName="<unknown>",
            Linkedid=LINKEDID,
            DestChannel=dest,
            DestCallerIDName=dest_name,
        )

    phone = "PJSIP/102-00000003"
    intake.callrouter_event(begin(inbound, "<unknown>", "Phone 101", "PJSIP/101-02", ""), call)
    intake.callrouter_event(begin(inbound, "79161234567", "", phone, "Anna"), call)
    intake.callrouter_event(begin(phone, "102", "Anna", "PJSIP/103-00000004", "Ivan"), call)
    rang = [(e.extension, e.data["caller"], e.data["caller_name"]) for e in feed.read(0).events]
    assert rang == [
        ("101", "79161234567", "Ivan"),
        ("102", "79161234567", "Ivan"),
        ("103", "102", "Anna"),
    ]


async def test_event_fields_longer_than_asterisk_makes_are_cut_or_name_nothing() -> None:
    """The feed keeps 10,000 events, in memory and in its file, and a long-poll
    hands out up to 1,000 at once. The tracker's identity check bounds an
    event's ``Channel``, ``Linkedid``, ``Exten`` and ``Context``, not a
    ``DialBegin``'s ``DestChannel``, a ``DeviceStateChange``'s ``Device`` and
    ``State``, an ``ExtensionStatus``'s ``StatusText``, a ``DialEnd``'s
    ``DialStatus`` or a transfer's ``TransfererChannel``: a hostile AMI peer's
    60 KB in each was published whole (issue 16), 10,000 of them about 600 MB.
    A channel or device name longer than Asterisk makes one names no
    extension (nothing is published); a text is cut as callers' are."""
    long = "x" * 60_000
    feed = EventFeed()
    intake = FeedIntake(feed)
    call = routed_call(intake)
    # Names no channel Asterisk has: nothing published.
    intake.callrouter_event(dial("DialBegin", f"PJSIP/101{long}-00000002"), call)
    intake.callrouter_event(make_event("DeviceStateChange", Device=f"PJSIP/1{long}"), None)
    intake.callrouter_event(
        make_event(
            "BlindTransfer",
            Result="Success",
            TransfererChannel=f"PJSIP/101-{long}",
            TransfererLinkedid=LINKEDID,
            Extension="102",
        ),
        None,
    )
    assert kinds(feed) == []
    # Real names with long texts beside them: published, cut.
    intake.callrouter_event(dial("DialBegin"), call)
    intake.callrouter_event(dial("DialEnd", DialStatus=long), call)
    intake.callrouter_event(make_event("DeviceStateChange", Device="PJSIP/102", State=long), None)
    intake.callrouter_event(
        make_event("ExtensionStatus", Exten="101", Context="hints", Status="8", StatusText=long),
        None,
    )
    intake.callrouter_event(
        make_event(
            "BlindTransfer",
            Result="Success",
            TransfererChannel="PJSIP/101-00000002",
            TransfererLinkedid=LINKEDID + long,
            Extension="102",
        ),
        None,
    )
    events = feed.read(0).events
    assert [(e.kind, e.extension) for e in events] == [
        ("ringing", "101"),
        ("missed", "101"),
        ("device", "102"),
        ("presence", "101"),
        ("transferred", "101"),
    ]
    for event in events:
        assert len(json.dumps(event.to_dict(), ensure_ascii=False)) < 2_000, event.kind


async def test_each_device_state_is_published_and_the_devices_remembered_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A device's phone is worked out once (a BLF flood repeats a few hundred
    devices; issue 16): every state of it is still published, a Local one
    never, and past the bound a new device is worked out each time."""
    from router.api import intake as intake_module

    monkeypatch.setattr(intake_module, "_PHONES_MAX", 2)
    feed = EventFeed()
    intake = FeedIntake(feed)
    for device, state in [
        ("PJSIP/101", "INUSE"),
        ("Local/101@from-queue", "INUSE"),
        ("PJSIP/101", "NOT_INUSE"),
        ("SIP/103", "RINGING"),  # past the bound: not remembered, published
        ("SIP/103", "INUSE"),
        ("Local/101@from-queue", "NOT_INUSE"),
    ]:
        intake.callrouter_event(make_event("DeviceStateChange", Device=device, State=state), None)
    assert [(e.extension, e.data["device"], e.data["state"]) for e in feed.read(0).events] == [
        ("101", "PJSIP/101", "inuse"),
        ("101", "PJSIP/101", "not_inuse"),
        ("103", "SIP/103", "ringing"),
        ("103", "SIP/103", "inuse"),
    ]
    assert intake._phones == {"PJSIP/101": "101", "Local/101@from-queue": None}


async def test_a_device_name_longer_than_a_channel_is_never_remembered() -> None:
    """The devices remembered are bounded in bytes, not only in number: a
    hostile AMI peer's DeviceStateChange with a name near the 64 KiB line
    bound, 4,096 different ones, held some 256 MB for the process's life.
    Such a name is no phone's (over the Channel limit): worked out each time."""
    feed = EventFeed()
    intake = FeedIntake(feed)
    limit = IDENTITY_LIMITS["Channel"]
    for number in range(3):
        long = f"PJSIP/{number}".ljust(limit + 1, "x")
        intake.callrouter_event(make_event("DeviceStateChange", Device=long, State="INUSE"), None)
    at_the_limit = "PJSIP/104-".ljust(limit, "x")
    intake.callrouter_event(
        make_event("DeviceStateChange", Device=at_the_limit, State="INUSE"), None
    )
    assert max(len(device) for device in intake._phones) == limit
    assert len(intake._phones) == 1
    assert [e.extension for e in feed.read(0).events] == ["104"]
