"""The call life of office call shapes beyond the basic ones (issue 16): CEL that
Asterisk 22 sent for real SIP phones (tests/fixtures/cel/capture_shapes.py),
folded live and replayed from the same records grouped by call.

Pickup (``*8``, a BLF key's INVITE with Replaces), a call taken over, a parked
call taken back, a conference room, queues of two, a phone on do-not-disturb,
transfers that reach nobody, a click-to-call nobody answers (the manager or the
customer).
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from router.calllife.fold import Folder, strip_replayed
from router.calllife.model import CallEvent, CelRecord, Transfer
from router.calllife.service import CallLife
from router.calllife.settings import HistorySettings
from tests.unit.calllife.test_captured import blocks, lagging, live, records, story

SHAPES = (
    "pickup",
    "blind_transfer_noanswer",
    "attended_transfer_noanswer_back",
    "queue_two_abandoned",
    "queue_rrmemory_answered",
    "park_retrieve",
    "conference",
    "dnd_fallback",
    "replaces_ringing",
    "replaces_answered",
    "atxfer_noanswer_back",
    "park_timeout_comeback",
    "click_to_call_unanswered",
    "click_to_call_customer_unanswered",
)


def by_call(events: list[CallEvent]) -> dict[str, list[CallEvent]]:
    calls: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        calls[event.call_id].append(event)
    return dict(calls)


def replayed(name: str) -> list[CallEvent]:
    """What a replay after a gap tells: each call's stored records, call by call."""
    calls: dict[str, list[CelRecord]] = defaultdict(list)
    for record in records(name):
        calls[record.linkedid].append(record)
    folder = Folder()
    return [e for linkedid, found in calls.items() for e in folder.replay(linkedid, found)]


@pytest.mark.parametrize("name", SHAPES)
async def test_live_and_replayed_tell_the_same_calls(name: str) -> None:
    told = await live(name)
    again = replayed(name)
    assert all(e.replayed for e in again)
    assert {k: story(v) for k, v in by_call(told).items()} == {
        k: story(v) for k, v in by_call(again).items()
    }


@pytest.mark.parametrize("lag", [3, 10_000])
@pytest.mark.parametrize("name", SHAPES)
async def test_cel_running_behind_the_ringing_signs_tells_the_same_calls(
    name: str, lag: int
) -> None:
    """Asterisk's CEL behind its channel events under load (up to all of them)."""
    assert {k: story(v) for k, v in by_call(await lagging(name, lag)).items()} == {
        k: story(v) for k, v in by_call(replayed(name)).items()
    }


@pytest.mark.parametrize("how", ["live", "replayed"])
async def test_a_call_picked_up_with_star_8_is_answered_by_the_phone_that_took_it(
    how: str,
) -> None:
    """The customer's call rings 101; 102 dials *8 and takes it. 1C hears 101 ring and
    102 answer, the end on 102; the picker's own call to "*8" (a Linkedid whose
    channel went on into the customer's call) is no call at all."""
    events = await live("pickup") if how == "live" else replayed("pickup")
    [(_, call)] = by_call(events).items()
    assert story(call) == [("ringing", "101"), ("answered", "102"), ("hangup", "102")]
    end = call[-1]
    assert (end.direction, end.external, end.status, end.hangup_by) == (
        "in",
        "89161234567",
        "ANSWER",
        "external",
    )
    assert end.talk_seconds is not None
    assert 1.5 < end.talk_seconds < 3.0  # talked 2 s


@pytest.mark.parametrize("how", ["live", "replayed"])
async def test_a_parked_call_taken_back_is_answered_by_the_phone_that_took_it(how: str) -> None:
    """101 parks the customer (a blind transfer to 7000); 102 dials the space (701)."""
    events = await live("park_retrieve") if how == "live" else replayed("park_retrieve")
    [(_, call)] = by_call(events).items()
    assert story(call) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("answered", "102"),
        ("hangup", "102"),
    ]
    assert call[2].transfer == Transfer("blind", "101", "7000")
    end = call[-1]
    assert (end.status, end.hangup_by) == ("ANSWER", "external")
    # From 101's answer to the end: 1 s with 101, 2 s parked, 2 s with 102.
    assert end.talk_seconds is not None
    assert 4.5 < end.talk_seconds < 6.0


async def test_a_phone_on_do_not_disturb_never_rings() -> None:
    """101 answers 480 at once (DND; PJSIP's cause 19): the call goes on to 102."""
    assert story(await live("dnd_fallback")) == [
        ("ringing", "102"),
        ("answered", "102"),
        ("hangup", "102"),
    ]


async def test_a_blind_transfer_nobody_takes_ends_with_nobody_on_the_call() -> None:
    """101 transfers the customer to 102, which rings 5 s unanswered; the dialplan
    then hangs up: nobody is on the call at its end, and nobody's hand hung up."""
    [(_, call)] = by_call(await live("blind_transfer_noanswer")).items()
    assert story(call) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("ringing", "102"),
        ("hangup", None),
    ]
    end = call[-1]
    assert (end.status, end.hangup_by) == ("ANSWER", None)


