"""``callrouter state restore``: a backup put back into ``[router] state_dir``.

The documented rollback was ``cp BACKUP/* STATE/``: it left the files the
newer version made that the backup lacks (``calllife.json``), never checked
that the backup was whole or that the service was stopped (issue 16).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from router import staterestore
from router.api.forwarding_state import FILE_NAME as FORWARDING
from router.api.forwarding_state import Forwarding, ForwardingState
from router.calllife.service import MARK_FILE
from router.cli import main
from router.errors import ConfigError, StateRestoreError
from router.recordings.signing import KEY_NAME, load_key
from router.recordings.store import DB_NAME as RECORDINGS
from router.recordings.store import RecordingStore
from router.statebackup import MANIFEST, MAX_ENTRIES, MAX_PLAIN_BYTES, backup_state
from router.staterestore import ASIDE_PREFIX, lock_holder, restore_state
from tests.unit.state_lock import holding, locking_engine

REPO = Path(__file__).parents[2]
CLOCK = 1_800_000_000.0  # 2027-01-15T08:00:00Z
ASIDE = ASIDE_PREFIX + "20270115T080000Z"


def clock() -> float:
    return CLOCK


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every name under ``folder`` with its content (a link: where it points)."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "folder"
        else:
            found[name] = path.read_bytes()
    return found


#: A plugin's own database in state_dir (backed up and restored as callrouter's are).
PLUGIN_DB = "plugin.sqlite3"


def rows(state: Path) -> int:
    with sqlite3.connect(f"file:{state / PLUGIN_DB}?mode=ro", uri=True) as db:
        (n,) = db.execute("SELECT count(*) FROM events").fetchone()
    return int(n)


def add_row(state: Path, body: str) -> None:
    """A commit to the plugin's WAL database, as a running plugin makes it."""
    db = sqlite3.connect(state / PLUGIN_DB, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS events (body TEXT)")
        db.execute("INSERT INTO events VALUES (?)", (body,))
    finally:
        db.close()


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """(state, backup): a state folder as callrouter leaves it, and its backup."""
    state, backup = tmp_path / "state", tmp_path / "backup"
    state.mkdir(mode=0o700)
    store = RecordingStore(state)
    add_row(state, "before")
    ForwardingState(state).set("101", Forwarding(dnd=True))
    load_key(state / KEY_NAME)
    try:
        list(backup_state(state, backup))  # while the service runs
    finally:
        store.close()  # and it stopped, as the restore wants
    return state, backup


def test_an_exact_restore_moves_aside_what_the_backup_lacks(
    backed_up: tuple[Path, Path],
) -> None:
    """What the state folder gained after the backup (calllife.json, made by
    a newer version; a row in the catalog; a changed forwarding) is gone from
    the folder after the restore, and kept, not deleted, in the aside folder
    with the files the restore replaced and the databases' -wal and -shm."""
    state, backup = backed_up
    add_row(state, "after")
    ForwardingState(state).set("101", Forwarding(dnd=False))
    (state / MARK_FILE).write_text('{"mark": 2.0, "told": {}}\n', "utf-8")
    (state / "plugin-folder").mkdir()
    (state / "a-link").symlink_to("/etc/passwd")
    before = snapshot(state)
    wanted = {
        name: (backup / name).read_bytes() for name in (RECORDINGS, FORWARDING, KEY_NAME, PLUGIN_DB)
    }

    report = restore_state(backup, state, clock=clock)

    assert report.aside == state / ASIDE
    assert sorted(r.name for r in report.restored) == sorted(wanted)
    assert {r.name: r.kind for r in report.restored}[RECORDINGS] == "sqlite"
    assert sorted(report.replaced) == sorted(wanted)
    assert MARK_FILE in report.moved_aside
    assert "a-link" in report.moved_aside
    assert report.folders_kept == ["plugin-folder"]
    assert report.made_by is not None
    assert report.made_by.startswith("callrouter ")
    # The state folder holds exactly the backup's files (and the folders).
    assert sorted(p.name for p in state.iterdir()) == sorted([*wanted, ASIDE, "plugin-folder"])
    for name, content in wanted.items():
        assert (state / name).read_bytes() == content, name
        info = (state / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, name
        assert (info.st_uid, info.st_gid) == (state.stat().st_uid, state.stat().st_gid)
    # Nothing lost: every earlier file is in the aside folder, as it was.
    aside = state / ASIDE
    assert stat.S_IMODE(aside.stat().st_mode) == 0o700
    for name, content in before.items():
        if name.startswith("plugin-folder"):
            continue
        kept = aside / name
        if isinstance(content, str):
            assert f"-> {os.readlink(kept)}" == content
        else:
            assert kept.read_bytes() == content, name
    # The service opens what was restored: the row made after the backup is gone.
    assert ForwardingState(state).get("101").dnd
    assert rows(state) == 1
    RecordingStore(state).close()


def test_a_state_folder_reached_through_a_link_is_restored_in_place(
    backed_up: tuple[Path, Path],
) -> None:
    """Under DynamicUser=yes /var/lib/callrouter is a link into
    /var/lib/private: the path given is followed to the folder, as `run`
    follows it, and the files go into that folder."""
    state, backup = backed_up
    link = state.parent / "var-lib-callrouter"
    link.symlink_to(state)
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    report = restore_state(backup, link, clock=clock)
    assert MARK_FILE in report.moved_aside
    assert link.is_symlink()
    assert (state / ASIDE / MARK_FILE).exists()
    assert (state / FORWARDING).read_bytes() == (backup / FORWARDING).read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_run_as_root_the_files_are_the_state_folders_owners(
    backed_up: tuple[Path, Path],
) -> None:
    """As `run` needs them: a root shell restoring the DynamicUser's folder
    left root's 0600 files the service could not open."""
    state, backup = backed_up
    os.chown(state, 65534, 65534)
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    report = restore_state(backup, state, clock=clock)
    for restored in report.restored:
        info = (state / restored.name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, restored.name
        assert (info.st_uid, info.st_gid) == (65534, 65534), restored.name
    aside = (state / ASIDE).stat()
    assert (aside.st_uid, aside.st_gid, stat.S_IMODE(aside.st_mode)) == (65534, 65534, 0o700)


def test_a_backup_made_before_manifests_is_restored_with_a_note(
    backed_up: tuple[Path, Path],
) -> None:
    """Stays compatible with the backups the earlier `state backup` made."""
    state, backup = backed_up
    (backup / MANIFEST).unlink()
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    report = restore_state(backup, state, clock=clock)
    assert report.made_by is None
    assert MARK_FILE in report.moved_aside
    assert sorted(p.name for p in state.iterdir()) == sorted(
        [RECORDINGS, FORWARDING, KEY_NAME, PLUGIN_DB, ASIDE]
    )


# -- refusals: each names the file, and changes nothing ------------------------------


def refused(backup: Path, state: Path, message: str) -> str:
    before = snapshot(state)
    with pytest.raises(StateRestoreError) as caught:
        restore_state(backup, state, clock=clock)
    assert message in str(caught.value), str(caught.value)
    assert snapshot(state) == before
    return str(caught.value)


def test_a_running_router_is_named_by_its_pid(backed_up: tuple[Path, Path]) -> None:
    """callrouter keeps its databases open (SQLite locked) while it runs: the
    lock's holder is the pid named, and nothing is restored under it."""
    state, backup = backed_up
    code = (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(state / RECORDINGS)!r})\n"
        "db.execute('SELECT count(*) FROM sqlite_master').fetchone()\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with holding(code, ready="open") as child:
        said = refused(backup, state, f"held open and locked by pid {child.pid} (")
        assert said.startswith(f"{state / RECORDINGS}: "), said
        assert "stop it first" in said
        assert sys.executable in said  # the holder's command line
    restore_state(backup, state, clock=clock)  # stopped: restored


def test_a_router_with_no_file_open_is_refused_by_its_folder_lock(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    """``callrouter run`` locks its state folder for its whole run, with or
    without a database open in it (no [api], recordings or 1C plugin): the
    restore takes that same lock, so such a router is refused too, by pid."""
    state, backup = backed_up
    engine = locking_engine(tmp_path, state)
    engine._check_state_dir()  # what `callrouter run` does at start
    try:
        said = refused(backup, state, f"{state}: in use by a running `callrouter run` (pid ")
        assert f"(pid {os.getpid()} (" in said
        assert "stop it first" in said
    finally:
        engine._unlock_state_dir()
    restore_state(backup, state, clock=clock)  # stopped: restored


def test_a_router_started_during_a_restore_says_the_restore(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    """hattack45: `callrouter run` started while a restore held the folder
    said it was "in use by another `callrouter run`", which was not there,
    and a second restore that a router ran there; both name the restore."""
    state, backup = backed_up
    # Short: the command line is said up to 200 characters.
    code = (
        "import fcntl,os,sys;f=os.open(sys.argv[-1],0);fcntl.flock(f,2)\n"
        "print('held',flush=True);sys.stdin.read()"
    )
    with holding(code, "callrouter", "state", "restore", str(state), ready="held") as holder:
        engine = locking_engine(tmp_path, state)
        with pytest.raises(ConfigError) as started:
            engine._check_state_dir()
        said = refused(backup, state, f"{state}: being restored by pid {holder.pid} (")
    assert f"{state} is being restored by pid {holder.pid} (" in str(started.value)
    assert "start callrouter once it has ended" in str(started.value)
    assert "wait for it to end" in said


def test_the_restore_holds_the_folder_lock_until_it_ends(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `callrouter run` started while the files are being copied in finds
    the folder locked and refuses to start, instead of opening files half put
    back; once the restore ends the folder is free."""
    state, backup = backed_up
    tried: list[bool] = []
    copy_in = staterestore._copy_in

    def copying(*args: object, **kwargs: object) -> object:
        probe = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tried.append(False)
        except BlockingIOError:
            tried.append(True)
        finally:
            os.close(probe)
        return copy_in(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(staterestore, "_copy_in", copying)
    restore_state(backup, state, clock=clock)
    assert tried
    assert all(tried), tried
    probe = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(probe)


def test_lock_holder_says_none_for_an_unlocked_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert lock_holder(fd) is None
    finally:
        os.close(fd)


def test_a_backup_cut_short_is_refused(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    (backup / f".{FORWARDING}.partial").write_text("{", "utf-8")
    refused(backup, state, f"{backup}/.{FORWARDING}.partial: a copy under its temporary name")


def test_a_file_missing_from_the_backup_is_refused(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    (backup / KEY_NAME).unlink()
    refused(backup, state, f"{backup / KEY_NAME}: missing: the backup's manifest")


def test_a_file_of_another_size_is_refused(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    with (backup / FORWARDING).open("ab") as out:
        out.write(b" ")
    refused(backup, state, f"{backup / FORWARDING}: ")


def test_a_file_changed_since_the_backup_is_refused(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    data = bytearray((backup / KEY_NAME).read_bytes())
    data[0] ^= 1  # same size
    (backup / KEY_NAME).write_bytes(bytes(data))
    refused(backup, state, f"{backup / KEY_NAME}: its SHA-256 is not the one in the")


def test_a_file_put_in_the_backup_after_it_is_refused(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    (backup / MARK_FILE).write_text("{}\n", "utf-8")
    refused(backup, state, f"{backup / MARK_FILE}: not in the backup's manifest")


@pytest.mark.parametrize("kind", ["link", "folder", "wal"])
def test_what_a_backup_never_holds_is_refused(backed_up: tuple[Path, Path], kind: str) -> None:
    """A link in the backup is never followed; a folder, or a database's
    -wal, is no backup's (the state folder itself given, a cp -a of it)."""
    state, backup = backed_up
    (backup / MANIFEST).unlink()  # not even in a backup without a manifest
    name = {"link": "evil", "folder": "sub", "wal": f"{RECORDINGS}-wal"}[kind]
    if kind == "link":
        (backup / name).symlink_to("/etc/shadow")
    elif kind == "folder":
        (backup / name).mkdir()
    else:
        (backup / name).write_bytes(b"")
    what = {"link": "a symbolic link", "folder": "a folder", "wal": "SQLite's -wal file"}[kind]
    refused(backup, state, f"{backup / name}: {what}")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"format": 99, "made_by": "callrouter 9.0", "files": []}, "format 99 (made by"),
        ({"files": []}, 'no "format" number'),
        ({"format": 1, "files": [{"name": "../x", "size": 1}]}, 'file 1 of "files": expected'),
        ({"format": 1, "files": []}, "lists no file"),
    ],
)
def test_a_manifest_this_version_cannot_trust_is_refused(
    backed_up: tuple[Path, Path], manifest: object, message: str
) -> None:
    state, backup = backed_up
    (backup / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    refused(backup, state, f"{backup / MANIFEST}: {message}")


def test_a_manifest_nested_thousands_deep_is_refused_naming_it(
    backed_up: tuple[Path, Path],
) -> None:
    """hattack45: json's decoder recursed out of the stack on a crafted
    manifest, and the restore ended in a RecursionError's traceback."""
    state, backup = backed_up
    (backup / MANIFEST).write_text('{"format": 1, "files": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(backup, state, f"{backup / MANIFEST}: not the manifest JSON: arrays or objects nested")


def test_a_manifest_of_more_files_than_a_backup_holds_is_refused(
    backed_up: tuple[Path, Path],
) -> None:
    """hattack45: 30 000 names (4 MiB) were each compared with every other
    (25 s) before the first was found missing."""
    state, backup = backed_up
    manifest = json.loads((backup / MANIFEST).read_text("utf-8"))
    first = manifest["files"][0]
    manifest["files"] = [dict(first, name=f"n{i}") for i in range(MAX_ENTRIES + 1)]
    (backup / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    refused(backup, state, f'{backup / MANIFEST}: "files" lists {MAX_ENTRIES + 1} files')


def test_a_plain_file_larger_than_a_backup_copies_is_refused(
    backed_up: tuple[Path, Path],
) -> None:
    """hattack45: a sparse file of gigabytes (a few blocks in the backup) was
    written out whole into the state folder; state backup leaves out every
    file over MAX_PLAIN_BYTES that is not SQLite, so none is restored."""
    state, backup = backed_up
    (backup / MANIFEST).unlink()
    with (backup / "big").open("wb") as big:
        big.truncate(MAX_PLAIN_BYTES + 1)
    refused(backup, state, f"{backup / 'big'}: {MAX_PLAIN_BYTES + 1} bytes and not SQLite")


def test_a_manifest_listing_a_plain_file_larger_than_a_backup_copies_is_refused(
    backed_up: tuple[Path, Path],
) -> None:
    state, backup = backed_up
    manifest = json.loads((backup / MANIFEST).read_text("utf-8"))
    manifest["files"].append(
        {"name": "big", "size": MAX_PLAIN_BYTES + 1, "sha256": "0" * 64, "kind": "file"}
    )
    (backup / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    refused(backup, state, f"{backup / MANIFEST}: lists 'big' of {MAX_PLAIN_BYTES + 1} bytes")


def test_a_backup_larger_than_the_free_space_is_refused_before_a_copy(
    backed_up: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hattack45: a sparse database of terabytes was copied until the disk was
    full; the space is asked first, and nothing is written."""
    state, backup = backed_up
    needed = sum(p.stat().st_size for p in backup.iterdir() if p.name != MANIFEST)

    class Full:
        f_bavail, f_frsize = needed - 1, 1

    monkeypatch.setattr(staterestore.os, "fstatvfs", lambda fd: Full())
    refused(backup, state, f"{backup}: its files are {needed} bytes, and {state} has {needed - 1}")


def test_a_database_in_wal_mode_is_refused_leaving_nothing_beside_its_copy(
    backed_up: tuple[Path, Path],
) -> None:
    """hattack45: SQLite opened the WAL database's copy to check it and made
    its -wal and -shm in the state folder (root's, as root restores), which
    the refusal left there: said from the file's header instead."""
    state, backup = backed_up
    manifest = json.loads((backup / MANIFEST).read_text("utf-8"))
    db = sqlite3.connect(backup / "wal.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()  # the last connection: checkpointed, its -wal and -shm removed
    data = (backup / "wal.sqlite3").read_bytes()
    assert data[18:20] == b"\x02\x02"
    manifest["files"].append(
        {
            "name": "wal.sqlite3",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "kind": "sqlite",
        }
    )
    (backup / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    refused(backup, state, f"{backup / 'wal.sqlite3'}: a database in WAL mode")


def test_a_name_in_the_backup_writes_no_line_of_its_own(backed_up: tuple[Path, Path]) -> None:
    """hattack45: a file named ``x<newline>callrouter state restore: ...`` put
    a line of its own under the error (the CLI keeps an error's newlines)."""
    state, backup = backed_up
    (backup / "x\ncallrouter state restore: done").write_text("x")
    message = refused(backup, state, f"{backup}/x\\x0acallrouter state restore: done: not in")
    assert "\n" not in message


@pytest.mark.parametrize("fmt", [1, 99])
def test_the_version_a_manifest_names_is_said_within_bounds(
    backed_up: tuple[Path, Path], fmt: int
) -> None:
    """hattack45: a crafted made_by of megabytes was printed whole, in the
    restore's last line or in its refusal of a later format."""
    state, backup = backed_up
    manifest = json.loads((backup / MANIFEST).read_text("utf-8"))
    manifest["made_by"] = "callrouter 9" + "9" * 1_000_000
    manifest["format"] = fmt
    (backup / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    if fmt == 1:
        report = restore_state(backup, state, clock=clock)
        assert report.made_by == "callrouter 9" + "9" * (staterestore.MAX_MADE_BY - 12)
    else:
        message = refused(backup, state, "(made by 'callrouter 99")
        assert len(message) < 1000


@pytest.mark.parametrize("how", ["owner", "mode", "group"])
@pytest.mark.parametrize("name", [MANIFEST, KEY_NAME])
def test_a_file_of_the_backup_another_user_can_write_is_refused(
    backed_up: tuple[Path, Path], how: str, name: str
) -> None:
    """hattack45: the backup's folder was held to root and this user, not its
    files: one another user owned or could write (a careless chmod 666 of
    the backup) was restored, its manifest with it, as the service's state
    (recordings.key signs the recordings' links)."""
    state, backup = backed_up
    path = backup / name
    if how == "owner":
        if os.geteuid() != 0:
            pytest.skip("chown needs root")
        os.chown(path, 65534, 65534)
        said = f"{path}: belongs to uid 65534, who could have changed it"
    elif how == "mode":
        path.chmod(0o606)
        said = f"{path}: is writable by every user"
    else:
        group = 65534 if os.geteuid() == 0 else os.getgid()
        if os.geteuid() == 0:
            os.chown(path, -1, group)
        path.chmod(0o660)
        if staterestore.private_group(group, path.stat().st_uid):
            pytest.skip("the group is this user's private group")
        said = f"{path}: is writable by its group (gid {group})"
    assert "cannot read the manifest" not in refused(backup, state, said)


def test_a_damaged_database_in_an_old_backup_is_refused(backed_up: tuple[Path, Path]) -> None:
    """No manifest to compare with: SQLite's quick_check still reads each database."""
    state, backup = backed_up
    (backup / MANIFEST).unlink()
    data = bytearray((backup / PLUGIN_DB).read_bytes())
    data[4096:8192] = b"\xff" * 4096  # the events table's page
    (backup / PLUGIN_DB).write_bytes(bytes(data))
    refused(backup, state, f"{backup / PLUGIN_DB}: ")


def test_an_empty_folder_is_no_backup(tmp_path: Path) -> None:
    state, backup = tmp_path / "state", tmp_path / "backup"
    state.mkdir(mode=0o700)
    backup.mkdir(mode=0o700)
    refused(backup, state, f"{backup}: no files: not a backup")


def test_the_state_folder_itself_or_a_folder_in_it_is_refused(
    backed_up: tuple[Path, Path],
) -> None:
    state, _ = backed_up
    refused(state, state, f"{state}: the state folder {state} is this folder")
    (state / "inner").mkdir()
    refused(state / "inner", state, "the state folder")


def test_a_state_folder_others_can_write_in_is_refused(backed_up: tuple[Path, Path]) -> None:
    """`callrouter run` refuses it (router/private_dir.py): another user could
    put a link where a restored file goes."""
    state, backup = backed_up
    state.chmod(0o777)
    refused(backup, state, f"{state}: {state} is writable by its group and every user")


def test_a_backup_folder_others_can_write_in_is_refused(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    backup.chmod(0o777)
    refused(backup, state, f"{backup}: not a folder only root and this user can change")


def renames_failing_after_the_first_copy(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException]
) -> list[str]:
    """``os.rename`` raising a new ``error()`` at the restore's second copy
    renamed into the state folder (a ``.restore-`` name), after the first one
    was: the list the first copy's name is put in."""
    real = os.rename
    done: list[str] = []

    def rename(src: str, dst: str, **kwargs: int) -> None:
        if ".restore-" in src and done:
            raise error()
        if ".restore-" in src:
            done.append(src)
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    return done


def test_a_file_gone_between_the_listing_and_the_switch_is_passed_over(
    backed_up: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a name the state folder's listing gave that is gone when the
    switch looks at it (an sqlite3 shell's -wal removed at its close) ended
    the restore with a traceback; it is passed over, the rest restored."""
    state, backup = backed_up
    listed = staterestore._names

    def with_a_ghost(path: Path, fd: int) -> list[str]:
        names = listed(path, fd)
        return sorted([*names, "gone.sqlite3-wal"]) if path == state else names

    monkeypatch.setattr(staterestore, "_names", with_a_ghost)
    report = restore_state(backup, state, clock=clock)
    assert "gone.sqlite3-wal" not in report.moved_aside
    assert sorted(r.name for r in report.restored) == sorted(
        [RECORDINGS, FORWARDING, KEY_NAME, PLUGIN_DB]
    )


def test_a_failed_switch_puts_the_state_folder_back(
    backed_up: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename refused half way (the disk gone read-only) undoes the ones
    made: the state folder is as it was, the copies removed."""
    state, backup = backed_up
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    before = snapshot(state)
    renames_failing_after_the_first_copy(monkeypatch, lambda: OSError(30, "Read-only file system"))
    with pytest.raises(StateRestoreError, match="the state folder is as it was"):
        restore_state(backup, state, clock=clock)
    monkeypatch.undo()
    assert snapshot(state) == before


def test_a_switch_that_cannot_be_undone_into_an_empty_folder_says_so(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state folder that held nothing has no aside folder: a switch failed
    and not undone said "what was there is in None"."""
    _, backup = backed_up
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    real = os.rename
    done: list[str] = []

    def rename(src: str, dst: str, **kwargs: int) -> None:
        if done:  # the second copy's rename, and the undoing of the first
            raise OSError(30, "Read-only file system")
        done.append(src)
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(StateRestoreError) as caught:
        restore_state(backup, empty, clock=clock)
    monkeypatch.undo()
    said = str(caught.value)
    assert said.endswith("the state folder is part restored: it held no file before"), said
    assert "None" not in said


def test_an_interrupt_during_the_switch_puts_the_state_folder_back(
    backed_up: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt (or a signal handler's exception) between two
    renames is undone as an OSError is: the state folder was left half
    switched, the copies not yet renamed deleted, and the command exited
    130 saying nothing (issue 16)."""
    state, backup = backed_up
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    before = snapshot(state)
    done = renames_failing_after_the_first_copy(monkeypatch, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        restore_state(backup, state, clock=clock)
    monkeypatch.undo()
    assert done
    assert snapshot(state) == before


def test_a_hangup_during_the_switch_waits_for_its_end(backed_up: tuple[Path, Path]) -> None:
    """SIGHUP (an SSH session dropped), SIGINT and SIGTERM are held back while
    the files are renamed: one that comes then ends the command once the
    state folder is the backup's, not between two renames."""
    state, backup = backed_up
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    wanted = sorted(p.name for p in backup.iterdir() if p.name != MANIFEST)
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from router.staterestore import restore_state\n"
        "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
        "signal.pthread_sigmask(signal.SIG_SETMASK, ())\n"
        "real = os.rename\n"
        "def rename(src, dst, **kwargs):\n"
        "    if '.restore-' in src:\n"
        "        os.kill(os.getpid(), signal.SIGHUP)\n"
        "    real(src, dst, **kwargs)\n"
        "os.rename = rename\n"
        "restore_state(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "print('not ended by the SIGHUP')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, str(backup), str(state)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == -signal.SIGHUP, (ran.returncode, ran.stdout, ran.stderr)
    names = sorted(p.name for p in state.iterdir())
    asides = [n for n in names if n.startswith(ASIDE_PREFIX)]
    assert len(asides) == 1, names
    assert sorted(set(names) - set(asides)) == wanted
    for name in wanted:
        assert (state / name).read_bytes() == (backup / name).read_bytes(), name
    assert (state / asides[0] / MARK_FILE).read_text("utf-8") == "{}\n"


# -- the command ---------------------------------------------------------------------


def test_a_round_trip_through_the_command(tmp_path: Path) -> None:
    """backup, the state changed, restore: exit 0 and the state as backed up;
    a refusal exits 1 with the file named, as `state backup`'s errors do."""
    state, backup = tmp_path / "state", tmp_path / "backup"
    state.mkdir(mode=0o700)
    RecordingStore(state).close()
    add_row(state, "one")
    ForwardingState(state).set("102", Forwarding(dnd=True))
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        f'secret_env = "CALLROUTER_SECRET"\n[router]\nstate_dir = "{state}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "CALLROUTER_SECRET"}

    def callrouter(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "router.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
        )

    made = callrouter("state", "backup", str(backup), "--config", str(cfg))
    assert made.returncode == 0, made.stderr
    saved = {n: (backup / n).read_bytes() for n in (RECORDINGS, FORWARDING, PLUGIN_DB)}
    digest = hashlib.sha256(saved[FORWARDING]).hexdigest()
    assert digest in (backup / MANIFEST).read_text("utf-8")

    add_row(state, "two")
    ForwardingState(state).set("102", Forwarding(dnd=False))
    (state / MARK_FILE).write_text('{"mark": 3.0, "told": {}}\n', "utf-8")

    # While a process holds the catalog: refused, exit 1, the file and pid named.
    code = (
        f"import sqlite3,sys\ndb=sqlite3.connect({str(state / RECORDINGS)!r})\n"
        "db.execute('SELECT 1 FROM sqlite_master').fetchall()\nprint('open',flush=True)\n"
        "sys.stdin.read()\n"
    )
    with holding(code, ready="open") as holder:
        busy = callrouter("state", "restore", str(backup), "--config", str(cfg))
    assert busy.returncode == 1
    assert busy.stderr.startswith(f"callrouter state restore: error: {state}/"), busy.stderr
    assert f"locked by pid {holder.pid}" in busy.stderr
    assert (state / MARK_FILE).exists()

    done = callrouter("state", "restore", str(backup), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert f"{MARK_FILE}: moved aside: not in the backup" in done.stdout
    assert f"{FORWARDING}: replaced; the earlier file moved aside" in done.stdout
    assert f"what {state} held before is in {state / ASIDE_PREFIX}" in done.stdout
    assert not (state / MARK_FILE).exists()
    for name, content in saved.items():
        assert (state / name).read_bytes() == content
    assert rows(state) == 1
    assert ForwardingState(state).get("102").dnd

    # --state-dir: a plugin's own folder; a wrong command line exits 2.
    assert callrouter("state", "restore", "", "--state-dir", str(state)).returncode == 2


def test_the_command_names_the_file_it_refuses(
    backed_up: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, backup = backed_up
    (backup / KEY_NAME).unlink()
    assert main(["state", "restore", str(backup), "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"callrouter state restore: error: {backup / KEY_NAME}: missing"), err


def test_the_restore_s_help_says_a_running_router_is_refused_by_its_folder_lock(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The help said a restore was refused while callrouter run "holds a file
    there locked": since run locks the folder itself, a router with no file
    open there is refused too, and one started meanwhile refuses to start
    (hnewuser45's trial, issue 16)."""
    with pytest.raises(SystemExit) as done:
        main(["state", "restore", "--help"])
    assert done.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "while a callrouter run holds the state folder's lock" in said
    assert "with or without a file open there" in said
    assert "a callrouter run started meanwhile refuses to start" in said


def state_on_a_utf8_terminal(*argv: str) -> subprocess.CompletedProcess[str]:
    """``callrouter state ARGV...`` run as on a ru_RU.UTF-8 terminal: Python's
    stdout is strict there (in the C locale, all this machine may have, it is
    surrogateescape); what it prints is read with backslash escapes."""
    return subprocess.run(
        [sys.executable, "-m", "router.cli", "state", *argv],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        cwd=REPO,
        check=False,
    )


def test_a_file_name_that_is_not_utf8_is_backed_up_and_restored(tmp_path: Path) -> None:
    """hattack45: a plugin's file whose name is not UTF-8 ended the backup in
    a UnicodeEncodeError's traceback (the manifest, written as UTF-8, could
    not hold it), and printing it did on a UTF-8 terminal (a strict stdout).
    The manifest holds it as its \\udcff escape, and it is printed as \\xff."""
    state, backup, again = tmp_path / "state", tmp_path / "backup", tmp_path / "again"
    state.mkdir(mode=0o700)
    again.mkdir(mode=0o700)
    name = os.fsdecode(b"\xffplugin.json")
    (state / name).write_text("{}\n", "utf-8")
    made = state_on_a_utf8_terminal("backup", "--state-dir", str(state), str(backup))
    assert made.returncode == 0, made.stderr
    assert "\\xffplugin.json: 3 bytes (copied)" in made.stdout, made.stdout
    done = state_on_a_utf8_terminal("restore", "--state-dir", str(again), str(backup))
    assert done.returncode == 0, done.stderr
    assert "\\xffplugin.json: 3 bytes restored" in done.stdout, done.stdout
    assert (again / name).read_text("utf-8") == "{}\n"


def test_folders_whose_names_are_not_utf8_are_printed_escaped(tmp_path: Path) -> None:
    """The closing lines name the folders: a backup folder (or state folder)
    whose name is not UTF-8 ended the backup, and the restore once it was
    done, in a UnicodeEncodeError's traceback and exit 1 on a UTF-8 terminal
    (a strict stdout): read as a restore that failed (issue 16)."""
    state = tmp_path / os.fsdecode(b"state\xfe")
    backup = tmp_path / os.fsdecode(b"backup\xff")
    state.mkdir(mode=0o700)
    (state / FORWARDING).write_text("{}\n", "utf-8")

    made = state_on_a_utf8_terminal("backup", "--state-dir", str(state), str(backup))
    assert made.returncode == 0, made.stderr
    assert f"1 file of {tmp_path}/state\\xfe backed up in {tmp_path}/backup\\xff" in made.stdout
    (state / MARK_FILE).write_text("{}\n", "utf-8")
    done = state_on_a_utf8_terminal("restore", "--state-dir", str(state), str(backup))
    assert done.returncode == 0, done.stderr
    assert f"of {tmp_path}/backup\\xff (made by callrouter " in done.stdout, done.stdout
    assert f"restored in {tmp_path}/state\\xfe\n" in done.stdout, done.stdout
    assert f"held before is in {tmp_path}/state\\xfe/{ASIDE_PREFIX}" in done.stdout
    assert not (state / MARK_FILE).exists()


# -- the file checked is the file put in place ------------------------------------


def _damage(backup: Path, name: str) -> None:
    """``name``'s copy in ``backup`` damaged past its header (SQLite's
    quick_check fails it), the manifest saying the damaged bytes."""
    path = backup / name
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page : page + 8] = b"\xff" * 8  # the second page's b-tree header
    path.write_bytes(bytes(data))
    manifest = json.loads((backup / MANIFEST).read_text("utf-8"))
    for entry in manifest["files"]:
        if entry["name"] == name:
            entry["size"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    (backup / MANIFEST).write_text(json.dumps(manifest), "utf-8")


def test_a_damaged_copy_fails_the_check(backed_up: tuple[Path, Path]) -> None:
    state, backup = backed_up
    _damage(backup, RECORDINGS)
    refused(backup, state, f"{backup / RECORDINGS}: SQLite cannot read it: database disk image")


@pytest.mark.parametrize("put_back", [False, True], ids=["left", "put-back"])
def test_a_copy_swapped_while_sqlite_opens_it_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, put_back: bool
) -> None:
    """The quick_check opened the copy by its name, then the copy was renamed
    into place: a link put at that name (by the state folder's owner, when
    root restores) was followed by root's SQLite, which checked the file it
    points to; left there, the link was put in place as the state file; put
    back as soon as SQLite had opened the other file, a damaged copy passed
    as checked. The copy SQLite opens is now held to the file written."""
    state, backup = backed_up
    _damage(backup, RECORDINGS)
    sound = tmp_path / "sound.sqlite3"
    RecordingStore(tmp_path / "elsewhere").close()
    with sqlite3.connect(tmp_path / "elsewhere" / RECORDINGS) as db:
        db.execute("PRAGMA journal_mode=DELETE")  # as a backup's copy is
    os.rename(tmp_path / "elsewhere" / RECORDINGS, sound)
    real = sqlite3.connect

    def swapping(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        name = Path(str(database).split("?")[0].removeprefix("file:"))
        if not name.name.startswith(f".{RECORDINGS}.restore-"):
            return real(database, *args, **kwargs)  # type: ignore[arg-type]
        os.rename(name, tmp_path / "written")
        name.symlink_to(sound)
        db = real(database, *args, **kwargs)  # type: ignore[arg-type]
        if put_back:
            name.unlink()
            os.rename(tmp_path / "written", name)
        return db

    monkeypatch.setattr(staterestore.sqlite3, "connect", swapping)
    said = refused(backup, state, f"{backup / RECORDINGS}: ")
    assert "not the file SQLite checked" in said or "replaced while" in said, said
