"""Whether the inbound context's request passes the caller's values FILTERed.

The dialled number (``${EXTEN}``: the shipped ``_X.`` matches anything after a
first digit, and PJSIP decodes the request URI's user) and the caller's number
and name (``${CALLERID(num)}``, ``${CALLERID(name)}``: a SIP ``From``) are
written by whoever places the call. Asterisk splits an application's arguments
at commas, so ``UserEvent(CallRouterRequest,DID: ${EXTEN},Caller: ${CALLERID(num)},...)``
with a caller ID of ``1,Wait: 0,DID: 900`` sends keys of the caller's choosing;
callrouter reads the first of each after the ``UserEvent`` line
(router.dialplan.dialplan_value), so a ``Caller:`` before ``DID:`` lets the
caller choose the DID of a context that announces from ``s``, and any such
request's ``Wait:``. Milestone 1's snippet did exactly that; the snippet since
filters each into a variable first (docs/asterisk.md, "Values from outside are
filtered"). This module finds such a value in the request, directly or through
a variable an earlier ``Set`` of the extension gave it unfiltered, and the
lines to write instead. Sans-I/O, on the steps of one extension.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CALLER_LINE",
    "DID_LINE",
    "Unfiltered",
    "request_line",
    "unfiltered",
]

#: What the shipped snippet writes for each (examples/asterisk/extensions.conf,
#: docs/asterisk.md and its Russian twin hold these lines as they are).
DID_LINE = "Set(CALLROUTER_DID=${FILTER(0123456789*#+,${EXTEN})})"
CALLER_LINE = "Set(CALLROUTER_CALLER=${FILTER(0123456789+,${CALLERID(num)})})"
_REPLACEMENT = {"did": "${CALLROUTER_DID}", "caller": "${CALLROUTER_CALLER}"}
_FILTERS = {"did": "0123456789*#+", "caller": "0123456789+"}

#: A value from outside as the dialplan reads it, in any case, substrings
#: (``${EXTEN:1}``, ``${CALLERID(num):-10}``) included.
_OUTSIDE = re.compile(
    r"\$\{\s*(EXTEN|DNID|CALLERIDNUM|CALLERIDNAME|CALLERID\(\s*(?:num|number|all|ani|dnid|"
    r"name)\s*\))\s*(?::-?\d+(?::-?\d+)?)?\}",
    re.IGNORECASE,
)
#: A channel variable read (``${NAME}``, ``${NAME:1}``).
_VARIABLE = re.compile(r"\$\{\s*([A-Za-z0-9_]{1,80})\s*(?::-?\d+(?::-?\d+)?)?\}")
#: ``Set(...)`` targets that are the caller ID itself.
_CALLERID_TARGET = re.compile(r"CALLERID\(\s*(num|number|name|all)\s*\)", re.IGNORECASE)
#: The longest step data read (a dialplan line is the admin's, but the listing
#: came over the network).
_MAX_DATA = 4096

Kind = Literal["did", "caller", "name"]


@dataclass(frozen=True, slots=True)
class Unfiltered:
    """One key of the request that carries a value from outside unfiltered."""

    #: The request's key and value as written (``Caller: ${CALLERID(num)}``).
    part: str
    #: What the value reads: ``${CALLERID(num)}``.
    source: str
    kind: Kind
    #: The variable the value came through (the one the first unfiltered ``Set``
    #: made, when one copies another) and that ``Set``'s priority (None: the
    #: request reads the value itself).
    via: str | None = None
    set_at: int | None = None

    def fix(self) -> str | None:
        """The line to write: the ``Set`` at ``set_at`` with the value filtered,
        or (read in the request itself) the snippet's ``Set`` before it; None
        for a caller's name, which is to be left out of the request."""
        if self.kind == "name":
            return None
        if self.via is not None:
            return f"Set({self.via}=${{FILTER({_FILTERS[self.kind]},{self.source})}})"
        return DID_LINE if self.kind == "did" else CALLER_LINE


def _kind(reference: str) -> Kind:
    name = reference.upper().replace(" ", "")
    if "EXTEN" in name or "DNID" in name:
        return "did"
    if "NAME" in name:
        return "name"
    return "caller"


