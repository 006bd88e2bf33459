"""Events a caller's number makes up between blank lines (issue 16, hmxml49).

Asterisk 22 writes a channel's ``CallerIDNum`` as it is: a blank line in it ends
each event of the call there, the lines after it are read as an event of their
own, and the rest of the real event (``CallerIDName`` ... ``Uniqueid``,
``Linkedid`` and, for the request, ``UserEvent: CallRouterRequest``) completes
it. ``tests/fixtures/ami/waitevent_made_up_request.rawman`` is a real WaitEvent
answer of the sandbox's Asterisk 22.10.1 to a call whose SIP ``From`` user was
``1%0D%0A%0D%0AEvent:%20UserEvent%0D%0APrivilege:...%0D%0AChannel:%20PJSIP/103-00000001...``,
cut by PJSIP at 79 bytes: every event of the call reads as a ``UserEvent`` of
``PJSIP/103-00000001`` with the caller's own ``Uniqueid``, and its request as
a request of that channel. On the sandbox such a request got a call in
progress between phones 102 and 103 redirected (the talk cut, 103's leg sent
to ring 101).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from router.ami.message import Event, Response
from router.ami.protocol import ActionResult, parse_rawman
from router.calls import CallTracker
from router.dialplan import Dialplan
from router.hookspecs import hookimpl
from tests.unit.test_engine_unit import FakeClient, leg, make_engine, redirects

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ami"
VICTIM = "PJSIP/103-00000001"


def made_up_poll() -> list[Event]:
    """The events of the captured poll."""
    body = (FIXTURES / "waitevent_made_up_request.rawman").read_bytes()
    return [m for m in parse_rawman(body) if isinstance(m, Event)]


def victims_channel() -> Event:
    """The live channel the number names, as Asterisk announced it."""
    return leg("Newchannel", VICTIM, "103", linkedid="victim.1", context="sandbox-phones")


def test_the_capture_reads_as_a_request_of_the_channel_the_number_named() -> None:
    """What callrouter cannot tell from the text alone: the request names the
    victim's channel ahead of its key, as a channel's own request does."""
    [request] = [e for e in made_up_poll() if e.get("UserEvent") == "CallRouterRequest"]
    assert request.get("Channel") == VICTIM
    assert request.get("Uniqueid") == "callrouter-sandbox-1796686261.0"  # the caller's own
    routing = Dialplan().request(request)
    assert routing is not None
    assert routing.channel == VICTIM


async def test_a_made_up_request_for_a_tracked_channel_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine knows the victim's channel by its own Uniqueid: every event
    of the poll naming it otherwise is refused, saying so; nothing is decided
    nor redirected, and the victim's call keeps its channel. Before, the
    request was decided (the shipped rules' default route redirected it)."""
    engine, client = await make_engine(tmp_path)
    await engine.handle_event(victims_channel())
    refused = engine.tracker.refused
    with caplog.at_level(logging.WARNING, logger="router.calls"):
        for event in made_up_poll():
            await engine.handle_event(event)
        await engine.wait_idle()
    assert redirects(client) == []
    assert engine.records == []
    assert engine.tracker.refused - refused == 17  # each of the call's events
    call = engine.tracker.by_channel(VICTIM)
    assert call is not None
    assert call.linkedid == "victim.1"
    said = [r.getMessage() for r in caplog.records if r.name == "router.calls"]
    assert said == [
        f"an event UserEvent naming the channel {VICTIM} with another Uniqueid than its "
        "own is not tracked: Asterisk writes a channel's own, and a caller or dialled "
        "number holding blank lines (which Asterisk writes as they are) made this event "
        "up; docs/asterisk.md"
    ]


def test_impostor_names_the_channel_a_made_up_event_claims() -> None:
    """What the engine asks too of a request taken from a backlog's raw text
    ahead of the events before it (router/engine.py ``_route_early``)."""
    tracker = CallTracker()
    tracker.feed(victims_channel())
    [request] = [e for e in made_up_poll() if e.get("UserEvent") == "CallRouterRequest"]
    assert tracker.impostor(request) == VICTIM
    assert tracker.impostor(victims_channel()) is None
    assert tracker.refused == 0  # asking counts nothing: feed counts and says it


