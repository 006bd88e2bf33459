"""The call tracker on the events of a real Local call (tests/fixtures/ami)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from router.ami.message import Event
from router.ami.protocol import parse_rawman, split_waitevent
from router.calls import CHANNELS_MAX, TIMELINE_MAX, Call, CallTracker, Fed

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ami"


def real_call_events() -> list[Event]:
    _, first = split_waitevent(parse_rawman((FIXTURES / "waitevent_call.rawman").read_bytes()))
    _, second = split_waitevent(parse_rawman((FIXTURES / "waitevent_hangup.rawman").read_bytes()))
    return first + second


def ev(name: str, **fields: str) -> Event:
    return Event((("Event", name), *fields.items()))


def test_real_call_is_tracked_and_forgotten_after_last_hangup() -> None:
    tracker = CallTracker()
    started: list[str] = []
    ended: list[str] = []
    seen_states = set()
    for event in real_call_events():
        call, is_new, gone, _ = tracker.feed(event)
        if is_new:
            assert call is not None
            started.append(call.linkedid)
        ended += [c.linkedid for c in gone]
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
    tracker.feed(
        ev(
            "Newchannel",
            Channel="PJSIP/trunk-1",
            Uniqueid="1.1",
            Linkedid="1.1",
            CallerIDNum="79161234567",
            CallerIDName="<unknown>",
            Context="from-trunk",
            Exten="74951234567",
            ChannelStateDesc="Ring",
        )
    )
    call = tracker.feed(
        ev(
            "Newchannel",
            Channel="PJSIP/101-2",
            Uniqueid="1.2",
            Linkedid="1.1",
            CallerIDNum="101",
            ChannelStateDesc="Down",
        )
    ).call
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
    assert [c.linkedid for c in tracker.sweep()] == ["L1", "L2", "Lx"]
    assert len(tracker) == 0


def test_hangup_of_unknown_call_creates_nothing_and_timeline_is_bounded() -> None:
    tracker = CallTracker()
    assert tracker.feed(ev("Hangup", Channel="Local/gone", Linkedid="nope")) == Fed(None)
    assert len(tracker) == 0
    for i in range(TIMELINE_MAX * 3):
        call = tracker.feed(
            ev("Newexten", Channel="Local/a", Linkedid="A", Context="c", Exten="s", Priority=str(i))
        ).call
    assert call is not None
    assert len(call.timeline) == TIMELINE_MAX
    assert call.channels["Local/a"].priority == str(TIMELINE_MAX * 3 - 1)


def test_a_full_tracker_evicts_the_oldest_call_and_keeps_every_index_bounded() -> None:
    """Issue 10 item 16: 100,000 calls whose Hangup never came. Each new call evicts
    the oldest one (first in, first out), the channel index shrinks with it, and
    end hooks run for the evicted calls. (The per-call cost, flat from 1,000 to
    100,000 tracked calls, is measured in bench/bench_tracker.py, not here.)"""
    size = 2_000
    tracker = CallTracker(max_calls=size)
    ended: list[str] = []
    for i in range(size * 3):
        fed = tracker.feed(ev("Newchannel", Channel=f"PJSIP/t-{i}", Linkedid=f"L{i}"))
        ended += [c.linkedid for c in fed.ended]
        fed = tracker.feed(
            ev(
                "Newexten",
                Channel=f"PJSIP/t-{i}",
                Linkedid=f"L{i}",
                Context="c",
                Exten="s",
                Priority="1",
            )
        )
        ended += [c.linkedid for c in fed.ended]
        assert len(tracker) <= size
    assert len(tracker) == size
    assert len(tracker._by_channel) == size
    assert ended == [f"L{i}" for i in range(size * 2)]
    assert [c.linkedid for c in tracker][:2] == [f"L{size * 2}", f"L{size * 2 + 1}"]
    assert tracker.by_channel("PJSIP/t-0") is None
    assert tracker.by_channel(f"PJSIP/t-{size * 3 - 1}") is not None


def test_sweep_stops_at_the_first_fresh_call() -> None:
    """Calls are kept in start order, so the TTL sweep only walks the stale prefix."""
    now = [0.0]
    tracker = CallTracker(ttl=60, clock=lambda: now[0])
    for i in range(10):
        tracker.feed(ev("Newchannel", Channel=f"Local/{i}", Linkedid=f"L{i}"))
        now[0] += 10
    # now = 100: calls started at 0..30 are older than 60 s
    assert [c.linkedid for c in tracker.sweep()] == ["L0", "L1", "L2", "L3"]
    assert [c.linkedid for c in tracker] == [f"L{i}" for i in range(4, 10)]


class _CountingCalls(dict[str, Call]):
    """The tracker's call table, counting how many calls any walk over it visits."""

    visited = 0

    def values(self) -> Iterator[Call]:  # type: ignore[override]
        for call in super().values():
            type(self).visited += 1
            yield call


