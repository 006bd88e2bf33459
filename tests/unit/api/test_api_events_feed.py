"""The event feed: cursor order, exactly-once resume, scoping, bounds, the file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from router.api.feed import (
    _RESERVE_STEP,
    FILENAME,
    EventFeed,
    FeedEvent,
    FeedStore,
    Visible,
    _everything,
)
from router.errors import StateFileDenied
from tests.unit.stranger import ROOT_ONLY, STRANGER, as_stranger, folder_in_tmp


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def only(*extensions: str | None):  # type: ignore[no-untyped-def]
    return lambda extension: extension in extensions


def lost_gap(feed: EventFeed, after: int, visible: Visible) -> bool:
    """The gap a reader at ``after`` is told for events dropped (retention, the
    bound, a file that took no writes), apart from a blind stretch's (a restart,
    the AMI stream lost), which every reader behind it is told whatever its scope."""
    return feed._lost_after(after, visible) > after


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
    clock = Clock()
    feed = EventFeed(clock=clock)
    feed.publish("ringing", "102", {})
    mine = feed.publish("ringing", "101", {})
    last = feed.publish("ringing", "102", {})
    feed.publish("missed", None, {})  # no extension: only for readers of everything
    clock.now += 1
    page = feed.read(0, only("101"))
    assert [(e.extension, e.cursor) for e in page.events] == [("101", mine)]
    # Past the invisible ones too, so they are not scanned again: on to the
    # clock, not to the last of them (its cursor would say when it was).
    assert page.cursor == int(clock.now * 1_000_000) > last
    assert feed.read(page.cursor, only("101")).events == ()
    later = feed.publish("ringing", "101", {})
    assert [e.cursor for e in feed.read(page.cursor, only("101")).events] == [later]


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


async def test_a_cursor_ahead_of_the_feed_is_a_gap_answered_at_once_from_the_clock() -> None:
    """A cursor the feed never handed out, past every one it did and the clock
    (forged, or from a run whose file was lost after the clock was set back):
    it was echoed back, and no event ever came after it."""
    clock = Clock()
    feed = EventFeed(clock=clock)
    seen = feed.publish("ringing", "101", {})
    now = int(clock.now * 1_000_000)
    for ahead in (now + 1_000_000, (1 << 63) - 1):
        page = feed.read(ahead)
        assert page.gap
        assert page.events == ()
        assert page.cursor == now
        async with asyncio.timeout(1):
            waited = await feed.wait(ahead, only("101"), timeout=30)
        assert (waited.gap, waited.cursor) == (True, now)
    assert not feed.read(now).gap
    new = feed.publish("answered", "101", {})
    assert [e.cursor for e in feed.read(now).events] == [new]
    # Cursors it did hand out, the clock's included, are no gap.
    for cursor in (seen, now, new):
        assert not feed.read(cursor).gap


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
    clock = Clock()
    feed = EventFeed(clock=clock)
    cursor = feed.publish("ringing", "102", {})
    clock.now += 1
    page = await asyncio.wait_for(feed.wait(0, only("101"), timeout=0.05), 5)
    assert page.events == ()
    # The clock, not the event it may not see.
    assert page.cursor == int(clock.now * 1_000_000) > cursor
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
    # Nothing the feed had was lost, but callrouter saw nothing while it was
    # stopped: a gap, told on the page that passes the restart, once.
    assert not lost_gap(again, seen.cursor, _everything)
    assert page.gap
    assert not again.read(page.cursor).gap
    later = again.publish("answered", "101", {})
    assert later > cursors[-1]  # cursors stay monotonic across the restart
    assert [e.cursor for e in again.read(page.cursor).events] == [later]
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


def _open_under(folder: Path) -> list[str]:
    """What this process has open in ``folder`` (its descriptors' targets)."""
    fds = Path("/proc/self/fd")
    targets = []
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            target = os.readlink(fds / fd)
            if target.startswith(f"{folder}/"):
                targets.append(target)
    return sorted(targets)


async def test_the_connection_to_a_file_set_aside_is_closed(tmp_path: Path) -> None:
    """Issue 16: a file SQLite opens but cannot read (a damaged page past its
    schema) is set aside, and the connection that found it so was left open
    on it (and on its -wal and -shm, deleted after) with its worker thread."""
    feed = EventFeed.open(tmp_path)
    for _ in range(300):
        feed.publish("ringing", "101", {"caller": "7" * 200})
    await feed.aclose()
    path = tmp_path / FILENAME
    damaged = bytearray(path.read_bytes())
    damaged[3 * 4096 :] = b"\xff" * (len(damaged) - 3 * 4096)  # the schema's pages kept
    path.write_bytes(bytes(damaged))
    again = EventFeed.open(tmp_path)
    try:
        assert len(_set_aside(tmp_path)) == 1  # damaged past the schema: set aside
        assert _open_under(tmp_path) == [f"{path}", f"{path}-shm", f"{path}-wal"]
    finally:
        await again.aclose()


async def test_a_file_callrouter_may_not_open_is_kept_and_the_start_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: SQLite's CANTOPEN (the file's or folder's owner or mode
    changed; root reads through chmod, hence the stand-ins) set the feed's
    sound file aside as unreadable, its events lost; now the start is refused
    naming it, and the file is kept."""
    import sqlite3

    from router import aside
    from router.api import feed as module
    from router.errors import StateFileDenied

    feed = EventFeed.open(tmp_path)
    cursor = feed.publish("ringing", "101", {})
    await feed.aclose()
    real = sqlite3.connect

    def denied(*args: object, **kwargs: object) -> sqlite3.Connection:
        exc = sqlite3.OperationalError("unable to open database file")
        exc.sqlite_errorname = "SQLITE_CANTOPEN"
        raise exc

    def no_entry(path: Path) -> OSError:
        # What the file system says of the folder to a user it shuts out.
        return PermissionError(13, "Permission denied", str(path.parent))

    monkeypatch.setattr(module.sqlite3, "connect", denied)
    monkeypatch.setattr(aside, "cantopen_cause", no_entry)
    with pytest.raises(StateFileDenied) as raised:
        EventFeed.open(tmp_path)
    assert str(tmp_path / FILENAME) in str(raised.value)
    assert "chown" in str(raised.value)
    assert _set_aside(tmp_path) == {}
    monkeypatch.setattr(module.sqlite3, "connect", real)
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == [cursor]
    await again.aclose()


@pytest.mark.parametrize(
    ("message", "code", "said"),
    [
        # The file was renamed or deleted under the connection, by another
        # process. It was taken for another user's file ("chown ..."), and a
        # code not taken so set aside whatever was at the name then as
        # unreadable.
        (
            "attempt to write a readonly database",
            "SQLITE_READONLY_DBMOVED",
            "the file was moved or deleted while callrouter opened it",
        ),
        # No permission, nor a damaged file: it was said as another user's
        # file ("chown ...").
        (
            "unable to open database file",
            "SQLITE_CANTOPEN_SYMLINK",
            "a symbolic link is at the database's name",
        ),
    ],
    ids=["moved", "cantopen"],
)
async def test_a_code_at_start_that_no_permission_explains_is_said_as_what_it_is_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, message: str, code: str, said: str
) -> None:
    """SQLITE_READONLY_DBMOVED and SQLITE_CANTOPEN_SYMLINK
    (https://www.sqlite.org/rescode.html) at the start's first write: the
    start is refused saying what happened, naming the code, and the file at
    the name is kept, neither set aside nor said as denied (issue 16)."""
    import sqlite3

    feed = EventFeed.open(tmp_path)
    cursor = feed.publish("ringing", "101", {})
    await feed.aclose()

    def refused(self: FeedStore, ceiling: int) -> None:
        exc = sqlite3.OperationalError(message)
        exc.sqlite_errorname = code
        raise exc

    with monkeypatch.context() as patched:
        patched.setattr(FeedStore, "reserve_now", refused)
        with pytest.raises(sqlite3.OperationalError) as raised:
            EventFeed.open(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / FILENAME}: {message} ({code}: {said}")
    assert "chown" not in str(raised.value)
    assert _set_aside(tmp_path) == {}
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == [cursor]
    await again.aclose()


@ROOT_ONLY
async def test_a_file_callrouter_may_read_but_not_write_is_kept_and_the_start_refused() -> None:
    """Issue 16: the feed's file of another user (root's, 0644) opens read-only
    in SQLite, and its first write says SQLITE_READONLY: the reservation at
    start took that for a passing lock (a WARNING, the start went on), and the
    feed published for good without writing a row or showing a new event to
    any reader. Refused at start naming the file, as the CHANGELOG says,
    kept as it is. Run as another user: root writes through any mode."""
    with folder_in_tmp("callrouter-feed-") as base:
        os.chmod(base, 0o755)  # the stranger reaches the state folder
        state = base / "state"
        state.mkdir(mode=0o700)
        feed = EventFeed.open(state)
        feed.publish("ringing", "101", {})
        await feed.aclose()
        os.chown(state, STRANGER, STRANGER)
        os.chmod(state / FILENAME, 0o644)  # root's, as it was made here

        def start() -> str:
            try:
                EventFeed.open(state)
            except StateFileDenied as exc:
                return f"refused: {exc}"
            return "started"

        said = as_stranger(start)
        assert said.startswith(
            f"refused: [Errno 13] {state / FILENAME}: SQLite: attempt to write a readonly "
            "database: "
        ), said
        assert f"chown {STRANGER} {state / FILENAME}" in said
        assert f"({STRANGER}) may not open or write this state file" in said
        assert _set_aside(state) == {}
        assert os.stat(state / FILENAME).st_uid == 0  # kept as it was


@ROOT_ONLY
@pytest.mark.parametrize("tables", [True, False], ids=["the-feeds", "none-yet"])
async def test_a_refused_start_leaves_the_file_closed(tables: bool) -> None:
    """Issue 16: the start refused for a file SQLite opened read-only (root's,
    0644) left its connection open on it, for as long as the refusal was
    handled (logged, said); one refused making its tables, too."""
    with folder_in_tmp("callrouter-feed-") as base:
        os.chmod(base, 0o755)  # the stranger reaches the state folder
        state = base / "state"
        state.mkdir(mode=0o700)
        if tables:
            feed = EventFeed.open(state)
            feed.publish("ringing", "101", {})
            await feed.aclose()
        else:
            with contextlib.closing(sqlite3.connect(state / FILENAME)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE other (x)")
        os.chown(state, STRANGER, STRANGER)
        os.chmod(state / FILENAME, 0o644)

        def start() -> str:
            try:
                EventFeed.open(state)
            except StateFileDenied:
                return f"refused, open: {_open_under(state)}"
            return "started"

        assert as_stranger(start) == "refused, open: []"


def _set_aside(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if ".unreadable-" in p.name}


async def test_two_unreadable_files_in_the_same_second_are_both_kept(tmp_path: Path) -> None:
    """Issue 16: the name set aside is made of the second (``unreadable-TIME``)
    and was moved there with ``os.replace``: a second unreadable file in the
    same second (a restart loop) overwrote the first one set aside."""
    for junk in (b"the first damaged file" * 100, b"the second damaged file" * 100):
        (tmp_path / FILENAME).write_bytes(junk)
        feed = EventFeed.open(tmp_path, clock=lambda: 1_700_000_000.5)
        await feed.aclose()
    kept = _set_aside(tmp_path)
    assert kept == {
        f"{FILENAME}.unreadable-1700000000": b"the first damaged file" * 100,
        f"{FILENAME}.unreadable-1700000000-2": b"the second damaged file" * 100,
    }


async def test_an_event_the_file_cannot_take_does_not_stop_later_ones(tmp_path: Path) -> None:
    feed = EventFeed.open(tmp_path)
    feed.publish("odd", "101", {"value": object()})  # written as its str()
    later = feed.publish("ringing", "101", {})
    await feed.aclose()
    again = EventFeed.open(tmp_path)
    assert [e.kind for e in again.read(0).events] == ["odd", "ringing"]
    assert again.read(0).events[-1].cursor == later
    await again.aclose()


async def _what_a_101_reader_sees(others: int) -> list[object]:
    """Every cursor, event and gap a reader scoped to 101 gets while ``others``
    events of 102 come and go (the ring overflows, then they expire).

    The one thing a shared bound shows is left out: events past ``max_events``
    that push 101's own event out early (it is then told of the gap)."""
    clock = Clock()
    feed = EventFeed(clock=clock, retention=60, max_events=20)
    seen: list[object] = []
    start = feed.position()
    seen.append(start)
    clock.now += 1
    for _ in range(others):
        feed.publish("ringing", "102", {})
    clock.now += 1
    feed.publish("ringing", "101", {})
    clock.now += 1
    seen += [feed.read(0, only("101")), feed.read(start, only("101")), feed.read(1, only("101"))]
    reader = asyncio.create_task(feed.wait(seen[-1].cursor, only("101"), timeout=0.05))  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    for _ in range(others // 5):  # fewer than the ring holds after 101's event
        feed.publish("hangup", "102", {})
    await asyncio.sleep(0)
    seen.append(reader.done())  # another's event never ends the wait
    seen.append(await reader)
    clock.now += 59  # 102's events expire, 101's not yet
    seen += [feed.read(start, only("101")), await feed.wait(start, only("101"), timeout=0)]
    clock.now += 2  # now 101's too
    seen += [feed.read(start, only("101")), feed.read(0, only("101"))]
    return seen


async def test_a_scoped_reader_cannot_tell_no_other_events_from_many() -> None:
    """Same cursors, same events, same gaps, same wake-ups: the 102 events, the
    ring they overflowed and their expiry tell a 101 reader nothing."""
    quiet = await _what_a_101_reader_sees(0)
    busy = await _what_a_101_reader_sees(50)
    assert busy == quiet
    assert quiet[-2].gap  # type: ignore[attr-defined]  # its own event expired: told


def test_a_gap_is_told_to_the_readers_who_could_see_what_was_dropped() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=3)
    before = feed.position()
    clock.now += 1
    feed.publish("ringing", "101", {})
    for _ in range(3):
        clock.now += 1
        feed.publish("ringing", "102", {})
    clock.now += 1
    mine = feed.read(before, only("101"))
    assert mine.gap
    assert mine.events == ()
    assert not feed.read(mine.cursor, only("101")).gap  # told once
    assert not feed.read(before, only("103")).gap  # 101's loss is not 103's
    everything = feed.read(before)
    assert everything.gap
    assert len(everything.events) == 3
    later = feed.publish("ringing", "101", {})
    assert [e.cursor for e in feed.read(mine.cursor, only("101")).events] == [later]


