"""The version ``callrouter --version`` prints is the one pip installed.

The upgrade steps (docs/operations.md, "Upgrading") start from telling the
installed version from the new one: a version kept in three places
(pyproject, ``router.__version__``, the 1C plugin's) that drift apart, or a
development version still called what milestone 1 was, defeats that.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import callrouter_onec

import router

ROOT = Path(__file__).resolve().parents[2]
#: What milestone 1 (f24a33de, tests/fixtures/milestone1) called itself.
MILESTONE1 = "0.1.0.dev0"


def _pyproject(path: Path) -> str:
    version = tomllib.loads(path.read_text(encoding="utf-8"))["project"]["version"]
    assert isinstance(version, str)
    return version


def test_the_package_the_distribution_and_pyproject_agree() -> None:
    declared = _pyproject(ROOT / "pyproject.toml")
    assert router.__version__ == declared
    assert importlib.metadata.version("callrouter") == declared


def test_the_1c_plugin_says_its_own_pyproject_version() -> None:
    declared = _pyproject(ROOT / "plugins" / "onec" / "pyproject.toml")
    assert callrouter_onec.__version__ == declared
    assert importlib.metadata.version("callrouter-onec") == declared


def test_the_cli_prints_it_and_it_is_not_milestone_1s() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "router.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == f"callrouter {router.__version__}"
    assert router.__version__ != MILESTONE1


def test_the_upgrade_steps_quote_both_versions() -> None:
    for page in ("docs/operations.md", "docs/ru/operations.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        assert f"`callrouter {MILESTONE1}`" in text, page
        assert f"`callrouter {router.__version__}`" in text, page
