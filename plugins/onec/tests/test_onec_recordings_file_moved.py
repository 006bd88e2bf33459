"""The 1C plugin's recordings upload queue deleted or replaced while callrouter runs.

SQLite goes on with the file it has open: nothing was said, and the next start
found an empty ``onec-recordings.sqlite`` (or the one put there), so the
uploads owed to 1C, how far each went, the ones 1C refused and, in pull mode,
the links 1C already had were gone: links were sent to 1C again, refused files
sent again (issue 16). Now the uploader writes the file back from the open
one, within ``FILE_CHECK_EVERY`` and at a stop, and says so, as the 1C
history's file is (test_onec_history_file_moved.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from onec_waiting import DEADLINE, eventually
from test_onec_recordings import closed_recording, uploader

from callrouter_onec import recordings
from callrouter_onec.client import OneCSettings
from callrouter_onec.double import OneCDouble
from callrouter_onec.recordings import FILENAME, RecordingUploader, UploadQueue, close_uploads
from router import RecordingStore


def delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def rows(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return [tuple(r) for r in db.execute("SELECT call_id, part, state FROM uploads")]


async def handed_over(up: RecordingUploader, double: OneCDouble) -> None:
    """The link is at 1C and the queue's row says so (``done``). 1C has it a
    moment before the step writes ``done``: the tests deleted the file and
    stopped in that moment on a loaded machine (issue 16), and the row stayed
    ``pending``, as for a stop before 1C's answer (the link is sent again)."""
    await eventually(
        lambda: double.recordings.links and up.queue.counts() == {"done": 1},
        "the link handed to 1C and its row done",
    )
    assert len(double.recordings.links) == 1


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_deleted_queue_is_written_again_with_every_row(tmp_path: Path) -> None:
    store = closed_recording(tmp_path)
    path = tmp_path / "state" / FILENAME
    queue = UploadQueue(path)
    (rec,) = store.closed(0, 10)
    assert queue.add(rec)
    assert queue.put_back() is None  # where it was: nothing to do
    delete(path)
    assert queue.put_back() == "deleted"
    assert queue.put_back() is None  # once
    assert path.stat().st_mode & 0o777 == 0o600
    (due,) = queue.due()
    queue.retry(due, "1C away", 0.0)  # goes on, in the file at its place
    delete(path)  # again: the file written back is watched as the first
    assert queue.put_back() == "deleted"
    queue.close()
    store.close()
    assert rows(path) == [(rec.call_id, "mix", "pending")]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT attempts, last_error FROM uploads").fetchone() == (1, "1C away")


def test_a_replaced_queue_is_moved_aside_and_the_open_one_written_back(tmp_path: Path) -> None:
    store = closed_recording(tmp_path)
    path = tmp_path / "state" / FILENAME
    queue = UploadQueue(path)
    (rec,) = store.closed(0, 10)
    queue.add(rec)
    path.unlink()
    path.write_bytes(b"not a database")
    assert queue.put_back() == "replaced"
    queue.close()
    store.close()
    (aside,) = (tmp_path / "state").glob(f"{FILENAME}.replaced-*")
    assert aside.read_bytes() == b"not a database"
    assert rows(path) == [(rec.call_id, "mix", "pending")]


