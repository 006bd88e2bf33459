"""The contract with the dialplan: which values may name a location, and which
fields of the request event can be believed.

Two kinds of text reach Asterisk from callrouter and come from people who are
not the administrator: a rule's template filled in from a lookup (a 1C
manager card, a directory) and the caller's own number and name (whatever the
SIP ``From`` says). A location (``context``, ``exten``) built from such a value
ends up in ``Dial(PJSIP/${EXTEN})`` of the shipped dialplan, where ``&`` adds
a second channel and ``,`` adds Dial options; so every location is held to a
strict pattern before any action is sent (:class:`LocationPolicy`).

The request ``UserEvent`` mixes the channel snapshot Asterisk writes itself
(``Channel``, ``CallerIDNum``, ``Exten``, ...) with the keys the dialplan passes
as application arguments (``DID``, ``Caller``). Asterisk splits those arguments
on commas and keeps the last value of a repeated key, so an unfiltered caller
number such as ``7916...,DID: 7495...`` rewrites ``DID``. The snapshot comes
first and is not the caller's to write: :func:`request_did` and
:func:`request_caller` read it, and only fall back to the dialplan's keys when
the snapshot cannot carry the value.

Sans-I/O: imports nothing from the network side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "DEFAULT_LOCATION_PATTERN",
    "LOCATION_PARAMS",
    "LocationPolicy",
    "location_problem",
    "request_caller",
    "request_did",
    "shown",
]

#: Letters, digits and ``*#+_-``, 1 to 80 characters: every extension and
#: context name a sane dialplan uses, and nothing Dial or Goto would parse.
DEFAULT_LOCATION_PATTERN: Final = r"[A-Za-z0-9*#+_-]{1,80}"

#: Never allowed, whatever ``location_pattern`` says: characters Asterisk
#: applications treat as syntax (argument and channel separators, variable and
#: expression markers, quoting), whitespace, control and non-ASCII characters.
_NEVER: Final = frozenset(",&|;:()[]{}$^\"'`\\@/<>=!?%~")
_MAX_SHOWN: Final = 40


def shown(value: str) -> str:
    """A value fit for a log line: escaped by ``repr``, long ones cut.

    The value is untrusted: raw, it could carry terminal escape sequences or
    megabytes into the decision log.
    """
    if len(value) <= _MAX_SHOWN:
        return repr(value)
    return f"{value[:_MAX_SHOWN]!r}... ({len(value)} characters)"


@dataclass(frozen=True, slots=True)
class LocationPolicy:
    """Which strings may become a dialplan ``context`` or ``exten``.

    ``pattern`` must match the whole value (``[router] location_pattern`` in
    ``router.toml``). On top of it a fixed floor refuses the characters
    Asterisk parses as syntax, so widening the pattern (to allow ``.``, say)
    can never let ``&`` or ``,`` through.
    """

    pattern: str = DEFAULT_LOCATION_PATTERN
    _compiled: re.Pattern[str] | None = None

    @classmethod
    def from_pattern(cls, pattern: str) -> LocationPolicy:
        """Compiles ``pattern``; ``re.error`` for a bad one (config names the key)."""
        return cls(pattern, re.compile(pattern))

    def problem(self, name: str, value: str) -> str | None:
        """Why ``value`` cannot be the location parameter ``name``, or None if it can."""
        compiled = self._compiled or _DEFAULT
        floor = not value or any(
            ch in _NEVER or not ch.isascii() or not ch.isprintable() or ch.isspace()
            for ch in value)
        if floor or compiled.fullmatch(value) is None:
            allowed = ("letters, digits and *#+_-, 1 to 80 characters"
                       if self.pattern == DEFAULT_LOCATION_PATTERN
                       else f"location_pattern {self.pattern!r}")
            return f"{name} {shown(value)} is not a safe dialplan location ({allowed})"
        return None


_DEFAULT: Final = re.compile(DEFAULT_LOCATION_PATTERN)

#: Parameter names (any case) that are a dialplan location in the built-in
#: actions and in the headers of an ``ami`` action.
LOCATION_PARAMS: Final = frozenset({"context", "exten"})


def location_problem(params: Mapping[str, object], policy: LocationPolicy, *,
                     templates: bool = True) -> str | None:
    """Why the first refused location parameter in ``params`` is refused, or None.

    ``templates=False`` skips values still holding ``{`` (load time: such a
    value is known only when the rule runs, and is checked then).
    """
    for key, value in params.items():
        if value is None or key.lower() not in LOCATION_PARAMS:
            continue
        text = str(value)
        if not templates and "{" in text:
            continue
        problem = policy.problem(key, text)
        if problem is not None:
            return problem
    return None


class _Fields(Protocol):
    def get(self, key: str, default: str | None = None) -> str | None: ...


def request_did(event: _Fields) -> str:
    """The number dialled, from the channel snapshot's ``Exten``.

    ``Message.get`` returns the first occurrence of a key, and Asterisk writes
    the snapshot before the dialplan's keys, so an ``Exten`` smuggled in
    through the caller ID cannot win. The ``DID`` key is used only when the
    snapshot has no real extension (a dialplan that announces from ``s``);
    such a dialplan must ``FILTER()`` what it passes (docs/asterisk.md).
    """
    exten = event.get("Exten") or ""
    if exten and exten != "s":
        return exten
    return event.get("DID") or exten


def request_caller(event: _Fields) -> str:
    """The caller's number, from the channel snapshot's ``CallerIDNum``.

    The ``Caller`` key of the shipped dialplan is filtered to digits and
    ``+``, which would lose what people write after the number (``доб. 12``);
    the snapshot keeps the number as the channel has it.
    """
    number = event.get("CallerIDNum") or ""
    if number and number != "<unknown>":
        return number
    return event.get("Caller") or ""
