"""The event feed and the recordings catalog written back when deleted or
replaced while callrouter runs (issue 16), as the 1C plugin's history file is.

Before, a WARNING said once that the file open was one the next start no longer
finds: the feed's events (clients resuming got a gap) and the catalog (the
recordings not yet delivered, the files retention deletes) were lost at the
restart. Now the file is written again from the one open, a file put in its
place moved aside as ``NAME.replaced-TIME``, and the WARNING says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pytest

from router.api.feed import FILENAME, EventFeed
from router.api.settings import ApiSettings
from router.recordings.naming import file_names
from router.recordings.store import (
    DB_NAME,
    Origin,
    RecordingStore,
    catalog_open,
    put_back_catalog,
)
from router.state_file_watch import StateFileWatch, WatchedFile

if TYPE_CHECKING:
    from router.testing import EngineFactory

pytest_plugins = ["router.testing"]

RULES = "version: 1\nrules: []\n"


def delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- the event feed -------------------------------------------------------------------------


async def test_a_deleted_feed_file_is_written_again_with_its_events(tmp_path: Path) -> None:
    feed = EventFeed.open(tmp_path)
    cursors = [feed.publish("ringing", "101", {"n": n}, call_id="c1") for n in range(3)]
    assert await feed.put_back() is None  # where it was: nothing to do
    delete(tmp_path / FILENAME)
    assert await feed.put_back() == "deleted"
    assert (tmp_path / FILENAME).stat().st_mode & 0o777 == 0o600
    cursors.append(feed.publish("answered", "101", {"n": 3}, call_id="c1"))  # goes on there
    await asyncio.sleep(0.1)
    delete(tmp_path / FILENAME)  # again: the file written back is watched as the first
    assert await feed.put_back() == "deleted"
    await feed.aclose()

    again = EventFeed.open(tmp_path)
    page = again.read(0)
    assert [e.cursor for e in page.events] == cursors
    # Nothing written was lost (no cursor was dropped), but callrouter saw
    # nothing while it was stopped: the restart is a gap, told once.
    assert again._lost_after(0, lambda _: True) == 0
    assert page.gap
    assert not again.read(page.cursor).gap
    await again.aclose()


async def test_a_replaced_feed_file_is_moved_aside_and_the_open_one_written_back(
    tmp_path: Path,
) -> None:
    feed = EventFeed.open(tmp_path)
    cursor = feed.publish("ringing", "101", {}, call_id="c1")
    path = tmp_path / FILENAME
    (tmp_path / "backup").write_bytes(b"an older copy")
    (tmp_path / "backup").replace(path)
    assert await feed.put_back() == "replaced"
    await feed.aclose()
    (aside,) = [p for p in os.listdir(tmp_path) if p.startswith(f"{FILENAME}.replaced-")]
    assert (tmp_path / aside).read_bytes() == b"an older copy"
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == [cursor]
    await again.aclose()


async def test_a_feed_file_written_back_but_not_opened_again_loses_no_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the copy fails (a nearly full disk): the events published
    meanwhile wait and go into it once it opens, none lost with a traceback."""
    from router.api.feed import FeedStore

    feed = EventFeed.open(tmp_path)
    cursors = [feed.publish("ringing", "101", {"n": 0}, call_id="c1")]
    await asyncio.sleep(0.1)
    delete(tmp_path / FILENAME)
    connect = FeedStore._connect

    def full(self: FeedStore) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(FeedStore, "_connect", full)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        await feed.put_back()
    cursors.append(feed.publish("answered", "101", {"n": 1}, call_id="c1"))
    await asyncio.sleep(0.3)
    monkeypatch.setattr(FeedStore, "_connect", connect)
    await asyncio.sleep(1.5)  # the write retried: the file opens now
    assert await feed.put_back() is None  # the copy is the file in use, not one put there
    await feed.aclose()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f"{FILENAME}.replaced-")]
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == cursors
    await again.aclose()


# -- the recordings catalog -------------------------------------------------------------------


def start(store: RecordingStore, call_id: str) -> None:
    (name,) = file_names(call_id, "mix", "wav")
    store.start(
        [name],
        pbx_paths=[f"/var/spool/asterisk/monitor/{name}"],
        local_paths=[store.path.parent / str(name)],
        channel="PJSIP/trunk-1",
        origin=Origin("rule", "record"),
    )


