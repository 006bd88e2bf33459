"""A rule naming a left-out or broken plugin's name says why it is unknown (issue 16).

"unknown lookup 'crm.owner'" alone sends the administrator looking for a
typo when the plugin is installed and ``[plugins] enabled`` leaves it out,
``disabled`` names it, or its ``callrouter_register`` failed: ``check`` and
``run`` name the plugin and the line of router.toml that left it out, or its
error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from router import Registry, hookimpl
from router.cli import main
from router.config import load_config
from router.engine import Engine
from tests.unit.test_plugin_loading import Counter, FakeEntryPoint

RULES = """version: 1
rules:
  - name: vip
    on: call
    if: is_vip(caller.number)
    do: [hangup]
  - name: owner
    on: call
    lookup:
      owner: crm.owner(caller.number)
    when: owner
    do:
      - redirect: {context: callrouter-dial, exten: "{owner}"}
  - name: log
    on: call
    continue: true
    do:
      - notify: {plugin: crm, event: routed}
"""


class Crm:
    """An installed CRM plugin: a function, a lookup and a notify target."""

    def __init__(self, *, fails: bool = False) -> None:
        self.fails = fails

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_function("is_vip", lambda number: False, doc="A VIP?")
        if self.fails:
            raise RuntimeError("[plugins.crm] url is not set")
        registry.add_lookup("crm.owner", self.owner)
        registry.add_notify_target("crm", "the CRM's call log")

    async def owner(self, number: str) -> str:
        return "101"

    @hookimpl
    def callrouter_notify(self, target: str) -> None:
        return None  # the CRM's call log: a notify target needs its hook


def install(monkeypatch: pytest.MonkeyPatch, crm: Any) -> None:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [FakeEntryPoint("onec", Counter()), crm],
    )


def write(tmp_path: Path, plugins: str) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "inbound.yaml").write_text(RULES, encoding="utf-8")
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["rules"]\n[plugins]\n{plugins}',
        encoding="utf-8",
    )
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["check", "--config", str(path)]) == 1
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("plugins", "why"),
    [
        ('enabled = ["onec"]\n', "is installed but not enabled in {toml}:8 [plugins] enabled"),
        (
            'enabled = []\n# not now\ndisabled = ["crm"]\n',
            "is installed but disabled in {toml}:10 [plugins] disabled",
        ),
    ],
    ids=["not-enabled", "disabled"],
)
def test_check_names_the_plugin_router_toml_leaves_out(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    plugins: str,
    why: str,
) -> None:
    install(monkeypatch, FakeEntryPoint("crm", Crm()))
    path = write(tmp_path, plugins)
    rules = tmp_path / "rules" / "inbound.yaml"
    because = f"(plugin 'crm' {why.format(toml=path)})"
    assert check(path, capsys) == [
        f"{rules}:5: rule 'vip': unknown function 'is_vip' {because}",
        f"{rules}:10: rule 'owner': unknown lookup 'crm.owner' {because}",
        f"{rules}:18: rule 'log': action 'notify': no plugin 'crm' takes notifications {because}",
        f"{path} ({rules.parent}): 3 errors, 0 valid rules",
    ]
    argv = ["explain", "--config", str(path), "--caller", "1", "--did", "2"]
    assert main([*argv, "--lookup", "crm.owner=1"]) == 2
    said = capsys.readouterr().err  # explain's errors go to stderr
    assert f"callrouter explain: error: --lookup: unknown lookup 'crm.owner' {because}" in said


def test_a_left_out_plugin_that_cannot_be_imported_is_named_by_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeEntryPoint("crm", None, fails=True))
    path = write(tmp_path, 'enabled = ["onec"]\n')
    out = check(path, capsys)
    because = f"(plugin 'crm' is installed but not enabled in {path}:8 [plugins] enabled)"
    assert f"unknown lookup 'crm.owner' {because}" in out[1]
    assert out[0].endswith("unknown function 'is_vip'")  # no plugin to say whose it is


def test_check_and_run_name_a_plugin_whose_registration_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeEntryPoint("crm", Crm(fails=True)))
    path = write(tmp_path, "")
    out = check(path, capsys)
    because = "(plugin 'crm' failed to load: callrouter_register: [plugins.crm] url is not set)"
    assert out[0] == ("callrouter: plugin 'crm': callrouter_register: [plugins.crm] url is not set")
    # is_vip, registered before the failure, is not kept, and named as the plugin's.
    assert out[1].endswith("rule 'vip': unknown function 'is_vip' " + because)
    assert out[2].endswith("rule 'owner': unknown lookup 'crm.owner' " + because)
    assert out[3].endswith("no plugin 'crm' takes notifications " + because)
    # callrouter run refuses to start with the same words.
    engine = Engine(load_config(path))
    assert asyncio.run(engine.setup()).errors
    assert any(
        problem.endswith("unknown lookup 'crm.owner' " + because)
        for problem in engine.setup_problems
    )


def test_a_disabled_builtin_is_named_and_typos_still_get_did_you_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, FakeEntryPoint("crm", Crm()))
    path = write(tmp_path, 'disabled = ["directory"]\n')
    (tmp_path / "rules" / "inbound.yaml").write_text(
        "version: 1\nrules:\n  - name: d\n    on: call\n    lookup:\n"
        "      entry: directory(caller.number)\n      owner: crm.ownr(caller.number)\n"
        "    do: [hangup]\n",
        encoding="utf-8",
    )
    out = check(path, capsys)
    assert out[0].endswith(
        "unknown lookup 'directory' (plugin 'directory' is built in but disabled in "
        f"{path}:8 [plugins] disabled)"
    )
    assert out[1].endswith("unknown lookup 'crm.ownr' (did you mean 'crm.owner'?)")


class _Counted(FakeEntryPoint):
    """An entry point that counts its imports."""

    loads = 0

    def load(self) -> Any:
        type(self).loads += 1
        return super().load()


def test_a_left_out_plugin_is_imported_only_to_explain_an_unknown_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plugin left out is often one that is broken or slow to import: rules
    that name nothing unknown never import it (docs/reference/config.md)."""
    monkeypatch.setattr(_Counted, "loads", 0)
    install(monkeypatch, _Counted("crm", Crm()))
    path = write(tmp_path, 'disabled = ["crm"]\n')
    (tmp_path / "rules" / "inbound.yaml").write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n    do: [hangup]\n", encoding="utf-8"
    )
    assert main(["check", "--config", str(path)]) == 0
    assert _Counted.loads == 0
    (tmp_path / "rules" / "inbound.yaml").write_text(RULES, encoding="utf-8")
    check(path, capsys)
    assert _Counted.loads == 1  # once, for the three names


