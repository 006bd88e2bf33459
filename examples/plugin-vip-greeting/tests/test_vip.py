"""callrouter-vip against callrouter's test kit (router.testing)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from callrouter_vip import VipPlugin, number_key
from router import Config, ConfigError, Metrics, Registry
from router.testing import (
    EngineFactory,
    ReplayAsterisk,
    Sandbox,
    StubEngine,
    load_plugins,
    make_config,
    make_decision,
)

RULES = Path(__file__).parent / "rules"
VIP = "+7 916 123-45-67"
SETTINGS = {"vip": {"numbers": [VIP]}}


def config(settings: Mapping[str, Mapping[str, object]] | None = None) -> Config:
    return make_config(settings)


async def configured(settings: Mapping[str, object]) -> VipPlugin:
    """A VipPlugin configured through the plugin manager, as the engine does it."""
    plugin = VipPlugin()
    plugins = load_plugins(plugin, defaults=())
    await plugins.configure(config({"vip": settings}))
    return plugin


def test_number_key_ignores_formatting() -> None:
    assert number_key("8 (916) 123-45-67") == number_key("+79161234567") == "9161234567"


async def test_inert_without_settings() -> None:
    plugin = VipPlugin()
    plugins = load_plugins(plugin, defaults=())
    await plugins.configure(config())
    registry = Registry()
    assert plugins.register_into(registry) == []
    assert "is_vip" not in registry.functions
    assert "vip_tag" not in registry.actions


async def test_configured_registers_function_and_action(tmp_path: Path) -> None:
    listing = tmp_path / "vip.txt"
    listing.write_text("# VIPs\n8 903 111-22-33\n", encoding="utf-8")
    plugin = await configured({"numbers": [VIP], "file": str(listing)})
    assert plugin.is_vip("79161234567")
    assert plugin.is_vip("+7 903 111 22 33")
    assert not plugin.is_vip("74950000000")
    registry = Registry()
    plugin.callrouter_register(registry)
    assert registry.functions["is_vip"].func("89161234567") is True
    assert "vip_tag" in registry.actions


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"numbers": "x", "colour": "red"}, "[plugins.vip] colour: unknown key"),
        ({"numbers": [1.5]}, "[plugins.vip] numbers: expected a list of phone numbers"),
        ({"variable": "1bad"}, "[plugins.vip] variable: '1bad' is not a channel variable name"),
        ({"file": "/nonexistent/vip.txt"}, "[plugins.vip] file: cannot read"),
    ],
)
async def test_bad_settings_stop_the_start(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        await configured(settings)


async def test_the_file_is_read_again_by_a_timed_job(tmp_path: Path) -> None:
    listing = tmp_path / "vip.txt"
    listing.write_text("8 903 111-22-33\n", encoding="utf-8")
    plugin = VipPlugin()
    plugins = load_plugins(plugin, defaults=())
    await plugins.configure(config({"vip": {"numbers": [VIP], "file": str(listing), "reload": 60}}))
    engine = StubEngine(tmp_path)
    await plugins.startup(engine)  # as callrouter run does, once logged in

    job = engine.jobs["vip:reload"]
    assert job.every == 60
    listing.write_text("8 903 444-55-66\n", encoding="utf-8")
    assert plugin.is_vip("89031112233")  # until the job runs
    await job.run()
    assert plugin.is_vip("89034445566")
    assert not plugin.is_vip("89031112233")
    assert plugin.is_vip(VIP)  # the numbers of router.toml stay

    listing.unlink()  # a file gone keeps the list it had
    await job.run()
    assert plugin.is_vip("89034445566")


async def test_no_job_without_a_file(tmp_path: Path) -> None:
    plugin = VipPlugin()
    plugins = load_plugins(plugin, defaults=())
    await plugins.configure(config(SETTINGS))
    engine = StubEngine(tmp_path)
    await plugins.startup(engine)
    assert engine.jobs == {}


async def test_tagged_calls_are_counted(tmp_path: Path) -> None:
    plugin = VipPlugin()
    plugins = load_plugins(plugin, defaults=())
    await plugins.configure(config(SETTINGS))
    metrics = Metrics()  # a registry of the test's own, as each engine has
    await plugins.metrics(metrics)
    engine = StubEngine(tmp_path)
    call = engine.make_call(caller=VIP)

    [tag] = make_decision(("vip_tag", {"level": "gold"})).actions
    assert await plugin.callrouter_execute(tag, call, engine) is not None
    await engine.aclose()
    # prometheus-client adds _total to a counter's sample name
    assert metrics.registry.get_sample_value("callrouter_vip_tagged_total") == 1


async def test_vip_call_is_tagged_once_then_redirected(
    ajam_replay: ReplayAsterisk, engine_factory: EngineFactory
) -> None:
    plugin = VipPlugin()
    engine = await engine_factory(RULES, plugins=[plugin], settings=SETTINGS)

    channel = ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)

    [setvar] = ajam_replay.sent("Setvar")
    assert setvar.params() == {"Channel": channel, "Variable": "CALLROUTER_VIP", "Value": "gold"}
    [redirect] = ajam_replay.sent("Redirect")
    assert redirect["Exten"] == "100"
    record = engine.records[-1]
    assert record.rules[0] == "vip"
    assert record.outcome == "executed"
    assert [a.status for a in record.actions] == ["ok", "confirmed"]
    assert ajam_replay.channels[channel].variables["CALLROUTER_VIP"] == "gold"
    assert plugin.decisions == [(record.linkedid, "executed")]


async def test_other_callers_are_not_tagged(
    ajam_replay: ReplayAsterisk, engine_factory: EngineFactory
) -> None:
    plugin = VipPlugin()
    engine = await engine_factory(RULES, plugins=[plugin], settings=SETTINGS)

    ajam_replay.inbound_call(caller="+74950000001", did="74951234567")
    await ajam_replay.settle(engine)

    assert ajam_replay.count("Setvar") == 0
    assert [r["Exten"] for r in ajam_replay.sent("Redirect")] == ["200"]
    assert plugin.decisions == []


async def test_a_failing_tag_does_not_stop_routing(
    ajam_replay: ReplayAsterisk, engine_factory: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_factory(RULES, plugins=[VipPlugin()], settings=SETTINGS)
    ajam_replay.on("Setvar", lambda sent: [("Response", "Error"), ("Message", "No such channel")])

    ajam_replay.inbound_call(caller=VIP, did="74951234567")
    await ajam_replay.settle(engine)

    # The plugin raised: callrouter logs it with the plugin's name, the action
    # is not "ok" in the trace, and the call is still redirected.
    record = engine.records[-1]
    assert [a.kind for a in record.actions] == ["vip_tag", "redirect"]
    assert record.actions[0].status != "ok"
    assert record.actions[1].status == "confirmed"
    assert "plugin 'vip' failed in callrouter_execute" in caplog.text


async def test_vip_call_on_the_sandbox(
    asterisk_sandbox: Sandbox, engine_factory: EngineFactory
) -> None:
    """The same rule on a real Asterisk: the channel variable is really set."""
    engine = await engine_factory(
        RULES, plugins=[VipPlugin()], settings=SETTINGS, sandbox=asterisk_sandbox
    )
    # A caller: a Local channel into the shipped inbound context, as a trunk would.
    originated = await engine.ami.originate(
        channel="Local/74951234567@callrouter-inbound",
        application="Wait",
        data="10",
        caller_id="79161234567",
        async_="true",
    )
    assert originated.ok
    for _ in range(100):
        if engine.records:
            break
        await asyncio.sleep(0.05)
    record = engine.records[-1]
    assert record.rules[0] == "vip"
    assert record.actions[0].kind == "vip_tag"
    assert record.actions[0].status == "ok"
    await engine.ami.send("Hangup", {"Channel": record.channel}, validate=False, check=False)
