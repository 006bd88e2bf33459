"""The rule sets ``bench/bench_rules.py`` measures load without an error.

The loader grew stricter (an event Asterisk does not document is refused)
and the 100-rule mixed set became a load error that only ``make bench``
found; the numbers in docs/performance.md come from these sets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.plugin_registry import plugin_registry
from router.rules import load_rules
from tests.unit.bench_script import load_bench_script

BENCH_RULES = load_bench_script("bench_rules.py", "bench_rules_under_test")
SCENARIOS = ["mixed", *BENCH_RULES.FORMS]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("count", [10, 100, 1000])
def test_bench_rule_set_loads(scenario: str, count: int, tmp_path: Path) -> None:
    build = BENCH_RULES.mixed if scenario == "mixed" else BENCH_RULES.per_form(scenario)
    text, numbers = build(count)
    path = tmp_path / f"{scenario}.yaml"
    path.write_text(text, encoding="utf-8")
    ruleset = load_rules([path], plugin_registry())
    assert not ruleset.errors, ruleset.errors[:3]
    assert len(ruleset.rules) == count
    assert numbers
