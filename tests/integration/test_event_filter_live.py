"""Asterisk-side event filtering on the sandbox (router/ami/event_filter.py).

* The classes the selection asks for are the ones Asterisk 22 sends the events
  under (the ``Privilege`` header), including the table of events the catalog
  has no class for.
* A ``Filter`` by name (a user with ``write = system``) really stops other
  events of a class the session reads.
* Header filters (a narrowed event's Priority or EventName) are applied by
  Asterisk 22 as Filter actions and as manager.conf lines, and the engine
  routes and confirms its Redirects on a user with the lines it prints.
* The engine with ``events = "auto"`` and the least-privileged ``router``
  user: Asterisk stops sending a class nobody needs (``agent``: queue member
  events), calls are still routed, and a rule reload that needs such an event
  gets it on the same session; over AJAM and over native TCP AMI.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from router.ami.client import AJAMClient, ClientSettings
from router.ami.event_filter import (
    API_EVENTS,
    CORE_EVENTS,
    EventSelection,
    HeaderFilter,
    class_of,
    select_events,
)
from router.ami.message import Event
from router.ami.stream import StreamGap
from router.calllife.service import LIVE_EVENTS
from router.calls import Call
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration.conftest import AMI_TRANSPORTS, ami_url
from tests.integration.test_engine import FIXTURES, SlowCRM, routing_dialplan
from tests.unit.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

QUEUE_EVENT = "QueueMemberAdded"  # class agent: the router user reads it, nobody needs it
MEMBER = "Local/990@sink"


@pytest.fixture(scope="module")
def routing_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.set_dialplan(routing_dialplan())
    return sandbox


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(routing_sandbox: Sandbox) -> AsyncIterator[AJAMClient]:
    settings = ClientSettings(
        url=routing_sandbox.url, username="admin", secret=routing_sandbox.secret
    )
    async with AJAMClient(settings) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placer(admin: AJAMClient) -> AsyncIterator[CallPlacer]:
    async with CallPlacer(admin) as p:
        yield p


async def drain(client: AJAMClient, seconds: float) -> list[Event]:
    """Every event the session gets for about ``seconds``."""
    got: list[Event] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.extend(await client.wait_event(timeout=1))
    return got


async def queue_member_event(admin: AJAMClient) -> None:
    """Make Asterisk send one agent-class event (and take it back)."""
    await admin.send("QueueAdd", {"Queue": "sales", "Interface": MEMBER}, validate=False)
    await admin.send("QueueRemove", {"Queue": "sales", "Interface": MEMBER}, validate=False)


async def test_the_classes_asked_for_are_the_ones_asterisk_sends_them_under(
    routing_sandbox: Sandbox, placer: CallPlacer
) -> None:
    settings = ClientSettings(
        url=routing_sandbox.url, username="admin", secret=routing_sandbox.secret
    )
    async with AJAMClient(settings) as watcher:
        await drain(watcher, 0.5)
        call = await placer.place("74950000001", "79161234567")
        await placer.wait_all([call], timeout=15)
        events = await drain(watcher, 3)
    from router.ami.catalog import load_catalog

    catalog = {name: spec.classes for name, spec in load_catalog().events.items()}
    needed = CORE_EVENTS | API_EVENTS | LIVE_EVENTS | {"VarSet"}
    seen: dict[str, str] = {}
    for event in events:
        privilege = (event.get("Privilege") or "").split(",")[0]
        if event.name in needed and privilege:
            seen[event.name] = privilege
    assert {"Newchannel", "Newexten", "VarSet", "UserEvent", "CEL"} <= set(seen)
    for name, privilege in seen.items():
        classes = class_of(name, catalog)
        assert classes is not None, name
        assert privilege in classes, f"{name} is sent under {privilege}, we ask for {classes}"


async def test_a_name_filter_stops_other_events_of_a_class_the_session_reads(
    routing_sandbox: Sandbox, admin: AJAMClient
) -> None:
    settings = ClientSettings(
        url=routing_sandbox.url, username="admin", secret=routing_sandbox.secret
    )
    only = EventSelection(
        frozenset({"UserEvent", "QueueMemberRemoved"}), frozenset({"agent", "user"})
    )
    async with AJAMClient(settings) as filtered:
        await filtered.set_events(only)
        await drain(filtered, 0.5)
        await queue_member_event(admin)
        await admin.send("UserEvent", {"UserEvent": "xfilter-probe"}, validate=False)
        names = [e.name for e in await drain(filtered, 2)]
    assert "QueueMemberRemoved" in names
    assert "UserEvent" in names
    assert QUEUE_EVENT not in names  # same class (agent), not asked for by name


def router_toml(tmp_path: Path, url: str, username: str, secret: str) -> Path:
    """router.toml for an engine of the test fixtures' rules (copied: a test may add one)."""
    rules = tmp_path / "rules"
    shutil.copytree(FIXTURES / "rules", rules)
    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "{username}"\nsecret = "{secret}"\n'
        'events = "auto"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[plugins.directory]\nfile = "{FIXTURES / "directory.csv"}"\n',
        encoding="utf-8",
    )
    return path


