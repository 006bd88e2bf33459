"""docs/plugins.md and the hooks stay in step (datasette's tests/test_docs.py).

Every hookspec has a ``### <hookname>`` section in the plugin guide, and a
``test_hook_<hookname>`` in tests/unit/test_hooks.py; a section for a hook
that no longer exists is an error too.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from router import hookspecs

REPO = Path(__file__).parents[2]
GUIDE = REPO / "docs" / "plugins.md"
HOOK_TESTS = Path(__file__).with_name("test_hooks.py")

HOOKS = sorted(name for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("callrouter_"))


def documented() -> list[str]:
    return re.findall(r"^### (callrouter_\w+)\s*$", GUIDE.read_text(encoding="utf-8"), re.M)


def hooks_with_a_test() -> set[str]:
    tree = ast.parse(HOOK_TESTS.read_text(encoding="utf-8"))
    return {node.name.removeprefix("test_hook_") for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_hook_")}


def test_hooks_are_found() -> None:
    assert "callrouter_register" in HOOKS
    assert len(HOOKS) == len(set(HOOKS)) >= 12


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    assert hook in documented(), f"docs/plugins.md needs a '### {hook}' section"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook: str) -> None:
    assert hook in hooks_with_a_test(), f"tests/unit/test_hooks.py needs test_hook_{hook}"


def test_no_section_for_a_hook_that_does_not_exist() -> None:
    headings = documented()
    assert sorted(set(headings) - set(HOOKS)) == []
    assert len(headings) == len(set(headings)), "a hook is documented twice"


def test_hook_sections_follow_the_life_cycle_order() -> None:
    # The guide lists hooks in the order hookspecs.py defines them (when they run).
    in_source = [name for name, _ in sorted(
        ((n, f) for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
         if n.startswith("callrouter_")),
        key=lambda item: item[1].__code__.co_firstlineno)]
    assert documented() == in_source
