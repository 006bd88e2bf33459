"""Engine decisions without Asterisk: once per request, deadlines, shadow, stop."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from router.ami.message import Event
from router.ami.protocol import ActionResult
from router.callerid import MAX_NUMBER, cut_number
from router.calls import CHANNELS_MAX
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.hookspecs import hookimpl
from router.plugins import Plugins
from router.rules.registry import Registry
from tests.unit.client_stub import ConfirmingClient

RULES = """version: 1
rules:
  - name: slow
    priority: 10
    on: call
    if: did == "2"
    lookup:
      x: slow_lookup(caller.number)
    when: x
    do:
      - redirect: {context: managers, exten: "1"}
  - name: default
    on: call
    do:
      - redirect: {context: queues, exten: sales}
"""

T = TypeVar("T")


class FakeClient(ConfirmingClient):
    """Answers every action with Success; Redirects confirm themselves."""

    async def action(
        self, name: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> ActionResult:
        """Actions sent by name (the dialplan audit's ShowDialPlan): Success, no items."""
        return await self.send(name, params)


class SlowLookup:
    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def slow_lookup(number: str) -> str:
            await asyncio.sleep(60)
            return "late"

        registry.add_lookup("slow_lookup", slow_lookup)


def request(channel: str, did: str = "1", *, wait: str = "4", uniqueid: str = "") -> Event:
    """As Asterisk writes a dialplan's UserEvent(): the channel's snapshot, then its key."""
    return Event(
        (
            ("Event", "UserEvent"),
            ("Channel", channel),
            ("Uniqueid", uniqueid or channel),
            ("Linkedid", channel),
            ("UserEvent", "CallRouterRequest"),
            ("DID", did),
            ("Caller", "79161234567"),
            ("Wait", wait),
            ("Timestamp", f"{time.time():.6f}"),
        )
    )


def leg(
    name: str,
    channel: str,
    number: str,
    *,
    linkedid: str,
    extra: Iterable[tuple[str, str]] = (),
    uniqueid: str = "",
    context: str = "",
    cname: str = "<unknown>",
    priority: str = "1",
) -> Event:
    """One ringing channel's event of a call to ``74951234567``, as Asterisk 22
    sends it, with ``extra`` fields: ``uniqueid`` by default one of the
    channel's own, ``context`` by default the trunk's for ``PJSIP/trunk-*`` and
    callrouter-inbound for the rest."""
    return Event(
        (
            ("Event", name),
            ("Channel", channel),
            ("ChannelState", "4"),
            ("ChannelStateDesc", "Ring"),
            ("CallerIDNum", number),
            ("CallerIDName", cname),
            (
                "Context",
                context
                or ("from-trunk" if channel.startswith("PJSIP/trunk-") else "callrouter-inbound"),
            ),
            ("Exten", "74951234567"),
            ("Priority", priority),
            ("Uniqueid", uniqueid or f"{linkedid}{len(channel)}"),
            ("Linkedid", linkedid),
            *extra,
        )
    )


def routing_request(caller: str) -> tuple[tuple[str, str], ...]:
    """The fields a :func:`leg` ``UserEvent`` adds to be the call's routing request."""
    return (
        ("UserEvent", "CallRouterRequest"),
        ("DID", "74951234567"),
        ("Caller", caller),
        ("Wait", "4"),
        ("Timestamp", f"{time.time():.6f}"),
    )


async def make_engine(tmp_path: Path, *, shadow: bool = False) -> tuple[Engine, FakeClient]:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
    )
    client = FakeClient()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=client,  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[SlowLookup()]),
        options=EngineOptions(watch_interval=0, safety_margin=0.3),
        shadow=shadow,
    )
    client.engine = engine
    loaded = await engine.setup()
    assert not loaded.errors
    return engine, client


async def prefetching_engine(tmp_path: Path, said: Callable[[Any], T]) -> tuple[Engine, list[T]]:
    """An engine (:func:`make_engine`) with a plugin that records ``said(call)``
    at each ``callrouter_prefetch``, as it is then; and that record."""
    seen: list[T] = []

    class Prefetcher:
        @hookimpl
        def callrouter_prefetch(self, call: Any) -> None:
            seen.append(said(call))

    engine, _ = await make_engine(tmp_path)
    engine.plugins.register(Prefetcher(), name="prefetcher")
    return engine, seen


