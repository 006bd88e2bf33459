"""Recordings over the API: signed links (expiry, tampering), tokens scoped to their
extensions, byte ranges, path traversal in every parameter, start and stop."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, BinaryIO

import httpx
import pytest
from starlette.types import Message

from router.api.app import build_app
from router.api.auth import hash_token, new_token
from router.api.calls import live_extensions
from router.api.context import ApiContext
from router.api.errors import ApiError
from router.api.recordings import _CHUNK, parse_range, signed_link
from router.api.server import ApiServer
from router.api.settings import ApiSettings, TokenSettings
from router.recordings import RecordingStore, recording_signer
from router.recordings.files import open_recording
from router.recordings.naming import file_names
from router.recordings.settings import RecordingSettings
from router.recordings.store import Origin, Recording
from router.testing import StubEngine
from router.testing.builders import make_config, make_event
from tests.unit.api.test_api_calls import DIALING as CALLS_DIALING

if TYPE_CHECKING:
    from router.calls import Call
    from router.testing import EngineFactory, ReplayAsterisk

CALL = "1714557600.42"
ADMIN = new_token()
DESK101 = new_token()
DESK102 = new_token()
NOREAD = new_token()
AUDIO = bytes(range(256)) * 40  # 10240 bytes
SHA = hashlib.sha256(AUDIO).hexdigest()


def token(
    name: str, text: str, allow: tuple[str, ...], extensions: tuple[str, ...]
) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=allow,
        extensions=extensions,
        rate=1000,
        burst=1000,
    )


API = ApiSettings(
    tokens={
        t.name: t
        for t in (
            token("admin", ADMIN, ("recordings:read", "calls:record"), ("*",)),
            token("desk101", DESK101, ("recordings:read", "calls:record"), ("101",)),
            token("desk102", DESK102, ("recordings:read", "calls:record"), ("102",)),
            token("noread", NOREAD, ("calls:read",), ("*",)),
        )
    }
)


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


@pytest.fixture
def settings(tmp_path: Path) -> RecordingSettings:
    (tmp_path / "monitor").mkdir()
    return RecordingSettings(
        dir="/var/spool/asterisk/monitor",
        local_dir=tmp_path / "monitor",
        public_url="https://cr.example:8089",
        url_ttl=300,
    )


def closed_file(state: Path, settings: RecordingSettings, call_id: str, channel: str) -> None:
    """The catalog in ``state`` holds ``call_id``'s mix file, closed, of 101's call."""
    store = RecordingStore(state)
    (name,) = file_names(call_id, "mix", "wav")
    path = settings.local_path(name)
    path.write_bytes(AUDIO)
    (row,) = store.start(
        [name],
        pbx_paths=[settings.pbx_path(name)],
        local_paths=[path],
        channel=channel,
        extensions=["101"],
    )
    store.mark_closed(
        row.id, file=path, content_type="audio/wav", size=len(AUDIO), sha256=SHA, duration=1
    )
    store.close()


@pytest.fixture
async def stub(tmp_path: Path, settings: RecordingSettings) -> AsyncIterator[StubEngine]:
    state = tmp_path / "state"
    config = dataclasses.replace(make_config(state_dir=state), recordings=settings)
    engine = StubEngine(state_dir=state, config=config)
    closed_file(state, settings, CALL, "PJSIP/trunk-00000001")
    yield engine
    await engine.aclose()


def client_for(stub: StubEngine) -> httpx.AsyncClient:
    app = build_app(ApiContext(stub, API))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.7", 5555)), base_url="http://t"
    )


def link(
    stub: StubEngine, settings: RecordingSettings, *, ttl: float = 300, now: float | None = None
) -> str:
    url = recording_signer(settings, stub.state_dir).url("http://t", CALL, "mix", ttl, now=now)
    return url.removeprefix("http://t")


async def test_a_signed_link_serves_the_file_before_expiry(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    async with client_for(stub) as client:
        response = await client.get(link(stub, settings))
    assert response.status_code == 200, response.text
    assert response.content == AUDIO
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(AUDIO))
    assert "no-store" in response.headers["cache-control"]


async def test_a_link_fails_after_expiry_and_when_tampered(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    expired = link(stub, settings, ttl=60, now=1_000_000)
    good = link(stub, settings)
    sig = re.search(r"sig=([0-9a-f]{64})", good)
    assert sig is not None
    flipped = sig[1][:-1] + ("1" if sig[1][-1] == "0" else "0")
    expires = re.search(r"expires=(\d+)", good)
    assert expires is not None
    async with client_for(stub) as client:
        responses = [
            await client.get(expired),
            await client.get(good.replace(sig[1], flipped)),
            await client.get(good.replace(expires[1], str(int(expires[1]) + 3600))),
            await client.get(good.replace("/mix?", "/in?")),
            await client.get(good.replace(CALL, "1714557600.43")),
            # The same expiry spelled with a leading zero is not the link issued (issue 16).
            await client.get(good.replace(f"expires={expires[1]}", f"expires=0{expires[1]}")),
        ]
    assert [r.status_code for r in responses[:3]] == [403, 403, 403]
    # Another part or call with this signature: 403 too, or 404 where no such file exists.
    assert responses[3].status_code in (403, 404)
    assert responses[4].status_code in (403, 404)
    assert responses[5].status_code == 403
    assert all(AUDIO[:64] not in r.content for r in responses)


async def test_byte_ranges(stub: StubEngine, settings: RecordingSettings) -> None:
    url = link(stub, settings)
    async with client_for(stub) as client:
        middle = await client.get(url, headers={"Range": "bytes=10-19"})
        tail = await client.get(url, headers={"Range": "bytes=-5"})
        open_end = await client.get(url, headers={"Range": "bytes=10200-"})
        past = await client.get(url, headers={"Range": f"bytes={len(AUDIO)}-"})
        nonsense = await client.get(url, headers={"Range": "lines=1-2"})
    assert middle.status_code == 206
    assert middle.content == AUDIO[10:20]
    assert middle.headers["content-range"] == f"bytes 10-19/{len(AUDIO)}"
    assert tail.status_code == 206
    assert tail.content == AUDIO[-5:]
    assert open_end.content == AUDIO[10200:]
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(AUDIO)}"
    assert nonsense.status_code == 200
    assert nonsense.content == AUDIO


async def test_a_range_under_an_if_range_of_another_file_gets_the_whole_file(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """Issue 16: an ``If-Range`` naming another ETag (a download of another file
    resumed), a weak one or a date was answered 206 with a piece of this file, for
    the client to splice onto bytes of another; RFC 9110 13.1.5 says the whole
    file (200). The file's own ETag still gets the range."""
    url = link(stub, settings)
    async with client_for(stub) as client:
        whole = await client.get(url)
        etag = whole.headers["etag"]
        same = await client.get(url, headers={"Range": "bytes=10-19", "If-Range": etag})
        answers = [
            await client.get(url, headers={"Range": "bytes=10-19", "If-Range": other})
            for other in ('"0f00"', f"W/{etag}", "Mon, 07 Dec 2026 17:35:06 GMT")
        ]
        past = await client.get(
            url, headers={"Range": f"bytes={len(AUDIO)}-", "If-Range": '"0f00"'}
        )
        twice = await client.get(
            url, headers=[("Range", "bytes=0-9"), ("If-Range", etag), ("If-Range", etag)]
        )
    assert same.status_code == 206
    assert same.content == AUDIO[10:20]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.content == AUDIO
        assert "content-range" not in answer.headers
    assert past.status_code == 200  # the Range is ignored before it could be 416
    assert twice.status_code == 400
    assert twice.json()["field"] == "If-Range"


async def test_a_range_given_twice_is_400(stub: StubEngine, settings: RecordingSettings) -> None:
    """Read as the first of two, where a cache in front may serve the last."""
    url = link(stub, settings)
    async with client_for(stub) as client:
        twice = await client.get(url, headers=[("Range", "bytes=0-9"), ("Range", "bytes=10-19")])
    assert twice.status_code == 400
    assert twice.json()["field"] == "Range"
    assert AUDIO[:10] not in twice.content


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=-5", 0, None),  # satisfiable (RFC 9110 14.1.2) but no byte to name: 200
        ("bytes=-1", 0, None),
        ("bytes=0-0", 0, 416),
        ("bytes=0-", 0, 416),
        ("bytes=-0", 0, 416),
        ("bytes=5-9", 0, 416),
        ("bytes=-5", 3, (0, 2)),  # more than the file: all of it
        ("bytes=0-0", 1, (0, 0)),
        ("bytes=2-99999", 10, (2, 9)),  # an end past the end is the end
        ("bytes=10-", 10, 416),
        ("bytes=11-20", 10, 416),
        ("bytes=5-2", 10, None),  # not a valid range: ignored
    ],
)
def test_parse_range_at_the_edges(
    header: str, size: int, expected: tuple[int, int] | int | None
) -> None:
    if expected == 416:
        with pytest.raises(ApiError) as refused:
            parse_range(header, size)
        assert refused.value.status == 416
        assert refused.value.headers["Content-Range"] == f"bytes */{size}"
    else:
        assert parse_range(header, size) == expected


