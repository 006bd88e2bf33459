"""docs/api.md and docs/ru/api.md keep up with the API that is served.

Issue 13 asks for a ``curl`` example of every operation on the human page, in
English and in Russian. Promises do not stay true as endpoints are added, so
this test reads the OpenAPI document the app serves (``build_app`` over the
test kit's engine, ``GET /api/v1/openapi.json``) and demands, for each
operation, a ``curl`` command in each page with the same method and a URL that
matches the operation's path template. It also refuses examples of endpoints
that do not exist (a renamed path would leave a stale, failing example), and
the ``curl`` reader is itself tested, so a page cannot pass by being unread.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import tree_sitter_hbk
from tree_sitter import Node, Parser

from router.api.app import OPENAPI_PATH, build_app
from router.api.auth import hash_token
from router.api.calls import _may_not_transfer
from router.api.context import ApiContext
from router.api.intake import MAX_CARD_TEXT
from router.api.settings import ApiSettings, TokenSettings
from router.callerid import MAX_NUMBER, MAX_TEXT
from router.cli import main
from router.plugin_registry import plugin_registry
from router.rules.ruleset import load_rules
from router.testing import StubEngine

REPO = Path(__file__).parents[2]
PAGES = [REPO / "docs" / "api.md", REPO / "docs" / "ru" / "api.md"]
METHODS = ("get", "put", "post", "delete", "patch")

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_DATA_OPTIONS = {"-d", "--data", "--data-raw", "--data-binary", "--json", "-F", "--form"}


def served_document(tmp_path: Path) -> dict[str, Any]:
    """The OpenAPI document as ``GET /api/v1/openapi.json`` serves it."""
    ctx = ApiContext(engine=StubEngine(state_dir=tmp_path), settings=ApiSettings())

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(OPENAPI_PATH)

    response = asyncio.run(fetch())
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def served_operations(tmp_path: Path) -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation in the served document."""
    paths = served_document(tmp_path)["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in METHODS
    }


def curl_requests(markdown: str) -> list[tuple[str, str]]:
    """(METHOD, URL path) of every ``curl`` command in the page's code blocks.

    The method is ``-X``/``--request``, else POST when a body is given, else
    GET; the path is the URL's, from ``/api/v1`` on (``$API`` stands for
    ``http://host:port/api/v1``), without its query string.
    """
    found: list[tuple[str, str]] = []
    for block in _FENCE.findall(markdown):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("curl "):
                continue
            words = shlex.split(line, comments=True)
            method = None
            has_body = False
            url = None
            for index, word in enumerate(words[1:], start=1):
                if word in ("-X", "--request"):
                    method = words[index + 1].upper()
                elif word.startswith("-X") and len(word) > 2:
                    method = word[2:].upper()
                elif word in _DATA_OPTIONS:
                    has_body = True
                elif "/api/v1" in word or word.startswith("$API"):
                    url = word
            if url is None:
                continue
            path = "/api/v1" + url.split("$API", 1)[1] if url.startswith("$API") else url
            path = "/api/v1" + path.split("/api/v1", 1)[1]
            path = path.split("?", 1)[0].split("#", 1)[0]
            found.append((method or ("POST" if has_body else "GET"), path))
    return found


def _template(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
    return re.compile(pattern + r"/?")


def matches(operation: tuple[str, str], request: tuple[str, str]) -> bool:
    method, template = operation
    return request[0] == method and _template(template).fullmatch(request[1]) is not None


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    return served_operations(tmp_path_factory.mktemp("engine"))


def test_the_served_document_has_the_issue_s_operations(
    operations: set[tuple[str, str]],
) -> None:
    assert ("GET", OPENAPI_PATH) in operations
    assert ("POST", "/api/v1/ami/{action}") in operations
    assert ("PUT", "/api/v1/extensions/{ext}/forwarding") in operations


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_operation_has_a_curl_example(page: Path, operations: set[tuple[str, str]]) -> None:
    requests = curl_requests(page.read_text(encoding="utf-8"))
    missing = sorted(
        f"{method} {path}"
        for method, path in operations
        if not any(matches((method, path), request) for request in requests)
    )
    assert not missing, f"{page.relative_to(REPO)} has no curl example for: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_curl_example_is_a_served_operation(
    page: Path, operations: set[tuple[str, str]]
) -> None:
    stale = sorted(
        f"{method} {path}"
        for method, path in curl_requests(page.read_text(encoding="utf-8"))
        if not any(matches(operation, (method, path)) for operation in operations)
    )
    assert not stale, f"{page.relative_to(REPO)} shows requests nothing serves: {stale}"


def test_the_russian_page_follows_the_english_one() -> None:
    """Same sections and the same requests: a section added in English only is caught."""
    english, russian = (page.read_text(encoding="utf-8") for page in PAGES)
    headings = re.compile(r"^(#{1,4}) ", re.M)
    assert headings.findall(russian) == headings.findall(english)
    assert sorted(curl_requests(russian)) == sorted(curl_requests(english))


SAMPLE = """\
Text with curl $API/not/in/a/block.

```sh
curl -H "Authorization: Bearer $TOKEN" $API/calls
curl -X POST -H 'Idempotency-Key: k1' "$API/calls" \\
     -d '{"from": "101", "to": "79161234567"}'
curl --request PUT http://127.0.0.1:8089/api/v1/extensions/101/forwarding --json '{"dnd": true}'
curl -sN "$API/events?cursor=0&timeout=25"   # long-poll
curl -XDELETE $API/calls/1700000000.42
echo curl is not at the start of this line $API/presence
```
"""


