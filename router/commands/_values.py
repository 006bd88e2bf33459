"""The values flags take, checked as argparse checks a type: one a command
cannot take is a wrong command line (its usage, ``callrouter CMD: error:
argument --flag: ...``, exit 2), said before any file is read or anything
is asked. docs/operations.md lists the exit codes: 2 is what was typed,
1 what was found (router.toml, the rules, Asterisk, 1C)."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

from router.builtin.timefuncs import zone
from router.config import url_problem
from router.dialplan import LocationPolicy

__all__ = [
    "a_moment",
    "a_path",
    "a_path_of",
    "a_pattern",
    "a_time_zone",
    "an_asterisk_url",
    "seconds",
    "usage_error",
]


def seconds(text: str) -> float:
    """``--timeout``: seconds, as ``[asterisk] request_timeout`` takes them."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(
            f"expected more than 0 and at most 3600 seconds, got {text!r}"
        )
    return value


def an_asterisk_url(text: str) -> str:
    """``--url``: as ``[asterisk] url`` takes it (a scheme callrouter speaks, a host...)."""
    problem = url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def a_time_zone(text: str) -> str:
    """``--tz``: an IANA zone (with a did-you-mean)."""
    try:
        zone(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def a_pattern(text: str) -> str:
    """``--location-pattern``: a regular expression."""
    try:
        LocationPolicy.from_pattern(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None
    return text


#: The years ``--at`` takes: the ones cron's trigger counts (from 1970), and
#: none whose moment moved to another zone leaves the calendar (0001 with
#: ``+05:00``, 9999-12-31 with ``-05:00`` were an OverflowError's traceback).
_YEARS = (1970, 9998)


def a_moment(text: str) -> str:
    """``explain --at``, ``check --at``: ``YYYY-MM-DD HH:MM`` (or ISO 8601) in
    the years :data:`_YEARS`; its zone is applied later."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected "YYYY-MM-DD HH:MM", got {text[:40]!r}'
        ) from None
    low, high = _YEARS
    if not low <= moment.year <= high:
        raise argparse.ArgumentTypeError(f"expected a year from {low} to {high}, got {text[:40]!r}")
    return text


def a_path(text: str) -> str:
    """A file or folder: an empty one (``--rules ''``, a variable not set in a
    script) would be the current folder, read as if it had been named."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty path (it would be the current folder): give a file or folder"
        )
    return text


def a_path_of(text: str) -> Path:
    """:func:`a_path` as a :class:`~pathlib.Path`."""
    return Path(a_path(text))


def usage_error(args: argparse.Namespace, command: str, message: str) -> int:
    """A command line found wrong past the parser (a ``--lookup`` no plugin
    registers), said as argparse says one: the usage of ``args.parser``,
    ``callrouter COMMAND: error: ...`` on stderr; exit code 2."""
    args.parser.print_usage(sys.stderr)
    print(f"callrouter {command}: error: {message}", file=sys.stderr)
    return 2
