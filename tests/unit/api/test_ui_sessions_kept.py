"""The live page's sessions outlive a restart of callrouter (issue 16).

Each "start" is a new app over the same ``state_dir`` (what a restart is to
the API: router/api/session_store.py). Before, the signing key lived only in
memory, so every restart signed every operator out.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from router.api.app import build_app
from router.api.auth import hash_token
from router.api.context import ApiContext
from router.api.live import LiveRing
from router.api.session import COOKIE, Sessions
from router.api.session_store import FILE_NAME, SessionStore
from router.api.settings import ApiSettings, TokenSettings
from router.cli import main
from router.errors import StateFileDenied
from router.staterestore import lock_state_folder
from router.testing import StubEngine

VIEWER = "cr_viewer-token"
OTHER = "cr_other-viewer-token"
UI = {"X-Callrouter-UI": "1"}


def token(name: str, text: str) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=("ui:read",),
        extensions=("*",),
        rate=1000,
        burst=1000,
    )


def settings(*tokens: TokenSettings) -> ApiSettings:
    chosen = tokens or (token("viewer", VIEWER), token("other", OTHER))
    return ApiSettings(tokens={t.name: t for t in chosen})


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


def start(stub: StubEngine, api: ApiSettings | None = None) -> Starlette:
    """One run of callrouter's API over ``stub``'s state_dir."""
    return build_app(ApiContext(stub, api or settings()))


def browser(app: Starlette, cookie: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api.test",
        cookies={COOKIE: cookie} if cookie else None,
    )


async def signed_in(app: Starlette, cookie: str) -> bool:
    async with browser(app, cookie) as page:
        answer = await page.get("/ui/session")
    assert answer.status_code == 200
    result: bool = answer.json()["signed_in"]
    return result


async def sign_in(app: Starlette, text: str = VIEWER) -> str:
    async with browser(app) as page:
        answer = await page.post("/ui/login", json={"token": text}, headers=UI)
        assert answer.status_code == 200, answer.text
        return page.cookies[COOKIE]


async def test_a_session_outlives_a_restart(
    stub: StubEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's cookie from before a restart is valid after it: the page
    reconnects (its stream) without a sign-in."""
    monkeypatch.setattr("router.api.ui.STREAM_LIFETIME", 0.3)
    cookie = await sign_in(start(stub))
    again = build_app(ApiContext(stub, settings(), live=LiveRing(stub)))
    assert await signed_in(again, cookie)
    async with browser(again, cookie) as page:
        stream = await page.get("/ui/stream")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["set-cookie"].startswith(f"{COOKIE}=")  # renewed


async def test_the_key_file_is_0600_and_no_secret_elsewhere(stub: StubEngine) -> None:
    old = os.umask(0o022)
    try:
        start(stub)
    finally:
        os.umask(old)
    path = stub.state_dir / FILE_NAME
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert len(bytes.fromhex(json.loads(path.read_text())["key"])) == 32
    # Written under a temporary name and renamed: none is left behind.
    assert sorted(p.name for p in stub.state_dir.iterdir()) == [FILE_NAME]


async def test_a_sign_out_holds_across_a_restart(stub: StubEngine) -> None:
    """A copy of a signed-out cookie does not come back to life with a
    restart; the other sessions stay valid."""
    first = start(stub)
    cookie = await sign_in(first)
    other = await sign_in(first, OTHER)
    async with browser(first, cookie) as page:
        assert (await page.post("/ui/logout", headers=UI)).status_code == 200
    again = start(stub)
    assert not await signed_in(again, cookie)
    assert await signed_in(again, other)


async def test_a_token_removed_or_replaced_ends_its_sessions_at_the_restart(
    stub: StubEngine,
) -> None:
    """The cookie names the token and is signed over its hash: the key kept
    does not keep a session of a token router.toml no longer has."""
    first = start(stub)
    cookie = await sign_in(first)
    other = await sign_in(first, OTHER)
    removed = start(stub, settings(token("other", OTHER)))
    assert not await signed_in(removed, cookie)
    assert await signed_in(removed, other)
    replaced = start(stub, settings(token("viewer", "cr_a-new-token"), token("other", OTHER)))
    assert not await signed_in(replaced, cookie)
    # Put back as it was: the cookie is the token's again (same name, same hash).
    assert await signed_in(start(stub), cookie)


async def test_removing_the_file_signs_everyone_out(stub: StubEngine) -> None:
    cookie = await sign_in(start(stub))
    (stub.state_dir / FILE_NAME).unlink()
    assert not await signed_in(start(stub), cookie)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o660])
