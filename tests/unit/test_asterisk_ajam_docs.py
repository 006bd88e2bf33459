"""docs/asterisk-ajam.md (and its Russian twin) agree with the transports
callrouter has: the page once said callrouter talks to Asterisk "only through
AJAM" and commented the manager's `port = 5038` as "not used by callrouter
today", while `url = "tcp://..."` (docs/asterisk.md, Native TCP AMI) uses
exactly that port (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"
PAGES = [DOCS / "asterisk-ajam.md", DOCS / "ru" / "asterisk-ajam.md"]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _manager_general(text: str) -> str:
    for block in re.findall(r"```ini\n(.*?)```", text, re.S):
        if "webenabled" in block:
            return block
    raise AssertionError("no manager.conf [general] block")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_the_ajam_page_names_the_native_tcp_transport(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    port = next(line for line in _manager_general(text).splitlines() if line.startswith("port ="))
    assert 'url = "tcp://127.0.0.1:5038"' in port, port
    assert "only through" not in text
    assert "только через" not in text
    # The link to the TCP section lands on a heading that exists.
    links = re.findall(r"\]\(asterisk\.md#([^)]+)\)", text)
    target = (page.parent / "asterisk.md").read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", target, re.M)}
    assert links
    assert set(links) <= anchors, set(links) - anchors
    assert any("tcp" in link for link in links)
