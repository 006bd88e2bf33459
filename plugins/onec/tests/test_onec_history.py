"""Call history into 1C: event bodies, the durable queue, delivery through outages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from onec_waiting import eventually

from callrouter_onec.client import OneCClient, OneCSettings
from callrouter_onec.double import OneCDouble
from callrouter_onec.errors import OneCUnavailable
from callrouter_onec.history import CallRecord, HistoryQueue, HistorySender, build_event
from callrouter_onec.missed import MissedFact
from callrouter_onec.models import EVENT_FIELDS, EventAck

MSK2 = timezone(timedelta(hours=2))  # the contract's example: 12:00 local is 10:00 UTC

CALL = CallRecord(
    call_id="1714557600.42",
    direction="in",
    from_number="79161234567",
    to_number="74951234567",
    extension="101",
    manager_id="0b3e5f70-...",
    client_id="5e1c2f9a-...",
    started_at=datetime(2024, 5, 1, 12, 0, 0),
    answered_at=datetime(2024, 5, 1, 12, 0, 7),
    ended_at=datetime(2024, 5, 1, 12, 3, 10),
    status="ANSWER",
)


def test_hangup_is_exactly_the_contract_example() -> None:
    assert build_event("hangup", CALL, tz=MSK2) == {
        "event": "hangup",
        "call_id": "1714557600.42",
        "direction": "in",
        "from": "79161234567",
        "to": "74951234567",
        "extension": "101",
        "manager_id": "0b3e5f70-...",
        "client_id": "5e1c2f9a-...",
        "status": "ANSWER",
        "started_at": "2024-05-01T12:00:00",
        "answered_at": "2024-05-01T12:00:07",
        "ended_at": "2024-05-01T12:03:10",
        "duration": 190,
        "billsec": 183,
        "owner": None,
        "talk_seconds": None,
        "transfer": None,
        "hangup_by": None,
        "replayed": False,
        "closed_by": None,
        "closed_at": None,
        "closed_direction": None,
        "ts": 1714557790,
        "recording_url": None,
    }


def test_events_before_hangup_have_no_status_or_durations() -> None:
    ringing = build_event("ringing", CALL, tz=MSK2)
    assert ringing["status"] is None
    assert ringing["ended_at"] is None
    assert ringing["duration"] is None
    assert ringing["billsec"] is None
    assert ringing["ts"] == 1714557600
    assert build_event("answered", CALL, tz=MSK2)["ts"] == 1714557607
    transferred = build_event("transferred", CALL, tz=MSK2, ts=1714557700.9)
    assert transferred["ts"] == 1714557700
    assert transferred["status"] is None


def test_missed_call() -> None:
    missed = CallRecord(
        "2.1",
        "in",
        "79161234567",
        "74951234567",
        started_at=datetime(2024, 5, 1, 12, 0, 0),
        ended_at=datetime(2024, 5, 1, 12, 0, 30),
    )
    event = build_event("missed", missed, tz=MSK2)
    assert event["status"] == "NOANSWER"
    assert event["duration"] == 30
    assert event["billsec"] == 0
    assert event["answered_at"] is None


def test_aware_times_are_written_in_1c_local_time() -> None:
    call = CallRecord(
        "3.1",
        "out",
        "101",
        "79161234567",
        started_at=datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC),
        ended_at=datetime(2024, 5, 1, 10, 1, 0, tzinfo=UTC),
        status="BUSY",
    )
    event = build_event("hangup", call, tz=MSK2)
    assert event["started_at"] == "2024-05-01T12:00:00"
    assert event["ts"] == 1714557660
    assert event["status"] == "BUSY"


def test_unknown_event_kind() -> None:
    with pytest.raises(ValueError, match="unknown event 'exploded'"):
        build_event("exploded", CALL)  # type: ignore[arg-type]


def test_queue_dedupes_and_survives_reopen(tmp_path: Path) -> None:
    event = build_event("ringing", CALL)
    with HistoryQueue(tmp_path) as queue:
        assert queue.path == tmp_path / "onec-history.sqlite3"
        assert queue.enqueue(event)
        assert not queue.enqueue(event)
        assert queue.enqueue(build_event("hangup", CALL))
    with HistoryQueue(tmp_path) as queue:  # a restart
        pending = queue.pending()
        assert [e.event for e in pending] == ["ringing", "hangup"]
        assert pending[0].payload == event
        queue.mark_sent(pending[0].id, "guid")
        assert not queue.enqueue(event)  # delivered events are still recognised
        assert queue.counts() == {"pending": 1, "sent": 1}


def test_queue_prunes_old_rows(tmp_path: Path) -> None:
    now = [1000.0]
    with HistoryQueue(tmp_path / "q.db", retention=60, clock=lambda: now[0]) as queue:
        queue.enqueue(build_event("ringing", CALL))
        queue.mark_sent(queue.pending()[0].id)
        now[0] += 61
        assert queue.prune() == 1
        assert queue.enqueue(build_event("ringing", CALL))


def test_queue_refuses_events_without_key(tmp_path: Path) -> None:
    with HistoryQueue(tmp_path) as queue, pytest.raises(ValueError, match="call_id"):
        queue.enqueue({"event": "ringing"})


def events_for(n: int) -> list[dict[str, object]]:
    events = []
    for i in range(n):
        call = CallRecord(
            f"17145576{i:02d}.{i}",
            "in",
            "79161234567",
            "74951234567",
            started_at=datetime(2024, 5, 1, 12, 0, i),
            answered_at=datetime(2024, 5, 1, 12, 0, i + 5),
            ended_at=datetime(2024, 5, 1, 12, 1, i),
            status="ANSWER",
        )
        events += [build_event(kind, call, tz=MSK2) for kind in ("ringing", "answered", "hangup")]
    return events


def sender_for(queue: HistoryQueue, client: OneCClient, **kwargs: float) -> HistorySender:
    options: dict[str, float] = {"base_delay": 0.02, "max_delay": 0.1, "idle_poll": 0.05}
    return HistorySender(queue, client.post_event, **{**options, **kwargs})  # type: ignore[arg-type]


def assert_exactly_once(double: OneCDouble, events: list[dict[str, object]]) -> None:
    received = Counter(
        (r.payload["call_id"], r.payload["event"]) for r in double.event_book.receipts
    )
    assert received == Counter((e["call_id"], e["event"]) for e in events)
    assert not [r for r in double.event_book.receipts if r.duplicate]


async def test_down_then_up_every_event_exactly_once_across_a_restart(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    events = events_for(20)
    double.stop()  # 1C refuses connections
    async with OneCClient(settings) as client:
        queue = HistoryQueue(tmp_path)
        sender = sender_for(queue, client)
        sender.start()
        for event in events[:30]:
            assert sender.submit(event)
        assert not await sender.drain(0.3)
        await sender.stop()  # callrouter goes down with events pending
        queue.close()

        queue = HistoryQueue(tmp_path)  # ... and comes back
        sender = sender_for(queue, client)
        for event in events[30:]:
            sender.submit(event)
        sender.submit(events[0])  # a repeat from the engine is ignored
        sender.start()
        await sender.drain(0.2)
        double.start()  # 1C is back
        assert await sender.drain(10)
        await sender.stop()
        queue.close()
    assert_exactly_once(double, events)
    assert_in_order_per_call(double, events)


def assert_in_order_per_call(double: OneCDouble, events: list[dict[str, object]]) -> None:
    """Each call's first copies arrived in the order the call's events were queued."""
    arrived: dict[object, list[object]] = {}
    for receipt in double.event_book.receipts:
        if not receipt.duplicate:
            arrived.setdefault(receipt.payload["call_id"], []).append(receipt.payload["event"])
    queued: dict[object, list[object]] = {}
    for event in events:
        queued.setdefault(event["call_id"], []).append(event["event"])
    assert arrived == queued


async def test_5xx_and_timeouts_are_retried(
    tmp_path: Path, double: OneCDouble, short_client: OneCClient
) -> None:
    events = events_for(2)
    double.faults.add("500", count=2)
    double.faults.add("latency=3", count=1)  # past the 0.5 s budget, even if that ends late
    with HistoryQueue(tmp_path) as queue:
        sender = sender_for(queue, short_client)
        for event in events:
            sender.submit(event)
        sender.start()
        assert await sender.drain(10)
        await sender.stop()
    assert_exactly_once(double, events)


#: The members an earlier callrouter's bodies lacked (issue 16): rows it queued
#: are still in onec-history.sqlite after an upgrade.
ADDED_SINCE = (
    "owner",
    "talk_seconds",
    "transfer",
    "hangup_by",
    "replayed",
    "closed_by",
    "closed_at",
    "closed_direction",
)


async def test_a_row_an_earlier_version_queued_goes_to_1c_with_every_field(
    tmp_path: Path, double: OneCDouble, client: OneCClient
) -> None:
    """The contract says every body carries every field (null when it does not
    apply); a queue an earlier callrouter filled lacks some, and went as stored."""
    old = build_event("hangup", CALL, tz=MSK2)
    for key in ADDED_SINCE:
        del old[key]
    with HistoryQueue(tmp_path) as queue:
        assert queue.enqueue(old)
    with HistoryQueue(tmp_path) as queue:  # the new version opens it
        sender = sender_for(queue, client)
        sender.start()
        assert await sender.drain(10)
        await sender.stop()
    [receipt] = double.event_book.receipts
    # Every field but event_id, which build_event leaves to (call_id, event).
    assert sorted(receipt.payload) == sorted(set(EVENT_FIELDS) - {"event_id"})
    assert receipt.payload == build_event("hangup", CALL, tz=MSK2)


async def test_failing_delivery_is_one_warning_and_its_recovery_one_info(
    tmp_path: Path, double: OneCDouble, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    """While 1C answered 500 the history logged nothing at all: an operator saw no
    sign of it (issue 16). Now one WARNING when delivery starts failing, naming
    the status and the URL's path (never the body, 1C's module error text), and
    one INFO when it recovers; not one line per retry."""
    events = events_for(2)
    double.faults.add("500", count=4)
    with HistoryQueue(tmp_path) as queue:
        sender = sender_for(queue, client)
        for event in events:
            sender.submit(event)
        with caplog.at_level(logging.DEBUG, logger="callrouter_onec.history"):
            sender.start()
            assert await sender.drain(10)
            await sender.stop()
    assert_exactly_once(double, events)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert lines[0][1] == (
        "1C history: delivery to 1C failing (HTTP 500 from POST "
        "/demo/hs/telephony/v1/calls/events); retrying with backoff up to 0.1 s, events "
        "wait in the queue; one line when it recovers"
    )
    assert lines[1][1].startswith(
        "1C history: delivery to 1C recovered after 4 failed attempts in "
    )
    assert "Ошибка" not in caplog.text
    assert "body" not in caplog.text


async def test_recovery_after_one_failed_post_says_one_attempt(
    tmp_path: Path, double: OneCDouble, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen live on the sandbox (issue 16): an event post that timed out once
    (1C slower than event_timeout), then went through, logged "recovered after
    1 failed attempts". One failed post is one attempt."""
    events = events_for(1)
    double.faults.add("503", count=1)
    with HistoryQueue(tmp_path) as queue:
        sender = sender_for(queue, client)
        for event in events:
            sender.submit(event)
        with caplog.at_level(logging.INFO, logger="callrouter_onec.history"):
            sender.start()
            assert await sender.drain(10)
            await sender.stop()
    assert_exactly_once(double, events)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert len(infos) == 1, infos
    assert infos[0].startswith("1C history: delivery to 1C recovered after 1 failed attempt in ")


