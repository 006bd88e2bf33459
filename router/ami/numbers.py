"""Numbers in outside bytes: ASCII digits only, bounded, or nothing.

Asterisk (or whoever answers on its port) sends numbers as text: HTTP status
codes, ``Content-Length``, chunk sizes, ``BridgeNumChannels``, the dialplan's
``Wait`` and ``Timestamp``. Python's own conversions accept far more than
those fields may hold: ``str.isdigit()`` is true for ``²`` while ``int("²")``
raises, ``int()`` takes ``٣`` (Arabic-Indic three), ``_`` separators, signs and
surrounding blanks, ``int(x, 16)`` takes a ``0x`` prefix, ``float()`` takes
``nan``, ``inf`` and ``1e308``. Every number read from the wire therefore goes
through these helpers, which accept exactly the ASCII forms and return
``None`` for anything else, so each caller decides whether a bad value is a
protocol error (HTTP framing) or simply absent (an event field).

Sans-I/O, like the rest of the protocol layer.
"""

from __future__ import annotations

import math
import re

__all__ = ["ascii_float", "ascii_hex", "ascii_int"]

# At most 18 digits: more than any field we read can need; also keeps int()
# linear and cheap.
_DEC = re.compile(r"[0-9]{1,18}", re.ASCII)
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}", re.ASCII)
_FLOAT = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?", re.ASCII)


def ascii_int(text: str | None) -> int | None:
    """A non-negative decimal made only of ASCII digits, else ``None``."""
    if text is None or _DEC.fullmatch(text) is None:
        return None
    return int(text)


def ascii_hex(text: str | None) -> int | None:
    """A non-negative hexadecimal (a chunk size) without prefix or sign, else ``None``."""
    if text is None or _HEX.fullmatch(text) is None:
        return None
    return int(text, 16)


def ascii_float(text: str | None) -> float | None:
    """A non-negative finite ``123`` or ``123.456`` in ASCII, else ``None``.

    No exponent, sign, ``nan`` or ``inf``: a deadline computed from such a value
    would never pass or would already have passed.
    """
    if text is None or _FLOAT.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None