async def test_a_key_file_others_may_read_refuses_the_start(stub: StubEngine, mode: int) -> None:
    start(stub)
    path = stub.state_dir / FILE_NAME
    before = path.read_bytes()
    path.chmod(mode)
    with pytest.raises(StateFileDenied, match=rf"{FILE_NAME}.*mode {mode:04o}.*chmod 600"):
        start(stub)
    assert path.read_bytes() == before  # left as it is


async def test_a_link_at_the_name_is_refused_not_followed(stub: StubEngine, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "key"
    (stub.state_dir / FILE_NAME).symlink_to(target)
    with pytest.raises(StateFileDenied, match="symbolic link"):
        start(stub)
    assert not target.exists()  # nothing written through the link


async def test_a_folder_at_the_name_is_refused(stub: StubEngine) -> None:
    (stub.state_dir / FILE_NAME).mkdir(mode=0o700)
    with pytest.raises(StateFileDenied, match="not a regular file"):
        start(stub)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"version": 1, "key": "abcd"}',
        b'{"version": 2, "key": "' + b"00" * 32 + b'"}',
        b'{"version": 1, "key": "' + b"00" * 32 + b'", "revoked": {"viewer": {"x": "1"}}}',
    ],
)
async def test_a_damaged_file_is_set_aside_and_a_new_key_made(
    stub: StubEngine, body: bytes
) -> None:
    path = stub.state_dir / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, body)
    os.close(fd)
    app = start(stub)
    assert (stub.state_dir / f"{FILE_NAME}.bad").read_bytes() == body
    kept: Any = json.loads(path.read_text())
    assert kept["version"] == 1
    assert await signed_in(app, await sign_in(app))


async def test_a_key_file_of_another_user_refuses_the_start(
    stub: StubEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(stub)
    owner = (stub.state_dir / FILE_NAME).stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(StateFileDenied, match=rf"belongs to uid {owner}, not to callrouter's"):
        start(stub)


# -- callrouter ui sign-out-all -------------------------------------------------------


async def test_sign_out_all_makes_a_new_key_at_the_next_start(
    stub: StubEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    cookie = await sign_in(start(stub))
    assert main(["ui", "sign-out-all", "--state-dir", str(stub.state_dir)]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (stub.state_dir / FILE_NAME).exists()
    again = start(stub)
    assert not await signed_in(again, cookie)
    assert await signed_in(again, await sign_in(again))
    # Nothing to remove: said, not an error.
    (stub.state_dir / FILE_NAME).unlink()
    assert main(["ui", "sign-out-all", "--state-dir", str(stub.state_dir)]) == 0
    assert "no page is signed in" in capsys.readouterr().out


async def test_sign_out_all_is_refused_while_callrouter_runs(
    stub: StubEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running callrouter keeps the key in memory: removing the file would
    sign nobody out until its next start, so it is refused, changing nothing."""
    cookie = await sign_in(start(stub))
    lock = lock_state_folder(stub.state_dir, key="[router] state_dir", where="router.toml:2")
    try:
        assert main(["ui", "sign-out-all", "--state-dir", str(stub.state_dir)]) == 1
    finally:
        os.close(lock)
    err = capsys.readouterr().err
    assert err.startswith("callrouter ui sign-out-all: error:")
    assert "stop callrouter first" in err
    assert await signed_in(start(stub), cookie)


def test_sign_out_all_reads_router_tomls_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    SessionStore(state).load()
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "u"\n'
        f'secret = "s"\n\n[router]\nstate_dir = "{state}"\n',
        encoding="utf-8",
    )
    assert main(["ui", "sign-out-all", "--config", str(config)]) == 0, capsys.readouterr()
    assert not (state / FILE_NAME).exists()


def test_sign_outs_past_the_bound_are_kept_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_REVOKED a Sign out voids every session of its token made until
    then: that is kept across a restart as well."""
    monkeypatch.setattr("router.api.session.MAX_REVOKED", 2)
    api = settings()
    viewer = api.tokens["viewer"]
    now = [1_800_000_000.0]
    first = Sessions(api, store=SessionStore(tmp_path), clock=lambda: now[0])
    made = [first.issue(viewer) for _ in range(4)]
    for _, session in made[:3]:
        first.revoke(session)
    now[0] += 1
    again = Sessions(api, store=SessionStore(tmp_path), clock=lambda: now[0])
    assert all(again.check(value) is None for value, _ in made)
    value, _ = again.issue(viewer)  # a login after the void mark
    assert again.check(value) is not None


def test_a_sign_out_that_cannot_be_written_still_ends_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    api = settings()
    sessions = Sessions(api, store=SessionStore(tmp_path))
    value, session = sessions.issue(api.tokens["viewer"])

    def full(self: SessionStore, state: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SessionStore, "save", full)
    sessions.revoke(session)
    assert sessions.check(value) is None
    assert "the sign-out holds until callrouter restarts" in caplog.text
