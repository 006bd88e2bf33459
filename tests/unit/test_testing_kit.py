"""router.testing, the test kit for plugin authors: its fake Asterisk and its fixtures.

The fixtures are exercised the way a plugin author uses them: a small test file
run by ``pytester`` with ``-p router.testing``. The fake itself is tested
directly against the AJAM client, with Asterisk's own answers as the reference
(``tests/fixtures/ami``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from router.errors import AMIActionError, AMIAuthenticationError, SandboxError
from router.sandbox import Sandbox

if TYPE_CHECKING:
    from router.ami.client import AJAMClient
    from router.testing import EngineFactory, ReplayAsterisk

# router.testing is imported by pytest here, as a plugin, before any test uses it
# (importing it first would keep pytest from rewriting its asserts, and warn).
pytest_plugins = ["pytester", "router.testing"]

REPO = Path(__file__).parents[2]
AMI_FIXTURES = REPO / "tests" / "fixtures" / "ami"

#: The kit is already imported in this process; pytester runs in it, so the
#: inner pytest would warn that it cannot rewrite the kit's asserts.
#: Installed pytest plugins are not auto-loaded there (hypothesis and others make
#: each run slow); pytest-asyncio is named, as a plugin author's run would load it.
KIT = (
    "-p",
    "pytest_asyncio.plugin",
    "-p",
    "router.testing",
    "-W",
    "ignore::pytest.PytestAssertRewriteWarning",
)

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


# --------------------------------------------------------------------------- packaging


def test_shipped_dialplan_is_the_example_byte_for_byte() -> None:
    from router.testing import SHIPPED_DIALPLAN, shipped_dialplan

    example = REPO / "examples" / "asterisk" / "extensions.conf"
    assert SHIPPED_DIALPLAN.read_bytes() == example.read_bytes(), (
        "router/sandbox/dialplan/callrouter.conf must be a copy of "
        "examples/asterisk/extensions.conf: copy the example over it"
    )
    assert "[callrouter-inbound]" in shipped_dialplan()


def test_shipped_dialplan_is_package_data() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"sandbox/dialplan/*.conf"' in pyproject


# --------------------------------------------------------------------------- the fake


async def test_login_sets_the_session_cookie(ajam_replay: ReplayAsterisk) -> None:
    async with ajam_replay.client() as client:
        result = await client.ping()
        assert result.response["Ping"] == "Pong"
        assert client.session_ttl == 60
    assert [a.name for a in ajam_replay.actions] == ["Login", "Ping", "Logoff"]
    login = ajam_replay.sent("login")[0]
    assert login["Username"] == "router"
    assert "mansession_id" in (ajam_replay.sent("Ping")[0].cookie or "")
    assert not ajam_replay.logged_in


async def test_wrong_secret_is_refused(ajam_replay: ReplayAsterisk) -> None:
    client = ajam_replay.client(secret="wrong")
    with pytest.raises(AMIAuthenticationError, match="Authentication failed"):
        await client.login()
    await client.aclose()


async def test_lost_session_means_permission_denied_then_relogin(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    ajam_replay.expire_session()
    await ajam_client.ping()
    assert [a.name for a in ajam_replay.actions] == ["Login", "Ping", "Login", "Ping"]


async def test_unknown_action_answers_like_asterisk(ajam_client: AJAMClient) -> None:
    expected = (AMI_FIXTURES / "unknown_action.rawman").read_text(encoding="utf-8")
    message = expected.split("Message: ", 1)[1].strip()
    with pytest.raises(AMIActionError) as info:
        await ajam_client.send("NoSuchThing", {}, validate=False)
    assert info.value.response.message == message


async def test_redirect_of_a_missing_channel(ajam_client: AJAMClient) -> None:
    with pytest.raises(AMIActionError, match="Channel does not exist: Local/x"):
        await ajam_client.send(
            "Redirect",
            {"Channel": "Local/x", "Context": "c", "Exten": "1", "Priority": "1"},
            validate=False,
        )


async def test_inbound_call_is_what_the_dialplan_announces(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    channel = ajam_replay.inbound_call(caller="+79161234567", did="74951234567", wait=5)
    events = await ajam_client.wait_event(1)
    assert [e.name for e in events] == [
        "Newchannel",
        "Newexten",
        "VarSet",
        "VarSet",
        "UserEvent",
        "Newexten",
    ]
    request = events[4]
    assert request["UserEvent"] == "CallRouterRequest"
    assert (request["DID"], request["Caller"], request["Wait"]) == (
        "74951234567",
        "+79161234567",
        "5",
    )
    assert float(request["Timestamp"]) > 0
    listing = await ajam_client.send("CoreShowChannels", {}, validate=False)
    [item] = listing.items
    assert (item["Channel"], item["Context"], item["Application"]) == (
        channel,
        "callrouter-inbound",
        "Wait",
    )
    assert listing.closing is not None
    assert listing.closing["ListItems"] == "1"
    did = await ajam_client.send(
        "Getvar", {"Channel": channel, "Variable": "CALLROUTER_DID"}, validate=False
    )
    assert did.response["Value"] == "74951234567"


async def test_redirect_moves_the_channel_and_queues_its_newexten(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    channel = ajam_replay.inbound_call(caller="101", did="74951234567")
    await ajam_client.wait_event(1)
    await ajam_client.redirect(channel=channel, context="sales", exten="200", priority=1)
    [newexten] = await ajam_client.wait_event(1)
    assert (newexten.name, newexten["Channel"], newexten["Context"], newexten["Exten"]) == (
        "Newexten",
        channel,
        "sales",
        "200",
    )
    assert ajam_replay.channels[channel].context == "sales"
    await ajam_client.send("Hangup", {"Channel": channel}, validate=False)
    [hangup] = await ajam_client.wait_event(1)
    assert hangup.name == "Hangup"
    assert channel not in ajam_replay.channels
    assert ajam_replay.count("Redirect") == 1


async def test_setvar_getvar_round_trip(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    await ajam_client.setvar(variable="CR_TEST", value="Иванов & <Ко>")
    result = await ajam_client.getvar(variable="CR_TEST")
    assert result.response["Value"] == "Иванов & <Ко>"
    with pytest.raises(AMIActionError, match="No such channel"):
        await ajam_client.setvar(channel="PJSIP/gone", variable="A", value="1")
    assert ajam_replay.globals["CR_TEST"] == "Иванов & <Ко>"


async def test_recorded_events_replay_with_fresh_timestamps(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    queued = ajam_replay.queue_rawman(AMI_FIXTURES / "waitevent_call.rawman")
    events = await ajam_client.wait_event(1)
    assert [e.name for e in events] == [e.name for e in queued]
    assert "WaitEventComplete" not in [e.name for e in events]
    assert events[-1]["Name"] == "Кириллица & <теги> 'апостроф' \"кавычки\""
    assert all(float(e["Timestamp"]) > 1.7e9 for e in events)
    assert "Local/74952293042@incoming-00000000;2" in ajam_replay.channels


async def test_empty_waitevent_returns_after_the_cap(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    ajam_replay.max_wait = 0.05
    assert await ajam_client.wait_event(20) == []


async def test_custom_answers(ajam_client: AJAMClient, ajam_replay: ReplayAsterisk) -> None:
    ajam_replay.on("ExtensionState", lambda sent: {"Exten": sent["Exten"], "Status": "0"})

    async def broken(sent: object) -> None:
        raise httpx.ConnectError("refused")

    ajam_replay.on("Originate", broken)
    result = await ajam_client.send(
        "ExtensionState", {"Exten": "101", "Context": "hints"}, validate=False
    )
    assert result.response["Status"] == "0"
    assert result.response.action_id == ajam_replay.sent("ExtensionState")[0].action_id
    with pytest.raises(Exception, match="cannot connect"):
        await ajam_client.originate(channel="Local/1@x", application="Wait", data="1")


def test_queue_event_requires_a_name(ajam_replay: ReplayAsterisk) -> None:
    with pytest.raises(ValueError, match="'Event' field"):
        ajam_replay.queue_event({"Channel": "x"})
    event = ajam_replay.queue_event(Event="Hangup", Channel="x", Cause="16")
    assert event.name == "Hangup"
    assert event["SystemName"] == "callrouter-replay"
    assert ajam_replay.pending == 1


# --------------------------------------------------------------------------- the seam


def test_the_kit_imports_without_pytest() -> None:
    """A demo or a benchmark imports the fake and the engines; pytest stays out."""
    code = (
        "import sys, router.testing\n"
        "from router.testing import Engines, ReplayAsterisk, make_call\n"
        "print(sorted(m for m in ('pytest', '_pytest', 'pytest_asyncio') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"


async def test_the_fake_is_the_clients_transport(ajam_replay: ReplayAsterisk) -> None:
    """No httpx in between: the client's own retry loop meets the fake's stale connection."""
    from router.errors import AMIConnectionError
    from router.testing import StaleConnectionError

    broken: set[str] = set()

    def stale_once(sent: object) -> None:
        name = getattr(sent, "name", "")
        if name not in broken:
            broken.add(name)
            raise StaleConnectionError("server closed the idle connection")

    async with ajam_replay.client() as client:
        assert client.transport is ajam_replay
        ajam_replay.on("Ping", stale_once)
        ajam_replay.on("Redirect", stale_once)
        assert (await client.ping()).ok  # idempotent: sent again on a fresh connection
        with pytest.raises(AMIConnectionError, match=r"Redirect: connection to .* broke"):
            await client.send(
                "Redirect",
                {"Channel": "x", "Context": "c", "Exten": "1", "Priority": "1"},
                validate=False,
            )
    assert ajam_replay.count("Ping") == 2
    assert ajam_replay.count("Redirect") == 1  # never twice


async def test_engines_on_the_fake_use_the_production_client_path(
    tmp_path: Path, engine_factory: EngineFactory, ajam_replay: ReplayAsterisk
) -> None:
    """The engine's client is the one production builds (session, cookie, retry,
    error mapping); only the transport under it is the fake, not httpx."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(rules)
    assert engine.ami.transport is ajam_replay
    after_login = [a for a in ajam_replay.actions if a.name != "Login"]
    assert after_login  # the start-up reconcile at least
    assert all("mansession_id" in (a.cookie or "") for a in after_login)


