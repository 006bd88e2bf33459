"""The Russian pages say what their English twins say: same code, same numbers, same names.

Asterisk and 1C administrators read docs/ru/ and examples/onec/README.ru.md;
a fact changed in English and not in Russian (a default, a limit, a sentence
naming a hook) sends them astray, and nobody reading only one language notices. What can be compared
without understanding the prose is compared here, section by section (the
sections follow the headings, which must match):

- every fenced code block, except its comments: commands and config examples
  are the same in both languages, and so is each block's language. What looks
  like a comment and is not one is compared too: a root shell's ``# command``
  in a ``console`` block, a commented-out setting (``# metrics_auth = true``);
- every number in the prose (``10,000`` and ``10 000``, ``0.3`` and ``0,3``
  are one number, ``22.10.1`` is one version), as often in Russian as in English;
- every inline code span in the prose (a key, a path, a status, a log line),
  except the placeholders the Russian page translates (``TRANSLATED``);
- the shape of the prose: as many table rows and quoted lines (``>``, where a
  warning goes) and at least as many **bold** phrases (the "never" a reader must
  not miss), so a row, a note or a warning added in English is not left out;
- every link to another file goes to the same file, or to its Russian twin,
  and a link to a heading lands on the same heading there (the headings are
  compared by their place, as the Russian anchors are Russian words), which exists;
- as many numbered steps, numbered the same, list items and paragraphs, so a
  step, an item or a paragraph added in English is not left out;
- one Russian term for each thing, on every page (``GLOSSARY``).

The API page's curl requests are compared by test_api_docs.py, the metric
tables by test_metrics_docs.py, the config keys by test_config_docs.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import zip_longest
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
DOCS = REPO / "docs"
#: Twins outside docs/ (an example's README beside its files): English -> Russian,
#: from the repository's root.
OTHER_TWINS = {"examples/onec/README.md": "examples/onec/README.ru.md"}
#: Every Russian page under docs/ru/ has its English twin at the same place in docs/.
PAGES = [
    *OTHER_TWINS,
    *sorted(str(p.relative_to(DOCS / "ru")) for p in (DOCS / "ru").rglob("*.md")),
]

#: English placeholder span -> how the Russian page writes it.
TRANSLATED = {
    "HOST:PORT": "ХОСТ:ПОРТ",
    "Authorization: Bearer <token>": "Authorization: Bearer <токен>",
    "ami:<Action>": "ami:<Действие>",
    "POST /api/v1/ami/{Action}": "POST /api/v1/ami/{Действие}",
    "Content-Range: bytes */SIZE": "Content-Range: bytes */РАЗМЕР",
    "id: <cursor>": "id: <курсор>",
    "data: <the event as JSON>": "data: <событие в JSON>",
    '"YYYY-MM-DD HH:MM"': '"ГГГГ-ММ-ДД ЧЧ:ММ"',
    "<instance>/phones/<name>": "<экземпляр>/phones/<имя>",
    "[section]": "[секции]",
    "http(s)://host[:port]/<publication>/hs/telephony": (
        "http(s)://хост[:порт]/<публикация>/hs/telephony"
    ),
    "<call_id>/ringing/<leg>": "<call_id>/ringing/<канал>",
    "<call_id>/answered/<leg>": "<call_id>/answered/<канал>",
    "<call_id>/transferred/<leg>/<n>": "<call_id>/transferred/<канал>/<n>",
    "<missed call_id>/missed_closed": "<call_id пропущенного>/missed_closed",
    "file:line: rule 'x': message": "файл:строка: rule 'x': сообщение",
    "router.toml:line: [table] key: message": "router.toml:строка: [таблица] ключ: сообщение",
    "Asterisk does not answer (REASON): waiting for it; calls take the "
    "dialplan's default route meanwhile": "Asterisk does not answer (ПРИЧИНА): "
    "waiting for it; calls take the dialplan's default route meanwhile",
    "failed: REASON": "failed: ПРИЧИНА",
    "; rejected RULE: REASON": "; rejected ПРАВИЛО: ПРИЧИНА",
    "; error RULE (STAGE): ERROR": "; error ПРАВИЛО (ЭТАП): ОШИБКА",
    "STATUS=waiting for Asterisk: REASON": "STATUS=waiting for Asterisk: ПРИЧИНА",
    "callrouter_<plugin>_": "callrouter_<плагин>_",
    "<call id>-<part>.<format>": "<идентификатор звонка>-<часть>.<формат>",
    "[api.tokens.NAME]": "[api.tokens.ИМЯ]",
    'NAME = "value"': 'ИМЯ = "значение"',
    "[plugins.NAME]": "[plugins.ИМЯ]",
    '"79161234567": {extension: "101", name: Ivan}': (
        '"79161234567": {extension: "101", name: Иван}'
    ),
    "--lookup NAME=JSON": "--lookup ИМЯ=JSON",
    "--config FILE": "--config ФАЙЛ",
    "event <Name>": "event <Имя>",
    "<Name>": "<Имя>",
    "event.<field>": "event.<поле>",
    "lists.<name>": "lists.<имя>",
    "a if cond else b": "a if условие else b",
    "x.field": "x.поле",
    'x["key"]': 'x["ключ"]',
    '"text"': '"текст"',
    '"{expression}"': '"{выражение}"',
    "VARIABLE: value": "ПЕРЕМЕННАЯ: значение",
    "__NAME": "__ИМЯ",
    "file:line": "файл:строка",
    "<linkedid>/ringing/<uniqueid of the phone's leg>": (
        "<linkedid>/ringing/<uniqueid плеча телефона>"
    ),
    "<linkedid>/answered/<uniqueid of the leg>": "<linkedid>/answered/<uniqueid плеча>",
    "<linkedid>/transferred/<uniqueid of the transferring leg>/<n>": (
        "<linkedid>/transferred/<uniqueid переводящего плеча>/<n>"
    ),
    "<Unix seconds>.<n>": "<секунды Unix>.<n>",
    # 1C's query language in Russian (examples/onec/README.ru.md).
    "LIKE '%…'": 'ПОДОБНО "%…"',
}

_FENCE = re.compile(r"^ *(```+|~~~+)")
_HEADING = re.compile(r"^(#{1,6}) ")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
#: A comment: a whole line, or the end of one after a blank (`` # ``, `` ; ``,
#: `` // ``), or a bracketed note after a wide gap (``9f2c...    (the whole file)``).
_COMMENT_LINE = re.compile(r"^\s*(#|;|//)")
#: Not comments, though they start like one: a root shell's prompt in a ``console``
#: block (``# systemctl stop callrouter``: a command starts with a small letter,
#: ``/`` or ``.``; ``# (point ExecStart ...)`` is a comment), and a setting commented
#: out (``# metrics_auth = true``, ``# authorization: {credentials_file: ...}``),
#: which the reader uncomments; ``; tlsdisablev1 = yes (default), also ...`` is prose.
_ROOT_PROMPT = re.compile(r"^\s*# [a-z/.]")
_COMMENTED_SETTING = re.compile(
    r"^\s*(#|;)\s*[a-z_][\w.-]*\s*[=:]\s*"
    r"(\"[^\"]*\"|\{[^{}]*\}|\[[^\[\]]*\]|[^\s,()\"]+)$"
)
_COMMENT_TAIL = re.compile(r"\s+(#|;|//)\s.*$|\s{3,}\([^()]*\)$")
#: A rule's ``description:`` is free text, written in the reader's language.
_DESCRIPTION = re.compile(r"^(\s*description:).*$")


def sections(text: str) -> list[tuple[str, list[str], str]]:
    """(heading, code blocks, prose) for each part of the page.

    The heading is its level and, for the messages, its text; a code block
    starts with its fence's language (``console``, ``toml``).
    """
    out: list[tuple[str, list[str], str]] = []
    level, fence, language = "", "", ""
    blocks: list[str] = []
    prose: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if block is not None:
            if line.strip() == fence:
                blocks.append("\n".join(block))
                block = None
            else:
                block.append(code_line(line, language))
            continue
        opening = _FENCE.match(line)
        if opening:
            fence, block = opening.group(1), []
            language = line.strip()[len(fence) :].strip()
            block.append(f"{fence}{language}")
            continue
        heading = _HEADING.match(line)
        if heading:
            out.append((level, blocks, "\n".join(prose)))
            level, blocks, prose = line.strip(), [], []
            continue
        prose.append(line)
    out.append((level, blocks, "\n".join(prose)))
    return out


def code_line(line: str, language: str = "") -> str:
    if _COMMENT_LINE.match(line):
        marker, _, rest = line.strip().partition(" ")
        code = line[: len(line) - len(line.lstrip())] + marker + " "
        code += _COMMENT_TAIL.sub("", rest.strip()).rstrip()
        root = language == "console" and _ROOT_PROMPT.match(line)
        return code if root or _COMMENTED_SETTING.match(code) else ""
    line = _DESCRIPTION.sub(r"\1 ...", line)
    return _COMMENT_TAIL.sub("", line).rstrip()


def spans(prose: str) -> Counter[str]:
    return Counter(re.sub(r"\s+", " ", m.group(2)).strip() for m in _SPAN.finditer(prose))


def numbers(prose: str) -> Counter[str]:
    text = _SPAN.sub(" ", prose)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets: anchors differ
    text = re.sub(r"(?<![\w.])1[CС](?!\w)", " ", text)  # 1C, 1С: a name
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 10,000
    text = re.sub(r"(?<=\d)[  ](?=\d{3}(?!\d))", "", text)  # 10 000
    text = re.sub(r"(?<=\d),(?=\d)", ".", text)  # 0,3
    return Counter(re.findall(r"(?<![\w.])\d+(?:\.\d+)*", text))  # 22.10.1: a version whole


def twins(page: str) -> tuple[Path, Path]:
    """The English page and its Russian twin."""
    if page in OTHER_TWINS:
        return REPO / page, REPO / OTHER_TWINS[page]
    return DOCS / page, DOCS / "ru" / page


def russian_name(page: str) -> str:
    """The Russian twin as errors name it, from the repository's root."""
    return str(twins(page)[1].relative_to(REPO))


