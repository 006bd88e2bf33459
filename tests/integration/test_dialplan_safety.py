"""Untrusted values against the shipped dialplan on a real Asterisk 22 (issue 10, items 1, 10).

* A 1C manager card whose extension is ``101&Local/666@somecontext`` (or
  carries ``,`` and Dial options) must never make Asterisk ring another
  channel: the rule falls back and the call lands in the rules' fallback.
* A caller number ``79161234567,DID: 74950000001`` (what a percent-encoded SIP
  From user delivers) must not change the DID the decision uses, nor the DID
  1C is told.

The raw caller ID enters through the sandbox's own ``sandbox-raw-caller``
context (router/sandbox/conf/extensions.conf): Originate would clean it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from callrouter_onec.directory import Directory
from callrouter_onec.double import DEFAULT_USER, OneCDouble

from router.config import Config, load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer, PlacedCall
from router.testing import serving
from tests.integration._live import ONEC_PASSWORD, TEST_QUEUE, admin_placer, example_dialplan

pytestmark = pytest.mark.asyncio(loop_scope="module")

DID = "74951234567"
OTHER_DID = "74950000001"  # a VIP line with rules of its own
FALLBACK = "test-queue,fallback"
CANARY = "somecontext"
#: test-queue: the rules' fallback and the VIP line's queue.
TEST_CONTEXTS = f"""{TEST_QUEUE}
; a trunk's context that answers (a greeting would play here) and hands its
; calls on through a Local channel, to a dialplan that rewrites the number
; before the routing request
[trunk-rewrite]
exten => _X.,1,Answer()
 same => n,Dial(Local/${{EXTEN}}@rewrite-caller)
 same => n,Hangup()
[rewrite-caller]
exten => _X.,1,Set(CALLERID(num)=8${{CALLERID(num):1}})
 same => n,Goto(callrouter-inbound,${{EXTEN}},1)
; the same, to a dialplan that gives the call another number (a CRM's or a
; list's, for the trunk's): a 1C client's whose manager is at 101
[trunk-renumber]
exten => _X.,1,Answer()
 same => n,Dial(Local/${{EXTEN}}@renumber)
 same => n,Hangup()
[renumber]
exten => _X.,1,Set(CALLERID(num)=79161110004)
 same => n,Goto(callrouter-inbound,${{EXTEN}},1)
; what a hostile extension tries to ring: any channel here is the attack working
[{CANARY}]
exten => _X.,1,NoOp(canary ${{EXTEN}})
 same => n,Answer()
 same => n,Wait(120)
"""
RULES = """version: 1
rules:
  - name: vip-line
    priority: 90
    on: call
    if: did == "74950000001"
    do:
      - redirect: {context: test-queue, exten: vip}
  - name: owner
    priority: 50
    on: call
    lookup:
      owner: onec.responsible(caller.number)
    when: owner.found and owner.manager.extension
    do:
      - setvar: {CRM_MANAGER: "{owner.manager.name}"}
      - redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}
  - name: fallback
    priority: 0
    on: call
    do:
      - redirect: {context: test-queue, exten: fallback}
