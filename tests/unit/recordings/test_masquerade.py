"""A recording on a channel that an attended transfer renames by a masquerade, on the
events Asterisk 22 sent on the sandbox (tests/fixtures/recordings).

The capture: phone 102 calls 101, 101 consults 555 (Answer, then Wait), an AMI
MixMonitor records the consultation channel ``PJSIP/101-00000002``, 101 sends REFER
with Replaces; then ``StopMixMonitor`` on ``PJSIP/102-00000000`` (the old name
answered ``No such channel``) and 102 hangs up. Only the events the engine reads for
it are kept (rawman, as ``WaitEvent`` answers).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from router.ami.message import Event
from router.ami.protocol import parse_rawman, split_waitevent
from router.calls import CallTracker
from router.recordings.masquerade import Rename, renamed_by_transfer
from router.recordings.mixmonitor import start_recording
from router.recordings.recorder import Recorder
from router.recordings.settings import RecordingSettings
from router.recordings.store import Origin, RecordingStore
from router.testing.builders import make_event
from tests.unit.recordings.wavgen import write_wav

CAPTURE = Path(__file__).parents[2] / "fixtures" / "recordings" / "attended_transfer_app.rawman"
PBX_DIR = "/var/spool/asterisk/monitor/callrouter"
FIRST, CONSULT = "callrouter-sandbox-1796423253.0", "callrouter-sandbox-1796423254.2"
OLD, NEW = "PJSIP/101-00000002", "PJSIP/102-00000000"


def captured() -> list[Event]:
    _, events = split_waitevent(parse_rawman(CAPTURE.read_bytes()))
    return events


def transfer_event() -> Event:
    (event,) = [e for e in captured() if e.name == "AttendedTransfer"]
    return event


def edited(event: Event, **fields: str) -> Event:
    """``event`` with ``fields`` set (an empty value drops the field)."""
    pairs = [(k, v) for k, v in event.items() if k not in fields]
    return Event((*pairs, *((k, v) for k, v in fields.items() if v)))


def test_the_captured_transfer_renames_the_consultation_channel_to_the_transferee() -> None:
    assert renamed_by_transfer(transfer_event()) == Rename(OLD, NEW)


def test_the_other_direction_reads_the_transfer_target() -> None:
    """The original call in the application and the consultation bridged (seen on the
    sandbox too): the original transferer channel takes TransferTargetChannel's name."""
    event = make_event(
        "AttendedTransfer",
        Result="Success",
        OrigTransfererChannel="PJSIP/101-00000000",
        SecondTransfererChannel="PJSIP/101-00000001",
        SecondBridgeUniqueid="3f43c631-0b2b-43e9-b9f4-40c7673e697c",
        SecondBridgeType="basic",
        SecondBridgeNumChannels="2",
        TransferTargetChannel="PJSIP/102-00000002",
        DestType="App",
        DestApp="Wait",
    )
    assert renamed_by_transfer(event) == Rename("PJSIP/101-00000000", "PJSIP/102-00000002")


@pytest.mark.parametrize(
    "fields",
    [
        {"Result": "Fail"},
        {"DestType": "Bridge"},
        {"DestType": "Link"},
        # More than two in the bridge: a Local channel is masqueraded in, no rename.
        {"OrigBridgeNumChannels": "3"},
        {"OrigBridgeNumChannels": "٢"},  # not ASCII digits
        # An ARI bridge transfers only as a whole (a Local channel too).
        {"OrigBridgeType": "stasis"},
        # Both or neither bridged: no masquerade of this kind.
        {"SecondBridgeUniqueid": "other", "SecondBridgeType": "basic"},
        {"OrigBridgeUniqueid": ""},
        # Names that could name something else: never followed.
        {"TransfereeChannel": ""},
        {"TransfereeChannel": OLD},
        {"TransfereeChannel": "PJSIP/102-00000000<ZOMBIE>"},
        {"TransfereeChannel": "PJSIP/102-00000000,PJSIP/103"},
        {"TransfereeChannel": "PJSIP/102 x"},
        {"TransfereeChannel": "../../etc/passwd"},
        {"TransfereeChannel": "PJSIP/" + "1" * 201},
        {"SecondTransfererChannel": "PJSIP/101-00000002&PJSIP/104"},
    ],
)
def test_a_transfer_that_renames_nothing_or_names_no_channel_is_not_followed(
    fields: dict[str, str],
) -> None:
    assert renamed_by_transfer(edited(transfer_event(), **fields)) is None


