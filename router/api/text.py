"""JSON values the API writes out, made encodable: no lone surrogate.

``json.loads`` accepts ``"\\ud800"`` (valid JSON, but no text), and a lookup
answer may carry one into a decision's trace or a ringing's card. Written
with ``ensure_ascii=False`` and encoded as UTF-8, as the live page's stream
and the feed do, one such value raised ``UnicodeEncodeError``: the live page's
stream failed for every reader while the decision stayed among the recent ones.
"""

from __future__ import annotations

from typing import Any

__all__ = ["mend_surrogates", "shown_did"]


def _text(value: str) -> str:
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Each lone surrogate becomes U+FFFD; a valid pair written as two
        # escapes becomes its character.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def mend_surrogates(value: Any) -> Any:
    """``value`` (JSON values: dict, list, str, numbers, None) with every lone
    surrogate in its texts, keys included, replaced by U+FFFD."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [mend_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {mend_surrogates(key): mend_surrogates(item) for key, item in value.items()}
    return value


def shown_did(did: str) -> str:
    """The dialled number as the API shows it: Asterisk's ``s`` is none.

    ``s`` is the extension a channel starts at when no number was dialled: a
    trunk that delivers no DID, and the trunk leg of a click-to-call or any call
    out (its endpoint's context is the inbound one). A 1C screen pop showed it
    as the number dialled; the 1C history already leaves it out (issue 16).
    """
    return "" if did == "s" else did