def test_two_queues_replaced_in_the_same_second_are_both_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: ``NAME.replaced-TIME`` is made of the second and was moved
    there with ``os.replace``: the second file put in the place within that
    second overwrote the first set aside."""
    monkeypatch.setattr(time, "strftime", lambda *_args: "20270101T120000")
    store = closed_recording(tmp_path)
    path = tmp_path / "state" / FILENAME
    queue = UploadQueue(path)
    (rec,) = store.closed(0, 10)
    queue.add(rec)
    for content in (b"the first file put there", b"the second file put there"):
        path.unlink()
        path.write_bytes(content)
        assert queue.put_back() == "replaced"
    queue.close()
    store.close()
    kept = {p.name: p.read_bytes() for p in (tmp_path / "state").glob(f"{FILENAME}.replaced-*")}
    assert kept == {
        f"{FILENAME}.replaced-20270101T120000": b"the first file put there",
        f"{FILENAME}.replaced-20270101T120000-2": b"the second file put there",
    }
    assert rows(path) == [(rec.call_id, "mix", "pending")]


def test_a_closed_queue_is_not_written_back(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    queue = UploadQueue(path)
    queue.close()
    delete(path)
    assert queue.put_back() is None
    assert not path.exists()


async def test_a_link_1c_has_is_not_sent_again_after_the_queue_was_deleted_and_a_restart(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pull mode: the queue's ``done`` row is what keeps a link 1C has from being
    sent again (the catalog keeps the file ``closed``). Deleted while running,
    the next start sent 1C every link again."""
    monkeypatch.setattr(recordings, "FILE_CHECK_EVERY", 0.05, raising=False)
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings, mode="pull")
    up.poll = 0.05
    up.start()
    await handed_over(up, double)
    path = up.queue.path
    delete(path)  # a clean-up script, an operator's rm
    # Looked at every 0.05 s: written again while running, not only at the stop.
    await eventually(
        lambda: [w for w in warnings(caplog) if "was deleted" in w],
        "the queue written again while running",
    )
    assert path.exists()
    await close_uploads(up)
    said = [w for w in warnings(caplog) if "was deleted" in w]
    assert said == [
        f"onec: {path} was deleted while callrouter ran: written again from the open file "
        "(the uploads owed to 1C and how far each went); to empty it, stop the service first"
    ]

    again = uploader(tmp_path, RecordingStore(tmp_path / "state"), settings, mode="pull")
    try:
        assert await again.step() == 0
    finally:
        await close_uploads(again)
    assert len(double.recordings.links) == 1  # not handed to 1C again


async def test_a_queue_deleted_just_before_a_stop_is_written_again_at_the_stop(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings, mode="pull")
    up.start()
    await handed_over(up, double)
    path = up.queue.path
    delete(path)  # then a restart, within FILE_CHECK_EVERY (5 s): no look came
    await close_uploads(up)
    assert rows(path) == [("1714557600.42", "mix", "done")]


