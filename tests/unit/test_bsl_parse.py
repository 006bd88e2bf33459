"""Every ``.bsl`` file in the repository parses under a real BSL grammar.

1C developers paste the modules in ``examples/onec/`` into their configuration;
a syntax error there is found by them in Designer, after we shipped it. No 1C
platform runs here, so the check is tree-sitter-hbk, a BSL grammar (issue 13):
a module must parse without ERROR or MISSING nodes, and so must every query
text in it (a string literal that starts with ВЫБРАТЬ/SELECT), under the same
package's SDBL grammar. A problem is reported as ``path:line:column`` so that
it can be found in the file, and the checker is itself tested on broken
snippets: a check that cannot fail proves nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import tree_sitter_hbk
from tree_sitter import Node, Parser

REPO = Path(__file__).parents[2]

BSL = Parser(tree_sitter_hbk.Language())
SDBL = Parser(tree_sitter_hbk.SDBLLanguage())

# The package's own injection rule (queries/injections.scm): a static string
# whose text starts with a query statement is a query.
_QUERY = re.compile(r'^"[\s|]*(ВЫБРАТЬ|SELECT|УНИЧТОЖИТЬ|DROP)(\s|$)', re.IGNORECASE)
# Inside the literal a query line continues after "|"; "" is one quote.
_CONTINUATION = re.compile(r"^[ \t]*\|", re.MULTILINE)


def bsl_files() -> list[Path]:
    """The repository's .bsl files, skipping hidden trees (.git, .venv)."""
    return sorted(
        path
        for path in REPO.rglob("*.bsl")
        if not any(part.startswith(".") for part in path.relative_to(REPO).parts)
    )


