"""The ``record`` action on the replaying fake Asterisk: MixMonitor named after the call,
the file closed when the channel hangs up, refused without ``[recordings]``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from router.errors import RulesRefused
from router.metrics import Metrics, exposition
from router.recordings.recorder import Recorder
from router.recordings.settings import RecordingSettings
from router.recordings.store import RecordingStore
from router.testing.replay import SentAction
from tests.unit.recordings.virtual_clock import VirtualClock
from tests.unit.recordings.wavgen import write_wav
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from router.calls import Call, CallTracker
    from router.engine import Engine
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: record and ring
    on: call
    do:
      - record: {legs: "{legs}"}
      - redirect: {context: callrouter-dial, exten: "101"}
"""
PBX_DIR = "/var/spool/asterisk/monitor/callrouter"


def rules(tmp_path: Path, legs: str = "mix") -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("{legs}", legs), encoding="utf-8")
    return path


def recorder_of(engine: Engine) -> Recorder:
    found = engine.plugins.pm.get_plugin("recordings")
    assert isinstance(found, Recorder)
    return found


def setvars(replay: ReplayAsterisk, variable: str) -> list[SentAction]:
    return [a for a in replay.sent("Setvar") if a["Variable"] == variable]


async def test_record_hands_the_file_named_after_the_call_to_the_dialplan_and_closes_at_hangup(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """No AMI MixMonitor (write class system): the waiting channel gets the path in
    CALLROUTER_RECORD and its Redirect passes through [callrouter-record]."""
    local = tmp_path / "monitor"
    local.mkdir()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=local)
    sent: list[SentAction] = []
    ajam_replay.on("MixMonitor", lambda action: sent.append(action) or {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="8 (916) 123-45-67", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    assert sent == []
    (record_var,) = setvars(ajam_replay, "CALLROUTER_RECORD")
    assert record_var["Channel"] == channel
    assert record_var["Value"] == f"{PBX_DIR}/{linkedid}-mix.wav^^"
    # Nothing the caller sent is in the name (the Linkedid holds the epoch,
    # which can hold "916" too: 1796191683 did).
    assert "916" not in record_var["Value"].replace(linkedid, "")
    (next_var,) = setvars(ajam_replay, "CALLROUTER_NEXT")
    assert (next_var["Channel"], next_var["Value"]) == (channel, "callrouter-dial^101^1")
    (redirect,) = ajam_replay.sent("Redirect")
    assert (redirect["Channel"], redirect["Context"], redirect["Exten"]) == (
        channel,
        "callrouter-record",
        "s",
    )
    order = [a.name for a in ajam_replay.sent() if a.name in ("Setvar", "Redirect")]
    assert order == ["Setvar", "Setvar", "Redirect"]
    record = engine.records[-1]
    assert record.outcome == "executed"
    # Confirmed when the call reached the rule's target, not the step before it.
    redirected = record.actions[-1]
    assert redirected.status == "confirmed"
    assert redirected.detail == "callrouter-dial,101 (through callrouter-record)"

    write_wav(local / f"{linkedid}-mix.wav", 2.5)
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    await recorder_of(engine).closed()
    store = RecordingStore(engine.state_dir)
    (row,) = store.for_call(linkedid)
    assert row.state == "closed"
    assert row.duration == pytest.approx(2.5)
    assert row.content_type == "audio/wav"
    assert row.size == (local / f"{linkedid}-mix.wav").stat().st_size
    assert row.sha256 is not None
    assert len(row.sha256) == 64
    assert [r.id for r in store.closed()] == [row.id]
    # /metrics: the file waits for 1C (queue "recordings") and its bytes are on disk.
    recorder = recorder_of(engine)
    await recorder.refresh_metrics()
    text = exposition(engine.metrics).decode()
    assert 'callrouter_queue_depth{queue="recordings"} 1.0' in text
    assert f'callrouter_recordings_bytes{{kind="undelivered"}} {float(row.size or 0)}' in text


async def test_the_recordings_queue_metric_counts_only_files_on_their_way(
    tmp_path: Path,
) -> None:
    """Issue 16: an upload the receiver gave up on (1C refused it) counted in
    callrouter_queue_depth{queue="recordings"} and its oldest age: an alert on the
    queue's age fired for ever for one refused file. Only waiting files count."""
    store = RecordingStore(tmp_path / "state")
    for call_id, closed_at in (("1.1", 1000.0), ("1.2", 2000.0), ("1.3", 3000.0)):
        path = tmp_path / f"{call_id}-mix.wav"
        path.write_bytes(b"RIFF")
        name = SimpleNamespace(call_id=call_id, part="mix", format="wav")
        (row,) = store.start([name], pbx_paths=["/x"], local_paths=[path], channel="PJSIP/t-1")
        store.mark_closed(
            row.id,
            file=path,
            content_type="audio/wav",
            size=4,
            sha256="a" * 64,
            duration=1.0,
            now=closed_at,
        )
    # The oldest refused by 1C, the next delivered: one file is still on its way.
    assert store.upload_failed("1.1", "mix", "a" * 64, "1C refused it")
    assert store.confirm("1.2", "mix", "a" * 64, "onec")
    recorder = Recorder()
    metrics = Metrics(event_names=())
    recorder.callrouter_metrics(metrics)
    recorder.store = store
    try:
        await recorder.refresh_metrics()
    finally:
        store.close()
    gauge = metrics.queue("recordings")
    assert (gauge.depth, gauge.oldest) == (1, 3000.0)


async def test_both_legs_hand_three_files_to_the_dialplan(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """mix^in^out: the dialplan makes r() of the second and t() of the third."""
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    engine = await engine_factory(rules(tmp_path, "both"), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    (record_var,) = setvars(ajam_replay, "CALLROUTER_RECORD")
    assert record_var["Value"] == "^".join(
        f"{PBX_DIR}/{linkedid}-{part}.wav" for part in ("mix", "in", "out")
    )
    assert [r.part for r in RecordingStore(engine.state_dir).for_call(linkedid)] == [
        "mix",
        "in",
        "out",
    ]


async def test_in_only_leaves_the_mixed_part_empty(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    engine = await engine_factory(rules(tmp_path, "in"), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    (record_var,) = setvars(ajam_replay, "CALLROUTER_RECORD")
    assert record_var["Value"] == f"^{PBX_DIR}/{linkedid}-in.wav^"


async def test_a_file_that_never_completes_is_marked_failed(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.5)
    ajam_replay.on("MixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    write_wav(tmp_path / f"{linkedid}-mix.wav", 1.0, complete=False)
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder_of(engine).closed(), 10)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "failed"
    assert "incomplete" in row.note
    # What it left stays in the catalog, for retention's bounds and the status.
    left = tmp_path / f"{linkedid}-mix.wav"
    assert (row.file, row.size) == (left, left.stat().st_size)
    assert row.closed_at is not None


async def test_asterisk_refusing_the_record_setvar_fails_the_action_and_forgets_the_row(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    ajam_replay.on("Setvar", lambda action: [("Response", "Error"), ("Message", "No")])
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    assert RecordingStore(engine.state_dir).for_call(linkedid) == []
    assert engine.records[-1].actions[0].status == "failed"
    # The redirect after it still ran, straight to its target: a failed
    # recording never strands the call.
    (redirect,) = ajam_replay.sent("Redirect")
    assert (redirect["Context"], redirect["Exten"]) == ("callrouter-dial", "101")
    assert engine.records[-1].actions[-1].status == "confirmed"


async def test_a_record_after_the_redirect_uses_ami_mixmonitor(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """The call left callrouter-inbound: only the AMI action can still record it."""
    path = tmp_path / "rules.yaml"
    redirect = '      - redirect: {context: callrouter-dial, exten: "101"}\n'
    record = '      - record: {legs: "{legs}"}\n'
    path.write_text(RULES.replace(record + redirect, redirect + record.replace("{legs}", "mix")))
    text = path.read_text(encoding="utf-8")
    assert text.index("redirect") < text.index("record:")
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    sent: list[SentAction] = []
    ajam_replay.on("MixMonitor", lambda action: sent.append(action) or {})
    engine = await engine_factory(path, recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    (mixmonitor,) = sent
    assert (mixmonitor["Channel"], mixmonitor["File"]) == (channel, f"{PBX_DIR}/{linkedid}-mix.wav")
    assert setvars(ajam_replay, "CALLROUTER_RECORD") == []
    (redirect,) = ajam_replay.sent("Redirect")
    assert redirect["Context"] == "callrouter-dial"


async def test_a_record_without_a_redirect_is_left_to_the_dialplans_default_path(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """The shipped callrouter-inbound sends a call whose wait ended through
    [callrouter-record] when CALLROUTER_RECORD is set."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: record only\n    on: call\n    do:\n      - record: {}\n",
        encoding="utf-8",
    )
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    engine = await engine_factory(path, recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    (record_var,) = setvars(ajam_replay, "CALLROUTER_RECORD")
    assert record_var["Value"] == f"{PBX_DIR}/{linkedid}-mix.wav^^"
    assert ajam_replay.count("Redirect") == 0
    assert ajam_replay.count("MixMonitor") == 0


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ('{legs: "{caller.name}"}', "action 'record': legs 'stereo' is not one of"),
        ('{format: "{caller.name}"}', "action 'record': format 'stereo' is not one of"),
    ],
)
async def test_a_template_s_legs_or_format_it_cannot_record_rejects_the_rule(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    record: str,
    reason: str,
) -> None:
    """explain showed record(legs=stereo) matched, while run failed the
    recording and sent the rule's Redirect all the same: now both take the
    next rule."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: recorded\n    priority: 1\n    on: call\n"
        f"    do:\n      - record: {record}\n"
        '      - redirect: {context: callrouter-dial, exten: "101"}\n'
        "  - name: fallback\n    on: call\n"
        '    do:\n      - redirect: {context: callrouter-dial, exten: "102"}\n',
        encoding="utf-8",
    )
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    engine = await engine_factory(path, recordings=settings)
    ajam_replay.inbound_call(caller="79161234567", did="74951234567", caller_name="stereo")
    await ajam_replay.settle(engine)
    assert setvars(ajam_replay, "CALLROUTER_RECORD") == []
    (redirect,) = ajam_replay.sent("Redirect")
    assert redirect["Exten"] == "102"
    (rejected,) = engine.records[-1].rejected
    assert rejected["rule"] == "recorded"
    assert rejected["reason"].startswith(reason)


async def test_record_without_recordings_table_is_refused_at_load(
    engine_factory: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RulesRefused):
        await engine_factory(rules(tmp_path))
    assert "rules.yaml:6: rule 'record and ring': action 'record': record needs a " in caplog.text
    assert "[recordings] table in router.toml" in caplog.text


async def test_a_wav_still_growing_is_not_taken_even_with_a_consistent_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """format_wav rewrites the header as it writes: a consistent header alone is not the end."""
    from router.recordings import closer
    from router.recordings.closer import wait_complete
    from tests.unit.recordings.wavgen import tone, wav_bytes

    # The closer's time is the test's (virtual_clock.py): 0.3 s between writes
    # is 0.3 s to it however long a loaded machine takes (real 0.3 s sleeps
    # against STABLE_WAV's 0.5 s let a stall of 0.2 s take the file; issue 16).
    clock = VirtualClock()
    path = tmp_path / "1.1-mix.wav"
    path.write_bytes(wav_bytes(tone(0.5)))
    # MixMonitor's last writes, the header consistent after each one.
    for when, seconds in ((0.3, 1.0), (0.6, 1.5), (0.9, 2.0)):
        clock.at(when, lambda seconds=seconds: path.write_bytes(wav_bytes(tone(seconds))))
    duration = await wait_complete(path, "wav", timeout=3600, clock=clock.clock)
    assert duration == pytest.approx(2.0)  # none of the earlier, consistent headers
    assert clock.now - 0.9 >= closer.STABLE_WAV  # the last write at 0.9: held that long


@pytest.mark.skipif(shutil.which("lame") is None, reason="make encoders installs lame")
async def test_transcoding_delivers_the_mp3_and_drops_the_wav(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, transcode="mp3")
    ajam_replay.on("MixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    write_wav(tmp_path / f"{linkedid}-mix.wav", 2.0)
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder_of(engine).closed(), 30)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "closed", row.note
    assert row.content_type == "audio/mpeg"
    assert row.file == tmp_path / f"{linkedid}-mix.mp3"
    assert row.file.read_bytes()[:1] == b"\xff"
    assert row.duration == pytest.approx(2.0)  # the WAV's, measured before encoding
    assert not (tmp_path / f"{linkedid}-mix.wav").exists()


async def test_a_call_without_a_routed_channel_is_recorded_on_its_first_live_one(
    tmp_path: Path,
) -> None:
    """An ``on: event`` rule meets calls that never waited in callrouter-inbound."""
    from router.rules.decision import Action
    from router.testing import StubEngine
    from router.testing.builders import CallTimeline, make_event

    timeline = CallTimeline()
    call = timeline.feed(
        make_event(
            "Newchannel",
            Channel="PJSIP/101-0000000a",
            Uniqueid="1714557800.1",
            Linkedid="1714557800.1",
            ChannelStateDesc="Up",
        )
    )
    assert call is not None
    assert call.waiting_channel is None
    engine = StubEngine(state_dir=tmp_path)
    sent: list[SentAction] = []
    engine.replay.on("MixMonitor", lambda action: sent.append(action) or {})
    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    recorder.store = RecordingStore(tmp_path)
    try:
        done = await recorder.callrouter_execute(Action.make("record", {}), call, engine)  # type: ignore[arg-type]
    finally:
        await engine.aclose()
    assert done == "1714557800.1-mix.wav"
    assert sent[0]["Channel"] == "PJSIP/101-0000000a"
    (row,) = recorder.store.for_call("1714557800.1")
    assert row.extensions == ("101",)


@pytest.mark.parametrize(
    "linkedid",
    [
        "1714557800.1,b(x)",  # a second MixMonitor option
        "1714557800.1^/tmp/x",  # a second path in CALLROUTER_RECORD
        "../../etc/passwd",
        "1714557800.1)t(/tmp/y",
        "1714557800..1",
    ],
)
async def test_a_hostile_call_id_never_reaches_the_dialplan(tmp_path: Path, linkedid: str) -> None:
    """Refused before anything is sent: no Setvar, no catalog row, no detour."""
    from router.rules.decision import Action
    from router.testing import StubEngine
    from router.testing.builders import CallTimeline

    call = CallTimeline().inbound_call(linkedid=linkedid)
    engine = StubEngine(state_dir=tmp_path)
    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    recorder.store = RecordingStore(tmp_path)
    try:
        with pytest.raises(ValueError, match="cannot name a recording"):
            await recorder.callrouter_execute(Action.make("record", {}), call, engine)  # type: ignore[arg-type]
    finally:
        await engine.aclose()
    assert engine.replay.count("Setvar") == 0
    assert engine.replay.count("MixMonitor") == 0
    assert recorder.store.recording() == []
    assert call.redirect_via is None


def test_a_folder_the_dialplan_would_filter_is_refused_before_anything_is_sent() -> None:
    from router.recordings.mixmonitor import dialplan_value
    from router.recordings.naming import file_names

    names = file_names("1714557800.1", "both", "wav")
    good = RecordingSettings(dir="/var/spool/asterisk/monitor/call-router_1.0", local_dir=Path())
    assert dialplan_value(good, names).count("^") == 2
    for folder in ("/var/my recs", "/var/a,b", "/var/a^b", "/var/a..b", "/var/запись"):
        bad = RecordingSettings(dir=folder, local_dir=Path())
        with pytest.raises(ValueError, match=r"letters, digits and /\._- only"):
            dialplan_value(bad, names)


async def test_a_recorded_call_needs_no_class_beyond_the_documented_user(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """Every action a record-and-redirect decision sends is allowed by the manager user
    docs/asterisk.md documents (no write class system)."""
    from router.ami.catalog import load_catalog
    from tests.unit.test_least_privilege import REPO, documented_write_classes

    allowed = documented_write_classes(REPO / "docs" / "asterisk.md")
    assert "system" not in allowed
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    engine = await engine_factory(rules(tmp_path, "both"), recordings=settings)
    before = len(ajam_replay.sent())
    ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    assert engine.records[-1].outcome == "executed"
    sent = {a.name for a in ajam_replay.sent()[before:]} - {"WaitEvent", "Ping"}
    assert {"Setvar", "Redirect"} <= sent
    catalog = load_catalog()
    for name in sent:
        assert set(catalog.action(name).write_classes) & allowed, name


async def test_an_idle_recorder_asks_for_no_events(tmp_path: Path) -> None:
    """Without [recordings] no event reaches the recorder (a Hangup each call
    would cost a hook call for nothing); with it, the two it closes files on and the
    AttendedTransfer whose masquerade renames a recorded channel."""
    from router.plugins import Plugins

    for settings, reads in (
        (None, False),
        (RecordingSettings(dir=PBX_DIR, local_dir=tmp_path), True),
    ):
        recorder = Recorder()
        recorder.settings = settings
        plugins = Plugins.load(extra=[recorder], disabled=["recordings"], entry_points=False)
        await plugins.wanted_events()
        assert plugins.reads_event("Hangup") is reads
        assert plugins.reads_event("MixMonitorStop") is reads
        assert plugins.reads_event("AttendedTransfer") is reads  # a masquerade's rename


async def test_a_recording_longer_than_max_duration_is_stopped_once_and_the_call_goes_on(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """Before: nothing bounded a recording's length. The caller decides how long a call
    lasts (on hold, in a queue), a file counts against max_bytes and hard_cap_bytes only
    once closed, so a few calls kept open filled the disk (57.6 MB an hour for each WAV
    part, three parts with legs both)."""
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, max_duration=3600)
    ajam_replay.on("StopMixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    recorder = recorder_of(engine)
    assert await recorder.stop_overlong() == []  # just started
    with sqlite3.connect(engine.state_dir / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 3601")
    assert await recorder.stop_overlong() == [channel]
    assert await recorder.stop_overlong() == []  # asked once
    (stop,) = ajam_replay.sent("StopMixMonitor")
    assert stop["Channel"] == channel
    # callrouter's MixMonitor by the id its i() option stored, never the PBX's own.
    assert stop["MixMonitorID"] == ajam_replay.channels[channel].variables["CALLROUTER_REC_ID"]
    assert stop["MixMonitorID"]
    assert not ajam_replay.sent("Hangup")
    # The file then closes on MixMonitorStop as any other.
    write_wav(tmp_path / f"{linkedid}-mix.wav", 1.0)
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder.closed(), 10)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "closed"


async def test_max_duration_stops_nothing_without_the_id_of_callrouters_mixmonitor(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: StopMixMonitor named only the channel, and Asterisk stops the channel's
    newest MixMonitor: on a PBX that records every call (FreePBX), its own, started by
    its Dial after [callrouter-record]. A MixMonitor whose id callrouter cannot read (a
    [callrouter-record] without i()) is left running, with the fix named in the log."""
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, max_duration=3600)
    ajam_replay.on("StopMixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    recorder = recorder_of(engine)
    for value in ("", "x\r\nAction: Hangup"):
        ajam_replay.channels[channel].variables["CALLROUTER_REC_ID"] = value
        recorder._stopped.clear()
        with sqlite3.connect(engine.state_dir / "recordings.sqlite") as db:
            db.execute("UPDATE recordings SET started_at = started_at - 3601")
        with caplog.at_level(logging.WARNING, "router.recordings"):
            assert await recorder.stop_overlong() == []
        assert ajam_replay.sent("StopMixMonitor") == []
        assert "i(CALLROUTER_REC_ID)" in caplog.text
        caplog.clear()


def test_max_duration_is_read_and_bounded(tmp_path: Path) -> None:
    from router.errors import ConfigError
    from router.testing import config_from_toml

    table = '[recordings]\ndir = "/x"\n'
    config = config_from_toml(tmp_path, table)
    assert config.recordings is not None
    assert config.recordings.max_duration == 14400
    off = config_from_toml(tmp_path, table + "max_duration = 0\n").recordings
    assert off is not None
    assert off.max_duration == 0
    with pytest.raises(ConfigError, match="max_duration"):
        config_from_toml(tmp_path, table + "max_duration = 5\n")


@pytest.mark.parametrize("key", ["max_duration", "url_ttl"])
def test_max_duration_and_url_ttl_are_60_to_604800_seconds_as_documented(
    tmp_path: Path, key: str
) -> None:
    """Before: both were read as more than 59, so 59.5 was taken where
    docs/reference/config.md (+ru) says 60 to 604800."""
    from router.errors import ConfigError
    from router.testing import config_from_toml

    table = '[recordings]\ndir = "/x"\n'
    for good in ("60", "60.0", "90.5", "604800"):
        config = config_from_toml(tmp_path, f"{table}{key} = {good}\n").recordings
        assert config is not None
        assert getattr(config, key) == float(good)
    for bad in ("59.5", "59.999", "604800.5", "nan", "inf", "-60", '"600"', "true"):
        with pytest.raises(ConfigError, match=f"{key}.*expected") as refused:
            config_from_toml(tmp_path, f"{table}{key} = {bad}\n")
        if bad[0].isdigit():
            assert "60 to 604800 seconds" in str(refused.value)
    if key == "max_duration":
        off = config_from_toml(tmp_path, f"{table}max_duration = 0\n").recordings
        assert off is not None
        assert off.max_duration == 0
    else:
        with pytest.raises(ConfigError, match="url_ttl: expected 60 to 604800 seconds, got 0"):
            config_from_toml(tmp_path, f"{table}url_ttl = 0\n")


async def test_retention_never_holds_the_event_loop(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the scheduled retention ran in the event loop itself, so deleting
    delivered files on a slow or hung mount (the recordings folder is often NFS)
    stopped every call's routing for as long as the file system took.

    No time is measured (a loaded machine stalls a loop for reasons of its own):
    the pass, a hung mount here, ends only once the event loop has run a
    callback it handed it. Run on the loop, it would hold the loop, the
    callback would wait, and the pass would give up (``freed`` False)."""
    import inspect
    import threading

    from router.recordings import recorder as recorder_module

    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, after_delivery="delete")
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    loop, release = asyncio.get_running_loop(), threading.Event()
    freed: list[bool] = []

    def hung_mount(store: RecordingStore, settings: RecordingSettings) -> None:
        loop.call_soon_threadsafe(release.set)  # run when the loop next turns
        freed.append(release.wait(5))  # the failure's bound only: never reached when it works

    monkeypatch.setattr(recorder_module, "apply_retention", hung_mount)
    result = recorder_of(engine).retention()  # as the engine's scheduler runs a job
    if inspect.isawaitable(result):
        await result
    assert freed == [True]


async def test_a_stop_waits_for_the_retention_pass_under_way(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention runs in a thread: a stop that came meanwhile closed the catalog under
    it, and the pass failed half done (a file deleted, its row not marked removed)
    with 'Cannot operate on a closed database' in the log."""
    import threading
    import time

    from router.recordings import recorder as recorder_module
    from router.recordings.retention import apply_retention

    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, after_delivery="delete")
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    started = threading.Event()

    def slow(store: RecordingStore, settings: RecordingSettings) -> object:
        started.set()
        time.sleep(0.3)  # a slow mount
        return apply_retention(store, settings)

    monkeypatch.setattr(recorder_module, "apply_retention", slow)
    recorder = recorder_of(engine)
    passing = asyncio.create_task(recorder.retention())
    assert await asyncio.to_thread(started.wait, 5)
    await recorder.callrouter_shutdown()
    await passing  # raised sqlite3.ProgrammingError
    assert recorder.store is None


async def test_a_stop_does_not_wait_out_a_hung_retention_pass(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    from router.recordings import recorder as recorder_module
    from router.recordings.retention import apply_retention

    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, after_delivery="delete")
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    started, mount_back = threading.Event(), threading.Event()

    def hung(store: RecordingStore, settings: RecordingSettings) -> object:
        started.set()
        mount_back.wait(30)  # hung until the test lets it go (the bound: a failed test only)
        return apply_retention(store, settings)

    monkeypatch.setattr(recorder_module, "apply_retention", hung)
    monkeypatch.setattr(recorder_module, "RETENTION_STOP_WAIT", 0.1)
    recorder = recorder_of(engine)
    passing = asyncio.create_task(recorder.retention())
    assert await asyncio.to_thread(started.wait, 5)
    # The stop returns while the pass is still hung: nothing is timed (a 0.5 s
    # bound against a 0.6 s pass was a race a loaded machine lost; issue 16).
    await asyncio.wait_for(recorder.callrouter_shutdown(), 10)
    assert not passing.done()
    assert "retention still busy" in caplog.text
    mount_back.set()
    await passing  # its catalog stayed open for it


@contextlib.contextmanager
def _asterisk_writing(path: Path, clock: VirtualClock) -> Iterator[None]:
    """Asterisk writing on at ``path`` (800 bytes every 0.05 s of the closer's
    ``clock``) while the block runs."""

    def write() -> None:
        with path.open("ab") as fh:
            fh.write(b"\0" * 800)

    stop = clock.every(0.05, write)
    try:
        yield
    finally:
        stop()


async def test_another_mixmonitors_stop_on_the_channel_leaves_ours_recording(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """MixMonitorStop names no MixMonitor: a PBX that records every call and stops
    its own recording mid-call sends one for callrouter's channel too. Before, the
    file (still written) was waited on for close_timeout and marked failed; now it
    stays ``recording`` and closes when the channel ends."""
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.6)
    ajam_replay.on("MixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    path = tmp_path / f"{linkedid}-mix.wav"
    write_wav(path, 1.0, complete=False)
    clock = VirtualClock()  # close_timeout 0.6 s against STABLE_WAV's 0.5 s: no race
    recorder_of(engine).close_clock = clock.clock
    with _asterisk_writing(path, clock):
        ajam_replay.queue_event(Event="MixMonitorStop", Channel=channel, Linkedid=linkedid)
        await ajam_replay.settle(engine)
        await asyncio.wait_for(recorder_of(engine).closed(), 10)
        (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
        assert row.state == "recording", row.note
    # The channel ends: MixMonitor finishes the file, which closes as any other.
    write_wav(path, 2.0)
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder_of(engine).closed(), 10)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "closed"
    assert row.duration == pytest.approx(2.0)


async def test_our_mixmonitors_stop_still_closes_the_file_at_once(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """The usual MixMonitorStop (callrouter's own, or the call's end): the file is
    complete, so it closes without waiting for the channel."""
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=5)
    ajam_replay.on("MixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    write_wav(tmp_path / f"{linkedid}-mix.wav", 1.0)
    ajam_replay.queue_event(Event="MixMonitorStop", Channel=channel, Linkedid=linkedid)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder_of(engine).closed(), 10)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "closed"


async def test_a_call_dropped_after_4_hours_keeps_recording_until_max_duration_stops_it(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """The tracker drops a call 4 hours after it started (its Hangup taken as lost).
    Before: its recording, MixMonitor still writing, was closed by the call's end,
    failed after close_timeout, and max_duration (up to 7 days) never stopped it, as
    the call was no longer tracked: the file grew until the caller hung up. Now the
    growing file stays ``recording`` and max_duration stops it by its id."""
    settings = RecordingSettings(
        dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.6, max_duration=6 * 3600
    )
    ajam_replay.on("MixMonitor", lambda action: {})
    ajam_replay.on("StopMixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    path = tmp_path / f"{linkedid}-mix.wav"
    write_wav(path, 1.0, complete=False)
    recorder = recorder_of(engine)
    clock = VirtualClock()
    recorder.close_clock = clock.clock
    with _asterisk_writing(path, clock):
        call = engine.tracker.get(linkedid)
        assert call is not None
        call.started -= 4 * 3600 + 1
        await engine._sweep()  # the tracker's hourly sweep: dropped
        assert engine.tracker.get(linkedid) is None
        await asyncio.wait_for(recorder.closed(), 10)
        (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
        assert row.state == "recording", row.note
        with sqlite3.connect(engine.state_dir / "recordings.sqlite") as db:
            db.execute("UPDATE recordings SET started_at = started_at - 6 * 3600 - 1")
        assert await recorder.stop_overlong() == [channel]
    (stop,) = ajam_replay.sent("StopMixMonitor")
    assert stop["MixMonitorID"] == ajam_replay.channels[channel].variables["CALLROUTER_REC_ID"]


async def test_a_file_asterisk_writes_in_32_kib_steps_is_seen_still_being_written(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """Asterisk 22 writes a recording through a 32 KiB buffer: a WAV grows by 32768
    bytes every 2 s, a GSM file every 20 s (measured on the sandbox). Before, "still
    being written" was one look of 0.4 s after close_timeout, which such a file
    mostly passes without growing: after another MixMonitor's MixMonitorStop, ours
    was failed while Asterisk wrote on. Growth since the close began counts now."""
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=1.0)
    ajam_replay.on("MixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    path = tmp_path / f"{linkedid}-mix.wav"
    write_wav(path, 1.0, complete=False)
    clock = VirtualClock()  # the close's time: the timeline below whatever the load
    recorder_of(engine).close_clock = clock.clock
    steps: list[float] = []

    def buffer_written() -> None:
        with path.open("ab") as fh:
            fh.write(b"\0" * 32768)
        steps.append(clock.now)

    # One buffer's worth half a second into the close, the next only after the look.
    for when in (0.5, 1.5):
        clock.at(when, buffer_written)
    ajam_replay.queue_event(Event="MixMonitorStop", Channel=channel, Linkedid=linkedid)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder_of(engine).closed(), 10)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "recording", row.note
    assert steps == [0.5]  # decided after close_timeout, before the next buffer
    assert 1.0 <= clock.now < 1.5


async def test_a_headerless_file_written_between_long_pauses_survives_another_mixmonitors_stop(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GSM file grows by 32 KiB every 20 s (ulaw every 4 s). After a PBX stopped its
    own MixMonitor on the channel (a MixMonitorStop naming none), ours was taken for
    finished once its size held 1 s, between two of Asterisk's writes: closed and
    delivered cut short while Asterisk wrote on. Now it must hold one and a half
    write intervals (scaled down here: a write every 1.3 s, 32 KiB taking 1.4 s)."""
    from router.recordings import closer

    fmt = "gsm"
    assert closer.quiet_after_stop(fmt) == pytest.approx(1.5 * 32768 / 1650)  # 29.8 s
    assert closer.quiet_after_stop("ulaw") == pytest.approx(1.5 * 32768 / 8000)
    assert closer.quiet_after_stop("wav") == 0.0
    monkeypatch.setattr(closer, "_RATES", {fmt: closer.WRITE_BUFFER / 1.4})
    assert closer.quiet_after_stop(fmt) == pytest.approx(2.1)
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=1.0, format=fmt)
    ajam_replay.on("MixMonitor", lambda action: {})
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    channel = ajam_replay.inbound_call(caller="79161234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[channel].linkedid
    path = tmp_path / f"{linkedid}-mix.{fmt}"
    path.write_bytes(b"\0" * 4096)
    clock = VirtualClock()  # the close's time: 1.3 s between writes whatever the load
    recorder_of(engine).close_clock = clock.clock
    writes: list[float] = []

    def written() -> None:
        with path.open("ab") as fh:
            fh.write(b"\0" * 4096)
        writes.append(clock.now)

    stop = clock.every(1.3, written, start=1.3)  # longer than STABLE (1 s)
    try:
        ajam_replay.queue_event(Event="MixMonitorStop", Channel=channel, Linkedid=linkedid)
        await ajam_replay.settle(engine)
        await asyncio.wait_for(recorder_of(engine).closed(), 10)
        (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
        assert row.state == "recording", row.note
        assert writes == pytest.approx([1.3, 2.6, 3.9])  # through the 4.2 s close
    finally:
        stop()
    # Our own stop (or the call's end) is no such doubt: the file closes at once.
    ajam_replay.hangup(channel)
    await ajam_replay.settle(engine)
    await asyncio.wait_for(recorder_of(engine).closed(), 10)
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert row.state == "closed", row.note


class _Ami:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    async def send(self, name: str, headers: dict[str, str]) -> object:
        self.sent.append((name, dict(headers)))
        return {}


async def test_only_legs_on_the_call_while_it_was_recorded_may_read_the_recording(
    tmp_path: Path,
) -> None:
    """101 rang and hung up before a rule (on an event of the talking call) recorded
    it: 101's token could read the recording, the catalog listing every extension the
    call ever had. Now: the legs live when it starts (102), every leg that hangs up
    while it runs (103), the legs live when it ends (104); never one that came after
    (105). The row keeps the rule that started it."""
    from types import SimpleNamespace

    from router.calls import CallTracker
    from router.recordings.store import Origin
    from router.rules.decision import Action
    from router.testing.builders import make_event

    live, trunk = "1714557800.1", "PJSIP/trunk-00000001"
    tracker = CallTracker()

    def feed(name: str, channel: str, n: int, **fields: str) -> object:
        event = make_event(name, Channel=channel, Uniqueid=f"{live}{n}", Linkedid=live, **fields)
        tracker.feed(event)
        return event

    feed("Newchannel", trunk, 0, ChannelStateDesc="Up", Context="from-trunk")
    feed("Newchannel", "PJSIP/101-00000002", 1, ChannelStateDesc="Ring")
    feed("Hangup", "PJSIP/101-00000002", 1)
    feed("Newchannel", "PJSIP/102-00000003", 2, ChannelStateDesc="Up")
    call = tracker.get(live)
    assert call is not None
    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.2)
    recorder.store = RecordingStore(tmp_path / "state")
    ami = _Ami()
    engine = SimpleNamespace(ami=ami)
    action = Action.make("record", {}, rule="compliance")
    assert await recorder.callrouter_execute(action, call, engine)  # type: ignore[arg-type]
    assert [name for name, _ in ami.sent] == ["MixMonitor"]

    def extensions() -> tuple[str, ...]:
        assert recorder.store is not None
        (row,) = recorder.store.for_call(live)
        assert row.origin == Origin("rule", "compliance")
        return row.extensions

    assert extensions() == ("102", "trunk")
    for name, channel, n in (
        ("Newchannel", "PJSIP/103-00000004", 3),
        ("Hangup", "PJSIP/103-00000004", 3),
        ("Newchannel", "PJSIP/104-00000005", 4),
        ("Hangup", trunk, 0),  # the recorded channel: the recording ends
        ("Newchannel", "PJSIP/105-00000006", 5),
        ("Hangup", "PJSIP/105-00000006", 5),
    ):
        event = feed(name, channel, n)
        if name == "Hangup":  # the events the recorder reads (callrouter_wanted_events)
            recorder.callrouter_event(event, call)  # type: ignore[arg-type]
    assert extensions() == ("102", "103", "104", "trunk")
    await recorder.callrouter_shutdown()


async def test_no_timed_job_runs_while_the_stop_waits_for_retention(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop waited (up to 10 s) for a retention pass with the scheduler still
    running: the recorder's and other plugins' jobs (max_duration, metrics) went on
    reading the catalog, which the stop then closed under them. Now the scheduler
    starts nothing once plugins are being stopped."""
    import threading

    from router.recordings import recorder as recorder_module
    from router.recordings.retention import apply_retention

    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    started = threading.Event()

    def slow(store: RecordingStore, settings: RecordingSettings) -> object:
        started.set()
        time.sleep(0.5)  # a slow mount
        return apply_retention(store, settings)

    monkeypatch.setattr(recorder_module, "apply_retention", slow)
    recorder = recorder_of(engine)
    runs: list[float] = []

    def probe() -> None:
        runs.append(time.monotonic())
        if recorder.store is not None:
            recorder.store.usage()  # what the metrics job reads

    closing: list[float] = []
    stop_calllife = engine.calllife.stop

    async def calllife_stop() -> None:
        closing.append(time.monotonic())  # the first store closes: the plugins' follow
        await stop_calllife()

    monkeypatch.setattr(engine.calllife, "stop", calllife_stop)
    engine.schedule("test:probe", probe, every=0.05)
    await eventually(lambda: runs, "the job run while the engine serves")
    passing = asyncio.create_task(recorder.retention())
    assert await asyncio.to_thread(started.wait, 5)
    await engine.stop()
    await passing
    assert recorder.store is None
    # None from the moment the stores close (the call life's, then the plugins',
    # the recorder waiting out the pass meanwhile). Read from the stop's start, a
    # run that legitimately came during its first steps (API, drain), which a
    # loaded machine stretches past the job's 0.05 s, failed the test (issue 16).
    assert len(closing) == 1
    assert [t for t in runs if t > closing[0]] == []


async def test_the_apis_stop_closes_its_files_and_not_the_rules_beside_them(
    tmp_path: Path,
) -> None:
    """The API stopped its MixMonitor (legs in) on a channel a rule's (mix, GSM) also
    records: Asterisk's MixMonitorStop names no MixMonitor. Before, both files were
    closed, and the rule's GSM file, which Asterisk writes every 20 s, held its size
    for a second and was taken (hashed, delivered) while still being written. Now the
    files callrouter asked to stop close; the rule's stays recording."""
    from router.calls import CallTracker
    from router.recordings.mixmonitor import start_recording
    from router.recordings.store import Origin
    from router.testing.builders import make_event

    live, trunk = "1714557900.1", "PJSIP/trunk-00000001"
    tracker = CallTracker()
    tracker.feed(
        make_event(
            "Newchannel", Channel=trunk, Uniqueid=f"{live}0", Linkedid=live, ChannelStateDesc="Up"
        )
    )
    call = tracker.get(live)
    assert call is not None
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=3)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    ami = _Ami()
    send = ami.send
    (api,) = await start_recording(
        send, store, settings, call_id=live, channel=trunk, legs="in", origin=Origin("api", "t")
    )
    (rule,) = await start_recording(
        send,
        store,
        settings,
        call_id=live,
        channel=trunk,
        legs="mix",
        fmt="gsm",
        origin=Origin("rule", "compliance"),
    )
    store.ask_stop([api.id])  # as the API's stop does before its StopMixMonitor
    write_wav(api.local_path, 1.0)  # Asterisk finished the API's file
    rule.local_path.write_bytes(b"\0" * 33 * 50)  # the rule's: its next write in 20 s
    recorder.callrouter_event(
        make_event("MixMonitorStop", Channel=trunk, Linkedid=live),
        call,  # type: ignore[arg-type]
    )
    await asyncio.wait_for(recorder.closed(), 10)
    states = {r.part: r.state for r in store.for_call(live)}
    assert states == {"in": "closed", "mix": "recording"}
    await recorder.callrouter_shutdown()


class _AsteriskIds:
    """AMI MixMonitor answering with a fresh MixMonitorID (Asterisk 22), which its i()
    option also stores on the channel: the variable holds the newest one."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.variable = ""

    async def send(self, name: str, headers: dict[str, str]) -> object:
        from types import SimpleNamespace

        self.sent.append((name, dict(headers)))
        answer: dict[str, str] = {}
        if name == "MixMonitor":
            self.variable = answer["MixMonitorID"] = f"0x7fee{len(self.sent):04x}"
        elif name == "Getvar":
            answer["Value"] = self.variable
        return SimpleNamespace(response=answer)


async def test_max_duration_stops_each_of_callrouters_mixmonitors_on_a_channel(
    tmp_path: Path,
) -> None:
    """The API's MixMonitor (legs in) and then a rule's (mix) record one channel, both
    longer than max_duration. Before, one stop per channel named CALLROUTER_REC_ID,
    the rule's (the newest), and the API's went on unbounded; now each is stopped by
    the id Asterisk answered."""
    from types import SimpleNamespace

    from router.recordings.mixmonitor import start_recording
    from router.recordings.store import Origin

    live, trunk = "1714557950.1", "PJSIP/trunk-00000001"
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, max_duration=60)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    asterisk = _AsteriskIds()
    recorder._engine = SimpleNamespace(ami=asterisk)  # type: ignore[assignment]
    for legs, origin in (("in", Origin("api", "t")), ("mix", Origin("rule", "compliance"))):
        await start_recording(
            asterisk.send, store, settings, call_id=live, channel=trunk, legs=legs, origin=origin
        )
    ids = {r.part: r.mixmonitor_id for r in store.recording(live)}
    assert ids["in"] != ids["mix"]
    with sqlite3.connect(tmp_path / "state" / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 61")
    assert await recorder.stop_overlong() == [trunk]
    stopped = sorted(h["MixMonitorID"] for name, h in asterisk.sent if name == "StopMixMonitor")
    assert stopped == sorted(ids.values())
    assert await recorder.stop_overlong() == []  # asked once
    await recorder.callrouter_shutdown()


def _bridging(
    tmp_path: Path,
) -> tuple[CallTracker, Recorder, Callable[..., None]]:
    """A recorder beside a call tracker, and ``feed(name, channel, linkedid,
    **fields)``, which gives an event to both as the engine does: the bridge
    tests' common setup."""
    from types import SimpleNamespace

    from router.calls import CallTracker
    from router.testing.builders import make_event

    tracker = CallTracker()
    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, close_timeout=0.2)
    recorder.store = RecordingStore(tmp_path / "state")
    recorder._engine = SimpleNamespace(calls=tracker)  # type: ignore[assignment]

    def feed(name: str, channel: str, linkedid: str, **fields: str) -> None:
        event = make_event(name, Channel=channel, Uniqueid=channel, Linkedid=linkedid, **fields)
        fed = tracker.feed(event)
        if name in recorder.callrouter_wanted_events():
            recorder.callrouter_event(event, fed.call)  # type: ignore[arg-type]

    return tracker, recorder, feed


async def test_a_leg_bridged_in_from_an_older_call_may_read_the_recording(
    tmp_path: Path,
) -> None:
    """101 talks with the caller and the call is recorded; 103, held on an older call,
    is bridged in (an attended transfer, the Bridge action). Asterisk 22 gives every
    channel of the bridge the oldest Linkedid, so 103's BridgeEnter comes under its own
    call, not the recorded one (measured on the sandbox), and 103 was left out of the
    recording's readers. Now everyone in a bridge with one of the recorded call's legs
    counts; 105, in another bridge of the older call, does not."""
    from types import SimpleNamespace

    from router.rules.decision import Action

    older, live = "1714557990.1", "1714558000.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    held, other = "PJSIP/103-00000012", "PJSIP/105-00000013"
    tracker, recorder, feed = _bridging(tmp_path)

    for channel in (held, other):
        feed("Newchannel", channel, older, ChannelStateDesc="Up")
    feed("BridgeEnter", other, older, BridgeUniqueid="bridge-of-105", BridgeNumChannels="1")
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    for n, channel in enumerate((trunk, agent), start=1):
        feed("BridgeEnter", channel, live, BridgeUniqueid="talk", BridgeNumChannels=str(n))
    call = tracker.get(live)
    assert call is not None
    action = Action.make("record", {}, rule="compliance")
    ami = SimpleNamespace(send=_Ami().send)
    assert await recorder.callrouter_execute(action, call, SimpleNamespace(ami=ami))  # type: ignore[arg-type]
    # 103 is bridged in: its BridgeEnter carries the older call's Linkedid.
    feed("BridgeEnter", held, older, BridgeUniqueid="talk", BridgeNumChannels="3")
    feed("BridgeLeave", agent, older, BridgeUniqueid="talk", BridgeNumChannels="2")
    feed("Hangup", agent, older)
    # The recorded channel's next event is filed under the older call too: a leg
    # bridged in after that still joins the recorded channel's bridge.
    feed("Newstate", trunk, older, ChannelStateDesc="Up")
    assert tracker.get(live) is None  # its legs all moved: the tracker ended it
    feed("Newchannel", "PJSIP/104-00000014", "1714558010.1", ChannelStateDesc="Up")
    feed("BridgeEnter", "PJSIP/104-00000014", older, BridgeUniqueid="talk")
    (row,) = recorder.store.for_call(live)
    assert set(row.extensions) == {"101", "103", "104", "trunk"}
    assert "105" not in row.extensions
    await recorder.callrouter_shutdown()


def test_bridge_members_are_bounded_and_follow_moves() -> None:
    from router.recordings.bridges import BridgeMembers

    members = BridgeMembers(max_channels=3)
    assert members.enter("a", "b1") == frozenset()
    assert members.enter("b", "b1") == {"a"}
    assert members.enter("a", "b2") == frozenset()  # moved: out of b1
    assert members.enter("c", "b1") == {"b"}
    members.leave("b")
    assert members.enter("d", "b1") == {"c"}
    assert len(members) == 3
    members.enter("e", "b3")  # full: the oldest entry goes
    assert len(members) == 3


def test_a_bridge_id_longer_than_asterisk_makes_is_no_bridge_and_is_not_kept() -> None:
    """A ``BridgeEnter`` passes the tracker's identity check on its ``Channel``;
    its ``BridgeUniqueid`` (Asterisk's is a UUID, 36 characters) was kept as it
    came (issue 16): a hostile AMI peer's 64 KiB id for each of 50,000 channels
    held about 3 GB. An id longer than :data:`MAX_BRIDGE_ID` is no bridge
    Asterisk names: the leg is in none known (fail closed, as after a gap),
    nobody meets anybody there, and neither the entry nor a rebuild keeps it."""
    from router.recordings.bridges import MAX_BRIDGE_ID, BridgeMembers, bridged_channels

    long = "b" * 65_000
    members = BridgeMembers()
    assert members.enter("a", "short") == frozenset()
    assert members.enter("a", long) == frozenset()  # left "short", entered nothing known
    assert members.enter("b", long) == frozenset()  # does not meet "a"
    assert len(members) == 0
    assert members.beside(["a"]) == set()
    rebuilt = members.rebuild([("c", long), ("d", long)], generation=members.generation)
    assert (rebuilt.restored, len(members)) == (0, 0)
    listing = [
        SimpleNamespace(get={"Channel": "e", "BridgeId": long}.get),
        SimpleNamespace(get={"Channel": "f", "BridgeId": "x" * MAX_BRIDGE_ID}.get),
    ]
    assert bridged_channels(listing) == {"f": "x" * MAX_BRIDGE_ID}


async def test_a_phone_parked_beside_a_recorded_call_does_not_read_its_recording(
    tmp_path: Path,
) -> None:
    """A parking lot (and BridgeWait) is one holding bridge for every call parked in
    it: its channels hear music, not each other. 101 parks the recorded caller; 107
    dials the parking lot itself (or is parked by a colleague) and enters the same
    bridge: 107 never heard the call and must not read its recording. The caller's
    later basic bridge with 102 (the call taken back from the lot) counts as before."""
    from types import SimpleNamespace

    from router.rules.decision import Action

    live, lurker_call = "1714558000.1", "1714558100.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    lurker, taker = "PJSIP/107-00000020", "PJSIP/102-00000021"
    tracker, recorder, feed = _bridging(tmp_path)

    parking = {"BridgeType": "parking", "BridgeTechnology": "holding_bridge"}
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    call = tracker.get(live)
    assert call is not None
    action = Action.make("record", {}, rule="compliance")
    ami = SimpleNamespace(send=_Ami().send)
    assert await recorder.callrouter_execute(action, call, SimpleNamespace(ami=ami))  # type: ignore[arg-type]
    feed("BridgeEnter", trunk, live, BridgeUniqueid="lot-70", **parking)
    feed("Hangup", agent, live)
    feed("Newchannel", lurker, lurker_call, ChannelStateDesc="Up")
    feed("BridgeEnter", lurker, lurker_call, BridgeUniqueid="lot-70", **parking)
    feed("BridgeLeave", lurker, lurker_call, BridgeUniqueid="lot-70", **parking)
    feed("Hangup", lurker, lurker_call)
    feed("BridgeLeave", trunk, live, BridgeUniqueid="lot-70", **parking)
    basic = {"BridgeType": "basic", "BridgeTechnology": "simple_bridge"}
    feed("Newchannel", taker, live, ChannelStateDesc="Up")
    feed("BridgeEnter", trunk, live, BridgeUniqueid="talk", **basic)
    feed("BridgeEnter", taker, live, BridgeUniqueid="talk", **basic)
    (row,) = recorder.store.for_call(live)
    assert "107" not in row.extensions
    assert {"101", "102"} <= set(row.extensions)
    await recorder.callrouter_shutdown()


async def test_max_duration_stops_a_rules_dialplan_mixmonitor_beside_the_apis(
    tmp_path: Path,
) -> None:
    """A rule recorded the call through [callrouter-record] (its MixMonitor id only in
    CALLROUTER_REC_ID), then the API's AMI MixMonitor (legs in) on the same channel,
    whose i() option overwrote the variable. max_duration read the variable for the
    rule's files and stopped the API's MixMonitor a second time: the rule's ran on
    unbounded. Now the API's start keeps the id the variable held for the channel's
    files without one, and each MixMonitor is stopped by its own id."""
    from types import SimpleNamespace

    from router.recordings.mixmonitor import hand_to_dialplan, start_recording
    from router.recordings.store import Origin

    live, trunk = "1714557960.1", "PJSIP/trunk-00000001"
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, max_duration=60)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    asterisk = _AsteriskIds()
    recorder._engine = SimpleNamespace(ami=asterisk)  # type: ignore[assignment]
    await hand_to_dialplan(
        asterisk.send,
        store,
        settings,
        call_id=live,
        channel=trunk,
        legs="mix",
        origin=Origin("rule", "compliance"),
    )
    asterisk.variable = "0x7feerule"  # [callrouter-record]'s MixMonitor i(CALLROUTER_REC_ID)
    (api,) = await start_recording(
        asterisk.send,
        store,
        settings,
        call_id=live,
        channel=trunk,
        legs="in",
        origin=Origin("api", "t"),
    )
    assert api.mixmonitor_id == asterisk.variable != "0x7feerule"
    with sqlite3.connect(tmp_path / "state" / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 61")
    assert await recorder.stop_overlong() == [trunk]
    stopped = sorted(h["MixMonitorID"] for name, h in asterisk.sent if name == "StopMixMonitor")
    assert stopped == sorted(["0x7feerule", api.mixmonitor_id])
    await recorder.callrouter_shutdown()


def test_a_hangup_for_no_tracked_call_drops_its_channel_from_the_bridges(tmp_path: Path) -> None:
    """The Hangup of a channel whose call the tracker no longer holds (dropped after 4
    hours, evicted, or never seen) left the channel in the bridge map: such entries
    piled up to its bound of 50 000, whose eviction then dropped the oldest live legs
    of long bridges (readers of their recordings lost)."""
    from router.testing.builders import make_event

    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    recorder.store = RecordingStore(tmp_path / "state")
    channel = "PJSIP/106-00000035"
    recorder.callrouter_event(make_event("BridgeEnter", Channel=channel, BridgeUniqueid="b"), None)
    assert len(recorder._bridges) == 1
    recorder.callrouter_event(make_event("Hangup", Channel=channel), None)
    assert len(recorder._bridges) == 0


async def test_a_refused_stop_keeps_the_mark_of_an_earlier_one(tmp_path: Path) -> None:
    """The API stopped its MixMonitor (legs in, beside a rule's mix); before Asterisk's
    MixMonitorStop came, max_duration named the same id and Asterisk refused it (that
    MixMonitor is gone). The refusal took back the API's mark too, so the
    MixMonitorStop closed every file on the channel, the rule's still being written.
    Now a refused stop takes back only the marks it set."""
    from router.errors import AMIError
    from router.recordings.mixmonitor import start_recording, stop_recording
    from router.recordings.store import Origin

    live, trunk = "1714557970.1", "PJSIP/trunk-00000001"
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    store = RecordingStore(tmp_path / "state")
    asterisk = _AsteriskIds()
    (api,) = await start_recording(
        asterisk.send,
        store,
        settings,
        call_id=live,
        channel=trunk,
        legs="in",
        origin=Origin("api", "t"),
    )
    await start_recording(
        asterisk.send,
        store,
        settings,
        call_id=live,
        channel=trunk,
        legs="mix",
        origin=Origin("rule", "compliance"),
    )
    assert await stop_recording(asterisk.send, store, live, [api]) == [trunk]

    async def refusing(name: str, headers: dict[str, str]) -> object:
        raise AMIError("Could not stop specified MixMonitor")

    with pytest.raises(AMIError):
        await stop_recording(refusing, store, live, store.recording(live))
    rows = {r.part: r for r in store.recording(live)}
    assert rows["in"].stop_asked_at is not None  # the API's stop stands
    assert rows["mix"].stop_asked_at is None  # the refused one's own mark, taken back
    store.close()


class _Refusing(_AsteriskIds):
    """:class:`_AsteriskIds` refusing the StopMixMonitor (or Getvar) of the ids or
    channels in ``refuse`` with Asterisk's message for each."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: dict[str, str] = {}

    async def send(self, name: str, headers: dict[str, str]) -> object:
        from router.ami.message import Response
        from router.errors import AMIActionError

        message = self.refuse.get(headers.get("MixMonitorID", "")) or self.refuse.get(
            headers.get("Channel", "")
        )
        if name in ("StopMixMonitor", "Getvar") and message:
            self.sent.append((name, dict(headers)))
            raise AMIActionError(name, Response((("Response", "Error"), ("Message", message))))
        return await super().send(name, headers)


async def test_a_stop_that_fails_part_way_tells_which_rows_it_stopped(tmp_path: Path) -> None:
    """stop_recording stops MixMonitors one by one and raised at the first refusal
    without saying which it had stopped: the API then put back the renewed stale marks
    of them all, stopped ones too (the next stop sent an ended MixMonitor's id again).
    Now ``done`` has the rows stopped before the failure; the refused one's own mark is
    taken back, the stopped one's stands."""
    from router.errors import AMIActionError
    from router.recordings.mixmonitor import start_recording, stop_recording
    from router.recordings.store import Origin

    live, trunk = "1714557980.1", "PJSIP/trunk-00000001"
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    store = RecordingStore(tmp_path / "state")
    asterisk = _Refusing()
    for legs in ("in", "out"):
        await start_recording(
            asterisk.send,
            store,
            settings,
            call_id=live,
            channel=trunk,
            legs=legs,
            origin=Origin("api", "t"),
        )
    rows = {r.part: r for r in store.recording(live)}
    assert rows["in"].mixmonitor_id < rows["out"].mixmonitor_id  # stopped in this order
    asterisk.refuse[rows["out"].mixmonitor_id] = "Could not stop monitoring channel"
    done: set[int] = set()
    with pytest.raises(AMIActionError, match="Could not stop"):
        await stop_recording(asterisk.send, store, live, rows.values(), done=done)
    assert done == {rows["in"].id}
    after = {r.part: r for r in store.recording(live)}
    assert after["in"].stop_asked_at is not None
    assert after["out"].stop_asked_at is None
    store.close()


@pytest.mark.parametrize("kept_id", [True, False])
async def test_max_duration_counts_a_channel_asterisk_no_longer_has_as_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kept_id: bool
) -> None:
    """The channel hung up (its Hangup lost in a stream gap) while its file was still
    'recording': StopMixMonitor after max_duration was answered 'No such channel', a
    WARNING said the stop failed and the mark was taken back, though the recording
    had ended with the channel. Now that is a stop done: the channel is reported
    stopped, the marks kept, and its other MixMonitor is not asked (one action)."""
    from types import SimpleNamespace

    from router.recordings.mixmonitor import start_recording
    from router.recordings.store import Origin

    live, trunk = "1714557990.1", "PJSIP/trunk-00000001"
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, max_duration=60)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    asterisk = _Refusing()
    recorder._engine = SimpleNamespace(ami=asterisk)  # type: ignore[assignment]
    for legs, origin in (("in", Origin("api", "t")), ("mix", Origin("rule", "compliance"))):
        await start_recording(
            asterisk.send, store, settings, call_id=live, channel=trunk, legs=legs, origin=origin
        )
    if not kept_id:  # [callrouter-record]'s: stopped by the channel's variable
        store.set_mixmonitor_id((r.id for r in store.recording(live)), "")
    with sqlite3.connect(tmp_path / "state" / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 61")
    asterisk.refuse[trunk] = "No such channel"
    asterisk.sent.clear()
    with caplog.at_level(logging.WARNING, "router.recordings"):
        assert await recorder.stop_overlong() == [trunk]
    assert [name for name, _ in asterisk.sent] == ["StopMixMonitor" if kept_id else "Getvar"]
    assert "StopMixMonitor after max_duration" not in caplog.text
    assert all(r.stop_asked_at is not None for r in store.recording(live))
    await recorder.callrouter_shutdown()


async def test_a_max_duration_stop_that_failed_is_tried_again_a_few_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each file was asked once: a StopMixMonitor lost to a passing failure (Asterisk
    restarting, a refusal) left that recording unbounded for the rest of the call.
    It is tried again at the next sweeps, up to OVERLONG_TRIES times, then an ERROR
    says to stop it by hand, and nothing more is sent for it."""
    from types import SimpleNamespace

    from router.recordings.mixmonitor import start_recording
    from router.recordings.recorder import OVERLONG_TRIES
    from router.recordings.store import Origin

    live, trunk = "1714557990.1", "PJSIP/trunk-00000001"
    recorder = Recorder()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path, max_duration=60)
    recorder.settings = settings
    store = recorder.store = RecordingStore(tmp_path / "state")
    asterisk = _Refusing()
    recorder._engine = SimpleNamespace(ami=asterisk)  # type: ignore[assignment]
    await start_recording(
        asterisk.send, store, settings, call_id=live, channel=trunk, legs="mix",
        origin=Origin("rule", "compliance"),
    )  # fmt: skip
    with sqlite3.connect(tmp_path / "state" / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 61")
    asterisk.refuse[trunk] = "Could not stop monitoring channel"
    asterisk.sent.clear()
    with caplog.at_level(logging.WARNING, "router.recordings"):
        assert await recorder.stop_overlong() == []
        assert await recorder.stop_overlong() == []  # the next sweep tries again
        assert [name for name, _ in asterisk.sent] == ["StopMixMonitor"] * 2
        del asterisk.refuse[trunk]  # Asterisk takes it now
        assert await recorder.stop_overlong() == [trunk]
        assert await recorder.stop_overlong() == []
    assert [name for name, _ in asterisk.sent] == ["StopMixMonitor"] * 3
    assert "trying again in 5 s" in caplog.text
    # A refusal that lasts: OVERLONG_TRIES stops, one ERROR, then nothing more.
    await start_recording(
        asterisk.send, store, settings, call_id="1714557991.1", channel="PJSIP/t-2",
        legs="mix", origin=Origin("rule", "compliance"),
    )  # fmt: skip
    with sqlite3.connect(tmp_path / "state" / "recordings.sqlite") as db:
        db.execute("UPDATE recordings SET started_at = started_at - 61")
    asterisk.refuse["PJSIP/t-2"] = "Could not stop monitoring channel"
    asterisk.sent.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "router.recordings"):
        for _ in range(OVERLONG_TRIES + 3):
            assert await recorder.stop_overlong() == []
    assert len(asterisk.sent) == OVERLONG_TRIES
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"failed {OVERLONG_TRIES} times" in errors[0].getMessage()
    await recorder.callrouter_shutdown()


async def test_after_a_stream_gap_a_leg_joining_a_bridge_the_recorded_leg_left_does_not_read(
    tmp_path: Path,
) -> None:
    """The recorded caller sat in a conference and left it during an event-stream gap
    (its BridgeLeave lost): the bridge map still had it there, so 107, joining the
    conference after the gap, was counted a reader of a recording it never heard. A gap
    now forgets the bridge memberships (fail closed)."""
    from types import SimpleNamespace

    from router.ami.stream import StreamGap
    from router.rules.decision import Action

    live, joiner_call = "1714558000.1", "1714558200.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    joiner = "PJSIP/107-00000030"
    tracker, recorder, feed = _bridging(tmp_path)

    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    feed("BridgeEnter", trunk, live, BridgeUniqueid="conf")
    call = tracker.get(live)
    assert call is not None
    action = Action.make("record", {}, rule="compliance")
    ami = SimpleNamespace(send=_Ami().send)
    assert await recorder.callrouter_execute(action, call, SimpleNamespace(ami=ami))  # type: ignore[arg-type]
    # The caller leaves the conference while the stream is down: its BridgeLeave is lost.
    # As the engine tells plugins (only one implementing the hook hears of it).
    heard = getattr(recorder, "callrouter_stream_gap", None)
    if heard is not None:
        heard(StreamGap(since=1.0, resumed=2.0, reason="reconnect"))
    feed("Newchannel", joiner, joiner_call, ChannelStateDesc="Up")
    feed("BridgeEnter", joiner, joiner_call, BridgeUniqueid="conf")
    (row,) = recorder.store.for_call(live)
    assert "107" not in row.extensions
    assert "101" in row.extensions
    await recorder.callrouter_shutdown()


def test_a_bridge_enter_asks_the_catalog_once_whatever_the_size_of_the_bridge(
    tmp_path: Path,
) -> None:
    """Each BridgeEnter asked the catalog once per call in the bridge, on the event loop,
    even with nothing recorded: a ConfBridge of 50 callers (each its own call) cost
    about 1 300 queries as it filled. Now one per BridgeEnter."""
    from types import SimpleNamespace

    from router.calls import CallTracker
    from router.testing.builders import make_event

    tracker = CallTracker()
    recorder = Recorder()
    recorder.settings = RecordingSettings(dir=PBX_DIR, local_dir=tmp_path)
    recorder.store = RecordingStore(tmp_path / "state")
    recorder._engine = SimpleNamespace(calls=tracker)  # type: ignore[assignment]
    statements: list[str] = []
    recorder.store._db.set_trace_callback(statements.append)
    per_event: list[int] = []
    for n in range(50):
        channel, linkedid = f"PJSIP/{200 + n}-{n:08x}", f"17145590{n:02d}.1"
        for name, fields in (
            ("Newchannel", {"ChannelStateDesc": "Up"}),
            ("BridgeEnter", {"BridgeUniqueid": "conf"}),
        ):
            event = make_event(name, Channel=channel, Uniqueid=channel, Linkedid=linkedid, **fields)
            fed = tracker.feed(event)
            if name in recorder.callrouter_wanted_events():
                before = len(statements)
                recorder.callrouter_event(event, fed.call)  # type: ignore[arg-type]
                per_event.append(len(statements) - before)
    assert len(recorder._bridges) == 50
    assert max(per_event) <= 1
    assert recorder.store.recording() == []


async def test_a_leg_of_an_older_call_already_in_the_bridge_when_recording_starts_may_read(
    tmp_path: Path,
) -> None:
    """103, held on an older call, was bridged with the caller and 101 before an
    ``on: event`` rule recorded the call: its BridgeEnter came before any recording,
    and its Linkedid is the older call's, so neither the legs live at the start nor its
    Hangup (filed under the older call) counted it, though it heard the whole
    recording. The legs sharing a bridge with the call's legs when it starts count;
    105, in another bridge of the older call, does not."""
    from types import SimpleNamespace

    from router.rules.decision import Action

    older, live = "1714557990.1", "1714558000.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    held, other = "PJSIP/103-00000012", "PJSIP/105-00000013"
    tracker, recorder, feed = _bridging(tmp_path)

    for channel in (held, other):
        feed("Newchannel", channel, older, ChannelStateDesc="Up")
    feed("BridgeEnter", other, older, BridgeUniqueid="bridge-of-105")
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    for channel in (trunk, agent):
        feed("BridgeEnter", channel, live, BridgeUniqueid="talk")
    feed("BridgeEnter", held, older, BridgeUniqueid="talk")
    call = tracker.get(live)
    assert call is not None
    action = Action.make("record", {}, rule="compliance")
    ami = SimpleNamespace(send=_Ami().send)
    assert await recorder.callrouter_execute(action, call, SimpleNamespace(ami=ami))  # type: ignore[arg-type]
    feed("BridgeLeave", held, older, BridgeUniqueid="talk")
    feed("Hangup", held, older)
    (row,) = recorder.store.for_call(live)
    assert set(row.extensions) == {"101", "103", "trunk"}
    await recorder.callrouter_shutdown()


class _BridgeList:
    """``engine.ami`` answering ``BridgeList`` with ``bridges`` (id -> type,
    technology), once ``gate`` is set (if any), or raising ``error``."""

    def __init__(
        self,
        bridges: dict[str, tuple[str, str]],
        *,
        gate: asyncio.Event | None = None,
        error: Exception | None = None,
    ) -> None:
        self.bridges, self.gate, self.error = bridges, gate, error
        self.asked = 0

    async def bridge_list(self) -> object:
        from types import SimpleNamespace

        from router.testing.builders import make_event

        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        items = [
            make_event("BridgeListItem", BridgeUniqueid=b, BridgeType=kind, BridgeTechnology=tech)
            for b, (kind, tech) in self.bridges.items()
        ]
        return SimpleNamespace(items=items)


def _gap_and_listing(recorder: Recorder, listing: dict[str, str]) -> asyncio.Task[None] | None:
    """A stream gap, then the reconcile's channel listing (channel -> BridgeId), told to
    the recorder as the engine tells its plugins (only hooks it implements); the task
    rebuilding the memberships, if one was started."""
    from router.ami.stream import StreamGap
    from router.testing.builders import make_event

    recorder.callrouter_stream_gap(StreamGap(since=1.0, resumed=2.0, reason="reconnect"))
    listed = getattr(recorder, "callrouter_channels_listed", None)
    if listed is not None:
        listed([make_event("CoreShowChannel", Channel=c, BridgeId=b) for c, b in listing.items()])
    task: asyncio.Task[None] | None = getattr(recorder, "_rebuilding", None)
    return task


async def _recorded(recorder: Recorder, call: Call | None) -> None:
    from types import SimpleNamespace

    from router.rules.decision import Action

    assert call is not None
    action = Action.make("record", {}, rule="compliance")
    ami = SimpleNamespace(send=_Ami().send)
    assert await recorder.callrouter_execute(action, call, SimpleNamespace(ami=ami))  # type: ignore[arg-type]


def test_bridge_members_are_rebuilt_once_for_their_gap_and_events_since_win() -> None:
    from router.recordings.bridges import BridgeMembers, bridged_channels, conversations
    from router.testing.builders import make_event

    members = BridgeMembers()
    assert members.rebuild_pending  # a fresh start: never known
    members.enter("a", "b1")
    members.clear()
    generation = members.generation
    members.leave("x")  # x hung up after the gap
    members.enter("y", "b2")  # y moved after the gap
    listing = [("a", "b1"), ("x", "b1"), ("y", "b1"), ("z", "b1")]
    assert members.rebuild(listing, generation=generation - 1).restored == 0  # earlier gap
    assert members.rebuild(listing, generation=generation).restored == 2  # a and z
    assert members.beside(["a"]) == {"z"}
    assert members.beside(["y"]) == set()
    assert not members.rebuild_pending
    assert members.rebuild([("q", "b1")], generation=generation).restored == 0  # once a gap
    members.clear()
    assert members.rebuild([("q", "b1")], generation=members.generation).restored == 1

    # More channels heard after the gap than can be remembered: the rebuild is given up.
    small = BridgeMembers(max_channels=2)
    small.clear()
    for channel in ("1", "2", "3"):
        small.leave(channel)
    assert not small.rebuild_pending
    assert small.rebuild([("4", "b")], generation=small.generation).restored == 0
    # ... and a listing larger than the bound keeps within it.
    small.clear()
    assert (
        small.rebuild([(str(n), "b") for n in range(5)], generation=small.generation).restored == 5
    )
    assert len(small) == 2

    items = [
        make_event("CoreShowChannel", Channel="PJSIP/1-1", BridgeId="talk"),
        make_event("CoreShowChannel", Channel="PJSIP/2-2", BridgeId=""),
        make_event("CoreShowChannel", Channel="PJSIP/3-3", BridgeId="lot"),
    ]
    assert bridged_channels(items) == {"PJSIP/1-1": "talk", "PJSIP/3-3": "lot"}
    assert len(bridged_channels(items, limit=1)) == 1
    listed = [
        make_event(
            "BridgeListItem",
            BridgeUniqueid="talk",
            BridgeType="basic",
            BridgeTechnology="simple_bridge",
        ),
        make_event(
            "BridgeListItem",
            BridgeUniqueid="lot",
            BridgeType="parking",
            BridgeTechnology="holding_bridge",
        ),
        make_event(
            "BridgeListItem",
            BridgeUniqueid="wait",
            BridgeType="basic",
            BridgeTechnology="holding_bridge",
        ),
        make_event("BridgeListItem", BridgeUniqueid="odd"),  # no type: not vouched for
        make_event(
            "BridgeListItem", BridgeUniqueid="other", BridgeType="basic", BridgeTechnology="softmix"
        ),
    ]
    assert conversations(listed, {"talk", "lot", "wait", "odd", "gone"}) == {"talk"}


async def test_after_a_stream_gap_a_leg_bridged_before_it_is_beside_a_phone_joining_after(
    tmp_path: Path,
) -> None:
    """103, held on an older call, was bridged with the recorded caller before an
    event-stream gap; the gap forgot every membership, so 104, bridged in after the gap,
    joined nobody the recorder knew of and could not read the recording it hears.
    The reconcile's listing (each channel's BridgeId) and BridgeList (the bridge's type)
    now put the memberships back."""
    from types import SimpleNamespace

    older, live, joiner_call = "1714557990.1", "1714558000.1", "1714558200.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    held, joiner = "PJSIP/103-00000012", "PJSIP/104-00000014"
    tracker, recorder, feed = _bridging(tmp_path)
    ami = _BridgeList({"talk": ("basic", "simple_bridge")})
    recorder._engine = SimpleNamespace(calls=tracker, ami=ami)  # type: ignore[assignment]

    feed("Newchannel", held, older, ChannelStateDesc="Up")
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    await _recorded(recorder, tracker.get(live))
    # 101 hands the caller over to 103 (the Bridge action) during the gap.
    task = _gap_and_listing(recorder, {trunk: "talk", held: "talk", agent: ""})
    if task is not None:
        await task
    assert ami.asked == 1
    feed("Hangup", agent, live)
    feed("Newchannel", joiner, joiner_call, ChannelStateDesc="Up")
    feed("BridgeEnter", joiner, joiner_call, BridgeUniqueid="talk")
    (row,) = recorder.store.for_call(live)
    assert {"101", "103", "104", "trunk"} <= set(row.extensions)
    await recorder.callrouter_shutdown()


async def test_a_holding_bridge_or_one_bridgelist_does_not_name_is_not_rebuilt(
    tmp_path: Path,
) -> None:
    """The listing says which bridge a channel is in, not what it is: the recorded
    caller parked in a lot beside 107 (who heard nothing of it), and 102 in a bridge
    gone by the time BridgeList answers, are not put beside anyone; 103, in a basic
    bridge with 101, is."""
    from types import SimpleNamespace

    older, live, lurker_call = "1714557990.1", "1714558000.1", "1714558100.1"
    trunk, agent, second = "PJSIP/trunk-00000010", "PJSIP/101-00000011", "PJSIP/102-00000015"
    held, lurker, other = "PJSIP/103-00000012", "PJSIP/107-00000020", "PJSIP/105-00000013"
    tracker, recorder, feed = _bridging(tmp_path)
    ami = _BridgeList({"lot-70": ("parking", "holding_bridge"), "talk": ("basic", "simple_bridge")})
    recorder._engine = SimpleNamespace(calls=tracker, ami=ami)  # type: ignore[assignment]
    for channel in (held, other):
        feed("Newchannel", channel, older, ChannelStateDesc="Up")
    feed("Newchannel", lurker, lurker_call, ChannelStateDesc="Up")
    for channel in (trunk, agent, second):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    call = tracker.get(live)
    assert call is not None
    task = _gap_and_listing(
        recorder,
        {
            trunk: "lot-70",
            lurker: "lot-70",
            agent: "talk",
            held: "talk",
            second: "vanished",
            other: "vanished",
        },
    )
    if task is not None:
        await task
    assert recorder.present_extensions(call) == {"trunk", "101", "102", "103"}
    await recorder.callrouter_shutdown()


async def test_an_event_after_the_gap_wins_over_the_older_listing(tmp_path: Path) -> None:
    """The listing is taken once the gap is over and BridgeList answers later still;
    the recorded caller's BridgeLeave handled in between is newer than the listing, which
    still shows it in the conference. Put back there, it made 107, joining the
    conference next, a reader of a recording it never heard."""
    from types import SimpleNamespace

    older, live, joiner_call = "1714557990.1", "1714558000.1", "1714558200.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    held, joiner = "PJSIP/103-00000012", "PJSIP/107-00000030"
    tracker, recorder, feed = _bridging(tmp_path)
    gate = asyncio.Event()
    ami = _BridgeList({"conf": ("basic", "softmix")}, gate=gate)
    recorder._engine = SimpleNamespace(calls=tracker, ami=ami)  # type: ignore[assignment]
    feed("Newchannel", held, older, ChannelStateDesc="Up")
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    await _recorded(recorder, tracker.get(live))
    task = _gap_and_listing(recorder, {trunk: "conf", held: "conf"})
    await asyncio.sleep(0)
    feed("BridgeLeave", trunk, live, BridgeUniqueid="conf")
    gate.set()
    if task is not None:
        await task
    assert recorder._bridges.beside([joiner, held]) == set()  # 103 put back, alone
    feed("Newchannel", joiner, joiner_call, ChannelStateDesc="Up")
    feed("BridgeEnter", joiner, joiner_call, BridgeUniqueid="conf")
    assert recorder._bridges.beside([joiner]) == {held}
    (row,) = recorder.store.for_call(live)
    assert "107" not in row.extensions
    await recorder.callrouter_shutdown()


async def test_phones_joining_while_bridgelist_is_asked_read_with_the_legs_put_back(
    tmp_path: Path,
) -> None:
    """The rebuild merges with the events handled while BridgeList was asked: 104
    joined the bridge of the recorded caller and 103 (bridged in before the gap) then,
    and 106 joined and hung up; each found nobody the recorder knew of, and the
    rebuild put the caller and 103 back without pairing anyone, so neither could read
    the recording they heard. A recording started meanwhile (its readers answered
    without 103, not yet put back) now counts 103 too. Until BridgeList answers, it
    fails closed."""
    from types import SimpleNamespace

    older, live = "1714557990.1", "1714558000.1"
    joiner_call, leaver_call = "1714558200.1", "1714558300.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    held, joiner, leaver = "PJSIP/103-00000012", "PJSIP/104-00000014", "PJSIP/106-00000016"
    tracker, recorder, feed = _bridging(tmp_path)
    gate = asyncio.Event()
    ami = _BridgeList({"talk": ("basic", "simple_bridge")}, gate=gate)
    recorder._engine = SimpleNamespace(calls=tracker, ami=ami)  # type: ignore[assignment]
    feed("Newchannel", held, older, ChannelStateDesc="Up")
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    task = _gap_and_listing(recorder, {trunk: "talk", held: "talk", agent: ""})
    await asyncio.sleep(0)
    assert ami.asked == 1
    call = tracker.get(live)
    assert call is not None
    await _recorded(recorder, call)  # while BridgeList is asked
    feed("Newchannel", joiner, joiner_call, ChannelStateDesc="Up")
    feed("BridgeEnter", joiner, joiner_call, BridgeUniqueid="talk")
    feed("Newchannel", leaver, leaver_call, ChannelStateDesc="Up")
    feed("BridgeEnter", leaver, leaver_call, BridgeUniqueid="talk")
    feed("Hangup", leaver, leaver_call)
    assert recorder.store is not None
    (row,) = recorder.store.for_call(live)
    assert not {"103", "104", "106"} & set(row.extensions)  # fail closed until rebuilt
    gate.set()
    assert task is not None
    await task
    (row,) = recorder.store.for_call(live)
    assert {"trunk", "101", "103", "104", "106"} <= set(row.extensions)
    assert recorder.present_extensions(call) == {"trunk", "101", "103", "104"}
    await recorder.callrouter_shutdown()


def test_a_rebuild_says_who_met_the_legs_it_put_back() -> None:
    """``Rebuilt.meetings``: a channel that entered a bridge since the clear meets the
    legs put back in that bridge (still there or gone since); the legs put back in one
    bridge meet each other; nobody meets legs put back in another bridge, or a channel
    an event moved (the event wins)."""
    from router.recordings.bridges import BridgeMembers

    members = BridgeMembers()
    members.clear()
    members.enter("j", "b1")  # joined during the round trip
    members.enter("k", "b1")
    members.leave("k")  # ... and left again
    members.enter("m", "b2")
    members.enter("y", "b3")  # listed in b1, moved since: the event wins
    listing = [("a", "b1"), ("z", "b1"), ("y", "b1"), ("c", "b4")]
    rebuilt = members.rebuild(listing, generation=members.generation)
    assert rebuilt.restored == 3
    assert rebuilt.meetings == (
        ("a", frozenset({"z"})),
        ("j", frozenset({"a", "z"})),
        ("k", frozenset({"a", "z"})),
    )
    assert members.beside(["j"]) == {"a", "z"}
    # Once rebuilt, nothing is remembered for a rebuild to come.
    members.enter("q", "b1")
    assert members.rebuild(listing, generation=members.generation).meetings == ()
    # Too many entries to remember: the rebuild is given up (fail closed).
    small = BridgeMembers(max_channels=2)
    small.clear()
    small.enter("1", "b")
    small.enter("1", "c")
    small.enter("1", "d")
    assert not small.rebuild_pending


async def test_a_refused_bridgelist_leaves_the_memberships_forgotten_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without BridgeList's answer no bridge is known not to be a parking lot: the legs
    bridged before the gap stay uncounted (fail closed), a WARNING says what is lost,
    once however many gaps, and the reconcile is not failed (the hook returns at once)."""
    from types import SimpleNamespace

    from router.errors import AMIPrivilegeError
    from router.testing.builders import make_event

    live, joiner_call = "1714558000.1", "1714558200.1"
    trunk, agent, joiner = "PJSIP/trunk-00000010", "PJSIP/101-00000011", "PJSIP/107-00000030"
    tracker, recorder, feed = _bridging(tmp_path)
    refusal = AMIPrivilegeError(
        "BridgeList",
        make_event("Response", Message="Permission denied"),
        username="router",
        classes=(),
    )
    ami = _BridgeList({"conf": ("basic", "simple_bridge")}, error=refusal)
    recorder._engine = SimpleNamespace(calls=tracker, ami=ami)  # type: ignore[assignment]
    for channel in (trunk, agent):
        feed("Newchannel", channel, live, ChannelStateDesc="Up")
    await _recorded(recorder, tracker.get(live))
    for _ in range(2):
        task = _gap_and_listing(recorder, {trunk: "conf"})
        if task is not None:
            await task
    assert ami.asked == 2
    assert not recorder._bridges.rebuild_pending
    feed("Newchannel", joiner, joiner_call, ChannelStateDesc="Up")
    feed("BridgeEnter", joiner, joiner_call, BridgeUniqueid="conf")
    assert recorder._bridges.beside([joiner]) == set()
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "BridgeList" in r.getMessage()
    ]
    assert len(warned) == 1
    assert "may not ask it" in warned[0]
    await recorder.callrouter_shutdown()


async def test_an_engine_rebuilds_the_bridges_after_a_gap_from_its_reconcile(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """End to end on the fake Asterisk: the recorded caller and 101 talk in a bridge;
    the session is lost and found again; 104 joins that bridge after the gap and may
    read the recording. The engine asked CoreShowChannels once for the gap (its own
    reconcile's listing reached the recorder) and BridgeList once."""
    local = tmp_path / "monitor"
    local.mkdir()
    settings = RecordingSettings(dir=PBX_DIR, local_dir=local)
    engine = await engine_factory(rules(tmp_path), recordings=settings)
    trunk = ajam_replay.inbound_call(caller="84951234567", did="74951234567")
    await ajam_replay.settle(engine)
    linkedid = ajam_replay.channels[trunk].linkedid
    agent, joiner = "PJSIP/101-00000031", "PJSIP/104-00000032"
    ajam_replay.queue_event(
        Event="Newchannel",
        Channel=agent,
        Uniqueid=agent,
        Linkedid=linkedid,
        ChannelState="6",
        ChannelStateDesc="Up",
    )
    for channel in (trunk, agent):
        ajam_replay.queue_event(
            Event="BridgeEnter",
            Channel=channel,
            Linkedid=linkedid,
            BridgeUniqueid="talk",
            BridgeType="basic",
            BridgeTechnology="simple_bridge",
        )
    await ajam_replay.settle(engine)
    listings = ajam_replay.count("CoreShowChannels")
    ajam_replay.expire_session()
    ajam_replay.queue_event(Event="FullyBooted", Status="Fully Booted")  # ends the poll
    await eventually(lambda: ajam_replay.logged_in, "the engine's login again")
    ajam_replay.queue_event(Event="Reload", Module="All")  # ends the poll after the relogin
    await ajam_replay.settle(engine)
    rebuilding = getattr(recorder_of(engine), "_rebuilding", None)
    if rebuilding is not None:
        await rebuilding
    assert ajam_replay.count("CoreShowChannels") == listings + 1
    ajam_replay.queue_event(
        Event="Newchannel",
        Channel=joiner,
        Uniqueid=joiner,
        Linkedid="1714558300.1",
        ChannelState="6",
        ChannelStateDesc="Up",
    )
    ajam_replay.queue_event(
        Event="BridgeEnter",
        Channel=joiner,
        Linkedid="1714558300.1",
        BridgeUniqueid="talk",
        BridgeType="basic",
        BridgeTechnology="simple_bridge",
    )
    await ajam_replay.settle(engine)
    assert ajam_replay.count("BridgeList") == 1  # at start no channel was in a bridge
    (row,) = RecordingStore(engine.state_dir).for_call(linkedid)
    assert "104" in row.extensions