def level(heading: str) -> str:
    return heading.split(" ", 1)[0]


def pair(page: str) -> list[tuple[str, tuple[str, list[str], str], tuple[str, list[str], str]]]:
    """The sections of both pages side by side, each named for the messages
    by its place and both headings (``section 5 "## Upgrading" / "## Обновление"``)."""
    english_path, russian_path = twins(page)
    english = sections(english_path.read_text(encoding="utf-8"))
    russian = sections(russian_path.read_text(encoding="utf-8"))
    assert [level(s[0]) for s in russian] == [level(s[0]) for s in english], (
        f"{russian_name(page)}: headings differ from {english_path.relative_to(REPO)}'s:\n"
        + "\n".join(f"  {en[0]!r} / {ru[0]!r}" for en, ru in zip(english, russian, strict=False))
    )
    return [
        (f"section {n} {en[0] or '(top)'!r} / {ru[0] or '(top)'!r}", en, ru)
        for n, (en, ru) in enumerate(zip(english, russian, strict=True))
    ]


def first_difference(english: list[str], russian: list[str]) -> str:
    """Which code block differs, and its first line that does."""
    for n, (en, ru) in enumerate(zip(english, russian, strict=False)):
        if en != ru:
            for line, (en_line, ru_line) in enumerate(
                zip_longest(en.splitlines(), ru.splitlines(), fillvalue="(end of block)")
            ):
                if en_line != ru_line:
                    return f"block {n + 1}, line {line}: English {en_line!r}, Russian {ru_line!r}"
    return f"{len(english)} code blocks in English, {len(russian)} in Russian"