def redirects(client: FakeClient) -> list[dict[str, Any]]:
    return [p for name, p in client.sent if name == "Redirect"]


async def test_one_decision_per_request_however_often_it_arrives(tmp_path: Path) -> None:
    engine, client = await make_engine(tmp_path)
    for _ in range(3):
        await engine.handle_event(request("Local/1@in-0;2"))
    await engine.wait_idle()
    assert len(redirects(client)) == 1
    assert [r.outcome for r in engine.records] == ["executed"]
    # Same channel name after an Asterisk restart, new Uniqueid: a new call.
    # A restart ends the event stream's session: a gap comes first (without
    # it, a channel named under another Uniqueid is made up: CallTracker.impostor).
    engine.tracker.new_session()
    await engine.handle_event(request("Local/1@in-0;2", uniqueid="after-restart"))
    await engine.wait_idle()
    assert len(redirects(client)) == 2


async def test_a_request_sent_through_ami_routes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The AMI action ``UserEvent`` (an API token with ``ami:UserEvent``) writes
    its key before the headers it was given: on the sandbox such a request
    naming a live channel got it redirected and hung up. Only a channel's own
    request (its snapshot first) is routed; the other is logged, once."""
    engine, client = await make_engine(tmp_path)
    real = request("Local/1@in-0;2")
    fields = [(k, v) for k, v in real.fields if k != "UserEvent"]
    forged = Event((fields[0], ("UserEvent", "CallRouterRequest"), *fields[1:]))
    with caplog.at_level(logging.WARNING, logger="router.engine"):
        for _ in range(2):
            await engine.handle_event(forged)
        await engine.wait_idle()
    assert redirects(client) == []
    assert engine.records == []
    told = [r.getMessage() for r in caplog.records if "sent through AMI" in r.getMessage()]
    assert len(told) == 1
    assert "Local/1@in-0;2" in told[0]
    await engine.handle_event(real)
    await engine.wait_idle()
    assert len(redirects(client)) == 1


async def test_a_request_with_a_field_no_asterisk_sends_is_kept_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hostile AMI peer's requests with a 64 KB Uniqueid, a fresh one each:
    each was remembered as routed (100,000 of them) and its call tracked. Now
    neither: the request fails open (the call's default route), said once;
    a real request right after is routed as ever (issue 16)."""
    engine, client = await make_engine(tmp_path)
    with caplog.at_level(logging.WARNING, logger="router.calls"):
        for n in range(50):
            await engine.handle_event(request(f"Local/{n}@in-0;2", uniqueid=f"{n}" + "7" * 65536))
        await engine.wait_idle()
    assert redirects(client) == []
    assert engine.router.remembered == 0
    assert len(engine.tracker) == 0
    told = [r.getMessage() for r in caplog.records if r.name == "router.calls"]
    assert len(told) == 1
    assert "Uniqueid of 65537 characters" in told[0]
    await engine.handle_event(request("Local/1@in-0;2"))
    await engine.wait_idle()
    assert len(redirects(client)) == 1
    assert engine.router.remembered == 1


EVENT_RULES = """version: 1
rules:
  - name: crm-hangup
    on: event UserEvent
    if: event.userevent == "CrmHangup" and call
    do:
      - ami: {action: Hangup, channel: "{event.channel}", cause: 16}
"""


