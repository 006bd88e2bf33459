"""Decoding a 1C answer body into JSON values, within bounds, without I/O.

Anyone who can edit a manager card in 1C, or sit on a plain-HTTP path to it,
chooses these bytes. ``json.loads`` on its own raises ``RecursionError`` for
deeply nested arrays (which escaped every typed error path and left the
circuit breaker half-open for good), builds huge integers digit by digit, and
accepts ``NaN``. So the body is decoded here, once, with explicit bounds, and
every way it can be unusable is one :class:`BodyError`, which the client turns
into :class:`~callrouter_onec.errors.OneCUnavailable`.
"""

from __future__ import annotations

import json
import re

__all__ = ["MAX_DEPTH", "MAX_NUMBER_DIGITS", "BodyError", "decode_json", "nesting_depth"]

#: The contract's deepest answer is three levels (``{"manager": {...}}``); this
#: leaves room for 1C to add structure and is far below the interpreter's limit.
MAX_DEPTH = 32
#: No number in the contract comes close; a longer one is garbage, not data.
MAX_NUMBER_DIGITS = 100

# String literals are skipped before counting brackets: a "[" inside a name is
# text. Escapes go first, so that the string pattern has no alternation: both
# passes are linear whatever the body (no backtracking on unterminated strings).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")
#: A surrogate can reach a decoded value only through a ``\\uD800``-``\\uDFFF``
#: escape (the body itself is valid UTF-8): only a body with one is checked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


#: A UTF-8 BOM read back as Windows-1251 or Latin-1 text and encoded again: a
#: module that wrote its JSON to a file or stream with a BOM and read it in the
#: wrong encoding. "not JSON (JSONDecodeError)" would not tell its author that.
_BOM_AS_TEXT = ("\u043f\u00bb\u0457", "\u00ef\u00bb\u00bf")  # "п»ї", "ï»¿"
_BOM_AS_TEXT_HINT = (
    "answer is not JSON: it begins with a UTF-8 BOM turned into text ('п»ї' or 'ï»¿'); "
    "the 1C module should write the body with ИспользованиеByteOrderMark.НеИспользовать "
    "(docs/onec.md, the service contract)"
)


class BodyError(ValueError):
    """The body is not JSON the plugin can use; the message says why, never echoes it."""


def nesting_depth(body: bytes, stop: int = MAX_DEPTH) -> int:
    """The deepest bracket nesting in ``body`` (strings excluded), in linear time.

    Counting stops early once ``stop`` is exceeded: a hostile body is refused
    after a few dozen bytes of brackets, not after a million.
    """
    text = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in text:
        depth += 1 if byte in _OPEN else -1
        if depth > deepest:
            deepest = depth
            if deepest > stop:
                break
    return deepest


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise BodyError(f"a number longer than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise BodyError(f"a number longer than {MAX_NUMBER_DIGITS} characters")
    return float(text)


def _constant(name: str) -> object:
    raise BodyError(f"{name} is not JSON")


def decode_json(content: bytes) -> object:
    """The JSON value of a UTF-8 body (a BOM is allowed: many 1C modules write one).

    The size bound is the client's (it stops reading at ``max_body``); this
    function bounds what a body of that size can cost: nesting, numbers, and
    every exception ``json`` can raise on hostile input.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BodyError("answer is not UTF-8") from None
    depth = nesting_depth(content, MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise BodyError(f"answer nests deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_real, parse_constant=_constant)
    except BodyError:
        raise
    except (ValueError, RecursionError, MemoryError, TypeError) as exc:
        # ValueError covers JSONDecodeError; RecursionError and MemoryError are
        # belt and braces behind the depth and size bounds.
        if text.startswith(_BOM_AS_TEXT):
            raise BodyError(_BOM_AS_TEXT_HINT) from None
        raise BodyError(f"answer is not JSON ({type(exc).__name__})") from None
    if _SURROGATE_ESCAPE.search(content) is not None:
        # "\\ud800" is valid JSON but no text: a name holding it could be
        # encoded neither for Asterisk nor for the API's feed or the live page
        # (whose stream it broke for every reader), so no 1C value carries one.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError(
                "answer holds a lone surrogate (\\uD800-\\uDFFF), which is not text"
            ) from None
    return value