@pytest.mark.parametrize("page", PAGES)
def test_every_russian_page_has_its_english_twin(page: str) -> None:
    english, russian = twins(page)
    assert english.is_file(), f"{russian_name(page)}: no English twin {english.relative_to(REPO)}"
    assert russian.is_file(), f"{russian_name(page)}: missing (the twin of {page})"


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_are_the_same_but_for_comments(page: str) -> None:
    for where, (_, en_blocks, _), (_, ru_blocks, _) in pair(page):
        assert ru_blocks == en_blocks, (
            f"{russian_name(page)}, {where}: code blocks differ: "
            f"{first_difference(en_blocks, ru_blocks)}"
        )


@pytest.mark.parametrize("page", PAGES)
def test_every_english_number_is_in_the_russian_section(page: str) -> None:
    for where, (_, _, en), (_, _, ru) in pair(page):
        missing = numbers(en) - numbers(ru)
        assert not missing, f"{russian_name(page)}, {where}: lacks {sorted(missing)}"
        # A number only the Russian page has: a sentence the English one dropped, or an old value.
        stale = numbers(ru) - numbers(en)
        assert not stale, f"{russian_name(page)}, {where}: has {sorted(stale)}, English has not"


@pytest.mark.parametrize("page", PAGES)
def test_every_english_code_span_is_in_the_russian_section(page: str) -> None:
    for where, (_, _, en), (_, _, ru) in pair(page):
        russian = spans(ru)
        missing = [span for span in spans(en) - russian if TRANSLATED.get(span) not in russian]
        assert not missing, f"{russian_name(page)}, {where}: lacks {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_each_heading_keeps_its_numbers_and_code(page: str) -> None:
    """``## 4. Path ACLs in http.conf (Asterisk 22.9+)``: a step's number, a version
    or a table's name in a heading is what a reader looks for in the contents."""
    for where, (en, _, _), (ru, _, _) in pair(page):
        assert numbers(ru) == numbers(en), f"{russian_name(page)}, {where}: numbers differ"
        assert spans(ru) == spans(en), f"{russian_name(page)}, {where}: code differs"


