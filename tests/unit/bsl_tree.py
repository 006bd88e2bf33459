"""The shipped CallRouterAPI.bsl read with tree-sitter-hbk, for the tests that
check where its decisions are (:mod:`tests.unit.test_bsl_click_to_call_retry`,
:mod:`tests.unit.test_bsl_rate_limit_retry`): one reading and one set of
helpers, not a copy in each."""

from __future__ import annotations

from pathlib import Path

import tree_sitter_hbk
from tree_sitter import Node, Parser

REPO = Path(__file__).parents[2]
MODULE = REPO / "examples" / "onec" / "CallRouterAPI.bsl"
SOURCE = MODULE.read_bytes()
TREE = Parser(tree_sitter_hbk.Language()).parse(SOURCE)


def text_of(node: Node) -> str:
    """The module's text under ``node``."""
    return SOURCE[node.start_byte : node.end_byte].decode("utf-8")


def walk(node: Node) -> list[Node]:
    """``node`` and every node under it, in the order they are written."""
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(reversed(current.children))
    return found


def method(name: str) -> Node:
    """The function or procedure ``name`` of the module."""
    for node in walk(TREE.root_node):
        if node.type in ("function_definition", "procedure_definition"):
            ident = next(c for c in node.children if c.type == "identifier")
            if text_of(ident) == name:
                return node
    raise AssertionError(f"{MODULE.name} has no method {name}")
