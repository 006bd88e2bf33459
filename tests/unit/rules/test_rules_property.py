"""Property: any valid rule set on any context decides or falls through, never raises."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import LookupUnavailable
from router.plugin_registry import plugin_registry
from router.rules import Caller, CallInfo, Context, Rule, RuleSet
from router.rules.loader import RuleFile, parse_text
from router.rules.schema import check_file
from router.rules.validate import compile_rule

REGISTRY = plugin_registry(timezone="Europe/Moscow")

ATOMS = [
    "caller.number == {d}",
    "did in ({d}, {d})",
    "caller.internal",
    "not caller.internal",
    "match({re}, caller.number)",
    "len(caller.name) > {n}",
    "caller.number in lists.vip",
    "workhours({hours})",
    "is_holiday(lists.holidays)",
    "last10(caller.raw) == {s}",
    "int(did) % {n1} == 0",
    "1 / len(did) > 0",
    "{n} / (len(caller.name) - {n}) > 1",
    "caller.name[{n}] == {s}",
    "now.hour >= {n}",
    "call.exten == {s}",
    "str(call.vars) != {s}",
    "digits(caller.raw)[-{n1}:] == {s}",
    "normalize(caller.raw) == caller.number",
    "weekday() == 'mon'",
    "today() != {s}",
    "lower(caller.name) in ('ivan', {s})",
    "(caller.number + did) * {n} != {s}",
]
WHEN_ATOMS = [
    "x",
    "x.found",
    "x.manager.extension == {s}",
    "x[{n}]",
    "x in ({s}, None)",
    "len(x) > {n}",
    "x.a.b.c is None",
    "y == {s}",
    "not y",
    "x + y",
    "x * {n}",
    "x ** {n}",
    "startswith(x, {s})",
    "x > {n}",
]
HOURS = [
    '"mon-fri 09:00-19:00"',
    '"daily 22:00-06:00"',
    '"sat-sun"',
    '"mon,wed 10:00-11:00; fri 12:00-24:00"',
]
REGEXES = ['"^7"', '"5$"', '"[0-9]{3}"', '".*"']

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
numbers = st.integers(min_value=0, max_value=12)


@st.composite
def expression(draw: st.DrawFn, atoms: list[str], depth: int = 2) -> str:
    def atom() -> str:
        template = draw(st.sampled_from(atoms))
        return template.format(
            s=repr(draw(st.sampled_from(["79161234567", "", "1", "ivan", "101"]))),
            # did and caller.number hold digits only: "ivan" there is a load error.
            d=repr(draw(st.sampled_from(["79161234567", "", "1", "101"]))),
            n=draw(numbers),
            n1=draw(st.integers(1, 9)),
            re=draw(st.sampled_from(REGEXES)),
            hours=draw(st.sampled_from(HOURS)),
        )

    if depth == 0 or draw(st.booleans()):
        return atom()
    op = draw(st.sampled_from(["and", "or"]))
    left = draw(expression(atoms, depth - 1))
    right = draw(expression(atoms, depth - 1))
    text = f"({left}) {op} ({right})"
    return f"not ({text})" if draw(st.booleans()) else text


ACTIONS = [
    "{{redirect: {{context: c, exten: '{{x}}'}}}}",
    "{{redirect: {{context: c, exten: '{{caller.number}}', priority: '{{len(did)}}'}}}}",
    "{{setvar: {{A: '{{caller.name}}', B: 'n-{{x.manager.name}}'}}}}",
    "{{hangup: {{cause: '{{len(caller.name)}}'}}}}",
    "{{originate: {{channel: 'PJSIP/{{x}}', application: Playback}}}}",
    "hangup",
]
ROUTING = [a for a in ACTIONS if a.startswith(("{{redirect", "{{hangup", "hangup"))]
TAGGING = [a for a in ACTIONS if a not in ROUTING]


@st.composite
def rule_file(draw: st.DrawFn) -> str:
    lines = [
        "version: 1",
        "lists:",
        "  vip: ['79161234567', '101']",
        "  holidays: {items: ['01-01'], type: dates}",
        "rules:",
    ]
    for i in range(draw(st.integers(1, 6))):
        lines += [
            f"  - name: r{i}",
            "    on: call",
            f"    priority: {draw(st.integers(-2, 2))}",
        ]
        cont = draw(st.booleans())
        lines.append(f"    continue: {str(cont).lower()}")
        if draw(st.booleans()):
            lines.append(f"    if: {json.dumps(draw(expression(ATOMS)))}")
        lines += [
            "    lookup:",
            "      x: onec.responsible(caller.number)",
            "      y: extension_state(x.manager.extension)",
        ]
        if draw(st.booleans()):
            lines.append(f"    when: {json.dumps(draw(expression(WHEN_ATOMS)))}")
        # A rule moves or ends the call at most once, and not if it goes on.
        actions = draw(st.lists(st.sampled_from(TAGGING), min_size=int(cont), max_size=3))
        if not actions or (not cont and draw(st.booleans())):
            actions.insert(draw(st.integers(0, len(actions))), draw(st.sampled_from(ROUTING)))
        lines.append(f"    do: [{', '.join(a.format() for a in actions)}]")
    return "\n".join(lines) + "\n"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | texts,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["found", "manager", "extension", "name", "a", "b", "c"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)
lookup_results = st.one_of(
    json_values.map(lambda v: ("value", v)),
    st.sampled_from([("raise", None), ("slow", None), ("crash", None)]),
)


def stub(kind: str, value: Any) -> Any:
    async def lookup(*_args: Any) -> Any:
        if kind == "raise":
            raise LookupUnavailable("down")
        if kind == "crash":
            raise RuntimeError("plugin bug")
        if kind == "slow":
            await asyncio.sleep(0.05)
        return value

    return lookup


def build(text: str) -> RuleSet:
    """Compiles in memory: the generated set must be valid, or the test is wrong."""
    source = RuleFile(Path("gen.yaml"), "gen.yaml", parse_text(text, "gen.yaml"))
    spec = check_file(source, REGISTRY)
    assert spec.errors == [], spec.errors
    rules: list[Rule] = []
    for order, rule_spec in enumerate(spec.rules):
        compiled = compile_rule(rule_spec, REGISTRY, {"vip", "holidays"}, order)
        assert not isinstance(compiled, list), compiled
        rules.append(compiled)
    return RuleSet.build(
        rules,
        {"vip": frozenset({"79161234567", "101"}), "holidays": frozenset({"01-01"})},
        REGISTRY,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=rule_file(),
    caller=texts,
    name=texts,
    did=texts,
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    owner=lookup_results,
    state=lookup_results,
    exten=texts,
    has_call=st.booleans(),
)
def test_evaluation_never_raises(
    text: str,
    caller: str,
    name: str,
    did: str,
    moment: datetime,
    owner: tuple[str, Any],
    state: tuple[str, Any],
    exten: str,
    has_call: bool,
) -> None:
    ruleset = build(text)
    context = Context.for_call(
        Caller(
            REGISTRY.normalize_number(caller), caller, name, REGISTRY.is_internal_number(caller)
        ),
        did,
        call=CallInfo(exten=exten, vars={"A": exten}) if has_call else None,
        now=moment,
    )
    lookups = {"onec.responsible": stub(*owner), "extension_state": stub(*state)}

    async def run() -> Any:
        return await ruleset.evaluate(
            context, deadline=time.monotonic() + 0.002, lookups=lookups, explain=True
        )

    outcome = asyncio.run(run())
    decision = outcome.decision
    assert decision.matched or not decision.actions
    for action in decision.actions:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in action.params.items())
    assert outcome.trace.to_dict()
    assert outcome.trace.render()
    assert len(outcome.trace.rules) == len(ruleset.rules_for(context))
