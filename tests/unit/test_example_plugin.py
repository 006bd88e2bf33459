"""The example plugin package (examples/plugin-vip-greeting) from callrouter's own suite.

The package is not installed here (an installed plugin would be loaded by
every test through its entry point); its module is imported by path and
registered as an extra plugin, exactly as the entry point would register it.
Its own tests run with it installed: see its README.
"""

from __future__ import annotations

import importlib.util
import logging
import tomllib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from router import ConfigError
from router.config import AsteriskSettings, Config, PluginSettings
from router.engine import Engine
from router.plugins import Plugins
from router.rules.registry import Registry

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

EXAMPLE = Path(__file__).parents[2] / "examples" / "plugin-vip-greeting"
VIP = "8 (916) 123-45-67"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "callrouter_vip_example", EXAMPLE / "callrouter_vip" / "__init__.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vip = load_example()


def config(settings: dict[str, dict[str, object]] | None = None) -> Config:
    return Config(
        asterisk=AsteriskSettings(url="http://pbx.test/asterisk", username="router", secret="x"),
        plugins=PluginSettings(settings=settings or {}),
    )


def test_entry_point_names_the_module_with_a_per_engine_factory() -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == "callrouter-vip"
    entry = project["project"]["entry-points"]["callrouter"]
    assert entry == {"vip": "callrouter_vip"}
    first, second = vip.make_plugin(), vip.make_plugin()
    assert isinstance(first, vip.VipPlugin)
    assert first is not second  # one per engine: no state shared between engines
    plugins = Plugins.load(entry_points=False, extra=[vip.VipPlugin()])
    info = {i.name: i for i in plugins.info()}
    assert info["vip"].hooks == (
        "callrouter_configure",
        "callrouter_decision",
        "callrouter_execute",
        "callrouter_metrics",
        "callrouter_register",
        "callrouter_startup",
    )
    assert not info["vip"].builtin


async def test_inert_unless_configured(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    plugin = vip.VipPlugin()
    (tmp_path / "r.yaml").write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n    do:\n"
        "      - redirect: {context: sales, exten: '1'}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(tmp_path / "r.yaml", plugins=[plugin])
    assert "is_vip" not in engine.registry.functions
    assert "vip_tag" not in engine.registry.actions
    ajam_replay.inbound_call(caller=VIP, did="74951234567")
    await ajam_replay.settle(engine)
    assert ajam_replay.count("Setvar") == 0
    assert ajam_replay.count("Redirect") == 1
    assert plugin.decisions == []


async def test_bad_settings_refuse_the_start() -> None:
    engine = Engine(
        config({"vip": {"numbers": [VIP], "variable": "no spaces"}}),
        plugins=Plugins.load(entry_points=False, extra=[vip.VipPlugin()]),
    )
    with pytest.raises(ConfigError, match=r"\[plugins.vip\] variable"):
        await engine.setup()


async def test_vip_caller_tagged_and_logged(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = vip.VipPlugin()
    engine = await engine_factory(
        EXAMPLE / "tests" / "rules",
        plugins=[plugin],
        settings={"vip": {"numbers": [VIP], "variable": "VIP"}},
    )
    caplog.set_level(logging.INFO, logger="callrouter_vip")
    channel = ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    other = ajam_replay.inbound_call(caller="+74950000000", did="74951234567")
    await ajam_replay.settle(engine)

    [setvar] = ajam_replay.sent("Setvar")
    assert (setvar["Channel"], setvar["Variable"], setvar["Value"]) == (channel, "VIP", "gold")
    redirects = {r["Channel"]: r["Exten"] for r in ajam_replay.sent("Redirect")}
    assert redirects == {channel: "100", other: "200"}
    assert [d[1] for d in plugin.decisions] == ["executed"]
    assert "vip: call" in caplog.text


def test_registry_function_matches_any_format() -> None:
    plugin = vip.VipPlugin()
    plugin.callrouter_configure(config(), {"numbers": [VIP]})
    registry = Registry()
    plugin.callrouter_register(registry)
    is_vip = registry.functions["is_vip"].func
    assert is_vip("+79161234567") is True
    assert is_vip("79161234568") is False
