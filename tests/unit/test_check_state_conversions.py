"""``callrouter check`` says what ``callrouter run`` would convert in the state
folder at start, without converting anything (issue 16).

``run`` converts a state file an earlier version left as it opens it (the 1C
plugin's history file from before event ids, milestone 1's; a recordings
catalog from before a column) and says so in its log after the fact; ``check``
said nothing, so an administrator upgrading learnt of it only once done.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from router import hookimpl
from router.cli import main
from tests.unit.test_upgrade_from_milestone1 import earlier_state, etc

ONEC = "[plugins.onec]\nurl = 'http://1c.local/unf/hs/telephony'\nusername = 'r'\npassword = ''\n"


def _config(tmp_path: Path, state: Path, extra: str = ONEC) -> Path:
    """Milestone 1's router.toml with its state_dir set and a 1C table."""
    config = etc(tmp_path) / "router.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace('# state_dir = "/var/lib/callrouter"', f'state_dir = "{state}"')
    config.write_text(text + "\n" + extra, encoding="utf-8")
    return config


def _files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_check_names_the_milestone1_history_file_run_converts_and_leaves_it_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    state = tmp_path / "var" / "lib" / "callrouter"
    history = earlier_state(state)
    before = _files(state)
    assert list(before) == ["onec-history.sqlite3"]  # WAL mode, closed: no -wal beside it
    config = _config(tmp_path, state)
    assert main(["check", "--config", str(config)]) == 0  # an upgrade's work, not an error
    out = capsys.readouterr().out.splitlines()
    assert (
        f"CONVERT plugin 'onec': {history}: history file from a version before event ids: "
        "callrouter run converts it at start, keeping its 10 rows, 4 of them pending "
        "(docs/operations.md, Upgrading)"
    ) in out, out
    assert out[-1].endswith("10 rules OK")
    assert _files(state) == before  # nothing converted, no -wal or -shm made

    # What run does at start: then check has nothing left to say.
    from callrouter_onec.history import HistoryQueue

    HistoryQueue(history).close()
    assert main(["check", "--config", str(config)]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "CONVERT" in line]


