"""The 1C plugin's copy of the dialplan location floor agrees with router.dialplan.

Plugins may import only the public API, so ``callrouter_onec.cache.ringable``
(which warns when 1C names an extension no rule can ring, issue 16) keeps its
own copy of the floor; this core test holds the two together.
"""

from __future__ import annotations

import pytest
from callrouter_onec.cache import ringable

from router.dialplan import LocationPolicy, location_problem

WIDEST = LocationPolicy.from_pattern(r".{0,500}")


@pytest.mark.parametrize(
    "extension",
    [
        "101",
        "1.2",
        "*5",
        "sales-1",
        "x" * 81,
        "101,foo",
        "101 ",
        "１０１",
        "10\n1",
        "h",
        "",
        "a&b",
        "${X}",
        "é",
        "1|2",
        "(1)",
    ],
)
def test_ringable_agrees_with_the_routers_floor(extension: str) -> None:
    assert ringable(extension) == (location_problem({"exten": extension}, WIDEST) is None)
