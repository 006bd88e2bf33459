"""``callrouter plugins --config PATH`` / ``--verbose`` lists, per plugin, what it
registers for the rules with that router.toml (issue 16): a plugin author or
an administrator saw the functions, lookups and actions only through a
misspelling's did-you-mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router import ActionSpec, ParamSpec, Registry, __version__, hookimpl
from router.cli import main
from tests.unit.test_plugin_loading import FakeEntryPoint


class Crm:
    """A plugin registering one of each kind."""

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def owner(number: str, fresh: bool = False) -> dict[str, Any]:
            """The manager who owns the caller."""
            return {}

        registry.add_lookup("crm.owner", owner)
        registry.add_function("crm_vip", lambda number: False, doc="Is the number a VIP?")
        registry.add_action(
            ActionSpec("crm_tag", (ParamSpec("level", required=True), ParamSpec("note")))
        )
        registry.add_notify_target("crm", "Tell the CRM.")

    @hookimpl
    def callrouter_execute(self, action: Any, call: Any, engine: Any) -> str | None:
        return None

    @hookimpl
    def callrouter_notify(self, target: str, params: Any, call: Any) -> None:
        return None


class Broken:
    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_lookup("broken.x", lambda: None)
        raise RuntimeError("no database")


class Vip:
    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_lookup("vip.level", lambda number: None)


class Quiet:
    """Registers nothing without its [plugins.quiet] table, as the example plugin."""

    enabled = False

    @hookimpl
    def callrouter_configure(self, settings: dict[str, Any]) -> None:
        self.enabled = bool(settings)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        if self.enabled:
            registry.add_function("quiet_on", lambda: True)


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [
            FakeEntryPoint("crm", Crm()),
            FakeEntryPoint("broken", Broken()),
            FakeEntryPoint("vip", Vip()),
            FakeEntryPoint("quiet", Quiet()),
        ],
    )


def settings(tmp_path: Path, plugins: str = "") -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\n'
        f'secret = "s"\n[plugins]\n{plugins}'
    )
    return path


def blocks(out: str) -> dict[str, list[str]]:
    return {block.split()[0]: block.splitlines() for block in out.strip().split("\n\n")}


def test_config_lists_each_plugins_functions_lookups_actions_and_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = settings(tmp_path, 'disabled = ["vip", "numbers"]\n')
    assert main(["plugins", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    listed = blocks(out)
    assert listed["crm"] == [
        "crm  callrouter-crm 9.9",
        "  hooks: execute, notify, register",
        "  functions: crm_vip(number)",
        "  lookups: crm.owner(number, fresh=False)",
        "  actions: crm_tag(level*, note)",
        "  notify targets: crm",
    ]
    # Built-ins are plugins too, with callrouter's own version.
    assert listed["timefuncs"][0] == f"timefuncs  built-in (callrouter {__version__})"
    assert (
        "  functions: is_holiday(dates, tz=None), today(tz=None),"
        in (listed["timefuncs"][2].split(" weekday")[0])
    )
    assert listed["directory"][-1] == "  lookups: directory(number)"
    # A plugin router.toml leaves out: said, with where, and what it would give.
    assert listed["vip"] == [
        f"vip  callrouter-vip 9.9  [left out: disabled in {path}:6 [plugins] disabled]",
        "  lookups (would register): vip.level",
    ]
    assert listed["numbers"][1].startswith("  functions (would register): digits, ")
    # A plugin whose register failed: its names are not there for rules, and why.
    assert listed["broken"] == [
        "broken  callrouter-broken 9.9  [failed: callrouter_register: no database]",
        "  hooks: register",
        "  registers no names for rules",
    ]
    assert err == ""


def test_verbose_reads_router_toml_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings(tmp_path, 'enabled = ["crm"]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["plugins", "--verbose"]) == 0
    listed = blocks(capsys.readouterr().out)
    assert listed["crm"][0] == "crm  callrouter-crm 9.9"
    assert listed["vip"][0] == (
        "vip  callrouter-vip 9.9  [left out: not enabled in router.toml:6 [plugins] enabled]"
    )


def test_json_has_the_names_with_their_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--json", "--config", str(settings(tmp_path))]) == 0
    data = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    crm = data["crm"]
    assert crm["distribution"] == "callrouter-crm"
    assert crm["version"] == "9.9"
    assert crm["state"] == "loaded"
    assert crm["lookups"] == [
        {
            "name": "crm.owner",
            "arguments": "(number, fresh=False)",
            "doc": "The manager who owns the caller.",
        }
    ]
    assert crm["functions"] == [
        {"name": "crm_vip", "arguments": "(number)", "doc": "Is the number a VIP?"}
    ]
    assert crm["actions"][0]["params"] == [
        {"name": "level", "type": "str", "required": True},
        {"name": "note", "type": "str", "required": False},
    ]
    assert crm["notify_targets"] == [{"name": "crm", "doc": "Tell the CRM."}]
    assert data["broken"]["state"] == "failed"
    assert data["timefuncs"]["distribution"] == "callrouter"
    assert data["timefuncs"]["builtin"] is True


def test_a_bad_router_toml_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = settings(tmp_path, 'disabled = ["vipp"]\n')
    assert main(["plugins", "--config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"callrouter plugins: error: {path}:6: [plugins] disabled: 'vipp'")
    assert "(did you mean 'vip'?)" in err


def test_without_the_options_the_listing_is_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No router.toml read: a broken one here changes nothing."""
    (tmp_path / "router.toml").write_text("not toml [")
    monkeypatch.chdir(tmp_path)
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "crm              9.9         execute, notify, register" in lines


def test_a_plugin_that_registered_nothing_without_its_table_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "--config", str(settings(tmp_path))]) == 0
    assert blocks(capsys.readouterr().out)["quiet"] == [
        "quiet  callrouter-quiet 9.9  [loaded: registered nothing; router.toml gives it no "
        "settings ([plugins.quiet]), which it may need]",
        "  hooks: configure, register",
        "  registers no names for rules",
    ]
    path = settings(tmp_path, "[plugins.quiet]\non = true\n")
    assert main(["plugins", "--config", str(path)]) == 0
    assert blocks(capsys.readouterr().out)["quiet"] == [
        "quiet  callrouter-quiet 9.9",
        "  hooks: configure, register",
        "  functions: quiet_on()",
    ]


class Sly:
    """A plugin whose doc holds a bidi override and a C1 CSI (U+009B)."""

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_function("sly_vip", lambda number: False, doc="VIP \u202egnp.\x9b2J")


def test_json_writes_a_plugins_control_characters_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json kept what json leaves raw with ensure_ascii off (a bidi override,
    a C1 control that some terminals take for CSI) as it was on the terminal:
    written as its \\uXXXX escape, the same value to a JSON reader."""
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points", lambda group: [FakeEntryPoint("sly", Sly())]
    )
    assert main(["plugins", "--json", "--config", str(settings(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "\u202e" not in out
    assert "\x9b" not in out
    assert "\\u202e" in out
    data = {p["name"]: p for p in json.loads(out)}
    assert data["sly"]["functions"][0]["doc"] == "VIP \u202egnp.\x9b2J"
