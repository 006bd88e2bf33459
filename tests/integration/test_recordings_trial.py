"""Recordings of the calls an office has, end to end on the sandbox's real phones, and
what 1C (the double) gets for each (issue 16): a missed call (its WAV of no sound is
``empty``: listed, never sent), a call hung up in its first second, a transferred call
(one file, the whole call), a nearly full disk, retention, a file deleted by hand
(``missing``). The rule records every call and rings 101 (test_recordings_e2e.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from callrouter_onec.double import OneCDouble

from router.config import Config
from router.engine import Engine
from router.recordings.retention import apply_retention
from router.recordings.store import Recording, RecordingStore
from router.sandbox.phones import Phones
from tests.integration._live import start_engine, stop_engine, until
from tests.integration.test_recordings_e2e import (
    CALLER,
    DID,
    answered,
    hang_up,
    make_config,
    pcm,
    talk,
)

#: Each test starts with a fresh 1C (the conftest's ``double`` holds a module's files).
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_double")]


def row_of(config: Config, call_id: str) -> Recording | None:
    store = RecordingStore(config.router.state_dir)
    try:
        found = store.for_call(call_id)
    finally:
        store.close()
    return found[0] if found else None


async def settled(
    config: Config, call_id: str, *, waiting: tuple[str, ...] = ("closed",)
) -> Recording:
    """The call's mix file once it is no longer being written (nor, push mode, waiting
    to be sent: in pull mode a closed file stays closed until 1C fetches it)."""

    def done() -> Recording | None:
        row = row_of(config, call_id)
        return row if row is not None and row.state not in ("recording", *waiting) else None

    found = await until(done, 40, f"call {call_id}'s recording to settle")
    assert isinstance(found, Recording)
    return found


async def missed_call(phones: Phones, ring: float = 2.0) -> str:
    """The PSTN side calls, 101 rings and nobody answers; the caller gives up."""
    phones["101"].mode = "noanswer"
    call = await asyncio.to_thread(phones.pstn.call, did=DID, caller=CALLER)
    await until(lambda: bool(phones["101"].calls), 20, "101 to ring")
    await asyncio.sleep(ring)
    await hang_up(call)
    return call.id


def call_ids(engine_records: list[object]) -> list[str]:
    return [str(getattr(r, "linkedid", "")) for r in engine_records]


async def routed_recording(engine: Engine, config: Config, n: int) -> Recording:
    """The recording of the ``n``-th call the engine routes (waited for), once settled."""
    await until(lambda: len(engine.records) == n, 20, f"call {n} routed")
    return await settled(config, call_ids(engine.records)[n - 1])


async def test_trial_missed_answered_first_second_and_transferred(
    phones: Phones, double: OneCDouble, tmp_path: Path, tone: Path
) -> None:
    config = make_config(phones, double, tmp_path / "state")
    engine, task = await start_engine(config, ready_timeout=20)
    try:
        # 1. Missed: nobody answers, the caller gives up after 2 s of ringing.
        await missed_call(phones)
        (missed_id,) = call_ids(engine.records)
        missed = await settled(config, missed_id)
        phones.reset()
        # 2. Answered and hung up by the caller within its first second.
        await talk(phones, tone, 0.3, caller=CALLER)
        short = await routed_recording(engine, config, 2)
        quick_id = short.call_id
        phones.reset()
        # 3. Answered by 101, blind-transferred to 102, who answers; then the caller
        # hangs up.
        moved = await answered(phones, tone, 2)
        await asyncio.to_thread(phones["101"].blind_transfer, "102")
        await until(lambda: bool(phones["102"].calls), 20, "102 to ring")
        await asyncio.to_thread(phones["102"].current, 20)
        await asyncio.sleep(2)
        await hang_up(moved)
        transferred = await routed_recording(engine, config, 3)
        moved_id = transferred.call_id
        # What the 1C double has once the last file is delivered: one poll more of
        # the uploader after it (1 s) would show a file it still meant to send.
        await asyncio.sleep(2)
    finally:
        await stop_engine(engine, task)
    report = {
        "missed": (missed.state, missed.size, missed.duration, missed.note),
        "first second": (short.state, short.size, short.duration, short.note),
        "transferred": (transferred.state, transferred.size, transferred.duration),
        "1C stored": [(s.call_id, s.part, len(s.data)) for s in double.recordings.stored],
        "moved talk": moved.talk_seconds,
        "stories": {
            c: [e.get("event") for e in double.story(c)] for c in (missed_id, quick_id, moved_id)
        },
    }
    print(report)
    assert (missed.state, missed.size, missed.duration) == ("empty", 44, 0.0), report
    assert missed_id not in {s.call_id for s in double.recordings.stored}, report
    assert not double.requests(f"/calls/{missed_id}/recordings/mix"), report
    assert transferred.state == "delivered", report
    (whole,) = [s for s in double.recordings.stored if s.call_id == moved_id]
    _, _, seconds = pcm(whole)
    assert moved.talk_seconds is not None
    assert abs(seconds - moved.talk_seconds) < 1.0, (seconds, moved.talk_seconds)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(folder)], check=True
    )
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root")
async def test_trial_a_nearly_full_disk(
    phones: Phones, double: OneCDouble, tmp_path: Path, tone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(phones, double, tmp_path / "state", close_timeout=6)
    assert config.recordings is not None
    folder = config.recordings.local_dir
    caplog.set_level(logging.INFO, logger="router.recordings")
    with small_disk(folder, "128k"):
        (folder / "filler").write_bytes(b"\0" * (128 * 1024 - 48 * 1024))
        engine, task = await start_engine(config, ready_timeout=20)
        try:
            results = []
            for n in (1, 2):
                await talk(phones, tone, 5, caller=CALLER)
                results.append(await routed_recording(engine, config, n))
                phones.reset()
            await asyncio.sleep(2)
        finally:
            await stop_engine(engine, task)
    report = [(r.call_id, r.state, r.size, r.duration, r.note) for r in results]
    print(report, [(s.call_id, len(s.data)) for s in double.recordings.stored])
    print("\n".join(r.getMessage() for r in caplog.records if "recording" in r.getMessage()))
    first, second = results
    assert first.state == "delivered", report
    assert second.state in ("failed", "empty"), report
    assert second.call_id not in {s.call_id for s in double.recordings.stored}


async def test_trial_retention_and_a_file_deleted_by_hand(
    phones: Phones, double: OneCDouble, tmp_path: Path, tone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(phones, double, tmp_path / "state")
    assert config.recordings is not None
    engine, task = await start_engine(config, ready_timeout=20)
    caplog.set_level(logging.WARNING, logger="router.recordings")
    try:
        await missed_call(phones, ring=1.0)
        empty_id = call_ids(engine.records)[0]
        await settled(config, empty_id)
        phones.reset()
        for n in (2, 3):
            await talk(phones, tone, 1.5, caller=CALLER)
            await routed_recording(engine, config, n)
            phones.reset()
    finally:
        await stop_engine(engine, task)
    _, kept_id, gone_id = call_ids(engine.records)
    gone = row_of(config, gone_id)
    assert gone is not None
    assert gone.file is not None
    gone.file.unlink()  # by hand
    store = RecordingStore(config.router.state_dir)
    try:
        apply_retention(store, config.recordings)
        assert [r.state for r in store.for_call(gone_id)] == ["missing"]
        assert [r.state for r in store.for_call(kept_id)] == ["delivered"]
        assert [r.state for r in store.for_call(empty_id)] == ["empty"]
        said = [r.getMessage() for r in caplog.records if "now missing" in r.getMessage()]
        assert len(said) == 1, said
        # after_delivery = "delete": the delivered file goes; the empty one too, its
        # row staying empty.
        deleting = dataclasses.replace(config.recordings, after_delivery="delete")
        report = apply_retention(store, deleting)
        assert sorted(report.deleted) == sorted([f"{kept_id}-mix.wav", f"{empty_id}-mix.wav"]), (
            report
        )
        states = {
            c: [(r.state, r.file is None) for r in store.for_call(c)]
            for c in (empty_id, kept_id, gone_id)
        }
        assert states == {
            empty_id: [("empty", True)],
            kept_id: [("removed", False)],
            gone_id: [("missing", False)],
        }, states
        print(store.usage())
    finally:
        store.close()


async def test_trial_pull_mode_what_the_api_and_1c_get_while_recording_and_after(
    phones: Phones, double: OneCDouble, tmp_path: Path, tone: Path
) -> None:
    """A call still being recorded: the API lists it ``recording`` with no link and
    serves no file; 1C gets nothing of it but the hang-up's link, which serves the
    file once closed. A missed call: its link serves 1C nothing (empty)."""
    import httpx

    from router.api.auth import hash_token
    from router.config import load_config
    from router.sandbox import listen_port

    state = tmp_path / "state"
    make_config(phones, double, state)
    port = listen_port()
    toml = state.parent / "router.toml"
    text = toml.read_text(encoding="utf-8").replace(
        "close_timeout = 20\n",
        f'close_timeout = 20\nmode = "pull"\npublic_url = "http://127.0.0.1:{port}"\n',
    )
    toml.write_text(
        text
        + f'[api]\nlisten = "127.0.0.1:{port}"\n'
        + f'[api.tokens.t101]\nhash = "{hash_token("secret-101")}"\n'
        + 'allow = ["recordings:read"]\nextensions = ["101"]\n',
        encoding="utf-8",
    )
    config = load_config(toml)
    engine, task = await start_engine(config, ready_timeout=20)
    auth = {"Authorization": "Bearer secret-101"}
    seen: dict[str, object] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            call = await answered(phones, tone, 1.5)
            (live,) = list(engine.tracker)
            talking = live.linkedid
            listing = await http.get(f"/api/v1/recordings/{talking}", headers=auth)
            download = await http.get(f"/api/v1/recordings/{talking}/mix", headers=auth)
            seen["while recording"] = (
                listing.status_code,
                [(f["state"], f["url"]) for f in listing.json()["files"]],
                download.status_code,
                download.text[:200],
                [r.path for r in double.log if "/recordings/" in r.path],
            )
            await hang_up(call)
            await settled(config, talking, waiting=())

            def hangup_url() -> str | None:
                for event in double.story(talking):
                    if event.get("event") == "hangup":
                        return str(event.get("recording_url") or "") or None
                return None

            url = await until(hangup_url, 20, "the hang-up at 1C")
            assert isinstance(url, str)
            fetched = await http.get(url.removeprefix(f"http://127.0.0.1:{port}"))
            seen["hangup link"] = (fetched.status_code, len(fetched.content))
            # Served whole through the signed link, the file is 1C's (``delivered``):
            # the recording's own message may or may not have gone before.
            await settled(config, talking)
            seen["after the fetch"] = [
                r.method for r in double.requests(f"/calls/{talking}/recordings/mix")
            ]
            phones.reset()
            missed_id = await missed_call(phones, ring=1.0)
            del missed_id
            missed = call_ids(engine.records)[-1]
            empty = await settled(config, missed, waiting=())

            def missed_url() -> str | None:
                for event in double.story(missed):
                    if event.get("event") == "missed":
                        return str(event.get("recording_url") or "-")
                return None

            link = await until(missed_url, 20, "the missed call at 1C")
            assert isinstance(link, str)
            got = (
                await http.get(link.removeprefix(f"http://127.0.0.1:{port}"))
                if link != "-"
                else None
            )
            await asyncio.sleep(2)  # the uploader's polls: nothing is sent for it
            seen["missed"] = (
                empty.state,
                link != "-",
                None if got is None else (got.status_code, got.text[:300]),
                [r.method for r in double.requests(f"/calls/{missed}/recordings/mix")],
            )
    finally:
        await stop_engine(engine, task)
    print(seen)
    status, files, served, _, uploads = seen["while recording"]  # type: ignore[misc]
    assert (status, files, uploads) == (200, [("recording", None)], []), seen
    assert served in (404, 409), seen
    assert seen["hangup link"][0] == 200, seen  # type: ignore[index]
    state, _, answer, asked = seen["missed"]  # type: ignore[misc]
    assert state == "empty", seen
    assert answer is None or answer == (404, answer[1]), seen
    assert answer is None or "has no sound (empty): not sent to 1C" in answer[1], seen
    assert asked == [], seen


@pytest.mark.parametrize("fmt", ["gsm", "ulaw"])
async def test_trial_a_missed_call_recorded_headerless_is_empty(
    phones: Phones, double: OneCDouble, tmp_path: Path, fmt: str
) -> None:
    """Measured: MixMonitor writes a missed call's GSM or ulaw file as 0 bytes; it was
    ``failed`` after close_timeout, with a WARNING per missed call."""
    config = make_config(
        phones, double, tmp_path / "state", legs=f"mix, format: {fmt}", close_timeout=3
    )
    engine, task = await start_engine(config, ready_timeout=20)
    try:
        await missed_call(phones, ring=1.0)
        (call_id,) = call_ids(engine.records)
        row = await settled(config, call_id)
        await asyncio.sleep(2)  # the uploader's polls: nothing is sent for it
    finally:
        await stop_engine(engine, task)
    assert (row.state, row.size) == ("empty", 0), row
    assert not double.requests(f"/calls/{call_id}/recordings/mix"), double.log
