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
evaluates a variable's text as dialplan, which calls it with no ``MIXMONITOR``
in the request: ``EVAL`` inside ``EVAL``, a variable's value taken as a name
(``EVAL(${${X}})``, X set to ``MIXMONITOR(<id>,filename)``) or as an
expression (``EVAL($[${X}])``), 2026-12-04 all.

Text Asterisk substitutes as dialplan on the recorded channel crashes it the
same way (2026-12-04 each): async AGI's ``AGI`` action (``GET VARIABLE
MIXMONITOR(...)``, ``GET FULL VARIABLE ${MIXMONITOR(...)}`` or
``${EVAL(${X})}``), a priority ``DialplanExtensionAdd`` writes and a
``Redirect`` then runs, and ``MixMonitor``'s ``Command`` (its ``^{...}`` is
``${...}``, substituted as the MixMonitor starts; ``File`` and ``Options`` reach
it through a comma). There one substitution is already done, so any ``EVAL``,
any ``$[...]``, a ``${`` inside another or inside a function's parentheses is
refused. A blocklist cannot see every way (the admin's dialplan can read the
function too): it refuses those an AMI request alone can take.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["HAZARDOUS_ACTIONS", "HAZARDS", "Hazard", "hazard"]


@dataclass(frozen=True, slots=True)
class Hazard:
    """One request shape that crashes Asterisk: ``action``'s ``header`` for which
    ``matches`` is true."""

    action: str
    header: str
    matches: Callable[[str], bool]
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

#: EVAL_EXTEN/EVAL_SUB (a priority's data, which ``DialplanExtensionAdd`` may have
#: written) or EVAL inside EVAL (``EVAL(${EVAL(${X})})`` calls whatever function
#: X's value names, while ``EVAL(${X})`` only gives the text).
_EVAL_TWICE: Final = re.compile(r"EVAL_(?:EXTEN|SUB)\s*\(|EVAL\s*\(.*EVAL", re.IGNORECASE)
#: Where substitution starts: ``${`` (a variable or function) or ``$[`` (an
#: expression, which calls a function its text names: ``$[${X}]``).
_SUBSTITUTES: Final = re.compile(r"\$[{\[]")
#: The one read with a ``$`` that evaluates no value: EVAL of plain variables
#: (``EVAL(${X})`` gives X's text, or ``${X:0:4}`` a part of it) and literal text.
_PLAIN_EVAL: Final = re.compile(
    r"\s*EVAL\s*\((?:[^$()]|\$\{\w+(?::-?\d+){0,2}\})*\)\s*", re.IGNORECASE
)
_EVALUATES_WHY: Final = (
    "an EVAL inside EVAL (or EVAL_EXTEN, EVAL_SUB, or a ${ or $[ anywhere but in "
    "EVAL of plain variables such as EVAL(${X})) evaluates a variable's text as "
    "dialplan: set to ${MIXMONITOR(<id>,filename)}, or to MIXMONITOR(<id>,filename) "
    "read as EVAL(${${X}}) or EVAL($[${X}]), it crashed Asterisk 22.10 "
    "(seen 2026-12-04) as reading MIXMONITOR() does; read the variable itself"
)

#: Dialplan text after one substitution: any EVAL, an expression, a ``${`` inside
#: another (a value as a name: ``${${X}}``) or inside a function's parentheses
#: (CUT, FIELDQTY, IMPORT... read ``${<their argument>}``).
_EVALUATES_AGAIN: Final = re.compile(r"EVAL\w*\s*\(|\$\[|\$\{[^}]*\$\{|\([^)]*\$\{", re.IGNORECASE)
_DIALPLAN_WHY: Final = (
    "Asterisk substitutes this text as dialplan on the channel, so an EVAL, a $[...] "
    "or a ${ inside ${...} or inside a function's parentheses evaluates a variable's "
    "text: set to ${MIXMONITOR(<id>,filename)} it crashed Asterisk 22.10 (seen "
    "2026-12-04) as reading MIXMONITOR() does; use plain ${VARIABLE}s"
)


def _items(text: str) -> Iterator[str]:
    """``Status``'s comma-separated ``Variables``, a comma inside parentheses kept,
    as Asterisk splits them (an item it would split otherwise is then refused whole:
    it matches no plain shape)."""
    depth = 0
    start = 0
    for at, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            yield text[start:at]
            start = at + 1
    yield text[start:]


def _evaluates_in_read(variables: str) -> bool:
    """True when a Getvar or Status read may evaluate a value's text as dialplan:
    Asterisk substitutes nothing in it but what a function (EVAL, CUT...) does."""
    if _EVAL_TWICE.search(variables):
        return True
    return any(
        _SUBSTITUTES.search(item) is not None and _PLAIN_EVAL.fullmatch(item) is None
        for item in _items(variables)
    )


def _as_dialplan(text: str) -> str:
    """MixMonitor's Command as substituted: each ``^{`` becomes ``${`` first."""
    return text.replace("^{", "${")


def _reads_mixmonitor(text: str) -> bool:
    return _READS_MIXMONITOR.search(text) is not None


def _evaluates_again(text: str) -> bool:
    return _EVALUATES_AGAIN.search(text) is not None


def _mixmonitor_reads_mixmonitor(text: str) -> bool:
    return _reads_mixmonitor(_as_dialplan(text))


def _mixmonitor_evaluates_again(text: str) -> bool:
    return _evaluates_again(_as_dialplan(text))


HAZARDS: Final = (
    Hazard("Getvar", "Variable", _reads_mixmonitor, _MIXMONITOR_WHY),
    # Status reads each of its comma-separated Variables as Getvar does, a
    # function among them (manager.c generate_status): the same crash.
    Hazard("Status", "Variables", _reads_mixmonitor, _MIXMONITOR_WHY),
    Hazard("Getvar", "Variable", _evaluates_in_read, _EVALUATES_WHY),
    Hazard("Status", "Variables", _evaluates_in_read, _EVALUATES_WHY),
    # Async AGI (res_agi): GET VARIABLE reads as Getvar does, GET FULL VARIABLE
    # substitutes its text; one check over the whole command covers both.
    Hazard("AGI", "Command", _reads_mixmonitor, _MIXMONITOR_WHY),
    Hazard("AGI", "Command", _evaluates_again, _DIALPLAN_WHY),
    # The priority's data is substituted when a channel runs it (a Redirect there).
    Hazard("DialplanExtensionAdd", "ApplicationData", _reads_mixmonitor, _MIXMONITOR_WHY),
    Hazard("DialplanExtensionAdd", "ApplicationData", _evaluates_again, _DIALPLAN_WHY),
    # app_mixmonitor joins File, Options and Command with commas and substitutes
    # the third field as the MixMonitor starts on the channel.
    *(
        Hazard("MixMonitor", header, check, why)
        for header in ("Command", "File", "Options")
        for check, why in (
            (_mixmonitor_reads_mixmonitor, _MIXMONITOR_WHY),
            (_mixmonitor_evaluates_again, _DIALPLAN_WHY),
        )
    ),
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
            if any(known.matches(value) for value in values):
                return f"{known.header}: {known.why}"
    return None
