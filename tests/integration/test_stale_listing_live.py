"""A redirect to an extension the dialplan lacks, on the real Asterisk 22
(issue 16): the rule is rejected from the dialplan audit's listing and the
next rule routes the call; an extension a ``dialplan reload`` added after
the audit (Asterisk reports that reload to nobody) is asked about in the
background, and the next call takes the rule, without an audit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.routing import RouteRecord
from router.sandbox import Sandbox
from router.sandbox.calls import PlacedCall
from router.testing import serving
from tests.integration._live import TEST_QUEUE, admin_placer, builtin_engine, example_dialplan
from tests.unit.waiting import eventually

pytestmark = pytest.mark.integration

DID = "74951234567"
CALLER = "79161110005"
RULES = """version: 1
rules:
  - name: owner
    priority: 50
    on: call
    lookup:
      owner: directory(caller.number)
    when: owner
    do:
      - redirect: {context: callrouter-dial, exten: "{owner.extension}"}
  - name: fallback
    priority: 0
    on: call
    do:
      - redirect: {context: test-queue, exten: fallback}
"""
#: What a `dialplan reload` adds: a named extension for the manager 1C names.
IVANOV = "[callrouter-dial]\nexten => Ivanov,1,NoOp(manager Ivanov)\n same => n,Wait(120)\n"


def dialplan(with_ivanov: bool) -> str:
    text = example_dialplan() + TEST_QUEUE
    assert "[callrouter-dial]\n" in text
    return text.replace("[callrouter-dial]\n", IVANOV) if with_ivanov else text


async def test_an_extension_added_by_dialplan_reload_routes_from_the_next_call(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    await asyncio.to_thread(sandbox.set_dialplan, dialplan(with_ivanov=False))
    engine = builtin_engine(
        sandbox.url,
        sandbox.secret,
        tmp_path,
        RULES,
        f'[plugins.directory.entries."{CALLER}"]\nname = "Иванов"\nextension = "Ivanov"\n',
    )
    async with serving(engine), admin_placer(sandbox) as placer:
        await eventually(lambda: engine.executor.dialplan, "the audit at start", 10)

        async def call() -> PlacedCall:
            placed = await placer.place(DID, CALLER)
            await placer.wait_all([placed], timeout=10)
            return placed

        async def record_of(placed: PlacedCall) -> RouteRecord:
            # Logged once the Redirect is confirmed, which may follow the landing.
            def found() -> list[RouteRecord]:
                return [r for r in engine.records if r.channel == placed.channel]

            await eventually(found, "the call's decision record", 5)
            (record,) = found()
            return record

        first = await call()
        assert first.destination == "test-queue,fallback"
        record = await record_of(first)
        assert record.rules == ("fallback",)
        assert "exten 'Ivanov' is not in context 'callrouter-dial'" in record.rejected[0]["reason"]

        # `dialplan reload` adds the extension: no Reload event, no audit.
        await asyncio.to_thread(sandbox.set_dialplan, dialplan(with_ivanov=True))
        await asyncio.sleep(6)  # past the first call's question (5 s a question)
        second = await call()  # still the fallback: the listing is stale; it asks
        assert second.destination == "test-queue,fallback"
        listing = engine.executor.dialplan
        assert listing is not None
        await eventually(
            lambda: not listing["callrouter-dial"].lacks("Ivanov"), "Asterisk's answer", 10
        )
        third = await call()
        assert third.destination == "callrouter-dial,Ivanov"
        record = await record_of(third)
        assert (record.rules, record.rejected) == (("owner",), [])


MISSING_CONTEXT_RULES = """version: 1
rules:
  - name: closed
    priority: 80
    on: call
    do:
      - redirect: {context: ivr, exten: closed}
  - name: fallback
    priority: 0
    on: call
    do:
      - redirect: {context: test-queue, exten: fallback}
"""
#: The context an administrator creates after `check --asterisk` FAILed it.
IVR = "\n[ivr]\nexten => closed,1,NoOp(ivr closed)\n same => n,Wait(120)\n"


async def test_a_context_the_dialplan_lacks_passes_the_rule_over_until_it_is_added(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The shipped rules' `ivr` on an Asterisk without it (issue 16): Asterisk
    accepts a Redirect to a context it lacks and hangs the call up, so the rule
    is passed over and the next one routes the call; once a `dialplan reload`
    adds the context, the rule routes again (asked in the background)."""
    await asyncio.to_thread(sandbox.set_dialplan, dialplan(with_ivanov=False))
    engine = builtin_engine(sandbox.url, sandbox.secret, tmp_path, MISSING_CONTEXT_RULES, "")
    async with serving(engine), admin_placer(sandbox) as placer:
        await eventually(lambda: engine.executor.dialplan, "the audit at start", 10)

        async def call() -> PlacedCall:
            placed = await placer.place(DID, CALLER)
            await placer.wait_all([placed], timeout=10)
            return placed

        first = await call()
        assert first.destination == "test-queue,fallback"

        def records() -> list[RouteRecord]:
            return [r for r in engine.records if r.channel == first.channel]

        await eventually(records, "the call's decision record", 5)
        (record,) = records()
        assert record.rules == ("fallback",)
        assert record.rejected[0]["reason"].startswith(
            "action 'redirect': context 'ivr' is not in Asterisk's dialplan (no such context)"
        )

        await asyncio.to_thread(sandbox.set_dialplan, dialplan(with_ivanov=False) + IVR)
        await asyncio.sleep(6)  # past the first call's question (5 s a question)
        await call()  # the listing is stale: passed over again, and asked
        listing = engine.executor.dialplan
        assert listing is not None
        await eventually(lambda: not listing["ivr"].lacks("closed"), "Asterisk's answer", 10)
        third = await call()
        assert third.destination == "ivr,closed"
