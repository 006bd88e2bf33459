"""Good rules produce the expected decision for a table of calls."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.builtin.timefuncs import zone
from router.errors import LookupUnavailable
from router.rules import Context, Registry, RuleSet, call_context, load_rules

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "rules"
MSK = zone("Europe/Moscow")
MONDAY_NOON = "2026-11-23 12:00"

OWNERS: dict[str, Any] = {
    "79161111111": {
        "found": True,
        "client": {"name": "Romashka"},
        "manager": {"name": "Ivan", "extension": "101"},
        "deputy": {"name": "Olga", "extension": "102"},
    },
    "79162222222": {
        "found": True,
        "client": {"name": "Lютик"},
        "manager": {"name": "Petr", "extension": "103"},
    },
    "79163333333": {"found": False},
}
STATES = {"101": "idle", "102": "idle", "103": "busy"}


async def onec_responsible(number: str) -> Any:
    if number == "79164444444":
        raise LookupUnavailable("1C is down")
    if number == "79165555555":
        await asyncio.sleep(10)
    return OWNERS.get(number, {"found": False})


async def extension_state(extension: str | None) -> str:
    return STATES.get(extension or "", "unknown")


LOOKUPS = {"onec.responsible": onec_responsible, "extension_state": extension_state}


@pytest.fixture
def ruleset(registry: Registry) -> RuleSet:
    loaded = load_rules([FIXTURES / "good"], registry)
    assert loaded.errors == ()
    return loaded


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MSK)


SETVAR_IVAN = ("setvar", {"CRM_CLIENT": "Romashka", "CRM_MANAGER": "Ivan"})
CALLS = [
    # caller, did, time, expected rules, expected actions
    ("8 (495) 000-00-66", "74950000000", MONDAY_NOON, ["blacklist"], [("hangup", {"cause": "21"})]),
    (
        "+7 495 000-00-67",
        "74950000000",
        "2026-11-23 23:00",
        ["blacklist"],
        [("hangup", {"cause": "21"})],
    ),
    (
        "89161111111",
        "74950000000",
        MONDAY_NOON,
        ["owner"],
        [SETVAR_IVAN, ("redirect", {"context": "callrouter-dial", "exten": "101"})],
    ),
    (
        "79162222222",
        "74950000000",
        MONDAY_NOON,
        ["default"],  # owner busy, no deputy
        [("redirect", {"context": "queues", "exten": "sales"})],
    ),
    (
        "79163333333",
        "74950000000",
        MONDAY_NOON,
        ["default"],  # not a client
        [("redirect", {"context": "queues", "exten": "sales"})],
    ),
    (
        "79164444444",
        "74950000000",
        MONDAY_NOON,
        ["onec-down"],  # 1C down
        [("redirect", {"context": "queues", "exten": "all"})],
    ),
    (
        "79165555555",
        "74950000000",
        MONDAY_NOON,
        ["onec-down"],  # 1C too slow
        [("redirect", {"context": "queues", "exten": "all"})],
    ),
    (
        "8 916 000-00-01",
        "74950000000",
        MONDAY_NOON,
        ["vip"],
        [("redirect", {"context": "queues", "exten": "vip"})],
    ),
    (
        "79161111111",
        "74950000000",
        "2026-11-23 20:15",
        ["closed"],
        [("redirect", {"context": "ivr", "exten": "closed"})],
    ),
    (
        "79161111111",
        "74950000000",
        "2026-11-28 11:00",
        ["owner"],  # Saturday, open
        [SETVAR_IVAN, ("redirect", {"context": "callrouter-dial", "exten": "101"})],
    ),
    (
        "79161111111",
        "74950000000",
        "2026-11-29 11:00",
        ["closed"],  # Sunday
        [("redirect", {"context": "ivr", "exten": "closed"})],
    ),
    (
        "79161111111",
        "74950000000",
        "2027-01-07 12:00",
        ["holiday"],  # every year
        [("redirect", {"context": "ivr", "exten": "holiday"})],
    ),
    (
        "79161111111",
        "74950000000",
        "2026-12-31 12:00",
        ["holiday"],
        [("redirect", {"context": "ivr", "exten": "holiday"})],
    ),
    (
        "79163333333",
        "84951110000",
        MONDAY_NOON,
        ["tag-north", "north"],
        [("setvar", {"BRANCH": "north"}), ("redirect", {"context": "queues", "exten": "north"})],
    ),
    (
        "79163333333",
        "74951110001",
        MONDAY_NOON,
        ["tag-north", "default"],
        [("setvar", {"BRANCH": "north"}), ("redirect", {"context": "queues", "exten": "sales"})],
    ),
]


@pytest.mark.parametrize(("caller", "did", "when", "rules", "actions"), CALLS)
async def test_call_decision(
    ruleset: RuleSet,
    caller: str,
    did: str,
    when: str,
    rules: list[str],
    actions: list[tuple[str, dict[str, str]]],
) -> None:
    context = call_context(ruleset.registry, caller, did, now=at(when))
    outcome = await ruleset.evaluate(context, deadline=time.monotonic() + 0.2, lookups=LOOKUPS)
    assert list(outcome.decision.rules) == rules
    assert [(a.kind, dict(a.params)) for a in outcome.decision.actions] == actions


async def test_the_trace_tells_the_trigger_in_the_rules_time_zone(ruleset: RuleSet) -> None:
    """A live call's context holds the time in UTC (the engine's clock); the
    rules see `now` in their zone (Moscow), and the trace (the live page,
    POST /api/v1/explain, `callrouter explain`) says that time, not UTC, so
    it reads like `explain --at` (issue 16: the live page said 18:40 UTC for a
    call the rules judged at 21:40 MSK)."""
    utc = at(MONDAY_NOON).astimezone(UTC)
    context = call_context(ruleset.registry, "89161111111", "74950000000", now=utc)
    outcome = await ruleset.evaluate(context, lookups=LOOKUPS)
    assert outcome.trace.trigger == (
        "call from 79161111111 to 74950000000 at 2026-11-23 12:00:00 MSK"
    )
    assert outcome.trace.to_dict()["trigger"] == outcome.trace.trigger
    assert outcome.trace.render().splitlines()[0] == outcome.trace.trigger


async def test_owner_then_deputy(ruleset: RuleSet) -> None:
    STATES["101"] = "busy"
    try:
        context = call_context(ruleset.registry, "79161111111", "74950000000", now=at(MONDAY_NOON))
        outcome = await ruleset.evaluate(context, lookups=LOOKUPS)
    finally:
        STATES["101"] = "idle"
    assert outcome.decision.rules == ("deputy",)
    assert dict(outcome.decision.actions[0].params) == {
        "context": "callrouter-dial",
        "exten": "102",
    }
    deputy = next(r for r in outcome.trace.rules if r.rule == "deputy")
    assert deputy.lookups[0].reused  # the 1C answer of 'owner' is shared, not re-asked


async def test_slow_lookup_times_out_into_trace(ruleset: RuleSet) -> None:
    context = call_context(ruleset.registry, "79165555555", "74950000000", now=at(MONDAY_NOON))
    started = time.monotonic()
    outcome = await ruleset.evaluate(context, deadline=started + 0.05, lookups=LOOKUPS)
    # The 0.05 s deadline, not the 10 s lookup: far below it, whatever the
    # load (1 s measured the host; issue 16).
    assert time.monotonic() - started < 5
    assert outcome.trace.deadline_hit
    owner = next(r for r in outcome.trace.rules if r.rule == "owner")
    assert owner.status == "lookup_failed"
    assert owner.lookups[0].error is not None
    assert owner.lookups[0].error.startswith("timed out")


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        (
            "Hangup",
            {"Cause": "19", "CallerIDNum": "79161111111"},
            [("notify", {"plugin": "onec", "event": "missed", "number": "79161111111"})],
        ),
        ("Hangup", {"Cause": "16"}, []),
        (
            "QueueCallerAbandon",
            {"Queue": "sales"},
            [("notify", {"plugin": "onec", "event": "queue sales"})],
        ),
        ("Newchannel", {}, []),
    ],
)
async def test_event_decision(
    ruleset: RuleSet, name: str, fields: dict[str, str], expected: list[tuple[str, dict[str, str]]]
) -> None:
    outcome = await ruleset.evaluate(Context.for_event(name, fields, now=at(MONDAY_NOON)))
    assert [(a.kind, dict(a.params)) for a in outcome.decision.actions] == expected


async def test_schedule_fires_only_its_rule(ruleset: RuleSet) -> None:
    assert ruleset.schedules == [("night", "0 19 * * mon-fri")]
    outcome = await ruleset.evaluate(Context.for_schedule("night", now=at(MONDAY_NOON)))
    assert [(a.kind, dict(a.params)) for a in outcome.decision.actions] == [
        ("ami", {"action": "DBPut", "family": "callrouter", "key": "mode", "val": "night"})
    ]
    nothing = await ruleset.evaluate(Context.for_schedule("other", now=at(MONDAY_NOON)))
    assert not nothing.decision.matched


async def test_trace_is_json_and_readable(ruleset: RuleSet) -> None:
    import json

    context = call_context(ruleset.registry, "79161111111", "74950000000", now=at(MONDAY_NOON))
    outcome = await ruleset.evaluate(context, lookups=LOOKUPS, explain=True)
    data = json.loads(json.dumps(outcome.trace.to_dict()))
    statuses = {r["rule"]: r["status"] for r in data["rules"]}
    # The caller is not blacklisted: the index leaves the rule out (issue 16),
    # and explain names it with what it tests instead of tracing it as false.
    assert "blacklist" not in statuses
    blacklist = next(r for r in ruleset.rules if r.name == "blacklist")
    assert [str(k) for k in ruleset.index_keys(blacklist)] == ["caller.number"]
    assert statuses["owner"] == "matched"
    assert statuses["default"] == "skipped"
    text = outcome.trace.render()
    assert "owner [" in text
    assert "MATCHED" in text
    assert "onec.responsible('79161111111')" in text
    assert json.loads(json.dumps(outcome.decision.to_dict()))["rules"] == ["owner"]
