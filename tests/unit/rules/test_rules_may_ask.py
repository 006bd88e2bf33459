"""RuleSet.may_ask: could routing a call reach a rule that asks a lookup?

The 1C plugin's prefetch asks this before it asks 1C (issue 11 item 2): a
caller whom a blacklist rule hangs up must never be looked up. The answer is
checked against the real evaluation of every call of the good-rules table: a
``False`` is only ever given when the evaluation did not ask the lookup.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_rules_good import CALLS, FIXTURES, LOOKUPS, at

from router.dialplan_audit import ListedContext
from router.rules import Registry, RuleSet, call_context, load_rules

MONDAY = "2026-11-23 12:00"


@pytest.fixture
def ruleset(registry: Registry) -> RuleSet:
    loaded = load_rules([FIXTURES / "good"], registry)
    assert loaded.errors == ()
    return loaded


@pytest.mark.parametrize(("caller", "did", "when"), [call[:3] for call in CALLS])
async def test_may_ask_agrees_with_the_evaluation(
    ruleset: RuleSet, caller: str, did: str, when: str
) -> None:
    asked: list[str] = []

    async def counting(number: str) -> Any:
        asked.append(number)
        return await LOOKUPS["onec.responsible"](number)

    context = call_context(ruleset.registry, caller, did, now=at(when))
    expected = ruleset.may_ask(context, "onec.responsible")
    await ruleset.evaluate(
        context, deadline=time.monotonic() + 0.2, lookups={**LOOKUPS, "onec.responsible": counting}
    )
    assert expected == bool(asked)


@pytest.mark.parametrize(
    ("caller", "when", "asks"),
    [
        ("8 (495) 000-00-66", "2026-11-23 12:00", False),  # blacklisted: hung up first
        ("8 916 000-00-01", "2026-11-23 12:00", False),  # VIP queue before the owner rule
        ("79161111111", "2026-11-23 20:15", False),  # closed: no lookup at night
        ("79161111111", "2026-11-23 12:00", True),  # the owner rule is reached
    ],
)
def test_the_rules_before_the_lookup_decide(
    ruleset: RuleSet, caller: str, when: str, asks: bool
) -> None:
    context = call_context(ruleset.registry, caller, "74950000000", now=at(when))
    assert ruleset.may_ask(context, "onec.responsible") is asks
    assert ruleset.may_ask(context, "no.such.lookup") is False


def test_a_broken_rule_is_passed_over_as_in_evaluation(registry: Registry, tmp_path: Any) -> None:
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n"
        "  - name: broken\n    on: call\n    if: int(caller.name) > 1\n"
        "    do: [{hangup: {cause: 21}}]\n"
        "  - name: owner\n    on: call\n    lookup:\n"
        "      owner: onec.responsible(caller.number)\n    when: owner.found\n"
        "    do: [{redirect: {context: callrouter-dial, exten: '101'}}]\n"
    )
    ruleset = load_rules([tmp_path / "rules.yaml"], registry)
    assert ruleset.errors == ()
    context = call_context(
        ruleset.registry, "79161111111", "74950000000", caller_name="x", now=at("2026-11-23 12:00")
    )
    assert ruleset.may_ask(context, "onec.responsible") is True


async def test_a_redirect_the_dialplan_lacks_does_not_end_routing_for_may_ask(
    ruleset: RuleSet,
) -> None:
    """The VIP rule's queue lacks ``vip`` as the dialplan audit last read it:
    the evaluation rejects the rule and goes on to the owner rule, so a
    prefetch of the owner lookup is worth it (issue 16)."""
    listing = {"queues": ListedContext(frozenset({"all", "sales"}), (), closed=True)}
    context = call_context(ruleset.registry, "8 916 000-00-01", "74950000000", now=at(MONDAY))
    assert ruleset.may_ask(context, "onec.responsible") is False
    assert ruleset.may_ask(context, "onec.responsible", listing) is True
    outcome = await ruleset.evaluate(
        context, deadline=time.monotonic() + 0.2, lookups=LOOKUPS, dialplan=listing
    )
    assert outcome.decision.rules == ("default",)  # this caller has no owner in 1C
    [vip] = [r for r in outcome.trace.rules if r.rule == "vip"]
    assert (vip.status, vip.stage) == ("rejected", "do")
    assert vip.detail == (
        "action 'redirect': exten 'vip' is not in context 'queues' of Asterisk's dialplan: "
        "Asterisk would accept the Redirect and hang the call up "
        "(as the dialplan audit last read it)"
    )
