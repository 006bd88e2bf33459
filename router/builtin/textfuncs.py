"""Text helpers for conditions: regular expressions and a few safe basics.

Method calls are not part of the rule language (``caller.name.lower()`` would
open every ``str`` method), so the handful people need are functions.
"""

from __future__ import annotations

import re
from functools import lru_cache

from router.hookspecs import hookimpl
from router.rules.registry import Registry

__all__ = ["match", "register"]


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def match(pattern: str, text: object) -> bool:
    """True if the regular expression matches anywhere in text (anchor with ^ and $)."""
    if text is None:
        return False
    return _compiled(pattern).search(str(text)) is not None


def _check_match(pattern: object = None, text: object = None) -> None:
    if isinstance(pattern, str):
        try:
            _compiled(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


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


def to_int(value: object, default: int | None = None) -> int | None:
    """The value as a whole number, or default when it is not one."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


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
