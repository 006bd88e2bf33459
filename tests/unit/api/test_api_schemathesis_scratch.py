"""The schemathesis module builds its app at import, in every pytest-xdist
worker: the folders it makes for it go when the worker's interpreter exits.

Each ``make test`` left a ``callrouter-fuzz-*`` and a ``callrouter-fuzz-rules-*``
folder in /tmp per worker, made with ``tempfile.mkdtemp`` and never removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_importing_the_fuzzed_app_leaves_no_folder_behind(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, tests.unit.api.test_api_schemathesis; "
            "print(len(os.listdir(os.environ['TMPDIR'])))",
        ],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] != "0"  # the app had its folders there while it lived
    assert sorted(p.name for p in scratch.iterdir()) == []
