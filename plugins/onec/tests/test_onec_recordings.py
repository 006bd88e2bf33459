"""Recordings into 1C against the real double: chunked, resumed at 1C's offset after an
outage and after a restart, stored exactly once, confirmed back to callrouter's catalog."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from lifeevents import answered, hangup

from callrouter_onec.client import OneCSettings
from callrouter_onec.double import DEFAULT_USER, OneCDouble
from callrouter_onec.plugin import OneCPlugin
from callrouter_onec.recordings import (
    FILENAME,
    OneCRecordings,
    RecordingUploader,
    TransferStatus,
    Upload,
    UploadQueue,
    _HashMismatch,
    _Refused,
    _Resume,
    close_uploads,
)
from router import Recording, RecordingSettings, RecordingStore, recording_signer
from router.testing import StubEngine, config_from_toml

CALL = "1714557600.42"
AUDIO = os.urandom(300_000)
CHUNK = 64 * 1024


def closed_recording(
    tmp_path: Path, data: bytes = AUDIO, call_id: str = CALL, folder: Path | None = None
) -> RecordingStore:
    """A catalog in ``tmp_path / "state"`` with one closed file, in ``folder`` (or ``tmp_path``)."""
    store = RecordingStore(tmp_path / "state")
    path = (folder or tmp_path) / f"{call_id}-mix.wav"
    path.write_bytes(data)
    name = SimpleNamespace(call_id=call_id, part="mix", format="wav")
    (row,) = store.start([name], pbx_paths=["/x"], local_paths=[path], channel="PJSIP/t-1")
    store.mark_closed(
        row.id,
        file=path,
        content_type="audio/wav",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        duration=12.5,
    )
    return store


def uploader(
    tmp_path: Path, store: RecordingStore, settings: OneCSettings, mode: str = "push"
) -> RecordingUploader:
    return RecordingUploader(
        store,
        UploadQueue(tmp_path / "state" / FILENAME),
        OneCRecordings(settings, chunk_timeout=5),
        RecordingSettings(dir="/x", local_dir=tmp_path, mode=mode, public_url="https://cr.test"),
        link=lambda call_id, part: (f"https://cr.test/api/v1/recordings/{call_id}/{part}", 9e9),
        chunk=CHUNK,
        retry_min=0.0,
        retry_max=0.0,
    )


def delivered(store: RecordingStore) -> Recording:
    row = store.get(CALL, "mix")
    assert row is not None
    return row


async def test_a_recording_goes_up_in_chunks_and_is_confirmed(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    try:
        assert await up.step() == 1
    finally:
        await close_uploads(up)
    (stored,) = double.recordings.stored
    assert stored.data == AUDIO
    assert stored.call_id == CALL
    assert stored.event_id == f"{CALL}/recording/mix"
    assert stored.duration == 12.5
    assert double.recordings.puts == -(-len(AUDIO) // CHUNK)
    puts = double.requests("/recordings/mix", "PUT")
    assert puts[0].headers["content-range"] == f"bytes 0-{CHUNK - 1}/{len(AUDIO)}"
    assert puts[-1].headers["content-range"].endswith(f"-{len(AUDIO) - 1}/{len(AUDIO)}")
    assert delivered(RecordingStore(tmp_path / "state")).state == "delivered"
    queue = tmp_path / "state" / FILENAME
    assert stat.S_IMODE(os.stat(queue).st_mode) == 0o600


async def test_1c_failing_halfway_then_coming_back_gets_the_file_exactly_once(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """The cut keeps a byte count that is no chunk boundary: the upload must resume at
    exactly what 1C says it holds."""
    store = closed_recording(tmp_path)
    half = len(AUDIO) // 2 + 123
    double.recordings.outage(after=half, count=None)
    up = uploader(tmp_path, store, settings)
    try:
        assert await up.step() == 0
        assert await up.step() == 0  # still down: backs off, keeps the file
        assert double.recordings.received(CALL, "mix") == half
        assert delivered(store).state == "closed"
        double.recordings.recover()
        assert await up.step() == 1
        assert await up.step() == 0  # nothing left: not sent again
    finally:
        await close_uploads(up)
    (stored,) = double.recordings.stored
    assert stored.data == AUDIO
    offsets = [
        int(r.headers["content-range"].split()[1].split("-")[0])
        for r in double.requests("/recordings/mix", "PUT")
    ]
    assert half in offsets  # resumed at 1C's count, not at a chunk boundary
    assert delivered(RecordingStore(tmp_path / "state")).state == "delivered"


async def test_1c_away_is_one_warning_however_many_files_wait_and_retries_go(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A WARNING per file per retry grew with the files waiting: in the office soak a
    minute without 1C logged 58 of them for a handful of recordings, and an outage of
    hours would log more each minute than the one before (issue 16). The start of
    the outage is one WARNING, its end one INFO; each retry is at DEBUG."""
    calls = [f"1714557600.{n}" for n in range(20)]
    for call in calls:
        store = closed_recording(tmp_path, call_id=call)
    double.stop()
    up = uploader(tmp_path, store, settings)
    caplog.set_level(logging.INFO, "callrouter_onec.recordings")
    try:
        for _ in range(5):
            assert await up.step() == 0
        double.start()
        assert await up.step() == len(calls)
    finally:
        await close_uploads(up)
    records = [r for r in caplog.records if r.name == "callrouter_onec.recordings"]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "1C unreachable" in warnings[0]
    assert "said again once 1C takes one" in warnings[0]
    back = [m for r in records if "reach 1C again" in (m := r.getMessage())]
    assert len(back) == 1
    assert "(100 attempts failed meanwhile)" in back[0]
    assert len(double.recordings.stored) == len(calls)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("password", "1C answered 401"),
        ("publication", "1C answered 404"),
        ("login page", "1C answered 200 with no JSON"),
    ],
)
async def test_1c_answering_every_file_off_the_contract_is_one_warning_too(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    said: str,
) -> None:
    """1C that answers every request, but not as the contract says (its password
    changed: 401; its publication gone: 404; a proxy's login page: 200 and HTML),
    logged a WARNING per file per retry as 1C away once did: the log grew with the
    recordings waiting, for as long as 1C answered so (issue 16). It is 1C away
    for every file alike: one WARNING, then DEBUG; one INFO when it takes one."""
    calls = [f"1714557600.{n}" for n in range(20)]
    for call in calls:
        store = closed_recording(tmp_path, call_id=call)
    if answer == "password":
        off = dataclasses.replace(settings, password="wrong")
    elif answer == "publication":
        off = dataclasses.replace(settings, base_url=settings.base_url + "/gone")
    else:

        def login_page(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, text="<html>Sign in</html>")

        off = settings
    up = uploader(tmp_path, store, off)
    if answer == "login page":
        up.remote = OneCRecordings(off, chunk_timeout=5, transport=httpx.MockTransport(login_page))
    caplog.set_level(logging.INFO, "callrouter_onec.recordings")
    try:
        for _ in range(5):
            assert await up.step() == 0
        await up.remote.aclose()
        up.remote = OneCRecordings(settings, chunk_timeout=5)
        assert await up.step() == len(calls)
    finally:
        await close_uploads(up)
    records = [r for r in caplog.records if r.name == "callrouter_onec.recordings"]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert said in warnings[0]
    back = [m for r in records if "reach 1C again" in (m := r.getMessage())]
    assert len(back) == 1
    assert len(double.recordings.stored) == len(calls)


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, {"received": -1, "complete": False}), (400, {"error": {"code": "invalid_parameter"}})],
)
async def test_a_file_1c_keeps_answering_wrongly_is_one_warning_not_one_per_retry(
    tmp_path: Path,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: dict[str, object],
) -> None:
    """1C answering each file's status in a way no retry of ours changes (a byte
    count that is none, a 400) logged a WARNING per file at every retry, so the log
    grew with the recordings waiting for as long as 1C answered so (issue 16). Each
    file's failure is said once at WARNING; its retries after it are DEBUG lines."""
    calls = [f"1714557600.{n}" for n in range(20)]
    for call in calls:
        store = closed_recording(tmp_path, call_id=call)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    up = uploader(tmp_path, store, settings)
    up.remote = OneCRecordings(settings, chunk_timeout=5, transport=httpx.MockTransport(answer))
    caplog.set_level(logging.DEBUG, "callrouter_onec.recordings")
    try:
        for _ in range(5):
            assert await up.step() == 0
    finally:
        await close_uploads(up)
    records = [r for r in caplog.records if r.name == "callrouter_onec.recordings"]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == len(calls), warnings
    retries = [r for r in records if r.levelno == logging.DEBUG and "not delivered" in r.msg]
    assert len(retries) == 4 * len(calls)


