"""Every manager.conf ``[general]`` the docs ask an administrator to paste
binds the manager's native port to an address: without ``bindaddr``
Asterisk 22 listens on every interface (``manager show settings`` said
``TCP Bindaddress: [::]:5038`` on the sandbox), and the README's quick start
enabled the manager with no ``bindaddr``."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
PAGES = (
    "README.md",
    "docs/asterisk-ajam.md",
    "docs/asterisk.md",
    "docs/ru/asterisk-ajam.md",
    "docs/ru/asterisk.md",
)


def manager_generals(text: str) -> list[str]:
    """The ``[general]`` sections of manager.conf in the page's ini blocks
    (a block that sets ``webenabled``, ``timestampevents`` or ``port``)."""
    found = []
    for block in re.findall(r"```ini\n(.*?)```", text, re.S):
        block = textwrap.dedent(block)  # a block in a list item is indented
        for general in re.findall(r"\[general\]\n(.*?)(?=\n\[|\n; \w+\.conf|\Z)", block, re.S):
            if re.search(r"^(webenabled|timestampevents|port)\s*=", general, re.M):
                found.append(general)
    return found


@pytest.mark.parametrize("page", PAGES)
def test_each_manager_general_binds_an_address(page: str) -> None:
    generals = manager_generals((REPO / page).read_text(encoding="utf-8"))
    assert generals, page
    for general in generals:
        if re.search(r"^enabled\s*=\s*yes", general, re.M):
            assert re.search(r"^bindaddr\s*=\s*\S", general, re.M), (page, general)
