"""Phone numbers as 1C wants them: one canonical form per subscriber.

Caller IDs reach us as people and carriers write them (``8 (916) 123-45-67``,
``+7 916 1234567``, ``9161234567 доб. 12``). The cache key and the request to
1C must be the same for all of them, and short internal numbers must never
cost a round trip to 1C. Pure functions, no I/O, so the rules are cheap to test
exhaustively and the same code serves the plugin and the test double.

Russia is the default; another country is a different :class:`CountryRules`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["RUSSIA", "CountryRules", "NumberKind", "PhoneNumber", "digits_only", "normalize"]


@dataclass(frozen=True, slots=True)
class CountryRules:
    """How numbers are written in the country the PBX lives in.

    ``national_length`` is the number of digits after the country code; a bare
    number of exactly that length gets the country code in front, and a number
    of that length behind ``trunk_prefix`` has the prefix replaced by it.
    ``exit_prefixes`` are dialled before an international number (``00`` in
    most of the world, ``810`` in Russia); after one of them a bare national
    number is still taken as domestic, because that is how Russian carriers
    sometimes present ``810`` caller IDs.
    """

    country_code: str = "7"
    national_length: int = 10
    trunk_prefix: str = "8"
    exit_prefixes: tuple[str, ...] = ("810", "00")
    #: Up to this many digits a number is an internal extension: never looked up.
    internal_max_digits: int = 5
    #: E.164 bounds (without ``+``) for numbers that are looked up.
    min_digits: int = 10
    max_digits: int = 15
    #: 1C matches clients on this many trailing digits.
    match_digits: int = 10


RUSSIA = CountryRules()


class NumberKind(Enum):
    """What a caller ID turned out to be, which decides whether 1C is asked."""

    EXTERNAL = "external"
    INTERNAL = "internal"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A caller ID after normalization.

    ``number`` is the digits sent to 1C (E.164 without ``+``) for external
    numbers and the bare digits otherwise; only external numbers are looked up.
    """

    raw: str
    number: str
    kind: NumberKind
    extension: str | None = None
    match_digits: int = 10

    @property
    def lookup(self) -> bool:
        return self.kind is NumberKind.EXTERNAL

    @property
    def match_key(self) -> str:
        """The trailing digits 1C compares, the same for every spelling of a number."""
        return self.number[-self.match_digits:]


# An extension marker and what follows it. "x" only counts when it is not part
# of a word, so "ext" and "x" both work and nothing else is cut by accident.
_EXTENSION = re.compile(
    r"(?:добавочный|доб\.?|ext\.?|(?<![a-zа-я])x|#|,)\s*(?P<ext>[0-9\s-]*)",
    re.IGNORECASE,
)
# Not \d: it accepts Arabic-Indic and other digits, which 1C would not.
_NON_DIGITS = re.compile(r"[^0-9]+")


def digits_only(text: str) -> str:
    """The ASCII digits of ``text``, in order."""
    return _NON_DIGITS.sub("", text)


def normalize(raw: str, rules: CountryRules = RUSSIA) -> PhoneNumber:
    """Canonical form of one caller ID under ``rules``."""
    text = raw.strip()
    extension: str | None = None
    marker = _EXTENSION.search(text)
    if marker is not None:
        extension = digits_only(marker.group("ext")) or None
        text = text[: marker.start()]
    international = text.lstrip().startswith("+")
    digits = digits_only(text)

    def result(number: str, kind: NumberKind) -> PhoneNumber:
        return PhoneNumber(raw, number, kind, extension, rules.match_digits)

    if not digits:
        return result("", NumberKind.INVALID)
    if not international and len(digits) <= rules.internal_max_digits:
        return result(digits, NumberKind.INTERNAL)
    if not international:
        digits = _domestic(digits, rules)
    return result(digits, NumberKind.EXTERNAL if _valid(digits, rules) else NumberKind.INVALID)


def _domestic(digits: str, rules: CountryRules) -> str:
    """Rewrite a number written without ``+`` into E.164 digits."""
    national = rules.national_length
    for prefix in rules.exit_prefixes:
        rest = digits[len(prefix):]
        if digits.startswith(prefix) and len(rest) >= national:
            return rules.country_code + rest if len(rest) == national else rest
    if len(digits) == national:
        return rules.country_code + digits
    trunk = rules.trunk_prefix
    if trunk and len(digits) == len(trunk) + national and digits.startswith(trunk):
        return rules.country_code + digits[len(trunk):]
    return digits


def _valid(digits: str, rules: CountryRules) -> bool:
    if not rules.min_digits <= len(digits) <= rules.max_digits or digits.startswith("0"):
        return False
    # A one-digit country code (7, 1) owns its leading digit, so a number that
    # starts with it and has the wrong length is a typo, not a foreign number:
    # asking 1C about it would only cost a pointless search.
    code = rules.country_code
    return not (
        len(code) == 1 and digits.startswith(code) and len(digits) != 1 + rules.national_length
    )
