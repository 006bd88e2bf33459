"""The AJAM client's session handling, on a replaying transport (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from router.ami.client import AJAMClient, ClientSettings, is_idempotent
from router.ami.http import HTTPRequest, HTTPResponse
from router.ami.protocol import MAX_LINE_BYTES, Action
from router.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionError,
    AMIError,
    AMIPrivilegeError,
    AMIProtocolError,
    AMITimeoutError,
)
from router.testing import ReplayAsterisk

FIXTURES = Path(__file__).parents[2] / "fixtures" / "ami"
URL = "http://pbx.test:8088/asterisk"
COOKIE = 'mansession_id="0badcafe"; Version=1; Max-Age=60'


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.rawman").read_bytes()


def reply(body: bytes, *, action_id: str | None = None, cookie: str = COOKIE) -> httpx.Response:
    if action_id is not None:
        body = body.replace(
            b"Response: Success\r\n", f"Response: Success\r\nActionID: {action_id}\r\n".encode(), 1
        )
    return httpx.Response(
        200, content=body, headers={"Set-Cookie": cookie, "Content-Type": "text/plain"}
    )


class FakeAsterisk:
    """Answers like Asterisk, recording every request; knobs make it misbehave."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.cookies: list[str | None] = []
        self.sessions: set[str] = set()
        self.expire_next = 0
        self.deny_always = False
        #: Takes every login and refuses every action after it, Ping too.
        self.refuse_all = False
        #: As Asterisk 22 (seen on 22.10.1): a cookie it no longer knows is
        #: refused with a new session's cookie, not logged in (else: ours again).
        self.new_cookie_when_lost = False
        self._minted = 0
        self.fail: Callable[[dict[str, str]], Exception | None] | None = None
        self.login_failure = b"Authentication failed"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        self.requests.append(params)
        self.paths.append(request.url.path)
        self.cookies.append(request.headers.get("cookie"))
        if self.fail is not None:
            exc = self.fail(params)
            if exc is not None:
                raise exc
        action = params["Action"].lower()
        aid = params.get("ActionID", "")
        if action == "login":
            if params.get("Secret") != "pw":
                return reply(b"Response: Error\r\nMessage: " + self.login_failure + b"\r\n\r\n")
            self.sessions.add("0badcafe")
            return reply(
                b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n", action_id=aid
            )
        logged_in = "0badcafe" in (request.headers.get("cookie") or "") and self.sessions
        if self.expire_next:
            self.expire_next -= 1
            self.sessions.clear()
            logged_in = False
        if not logged_in or self.refuse_all or (self.deny_always and action == "originate"):
            denied = f"Response: Error\r\nActionID: {aid}\r\nMessage: Permission denied\r\n\r\n"
            if not logged_in and self.new_cookie_when_lost:
                self._minted += 1
                fresh = f'mansession_id="5eed{self._minted:04x}"; Version=1; Max-Age=60'
                return reply(denied.encode(), cookie=fresh)
            return reply(denied.encode())
        if action == "ping":
            return reply(b"Response: Success\r\nPing: Pong\r\n\r\n", action_id=aid)
        if action == "coreshowchannels":
            return reply(fixture("coreshowchannels").replace(b"l-1", aid.encode()))
        if action == "logoff":
            return reply(fixture("logoff"))
        if action == "waitevent":
            return reply(fixture("waitevent_call").replace(b"w1", aid.encode()))
        return reply(b"Response: Success\r\nMessage: ok\r\n\r\n", action_id=aid)


@pytest.fixture
def pbx() -> FakeAsterisk:
    return FakeAsterisk()


def make_client(pbx: FakeAsterisk, **kw: object) -> AJAMClient:
    settings = ClientSettings(url=URL, username="router", secret=str(kw.pop("secret", "pw")), **kw)  # type: ignore[arg-type]
    return AJAMClient(settings, transport=httpx.MockTransport(pbx))


async def test_login_then_actions_carry_cookie_and_action_ids(pbx: FakeAsterisk) -> None:
    async with make_client(pbx) as client:
        result = await client.request(Action.build("Ping"))
        assert result.response["Ping"] == "Pong"
        await client.action("Setvar", {"Variable": "A", "Value": "1"})
    assert [r["Action"] for r in pbx.requests] == ["Login", "Ping", "Setvar", "Logoff"]
    ids = [r["ActionID"] for r in pbx.requests]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    assert pbx.requests[0]["Username"] == "router"
    assert all("0badcafe" in (c or "") for c in pbx.cookies[1:])
    assert client.session_ttl == 60


async def test_a_refused_logins_message_is_quoted_only_in_part(pbx: FakeAsterisk) -> None:
    """As over TCP: Asterisk's Message in the error is bounded and escaped."""
    pbx.login_failure = b"\x1b[2J" + b"x" * 60_000
    client = make_client(pbx, secret="nope")
    with pytest.raises(AMIAuthenticationError) as caught:
        await client.login()
    text = str(caught.value)
    assert len(text) < 400, len(text)
    assert "\x1b" not in text
    await client.aclose()


async def test_secret_never_in_url(pbx: FakeAsterisk) -> None:
    async with make_client(pbx):
        pass
    assert all(p == "/asterisk/rawman" for p in pbx.paths)