async def test_what_each_extension_lost_is_kept_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("router.api.feed._PRUNE_EVERY", 2)  # the file forgets the rows
    clock = Clock()
    feed = EventFeed.open(tmp_path, max_events=3, clock=clock)
    before = feed.position()
    clock.now += 1
    feed.publish("ringing", "101", {})
    for _ in range(6):
        clock.now += 1
        feed.publish("ringing", "102", {})
    await feed.aclose()
    again = EventFeed.open(tmp_path, max_events=3, clock=clock)
    assert again.read(before, only("101")).gap
    assert again.read(before, only("102")).gap
    assert not lost_gap(again, before, only("103"))  # nothing of 103's was dropped
    assert again.read(before, only("103")).gap  # but the restart is everyone's
    assert again.read(before).gap
    await again.aclose()


async def test_a_scoped_readers_clock_cursor_holds_after_a_restart_with_the_clock_set_back(
    tmp_path: Path,
) -> None:
    """A scoped reader's cursor is the clock, above every event; a restart with the
    clock 3 s back gave the next event a lower cursor, which that reader never got."""
    now = [1000.0]
    feed = EventFeed.open(tmp_path, clock=lambda: now[0])
    feed.publish("x", "101", {})
    now[0] = 1005.0
    cursor = feed.read(0, only("102")).cursor
    await feed.aclose()
    now[0] = 1002.0
    again = EventFeed.open(tmp_path, clock=lambda: now[0])
    again.publish("y", "102", {})
    assert [e.kind for e in again.read(cursor, only("102")).events] == ["y"]
    await again.aclose()


def crash(feed: EventFeed) -> None:
    """The process dies: what the worker has written stays, nothing is written at
    stop (the store's own thread and connection just end)."""
    store = feed._store
    assert store is not None
    store._pool.shutdown(wait=True)
    store._db.close()


def ceiling_in(path: Path) -> int:
    """The reservation in the feed's file, as the next run reads it."""
    with contextlib.closing(sqlite3.connect(path / FILENAME)) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'issued_ceiling'").fetchone()
    return int(row[0]) if row else 0


