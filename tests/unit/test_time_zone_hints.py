"""A zone written as administrators say it ('MSK', 'UTC+3') says what to write.

hsched48's trial: ``timezone = "MSK"`` got ``(did you mean 'MST'?)``, the US
Mountain zone, ten hours from Moscow, and ``"UTC+3"`` got ``(did you mean
'UTC'?)``, three hours off: the closest zone *name* is a wrong hint for an
abbreviation or an offset, and taking it moves every rule's hours.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router import time_zone
from router.builtin.timefuncs import rules_timezone
from router.config import load_config
from router.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("MSK", "(did you mean 'Europe/Moscow'? 'MSK' is an abbreviation)"),
        ("msk", "(did you mean 'Europe/Moscow'? 'msk' is an abbreviation)"),
        ("YEKT", "(did you mean 'Asia/Yekaterinburg'? 'YEKT' is an abbreviation)"),
        (
            "UTC+3",
            "(an offset, not a zone: a city's zone such as 'Europe/Moscow',"
            " or 'Etc/GMT-3', where the sign is reversed)",
        ),
        (
            "GMT+05:00",
            "(an offset, not a zone: a city's zone such as 'Asia/Yekaterinburg',"
            " or 'Etc/GMT-5', where the sign is reversed)",
        ),
        (
            "UTC-5",
            "(an offset, not a zone: a city's zone (Area/City),"
            " or 'Etc/GMT+5', where the sign is reversed)",
        ),
        ("+05:30", "(an offset, not a zone: a city's zone (Area/City))"),
        ("UTC+15", "(an offset, not a zone: a city's zone (Area/City))"),
        ("UTC+0", "(an offset, not a zone: write 'UTC', or a city's zone such as 'Europe/London')"),
        ("BST", "(an abbreviation, not a zone: a city's zone such as 'Europe/Moscow')"),
        # A misspelled name still gets the closest one.
        ("Asia/Ekaterinburg", "(did you mean 'Asia/Yekaterinburg'?)"),
        ("europe/moscow", "(did you mean 'Europe/Moscow'?)"),
    ],
)
def test_an_abbreviation_or_offset_is_not_taken_for_another_zone(name: str, hint: str) -> None:
    with pytest.raises(
        ValueError, match="^" + re.escape(f"unknown time zone {name!r} {hint}") + "$"
    ):
        time_zone(name)


def test_the_hints_name_zones_that_exist() -> None:
    # Every zone a hint names is one the rules accept (Etc/GMT-14 .. Etc/GMT+12 too).
    for name in ("MSK", "KALT", "SAMT", "OMST", "NOVT", "KRAT", "IRKT", "YAKT", "VLAT", "MAGT"):
        with pytest.raises(ValueError, match="is an abbreviation") as caught:
            time_zone(name)
        (meant,) = re.findall(r"did you mean '([^']+)'", str(caught.value))
        time_zone(meant)
    for offset in range(-12, 15):
        if offset:
            with pytest.raises(ValueError, match="an offset, not a zone") as caught:
                time_zone(f"UTC{offset:+d}")
            for meant in re.findall(r"'((?:Etc|Europe|Asia)/[^']+)'", str(caught.value)):
                time_zone(meant)


def test_router_toml_names_the_zone_meant(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "r"\nsecret = "s"\n'
        '[plugins.timefuncs]\ntimezone = "MSK"\n'
    )
    with pytest.raises(ConfigError) as caught:
        rules_timezone(load_config(path))
    assert str(caught.value).endswith(
        "router.toml:6: [plugins.timefuncs] timezone: unknown time zone 'MSK'"
        " (did you mean 'Europe/Moscow'? 'MSK' is an abbreviation)"
    )


def test_a_long_name_is_told_cut() -> None:
    # A rule file's workhours(tz=...) or router.toml's text was repeated whole.
    with pytest.raises(ValueError, match=r"^unknown time zone ") as caught:
        time_zone("Europe/" + "x" * 3000)
    assert str(caught.value) == (
        "unknown time zone " + repr("Europe/" + "x" * 33) + "... (3007 characters)"
        " (an IANA name such as 'Europe/Moscow')"
    )
