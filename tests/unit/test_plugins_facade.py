"""The typed facade over pluggy (router.plugins.Plugins) and ``callrouter plugins``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from router import ConfigError
from router.ami.message import Event
from router.calls import Call
from router.cli import main
from router.config import AsteriskSettings, Config, PluginSettings, load_config
from router.engine import Engine
from router.hookspecs import hookimpl
from router.plugins import DEFAULT_PLUGINS, Plugins
from router.rules.decision import Action


def config() -> Config:
    return Config(
        asterisk=AsteriskSettings(url="http://pbx.test/asterisk", username="router", secret="x"),
        plugins=PluginSettings(settings={}),
    )


def load(*plugins: object) -> Plugins:
    return Plugins.load(defaults=(), entry_points=False, extra=plugins)


def call(linkedid: str = "1700000000.1") -> Call:
    return Call(linkedid=linkedid, started=0.0)


EVENT = Event((("Event", "Newchannel"), ("Channel", "PJSIP/1-01"), ("Linkedid", "x")))


class Named:
    def __init__(self, name: str) -> None:
        self.__name__ = name
        self.events: list[str] = []


class SyncAnswer(Named):
    @hookimpl
    def callrouter_execute(self, action: Action) -> str | None:
        self.events.append(action.kind)
        return "sync" if action.kind == "sync" else None


class AsyncAnswer(Named):
    @hookimpl
    async def callrouter_execute(self, action: Action) -> str | None:
        await asyncio.sleep(0)
        self.events.append(action.kind)
        return "async" if action.kind in ("async", "both") else None


class Raiser(Named):
    @hookimpl
    def callrouter_event(self, event: Event) -> None:
        raise RuntimeError("boom")

    @hookimpl
    async def callrouter_call_end(self, call: Call) -> None:
        raise RuntimeError("async boom")


class Listener(Named):
    @hookimpl
    async def callrouter_event(self, event: Event, call: Call | None) -> None:
        self.events.append(event.name)


class TakesAll(Named):
    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        self.events.append(f"{event.name} {call.linkedid if call else None}")


class TakesAllOtherOrder(Named):
    @hookimpl
    def callrouter_event(self, call: Call | None, event: Event) -> None:
        self.events.append(f"{event.name} {call.linkedid if call else None}")


class TakesTheCall(Named):
    @hookimpl
    def callrouter_event(self, call: Call | None) -> None:
        self.events.append(f"{call.linkedid if call else None}")


class TakesNothing(Named):
    @hookimpl
    def callrouter_event(self) -> None:
        self.events.append("told")


async def test_an_event_hook_gets_the_arguments_it_names_in_any_order() -> None:
    """The usual ``(event, call)`` is passed without a dict built per call
    (issue 16); any other choice or order of the hookspec's arguments gets
    them by name as before."""
    plugins = [TakesAll("a"), TakesAllOtherOrder("b"), TakesTheCall("c"), TakesNothing("d")]
    facade = load(*plugins)
    await facade.event(EVENT, call("1.1"))
    await facade.event(EVENT, None)
    assert [p.events for p in plugins] == [
        ["Newchannel 1.1", "Newchannel None"],
        ["Newchannel 1.1", "Newchannel None"],
        ["1.1", "None"],
        ["told", "told"],
    ]


async def test_sync_and_async_results_are_awaited() -> None:
    plugins = load(SyncAnswer("s"), AsyncAnswer("a"))
    assert await plugins.execute(Action.make("sync", {}), call(), engine=None) == "sync"  # type: ignore[arg-type]
    assert await plugins.execute(Action.make("async", {}), call(), engine=None) == "async"  # type: ignore[arg-type]
    assert await plugins.execute(Action.make("nobody", {}), call(), engine=None) is None  # type: ignore[arg-type]


async def test_execute_is_firstresult_last_registered_first() -> None:
    first, second = AsyncAnswer("first"), AsyncAnswer("second")
    plugins = load(first, second)
    assert await plugins.execute(Action.make("both", {}), call(), engine=None) == "async"  # type: ignore[arg-type]
    # pluggy's order: the plugin registered last answers first; the other is not asked.
    assert second.events == ["both"]
    assert first.events == []


async def test_a_raising_plugin_is_logged_once_per_call_and_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = Listener("listener")
    plugins = load(listener, Raiser("raiser"))
    one, two = call("1.1"), call("2.2")
    for _ in range(3):
        await plugins.event(EVENT, one)
    await plugins.event(EVENT, two)
    assert listener.events == ["Newchannel"] * 4
    failures = [r for r in caplog.records if r.name == "router.plugins"]
    assert [r.getMessage() for r in failures] == [
        "plugin 'raiser' failed in callrouter_event (call 1.1): RuntimeError('boom')",
        "plugin 'raiser' failed in callrouter_event (call 2.2): RuntimeError('boom')",
    ]
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)


async def test_failure_memory_is_per_call_and_hook_and_outlives_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once per (plugin, call, hook), even for hooks that run after the call ended
    (a decision finishing after the caller hung up). Once per (plugin, call),
    whichever hook, hid the second bug: a plugin whose ``callrouter_event`` failed
    first in every call never had its ``callrouter_call_end`` failure logged."""
    plugins = load(Raiser("raiser"))
    for linkedid in ("1.1", "2.2"):
        one = call(linkedid)
        await plugins.event(EVENT, one)
        await plugins.call_end(one)
        await plugins.event(EVENT, one)
        await plugins.call_end(one)
    messages = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert messages == [
        "plugin 'raiser' failed in callrouter_event (call 1.1): RuntimeError('boom')",
        "plugin 'raiser' failed in callrouter_call_end (call 1.1): RuntimeError('async boom')",
        "plugin 'raiser' failed in callrouter_event (call 2.2): RuntimeError('boom')",
        "plugin 'raiser' failed in callrouter_call_end (call 2.2): RuntimeError('async boom')",
    ]