def test_a_new_call_costs_the_same_work_with_100_000_tracked() -> None:
    """Issue 10 item 16, not timed: evicting the oldest call used to walk every
    tracked call twice (a stale-list comprehension and ``min()``), 9.4 ms per new
    call at 100,000. Count the calls visited per new call instead of the time."""
    size = 100_000
    tracker = CallTracker(max_calls=size)
    table = _CountingCalls()
    tracker._calls = table
    for i in range(size):
        tracker.feed(ev("Newchannel", Channel=f"PJSIP/t-{i}", Linkedid=f"L{i}"))
    _CountingCalls.visited = 0
    for i in range(size, size + 100):
        tracker.feed(ev("Newchannel", Channel=f"PJSIP/t-{i}", Linkedid=f"L{i}"))
    assert len(tracker) == size
    assert _CountingCalls.visited <= 100 * 2


def test_feed_says_what_started_and_what_ended_in_the_order_it_ended() -> None:
    """Issue 12 item 4: no callbacks; the engine tells the plugins from what feed returns."""
    tracker = CallTracker(max_calls=2)
    first = tracker.feed(ev("Newchannel", Channel="Local/a", Linkedid="A"))
    assert first.started
    assert first.call is not None
    assert first.ended == ()
    again = tracker.feed(ev("Newexten", Channel="Local/a", Linkedid="A", Context="c"))
    assert again == Fed(first.call)  # same call, nothing started or ended
    tracker.feed(ev("Newchannel", Channel="Local/b", Linkedid="B"))
    full = tracker.feed(ev("Newchannel", Channel="Local/c", Linkedid="C"))
    assert full.started
    assert [c.linkedid for c in full.ended] == ["A"]  # the oldest made room
    hangup = tracker.feed(ev("Hangup", Channel="Local/b", Linkedid="B"))
    assert not hangup.started
    assert hangup.call is not None
    assert [c.linkedid for c in hangup.ended] == ["B"]
    assert hangup.call.state == "ended"
    assert tracker.forget("C") is full.call
    assert tracker.forget("C") is None


def test_a_channel_remembers_entering_a_bridge() -> None:
    """The API's blind transfer waits for a leg answered but not yet bridged
    (router.api.calls): the tracker tells which legs a ``BridgeEnter`` named, and
    one channel's entering (moved into the call) carries it along."""
    tracker = CallTracker()
    for channel in ("PJSIP/trunk-01", "PJSIP/101-02"):
        tracker.feed(ev("Newchannel", Channel=channel, Uniqueid=channel, Linkedid=".0"))
    call = tracker.get(".0")
    assert call is not None
    assert not any(c.entered_bridge for c in call.channels.values())
    tracker.feed(ev("Newstate", Channel="PJSIP/101-02", ChannelStateDesc="Up", Linkedid=".0"))
    assert not call.channels["PJSIP/101-02"].entered_bridge  # answered, not yet bridged
    tracker.feed(ev("BridgeEnter", Channel="PJSIP/101-02", BridgeNumChannels="1", Linkedid=".0"))
    assert call.channels["PJSIP/101-02"].entered_bridge
    assert not call.channels["PJSIP/trunk-01"].entered_bridge


def test_a_channel_bridged_into_an_older_call_leaves_its_own() -> None:
    """Asterisk 22 gives every channel of a bridge the oldest Linkedid among
    them (seen on the sandbox: two Local calls joined with the Bridge action,
    the second call's ``;1`` half went from ``.2`` to ``.0`` while its ``;2``
    half kept ``.2``). Before, the moved channel stayed a live leg of its old
    call, whose Hangup then came under the new Linkedid: the old call never
    ended until the TTL (the API and the call life kept it open for hours)."""
    tracker = CallTracker()
    for channel, linkedid in (("A;1", ".0"), ("A;2", ".0"), ("B;1", ".2"), ("B;2", ".2")):
        tracker.feed(ev("Newchannel", Channel=channel, Uniqueid=channel, Linkedid=linkedid))
    moved = tracker.feed(ev("BridgeEnter", Channel="B;1", Uniqueid="B;1", Linkedid=".0"))
    old, new = tracker.get(".2"), tracker.get(".0")
    assert old is not None
    assert new is not None
    assert moved.call is new
    assert moved.ended == ()  # B;2 is still up in the old call
    assert sorted(new.channels) == ["A;1", "A;2", "B;1"]
    assert sorted(old.channels) == ["B;2"]
    assert tracker.by_channel("B;1") is new
    # B;2 hangs up under the old Linkedid: the old call is over.
    assert [c.linkedid for c in tracker.feed(ev("Hangup", Channel="B;2", Linkedid=".2")).ended] == [
        ".2"
    ]
    # The moved leg's Hangup comes under the new one and ends nothing else.
    assert tracker.feed(ev("Hangup", Channel="B;1", Linkedid=".0")).ended == ()
    assert tracker.get(".0") is new
    for channel in ("A;1", "A;2"):
        gone = tracker.feed(ev("Hangup", Channel=channel, Linkedid=".0")).ended
    assert [c.linkedid for c in gone] == [".0"]
    assert len(tracker) == 0