async def test_a_200_that_is_no_acknowledgement_is_named_in_the_warning(
    tmp_path: Path, double: OneCDouble, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen live (issue 16): 1C answering an event with 200 and plain text logged
    "delivery to 1C failing (HTTP 200 from POST ...)", a success code as the only
    reason. The warning says what was wrong, still without the body's text."""
    events = events_for(1)
    double.faults.add("text200", count=1)
    with HistoryQueue(tmp_path) as queue:
        sender = sender_for(queue, client)
        for event in events:
            sender.submit(event)
        with caplog.at_level(logging.INFO, logger="callrouter_onec.history"):
            sender.start()
            assert await sender.drain(10)
            await sender.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "1C history: delivery to 1C failing (HTTP 200: answer is not JSON (JSONDecodeError) "
        "from POST /demo/hs/telephony/v1/calls/events); retrying with backoff up to 0.1 s, "
        "events wait in the queue; one line when it recovers"
    ]
    assert "Ошибка" not in caplog.text


async def test_events_are_dropped_after_max_age_with_a_log_line(
    tmp_path: Path, double: OneCDouble, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    double.down = True
    with HistoryQueue(tmp_path) as queue:
        sender = sender_for(queue, client, max_age=0.2)
        for event in events_for(2):
            sender.submit(event)
        sender.start()
        with caplog.at_level(logging.WARNING, logger="callrouter_onec.history"):
            assert await sender.drain(5)
        await sender.stop()
        assert queue.counts() == {"dropped": 6}
    drops = [r for r in caplog.records if "dropped" in r.message]
    assert len(drops) == 6
    assert "ringing of call 1714557600.0" in drops[0].message
    # Before them, the one line that says delivery fails (issue 16).
    assert ["failing" in r.message for r in caplog.records] == [True] + [False] * 6


async def test_rejected_event_is_dropped_not_retried(
    tmp_path: Path, double: OneCDouble, client: OneCClient, caplog: pytest.LogCaptureFixture
) -> None:
    good = events_for(1)
    with HistoryQueue(tmp_path) as queue:
        sender = sender_for(queue, client)
        sender.submit({**good[0], "direction": "sideways"})
        sender.submit(good[1])
        sender.start()
        with caplog.at_level(logging.WARNING):
            assert await sender.drain(5)
        await sender.stop()
        assert queue.counts() == {"dropped": 1, "sent": 1}
    assert "invalid_event" in caplog.text
    assert len(double.requests("/v1/calls/events")) == 2


@pytest.mark.parametrize("body", ["[" * 5000, "not json", "[1, 2]", '{"event": "missed"}'])
def test_a_missed_call_row_callrouter_cannot_have_written_loses_no_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    """Issue 16: an open missed call's row that is not what callrouter writes
    (damaged or tampered: nested past the parser's limit, no JSON, no object
    naming its call) raised inside the transaction storing the ``answered``
    that met it: the callback's event was rolled back and lost, as was every
    later connected call with that number until the row aged out (a week).
    The row is left out with an ERROR; the ``answered`` is stored, and the
    other missed call of that number is closed by it."""
    number = "79161234567"
    with HistoryQueue(tmp_path) as queue:
        for call_id, at in (("1.1", 1000.0), ("1.2", 1001.0)):
            missed = {"event": "missed", "call_id": call_id, "from": number}
            assert queue.enqueue_call_event(missed, MissedFact(number, at)) == 1
        queue._db.execute("UPDATE missed_open SET payload = ? WHERE call_id = '1.1'", (body,))
        assert [c["call_id"] for c in queue.open_missed(number)] == ["1.2"]
        answered = {"event": "answered", "call_id": "2.1", "extension": "101"}
        assert queue.enqueue_call_event(answered, MissedFact(number, 2000.0)) == 2
        assert [(e.call_id, e.event) for e in queue.pending(limit=-1)] == [
            ("1.1", "missed"),
            ("1.2", "missed"),
            ("2.1", "answered"),
            ("1.2", "missed_closed"),
        ]
        assert queue.open_missed(number) == []
    errors = {r.getMessage() for r in caplog.records if r.levelname == "ERROR"}
    assert errors == {
        "1C history: missed_open row of call '1.1' is not one callrouter writes "
        "(damaged or tampered); left out"
    }


def test_the_queue_keeps_its_depth_in_memory_through_every_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: what ``/metrics`` reads at scrape (``depth()``, no SQLite) follows
    each insert, delivery and drop, a rolled-back store, a pruning past
    ``max_rows`` and a damaged row dropped, and is counted from the file at start."""
    now = [1000.0]

    def queue_at(path: Path, max_rows: int = 100) -> HistoryQueue:
        return HistoryQueue(path, max_rows=max_rows, clock=lambda: now[0])

    def ring(n: int) -> dict[str, str]:
        return {"call_id": f"1.{n}", "event": "ringing", "event_id": f"1.{n}/ringing"}

    with queue_at(tmp_path) as queue:
        assert queue.depth() == (0, None)
        for n in range(1, 5):
            queue.enqueue(ring(n))
            now[0] += 1
        assert queue.depth() == (4, 1000.0)
        first, second, third, fourth = queue.pending()
        queue.mark_sent(second.id)  # not the oldest: no look at the file
        assert queue.depth() == (3, 1000.0)
        queue.mark_sent(first.id)
        assert queue.depth() == (2, 1002.0)
        queue.mark_sent(first.id)  # already sent: no change
        queue.mark_failed(third.id, "HTTP 503")  # still waiting
        assert queue.depth() == (2, 1002.0)

        def broken(*_: object) -> list[dict[str, str]]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(queue.missed, "settle", broken)
        with pytest.raises(sqlite3.OperationalError):
            queue.enqueue_call_event(ring(5), MissedFact("79161234567", now[0]))
        assert queue.depth() == (2, 1002.0)  # rolled back: not counted
        monkeypatch.undo()
        queue._db.execute("UPDATE events SET payload = 'no json' WHERE id = ?", (third.id,))
        assert [e.id for e in queue.due()] == [fourth.id]  # the damaged one dropped
        assert queue.depth() == (1, 1003.0)
    with queue_at(tmp_path, max_rows=2) as queue:  # counted from the file at start
        assert queue.depth() == (1, 1003.0)
        for n in range(6, 9):
            queue.enqueue(ring(n))
        assert queue.depth() == (4, 1003.0)
        queue.prune()  # the oldest two dropped: the file holds 2 at most
        assert queue.depth() == (2, now[0])
        for event in queue.pending():
            queue.mark_dropped(event.id, "refused")
        assert queue.depth() == (0, None)


def test_the_frequent_callers_are_customers_who_called_in(tmp_path: Path) -> None:
    """The warm-up's numbers (``warmup_numbers`` empty) are the customers who rang
    most. Every ``ringing`` counted, an outbound call's too, whose ``from`` is the
    extension that dialled: a manager's busy day of callbacks put ``101`` at the top,
    a number the warm-up never looks up, in a slot a customer lost (issue 16)."""
    with HistoryQueue(tmp_path) as queue:
        for n in range(5):
            for direction, source, target in (
                ("out", "101", "79031234567"),
                ("internal", "101", "102"),
            ):
                call = dataclasses.replace(
                    CALL,
                    call_id=f"{direction}.{n}",
                    direction=direction,
                    from_number=source,
                    to_number=target,
                )
                queue.enqueue(build_event("ringing", call))
        for n, number in enumerate(["79161234567", "79161234567", "74957770101"]):
            call = dataclasses.replace(CALL, call_id=f"in.{n}", from_number=number)
            queue.enqueue(build_event("ringing", call))
        assert queue.frequent_callers(2) == ["79161234567", "74957770101"]


@pytest.mark.parametrize("where", ["idle", "backoff"])
async def test_stop_ends_the_sender_when_it_is_woken_in_the_same_step(
    tmp_path: Path, where: str
) -> None:
    """`callrouter history replay` ended each time on the shutdown hook's 10 s
    cut-off ("plugin 'onec' failed in callrouter_shutdown: TimeoutError"):
    on Python 3.11 `asyncio.wait_for(event.wait(), ...)` returns normally
    when the event is set in the loop step its task is cancelled in, so the
    sending loop went on and `stop()` waited for it for ever (issue 16). A
    new event (idle) or a ping 1C answers (`retry_now`, in a backoff) coming
    just as the router stops is that step."""

    async def post(payload: object) -> EventAck:
        raise OneCUnavailable("1C is away")

    queue = HistoryQueue(tmp_path)
    sender = HistorySender(queue, post, base_delay=30, max_delay=30, idle_poll=30)
    sender.start()
    try:
        if where == "idle":
            await eventually(lambda: sender._wake._waiters, "the sender idle")  # type: ignore[attr-defined]
            sender._wake.set()  # what a stored event does, from the database thread
        else:
            sender.submit(events_for(1)[0])
            await eventually(lambda: sender._retry._waiters, "the sender in its backoff")  # type: ignore[attr-defined]
            sender.retry_now()
        await asyncio.wait_for(sender.stop(), 10)
        assert not sender.running
    finally:
        queue.close()