async def test_an_attended_transfer_given_up_leaves_the_call_with_the_transferer() -> None:
    """101 consults 102, which does not answer; 101 gives up and talks on."""
    customer, consult = by_call(await live("attended_transfer_noanswer_back")).values()
    assert story(customer) == [("ringing", "101"), ("answered", "101"), ("hangup", "101")]
    assert customer[-1].status == "ANSWER"
    assert story(consult) == [("ringing", "102"), ("hangup", None)]
    assert (consult[-1].direction, consult[-1].status, consult[-1].hangup_by) == (
        "internal",
        "CANCEL",
        "101",
    )


async def test_a_queue_of_two_the_caller_abandons_is_one_missed_call() -> None:
    events = await live("queue_two_abandoned")
    assert sorted(story(events)[:2]) == [("ringing", "101"), ("ringing", "102")]
    assert story(events)[2:] == [("hangup", None), ("missed", None)]
    assert events[-1].status == "CANCEL"


async def test_a_rrmemory_queue_rings_one_member_then_the_next() -> None:
    events = await live("queue_rrmemory_answered")
    assert story(events) == [
        ("ringing", "101"),
        ("ringing", "102"),
        ("answered", "102"),
        ("hangup", "102"),
    ]
    assert events[1].at - events[0].at > 5  # 101 rang its 5 s, then the retry


async def test_phones_that_dial_a_conference_room_were_answered() -> None:
    """101 sends the customer to the room 900 (blind), then 101 and 102 dial in: the
    dialplan answered their calls (nobody else rang), which were talked for 3 s."""
    customer, *rooms = by_call(await live("conference")).values()
    assert story(customer) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("hangup", None),
    ]
    assert customer[2].transfer == Transfer("blind", "101", "900")
    assert [story(room) for room in rooms] == [[("hangup", "101")], [("hangup", "102")]]
    for room, phone in zip(rooms, ("101", "102"), strict=True):
        end = room[-1]
        assert (end.direction, end.status, end.hangup_by) == ("internal", "ANSWER", phone)
        assert end.answered_at is not None
        assert end.talk_seconds is not None
        assert 2.5 < end.talk_seconds < 4.5


async def test_an_internal_call_names_the_calling_extension_and_the_number_dialled() -> None:
    """101 calls 102 (capture.py's "internal"); 101 and 102 dial the room 900: the
    calling extension is the call's other party (``external``), what it dialled its
    ``did``. Both were None, and 1C was told "102 -> 102"."""
    assert {(e.direction, e.external, e.did) for e in await live("internal")} == {
        ("internal", "101", "102")
    }
    _, *rooms = by_call(await live("conference")).values()
    assert [(room[-1].external, room[-1].did) for room in rooms] == [
        ("101", "900"),
        ("102", "900"),
    ]


@pytest.mark.parametrize("how", ["live", "replayed"])
async def test_a_ringing_call_a_blf_key_takes_with_replaces_is_answered_by_that_phone(
    how: str,
) -> None:
    """101 rings; 104 sends an INVITE with Replaces of that ringing dialog (a BLF key's
    pickup): Asterisk writes no PICKUP, and 104's leg shows up in the customer's call
    only at its end. 1C had the call end answered by nobody."""
    events = await live("replaces_ringing") if how == "live" else replayed("replaces_ringing")
    [(_, call)] = by_call(events).items()
    assert story(call) == [("ringing", "101"), ("answered", "104"), ("hangup", "104")]
    taken, end = call[1], call[-1]
    assert taken.at - call[0].at > 1.5  # taken 2 s into the ringing
    assert (end.status, end.hangup_by) == ("ANSWER", "external")
    assert end.talk_seconds is not None
    assert 1.5 < end.talk_seconds < 3.0  # talked 2 s


@pytest.mark.parametrize("how", ["live", "replayed"])
async def test_a_call_taken_over_with_replaces_goes_on_with_the_phone_that_took_it(
    how: str,
) -> None:
    """101 talks to the customer; 104 takes the call over (an INVITE with Replaces of
    101's dialog). 101's leg hangs up then, but the call goes on 2 s with 104: it
    ended neither then nor by 101's hand (1C had talk 1 s and hangup_by 101)."""
    events = await live("replaces_answered") if how == "live" else replayed("replaces_answered")
    [(_, call)] = by_call(events).items()
    assert story(call) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("answered", "104"),
        ("hangup", "104"),
    ]
    end = call[-1]
    assert (end.status, end.hangup_by) == ("ANSWER", "external")
    assert end.talk_seconds is not None
    assert 2.5 < end.talk_seconds < 4.0  # 1 s with 101, 2 s with 104


