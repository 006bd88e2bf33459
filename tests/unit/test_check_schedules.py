"""``callrouter check --schedules [--at TIME]``: when each ``schedule:`` rule runs.

hsched48's trial: an administrator could ask ``explain --at`` what a call at
13:05 on 31 December gets, but not when ``night-mode`` would run around then,
nor in which zone, short of restarting the service and reading its log.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from router.cli import main
from tests.unit.cli_code import exit_code

pytestmark = pytest.mark.usefixtures("only_shipped_plugins")

RULES = """version: 1
rules:
  - name: day
    on: call
    do:
      - redirect: {context: queues, exten: sales}
  - name: night-mode
    schedule: "0 19 * * mon-fri"
    do:
      - ami: {action: Setvar, variable: CALLROUTER_MODE, value: night}
  - name: first-or-monday
    schedule: "0 9 1 * 1"
    do:
      - ami: {action: Setvar, variable: REPORT, value: "1"}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "inbound.yaml").write_text(RULES)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "s"\n[router]\nrules = ["rules"]\n'
        '[plugins.timefuncs]\ntimezone = "Asia/Yekaterinburg"\n'
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_next_runs_from_a_given_time_in_the_rules_zone(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--schedules", "--at", "2026-12-31 13:05"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "router.toml (rules): 3 rules OK",
        "schedule night-mode [rules/inbound.yaml:7] '0 19 * * mon-fri': next "
        "Thu 2026-12-31 19:00, Fri 2027-01-01 19:00, Mon 2027-01-04 19:00 (Asia/Yekaterinburg)",
        # Either day field, as cron has it: the 1st (a Friday), then Mondays.
        "schedule first-or-monday [rules/inbound.yaml:11] '0 9 1 * 1': next "
        "Fri 2027-01-01 09:00, Mon 2027-01-04 09:00, Mon 2027-01-11 09:00 (Asia/Yekaterinburg)",
    ]


