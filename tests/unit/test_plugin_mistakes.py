"""A plugin author's first mistakes are named, with the plugin and the hook.

Found by writing a third-party plugin from docs/plugins.md alone: a misspelt
hook or an argument the hook does not pass crashed every command with
pluggy's traceback, a hook left without ``@hookimpl`` and a ``make_plugin()``
returning None were silently never called, a hung ``callrouter_configure``
hung ``run``, ``check`` and ``explain``, a cut-off hook was logged as a bare
``TimeoutError()``, and an action answered ``False`` was traced ``ok``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from router import ActionSpec, ParamSpec, PluginError, hookimpl
from router.plugins import Plugins
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router.engine import Engine
    from router.testing import EngineFactory, ReplayAsterisk

# router.testing is imported by pytest, as a plugin, before any test uses it
# (tests/unit/test_testing_kit.py says why the tests import it late).
pytest_plugins = ["router.testing"]


class VipTags:
    """A plugin ``vip`` with the action ``vip_tag``, answered ``answer``."""

    __name__ = "vip"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def callrouter_register(self, registry: Any) -> None:
        registry.add_action(ActionSpec("vip_tag", (ParamSpec("level"),)))

    @hookimpl
    def callrouter_execute(self, action: Any) -> object:
        return self.answer if action.kind == "vip_tag" else None


async def route_a_vip_tag(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    answer: object,
    *,
    redirect: bool = True,
) -> Engine:
    """An engine with :class:`VipTags` that has routed one call by a rule doing
    ``vip_tag`` (then, with ``redirect``, a Redirect to 101)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: vip\n    on: call\n    do:\n"
        "      - vip_tag: {level: gold}\n"
        + ("      - redirect: {context: callrouter-dial, exten: '101'}\n" if redirect else ""),
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[VipTags(answer)])
    ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    return engine


class Registers:
    """A plugin ``vip`` whose ``callrouter_register`` calls ``register(registry)``."""

    __name__ = "vip"

    def __init__(self, register: Callable[[Any], object]) -> None:
        self.register = register

    @hookimpl
    def callrouter_register(self, registry: Any) -> None:
        self.register(registry)


class Misspelt:
    __name__ = "vip"

    @hookimpl
    def callrouter_statrup(self, engine: Any) -> None:
        return None


class WrongArgument:
    __name__ = "vip"

    @hookimpl
    def callrouter_decision(self, call: Any, result: Any) -> None:
        return None


class DefaultedArgument:
    """``call=None``, as the hook's ``Call | None`` invites: pluggy never passes
    an argument with a default, so the hook always saw None."""

    __name__ = "vip"

    @hookimpl
    def callrouter_notify(self, target: Any, params: Any, call: Any = None) -> None:
        return None


class KeywordOnlyArgument:
    """After ``*``: pluggy passes none, so every call failed with a TypeError."""

    __name__ = "vip"

    @hookimpl
    def callrouter_decision(self, *, call: Any, outcome: Any) -> None:
        return None


class PositionalOnlyArgument:
    """Before ``/``: callrouter passes the hook's arguments by name, so every call
    failed with a TypeError (the plugin loaded)."""

    __name__ = "vip"

    @hookimpl
    def callrouter_notify(self, target: Any, params: Any, /) -> None:
        return None


