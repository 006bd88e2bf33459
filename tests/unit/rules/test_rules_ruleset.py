"""Loading, reload semantics, priorities, indexes and plugin hooks of the registry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from router.errors import AMIValidationError
from router.rules import Caller, Context, Registry, RuleBook, load_rules
from router.rules.evaluate import LATE_START_GRACE

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
GOOD = """version: 1
rules:
  - name: first
    on: call
    if: did == "1"
    do: [{redirect: {context: a, exten: "1"}}]
  - name: second
    on: call
    do: [{redirect: {context: a, exten: "2"}}]
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def call(did: str = "1", number: str = "79161234567") -> Context:
    return Context.for_call(Caller(number), did, now=NOW)


async def test_bad_rule_is_disabled_and_others_load(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD.replace('if: did == "1"', "if: dd == 1"))
    ruleset = load_rules([path], registry)
    assert [r.name for r in ruleset.rules] == ["second"]
    assert len(ruleset.errors) == 1
    assert ruleset.errors[0].rule == "first"
    assert ruleset.errors[0].line == 5
    assert not ruleset.fatal
    outcome = await ruleset.evaluate(call())
    assert outcome.decision.rules == ("second",)


async def test_failed_reload_keeps_previous_rules(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD)
    book = RuleBook([tmp_path], registry)
    assert book.reload().errors == ()
    assert len(book.current.rules) == 2
    path.write_text("version: 1\nrules: [", encoding="utf-8")  # a half-saved file
    failed = book.reload()
    assert failed.fatal
    assert len(book.current.rules) == 2
    outcome = await book.evaluate(call())
    assert outcome.decision.rules == ("first",)


def test_strict_reload_refuses_any_error(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, GOOD)
    book = RuleBook([path], registry)
    book.reload(strict=True)
    path.write_text(GOOD.replace('exten: "2"', 'extn: "2"'), encoding="utf-8")
    book.reload()  # lenient: 'second' is dropped
    assert [r.name for r in book.current.rules] == ["first"]
    path.write_text(GOOD.replace('did == "1"', "did = 1"), encoding="utf-8")
    book.reload(strict=True)
    assert [r.name for r in book.current.rules] == ["first"]


def test_missing_path_is_fatal(tmp_path: Path, registry: Registry) -> None:
    ruleset = load_rules([tmp_path / "nope"], registry)
    assert ruleset.fatal
    assert "no such file or folder" in str(ruleset.errors[0])


async def test_priority_then_file_order(tmp_path: Path, registry: Registry) -> None:
    write(
        tmp_path,
        "version: 1\nrules:\n"
        "  - {name: b, on: call, continue: true, do: [{setvar: {B: '1'}}]}\n"
        "  - {name: c, on: call, priority: 5, continue: true, do: [{setvar: {C: '1'}}]}\n",
        "10-first.yaml",
    )
    write(
        tmp_path,
        "version: 1\nrules:\n"
        "  - {name: a, on: call, continue: true, do: [{setvar: {A: '1'}}]}\n"
        "  - {name: d, on: call, priority: -1, do: [{setvar: {D: '1'}}]}\n",
        "20-second.yaml",
    )
    ruleset = load_rules([tmp_path], registry)
    outcome = await ruleset.evaluate(call())
    assert outcome.decision.rules == ("c", "b", "a", "d")


def test_lists_are_global_and_unique(tmp_path: Path, registry: Registry) -> None:
    write(tmp_path, "version: 1\nlists:\n  vip: ['1']\n", "a.yaml")
    write(tmp_path, "version: 1\nlists:\n  vip: ['2']\n", "b.yaml")
    ruleset = load_rules([tmp_path], registry)
    assert [e.render() for e in ruleset.errors] == [
        f"{ruleset.errors[0].file}:3: list 'vip' is already defined at "
        f"{ruleset.errors[0].file[:-6]}a.yaml:3"
    ]


async def test_did_index_gives_the_same_decisions(tmp_path: Path, registry: Registry) -> None:
    rules = "".join(
        f"  - name: did-{i}\n    on: call\n    priority: {i % 3}\n"
        f'    if: did == "{i}" and caller.number != "0"\n'
        f'    do: [{{redirect: {{context: d, exten: "{i}"}}}}]\n'
        for i in range(20)
    )
    rules += (
        "  - name: many\n    on: call\n    priority: 1\n    if: did in ('3', '4')\n"
        "    continue: true\n    do: [{setvar: {MANY: '1'}}]\n"
        "  - name: rest\n    on: call\n    priority: -5\n"
        "    do: [{redirect: {context: d, exten: rest}}]\n"
    )
    ruleset = load_rules([write(tmp_path, "version: 1\nrules:\n" + rules)], registry)
    assert ruleset.errors == ()
    from router.rules.evaluate import evaluate_rules

    all_calls = [r for r in ruleset.rules if r.trigger.kind == "call"]
    for did in [*map(str, range(22)), "x"]:
        fast = await ruleset.evaluate(call(did))
        slow = await evaluate_rules(all_calls, call(did), registry, ruleset.lists)
        assert fast.decision == slow.decision
        assert len(fast.trace.rules) <= len(slow.trace.rules)