def test_a_deleted_catalog_is_written_again_and_every_connection_moves_to_it(
    tmp_path: Path,
) -> None:
    """The recorder, the API and a receiving plugin each have a connection:
    all of them write into the file written back, none into the deleted one."""
    recorder, api = RecordingStore(tmp_path), RecordingStore(tmp_path)
    start(recorder, "1.1")
    path = tmp_path / DB_NAME
    assert put_back_catalog(path) is None
    delete(path)
    assert put_back_catalog(path) == "deleted"
    assert put_back_catalog(path) is None  # once
    assert path.stat().st_mode & 0o777 == 0o600
    start(recorder, "1.2")
    delete(path)  # again: the file written back is watched as the first
    assert put_back_catalog(path) == "deleted"
    start(api, "1.3")
    recorder.close()
    api.close()
    with_restart = RecordingStore(tmp_path)
    assert {r.call_id for r in with_restart.recording()} == {"1.1", "1.2", "1.3"}
    with_restart.close()


def test_a_replaced_catalog_is_moved_aside(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    start(store, "2.1")
    path = tmp_path / DB_NAME
    (tmp_path / "copy").write_bytes(b"a backup copied over it")
    (tmp_path / "copy").replace(path)
    assert put_back_catalog(path) == "replaced"
    store.close()
    (aside,) = tmp_path.glob(f"{DB_NAME}.replaced-*")
    assert aside.read_bytes() == b"a backup copied over it"
    again = RecordingStore(tmp_path)
    assert [r.call_id for r in again.recording()] == ["2.1"]
    again.close()


def test_two_catalogs_replaced_in_the_same_second_are_both_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the name set aside is made of the second
    (``NAME.replaced-TIME``) and was moved there with ``os.replace``: a second
    file put in the place within that second overwrote the first set aside."""
    import router.recordings.store as store_module

    monkeypatch.setattr(store_module.time, "strftime", lambda *_args: "20270101T120000")
    store = RecordingStore(tmp_path)
    start(store, "2.2")
    path = tmp_path / DB_NAME
    for content in (b"the first file put there", b"the second file put there"):
        (tmp_path / "copy").write_bytes(content)
        (tmp_path / "copy").replace(path)
        assert put_back_catalog(path) == "replaced"
    store.close()
    kept = {p.name: p.read_bytes() for p in tmp_path.glob(f"{DB_NAME}.replaced-*")}
    assert kept == {
        f"{DB_NAME}.replaced-20270101T120000": b"the first file put there",
        f"{DB_NAME}.replaced-20270101T120000-2": b"the second file put there",
    }
    again = RecordingStore(tmp_path)
    assert [r.call_id for r in again.recording()] == ["2.2"]
    again.close()


def test_a_closed_catalog_is_not_written_back(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    store.close()
    delete(tmp_path / DB_NAME)
    assert put_back_catalog(tmp_path / DB_NAME) is None
    assert not (tmp_path / DB_NAME).exists()


async def test_the_watch_writes_back_once_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore(tmp_path)
    path = tmp_path / DB_NAME
    watched = WatchedFile(
        path,
        "the recordings catalog",
        put_back=lambda: asyncio.to_thread(put_back_catalog, path),
    )
    watch = StateFileWatch([watched])
    await watch.look()
    delete(path)
    await watch.look()
    await watch.look()
    store.close()
    (said,) = warnings(caplog)
    assert said.startswith(f"{path} was deleted while callrouter ran: written again from ")
    assert path.exists()


async def test_a_write_back_that_fails_is_an_error_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused() -> str | None:
        raise PermissionError("[Errno 13] Permission denied")

    path = tmp_path / DB_NAME
    watch = StateFileWatch([WatchedFile(path, "the recordings catalog", put_back=refused)])
    await watch.look()
    await watch.look()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path} is no longer the file in use")
    assert "Permission denied" in errors[0]
    assert "loses the recordings catalog" in errors[0]


# -- the running engine ------------------------------------------------------------------------


async def test_the_running_engine_writes_its_feed_file_back_also_at_the_stop(
    engine_factory: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    engine = await engine_factory(rules, api=ApiSettings(tokens=MappingProxyType({}), port=0))
    path = engine.state_dir / FILENAME
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.05)
    assert path.exists()
    job = engine.scheduler.get_job("callrouter-state-files")
    assert job is not None
    await job.func()
    delete(path)
    await job.func()  # the next look, due every 5 s
    assert path.exists()
    said = [w for w in warnings(caplog) if "while callrouter ran" in w]
    assert len(said) == 1, said
    assert said[0].startswith(f"{path} was deleted while callrouter ran: written again ")
    delete(path)  # just before the stop: no timed look comes
    await engine.stop()
    assert path.exists()


# -- a file that cannot be looked at ----------------------------------------------------------


def out_of_sight(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """``stat`` of ``path`` fails with EACCES, as after ``chmod 600`` of the state
    folder (the tests run as root, whom permissions do not stop)."""
    real = os.stat

    def stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if os.fspath(target) == os.fspath(path):  # type: ignore[call-overload]
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)


async def test_a_catalog_that_cannot_be_looked_at_is_not_said_deleted_nor_written_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: any ``stat`` failure counted as "deleted": the open file was copied
    over the one still there, and the WARNING said it had been deleted."""
    store = RecordingStore(tmp_path)
    start(store, "3.1")
    path = tmp_path / DB_NAME
    before = path.stat()
    watched = WatchedFile(
        path,
        "the recordings catalog",
        put_back=lambda: asyncio.to_thread(put_back_catalog, path),
    )
    watch = StateFileWatch([watched])
    with monkeypatch.context() as patched:
        out_of_sight(patched, path)
        await watch.look()
        await watch.look()
    after = path.stat()
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # not written over
    assert not [n for n in os.listdir(tmp_path) if n.startswith(f".{DB_NAME}.")]  # no copy
    said = warnings(caplog)
    assert said == [
        f"{path} cannot be looked at: Permission denied; it is not written back while so: "
        "callrouter goes on with the file it has open; give the service's user its state "
        "folder back (docs/operations.md, Troubleshooting)"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await watch.look()  # in sight again, where it was: nothing more to say
    start(store, "3.2")
    store.close()
    assert len(warnings(caplog)) == 1
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"3.1", "3.2"}
    again.close()


# -- the catalog watched only when open --------------------------------------------------------


def test_a_catalog_opened_through_a_path_with_dot_dot_is_written_back(tmp_path: Path) -> None:
    """Before: the open catalogs were looked up by the path as given, stored by
    the absolute one: a ``state_dir`` with ``..`` in it (``../state``) found
    none, and a deleted catalog was never written back, with no word."""
    (tmp_path / "etc").mkdir()
    state = tmp_path / "etc" / ".." / "state"
    store = RecordingStore(state)
    start(store, "4.1")
    assert catalog_open(state / DB_NAME)
    delete(state / DB_NAME)
    assert put_back_catalog(state / DB_NAME) == "deleted"
    store.close()
    assert not catalog_open(state / DB_NAME)
    again = RecordingStore(tmp_path / "state")
    assert [r.call_id for r in again.recording()] == ["4.1"]
    again.close()


def test_a_closed_catalog_leaves_nothing_behind_in_the_table_of_open_ones(tmp_path: Path) -> None:
    """Each path ever opened kept an (empty) entry for the process's life (issue 16)."""
    from router.recordings import store as store_module

    first = RecordingStore(tmp_path / "a")
    second = RecordingStore(tmp_path / "a")
    key = Path(os.path.abspath(tmp_path / "a" / DB_NAME))
    first.close()
    assert key in store_module._OPEN  # the second is open still
    assert catalog_open(tmp_path / "a" / DB_NAME)
    second.close()
    assert key not in store_module._OPEN
    assert not catalog_open(tmp_path / "a" / DB_NAME)


async def test_a_catalog_no_part_has_open_is_not_watched(
    engine_factory: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``[recordings]`` on, the recorder off (``[plugins] disabled = ["recordings"]``): the catalog
    counted as open because it was configured; a file left by an earlier run is
    no file in use, and deleting it is nobody's loss."""
    from router.plugins import Plugins
    from router.recordings.settings import RecordingSettings

    load = Plugins.load

    def without_recorder(**kwargs: Any) -> Plugins:
        return load(**kwargs, disabled=("recordings",))

    monkeypatch.setattr(Plugins, "load", without_recorder)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    engine = await engine_factory(
        rules,
        recordings=RecordingSettings(dir="/var/spool/asterisk/monitor", local_dir=tmp_path),
    )
    path = engine.state_dir / DB_NAME
    RecordingStore(engine.state_dir).close()  # left by an earlier run
    assert engine._state_watch is not None
    (catalog,) = [w for w in engine._state_watch.files if w.path == path]
    assert not catalog.opened()
    store = RecordingStore(engine.state_dir)  # the API lists recordings: open now
    assert catalog.opened()
    store.close()
    assert not catalog.opened()
    delete(path)
    job = engine.scheduler.get_job("callrouter-state-files")
    assert job is not None
    await job.func()
    assert not [w for w in warnings(caplog) if str(path) in w]
    assert not path.exists()


def test_a_catalog_written_back_but_not_opened_again_is_opened_at_its_next_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the copy fails (a nearly full disk): the copy holds every row and
    is the file in use; the next write opens it, not "closed database" for ever."""
    recorder = RecordingStore(tmp_path)
    start(recorder, "4.1")
    path = tmp_path / DB_NAME
    delete(path)
    connect = RecordingStore._connect

    def full(self: RecordingStore) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RecordingStore, "_connect", full)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        put_back_catalog(path)
    with pytest.raises(sqlite3.OperationalError, match="cannot be opened again"):
        start(recorder, "4.2")  # retried by its caller, not a ProgrammingError
    monkeypatch.setattr(RecordingStore, "_connect", connect)
    start(recorder, "4.3")
    assert put_back_catalog(path) is None  # the copy is the file in use, not one put there
    assert not list(tmp_path.glob(f"{DB_NAME}.replaced-*"))
    recorder.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"4.1", "4.3"}
    again.close()


def test_the_next_look_opens_a_catalog_written_back_but_not_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, api = RecordingStore(tmp_path), RecordingStore(tmp_path)
    start(recorder, "5.1")
    path = tmp_path / DB_NAME
    delete(path)
    connect = RecordingStore._connect

    def full(self: RecordingStore) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RecordingStore, "_connect", full)
    with pytest.raises(sqlite3.OperationalError, match="No space left"):
        put_back_catalog(path)  # the watch says it (OSError or sqlite3.Error)
    monkeypatch.setattr(RecordingStore, "_connect", connect)
    assert put_back_catalog(path) == "deleted"  # opened now, and said
    assert put_back_catalog(path) is None
    start(api, "5.2")
    assert {r.call_id for r in recorder.recording()} == {"5.1", "5.2"}
    recorder.close()
    api.close()


# -- the copy that cannot take the file's place -----------------------------------------------


def refuse_swap(monkeypatch: pytest.MonkeyPatch, times: int = 1) -> list[str]:
    """``os.replace`` of the copy onto the file refused ``times`` times (the
    state folder made read-only, an I/O error), as in ``write_back``."""
    import router.recordings.store as store_module

    real = os.replace
    refused: list[str] = []

    def replace(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".") and len(refused) < times:
            refused.append(Path(src).name)
            raise OSError(30, "Read-only file system", str(src))
        real(src, dst)

    monkeypatch.setattr(store_module.os, "replace", replace)
    return refused


def test_a_catalog_whose_copy_cannot_take_its_place_goes_on_in_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connections were closed before the swap: a refused swap left them
    closed, and every use raised ``ProgrammingError`` until the restart. They go
    on in the copy (every row in it), and the next look moves it in place."""
    recorder, api = RecordingStore(tmp_path), RecordingStore(tmp_path)
    start(recorder, "6.1")
    path = tmp_path / DB_NAME
    delete(path)
    refused = refuse_swap(monkeypatch)
    with pytest.raises(OSError, match=r"Read-only file system \(moving \.recordings\.sqlite\.\d+"):
        put_back_catalog(path)
    assert refused
    start(recorder, "6.2")  # no ProgrammingError: the copy is the file in use
    assert {r.call_id for r in api.recording()} == {"6.1", "6.2"}
    assert not path.exists()
    assert put_back_catalog(path) == "deleted"  # tried again: moved in place now
    assert not list(tmp_path.glob(".recordings.sqlite.*"))
    assert put_back_catalog(path) is None
    start(api, "6.3")
    recorder.close()
    api.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"6.1", "6.2", "6.3"}
    again.close()


async def test_a_refused_swap_is_an_error_said_once_and_the_catalog_keeps_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RecordingStore(tmp_path)
    path = tmp_path / DB_NAME
    watched = WatchedFile(
        path, "the recordings catalog", put_back=lambda: asyncio.to_thread(put_back_catalog, path)
    )
    watch = StateFileWatch([watched])
    start(recorder, "7.1")
    delete(path)
    refuse_swap(monkeypatch, times=3)
    for _ in range(3):
        await watch.look()
        start(recorder, f"7.{len(recorder.recording()) + 1}")
    await watch.look()  # the fourth try: moved in place
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "Read-only file system (moving .recordings.sqlite." in errors[0]
    assert "callrouter goes on with that copy and tries again" in errors[0]
    (said,) = warnings(caplog)
    assert said.startswith(f"{path} was deleted while callrouter ran: written again")
    recorder.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"7.1", "7.2", "7.3", "7.4"}
    again.close()


