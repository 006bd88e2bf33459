"""AMI requests known to crash Asterisk, refused before they are sent.

callrouter passes on what its users ask for: an API client's ``POST
/api/v1/ami/{action}``, ``callrouter ami``, a plugin's typed call. Some
well-formed requests take the whole PBX down, and every call on it with it;
these are refused with the reason and what to do instead, like any other
invalid value (:class:`~router.errors.AMIValidationError`, raised where
every action is turned into headers, :meth:`router.ami.protocol.Action.pairs`,
so that no way past the catalog sends one either).

Each entry was seen crashing the sandbox's Asterisk (Debian's 22.10), with
the date. ``Getvar`` of ``MIXMONITOR(<id>,filename)``, or ``Status`` asking for
it among its ``Variables`` (2026-12-04 both), on a MixMonitor that writes only
``r()``/``t()`` files (one leg, no mixed file) is a segfault: the function
copies a filename that is not there. An id names no MixMonitor for
long (a heap address, reused), so no id is safe to read: any read of the
function is refused, also inside another (``EVAL``, ``LEN``), and a read that
evaluates a variable's text as dialplan (``EVAL`` inside ``EVAL``), which calls
it with no ``MIXMONITOR`` in the request. A blocklist cannot see every way
(the admin's dialplan can read the function too): it refuses those an AMI
request alone can take.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["HAZARDOUS_ACTIONS", "HAZARDS", "Hazard", "hazard"]


@dataclass(frozen=True, slots=True)
class Hazard:
    """One request shape that crashes Asterisk: ``action``'s ``header`` matching."""

    action: str
    header: str
    pattern: re.Pattern[str]
    why: str


#: Any read of ``MIXMONITOR()``: its name, then its arguments (a space between is
#: no call, but costs nothing to refuse).
_READS_MIXMONITOR: Final = re.compile(r"MIXMONITOR\s*\(", re.IGNORECASE)
_MIXMONITOR_WHY: Final = (
    "reading MIXMONITOR() crashes Asterisk 22 when that MixMonitor writes only "
    "r()/t() files (seen 2026-12-04 on Asterisk 22.10), and its id may by then "
    "be such a MixMonitor's; ask callrouter instead (GET /api/v1/recordings/"
    "{call_id} lists a call's files and their state)"
)

#: A read that evaluates a text as dialplan a second time: EVAL inside EVAL
#: (``EVAL(${EVAL(${X})})`` calls whatever function X's value names, while
#: ``EVAL(${X})`` only gives the text), or EVAL_EXTEN/EVAL_SUB (a priority's
#: data, which ``DialplanExtensionAdd`` may have written). Broader than the harm,
#: and rare in a read.
_EVALUATES_TEXT: Final = re.compile(r"EVAL_(?:EXTEN|SUB)\s*\(|EVAL\s*\(.*EVAL", re.IGNORECASE)
_EVALUATES_WHY: Final = (
    "an EVAL inside EVAL (or EVAL_EXTEN, EVAL_SUB) evaluates a variable's text as "
    "dialplan: set to ${MIXMONITOR(<id>,filename)} it crashed Asterisk 22.10 "
    "(seen 2026-12-04) as reading MIXMONITOR() does; read the variable itself"
)

HAZARDS: Final = (
    Hazard("Getvar", "Variable", _READS_MIXMONITOR, _MIXMONITOR_WHY),
    # Status reads each of its comma-separated Variables as Getvar does, a
    # function among them (manager.c generate_status): the same crash.
    Hazard("Status", "Variables", _READS_MIXMONITOR, _MIXMONITOR_WHY),
    Hazard("Getvar", "Variable", _EVALUATES_TEXT, _EVALUATES_WHY),
    Hazard("Status", "Variables", _EVALUATES_TEXT, _EVALUATES_WHY),
)


#: The actions of :data:`HAZARDS` in lower case, as Asterisk takes them (any case):
#: a caller on the hot path looks here before it calls :func:`hazard`.
HAZARDOUS_ACTIONS: Final = frozenset(h.action.lower() for h in HAZARDS)


def hazard(
    action: str,
    params: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str | Sequence[str]]],
) -> str | None:
    """Why ``action`` with ``params`` (a mapping or header pairs) would crash
    Asterisk, or None. Names in any case, as Asterisk reads them (a request past
    the catalog is not canonical)."""
    lowered = action.lower()
    if lowered not in HAZARDOUS_ACTIONS:
        return None
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    for known in HAZARDS:
        if known.action.lower() != lowered:
            continue
        for header, raw in pairs:
            if header.lower() != known.header.lower():
                continue
            values = [raw] if isinstance(raw, str) else list(raw)
            if any(known.pattern.search(value) for value in values):
                return f"{known.header}: {known.why}"
    return None