def shape(prose: str) -> Counter[str]:
    """Table rows, quoted lines and bold phrases, outside code spans."""
    text = _SPAN.sub(" ", prose)
    return Counter(
        {
            "table rows": len(re.findall(r"^\s*\|", text, re.M)),
            "quoted lines": len(re.findall(r"^\s*>", text, re.M)),
            "bold phrases": len(re.findall(r"\*\*[^*]+\*\*", text)),
        }
    )


@pytest.mark.parametrize("page", PAGES)
def test_every_english_row_note_and_warning_is_in_the_russian_section(page: str) -> None:
    for where, (_, _, en), (_, _, ru) in pair(page):
        english, russian = shape(en), shape(ru)
        assert english["table rows"] == russian["table rows"], (
            f"{russian_name(page)}, {where}: {russian['table rows']} table rows, "
            f"English has {english['table rows']}"
        )
        assert english["quoted lines"] == russian["quoted lines"], (
            f"{russian_name(page)}, {where}: {russian['quoted lines']} quoted lines (>), "
            f"English has {english['quoted lines']}"
        )
        assert russian["bold phrases"] >= english["bold phrases"], (
            f"{russian_name(page)}, {where}: {russian['bold phrases']} bold phrases, "
            f"English has {english['bold phrases']}"
        )


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def linked_files(prose: str, page: Path) -> Counter[str]:
    """The files a section links to, a Russian twin counted as its English page
    (the English index links to both, the Russian one to the twin only)."""
    out: Counter[str] = Counter()
    for target in _LINK.findall(_SPAN.sub(" ", prose)):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z]+:", path):
            out[path or "(this page)"] += 1
            continue
        out[english_page((page.parent / path).resolve())] += 1
    out.pop("(this page)", None)
    return out


def english_page(file: Path) -> str:
    """A page from the repository's root, a Russian twin named as its English page."""
    english = {v: k for k, v in OTHER_TWINS.items()}.get(str(file.relative_to(REPO)))
    if english:
        return english
    if (DOCS / "ru") in file.parents:
        file = DOCS / file.relative_to(DOCS / "ru")
    return str(file.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES)
def test_every_link_goes_to_the_same_page_or_its_russian_twin(page: str) -> None:
    english_path, russian_path = twins(page)
    for where, (_, _, en), (_, _, ru) in pair(page):
        english = linked_files(en, english_path)
        russian = linked_files(ru, russian_path)
        for links in (english, russian):  # "Russian: ru/x.md", "English: ../x.md"
            links.pop(str(english_path.relative_to(REPO)), None)
        assert set(russian) == set(english), (
            f"{russian_name(page)}, {where}: links differ: only in English "
            f"{sorted(set(english) - set(russian))}, only in Russian "
            f"{sorted(set(russian) - set(english))}"
        )


def slugs(text: str) -> list[str]:
    """The anchors GitHub gives a page's headings, in order (a repeated one gets ``-1``)."""
    out: list[str] = []
    for heading, _, _ in sections(text)[1:]:
        slug = re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in out:
            n += 1
            candidate = f"{slug}-{n}"
        out.append(candidate)
    return out


def landings(prose: str, page: Path) -> tuple[set[tuple[str, int]], list[str]]:
    """Where a section's links to a heading land: (the English page, the heading's
    place in it, counted from 1), a Russian twin's heading counted as the English
    one at its place; and the links whose heading is not there."""
    out: set[tuple[str, int]] = set()
    broken: list[str] = []
    for target in _LINK.findall(_SPAN.sub(" ", prose)):
        path, _, anchor = target.partition("#")
        if not anchor or re.match(r"[a-z]+:", path):
            continue
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(f"{target}: no such file")
            continue
        places = slugs(file.read_text(encoding="utf-8"))
        if anchor not in places:
            broken.append(f"{target}: no such heading")
            continue
        out.add((english_page(file), places.index(anchor) + 1))
    return out, broken


