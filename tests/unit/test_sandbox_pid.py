"""The sandbox's test for an exited Asterisk (router/sandbox ``_pid_exited``):
a process whose command line has emptied may still be exiting, so only a
zombie or a missing pid counts as gone (test_detached_instance_can_be_attached
once saw its parent still waiting on it), and a zombie main thread counts
only once no other thread of its process is left (the same test, again)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from router.sandbox import _pid_exited


def test_a_running_process_has_not_exited() -> None:
    assert not _pid_exited(os.getpid())


def test_an_unreaped_child_and_a_missing_pid_have() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while not _pid_exited(child.pid):  # a zombie until we reap it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert child.poll() == 0  # its parent sees it exited
    finally:
        child.wait()
    assert _pid_exited(2**22 + 12345)


#: A process whose main thread exits first while another thread goes on for a
#: moment, as the thread that runs Asterisk's shutdown outlives its main one.
LAST_THREAD_LATER = (
    "import ctypes, threading, time\n"
    "threading.Thread(target=time.sleep, args=(1.5,)).start()\n"
    "ctypes.CDLL(None).pthread_exit(None)\n"
)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_zombie_main_thread_with_another_thread_running_has_not_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", LAST_THREAD_LATER])
    try:
        deadline = time.monotonic() + 10
        while _state(child.pid) != "Z":  # its main thread is gone, the other sleeps
            assert child.poll() is None, "the process ended before its main thread was seen gone"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert not _pid_exited(child.pid)
        assert child.poll() is None  # its parent cannot reap it yet
        while not _pid_exited(child.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert child.poll() == 0  # once it counts as exited, its parent sees it so
    finally:
        child.wait()
