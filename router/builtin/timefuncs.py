"""Working hours, holidays and the calendar, in the PBX's time zone.

Functions here read the trigger's time (``Context.now``), not the wall
clock, so ``callrouter explain --at`` shows what would happen at any moment
and tests never depend on when they run.

Working-hours text: clauses separated by ``;``, each ``<days> [<ranges>]``:
``"mon-fri 09:00-13:00 14:00-19:00; sat 10:00-15:00"``. Days are ``mon``..
``sun``, ranges (``mon-fri``), lists (``mon,wed``) or ``daily``; a clause
without time ranges covers the whole day; ``22:00-06:00`` runs past midnight.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime, time, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from router.config import Config, SettingsReader
from router.dialplan import shown
from router.hookspecs import hookimpl
from router.rules.context import Context
from router.rules.registry import Registry
from router.rules.suggest import did_you_mean

__all__ = [
    "DEFAULT_TIMEZONE",
    "SETTINGS",
    "parse_hours",
    "register",
    "rules_timezone",
    "time_zone",
    "zone",
]

#: Until router.toml says otherwise (``[plugins.timefuncs] timezone``), most
#: users are in Moscow.
DEFAULT_TIMEZONE = "Europe/Moscow"
#: The keys of ``[plugins.timefuncs]`` (docs/reference/config.md).
SETTINGS: tuple[str, ...] = ("timezone",)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_IANA = " (an IANA name such as 'Europe/Moscow')"

_Range = tuple[time, time | None]  # end None means midnight (24:00)
_Clause = tuple[frozenset[int], tuple[_Range, ...]]


#: Russia's zone abbreviations, which administrators write for the zone: the
#: nearest zone *name* was a wrong hint ('MSK': did you mean 'MST', UTC-7).
_ABBREVIATIONS = {
    "MSK": "Europe/Moscow",
    "KALT": "Europe/Kaliningrad",
    "SAMT": "Europe/Samara",
    "YEKT": "Asia/Yekaterinburg",
    "OMST": "Asia/Omsk",
    "NOVT": "Asia/Novosibirsk",
    "KRAT": "Asia/Krasnoyarsk",
    "IRKT": "Asia/Irkutsk",
    "YAKT": "Asia/Yakutsk",
    "VLAT": "Asia/Vladivostok",
    "MAGT": "Asia/Magadan",
    "SAKT": "Asia/Sakhalin",
    "PETT": "Asia/Kamchatka",
}
#: Russia's zones by their offset from UTC, for a hint.
_BY_OFFSET = {
    2: "Europe/Kaliningrad",
    3: "Europe/Moscow",
    4: "Europe/Samara",
    5: "Asia/Yekaterinburg",
    6: "Asia/Omsk",
    7: "Asia/Novosibirsk",
    8: "Asia/Irkutsk",
    9: "Asia/Yakutsk",
    10: "Asia/Vladivostok",
    11: "Asia/Magadan",
    12: "Asia/Kamchatka",
}
#: "UTC+3", "GMT-5", "+03:00", "UTC+05": an offset, which no IANA name is.
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])\s*([0-9]{1,2})(?::?([0-9]{2}))?", re.IGNORECASE)


def _zone_hint(name: str) -> str:
    """What to write instead of an unknown zone name."""
    text = name.strip()
    if text.upper() in _ABBREVIATIONS:
        return f" (did you mean {_ABBREVIATIONS[text.upper()]!r}? {text!r} is an abbreviation)"
    offset = _OFFSET.fullmatch(text)
    if offset:
        sign, hours, minutes = offset.groups()
        east = int(hours) if sign == "+" else -int(hours)
        whole = minutes in (None, "00")
        if east == 0 and whole:
            return " (an offset, not a zone: write 'UTC', or a city's zone such as 'Europe/London')"
        city = _BY_OFFSET.get(east) if whole else None
        named = f"a city's zone such as {city!r}" if city else "a city's zone (Area/City)"
        # Etc/GMT-14 (UTC+14) to Etc/GMT+12 (UTC-12) exist.
        exists = whole and -12 <= east <= 14
        fixed = f", or 'Etc/GMT{-east:+d}', where the sign is reversed" if exists else ""
        return f" (an offset, not a zone: {named}{fixed})"
    if text.isascii() and text.isalpha() and text.isupper():
        # Another abbreviation: the closest name is as likely another zone's.
        return " (an abbreviation, not a zone: a city's zone such as 'Europe/Moscow')"
    # Only on the error path: the zone names are read from disk.
    return did_you_mean(name, available_timezones()) or _IANA


@lru_cache(maxsize=128)
def zone(name: str) -> tzinfo:
    """A cached ZoneInfo with a readable error for a misspelled zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # A rule file's or router.toml's text: cut, as their other values are.
        raise ValueError(f"unknown time zone {shown(name)}{_zone_hint(name)}") from None


