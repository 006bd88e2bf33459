"""``callrouter state backup``: a consistent copy of ``[router] state_dir``.

The state folder's SQLite files run in WAL mode: while the service writes,
committed rows can sit in the ``-wal`` only, and a ``cp`` of the database
file (what an administrator does with no ``sqlite3`` shell on the host)
misses them (issue 16).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import stat
from pathlib import Path

import pytest
from callrouter_onec.history import FILENAME as ONEC_HISTORY
from callrouter_onec.recordings import FILENAME as ONEC_RECORDINGS

import router
from router import statebackup
from router.api.feed import FILENAME as FEED
from router.api.forwarding_state import FILE_NAME as FORWARDING
from router.api.forwarding_state import Forwarding, ForwardingState
from router.api.session_store import FILE_NAME as UI_SESSIONS
from router.api.session_store import SessionStore
from router.calllife.service import MARK_FILE
from router.cli import main
from router.errors import StateBackupError
from router.private_dir import private_dir_problem
from router.recordings.signing import KEY_NAME, load_key
from router.recordings.store import DB_NAME as RECORDINGS
from router.recordings.store import RecordingStore
from router.statebackup import MANIFEST, Copied, Skipped, backup_state

REPO = Path(__file__).parents[2]
PAGES = [REPO / "docs" / "operations.md", REPO / "docs" / "ru" / "operations.md"]
#: Every file callrouter and the 1C plugin keep in state_dir.
STATE_FILES = [
    MARK_FILE,
    FEED,
    FORWARDING,
    RECORDINGS,
    KEY_NAME,
    UI_SESSIONS,
    ONEC_HISTORY,
    ONEC_RECORDINGS,
]


def live_wal_database(path: Path, rows: int) -> sqlite3.Connection:
    """A WAL database whose last ``rows`` commits are in its ``-wal`` only, as
    while the service runs (the connection is left open, no checkpoint)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table in the file, the rows not
    for n in range(rows):
        db.execute("INSERT INTO events (body) VALUES (?)", (f"event {n}",))
    return db


def count(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (n,) = db.execute("SELECT count(*) FROM events").fetchone()
    return int(n)


def test_a_live_wal_database_is_copied_with_what_only_its_wal_holds(tmp_path: Path) -> None:
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    live = live_wal_database(state / ONEC_HISTORY, rows=25)
    try:
        # What cp would give: the rows are not in the database file.
        shutil.copy(state / ONEC_HISTORY, tmp_path / "cp-copy")
        assert count(tmp_path / "cp-copy") == 0
        results = list(backup_state(state, target))
        # The service goes on writing meanwhile: not blocked, not in the copy.
        live.execute("INSERT INTO events (body) VALUES ('after')")
    finally:
        live.close()
    copy = target / ONEC_HISTORY
    assert results[0] == Copied(ONEC_HISTORY, copy.stat().st_size, "sqlite")
    assert count(copy) == 25
    # One self-contained file, private, in a private folder.
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, ONEC_HISTORY]
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert {r.name for r in results if isinstance(r, Skipped)} == {
        f"{ONEC_HISTORY}-wal",
        f"{ONEC_HISTORY}-shm",
    }


