"""Cron for schedule: rules and plugins' timed jobs: classic cron, the rules' zone.

Next fire times are computed from Tuesday 2026-12-01 10:00 UTC. APScheduler's
own crontab reading got these wrong (issue 11 item 12): "0 9 * * 0" fired on
Monday, "* * * * 7" passed check and was dropped at start, and every schedule
fired in the host's zone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from router.builtin.timefuncs import rules_timezone
from router.config import Config, load_config
from router.rules.cron import check_cron, cron_trigger

TUESDAY = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
MOSCOW = ZoneInfo("Europe/Moscow")


def fires(
    expression: str, zone: ZoneInfo = MOSCOW, count: int = 1, start: datetime = TUESDAY
) -> list[datetime]:
    trigger = cron_trigger(expression, zone)
    out: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)
        assert nxt is not None
        out.append(nxt)
        previous, now = nxt, nxt
    return out


@pytest.mark.parametrize("weekday", ["0", "7", "sun", "SUN"])
def test_weekday_0_and_7_fire_on_sunday_in_the_rules_zone(weekday: str) -> None:
    (first,) = fires(f"0 9 * * {weekday}")
    assert first == datetime(2026, 12, 6, 9, 0, tzinfo=MOSCOW)
    assert first.strftime("%a") == "Sun"
    assert first.astimezone(UTC).hour == 6  # 09:00 Moscow, not 09:00 of the host


def test_monday_is_1() -> None:
    assert fires("0 9 * * 1")[0] == datetime(2026, 12, 7, 9, 0, tzinfo=MOSCOW)


def test_the_zone_is_the_one_given() -> None:
    # 10:00 UTC is 20:00 in Vladivostok (UTC+10): 19:00 there has passed today.
    (first,) = fires("0 19 * * mon-fri", ZoneInfo("Asia/Vladivostok"))
    assert first == datetime(2026, 12, 2, 19, 0, tzinfo=ZoneInfo("Asia/Vladivostok"))
    assert first.astimezone(UTC) == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    # The same text in Moscow (13:00 there now) fires today at 19:00 Moscow.
    assert fires("0 19 * * mon-fri")[0].astimezone(UTC) == datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


# From Tuesday 13:00 Moscow: Tuesday's 09:00 has passed.
@pytest.mark.parametrize(
    ("expression", "days"),
    [
        ("0 9 * * mon-fri", ["Wed", "Thu", "Fri", "Mon", "Tue"]),
        ("0 9 * * 1-5", ["Wed", "Thu", "Fri", "Mon", "Tue"]),
        ("0 9 * * 5-7", ["Fri", "Sat", "Sun", "Fri"]),
        ("0 9 * * 0,6", ["Sat", "Sun", "Sat"]),
        ("0 9 * * sat,sun", ["Sat", "Sun", "Sat"]),
        ("0 9 * * 1-5/2", ["Wed", "Fri", "Mon", "Wed"]),
        ("0 9 * * */3", ["Wed", "Sat", "Sun", "Wed"]),  # sun, wed, sat
        ("0 9 * * 6/1", ["Sat", "Sun", "Sat"]),  # "6/1" is 6-7
    ],
)
def test_names_ranges_lists_and_steps(expression: str, days: list[str]) -> None:
    assert [d.strftime("%a") for d in fires(expression, count=len(days))] == days


def test_day_of_month_or_weekday_as_in_cron() -> None:
    # Both restricted: the 15th OR any Sunday (cron), not the 15th when a Sunday.
    got = [d.date().isoformat() for d in fires("0 9 15 * 0", count=3)]
    assert got == ["2026-12-06", "2026-12-13", "2026-12-15"]
    # Weekday unrestricted: only the 15th.
    assert [d.date().isoformat() for d in fires("0 9 15 * *", count=2)] == [
        "2026-12-15",
        "2027-01-15",
    ]


def test_months_and_steps_of_the_other_fields() -> None:
    assert fires("*/20 9 * jan *")[0] == datetime(2027, 1, 1, 9, 0, tzinfo=MOSCOW)
    assert [d.minute for d in fires("5/20 14 * * *", count=3)] == [5, 25, 45]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 25 * * mon-fri", "hour 25 out of range 0-23"),
        ("* * * * 8", "day of week 8 out of range 0-7"),
        (
            "* * * * funday",
            "day of week: unknown name 'funday' (sun, mon, tue, wed, thu, fri, sat or 0-7)",
        ),
        ("* * * * fri-mon", "day of week: range 'fri-mon' runs backwards"),
        ("*/0 * * * *", "minute: bad step '0'"),
        ("* * 0 * *", "day of month 0 out of range 1-31"),
        ("* * * 13 *", "month 13 out of range 1-12"),
        ("* * * *", "expected 5 fields (minute hour day month weekday), got 4"),
        ("* * * * 1,", "day of week: '' is not a number"),
        ("* * * * ١", "day of week: '١' is not a number"),
        # A part with no start or no end was "'' is not a number", naming nothing written.
        ("* * * * -1", "day of week: '-1' is not a number or a range (a-b)"),
        ("* * 5- * *", "day of month: '5-' is not a number or a range (a-b)"),
        # A rule file's text, cut: it was repeated whole, twice with the rule's message.
        (
            "* * * * " + "x" * 3000,
            "day of week: unknown name " + repr("x" * 40) + "... (3000 characters) "
            "(sun, mon, tue, wed, thu, fri, sat or 0-7)",
        ),
    ],
)
def test_bad_values_are_errors(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_cron(expression)
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        cron_trigger(expression, MOSCOW)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 9 30 2 *", "never fires: feb has no day 30"),
        ("0 9 30,31 feb *", "never fires: feb has no day 30,31"),
        ("0 9 31 4,6,9,11 *", "never fires: none of apr,jun,sep,nov has a day 31"),
        ("0 9 31 2 */2", "never fires: feb has no day 31"),
    ],
)
def test_a_date_no_month_has_is_an_error(expression: str, message: str) -> None:
    # "0 9 30 2 *" loaded, and the rule never ran: cron takes it as it is.
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_cron(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # hsched48's trial: "mon-fry" said only "'fry' is not a number", where
        # workhours("mon-fry 09:00-18:00") names the day meant.
        ("0 19 * * mon-fry", "day of week: unknown name 'fry' (did you mean 'fri'?)"),
        ("0 19 * * MON-FRX", "day of week: unknown name 'FRX' (did you mean 'fri'?)"),
        ("0 9 * jan-fev *", "month: unknown name 'fev' (did you mean 'feb'?)"),
        ("0 9 ? * mon", "day of month: '?' is Quartz's, not classic cron: write '*'"),
        (
            "@daily",
            "expected 5 fields (minute hour day month weekday), got 1 ('@daily' is '0 0 * * *')",
        ),
        (
            "@hourly",
            "expected 5 fields (minute hour day month weekday), got 1 ('@hourly' is '0 * * * *')",
        ),
    ],
)
def test_a_misspelled_name_or_other_cron_says_what_to_write(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_cron(expression)


def test_a_day_some_selected_month_has_fires() -> None:
    assert fires("0 9 29 2 *")[0] == datetime(2028, 2, 29, 9, 0, tzinfo=MOSCOW)
    assert fires("0 9 31 4,5 *")[0] == datetime(2027, 5, 31, 9, 0, tzinfo=MOSCOW)
    # Either day field may match, as cron has it: Mondays of February.
    assert fires("0 9 30 2 mon")[0] == datetime(2027, 2, 1, 9, 0, tzinfo=MOSCOW)


def test_seven_is_accepted_by_check_and_by_the_scheduler() -> None:
    check_cron("* * * * 7")
    assert fires("30 8 * * 7")[0].strftime("%a %H:%M") == "Sun 08:30"


def _config(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "r"\nsecret = "s"\n' + body
    )
    return load_config(path)


def test_rules_timezone_reads_timefuncs(tmp_path: Path) -> None:
    assert rules_timezone(_config(tmp_path, "")) == MOSCOW
    zone = rules_timezone(_config(tmp_path, '[plugins.timefuncs]\ntimezone = "UTC"\n'))
    assert zone == ZoneInfo("UTC")


def test_rules_timezone_errors_name_the_file_and_key(tmp_path: Path) -> None:
    from router.errors import ConfigError

    config = _config(tmp_path, '[plugins.timefuncs]\ntimezone = "Europe/Moskow"\n')
    with pytest.raises(
        ConfigError,
        match=r"router.toml:6: \[plugins.timefuncs\] timezone: "
        r"unknown time zone 'Europe/Moskow'",
    ):
        rules_timezone(config)
    config = _config(tmp_path, '[plugins.timefuncs]\ntimezon = "UTC"\n')
    with pytest.raises(
        ConfigError,
        match=r"\[plugins.timefuncs\] timezon: unknown key; "
        r"did you mean 'timezone'\?",
    ):
        rules_timezone(config)
