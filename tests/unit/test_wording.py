"""Counts in what administrators read are in the singular for one
(router/wording.py): a first install has one rule and one call."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from router.wording import counted
from tests.unit.client_stub import EVERYONE, ClientStub, engine_on


def test_counted() -> None:
    assert [counted(n, "rule") for n in (0, 1, 2)] == ["0 rules", "1 rule", "2 rules"]
    assert counted(3, "entry", "entries") == "3 entries"
    assert counted(1, "entry", "entries") == "1 entry"


async def test_the_engine_logs_one_rule_in_the_singular(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router")
    engine = await engine_on(tmp_path, EVERYONE, ClientStub())
    await engine.reload_in_thread()  # the same file: nothing reloaded
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    await engine.reload_in_thread()
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("loaded 1 rule from ") for m in said), said
    assert "rules unchanged (1 rule)" in said
    assert "reloaded 1 rule" in said


async def test_rules_with_a_problem_are_not_said_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Between the error and the refusal, "loaded 1 rule" read as a start
    that went ahead with the rules it could read."""
    caplog.set_level(logging.INFO, logger="router")
    broken = EVERYONE + "  - name: typo\n    on: call\n    if: didd == '1'\n    do: []\n"
    engine = await engine_on(tmp_path, broken, ClientStub())
    assert engine.setup_problems
    said = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("loaded ") for m in said), said
    assert any(m.startswith("rules not loaded: 1 problem above (1 rule from ") for m in said), said
