"""The exit code of ``callrouter ARGV``, whether argparse (a value its type
refused: ``SystemExit``) or the command (its return value) ended it; and
``callrouter ARGV`` run as a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from router.cli import main

REPO = Path(__file__).parents[2]


def exit_code(argv: Sequence[str]) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``callrouter ARGS`` in a process of its own, in ``cwd``, with the AMI
    secret in ``CR_SECRET``: its exit code, stdout and stderr (60 s at most)."""
    env = {**os.environ, "CR_SECRET": "s", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
