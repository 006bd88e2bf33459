"""The plugin guide's mypy set-up (docs/plugins.md, Packaging) type-checks a plugin as written.

A plugin author's virtualenv has callrouter installed editable (``pip install -e``
of a checkout) and its runtime dependencies, but not callrouter's ``dev`` extra:
no ``types-PyYAML``, no ``lxml-stubs``. mypy then reads ``router`` as source
through ``mypy_path``, and with the guide's former set-up it reported
callrouter's own files (``Library stubs not installed for "yaml"``, ``Class
cannot subclass "SafeLoader"``) instead of the plugin: six errors, none the
author's. Here the guide's ``[tool.mypy]`` block, and the example package's own
``pyproject.toml``, are run by mypy against such an environment: this
interpreter's site-packages without its stub packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
GUIDE = REPO / "docs" / "plugins.md"
EXAMPLE = REPO / "examples" / "plugin-vip-greeting"

pytestmark = pytest.mark.slow


def packaging_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(r"^## Packaging\s*$(.*?)(?=^## )", text, re.M | re.S)
    assert found is not None, "docs/plugins.md needs its '## Packaging'"
    return found.group(1)


def mypy_block(section: str) -> str:
    found = [
        textwrap.dedent(b)
        for b in re.findall(r"^ *```toml\n(.*?)^ *```", section, re.M | re.S)
        if "[tool.mypy]" in b
    ]
    assert len(found) == 1, "the Packaging section shows one [tool.mypy] block"
    return found[0]


def without_stubs(tmp_path: Path) -> Path:
    """A virtualenv with this one's packages but none of its stub-only packages
    (``*-stubs``): callrouter and its dependencies as a plugin author has them."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    theirs.mkdir(parents=True, exist_ok=True)
    for entry in ours.iterdir():
        if entry.name.endswith("-stubs") or entry.name == "__pycache__":
            continue
        target = theirs / entry.name
        if not target.exists():
            target.symlink_to(entry)
    python = env / "bin" / "python"
    assert python.exists(), python
    return python


def mypy(project: Path, python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """mypy as the author runs it in the project's folder, on ``python``'s packages."""
    cache = project / ".mypy_cache"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-executable",
            str(python),
            "--cache-dir",
            str(cache),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=300,
        check=False,
    )


def test_the_guides_mypy_setup_checks_a_plugin_not_callrouter(tmp_path: Path) -> None:
    block = mypy_block(packaging_section())
    assert '"/path/to/callrouter"' in block, block
    project = tmp_path / "callrouter-vip"
    shutil.copytree(EXAMPLE / "callrouter_vip", project / "callrouter_vip")
    settings = block.replace('"/path/to/callrouter"', repr(str(REPO)).replace("'", '"'))
    (project / "pyproject.toml").write_text(settings, encoding="utf-8")
    python = without_stubs(tmp_path)
    done = mypy(project, python, "-p", "callrouter_vip")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Success" in done.stdout

    # The set-up still checks the plugin against the contract's types.
    source = project / "callrouter_vip" / "__init__.py"
    text = source.read_text(encoding="utf-8")
    source.write_text(
        text.replace('reader.string("variable", DEFAULT_VARIABLE)', 'reader.string("variable", 1)'),
        encoding="utf-8",
    )
    done = mypy(project, python, "-p", "callrouter_vip")
    assert done.returncode == 1, done.stdout[-3000:]
    assert 'Argument 2 to "string" of "SettingsReader"' in done.stdout, done.stdout[-3000:]
    assert "router/" not in done.stdout, done.stdout[-3000:]


def test_the_example_packages_own_mypy_setup_passes(tmp_path: Path) -> None:
    project = tmp_path / "plugin-vip-greeting"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("tests", ".mypy_cache"))
    text = (project / "pyproject.toml").read_text(encoding="utf-8")
    # Its mypy_path points at the checkout it sits in; the copy points there too.
    (project / "pyproject.toml").write_text(
        text.replace('"$MYPY_CONFIG_FILE_DIR/../.."', repr(str(REPO)).replace("'", '"')),
        encoding="utf-8",
    )
    done = mypy(project, without_stubs(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