def test_the_curl_reader_finds_method_and_path() -> None:
    assert curl_requests(SAMPLE) == [
        ("GET", "/api/v1/calls"),
        ("POST", "/api/v1/calls"),
        ("PUT", "/api/v1/extensions/101/forwarding"),
        ("GET", "/api/v1/events"),
        ("DELETE", "/api/v1/calls/1700000000.42"),
    ]


def test_a_path_template_matches_one_segment_per_parameter() -> None:
    operation = ("PUT", "/api/v1/extensions/{ext}/forwarding")
    assert matches(operation, ("PUT", "/api/v1/extensions/101/forwarding"))
    assert not matches(operation, ("GET", "/api/v1/extensions/101/forwarding"))
    assert not matches(operation, ("PUT", "/api/v1/extensions/1/0/forwarding"))
    assert not matches(operation, ("PUT", "/api/v1/extensions/101/forwarding/x"))


# Every JSON answer the pages show is one the served document allows: a 1C developer
# copies field names and types from them (a "..." in one is no JSON at all).
_HEADING = re.compile(r"^#{1,6} ", re.M)


def json_examples(markdown: str) -> list[tuple[int, str, list[tuple[str, str]]]]:
    """(line, text, the curl requests of its section before it) of each ``json`` block."""
    found = []
    section_start = 0
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, re.M | re.S):
        start = match.start()
        headings = [h.start() for h in _HEADING.finditer(markdown, 0, start)]
        heading = max((h for h in headings if not _inside_fence(markdown, h)), default=0)
        section_start = max(section_start, heading)
        if match.group(1) == "json":
            before = markdown[section_start:start]
            found.append((markdown[:start].count("\n") + 1, match.group(2), curl_requests(before)))
    return found


def _inside_fence(markdown: str, position: int) -> bool:
    return markdown.count("\n```", 0, position) % 2 == 1


def example_problems(document: dict[str, Any], text: str, requests: list[tuple[str, str]]) -> str:
    """Why the example is no answer of the operations shown before it ("" when it is one).

    An example with ``status`` is a problem document; the others must match a JSON
    answer of one of the section's operations (the Errors section has none: there
    only problem documents are shown).
    """
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    schemas: list[dict[str, Any]] = []
    if isinstance(body, dict) and "status" in body:
        schemas.append({"$ref": "#/components/schemas/Problem"})
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            if not any(matches((method.upper(), template), r) for r in requests):
                continue
            for answer in operation["responses"].values():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None:
                    schemas.append(schema)
    errors = []
    for schema in schemas:
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        found = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
        if not found:
            return ""
        errors.append("; ".join(found))
    return " | ".join(errors) or f"no JSON answer of {requests} to compare with"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_json_example_is_an_answer_the_document_allows(
    page: Path, document: dict[str, Any]
) -> None:
    examples = json_examples(page.read_text(encoding="utf-8"))
    assert len(examples) >= 10
    wrong = {
        line: problem
        for line, text, requests in examples
        if (problem := example_problems(document, text, requests))
    }
    assert wrong == {}, f"{page.relative_to(REPO)}: examples the API would never answer"


def test_an_example_out_of_step_with_the_document_is_caught(document: dict[str, Any]) -> None:
    calls = [("GET", "/api/v1/calls")]
    assert example_problems(document, '{"calls": []}', calls) == ""
    assert "not JSON" in example_problems(document, '{"calls": [...]}', calls)
    assert '"calls" is a required property' in example_problems(document, '{"call": []}', calls)
    assert "required" in example_problems(document, '{"status": 404, "detail": "x"}', [])
    page = "## A\n```sh\ncurl $API/calls\n```\n```json\n{}\n```\n## B\n```json\n{}\n```\n"
    assert [requests for _, _, requests in json_examples(page)] == [calls, []]


# The 1C module is documentation that runs: what it sends must be what is served.
BSL_MODULE = REPO / "examples" / "onec" / "CallRouterAPI.bsl"
_BSL_CALL = "ВызватьAPI"


@dataclass(frozen=True)
class BslRequest:
    """One ``ВызватьAPI`` call of the 1C module, as the server will see it."""

    function: str
    method: str
    path: str
    query: frozenset[str]
    body: frozenset[str]
    headers: frozenset[str]


def _string(node: Node) -> str | None:
    """The text of a string literal expression, else None."""
    while node.type in ("expression", "const_expression") and node.named_child_count == 1:
        child = node.named_children[0]
        assert child is not None
        node = child
    if node.type != "string":
        return None
    text = (node.text or b"").decode("utf-8")
    return text[1:-1].replace('""', '"')


def _concatenation(node: Node) -> str:
    """A ``"..." + x + "..."`` expression with every non-literal part as ``{}``."""
    literal = _string(node)
    if literal is not None:
        return literal
    while node.type == "expression" and node.named_child_count == 1:
        child = node.named_children[0]
        assert child is not None
        node = child
    if node.type == "binary_expression":
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        assert left is not None
        assert right is not None
        return _concatenation(left) + _concatenation(right)
    return "{}"