def test_the_history_file_of_a_running_service_is_read_with_its_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A -wal beside the file (milestone 1 running, or stopped uncleanly)
    holds its last commits: read with it, and left as it was."""
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    state = tmp_path / "state"
    history = earlier_state(state)
    writer = sqlite3.connect(history, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(
            "INSERT INTO events (call_id, event, payload, created) VALUES ('9.1', 'ringing', "
            "'{}', 9.0)"
        )
        assert (state / "onec-history.sqlite3-wal").stat().st_size > 0
        before = _files(state)
        assert main(["check", "--config", str(_config(tmp_path, state))]) == 0
        out = capsys.readouterr().out
        assert "keeping its 11 rows, 5 of them pending" in out, out
        assert sorted(os.listdir(state)) == sorted(before)
        assert (state / "onec-history.sqlite3").read_bytes() == before["onec-history.sqlite3"]
    finally:
        writer.close()


def test_a_wal_without_its_shm_is_read_with_no_shm_made_beside_it(tmp_path: Path) -> None:
    """hrev50b: SQLite reading a file in WAL mode whose -wal has no -shm beside
    it (left by a copy or a restore, no connection open) makes the -shm, as
    the user running check: root's, 0644, which the service's user could then
    not open to write. Read from a copy: nothing made, the commits in the -wal
    still read."""
    from router.state_peek import peek_db

    db = tmp_path / "x.sqlite"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (a)")
    writer.execute("INSERT INTO t VALUES (1)")
    # What an unclean stop leaves, less the -shm (the connection is never closed:
    # its close would fold the -wal into the file and delete both).
    wal = (tmp_path / "x.sqlite-wal").read_bytes()
    main_file = db.read_bytes()
    elsewhere = tmp_path / "left"
    elsewhere.mkdir()
    (elsewhere / "x.sqlite").write_bytes(main_file)
    (elsewhere / "x.sqlite-wal").write_bytes(wal)
    writer.close()
    before = _files(elsewhere)
    with peek_db(elsewhere / "x.sqlite") as peek:
        assert peek is not None
        assert peek.execute("SELECT a FROM t").fetchall() == [(1,)]
    assert _files(elsewhere) == before  # no -shm made, nothing changed


def test_check_says_nothing_without_the_1c_plugin_or_in_shadow_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """run opens no history file then, and converts nothing."""
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    state = tmp_path / "state"
    earlier_state(state)
    for extra in ("", ONEC.replace("[plugins.onec]\n", "[plugins.onec]\nevents = false\n")):
        folder = tmp_path / str(len(extra))
        folder.mkdir()
        assert main(["check", "--config", str(_config(folder, state, extra))]) == 0
        assert "CONVERT" not in capsys.readouterr().out
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    config = _config(shadow, state)
    config.write_text(config.read_text().replace("shadow = false", "shadow = true"))
    assert main(["check", "--config", str(config)]) == 0
    assert "CONVERT" not in capsys.readouterr().out


def _earlier_catalog(state: Path) -> Path:
    """A recordings catalog as a version before its added columns left it."""
    from router.recordings.store import DB_NAME, RecordingStore

    state.mkdir(parents=True, exist_ok=True)
    RecordingStore(state).close()
    path = state / DB_NAME
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for column in ("retry_asked_at", "upload_failed_at", "upload_error"):
            db.execute(f"ALTER TABLE recordings DROP COLUMN {column}")
        db.execute(
            "INSERT INTO recordings (call_id, part, format, pbx_path, local_path, channel, "
            "extensions, state, started_at, duration) VALUES ('1.1', 1, 'wav', '/p', '/l', "
            "'PJSIP/101-1', '101', 'closed', 1.0, 0)"
        )
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    return path


def test_check_names_an_earlier_recordings_catalog_and_leaves_it_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    state = tmp_path / "state"
    catalog = _earlier_catalog(state)
    before = _files(state)
    config = _config(tmp_path, state, "")
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    converts = [line for line in out if line.startswith("CONVERT ")]
    assert converts == [
        f"CONVERT {catalog}: recordings catalog from an earlier version: callrouter run adds "
        "the columns upload_error, upload_failed_at, retry_asked_at at start, keeping its 1 rows",
        f"CONVERT {catalog}: 1 closed WAV recordings of no sound: callrouter run marks them "
        "empty at start, and they are never sent",
    ]
    assert _files(state) == before

    from router.recordings.store import RecordingStore

    RecordingStore(state).close()  # what run does at start
    assert main(["check", "--config", str(config)]) == 0
    assert "CONVERT" not in capsys.readouterr().out


def test_a_link_in_place_of_the_catalog_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    state = tmp_path / "state"
    catalog = _earlier_catalog(tmp_path / "elsewhere")
    state.mkdir()
    (state / catalog.name).symlink_to(catalog)
    assert main(["check", "--config", str(_config(tmp_path, state, ""))]) == 0
    out = capsys.readouterr().out
    assert (
        f"CONVERT {state / catalog.name}: cannot be read to say what callrouter run would "
        f"convert: {state / catalog.name} is not a regular file"
    ) in out, out


class _Junk:
    """A plugin whose callrouter_state_conversions answers one string."""

    __name__ = "crm"

    @hookimpl
    def callrouter_state_conversions(self, state_dir: Path) -> object:
        return "one line"


def test_a_plugin_answering_junk_is_check_s_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    junk = _Junk()

    class Entry:
        name, value = "crm", "callrouter_crm"
        dist = SimpleNamespace(name="callrouter-crm", version="1.0")

        def load(self) -> object:
            return junk

    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [Entry()])
    state = tmp_path / "state"
    state.mkdir()
    assert main(["check", "--config", str(_config(tmp_path, state, ""))]) == 1
    out = capsys.readouterr().out
    assert (
        "callrouter: plugin 'crm': callrouter_state_conversions failed with TypeError(\"expected "
        "lines of text or None, got 'one line'\"), so callrouter run may convert its files unsaid"
    ) in out, out