async def test_a_feed_whose_copy_cannot_take_its_place_goes_on_in_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    feed = EventFeed.open(tmp_path)
    cursors = [feed.publish("ringing", "101", {"n": 0}, call_id="c1")]
    await asyncio.sleep(0.1)
    delete(tmp_path / FILENAME)
    refuse_swap(monkeypatch)
    with pytest.raises(OSError, match="Read-only file system"):
        await feed.put_back()
    cursors.append(feed.publish("answered", "101", {"n": 1}, call_id="c1"))
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the batch went
    assert await feed.put_back() == "deleted"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{FILENAME}.")]
    cursors.append(feed.publish("hangup", "101", {"n": 2}, call_id="c1"))
    await feed.aclose()
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == cursors
    await again.aclose()


async def test_a_deleted_feed_file_is_written_back_while_a_write_keeps_failing(
    tmp_path: Path,
) -> None:
    """The write back ran on the feed's one worker after the batch in progress,
    and a batch the file refuses is retried until it goes (a full disk, a
    backup's lock): the write back waited for as long, and a stop then found
    the file still gone. It now runs between two tries of the batch."""
    feed = EventFeed.open(tmp_path)
    path = tmp_path / FILENAME
    cursors = [feed.publish("ringing", "101", {"n": 0}, call_id="c1")]
    await asyncio.sleep(0.1)
    other = sqlite3.connect(path, timeout=0)  # a backup tool's lock on the file
    other.execute("BEGIN IMMEDIATE")
    try:
        cursors.append(feed.publish("answered", "101", {"n": 1}, call_id="c1"))
        await asyncio.sleep(0.5)  # the batch is refused and retried
        delete(path)
        assert await asyncio.wait_for(feed.put_back(), 5) == "deleted"
        assert path.exists()
        for _ in range(100):  # the batch retried goes into the file written back
            await asyncio.sleep(0.05)
            with sqlite3.connect(path) as db:
                if db.execute("SELECT count(*) FROM events").fetchone()[0] == 2:
                    break
    finally:
        other.rollback()
        other.close()
    await feed.aclose()
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == cursors
    await again.aclose()


