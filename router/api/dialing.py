"""Untrusted extensions and numbers from API requests, made safe to dial.

Click-to-call, transfers and forwarding put a client's strings into Asterisk
(``Channel``, ``Exten``, a global the dialplan dials). Each string passes two
checks here before anything is sent: the routing's location policy
(``[router] location_pattern`` over a fixed floor that refuses ``&,;$()``
and the like) and the number plan routing normalizes with
(``[plugins.numbers]``), so ``+7 916 123-45-67`` from 1C and ``89161234567``
from a phone become the same digits. A refusal is a 400 naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from router.api.errors import ApiError
from router.builtin.numbers import NumberFunctions, NumberKind, NumberPlan, parse_number
from router.config import Config
from router.dialplan import LocationPolicy

__all__ = ["Dialing", "channel_extension"]

#: Longest number text accepted from a request, before normalizing.
_MAX_NUMBER_TEXT: Final = 64
#: What a written phone number may hold besides digits.
_NUMBER_PUNCTUATION: Final = frozenset(" +()-.")
#: ``PJSIP/101-0000001a``, ``SIP/101-1``, ``Local/101@ctx-0001;1``: the endpoint part.
_CHANNEL: Final = re.compile(r"^[A-Za-z0-9_]+/(?P<ext>[^@/;-]+)")


def channel_extension(channel: str) -> str | None:
    """The extension (endpoint) a channel name belongs to, or None."""
    found = _CHANNEL.match(channel)
    return found.group("ext") if found else None


@dataclass(frozen=True, slots=True)
class Number:
    """A number a request gave: ``number`` normalized, ``dial`` what Asterisk dials."""

    number: str
    dial: str
    internal: bool


class Dialing:
    """The checks, bound to one configuration's location policy and number plan."""

    def __init__(self, config: Config, dial_prefix: str = "") -> None:
        self.locations = LocationPolicy.from_pattern(config.router.location_pattern)
        numbers = NumberFunctions()
        # The plan routing uses: the numbers plugin reads [plugins.numbers].
        numbers.configure(config.plugins.for_plugin("numbers"), config)
        self.plan: NumberPlan = numbers.plan
        self.dial_prefix = dial_prefix

    def extension(self, value: object, field: str) -> str:
        """A client's extension: a string the location policy accepts, else 400."""
        if not isinstance(value, str):
            raise ApiError(
                400, f"{field}: expected an extension as a string, got {_kind(value)}", field=field
            )
        problem = self.locations.problem(field, value)
        if problem is not None:
            raise ApiError(400, problem, field=field)
        return value

    def internal(self, name: str) -> bool:
        """Whether a channel's endpoint name is an extension of this PBX under the
        number plan (``101``), not a trunk (``pstn``) or an outside number."""
        return parse_number(name, self.plan).kind is NumberKind.INTERNAL

    def number(self, value: object, field: str) -> Number:
        """A client's phone number, normalized by routing's plan; 400 if it is none.

        An outside number is dialled behind ``[api] dial_prefix``; an internal
        one (up to ``internal_max_length`` digits) as it is.
        """
        if not isinstance(value, str):
            raise ApiError(
                400,
                f"{field}: expected a phone number as a string, got {_kind(value)}",
                field=field,
            )
        if len(value) > _MAX_NUMBER_TEXT or not all(
            ch.isdecimal() or ch in _NUMBER_PUNCTUATION for ch in value
        ):
            # Junk around digits is refused, not stripped: "102&Local/1@x"
            # must not quietly become a call to 1021.
            raise ApiError(
                400,
                f"{field}: a phone number is digits with spaces and + ( ) - . only, "
                f"at most {_MAX_NUMBER_TEXT} characters",
                field=field,
            )
        parsed = parse_number(value, self.plan)
        if parsed.kind is NumberKind.INVALID:
            raise ApiError(
                400,
                f"{field}: {value[:_MAX_NUMBER_TEXT]!r} is not a phone number under the "
                "number plan ([plugins.numbers])",
                field=field,
            )
        internal = parsed.kind is NumberKind.INTERNAL
        dial = parsed.number if internal else self.dial_prefix + parsed.number
        problem = self.locations.problem(field, dial)
        if problem is not None:
            raise ApiError(400, problem, field=field)
        return Number(parsed.number, dial, internal)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
