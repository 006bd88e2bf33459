"""Every command says its errors as argparse says a wrong command line:
``callrouter COMMAND: error: ...``, and its ``--config`` is ``PATH`` in its
usage (hcli31's trial: ``callrouter: error:`` for a config error of
``recordings``, ``state`` and ``history``, ``callrouter token new: unknown
operation ...`` with no ``error:``, ``--config`` shown as PATH, FILE or
CONFIG depending on the command)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from router.cli import build_parser, main
from tests.unit.cli_code import exit_code


@pytest.mark.parametrize(
    "argv",
    [
        ["recordings", "status"],
        ["recordings", "retry", "--failed"],
        ["state", "backup", "/tmp/never-written"],
        ["state", "restore", "/tmp/never-read"],
        ["history", "replay", "--since", "1h"],
        ["run"],
        ["ami", "Ping"],
    ],
)
def test_a_config_error_is_named_after_the_command(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.toml"
    assert main([*argv, "--config", str(missing)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    command = " ".join(argv[:2]) if argv[0] in {"recordings", "state", "history"} else argv[0]
    [line] = err
    assert line.startswith(f"callrouter {command}: error: {missing}: no such file"), line


def test_token_new_says_error_as_argparse_does(capsys: pytest.CaptureFixture[str]) -> None:
    """With its usage first, as argparse says a wrong command line (hleft33b:
    it was the error line alone)."""
    argv = ["token", "new", "crm", "--allow", "calls:creat", "--extensions", "1"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: callrouter token new ")
    assert err.splitlines()[-1].startswith(
        "callrouter token new: error: unknown operation 'calls:creat'; did you mean 'calls:create'?"
    )


def _parsers(parser: argparse.ArgumentParser, name: str = "callrouter") -> dict[str, object]:
    found: dict[str, object] = {name: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                found.update(_parsers(child, f"{name} {sub}"))
    return found


def test_every_config_flag_is_a_path() -> None:
    shown = {
        name: action.metavar
        for name, parser in _parsers(build_parser()).items()
        for action in parser._actions  # type: ignore[attr-defined]
        if "--config" in action.option_strings
    }
    assert len(shown) >= 9, shown  # ami ... state backup
    assert set(shown.values()) == {"PATH"}, shown


#: What each command needs on its command line besides --config to get as far
#: as reading it. A command added to callrouter fails the test below until it is
#: named here or in _NO_CONFIG.
_REQUIRED: dict[str, list[str]] = {
    "ami": ["Ping"],
    "check": [],
    "events": ["--count", "1"],
    "explain": ["--caller", "79161234567", "--did", "4951234567"],
    "history replay": ["--since", "1h"],
    "plugins": [],
    "recordings retry": ["--failed"],
    "recordings status": [],
    "run": [],
    "state backup": ["{tmp}/backup"],
    "state restore": ["{tmp}/backup"],
    "ui sign-out-all": [],
}
#: Commands that read no router.toml, and why.
_NO_CONFIG: dict[str, str] = {
    "actions": "lists the AMI action catalog callrouter carries: no router.toml",
    "token new": "prints a new API token and the [api.tokens.NAME] lines to paste: no router.toml",
}


def _commands() -> list[str]:
    """Every command a user can run, as words after ``callrouter``."""
    found = []
    for name, parser in _parsers(build_parser()).items():
        actions = parser._actions  # type: ignore[attr-defined]
        if not any(isinstance(a, argparse._SubParsersAction) for a in actions):
            found.append(name.removeprefix("callrouter "))
    return sorted(found)


def _broken(kind: str, tmp: Path) -> Path:
    """A --config that cannot be read: missing, a folder, not UTF-8, not TOML."""
    if kind == "missing":
        return Path("/nonexistent/router.toml")
    path = tmp / "router.toml"
    if kind == "folder":
        path.mkdir()
    elif kind == "not UTF-8":
        path.write_bytes(b'[asterisk]\nurl = "\xff"\n')
    else:
        path.write_text('[asterisk\nurl = "tcp://127.0.0.1:5038"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["missing", "folder", "not UTF-8", "not TOML"])
@pytest.mark.parametrize("command", _commands())
def test_every_command_says_an_unreadable_config_as_its_error(
    command: str,
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """hleft32b's trial: `callrouter check --config /nonexistent` printed
    `/nonexistent: no such file` on stdout, as a finding. A --config that
    cannot be read is the command's error for every command (`run` included):
    exit 1 (docs/operations.md), nothing on stdout, and the last line on stderr
    `callrouter COMMAND: error: PATH: ...`."""
    if command in _NO_CONFIG:
        shown = _parsers(build_parser())[f"callrouter {command}"]
        options = shown._actions  # type: ignore[attr-defined]
        assert not any("--config" in a.option_strings for a in options), command
        pytest.skip(_NO_CONFIG[command])
    assert command in _REQUIRED, f"callrouter {command}: new command, say what it needs above"
    monkeypatch.chdir(tmp_path)  # no ./router.toml of the checkout's
    (tmp_path / "work").mkdir()
    config = _broken(kind, tmp_path / "work")
    assert not Path("/nonexistent").exists()
    extra = [word.format(tmp=tmp_path) for word in _REQUIRED[command]]
    assert main([*command.split(), *extra, "--config", str(config)]) == 1
    out, err = capfd.readouterr()
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"callrouter {command}: error: {config}: "), last
    assert not (tmp_path / "backup").exists()


@pytest.mark.parametrize("command", _commands())
def test_every_command_says_an_unknown_option_as_argparse_does(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """hleft33's trial of every command with a wrong argument: a usage error is
    exit 2, the command's own usage, then `callrouter COMMAND: error: ...`, all
    on stderr, whatever else the command needs (nothing is read first)."""
    needed = ["crm", "--allow", "calls:read", "--extensions", "1"]  # token new's
    extra = _REQUIRED.get(command, needed if command == "token new" else [])
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), *extra, "--no-such-option"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"usage: callrouter {command} [-h]"), lines
    assert lines[-1].startswith(f"callrouter {command}: error: "), lines
    assert lines[-1].endswith("unrecognized argument: --no-such-option"), lines


@pytest.mark.parametrize("command", _commands())
def test_every_command_says_a_url_that_is_no_url_as_its_error(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """hleft33's trial: `--url 'http://[pbx'` (or router.toml's url so) ended
    `ami`, `check`, `events` and `run` in a `ValueError: Invalid IPv6 URL`
    traceback. It is a wrong command line naming the flag: the usage, exit 2,
    as any other bad flag value (docs/operations.md; hleft33b: it was exit 1
    without the usage), nothing on stdout."""
    shown = _parsers(build_parser())[f"callrouter {command}"]
    options = shown._actions  # type: ignore[attr-defined]
    if not any("--url" in a.option_strings for a in options):
        pytest.skip("takes no --url")
    monkeypatch.chdir(tmp_path)  # no ./router.toml of the checkout's
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    extra = [word.format(tmp=tmp_path) for word in _REQUIRED[command]]
    if command == "check":
        extra.append("--asterisk")
    url = ["--url", "http://[pbx/asterisk", "--username", "u"]
    assert exit_code([*command.split(), *extra, *url]) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith(f"usage: callrouter {command} ")
    assert err.strip().splitlines()[-1] == (
        f"callrouter {command}: error: argument --url: not a URL "
        "(Invalid IPv6 URL): 'http://[pbx/asterisk'"
    )


def test_no_command_is_a_usage_error_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """hleft33's trial: `callrouter` alone printed its help on stdout and
    exited 2: a usage error, said on stderr as argparse says one, with the
    commands to choose from."""
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: callrouter [-h] [--version] COMMAND ...")
    assert "  check     validate router.toml and the rule files" in err
    assert err.endswith("callrouter: error: a COMMAND is required\n")


REPO = Path(__file__).parents[2]


def test_explain_says_rule_problems_on_stderr_and_json_stays_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hnew32's trial: a rule `explain` leaves out was said on stdout as
    `warning: ... (rule not loaded)`, before the trace: `explain --json`
    printed a line and then the JSON, which no JSON reader takes (issue 16)."""
    import json

    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n"
        "  - name: typo\n    on: call\n    if: workhour('mon-fri 09:00-19:00')\n"
        "    do:\n      - hangup: {}\n"
        "  - name: default\n    on: call\n    do:\n      - redirect: {context: a, exten: b}\n",
        encoding="utf-8",
    )
    argv = ["explain", "--rules", str(rules), "--caller", "79161234567", "--did", "74951234567"]
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["decision"]["rules"] == ["default"]
    assert err.splitlines()[-1] == (
        "callrouter explain: warning: rules.yaml:5: rule 'typo': unknown function "
        "'workhour' (did you mean 'workhours'?) (rule not loaded)"
    )
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "rule not loaded" not in out
    assert "decision: redirect" in out
    assert "(rule not loaded)" in err


