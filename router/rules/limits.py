"""How big anything in a rule may get: every size bound of the rule language.

A rule file may come from a colleague the administrator trusts less than
themselves, and caller numbers and names come from whoever places the call.
Neither may freeze the router or take its memory, so the values an expression
builds are bounded in size *before* they are built (``"%0*d" % (1500000000, 0)``
asked for 1.5 GB, ``str()`` of a list nested by repetition for 10^9
characters), and the expression trees are bounded in depth and node count when
the file is loaded (a 499-term sum overflowed Python's recursion limit). With
these bounds an evaluation does a bounded amount of work; regular expressions
get a linear-time engine (``router.builtin.textfuncs``). ``docs/rules.md``
("Limits") is the administrator's table of the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_EXPONENT",
    "MAX_EXPRESSION",
    "MAX_EXPRESSION_DEPTH",
    "MAX_EXPRESSION_NODES",
    "MAX_INT",
    "MAX_LITERAL",
    "MAX_STRING",
    "bounded",
    "check_size",
    "format_percent",
    "size",
]

MAX_EXPRESSION = 2_000  # characters of source in one expression
MAX_LITERAL = 1_000  # characters in one string literal
#: Characters in a text, or characters plus items in a list, tuple or set
#: (nested ones counted in full, as ``str()`` would print them).
MAX_STRING = 10_000
MAX_INT = 10**30  # no phone number or counter gets near this
MAX_EXPONENT = 64
#: Nesting of one expression's tree; ``a + b + c`` nests one level per ``+``.
#: The evaluator and the compiler recurse once or a few times per level.
MAX_EXPRESSION_DEPTH = 50
#: Values (names, constants, operations, calls) in one expression.
MAX_EXPRESSION_NODES = 500

_COLLECTIONS = (list, tuple, set, frozenset)


def size(value: object, limit: int = MAX_STRING) -> int:
    """Characters of text plus items of collections in ``value``, counting a
    shared part every time it appears (``str()`` prints it every time).

    Stops as soon as the count passes ``limit``, so measuring a value built to
    be huge costs at most about ``limit`` steps, never the value's full size.
    """
    total = 0
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, _COLLECTIONS):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, Mapping):
            total += len(item) + 1
            if total <= limit:
                for key, entry in item.items():
                    stack.append(key)
                    stack.append(entry)
        else:
            total += 1
        if total > limit:
            break
    return total


def check_size(value: object) -> None:
    """Raises ``OverflowError`` when ``value`` is bigger than :data:`MAX_STRING`."""
    if size(value) > MAX_STRING:
        raise OverflowError(f"value longer than {MAX_STRING} characters or items")


def bounded(value: Any) -> Any:
    """``value`` unchanged if it is within bounds; the check every operation ends with."""
    if isinstance(value, int):
        if not isinstance(value, bool) and abs(value) > MAX_INT:
            raise OverflowError("number too large")
    elif isinstance(value, float):
        if not abs(value) <= MAX_INT:  # inf and nan too
            raise OverflowError("number too large")
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise OverflowError(f"value longer than {MAX_STRING} characters")
    elif isinstance(value, (*_COLLECTIONS, Mapping)):
        check_size(value)
    return value


# One printf-style conversion: %(key)flags width .precision length type.
_CONVERSION = re.compile(r"%(\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.?)", re.DOTALL)
_NUMBER_DIGITS = 6  # a width with more digits is over MAX_STRING anyway


def format_percent(template: str, args: Any) -> str:
    """``template % args`` after checking what the result can cost.

    Width and precision pad the output before any size check could see it
    (``"%.1000000000f" % 1``), so they are read from the template, ``*`` ones
    from ``args``, and their sum is bounded; the conversions of ``args`` are
    bounded by the values' own size.
    """
    values = args if isinstance(args, tuple) else (args,)
    position = 0
    padding = 0
    for conversion in _CONVERSION.finditer(template):
        key, width, precision, kind = conversion.groups()
        if kind == "%" and not (key or width or precision):
            continue
        for part in (width, precision):
            if part == "*":
                given = values[position] if position < len(values) else 0
                position += 1
                amount = abs(given) if isinstance(given, int) else 0
            elif part:
                amount = MAX_STRING + 1 if len(part) > _NUMBER_DIGITS else int(part)
            else:
                amount = 0
            padding += amount
        if key is None:
            position += 1
        if padding > MAX_STRING:
            raise OverflowError(f"format width or precision over {MAX_STRING}")
    check_size(args)
    result: str = template % args
    return bounded(result)  # type: ignore[no-any-return]
