"""The ``[api]`` keys for click-to-call and forwarding: how callrouter dials for 1C.

::

    [api]
    originate_channel = "PJSIP/{extension}"   # the manager's phone, rung first
    outbound_context = "outbound"             # where the customer's number is dialled
    dial_prefix = ""                          # digits before an outside number ("9")
    caller_id = "{extension}"                 # CallerID of the call; {extension}, {number}
    originate_timeout = 30                    # seconds the manager's phone rings
    idempotency_ttl = 86400                   # seconds an Idempotency-Key is remembered
    call_variables = ["CRM_*"]                # names a request's "variables" may use
    [api.variables]                           # channel variables on every click-to-call
    CALL_SOURCE = "1c"

Read by :func:`router.api.settings.read_api`; plain data (no web framework),
so :mod:`router.config` can import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from router.dialplan import LocationPolicy

if TYPE_CHECKING:  # pragma: no cover
    from router.api.reader import Reader

__all__ = [
    "CLICK_TO_CALL_KEYS",
    "DEFAULT_CALL_VARIABLES",
    "REQUEST_VARIABLE",
    "VARIABLE_NAME",
    "DialSettings",
    "bad_value",
    "call_variable_problem",
    "read_dialing",
    "reserved_variable",
]

CLICK_TO_CALL_KEYS: Final = (
    "originate_channel",
    "outbound_context",
    "dial_prefix",
    "caller_id",
    "originate_timeout",
    "idempotency_ttl",
    "call_variables",
    "variables",
)
#: A channel variable name router.toml's ``[api.variables]`` may set.
VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: A channel variable name a request may set: a letter, then letters, digits and
#: ``_``; one or two leading underscores ask Asterisk to pass it on to the
#: channels this one creates (``_X`` one level, ``__X`` all), and name the same
#: variable: ``__CRM_DEAL`` is ``CRM_DEAL`` for every check.
REQUEST_VARIABLE: Final = re.compile(r"(_{0,2})([A-Za-z][A-Za-z0-9_]{0,63})")
#: ``[api] call_variables`` by default: the names a CRM's request may set.
DEFAULT_CALL_VARIABLES: Final = ("CRM_*",)
#: An entry of ``call_variables``: a name, a prefix ending in ``*``, or ``*``.
_ALLOWED: Final = re.compile(r"\*|[A-Za-z][A-Za-z0-9_]{0,63}\*?")

# Names no request may set, whatever call_variables says, compared without the
# leading underscores and in any case. A channel variable shadows the global of
# the same name for that channel (and, inherited, for every channel it creates):
# these are the variables callrouter's dialplan reads, and those Asterisk 22 reads
# to choose a dialplan location, run a subroutine, an application or a command,
# name a file, or that its applications set as their outcome (found in the
# module sources and core-en_US.xml). A name *containing* a word that says
# location (CONTEXT, EXTEN, PRIORITY, GOTO, GOSUB, MACRO) is refused too: a site's
# own dialplan may Goto(${SOMETHING_CONTEXT},...) from a global of that name.
_RESERVED_PREFIXES: Final = (
    ("CALLROUTER", "callrouter's dialplan reads it (the default route, DND, forwarding)"),
    ("CONNECTED_LINE_", "Asterisk runs the subroutine it names"),
    ("REDIRECTING_", "Asterisk runs the subroutine it names"),
    ("DYNAMIC_", "it enables feature codes that run applications"),
    ("FEATURE", "it sets the call's feature codes"),
    ("BRIDGE", "it sets bridge features and peers"),
    ("TOUCH_", "it names the files one-touch recording writes"),
    ("MONITOR", "it names recording files (MONITOR_EXEC runs a command)"),
    ("MIXMONITOR", "it names recording files"),
    ("TRANSFER", "it steers transfers"),
    ("BLINDTRANSFER", "Asterisk sets it on a transfer"),
    ("ATTENDEDTRANSFER", "Asterisk sets it on a transfer"),
    ("ATTENDED_TRANSFER", "it steers transfers"),
    ("FORWARD", "it steers call forwarding"),
    ("PARK", "it chooses the parking lot and where a parked call returns"),
    ("PICKUP", "it decides who may pick the call up"),
    ("SPY", "it decides who may listen in (ChanSpy)"),
    ("OUTBOUND_GROUP", "it puts the call in a group that limits calls"),
    ("LIMIT_", "it names files Dial plays"),
    ("AGI", "it steers AGI scripts"),
    ("QUEUE", "it sets queue priority and penalties"),
    ("CC_", "it steers call completion"),
    ("SIP", "it steers SIP transfers and headers"),
    ("PJSIP", "it steers SIP transfers and headers"),
    ("VM_", "it steers voicemail"),
    ("VOICEMAIL", "it steers voicemail"),
    ("DIAL", "Dial sets it as its outcome"),
    ("HANGUP", "Asterisk sets it when the call ends"),
    ("DUNDI", "it steers DUNDi lookups"),
    ("CALLERID", "it is the caller's identity"),
    ("CALLING", "it is the caller's identity"),
)
_RESERVED_WORDS: Final = ("CONTEXT", "EXTEN", "PRIORITY", "GOTO", "GOSUB", "MACRO")
_RESERVED_NAMES: Final = frozenset(
    {
        "ACCOUNTCODE",
        "ARGC",
        "BLINDTRANSFER",
        "CHANNEL",
        "DNID",
        "ENTITYID",
        "EPOCH",
        "HINT",
        "HINTNAME",
        "LANGUAGE",
        "LINKEDID",
        "RDNIS",
        "SYSTEMNAME",
        "UNIQUEID",
    }
)
_GOSUB_ARGUMENT: Final = re.compile(r"ARG[0-9]+")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")


def bad_value(value: str) -> bool:
    """CR, LF and NUL end an AMI header: a value holding one could add headers."""
    return any(ch in "\r\n\0" for ch in value)


def reserved_variable(name: str) -> str | None:
    """Why no request may set ``name`` (leading underscores and case do not
    matter), or None when it is not reserved."""
    base = name.lstrip("_").upper()
    for prefix, why in _RESERVED_PREFIXES:
        if base.startswith(prefix):
            return why
    for word in _RESERVED_WORDS:
        if word in base:
            return f"a name with {word} may choose a dialplan location"
    if base in _RESERVED_NAMES or _GOSUB_ARGUMENT.fullmatch(base) or base.endswith("STATUS"):
        return "Asterisk sets it"
    return None


def _allows(patterns: Iterable[str], name: str) -> bool:
    return any(
        pattern == "*"
        or name == pattern
        or (pattern.endswith("*") and name.startswith(pattern[:-1]))
        for pattern in patterns
    )


def call_variable_problem(name: str, settings: DialSettings) -> str | None:
    """Why a request may not set the variable ``name`` (its syntax already checked),
    or None when it may: reserved names never, router.toml's own never, and
    otherwise only names ``[api] call_variables`` allows."""
    base = name.lstrip("_")
    why = reserved_variable(base)
    if why is not None:
        return f"reserved: {why}"
    if base.upper() in {v.lstrip("_").upper() for v in settings.variables}:
        return "set by router.toml [api.variables]; a request cannot change it"
    if not _allows(settings.call_variables, base):
        allowed = ", ".join(settings.call_variables) or "none"
        return f"not in [api] call_variables ({allowed})"
    return None


@dataclass(frozen=True, slots=True)
class DialSettings:
    originate_channel: str = "PJSIP/{extension}"
    outbound_context: str = "outbound"
    dial_prefix: str = ""
    caller_id: str = "{extension}"
    originate_timeout: float = 30.0
    idempotency_ttl: float = 86400.0
    #: Names (``NAME``, ``PREFIX*``, ``*``) a request's ``variables`` may use.
    call_variables: tuple[str, ...] = DEFAULT_CALL_VARIABLES
    variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _template(reader: Reader, key: str, default: str, allowed: Iterable[str]) -> str:
    text = reader.string(key, default)
    names = set(_PLACEHOLDER.findall(text))
    unknown = names - set(allowed)
    if unknown or bad_value(text) or not text:
        known = ", ".join("{" + a + "}" for a in allowed)
        raise reader.error(
            key, f"expected text with the placeholders {known} only, no line breaks; got {text!r}"
        )
    return text


def read_dialing(reader: Reader) -> DialSettings:
    """The click-to-call keys of ``[api]``, each problem naming the key."""
    channel = _template(reader, "originate_channel", "PJSIP/{extension}", ("extension",))
    if "{extension}" not in channel:
        raise reader.error("originate_channel", "must hold {extension}: whose phone rings first")
    context = reader.string("outbound_context", "outbound")
    problem = LocationPolicy().problem("outbound_context", context)
    if problem is not None:
        raise reader.error("outbound_context", problem)
    prefix = reader.string("dial_prefix", "", empty=True)
    if not re.fullmatch(r"[0-9*#]{0,10}", prefix):
        raise reader.error("dial_prefix", f"expected up to 10 digits, * or #, got {prefix!r}")
    variables: dict[str, str] = {}
    raw = reader.values.get("variables", {})
    if not isinstance(raw, dict):
        raise reader.error("variables", 'expected a table: [api.variables] NAME = "value"')
    for name, value in raw.items():
        if not VARIABLE_NAME.fullmatch(name):
            raise reader.error("variables", f"{name!r} is not a variable name (A-Z, 0-9, _)")
        if not isinstance(value, str) or bad_value(value):
            raise reader.error("variables", f"{name}: expected text without line breaks")
        variables[name] = value
    return DialSettings(
        originate_channel=channel,
        outbound_context=context,
        dial_prefix=prefix,
        caller_id=_template(reader, "caller_id", "{extension}", ("extension", "number")),
        originate_timeout=reader.number("originate_timeout", 30.0, 1, 600, low_included=True),
        idempotency_ttl=reader.number("idempotency_ttl", 86400.0, 1, 7 * 86400),
        call_variables=_call_variables(reader),
        variables=MappingProxyType(variables),
    )


def _call_variables(reader: Reader) -> tuple[str, ...]:
    """``[api] call_variables``: names or ``PREFIX*``; none callrouter reserves."""
    patterns = reader.strings("call_variables", DEFAULT_CALL_VARIABLES)
    for pattern in patterns:
        if not _ALLOWED.fullmatch(pattern):
            raise reader.error(
                "call_variables",
                f"{pattern[:70]!r}: expected a variable name (a letter, then letters, "
                'digits, _), a prefix ending in * ("CRM_*") or "*"',
            )
        why = reserved_variable(pattern.rstrip("*")) if pattern != "*" else None
        if why is not None:
            raise reader.error(
                "call_variables", f"{pattern!r} is reserved ({why}): no request may set it"
            )
    return patterns
