"""docs/architecture.md names modules, classes and constants of the code as
built: each one it names must exist (issue 12 item 4 moved the request path
into router/routing.py and the dialplan protocol into router/dialplan.py)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")

#: ``Class.attribute`` names the page uses, and the module that holds the class.
CLASSES = {
    "Router": "router.routing",
    "Dialplan": "router.dialplan",
    "Engine": "router.engine",
    "EngineOptions": "router.engine",
    "Executor": "router.executor",
    "CallTracker": "router.calls",
    "RouteRecord": "router.routing",
}


def test_every_router_path_the_page_names_exists() -> None:
    paths = set(re.findall(r"`(router/[\w/.]+)`", PAGE))
    assert "router/routing.py" in paths
    assert "router/dialplan.py" in paths
    missing = [p for p in sorted(paths) if not (ROOT / p).exists()]
    assert missing == []


def _map_rows(page: str) -> list[str]:
    """The rows of the page's module map table, each one line."""
    section = page.split("## Module map", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


#: A file a map row names: ``router/...``, ``callrouter_onec/...``, or a name
#: (``app.py``, ``ui/``, ``ami/event_filter.py``) in the folder of the row's module.
_NAMED_FILE = re.compile(r"`((?:[\w.-]+/)*(?:[\w-]+\.(?:py|json)|[\w-]+/))`")


def _named_in_map(page: str) -> set[Path]:
    """Every file and folder the module map names, resolved against the repository."""
    named: set[Path] = set()
    for row in _map_rows(page):
        first = row.split("|")[1]
        head = re.search(r"`(router/[\w/.]*)`", first)
        assert head is not None, f"a map row that names no router module: {row[:80]}"
        base = Path(head.group(1)) if head.group(1).endswith("/") else Path(head.group(1)).parent
        for name in _NAMED_FILE.findall(row):
            if name.startswith("router/"):
                named.add(ROOT / name)
            elif name.startswith("callrouter_onec/"):
                named.add(ROOT / "plugins" / "onec" / name)
            else:
                named.add(ROOT / base / name)
    return named


#: The folders whose every module the map names one by one; every other package
#: of router/ is named as a folder (``router/api/``) and its row says what it holds.
_ONE_BY_ONE = ("router", "router/ami")


def _map_problems(page: str) -> list[str]:
    named = _named_in_map(page)
    problems = [
        f"named but not there: {path.relative_to(ROOT)}"
        for path in sorted(named)
        if not path.exists()
    ]
    for folder in _ONE_BY_ONE:
        for module in sorted((ROOT / folder).glob("*.py")):
            if module.stat().st_size and module not in named:
                problems.append(f"not in the map: {module.relative_to(ROOT)}")
    for package in sorted((ROOT / "router").glob("*/__init__.py")):
        folder = package.parent
        if str(folder.relative_to(ROOT)) not in _ONE_BY_ONE and folder not in named:
            problems.append(f"not in the map: {folder.relative_to(ROOT)}/")
    return problems


def test_the_module_map_names_every_module_and_only_modules_that_exist() -> None:
    """issue 16: the map had gone without router/errors.py, router/eager.py,
    router/cli.py, router/ami/facade.py and 18 more modules added since."""
    assert _map_problems(PAGE) == []


def test_the_module_map_check_finds_a_missing_and_a_made_up_module() -> None:
    rows = _map_rows(PAGE)
    errors_row = next(r for r in rows if "`router/errors.py`" in r)
    without = PAGE.replace(errors_row + "\n", "")
    assert _map_problems(without) == ["not in the map: router/errors.py"]
    api_row = next(r for r in rows if r.startswith("| `router/api/` |"))
    assert _map_problems(PAGE.replace(api_row + "\n", "")) == ["not in the map: router/api/"]
    made_up = PAGE.replace("`router/errors.py`", "`router/errors.py`, `router/gone.py`")
    assert _map_problems(made_up) == ["named but not there: router/gone.py"]
    bare = PAGE.replace("`preflight.py` is", "`preflight.py` and `gone.py` are")
    assert _map_problems(bare) == ["named but not there: router/commands/gone.py"]


def test_every_class_attribute_the_page_names_exists() -> None:
    named = set(re.findall(r"`(\w+)\.(\w+)(?:\(\))?`", PAGE))
    checked = [(cls, attr) for cls, attr in named if cls in CLASSES]
    assert ("Router", "accept") in checked
    assert ("Dialplan", "deadline") in checked
    for cls, attr in checked:
        owner = getattr(importlib.import_module(CLASSES[cls]), cls)
        fields = getattr(owner, "__dataclass_fields__", {})
        assert hasattr(owner, attr) or attr in fields, f"{cls}.{attr}"


def _resolves(module: str, dotted: str) -> bool:
    """``module.a.b`` in router, or ``a.b`` on the object the engine holds under
    that name (its ``executor``, its ``plugins`` facade)."""
    from router.engine import Engine
    from router.executor import Executor
    from router.plugins import Plugins

    holders: list[object] = [importlib.import_module(f"router.{module}")]
    holders += {"executor": [Executor], "plugins": [Plugins], "engine": [Engine]}.get(module, [])
    for found in holders:
        for attr in dotted.split("."):
            found = getattr(found, attr, None)
        if found is not None:
            return True
    return False


def test_every_module_name_the_page_names_exists() -> None:
    """``routing._ROUTED_MEMORY``, ``builtin.actions.EXECUTE``, the data path's
    ``routing.Router.accept``, ``executor.run`` ..."""
    modules = r"calls|engine|executor|plugins|routing|dialplan|builtin\.actions"
    named = set(re.findall(rf"\b({modules})\.(\w+(?:\.\w+)*)", PAGE))
    assert ("builtin.actions", "EXECUTE") in named
    assert ("routing", "Router.accept") in named
    bad = [
        f"{module}.{dotted}"
        for module, dotted in sorted(named)
        if dotted not in ("py", "md") and not _resolves(module, dotted)
    ]  # not files
    assert bad == []


def test_the_commands_row_names_every_subcommand() -> None:
    """hnew31: the row listed ten of the eleven subcommands `callrouter --help`
    shows; `state` (backup) was missing."""
    import argparse

    from router.cli import build_parser

    row = next(line for line in PAGE.splitlines() if line.startswith("| `router/commands/` |"))
    listed = re.search(r"`callrouter` subcommands \(([^)]*)\)", row)
    assert listed is not None
    named = set(re.findall(r"`(\w+)`", listed.group(1)))
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert named == set(sub.choices)
