"""How ``make unit`` and ``make integration`` pick the 1C plugin's tests (issue 16).

Run on a copy of the Makefile in a folder of its own, with a stand-in main
suite and plugin: ``make integration`` looked for the text ``mark.integration``
in the plugin's tests, so a comment naming the marker started pytest workers
that found nothing. It asks pytest now.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLUGIN_PYPROJECT = """[tool.pytest.ini_options]
addopts = "--strict-markers"
markers = ["integration: needs Asterisk", "slow: slow"]
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _tree(tmp_path: Path, plugin_test: str) -> Path:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_main.py").write_text("def test_main() -> None:\n    pass\n")
    onec = tmp_path / "plugins" / "onec"
    (onec / "tests").mkdir(parents=True)
    (onec / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (onec / "tests" / "test_plugin.py").write_text(plugin_test)
    return tmp_path


def _make(folder: Path, target: str) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "MAKE")) and name != "MFLAGS"
    }
    # The installed plugins (router.testing among them) cost 5 s a pytest here.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(folder),
            target,
            f"PY={sys.executable}",
            "PYTEST_WORKERS=0",
            "PYTEST_ARGS=-p no:cacheprovider -p xdist.plugin",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


UNMARKED = """import pytest

# Not marked: this comment only names pytest.mark.integration.


def test_plugin_unit() -> None:
    pass
"""

MARKED = """import pytest


def test_plugin_unit() -> None:
    pass


@pytest.mark.integration
def test_plugin_integration() -> None:
    pass
"""


def test_a_comment_naming_the_marker_is_no_integration_test(tmp_path: Path) -> None:
    done = _make(_tree(tmp_path, UNMARKED), "run-integration")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== plugins/onec: no integration tests" in done.stdout
    assert "== plugins/onec\n" not in done.stdout
    done = _make(tmp_path, "run-unit")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== plugins/onec\n" in done.stdout
    assert "1 passed" in done.stdout.split("== plugins/onec\n")[1]


def test_a_marked_plugin_test_runs_in_integration_and_not_in_unit(tmp_path: Path) -> None:
    done = _make(_tree(tmp_path, MARKED), "run-integration")
    assert done.returncode == 0, done.stdout + done.stderr
    plugin = done.stdout.split("== plugins/onec\n")[1]
    assert "1 passed, 1 deselected" in plugin
    done = _make(tmp_path, "run-unit")
    assert done.returncode == 0, done.stdout + done.stderr
    plugin = done.stdout.split("== plugins/onec\n")[1]
    assert "1 passed, 1 deselected" in plugin


def test_a_plugin_whose_tests_do_not_collect_fails_make_integration(tmp_path: Path) -> None:
    done = _make(_tree(tmp_path, "def broken(:\n"), "run-integration")
    assert done.returncode != 0
    assert "== plugins/onec: collecting its tests failed" in done.stdout
    assert "SyntaxError" in done.stdout