async def test_ranges_of_an_empty_recording_never_name_bytes_it_lacks(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """Before: ``bytes=-5`` of a 0-byte recording was 206 with ``bytes 0--1/0``."""
    (name,) = file_names(CALL, "mix", "wav")
    settings.local_path(name).write_bytes(b"")
    url = link(stub, settings)
    async with client_for(stub) as client:
        tail = await client.get(url, headers={"Range": "bytes=-5"})
        first = await client.get(url, headers={"Range": "bytes=0-0"})
        whole = await client.get(url)
    assert tail.status_code == 200
    assert "content-range" not in tail.headers
    assert (tail.content, tail.headers["content-length"]) == (b"", "0")
    assert first.status_code == 416
    assert first.headers["content-range"] == "bytes */0"
    assert (whole.status_code, whole.content) == (200, b"")


async def test_ranges_past_the_end_are_416_and_ends_past_it_are_cut(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    url = link(stub, settings)
    async with client_for(stub) as client:
        beyond = await client.get(
            url, headers={"Range": f"bytes={len(AUDIO) + 5}-{len(AUDIO) + 9}"}
        )
        cut = await client.get(url, headers={"Range": f"bytes={len(AUDIO) - 3}-{len(AUDIO) * 2}"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(AUDIO)}"
    assert cut.status_code == 206
    assert cut.content == AUDIO[-3:]
    assert cut.headers["content-range"] == f"bytes {len(AUDIO) - 3}-{len(AUDIO) - 1}/{len(AUDIO)}"


TRAVERSALS = [
    "/api/v1/recordings/..%2F..%2Fetc%2Fpasswd/mix",
    "/api/v1/recordings/%2e%2e/mix",
    "/api/v1/recordings/%2e%2e%2f%2e%2e/mix",
    f"/api/v1/recordings/{CALL}/..%2Fmix",
    f"/api/v1/recordings/{CALL}/%2e%2e",
    f"/api/v1/recordings/{CALL}%00/mix",
    f"/api/v1/recordings/{CALL}/mix%00",
    "/api/v1/recordings/%2Fetc%2Fpasswd/mix",
    f"/api/v1/recordings/{'9' * 5000}/mix",
    f"/api/v1/recordings/{CALL}-mix.wav/mix",
    "/api/v1/recordings/..%5C..%5Cwindows/mix",
    f"/api/v1/recordings/{CALL}/mix?expires=../../etc&sig=" + "0" * 64,
    f"/api/v1/recordings/{CALL}/mix?expires=9999999999&sig=../../etc/passwd",
    f"/api/v1/recordings/{CALL}/mix?expires=%00&sig=%2e%2e",
    f"/api/v1/recordings/{CALL}/mix?expires=9999999999&sig=" + "a" * 5000,
    "/api/v1/recordings/..%2F..%2Fetc",
]


async def test_a_misspelt_link_parameter_is_400_naming_it(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.get(
            f"/api/v1/recordings/{CALL}/mix?expire=9999999999&sig=" + "0" * 64,
            headers=bearer(ADMIN),
        )
    assert response.status_code == 400
    assert response.json()["field"] == "expire"
    assert response.json()["did_you_mean"] == "expires"


async def test_a_bad_link_parameter_is_worded_as_every_query_parameter(
    stub: StubEngine,
) -> None:
    """``expires: expected Unix seconds`` had a shape of its own (issue 16); a bad
    ``sig`` is not echoed back (it is the link's credential)."""
    async with client_for(stub) as client:
        expires = await client.get(
            f"/api/v1/recordings/{CALL}/mix?expires=soon&sig=" + "0" * 64, headers=bearer(ADMIN)
        )
        sig = await client.get(
            f"/api/v1/recordings/{CALL}/mix?expires=9999999999&sig=" + "A" * 64,
            headers=bearer(ADMIN),
        )
    assert (
        expires.json()["detail"] == "query parameter 'expires': expected Unix seconds, got 'soon'"
    )
    assert expires.json()["field"] == "expires"
    assert sig.json()["detail"] == "query parameter 'sig': expected 64 hex digits"
    assert sig.json()["field"] == "sig"


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_in_any_parameter_is_400_or_404(stub: StubEngine, path: str) -> None:
    async with client_for(stub) as client:
        response = await client.get(path, headers=bearer(ADMIN))
    assert response.status_code in (400, 404), (path, response.status_code)
    assert response.headers["content-type"] == "application/problem+json"
    assert b"root:" not in response.content


async def test_a_token_fetches_recordings_of_its_own_extensions_only(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    path = f"/api/v1/recordings/{CALL}/mix"
    async with client_for(stub) as client:
        own = await client.get(path, headers=bearer(DESK101))
        other = await client.get(path, headers=bearer(DESK102))
        lacking = await client.get(path, headers=bearer(NOREAD))
        anonymous = await client.get(path)
        listing = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK101))
        hidden = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK102))
    assert own.status_code == 200
    assert own.content == AUDIO
    assert other.status_code == 404
    assert lacking.status_code == 403
    assert anonymous.status_code == 401
    assert listing.status_code == 200
    (entry,) = listing.json()["files"]
    assert entry["part"] == "mix"
    assert entry["url"].startswith(f"https://cr.example:8089/api/v1/recordings/{CALL}/mix?expires=")
    assert hidden.status_code == 404
    # The listed link works as handed out (the same key signs and verifies).
    async with client_for(stub) as client:
        fetched = await client.get(entry["url"].removeprefix("https://cr.example:8089"))
    assert fetched.content == AUDIO


async def test_recordings_off_is_404(tmp_path: Path) -> None:
    stub = StubEngine(state_dir=tmp_path)
    async with client_for(stub) as client:
        response = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(ADMIN))
    assert response.status_code == 404
    assert "no [recordings] table" in response.json()["detail"]


async def test_start_and_stop_recording_a_live_call(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    live = "1714557700.7"
    call = stub.calls.inbound_call(linkedid=live)
    stub.calls.feed(
        make_event(
            "Newchannel",
            Channel="PJSIP/101-00000002",
            Uniqueid="1714557700.8",
            Linkedid=live,
            ChannelStateDesc="Ring",
        )
    )
    sent: list[dict[str, str]] = []
    # Asterisk 22 answers with the new MixMonitor's id (the i() option asked for it).
    ours = "0x7feeec00ae10"
    stub.replay.on(
        "MixMonitor", lambda action: sent.append(dict(action.fields)) or {"MixMonitorID": ours}
    )
    stub.replay.on("StopMixMonitor", lambda action: sent.append(dict(action.fields)) or {})
    # The channel's newest callrouter MixMonitor (i(CALLROUTER_REC_ID)): not the API's.
    ids = {"CALLROUTER_REC_ID": "5b0b4f2e-6a47-4c1c-8d5b-6f0c1e2d3a4b"}
    stub.replay.on("Getvar", lambda action: {"Value": ids.get(action["Variable"], "")})
    async with client_for(stub) as client:
        refused = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK102))
        bad = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "../x"}
        )
        started = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "both"}
        )
        again = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        stopped = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert refused.status_code == 404
    assert bad.status_code == 400
    assert started.status_code == 201, started.text
    assert [f["part"] for f in started.json()["files"]] == ["mix", "in", "out"]
    assert again.status_code == 409
    assert stopped.status_code == 202
    mix, stop = sent
    assert mix["Channel"] == call.waiting_channel
    assert mix["File"] == f"/var/spool/asterisk/monitor/{live}-mix.wav"
    assert mix["Options"].endswith("i(CALLROUTER_REC_ID)")
    assert stop["Channel"] == call.waiting_channel
    # Only the API's MixMonitor, by the id Asterisk answered: a PBX that records every
    # call has its own on the channel, and a rule may have started one after it.
    assert stop["MixMonitorID"] == ours


@pytest.mark.parametrize(
    "body", [{"legs": []}, {"legs": {"both": 1}}, {"format": []}, {"format": {"wav": 1}}]
)
async def test_a_legs_or_format_that_is_no_text_is_400_not_500(
    stub: StubEngine, settings: RecordingSettings, body: dict[str, object]
) -> None:
    """``legs`` was looked up in a dict: a JSON array or object there
    (unhashable) raised ``TypeError``, a 500 with a traceback for any token
    with ``calls:record`` on a call it sees (issue 16). 400 naming the field."""
    live = "1714557700.11"
    stub.calls.inbound_call(linkedid=live)
    async with client_for(stub) as client:
        response = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(ADMIN), json=body
        )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == next(iter(body))
    assert stub.replay.count("MixMonitor") == 0


async def test_recording_a_live_call_without_write_class_system_is_403_naming_it(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """AMI MixMonitor is write class system: the least-privilege user gets a clear
    refusal, and no catalog row is left waiting for a file that will never come."""
    live = "1714557700.9"
    stub.calls.inbound_call(linkedid=live)
    stub.replay.on(
        "MixMonitor", lambda action: [("Response", "Error"), ("Message", "Permission denied")]
    )
    async with client_for(stub) as client:
        refused = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(ADMIN))
    assert refused.status_code == 403, refused.text
    detail = refused.json()["detail"]
    assert "MixMonitor" in detail
    assert "needs write class system" in detail
    assert RecordingStore(stub.state_dir).for_call(live) == []


async def test_pull_mode_confirms_the_file_once_a_signed_link_served_all_of_it(
    tmp_path: Path, stub: StubEngine, settings: RecordingSettings
) -> None:
    pull = dataclasses.replace(settings, mode="pull")
    stub.config = dataclasses.replace(stub.config, recordings=pull)
    url = link(stub, pull)
    async with client_for(stub) as client:
        partial = await client.get(url, headers={"Range": "bytes=0-9"})
        assert partial.status_code == 206
        assert RecordingStore(stub.state_dir).get(CALL, "mix").state == "closed"  # type: ignore[union-attr]
        whole = await client.get(url)
    assert whole.content == AUDIO
    row = RecordingStore(stub.state_dir).get(CALL, "mix")
    assert row is not None
    assert row.state == "delivered"
    assert row.receiver == "pull"


