"""Request bodies are parsed within bounds: a hostile body is a 400, never a 500.

Before: ``json.loads`` raised ``RecursionError`` for ``[`` repeated 30,000 times
(before any token was checked, on ``/ui/login``), ``ValueError`` for a number
of 5,000 digits (Python's ``int`` limit), and ``/api/v1/explain`` accepted
lookups nested 700 deep that then overflowed the stack further on: each was a
500 with a traceback in the log. Now nesting, numbers and text are bounded in
``router.api.context.decode_json``, answered 400 with what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from router.api.app import build_app
from router.api.auth import hash_token, new_token
from router.api.context import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_DIGITS,
    ApiContext,
    decode_json,
    read_json,
)
from router.api.errors import ApiError
from router.api.settings import ApiSettings, TokenSettings
from router.plugin_registry import plugin_registry
from router.rules.ruleset import RuleSet, load_rules
from router.testing import StubEngine

ADMIN = new_token()
EXPLAIN = new_token()

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


def token(name: str, text: str, allow: tuple[str, ...]) -> TokenSettings:
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(hash_token(text).removeprefix("sha256:")),
        allow=allow,
        extensions=("*",),
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
        "admin": token("admin", ADMIN, ("ami:*",)),
        "script": token("script", EXPLAIN, ("rules:explain", "ui:read")),
    }
    app = build_app(ApiContext(stub, ApiSettings(tokens=tokens), rules=lambda: ruleset))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api.test"
    ) as http:
        yield http
    await stub.aclose()


def problem(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["detail"])


JSON = {"Content-Type": "application/json"}
UI = {"X-Callrouter-UI": "1", **JSON}


async def test_deep_nesting_without_a_token_is_400_not_a_recursion_error(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    response = await client.post("/ui/login", headers=UI, content=b"[" * 30_000)
    assert problem(response) == (
        f"malformed JSON: arrays and objects nested deeper than {MAX_JSON_DEPTH} levels"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_huge_number_is_400_not_a_value_error(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    digits = b"9" * 5_000
    login = await client.post("/ui/login", headers=UI, content=b'{"token": ' + digits + b"}")
    negative = await client.post("/ui/login", headers=UI, content=b'{"token": -' + digits + b"}")
    real = await client.post("/ui/login", headers=UI, content=b'{"token": 0.' + digits + b"}")
    ami = await client.post(
        "/api/v1/ami/Ping",
        headers={"Authorization": f"Bearer {ADMIN}", **JSON},
        content=b'{"Channel": ' + digits + b"}",
    )
    expected = f"malformed JSON: a number longer than {MAX_NUMBER_DIGITS} characters"
    assert [problem(r) for r in (login, negative, real, ami)] == [expected] * 4
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_explain_lookups_nested_700_deep_are_400(client: httpx.AsyncClient) -> None:
    deep = "[" * 700 + "]" * 700
    body = (
        '{"caller": "79161234567", "did": "1", "lookups": {"onec.responsible": '
        '{"found": true, "manager": {"extension": "101"}, "deep": ' + deep + "}}}"
    )
    response = await client.post(
        "/api/v1/explain", headers={"Authorization": f"Bearer {EXPLAIN}", **JSON}, content=body
    )
    assert "nested deeper than" in problem(response)
    # Lookups as deep as a 1C answer may be still explain.
    shallow = "[" * 20 + "]" * 20
    fine = await client.post(
        "/api/v1/explain",
        headers={"Authorization": f"Bearer {EXPLAIN}", **JSON},
        content=body.replace(deep, shallow),
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["decision"]["rules"] == ["owner"]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_not_json(client: httpx.AsyncClient, constant: bytes) -> None:
    response = await client.post("/ui/login", headers=UI, content=b'{"token": ' + constant + b"}")
    assert problem(response) == f"malformed JSON: {constant.decode()} is not a JSON value"


async def test_a_lone_surrogate_is_400_not_an_encoding_error_at_asterisk(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    response = await client.post(
        "/api/v1/ami/Setvar",
        headers={"Authorization": f"Bearer {ADMIN}", **JSON},
        content=b'{"Variable": "X", "Value": "\\ud800"}',
    )
    assert "lone surrogate" in problem(response)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_depth_bound_is_exact_and_ignores_brackets_in_strings() -> None:
    at_bound = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert decode_json(at_bound) is not None
    with pytest.raises(ApiError, match="nested deeper than"):
        decode_json(b"[" + at_bound + b"]")
    # Brackets inside strings are text, escaped quotes included.
    text = b'{"a": "' + b"[{" * 1000 + b'\\"' + b"[" * 1000 + b'"}'
    decoded = decode_json(text)
    assert isinstance(decoded, dict)
    assert decoded["a"].startswith("[{[{")
    # An unterminated string is a JSON error, in linear time.
    with pytest.raises(ApiError, match="malformed JSON: Unterminated string"):
        decode_json(b'["' + b"\\" * 60_000)


def test_numbers_up_to_the_bound_still_parse() -> None:
    assert decode_json(b"[" + b"9" * MAX_NUMBER_DIGITS + b"]") == [int("9" * MAX_NUMBER_DIGITS)]
    assert decode_json(b'{"n": -42, "x": 1.5e3}') == {"n": -42, "x": 1500.0}
    # A pair of surrogates is one character, not a lone surrogate.
    assert decode_json(b'"\\ud83d\\ude00"') == "\U0001f600"


async def test_a_body_with_a_utf8_byte_order_mark_is_read(client: httpx.AsyncClient) -> None:
    """1C's ``HTTPЗапрос.УстановитьТелоИзСтроки(Текст, КодировкаТекста.UTF8)`` writes a
    BOM unless told ``ИспользованиеByteOrderMark.НеИспользовать``; the API answered
    "Unexpected UTF-8 BOM (decode using utf-8-sig)", advice for Python, not for 1C.
    RFC 8259 lets a reader skip it, as the 1C double does for callrouter's own posts
    (issue 16). Only one, and only in front: a second is text, so malformed JSON."""
    body = b'{"caller": "8 (916) 123-45-67", "did": "74951234567"}'
    headers = {"Authorization": f"Bearer {EXPLAIN}", **JSON}
    read = await client.post("/api/v1/explain", headers=headers, content=b"\xef\xbb\xbf" + body)
    assert read.status_code == 200, read.text
    twice = await client.post(
        "/api/v1/explain", headers=headers, content=b"\xef\xbb\xbf" * 2 + body
    )
    assert "malformed JSON" in problem(twice)
    latin = await client.post(
        "/api/v1/explain", headers=headers, content=b"\xef\xbb\xbf" + body.replace(b"8 (", b"\xe9(")
    )
    assert problem(latin) == "malformed JSON: not UTF-8 at byte 15"
    assert latin.json()["position"] == 15


class _Body:
    """A request whose body arrives as ``chunks`` (what :func:`read_json` reads:
    its headers, none here, for the ``Content-Length`` it declares, and the body)."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks = chunks
        self.headers: dict[str, str] = {}

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


@pytest.mark.parametrize("body", [b"", b"  \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \r\n"])
async def test_a_body_of_a_byte_order_mark_alone_is_an_empty_one(body: bytes) -> None:
    """1C writes its BOM before an empty text as well: an optional body (POST
    .../recording) of the BOM alone is no body, ``{}``, as an empty one is; it was
    "malformed JSON: Expecting value". A required one is asked for as when empty."""
    assert await read_json(_Body(body)) == {}  # type: ignore[arg-type]
    with pytest.raises(ApiError, match="a JSON object is required"):
        await read_json(_Body(body), required=True)  # type: ignore[arg-type]