class CrmListening(Crm):
    """The CRM plugin reading events, one of them misspelt."""

    @hookimpl
    def callrouter_wanted_events(self) -> list[str]:
        return ["Hangupp", "Newchannel"]

    @hookimpl
    def callrouter_event(self, event: Any) -> None:
        return None


def test_check_says_a_misspelt_wanted_event_before_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning came only in run's log: the plugin's callrouter_event then
    never heard of a Hangup, and check had said the set-up was clean."""
    install(monkeypatch, FakeEntryPoint("crm", CrmListening()))
    path = write(tmp_path, "")
    assert main(["check", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "callrouter check: warning: plugin 'crm': callrouter_wanted_events names "
        "'Hangupp' (did you mean 'Hangup'?), an event Asterisk 22 does not document "
        "(callrouter actions --events lists them), so its callrouter_event may never be "
        "called for it; write an event of a module Asterisk does not document as a glob, "
        "'Hangupp*'"
    ]
    assert captured.out.endswith("3 rules OK\n")


class InertCrm(Crm):
    """Inert without its ``[plugins.crm]`` table, as docs/plugins.md asks of a
    plugin that changes routing: it registers nothing then."""

    def __init__(self) -> None:
        super().__init__()
        self.configured = False

    @hookimpl
    def callrouter_configure(self, settings: Any) -> None:
        self.configured = bool(settings)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        if self.configured:
            super().callrouter_register(registry)


@pytest.mark.parametrize(
    ("table", "why"),
    [
        (
            "",
            "is loaded but registered nothing; router.toml gives it no settings "
            "([plugins.crm]), which it may need",
        ),
        (
            "[plugins.crm]\n",
            "is loaded but registered nothing; router.toml gives it no settings "
            "([plugins.crm]), which it may need",
        ),
    ],
    ids=["no-table", "empty-table"],
)
def test_check_names_a_loaded_plugin_that_registered_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    table: str,
    why: str,
) -> None:
    """An inert plugin's names were "unknown lookup 'crm.owner'" alone, read as
    a typo, while the fix is its table in router.toml."""
    install(monkeypatch, FakeEntryPoint("crm", InertCrm()))
    path = write(tmp_path, table)
    out = check(path, capsys)
    assert out[1].endswith(f"unknown lookup 'crm.owner' (plugin 'crm' {why})"), out
    assert out[2].endswith(f"no plugin 'crm' takes notifications (plugin 'crm' {why})"), out
    assert out[0].endswith("unknown function 'is_vip'"), out  # no prefix: not the plugin's


def test_a_configured_plugin_that_registered_nothing_is_named_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Nothing:
        @hookimpl
        def callrouter_register(self, registry: Registry) -> None:
            return None

    install(monkeypatch, FakeEntryPoint("crm", Nothing()))
    path = write(tmp_path, "")
    path.write_text(path.read_text(encoding="utf-8") + "[plugins.crm]\nurl = 'x'\n")
    out = check(path, capsys)
    assert out[1].endswith(
        "unknown lookup 'crm.owner' (plugin 'crm' is loaded but registered nothing)"
    ), out


def test_check_warns_of_a_registered_name_no_hook_carries_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An action kind registered without ``callrouter_execute`` ended every
    rule's action ``no-executor``, and a notify target without
    ``callrouter_notify`` told no one, while check said the rules were OK and
    run said nothing at start. Both are said, once per reload at most."""
    from router import ActionSpec, ParamSpec

    class Forgetful:
        @hookimpl
        def callrouter_register(self, registry: Registry) -> None:
            registry.add_lookup("crm.owner", self.owner)
            registry.add_notify_target("crm")
            registry.add_function("is_vip", lambda number: False)
            registry.add_action(ActionSpec("crm_tag", (ParamSpec("level"),)))

        async def owner(self, number: str) -> str:
            return "101"

    install(monkeypatch, FakeEntryPoint("crm", Forgetful()))
    path = write(tmp_path, "")
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().err
    assert (
        "warning: plugin 'crm': registers the action 'crm_tag' but implements no "
        "callrouter_execute, so every 'crm_tag' would end no-executor; add the hook, or let "
        "the plugin that carries it out register it\n"
    ) in out, out
    assert (
        "warning: plugin 'crm': registers the notify target 'crm' but implements no "
        "callrouter_notify, so every notify to 'crm' would reach no one"
    ) in out, out
    assert out.count("warning: plugin 'crm'") == 2, out


