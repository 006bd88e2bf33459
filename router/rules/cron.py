"""Checks ``schedule:`` cron expressions when rules load.

The scheduler (engine issue) runs them; here we only make sure a typo such as
``0 25 * * *`` is reported with its line instead of failing at midnight. The
syntax is classic five-field cron, where day-of-week 0 and 7 are Sunday.
"""

from __future__ import annotations

__all__ = ["CRON_FIELDS", "check_cron"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

#: (field name, lowest, highest, names for lowest.. in order)
CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


def _value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    word = text.lower()
    if word in names:
        return names.index(word) + low
    if not word.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number")
    number = int(word)
    if not low <= number <= high:
        raise ValueError(f"{field} {number} out of range {low}-{high}")
    return number


def _check_field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"{field}: bad step {step!r}")
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        start = _value(first, field, low, high, names)
        if dash and _value(last, field, low, high, names) < start:
            raise ValueError(f"{field}: range {base!r} runs backwards")


def check_cron(expression: str) -> None:
    """Raises ValueError naming the bad field of a five-field cron expression."""
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    for text, (field, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        _check_field(text, field, low, high, names)
