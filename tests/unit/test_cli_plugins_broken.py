"""``callrouter plugins`` lists the plugins that load when one is broken
(issue 16).

One installed plugin that could not be imported (a missing dependency), whose
``make_plugin()`` raised, or that was refused as registered made the whole
listing one error line: the versions and hooks of the working plugins, which
an administrator asks for to find what is wrong, went unsaid. The others are
listed, the broken one is named in the listing and its error said on stderr,
and the exit code is 1. ``run`` still refuses to start without it.
"""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from router import hookimpl
from router.cli import main
from router.errors import PluginError
from router.plugins import Plugins
from tests.unit.test_plugin_loading import Counter, FakeEntryPoint

IMPORT_ERROR = (
    "callrouter plugins: error: plugin 'broken': cannot be imported: ImportError(\"no module "
    "named 'missing_dependency'\"); raised at tests/unit/test_plugin_loading.py:"
)


class Wrapped:
    @hookimpl(wrapper=True)
    def callrouter_call_end(self, call: Any) -> Any:
        return (yield)


def _factory_fails() -> types.ModuleType:
    module = types.ModuleType("callrouter_factory")

    def make_plugin() -> object:
        raise RuntimeError("no licence file")

    module.make_plugin = make_plugin  # type: ignore[attr-defined]
    return module


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [
            FakeEntryPoint("crm", Counter()),
            FakeEntryPoint("broken", None, fails=True),
            FakeEntryPoint("factory", _factory_fails()),
            FakeEntryPoint("wrapped", Wrapped()),
            FakeEntryPoint("vip", Counter()),
        ],
    )


def test_the_listing_shows_the_others_and_names_each_broken_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins"]) == 1
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()}
    assert rows["crm"].split() == ["crm", "9.9", "register"]
    assert rows["vip"].split() == ["vip", "9.9", "register"]
    assert rows["directory"].split()[1] == "built-in"
    for name in ("broken", "factory", "wrapped"):
        assert rows[name].split()[1:] == [
            "9.9",
            "BROKEN:",
            "not",
            "loaded",
            "(its",
            "error",
            "below)",
        ]
    errors = captured.err.splitlines()
    assert len(errors) == 3, errors
    assert errors[0].startswith(IMPORT_ERROR), errors[0]
    assert errors[1].startswith(
        "callrouter plugins: error: plugin 'factory': its make_plugin() raised "
        "RuntimeError('no licence file')"
    ), errors[1]
    assert errors[2].startswith(
        "callrouter plugins: error: plugin 'wrapped': callrouter_call_end is a pluggy wrapper"
    ), errors[2]


def test_the_json_listing_gives_the_broken_plugin_s_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "--json"]) == 1
    captured = capsys.readouterr()
    listed = {entry["name"]: entry for entry in json.loads(captured.out)}
    assert listed["crm"] == {
        "name": "crm",
        "version": "9.9",
        "builtin": False,
        "hooks": ["callrouter_register"],
    }
    broken = listed["broken"]
    assert (broken["version"], broken["hooks"]) == ("9.9", [])
    assert broken["error"].startswith("plugin 'broken': cannot be imported: ImportError(")
    assert "error" not in listed["vip"]
    assert captured.err.splitlines()[0].startswith(IMPORT_ERROR)


def test_without_a_broken_plugin_the_listing_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points", lambda group: [FakeEntryPoint("crm", Counter())]
    )
    assert main(["plugins"]) == 0
    assert capsys.readouterr().err == ""


def test_run_still_refuses_a_broken_plugin() -> None:
    """Only the listing goes on: an engine must not start without a plugin
    its rules may need."""
    with pytest.raises(PluginError, match="plugin 'broken': cannot be imported"):
        Plugins.load()
