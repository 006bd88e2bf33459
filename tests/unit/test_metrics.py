"""Each metric family moves when what it counts happens (router/metrics.py).

Driven through a running engine on the replaying fake Asterisk, the way the
sandbox tests drive a real one: calls in, the exposition read back with
prometheus-client's own parser, so a family that is registered but never
updated (or updated with the wrong labels) fails here.
"""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.ami.message import Event
from router.ami.protocol import LONG_LINES
from router.dialplan import DECIDED_VARIABLE, FELL_VARIABLE
from router.health import readiness
from router.hookspecs import hookimpl
from router.metrics import OTHER, BoundedLabel, Metrics, QueueGauge, exposition
from router.rules.registry import ActionSpec, ParamSpec, Registry
from tests.unit.client_stub import Told
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router import Action, Call, EngineAPI
    from router.engine import Engine
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """
version: 1
rules:
  - name: vip
    on: call
    if: did == "74950000001"
    lookup:
      owner: test.owner(caller.number)
    when: owner
    do:
      - redirect: {context: managers, exten: "{owner}"}
"""
ROUTED = "74950000001"
UNROUTED = "74950000002"


class Owners:
    """A lookup answering '101', failing for numbers ending in 99, slow for 77."""

    __name__ = "owners"

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def owner(number: str) -> str | None:
            if number.endswith("99"):
                raise RuntimeError("directory down")
            if number.endswith("77"):
                await asyncio.sleep(2)  # past any call's deadline here
            return "101"

        registry.add_lookup("test.owner", owner)


def sample(engine: Engine, metric: str, **labels: str) -> float:
    """One sample's value from the exposition text (0 when absent)."""
    text = exposition(engine.metrics).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


async def test_decisions_fallthroughs_latency_and_lookups_move(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    engine = await engine_factory(rules, plugins=[Owners()])
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED)
    ajam_replay.inbound_call(caller="+79161234599", did=ROUTED)  # the lookup fails
    ajam_replay.inbound_call(caller="+79161234568", did=UNROUTED)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert sample(engine, "callrouter_decisions_total", rule="vip", outcome="executed") == 1
    assert sample(engine, "callrouter_decisions_total", rule="-", outcome="fell-through") == 2
    assert sample(engine, "callrouter_fallthroughs_total", cause="no-rule") == 2
    assert sample(engine, "callrouter_fallthroughs_total", cause="late") == 0
    # Asterisk's clock: only the executed decision has a confirming Newexten.
    assert sample(engine, "callrouter_decision_seconds_count") == 1
    assert 0 < sample(engine, "callrouter_decision_seconds_sum") < 4
    assert sample(engine, "callrouter_evaluate_seconds_count") == 3
    assert sample(engine, "callrouter_lookups_total", lookup="test.owner", outcome="ok") == 1
    assert sample(engine, "callrouter_lookups_total", lookup="test.owner", outcome="error") == 1
    assert sample(engine, "callrouter_lookup_seconds_count", lookup="test.owner") == 2


