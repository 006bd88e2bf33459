"""Text helpers for conditions: regular expressions and a few safe basics.

Method calls are not part of the rule language (``caller.name.lower()`` would
open every ``str`` method), so the handful people need are functions.

Regular expressions run on RE2 (``google-re2``), not on Python's ``re``: the
text they search is often the caller's name or number, which the caller
chooses, and ``re`` backtracks, so ``match("^(a+)+$", caller.name)`` with a
29-character name held every call for 9.3 s. RE2 matches in time linear in
the text, whatever the pattern; the price is that it has no look-around and
no backreferences, and those patterns are refused when the rule loads. A time
limit per match (the ``regex`` module's ``timeout=``) was the alternative; it
would still let one hostile call spend the whole routing budget of every call.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import re2

from router.hookspecs import hookimpl
from router.rules.limits import MAX_STRING, check_size
from router.rules.registry import Registry

__all__ = ["MAX_PATTERN", "MAX_SUBJECT", "match", "register"]

#: Characters in one pattern; patterns are written by hand.
MAX_PATTERN = 1_000
#: Characters of text one match may search.
MAX_SUBJECT = MAX_STRING

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr


#: Compiled patterns kept: more than the rules of a large PBX write (1,000
#: rules with a pattern each cycled through a 512-entry cache and compiled
#: every pattern on every call: 70 ms per call, bench/bench_rules.py).
PATTERN_CACHE = 8192


@lru_cache(maxsize=PATTERN_CACHE)
def _compiled(pattern: str) -> Any:
    """The RE2 program for a pattern, or ValueError saying what is wrong with it.

    Python's ``re`` parses it first only for its error messages, which name the
    position of a syntax error; it never matches anything.
    """
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"regular expression longer than {MAX_PATTERN} characters")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    except (RecursionError, OverflowError):
        raise ValueError(f"invalid regular expression {pattern!r}: too complex") from None
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"regular expression {pattern!r} is not supported: {reason} "
            "(rules use RE2: no look-around like (?=...) or (?<!...), no "
            "backreferences like \\1; see docs/rules.md)"
        ) from None


def match(pattern: str, text: object) -> bool:
    """True if the regular expression matches anywhere in text (anchor with ^ and $)."""
    if text is None:
        return False
    compiled = _compiled(str(pattern))
    check_size(text)
    subject = str(text)
    if len(subject) > MAX_SUBJECT:
        raise OverflowError(f"match(): text longer than {MAX_SUBJECT} characters")
    return compiled.search(subject) is not None


def _check_match(pattern: object = None, text: object = None) -> None:
    if isinstance(pattern, str):
        _compiled(pattern)


def length(value: object) -> int:
    """Number of items or characters; 0 for None (a failed lookup)."""
    if value is None:
        return 0
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        return len(value)
    raise TypeError(f"len() of a {type(value).__name__}")


def lower(text: object) -> str:
    """Lower-case text; None gives an empty text."""
    return "" if text is None else str(text).lower()


def startswith(text: object, prefix: str) -> bool:
    """True if text starts with prefix; None never does."""
    return text is not None and str(text).startswith(prefix)


def to_str(value: object) -> str:
    """The value as text; None gives an empty text."""
    return "" if value is None else str(value)


_INT = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)


def to_int(value: object, default: int | None = None) -> int | None:
    """The value as a whole number, or default when it is not one.

    Only ASCII digits (at most 18): Python's ``int()`` also takes ``٣`` and
    fullwidth digits, ``_`` separators and 4,300-digit strings, none of which a
    caller's value should turn into a number behind the number plan's back.
    """
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # NaN fails the comparison; infinities and huge values are not whole numbers here.
        return int(value) if abs(value) < 1e18 else default
    text = str(value).strip()
    if _INT.fullmatch(text) is None:
        return default
    return int(text)


def register(registry: Registry) -> None:
    registry.add_function("match", match, check=_check_match)
    registry.add_function("len", length)
    registry.add_function("lower", lower)
    registry.add_function("startswith", startswith)
    registry.add_function("str", to_str)
    registry.add_function("int", to_int)


@hookimpl
def callrouter_register(registry: Registry) -> None:
    register(registry)
