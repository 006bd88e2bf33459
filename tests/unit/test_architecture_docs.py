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