async def test_an_attended_transfer_nobody_answers_comes_back_to_the_transferer() -> None:
    """AMI Atxfer (the HTTP API's attended mode, the *2 feature) from 101 to 102, which
    rings 5 s unanswered (atxfernoanswertimeout); 101 has the customer back."""
    [(_, call)] = by_call(await live("atxfer_noanswer_back")).items()
    assert story(call) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("ringing", "102"),
        ("hangup", "101"),
    ]
    assert (call[-1].status, call[-1].hangup_by) == ("ANSWER", "external")


async def test_a_parked_call_nobody_takes_back_rings_the_phone_that_parked_it() -> None:
    """101 parks the customer; after parkingtime (5 s) the lot rings 101 again."""
    [(_, call)] = by_call(await live("park_timeout_comeback")).items()
    assert story(call) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("ringing", "101"),
        ("answered", "101"),
        ("hangup", "101"),
    ]
    assert len({e.event_id for e in call}) == len(call)  # two rings, two answers: own ids
    end = call[-1]
    assert end.talk_seconds is not None
    assert 9.0 < end.talk_seconds < 11.0  # parked time is talk time


#: The records of a call's end: ``LINKEDID_END`` may be sent ahead of any of them.
ENDING = frozenset({"BRIDGE_EXIT", "APP_END", "HANGUP", "CHAN_END", "LINKEDID_END"})


def end_ahead(name: str, linkedid: str, before: int) -> list[dict[str, str]]:
    """The scenario's events with call ``linkedid``'s last CEL record, its
    ``LINKEDID_END``, sent ahead of that call's CEL record number ``before`` and
    stamped 0.3 ms before it, as Asterisk may send and store it (the thread that
    drops the Linkedid's last reference)."""
    events = blocks(name)
    mine = [i for i, e in enumerate(events) if e["Event"] == "CEL" and e["LinkedID"] == linkedid]
    end = events.pop(mine[-1])
    assert end["EventName"] == "LINKEDID_END"
    ahead = events[mine[before]]
    end["Timestamp"] = f"{float(ahead['Timestamp']) - 0.0003:.6f}"
    events.insert(mine[before], end)
    return events


async def told_live(events: list[dict[str, str]]) -> list[CallEvent]:
    told: list[CallEvent] = []

    async def emit(event: CallEvent) -> None:
        told.append(event)

    life = CallLife(HistorySettings(), emit)
    for fields in events:
        await life.ingest(fields["Event"], fields)
    assert life.folder.ending is None  # every end told, none waits for the timer
    await life.stop()
    return told


@pytest.mark.parametrize("how", ["live", "replayed"])
async def test_a_click_to_call_nobody_answers_rings_the_managers_phone_and_ends_noanswer(
    how: str,
) -> None:
    """The API's Originate rings 101, nobody picks up (the Originate's timeout, 6 s):
    1C hears 101 ring and the call end ``NOANSWER``; when 101 picks up and the
    customer does not (the Dial's 5 s), the end names the number dialled."""
    for name, external in (
        ("click_to_call_unanswered", None),
        ("click_to_call_customer_unanswered", "89161234567"),
    ):
        events = await live(name) if how == "live" else replayed(name)
        [(_, call)] = by_call(events).items()
        assert story(call) == [("ringing", "101"), ("hangup", None)], name
        assert {(e.direction, e.external) for e in call} == {("out", external)}, name
        assert call[-1].status == "NOANSWER", name


@pytest.mark.parametrize(
    "name", ["click_to_call_unanswered", "click_to_call_customer_unanswered", "conference"]
)
async def test_calls_whose_first_channel_ends_them_are_told_live_wherever_their_end_was_sent(
    name: str,
) -> None:
    """Each call's ``LINKEDID_END`` sent ahead of each of its last records in turn
    (BRIDGE_EXIT, APP_END, HANGUP, CHAN_END). Live, the call life told nothing of
    an unanswered click-to-call, or of a phone's call to the conference room, whose
    end came before the phone's HANGUP (taken for a phone that went on into another
    call, as one that dialled ``*8`` does), while a replay of the same records told
    the ringing and the end."""
    expected = by_call(await live(name))
    calls: dict[str, list[CelRecord]] = defaultdict(list)
    for record in records(name):
        calls[record.linkedid].append(record)
    placements = 0
    for linkedid, cel in calls.items():
        tail = max(i for i, r in enumerate(cel) if r.event not in ENDING)
        for before in range(tail + 1, len(cel) - 1):
            placements += 1
            events = end_ahead(name, linkedid, before)
            told = by_call(await told_live(events))
            assert {k: story(v) for k, v in told.items()} == {
                k: story(v) for k, v in expected.items()
            }, (linkedid, before)
            for got, want in zip(told[linkedid], expected[linkedid], strict=True):
                assert got.same_fact(want), (linkedid, before, got, want)
            moved = [CelRecord.from_fields(e) for e in events if e["Event"] == "CEL"]
            again = Folder().replay(linkedid, [r for r in moved if r.linkedid == linkedid])
            assert [strip_replayed(e) for e in again] == told[linkedid], (linkedid, before)
    assert placements >= 2