def test_the_state_callrouter_keeps_is_copied_and_its_leftovers_are_not(tmp_path: Path) -> None:
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    store = RecordingStore(state)
    forwarding = ForwardingState(state)
    forwarding.set("101", Forwarding(dnd=True))
    key = load_key(state / KEY_NAME)
    (state / MARK_FILE).write_text(json.dumps({"mark": 1.0, "told": {}}) + "\n", "utf-8")
    # Left by callrouter: a write in progress, files set aside, no state.
    (state / f".{MARK_FILE}.4242").write_text("{", "utf-8")
    (state / f"{FORWARDING}.bad").write_text("{", "utf-8")
    (state / f"{FORWARDING}.bad-2").write_text("[", "utf-8")  # a second one (router.aside)
    (state / f"{FEED}.unreadable-1700000000").write_bytes(b"junk")
    (state / "sub").mkdir()
    (state / "link").symlink_to(tmp_path / "elsewhere")
    try:
        results = {r.name: r for r in backup_state(state, target)}
    finally:
        store.close()
    copied = {name for name, r in results.items() if isinstance(r, Copied)}
    assert copied == {RECORDINGS, FORWARDING, KEY_NAME, MARK_FILE}
    assert results[RECORDINGS] == Copied(RECORDINGS, (target / RECORDINGS).stat().st_size, "sqlite")
    assert load_key(target / KEY_NAME, create=False) == key
    assert ForwardingState(target).get("101").dnd
    for name in copied:
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name
    skipped = {name: r.why for name, r in results.items() if isinstance(r, Skipped)}
    assert skipped[f".{MARK_FILE}.4242"].startswith("a temporary file")
    assert skipped[f"{FORWARDING}.bad"].startswith("set aside by callrouter")
    assert skipped[f"{FORWARDING}.bad-2"].startswith("set aside by callrouter")
    assert skipped[f"{FEED}.unreadable-1700000000"].startswith("set aside by callrouter")
    assert skipped["sub"].startswith("a folder")
    assert skipped["link"].startswith("a symbolic link")
    # The copy opens as the service would open it.
    restored = RecordingStore(target)
    restored.close()


def test_the_live_pages_session_key_is_left_out(tmp_path: Path) -> None:
    """A backup is kept longer and in more places than the state folder: the
    key that signs the live page's cookies is not carried in it (issue 16)."""
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    SessionStore(state).load()  # made as the API makes it at start
    (state / MARK_FILE).write_text(json.dumps({"mark": 1.0, "told": {}}) + "\n", "utf-8")
    results = {r.name: r for r in backup_state(state, target)}
    assert isinstance(results[MARK_FILE], Copied)
    left_out = results[UI_SESSIONS]
    assert isinstance(left_out, Skipped)
    assert left_out.why.startswith("the live page's session key")
    assert not (target / UI_SESSIONS).exists()
    assert statebackup.UI_SESSIONS == UI_SESSIONS


@pytest.mark.parametrize("big", ["plugin.json", "plugin.sqlite3"])
def test_a_disk_full_part_way_leaves_no_copy_that_looks_whole(tmp_path: Path, big: str) -> None:
    """Issue 16: a copy cut short by a full disk (here a file size limit,
    EFBIG, which fails a write as ENOSPC does) stayed in the backup folder
    under its own name, beside the whole copies before it: a later ``cp``
    of that folder into state_dir (docs/operations.md's restore) put back a
    truncated file. The copies go under temporary names until every file is
    copied; a failed backup leaves none of them."""
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    (state / MARK_FILE).write_text(json.dumps({"mark": 1.0, "told": {}}) + "\n", "utf-8")
    if big.endswith(".json"):
        (state / big).write_bytes(b"x" * 1_000_000)
    else:
        with contextlib.closing(sqlite3.connect(state / big)) as db, db:
            db.execute("CREATE TABLE t (body TEXT)")
            db.executemany("INSERT INTO t VALUES (?)", [("y" * 1000,) for _ in range(1000)])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        with pytest.raises(StateBackupError, match="not backed up") as caught:
            list(backup_state(state, target))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert str(caught.value).startswith(f"{state / big}: not backed up: ")
    assert sorted(p.name for p in target.iterdir()) == []
    assert str(caught.value).endswith(f"; nothing was kept in {target}")
    # The disk has room again: the same folder takes the whole backup.
    assert sorted(r.name for r in backup_state(state, target)) == sorted([MARK_FILE, big])
    assert sorted(p.name for p in target.iterdir()) == sorted([MANIFEST, MARK_FILE, big])