def test_a_schedule_that_makes_up_a_missed_run_says_so(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "rules" / "inbound.yaml").write_text(
        RULES.replace('"0 19 * * mon-fri"\n', '"0 19 * * mon-fri"\n    missed: run-once\n')
    )
    assert main(["check", "--at", "2026-12-31 13:05"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "schedule night-mode [rules/inbound.yaml:7] '0 19 * * mon-fri' (missed: run-once): "
        "next Thu 2026-12-31 19:00, Fri 2027-01-01 19:00, Mon 2027-01-04 19:00 "
        "(Asia/Yekaterinburg)"
    )


def test_at_alone_asks_for_them_and_tz_moves_them(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--tz", "Europe/Moscow", "--at", "2026-12-31 19:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    # A run at the very minute given is counted.
    assert out[1].endswith(
        "next Thu 2026-12-31 19:00, Fri 2027-01-01 19:00, Mon 2027-01-04 19:00 (Europe/Moscow)"
    )


def test_without_the_flag_check_prints_what_it_did(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 0
    assert capsys.readouterr().out == "router.toml (rules): 3 rules OK\n"


def test_no_schedule_rules_says_so(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "rules" / "inbound.yaml").write_text(RULES.split("  - name: night-mode")[0])
    assert main(["check", "--schedules"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "schedules: none (no rule has schedule:)"


def test_a_bad_at_is_a_wrong_command_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["check", "--at", "31.12.2026 13:05"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "callrouter check: error: argument --at: "
        "expected \"YYYY-MM-DD HH:MM\", got '31.12.2026 13:05'"
    )


@pytest.mark.parametrize(
    "at",
    [
        # Moved to UTC, past the first day of the calendar: an OverflowError's traceback.
        "0001-01-01T00:00+05:00",
        # Before 1970, which cron's trigger does not count: runs shown in 1970.
        "1960-05-05 10:00",
        "9999-12-31T23:59-05:00",
    ],
)
def test_an_at_outside_the_years_cron_counts_is_a_wrong_command_line(
    folder: Path, capsys: pytest.CaptureFixture[str], at: str
) -> None:
    assert exit_code(["check", "--at", at]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"callrouter check: error: argument --at: expected a year from 1970 to 9998, got {at!r}"
    )


def test_explain_at_outside_those_years_is_a_wrong_command_line_too(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", "--caller", "123", "--did", "456", "--at", "0001-01-01T00:00+05:00"]
    assert exit_code(argv) == 2
    assert "expected a year from 1970 to 9998" in capsys.readouterr().err


def test_a_schedule_with_no_run_left_in_cron_s_calendar_says_so(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "rules" / "inbound.yaml").write_text(RULES.replace("0 19 * * mon-fri", "0 0 29 2 *"))
    # 9996 is the last leap year before 10000, which cron does not count.
    assert main(["check", "--at", "9997-01-01 00:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "schedule night-mode [rules/inbound.yaml:7] '0 0 29 2 *': next "
        "none before the year 10000 (Asia/Yekaterinburg)"
    )


def test_a_long_bad_schedule_is_told_cut(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "rules" / "inbound.yaml").write_text(
        RULES.replace("0 19 * * mon-fri", "0 19 * * " + "x" * 3000)
    )
    assert main(["check"]) == 1
    captured = capsys.readouterr()
    error = (captured.out + captured.err).splitlines()[0]
    assert error == (
        "rules/inbound.yaml:8: rule 'night-mode': invalid schedule "
        + repr("0 19 * * " + "x" * 31)
        + "... (3009 characters): day of week: unknown name "
        + repr("x" * 40)
        + "... (3000 characters) (sun, mon, tue, wed, thu, fri, sat or 0-7)"
    )


# A zone with daylight saving time (Russia has none since 2014): on 29 March
# 2026 Berlin's clocks go from 02:00 to 03:00, on 25 October from 03:00 to 02:00.
_GAP = "2026-03-29 02:30"
_FOLD = "2026-10-25 02:30"
_EXPLAIN = ["explain", "--caller", "79161234567", "--did", "456", "--tz", "Europe/Berlin"]


@pytest.mark.parametrize("command", [["check"], _EXPLAIN])
def test_an_at_the_clocks_skip_is_a_wrong_command_line_saying_what_to_write(
    folder: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Read as the hour after, silently: explain showed a call at
    `2026-03-29 02:30:00 CET`, a time Berlin's clocks never show, with
    `now.hour` 2, and check counted the runs from it."""
    argv = [*command, "--at", _GAP]
    if command == ["check"]:
        argv[1:1] = ["--tz", "Europe/Berlin"]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"callrouter {command[0]}: error: --at 2026-03-29 02:30 is no time in Europe/Berlin: "
        "its clocks were put forward by 1 h 0 min 0 s over it that day (CET to CEST); "
        "give a time before or after it, or one with an offset "
        "(2026-03-29T02:30+01:00 is 03:30 CEST)"
    )


def test_explain_at_a_time_the_clocks_show_twice_says_which_is_used(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_EXPLAIN, "--at", _FOLD]) == 0
    captured = capsys.readouterr()
    assert (
        "callrouter explain: note: --at 2026-10-25 02:30 comes twice in Europe/Berlin (its "
        "clocks were put back by 1 h 0 min 0 s over it that day): the first, 02:30 CEST "
        "(2026-10-25T02:30+02:00), is used; 2026-10-25T02:30+01:00 is the second (02:30 CET)"
    ) in captured.err.splitlines()
    assert "at 2026-10-25 02:30:00 CEST" in captured.out
    # The second, written with its offset, is that one, and no note.
    assert main([*_EXPLAIN, "--at", "2026-10-25T02:30+01:00"]) == 0
    captured = capsys.readouterr()
    assert "note:" not in captured.err
    assert "at 2026-10-25 02:30:00 CET" in captured.out


def test_check_at_a_time_the_clocks_show_twice_says_which_is_used(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--tz", "Europe/Berlin", "--at", _FOLD]) == 0
    captured = capsys.readouterr()
    assert "callrouter check: note: --at 2026-10-25 02:30 comes twice in Europe/Berlin" in (
        captured.err
    )
    assert "(Europe/Berlin)" in captured.out
    # Moscow's clocks have no such hour: no note.
    assert main(["check", "--tz", "Europe/Moscow", "--at", _FOLD]) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_api_s_at_the_clocks_skip_is_a_problem_not_a_time() -> None:
    """POST /api/v1/explain reads `at` by the same moment(): a 400 naming `at`."""
    from router.builtin.timefuncs import zone
    from router.rules.explain import moment
    from router.rules.registry import Registry

    registry = Registry()
    registry.set_timezone(zone("Europe/Berlin"))
    problem = moment(_GAP, registry)
    assert isinstance(problem, str)
    assert problem.startswith("2026-03-29 02:30 is no time in Europe/Berlin")
    assert moment("2026-03-29 03:30", registry) == datetime(
        2026, 3, 29, 3, 30, tzinfo=zone("Europe/Berlin")
    )
