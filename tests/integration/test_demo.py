"""The README's first command: ``make demo`` runs examples/demo.py end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.sandbox import Sandbox

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_demo_routes_every_sample_call(sandbox: Sandbox) -> None:
    """(``sandbox`` only proves Asterisk can run here; the demo starts its own.)"""
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py"), "--wait", "3"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "14 of 14 calls landed where expected" in done.stdout
    assert "call history in the 1C double:" in done.stdout
    assert "WRONG" not in done.stdout
