"""Event rules' guards (router.rules.index ``event_guard``, RuleSet.may_fire):
an event whose fields no watching rule's ``if`` can accept builds no context,
and a guard never leaves out an event a rule fires on (hypothesis, against the
evaluation itself)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.ami.message import Event
from router.plugin_registry import plugin_registry
from router.rules import Context, RuleSet, load_rules
from router.rules.evaluate import evaluate_rules

REGISTRY = plugin_registry()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
LISTS = "lists:\n  dids: ['74950000001', '74950000002']\n"


def ruleset_of(tmp_path: Path, conditions: list[str], on: str = "Hangup") -> RuleSet:
    body = "".join(
        f"  - name: r{i}\n    on: event {on}\n    if: {json.dumps(cond)}\n"
        f"    do: [{{ami: {{action: UserEvent, userevent: r{i}}}}}]\n"
        for i, cond in enumerate(conditions)
    )
    path = tmp_path / "rules.yaml"
    path.write_text(f"version: 1\n{LISTS}rules:\n{body}", encoding="utf-8")
    ruleset = load_rules([path], REGISTRY)
    assert ruleset.errors == (), ruleset.errors
    return ruleset


def hangup(**fields: str) -> Event:
    return Event((("Event", "Hangup"), *fields.items()))


@pytest.mark.parametrize(
    ("condition", "fires", "skips"),
    [
        ('event.cause == "19"', {"Cause": "19"}, {"Cause": "16"}),
        ('"19" == event.Cause', {"cause": "19"}, {"Cause": "16"}),
        ('event.cause in ("17", "19")', {"Cause": "17"}, {"Cause": "16"}),
        ('event.exten in lists.dids and event.cause == "19"', {"Cause": "19"}, {"Cause": "1"}),
        ("event.exten in lists.dids", {"Exten": "74950000002"}, {"Exten": "74950000003"}),
        ('event.cause == "19" or event.queue == "vip"', {"Queue": "vip"}, {"Queue": "x"}),
        ('event.cause == "19"', {"Cause": "19"}, {}),  # no such field: no rule fires
    ],
)
def test_a_guard_lets_through_what_may_fire_and_nothing_else(
    tmp_path: Path, condition: str, fires: dict[str, str], skips: dict[str, str]
) -> None:
    ruleset = ruleset_of(tmp_path, [condition])
    assert ruleset.may_fire("Hangup", hangup(**fires).getall)
    assert not ruleset.may_fire("Hangup", hangup(**skips).getall)
    assert not ruleset.may_fire("Newchannel", hangup(**fires).getall)  # no rule watches it


@pytest.mark.parametrize(
    "condition",
    [
        'event.cause != "19"',
        'event.cause == "19" or call.linkedid == "x"',
        "True",
        "len(event) > 1",
    ],
)
def test_a_condition_without_a_guard_is_tried_for_every_event(
    tmp_path: Path, condition: str
) -> None:
    ruleset = ruleset_of(tmp_path, [condition])
    assert ruleset.may_fire("Hangup", hangup(Cause="16").getall)


def test_one_rule_without_a_guard_lets_every_event_through(tmp_path: Path) -> None:
    ruleset = ruleset_of(tmp_path, ['event.cause == "19"', 'event.cause != "1"'])
    assert ruleset.may_fire("Hangup", hangup(Cause="16").getall)


VALUES = st.sampled_from(["16", "19", "vip", "74950000001", "74950000003", "Hangup"])
FIELD = st.sampled_from(["cause", "exten", "event"])
ATOM = st.one_of(
    st.builds(lambda f, v: f'event.{f} == "{v}"', FIELD, VALUES),
    st.builds(lambda f, a, b: f'event.{f} in ("{a}", "{b}")', FIELD, VALUES, VALUES),
    st.builds(lambda f: f"event.{f} in lists.dids", FIELD),
    st.builds(lambda f, v: f'event.{f} != "{v}"', FIELD, VALUES),
)
CONDITION = st.recursive(
    ATOM,
    lambda inner: st.builds(
        lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["and", "or"]), inner
    ),
    max_leaves=4,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    conditions=st.lists(CONDITION, min_size=1, max_size=3),
    cause=st.one_of(st.none(), VALUES),
    exten=st.one_of(st.none(), VALUES),
)
def test_a_guard_never_skips_an_event_a_rule_fires_on(
    tmp_path: Path, conditions: list[str], cause: str | None, exten: str | None
) -> None:
    ruleset = ruleset_of(tmp_path, conditions)
    fields = {k: v for k, v in (("Cause", cause), ("Exten", exten)) if v is not None}
    event = hangup(**fields)
    context = Context.for_event("Hangup", dict(event.fields), now=NOW)
    outcome = asyncio.run(
        evaluate_rules(ruleset.rules_for(context), context, ruleset.registry, ruleset.lists)
    )
    if outcome.decision.actions:
        assert ruleset.may_fire("Hangup", event.getall), (conditions, fields)
