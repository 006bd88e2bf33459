"""How plugins are found: built-ins and entry points, objects and module factories."""

from __future__ import annotations

import tomllib
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from router import hookimpl
from router.errors import PluginError
from router.plugins import Plugins


class FakeEntryPoint:
    def __init__(self, name: str, obj: Any, *, fails: bool = False) -> None:
        self.name = name
        self._obj = obj
        self._fails = fails
        self.value = f"callrouter_{name}"
        self.dist = types.SimpleNamespace(name=f"callrouter-{name}", version="9.9")

    def load(self) -> Any:
        if self._fails:
            raise ImportError("no module named 'missing_dependency'")
        return self._obj


class Counter:
    @hookimpl
    def callrouter_register(self, registry: Any) -> None:
        return None


def module_with_factory(name: str, made: list[object]) -> types.ModuleType:
    module = types.ModuleType(name)

    def make_plugin() -> Counter:
        instance = Counter()
        made.append(instance)
        return instance

    module.make_plugin = make_plugin  # type: ignore[attr-defined]
    return module


def test_module_factory_gives_each_load_its_own_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[object] = []
    module = module_with_factory("callrouter_fake", made)
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points", lambda group: [FakeEntryPoint("fake", module)]
    )
    first, second = Plugins.load(), Plugins.load()
    assert len(made) == 2
    assert first.pm.get_plugin("fake") is made[0]
    assert second.pm.get_plugin("fake") is made[1]
    info = {i.name: i for i in first.info()}
    assert info["fake"].version == "9.9"
    assert not info["fake"].builtin
    assert info["directory"].builtin


def test_plain_object_entry_point_and_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = Counter()
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points", lambda group: [FakeEntryPoint("obj", obj)]
    )
    assert Plugins.load().pm.get_plugin("obj") is obj
    assert Plugins.load(disabled=["obj", "directory"]).pm.get_plugin("obj") is None
    assert Plugins.load(disabled=["directory"]).pm.get_plugin("directory") is None


def test_unimportable_plugin_stops_the_start_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [FakeEntryPoint("broken", None, fails=True)],
    )
    with pytest.raises(PluginError, match="plugin 'broken': cannot be imported"):
        Plugins.load()


class Exploding:
    @hookimpl
    def callrouter_call_start(self, call: Any) -> None:
        raise RuntimeError("boom")

    @hookimpl
    def callrouter_call_end(self, call: Any) -> None:
        raise RuntimeError("boom")

    @hookimpl
    def callrouter_decision(self, call: Any) -> None:
        raise RuntimeError("boom")