def test_event_names_from_a_catalog(tmp_path: Path, registry: Registry) -> None:
    registry.set_event_names({"Hangup", "Newchannel"})
    path = write(
        tmp_path,
        "version: 1\nrules:\n  - name: e\n    on: event Hangupp\n"
        "    do: [{notify: {plugin: onec, event: x}}]\n"
        "  - name: g\n    on: event New*\n"
        "    do: [{notify: {plugin: onec, event: x}}]\n",
    )
    ruleset = load_rules([path], registry)
    assert [e.detail for e in ruleset.errors] == [
        "unknown event 'Hangupp' (did you mean 'Hangup'?); Asterisk 22 documents no "
        "such event (callrouter actions --events lists them); one of a module it "
        "does not document is written as a glob: 'on: event Hangupp*'; a UserEvent's "
        "own name (UserEvent(Hangupp) in the dialplan) is tested with 'on: event "
        "UserEvent' and 'if: event.userevent == \"Hangupp\"'"
    ]


def test_a_user_event_s_name_is_not_sent_to_a_glob(tmp_path: Path, registry: Registry) -> None:
    # on: event CrmHangup was answered "written as a glob: on: event CrmHangup*",
    # which loads and never fires: Asterisk sends it as Event: UserEvent.
    registry.set_event_names({"Hangup", "UserEvent"})
    path = write(
        tmp_path,
        "version: 1\nrules:\n  - name: e\n    on: event CrmHangup\n"
        "    do: [{notify: {plugin: onec, event: x}}]\n",
    )
    (error,) = load_rules([path], registry).errors
    assert error.detail.endswith(
        "is tested with 'on: event UserEvent' and 'if: event.userevent == \"CrmHangup\"'"
    )


def test_event_names_are_asterisks_as_the_plugins_register_them(tmp_path: Path) -> None:
    """``on: event Hangupp`` (or ``hangup``: names are matched exactly) loaded
    and never fired: the catalog's event names were never registered."""
    from router.plugin_registry import plugin_registry

    rules = "".join(
        f"  - name: r{number}\n    on: event {name}\n"
        "    do: [{notify: {plugin: onec, event: x}}]\n"
        for number, name in enumerate(
            ("Hangupp", "hangup", "Hangup", "Newexten", "CEL", "Queue*", "DongleNewSMS*")
        )
    )
    path = write(tmp_path, "version: 1\nrules:\n" + rules)
    ruleset = load_rules([path], plugin_registry(timezone="Europe/Moscow"))
    assert [(e.rule, e.detail.partition(";")[0]) for e in ruleset.errors] == [
        ("r0", "unknown event 'Hangupp' (did you mean 'Hangup'?)"),
        ("r1", "unknown event 'hangup' (did you mean 'Hangup'?)"),
    ]
    assert len(ruleset.rules) == 5
    without = load_rules([path], plugin_registry(disabled=("ami_catalog",)))
    assert without.errors == ()


def test_ami_actions_checked_by_the_catalog(tmp_path: Path) -> None:
    from router.plugin_registry import plugin_registry

    registry = plugin_registry(disabled=("ami_catalog",))  # the catalog's plugin left out
    seen: list[tuple[str, Mapping[str, object]]] = []

    def catalog(action: str, params: Mapping[str, object]) -> None:
        seen.append((action, params))
        if action != "DBPut":
            raise AMIValidationError(f"unknown AMI action {action!r} (did you mean 'DBPut'?)")

    path = write(
        tmp_path,
        "version: 1\nrules:\n"
        "  - name: ok\n    schedule: '0 9 * * *'\n"
        "    do: [{ami: {action: DBPut, family: f, key: '{now.hour}'}}]\n"
        "  - name: typo\n    schedule: '0 9 * * *'\n"
        "    do: [{ami: {action: DBPutt, family: f}}]\n",
    )
    assert load_rules([path], registry).errors == ()  # without a catalog: shape only
    registry.set_ami_validator(catalog)
    ruleset = load_rules([path], registry)
    assert [e.render() for e in ruleset.errors] == [
        f"{ruleset.errors[0].file}:8: rule 'typo': action 'ami': "
        "unknown AMI action 'DBPutt' (did you mean 'DBPut'?)"
    ]
    assert ("DBPut", {"family": "f", "key": "{now.hour}"}) in seen