async def test_pull_mode_does_not_confirm_a_file_replaced_since_it_was_catalogued(
    stub: StubEngine, settings: RecordingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a signed link that served the whole file counted as 1C holding the
    recording whatever bytes were at its name: other ones (replaced by someone who
    writes to Asterisk's folder, of any size) marked it delivered, and retention
    (after_delivery = "delete") then deleted a recording 1C never had."""
    (name,) = file_names(CALL, "mix", "wav")
    settings.local_path(name).write_bytes(bytes(reversed(AUDIO)))
    pull = dataclasses.replace(settings, mode="pull")
    stub.config = dataclasses.replace(stub.config, recordings=pull)
    async with client_for(stub) as client:
        whole = await client.get(link(stub, pull))
    assert whole.status_code == 200
    row = RecordingStore(stub.state_dir).get(CALL, "mix")
    assert row is not None
    assert row.state == "closed"
    assert "is not the file catalogued" in caplog.text


async def test_pull_mode_does_not_confirm_a_download_the_client_cut_short(
    stub: StubEngine, settings: RecordingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the confirmation was a background task, which Starlette runs after a
    streamed answer even when the client disconnected mid-body: a link opened and
    dropped after its first bytes marked the file delivered, and retention
    (after_delivery = "delete") then deleted a recording 1C never had. And the
    recording is closed when the answer ends: Starlette left the body's generator
    suspended, the file open until the garbage collector came (a ResourceWarning
    at a test's teardown, once)."""
    opened: list[BinaryIO] = []

    def recording(folder: Path, path: Path) -> BinaryIO:
        handle = open_recording(folder, path)
        opened.append(handle)
        return handle

    monkeypatch.setattr("router.api.recordings.open_recording", recording)
    big = os.urandom(_CHUNK * 4)
    (name,) = file_names(CALL, "mix", "wav")
    settings.local_path(name).write_bytes(big)
    pull = dataclasses.replace(settings, mode="pull")
    stub.config = dataclasses.replace(stub.config, recordings=pull)
    url = link(stub, pull)
    path, _, query = url.partition("?")
    app = build_app(ApiContext(stub, API))
    cut = asyncio.Event()
    requested = False
    bodies: list[bytes] = []

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await cut.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])
            cut.set()  # the client goes away after the first chunk
            await asyncio.sleep(0.05)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"t")],
        "client": ("10.0.0.7", 5555),
        "server": ("t", 80),
        "state": {},
    }
    await app(scope, receive, send)
    assert 0 < sum(map(len, bodies)) < len(big)
    assert len(opened) == 1
    assert opened[0].closed
    row = RecordingStore(stub.state_dir).get(CALL, "mix")
    assert row is not None
    assert row.state == "closed"


async def test_a_link_put_in_place_of_a_recording_is_not_served(
    tmp_path: Path, stub: StubEngine, settings: RecordingSettings
) -> None:
    """Before: the API followed a symbolic link someone with write access to the
    recordings folder put at a catalogued name, and served what it named."""
    secret = tmp_path / "state" / "recordings.key"
    secret.write_text("00" * 32 + "\n", encoding="ascii")
    (name,) = file_names(CALL, "mix", "wav")
    path = settings.local_path(name)
    path.unlink()
    path.symlink_to(secret)
    async with client_for(stub) as client:
        by_token = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(ADMIN))
        by_link = await client.get(link(stub, settings))
    assert (by_token.status_code, by_link.status_code) == (404, 404)
    assert b"0000" not in by_token.content + by_link.content


@pytest.mark.parametrize("how", ["linked_folder", "outside"])
async def test_a_recording_reached_through_a_linked_folder_or_outside_is_not_served(
    tmp_path: Path,
    stub: StubEngine,
    settings: RecordingSettings,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """Issue 16: the download opened the catalogued path whole, ``O_NOFOLLOW`` on the
    file's own name only: a folder on the way below ``local_dir`` that whoever writes
    there made a link (to a folder holding a file of that name) was followed, and a
    row naming a file outside ``local_dir`` was served as it was. Every name below
    ``local_dir`` is now opened from the one above it, never through a link: 404, and
    one WARNING naming the file."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (name,) = file_names(CALL, "mix", "wav")
    (elsewhere / str(name)).write_bytes(b"SECRET" * 100)
    if how == "linked_folder":
        (settings.local_dir / "day").symlink_to(elsewhere, target_is_directory=True)
        file = settings.local_dir / "day" / str(name)
    else:
        file = elsewhere / str(name)
    store = RecordingStore(stub.state_dir)
    with store._tx() as db:  # the catalog names that file (written so, or tampered)
        db.execute("UPDATE recordings SET file = ?, size = 600", (str(file),))
    store.close()
    with caplog.at_level(logging.WARNING, "router.api"):
        async with client_for(stub) as client:
            by_token = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(ADMIN))
    assert by_token.status_code == 404
    assert b"SECRET" not in by_token.content
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(file) in warnings[0]
    assert "not in the recordings folder" in warnings[0]


async def test_recording_needs_a_live_leg_of_the_tokens_extension(stub: StubEngine) -> None:
    """101's leg hung up (the queue rang it, 102 answered): 101 may not record 102's talk.

    The call stays visible to 101's token (it lists 101's old leg), which once was
    enough to start MixMonitor on the call, or stop a recording of it.
    """
    live = "1714557700.9"
    stub.calls.inbound_call(linkedid=live)
    for channel, uniqueid in (("PJSIP/101-00000003", "1714557700.10"),):
        stub.calls.feed(make_event("Newchannel", Channel=channel, Uniqueid=uniqueid, Linkedid=live))
        stub.calls.feed(make_event("Hangup", Channel=channel, Uniqueid=uniqueid, Linkedid=live))
    stub.calls.feed(
        make_event(
            "Newchannel",
            Channel="PJSIP/102-00000004",
            Uniqueid="1714557700.11",
            Linkedid=live,
            ChannelStateDesc="Up",
        )
    )
    sent: list[str] = []
    stub.replay.on("MixMonitor", lambda action: sent.append(action.name) or {})
    stub.replay.on("StopMixMonitor", lambda action: sent.append(action.name) or {})
    stub.replay.on("Getvar", lambda action: {"Value": ""})
    async with client_for(stub) as client:
        started = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        stopped = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        theirs = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK102))
        unstopped = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert started.status_code == 409, started.text
    assert "no live leg" in started.json()["detail"]
    assert stopped.status_code == 409, stopped.text
    assert theirs.status_code == 201, theirs.text
    assert unstopped.status_code == 409  # nor stop the recording 102 started
    assert sent == ["MixMonitor"]


def live_call(stub: StubEngine, live: str, legs: dict[str, str]) -> None:
    """A call with phone legs ``{channel: 'up' | 'gone'}`` (gone: rang, hung up)."""
    stub.calls.inbound_call(linkedid=live)
    for n, (channel, how) in enumerate(legs.items()):
        uniqueid = f"{live}{n}"
        stub.calls.feed(
            make_event(
                "Newchannel",
                Channel=channel,
                Uniqueid=uniqueid,
                Linkedid=live,
                ChannelStateDesc="Up" if how == "up" else "Ring",
            )
        )
        if how == "gone":
            stub.calls.feed(make_event("Hangup", Channel=channel, Uniqueid=uniqueid, Linkedid=live))


def catalog(
    stub: StubEngine, settings: RecordingSettings, live: str, origin: Origin | None
) -> None:
    """A file of ``live`` still being written, started by ``origin`` (None: a row an
    older callrouter wrote, before origins were kept)."""
    store = RecordingStore(stub.state_dir)
    (name,) = file_names(live, "mix", "wav")
    store.start(
        [name],
        pbx_paths=[settings.pbx_path(name)],
        local_paths=[settings.local_path(name)],
        channel=f"Local/74951234567@callrouter-inbound-{live};2",
        extensions=["101"],
        **({} if origin is None else {"origin": origin}),
    )
    store.close()


@pytest.mark.parametrize(
    ("origin", "named"),
    [(Origin("rule", "compliance"), "rule"), (Origin("plugin"), "plugin"), (None, "unknown")],
)
async def test_the_apis_stop_leaves_a_recording_it_did_not_start(
    stub: StubEngine, settings: RecordingSettings, origin: Origin | None, named: str
) -> None:
    """A rule's recording (a compliance recording the administrator requires) was
    stopped by any token with calls:record and a live leg on the call: the agent
    could end it. Now only recordings the API started are stopped, for every token
    ("*" too: no token scope stops them); a row from before origins were kept
    counts as not the API's."""
    live = "1714557700.21"
    live_call(stub, live, {"PJSIP/101-00000021": "up"})
    catalog(stub, settings, live, origin)
    sent: list[str] = []
    for action in ("Getvar", "StopMixMonitor"):
        stub.replay.on(action, lambda a: sent.append(a.name) or {"Value": "5b0b4f2e"})
    async with client_for(stub) as client:
        desk = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        admin = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(ADMIN))
        listing = await client.get(f"/api/v1/recordings/{live}", headers=bearer(DESK101))
    for refused in (desk, admin):
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["origin"] == named
        assert "the API stops only recordings it started" in problem["detail"]
    assert sent == []
    (entry,) = listing.json()["files"]
    assert (entry["origin"], entry["state"]) == (named, "recording")
    (row,) = RecordingStore(stub.state_dir).recording(live)
    assert row.state == "recording"