def test_a_call_whose_last_live_channel_moves_away_ends_at_once() -> None:
    tracker = CallTracker()
    tracker.feed(ev("Newchannel", Channel="A;1", Linkedid=".0"))
    tracker.feed(ev("Newchannel", Channel="B;1", Linkedid=".2"))
    tracker.feed(ev("Hangup", Channel="B;2", Linkedid=".2"))  # unknown: nothing
    fed = tracker.feed(ev("BridgeEnter", Channel="B;1", Linkedid=".0"))
    assert [c.linkedid for c in fed.ended] == [".2"]
    assert tracker.get(".2") is None


def test_a_call_keeps_a_bounded_number_of_channels_however_many_come_and_go() -> None:
    """Issue 16: a hostile or broken AMI peer (or a queue call ringing agents
    for hours) sends Newchannel and Hangup of ever new channels under one
    Linkedid whose first leg stays up. Every hung-up channel stayed in the
    call, and every Hangup walked them all to see whether the call ended:
    40,000 such pairs held 70,000 channels and took 21 s, the engine stalled.
    The hung-up ones now go once the call holds ``CHANNELS_MAX``, and the
    engine is told which (``Fed.forgotten``) to forget what it kept of them."""
    tracker = CallTracker()
    tracker.feed(ev("Newchannel", Channel="PJSIP/trunk-1", Linkedid="L1", Uniqueid="L1"))
    forgotten: list[str] = []
    for i in range(CHANNELS_MAX * 4):
        name = f"Local/agent-{i};1"
        fed = tracker.feed(ev("Newchannel", Channel=name, Linkedid="L1", Uniqueid=f"u{i}"))
        forgotten += [c.name for c in fed.forgotten]
        fed = tracker.feed(ev("Hangup", Channel=name, Linkedid="L1", Uniqueid=f"u{i}"))
        forgotten += [c.name for c in fed.forgotten]
        assert fed.ended == ()
    call = tracker.get("L1")
    assert call is not None
    assert len(call.channels) <= CHANNELS_MAX
    assert "PJSIP/trunk-1" in call.channels  # the live leg is never the one to go
    assert len(forgotten) == len(set(forgotten)) >= CHANNELS_MAX * 3 - 1
    assert all(name.startswith("Local/agent-") for name in forgotten)
    assert not set(forgotten) & set(call.channels)
    # The call still ends with its last live leg.
    fed = tracker.feed(ev("Hangup", Channel="PJSIP/trunk-1", Linkedid="L1", Uniqueid="L1"))
    assert [c.linkedid for c in fed.ended] == ["L1"]
    assert len(tracker) == 0
    assert tracker._by_channel == {}


def test_a_call_full_of_live_channels_follows_no_more_of_them() -> None:
    """Issue 16: channels that never hang up cannot grow a call past the bound
    either; the call is still ended by the legs it follows."""
    tracker = CallTracker()
    for i in range(CHANNELS_MAX * 2):
        fed = tracker.feed(
            ev("Newchannel", Channel=f"PJSIP/x-{i}", Linkedid="L1", Uniqueid=f"u{i}")
        )
        assert fed.call is not None
    call = tracker.get("L1")
    assert call is not None
    assert len(call.channels) == CHANNELS_MAX
    assert len(tracker._by_channel) == CHANNELS_MAX
    assert tracker.by_channel(f"PJSIP/x-{CHANNELS_MAX * 2 - 1}") is None
    for i in range(CHANNELS_MAX):
        fed = tracker.feed(ev("Hangup", Channel=f"PJSIP/x-{i}", Linkedid="L1", Uniqueid=f"u{i}"))
    assert [c.linkedid for c in fed.ended] == ["L1"]