def bsl_requests(source: bytes) -> list[BslRequest]:
    """Every ``ВызватьAPI(Метод, "/path" + ..., ...)`` of the module, with what it sends.

    The body's keys are those its function puts in ``Тело`` (``Новый Структура("a, b")``,
    ``Тело.Вставить("c")``), the headers those put in ``Заголовки``, the query's names
    every ``?name=``/``&name=`` in the function's strings.
    """
    parser = Parser(tree_sitter_hbk.Language())
    tree = parser.parse(source)
    found: list[BslRequest] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type not in ("function_definition", "procedure_definition"):
            continue
        name_node = node.child_by_field_name("name")
        text = (node.text or b"").decode("utf-8")
        calls = [node]
        while calls:
            call = calls.pop()
            calls.extend(call.children)
            called = call.child_by_field_name("name") if call.type == "method_call" else None
            if called is None or (called.text or b"").decode("utf-8") != _BSL_CALL:
                continue
            arguments = call.child_by_field_name("arguments")
            assert arguments is not None
            method_node, path_node = arguments.named_children[:2]
            assert method_node is not None
            assert path_node is not None
            method = _string(method_node)
            assert method is not None, f"{_BSL_CALL}: the method is not a literal"
            path = _concatenation(path_node).split("?", 1)[0]
            body: set[str] = set()
            for fields in re.findall(r'Тело\s*=\s*Новый Структура\("([^"]*)"', text):
                body.update(key.strip() for key in fields.split(",") if key.strip())
            body.update(re.findall(r'Тело\.Вставить\("([^"]+)"', text))
            found.append(
                BslRequest(
                    function=(name_node.text or b"").decode("utf-8") if name_node else "?",
                    method=method.upper(),
                    path="/api/v1" + path,
                    query=frozenset(re.findall(r"[?&]([A-Za-z_]+)=", text)),
                    body=frozenset(body),
                    headers=frozenset(re.findall(r'Заголовки\.Вставить\("([^"]+)"', text)),
                )
            )
    return found


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return served_document(tmp_path_factory.mktemp("engine"))


def _operation(document: dict[str, Any], request: BslRequest) -> dict[str, Any] | None:
    for template, operations in document["paths"].items():
        if matches((request.method, template), (request.method, request.path)):
            operation = operations.get(request.method.lower())
            if operation is not None:
                return dict(operation)
    return None


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = document
    for part in str(ref).removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(document, node)


def test_the_1c_module_is_read() -> None:
    requests = {r.function: r for r in bsl_requests(BSL_MODULE.read_bytes())}
    assert {"Позвонить", "ПеревестиЗвонок", "УстановитьПереадресацию", "ПолучитьСобытия"} <= set(
        requests
    )
    assert requests["ПеревестиЗвонок"].path == "/api/v1/calls/{}/transfer"
    assert requests["Позвонить"].body == {"from", "to"}
    assert requests["Позвонить"].headers == {"Idempotency-Key"}
    assert {"timeout", "cursor"} <= requests["ПолучитьСобытия"].query
    # Hanging up and listing calls from 1C (issue 16): the API served them, the module
    # did not, so a 1C developer had to write the requests by hand.
    assert requests["ЗавершитьЗвонок"].method == "POST"
    assert requests["ЗавершитьЗвонок"].path == "/api/v1/calls/{}/hangup"
    assert (requests["Звонки"].method, requests["Звонки"].path) == ("GET", "/api/v1/calls")
    assert (requests["Звонок"].method, requests["Звонок"].path) == ("GET", "/api/v1/calls/{}")


def mismatches(document: dict[str, Any], request: BslRequest) -> list[str]:
    """What the module sends that the served document does not take."""
    where = f"{BSL_MODULE.name}: {request.function} ({request.method} {request.path})"
    operation = _operation(document, request)
    if operation is None:
        return [f"{where}: the API serves no such operation"]
    found = []
    parameters = [_resolve(document, p) for p in operation.get("parameters", [])]
    query = {p["name"] for p in parameters if p.get("in") == "query"}
    headers = {p["name"].lower() for p in parameters if p.get("in") == "header"}
    if not request.query <= query:
        found.append(f"{where}: query {sorted(request.query - query)} not served")
    unknown_headers = sorted(h for h in request.headers if h.lower() not in headers)
    if unknown_headers:
        found.append(f"{where}: headers {unknown_headers} not in the document")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if request.body and body is None:
        found.append(f"{where}: sends a JSON body the operation does not take")
    elif body is not None:
        schema = _resolve(document, body["schema"])
        properties = set(schema.get("properties", {}))
        required = set(schema.get("required", []))
        if not request.body <= properties:
            found.append(f"{where}: body fields {sorted(request.body - properties)} unknown")
        if not required <= request.body:
            found.append(f"{where}: required body fields {sorted(required - request.body)} unsent")
    return found


@pytest.mark.parametrize(
    "request_",
    bsl_requests(BSL_MODULE.read_bytes()),
    ids=lambda request_: request_.function,
)
def test_the_1c_module_sends_what_the_api_serves(
    request_: BslRequest, document: dict[str, Any]
) -> None:
    assert mismatches(document, request_) == []


WRONG_MODULE = """\
Функция Перевести(Ид, Куда) Экспорт
\tТело = Новый Структура("to, attended", Куда, Истина);
\tВозврат ВызватьAPI("POST", "/calls/" + Ид + "/transfer", Тело);
КонецФункции

Функция Звонки(Курсор) Экспорт
\tВозврат ВызватьAPI("GET", "/call?after=" + Курсор);
КонецФункции
"""


def test_a_module_out_of_step_with_the_api_is_caught(document: dict[str, Any]) -> None:
    requests = {r.function: r for r in bsl_requests(WRONG_MODULE.encode())}
    transfer = " ".join(mismatches(document, requests["Перевести"]))
    assert "['attended'] unknown" in transfer
    assert mismatches(document, requests["Звонки"]) == [
        f"{BSL_MODULE.name}: Звонки (GET /api/v1/call): the API serves no such operation"
    ]


