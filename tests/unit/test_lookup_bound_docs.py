"""The plugin guide's way to bound a lookup's wait (docs/plugins.md, Async hooks)
does what the guide says (issue 16): callrouter gives a lookup no limit of its
own, so one that hangs uses the call's whole deadline and the call is late;
bounded by its plugin and said with ``LookupUnavailable``, the next rule
decides in time, with the plugin's words in the trace and no bug logged."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from router.rules import Context
from router.rules.context import Caller
from tests.unit.rules.test_plugin_action_bugs import NOW, _shop_rules

GUIDE = Path(__file__).parents[2] / "docs" / "plugins.md"


class HangingClient:
    async def owner(self, number: str) -> dict[str, str]:
        await asyncio.sleep(30)
        return {}


def the_guides_plugin() -> Any:
    """The guide's ``CrmPlugin``, run as written there."""
    text = GUIDE.read_text(encoding="utf-8")
    after = text.split("**Bound your lookup's wait yourself.**", 1)[1]
    block = re.search(r"```python\n(.*?)```", after, re.S)
    assert block is not None
    namespace: dict[str, Any] = {"CrmClient": HangingClient}
    exec(compile(block.group(1), str(GUIDE), "exec"), namespace)
    return namespace["CrmPlugin"](HangingClient())


def evaluate(tmp_path: Path, lookup: Any, seconds: float) -> Any:
    ruleset = _shop_rules(tmp_path, lookup)
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)

    async def once() -> Any:
        return await ruleset.evaluate(context, deadline=time.monotonic() + seconds, explain=True)

    return asyncio.run(once())


def test_a_lookup_that_hangs_uses_the_whole_deadline(tmp_path: Path) -> None:
    outcome = evaluate(tmp_path, HangingClient().owner, 0.05)
    assert outcome.trace.deadline_hit  # the engine says late: nothing is acted on
    assert outcome.trace.rules[0].lookups[0].error.startswith("timed out after ")


def test_bounded_as_the_guide_shows_the_next_rule_decides_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = the_guides_plugin()
    plugin.timeout = 0.02
    with caplog.at_level("WARNING", logger="router.plugins"):
        outcome = evaluate(tmp_path, plugin.owner, 30)
    assert not outcome.trace.deadline_hit
    assert outcome.decision.rules == ("fine",)
    assert outcome.trace.rules[0].lookups[0].error == "no answer within 0.02 s"
    assert [r for r in caplog.records if r.name == "router.plugins"] == []
