"""Phone number helpers: the same normalization for lists, callers and rules.

1C, the PBX and administrators write one number as ``8 (916) 123-45-67``,
``+79161234567`` or ``9161234567``; owner lookups and blacklists only work if
all of them become one form. The default plan is Russia's (country code 7,
trunk prefix 8, international prefix 810); another country passes its own
:class:`NumberPlan`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from router.errors import ConfigError
from router.hookspecs import hookimpl
from router.rules.registry import Registry

__all__ = ["NumberPlan", "digits", "is_internal", "last10", "normalize", "register"]


@dataclass(frozen=True, slots=True)
class NumberPlan:
    country_code: str = "7"
    trunk_prefix: str = "8"
    international_prefix: str = "810"
    national_length: int = 10
    internal_max_length: int = 5


DEFAULT_PLAN = NumberPlan()

# An extension written after the number ("доб. 12", "ext 12", "x12", "#12",
# ",12") is not part of it: without this cut its digits would be glued on.
_EXTENSION = re.compile(r"(?:доб|ext|(?<![a-zа-яё])x|#|,)", re.IGNORECASE)


def digits(text: object) -> str:
    """Only the digits: what is left of a number once people stop formatting it."""
    return "" if text is None else "".join(ch for ch in str(text) if ch.isdigit())


def normalize(number: object, plan: NumberPlan = DEFAULT_PLAN) -> str:
    """Full international digits without ``+``; internal numbers stay as they are."""
    raw = "" if number is None else str(number).strip()
    marker = _EXTENSION.search(raw)
    if marker is not None:
        raw = raw[: marker.start()].strip()
    only = digits(raw)
    if not only or len(only) <= plan.internal_max_length or raw.startswith("+"):
        return only
    intl = plan.international_prefix
    if intl and only.startswith(intl) and len(only) > len(intl) + plan.national_length:
        return only[len(intl):]
    if len(only) == plan.national_length:
        return plan.country_code + only
    trunk = plan.trunk_prefix
    if trunk and len(only) == plan.national_length + len(trunk) and only.startswith(trunk):
        return plan.country_code + only[len(trunk):]
    return only


def last10(number: object) -> str:
    """The last ten digits: how MIKO-style integrations key numbers in 1C."""
    return digits(number)[-10:]


def is_internal(number: object, plan: NumberPlan = DEFAULT_PLAN) -> bool:
    """Short numbers are extensions of this PBX, not outside callers."""
    return 0 < len(digits(number)) <= plan.internal_max_length


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


class NumberFunctions:
    """The plugin: one per engine, each with its own number plan."""

    def __init__(self) -> None:
        self.plan = DEFAULT_PLAN

    @hookimpl
    def callrouter_configure(self, settings: Mapping[str, object]) -> None:
        """``[plugins.numbers]``: country_code, trunk_prefix, international_prefix, ..."""
        known = {f.name: f.type for f in fields(NumberPlan)}
        values: dict[str, object] = {}
        for key, value in settings.items():
            if key not in known:
                raise ConfigError(f"[plugins.numbers] unknown key {key!r}; "
                                  f"known: {', '.join(sorted(known))}")
            values[key] = int(str(value)) if key.endswith("length") else str(value)
        self.plan = NumberPlan(**values)  # type: ignore[arg-type]

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        register(registry, self.plan)


def make_plugin() -> NumberFunctions:
    return NumberFunctions()
