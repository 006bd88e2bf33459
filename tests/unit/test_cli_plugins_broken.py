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
from pathlib import Path
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


#: A router.toml for ``--config``: an AMI user, the secret from the environment.
CONFIG = """\
[asterisk]
url = "tcp://127.0.0.1:5038"
username = "router"
secret_env = "CALLROUTER_SECRET"
"""


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


def test_the_listing_with_a_config_shows_the_others_and_names_each_broken_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--config`` refused the whole listing with the first broken plugin's
    error while the listing without it went on: the same now, the others
    listed with what they register, the broken ones named, exit 1."""
    config = tmp_path / "router.toml"
    config.write_text(CONFIG, encoding="utf-8")
    assert main(["plugins", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    heads = {
        line.split()[0]: line
        for line in captured.out.splitlines()
        if line and not line[0].isspace()
    }
    assert heads["crm"].split()[:3] == ["crm", "callrouter-crm", "9.9"]
    assert heads["vip"].split()[:3] == ["vip", "callrouter-vip", "9.9"]
    assert heads["directory"].split()[1] == "built-in"
    for name in ("broken", "factory", "wrapped"):
        assert heads[name].endswith("[broken: not loaded (its error below)]"), heads[name]
    errors = [e for e in captured.err.splitlines() if ": error: " in e]
    assert len(errors) == 3, captured.err
    assert errors[0].startswith(IMPORT_ERROR), errors[0]
    assert errors[1].startswith("callrouter plugins: error: plugin 'factory': its make_plugin()")
    assert errors[2].startswith("callrouter plugins: error: plugin 'wrapped': ")


def test_the_json_listing_with_a_config_gives_the_broken_plugin_s_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "router.toml"
    config.write_text(CONFIG, encoding="utf-8")
    assert main(["plugins", "--config", str(config), "--json"]) == 1
    captured = capsys.readouterr()
    listed = {entry["name"]: entry for entry in json.loads(captured.out)}
    assert listed["crm"]["state"] == "loaded"
    assert "error" not in listed["crm"]
    broken = listed["broken"]
    assert (broken["state"], broken["version"], broken["hooks"]) == ("broken", "9.9", [])
    assert broken["error"].startswith("plugin 'broken': cannot be imported: ImportError(")
    assert next(e for e in captured.err.splitlines() if ": error: " in e).startswith(IMPORT_ERROR)


def test_run_s_plugins_for_a_config_still_refuse_a_broken_plugin(tmp_path: Path) -> None:
    from router.config import load_config

    config = tmp_path / "router.toml"
    config.write_text(CONFIG, encoding="utf-8")
    with pytest.raises(PluginError, match="plugin 'broken': cannot be imported"):
        Plugins.for_config(load_config(config, environ={"CALLROUTER_SECRET": "s"}))
