"""The call tracker on the events of a real Local call (tests/fixtures/ami)."""

from __future__ import annotations

from pathlib import Path

from router.ami.message import Event
from router.ami.protocol import parse_rawman, split_waitevent
from router.calls import TIMELINE_MAX, CallTracker

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ami"


def real_call_events() -> list[Event]:
    _, first = split_waitevent(parse_rawman((FIXTURES / "waitevent_call.rawman").read_bytes()))
    _, second = split_waitevent(parse_rawman((FIXTURES / "waitevent_hangup.rawman")
                                             .read_bytes()))
    return first + second


def ev(name: str, **fields: str) -> Event:
    return Event((("Event", name), *fields.items()))


def test_real_call_is_tracked_and_forgotten_after_last_hangup() -> None:
    tracker = CallTracker()
    started: list[str] = []
    ended: list[str] = []
    tracker.on_start.append(lambda c: started.append(c.linkedid))
    tracker.on_end.append(lambda c: ended.append(c.linkedid))
    seen_states = set()
    for event in real_call_events():
        call = tracker.feed(event)
        if call is not None:
            seen_states.add(call.state)
            if call.caller_number:
                assert call.caller_number == "+79161234567"
                assert call.caller_name == "Пётр Иванов"
    assert len(started) == 1
    assert ended == started
    assert len(tracker) == 0
    assert seen_states == {"ringing", "ended"}


def test_two_channels_one_call_and_answer_detection() -> None:
    tracker = CallTracker()
    tracker.feed(ev("Newchannel", Channel="PJSIP/trunk-1", Uniqueid="1.1", Linkedid="1.1",
                    CallerIDNum="79161234567", CallerIDName="<unknown>", Context="from-trunk",
                    Exten="74951234567", ChannelStateDesc="Ring"))
    call = tracker.feed(ev("Newchannel", Channel="PJSIP/101-2", Uniqueid="1.2",
                           Linkedid="1.1", CallerIDNum="101", ChannelStateDesc="Down"))
    assert call is not None
    assert call.caller_number == "79161234567"
    assert call.caller_name == ""
    assert sorted(call.channels) == ["PJSIP/101-2", "PJSIP/trunk-1"]
    tracker.feed(ev("DialEnd", Channel="PJSIP/trunk-1", Linkedid="1.1", DialStatus="ANSWER"))
    assert call.answered
    assert call.state == "answered"
    tracker.feed(ev("Hangup", Channel="PJSIP/101-2", Linkedid="1.1", Cause="16"))
    assert tracker.get("1.1") is call
    tracker.feed(ev("Hangup", Channel="PJSIP/trunk-1", Linkedid="1.1", Cause="16"))
    assert tracker.get("1.1") is None
    assert call.state == "ended"


def test_lost_hangups_expire_by_ttl_and_count_is_bounded() -> None:
    now = [0.0]
    tracker = CallTracker(ttl=60, max_calls=3, clock=lambda: now[0])
    for i in range(3):
        tracker.feed(ev("Newchannel", Channel=f"Local/{i}", Linkedid=f"L{i}"))
        now[0] += 10
    tracker.feed(ev("Newchannel", Channel="Local/x", Linkedid="Lx"))  # over max: oldest goes
    assert tracker.get("L0") is None
    assert len(tracker) == 3
    now[0] += 100
    assert tracker.sweep() == 3
    assert len(tracker) == 0


def test_hangup_of_unknown_call_creates_nothing_and_timeline_is_bounded() -> None:
    tracker = CallTracker()
    assert tracker.feed(ev("Hangup", Channel="Local/gone", Linkedid="nope")) is None
    assert len(tracker) == 0
    for i in range(TIMELINE_MAX * 3):
        call = tracker.feed(ev("Newexten", Channel="Local/a", Linkedid="A", Context="c",
                               Exten="s", Priority=str(i)))
    assert call is not None
    assert len(call.timeline) == TIMELINE_MAX
    assert call.channels["Local/a"].priority == str(TIMELINE_MAX * 3 - 1)
