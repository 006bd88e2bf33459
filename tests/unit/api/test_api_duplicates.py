"""A JSON key or a query parameter given twice is refused, never read as the last.

Before: ``json.loads`` and Starlette's ``query_params.get`` kept the last of
``{"from": "101", "from": "102"}`` and ``?extension=101&extension=102``. A proxy
or a WAF in front that reads the first checked another request than the one
callrouter acted on (parameter pollution). Now either is a 400 naming it, on
every endpoint family that reads a body or a query string (issue 16). So is
a header the API reads (``Authorization``, ``Last-Event-ID``...) given twice:
``headers.get`` read the first of two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from router.api.app import build_app
from router.api.auth import hash_token, new_token
from router.api.context import ApiContext, decode_json
from router.api.errors import ApiError
from router.api.feed import EventFeed
from router.api.settings import ApiSettings, TokenSettings
from router.plugin_registry import plugin_registry
from router.rules.ruleset import RuleSet, load_rules
from router.testing import StubEngine

ADMIN = new_token()
DESK101 = new_token()
CALL = "1714557600.42"
JSON = {"Content-Type": "application/json"}

RULES = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: onec.responsible(caller.number)
    when: owner.found and owner.manager.extension
    do:
      - redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}
"""


def token(name: str, text: str, extensions: tuple[str, ...]) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=(
            "ami:*",
            "calls:create",
            "forwarding:write",
            "events:read",
            "recordings:read",
            "rules:explain",
        ),
        extensions=extensions,
        rate=1000,
        burst=1000,
    )


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    loaded = load_rules([path], plugin_registry(timezone="Europe/Moscow"))
    assert not loaded.errors
    return loaded


@pytest.fixture
async def client(tmp_path: Path, ruleset: RuleSet) -> AsyncIterator[httpx.AsyncClient]:
    stub = StubEngine(state_dir=tmp_path)
    tokens = {
        "admin": token("admin", ADMIN, ("*",)),
        "desk101": token("desk101", DESK101, ("101",)),
    }
    ctx = ApiContext(stub, ApiSettings(tokens=tokens), feed=EventFeed(), rules=lambda: ruleset)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(ctx)), base_url="http://api.test"
    ) as http:
        yield http
    await stub.aclose()


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}", **JSON}


