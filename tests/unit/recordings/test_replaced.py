"""A recorded channel replaced by an INVITE with Replaces while in an application:
its MixMonitor goes on under the new INVITE's channel, which AMI does not name
(router/recordings/replaced.py; the sequence measured on Asterisk 22.10)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

import router.recordings.recorder as recorder_module
from router.calls import CallTracker
from router.errors import AMIError
from router.recordings.mixmonitor import start_recording
from router.recordings.recorder import Recorder
from router.recordings.replaced import CANDIDATES, WINDOW, arrivals
from router.recordings.settings import RecordingSettings
from router.recordings.store import Origin, Recording, RecordingStore
from router.testing.builders import make_event
from tests.unit.recordings.wavgen import write_wav

PBX_DIR = "/var/spool/asterisk/monitor/callrouter"
OLD, NEW = "PJSIP/102-00000000", "PJSIP/104-00000001"
OLD_CALL, NEW_CALL = "callrouter-sandbox-1796468433.0", "callrouter-sandbox-1796468435.1"


class _Asterisk:
    """Answers MixMonitor with an id and Getvar of MIXMONITOR_FILENAME from
    ``filenames``; a channel it does not have is refused, as Asterisk does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.filenames: dict[str, str] = {}

    async def send(self, name: str, headers: dict[str, str]) -> object:
        self.sent.append((name, dict(headers)))
        if name == "Getvar":
            channel = headers["Channel"]
            if channel not in self.filenames:
                raise AMIError("Getvar: No such channel")
            return SimpleNamespace(response={"Value": self.filenames[channel]})
        answer = {"MixMonitorID": "0x7f780000a430"} if name == "MixMonitor" else {}
        return SimpleNamespace(response=answer)

    def getvars(self) -> list[str]:
        return [h["Channel"] for name, h in self.sent if name == "Getvar"]


def channel_event(name: str, channel: str, linkedid: str) -> object:
    return make_event(name, Channel=channel, Uniqueid=linkedid, Linkedid=linkedid)


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The follow's wait scaled down (4.5 s in service)."""
    monkeypatch.setattr(recorder_module, "FOLLOW_AFTER", 1.5)


async def recording(
    tmp_path: Path, close_timeout: float
) -> tuple[Recorder, RecordingStore, CallTracker, _Asterisk, Recording]:
    """102's channel recorded (an API MixMonitor) while it waits in an application,
    its WAV being written; 104's INVITE with Replaces has made its channel."""
    tracker = CallTracker()
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=close_timeout)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    asterisk = _Asterisk()
    recorder._engine = SimpleNamespace(calls=tracker, ami=asterisk)  # type: ignore[assignment]
    tracker.feed(channel_event("Newchannel", OLD, OLD_CALL))  # type: ignore[arg-type]
    (row,) = await start_recording(
        asterisk.send, store, settings, call_id=OLD_CALL, channel=OLD, origin=Origin("api", "x")
    )
    write_wav(row.local_path, 1.0, complete=False)
    tracker.feed(channel_event("Newchannel", NEW, NEW_CALL))  # type: ignore[arg-type]
    return recorder, store, tracker, asterisk, row


def hang_up(recorder: Recorder, tracker: CallTracker, channel: str, linkedid: str) -> None:
    """As the engine: the tracker first, then the recorder with the call."""
    event = channel_event("Hangup", channel, linkedid)
    call = tracker.get(linkedid)
    fed = tracker.feed(event)  # type: ignore[arg-type]
    recorder.callrouter_event(event, call)  # type: ignore[arg-type]
    for ended in fed.ended:
        recorder.callrouter_call_end(ended)


@pytest.mark.usefixtures("quick")
async def test_the_file_follows_the_channel_its_mixmonitor_went_on_under(tmp_path: Path) -> None:
    """Before: the old name's Hangup closed a file Asterisk still wrote (failed or left
    to the sweep), max_duration and the API's stop named the old channel ('No such
    channel', taken for done), and 104's phone could not read it. Now the new
    channel that holds the file's name in MIXMONITOR_FILENAME takes the row over."""
    recorder, store, tracker, asterisk, row = await recording(tmp_path, close_timeout=5)
    asterisk.filenames[NEW] = row.pbx_path
    hang_up(recorder, tracker, OLD, OLD_CALL)
    await asyncio.wait_for(recorder.closed(), 10)
    (moved,) = store.for_call(OLD_CALL)
    assert (moved.channel, moved.state) == (NEW, "recording")
    assert "104" in moved.extensions
    assert asterisk.getvars() == [NEW]
    # The new channel's hang-up ends the MixMonitor: the file closes and is kept.
    write_wav(row.local_path, 4.0)
    hang_up(recorder, tracker, NEW, NEW_CALL)
    await asyncio.wait_for(recorder.closed(), 10)
    (closed,) = store.for_call(OLD_CALL)
    assert (closed.state, closed.channel) == ("closed", NEW)
    assert closed.duration == pytest.approx(4.0)
    await recorder.callrouter_shutdown()


