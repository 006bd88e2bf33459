"""Which known word a typo most likely meant: one rule for every did-you-mean.

A key in router.toml, a name in a rule file, an AMI action or header: each
message words its hint its own way, but what counts as close is decided here
once (difflib's ratio of 0.6, else the same word in another case), so the same
typo gets the same suggestion everywhere. Imports nothing of callrouter, so
the AMI layer and the configuration can use it as well as the rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest"]


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option closest to ``word``, or ``None`` when none is close."""
    choices = sorted(set(options))
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    lowered = {choice.lower(): choice for choice in choices}
    return lowered.get(word.lower())