async def test_failure_logged_once_per_call_and_hook_even_by_hooks_after_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A decision that completes after the caller hung up runs its hook late:
    the plugin's failure in that hook for that call is still logged only once.
    (Each hook's failure is its own line: once per call whichever hook hid a
    second bug behind the first.)"""
    from router.calls import Call

    plugins = Plugins.load(defaults=(), entry_points=False, extra=[Exploding()])
    call = Call("L1", 0.0)
    await plugins.call_start(call)
    await plugins.call_end(call)
    await plugins.decision(call, None, None, "executed")
    await plugins.call_start(call)
    await plugins.decision(call, None, None, "executed")
    other = Call("L2", 0.0)
    await plugins.call_start(other)
    messages = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert [m for m in messages if "(call L1)" in m] == [
        f"plugin 'Exploding' failed in {hook} (call L1): RuntimeError('boom')"
        for hook in ("callrouter_call_start", "callrouter_call_end", "callrouter_decision")
    ]
    assert len([m for m in messages if "(call L2)" in m]) == 1


class NamedCounter(Counter):
    def __init__(self, name: str) -> None:
        self.__name__ = name


def distribution_entry_point(dist: str, name: str, value: str) -> FakeEntryPoint:
    entry = FakeEntryPoint(name, Counter())
    entry.dist = types.SimpleNamespace(name=dist, version="1.0")
    entry.value = value
    return entry


@pytest.mark.parametrize(
    ("entries", "extra", "message"),
    [
        (
            [("callrouter-acme", "acme", "callrouter_acme"), ("acme-fork", "acme", "acme_fork")],
            [],
            "plugin 'acme': two plugins have this name: callrouter-acme 1.0 (entry point "
            "acme = callrouter_acme) and acme-fork 1.0 (entry point acme = acme_fork)",
        ),
        (
            [("callrouter-dir", "directory", "callrouter_dir")],
            [],
            "plugin 'directory': two plugins have this name: the built-in "
            "router.builtin.directory and callrouter-dir 1.0 (entry point "
            "directory = callrouter_dir)",
        ),
        (
            [("callrouter-acme", "acme", "callrouter_acme")],
            ["acme"],
            "plugin 'acme': two plugins have this name: callrouter-acme 1.0 (entry point "
            f"acme = callrouter_acme) and the object {__name__}.NamedCounter",
        ),
    ],
    ids=["two-distributions", "a-built-in", "a-test-object"],
)
def test_two_plugins_with_one_name_are_both_named(
    monkeypatch: pytest.MonkeyPatch,
    entries: list[tuple[str, str, str]],
    extra: list[str],
    message: str,
) -> None:
    """ "registered twice (two packages with one name?)" left the administrator
    guessing which packages; the error names both, and what to do."""
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [distribution_entry_point(*entry) for entry in entries],
    )
    with pytest.raises(PluginError) as raised:
        Plugins.load(extra=[NamedCounter(name) for name in extra])
    assert str(raised.value) == f"{message}; each plugin needs a name of its own"


def test_unimportable_plugin_names_its_failing_line_and_how_to_start_without_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 16: ``cannot be imported: ModuleNotFoundError(...)`` said neither
    which line of the plugin imports the missing module nor how to start
    callrouter until it is fixed (the whole start stops)."""
    package = tmp_path / "callrouter_hp45_broken"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""A plugin whose dependency is missing."""\nimport callrouter_hp45_missing_dependency\n',
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = metadata.EntryPoint(name="broken", value="callrouter_hp45_broken", group="callrouter")
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    with pytest.raises(PluginError) as raised:
        Plugins.load()
    message = str(raised.value)
    assert message.startswith("plugin 'broken': cannot be imported: ModuleNotFoundError("), message
    assert f"; raised at {package / '__init__.py'}:2;" in message, message
    assert message.endswith('to start without it: [plugins] disabled = ["broken"] in router.toml')


def test_unimportable_plugin_names_its_distribution_to_uninstall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [FakeEntryPoint("broken", None, fails=True)],
    )
    with pytest.raises(PluginError, match=r"or pip uninstall callrouter-broken$"):
        Plugins.load()


def test_a_plugin_module_that_is_not_there_names_no_line_of_callrouter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hattack45: an entry point naming a module that is not installed was
    said as "raised at .../router/plugins.py:1015", callrouter's own call of
    ep.load(), which sent the plugin's author into callrouter's code."""
    entry = metadata.EntryPoint(
        name="gone", value="callrouter_hattack45_not_installed", group="callrouter"
    )
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    with pytest.raises(PluginError) as raised:
        Plugins.load()
    message = str(raised.value)
    assert "No module named 'callrouter_hattack45_not_installed'" in message, message
    assert "raised at" not in message, message


def test_the_lines_to_paste_quote_a_hostile_plugins_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hattack45: an entry point name holding a quote and an ESC gave the line
    ``disabled = ["x"y<ESC>"]`` (no TOML, the ESC raw), and a distribution
    named ``evil; rm -rf ~`` the line ``pip uninstall evil; rm -rf ~`` to
    paste into a root shell. The name is quoted as TOML, and a distribution
    name pip could not take is not offered."""
    entry = FakeEntryPoint('x"y\x1b]0;T\x07', None, fails=True)
    entry.dist = types.SimpleNamespace(name="evil; rm -rf ~\n X", version="1")
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    with pytest.raises(PluginError) as raised:
        Plugins.load()
    message = str(raised.value)
    assert message.endswith(
        'to start without it: [plugins] disabled = ["x\\"y\\u001b]0;T\\u0007"] in router.toml'
    ), message
    line = message.rsplit("[plugins] ", 1)[1].removesuffix(" in router.toml")
    assert tomllib.loads(line)["disabled"] == [entry.name]
    assert "pip uninstall" not in message


def test_the_plugin_list_writes_a_distributions_escapes_as_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hattack45: `callrouter plugins` printed an installed plugin's entry
    point name and version raw: an ESC sequence in them (a distribution's
    metadata) retitled or repainted the admin's terminal."""
    from router.cli import main

    entry = FakeEntryPoint("x\x1b]0;T\x07", Counter())
    entry.dist = types.SimpleNamespace(name="evil", version="1.0\x1b[32m")
    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [entry])
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out, out
    assert "\x07" not in out, out
    (line,) = [line for line in out.splitlines() if line.startswith("x\\x1b]0;T\\x07 ")]
    assert line.endswith("  1.0\\x1b[32m  register"), line