async def test_a_hangup_queued_by_channel_ends_the_call_for_plugins(
    tmp_path: Path, engine_factory: EngineFactory, ajam_replay: ReplayAsterisk
) -> None:
    """``queue_event("Hangup", Channel=..., Cause="16")``, as the docs write it,
    ends the call a plugin's ``callrouter_call_end`` is told of: the fake adds the
    channel's Uniqueid and Linkedid, as Asterisk sends them with every channel's
    event (without them the engine tied the Hangup to no call, and the hook never ran)."""
    from router import Call, hookimpl

    ended: list[str] = []

    class Ends:
        __name__ = "ends"

        @hookimpl
        def callrouter_call_end(self, call: Call) -> None:
            ended.append(call.linkedid)

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: r\n    on: call\n    do:\n"
        "      - redirect: {context: callrouter-dial, exten: '100'}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Ends()])
    channel = ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = engine.records[-1].linkedid
    queued = ajam_replay.queue_event("Hangup", Channel=channel, Cause="16")
    assert queued.get("Linkedid") == linkedid
    await ajam_replay.settle(engine)
    assert ended == [linkedid]
    # What the test gives is kept: a Linkedid of its own is not replaced.
    other = ajam_replay.inbound_call(caller="+79161234568", did="74951234567")
    assert ajam_replay.queue_event("Hangup", Channel=other, Linkedid="9.9").get("Linkedid") == "9.9"