async def test_plugin_function_lookup_and_action(tmp_path: Path, registry: Registry) -> None:
    from router.rules import ActionSpec, ParamSpec

    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    async def crm_score(number: str) -> int:
        return len(number)

    registry.add_function("double", double)
    registry.add_lookup("crm.score", crm_score)
    registry.add_action(ActionSpec("sms", (ParamSpec("to", required=True),)))
    with pytest.raises(ValueError, match="already registered"):
        registry.add_function("double", double)
    path = write(
        tmp_path,
        "version: 1\nrules:\n  - name: p\n    on: call\n"
        "    lookup: {score: crm.score(caller.number)}\n"
        "    when: double(score) == 22\n"
        "    do: [{sms: {to: '{caller.number}'}}]\n",
    )
    ruleset = load_rules([path], registry)
    assert ruleset.errors == ()
    outcome = await ruleset.evaluate(call())
    assert [(a.kind, dict(a.params)) for a in outcome.decision.actions] == [
        ("sms", {"to": "79161234567"})
    ]


async def test_rejected_actions_fall_through(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        "version: 1\nrules:\n  - name: owner\n    on: call\n"
        "    lookup: {owner: directory(caller.number)}\n"
        "    do: [{redirect: {context: d, exten: '{owner.extension}'}}]\n"
        "  - name: bad-cause\n    on: call\n"
        "    do: [{hangup: {cause: '{caller.name}x'}}]\n"
        "  - name: default\n    on: call\n"
        "    do: [{redirect: {context: q, exten: sales}}]\n",
    )
    ruleset = load_rules([path], registry)
    outcome = await ruleset.evaluate(call())
    assert outcome.decision.rules == ("default",)
    statuses = [(r.rule, r.status) for r in outcome.trace.rules]
    assert statuses == [("owner", "rejected"), ("bad-cause", "rejected"), ("default", "matched")]
    assert "'exten' is empty" in outcome.trace.rules[0].detail


async def test_runtime_error_is_traced_and_skipped(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        "version: 1\nrules:\n  - name: zero\n    on: call\n"
        "    if: 1 / len(caller.name) > 0\n    do: [hangup]\n"
        "  - name: default\n    on: call\n    do: [hangup]\n",
    )
    outcome = await load_rules([path], registry).evaluate(call())
    assert outcome.decision.rules == ("default",)
    assert outcome.trace.rules[0].status == "error"
    assert "ZeroDivisionError" in outcome.trace.rules[0].detail


async def test_deadline_already_passed(tmp_path: Path, registry: Registry) -> None:
    path = write(
        tmp_path,
        "version: 1\nrules:\n  - name: o\n    on: call\n"
        "    lookup: {x: directory(caller.number)}\n"
        "    when: x is None\n    do: [hangup]\n",
    )

    async def never(number: str) -> None:
        raise AssertionError("must not be called after the deadline")

    outcome = await load_rules([path], registry).evaluate(
        call(), deadline=0.0, lookups={"directory": never}
    )
    assert outcome.decision.rules == ("o",)
    assert outcome.trace.deadline_hit


def test_redirect_targets_are_the_constant_locations_with_their_lines(
    tmp_path: Path, registry: Registry
) -> None:
    """What ``callrouter check --asterisk`` asks the dialplan for: a constant
    context (its extension too when constant), each with its action's line; a
    context built per call is only counted."""
    path = write(
        tmp_path,
        """version: 1
rules:
  - name: fixed
    on: call
    if: did == "1"
    do:
      - redirect: {context: queues, exten: sales}
  - name: per-did
    on: call
    if: did == "2"
    do:
      - setvar: {variable: X, value: "1"}
      - redirect: {context: from-internal, exten: "{did}"}
  - name: built
    on: call
    do:
      - redirect: {context: "{did}", exten: s}
""",
    )
    ruleset = load_rules([path], registry)
    assert not ruleset.errors
    targets, built = ruleset.redirect_targets()
    shown = [(t.context, t.exten, t.rule, t.location.rsplit("/", 1)[-1]) for t in targets]
    assert shown == [
        ("queues", "sales", "fixed", "rules.yaml:7"),
        ("from-internal", None, "per-did", "rules.yaml:13"),
    ]
    assert built == 1