@pytest.mark.parametrize("page", PAGES)
def test_every_link_to_a_heading_lands_on_the_same_heading(page: str) -> None:
    """``[api.md](api.md#tokens-and-permissions)`` in English and a bare
    ``[api.md](api.md)`` in Russian send the Russian reader to the page's top."""
    english_path, russian_path = twins(page)
    for where, (_, _, en), (_, _, ru) in pair(page):
        english, english_broken = landings(en, english_path)
        russian, russian_broken = landings(ru, russian_path)
        assert not english_broken + russian_broken, (
            f"{russian_name(page)}, {where}: links to no heading: {english_broken + russian_broken}"
        )
        assert russian == english, (
            f"{russian_name(page)}, {where}: links land on other headings: only in English "
            f"{sorted(english - russian)}, only in Russian {sorted(russian - english)} "
            "(page, the heading's place)"
        )


_ITEM = re.compile(r"^(\s*)(\d+\.|[-*+]) +\S")


def lists(prose: str) -> tuple[list[str], int, int]:
    """The numbers of a section's numbered steps, in order, its other list items
    and its paragraphs, outside code spans. A wrapped line that starts with a number
    (``409. Keys are``) is no step: outside a list only a ``1.`` interrupts a paragraph."""
    steps: list[str] = []
    items = paragraphs = 0
    previous, in_list = "", False
    # A span keeps its lines (``x`` for each character): one may wrap.
    text = _SPAN.sub(lambda m: re.sub(r"[^\n]", "x", m.group(0)), prose)
    for line in text.splitlines():
        item = _ITEM.match(line)
        if item and item.group(2)[0].isdigit():
            if in_list or item.group(2) == "1." or not previous.strip():
                steps.append(item.group(2))
                in_list = True
        elif item:
            items += 1
            in_list = True
        elif line.strip() and not previous.strip() and not line.startswith(" "):
            in_list = False  # a paragraph after the list
        if line.strip() and not previous.strip():
            paragraphs += 1
        previous = line
    return steps, items, paragraphs


@pytest.mark.parametrize("page", PAGES)
def test_every_english_step_item_and_paragraph_is_in_the_russian_section(page: str) -> None:
    for where, (_, _, en), (_, _, ru) in pair(page):
        (en_steps, en_items, en_paragraphs), (ru_steps, ru_items, ru_paragraphs) = (
            lists(en),
            lists(ru),
        )
        assert ru_steps == en_steps, (
            f"{russian_name(page)}, {where}: numbered steps {ru_steps}, English has {en_steps}"
        )
        assert ru_items == en_items, (
            f"{russian_name(page)}, {where}: {ru_items} list items, English has {en_items}"
        )
        assert ru_paragraphs == en_paragraphs, (
            f"{russian_name(page)}, {where}: {ru_paragraphs} paragraphs, "
            f"English has {en_paragraphs}"
        )


@pytest.mark.parametrize("page", PAGES)
def test_each_twin_links_to_the_other(page: str) -> None:
    """A reader who opened the page in the other language finds the way across."""
    english_path, russian_path = twins(page)
    for here, there in ((english_path, russian_path), (russian_path, english_path)):
        targets = {
            (here.parent / target.split("#", 1)[0]).resolve()
            for target in _LINK.findall(here.read_text(encoding="utf-8"))
        }
        assert there.resolve() in targets, (
            f"{here.relative_to(REPO)}: no link to {there.relative_to(REPO)}"
        )


def comments_per_block(text: str) -> list[int]:
    """How many lines of each code block carry a comment (a whole line or a tail),
    which the Russian page translates and the code comparison leaves out."""
    out: list[int] = []
    fence, count = "", None
    for line in text.splitlines():
        if count is not None:
            if line.strip() == fence:
                out.append(count)
                count = None
            elif _COMMENT_LINE.match(line) or _COMMENT_TAIL.search(line):
                count += 1
            continue
        opening = _FENCE.match(line)
        if opening:
            fence, count = opening.group(1), 0
    return out


