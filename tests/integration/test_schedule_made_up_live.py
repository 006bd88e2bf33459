"""A ``missed: run-once`` rule's run due while callrouter was stopped, made up
once at start on the real Asterisk 22, and not again at the next restart
(issue 16): its last run kept in state_dir/schedule-runs.json."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from router.sandbox import Sandbox
from router.schedule_runs import LastRun, ScheduleRuns
from router.testing import EngineFactory
from tests.integration._live import dialplan_globals, set_globals

pytestmark = pytest.mark.integration

MODE = "CALLROUTER_HSCHED_MODE"
RULES = f"""version: 1
rules:
  - name: night-mode
    schedule: "0 19 * * *"
    missed: run-once
    do:
      - ami: {{action: Setvar, variable: {MODE}, value: night}}
"""


async def _mode(box: Sandbox) -> str | None:
    return (await asyncio.to_thread(dialplan_globals, box)).get(MODE)


async def test_a_run_missed_while_stopped_is_made_up_once_not_at_the_next_restart(
    engine_factory: EngineFactory,
    sandbox: Sandbox,
    sandbox_globals_kept: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopped for two days over night-mode's 19:00 run, the PBX left in day
    mode: the start sets night mode in Asterisk, once; set back to day by hand,
    a second restart leaves it so (nothing missed since the run made up)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    ScheduleRuns(state).save({"night-mode": LastRun("0 19 * * *", "Europe/Moscow", two_days_ago)})
    await asyncio.to_thread(set_globals, sandbox, {MODE: "day"})
    caplog.set_level(logging.INFO)

    engine = await engine_factory(rules, sandbox=sandbox, state_dir=state)
    making_up = engine._making_up
    assert making_up is not None, "nothing was made up at start"
    await asyncio.wait_for(making_up, 30)
    assert await _mode(sandbox) == "night"
    said = [r.getMessage() for r in caplog.records if "was missed while" in r.getMessage()]
    assert len(said) == 1, said
    assert "(run once now, as its rule says missed: run-once" in said[0]
    assert any(r.getMessage().startswith("schedule night-mode: [") for r in caplog.records)
    await engine_factory.close()
    kept = ScheduleRuns(state).load()["night-mode"]
    assert kept.last > two_days_ago + timedelta(days=1)

    await asyncio.to_thread(set_globals, sandbox, {MODE: "day"})
    caplog.clear()
    again = await engine_factory(rules, sandbox=sandbox, state_dir=state)
    assert again._making_up is None
    await engine_factory.close()
    assert await _mode(sandbox) == "day"
    assert not [r for r in caplog.records if "was missed" in r.getMessage()]
    assert not [r for r in caplog.records if r.getMessage().startswith("schedule night-mode: [")]
