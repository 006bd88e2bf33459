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


@pytest.mark.parametrize(
    "argv",
    [
        ["recordings", "status"],
        ["recordings", "retry", "--failed"],
        ["state", "backup", "/tmp/never-written"],
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
    argv = ["token", "new", "crm", "--allow", "calls:creat", "--extensions", "1"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
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