class Unmarked:
    __name__ = "vip"

    def callrouter_register(self, registry: Any) -> None:
        registry.add_function("is_vip", lambda number: True)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            Misspelt(),
            "plugin 'vip': callrouter_statrup is marked @hookimpl but is no callrouter hook "
            "(did you mean 'callrouter_startup'?)",
        ),
        (
            WrongArgument(),
            "plugin 'vip': callrouter_decision(call, result): 'result' is no argument of "
            "the hook; it passes call, decision, trace, outcome, by name",
        ),
        (
            Unmarked(),
            "plugin 'vip': callrouter_register is not marked with @hookimpl "
            "(from router import hookimpl), so it would never be called",
        ),
        (
            DefaultedArgument(),
            "plugin 'vip': callrouter_notify: its argument 'call' has a default (None), "
            "so pluggy never passes it and it would always be that default",
        ),
        (
            KeywordOnlyArgument(),
            "plugin 'vip': callrouter_decision: its argument 'call' is keyword-only",
        ),
        (
            PositionalOnlyArgument(),
            "plugin 'vip': callrouter_notify: its argument 'target' is positional-only "
            "(before '/'), but callrouter passes the hook's arguments by name, so every "
            "call would fail; drop the '/'",
        ),
    ],
    ids=[
        "misspelt-hook",
        "wrong-argument",
        "unmarked-hook",
        "defaulted",
        "keyword-only",
        "positional-only",
    ],
)
def test_hook_mistakes_stop_the_load_naming_plugin_and_hook(plugin: object, message: str) -> None:
    with pytest.raises(PluginError) as caught:
        Plugins.load(defaults=(), entry_points=False, extra=[plugin])
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("plugin", "function"),
    [
        (Misspelt(), Misspelt.callrouter_statrup),
        (WrongArgument(), WrongArgument.callrouter_decision),
        (Unmarked(), Unmarked.callrouter_register),
        (DefaultedArgument(), DefaultedArgument.callrouter_notify),
        (KeywordOnlyArgument(), KeywordOnlyArgument.callrouter_decision),
        (PositionalOnlyArgument(), PositionalOnlyArgument.callrouter_notify),
    ],
    ids=[
        "misspelt-hook",
        "wrong-argument",
        "unmarked-hook",
        "defaulted",
        "keyword-only",
        "positional-only",
    ],
)
def test_a_hook_mistake_says_where_the_function_is(plugin: object, function: Any) -> None:
    """The message named the plugin and the hook, not the file: for an
    installed plugin, which of its package's files to open was left to guess."""
    import os

    path = os.path.relpath(function.__code__.co_filename)
    with pytest.raises(PluginError) as caught:
        Plugins.load(defaults=(), entry_points=False, extra=[plugin])
    assert str(caught.value).endswith(f"; defined at {path}:{function.__code__.co_firstlineno}")


def test_a_module_plugin_with_a_misspelt_hook_is_named_too() -> None:
    module = types.ModuleType("callrouter_vip")

    @hookimpl
    def callrouter_regster(registry: Any) -> None:
        return None

    module.callrouter_regster = callrouter_regster  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match=r"did you mean 'callrouter_register'"):
        Plugins.load(defaults=(), entry_points=False, extra=[module])


def test_optional_arguments_and_the_builtins_still_load() -> None:
    from router.testing import load_plugins

    class Optional:
        __name__ = "vip"

        @hookimpl
        def callrouter_decision(self, call: Any, extra: Any = None) -> None:
            return None

        def helper_not_a_hook(self) -> None:
            return None

    plugins = load_plugins(Optional())
    assert "vip" in {info.name for info in plugins.info()}


def test_a_factory_returning_none_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("callrouter_vip")
    module.make_plugin = lambda: None  # type: ignore[attr-defined]
    entry = types.SimpleNamespace(
        name="vip",
        value="callrouter_vip",
        dist=types.SimpleNamespace(name="callrouter-vip", version="0.1.0"),
        load=lambda: module,
    )
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    with pytest.raises(PluginError, match=r"^plugin 'vip': the plugin object is None"):
        Plugins.load(defaults=())


async def test_a_hung_configure_is_cut_off_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from router.testing import load_plugins, make_config

    monkeypatch.setattr("router.plugins.CONFIGURE_TIMEOUT", 0.05)

    class Hangs:
        __name__ = "vip"

        @hookimpl
        async def callrouter_configure(self, settings: Any) -> None:
            await asyncio.sleep(60)

    plugins = load_plugins(Hangs(), defaults=())
    async with asyncio.timeout(5):
        await plugins.configure(make_config({"vip": {}}))
    [record] = [r for r in caplog.records if r.name == "router.plugins"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "plugin 'vip' failed in callrouter_configure: TimeoutError('cut off: no answer "
        "within 0.05 s (docs/plugins.md, Async hooks)')"
    )


async def test_a_cut_off_hook_says_so_and_a_plugin_timeout_stays_its_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from router.testing import load_plugins, make_call, make_event

    monkeypatch.setattr("router.plugins.HOOK_TIMEOUT", 0.05)

    class Slow:
        __name__ = "vip"

        @hookimpl
        async def callrouter_event(self, event: Any) -> None:
            if event.name == "Hangup":
                raise TimeoutError("crm did not answer")
            await asyncio.sleep(60)

    plugins = load_plugins(Slow(), defaults=())
    async with asyncio.timeout(5):
        await plugins.event(make_event("Newchannel", Linkedid="L1"), make_call(linkedid="L1"))
        await plugins.event(make_event("Hangup", Linkedid="L2"), make_call(linkedid="L2"))
    messages = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert messages == [
        "plugin 'vip' failed in callrouter_event (call L1): TimeoutError('cut off: "
        "no answer within 0.05 s (docs/plugins.md, Async hooks)')",
        "plugin 'vip' failed in callrouter_event (call L2): TimeoutError('crm did not answer')",
    ]


