"""A request read after other events is routed from its own text first (issue 16).

Over TCP a request's read also holds the call's new channels and its step into
the inbound context. When none of them could change the decision (nothing
reads them but the call tracker, the rules do not read ``call.vars``), the
engine decides and writes the Redirect before that read is parsed
(``Engine._route_early``); every event is then handled in Asterisk's order as
ever, and the call is claimed when its request comes again in order. When
something reads them (a plugin, an event rule, ``call.vars``), the read is
handled in order first, as before.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from router.ami.message import Event
from router.calls import Call
from router.engine import Engine
from router.hookspecs import hookimpl
from tests.unit.ami.tcp_fake import FakeAMI
from tests.unit.client_stub import EVERYONE, first_to_102
from tests.unit.engine_tcp import engine_on_tcp
from tests.unit.waiting import eventually

#: Engines here load installed plugins: one a plugin author installed (with
#: callrouter_call_start, its own metric families) changes what is asserted.
pytestmark = pytest.mark.usefixtures("only_shipped_plugins")

CHANNEL = "PJSIP/trunk-00000001"
#: An event the engine does not ask for: the parser counts it as it drops it,
#: so the count at the Redirect tells whether the read was parsed by then.
UNWANTED = b"Event: AgentLogin\r\nAgent: 1\r\n\r\n"
SNAPSHOT = (
    f"Channel: {CHANNEL}\r\nUniqueid: 1.1\r\nLinkedid: 1.1\r\nCallerIDNum: 79161234567\r\n"
    "CallerIDName: <unknown>\r\nContext: callrouter-inbound\r\nExten: 74950000001\r\n"
)
NEWCHANNEL = f"Event: Newchannel\r\nChannelStateDesc: Ring\r\n{SNAPSHOT}Priority: 1\r\n\r\n"
ENTRY = f"Event: Newexten\r\n{SNAPSHOT}Priority: 1\r\nApplication: Set\r\nAppData: x=1\r\n\r\n"
#: As Asterisk writes a dialplan's UserEvent(): the channel's snapshot, then its key.
REQUEST = (
    f"Event: UserEvent\r\n{SNAPSHOT}Priority: 6\r\nUserEvent: CallRouterRequest\r\nWait: 4\r\n\r\n"
)
WAIT_STEP = f"Event: Newexten\r\n{SNAPSHOT}Priority: 7\r\nApplication: Wait\r\nAppData: 4\r\n\r\n"
READ = UNWANTED + (NEWCHANNEL + ENTRY + REQUEST).encode() + UNWANTED + WAIT_STEP.encode()


class Decisions:
    """Records the order of what it is told: the events it reads, the decision."""

    __name__ = "decisions"

    def __init__(self, reads: tuple[str, ...] = ()) -> None:
        self.reads = reads
        self.told: list[tuple[str, str]] = []
        self.calls: list[Call] = []

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        return self.reads

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        self.told.append(("event", event.name))

    @hookimpl
    def callrouter_decision(self, call: Call, decision: Any, trace: Any, outcome: str) -> None:
        self.told.append(("decision", outcome))
        self.calls.append(call)


#: The channel came through the Redirect's target context before (a Goto from
#: there into the inbound context): that step, read before the request and
#: handled after the Redirect was written, is not the Redirect's landing.
PASSED = (
    f"Event: Newexten\r\n{SNAPSHOT.replace('callrouter-inbound', 'callrouter-dial')}"
    "Priority: 1\r\nApplication: Goto\r\nAppData: callrouter-inbound,74950000001,1\r\n\r\n"
)


#: Marker channels' numbers (:func:`handled`).
_MARKS = itertools.count(1)


async def handled(engine: Engine, fake: FakeAMI) -> None:
    """Every event pushed so far has been handled: a marker channel's
    Newchannel, pushed after them, is tracked (the engine handles events in
    Asterisk's order, and a request handled has spawned its routing by then),
    instead of a sleep that "nothing happened" within."""
    n = next(_MARKS)
    mark = f"Local/mark-{n:08d};1"
    fake.push(
        ("Event", "Newchannel"),
        ("Channel", mark),
        ("Uniqueid", f"9.{n}"),
        ("Linkedid", f"9.{n}"),
        ("ChannelStateDesc", "Down"),
        ("Context", "default"),
        ("Exten", "s"),
        ("Priority", "1"),
    )
    await eventually(lambda: engine.tracker.by_channel(mark) is not None, "the marker tracked")


async def redirected(dropped: list[int]) -> None:
    await eventually(lambda: dropped, "no Redirect")


async def settle(engine: Engine, fake: FakeAMI, dropped: list[int], context: str) -> None:
    """The Redirect written, Asterisk's landing step sent, the decision recorded."""
    await redirected(dropped)
    fake.push(
        ("Event", "Newexten"),
        ("Channel", CHANNEL),
        ("Uniqueid", "1.1"),
        ("Linkedid", "1.1"),
        ("Context", context),
        ("Exten", "101"),
        ("Priority", "1"),
        ("Application", "NoOp"),
    )
    await eventually(lambda: engine.records and not engine.router.tasks, "no decision")


async def test_the_request_goes_first_when_nothing_reads_the_events_before_it(
    tmp_path: Path,
) -> None:
    plugin = Decisions()  # reads no event: only the decision
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        fake.push_raw(
            UNWANTED + (NEWCHANNEL + PASSED + ENTRY + REQUEST).encode() + WAIT_STEP.encode()
        )
        await redirected(dropped)
        # Not even the unwanted event ahead of the request was parsed.
        assert dropped == [0]
        await eventually(
            lambda: (c := engine.tracker.by_channel(CHANNEL)) is not None and c.routed,
            "the call routed",
        )
        # Its earlier step in the target context is not taken for its landing.
        assert engine.executor.confirmations.waiting
        await settle(engine, fake, dropped, "callrouter-dial")
        (record,) = engine.records
        assert record.outcome == "executed"
        call = engine.tracker.by_channel(CHANNEL)
        # Claimed when the request came again in order: later requests ignored.
        assert call is not None
        assert call.routed
        assert call.waiting_channel == CHANNEL
        assert call.did == "74950000001"
        # The decision hook got the call, tracked from the events read with it.
        assert plugin.calls == [call]
        assert [entry.event for entry in call.timeline][:4] == [
            "Newchannel",
            "Newexten",
            "Newexten",
            "UserEvent",
        ]
        # The request's second coming routes nothing again.
        fake.push_raw(REQUEST.encode())
        await handled(engine, fake)
        assert dropped == [0]
        assert not engine.router.tasks
        assert len(engine.records) == 1


class LifeAndDecisions(Decisions):
    """Told the call life too, as the 1C plugin is."""

    __name__ = "life_and_decisions"

    @hookimpl
    def callrouter_call_event(self, event: Any) -> None:
        self.told.append(("life", "event"))


async def test_a_call_life_listener_still_gets_the_request_first(tmp_path: Path) -> None:
    """The call life folds the read's events in order, after the Redirect was
    written; the decision is told after them (and after the landing)."""
    plugin = LifeAndDecisions()
    ringing = f"Event: Newstate\r\nChannelStateDesc: Ringing\r\n{SNAPSHOT}Priority: 1\r\n\r\n"
    read = UNWANTED + (NEWCHANNEL + ENTRY + ringing + REQUEST).encode() + WAIT_STEP.encode()
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        assert engine.plugins.reads_call_events()
        fake.push_raw(read)
        await settle(engine, fake, dropped, "callrouter-dial")
        assert dropped == [0]
        (record,) = engine.records
        assert record.outcome == "executed"
        (call,) = plugin.calls
        assert [entry.event for entry in call.timeline][:4] == [
            "Newchannel",
            "Newexten",
            "Newstate",
            "UserEvent",
        ]
        assert plugin.told[-1] == ("decision", "executed")


async def test_events_someone_reads_are_handled_before_the_request(tmp_path: Path) -> None:
    plugin = Decisions(reads=("Newchannel",))
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        fake.push_raw(READ)
        await settle(engine, fake, dropped, "callrouter-dial")
        assert dropped == [1]  # the read up to the request was parsed first
        assert plugin.told == [("event", "Newchannel"), ("decision", "executed")]


async def test_rules_reading_call_vars_or_an_event_rule_keep_the_order(tmp_path: Path) -> None:
    vars_rules = first_to_102("tagged", 'if: call.vars.TAG == "x"')
    async with engine_on_tcp(tmp_path, vars_rules, [Decisions()]) as (engine, fake, dropped):
        fake.push_raw(READ)
        await settle(engine, fake, dropped, "callrouter-dial")
        assert dropped == [1]

    (tmp_path / "event").mkdir()
    event_rule = EVERYONE + (
        "  - name: entered\n    on: event Newexten\n"
        "    do: [{ami: {action: UserEvent, userevent: entered}}]\n"
    )
    async with engine_on_tcp(tmp_path / "event", event_rule, [Decisions()]) as (
        engine,
        fake,
        dropped,
    ):
        fake.push_raw(READ)
        await settle(engine, fake, dropped, "callrouter-dial")
        assert dropped == [1]


async def test_a_marker_smuggled_into_another_event_routes_nothing(tmp_path: Path) -> None:
    """A caller name that carried the request's header line would put it inside
    another event's block: that block is the other event, and nothing is routed."""
    plugin = Decisions()
    smuggled = (
        f"Event: Newchannel\r\nChannelStateDesc: Ring\r\n{SNAPSHOT}"
        "CallerIDName: x\r\nUserEvent: CallRouterRequest\r\nPriority: 1\r\n\r\n"
    )
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        fake.push_raw(UNWANTED + (NEWCHANNEL + ENTRY + smuggled).encode() + WAIT_STEP.encode())
        await handled(engine, fake)
        assert dropped == []
        assert engine.records == []
        call = engine.tracker.by_channel(CHANNEL)
        assert call is not None
        assert not call.routed


async def test_a_reload_that_brings_an_event_rule_keeps_the_order_from_then_on(
    tmp_path: Path,
) -> None:
    """Whether anyone reads the events ahead of a request is asked of the rule
    set in force: a reloaded set with an event rule on them keeps its
    request in its turn."""
    async with engine_on_tcp(tmp_path, EVERYONE, [Decisions()]) as (engine, fake, dropped):
        fake.push_raw(READ)
        await settle(engine, fake, dropped, "callrouter-dial")
        assert dropped == [0]  # nothing reads them: the request went first

        (tmp_path / "rules.yaml").write_text(
            EVERYONE + "  - name: entered\n    on: event Newexten\n"
            "    do: [{ami: {action: UserEvent, userevent: entered}}]\n",
            encoding="utf-8",
        )
        assert not engine.reload().errors
        other = "PJSIP/trunk-00000002"
        second = READ.replace(CHANNEL.encode(), other.encode()).replace(b": 1.1\r\n", b": 2.2\r\n")
        fake.push_raw(second)
        await eventually(lambda: len(dropped) == 2, "both Redirects written")
        # The first read's two unwanted events, and the second's ahead of its
        # request: that read was parsed, in order, before the Redirect.
        assert dropped == [0, 3]
        fake.push(
            *(("Event", "Newexten"), ("Channel", other), ("Uniqueid", "2.2")),
            *(("Linkedid", "2.2"), ("Context", "callrouter-dial"), ("Exten", "101")),
            *(("Priority", "1"), ("Application", "NoOp")),
        )
        await eventually(
            lambda: len(engine.records) == 2 and not engine.router.tasks, "both decisions recorded"
        )
        assert [r.outcome for r in engine.records] == ["executed", "executed"]


async def test_a_request_with_an_oversized_field_is_not_routed_early(tmp_path: Path) -> None:
    """A request Asterisk could not have sent (a 60 KB Uniqueid: the parser's
    line bound is 64 KB) read after
    other events is not decided from its own text: it is refused in order
    (router.calls.oversized) and nothing of it is remembered; a real request
    right after is routed early as ever."""
    plugin = Decisions()
    huge = "9" * 60_000
    forged = REQUEST.replace("Uniqueid: 1.1\r\n", f"Uniqueid: {huge}\r\n")
    assert huge in forged
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        # The start's dialplan audit over: a task after the read is the read's.
        await eventually(lambda: not engine.router.tasks, "the start's tasks done")
        fake.push_raw(UNWANTED + forged.encode() + UNWANTED)
        await handled(engine, fake)
        assert dropped == []
        assert engine.records == []
        assert not engine.router.tasks
        assert engine.tracker.by_channel(CHANNEL) is None
        assert not engine.executor.confirmations.waiting

        fake.push_raw(READ)
        await settle(engine, fake, dropped, "callrouter-dial")
        # The forged read's two unwanted events only: the real request went
        # before its read's unwanted event was parsed.
        assert dropped == [2]
        (record,) = engine.records
        assert record.outcome == "executed"
        call = engine.tracker.by_channel(CHANNEL)
        assert call is not None
        assert call.routed
        assert call.linkedid == "1.1"


@pytest.mark.parametrize("early", [True, False])
async def test_a_request_whose_caller_number_brought_an_exten_in_is_not_routed(
    tmp_path: Path, early: bool
) -> None:
    """Issue 16 (hattack46): Asterisk 22 writes ``CallerIDNum`` as the caller
    sent it, line breaks and all (the sandbox: a SIP From user
    ``7916%0D%0AContext:%20injected`` made the lines ``CallerIDNum: 7916`` and
    ``Context: injected`` in every event of the call, before the snapshot's
    own ``Context``). An ``Exten: 900`` so brought in read first, and the call
    was routed as a call to 900: the caller chose the number it dialled,
    past the dialplan's FILTER. A request holding a key twice that Asterisk
    writes once is refused, early and in order, and fails open (the call's
    wait ends and it takes the default route); a real request is routed."""
    plugin = Decisions()
    forged = REQUEST.replace(
        "CallerIDNum: 79161234567\r\n", "CallerIDNum: 79161234567\r\nExten: 900\r\n"
    )
    assert forged != REQUEST
    read = (UNWANTED if early else b"") + forged.encode() + UNWANTED
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        # The start's dialplan audit over: a task after the read is the read's.
        await eventually(lambda: not engine.router.tasks, "the start's tasks done")
        fake.push_raw(read)
        await handled(engine, fake)
        assert dropped == []
        assert engine.records == []
        assert not engine.router.tasks
        assert engine.tracker.by_channel(CHANNEL) is None
        assert engine.tracker.refused == 1

        fake.push_raw(READ)
        await settle(engine, fake, dropped, "callrouter-dial")
        (record,) = engine.records
        assert record.outcome == "executed"
        call = engine.tracker.by_channel(CHANNEL)
        assert call is not None
        assert call.did == "74950000001"


@pytest.mark.parametrize("early", [True, False])
async def test_a_request_made_up_for_a_tracked_channel_is_not_routed(
    tmp_path: Path, early: bool
) -> None:
    """hmxml49: a caller's number with blank lines writes an event of its own,
    which the rest of the real one completes with the caller's own Uniqueid
    (tests/unit/test_made_up_events.py): on the sandbox a request so made up
    for a call in progress between two phones got it redirected. A request
    naming a channel the tracker knows by another Uniqueid is refused, early
    and in order; nothing is redirected."""
    plugin = Decisions()
    victim = "PJSIP/103-00000001"
    forged = REQUEST.replace(f"Channel: {CHANNEL}", f"Channel: {victim}")
    read = (UNWANTED if early else b"") + forged.encode() + UNWANTED
    async with engine_on_tcp(tmp_path, EVERYONE, [plugin]) as (engine, fake, dropped):
        await eventually(lambda: not engine.router.tasks, "the start's tasks done")
        fake.push(
            ("Event", "Newchannel"),
            ("Channel", victim),
            ("ChannelStateDesc", "Up"),
            ("Uniqueid", "7.1"),
            ("Linkedid", "7.1"),
            ("Context", "sandbox-phones"),
            ("Exten", "103"),
            ("Priority", "1"),
        )
        await handled(engine, fake)  # the call in progress, tracked long before
        fake.push_raw(read)
        await handled(engine, fake)
        assert dropped == []
        assert engine.records == []
        assert not engine.router.tasks
        assert engine.tracker.refused == 1
        call = engine.tracker.by_channel(victim)
        assert call is not None
        assert call.linkedid == "7.1"
