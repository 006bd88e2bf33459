"""`callrouter COMMAND --help` explains every word it lists."""

from __future__ import annotations

import argparse

from router.cli import build_parser


def _unexplained(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if not sub.description:
                    missing.append(f"{path} {name}: no description")
                missing.extend(_unexplained(sub, f"{path} {name}"))
        elif action.help is None:
            missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}: no help")
    return missing


def test_every_command_has_a_description_and_every_argument_a_help() -> None:
    """hcli31's trial: `callrouter plugins --help` showed a bare `--json`,
    `history --help` no word of what it does, `events --help` a bare `GLOB`,
    and `--auth`, `--format`, `run --log-level` nothing but their names."""
    assert _unexplained(build_parser(), "callrouter") == []


def _positionals(parser: argparse.ArgumentParser, path: str) -> list[str]:
    shown = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                shown.extend(_positionals(sub, f"{path} {name}"))
        elif not action.option_strings:
            shown.append(f"{path} {action.metavar or action.dest}")
    return shown


def test_every_positional_is_named_in_capitals_as_its_errors_name_it() -> None:
    """hops45's trial: `callrouter ami --help` listed `[action]` and `action`
    where its description says `callrouter ami ACTION --help`, its error `an
    ACTION is required`, and every other command shows COMMAND, PATH, TARGET."""
    lower = [p for p in _positionals(build_parser(), "callrouter") if not p.split()[-1].isupper()]
    assert lower == []
    assert "ACTION" in build_parser().parse_args(["ami", "Ping"]).parser.format_usage()


def test_check_help_names_every_exit_code_operations_md_gives() -> None:
    """hops45's trial: `check --help` said `Exit code 0: clean, 1: errors`,
    where docs/operations.md (Logs) gives 2 for a wrong command line, as every
    command exits with its usage."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    description = " ".join((sub.choices["check"].description or "").split())
    assert "Exit code 0: clean, 1: errors, 2: a wrong command line." in description