async def test_a_feed_write_back_one_asker_gave_up_on_is_still_done_for_the_others(
    tmp_path: Path,
) -> None:
    """Asks while one waits share it: the first asker cancelled (a timeout, its
    task cancelled) cancelled the shared future, so the other asker got
    ``CancelledError`` in a task nobody cancelled, every ask until the worker
    came to it too, and the file was not written back."""
    feed = EventFeed.open(tmp_path)
    cursors = [feed.publish("ringing", "101", {"n": 0}, call_id="c1")]
    await asyncio.sleep(0.1)
    path = tmp_path / FILENAME
    delete(path)
    store = feed._store
    assert store is not None
    busy = threading.Event()
    store._pool.submit(busy.wait, 5)  # the worker on a batch meanwhile
    try:
        first = asyncio.ensure_future(feed.put_back())
        second = asyncio.ensure_future(feed.put_back())
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(feed.put_back())  # asked after the cancel
        await asyncio.sleep(0.05)
    finally:
        busy.set()
    assert await asyncio.wait_for(second, 5) == "deleted"
    assert await asyncio.wait_for(third, 5) in ("deleted", None)
    assert path.exists()
    await feed.aclose()
    again = EventFeed.open(tmp_path)
    assert [e.cursor for e in again.read(0).events] == cursors
    await again.aclose()


