"""The shipped click-to-call (``examples/onec/CallRouterAPI.bsl``) retries one click
with that click's ``Idempotency-Key``, after a dropped connection and after a 5xx.

docs/api.md: a ``503`` whose text says ``may still be placed`` (Asterisk did not
answer within ``ami_timeout``) may yet ring the manager, and a retry with the same
key gets that call instead of placing a second one. The module retried a dropped
connection with the same request, but raised at once on a 5xx: the key, made
inside ``Позвонить``, was lost with the exception, so the user's next click came
with a new one and could ring the manager twice. No 1C platform runs here; the
module is read with tree-sitter-hbk (as :mod:`tests.unit.test_bsl_parse` does),
and the test on the tree checks where the retry decision and the request are.
"""

from __future__ import annotations

from pathlib import Path

import tree_sitter_hbk
from tree_sitter import Node, Parser

MODULE = Path(__file__).parents[2] / "examples" / "onec" / "CallRouterAPI.bsl"
SOURCE = MODULE.read_bytes()
TREE = Parser(tree_sitter_hbk.Language()).parse(SOURCE)


def _text(node: Node) -> str:
    return SOURCE[node.start_byte : node.end_byte].decode("utf-8")


def _walk(node: Node) -> list[Node]:
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(reversed(current.children))
    return found


def _function(name: str) -> Node:
    for node in _walk(TREE.root_node):
        if node.type == "function_definition":
            ident = next(c for c in node.children if c.type == "identifier")
            if _text(ident) == name:
                return node
    raise AssertionError(f"{MODULE.name} has no function {name}")


def _loops(node: Node) -> list[Node]:
    return [n for n in _walk(node) if n.type in ("for_statement", "while_statement")]


def test_a_5xx_is_retried_within_the_loop_that_sends_the_same_request() -> None:
    call_api = _function("ВызватьAPI")
    (loop,) = [n for n in _loops(call_api) if "ВызватьHTTPМетод" in _text(n)]
    made = _text(call_api).index("Новый HTTPЗапрос") + call_api.start_byte
    # One request, built before the loop: every attempt carries the same headers,
    # so the same Idempotency-Key.
    assert made < loop.start_byte
    assert "Новый HTTPЗапрос" not in _text(loop)
    assert "Idempotency-Key" not in _text(loop)
    # The answer's status decides the retry inside the loop: a 5xx is tried again.
    decisions = [
        _text(n)
        for n in _walk(loop)
        if n.type == "if_statement" and "КодСостояния" in _text(n) and "500" in _text(n)
    ]
    assert decisions, f"{MODULE.name}: ВызватьAPI does not retry a 5xx:\n{_text(loop)}"


def test_a_click_makes_its_key_once_and_asks_for_the_retry() -> None:
    call = _function("Позвонить")
    assert not _loops(call), "the key must be made once per click, outside any loop"
    text = _text(call)
    assert text.count("Новый УникальныйИдентификатор") == 1
    (request,) = [
        n for n in _walk(call) if n.type == "method_call" and _text(n).startswith("ВызватьAPI(")
    ]
    assert _text(request).replace(" ", "").endswith(",Истина)"), _text(request)
    # When both attempts failed, the exception names the key, for a later retry of
    # the same click (docs/api.md: the same key answers the call Asterisk may place).
    handlers = [_text(n) for n in _walk(call) if n.type == "try_statement"]
    assert len(handlers) == 1, "Позвонить must catch the failure to name its key"
    after_except = handlers[0].split("Исключение", 1)[1]
    assert "ВызватьИсключение" in after_except
    assert "КлючИдемпотентности" in after_except
