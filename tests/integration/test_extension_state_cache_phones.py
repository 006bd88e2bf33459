"""``[plugins.extension_state] cache = true`` with real phones (issue 16): a
manager on a call is skipped from memory, without the ``ExtensionState``
round trip, and rung again once Asterisk tells the call's end.

The owner is read from the static directory (the 1C plugin is not needed to
show the state): the caller 79161234567 belongs to 101.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.builtin.extension_state import ExtensionState
from router.sandbox.phones import Phones
from router.testing import serving
from tests.integration._live import builtin_engine
from tests.unit.waiting import eventually

pytestmark = pytest.mark.integration

DID = "74951234567"
CUSTOMER = "79161234567"
RULES = """version: 1
rules:
  - name: owner
    priority: 50
    on: call
    lookup:
      entry: directory(caller.number)
      state: extension_state(entry.extension)
    when: entry.extension and state in ("idle", "unknown", None)
    do:
      - redirect: {context: callrouter-dial, exten: "{entry.extension}"}
  - name: busy
    priority: 0
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "103"}
"""
TABLES = (
    '[plugins.extension_state]\ncontext = "sandbox-phones"\ncache = true\n'
    f'[plugins.directory.entries."{CUSTOMER}"]\nname = "ООО Ромашка"\nextension = "101"\n'
)


async def test_a_manager_on_a_call_is_skipped_from_memory_and_rung_after_it(
    phones: Phones, tmp_path: Path
) -> None:
    engine = builtin_engine(phones.pbx.tcp_url, phones.pbx.secret, tmp_path, RULES, TABLES)
    async with serving(engine):
        state = engine.plugins.pm.get_plugin("extension_state")
        assert isinstance(state, ExtensionState)
        asked: list[str] = []
        ask = state._ask

        async def counted(extension: str) -> str:
            asked.append(extension)
            return await ask(extension)

        state._ask = counted  # type: ignore[method-assign]

        # 101 talks to 102: Asterisk tells 101's hint InUse.
        inside = await asyncio.to_thread(phones["102"].dial, "101")
        await asyncio.to_thread(inside.wait_answered, 20)
        await eventually(lambda: state.states.get("101") == "inuse", "101 in use told", 10)

        call = await asyncio.to_thread(phones.pstn.call, did=DID, caller=CUSTOMER)
        await asyncio.to_thread(call.wait_answered, 20)
        taken = await asyncio.to_thread(phones["103"].current)
        assert taken.answered
        await engine.wait_idle()  # the record follows the landing the engine read
        record = engine.records[-1]
        assert record.rules == ("busy",)
        assert asked == []  # the state came from memory
        await asyncio.to_thread(call.hangup)
        await asyncio.to_thread(call.wait_ended, 20)

        # 101 hangs up: Asterisk tells Idle, and the next call rings 101.
        await asyncio.to_thread(inside.hangup)
        await asyncio.to_thread(inside.wait_ended, 20)
        await eventually(lambda: state.states.get("101") == "idle", "101 idle told", 10)
        again = await asyncio.to_thread(phones.pstn.call, did=DID, caller=CUSTOMER)
        await asyncio.to_thread(again.wait_answered, 20)
        owner = await asyncio.to_thread(phones["101"].current)
        assert owner.answered
        await engine.wait_idle()
        assert engine.records[-1].rules == ("owner",)
        assert asked == []
        await asyncio.to_thread(again.hangup)
        await asyncio.to_thread(again.wait_ended, 20)