def time_zone(name: str) -> tzinfo:
    """An IANA zone by name, as the rules' zone is read (the public API's name of
    :func:`zone`); ValueError says what to write (a misspelled name, an
    abbreviation such as 'MSK', an offset such as 'UTC+3')."""
    return zone(name)


def _days(text: str, spec: str) -> frozenset[int]:
    if text in ("daily", "*"):
        return frozenset(range(7))
    found: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        for day in (first, last) if dash else (first,):
            if day not in DAYS:
                raise ValueError(
                    f"invalid working hours {spec!r}: unknown day {day!r}"
                    f"{did_you_mean(day, (*DAYS, 'daily'))}"
                )
        start, end = DAYS.index(first), DAYS.index(last if dash else first)
        found.update(
            range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)]
        )
    return frozenset(found)


def _clock(text: str, spec: str) -> time | None:
    hours, colon, minutes = text.partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"invalid working hours {spec!r}: {text!r} is not HH:MM")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return None
    if h > 23 or m > 59:
        raise ValueError(f"invalid working hours {spec!r}: {text!r} is not a time of day")
    return time(h, m)


@lru_cache(maxsize=256)
def parse_hours(spec: str) -> tuple[_Clause, ...]:
    """Parses working-hours text once; raises ValueError naming the bad part."""
    clauses: list[_Clause] = []
    for part in spec.lower().split(";"):
        words = part.replace(",", " , ").split()
        if not words:
            continue
        # days are everything up to the first token that starts with a digit
        split = next((i for i, w in enumerate(words) if w[0].isdigit()), len(words))
        days = _days("".join(words[:split]), spec)
        ranges: list[_Range] = []
        for item in " ".join(words[split:]).replace(",", " ").split():
            start, dash, end = item.partition("-")
            if not dash:
                raise ValueError(f"invalid working hours {spec!r}: {item!r} is not HH:MM-HH:MM")
            begin = _clock(start, spec)
            ranges.append((begin or time(0), _clock(end, spec)))
        clauses.append((days, tuple(ranges) or ((time(0), None),)))
    if not clauses:
        raise ValueError(f"invalid working hours {spec!r}: empty")
    return tuple(clauses)


def _in_hours(clauses: tuple[_Clause, ...], moment: datetime) -> bool:
    day, clock = moment.weekday(), moment.time().replace(tzinfo=None)
    yesterday = (day - 1) % 7
    for days, ranges in clauses:
        for start, end in ranges:
            if end is None or start < end:
                if day in days and start <= clock and (end is None or clock < end):
                    return True
            elif (day in days and clock >= start) or (yesterday in days and clock < end):
                return True  # an overnight range, e.g. 22:00-06:00
    return False


#: Working-hours answers kept per engine (each minute's, per spec and holiday list).
_ANSWERS_KEPT = 256