@pytest.mark.parametrize("page", PAGES)
def test_every_english_comment_is_in_the_russian_block(page: str) -> None:
    """A comment added to an example (``# never as root``) is translated, not left out."""
    english_path, russian_path = twins(page)
    english = comments_per_block(english_path.read_text(encoding="utf-8"))
    russian = comments_per_block(russian_path.read_text(encoding="utf-8"))
    differ = [
        f"block {n + 1}: {ru} commented lines, English has {en}"
        for n, (en, ru) in enumerate(zip(english, russian, strict=False))
        if en != ru
    ]
    assert not differ, f"{russian_name(page)}: {'; '.join(differ)}"


def parts(prose: str) -> list[str]:
    """The section's paragraphs, list items and table rows, each whole, in order
    (a list item or a step begins where ``lists`` counts one)."""
    out: list[list[str]] = []
    previous, in_list = "", False
    masked = _SPAN.sub(lambda m: re.sub(r"[^\n]", "x", m.group(0)), prose)
    for line, seen in zip(prose.splitlines(), masked.splitlines(), strict=True):
        item = _ITEM.match(seen)
        step = item is not None and item.group(2)[0].isdigit()
        starts = False
        if item and (not step or in_list or item.group(2) == "1." or not previous.strip()):
            starts = in_list = True
        elif seen.strip() and not previous.strip() and not seen.startswith(" "):
            in_list = False
        if seen.lstrip().startswith("|") or previous.lstrip().startswith("|"):
            starts = True
        if seen.strip() and (starts or not previous.strip() or not out):
            out.append([line])
        elif seen.strip():
            out[-1].append(line)
        previous = seen
    return ["\n".join(part) for part in out]


@pytest.mark.parametrize("page", PAGES)
def test_each_paragraph_item_and_row_keeps_its_numbers_and_code(page: str) -> None:
    """Part by part, the Russian section has the English part's numbers and code: a
    row moved elsewhere in a long table (the limits in security.md), a sentence moved
    to another paragraph or a part replaced is caught, not only one missing."""
    for where, (_, _, en), (_, _, ru) in pair(page):
        english, russian = parts(en), parts(ru)
        assert len(russian) == len(english), (
            f"{russian_name(page)}, {where}: {len(russian)} paragraphs, items and rows, "
            f"English has {len(english)}"
        )
        for n, (en_part, ru_part) in enumerate(zip(english, russian, strict=True), start=1):
            code = spans(ru_part)
            missing = [s for s in spans(en_part) - code if TRANSLATED.get(s) not in code]
            here = f"{russian_name(page)}, {where}, part {n}"
            both = f"English {en_part[:70]!r}, Russian {ru_part[:70]!r}"
            assert numbers(ru_part) == numbers(en_part), f"{here}: numbers differ: {both}"
            assert not missing, f"{here}: lacks {missing}: {both}"


