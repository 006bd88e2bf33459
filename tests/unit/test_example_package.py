"""The example plugin (examples/plugin-vip-greeting) as the package an author copies.

Built into a wheel as ``pip`` builds it, installed (the wheel unpacked on the
path, its ``.dist-info`` with it), then used as an author uses it: ``callrouter
plugins`` finds it through its ``callrouter`` entry point, and its own tests
run against the installed package, not its source folder (which the copy no
longer has). The repository's own suite imports the module by path
(tests/unit/test_example_plugin.py); this is what shows that the folder is a
package a developer can copy: its wheel carries ``py.typed`` and the entry
point, and its tests pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "examples" / "plugin-vip-greeting"

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    for name in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        env.pop(name, None)
    return subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, env=env, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the copy, its wheel, the folder it is installed in)."""
    root = tmp_path_factory.mktemp("example")
    copy = root / "plugin-vip-greeting"
    shutil.copytree(
        EXAMPLE, copy, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__")
    )
    done = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(root / "dist"),
            str(copy),
        ],
        cwd=root,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = (root / "dist").glob("callrouter_vip-*.whl")
    site = root / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    shutil.rmtree(copy / "callrouter_vip")  # its tests can only import the installed one
    return copy, wheel, site


def test_the_wheel_carries_the_package_its_types_and_the_entry_point(
    built: tuple[Path, Path, Path],
) -> None:
    _, wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"callrouter_vip/__init__.py", "callrouter_vip/py.typed"} <= names, names
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "[callrouter]\nvip = callrouter_vip\n" in text, text


def test_callrouter_plugins_finds_the_installed_package(
    built: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, _, site = built
    done = run([sys.executable, "-m", "router.cli", "plugins", "--json"], tmp_path, site)
    assert done.returncode == 0, done.stderr[-3000:]
    [vip] = [p for p in json.loads(done.stdout) if p["name"] == "vip"]
    assert vip["version"] == "0.1.0"
    assert not vip["builtin"]


def test_its_own_tests_pass_against_the_installed_package(built: tuple[Path, Path, Path]) -> None:
    copy, _, site = built
    # The sandbox test needs a real Asterisk: tests/integration covers that path.
    done = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not sandbox"],
        copy,
        site,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout, done.stdout[-2000:]
    assert "failed" not in done.stdout, done.stdout[-2000:]