def test_a_hangup_fed_by_channel_ends_a_timelines_call() -> None:
    """``CallTimeline.feed(make_event("Hangup", Channel=...))`` ends the call the
    channel belongs to, so a test can hand ``callrouter_call_end`` an ended call."""
    from router.testing import CallTimeline, make_event

    calls = CallTimeline()
    call = calls.inbound_call(linkedid="3.1")
    ended = calls.feed(make_event("Hangup", Channel=call.waiting_channel or "", Cause="16"))
    assert ended is call
    assert call.ended is not None
    assert calls.get("3.1") is None


async def test_the_fake_answers_within_the_clients_timeout(ajam_replay: ReplayAsterisk) -> None:
    from router.errors import AMITimeoutError

    async def slow(sent: object) -> None:
        await asyncio.sleep(5)

    ajam_replay.on("Ping", slow)
    async with ajam_replay.client(request_timeout=0.05) as client:
        with pytest.raises(AMITimeoutError, match="Ping: no answer"):
            await client.ping()


async def test_engines_outside_pytest(tmp_path: Path) -> None:
    from router.testing import Engines, ReplayAsterisk

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: everyone\n    on: call\n    do:\n"
        '      - redirect: {context: callrouter-dial, exten: "101"}\n',
        encoding="utf-8",
    )
    replay = ReplayAsterisk()
    engines = Engines(replay, tmp_path / "state")
    engine = await engines(rules)
    try:
        replay.inbound_call(caller="79161234567", did="74950000001")
        await replay.settle(engine)
        assert [r["Exten"] for r in replay.sent("Redirect")] == ["101"]
    finally:
        await engines.close()
    assert not replay.logged_in