async def test_a_late_decision_counts_as_a_late_fallthrough(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    engine = await engine_factory(rules, plugins=[Owners()])
    # The dialplan waits 0.5 s; the lookup takes 2 s.
    ajam_replay.inbound_call(caller="+79161234577", did=ROUTED, wait=0.5)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert sample(engine, "callrouter_fallthroughs_total", cause="late") == 1
    assert sample(engine, "callrouter_decisions_total", rule="-", outcome="late") == 1


class EveryEvent:
    """Asks for every event, so Asterisk's event filter lets unknown names through."""

    __name__ = "every_event"

    @hookimpl
    def callrouter_wanted_events(self) -> None:
        return None


async def test_events_by_name_fold_unknown_names_into_other(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    engine = await engine_factory(rules, plugins=[Owners(), EveryEvent()])
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")
    ajam_replay.queue_event(Event="Newexten", Context="x")  # the catalog says NewExten
    ajam_replay.queue_event(Event="NoSuchEventFromAModule", Foo="1")
    ajam_replay.queue_event(Event="SomeOtherUnknown", Foo="1")
    await ajam_replay.settle(engine)
    assert sample(engine, "callrouter_events_total", name="FullyBooted") == 1
    assert sample(engine, "callrouter_events_total", name="Newexten") == 1  # as Asterisk sends it
    assert sample(engine, "callrouter_events_total", name=OTHER) == 2
    assert sample(engine, "callrouter_events_total", name="NoSuchEventFromAModule") == 0


async def test_gap_and_reconcile_are_counted(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    engine = await engine_factory(rules, plugins=[Owners()])
    assert sample(engine, "callrouter_reconciles_total", trigger="start", result="ok") == 1
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    ajam_replay.inbound_call(caller="+79161234567", did=ROUTED, announce=False, wait=10)
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert sample(engine, "callrouter_stream_gaps_total", reason="session") == 1
    assert sample(engine, "callrouter_reconciles_total", trigger="gap", result="ok") == 1
    assert sample(engine, "callrouter_reconcile_routed_total") == 1  # the waiting call
    assert sample(engine, "callrouter_ami_logins_total") == 2  # the first login and the re-login
    assert sample(engine, "callrouter_decisions_total", rule="vip", outcome="executed") == 1


async def test_events_no_asterisk_could_send_are_counted(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16 (hattack38): the tracker counted the events and listing items
    it refused (a Linkedid longer than Asterisk sends), but no metric said so:
    a hostile AMI peer went unseen but for a WARNING a minute."""
    hostile = {"Channel": "PJSIP/hostile-00000001", "Uniqueid": "1.1", "Linkedid": "7" * 152}
    ajam_replay.observe(Event(tuple({"Event": "Newchannel", **hostile}.items())))
    engine = await engine_factory(rules, plugins=[Owners()])
    assert sample(engine, "callrouter_events_refused_total") == 1  # the listing's item
    ajam_replay.queue_event(
        Event="Newchannel", Channel="PJSIP/100-00000002", Uniqueid="1.2", Linkedid="9" * 500
    )
    await ajam_replay.settle(engine)
    assert sample(engine, "callrouter_events_refused_total") == 2
    assert sample(engine, "callrouter_events_refused_total") == engine.tracker.refused


async def test_events_skipped_for_a_line_too_long_are_counted(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16: an AMI event with a line over 64 KiB (a hostile peer's) was
    skipped and said in a WARNING a minute, but no metric counted it. The
    count is the process's (router.ami.protocol.LONG_LINES): read before."""
    before = LONG_LINES.count
    hostile = "PJSIP/evil-00000001"
    ajam_replay.observe(
        Event(
            (
                ("Event", "Newchannel"),
                ("Channel", hostile),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
            )
        )
    )
    ajam_replay.channels[hostile].app_data = "x" * (70 * 1024)  # an item of the listing
    engine = await engine_factory(rules, plugins=[Owners()])
    assert sample(engine, "callrouter_events_skipped_total") == before + 1
    ajam_replay.queue_event(Event="Newexten", Channel="PJSIP/1-1", AppData="y" * (70 * 1024))
    ajam_replay.queue_event(Event="Newexten", Channel="PJSIP/1-1", AppData="1")
    await ajam_replay.settle(engine)
    assert sample(engine, "callrouter_events_skipped_total") == before + 2


async def test_calls_that_fell_through_while_down_are_counted_at_start(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    # Two calls went through the inbound context while no callrouter ran: the
    # dialplan marked them at its default label; a third is an internal call.
    # The second is a Local channel pair: its marked half is not its first channel.
    for number, fell in (("1", True), ("2", True), ("3", False)):
        channel = ajam_replay.add_channel(
            f"PJSIP/trunk-0000000{number}", context="callrouter-default", exten=ROUTED
        )
        channel.application = "Queue"
        if number == "2":
            half = ajam_replay.add_channel(
                "Local/74950000001@callrouter-inbound-00000001;2",
                context="callrouter-default",
                exten=ROUTED,
                linkedid=channel.linkedid,
            )
            half.variables[FELL_VARIABLE] = "1700000000"
        elif fell:
            channel.variables[FELL_VARIABLE] = "1700000000"
    engine = await engine_factory(rules, plugins=[Owners()])
    assert sample(engine, "callrouter_fallthroughs_total", cause="down") == 2
    # Only the reconcile at start counts them: a gap later does not count again.
    await engine.reconcile(trigger="gap")
    assert sample(engine, "callrouter_fallthroughs_total", cause="down") == 2


async def test_a_call_a_running_router_left_to_the_default_route_is_not_down_at_restart(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16: a call no rule took is counted ``no-rule`` when decided; still up
    on the default route when callrouter restarts, it was counted as ``down``
    again at every start. The router marks what it leaves to the default route;
    only a call nobody decided counts as ``down``."""
    engine = await engine_factory(rules, plugins=[Owners()])
    decided = ajam_replay.inbound_call(caller="+79161234567", did=UNROUTED)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert [r.outcome for r in engine.records] == ["fell-through"]
    assert sample(engine, "callrouter_fallthroughs_total", cause="no-rule") == 1
    [mark] = ajam_replay.sent("Setvar")
    assert (mark["Channel"], mark["Variable"], mark["Value"]) == (
        decided,
        DECIDED_VARIABLE,
        "fell-through",
    )
    # Its wait ends: the dialplan's default label marks it, and it stays up (a queue).
    ajam_replay.channels[decided].variables[FELL_VARIABLE] = str(int(time.time()))
    await engine_factory.close()
    # While no callrouter runs, another call falls through.
    nobody = ajam_replay.add_channel("PJSIP/trunk-000000aa", context="callrouter-default")
    nobody.variables[FELL_VARIABLE] = str(int(time.time()))
    again = await engine_factory(rules, plugins=[Owners()])
    assert sample(again, "callrouter_fallthroughs_total", cause="down") == 1
    await engine_factory.close()
    third = await engine_factory(rules, plugins=[Owners()])
    assert sample(third, "callrouter_fallthroughs_total", cause="down") == 1  # that one only


async def test_a_decision_that_only_tags_the_call_marks_it_too(
    engine_factory: EngineFactory, tmp_path: Path, ajam_replay: ReplayAsterisk
) -> None:
    """ "Tag and go on" (docs/rules.md) executes, and the call still takes the
    default route when its wait ends: marked, so a restart does not count it as
    ``down``. A decision that redirects the call is not marked (it left)."""
    rules = tmp_path / "tag.yaml"
    rules.write_text(
        RULES
        + """
  - name: tag
    on: call
    if: did == "74950000002"
    do:
      - setvar: {CRM_VIP: "1"}
""",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Owners()])
    tagged = ajam_replay.inbound_call(caller="+79161234567", did=UNROUTED)
    routed = ajam_replay.inbound_call(caller="+79161234568", did=ROUTED)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert sorted(r.outcome for r in engine.records) == ["executed", "executed"]
    marks = [m for m in ajam_replay.sent("Setvar") if m["Variable"] == DECIDED_VARIABLE]
    assert [(m["Channel"], m["Value"]) for m in marks] == [(tagged, "executed")]
    assert routed != tagged


class Names:
    """A lookup answering a client card whose name holds a line break (1C's editors
    can type one), and 102 for every number."""

    __name__ = "names"

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def card(number: str) -> dict[str, str]:
            return {"name": "Ромашка\r\nEvent: Hangup", "extension": "102"}

        registry.add_lookup("test.card", card)


async def test_a_refused_setvar_beside_a_confirmed_redirect_is_no_fallthrough(
    engine_factory: EngineFactory, tmp_path: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16: a 1C client name with a line break makes the ``setvar`` of it
    ``failed`` (refused before sending) while the ``redirect`` is confirmed: the
    call went to 102, yet it counted in ``callrouter_fallthroughs_total{cause=
    "failed"}`` ("calls sent to the dialplan's default route") and was marked as
    left there, so one CRM card could page whoever watches fallthroughs. A
    redirect that fails still counts."""
    rules = tmp_path / "card.yaml"
    rules.write_text(
        """
version: 1
rules:
  - name: card
    on: call
    lookup:
      card: test.card(caller.number)
    do:
      - setvar: {CRM_CLIENT: "{card.name}"}
      - redirect: {context: managers, exten: "{card.extension}"}
""",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Names()])
    moved = ajam_replay.inbound_call(caller="+79161234567", did=ROUTED)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    [record] = engine.records
    assert record.outcome == "failed"
    assert [(a.kind, a.status) for a in record.actions] == [
        ("setvar", "failed"),
        ("redirect", "confirmed"),
    ]
    assert [r["Exten"] for r in ajam_replay.sent("Redirect")] == ["102"]
    assert sample(engine, "callrouter_decisions_total", rule="card", outcome="failed") == 1
    assert sample(engine, "callrouter_fallthroughs_total", cause="failed") == 0
    marks = [m for m in ajam_replay.sent("Setvar") if m["Variable"] == DECIDED_VARIABLE]
    assert marks == []

    # Asterisk refuses the redirect: that call did stay, and counts.
    ajam_replay.on("Redirect", lambda sent: [("Response", "Error"), ("Message", "No such")])
    stayed = ajam_replay.inbound_call(caller="+79161234568", did=ROUTED)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert engine.records[-1].outcome == "failed"
    assert sample(engine, "callrouter_fallthroughs_total", cause="failed") == 1
    marks = [m for m in ajam_replay.sent("Setvar") if m["Variable"] == DECIDED_VARIABLE]
    assert [(m["Channel"], m["Value"]) for m in marks] == [(stayed, "failed")]
    assert moved != stayed


class Transfers:
    """A plugin action that moves the call itself and says so (``routes=True``)."""

    __name__ = "transfers"

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_action(ActionSpec("transfer", (ParamSpec("exten"),), routes=True))

    @hookimpl
    async def callrouter_execute(self, action: Action, call: Call, engine: EngineAPI) -> str | None:
        if action.kind != "transfer":
            return None
        await engine.ami.redirect(
            channel=call.waiting_channel,
            context="managers",
            exten=action.params["exten"],
            priority=1,
        )
        return "transferred"


async def test_what_moves_the_call_is_the_action_s_routes(
    engine_factory: EngineFactory, tmp_path: Path, ajam_replay: ReplayAsterisk
) -> None:
    """A plugin's action declaring ``routes`` moved the call, as ``redirect``
    does: it was marked as left to the default route all the same (one Setvar
    more a call, after it left); an ``ami`` action counted as moving the call
    whatever it was, so a ``UserEvent`` that only tags it was not marked."""
    rules = tmp_path / "moves.yaml"
    rules.write_text(
        """
version: 1
rules:
  - name: plugin
    on: call
    if: did == "74950000001"
    do:
      - transfer: {exten: "101"}
  - name: ami-redirect
    on: call
    if: did == "74950000002"
    do:
      - ami: {action: Redirect, channel: "{call.channel}", context: managers, exten: "102",
              priority: 1}
  - name: ami-tag
    on: call
    if: did == "74950000003"
    do:
      - ami: {action: UserEvent, userevent: CrmSeen}
""",
        encoding="utf-8",
    )
    engine = await engine_factory(rules, plugins=[Transfers()])
    ajam_replay.inbound_call(caller="+79161234561", did="74950000001")
    ajam_replay.inbound_call(caller="+79161234562", did="74950000002")
    tagged = ajam_replay.inbound_call(caller="+79161234563", did="74950000003")
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert [r.outcome for r in engine.records] == ["executed"] * 3
    assert sorted(r["Exten"] for r in ajam_replay.sent("Redirect")) == ["101", "102"]
    marks = [m for m in ajam_replay.sent("Setvar") if m["Variable"] == DECIDED_VARIABLE]
    assert [(m["Channel"], m["Value"]) for m in marks] == [(tagged, "executed")]


async def test_a_shadow_router_marks_no_call(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Shadow mode sends Asterisk nothing, the mark included."""
    engine = await engine_factory(rules, plugins=[Owners()], shadow=True)
    ajam_replay.inbound_call(caller="+79161234567", did=UNROUTED)
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert [r.outcome for r in engine.records] == ["fell-through"]
    assert ajam_replay.count("Setvar") == 0


async def test_call_life_events_are_counted_by_kind(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    from router.testing.cel import answered_call, as_ami

    told = Told()
    engine = await engine_factory(rules, plugins=[Owners(), told])
    ajam_replay.queue_events([as_ami(r) for r in answered_call().records])
    await ajam_replay.settle(engine)
    for kind in ("ringing", "answered", "hangup"):
        assert sample(engine, "callrouter_call_events_total", kind=kind, replayed="false") == 1
    assert sample(engine, "callrouter_call_events_total", kind="missed", replayed="false") == 0
    assert [e.kind for e in told.events] == ["ringing", "answered", "hangup"]


async def test_without_a_call_event_plugin_no_call_life_is_counted(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """The counter counts what plugins are told: with nobody to tell, CEL that
    still arrives (a user whose class mask lets it through) is not folded."""
    from router.testing.cel import answered_call, as_ami

    engine = await engine_factory(rules, plugins=[Owners()])
    ajam_replay.queue_events([as_ami(r) for r in answered_call().records])
    await ajam_replay.settle(engine)
    assert engine.calllife.emitted == 0
    assert len(engine.calllife.folder) == 0
    for kind in ("ringing", "answered", "hangup"):
        assert sample(engine, "callrouter_call_events_total", kind=kind, replayed="false") == 0


async def test_reloads_by_result_and_rules_loaded(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    engine = await engine_factory(rules, plugins=[Owners()])
    assert sample(engine, "callrouter_rules_loaded") == 1
    more = RULES + RULES.split("rules:\n", 1)[1].replace("vip", "vip2")
    await asyncio.to_thread(rules.write_text, more, "utf-8")
    await engine.reload_in_thread()
    assert sample(engine, "callrouter_rule_reloads_total", result="ok") == 1
    assert sample(engine, "callrouter_rules_loaded") == 2
    await asyncio.to_thread(rules.write_text, "version: 1\nrules: [", "utf-8")
    await engine.reload_in_thread()
    assert sample(engine, "callrouter_rule_reloads_total", result="refused") == 1
    assert sample(engine, "callrouter_rules_loaded") == 2  # the previous rules are kept


async def test_ready_and_active_calls_are_read_at_scrape(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    engine = await engine_factory(rules, plugins=[Owners()])
    assert engine.health().ready
    assert sample(engine, "callrouter_ready") == 1
    ajam_replay.inbound_call(caller="+79161234567", did=UNROUTED)
    await ajam_replay.settle(engine)
    assert sample(engine, "callrouter_calls_active") == 1
    engine.request_stop()
    await engine.stop()
    health = engine.health()
    assert not health.ready
    assert "not serving: starting or stopping" in health.reasons
    assert sample(engine, "callrouter_ready") == 0


def test_readiness_names_every_failed_check() -> None:
    health = readiness(logged_in=True, stream_current=False, rule_problems=2, rules=5, serving=True)
    assert not health.ready
    assert health.checks == {
        "asterisk": True,
        "event_stream": False,
        "user_events": True,
        "privileges": True,
        "rules": False,
        "serving": True,
    }
    assert health.reasons == (
        "the event stream is not current: Asterisk does not answer its polls",
        "2 problems in the rules or plugins (callrouter check)",
    )
    assert health.status_line().startswith("not ready: the event stream")
    ok = readiness(logged_in=True, stream_current=True, rule_problems=0, rules=5, serving=True)
    assert ok.ready
    assert ok.status_line() == "routing calls (5 rules)"


def test_readiness_without_user_events_names_each_cause_to_check() -> None:
    """The own heartbeat not coming back (router/liveguard.py): not ready, and
    the reason says what stops the requests and where to look."""
    health = readiness(
        logged_in=True,
        stream_current=True,
        rule_problems=0,
        rules=5,
        serving=True,
        user_events=False,
        unheard_for=6.4,
    )
    assert not health.ready
    assert health.checks["user_events"] is False
    (reason,) = health.reasons
    assert reason.startswith("Asterisk sends this router no UserEvent (its own heartbeat has not")
    assert "back for 6 s)" in reason
    for cause in ("add user to the read line", "eventfilter", "disabledevents"):
        assert cause in reason
    assert health.status_line() == "not ready: " + reason


def test_rule_labels_are_capped_and_cut() -> None:
    label = BoundedLabel(cap=3)
    assert [label(v) for v in ("a", "b", "a", "c", "d", "e")] == ["a", "b", "a", "c", OTHER, OTHER]
    assert label("") == OTHER  # the cap is reached: even '-' is new
    assert BoundedLabel()("x" * 300) == "x" * 64
    assert BoundedLabel()("") == "-"


def test_thousands_of_rules_never_make_thousands_of_series() -> None:
    metrics = Metrics(event_names=())
    for n in range(5000):
        metrics.decided([f"rule{n}"], "executed", evaluate_seconds=0.001, asterisk_seconds=None)
    rules = {
        s.labels["rule"]
        for family in metrics.registry.collect()
        if family.name == "callrouter_decisions"
        for s in family.samples
        if s.name == "callrouter_decisions_total"
    }
    assert len(rules) == 201  # the cap, and 'other'
    assert OTHER in rules


def test_queue_gauge_age_grows_until_updated() -> None:
    now = [1000.0]
    queue = QueueGauge("onec_history", clock=lambda: now[0])
    assert queue.age() == 0.0
    queue.update(3, 990.0)
    now[0] = 1005.0
    assert (queue.depth, queue.age()) == (3, 15.0)
    queue.update(0, 990.0)  # empty: no oldest item, whatever the owner passed
    assert queue.age() == 0.0
    metrics = Metrics(event_names=())
    assert metrics.queue("recordings") is metrics.queue("recordings")
    with pytest.raises(ValueError, match="queue name"):
        metrics.queue("Bad Name")


def test_queue_gauge_reads_its_owner_at_scrape() -> None:
    """Issue 16: an owner keeping its depth in memory hands a reader, called at
    each scrape, so a scrape right after the queue drained shows it drained."""
    now = [1000.0]
    held: list[tuple[int, float | None]] = [(2, 990.0)]
    metrics = Metrics(event_names=())
    queue = metrics.queues["onec_history"] = QueueGauge("onec_history", clock=lambda: now[0])
    queue.update(7, 900.0)  # what a timed job saw: the reader wins
    queue.set_function(lambda: held[0])

    def scraped() -> tuple[float, float]:
        text = exposition(metrics).decode()
        found = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.labels.get("queue") == "onec_history"
        }
        return found["callrouter_queue_depth"], found["callrouter_queue_oldest_seconds"]

    assert scraped() == (2.0, 10.0)
    held[0] = (0, 990.0)  # empty: no oldest item, whatever the reader says
    assert scraped() == (0.0, 0.0)
    assert (queue.depth, queue.oldest) == (0, None)
    queue.set_function(None)
    assert scraped() == (7.0, 100.0)


def test_two_engines_metrics_do_not_collide() -> None:
    first, second = Metrics(event_names=()), Metrics(event_names=())
    first.counter("callrouter_x_things", "things")
    second.counter("callrouter_x_things", "things")  # its own registry: no clash
    with pytest.raises(ValueError, match="Duplicated"):
        first.counter("callrouter_x_things", "things")


class Stalled:
    """A lookup that answers nothing until the test lets it (a 1C slow to answer)."""

    __name__ = "stalled"

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def owner(number: str) -> str | None:
            self.asked.set()
            await self.answer.wait()
            return None  # 1C knows no such client: no rule matches

        registry.add_lookup("test.owner", owner)


async def test_a_caller_who_hung_up_before_the_decision_is_no_fallthrough(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """A caller hung up while 1C was slow to answer; no rule matched then. The
    call never took the default route, yet the trial of issue 16 counted it in
    ``callrouter_fallthroughs_total{cause="no-rule"}`` and logged it
    ``fell-through`` (a slow 1C makes callers hang up, so the alert on the
    default route fired for calls nobody routed anywhere), and marked the gone
    channel. It is ``caller-gone`` (docs/operations.md), counted once, as such."""
    stalled = Stalled()
    engine = await engine_factory(rules, plugins=[stalled])
    channel = ajam_replay.inbound_call(caller="+79161234555", did=ROUTED)
    await asyncio.wait_for(stalled.asked.wait(), 5)
    ajam_replay.hangup(channel)
    await ajam_replay.consumed(5)  # fetched, and handled before the next poll
    await eventually(lambda: engine.tracker.by_channel(channel) is None, "the Hangup handled")
    stalled.answer.set()
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert [r.outcome for r in engine.records] == ["caller-gone"]
    assert sample(engine, "callrouter_decisions_total", rule="-", outcome="caller-gone") == 1
    assert sample(engine, "callrouter_decisions_total", rule="-", outcome="fell-through") == 0
    for cause in ("no-rule", "late", "failed"):
        assert sample(engine, "callrouter_fallthroughs_total", cause=cause) == 0
    assert not [m for m in ajam_replay.sent("Setvar") if m["Variable"] == DECIDED_VARIABLE]


def test_an_evaluation_or_lookup_cut_at_the_calls_deadline_falls_in_a_finite_bucket() -> None:
    """With the shipped dialplan a call waits 4 s and a decision is cut 0.3 s
    before that; evaluations and lookups that ran up to that deadline (1C slow,
    the very time the dashboard's p95 matters) fell past the top bucket (2.5 s)
    into +Inf only, so histogram_quantile said 2.5 s of 3.7 s."""
    from router.dialplan import DEFAULT_WAIT, SAFETY_MARGIN

    class Cut:
        lookup = "onec.responsible"
        ms = (DEFAULT_WAIT - SAFETY_MARGIN) * 1000
        error = "no answer before the call's deadline"
        reused = False

    metrics = Metrics(event_names=())
    metrics.decided(
        [],
        "late",
        evaluate_seconds=DEFAULT_WAIT - SAFETY_MARGIN,
        asterisk_seconds=None,
        lookups=[Cut()],
    )
    text = exposition(metrics).decode()
    for family in ("callrouter_evaluate_seconds", "callrouter_lookup_seconds"):
        finite = [
            s
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == f"{family}_bucket" and s.labels["le"] != "+Inf" and s.value == 1
        ]
        assert finite, f"{family}: counted in +Inf only"


async def test_a_caller_who_hung_up_before_a_decision_that_ended_past_the_deadline_is_gone(
    engine_factory: EngineFactory,
    rules: Path,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hreview48: 1C answering nothing at all (the usual slow 1C), the caller
    hangs up a moment into the wait; the lookup is cut at the call's deadline,
    so the evaluation ends at or past it, and the hang-up seen well before it
    counted as ``late``: a fallthrough in callrouter_fallthroughs_total for a
    call that never took the default route. When the Hangup came is what
    tells, not when the evaluation ended: here the router's clock is moved
    past the deadline once the Hangup is handled, before the lookup answers."""
    shift = [0.0]
    clock = types.SimpleNamespace(
        monotonic=lambda: time.monotonic() + shift[0],
        time=time.time,
        perf_counter=time.perf_counter,
    )
    monkeypatch.setattr("router.routing.time", clock)
    stalled = Stalled()
    engine = await engine_factory(rules, plugins=[stalled])
    channel = ajam_replay.inbound_call(caller="+79161234555", did=ROUTED)
    await asyncio.wait_for(stalled.asked.wait(), 5)
    ajam_replay.hangup(channel)
    await ajam_replay.consumed(5)
    await eventually(lambda: engine.tracker.by_channel(channel) is None, "the Hangup handled")
    shift[0] = 3600.0  # the evaluation ends an hour past the call's deadline
    stalled.answer.set()
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert [r.outcome for r in engine.records] == ["caller-gone"]
    for cause in ("no-rule", "late", "failed"):
        assert sample(engine, "callrouter_fallthroughs_total", cause=cause) == 0


class StalledEach:
    """A lookup that answers nothing until the test lets each asking go, in turn."""

    __name__ = "stalled-each"

    def __init__(self) -> None:
        self.asked: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def owner(number: str) -> str | None:
            answer = asyncio.Event()
            self.asked.put_nowait(answer)
            await answer.wait()
            return None  # no rule matches

        registry.add_lookup("test.owner", owner)


async def test_two_decisions_of_one_channel_each_keep_the_hang_up(
    engine_factory: EngineFactory, rules: Path, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16 (hcase48): two decisions of one channel in flight (a second
    request read while the first is decided, under another Uniqueid) shared
    one hang-up mark, and the first to finish cleared it: the caller hung up
    during both, the first said ``caller-gone``, the second ``fell-through``
    (a fallthrough counted, the gone channel marked). Each keeps its own."""
    stalled = StalledEach()
    engine = await engine_factory(rules, plugins=[stalled])
    channel = ajam_replay.inbound_call(caller="+79161234555", did=ROUTED)
    first = await asyncio.wait_for(stalled.asked.get(), 5)
    # One name under another Uniqueid while the first is live: only after an
    # Asterisk restart, whose gap starts a new session of the stream (else the
    # second is a made-up request: router.calls.CallTracker.impostor).
    engine.tracker.new_session()
    ajam_replay.inbound_call(caller="+79161234555", did=ROUTED, channel=channel)
    second = await asyncio.wait_for(stalled.asked.get(), 5)
    ajam_replay.hangup(channel)
    await ajam_replay.consumed(5)  # fetched, and handled before the next poll
    await eventually(lambda: engine.tracker.by_channel(channel) is None, "the Hangup handled")
    first.set()
    await eventually(lambda: len(engine.records) == 1, "the first decided")
    second.set()
    await ajam_replay.settle(engine)
    await engine.wait_idle()
    assert [r.outcome for r in engine.records] == ["caller-gone", "caller-gone"]
    assert sample(engine, "callrouter_decisions_total", rule="-", outcome="fell-through") == 0
    assert not [m for m in ajam_replay.sent("Setvar") if m["Variable"] == DECIDED_VARIABLE]
