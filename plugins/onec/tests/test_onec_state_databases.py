"""The plugin's SQLite files are opened as its own files only (issue 16).

SQLite followed a symbolic link at ``onec-history.sqlite3`` or
``onec-recordings.sqlite`` (the queue written where it pointed, its ``-wal``
and ``-shm`` made there) and opened a FIFO at its ``-journal``, which blocked
the plugin's start for ever. Now what is no regular file there is set aside
(``router.set_aside_odd_db_files``) and a fresh file is made. An open that
blocks runs in a thread a writer frees, so a regression fails, not hangs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from callrouter_onec.history import FILENAME as HISTORY_NAME
from callrouter_onec.history import HistoryQueue
from callrouter_onec.recordings import UploadQueue

UPLOADS_NAME = "onec-recordings.sqlite"


def _history(path: Path) -> None:
    HistoryQueue(path).close()


def _uploads(path: Path) -> None:
    UploadQueue(path).close()


SITES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "history": (HISTORY_NAME, _history),
    "uploads": (UPLOADS_NAME, _uploads),
}


def _a_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()


@pytest.mark.parametrize("site", SITES)
def test_a_link_to_a_database_elsewhere_is_set_aside_not_written(tmp_path: Path, site: str) -> None:
    name, open_it = SITES[site]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "other.sqlite"
    _a_database(victim)
    before = victim.read_bytes()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / name).symlink_to(victim)
    open_it(state_dir / name)
    assert victim.read_bytes() == before
    assert sorted(p.name for p in elsewhere.iterdir()) == ["other.sqlite"]
    (aside,) = state_dir.glob(f"{name}.unreadable-*")
    assert aside.is_symlink()
    assert (state_dir / name).is_file()
    assert not (state_dir / name).is_symlink()


@pytest.mark.parametrize("site", SITES)
def test_a_fifo_at_the_journal_does_not_block_the_start(tmp_path: Path, site: str) -> None:
    name, open_it = SITES[site]
    path = tmp_path / name
    _a_database(path)
    fifo = tmp_path / f"{name}-journal"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            open_it(path)
        except BaseException as exc:  # the outcome under test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        with open(fifo, "wb"):  # let the blocked open end before failing
            pass
        thread.join(5)
        pytest.fail(f"opening {name} blocked on the FIFO at its -journal")
    assert outcome == [None]
    (aside,) = tmp_path.glob(f"{name}-journal.unreadable-*")
    assert aside.is_fifo()
    db = sqlite3.connect(path)  # the database beside it kept
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    db.close()


@pytest.mark.parametrize("site", SITES)
def test_a_queue_that_is_no_database_is_an_error_naming_it(tmp_path: Path, site: str) -> None:
    name, open_it = SITES[site]
    path = tmp_path / name
    path.write_bytes(b"not SQLite\n" * 1000)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        open_it(path)
    assert str(caught.value).startswith(f"{path}: file is not a database")
    assert "move it away" in str(caught.value)
    assert path.read_bytes() == b"not SQLite\n" * 1000
