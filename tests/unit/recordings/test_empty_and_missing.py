"""Issue 16: a recording of no sound (the WAV of a call nobody answered) is ``empty``,
never handed to 1C; a complete file deleted by hand is ``missing`` (docs/recordings.md)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest

from router.recordings import closer, retention
from router.recordings.closer import close_recording
from router.recordings.naming import file_names
from router.recordings.retention import KEEP_REMOVED_DAYS, apply_retention
from router.recordings.settings import RecordingSettings
from router.recordings.store import DB_NAME, Recording, RecordingStore
from tests.unit.recordings.test_store_retention import closed_file
from tests.unit.recordings.virtual_clock import VirtualClock
from tests.unit.recordings.wavgen import wav_bytes, write_wav

CALL = "1714557600.42"
PBX = "/var/spool/asterisk/monitor"


def started(
    tmp_path: Path, call_id: str = CALL, fmt: str = "wav"
) -> tuple[RecordingSettings, RecordingStore, Recording]:
    monitor = tmp_path / "monitor"
    monitor.mkdir(exist_ok=True)
    settings = RecordingSettings(dir=PBX, local_dir=monitor, close_timeout=1.0)
    store = RecordingStore(tmp_path / "state")
    (name,) = file_names(call_id, "mix", fmt)
    (row,) = store.start(
        [name],
        pbx_paths=[settings.pbx_path(name)],
        local_paths=[settings.local_path(name)],
        channel="PJSIP/trunk-00000001",
        extensions=["101"],
    )
    return settings, store, row


async def test_a_wav_of_its_header_alone_is_empty_and_never_offered_to_a_receiver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: measured on the sandbox, a missed call's 44-byte WAV (0.0 s) was
    ``closed`` and uploaded to 1C as any other."""
    settings, store, row = started(tmp_path)
    row.local_path.write_bytes(wav_bytes(b""))
    caplog.set_level("INFO", logger="router.recordings")
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert closed.state == "empty"
    assert (closed.size, closed.duration) == (44, 0.0)
    assert closed.note == "no sound (0 s): not sent"
    assert store.closed() == []  # what the 1C plugin polls
    assert "(no sound: kept as empty, not sent)" in caplog.text
    assert store.usage().counts == {"empty": 1}
    assert store.usage().bytes_on_disk == 44