@pytest.mark.parametrize("answer", [False, ""])
async def test_an_action_answered_falsy_fails_naming_the_plugin(
    answer: object,
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await route_a_vip_tag(engine_factory, ajam_replay, tmp_path, answer)
    record = engine.records[-1]
    assert record.outcome == "failed"
    assert ajam_replay.count("Redirect") == 1  # the following actions still run
    assert any(
        r.name == "router.plugins"
        and r.getMessage().startswith("plugin 'vip' failed in callrouter_execute")
        and f"returned {answer!r}" in r.getMessage()
        for r in caplog.records
    )


class _NoStr:
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (42, "returned 42 (int)"),
        ({"a": 1}, "returned {'a': 1} (dict)"),
        (b"x", "returned b'x' (bytes)"),
        (_NoStr(), "(_NoStr)"),
    ],
)
async def test_an_action_answered_with_no_text_fails_naming_the_plugin(
    answer: object,
    shown: str,
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``callrouter_execute`` answers a text (``str | None``): 42 or a dict was
    taken for one, ``ok`` with ``str(answer)``, and an answer whose ``str()``
    raised failed the action as ``ERROR router.executor: action vip_tag failed``,
    naming no plugin. Both now fail the action as False does, naming the plugin."""

    engine = await route_a_vip_tag(engine_factory, ajam_replay, tmp_path, answer)
    record = engine.records[-1]
    assert record.outcome == "failed"
    assert record.actions[0].status == "failed"
    assert record.actions[0].detail.startswith("plugin 'vip': vip_tag: returned ")
    assert shown in record.actions[0].detail
    assert ajam_replay.count("Redirect") == 1  # the following actions still run
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.name == "router.plugins"
    assert error.getMessage().startswith("plugin 'vip' failed in callrouter_execute")
    # The error is callrouter's, its traceback never in the plugin: the line
    # names where the hook is written, as a registration problem does.
    line = VipTags.callrouter_execute.__code__.co_firstlineno
    assert error.getMessage().endswith(f"; defined at {_here()}:{line}"), error.getMessage()


def _here() -> str:
    return os.path.relpath(__file__)


async def test_a_plugins_failure_is_said_when_the_working_folder_was_removed(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """issue 16: the place a plugin's function is written in is said relative
    to the working folder; with that folder removed under a running service
    (``callrouter run`` started in a folder a tmp cleaner or a script removed),
    ``os.path.relpath`` raised FileNotFoundError out of the line that reports
    the plugin's mistake, and the call's routing failed with it. The path is
    said whole instead."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: vip\n    on: call\n    do:\n"
        "      - vip_tag: {level: gold}\n"
        "      - redirect: {context: callrouter-dial, exten: '101'}\n",
        encoding="utf-8",
    )
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    engine = await engine_factory(rules, plugins=[VipTags(42)])
    gone.rmdir()  # removed under the running engine
    ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    record = engine.records[-1]
    assert record.outcome == "failed"
    assert record.actions[0].detail.startswith("plugin 'vip': vip_tag: returned 42 (int)")
    assert ajam_replay.count("Redirect") == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    line = VipTags.callrouter_execute.__code__.co_firstlineno
    assert error.getMessage().endswith(f"; defined at {__file__}:{line}"), error.getMessage()


