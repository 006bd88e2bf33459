"""docs/onec.md and docs/ru/onec.md stay in step with the plugin's settings and history.

Every ``[plugins.onec]`` key has a row in both pages with the default the code
uses, and the call-history table names every decision outcome the engine gives.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import lifeevents
import pytest

from callrouter_onec.cache import ResponsibleCache
from callrouter_onec.client import OneCClient, OneCSettings
from callrouter_onec.double import DEFAULT_USER, OneCDouble, build_parser, story_parser
from callrouter_onec.history import MAX_AGE, MAX_ROWS, CallRecord, build_event
from callrouter_onec.life import MAX_PARTY_DIGITS, call_event_payload
from callrouter_onec.missed import closed_event
from callrouter_onec.models import EVENT_FIELDS
from callrouter_onec.phone import CountryRules
from callrouter_onec.plugin import KEYS, parse_settings
from router import ConfigError

DOCS = Path(__file__).resolve().parents[3] / "docs"
PAGES = [DOCS / "onec.md", DOCS / "ru" / "onec.md"]
OUTCOMES = ("executed", "late", "fell-through", "failed", "caller-gone", "shadow")


def rows(page: Path) -> dict[str, str]:
    """First cell's keys -> the default cell, for every table row of the page."""
    found: dict[str, str] = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        for key in re.findall(r"`([a-z_]+)`", cells[0]):
            found.setdefault(key, cells[1])
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_key_has_a_row_with_the_code_default(page: Path) -> None:
    table = rows(page)
    missing = [key for key in KEYS if key not in table]
    assert not missing, f"{page.name}: no row for {missing}"
    defaults = parse_settings(
        {"url": "http://1c/unf/hs/telephony", "username": "u", "password": "p"}
    )
    assert table["events_max_age"].startswith(f"`{int(MAX_AGE)}`")
    assert defaults.events_max_age == MAX_AGE
    assert table["events_max_rows"].startswith(f"`{MAX_ROWS}`")
    assert table["dial_context"] == f'`"{defaults.dial_context}"`'


