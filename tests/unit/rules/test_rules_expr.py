"""The expression language: what it allows, what it refuses, how None flows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.rules import Caller, Context, Registry
from router.rules.expr import Evaluator, Expression, ExpressionError, Template

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def run(source: str, registry: Registry, **names: Any) -> Any:
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    scope: dict[str, object] = {**context.names(), "lists": {"vip": frozenset({"1"})}, **names}
    return Evaluator(context, scope, registry.functions).evaluate(Expression.parse(source))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("caller.number", "79161234567"),
        ("caller.number in lists.vip", False),
        ("did == '74951234567' and not caller.internal", True),
        ("(1, 2) if did else None", (1, 2)),
        ("[1, 2][5]", None),
        ("caller.number[-10:]", "9161234567"),
        ("now.hour", 9),
        ("1 + 2 * 3 ** 2", 19),
        ("'a' < 'b' < 'c'", True),
        ("match('^7916', caller.number)", True),
        ("last10('+7 (916) 123-45-67')", "9161234567"),
    ],
)
def test_evaluates(source: str, expected: object, registry: Registry) -> None:
    assert run(source, registry) == expected


@pytest.mark.parametrize(
    "source",
    [
        "owner.manager.extension",
        "owner['manager']['extension']",
        "owner.manager.extension[0]",
    ],
)
def test_none_is_safe_through_attributes(source: str, registry: Registry) -> None:
    assert run(source, registry, owner=None) is None


def test_missing_mapping_key_is_none(registry: Registry) -> None:
    assert run("owner.manager.name", registry, owner={"manager": {}}) is None
    assert run("'x' in owner.tags", registry, owner={}) is False
    assert run("'x' not in owner.tags", registry, owner={}) is True


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("caller.__class__", "names starting with '_' are not allowed"),
        ("(lambda: 1)()", "lambda not allowed"),
        ("[x for x in did]", "comprehensions not allowed"),
        ("f'{did}'", "f-strings"),
        ("did | 1", "operator '|'"),
        ("(x := 1)", "':=' assignments not allowed"),
        ("workhours(**did)", "'**' unpacking not allowed"),
        ("'" + "x" * 2000 + "'", "longer than"),
        ("1" + "0" * 40, "number literal too large"),
        # Arithmetic on literals that would fail on every call fails at load.
        ("2 ** 65", "exponent too large"),
        ("10 ** 31", "number too large"),
        ("-(2 ** 64 * 2 ** 64)", "number too large"),
        ("len(did) > 1 / 0", "division by zero"),
        ("did ==", "invalid syntax"),
        ("", "empty expression"),
    ],
)
def test_refused_at_parse_time(source: str, message: str) -> None:
    with pytest.raises(
        ExpressionError, match=message.replace("(", r"\(").replace("|", r"\|").replace("*", r"\*")
    ):
        Expression.parse(source)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # A comparison written with '=', as in SQL (issue 16): Python says only
        # "invalid syntax"; the load error says what to write.
        (
            'caller.number = "79161234567"',
            "invalid syntax: a comparison is written '==', not '=' (did == \"74951234567\")",
        ),
        (
            'did = "74951234567" and workhours("mon-fri 09:00-18:00", holidays=lists.h)',
            "invalid syntax: a comparison is written '==', not '=' (did == \"74951234567\")",
        ),
        # No hint where '==' would not make it parse, nor for a keyword argument.
        ("did ==", "invalid syntax"),
        ("did = = 1", "invalid syntax"),
        ('workhours("mon-fri", tz=)', "invalid syntax"),
    ],
)
def test_a_single_equals_sign_is_told_apart(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        Expression.parse(source)
    assert str(raised.value) == message


@pytest.mark.parametrize("page", ["docs/rules.md", "docs/ru/rules.md"])
def test_the_docs_quote_the_single_equals_error(page: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        Expression.parse('did = "74951234567"')
    text = (Path(__file__).resolve().parents[3] / page).read_text(encoding="utf-8")
    assert f"`invalid expression in 'if': {raised.value}`" in " ".join(text.split())


def test_arithmetic_on_literals_within_bounds_still_loads(registry: Registry) -> None:
    assert run("2 ** 64 + 10 ** 20 - -1", registry) == 2**64 + 10**20 + 1
    assert Expression.parse("caller.number ** 99")  # only a call can say


@pytest.mark.parametrize(
    "source",
    [
        "'x' * 100000",
        "9 ** 99",
        "caller.number.upper",
        "now.tzinfo",
    ],
)
def test_bounded_or_refused_at_run_time(source: str, registry: Registry) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - any error: the rule is skipped
        run(source, registry)
    assert not isinstance(info.value, SystemExit)


def test_template_renders_and_escapes(registry: Registry) -> None:
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    evaluator = Evaluator(context, {**context.names(), "owner": None}, registry.functions)
    assert evaluator.render(Template.parse("{{x}} {caller.number}")) == "{x} 79161234567"
    assert evaluator.render(Template.parse("{owner.name}")) is None
    assert evaluator.render(Template.parse("to {owner.name}!")) == "to !"
    assert evaluator.render(Template.parse("{match('}', '}')}")) == "true"
    with pytest.raises(ExpressionError, match="unclosed"):
        Template.parse("{did")
    with pytest.raises(ExpressionError, match="single '}'"):
        Template.parse("did}")


def test_a_template_s_hole_may_end_in_a_format(registry: Registry) -> None:
    """`{now.hour}:{now.minute}` at 09:05 gave "9:5": a time as nobody writes
    it. A hole ends in a format as in an f-string: strftime codes for a date,
    a short mini-language format for a number or text."""
    at = datetime(2026, 11, 23, 9, 5, 7, 123456, tzinfo=UTC)
    context = Context.for_call(Caller("79161234567"), "74951234567", now=at)
    evaluator = Evaluator(context, context.names(), registry.functions)

    def render(source: str) -> str | None:
        return evaluator.render(Template.parse(source))

    assert render("{now.hour}:{now.minute}") == "9:5"  # numbers, as before
    assert render("{now:%H:%M}") == "09:05"
    assert render("{now.hour:02}:{now.minute:02d}") == "09:05"
    assert render("at {now:%d.%m.%Y %H:%M:%S}, 100%") == "at 23.11.2026 09:05:07, 100%"
    assert render("{caller.number[-4:]:>6}|{did[:3]:_<5}") == "  4567|749__"
    assert render("{now:%%H}") == "%H"
    # A slice's colon is the expression's, not a format's.
    assert render("{caller.number[7:]}") == "4567"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{now:02}", "'now' is a date: its format is strftime codes ({now:%H:%M}), not '02'"),
        ("{now.minute:%M}", "'now.minute' is a number: write {now.minute:02} or {now:%M}"),
        # A width that would make a text of a million characters.
        ("{did:>999999}", "format '>999999' is neither a date's (%H:%M) nor a number's"),
        ("{now:%Q}", "unknown date code '%Q'"),
        ("{now:}", "empty format after ':'"),
        ("{now:" + "%H" * 30 + "}", "is not a short one-line text"),
    ],
)
def test_a_format_a_hole_may_not_end_in_is_a_load_error(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        Template.parse(source)


def test_a_format_that_does_not_fit_the_value_fails_the_evaluation(registry: Registry) -> None:
    """A format checked at load for what it may be; a value of the call it does
    not fit (text for a number's `d`) fails the rule, as any failing value."""
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    evaluator = Evaluator(context, context.names(), registry.functions)
    with pytest.raises(ValueError, match=r"format 'd' does not fit a text"):
        evaluator.render(Template.parse("{did:d}"))
    with pytest.raises(ValueError, match=r"'%H' formats a date, not a str"):
        evaluator.render(Template.parse("{did:%H}"))


@pytest.mark.parametrize("page", ["docs/rules.md", "docs/ru/rules.md"])
def test_the_docs_table_of_formats_gives_what_it_says(page: str, registry: Registry) -> None:
    """Each row of rules.md's table of formats, rendered at the time it names
    (now in the rules' zone, Moscow, as the engine gives it)."""
    from zoneinfo import ZoneInfo

    text = (Path(__file__).resolve().parents[3] / page).read_text(encoding="utf-8")
    at = datetime(2026, 12, 8, 9, 5, 7, 123456, tzinfo=ZoneInfo("Europe/Moscow"))
    context = Context.for_call(Caller("79161234567"), "74951234567", now=at)
    evaluator = Evaluator(context, context.names(), registry.functions)
    rows = re.findall(r'^\| `"(\{[^`]*)"`[^|]* \| `([^`]*)` \|$', text, flags=re.MULTILINE)
    assert len(rows) == 6, rows
    for source, expected in rows:
        assert evaluator.render(Template.parse(source)) == expected, source