def duplicate(response: httpx.Response, name: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["field"] == name
    assert problem["detail"] in (
        f"malformed JSON: duplicate key {name!r} in an object (send each member once)",
        f"query parameter {name!r} given more than once (send it once)",
        f"header {name!r} given more than once (send it once)",
    )


UI = {"X-Callrouter-UI": "1", **JSON}
MANAGER = '"manager": {"extension": "101", "extension": "102"}'
BODIES = [
    pytest.param("POST", "/ui/login", UI, '{"token": "a", "token": "b"}', "token", id="ui-login"),
    pytest.param(
        "POST", "/api/v1/ami/Ping", bearer(ADMIN),
        '{"Channel": "PJSIP/1", "Channel": "PJSIP/2"}', "Channel",
        id="ami",
    ),
    pytest.param(
        "POST", "/api/v1/calls", bearer(DESK101),
        '{"from": "101", "to": "79161234567", "from": "102"}', "from", id="calls-create",
    ),
    pytest.param(
        "POST", "/api/v1/calls", bearer(ADMIN),
        '{"from": "101", "to": "1", "variables": {"A": "1", "A": "2"}}', "A",
        id="calls-create-nested",
    ),
    pytest.param(
        "POST", "/api/v1/explain", bearer(ADMIN),
        '{"caller": "1", "did": "2", "lookups": {"onec.responsible": {"found": true, '
        + MANAGER + "}}}",
        "extension", id="explain-deep",
    ),
    pytest.param(
        "PUT", "/api/v1/extensions/101/forwarding", bearer(DESK101),
        '{"mode": "off", "mode": "always"}', "mode", id="forwarding",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "headers", "body", "name"), BODIES)
async def test_a_body_with_a_key_twice_is_400_naming_it(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: str,
    name: str,
) -> None:
    response = await client.request(method, path, headers=headers, content=body)
    duplicate(response, name)


def test_a_key_is_the_same_however_it_is_escaped_and_objects_are_apart() -> None:
    """``"\\u0061"`` is ``"a"``: a proxy that compares raw text would see two keys."""
    with pytest.raises(ApiError, match="duplicate key 'a'"):
        decode_json(b'{"a": 1, "\\u0061": 2}')
    # The same key in two objects, or in an object and its member, is no duplicate.
    assert decode_json(b'[{"a": 1}, {"a": 2, "b": {"a": 3}}]') == [
        {"a": 1},
        {"a": 2, "b": {"a": 3}},
    ]


async def test_a_lone_surrogate_key_twice_is_named_as_text(client: httpx.AsyncClient) -> None:
    """The key is the client's, written back into the problem: a lone surrogate
    (valid JSON, no text) there would fail the answer's encoding."""
    response = await client.post(
        "/api/v1/ami/Ping", headers=bearer(ADMIN), content=b'{"\\ud800": 1, "\\ud800": 2}'
    )
    duplicate(response, "\ufffd")


QUERIES = [
    pytest.param("/api/v1/events?extension=101&extension=102", "extension", id="events-poll"),
    pytest.param("/api/v1/events?cursor=0&timeout=0&cursor=5", "cursor", id="events-poll-cursor"),
    pytest.param("/api/v1/events/stream?timeout=0&timeout=0", "timeout", id="events-stream"),
    pytest.param(
        f"/api/v1/recordings/{CALL}/mix?expires=9999999999&sig={'0' * 64}&sig={'1' * 64}", "sig",
        id="recordings-link",
    ),
    pytest.param("/readyz?role=live&role=standby", "role", id="readyz"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "name"), QUERIES)
async def test_a_query_parameter_twice_is_400_naming_it(
    client: httpx.AsyncClient, path: str, name: str
) -> None:
    duplicate(await client.get(path, headers=bearer(DESK101)), name)


async def test_the_event_feed_checks_the_token_before_a_repeated_parameter(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/events?extension=101&extension=101")
    assert response.status_code == 401


async def test_parameters_given_once_and_a_monitors_own_repeated_are_read(
    client: httpx.AsyncClient,
) -> None:
    """Only the parameters an endpoint reads are checked: a monitor's
    cache-buster given twice on /readyz is none of callrouter's business."""
    poll = await client.get("/api/v1/events?extension=101&timeout=0", headers=bearer(DESK101))
    assert poll.status_code == 200, poll.text
    ready = await client.get("/readyz?_=1&_=2")
    assert ready.status_code == 200, ready.text


OTHER = new_token()
HEADERS = [
    pytest.param(
        "GET", "/api/v1/events?timeout=0",
        [("Authorization", f"Bearer {DESK101}"), ("Authorization", f"Bearer {OTHER}")],
        "", "Authorization", id="authorization",
    ),
    pytest.param(
        "GET", "/api/v1/events?timeout=0",
        [("Authorization", f"Bearer {ADMIN}"), ("authorization", f"Bearer {ADMIN}")],
        "", "Authorization", id="authorization-same-twice",
    ),
    pytest.param(
        "GET", "/api/v1/events/stream?timeout=0",
        [*bearer(DESK101).items(), ("Last-Event-ID", "0"), ("Last-Event-ID", "5")],
        "", "Last-Event-ID", id="last-event-id",
    ),
    pytest.param(
        "POST", "/api/v1/calls",
        [*bearer(DESK101).items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        '{"from": "101", "to": "79161234567"}', "Idempotency-Key", id="idempotency-key",
    ),
    pytest.param(
        "POST", "/ui/login",
        [*JSON.items(), ("X-Callrouter-UI", "1"), ("X-Callrouter-UI", "0")],
        '{"token": "a"}', "X-Callrouter-UI", id="ui-marker",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "headers", "body", "name"), HEADERS)
async def test_a_header_the_api_reads_given_twice_is_400_naming_it(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: str,
    name: str,
) -> None:
    response = await client.request(method, path, headers=headers, content=body)
    duplicate(response, name)


async def test_a_header_the_api_does_not_read_may_come_twice(client: httpx.AsyncClient) -> None:
    """Only the headers the API reads are checked: a proxy's own (``Via``,
    ``X-Forwarded-For`` of each hop) given twice is read as ever."""
    headers = [*bearer(DESK101).items(), ("Via", "1.1 a"), ("Via", "1.1 b")]
    response = await client.get("/api/v1/events?timeout=0", headers=headers)
    assert response.status_code == 200, response.text
