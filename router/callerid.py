"""The caller's own texts, cut once where they enter callrouter.

A caller ID name and number are whatever the SIP ``From`` (or a dialplan's
``Set(CALLERID(name)=...)``) says: Asterisk keeps them whole, however long.
Kept whole, a 4,000-character name went into the call tracker, every event of
the API feed (10,000 events: 40 MB), the live page and the call life sent to
1C. Every place callrouter takes one from Asterisk (the call tracker, the
routing request, the feed's dial events, the CEL records of the call life)
cuts it here, so one call shows the same cut text everywhere:

* a name, and any other free text of the caller or the network (a channel
  variable's value, a timeline detail): :data:`MAX_TEXT` characters, as 1C's
  texts (``callrouter_onec.models.MAX_TEXT``) and the feed's caller card;
* a number (the caller's, the DID, a transfer target's caller ID):
  :data:`MAX_NUMBER` characters. A longer text is no phone number (E.164 has
  15 digits; with spaces, dashes and ``доб. 1234`` a real one stays far
  below); the number plan reads a text over that length or ending in
  :data:`CUT_MARK` as no number at all (:func:`router.parse_number`), so a
  cut number never matches a rule, a list or 1C's lookup as if it were whole.

A cut text ends in :data:`CUT_MARK`. Imports nothing of callrouter: the call
tracker (the lowest layer that holds calls) and the number plan both use it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CUT_MARK", "MAX_NUMBER", "MAX_TEXT", "cut", "cut_number", "cut_text", "was_cut"]

#: Longest caller name (or other outside free text) kept, in characters.
MAX_TEXT: Final = 500
#: Longest caller number (or DID) kept, in characters; a longer one is no number.
MAX_NUMBER: Final = 64
#: What a cut text ends in (U+2026): no digit, so a cut number reads as no number.
CUT_MARK: Final = "…"


def cut(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and
    :data:`CUT_MARK`, ``limit`` characters in all. The one cut of callrouter's
    texts (a caller's, a card's, a repr in an error) and of the 1C plugin's
    (``router.cut``), so they all end the same way."""
    return text if len(text) <= limit else text[: limit - 1] + CUT_MARK


def cut_text(text: str) -> str:
    """A caller name (or other outside free text), at most :data:`MAX_TEXT` characters."""
    return cut(text, MAX_TEXT)


def cut_number(text: str) -> str:
    """A caller number or DID, at most :data:`MAX_NUMBER` characters."""
    return cut(text, MAX_NUMBER)


def was_cut(number: str) -> bool:
    """Whether ``number`` is longer than a number can be, or was cut so
    (ends in :data:`CUT_MARK`): its digits are not the caller's number."""
    return len(number) > MAX_NUMBER or number.rstrip().endswith(CUT_MARK)