def test_the_builtins_and_the_onec_plugin_carry_out_what_they_register() -> None:
    from router.plugins import Plugins
    from router.rules.registry import Registry as Fresh

    plugins = Plugins.load(entry_points=True)
    plugins.register_into(Fresh())
    assert plugins.registration_warnings == []


def test_a_left_out_plugin_inert_without_its_table_is_asked_with_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plugin disabled with its ``[plugins.crm]`` table written was asked for
    its names unconfigured, so it registered none: ``is_vip`` (no ``crm.``
    prefix) was an unknown function with no word of the plugin, and
    ``plugins --config`` said it "would register no names for rules". It is
    configured with its table first, as run would."""
    install(monkeypatch, FakeEntryPoint("crm", InertCrm()))
    path = write(tmp_path, 'disabled = ["crm"]\n[plugins.crm]\nurl = "http://crm"\n')
    rules = tmp_path / "rules" / "inbound.yaml"
    because = f"(plugin 'crm' is installed but disabled in {path}:8 [plugins] disabled)"
    out = check(path, capsys)
    assert out[0] == f"{rules}:5: rule 'vip': unknown function 'is_vip' {because}", out
    assert main(["plugins", "--config", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "  functions (would register): is_vip\n" in listed, listed
    assert "  lookups (would register): crm.owner\n" in listed, listed
