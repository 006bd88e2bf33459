"""The one cron path: ``schedule:`` rules and plugins' timed jobs (1C warm-up).

Administrators write classic five-field cron, where day-of-week 0 and 7 are
Sunday, and mean the time zone their rules use (``[plugins.timefuncs]
timezone``). APScheduler 3 reads numeric weekdays Monday-first, refuses 7,
ANDs a restricted day-of-month with a restricted day-of-week (cron ORs them)
and fires in the host's zone unless told otherwise. So every cron text goes
through :func:`cron_trigger`, which validates it field by field (a typo such
as ``0 25 * * *`` is a load error with its line, not a job that never runs),
spells weekdays as names and pins the zone: ``check``, ``run`` and plugins
then agree on when a schedule fires.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from router.dialplan import shown
from router.rules.suggest import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from apscheduler.triggers.base import BaseTrigger

__all__ = ["CRON_FIELDS", "check_cron", "cron_trigger", "next_runs"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: Cron's nicknames (Vixie cron), which APScheduler's fields do not read, as
#: the five fields they stand for.
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: (field name, lowest, highest, names for lowest.. in order)
CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


def _value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    word = text.lower()
    if word in names:
        return names.index(word) + low
    if not (word.isascii() and word.isdigit()):
        if names and word.isalpha():
            # A misspelled name ("mon-fry", "jan-fev") names the one meant,
            # as a day in workhours() does.
            hint = did_you_mean(word, names) or f" ({', '.join(names)} or {low}-{high})"
            raise ValueError(f"{field}: unknown name {shown(text)}{hint}")
        if word == "?":
            raise ValueError(f"{field}: {text!r} is Quartz's, not classic cron: write '*'")
        raise ValueError(f"{field}: {shown(text)} is not a number")
    number = int(word)
    if not low <= number <= high:
        raise ValueError(f"{field} {number} out of range {low}-{high}")
    return number


def _expand(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    """The values a field selects, as cron reads it; ValueError names the bad part."""
    if not text:
        raise ValueError(f"{field}: empty")
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ValueError(f"{field}: bad step {shown(step_text)}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        else:
            first, dash, last = base.partition("-")
            if dash and not (first and last):
                # "-1", "5-": '' is not a number named no part written.
                raise ValueError(f"{field}: {shown(base)} is not a number or a range (a-b)")
            start = _value(first, field, low, high, names)
            # "5/10" is "5-max/10", as in Vixie cron.
            end = _value(last, field, low, high, names) if dash else (high if slash else start)
            if end < start:
                raise ValueError(f"{field}: range {shown(base)} runs backwards")
        values.update(range(start, end + 1, step))
    return values


#: The most days each month has (February: in a leap year).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _some_date(days: set[int], months: set[int]) -> None:
    """ValueError when no selected month has a selected day: ``0 9 30 2 *``
    would load and never fire (cron takes it, and runs it never)."""
    if any(day <= _MONTH_DAYS[month - 1] for month in months for day in days):
        return
    shown_days = ",".join(str(d) for d in sorted(days))
    shown_months = ",".join(_MONTHS[m - 1] for m in sorted(months))
    if len(months) == 1:
        raise ValueError(f"never fires: {shown_months} has no day {shown_days}")
    raise ValueError(f"never fires: none of {shown_months} has a day {shown_days}")


def check_cron(expression: str) -> None:
    """Raises ValueError naming the bad field of a five-field cron expression.

    What it accepts, :func:`cron_trigger` schedules (it builds the trigger),
    so ``callrouter check`` and ``callrouter run`` never disagree.
    """
    from datetime import UTC

    cron_trigger(expression, UTC)


def cron_trigger(expression: str, timezone: tzinfo) -> BaseTrigger:
    """Classic cron in ``timezone`` as an APScheduler trigger; ValueError if invalid.

    Weekdays become names (0 and 7: ``sun``). When both day fields are
    restricted, cron fires on either, so the trigger is an OR of two.
    """
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        nickname = _NICKNAMES.get(expression.strip().lower())
        hint = f" ({expression.strip()!r} is {nickname!r})" if nickname else ""
        raise ValueError(
            f"expected 5 fields (minute hour day month weekday), got {len(fields)}{hint}"
        )
    for text, (field, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        _expand(text, field, low, high, names)
    minute, hour, day, month, weekday = (text.lower() for text in fields)
    if weekday.startswith("*"):
        _some_date(_expand(day, *CRON_FIELDS[2]), _expand(month, *CRON_FIELDS[3]))
    days = _expand(weekday, *CRON_FIELDS[4])
    weekday_names = ",".join(_DAYS[d % 7] for d in sorted({d % 7 for d in days}))
    if weekday.startswith("*"):
        weekday_names = "*" if len({d % 7 for d in days}) == 7 else weekday_names

    def trigger(day_of_month: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day_of_month,
            month=month,
            day_of_week=day_of_week,
            timezone=timezone,
        )

    try:
        # Cron's rule (Vixie cron, POSIX): a field starting with '*' is
        # unrestricted; if both day fields are restricted, either may match.
        if not day.startswith("*") and not weekday.startswith("*"):
            return OrTrigger([trigger(day, "*"), trigger("*", weekday_names)])
        return trigger(day, weekday_names)
    except ValueError as exc:  # pragma: no cover - the checks above come first
        raise ValueError(str(exc)) from None


def next_runs(expression: str, timezone: tzinfo, start: datetime, count: int = 3) -> list[datetime]:
    """The first ``count`` times at or after ``start`` the schedule fires, in
    ``timezone``: what ``callrouter check`` shows, from the trigger ``run`` uses."""
    trigger = cron_trigger(expression, timezone)
    runs: list[datetime] = []
    previous: datetime | None = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:  # past 9999, the last year cron counts
            break
        runs.append(fire)
        previous, now = fire, fire
    return runs
