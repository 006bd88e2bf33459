"""The plugin's tests take the main suite's flags (issue 16).

``-m "not integration"``, the main suite's unit run, crashed this suite at
collection: the plugin's pytest configuration (``--strict-markers``) did not
declare the marker, and pytest refuses an undeclared marker in ``-m``; under
xdist the workers' error ended in an INTERNALERROR and no test ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1]
ROOT = PLUGIN.parents[1]


def markers(pyproject: Path) -> set[str]:
    options = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["pytest"]
    return {line.split(":", 1)[0].strip() for line in options["ini_options"].get("markers", [])}


def test_the_plugin_declares_every_marker_of_the_main_suite() -> None:
    main = markers(ROOT / "pyproject.toml")
    assert {"integration", "slow"} <= main
    assert main <= markers(PLUGIN / "pyproject.toml")


def test_the_main_suites_unit_selection_collects_here() -> None:
    # Only pytest-asyncio of the installed pytest plugins (the markers are
    # pytest's own check): the rest cost seconds of start-up.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "pytest_asyncio.plugin",
            "--collect-only",
            "-m",
            "not integration and not slow",
            "tests/test_onec_phone.py",
        ],
        cwd=PLUGIN,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests collected" in done.stdout or "test collected" in done.stdout