class EventSeen:
    """Records the call each UserEvent reached plugins with."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    @hookimpl
    def callrouter_wanted_events(self) -> list[str]:
        return ["UserEvent"]

    @hookimpl
    def callrouter_event(self, event: Event, call: object) -> None:
        if event.get("UserEvent") == "CrmHangup":
            self.calls.append(call)


async def test_a_userevent_sent_through_ami_acts_on_no_call(tmp_path: Path) -> None:
    """The AMI action UserEvent writes whatever Channel and Linkedid its sender
    likes (after its key): it must not hand a rule or a plugin a live call to
    hang up, nor change (or, at the tracker's cap, evict) the calls tracked."""
    (tmp_path / "rules.yaml").write_text(EVENT_RULES)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
    )
    client = FakeClient()
    seen = EventSeen()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=client,  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[seen]),
        options=EngineOptions(watch_interval=0),
    )
    client.engine = engine
    assert not (await engine.setup()).errors
    live = [("Channel", "PJSIP/101-00000001"), ("Linkedid", "1.1"), ("Uniqueid", "1.1")]
    await engine.handle_event(
        Event((("Event", "Newchannel"), *live, ("Context", "office"), ("Exten", "102")))
    )
    forged = [("Context", "elsewhere"), ("Exten", "9"), ("ChannelStateDesc", "Up")]
    await engine.handle_event(
        Event((("Event", "UserEvent"), ("UserEvent", "CrmHangup"), *live, *forged))
    )
    await engine.handle_event(
        Event(
            (
                ("Event", "UserEvent"),
                ("UserEvent", "CrmHangup"),
                ("Linkedid", "2.1"),
                ("Channel", "PJSIP/evil-1"),
            )
        )
    )
    await engine.wait_idle()
    assert [name for name, _ in client.sent if name == "Hangup"] == []
    assert seen.calls == [None, None]
    (call,) = engine.api.calls
    channel = call.channels["PJSIP/101-00000001"]
    assert (channel.context, channel.exten, call.answered) == ("office", "102", False)
    # The same event from the channel's own dialplan (its snapshot first) acts.
    await engine.handle_event(
        Event((("Event", "UserEvent"), *live, ("Context", "office"), ("UserEvent", "CrmHangup")))
    )
    await engine.wait_idle()
    assert [p["channel"] for name, p in client.sent if name == "Hangup"] == ["PJSIP/101-00000001"]
    assert seen.calls[-1] is call


async def test_lookup_past_the_deadline_is_late_and_not_executed(tmp_path: Path) -> None:
    engine, client = await make_engine(tmp_path)
    started = time.monotonic()
    await engine.handle_event(request("Local/2@in-0;2", did="2", wait="0.8"))
    await engine.wait_idle()
    # Bounded by the deadline (0.8 s less the margin), not the 60 s lookup:
    # far below it, whatever the load (2 s against a 5 s lookup measured the
    # host; issue 16).
    assert time.monotonic() - started < 10
    assert redirects(client) == []
    (record,) = engine.records
    assert record.outcome == "late"
    assert record.deadline_left_ms <= 0


@pytest.mark.parametrize("wait", ["four", "4s", "", "-1", "0x4", "1e3", "nan", " 4", "٤"])
async def test_a_wait_header_that_is_no_number_counts_as_the_default_wait(
    tmp_path: Path, wait: str
) -> None:
    """hleft33's trial: `Wait: four` (a [globals] CALLROUTER_WAIT that is no
    number, from an older copy of the context, which sends it as it is) is
    not taken for a number: the call gets the default 4 s, less the margin,
    as a request without the header does (the shipped context now sends 4)."""
    engine, client = await make_engine(tmp_path)
    began = time.monotonic()
    await engine.handle_event(request("Local/6@in-0;2", did="6", wait=wait))
    await engine.wait_idle()
    took_ms = (time.monotonic() - began) * 1000
    assert len(redirects(client)) == 1
    (record,) = engine.records
    assert record.outcome == "executed"
    # 4 s less the 0.3 s margin, less what this run took from the request on
    # (the event's age and the decision's time; 50 ms for the wall clock the
    # age is read on): exact accounting, not a margin a loaded machine
    # outruns (3000 ms, 700 below, was one; issue 16).
    assert 3700 - took_ms - 50 <= record.deadline_left_ms <= 3700


async def test_shadow_mode_decides_but_sends_nothing(tmp_path: Path) -> None:
    engine, client = await make_engine(tmp_path, shadow=True)
    await engine.handle_event(request("Local/3@in-0;2"))
    await engine.wait_idle()
    assert client.sent == []
    assert [(r.outcome, r.rules) for r in engine.records] == [("shadow", ("default",))]


async def test_stopping_engine_takes_no_new_requests(tmp_path: Path) -> None:
    engine, client = await make_engine(tmp_path)
    engine.request_stop()
    await engine.handle_event(request("Local/4@in-0;2"))
    await engine.wait_idle()
    assert client.sent == []
    assert engine.records == []