def test_a_configured_rules_folder_that_is_not_there_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hnew32's trial: examples/router.toml copied as README's quick start
    says, without the rules beside it: check, explain and run said only
    `rules: no such file or folder`, not that router.toml's [router] rules
    names it, relative to its own folder (issue 16)."""
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "router.toml"
    config.write_text((REPO / "examples" / "router.toml").read_text(encoding="utf-8"))
    line = next(
        n for n, text in enumerate(config.read_text().splitlines(), 1) if text.startswith("rules =")
    )
    monkeypatch.chdir(tmp_path)
    hint = (
        f"etc/rules: no such file or folder (named by etc/router.toml:{line}: [router] rules, "
        f"relative to {tmp_path.resolve() / 'etc'}); copy the shipped rules/ there to start "
        "from (README, Quick start), or set [router] rules"
    )
    assert main(["check", "--config", "etc/router.toml"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == hint
    call = ["--caller", "79161234567", "--did", "74951234567"]
    assert main(["explain", "--config", "etc/router.toml", *call]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"callrouter explain: error: {hint}\n" in err
    # Paths given on the command line are the user's own: no router.toml hint.
    assert main(["check", "--config", "etc/router.toml", "nowhere/"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == "nowhere: no such file or folder"


@pytest.mark.parametrize(
    ("module", "func", "argv"),
    [
        ("router.commands.history", "run_replay", ["history", "replay", "--since", "1h"]),
        ("router.commands.state", "run_backup", ["state", "backup", "/tmp/never-written"]),
        ("router.commands.ui", "run_sign_out_all", ["ui", "sign-out-all"]),
        ("router.commands.check", "run", ["check"]),
    ],
)
def test_a_logged_warning_is_named_after_the_command_too(
    module: str,
    func: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`callrouter history replay` said a plugin's failure at shutdown as
    `callrouter history: error: plugin 'onec' failed in callrouter_shutdown:
    ...` (issue 16): what a command logs is named as its own error lines
    are, with the whole command."""
    import importlib
    import logging

    def logs(args: argparse.Namespace) -> int:
        logging.getLogger("router.somewhere").warning("something to say")
        return 0

    monkeypatch.setattr(importlib.import_module(module), func, logs)
    assert main(argv) == 0
    [line] = capsys.readouterr().err.strip().splitlines()
    command = " ".join(argv[:2]) if argv[0] in {"history", "state", "ui"} else argv[0]
    assert line == f"callrouter {command}: warning: something to say"