def bsl_answer_reads(source: bytes) -> dict[str, tuple[BslRequest, set[str]]]:
    """Each function of the module that picks fields out of its ``ВызватьAPI`` answer
    (``Ответ.Получить("name")``): its request and the names it reads. A function
    that returns the answer whole (``Возврат ВызватьAPI(...)``) is left out: its
    caller gets every field."""
    requests = {r.function: r for r in bsl_requests(source)}
    tree = Parser(tree_sitter_hbk.Language()).parse(source)
    found: dict[str, tuple[BslRequest, set[str]]] = {}
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type not in ("function_definition", "procedure_definition"):
            continue
        name_node = node.child_by_field_name("name")
        name = (name_node.text or b"").decode("utf-8") if name_node else "?"
        text = (node.text or b"").decode("utf-8")
        read = set(re.findall(r'Ответ\.Получить\("([^"]+)"\)', text))
        if name in requests and read:
            found[name] = (requests[name], read)
    return found


def answer_mismatches(document: dict[str, Any], source: bytes) -> list[str]:
    """What the module reads that the 200 answer lacks, and what the 200 answer
    holds at its top level that a function picking fields out of it never reads (a
    field added to the API, such as GET /presence's ``complete``, that 1C would
    go on without)."""
    found = []
    for function, (request, read) in sorted(bsl_answer_reads(source).items()):
        operation = _operation(document, request)
        assert operation is not None, request
        content = operation["responses"]["200"]["content"]["application/json"]
        properties = set(_resolve(document, content["schema"]).get("properties", {}))
        where = f"{BSL_MODULE.name}: {function} ({request.method} {request.path})"
        if read - properties:
            found.append(f"{where}: reads {sorted(read - properties)}, not in the answer")
        if properties - read:
            found.append(f"{where}: never reads {sorted(properties - read)} of the answer")
    return found


def test_the_1c_module_reads_every_field_of_the_answers_it_picks_from(
    document: dict[str, Any],
) -> None:
    """hnewuser44's trial (issue 16): the module had no GET /presence, so a panel
    could not tell a cut list (``complete`` false) or skipped items
    (``unread_items``) from Asterisk's whole state; every answer's fields are
    read now, and a field the API adds fails here until the module reads it."""
    reads = bsl_answer_reads(BSL_MODULE.read_bytes())
    assert {"Присутствие", "ПолучитьСобытия", "Звонки"} <= set(reads)
    assert {"complete", "unread_items", "extensions"} <= reads["Присутствие"][1]
    assert answer_mismatches(document, BSL_MODULE.read_bytes()) == []


def test_a_module_that_skips_a_field_of_the_answer_is_caught(document: dict[str, Any]) -> None:
    module = """\
Функция Присутствие() Экспорт
\tОтвет = ВызватьAPI("GET", "/presence");
\tВозврат Ответ.Получить("extensions");
КонецФункции

Функция ПолучитьСобытия() Экспорт
\tОтвет = ВызватьAPI("GET", "/events?timeout=0");
\tВозврат Ответ.Получить("events").Количество() + Ответ.Получить("gaps");
КонецФункции
"""
    assert answer_mismatches(document, module.encode()) == [
        f"{BSL_MODULE.name}: ПолучитьСобытия (GET /api/v1/events): reads ['gaps'], "
        "not in the answer",
        f"{BSL_MODULE.name}: ПолучитьСобытия (GET /api/v1/events): never reads ['cursor', 'gap'] "
        "of the answer",
        f"{BSL_MODULE.name}: Присутствие (GET /api/v1/presence): never reads "
        "['complete', 'unread_items'] of the answer",
    ]


def _bsl_definition(source: bytes, name: str) -> str:
    tree = Parser(tree_sitter_hbk.Language()).parse(source)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        name_node = node.child_by_field_name("name")
        if (
            node.type in ("function_definition", "procedure_definition")
            and name_node
            and (name_node.text or b"").decode("utf-8") == name
        ):
            return (node.text or b"").decode("utf-8")
    raise AssertionError(f"no {name} in the module")


def test_the_1c_job_tells_the_panels_of_a_gap() -> None:
    """docs/api.md: on ``gap`` refresh what you show (GET /calls, GET /presence). The
    job only logged a warning, so panels built from the feed went on from a view
    with events missing (hnewuser44's trial, issue 16); it now sends every user
    with an extension an event of kind ``gap``."""
    source = BSL_MODULE.read_bytes()
    job = _bsl_definition(source, "ОбработатьЛентуСобытий")
    on_gap = job[job.index("Если Пачка.Пропуск Или ПослеСбоя Тогда") :]
    on_gap = on_gap[: on_gap.index("КонецЕсли;")]
    assert "РазослатьПропуск();" in on_gap
    tell = _bsl_definition(source, "РазослатьПропуск")
    assert 'Событие.Вставить("kind", "gap");' in tell
    assert "СерверныеОповещения.ОтправитьСерверноеОповещение(ИмяОповещения(), Событие" in tell
    assert "ПользователиИБПоНомеру(Неопределено)" in tell


