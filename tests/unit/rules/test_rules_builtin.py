"""Built-in functions: numbers, working hours, holidays, regular expressions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.builtin.numbers import NumberPlan, digits, is_internal, last10, normalize
from router.builtin.textfuncs import match
from router.builtin.timefuncs import parse_hours, zone
from router.rules import Caller, Context, Registry


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8 (916) 123-45-67", "79161234567"),
        ("+7 916 123 45 67", "79161234567"),
        ("9161234567", "79161234567"),
        ("8 (916) 123-45-67 доб. 12", "79161234567"),
        ("89161234567доб12", "79161234567"),
        ("+7 916 123-45-67 ext. 3", "79161234567"),
        ("810 44 20 7946 0958", "442079460958"),
        ("+44 20 7946 0958", "442079460958"),
        ("101", "101"),
        ("", ""),
        (None, ""),
        ("abc", ""),
    ],
)
def test_normalize(raw: str | None, expected: str) -> None:
    assert normalize(raw) == expected


def test_other_number_plan() -> None:
    plan = NumberPlan(country_code="375", trunk_prefix="80", national_length=9)
    assert normalize("80 29 123 45 67", plan) == "375291234567"


def test_number_helpers() -> None:
    assert digits("+7 (916) 12") == "791612"
    assert last10("+7 (916) 123-45-67") == "9161234567"
    assert is_internal("101")
    assert not is_internal("79161234567")
    assert not is_internal("")


def call_at(text: str) -> Context:
    moment = datetime.fromisoformat(text).replace(tzinfo=zone("Europe/Moscow"))
    return Context.for_call(Caller("1"), "2", now=moment)


@pytest.mark.parametrize(
    ("spec", "when", "expected"),
    [
        ("mon-fri 09:00-19:00", "2026-11-23 09:00", True),
        ("mon-fri 09:00-19:00", "2026-11-23 19:00", False),
        ("mon-fri 09:00-19:00", "2026-11-28 12:00", False),
        ("mon-fri 09:00-13:00 14:00-18:00", "2026-11-23 13:30", False),
        ("mon,wed 10:00-11:00", "2026-11-25 10:30", True),
        ("sat-sun", "2026-11-29 03:00", True),
        ("daily 22:00-06:00", "2026-11-24 05:59", True),
        ("fri 22:00-06:00", "2026-11-28 05:00", True),  # Friday night into Saturday
        ("fri 22:00-06:00", "2026-11-27 05:00", False),
        ("mon-fri 09:00-24:00", "2026-11-23 23:59", True),
    ],
)
def test_workhours(spec: str, when: str, expected: bool, registry: Registry) -> None:
    workhours = registry.functions["workhours"].func
    assert workhours(call_at(when), spec) is expected


def test_workhours_time_zone_and_holidays(registry: Registry) -> None:
    workhours = registry.functions["workhours"].func
    utc_morning = Context.for_call(Caller("1"), "2", now=datetime(2026, 11, 23, 7, 0, tzinfo=UTC))
    assert workhours(utc_morning, "mon-fri 09:00-19:00")  # 10:00 in Moscow
    assert not workhours(utc_morning, "mon-fri 09:00-19:00", tz="Europe/London")
    assert not workhours(utc_morning, "mon-fri 09:00-19:00", holidays={"11-23"})
    is_holiday = registry.functions["is_holiday"].func
    assert is_holiday(utc_morning, frozenset({"2026-11-23"}))
    assert not is_holiday(utc_morning, None)
    assert registry.functions["weekday"].func(utc_morning) == "mon"
    assert registry.functions["today"].func(utc_morning) == "2026-11-23"


def test_workhours_answers_kept_for_a_minute_are_never_another_moments(
    registry: Registry,
) -> None:
    """Answers are kept by the minute (router.builtin.timefuncs): the same
    function asked again and again must still follow the clock, the zone of
    the moment, the holiday list and the repeated hour of a DST change."""
    workhours = registry.functions["workhours"].func
    spec = "mon-fri 09:00-19:00"
    assert workhours(call_at("2026-11-23 18:59"), spec)
    assert workhours(call_at("2026-11-23 18:59:59"), spec)  # the same minute
    assert not workhours(call_at("2026-11-23 19:00"), spec)
    assert workhours(call_at("2026-11-23 18:59"), spec)
    assert workhours(call_at("2026-11-23 19:29"), "mon-fri 09:00-19:30")
    assert not workhours(call_at("2026-11-23 19:30"), "mon-fri 09:00-19:30")  # same hour
    # The same wall clock in another zone is another moment: 18:59 UTC is 21:59 in Moscow.
    utc = Context.for_call(Caller("1"), "2", now=datetime(2026, 11, 23, 18, 59, tzinfo=UTC))
    assert not workhours(utc, spec)
    assert workhours(utc, spec, tz="UTC")
    # Each holiday list gets its own answer; an unhashable list is answered too.
    assert not workhours(call_at("2026-11-23 12:00"), spec, holidays=frozenset({"11-23"}))
    assert workhours(call_at("2026-11-23 12:00"), spec, holidays=frozenset({"11-24"}))
    assert not workhours(call_at("2026-11-23 12:00"), spec, holidays=["2026-11-23"])
    # 01:30 happens twice in London on 2026-10-25: fold tells them apart (BST, then GMT).
    london = zone("Europe/London")
    first = datetime(2026, 10, 25, 1, 30, tzinfo=london)
    second = first.replace(fold=1)
    night = "sun 00:00-01:00"  # in UTC: the first 01:30 is 00:30 UTC, the second 01:30 UTC
    assert workhours(Context.for_call(Caller("1"), "2", now=first), night, tz="UTC") is True
    assert workhours(Context.for_call(Caller("1"), "2", now=second), night, tz="UTC") is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mon-fry 09:00-19:00", r"unknown day 'fry' \(did you mean 'fri'\?\)"),
        ("monday 09:00-19:00", r"unknown day 'monday' \(did you mean 'mon'\?\)"),
        ("mon 9-19", "'9' is not HH:MM"),
        ("mon 09:00-25:00", "not a time of day"),
        ("mon 09:00", "not HH:MM-HH:MM"),
        (" ; ", "empty"),
    ],
)
def test_bad_hours(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(spec)


def test_match() -> None:
    assert match("^7495", "74951234567")
    assert not match("^7495$", "74951234567")
    assert not match(".*", None)
