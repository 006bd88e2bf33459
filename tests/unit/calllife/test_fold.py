"""The call-life folder on CEL shaped as Asterisk 22 writes it (issue 14)."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace

import pytest

from router.ami.message import Event
from router.calllife.fold import END_GRACE, Folder, SeenIds, extension_of, strip_replayed
from router.calllife.model import CallEvent, CelRecord, Transfer
from router.testing.cel import Cel, as_ami


def fold(cel: Cel) -> list[CallEvent]:
    folder = Folder()
    out: list[CallEvent] = []
    for record in cel.records:
        out += folder.feed(record)
    return out


def kinds(events: list[CallEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.extension) for e in events]


def inbound(cel: Cel) -> str:
    return cel.channel(
        "PJSIP/pstn", first=True, cid_num="89161234567", exten="74951234567", context="from-pstn"
    )


def test_extension_of_reads_phone_channels_only() -> None:
    assert extension_of("PJSIP/101-0000002a") == "101"
    assert extension_of("SIP/102-00000001") == "102"
    assert extension_of("PJSIP/pstn-00000003") is None
    assert extension_of("Local/101@sandbox-phone-00000000;1") is None
    assert extension_of("PJSIP/74951234567-00000001") is None  # an outside number is no extension


def test_inbound_answered_ringing_answered_hangup_with_talk_time() -> None:
    cel = Cel()
    trunk = inbound(cel)
    cel.tick(4)  # the wait for a decision
    phone = cel.channel("PJSIP/101")
    cel.tick(3)
    cel.answer(phone)
    answered = cel.now
    cel.answer(trunk)
    cel.tick(42.5)
    cel.hangup(phone, source=cel.name(phone))
    ended = cel.now - 0.01  # HANGUP precedes its CHAN_END
    cel.hangup(trunk, source=cel.name(phone), dialstatus="ANSWER")
    cel.end()
    events = fold(cel)
    assert kinds(events) == [("ringing", "101"), ("answered", "101"), ("hangup", "101")]
    ring, answer, hangup = events
    assert ring.event_id == f"{cel.linkedid}/ringing/{phone}"
    assert answer.at == answered
    assert {e.direction for e in events} == {"in"}
    assert {e.external for e in events} == {"89161234567"}
    assert {e.did for e in events} == {"74951234567"}
    assert hangup.status == "ANSWER"
    assert hangup.hangup_by == "101"
    assert hangup.ended_at == ended
    assert hangup.talk_seconds is not None
    assert abs(hangup.talk_seconds - (ended - answered)) < 0.001
    assert {e.call_id for e in events} == {cel.linkedid}


def test_busy_owner_never_rings_and_the_fallback_does() -> None:
    cel = Cel()
    trunk = inbound(cel)
    busy = cel.channel("PJSIP/101")
    cel.tick(0.2)
    cel.hangup(busy, cause=17)
    fallback = cel.channel("PJSIP/102")
    cel.tick(2)
    cel.answer(fallback)
    cel.tick(10)
    cel.hangup(trunk, source=cel.name(trunk), dialstatus="ANSWER")
    cel.hangup(fallback, source=cel.name(trunk))
    cel.end()
    events = fold(cel)
    assert kinds(events) == [("ringing", "102"), ("answered", "102"), ("hangup", "102")]
    assert events[-1].hangup_by == "external"


def test_ring_group_nobody_answers_gives_one_missed() -> None:
    cel = Cel()
    trunk = inbound(cel)
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102", "103")]
    cel.tick(20)
    for leg in legs:
        cel.hangup(leg, cause=19)  # no answer: they rang
    cel.hangup(trunk, cause=16, dialstatus="NOANSWER")
    cel.end()
    events = fold(cel)
    assert sorted(kinds(events)[:3]) == [("ringing", "101"), ("ringing", "102"), ("ringing", "103")]
    assert kinds(events)[3:] == [("hangup", None), ("missed", None)]
    missed = events[-1]
    assert missed.status == "NOANSWER"
    assert missed.event_id == f"{cel.linkedid}/missed"
    assert [e.kind for e in events].count("missed") == 1


def test_a_ringing_sign_ahead_of_the_legs_cel_is_told_when_the_leg_starts() -> None:
    """Seen in the sandbox: Asterisk sends a dialled phone's ``Newstate`` Ringing
    and ``DialState`` RINGING before the leg's CEL ``CHAN_START``; the sign found
    no leg and was dropped, so a ring group's phones reached 1C as ``ringing``
    only with the call's ``missed``, seconds after they rang (issue 16)."""
    cel = Cel()
    trunk = inbound(cel)
    before = len(cel.records)
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102")]
    folder = Folder()
    for record in cel.records[:before]:
        assert folder.feed(record) == []
    for leg in legs:  # both signs, twice (Newstate and DialState), ahead of the CEL
        assert folder.hint(cel.linkedid, leg) == []
        assert folder.hint(cel.linkedid, leg) == []
    told = [kinds(folder.feed(record)) for record in cel.records[before:]]
    assert told == [[("ringing", "101")], [("ringing", "102")]]
    cel.tick(20)
    for leg in legs:
        cel.hangup(leg, cause=19)
    cel.hangup(trunk, cause=16, dialstatus="NOANSWER")
    cel.end()
    rest = [e for record in cel.records[before + 2 :] for e in folder.feed(record)]
    assert kinds(rest) == [("hangup", None), ("missed", None)]  # no second ringing


def test_a_ringing_sign_of_a_leg_that_never_starts_here_tells_nothing() -> None:
    cel = Cel()
    inbound(cel)
    folder = Folder()
    for record in cel.records:
        folder.feed(record)
    assert folder.hint(cel.linkedid, "no-such-leg") == []
    phone = cel.channel("PJSIP/101")
    cel.hangup(phone, cause=17)  # busy: a CHAN_START, then its HANGUP
    out = [e for record in cel.records[-3:] for e in folder.feed(record)]
    assert ("ringing", "101") not in kinds(out)


def test_caller_gives_up_while_ringing_is_a_cancelled_missed_call() -> None:
    cel = Cel()
    trunk = inbound(cel)
    leg = cel.channel("PJSIP/101")
    cel.tick(5)
    cel.hangup(trunk, source=cel.name(trunk), dialstatus="CANCEL")
    cel.hangup(leg, cause=16)
    cel.end()
    events = fold(cel)
    assert kinds(events) == [("ringing", "101"), ("hangup", None), ("missed", None)]
    assert events[-1].status == "CANCEL"
    assert events[-1].hangup_by == "external"


def test_internal_and_outbound_directions() -> None:
    cel = Cel()
    caller = cel.channel("PJSIP/101", first=True, cid_num="101", exten="102")
    callee = cel.channel("PJSIP/102")
    cel.answer(callee)
    cel.answer(caller)
    cel.tick(5)
    cel.hangup(caller, source=cel.name(caller))
    cel.hangup(callee, source=cel.name(caller))
    cel.end()
    events = fold(cel)
    assert kinds(events) == [("ringing", "102"), ("answered", "102"), ("hangup", "102")]
    assert {e.direction for e in events} == {"internal"}
    assert events[-1].hangup_by == "101"

    out = Cel("pbx-1700000100.7")
    phone = out.channel("PJSIP/101", first=True, cid_num="101", exten="89161234567")
    trunk = out.channel("PJSIP/pstn")
    out.tick(3)
    out.answer(trunk)
    out.tick(7)
    out.hangup(trunk, source=out.name(trunk))
    out.hangup(phone, source=out.name(trunk))
    out.end()
    events = fold(out)
    assert kinds(events) == [("answered", "101"), ("hangup", "101")]
    assert {e.direction for e in events} == {"out"}
    assert {e.external for e in events} == {"89161234567"}
    assert events[-1].hangup_by == "external"
    assert events[-1].talk_seconds is not None
    assert 6.9 < events[-1].talk_seconds < 7.1


