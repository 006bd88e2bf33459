"""EngineAPI.watch and EngineAPI.decision (issue 13): what the HTTP API needs of the engine.

The API confirms a click-to-call by its events and shows the rule that routed
a call; it reaches the engine only through EngineAPI, so both are there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from router.ami.stream import StreamGap
from router.calls import Call

if TYPE_CHECKING:
    from router.ami.message import Event
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: to-sales
    on: call
    if: did == "74950000001"
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""


async def test_watch_tells_every_event_with_its_call_until_stopped(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    engine = await engine_factory(rules)
    seen: list[tuple[str, str | None]] = []

    def listener(item: Event | StreamGap, call: Call | None) -> None:
        name = "gap" if isinstance(item, StreamGap) else item.name
        seen.append((name, call.linkedid if call else None))

    def broken(item: Event | StreamGap, call: Call | None) -> None:
        raise RuntimeError("listener bug")

    stop = engine.api.watch(listener)
    engine.api.watch(broken)  # logged, never stops the event or the others
    channel = ajam_replay.inbound_call(caller="+79161234567", did="74950000001")
    await ajam_replay.settle(engine)
    call = engine.api.calls.by_channel(channel)
    assert call is not None
    assert ("Newchannel", call.linkedid) in seen
    assert ("UserEvent", call.linkedid) in seen
    record = engine.api.decision(call.linkedid)
    assert record is not None
    assert record["rule"] == "to-sales"
    assert record["outcome"] == "executed"
    assert engine.api.decision("no-such-call") is None
    stop()
    count = len(seen)
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    assert len(seen) == count