def test_the_1c_job_tells_the_panels_of_a_gap_after_callrouter_was_unreachable() -> None:
    """h1c46's trial (issue 16): calls made while callrouter is stopped (a restart)
    are not in the feed, and the feed does not call that stretch a gap, so a panel
    kept showing 101 talking on a call that had ended meanwhile. The job, which
    returns when callrouter cannot be reached, marks the stored cursor ("!" in
    front); the next run strips it, polls from the cursor, and once callrouter
    answers sends the panels a ``gap``, then stores the cursor without the mark."""
    source = BSL_MODULE.read_bytes()
    job = _bsl_definition(source, "ОбработатьЛентуСобытий")
    start = job[: job.index("Пока ")]
    assert 'ПослеСбоя = СтрНачинаетсяС(Записано, "!");' in start
    assert "Курсор = ?(ПослеСбоя, Сред(Записано, 2), Записано);" in start
    failed = job[job.index("Исключение") : job.index("КонецПопытки;")]
    assert 'Константы.ТелефонияКурсорСобытийCallRouter.Установить("!" + Курсор);' in failed
    assert failed.index("Установить(") < failed.index("Возврат;")
    after = job[job.index("КонецПопытки;") :]
    on_gap = after[after.index("Если Пачка.Пропуск Или ПослеСбоя Тогда") :]
    on_gap = on_gap[: on_gap.index("КонецЕсли;")]
    assert "РазослатьПропуск();" in on_gap
    assert "ПослеСбоя = Ложь;" in on_gap  # told once per run, not at every poll
    # The cursor is stored without the mark once callrouter answered.
    store = after[after.index("Курсор = Пачка.Курсор;") :]
    assert "Если Курсор <> Записано Тогда" in store
    assert "Константы.ТелефонияКурсорСобытийCallRouter.Установить(Записано);" in store
    assert store.index("Записано = Курсор;") < store.index("Установить(Записано)")


def test_the_1c_jobs_first_read_after_callrouter_was_unreachable_does_not_wait() -> None:
    """The ``gap`` of a marked cursor went out after the run's first read, a 25 s
    long-poll: with the feed quiet, panels showed the outage's stale calls and
    phones for up to 25 s after callrouter was back (issue 16). That read now asks
    with ``timeout=0`` when the cursor was marked, and waits 25 s otherwise."""
    tree = Parser(tree_sitter_hbk.Language()).parse(BSL_MODULE.read_bytes())
    stack, reads = [tree.root_node], []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type == "procedure_definition" and "ОбработатьЛентуСобытий" in (
            (node.child_by_field_name("name") or node).text or b""
        ).decode("utf-8"):
            reads = [
                n
                for n in _bsl_nodes(node)
                if n.type == "method_call"
                and (n.text or b"").startswith("ПолучитьСобытия(".encode())
            ]
    assert len(reads) == 1, "the job reads the feed in one place"
    (arguments,) = [c for c in reads[0].children if c.type == "arguments"]
    wait = [c for c in arguments.children if c.type == "expression"][1]
    (choice,) = [c for c in wait.children if c.type == "ternary_expression"] or [None]
    assert choice is not None, f"the job's wait does not depend on the mark: {wait.text!r}"
    condition, marked, unmarked = [c.text for c in choice.children if c.type == "expression"]
    assert (condition, marked, unmarked) == ("ПослеСбоя".encode(), b"0", b"25")


def _bsl_nodes(root: Node) -> list[Node]:
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.children)
    return found


TOKEN_SOURCES = [
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted((REPO / "examples").rglob("*.md")),
]


def token_commands() -> list[tuple[str, str]]:
    """(where, line) of every ``callrouter token new NAME ...`` the docs show."""
    found: dict[str, str] = {}
    for path in TOKEN_SOURCES:
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
        for match in re.finditer(r"^\s*(callrouter token new [a-z][^\n`#]*)", text, re.M):
            found.setdefault(match.group(1).strip(), str(path.relative_to(REPO)))
    return sorted((where, line) for line, where in found.items())


def _option_values(words: list[str], option: str) -> list[str]:
    """Every value the reader of the line sees after ``option`` (it may repeat)."""
    values: list[str] = []
    taking = False
    for word in words:
        if word.startswith("--"):
            taking = word == option
        elif taking:
            values.append(word)
    return values


ONEC_READMES = [
    REPO / "examples" / "onec" / "README.md",
    REPO / "examples" / "onec" / "README.ru.md",
]
_PERMISSION = re.compile(r"\b(?:calls|events|forwarding|presence|recordings):[a-z]+\b")


def _onec_token_allows(readme: Path) -> set[str]:
    """What ``--allow`` of the README's ``callrouter token new onec`` line grants."""
    text = re.sub(r"\\\n\s*", " ", readme.read_text(encoding="utf-8"))
    (line,) = re.findall(r"^\s*(callrouter token new onec [^\n`#]*)", text, re.M)
    return set(_option_values(shlex.split(line), "--allow"))


@pytest.mark.parametrize("readme", ONEC_READMES, ids=lambda readme: readme.name)
def test_the_1c_token_allows_every_request_the_module_sends(
    readme: Path, document: dict[str, Any]
) -> None:
    """The README's token for the infobase lets each function of the module work: a
    function whose request the token may not send answers every user with a 403."""
    allowed = _onec_token_allows(readme)
    for request in bsl_requests(BSL_MODULE.read_bytes()):
        operation = _operation(document, request)
        assert operation is not None, request
        needed = set(_PERMISSION.findall(json.dumps(operation)))
        assert needed, f"{request.function}: the document names no permission"
        assert needed & allowed, (
            f"{readme.relative_to(REPO)}: `callrouter token new onec` does not allow "
            f"{sorted(needed)}, which {request.function} ({request.method} {request.path}) needs"
        )


def test_every_operation_names_its_permission(document: dict[str, Any]) -> None:
    """A client reading the served document learns what its token needs for each
    operation: GET /presence named none (hnewuser44's trial, issue 16), so the
    1C token's check above could not tell whether ``presence:read`` was needed."""
    unnamed = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if path != "/api/v1/openapi.json"
        and "security" not in operation
        and not _PERMISSION.findall(json.dumps(operation))
    ]
    assert unnamed == []


def test_the_documented_token_commands_are_found() -> None:
    lines = {line for _, line in token_commands()}
    assert any(line.startswith("callrouter token new onec ") for line in lines)
    assert any(line.startswith("callrouter token new crm ") for line in lines)