def test_blind_transfer_says_who_to_whom_and_the_target_rings() -> None:
    cel = Cel()
    trunk = inbound(cel)
    first = cel.channel("PJSIP/101")
    cel.answer(first)
    cel.tick(5)
    cel.add(
        "BLINDTRANSFER",
        first,
        {"extension": "102", "context": "phones", "transferee_channel_uniqueid": trunk},
    )
    cel.hangup(first, source=cel.name(first))
    second = cel.channel("PJSIP/102")
    cel.tick(2)
    cel.answer(second)
    cel.tick(30)
    cel.hangup(second, source=cel.name(second))
    cel.hangup(trunk, source=cel.name(second))
    cel.end()
    events = fold(cel)
    assert kinds(events) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("transferred", "101"),
        ("ringing", "102"),
        ("answered", "102"),
        ("hangup", "102"),
    ]
    assert events[2].transfer == Transfer("blind", "101", "102")
    hangup = events[-1]
    assert hangup.hangup_by == "102"
    assert hangup.talk_seconds is not None
    assert hangup.talk_seconds > 35


def test_duplicates_are_told_once_and_ended_calls_are_forgotten() -> None:
    cel = Cel()
    trunk = inbound(cel)
    leg = cel.channel("PJSIP/101")
    cel.answer(leg)
    cel.hangup(leg, source=cel.name(leg))
    cel.hangup(trunk)
    cel.end()
    folder = Folder()
    events = [e for r in cel.records for e in folder.feed(r) + folder.feed(r)]
    assert len(events) == len({e.event_id for e in events}) == 3
    assert len(folder) == 0
    assert [e for r in cel.records for e in folder.feed(r)] == []


def test_replay_tells_only_what_live_did_not() -> None:
    cel = Cel()
    trunk = inbound(cel)
    leg = cel.channel("PJSIP/101")
    cel.answer(leg)
    seen_live = len(cel.records)
    cel.tick(9)
    cel.hangup(leg, source=cel.name(leg))
    cel.hangup(trunk)
    cel.end()
    folder = Folder()
    live = [e for r in cel.records[:seen_live] for e in folder.feed(r)]
    assert kinds(live) == [("ringing", "101"), ("answered", "101")]
    replayed = folder.replay(cel.linkedid, cel.records)
    assert kinds(replayed) == [("hangup", "101")]
    assert replayed[0].replayed
    assert folder.replay(cel.linkedid, cel.records) == []
    assert len(folder) == 0


def test_event_ids_told_are_bounded_and_the_oldest_goes_first() -> None:
    """The ids told are kept to ``max_emitted``, the oldest told forgotten first (a
    repeat does not make an id younger), so a replay tells only the oldest again."""
    seen = SeenIds(3)
    assert [seen.add(i) for i in ("L1/ringing/U2", "L1/answered/U2", "L1/hangup")] == [True] * 3
    assert not seen.add("L1/ringing/U2")  # seen: not told again, nor made younger
    assert seen.add("L2/hangup")
    assert len(seen) == 3
    assert "L1/ringing/U2" not in seen
    assert all(i in seen for i in ("L1/answered/U2", "L1/hangup", "L2/hangup"))
    assert seen.add("L1/ringing/U2")  # forgotten: new again, and the next oldest goes
    assert "L1/answered/U2" not in seen
    assert len(seen) == 3
    # Ids are told apart exactly as their strings are (any character).
    odd = SeenIds(10)
    assert [odd.add(i) for i in ("L/\udcff", "L/\xff", "L/\xc3\xbf", "L/\udcff")] == [
        True,
        True,
        True,
        False,
    ]
    assert "L/\udcfe" not in odd
    assert 42 not in odd

    folder = Folder(max_emitted=4)
    calls: list[tuple[Cel, list[CallEvent]]] = []
    for n in range(2):
        cel = Cel(f"pbx-1700000000.{n * 100}")
        trunk = inbound(cel)
        leg = cel.channel("PJSIP/101")
        cel.answer(leg)
        cel.hangup(leg, source=cel.name(leg))
        cel.hangup(trunk)
        cel.end()
        live = [e for r in cel.records for e in folder.feed(r)]
        assert kinds(live) == [("ringing", "101"), ("answered", "101"), ("hangup", "101")]
        calls.append((cel, live))
    assert len(folder._emitted) == folder.max_emitted == 4
    (_, first), (second, _) = calls
    assert [e.event_id in folder._emitted for e in first] == [False, False, True]
    assert folder.replay(second.linkedid, second.records) == []