async def test_any_other_context_has_every_extension(ajam_client: AJAMClient) -> None:
    """As the kit's docs promise: only the shipped ``callrouter-*`` contexts are
    as loaded; any other context answers ShowDialPlan with a step for any extension."""
    listing = await ajam_client.action("ShowDialPlan", {"Context": "queues", "Extension": "sales"})
    [item] = listing.items
    assert (item["Context"], item["Priority"]) == ("queues", "1")
    whole = await ajam_client.action("ShowDialPlan", {"Context": "queues"})
    assert [i["Context"] for i in whole.items] == ["queues"]
    with pytest.raises(AMIActionError, match="Did not find context callrouter-nope"):
        await ajam_client.action("ShowDialPlan", {"Context": "callrouter-nope"})


async def test_an_engine_on_the_fake_finds_every_rule_target(
    tmp_path: Path,
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plugin author's rules redirect to their own contexts: the engine's
    dialplan check on the fake finds them, and logs no warning about them."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: default\n    on: call\n    do:\n"
        "      - redirect: {context: queues, exten: sales}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(rules)
    ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await ajam_replay.settle(engine)
    assert ("queues", None) in [
        (a.get("Context"), a.get("Extension")) for a in ajam_replay.sent("ShowDialPlan")
    ]
    assert [r.getMessage() for r in caplog.records if "dialplan:" in r.getMessage()] == []


async def test_count_leaves_out_the_privilege_probes_of_an_engine_built_with_options(
    tmp_path: Path, engine_factory: EngineFactory, ajam_replay: ReplayAsterisk
) -> None:
    """An engine built with ``options=`` probes the manager user's write
    classes after its login with a ``Redirect`` (and an ``Originate``, and a
    ``CoreStatus``) that act on no call; docs/plugins.md's
    ``count("Redirect") == 1`` counts the calls routed all the same, and
    ``probes=True`` shows the probes."""
    from router.engine import EngineOptions

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: default\n    on: call\n    do:\n"
        "      - redirect: {context: queues, exten: sales}\n"
        "      - originate: {channel: PJSIP/101, context: queues, exten: sales}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, options=EngineOptions(watch_interval=0, live_heartbeat=0))
    channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await ajam_replay.settle(engine)
    [redirect] = ajam_replay.sent("Redirect")
    assert redirect["Channel"] == channel
    assert ajam_replay.count("Redirect") == 1
    probes = [a for a in ajam_replay.sent(probes=True) if a.probe]
    assert sorted(a.name for a in probes) == ["CoreStatus", "Originate", "Redirect"]
    assert ajam_replay.count("Redirect", probes=True) == 2
    assert ajam_replay.count("Originate") == ajam_replay.count("Originate", probes=True) - 1
    assert all(not a.probe for a in ajam_replay.sent())


# --------------------------------------------------------------------------- builders


def test_make_call_is_the_trackers_call_waiting_for_its_route() -> None:
    from router.testing import CallTimeline, make_call, make_event

    call = make_call(caller="8 (916) 123-45-67", did="74951234567", linkedid="1.1")
    assert (call.linkedid, call.did, call.routed) == ("1.1", "74951234567", True)
    assert call.caller_number == "8 (916) 123-45-67"
    assert call.waiting_channel == "Local/74951234567@callrouter-inbound-1.1;2"
    timeline = CallTimeline()
    live = timeline.inbound_call(linkedid="2.1")
    assert timeline.get("2.1") is live
    assert timeline.by_channel(live.waiting_channel or "") is live
    ended = timeline.feed(
        make_event("Hangup", Channel=live.waiting_channel or "", Linkedid="2.1", Cause="16")
    )
    assert ended is live
    assert live.ended is not None
    assert list(timeline) == []


def test_make_decision_and_trace_are_what_hooks_receive() -> None:
    from router import Action, Decision, Trace
    from router.testing import make_decision, make_trace

    decision = make_decision(
        ("redirect", {"context": "callrouter-dial", "exten": "101"}), rule="owner"
    )
    assert isinstance(decision, Decision)
    assert decision.rules == ("owner",)
    assert decision.actions == (
        Action.make("redirect", {"context": "callrouter-dial", "exten": "101"}, "owner"),
    )
    assert make_decision() == Decision()
    answer = {"found": True, "manager": {"extension": "101"}}
    trace = make_trace(lookups={"onec.responsible": answer}, rule="owner")
    assert isinstance(trace, Trace)
    assert trace.lookup_values("onec.responsible") == [answer]
    assert trace.lookup_values("other.lookup") == []
    assert trace.context.caller is not None
    assert trace.context.caller.number == "79161234567"


async def test_stub_engine_is_an_engine_api(tmp_path: Path) -> None:
    from router import EngineAPI
    from router.testing import StubEngine, make_call

    stub = StubEngine(tmp_path)
    engine: EngineAPI = stub  # what a hook receives (mypy checks the shape)
    ran: list[str] = []

    async def job() -> None:
        ran.append("ran")

    engine.schedule("vip:reload", job, every=60)
    with pytest.raises(ValueError, match="one of them"):
        engine.schedule("vip:both", job, every=1, cron="* * * * *")
    assert stub.jobs["vip:reload"].every == 60
    await stub.jobs["vip:reload"].run()
    assert ran == ["ran"]
    assert engine.may_ask(make_call(), "onec.responsible") is True
    assert (await engine.ami.ping()).ok
    assert stub.replay.count("Ping") == 1
    await stub.aclose()
    assert engine.state_dir == tmp_path
    assert not engine.shadow


async def test_a_stub_engines_calls_are_channels_its_fake_asterisk_knows(
    tmp_path: Path,
) -> None:
    """A hook that acts on the call it is given, through ``engine.ami``, is answered
    as Asterisk would: the stub's fake knows the call's channel (it answered
    "No such channel", so such a hook could not be unit-tested)."""
    from router.testing import StubEngine, make_event

    stub = StubEngine(tmp_path)
    call = stub.make_call(linkedid="1.1")
    channel = call.waiting_channel or ""
    await stub.ami.setvar(channel=channel, variable="VIP", value="gold")
    assert (await stub.ami.getvar(channel=channel, variable="VIP")).response["Value"] == "gold"
    assert stub.replay.channels[channel].variables == {"VIP": "gold"}
    await stub.ami.redirect(channel=channel, context="sales", exten="200", priority=1)
    assert stub.replay.channels[channel].context == "sales"
    # Calls made on stub.calls too, and events fed to it move the fake's channels.
    other = stub.calls.inbound_call(linkedid="2.1")
    leg = "PJSIP/101-00000001"
    stub.calls.feed(make_event("Newchannel", Channel=leg, Uniqueid="2.2", Linkedid="2.1"))
    await stub.ami.setvar(channel=leg, variable="A", value="1")
    stub.calls.feed(make_event("Hangup", Channel=leg, Linkedid="2.1", Cause="16"))
    with pytest.raises(AMIActionError, match="No such channel"):
        await stub.ami.setvar(channel=leg, variable="A", value="1")
    await stub.ami.hangup(channel=other.waiting_channel or "")
    assert sorted(stub.replay.channels) == [channel]
    # The redirect's Newexten and the hangup's Hangup: nothing of the calls made.
    assert stub.replay.pending == 2
    await stub.aclose()


def test_config_from_toml_names_the_file(tmp_path: Path) -> None:
    from router import ConfigError
    from router.testing import config_from_toml, make_config

    config = config_from_toml(tmp_path, '[plugins.vip]\nnumbers = ["1"]\n')
    assert config.plugins.for_plugin("vip")["numbers"] == ["1"]
    with pytest.raises(ConfigError, match=r"router\.toml.*\[router\] colour"):
        config_from_toml(tmp_path, "[router]\ncolour = 1\n")
    assert make_config({"vip": {"numbers": []}}).plugins.for_plugin("vip") == {"numbers": []}


def test_config_from_toml_errors_name_the_line_of_the_text(tmp_path: Path) -> None:
    """The [asterisk] table it adds goes after the text: a plugin's test that
    checks its settings error's line (router.toml:2) read router.toml:6."""
    from router import ConfigError, SettingsReader
    from router.testing import config_from_toml

    config = config_from_toml(tmp_path, '[plugins.vip]\nnumbrs = ["1"]\n')
    reader = SettingsReader.for_plugin("vip", config.plugins.settings["vip"], config)
    with pytest.raises(ConfigError, match=r"router\.toml:2: \[plugins\.vip\] numbrs: unknown key"):
        reader.reject_unknown(("numbers",))
    with pytest.raises(ConfigError, match=r"router\.toml:3: \[router\] colour"):
        config_from_toml(tmp_path, "# a comment\n[router]\ncolour = 1")


def test_every_builder_is_documented_and_every_documented_one_exists() -> None:
    import re

    import router.testing
    from router.testing import builders

    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text[text.index("## Testing with `router.testing`") : text.index("## Packaging")]
    documented = set(re.findall(r"^\| `(\w+)\(", section, flags=re.MULTILINE))
    documented |= set(re.findall(r"`(config_from_toml)\(", section))
    public = set(builders.__all__) - {"ScheduledRun"}  # reached as stub.jobs[...]
    assert documented == public
    assert public <= set(router.testing.__all__)


def test_plugin_code_and_plugin_tests_import_only_router_and_router_testing() -> None:
    """Plugins and their tests see the public API; internals may change under them."""
    import re

    internal = re.compile(r"^\s*(?:from|import)\s+router\.(?!testing\b)([\w.]+)", re.MULTILINE)
    roots = [REPO / "plugins", REPO / "examples" / "plugin-vip-greeting"]
    found = [
        f"{path.relative_to(REPO)}: router.{match.group(1)}"
        for root in roots
        for path in sorted(root.rglob("*.py"))
        for match in internal.finditer(path.read_text(encoding="utf-8"))
    ]
    assert found == []
    assert internal.search("from router.config import load_config")  # the check bites


# --------------------------------------------------------------------------- as a plugin


def test_fixtures_in_a_plugin_authors_test_file(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_plugin_kit='''
        from router.hookspecs import hookimpl

        RULES = """
        version: 1
        rules:
          - name: greet
            on: call
            if: greeting(caller.number) == "hello"
            do:
              - redirect: {context: sales, exten: "100"}
        """


        class Greeter:
            __name__ = "greeter"

            @hookimpl
            def callrouter_register(self, registry):
                registry.add_function("greeting", lambda number: "hello")


        async def test_client(ajam_client, ajam_replay):
            await ajam_client.ping()
            assert ajam_replay.count("Ping") == 1


        async def test_engine(ajam_replay, engine_factory, tmp_path):
            (tmp_path / "rules.yaml").write_text(RULES)
            engine = await engine_factory(tmp_path / "rules.yaml", plugins=[Greeter()])
            ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
            await ajam_replay.settle(engine)
            assert ajam_replay.count("Redirect") == 1
            assert engine.records[-1].outcome == "executed"
            assert engine.records[-1].rules == ("greet",)
            assert "greeter" in [p.name for p in engine.plugins.info()]
    '''
    )
    result = pytester.runpytest(*KIT)
    result.assert_outcomes(passed=2)


def test_engine_factory_stops_engines_it_started(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_stop="""
        import pytest

        engines = []

        async def test_start(ajam_replay, engine_factory, tmp_path):
            (tmp_path / "r.yaml").write_text("version: 1\\nrules: []\\n")
            engines.append(await engine_factory(tmp_path / "r.yaml"))
            assert ajam_replay.logged_in

        def test_stopped():
            [engine] = engines
            assert not engine.ami.logged_in
    """
    )
    result = pytester.runpytest(*KIT)
    result.assert_outcomes(passed=2)


SANDBOX_TEST = """
def test_needs_asterisk(asterisk_sandbox):
    raise AssertionError("not reached")
"""


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cls: type[Sandbox], **kwargs: object) -> Sandbox:
        raise SandboxError("debootstrap needs root (test)")

    monkeypatch.setattr(Sandbox, "start", classmethod(refuse))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CALLROUTER_REQUIRE_SANDBOX", raising=False)


