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