def test_the_manifest_lists_each_copy_with_its_size_and_sha256(tmp_path: Path) -> None:
    """`callrouter state restore` restores only what the manifest lists, as it
    was (issue 16): each copy's size and SHA-256 as written, what was left
    out and why, the version that made it; given its name after the copies."""
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    live = live_wal_database(state / ONEC_HISTORY, rows=2)
    try:
        list(backup_state(state, target))
    finally:
        live.close()
    manifest = json.loads((target / MANIFEST).read_text("utf-8"))
    assert manifest["format"] == 1
    assert manifest["made_by"] == f"callrouter {router.__version__}"
    assert manifest["state_dir"] == str(state)
    assert [(f["name"], f["kind"]) for f in manifest["files"]] == [
        (MARK_FILE, "file"),
        (ONEC_HISTORY, "sqlite"),
    ]
    for listed in manifest["files"]:
        copy = (target / listed["name"]).read_bytes()
        assert listed["size"] == len(copy)
        assert listed["sha256"] == hashlib.sha256(copy).hexdigest()
    assert {item["name"] for item in manifest["left_out"]} == {
        f"{ONEC_HISTORY}-wal",
        f"{ONEC_HISTORY}-shm",
    }
    assert stat.S_IMODE((target / MANIFEST).stat().st_mode) == 0o600


def test_a_backup_not_read_to_its_end_leaves_no_copy(tmp_path: Path) -> None:
    """A caller that stops reading the results part way (the generator closed)
    leaves no copy behind either: only a backup read to its end is kept."""
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    for name in ("a.json", "b.json"):
        (state / name).write_text("{}\n", "utf-8")
    results = backup_state(state, target)
    assert next(results).name == "a.json"
    results.close()
    assert list(target.iterdir()) == []


def test_a_used_target_is_refused_before_anything_is_copied(tmp_path: Path) -> None:
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    target.mkdir()
    (target / MARK_FILE).write_text("an older backup\n", "utf-8")
    with pytest.raises(StateBackupError, match="exists and is not an empty folder"):
        list(backup_state(state, target))
    assert (target / MARK_FILE).read_text("utf-8") == "an older backup\n"
    with pytest.raises(StateBackupError, match="cannot read the state folder"):
        list(backup_state(tmp_path / "nope", tmp_path / "backup2"))


def test_a_target_another_user_can_change_is_refused_before_anything_is_copied(
    tmp_path: Path,
) -> None:
    """An empty folder made by someone else (``/tmp/backup``, waiting for root's
    backup) was taken: they could swap a copy for a symbolic link after it was
    made 0600 and before SQLite wrote it, and SQLite followed it (issue 16)."""
    state, target = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    target.mkdir()
    target.chmod(0o777)
    with pytest.raises(StateBackupError) as caught:
        list(backup_state(state, target))
    assert str(caught.value) == (
        f"{target}: not a folder only root and this user can change: {target} is writable "
        "by its group and every user (mode 0777): another user can put a symbolic link "
        "where the backup folder's files go and have callrouter write wherever it points; "
        f"run: chmod 700 {target}; or name a new folder, made 0700"
    )
    assert list(target.iterdir()) == []
    target.chmod(0o700)
    assert [r.name for r in backup_state(state, target)] == [MARK_FILE]


def test_a_target_below_a_shared_folder_is_refused_with_advice_about_the_backup(
    tmp_path: Path,
) -> None:
    """hnewuser44's trial: the refusal of a backup target advised to "choose a
    state_dir" or "choose another state_dir", the state check's words, though the
    folder named is the backup's, and the state_dir was fine (issue 16)."""
    state, shared = tmp_path / "state", tmp_path / "shared"
    state.mkdir()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    shared.mkdir()
    shared.chmod(0o757)
    target = shared / "backup"
    with pytest.raises(StateBackupError) as caught:
        list(backup_state(state, target))
    assert str(caught.value) == (
        f"{target}: not a folder only root and this user can change: {shared} (on the way "
        f"to {target}) is writable by every user (mode 0757): another user can move the "
        f"folders below it and put their own in their place; run: chmod go-w {shared}, or "
        "choose another backup folder; or name a new folder, made 0700"
    )
    assert "state_dir" not in str(caught.value)
    shared.chmod(0o755)
    assert [r.name for r in backup_state(state, target)] == [MARK_FILE]


