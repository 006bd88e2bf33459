"""The engine's call life (router/calllife/service.py): the replay mark across a
restart, the replay after a stream gap, and nothing raised into the engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_captured import ALL, FIXTURES, SCENARIOS, blocks

from router.calllife.fold import Folder
from router.calllife.model import CallEvent
from router.calllife.service import MARK_FILE, CallLife
from router.calllife.settings import HistorySettings
from router.calllife.sources import SqliteSource

SETTINGS = HistorySettings(cel=f"sqlite://{FIXTURES / 'cel.db'}", settle_delay=0)
EVENTS = [b for name in SCENARIOS for b in blocks(name)]
#: Asterisk's clock a little after the captures.
NOW = max(r.at for r in ALL) + 60


def expected_ids() -> list[str]:
    folder = Folder()
    return sorted(e.event_id for r in ALL for e in folder.feed(r))


def life(told: list[CallEvent], **kwargs: object) -> CallLife:
    async def emit(event: CallEvent) -> None:
        told.append(event)

    return CallLife(SETTINGS, emit, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


async def settle(service: CallLife) -> None:
    for _ in range(100):
        if not service._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the replay did not finish")


@pytest.mark.parametrize("cut", [0, 40, 75, 120, len(EVENTS)])
async def test_a_router_killed_mid_stream_tells_the_rest_after_its_restart(
    tmp_path: Path, cut: int
) -> None:
    first: list[CallEvent] = []
    before = life(first)
    before.start(tmp_path)
    for fields in EVENTS[:cut]:
        await before.ingest(fields["Event"], fields)
    before.write_mark()  # what the timed job did last before the SIGKILL
    if cut == 0:
        # Never saw a record: no mark, so a fresh router starts history now.
        (tmp_path / MARK_FILE).write_text(json.dumps({"mark": ALL[0].at - 1}), encoding="utf-8")
    second: list[CallEvent] = []
    after = life(second)
    after.start(tmp_path)
    await settle(after)
    ids = [e.event_id for e in second]
    assert len(ids) == len(set(ids))  # once per process
    assert sorted({e.event_id for e in first} | set(ids)) == expected_ids()
    assert all(e.replayed for e in second)


async def test_a_gap_is_replayed_and_live_continues(tmp_path: Path) -> None:
    told: list[CallEvent] = []
    service = life(told)
    service.start(tmp_path)
    for fields in EVENTS[:50]:
        await service.ingest(fields["Event"], fields)
    # Events 50..89 are lost; the stream comes back and the engine reports the gap.
    service.gap(ALL[0].at)
    await settle(service)
    for fields in EVENTS[90:]:
        await service.ingest(fields["Event"], fields)
    ids = [e.event_id for e in told]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == expected_ids()


async def test_without_a_store_a_gap_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    told: list[CallEvent] = []

    async def emit(event: CallEvent) -> None:
        told.append(event)

    service = CallLife(HistorySettings(), emit)
    service.start(tmp_path)
    service.gap(0.0)
    assert not service._tasks
    assert "no [history] cel store" in caplog.text


async def test_bad_events_never_reach_the_engine(caplog: pytest.LogCaptureFixture) -> None:
    told: list[CallEvent] = []
    service = life(told)
    await service.ingest("CEL", {"EventName": "CHAN_START"})  # no ids, no time
    await service.ingest("CEL", {"EventName": "HANGUP", "UniqueID": "u", "LinkedID": "l",
                                 "Timestamp": "nan", "EventTime": "x"})  # fmt: skip
    await service.ingest("Newstate", {"ChannelState": "5"})

    async def boom(event: CallEvent) -> None:
        raise RuntimeError("plugin facade bug")

    failing = CallLife(SETTINGS, boom)
    for fields in blocks("answered"):
        await failing.ingest(fields["Event"], fields)
    assert told == []
    assert failing.emitted == 3
    assert "not folded" in caplog.text


async def test_the_mark_is_the_oldest_open_call(tmp_path: Path) -> None:
    told: list[CallEvent] = []
    service = life(told)
    service.start(tmp_path)
    answered = blocks("answered")
    for fields in answered[:5]:  # the call has started, not ended
        await service.ingest(fields["Event"], fields)
    start = min(r.at for r in ALL if r.event == "CHAN_START")
    assert service.mark() == start
    await service.save_mark()
    assert json.loads((tmp_path / MARK_FILE).read_text(encoding="utf-8")) == {"mark": start}
    assert service.read_mark() == start


def test_the_fixture_store_is_what_the_tests_think() -> None:
    assert len(SqliteSource(FIXTURES / "cel.db").read(0)) == len(SCENARIOS) + 1
