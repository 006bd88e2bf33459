"""One hypothetical call through the rules, for people: nothing is sent to Asterisk.

``callrouter explain`` and the API's ``POST /api/v1/explain`` (the live
page's explain box) both come here, so the command line and the page cannot
disagree about what the rules would do. By default lookups are never asked:
an answer given by the caller of :func:`explain_call` stands in for its
lookup and every other lookup is "not provided" (its value None), so an
administrator can replay "what if 1C says X at 20:15" without 1C, Asterisk or
a customer noticing. ``callrouter explain --ask`` leaves the lookups nobody
gave an answer for to the plugins (:func:`answer_stubs` with ``ask``), whose
lookups then run as in ``callrouter run``: "why did this customer not reach
their manager" gets 1C's real answer. Each lookup in the trace says which it
was (:data:`ASKED`, :data:`GIVEN`, :data:`NOT_PROVIDED`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from router.errors import LookupUnavailable
from router.rules.context import Context
from router.rules.evaluate import NOT_PROVIDED, Outcome
from router.rules.registry import LookupFn, Registry
from router.rules.ruleset import RuleBook, RuleSet, call_context
from router.rules.suggest import did_you_mean
from router.wording import duration

__all__ = [
    "ASKED",
    "GIVEN",
    "NOT_PROVIDED",
    "Explanation",
    "answer_stubs",
    "explain_call",
    "index_skipped_rules",
    "moment",
    "moment_note",
    "other_did_rules",
    "wall_time",
]


#: A lookup's ``source`` in the trace: the plugin's lookup ran (``--ask``)...
ASKED = "asked"
#: ... the caller gave its answer (``--lookup``, the API's ``lookups``) ...
GIVEN = "given"
# ... or neither: NOT_PROVIDED ("not provided", also the lookup's error).


def _answer(value: Any) -> LookupFn:
    async def answer(*_args: Any, **_kwargs: Any) -> Any:
        return value

    return answer


async def _not_provided(*_args: Any, **_kwargs: Any) -> Any:
    raise LookupUnavailable("not provided")


def answer_stubs(
    registry: Registry, answers: Mapping[str, Any], *, ask: bool = False
) -> dict[str, LookupFn] | str:
    """A stand-in for every registered lookup, or why ``answers`` names one that is not.

    With ``ask`` only the lookups ``answers`` names get one: the others are
    left to the registry, so their plugins are asked (the given answer wins).
    """
    stubs: dict[str, LookupFn] = {} if ask else dict.fromkeys(registry.lookups, _not_provided)
    for name, value in answers.items():
        if name not in registry.lookups:
            why = registry.why_missing(name) or did_you_mean(name, registry.lookups)
            return f"unknown lookup {name!r}{why}"
        stubs[name] = _answer(value)
    return stubs


def _source(lookup: str, stubs: Mapping[str, LookupFn], registry: Registry) -> str:
    """Where a lookup's answer came from (evaluation takes a stub before the registry's)."""
    stub = stubs.get(lookup)
    if stub is not None:
        return NOT_PROVIDED if stub is _not_provided else GIVEN
    spec = registry.lookups.get(lookup)
    return ASKED if spec is not None and spec.func is not None else NOT_PROVIDED


def wall_time(naive: datetime, where: tzinfo) -> tuple[datetime, str]:
    """``naive`` (a time as written, no zone) on the clocks of ``where``, and
    a note when that reading is one of two.

    In a zone with daylight saving time some wall times do not exist (the hour
    the clocks are put forward over) and some come twice (the hour they are put
    back over): as datetime reads them, the first silently became the hour after
    (``2026-03-29 02:30`` in Europe/Berlin shown as ``02:30 CET``, an instant
    that is 03:30 CEST) and the second the first of the two. ValueError for a
    time that does not exist, saying what to write; for one that comes twice,
    the first, with a note saying so and how to write the second. The note is
    "" otherwise.
    """
    first = naive.replace(tzinfo=where, fold=0)
    second = naive.replace(tzinfo=where, fold=1)
    back = first.astimezone(UTC).astimezone(where).replace(tzinfo=None)
    written = naive.strftime("%Y-%m-%d %H:%M")
    # A zone gives every aware time an offset (None only for a naive one).
    before, after = first.utcoffset() or timedelta(0), second.utcoffset() or timedelta(0)
    if back != naive.replace(tzinfo=None, fold=0):
        moved = duration((after - before).total_seconds())
        instant = first.astimezone(UTC).astimezone(where)
        raise ValueError(
            f"{written} is no time in {where}: its clocks were put forward by {moved} "
            f"over it that day ({first.tzname()} to {instant.tzname()}); give a time "
            f"before or after it, or one with an offset "
            f"({first.isoformat(timespec='minutes')} is {instant:%H:%M %Z})"
        )
    if before == after:
        return first, ""
    moved = duration((before - after).total_seconds())
    return first, (
        f"{written} comes twice in {where} (its clocks were put back by {moved} over it "
        f"that day): the first, {first:%H:%M %Z} ({first.isoformat(timespec='minutes')}), "
        f"is used; {second.isoformat(timespec='minutes')} is the second ({second:%H:%M %Z})"
    )


def moment(text: str | None, registry: Registry) -> datetime | str:
    """``YYYY-MM-DD HH:MM`` (or ISO 8601) in the rules' zone, now when None; or the
    problem (a time the zone's clocks skip: :func:`wall_time`)."""
    zone = registry.timezone
    if text is None:
        return datetime.now(zone)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return f'{text[:40]!r}: expected "YYYY-MM-DD HH:MM"'
    if when.tzinfo is not None or zone is None:
        return when
    try:
        return wall_time(when, zone)[0]
    except ValueError as exc:
        return str(exc)


def moment_note(text: str | None, registry: Registry) -> str:
    """What :func:`moment` chose for a time the zone's clocks show twice (the
    hour they are put back over), or ""."""
    zone = registry.timezone
    if text is None or zone is None:
        return ""
    try:
        when = datetime.fromisoformat(text.strip())
        return "" if when.tzinfo is not None else wall_time(when, zone)[1]
    except ValueError:
        return ""


def other_did_rules(ruleset: RuleSet, context: Context) -> list[str]:
    """Call rules the index left out because they test only the DID."""
    return [name for name, keys in _left_out(ruleset, context) if keys == ["did"]]


def index_skipped_rules(ruleset: RuleSet, context: Context) -> list[tuple[str, list[str]]]:
    """Other call rules the index left out, with the values of the call they test
    (``caller.number``, ``last10(did)``): explain says so instead of hiding them."""
    return [(name, keys) for name, keys in _left_out(ruleset, context) if keys != ["did"]]


def _left_out(ruleset: RuleSet, context: Context) -> list[tuple[str, list[str]]]:
    considered = {rule.name for rule in ruleset.rules_for(context)}
    return [
        (rule.name, [str(key) for key in ruleset.index_keys(rule)])
        for rule in ruleset.rules
        if rule.trigger.kind == "call" and rule.name not in considered
    ]


@dataclass(frozen=True, slots=True)
class Explanation:
    """What the rules would do with the call, and how they came to it."""

    context: Context
    outcome: Outcome
    other_did_rules: list[str]
    #: (rule, the call's values it tests) for the other rules the index left out.
    index_skipped: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The shape of ``callrouter explain --json`` and of the API's answer."""
        return {
            "decision": self.outcome.decision.to_dict(),
            "trace": self.outcome.trace.to_dict(),
            "other_did_rules": self.other_did_rules,
            "index_skipped_rules": [
                {"rule": name, "keys": list(keys)} for name, keys in self.index_skipped
            ],
        }


async def explain_call(
    rules: RuleSet | RuleBook,
    caller: str,
    did: str,
    *,
    stubs: Mapping[str, LookupFn],
    now: datetime,
    caller_name: str = "",
    budget: float | None = None,
) -> Explanation:
    """Evaluate the call with ``stubs`` for lookups (from :func:`answer_stubs`), traced.

    ``budget`` is the seconds all lookups share, as a call's deadline gives
    them in ``callrouter run`` (None: no deadline, for answers that are given).
    Each lookup in the trace gets its ``source``.
    """
    ruleset = rules.current if isinstance(rules, RuleBook) else rules
    context = call_context(ruleset.registry, caller, did, caller_name=caller_name, now=now)
    deadline = None if budget is None else time.monotonic() + budget
    outcome = await ruleset.evaluate(context, lookups=stubs, explain=True, deadline=deadline)
    for entry in outcome.trace.rules:
        for record in entry.lookups:
            record.source = _source(record.lookup, stubs, ruleset.registry)
    skipped = tuple((name, tuple(keys)) for name, keys in index_skipped_rules(ruleset, context))
    return Explanation(context, outcome, other_did_rules(ruleset, context), skipped)
