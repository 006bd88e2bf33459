"""The engine feeds the call life: live CEL in order, and after a stream gap the
calls of the gap replayed from the CEL store (router/engine.py, issue 14)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from router.ami.message import Event
from router.calllife.settings import HistorySettings
from router.calls import Call
from router.hookspecs import hookimpl
from router.testing.cel import Cel, as_ami, write_sqlite
from tests.unit.client_stub import Told
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = "version: 1\nrules: []\n"


def answered(linkedid: str, start: float) -> Cel:
    cel = Cel(linkedid, start=start)
    trunk = cel.channel("PJSIP/pstn", first=True, cid_num="89161234567", exten="74951234567")
    phone = cel.channel("PJSIP/101")
    cel.tick(1)
    cel.answer(phone)
    cel.answer(trunk)
    cel.tick(5)
    cel.hangup(phone, source=cel.name(phone))
    cel.hangup(trunk, source=cel.name(phone), dialstatus="ANSWER")
    cel.end()
    return cel


async def test_a_gap_is_replayed_from_the_store_and_told_once(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    store = tmp_path / "cel.db"
    now = time.time()
    seen_live = answered("pbx-100.1", now - 20)
    lost = answered("pbx-200.1", now - 5)  # happens while the session is gone
    write_sqlite(store, seen_live.records + lost.records)
    told = Told()
    settings = HistorySettings(cel=f"sqlite://{store}", settle_delay=0)
    engine = await engine_factory(rules, plugins=[told], history=settings)
    ajam_replay.queue_events([as_ami(r) for r in seen_live.records])
    await ajam_replay.settle(engine)
    assert [e.kind for e in told.events] == ["ringing", "answered", "hangup"]
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    await eventually(lambda: len(told.events) >= 6, "the replay's events")
    by_call = {e.event_id: e for e in told.events}
    assert len(by_call) == len(told.events) == 6  # the first call is not told again
    lost_events = [e for e in told.events if e.call_id == "pbx-200.1"]
    assert [e.kind for e in lost_events] == ["ringing", "answered", "hangup"]
    assert all(e.replayed for e in lost_events)


class Starts:
    __name__ = "starts"

    def __init__(self) -> None:
        self.started: list[str] = []

    @hookimpl
    def callrouter_call_start(self, call: object) -> None:
        self.started.append(getattr(call, "linkedid", ""))


async def test_cel_records_start_no_call_in_the_tracker(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """CEL arrives after a call's last Hangup (CHAN_END, LINKEDID_END): the call
    tracker must not take it for a new call (a phantom call_start, a call that
    never ends), whatever the call life does with it."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    starts = Starts()
    told = Told()
    engine = await engine_factory(rules, plugins=[starts, told])
    channel = ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    [call] = list(engine.tracker)
    linkedid = call.linkedid
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    assert len(engine.tracker) == 0
    cel = Cel(linkedid, start=time.time() - 1)
    cel.channel("PJSIP/pstn", first=True, cid_num="79161234567", exten="74951234567")
    cel.hangup(linkedid, dialstatus="NOANSWER")
    cel.end()
    ajam_replay.queue_events([as_ami(r) for r in cel.records])
    await ajam_replay.settle(engine)
    assert len(engine.tracker) == 0
    assert starts.started == [linkedid]
    assert [e.kind for e in told.events] == ["hangup", "missed"]  # the call life still folds it


class CelReader:
    __name__ = "cel_reader"

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str | None]] = []

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        return ("CEL",)

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        self.seen.append((event.get("EventName"), call.linkedid if call else None))


async def test_a_cel_record_reaches_plugins_listeners_and_event_rules_with_its_call(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """CEL records take a short way through the engine (issue 16: no tracker, no
    request or prefetch checks), yet everyone who read them before still does:
    a plugin that asked for CEL (with the call it belongs to), a listener, an
    event rule on CEL, and the call life."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: cel-answer\n    on: event CEL\n"
        '    if: event.eventname == "ANSWER"\n'
        "    do: [{ami: {action: DBPut, family: f, key: k, val: v}}]\n",
        encoding="utf-8",
    )
    reader, told = CelReader(), Told()
    engine = await engine_factory(rules, plugins=[reader, told])
    ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    [call] = list(engine.tracker)
    heard: list[tuple[str, Call | None]] = []
    stop = engine.watch(
        lambda item, of: heard.append((item.name, of)) if isinstance(item, Event) else None
    )
    # The answered call's records under this call's Linkedid (its phone leg
    # renamed: the replay's Linkedid may end in the ".2" Cel gives the phone).
    ids = {"pbx-500.1": call.linkedid, "pbx-500.2": f"{call.linkedid}-phone"}
    cel = answered("pbx-500.1", time.time() - 1)
    records = [replace(r, linkedid=call.linkedid, uniqueid=ids[r.uniqueid]) for r in cel.records]
    ajam_replay.queue_events([as_ami(r) for r in records])
    await ajam_replay.settle(engine)
    await eventually(lambda: len(ajam_replay.sent("DBPut")) >= 2, "the two DBPut")
    stop()
    assert reader.seen == [(r.event, call.linkedid) for r in records]
    assert [(name, of) for name, of in heard if name == "CEL"] == [("CEL", call)] * len(cel.records)
    assert [e.kind for e in told.events] == ["ringing", "answered", "hangup"]
    assert len(ajam_replay.sent("DBPut")) == 2  # the phone's ANSWER and the trunk's
    assert list(engine.tracker) == [call]  # CEL neither started nor ended a call
