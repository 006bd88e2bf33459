"""Number normalization is memoized, within bounds, without changing an answer."""

from __future__ import annotations

from router.builtin import numbers
from router.builtin.numbers import DEFAULT_PLAN, NumberPlan, normalize, parse_number


def test_a_repeated_number_is_answered_from_the_memo() -> None:
    numbers._parse_memo.cache_clear()
    first = parse_number("8 (916) 123-45-67")
    hits = numbers._parse_memo.cache_info().hits
    again = parse_number("8 (916) 123-45-67")
    assert again == first
    assert numbers._parse_memo.cache_info().hits == hits + 1


def test_each_plan_has_its_own_answers() -> None:
    belarus = NumberPlan(country_code="375", trunk_prefix="80", national_length=9)
    assert normalize("8 916 123-45-67") == "79161234567"
    assert normalize("80 29 123-45-67", belarus) == "375291234567"
    assert normalize("8 916 123-45-67", DEFAULT_PLAN) == "79161234567"


def test_long_values_are_not_kept_and_the_memo_is_bounded() -> None:
    numbers._parse_memo.cache_clear()
    long = "+7 916 123-45-67" + " " * 200 + "доб. 12"
    assert parse_number(long) == parse_number(long)
    assert numbers._parse_memo.cache_info().currsize == 0
    for n in range(5000):
        normalize(f"+7916{n:07d}")
    assert numbers._parse_memo.cache_info().currsize == numbers._parse_memo.cache_info().maxsize
    assert numbers._parse_memo.cache_info().maxsize == 4096