def test_event_ids_told_are_kept_in_sets_only_added_to_or_only_taken_from() -> None:
    """The ids are in sets of ``generation`` ids: the youngest is added to, the
    closed ones only lose their oldest ids and the oldest goes once empty, so no
    set's table is rebuilt while the memory is full; the newest ``cap`` are kept,
    the oldest going first, whatever the sizes."""
    for cap, generation in ((10, 4), (10, 10), (10, 25), (7, 3), (1, 1)):
        seen = SeenIds(cap, generation=generation)
        told = [f"L{n}/ringing/U{n}" for n in range(60)]
        for n, event_id in enumerate(told):
            closed = [(ids, len(ids)) for ids in seen._closed]
            assert seen.add(event_id)
            assert not seen.add(told[max(0, n - cap + 1)])  # the oldest kept is seen
            # A closed set is never added to; it only loses ids or goes.
            for ids, before in closed:
                assert len(ids) <= before
                assert ids.issubset({e.encode() for e in told[: n + 1]})
            assert len(seen._young) <= generation
            assert all(ids for ids in seen._closed)
            assert len(seen._closed) <= -(-cap // generation)
            kept = told[max(0, n + 1 - cap) : n + 1]
            assert len(seen) == len(kept)
            assert [e for e in told[: n + 1] if e in seen] == kept
            assert set().union(seen._young, *seen._closed) == {e.encode() for e in kept}
    with pytest.raises(ValueError, match="positive"):
        SeenIds(10, generation=0)


@pytest.mark.slow
def test_event_ids_told_churn_without_a_second_table_of_them_all() -> None:
    """A full memory of 200,000 ids (the call life's) forgets and learns ids
    without ever holding two tables of them all: one set of every id rebuilt its
    8 MiB table with the old one alive every ~115,000 ids, and malloc kept the
    freed 8 MiB (bench/ANALYSIS.md, thirty-ninth session)."""
    seen = SeenIds(200_000)
    told = 0

    def tell(count: int) -> None:
        nonlocal told
        for n in range(told, told + count):
            seen.add(f"pbx-1700000000.{n}/ringing/pbx-1700000000.{n + 1}")
        told += count

    tell(200_000)
    tracemalloc.start()
    try:
        tell(200_000)  # every id now one tracemalloc saw made (and will see freed)
        tracemalloc.reset_peak()
        low = tracemalloc.get_traced_memory()[0]
        for _ in range(150):  # more than one rebuild's worth of ids forgotten
            tell(1_000)
            low = min(low, tracemalloc.get_traced_memory()[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(seen) == 200_000
    assert peak - low < 4 * 2**20  # a second table of them all is 8 MiB


def test_bounded_calls() -> None:
    folder = Folder(max_calls=10)
    for n in range(50):
        cel = Cel(f"pbx-1700000000.{n * 100}")
        inbound(cel)
        for record in cel.records:
            folder.feed(record)
    assert len(folder) == 10


def test_a_live_record_is_read_in_either_spelling_of_its_ids() -> None:
    """cel_manager writes ``UniqueID``/``LinkedID``; other spellings (mxml's
    folded keys, ``Uniqueid``) reach the same record (issue 16: the fallback is
    looked up only when the first spelling is missing)."""

    base = (("Event", "CEL"), ("EventName", "CHAN_START"), ("Timestamp", "1796126304.5"))
    cel = CelRecord.from_fields(Event((*base, ("UniqueID", "u.1"), ("LinkedID", "l.1"))))
    other = CelRecord.from_fields(Event((*base, ("Uniqueid", "u.1"), ("linkedid", "l.1"))))
    assert (cel.uniqueid, cel.linkedid) == (other.uniqueid, other.linkedid) == ("u.1", "l.1")


def test_a_live_record_reads_every_field_in_any_spelling_as_a_stored_one_has_it() -> None:
    """``from_fields`` reads a message's keys as spelled in one dict (issue 16); a
    field spelled otherwise (mxml folds every key) is still read, and either way
    the record is the one ``build`` makes of the same values."""
    record = CelRecord.build(
        event="HANGUP",
        at=1796126304.5,
        uniqueid="u.2",
        linkedid="l.1",
        channel="PJSIP/101-00000002",
        context="from-internal",
        exten="102",
        cid_num="101",
        cid_name="Anna",
        cid_dnid="102",
        application="Dial",
        appdata="PJSIP/102",
        peer="PJSIP/102-00000003",
        extra='{"hangupcause":16,"hangupsource":"PJSIP/101-00000002","dialstatus":"ANSWER"}',
    )
    fields = as_ami(record)
    folded = tuple((key.lower(), value) for key, value in fields.items())
    for message in (Event(tuple(fields.items())), Event(folded), fields):
        live = CelRecord.from_fields(message)
        assert live == record
        assert (live.extra, live.extra_text) == (record.extra, record.extra_text)
        assert live.extra["hangupcause"] == 16
    with pytest.raises(ValueError, match="UniqueID"):
        CelRecord.from_fields(
            Event((("Event", "CEL"), ("EventName", "ANSWER"), ("Timestamp", "1.5"), folded[-3]))
        )


@pytest.mark.parametrize("named", [True, False])
def test_attended_transfer_through_ami_atxfer_is_to_the_extension_the_local_channel_dialled(
    named: bool,
) -> None:
    """AMI Atxfer (the HTTP API's attended mode) consults through a Local channel:
    the records as Asterisk 22 wrote them for 101 -> Local/102@callrouter-dial,
    102 answering, 101 hanging up to complete, the customer hanging up later
    (captured in the sandbox with real phones, issue 14). Asterisk names the
    Local channel as the target, or (a race in Asterisk) "N/A"."""
    cel = Cel()
    trunk = inbound(cel)
    first = cel.channel("PJSIP/101")
    cel.answer(first)
    cel.answer(trunk)
    cel.tick(5)
    local1 = cel.channel("Local/102@callrouter-dial", exten="102", context="callrouter-dial")
    local2 = cel.channel("Local/102@callrouter-dial", exten="102", context="callrouter-dial")
    second = cel.channel("PJSIP/102")
    cel.answer(second)
    cel.answer(local2)
    cel.answer(local1)
    cel.tick(0.7)
    cel.add(
        "ATTENDEDTRANSFER",
        first,
        {
            "channel2_name": cel.name(first),
            "channel2_uniqueid": first,
            "transferee_channel_name": cel.name(trunk),
            "transferee_channel_uniqueid": trunk,
            "transfer_target_channel_name": f"{cel.name(local1)};1" if named else "N/A",
            "transfer_target_channel_uniqueid": local1 if named else "N/A",
        },
    )
    cel.hangup(first, source=cel.name(first))
    cel.tick(0.45)  # the Local pair optimises itself away: 102 joins the customer
    cel.hangup(local1, source=cel.name(first))
    cel.hangup(local2, dialstatus="ANSWER")
    cel.tick(20)
    ended = cel.now + 0.01
    cel.hangup(trunk, source=cel.name(trunk), dialstatus="ANSWER")
    cel.hangup(second, source=cel.name(trunk))
    cel.end()
    events = fold(cel)
    assert kinds(events) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("ringing", "102"),
        ("answered", "102"),
        ("transferred", "101"),
        ("hangup", "102"),
    ]
    assert events[4].transfer == Transfer("attended", "101", "102")
    hangup = events[-1]
    # The Local channel's end is plumbing, not the call's: the customer hung up.
    assert hangup.hangup_by == "external"
    assert hangup.ended_at == ended
    assert hangup.talk_seconds is not None
    assert hangup.talk_seconds > 25


def test_a_transfer_from_a_manager_reached_through_a_local_channel_is_from_the_manager() -> None:
    """A dialplan that reaches 101 through a Local channel kept in the call
    (``Dial(Local/101@sandbox-phones/n,30,t)``, as FreePBX's from-internal does):
    the HTTP API's Atxfer goes from the pair's ``;1`` half, bridged with the
    customer, and the transfer was told as from no extension (the sandbox with
    real phones, tests/integration/test_call_life.py)."""
    cel = Cel()
    trunk = inbound(cel)
    local1 = cel.channel("Local/101@sandbox-phones", exten="101", context="sandbox-via-local")
    local2 = cel.channel("Local/101@sandbox-phones", exten="101", context="sandbox-phones")
    phone = cel.channel("PJSIP/101")
    cel.answer(phone)
    cel.answer(local2)
    cel.answer(local1)
    cel.answer(trunk)
    cel.tick(5)
    consult = cel.channel("Local/102@callrouter-dial", exten="102", context="callrouter-dial")
    second = cel.channel("PJSIP/102")
    cel.answer(second)
    cel.answer(consult)
    cel.tick(0.7)
    cel.add(
        "ATTENDEDTRANSFER",
        local1,
        {
            "channel2_name": cel.name(local1),
            "channel2_uniqueid": local1,
            "transferee_channel_name": cel.name(trunk),
            "transferee_channel_uniqueid": trunk,
            "transfer_target_channel_name": f"{cel.name(consult)};1",
            "transfer_target_channel_uniqueid": consult,
        },
    )
    cel.hangup(phone, source=cel.name(phone))
    cel.hangup(local2, dialstatus="ANSWER")
    cel.hangup(local1, source=cel.name(phone))
    cel.tick(10)
    cel.hangup(trunk, source=cel.name(trunk), dialstatus="ANSWER")
    cel.hangup(second, source=cel.name(trunk))
    cel.end()
    [moved] = [e for e in fold(cel) if e.kind == "transferred"]
    assert moved.transfer == Transfer("attended", "101", "102")
    assert moved.extension == "101"


def _chan_start(timestamp: str | None, event_time: str | None) -> CelRecord:
    fields = [("Event", "CEL"), ("EventName", "CHAN_START"), ("UniqueID", "u.1")]
    fields.append(("LinkedID", "u.1"))
    if timestamp is not None:
        fields.append(("Timestamp", timestamp))
    if event_time is not None:
        fields.append(("EventTime", event_time))
    return CelRecord.from_fields(Event(tuple(fields)))


def test_a_live_record_late_past_its_second_is_timed_within_that_second() -> None:
    """The AMI Timestamp is made when cel_manager sends the record; with
    Asterisk's CEL backends behind (a slow disk under the SQLite file) it came
    0.73 s after the record and past its second, in a loaded run of the suite.
    EventTime names the second: the time is kept within it, so live and stored
    times of one record stay under a second apart (TIME_SLACK)."""
    # 2026-12-02 17:39:37 UTC is 1796233177.
    late = _chan_start("1796233178.392914", "2026-12-02 17:39:37")
    assert late.at == pytest.approx(1796233177.999999)
    # Late within its own second: the Timestamp is the best there is.
    assert _chan_start("1796233177.70", "2026-12-02 17:39:37").at == pytest.approx(1796233177.70)
    # Asterisk on Moscow time (UTC+3) writes its local clock.
    moscow = _chan_start("1796233178.392914", "2026-12-02 20:39:37")
    assert moscow.at == pytest.approx(1796233177.999999)
    # Kathmandu is UTC+5:45.
    kathmandu = _chan_start("1796233178.25", "2026-12-02 23:24:37")
    assert kathmandu.at == pytest.approx(1796233177.999999)
    # An EventTime in Unix seconds; one with its fraction is exact already.
    assert _chan_start("1796233178.4", "1796233177").at == pytest.approx(1796233177.999999)
    assert _chan_start("1796233178.4", "1796233177.25").at == pytest.approx(1796233177.25)
    # Either alone, or one unreadable: the other.
    assert _chan_start("1796233178.4", None).at == pytest.approx(1796233178.4)
    assert _chan_start(None, "2026-12-02 17:39:37").at == pytest.approx(1796233177.0)
    assert _chan_start("1796233178.4", "yesterday").at == pytest.approx(1796233178.4)
    # A Timestamp before the named second (a clock stepped back): left as it is.
    assert _chan_start("1796233170.5", "2026-12-02 17:39:37").at == pytest.approx(1796233170.5)
    with pytest.raises(ValueError, match="needs a Timestamp or an EventTime"):
        _chan_start("x", "y")


def answered_call(linkedid: str, start: float, dialstatus: str = "ANSWER") -> tuple[Cel, int]:
    """An inbound call 101 answers, talks and ends; and where its answer ends."""
    cel = Cel(linkedid, start=start)
    trunk = inbound(cel)
    phone = cel.channel("PJSIP/101")
    cel.tick(3)
    cel.answer(phone)
    cel.answer(trunk)
    answered = len(cel.records)
    cel.tick(30)
    cel.hangup(phone, source=cel.name(phone))
    cel.hangup(trunk, source=cel.name(trunk), dialstatus=dialstatus)
    cel.end()
    return cel, answered


def test_a_call_up_before_history_began_is_not_told_from_its_middle() -> None:
    """A router started with no history to rebuild from (no replay mark, or no
    store) saw only the end of a call already up: folded from there, 101's
    half-minute talk ended with no answer and no talk time (and a Queue call,
    whose end carries no dial status, as missed). It is not told at all; one
    that begins later is."""
    old, answered = answered_call("pbx-1700000000.1", 1_700_000_000.0)
    middle = old.records[answered:]
    guessed = Folder()
    [hangup] = [e for rec in middle for e in guessed.feed(rec)]  # the guess
    assert (hangup.kind, hangup.answered_at, hangup.talk_seconds) == ("hangup", None, None)
    queued, answered = answered_call("pbx-1700000000.9", 1_700_000_000.0, dialstatus="")
    guessed = Folder()
    assert "missed" in [e.kind for rec in queued.records[answered:] for e in guessed.feed(rec)]

    folder = Folder()
    folder.history_from = 1_700_000_020.5
    assert [e for rec in middle for e in folder.feed(rec)] == []
    assert [e for rec in queued.records[answered:] for e in folder.feed(rec)] == []
    assert len(folder) == 0
    new, _ = answered_call("pbx-1700000021.7", 1_700_000_021.0)
    assert kinds([e for rec in new.records for e in folder.feed(rec)]) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("hangup", "101"),
    ]


def test_a_call_seen_from_its_middle_that_began_after_history_is_told() -> None:
    """What makes a call one from before is its Linkedid's own time: a call
    whose CHAN_START never came (left out of cel.conf's ``events``) but that
    began after history did is still told, and so is one whose Linkedid has
    no time in it (an Originate's own ChannelId)."""
    for linkedid in ("pbx-1700000030.4", "click-to-call-42"):
        cel, _ = answered_call(linkedid, 1_700_000_030.0)
        folder = Folder()
        folder.history_from = 1_700_000_020.5
        told = [e for rec in cel.records[1:] for e in folder.feed(rec)]
        assert "hangup" in [e.kind for e in told], linkedid


def test_a_call_passed_over_live_is_told_in_full_by_a_replay() -> None:
    """A later gap's replay reads the whole call from the store: then it is told,
    every fact of it, as Asterisk recorded them."""
    cel, answered = answered_call("pbx-1700000000.1", 1_700_000_000.0)
    folder = Folder()
    folder.history_from = 1_700_000_020.5
    for record in cel.records[answered:]:
        folder.feed(record)
    told = folder.replay(cel.linkedid, cel.records)
    assert kinds(told) == [("ringing", "101"), ("answered", "101"), ("hangup", "101")]
    assert all(e.replayed for e in told)


def _click_to_call(*, answers: bool, customer_answers: bool = True) -> Cel:
    """A click-to-call as Asterisk 22 records it (captured on the sandbox): the
    Originate's phone channel is the call's first one, starts at ``s`` and
    carries ``AppDial2`` when it answers or ends; then the customer is dialled
    (the trunk's leg starts at ``s`` too: only its answer names the number)."""
    cel = Cel("c2c-0123456789abcdef0123")
    phone = cel.channel("PJSIP/101", first=True, cid_num="101", exten="s", context="phones")
    cel.tick(2)
    if not answers:
        cel.add(
            "HANGUP",
            phone,
            {"hangupcause": 19, "hangupsource": "", "dialstatus": ""},
            application="AppDial2",
            appdata="(Outgoing Line)",
        )
        cel.add("CHAN_END", phone)
        cel.end()
        return cel
    cel.add("ANSWER", phone, None, application="AppDial2", appdata="(Outgoing Line)")
    trunk = cel.channel("PJSIP/pstn", context="from-pstn", exten="s")
    cel.tick(4)
    if not customer_answers:
        cel.hangup(trunk, cause=19)
        cel.add(
            "HANGUP",
            phone,
            {"hangupcause": 16, "hangupsource": cel.name(phone), "dialstatus": "NOANSWER"},
            application="AppDial2",
            exten="89161234567",
        )
        cel.add("CHAN_END", phone)
        cel.end()
        return cel
    cel.add("ANSWER", trunk, None, cid_num="89161234567", exten="89161234567")
    cel.tick(30)
    cel.hangup(trunk, source=cel.name(trunk))
    cel.hangup(phone, source=cel.name(trunk), dialstatus="ANSWER")
    cel.end()
    return cel


def test_a_click_to_call_rings_the_managers_phone_before_it_is_answered() -> None:
    """``POST /api/v1/calls {"from": "101"}`` rings 101 first: the history said
    ``answered`` 101 with no ``ringing`` before it, though every other answered
    extension rang first (issue 16). Live and replayed alike."""
    cel = _click_to_call(answers=True)
    events = fold(cel)
    assert kinds(events) == [("ringing", "101"), ("answered", "101"), ("hangup", "101")]
    assert {e.direction for e in events} == {"out"}
    assert events[0].at == cel.records[0].at
    # Told with the customer's number, as the call's other events are.
    assert {e.external for e in events} == {"89161234567"}
    replayed = Folder().replay(cel.linkedid, cel.records)
    assert [e.event_id for e in replayed] == [e.event_id for e in events]

    # The manager picks up, the customer does not: the number is the one dialled.
    nobody = fold(_click_to_call(answers=True, customer_answers=False))
    assert kinds(nobody) == [("ringing", "101"), ("hangup", None)]
    assert {e.external for e in nobody} == {"89161234567"}
    assert nobody[-1].status == "NOANSWER"

    unanswered = fold(_click_to_call(answers=False))
    assert kinds(unanswered) == [("ringing", "101"), ("hangup", None)]
    assert unanswered[-1].status == "NOANSWER"


def test_a_phone_that_dials_out_itself_does_not_ring() -> None:
    """Only Asterisk's Originate rings the first phone: a manager dialling from
    their own phone gets no ``ringing``, even when the phone is not answered by a
    Dial application (issue 16)."""
    out = Cel("pbx-1700000100.7")
    phone = out.channel("PJSIP/101", first=True, cid_num="101", exten="89161234567")
    trunk = out.channel("PJSIP/pstn")
    out.add("ANSWER", phone, None, application="Dial", appdata="PJSIP/pstn")
    out.answer(trunk)
    out.hangup(trunk, source=out.name(trunk))
    out.hangup(phone, source=out.name(trunk))
    out.end()
    assert kinds(fold(out)) == [("answered", "101"), ("hangup", "101")]


def test_a_call_originated_into_a_local_channel_has_the_number_its_later_records_give() -> None:
    """Issue 16: ``callrouter ami Originate Channel=Local/74950000001@callrouter-inbound
    CallerID=79161234567``: Asterisk 22 writes both halves' CHAN_START with no
    number (the Originate sets it after), so a call callrouter did not route
    (replayed after it was down) reached 1C ``from: anonymous``. The number is
    the first the call's Local channel gives later, the ``;2`` half's (the one
    that ran the dialplan, a rewritten number) over the ``;1`` half's. The
    records as the sandbox's Asterisk 22 wrote them."""
    local = "Local/74950000001@callrouter-inbound-00000000"
    one, two = "pbx-1796523054.0", "pbx-1796523054.1"
    at = iter(range(1_796_523_054, 1_796_523_100))

    def record(
        event: str, uniqueid: str, cid: str, context: str = "callrouter-inbound"
    ) -> CelRecord:
        return CelRecord.build(
            event=event,
            at=float(next(at)),
            uniqueid=uniqueid,
            linkedid=one,
            channel=f"{local};{1 if uniqueid == one else 2}",
            context=context,
            exten="74950000001",
            cid_num=cid,
        )

    records = [
        record("CHAN_START", one, ""),
        record("CHAN_START", two, ""),
        record("ANSWER", one, "79161234567"),
        record("ANSWER", two, "89161234567", "test-end"),
        record("HANGUP", one, "79161234567"),
        record("CHAN_END", one, "79161234567"),
        record("HANGUP", two, "89161234567", "test-end"),
        record("CHAN_END", two, "89161234567", "test-end"),
        record("LINKEDID_END", two, "89161234567", "test-end"),
    ]
    live = Folder()
    fed = [event for r in records for event in live.feed(r)]
    for events in (Folder().replay(one, records), fed):
        assert [e.kind for e in events] == ["hangup", "missed"]
        assert {(e.direction, e.external, e.did) for e in events} == {
            ("in", "89161234567", "74950000001")
        }


@pytest.mark.parametrize("code", ["*8", "*97", "#21"])
def test_a_feature_code_a_phone_dials_is_an_internal_call(code: str) -> None:
    """101 presses *8 with nothing ringing (Pickup() finds no call), or dials
    voicemail: a call of the PBX, not an outbound call to the number 8 (issue 16)."""
    cel = Cel()
    phone = cel.channel("PJSIP/101", first=True, cid_num="101", exten=code)
    cel.tick(1)
    cel.hangup(phone, source="dialplan/builtin")
    cel.end()
    events = fold(cel)
    assert kinds(events) == [("hangup", None)]
    assert (events[0].direction, events[0].external, events[0].did) == ("internal", "101", code)
    assert events[0].hangup_by is None


def test_an_outbound_call_the_dialplan_answers_itself_connected_nobody() -> None:
    """101 dials out; the dialplan answers to play "all lines are busy" and dials no
    trunk: not an answered call (a conference room's internal call is, issue 16)."""
    cel = Cel()
    phone = cel.channel("PJSIP/101", first=True, cid_num="101", exten="89161234567")
    cel.answer(phone)
    cel.tick(3)
    cel.hangup(phone, source="dialplan/builtin")
    cel.end()
    [end] = fold(cel)
    assert (end.direction, end.status, end.talk_seconds) == ("out", "NOANSWER", None)


@pytest.mark.parametrize(
    "signs", ["after their start", "before their start", "then a replay of the call so far"]
)
def test_a_ringing_told_live_before_a_late_number_names_it_as_the_replay_does(
    signs: str,
) -> None:
    """hrev35b: a call originated into a Local channel learns its number late
    (``caller_late``); a phone's live ringing sign told its ringing at once,
    ``external: null``, while the replay tells it at the phone's end, once the
    ``;2`` half named the number: one event id, two facts. Such a ringing now
    waits for the number (or for the phone's own record, which is when the
    replay tells it), so live and replay tell the same fact."""
    local = "Local/74950000001@callrouter-inbound-00000000"
    one, two = "pbx-1796523054.0", "pbx-1796523054.1"
    p101, p102 = "pbx-1796523054.2", "pbx-1796523054.3"
    at = iter(range(1_796_523_054, 1_796_523_100))
    names = {one: f"{local};1", two: f"{local};2", p101: "PJSIP/101-00000001"}
    names[p102] = "PJSIP/102-00000002"

    def record(event: str, uniqueid: str, cid: str = "", **extra: object) -> CelRecord:
        return CelRecord.build(
            event=event,
            at=float(next(at)),
            uniqueid=uniqueid,
            linkedid=one,
            channel=names[uniqueid],
            context="callrouter-inbound",
            exten="74950000001",
            cid_num=cid,
            extra=json.dumps(extra) if extra else "",
        )

    caller = "89161234567"
    records = [
        record("CHAN_START", one),
        record("CHAN_START", two),
        record("CHAN_START", p101, "74950000001"),
        record("CHAN_START", p102, "74950000001"),
        record("ANSWER", p102, "74950000001"),  # 102 takes it
        record("ANSWER", two, caller),  # the number, at last
        record("ANSWER", one, "79161234567"),
        record("HANGUP", p101, "74950000001", hangupcause=26),  # answered elsewhere
        record("HANGUP", p102, "74950000001", hangupcause=16, hangupsource=names[p102]),
        record("HANGUP", one, "79161234567", hangupcause=16),
        record("HANGUP", two, caller, hangupcause=16, dialstatus="ANSWER"),
        record("LINKEDID_END", one, "79161234567"),
    ]
    live = Folder()
    told: list[CallEvent] = []
    for index, each in enumerate(records):
        if signs == "before their start" and index == 2:
            for leg in (p101, p102):
                told += live.hint(one, leg)
        told += live.feed(each)
        if signs != "before their start" and index == 3:
            for leg in (p101, p102):
                told += live.hint(one, leg)
            if signs == "then a replay of the call so far":  # a gap: the store read
                told += live.replay(one, records[:4])
    replayed = {e.event_id: e for e in Folder().replay(one, records)}
    assert sorted(e.event_id for e in told) == sorted(replayed)
    for event in told:
        assert event.same_fact(replayed[event.event_id]), (event, replayed[event.event_id])
    ringing = {e.extension: e for e in told if e.kind == "ringing"}
    assert ringing["101"].external == caller
    # Never after the phone's own answered: the order 1C keeps.
    kinds_told = kinds(told)
    assert kinds_told.index(("ringing", "102")) < kinds_told.index(("answered", "102"))


def test_a_replay_folds_linkedid_end_last_though_the_store_stamps_it_earlier() -> None:
    """Seen in CI on the sandbox: Asterisk's store held a ring group call's
    ``LINKEDID_END`` 0.3 ms before its third phone's ``HANGUP`` (the stamp is
    taken on whichever thread drops the last reference). Folded in time order
    the call had ended, so a replay never told that phone's ringing, which the
    live stream had told from its ringing sign: live and replay disagreed."""
    cel = Cel()
    trunk = inbound(cel)
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102", "103")]
    cel.tick(0.35)
    for leg in legs[:2]:
        cel.hangup(leg, cause=127)
    cel.end()  # stamped before the rest, as the store had it
    cel.hangup(legs[2], cause=127)
    cel.hangup(trunk, cause=127, source=cel.name(trunk), dialstatus="CANCEL")
    assert [r.event for r in cel.records][-5:] == [
        "LINKEDID_END",
        "HANGUP",
        "CHAN_END",
        "HANGUP",
        "CHAN_END",
    ]
    events = Folder().replay(cel.linkedid, list(reversed(cel.records)))
    assert sorted(kinds(events)[:3]) == [("ringing", "101"), ("ringing", "102"), ("ringing", "103")]
    assert kinds(events)[3:] == [("hangup", None), ("missed", None)]
    assert events[-1].status == "CANCEL"


def ring_group_ending(cel: Cel, *, answered: bool = False) -> None:
    """A ring group call to 101, 102, 103 ending, records in Asterisk's usual order
    (``LINKEDID_END`` last): nobody answers and the caller hangs up, or 102
    answers and hangs up after a talk."""
    trunk = inbound(cel)
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102", "103")]
    cel.tick(0.35)
    if answered:
        cel.answer(legs[1])
        for leg in (legs[0], legs[2]):
            cel.hangup(leg, cause=26)  # answered elsewhere: they rang
        cel.answer(trunk)
        cel.tick(12)
        cel.hangup(legs[1], source=cel.name(legs[1]))
        cel.hangup(trunk, source=cel.name(legs[1]), dialstatus="ANSWER")
    else:
        for leg in legs:
            cel.hangup(leg, cause=127)
        cel.hangup(trunk, cause=127, source=cel.name(trunk), dialstatus="CANCEL")
    cel.end()


def end_moved(records: list[CelRecord], before: int) -> list[CelRecord]:
    """``records`` (``LINKEDID_END`` last) as Asterisk may send and store them: the
    end at index ``before``, stamped 0.3 ms ahead of the record it precedes."""
    *rest, end = records
    assert end.event == "LINKEDID_END"
    moved = replace(end, at=rest[before].at - 0.0003)
    return [*rest[:before], moved, *rest[before:]]


def live_fold(records: list[CelRecord], folder: Folder | None = None) -> list[CallEvent]:
    folder = folder if folder is not None else Folder()
    return [e for record in records for e in folder.feed(record)]


def test_a_live_linkedid_end_ahead_of_a_ringing_legs_hangup_waits_for_it() -> None:
    """The store's order (the replay's test above), live: Asterisk sent the ring
    group's ``LINKEDID_END`` before its third phone's ``HANGUP`` and the caller's.
    The fold ended the call there: 103, with no ringing sign, was never told to
    have rung, and the missed call was NOANSWER, not the caller's CANCEL."""
    cel = Cel()
    ring_group_ending(cel)
    stored = end_moved(cel.records, len(cel.records) - 5)  # before 103's HANGUP
    assert [r.event for r in stored][-5:] == [
        "LINKEDID_END",
        "HANGUP",
        "CHAN_END",
        "HANGUP",
        "CHAN_END",
    ]
    folder = Folder()
    events = live_fold(stored, folder)
    assert kinds(events) == [
        ("ringing", "101"),
        ("ringing", "102"),
        ("ringing", "103"),
        ("hangup", None),
        ("missed", None),
    ]
    assert events[-1].status == "CANCEL"
    assert events[-1].hangup_by == "external"
    assert len(folder) == 0
    assert folder.ending is None


@pytest.mark.parametrize("answered", [False, True])
def test_live_and_replay_tell_the_same_events_wherever_the_end_was_stamped(
    answered: bool,
) -> None:
    """``LINKEDID_END`` moved ahead of each of the call's last leg records in turn
    (all of them at worst): the live fold, fed them in that order, and a replay of
    the same records tell 1C the same events, in the same order, as when it came last."""
    cel = Cel()
    ring_group_ending(cel, answered=answered)
    expected = live_fold(cel.records)
    assert expected[-1].kind == ("hangup" if answered else "missed")
    tail = max(
        i
        for i, r in enumerate(cel.records)
        if r.event not in ("HANGUP", "CHAN_END", "LINKEDID_END")
    )
    for before in range(tail + 1, len(cel.records) - 1):
        records = end_moved(cel.records, before)
        live = live_fold(records)
        replayed = Folder().replay(cel.linkedid, records)
        assert [strip_replayed(e) for e in replayed] == live, before
        assert kinds(live) == kinds(expected), before
        for got, want in zip(live, expected, strict=True):
            assert got.same_fact(want), (before, got, want)


def test_a_held_end_is_told_when_the_leg_it_waits_for_does_not_end_within_the_grace() -> None:
    """Bounded: a leg whose end never comes (its channel left the Linkedid) holds
    the call's end :data:`END_GRACE` at most; the next live record past it, or
    :meth:`Folder.expire` (the engine's timer), tells it, without that leg."""
    cel = Cel()
    trunk = inbound(cel)
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102")]
    cel.tick(3)
    cel.hangup(legs[0], cause=127)
    cel.hangup(trunk, cause=127, source=cel.name(trunk), dialstatus="CANCEL")
    cel.end()  # 102's HANGUP never comes
    now = [100.0]
    folder = Folder(clock=lambda: now[0])
    events = live_fold(cel.records, folder)
    assert kinds(events) == [("ringing", "101")]
    assert folder.ending == 100.0 + END_GRACE
    assert cel.linkedid in folder  # still followed: the replay mark stays before it
    now[0] += END_GRACE / 2
    assert folder.expire() == []
    other = Cel("pbx-1700000100.7")
    inbound(other)
    assert live_fold(other.records, folder) == []  # within the grace: still held
    now[0] += END_GRACE / 2
    other.channel("PJSIP/104")
    told = live_fold(other.records[-1:], folder)  # any call's record past the grace
    assert kinds(told) == [("hangup", None), ("missed", None)]
    assert told[-1].status == "CANCEL"
    assert cel.linkedid not in folder
    assert folder.ending is None
    # Its leg's late end, past the grace, tells nothing and opens no call.
    cel.hangup(legs[1], cause=127)
    assert live_fold(cel.records[-2:], folder) == []
    assert cel.linkedid not in folder
    # The timer's way, no record coming: expire() at the grace's end.
    again = Cel("pbx-1700000200.9")
    ring_group_ending(again)
    held = end_moved(again.records, len(again.records) - 5)[:-4]
    assert kinds(live_fold(held, folder)) == [("ringing", "101"), ("ringing", "102")]
    assert folder.expire(now[0] + END_GRACE - 0.001) == []
    assert kinds(folder.expire(now[0] + END_GRACE)) == [("hangup", None), ("missed", None)]
    assert folder.ending is None
    assert len(folder) == 1


def test_a_live_end_waits_only_for_legs_whose_end_tells_something() -> None:
    """A busy phone (it never rang) or a phone already told to have rung (its live
    sign) decides nothing more by its end: the call ends at its LINKEDID_END."""
    cel = Cel()
    trunk = inbound(cel)
    busy = cel.channel("PJSIP/101")
    cel.hangup(busy, cause=17)
    signed = cel.channel("PJSIP/102")
    cel.tick(3)
    cel.hangup(trunk, cause=16, source=cel.name(trunk), dialstatus="CANCEL")
    cel.end()
    folder = Folder()
    folder.feed(cel.records[0])
    assert kinds(folder.hint(cel.linkedid, signed)) == []
    events = live_fold(cel.records[1:], folder)
    assert kinds(events) == [("ringing", "102"), ("hangup", None), ("missed", None)]
    assert folder.ending is None
    assert len(folder) == 0


def test_a_held_end_goes_on_waiting_through_a_replay_that_lacks_it() -> None:
    """A gap's replay reads the store while the live end waits: the store has
    neither the end nor the late leg yet. The rebuilt call keeps waiting, and the
    leg's HANGUP, live, tells its ringing before the call's end."""
    cel = Cel()
    ring_group_ending(cel)
    records = end_moved(cel.records, len(cel.records) - 5)
    end_at = next(i for i, r in enumerate(records) if r.event == "LINKEDID_END")
    folder = Folder()
    first = live_fold(records[: end_at + 1], folder)
    assert kinds(first) == [("ringing", "101"), ("ringing", "102")]
    assert folder.ending is not None
    assert folder.replay(cel.linkedid, records[:end_at]) == []
    assert folder.ending is not None
    rest = live_fold(records[end_at + 1 :], folder)
    assert kinds(rest) == [("ringing", "103"), ("hangup", None), ("missed", None)]
    assert rest[-1].status == "CANCEL"
    assert folder.ending is None
    assert len(folder) == 0
    # A replay that reads the whole call ends it there and then.
    again = Folder()
    live_fold(records[: end_at + 1], again)
    told = again.replay(cel.linkedid, records)
    assert kinds(told) == [("ringing", "103"), ("hangup", None), ("missed", None)]
    assert again.ending is None
    assert len(again) == 0
    assert live_fold(records[end_at + 1 :], again) == []


def test_ends_held_are_bounded_by_the_calls_followed() -> None:
    folder = Folder(max_calls=3)
    for n in range(10):
        cel = Cel(f"pbx-17000001{n:02d}.1")
        ring_group_ending(cel)
        live_fold(end_moved(cel.records, len(cel.records) - 5)[:-4], folder)
    assert len(folder) == 3
    assert len(folder._ending) == 3


def _inbound_unanswered(cel: Cel, shape: str) -> None:
    """An inbound call nobody answers, ending: one phone rings and the caller gives
    up; the caller gives up before any phone is dialled (in the wait for a
    decision, or after a greeting that answered the line: an IVR); the only phone
    is busy and the dialplan hangs up."""
    trunk = inbound(cel)
    if shape == "greeting":
        cel.answer(trunk)
    if shape in ("one_phone", "busy"):
        phone = cel.channel("PJSIP/101")
        cel.tick(0.2 if shape == "busy" else 6)
        cel.hangup(phone, cause=17 if shape == "busy" else 127)
    cel.tick(3)
    if shape == "busy":
        cel.hangup(trunk, cause=17, source="dialplan/builtin", dialstatus="BUSY")
    else:
        cel.hangup(trunk, cause=16, source=cel.name(trunk), dialstatus="CANCEL")
    cel.end()


def _outbound_failed(cel: Cel) -> None:
    """A phone dials out and the trunk refuses at once: nothing rang, nobody answered."""
    phone = cel.channel("PJSIP/101", first=True, cid_num="101", exten="89161234567")
    trunk = cel.channel("PJSIP/pstn")
    cel.hangup(trunk, cause=34)
    cel.hangup(phone, cause=34, source="", dialstatus="CHANUNAVAIL")
    cel.end()


def _served(cel: Cel, dialled: str, application: str) -> None:
    """A phone's call the dialplan answers itself and that rings nobody: a conference
    room (``Answer()`` then ``ConfBridge``), an announcement before no trunk."""
    phone = cel.channel("PJSIP/101", first=True, cid_num="101", exten=dialled)
    cel.add("ANSWER", phone, None, application=application, exten=dialled)
    cel.tick(3)
    cel.hangup(phone, source=cel.name(phone) if application == "Answer" else "dialplan/builtin")
    cel.end()


def _ending(shape: str) -> Cel:
    if shape.startswith("c2c_"):
        return _click_to_call(
            answers=shape != "c2c_unanswered", customer_answers=shape == "c2c_answered"
        )
    cel = Cel()
    if shape == "outbound_failed":
        _outbound_failed(cel)
    elif shape == "internal_room":
        _served(cel, "900", "Answer")
    elif shape == "outbound_announcement":
        _served(cel, "89161234567", "Playback")
    else:
        _inbound_unanswered(cel, shape.removeprefix("inbound_"))
    return cel


def test_an_unanswered_click_to_call_whose_end_comes_first_is_told_live() -> None:
    """Nobody picked up the manager's phone that a click-to-call rang, and Asterisk
    sent its ``LINKEDID_END`` ahead of that phone's ``HANGUP``: the live fold ended
    the call there, a Linkedid that had told nothing and whose first channel lived
    on (as a phone's that dialled ``*8`` does), so 1C heard nothing of it, while a
    replay of the same records told its ringing and its ``NOANSWER`` hangup."""
    cel = _click_to_call(answers=False)
    records = end_moved(cel.records, 1)
    assert [r.event for r in records] == ["CHAN_START", "LINKEDID_END", "HANGUP", "CHAN_END"]
    folder = Folder()
    events = live_fold(records, folder)
    assert kinds(events) == [("ringing", "101"), ("hangup", None)]
    assert events[-1].status == "NOANSWER"
    assert {e.direction for e in events} == {"out"}
    assert len(folder) == 0
    assert folder.ending is None
    replayed = Folder().replay(cel.linkedid, records)
    assert [strip_replayed(e) for e in replayed] == events


RINGING_101 = ("ringing", "101")
HANGUP = ("hangup", None)
MISSED = ("missed", None)


@pytest.mark.parametrize(
    ("shape", "told", "status"),
    [
        ("c2c_unanswered", [RINGING_101, HANGUP], "NOANSWER"),
        ("c2c_customer_unanswered", [RINGING_101, HANGUP], "NOANSWER"),
        ("c2c_answered", [RINGING_101, ("answered", "101"), ("hangup", "101")], "ANSWER"),
        ("inbound_one_phone", [RINGING_101, HANGUP, MISSED], "CANCEL"),
        ("inbound_wait", [HANGUP, MISSED], "CANCEL"),
        ("inbound_greeting", [HANGUP, MISSED], "CANCEL"),
        ("inbound_busy", [HANGUP, MISSED], "BUSY"),
        ("outbound_failed", [HANGUP], "FAILED"),
        ("internal_room", [("hangup", "101")], "ANSWER"),
        ("outbound_announcement", [HANGUP], "NOANSWER"),
    ],
)
def test_live_and_replay_agree_wherever_the_end_of_a_call_its_first_channel_ends_was_stamped(
    shape: str, told: list[tuple[str, str | None]], status: str
) -> None:
    """As the ring group's test above, for the calls whose first channel's own end
    decides what is told: a click-to-call nobody answered (the manager, or the
    customer), an inbound call nobody answered whichever way it ended, an outbound
    call the trunk refused, a phone's call the dialplan answered itself (a conference
    room, an announcement). ``LINKEDID_END`` ahead of each of the last leg records in
    turn: live and replayed, the events are those told when it came last."""
    cel = _ending(shape)
    expected = live_fold(cel.records)
    assert kinds(expected) == told
    assert expected[-1].status == status
    tail = max(
        i
        for i, r in enumerate(cel.records)
        if r.event not in ("HANGUP", "CHAN_END", "LINKEDID_END")
    )
    for before in range(tail + 1, len(cel.records) - 1):
        records = end_moved(cel.records, before)
        folder = Folder()
        live = live_fold(records, folder)
        replayed = Folder().replay(cel.linkedid, records)
        assert [strip_replayed(e) for e in replayed] == live, before
        assert kinds(live) == kinds(expected), before
        for got, want in zip(live, expected, strict=True):
            assert got.same_fact(want), (before, got, want)
        assert len(folder) == 0, before
        assert folder.ending is None, before


def _local_pair(cel: Cel, exten: str, context: str) -> tuple[str, str]:
    """``Dial(Local/EXTEN@CONTEXT)``: the two halves of the Local channel."""
    halves = []
    for half in (";1", ";2"):
        uniqueid = f"{cel.linkedid.rsplit('.', 1)[0]}.{next(cel._ids)}"
        cel.names[uniqueid] = f"Local/{exten}@{context}-00000001{half}"
        cel.add("CHAN_START", uniqueid, None, context=context, exten=exten)
        halves.append(uniqueid)
    return halves[0], halves[1]


def _click_to_call_through_local(*, trunk: bool) -> Cel:
    """A click-to-call whose outbound context dials the customer through a Local
    channel (``Dial(Local/${EXTEN}@sandbox-customer)``), as the sandbox's
    ``[outbound]`` does: the records of Asterisk 22 for it (issue 16). With
    ``trunk`` the Local channel's dialplan dials a trunk in turn, as an outbound
    route with failover does."""
    cel = Cel("c2c-85dd37c4e7cc17df4778")
    phone = cel.channel("PJSIP/103", first=True, cid_num="103", exten="s", context="phones")
    cel.tick(1)
    cel.add("ANSWER", phone, None, application="AppDial2", appdata="(Outgoing Line)")
    one, two = _local_pair(cel, "79161234567", "sandbox-customer")
    if trunk:
        line = cel.channel("PJSIP/pstn", context="from-pstn", exten="s")
        cel.tick(3)
        cel.add("ANSWER", line, None, cid_num="79161234567", exten="79161234567")
        cel.add("ANSWER", two, None, cid_num="103", application="Dial")
    else:
        cel.add("ANSWER", two, None, cid_num="103", application="Answer")
    cel.add(
        "ANSWER",
        one,
        None,
        cid_num="79161234567",
        exten="79161234567",
        application="AppDial",
        appdata="(Outgoing Line)",
    )
    cel.tick(3)
    cel.hangup(one)
    cel.hangup(two)
    if trunk:
        cel.hangup(line)
    cel.add(
        "HANGUP",
        phone,
        {"hangupcause": 16, "hangupsource": "", "dialstatus": "ANSWER"},
        application="AppDial2",
        exten="79161234567",
    )
    cel.add("CHAN_END", phone)
    cel.end()
    return cel


@pytest.mark.parametrize("trunk", [False, True], ids=["local-answers", "local-to-a-trunk"])
def test_a_click_to_call_dialled_through_a_local_channel_is_answered_by_the_manager(
    trunk: bool,
) -> None:
    """Issue 16: the sandbox's ``[outbound]`` (the API's default outbound context)
    dials the customer as ``Local/<number>@sandbox-customer``, which answers in the
    dialplan with no outside channel behind it. 1C got ``ringing`` 103 and a
    ``hangup`` "from 79161234567 to 79161234567" with no extension and no
    ``answered``: the Local half answering for the customer was taken for plumbing.
    A Local route that goes on to a trunk answers once, at the trunk's answer."""
    cel = _click_to_call_through_local(trunk=trunk)
    events = fold(cel)
    assert kinds(events) == [("ringing", "103"), ("answered", "103"), ("hangup", "103")]
    assert {e.direction for e in events} == {"out"}
    assert {e.external for e in events} == {"79161234567"}
    assert events[-1].status == "ANSWER"
    replayed = Folder().replay(cel.linkedid, cel.records)
    assert [e.event_id for e in replayed] == [e.event_id for e in events]
