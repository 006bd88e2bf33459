"""The API's core: tokens, problem details, the audit line, the AMI endpoint.

Each test drives the ASGI app in process (httpx's ASGI transport) over the
test kit's StubEngine, whose AMI is the replay Asterisk: the same client code
as production, no socket.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpx
import pytest
from starlette.responses import JSONResponse

from router.api.app import build_app, openapi_document
from router.api.auth import RateLimiter, Token, hash_token, new_token
from router.api.context import MAX_BODY_BYTES, ApiContext
from router.api.settings import ApiSettings, TokenSettings
from router.errors import ConfigError
from router.testing import StubEngine, config_from_toml

FULL = new_token()
SCOPED = new_token()


def token(
    name: str,
    text: str,
    allow: Iterable[str],
    extensions: Iterable[str] = ("*",),
    *,
    rate: float = 1000,
    burst: int = 1000,
) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=tuple(allow),
        extensions=tuple(extensions),
        rate=rate,
        burst=burst,
    )


def settings(*tokens: TokenSettings) -> ApiSettings:
    return ApiSettings(tokens={t.name: t for t in tokens})


DEFAULT_TOKENS = (
    token("admin", FULL, ["ami:*"]),
    token("desk101", SCOPED, ["ami:Ping", "ami:CoreShowChannels", "calls:create"], ["101"]),
)


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


def client_for(stub: StubEngine, api: ApiSettings | None = None) -> httpx.AsyncClient:
    app = build_app(ApiContext(stub, api or settings(*DEFAULT_TOKENS)))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.0.0.7", 5555)),
        base_url="http://api.test",
    )


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["type"]
    return dict(body)


# -- tokens ------------------------------------------------------------------------------


async def test_no_token_is_401_naming_the_header(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post("/api/v1/ami/Ping")
    body = assert_problem(response, 401)
    assert "Authorization" in str(body["detail"])
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert not [a for a in stub.replay.actions if a.name == "Ping"]


async def test_wrong_token_and_wrong_scheme_are_401(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        wrong = await client.post("/api/v1/ami/Ping", headers=bearer(FULL + "x"))
        basic = await client.post("/api/v1/ami/Ping", headers={"Authorization": f"Basic {FULL}"})
    assert assert_problem(wrong, 401)["detail"] == "unknown token"
    assert "Bearer" in str(assert_problem(basic, 401)["detail"])


async def test_the_right_token_is_found_by_its_hash(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["action"] == "Ping"
    assert body["response"]["Ping"] == "Pong"
    assert body["items"] == []
    assert body["complete"] is True


def test_token_patterns() -> None:
    scoped = Token("t", frozenset({"ami:Ping", "calls:create"}), ("101", "2*"))
    assert scoped.sees("101")
    assert not scoped.sees("1010")
    assert not scoped.sees("102")
    assert scoped.sees("2")
    assert scoped.sees("205")
    assert not scoped.sees("305")
    assert Token("all", frozenset(), ("*",)).sees("999")
    assert scoped.allows("calls:create")
    assert not scoped.allows("calls:hangup")
    assert scoped.allows("ami:Ping")
    assert not scoped.allows("ami:Command")
    assert Token("ami", frozenset({"ami:*"}), ("*",)).allows("ami:Command")
    assert not Token("ami", frozenset({"ami:*"}), ("*",)).allows("calls:create")


async def test_command_without_ami_command_is_403_naming_the_permission(
    stub: StubEngine,
) -> None:
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Command", headers=bearer(SCOPED), json={"Command": "core show uptime"}
        )
    body = assert_problem(response, 403)
    assert body["missing_permission"] == "ami:Command"
    assert "desk101" in str(body["detail"])
    assert not [a for a in stub.replay.actions if a.name == "Command"]


async def test_rate_limit_is_429_with_retry_after(stub: StubEngine) -> None:
    api = settings(token("slow", FULL, ["ami:Ping"], rate=0.5, burst=2))
    async with client_for(stub, api) as client:
        statuses = [
            (await client.post("/api/v1/ami/Ping", headers=bearer(FULL))).status_code
            for _ in range(3)
        ]
        limited = await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
    assert statuses == [200, 200, 429]
    body = assert_problem(limited, 429)
    assert "slow" in str(body["detail"])
    assert int(limited.headers["retry-after"]) >= 1


async def test_the_audit_line_of_a_429_names_the_token(
    stub: StubEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid token over its rate was audited as ``token=-``: the rate was
    taken before the token's name was recorded. Its name now, never its secret."""
    caplog.set_level(logging.INFO, logger="router.api.audit")
    api = settings(token("slow", FULL, ["ami:Ping"], rate=0.5, burst=1))
    async with client_for(stub, api) as client:
        statuses = [
            (await client.post("/api/v1/ami/Ping", headers=bearer(FULL))).status_code
            for _ in range(2)
        ]
    assert statuses == [200, 429]
    lines = [r.getMessage() for r in caplog.records if r.name == "router.api.audit"]
    assert "token=slow op=ami:Ping target=Ping status=429" in lines[-1]
    assert FULL not in caplog.text


