"""``json.loads`` for text callrouter did not just write: every failure a ``ValueError``.

The files callrouter reads back at start (``calllife.json``,
``forwarding.json``, the API feed's rows) and the JSON Asterisk hands over
(a CEL record's ``Extra``) are read with ``except ValueError``: that covers
``JSONDecodeError`` and a number past Python's digit limit, but not
``RecursionError``, which ``json.loads`` raises for arrays or objects nested
past the interpreter's limit (about 1,000 levels: 1,000 bytes of ``[``). A
state file of ``[[[[...`` then stopped ``callrouter run`` at start, and one CEL
record failed every replay of the call life. :func:`loads` turns it into the
``ValueError`` the callers already handle.

Bodies from the network (the HTTP API's, 1C's answers) have their own decoders
with a depth bound of 32 levels (:func:`router.api.context.decode_json`,
``callrouter_onec.jsonbody``); this is for text whose shape the code checks
after reading it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``; ``ValueError`` for anything that is not a JSON value
    it can read (``JSONDecodeError``, too deep a nesting, too long a number)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply (arrays or objects in each other)") from None
