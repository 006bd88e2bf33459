"""A pid the sandbox recorded (Asterisk's in its state file, a phone's in its
pid file) is its process only while the command line names the instance
folder and the process started when it was recorded (``/proc/PID/stat``
field 22): a reused pid with a similar command line was taken for ours
(issue 16). Fake ``/proc`` data, no process started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import router.sandbox as sandbox_module
from router.sandbox import Sandbox, _pid_runs, stop_phone_orphans

PID = 4242
MARKER = "/srv/callrouter/unit"


def fake_process(proc: Path, pid: int, cmdline: str, started: int) -> None:
    """``proc/PID/cmdline`` and ``proc/PID/stat`` as Linux writes them: the
    name in parentheses (spaces and a ``)`` in it too), then field 3 on."""
    folder = proc / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    fields = ["S", "1", *["0"] * 17, str(started), "0", "0"]  # field 22 is the 20th here
    (folder / "stat").write_text(f"{pid} (as ter)isk) " + " ".join(fields) + "\n")


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "proc"
    folder.mkdir()
    monkeypatch.setattr(sandbox_module, "_PROC", folder)
    return folder


def box(tmp_path: Path, **fields: object) -> Sandbox:
    return Sandbox(root=tmp_path / "root", name="unit", http_port=1, ami_port=2, **fields)  # type: ignore[arg-type]


def test_a_pid_runs_only_with_the_start_time_recorded(proc: Path) -> None:
    fake_process(proc, PID, f"/usr/sbin/asterisk -f -C {MARKER}/etc/asterisk.conf", 1000)
    assert _pid_runs(PID, MARKER, 1000)
    # Reused: the same command line, a process started later.
    assert not _pid_runs(PID, MARKER, 999)
    # A state file of an older version records no start: the command line decides.
    assert _pid_runs(PID, MARKER)
    assert not _pid_runs(PID, "/srv/callrouter/other", 1000)
    assert not _pid_runs(PID + 1, MARKER, 1000)  # no such process


def test_an_attached_sandbox_is_not_running_on_a_reused_pid(proc: Path, tmp_path: Path) -> None:
    fake_process(proc, PID, f"/usr/sbin/asterisk -f -C {MARKER}/etc/asterisk.conf", 2000)
    assert box(tmp_path, pid=PID, pid_started=2000).running
    assert not box(tmp_path, pid=PID, pid_started=1500).running
    assert box(tmp_path, pid=PID).running  # recorded before start times were


def test_the_start_time_is_kept_in_the_state_file(tmp_path: Path) -> None:
    saved = box(tmp_path, pid=PID, pid_started=2000)
    saved.save_state()
    again = Sandbox.attach("unit", cache_dir=tmp_path)
    assert (again.pid, again.pid_started) == (PID, 2000)
    assert saved.state()["pid_started"] == 2000


@pytest.mark.parametrize(
    ("written", "killed"),
    [(f"{PID} 3000\n", True), (f"{PID} 2999\n", False), (f"{PID}\n", True)],
)
def test_a_leftover_phone_is_killed_only_when_it_started_as_its_pid_file_says(
    proc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, killed: bool
) -> None:
    fake_process(proc, PID, f"baresip -f {MARKER}/phones/101", 3000)
    pbx = box(tmp_path)
    folder = pbx.inst / "phones" / "101"
    folder.mkdir(parents=True)
    (folder / "pid").write_text(written, encoding="utf-8")
    kills: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: kills.append(pid))
    assert stop_phone_orphans(pbx) == int(killed)
    assert kills == ([PID] if killed else [])
    assert not (folder / "pid").exists()
