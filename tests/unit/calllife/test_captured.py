"""The call life of real calls: CEL that Asterisk 22 sent and stored for real SIP
phones (tests/fixtures/cel/capture.py), folded live and replayed (issue 14).

Each ``<scenario>.rawman`` holds the ``CEL``, ``Newstate`` and ``DialState``
events of one scenario as Asterisk sent them; ``cel.db`` is the file
cel_sqlite3_custom wrote for all of them.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.calllife.fold import Folder
from router.calllife.model import CallEvent, CelRecord, Transfer
from router.calllife.service import CallLife
from router.calllife.settings import HistorySettings
from router.calllife.sources import SqliteSource

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cel"
SCENARIOS = (
    "answered",
    "busy_fallback",
    "ring_group_missed",
    "queue_answered",
    "internal",
    "outbound",
    "blind_transfer",
    "attended_transfer",
)


def blocks(name: str) -> list[dict[str, str]]:
    """The scenario's events, parsed as the rawman reader does (field per line)."""
    out = []
    for block in (FIXTURES / f"{name}.rawman").read_bytes().split(b"\r\n\r\n"):
        if block.strip():
            lines = block.decode("utf-8").split("\r\n")
            out.append(dict(line.split(": ", 1) if ": " in line else (line, "") for line in lines))
    return out


def records(name: str) -> list[CelRecord]:
    return [CelRecord.from_fields(b) for b in blocks(name) if b["Event"] == "CEL"]


async def live(name: str) -> list[CallEvent]:
    """What the engine's call life tells for the scenario's events, in order."""
    told: list[CallEvent] = []

    async def emit(event: CallEvent) -> None:
        told.append(event)

    life = CallLife(HistorySettings(), emit)
    for fields in blocks(name):
        await life.ingest(fields["Event"], fields)
    return told


def story(events: list[CallEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.extension) for e in events]


def stored() -> dict[str, list[CelRecord]]:
    return SqliteSource(FIXTURES / "cel.db").read(0)


async def test_answered_by_the_owner() -> None:
    events = await live("answered")
    assert story(events) == [("ringing", "101"), ("answered", "101"), ("hangup", "101")]
    assert {e.direction for e in events} == {"in"}
    # The raw caller number exactly as the trunk delivered it, and the DID.
    assert {e.external for e in events} == {"8 (916) 123-45-67"}
    assert {e.did for e in events} == {"74950000101"}
    hangup = events[-1]
    assert hangup.status == "ANSWER"
    assert hangup.hangup_by == "101"
    assert hangup.talk_seconds is not None
    assert 2.8 < hangup.talk_seconds < 3.5  # the phone hung up 3 s after answering
    assert hangup.answered_at == events[1].at


async def test_busy_owner_falls_back_and_never_rang() -> None:
    events = await live("busy_fallback")
    assert story(events) == [("ringing", "102"), ("answered", "102"), ("hangup", "102")]
    assert events[-1].hangup_by == "external"


async def test_ring_group_nobody_answers_is_one_missed_call() -> None:
    events = await live("ring_group_missed")
    assert sorted(story(events)[:3]) == [("ringing", "101"), ("ringing", "102"), ("ringing", "103")]
    assert story(events)[3:] == [("hangup", None), ("missed", None)]
    missed = events[-1]
    assert missed.status == "NOANSWER"
    assert missed.external == "+7 916 123-45-67"
    assert missed.talk_seconds is None


async def test_queue_call_answered_by_an_agent() -> None:
    events = await live("queue_answered")
    assert ("answered", "102") in story(events)
    assert sorted(e.extension or "" for e in events if e.kind == "ringing") == ["101", "102", "103"]
    assert story(events)[-1] == ("hangup", "102")
    assert "missed" not in [e.kind for e in events]


async def test_internal_and_outbound_calls() -> None:
    internal = await live("internal")
    assert story(internal) == [("ringing", "102"), ("answered", "102"), ("hangup", "102")]
    assert {e.direction for e in internal} == {"internal"}
    assert internal[-1].hangup_by == "101"
    outbound = await live("outbound")
    assert story(outbound) == [("answered", "101"), ("hangup", "101")]
    assert {e.direction for e in outbound} == {"out"}
    assert {e.external for e in outbound} == {"89161234567"}


async def test_blind_transfer_on_the_phone() -> None:
    events = await live("blind_transfer")
    assert story(events) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("ringing", "102"),
        ("answered", "102"),
        ("hangup", "102"),
    ]
    assert events[2].transfer == Transfer("blind", "101", "102")
    assert events[-1].hangup_by == "external"
    assert {e.call_id for e in events} == {events[0].call_id}


async def test_attended_transfer_keeps_the_customers_call() -> None:
    """Asterisk gives the target's leg the customer's Linkedid when the transfer
    completes (seen here): the customer's call goes on with 102 under its key."""
    events = await live("attended_transfer")
    customer = events[0].call_id
    mine = [e for e in events if e.call_id == customer]
    assert story(mine) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("hangup", "102"),
    ]
    assert mine[2].transfer == Transfer("attended", "101", "102")
    assert mine[-1].hangup_by == "external"
    talk = mine[-1].talk_seconds
    assert talk is not None
    assert talk > 4  # 1 s before the transfer, 1 s consulting, 3 s with 102
    # The consultation is its own internal call: 101 rang 102, which answered.
    consult = [e for e in events if e.call_id != customer]
    assert story(consult) == [("ringing", "102"), ("answered", "102"), ("hangup", "102")]
    assert {e.direction for e in consult} == {"internal"}


