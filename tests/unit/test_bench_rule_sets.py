"""The rule sets ``bench/bench_rules.py`` measures load without an error.

The loader grew stricter (an event Asterisk does not document is refused)
and the 100-rule mixed set became a load error that only ``make bench``
found; the numbers in docs/performance.md come from these sets.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from router.plugin_registry import plugin_registry
from router.rules import load_rules

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_rules.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rules_under_test", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH_RULES = _bench()
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
