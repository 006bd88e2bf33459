"""``callrouter run`` waits at start for an Asterisk that does not answer
(``EngineOptions.wait_for_asterisk``, issue 16), but not for what waiting
does not mend, and not once it is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from router.config import AsteriskSettings
from router.engine import Engine, EngineOptions
from router.errors import AMIConnectionError
from router.plugins import Plugins
from router.testing.builders import make_config
from tests.unit import tls_files
from tests.unit.client_stub import EVERYONE, ClientStub
from tests.unit.tls_files import listening


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    return tls_files.self_signed(tmp_path).server_context()


def engine_at(tmp_path: Path, url: str, client: Any = None, auth: str = "cookie") -> Engine:
    rules = tmp_path / "rules.yaml"
    rules.write_text(EVERYONE, encoding="utf-8")
    config = make_config(state_dir=tmp_path / "state")
    config = replace(
        config,
        asterisk=AsteriskSettings(url=url, username="router", secret="s3cret", auth=auth),
        router=replace(config.router, rules=(rules,)),
    )
    return Engine(
        config,
        plugins=Plugins.load(),
        client=client,
        options=EngineOptions(watch_interval=0, live_heartbeat=0, wait_for_asterisk=True),
    )


@pytest.mark.parametrize(
    ("scheme", "auth"), [("tls", "plain"), ("https", "cookie"), ("https", "digest")]
)
async def test_an_untrusted_certificate_stops_the_start_at_once(
    tmp_path: Path, self_signed: ssl.SSLContext, scheme: str, auth: str
) -> None:
    """A certificate callrouter does not trust is a setting to change
    (``verify``), not an Asterisk still starting: ``callrouter run`` exits
    with the message naming it, as before it waited for Asterisk; it waited
    for ever, a WARNING a minute."""
    async with listening(self_signed) as port:
        path = "/asterisk" if scheme == "https" else ""
        engine = engine_at(tmp_path, f"{scheme}://127.0.0.1:{port}{path}", auth=auth)
        try:
            with pytest.raises(AMIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.wait_for(engine.start(), 5)
        finally:
            await engine.stop()


async def test_a_tls_url_at_a_plain_port_stops_the_start_at_once(tmp_path: Path) -> None:
    """tls:// at a port that answers in plain text: the hint (use tcp://, or
    the tlsbindaddr port) is the exit message, not a WARNING a minute."""

    async def banner(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        await writer.drain()
        writer.close()

    async with listening(None, banner) as port:
        engine = engine_at(tmp_path, f"tls://127.0.0.1:{port}")
        try:
            with pytest.raises(AMIConnectionError, match="this port does not speak TLS"):
                await asyncio.wait_for(engine.start(), 5)
        finally:
            await engine.stop()


async def test_callrouter_run_exits_with_the_starts_tls_error(
    tmp_path: Path, self_signed: ssl.SSLContext
) -> None:
    """``callrouter run`` (``_serve``) passes an untrusted certificate on as
    its error. It took the stop that follows a failed start for a stop
    signal and exited 0 with no message: a new tls:// setup looked as if
    callrouter had started and quit (docs/operations.md: it stops "with the
    message that says so")."""
    from router.commands.run import _serve

    async with listening(self_signed) as port:
        engine = engine_at(tmp_path, f"tls://127.0.0.1:{port}", auth="plain")
        with pytest.raises(AMIConnectionError, match="the certificate is not trusted"):
            await asyncio.wait_for(_serve(engine), 5)


async def test_callrouter_run_stopped_while_waiting_exits_0(tmp_path: Path) -> None:
    """SIGTERM while the start waits for Asterisk is a clean stop: exit 0."""
    from router.commands.run import _serve

    client = Away()
    engine = engine_at(tmp_path, "tcp://pbx:5038", client)
    serving = asyncio.ensure_future(_serve(engine))
    try:
        await asyncio.wait_for(client.tried.wait(), 2)
        engine.request_stop()
        assert await asyncio.wait_for(serving, 2) == 0
    finally:
        serving.cancel()


class Away(ClientStub):
    """An Asterisk that does not answer: each login fails."""

    logged_in = False

    def __init__(self) -> None:
        self.logins = 0
        self.tried = asyncio.Event()

    async def login(self) -> None:
        self.logins += 1
        self.tried.set()
        raise AMIConnectionError(
            "cannot log in to tcp://pbx:5038 as 'router': cannot connect: connection refused"
        )


@pytest.mark.parametrize(
    ("scheme", "path", "hint"),
    [
        ("tcp", "", "check manager.conf [general]"),
        ("http", "/asterisk", "Asterisk's HTTP server is http.conf [general] enabled = yes"),
    ],
)
async def test_the_start_says_where_and_as_whom_it_waits_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, scheme: str, path: str, hint: str
) -> None:
    """The WARNING and the status of a start that waits for Asterisk named the
    url two or three times (``Asterisk does not answer at URL (cannot connect
    to Asterisk at URL/rawman: ...)``) and not the user; the client's words
    name both, once, and what went unanswered."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"{scheme}://127.0.0.1:{port}{path}"
    engine = engine_at(tmp_path, url)
    start = asyncio.ensure_future(engine.start())
    try:
        warned = await until_logged(caplog, "Asterisk does not answer")
    finally:
        engine.request_stop()
        with contextlib.suppress(AMIConnectionError):
            await asyncio.wait_for(start, 5)
        await engine.stop()
    reason = (
        f"cannot log in to {url} as 'router': cannot connect: connection refused "
        "(nothing listens there): "
    )
    assert warned.startswith(f"Asterisk does not answer ({reason}{hint}"), warned
    assert warned.endswith(
        "): waiting for it; calls take the dialplan's default route meanwhile"
    ), warned
    assert warned.count(f"127.0.0.1:{port}") == 1, warned
    status = engine._waiting_for
    assert status.startswith(f"waiting for Asterisk: {reason}{hint}"), status
    assert status.count(f"127.0.0.1:{port}") == 1, status


async def until_logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    for _ in range(200):
        said = [r.getMessage() for r in caplog.records if text in r.getMessage()]
        if said:
            return said[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"never logged: {text!r}")


async def test_a_stop_while_waiting_ends_the_wait_without_another_try(tmp_path: Path) -> None:
    """SIGTERM while the start waits for Asterisk: no further login is tried
    (one to an unreachable host takes up to connect_timeout, and one that
    succeeded went on to start plugins, the API and a reconcile only to stop)."""
    client = Away()
    engine = engine_at(tmp_path, "tcp://pbx:5038", client)
    start = asyncio.ensure_future(engine.start())
    try:
        await asyncio.wait_for(client.tried.wait(), 2)
        await asyncio.sleep(0.05)  # in the pause between two tries
        engine.request_stop()
        with pytest.raises(AMIConnectionError):
            await asyncio.wait_for(start, 2)
        assert client.logins == 1
    finally:
        start.cancel()
        await engine.stop()


async def test_a_second_stop_during_the_starts_decisions_stops_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first SIGTERM came while the engine started (the start's reconcile
    routing calls that waited, a plugin's slow startup): stop() drained the
    decisions in flight for drain_timeout, and a second SIGTERM did not cut
    it short, though docs/operations.md says a second signal stops at once."""
    engine = engine_at(tmp_path, "tcp://pbx:5038", ClientStub())
    await engine.setup()
    decision = asyncio.ensure_future(asyncio.sleep(30))
    engine.router._track(decision)  # a decision in flight (a slow lookup)
    engine.request_stop()  # before serve(): the start's turn
    stopping = asyncio.ensure_future(engine.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # the first signal lets decisions finish
    engine.request_stop()
    await asyncio.wait_for(stopping, 2)
    assert decision.cancelled()
    # A decision cancelled while its Redirect waited for its Newexten has
    # moved its call: the line said every such call took the default route.
    (said,) = [r.getMessage() for r in caplog.records if "a second stop signal" in r.getMessage()]
    assert "a second stop signal: 1 decision in flight was cancelled" in said
    assert "one already sent still moves the call" in said


class Told:
    """systemd's side of the notify socket, as the engine's notifier is told."""

    def __init__(self) -> None:
        self.waiting: list[tuple[float, str, float]] = []
        self.changed = asyncio.Event()

    def waiting_for(self, status: str, seconds: float) -> None:
        self.waiting.append((asyncio.get_running_loop().time(), status, seconds))
        self.changed.set()

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class HungUntilTold(Away):
    """A hung Asterisk: the first try fails at once, the next hangs until
    systemd was told ``times`` times since it began (loop turns, no clock:
    a loaded machine's stalls change nothing). Told only after each try, the
    try would hang until ``bound`` and give up (``heard`` False)."""

    def __init__(self, told: Told, times: int, bound: float) -> None:
        super().__init__()
        self.told, self.times, self.bound = told, times, bound
        self.heard: list[bool] = []
        self.hung = asyncio.Event()

    async def login(self) -> None:
        if self.logins:
            began = len(self.told.waiting)
            try:
                async with asyncio.timeout(self.bound):  # the failure's bound only
                    while len(self.told.waiting) < began + self.times:
                        self.told.changed.clear()
                        await self.told.changed.wait()
                self.heard.append(True)
            except TimeoutError:
                self.heard.append(False)
            self.hung.set()
        await super().login()


async def test_systemds_start_timeout_is_pushed_on_during_a_slow_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After TimeoutStartSec only EXTEND_TIMEOUT_USEC keeps a Type=notify
    start alive, and each one must come before the last runs out. It was
    sent after each failed try, for the pause plus 10 s: a try at a hung
    Asterisk lasts request_timeout (10 s over AJAM) or more over TCP (connect,
    greeting, login), so systemd timed the start out and killed it. Now it
    is sent on a timer, tries or not (here every 0.01 s, for 2 s): a try
    hangs until it was sent three times meanwhile."""
    import router.engine

    monkeypatch.setattr(router.engine, "_WAIT_NOTIFY_EVERY", 0.01, raising=False)
    monkeypatch.setattr(router.engine, "_WAIT_NOTIFY_FOR", 2.0, raising=False)
    told = Told()
    client = HungUntilTold(told, times=3, bound=5.0)
    engine = engine_at(tmp_path, "tcp://pbx:5038", client)
    monkeypatch.setattr(engine._notifier, "waiting", told.waiting_for)
    start = asyncio.ensure_future(engine.start())
    try:
        await client.hung.wait()
        engine.request_stop()
        with pytest.raises(AMIConnectionError):
            await asyncio.wait_for(start, 10)
    finally:
        start.cancel()
        await engine.stop()
    assert client.heard[0] is True  # told three times while the try hung
    # Each told for the extension, and the next one on a timer far within it.
    assert {seconds for _, _, seconds in told.waiting} == {2.0}
    times = [t for t, _, _ in told.waiting]
    assert all(b - a < 2.0 for a, b in itertools.pairwise(times))
    assert all(
        status.startswith("waiting for Asterisk: cannot log in to tcp://pbx:5038 as 'router': ")
        for _, status, _ in told.waiting
    )


async def empty_200(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Asterisk's HTTP server whose manager writes no answer (its /tmp full): every
    request gets HTTP 200 with an empty body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_a_login_answered_with_an_empty_body_is_waited_out_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load Asterisk answered Login with HTTP 200 and nothing in the body:
    `callrouter run` exited at once with "empty body: no AMI message", although
    it waits for an Asterisk that does not answer yet. It now waits (trying
    again), and says what to look at."""
    async with listening(None, empty_200) as port:
        url = f"http://127.0.0.1:{port}/asterisk"
        engine = engine_at(tmp_path, url)
        start = asyncio.ensure_future(engine.start())
        try:
            warned = await until_logged(caplog, "Asterisk does not answer")
        finally:
            engine.request_stop()
            with contextlib.suppress(AMIConnectionError):
                await asyncio.wait_for(start, 5)
            await engine.stop()
    assert f"cannot log in to {url} as 'router': Login: HTTP 200 with an empty body" in warned
    assert "temporary file in /tmp on the Asterisk host" in warned
