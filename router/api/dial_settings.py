"""The ``[api]`` keys for click-to-call and forwarding: how callrouter dials for 1C.

::

    [api]
    originate_channel = "PJSIP/{extension}"   # the manager's phone, rung first
    outbound_context = "outbound"             # where the customer's number is dialled
    dial_prefix = ""                          # digits before an outside number ("9")
    caller_id = "{extension}"                 # CallerID of the call; {extension}, {number}
    originate_timeout = 30                    # seconds the manager's phone rings
    idempotency_ttl = 86400                   # seconds an Idempotency-Key is remembered
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
    "VARIABLE_NAME",
    "DialSettings",
    "bad_value",
    "read_dialing",
]

CLICK_TO_CALL_KEYS: Final = (
    "originate_channel",
    "outbound_context",
    "dial_prefix",
    "caller_id",
    "originate_timeout",
    "idempotency_ttl",
    "variables",
)
#: A channel variable name a request or router.toml may set.
VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")


def bad_value(value: str) -> bool:
    """CR, LF and NUL end an AMI header: a value holding one could add headers."""
    return any(ch in "\r\n\0" for ch in value)


@dataclass(frozen=True, slots=True)
class DialSettings:
    originate_channel: str = "PJSIP/{extension}"
    outbound_context: str = "outbound"
    dial_prefix: str = ""
    caller_id: str = "{extension}"
    originate_timeout: float = 30.0
    idempotency_ttl: float = 86400.0
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
        originate_timeout=reader.number("originate_timeout", 30.0, 1, 600),
        idempotency_ttl=reader.number("idempotency_ttl", 86400.0, 1, 7 * 86400),
        variables=MappingProxyType(variables),
    )
