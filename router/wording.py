"""Counts and durations in messages people read: ``1 rule``, ``2 rules``,
``0 calls``; ``6 d 0 h 22 min 5 s``.

The summary lines and INFO logs an administrator reads first ("loaded 1 rules",
"1 calls took the default route") read as broken English on a first install,
where one rule and one call is exactly what there is.
"""

from __future__ import annotations

__all__ = ["counted", "duration"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural (``plural``, or ``noun``
    with an ``s``) for every count but one."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural if plural is not None else noun + 's'}"


def duration(seconds: float) -> str:
    """``12.5 s``, ``1 min 42 s``, ``3 h 0 min 2 s``, ``6 d 0 h 22 min 5 s``:
    a length of time in the largest unit it reaches and every smaller one,
    as people say it. Hours stopped at 24: a step of 6 days read as
    ``144 h 22 min``, which nobody reads as 6 days at a glance."""
    left = abs(seconds)
    if left < 60:
        return f"{left:.1f} s"
    days, rest = divmod(round(left), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if days or hours:
        parts.append(f"{hours} h")
    parts += [f"{minutes} min", f"{secs} s"]
    return " ".join(parts)
