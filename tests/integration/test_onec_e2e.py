"""The 1C plugin end to end: sandbox Asterisk, in-process engine, in-process 1C double.

The engine loads its plugins the way ``callrouter run`` does (``Plugins.load()``:
built-ins plus entry points, so ``onec`` comes from its installed package) and
routes on ``onec.responsible(caller.number)`` (``plugins/onec/tests/fixtures/
rules/onec.yaml``), falling back to ``test-queue,fallback``.

Caller IDs written like people write them: Asterisk's Originate squeezes a
``CallerID`` number (``ast_shrink_phone_number``: ``8 (916) 123-45-67``
arrives as ``89161234567``, ``доб. 12`` as ``доб12``), which would test
nothing. The number is therefore passed as the caller *name*, which Asterisk
keeps as written, and the test context ``test-formatted`` copies it into
``CALLERID(num)`` with ``Set()`` (which keeps spaces, brackets and Cyrillic)
before the call enters the shipped ``callrouter-inbound`` context. So the
dialplan's ``UserEvent`` ``Caller`` header, and the engine, see exactly
``8 (916) 123-45-67 доб. 12``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from callrouter_onec import plugin as onec_plugin
from callrouter_onec.cache import BreakerState, ResponsibleCache
from callrouter_onec.double import DEFAULT_USER, OneCDouble

from router.config import Config, load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer, PlacedCall
from tests.integration._live import (
    FORMATTED_CALLER,
    ONEC_PASSWORD,
    TEST_QUEUE,
    SharedEngine,
    admin_placer,
    example_dialplan,
    start_engine,
    stop_engine,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).parents[2]
RULES = REPO / "plugins" / "onec" / "tests" / "fixtures" / "rules"
DID = "74951234567"
FALLBACK = "test-queue,fallback"
#: The caller ID as written (see the module docstring); the rules' fallback.
TEST_CONTEXTS = FORMATTED_CALLER + TEST_QUEUE

# Caller ID as written -> where the call must land (demo data of the double).
NUMBERS: list[tuple[str, str]] = [
    ("8 (916) 123-45-67", "callrouter-dial,101"),
    ("+7 916 1234567", "callrouter-dial,101"),
    ("9161234567", "callrouter-dial,101"),
    ("8 (916) 123-45-67 доб. 12", "callrouter-dial,101"),
    ("8 916 765-43-21", "callrouter-dial,101"),  # a contact person of the client
    ("+7 (495) 777-01-01", "callrouter-dial,102"),
    ("8 495 777 01 01 доб. 3", "callrouter-dial,102"),
    ("74957770101", "callrouter-dial,102"),
    ("8 (985) 765-43-21", "callrouter-dial,104"),
    ("+7 985 765 43 21", "callrouter-dial,104"),
    ("+7 (495) 999-00-00", "callrouter-dial,102"),  # three clients: 1C picks «Гамма»
    ("+49 30 12345678", "callrouter-dial,104"),  # a foreign client
    ("8-926-111-22-33", FALLBACK),  # manager without an extension
    ("+7 903 123 45 67", FALLBACK),  # a lead without a manager
    ("+7 (999) 000-00-01", FALLBACK),  # not a client
]


#: A line whose calls' numbers the inbound context itself rewrites
#: (:func:`rewriting_inbound`).
REWRITING_DID = "74951234577"


def rewriting_inbound(shipped: str) -> str:
    """The shipped ``[callrouter-inbound]`` once more, for :data:`REWRITING_DID`
    only (an exact extension wins over ``_X.``; a second ``[callrouter-inbound]``
    adds to the context), with ``Set(CALLERID(num)=8${CALLERID(num):1})`` as its
    first step: a number rewritten inside the inbound context, after the step
    into it that starts the prefetch."""
    body = shipped.split("[callrouter-inbound]\n", 1)[1].split("\n[", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith(("exten => _X.,", " same =>"))]
    assert lines[0].startswith("exten => _X.,1,"), "the shipped inbound context changed"
    first = lines[0].replace("exten => _X.,1,", " same => n,", 1)
    rewrite = f"exten => {REWRITING_DID},1,Set(CALLERID(num)=8${{CALLERID(num):1}})"
    return "\n[callrouter-inbound]\n" + "\n".join([rewrite, first, *lines[1:]]) + "\n"


def dialplan() -> str:
    shipped = example_dialplan()
    return shipped + rewriting_inbound(shipped) + TEST_CONTEXTS


def make_config(box: Sandbox, double: OneCDouble, state: Path) -> Config:
    state.mkdir(parents=True, exist_ok=True)
    path = state.parent / f"{state.name}.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret = "{box.secret}"\n'
        f'[router]\nrules = ["{RULES}"]\nstate_dir = "{state}"\n'
        f'[plugins.onec]\nurl = "{double.url}"\nusername = "{DEFAULT_USER}"\n'
        f'password = "{ONEC_PASSWORD}"\n'
        # short budgets and TTLs so every path shows within seconds
        "connect_timeout = 0.3\ntimeout = 1.0\npositive_ttl = 1\nnegative_ttl = 1\n"
        "failure_threshold = 3\nopen_seconds = 2\nevents_retry_min = 0.1\n"
        'events_retry_max = 0.5\nping_interval = 1\ntimezone = "Europe/Moscow"\n',
        encoding="utf-8",
    )
    return load_config(path)


@pytest.fixture(scope="module")
def onec_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.set_dialplan(dialplan())
    return sandbox


@pytest.fixture(autouse=True)
def healthy_double(double: OneCDouble) -> None:
    """Each test starts with 1C up and without faults."""
    double.faults.clear()
    double.down = False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    onec_sandbox: Sandbox, double: OneCDouble, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SharedEngine]:
    config = make_config(onec_sandbox, double, tmp_path_factory.mktemp("onec") / "state")
    router = SharedEngine(
        lambda: Engine(config, plugins=Plugins.load(), options=EngineOptions(watch_interval=0))
    )
    try:
        yield router
    finally:
        await router.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def engine(shared: SharedEngine) -> Engine:
    """The module's router, serving (started again after a test that stopped it)."""
    return await shared.serving()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placer(onec_sandbox: Sandbox) -> AsyncIterator[CallPlacer]:
    async with admin_placer(
        onec_sandbox, inbound_context="test-formatted", ignore_contexts=("callrouter-inbound",)
    ) as p:
        yield p