@pytest.mark.parametrize(
    ("where", "line"), token_commands(), ids=[line for _, line in token_commands()]
)
def test_a_documented_token_command_grants_what_it_says(
    where: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command works as written and the lines it prints grant exactly the
    operations and extensions the reader sees on the command line."""
    words = shlex.split(line)
    assert main(words[1:]) == 0, f"{where}: `{line}` failed"
    printed = capsys.readouterr().out
    table = tomllib.loads(printed[printed.index("[api.tokens.") :])
    (settings,) = table["api"]["tokens"].values()
    assert settings["allow"] == _option_values(words, "--allow"), f"{where}: `{line}`"
    assert settings["extensions"] == _option_values(words, "--extensions"), f"{where}: `{line}`"


_SHOWN_OUTPUT = re.compile(
    r"```sh\n(callrouter token new [^\n]*)\n```\s*```text\n(token \(shown once[^`]*)```"
)


@pytest.mark.parametrize("page", ["docs/api.md", "docs/ru/api.md"])
def test_the_token_commands_output_is_what_the_docs_show(
    page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/api.md showed ``rate`` and ``burst`` lines the command never
    printed: the output the page shows is the command's, line for line, but
    for the token and its hash, which are new each time (and the page's
    hash is its token's, as a reader checking one would find) (issue 16)."""
    text = (REPO / page).read_text(encoding="utf-8")
    (shown,) = _SHOWN_OUTPUT.findall(text)
    line, output = shown
    assert main(shlex.split(line)[1:]) == 0, f"{page}: `{line}` failed"
    printed = capsys.readouterr().out
    token = re.search(r"^token \(shown once.*: (cr_\S+)$", output, re.M)
    assert token is not None, page
    hashed = hash_token(token[1])
    assert f'hash = "{hashed}"' in output, f"{page}: the hash is not its token's"
    new = re.search(r"^token \(shown once.*: (cr_\S+)$", printed, re.M)
    assert new is not None, printed
    printed = printed.replace(new[1], token[1]).replace(hash_token(new[1]), hashed)
    assert printed == output, f"{page}: the shown output is not the command's"
    # As printed, the block loads, the commented limits included once uncommented.
    block = printed[printed.index("[api.tokens.") :]
    assert "rate" not in tomllib.loads(block)["api"]["tokens"]["crm"]
    limits = tomllib.loads(block.replace("# rate", "rate").replace("# burst", "burst"))
    assert limits["api"]["tokens"]["crm"]["rate"] == ApiSettings().rate
    assert limits["api"]["tokens"]["crm"]["burst"] == ApiSettings().burst


#: Every page a user reads: the link check started with the API pages (issue 13) and now
#: covers them all (a Russian page linked to a performance.md beside it that does not exist).
LINKED_PAGES = sorted(
    {
        *REPO.glob("*.md"),
        *REPO.glob("docs/**/*.md"),
        *REPO.glob("examples/**/*.md"),
        *REPO.glob("plugins/onec/*.md"),
        *REPO.glob("bench/*.md"),
    }
)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
#: An inline code span: ``[router](base)`` there is manager.conf, not a link.
_CODE_SPAN = re.compile(r"`[^`\n]+`")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the page's headings (code blocks are no headings)."""
    text = _FENCE.sub("", markdown)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` to a missing file or a missing heading."""
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in _LINK.findall(_CODE_SPAN.sub("", _FENCE.sub("", text))):
        if re.match(r"[a-z]+:", target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif (
            anchor
            and linked.suffix == ".md"
            and anchor not in github_anchors(linked.read_text(encoding="utf-8"))
        ):
            broken.append(f"{target}: no such heading")
    return broken


def test_a_code_span_is_no_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("A user `[router](base)` and [a link](missing.md).\n", encoding="utf-8")
    assert broken_links(page) == ["missing.md: no such file"]


def test_github_anchors_follow_github() -> None:
    assert github_anchors(
        "# A\n## Turning it on: `[api]`\n## HTTP API из 1С: модуль `X`\n## A\n"
    ) == {
        "a",
        "turning-it-on-api",
        "http-api-из-1с-модуль-x",
        "a-1",
    }


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_the_api_pages_link_to_what_exists(page: Path) -> None:
    assert broken_links(page) == []


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## Its part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#its-part) [gone](missing.md) [typo](other.md#its-prat) [web](https://x/#y)"
        "\n```sh\ncurl [not](a-link)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["missing.md: no such file", "other.md#its-prat: no such heading"]


# The members a problem document can carry besides type, title, status, detail.
_NOT_MEMBERS = {"title", "headers"}


def problem_members(root: Path) -> dict[str, str]:
    """Extension member -> where the API sets it: every keyword of an
    ``ApiError(...)``/``problem_body(...)``/``_problem(...)`` call and every
    ``.extra["name"] = ...`` in router/api."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in ("ApiError", "problem_body", "_problem"):
                    for keyword in node.keywords:
                        if keyword.arg is not None and keyword.arg not in _NOT_MEMBERS:
                            found.setdefault(keyword.arg, where)
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "extra"
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
            ):
                found.setdefault(node.slice.value, where)
    return found


def test_every_problem_member_is_in_the_document(document: dict[str, Any]) -> None:
    """A client (the 1C module reads ``field``, ``missing_permission``,
    ``did_you_mean``) learns the members from the Problem schema: ``extension``
    (403), ``line``/``column``/``position`` (malformed JSON), ``ami_response``
    (409) and ``phase`` (503 while starting) were served but not described
    (issue 16)."""
    members = problem_members(REPO / "router" / "api")
    assert {"field", "missing_permission", "extension", "line", "ami_response"} <= members.keys()
    described = document["components"]["schemas"]["Problem"]["properties"]
    missing = {name: where for name, where in members.items() if name not in described}
    assert missing == {}, "problem members the OpenAPI document does not describe"
    undocumented = [name for name in members if f"`{name}`" not in PAGES[0].read_text()]
    assert undocumented == [], "problem members docs/api.md does not name"


def test_every_operation_with_a_body_lists_413_and_400(document: dict[str, Any]) -> None:
    """Every JSON body goes through one reader that answers 413 over 64 KiB and 400
    for malformed JSON; ``PUT /extensions/{ext}/forwarding`` answered 413 while its
    document did not list it, so a client generated from the document had no case
    for it (issue 16)."""
    missing = [
        f"{method.upper()} {path}: {status}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
        for status in ("400", "413")
        if status not in operation["responses"]
    ]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_feed_kinds_are_those_the_document_enumerates(
    page: Path, document: dict[str, Any]
) -> None:
    """The FeedEvent schema described ``kind`` as "ringing, ..., device, and the
    forwarding endpoints' changes": ``click_to_call`` was nowhere, so a client built
    from the document had no case for the click-to-call progress docs/api.md shows
    (issue 16). The schema enumerates them; the page's table names the same."""
    text = page.read_text(encoding="utf-8")
    start = text.index("| kind |")
    table = text[start : text.index("\n\n", start)]
    kinds: list[str] = []
    for line in table.splitlines()[2:]:
        kinds += re.findall(r"`([a-z_]+)`", line.strip().strip("|").split("|")[0])
    schema = document["components"]["schemas"]["FeedEvent"]["properties"]["kind"]
    assert kinds == schema["enum"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_feed_s_card_example_is_an_answer_of_the_1c_contract(page: Path) -> None:
    """The card is 1C's answer to the routing lookup (docs/onec.md, the service
    contract): the feed's example showed a client found with ``"candidates": 0``,
    where the contract's answer for one client is 1 and 0 means nobody has the
    number (issue 16)."""
    onec = (page.parent / "onec.md").read_text(encoding="utf-8")
    contract = next(
        json.loads(text)
        for _line, text, _requests in json_examples(onec)
        if text.lstrip().startswith('{"found": true')
    )
    card = next(
        json.loads(text)["events"][0]["data"]["card"]
        for _line, text, _requests in json_examples(page.read_text(encoding="utf-8"))
        if '"card"' in text
    )
    assert sorted(card) == sorted(contract)
    for part in ("client", "manager"):
        assert sorted(card[part]) == sorted(contract[part]), part
    assert card["found"] is True
    assert card["candidates"] >= 1


def _valid(document: dict[str, Any], schema: str, value: object) -> bool:
    ref = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    return jsonschema_rs.validator_for(ref).is_valid(value)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_document_bounds_the_caller_s_texts_as_the_page_says(
    page: Path, document: dict[str, Any]
) -> None:
    """callrouter cuts a caller's number (and the DID) to 64 characters, a name
    and each text of a card to 500 (router.callerid, router.api.intake); the
    document said only ``string``, so neither schemathesis nor a 1C developer
    sizing an attribute saw a bound (issue 16). The page states them, next to
    the document's ``maxLength``."""
    text = page.read_text(encoding="utf-8")
    paragraph = next(p for p in text.split("\n\n") if "`maxLength`" in p)
    assert f"{MAX_NUMBER} " in paragraph
    assert f"{MAX_TEXT}" in paragraph
    assert MAX_CARD_TEXT == MAX_TEXT
    number, name = "7" * MAX_NUMBER, "Я" * MAX_TEXT
    call = {"id": "1.1", "state": "ringing", "extensions": [], "channels": []}
    assert _valid(document, "Call", {**call, "caller": number, "caller_name": name, "did": number})
    for field, longest in (("caller", number), ("caller_name", name), ("did", number)):
        assert not _valid(document, "Call", {**call, field: longest + "1"}), field
    event = {"cursor": 1, "kind": "ringing", "extension": "101", "call_id": "1.1", "ts": 1.0}
    card = {"client": {"name": name, "phones": [number]}, "candidates": 1, "found": True}
    data = {"caller": number, "caller_name": name, "did": number, "card": card}
    assert _valid(document, "FeedEvent", {**event, "data": data})
    for field in ("caller", "caller_name", "did"):
        longer = {**data, field: data[field] + "1"}
        assert not _valid(document, "FeedEvent", {**event, "data": longer}), field
    deep = {"client": {"contacts": [{"name": name + "1"}]}}
    assert not _valid(document, "FeedEvent", {**event, "data": {"card": deep}})
    assert not _valid(document, "FeedEvent", {**event, "data": {"card": {name + "1": 1}}})
    assert _valid(document, "FeedEvent", {**event, "data": {"card": None}})
    transfer = {"how": "attended", "target": number + "1", "channel": "PJSIP/101-01"}
    assert not _valid(document, "FeedEvent", {**event, "kind": "transferred", "data": transfer})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_table_of_operations_lists_every_operation_a_token_may_be_allowed(
    page: Path,
) -> None:
    """The table under **Deny by default** is where an administrator picks a
    token's `--allow`: `metrics:read` was missing from it (issue 16)."""
    from router.api.settings import OPERATIONS

    text = page.read_text(encoding="utf-8")
    start = re.search(r"^\| (?:Operation|Операция) \|", text, re.M)
    assert start, f"{page.name}: no table of operations"
    table = text[start.start() :].split("\n\n", 1)[0]
    listed = {
        name
        for line in table.splitlines()[2:]
        for name in re.findall(r"`([^`]+)`", line.split("|")[1])
    }
    expected = {*OPERATIONS, "ami:*"}
    ami_placeholder = {name for name in listed if name.startswith("ami:<")}
    assert len(ami_placeholder) == 1, f"{page.name}: no `ami:<Action>` row"
    assert listed - ami_placeholder == expected, (
        f"{page.name}: missing {sorted(expected - listed)}, "
        f"no such operation {sorted(listed - ami_placeholder - expected)}"
    )


CLICK_TO_CALL = {"api.md": "## Click-to-call", "ru/api.md": "## Звонок из 1С"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO / "docs")))
def test_click_to_call_says_what_its_attended_transfer_needs(page: Path) -> None:
    """A call from 1C is dialled out by the extension itself, so its leg transfers
    only with option T on the outbound context's Dial: the refusal says so, and the
    click-to-call section did not, which 1C developers read first (issue 16)."""
    refusal = _may_not_transfer("PJSIP/101-0000000f")
    assert "T when the extension placed the call" in refusal.detail
    text = page.read_text(encoding="utf-8")
    key = str(page.relative_to(REPO / "docs"))
    start = text.index(CLICK_TO_CALL[key])
    section = text[start : text.index("\n## ", start + 1)]
    (row,) = [line for line in section.splitlines() if line.startswith("| `Context` |")]
    assert "option `T`" in row or "опция `T`" in row
    assert "`... may not transfer ...`" in row


