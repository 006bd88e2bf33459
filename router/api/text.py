"""JSON values the API writes out, made encodable: no lone surrogate.

``json.loads`` accepts ``"\\ud800"`` (valid JSON, but no text), and a lookup
answer may carry one into a decision's trace or a ringing's card. Written
with ``ensure_ascii=False`` and encoded as UTF-8, as the live page's stream
and the feed do, one such value raised ``UnicodeEncodeError``: the live page's
stream failed for every reader while the decision stayed among the recent ones.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_SPLIT", "mend_surrogates", "quoted_parts", "shown_did", "with_message_parts"]

#: A quoted value as Python's ``repr`` writes one into a message (callrouter's
#: messages quote every value they name so: ``exten 'x' is not ...``): a quote
#: that no letter or digit touches from outside (``plugin's`` opens nothing),
#: then anything but that quote, a backslash escaping one character, up to the
#: same quote; never over a line's end.
_QUOTED = re.compile(r"""(?<![\w'"])(?:'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)")(?!\w)""")
#: Longer messages are not split (each quote could scan to the line's end): the
#: page isolates them whole, as before.
MAX_SPLIT = 4000


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


def quoted_parts(text: str) -> list[str | dict[str, str]] | None:
    """``text`` cut at the values it quotes, for the live page to isolate each.

    A message quoting an untrusted value (a rule's ``detail``: ``exten 'שרה'
    is not a safe dialplan location``; a lookup's error with 1C's body) was put
    in one ``<bdi>`` whole: right-to-left letters in the value then reordered
    the message's own words and punctuation around it inside that isolate. The
    parts are the message's text (strings) and each quoted value
    (``{"quote": "'", "value": ...}``, the quotes left out of ``value``); joined
    back with their quotes they are ``text``. None when nothing is quoted, or
    the text is too long to split (:data:`MAX_SPLIT`).
    """
    if len(text) > MAX_SPLIT or ("'" not in text and '"' not in text):
        return None
    parts: list[str | dict[str, str]] = []
    at = 0
    for match in _QUOTED.finditer(text):
        if match.start() > at:
            parts.append(text[at : match.start()])
        single = match.group(1)
        quote, value = ("'", single) if single is not None else ('"', match.group(2))
        parts.append({"quote": quote, "value": value})
        at = match.end()
    if at == 0:
        return None
    if at < len(text):
        parts.append(text[at:])
    return parts


def with_message_parts(trace: Any, actions: Any = None) -> None:
    """Add ``detail_parts`` to a trace's rules and ``error_parts`` to their failed
    lookups (a trace's ``to_dict()``, in place), and ``detail_parts`` to each of
    ``actions`` (a decision's, as logged): :func:`quoted_parts` of each message."""
    rules = trace.get("rules") if isinstance(trace, dict) else None
    for rule in rules if isinstance(rules, list) else ():
        if not isinstance(rule, dict):
            continue
        if isinstance(rule.get("detail"), str) and (parts := quoted_parts(rule["detail"])):
            rule["detail_parts"] = parts
        lookups = rule.get("lookups")
        for lookup in lookups if isinstance(lookups, list) else ():
            error = lookup.get("error") if isinstance(lookup, dict) else None
            if isinstance(error, str) and (parts := quoted_parts(error)):
                lookup["error_parts"] = parts
    for action in actions if isinstance(actions, list) else ():
        detail = action.get("detail") if isinstance(action, dict) else None
        if isinstance(detail, str) and (parts := quoted_parts(detail)):
            action["detail_parts"] = parts
