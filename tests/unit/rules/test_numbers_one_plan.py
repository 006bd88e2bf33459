"""Issue 10 item 14 (and issue 11 item 13): one number plan for the core, lists and plugins.

Caller numbers are the caller's to choose and real SIP carries fullwidth and
Arabic-Indic digits; they used to be kept as they were, so a blacklist entry
``+7 916 123-45-67`` did not match a caller presented as ``８９１６...``, and the
core kept ``8109161234567`` while the 1C plugin made it ``79161234567``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import router
from router.builtin.numbers import (
    NumberFunctions,
    NumberKind,
    NumberPlan,
    digits,
    normalize,
    parse_number,
)
from router.config import load_config
from router.plugin_registry import plugin_registry
from router.rules.lists import load_list
from router.rules.ruleset import call_context
from router.rules.schema import ListSpec

#: Every way the same subscriber reaches us; all must give one key.
SPELLINGS = [
    "+7 (916) 123-45-67",
    "8 916 123-45-67",
    "8 (916) 123 45 67",
    "9161234567",
    "79161234567",
    "007 916 123 45 67",
    "0079161234567",
    "810 7 916 123-45-67",
    "8109161234567",
    "+7 916 123-45-67 доб. 12",
    "8 916 123-45-67 ext 12",
    "８９１６１２３４５６７",  # fullwidth
    "＋７ (９１６) １２３-４５-６７",  # fullwidth plus sign too
    "٨٩١٦١٢٣٤٥٦٧",  # Arabic-Indic
    "۸۹۱۶۱۲۳۴۵۶۷",  # Extended Arabic-Indic (Persian)
    "८९१६१२३४५६७",  # Devanagari
    "+٧ ٩١٦ ١٢٣ ٤٥ ٦٧ доб. ١٢",
]


@pytest.mark.parametrize("raw", SPELLINGS)
def test_every_spelling_gives_one_key(raw: str) -> None:
    assert normalize(raw) == "79161234567"
    assert router.normalize_number(raw) == "79161234567"
    assert parse_number(raw).kind is NumberKind.EXTERNAL


def test_digits_are_ascii_and_superscripts_are_not_digits() -> None:
    assert digits("８٩۸८ 1²³") == "89881"
    assert normalize("²⁹¹⁶") == ""
    assert parse_number("+7 916 123 доб. ١٢").extension == "12"


def test_the_public_api_exports_the_plan() -> None:
    assert router.NumberPlan is NumberPlan
    assert router.parse_number("8 916 123-45-67").number == "79161234567"
    assert router.number_digits("٤٢") == "42"
    assert "parse_number" in router.__all__


def test_a_blacklist_matches_every_spelling_of_a_caller(tmp_path: Path) -> None:
    registry = plugin_registry()
    blacklist = tmp_path / "blacklist.txt"
    blacklist.write_text("+7 (916) 123-45-67\n٨ ٩٠٣ ١١١-٢٢-٣٣\n", encoding="utf-8")
    items = load_list(
        ListSpec("blacklist", "rules.yaml", 3, "numbers", blacklist), registry.normalize_number
    )
    assert items == {"79161234567", "79031112233"}
    for raw in SPELLINGS:
        context = call_context(registry, raw, "74951234567")
        assert context.caller.number in items, raw
    assert call_context(registry, "８９０３１１１２２３３", "1").caller.number in items


def test_other_plans_and_settings() -> None:
    belarus = NumberPlan(
        country_code="375", trunk_prefix="80", national_length=9, exit_prefixes=("810",)
    )
    assert normalize("80 29 123 45 67", belarus) == "375291234567"
    assert normalize("８０ ２９ １２３ ４５ ６７", belarus) == "375291234567"
    assert normalize("101") == "101"
    assert parse_number("101").kind is NumberKind.INTERNAL


def test_plugins_numbers_settings() -> None:
    numbers = NumberFunctions()
    numbers.configure(
        {
            "country_code": "49",
            "trunk_prefix": "0",
            "international_prefix": "00",
            "national_length": 10,
        }
    )
    assert numbers.plan.exit_prefixes == ("00",)  # the older single-prefix key still works
    assert normalize("0049 30 12345678", numbers.plan) == "493012345678"
    numbers.configure({"exit_prefixes": ["00", "011"]})
    assert numbers.plan.exit_prefixes == ("00", "011")
    with pytest.raises(
        router.ConfigError,
        match=r"\[plugins.numbers\] trunk_prefix: "
        "expected digits only",
    ):
        numbers.configure({"trunk_prefix": "８"})
    with pytest.raises(router.ConfigError, match="national_length: expected a whole number"):
        numbers.configure({"national_length": "١٠"})


NUMBERS_TOML = (
    '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n\n'
    '[plugins.numbers]\ncountry_code = "375"\n'
)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "countri_code = 1\n",
            "8: [plugins.numbers] countri_code: unknown key; did you mean 'country_code'? "
            "(known: country_code, exit_prefixes, internal_max_length, international_prefix, "
            "max_digits, min_digits, "
            "national_length, trunk_prefix)",
        ),
        (
            "trunk_prefix = '80'\ninternational_prefix = '8-10'\n",
            "9: [plugins.numbers] international_prefix: expected digits only, got ['8-10']",
        ),
        (
            "\nnational_length = 99\n",
            "9: [plugins.numbers] national_length: expected a whole number from 0 to 20, got 99",
        ),
    ],
)
def test_plugins_numbers_errors_name_the_file_and_the_line(
    tmp_path: Path, lines: str, message: str
) -> None:
    """They said ``[plugins.numbers] unknown key 'countri_code'`` with neither
    the file nor the line, and an error in ``international_prefix`` blamed
    ``exit_prefixes``, a key the file did not have."""
    path = tmp_path / "router.toml"
    path.write_text(NUMBERS_TOML + lines, encoding="utf-8")
    config = load_config(path, environ={})
    with pytest.raises(router.ConfigError) as caught:
        NumberFunctions().callrouter_configure(config, config.plugins.for_plugin("numbers"))
    assert str(caught.value) == f"{path}:{message}"