# The explain example is run as written against the shipped rules (rules/): a reader who
# tries it on a fresh install gets the answer the page shows (issue 16: the page's
# example, at 20:15, showed 'owner' at rules/inbound.yaml:8 where the shipped rules
# answer 'closed').
_TIMED = {"elapsed_us", "ms"}


_TOKEN = "cr_explain-example-token"


def _token_allowing(*allow: str) -> TokenSettings:
    return TokenSettings(
        name="crm",
        digest=bytes.fromhex(hash_token(_TOKEN).removeprefix("sha256:")),
        allow=allow,
        extensions=("*",),
        rate=1000,
        burst=1000,
    )


def example_differences(shown: Any, answered: Any, where: str = "") -> list[str]:
    """Where ``answered`` is not what the example ``shown`` says: ``"..."`` stands for
    anything (in a list, for the rest of it), a text ending in ``...`` for its start,
    a rule's location for the end of the path, times are measured."""
    if shown == "...":
        return []
    if isinstance(shown, dict) and isinstance(answered, dict):
        problems = [f"{where}: members {sorted(shown)} != {sorted(answered)}"]
        if sorted(shown) == sorted(answered):
            problems = []
        for key, value in shown.items():
            if key in _TIMED or key not in answered:
                continue
            if key == "location" and isinstance(value, str):
                if not str(answered[key]).endswith(value):
                    problems.append(f"{where}.location: {answered[key]!r} is not {value!r}")
                continue
            problems += example_differences(value, answered[key], f"{where}.{key}")
        return problems
    if isinstance(shown, list) and isinstance(answered, list):
        if shown and shown[-1] == "...":
            shown, answered = shown[:-1], answered[: len(shown) - 1]
        if len(shown) != len(answered):
            return [f"{where}: {len(answered)} items, the example shows {len(shown)}"]
        return [
            p
            for i, (s, a) in enumerate(zip(shown, answered, strict=True))
            for p in example_differences(s, a, f"{where}[{i}]")
        ]
    if isinstance(shown, str) and shown.endswith("...") and isinstance(answered, str):
        return [] if answered.startswith(shown[:-3]) else [f"{where}: {answered!r}"]
    return [] if shown == answered else [f"{where}: {answered!r}, the example shows {shown!r}"]