async def test_a_feed_write_back_asked_as_the_feed_stops_is_none_not_a_runtime_error(
    tmp_path: Path,
) -> None:
    """Asked between its check that the feed is open and the submit, while the
    stop shut the worker down: ``RuntimeError`` (outside the one exception
    tree) reached the state-file watch instead of "nothing to write back"."""
    feed = EventFeed.open(tmp_path)
    feed.publish("ringing", "101", {"n": 0}, call_id="c1")
    await asyncio.sleep(0.1)
    store = feed._store
    assert store is not None
    store._pool.shutdown(wait=True)  # the stop got there first
    assert store.put_back().result(timeout=1) is None
    assert store._asked == []
    with store._lock:
        store._closed = True
    store._db.close()


# -- the catalog's copy holds no store's lock ---------------------------------------------------


def during_copy(
    monkeypatch: pytest.MonkeyPatch, act: Any
) -> tuple[list[bool], list[threading.Thread]]:
    """Run ``act`` on another thread while ``put_back_catalog`` makes its copy;
    the list says, per copy, whether ``act`` still waited 2 s later (blocked on
    a lock the copy holds: it goes on after the write back; join the threads)."""
    import router.recordings.store as store_module

    real = store_module.create_private
    waited: list[bool] = []
    threads: list[threading.Thread] = []

    def create_private(target: Path) -> None:
        real(target)
        if target.name.startswith(f".{DB_NAME}."):
            worker = threading.Thread(target=act)
            threads.append(worker)
            worker.start()
            worker.join(2.0)
            waited.append(worker.is_alive())

    monkeypatch.setattr(store_module, "create_private", create_private)
    return waited, threads


