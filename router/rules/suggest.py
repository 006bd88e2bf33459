"""Did-you-mean suggestions, as rule-engine's ``suggestions.py`` offers them.

A typo in a rule file is the most common mistake an administrator makes;
naming the closest known word turns a lookup in the docs into a glance.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "one_of"]


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string when nothing is close."""
    choices = sorted(set(options))
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not matches:
        lowered = {choice.lower(): choice for choice in choices}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def one_of(options: Iterable[str]) -> str:
    """Lists the allowed words when a discriminator value is unknown."""
    return ", ".join(repr(option) for option in sorted(options))
