"""The 1C plugin on callrouter's typed contract (issue 12 item 2).

Its decision hook finds the answer its own lookup gave by the lookup's name
(``Trace.lookup_values``), so a change to how traces are written for people
cannot break 1C call history; its lookup gets the DID and call id of the
request it serves as an argument, so no memory keyed by the caller's number
can hand it another call's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrouter_onec.double import DEFAULT_USER, OneCDouble
from callrouter_onec.plugin import LOOKUP, OneCPlugin
from router import RequestInfo
from router.testing import StubEngine, config_from_toml, make_decision, make_trace

PASSWORD = "пароль-secret"  # the double's, in conftest.py
OWNER = {
    "found": True,
    "client": {"id": "client-1", "name": "ООО «Ромашка»"},
    "manager": {"id": "manager-1", "name": "Петров Пётр", "extension": "101"},
}


@pytest.fixture
async def started(
    double: OneCDouble, tmp_path: Path
) -> AsyncIterator[tuple[OneCPlugin, StubEngine]]:
    config = config_from_toml(
        tmp_path,
        (
            '[router]\nstate_dir = "state"\n[plugins.onec]\n'
            f'url = "{double.url}"\nusername = "{DEFAULT_USER}"\npassword = "{PASSWORD}"\n'
            "timeout = 0.5\nping_interval = 0\n"
        ),
    )
    onec = OneCPlugin()
    onec.callrouter_configure(config, config.plugins.for_plugin("onec"))
    engine = StubEngine(tmp_path / "state", config)
    await onec.callrouter_startup(engine)
    yield onec, engine
    await onec.callrouter_shutdown(engine)
    await engine.aclose()


async def test_the_decision_reads_its_answer_by_lookup_name_not_trace_text(
    started: tuple[OneCPlugin, StubEngine],
) -> None:
    onec, engine = started
    call = engine.calls.inbound_call(linkedid="20.1", caller="89161234567")
    trace = make_trace(lookups={LOOKUP: OWNER}, rule="owner")
    for rule in trace.rules:
        for lookup in rule.lookups:
            lookup.call = "ответ 1С для владельца"  # the text people read may say anything
    onec.callrouter_decision(
        call,
        make_decision(("redirect", {"context": "callrouter-dial", "exten": "101"}), rule="owner"),
        trace,
        "executed",
    )
    facts = onec._recall("20.1")  # what every history event of the call carries
    assert facts is not None
    assert (facts.manager_id, facts.manager_extension, facts.client_id, facts.silent) == (
        "manager-1",
        "101",
        "client-1",
        False,
    )


async def test_the_lookup_takes_did_and_call_id_from_its_request_argument(
    started: tuple[OneCPlugin, StubEngine], double: OneCDouble
) -> None:
    onec, _ = started
    request = RequestInfo(
        channel="Local/74957654321@callrouter-inbound-1;2",
        uniqueid="u-1",
        linkedid="30.1",
        caller="79161234567",
        did="74957654321",
    )
    answer = await onec.responsible("8 916 123-45-67", request=request)
    assert answer is not None
    [sent] = double.requests("/v1/responsible")
    assert sent.query == {"did": "74957654321", "call_id": "30.1"}


async def test_without_a_request_the_lookup_asks_without_did_or_call_id(
    started: tuple[OneCPlugin, StubEngine], double: OneCDouble
) -> None:
    onec, engine = started
    # An earlier call of the same caller to another DID is no source of facts any more.
    earlier = engine.calls.inbound_call(linkedid="40.1", caller="89161234567", did="74951234567")
    onec.callrouter_decision(earlier, make_decision(), None, "fell-through")
    assert await onec.responsible("79161234567") is not None
    [sent] = double.requests("/v1/responsible")
    assert "call_id" not in sent.query
    assert "did" not in sent.query
