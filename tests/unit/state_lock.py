"""The state folder held: by a ``callrouter run`` in this process (its lock
on the folder), or by a child process holding a lock until it is let go."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from router.config import load_config
from router.engine import Engine, EngineOptions


def locking_engine(tmp_path: Path, state: Path) -> Engine:
    """An engine as ``callrouter run`` makes it (it locks its state folder),
    from a ``tmp_path/router.toml`` whose state_dir is ``state``: its
    ``_check_state_dir()`` takes the lock as run does at start, and
    ``_unlock_state_dir()`` drops it."""
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:9/asterisk"\nusername = "u"\n'
        f'secret_env = "CR_SECRET"\n[router]\nstate_dir = "{state}"\n',
        encoding="utf-8",
    )
    return Engine(
        load_config(config, environ={"CR_SECRET": "s"}),
        options=EngineOptions(lock_state_dir=True),
    )


@contextlib.contextmanager
def holding(
    code: str, *args: str, ready: str, cwd: Path | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A child ``python -c CODE ARGS...`` that takes its lock, prints the line
    ``ready`` and waits on its stdin: yielded once the line is read, let go
    (its stdin closed) and waited for on leaving."""
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        with child.stdin:
            assert child.stdout.readline() == f"{ready}\n"
            yield child
