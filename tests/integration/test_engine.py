"""The engine routing live calls on the sandbox Asterisk, with the shipped dialplan.

Calls are Local channels originated into ``[callrouter-inbound]`` exactly as
``examples/asterisk/extensions.conf`` defines it; where each call lands is
observed as its ``Newexten`` (see :mod:`router.sandbox.calls`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from router.config import Config, load_config
from router.engine import Engine, EngineOptions
from router.hookspecs import hookimpl
from router.plugins import Plugins
from router.rules.registry import Registry
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer, PlacedCall
from tests.integration._live import TEST_QUEUE, SharedEngine, admin_placer, example_dialplan
from tests.integration.conftest import AMI_TRANSPORTS, ami_url
from tests.unit.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "engine"


class SlowCRM:
    """A lookup slower than any deadline."""

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def slow_crm(number: str) -> dict[str, Any]:
            """Never answers in time."""
            await asyncio.sleep(30)
            return {"found": True}

        registry.add_lookup("slow_crm", slow_crm)


class Exploding:
    """Raises in every hook it can implement."""

    __name__ = "exploding"

    def _boom(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("exploding plugin")

    @hookimpl
    def callrouter_configure(self, config: Config) -> None:
        self._boom()

    @hookimpl
    def callrouter_startup(self, engine: object) -> None:
        self._boom()

    @hookimpl
    def callrouter_event(self, event: object, call: object) -> None:
        self._boom()

    @hookimpl
    def callrouter_call_start(self, call: object) -> None:
        self._boom()

    @hookimpl
    def callrouter_prefetch(self, call: object) -> None:
        self._boom()

    @hookimpl
    async def callrouter_decision(self, call: object) -> None:
        self._boom()

    @hookimpl
    def callrouter_call_end(self, call: object) -> None:
        self._boom()

    @hookimpl
    def callrouter_stream_gap(self, gap: object) -> None:
        self._boom()

    @hookimpl
    def callrouter_shutdown(self, engine: object) -> None:
        self._boom()


def routing_dialplan() -> str:
    return example_dialplan() + TEST_QUEUE


def make_config(
    box: Sandbox, tmp: Path, *, shadow: bool = False, transport: str = "ajam"
) -> Config:
    path = tmp / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{ami_url(box, transport)}"\nusername = "router"\n'
        f'secret = "{box.secret}"\n'
        f'[router]\nrules = ["{FIXTURES / "rules"}"]\nstate_dir = "{tmp / "state"}"\n'
        f"shadow = {'true' if shadow else 'false'}\n"
        f'[plugins.directory]\nfile = "{FIXTURES / "directory.csv"}"\n',
        encoding="utf-8",
    )
    return load_config(path)


@pytest.fixture(scope="module")
def routing_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.set_dialplan(routing_dialplan())
    return sandbox


@pytest.fixture(scope="module", params=AMI_TRANSPORTS)
def ami_transport(request: pytest.FixtureRequest) -> str:
    """Every test of the engine runs over AJAM and over native TCP AMI (issue 16)."""
    return str(request.param)


@pytest.fixture(scope="module")
def routers() -> list[SharedEngine]:
    """The module's routers (one per transport) that :func:`no_router` stops."""
    return []


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    routing_sandbox: Sandbox,
    tmp_path_factory: pytest.TempPathFactory,
    ami_transport: str,
    routers: list[SharedEngine],
) -> AsyncIterator[SharedEngine]:
    config = make_config(
        routing_sandbox, tmp_path_factory.mktemp("engine"), transport=ami_transport
    )

    def build() -> Engine:
        plugins = Plugins.load(extra=[SlowCRM(), Exploding()])
        return Engine(config, plugins=plugins, options=EngineOptions(watch_interval=0))

    router = SharedEngine(build)
    routers.append(router)
    try:
        yield router
    finally:
        routers.remove(router)
        await router.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def engine(shared: SharedEngine) -> Engine:
    """The module's router over ``ami_transport``, serving (started again after
    a test that stopped it)."""
    return await shared.serving()


