"""The API's download of a recording still being written, on a live call (issue 16).

docs/api.md and docs/recordings.md say a file still being written is ``409`` with
``"state": "recording"`` to a token or a signed link that may read it, never served cut
short nor answered as missing, and is served once the call ends and the file is closed.
The unit tests say so of a catalog row; here Asterisk writes the file: a real call of
the sandbox's phones, recorded by a rule, asked for while the two still talk.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from callrouter_onec.double import OneCDouble

from router.api.auth import hash_token
from router.config import load_config
from router.recordings import recording_signer
from router.recordings.store import RecordingStore
from router.sandbox import listen_port
from router.sandbox.phones import Phones
from tests.integration._live import start_engine, stop_engine, until
from tests.integration.test_recordings_e2e import answered, file_closed, grown, hang_up, make_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_double")]


async def test_a_recording_still_being_written_is_409_to_a_reader_and_served_once_closed(
    phones: Phones, double: OneCDouble, tmp_path: Path, tone: Path
) -> None:
    """While the call talks: the listing says ``recording`` with no link; the
    download (GET and HEAD) by the agent's token and by a signed link is 409
    with ``"state": "recording"``; a token of an extension never on the call
    gets the 404 of no recording. After the hang-up the file closes and the
    same download is the whole WAV."""
    state = tmp_path / "state"
    make_config(phones, double, state)
    port = listen_port()
    toml = state.parent / "router.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8")
        + f'[api]\nlisten = "127.0.0.1:{port}"\n'
        + "".join(
            f'[api.tokens.t{ext}]\nhash = "{hash_token("secret-" + ext)}"\n'
            f'allow = ["recordings:read"]\nextensions = ["{ext}"]\n'
            for ext in ("101", "102")
        ),
        encoding="utf-8",
    )
    config = load_config(toml)
    assert config.recordings is not None
    engine, task = await start_engine(config, ready_timeout=20)
    store = RecordingStore(state)
    agent = {"Authorization": "Bearer secret-101"}
    stranger = {"Authorization": "Bearer secret-102"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            call = await answered(phones, tone)
            (live,) = list(engine.tracker)
            linkedid = live.linkedid
            (row,) = store.recording(linkedid)
            await grown(row.local_path, 44, "the live call's file being written")
            listing = await http.get(f"/api/v1/recordings/{linkedid}", headers=agent)
            assert listing.status_code == 200, listing.text
            (listed,) = listing.json()["files"]
            assert (listed["state"], listed["url"], listed["size"]) == ("recording", None, None)
            path = f"/api/v1/recordings/{linkedid}/mix"
            got = await http.get(path, headers=agent)
            head = await http.head(path, headers=agent)
            signer = recording_signer(config.recordings, state)
            link = signer.url("", linkedid, "mix", 60).removeprefix("/")
            by_link = await http.get("/" + link)
            other = await http.get(path, headers=stranger)
            print(
                "while talking:",
                [(r.request.method, r.status_code) for r in (got, head, by_link, other)],
            )
            for answer in (got, by_link):
                assert answer.status_code == 409, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                problem = answer.json()
                assert problem["state"] == "recording", problem
                assert "is still being recorded" in problem["detail"], problem
            assert head.status_code == 409
            assert head.content == b""
            assert other.status_code == 404, other.text
            await hang_up(call)
            await until(lambda: file_closed(store.get(linkedid, "mix")), 30, "the file closed")
            served = await http.get(path, headers=agent)
            assert served.status_code == 200, served.text
            assert served.headers["content-type"] == "audio/wav"
            assert served.content[:4] == b"RIFF"
            closed = store.get(linkedid, "mix")
            assert closed is not None
            assert len(served.content) == closed.size
            print("closed:", served.status_code, len(served.content), "bytes")
    finally:
        store.close()
        await stop_engine(engine, task)
