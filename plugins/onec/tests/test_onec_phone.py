from __future__ import annotations

import pytest

import router
from callrouter_onec.phone import RUSSIA, CountryRules, NumberKind, normalize


@pytest.mark.parametrize(
    "raw",
    [
        "8 (916) 123-45-67",
        "+7 916 1234567",
        "9161234567",
        "79161234567",
        "89161234567",
        "+7 (916) 123-45-67 доб. 12",
        "8-916-123-45-67 доб 12",
        "8 916 123 45 67 ext. 12",
        "9161234567x12",
        "9161234567#12",
        "9161234567,12",
        "007 916 123 45 67",
        "810 7 916 123-45-67",
        "810 916 123-45-67",
        "  +7-916-123-45-67  ",
        "8 (916) 123-45-67 добавочный 12",
        # Issue 10 item 14: digits as real SIP carries them are the digits they stand for.
        "٩١٦١٢٣٤٥٦٧",
        "８ (９１６) １２３-４５-６７",
        "＋７ ９１６ １２３ ４５ ６７",
    ],
)
def test_russian_spellings_normalize_to_one_number(raw: str) -> None:
    phone = normalize(raw)
    assert phone.kind is NumberKind.EXTERNAL
    assert phone.number == "79161234567"
    assert phone.lookup


@pytest.mark.parametrize(
    ("raw", "extension"),
    [
        ("+7 916 1234567 доб. 12", "12"),
        ("9161234567 ext 305", "305"),
        ("9161234567x7", "7"),
        ("9161234567#", None),
        ("9161234567", None),
        ("9161234567 ДОБ. 1-2", "12"),
    ],
)
def test_extension_is_cut_and_kept(raw: str, extension: str | None) -> None:
    phone = normalize(raw)
    assert phone.number == "79161234567"
    assert phone.extension == extension


@pytest.mark.parametrize("raw", ["101", "5", "12345", "1-01"])
def test_five_digits_or_fewer_is_internal_and_never_looked_up(raw: str) -> None:
    phone = normalize(raw)
    assert phone.kind is NumberKind.INTERNAL
    assert not phone.lookup


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "anonymous",
        "123456",
        "1234567",
        "791612345678",
        "00791612345",
        "+7 916 123",
        "²⁹¹⁶¹²³⁴⁵⁶⁷",
    ],
)
def test_unusable_numbers_are_invalid(raw: str) -> None:
    assert normalize(raw).kind is NumberKind.INVALID
    assert not normalize(raw).lookup


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("+49 30 12345678", "493012345678"),
        ("00 49 30 12345678", "493012345678"),
        ("810 49 30 12345678", "493012345678"),
        ("+1 212 555 0100", "12125550100"),
        ("380441234567", "380441234567"),
    ],
)
def test_foreign_numbers_stay_e164(raw: str, number: str) -> None:
    phone = normalize(raw)
    assert phone.kind is NumberKind.EXTERNAL
    assert phone.number == number


def test_internal_number_with_plus_is_not_internal() -> None:
    assert normalize("+12345").kind is NumberKind.INVALID


def test_other_country_rules() -> None:
    germany = CountryRules(
        country_code="49", national_length=10, trunk_prefix="0", exit_prefixes=("00",)
    )
    assert normalize("030 12345678", germany).number == "493012345678"
    assert normalize("+49 30 12345678", germany).number == "493012345678"
    assert normalize("0049 30 12345678", germany).number == "493012345678"
    assert normalize("101", germany).kind is NumberKind.INTERNAL


def test_internal_limit_is_configurable() -> None:
    rules = CountryRules(internal_max_digits=4)
    assert normalize("12345", rules).kind is NumberKind.INVALID
    assert normalize("1234", RUSSIA).kind is NumberKind.INTERNAL


def test_raw_is_kept_for_logs() -> None:
    assert normalize("8 (916) 123-45-67").raw == "8 (916) 123-45-67"


@pytest.mark.parametrize(
    "raw",
    [
        "+7 (916) 123-45-67",
        "8 916 123-45-67",
        "007 916 123 45 67",
        "8109161234567",
        "810 7 916 123-45-67",
        "+7 916 123-45-67 доб. 12",
        "８９１６１２３４５６７",
        "٨٩١٦١٢٣٤٥٦٧",
        "101",
        "+12345",
        "anonymous",
        "+49 30 12345678",
        "0049 30 12345678",
        "791612345678",
    ],
)
def test_the_plugin_and_the_core_give_the_same_key(raw: str) -> None:
    """Issue 10 item 14: one normalization; the plugin only adds 1C's match key."""
    assert normalize(raw).number == router.normalize_number(raw)
    assert normalize(raw).kind is router.parse_number(raw).kind
    germany = CountryRules(
        country_code="49", national_length=10, trunk_prefix="0", exit_prefixes=("00",)
    )
    assert normalize(raw, germany).number == router.normalize_number(raw, germany.plan)