def test_rate_limiter_refills_with_time() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert limiter.take("t", 2.0, 1) == 0
    assert limiter.take("t", 2.0, 1) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("t", 2.0, 1) == 0


async def test_one_audit_line_per_request_without_the_token(
    stub: StubEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.api.audit")
    async with client_for(stub) as client:
        await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
        await client.post("/api/v1/ami/Command", headers=bearer(SCOPED), json={"Command": "x"})
        await client.post("/api/v1/ami/Ping", headers=bearer(SCOPED + "bad"))
    lines = [r.getMessage() for r in caplog.records if r.name == "router.api.audit"]
    assert len(lines) == 3
    assert "token=admin op=ami:Ping target=Ping status=200 client=10.0.0.7" in lines[0]
    assert "token=desk101 op=ami:Command target=Command status=403" in lines[1]
    assert "token=- op=ami:Ping target=Ping status=401" in lines[2]
    for secret in (FULL, SCOPED, FULL[3:20], SCOPED[3:20]):
        assert not any(secret in line for line in lines)
        assert secret not in caplog.text


# -- errors ------------------------------------------------------------------------------


async def test_malformed_json_is_400_naming_problem_and_position(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Ping",
            headers={**bearer(FULL), "Content-Type": "application/json"},
            content=b'{"Channel": "PJSIP/101",\n "oops"}',
        )
        array = await client.post("/api/v1/ami/Ping", headers=bearer(FULL), json=[1])
    body = assert_problem(response, 400)
    assert str(body["detail"]).startswith("malformed JSON: Expecting ':' delimiter")
    assert (body["line"], body["column"]) == (2, 8)
    assert assert_problem(array, 400)["detail"] == "expected a JSON object, got an array"


async def test_unknown_action_is_404_with_did_you_mean(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post("/api/v1/ami/CoreShowChanels", headers=bearer(FULL))
    body = assert_problem(response, 404)
    assert body["did_you_mean"] == "CoreShowChannels"
    assert "'CoreShowChanels'" in str(body["detail"])


async def test_unknown_or_missing_parameter_is_400_naming_it(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        typo = await client.post(
            "/api/v1/ami/Hangup", headers=bearer(FULL), json={"Chanel": "PJSIP/101-1"}
        )
        missing = await client.post("/api/v1/ami/Hangup", headers=bearer(FULL), json={})
        nested = await client.post(
            "/api/v1/ami/Hangup", headers=bearer(FULL), json={"Channel": [{"a": 1}]}
        )
        own_id = await client.post(
            "/api/v1/ami/Ping", headers=bearer(FULL), json={"ActionID": "mine"}
        )
    body = assert_problem(typo, 400)
    assert body["field"] == "Chanel"
    assert body["did_you_mean"] == "Channel"
    assert "missing required parameter Channel" in str(assert_problem(missing, 400)["detail"])
    assert assert_problem(nested, 400)["field"] == "Channel"
    assert assert_problem(own_id, 400)["field"] == "ActionID"
    assert not [a for a in stub.replay.actions if a.name == "Hangup"]


@pytest.mark.parametrize("bad", ["PJSIP/101\r\nAction: Command", "PJSIP/101\nx", "a\x00b"])
async def test_line_breaks_and_nul_never_reach_asterisk(stub: StubEngine, bad: str) -> None:
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Hangup", headers=bearer(FULL), json={"Channel": bad}
        )
    assert assert_problem(response, 400)["field"] == "Channel"
    assert not [a for a in stub.replay.actions if a.name in ("Hangup", "Command")]


async def test_asterisk_error_is_409_with_its_message(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Hangup", headers=bearer(FULL), json={"Channel": "PJSIP/999-00000001"}
        )
    body = assert_problem(response, 409)
    assert "Asterisk refused Hangup" in str(body["detail"])
    assert isinstance(body["ami_response"], dict)


async def test_unknown_path_and_method_are_problems(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        missing = await client.get("/api/v1/nothing-here", headers=bearer(FULL))
        method = await client.get("/api/v1/ami/Ping", headers=bearer(FULL))
    assert "/api/v1/nothing-here" in str(assert_problem(missing, 404)["detail"])
    assert_problem(method, 405)
    assert "POST" in method.headers["allow"]


async def test_a_bug_is_500_without_internals(
    stub: StubEngine, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def request(self, action: object, *, check: bool = True) -> object:
            raise RuntimeError("secret internals /etc/passwd")

    from router.ami.facade import AMI

    stub.ami = AMI(Broken())  # type: ignore[arg-type]
    async with client_for(stub) as client:
        response = await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
    body = assert_problem(response, 500)
    assert "internals" not in response.text
    assert "RuntimeError" not in response.text
    assert "callrouter log" in str(body["detail"])
    assert "secret internals" in caplog.text  # the log has the traceback


async def test_list_action_answers_with_its_items(stub: StubEngine) -> None:
    channel = stub.replay.inbound_call(caller="+79161234567", did="74950000001")
    async with client_for(stub) as client:
        response = await client.post("/api/v1/ami/CoreShowChannels", headers=bearer(SCOPED))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["Channel"] for item in body["items"]] == [channel]
    assert body["items"][0]["Event"] == "CoreShowChannel"
    assert body["complete"] is True
    assert body["unread_items"] == 0


async def test_a_list_action_answers_with_its_closing_event(stub: StubEngine) -> None:
    """Issue 16: the answer left out the list's closing event
    (``CoreShowChannelsComplete``, its ``ListItems``), which ``callrouter ami
    --json`` holds as ``closing``: the API holds it the same way; an action
    with no list has ``closing`` null."""
    stub.replay.inbound_call(caller="+79161234567", did="74950000001")
    async with client_for(stub) as client:
        listed = await client.post("/api/v1/ami/CoreShowChannels", headers=bearer(SCOPED))
        ping = await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
    assert listed.status_code == 200, listed.text
    closing = listed.json()["closing"]
    assert closing["Event"] == "CoreShowChannelsComplete"
    assert (closing["EventList"], closing["ListItems"]) == ("Complete", "1")
    assert ping.status_code == 200, ping.text
    assert ping.json()["closing"] is None
    assert ping.json()["items"] == []


async def test_a_list_short_of_items_skipped_for_a_long_line_says_how_many(
    stub: StubEngine,
) -> None:
    """Issue 16: an item skipped for a line over the parser's bound left the
    list short, and the answer did not say so: ``unread_items`` counts them."""
    from router.ami.facade import AMI
    from router.ami.message import Event, Response
    from router.ami.protocol import ActionResult

    class ShortLister:
        async def request(self, action: object, *, check: bool = True) -> ActionResult:
            return ActionResult(
                Response((("Response", "Success"), ("EventList", "start"))),
                (Event((("Event", "CoreShowChannel"), ("Channel", "PJSIP/1"))),),
                True,
                Event((("Event", "CoreShowChannelsComplete"), ("ListItems", "3"))),
            )

    stub.ami = AMI(ShortLister())
    async with client_for(stub) as client:
        response = await client.post("/api/v1/ami/CoreShowChannels", headers=bearer(SCOPED))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["Channel"] for item in body["items"]] == ["PJSIP/1"]
    assert body["unread_items"] == 2


async def test_503_at_once_when_the_engine_is_not_connected(stub: StubEngine) -> None:
    stub.connected = False
    # An AMI timeout far above the bound: waiting for it would show; a loaded
    # host's scheduling would not.
    api = ApiSettings(tokens={"admin": DEFAULT_TOKENS[0]}, ami_timeout=30)
    async with client_for(stub, api) as client:
        started = time.monotonic()
        response = await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
        elapsed = time.monotonic() - started
    body = assert_problem(response, 503)
    assert "unreachable" in str(body["detail"])
    assert response.headers["retry-after"] == "1"
    assert elapsed < 5.0
    assert not [a for a in stub.replay.actions if a.name == "Ping"]


async def test_503_within_the_ami_timeout_when_asterisk_hangs(stub: StubEngine) -> None:
    hung = []

    async def never(sent: object) -> None:
        hung.append(sent)
        import asyncio

        await asyncio.sleep(30)

    stub.replay.on("Ping", never)
    api = ApiSettings(tokens={"admin": DEFAULT_TOKENS[0]}, ami_timeout=0.2)
    async with client_for(stub, api) as client:
        started = time.monotonic()
        response = await client.post("/api/v1/ami/Ping", headers=bearer(FULL))
        elapsed = time.monotonic() - started
    assert "within 0.2 s" in str(assert_problem(response, 503)["detail"])
    assert hung
    assert elapsed < 5.0  # the hang is 30 s


# -- settings ----------------------------------------------------------------------------


def api_toml(tmp_path: Path, body: str) -> ApiSettings | None:
    return config_from_toml(tmp_path, body).api


def test_no_api_table_means_no_api(tmp_path: Path) -> None:
    assert api_toml(tmp_path, "[router]\nshadow = true\n") is None


def test_api_table_with_tokens(tmp_path: Path) -> None:
    digest = hash_token(FULL)
    api = api_toml(
        tmp_path,
        f'[api]\nlisten = "[::1]:9000"\nrate = 5\n'
        f'[api.tokens.crm]\nhash = "{digest}"\nallow = ["calls:create", "ami:Status"]\n'
        f'extensions = ["1*"]\n',
    )
    assert api is not None
    assert (api.host, api.port, api.listen) == ("::1", 9000, "[::1]:9000")
    crm = api.tokens["crm"]
    assert crm.allow == ("calls:create", "ami:Status")
    assert crm.extensions == ("1*",)
    assert crm.rate == 5
    assert crm.burst == 10
    assert FULL not in repr(api)
    assert digest[7:] not in repr(crm)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('listen = "localhost"', "[api] listen: expected HOST:PORT"),
        ('listn = "x"', "[api] listn: unknown key; did you mean 'listen'?"),
        ('cert = "c.pem"', "[api] cert: no such file"),
        ("rate = 0", "[api] rate: expected more than 0"),
        (
            '[api.tokens.crm]\nhash = "abc"\nallow = ["calls:create"]\nextensions = ["101"]',
            "[api.tokens.crm] hash: expected 'sha256:'",
        ),
        (
            '[api.tokens.crm]\nhash = "sha256:{h}"\nallow = ["calls:creat"]\nextensions = ["1"]',
            "[api.tokens.crm] allow: unknown operation 'calls:creat'; did you mean 'calls:create'",
        ),
        (
            '[api.tokens.crm]\nhash = "sha256:{h}"\nallow = ["ami:status"]\nextensions = ["1"]',
            "did you mean 'ami:Status'",
        ),
        (
            '[api.tokens.crm]\nhash = "sha256:{h}"\nallow = ["ami:Statu"]\nextensions = ["1"]',
            "[api.tokens.crm] allow: unknown AMI action 'Statu' (did you mean 'Status'?)",
        ),
        (
            '[api.tokens.crm]\nhash = "sha256:{h}"\nallow = ["calls:read"]\nextensions = ["1*2"]',
            "[api.tokens.crm] extensions: bad extension pattern '1*2'",
        ),
        (
            '[api.tokens.crm]\nhash = "sha256:{h}"\nallow = []\nextensions = ["1"]',
            "[api.tokens.crm] allow: required",
        ),
        (
            '[api.tokens.crm]\nhash = "sha256:{h}"\nallow = ["calls:read"]\nextensions = ["1"]\n'
            "secret = 1",
            "[api.tokens.crm] secret: unknown key",
        ),
    ],
)
def test_api_settings_errors_name_file_table_and_key(
    tmp_path: Path, body: str, message: str
) -> None:
    text = "[api]\n" + body.replace("{h}", "a" * 64) + "\n"
    with pytest.raises(ConfigError) as caught:
        api_toml(tmp_path, text)
    # router.toml:LINE: [TABLE] KEY: ..., LINE where KEY is written (its table's
    # header when it is missing).
    named = re.match(r"(.*):(\d+): \[([^\]]+)\] (\w+):", str(caught.value))
    assert named is not None, str(caught.value)
    assert named[1] == str(tmp_path / "router.toml")
    assert int(named[2]) == written_line(tmp_path / "router.toml", named[3], named[4])
    assert message in str(caught.value)