async def test_after_a_crash_and_the_clock_set_back_new_events_go_above_every_cursor_handed_out(
    tmp_path: Path,
) -> None:
    """No clean stop, so nothing was written at stop; NTP stepped the clock back
    a minute before the restart. The scoped reader's cursor (the clock) was
    above the next run's events and it never got them, with no gap told."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    feed.publish("ringing", "101", {})
    clock.now += 5
    handed = [feed.read(0, only("102")).cursor]  # the clock, above every event
    clock.now += 5
    handed.append(feed.position())
    crash(feed)

    clock.now -= 60
    again = EventFeed.open(tmp_path, clock=clock)
    later = again.publish("ringing", "102", {})
    assert later > max(handed)
    page = again.read(handed[0], only("102"))
    assert [e.cursor for e in page.events] == [later]
    await again.aclose()


async def test_events_lost_in_a_crash_leave_their_cursors_to_no_new_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader got events the worker had not written yet when the process
    died; the next run (clock set back) gave new events lower cursors."""
    monkeypatch.setattr(FeedStore, "_write", lambda self, batch, prune: None)
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    for _ in range(3):
        clock.now += 1
        feed.publish("ringing", "101", {})
    seen = feed.read(0, only("101"), limit=100)
    assert len(seen.events) == 3
    crash(feed)

    clock.now -= 30
    again = EventFeed.open(tmp_path, clock=clock)
    later = again.publish("answered", "101", {})
    assert later > seen.cursor
    assert [e.cursor for e in again.read(seen.cursor, only("101")).events] == [later]
    await again.aclose()


async def test_no_cursor_above_the_files_reservation_is_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock jumps past the reservation while the disk stalls: readers get
    nothing above what the file holds, and the rest once it is written."""
    written = threading.Event()
    write = FeedStore._write_ceiling

    def stalled(self: FeedStore, ceiling: int) -> bool:
        written.wait(10)
        return write(self, ceiling)

    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    before = feed.publish("ringing", "101", {})
    monkeypatch.setattr(FeedStore, "_write_ceiling", stalled)
    clock.now += 3600
    held = feed.publish("answered", "101", {})
    ceiling = ceiling_in(tmp_path)
    assert before <= ceiling < held

    everything = feed.read(0)
    assert [e.cursor for e in everything.events] == [before]
    scoped = feed.read(before, only("102"))
    assert not scoped.events
    assert max(everything.cursor, scoped.cursor, feed.position()) <= ceiling

    waiting = asyncio.create_task(feed.wait(everything.cursor, timeout=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held back, not answered with a cursor past the file
    written.set()
    page = await asyncio.wait_for(waiting, 5)
    assert [e.cursor for e in page.events] == [held]
    assert ceiling_in(tmp_path) >= held
    assert feed.position() == int(clock.now * 1_000_000)
    await feed.aclose()


async def test_a_file_that_cannot_be_written_at_start_is_kept_and_answers_wait_for_it(
    tmp_path: Path,
) -> None:
    """Another connection holds the write lock (a backup tool; a full disk
    fails the same way) when the router starts: the start's
    reservation failed and the readable file was moved aside as unreadable,
    its events lost and every reader told of a gap."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    kept = feed.publish("ringing", "101", {})
    await feed.aclose()
    top = max(kept, ceiling_in(tmp_path))

    clock.now += 60
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME, isolation_level=None)) as lock:
        lock.execute("BEGIN IMMEDIATE")
        again = EventFeed.open(tmp_path, clock=clock)
        assert not [name for name in os.listdir(tmp_path) if "unreadable" in name]
        page = again.read(0)
        assert [e.cursor for e in page.events] == [kept]
        # The restart is told once the answer may pass its mark: the mark is
        # above what the file holds, held back with the rest.
        assert not page.gap
        # Nothing above what the file holds is handed out while it is locked.
        start = again.position()
        assert start <= top
        held = again.publish("answered", "101", {})
        waiting = asyncio.create_task(again.wait(start, timeout=10))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        lock.execute("ROLLBACK")
    page = await asyncio.wait_for(waiting, 5)
    assert [e.cursor for e in page.events] == [held]
    assert page.gap  # the restart, told with the first answer past it
    assert not again.read(page.cursor).gap
    assert ceiling_in(tmp_path) > held
    await again.aclose()


async def test_the_reservation_is_written_rarely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write (and fsync) per answer would cost the hot path: 10 minutes of 20
    events and reads a second write the reservation at most every 15 s."""
    writes: list[int] = []
    write = FeedStore.reserve_now

    def counted(self: FeedStore, ceiling: int) -> None:
        writes.append(ceiling)
        write(self, ceiling)

    monkeypatch.setattr(FeedStore, "reserve_now", counted)
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    cursor = feed.position()
    for n in range(600 * 20):
        clock.now += 0.05
        feed.publish("ringing", str(100 + n % 7), {})
        cursor = feed.read(cursor, only("101")).cursor
        if n % 1000 == 0:
            await asyncio.sleep(0.01)  # let the worker write
    await feed.aclose()
    assert 1 < len(writes) <= 600 // 15 + 2


async def test_a_clean_stop_puts_the_next_runs_cursors_at_the_clock(tmp_path: Path) -> None:
    """The reservation is only for a crash: after a clean stop the next run's
    cursors are the clock again, not the reservation's 15-30 s ahead of it."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    feed.publish("ringing", "101", {})
    await feed.aclose()
    clock.now += 1
    again = EventFeed.open(tmp_path, clock=clock)
    assert again.publish("ringing", "101", {}) == int(clock.now * 1_000_000)
    await again.aclose()


async def test_a_file_from_before_per_extension_gaps_tells_a_scoped_reader_behind_it_once(
    tmp_path: Path,
) -> None:
    """A file written before the feed kept dropped cursors per extension holds
    one `lost`: the newest dropped cursor of anyone, the rows behind it gone.
    Whose events they were cannot be told, so a reader behind it is told of a
    gap (once), whatever it may see; never nothing (that could be silent loss)."""
    clock = Clock()
    base = int(clock.now * 1_000_000)
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db, db:
        db.execute(
            "CREATE TABLE events (cursor INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
            " extension TEXT, call_id TEXT, ts REAL NOT NULL, data TEXT NOT NULL)"
        )
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER)")
        db.execute("INSERT INTO meta VALUES ('lost', ?)", (base + 5,))
        db.execute(
            "INSERT INTO events VALUES (?, 'ringing', '101', NULL, ?, '{}')",
            (base + 6, clock.now),
        )
    feed = EventFeed.open(tmp_path, clock=clock)
    behind = feed.read(base + 1, only("102"))
    assert behind.gap
    assert not feed.read(behind.cursor, only("102")).gap
    assert not lost_gap(feed, base + 5, only("102"))
    assert feed.read(base + 5, only("102")).gap  # the restart: everyone's
    assert [e.cursor for e in feed.read(base + 5).events] == [base + 6]
    await feed.aclose()