"""
# caller -> the extension 1C gives for that caller's manager
MANAGERS = {
    "79161110001": "101&Local/666@somecontext",
    "79161110002": "101,5,U(evil)",
    "79161110003": "Local/667@somecontext",
    "79161110004": "101",
}


@pytest.fixture(scope="module")
def double_directory() -> Directory:
    """The conftest's ``double`` serves these: each caller's manager has the
    extension :data:`MANAGERS` gives (unsafe ones included)."""
    managers = {
        f"m{i}": {"key": f"m{i}", "id": f"m-{i}", "name": f"Менеджер {i}", "extension": ext}
        for i, ext in enumerate(MANAGERS.values())
    }
    clients = [
        {
            "id": f"c-{i}",
            "type": "company",
            "name": f"Клиент {i}",
            "manager": f"m{i}",
            "phones": [phone],
            "changed": "2026-01-01",
        }
        for i, phone in enumerate(MANAGERS)
    ]
    return Directory(managers, clients)


def dialplan() -> str:
    return example_dialplan() + TEST_CONTEXTS


@pytest.fixture(scope="module")
def safety_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.set_dialplan(dialplan())
    return sandbox


def make_config(box: Sandbox, double: OneCDouble, state: Path) -> Config:
    state.mkdir(parents=True, exist_ok=True)
    (state.parent / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = state.parent / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret = "{box.secret}"\n'
        f'[router]\nrules = ["{state.parent / "rules.yaml"}"]\nstate_dir = "{state}"\n'
        f'[plugins.onec]\nurl = "{double.url}"\nusername = "{DEFAULT_USER}"\n'
        f'password = "{ONEC_PASSWORD}"\nconnect_timeout = 0.3\ntimeout = 1.0\n',
        encoding="utf-8",
    )
    return load_config(path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(
    safety_sandbox: Sandbox, double: OneCDouble, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Engine]:
    config = make_config(safety_sandbox, double, tmp_path_factory.mktemp("safety") / "state")
    async with serving(
        Engine(config, plugins=Plugins.load(), options=EngineOptions(watch_interval=0))
    ) as eng:
        yield eng


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placer(safety_sandbox: Sandbox) -> AsyncIterator[CallPlacer]:
    async with admin_placer(
        safety_sandbox,
        inbound_context="sandbox-raw-caller",
        ignore_contexts=("callrouter-inbound",),
    ) as p:
        yield p


async def call_from(placer: CallPlacer, caller: str, did: str = DID) -> PlacedCall:
    call = await placer.place(did, "", caller_name=caller)
    await placer.wait_all([call], timeout=10)
    return call


async def channels_of(engine: Engine, placer: CallPlacer, linkedid: str) -> list[str]:
    """Every channel of one call: what the engine tracked and what Asterisk lists now."""
    tracked = [ch for c in engine.tracker if c.linkedid == linkedid for ch in c.channels]
    listing = await placer.client.send("CoreShowChannels", {}, validate=False)
    return tracked + [
        item.get("Channel") or "" for item in listing.items if item.get("Linkedid") == linkedid
    ]


def record_of(engine: Engine, call: PlacedCall) -> dict[str, object]:
    return next(r.to_dict() for r in engine.records if r.channel == call.channel)


@pytest.mark.parametrize("caller", ["79161110001", "79161110002", "79161110003"])
async def test_hostile_extension_from_1c_rings_nothing_else(
    engine: Engine, placer: CallPlacer, caller: str
) -> None:
    call = await call_from(placer, caller)
    await asyncio.sleep(0.5)  # a Dial started by the call would show by now
    await engine.wait_idle()
    record = record_of(engine, call)
    extra = [ch for ch in await channels_of(engine, placer, str(record["call"])) if CANARY in ch]
    assert extra == [], "the 1C answer made Asterisk ring another channel"
    assert call.destination == FALLBACK
    assert record["rule"] == "fallback"
    assert record["outcome"] == "executed"
    rejected = record["rejected"]
    assert isinstance(rejected, list)
    assert [r["rule"] for r in rejected] == ["owner"]
    assert "is not a safe dialplan location" in rejected[0]["reason"]


async def test_a_safe_extension_still_reaches_the_manager(
    engine: Engine, placer: CallPlacer
) -> None:
    call = await call_from(placer, "79161110004")
    assert call.destination == "callrouter-dial,101"


async def test_caller_id_cannot_rewrite_the_did(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    call = await call_from(placer, f"79161110004,DID: {OTHER_DID}")
    await engine.wait_idle()
    record = record_of(engine, call)
    assert record["did"] == DID
    assert record["rule"] != "vip-line"
    assert call.destination != "test-queue,vip"
    told = {r.query.get("did") for r in double.requests("/v1/responsible")}
    assert OTHER_DID not in told
    # The dialplan's own copies are filtered: no comma, no second key.
    assert call.variables.get("CALLROUTER_DID") == DID


async def test_the_vip_line_itself_still_gets_its_rule(engine: Engine, placer: CallPlacer) -> None:
    call = await call_from(placer, "79161110004", did=OTHER_DID)
    assert call.destination == "test-queue,vip"


@pytest.mark.parametrize(
    "exten", ["101&Local/666@somecontext", "101,5,U(evil)", "101&Local/668@somecontext,5"]
)
async def test_the_dialplan_alone_never_dials_a_hostile_extension(
    engine: Engine, placer: CallPlacer, exten: str
) -> None:
    """As if an older callrouter, or anyone with AMI, redirected a call there unchecked."""
    call = await call_from(placer, "79990000000")
    assert call.destination == FALLBACK
    await engine.wait_idle()
    record = record_of(engine, call)
    await placer.client.send(
        "Redirect",
        {"Channel": call.channel, "Context": "callrouter-dial", "Exten": exten, "Priority": "1"},
        validate=False,
    )
    for _ in range(50):
        if "CALLROUTER_TARGET" in call.variables:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    extra = [ch for ch in await channels_of(engine, placer, str(record["call"])) if CANARY in ch]
    assert extra == [], "the dialplan rang another channel"
    assert "DIALSTATUS" not in call.variables  # Dial never ran
    assert call.variables.get("CALLROUTER_TARGET") is not None


async def test_the_dialplan_dials_a_plain_extension(engine: Engine, placer: CallPlacer) -> None:
    call = await call_from(placer, "79990000000")
    await placer.client.send(
        "Redirect",
        {"Channel": call.channel, "Context": "callrouter-dial", "Exten": "101", "Priority": "1"},
        validate=False,
    )
    for _ in range(50):
        if "DIALSTATUS" in call.variables:
            break
        await asyncio.sleep(0.05)
    assert call.variables.get("CALLROUTER_TARGET") == "101"
    assert "DIALSTATUS" in call.variables  # Dial(PJSIP/101) ran (the sandbox has no PJSIP)


async def test_the_call_has_the_number_its_dialplan_rewrote(
    engine: Engine, safety_sandbox: Sandbox
) -> None:
    """Issue 16: a trunk's context (``trunk-rewrite``, here an Originate's
    ``Local`` channel with the number ``79161110005``) answers and dials the
    call on through a Local channel whose ``;2`` half rewrites the number
    (``Set(CALLERID(num)=8...)``) and sends the routing request. The engine
    reads the trunk's number first, on the trunk's own channel (its
    ``Newstate`` ``Up``): the call (the feed, ``GET /calls``, event rules,
    1C's ``from``) has the number it was routed with, the request's, not
    that one. Without the tracker's ``requested`` it kept the trunk's."""
    async with admin_placer(safety_sandbox, inbound_context="trunk-rewrite") as trunk:
        placed = await trunk.place(DID, "79161110005")
        # The call's Linkedid: the Uniqueid of its first channel, the Originate's.
        linkedid = placed.uniqueid.removesuffix("-in") + "-out"
        for _ in range(100):
            records = [r.to_dict() for r in engine.records]
            if any(r["call"] == linkedid for r in records):
                break
            await asyncio.sleep(0.05)
        await engine.wait_idle()
        record = next(r.to_dict() for r in engine.records if r.to_dict()["call"] == linkedid)
        assert record["caller"] == "79161110005"  # normalized: the request had 89161110005
        tracked = engine.tracker.get(linkedid)
        assert tracked is not None
        assert tracked.caller_number == "89161110005"


async def test_the_prefetch_asks_1c_about_the_number_the_local_channel_has(
    engine: Engine, safety_sandbox: Sandbox, double: OneCDouble
) -> None:
    """Issue 16: as above, but the Local channel's dialplan gives the call
    another number (``79161110004``) before it steps into callrouter-inbound.
    The prefetch there asks 1C about that number, the one the call is routed
    with; it asked about the trunk's (``79161119999``), a lookup for nothing."""
    before = len(double.requests("/v1/responsible"))
    async with admin_placer(safety_sandbox, inbound_context="trunk-renumber") as trunk:
        placed = await trunk.place(DID, "79161119999")
        linkedid = placed.uniqueid.removesuffix("-in") + "-out"
        for _ in range(100):
            if any(r.to_dict()["call"] == linkedid for r in engine.records):
                break
            await asyncio.sleep(0.05)
        await engine.wait_idle()
        record = next(r.to_dict() for r in engine.records if r.to_dict()["call"] == linkedid)
        assert record["caller"] == "79161110004"
        assert record["rule"] == "owner"
    asked = [r.path.rsplit("/", 1)[-1] for r in double.requests("/v1/responsible")][before:]
    assert "79161119999" not in asked
