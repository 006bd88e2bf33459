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

from bsl_tree import MODULE, method, text_of, walk
from tree_sitter import Node


def _loops(node: Node) -> list[Node]:
    return [n for n in walk(node) if n.type in ("for_statement", "while_statement")]


def test_a_5xx_is_retried_within_the_loop_that_sends_the_same_request() -> None:
    call_api = method("ВызватьAPI")
    (loop,) = [n for n in _loops(call_api) if "ВызватьHTTPМетод" in text_of(n)]
    made = text_of(call_api).index("Новый HTTPЗапрос") + call_api.start_byte
    # One request, built before the loop: every attempt carries the same headers,
    # so the same Idempotency-Key.
    assert made < loop.start_byte
    assert "Новый HTTPЗапрос" not in text_of(loop)
    assert "Idempotency-Key" not in text_of(loop)
    # The answer's status decides the retry inside the loop: a 5xx is tried again.
    decisions = [
        text_of(n)
        for n in walk(loop)
        if n.type == "if_statement" and "КодСостояния" in text_of(n) and "500" in text_of(n)
    ]
    assert decisions, f"{MODULE.name}: ВызватьAPI does not retry a 5xx:\n{text_of(loop)}"


def test_a_click_makes_its_key_once_and_asks_for_the_retry() -> None:
    call = method("Позвонить")
    assert not _loops(call), "the key must be made once per click, outside any loop"
    text = text_of(call)
    assert text.count("Новый УникальныйИдентификатор") == 1
    (request,) = [
        n for n in walk(call) if n.type == "method_call" and text_of(n).startswith("ВызватьAPI(")
    ]
    assert text_of(request).replace(" ", "").endswith(",Истина)"), text_of(request)
    # When both attempts failed, the exception names the key, for a later retry of
    # the same click (docs/api.md: the same key answers the call Asterisk may place).
    handlers = [text_of(n) for n in walk(call) if n.type == "try_statement"]
    assert len(handlers) == 1, "Позвонить must catch the failure to name its key"
    after_except = handlers[0].split("Исключение", 1)[1]
    assert "ВызватьИсключение" in after_except
    assert "КлючИдемпотентности" in after_except
