"""The ``python -m router.sandbox`` commands the docs show work as written:
each parses, and a sandbox started for the phones has the shipped dialplan
(the PSTN side calls into ``callrouter-inbound``; a ``start dev`` without
``--dialplan`` left that call nowhere to go)."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest

from router.sandbox.__main__ import build_parser

REPO = Path(__file__).parents[2]
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]
_COMMAND = re.compile(r"^python -m router\.sandbox (.+?)(?:\s+#.*)?$", re.M)


def documented() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for match in _COMMAND.finditer(page.read_text(encoding="utf-8")):
            found.append((str(page.relative_to(REPO)), shlex.split(match.group(1))))
    return found


COMMANDS = documented()


def test_the_shell_commands_are_found() -> None:
    pages = {page for page, _ in COMMANDS}
    assert {"docs/asterisk.md", "docs/ru/asterisk.md"} <= pages


@pytest.mark.parametrize(("page", "words"), COMMANDS, ids=[" ".join(w) for _, w in COMMANDS])
def test_a_documented_sandbox_command_parses(page: str, words: list[str]) -> None:
    build_parser().parse_args(words)


@pytest.mark.parametrize("page", sorted({page for page, _ in COMMANDS}))
def test_a_sandbox_started_for_the_phones_has_the_shipped_dialplan(page: str) -> None:
    parser = build_parser()
    commands = [parser.parse_args(words) for where, words in COMMANDS if where == page]
    for index, args in enumerate(commands):
        if args.command != "phones":
            continue
        started = [a for a in commands[:index] if a.command == "start" and a.name == args.name]
        assert started, f"{page}: phones {args.name} without a start before it"
        dialplan = started[-1].dialplan
        assert dialplan is not None, f"{page}: start {args.name} without --dialplan"
        assert (REPO / dialplan).is_file()
        assert "[callrouter-inbound]" in (REPO / dialplan).read_text(encoding="utf-8")


def test_make_sandbox_starts_with_the_shipped_dialplan() -> None:
    """CONTRIBUTING.md's `make sandbox`: a new user's PSTN phone called into
    a `callrouter-inbound` the sandbox it started did not have."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^sandbox:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe is not None
    starts = [
        shlex.split(line.split("-m router.sandbox", 1)[1])
        for line in recipe.group(1).splitlines()
        if "-m router.sandbox" in line
    ]
    assert starts
    args = build_parser().parse_args(starts[-1])
    assert (args.command, args.name) == ("start", "dev")
    assert args.dialplan is not None, "make sandbox: start dev without --dialplan"
    assert "[callrouter-inbound]" in (REPO / args.dialplan).read_text(encoding="utf-8")


#: How each page says the defaults: (the joining word, the range's dash,
#: what the start starts, the wait of current(), its unit).
PHRASES = {
    "docs/asterisk.md": (
        "and",
        "-",
        "`Phones.start(pbx)` without `extensions` starts the phones",
        "`current()` is the call that is up, waited for up to",
        "s",
    ),
    "docs/ru/asterisk.md": (
        "и",
        "–",
        "`Phones.start(pbx)` без `extensions` запускает телефоны",
        "`current()` — звонок, идущий сейчас; его ждут до",
        "с",
    ),
}


@pytest.mark.parametrize("page", sorted(PHRASES))
def test_the_phones_defaults_are_the_code_s(page: str) -> None:
    """A script following the page's `Phones.start` with `phones["104"]` met
    a KeyError (only 101-103 start by default), and one asking `current()`
    whether a phone talked waited 10 s for a SandboxError (issue 16): the page
    states both as the code has them."""
    from router.sandbox.phones import EXTENSIONS, Phone, Phones

    started = inspect.signature(Phones.start).parameters["extensions"].default
    waited = inspect.signature(Phone.current).parameters["timeout"].default
    joined, dash, starts, up_to, unit = PHRASES[page]
    flat = " ".join((REPO / page).read_text(encoding="utf-8").split())
    *first, last = (f"`{name}`" for name in started)
    assert f"{starts} {', '.join(first)} {joined} {last}" in flat
    assert f"{EXTENSIONS[0]}{dash}{EXTENSIONS[-1]}" in flat
    assert f"{up_to} {waited:g} {unit}" in flat
