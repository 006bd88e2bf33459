"""The expression language: what it allows, what it refuses, how None flows."""

from __future__ import annotations

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