@pytest.mark.parametrize("age", [0.0, 3.0])
async def test_deadline_counts_from_asterisks_timestamp(
    tmp_path: Path, age: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event that sat 3 s in a queue has only 1 s of its 4 s wait left."""
    engine, _ = await make_engine(tmp_path)
    # The router's clocks stand still: what is left is the wait less the event's
    # age and the margin, not less however long a loaded machine took to route.
    wall, mono = float(int(time.time())), time.monotonic()  # whole seconds: stamped exactly
    monkeypatch.setattr(
        "router.routing.time", SimpleNamespace(time=lambda: wall, monotonic=lambda: mono)
    )
    event = request("Local/5@in-0;2")
    stamped = Event(
        tuple((k, f"{wall - age:.6f}") if k == "Timestamp" else (k, v) for k, v in event.fields)
    )
    await engine.handle_event(stamped)
    await engine.wait_idle()
    (record,) = engine.records
    left = record.deadline_left_ms / 1000
    # Exactly the wait less the age and the 0.3 s margin (to float rounding).
    assert left == pytest.approx(4 - age - 0.3, abs=1e-6)


async def test_prefetch_once_when_the_call_appears_in_the_inbound_context(tmp_path: Path) -> None:
    engine, seen = await prefetching_engine(
        tmp_path, lambda call: (call.linkedid, call.caller_number, call.did)
    )
    common = (
        ("Linkedid", "L1"),
        ("CallerIDNum", "79161234567"),
        ("Context", "callrouter-inbound"),
        ("Exten", "74951234567"),
    )
    await engine.handle_event(
        Event((("Event", "Newchannel"), ("Channel", "Local/a;2"), ("Uniqueid", "U1"), *common))
    )
    await engine.handle_event(
        Event(
            (
                ("Event", "Newexten"),
                ("Channel", "Local/a;2"),
                ("Uniqueid", "U1"),
                ("Priority", "1"),
                *common,
            )
        )
    )
    await engine.handle_event(
        Event(
            (
                ("Event", "Newchannel"),
                ("Channel", "Local/b;1"),
                ("Uniqueid", "U2"),
                ("Linkedid", "L2"),
                ("Context", "elsewhere"),
            )
        )
    )
    assert seen == [("L1", "79161234567", "74951234567")]


async def test_the_prefetch_asks_about_the_number_the_dialplan_rewrote(tmp_path: Path) -> None:
    """A trunk's context completes the caller's number
    (``Set(CALLERID(num)=8499${CALLERID(num)})``, Asterisk 22's ``NewCallerid``)
    and goes on to the inbound context: the prefetch there is about the number
    the call will be routed with, not the trunk's (issue 16)."""
    engine, seen = await prefetching_engine(tmp_path, lambda call: call.caller_number)
    trunk = functools.partial(
        leg, channel="PJSIP/trunk-00000001", linkedid="1714557600.42", uniqueid="1714557600.42"
    )
    await engine.handle_event(trunk("Newchannel", number="1234567"))
    await engine.handle_event(trunk("Newexten", number="1234567"))
    await engine.handle_event(trunk("NewCallerid", number="84991234567"))
    await engine.handle_event(trunk("Newexten", number="84991234567", priority="2"))
    await engine.handle_event(trunk("Newexten", number="84991234567", context="callrouter-inbound"))
    assert seen == ["84991234567"]


async def test_a_call_through_a_local_channel_has_the_number_its_request_had(
    tmp_path: Path,
) -> None:
    """A call that comes in through a ``Local`` channel (an Originate, a trunk
    context that dials ``Local/...@callrouter-inbound``) has two halves with
    the caller's number: ``;1`` keeps the trunk's, ``;2`` runs the dialplan
    that rewrites it (``Set(CALLERID(num)=8${CALLERID(num)})``, Asterisk 22's
    ``NewCallerid``) and sends the routing request. The tracker read the number
    from ``;1``, the first to report it, and kept it (issue 16)."""
    engine, _ = await make_engine(tmp_path)
    linkedid = "1714557600.41"
    one = "Local/74951234567@callrouter-inbound-00000001;1"
    two = "Local/74951234567@callrouter-inbound-00000001;2"
    half_one = functools.partial(leg, channel=one, linkedid=linkedid, uniqueid="1714557600.41")
    half_two = functools.partial(leg, channel=two, linkedid=linkedid, uniqueid="1714557600.42")
    await engine.handle_event(half_one("Newchannel", number="9161234567"))
    await engine.handle_event(half_two("Newchannel", number="9161234567"))
    await engine.handle_event(half_two("NewCallerid", number="89161234567"))
    await engine.handle_event(half_one("Newstate", number="9161234567"))
    await engine.handle_event(
        half_two("UserEvent", number="89161234567", extra=routing_request("89161234567"))
    )
    await engine.handle_event(half_one("Newstate", number="9161234567"))
    await engine.wait_idle()
    call = engine._tracker.get(linkedid)
    assert call is not None
    assert call.caller_number == "89161234567"


async def test_a_trunk_that_dials_a_local_channel_has_the_number_its_request_had(
    tmp_path: Path,
) -> None:
    """A trunk's context that dials ``Local/${EXTEN}@callrouter-inbound`` (a
    common pattern) rings that Local channel first: its ``DialBegin`` is the
    call's first ring, and the tracker kept the trunk's number and name from
    then on. The routing request from the Local channel's ``;2`` half, whose
    dialplan rewrote the number, is the caller's (the events as Asterisk 22
    sends them on the sandbox; issue 16)."""
    engine, _ = await make_engine(tmp_path)
    linkedid = "1714557600.50"
    trunk = "PJSIP/trunk-00000001"
    one = "Local/74951234567@callrouter-inbound-00000001;1"
    two = "Local/74951234567@callrouter-inbound-00000001;2"
    ring = functools.partial(leg, linkedid=linkedid)
    await engine.handle_event(ring("Newchannel", trunk, "9161234567", cname="Ivan"))
    await engine.handle_event(ring("Newexten", trunk, "9161234567", cname="Ivan"))
    await engine.handle_event(ring("Newchannel", one, "<unknown>"))
    await engine.handle_event(ring("Newchannel", two, "<unknown>"))
    await engine.handle_event(ring("Newexten", one, "74951234567", cname="Ivan"))
    await engine.handle_event(
        ring("DialBegin", trunk, "9161234567", cname="Ivan", extra=[("DestChannel", one)])
    )
    await engine.handle_event(ring("Newexten", two, "89161234567", cname="Ivan Petrov"))
    await engine.handle_event(
        ring(
            "UserEvent",
            two,
            "89161234567",
            cname="Ivan Petrov",
            extra=routing_request("89161234567"),
        )
    )
    await engine.wait_idle()
    call = engine._tracker.get(linkedid)
    assert call is not None
    assert (call.caller_number, call.caller_name) == ("89161234567", "Ivan Petrov")
    # The call rings a phone from here: what it rang with stays.
    phone = [("DestChannel", "PJSIP/101-00000002")]
    await engine.handle_event(
        ring("DialBegin", two, "89161234567", cname="Ivan Petrov", extra=phone)
    )
    await engine.handle_event(ring("NewCallerid", two, "100", cname="Operator"))
    await engine.handle_event(ring("Newexten", two, "100", cname="Operator"))
    assert (call.caller_number, call.caller_name) == ("89161234567", "Ivan Petrov")


async def test_the_prefetch_of_a_call_a_trunk_hands_over_asks_the_number_the_local_channel_has(
    tmp_path: Path,
) -> None:
    """A trunk's context dials ``Local/${EXTEN}@rewrite``, whose ``;2`` half
    rewrites the number and goes on to callrouter-inbound: that half is the
    one that sends the routing request, so the prefetch at its step into the
    inbound context asks about its number, not the trunk's (issue 16)."""
    engine, seen = await prefetching_engine(tmp_path, lambda call: call.caller_number)
    linkedid = "1714557600.60"
    trunk = "PJSIP/trunk-00000001"
    one = "Local/74951234567@rewrite-00000001;1"
    two = "Local/74951234567@rewrite-00000001;2"
    ring = functools.partial(leg, linkedid=linkedid)
    await engine.handle_event(ring("Newchannel", trunk, "79161234567"))
    await engine.handle_event(ring("Newchannel", one, "<unknown>", context="rewrite"))
    await engine.handle_event(ring("Newchannel", two, "<unknown>", context="rewrite"))
    await engine.handle_event(ring("DialBegin", trunk, "79161234567", extra=[("DestChannel", one)]))
    await engine.handle_event(ring("Newexten", two, "84957770101"))
    await engine.wait_idle()
    assert seen == ["84957770101"]


async def test_a_trunk_that_dials_the_inbound_context_keeps_the_callers_number_not_the_did(
    tmp_path: Path,
) -> None:
    """A trunk's context that dials ``Local/${EXTEN}@callrouter-inbound``:
    the Local channel's ``;1`` half appears in the inbound context too (the
    prefetch starts there), and once the Dial connects it Asterisk 22 gives
    it the DID as its number. The call's number is the caller's throughout,
    never the DID (the events as the sandbox's Asterisk sends them; issue 16)."""
    engine, seen = await prefetching_engine(tmp_path, lambda call: call.caller_number)
    linkedid = "1714557600.70"
    trunk = "PJSIP/trunk-00000001"
    one = "Local/74951234567@callrouter-inbound-00000001;1"
    two = "Local/74951234567@callrouter-inbound-00000001;2"
    ring = functools.partial(leg, linkedid=linkedid)
    await engine.handle_event(ring("Newchannel", trunk, "79161234567"))
    await engine.handle_event(ring("Newchannel", one, "<unknown>"))
    await engine.handle_event(ring("Newchannel", two, "<unknown>"))
    await engine.handle_event(ring("Newexten", one, "74951234567"))
    call = engine._tracker.get(linkedid)
    assert call is not None
    assert call.caller_number == "79161234567"
    await engine.handle_event(ring("DialBegin", trunk, "79161234567", extra=[("DestChannel", one)]))
    await engine.handle_event(ring("Newexten", two, "79161234567"))
    await engine.handle_event(
        ring("UserEvent", two, "79161234567", extra=routing_request("79161234567"))
    )
    await engine.wait_idle()
    assert call.caller_number == "79161234567"
    assert seen == ["79161234567"]


async def test_the_prefetch_of_an_originated_local_call_asks_about_its_callers_number(
    tmp_path: Path,
) -> None:
    """An ``Originate`` of ``Local/DID@callrouter-inbound`` (a callback, the
    sandbox's and the benchmarks' calls): Asterisk creates both halves in the
    inbound context before it gives them the Originate's caller ID (the
    events of tests/fixtures/ami/waitevent_call.rawman, Asterisk 22). The
    prefetch started at the ``;1`` half's ``Newchannel``, with no number, and
    never again: 1C was asked about nothing, and the routing request's lookup
    found no answer ready (issue 16). The ``;2`` half's first step, the
    caller's leg with its number, starts it."""
    engine, seen = await prefetching_engine(tmp_path, lambda call: call.caller_number)
    linkedid = "1795460784.0"
    one = "Local/74951234567@callrouter-inbound-00000000;1"
    two = "Local/74951234567@callrouter-inbound-00000000;2"
    ring = functools.partial(leg, linkedid=linkedid)
    caller = "+79161234567"
    await engine.handle_event(ring("Newchannel", one, "<unknown>"))
    await engine.handle_event(ring("Newchannel", two, "<unknown>"))
    await engine.handle_event(ring("Newexten", one, "<unknown>", extra=[("Application", "Wait")]))
    await engine.handle_event(ring("NewCallerid", one, caller))
    await engine.handle_event(ring("NewCallerid", two, caller))
    await engine.handle_event(ring("DialBegin", "", "", extra=[("DestChannel", one)]))
    await engine.handle_event(ring("Newexten", two, caller))
    await engine.handle_event(ring("UserEvent", two, caller, extra=routing_request(caller)))
    await engine.wait_idle()
    assert seen == [caller]


async def test_the_did_seen_before_the_request_is_cut_as_the_request_s(tmp_path: Path) -> None:
    """The prefetch takes the call's DID from the inbound channel's exten (up to
    80 characters in Asterisk); the API documents ``did`` as 64 at most (the
    OpenAPI ``maxLength``), as the routing request's DID is cut (issue 16)."""
    engine, seen = await prefetching_engine(tmp_path, lambda call: call.did)
    exten = "7495" + "1" * 76
    await engine.handle_event(
        Event(
            (
                ("Event", "Newchannel"),
                ("Channel", "PJSIP/trunk-01"),
                ("Uniqueid", "L9"),
                ("Linkedid", "L9"),
                ("CallerIDNum", "79161234567"),
                ("Context", "callrouter-inbound"),
                ("Exten", exten),
            )
        )
    )
    assert seen == [cut_number(exten)]
    assert len(seen[0]) == MAX_NUMBER


async def test_lookups_see_the_request_being_routed(tmp_path: Path) -> None:
    from router import current_request

    seen: list[Any] = []

    class Spy:
        @hookimpl
        def callrouter_register(self, registry: Registry) -> None:
            async def spy(number: str) -> None:
                seen.append(current_request())

            registry.add_lookup("spy", spy)

    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: r\n    on: call\n    lookup:\n"
        "      s: spy(caller.number)\n    when: s\n    do:\n"
        "      - redirect: {context: x, exten: '1'}\n"
    )
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
    )
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=FakeClient(),  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[Spy()]),
        options=EngineOptions(watch_interval=0),
    )
    await engine.setup()
    assert current_request() is None
    await engine.handle_event(request("Local/9@in-0;2", did="74951234567"))
    await engine.wait_idle()
    (info,) = seen
    assert (info.channel, info.did, info.caller) == ("Local/9@in-0;2", "74951234567", "79161234567")
    assert info.deadline > time.monotonic() - 5
    assert current_request() is None  # set in the routing task only