async def test_the_api_records_who_started_a_recording_and_stops_its_own(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    live = "1714557700.31"
    live_call(stub, live, {"PJSIP/101-00000031": "up"})
    stub.replay.on("MixMonitor", lambda action: {})
    stub.replay.on("StopMixMonitor", lambda action: {})
    stub.replay.on("Getvar", lambda action: {"Value": "5b0b4f2e-6a47"})
    async with client_for(stub) as client:
        started = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        (row,) = RecordingStore(stub.state_dir).recording(live)
        stopped = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert started.status_code == 201, started.text
    assert started.json()["files"][0]["origin"] == "api"
    assert row.origin == Origin("api", "token desk101 (101)")
    assert stopped.status_code == 202, stopped.text


async def test_a_recording_is_read_only_by_extensions_on_the_call_while_it_was_recorded(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """101 rang (a queue) and was cancelled before 102 answered and started recording:
    101's token could list and download the recording of 102's talk, since the
    catalog listed every extension the call ever had."""
    live = "1714557700.41"
    live_call(stub, live, {"PJSIP/101-00000041": "gone", "PJSIP/102-00000042": "up"})
    stub.replay.on("MixMonitor", lambda action: {})
    async with client_for(stub) as client:
        started = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK102))
        theirs = await client.get(f"/api/v1/recordings/{live}", headers=bearer(DESK102))
        mine = await client.get(f"/api/v1/recordings/{live}", headers=bearer(DESK101))
        admin = await client.get(f"/api/v1/recordings/{live}", headers=bearer(ADMIN))
    assert started.status_code == 201, started.text
    (row,) = RecordingStore(stub.state_dir).for_call(live)
    assert "101" not in row.extensions
    assert "102" in row.extensions
    assert theirs.status_code == 200
    assert mine.status_code == 404, mine.text
    assert admin.status_code == 200


async def test_a_token_for_every_extension_reads_a_recording_of_no_phone(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """A call no phone leg was on while recorded (an IVR, a trunk-to-trunk call) has no
    extension: "*" covers it (as it covers events of no extension), others do not."""
    live = "1714557700.51"
    store = RecordingStore(stub.state_dir)
    (name,) = file_names(live, "mix", "wav")
    store.start(
        [name],
        pbx_paths=[settings.pbx_path(name)],
        local_paths=[settings.local_path(name)],
        channel="Local/ivr@x;2",
        origin=Origin("rule", "ivr"),
    )
    store.close()
    async with client_for(stub) as client:
        admin = await client.get(f"/api/v1/recordings/{live}", headers=bearer(ADMIN))
        desk = await client.get(f"/api/v1/recordings/{live}", headers=bearer(DESK101))
    assert admin.status_code == 200, admin.text
    assert desk.status_code == 404


async def test_the_apis_stop_ends_its_own_recording_and_leaves_the_rules_beside_it(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """The agent records the caller's side (legs in) and an on: event rule then starts
    the compliance recording (mix) on the same channel. Before, the stop refused both
    (409, the rule's running); now it stops the API's MixMonitor by the id Asterisk
    answered (not the channel's CALLROUTER_REC_ID, which names the rule's, started
    last) and answers what still records."""
    from router.recordings.mixmonitor import start_recording

    live = "1714557700.61"
    live_call(stub, live, {"PJSIP/101-00000061": "up"})
    call = stub.calls.get(live)
    assert call is not None
    channel = call.waiting_channel
    assert channel
    stub.replay.on("MixMonitor", lambda action: {})  # answers with a fresh MixMonitorID
    stops: list[dict[str, str]] = []
    stub.replay.on("StopMixMonitor", lambda action: stops.append(dict(action.fields)) or {})
    async with client_for(stub) as client:
        started = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "in"}
        )
        assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        (rule,) = await start_recording(
            lambda name, headers: stub.ami.send(name, headers),
            store,
            settings,
            call_id=live,
            channel=channel,
            legs="mix",
            origin=Origin("rule", "compliance"),
        )
        (api,) = [r for r in store.recording(live) if r.origin.kind == "api"]
        assert api.mixmonitor_id
        assert rule.mixmonitor_id not in ("", api.mixmonitor_id)
        stopped = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert stopped.status_code == 202, stopped.text
    body = stopped.json()
    assert body["stopped"] == [channel]
    assert [(f["part"], f["origin"]) for f in body["files"]] == [("in", "api")]
    assert [(f["part"], f["origin"], f["state"]) for f in body["still_recording"]] == [
        ("mix", "rule", "recording")
    ]
    assert [(s["Channel"], s["MixMonitorID"]) for s in stops] == [(channel, api.mixmonitor_id)]
    rows = {r.part: r for r in store.recording(live)}
    assert rows["in"].stop_asked_at is not None  # its MixMonitorStop closes it
    assert rows["mix"].stop_asked_at is None  # not the rule's
    store.close()


async def test_the_apis_stop_leaves_a_mixmonitor_that_also_writes_a_rules_file(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """The API recorded both legs; a rule then asked for the mixed file, which the
    catalog made the rule's. The API's MixMonitor writes it: stopping that would end the
    rule's recording, so the stop is 409 and nothing is sent."""
    from router.recordings.mixmonitor import start_recording

    live = "1714557700.71"
    live_call(stub, live, {"PJSIP/101-00000071": "up"})
    stub.replay.on("MixMonitor", lambda action: {})
    sent: list[str] = []
    stub.replay.on("StopMixMonitor", lambda action: sent.append(action.name) or {})
    stub.replay.on("Getvar", lambda action: sent.append(action.name) or {"Value": "x1"})
    async with client_for(stub) as client:
        started = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "both"}
        )
        assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        call = stub.calls.get(live)
        assert call is not None
        assert call.waiting_channel
        taken = await start_recording(
            lambda name, headers: stub.ami.send(name, headers),
            store,
            settings,
            call_id=live,
            channel=call.waiting_channel,
            legs="mix",
            origin=Origin("rule", "compliance"),
        )
        assert taken == []  # the API's MixMonitor writes it already
        refused = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert refused.status_code == 409, refused.text
    assert refused.json()["origin"] == "rule"
    assert "same MixMonitor" in refused.json()["detail"]
    assert sent == []
    assert {r.part for r in store.recording(live) if r.stop_asked_at is None} == {
        "mix",
        "in",
        "out",
    }
    store.close()


async def test_an_api_file_of_unknown_mixmonitor_is_not_stopped_beside_a_rules(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """An API recording an older callrouter started (no MixMonitor id kept) beside a
    rule's on the same channel: the stop could only name the channel's newest
    callrouter MixMonitor, maybe the rule's, so it is 409 and nothing is sent."""
    live = "1714557700.81"
    live_call(stub, live, {"PJSIP/101-00000081": "up"})
    store = RecordingStore(stub.state_dir)
    for part, origin in (("in", Origin("api", "token desk101 (101)")), ("mix", Origin("rule"))):
        (name,) = file_names(live, part, "wav")
        store.start(
            [name],
            pbx_paths=[settings.pbx_path(name)],
            local_paths=[settings.local_path(name)],
            channel="PJSIP/trunk-00000081",
            extensions=["101"],
            origin=origin,
        )
    sent: list[str] = []
    for action in ("Getvar", "StopMixMonitor"):
        stub.replay.on(action, lambda a: sent.append(a.name) or {"Value": "5b0b4f2e"})
    async with client_for(stub) as client:
        refused = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert refused.status_code == 409, refused.text
    assert refused.json()["origin"] == "rule"
    assert sent == []
    store.close()


async def test_a_second_stop_before_the_first_ended_sends_nothing_and_keeps_the_mark(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """The agent pressed stop twice; the second came before Asterisk's MixMonitorStop.
    It named the first's MixMonitorID again: Asterisk refused it (that MixMonitor is
    gone; and its id, a heap address, may by then be a new MixMonitor's on the
    channel), and the refusal took back the first stop's mark, so the MixMonitorStop
    then closed the rule's file beside it as well (a GSM file still being written).
    Now a file already being stopped is not stopped again: 409, nothing sent, the
    mark kept."""
    from router.recordings.mixmonitor import start_recording

    live = "1714557700.91"
    live_call(stub, live, {"PJSIP/101-00000091": "up"})
    call = stub.calls.get(live)
    assert call is not None
    channel = call.waiting_channel
    assert channel
    stub.replay.on("MixMonitor", lambda action: {})
    stops: list[dict[str, str]] = []

    def stop(action: object) -> dict[str, str]:
        stops.append(dict(action.fields))  # type: ignore[attr-defined]
        if len(stops) == 1:
            return {}
        return {"Response": "Error", "Message": "Could not stop specified MixMonitor"}

    stub.replay.on("StopMixMonitor", stop)
    async with client_for(stub) as client:
        started = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "in"}
        )
        assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        await start_recording(
            lambda name, headers: stub.ami.send(name, headers),
            store,
            settings,
            call_id=live,
            channel=channel,
            legs="mix",
            origin=Origin("rule", "compliance"),
        )
        first = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        second = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert first.status_code == 202, first.text
    assert second.status_code == 409, second.text
    assert "already being stopped" in second.json()["detail"]
    assert len(stops) == 1
    rows = {r.part: r for r in store.recording(live)}
    assert rows["in"].stop_asked_at is not None
    assert rows["mix"].stop_asked_at is None
    store.close()