async def test_a_disk_that_takes_no_writes_does_not_grow_the_queue_without_bound(
    tmp_path: Path,
) -> None:
    """Issue 16: while the feed's file is locked (a backup) or the disk is
    full, every event published waited in memory for it, without bound. Past
    ``events_max`` the oldest are not written; the ring still serves them, and
    after a restart a reader resuming from before them is told of a gap."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock, max_events=5)
    first = feed.publish("ringing", "101", {})
    await flushed(feed)  # written
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME, isolation_level=None)) as lock:
        lock.execute("BEGIN IMMEDIATE")
        published = []
        for _ in range(40):
            clock.now += 0.001
            published.append(feed.publish("ringing", "101", {}))
        store = feed._store
        assert store is not None
        assert len(store._pending) <= 5
        # This run's readers still get the ring's events.
        assert [e.cursor for e in feed.read(first).events] == published[-5:]
        lock.execute("ROLLBACK")
    await feed.aclose()
    again = EventFeed.open(tmp_path, clock=clock, max_events=5)
    page = again.read(first, only("101"))
    assert page.gap
    assert [e.cursor for e in page.events] == published[-5:]
    await again.aclose()


async def test_the_file_is_said_to_take_writes_again_only_once_what_it_dropped_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker cleared the overflow flag without the lock, from the batch it had
    taken: events dropped on the event loop's thread while that batch was written
    (their record still to be written) were followed by "takes writes again", and
    the flag of that drop was gone. Now the flag is read and cleared under the lock,
    and the WARNING comes once the drop is on file."""
    write = FeedStore._write
    gate, writing = threading.Event(), threading.Event()

    def held(self: FeedStore, *args: object) -> bool:
        if not writing.is_set():
            writing.set()
            gate.wait(10)
        return write(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FeedStore, "_write", held)
    store = FeedStore(tmp_path / FILENAME, max_pending=1)
    on_file: list[list[tuple[str, int]]] = []

    class Look(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "takes writes again" in record.getMessage():
                with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db:
                    on_file.append(db.execute("SELECT extension, cursor FROM dropped").fetchall())

    look = Look()
    logging.getLogger("router.api.feed").addHandler(look)
    try:
        store.append(FeedEvent(1, "ringing", "101", None, 1.0))
        assert await asyncio.to_thread(writing.wait, 10)  # the first batch, held
        for cursor in (2, 3):  # queued beyond max_pending: 2 is dropped
            store.append(FeedEvent(cursor, "ringing", "101", None, 1.0))
        gate.set()
        await asyncio.to_thread(store.close)
    finally:
        logging.getLogger("router.api.feed").removeHandler(look)
    assert on_file == [[('"101"', 2)]]
    assert not store._overflowing


@pytest.mark.parametrize("value", ["'abc'", str((1 << 63) - 1), "-5"])
async def test_a_bad_value_in_the_feeds_file_is_left_out_and_the_feed_starts(
    tmp_path: Path, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a tampered or damaged ``issued``/``issued_ceiling``/``lost``
    (text, near 2^63) stopped the start with ValueError or OverflowError; the
    events in the file are kept and the bad value is left out."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    kept = feed.publish("ringing", "101", {})
    await feed.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db, db:
        for key in ("issued", "issued_ceiling", "lost"):
            db.execute(f"INSERT OR REPLACE INTO meta VALUES ('{key}', {value})")
        db.execute(f"INSERT OR REPLACE INTO dropped VALUES ('\"102\"', {value})")
    clock.now += 1
    again = EventFeed.open(tmp_path, clock=clock)
    assert [e.cursor for e in again.read(0).events] == [kept]
    assert again.publish("ringing", "101", {}) > kept
    assert not [name for name in os.listdir(tmp_path) if "unreadable" in name]
    # Each bad value is named with its file, for whoever tampered or repairs it.
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for key in ("issued", "issued_ceiling", "lost", "dropped"):
        assert [m for m in warned if FILENAME in m and f"bad {key} value" in m], key
    await again.aclose()


@pytest.mark.parametrize(
    ("column", "value", "kept"),
    [
        ("data", "'" + "[" * 5000 + "'", True),  # nested past the parser's limit
        ("data", "'[1, 2]'", True),  # JSON, but no object
        ("data", """'{"a": NaN}'""", True),  # no answer can carry it (JSONResponse: 500)
        ("data", "'{\"a\": 1e999}'", True),  # Infinity, the same
        ("dropped", "'" + "[" * 5000 + "'", True),  # the dropped table's key
        ("ts", "'abc'", False),  # no time
        ("ts", "1e999", False),  # Infinity
    ],
)
async def test_a_bad_event_row_in_the_feeds_file_is_left_out_and_the_feed_starts(
    tmp_path: Path, column: str, value: str, kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a row of the events table the feed cannot have written (damaged
    or tampered) stopped the start: ``data`` nested past the parser's limit
    raised RecursionError, a JSON array TypeError, a ``ts`` of text ValueError,
    all through ``except ValueError``; and ``NaN`` or ``Infinity`` were read
    back, so every answer holding the event was a 500 (``JSONResponse`` refuses
    them) and the stream sent ``Infinity``, which no JSON parser takes. Bad
    ``data`` is now read as ``{}``; a row with no time is left out with a
    WARNING naming the file; the other events are served."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    bad = feed.publish("ringing", "101", {"caller": "1"})
    clock.now += 1
    good = feed.publish("ringing", "102", {"caller": "2"})
    await feed.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db, db:
        if column == "dropped":
            db.execute(f"INSERT OR REPLACE INTO dropped VALUES ({value}, 1)")
        else:
            db.execute(f"UPDATE events SET {column} = {value} WHERE cursor = ?", (bad,))
    clock.now += 1
    again = EventFeed.open(tmp_path, clock=clock)
    events = again.read(0).events
    assert [e.cursor for e in events] == ([bad, good] if kept else [good])
    for event in events:  # what the long poll answers, as JSONResponse renders it
        json.dumps(event.to_dict(), allow_nan=False)
    if column == "data":
        assert events[0].data == {}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m for m in warned if f"holds event {bad}" in m] == (
        []
        if kept
        else [
            f"api feed: {FILENAME} holds event {bad} with a kind, extension, call id or time"
            " the feed never writes; left out"
        ]
    )
    await again.aclose()


DAY = 86_400 * 1_000_000


@pytest.mark.parametrize(
    ("ahead", "trusted"),
    [
        (10 * 366 * DAY, False),  # ten years past the clock: not written by the feed
        (None, False),  # 2^53 itself: the run's cursors would pass what a start reads
        (30 * DAY, True),  # the clock set back a month (a snapshot restored): kept
    ],
)
async def test_a_position_far_past_the_clock_and_every_event_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ahead: int | None, trusted: bool
) -> None:
    """Issue 16: an ``issued`` far ahead (in SQLite's range, below 2^53) was
    trusted: every cursor went there, events outlived ``retention`` (it expires by
    cursor) and, near 2^53, the run's own cursors passed what the next start reads,
    so that start left them out and went below them. More than a year past both the
    clock and the newest event is refused with a WARNING naming the file and the
    key; the feed starts from its events and the clock. A month (a clock set back)
    is still honoured: no cursor goes below one handed out."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    kept = feed.publish("ringing", "101", {})
    await feed.aclose()
    value = (1 << 53) if ahead is None else int(clock.now * 1_000_000) + ahead
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db, db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('issued', ?)", (value,))
    clock.now += 1
    again = EventFeed.open(tmp_path, clock=clock)
    assert [e.cursor for e in again.read(0).events] == [kept]
    cursor = again.publish("ringing", "101", {})
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING"
        and FILENAME in r.getMessage()
        and "bad issued value" in r.getMessage()
    ]
    if trusted:
        # Above it, past the restart's mark: the step's next multiple, not
        # value + 1 (the last run's exact top, which could be another's event).
        assert cursor == (value // _RESERVE_STEP + 1) * _RESERVE_STEP + 1
        assert cursor > value
        assert warned == []
    else:
        # Above the events and what this run handed out (the read's position).
        assert kept < cursor <= int(clock.now * 1_000_000) + 1
        assert len(warned) == 1, warned
    await again.aclose()


def _meta_elsewhere(path: Path) -> int:
    """The feed file's meta rows as another process sees them (opened, read, closed)."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(db.execute('SELECT COUNT(*) FROM meta').fetchone()[0]); db.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_second_feed_store_in_the_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Issue 16: FeedStore opened and closed the file before SQLite did, dropping the
    POSIX locks of the process's connections already open on it: the next other process
    to close the file deleted the WAL the first store went on writing into."""
    path = tmp_path / FILENAME
    first = FeedStore(path)
    second = FeedStore(path)
    try:
        assert _meta_elsewhere(path) == 0
        assert Path(f"{path}-wal").exists()
        first._db.execute("INSERT INTO meta (key, value) VALUES ('probe', 1)")
        first._db.commit()
        assert _meta_elsewhere(path) == 1
    finally:
        second.close()
        first.close()


async def test_a_caller_s_text_an_earlier_version_kept_whole_is_read_back_cut(
    tmp_path: Path,
) -> None:
    """An upgrade (issue 16): the earlier version stored a caller's name and
    number whole (a 4,000-character name in every event); the feed now serves
    them cut as its OpenAPI document bounds them (``maxLength``), as new events
    are cut where they enter."""
    old = EventFeed.open(tmp_path)
    name, number = "Ж" * 4000, "7" * 100
    old.publish(
        "ringing",
        "101",
        {"caller": number, "caller_name": name, "did": number, "answered": False},
        call_id="c1",
    )
    old.publish("transferred", "101", {"target": number, "caller": "79161234567"})
    await old.aclose()

    feed = EventFeed.open(tmp_path)
    ringing, transferred = feed.read(0).events
    assert ringing.data == {
        "caller": "7" * 63 + "…",
        "caller_name": "Ж" * 499 + "…",
        "did": "7" * 63 + "…",
        "answered": False,
    }
    assert transferred.data == {"target": "7" * 63 + "…", "caller": "79161234567"}
    await feed.aclose()


def test_memory_holds_events_max_and_at_most_a_third_more_of_dropped_ones() -> None:
    """The ring's dropped head is let go now and then: it waited until it was half
    of the list, so a full feed held up to twice ``[api] events_max`` events (the
    soak's feed of 10,000 held 18,252), while docs/api.md sizes memory by
    ``events_max``. A third at most now, moved out in amortized constant time."""
    feed = EventFeed(clock=Clock(), max_events=6000)
    held = 0
    for n in range(40_000):
        feed.publish("ringing", "101", {"n": n})
        held = max(held, len(feed._events))
    assert len(feed) == 6000
    assert held <= 6000 + 6000 // 3 + 1, held
    assert [e.data["n"] for e in feed.read(0).events][:1] == [34_000]


async def test_a_feed_another_process_holds_locked_is_left_as_it_is(tmp_path: Path) -> None:
    """A lock held past the busy timeout at start (a second callrouter on
    this state_dir, an sqlite3 shell in a transaction) read as an unreadable
    file: the sound database was set aside and its -wal, with the events not
    yet checkpointed, deleted."""
    feed = EventFeed.open(tmp_path)
    cursor = feed.publish("ringing", "101", {})
    await feed.aclose()
    # An sqlite3 shell's `PRAGMA locking_mode=EXCLUSIVE` after a write: even a
    # read of the WAL file waits for it.
    holder = sqlite3.connect(tmp_path / FILENAME, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE held (x)")
    holder.execute("COMMIT")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="another process holds") as raised:
            EventFeed.open(tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(tmp_path / FILENAME) in str(raised.value)
    assert not [p.name for p in os.scandir(tmp_path) if "unreadable" in p.name]
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == [cursor]
    await again.aclose()


def test_the_rows_json_is_json_dumps_with_default_str() -> None:
    """The store encodes each row's data with one encoder made once (issue 16:
    a BLF flood writes thousands of rows a second): the text ``json.dumps(data,
    default=str)`` gives, and a value that fails leaves the next one unharmed."""
    import datetime

    from router.api.feed import json_dumps_default_str

    dumps = json_dumps_default_str()
    values: list[Any] = [
        {"device": "PJSIP/101", "state": "inuse"},
        {"caller": "Пётр", "card": {"id": 1, "tags": ["a", None, 1.5, True]}, "n": float("nan")},
        {"at": datetime.date(2026, 12, 7), 1: 2, None: "x"},
        "text",
        [],
    ]
    for value in values:
        assert dumps(value) == json.dumps(value, default=str)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    for _ in range(2):
        with pytest.raises(ValueError, match="Circular reference"):
            dumps(loop)
        shared = ["same"]  # met twice, not in a loop: no circularity
        assert dumps({"a": shared, "b": shared}) == '{"a": ["same"], "b": ["same"]}'


# A BLF flood (issue 16): a full feed drops superseded device and presence states first.


def _device(feed: EventFeed, extension: str, state: str, device: str | None = None) -> int:
    return feed.publish(
        "device", extension, {"device": device or f"PJSIP/{extension}", "state": state}
    )


def _read_all(feed: EventFeed, after: int, visible: Any = None) -> tuple[list[FeedEvent], bool]:
    """Every event after ``after`` page by page, and whether any page said gap."""
    found: list[FeedEvent] = []
    gap = False
    while True:
        page = feed.read(after, visible or (lambda extension: True), limit=7)
        found += page.events
        gap = gap or page.gap
        if not page.events:
            return found, gap
        after = page.cursor


def _last_states(events: list[FeedEvent]) -> dict[tuple[str, str | None, str], str]:
    states: dict[tuple[str, str | None, str], str] = {}
    for event in events:
        if event.kind == "device":
            states[(event.kind, event.extension, event.data["device"])] = event.data["state"]
        elif event.kind == "presence":
            states[(event.kind, event.extension, event.data["context"])] = event.data["state"]
    return states


def test_a_device_flood_drops_superseded_states_first_and_keeps_the_calls_events() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=50)
    before = feed.position()
    clock.now += 1
    ringing = feed.publish("ringing", "101", {"caller": "+7"}, call_id="1.1")
    for n in range(2_000):  # all phones re-register: 5 devices, 400 states each
        extension = str(101 + n % 5)
        state = ("unavailable", "not_inuse", "inuse")[n % 3]
        _device(feed, extension, state)
        feed.publish(
            "presence", extension, {"state": state, "status_text": "", "context": "internal"}
        )
    hangup = feed.publish("hangup", "101", {}, call_id="1.1")
    whole = feed.read(before, limit=1_000)
    assert len(feed) == 50

    events, gap = _read_all(feed, before)
    assert not gap  # only superseded states were dropped: the view converges
    assert [e.cursor for e in events if e.kind in ("ringing", "hangup")] == [ringing, hangup]
    assert [e.cursor for e in events] == sorted({e.cursor for e in events})  # once each, in order
    assert events == list(whole.events)  # pages or one read: the same
    # The last state of each device and hint is kept, the latest one published.
    last = {str(101 + n % 5): ("unavailable", "not_inuse", "inuse")[n % 3] for n in range(2_000)}
    assert _last_states(events) == {
        **{("device", ext, f"PJSIP/{ext}"): state for ext, state in last.items()},
        **{("presence", ext, "internal"): state for ext, state in last.items()},
    }
    # What was dropped is no gap for anyone, scoped or not.
    assert not feed.read(before, only("101")).gap
    assert not feed.read(ringing, only("103")).gap
    # The ring's memory stays bounded by max_events (holes compacted away).
    assert len(feed._events) <= 2 * (50 + 1024)  # 4,000 published
    assert len(feed._superseded) <= 50
    assert len(feed._latest) <= 50


def test_a_flood_of_more_devices_than_the_feed_holds_drops_the_oldest_with_a_gap() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=20)
    before = feed.position()
    clock.now += 1
    ringing = feed.publish("ringing", "101", {}, call_id="1.1")
    for n in range(60):  # each device once: nothing supersedes anything
        _device(feed, str(200 + n), "inuse")
    events, gap = _read_all(feed, before)
    assert gap
    assert ringing not in [e.cursor for e in events]
    assert [e.extension for e in events] == [str(200 + n) for n in range(40, 60)]
    assert feed.read(before, only("101")).gap  # the call's reader is told
    assert feed.read(before, only("200")).gap  # so is the reader of a device's last state
    assert not feed.read(before, only("259")).gap
    assert len(feed._latest) <= 20


def test_a_devices_last_state_dropped_is_a_gap_even_when_older_ones_were_superseded() -> None:
    """Superseded states go first; once none is left the oldest go as before,
    the last state of a device among them, and its readers are told."""
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=4)
    before = feed.position()
    clock.now += 1
    _device(feed, "101", "inuse")
    last_101 = _device(feed, "101", "not_inuse")
    _device(feed, "102", "inuse")
    _device(feed, "103", "inuse")
    _device(feed, "104", "inuse")  # full: 101's first state goes, superseded
    assert not feed.read(before, only("101")).gap
    assert [e.cursor for e in feed.read(before, only("101")).events] == [last_101]
    _device(feed, "105", "inuse")  # none superseded: the oldest, 101's last state
    page = feed.read(before, only("101"))
    assert page.gap
    assert page.events == ()
    assert not feed.read(before, only("102")).gap


def test_a_state_is_superseded_only_by_the_same_device_or_hint() -> None:
    """Two devices of one extension, one extension's hints in two contexts, and
    events of other kinds are kept apart: none supersedes another."""
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=6)
    before = feed.position()
    clock.now += 1
    kept = [
        _device(feed, "101", "inuse", "PJSIP/101"),
        _device(feed, "101", "inuse", "PJSIP/101-mobile"),
        feed.publish("presence", "101", {"state": "inuse", "context": "internal"}),
        feed.publish("presence", "101", {"state": "inuse", "context": "office"}),
        feed.publish("dnd", "101", {"enabled": True}),
        feed.publish("dnd", "101", {"enabled": False}),  # not a state the feed supersedes
    ]
    assert [e.cursor for e in feed.read(before).events] == kept
    newer = _device(feed, "101", "not_inuse", "PJSIP/101-mobile")
    # Only the mobile's first state had a newer one: it goes, no gap.
    page = feed.read(before)
    assert [e.cursor for e in page.events] == [kept[0], *kept[2:], newer]
    assert not page.gap


def test_a_superseded_state_is_dropped_for_a_scoped_reader_without_a_gap() -> None:
    """A reader scoped to 101 behind a flood of 102's states, and 101's own states
    superseded: no gap, its last state and its call's event are there; the
    other extension's readers learn nothing of 101's."""
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=10)
    before = feed.position()
    clock.now += 1
    call = feed.publish("ringing", "101", {}, call_id="1.1")
    for n in range(100):
        _device(feed, "101" if n % 10 == 0 else "102", str(n))
    mine, gap = _read_all(feed, before, only("101"))
    assert not gap
    assert [(e.kind, e.data.get("state")) for e in mine] == [("ringing", None), ("device", "90")]
    assert mine[0].cursor == call
    theirs, gap = _read_all(feed, before, only("102"))
    assert not gap
    assert {e.extension for e in theirs} == {"102"}
    assert theirs[-1].data["state"] == "99"


def test_a_superseded_state_expired_by_age_is_no_gap() -> None:
    """Issue 16: the size bound dropped a superseded state without a gap, but
    expiry after ``retention`` counted it: a reader behind a state an hour
    old, whose device had a newer one kept, was told of a gap and refreshed
    its whole view for nothing. A device's last state expiring is a gap still."""
    clock = Clock()
    feed = EventFeed(clock=clock, retention=60.0)
    before = feed.position()
    clock.now += 1
    _device(feed, "101", "inuse")
    _device(feed, "102", "inuse")  # 102's only state: its expiry is a gap
    clock.now += 30
    newer = _device(feed, "101", "not_inuse")
    clock.now += 40  # the first two expire; 101's newer state is kept
    page = feed.read(before, only("101"))
    assert not page.gap
    assert [e.cursor for e in page.events] == [newer]
    assert feed.read(before, only("102")).gap
    assert feed.read(before).gap  # an unscoped reader may see 102's
    clock.now += 40  # 101's last state expires too: a gap for its reader
    assert feed.read(before, only("101")).gap


async def test_a_superseded_state_expired_by_age_is_no_gap_after_a_restart(
    tmp_path: Path,
) -> None:
    """The file's rows older than ``retention`` at a start: a state a newer
    one of its device supersedes is no gap either (issue 16); a device's last
    state among them is one, and so is any other event."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, retention=60.0, clock=clock)
    before = feed.position()
    clock.now += 1
    _device(feed, "101", "inuse")
    _device(feed, "101", "ringing")
    _device(feed, "102", "inuse")
    feed.publish("ringing", "103", {}, call_id="1.1")
    clock.now += 30
    newer = _device(feed, "101", "not_inuse")
    await feed.aclose()
    clock.now += 40  # down meanwhile: the first four are past retention at the start
    again = EventFeed.open(tmp_path, retention=60.0, clock=clock)
    try:
        page = again.read(before, only("101"))
        assert not lost_gap(again, before, only("101"))
        assert page.gap  # the restart, everyone's
        assert [e.cursor for e in page.events] == [newer]
        assert lost_gap(again, before, only("102"))
        assert again.read(before, only("102")).gap
        assert lost_gap(again, before, only("103"))
        assert again.read(before, only("103")).gap
    finally:
        await again.aclose()


async def test_a_restart_reads_back_the_feed_as_it_was_after_superseded_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows of superseded states the ring dropped are deleted with the next
    batch: the file reads back what memory held, nothing more, nothing less."""
    monkeypatch.setattr("router.api.feed._PRUNE_EVERY", 7)
    clock = Clock()
    feed = EventFeed.open(tmp_path, max_events=30, clock=clock)
    store = feed._store
    assert store is not None
    before = feed.position()
    clock.now += 1
    feed.publish("ringing", "101", {}, call_id="1.1")
    for n in range(300):
        _device(feed, str(101 + n % 4), str(n))
        if n % 10 == 0:  # batches written meanwhile (fewer queued than max_events)
            await asyncio.wrap_future(store._pool.submit(lambda: None))  # after the flush
        if n % 50 == 0:
            feed.publish("answered", "101", {"n": n}, call_id="1.1")
    memory = feed.read(before, limit=1_000)
    assert not memory.gap
    await feed.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / FILENAME)) as db:
        rows = [r[0] for r in db.execute("SELECT cursor FROM events ORDER BY cursor")]
    kept = [e.cursor for e in memory.events]
    assert rows[-len(kept) :] == kept  # what is before them is pruned with the head
    assert all(row < kept[0] for row in set(rows) - set(kept))  # no superseded one
    again = EventFeed.open(tmp_path, max_events=30, clock=clock)
    reread = again.read(before, limit=1_000)
    assert reread.events == memory.events
    assert not lost_gap(again, before, _everything)
    assert reread.gap  # the restart
    # The index is rebuilt: the next state drops the oldest superseded one again.
    _device(again, "101", "after")
    after = again.read(before, limit=1_000)
    assert not lost_gap(again, before, _everything)
    assert after.gap  # the restart
    assert not again.read(reread.cursor, limit=1_000).gap
    assert [e.kind for e in after.events][:2] == ["ringing", "answered"]
    await again.aclose()


