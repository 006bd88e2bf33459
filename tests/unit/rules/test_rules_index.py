"""The call index (router.rules.index): every indexable form, and the same
decisions as the linear walk on random rule sets and calls (hypothesis)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.plugin_registry import plugin_registry
from router.rules import Caller, Context, RuleSet, load_rules
from router.rules.evaluate import evaluate_rules

REGISTRY = plugin_registry()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
#: ``big`` is over the size the index copies value by value: it is probed as a set.
BIG = [f"7916{i:07d}" for i in range(100)] + ["74950000001", "101"]
LISTS = (
    "lists:\n  vip: ['79160000001', '79160000002']\n  empty: []\n"
    f"  big: [{', '.join(repr(n) for n in BIG)}]\n"
)


def ruleset_of(tmp_path: Path, conditions: list[str]) -> RuleSet:
    body = "".join(
        f"  - name: r{i}\n    on: call\n    if: {json.dumps(cond)}\n"
        f'    do: [{{redirect: {{context: c, exten: "{i}"}}}}]\n'
        for i, cond in enumerate(conditions)
    )
    body += "  - name: last\n    on: call\n    priority: -1\n"
    body += "    do: [{redirect: {context: c, exten: last}}]\n"
    path = tmp_path / "rules.yaml"
    path.write_text(f"version: 1\n{LISTS}rules:\n{body}", encoding="utf-8")
    ruleset = load_rules([path], REGISTRY)
    assert ruleset.errors == (), ruleset.errors
    return ruleset


def tried(ruleset: RuleSet, did: str = "74951234567", number: str = "79161234567") -> list[str]:
    context = Context.for_call(Caller(number), did, now=NOW)
    return [rule.name for rule in ruleset.rules_for(context)]


@pytest.mark.parametrize(
    ("condition", "did", "number", "keys"),
    [
        ('did == "74950000001"', "74950000001", "1", ["did"]),
        ('"74950000001" == did', "74950000001", "1", ["did"]),
        ('did in ("74950000001", "74950000002")', "74950000002", "1", ["did"]),
        ('caller.number == "79160000001"', "1", "79160000001", ["caller.number"]),
        ("caller.number in lists.vip", "1", "79160000002", ["caller.number"]),
        ('caller.number in ["79160000001"]', "1", "79160000001", ["caller.number"]),
        ('did == "74950000001" and workhours("mon-fri 09:00-19:00")', "74950000001", "1", ["did"]),
        ('not caller.internal and caller.number == "79160000001"', "1", "79160000001", None),
        ('did == "74950000001" or did == "74950000002"', "74950000002", "1", ["did"]),
        (
            'did == "74950000001" or caller.number in lists.vip',
            "1",
            "79160000001",
            ["caller.number", "did"],
        ),
        ('last10(caller.number) == "9160000001"', "1", "79160000001", ["last10(caller.number)"]),
        ('caller.number == normalize("8 (916) 000-00-01")', "1", "79160000001", None),
        ('did == normalize("+7 495 000-00-01")', "74950000001", "1", None),
    ],
)
def test_each_form_is_indexed(
    tmp_path: Path, condition: str, did: str, number: str, keys: list[str] | None
) -> None:
    ruleset = ruleset_of(tmp_path, [condition])
    rule = ruleset.rules[0]
    assert sorted(str(k) for k in ruleset.index_keys(rule)) == (
        keys or sorted(str(k) for k in ruleset.index_keys(rule))
    )
    assert ruleset.index_keys(rule), "not indexed"
    assert tried(ruleset, did, number) == ["r0", "last"]
    assert tried(ruleset) == ["last"]  # another call does not even try it


@pytest.mark.parametrize(
    "condition",
    [
        'did != "74950000001"',
        'did == "74950000001" or now.hour > 3',
        "did == caller.number",
        "caller.number in lists.vip or not caller.internal",
        'match("^7495", did)',
        "caller.number == None",
        'did in ("74950000001", None)',
        '"7495" in did',
    ],
)
def test_conditions_that_cannot_be_indexed_stay_generic(tmp_path: Path, condition: str) -> None:
    ruleset = ruleset_of(tmp_path, [condition])
    assert ruleset.index_keys(ruleset.rules[0]) == ()
    assert tried(ruleset) == ["r0", "last"]


def test_a_constant_no_call_can_equal_leaves_the_rule_out(tmp_path: Path) -> None:
    # A number (did == 74950000001) is a load error now (test_rules_bad.py):
    # True is still a constant no DID equals.
    ruleset = ruleset_of(tmp_path, ["did == True", "caller.number in lists.empty"])
    assert tried(ruleset, "74950000001") == ["last"]


def test_priority_order_is_kept_across_keys(tmp_path: Path) -> None:
    ruleset = ruleset_of(
        tmp_path,
        [
            'caller.number == "79161234567"',
            "not caller.internal",
            'did == "74951234567"',
            'did == "74950000000"',
            "caller.number in lists.vip",
        ],
    )
    assert tried(ruleset) == ["r0", "r1", "r2", "last"]
    assert tried(ruleset, number="79160000001") == ["r1", "r2", "r4", "last"]


async def test_explain_trace_leaves_out_what_the_index_proves_false(tmp_path: Path) -> None:
    from router.rules.explain import explain_call, index_skipped_rules, other_did_rules

    ruleset = ruleset_of(tmp_path, ['did == "1"', "caller.number in lists.vip", "did != ''"])
    explained = await explain_call(ruleset, "79161234567", "74951234567", stubs={}, now=NOW)
    assert [r.rule for r in explained.outcome.trace.rules] == ["r2", "last"]
    assert explained.other_did_rules == ["r0"]
    assert explained.index_skipped == (("r1", ("caller.number",)),)
    assert explained.to_dict()["index_skipped_rules"] == [{"rule": "r1", "keys": ["caller.number"]}]
    assert other_did_rules(ruleset, explained.context) == ["r0"]
    assert index_skipped_rules(ruleset, explained.context) == [("r1", ["caller.number"])]


# -- differential: indexed dispatch vs the linear walk ------------------------------------

DIDS = ["74950000001", "74950000002", "74951234567", "", "1"]
NUMBERS = ["79160000001", "79160000002", "79161234567", "101", "", "79160000050"]
constants = st.sampled_from([*DIDS, *NUMBERS])
key = st.sampled_from(
    ["did", "caller.number", "caller.raw", "last10(caller.number)", "digits(did)"]
)
folded = st.sampled_from(['normalize("8 916 000-00-01")', 'last10("+7 495 000-00-01")'])


@st.composite
def atoms(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 7))
    k = draw(key)
    if kind == 0:
        return f"{k} == {draw(constants)!r}"
    if kind == 1:
        return f"{draw(constants)!r} == {k}"
    if kind == 2:
        values = draw(st.lists(constants, max_size=3))
        return f"{k} in ({', '.join(map(repr, values))}{',' if len(values) == 1 else ''})"
    if kind == 3:
        return f"{k} in lists.{draw(st.sampled_from(['vip', 'empty', 'big']))}"
    if kind == 4:
        return f"{k} == {draw(folded)}"
    if kind == 5:
        return draw(
            st.sampled_from(
                [
                    "not caller.internal",
                    "now.hour >= 9",
                    "did != '1'",
                    "len(caller.number) > 3",
                    "caller.number[99] == 'x'",
                    "int(did) > 0",  # raises for '' and text: the rule errors
                    "did == True",  # never equal (a number is a load error)
                    "caller.number == None",
                ]
            )
        )
    if kind == 6:
        return f"{k} != {draw(constants)!r}"
    return f"match('^7916', {k})"


conditions = st.recursive(
    atoms(),
    lambda inner: (
        st.builds(
            lambda op, parts: "(" + f" {op} ".join(parts) + ")",
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=3),
        )
        | st.builds(lambda c: f"not {c}", inner)
    ),
    max_leaves=5,
)
rule_specs = st.lists(
    st.tuples(st.one_of(st.none(), conditions), st.integers(-2, 2), st.booleans()),
    min_size=1,
    max_size=12,
)


def build(specs: list[tuple[str | None, int, bool]], tmp: Path) -> RuleSet:
    body = ""
    for i, (cond, priority, cont) in enumerate(specs):
        body += f"  - name: r{i}\n    on: call\n    priority: {priority}\n"
        if cond is not None:
            body += f"    if: {json.dumps(cond)}\n"
        if cont:
            # A rule that goes on tags the call: it may not route it too.
            body += "    continue: true\n"
            body += f'    do: [{{setvar: {{TAG{i}: "{i}"}}}}]\n'
        else:
            body += f'    do: [{{redirect: {{context: c, exten: "{i}"}}}}]\n'
    path = tmp / "rules.yaml"
    path.write_text(f"version: 1\n{LISTS}rules:\n{body}", encoding="utf-8")
    return load_rules([path], REGISTRY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=rule_specs,
    did=st.one_of(st.sampled_from(DIDS), st.text(max_size=12)),
    number=st.one_of(st.sampled_from(NUMBERS), st.text(max_size=12)),
    raw=st.sampled_from(["8 916 000-00-01", "", "79160000001"]),
)
def test_indexed_dispatch_decides_like_the_linear_walk(
    tmp_path_factory: pytest.TempPathFactory,
    specs: list[tuple[str | None, int, bool]],
    did: str,
    number: str,
    raw: str,
) -> None:
    ruleset = build(specs, tmp_path_factory.mktemp("rules"))
    assert ruleset.errors == (), ruleset.errors[0]
    context = Context.for_call(Caller(number, raw), did, now=NOW)
    linear = [r for r in ruleset.rules if r.trigger.kind == "call"]

    async def both() -> tuple[object, object]:
        fast = await ruleset.evaluate(context)
        slow = await evaluate_rules(linear, context, REGISTRY, ruleset.lists)
        return fast, slow

    fast, slow = asyncio.run(both())
    assert fast.decision == slow.decision  # type: ignore[attr-defined]
    # Every rule the index left out is one the walk found false (or erring) at ``if``.
    seen = {entry.rule: entry for entry in fast.trace.rules}  # type: ignore[attr-defined]
    for entry in slow.trace.rules:  # type: ignore[attr-defined]
        if entry.rule in seen:
            assert seen[entry.rule].status == entry.status
        else:
            assert entry.stage == "if", entry
            assert entry.status in ("false", "error"), entry


def test_a_thousand_match_patterns_are_compiled_once() -> None:
    """1,000 rules with a pattern each: the second call compiles nothing (the
    cache once held 512, so every call recompiled every pattern)."""
    from router.builtin.textfuncs import _compiled, match

    patterns = [f"^7000{i:07d}$" for i in range(1000)]
    for pattern in patterns:
        match(pattern, "79161234567")
    before = _compiled.cache_info().misses
    for pattern in patterns:
        match(pattern, "79161234567")
    assert _compiled.cache_info().misses == before


def test_explain_prints_the_rules_the_index_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.cli import main

    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "inbound.yaml").write_text(
        f"version: 1\n{LISTS}rules:\n"
        "  - name: vip\n    on: call\n    if: caller.number in lists.vip\n"
        "    do: [{redirect: {context: c, exten: vip}}]\n"
        "  - name: spb\n    on: call\n    if: did == '78121234567'\n"
        "    do: [{redirect: {context: c, exten: spb}}]\n"
        "  - name: rest\n    on: call\n    do: [{redirect: {context: c, exten: rest}}]\n",
        encoding="utf-8",
    )
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret_env = "CALLROUTER_SECRET"\n[router]\nrules = ["rules"]\n',
        encoding="utf-8",
    )
    args = ["explain", "--config", str(config), "--did", "74951234567", "--caller"]
    assert main([*args, "79161234567", "--at", "2026-12-01 12:00"]) == 0
    out = capsys.readouterr().out
    assert "not evaluated: 1 rule for other DIDs (spb)" in out
    assert (
        "not evaluated: 1 rule the index left out (vip): their `if` tests caller.number, "
        "which this call's value makes false"
    ) in out
    assert main([*args, "79160000001", "--at", "2026-12-01 12:00"]) == 0
    out = capsys.readouterr().out
    assert "the index left out" not in out
    assert "decision: redirect(context=c, exten=vip) (rules: vip)" in out


def test_a_large_list_is_probed_not_copied(tmp_path: Path) -> None:
    ruleset = ruleset_of(tmp_path, ["caller.number in lists.big", "caller.number in lists.big"])
    index = ruleset._calls
    assert index._tables == ()  # nothing copied value by value
    [(_, members, positions)] = index._probes  # one probe for both rules, on the list itself
    assert members is ruleset.lists["big"]
    assert positions == (0, 1)
    assert tried(ruleset, number="79160000050") == ["r0", "r1", "last"]
    assert tried(ruleset, number="79169999999") == ["last"]