def test_after_a_gap_a_name_given_again_is_a_new_channel() -> None:
    """An Asterisk restart gives channel names again, and ends the event
    stream's session: a channel tracked before the gap no longer vouches for
    its Uniqueid, so the new channel of that name is tracked (its call routed
    as ever); one seen since is judged again."""
    tracker = CallTracker()
    tracker.feed(victims_channel())
    again = leg("Newchannel", VICTIM, "7", linkedid="new.1", uniqueid="new.1")
    assert tracker.impostor(again) == VICTIM
    tracker.new_session()
    assert tracker.impostor(again) is None
    assert not tracker.feed(again).refused
    # A channel first seen since the gap is judged again.
    other = leg("Newchannel", "PJSIP/104-00000002", "104", linkedid="o.1", uniqueid="o.1")
    tracker.feed(other)
    forged = leg("Hangup", "PJSIP/104-00000002", "1", linkedid="a.1", uniqueid="a.1")
    assert tracker.impostor(forged) == "PJSIP/104-00000002"
    assert tracker.feed(forged).refused


def test_a_request_without_its_snapshots_ids_routes_nothing() -> None:
    """Asterisk writes a channel's Uniqueid and Linkedid in every snapshot; a
    request without either was cut by a second blank line a caller wrote
    (the dialled number can hold one too): it names no channel it can vouch for."""
    full = leg("UserEvent", VICTIM, "1", linkedid="v.1", extra=[("UserEvent", "CallRouterRequest")])
    assert Dialplan().request(full) is not None
    for key in ("Uniqueid", "Linkedid"):
        cut = Event(tuple((k, v) for k, v in full.fields if k != key))
        assert Dialplan().request(cut) is None


def test_a_channel_the_reconcile_lists_again_is_judged_again() -> None:
    """After a gap the reconcile lists the live channels: one listed under the
    Uniqueid it is tracked by is this session's again, so an event made up
    for it is refused again (one that began before a network blip is no
    easier to take over than one that began after)."""
    tracker = CallTracker()
    tracker.feed(victims_channel())
    forged = leg("Hangup", VICTIM, "1", linkedid="a.1", uniqueid="a.1")
    tracker.new_session()
    assert tracker.impostor(forged) is None
    tracker.vouch(leg("CoreShowChannel", VICTIM, "1", linkedid="x", uniqueid="a.1"))
    assert tracker.impostor(forged) is None  # listed under another Uniqueid: no vouch
    tracker.vouch(leg("CoreShowChannel", VICTIM, "103", linkedid="victim.1"))
    assert tracker.impostor(forged) == VICTIM


async def test_after_a_gap_the_reconcile_vouches_for_the_channels_it_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's reconcile after a gap lists the call in progress under its
    own Uniqueid: the made-up request for it is refused as before the gap."""
    engine, client = await make_engine(tmp_path)
    await engine.handle_event(victims_channel())
    listed = leg("CoreShowChannel", VICTIM, "103", linkedid="victim.1", context="sandbox-phones")
    sent = FakeClient.send

    async def send(
        self: FakeClient, name: str, params: object = None, **kw: object
    ) -> ActionResult:
        if name != "CoreShowChannels":
            return await sent(self, name, params, **kw)
        closing = Event((("Event", "CoreShowChannelsComplete"), ("ListItems", "1")))
        response = Response((("Response", "Success"), ("EventList", "start")))
        return ActionResult(response, (listed,), True, closing)

    monkeypatch.setattr(FakeClient, "send", send)
    engine.tracker.new_session()  # as the engine's gap does (Engine._on_gap)
    await engine.reconcile(trigger="gap")
    for event in made_up_poll():
        await engine.handle_event(event)
    await engine.wait_idle()
    assert redirects(client) == []
    assert engine.records == []


async def test_a_made_up_cel_record_of_a_tracked_channel_reaches_no_plugin(
    tmp_path: Path,
) -> None:
    """CEL records go to plugins and the call life, not the tracker: one made
    up for a tracked channel (a ``HANGUP`` of a call in progress, which 1C's
    history would keep) is refused there too; the channel's own is read."""
    told: list[str] = []

    class Reader:
        @hookimpl
        def callrouter_wanted_events(self) -> tuple[str, ...]:
            return ("CEL",)

        @hookimpl
        def callrouter_event(self, event: Event, call: object) -> None:
            if event.name == "CEL":
                told.append(event.get("UniqueID") or "")

    engine, _ = await make_engine(tmp_path)
    engine.plugins.register(Reader(), name="reader")
    await engine.handle_event(victims_channel())
    own = victims_channel().get("Uniqueid") or ""
    for uniqueid in ("a.1", own):
        record = (("EventName", "HANGUP"), ("Channel", VICTIM), ("UniqueID", uniqueid))
        await engine.handle_event(Event((("Event", "CEL"), *record, ("LinkedID", uniqueid))))
    assert told == [own]


