"""``callrouter recordings status``: the catalog's figures, and the hard-cap warning."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from router.cli import main
from router.recordings.naming import file_names
from router.recordings.store import Recording, RecordingStore

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
#: The 1C plugin on: what sends recordings, so what `recordings retry` asks.
ONEC = """[plugins.onec]
url = "http://1c.example/hs/callrouter"
username = "router"
password = "x"
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
    assert (
        "files: recording 0, closed 1, delivered 1, empty 0, removed 0, missing 0, failed 0" in out
    )
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
    assert capsys.readouterr().err == (
        "callrouter recordings status: error: router.toml has no [recordings] table: "
        "recordings are off\n"
    )


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


def _closed(store: RecordingStore, tmp_path: Path, call: str, data: bytes) -> Recording:
    (name,) = file_names(call, "mix", "wav")
    path = tmp_path / str(name)
    path.write_bytes(data)
    (row,) = store.start([name], pbx_paths=["/x"], local_paths=[path], channel="c")
    store.mark_closed(
        row.id,
        file=path,
        content_type="audio/wav",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        duration=1,
    )
    found = store.get(call, "mix")
    assert found is not None
    return found


def test_status_shows_failed_uploads_apart_with_their_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an upload 1C refused for good was counted in "not confirmed by 1C", as
    if it were still on its way, with nothing saying why."""
    config = tmp_path / "router.toml"
    config.write_text(TOML, encoding="utf-8")
    store = RecordingStore(tmp_path / "state")
    refused = _closed(store, tmp_path, "4.1", b"r" * 300)
    _closed(store, tmp_path, "4.2", b"w" * 100)
    assert store.upload_failed(
        "4.1", "mix", refused.sha256 or "", "1C refused /v1/calls/4.1/recordings/mix: 400 \x1b[2J"
    )
    assert main(["recordings", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "not confirmed by 1C: 100 B, the oldest for " in out
    assert (
        "failed uploads, not sent again: 1 file, 300 B (callrouter recordings retry --failed "
        "sends them again)"
    ) in out
    assert "  4.1/mix: 1C refused /v1/calls/4.1/recordings/mix: 400 \\x1b[2J" in out
    assert main(["recordings", "status", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["undelivered_bytes"] == 400  # both still closed, on disk, undelivered
    assert report["upload_failed"] == 1
    assert report["upload_failed_bytes"] == 300
    (item,) = report["upload_failures"]
    assert item["call_id"] == "4.1"
    assert item["reason"].startswith("1C refused")


def test_retry_asks_again_only_for_files_that_hold_the_catalogued_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a failed upload could be sent again only by editing SQLite by hand."""
    config = tmp_path / "router.toml"
    config.write_text(TOML + ONEC, encoding="utf-8")
    store = RecordingStore(tmp_path / "state")
    good = _closed(store, tmp_path, "5.1", b"g" * 50)
    changed = _closed(store, tmp_path, "5.2", b"c" * 50)
    gone = _closed(store, tmp_path, "5.3", b"x" * 50)
    linked = _closed(store, tmp_path, "5.4", b"l" * 50)
    sent = _closed(store, tmp_path, "5.5", b"s" * 50)
    for row in (good, changed, gone, linked):
        assert store.upload_failed(row.call_id, "mix", row.sha256 or "", "1C refused it: 400")
    assert store.confirm("5.5", "mix", sent.sha256 or "", "onec")
    assert changed.file is not None
    assert gone.file is not None
    assert linked.file is not None
    changed.file.write_bytes(b"C" * 50)
    gone.file.unlink()
    linked.file.unlink()
    linked.file.symlink_to(good.file or "")
    assert main(["recordings", "retry", "--failed", "--config", str(config)]) == 0
    # What was sent on stdout, each refusal on stderr (hleft33's trial).
    out, err = capsys.readouterr()
    assert "5.1/mix: queued for 1C again (it failed: 1C refused it: 400)" in out
    assert "5.2/mix: not sent again: " in err
    assert "no longer holds the bytes catalogued" in err
    assert f"5.3/mix: not sent again: {gone.file} is gone" in err
    assert "5.4/mix: not sent again: cannot read" in err
    assert "symbolic link" in err
    assert "not sent again" not in out
    assert "1 file to send again: a running callrouter's 1C plugin queues them" in out
    after = {r.call_id: r for r in RecordingStore(tmp_path / "state").closed()}
    assert after["5.1"].retry_asked_at is not None
    assert after["5.1"].upload_error == ""
    assert after["5.2"].retry_asked_at is None
    assert after["5.2"].upload_error == "1C refused it: 400"
    # By id: a delivered one is said so, exit 1; a bad id is refused before any query.
    assert main(["recordings", "retry", "5.5/mix", "--config", str(config)]) == 1
    assert "5.5/mix: not sent again: 1C has it already (delivered to onec)" in (
        capsys.readouterr().err
    )
    assert main(["recordings", "retry", "5.1", "--config", str(config)]) == 0
    assert "5.1/mix: queued for 1C again (no failed upload was recorded" in (
        capsys.readouterr().out
    )
    # A command line retry cannot take is a usage error, as argparse's own: exit 2,
    # the usage, then the error, on stderr (hleft33's trial: it was exit 1).
    assert main(["recordings", "retry", "../x", "--config", str(config)]) == 2
    # Named once: not "callrouter recordings retry: error: recordings retry: ...".
    out, err = capsys.readouterr()
    assert out == ""
    usage, error = err.splitlines()
    assert usage.startswith("usage: callrouter recordings retry [-h]"), usage
    assert error.startswith("callrouter recordings retry: error: '../x' is neither a call id")
    assert main(["recordings", "retry", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0].startswith("usage: callrouter recordings retry [-h]")
    assert err.splitlines()[1] == (
        "callrouter recordings retry: error: give the call ids (CALL_ID or CALL_ID/PART) "
        "or --failed"
    )


@pytest.mark.parametrize(
    ("plugins", "why"),
    [
        ("", "router.toml has no [plugins.onec] table: the 1C plugin is off"),
        ('[plugins]\ndisabled = ["onec"]\n' + ONEC, "[plugins] disabled lists 'onec'"),
        ('[plugins]\nenabled = ["textfuncs"]\n' + ONEC, "[plugins] enabled does not list 'onec'"),
    ],
)
def test_retry_with_the_1c_plugin_off_asks_nothing_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plugins: str, why: str
) -> None:
    """Issue 16: with [plugins.onec] off nothing picks a retry up, yet the command said
    'queued for 1C again' and exited 0; it now says why and asks nothing (exit 1)."""
    config = tmp_path / "router.toml"
    config.write_text(TOML + plugins, encoding="utf-8")
    store = RecordingStore(tmp_path / "state")
    row = _closed(store, tmp_path, "7.1", b"g" * 50)
    assert store.upload_failed(row.call_id, "mix", row.sha256 or "", "1C refused it: 400")
    store.close()
    assert main(["recordings", "retry", "--failed", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    # The refusal is the command's error (stderr, prefixed), as any other's.
    assert out == ""
    assert err.startswith(f"callrouter recordings retry: error: {why}"), err
    assert "nothing would send the files to 1C; nothing was asked" in err
    assert "queued for 1C again" not in err
    (after,) = RecordingStore(tmp_path / "state").closed()
    assert after.retry_asked_at is None
    assert after.upload_error == "1C refused it: 400"


@pytest.mark.parametrize("how", ["--failed", "7.1"])
def test_retry_with_a_shadow_router_asks_nothing_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """Issue 16: with [router] shadow = true the router starts no uploads (the 1C
    plugin sends nothing in shadow mode), yet the command said 'queued for 1C
    again' and exited 0; it now names the key, asks nothing and exits 1, as
    with the 1C plugin off."""
    config = tmp_path / "router.toml"
    config.write_text(
        TOML.replace('state_dir = "state"', 'state_dir = "state"\nshadow = true') + ONEC,
        encoding="utf-8",
    )
    store = RecordingStore(tmp_path / "state")
    row = _closed(store, tmp_path, "7.1", b"g" * 50)
    assert store.upload_failed(row.call_id, "mix", row.sha256 or "", "1C refused it: 400")
    store.close()
    assert main(["recordings", "retry", how, "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    # The refusal is the command's error (stderr, prefixed), as any other's.
    assert out == ""
    assert err.startswith(
        f"callrouter recordings retry: error: {config}:7: [router] shadow = true: a shadow "
    ), err
    assert "sends no recordings to 1C; nothing was asked" in err
    assert "queued for 1C again" not in err
    (after,) = RecordingStore(tmp_path / "state").closed()
    assert after.retry_asked_at is None
    assert after.upload_error == "1C refused it: 400"


def test_retry_without_a_catalog_says_so_on_stderr_for_the_ids_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hleft33's trial: `recordings retry ID` with no catalog yet said so on
    stdout (exit 1), with no `error:`: the ID named was not sent, an error like
    any other (stderr, exit 1); `--failed` has nothing to do (stdout, exit 0)."""
    config = tmp_path / "router.toml"
    config.write_text(TOML + ONEC, encoding="utf-8")
    (tmp_path / "state").mkdir()
    nothing = (
        f"no recordings catalog in {tmp_path / 'state'}: nothing was recorded, nothing to send"
    )
    assert main(["recordings", "retry", "1.2", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"callrouter recordings retry: error: {nothing}\n"
    assert main(["recordings", "retry", "--failed", "--config", str(config)]) == 0
    assert capsys.readouterr() == (f"{nothing}\n", "")
    # A call the catalog does not have: said on stderr, exit 1.
    _closed(RecordingStore(tmp_path / "state"), tmp_path, "8.1", b"g" * 50)
    assert main(["recordings", "retry", "8.2", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "8.2: no recording of that call in the catalog\n"


@pytest.mark.parametrize(
    "argv", [["status"], ["status", "--json"], ["retry", "--failed"], ["retry", "8.1"]]
)
def test_a_catalog_sqlite_cannot_read_is_the_commands_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """hleft33's trial: a recordings.sqlite that is no database (a disk error,
    a file copied over it) ended `recordings status` and `retry` in a
    `sqlite3.DatabaseError` traceback; it is the command's error now, naming
    the file: exit 1, nothing on stdout."""
    config = tmp_path / "router.toml"
    config.write_text(TOML + ONEC, encoding="utf-8")
    (tmp_path / "state").mkdir()
    catalog = tmp_path / "state" / "recordings.sqlite"
    catalog.write_bytes(b"not a database, whatever it was" * 100)
    assert main(["recordings", *argv, "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"callrouter recordings {argv[0]}: error: {catalog}: file is not a database"
        " (damaged, or another file put at its name): stop the service, move it away"
        " (a new one is made at start) or put back a backup, and start again\n"
    )


def test_retry_of_an_empty_or_missing_file_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16: both were said to be removed by retention, which neither was."""
    config = tmp_path / "router.toml"
    config.write_text(TOML + ONEC, encoding="utf-8")
    store = RecordingStore(tmp_path / "state")
    empty = _closed(store, tmp_path, "6.1", b"e" * 44)
    gone = _closed(store, tmp_path, "6.2", b"g" * 50)
    store._db.execute(
        "UPDATE recordings SET state = 'empty', note = 'no sound (0 s): not sent' WHERE id = ?",
        (empty.id,),
    )
    assert store.mark_missing(gone.id, "the file is gone (found by retention); it was closed")
    assert main(["recordings", "retry", "6.1", "6.2", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        "6.1/mix: not sent again: it has no sound, never sent to 1C (no sound (0 s): not sent)"
        in err
    )
    assert (
        "6.2/mix: not sent again: its file was deleted outside callrouter (the file is gone "
        "(found by retention); it was closed)" in err
    )