def test_a_target_in_the_state_folder_is_refused_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hleft33b's trial: `callrouter state backup STATE/inside` copied the state
    into a folder of itself (the next backup holds this one; the folder is the
    service's). Refused, as the folder itself and one through a symbolic link
    are, before anything is made."""
    state = tmp_path / "state"
    state.mkdir()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    (tmp_path / "link").symlink_to(state)
    for target in (state / "inside", state / "a" / "b", state, tmp_path / "link" / "x"):
        argv = ["state", "backup", str(target), "--state-dir", str(state)]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"callrouter state backup: error: {target}: "), err
        assert str(state) in err.removeprefix(f"callrouter state backup: error: {target}"), err
    assert sorted(p.name for p in state.iterdir()) == [MARK_FILE]


def test_the_command_backs_up_router_tomls_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state, target = tmp_path / "state", tmp_path / "backup"
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        f'secret_env = "CALLROUTER_SECRET"\n[router]\nstate_dir = "{state}"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)  # a root shell's: not needed
    argv = ["state", "backup", str(target), "--config", str(cfg)]
    assert main(argv) == 1  # no such folder: not the service's
    assert "[router] state_dir: no folder" in capsys.readouterr().err
    state.mkdir()
    live = live_wal_database(state / FEED, rows=3)
    try:
        assert main(argv) == 0
    finally:
        live.close()
    out = capsys.readouterr().out
    assert re.search(
        rf"^{re.escape(FEED)}: \d+ bytes \(SQLite online backup, checked\)$", out, re.M
    )
    assert f"{FEED}-wal: left out: SQLite's -wal file" in out
    assert f"1 file of {state} backed up in {target}" in out
    assert count(target / FEED) == 3
    # Again into the same folder: refused, the first backup kept.
    assert main(argv) == 1
    assert "exists and is not an empty folder" in capsys.readouterr().err
    # --state-dir: a plugin's own folder; router.toml is not read.
    other = tmp_path / "onec-state"
    other.mkdir()
    (other / "x.json").write_text("{}", "utf-8")
    assert main(["state", "backup", str(tmp_path / "b3"), "--state-dir", str(other)]) == 0
    assert (tmp_path / "b3" / "x.json").read_text("utf-8") == "{}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_page_tells_every_state_file(page: Path) -> None:
    """operations.md's table names every file the code keeps in state_dir."""
    text = page.read_text("utf-8")
    section = text.split("\n## ")
    (state,) = [s for s in section if "callrouter state backup" in s and "| `" in s]
    for name in STATE_FILES:
        assert f"| `{name}`" in state, name


def test_modes_stay_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        state = tmp_path / "state"
        state.mkdir()
        (state / MARK_FILE).write_text("{}\n", "utf-8")
        list(backup_state(state, tmp_path / "backup"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "backup" / MARK_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backup").stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o757], ids=["0777", "0757"])
def test_a_state_folder_run_refuses_is_backed_up_with_runs_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    """hleft45's trial: ``state backup --state-dir`` read a folder others can
    write in without a word, though ``callrouter run`` refuses it. Not refused
    (the state of an older install is backed up before an upgrade), but warned
    of, with the sentence and fix run prints (issue 16)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    state.chmod(mode)
    problem = private_dir_problem(state)
    assert problem is not None
    assert f"run: chmod 700 {state}" in problem
    target = tmp_path / "backup"
    assert main(["state", "backup", str(target), "--state-dir", str(state)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "callrouter state backup: warning: `callrouter run` refuses this state folder: "
        f"{problem} (docs/security.md, Local users and files); backing it up all the same\n"
    )
    assert f"1 file of {state} backed up in {target}" in captured.out
    assert (target / MARK_FILE).read_text("utf-8") == "{}\n"
    state.chmod(0o700)
    assert main(["state", "backup", str(tmp_path / "b2"), "--state-dir", str(state)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="gives the folder to another user: root only")
def test_root_backing_up_the_services_folder_is_not_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root backing up the service's folder (a DynamicUser's, 0700) is told
    nothing: run holds the folder to its owner, the service's user, not to
    whoever backs it up."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    os.chown(state, 61234, 61234)
    assert private_dir_problem(state) is not None  # as root's own state_dir: refused
    assert statebackup.source_problem(state) is None
    assert main(["state", "backup", str(tmp_path / "b"), "--state-dir", str(state)]) == 0
    assert capsys.readouterr().err == ""
    assert statebackup.source_problem(tmp_path / "nope") is None  # backup_state says why
