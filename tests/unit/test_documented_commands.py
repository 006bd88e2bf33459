"""Every ``callrouter check`` / ``callrouter explain`` command the docs show
works exactly as written (issue 11 item 15: ``--config`` was documented before
it existed), and every other ``callrouter`` command they show parses as
written: its subcommand, options and values are the ones the code takes.

Commands are collected from README.md, docs/ (Russian pages included) and
examples/, parsed by the real argument parser, and run from the repository
(``/etc/callrouter/`` is a copy of examples/router.toml and the shipped rules):
each must exit 0.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path

import pytest

from router.cli import build_parser, main

REPO = Path(__file__).parents[2]
SOURCES = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted((REPO / "examples").rglob("*.md")),
    REPO / "examples" / "router.toml",
]
# Not a message quoted with its prefix ("`callrouter check: error: ...`").
_COMMAND = re.compile(r"(?:^\s*\$?\s*|`|#\s*`?)(callrouter (?:check|explain)\b(?!:)[^`\n]*)", re.M)


def documented() -> list[tuple[str, str]]:
    """(where, command line) for every check/explain command with arguments."""
    found: dict[str, str] = {}
    for path in SOURCES:
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
        for match in _COMMAND.finditer(text):
            line = re.split(r"\s+#\s", match.group(1))[0].strip()
            words = shlex.split(line)
            # Prose names an option ("`explain --at`") or a placeholder (RE, PATH).
            if (
                len(words) > 2
                and not words[-1].startswith("--")
                and not any(w.isupper() for w in words)
            ):
                found.setdefault(line, str(path.relative_to(REPO)))
    return sorted((where, line) for line, where in found.items())


COMMANDS = documented()


def test_the_documented_commands_are_found() -> None:
    lines = {line for _, line in COMMANDS}
    assert "callrouter check --config /etc/callrouter/router.toml" in lines
    assert "callrouter check --config router.toml" in lines
    assert any(line.startswith("callrouter explain --caller") for line in lines)


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[line for _, line in COMMANDS])
def test_documented_command_works(
    where: str,
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    etc = tmp_path / "etc" / "callrouter"
    etc.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "router.toml", etc / "router.toml")
    shutil.copytree(REPO / "rules", etc / "rules")
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    cwd = REPO / "examples" if "--config router.toml" in line else REPO
    monkeypatch.chdir(cwd)
    if "--manager-conf-file /etc/asterisk/manager.conf" in line:
        # The user's section as `--manager-conf` prints it: what the docs
        # ask the administrator to paste.
        assert main([*shlex.split(line)[1:4], "--manager-conf"]) == 0
        printed = capsys.readouterr().out.splitlines()
        conf = tmp_path / "manager.conf"
        lines = [text for text in printed if text.startswith("eventfilter")]
        conf.write_text(
            "[router]\nread = call,dialplan,user,agent,system\n"
            "write = call,originate,user,reporting\n" + "\n".join(lines) + "\n",
            encoding="utf-8",
        )
        line = line.replace("/etc/asterisk/manager.conf", str(conf))
    argv = shlex.split(line.replace("/etc/callrouter/", f"{etc}/"))[1:]
    build_parser().parse_args(argv)  # every option exists
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, f"{where}: `{line}` exited {code}:\n{out}"


#: A console block's offline ``check`` and the lines it shows printed.
_CONSOLE = re.compile(r"^ *```console\n(.*?)^ *```", re.M | re.S)


def shown_checks() -> list[tuple[str, str, list[str]]]:
    """(where, command, the lines shown under it) for each ``$ callrouter
    check`` of a console block that needs no Asterisk and shows a clean run
    (rules.md's typo is its own test: tests/unit/rules/test_rules_docs.py)."""
    found: list[tuple[str, str, list[str]]] = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for block in _CONSOLE.findall(path.read_text(encoding="utf-8")):
            lines = [line.strip() for line in block.splitlines()]
            for i, line in enumerate(lines):
                if not line.startswith("$ callrouter check") or "--asterisk" in line:
                    continue
                command = re.split(r"\s+#\s", line[2:])[0].strip()
                shown: list[str] = []
                for out in lines[i + 1 :]:
                    if out.startswith("$ "):
                        break
                    if out and out != "...":
                        shown.append(out)
                if shown and not any("error" in out for out in shown):
                    found.append((str(path.relative_to(REPO)), command, shown))
    return found


SHOWN = shown_checks()


def test_the_shown_checks_are_found() -> None:
    where = {(where, command) for where, command, _ in SHOWN}
    for page in ("docs/reference/config.md", "docs/ru/reference/config.md"):
        assert (page, "callrouter check --config /etc/callrouter/router.toml") in where


@pytest.mark.parametrize(("where", "line", "shown"), SHOWN, ids=[f"{w}: {c}" for w, c, _ in SHOWN])
def test_a_shown_check_prints_what_the_page_shows(
    where: str,
    line: str,
    shown: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """reference/config.md (+ru) showed `11 rules OK` for router.toml and the
    shipped rules/ in /etc/callrouter, which are 10 (issue 16): each line a
    page shows under an offline `callrouter check` is what it prints, in
    order, with /etc/callrouter/ a copy of examples/router.toml and rules/."""
    etc = tmp_path / "etc" / "callrouter"
    etc.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "router.toml", etc / "router.toml")
    shutil.copytree(REPO / "rules", etc / "rules")
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    monkeypatch.chdir(REPO / "examples" if "--config router.toml" in line else REPO)
    code = main(shlex.split(line.replace("/etc/callrouter/", f"{etc}/"))[1:])
    printed = [
        out.strip().replace(f"{etc}/", "/etc/callrouter/").replace(str(etc), "/etc/callrouter")
        for out in capsys.readouterr().out.splitlines()
    ]
    assert code == 0, f"{where}: `{line}` exited {code}"
    rest = iter(printed)
    missing = [out for out in shown if out not in rest]
    assert not missing, f"{where}: `{line}` printed {printed}, not {missing}"


def test_the_quick_start_pastes_the_dialplan_with_the_globals_it_reads() -> None:
    """README's step 6 said to paste the `[callrouter-inbound]` context; pasted
    alone on the sandbox Asterisk, a call did not wait and its default route
    ran the context again and again (issue 16). The step names the whole file
    and its `[globals]`, which set every global that context reads."""
    from router.testing.asterisk import dialplan_globals, dialplan_steps

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    step = readme[readme.index("6. **Dialplan**") : readme.index("7. **Run**")]
    flat = " ".join(step.split())
    assert "paste the whole [examples/asterisk/extensions.conf]" in flat
    assert "`[globals]`" in flat
    assert "`callrouter check --asterisk` says so" in flat
    snippet = (REPO / "examples" / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    read = {
        name
        for item in dialplan_steps(snippet, "callrouter-inbound")
        for name in re.findall(r"\$\{(CALLROUTER_[A-Z_]+)\}", item["AppData"])
    }
    set_by_steps = {
        item["AppData"].split("=", 1)[0]
        for item in dialplan_steps(snippet, "callrouter-inbound")
        if item["Application"] == "Set"
    }
    # The context sets a default of its own for a global Asterisk has no value
    # for (Set(NAME=${IF(...${NAME}...)})): still read from [globals] first.
    defaulted = {
        name
        for item in dialplan_steps(snippet, "callrouter-inbound")
        if item["Application"] == "Set"
        for name in [item["AppData"].split("=", 1)[0]]
        if f"${{{name}}}" in item["AppData"].split("=", 1)[1]
    }
    # CALLROUTER_RECORD is a channel's, set by callrouter's Setvar (empty: none).
    globals_read = (read - set_by_steps | defaulted) - {"CALLROUTER_RECORD"}
    assert globals_read == {"CALLROUTER_WAIT", "CALLROUTER_DEFAULT"}
    assert globals_read <= {k for k, v in dialplan_globals(snippet).items() if v}
    for name in globals_read:
        assert f"`{name}`" in flat


# -- every other command the docs show parses as written ---------------------------


def subcommands() -> set[str]:
    """Every ``callrouter`` subcommand the parser has: a list written out here
    left ``ui`` out, so no documented ``callrouter ui sign-out-all`` was parsed
    (issue 16)."""
    [choices] = [
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    return set(choices)


SUBCOMMANDS = subcommands()
_FENCED = re.compile(r"^ *(```+|~~~+)[^\n]*\n(.*?)^ *\1 *$", re.M | re.S)
#: A command line: at its start, after a prompt or ``sudo``, by name or by
#: path, or by path after what runs it (``systemd-run ... /opt/callrouter/bin/callrouter``).
_COMMAND_LINE = re.compile(
    r"(?:^[ \t]*(?:\$ |# )?(?:sudo (?:-u \S+ )?)?(?:[\w./-]*/)?|(?<=\s)/[\w./-]*/)"
    r"(callrouter [a-z].*)$",
    re.M,
)
_CODE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
#: What argparse says of a command the page names without all it needs
#: ("`callrouter token new`", "`explain --at`"): a mention, not a command to run.
_MENTION = re.compile(r"the following arguments are required|expected one argument")


def every_documented() -> list[tuple[str, str]]:
    """(where, command line) of every callrouter command the docs show: a line
    of a code block, or a code span, that starts with one. A message quoted
    with its prefix (`callrouter run: error: ...`) is not a command."""
    found: dict[str, str] = {}
    for path in [*SOURCES, REPO / "CONTRIBUTING.md", REPO / "plugins" / "onec" / "README.md"]:
        text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
        blocks = [m.group(2) for m in _FENCED.finditer(text)]
        prose = _FENCED.sub("", text)
        lines = [m.group(1) for block in blocks for m in _COMMAND_LINE.finditer(block)]
        lines += [" ".join(span.split()) for span in _CODE_SPAN.findall(prose)]
        for candidate in lines:
            # Up to a comment, a pipe, a redirection or the next command.
            line = re.split(r"\s+#\s|\s*\||\s+2?>|\s*&&|;", candidate)[0].strip()
            words = line.split()
            if (
                len(words) >= 2
                and words[0] == "callrouter"
                and words[1] in SUBCOMMANDS
                and not any(word.endswith(":") for word in words)
            ):
                found.setdefault(line, str(path.relative_to(REPO)))
    return sorted((where, line) for line, where in found.items())


EVERY = every_documented()


def test_the_restore_and_rollback_steps_use_state_restore() -> None:
    """operations.md (+ru) restored a backup with `cp BACKUP/* STATE/`, which
    left the files a newer version made and the old -wal beside a restored
    database (issue 16): both steps run `callrouter state restore`, as written."""
    lines = {line for _, line in EVERY}
    for example in (
        "callrouter state restore /var/backups/callrouter/2026-12-01 "
        "--config /etc/callrouter/router.toml",
        "callrouter state restore /var/backups/callrouter/before-upgrade "
        "--config /etc/callrouter/router.toml",
    ):
        assert example in lines
        build_parser().parse_args(example.split()[1:])
    for page in ("operations.md", "ru/operations.md"):
        text = (REPO / "docs" / page).read_text(encoding="utf-8")
        assert "cp /var/backups/callrouter" not in text, page
        assert text.count("callrouter state restore /var/backups/callrouter/") == 2, page


def test_every_subcommand_is_shown_somewhere() -> None:
    shown = {line.split()[1] for _, line in EVERY}
    assert "ui" in SUBCOMMANDS
    assert shown == SUBCOMMANDS
    assert len(EVERY) >= 60


@pytest.mark.parametrize(("where", "line"), EVERY, ids=[line for _, line in EVERY])
def test_documented_command_parses(
    where: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every option and value is one the command takes (`callrouter events
    --count N` with its placeholder aside): a flag renamed in the code and not
    in the docs, or a command the docs spell wrong, fails here."""
    words = shlex.split(re.sub(r"\$\([^)]*\)", "X", line))[1:]  # $(date +%F)
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        said = capsys.readouterr().err
        placeholder = any(re.fullmatch(r"\[?[A-Z]+\]?", word) for word in words)
        if exc.code and not _MENTION.search(said) and not placeholder:
            pytest.fail(f"{where}: `{line}` does not parse: {said.strip().splitlines()[-1]}")


def options() -> list[tuple[str, str]]:
    """(command, option) for every option of every callrouter command, hidden
    ones aside (``--secret``, refused)."""
    found: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, command: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{command} {name}")
            elif action.help != argparse.SUPPRESS:
                found.extend((command, o) for o in action.option_strings if o != "-h")

    walk(build_parser(), "callrouter")
    return [(command, option) for command, option in found if option != "--help"]


OPTIONS = options()
#: Where an administrator looks up an option: the English pages and their
#: Russian twins each on their own (docs/ru/ has no page the English one lacks).
READERS = {
    "en": [
        REPO / "README.md",
        *sorted(p for p in (REPO / "docs").rglob("*.md") if "ru" not in p.parts),
    ],
    "ru": sorted((REPO / "docs" / "ru").rglob("*.md")),
}


def test_the_options_are_found() -> None:
    assert ("callrouter explain", "--name") in OPTIONS
    assert ("callrouter", "--version") in OPTIONS
    assert not any(option == "--secret" for _, option in OPTIONS)


@pytest.mark.parametrize("language", sorted(READERS))
def test_every_option_is_documented(language: str) -> None:
    """An option `--help` lists and no page names is one nobody learns of
    (`explain --name`, `--version` were; issue 16)."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in READERS[language])
    missing = [
        f"{command} {option}"
        for command, option in OPTIONS
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
    ]
    assert not missing, f"no {language} page names {missing}"


def test_the_error_contributing_quotes_is_the_one_check_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CONTRIBUTING.md gave "error messages are part of the interface" an
    example from before tcp:// and tls:// (`expected http:// or https://`) and
    without its line (issue 16): the quote is what `callrouter check` prints
    for that file."""
    text = " ".join((REPO / "CONTRIBUTING.md").read_text(encoding="utf-8").split())
    quoted = re.search(r"tests assert their text \(`([^`]+)`\)", text)
    assert quoted is not None
    place, message = quoted.group(1).split(" ", 1)
    name, line = place.rstrip(":").split(":")
    assert name == "router.toml"
    url = re.search(r"got '([^']+)'", message)
    assert url is not None
    monkeypatch.chdir(tmp_path)
    lines = ["[asterisk]", 'username = "router"']
    lines.insert(int(line) - 1, f'url = "{url.group(1)}"')
    (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["check", "--config", name]) == 1
    assert capsys.readouterr().out.splitlines()[0] == quoted.group(1)
