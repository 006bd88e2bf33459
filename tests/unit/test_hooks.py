"""One test per hook in router.hookspecs, named ``test_hook_<hookname>``.

Each drives its hook the way the engine does: through the :class:`Plugins`
facade and, where the hook belongs to the data path, through a running
:class:`Engine` on the replaying fake Asterisk (``router.testing``).
``test_every_hook_has_a_test`` keeps this file complete when a hook is added.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from router import ConfigError, EngineAPI, hookspecs
from router.ami.message import Event
from router.ami.stream import StreamGap
from router.calllife.model import CallEvent
from router.calls import Call
from router.config import AsteriskSettings, Config, PluginSettings
from router.hookspecs import RouteOutcome, hookimpl
from router.plugins import Plugins
from router.rules.decision import Action, Decision, Trace
from router.rules.registry import ActionSpec, ParamSpec, Registry
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router.engine import Engine
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """
version: 1
rules:
  - name: tagged
    on: call
    if: did == "74950000001" and shout(caller.number) == "OK"
    do:
      - record_tag: {label: "{caller.number}"}
      - notify: {plugin: recorder, event: routed}
      - redirect: {context: sales, exten: "100"}
"""
ROUTED_DID = "74950000001"
OTHER_DID = "74950000002"


class Recorder:
    """Implements every hook and writes down what it got, in order."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.settings: Mapping[str, Any] | None = None
        self.startup_ami_logged_in: bool | None = None

    def seen(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    def order(self) -> list[str]:
        return [name for name, _ in self.calls]

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        self.calls.append(("configure", {"config": config}))
        self.settings = settings

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        self.calls.append(("register", {"registry": registry}))
        registry.add_function("shout", lambda number: "OK")
        registry.add_action(ActionSpec("record_tag", (ParamSpec("label", required=True),)))
        registry.add_notify_target("recorder", "tests")

    @hookimpl
    async def callrouter_startup(self, engine: EngineAPI) -> None:
        await asyncio.sleep(0)  # async hooks are awaited
        self.startup_ami_logged_in = (await engine.ami.ping()).ok
        engine.schedule("recorder-job", lambda: None, every=3600)
        (engine.state_dir / "recorder.txt").write_text("started", encoding="utf-8")
        self.calls.append(("startup", {"engine": engine}))

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        self.calls.append(("event", {"event": event, "call": call}))

    @hookimpl
    def callrouter_call_start(self, call: Call) -> None:
        self.calls.append(("call_start", {"call": call}))

    @hookimpl
    def callrouter_prefetch(self, call: Call) -> None:
        self.calls.append(("prefetch", {"call": call}))

    @hookimpl
    def callrouter_decision(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        self.calls.append(
            ("decision", {"call": call, "decision": decision, "trace": trace, "outcome": outcome})
        )

    @hookimpl
    async def callrouter_execute(self, action: Action, call: Call, engine: EngineAPI) -> str | None:
        if action.kind != "record_tag":
            return None
        self.calls.append(("execute", {"action": action, "call": call}))
        await engine.ami.setvar(
            channel=call.waiting_channel or "", variable="TAG", value=action.params["label"]
        )
        return "tagged"

    @hookimpl
    async def callrouter_notify(
        self, target: str, params: Mapping[str, str], call: Call | None
    ) -> None:
        if target == "recorder":
            self.calls.append(("notify", {"params": dict(params), "call": call}))

    @hookimpl
    def callrouter_stream_gap(self, gap: StreamGap) -> None:
        self.calls.append(("stream_gap", {"gap": gap}))

    @hookimpl
    def callrouter_channels_listed(self, channels: Sequence[Event]) -> None:
        self.calls.append(("channels_listed", {"channels": list(channels)}))

    @hookimpl
    def callrouter_call_end(self, call: Call) -> None:
        self.calls.append(("call_end", {"call": call}))

    @hookimpl
    def callrouter_call_event(self, event: CallEvent) -> None:
        self.calls.append(("call_event", {"event": event}))

    @hookimpl
    async def callrouter_shutdown(self, engine: EngineAPI) -> None:
        # The AMI client is still logged in: a plugin may send a last action.
        await engine.ami.ping()
        self.calls.append(("shutdown", {"engine": engine}))


def config(settings: Mapping[str, Mapping[str, object]] | None = None) -> Config:
    return Config(
        asterisk=AsteriskSettings(url="http://pbx.test/asterisk", username="router", secret="x"),
        plugins=PluginSettings(settings=settings or {}),
    )


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


async def routed_engine(
    engine_factory: EngineFactory, rules: Path, recorder: Recorder, **kwargs: Any
) -> Engine:
    return await engine_factory(
        rules, plugins=[recorder], settings={"recorder": {"colour": "blue"}}, **kwargs
    )


# --------------------------------------------------------------------------- hooks


async def test_hook_callrouter_configure(engine_factory: EngineFactory, rules: Path) -> None:
    recorder = Recorder()
    await routed_engine(engine_factory, rules, recorder)
    [configure] = recorder.seen("configure")
    assert isinstance(configure["config"], Config)
    assert recorder.settings == {"colour": "blue"}  # its own [plugins.recorder] table
    assert recorder.order()[:3] == ["configure", "register", "startup"]

    class Refuses:
        __name__ = "refuses"

        @hookimpl
        def callrouter_configure(self, settings: Mapping[str, Any]) -> None:
            raise ConfigError("[plugins.refuses] url: required")

    with pytest.raises(ConfigError, match=r"\[plugins.refuses\] url: required"):
        await Plugins.load(defaults=(), entry_points=False, extra=[Refuses()]).configure(config())


async def test_hook_callrouter_register(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    assert "shout" in engine.registry.functions
    assert "record_tag" in engine.registry.actions
    assert [r.name for r in engine.rules.current.rules] == ["tagged"]
    engine.reload()  # every reload registers into a fresh registry
    assert len(recorder.seen("register")) == 2

    class Clashes:
        __name__ = "clashes"

        @hookimpl
        def callrouter_register(self, registry: Registry) -> None:
            registry.add_function("shout", lambda number: "NO")

    plugins = Plugins.load(defaults=(), entry_points=False, extra=[Recorder(), Clashes()])
    problems = plugins.register_into(Registry())
    # One problem, located at the plugin whose registration failed; the engine goes on.
    assert len(problems) == 1
    assert problems[0].startswith(
        ("plugin 'clashes': callrouter_register:", "plugin 'recorder': callrouter_register:")
    )
    assert "'shout' is already registered" in problems[0]


async def test_hook_callrouter_state_folders(
    engine_factory: EngineFactory,
    rules: Path,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asked before the login, with ``shadow``; under callrouter run (the
    lock) each folder answered is locked then, so a second router on it
    refuses with no AMI session opened. A ConfigError refuses the start
    (before the login too); a crash or a junk answer is logged, and the
    engine starts without that plugin's folders locked."""
    from router.engine import EngineOptions

    plain = rules.parent / "plain.yaml"  # no rule needs a plugin's name
    plain.write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n"
        '    do: [{redirect: {context: callrouter-dial, exten: "101"}}]\n',
        encoding="utf-8",
    )
    run = EngineOptions(
        lock_state_dir=True, watch_interval=0, live_heartbeat=0, check_privileges=False
    )
    own = tmp_path / "own"
    own.mkdir()
    key = ("plugins", "keeper", "state_dir")

    class Keeper:
        __name__ = "keeper"

        def __init__(self, answer: object) -> None:
            self.answer = answer
            self.asked: list[tuple[bool, int]] = []

        @hookimpl
        def callrouter_state_folders(self, shadow: bool) -> object:
            self.asked.append((shadow, ajam_replay.count("Login")))
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    first = Keeper([(own, key)])
    await engine_factory(plain, plugins=[first], options=run)
    assert first.asked == [(False, 0)]  # asked before the engine logged in
    logins = ajam_replay.count("Login")
    second = Keeper([(own, key)])
    with pytest.raises(ConfigError) as refused:
        await engine_factory(plain, plugins=[second], options=run)
    assert f"[plugins.keeper] state_dir: {own} is in use by another `callrouter run`" in str(
        refused.value
    )
    assert ajam_replay.count("Login") == logins  # refused before any login

    refuses = Keeper(ConfigError("[plugins.keeper] state_dir: open to every user"))
    with pytest.raises(ConfigError, match="open to every user"):
        await engine_factory(plain, plugins=[refuses])
    assert ajam_replay.count("Login") == logins

    shadow = Keeper(None)
    await engine_factory(plain, plugins=[shadow], shadow=True)
    assert shadow.asked == [(True, logins)]

    caplog.clear()
    broken = [Keeper("own"), Keeper([(str(own), key)]), Keeper(RuntimeError("boom"))]
    for keeper in broken:
        await engine_factory(plain, plugins=[keeper], options=run)
    said = [r.getMessage() for r in caplog.records]
    failed = [line for line in said if "failed in callrouter_state_folders" in line]
    assert len(failed) == 3, failed
    assert "expected (path, key) pairs or None" in failed[0]
    assert "RuntimeError('boom')" in failed[2]


async def test_hook_callrouter_startup(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    [startup] = recorder.seen("startup")
    assert startup["engine"] is engine.api  # the plugin's view of the engine
    assert recorder.startup_ami_logged_in is True
    # Logged in before the hook ran: its Ping is the first action after the Login.
    assert [a.name for a in ajam_replay.actions][:2] == ["Login", "Ping"]
    assert engine.scheduler.get_job("recorder-job") is not None
    assert (engine.state_dir / "recorder.txt").read_text(encoding="utf-8") == "started"


async def test_hook_callrouter_event(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")
    channel = ajam_replay.inbound_call(caller="+79161234567", did=OTHER_DID)
    await ajam_replay.settle(engine)
    events = recorder.seen("event")
    assert [e["event"].name for e in events] == [
        "FullyBooted",
        "Newchannel",
        "Newexten",
        "VarSet",
        "VarSet",
        "UserEvent",
        "Newexten",
    ]
    assert events[0]["call"] is None  # an event of no call
    call = events[1]["call"]
    assert call is not None
    assert channel in call.channels  # already updated with the event
    assert all(e["call"] is call for e in events[1:])


async def test_hook_callrouter_wanted_events(
    engine_factory: EngineFactory, tmp_path: Path, ajam_replay: ReplayAsterisk
) -> None:
    """The plugins' events and the rules' go into the Login's class mask and the
    session's name filters; a reload that needs more adds them to the same session."""

    class Cdrs:
        @hookimpl
        def callrouter_event(self, event: Event, call: Call | None) -> None:
            pass

        @hookimpl
        def callrouter_wanted_events(self) -> tuple[str, ...]:
            return ("Cdr",)

    rules = tmp_path / "rules.yaml"
    on_event = (
        "  - name: joined\n    on: event {}\n"
        "    do: [{{ami: {{action: DBPut, family: f, key: k, val: v}}}}]\n"
    )
    rules.write_text("version: 1\nrules:\n" + on_event.format("QueueCallerJoin"), "utf-8")
    engine = await engine_factory(rules, plugins=[Cdrs()])
    selection = engine.ami.event_selection
    assert selection.names is not None
    assert {"Cdr", "QueueCallerJoin", "UserEvent", "Hangup"} <= selection.names
    assert "VarSet" not in selection.names  # no rule reads call.vars
    [login] = ajam_replay.sent("Login")
    mask = set((login.get("Events") or "").split(","))
    assert {"cdr", "agent", "call", "user"} <= mask
    filtered = {f.get("MatchCriteria") for f in ajam_replay.sent("Filter")}
    assert "action(include),name(Cdr)" in filtered
    assert "action(include),name(QueueCallerJoin)" in filtered

    rules.write_text(
        "version: 1\nrules:\n"
        + on_event.format("QueueCallerJoin")
        + on_event.replace("joined", "vars")
        .format("Hangup")
        .replace("do:", "if: call.vars.X == '1'\n    do:"),
        "utf-8",
    )
    await engine.reload_in_thread()
    await ajam_replay.settle(engine)
    filtered = {f.get("MatchCriteria") for f in ajam_replay.sent("Filter")}
    assert "action(include),name(VarSet)" in filtered  # a rule now reads call.vars
    assert len(ajam_replay.sent("Login")) == 1  # the same session, its queue kept


async def test_a_plugin_reading_events_without_saying_which_gets_every_event(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    class Broken:
        @hookimpl
        def callrouter_wanted_events(self) -> tuple[str, ...]:
            raise RuntimeError("no idea")

    engine = await engine_factory(rules, plugins=[Recorder(), Broken()])
    assert engine.ami.event_selection.names is None
    assert "Events" not in dict(ajam_replay.sent("Login")[0].fields)
    assert ajam_replay.sent("Filter") == []


async def test_hook_callrouter_call_start(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    ajam_replay.inbound_call(caller="+79161234567", did=OTHER_DID)
    ajam_replay.inbound_call(caller="+79161234568", did=OTHER_DID)
    await ajam_replay.settle(engine)
    starts = recorder.seen("call_start")
    assert len(starts) == 2  # once per Linkedid, however many events
    assert starts[0]["call"].caller_number == "+79161234567"
    assert recorder.order().index("call_start") < recorder.order().index("event")


async def test_hook_callrouter_prefetch(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED_DID)
    await ajam_replay.settle(engine)
    [prefetch] = recorder.seen("prefetch")
    assert prefetch["call"].did in ("", ROUTED_DID)
    order = recorder.order()
    assert order.index("prefetch") < order.index("execute") < order.index("decision")


async def test_hook_callrouter_decision(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED_DID)
    unrouted = ajam_replay.inbound_call(caller="+79161234567", did=OTHER_DID)
    await ajam_replay.settle(engine)
    outcomes = sorted(d["outcome"] for d in recorder.seen("decision"))
    assert outcomes == ["executed", "fell-through"]
    executed = next(d for d in recorder.seen("decision") if d["outcome"] == "executed")
    assert executed["decision"].rules == ("tagged",)
    assert executed["trace"] is not None

    shadow = Recorder()
    ajam_replay.hangup(unrouted)  # else the new engine reconciles it at start
    ajam_replay.clear()
    engine.request_stop()  # one router at a time: the fake has one event queue
    await engine.stop()
    engine = await routed_engine(engine_factory, rules, shadow, shadow=True)
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED_DID)
    await ajam_replay.settle(engine)
    assert [d["outcome"] for d in shadow.seen("decision")] == ["shadow"]
    assert ajam_replay.count("Redirect") == 0


async def test_hook_callrouter_execute(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    channel = ajam_replay.inbound_call(caller="+79161234567", did=ROUTED_DID)
    await ajam_replay.settle(engine)
    [execute] = recorder.seen("execute")
    assert execute["action"].params == {"label": "79161234567"}
    assert ajam_replay.channels[channel].variables["TAG"] == "79161234567"
    record = engine.records[-1]
    first = record.actions[0]
    assert (first.kind, first.status, first.detail) == ("record_tag", "ok", "tagged")
    assert ajam_replay.count("Redirect") == 1


async def test_hook_callrouter_notify(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED_DID)
    await ajam_replay.settle(engine)
    [notify] = recorder.seen("notify")
    assert notify["params"] == {"event": "routed"}
    assert notify["call"] is not None


async def test_hook_callrouter_stream_gap(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    # Asterisk forgets the session; a call arrives whose events are lost with it.
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    channel = ajam_replay.inbound_call(
        caller="+79161234567", did=ROUTED_DID, announce=False, wait=10
    )
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    [gap] = recorder.seen("stream_gap")
    assert gap["gap"].reason == "session"
    # The engine reconciled: the waiting channel was found and routed once.
    assert ajam_replay.count("CoreShowChannels") == 2  # at start, and after the gap
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [channel]


async def test_hook_callrouter_channels_listed(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """The reconcile's one channel listing, at start and after a gap (after the gap's
    hook), each channel with its ``BridgeId``: a plugin rebuilds what it keeps from
    events without a listing of its own."""
    older = "1714557990.1"
    held, other = "PJSIP/103-00000012", "PJSIP/104-00000013"
    for channel in (held, other):
        ajam_replay.observe(
            Event(
                (
                    ("Event", "Newchannel"),
                    ("Channel", channel),
                    ("Uniqueid", channel),
                    ("Linkedid", older),
                    ("ChannelState", "6"),
                    ("ChannelStateDesc", "Up"),
                )
            )
        )
        ajam_replay.observe(
            Event((("Event", "BridgeEnter"), ("Channel", channel), ("BridgeUniqueid", "talk")))
        )
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    [at_start] = recorder.seen("channels_listed")
    assert {i["Channel"]: i["BridgeId"] for i in at_start["channels"]} == {
        held: "talk",
        other: "talk",
    }
    # 104 hangs up while the stream is down: its Hangup is lost with the session.
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.observe(Event((("Event", "Hangup"), ("Channel", other))))
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    _, after_gap = recorder.seen("channels_listed")
    assert {i["Channel"]: i["BridgeId"] for i in after_gap["channels"]} == {held: "talk"}
    order = recorder.order()
    assert order.index("stream_gap") < len(order) - 1 - order[::-1].index("channels_listed")
    assert ajam_replay.count("CoreShowChannels") == 2  # one each: the engine's and the plugins'


async def test_hook_callrouter_call_event(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Live CEL (cel_manager's ``Event: CEL``) becomes the call's story, in order:
    here the events Asterisk 22 sent for a real phone answering a real call
    (tests/fixtures/cel/answered.rawman)."""
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    capture = Path(__file__).parents[1] / "fixtures" / "cel" / "answered.rawman"
    ajam_replay.queue_rawman(capture)
    await ajam_replay.settle(engine)
    told = [seen["event"] for seen in recorder.seen("call_event")]
    assert [(e.kind, e.extension) for e in told] == [
        ("ringing", "101"),
        ("answered", "101"),
        ("hangup", "101"),
    ]
    assert len({e.call_id for e in told}) == 1
    assert {e.external for e in told} == {"8 (916) 123-45-67"}  # as the trunk delivered it
    assert not any(e.replayed for e in told)
    # The same records again (a duplicate delivery): nothing is told twice.
    ajam_replay.queue_rawman(capture)
    await ajam_replay.settle(engine)
    assert len(recorder.seen("call_event")) == 3


async def test_hook_callrouter_wants_call_events(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """A listener that answers False is not told call events, and when no
    other plugin is, the call life stays off: no CEL asked for or folded.
    True, None, no such hook, or one that raises or answers junk: told."""
    capture = Path(__file__).parents[1] / "fixtures" / "cel" / "answered.rawman"

    class Listener:
        def __init__(self, name: str, answer: object) -> None:
            self.__name__ = name
            self.answer = answer
            self.told: list[CallEvent] = []

        @hookimpl
        def callrouter_wants_call_events(self) -> object:
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

        @hookimpl
        def callrouter_call_event(self, event: CallEvent) -> None:
            self.told.append(event)

    plain = rules.parent / "plain.yaml"  # no rule needs the recorder's action
    plain.write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n"
        '    do: [{redirect: {context: callrouter-dial, exten: "101"}}]\n',
        encoding="utf-8",
    )
    deaf = Listener("deaf", False)
    engine = await engine_factory(plain, plugins=[deaf])
    assert not engine.plugins.reads_call_events()
    selection = await engine.event_selection()
    assert selection.names is not None
    assert "CEL" not in selection.names
    ajam_replay.queue_rawman(capture)
    await ajam_replay.settle(engine)
    assert deaf.told == []

    others = [
        Listener("yes", True),
        Listener("none", None),
        Listener("junk", "yes"),
        Listener("broken", RuntimeError("boom")),
    ]
    deaf = Listener("deaf2", False)
    engine = await engine_factory(plain, plugins=[deaf, *others])
    assert engine.plugins.reads_call_events()
    assert "CEL" in ((await engine.event_selection()).names or ())
    ajam_replay.queue_rawman(capture)
    await ajam_replay.settle(engine)
    assert deaf.told == []
    for other in others:
        assert [e.kind for e in other.told] == ["ringing", "answered", "hangup"], other.__name__


async def test_hook_callrouter_call_end(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    channel = ajam_replay.inbound_call(caller="+79161234567", did=OTHER_DID)
    await ajam_replay.settle(engine)
    assert recorder.seen("call_end") == []
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    [end] = recorder.seen("call_end")
    assert end["call"].ended is not None
    assert len(engine.tracker) == 0


async def test_hook_callrouter_present_extensions(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plugin that knows who else is on a call (a conference it runs) names them
    when the API starts recording it: they may read the file. What is no extension
    (a path, a number, a string for a list) widens nothing and is logged with the
    plugin's name; a plugin that raises is logged and the start goes on."""
    import httpx

    from router.api.auth import hash_token, new_token
    from router.api.settings import ApiSettings, TokenSettings
    from router.recordings import RecordingStore
    from router.recordings.settings import RecordingSettings

    class Conference:
        __name__ = "conference"
        asked: list[str]

        def __init__(self) -> None:
            self.asked = []

        @hookimpl
        def callrouter_present_extensions(self, call: Call) -> list[Any]:
            self.asked.append(call.linkedid)
            return ["104", "../etc", 5, "104", "x" * 81]

    class Sloppy:
        __name__ = "sloppy"

        @hookimpl
        def callrouter_present_extensions(self, call: Call) -> str:
            return "105"  # one string: not a list of extensions

    class Broken:
        __name__ = "broken"

        @hookimpl
        async def callrouter_present_extensions(self, call: Call) -> list[str]:
            raise RuntimeError("conference service down")

    secret = new_token()
    desk = TokenSettings(
        name="desk101",
        digest=bytes.fromhex(hash_token(secret).removeprefix("sha256:")),
        allow=("recordings:read", "calls:record"),
        extensions=("101",),
        rate=1000,
        burst=1000,
    )
    api = ApiSettings(tokens={"desk101": desk}, port=0)  # the kernel picks a free port
    (tmp_path / "monitor").mkdir()
    recordings = RecordingSettings(
        dir="/var/spool/asterisk/monitor", local_dir=tmp_path / "monitor"
    )
    conference = Conference()
    no_rules = tmp_path / "rules.yaml"
    no_rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(
        no_rules,
        plugins=[conference, Sloppy(), Broken()],
        api=api,
        recordings=recordings,
    )
    live = "1714558100.1"
    for channel in ("PJSIP/trunk-00000020", "PJSIP/101-00000021"):
        ajam_replay.queue_event(
            Event="Newchannel",
            Channel=channel,
            Uniqueid=channel,
            Linkedid=live,
            ChannelState="6",
            ChannelStateDesc="Up",
        )
    await ajam_replay.settle(engine)
    ajam_replay.on("MixMonitor", lambda action: {"MixMonitorID": "0x7feeec00ae20"})
    assert engine._api_server is not None
    port = engine._api_server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        started = await client.post(
            f"/api/v1/calls/{live}/recording", headers={"Authorization": f"Bearer {secret}"}
        )
    assert started.status_code == 201, started.text
    assert conference.asked == [live]
    (row,) = RecordingStore(engine.state_dir).for_call(live)
    assert set(row.extensions) == {"101", "trunk", "104"}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("conference" in m and "3 values that are no extension" in m for m in warned)
    assert any("sloppy" in m and "not a list of extensions" in m for m in warned)
    # Named as every other plugin message names it, with where the hook is
    # written: no traceback comes with a warning.
    [sloppy] = [m for m in warned if m.startswith("plugin 'sloppy': ")]
    line = Sloppy.callrouter_present_extensions.__code__.co_firstlineno
    assert sloppy.endswith(f"test_hooks.py:{line}"), sloppy
    [conf] = [m for m in warned if m.startswith("plugin 'conference': ")]
    line = Conference.callrouter_present_extensions.__code__.co_firstlineno
    assert conf.endswith(f"test_hooks.py:{line}"), conf
    assert any(
        "broken" in r.getMessage() and "callrouter_present_extensions" in r.getMessage()
        for r in caplog.records
    )


async def test_hook_callrouter_shutdown(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    recorder = Recorder()
    engine = await routed_engine(engine_factory, rules, recorder)
    await engine.stop()
    [shutdown] = recorder.seen("shutdown")
    assert shutdown["engine"] is engine.api
    names = [a.name for a in ajam_replay.actions]
    assert names[-2:] == ["Ping", "Logoff"]  # the shutdown hook ran before the logoff


async def test_hook_callrouter_metrics(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    from prometheus_client import Counter

    from router import Metrics
    from router.metrics import exposition

    class Counts(Recorder):
        """A plugin with its own family: registered once, counted from a hook."""

        routed: Counter | None = None
        given: list[Metrics]

        @hookimpl
        def callrouter_metrics(self, metrics: Metrics) -> None:
            self.given = [*getattr(self, "given", []), metrics]
            self.routed = metrics.counter(
                "callrouter_counts_decisions", "Decisions the plugin saw.", ["outcome"]
            )

        @hookimpl
        def callrouter_decision(
            self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
        ) -> None:
            assert self.routed is not None
            self.routed.labels(outcome).inc()

    counts = Counts()
    engine = await routed_engine(engine_factory, rules, counts)
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED_DID)
    await ajam_replay.settle(engine)
    assert counts.given == [engine.metrics]  # once, this engine's own registry
    text = exposition(engine.metrics).decode()
    assert 'callrouter_counts_decisions_total{outcome="executed"} 1.0' in text
    await engine.setup()  # setup again (check, reload paths) registers nothing twice
    assert len(counts.given) == 1

    with pytest.raises(ValueError, match="callrouter_<plugin>_<what>"):
        engine.metrics.counter("Counts-Bad", "a name Prometheus would refuse")


def test_hook_callrouter_state_conversions(tmp_path: Path) -> None:
    """Asked by ``callrouter check`` with ``[router] state_dir``: each line is
    said as the plugin's; None says nothing; an async hook is awaited; one
    that raises gives no line and is kept for check to count as an error."""

    class Old:
        __name__ = "old"

        @hookimpl
        def callrouter_state_conversions(self, state_dir: Path) -> list[str]:
            return [f"{state_dir / 'old.db'}: converted at start\x1b[2J"]

    class Quiet:
        __name__ = "quiet"

        @hookimpl
        async def callrouter_state_conversions(self) -> None:
            return None

    class Broken:
        __name__ = "broken"

        @hookimpl
        def callrouter_state_conversions(self, state_dir: Path) -> list[str]:
            raise OSError("no such table")

    plugins = Plugins.load(defaults=(), entry_points=False, extra=[Old(), Quiet(), Broken()])
    plugins.failures_printed = True
    lines = asyncio.run(plugins.state_conversions(tmp_path))
    assert lines == [f"plugin 'old': {tmp_path / 'old.db'}: converted at start\\x1b[2J"]
    [failure] = plugins.answer_failures
    assert failure.startswith(
        "plugin 'broken': callrouter_state_conversions failed with OSError('no such table'), "
        "so callrouter run may convert its files unsaid"
    )


# --------------------------------------------------------------------------- completeness


def hookspec_names() -> list[str]:
    return sorted(
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("callrouter_")
    )


def test_every_hook_has_a_test() -> None:
    module = sys.modules[__name__]
    missing = [name for name in hookspec_names() if not hasattr(module, f"test_hook_{name}")]
    assert not missing, f"add test_hook_<name> to tests/unit/test_hooks.py for: {missing}"
    assert len(hookspec_names()) >= 12
