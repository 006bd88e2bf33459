"""The sandbox's test for an exited Asterisk (router/sandbox ``_pid_exited``):
a process whose command line has emptied may still be exiting, so only a
zombie or a missing pid counts as gone (test_detached_instance_can_be_attached
once saw its parent still waiting on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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
