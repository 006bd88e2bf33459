"""A refused action on a live session: one decision fails with the reason, the
session stays (issue 11 item 8)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: mark
    on: call
    do:
      - ami: {action: DBPut, family: callrouter, key: last, val: "{caller.number}"}
      - redirect: {context: queues, exten: sales}
"""


async def test_permission_denied_fails_the_action_with_the_class_and_keeps_the_session(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    ajam_replay.on("DBPut", lambda sent: [("Response", "Error"), ("Message", "Permission denied")])
    engine = await engine_factory(rules)
    for caller in ("79161234567", "79161234568", "79161234569"):
        ajam_replay.inbound_call(caller=caller, did="74950000001")
        await ajam_replay.settle(engine)
    assert [r.outcome for r in engine.records] == ["failed"] * 3
    for record in engine.records:
        dbput, redirect = record.actions
        assert (dbput.status, dbput.detail) == (
            "failed",
            "DBPut: Permission denied: the manager user 'router' needs write "
            "class system (manager.conf)",
        )
        assert redirect.status == "confirmed"  # the next action still ran
    # One session all along: no re-login per call, so no event-stream gap.
    assert ajam_replay.count("Login") == 1
    assert ajam_replay.count("DBPut") == 3
