"""``callrouter recordings status``: the catalog's figures, and the hard-cap warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main
from router.recordings.naming import file_names
from router.recordings.store import RecordingStore

TOML = """[asterisk]
url = "http://127.0.0.1:8088/asterisk"
username = "router"
secret = "x"
[router]
state_dir = "state"
[recordings]
dir = "/var/spool/asterisk/monitor"
max_bytes = 1000
hard_cap_bytes = 1000
"""


def test_status_prints_states_bytes_and_warns_near_the_hard_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "router.toml"
    config.write_text(TOML, encoding="utf-8")
    store = RecordingStore(tmp_path / "state")
    for call, size in (("1.1", 300), ("1.2", 400)):
        (name,) = file_names(call, "mix", "wav")
        (row,) = store.start(
            [name], pbx_paths=["/x"], local_paths=[tmp_path / str(name)], channel="c"
        )
        store.mark_closed(
            row.id,
            file=tmp_path / str(name),
            content_type="audio/wav",
            size=size,
            sha256=f"{row.id:064x}",
            duration=1,
        )
    assert store.confirm("1.1", "mix", f"{1:064x}", "onec")
    assert main(["recordings", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "files: recording 0, closed 1, delivered 1, removed 0, failed 0" in out
    assert "on disk: 700 B of 1000 B (max_bytes)" in out
    assert "not confirmed by 1C: 400 B, the oldest for " in out
    # Over half the hard cap undelivered: exit 1 and say so.
    (name,) = file_names("1.3", "mix", "wav")
    (row,) = store.start([name], pbx_paths=["/x"], local_paths=[tmp_path / "z"], channel="c")
    store.mark_closed(
        row.id, file=tmp_path / "z", content_type="audio/wav", size=200, sha256="0" * 64, duration=1
    )
    assert main(["recordings", "status", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["undelivered_bytes"] == 600
    assert report["counts"] == {"closed": 2, "delivered": 1}


def test_status_without_the_table_says_recordings_are_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "router.toml"
    config.write_text(TOML.split("[recordings]")[0], encoding="utf-8")
    assert main(["recordings", "status", "--config", str(config)]) == 1
    assert "no [recordings] table" in capsys.readouterr().out


def test_status_shows_what_failed_recordings_left_on_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an incomplete file of a failed recording was in neither figure."""
    config = tmp_path / "router.toml"
    config.write_text(TOML + "max_age_days = 14\n", encoding="utf-8")
    store = RecordingStore(tmp_path / "state")
    (name,) = file_names("2.1", "mix", "wav")
    (row,) = store.start([name], pbx_paths=["/x"], local_paths=[tmp_path / "f"], channel="c")
    store.mark_failed(row.id, "f: incomplete after 30 s", file=tmp_path / "f", size=250)
    assert main(["recordings", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "failed 1" in out
    assert "on disk: 250 B of 1000 B (max_bytes)" in out
    assert "left by failed recordings: 250 B on disk, deleted 14 days after they failed" in out
    assert main(["recordings", "status", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed_bytes"] == 250


def test_status_refuses_a_state_dir_no_service_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from a root shell with the systemd unit's router.toml (no state_dir:
    the service's is $STATE_DIRECTORY, /var/lib/callrouter), it read ``./state``
    beside router.toml, which no service used, and printed ``on disk: 0 B``
    with exit 0, whatever the service had recorded."""
    config = tmp_path / "router.toml"
    config.write_text(TOML.replace('state_dir = "state"\n', ""), encoding="utf-8")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert main(["recordings", "status", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "on disk" not in captured.out
    assert f"[router] state_dir: no folder {tmp_path / 'state'}" in captured.err
    service = tmp_path / "var-lib-callrouter"
    RecordingStore(service).close()
    monkeypatch.setenv("STATE_DIRECTORY", str(service))
    assert main(["recordings", "status", "--config", str(config)]) == 0
    assert "on disk: 0 B of 1000 B (max_bytes)" in capsys.readouterr().out