def explain_example(page: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The page's ``POST /explain`` example: its request body and the answer shown."""
    markdown = page.read_text(encoding="utf-8")
    section = markdown[markdown.index('curl -X POST "$API/explain"') :]
    words = shlex.split(section[: section.index("```")].replace("\\\n", " "))
    body = json.loads(words[words.index("-d") + 1])
    answer = section[section.index("```json\n") + 8 :]
    return body, json.loads(answer[: answer.index("```")])


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
async def test_the_explain_example_is_what_the_shipped_rules_answer(
    page: Path, tmp_path: Path
) -> None:
    body, shown = explain_example(page)
    rules = load_rules([REPO / "rules"], plugin_registry(timezone="Europe/Moscow"))
    assert not rules.errors, rules.errors
    engine = StubEngine(state_dir=tmp_path)
    settings = ApiSettings(tokens={"crm": _token_allowing("rules:explain")})
    app = build_app(ApiContext(engine, settings, rules=lambda: rules))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as http:
            reply = await http.post(
                "/api/v1/explain", json=body, headers={"Authorization": f"Bearer {_TOKEN}"}
            )
    finally:
        await engine.aclose()
    assert reply.status_code == 200, reply.text
    assert example_differences(shown, reply.json()) == []


def test_an_explain_example_out_of_step_is_caught() -> None:
    shown = {"decision": {"rules": ["owner"]}, "trace": {"rules": [{"location": "x.yaml:8"}]}}
    answered = {"decision": {"rules": ["closed"]}, "trace": {"rules": [{"location": "x.yaml:28"}]}}
    assert len(example_differences(shown, answered)) == 2
    assert (
        example_differences({"a": ["1", "..."], "text": "ab..."}, {"a": ["1", 2], "text": "abc"})
        == []
    )
    assert example_differences({"a": 1}, {"a": 1, "b": 2}) != []