@pytest.mark.parametrize(
    ("marked_ago", "written_ago", "kept_id", "stopped"),
    [
        (60.0, 0.0, True, True),  # the stop never reached Asterisk: its file is still written
        (60.0, 59.0, True, False),  # the file closed with the stop: its MixMonitor is gone
        (5.0, 0.0, True, False),  # a stop under way: its MixMonitorStop may yet come
        # Written well after it (20 s), but a mark under 30 s old is not yet stale.
        (20.0, 0.0, True, False),
        # No kept id (an older callrouter's): the channel's newest may be a rule's.
        (60.0, 0.0, False, False),
    ],
)
async def test_a_stale_stop_mark_whose_file_is_still_written_is_stopped_again(
    stub: StubEngine,
    settings: RecordingSettings,
    marked_ago: float,
    written_ago: float,
    kept_id: bool,
    stopped: bool,
) -> None:
    """callrouter stopped (a crash, a kill) between marking the API's file as being
    stopped and sending StopMixMonitor: the mark stayed, and every later stop was 409
    "already being stopped" while the file went on recording until the call ended.
    A mark older than 30 s whose file was written well after it is such a stop: the
    file's MixMonitor lives (only it writes the file), so its kept id is its own and
    it is stopped again, once; the mark renewed. A file written last at its mark's
    time (its MixMonitor ended) or a mark of a moment ago is left as it was: 409."""
    live = "1714557700.95"
    live_call(stub, live, {"PJSIP/101-00000095": "up"})
    stub.replay.on("MixMonitor", lambda action: {"MixMonitorID": "0x7feeec00ae95"})
    stops: list[dict[str, str]] = []
    stub.replay.on("StopMixMonitor", lambda action: stops.append(dict(action.fields)) or {})
    async with client_for(stub) as client:
        started = await client.post(
            f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "in"}
        )
        assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        if not kept_id:  # started by an older callrouter, which kept no id
            store.set_mixmonitor_id((r.id for r in store.recording(live)), "")
            # What the channel's CR_ID says now: another MixMonitor's, a rule's maybe.
            stub.replay.on("Getvar", lambda action: {"Value": "0x7feeec00beef"})
        (row,) = store.recording(live)
        assert bool(row.mixmonitor_id) is kept_id
        now = time.time()
        # The crash: marked, StopMixMonitor never sent.
        assert store.ask_stop([row.id], now=now - marked_ago) == [row.id]
        row.local_path.parent.mkdir(parents=True, exist_ok=True)
        row.local_path.write_bytes(b"RIFF" + bytes(60))
        os.utime(row.local_path, (now - written_ago, now - written_ago))
        first = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        second = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    if stopped:
        assert first.status_code == 202, first.text
        assert [s.get("MixMonitorID") for s in stops] == ["0x7feeec00ae95"]
        (after,) = store.recording(live)
        assert after.stop_asked_at is not None
        assert after.stop_asked_at > now - 5
    else:
        assert first.status_code == 409, first.text
        assert "already being stopped" in first.json()["detail"]
        assert stops == []
    # Renewed, the mark is fresh: the same id is never stopped twice in a row.
    assert second.status_code == 409, second.text
    assert len(stops) == (1 if stopped else 0)
    store.close()


async def started_with_a_stale_stop(
    client: httpx.AsyncClient, stub: StubEngine, live: str
) -> tuple[RecordingStore, Recording, float]:
    """101's recording of ``live`` started through the API, its stop asked a
    minute ago and never done, and its file written: the store, the row, now."""
    started = await client.post(
        f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": "in"}
    )
    assert started.status_code == 201, started.text
    store = RecordingStore(stub.state_dir)
    (row,) = store.recording(live)
    now = time.time()
    store.ask_stop([row.id], now=now - 60)
    row.local_path.parent.mkdir(parents=True, exist_ok=True)
    row.local_path.write_bytes(b"RIFF" + bytes(60))
    return store, row, now