async def test_wrong_secret_is_an_authentication_error(pbx: FakeAsterisk) -> None:
    client = make_client(pbx, secret="nope")
    with pytest.raises(AMIAuthenticationError, match="Authentication failed"):
        await client.login()
    await client.aclose()


async def test_a_refused_login_names_the_secret_file_and_the_section(pbx: FakeAsterisk) -> None:
    """As over TCP: the bare ``Authentication failed`` said nothing to compare."""
    client = make_client(pbx, secret="nope", secret_source="/etc/callrouter/router.toml")
    with pytest.raises(AMIAuthenticationError) as caught:
        await client.login()
    await client.aclose()
    message = str(caught.value)
    assert "read from /etc/callrouter/router.toml [asterisk] secret" in message
    assert "manager.conf [router] secret" in message
    assert "nope" not in message


async def test_expired_session_relogs_in_and_retries_once(pbx: FakeAsterisk) -> None:
    async with make_client(pbx) as client:
        pbx.expire_next = 1
        result = await client.request(Action.build("Ping"))
        assert result.ok
        assert client.session_generation == 2
    assert [r["Action"] for r in pbx.requests] == ["Login", "Ping", "Login", "Ping", "Logoff"]


async def test_denied_by_a_session_another_request_already_replaced_is_retried(
    pbx: FakeAsterisk,
) -> None:
    """Asterisk restarted under two requests: one logs in again while the other's
    WaitEvent is out. That one's "Permission denied" is the old session's; a Ping
    on the new session would pass and call it a missing class (CI saw the test
    kit's event stream stop so, for 8 s, after a restart)."""
    async with make_client(pbx) as client:
        seen: list[str] = []

        def meanwhile(params: dict[str, str]) -> Exception | None:
            name = params["Action"]
            seen.append(name)
            if name == "WaitEvent" and seen.count("WaitEvent") == 1:
                pbx.expire_next = 1  # this answer: the old session's refusal
                client.session_generation += 1  # another request logged in meanwhile
            elif seen.count("WaitEvent"):
                pbx.sessions.add("0badcafe")  # ...so the session is live again
            return None

        pbx.fail = meanwhile
        events = await client.wait_event(1)
        assert events
        assert seen[seen.index("WaitEvent") :] == ["WaitEvent", "WaitEvent"]  # no Ping


async def test_an_answer_on_the_old_session_does_not_undo_a_relogin(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Asterisk restarted under two requests: one logged in again while the other
    was out on the dead session. That one's answer carries a cookie too (the dead
    session's, or a new unauthenticated one's): taking it would put every later
    action on a session that is not logged in (CI saw the call placer's Originate
    refused so, right after an Asterisk restart). Only Login's, or an answer to
    the cookie still in use, sets the cookie."""
    gate, arrived = asyncio.Event(), asyncio.Event()

    async def slow(sent: object) -> dict[str, str]:
        arrived.set()
        await gate.wait()
        return {}

    ajam_replay.on("UserEvent", slow)
    async with ajam_replay.client() as client:
        out = asyncio.create_task(client.action("UserEvent", {"UserEvent": "x"}))
        await arrived.wait()
        ajam_replay.expire_session()  # Asterisk restarted: the session is gone
        assert (await client.action("Ping")).ok  # denied, logged in again, retried
        gate.set()
        await out  # answered with the session of before
        for _ in range(3):
            assert (await client.action("Ping")).ok
        assert client.session_generation == 2
    assert [a.name for a in ajam_replay.actions].count("Login") == 2


async def test_the_login_listener_is_told_of_a_login_inside_an_action(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Issue 16: the engine asks the manager user's write classes again after
    each login. One made inside an action (the session expired, Asterisk
    restarted) reached it only through the event stream, at its next poll's
    answer; the listener hears of it at once, and of no failed login."""
    told: list[int] = []
    client = ajam_replay.client()
    client.set_login_listener(lambda: told.append(client.session_generation))
    async with client:
        assert told == [1]
        ajam_replay.expire_session()
        assert (await client.action("Ping")).ok  # denied, logged in again, retried
        assert told == [1, 2]
        assert (await client.action("Ping")).ok
        assert told == [1, 2]
    bad = ajam_replay.client(secret="wrong")
    bad.set_login_listener(lambda: told.append(-1))
    with pytest.raises(AMIAuthenticationError):
        await bad.login()
    await bad.aclose()
    assert told == [1, 2]


async def test_a_failing_login_listener_does_not_fail_the_login(
    ajam_replay: ReplayAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    client = ajam_replay.client()
    client.set_login_listener(broken)
    async with client:
        assert client.logged_in
        assert (await client.action("Ping")).ok
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "the login listener failed"
    ]