def _without_filters(text: str) -> str:
    """``text`` with each ``${FILTER(...)}`` call cut out: what comes out of
    one is the filter's, not the caller's."""
    out: list[str] = []
    at = 0
    upper = text.upper()
    while True:
        start = upper.find("${FILTER(", at)
        if start < 0:
            out.append(text[at:])
            return "".join(out)
        out.append(text[at:start])
        depth, end = 0, start + len("${FILTER")
        while end < len(text):
            if text[end] == "(":
                depth += 1
            elif text[end] == ")":
                depth -= 1
                if depth == 0:
                    break
            end += 1
        at = end + 1


def _outside(
    text: str, tainted: dict[str, tuple[str, int, str]], cleaned: set[Kind]
) -> tuple[str, Kind, str | None, int | None] | None:
    """The first outside value ``text`` reads unfiltered: (what it reads, its
    kind, the variable read, or None when it reads the value itself, and the
    priority of the ``Set`` that first held it unfiltered)."""
    bare = _without_filters(text)
    for match in _OUTSIDE.finditer(bare):
        kind = _kind(match[1])
        if kind not in cleaned:
            return match[0], kind, None, None
    for match in _VARIABLE.finditer(bare):
        held = tainted.get(match[1])
        if held is not None:
            source, set_at, _ = held
            return source, _kind(source), match[1], set_at
    return None


def _parts(data: str) -> list[str]:
    """The request's arguments after the event name, split at the commas
    Asterisk splits at (not inside ``${...}`` or parentheses)."""
    parts: list[str] = []
    depth, start = 0, 0
    for at, char in enumerate(data):
        if char in "({":
            depth += 1
        elif char in ")}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(data[start:at])
            start = at + 1
    parts.append(data[start:])
    return [p.strip() for p in parts[1:]]


def unfiltered(before: Sequence[tuple[int, str, str]], request: str) -> list[Unfiltered]:
    """The keys of the request (its ``AppData``, ``request``) that pass a value
    from outside unfiltered, given the extension's steps ``before`` it
    (priority, application, data), read in order as a call runs them: a
    ``Set`` of a variable from such a value unfiltered taints it, one from
    anything else (a ``FILTER``) clears it; ``Set(CALLERID(num)=${FILTER(...)})``
    makes the caller's number itself filtered from there on."""
    tainted: dict[str, tuple[str, int, str]] = {}
    cleaned: set[Kind] = set()
    for priority, application, data in sorted(before):
        if application.lower() != "set" or "=" not in data:
            continue
        written, _, value = data[:_MAX_DATA].partition("=")
        written = written.strip()
        # ``Set(__FROM_DID=...)`` (inherited, FreePBX's way) is read as
        # ``${FROM_DID}``: Asterisk drops up to two leading underscores.
        name = written[2:] if written.startswith("__") else written.removeprefix("_")
        found = _outside(value, tainted, cleaned)
        target = _CALLERID_TARGET.fullmatch(name)
        if target is not None:
            kind = _kind(target[0])
            if found is None:
                cleaned.add(kind)
            else:
                cleaned.discard(kind)
            continue
        if found is None:
            tainted.pop(name, None)
        elif found[2] is None:
            tainted[name] = (found[0], priority, written)
        else:  # a copy of a tainted one: the first Set is the one to filter
            tainted[name] = tainted[found[2]]
    found_parts: list[Unfiltered] = []
    for part in _parts(request[:_MAX_DATA]):
        found = _outside(part, tainted, cleaned)
        if found is not None:
            source, kind, via, set_at = found
            # The variable to filter is the one the first unfiltered Set made.
            first = None if via is None else tainted[via][2]
            found_parts.append(Unfiltered(part, source, kind, first, set_at))
    return found_parts


def request_line(request: str, found: Sequence[Unfiltered]) -> str:
    """The request ``request`` (its ``AppData``) as the snippet writes it: each
    key of ``found`` read in the request itself reads the snippet's filtered
    variable instead, and a caller's name is left out (callrouter reads it from
    the channel snapshot Asterisk writes, ``CallerIDName``)."""
    faults = {f.part: f for f in found}
    name = request.split(",", 1)[0].strip()
    kept: list[str] = []
    for part in _parts(request):
        fault = faults.get(part)
        if fault is None or (fault.via is not None and fault.kind != "name"):
            kept.append(part)  # clean, or filtered where its variable is set
        elif fault.kind != "name":
            key = part.split(":", 1)[0].strip()
            kept.append(f"{key}: {_REPLACEMENT[fault.kind]}")
    return f"UserEvent({','.join([name, *kept])})"