async def call_from(
    placer: CallPlacer, written: str, *, wait: float | None = None, timeout: float = 10
) -> PlacedCall:
    """One call whose caller ID is ``written`` exactly; returns once it landed."""
    call = await placer.place(DID, "", caller_name=written, wait=wait)
    await placer.wait_all([call], timeout=timeout)
    return call


def record_of(engine: Engine, call: PlacedCall) -> dict[str, object]:
    return next(r.to_dict() for r in engine.records if r.channel == call.channel)


def onec(engine: Engine) -> onec_plugin.OneCPlugin:
    """The engine's own 1C plugin instance (one per engine: make_plugin)."""
    plugin = engine.plugins.pm.get_plugin("onec")
    assert isinstance(plugin, onec_plugin.OneCPlugin), "the onec plugin is not loaded"
    return plugin


def cache(engine: Engine) -> ResponsibleCache:
    found = onec(engine).cache
    assert found is not None, "the onec plugin did not start"
    return found


async def test_thirty_callers_written_every_way_reach_their_manager(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    assert engine.registry.lookups["onec.responsible"].func is not None
    placed: list[tuple[str, PlacedCall, str]] = []
    for i in range(30):
        written, expected = NUMBERS[i % len(NUMBERS)]
        placed.append((written, await call_from(placer, written), expected))
    wrong = [(w, c.destination, want) for w, c, want in placed if c.destination != want]
    assert not wrong, f"misrouted (caller as written, got, expected): {wrong}"
    await engine.wait_idle()
    # The engine saw each number as written, the rules and 1C only normalized digits.
    as_written = {call.caller_number for call in engine.tracker}
    assert {written for written, _ in NUMBERS} <= as_written, as_written
    assert {record_of(engine, c)["caller"] for _, c, _ in placed[:4]} == {"79161234567"}
    asked = {r.path.rsplit("/", 1)[-1] for r in double.requests("/v1/responsible")}
    assert asked <= {
        "79161234567",
        "79167654321",
        "74957770101",
        "79857654321",
        "74959990000",
        "493012345678",
        "79261112233",
        "79031234567",
        "79990000001",
    }, asked
    assert all(record_of(engine, c)["outcome"] == "executed" for _, c, _ in placed)


async def test_a_number_rewritten_inside_the_inbound_context_asks_1c_once(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    """Issue 16: the prefetch starts as the call steps into callrouter-inbound,
    before a ``Set(CALLERID(num)=8${CALLERID(num):1})`` there runs, so it asks
    about the trunk's ``74957770101`` and the routing request about
    ``84957770101``. The plugin looks numbers up normalized: both are
    ``74957770101``, one request to 1C, which the routing reuses
    (docs/asterisk.md, the inbound context)."""
    cache(engine).invalidate()
    before = len(double.requests("/v1/responsible"))
    call = await placer.place(REWRITING_DID, "", caller_name="74957770101")
    await placer.wait_all([call], timeout=10)
    assert call.destination == "callrouter-dial,102"
    await engine.wait_idle()
    record = record_of(engine, call)
    assert record["caller"] == "74957770101"
    tracked = engine.tracker.get(str(record["call"]))
    assert tracked is not None
    assert tracked.caller_number == "84957770101"  # the request's, as the dialplan set it
    asked = [r.path.rsplit("/", 1)[-1] for r in double.requests("/v1/responsible")][before:]
    assert asked == ["74957770101"]


async def test_internal_caller_never_asks_1c(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    before = len(double.requests("/v1/responsible"))
    call = await call_from(placer, "201")
    assert call.destination == FALLBACK
    assert len(double.requests("/v1/responsible")) == before


async def test_cyrillic_names_reach_the_channel(engine: Engine, placer: CallPlacer) -> None:
    call = await call_from(placer, "+7 916 123-45-67")
    assert call.destination == "callrouter-dial,101"
    values = {}
    for name in ("CRM_MANAGER", "CRM_CLIENT"):
        result = await placer.client.send(
            "Getvar", {"Channel": call.channel, "Variable": name}, validate=False
        )
        values[name] = result.response.get("Value")
    assert values == {"CRM_MANAGER": "Петров Пётр", "CRM_CLIENT": "ООО «Ромашка»"}


async def test_slow_1c_falls_back_within_the_plugin_budget(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    cache(engine).invalidate()
    double.faults.add("latency=3", phone="79857654321", count=None)
    started = time.monotonic()
    call = await call_from(placer, "8 (985) 765-43-21")
    assert call.destination == FALLBACK
    assert time.monotonic() - started < 2.5  # timeout = 1.0 s; the bound is generous
    await engine.wait_idle()
    record = record_of(engine, call)
    assert record["rule"] == "fallback"
    assert record["outcome"] == "executed"
    [lookup] = record["lookups"]  # type: ignore[misc]
    assert lookup["error"]


async def test_1c_slower_than_the_call_deadline_takes_the_dialplan_default(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    """Wait=1 s: the call's deadline (0.7 s) comes before 1C's answer (0.85 s), which
    comes before the client's own timeout (1 s)."""
    cache(engine).invalidate()
    double.faults.add("latency=0.85", phone="79161234567", count=1)
    started = time.monotonic()
    call = await call_from(placer, "8 916 123 45 67", wait=1)
    assert call.destination == f"callrouter-default,{DID}"
    assert time.monotonic() - started < 3.0
    await engine.wait_idle()
    assert record_of(engine, call)["outcome"] == "late"
    # The shared request was not cancelled with the call: its late answer is cached.
    assert cache(engine).peek("79161234567") is not None


async def test_1c_down_breaker_opens_and_stale_answers_are_served(
    engine: Engine, placer: CallPlacer, double: OneCDouble
) -> None:
    cache(engine).invalidate()
    known = await call_from(placer, "+7 (495) 777-01-01")
    assert known.destination == "callrouter-dial,102"
    await asyncio.sleep(1.1)  # past positive_ttl: the entry is stale now
    double.down = True
    unknown = ["+7 985 765-43-21", "8-926-111-22-33", "+7 903 123 45 67"]
    started = time.monotonic()
    for written in unknown:
        call = await call_from(placer, written)
        assert call.destination == FALLBACK, written
    assert time.monotonic() - started < 6.0
    assert cache(engine).breaker.state is BreakerState.OPEN
    asked = len(double.requests("/v1/responsible"))
    call = await call_from(placer, "+49 30 12345678")
    assert call.destination == FALLBACK
    stale = await call_from(placer, "8 495 777-01-01")
    assert stale.destination == "callrouter-dial,102"  # last known manager, 1C still down
    assert len(double.requests("/v1/responsible")) == asked  # breaker open: 1C not asked
    double.down = False
    await asyncio.sleep(2.1)  # open_seconds
    back = await call_from(placer, "+7 985 765 43 21")
    assert back.destination == "callrouter-dial,104"
    assert cache(engine).breaker.state is BreakerState.CLOSED


@pytest.mark.slow
async def test_call_history_survives_1c_down_and_a_restart(
    engine: Engine,
    shared: SharedEngine,
    placer: CallPlacer,
    double: OneCDouble,
    onec_sandbox: Sandbox,
    tmp_path: Path,
) -> None:
    # Quiet start: earlier calls hung up and their history delivered, then a clean book.
    await placer.hangup_all()
    sender = onec(engine).sender
    assert sender is not None
    for _ in range(50):
        if not list(engine.tracker):
            break
        await asyncio.sleep(0.1)
    # And their ends in CEL (LINKEDID_END comes after the Hangup that emptied the
    # tracker, late by as much as Asterisk's CEL backends are behind). The next
    # router starts with no history and does not tell calls that began before
    # it (docs/history.md), but one that began in its first second would count
    # as this test's. Bounded: a call whose end never comes does not matter.
    for _ in range(100):
        if not len(engine.calllife.folder):
            break
        await asyncio.sleep(0.1)
    assert await sender.drain(10)
    await shared.stop()  # one router at a time on this Asterisk
    double.reset()

    config = make_config(onec_sandbox, double, tmp_path / "state")
    double.down = True
    linkedids: list[str] = []
    for batch in range(2):  # restart between the batches, 1C down throughout
        eng, task = await start_engine(config)
        try:
            calls = [await call_from(placer, written) for written, _ in NUMBERS[:10]]
            assert all(c.destination == FALLBACK for c in calls)
            await placer.hangup_all()
            for _ in range(50):
                if not list(eng.tracker):
                    break
                await asyncio.sleep(0.1)
            await eng.wait_idle()
            linkedids += [str(record_of(eng, c)["call"]) for c in calls]
            queue, sender = onec(eng).queue, onec(eng).sender
            assert queue is not None
            assert sender is not None
            # Issue 14: the call's life, not the decision: no phone rang on the
            # fallback route, so each call is one missed call, nothing more. The
            # missed comes with CEL's LINKEDID_END, after the Hangup that emptied
            # the tracker (on a loaded machine, polls later): wait for it, bounded.
            expected = 10 * (batch + 1)
            deadline = time.monotonic() + 20
            while True:
                await sender.flush()  # events reach SQLite on the sender's own thread
                if queue.pending_count() >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # and nothing more comes
            await sender.flush()
            pending = [(q.call_id, q.event) for q in queue.pending(limit=100)]
            told = [(str(record_of(eng, c)["call"]), c.destination) for c in calls]
            assert queue.pending_count() == expected, f"pending {pending}; calls {told}"
        finally:
            await stop_engine(eng, task)
    assert double.event_book.receipts == []

    double.down = False
    eng, task = await start_engine(config)
    try:
        sender = onec(eng).sender
        assert sender is not None
        assert await sender.drain(15)
    finally:
        await stop_engine(eng, task)
    receipts = double.event_book.receipts
    arrived = Counter((r.payload["call_id"], r.payload["event"]) for r in receipts)
    expected = {(linkedid, "missed") for linkedid in linkedids}
    assert len(set(linkedids)) == 20
    assert set(arrived) == expected, sorted(arrived)
    assert all(count == 1 for count in arrived.values()), arrived
    assert not any(r.duplicate for r in receipts)
    by_call = {r.payload["call_id"]: r.payload for r in receipts if r.payload["event"] == "missed"}
    assert {p["from"] for p in by_call.values()} >= {"79161234567", "74957770101"}
    assert all(p["status"] in ("CANCEL", "NOANSWER") for p in by_call.values())