async def test_the_login_listener_is_told_of_a_login_whose_event_filters_failed(
    ajam_replay: ReplayAsterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: Asterisk took the Login, then its event mask or filters did not
    get through (a timeout): the session stands (later actions use it, with no
    new login), but the listener was told only after the filters, so the
    engine never asked that session's write classes."""
    told: list[int] = []
    client = ajam_replay.client()
    client.set_login_listener(lambda: told.append(client.session_generation))

    async def slow(selection: object) -> None:
        raise AMITimeoutError("Filter: no answer within 10 s")

    monkeypatch.setattr(client, "_filter_session", slow)
    with pytest.raises(AMITimeoutError):
        await client.login()
    assert client.logged_in  # the session is the one later actions use
    assert told == [1]
    await client.aclose()


class LateOriginate:
    """A transport over the fake that holds Originate's answer until ``gate`` opens:
    Asterisk has answered it, the answer is still on its way."""

    def __init__(self, inner: ReplayAsterisk) -> None:
        self.inner, self.gate, self.answered = inner, asyncio.Event(), asyncio.Event()

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        response = await self.inner.exchange(request, timeout=timeout)
        if b"Action=Originate" in request.body and not self.gate.is_set():
            self.answered.set()
            await self.gate.wait()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class Timeouts:
    """A transport over the fake that records each action's wait."""

    def __init__(self, inner: ReplayAsterisk) -> None:
        self.inner = inner
        self.waits: list[tuple[bytes, float | None]] = []

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        self.waits.append((request.body, timeout))
        return await self.inner.exchange(request, timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_synchronous_originate_is_waited_for_as_long_as_its_timeout(
    ajam_replay: ReplayAsterisk,
) -> None:
    """Issue 16: Asterisk answers a synchronous Originate once the call is
    answered or its Timeout (30 s by default) passed; on the sandbox
    `callrouter ami Originate` over AJAM gave it up after request_timeout
    (10 s), and its answer was lost. Its wait is request_timeout plus its
    Timeout; an Async one and other actions wait request_timeout."""
    recorder = Timeouts(ajam_replay)
    async with AJAMClient(ajam_replay.settings(), transport=recorder) as client:
        base = client.settings.request_timeout
        calls = {"Channel": "Local/1@sink", "Application": "Wait"}
        for params, wait in (
            ({}, base + 30),
            ({"Timeout": "15000"}, base + 15),
            ({"Async": "true", "Timeout": "15000"}, base),
        ):
            recorder.waits.clear()
            await client.action("Originate", {**calls, **params}, check=False)
            assert [w for body, w in recorder.waits if b"Action=Originate" in body] == [wait]
        recorder.waits.clear()
        await client.action("Ping")
        assert [w for _, w in recorder.waits] == [base]


async def test_a_new_unauthenticated_session_in_a_refusal_is_not_taken(
    ajam_replay: ReplayAsterisk,
) -> None:
    """A request out with the dead session's cookie comes back refused with a new
    session's cookie (Asterisk makes one for an unknown cookie, not logged in).
    Arriving after another request logged in again, it is not taken: the refused
    action is retried on the new session, not refused for a missing class."""
    late = LateOriginate(ajam_replay)
    async with AJAMClient(ajam_replay.settings(), transport=late) as client:
        ajam_replay.expire_session()  # Asterisk restarted
        out = asyncio.create_task(
            client.action("Originate", {"Channel": "Local/1@sink", "Application": "Wait"})
        )
        await late.answered.wait()
        assert (await client.action("Ping")).ok  # denied, logged in again, retried
        late.gate.set()
        assert (await out).ok
        for _ in range(3):
            assert (await client.action("Ping")).ok
    assert [a.name for a in ajam_replay.actions].count("Login") == 2


async def test_missing_write_class_is_a_privilege_error_without_relogin(
    pbx: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 item 8: a missing class is not an expired session. A Ping on the
    same session tells them apart; no second Login (that would replace the
    session and its event queue), and the error names the action and the class."""
    pbx.deny_always = True
    async with make_client(pbx) as client:
        for _ in range(3):  # every call of the rule, not only the first
            with pytest.raises(AMIPrivilegeError) as caught:
                await client.action("Originate", {"Channel": "Local/1@sink"})
        assert client.session_generation == 1
    assert str(caught.value) == (
        "Originate: Permission denied: the manager user 'router' "
        "needs write class originate (manager.conf)"
    )
    assert caught.value.classes == ("originate",)
    assert isinstance(caught.value, AMIActionError)  # callers catching Response: Error still do
    sent = [r["Action"] for r in pbx.requests]
    assert sent == [
        "Login",
        "Originate",
        "Ping",
        "Originate",
        "Ping",
        "Originate",
        "Ping",
        "Logoff",
    ]
    warned = [
        r.getMessage() for r in caplog.records if "Permission denied: the manager" in r.getMessage()
    ]
    assert warned == [str(caught.value)]  # logged once, not once per call


async def test_denied_after_a_relogin_is_a_privilege_error(pbx: FakeAsterisk) -> None:
    """The session had expired too: one re-login and one retry, then the verdict."""
    pbx.deny_always = True
    async with make_client(pbx) as client:
        pbx.sessions.clear()
        with pytest.raises(AMIPrivilegeError, match="needs write class originate"):
            await client.action("Originate", {"Channel": "Local/1@sink"})
        assert client.session_generation == 2
    sent = [r["Action"] for r in pbx.requests]
    assert sent == ["Login", "Originate", "Ping", "Login", "Originate", "Logoff"]


async def test_digest_permission_denied_is_a_privilege_error_at_once() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        sent.append(params["Action"])
        body = (
            b"Response: Success\r\nPing: Pong\r\n\r\n"
            if params["Action"] == "Ping"
            else b"Response: Error\r\nMessage: Permission denied\r\n\r\n"
        )
        return httpx.Response(200, content=body, headers={"Content-Type": "text/plain"})

    settings = ClientSettings(url=URL, username="router", secret="pw", auth="digest")
    async with AJAMClient(settings, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(
            AMIPrivilegeError, match=r"DBPut: Permission denied: .* needs write class system"
        ):
            await client.action("DBPut", {"Family": "f", "Key": "k", "Val": "v"})
    assert sent == ["Ping", "DBPut"]


async def test_concurrent_expiry_logs_in_once(pbx: FakeAsterisk) -> None:
    async with make_client(pbx) as client:
        pbx.sessions.clear()
        results = await asyncio.gather(*(client.action("Ping") for _ in range(10)))
        assert all(r.ok for r in results)
    assert [r["Action"] for r in pbx.requests].count("Login") == 2


async def test_list_action_returns_complete_items(pbx: FakeAsterisk) -> None:
    async with make_client(pbx) as client:
        result = await client.action("CoreShowChannels")
    assert result.complete
    assert len(result.items) == 2
    assert result.items[0]["CallerIDName"] == "Пётр Иванов"


async def test_a_listing_whose_closing_action_id_line_is_too_long_names_the_bound() -> None:
    """Issue 16: over AJAM a list's closing event whose ``ActionID`` line was
    over 64 KiB was skipped, and the answer read as cut short ("no closing
    'EventList: Complete' (truncated)"). The action fails at once with an
    error naming the line and the bound."""
    long_id = b"ActionID: 7" + b"j" * (MAX_LINE_BYTES + 100)

    def answer(request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if params["Action"] != "CoreShowChannels":
            body = b"Response: Success\r\nPing: Pong\r\n\r\n"
        else:
            body = (
                b"Response: Success\r\nActionID: 7\r\nEventList: start\r\n\r\n"
                b"Event: CoreShowChannel\r\nActionID: 7\r\nChannel: PJSIP/1-1\r\n\r\n"
                b"Event: CoreShowChannelsComplete\r\n" + long_id + b"\r\n"
                b"EventList: Complete\r\nListItems: 1\r\n\r\n"
            )
        return httpx.Response(200, content=body, headers={"Content-Type": "text/plain"})

    settings = ClientSettings(url=URL, username="router", secret="pw", auth="digest")
    async with AJAMClient(settings, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(
            AMIProtocolError, match=r"whose ActionID line is over 65536 bytes"
        ) as raised:
            await client.action("CoreShowChannels")
    assert "j" * 64 not in str(raised.value)


async def test_an_answer_with_a_line_too_long_fails_its_action_as_over_tcp(
    pbx: FakeAsterisk,
) -> None:
    """Issue 16: an AJAM answer with a line over the bound (its ActionID read)
    fails its action with the error the TCP client gives for the same answer,
    naming the bound and the line's key; the session and the poll go on."""

    def answer(request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if params["Action"] != "Getvar":
            return pbx(request)
        body = b"Response: Success\r\nMessage: " + b"x" * (MAX_LINE_BYTES + 100) + b"\r\n\r\n"
        return reply(body, action_id=params["ActionID"])

    settings = ClientSettings(url=URL, username="router", secret="pw")
    async with AJAMClient(settings, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(AMIProtocolError) as raised:
            await client.action("Getvar", {"Variable": "A"})
        assert str(raised.value) == (
            "Getvar: an AMI answer whose Message line is over 65536 bytes (the parser's "
            "line bound): no Asterisk sends one (a broken or hostile AMI peer?)"
        )
        assert (await client.wait_event(5))[0].name == "RequestBadFormat"
        assert client.session_generation == 1
    assert [r["Action"] for r in pbx.requests] == ["Login", "WaitEvent", "Logoff"]


async def test_stale_connection_retried_for_idempotent_only(pbx: FakeAsterisk) -> None:
    broken: set[str] = set()

    def fail_first(params: dict[str, str]) -> Exception | None:
        if params["Action"] in ("Ping", "Originate") and params["Action"] not in broken:
            broken.add(params["Action"])
            return httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return None

    async with make_client(pbx) as client:
        pbx.fail = fail_first
        assert (await client.action("Ping")).ok
        with pytest.raises(AMIConnectionError, match="broke"):
            await client.action("Originate", {"Channel": "Local/1@sink"})
        pbx.fail = None
    sent = [r["Action"] for r in pbx.requests]
    assert sent.count("Ping") == 2
    assert sent.count("Originate") == 1


@pytest.mark.parametrize(
    ("exc", "expected", "match"),
    [
        (httpx.ConnectError("refused"), AMIConnectionError, "cannot connect"),
        (httpx.ReadTimeout("slow"), AMITimeoutError, "no answer"),
    ],
)
async def test_transport_failures_map_to_the_error_tree(
    pbx: FakeAsterisk, exc: Exception, expected: type[Exception], match: str
) -> None:
    pbx.fail = lambda params: exc
    client = make_client(pbx)
    with pytest.raises(expected, match=match):
        await client.login()
    await client.aclose()


async def test_http_404_names_the_prefix() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, text="<html>404</html>"))
    client = AJAMClient(ClientSettings(url=URL, username="u", secret="s"), transport=transport)
    with pytest.raises(AMIConnectionError, match="prefix"):
        await client.login()
    await client.aclose()


async def test_digest_mode_uses_authenticated_endpoint() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if "authorization" not in request.headers:
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Digest algorithm=MD5, realm="asterisk", nonce="1", '
                    'qop="auth", opaque="2"'
                },
            )
        return reply(b"Response: Success\r\nPing: Pong\r\n\r\n")

    settings = ClientSettings(url=URL, username="u", secret="s", auth="digest")
    async with AJAMClient(settings, transport=httpx.MockTransport(handler)) as client:
        assert (await client.action("Ping")).ok
    assert set(seen) == {"/asterisk/arawman"}


async def test_wait_event_returns_events_and_refuses_a_second_poll(pbx: FakeAsterisk) -> None:
    async with make_client(pbx) as client:
        events = await client.wait_event(5)
        assert events[0].name == "RequestBadFormat"
        assert "WaitEventComplete" not in [e.name for e in events]
        timeout = next(r for r in pbx.requests if r["Action"] == "WaitEvent")["Timeout"]
        assert timeout == "5"
        async with client._wait_lock:
            with pytest.raises(AMIError, match="already outstanding"):
                await client.wait_event(5)


async def test_wait_event_stays_below_session_lifetime(pbx: FakeAsterisk) -> None:
    async with make_client(pbx) as client:
        client.session_ttl = 12
        await client.wait_event(20)
        assert [r for r in pbx.requests if r["Action"] == "WaitEvent"][-1]["Timeout"] == "1"


async def test_a_peer_that_left_a_request_unanswered_is_not_sent_a_logoff_to_wait_on(
    pbx: FakeAsterisk,
) -> None:
    """Closing waited up to 2 s more on a Logoff after a request had gone
    unanswered (``callrouter check --asterisk`` took 7.4 s against an HTTP
    server answering the Login only); one that answers again logs off as ever."""

    def silent(params: dict[str, str]) -> Exception | None:
        if params["Action"] in ("CoreSettings", "Logoff"):
            return httpx.ReadTimeout("no answer")
        return None

    pbx.fail = silent
    client = make_client(pbx)
    await client.login()
    with pytest.raises(AMITimeoutError, match="CoreSettings: no answer"):
        await client.action("CoreSettings", timeout=0.2)
    await client.aclose()
    assert [r["Action"] for r in pbx.requests] == ["Login", "CoreSettings"]

    for broken in (httpx.ReadTimeout("no answer"), httpx.ConnectError("refused")):
        pbx.requests.clear()
        pbx.fail = lambda params, broken=broken: broken if params["Action"] == "Getvar" else None  # type: ignore[misc]
        async with make_client(pbx) as client:
            with pytest.raises((AMITimeoutError, AMIConnectionError)):
                await client.action("Getvar", {"Variable": "X"})
            await client.action("Ping")  # it answers again
        assert [r["Action"] for r in pbx.requests] == ["Login", "Getvar", "Ping", "Logoff"]


async def test_closed_client_refuses(pbx: FakeAsterisk) -> None:
    client = make_client(pbx)
    await client.aclose()
    with pytest.raises(AMIConnectionError, match="closed"):
        await client.action("Ping")


def test_idempotency_classification() -> None:
    assert is_idempotent("Ping")
    assert is_idempotent("WaitEvent")
    assert is_idempotent("PJSIPShowEndpoints")
    assert is_idempotent("QueueStatus")
    for name in ("Originate", "Redirect", "Hangup", "UserEvent", "DBPut", "Command"):
        assert not is_idempotent(name)


# -- issue 16: every Set-Cookie is read, not the first ---------------------------------


PROXY_COOKIES = [
    ("Set-Cookie", "SERVERID=web1; Path=/; Max-Age=5"),
    ("Set-Cookie", COOKIE),
]


async def test_a_proxys_cookie_before_the_session_cookie_is_passed_over_httpx() -> None:
    """A front proxy's ``SERVERID`` before ``mansession_id``: only the first was
    read, the session cookie never kept, and every action logged in again and
    ended in a false AMIPrivilegeError."""
    pbx = FakeAsterisk()

    def proxied(request: httpx.Request) -> httpx.Response:
        answer = pbx(request)
        headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() != "set-cookie"]
        return httpx.Response(200, headers=headers + PROXY_COOKIES, content=answer.content)

    client = AJAMClient(
        ClientSettings(url=URL, username="router", secret="pw"),
        transport=httpx.MockTransport(proxied),
    )
    await client.login()
    assert (await client.action("Redirect", {"Channel": "x"})).ok
    assert client.session_generation == 1
    assert client.session_ttl == 60  # the session cookie's Max-Age, not the proxy's
    assert pbx.cookies[-1] == 'mansession_id="0badcafe"'
    await client.aclose()


async def test_a_proxys_cookie_before_the_session_cookie_is_passed_over_native_http() -> None:
    seen: list[tuple[str, bool]] = []
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        finally:
            writer.close()
            ended.set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                params = dict(parse_qsl((await reader.readexactly(length)).decode()))
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            has = b"mansession_id" in head
            seen.append((params["Action"], has))
            aid = params["ActionID"]
            if params["Action"] == "Login" or has:
                body, cookies = f"Response: Success\r\nActionID: {aid}\r\n\r\n", PROXY_COOKIES
            else:
                body = f"Response: Error\r\nActionID: {aid}\r\nMessage: Permission denied\r\n\r\n"
                cookies = []
            lines = "".join(f"{k}: {v}\r\n" for k, v in cookies)
            writer.write(
                f"HTTP/1.1 200 OK\r\n{lines}Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            await writer.drain()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    client = AJAMClient(ClientSettings(url=f"http://127.0.0.1:{port}/", username="u", secret="s"))
    await client.login()
    assert (await client.action("Redirect", {"Channel": "x"})).ok
    assert seen == [("Login", False), ("Redirect", True)]
    assert client.session_ttl == 60
    await client.aclose()
    await asyncio.wait_for(ended.wait(), 5)  # the pool closed its connection
    srv.close()
    await srv.wait_closed()


def empty_answers(
    pbx: FakeAsterisk, action: str, times: int
) -> Callable[[httpx.Request], httpx.Response]:
    """``pbx``, but its first ``times`` answers to ``action`` are HTTP 200 with an
    empty body (seen under load: manager.c writes each AJAM answer to a temporary
    file in Asterisk's /tmp and sends nothing when it cannot; a WaitEvent that a
    second one on its session ended answers nothing either)."""
    left = [times]

    def answer(request: httpx.Request) -> httpx.Response:
        real = pbx(request)
        params = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if params["Action"].lower() != action.lower() or left[0] == 0:
            return real
        left[0] -= 1
        return httpx.Response(200, content=b"", headers={"Content-Type": "text/plain"})

    return answer


def client_of(answer: Callable[[httpx.Request], httpx.Response]) -> AJAMClient:
    settings = ClientSettings(url=URL, username="router", secret="pw")
    return AJAMClient(settings, transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("action", ["Login", "Ping"])
async def test_one_empty_answer_to_a_login_or_a_ping_is_sent_once_more(
    pbx: FakeAsterisk, action: str
) -> None:
    """It came out as "empty body: no AMI message", a protocol error that failed
    `callrouter run`'s start even with wait_for_asterisk, for a blip."""
    async with client_of(empty_answers(pbx, action, 1)) as client:
        result = await client.request(Action.build("Ping"))
        assert result.response["Ping"] == "Pong"
    sent = [r["Action"] for r in pbx.requests]
    assert sent.count(action) == 2


@pytest.mark.parametrize("action", ["Login", "Ping"])
async def test_an_asterisk_that_always_answers_empty_is_a_connection_error_that_says_why(
    pbx: FakeAsterisk, action: str
) -> None:
    """Not hidden: after the second empty answer the caller gets an error an
    admin can act on (where to look), of the kind a start waits out."""
    client = client_of(empty_answers(pbx, action, 99))

    async def ping() -> None:
        await client.login()
        await client.request(Action.build("Ping"))

    try:
        with pytest.raises(AMIConnectionError) as caught:
            await ping()
    finally:
        await client.aclose()
    text = str(caught.value)
    assert f"{action}: HTTP 200 with an empty body" in text
    assert "temporary file in /tmp on the Asterisk host" in text
    assert "WaitEvent" not in text  # the other cause is WaitEvent's only
    if action == "Login":
        assert text.startswith(f"cannot log in to {URL} as 'router': ")
    assert [r["Action"] for r in pbx.requests].count(action) == 2


async def test_an_empty_answer_to_a_waitevent_is_not_repeated(pbx: FakeAsterisk) -> None:
    """The events the lost answer held are gone from the session's queue: the
    error goes to the event stream at once, which reports a gap and reconciles."""
    async with client_of(empty_answers(pbx, "WaitEvent", 1)) as client:
        with pytest.raises(AMIConnectionError, match="a second WaitEvent on the same session"):
            await client.wait_event(1)
        assert await client.wait_event(1)  # the session itself is fine
    assert [r["Action"] for r in pbx.requests].count("WaitEvent") == 2


async def test_an_empty_answer_to_an_action_not_safe_to_repeat_is_not_repeated(
    pbx: FakeAsterisk,
) -> None:
    async with client_of(empty_answers(pbx, "Redirect", 1)) as client:
        with pytest.raises(AMIConnectionError, match="Redirect: HTTP 200 with an empty body"):
            await client.action("Redirect", {"Channel": "PJSIP/1-1", "Exten": "1"})
    assert [r["Action"] for r in pbx.requests].count("Redirect") == 1


async def test_an_empty_waitevent_answer_is_a_gap_the_stream_reports_then_it_goes_on(
    pbx: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """The event stream over the real client: one lost line that names the
    empty answer, a ``reconnect`` gap (the engine reconciles and replays), and
    the events after it; no crash, no loop."""
    from router.ami.stream import Backoff, EventStream, StreamGap

    items: list[object] = []
    async with client_of(empty_answers(pbx, "WaitEvent", 1)) as client:
        stream = EventStream(client, backoff=Backoff(initial=0.001, maximum=0.002))
        async for item in stream:
            items.append(item)
            if not isinstance(item, StreamGap):
                break
    [gap] = [i for i in items if isinstance(i, StreamGap)]
    assert gap.reason == "reconnect"
    assert "WaitEvent: HTTP 200 with an empty body" in (gap.error or "")
    assert not isinstance(items[-1], StreamGap)
    lost = [r.getMessage() for r in caplog.records if "event stream lost" in r.getMessage()]
    assert len(lost) == 1
    assert "empty body" in lost[0]
    assert [r["Action"] for r in pbx.requests].count("Login") == 1


async def test_an_html_page_in_place_of_an_answer_is_said_as_one(pbx: FakeAsterisk) -> None:
    """A proxy's error page with HTTP 200 came out as "body ends in the middle
    of a line (truncated)", which sent the reader looking at Asterisk."""
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"

    def answer(request: httpx.Request) -> httpx.Response:
        real = pbx(request)
        if b"Action=WaitEvent" not in request.content:
            return real
        return httpx.Response(200, content=page, headers={"Content-Type": "text/html"})

    async with client_of(answer) as client:
        with pytest.raises(AMIProtocolError) as caught:
            await client.wait_event(1)
    text = str(caught.value)
    assert text.startswith(
        "WaitEvent: an HTML page titled '502 Bad Gateway' (Content-Type text/html)"
    )
    assert "something other than Asterisk's manager answers at this url" in text
    assert "truncated" not in text


async def test_logins_again_and_again_are_said_at_info_once_a_minute(
    pbx: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that takes every login and answers every action after it
    ``Permission denied`` (Ping too) had the client log in again at each
    request: two INFO lines a second from the poll alone. As over TCP, one
    of each a minute at INFO, the rest at DEBUG."""
    now = [1000.0]
    client = make_client(pbx)
    client._clock = lambda: now[0]
    with caplog.at_level(logging.DEBUG, logger="router.ami.client"):
        async with client:
            for n in range(6):
                pbx.expire_next = 1  # the session is gone at the next request
                assert (await client.request(Action.build("Ping"))).ok
                now[0] += 5.0 if n < 5 else 60.0
            pbx.expire_next = 1
            assert (await client.request(Action.build("Ping"))).ok

    def said(level: int, text: str) -> int:
        return sum(1 for r in caplog.records if r.levelno == level and text in r.getMessage())

    # Eight logins (the first, seven again): at INFO the first and the one 85 s on.
    assert said(logging.INFO, "logged in to") == 2
    assert said(logging.DEBUG, "logged in to") == 6
    assert said(logging.INFO, "logging in again") == 2
    assert said(logging.DEBUG, "logging in again") == 5


def logins(pbx: FakeAsterisk) -> int:
    return sum(1 for r in pbx.requests if r["Action"] == "Login")


async def test_logins_again_after_which_everything_is_refused_back_off(
    pbx: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that takes every login and refuses every action after it, Ping
    too, was logged in to again at each request: the event stream's poll
    alone, every half second, made 60 logins in 30 s for ever. From the second
    login again in a row followed at once by a refused action, the next one is
    held back, 0.5 s doubling to 30 s. A refused WaitEvent (no class guards
    it) says the session is gone: no Ping is asked, and while logins are held
    nothing is sent for that session (a poll and its Ping, two refused
    requests a second, were); each refusal is said as a session gone, not as
    a missing class."""
    now = [1000.0]
    client = make_client(pbx)
    client._clock = lambda: now[0]
    async with client:
        pbx.refuse_all = True
        with caplog.at_level(logging.WARNING, logger="router.ami.client"):
            for _ in range(60):  # 30 s of polls every half second
                with pytest.raises(AMIConnectionError, match=r"refused|not sent"):
                    await client.request(Action.build("WaitEvent", {"Timeout": "20"}))
                now[0] += 0.5
        # The first login, then again at 0 and 0.5 s (the first one after
        # which the next is held), 1, 2, 4, 8, 16 s (and 32).
        assert logins(pbx) == 1 + 7
        sent = [r["Action"] for r in pbx.requests[1:]]
        # One refused WaitEvent before the first login again, then one after
        # each: no Ping, nothing while held.
        assert sent == ["WaitEvent"] + ["Login", "WaitEvent"] * 7, sent
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        said = [w for w in warnings if "refused the first action after it" in w]
        assert len(said) == 1, warnings
        # Up to 30 s between logins, however long it lasts.
        for _ in range(120):
            with pytest.raises(AMIConnectionError):
                await client.request(Action.build("Ping"))
            now[0] += 0.5
        assert logins(pbx) == 8 + 2
        # The next login again after the hold, followed by an action that
        # works, ends the backoff: the next lost session is logged in to
        # again at once.
        pbx.refuse_all = False
        now[0] += 30.0
        assert (await client.request(Action.build("Ping"))).ok
        count = logins(pbx)
        pbx.expire_next = 1
        assert (await client.request(Action.build("Ping"))).ok
        assert logins(pbx) == count + 1


async def test_while_logins_are_held_a_session_gone_is_said_so_and_not_sent_to(
    pbx: FakeAsterisk,
) -> None:
    """Asterisk 22 refuses a cookie it no longer knows with a new session's
    cookie. While logins again were held back (Asterisk dropped every session
    at its first request), a Redirect on the session gone was sent, refused,
    a Ping asked and refused too, and the Redirect failed as a missing write
    class call until the hold ended: two refused requests for each action, and
    an administrator sent to manager.conf for nothing. It fails now as the
    session gone, with the time left, and nothing is sent until the hold ends;
    then a class really missing is a privilege error again."""
    now = [1000.0]
    client = make_client(pbx)
    client._clock = lambda: now[0]
    pbx.new_cookie_when_lost = True
    async with client:
        pbx.expire_next = 10**6  # every session gone at its first request
        for _ in range(2):  # two logins again in a row refused at once: held
            with pytest.raises(AMIConnectionError):
                await client.request(Action.build("WaitEvent", {"Timeout": "20"}))
        assert logins(pbx) == 3
        before = len(pbx.requests)
        for _ in range(3):
            with pytest.raises(AMIConnectionError) as caught:
                await client.action("Redirect", {"Channel": "PJSIP/1-1", "Exten": "101"})
            with pytest.raises(AMIConnectionError):
                await client.request(Action.build("WaitEvent", {"Timeout": "20"}))
            now[0] += 0.1
        assert not isinstance(caught.value, AMIPrivilegeError)
        assert "Redirect: the AJAM session at " in str(caught.value)
        assert "is gone (Asterisk refused an earlier action as not logged in; not sent)" in str(
            caught.value
        )
        assert "logging in again is held back 0.3 s more" in str(caught.value)
        assert len(pbx.requests) == before  # nothing sent while held
        # The hold over, Asterisk keeps sessions again but refuses Originate:
        # logged in to at once (the session is known gone: no refused action
        # first), and the missing class is a privilege error, as any refusal
        # right after a login (test_denied_after_a_relogin_is_a_privilege_error).
        now[0] += 1.0
        pbx.expire_next = 0
        pbx.deny_always = True
        with pytest.raises(AMIPrivilegeError, match="needs write class originate"):
            await client.action("Originate", {"Channel": "Local/1@sink"})
        assert [r["Action"] for r in pbx.requests[before:]] == ["Login", "Originate"]
        assert (await client.request(Action.build("WaitEvent", {"Timeout": "1"}))).ok
        assert (await client.request(Action.build("Ping"))).ok
        assert logins(pbx) == 4


@pytest.fixture
def lifetimes_said(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """The process's record of session lifetimes warned of, empty for the test."""
    import router.ami.client as client_module

    said: dict[str, str | None] = {}
    monkeypatch.setattr(client_module, "_LIFETIME_SAID", said, raising=False)
    return said


def lifetime_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "httptimeout" in r.getMessage()
    ]


async def test_an_httptimeout_of_10_s_or_less_is_a_warning_once_per_process(
    caplog: pytest.LogCaptureFixture, lifetimes_said: dict[str, str | None]
) -> None:
    """manager.conf httptimeout at 10 s or less makes Asterisk answer every
    WaitEvent at once: delivery degrades to busy polling, which said nothing.
    A WARNING at login names the value and the fix, once per process, and
    again only when the value changes."""
    pbx = FakeAsterisk()
    with caplog.at_level(logging.WARNING, logger="router.ami.client"):
        for max_age in (10, 10, 5):
            transport = httpx.MockTransport(
                lambda request, age=max_age: reply_with_max_age(pbx(request), age)
            )
            settings = ClientSettings(url=URL, username="router", secret="pw")
            async with AJAMClient(settings, transport=transport) as client:
                await client.login()  # a login again: not said again
                assert client.session_ttl == max_age
    said = lifetime_warnings(caplog)
    assert len(said) == 2, said
    assert said[0].startswith("manager.conf [general] httptimeout is 10 s")
    assert "set httptimeout = 60 or more in manager.conf [general]" in said[0]
    assert said[1].startswith("manager.conf [general] httptimeout is 5 s")


async def test_a_waitevent_timeout_not_below_httptimeout_less_10_is_a_warning(
    caplog: pytest.LogCaptureFixture, lifetimes_said: dict[str, str | None]
) -> None:
    """docs/asterisk-ajam.md: keep waitevent_timeout below httptimeout - 10;
    each WaitEvent is cut to httptimeout - 11 otherwise. Said at login."""
    pbx = FakeAsterisk()
    for max_age, waitevent, warned in ((30, 20.0, True), (31, 20.0, False), (60, 20.0, False)):
        caplog.clear()
        transport = httpx.MockTransport(
            lambda request, age=max_age: reply_with_max_age(pbx(request), age)
        )
        settings = ClientSettings(
            url=URL, username="router", secret="pw", waitevent_timeout=waitevent
        )
        with caplog.at_level(logging.WARNING, logger="router.ami.client"):
            async with AJAMClient(settings, transport=transport):
                pass
        said = lifetime_warnings(caplog)
        assert len(said) == int(warned), (max_age, said)
        if warned:
            assert said[0].startswith(
                "[asterisk] waitevent_timeout (20 s) is not below manager.conf [general] "
                "httptimeout (30 s, the session cookie's Max-Age) - 10: each WaitEvent "
                "waits 19 s at most"
            )


def reply_with_max_age(response: httpx.Response, max_age: int) -> httpx.Response:
    cookie = response.headers.get("set-cookie", "").replace("Max-Age=60", f"Max-Age={max_age}")
    headers = {k: v for k, v in response.headers.items() if k != "set-cookie"}
    return httpx.Response(
        response.status_code, content=response.content, headers={**headers, "Set-Cookie": cookie}
    )