@pytest_asyncio.fixture(loop_scope="module")
async def no_router(routers: list[SharedEngine]) -> None:
    """The sandbox with none of the module's routers serving (one router at a
    time on this Asterisk); the next test that needs one starts it again."""
    for router in routers:
        await router.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placer(routing_sandbox: Sandbox) -> AsyncIterator[CallPlacer]:
    async with admin_placer(routing_sandbox) as p:
        yield p


# (caller, DID, expected destination)
ROUTING_TABLE: list[tuple[str, str, str]] = [
    ("79161234567", "74950000001", "callrouter-dial,101"),
    ("+79161234568", "74950000001", "callrouter-dial,102"),
    ("89161234569", "74950000001", "callrouter-dial,103"),
    ("74957654321", "74950000002", "callrouter-dial,104"),
    ("9031112233", "74950000001", "callrouter-dial,105"),
    ("79990000000", "74950000001", "hangup"),
    ("74951112233", "74950000002", "hangup"),
    ("201", "74950000001", "test-queue,internal"),
    ("79160000000", "74950000001", "test-queue,sales"),
    ("79160000001", "74950000002", "test-queue,support"),
]


def expand_table(count: int) -> list[tuple[str, str, str]]:
    """``count`` calls cycling through the table, unknown numbers made unique."""
    calls = []
    for i in range(count):
        caller, did, expected = ROUTING_TABLE[i % len(ROUTING_TABLE)]
        if caller.startswith("7916000000"):
            caller = f"791600{i:05d}"
        calls.append((caller, did, expected))
    return calls


def assert_routed(calls: list[tuple[PlacedCall, str]]) -> None:
    wrong = [(c.caller, c.did, c.destination, want) for c, want in calls if c.destination != want]
    assert not wrong, f"misrouted (caller, did, got, expected): {wrong}"


def park_waits(engine: Engine) -> dict[str, float]:
    """Decisions by how their channel was seen at its Wait step (router/parking.py)."""
    counter = engine.metrics.park_waits
    outcomes = ("at-once", "waited", "missed", "blind", "unwatched")
    return {outcome: counter.labels(outcome)._value.get() for outcome in outcomes}


async def test_fifty_calls_each_reach_their_destination(engine: Engine, placer: CallPlacer) -> None:
    before = park_waits(engine)
    placed: list[tuple[PlacedCall, str]] = []
    for caller, did, expected in expand_table(50):
        call = await placer.place(did, caller)
        await placer.wait_all([call], timeout=10)
        placed.append((call, expected))
    assert_routed(placed)
    await engine.wait_idle()
    records = {r.channel: r for r in engine.records}
    for call, _ in placed:
        record = records[call.channel]
        assert record.outcome == "executed", (call.caller, record.to_dict())
    redirected = [c for c, want in placed if want != "hangup"]
    assert all(engine.executor.redirects.get(c.channel) == 1 for c in redirected)
    # Every decision was acted on once its channel was seen at its Wait step
    # (router/parking.py): none had to be sent without it.
    after = park_waits(engine)
    waits = {outcome: after[outcome] - before[outcome] for outcome in after}
    assert waits["at-once"] + waits["waited"] == len(placed), waits
    # Cyrillic from the directory reached the channel (Setvar), read back from events.
    owner = next(c for c, want in placed if want == "callrouter-dial,101")
    assert owner.variables.get("CRM_MANAGER") == "Пётр Петров"