@pytest.mark.usefixtures("quick")
async def test_a_new_channel_writing_another_file_is_not_taken(tmp_path: Path) -> None:
    recorder, store, tracker, asterisk, _row = await recording(tmp_path, close_timeout=3)
    asterisk.filenames[NEW] = f"{PBX_DIR}/someone-else.wav"
    hang_up(recorder, tracker, OLD, OLD_CALL)
    await asyncio.wait_for(recorder.closed(), 10)
    (kept,) = store.for_call(OLD_CALL)
    assert (kept.state, kept.channel) == ("failed", OLD)  # as before: incomplete
    assert asterisk.getvars() == [NEW]
    await recorder.callrouter_shutdown()


@pytest.mark.usefixtures("quick")
async def test_a_usual_hang_up_asks_asterisk_nothing(tmp_path: Path) -> None:
    """MixMonitor closes the file with its channel: no channel is asked about."""
    recorder, store, tracker, asterisk, row = await recording(tmp_path, close_timeout=5)
    asterisk.filenames[NEW] = row.pbx_path
    write_wav(row.local_path, 2.0)
    hang_up(recorder, tracker, OLD, OLD_CALL)
    await asyncio.wait_for(recorder.closed(), 10)
    (closed,) = store.for_call(OLD_CALL)
    assert (closed.state, closed.channel) == ("closed", OLD)
    assert asterisk.getvars() == []
    await recorder.callrouter_shutdown()


@pytest.mark.usefixtures("quick")
async def test_a_file_no_channel_holds_fails_as_before(tmp_path: Path) -> None:
    """Incomplete after the hang-up and no new channel writes it (Asterisk died, a
    crashed MixMonitor): asked, nothing found, the file fails as it did."""
    recorder, store, tracker, asterisk, _row = await recording(tmp_path, close_timeout=3)
    hang_up(recorder, tracker, OLD, OLD_CALL)
    await asyncio.wait_for(recorder.closed(), 10)
    (failed,) = store.for_call(OLD_CALL)
    assert (failed.state, failed.channel) == ("failed", OLD)
    assert asterisk.getvars() == [NEW]  # refused: no such channel
    await recorder.callrouter_shutdown()


def test_the_candidates_are_few_new_live_and_named_as_channels() -> None:
    now = 1000.0
    tracker = CallTracker(clock=lambda: now)
    tracker.feed(channel_event("Newchannel", "PJSIP/200-00000001", "old-call"))  # type: ignore[arg-type]
    now += WINDOW + 1
    for n in range(CANDIDATES + 3):
        now += 0.01
        tracker.feed(channel_event("Newchannel", f"PJSIP/3{n:02d}-0000000{n % 10}", f"c{n}"))  # type: ignore[arg-type]
    tracker.feed(channel_event("Newchannel", "Local/x@ctx-0001;1", "local"))  # type: ignore[arg-type]
    tracker.feed(channel_event("Newchannel", "bad name\r\nAction: X", "evil"))  # type: ignore[arg-type]
    tracker.feed(channel_event("Hangup", "PJSIP/310-00000000", "c10"))  # type: ignore[arg-type]
    names = arrivals(tracker, "PJSIP/309-00000009", now)
    assert names[0] == "Local/x@ctx-0001;1"  # newest first
    assert "PJSIP/200-00000001" not in names  # before the window
    assert "PJSIP/309-00000009" not in names  # the old channel itself
    assert "PJSIP/310-00000000" not in names  # hung up
    assert not any("\r" in n or " " in n for n in names)
    assert len(names) == CANDIDATES


@pytest.mark.usefixtures("quick")
async def test_a_failing_look_leaves_the_file_to_its_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The look for the new channel failing (here: the tracker) is logged, and the
    file is closed as it was before the look existed: never left unclosed."""
    recorder, store, tracker, asterisk, _row = await recording(tmp_path, close_timeout=3)

    def broken(*_: object) -> list[str]:
        raise RuntimeError("tracker broken")

    monkeypatch.setattr(recorder_module, "arrivals", broken)
    hang_up(recorder, tracker, OLD, OLD_CALL)
    await asyncio.wait_for(recorder.closed(), 10)
    (failed,) = store.for_call(OLD_CALL)
    assert (failed.state, failed.channel) == ("failed", OLD)
    assert "looking for its channel failed" in caplog.text
    assert asterisk.getvars() == []
    await recorder.callrouter_shutdown()
