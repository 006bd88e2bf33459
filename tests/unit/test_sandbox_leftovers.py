"""Instance folders left behind by a process killed before it removed its
sandbox (SIGKILL, a timeout): ``status`` lists them, ``stop NAME --remove``
and ``stop --all --remove`` stop what still runs from them and delete them,
and an in-process sandbox whose process still runs is never taken for one.

No Asterisk is started: the instance folders are made in a temporary cache,
and a sleeping Python with Asterisk's command line stands in for Asterisk
(and one with a phone's for baresip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.sandbox import Sandbox, asterisk_pids, leftovers
from router.sandbox.__main__ import main

Spawn = Callable[..., subprocess.Popen[bytes]]


def folder(cache: Path, name: str) -> Path:
    inst = cache / "rootfs" / "srv" / "callrouter" / name
    (inst / "etc").mkdir(parents=True)
    return inst


def dead_owner(inst: Path) -> None:
    """The owner file of a process that has ended (killed before its clean-up)."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    (inst / "sandbox-owner.json").write_text(json.dumps({"pid": ended.pid, "started": 1}))


def live_owner(cache: Path, name: str) -> Sandbox:
    """An in-process sandbox of this (running) process, as Sandbox.start claims it."""
    box = Sandbox(root=cache / "rootfs", name=name, http_port=0, ami_port=0)
    box.claim()
    return box


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start sleeping stand-ins with a given command line; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def run(*args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", "import time\nwhile True: time.sleep(60)", *args]
        proc = subprocess.Popen(command, start_new_session=True)
        started.append(proc)
        # Popen can return (vfork) before the kernel has set the new command
        # line: until then /proc/PID/cmdline reads empty.
        expected = b"\0".join(a.encode() for a in command) + b"\0"
        deadline = time.monotonic() + 60
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes() != expected:
            assert proc.poll() is None, f"the stand-in exited {proc.returncode}"
            assert time.monotonic() < deadline, "the stand-in never showed its command line"
            time.sleep(0.001)
        return proc

    yield run
    for proc in started:
        proc.kill()
        proc.wait()


def asterisk(spawn: Spawn, cache: Path, name: str) -> subprocess.Popen[bytes]:
    """A stand-in Asterisk of the instance ``name`` in ``cache``. Not chrooted,
    it names its ``asterisk.conf`` by the path on this host (a real one names
    ``/srv/callrouter/NAME/...`` inside its chroot), so a stand-in of another
    run's cache, even of the same instance name, is not this cache's."""
    conf = cache / "rootfs" / "srv" / "callrouter" / name / "etc" / "asterisk.conf"
    return spawn("-f", "-n", "-C", str(conf))


def test_status_lists_a_folder_left_behind_and_says_how_to_remove_it(
    tmp_path: Path, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` read only the state files: a folder left by a killed test or
    bench (bench-route-27102, hadmin39, trialboot on the lead's host) was
    listed nowhere, its Asterisk still running."""
    dead_owner(folder(tmp_path, "bench-route-27102"))
    server = asterisk(spawn, tmp_path, "bench-route-27102")
    folder(tmp_path, "trialboot")  # from before the owner file, nothing running
    assert main(["--cache", str(tmp_path), "status"]) == 0
    out, err = capsys.readouterr()
    assert f"bench-route-27102 left     pid {server.pid}" in out
    assert "trialboot        left     pid -  " in out
    assert f"bench-route-27102: Asterisk still runs from it (pid {server.pid})" in err
    assert "trialboot: no Asterisk runs from it" in err
    assert "python -m router.sandbox stop NAME --remove" in err
    assert "python -m router.sandbox stop --all --remove" in err
    assert main(["--cache", str(tmp_path), "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["left_behind"], r["running"], r["pid"]) for r in rows] == [
        ("bench-route-27102", True, True, server.pid),
        ("trialboot", True, False, None),
    ]
    assert main(["--cache", str(tmp_path), "status", "trialboot"]) == 3
    assert "trialboot        left" in capsys.readouterr().out


def test_an_in_process_sandbox_of_a_running_process_is_not_left_behind(
    tmp_path: Path, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running test's sandbox has no state file either: its owner file names
    this live process, so it is not listed and ``stop --all --remove`` leaves it
    and its Asterisk alone."""
    box = live_owner(tmp_path, "pytest-in-use")
    server = asterisk(spawn, tmp_path, "pytest-in-use")
    assert [(f.name, f.left_behind) for f in leftovers(tmp_path)] == [("pytest-in-use", False)]
    assert main(["--cache", str(tmp_path), "status"]) == 0
    assert "no sandbox instances" in capsys.readouterr().out
    assert main(["--cache", str(tmp_path), "status", "pytest-in-use"]) == 3
    assert "in use by process" in capsys.readouterr().err
    assert main(["--cache", str(tmp_path), "stop", "--all", "--remove"]) == 0
    assert box.inst.is_dir()
    assert server.poll() is None


def test_a_folder_from_before_the_owner_file_is_in_use_while_its_python_runs(
    tmp_path: Path, spawn: Spawn
) -> None:
    """An older callrouter's in-process sandbox has no owner file: its Asterisk's
    parent is the Python that started it (this one), so it is in use too."""
    folder(tmp_path, "older")
    asterisk(spawn, tmp_path, "older")
    [found] = leftovers(tmp_path)
    assert not found.left_behind


def test_stop_remove_by_name_stops_its_asterisk_and_phones_and_deletes_it(
    tmp_path: Path, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, ``stop NAME --remove`` said "not started (no state file)" and
    left the folder and its Asterisk."""
    inst = folder(tmp_path, "hadmin39")
    dead_owner(inst)
    server = asterisk(spawn, tmp_path, "hadmin39")
    phone = spawn("-f", "/srv/callrouter/hadmin39/phones/101")
    (inst / "phones" / "101").mkdir(parents=True)
    (inst / "phones" / "101" / "pid").write_text(str(phone.pid))
    other = asterisk(spawn, tmp_path, "hadmin390")  # a name that starts the same: not touched
    assert main(["--cache", str(tmp_path), "stop", "hadmin39", "--remove"]) == 0
    out = capsys.readouterr().out
    assert (
        f"sandbox 'hadmin39' (left behind, no state file): Asterisk stopped (pid {server.pid})"
        in out
    )
    assert "instance folder removed" in out
    assert server.wait(timeout=30) is not None
    assert phone.wait(timeout=30) is not None
    assert not inst.exists()
    assert other.poll() is None
    assert main(["--cache", str(tmp_path), "status"]) == 0
    assert "no sandbox instances" in capsys.readouterr().out


def test_stop_without_remove_stops_the_asterisk_and_keeps_the_folder(
    tmp_path: Path, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = folder(tmp_path, "kept")
    dead_owner(inst)
    server = asterisk(spawn, tmp_path, "kept")
    assert main(["--cache", str(tmp_path), "stop", "kept"]) == 0
    assert "kept (--remove deletes it)" in capsys.readouterr().out
    assert server.wait(timeout=30) is not None
    assert inst.is_dir()


def test_stop_all_remove_takes_every_left_behind_folder_and_only_those(
    tmp_path: Path, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    left = folder(tmp_path, "bench-route-27102")
    dead_owner(left)
    server = asterisk(spawn, tmp_path, "bench-route-27102")
    older = folder(tmp_path, "trialboot")
    in_use = live_owner(tmp_path, "pytest-in-use")
    assert main(["--cache", str(tmp_path), "stop", "--all", "--remove"]) == 0
    out = capsys.readouterr().out
    assert "'bench-route-27102' (left behind" in out
    assert "'trialboot' (left behind, no state file): no Asterisk was running" in out
    assert "pytest-in-use" not in out
    assert server.wait(timeout=30) is not None
    assert not left.exists()
    assert not older.exists()
    assert in_use.inst.is_dir()


def test_asked_by_name_an_in_use_folder_is_stopped_and_says_whose_it_was(
    tmp_path: Path, spawn: Spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    box = live_owner(tmp_path, "asked")
    server = asterisk(spawn, tmp_path, "asked")
    assert main(["--cache", str(tmp_path), "stop", "asked", "--remove"]) == 0
    assert "in use by process" in capsys.readouterr().out
    assert server.wait(timeout=30) is not None
    assert not box.inst.exists()


def test_stop_never_removes_outside_the_instance_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "rootfs" / "srv" / "precious"
    outside.mkdir(parents=True)
    folder(tmp_path, "x")
    (tmp_path / "rootfs" / "srv" / "callrouter" / "link").symlink_to(outside)
    for name in ("../precious", "link", "/"):
        assert main(["--cache", str(tmp_path), "stop", name, "--remove"]) == 0
        assert "not started" in capsys.readouterr().out
    assert outside.is_dir()


def test_asterisk_pids_finds_the_server_not_its_cli_clients(tmp_path: Path, spawn: Spawn) -> None:
    server = asterisk(spawn, tmp_path, "found")
    conf = tmp_path / "rootfs" / "srv" / "callrouter" / "found" / "etc" / "asterisk.conf"
    spawn("-C", str(conf), "-rx", "core show channels")
    asterisk(spawn, tmp_path, "found2")
    assert asterisk_pids("/srv/callrouter/found", tmp_path / "rootfs") == [server.pid]


def test_two_caches_with_an_instance_of_the_same_name_are_told_apart(
    tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two caches (two users' runs, or two suites side by side) can each have
    an instance ``bench-route-27102``. Their Asterisk servers, chrooted into
    their own roots, have the same command line; ``status`` and ``stop
    --remove`` of one cache took the other's server for its own (seen when a
    second test run shared the host). Which root a process runs in tells them
    apart."""
    import router.sandbox as sandbox_module

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for cache in (mine, theirs):
        dead_owner(folder(cache, "bench-route-27102"))
    # As a real server runs: chrooted, naming the file inside its root.
    server = spawn("-f", "-n", "-C", "/srv/callrouter/bench-route-27102/etc/asterisk.conf")
    # This stand-in is not chrooted: its file is the host's /srv/callrouter's,
    # neither cache's (another run's stand-in, as the flaky test met).
    assert [(f.name, f.asterisk) for f in leftovers(mine)] == [("bench-route-27102", ())]
    real_root = sandbox_module._proc_root

    def proc_root(pid: int) -> str | None:
        return str(theirs / "rootfs") if pid == server.pid else real_root(pid)

    monkeypatch.setattr(sandbox_module, "_proc_root", proc_root)  # chrooted in theirs
    assert [(f.name, f.asterisk) for f in leftovers(theirs)] == [
        ("bench-route-27102", (server.pid,))
    ]
    assert [(f.name, f.asterisk) for f in leftovers(mine)] == [("bench-route-27102", ())]
    assert main(["--cache", str(mine), "stop", "--all", "--remove"]) == 0
    assert server.poll() is None


def test_sandbox_start_claims_its_folder_before_writing_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner file is written first, so a starting test's folder is never
    seen without it (and taken for left behind)."""
    import router.sandbox as sandbox_module

    seen: list[tuple[str, int | None, bool]] = []

    def write_configs(self: Sandbox) -> None:
        seen.extend((f.name, f.owner, f.left_behind) for f in leftovers(tmp_path))
        raise RuntimeError("stop here")

    monkeypatch.setattr(sandbox_module, "ensure_rootfs", lambda cache: tmp_path / "rootfs")
    monkeypatch.setattr(Sandbox, "write_configs", write_configs)
    with pytest.raises(RuntimeError, match="stop here"):
        Sandbox.start(name="claimed", cache_dir=tmp_path)
    assert seen == [("claimed", os.getpid(), False)]
    assert leftovers(tmp_path) == []  # the failed start removed its folder
    assert list((tmp_path / "rootfs" / "srv" / "callrouter").iterdir()) == []


def test_a_claim_on_a_folder_left_behind_makes_it_this_process_s(tmp_path: Path) -> None:
    """A new sandbox of the name of one left behind takes the folder over."""
    dead_owner(folder(tmp_path, "again"))
    assert [f.left_behind for f in leftovers(tmp_path)] == [True]
    live_owner(tmp_path, "again")
    assert [(f.owner, f.left_behind) for f in leftovers(tmp_path)] == [(os.getpid(), False)]


def test_an_owner_killed_and_not_yet_reaped_has_left_its_folder_behind(tmp_path: Path) -> None:
    """A killed owner stays a zombie until init reaps it; its pid and start
    time still match, and the folder read as in use (seen on the real sandbox
    right after a SIGKILL)."""
    from router.sandbox import _pid_exited, _proc_start

    inst = folder(tmp_path, "zombie-owner")
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        started = _proc_start(owner.pid)
        deadline = time.monotonic() + 60
        while not _pid_exited(owner.pid):  # a zombie until we reap it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _proc_start(owner.pid) == started
        (inst / "sandbox-owner.json").write_text(json.dumps({"pid": owner.pid, "started": started}))
        assert [f.left_behind for f in leftovers(tmp_path)] == [True]
    finally:
        owner.wait()