class _Asterisk:
    """Answers MixMonitor with an id (Asterisk 22), records every action."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    async def send(self, name: str, headers: dict[str, str]) -> object:
        self.sent.append((name, dict(headers)))
        answer = {"MixMonitorID": "0x7f780000a430"} if name == "MixMonitor" else {}
        return SimpleNamespace(response=answer)


async def test_the_recording_follows_the_masquerade_and_closes_on_the_new_names_stop(
    tmp_path: Path,
) -> None:
    """Before: the old name's Hangup closed the file Asterisk still wrote (here: failed,
    incomplete), the consultation call's end did too, and max_duration stopped the old
    name ('No such channel', taken for done). Now the rows follow AttendedTransfer: they
    outlive both, max_duration stops the MixMonitor by its id on 102's channel, and the
    file closes on that channel's MixMonitorStop."""
    tracker = CallTracker()
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=2, max_duration=60)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    asterisk = _Asterisk()
    recorder._engine = SimpleNamespace(calls=tracker, ami=asterisk)  # type: ignore[assignment]
    wanted = recorder.callrouter_wanted_events()
    events = captured()

    def feed(event: Event) -> None:
        """As the engine: the tracker, the recorder's events, then the calls ended."""
        fed = tracker.feed(event)
        if event.name in wanted:
            recorder.callrouter_event(event, fed.call)
        for ended in fed.ended:
            recorder.callrouter_call_end(ended)

    start = next(i for i, e in enumerate(events) if e.name == "MixMonitorStart")
    for event in events[:start]:
        feed(event)
    (row,) = await start_recording(
        asterisk.send,
        store,
        settings,
        call_id=CONSULT,
        channel=OLD,
        origin=Origin("api", "agent"),
    )
    write_wav(row.local_path, 3.0, complete=False)  # being written: no sizes yet
    stop = next(i for i, e in enumerate(events) if e.name == "MixMonitorStop")
    for event in events[start:stop]:
        feed(event)
    assert tracker.get(CONSULT) is None  # the old name hung up: its call ended
    await asyncio.wait_for(recorder.closed(), 10)
    (moved,) = store.for_call(CONSULT)
    assert (moved.channel, moved.state, moved.call_id) == (NEW, "recording", CONSULT)
    assert "102" in moved.extensions
    # Older than the sweep's grace and than max_duration.
    with sqlite3.connect(tmp_path / "state" / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 61")
    recorder.sweep()  # the consultation call is gone; 102's channel lives on
    await asyncio.wait_for(recorder.closed(), 10)
    assert store.for_call(CONSULT)[0].state == "recording"
    assert await recorder.stop_overlong() == [NEW]
    (stopped,) = [h for name, h in asterisk.sent if name == "StopMixMonitor"]
    assert stopped == {"Channel": NEW, "MixMonitorID": "0x7f780000a430"}
    write_wav(row.local_path, 5.0)  # Asterisk finished the file
    feed(events[stop])  # MixMonitorStop of 102's channel, under the first call's Linkedid
    await asyncio.wait_for(recorder.closed(), 10)
    (closed,) = store.for_call(CONSULT)
    assert closed.state == "closed"
    assert closed.duration == pytest.approx(5.0)
    for event in events[stop + 1 :]:
        feed(event)
    assert tracker.get(FIRST) is None
    await recorder.callrouter_shutdown()


async def test_the_old_names_hangup_before_the_transfer_event_still_leaves_the_file_open(
    tmp_path: Path,
) -> None:
    """Should Asterisk report the old name's Hangup first: a WAV still being written has
    no sizes in its header, so the close it starts finds the file growing and leaves the
    row recording, which the AttendedTransfer then renames."""
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.3)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    tracker = CallTracker()
    recorder._engine = SimpleNamespace(calls=tracker, ami=_Asterisk())  # type: ignore[assignment]
    for event in captured():
        if event.name == "Newchannel":
            tracker.feed(event)
    (row,) = await start_recording(_Asterisk().send, store, settings, call_id=CONSULT, channel=OLD)
    write_wav(row.local_path, 1.0, complete=False)
    hangup = make_event("Hangup", Channel=OLD, Uniqueid=CONSULT, Linkedid=CONSULT)
    call = tracker.get(CONSULT)
    tracker.feed(hangup)
    recorder.callrouter_event(hangup, call)

    async def grow() -> None:
        for _ in range(10):
            await asyncio.sleep(0.1)
            with row.local_path.open("ab") as fh:
                fh.write(b"\0" * 1600)

    await asyncio.gather(grow(), asyncio.wait_for(recorder.closed(), 10))
    recorder.callrouter_event(transfer_event(), None)
    (moved,) = store.for_call(CONSULT)
    assert (moved.channel, moved.state) == (NEW, "recording")
    await recorder.callrouter_shutdown()


async def test_another_calls_file_closing_on_a_hangup_gets_only_the_channels_own_phone(
    tmp_path: Path,
) -> None:
    """A file named after one call on a channel that another call now holds (moved by an
    attended transfer) closes at that channel's Hangup, which the other call's id files.
    The legs of that call are no legs of the recording: 105, up in another bridge of
    it, must not read it; 102, the recorded channel's own phone, may."""
    tracker = CallTracker()
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=2)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    recorder._engine = SimpleNamespace(calls=tracker, ami=_Asterisk())  # type: ignore[assignment]
    for name, linkedid in ((NEW, FIRST), ("PJSIP/105-00000009", FIRST), (OLD, CONSULT)):
        tracker.feed(make_event("Newchannel", Channel=name, Uniqueid=name, Linkedid=linkedid))
    (row,) = await start_recording(_Asterisk().send, store, settings, call_id=CONSULT, channel=OLD)
    recorder.callrouter_event(transfer_event(), None)
    write_wav(row.local_path, 2.0)
    hangup = make_event("Hangup", Channel=NEW, Uniqueid=NEW, Linkedid=FIRST)
    call = tracker.get(FIRST)
    tracker.feed(hangup)
    recorder.callrouter_event(hangup, call)
    await asyncio.wait_for(recorder.closed(), 10)
    (closed,) = store.for_call(CONSULT)
    assert closed.state == "closed"
    assert "102" in closed.extensions
    assert "105" not in closed.extensions
    await recorder.callrouter_shutdown()
