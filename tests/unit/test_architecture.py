"""The architecture rules hold, and the rules themselves can fail.

`make lint` runs lint-imports over the contracts in pyproject.toml. A contract
that nothing can break is worth nothing, so these tests copy the packages' module
layout as empty files into a temporary folder, check that the clean copy keeps
every contract, then add one forbidden import per rule and check that
lint-imports fails naming each of them. What import-linter cannot see (test
folders are not packages; a loop between two modules that no layer covers) is
checked here directly.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGES = {
    "router": ROOT / "router",
    "callrouter_onec": ROOT / "plugins" / "onec" / "callrouter_onec",
    "callrouter_vip": ROOT / "examples" / "plugin-vip-greeting" / "callrouter_vip",
}
PLUGIN_TESTS = [
    ROOT / "plugins" / "onec" / "tests",
    ROOT / "examples" / "plugin-vip-greeting" / "tests",
]

# (module that gets the import, the import, what lint-imports must print)
FORBIDDEN = [
    # sans-io
    ("router.ami.protocol", "import asyncio", "router.ami.protocol -> asyncio"),
    ("router.ami.message", "import httpx", "router.ami.message -> httpx"),
    ("router.ami.message", "import h11", "router.ami.message -> h11"),
    # rules-pure (an import for type checking counts too)
    (
        "router.rules.evaluate",
        "from router.ami import client",
        "router.rules.evaluate -> router.ami.client",
    ),
    (
        "router.rules.expr",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from router.engine import Engine",
        "router.rules.expr -> router.engine",
    ),
    # core-knows-no-plugin
    ("router.executor", "import callrouter_onec", "router.executor -> callrouter_onec"),
    # plugins-public-api
    (
        "callrouter_onec.plugin",
        "from router.calls import Call",
        "callrouter_onec.plugin -> router.calls",
    ),
    ("callrouter_vip", "from router.rules import decision", "callrouter_vip -> router.rules"),
    # layers: directly, for type checking only (the engine <-> hookspecs loop), and
    # through a module no layer lists
    ("router.calls", "from router.rules import registry", "router.calls -> router.rules"),
    (
        "router.hookspecs",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from router.engine import Engine",
        "router.hookspecs -> router.engine",
    ),
    ("router.ami.stream", "import router.config", "router.ami.stream -> router.config"),
    ("router.config", "from router.plugins import Plugins", "router.config -> router.plugins"),
]

# Imports every contract allows: the public API from a plugin.
ALLOWED = [
    ("callrouter_onec.plugin", "from router import hookimpl\nimport router.testing"),
    ("callrouter_vip", "from router import testing"),
]


def importlinter_config() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return config


def module_path(tree: Path, module: str) -> Path:
    """The file of `module` in a layout copy: a package's __init__.py or a .py file."""
    base = tree.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def empty_layout(tree: Path) -> None:
    """Every module of the real packages, as an empty file at the same place."""
    for name, source in PACKAGES.items():
        for path in source.rglob("*.py"):
            target = tree / name / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()


def add_import(tree: Path, module: str, statement: str) -> None:
    path = module_path(tree, module)
    assert path.exists(), f"{module} is not in the layout: the test's table is out of date"
    path.write_text(path.read_text() + statement + "\n")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts over the packages in `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--no-logo",
            str(PYPROJECT),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_issue_12_rule_is_a_contract() -> None:
    config = importlinter_config()
    contracts, roots = config["contracts"], config["root_packages"]
    assert isinstance(contracts, list)
    assert isinstance(roots, list)
    assert {c["id"] for c in contracts} == {
        "sans-io",
        "rules-pure",
        "core-knows-no-plugin",
        "plugins-public-api",
        "layers",
    }
    assert set(roots) == set(PACKAGES)


def test_the_clean_layout_keeps_every_contract(tmp_path: Path) -> None:
    empty_layout(tmp_path)
    for module, statement in ALLOWED:
        add_import(tmp_path, module, statement)
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def test_each_forbidden_import_fails_naming_it(tmp_path: Path) -> None:
    empty_layout(tmp_path)
    for module, statement, _ in FORBIDDEN:
        add_import(tmp_path, module, statement)
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 5 broken" in result.stdout, result.stdout
    missing = [shown for _, _, shown in FORBIDDEN if shown not in result.stdout]
    assert not missing, result.stdout


def test_a_chain_through_unlisted_modules_breaks_the_layers(tmp_path: Path) -> None:
    """ami -> config -> engine: neither import alone is listed, the chain is."""
    empty_layout(tmp_path)
    add_import(tmp_path, "router.ami.client", "import router.config")
    add_import(tmp_path, "router.config", "import router.engine")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "router.ami is not allowed to import router.engine" in result.stdout, result.stdout
    assert "router.ami.client -> router.config" in result.stdout
    assert "router.config -> router.engine" in result.stdout


def import_cycles(package: str) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan)."""
    graph = grimp.build_graph(package, cache_dir=None)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = [stack.pop()]
            while group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return cycles


def test_import_cycles_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle finder itself, on a throwaway package with one loop of three."""
    package = tmp_path / "loopy"
    package.mkdir()
    (package / "__init__.py").touch()
    (package / "a.py").write_text("from loopy import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loopy import c\n"
    )
    (package / "c.py").write_text("import loopy.a\n")
    (package / "d.py").write_text("import loopy.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("loopy") == [["loopy.a", "loopy.b", "loopy.c"]]


def test_no_import_loop_in_router() -> None:
    """Imports for type checking count: a loop at type level is still a layering error."""
    assert import_cycles("router") == []


def public_api_violations(path: Path) -> list[str]:
    """Every import of a router module other than the root and router.testing."""
    submodules = {
        p.stem
        for p in (ROOT / "router").iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    } - {"__init__"}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "router":
                names += [f"router.{a.name}" for a in node.names if a.name in submodules]
        for name in names:
            if name.startswith("router.") and name != "router.testing":
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{shown}:{node.lineno}: {name}")
    return found


def test_public_api_check_sees_internals(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import router\nfrom router import hookimpl, testing\n"
        "from router.testing import ReplayAsterisk\n"
        "from router import calls\nimport router.config\n"
        "from router.testing.replay import ReplayAsterisk\n"
        "def f():\n    from router.rules.decision import Trace\n"
    )
    found = sorted(line.split(": ", 1)[1] for line in public_api_violations(sample))
    assert found == [
        "router.calls",
        "router.config",
        "router.rules.decision",
        "router.testing.replay",
    ]


def test_plugin_tests_import_only_the_public_api() -> None:
    """lint-imports sees packages only; the plugins' tests are held to the same rule here."""
    files = sorted(p for folder in PLUGIN_TESTS for p in folder.rglob("*.py"))
    assert files
    violations = [v for path in files for v in public_api_violations(path)]
    assert violations == []