#: Words the Russian pages do not use, outside code, with the one they use instead.
#: A reader meets one term for one thing, on every page.
GLOSSARY = {
    r"добавочн": "«внутренний номер» (a phone's extension) or «расширение» (a dialplan's)",
    r"экстеншен|(?<![\w`/.-])extensions?(?![\w`/.-])": "«расширение» (a dialplan's extension)",
    r"(?<![\w`/.-])endpoints?(?![\w`/.-])": "«эндпоинт»",
    r"таймаут": "«тайм-аут»",
    r"(?<![a-z])heartbeat(?!-)": "«пульс»",
    r"сердцебиени": "«пульс»",
    r"роутер": "«callrouter»",
    r"план[а-я]* набора": "«диалплан»",
    r"менеджер[а-я]* (?:AMI|Asterisk)|(?:сесси|порт)[а-я]* менеджера|секрет менеджера": (
        "«пользователь AMI», «сессия AMI», «порт AMI», «пароль» (a manager in 1C is a person)"
    ),
    r"неверный секрет|секрет AMI": "«пароль» (manager.conf's secret)",
    r"наименьшими правами": "«с минимальными правами»",
    r"(?<![а-яё])ног(?:а|и|у|ой)(?![а-яё])": "«плечо» (a call's leg)",
    r"трекер": "«учёт звонков»",
    r"AMI-команд|команд[а-я]* AMI": "«действие AMI» (an AMI action)",
    r"резервн[а-я]* маршрут": "«запасной вариант» (a rule's fallback) or «маршрут по умолчанию»",
    r"тормоз|протух|стартует|стартовал": "«медлит», «истёк», «запускается»",
    r"отказыва[а-я]* открыто": "«по принципу fail-open» (a word-for-word «fails open»)",
    r"1С медленн(?:ая|ой)(?![а-яё])": "«1С медлит»",
    r"разборщик": "«парсер» (no such Russian word)",
    r"(?<![\w#/-])click-to-call|звон[а-я]* по клику": (
        "«звонок из 1С», as api.md names click-to-call"
    ),
    r"каталог[а-я]*\s+состояния": "«папка состояния» (a «каталог» is the recordings' store)",
    r"каталог[а-я]*\s+(?:исходников|журналов|manager\.conf|с копиями)"
    r"|(?:в новый|другой|сам|содержимого|FIFO,|FIFO или)\s+каталог": (
        "«папка» (a folder; a «каталог» is the recordings' store)"
    ),
    # Two instances on one Asterisk: the one routing calls and the one waiting to take over.
    r"резервн[а-я]* (?:экземпляр|рядом)|(?<![а-яё])резервн(?:ый|ого|ому|ым)(?: |\))": (
        "«ожидающий экземпляр» (a standby; «резервная копия» is a backup)"
    ),
    r"(?:рядом с|вместо) рабоч[а-я]*|рабоч[а-я]* (?:экземпляр|и ожидающ|и резервн)": (
        "«живой экземпляр» (the live one)"
    ),
    r"(?<![а-яё])лежит,|(?<![а-яё])лежат часами|1С лежит": "«недоступна»",
}
#: Where a listed word is the right one: (page, the word in its context).
GLOSSARY_EXEMPT = {
    # A telephone number's extension ("доб. 123"), not a PBX's extension.
    ("examples/onec/README.ru.md", "из номера без добавочного"),
}


@pytest.mark.parametrize("page", PAGES)
def test_the_russian_page_keeps_to_the_glossary(page: str) -> None:
    russian_path = twins(page)[1]
    found = []
    for heading, _, prose in sections(russian_path.read_text(encoding="utf-8")):
        text = re.sub(r"\s+", " ", _SPAN.sub(" ", heading + "\n" + prose))
        for pattern, instead in GLOSSARY.items():
            for match in re.finditer(pattern, text, re.I):
                context = text[max(0, match.start() - 20) : match.end() + 20]
                if not any(p == russian_name(page) and c in context for p, c in GLOSSARY_EXEMPT):
                    found.append(f"{match.group(0)!r} in {context!r}: write {instead}")
    assert not found, f"{russian_name(page)}: " + "; ".join(found)


#: A quantity in Russian prose with an English decimal point: ``0.3 с`` (write
#: ``0,3 с``). A version (``Asterisk 22.10``, ``baresip 1.1.0``) has no unit after it.
_DOTTED_QUANTITY = re.compile(
    r"(?<![\w.])\d+\.\d+(?![\d.])\s?(?:с|мс|мкс|мин|ч|Б|КБ|КиБ|МБ|МиБ|ГБ|ГиБ|%)(?!\w)"
)


@pytest.mark.parametrize("page", PAGES)
def test_a_russian_quantity_has_a_decimal_comma(page: str) -> None:
    """``0,3 с``, ``0,6 КБ``: the Russian reader's decimal separator, outside code
    (``timeout = 1.5`` in a block or a span stays as the file has it)."""
    russian_path = twins(page)[1]
    found = []
    for _, _, prose in sections(russian_path.read_text(encoding="utf-8")):
        text = re.sub(r"\s+", " ", _SPAN.sub(" ", prose))
        found += [m.group(0) for m in _DOTTED_QUANTITY.finditer(text)]
    assert not found, f"{russian_name(page)}: write a decimal comma in {found}"


def test_a_version_is_no_quantity() -> None:
    text = "Asterisk 22.10 и baresip 1.1.0 совсем; ждёт 0.3 с, 4.5 с и 0,6 КБ; до 22.0.0 через"
    assert [m.group(0) for m in _DOTTED_QUANTITY.finditer(text)] == ["0.3 с", "4.5 с"]


UI_STRINGS = REPO / "router" / "api" / "ui" / "strings.json"


