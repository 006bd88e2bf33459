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
