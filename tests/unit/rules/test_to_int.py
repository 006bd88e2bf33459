"""int() in rules reads ASCII digits only, like every other number from a caller."""

from __future__ import annotations

import pytest

from router.builtin.textfuncs import to_int


@pytest.mark.parametrize("text", ["٣", "１２３", "1_000", "²", "12a", "", " ", "9" * 19, "0x10"])
def test_non_ascii_or_oversized_text_is_not_a_number(text: str) -> None:
    assert to_int(text) is None
    assert to_int(text, 7) == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", 42),
        (" -5 ", -5),
        ("+3", 3),
        (7, 7),
        (True, 1),
        (3.9, 3),
        ("0", 0),
    ],
)
def test_ordinary_numbers_still_convert(value: object, expected: int) -> None:
    assert to_int(value) == expected


def test_non_finite_floats_are_not_numbers() -> None:
    assert to_int(float("nan")) is None
    assert to_int(float("inf")) is None
