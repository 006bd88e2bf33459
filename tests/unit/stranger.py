"""A check run as another local user, for what only the kernel's permission
checks show (root reads and writes through any mode)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: A uid and gid no account on the machine has.
STRANGER = 54321
#: For a test that makes files of another uid (chown) or runs as one (setuid).
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another uid (chown)")


def as_stranger(check: Callable[[], object]) -> str:
    """What ``check`` returns (as text) or raises (an ``OSError``: its type and
    text), run in a child process as uid and gid :data:`STRANGER`."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's lines are not measured)
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(STRANGER)
            os.setuid(STRANGER)
            try:
                said = str(check())
            except OSError as exc:
                said = f"{type(exc).__name__}: {exc}"
            os.write(write_end, said.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(child, 0)
    return said


@contextlib.contextmanager
def folder_in_tmp(prefix: str) -> Iterator[Path]:
    """A new folder in ``/tmp`` (root's, 0700 until the test opens it up),
    removed after: :data:`STRANGER` cannot reach pytest's ``tmp_path``, whose
    ``/tmp/pytest-of-root`` is 0700."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base)