@pytest.mark.usefixtures("no_sandbox")
def test_sandbox_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_box=SANDBOX_TEST)
    result = pytester.runpytest(*KIT, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*Asterisk sandbox could not be started: debootstrap needs root*"])


@pytest.mark.usefixtures("no_sandbox")
@pytest.mark.parametrize(("name", "value"), [("CI", "true"), ("CALLROUTER_REQUIRE_SANDBOX", "1")])
def test_sandbox_fails_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    pytester.makeini(INI)
    pytester.makepyfile(test_box=SANDBOX_TEST)
    result = pytester.runpytest(*KIT)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Asterisk sandbox could not be started: debootstrap needs root*"])


async def test_a_sent_action_is_a_mapping_of_its_fields(
    ajam_client: AJAMClient, ajam_replay: ReplayAsterisk
) -> None:
    """``dict(sent)`` failed with ``AttributeError: 'int' object has no
    attribute 'lower'`` (iteration fell back on ``sent[0]``): a SentAction is
    a read-only mapping of the fields as sent, looked up in any case."""
    from collections.abc import Mapping

    await ajam_client.send(
        "UserEvent", {"UserEvent": "Probe", "Channel": "PJSIP/101-1", "Note": "a"}
    )
    [sent] = ajam_replay.sent("UserEvent")
    assert isinstance(sent, Mapping)
    fields = dict(sent)
    assert fields["Channel"] == "PJSIP/101-1"
    assert fields["Action"] == "UserEvent"
    assert list(sent) == [k for k, _ in sent.fields]  # in order, as sent
    assert len(sent) == len(sent.fields)
    assert sent["channel"] == sent.get("CHANNEL") == "PJSIP/101-1"
    assert "note" in sent
    assert "Missing" not in sent
    assert 0 not in sent
    assert sent.get("Missing") is None
    assert sent.get("Missing", "x") == "x"
    with pytest.raises(KeyError):
        sent["Missing"]
    assert dict(sent.items()) == fields


async def test_the_documented_stream_gap_steps_tell_a_plugin(
    ajam_replay: ReplayAsterisk, engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """docs/plugins.md, ``expire_session``: the steps a plugin author takes to
    test ``callrouter_stream_gap``. ``expire_session()`` and one ``settle``
    alone told the plugin nothing: the poll already waiting keeps its session."""
    from router import StreamGap, hookimpl

    seen: list[str] = []

    class Presence:
        __name__ = "presence"

        @hookimpl
        def callrouter_stream_gap(self, gap: StreamGap) -> None:
            seen.append(f"gap:{gap.reason}")

        @hookimpl
        def callrouter_channels_listed(self, channels: object) -> None:
            seen.append("listed")

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: r\n    on: call\n    do:\n"
        "      - redirect: {context: callrouter-dial, exten: '101'}\n",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Presence()])
    assert seen == ["listed"]  # at start
    ajam_replay.expire_session()
    ajam_replay.queue_event("FullyBooted")
    await ajam_replay.settle(engine)
    ajam_replay.queue_event("Reload")
    await ajam_replay.settle(engine)
    assert seen == ["listed", "gap:session", "listed"]