async def test_an_actions_long_description_is_cut(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """A description is kept in every decision record, the API and the live
    page: 5 MB of it were kept whole. It is cut as a caller's text is (500)."""

    engine = await route_a_vip_tag(
        engine_factory, ajam_replay, tmp_path, "x" * 5_000_000, redirect=False
    )
    [action] = engine.records[-1].actions
    assert action.status == "ok"
    assert len(action.detail) == 500
    assert action.detail.endswith("…")


async def test_a_failing_job_is_logged_by_its_name_once(
    engine_factory: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Jobs:
        __name__ = "vip"

        @hookimpl
        def callrouter_startup(self, engine: Any) -> None:
            engine.schedule("vip:refresh", self.refresh, every=300)

        async def refresh(self) -> None:
            raise RuntimeError("crm down")

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: r\n    on: call\n    do:\n"
        "      - redirect: {context: callrouter-dial, exten: '101'}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Jobs()])
    job = engine.scheduler.get_job("vip:refresh")
    assert job is not None
    caplog.set_level(logging.ERROR, "router.engine")
    await job.func()  # what the scheduler runs; it must not raise
    # Only this job's records: an engine of an earlier test on the same worker
    # may still log while it winds down.
    [record] = [
        r for r in caplog.records if r.name == "router.engine" and "vip:refresh" in r.getMessage()
    ]
    assert record.getMessage() == "background job vip:refresh failed"
    assert record.exc_info is not None
    assert "crm down" in str(record.exc_info[1])


async def test_a_job_that_hangs_is_warned_about_once(
    engine_factory: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job whose run never returns (an ``await`` with no bound) never ran
    again, and the runs skipped meanwhile were said only at DEBUG: its plugin
    never learned. A run that made three runs skipped is said once at WARNING."""

    class Hangs:
        __name__ = "vip"
        runs = 0

        @hookimpl
        def callrouter_startup(self, engine: Any) -> None:
            engine.schedule("vip:refresh", self.refresh, every=0.1)

        async def refresh(self) -> None:
            self.runs += 1
            await asyncio.Event().wait()  # a CRM that never answers

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    plugin = Hangs()
    caplog.set_level(logging.DEBUG, "router.engine")
    await engine_factory(rules, plugins=[plugin])

    def warned() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "router.engine" and r.levelno == logging.WARNING
        ]

    await eventually(warned, "the WARNING of a hung job")
    await asyncio.sleep(0.5)  # more runs skipped: said once
    [message] = warned()
    assert message.startswith("background job vip:refresh: its run started ")
    assert "the 3 runs due since were skipped" in message
    assert "asyncio.wait_for" in message
    assert plugin.runs == 1


async def test_a_misspelt_wanted_event_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from router.testing import load_plugins

    class Listens:
        __name__ = "vip"

        @hookimpl
        def callrouter_wanted_events(self) -> tuple[str, ...]:
            return ("Hangupp", "Hangup", "Queue*", "DongleNewSMS*")

        @hookimpl
        def callrouter_event(self, event: Any) -> None:
            return None

    plugins = load_plugins(Listens(), defaults=())
    await plugins.wanted_events()
    await plugins.wanted_events()  # asked again at every reload: said once
    messages = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert messages == [
        "plugin 'vip': callrouter_wanted_events names 'Hangupp' (did you mean 'Hangup'?), "
        "an event Asterisk 22 does not document (callrouter actions --events lists them), "
        "so its callrouter_event may never be called for it; write an event of a module "
        "Asterisk does not document as a glob, 'Hangupp*'"
    ]
    assert plugins.reads_event("Hangupp")  # kept: a warning, not a refusal


async def test_a_rule_function_that_raises_is_named_in_the_trace(tmp_path: Path) -> None:
    from router.plugin_registry import plugin_registry
    from router.rules import Caller, Context, load_rules

    def is_vip(number: str) -> bool:
        raise RuntimeError("the VIP list is not loaded")

    def level(number: str) -> str:
        raise KeyError(number)

    registry = plugin_registry(entry_points=False)
    registry.add_function("is_vip", is_vip)
    registry.add_function("level", level)
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n"
        "  - name: a\n    on: call\n    if: is_vip(caller.number)\n"
        "    do:\n      - hangup: {}\n"
        "  - name: b\n    on: call\n"
        "    do:\n      - redirect: {context: x, exten: '{level(caller.number)}'}\n",
        encoding="utf-8",
    )
    ruleset = load_rules([path], registry)
    assert ruleset.errors == ()
    outcome = await ruleset.evaluate(Context.for_call(Caller("79161234567"), "1"), explain=True)
    assert outcome.trace is not None
    assert [(r.rule, r.status, r.stage, r.detail) for r in outcome.trace.rules] == [
        ("a", "error", "if", "is_vip() raised RuntimeError: the VIP list is not loaded"),
        ("b", "error", "do", "level() raised KeyError: '79161234567'"),
    ]


def test_a_failed_registration_is_returned_to_be_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from router.rules.registry import Registry

    def raises(registry: Any) -> None:
        raise ValueError("no numbers file")

    plugins = Plugins.load(defaults=(), entry_points=False, extra=[Registers(raises)])
    problems = plugins.register_into(Registry())
    assert problems == ["plugin 'vip': callrouter_register: no numbers file"]
    # The engine logs each problem it is given, and check prints it: not here too.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    ("register", "problem"),
    [
        (
            lambda registry: registry.add_lookup("vip.level", "levels.txt"),
            "plugin 'vip': callrouter_register: lookup 'vip.level': 'levels.txt' is not callable",
        ),
        (
            lambda registry: registry.add_function("is_vip", {"79161234567"}),
            "plugin 'vip': callrouter_register: function 'is_vip': {'79161234567'} is not callable",
        ),
    ],
)
def test_a_name_registered_with_no_function_is_named(register: Any, problem: str) -> None:
    """``add_lookup("vip.level", self.levels)`` where ``levels`` is a field, not a
    method: the problem was inspect's ``'levels.txt' is not a callable object``,
    naming neither the lookup nor the function."""
    from router.rules.registry import Registry

    plugins = Plugins.load(defaults=(), entry_points=False, extra=[Registers(register)])
    registry = Registry()
    assert plugins.register_into(registry) == [problem]
    assert not registry.lookups
    assert not registry.functions


def test_a_registration_that_fails_half_way_leaves_none_of_its_names(
    tmp_path: Path,
) -> None:
    """A plugin that registered a lookup and then failed on its own set-up left
    the lookup usable: rules loaded and called it without the set-up it needed."""
    from datetime import UTC

    from router.rules import load_rules
    from router.rules.registry import Registry

    class HalfWay:
        __name__ = "vip"

        @hookimpl
        def callrouter_register(self, registry: Registry) -> None:
            registry.add_lookup("vip.level", lambda number: "gold")
            registry.add_function("is_vip", lambda number: True)
            registry.add_notify_target("vip")
            registry.set_timezone(UTC)
            raise ValueError("no numbers file")

    builtins = Registry()
    assert Plugins.load(entry_points=False).register_into(builtins) == []
    plugins = Plugins.load(entry_points=False, extra=[HalfWay()])
    registry = Registry()
    assert plugins.register_into(registry) == ["plugin 'vip': callrouter_register: no numbers file"]
    assert registry.lookups.keys() == builtins.lookups.keys()
    assert registry.functions.keys() == builtins.functions.keys()
    assert registry.notify_targets.keys() == builtins.notify_targets.keys()
    assert (registry.owners, registry.timezone) == (builtins.owners, builtins.timezone)
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: a\n    on: call\n    lookup:\n"
        "      level: vip.level(caller.number)\n    do:\n      - hangup: {}\n",
        encoding="utf-8",
    )
    (error,) = load_rules([path], registry).errors
    assert "unknown lookup 'vip.level'" in error.render()


def test_queue_event_takes_the_name_as_make_event_does(ajam_replay: ReplayAsterisk) -> None:
    """``make_event("Hangup", Channel=...)`` and ``queue_event`` side by side in a
    plugin's test: the name as the first argument failed with ``'str' object
    has no attribute 'items'``."""
    queued = ajam_replay.queue_event("Hangup", Channel="PJSIP/101-1", Cause="16")
    assert (queued.name, queued.get("Channel"), queued.get("Cause")) == (
        "Hangup",
        "PJSIP/101-1",
        "16",
    )
    same = ajam_replay.queue_event(Event="Hangup", Channel="PJSIP/101-1", Cause="16")
    assert same.name == queued.name


@pytest.mark.parametrize(
    ("register", "problem"),
    [
        (
            lambda registry: registry.add_function("workhours", lambda: True),
            "plugin 'vip': callrouter_register: 'workhours' is already registered by "
            "plugin 'timefuncs'",
        ),
        (
            lambda registry: registry.add_lookup("directory", lambda number: None),
            "plugin 'vip': callrouter_register: 'directory' is already registered by "
            "plugin 'directory'",
        ),
        (
            lambda registry: registry.add_action(ActionSpec("redirect", ())),
            "plugin 'vip': callrouter_register: action 'redirect' is already registered by "
            "plugin 'actions'",
        ),
        (
            lambda registry: registry.add_notify_target("crm"),
            "plugin 'vip': callrouter_register: notify target 'crm' is already registered "
            "by plugin 'crm'",
        ),
    ],
    ids=["function", "lookup", "action", "notify-target"],
)
def test_a_name_taken_says_which_plugin_has_it(register: Any, problem: str) -> None:
    """A notify target too: every plugin is told every notify, so two owning
    one target would both act on it."""
    from router.rules.registry import Registry

    class Crm:
        __name__ = "crm"

        @hookimpl
        def callrouter_register(self, registry: Any) -> None:
            registry.add_notify_target("crm")

    plugins = Plugins.load(entry_points=False, extra=[Crm(), Registers(register)])
    assert plugins.register_into(Registry()) == [problem]


class Blocks:
    """Plain hooks that wait with ``time.sleep``, as a blocking client does."""

    __name__ = "vip"

    @hookimpl
    def callrouter_call_start(self, call: Any) -> None:
        time.sleep(0.03)

    @hookimpl
    def callrouter_event(self, event: Any) -> None:
        time.sleep(0.03)

    @hookimpl
    def callrouter_present_extensions(self, call: Any) -> None:
        time.sleep(0.03)


async def test_a_plain_hook_that_holds_the_loop_is_named_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain hook that waited (``time.sleep``, ``requests``) held every call's
    routing and every event for that long, and the 2 s cut-off cannot stop
    it: nothing said so, nor which plugin. Said at WARNING, once per hook."""
    from router.testing import load_plugins, make_call, make_event

    monkeypatch.setattr("router.plugins.BLOCKING_WARN", 0.02)
    plugins = load_plugins(Blocks(), defaults=())
    call = make_call(caller="+79161234567", did="74951234567")
    with caplog.at_level("WARNING", logger="router.plugins"):
        for _ in range(2):
            await plugins.call_start(call)
            await plugins.event(make_event("Hangup", Channel=call.waiting_channel), call)
            await plugins.present_extensions(call)
    said = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert [m.split(" held ")[0] for m in said] == [
        "plugin 'vip': callrouter_call_start",
        "plugin 'vip': callrouter_event",
        "plugin 'vip': callrouter_present_extensions",
    ]
    assert "asyncio.to_thread" in said[0]
    # No traceback goes with a warning: it names the function's file and line.
    for message, hook in zip(said, ("call_start", "event", "present_extensions"), strict=True):
        line = getattr(Blocks, f"callrouter_{hook}").__code__.co_firstlineno
        assert message.endswith(f"test_plugin_mistakes.py:{line}"), message
        assert "; defined at " in message, message


async def test_a_quick_or_async_hook_is_not_said_to_hold_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from router.testing import load_plugins, make_call

    class Waits:
        __name__ = "vip"

        @hookimpl
        async def callrouter_call_start(self, call: Any) -> None:
            await asyncio.sleep(0.6)  # awaits: the loop runs meanwhile

    plugins = load_plugins(Waits(), defaults=())
    with caplog.at_level("WARNING", logger="router.plugins"):
        await plugins.call_start(make_call(caller="+79161234567", did="74951234567"))
    assert not [r for r in caplog.records if r.name == "router.plugins"]


class _ReprFails:
    extension = "101"

    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


def _holds_itself() -> dict[str, object]:
    answer: dict[str, object] = {"extension": "101"}
    answer["self"] = answer
    return answer


@pytest.mark.parametrize(
    "answer",
    [pytest.param(_ReprFails, id="repr-raises"), pytest.param(_holds_itself, id="holds-itself")],
)
async def test_a_lookup_answer_json_cannot_hold_still_routes_the_call(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    answer: Callable[[], object],
) -> None:
    """A lookup's answer whose repr raised, or a dict holding itself, failed the
    routing task as the decision record was made (``task route ... failed``):
    no Redirect, no decision line, no ``callrouter_decision``; the call waited
    for the dialplan's fallback. The call is routed and recorded."""

    class Crm:
        __name__ = "crm"

        @hookimpl
        def callrouter_register(self, registry: Any) -> None:
            registry.add_lookup("crm.owner", lambda number: answer())

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: owner\n    on: call\n    lookup:\n"
        "      owner: crm.owner(caller.number)\n    do:\n"
        "      - redirect: {context: callrouter-dial, exten: '102'}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Crm()])
    ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    [redirect] = ajam_replay.sent("Redirect")
    assert redirect["Exten"] == "102"
    assert engine.records[-1].outcome == "executed"


def test_a_factory_that_raises_is_said_as_the_factory_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``make_plugin()`` that raised was said as ``cannot be imported: ...``:
    its author looked for a broken import in a module that imported fine."""
    module = types.ModuleType("callrouter_vip")

    def make_plugin() -> object:
        raise KeyError("VIP_FILE")

    module.make_plugin = make_plugin  # type: ignore[attr-defined]
    entry = types.SimpleNamespace(
        name="vip",
        value="callrouter_vip",
        dist=types.SimpleNamespace(name="callrouter-vip", version="0.1.0"),
        load=lambda: module,
    )
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    with pytest.raises(PluginError) as caught:
        Plugins.load(defaults=())
    said = str(caught.value)
    assert said.startswith("plugin 'vip': its make_plugin() raised KeyError('VIP_FILE'); "), said
    assert "defined at " in said
    # Issue 16: and how to start without it, as for a plugin that cannot be imported.
    assert said.endswith(
        'to start without it: [plugins] disabled = ["vip"] in router.toml, '
        "or pip uninstall callrouter-vip"
    ), said


async def test_a_plain_startup_that_waits_is_not_said_to_hold_the_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Before the first event is read (and after routing stopped) a plain wait
    delays the start or the stop only: a driver's connect is fine there."""
    from router.testing import StubEngine, load_plugins

    class Connects:
        __name__ = "vip"

        @hookimpl
        def callrouter_startup(self, engine: Any) -> None:
            time.sleep(0.03)

        @hookimpl
        def callrouter_shutdown(self, engine: Any) -> None:
            time.sleep(0.03)

    monkeypatch.setattr("router.plugins.BLOCKING_WARN", 0.02)
    plugins = load_plugins(Connects(), defaults=())
    stub = StubEngine(tmp_path)
    with caplog.at_level("WARNING", logger="router.plugins"):
        await plugins.startup(stub)
        await plugins.shutdown(stub)
    assert not [r for r in caplog.records if r.name == "router.plugins"]


async def test_a_plain_metrics_hook_that_waits_is_not_said_to_hold_the_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``callrouter_metrics`` runs once, in the engine's setup, before
    ``callrouter_startup`` (and in ``callrouter check``): no call is routed and
    no event read yet, so "held the event loop ... no call was routed" is false."""
    from router.metrics import Metrics
    from router.testing import load_plugins

    class Families:
        __name__ = "vip"

        @hookimpl
        def callrouter_metrics(self, metrics: Any) -> None:
            time.sleep(0.03)  # a collector's registration, say

    monkeypatch.setattr("router.plugins.BLOCKING_WARN", 0.02)
    plugins = load_plugins(Families(), defaults=())
    with caplog.at_level("WARNING", logger="router.plugins"):
        await plugins.metrics(Metrics())
    assert not [r for r in caplog.records if r.name == "router.plugins"]


@pytest.mark.parametrize("page", ["docs/operations.md", "docs/ru/operations.md"])
def test_the_upgrade_page_quotes_what_check_says_of_a_plugin_with_a_defaulted_hook(
    page: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """operations.md "From an earlier version" (+ru) listed what an upgrade asks of the
    dialplan, manager.conf, state_dir and 1C, not that an installed plugin with such a
    hook, which loaded before, now stops the start: step 2's check is what names it."""
    import re

    from router.cli import main

    root = Path(__file__).resolve().parents[2]
    text = " ".join((root / page).read_text(encoding="utf-8").split())
    upgrade = text[text.index("### ") :]
    [quoted] = re.findall(r"`(callrouter check: error: plugin 'vip'[^`]*) \.\.\.`", upgrade)
    entry = types.SimpleNamespace(
        name="vip",
        value="callrouter_vip",
        dist=types.SimpleNamespace(name="callrouter-vip", version="0.1.0"),
        load=DefaultedArgument,
    )
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "u"\nsecret = "s"\n'
        '[router]\nrules = ["rules.yaml"]\n',
        encoding="utf-8",
    )
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n    do:\n      - hangup: {}\n",
        encoding="utf-8",
    )
    assert main(["check", "--config", str(config)]) != 0
    said = capsys.readouterr()
    assert quoted in " ".join((said.out + said.err).split())