async def test_a_file_sent_again_on_request_says_its_next_failure_at_warning(
    tmp_path: Path, settings: OneCSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A file whose failure was said (WARNING, its retries DEBUG), then given up
    (1C refused a chunk: ERROR), is asked for again (``callrouter recordings
    retry``): its failure then was a DEBUG line only, as a retry of the episode
    the refusal ended, so the administrator who asked saw nothing go wrong."""
    store = closed_recording(tmp_path)
    phase = ["wrong count"]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            return httpx.Response(400, json={"error": {"code": "invalid_parameter"}})
        received = -1 if phase[0] == "wrong count" else 0
        return httpx.Response(200, json={"received": received, "complete": False})

    up = uploader(tmp_path, store, settings)
    up.remote = OneCRecordings(settings, chunk_timeout=5, transport=httpx.MockTransport(answer))
    caplog.set_level(logging.DEBUG, "callrouter_onec.recordings")

    def said(level: int) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "callrouter_onec.recordings" and r.levelno == level
        ]

    try:
        assert await up.step() == 0
        assert await up.step() == 0
        assert len(said(logging.WARNING)) == 1
        phase[0] = "refused"
        assert await up.step() == 0
        assert any("refused" in m for m in said(logging.ERROR))
        assert store.ask_retry([delivered(store).id]) == [delivered(store).id]
        phase[0] = "wrong count"
        caplog.clear()
        assert await up.step() == 0
    finally:
        await close_uploads(up)
    assert any("queued for 1C again" in m for m in said(logging.INFO))
    (warning,) = said(logging.WARNING)
    assert warning.startswith(f"onec: recording {CALL}/recording/mix not delivered (")


async def test_a_router_restart_mid_upload_resumes_where_1c_stopped(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    store = closed_recording(tmp_path)
    double.recordings.outage(after=3 * CHUNK, count=0)
    first = uploader(tmp_path, store, settings)
    assert await first.step() == 0
    await close_uploads(first)  # the router stops with the upload half done
    assert double.recordings.received(CALL, "mix") == 3 * CHUNK
    double.clear_log()
    second = uploader(tmp_path, RecordingStore(tmp_path / "state"), settings)
    try:
        assert await second.step() == 1
    finally:
        await close_uploads(second)
    (stored,) = double.recordings.stored
    assert stored.data == AUDIO
    first_put = double.requests("/recordings/mix", "PUT")[0]
    assert first_put.headers["content-range"].startswith(f"bytes {3 * CHUNK}-")


async def test_sending_a_stored_file_again_stores_nothing_new(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    try:
        await up.step()
    finally:
        await close_uploads(up)
    remote = OneCRecordings(settings)
    try:
        again = Upload(
            CALL,
            "mix",
            hashlib.sha256(AUDIO).hexdigest(),
            tmp_path / "x",
            len(AUDIO),
            "audio/wav",
            None,
        )
        status = await remote.put(again, 0, AUDIO)
    finally:
        await remote.aclose()
    assert status.complete
    assert len(double.recordings.stored) == 1
    assert double.recordings.stored[0].data == AUDIO


async def test_a_chunk_at_the_wrong_offset_is_told_where_to_go_on(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    remote = OneCRecordings(settings)
    sha = hashlib.sha256(AUDIO).hexdigest()
    upload = Upload(CALL, "mix", sha, tmp_path / "x", len(AUDIO), "audio/wav", None)
    try:
        assert (await remote.put(upload, 0, AUDIO[:1000])).received == 1000
        with pytest.raises(_Resume) as caught:
            await remote.put(upload, 5000, AUDIO[5000:6000])
        assert caught.value.received == 1000
        assert (await remote.status(upload)).received == 1000
    finally:
        await remote.aclose()


async def test_pull_mode_hands_1c_a_link_and_uploads_nothing(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings, mode="pull")
    try:
        with caplog.at_level(logging.INFO, logger="callrouter_onec.recordings"):
            assert await up.step() == 1
    finally:
        await close_uploads(up)
    # The log said "delivered to 1C" for a link: 1C has yet to fetch the file (issue 16).
    (line,) = [m for r in caplog.records if "1C has its link" in (m := r.getMessage())]
    assert f"{CALL}/recording/mix: 1C has its link ({len(AUDIO)} bytes to fetch before " in line
    assert "delivered" not in line
    assert double.recordings.stored == []
    (link,) = double.recordings.links
    assert link["recording_url"] == f"https://cr.test/api/v1/recordings/{CALL}/mix"
    assert link["event_id"] == f"{CALL}/recording/mix"
    # Pull: callrouter's catalog is confirmed when 1C fetches the file, not now.
    assert delivered(RecordingStore(tmp_path / "state")).state == "closed"


async def test_a_vanished_file_is_failed_not_retried_for_ever(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    store = closed_recording(tmp_path)
    (tmp_path / f"{CALL}-mix.wav").unlink()
    up = uploader(tmp_path, store, settings)
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)


async def test_a_vanished_file_is_missing_in_the_catalog_with_one_warning(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: the catalog kept a file deleted by hand ``closed``, as if it were
    still there (its bytes counted on disk, the API listing a link to nothing)."""
    store = closed_recording(tmp_path)
    (tmp_path / f"{CALL}-mix.wav").unlink()
    up = uploader(tmp_path, store, settings)
    caplog.set_level("WARNING")
    try:
        assert await up.step() == 0
        assert await up.step() == 0
    finally:
        await close_uploads(up)
    row = delivered(RecordingStore(tmp_path / "state"))
    assert row.state == "missing"
    assert row.note == (
        f"the file {tmp_path / f'{CALL}-mix.wav'} is gone (found by the 1C upload); it was closed"
    )
    said = [r for r in caplog.records if "now missing" in r.getMessage()]
    assert len(said) == 1
    assert double.recordings.stored == []


async def test_a_file_of_a_folder_left_empty_is_not_marked_missing(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """hreview48b: an NFS share not mounted leaves its mount point, the recordings'
    folder, there and empty; the upload marked the file ``missing`` for good, though
    it comes back with the share. Callrouter's retention decides about those."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    store = closed_recording(tmp_path, folder=mount)
    path = mount / f"{CALL}-mix.wav"
    path.unlink()
    up = uploader(tmp_path, store, settings)
    caplog.set_level("WARNING")
    try:
        assert await up.step() == 0
    finally:
        await close_uploads(up)
    assert delivered(RecordingStore(tmp_path / "state")).state == "closed"
    assert "now missing" not in caplog.text


async def test_an_upload_queued_before_its_file_was_found_empty_is_not_sent(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """Issue 16: a 1C developer wants no recording of no sound. A file an older
    callrouter queued (closed, 0 s) and the catalog now calls ``empty`` (at the
    upgrade's start) is not sent, and stays ``empty``."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    try:
        fresh = store.closed()
        assert up.queue.add(fresh[0])  # queued by the older callrouter
        store._db.execute(
            "UPDATE recordings SET state = 'empty', note = 'no sound (0 s): not sent'"
        )
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)
    assert double.recordings.stored == []
    assert double.requests("/recordings/mix", "PUT") == []
    row = delivered(RecordingStore(tmp_path / "state"))
    assert (row.state, row.upload_error) == ("empty", "")


async def test_bytes_appended_after_the_file_was_catalogued_are_not_sent(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """Before: the last chunk read a whole chunk from its offset, past the catalogued
    size when something wrote on at the recording's name after it was hashed, so its
    Content-Range ended past SIZE; 1C refused it (400) and the upload failed for good,
    the recording never reaching 1C."""
    store = closed_recording(tmp_path)
    with (tmp_path / f"{CALL}-mix.wav").open("ab") as fh:
        fh.write(b"\0" * 1000)
    up = uploader(tmp_path, store, settings)
    try:
        assert await up.step() == 1
    finally:
        await close_uploads(up)
    (stored,) = double.recordings.stored
    assert stored.data == AUDIO
    last = double.requests("/recordings/mix", "PUT")[-1]
    assert last.headers["content-range"].endswith(f"-{len(AUDIO) - 1}/{len(AUDIO)}")


async def test_a_file_changed_since_it_was_catalogued_is_not_uploaded_again_and_again(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: other bytes at the recording's name (the same size) made 1C answer 422
    on the last chunk; the upload started over from byte 0, 8 more times an attempt,
    and again every minute for as long as the file existed (a 100 MB recording: 900 MB
    a minute to 1C, for ever). Now the plugin hashes the file when 1C says the hash
    does not match: another file is failed in the queue, after one pass."""
    store = closed_recording(tmp_path)
    (tmp_path / f"{CALL}-mix.wav").write_bytes(os.urandom(len(AUDIO)))
    up = uploader(tmp_path, store, settings)
    try:
        assert await up.step() == 0
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)
    assert double.recordings.puts == -(-len(AUDIO) // CHUNK)
    assert double.recordings.stored == []
    assert "no longer holds the bytes catalogued" in caplog.text
    assert delivered(RecordingStore(tmp_path / "state")).state == "closed"


class _GarblingOneC(OneCRecordings):
    """A 1C (or a proxy before it) whose hash of the whole file never matches."""

    def __init__(self, settings: OneCSettings) -> None:
        super().__init__(settings, chunk_timeout=5)
        self.puts = 0

    async def status(self, upload: Upload) -> TransferStatus:
        return TransferStatus(0, False)

    async def put(self, upload: Upload, start: int, data: bytes) -> TransferStatus:
        self.puts += 1
        if start + len(data) < upload.size:
            return TransferStatus(start + len(data), False)
        raise _HashMismatch


async def test_a_file_1c_keeps_hashing_wrong_is_sent_twice_an_attempt_then_later(
    tmp_path: Path, settings: OneCSettings
) -> None:
    """The file on disk is the catalogued one: the bytes were garbled on the way, so
    they go once more, then the attempt fails and is retried with backoff."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    garbling = _GarblingOneC(settings)
    await up.remote.aclose()
    up.remote = garbling
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"pending": 1}
        (row,) = up.queue._db.execute("SELECT attempts, last_error FROM uploads").fetchall()
    finally:
        await close_uploads(up)
    assert garbling.puts == 2 * -(-len(AUDIO) // CHUNK)
    assert row == (1, "1C's SHA-256 of the file did not match twice; trying again later")


# -- pull mode: the link rides on the call's history -----------------------------------


async def test_pull_mode_puts_a_signed_link_on_the_calls_hangup(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """The contract's ``recording_url`` of the hangup: a link the API will serve."""
    closed_recording(tmp_path).close()
    config = config_from_toml(
        tmp_path,
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\nsecret = "x"\n'
        f'[router]\nstate_dir = "state"\n[plugins.onec]\nurl = "{double.url}"\n'
        f'username = "{DEFAULT_USER}"\npassword = "{settings.password}"\nping_interval = 0\n'
        "events_retry_min = 0.05\nevents_retry_max = 0.2\n"
        '[recordings]\ndir = "/x"\nmode = "pull"\npublic_url = "https://cr.test:8089"\n',
    )
    onec = OneCPlugin()
    onec.callrouter_configure(config, config.plugins.for_plugin("onec"))
    engine = StubEngine(tmp_path / "state", config=config)
    await onec.callrouter_startup(engine)  # type: ignore[arg-type]
    try:
        onec.callrouter_call_event(answered(CALL, "101"))
        onec.callrouter_call_event(hangup(CALL, "101"))
        # The plugin asks 1C for the caller's ids first (its own bounded lookup).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(r.payload["event"] == "hangup" for r in double.event_book.receipts):
                break
            await asyncio.sleep(0.05)
    finally:
        await onec.callrouter_shutdown(engine)  # type: ignore[arg-type]
    final = [r.payload for r in double.event_book.receipts if r.payload["event"] == "hangup"]
    (payload,) = final
    url = payload["recording_url"]
    assert url.startswith(f"https://cr.test:8089/api/v1/recordings/{CALL}/mix?expires=")
    query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
    assert config.recordings is not None
    signer = recording_signer(config.recordings, tmp_path / "state")
    assert signer.verify(CALL, "mix", query["expires"], query["sig"])


async def test_only_pull_mode_links_and_only_to_recorded_calls(
    tmp_path: Path, settings: OneCSettings
) -> None:
    store = closed_recording(tmp_path)
    pull, push = uploader(tmp_path, store, settings, "pull"), uploader(tmp_path, store, settings)
    try:
        assert pull.link_for(CALL) == f"https://cr.test/api/v1/recordings/{CALL}/mix"
        assert pull.link_for("1714557600.99") is None  # not recorded
        assert pull.link_for("../../etc/passwd") is None  # cannot name a recording
        assert push.link_for(CALL) is None  # push: 1C gets the file itself
    finally:
        await close_uploads(pull)
        await close_uploads(push)


@pytest.mark.parametrize("state", ["empty", "missing", "removed", "failed"])
async def test_pull_modes_hangup_links_no_file_that_will_never_be_served(
    tmp_path: Path, settings: OneCSettings, state: str
) -> None:
    """Issue 16: the hang-up's ``recording_url`` named an empty call's file (which 1C
    does not want) and a file gone or removed (whose link answers 404)."""
    store = closed_recording(tmp_path)
    store._db.execute("UPDATE recordings SET state = ?", (state,))
    pull = uploader(tmp_path, store, settings, "pull")
    try:
        assert pull.link_for(CALL) is None
    finally:
        await close_uploads(pull)


def test_the_doubles_control_endpoints_cut_uploads_and_list_what_is_stored(
    double: OneCDouble, settings: OneCSettings
) -> None:
    """What docs/onec.md shows: POST/DELETE /_double/recordings/outage, GET /_double/recordings."""
    sha = hashlib.sha256(AUDIO).hexdigest()
    auth = (settings.username.encode(), settings.password.encode())
    put = {
        "Content-Range": f"bytes 0-{len(AUDIO) - 1}/{len(AUDIO)}",
        "X-Recording-Sha256": sha,
        "X-Recording-Content-Type": "audio/wav",
    }
    with httpx.Client(base_url=double.root_url, auth=auth) as http:
        assert http.post("/_double/recordings/outage", json={"after": 1000}).status_code == 200
        with pytest.raises(httpx.TransportError):
            http.put(
                f"{settings.base_url}/v1/calls/{CALL}/recordings/mix", content=AUDIO, headers=put
            )
        listed = http.get("/_double/recordings").json()
        assert listed["partial"] == [
            {"call_id": CALL, "part": "mix", "received": 1000, "size": len(AUDIO)}
        ]
        assert http.delete("/_double/recordings/outage").status_code == 200
        rest = {**put, "Content-Range": f"bytes 1000-{len(AUDIO) - 1}/{len(AUDIO)}"}
        done = http.put(
            f"{settings.base_url}/v1/calls/{CALL}/recordings/mix",
            content=AUDIO[1000:],
            headers=rest,
        )
        assert done.json()["complete"] is True
        (stored,) = http.get("/_double/recordings").json()["stored"]
    assert stored["sha256"] == sha
    assert stored["size"] == len(AUDIO)
    assert double.recordings.stored[0].data == AUDIO


class _StuckOneC(OneCRecordings):
    """A 1C (or whatever answers at its address) that says 200 to every chunk and
    never counts a byte of it."""

    def __init__(self, settings: OneCSettings) -> None:
        super().__init__(settings)
        self.puts = 0

    async def status(self, upload: Upload) -> TransferStatus:
        return TransferStatus(0, False)

    async def put(self, upload: Upload, start: int, data: bytes) -> TransferStatus:
        self.puts += 1
        await asyncio.sleep(0)
        return TransferStatus(0, False)


async def test_a_1c_that_takes_no_bytes_is_retried_later_not_sent_the_chunk_for_ever(
    tmp_path: Path, settings: OneCSettings
) -> None:
    """Before: a 200 whose ``received`` did not move sent the same chunk again at once,
    for ever, and the upload loop (every other recording with it) never came back."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    stuck = _StuckOneC(settings)
    await up.remote.aclose()
    up.remote = stuck
    try:
        async with asyncio.timeout(5):
            assert await up.step() == 0
    finally:
        await close_uploads(up)
    assert stuck.puts == 1
    queue = UploadQueue(tmp_path / "state" / FILENAME)
    try:
        assert queue.counts() == {"pending": 1}
        assert queue.due(now=time.time() + 3600)[0].attempts == 1
    finally:
        queue.close()
    assert delivered(RecordingStore(tmp_path / "state")).state == "closed"


class _TakingOneC(OneCRecordings):
    """A 1C that holds every file already (its status says complete)."""

    async def status(self, upload: Upload) -> TransferStatus:
        return TransferStatus(upload.size, True)


async def test_recordings_past_the_first_500_undelivered_are_still_uploaded(
    tmp_path: Path, settings: OneCSettings
) -> None:
    """Before: each step read the catalog's first 500 closed files only. Files 1C refused
    (failed in the queue) or, in pull mode, links 1C never opened stay closed for good,
    so once 500 of them piled up no newer recording was ever queued again."""
    store = closed_recording(tmp_path)
    queue = UploadQueue(tmp_path / "state" / FILENAME)
    for n in range(500):
        call = f"1714557000.{n}"
        path = tmp_path / f"{call}-mix.wav"
        path.write_bytes(b"x")
        name = SimpleNamespace(call_id=call, part="mix", format="wav")
        (row,) = store.start([name], pbx_paths=["/x"], local_paths=[path], channel="PJSIP/t-1")
        store.mark_closed(
            row.id, file=path, content_type="audio/wav", size=1, sha256="0" * 64, duration=None
        )
    # The first 500 closed files (the oldest, CALL's among them) were refused by 1C.
    for rec in store.closed(0, 500):
        queue.add(rec)
        (upload,) = [u for u in queue.due(limit=1000) if u.call_id == rec.call_id]
        queue.fail(upload, "1C refused it")
    queue.close()
    newest = store.closed(0, 1000)[-1]
    up = uploader(tmp_path, store, settings)
    await up.remote.aclose()
    up.remote = _TakingOneC(settings)
    try:
        delivered_now = [await up.step() for _ in range(3)]
    finally:
        await close_uploads(up)
    assert sum(delivered_now) == 1
    row = RecordingStore(tmp_path / "state").get(newest.call_id, "mix")
    assert row is not None
    assert row.state == "delivered"


async def test_a_link_put_in_place_of_a_recording_is_not_uploaded(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """Before: the uploader followed a symbolic link at a catalogued name and sent 1C
    whatever it named (here a stand-in for callrouter's secrets)."""
    store = closed_recording(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(AUDIO)
    (tmp_path / f"{CALL}-mix.wav").unlink()
    (tmp_path / f"{CALL}-mix.wav").symlink_to(secret)
    up = uploader(tmp_path, store, settings)
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)
    assert double.recordings.puts == 0
    assert double.recordings.stored == []


class _Endless(httpx.AsyncByteStream):
    """An answer body that goes on (up to ``total`` bytes), slowly or not."""

    def __init__(self, total: int, pause: float = 0.0, piece: int = 64 * 1024) -> None:
        self.total = total
        self.pause = pause
        self.piece = piece
        self.given = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.given < self.total:
            if self.pause:
                await asyncio.sleep(self.pause)
            piece = b" " * min(self.piece, self.total - self.given)
            self.given += len(piece)
            yield piece


def _one_c_answering(stream: _Endless, seen: list[httpx.Request]) -> OneCRecordings:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=stream)

    settings = OneCSettings("http://1c.test/hs/telephony", "router", "secret")
    return OneCRecordings(settings, chunk_timeout=1.0, transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_1c_that_redirects_the_upload_elsewhere_is_not_followed(
    tmp_path: Path, settings: OneCSettings, status: int
) -> None:
    """recordings.md: a redirect is never followed (the bytes and the password would
    go to the host it names); it is a failure, retried with backoff."""
    store = closed_recording(tmp_path)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers={"Location": "http://evil.test/upload"})

    up = uploader(tmp_path, store, settings)
    await up.remote.aclose()
    up.remote = OneCRecordings(
        OneCSettings("http://1c.test/hs/telephony", "router", "secret"),
        chunk_timeout=1.0,
        transport=httpx.MockTransport(answer),
    )
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"pending": 1}
        (error,) = up.queue._db.execute("SELECT last_error FROM uploads").fetchone()
    finally:
        await close_uploads(up)
    assert [r.url.host for r in seen] == ["1c.test"]
    assert error == f"1C answered {status} to the status of /v1/calls/{CALL}/recordings/mix"


@pytest.mark.parametrize("error", ["busy", ["offset_mismatch"], 7, True])
async def test_a_409_whose_error_is_no_object_is_a_refusal_not_a_failed_loop(
    tmp_path: Path, settings: OneCSettings, error: object
) -> None:
    """Issue 16: a 409 answer to a chunk whose ``error`` was not an object
    (``{"error": "busy"}``, a list, a number) raised AttributeError out of the
    upload, which neither counted the attempt nor put it off: every step died
    on the same file (a traceback each second) and no recording queued behind
    it reached 1C. 1C's answers are untrusted; it is a refusal, as a 409 with
    any other code is."""
    store = closed_recording(tmp_path)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"received": 0, "complete": False})
        return httpx.Response(409, json={"error": error})

    up = uploader(tmp_path, store, settings)
    await up.remote.aclose()
    up.remote = OneCRecordings(
        OneCSettings("http://1c.test/hs/telephony", "router", "secret"),
        chunk_timeout=1.0,
        transport=httpx.MockTransport(answer),
    )
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
        (last,) = up.queue._db.execute("SELECT last_error FROM uploads").fetchone()
    finally:
        await close_uploads(up)
    assert last.startswith(f"1C refused /v1/calls/{CALL}/recordings/mix: ")


async def test_an_endless_answer_from_1c_is_read_only_up_to_max_body(tmp_path: Path) -> None:
    """Before: the status answer was read whole into memory (here 64 MiB of it; a
    hostile 1C or a proxy could send any amount), and a compressed one was inflated
    first."""
    stream = _Endless(64 << 20)
    seen: list[httpx.Request] = []
    remote = _one_c_answering(stream, seen)
    upload = Upload(CALL, "mix", "0" * 64, tmp_path / "x", 10, "audio/wav", None)
    try:
        with pytest.raises(OSError, match="over max_body"):
            await remote.status(upload)
    finally:
        await remote.aclose()
    assert stream.given <= (1 << 20) + 64 * 1024
    assert seen[0].headers["accept-encoding"] == "identity"


async def test_an_answer_from_1c_that_drips_is_cut_at_the_chunk_timeout(tmp_path: Path) -> None:
    """Before: httpx's timeout is per read, so a byte every so often kept the upload
    (and every recording behind it) waiting for ever."""
    stream = _Endless(10 << 20, pause=0.05, piece=16)
    remote = _one_c_answering(stream, [])
    upload = Upload(CALL, "mix", "0" * 64, tmp_path / "x", 10, "audio/wav", None)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(OSError, match="within 1 s"):
                await remote.status(upload)
    finally:
        await remote.aclose()


async def test_1c_holding_another_file_of_the_same_size_is_not_taken_as_delivery(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """1C's status names the hash of the file it holds for a call and part. Before, only
    its size was compared: a different file of the same length (two PBXs with one 1C
    and the same Linkedid, WAVs of the same duration) was confirmed as delivered, and
    retention could delete the only copy of this one."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    up = uploader(first, closed_recording(first), settings)
    try:
        assert await up.step() == 1
    finally:
        await close_uploads(up)
    other = os.urandom(len(AUDIO))
    store = closed_recording(second, data=other)
    up = uploader(second, store, settings)
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)
    row = RecordingStore(second / "state").get(CALL, "mix")
    assert row is not None
    assert row.state == "closed"
    (stored,) = double.recordings.stored
    assert stored.data == AUDIO


class _Hostile:
    """A loopback "1C" that answers every request with one canned, hostile answer."""

    def __init__(self, head: bytes, body: bytes = b"", *, trickle: float | None = None) -> None:
        self.head, self.body, self.trickle = head, body, trickle
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/demo/hs/telephony"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.head + self.body)
            await writer.drain()
            while self.trickle is not None:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(self.trickle)
        writer.close()


def _upload(tmp_path: Path) -> Upload:
    return Upload(CALL, "mix", "0" * 64, tmp_path / "x", 1000, "audio/wav", None)


async def test_a_compressed_answer_is_not_inflated_past_max_body(tmp_path: Path) -> None:
    """A gzip bomb from 1C (or a proxy) to a status request: 6 KiB on the wire, 6 MiB
    inflated. The recordings client read and inflated it all (httpx asks for gzip and
    decodes it) and took the JSON inside; now it asks for identity and reads the bytes
    as sent, which are not JSON."""
    inflated = b'{"received": 0, "pad": "' + b"A" * (6 << 20) + b'"}'
    bomb = gzip.compress(inflated)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: " + str(len(bomb)).encode() + b"\r\n\r\n"
    )
    async with _Hostile(head, bomb) as url:
        remote = OneCRecordings(OneCSettings(url, "u", "p", max_body=65536))
        try:
            with pytest.raises(OSError, match="no JSON"):
                await remote.status(_upload(tmp_path))
        finally:
            await remote.aclose()


async def test_an_endless_answer_stops_at_max_body(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    async with _Hostile(head, b'{"received": 0, "pad": "' + b"A" * (1 << 20)) as url:
        remote = OneCRecordings(OneCSettings(url, "u", "p", max_body=4096))
        try:
            with pytest.raises(OSError, match="max_body"):
                await remote.status(_upload(tmp_path))
        finally:
            await remote.aclose()


async def test_a_trickling_answer_is_cut_at_the_chunk_timeout(tmp_path: Path) -> None:
    """One byte every 0.1 s never trips a per-read timeout; the whole answer is bounded."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    async with _Hostile(head, b"{", trickle=0.1) as url:
        remote = OneCRecordings(OneCSettings(url, "u", "p"), chunk_timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(OSError, match=r"within 0\.5 s"):
                # The test's own bound: without the fix this read goes on for 10,000 s.
                await asyncio.wait_for(remote.status(_upload(tmp_path)), 30)
        finally:
            await remote.aclose()
        # The 0.5 s chunk_timeout, never before it; late by seconds on a loaded
        # machine at worst, and far from the 10,000 s of the trickle (3 s
        # measured the host; issue 16).
        assert 0.5 <= time.monotonic() - started < 20


def _done_rows(tmp_path: Path) -> int:
    return UploadQueue(tmp_path / "state" / FILENAME).counts().get("done", 0)


async def test_a_delivered_uploads_row_is_forgotten_after_30_days_a_batch_a_pass(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every file 1C got left its row in onec-recordings.sqlite for ever."""
    from callrouter_onec import recordings

    store = closed_recording(tmp_path)
    for n in range(4):
        other = closed_recording(tmp_path / f"more{n}", call_id=f"1714557600.{50 + n}")
        for row in other.on_disk():
            assert row.file is not None
            name = SimpleNamespace(call_id=row.call_id, part="mix", format="wav")
            (new,) = store.start([name], pbx_paths=["/x"], local_paths=[row.file], channel="c")
            store.mark_closed(
                new.id,
                file=row.file,
                content_type="audio/wav",
                size=row.size or 0,
                sha256=row.sha256 or "",
                duration=1.0,
            )
        other.close()
    up = uploader(tmp_path, store, settings)
    left = []
    try:
        assert await up.step() == 5
        assert _done_rows(tmp_path) == 5
        up.prune(now=time.time() + 29 * 86400)
        assert _done_rows(tmp_path) == 5  # kept 30 days
        monkeypatch.setattr(recordings, "PRUNE_BATCH", 2)
        for _ in range(4):
            up.prune(now=time.time() + 31 * 86400)
            left.append(_done_rows(tmp_path))
        assert await up.step() == 0  # delivered files are not queued again
    finally:
        await close_uploads(up)
    assert left == [3, 1, 0, 0]
    assert len(double.recordings.stored) == 5


async def test_a_failed_uploads_row_is_forgotten_30_days_after_it_failed(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """Before: only done rows were forgotten: every upload that failed (its file
    deleted over hard_cap_bytes during a long 1C outage, refused by 1C) kept its row
    in onec-recordings.sqlite for ever. One whose file the catalog still offers
    stays, else the next step would queue it again."""
    gone = closed_recording(tmp_path / "gone")
    (tmp_path / "gone" / f"{CALL}-mix.wav").unlink()
    refused = closed_recording(tmp_path / "refused", call_id="1714557600.43")
    (tmp_path / "refused" / "1714557600.43-mix.wav").unlink()
    (tmp_path / "refused" / "1714557600.43-mix.wav").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_bytes(AUDIO)
    for row in refused.on_disk():
        assert row.file is not None
        name = SimpleNamespace(call_id=row.call_id, part="mix", format="wav")
        (new,) = gone.start([name], pbx_paths=["/x"], local_paths=[row.file], channel="c")
        gone.mark_closed(
            new.id,
            file=row.file,
            content_type="audio/wav",
            size=row.size or 0,
            sha256=row.sha256 or "",
            duration=1.0,
        )
    refused.close()
    up = uploader(tmp_path, gone, settings)
    try:
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 2}
        (vanished,) = gone.for_call(CALL)  # missing now: the upload found it gone
        gone.mark_removed(vanished.id, "deleted over hard_cap_bytes")
        up.prune(now=time.time() + 29 * 86400)
        assert up.queue.counts() == {"failed": 2}  # kept 30 days
        up.prune(now=time.time() + 31 * 86400)
        # The refused file is still closed in the catalog: its row stays.
        assert up.queue.counts() == {"failed": 1}
        assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)
    assert double.recordings.puts == 0


async def test_pull_modes_done_row_stays_while_the_catalog_still_offers_the_file(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """Pull mode leaves the catalog's row closed: the queue's done row is what keeps
    the next step from sending 1C the link again, so it is not forgotten."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings, mode="pull")
    try:
        assert await up.step() == 1
        up.prune(now=time.time() + 365 * 86400)
        assert _done_rows(tmp_path) == 1
        assert await up.step() == 0
    finally:
        await close_uploads(up)
    assert len(double.recordings.links) == 1


class _RefusingOneC(OneCRecordings):
    """The double behind a 1C module that refuses every chunk (400) until fixed."""

    broken = True
    refusals = 0

    async def put(self, upload: Upload, start: int, data: bytes) -> TransferStatus:
        if self.broken:
            self.refusals += 1
            raise _Refused(f'1C refused {upload.path}: 400 {{"error": "bad module"}}')
        return await super().put(upload, start, data)


async def test_a_refused_upload_is_listed_in_the_catalog_and_sent_again_only_when_asked(
    tmp_path: Path, double: OneCDouble, settings: OneCSettings
) -> None:
    """Before: an upload 1C refused (400, already_stored) was failed in the plugin's
    queue alone: the catalog said only `closed` (recordings status: "not confirmed"),
    and once 1C's module was fixed nothing but SQLite surgery sent it again."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    await up.remote.aclose()
    remote = _RefusingOneC(settings, chunk_timeout=5)
    up.remote = remote
    try:
        assert await up.step() == 0
        row = delivered(store)
        assert row.state == "closed"
        assert row.upload_error.startswith("1C refused /v1/calls/")
        assert row.upload_failed_at is not None
        assert store.usage().upload_failed == 1
        assert store.usage().upload_failed_bytes == len(AUDIO)
        remote.broken = False  # 1C's module fixed: still not sent unless asked
        assert [await up.step() for _ in range(2)] == [0, 0]
        remote.broken = True
        # Asked while 1C still refuses: sent once more, then left failed again.
        assert store.ask_retry([row.id]) == [row.id]
        assert delivered(store).upload_error == ""
        assert [await up.step() for _ in range(3)] == [0, 0, 0]
        assert remote.refusals == 2
        assert delivered(store).upload_error.startswith("1C refused")
        remote.broken = False
        assert store.ask_retry([row.id]) == [row.id]
        assert await up.step() == 1
    finally:
        await close_uploads(up)
    (stored,) = double.recordings.stored
    assert stored.data == AUDIO
    assert delivered(RecordingStore(tmp_path / "state")).state == "delivered"


class _BrokenOneC(OneCRecordings):
    """An upload raising what no branch foresaw (a bug, an unforeseen 1C answer)."""

    async def status(self, upload: Upload) -> TransferStatus:
        return TransferStatus(0, False)

    async def put(self, upload: Upload, start: int, data: bytes) -> TransferStatus:
        raise KeyError("received")


async def test_an_unforeseen_error_in_one_upload_is_a_failed_attempt_logged_once(
    tmp_path: Path, settings: OneCSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: ``deliver`` caught only refusals and OSError; anything else (a KeyError
    from a 1C answer nobody foresaw) left the upload due at once and raised out of
    every step, a traceback each second, and no recording behind it reached 1C. It is
    now a failed attempt: counted, put off, its traceback logged once per file."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    await up.remote.aclose()
    up.remote = _BrokenOneC(settings)
    caplog.set_level(logging.WARNING, "callrouter_onec.recordings")
    try:
        assert await up.step() == 0
        assert await up.step() == 0
        assert up.queue.counts() == {"pending": 1}
        (attempts, last) = up.queue._db.execute(
            "SELECT attempts, last_error FROM uploads"
        ).fetchone()
    finally:
        await close_uploads(up)
    assert attempts == 2
    assert last == "KeyError: 'received'"
    assert up.failures == 2
    records = [r for r in caplog.records if r.name == "callrouter_onec.recordings"]
    assert [r.levelname for r in records] == ["ERROR", "WARNING"]
    assert records[0].exc_info is not None
    assert str(tmp_path / f"{CALL}-mix.wav") in records[0].getMessage()
    assert "KeyError" in records[1].getMessage()
    assert records[1].exc_info is None
    assert delivered(RecordingStore(tmp_path / "state")).state == "closed"


def _uploads_elsewhere(path: Path) -> int:
    """The queue's rows as another process sees them (opened, read, closed)."""
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(db.execute('SELECT COUNT(*) FROM uploads').fetchone()[0]); db.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_second_upload_queue_in_the_process_keeps_the_first_ones_locks(
    tmp_path: Path,
) -> None:
    """Issue 16: UploadQueue opened and closed the file before SQLite did, dropping the
    POSIX locks of the process's connections already open: the next other process to
    close it deleted the WAL the first queue went on writing into."""
    store = closed_recording(tmp_path)
    (rec,) = store.closed()
    path = tmp_path / "state" / FILENAME
    first = UploadQueue(path)
    second = UploadQueue(path)
    try:
        assert _uploads_elsewhere(path) == 0
        assert Path(f"{path}-wal").exists()
        assert first.add(rec)
        assert _uploads_elsewhere(path) == 1
    finally:
        second.close()
        first.close()
        store.close()
    path.chmod(0o644)
    UploadQueue(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_queue_row_the_plugin_cannot_have_written_is_failed_not_raised_each_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: due() built Path(None) from a row with no file (a damaged or tampered
    queue whose table lacks NOT NULL): TypeError in every step, nothing delivered. The
    row is now failed with an ERROR naming the file and row; the others go."""
    path = tmp_path / "state" / FILENAME
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE uploads (call_id TEXT, part TEXT, sha256 TEXT, file TEXT, size INTEGER,"
        " content_type TEXT, duration REAL, state TEXT NOT NULL DEFAULT 'pending',"
        " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,"
        " last_error TEXT NOT NULL DEFAULT '', queued_at REAL NOT NULL, done_at REAL,"
        " PRIMARY KEY (call_id, part, sha256))"
    )
    db.executemany(
        "INSERT INTO uploads (call_id, part, sha256, file, size, content_type, duration,"
        " queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("1.1", "mix", "a" * 64, None, 10, "audio/wav", 1.0, 1.0),
            ("1.2", "mix", "b" * 64, "/x/1.2-mix.wav", "ten", "audio/wav", 1.0, 2.0),
            ("1.3", "mix", "c" * 64, "/x/1.3-mix.wav", 10, "audio/wav", None, 3.0),
        ],
    )
    db.commit()
    db.close()
    queue = UploadQueue(path)
    try:
        with caplog.at_level(logging.ERROR, "callrouter_onec.recordings"):
            (upload,) = queue.due()
        assert upload.call_id == "1.3"
        assert upload.file == Path("/x/1.3-mix.wav")
        assert queue.counts() == {"failed": 2, "pending": 1}
        assert queue.due() == [upload]
    finally:
        queue.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(str(path) in e and "marked failed" in e for e in errors)
    assert "uploads row 1 " in errors[0]


@pytest.mark.parametrize(
    ("call_id", "part", "why"),
    [
        ("../../v1/responsible", "mix", "call id '../../v1/responsible' cannot name a recording"),
        ("1.1?x=", "mix", "call id '1.1?x=' cannot name a recording"),
        ("1.1", "mix/../../../v1/events#", "part 'mix/../../../v1/even' is not one of mix"),
        ("1.1", "MIX", "part 'MIX' is not one of mix, in, out"),
    ],
)
async def test_a_queue_row_whose_call_id_or_part_would_choose_the_url_is_failed(
    tmp_path: Path,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    call_id: str,
    part: str,
    why: str,
) -> None:
    """Issue 16: a queue row's call id and part go into 1C's URL path
    (/v1/calls/{call_id}/recordings/{part}); a tampered or corrupt row chose
    the path (../../v1/responsible). Read back, they are held to the shape the
    catalog writes: the row is failed with an ERROR saying why, the good
    recording beside it still goes, and nothing else reaches 1C."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"x" * 10)
    up.queue._db.execute(
        "INSERT INTO uploads (call_id, part, sha256, file, size, content_type, duration,"
        " queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (call_id, part, "d" * 64, str(bad), 10, "audio/wav", 1.0, 0.0),
    )
    try:
        with caplog.at_level(logging.ERROR, "callrouter_onec.recordings"):
            assert await up.step() == 1
            assert await up.step() == 0
        assert up.queue.counts() == {"done": 1, "failed": 1}
    finally:
        await close_uploads(up)
    (path,) = {r.path for r in double.requests()}
    assert path.endswith(f"/hs/telephony/v1/calls/{CALL}/recordings/mix"), path
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "is not one callrouter wrote" in errors[0]
    assert why in errors[0]
    assert "marked failed" in errors[0]


def _file_outside(how: str, folder: Path, secret: Path) -> str:
    """A queue row's ``file`` naming ``secret``, outside ``folder``, the way ``how``."""
    if how == "outside":
        return str(secret)
    if how == "dotdot":
        return f"{folder}/{os.path.relpath(secret, folder)}"
    if how == "linked_folder":
        (folder / "sub").symlink_to(secret.parent, target_is_directory=True)
        return str(folder / "sub" / secret.name)
    return os.path.relpath(secret)


@pytest.mark.parametrize("how", ["outside", "dotdot", "linked_folder", "relative"])
async def test_a_queue_row_whose_file_is_outside_the_recordings_folder_is_failed(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """Issue 16: the row's SHA-256 was checked against the row itself, so a tampered
    queue (a file name anywhere, its size and hash written beside it) had any file
    callrouter can read sent to 1C. The file is now held inside ``[recordings]
    local_dir`` once resolved (``..`` and a linked folder on the way out included):
    the row is failed with an ERROR naming it, the good recording still goes."""
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    data = b"not a recording" * 10
    secret.write_bytes(data)
    file = _file_outside(how, tmp_path, secret)
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    up.queue._db.execute(
        "INSERT INTO uploads (call_id, part, sha256, file, size, content_type, duration,"
        " queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("1.7", "mix", hashlib.sha256(data).hexdigest(), file, len(data), "text/plain", 1.0, 0.0),
    )
    try:
        with caplog.at_level(logging.ERROR, "callrouter_onec.recordings"):
            assert await up.step() == 1
            assert await up.step() == 0
        assert up.queue.counts() == {"done": 1, "failed": 1}
    finally:
        await close_uploads(up)
    assert [s.call_id for s in double.recordings.stored] == [CALL]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "uploads row 1 is not one callrouter wrote" in errors[0]
    assert ("not an absolute path" if how == "relative" else "not in the recordings folder") in (
        errors[0]
    )
    assert "marked failed" in errors[0]


async def test_a_folder_on_the_way_swapped_for_a_link_after_the_check_is_not_followed(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    double: OneCDouble,
    settings: OneCSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: the queue's check resolved the file's path inside ``local_dir`` once,
    then every chunk was read by opening the whole path again, ``O_NOFOLLOW`` on the
    file's own name only: a folder below ``local_dir`` that whoever writes there
    swapped for a link to another folder after the check (here one holding a file of
    the same name) had that file's bytes sent to 1C. Every name below ``local_dir`` is
    now opened from the one above it, never through a link: nothing is sent, the
    upload is given up with one ERROR naming the file."""
    day = tmp_path / "2026-12-06"
    day.mkdir()
    path = day / f"{CALL}-mix.wav"
    path.write_bytes(AUDIO)
    store = RecordingStore(tmp_path / "state")
    name = SimpleNamespace(call_id=CALL, part="mix", format="wav")
    (row,) = store.start([name], pbx_paths=["/x"], local_paths=[path], channel="PJSIP/t-1")
    store.mark_closed(
        row.id,
        file=path,
        content_type="audio/wav",
        size=len(AUDIO),
        sha256=hashlib.sha256(AUDIO).hexdigest(),
        duration=12.5,
    )
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / f"{CALL}-mix.wav").write_bytes(b"not a recording" * 1000)
    up = uploader(tmp_path, store, settings)
    checked = up.queue.due

    def due(*args: Any, **kwargs: Any) -> list[Any]:
        found = checked(*args, **kwargs)
        if found:  # checked while the folder was one; a link from now on
            day.rename(tmp_path / "moved-away")
            day.symlink_to(elsewhere, target_is_directory=True)
        return found

    up.queue.due = due  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, "callrouter_onec.recordings"):
            assert await up.step() == 0
        assert up.queue.counts() == {"failed": 1}
    finally:
        await close_uploads(up)
    assert double.recordings.puts == 0
    assert double.recordings.received(CALL, "mix") == 0
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].levelno == logging.ERROR
    assert f"{day}/{CALL}-mix.wav" in logged[0].getMessage()
    assert "symbolic link" in logged[0].getMessage()


async def test_a_cancelled_stop_of_the_uploader_is_not_swallowed(
    tmp_path: Path, settings: OneCSettings
) -> None:
    """``stop()`` cancelled while the upload loop takes its time to end raises
    that cancellation: it was swallowed with the loop's own (issue 16)."""
    store = closed_recording(tmp_path)
    up = uploader(tmp_path, store, settings)
    released = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(released.wait())

    loop_task = asyncio.ensure_future(stubborn())
    up._task = loop_task
    await asyncio.sleep(0)
    stopper = asyncio.ensure_future(up.stop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not stopper.done()
    stopper.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    try:
        assert stopper.cancelled()
    finally:
        released.set()
        await asyncio.gather(loop_task, stopper, return_exceptions=True)
        await close_uploads(up)