def _respelled(event: Event, name: str) -> Event:
    """``event`` with the victim's channel name written as ``name``."""
    return Event(tuple((k, name if v == VICTIM else v) for k, v in event.fields))


async def test_a_made_up_request_naming_a_live_channel_in_another_case_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asterisk finds a channel by its name in any case (a Getvar or Redirect
    of ``local/xx@SINK-00000004;2`` acted on ``Local/xx@sink-00000004;2`` on
    the sandbox's Asterisk 22.10.1), and never writes a live channel's name
    otherwise than as it made it: the captured request with the victim's name
    in lower case (the same 79 bytes) is refused as the exact one is. Before
    (hrev50), it was decided and its Redirect, of ``pjsip/103-00000001``,
    would have moved the call in progress."""
    engine, client = await make_engine(tmp_path)
    await engine.handle_event(victims_channel())
    refused = engine.tracker.refused
    with caplog.at_level(logging.WARNING, logger="router.calls"):
        for event in made_up_poll():
            await engine.handle_event(_respelled(event, VICTIM.lower()))
        await engine.wait_idle()
    assert redirects(client) == []
    assert engine.records == []
    assert engine.tracker.refused - refused == 17
    said = [r.getMessage() for r in caplog.records if r.name == "router.calls"]
    assert said[0].startswith(
        f"an event UserEvent naming the channel {VICTIM} spelled {VICTIM.lower()} is not tracked"
    )
    # The early route a backlog takes asks the same.
    tracker = CallTracker()
    tracker.feed(victims_channel())
    [request] = [e for e in made_up_poll() if e.get("UserEvent") == "CallRouterRequest"]
    assert tracker.impostor(_respelled(request, "Pjsip/103-00000001")) == "Pjsip/103-00000001"


def _as_asterisk_writes(number: str) -> bytes:
    """A trunk's Newchannel whose CallerIDNum is ``number``, written as it is."""
    return (
        "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-00000002\r\n"
        "ChannelState: 4\r\nChannelStateDesc: Ring\r\n"
        f"CallerIDNum: {number}\r\nCallerIDName: <unknown>\r\n"
        "ConnectedLineNum: <unknown>\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\n"
        "AccountCode: \r\nContext: from-trunk\r\nExten: 74951234567\r\nPriority: 1\r\n"
        "Uniqueid: caller.2\r\nLinkedid: caller.2\r\n\r\n"
    ).encode()


def test_a_made_up_event_cut_off_before_the_ids_is_refused() -> None:
    """A number that ends its made-up event with a second blank line leaves
    it without the real event's ``Uniqueid`` and ``Linkedid`` (49 bytes here,
    within PJSIP's 79): a ``Hangup`` of a live channel then was tracked as
    its own, and the engine told the router and the parking that the channel
    hung up, dropping a decision in flight for it (hrev50). Asterisk writes a
    channel's ``Uniqueid`` with its every event, so it is refused now."""
    tracker = CallTracker()
    tracker.feed(victims_channel())
    body = _as_asterisk_writes(f"1\r\n\r\nEvent: Hangup\r\nChannel: {VICTIM}\r\nCause: 16\r\n")
    events = [m for m in parse_rawman(body) if isinstance(m, Event)]
    [hangup] = [e for e in events if e.name == "Hangup"]
    assert hangup.get("Uniqueid") is None
    assert tracker.impostor(hangup) == VICTIM
    assert tracker.feed(hangup).refused
    assert tracker.by_channel(VICTIM) is not None  # still live


def test_asterisks_own_events_of_a_call_are_all_tracked() -> None:
    """Asterisk's events of a real call (its test framework's ``TestEvent``
    among them: a ``Channel`` with no snapshot, so no ``Uniqueid``) are none of
    them refused."""
    from tests.unit.test_calls import real_call_events

    tracker = CallTracker()
    events = real_call_events()
    assert any(e.name == "TestEvent" and e.get("Uniqueid") is None for e in events)
    for event in events:
        assert not tracker.feed(event).refused, event.name
    assert tracker.refused == 0


@pytest.mark.parametrize("before", [" ", "\t", "\x01"])
async def test_a_made_up_request_naming_a_live_channel_after_blanks_is_refused(
    tmp_path: Path, before: str
) -> None:
    """Asterisk skips the bytes below 33 at the start of an action's header
    value (``ast_skip_blanks``): a Getvar of ``Local/yy@sink-00000005;2`` after
    a space, a tab or a ``\\x01`` answered for that channel on the sandbox's
    Asterisk 22.10.1 (after it: "No such channel"). A made-up request naming
    the victim so (``Channel:  PJSIP/...``, one byte more) is refused; before
    (hrev50) its Redirect went out with the blank and moved the victim."""
    engine, client = await make_engine(tmp_path)
    await engine.handle_event(victims_channel())
    for event in made_up_poll():
        await engine.handle_event(_respelled(event, before + VICTIM))
    await engine.wait_idle()
    assert redirects(client) == []
    assert engine.records == []
    tracker = CallTracker()
    tracker.feed(victims_channel())
    [request] = [e for e in made_up_poll() if e.get("UserEvent") == "CallRouterRequest"]
    assert tracker.impostor(_respelled(request, before + VICTIM.lower())) is not None
    assert tracker.impostor(_respelled(request, VICTIM + before)) is None  # names no channel


def test_a_made_up_event_naming_a_live_channel_by_its_uniqueid_is_refused() -> None:
    """Asterisk looks a channel up by its Uniqueid when no name matches (a
    Getvar of ``callrouter-sandbox-1796695364.9`` answered for
    ``Local/xx@sink-00000004;2`` on the sandbox's Asterisk 22.10.1): a made-up
    request with the victim's Uniqueid as its ``Channel`` (a guess, 40 bytes)
    is refused, and the index forgets the Uniqueid with the channel."""
    tracker = CallTracker()
    tracker.feed(victims_channel())
    own = victims_channel().get("Uniqueid") or ""
    [request] = [e for e in made_up_poll() if e.get("UserEvent") == "CallRouterRequest"]
    assert tracker.impostor(_respelled(request, own)) == own
    assert tracker.feed(_respelled(request, own)).refused
    hangup = leg("Hangup", VICTIM, "103", linkedid="victim.1", context="sandbox-phones")
    assert not tracker.feed(hangup).refused
    assert tracker.impostor(_respelled(request, own)) is None  # gone: no channel is it
    assert tracker._folded == {}


WAITING = "PJSIP/trunk-00000007"


def _listed(channel: str, uniqueid: str, number: str) -> Event:
    """A CoreShowChannel item of a channel waiting in the inbound context."""
    return Event(
        (
            ("Event", "CoreShowChannel"),
            ("Channel", channel),
            ("CallerIDNum", number),
            ("Context", "callrouter-inbound"),
            ("Exten", "74951234567"),
            ("Priority", "7"),
            ("Uniqueid", uniqueid),
            ("Linkedid", uniqueid),
            ("Application", "Wait"),
            ("ApplicationData", "4"),
        )
    )


async def _reconcile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: tuple[Event, ...], *, tracked: bool
) -> tuple[int, list[tuple[str, str]], int]:
    """The reconcile after a gap over ``listed``: how many it routed, the
    records' Uniqueids and callers, and the Redirects sent."""
    engine, client = await make_engine(tmp_path)
    if tracked:
        newchannel = leg("Newchannel", WAITING, "79160000001", linkedid="v.1", uniqueid="v.1")
        await engine.handle_event(newchannel)
    sent = FakeClient.send

    async def send(
        self: FakeClient, name: str, params: object = None, **kw: object
    ) -> ActionResult:
        if name == "Getvar":
            assert isinstance(params, dict)
            deadline = params["Variable"] == "CALLROUTER_DEADLINE"
            value = str(time.time() + 30) if deadline else "74951234567"
            return ActionResult(Response((("Response", "Success"), ("Value", value))))
        if name != "CoreShowChannels":
            return await sent(self, name, params, **kw)
        closing = Event((("Event", "CoreShowChannelsComplete"), ("ListItems", str(len(listed)))))
        response = Response((("Response", "Success"), ("EventList", "start")))
        return ActionResult(response, listed, True, closing)

    monkeypatch.setattr(FakeClient, "send", send)
    engine.tracker.new_session()  # as the engine's gap does (Engine._on_gap)
    submitted = await engine.reconcile(trigger="gap")
    await engine.wait_idle()
    return submitted, [(r.uniqueid, r.caller) for r in engine.records], len(redirects(client))