@pytest.mark.parametrize("fmt", ["gsm", "ulaw"])
async def test_a_headerless_file_of_no_bytes_at_close_timeout_is_empty_not_failed(
    tmp_path: Path, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured on the sandbox: a missed call recorded as GSM or ulaw is a file of 0
    bytes; it was ``failed`` (``incomplete after 30 s``), a WARNING for every missed
    call."""
    settings, store, row = started(tmp_path, fmt=fmt)
    row.local_path.write_bytes(b"")
    caplog.set_level("INFO", logger="router.recordings")
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert (closed.state, closed.size, closed.note) == ("empty", 0, "no sound (0 s): not sent")
    assert "failed" not in caplog.text


async def test_a_headerless_file_of_no_bytes_after_anothers_stop_is_not_taken_for_empty(
    tmp_path: Path,
) -> None:
    """After a ``MixMonitorStop`` that may be another MixMonitor's (``unsure``), the
    call may still ring: its file of 0 bytes is not finished."""
    settings, store, row = started(tmp_path, fmt="gsm")
    row.local_path.write_bytes(b"")
    closed = await close_recording(
        row, settings, store, unsure=True, still_recording=lambda: False, clock=VirtualClock().clock
    )
    assert closed is None
    found = store.get(CALL, "mix")
    assert found is not None
    assert found.state == "failed"


async def test_a_headerless_file_of_no_bytes_on_a_full_disk_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, row = started(tmp_path, fmt="gsm")
    row.local_path.write_bytes(b"")
    monkeypatch.setattr(closer, "full_disk", lambda folder: "the filesystem was full")
    assert await close_recording(row, settings, store, clock=VirtualClock().clock) is None
    found = store.get(CALL, "mix")
    assert found is not None
    assert found.state == "failed"
    assert found.note.endswith("; the filesystem was full")


async def test_a_wav_with_sound_is_closed_as_before(tmp_path: Path) -> None:
    settings, store, row = started(tmp_path)
    write_wav(row.local_path, 0.1)
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert closed.state == "closed"
    assert closed.note == ""
    assert store.closed() == [closed]


def _old_catalog(state: Path) -> None:
    """A catalog as a callrouter before ``empty`` left it: a missed call's 0 s WAV
    ``closed``, waiting for 1C, beside one with sound."""
    store = RecordingStore(state)
    local = state.parent
    for call_id, duration in (("1.1", 0.0), ("1.2", 3.5)):
        (name,) = file_names(call_id, "mix", "wav")
        (row,) = store.start(
            [name], pbx_paths=[f"{PBX}/{name}"], local_paths=[local / str(name)], channel="c"
        )
        store._db.execute(
            "UPDATE recordings SET state = 'closed', file = ?, size = 44, sha256 = ?, "
            "duration = ? WHERE id = ?",
            (str(local / str(name)), f"{row.id:064x}", duration, row.id),
        )
    store.close()


def test_an_older_catalogs_undelivered_empty_wavs_become_empty_at_the_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    _old_catalog(state)
    store = RecordingStore(state)  # the upgrade: a start opening the catalog
    one = store.get("1.1", "mix")
    assert one is not None
    assert (one.state, one.note) == ("empty", "no sound (0 s): not sent")
    assert [r.call_id for r in store.closed()] == ["1.2"]
    store.close()
    # A second start (and the API's, the plugin's connections) changes nothing more.
    again = RecordingStore(state)
    assert {r.call_id: r.state for r in again.on_disk()} == {"1.1": "empty", "1.2": "closed"}
    with sqlite3.connect(state / DB_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM recordings").fetchone() == (2,)


def _empty_row(store: RecordingStore, local: Path, call_id: str, at: float) -> Recording:
    row = closed_file(store, local, call_id, 44, at)
    store._db.execute("UPDATE recordings SET state = 'empty' WHERE id = ?", (row.id,))
    found = store.get(call_id, "mix")
    assert found is not None
    return found


@pytest.mark.parametrize("after", ["delete", "move"])
def test_retention_deletes_an_empty_file_as_a_delivered_one_and_keeps_its_state(
    tmp_path: Path, after: str
) -> None:
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    row = _empty_row(store, local, "1.1", 1000)
    settings = RecordingSettings(
        dir=PBX,
        local_dir=local,
        after_delivery=after,
        move_to=tmp_path / "archive" if after == "move" else None,
    )
    report = apply_retention(store, settings, now=2000)
    assert report.deleted == ["1.1-mix.wav"]
    assert not (row.file or local).exists()
    assert not (tmp_path / "archive" / "1.1-mix.wav").exists()  # no archive of nothing
    kept = store.get("1.1", "mix")
    assert kept is not None
    assert (kept.state, kept.file) == ("empty", None)
    assert kept.note.startswith("no sound (0 s): not sent; its file: deleted")
    assert store.usage().bytes_on_disk == 0
    # Forgotten as a removed row is.
    apply_retention(store, settings, now=2000 + KEEP_REMOVED_DAYS * 86400 + 1)
    assert store.get("1.1", "mix") is None


def test_retention_keeps_an_empty_file_with_after_delivery_keep(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    row = _empty_row(store, local, "1.1", 1000)
    report = apply_retention(store, RecordingSettings(dir=PBX, local_dir=local), now=2000)
    assert report.deleted == []
    assert row.file is not None
    assert row.file.exists()


@pytest.mark.parametrize("state", ["closed", "delivered", "empty"])
def test_retention_marks_a_file_deleted_by_hand_missing_with_one_warning(
    tmp_path: Path, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a delivered file deleted by hand stayed ``delivered`` (the API's
    listing gave it a link that answered 404), and its bytes counted on disk, so
    ``max_bytes`` deleted other files for it."""
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    gone = closed_file(store, local, "1.1", 100, 1000)
    closed_file(store, local, "1.2", 100, 1001)  # still there: the folder is mounted
    if state == "delivered":
        assert store.confirm("1.1", "mix", gone.sha256 or "", "onec")
    elif state == "empty":
        store._db.execute("UPDATE recordings SET state = 'empty' WHERE id = ?", (gone.id,))
    assert gone.file is not None
    gone.file.unlink()
    settings = RecordingSettings(dir=PBX, local_dir=local)
    caplog.set_level("WARNING", logger="router.recordings")
    apply_retention(store, settings, now=2000)
    found = store.get("1.1", "mix")
    assert found is not None
    assert found.state == "missing"
    assert found.note == f"the file {gone.file} is gone (found by retention); it was {state}"
    assert store.usage().bytes_on_disk == 100
    assert [r.call_id for r in store.closed()] == ["1.2"]
    apply_retention(store, settings, now=2060)  # the next pass: said once
    warned = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    assert f"{gone.file} is gone (deleted outside callrouter" in warned[0].getMessage()
    # Forgotten 30 days on, as a removed row.
    apply_retention(store, settings, now=2000 + KEEP_REMOVED_DAYS * 86400 + 1)
    assert store.get("1.1", "mix") is None


def test_a_folder_with_none_of_its_files_is_taken_for_a_mount_gone_not_for_deletions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    rows = [closed_file(store, local, f"1.{n}", 100, 1000 + n) for n in (1, 2)]
    for row in rows:
        assert row.file is not None
        row.file.unlink()  # as an NFS share not mounted looks: its empty mount point
    settings = RecordingSettings(dir=PBX, local_dir=local)
    caplog.set_level("WARNING", logger="router.recordings")
    apply_retention(store, settings, now=2000)
    apply_retention(store, settings, now=2060)
    assert {r.state for r in store.on_disk()} == {"closed"}
    said = [r for r in caplog.records if "is it mounted" in r.getMessage()]
    assert len(said) == 1
    assert f"none of the 2 recordings catalogued in {local} is there" in said[0].getMessage()


def test_mark_missing_changes_a_row_once(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "state")
    row = closed_file(store, tmp_path, "1.1", 10, 1000)
    assert store.mark_missing(row.id, "gone", now=2000)
    assert not store.mark_missing(row.id, "gone again", now=2001)
    found = store.get("1.1", "mix")
    assert found is not None
    assert (found.state, found.note) == ("missing", "gone")


async def test_a_wav_of_no_sound_is_not_transcoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An encoder makes a file of nothing of it, or refuses it: the WAV stays as it is."""
    settings, store, row = started(tmp_path)
    settings = dataclasses.replace(settings, transcode="mp3")
    row.local_path.write_bytes(wav_bytes(b""))
    asked: list[Path] = []

    async def encoder(kind: str, src: Path, dst: Path, timeout: float) -> None:
        asked.append(src)

    monkeypatch.setattr(closer, "transcode", encoder)
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert (closed.state, closed.file, closed.content_type) == (
        "empty",
        row.local_path,
        "audio/wav",
    )
    assert asked == []


def test_retention_deletes_an_empty_file_past_max_age_days_under_keep(tmp_path: Path) -> None:
    """``after_delivery = "keep"`` keeps an empty file as a delivered one: until
    ``max_age_days``."""
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    row = _empty_row(store, local, "1.1", 1000)
    settings = RecordingSettings(dir=PBX, local_dir=local, max_age_days=1)
    assert apply_retention(store, settings, now=1000 + 86400 - 1).deleted == []
    assert apply_retention(store, settings, now=1000 + 86400 + 1).deleted == ["1.1-mix.wav"]
    assert row.file is not None
    assert not row.file.exists()
    kept = store.get("1.1", "mix")
    assert kept is not None
    assert (kept.state, kept.file) == ("empty", None)


def test_retention_deletes_empty_files_over_max_bytes_before_undelivered_ones(
    tmp_path: Path,
) -> None:
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    empty = _empty_row(store, local, "1.1", 1000)
    undelivered = closed_file(store, local, "1.2", 100, 1001)
    settings = RecordingSettings(dir=PBX, local_dir=local, max_bytes=120)
    report = apply_retention(store, settings, now=2000)
    assert report.deleted == ["1.1-mix.wav"]
    assert empty.file is not None
    assert not empty.file.exists()
    assert undelivered.file is not None
    assert undelivered.file.exists()
    assert store.usage().bytes_on_disk == 100


def test_a_file_written_after_retentions_listing_is_not_taken_for_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is listed once; a file there by the time it is marked (a listing
    that raced its rename into place) is not missing."""
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    closed_file(store, local, "1.1", 100, 1000)
    monkeypatch.setattr(
        retention, "_names_in", lambda folders: {folder: set() for folder in folders}
    )
    apply_retention(store, RecordingSettings(dir=PBX, local_dir=local), now=2000)
    found = store.get("1.1", "mix")
    assert found is not None
    assert found.state == "closed"


def test_mark_missing_leaves_an_empty_row_whose_file_retention_deleted(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "state")
    local = tmp_path / "monitor"
    local.mkdir()
    row = _empty_row(store, local, "1.1", 1000)
    store.empty_file_removed(row.id, "no sound (0 s): not sent; its file: deleted", now=2000)
    assert not store.mark_missing(row.id, "gone", now=2001)
    found = store.get("1.1", "mix")
    assert found is not None
    assert found.state == "empty"


async def test_a_headerless_file_that_gets_its_sound_as_it_is_hashed_is_not_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hreview49: whether a GSM or ulaw file was empty was read by a size of its
    own, and its size and hash by another read after it: a file of 0 bytes at
    close_timeout that got MixMonitor's last write in between (its close on a
    loaded host) was ``empty`` with 330 bytes, never sent to 1C and deleted by
    retention as a call of no sound. Empty is now what the hash read."""
    settings, store, row = started(tmp_path, fmt="gsm")
    row.local_path.write_bytes(b"")
    digest = closer.file_digest

    def written_meanwhile(path: Path) -> tuple[int, str]:
        with path.open("ab") as fh:
            fh.write(b"\xd8" * 330)
        return digest(path)

    monkeypatch.setattr(closer, "file_digest", written_meanwhile)
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert (closed.state, closed.size) == ("closed", 330)
    assert [r.id for r in store.closed()] == [row.id]
