"""A mistyped command line gets a did-you-mean, from the (sub)command that
read it, as a rule file's names and an AMI action's do."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[str, str]:
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == 2
    err = capsys.readouterr().err
    return err.splitlines()[0], err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "usage", "said"),
    [
        # hcli31's trial: `callrouter: error: unrecognized arguments: --jsn`
        # under the usage of callrouter itself, not of events.
        (
            ["events", "--jsn"],
            "usage: callrouter events ",
            "callrouter events: error: unrecognized argument: --jsn (did you mean --json?)",
        ),
        (
            ["events", "--jsn", "--cunt", "3"],
            "usage: callrouter events ",
            "callrouter events: error: unrecognized arguments: --jsn (did you mean --json?), "
            "--cunt (did you mean --count?)",
        ),
        # `invalid choice: 'evnts' (choose from 'actions', 'ami', ...)` only.
        (
            ["evnts"],
            "usage: callrouter ",
            "callrouter: error: argument COMMAND: invalid choice: 'evnts' (did you mean 'events'?)",
        ),
        (
            ["token", "nw"],
            "usage: callrouter token ",
            "callrouter token: error: argument ACTION: invalid choice: 'nw' (did you mean 'new'?)",
        ),
        (
            ["--verison"],
            "usage: callrouter ",
            "callrouter: error: unrecognized argument: --verison (did you mean --version?)",
        ),
        # Nothing close: no guess (--follow is not --tz; check takes --auth now).
        (
            ["check", "--follow", "3"],
            "usage: callrouter check ",
            "callrouter check: error: unrecognized argument: --follow",
        ),
    ],
)
def test_a_typo_is_answered_with_the_commands_usage_and_a_did_you_mean(
    capsys: pytest.CaptureFixture[str], argv: list[str], usage: str, said: str
) -> None:
    first, last = _error(capsys, argv)
    assert first.startswith(usage), first
    assert last == said


def test_an_unknown_choice_with_nothing_close_still_lists_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, last = _error(capsys, ["zzzz"])
    assert last.startswith("callrouter: error: argument COMMAND: invalid choice: 'zzzz' (choose")


def test_ami_parameters_after_an_option_are_parameters() -> None:
    """hcli31's trial: `callrouter ami UserEvent --json UserEvent=a` failed with
    `unrecognized arguments: UserEvent=a` (argparse takes one run of positionals)."""
    args = build_parser().parse_args(
        ["ami", "UserEvent", "A=1", "--json", "UserEvent=a", "--url", "tcp://h:5038", "B=2"]
    )
    assert (args.action, args.params, args.json) == (
        "UserEvent",
        ["A=1", "UserEvent=a", "B=2"],
        True,
    )


@pytest.mark.parametrize("page", ["operations.md", "ru/operations.md"])
def test_the_operations_page_shows_a_typo_as_answered(
    capsys: pytest.CaptureFixture[str], page: str
) -> None:
    _, last = _error(capsys, ["events", "--jsn"])
    assert f"`{last}`" in " ".join((ROOT / "docs" / page).read_text(encoding="utf-8").split())


def test_run_takes_a_log_level_by_name_in_any_case_and_refuses_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """hcli31's trial: `callrouter run --log-level verbose` (or `debgu`) ended in
    a ValueError traceback from logging, once router.toml had been read."""
    assert build_parser().parse_args(["run", "--log-level", "debug"]).log_level == "DEBUG"
    assert build_parser().parse_args(["run"]).log_level == "INFO"
    _, last = _error(capsys, ["run", "--log-level", "debgu"])
    assert last == (
        "callrouter run: error: argument --log-level: invalid choice: 'DEBGU' "
        "(did you mean 'DEBUG'?)"
    )
    _, last = _error(capsys, ["run", "--log-level", "verbose"])
    assert last == (
        "callrouter run: error: argument --log-level: invalid choice: 'VERBOSE' "
        "(choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')"
    )
