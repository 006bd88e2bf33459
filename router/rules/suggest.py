"""Did-you-mean suggestions, as rule-engine's ``suggestions.py`` offers them.

A typo in a rule file is the most common mistake an administrator makes;
naming the closest known word turns a lookup in the docs into a glance.
"""

from __future__ import annotations

from collections.abc import Iterable

from router.suggest import closest

__all__ = ["did_you_mean", "one_of"]


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string when nothing is close."""
    match = closest(word, options)
    return f" (did you mean {match!r}?)" if match is not None else ""


def one_of(options: Iterable[str]) -> str:
    """Lists the allowed words when a discriminator value is unknown."""
    return ", ".join(repr(option) for option in sorted(options))