class Seen:
    """Every event the engine receives, by name (an ``EngineAPI.watch`` listener).

    A watcher, not a ``callrouter_event`` plugin: plugins are told only the events
    they name, and one that named none would see nothing, while one without
    ``callrouter_wanted_events`` would widen the selection this test checks.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.queue_event = asyncio.Event()

    def __call__(self, item: Event | StreamGap, call: Call | None) -> None:
        if isinstance(item, Event):
            self.names.append(item.name)
            if item.name == QUEUE_EVENT:
                self.queue_event.set()


@pytest.fixture(scope="module", params=AMI_TRANSPORTS)
def ami_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_auto_stops_an_unneeded_class_routes_and_follows_a_reload(
    routing_sandbox: Sandbox,
    admin: AJAMClient,
    placer: CallPlacer,
    tmp_path: Path,
    ami_transport: str,
) -> None:
    config_path = router_toml(
        tmp_path, ami_url(routing_sandbox, ami_transport), "router", routing_sandbox.secret
    )
    rules = tmp_path / "rules"
    seen = Seen()
    engine = Engine(
        load_config(config_path),
        plugins=Plugins.load(extra=[SlowCRM()]),
        options=EngineOptions(watch_interval=0),
    )
    engine.watch(seen)
    await engine.start()
    task = asyncio.ensure_future(engine.serve())
    try:
        await asyncio.wait_for(engine.ready.wait(), 10)
        selection = engine.ami.event_selection
        assert selection.classes is not None
        assert "agent" not in selection.classes

        # Nobody needs the agent class: Asterisk does not send it to this session,
        # though the user may read it (a session asking for everything gets it).
        settings = ClientSettings(
            url=routing_sandbox.url, username="router", secret=routing_sandbox.secret
        )
        async with AJAMClient(settings) as everything:
            await drain(everything, 0.3)
            await queue_member_event(admin)
            control = [e.name for e in await drain(everything, 2)]
        assert QUEUE_EVENT in control
        assert QUEUE_EVENT not in seen.names

        # Routing works on the filtered session.
        call = await placer.place("74950000001", "79161234567")
        await placer.wait_all([call], timeout=15)
        assert call.destination == "callrouter-dial,101"

        # A rule that reacts to the event: the reload asks for its class in place.
        (rules / "queue.yaml").write_text(
            "version: 1\nrules:\n  - name: member-added\n"
            f"    on: event {QUEUE_EVENT}\n"
            "    do: [{ami: {action: UserEvent, userevent: xfilter-member}}]\n",
            encoding="utf-8",
        )
        generation = getattr(engine.ami, "session_generation", 0)
        assert await engine.reload_in_thread() is not None
        await engine.wait_idle()
        assert engine.ami.event_selection.classes is not None
        assert "agent" in engine.ami.event_selection.classes
        # The re-filter runs as a task of the reload: its Events and Filter answered.
        await eventually(lambda: not engine.router.tasks, "the re-filter done", 10)
        await queue_member_event(admin)
        await asyncio.wait_for(seen.queue_event.wait(), 10)
        assert QUEUE_EVENT in seen.names
        assert getattr(engine.ami, "session_generation", 0) == generation  # same session
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, 30)
        await engine.stop()


def _steps_and_records(events: list[Event]) -> tuple[set[str], set[str]]:
    priorities = {e.get("Priority") or "" for e in events if e.name == "Newexten"}
    records = {e.get("EventName") or "" for e in events if e.name == "CEL"}
    return priorities, records


async def test_header_filters_drop_the_other_steps_at_asterisk(
    routing_sandbox: Sandbox, placer: CallPlacer, manager_user: Callable[..., None]
) -> None:
    """The narrowed events' filters name a header (Priority, EventName), and
    Asterisk 22 applies them: as Filter actions (a user with write = system)
    and as the manager.conf lines callrouter prints for a user without."""
    from router.calllife.fold import FOLDED

    narrowed = frozenset(
        {
            HeaderFilter("Newexten", "Priority", frozenset({"1"})),
            HeaderFilter("CEL", "EventName", FOLDED),
        }
    )
    chosen = select_events(core={"Newexten", "CEL", "UserEvent"})
    selection = EventSelection(chosen.names, chosen.classes, narrowed)
    manager_user(routing_sandbox, "router-steps", lines=selection.manager_conf_lines())
    sessions = [
        ClientSettings(url=routing_sandbox.url, username="admin", secret=routing_sandbox.secret),
        ClientSettings(
            url=routing_sandbox.url, username="router-steps", secret=routing_sandbox.secret
        ),
        ClientSettings(url=routing_sandbox.url, username="router", secret=routing_sandbox.secret),
    ]
    async with (
        AJAMClient(sessions[0]) as by_action,
        AJAMClient(sessions[1]) as by_conf,
        AJAMClient(sessions[2]) as control,
    ):
        await by_action.set_events(selection)
        for client in (by_action, by_conf, control):
            await drain(client, 0.3)
        call = await placer.place("74950000001", "79161234567")
        await placer.wait_all([call], timeout=15)
        got = await asyncio.gather(*(drain(c, 3) for c in (by_action, by_conf, control)))
    everything = _steps_and_records(got[2])
    assert len(everything[0]) > 1  # the call took several steps: there was something to drop
    for events in got[:2]:
        priorities, records = _steps_and_records(events)
        assert priorities == {"1"}
        assert records
        assert records <= FOLDED
        assert everything[1] - FOLDED  # CHAN_END & co. exist; these sessions did not get them


async def route_a_call_on_its_own_lines(
    box: Sandbox,
    placer: CallPlacer,
    tmp_path: Path,
    transport: str,
    user: str,
    manager_user: Callable[..., None],
) -> EventSelection:
    """An engine logged in as ``user``, whose manager.conf lines are the ones the
    engine's selection gives (what `callrouter run` logs for the administrator,
    from an engine not started), routes one call: routed, the Redirect
    confirmed by its landing, and sent once its channel was seen in its wait
    (never past the 250 ms given a step that does not come). The selection."""
    config_path = router_toml(tmp_path, ami_url(box, transport), user, box.secret)
    probe = Engine(load_config(config_path), plugins=Plugins.load(extra=[SlowCRM()]))
    await probe.setup()
    selection = await probe.event_selection()
    manager_user(box, user, lines=selection.manager_conf_lines())
    engine = Engine(
        load_config(config_path),
        plugins=Plugins.load(extra=[SlowCRM()]),
        options=EngineOptions(watch_interval=0),
    )
    await engine.start()
    task = asyncio.ensure_future(engine.serve())
    try:
        await asyncio.wait_for(engine.ready.wait(), 10)
        call = await placer.place("74950000001", "79161234567")
        await placer.wait_all([call], timeout=15)
        assert call.destination == "callrouter-dial,101"
        await engine.wait_idle()
        record = engine.records[-1]
        assert [(a.kind, a.status) for a in record.actions][-1] == ("redirect", "confirmed")
        waits = engine.metrics.park_waits
        assert waits.labels("at-once")._value.get() + waits.labels("waited")._value.get() == 1
        assert waits.labels("missed")._value.get() == 0
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, 30)
        await engine.stop()
    return selection


async def test_the_engine_routes_on_a_user_with_its_own_eventfilter_lines(
    routing_sandbox: Sandbox,
    placer: CallPlacer,
    manager_user: Callable[..., None],
    tmp_path: Path,
    ami_transport: str,
) -> None:
    """The lines the engine's selection gives, pasted into manager.conf: calls
    are routed and each Redirect confirmed by its landing, which the header
    filter lets through (the rules' redirect priority); the lines let the
    call's Wait step through, and the Redirect waited for it."""
    selection = await route_a_call_on_its_own_lines(
        routing_sandbox, placer, tmp_path, ami_transport, "router-lines", manager_user
    )
    # No plugin is told the call life here (the 1C plugin, installed, has no
    # [plugins.onec]: callrouter_wants_call_events says no), so no CEL lines;
    # a user with a listener's lines: test_call_life.py.
    assert {f.event for f in selection.narrowed} == {"Newexten", "Newstate"}
    assert selection.names is not None
    assert "CEL" not in selection.names


async def test_a_call_waiting_in_waitexten_is_routed_once_seen_there(
    routing_sandbox: Sandbox,
    placer: CallPlacer,
    manager_user: Callable[..., None],
    tmp_path: Path,
    ami_transport: str,
) -> None:
    """A dialplan that waits in ``WaitExten`` instead of ``Wait`` after the
    request (docs/asterisk.md: ``MusicOnHold`` and ``WaitExten`` are waits
    too): the engine's own lines let that step through, and the Redirect waits
    for it as for ``Wait``, not past the 250 ms it gives a step that never comes."""
    shipped = routing_dialplan()
    wait = " same => n,Wait(${CALLROUTER_WAIT})"
    assert shipped.count(wait) == 1
    routing_sandbox.set_dialplan(shipped.replace(wait, wait.replace("Wait(", "WaitExten(")))
    try:
        await route_a_call_on_its_own_lines(
            routing_sandbox, placer, tmp_path, ami_transport, "router-parks", manager_user
        )
    finally:
        routing_sandbox.set_dialplan(shipped)


async def test_a_user_without_read_user_is_not_ready_and_says_why(
    routing_sandbox: Sandbox,
    manager_user: Callable[..., None],
    tmp_path: Path,
    ami_transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A manager user without ``read = user`` logs in, polls and loads its rules,
    yet Asterisk never sends it a routing request. Its own heartbeat does not
    come back either: readiness fails on ``user_events`` with a reason naming
    what to check, and the log says it once; the ``router`` user next to it
    hears its own and stays ready."""
    from router.health import USER_EVENTS_MISSING

    manager_user(routing_sandbox, "router-nouser", read="call,dialplan,agent,system")
    options = EngineOptions(watch_interval=0, live_heartbeat=0.3, live_settle=0.1)
    engines = []
    for user in ("router-nouser", "router"):
        url = ami_url(routing_sandbox, ami_transport)
        path = router_toml(tmp_path / user, url, user, routing_sandbox.secret)
        engines.append(
            Engine(load_config(path), plugins=Plugins.load(extra=[SlowCRM()]), options=options)
        )
    deaf, hearing = engines
    tasks = []
    try:
        for engine in engines:
            await engine.start()
            tasks.append(asyncio.ensure_future(engine.serve()))
            await asyncio.wait_for(engine.ready.wait(), 10)
        await eventually(lambda: not deaf.health().ready, "the deaf router not ready")
        health = deaf.health()
        assert health.checks["user_events"] is False
        (reason,) = health.reasons
        assert reason.startswith(USER_EVENTS_MISSING.split("{", 1)[0])

        def errors() -> int:
            said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
            return sum(m.startswith("Asterisk sends this router no UserEvent") for m in said)

        await eventually(errors, "the error logged")
        await asyncio.sleep(1.0)  # more heartbeat ticks: said once
        assert errors() == 1
        ok = hearing.health()
        assert ok.ready, ok.reasons
        assert ok.checks["user_events"] is True
    finally:
        for engine in engines:
            engine.request_stop()
        for task in tasks:
            await asyncio.wait_for(task, 30)
        for engine in engines:
            await engine.stop()


async def test_a_forged_older_live_claim_sent_through_ami_stops_no_routing(
    routing_sandbox: Sandbox,
    admin: AJAMClient,
    placer: CallPlacer,
    tmp_path: Path,
    ami_transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another manager user sends ``UserEvent(CallRouterLive)`` claiming to have
    been live since 1970, as an API token with ``ami:UserEvent`` could: before
    heartbeats were signed, the live router stood by and every call took its
    default route. Asterisk passes the forged headers through as they came;
    without the key they are ignored, and the call is routed."""
    options = EngineOptions(watch_interval=0, live_heartbeat=0.3, live_settle=0.1)
    url = ami_url(routing_sandbox, ami_transport)
    path = router_toml(tmp_path, url, "router", routing_sandbox.secret)
    engine = Engine(load_config(path), plugins=Plugins.load(extra=[SlowCRM()]), options=options)
    forged = {
        "UserEvent": "CallRouterLive",
        "Instance": "00000000",
        "Since": "1",
        "Host": "forger",
        "Pid": "1",
        "Interval": "30",
        "State": "live",
        "Probe": "yes",
        "Beat": "1",
        "Sign": "0" * 32,
    }
    task = None
    try:
        await engine.start()
        task = asyncio.ensure_future(engine.serve())
        await asyncio.wait_for(engine.ready.wait(), 10)
        for beat in range(1, 4):
            await admin.send("UserEvent", {**forged, "Beat": str(beat)}, validate=False)
            await asyncio.sleep(0.2)

        await asyncio.sleep(0.5)  # the beats are in: a router believing them stands by
        call = await placer.place("74950000001", "79161234567")
        await placer.wait_all([call], timeout=15)
        assert call.destination == "callrouter-dial,101"
        # The record is written once the engine read the landing on its own
        # session; the placer's session can see it first (a loaded machine).
        await engine.wait_idle()
        assert engine.records[-1].outcome == "executed"
        assert any("not signed with this router's key" in r.getMessage() for r in caplog.records)
    finally:
        engine.request_stop()
        if task is not None:
            await asyncio.wait_for(task, 30)
        await engine.stop()


async def test_userevent_disabled_for_the_whole_pbx_is_named_as_a_cause(
    routing_sandbox: Sandbox,
    tmp_path: Path,
    ami_transport: str,
) -> None:
    """``[general] disabledevents = UserEvent`` (Asterisk raises it for nobody):
    the router's own heartbeat does not come back, so it is not ready, and the
    reason names disabledevents; with the line gone, its next beat arrives."""
    from router.health import USER_EVENTS_MISSING

    options = EngineOptions(watch_interval=0, live_heartbeat=0.3, live_settle=0.1)
    url = ami_url(routing_sandbox, ami_transport)
    path = router_toml(tmp_path, url, "router", routing_sandbox.secret)
    engine = Engine(load_config(path), plugins=Plugins.load(extra=[SlowCRM()]), options=options)
    routing_sandbox.disable_events(["UserEvent"])
    task = None
    try:
        await engine.start()
        task = asyncio.ensure_future(engine.serve())
        await asyncio.wait_for(engine.ready.wait(), 10)
        await eventually(lambda: not engine.health().ready, "not ready")
        (reason,) = engine.health().reasons
        assert reason.startswith(USER_EVENTS_MISSING.split("{", 1)[0])
        assert "disabledevents" in reason
        routing_sandbox.disable_events([])
        await eventually(lambda: engine.health().ready, "ready once UserEvent is raised again")
    finally:
        routing_sandbox.disable_events([])
        engine.request_stop()
        if task is not None:
            await asyncio.wait_for(task, 30)
        await engine.stop()


async def check_asterisk_cli(config: Path) -> tuple[int, list[str]]:
    """``callrouter check --config FILE --asterisk`` as a subprocess: exit code and
    the ``asterisk:`` lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "check",
        "--config",
        str(config),
        "--asterisk",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [line for line in out.decode().splitlines() if line.startswith("asterisk:")]
    assert lines, (out, err)
    return proc.returncode or 0, lines


async def test_check_asterisk_passes_on_the_shipped_dialplan_and_names_a_broken_one(
    routing_sandbox: Sandbox, tmp_path: Path, ami_transport: str
) -> None:
    """docs/asterisk.md "Checking the setup": the shipped snippet and a rule's
    target on a real Asterisk pass every check over either transport; a step
    pasted between the request and Wait and a misspelt target context fail,
    each named, with exit code 1."""
    url = ami_url(routing_sandbox, ami_transport)
    (tmp_path / "rules").mkdir()
    rule = """version: 1
rules:
  - name: sales
    on: call
    do:
      - redirect: {context: test-queue, exten: sales}
"""
    (tmp_path / "rules" / "routes.yaml").write_text(rule, encoding="utf-8")
    config = tmp_path / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "router"\n'
        f'secret = "{routing_sandbox.secret}"\n[router]\nrules = ["{tmp_path / "rules"}"]\n',
        encoding="utf-8",
    )
    code, lines = await check_asterisk_cli(config)
    assert code == 0, lines
    assert lines[0].startswith(f"asterisk: OK     logged in to {url} as 'router' (Asterisk 22.")
    assert "asterisk: OK     Redirect allowed (write = call)" in lines
    assert any("the request, then Wait, then the default route" in line for line in lines)
    assert any(line.startswith("asterisk: OK     UserEvents reach this user") for line in lines)
    assert "asterisk: OK     the rules redirect to 1 place Asterisk's dialplan has" in lines
    assert not any("FAIL" in line for line in lines)
    (tmp_path / "rules" / "routes.yaml").write_text(
        rule.replace("test-queue", "test-queeu"), encoding="utf-8"
    )
    shipped = routing_dialplan()
    wait = " same => n,Wait(${CALLROUTER_WAIT})"
    routing_sandbox.set_dialplan(shipped.replace(wait, " same => n,Playback(beep)\n" + wait))
    try:
        code, lines = await check_asterisk_cli(config)
    finally:
        routing_sandbox.set_dialplan(shipped)
    assert code == 1
    fails = [line for line in lines if "FAIL" in line]
    assert len(fails) == 2, lines
    assert "the step after the request is 'Playback', not a wait" in fails[0]
    assert fails[1].endswith(
        "rules/routes.yaml:6: rule 'sales' redirects to context 'test-queeu', which "
        "Asterisk's dialplan does not have: Asterisk accepts the Redirect and hangs the call "
        "up; correct the context in the rule, or add the context 'test-queeu' to "
        "extensions.conf and run asterisk -rx 'dialplan reload'"
    )


async def test_check_asterisk_with_the_api_advises_a_dial_context_older_than_internal_forwards(
    routing_sandbox: Sandbox, tmp_path: Path
) -> None:
    """Issue 16: the shipped [callrouter-dial] now dials an internal forward
    through itself (CALLROUTER_FWDINT_101, set by the API); an admin's copy
    pasted before that dials it through the trunk. With [api] in router.toml,
    the check reads Asterisk's [callrouter-dial] and says which it has."""
    (tmp_path / "rules").mkdir()
    config = tmp_path / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "{routing_sandbox.url}"\nusername = "router"\n'
        f'secret = "{routing_sandbox.secret}"\n[router]\nrules = ["{tmp_path / "rules"}"]\n'
        '[api]\nlisten = "127.0.0.1:18089"\n',
        encoding="utf-8",
    )
    code, lines = await check_asterisk_cli(config)
    assert code == 0, lines
    assert "asterisk: OK     [callrouter-dial] dials an internal forward through itself" in lines
    shipped = routing_dialplan()
    old: list[str] = []
    rows = iter(shipped.splitlines())
    for row in rows:
        if "CALLROUTER_FWDINT_" in row and not row.lstrip().startswith(";"):
            continue
        if "n(internal)" in row:
            next(rows)  # the branch's Goto(default)
            continue
        old.append(row)
    assert len(old) == len(shipped.splitlines()) - 3
    routing_sandbox.set_dialplan("\n".join(old) + "\n")
    try:
        code, lines = await check_asterisk_cli(config)
    finally:
        routing_sandbox.set_dialplan(shipped)
    assert code == 0, lines  # advice: the check passes
    (advice,) = [line for line in lines if "callrouter-dial" in line]
    assert advice.startswith(
        "asterisk: ADVICE [callrouter-dial] has no CALLROUTER_FWDINT_${...} branch"
    ), lines
    assert "dials 102 through the outbound context, the trunk" in advice
