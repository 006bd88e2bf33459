"""Phone numbers as 1C wants them: one canonical form per subscriber.

Caller IDs reach us as people and carriers write them (``8 (916) 123-45-67``,
``+7 916 1234567``, ``9161234567 доб. 12``, fullwidth or Arabic-Indic
digits). The cache key and the request to 1C must be the same for all of
them, and the same as the key callrouter's own rules and lists use: so the
normalization itself is callrouter's (:func:`router.parse_number`), and this
module keeps only what is 1C's: the country settings as ``[plugins.onec]``
spells them, whether a number is worth a round trip to 1C, and the trailing
digits 1C matches clients on.

Russia is the default; another country is a different :class:`CountryRules`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from router import NumberKind, NumberPlan, number_digits, parse_number

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

    @property
    def plan(self) -> NumberPlan:
        """The same rules as callrouter's number plan, which does the normalizing."""
        return _plan(self)


RUSSIA = CountryRules()


@functools.lru_cache(maxsize=32)
def _plan(rules: CountryRules) -> NumberPlan:
    return NumberPlan(
        country_code=rules.country_code,
        trunk_prefix=rules.trunk_prefix,
        exit_prefixes=rules.exit_prefixes,
        national_length=rules.national_length,
        internal_max_length=rules.internal_max_digits,
        min_digits=rules.min_digits,
        max_digits=rules.max_digits,
    )


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

    @property
    def lookup(self) -> bool:
        return self.kind is NumberKind.EXTERNAL


def digits_only(text: str) -> str:
    """The digits of ``text`` as ASCII, in order (any Unicode decimal digit counts)."""
    return number_digits(text)


def normalize(raw: str, rules: CountryRules = RUSSIA) -> PhoneNumber:
    """One caller ID under ``rules``, normalized by callrouter's own number plan so that 1C
    is sent the number the rules and lists see."""
    parsed = parse_number(raw, rules.plan)
    return PhoneNumber(raw, parsed.number, parsed.kind, parsed.extension)