@pytest.mark.parametrize(
    ("page", "language", "heading"),
    [
        ("docs/operations.md", "en", "## The live page"),
        ("docs/ru/operations.md", "ru", "## Живая страница"),
    ],
)
def test_the_live_page_is_described_in_its_own_words(
    page: str, language: str, heading: str
) -> None:
    """The panels the page names in bold (``- **Решения**: ...``) are the titles
    the live page shows in that language: an administrator looks for them."""
    strings = set(json.loads(UI_STRINGS.read_text(encoding="utf-8"))[language].values())
    text = (REPO / page).read_text(encoding="utf-8")
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    panels = re.findall(r"^- \*\*(.+?)\*\*:", section, re.M)
    assert len(panels) >= 4, f"{page}: no panels found under {heading!r}"
    unknown = [panel for panel in panels if panel not in strings]
    assert not unknown, f"{page}, {heading}: the live page shows no {unknown} ({UI_STRINGS.name})"


SAMPLE = """\
# Title

Keep `events_max` at 10,000 (`HOST:PORT`, 0.6 KB, 1C).

```ini
[router]
secret = s   ; a comment
read = call
```
"""

SAMPLE_RU = """\
# Заголовок

Держите `events_max` в 10 000 (`ХОСТ:ПОРТ`, 0,6 КБ, 1С).

```ini
[router]
secret = s   ; комментарий
read = call
```
"""


def test_the_readers_see_a_faithful_translation_as_equal() -> None:
    [_, (_, en_blocks, en)] = sections(SAMPLE)
    [_, (_, ru_blocks, ru)] = sections(SAMPLE_RU)
    assert en_blocks == ru_blocks == ["```ini\n[router]\nsecret = s\nread = call"]
    assert numbers(en) == numbers(ru) == Counter({"10000": 1, "0.6": 1})
    assert spans(en) - spans(ru) == Counter({"HOST:PORT": 1})
    assert TRANSLATED["HOST:PORT"] in spans(ru)
    assert numbers("Asterisk 22.10.1 or later.") == Counter({"22.10.1": 1})
    assert numbers("Asterisk 22.10.1 или новее.") != numbers("Asterisk 22.10.2 или новее.")


def test_a_root_prompt_and_a_commented_setting_are_code_not_comments() -> None:
    console = "```console\n# install -d -m 755 /etc/callrouter\n# (point ExecStart here)\n```\n"
    [_, (_, blocks, _)] = sections("# T\n" + console)
    assert blocks == ["```console\n# install -d -m 755 /etc/callrouter\n"]
    toml = "```toml\n# metrics_auth = true   # a comment\n# a comment = prose here\n```\n"
    [_, (_, blocks, _)] = sections("# T\n" + toml)
    assert blocks == ["```toml\n# metrics_auth = true\n"]
    [_, (_, blocks, _)] = sections("# T\n" + toml.replace("true", "false"))
    assert blocks != ["```toml\n# metrics_auth = true\n"]
    assert comments_per_block("# T\n" + toml + console) == [2, 2]


def test_steps_items_and_paragraphs_are_counted_as_markdown_shows_them() -> None:
    prose = (
        "Do this:\n\n1. **One.** A step that wraps\n   over `a span\nthat wraps` too.\n"
        "2. Two.\n\n- an item\n- another\n\nA sentence ending in a status, then a wrapped\n"
        "409. Keys are no step.\n"
    )
    assert lists(prose) == (["1.", "2."], 2, 4)
    assert [part.split()[0] for part in parts(prose)] == ["Do", "1.", "2.", "-", "-", "A"]
    table = "| Key | Default |\n| --- | --- |\n| `a` | 1 |\n"
    assert parts(table) == table.splitlines()


def test_a_link_to_a_heading_is_compared_by_the_headings_place() -> None:
    assert slugs("# Page\n## A part: `[api]`\n```sh\n# no heading\n```\n## A part: `[api]`\n") == [
        "page",
        "a-part-api",
        "a-part-api-1",
    ]
    english = landings("[api.md](api.md#tokens-and-permissions)", DOCS / "operations.md")
    russian = landings("[api.md](api.md#токены-и-разрешения)", DOCS / "ru" / "operations.md")
    assert english == russian == ({("docs/api.md", 4)}, [])
    bare = landings("[api.md](api.md)", DOCS / "ru" / "operations.md")
    assert bare == (set(), [])
    broken = landings("[api.md](api.md#tokens-and-permissions)", DOCS / "ru" / "operations.md")
    assert broken == (set(), ["api.md#tokens-and-permissions: no such heading"])