def register(registry: Registry, timezone: str = DEFAULT_TIMEZONE) -> None:
    """Adds the calendar functions with ``timezone`` as their default zone."""
    default = zone(timezone)
    registry.set_timezone(default)

    def local(context: Context, tz: str | None) -> datetime:
        now = context.now if context.now.tzinfo else context.now.replace(tzinfo=default)
        return now.astimezone(zone(tz) if tz else default)

    # Answers by the minute: hours are HH:MM and holidays whole days, so every
    # call of a minute gets the same answer, and working it out (two zone
    # conversions, the holiday's date strings) was the dearest part of the
    # shipped rules' evaluation (bench: 46 us of 269 with cold caches).
    answers: dict[tuple[object, ...], bool] = {}

    def workhours(
        context: Context, spec: str, tz: str | None = None, holidays: Collection[str] | None = None
    ) -> bool:
        """True during the given working hours (and not on one of ``holidays``)."""
        now = context.now
        # The wall clock and its zone (fold: the repeated hour of a DST change).
        key: tuple[object, ...] = (spec, tz, holidays, now.tzinfo, now.fold, now.year, now.month)
        key += (now.day, now.hour, now.minute)
        try:
            found = answers.get(key)
        except TypeError:  # holidays given as an (unhashable) list: not kept
            key, found = (), None
        if found is not None:
            return found
        moment = local(context, tz)
        if holidays is not None and _is_holiday(moment, holidays):
            answer = False
        else:
            answer = _in_hours(parse_hours(spec), moment)
        if key:
            if len(answers) >= _ANSWERS_KEPT:
                answers.clear()
            answers[key] = answer
        return answer

    def is_holiday(context: Context, dates: Collection[str] | None, tz: str | None = None) -> bool:
        """True if today is in a dates list (YYYY-MM-DD, or MM-DD for every year)."""
        return dates is not None and _is_holiday(local(context, tz), dates)

    def today(context: Context, tz: str | None = None) -> str:
        """Today's date as YYYY-MM-DD."""
        return local(context, tz).date().isoformat()

    def weekday(context: Context, tz: str | None = None) -> str:
        """Today's day of the week: 'mon' .. 'sun'."""
        return DAYS[local(context, tz).weekday()]

    registry.add_function("workhours", workhours, pass_context=True, check=_check_hours)
    registry.add_function("is_holiday", is_holiday, pass_context=True, check=_check_holiday)
    registry.add_function("today", today, pass_context=True, check=_check_tz)
    registry.add_function("weekday", weekday, pass_context=True, check=_check_tz)


def _timezone_name(config: Config) -> str:
    reader = SettingsReader.for_plugin("timefuncs", config.plugins.for_plugin("timefuncs"), config)
    reader.reject_unknown(SETTINGS)
    name = reader.string("timezone", DEFAULT_TIMEZONE)
    try:
        zone(name)
    except ValueError as exc:
        raise reader.error("timezone", str(exc)) from None
    return name


def rules_timezone(config: Config) -> tzinfo:
    """The rules' zone: ``now``, ``workhours()`` and ``schedule:`` all use it, and
    plugins' timed jobs (the 1C warm-up) too, so one setting moves them together."""
    return zone(_timezone_name(config))


def _is_holiday(moment: datetime, dates: Collection[str]) -> bool:
    day = moment.date()
    return day.isoformat() in dates or f"{day.month:02d}-{day.day:02d}" in dates


def _check_tz(tz: object = None) -> None:
    if isinstance(tz, str):
        zone(tz)


def _check_holiday(dates: object = None, tz: object = None) -> None:
    _check_tz(tz)


def _check_hours(spec: object = None, tz: object = None, holidays: object = None) -> None:
    if isinstance(spec, str):
        parse_hours(spec)
    if isinstance(tz, str):
        zone(tz)


class TimeFunctions:
    """The plugin: one per engine, so two engines in a process keep their own zone."""

    def __init__(self) -> None:
        self.timezone = DEFAULT_TIMEZONE

    @hookimpl
    def callrouter_configure(self, config: Config) -> None:
        """``[plugins.timefuncs] timezone``: the zone of ``now``, working hours and schedules."""
        self.timezone = _timezone_name(config)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        register(registry, self.timezone)


def make_plugin() -> TimeFunctions:
    return TimeFunctions()
