"""The engine on the replaying fake Asterisk of ``router.testing``: start-up cases."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from router.ami.message import Event
from router.hookspecs import hookimpl
from router.metrics import exposition

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: everyone
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


async def test_calls_waiting_before_start_are_routed_once(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """callrouter restarted while calls wait: their requests were never seen, but
    the start-up reconcile finds the channels and routes each exactly once."""
    waiting = [
        ajam_replay.inbound_call(
            caller=f"7916123456{i}", did="74950000001", announce=False, wait=10
        )
        for i in range(3)
    ]
    engine = await engine_factory(rules)
    await ajam_replay.settle(engine)
    assert sorted(r["Channel"] for r in ajam_replay.sent("Redirect")) == sorted(waiting)
    assert [r.outcome for r in engine.records] == ["executed"] * 3


async def test_calls_past_their_deadline_are_left_to_the_dialplan(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    ajam_replay.inbound_call(caller="79161234567", did="74950000001", announce=False, wait=0.5)
    engine = await engine_factory(rules)
    await ajam_replay.settle(engine)
    assert ajam_replay.count("Redirect") == 0
    assert engine.records == []


async def test_calls_already_routed_before_start_are_tracked_to_their_end(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """callrouter restarted while a call it had routed rings in the dial context: the
    start-up reconcile tracks it from the channel listing, so its Hangup ends it and
    plugins hear ``call_end`` (the 1C plugin owes it a final event; issue 11 item 4)."""
    from router import hookimpl

    seen: list[tuple[str, str]] = []

    class Recorder:
        @hookimpl
        def callrouter_call_start(self, call: Any) -> None:
            seen.append(("start", call.linkedid))

        @hookimpl
        def callrouter_call_end(self, call: Any) -> None:
            seen.append(("end", call.linkedid))

    routed = ajam_replay.inbound_call(
        caller="79161234567", did="74950000001", announce=False, wait=0.5
    )
    channel = ajam_replay.channels[routed]
    channel.context, channel.exten, channel.application = "callrouter-dial", "101", "Dial"
    engine = await engine_factory(rules, plugins=[Recorder()])
    await ajam_replay.settle(engine)
    call = engine.tracker.get(channel.linkedid)
    assert call is not None
    assert call.caller_number == "79161234567"
    assert seen == [("start", channel.linkedid)]
    assert ajam_replay.count("Redirect") == 0  # tracked, never routed again
    ajam_replay.hangup(routed)
    await ajam_replay.settle(engine)
    assert seen == [("start", channel.linkedid), ("end", channel.linkedid)]
    assert engine.tracker.get(channel.linkedid) is None


async def test_calls_gone_during_a_gap_end_in_the_order_they_started(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """Issue 12 item 4: calls whose Hangups were lost end at the next reconcile,
    and plugins hear ``call_end`` first in, first out (the parked-callback list
    drained them last in, first out)."""
    from router import hookimpl

    ended: list[str] = []

    class Recorder:
        @hookimpl
        def callrouter_call_end(self, call: Any) -> None:
            ended.append(call.linkedid)

    engine = await engine_factory(rules, plugins=[Recorder()])
    channels = [
        ajam_replay.inbound_call(caller=f"7916123456{i}", did="74950000001") for i in range(3)
    ]
    await ajam_replay.settle(engine)
    linkedids = [ajam_replay.channels[name].linkedid for name in channels]
    for name in channels:  # hung up while the stream was away: no Hangup events
        del ajam_replay.channels[name]
    await engine.reconcile()
    assert ended == linkedids
    assert len(engine.tracker) == 0


async def test_a_call_listed_in_wait_is_routed_without_waiting_for_its_step(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """A request was read, then its Wait step was lost in a gap: the listing
    shows the channel in Wait, which is what the Redirect waits for
    (router/parking.py), so the reconcile routes it at once."""
    from router.ami.message import Event

    channel = "PJSIP/trunk-0000abcd"
    engine = await engine_factory(rules)
    ajam_replay.inbound_call(
        caller="79161234567", did="74950000001", announce=False, wait=10, channel=channel
    )
    fields = {"Event": "UserEvent", "UserEvent": "CallRouterRequest", "Channel": channel}
    fields |= {"Context": "callrouter-inbound", "Exten": "74950000001", "Priority": "6"}
    engine.parking.requested(Event(tuple(fields.items())))
    engine.parking.timeout = 5.0  # a wait for the step would outlast the test
    assert await engine.reconcile() == 1
    await ajam_replay.settle(engine)
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [channel]
    assert engine.metrics.park_waits.labels("unwatched")._value.get() == 1


async def test_a_redirect_lost_with_the_connection_is_routed_again_by_the_reconcile(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """The connection broke before Asterisk answered the Redirect (over TCP,
    Asterisk cut a reader that fell behind): whether it ran was unknown, and
    the call was remembered as decided, so the reconcile after the reconnect
    skipped it while it still waited in the inbound context, until its wait
    ran out. Still waiting, the Redirect never ran: it is routed again."""
    from router.errors import AMIConnectionError

    engine = await engine_factory(rules)
    send = engine.executor._ami.send
    broke = [True]

    async def breaking(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "Redirect" and broke[0]:
            broke[0] = False
            raise AMIConnectionError("Redirect: connection to tcp://pbx:5038 broke")
        return await send(name, *args, **kwargs)

    engine.executor._ami.send = breaking  # type: ignore[method-assign]
    channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001", wait=10)
    await ajam_replay.settle(engine)
    (first,) = engine.records
    assert first.outcome == "failed"
    assert ajam_replay.count("Redirect") == 0
    assert await engine.reconcile() == 1
    await ajam_replay.settle(engine)
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [channel]
    assert [r.outcome for r in engine.records] == ["failed", "executed"]


async def test_a_redirect_that_ran_before_the_connection_broke_is_not_sent_twice(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """Asterisk ran the Redirect, then the connection broke before its answer:
    the call left the inbound context, so the reconcile does not route it
    again (no second Redirect)."""
    from router.errors import AMIConnectionError

    engine = await engine_factory(rules)
    send = engine.executor._ami.send

    async def ran_then_broke(name: str, *args: Any, **kwargs: Any) -> Any:
        result = await send(name, *args, **kwargs)
        if name == "Redirect":
            raise AMIConnectionError("Redirect: connection to tcp://pbx:5038 broke")
        return result

    engine.executor._ami.send = ran_then_broke  # type: ignore[method-assign]
    ajam_replay.inbound_call(caller="79161234567", did="74950000001", wait=10)
    await ajam_replay.settle(engine)
    assert await engine.reconcile() == 0
    await ajam_replay.settle(engine)
    assert ajam_replay.count("Redirect") == 1


async def test_a_listed_channel_no_asterisk_could_name_is_neither_routed_nor_tracked(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """A hostile AMI peer's channel listing: a waiting channel whose name is
    longer than Asterisk makes was routed by the reconcile and remembered as
    routed, its call tracked. Now it is left to the dialplan's default route
    (fails open); a real waiting call beside it is routed (issue 16)."""
    hostile = "PJSIP/" + "9" * 1000
    ajam_replay.inbound_call(
        caller="79161234560", did="74950000001", announce=False, wait=10, channel=hostile
    )
    real = ajam_replay.inbound_call(
        caller="79161234561", did="74950000001", announce=False, wait=10
    )
    engine = await engine_factory(rules)
    await ajam_replay.settle(engine)
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [real]
    assert engine.router.remembered == 1
    assert engine.tracker.by_channel(hostile) is None
    assert engine.tracker.refused >= 1


class Listed:
    """A plugin that writes down the channels each reconcile listed."""

    __name__ = "listed"

    def __init__(self) -> None:
        self.listings: list[list[str]] = []

    @hookimpl
    def callrouter_channels_listed(self, channels: Sequence[Event]) -> None:
        self.listings.append([item.get("Channel") or "" for item in channels])


async def test_listed_items_no_asterisk_could_send_reach_no_plugin_nor_getvar(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """Issue 16 (hattack38): the tracker refused a listing item with an
    identity field longer than Asterisk sends, but ``callrouter_channels_listed``
    still handed it to every plugin (the recorder then asked ``BridgeList``
    for its bridge), and the start's count of calls that fell through asked
    ``Getvar`` of its channel. Such items are left out of all of it, each
    counted once; the real channel beside them is listed."""
    real = "PJSIP/103-00000001"
    hostile = {
        "PJSIP/104-00000002": {"Linkedid": "7" * 152},
        "PJSIP/105-00000003": {"Context": "c" * 81},
        "PJSIP/106-00000004": {"Exten": "1" * 81},
        "PJSIP/107-00000005": {"Priority": "1; x"},
        "PJSIP/108-00000006": {"Uniqueid": "u" * 152},
    }
    for channel, odd in {real: {}, **hostile}.items():
        fields = {
            "Event": "Newchannel",
            "Channel": channel,
            "Uniqueid": channel[-8:],
            "Linkedid": channel[-8:],
            "Context": "from-internal",
            "Exten": "101",
            "ChannelState": "6",
            "ChannelStateDesc": "Up",
            **odd,
        }
        ajam_replay.observe(Event(tuple(fields.items())))
    listed = Listed()
    engine = await engine_factory(rules, plugins=[listed])
    await ajam_replay.settle(engine)
    assert listed.listings == [[real]]
    assert engine.tracker.by_channel(real) is not None
    assert engine.tracker.refused == len(hostile)
    asked = {g.get("Channel") for g in ajam_replay.sent("Getvar")}
    assert real in asked  # the fall-through count asked the real one
    assert not asked & set(hostile)


async def test_a_listed_channel_with_a_line_too_long_stops_no_reconcile(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """Issue 16 (hattack38): one channel of the listing whose line passed the
    parser's 64 KiB bound (a hostile AMI peer's ``ApplicationData``) failed
    the whole CoreShowChannels, so the whole reconcile: the calls waiting
    beside it were left to the default route. It is skipped; the rest is
    reconciled, and a plugin gets the channels listed."""
    hostile = "PJSIP/evil-00000001"
    ajam_replay.observe(
        Event(
            (
                ("Event", "Newchannel"),
                ("Channel", hostile),
                ("Uniqueid", "1.1"),
                ("Linkedid", "1.1"),
                ("ChannelState", "6"),
                ("ChannelStateDesc", "Up"),
            )
        )
    )
    ajam_replay.channels[hostile].app_data = "x" * (70 * 1024)
    waiting = ajam_replay.inbound_call(
        caller="79161234561", did="74950000001", announce=False, wait=10
    )
    listed = Listed()
    engine = await engine_factory(rules, plugins=[listed])
    await ajam_replay.settle(engine)
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [waiting]
    assert len(listed.listings) == 1
    assert hostile not in listed.listings[0]
    assert waiting in listed.listings[0]
    text = exposition(engine.metrics).decode()
    assert 'callrouter_reconciles_total{result="ok",trigger="start"} 1.0' in text


async def test_a_listing_whose_closing_event_has_a_line_too_long_stops_no_reconcile(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """Issue 16: the ``CoreShowChannelsComplete`` closing the listing had a
    line of over 64 KiB (a hostile AMI peer's) and was skipped like any such
    event: the list read as cut short (over AJAM; over TCP its action waited
    until it timed out) and the reconcile failed, the calls waiting left to
    the default route. It ends its list; the reconcile routes them."""

    def listing(sent: Any) -> bytes:
        body: str = ajam_replay._action_coreshowchannels(sent)
        closing = "Event: CoreShowChannelsComplete\r\n"
        assert body.count(closing) == 1
        junk = "Junk: " + "x" * (70 * 1024) + "\r\n"
        return body.replace(closing, closing + junk).encode()

    ajam_replay.on("CoreShowChannels", listing)
    waiting = ajam_replay.inbound_call(
        caller="79161234561", did="74950000001", announce=False, wait=10
    )
    listed = Listed()
    engine = await engine_factory(rules, plugins=[listed])
    await ajam_replay.settle(engine)
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [waiting]
    assert len(listed.listings) == 1
    assert waiting in listed.listings[0]
    text = exposition(engine.metrics).decode()
    assert 'callrouter_reconciles_total{result="ok",trigger="start"} 1.0' in text


async def test_a_call_whose_listed_channel_was_skipped_is_not_ended_by_the_reconcile(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    rules: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: a listed channel with a line over the parser's bound (its
    application's data 64 KiB long) is skipped, and the reconcile took its live
    call for gone: ``call_end`` told (1C heard a hang-up of a call still
    talking) and the call forgotten, its real Hangup then ended nothing. With
    the listing short of what its ``ListItems`` counts, no call missing from
    it is ended; its Hangup ends it."""
    ended: list[str] = []

    class Recorder:
        @hookimpl
        def callrouter_call_end(self, call: Any) -> None:
            ended.append(call.linkedid)

    engine = await engine_factory(rules, plugins=[Recorder()])
    talking, hung_up = (
        ajam_replay.inbound_call(caller=f"7916123456{i}", did="74950000001") for i in range(2)
    )
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[talking].linkedid
    ajam_replay.channels[talking].app_data = "x" * (70 * 1024)
    del ajam_replay.channels[hung_up]  # gone while the stream was away: no Hangup
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="router"):
        await engine.reconcile()
    assert ended == []
    assert engine.tracker.get(linkedid) is not None
    assert "CoreShowChannels listed 0 of the 1 channels it counted" in caplog.text
    assert "2 calls not listed kept, not ended" in caplog.text
    ajam_replay.channels[talking].app_data = ""
    ajam_replay.hangup(talking)
    await ajam_replay.settle(engine)
    assert ended == [linkedid]
    # The next whole listing ends the call that hung up meanwhile.
    await engine.reconcile()
    assert len(ended) == 2
    assert len(engine.tracker) == 0
