"""The event feed: cursor order, exactly-once resume, scoping, bounds, the file."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from router.api.feed import FILENAME, EventFeed, FeedEvent


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def only(*extensions: str | None):  # type: ignore[no-untyped-def]
    return lambda extension: extension in extensions


def test_cursors_grow_even_when_the_clock_stands_still_or_goes_back() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock)
    first = feed.publish("ringing", "101", {})
    second = feed.publish("answered", "101", {})
    clock.now -= 60  # NTP stepped the clock back
    third = feed.publish("hangup", "101", {})
    assert first < second < third
    assert [e.kind for e in feed.read(0).events] == ["ringing", "answered", "hangup"]


def test_read_after_a_cursor_returns_only_later_events_in_order() -> None:
    feed = EventFeed(clock=Clock())
    cursors = [feed.publish("ringing", "101", {"n": n}) for n in range(5)]
    page = feed.read(cursors[1])
    assert [e.data["n"] for e in page.events] == [2, 3, 4]
    assert page.cursor == cursors[-1]
    assert not page.gap
    assert feed.read(page.cursor).events == ()


def test_resuming_from_each_returned_cursor_sees_every_event_exactly_once() -> None:
    feed = EventFeed(clock=Clock())
    seen: list[int] = []
    cursor = published = 0
    for batch in range(7):
        for _ in range(batch):  # uneven batches between reads
            feed.publish("ringing", "101", {"n": published})
            published += 1
        page = feed.read(cursor, limit=3)
        seen.extend(e.data["n"] for e in page.events)
        cursor = page.cursor
    while (page := feed.read(cursor, limit=3)).events:
        seen.extend(e.data["n"] for e in page.events)
        cursor = page.cursor
    assert seen == list(range(21))


def test_a_scoped_reader_never_sees_other_extensions_and_skips_past_them() -> None:
    feed = EventFeed(clock=Clock())
    feed.publish("ringing", "102", {})
    mine = feed.publish("ringing", "101", {})
    last = feed.publish("ringing", "102", {})
    feed.publish("missed", None, {})  # no extension: only for readers of everything
    page = feed.read(0, only("101"))
    assert [(e.extension, e.cursor) for e in page.events] == [("101", mine)]
    # Past the invisible ones too, so they are not scanned again.
    assert page.cursor > last
    assert feed.read(page.cursor, only("101")).events == ()


def test_limit_bounds_a_page_and_the_cursor_stops_at_its_last_event() -> None:
    feed = EventFeed(clock=Clock())
    cursors = [feed.publish("ringing", "101", {}) for _ in range(10)]
    page = feed.read(0, limit=4)
    assert [e.cursor for e in page.events] == cursors[:4]
    assert page.cursor == cursors[3]


def test_max_events_bounds_memory_and_a_reader_behind_it_is_told_of_the_gap() -> None:
    feed = EventFeed(clock=Clock(), max_events=3)
    first = feed.publish("ringing", "101", {"n": 0})
    for n in range(1, 5):
        feed.publish("ringing", "101", {"n": n})
    assert len(feed) == 3
    page = feed.read(first)
    assert page.gap
    assert [e.data["n"] for e in page.events] == [2, 3, 4]
    # A reader that was up to date is not told of a gap.
    assert not feed.read(page.cursor).gap


def test_a_gap_is_told_once_even_when_nothing_is_kept_after_it() -> None:
    """A reader behind what was dropped, with nothing kept after its cursor (a
    quiet night longer than the retention): the page's cursor moves past the
    gap, so the next read from it is no gap again (it was, for ever)."""
    clock = Clock()
    feed = EventFeed(clock=clock, retention=60)
    old = feed.publish("ringing", "101", {})
    feed.publish("hangup", "101", {})
    clock.now += 61
    page = feed.read(old)
    assert page.events == ()
    assert page.gap
    assert page.cursor > old
    assert not feed.read(page.cursor).gap
    new = feed.publish("ringing", "101", {})
    assert [e.cursor for e in feed.read(page.cursor).events] == [new]


async def test_a_long_poll_behind_a_gap_is_told_once() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock, retention=60)
    old = feed.publish("ringing", "101", {})
    feed.publish("hangup", "101", {})
    clock.now += 61
    first = await feed.wait(old, timeout=0.01)
    assert first.gap
    assert not (await feed.wait(first.cursor, timeout=0.01)).gap


def test_an_event_after_a_lost_file_has_a_cursor_past_the_gap() -> None:
    """The clock behind what was lost (the file was unreadable, the clock stepped
    back): a new event still comes after the cursor a reader was given."""
    clock = Clock()
    lost = int((clock.now + 3600) * 1_000_000)
    feed = EventFeed(clock=clock, lost=lost)
    page = feed.read(1)
    assert page.gap
    new = feed.publish("ringing", "101", {})
    assert new > page.cursor
    assert [e.cursor for e in feed.read(page.cursor).events] == [new]


def test_events_older_than_retention_go_and_the_reader_is_told() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock, retention=60)
    old = feed.publish("ringing", "101", {})
    clock.now += 61
    page = feed.read(0)
    assert page.events == ()
    assert page.gap
    new = feed.publish("ringing", "101", {})
    assert [e.cursor for e in feed.read(old).events] == [new]


def test_many_publications_keep_memory_bounded() -> None:
    feed = EventFeed(clock=Clock(), max_events=100)
    for n in range(5000):
        feed.publish("ringing", "101", {"n": n})
    assert len(feed) == 100
    assert len(feed._events) < 1200  # the head is compacted
    assert [e.data["n"] for e in feed.read(0, limit=1000).events] == list(range(4900, 5000))


async def test_a_waiting_reader_is_woken_by_a_publication() -> None:
    feed = EventFeed()
    start = feed.publish("ringing", "102", {})
    reader = asyncio.create_task(feed.wait(start, only("101"), timeout=30))
    await asyncio.sleep(0)
    assert feed.waiting == 1
    feed.publish("ringing", "102", {})  # not for this reader: it keeps waiting
    await asyncio.sleep(0)
    assert not reader.done()
    cursor = feed.publish("ringing", "101", {"card": "x"})
    page = await asyncio.wait_for(reader, 5)
    assert [e.cursor for e in page.events] == [cursor]
    assert feed.waiting == 0


async def test_a_reader_with_nothing_to_read_gets_an_empty_page_after_the_timeout() -> None:
    feed = EventFeed()
    cursor = feed.publish("ringing", "102", {})
    page = await asyncio.wait_for(feed.wait(0, only("101"), timeout=0.05), 5)
    assert page.events == ()
    assert page.cursor == cursor
    assert feed.waiting == 0


async def test_a_cancelled_reader_leaves_no_waiter_behind() -> None:
    feed = EventFeed()
    reader = asyncio.create_task(feed.wait(0, timeout=30))
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert feed.waiting == 0


async def test_resume_across_a_restart_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    feed = EventFeed.open(tmp_path)
    cursors = [feed.publish("ringing", "101", {"n": n}, call_id="c1") for n in range(5)]
    seen = feed.read(0, limit=2)
    await feed.aclose()

    again = EventFeed.open(tmp_path)
    page = again.read(seen.cursor)
    assert [e.cursor for e in page.events] == cursors[2:]
    assert [e.data["n"] for e in page.events] == [2, 3, 4]
    assert page.events[0].call_id == "c1"
    assert not page.gap
    later = again.publish("answered", "101", {})
    assert later > cursors[-1]  # cursors stay monotonic across the restart
    await again.aclose()


async def test_the_file_is_private_and_bounded_across_restarts(tmp_path: Path) -> None:
    clock = Clock()
    feed = EventFeed.open(tmp_path, max_events=3, clock=clock)
    first = feed.publish("ringing", "101", {})
    for _ in range(5):
        feed.publish("ringing", "101", {})
    await feed.aclose()
    mode = stat.S_IMODE(os.stat(tmp_path / FILENAME).st_mode)
    assert mode == 0o600

    again = EventFeed.open(tmp_path, max_events=3, clock=clock)
    assert len(again) == 3
    assert again.read(first).gap  # what the bound dropped is reported, not hidden
    clock.now += 4000  # past the retention: nothing is reloaded
    await again.aclose()
    third = EventFeed.open(tmp_path, max_events=3, clock=clock)
    assert len(third) == 0
    assert third.read(first).gap
    await third.aclose()


def test_feed_event_json_shape() -> None:
    event = FeedEvent(7, "ringing", "101", "1700.1", 1.5, {"caller": "+7"})
    assert event.to_dict() == {
        "cursor": 7,
        "kind": "ringing",
        "extension": "101",
        "call_id": "1700.1",
        "ts": 1.5,
        "data": {"caller": "+7"},
    }


async def test_an_unreadable_file_is_moved_aside_and_the_feed_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILENAME).write_bytes(b"this is no SQLite database" * 100)
    feed = EventFeed.open(tmp_path)
    assert len(feed) == 0
    assert feed.read(1).gap  # a client resuming from before is told it lost events
    cursor = feed.publish("ringing", "101", {})
    await feed.aclose()
    assert "unreadable" in caplog.text
    aside = [p.name for p in os.scandir(tmp_path) if "unreadable" in p.name]
    assert [name.rpartition("-")[0] for name in aside] == [f"{FILENAME}.unreadable"]
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == [cursor]
    await again.aclose()


async def test_an_event_the_file_cannot_take_does_not_stop_later_ones(tmp_path: Path) -> None:
    feed = EventFeed.open(tmp_path)
    feed.publish("odd", "101", {"value": object()})  # written as its str()
    later = feed.publish("ringing", "101", {})
    await feed.aclose()
    again = EventFeed.open(tmp_path)
    assert [e.kind for e in again.read(0).events] == ["odd", "ringing"]
    assert again.read(0).events[-1].cursor == later
    await again.aclose()