async def test_two_engines_keep_their_own_builtin_settings(tmp_path: Path) -> None:
    """Built-ins with settings are instances per engine, not module globals."""
    engines = []
    for name, ext, zone_name in (("a", "101", "Europe/Moscow"), ("b", "202", "Asia/Omsk")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "rules.yaml").write_text(RULES)
        (folder / "router.toml").write_text(
            '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
            f'[router]\nrules = ["{folder / "rules.yaml"}"]\n'
            f'[plugins.directory.entries."79161234567"]\nextension = "{ext}"\n'
            f'[plugins.timefuncs]\ntimezone = "{zone_name}"\n'
        )
        engine = Engine(
            load_config(folder / "router.toml"),
            client=FakeClient(),  # type: ignore[arg-type]
            plugins=Plugins.load(entry_points=False, extra=[SlowLookup()]),
            options=EngineOptions(watch_interval=0),
        )
        await engine.setup()
        engines.append(engine)
    # The directory answers from memory: a plain value, no awaitable.
    answers = [e.registry.lookups["directory"].func("+7 916 123-45-67") for e in engines]
    assert [a["extension"] for a in answers] == ["101", "202"]
    assert [str(e.registry.timezone) for e in engines] == ["Europe/Moscow", "Asia/Omsk"]


async def test_a_routed_channel_a_full_call_let_go_is_forgotten_by_the_router(
    tmp_path: Path,
) -> None:
    """Issue 16: the channels a call lets go past ``CHANNELS_MAX`` (hung up,
    the call still up) take with them what routing kept of them, as the
    channels of an ended call do: nothing grows with the churn of one call."""
    engine, client = await make_engine(tmp_path)
    routed = "Local/1@in-0;2"
    await engine.handle_event(request(routed))
    await engine.wait_idle()
    assert len(redirects(client)) == 1
    # The caller's leg (its Linkedid is the routed channel's) stays up.
    trunk = (("Event", "Newchannel"), ("Channel", "PJSIP/trunk-1"), ("Linkedid", routed))
    await engine.handle_event(Event((*trunk, ("Uniqueid", "trunk-1"))))
    gone = (("Channel", routed), ("Uniqueid", routed), ("Linkedid", routed))
    await engine.handle_event(Event((("Event", "Hangup"), *gone)))
    assert routed in engine.router._routed
    assert routed in engine.executor.redirects
    for i in range(CHANNELS_MAX):
        agent = (("Channel", f"Local/a-{i};1"), ("Uniqueid", f"a{i}"), ("Linkedid", routed))
        await engine.handle_event(Event((("Event", "Newchannel"), *agent)))
        await engine.handle_event(Event((("Event", "Hangup"), *agent)))
    call = engine.tracker.get(routed)
    assert call is not None
    assert len(call.channels) <= CHANNELS_MAX
    assert routed not in engine.router._routed
    assert routed not in engine.executor.redirects
    assert len(engine.router._routed) == 0