@pytest.mark.parametrize("name", SCENARIOS)
async def test_live_and_replayed_tell_the_same_facts(name: str) -> None:
    told = await live(name)
    calls = stored()
    folder = Folder()
    replayed = [e for k in {e.call_id for e in told} for e in folder.replay(k, calls[k])]
    assert all(e.replayed for e in replayed)
    by_id = {e.event_id: e for e in replayed}
    assert sorted(by_id) == sorted(e.event_id for e in told)
    for event in told:
        assert event.same_fact(by_id[event.event_id]), event.event_id


def test_the_store_holds_every_scenario() -> None:
    calls = stored()
    assert len(calls) == len(SCENARIOS) + 1  # and the attended transfer's consultation


ALL = [r for name in SCENARIOS for r in records(name)]


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_duplicates_anywhere_after_the_original_are_told_once(rnd: random.Random) -> None:
    """A record delivered again (a replay overlapping live) never tells a fact twice."""
    clean = Folder()
    expected = [e.event_id for r in ALL for e in clean.feed(r)]
    stream: list[CelRecord] = []
    for record in ALL:
        stream.append(record)
        for _ in range(rnd.randint(0, 2)):
            stream.insert(rnd.randint(len(stream), len(stream) + 3), record)
    folder = Folder()
    got = [e.event_id for r in stream for e in folder.feed(r)]
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=len(ALL)), st.booleans())
def test_a_gap_anywhere_is_filled_by_the_replay(cut: int, lose_middle: bool) -> None:
    """Live up to ``cut``, then the stream loses events (all, or a stretch), then a
    replay of the store: every fact is told exactly once, under the same id."""
    clean = Folder()
    expected = sorted(e.event_id for r in ALL for e in clean.feed(r))
    folder = Folder()
    told = [e.event_id for r in ALL[:cut] for e in folder.feed(r)]
    if lose_middle:  # the stream resumes a little later; the replay comes after
        told += [e.event_id for r in ALL[cut + 5 :] for e in folder.feed(r)]
    calls = stored()
    for linkedid in sorted(calls):
        told += [e.event_id for e in folder.replay(linkedid, calls[linkedid])]
    assert len(told) == len(set(told))
    assert sorted(told) == expected


async def lagging(name: str, lag: int) -> list[CallEvent]:
    """What the call life tells when Asterisk's CEL runs ``lag`` events behind its
    channel events (seen under load: a ring group's phones rang before even the
    caller's CHAN_START came), everything else in the order Asterisk sent it."""
    told: list[CallEvent] = []

    async def emit(event: CallEvent) -> None:
        told.append(event)

    order = sorted(
        enumerate(blocks(name)),
        key=lambda item: item[0] + (lag if item[1]["Event"] == "CEL" else 0),
    )
    life = CallLife(HistorySettings(), emit)
    for _, fields in order:
        await life.ingest(fields["Event"], fields)
    return told


@pytest.mark.parametrize("lag", [2, 8, 10_000])
@pytest.mark.parametrize("name", SCENARIOS)
async def test_cel_running_behind_the_ringing_signs_tells_the_same_facts(
    name: str, lag: int
) -> None:
    """Whatever the lag, live tells what it tells in order and what the store tells."""
    told = await lagging(name, lag)
    assert sorted(e.event_id for e in told) == sorted(e.event_id for e in await live(name))
    calls = stored()
    folder = Folder()
    by_id = {e.event_id: e for k in {e.call_id for e in told} for e in folder.replay(k, calls[k])}
    assert sorted(by_id) == sorted(e.event_id for e in told)
    for event in told:
        assert event.same_fact(by_id[event.event_id]), event.event_id


async def test_phones_ringing_before_the_calls_first_cel_are_told_as_their_legs_start() -> None:
    """The ring group's three signs all came before the caller's CHAN_START: each
    phone's ringing is told when its leg's CHAN_START is folded, not with the
    call's ``missed`` at its end (the sign found no call and was dropped)."""
    told: list[CallEvent] = []
    starts: list[int] = []

    async def emit(event: CallEvent) -> None:
        told.append(event)

    life = CallLife(HistorySettings(), emit)
    signs = [b for b in blocks("ring_group_missed") if b["Event"] != "CEL"]
    cel = [b for b in blocks("ring_group_missed") if b["Event"] == "CEL"]
    assert signs
    for fields in signs:
        await life.ingest(fields["Event"], fields)
    assert told == []
    for fields in cel:
        await life.ingest(fields["Event"], fields)
        if fields.get("EventName") == "CHAN_START" and "PJSIP/10" in fields.get("Channel", ""):
            starts.append(len(told))
    assert story(told) == [
        ("ringing", "101"),
        ("ringing", "102"),
        ("ringing", "103"),
        ("hangup", None),
        ("missed", None),
    ]
    assert starts == [1, 2, 3]  # each told as its leg started


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.rawman")), ids=lambda p: p.stem)
def test_no_captured_call_end_waits_for_a_leg(path: Path) -> None:
    """A live ``LINKEDID_END`` waits for the ends of legs that still decide what is
    told (Folder.feed); on every real call captured it came after them all, so
    none waited, and a leg that leaves the Linkedid (an attended transfer's
    consultation, ``*8``, a parking space, a BLF take-over) delays no call's end."""
    folder = Folder()
    for fields in blocks(path.stem):
        if fields["Event"] != "CEL":
            continue
        record = CelRecord.from_fields(fields)
        folder.feed(record)
        if record.event == "LINKEDID_END":
            assert folder.ending is None, record.linkedid