def stall_writes(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every FeedStore's writes wait (a disk that takes none) until the gate
    returned is set."""
    write = FeedStore._write
    gate = threading.Event()

    def held(self: FeedStore, *args: Any) -> bool:
        gate.wait(10)
        return write(self, *args)

    monkeypatch.setattr(FeedStore, "_write", held)
    return gate


async def test_a_pruning_keeps_the_record_of_events_a_stalled_disk_never_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: events queued past ``max_pending`` while the disk took no writes
    are recorded as dropped for their extension, so a reader resuming from
    before them after a restart is told of a gap. The next pruning rewrote the
    dropped table from the ring's own map, which knows nothing of them (they
    were still in the ring): the record went, and after a restart a reader
    missed the calls silently."""
    monkeypatch.setattr("router.api.feed._PRUNE_EVERY", 5)
    gate = stall_writes(monkeypatch)
    clock = Clock()
    feed = EventFeed.open(tmp_path, max_events=100, clock=clock)
    store = feed._store
    assert store is not None
    store._max_pending = 3
    before = feed.position()
    clock.now += 1
    calls = [feed.publish("ringing", "101", {"n": n}, call_id=f"1.{n}") for n in range(8)]
    gate.set()  # the disk takes writes again: the first 4 or 5 calls were never written
    await asyncio.wrap_future(store._pool.submit(lambda: None))
    for n in range(10):  # on to a pruning (the ring's head still the first call)
        feed.publish("answered", "102", {"n": n}, call_id="2.1")
    await feed.aclose()
    again = EventFeed.open(tmp_path, max_events=100, clock=clock)
    page = again.read(before, only("101"), limit=1_000)
    missed = [c for c in calls if c not in {e.cursor for e in page.events}]
    assert missed  # the disk's stall lost some
    assert page.gap
    await again.aclose()


def test_unwritten_events_of_ever_new_extensions_are_recorded_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: while the disk took no writes, each event queued past
    ``max_pending`` kept its extension's entry until the disk came back: a
    flood of ever new devices (a hostile AMI peer's) grew it without bound.
    Past ``_MAX_DROPPED`` extensions they fold into the file's floor, as the
    ring's own record does, and every reader behind it is told of a gap."""
    monkeypatch.setattr("router.api.feed._MAX_DROPPED", 20)
    gate = stall_writes(monkeypatch)
    store = FeedStore(tmp_path / FILENAME, max_pending=2)
    clock = Clock()
    base = int(clock() * 1_000_000) - 1_000
    largest = 0
    for n in range(1, 200):
        store.append(FeedEvent(base + n, "device", f"x{n}", None, clock.now))
        largest = max(largest, len(store._unwritten))
    assert largest <= 21
    gate.set()
    store.close()
    feed = EventFeed.open(tmp_path, clock=clock)
    assert feed.read(base, only("x5")).gap  # folded into the floor
    assert feed.read(base, only("x196")).gap  # recorded apart, or folded
    page = feed.read(base + 198, only("x199"))
    assert [e.extension for e in page.events] == ["x199"]
    assert not lost_gap(feed, base + 198, only("x199"))
    assert page.gap  # the restart: told to every reader behind it
    asyncio.run(feed.aclose())


def test_events_a_stall_folded_stay_recorded_when_a_pruning_rides_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the unwritten events folded into a floor (more extensions than
    ``_MAX_DROPPED``) are written with the batch; a pruning in the same batch
    (every ``_PRUNE_EVERY`` publications) put its own floor, the ring's, in
    that value's place, and the record of the stall was lost: a reader
    resuming from before the events after a restart missed them without a gap."""
    monkeypatch.setattr("router.api.feed._MAX_DROPPED", 20)
    gate = stall_writes(monkeypatch)
    store = FeedStore(tmp_path / FILENAME, max_pending=2)
    clock = Clock()
    base = int(clock() * 1_000_000) - 1_000
    for n in range(1, 100):
        store.append(FeedEvent(base + n, "device", f"x{n}", None, clock.now))
    # The ring's pruning: nothing of its own dropped (floor 0, no extension).
    store.append(FeedEvent(base + 100, "device", "x100", None, clock.now), prune=(base, 0, {}))
    assert store._unwritten_floor
    gate.set()
    store.close()
    feed = EventFeed.open(tmp_path, clock=clock)
    assert feed.read(base, only("x5")).gap  # never written: folded into the floor
    asyncio.run(feed.aclose())


def test_a_file_recording_more_extensions_than_the_bound_starts_folded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: a dropped table of more than ``_MAX_DROPPED`` extensions (an
    older build's, a stall's, a tampered file's) was kept whole at start, each
    read walking all of it until the next drop; it folds into the floor now,
    and every reader behind it is told of a gap."""
    monkeypatch.setattr("router.api.feed._MAX_DROPPED", 20)
    clock = Clock()
    base = int(clock() * 1_000_000) - 1_000
    feed = EventFeed(clock=clock, dropped={f"x{n}": base + n for n in range(21)})
    assert not feed._dropped
    assert feed.read(base, only("x3")).gap
    after = feed.publish("ringing", "x3", {})
    assert after > base + 20
    assert not feed.read(base + 20, only("x3")).gap


async def test_a_reader_woken_by_each_event_of_a_flood_looks_at_the_new_drops_only() -> None:
    """Issue 16: a BLF flood of ever new devices (a hostile AMI peer's) fills the
    record of what was dropped with 10,000 extensions, and a waiting reader,
    woken by every event, asked each of them whether it may see it at each
    wake: 10 readers of one extension took 500 us an event, 100 readers 4.5 ms
    (a core at 220 events a second). It looks at the drops since its last look."""
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=1_000)
    for n in range(10_900):  # 9,900 dropped, each of its own extension
        feed.publish("device", f"x{n}", {"device": f"PJSIP/x{n}", "state": "inuse"})
    assert len(feed._dropped) == 9_900
    asked = 0

    def mine(extension: str | None) -> bool:
        nonlocal asked
        asked += 1
        return extension == "101"

    start = feed.position()
    waiting = asyncio.create_task(feed.wait(start, mine, timeout=60))
    await asyncio.sleep(0)
    asked = 0
    for n in range(100):  # each event its own wake
        feed.publish("device", f"y{n}", {"device": f"PJSIP/y{n}", "state": "inuse"})
        await asyncio.sleep(0)
    assert not waiting.done()
    # Each wake: the new event scanned, the one drop it made looked at.
    assert asked <= 100 * 3, asked
    call = feed.publish("ringing", "101", {}, call_id="1.1")
    page = await waiting
    assert [e.cursor for e in page.events] == [call]
    assert not page.gap


async def test_a_reader_that_keeps_up_asks_no_extensions_record_at_each_page() -> None:
    """Issue 16: each read and each wait asked every extension in the record of
    what was dropped (up to 10,000 under a flood of ever new devices) whether
    the reader may see it, though nothing was dropped past the reader's cursor:
    a stream that keeps up reads a page per wake, and 10 of them took 590 us
    an event of such a flood (25 us with a record of few extensions)."""
    clock = Clock()
    feed = EventFeed(clock=clock, max_events=1_000)
    for n in range(10_900):  # 9,900 dropped, each of its own extension
        feed.publish("device", f"x{n}", {"device": f"PJSIP/x{n}", "state": "inuse"})
    assert len(feed._dropped) == 9_900
    asked = 0

    def everything(extension: str | None) -> bool:
        nonlocal asked
        asked += 1
        return True

    cursor = feed.read(0, everything, limit=1_000).cursor  # behind: a gap, once
    asked = 0
    published = []
    for n in range(50):
        waiting = asyncio.create_task(feed.wait(cursor, everything, timeout=60))
        await asyncio.sleep(0)
        published.append(feed.publish("device", f"y{n}", {"device": f"PJSIP/y{n}"}))
        page = await waiting
        assert [e.cursor for e in page.events] == published[-1:]
        assert not page.gap
        page = feed.read(page.cursor, everything)
        assert not page.events
        assert not page.gap
        cursor = page.cursor
    # Each page: its event, and the one drop it made looked at.
    assert asked <= 50 * 4, asked


async def flushed(feed: EventFeed) -> None:
    """Wait until the feed's writer has flushed what was published so far (its
    one worker thread runs the flushes in turn), not for a wall-clock time."""
    store = feed._store
    assert store is not None
    await asyncio.wrap_future(store._pool.submit(lambda: None))


async def test_a_batch_the_file_refuses_is_recorded_as_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a batch the file refused with an error no retry helps (no
    lock: a damaged page, a value SQLite cannot bind) was dropped with its
    record, logged and forgotten: after a restart a reader resuming from
    before its events missed them without a gap, which docs/api.md says a
    reader is always told. Recorded as dropped as a stall's events are;
    only the readers who could see them are told."""
    write = FeedStore._write
    refused: list[int] = []

    def refusing(self: FeedStore, batch: list[FeedEvent], *args: Any) -> bool:
        if any(e.extension == "101" for e in batch) and not refused:
            refused.append(len(batch))
            raise sqlite3.DatabaseError("database disk image is malformed")
        return write(self, batch, *args)

    monkeypatch.setattr(FeedStore, "_write", refusing)
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    before = feed.publish("ringing", "103", {})
    await flushed(feed)  # written, in a batch of its own
    clock.now += 0.001
    lost = feed.publish("ringing", "101", {})
    clock.now += 0.001
    feed.publish("ringing", "102", {})
    await flushed(feed)
    assert refused
    # This run's readers still get it from the ring.
    assert lost in [e.cursor for e in feed.read(before, only("101")).events]
    clock.now += 0.001
    after = feed.publish("ringing", "101", {})
    await feed.aclose()
    again = EventFeed.open(tmp_path, clock=clock)
    page = again.read(before, only("101"))
    assert page.gap
    assert lost not in [e.cursor for e in page.events]
    assert after in [e.cursor for e in page.events]
    assert not lost_gap(again, lost, only("101"))
    assert again.read(lost, only("101")).gap  # the restart
    assert not lost_gap(again, before, only("103"))  # 101's loss is not 103's
    assert again.read(before, only("103")).gap  # the restart is everyone's
    await again.aclose()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "recorded as dropped" in errors[0]


def test_a_file_that_refuses_every_batch_is_not_retried_in_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The record of a refused batch is written with the next batch; a file
    that refuses that too keeps the record (bounded) for the next flush, and
    says so once, not once a batch."""
    calls: list[int] = []

    def refusing(self: FeedStore, batch: list[FeedEvent], *args: Any) -> bool:
        calls.append(len(batch))
        raise sqlite3.DatabaseError("database disk image is malformed")

    store = FeedStore(tmp_path / FILENAME)
    monkeypatch.setattr(FeedStore, "_write", refusing)
    clock = Clock()
    base = int(clock() * 1_000_000)
    for n in range(1, 4):
        store.append(FeedEvent(base + n, "ringing", f"x{n}", None, clock.now))
        store._pool.submit(lambda: None).result()  # the flush is done
    # Each publication: its batch, then the record once more; never a loop.
    assert 3 <= len(calls) <= 6
    assert store._unwritten == {"x1": base + 1, "x2": base + 2, "x3": base + 3}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    monkeypatch.undo()
    store.close()
    feed = EventFeed.open(tmp_path, clock=clock)
    assert feed.read(base, only("x2")).gap  # the record written at last, at stop
    asyncio.run(feed.aclose())


def _run_with_a_refused_pruning(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *, refuse: bool, more: int
) -> tuple[list[int], int, list[tuple[str, int]]]:
    """Publish 101's calls into a feed of 4 places (the ring drops), one 102
    event riding each pruning (every 5 publications); with ``refuse`` the
    file refuses the batch of the first pruning (a bind error, no lock).
    Then ``more`` publications, a stop, a restart: 101's cursors published,
    the first 102 cursor, and (extension, cursor) of every row in the file."""
    write = FeedStore._write
    refused: list[int] = []

    def refusing(self: FeedStore, batch: list[FeedEvent], prune: Any, *args: Any) -> bool:
        if refuse and prune is not None and not refused:
            refused.append(len(batch))
            raise sqlite3.InterfaceError("Error binding parameter 1: type 'X' is not supported")
        return write(self, batch, prune, *args)

    monkeypatch.setattr("router.api.feed._PRUNE_EVERY", 5)
    with monkeypatch.context() as patched:
        patched.setattr(FeedStore, "_write", refusing)
        clock = Clock()
        feed = EventFeed.open(folder, max_events=4, clock=clock)
        store = feed._store
        assert store is not None
        calls: list[int] = []
        first_102 = 0
        for n in range(4 + more):
            clock.now += 0.001
            if n == 4:  # the fifth publication carries the pruning
                first_102 = feed.publish("ringing", "102", {"n": n})
            else:
                calls.append(feed.publish("ringing", "101", {"n": n}, call_id=f"1.{n}"))
            store._pool.submit(lambda: None).result()  # each its own batch
        assert bool(refused) is refuse
        asyncio.run(feed.aclose())
    db = sqlite3.connect(folder / FILENAME)
    try:
        rows = db.execute("SELECT extension, cursor FROM events ORDER BY cursor").fetchall()
    finally:
        db.close()
    return calls, first_102, rows


def test_a_pruning_the_file_refused_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pruning that rides on a batch the file refuses is not kept (issue 16,
    checked): the rows it would delete stay in the file, read back at a
    restart before the next pruning, and that one says all it said. Nothing
    is lost, none is served twice, and no gap is told for events the file
    still holds; the refused batch's own event is told as a gap to its
    extension's readers only."""
    seen = {}
    for refuse in (False, True):
        for more in (3, 11):
            folder = tmp_path / f"{refuse}-{more}"
            folder.mkdir()
            calls, first_102, rows = _run_with_a_refused_pruning(
                folder, monkeypatch, refuse=refuse, more=more
            )
            feed = EventFeed.open(folder, max_events=100, clock=Clock())
            page = feed.read(calls[0] - 1, only("101"), limit=1_000)
            other = feed.read(first_102 - 1, only("102"), limit=1_000)
            # The restart itself is a blind stretch every reader behind it is
            # told; the gaps below are those of events dropped (lost_gap).
            assert page.gap
            assert other.gap
            seen[refuse, more] = (
                calls,
                [e.cursor for e in page.events],
                lost_gap(feed, calls[0] - 1, only("101")),
                [e.cursor for e in other.events],
                lost_gap(feed, first_102 - 1, only("102")),
                rows,
                first_102,
            )
            asyncio.run(feed.aclose())
    # Restarted before the next pruning: the first call, which the refused
    # pruning would have deleted (the ring had dropped it), is read back, no gap.
    calls, got, gap, got_102, gap_102, _rows, _first = seen[True, 3]
    assert got == calls
    assert not gap
    assert (got_102, gap_102) == ([], True)
    calls, got, gap, got_102, gap_102, _rows, first_102 = seen[False, 3]
    assert (got, gap) == (calls[1:], True)
    assert (got_102, gap_102) == ([first_102], False)
    # The next pruning came: the file and a reader of 101 are as with no refusal.
    assert seen[True, 11][:3] == seen[False, 11][:3]
    assert seen[True, 11][5] == seen[False, 11][5]
    assert len(set(seen[True, 11][1])) == len(seen[True, 11][1])


# -- stretches the router saw nothing in (issue 16) -----------------------------------------
#
# A 1C developer's trial: a telephony panel resumed its cursor after a callrouter
# restart, got the new run's events with gap false, and kept showing 101 on a call
# that had ended while callrouter was stopped. The feed tells those stretches.


def drain(feed: EventFeed, after: int, visible: Visible = _everything, limit: int = 2):  # type: ignore[no-untyped-def]
    """Every page from ``after`` until one comes back empty: the events' cursors,
    the gap flag of each page, and the cursor to go on from."""
    got: list[int] = []
    gaps: list[bool] = []
    while True:
        page = feed.read(after, visible, limit=limit)
        got += [e.cursor for e in page.events]
        gaps.append(page.gap)
        after = page.cursor
        if not page.events:
            return got, gaps, after


async def test_a_reader_from_before_a_restart_is_told_the_gap_once_and_loses_nothing(
    tmp_path: Path,
) -> None:
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    behind = feed.position()  # a reader caught up at the old run's end: still behind it
    clock.now += 1
    old = [feed.publish("ringing", "101", {"n": n}) for n in range(5)]
    caught_up = feed.read(old[-1]).cursor
    await feed.aclose()
    clock.now += 30  # stopped: calls rang and ended meanwhile
    again = EventFeed.open(tmp_path, clock=clock)
    clock.now += 1
    new = [again.publish("hangup", "101", {"n": n}) for n in range(3)]
    got, gaps, _ = drain(again, behind)
    assert got == old + new  # each once, in order
    # Told on the page that passes the restart (old[4] with new[0]), not before
    # it (a refresh then would be overwritten by old events after it), once.
    assert gaps == [False, False, True, False, False]
    assert again.read(caught_up).gap
    assert [e.cursor for e in again.read(caught_up).events] == new
    assert not lost_gap(again, behind, _everything)  # nothing the feed had was dropped
    await again.aclose()


async def test_a_reader_after_the_restart_is_told_nothing(tmp_path: Path) -> None:
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    feed.publish("ringing", "101", {})
    await feed.aclose()
    clock.now += 30
    again = EventFeed.open(tmp_path, clock=clock)
    clock.now += 1
    start = again.position()  # a reader that came in this run (no cursor: from now)
    event = again.publish("answered", "101", {})
    page = again.read(start)
    assert ([e.cursor for e in page.events], page.gap) == ([event], False)
    assert not again.read(page.cursor).gap
    await again.aclose()


async def test_the_restart_is_told_to_every_scope_and_tells_none_anything_else(
    tmp_path: Path,
) -> None:
    """The stretch is everyone's: a token scoped to 103, which saw nothing of the
    101 events around it, is told it too; the cursor it gets is the clock (or the
    restart's mark, which is the clock at the start), never 101's event."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    behind = feed.position()
    clock.now += 1
    feed.publish("ringing", "101", {})
    await feed.aclose()
    clock.now += 30
    again = EventFeed.open(tmp_path, clock=clock)
    restart = int(clock.now * 1_000_000) - 1
    clock.now += 1
    theirs = again.publish("hangup", "101", {})
    clock.now += 1
    page = again.read(behind, only("103"))
    assert (page.events, page.gap) == ((), True)
    assert page.cursor == int(clock.now * 1_000_000) != theirs
    assert not again.read(page.cursor, only("103")).gap
    assert again.read(restart - 1, only("103")).gap
    assert not again.read(restart, only("103")).gap  # the mark itself is past it
    await again.aclose()


async def test_a_crash_without_a_clean_stop_is_a_gap_too(tmp_path: Path) -> None:
    """No stop written (a kill -9): the start's mark is above the reservation the
    crashed run synced, so every cursor it handed out is behind it, even with
    the clock set back meanwhile."""
    clock = Clock()
    feed = EventFeed.open(tmp_path, clock=clock)
    clock.now += 1
    written = [feed.publish("ringing", "101", {}) for _ in range(3)]
    await flushed(feed)
    handed = feed.position()
    assert feed._store is not None
    feed._store.abandon()  # nothing more written: as a crash leaves it
    clock.now -= 5  # and the clock set back before the next start
    again = EventFeed.open(tmp_path, clock=clock)
    page = again.read(handed)
    assert page.gap
    assert not again.read(page.cursor).gap
    got, gaps, _ = drain(again, written[0] - 1, limit=10)
    assert got == written
    assert gaps == [True, False]
    later = again.publish("hangup", "101", {})
    assert later > page.cursor > handed
    await again.aclose()


async def test_a_lost_ami_stream_is_a_gap_for_every_reader_behind_its_end() -> None:
    clock = Clock()
    feed = EventFeed(clock=clock)
    before = feed.position()
    clock.now += 1
    first = feed.publish("ringing", "101", {})
    clock.now += 1
    during = feed.position()  # handed out while the stream was lost
    clock.now += 5
    mark = feed.blind()
    assert mark == int(clock.now * 1_000_000)
    after = feed.position()
    clock.now += 1
    second = feed.publish("answered", "101", {})
    assert second > mark
    for cursor, scope in ((before, _everything), (during, _everything), (before, only("103"))):
        page = feed.read(cursor, scope)
        assert page.gap
        assert not feed.read(page.cursor, scope).gap  # once
    got, gaps, _ = drain(feed, before, limit=1)
    assert got == [first, second]
    assert gaps == [False, True, False]  # on the page that passes the end
    page = feed.read(after)
    assert ([e.cursor for e in page.events], page.gap) == ([second], False)


async def test_a_waiting_reader_is_woken_by_a_lost_stream() -> None:
    """A long poll behind it answers when the stream comes back, whatever its
    scope, not at its timeout: the panel refreshes at once."""
    feed = EventFeed()
    start = feed.position()
    waiting = asyncio.create_task(feed.wait(start, only("103"), timeout=30))
    await asyncio.sleep(0)
    assert not waiting.done()
    feed.blind()
    page = await asyncio.wait_for(waiting, 5)
    assert (page.events, page.gap) == ((), True)
    # Behind it, a poll answers at once; past it, it waits as usual.
    assert (await asyncio.wait_for(feed.wait(start, timeout=30), 5)).gap
    assert not (await feed.wait(page.cursor, timeout=0.01)).gap


def test_marks_past_the_bound_fold_into_the_later_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flapping Asterisk: marks are bounded; a reader behind a folded one is
    told at the next, later (never earlier than the stretch ended)."""
    monkeypatch.setattr("router.api.feed._MAX_BLIND", 2)
    clock = Clock()
    feed = EventFeed(clock=clock)
    before = feed.position()
    marks = []
    for _ in range(4):
        clock.now += 1
        feed.publish("ringing", "101", {})
        clock.now += 1
        marks.append(feed.blind())
    assert len(feed._blind) == 2
    got, gaps, _ = drain(feed, before, limit=1)
    assert len(got) == 4
    # The first two folded: told at the third (the page of the fourth event)
    # rather than at their own ends; the fourth at its own.
    assert gaps == [False, False, False, True, True]
    page = feed.read(marks[-1])
    assert not page.gap
