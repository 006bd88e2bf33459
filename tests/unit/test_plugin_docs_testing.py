"""The plugin guide's "Testing with router.testing" section runs as written.

A plugin author copies three pieces of docs/plugins.md into a fresh package:
the ``conftest.py`` line, the pytest settings and the example test. They are
put into a temporary project beside the example plugin's rules and run by a
pytest of their own, so a piece the guide leaves out (the settings that let
pytest-asyncio run ``async def`` tests, an import) fails here, as it failed a
new user: ``async def functions are not natively supported``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
GUIDE = REPO / "docs" / "plugins.md"
EXAMPLE = REPO / "examples" / "plugin-vip-greeting"


def guide_testing_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(r"^## Testing with `router\.testing`\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert found is not None, "docs/plugins.md needs its '## Testing with `router.testing`'"
    return found.group(1)


def blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, re.M | re.S)


def test_the_documented_plugin_test_runs_as_written(tmp_path: Path) -> None:
    section = guide_testing_section()
    conftest = next(b for b in blocks(section, "python") if "pytest_plugins" in b)
    example = next(b for b in blocks(section, "python") if "async def test_" in b)
    settings = [b for b in blocks(section, "toml") if "[tool.pytest.ini_options]" in b]
    (tmp_path / "pyproject.toml").write_text("".join(settings), encoding="utf-8")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text(conftest, encoding="utf-8")
    (tests / "test_documented.py").write_text(example, encoding="utf-8")
    shutil.copytree(EXAMPLE / "tests" / "rules", tests / "rules")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(EXAMPLE), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