@pytest.mark.parametrize("named", [WAITING, WAITING.lower(), " " + WAITING, "v.1"])
async def test_a_made_up_listing_item_of_a_waiting_channel_is_not_routed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: str
) -> None:
    """A caller's number with a blank line makes its channel's CoreShowChannel
    item two, the second naming the channel it chose, completed by the rest of
    the real item (its Uniqueid, and the inbound context's Wait: the caller
    waits there too). The reconcile after a gap routed that item as a second
    request of the channel it named, with the caller number it gave, and
    redirected the channel (hrev50). A channel listed twice is routed only by
    the item under the Uniqueid it is tracked by."""
    listed = (
        _listed(WAITING, "v.1", "79160000001"),
        _listed(named, "a.2", "79990000000"),  # made up: the caller's own Uniqueid
    )
    submitted, records, sent = await _reconcile(tmp_path, monkeypatch, listed, tracked=True)
    assert (submitted, records, sent) == (1, [("v.1", "79160000001")], 1)


async def test_a_channel_listed_twice_and_not_tracked_is_not_routed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which of the two items is Asterisk's cannot be told for a channel that
    came in during the gap: neither is routed (the call takes its default
    route), nor tracked under the made-up one's Uniqueid; a channel listed
    once is routed as ever."""
    listed = (
        _listed("PJSIP/trunk-00000009", "a.2", "79990000000"),  # made up
        _listed("PJSIP/trunk-00000009", "w.3", "79160000003"),
        _listed("PJSIP/trunk-00000008", "w.4", "79160000004"),
    )
    submitted, records, sent = await _reconcile(tmp_path, monkeypatch, listed, tracked=False)
    assert (submitted, records, sent) == (1, [("w.4", "79160000004")], 1)


def test_a_key_twice_said_first_does_not_hide_the_channel_a_caller_tried_to_take(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One caller's number makes events of both kinds in one call: some with a
    key twice (refused by :func:`router.calls.smuggled`), some naming a live
    channel (refused by the impostor check). They shared one warning a minute,
    so on the sandbox a ``two Channel lines`` warning said first hid, for a
    minute, the line naming the channel the caller tried to take over. Each
    kind has its own minute now: both are said."""
    tracker = CallTracker()
    tracker.feed(victims_channel())
    twice = [
        m
        for m in parse_rawman(
            b"Event: CEL\r\nEventName: CHAN_START\r\nChannel: PJSIP/trunk-00000009\r\n"
            b"Channel: PJSIP/trunk-00000009\r\nUniqueID: 9.9\r\nLinkedID: 9.9\r\n\r\n"
        )
        if isinstance(m, Event)
    ]
    [request] = [e for e in made_up_poll() if e.get("UserEvent") == "CallRouterRequest"]
    with caplog.at_level(logging.WARNING, logger="router.calls"):
        assert tracker.feed(twice[0]).refused
        assert tracker.feed(request).refused
    said = [r.getMessage() for r in caplog.records if r.name == "router.calls"]
    assert len(said) == 2, said
    assert said[0].startswith("an event CEL with two Channel lines is not tracked")
    assert said[1].startswith(f"an event UserEvent naming the channel {VICTIM} with another")