async def test_twenty_calls_at_once(engine: Engine, placer: CallPlacer) -> None:
    table = expand_table(20)
    calls = await asyncio.gather(*(placer.place(did, caller) for caller, did, _ in table))
    await placer.wait_all(calls, timeout=20)
    assert_routed(list(zip(calls, [want for *_, want in table], strict=True)))
    latencies = sorted(c.latency_ms for c in calls if c.latency_ms is not None)
    assert latencies, "no latency measured"
    assert latencies[len(latencies) // 2] < 2000  # a generous bound: well inside the wait


async def test_no_matching_rule_falls_through_to_default_route(
    engine: Engine, placer: CallPlacer
) -> None:
    call = await placer.place("74950000007", "79160009999", wait=2)
    await placer.wait_all([call], timeout=15)
    assert call.destination == "callrouter-default,74950000007"
    await engine.wait_idle()
    record = next(r for r in engine.records if r.channel == call.channel)
    assert record.outcome == "fell-through"
    assert record.actions == []


async def test_lookup_slower_than_deadline_means_no_action(
    engine: Engine, placer: CallPlacer
) -> None:
    call = await placer.place("74950000009", "79160008888", wait=2)
    await placer.wait_all([call], timeout=15)
    assert call.destination == "callrouter-default,74950000009"
    await engine.wait_idle()
    record = next(r for r in engine.records if r.channel == call.channel)
    assert record.outcome == "late"
    # The rule that decided once the lookup gave up is shown, never sent.
    assert all(a.status == "planned" for a in record.actions), record.actions
    assert engine.executor.redirects.get(call.channel) is None


async def test_exploding_plugin_is_logged_once_per_call_and_hook(
    engine: Engine, placer: CallPlacer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every event of the call fails the plugin's ``callrouter_event``: one line
    for it, and one for each other hook that failed for the call, never one
    per event."""
    caplog.set_level(logging.ERROR, logger="router.plugins")
    call = await placer.place("74950000001", "79161234567")
    await placer.wait_all([call], timeout=10)
    assert call.destination == "callrouter-dial,101"
    await engine.wait_idle()
    linkedid = next(r.linkedid for r in engine.records if r.channel == call.channel)

    def about_call() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if "'exploding'" in r.getMessage() and linkedid in r.getMessage()
        ]

    await placer.client.send("Hangup", {"Channel": call.channel}, validate=False)
    # The call ends with the Hangup of its last channel, not of this one (its
    # Local ;2 half, the leg it dialled): wait for that end to reach the plugins,
    # which a loaded host delays; a call_end never told fails here.
    await eventually(
        lambda: any("failed in callrouter_call_end" in m for m in about_call()),
        "the call's end reached the plugins",
        10,
    )
    said = about_call()
    hooks = [re.search(r"failed in (callrouter_\w+)", m) for m in said]
    assert all(hooks), said
    failed = [h.group(1) for h in hooks if h]
    assert len(failed) == len(set(failed)), said  # once per hook
    assert set(failed) == {
        "callrouter_event",
        "callrouter_call_start",
        "callrouter_prefetch",
        "callrouter_decision",
        "callrouter_call_end",
    }, said


async def test_tracker_empties_when_calls_hang_up(engine: Engine, placer: CallPlacer) -> None:
    await placer.hangup_all()
    for _ in range(50):
        if not [c for c in engine.tracker if c.caller_number]:
            break
        await asyncio.sleep(0.1)
    leftover = [c.to_dict() for c in engine.tracker]
    assert leftover == []


async def test_shadow_mode_sends_no_action(
    routing_sandbox: Sandbox,
    placer: CallPlacer,
    no_router: None,
    tmp_path: Path,
    ami_transport: str,
) -> None:
    config = make_config(routing_sandbox, tmp_path, shadow=True, transport=ami_transport)
    # The same rules need the same lookups: a rule set naming an unknown one is
    # refused at start.
    shadow = Engine(
        config, plugins=Plugins.load(extra=[SlowCRM()]), options=EngineOptions(watch_interval=0)
    )
    await shadow.start()
    task = asyncio.ensure_future(shadow.serve())
    try:
        call = await placer.place("74950000001", "79161234567", wait=2)
        await placer.wait_all([call], timeout=15)
        assert call.destination == "callrouter-default,74950000001"
        await shadow.wait_idle()
        record = next(r for r in shadow.records if r.channel == call.channel)
        assert record.outcome == "shadow"
        assert record.rules == ("owner",)
        assert shadow.executor.redirects == {}
        assert "CRM_MANAGER" not in call.variables
    finally:
        shadow.request_stop()
        await task
        await shadow.stop()


async def test_router_down_calls_take_default_route(placer: CallPlacer, no_router: None) -> None:
    """With no router serving, the dialplan alone fails open."""
    calls = [await placer.place("74950000001", "79161234567", wait=1) for _ in range(3)]
    await placer.wait_all(calls, timeout=15)
    assert [c.destination for c in calls] == ["callrouter-default,74950000001"] * 3