async def test_a_queue_that_cannot_be_looked_at_is_not_said_deleted_nor_written_over(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EACCES from ``stat`` (a ``chmod`` of the state folder; the tests run as
    root, whom permissions do not stop) is no deletion: nothing is copied over
    the file still there, and a WARNING says once what happened."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    path = up.queue.path
    before = path.stat()
    real = os.stat

    def stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if os.fspath(target) == os.fspath(path):  # type: ignore[call-overload]
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(target, *args, **kwargs)  # type: ignore[arg-type]

    try:
        with monkeypatch.context() as patched:
            patched.setattr(os, "stat", stat)
            assert await up.check_file() is None
            assert await up.check_file() is None
        assert await up.check_file() is None  # in sight again, where it was
    finally:
        await close_uploads(up)
    after = path.stat()
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert warnings(caplog) == [
        f"onec: {path} cannot be looked at: Permission denied; it is not written back while "
        "so: callrouter goes on with the file it has open; give the service's user its "
        "state folder back"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def full(self: UploadQueue) -> None:
    raise sqlite3.OperationalError("database or disk is full")


def test_a_queue_written_back_but_not_opened_again_is_opened_at_its_next_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the copy fails (a nearly full disk): each use said
    ``ProgrammingError`` (a closed database) until the next look, 5 s later,
    which the uploader does not wait out. Now ``OperationalError`` says why,
    and the next use opens the copy, which holds every row."""
    store = closed_recording(tmp_path)
    path = tmp_path / "state" / FILENAME
    queue = UploadQueue(path)
    (rec,) = store.closed(0, 10)
    assert queue.add(rec)
    delete(path)
    connect = UploadQueue._connect
    monkeypatch.setattr(UploadQueue, "_connect", full)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        queue.put_back()
    for use in (lambda: queue.add(rec), queue.due, queue.counts):
        with pytest.raises(sqlite3.OperationalError, match="cannot be opened again"):
            use()
    monkeypatch.setattr(UploadQueue, "_connect", connect)
    (due,) = queue.due()  # opened now, with every row
    queue.done(due)
    assert queue.put_back() is None  # the copy is the file in use, not one put there
    queue.close()
    store.close()
    assert rows(path) == [(rec.call_id, "mix", "done")]


def test_a_queue_whose_copy_cannot_take_its_place_goes_on_in_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = closed_recording(tmp_path)
    path = tmp_path / "state" / FILENAME
    queue = UploadQueue(path)
    (rec,) = store.closed(0, 10)
    assert queue.add(rec)
    delete(path)
    real = os.replace
    refused: list[str] = []

    def replace(src: object, dst: object) -> None:
        if Path(str(src)).name.startswith(".") and not refused:
            refused.append(str(src))
            raise OSError(30, "Read-only file system", str(src))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(recordings.os, "replace", replace)
    with pytest.raises(OSError, match=r"Read-only file system \(moving \.onec-recordings"):
        queue.put_back()
    (due,) = queue.due()  # no ProgrammingError: the copy is the file in use
    queue.retry(due, "1C away", 0.0)
    assert not path.exists()
    assert queue.put_back() == "deleted"  # tried again: moved in place now
    assert not list((tmp_path / "state").glob(f".{FILENAME}.*"))
    queue.close()
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT attempts, last_error FROM uploads").fetchone() == (1, "1C away")


async def test_the_uploader_waits_out_a_queue_it_cannot_open_without_a_traceback(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="callrouter_onec.recordings")
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    up.poll = 0.05
    path = up.queue.path
    delete(path)
    connect = UploadQueue._connect
    monkeypatch.setattr(UploadQueue, "_connect", full)
    assert await up.check_file() is None  # an ERROR: written back, not opened again
    up.start()
    try:
        # Steps meet the queue it cannot open (a loaded machine may run only one).
        await eventually(
            lambda: [w for w in warnings(caplog) if "cannot be used now" in w],
            "a step meeting the queue it cannot open",
        )
        assert not double.recordings.stored
        monkeypatch.setattr(UploadQueue, "_connect", connect)
        # Stored by the double during the step, "work again" said at its end:
        # stopped between the two, the step's end was never seen.
        await eventually(
            lambda: (
                double.recordings.stored
                and any("work again" in r.getMessage() for r in caplog.records)
            ),
            "the recording stored and the queue said to work again",
        )
    finally:
        await close_uploads(up)
    assert len(double.recordings.stored) == 1  # nothing lost
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    said = [w for w in warnings(caplog) if "cannot be used now" in w]
    assert len(said) == 1, said
    assert "cannot be opened again: database or disk is full" in said[0]
    assert any("work again" in r.getMessage() for r in caplog.records)
    store.close()


def test_a_queue_closed_before_its_written_back_file_was_opened_is_not_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's thread left running past the stop, arriving while the
    written-back file waited to be opened, opened a connection nobody closed."""
    store = closed_recording(tmp_path)
    path = tmp_path / "state" / FILENAME
    queue = UploadQueue(path)
    (rec,) = store.closed(0, 10)
    assert queue.add(rec)
    delete(path)
    connect = UploadQueue._connect
    monkeypatch.setattr(UploadQueue, "_connect", full)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        queue.put_back()
    opened: list[int] = []

    def counted(self: UploadQueue) -> None:
        opened.append(1)
        connect(self)

    monkeypatch.setattr(UploadQueue, "_connect", counted)
    queue.close()
    with pytest.raises(sqlite3.ProgrammingError):
        queue.due()
    assert opened == []
    store.close()


class _SlowCopy:
    """The queue's connection with a ``VACUUM INTO`` of a big file: it lasts
    until ``done`` is set (``DEADLINE`` at most)."""

    def __init__(
        self, db: sqlite3.Connection, copying: threading.Event, done: threading.Event
    ) -> None:
        self._db = db
        self._copying = copying
        self._done = done

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("VACUUM"):
            self._copying.set()
            self._done.wait(DEADLINE)
        return self._db.execute(sql, *args)

    def close(self) -> None:
        self._db.close()


async def test_a_stop_during_the_write_back_keeps_its_warning(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: ``stop()`` cancelled the file's watch while its thread copied
    the deleted file back: the copy ended, its WARNING was cut off with the
    cancelled look, and the look at the stop found the file where it belongs
    and said nothing, so the deletion went unsaid."""
    monkeypatch.setattr(recordings, "FILE_CHECK_EVERY", 0.0)
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    path = up.queue.path
    copying, done = threading.Event(), threading.Event()
    up.queue._db = _SlowCopy(up.queue._db, copying, done)  # type: ignore[assignment]
    delete(path)
    up.start()
    watch = up._watch
    assert watch is not None
    try:
        assert await asyncio.to_thread(copying.wait, DEADLINE), "the write back began"
        stopping = asyncio.create_task(up.stop())
        await eventually(watch.done, "the file's watch cancelled")
        done.set()
        await stopping
    finally:
        done.set()
        await close_uploads(up)
        store.close()
    deleted = [w for w in warnings(caplog) if "was deleted while callrouter ran" in w]
    assert len(deleted) == 1, warnings(caplog)
    assert path.exists()
