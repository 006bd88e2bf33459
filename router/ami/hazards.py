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
refused. The MixMonitor application substitutes its command so however it is
started (an ``AGI`` ``EXEC MixMonitor``, a priority ``DialplanExtensionAdd``
writes): there ``^{`` counts as ``${`` too. ``Exec`` and ``TryExec`` substitute
their argument again: a priority running one (or MixMonitor) evaluates even a
plain ``${X}`` twice, so any substitution there is refused, and ``Originate``'s
``Data`` for one of them (or MixMonitor) is checked as AGI's command is
(``IMPORT(<channel>,MIXMONITOR(...))`` reads the recorded channel from another),
2026-12-04 all. A blocklist cannot see every way (the admin's dialplan can read
the function too): it refuses those an AMI request alone can take.

``Filter``'s ``MatchCriteria`` with an option ``name``, ``header`` or ``method``
and no ``(`` (``MatchCriteria: name``) is a segfault in ``manager_add_filter``,
which reads through the NULL ``strstr(option, "(")`` answers (2026-12-05, for a
user with ``write = system``); the same line in manager.conf kills Asterisk at
its next reload (:func:`filter_options_crash`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["HAZARDOUS_ACTIONS", "HAZARDS", "Hazard", "filter_options_crash", "hazard"]


@dataclass(frozen=True, slots=True)
class Hazard:
    """One request shape that crashes Asterisk: ``action``'s ``header`` for which
    ``matches`` is true; with ``application``, only when the action's
    ``Application`` header names one of these (lower case)."""

    action: str
    header: str
    matches: Callable[[str], bool]
    why: str
    application: frozenset[str] | None = None


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


#: Applications that substitute their argument themselves, after the dialplan did:
#: Exec and TryExec (app_exec), MixMonitor (its command, ``^{`` as ``${``).
#: ExecIf does not (tried 2026-12-04).
_SUBSTITUTING_APPS: Final = frozenset({"exec", "tryexec", "mixmonitor"})
#: Any substitution, ``^{`` included: in a priority that runs one of those, a
#: plain ``${X}`` is substituted, then X's value is, as dialplan.
_ANY_SUBSTITUTION: Final = re.compile(r"[$^][{\[]")
_TWICE_WHY: Final = (
    "a priority running Exec, TryExec or MixMonitor substitutes its data twice (the "
    "dialplan, then the application), so any ${...}, $[...] or ^{...} there evaluates a "
    "variable's text: set to ${MIXMONITOR(<id>,filename)} it crashed Asterisk 22.10 "
    "(seen 2026-12-04) as reading MIXMONITOR() does; write the values themselves"
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


def _substitutes_at_all(text: str) -> bool:
    return _ANY_SUBSTITUTION.search(text) is not None


def _mixmonitor_reads_mixmonitor(text: str) -> bool:
    return _reads_mixmonitor(_as_dialplan(text))


#: manager_add_filter's options, by the prefix it compares, in its order.
_FILTER_OPTIONS: Final = ("action", "name", "header", "method")
_FILTER_METHODS: Final = ("regex", "exact", "starts_with", "ends_with", "contains", "none")
_C_SPACE: Final = " \t\n\v\f\r"
_FILTER_WHY: Final = (
    "an option name, header or method with no '(' crashes Asterisk 22 (a segfault in "
    "manager_add_filter, seen 2026-12-05); write name(Event), header(Header), method(exact)"
)


def filter_options_crash(options: str) -> bool:
    """Whether ``manager_add_filter`` (main/manager.c, Asterisk 22) dies of an
    ``eventfilter(`` line's text after its first ``(``: it takes the options
    one by one (``strtok_r`` at spaces, commas and ``)``), stops at the first it
    refuses, and reads ``name``, ``header`` and ``method`` through the ``(``
    they must have, unchecked (``action`` alone is checked)."""
    text = options.strip(_C_SPACE)
    if not text.endswith(")"):
        return False  # refused before any option is read
    for option in re.split(r"[ ,)]+", text):
        if not option:
            continue
        name = next((o for o in _FILTER_OPTIONS if option.startswith(o)), None)
        paren = option.find("(")
        if name is None or (name == "action" and paren < 0):
            return False  # refused: an unknown option, an action with no value
        if paren < 0:
            return True
        given = option[paren + 1 :].strip(_C_SPACE)
        if not given or (name == "action" and given not in ("include", "exclude")):
            return False
        if name == "method" and given not in _FILTER_METHODS:
            return False
    return False


def _filter_crashes(criteria: str) -> bool:
    """``Filter``'s ``MatchCriteria``, which Asterisk wraps in ``eventfilter(...)``."""
    return bool(criteria) and filter_options_crash(criteria + ")")


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
    # EXEC MixMonitor substitutes its command's ^{...} (as the action does).
    Hazard("AGI", "Command", _reads_mixmonitor, _MIXMONITOR_WHY),
    Hazard("AGI", "Command", _mixmonitor_evaluates_again, _DIALPLAN_WHY),
    # The priority's data is substituted when a channel runs it (a Redirect there),
    # and again by Exec, TryExec or MixMonitor.
    Hazard("DialplanExtensionAdd", "ApplicationData", _reads_mixmonitor, _MIXMONITOR_WHY),
    Hazard("DialplanExtensionAdd", "ApplicationData", _mixmonitor_evaluates_again, _DIALPLAN_WHY),
    Hazard(
        "DialplanExtensionAdd",
        "ApplicationData",
        _substitutes_at_all,
        _TWICE_WHY,
        _SUBSTITUTING_APPS,
    ),
    # Originate hands Data to its application as it is: substituted once only
    # by one of those (IMPORT there reads the recorded channel from the new one).
    Hazard("Originate", "Data", _reads_mixmonitor, _MIXMONITOR_WHY, _SUBSTITUTING_APPS),
    Hazard("Originate", "Data", _mixmonitor_evaluates_again, _DIALPLAN_WHY, _SUBSTITUTING_APPS),
    Hazard("Filter", "MatchCriteria", _filter_crashes, _FILTER_WHY),
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
#: Each action's hazards (lower case), so a request looks at its own only, and
#: the headers they read (an ``Originate`` is mostly headers none reads).
_BY_ACTION: Final = {
    name: tuple(h for h in HAZARDS if h.action.lower() == name) for name in HAZARDOUS_ACTIONS
}
_HEADERS: Final = {
    name: frozenset(h.header.lower() for h in known)
    | ({"application"} if any(h.application is not None for h in known) else set())
    for name, known in _BY_ACTION.items()
}


def hazard(
    action: str,
    params: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str | Sequence[str]]],
) -> str | None:
    """Why ``action`` with ``params`` (a mapping or header pairs) would crash
    Asterisk, or None. Names in any case, as Asterisk reads them (a request past
    the catalog is not canonical)."""
    lowered = action.lower()
    known_here = _BY_ACTION.get(lowered)
    if known_here is None:
        return None
    read = _HEADERS[lowered]
    by_header: dict[str, list[str]] = {}
    for header, raw in params.items() if isinstance(params, Mapping) else params:
        key = header.lower()
        if key in read:
            by_header.setdefault(key, []).extend([raw] if isinstance(raw, str) else raw)
    applications = {value.strip().lower() for value in by_header.get("application", ())}
    for known in known_here:
        if known.application is not None and not applications & known.application:
            continue
        if any(known.matches(value) for value in by_header.get(known.header.lower(), ())):
            return f"{known.header}: {known.why}"
    return None