class SteppingClock:
    """A deadline clock that moves ``step`` seconds at every read: the pauses
    of a loaded machine between two reads, with no sleep."""

    def __init__(self, start: float, step: float) -> None:
        self.now = start - step
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.now += self.step
        self.reads += 1
        return self.now


async def test_the_rule_book_measures_the_deadline_on_the_callers_clock(
    tmp_path: Path, registry: Registry
) -> None:
    """``RuleBook.evaluate(clock=...)`` reaches the evaluator: on a clock of the
    caller's, a deadline 10 s ahead of it leaves the lookup its time, where on
    ``time.monotonic`` the same number is long past."""
    write(
        tmp_path,
        "version: 1\nrules:\n  - name: o\n    on: call\n"
        "    lookup: {x: directory(caller.number)}\n"
        '    when: x == "found"\n    do: [hangup]\n',
    )
    book = RuleBook([tmp_path], registry)
    assert book.reload().errors == ()
    asked: list[str] = []

    async def directory(number: str) -> str:
        asked.append(number)
        return "found"

    clock = SteppingClock(0.0, 0.0)
    outcome = await book.evaluate(
        call(), deadline=10.0, lookups={"directory": directory}, clock=clock
    )
    assert asked == ["79161234567"]
    assert outcome.decision.rules == ("o",)
    assert not outcome.trace.deadline_hit
    assert clock.reads > 0


async def test_a_late_start_evaluates_its_first_rule_whatever_the_pause_after_the_clock_read(
    tmp_path: Path, registry: Registry
) -> None:
    """Started past its deadline, an evaluation gets LATE_START_GRACE from one
    read of the clock: a second read, after a pause longer than the grace (a
    loaded machine), found the grace gone and no rule was evaluated."""
    write(tmp_path, GOOD)
    book = RuleBook([tmp_path], registry)
    assert book.reload().errors == ()
    clock = SteppingClock(100.0, LATE_START_GRACE * 1.2)
    outcome = await book.evaluate(call(), deadline=99.0, clock=clock)
    assert outcome.decision.rules == ("first",)
    assert not outcome.trace.deadline_hit


async def test_a_late_start_still_stops_once_its_grace_is_spent(
    tmp_path: Path, registry: Registry
) -> None:
    """The grace still ends: past it, the next look at the clock (every 32
    rules) stops the evaluation, and the rules after it are not evaluated."""
    text = "version: 1\nrules:\n" + "".join(
        f"  - name: r{n}\n    on: call\n    if: len(did) == {n} + 100\n    do: [hangup]\n"
        for n in range(40)
    )
    text += "  - name: last\n    on: call\n    do: [hangup]\n"
    write(tmp_path, text)
    book = RuleBook([tmp_path], registry)
    assert book.reload().errors == ()
    clock = SteppingClock(100.0, LATE_START_GRACE * 1.2)
    outcome = await book.evaluate(call(), deadline=99.0, clock=clock)
    assert outcome.trace.deadline_hit
    assert outcome.decision.rules == ()
    assert [r.rule for r in outcome.trace.rules] == [f"r{n}" for n in range(32)]


def test_missed_says_what_becomes_of_a_schedule_s_missed_run(
    tmp_path: Path, registry: Registry
) -> None:
    """``missed: run-once`` (make up a missed run, once) or ``skip`` (the
    default), on schedule: rules only; anything else a load error."""
    rule = (
        "  - name: {name}\n    {trigger}\n    missed: {missed}\n"
        "    do: [{{ami: {{action: Ping}}}}]\n"
    )
    path = write(
        tmp_path,
        "version: 1\nrules:\n"
        + rule.format(name="once", trigger="schedule: '0 19 * * *'", missed="run-once")
        + rule.format(name="skip", trigger="schedule: '0 19 * * *'", missed="skip")
        + rule.format(name="typo", trigger="schedule: '0 19 * * *'", missed="runonce")
        + rule.format(name="list", trigger="schedule: '0 19 * * *'", missed="[1]")
        + rule.format(name="call", trigger="on: call", missed="skip"),
    )
    ruleset = load_rules([path], registry)
    assert [(e.rule, e.detail) for e in ruleset.errors] == [
        ("typo", "'missed' must be 'skip' or 'run-once', not 'runonce' (did you mean 'run-once'?)"),
        ("list", "'missed' must be 'skip' or 'run-once', not a list"),
        (
            "call",
            "'missed' is for 'schedule' rules (what becomes of a run callrouter could "
            "not make on time), not for 'on' rules",
        ),
    ]
    assert ruleset.runs_missed_once("once")
    assert not ruleset.runs_missed_once("skip")
    assert not ruleset.runs_missed_once("nothing")