def written_line(path: Path, table: str, key: str) -> int:
    """The line ``key`` of ``[table]`` is written on in ``path``, else the
    table's header line (a test's own reading, not router.config_lines)."""
    current, header = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]")
            header = number if current == table else header
        elif current == table and line.split("=")[0].strip() == key:
            return number
    return header


def test_tls_needs_both_cert_and_key(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"\[api\] key: TLS needs both cert and key"):
        api_toml(tmp_path, '[api]\ncert = "c.pem"\n')


# -- the document ------------------------------------------------------------------------


async def test_openapi_document_describes_every_served_operation(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert "Problem" in document["components"]["schemas"]
    operation_ids = []
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in document["paths"].items():
        assert path.startswith("/api/v1/")
        for method, operation in operations.items():
            where = (path, method)
            operation_ids.append(operation["operationId"])
            responses = operation["responses"]
            for status, response in responses.items():
                for content in response.get("content", {}).values():
                    assert "schema" in content, (*where, status)
                if status.startswith(("4", "5")):
                    assert response["content"]["application/problem+json"]["schema"] == problem
            if path == "/api/v1/openapi.json":
                continue
            assert {"401", "429"} <= set(responses), where
            assert any(s.startswith("2") for s in responses), where
            body = operation.get("requestBody")
            if body is not None:
                assert all("schema" in c for c in body["content"].values()), where
    assert "sendAmiAction" in operation_ids
    assert len(operation_ids) == len(set(operation_ids))


async def test_the_openapi_document_is_encoded_once_not_per_request(
    stub: StubEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 (an attacker's trial): every GET of the document (no token needed)
    encoded its 40 KiB anew on the loop that routes calls, about 3 ms each: a
    client asking for it over eight connections got 315 answers a second and
    the sandbox's calls were routed 140-260 ms late. It is encoded when the app
    is built; the answer is the same document."""
    async with client_for(stub) as client:
        encodings: list[object] = []
        real = JSONResponse.render

        def counted(self: JSONResponse, content: object) -> bytes:
            if isinstance(content, dict) and "openapi" in content:
                encodings.append(content)
            return real(self, content)

        monkeypatch.setattr(JSONResponse, "render", counted)
        first = await client.get("/api/v1/openapi.json")
        second = await client.get("/api/v1/openapi.json")
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.content == second.content
    assert first.json() == openapi_document()
    assert encodings == []


async def test_json_values_become_headers_as_the_catalog_says(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Originate",
            headers=bearer(FULL),
            json={
                "Channel": "Local/101@callrouter-dial",
                "Exten": "79161234567",
                "Context": "outbound",
                "Priority": 1,
                "Async": True,
                "Variable": {"CALL_SOURCE": "1c", "TRIES": 2},
            },
        )
    assert response.status_code == 200, response.text
    [sent] = stub.replay.sent("Originate")
    assert sent.getall("Variable") == ["CALL_SOURCE=1c", "TRIES=2"]
    assert sent.get("Priority") == "1"
    assert sent.get("Async") == "true"


async def test_a_body_over_the_bound_is_413(stub: StubEngine) -> None:
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Ping",
            headers={**bearer(FULL), "Content-Type": "application/json"},
            content=b'{"a": "' + b"x" * 70_000 + b'"}',
        )
    assert assert_problem(response, 413)["detail"] == f"request body over {MAX_BODY_BYTES} bytes"
    assert not stub.replay.sent("Ping")


@pytest.mark.parametrize("declared", [str(MAX_BODY_BYTES + 1), "99999999999", "9" * 5000])
async def test_a_body_declared_over_the_bound_is_413_before_it_is_read(
    stub: StubEngine, declared: str
) -> None:
    """Issue 16 (an attacker's trial): the bound was checked only as the body
    came, so ``Content-Length: 99999999999`` with ``Expect: 100-continue`` was
    answered "100 Continue" (uvicorn says it at the first read) and, the body
    never coming, closed unanswered at the request deadline 10 s later."""
    app = build_app(ApiContext(stub, settings(*DEFAULT_TOKENS)))
    reads: list[object] = []
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        reads.append(True)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/ami/Ping",
        "raw_path": b"/api/v1/ami/Ping",
        "query_string": b"",
        "headers": [
            (b"host", b"localhost"),
            (b"authorization", f"Bearer {FULL}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", declared.encode()),
            (b"expect", b"100-continue"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("localhost", 80),
    }
    await app(scope, receive, send)
    assert reads == []
    assert sent[0]["status"] == 413
    assert not stub.replay.sent("Ping")


async def test_an_ami_request_that_would_crash_asterisk_is_400_and_never_sent(
    stub: StubEngine,
) -> None:
    """A 1C developer checking whether a recording still runs with
    ``Getvar MIXMONITOR(id,filename)`` would have killed the PBX when that
    recording has one leg only (Asterisk 22.10 segfaults): refused, naming what
    to ask instead."""
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/Getvar",
            headers=bearer(FULL),
            json={"Channel": "PJSIP/101-0000002a", "Variable": "MIXMONITOR(0x7f01,filename)"},
        )
    body = assert_problem(response, 400)
    assert "crashes Asterisk" in str(body["detail"])
    assert "/api/v1/recordings/" in str(body["detail"])
    assert not [a for a in stub.replay.actions if a.name == "Getvar"]


@pytest.mark.parametrize(
    "name", ["CallRouterRequest", "CallRouterLive", " callrouterlive", "CallRouterCheck"]
)
async def test_a_userevent_named_as_callrouters_own_is_400_and_never_sent(
    stub: StubEngine, name: str
) -> None:
    """Sent through AMI, a CallRouterRequest is not routed and a CallRouterLive
    not signed with the instances' key is ignored: refused with the reason at
    once, rather than sent to do nothing (or, before both, to forge them)."""
    async with client_for(stub) as client:
        response = await client.post(
            "/api/v1/ami/UserEvent",
            headers=bearer(FULL),
            json={"UserEvent": name, "Channel": "PJSIP/101-0000002a", "Since": "1"},
        )
        other = await client.post(
            "/api/v1/ami/UserEvent", headers=bearer(FULL), json={"UserEvent": "CrmNote"}
        )
    body = assert_problem(response, 400)
    assert body["field"] == "UserEvent"
    assert "callrouter's own" in str(body["detail"])
    assert other.status_code == 200
    assert [a.get("UserEvent") for a in stub.replay.actions if a.name == "UserEvent"] == ["CrmNote"]


@pytest.mark.parametrize(
    "action", ["WaitEvent", "Logoff", "Events", "Filter", "Login", "Challenge"]
)
async def test_an_action_on_callrouters_own_ami_session_is_400_and_never_sent(
    stub: StubEngine, action: str
) -> None:
    """The API sends on the engine's own AMI session: a WaitEvent for an
    ``ami:*`` token (a 1C developer "reading events") took the events the
    engine's own WaitEvent waited for, and the sandbox's callrouter logged
    its event stream lost; a Logoff logged it out. Refused for every token."""
    params = {
        "WaitEvent": {"Timeout": 30},
        "Events": {"EventMask": "off"},
        "Filter": {"Operation": "Add", "Filter": "!Event: UserEvent"},
        "Login": {"Username": "admin", "Secret": "x"},
        "Challenge": {"AuthType": "MD5"},
    }.get(action, {})
    async with client_for(stub) as client:
        response = await client.post(f"/api/v1/ami/{action}", headers=bearer(FULL), json=params)
    body = assert_problem(response, 400)
    assert "callrouter's own" in str(body["detail"])
    assert not [a for a in stub.replay.actions if a.name == action]
