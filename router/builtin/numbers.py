"""Phone numbers: the one normalization the core, lists and plugins share.

1C, the PBX, carriers and administrators write one number as ``8 (916)
123-45-67``, ``+79161234567``, ``810 7 916 ...`` or ``9161234567 доб. 12``;
owner lookups and blacklists only work if all of them become one form. The
caller's number is set by whoever places the call, and real SIP carries
fullwidth (``８９１６…``) and Arabic-Indic (``٩١٦…``) digits: they are read as
the ASCII digits they stand for here, in one place, so a blacklist entry, the
rule's ``caller.number`` and the 1C plugin's key can never disagree.

The default plan is Russia's (country code 7, trunk prefix 8, exit prefixes
810 and 00); another country passes its own :class:`NumberPlan`. The plan is
exposed in callrouter's public API (``router.parse_number``,
``router.normalize_number``, ``router.NumberPlan``) for plugins.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING

from router.callerid import was_cut
from router.config import Config, SettingsReader
from router.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from router.rules.registry import Registry

__all__ = [
    "DEFAULT_PLAN",
    "SETTINGS",
    "NumberKind",
    "NumberPlan",
    "ParsedNumber",
    "digits",
    "is_internal",
    "last10",
    "normalize",
    "normalize_number",
    "number_digits",
    "parse_number",
    "register",
]


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """How numbers are written in the country the PBX lives in.

    ``national_length`` is the number of digits after the country code: a bare
    number of that length gets the country code in front, and one of that
    length behind ``trunk_prefix`` has the prefix replaced by it.
    ``exit_prefixes`` are dialled before an international number (``00`` in
    most of the world, ``810`` in Russia); after one of them a bare national
    number is still taken as domestic, as Russian carriers present ``810``
    caller IDs. Up to ``internal_max_length`` digits a number is an extension
    of this PBX. ``min_digits``/``max_digits`` bound a plausible outside number
    (E.164 without ``+``).
    """

    country_code: str = "7"
    trunk_prefix: str = "8"
    exit_prefixes: tuple[str, ...] = ("810", "00")
    national_length: int = 10
    internal_max_length: int = 5
    min_digits: int = 10
    max_digits: int = 15


DEFAULT_PLAN = NumberPlan()
#: The keys of ``[plugins.numbers]`` (docs/reference/config.md): the plan's
#: fields, and ``international_prefix``, the older spelling of one exit prefix.
SETTINGS: tuple[str, ...] = (*(f.name for f in fields(NumberPlan)), "international_prefix")


class NumberKind(Enum):
    """What a number turned out to be (plugins decide from it whether to look it up)."""

    EXTERNAL = "external"
    INTERNAL = "internal"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class ParsedNumber:
    """A number after normalization: ``number`` is ASCII digits, E.164 without ``+``
    for outside numbers and the bare digits otherwise; ``extension`` what followed
    an extension marker (``доб. 12``)."""

    raw: str
    number: str
    kind: NumberKind
    extension: str | None = None


# An extension marker and what follows it. "x" only counts when it is not part
# of a word, so "ext" and "x" both work and nothing else is cut by accident.
_EXTENSION = re.compile(
    r"(?:добавочный|доб\.?|ext\.?|(?<![a-zа-яё])x|#|,)\s*(?P<ext>[\d\s-]*)",
    re.IGNORECASE,
)
_NON_ASCII_DIGITS = re.compile(r"[^0-9]+")
_PLUS = ("+", "\uff0b")  # '+' and its fullwidth form


def digits(text: object) -> str:
    """The digits of ``text`` as ASCII, in order; everything else is dropped.

    Every Unicode decimal digit (fullwidth, Arabic-Indic, Devanagari, ...) is
    read as the ASCII digit it stands for; other "digits" such as superscripts
    (``²``, which ``str.isdigit`` accepts) are not digits of a phone number.
    A text too long for a number, or cut (:func:`router.callerid.was_cut`),
    has none, as :func:`parse_number` reads it: the digits of a cut caller
    ID's start are another number (``last10`` of ``"7916123456 LLL…"`` is a
    real mobile), which must not match a rule as if it were the caller's.
    """
    if text is None:
        return ""
    value = str(text)
    if was_cut(value):
        return ""
    return _digits(value)


def _digits(value: str) -> str:
    """:func:`digits` of a text known not to be cut."""
    if value.isascii():
        return _NON_ASCII_DIGITS.sub("", value)
    return "".join(str(unicodedata.decimal(ch)) for ch in value if ch.isdecimal())


def parse_number(number: object, plan: NumberPlan = DEFAULT_PLAN) -> ParsedNumber:
    """The canonical form of one number under ``plan``, with its kind and extension."""
    raw = "" if number is None else str(number)
    value, kind, extension = _parse(raw, plan)
    return ParsedNumber(raw, value, kind, extension)


def normalize(number: object, plan: NumberPlan = DEFAULT_PLAN) -> str:
    """Full international digits without ``+``; internal numbers stay as they are."""
    return _parse("" if number is None else str(number), plan)[0]


#: The names under which the public API exports :func:`normalize` and :func:`digits`.
normalize_number = normalize
number_digits = digits

# What a number without an extension marker is written with: the common case
# skips the marker search (this runs twice per call on the routing path).
_PLAIN = re.compile(r"[0-9 ()+\-.]*")


def _parse(raw: str, plan: NumberPlan) -> tuple[str, NumberKind, str | None]:
    # Memoized: a call's caller and DID are normalized by the context, the 1C
    # cache and the directory (five times a call on the routing path), and a
    # caller calls again. Bounded in entries and, since numbers come from
    # callers, in the length of what is kept (MAX_NUMBER); the answer is immutable.
    if was_cut(raw):
        # Over router.callerid.MAX_NUMBER characters no text is a phone number
        # (E.164 has 15 digits), and callrouter cuts such a caller ID to that
        # length, ending in "…": the digits of its start ("7916123456" of a
        # name-sized "7916123456 LLL...7") are another number, which must not
        # match a rule, a list or 1C's lookup as if it were the caller's.
        return "", NumberKind.INVALID, None
    return _parse_memo(raw, plan)


def _parse_number(raw: str, plan: NumberPlan) -> tuple[str, NumberKind, str | None]:
    text = raw.strip()
    extension: str | None = None
    if not (text.isascii() and _PLAIN.fullmatch(text)):
        marker = _EXTENSION.search(text)
        if marker is not None:
            extension = _digits(marker.group("ext")) or None
            text = text[: marker.start()].strip()
    international = text.startswith(_PLUS)
    only = _digits(text)
    if not only:
        return "", NumberKind.INVALID, extension
    if not international and len(only) <= plan.internal_max_length:
        return only, NumberKind.INTERNAL, extension
    if not international:
        only = _domestic(only, plan)
    return only, (NumberKind.EXTERNAL if _valid(only, plan) else NumberKind.INVALID), extension


_parse_memo = functools.lru_cache(maxsize=4096)(_parse_number)


def _domestic(only: str, plan: NumberPlan) -> str:
    """Rewrite a number written without ``+`` into E.164 digits."""
    national = plan.national_length
    for prefix in plan.exit_prefixes:
        rest = only[len(prefix) :]
        if prefix and only.startswith(prefix) and len(rest) >= national:
            return plan.country_code + rest if len(rest) == national else rest
    if len(only) == national:
        return plan.country_code + only
    trunk = plan.trunk_prefix
    if trunk and len(only) == len(trunk) + national and only.startswith(trunk):
        return plan.country_code + only[len(trunk) :]
    return only


def _valid(only: str, plan: NumberPlan) -> bool:
    if not plan.min_digits <= len(only) <= plan.max_digits or only.startswith("0"):
        return False
    # A one-digit country code (7, 1) owns its leading digit, so a number that
    # starts with it and has the wrong length is a typo, not a foreign number.
    code = plan.country_code
    return not (len(code) == 1 and only.startswith(code) and len(only) != 1 + plan.national_length)


def last10(number: object) -> str:
    """The last ten digits: how MIKO-style integrations key numbers in 1C;
    ``""`` for a text too long for a number, or cut, as :func:`digits`."""
    return digits(number)[-10:]


def is_internal(number: object, plan: NumberPlan = DEFAULT_PLAN) -> bool:
    """Short numbers are extensions of this PBX, not outside callers; a text
    too long for a number, or cut (:func:`router.callerid.was_cut`), is neither."""
    if number is None:
        return False
    text = str(number)
    return not was_cut(text) and 0 < len(digits(text)) <= plan.internal_max_length


def register(registry: Registry, plan: NumberPlan = DEFAULT_PLAN) -> None:
    """Adds the number functions bound to ``plan`` and makes it the registry's plan."""

    def normalize_(number: object) -> str:
        """Full international digits without '+': normalize("8 916 123-45-67")."""
        return normalize(number, plan)

    def is_internal_(number: object) -> bool:
        """True for an extension of this PBX (a short number)."""
        return is_internal(number, plan)

    registry.add_function("normalize", normalize_)
    registry.add_function("is_internal", is_internal_)
    registry.add_function("last10", last10)
    registry.add_function("digits", digits)
    registry.set_numbers(normalize_, is_internal_)


