"""The recordings catalog on a full state folder says so (issue 16).

A full disk is made with SQLite's ``max_page_count``: SQLite answers ``database
or disk is full`` and rolls the transaction back itself; the catalog's own
ROLLBACK then raised "cannot rollback - no transaction is active", and that was
all the log said.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.recordings.naming import FileName
from router.recordings.store import RecordingStore


def catalog(store: RecordingStore, call: int) -> int:
    name = FileName(f"1714557600.{call}", "in", "wav")
    return len(
        store.start([name], pbx_paths=["/x" * 2000], local_paths=[Path("/y" * 2000)], channel="c")
    )


def test_a_full_disk_is_named_and_the_catalog_goes_on_once_there_is_room(
    tmp_path: Path,
) -> None:
    store = RecordingStore(tmp_path)
    try:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(Exception, match="database or disk is full"):
            catalog(store, 1)
        store._db.execute("PRAGMA max_page_count = 1073741823")
        assert catalog(store, 2) == 1
    finally:
        store.close()
