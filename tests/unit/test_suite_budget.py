"""``make test`` keeps within its time budget by running ``tests/`` on pytest-xdist
workers (CONTRIBUTING.md): these check that the pieces of that stay in place."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_make_runs_tests_on_workers_a_file_at_a_time() -> None:
    """A file per worker (loadfile): module fixtures (a private Asterisk, phones, a
    router) are shared by the tests of one file and would start once per worker
    under any other distribution."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    default = re.search(r"^PYTEST_WORKERS \?= (\d+)$", makefile, re.MULTILINE)
    assert default is not None
    assert int(default.group(1)) >= 2
    [run] = [line for line in makefile.splitlines() if "-m pytest" in line and " tests ||" in line]
    assert "-n $(PYTEST_WORKERS) --dist loadfile" in run


def test_pytest_xdist_is_a_test_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [
        re.split(r"[<>=!~ \[]", req)[0].lower() for req in project["optional-dependencies"]["test"]
    ]
    assert "pytest-xdist" in names


def test_contributing_says_how_to_run_in_one_process() -> None:
    text = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert "make test PYTEST_WORKERS=0" in text