async def test_failure_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The memory of what was logged keeps at most ``_FAILURE_MEMORY`` (plugin,
    call, hook), the oldest forgotten first: never an unbounded set, and a failure
    forgotten so is logged again."""
    monkeypatch.setattr("router.plugins._FAILURE_MEMORY", 3)
    plugins = load(Raiser("raiser"))
    for linkedid in ("1", "2", "3", "4", "1"):
        await plugins.event(EVENT, call(linkedid))
        await plugins.call_end(call(linkedid))
        assert len(plugins._failed) <= 3
    await plugins.call_end(call("1"))  # remembered still: not logged again
    logged = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert len(logged) == 10
    assert logged[-2:] == [
        "plugin 'raiser' failed in callrouter_event (call 1): RuntimeError('boom')",
        "plugin 'raiser' failed in callrouter_call_end (call 1): RuntimeError('async boom')",
    ]


async def test_events_of_no_call_log_once_per_hook(caplog: pytest.LogCaptureFixture) -> None:
    plugins = load(Raiser("raiser"))
    for _ in range(5):
        await plugins.event(EVENT, None)
    assert len([r for r in caplog.records if r.name == "router.plugins"]) == 1


class RefusesSettings(Named):
    @hookimpl
    def callrouter_configure(self, settings: Mapping[str, Any]) -> None:
        raise ConfigError("[plugins.refuses] url: required")


class CrashesInConfigure(Named):
    configured = False

    @hookimpl
    def callrouter_configure(self) -> None:
        raise KeyError("bug")


class Configured(Named):
    configured = False

    @hookimpl
    async def callrouter_configure(self, config: Config) -> None:
        self.configured = True


async def test_configure_config_error_stops_the_start() -> None:
    engine = Engine(config(), plugins=load(RefusesSettings("refuses")))
    with pytest.raises(ConfigError, match="url: required"):
        await engine.setup()


async def test_configure_other_exceptions_are_logged_and_the_start_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ok = Configured("ok")
    plugins = load(ok, CrashesInConfigure("crashes"))
    await plugins.configure(config())
    assert ok.configured
    assert "plugin 'crashes' failed in callrouter_configure" in caplog.text


def test_hook_timeout_is_isolation_too(caplog: pytest.LogCaptureFixture) -> None:
    """A plugin past its time is cut off and logged; the next plugin still runs."""
    seen: list[str] = []

    class Slow(Named):
        @hookimpl
        async def callrouter_prefetch(self, call: Call) -> None:
            seen.append(self.__name__)
            await asyncio.sleep(10)

    class Quick(Named):
        @hookimpl
        def callrouter_prefetch(self, call: Call) -> None:
            seen.append(self.__name__)

    async def run() -> None:
        plugins = load(Quick("quick"), Slow("slow"))
        await asyncio.wait_for(
            plugins._call_each(
                "callrouter_prefetch", {"call": call()}, scope="1700000000.1", timeout=0.01
            ),
            5,
        )

    asyncio.run(run())
    assert seen == ["slow", "quick"]
    (failure,) = [r for r in caplog.records if r.name == "router.plugins"]
    assert failure.getMessage().startswith(
        "plugin 'slow' failed in callrouter_prefetch (call 1700000000.1): TimeoutError"
    )


def test_builtins_are_ordinary_plugins() -> None:
    plugins = Plugins.load(entry_points=False)
    names = {i.name for i in plugins.info() if i.builtin}
    assert names == {dotted.rsplit(".", 1)[-1] for dotted in DEFAULT_PLUGINS}
    disabled = Plugins.load(entry_points=False, disabled=["directory"])
    assert "directory" not in {i.name for i in disabled.info()}


def test_callrouter_plugins_lists_builtins_and_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for dotted in DEFAULT_PLUGINS:
        assert dotted.rsplit(".", 1)[-1] in lines
    assert "built-in" in lines["directory"]
    assert lines["directory"].split("built-in", 1)[1].split() == ["configure,", "register"]
    assert "startup" in lines["extension_state"]


def test_the_guide_lists_the_built_ins_as_callrouter_plugins_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """hnew31's trial: plugins.md showed `actions  built-in  register` and
    `extension_state  built-in  configure, register, startup`, while
    `callrouter plugins` prints `configure, register` and `configure, event,
    register, startup, stream_gap, wanted_events` for them."""
    page = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
    shown = page.split("$ callrouter plugins\n", 1)[1].split("```", 1)[0].splitlines()
    documented = {line.split()[0]: line.split() for line in shown if "built-in" in line}
    assert {"actions", "directory", "extension_state"} <= set(documented)
    assert main(["plugins"]) == 0
    printed = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    for name, words in documented.items():
        assert words == printed[name], name


def test_callrouter_plugins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    data = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert data["timefuncs"]["builtin"] is True
    assert "callrouter_register" in data["timefuncs"]["hooks"]


class Reader:
    """A ``callrouter_event`` plugin answering ``wanted`` (``...``: no such hook)."""

    def __init__(self, name: str, wanted: Any, seen: list[tuple[str, str]]) -> None:
        self.__name__ = name
        self._seen = seen
        if wanted is not ...:
            self.callrouter_wanted_events = hookimpl(lambda: wanted)

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        self._seen.append((self.__name__, event.name))


def named(name: str) -> Event:
    return Event((("Event", name), ("Channel", "PJSIP/1-01"), ("Linkedid", "x")))


async def test_events_go_to_the_plugins_that_asked_for_them() -> None:
    """Dispatch by name (issue 16): a plugin that said which events it reads is
    not called for the others; one that said None, or nothing, gets them all."""
    seen: list[tuple[str, str]] = []
    plugins = load(
        Reader("hangups", ("Hangup", "Queue*"), seen),
        Reader("everything", None, seen),
        Reader("silent", ..., seen),
        Reader("none", (), seen),
    )
    await plugins.event(named("Newexten"), call())
    # Before the engine asked for the answers, every plugin gets every event.
    assert sorted(seen) == [
        ("everything", "Newexten"),
        ("hangups", "Newexten"),
        ("none", "Newexten"),
        ("silent", "Newexten"),
    ]
    seen.clear()
    await plugins.wanted_events()
    for name in ("Newexten", "Hangup", "QueueCallerJoin"):
        await plugins.event(named(name), call())
    assert sorted(seen) == [
        ("everything", "Hangup"),
        ("everything", "Newexten"),
        ("everything", "QueueCallerJoin"),
        ("hangups", "Hangup"),
        ("hangups", "QueueCallerJoin"),
        ("silent", "Hangup"),
        ("silent", "Newexten"),
        ("silent", "QueueCallerJoin"),
    ]


async def test_a_plugin_registered_after_the_answers_gets_every_event() -> None:
    seen: list[tuple[str, str]] = []
    plugins = load(Reader("hangups", ("Hangup",), seen))
    await plugins.wanted_events()
    plugins.register(Reader("late", ("Hangup",), seen))
    await plugins.event(named("Newexten"), None)
    assert seen == [("late", "Newexten")]  # not asked yet: everything, as before
    await plugins.wanted_events()
    await plugins.event(named("Newexten"), None)
    await plugins.event(named("Hangup"), None)
    assert sorted(seen[1:]) == [("hangups", "Hangup"), ("late", "Hangup")]


async def test_a_late_plugin_asked_alone_keeps_the_others_answers() -> None:
    """``wanted_events(only=...)`` asks the named plugins (the API's, registered
    once the engine started) and keeps what the others answered."""
    seen: list[tuple[str, str]] = []
    plugins = load(Reader("hangups", ("Hangup",), seen))
    await plugins.wanted_events()
    plugins.register(Reader("late", ("Newexten",), seen))
    answers = await plugins.wanted_events(only=("late",))
    assert sorted(tuple(a) for a in answers if a is not None) == [("Hangup",), ("Newexten",)]
    for name in ("Newexten", "Hangup", "VarSet"):
        await plugins.event(named(name), None)
    assert sorted(seen) == [("hangups", "Hangup"), ("late", "Newexten")]


async def test_reads_event_says_whether_any_plugin_is_called_for_a_name() -> None:
    """The engine asks before dispatching (no coroutine for events nobody reads);
    the answer follows the plugins' wanted events, and a late plugin's."""
    seen: list[tuple[str, str]] = []
    plugins = load(Reader("hangups", ("Hangup",), seen))
    assert plugins.reads_event("Newexten")  # not asked yet: every event
    await plugins.wanted_events()
    assert plugins.reads_event("Hangup")
    assert not plugins.reads_event("Newexten")
    plugins.register(Reader("late", ("Newexten",), seen))
    assert plugins.reads_event("Newexten")
    assert not load().reads_event("Hangup")


@pytest.mark.parametrize("events", ["auto", "all"])
async def test_the_engine_dispatches_by_name_whatever_it_asks_asterisk_for(
    events: str, tmp_path: Path
) -> None:
    """``[asterisk] events = "all"`` widens what Asterisk sends, not what a
    plugin that named its events is called for (docs/plugins.md)."""
    seen: list[tuple[str, str]] = []
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://pbx.test/asterisk"\nusername = "router"\nsecret = "x"\n'
        f'events = "{events}"\n[router]\nrules = ["{rules}"]\n'
        f'state_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    engine = Engine(load_config(path), plugins=load(Reader("hangups", ("Hangup",), seen)))
    await engine.setup()
    await engine.event_selection()  # what start() asks before logging in
    await engine.handle_event(named("Newexten"))
    await engine.handle_event(named("Hangup"))
    assert seen == [("hangups", "Hangup")]


def test_an_async_register_is_refused_and_its_coroutine_closed() -> None:
    """``async def callrouter_register`` is a located problem, and nothing else:
    the coroutine it returned is closed, not left for the garbage collector to
    warn "never awaited" about (in a plugin's own tests, run with
    ``filterwarnings = error``, that warning failed whichever test came next)."""
    import inspect
    from collections.abc import Coroutine

    from router.rules.registry import Registry

    made: list[Coroutine[Any, Any, None]] = []

    class AsyncRegister(Named):
        @hookimpl
        def callrouter_register(self, registry: Registry) -> Coroutine[Any, Any, None]:
            async def register() -> None:
                registry.add_function("never", len)

            made.append(register())
            return made[-1]

    problems = load(AsyncRegister("later")).register_into(Registry())
    assert problems == [
        "plugin 'later': callrouter_register: callrouter_register must not be async"
    ]
    [coroutine] = made
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED


async def test_present_extensions_takes_a_bounded_number_from_one_plugin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An answer becomes who may read a recording, asked on the API's request path: a
    plugin naming endless extensions (a generator that never ends) gives at most
    ``MAX_PRESENT``, the rest left out and said, and the request goes on."""
    from itertools import count

    from router.plugins import MAX_PRESENT

    class Endless(Named):
        @hookimpl
        def callrouter_present_extensions(self, call: Call) -> Any:
            return (str(n) for n in count(100))

    caplog.set_level(logging.WARNING, "router.plugins")
    found = await load(Endless("endless")).present_extensions(call())
    assert len(found) == MAX_PRESENT
    assert found == {str(n) for n in range(100, 100 + MAX_PRESENT)}
    assert any(
        "endless" in r.getMessage() and f"more than {MAX_PRESENT}" in r.getMessage()
        for r in caplog.records
    )
