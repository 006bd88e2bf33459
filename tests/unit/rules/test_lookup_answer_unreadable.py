"""A lookup that answers what a rule cannot read names its plugin (issue 16).

A plugin's lookup answering a Python set, or an object of its own class,
where a rule reads ``owner.tier`` gave ``FeatureNotAvailable: cannot read
.tier of a set`` on the decision line, naming neither the plugin nor the
lookup, and nothing in the log. The trace now says whose answer it was, an
ERROR names the plugin and the lookup (once per call), and the call still
routes by the next rule.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router.plugin_registry import plugin_registry
from router.rules import Context, RuleBook
from router.rules.context import Caller, CallInfo

RULES = """version: 1
rules:
  - name: vip
    on: call
    lookup:
      owner: shop.owner(caller.number)
    when: owner.tier == "gold"
    do:
      - redirect: {context: queues, exten: a}
  - name: nested
    on: call
    lookup:
      owner: shop.owner(caller.number)
    when: owner.tier
    do:
      - redirect: {context: queues, exten: "{owner.manager.ext}"}
  - name: fine
    on: call
    priority: -1
    do:
      - redirect: {context: queues, exten: b}
"""


@dataclass
class Customer:
    tier: str


def _book(tmp_path: Path, answer: Any) -> RuleBook:
    def owner(number: str) -> object:
        return answer

    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_lookup("shop.owner", owner)
    registry.registering = None
    path = tmp_path / "shop.yaml"
    path.write_text(RULES, encoding="utf-8")
    book = RuleBook([path], registry)
    assert book.reload().errors == ()
    return book


def _context(linkedid: str = "1795460784.7") -> Context:
    call = CallInfo(channel="PJSIP/trunk-1", uniqueid=linkedid, linkedid=linkedid)
    return Context.for_call(Caller("79161234567"), "74951234567", call=call)


@pytest.mark.parametrize(("answer", "kind"), [({"gold"}, "set"), (Customer("gold"), "Customer")])
def test_an_unreadable_answer_names_the_plugin_and_the_lookup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: object, kind: str
) -> None:
    book = _book(tmp_path, answer)
    with caplog.at_level("ERROR", logger="router.plugins"):
        outcome = asyncio.run(book.evaluate(_context()))
        asyncio.run(book.evaluate(_context()))  # the same call: said once
    assert outcome.decision.rules == ("fine",)  # fail open: the next rule routes
    vip = outcome.trace.rules[0]
    assert (vip.rule, vip.status, vip.stage) == ("vip", "error", "when")
    assert vip.detail == (
        f"cannot read .tier of a {kind}: the answer of lookup shop.owner "
        "(plugin 'shop', as 'owner')"
    )
    [record] = [r for r in caplog.records if r.name == "router.plugins"]
    assert record.levelname == "ERROR"
    assert record.getMessage().startswith(
        f"plugin 'shop': its lookup shop.owner answered a {kind}, and rule 'vip' "
        f"cannot read .tier of a {kind} (call 1795460784.7); the rule was not taken"
    )
    # Another call is said again.
    caplog.clear()
    with caplog.at_level("ERROR", logger="router.plugins"):
        asyncio.run(book.evaluate(_context("1795460784.8")))
    assert len([r for r in caplog.records if r.name == "router.plugins"]) == 1


def test_an_unreadable_value_inside_the_answer_names_them_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``owner.manager.ext`` where the answer's ``manager`` is a set: the value
    that could not be read is found inside the lookup's answer."""
    book = _book(tmp_path, {"tier": "silver", "manager": {"101"}})
    with caplog.at_level("ERROR", logger="router.plugins"):
        outcome = asyncio.run(book.evaluate(_context()))
    assert outcome.decision.rules == ("fine",)
    nested = outcome.trace.rules[1]
    assert (nested.status, nested.stage) == ("error", "do")
    assert nested.detail == (
        "cannot read .ext of a set: the answer of lookup shop.owner (plugin 'shop', as 'owner')"
    )
    [record] = [r for r in caplog.records if r.name == "router.plugins"]
    assert record.getMessage().startswith(
        "plugin 'shop': its lookup shop.owner answered a dict, and rule 'nested' "
        "cannot read .ext of a set"
    )


def test_a_value_no_lookup_answered_is_said_as_before(tmp_path: Path) -> None:
    """``caller.number.tier``: the core's own value, no plugin to name, no ERROR."""
    registry = plugin_registry()
    path = tmp_path / "own.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: own\n    on: call\n    when: caller.number.tier\n"
        "    do:\n      - redirect: {context: queues, exten: a}\n",
        encoding="utf-8",
    )
    book = RuleBook([path], registry)
    assert book.reload().errors == ()
    outcome = asyncio.run(book.evaluate(_context()))
    assert outcome.trace.rules[0].detail == "FeatureNotAvailable: cannot read .tier of a str"