def config_rows(page: Path) -> list[tuple[list[str], str]]:
    """(keys, default cell) of each row of the configuration table: the first
    table under the ``## ...: `[plugins.onec]` `` heading."""
    text = page.read_text(encoding="utf-8")
    section = text[text.index(": `[plugins.onec]`\n") :]
    section = section[: section.index("\n## ", 1)]
    table = section[section.index("\n| ") :].split("\n\n", 1)[0]
    out = []
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out.append((re.findall(r"`([a-z_]+)`", cells[0]), cells[1]))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_row_is_a_key_and_every_given_default_is_the_code_s(page: Path) -> None:
    """A row for a key the plugin refuses, or a default it does not use, sends
    the administrator astray: writing a key with the default the page gives
    (`` `0.5` ``, `` `"callrouter-dial"` ``, one value per key of a row that
    names several) changes nothing."""
    rows = config_rows(page)
    assert len(rows) >= 30, f"{page.name}: the configuration table is not found"
    unknown = [key for keys, _ in rows for key in keys if key not in KEYS]
    assert not unknown, f"{page.name}: rows for keys the plugin does not read: {unknown}"
    base = {"url": "http://1c/unf/hs/telephony", "username": "u", "password": "p"}
    defaults = parse_settings(base)
    wrong = []
    checked = 0
    for keys, cell in rows:
        values = re.findall(r"`([^`]+)`", cell)
        if len(values) != len(keys):
            continue  # "required", "none", "the engine's [router] state_dir"
        for key, value in zip(keys, values, strict=True):
            try:
                parsed = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                continue  # `[router] state_dir`: told, not a value
            try:
                written = parse_settings({**base, key: parsed})
            except ConfigError as exc:
                wrong.append(f"{key} = {value}: refused: {exc}")
                continue
            checked += 1
            if written != defaults:
                wrong.append(f"{key} = {value}: not the default")
    assert checked >= 30
    assert not wrong, f"{page.name}: " + "; ".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_history_table_names_every_outcome(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    history = text[text.index("| `executed`, ") :]
    history = history[: history.index("\n\n")]
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in history, f"{page.name}: outcome {outcome} not in the table"


BSL = DOCS.parent / "examples" / "onec" / "TelephonyService.bsl"
GUIDES = [
    DOCS.parent / "examples" / "onec" / "README.md",
    DOCS.parent / "examples" / "onec" / "README.ru.md",
]


def test_the_bsl_module_takes_every_event_kind_the_double_takes() -> None:
    """Issue 14: 1C's module and the double accept the same kinds (missed_closed too)."""
    from callrouter_onec.directory import EVENTS

    text = BSL.read_text(encoding="utf-8")
    [listed] = re.findall(r'СтрРазделить\("(ringing,[a-z_,]+)", ","\)', text)
    assert set(listed.split(",")) == set(EVENTS)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_the_guide_names_every_register_field_the_module_writes(guide: Path) -> None:
    """A field the module writes and the guide does not list fails in 1C at the first call."""
    written = set(
        re.findall(r"^\t+Запись\.([А-Яа-яЁёA-Za-z]+) = ", BSL.read_text(encoding="utf-8"), re.M)
    )
    assert {"ИдентификаторСобытия", "Задача", "Закрыт", "ВидПеревода"} <= written
    text = guide.read_text(encoding="utf-8")
    missing = sorted(name for name in written if f"`{name}`" not in text)
    assert not missing, f"{guide.name} does not describe {missing}"


def test_the_example_router_toml_onec_block_parses_as_written() -> None:
    """examples/router.toml's commented [plugins.onec] block, uncommented, is valid
    (missed_owner included); only ca_file names a file this machine lacks."""
    import tomllib

    text = (DOCS.parent / "examples" / "router.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("# [plugins.onec]")
    block: list[str] = []
    for line in lines[start:]:
        if not line.startswith("# ") or not line[2:].strip():
            break
        block.append(line[2:])
    assert any("missed_owner" in line for line in block)
    table = tomllib.loads("\n".join(b for b in block if not b.startswith("ca_file")))
    config = parse_settings(table["plugins"]["onec"], environ={"ONEC_PASSWORD": "secret"})
    assert dict(config.missed_owner) == {"74951234567": "105", "*": "100"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_documented_missed_owner_table_parses(page: Path) -> None:
    import tomllib

    text = page.read_text(encoding="utf-8")
    [snippet] = re.findall(r"```toml\n(\[plugins\.onec\.missed_owner\]\n.*?)```", text, re.S)
    owners = tomllib.loads(snippet)["plugins"]["onec"]["missed_owner"]
    config = parse_settings(
        {
            "url": "http://1c/unf/hs/telephony",
            "username": "u",
            "password": "p",
            "missed_owner": owners,
        }
    )
    assert dict(config.missed_owner) == {"74951234567": "105", "*": "100"}


SERVICE_SECTIONS = {"onec.md": "## The service contract", "onec.md@ru": "## Контракт сервиса"}


def service_section(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    heading = SERVICE_SECTIONS["onec.md@ru" if page.parent.name == "ru" else "onec.md"]
    assert heading in text, f"{page}: no '{heading}' section for the 1C developer"
    section = text[text.index(heading) + len(heading) :]
    return section[: section.index("\n## ")]


def curl_examples(section: str) -> list[tuple[list[str], str]]:
    """Each ``curl`` of the section with the JSON block that follows it."""
    found = re.findall(r"```sh\n(curl .*?)\n```\s*```json\n(.*?)```", section, re.S)
    return [(shlex.split(command), answer) for command, answer in found]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_service_contract_curls_answer_as_documented(page: Path) -> None:
    """The contract a 1C developer builds the service from: every documented request,
    sent as written to the double started as the page says, gets the documented
    answer (``time`` excepted: it is the double's clock)."""
    section = service_section(page)
    assert "callrouter-onec-double --port 8081 --password secret" in section
    examples = curl_examples(section)
    assert len(examples) == 4
    with OneCDouble(password="secret") as double:
        for argv, documented in examples:
            assert argv[0] == "curl"
            assert argv[1] == "-u"
            user, _, password = argv[2].partition(":")
            [url] = argv[3:]
            assert url.startswith("http://127.0.0.1:8081/demo/hs/telephony/v1/")
            url = double.root_url + url.removeprefix("http://127.0.0.1:8081")
            answer = httpx.get(url, auth=(user, password))
            expected = json.loads(documented)
            assert answer.status_code == (400 if "error" in expected else 200), url
            got = answer.json()
            if "time" in expected:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", got.pop("time"))
                expected.pop("time")
            assert got == expected, url


def test_no_file_points_to_a_contract_page_that_does_not_exist() -> None:
    """A contract page under docs/ was named in the 1C guide, the plugin's README, the
    BSL module and the double's --help, and never existed: the contract is a section
    of docs/onec.md."""
    missing = "onec-" + "contract.md"
    root = DOCS.parent
    named = [
        str(path.relative_to(root))
        for pattern in ("*.md", "*.py", "*.bsl")
        for path in root.rglob(pattern)
        if not {".venv", ".git"} & set(path.parts)
        and path.name != "CHANGELOG.md"
        and missing in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not (DOCS / missing).exists()
    assert named == []


def _ids(cell: str) -> dict[str, int]:
    """Event kind -> the number of ``/``-separated parts of its id, from a cell's code spans."""
    found: dict[str, int] = {}
    for span in re.findall(r"`(<[^`]*>/[^`]*)`", cell):
        parts = span.split("/")
        found.setdefault(parts[1], len(parts))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_event_ids_are_those_the_call_life_hands_out(page: Path) -> None:
    """onec.md named ``<call_id>/answered`` while every answered leg has its own
    id (``<call_id>/answered/<leg>``, history.md): a 1C developer keying the
    register on it expects one ``answered`` per call and gets one per leg that
    picked up, the transfer's target included (issue 16)."""
    history = (DOCS / "history.md").read_text(encoding="utf-8")
    told = _ids(history[history.index("### Event ids") :].split("\n\n", 2)[2].split("\n\n")[0])
    assert {"ringing", "answered", "transferred", "hangup", "missed"} <= told.keys()
    (cell,) = [
        line
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `event_id` |")
    ]
    documented = _ids(cell)
    assert {kind: documented.get(kind) for kind in told} == told


README = DOCS.parent / "examples" / "onec"
#: Resource -> the longest value callrouter sends into it: numbers (``from``,
#: ``to``, the missed call's customer) are at most MAX_PARTY_DIGITS digits or a
#: 32-character word; extensions and transfer targets (an outside number a
#: call was transferred to, too) are dialplan locations, up to 80 characters.
LONGEST = {
    "НомерОт": MAX_PARTY_DIGITS,
    "НомерКуда": MAX_PARTY_DIGITS,
    "НомерКлиента": MAX_PARTY_DIGITS,
    "ВнутреннийНомер": 80,
    "ВнутреннийНомерОтветственного": 80,
    "КтоЗавершил": 80,
    "ПереводОт": 80,
    "ПереводКому": 80,
}


def string_sizes(bullet: str) -> dict[str, int]:
    """Resource -> N of the ``(String N)``/``(Строка N)`` that follows its group of names."""
    sizes: dict[str, int] = {}
    pending: list[str] = []
    for match in re.finditer(r"`([А-ЯЁа-яёA-Za-z]+)`|\((?:String|Строка) (\d+)", bullet):
        if match.group(1):
            pending.append(match.group(1))
        else:
            for name in pending:
                sizes.setdefault(name, int(match.group(2)))
            pending = []
    return sizes


@pytest.mark.parametrize("name", ["README.md", "README.ru.md"])
def test_the_registers_hold_what_callrouter_sends(name: str) -> None:
    """``ПереводКому`` was String 10: a transfer to 79161234567 reached 1C as
    7916123456, silently, as did an extension of more than 10 characters and a
    number of more than 20 digits (issue 16)."""
    text = (README / name).read_text(encoding="utf-8")
    bullets = re.split(r"\n   - ", text)
    events = next(b for b in bullets if b.startswith("`ТелефонияСобытияЗвонков`"))
    callbacks = next(b for b in bullets if b.startswith("`ТелефонияПерезвоны`"))
    sizes = {**string_sizes(callbacks), **string_sizes(events)}
    short = {k: (sizes.get(k), n) for k, n in LONGEST.items() if (sizes.get(k) or 0) < n}
    assert short == {}, "resource: (documented size, longest value sent)"


def _contract_fields(page: Path) -> list[str]:
    """The first column of the history contract's table, in its order."""
    text = page.read_text(encoding="utf-8")
    start = text.index("| `event` |")
    table = text[start : text.index("\n\n", start)]
    names: list[str] = []
    for line in table.splitlines():
        names += re.findall(r"`([a-z_]+)`", line.strip().strip("|").split("|")[0])
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_event_body_carries_every_field_the_contract_table_lists(page: Path) -> None:
    """The contract says every key is present (null when it does not apply), but the
    call life's events had no ``closed_by``, ``closed_at`` nor ``closed_direction``
    and a rule's ``notify`` had no ``owner``, ``transfer``, ``hangup_by``...: a 1C
    reader that takes the body into a Структура, or checks the shape, failed on
    them (issue 16)."""
    assert _contract_fields(page) == list(EVENT_FIELDS)
    rules = CountryRules()
    tz = ZoneInfo("Europe/Moscow")
    bodies = {
        "life ringing": call_event_payload(lifeevents.ringing("1.1", "101"), rules=rules, tz=tz),
        "life hangup": call_event_payload(lifeevents.hangup("1.1", "101"), rules=rules, tz=tz),
        "life missed": call_event_payload(lifeevents.missed("1.1"), rules=rules, tz=tz),
    }
    bodies["missed_closed"] = closed_event(
        bodies["life missed"], {**bodies["life hangup"], "call_id": "2.2"}
    )
    record = CallRecord("1.1", "in", "79161234567", "74951234567", datetime(2026, 12, 1, 12))
    notify = build_event("missed", record, tz=tz)
    assert "event_id" not in notify  # keyed by (call_id, event), as the table says
    bodies["notify"] = {"event_id": None, **notify}
    for what, body in bodies.items():
        assert sorted(body) == sorted(EVENT_FIELDS), what


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_contract_says_when_recording_url_is_a_link(page: Path) -> None:
    """The table said ``recording_url`` is always null, while in pull mode the plugin
    puts the signed link of the call's recording in its ``hangup`` and ``missed``
    (``_deliver``; test_onec_recordings checks the link): a 1C developer who read the
    table ignored the field and never showed the link (issue 16)."""
    text = page.read_text(encoding="utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `recording_url` |")]
    for said in ("`hangup`", "`missed`", '`[recordings] mode = "pull"`', "null"):
        assert said in row, f"{page.name}: the recording_url row does not say {said}"


RECORDING_SIDES = {
    DOCS / "recordings.md": "## The 1C side",
    DOCS / "ru" / "recordings.md": "## Сторона 1С",
}


@pytest.mark.parametrize("page", RECORDING_SIDES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_1c_side_of_recordings_says_where_the_module_keeps_them(page: Path) -> None:
    """The page said the chunks wait in a temporary file per call and part, while
    TelephonyRecordings.bsl keeps each in the register ТелефонияЧастиЗаписей (a temporary
    file of one working process is not there for the next chunk in another) and
    stores the file in ТелефонияЗаписиРазговоров: a 1C developer who read the page
    left out the registers (issue 16)."""
    module = (DOCS.parent / "examples" / "onec" / "TelephonyRecordings.bsl").read_text("utf-8")
    text = page.read_text(encoding="utf-8")
    start = text.index(RECORDING_SIDES[page])
    end = text.find("\n## ", start + 1)
    section = text[start:] if end < 0 else text[start:end]
    registers = set(re.findall(r"РегистрыСведений\.(\w+)", module))
    assert registers == {"ТелефонияЧастиЗаписей", "ТелефонияЗаписиРазговоров"}
    for register in sorted(registers):
        assert f"`{register}`" in section, f"{page.name}: the 1C side does not name {register}"
    if "ВременногоФайла" not in module:
        assert "temporary file" not in section
        assert "временном файле" not in section


#: A command line of the double as the pages show it (to a comment or the code span's end).
_DOUBLE_LINE = re.compile(
    r"(?:callrouter-onec-double|python -m callrouter_onec\.double)(?=[\s`]|$)([^`\n]*)"
)


def double_lines() -> list[tuple[str, str]]:
    """(page, arguments) of every command line of the double the docs show."""
    found = []
    for page in [*PAGES, *sorted(Path(__file__).resolve().parents[1].glob("README*.md"))]:
        for match in _DOUBLE_LINE.finditer(page.read_text(encoding="utf-8")):
            arguments = re.split(r"\s#", match.group(1), maxsplit=1)[0]
            found.append((page.name if page.parent.name != "ru" else "ru/" + page.name, arguments))
    return found


def test_every_documented_command_line_of_the_double_parses_as_written() -> None:
    """Its flags are those docs/onec.md (+ru) and the README show: a flag
    renamed in the code and not in the pages left them wrong."""
    lines = double_lines()
    flags = {word for _, arguments in lines for word in shlex.split(arguments) if word[:2] == "--"}
    # The examples the pages show, so that a regex gone wrong cannot pass empty.
    assert {"--port", "--password", "--fault", "--ibsession", "--session-max-age"} <= flags
    assert {"--data", "--base-path", "--url"} <= flags
    for page, arguments in lines:
        words = shlex.split(arguments)
        parser = story_parser() if words[:1] == ["story"] else build_parser()
        try:
            parser.parse_args(words[1:] if words[:1] == ["story"] else words)
        except SystemExit:
            pytest.fail(f"{page}: callrouter-onec-double {arguments.strip()!r} does not parse")


PLUGIN = Path(__file__).resolve().parents[1]


def test_the_readme_module_table_names_every_module_and_no_other() -> None:
    """The README's "Module | Why it exists" table is the map a reader starts from:
    a module removed (``supervise``, now ``router.Supervised``) or added
    (``recordings``) shows here."""
    text = (PLUGIN / "README.md").read_text(encoding="utf-8")
    table = text.split("| Module | Why it exists |", 1)[1].split("\n\n", 1)[0]
    named = {
        name
        for line in table.splitlines()[2:]
        for name in re.findall(r"`(\w+)`", line.strip().strip("|").split("|")[0])
    }
    modules = {p.stem for p in (PLUGIN / "callrouter_onec").glob("*.py") if p.stem != "__init__"}
    assert named - modules == set(), f"README.md names no such module: {sorted(named - modules)}"
    assert modules - named == set(), f"README.md's table lacks {sorted(modules - named)}"


def test_the_bsl_modules_point_the_1c_developer_to_existing_russian_pages() -> None:
    """The BSL modules are commented in Russian for a 1C developer: a page they name
    exists, and is the Russian twin when docs/ru/ has one (``docs/api.md`` was named
    where ``docs/ru/api.md`` says the same in Russian)."""
    wrong = []
    for module in sorted((DOCS.parent / "examples" / "onec").glob("*.bsl")):
        for n, line in enumerate(module.read_text(encoding="utf-8").splitlines(), 1):
            for page in re.findall(r"\bdocs/[\w./-]+\.md", line):
                twin = DOCS / "ru" / page.removeprefix("docs/")
                if not (DOCS.parent / page).is_file():
                    wrong.append(f"{module.name}:{n}: {page} does not exist")
                elif not page.startswith("docs/ru/") and twin.is_file():
                    wrong.append(f"{module.name}:{n}: {page}, not its Russian twin docs/ru/...")
    assert not wrong, "; ".join(wrong)


async def test_the_pages_say_an_expired_answer_is_served_with_1c_up_too(
    double: OneCDouble,
) -> None:
    """The pages said an expired answer is served "while 1C is unavailable (and
    refreshed in the background when it is not)", and ``owner.stale`` only "1C down
    or slow": the cache serves it whatever 1C's state (stale-while-revalidate), so an
    admin reading ``stale 412 s`` on a decision took a healthy 1C for a sick one
    (issue 16). The behaviour, then what both pages say of it."""
    now = [1000.0]
    settings = OneCSettings(double.url, DEFAULT_USER, double.password, timeout=10.0)
    async with OneCClient(settings) as client:
        cache = ResponsibleCache(client, positive_ttl=600, clock=lambda: now[0])
        try:
            await cache.aged("79161234567")
            now[0] += 601
            _, age = await cache.aged("79161234567")  # 1C up and quick: served all the same
            assert age == 601
        finally:
            await cache.aclose()
    for page in PAGES:
        stale_row = next(
            line
            for line in page.read_text("utf-8").splitlines()
            if line.startswith("| `stale_ttl`")
        )
        assert "stale-while-revalidate" in stale_row, page.name
        owner_row = next(
            line
            for line in page.read_text("utf-8").splitlines()
            if line.startswith("| `owner.stale`")
        )
        assert "stale_ttl" in owner_row, page.name
        assert "1C down or slow" not in owner_row
        assert "недоступна или медлит" not in owner_row
