"""Every ``asterisk -rx "..."`` the docs tell an administrator to type is a
command Asterisk 22 has.

docs/asterisk.md said to check the forwarding globals with ``asterisk -rx
"core show globals"``, which Asterisk 22 answers with ``No such command``
(it is ``dialplan show globals``): an administrator following the page learnt
nothing, and nobody reading only the page could tell. The commands are
collected from README.md, docs/ (Russian pages included) and examples/, and
each is looked up with ``core show help`` on the sandbox, which runs nothing:
the longest leading words Asterisk knows as a command must leave over only
its arguments (``manager show user router``: the command ``manager show
user``), and be at least two words (``core show`` alone is no command).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.sandbox import Sandbox

REPO = Path(__file__).parents[2]
SOURCES = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted(p for p in (REPO / "examples").rglob("*") if p.suffix in {".md", ".conf", ".toml"}),
]
#: ``asterisk -rx`` and its quoted command, which the page may wrap over lines.
_COMMAND = re.compile(r"""asterisk\s+-rx\s+(["'])(.+?)\1""", re.S)


def documented() -> dict[str, str]:
    """Each command (words joined by one space) -> the first file naming it."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for match in _COMMAND.finditer(path.read_text(encoding="utf-8")):
            command = " ".join(match.group(2).split())
            found.setdefault(command, str(path.relative_to(REPO)))
    return found


COMMANDS = documented()


def test_the_commands_are_found() -> None:
    assert "manager reload" in COMMANDS
    assert "manager show user router" in COMMANDS  # wrapped over two lines on the page
    assert "dialplan show globals" in COMMANDS


def known(box: Sandbox, command: str) -> str | None:
    """The command part of ``command`` Asterisk has, or None.

    ``core show help`` answers a whole command with its ``Usage:``, and words
    that only begin commands (``core show``) with a list of them; words left
    over must be arguments the usage shows (``<user>``, ``[module ...]``).
    """
    words = command.split()
    for end in range(len(words), 1, -1):
        head = " ".join(words[:end])
        usage = box.cli("core show help " + head).strip().splitlines()[:1]
        if usage and usage[0].startswith(f"Usage: {head}"):
            rest = usage[0].removeprefix(f"Usage: {head}")
            if end == len(words) or "<" in rest or "[" in rest:
                return head
    return None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_asterisk_has_the_documented_command(sandbox: Sandbox, command: str) -> None:
    assert known(sandbox, command) is not None, (
        f"{COMMANDS[command]}: Asterisk has no command `{command}` (core show help)"
    )