def test_the_recorder_does_not_wait_for_the_catalog_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder calls its store on the event loop (a Hangup asks which files
    its call has): the copy (``VACUUM INTO``, 40 ms for a 5 MB catalog) held every
    store's lock, so the loop waited for it. It is made through a connection of
    its own now, and the locks are held for the swap only."""
    recorder, api = RecordingStore(tmp_path), RecordingStore(tmp_path)
    start(recorder, "8.1")
    path = tmp_path / DB_NAME
    assert put_back_catalog(path) is None  # the watch's look: where it was
    delete(path)
    answers: list[object] = []
    waited, threads = during_copy(monkeypatch, lambda: answers.append(recorder.get("8.1", "mix")))
    assert put_back_catalog(path) == "deleted"
    for thread in threads:
        thread.join()
    assert waited == [False], "the recorder's store waited for the copy"
    assert len(answers) == 1
    assert answers[0] is not None
    start(api, "8.2")
    recorder.close()
    api.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"8.1", "8.2"}
    again.close()


def test_a_write_while_the_catalog_is_copied_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write landing while the copy is made (no lock stops it now) is not lost
    with the old file: the copy is made again under the stores' locks."""
    recorder = RecordingStore(tmp_path)
    start(recorder, "9.1")
    path = tmp_path / DB_NAME
    assert put_back_catalog(path) is None
    delete(path)
    waited, threads = during_copy(monkeypatch, lambda: start(recorder, f"9.{len(threads) + 1}"))
    assert put_back_catalog(path) == "deleted"
    for thread in threads:
        thread.join()
    # The first copy let the write through; made again under the stores' locks,
    # the second held the next write back until the swap, into the new file.
    assert waited == [False, True]
    recorder.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"9.1", "9.2", "9.3"}
    assert not list(tmp_path.glob(f".{DB_NAME}.*"))
    again.close()


