"""The catalog's states, confirmation by hash, retention's order, [recordings] errors."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.config import exposed_secret_files
from router.errors import ConfigError
from router.recordings.naming import file_names
from router.recordings.retention import apply_retention
from router.recordings.settings import RecordingSettings
from router.recordings.store import Recording, RecordingStore
from router.testing.builders import config_from_toml

PBX = "/var/spool/asterisk/monitor"


def closed_file(
    store: RecordingStore, local: Path, call_id: str, size: int, at: float
) -> Recording:
    (name,) = file_names(call_id, "mix", "wav")
    (row,) = store.start(
        [name],
        pbx_paths=[f"{PBX}/{name}"],
        local_paths=[local / str(name)],
        channel="PJSIP/trunk-1",
        extensions=["101"],
        now=at,
    )
    path = local / str(name)
    path.write_bytes(b"x" * size)
    store.mark_closed(
        row.id,
        file=path,
        content_type="audio/wav",
        size=size,
        sha256=f"{row.id:064x}",
        duration=1.0,
        now=at,
    )
    found = store.get(call_id, "mix")
    assert found is not None
    return found


@pytest.mark.parametrize("text", ["[" * 5000, "not json", "5", '{"101": 1}', '["101", 7]'])
def test_a_rows_extensions_not_a_list_of_texts_name_nobody_and_fail_no_query(
    tmp_path: Path, text: str
) -> None:
    """Issue 16: a catalog row whose ``extensions`` is not the JSON list of texts
    callrouter writes (damaged or tampered; ``[`` repeated past the parser's limit
    raised RecursionError) raised in every query that met the row: the recorder's
    sweep and close, the API's list, the uploads to 1C. The row now names no
    extension (no token reads it by extension), and adding one works."""
    store = RecordingStore(tmp_path)
    row = closed_file(store, tmp_path, "1714557600.1", 10, 1000)
    store._db.execute("UPDATE recordings SET extensions = ? WHERE id = ?", (text, row.id))
    assert [r.extensions for r in store.closed()] == [()]
    store.add_extensions("1714557600.1", {"102"})
    again = store.get("1714557600.1", "mix")
    assert again is not None
    assert again.extensions == ("102",)


def test_the_catalog_is_private_and_confirmed_only_with_the_right_hash(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    row = closed_file(store, tmp_path, "1714557600.1", 10, 1000)
    assert store.closed() == [row]
    assert not store.confirm("1714557600.1", "mix", "0" * 64, "onec")
    assert store.confirm("1714557600.1", "mix", row.sha256 or "", "onec")
    assert store.closed() == []
    again = store.get("1714557600.1", "mix")
    assert again is not None
    assert again.state == "delivered"
    assert again.receiver == "onec"
    # A second start of the same call is a no-op: one recording per call and part.
    (name,) = file_names("1714557600.1", "mix", "wav")
    assert store.start([name], pbx_paths=["x"], local_paths=[tmp_path / "x"], channel="c") == []


def test_retention_deletes_delivered_first_and_undelivered_only_over_the_hard_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore(tmp_path / "state")
    old_sent = closed_file(store, tmp_path, "1.1", 100, 1000)
    closed_file(store, tmp_path, "1.2", 100, 1001)
    new_sent = closed_file(store, tmp_path, "1.3", 100, 1002)
    new_unsent = closed_file(store, tmp_path, "1.4", 100, 1003)
    for row in (old_sent, new_sent):
        assert store.confirm(row.call_id, "mix", row.sha256 or "", "onec")
    settings = RecordingSettings(dir=PBX, local_dir=tmp_path, max_bytes=250, hard_cap_bytes=300)
    report = apply_retention(store, settings, now=2000)
    # Over max_bytes (400 > 250): delivered ones go, oldest first, and only they.
    assert report.deleted == ["1.1-mix.wav", "1.3-mix.wav"]
    assert report.lost == []
    assert not (tmp_path / "1.1-mix.wav").exists()
    assert (tmp_path / "1.2-mix.wav").exists()
    assert store.usage().bytes_on_disk == 200
    # Under the hard cap nothing unconfirmed is touched; over it, the oldest goes, logged.
    tight = RecordingSettings(dir=PBX, local_dir=tmp_path, max_bytes=100, hard_cap_bytes=100)
    report = apply_retention(store, tight, now=2000)
    assert report.lost == ["1.2-mix.wav"]
    assert "deleted 1.2-mix.wav of call 1.2 before delivery" in caplog.text
    assert (tmp_path / "1.4-mix.wav").exists()
    assert store.get(new_unsent.call_id, "mix") is not None
    assert store.usage().counts == {"removed": 3, "closed": 1}


def test_after_delivery_move_and_max_age(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "state")
    row = closed_file(store, tmp_path, "2.1", 10, 1000)
    kept = closed_file(store, tmp_path, "2.2", 10, 1000)
    assert store.confirm(row.call_id, "mix", row.sha256 or "", "onec")
    settings = RecordingSettings(
        dir=PBX, local_dir=tmp_path, after_delivery="move", move_to=tmp_path / "archive"
    )
    assert apply_retention(store, settings).moved == ["2.1-mix.wav"]
    assert (tmp_path / "archive" / "2.1-mix.wav").exists()
    assert store.confirm(kept.call_id, "mix", kept.sha256 or "", "onec")
    aged = RecordingSettings(dir=PBX, local_dir=tmp_path, max_age_days=1)
    assert apply_retention(store, aged, now=1000 + 3600).deleted == []
    assert apply_retention(store, aged, now=1000 + 2 * 86400).deleted == ["2.2-mix.wav"]


def test_a_folder_callrouter_cannot_write_to_is_one_warning_a_pass_not_one_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every delivered file retention could not delete (a read-only mount, a
    service without Asterisk's group) was a WARNING, up to three a file (after
    delivery, max_age_days, max_bytes), every minute: 200 files, 600 lines a minute."""
    store = RecordingStore(tmp_path / "state")
    for n in range(200):
        row = closed_file(store, tmp_path, f"3.{n}", 10, 1000 + n)
        assert store.confirm(row.call_id, "mix", row.sha256 or "", "onec")

    def refused(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    settings = RecordingSettings(
        dir=PBX, local_dir=tmp_path, after_delivery="delete", max_age_days=1, max_bytes=100
    )
    reports = [apply_retention(store, settings, now=1000 + 2 * 86400) for _ in range(2)]
    lines = [r.getMessage() for r in caplog.records if r.name == "router.recordings"]
    assert len(lines) == 2, (len(lines), lines[:3])
    assert [len(r.stuck) for r in reports] == [200, 200]
    assert [r.deleted for r in reports] == [[], []]
    assert "200 file(s) could not be deleted or moved" in lines[0]
    assert "cannot delete" in lines[0]
    assert "3.0-mix.wav: [Errno 13] Permission denied" in lines[0]
    assert {r.state for r in store.on_disk()} == {"delivered"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('dir = "relative/monitor"', "[recordings] dir: expected an absolute path"),
        ('dir = "/var/../etc"', "[recordings] dir: expected an absolute path"),
        ('dir = "/x,b(y)"', "[recordings] dir: expected an absolute path"),
        # What the dialplan's [callrouter-record] would FILTER out.
        ('dir = "/var/my recs"', "[recordings] dir: expected an absolute path of letters"),
        ('dir = "/var/a^b"', "[recordings] dir: expected an absolute path"),
        ('dir = "/var/a..b"', "[recordings] dir: expected an absolute path"),
        ('dir = "/x"\nlegs = "stereo"', "[recordings] legs: expected 'mix' or 'both'"),
        ('dir = "/x"\ntranscode = "flac"', "[recordings] transcode: expected 'off' or"),
        ('dir = "/x"\nmode = "pull"', "[recordings] public_url: required with mode"),
        ('dir = "/x"\nafter_delivery = "move"', "[recordings] move_to: required"),
        ('dir = "/x"\nmax_bytes = 10\nhard_cap_bytes = 5', "[recordings] hard_cap_bytes: must"),
        ('dir = "/x"\nformats = "wav"', "[recordings] formats: unknown key; did you mean 'format'"),
        ("local_dir = '/x'", "[recordings] dir: required"),
    ],
)
def test_bad_recordings_settings_name_the_file_and_key(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_toml(tmp_path, f"[recordings]\n{table}\n")
    assert str(caught.value).startswith(str(tmp_path / "router.toml"))
    assert message in str(caught.value)


def test_recordings_settings_are_read(tmp_path: Path) -> None:
    config = config_from_toml(
        tmp_path,
        '[recordings]\ndir = "/var/spool/asterisk/monitor/"\nlocal_dir = "mnt"\n'
        'mode = "pull"\npublic_url = "https://cr.example:8089/"\n',
    )
    settings = config.recordings
    assert settings is not None
    assert settings.dir == "/var/spool/asterisk/monitor"
    assert settings.local_dir == tmp_path / "mnt"
    assert settings.public_url == "https://cr.example:8089"
    assert config_from_toml(tmp_path, "").recordings is None


def test_a_readable_link_key_is_warned_about(tmp_path: Path) -> None:
    key = tmp_path / "links.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o644)
    config = config_from_toml(tmp_path, '[recordings]\ndir = "/x"\nkey_file = "links.key"\n')
    warnings = exposed_secret_files(config)
    assert any(w.startswith(f"{key}: holds a secret") for w in warnings), warnings
    key.chmod(0o600)
    assert not any(str(key) in w for w in exposed_secret_files(config))


def failed_file(
    store: RecordingStore, local: Path, call_id: str, size: int | None, at: float
) -> Recording:
    """A recording that never became complete, with ``size`` bytes left (None: no file)."""
    (name,) = file_names(call_id, "mix", "wav")
    (row,) = store.start(
        [name],
        pbx_paths=[f"{PBX}/{name}"],
        local_paths=[local / str(name)],
        channel="PJSIP/trunk-1",
        now=at,
    )
    path = local / str(name)
    if size is not None:
        path.write_bytes(b"RIFF" + b"\0" * (size - 4))
    store.mark_failed(
        row.id,
        f"{name}: incomplete after 30 s",
        file=path if size is not None else None,
        size=size,
        now=at,
    )
    found = store.get(call_id, "mix")
    assert found is not None
    return found


def test_a_failed_recordings_file_counts_on_disk_and_goes_only_after_max_age_days(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the incomplete WAV a failed recording left (Asterisk crashed mid-call)
    was outside on_disk: never counted against max_bytes or hard_cap_bytes, never
    deleted, and not in the status's bytes."""
    store = RecordingStore(tmp_path / "state")
    failed = failed_file(store, tmp_path, "3.1", 300, 1000)
    failed_file(store, tmp_path, "3.2", None, 1000)  # nothing on disk: nothing counted
    sent = closed_file(store, tmp_path, "3.3", 100, 1001)
    assert store.confirm(sent.call_id, "mix", sent.sha256 or "", "onec")
    usage = store.usage()
    assert (usage.bytes_on_disk, usage.failed_bytes, usage.undelivered_bytes) == (400, 300, 0)
    # Counted against max_bytes (400 > 350): the delivered file goes, the failed one stays.
    bounded = RecordingSettings(dir=PBX, local_dir=tmp_path, max_bytes=350, max_age_days=2)
    assert apply_retention(store, bounded, now=2000).deleted == ["3.3-mix.wav"]
    assert failed.file is not None
    assert failed.file.exists()
    # Asterisk wrote on after the failure: the catalog follows the file's size.
    failed.file.write_bytes(b"x" * 500)
    apply_retention(store, bounded, now=2000)
    assert store.usage().failed_bytes == 500
    # Never before max_age_days, counted from the failure; then deleted and marked.
    assert apply_retention(store, bounded, now=1000 + 86400).deleted == []
    assert apply_retention(store, bounded, now=1000 + 3 * 86400).deleted == ["3.1-mix.wav"]
    assert not failed.file.exists()
    gone = store.get("3.1", "mix")
    assert gone is not None
    assert gone.state == "removed"
    assert store.usage().bytes_on_disk == 0


def test_over_the_hard_cap_a_failed_recordings_file_goes_before_an_undelivered_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore(tmp_path / "state")
    unsent = closed_file(store, tmp_path, "4.1", 100, 1000)
    failed = failed_file(store, tmp_path, "4.2", 100, 1001)
    capped = RecordingSettings(dir=PBX, local_dir=tmp_path, max_bytes=150, hard_cap_bytes=150)
    assert apply_retention(store, capped, now=2000).lost == ["4.2-mix.wav"]
    assert "deleted 4.2-mix.wav of call 4.2 before delivery" in caplog.text
    assert unsent.file is not None
    assert unsent.file.exists()
    assert failed.file is not None
    assert not failed.file.exists()


def test_a_symbolic_link_at_a_failed_recordings_name_is_neither_counted_nor_followed(
    tmp_path: Path,
) -> None:
    store = RecordingStore(tmp_path / "state")
    failed = failed_file(store, tmp_path, "5.1", 100, 1000)
    assert failed.file is not None
    precious = tmp_path / "precious"
    precious.write_bytes(b"y" * 1000)
    failed.file.unlink()
    failed.file.symlink_to(precious)
    aged = RecordingSettings(dir=PBX, local_dir=tmp_path, max_age_days=1, hard_cap_bytes=10)
    report = apply_retention(store, aged, now=1000 + 2 * 86400)
    assert (report.deleted, report.lost) == ([], [])
    assert precious.read_bytes() == b"y" * 1000


def test_removed_rows_are_forgotten_after_30_days_a_bounded_batch_a_pass(tmp_path: Path) -> None:
    """Before: a removed file's row (about 200 bytes) stayed in recordings.sqlite for
    ever. It is kept 30 days (the API's list of a call says what became of the file;
    a signed link lives 7 days at most), then forgotten, PRUNE_BATCH rows a pass."""
    from router.recordings import retention

    store = RecordingStore(tmp_path / "state")
    settings = RecordingSettings(dir=PBX, local_dir=tmp_path, after_delivery="delete")
    for n in range(5):
        row = closed_file(store, tmp_path, f"6.{n}", 10, 1000)
        assert store.confirm(row.call_id, "mix", row.sha256 or "", "onec")
    unsent = closed_file(store, tmp_path, "6.9", 10, 1000)
    assert len(apply_retention(store, settings, now=1000).deleted) == 5
    day = 86400
    assert apply_retention(store, settings, now=1000 + 29 * day).pruned == 0
    assert store.usage().counts == {"removed": 5, "closed": 1}
    original = retention.PRUNE_BATCH
    retention.PRUNE_BATCH = 2
    try:
        passes = [apply_retention(store, settings, now=1000 + 31 * day).pruned for _ in "abcd"]
    finally:
        retention.PRUNE_BATCH = original
    assert passes == [2, 2, 1, 0]
    assert store.usage().counts == {"closed": 1}
    assert store.get(unsent.call_id, "mix") is not None


def test_a_failed_recordings_file_still_being_written_is_counted_but_never_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a recording failed while its MixMonitor still wrote (the call tracker
    drops a call after 4 hours, the sweep before the reconcile at a start) was the
    first file deleted over hard_cap_bytes: its name gone, its bytes still growing on
    disk, the whole call lost. Now it is counted, and deleted only once it stopped
    growing and Asterisk no longer writes to it."""
    store = RecordingStore(tmp_path / "state")
    now = time.time()
    failed = failed_file(store, tmp_path, "6.1", 100, now - 100)
    assert failed.file is not None
    capped = RecordingSettings(dir=PBX, local_dir=tmp_path, hard_cap_bytes=150, max_age_days=1)
    failed.file.write_bytes(b"x" * 400)  # MixMonitor writes on
    report = apply_retention(store, capped, now=now)
    assert (report.deleted, report.lost) == ([], [])
    assert failed.file.stat().st_size == 400
    assert store.usage().failed_bytes == 400  # counted all the same
    # Long after the failure, still written a moment ago: kept past max_age_days too.
    later = now + 2 * 86400
    os.utime(failed.file, (later - 5, later - 5))
    assert apply_retention(store, capped, now=later).lost == []
    assert failed.file.exists()
    # Its MixMonitor ended (no growth, no write for a while): max_age_days takes it.
    os.utime(failed.file, (later - 120, later - 120))
    assert apply_retention(store, capped, now=later).deleted == ["6.1-mix.wav"]
    assert not failed.file.exists()


#: The catalog as callrouter made it before each recording kept its origin.
OLD_SCHEMA = """
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, part TEXT NOT NULL,
    format TEXT NOT NULL, pbx_path TEXT NOT NULL, local_path TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '', extensions TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL, started_at REAL NOT NULL, stop_seen_at REAL, closed_at REAL,
    file TEXT, content_type TEXT, size INTEGER, sha256 TEXT, duration REAL,
    delivered_at REAL, receiver TEXT, removed_at REAL, note TEXT NOT NULL DEFAULT '',
    UNIQUE (call_id, part)
);
INSERT INTO recordings (call_id, part, format, pbx_path, local_path, channel, extensions,
    state, started_at) VALUES ('1714557600.7', 'mix', 'wav', '/p', '/l', 'PJSIP/trunk-1',
    '["101"]', 'recording', 1000);
"""


def test_an_older_catalog_gains_the_origin_and_its_rows_count_as_unknown(
    tmp_path: Path,
) -> None:
    """Its rows say nobody started them through the API (the API's stop leaves them);
    new rows keep who started them. Two opens (the recorder, the API) alter it once."""
    import sqlite3

    from router.recordings.store import DB_NAME, Origin

    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.executescript(OLD_SCHEMA)
    first, second = RecordingStore(tmp_path), RecordingStore(tmp_path)
    old = first.get("1714557600.7", "mix")
    assert old is not None
    assert old.origin == Origin("unknown")
    assert old.extensions == ("101",)
    # Nor the id of its MixMonitor: stops of it read the channel's variable.
    assert (old.mixmonitor_id, old.stop_asked_at) == ("", None)
    # Nor a failed upload, nor a retry asked for.
    assert (old.upload_error, old.upload_failed_at, old.retry_asked_at) == ("", None, None)
    (name,) = file_names("1714557600.8", "mix", "wav")
    (new,) = second.start(
        [name],
        pbx_paths=["/p8"],
        local_paths=[tmp_path / "l8"],
        channel="c",
        origin=Origin("rule", "compliance"),
    )
    assert new.origin == Origin("rule", "compliance")
    assert first.get("1714557600.8", "mix") == new
    second.set_mixmonitor_id([new.id], "0x7feeec00ae10")
    second.ask_stop([new.id], now=1234.5)
    kept = first.get("1714557600.8", "mix")
    assert kept is not None
    assert (kept.mixmonitor_id, kept.stop_asked_at) == ("0x7feeec00ae10", 1234.5)
    second.ask_stop([new.id], asked=False)  # Asterisk refused the stop
    assert (first.get("1714557600.8", "mix") or kept).stop_asked_at is None
    with pytest.raises(ValueError, match="origin 'agent' is not one of rule, api"):
        Origin("agent")


def test_extensions_are_added_to_the_rows_named_only(tmp_path: Path) -> None:
    from router.recordings.store import Origin

    store = RecordingStore(tmp_path)
    names = file_names("1714557600.9", "both", "wav")
    rows = store.start(
        names,
        pbx_paths=[f"/p{n.part}" for n in names],
        local_paths=[tmp_path / n.part for n in names],
        channel="c",
        extensions=["102"],
        origin=Origin("api", "token desk102 (102)"),
    )
    store.add_extensions("1714557600.9", ["103"], ids=[rows[0].id])
    store.add_extensions("1714557600.9", ["104"], ids=[])
    assert [r.extensions for r in store.for_call("1714557600.9")] == [
        ("102", "103"),
        ("102",),
        ("102",),
    ]


def test_recording_of_finds_files_by_call_or_channel_in_one_ask(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    for call_id, channel in (("1714557600.1", "PJSIP/a-1"), ("1714557600.2", "PJSIP/b-2")):
        (name,) = file_names(call_id, "mix", "wav")
        store.start([name], pbx_paths=["p"], local_paths=[tmp_path / call_id], channel=channel)
    (closed,) = file_names("1714557600.3", "mix", "wav")
    (row,) = store.start([closed], pbx_paths=["p"], local_paths=[tmp_path / "3"], channel="c")
    store.mark_failed(row.id, "gone")
    found = store.recording_of(["1714557600.1", "1714557600.3"], ["PJSIP/b-2", "c"])
    assert [r.call_id for r in found] == ["1714557600.1", "1714557600.2"]
    assert store.recording_of([], ["PJSIP/x-9"]) == []


def _delivered_for_move(tmp_path: Path) -> tuple[RecordingStore, Recording, RecordingSettings]:
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    store = RecordingStore(tmp_path / "state")
    row = closed_file(store, monitor, "5.1", 10, 1000)
    assert store.confirm(row.call_id, "mix", row.sha256 or "", "onec")
    archive = tmp_path / "archive"
    archive.mkdir()
    settings = RecordingSettings(dir=PBX, local_dir=monitor, after_delivery="move", move_to=archive)
    return store, row, settings


@pytest.mark.parametrize("across_filesystems", [False, True])
def test_move_never_follows_a_link_at_the_name_in_move_to(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    across_filesystems: bool,
) -> None:
    """Before: ``shutil.move(file, move_to / name)`` took a link to a folder at that name
    for the folder, and moved the recording into it (anywhere, e.g. outside move_to)."""
    store, row, settings = _delivered_for_move(tmp_path)
    assert row.file is not None
    assert settings.move_to is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    (settings.move_to / row.file.name).symlink_to(outside)
    if across_filesystems:

        def no_link(*args: object, **kwargs: object) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", no_link)
    report = apply_retention(store, settings, now=2000)
    assert report.moved == []
    assert list(outside.iterdir()) == []
    assert row.file.read_bytes() == b"x" * 10  # left where it is, tried again next pass
    assert report.stuck == [row.file.name]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "router.recordings"]
    assert "archive/5.1-mix.wav is already a symbolic link: never overwritten" in line
    assert "move or delete what holds that name in move_to" in line
    again = store.get(row.call_id, "mix")
    assert again is not None
    assert again.state == "delivered"


@pytest.mark.parametrize("across_filesystems", [False, True])
def test_move_never_overwrites_a_file_in_move_to_and_moves_into_a_linked_move_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, across_filesystems: bool
) -> None:
    store, row, settings = _delivered_for_move(tmp_path)
    assert row.file is not None
    assert settings.move_to is not None
    if across_filesystems:

        def no_link(*args: object, **kwargs: object) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", no_link)
    taken = settings.move_to / row.file.name
    taken.write_bytes(b"older")
    assert apply_retention(store, settings, now=2000).moved == []
    assert taken.read_bytes() == b"older"
    taken.unlink()
    # move_to itself may be a link (the administrator's): the file lands in its target.
    real = tmp_path / "real-archive"
    real.mkdir()
    linked = dataclasses.replace(settings, move_to=tmp_path / "linked")
    (tmp_path / "linked").symlink_to(real)
    os.chmod(row.file, 0o640)
    assert apply_retention(store, linked, now=2000).moved == [row.file.name]
    moved = real / row.file.name
    assert moved.read_bytes() == b"x" * 10
    assert stat.S_IMODE(moved.stat().st_mode) == 0o640
    assert not os.path.lexists(row.file)


def test_move_leaves_a_link_at_the_recordings_name_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A link put at a delivered file's name is not the recording: never moved into
    move_to (where whoever reads the archive would follow it)."""
    store, row, settings = _delivered_for_move(tmp_path)
    assert row.file is not None
    assert settings.move_to is not None
    secret = tmp_path / "state" / "recordings.key"
    secret.write_bytes(b"k" * 32)
    row.file.unlink()
    row.file.symlink_to(secret)
    assert apply_retention(store, settings, now=2000).moved == []
    assert list(settings.move_to.iterdir()) == []
    assert row.file.is_symlink()
    gone = store.get(row.call_id, "mix")
    assert gone is not None
    assert gone.state == "removed"
    assert "is a symbolic link, not the recording" in gone.note
    assert "5.1-mix.wav is a symbolic link, not the recording: not moved; left alone" in (
        caplog.text
    )


def test_a_copy_across_filesystems_that_fails_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, row, settings = _delivered_for_move(tmp_path)
    assert row.file is not None
    assert settings.move_to is not None

    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copyfileobj", full)
    report = apply_retention(store, settings, now=2000)
    assert report.moved == []
    assert "No space left on device" in report.reason
    assert list(settings.move_to.iterdir()) == []
    assert row.file.read_bytes() == b"x" * 10


@pytest.mark.parametrize("across_filesystems", [False, True])
def test_a_move_whose_source_cannot_be_deleted_leaves_nothing_in_move_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, across_filesystems: bool
) -> None:
    """The new name is taken back: else the next pass would find it taken (by the same
    file) and report a name held in move_to for ever."""
    store, row, settings = _delivered_for_move(tmp_path)
    assert row.file is not None
    assert settings.move_to is not None
    real_unlink = os.unlink

    def no_delete_in_monitor(path: object, *args: object, **kwargs: object) -> None:
        if str(path) == str(row.file):
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    if across_filesystems:

        def no_link(*args: object, **kwargs: object) -> None:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "unlink", no_delete_in_monitor)
    for _ in range(2):
        report = apply_retention(store, settings, now=2000)
        assert report.moved == []
        assert "Permission denied" in report.reason
        assert list(settings.move_to.iterdir()) == []
    assert row.file.read_bytes() == b"x" * 10


def _read_elsewhere(path: Path) -> str:
    """The catalog's states as another process sees them (opened, read, closed)."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(','.join(r[0] for r in db.execute('SELECT state FROM recordings ORDER BY id')));"
        " db.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_another_process_sees_what_the_service_writes_after_a_second_store_opened(
    tmp_path: Path,
) -> None:
    """Before: each RecordingStore opened and closed the catalog's file before SQLite did,
    which dropped the POSIX locks of the connections the process already had (the
    recorder's, when the 1C plugin opened its own). The next other process to close the
    catalog (``recordings status``) deleted the WAL the service went on writing into:
    measured on the sandbox, ``recordings status`` saw the call's file `recording` while
    the service had closed and delivered it, until the service stopped."""
    recorder = RecordingStore(tmp_path / "state")
    plugin = RecordingStore(tmp_path / "state")
    row = closed_file(recorder, tmp_path, "6.1", 10, 1000)
    assert _read_elsewhere(recorder.path) == "closed"
    assert recorder.confirm(row.call_id, "mix", row.sha256 or "", "onec")
    assert _read_elsewhere(recorder.path) == "delivered"
    assert os.path.exists(f"{recorder.path}-wal")
    plugin.close()
    recorder.close()


def test_an_existing_catalog_is_made_private_without_being_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    RecordingStore(state).close()
    path = state / "recordings.sqlite"
    os.chmod(path, 0o644)
    RecordingStore(state).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