@pytest.mark.parametrize("failure", ["refused", "asterisk down"])
async def test_a_failed_stop_again_of_a_stale_mark_leaves_the_mark_as_it_was(
    stub: StubEngine,
    settings: RecordingSettings,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    """The stop again of a stale mark renews it first (so that only this request
    sends it); when that stop failed (Asterisk refused it, or was out of reach) the
    renewed mark stayed, so every stop for 30 s more was 409 "already being stopped"
    while the file went on recording. Now the mark is put back as it was (compare
    and set) with one WARNING, and the next request tries again at once."""
    live = "1714557700.97"
    live_call(stub, live, {"PJSIP/101-00000097": "up"})
    stub.replay.on("MixMonitor", lambda action: {"MixMonitorID": "0x7feeec00ae97"})
    stops: list[dict[str, str]] = []

    def stop(action: object) -> dict[str, str]:
        stops.append(dict(action.fields))  # type: ignore[attr-defined]
        if failure == "refused" and len(stops) == 1:
            return {"Response": "Error", "Message": "Could not stop specified MixMonitor"}
        return {}

    stub.replay.on("StopMixMonitor", stop)
    async with client_for(stub) as client:
        store, _, now = await started_with_a_stale_stop(client, stub, live)
        if failure == "asterisk down":
            stub.connected = False
        with caplog.at_level("WARNING", logger="router.api"):
            first = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        (kept,) = store.recording(live)
        stub.connected = True
        second = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert first.status_code == (409 if failure == "refused" else 503), first.text
    assert kept.stop_asked_at == now - 60  # as it was before the renewal
    failed = [r for r in caplog.records if "stopping the API's recording again failed" in r.message]
    assert len(failed) == 1, caplog.text
    assert "the next stop tries again" in failed[0].message
    assert second.status_code == 202, second.text
    expected = 2 if failure == "refused" else 1
    assert [s.get("MixMonitorID") for s in stops] == ["0x7feeec00ae97"] * expected
    (after,) = store.recording(live)
    assert after.stop_asked_at is not None
    assert after.stop_asked_at > now - 5
    store.close()


async def test_a_stop_again_that_fails_part_way_puts_back_only_the_marks_not_stopped(
    stub: StubEngine, settings: RecordingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two API MixMonitors on the call (legs in, then legs out), both with a stale mark
    and a file still written: the stop again stopped the first and Asterisk refused
    the second. Both renewed marks were put back, so the next stop took the first for
    stale again and sent its id once more, an ended MixMonitor's (a heap address that
    may be a new one's by then). Now only the mark of the one not stopped is put back,
    and the next stop sends that one alone."""
    live = "1714557700.98"
    live_call(stub, live, {"PJSIP/101-00000098": "up"})
    first_id, second_id = "0x7fee0000aa01", "0x7fee0000aa02"
    answered = iter([first_id, second_id])
    stub.replay.on("MixMonitor", lambda action: {"MixMonitorID": next(answered)})
    stops: list[str] = []

    def stop(action: object) -> dict[str, str]:
        mixmonitor_id = dict(action.fields)["MixMonitorID"]  # type: ignore[attr-defined]
        stops.append(mixmonitor_id)
        if mixmonitor_id == second_id and stops.count(second_id) == 1:
            return {"Response": "Error", "Message": "Could not stop monitoring channel"}
        return {}

    stub.replay.on("StopMixMonitor", stop)
    async with client_for(stub) as client:
        for legs in ("in", "out"):
            started = await client.post(
                f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": legs}
            )
            assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        rows = {r.part: r for r in store.recording(live)}
        assert {p: r.mixmonitor_id for p, r in rows.items()} == {"in": first_id, "out": second_id}
        now = time.time()
        assert sorted(store.ask_stop([r.id for r in rows.values()], now=now - 60)) == sorted(
            r.id for r in rows.values()
        )
        for row in rows.values():
            row.local_path.parent.mkdir(parents=True, exist_ok=True)
            row.local_path.write_bytes(b"RIFF" + bytes(60))
        with caplog.at_level("WARNING", logger="router.api"):
            first = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        kept = {r.part: r for r in store.recording(live)}
        second = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert first.status_code == 409, first.text
    # The answer says which file the failed stop did stop: the next DELETE stops the rest.
    assert first.json()["stopped_files"] == ["in"]
    assert stops[:2] == [first_id, second_id]
    # Stopped: its renewed mark stands, and its MixMonitorStop closes it.
    assert kept["in"].stop_asked_at is not None
    assert kept["in"].stop_asked_at > now - 5
    assert kept["out"].stop_asked_at == now - 60  # refused: put back as it was
    assert "the next stop tries again" in caplog.text
    assert second.status_code == 202, second.text
    assert [f["part"] for f in second.json()["files"]] == ["out"]
    assert stops == [first_id, second_id, second_id]  # the ended one's id not sent again
    store.close()


@pytest.mark.parametrize("kept_id", [True, False])
async def test_a_stop_asterisk_answers_no_such_channel_is_a_stop_done(
    stub: StubEngine, settings: RecordingSettings, kept_id: bool
) -> None:
    """The recorded channel hung up just before the stop: Asterisk answered
    StopMixMonitor (or the Getvar of a MixMonitor without a kept id) 'No such
    channel'. That was a 409 and the marks were taken back, though the recording had
    ended with the channel; a second MixMonitor on it was not even tried. Now it is a
    stop done: 202 naming the channel, the marks kept (the channel's Hangup closes the
    files), one action for the channel, and the next stop is 'already being
    stopped' with nothing sent."""
    live = "1714557700.99"
    live_call(stub, live, {"PJSIP/101-00000099": "up"})
    call = stub.calls.get(live)
    assert call is not None
    channel = call.waiting_channel
    answered = iter(["0x7fee0000bb01", "0x7fee0000bb02"])
    stub.replay.on("MixMonitor", lambda action: {"MixMonitorID": next(answered)})
    sent: list[str] = []

    def gone(action: object) -> dict[str, str]:
        sent.append(action.name)  # type: ignore[attr-defined]
        return {"Response": "Error", "Message": "No such channel"}

    async with client_for(stub) as client:
        for legs in ("in", "out"):
            started = await client.post(
                f"/api/v1/calls/{live}/recording", headers=bearer(DESK101), json={"legs": legs}
            )
            assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        if not kept_id:  # started by an older callrouter: stopped by the channel's id
            store.set_mixmonitor_id((r.id for r in store.recording(live)), "")
        stub.replay.on("StopMixMonitor", gone)
        stub.replay.on("Getvar", gone)
        first = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        second = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert first.status_code == 202, first.text
    assert first.json()["stopped"] == [channel]
    assert sorted(f["part"] for f in first.json()["files"]) == ["in", "out"]
    assert sent == ["StopMixMonitor" if kept_id else "Getvar"]
    assert all(r.stop_asked_at is not None for r in store.recording(live))
    assert second.status_code == 409, second.text
    assert "already being stopped" in second.json()["detail"]
    assert len(sent) == 1
    store.close()


def test_a_mark_is_put_back_only_while_it_is_the_one_renewed(tmp_path: Path) -> None:
    """``unrenew_stop`` is a compare and set: a mark changed since the renewal (another
    stop's, a mark taken back) is left alone."""
    store = RecordingStore(tmp_path)
    (name,) = file_names(CALL, "in", "wav")
    (row,) = store.start(
        [name], pbx_paths=["/x/in.wav"], local_paths=[tmp_path / "in.wav"], channel="PJSIP/1-1"
    )
    store.ask_stop([row.id], now=100.0)
    assert store.renew_stop([row.id], marked_before=150.0, now=200.0) == [row.id]
    assert store.unrenew_stop({row.id: 100.0}, renewed_at=200.0) == [row.id]
    assert store.get(CALL, "in").stop_asked_at == 100.0  # type: ignore[union-attr]
    assert store.renew_stop([row.id], marked_before=150.0, now=200.0) == [row.id]
    store.renew_stop([row.id], marked_before=250.0, now=300.0)  # renewed again since
    assert store.unrenew_stop({row.id: 100.0}, renewed_at=200.0) == []
    assert store.get(CALL, "in").stop_asked_at == 300.0  # type: ignore[union-attr]
    store.close()


async def test_of_two_stops_at_once_of_a_stale_mark_only_one_stops_it_again(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """Two DELETEs at once both find the mark stale and the file written; the mark is
    renewed by one only (``RecordingStore.renew_stop``), so the kept id, which may name
    a new MixMonitor once this one ended, is sent once: the other answers 409."""
    live = "1714557700.96"
    live_call(stub, live, {"PJSIP/101-00000096": "up"})
    stub.replay.on("MixMonitor", lambda action: {"MixMonitorID": "0x7feeec00ae96"})
    stops: list[dict[str, str]] = []
    stub.replay.on("StopMixMonitor", lambda action: stops.append(dict(action.fields)) or {})
    async with client_for(stub) as client:
        store, row, now = await started_with_a_stale_stop(client, stub, live)
        answers = await asyncio.gather(
            *(
                client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
                for _ in range(2)
            )
        )
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    assert [s.get("MixMonitorID") for s in stops] == ["0x7feeec00ae96"]
    # The store's part of it: a mark renewed since is not renewed again.
    again = store.renew_stop([row.id], marked_before=now - 30, now=time.time())
    assert again == []
    store.close()


async def test_a_leg_of_an_older_call_already_bridged_in_may_read_a_recording_the_api_starts(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """103, held on an older call, was bridged with the caller and 101 before 101's
    token started recording the call: its BridgeEnter came while nothing was recorded
    and carries the older call's Linkedid, so the call's live legs (all the API's start
    counted) missed it, though it heard the whole recording. A rule's start counted it
    (Recorder.present_extensions); the API's, on the engine that serves it, does too.
    105, in another bridge of the older call, does not."""
    older, live = "1714557990.1", "1714558000.1"
    trunk, agent = "PJSIP/trunk-00000010", "PJSIP/101-00000011"
    held, other = "PJSIP/103-00000012", "PJSIP/105-00000013"
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    (tmp_path / "monitor").mkdir()
    recordings = RecordingSettings(
        dir="/var/spool/asterisk/monitor", local_dir=tmp_path / "monitor"
    )
    api = dataclasses.replace(API, port=0)  # the kernel picks a free port
    engine = await engine_factory(rules, api=api, recordings=recordings)

    def event(name: str, channel: str, linkedid: str, **fields: str) -> None:
        ajam_replay.queue_event(
            Event=name, Channel=channel, Uniqueid=channel, Linkedid=linkedid, **fields
        )

    for channel in (held, other):
        event("Newchannel", channel, older, ChannelState="6", ChannelStateDesc="Up")
    event("BridgeEnter", other, older, BridgeUniqueid="bridge-of-105", BridgeNumChannels="1")
    for channel in (trunk, agent):
        event("Newchannel", channel, live, ChannelState="6", ChannelStateDesc="Up")
    for n, channel in enumerate((trunk, agent, held), start=1):
        linkedid = older if channel == held else live
        event("BridgeEnter", channel, linkedid, BridgeUniqueid="talk", BridgeNumChannels=str(n))
    await ajam_replay.settle(engine)
    ajam_replay.on("MixMonitor", lambda action: {"MixMonitorID": "0x7feeec00ae10"})
    assert engine._api_server is not None
    port = engine._api_server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        started = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert started.status_code == 201, started.text
    (row,) = RecordingStore(engine.state_dir).for_call(live)
    assert set(row.extensions) == {"101", "103", "trunk"}


async def test_without_a_recorder_the_apis_start_counts_the_calls_live_legs(
    stub: StubEngine,
) -> None:
    """An API built without the recorder's view (a test's, a plugin's) keeps the live
    legs; with it, the phones it names beside them count too."""
    live = "1714557700.51"
    live_call(stub, live, {"PJSIP/101-00000051": "up", "PJSIP/102-00000052": "gone"})
    stub.replay.on("MixMonitor", lambda action: {})
    async with client_for(stub) as client:
        started = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
    assert started.status_code == 201, started.text
    (row,) = RecordingStore(stub.state_dir).for_call(live)
    assert set(row.extensions) == live_extensions(stub.calls.get(live))
    assert "101" in row.extensions
    assert "102" not in row.extensions

    other = "1714557700.61"
    live_call(stub, other, {"PJSIP/101-00000061": "up"})
    seen: list[str] = []

    async def present(call: Call) -> set[str]:
        seen.append(call.linkedid)
        return {"103"}

    app = build_app(ApiContext(stub, API, present=present))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        started = await client.post(f"/api/v1/calls/{other}/recording", headers=bearer(DESK101))
    assert started.status_code == 201, started.text
    assert seen == [other]
    (row,) = RecordingStore(stub.state_dir).for_call(other)
    assert set(row.extensions) == live_extensions(stub.calls.get(other)) | {"103"}
    assert "101" in row.extensions


async def test_the_token_that_started_a_recording_stops_it_after_its_call_ended(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """An attended transfer into an application renames the recorded channel
    into another call, and the call the recording began in ends while the
    MixMonitor goes on: the stop answered 404 (no such call), so only
    max_duration ended it. Now the token that started it stops it by the old
    call's id; no other desk may (no leg of theirs is on a call that ended)."""
    live = "1714557700.77"
    live_call(stub, live, {"PJSIP/101-00000077": "up"})
    call = stub.calls.get(live)
    assert call is not None
    inbound = call.waiting_channel
    stub.replay.on("MixMonitor", lambda action: {"MixMonitorID": "0x7fee0000cc01"})
    stopped: list[dict[str, str]] = []
    stub.replay.on("StopMixMonitor", lambda action: stopped.append(dict(action.fields)) or {})
    async with client_for(stub) as client:
        started = await client.post(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        assert started.status_code == 201, started.text
        store = RecordingStore(stub.state_dir)
        (row,) = store.recording(live)
        store.rename_channel(row.channel, "PJSIP/102-00000078")  # followed by the recorder
        for channel in (inbound, "PJSIP/101-00000077"):
            uniqueid = live if channel == inbound else f"{live}0"
            stub.calls.feed(make_event("Hangup", Channel=channel, Uniqueid=uniqueid, Linkedid=live))
        assert stub.calls.get(live) is None  # the call ended; its recording did not
        others = [await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK102))]
        own = await client.delete(f"/api/v1/calls/{live}/recording", headers=bearer(DESK101))
        unknown = await client.delete(
            "/api/v1/calls/1714557700.78/recording", headers=bearer(DESK101)
        )
    for refused in (*others, unknown):
        assert refused.status_code == 404, refused.text
    assert own.status_code == 202, own.text
    assert own.json()["stopped"] == ["PJSIP/102-00000078"]
    assert [f["part"] for f in own.json()["files"]] == ["mix"]
    assert [(s.get("Channel"), s.get("MixMonitorID")) for s in stopped] == [
        ("PJSIP/102-00000078", "0x7fee0000cc01")
    ]
    store.close()


async def test_a_token_for_every_extension_stops_an_ended_calls_api_recording(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """The supervisor's ``"*"`` sees every recording and could stop any on a
    live call; on a call that ended with its recording going on it got 404, so
    a desk's forgotten recording ran to max_duration. Now it stops the API's
    files of that call, whichever token started them; a rule's goes on."""
    ended = "1714557799.21"
    store = RecordingStore(stub.state_dir)
    for part, origin, channel, monitor in (
        ("in", Origin("api", "token desk101 (101)"), "PJSIP/102-000000a1", "0x7fee0000ee01"),
        ("out", Origin("rule", "record-sales"), "PJSIP/103-000000a2", "0x7fee0000ee02"),
    ):
        (name,) = file_names(ended, part, "wav")
        rows = store.start(
            [name],
            pbx_paths=[settings.pbx_path(name)],
            local_paths=[settings.local_path(name)],
            channel=channel,
            extensions=["101"],
            origin=origin,
        )
        store.set_mixmonitor_id([r.id for r in rows], monitor)
    stopped: list[tuple[str | None, str | None]] = []
    stub.replay.on(
        "StopMixMonitor",
        lambda a: (
            stopped.append((dict(a.fields).get("Channel"), dict(a.fields).get("MixMonitorID")))
            or {}
        ),
    )
    async with client_for(stub) as client:
        desk = await client.delete(f"/api/v1/calls/{ended}/recording", headers=bearer(DESK102))
        admin = await client.delete(f"/api/v1/calls/{ended}/recording", headers=bearer(ADMIN))
    assert desk.status_code == 404, desk.text
    assert admin.status_code == 202, admin.text
    assert admin.json()["stopped"] == ["PJSIP/102-000000a1"]
    assert stopped == [("PJSIP/102-000000a1", "0x7fee0000ee01")]
    store.close()


async def test_a_stop_after_the_call_ended_never_names_another_tokens_mixmonitor(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """Two tokens' recordings of a call that ended, on one channel, with no kept
    MixMonitor id (an older callrouter's, or an Asterisk that does not answer one).
    The stop of one token's was sent by the channel's newest callrouter id, which
    may be the other token's: desk101 stopped desk102's recording. Now it is 409
    and nothing is sent; desk102's own stop, the newest, is refused the same way."""
    ended = "1714557799.01"
    store = RecordingStore(stub.state_dir)
    for part, by in (("in", "token desk101 (101)"), ("out", "token desk102 (102)")):
        (name,) = file_names(ended, part, "wav")
        store.start(
            [name],
            pbx_paths=[settings.pbx_path(name)],
            local_paths=[settings.local_path(name)],
            channel="PJSIP/102-00000099",
            extensions=["101", "102"],
            origin=Origin("api", by),
        )
    sent: list[str] = []
    for action in ("Getvar", "StopMixMonitor"):
        stub.replay.on(action, lambda a: sent.append(a.name) or {"Value": "0x7fee0000dd02"})
    async with client_for(stub) as client:
        refused = [
            await client.delete(f"/api/v1/calls/{ended}/recording", headers=bearer(text))
            for text in (DESK101, DESK102)
        ]
    for answer in refused:
        assert answer.status_code == 409, answer.text
        assert "cannot be stopped alone" in answer.json()["detail"]
    assert sent == []
    assert all(r.stop_asked_at is None for r in store.recording(ended))
    store.close()


async def test_the_stops_404_costs_the_same_for_no_call_and_a_call_not_seen(
    stub: StubEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop of a call that ended reads the catalog before its 404; that of a
    live call the token may not see answered 404 without it. The two 404s said
    the same, but the catalog's read (a SQLite query under a lock) made the one
    for no call slower: its time told an id in progress from one that is not.
    Now both read it once."""
    live = "1714557700.98"
    live_call(stub, live, {"PJSIP/101-00000098": "up"})
    reads: list[str | None] = []
    real = RecordingStore.recording

    def counted(self: RecordingStore, call_id: str | None = None) -> list[object]:
        reads.append(call_id)
        return real(self, call_id)  # type: ignore[return-value]

    monkeypatch.setattr(RecordingStore, "recording", counted)
    async with client_for(stub) as client:
        answers = []
        for call_id in (live, "1714557700.99"):
            reads.clear()
            answer = await client.delete(
                f"/api/v1/calls/{call_id}/recording", headers=bearer(DESK102)
            )
            answers.append((answer.status_code, reads.count(call_id)))
    assert answers == [(404, 1), (404, 1)]


async def test_without_public_url_the_listing_has_no_link(
    tmp_path: Path, stub: StubEngine, settings: RecordingSettings
) -> None:
    """The link is built on ``[recordings] public_url``; without it ``url`` is
    null and the file is fetched with the token, as docs/api.md now says: it
    promised a signed link in every listing, and a 1C developer following it
    found ``"url": null`` (issue 16)."""
    bare = dataclasses.replace(settings, public_url=None)
    config = dataclasses.replace(stub.config, recordings=bare)
    engine = StubEngine(state_dir=stub.state_dir, config=config)
    try:
        async with client_for(engine) as client:
            listing = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK101))
            fetched = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(DESK101))
    finally:
        await engine.aclose()
    (entry,) = listing.json()["files"]
    assert entry["url"] is None
    assert fetched.content == AUDIO
    for page in ("api.md", "ru/api.md"):
        text = (Path(__file__).parents[3] / "docs" / page).read_text(encoding="utf-8")
        after_link = text[text.index("`[recordings] url_ttl`") :]
        assert "`[recordings] public_url`" in after_link[:300], page


async def test_a_file_deleted_by_hand_is_404_and_listed_missing_with_one_warning(
    stub: StubEngine, settings: RecordingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a recording deleted by hand stayed ``closed`` (or ``delivered``) in
    the listing, with a link that answered 404, and nothing said why."""
    (name,) = file_names(CALL, "mix", "wav")
    settings.local_path(name).unlink()
    (settings.local_dir / "1714557601.7-mix.wav").write_bytes(b"x")  # another call's, still there
    caplog.set_level("WARNING", logger="router.recordings")
    path = f"/api/v1/recordings/{CALL}/mix"
    async with client_for(stub) as client:
        first = await client.get(path, headers=bearer(DESK101))
        again = await client.get(path, headers=bearer(DESK101))
        listing = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK101))
    assert (first.status_code, again.status_code) == (404, 404)
    (entry,) = listing.json()["files"]
    assert entry["state"] == "missing"
    assert entry["url"] is None
    assert entry["note"] == (
        f"the file {settings.local_path(name)} is gone (found by a download); it was closed"
    )
    warned = [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]
    assert len(warned) == 1
    assert f"{settings.local_path(name)} is gone (deleted outside callrouter" in warned[0]


async def test_a_file_of_a_folder_left_empty_is_404_and_not_marked_missing(
    stub: StubEngine, settings: RecordingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """hreview48b: an NFS share not mounted leaves its mount point, the recordings'
    folder, there and empty. A download then marked each file it asked for
    ``missing`` for good: never served nor sent once the share was mounted again.
    Retention, which sees the whole folder, decides about those."""
    (name,) = file_names(CALL, "mix", "wav")
    settings.local_path(name).unlink()
    caplog.set_level("WARNING", logger="router.recordings")
    async with client_for(stub) as client:
        fetched = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(DESK101))
        listing = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK101))
    assert fetched.status_code == 404
    assert listing.json()["files"][0]["state"] == "closed"
    assert "is gone" not in caplog.text


async def test_a_file_whose_folder_is_gone_is_404_and_not_marked_missing(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """A folder gone altogether is a mount gone, not a file deleted: it may come back."""
    (name,) = file_names(CALL, "mix", "wav")
    settings.local_path(name).unlink()
    settings.local_dir.rmdir()
    async with client_for(stub) as client:
        fetched = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(DESK101))
        listing = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK101))
    assert fetched.status_code == 404
    assert listing.json()["files"][0]["state"] == "closed"


async def test_an_empty_recording_is_listed_with_its_state_and_served(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """Issue 16: a call nobody answered has a WAV of no sound, ``empty``: never sent
    to 1C, still the call's file for a token that may read it."""
    store = RecordingStore(stub.state_dir)
    store._db.execute("UPDATE recordings SET state = 'empty', note = 'no sound (0 s): not sent'")
    store.close()
    async with client_for(stub) as client:
        listing = await client.get(f"/api/v1/recordings/{CALL}", headers=bearer(DESK101))
        fetched = await client.get(f"/api/v1/recordings/{CALL}/mix", headers=bearer(DESK101))
    (entry,) = listing.json()["files"]
    assert (entry["state"], entry["note"]) == ("empty", "no sound (0 s): not sent")
    assert entry["url"] is None  # a signed link is 1C's, and 1C wants no empty file
    assert fetched.status_code == 200
    assert fetched.content == AUDIO


async def test_a_signed_link_to_an_empty_recording_is_404_saying_so(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """Issue 16: pull mode hands 1C a link in the call's hang-up, while the file is
    still being written; once it proves a WAV of no sound (a missed call's), that
    link served 1C the empty recording it does not want."""
    url = link(stub, settings)
    store = RecordingStore(stub.state_dir)
    store._db.execute("UPDATE recordings SET state = 'empty', note = 'no sound (0 s): not sent'")
    store.close()
    async with client_for(stub) as client:
        response = await client.get(url)
    assert response.status_code == 404
    assert response.json()["detail"] == (f"recording {CALL!r} has no sound (empty): not sent to 1C")


async def test_a_file_still_being_recorded_is_409_saying_so_not_404(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """A session's trial of issue 16: a recording still being written downloaded as
    404, read as "no such recording". It is 409, the problem naming its state,
    for a token or a link that may read it; one that may not still gets the 404."""
    live = "1714557800.5"
    catalog(stub, settings, live, Origin("rule", "compliance"))
    signed = recording_signer(settings, stub.state_dir).url("http://t", live, "mix", 300)
    async with client_for(stub) as client:
        own = await client.get(f"/api/v1/recordings/{live}/mix", headers=bearer(DESK101))
        by_link = await client.get(signed.removeprefix("http://t"))
        other = await client.get(f"/api/v1/recordings/{live}/mix", headers=bearer(DESK102))
        listing = await client.get(f"/api/v1/recordings/{live}", headers=bearer(DESK101))
    for answer in (own, by_link):
        assert answer.status_code == 409, answer.text
        problem = answer.json()
        assert problem["state"] == "recording"
        assert "still being recorded" in problem["detail"]
    assert other.status_code == 404
    (entry,) = listing.json()["files"]
    assert (entry["state"], entry["url"]) == ("recording", None)


#: test_api_calls.py's click-to-call dialing, without its channel variable.
DIALING = dataclasses.replace(CALLS_DIALING, variables=MappingProxyType({}))
#: Tokens that place, read and record calls and read recordings, for 101 and for 102.
PHONE101, PHONE102 = new_token(), new_token()
_PHONES = ("calls:create", "calls:read", "calls:record", "recordings:read")


async def test_an_ended_click_to_call_is_answered_as_ended_not_as_no_call(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """A session's trial of issue 16: once a click-to-call ended, GET /calls/{id}
    showed it ``ended`` while its recording endpoints answered 404 "no call ...
    that this token may see". Now the start and the stop are 409 with
    ``"state": "ended"``, the listing and the download a 404 saying the call has
    no recording this token may read; a recording made of it is listed and served;
    a token that does not see the call gets the 404 of no call, as before."""
    phones = (
        token("phone101", PHONE101, _PHONES, ("101",)),
        token("phone102", PHONE102, _PHONES, ("102",)),
    )
    api = ApiSettings(tokens={t.name: t for t in phones}, dialing=DIALING)
    stub.replay.on("Originate", lambda action: {})
    app = build_app(ApiContext(stub, api))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        placed = await client.post(
            "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=bearer(PHONE101)
        )
        call_id = placed.json()["id"]
        leg = {"Channel": "PJSIP/101-00000001", "Uniqueid": call_id, "Linkedid": call_id}
        for event in (
            make_event("Newchannel", ChannelStateDesc="Up", Context="outbound", **leg),
            make_event("Hangup", Cause="16", **leg),
        ):
            call = stub.calls.feed(event)
            for listener in stub.listeners:
                listener(event, call)
        shown = await client.get(f"/api/v1/calls/{call_id}", headers=bearer(PHONE101))
        start = await client.post(f"/api/v1/calls/{call_id}/recording", headers=bearer(PHONE101))
        stop = await client.delete(f"/api/v1/calls/{call_id}/recording", headers=bearer(PHONE101))
        listing = await client.get(f"/api/v1/recordings/{call_id}", headers=bearer(PHONE101))
        fetch = await client.get(f"/api/v1/recordings/{call_id}/mix", headers=bearer(PHONE101))
        other = [
            await client.request(method, path, headers=bearer(PHONE102))
            for method, path in (
                ("POST", f"/api/v1/calls/{call_id}/recording"),
                ("DELETE", f"/api/v1/calls/{call_id}/recording"),
                ("GET", f"/api/v1/recordings/{call_id}"),
            )
        ]
        # Recorded while it lasted (101 on it): listed and served after its end.
        closed_file(stub.state_dir, settings, call_id, "PJSIP/101-00000001")
        recorded = await client.get(f"/api/v1/recordings/{call_id}", headers=bearer(PHONE101))
        served = await client.get(f"/api/v1/recordings/{call_id}/mix", headers=bearer(PHONE101))
    assert placed.status_code == 201, placed.text
    assert shown.json()["state"] == "ended"
    for answer in (start, stop):
        assert answer.status_code == 409, answer.text
        assert answer.json()["state"] == "ended"
        assert f"call {call_id!r} has ended" in answer.json()["detail"]
    for answer in (listing, fetch):
        assert answer.status_code == 404
        assert answer.json()["detail"].startswith(
            f"call {call_id!r} has no recording this token may read"
        )
    assert [answer.status_code for answer in other] == [404, 404, 404]
    assert "no call" in other[0].json()["detail"]
    assert "no call" in other[1].json()["detail"]
    assert other[2].json()["detail"] == f"no recording {call_id!r} that this request may fetch"
    assert recorded.status_code == 200
    assert [f["part"] for f in recorded.json()["files"]] == ["mix"]
    assert served.content == AUDIO


# -- signed links and the rate per client address ------------------------------------


def test_the_listener_takes_a_signed_link_only_in_the_form_fetch_serves_it(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """router.api.recordings.signed_link: what the listener checks before the
    rate per address (issue 16). A valid, unexpired link's GET or HEAD, and
    nothing else: the signature is the signer's own check."""
    signer = recording_signer(settings, stub.state_dir)
    good = link(stub, settings).encode()
    assert signed_link(b"GET", good, signer.verify)
    assert signed_link(b"HEAD", good, signer.verify)
    path, _, query = good.partition(b"?")
    expires, sig = (item.split(b"=")[1] for item in query.split(b"&"))
    tampered = sig[:-1] + (b"0" if sig[-1:] != b"0" else b"1")
    expired = link(stub, settings, ttl=60, now=time.time() - 3600).encode()
    other_part = path.removesuffix(b"mix") + b"in?" + query
    for method, target in (
        (b"POST", good),
        (b"DELETE", good),
        (b"GET", path + b"?expires=" + expires + b"&sig=" + tampered),
        (b"GET", path + b"?expires=" + expires + b"&sig=" + sig.upper()),
        (b"GET", path + b"?expires=0" + expires + b"&sig=" + sig),
        (b"GET", expired),
        (b"GET", other_part),
        (b"GET", path),
        (b"GET", path + b"?sig=" + sig),
        (b"GET", good + b"&x=1"),
        (b"GET", good + b"&sig=" + sig),
        (b"GET", good + b"#"),
        (b"GET", path.replace(b"1714557600.42", b"1714557600%2E42") + b"?" + query),
        (b"GET", path + b"/?" + query),
        (b"GET", b"/api/v1/recordings/../recordings/" + path.rsplit(b"/", 2)[1] + b"/mix?" + query),
        (b"GET", b"http://t" + good),
        (b"GET", good + b"&" + b"x" * 5000),
        (b"GET", good.replace(b"mix", "mіx".encode())),
        (b"GET", b"/healthz"),
        (b"GET", b""),
    ):
        assert not signed_link(method, target, signer.verify), (method, target)


async def test_signed_links_from_one_address_are_each_counted_by_themselves(
    stub: StubEngine, settings: RecordingSettings
) -> None:
    """1C in pull mode fetches each recording by its signed link, with no token:
    after an outage, a hundred at once from one address. Counted against
    ``[api] anonymous_rate`` they got 429 past the burst (here 3); now each
    valid link is counted in a bucket of its own, so a hundred links are
    served (404 for the calls with no recording here), while a
    hundred links with a bogus signature are still limited: the burst's 403s,
    then 429 (issue 16). hreview49: a valid link was not counted at all, so one
    leaked link (valid for ``url_ttl``) was served as often as one address
    asked; past its own burst it is 429 too."""
    api = dataclasses.replace(
        API, port=0, anonymous_rate=0.001, anonymous_burst=3, anonymous_loopback=True
    )
    server = ApiServer(build_app(ApiContext(stub, api)), api)
    await server.start()
    signer = recording_signer(settings, stub.state_dir)
    try:
        good = link(stub, settings)
        request = f"GET {good} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            statuses = []
            for _ in range(100):
                writer.write(request)
                head, body = await _answer_of(reader)
                statuses.append(head.split(b" ", 2)[1])
                if statuses[-1] != b"200":
                    break  # a 429: nothing more is read from this connection
                assert body == AUDIO
        finally:
            writer.close()
        assert statuses == [b"200"] * 3 + [b"429"]  # the link's own burst
        # Other links from the same address: each its own bucket (the calls
        # have no recording here: 404, not 429).
        statuses = []
        for n in range(100, 199):
            target = signer.url("http://t", f"1714557600.{n}", "mix", 300)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(
                    f"GET {target.removeprefix('http://t')} HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\n\r\n".encode()
                )
                statuses.append((await _answer_of(reader))[0].split(b" ", 2)[1])
            finally:
                writer.close()
        assert statuses == [b"404"] * 99
        bogus = good[: -len("0")] + ("1" if good[-1] == "0" else "0")
        request = f"GET {bogus} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        statuses = []
        for _ in range(100):
            # Each on its own connection: one answered 429 is not read until
            # its Retry-After (router.api.protocol).
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                writer.write(request)
                statuses.append((await _answer_of(reader))[0].split(b" ", 2)[1])
            finally:
                writer.close()
        assert statuses == [b"403"] * 3 + [b"429"] * 97
    finally:
        await server.stop()


async def _answer_of(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer's head and body (by its Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)