def test_a_catalog_back_where_it_was_before_the_swap_leaves_no_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog moved away and back while the spare connection copied it (a
    ``mv`` and its undo, a backup tool's rename): the write back found it where
    it was and did nothing, and the copy, every caller's recording in it, stayed
    in the state folder as ``.NAME.PID``, one more at each start that met it."""
    recorder = RecordingStore(tmp_path)
    start(recorder, "10.1")
    path = tmp_path / DB_NAME
    assert put_back_catalog(path) is None  # the watch's look: the spare opened
    away = tmp_path / "away.sqlite"
    os.replace(path, away)
    during_copy(monkeypatch, lambda: os.replace(away, path))
    assert put_back_catalog(path) is None  # where it was after all
    assert not list(tmp_path.glob(f".{DB_NAME}.*"))
    start(recorder, "10.2")
    recorder.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"10.1", "10.2"}
    again.close()


def test_a_catalog_that_goes_out_of_sight_before_the_swap_leaves_no_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stat`` refused between the copy and the swap (the state folder's
    permissions changed): nothing is moved, as the error says, and the copy
    made for the swap goes too."""
    import router.recordings.store as store_module

    recorder = RecordingStore(tmp_path)
    start(recorder, "11.1")
    path = tmp_path / DB_NAME
    assert put_back_catalog(path) is None
    delete(path)
    real = store_module.os.stat
    blind: list[bool] = []

    def stat(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if blind and Path(target) == path:
            raise PermissionError(13, "Permission denied", str(target))
        return real(target, *args, **kwargs)

    during_copy(monkeypatch, lambda: blind.append(True))
    monkeypatch.setattr(store_module.os, "stat", stat)
    with pytest.raises(OSError, match="Permission denied"):
        put_back_catalog(path)
    assert not list(tmp_path.glob(f".{DB_NAME}.*"))
    monkeypatch.setattr(store_module.os, "stat", real)
    assert put_back_catalog(path) == "deleted"  # in sight again: written back
    recorder.close()


def test_a_copy_whose_file_cannot_be_moved_aside_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_back`` copies before it moves a file put in the place aside: that
    move refused (an I/O error), the copy stayed beside it, holding every row."""
    import router.aside as aside_module

    recorder = RecordingStore(tmp_path)
    start(recorder, "12.1")
    path = tmp_path / DB_NAME
    (tmp_path / "copy").write_bytes(b"a backup copied over it")
    (tmp_path / "copy").replace(path)
    real = os.link

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        if ".replaced-" in Path(dst).name:
            raise OSError(5, "Input/output error", str(src))
        real(src, dst, **kwargs)

    monkeypatch.setattr(aside_module.os, "link", link)
    with pytest.raises(OSError, match="Input/output error"):
        put_back_catalog(path)
    assert not list(tmp_path.glob(f".{DB_NAME}.*"))
    start(recorder, "12.2")  # the open file still works
    monkeypatch.setattr(aside_module.os, "link", real)
    assert put_back_catalog(path) == "replaced"
    recorder.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"12.1", "12.2"}
    again.close()


# -- the public helper a plugin's own state file uses (docs/plugins.md) ----------------------


def test_a_plugins_own_file_is_written_back_through_the_public_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``router.write_back``, ``router.seen_identity`` and ``router.FileOutOfSight``,
    as docs/plugins.md has a plugin use them (the 1C plugin's queues do): the file
    deleted or replaced is written back and ``reopen`` is given it; a copy that
    cannot take its place is given instead, the rows go on there and, passed as
    ``copied``, it is moved in place at the next look; a file out of sight raises
    ``router.FileOutOfSight`` with nothing moved."""
    import router

    path = tmp_path / "plugin.sqlite"
    at: Path | None = None  # the copy in use when its move in place was refused

    def connect(target: Path) -> sqlite3.Connection:
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    db = connect(path)
    db.execute("CREATE TABLE rows (n INTEGER)")
    db.execute("INSERT INTO rows VALUES (1), (2)")
    opened = router.seen_identity(path)
    told: list[Path] = []

    def close() -> None:
        db.close()

    def reopen(target: Path) -> None:
        nonlocal db, opened, at
        told.append(target)
        at = None if target == path else target
        db = connect(target)
        opened = router.seen_identity(target)

    def look() -> str | None:
        return router.write_back(path, opened, db, close=close, reopen=reopen, copied=at)

    assert look() is None
    assert router.write_back(path, None, db, close=close, reopen=reopen) is None
    assert told == []
    delete(path)
    assert look() == "deleted"
    assert told == [path]
    assert path.stat().st_mode & 0o777 == 0o600
    assert db.execute("SELECT count(*) FROM rows").fetchone() == (2,)

    (tmp_path / "new").write_bytes(b"not ours")
    os.replace(tmp_path / "new", path)
    assert look() == "replaced"
    assert told == [path, path]
    [aside] = tmp_path.glob("plugin.sqlite.replaced-*")
    assert aside.read_bytes() == b"not ours"
    assert db.execute("SELECT count(*) FROM rows").fetchone() == (2,)

    delete(path)
    refused = refuse_swap(monkeypatch)
    with pytest.raises(OSError, match=r"Read-only file system \(moving \.plugin\.sqlite\.\d+"):
        look()
    assert refused
    copy, in_copy = at, opened
    assert copy is not None
    assert told == [path, path, copy]
    db.execute("INSERT INTO rows VALUES (3)")  # goes on in the copy
    assert not path.exists()
    assert look() == "deleted"  # the copy moved in place, no new copy made
    assert told[-1] == path
    assert at is None
    assert not copy.exists()
    assert opened == in_copy  # the very file the rows went on in
    assert not list(tmp_path.glob(".plugin.sqlite.*"))
    assert db.execute("SELECT count(*) FROM rows").fetchone() == (3,)

    with monkeypatch.context() as patched:
        out_of_sight(patched, path)
        with pytest.raises(router.FileOutOfSight) as raised:
            router.seen_identity(path)
        assert isinstance(raised.value, OSError)
        assert raised.value.strerror == "Permission denied"
        with pytest.raises(router.FileOutOfSight):
            router.write_back(path, (0, 0), db, close=close, reopen=reopen)
    assert len(told) == 4
    assert router.seen_identity(path) == opened
    assert list(tmp_path.glob("plugin.sqlite.replaced-*")) == [aside]
    db.close()


def test_a_file_out_of_sight_is_an_error_of_the_one_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``router.FileOutOfSight`` is public (docs/plugins.md: a plugin's own state
    file): callrouter raises it on purpose, so it is a ``CallRouterError`` like
    every other, drawn in router/errors.py's tree, and still the ``OSError`` with
    the errno's text that ``except OSError`` and its ``strerror`` expect. It was a
    bare ``OSError`` that ``except router.CallRouterError`` let through."""
    import router
    import router.errors
    import router.recordings.store as store_module

    assert issubclass(router.FileOutOfSight, router.CallRouterError)
    assert store_module.FileOutOfSight is router.errors.FileOutOfSight
    assert "FileOutOfSight(OSError)" in (router.errors.__doc__ or "")
    target = tmp_path / "plugin.sqlite"

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(path))  # a chmod of the folder

    monkeypatch.setattr(store_module.os, "stat", stat)
    with pytest.raises(router.CallRouterError) as caught:
        router.seen_identity(target)
    assert isinstance(caught.value, router.FileOutOfSight)
    assert isinstance(caught.value, OSError)
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        13,
        "Permission denied",
        str(target),
    )


def test_the_spare_connection_does_not_make_a_catalog_deleted_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look found the catalog where it was and opened the copy's spare
    connection; deleted between the two, sqlite made it again there, empty and
    with the umask's mode (not 0600), and the next look called that "replaced"
    and moved it aside instead of writing the catalog back."""
    import router.recordings.store as store_module

    recorder = RecordingStore(tmp_path)
    start(recorder, "11.1")
    path = tmp_path / DB_NAME
    real = store_module._open_spare

    def deleted_first(key: Path, opened: tuple[int, int] | None) -> None:
        delete(path)
        real(key, opened)

    monkeypatch.setattr(store_module, "_open_spare", deleted_first)
    assert put_back_catalog(path) is None  # the look: where it was, then deleted
    assert not path.exists(), "the spare connection made an empty catalog"
    monkeypatch.setattr(store_module, "_open_spare", real)
    assert put_back_catalog(path) == "deleted"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(f"{DB_NAME}.replaced-*"))
    recorder.close()
    again = RecordingStore(tmp_path)
    assert {r.call_id for r in again.recording()} == {"11.1"}
    again.close()


def test_a_catalog_closed_before_its_written_back_file_was_opened_is_not_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread left running by a cancelled step, arriving after the stop while
    the written-back file waited to be opened, opened a connection nobody
    closed again."""
    recorder = RecordingStore(tmp_path)
    start(recorder, "12.1")
    path = tmp_path / DB_NAME
    delete(path)
    connect = RecordingStore._connect
    opened: list[int] = []

    def full(self: RecordingStore) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RecordingStore, "_connect", full)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        put_back_catalog(path)

    def counted(self: RecordingStore) -> None:
        opened.append(1)
        connect(self)

    monkeypatch.setattr(RecordingStore, "_connect", counted)
    recorder.close()
    with pytest.raises(sqlite3.ProgrammingError):
        recorder.get("12.1", "mix")
    assert opened == []


def test_the_spare_connection_is_opened_with_no_store_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look that finds the catalog where it was opens the copy's spare
    connection; its first read may wait out another connection's lock (busy
    timeout 5 s). It was opened holding every store's lock, and the recorder,
    which calls its store on the event loop, waited as long."""
    import router.recordings.store as store_module

    recorder = RecordingStore(tmp_path)
    start(recorder, "13.1")
    path = tmp_path / DB_NAME
    entered, release = threading.Event(), threading.Event()
    connect = sqlite3.connect

    def slow(target: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if str(target).startswith("file:"):  # the spare connection only
            entered.set()
            release.wait(10)
        return connect(target, *args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", slow)
    looked: list[str | None] = []
    look = threading.Thread(target=lambda: looked.append(put_back_catalog(path)))
    look.start()
    try:
        assert entered.wait(10)
        got: list[object] = []
        call = threading.Thread(target=lambda: got.append(recorder.get("13.1", "mix")))
        call.start()
        call.join(2)
        assert got, "a store call waited for the spare connection"
        assert got[0] is not None
    finally:
        release.set()
        look.join(10)
    assert looked == [None]
    assert store_module._SPARE.get(store_module._key(path)) is not None
    recorder.close()
    assert store_module._SPARE.get(store_module._key(path)) is None
