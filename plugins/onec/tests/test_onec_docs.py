"""docs/onec.md and docs/ru/onec.md stay in step with the plugin's settings and history.

Every ``[plugins.onec]`` key has a row in both pages with the default the code
uses, and the call-history table names every decision outcome the engine gives.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callrouter_onec.history import MAX_AGE, MAX_ROWS
from callrouter_onec.plugin import KEYS, parse_settings

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