def _plan_value(key: str, value: object) -> object:
    """One ``[plugins.numbers]`` value, checked: ASCII digits only, lengths as
    integers; ValueError says what is wrong with it."""
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and key.endswith(("length", "digits"))
    ):
        value = int(value)  # "10" was accepted before; keep reading it
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and key in ("country_code", "trunk_prefix")
    ):
        value = str(value)
    if key in ("national_length", "internal_max_length", "min_digits", "max_digits"):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
            raise ValueError(f"expected a whole number from 0 to 20, got {value!r}")
        return value
    items = value if key == "exit_prefixes" else [value]
    if not isinstance(items, list) or not all(
        isinstance(v, str) and v.isascii() and (v.isdigit() or v == "") for v in items
    ):
        raise ValueError(f"expected digits only, got {value!r}")
    return tuple(items) if key == "exit_prefixes" else value


class NumberFunctions:
    """The plugin: one per engine, each with its own number plan."""

    def __init__(self) -> None:
        self.plan = DEFAULT_PLAN

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, object]) -> None:
        """``[plugins.numbers]``: see :meth:`configure`."""
        self.configure(settings, config)

    def configure(self, settings: Mapping[str, object], config: Config | None = None) -> None:
        """``[plugins.numbers]``: country_code, trunk_prefix, exit_prefixes, ...

        ``international_prefix`` (one prefix, the older spelling) is still read
        as ``exit_prefixes = [it]``. An error names router.toml's line when
        ``config`` (the file's) is given, as every table's errors do.
        """
        reader = SettingsReader.for_plugin("numbers", settings, config)
        known = {f.name for f in fields(NumberPlan)}
        reader.reject_unknown(sorted({*known, "international_prefix"}))
        values: dict[str, object] = {}
        for written, value in settings.items():
            old = written == "international_prefix"
            key = "exit_prefixes" if old else written
            try:
                values[key] = _plan_value(key, [value] if old else value)
            except ValueError as exc:
                raise reader.error(written, str(exc)) from None
        self.plan = NumberPlan(**values)  # type: ignore[arg-type]

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        register(registry, self.plan)


def make_plugin() -> NumberFunctions:
    return NumberFunctions()
