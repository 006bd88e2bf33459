"""A Redirect written right behind its Setvars, on the real Asterisk 22 over
TCP (issue 16): the executor does not wait for the Setvars' answers on one
TCP session, which Asterisk reads and runs an action at a time, so the
variables are set before the Redirect moves the channel, as when it waited:
the target's first step reads them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.sandbox import Sandbox
from router.testing import serving
from tests.integration._live import admin_placer, builtin_engine, example_dialplan
from tests.unit.waiting import eventually

pytestmark = pytest.mark.integration

DID = "74951234567"
CALLERS = [f"7916222000{n}" for n in range(5)]
RULES = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: directory(caller.number)
    when: owner
    do:
      - setvar: {CRM_CLIENT: "{owner.name}", CRM_MANAGER: "{owner.extension}"}
      - redirect: {context: ahead-target, exten: "{owner.extension}"}
"""
#: The target's first step copies the variables: set after the Redirect
#: moved the channel, they would be missing there.
TARGET = """
[ahead-target]
exten => _X.,1,Set(GOT=${CRM_CLIENT}/${CRM_MANAGER})
 same => n,Wait(120)
"""


@pytest.mark.parametrize("transport", ["tcp", "ajam"])
async def test_the_target_reads_the_variables_set_before_the_redirect(
    sandbox: Sandbox, tmp_path: Path, transport: str
) -> None:
    await asyncio.to_thread(sandbox.set_dialplan, example_dialplan() + TARGET)
    entries = "".join(
        f'[plugins.directory.entries."{caller}"]\nname = "Клиент {n}"\nextension = "10{n}"\n'
        for n, caller in enumerate(CALLERS)
    )
    url = sandbox.tcp_url if transport == "tcp" else sandbox.url
    engine = builtin_engine(url, sandbox.secret, tmp_path, RULES, entries)
    async with serving(engine), admin_placer(sandbox) as placer:
        assert getattr(engine.executor._ami, "actions_in_order", False) is (transport == "tcp")
        calls = [await placer.place(DID, caller) for caller in CALLERS]
        await placer.wait_all(calls, timeout=15)
        for n, call in enumerate(calls):
            assert call.destination == f"ahead-target,10{n}"
            got = await placer.client.send(
                "Getvar", {"Channel": call.channel, "Variable": "GOT"}, validate=False
            )
            assert got.response.get("Value") == f"Клиент {n}/10{n}"

        def recorded() -> list[tuple[str, ...]]:
            return [tuple(a.status for a in r.actions) for r in engine.records]

        await eventually(lambda: len(recorded()) == len(CALLERS), "every decision logged", 10)
        assert recorded() == [("ok", "confirmed")] * len(CALLERS)
