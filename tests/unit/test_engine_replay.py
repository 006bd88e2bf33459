"""The engine on the replaying fake Asterisk of ``router.testing``: start-up cases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: everyone
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


async def test_calls_waiting_before_start_are_routed_once(
        engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path) -> None:
    """callrouter restarted while calls wait: their requests were never seen, but
    the start-up reconcile finds the channels and routes each exactly once."""
    waiting = [ajam_replay.inbound_call(caller=f"7916123456{i}", did="74950000001",
                                        announce=False, wait=10) for i in range(3)]
    engine = await engine_factory(rules)
    await ajam_replay.settle(engine)
    assert sorted(r["Channel"] for r in ajam_replay.sent("Redirect")) == sorted(waiting)
    assert [r.outcome for r in engine.records] == ["executed"] * 3


async def test_calls_past_their_deadline_are_left_to_the_dialplan(
        engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path) -> None:
    ajam_replay.inbound_call(caller="79161234567", did="74950000001", announce=False, wait=0.5)
    engine = await engine_factory(rules)
    await ajam_replay.settle(engine)
    assert ajam_replay.count("Redirect") == 0
    assert engine.records == []