def _problems(root: Node, text: bytes, first_line: int) -> Iterator[tuple[int, int, str]]:
    """(line, column, message) for each ERROR or MISSING node, 1-based lines."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_missing:
            line, column = node.start_point
            yield first_line + line, column + 1, f"missing {node.type!r}"
        elif node.is_error:
            line, column = node.start_point
            near = text[node.start_byte : node.end_byte].decode("utf-8", "replace")
            near = " ".join(near.split())[:40]
            yield first_line + line, column + 1, f"syntax error near {near!r}"
        elif node.has_error:
            stack.extend(reversed(node.children))


def _query_text(literal: str) -> str:
    """The query as 1C sees it: quotes and the "|" margins gone, line for line."""
    body = literal[1:-1] if literal.endswith('"') and len(literal) > 1 else literal[1:]
    return _CONTINUATION.sub("", body).replace('""', '"')


def check_bsl(source: bytes, name: str) -> list[str]:
    """Every problem in one module as ``name:line:column: message``."""
    tree = BSL.parse(source)
    found = [
        f"{name}:{line}:{column}: {message}"
        for line, column, message in _problems(tree.root_node, source, 1)
    ]
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "string":
            continue
        literal = source[node.start_byte : node.end_byte].decode("utf-8")
        if not _QUERY.match(literal):
            continue
        query = _query_text(literal).encode("utf-8")
        first_line = node.start_point[0] + 1
        found.extend(
            f"{name}:{line}:{column}: in the query text: {message}"
            for line, column, message in _problems(SDBL.parse(query).root_node, query, first_line)
        )
    return sorted(found, key=lambda problem: [int(n) for n in problem.split(":")[1:3]])


def test_the_repository_has_bsl_files() -> None:
    names = {path.name for path in bsl_files()}
    assert {"TelephonyService.bsl", "TelephonyIndex.bsl", "CallRouterAPI.bsl"} <= names


@pytest.mark.parametrize(
    "path", bsl_files(), ids=[str(path.relative_to(REPO)) for path in bsl_files()]
)
def test_bsl_file_parses(path: Path) -> None:
    problems = check_bsl(path.read_bytes(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


_BSL_FENCE = re.compile(r"^```bsl\n(.*?)^```", re.MULTILINE | re.DOTALL)


def bsl_snippets() -> list[tuple[str, str]]:
    """(where, code) of every ```bsl block in the Markdown a 1C developer copies from."""
    found = []
    for page in sorted([*REPO.glob("docs/**/*.md"), *REPO.glob("examples/**/*.md")]):
        text = page.read_text(encoding="utf-8")
        for match in _BSL_FENCE.finditer(text):
            line = text.count("\n", 0, match.start(1)) + 1
            found.append((f"{page.relative_to(REPO)}:{line}", match.group(1)))
    return found


def test_the_guides_have_bsl_snippets() -> None:
    assert any(where.startswith("examples/onec/README.ru.md") for where, _ in bsl_snippets())


@pytest.mark.parametrize(("where", "code"), bsl_snippets(), ids=[w for w, _ in bsl_snippets()])
def test_bsl_snippet_in_the_docs_parses(where: str, code: str) -> None:
    """A snippet in a guide is copied as is: it must be BSL too (lines relative to the block)."""
    problems = check_bsl(code.encode(), where)
    assert not problems, "\n".join(problems)


GOOD = """\
Функция Сумма(А, Б) Экспорт
\tВозврат А + Б;
КонецФункции
"""


def test_a_valid_module_has_no_problems() -> None:
    assert check_bsl(GOOD.encode(), "good.bsl") == []


def test_a_broken_statement_is_reported_with_its_line() -> None:
    broken = (
        GOOD + "\nПроцедура Сломано()\n\tЕсли А Тогда\n\t\tБ = ;\n\tКонецЕсли;\nКонецПроцедуры\n"
    )
    problems = check_bsl(broken.encode(), "broken.bsl")
    assert problems
    assert all(problem.startswith("broken.bsl:") for problem in problems)
    assert {int(problem.split(":")[1]) for problem in problems} == {7}


def test_an_unclosed_block_is_reported_as_missing() -> None:
    broken = "Процедура Незакрыта()\n\tЕсли Истина Тогда\n\t\tА = 1;\nКонецПроцедуры\n"
    problems = check_bsl(broken.encode(), "unclosed.bsl")
    assert problems, "an Если without КонецЕсли parsed cleanly"
    assert all(problem.startswith("unclosed.bsl:") for problem in problems)


def test_a_broken_query_text_is_reported_with_its_line_in_the_module() -> None:
    module = (
        "Функция Клиенты() Экспорт\n"
        "\tЗапрос = Новый Запрос(\n"
        '\t"ВЫБРАТЬ\n'
        "\t|\tТ.Клиент КАК Клиент\n"
        "\t|ИЗ\n"
        "\t|\tРегистрСведений.Телефоны КАК Т\n"
        "\t|ГДЕ\n"
        '\t|УПОРЯДОЧИТЬ ПО");\n'
        "\tВозврат Запрос.Выполнить();\n"
        "КонецФункции\n"
    )
    problems = check_bsl(module.encode(), "query.bsl")
    assert problems, "a ГДЕ without a condition parsed cleanly"
    assert all("in the query text" in problem for problem in problems)
    lines = {int(problem.split(":")[1]) for problem in problems}
    assert lines <= {7, 8}, problems


def test_a_valid_query_text_has_no_problems() -> None:
    module = (
        "Функция Клиенты(Ключ) Экспорт\n"
        "\tЗапрос = Новый Запрос(\n"
        '\t"ВЫБРАТЬ ПЕРВЫЕ 1\n'
        "\t|\tТ.Клиент КАК Клиент\n"
        "\t|ИЗ\n"
        "\t|\tРегистрСведений.Телефоны КАК Т\n"
        "\t|ГДЕ\n"
        '\t|\tТ.Ключ = &Ключ И Т.Вид = ""Телефон""");\n'
        '\tЗапрос.УстановитьПараметр("Ключ", Ключ);\n'
        "\tВозврат Запрос.Выполнить();\n"
        "КонецФункции\n"
    )
    assert check_bsl(module.encode(), "query.bsl") == []


# The guides' snippets call the common modules the guide has one create from the shipped
# files: each call must name a method the file exports, with as many arguments as it takes
# (issue 16: a renamed or re-signed method would leave the guide's snippet failing in 1C).
_MODULE_ROW = re.compile(r"^\| Common module `(\w+)` \|.*?Text of `(\w+\.bsl)`", re.MULTILINE)
_EXPORT = re.compile(
    r"^(?:Функция|Процедура)\s+(\w+)\s*\(([^)]*)\)\s*Экспорт", re.MULTILINE | re.IGNORECASE
)
_MODULE_CALL = re.compile(r"\b(ТелефонияCallRouter\w*)\.(\w+)\(")


def _top_level_parts(text: str) -> list[str]:
    """``text`` split at its top-level commas (not inside quotes or parentheses)."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    if current.strip() or parts:
        parts.append(current)
    return [part.strip() for part in parts]


def module_exports() -> dict[str, dict[str, tuple[int, int]]]:
    """module name -> method -> (required, most) arguments, from the guide's table."""
    table = (REPO / "examples" / "onec" / "README.md").read_text(encoding="utf-8")
    modules: dict[str, dict[str, tuple[int, int]]] = {}
    for module, file in _MODULE_ROW.findall(table):
        source = (REPO / "examples" / "onec" / file).read_text(encoding="utf-8-sig")
        methods = {}
        for name, params in _EXPORT.findall(source):
            parts = _top_level_parts(params)
            methods[name] = (sum("=" not in part for part in parts), len(parts))
        modules[module] = methods
    return modules


def snippet_call_problems(code: str, modules: dict[str, dict[str, tuple[int, int]]]) -> list[str]:
    problems = []
    for match in _MODULE_CALL.finditer(code):
        module, method = match.groups()
        depth, end = 1, match.end()
        while depth and end < len(code):
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        count = len(_top_level_parts(code[match.end() : end - 1]))
        if module not in modules:
            problems.append(f"{module}: no such common module in the guide's table")
        elif method not in modules[module]:
            problems.append(f"{module}.{method}: the module exports no such method")
        elif not modules[module][method][0] <= count <= modules[module][method][1]:
            low, high = modules[module][method]
            problems.append(f"{module}.{method}: {count} arguments, it takes {low} to {high}")
    return problems


def test_the_guide_names_the_shipped_modules() -> None:
    modules = module_exports()
    assert {"ТелефонияCallRouter", "ТелефонияCallRouterВызовСервера"} <= set(modules)
    assert modules["ТелефонияCallRouterВызовСервера"]["Позвонить"] == (1, 2)


@pytest.mark.parametrize(("where", "code"), bsl_snippets(), ids=[w for w, _ in bsl_snippets()])
def test_a_snippet_calls_what_the_shipped_modules_export(where: str, code: str) -> None:
    assert snippet_call_problems(code, module_exports()) == [], where


def test_a_snippet_out_of_step_with_the_modules_is_caught() -> None:
    modules = {"ТелефонияCallRouter": {"УстановитьТокен": (1, 1)}}
    code = (
        'ТелефонияCallRouter.УстановитьТокен("a", "b");\n'
        "ТелефонияCallRouter.Позвонить();\nТелефонияCallRouterX.Звонки();\n"
    )
    assert len(snippet_call_problems(code, modules)) == 3
    assert snippet_call_problems('ТелефонияCallRouter.УстановитьТокен("a, b");', modules) == []
