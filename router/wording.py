"""Counts in messages people read: ``1 rule``, ``2 rules``, ``0 calls``.

The summary lines and INFO logs an administrator reads first ("loaded 1 rules",
"1 calls took the default route") read as broken English on a first install,
where one rule and one call is exactly what there is.
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural (``plural``, or ``noun``
    with an ``s``) for every count but one."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"
