"""A rule's record on a call the API already records: the recording becomes the rule's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from router.calls import CallTracker
from router.recordings.mixmonitor import start_recording
from router.recordings.recorder import Recorder
from router.recordings.settings import RecordingSettings
from router.recordings.store import Origin, RecordingStore
from router.rules.decision import Action
from router.testing.builders import make_event
from tests.unit.recordings.test_recorder import PBX_DIR, _Ami


async def test_a_rule_recording_a_call_the_api_records_makes_it_the_rules(tmp_path: Path) -> None:
    live, trunk = "1714557800.1", "PJSIP/trunk-00000001"
    tracker = CallTracker()
    for n, channel in enumerate((trunk, "PJSIP/101-00000002")):
        tracker.feed(
            make_event(
                "Newchannel",
                Channel=channel,
                Uniqueid=f"{live}{n}",
                Linkedid=live,
                ChannelStateDesc="Up",
                Context="from-trunk",
            )
        )
    call = tracker.get(live)
    assert call is not None
    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.2)
    store = recorder.store = RecordingStore(tmp_path / "state")
    ami = _Ami()
    api = Origin("api", "token agent (101)")
    assert await start_recording(
        ami.send, store, recorder.settings, call_id=live, channel=trunk, origin=api
    )
    (row,) = store.for_call(live)
    assert row.origin == api
    action = Action.make("record", {}, rule="compliance")
    await recorder.callrouter_execute(action, call, SimpleNamespace(ami=ami))  # type: ignore[arg-type]
    (row,) = store.for_call(live)
    # The API's stop must now refuse it: the rule asked for this recording.
    assert row.origin == Origin("rule", "compliance")
    await recorder.callrouter_shutdown()
