"""The pages about recording by rule say what the code and the shipped dialplan do
(issue 15 follow-up): the snippet on both asterisk.md pages is the shipped file's,
the refusal the pages quote is the one the client raises, and their links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.ami.client import privilege_error
from router.ami.message import Response
from router.ami.protocol import ActionResult
from tests.unit.test_api_docs import broken_links

REPO = Path(__file__).parents[3]
EXAMPLE = REPO / "examples" / "asterisk" / "extensions.conf"
PAGES = [
    REPO / "docs" / page
    for page in (
        "asterisk.md",
        "ru/asterisk.md",
        "recordings.md",
        "ru/recordings.md",
        "security.md",
        "ru/security.md",
        "api.md",
        "ru/api.md",
        "reference/config.md",
        "ru/reference/config.md",
    )
]


def code_lines(text: str) -> list[str]:
    """Dialplan lines without comments and blank lines."""
    lines = []
    for line in text.splitlines():
        code = line.split(" ;", 1)[0].rstrip() if not line.lstrip().startswith(";") else ""
        if code:
            lines.append(code)
    return lines


def context(lines: list[str], name: str) -> list[str]:
    start = lines.index(f"[{name}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("page", ["asterisk.md", "ru/asterisk.md"])
def test_the_snippet_on_the_page_is_the_shipped_dialplan(page: str) -> None:
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    (snippet,) = [
        b for b in re.findall(r"```ini\n(.*?)```", text, re.S) if "[callrouter-inbound]" in b
    ]
    shown, shipped = code_lines(snippet), code_lines(EXAMPLE.read_text(encoding="utf-8"))
    for name in ("callrouter-inbound", "callrouter-record"):
        assert context(shown, name) == context(shipped, name), name


@pytest.mark.parametrize("page", ["asterisk.md", "ru/asterisk.md"])
def test_every_line_of_the_record_step_is_explained(page: str) -> None:
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    table = "\n".join(line for line in text.splitlines() if line.startswith("| `"))
    for app in ("FILTER(0-9A-Za-z/._^\\-,${CALLROUTER_RECORD})", "MixMonitor(", "SHIFT(", "[.][.]"):
        assert app in table, app


def test_the_quoted_refusal_is_the_one_the_client_raises() -> None:
    result = ActionResult(Response((("Response", "Error"), ("Message", "Permission denied"))))
    message = str(privilege_error("MixMonitor", result, "router"))
    assert message == (
        "MixMonitor: Permission denied: the manager user 'router' needs write class "
        "system (manager.conf)"
    )
    pages = ("asterisk.md", "ru/asterisk.md", "recordings.md", "ru/recordings.md", "api.md")
    for page in (*pages, "ru/api.md"):
        flat = " ".join((REPO / "docs" / page).read_text(encoding="utf-8").split())
        assert message in flat, page


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_the_recording_links_resolve(page: Path) -> None:
    """The links these pages make to each other (others are other pages' business)."""
    ours = [b for b in broken_links(page) if "recordings.md" in b or "asterisk.md" in b]
    assert ours == []
