"""Rule expressions and ``"{expr}"`` templates: parsed once, evaluated many times.

Parsing happens when a rule file is loaded: the text becomes a Python ``ast``
tree that is checked against an allow-list of node types (no lambdas, no
comprehensions, no dunders, bounded literals) and kept. Evaluation walks the
stored tree with a trimmed simpleeval evaluator, so a call never pays for
parsing. The evaluator is deliberately narrower than simpleeval's default:

* a call can only name a registered function (``Call.func`` is a ``Name``), so
  no value taken from a context or a lookup can ever be called;
* attributes are read only from mappings (lookup results, event fields,
  lists) and from the declared fields of the context objects;
* reading an attribute or an item of ``None`` gives ``None`` and a missing
  mapping key gives ``None``: ``owner.manager.extension`` is ``None`` when the
  1C lookup failed, so the rule's condition is false and routing falls through
  instead of erroring;
* strings, sequences and numbers are bounded, and so are the trees themselves
  (``router.rules.limits`` holds every bound and says why).
"""

from __future__ import annotations

import ast
import io
import logging
import operator
import re
import time
import tokenize
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from simpleeval import EvalWithCompoundTypes, FeatureNotAvailable, NameNotDefined

from router.errors import FunctionFailed
from router.rules.context import ALLOWED_ATTRS, Context
from router.rules.limits import (
    MAX_EXPONENT,
    MAX_EXPRESSION,
    MAX_EXPRESSION_DEPTH,
    MAX_EXPRESSION_NODES,
    MAX_INT,
    MAX_LITERAL,
    MAX_STRING,
    bounded,
    check_size,
    format_percent,
    size,
)
from router.rules.registry import FunctionSpec
from router.source_place import defined_at

__all__ = [
    "MAX_EXPRESSION",
    "MAX_LITERAL",
    "MAX_STRING",
    "Evaluator",
    "Expression",
    "ExpressionError",
    "Template",
    "Unreadable",
    "dotted_name",
]


class Unreadable(FeatureNotAvailable):  # type: ignore[misc]
    """An expression read a field or an item of a value that has none
    (``owner.tier`` of a set, of a plugin's own class). ``value`` is what was
    read, so the evaluator can name the plugin and lookup that answered it:
    ``cannot read .tier of a set`` alone did not say whose answer it was."""

    def __init__(self, message: str, value: object) -> None:
        super().__init__(message)
        self.value = value


class ExpressionError(ValueError):
    """An expression the rule language refuses; ``line`` is 1-based inside the text."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


_ALLOWED: frozenset[type[ast.AST]] = frozenset(
    {
        ast.Expression,
        ast.BoolOp,
        ast.And,
        ast.Or,
        ast.UnaryOp,
        ast.Not,
        ast.USub,
        ast.UAdd,
        ast.BinOp,
        ast.Add,
        ast.Sub,
        ast.Mult,
        ast.Div,
        ast.FloorDiv,
        ast.Mod,
        ast.Pow,
        ast.Compare,
        ast.Eq,
        ast.NotEq,
        ast.Lt,
        ast.LtE,
        ast.Gt,
        ast.GtE,
        ast.In,
        ast.NotIn,
        ast.Is,
        ast.IsNot,
        ast.IfExp,
        ast.Call,
        ast.keyword,
        ast.Name,
        ast.Load,
        ast.Attribute,
        ast.Subscript,
        ast.Slice,
        ast.Constant,
        ast.Tuple,
        ast.List,
        ast.Set,
    }
)

_REFUSED: Mapping[type[ast.AST], str] = {
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: 'f-strings (use "{...}" templates in action parameters)',
    ast.NamedExpr: "':=' assignments",
    ast.Await: "await",
    ast.Starred: "'*' unpacking",
    ast.Dict: "dict literals",
    ast.BitAnd: "operator '&' (use 'and')",
    ast.BitOr: "operator '|' (use 'or')",
    ast.BitXor: "operator '^'",
    ast.Invert: "operator '~'",
    ast.LShift: "operator '<<'",
    ast.RShift: "operator '>>'",
    ast.MatMult: "operator '@'",
}


def dotted_name(node: ast.expr) -> str | None:
    """``onec.responsible`` for an attribute chain of plain names, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _check_shape(tree: ast.AST) -> None:
    """Bounds depth and size without recursing: the tree may be deep enough to
    overflow the recursion limit of anything that walks it recursively (the
    copy and the compiler in :func:`lower`, the evaluator, the validator)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.expr):
            count += 1
            depth += 1
            if depth > MAX_EXPRESSION_DEPTH:
                raise ExpressionError(
                    f"expression nested deeper than {MAX_EXPRESSION_DEPTH} "
                    "levels (each operator in a chain like a + b + c "
                    "is one level)"
                )
            if count > MAX_EXPRESSION_NODES:
                raise ExpressionError(
                    f"expression has more than {MAX_EXPRESSION_NODES} values and operations"
                )
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))


def _check_tree(tree: ast.AST) -> None:
    _check_shape(tree)
    nodes = list(ast.walk(tree))
    for node in nodes:  # refused constructs first: they explain the rest
        kind = type(node)
        if kind not in _ALLOWED:
            what = _REFUSED.get(kind, kind.__name__)
            raise ExpressionError(f"{what} not allowed", getattr(node, "lineno", 1))
    for node in nodes:
        name = (
            node.id
            if isinstance(node, ast.Name)
            else (node.attr if isinstance(node, ast.Attribute) else None)
        )
        if name is not None and name.startswith("_"):
            raise ExpressionError(f"names starting with '_' are not allowed ({name!r})")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name | ast.Attribute):
            raise ExpressionError("only named functions can be called")
        if isinstance(node, ast.keyword) and node.arg is None:
            raise ExpressionError("'**' unpacking not allowed")
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str | bytes) and len(value) > MAX_LITERAL:
                raise ExpressionError(f"literal longer than {MAX_LITERAL} characters")
            # A float too: 1e400 is inf, which no bound on ints stopped.
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and not abs(value) <= MAX_INT
            ):
                raise ExpressionError("number literal too large")
            if not isinstance(value, str | int | float | bool | type(None)):
                raise ExpressionError(f"{type(value).__name__} literals are not allowed")
    for node in nodes:
        if isinstance(node, ast.BinOp):
            # Arithmetic on numbers written in the rule fails the same way on
            # every call: said at load, with the message a call would get.
            try:
                _fold(node)
            except _NotConstant:
                pass
            except (OverflowError, ZeroDivisionError) as exc:
                raise ExpressionError(str(exc), getattr(node, "lineno", 1)) from None


class _NotConstant(Exception):
    """A part of the expression that only a call can give a value."""


def _fold(node: ast.AST) -> int | float:
    """The value of arithmetic on number literals, by the rules' own bounded operators."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise _NotConstant
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _fold(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        result = OPERATORS[type(node.op)](_fold(node.left), _fold(node.right))
        if isinstance(result, int | float) and not isinstance(result, bool):
            return result
    raise _NotConstant


class Expression:
    """One compiled expression: the source kept for messages, the tree checked at
    load time, and the same tree lowered to Python code (see :func:`lower`)."""

    __slots__ = ("code", "source", "tree")

    def __init__(self, source: str, tree: ast.expr) -> None:
        self.source = source
        self.tree = tree
        self.code = lower(tree)

    @classmethod
    def parse(cls, source: str) -> Expression:
        text = " ".join(source.split("\n")).strip()
        if not text:
            raise ExpressionError("empty expression")
        if len(text) > MAX_EXPRESSION:
            raise ExpressionError(f"expression longer than {MAX_EXPRESSION} characters")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(str(exc.msg) + _single_equals(text)) from None
        except (RecursionError, MemoryError):  # the parser's own nesting limits
            raise ExpressionError("expression nested too deeply") from None
        _check_tree(tree)
        return cls(source, tree.body)

    @classmethod
    def constant(cls, value: bool | int | str | None) -> Expression:
        return cls(repr(value), ast.Constant(value))

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _single_equals(text: str) -> str:
    """A hint for an expression that compares with ``=`` (``did = "7495..."``,
    as in SQL or a spreadsheet): Python's own message is a bare "invalid
    syntax". Given only when writing each ``=`` outside brackets as ``==``
    makes the expression parse (a keyword argument, ``holidays=lists.x``, is
    inside a call's brackets and stays)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return ""
    depth = 0
    fixed: list[tuple[int, str]] = []
    found = False
    for token in tokens:
        kind, string = token.type, token.string
        if kind == tokenize.OP and string in "([{":
            depth += 1
        elif kind == tokenize.OP and string in ")]}":
            depth -= 1
        elif kind == tokenize.OP and string == "=" and depth == 0:
            string, found = "==", True
        fixed.append((kind, string))
    if not found:
        return ""
    try:
        ast.parse(tokenize.untokenize(fixed), mode="eval")
    except (SyntaxError, ValueError):
        return ""
    return ": a comparison is written '==', not '=' (did == \"74951234567\")"


class Template:
    """An action parameter: literal text with ``{expr}`` holes (``{{`` is a brace).

    A hole may end in a format, as in Python's f-strings: ``{now:%H:%M}`` (a
    date, strftime codes), ``{now.minute:02}`` (a number or text, a bounded
    part of the format mini-language): ``formats`` maps the index of each such
    hole in ``parts`` to its format (:func:`check_format`)."""

    __slots__ = ("formats", "parts", "source")

    def __init__(
        self,
        source: str,
        parts: tuple[str | Expression, ...],
        formats: Mapping[int, str] | None = None,
    ) -> None:
        self.source = source
        self.parts = parts
        self.formats: Mapping[int, str] = formats or {}

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return tuple(p for p in self.parts if isinstance(p, Expression))

    @classmethod
    def parse(cls, source: str) -> Template:
        parts: list[str | Expression] = []
        formats: dict[int, str] = {}
        text: list[str] = []
        i, n = 0, len(source)
        while i < n:
            ch = source[i]
            if ch == "{" and source.startswith("{{", i):
                text.append("{")
                i += 2
            elif ch == "}" and source.startswith("}}", i):
                text.append("}")
                i += 2
            elif ch == "}":
                raise ExpressionError("single '}' in template (write '}}' for a brace)")
            elif ch == "{":
                end = _outside_brackets(source, i + 1, "}")
                if end < 0:
                    raise ExpressionError("unclosed '{'")
                if text:
                    parts.append("".join(text))
                    text = []
                inner = source[i + 1 : end]
                colon = _outside_brackets(inner, 0, ":")
                if colon < 0:
                    parts.append(Expression.parse(inner))
                else:
                    expression = Expression.parse(inner[:colon])
                    spec = inner[colon + 1 :]
                    check_format(spec, expression)
                    formats[len(parts)] = spec
                    parts.append(expression)
                i = end + 1
            else:
                text.append(ch)
                i += 1
        if text:
            parts.append("".join(text))
        return cls(source, tuple(parts), formats)


#: The strftime codes a date's format may use (C89's and ISO weeks: the same
#: on every libc); ``%%`` is a percent sign.
_DATE_CODES = frozenset("aAbBdHIjmMpSyYzZuwGVU%")
#: A number's or text's format: fill and align, sign, zero padding, a width
#: and a precision of at most two digits (the text it makes stays short), a
#: thousands separator and a type.
_VALUE_FORMAT = re.compile(
    r"(?:[^{}]?[<>^=])?[-+ ]?0?[0-9]{0,2}[,_]?(?:\.[0-9]{1,2})?[bdoxXeEfFgGs]?"
)
#: The longest format a hole may end in.
MAX_FORMAT = 40


def _is_date_format(spec: str) -> bool:
    return "%" in spec


def check_format(spec: str, expression: Expression | None = None) -> None:
    """ExpressionError for a format a template hole may not end in: empty, too
    long, a strftime code not in :data:`_DATE_CODES`, a width over 99; or, for
    an ``expression`` known to be a date (``now``) or a number (``now.hour``),
    the other kind's format."""
    if not spec:
        raise ExpressionError("empty format after ':' (write {now:%H:%M} or {now.minute:02})")
    if len(spec) > MAX_FORMAT or not spec.isprintable():
        raise ExpressionError(f"format {spec[:MAX_FORMAT]!r} is not a short one-line text")
    date = _is_date_format(spec)
    if date:
        codes = re.findall(r"%(.?)", spec)
        bad = [c for c in codes if c not in _DATE_CODES]
        if bad:
            raise ExpressionError(
                f"format {spec!r}: unknown date code '%{bad[0]}' (use %Y %m %d %H %M %S, "
                "%a %b for names, %% for a percent sign)"
            )
    elif not _VALUE_FORMAT.fullmatch(spec):
        raise ExpressionError(
            f"format {spec!r} is neither a date's (%H:%M) nor a number's (02, >5, .2f; "
            "a width of at most 99)"
        )
    if expression is None:
        return
    tree = expression.tree
    if isinstance(tree, ast.Name) and tree.id == "now" and not date:
        raise ExpressionError(
            f"'now' is a date: its format is strftime codes ({{now:%H:%M}}), not {spec!r}"
        )
    if (
        date
        and isinstance(tree, ast.Attribute)
        and isinstance(tree.value, ast.Name)
        and tree.value.id == "now"
    ):
        raise ExpressionError(
            f"'now.{tree.attr}' is a number: write {{now.{tree.attr}:02}} or "
            f"{{now:{spec}}}, not {{now.{tree.attr}:{spec}}}"
        )


def formatted(value: object, spec: str) -> str:
    """``value`` in the format ``spec`` (:func:`check_format` passed it)."""
    if isinstance(value, datetime):
        if not _is_date_format(spec):
            raise ValueError(f"a date is formatted with strftime codes (%H:%M), not {spec!r}")
        return value.strftime(spec)
    if _is_date_format(spec):
        raise ValueError(f"{spec!r} formats a date, not a {type(value).__name__}")
    if isinstance(value, bool):
        value = "true" if value else "false"
    check_size(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError) as exc:  # 'd' for text: a value of the call, not the file
        kind = "text" if isinstance(value, str) else type(value).__name__
        raise ValueError(f"format {spec!r} does not fit a {kind} ({exc})") from None


def _outside_brackets(source: str, start: int, wanted: str) -> int:
    """The index of the first ``wanted`` character from ``start`` on that stands
    outside brackets and quotes, or -1: a template hole's closing '}', or the ':'
    that starts its format (a slice's ``x[1:]`` is inside). One scanner for
    both, so the two never disagree on where a bracket or a quote is."""
    depth, quote = 0, ""
    for j in range(start, len(source)):
        ch = source[j]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == wanted and depth == 0:
            return j
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return -1


# --- bounded operators -------------------------------------------------------------------

_bounded = bounded


def _add(a: Any, b: Any) -> Any:
    return _bounded(a + b)


def _sub(a: Any, b: Any) -> Any:
    return _bounded(a - b)


def _mult(a: Any, b: Any) -> Any:
    # Checked before multiplying: "x" * 10**9 must never be built. Items count
    # in full (``size``), so [[x] * 100] * 100 is 10,000 items, not 100.
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int) and times > 0:
            # a collection's own bracket is counted once, its items ``times`` times
            grown = len(seq) * times if isinstance(seq, str) else 1 + (size(seq) - 1) * times
            if grown > MAX_STRING:
                raise OverflowError(f"value longer than {MAX_STRING} characters or items")
    return _bounded(a * b)


def _div(a: Any, b: Any) -> Any:
    # int(did) / 1e-25 is a float past any bound an int has.
    return _bounded(a / b)


def _floordiv(a: Any, b: Any) -> Any:
    return _bounded(a // b)


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):
        return format_percent(a, b)
    return _bounded(a % b)


def _collection(value: Any) -> Any:
    """A list, tuple or set literal: its items may each be as big as allowed."""
    check_size(value)
    return value


def _constant_literal(node: ast.AST) -> bool:
    """``("7495...", "7499...")`` needs no check per call (the common ``did in
    (...)`` stays cheap): its size is bounded by MAX_EXPRESSION < MAX_STRING."""
    return isinstance(node, ast.List | ast.Tuple | ast.Set) and all(
        isinstance(item, ast.Constant) for item in node.elts
    )


def _pow(a: Any, b: Any) -> Any:
    if abs(b) > MAX_EXPONENT:
        raise OverflowError("exponent too large")
    return _bounded(a**b)


def _contains(item: Any, container: Any) -> bool:
    return False if container is None else item in container


def _not_contains(item: Any, container: Any) -> bool:
    return True if container is None else item not in container


OPERATORS: Mapping[type[ast.AST], Callable[..., Any]] = {
    ast.Add: _add,
    ast.Sub: _sub,
    ast.Mult: _mult,
    ast.Pow: _pow,
    ast.Div: _div,
    ast.FloorDiv: _floordiv,
    ast.Mod: _mod,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: _contains,
    ast.NotIn: _not_contains,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


class Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """Evaluates stored trees for one trigger firing (one call, one event).

    One instance per firing, so concurrent calls never share ``names``. The
    base ``__init__`` is skipped on purpose: it builds a table of bound methods
    per instance, which costs more than evaluating a typical condition; the
    dispatch table below is built once per class instead.
    """

    def __init__(
        self, context: Context, names: dict[str, object], functions: Mapping[str, FunctionSpec]
    ) -> None:
        self.context = context
        self.names = names
        self.functions = functions
        self.operators = OPERATORS
        self.allowed_attrs = None
        self.expr = ""
        self._max_count = 0

    def __del__(self) -> None:
        """The base class clears a table we never build."""

    def eval(self, expr: str, previously_parsed: ast.AST | None = None) -> Any:
        raise NotImplementedError("use evaluate() with a parsed Expression")

    def evaluate(self, expression: Expression) -> Any:
        code = expression.code
        if code is not None:
            try:
                return code(self.names, self.context, self.functions)
            except KeyError as exc:  # names are items of self.names in compiled code
                key = exc.args[0] if exc.args else None
                if isinstance(key, str) and key not in self.names:
                    raise NameNotDefined(key, expression.source) from None
                raise
        self.expr = expression.source
        return self._eval(expression.tree)

    def render(self, template: Template, filled: list[str] | None = None) -> str | None:
        """A lone ``{expr}`` that is None gives None (the parameter is left out).

        ``filled`` collects the text each ``{expr}`` gave, for checks of what
        the file did not write itself (:attr:`ActionSpec.filled`).
        """
        parts = template.parts
        formats = template.formats
        if len(parts) == 1 and isinstance(parts[0], Expression):
            value = self.evaluate(parts[0])
            if value is None:
                return None
            text = _text(value, formats.get(0))
            if filled is not None:
                filled.append(text)
            return text
        out: list[str] = []
        length = 0
        for index, part in enumerate(parts):
            if isinstance(part, str):
                out.append(part)
            else:
                value = self.evaluate(part)
                out.append("" if value is None else _text(value, formats.get(index)))
                if filled is not None:
                    filled.append(out[-1])
            length += len(out[-1])
            if length > MAX_STRING:  # checked per part: a template may have thousands
                raise OverflowError(f"value longer than {MAX_STRING} characters")
        return "".join(out)

    def _eval(self, node: ast.AST) -> Any:
        handler = _DISPATCH.get(type(node))
        if handler is None:
            raise FeatureNotAvailable(f"{type(node).__name__} is not available")
        return handler(self, node)

    def _eval_name(self, node: ast.Name) -> Any:
        try:
            return self.names[node.id]
        except KeyError:
            raise NameNotDefined(node.id, self.expr) from None

    def _eval_constant(self, node: ast.Constant) -> Any:
        return node.value

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        return _attr(self._eval(node.value), node.attr)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        return _item(self._eval(node.value), self._eval(node.slice))

    def _eval_call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)  # checked when the rule was loaded
        args = tuple(self._eval(a) for a in node.args)
        kwargs = {k.arg: self._eval(k.value) for k in node.keywords if k.arg}
        return _call(self.functions, self.context, node.func.id, args, kwargs)

    def _eval_list(self, node: ast.List) -> Any:
        value = [self._eval(item) for item in node.elts]
        return value if _constant_literal(node) else _collection(value)

    def _eval_tuple(self, node: ast.Tuple) -> Any:
        value = tuple(self._eval(item) for item in node.elts)
        return value if _constant_literal(node) else _collection(value)

    def _eval_set(self, node: ast.Set) -> Any:
        value = {self._eval(item) for item in node.elts}
        return value if _constant_literal(node) else _collection(value)


def _text(value: object, spec: str | None = None) -> str:
    if spec is not None:
        text = formatted(value, spec)
        if len(text) > MAX_STRING:
            raise OverflowError(f"value longer than {MAX_STRING}")
        return text
    if isinstance(value, bool):
        return "true" if value else "false"
    check_size(value)  # before str(): a nested list prints every shared part
    text = str(value)
    if len(text) > MAX_STRING:
        raise OverflowError(f"value longer than {MAX_STRING}")
    return text


_DISPATCH: Mapping[type[ast.AST], Callable[[Evaluator, Any], Any]] = {
    ast.Name: Evaluator._eval_name,
    ast.Constant: Evaluator._eval_constant,
    ast.Attribute: Evaluator._eval_attribute,
    ast.Subscript: Evaluator._eval_subscript,
    ast.Call: Evaluator._eval_call,
    ast.Compare: EvalWithCompoundTypes._eval_compare,
    ast.BoolOp: EvalWithCompoundTypes._eval_boolop,
    ast.UnaryOp: EvalWithCompoundTypes._eval_unaryop,
    ast.BinOp: EvalWithCompoundTypes._eval_binop,
    ast.IfExp: EvalWithCompoundTypes._eval_ifexp,
    ast.Slice: EvalWithCompoundTypes._eval_slice,
    ast.Tuple: Evaluator._eval_tuple,
    ast.List: Evaluator._eval_list,
    ast.Set: Evaluator._eval_set,
}


# --- lowering to Python code ---------------------------------------------------------------
#
# Walking the tree costs about 3 us per condition, which a thousand generic
# rules turn into milliseconds per call (docs/performance.md). So each checked
# tree is also rewritten into a Python lambda with the same semantics and
# compiled once. Safety does not come from the Python sandbox (there is none):
# the tree was already restricted by _check_tree, and the rewrite leaves no
# attribute access, no builtins and no name lookup of its own in the code:
# names become items of the names dict, attributes and items go through the
# None-safe, allow-listed helpers below, calls go to registered functions
# only, and + - * ** keep their size bounds. Anything the rewrite does not
# cover keeps the tree walker.


class _Unsupported(Exception):
    pass


#: Mappings read by exact type first: ``lists`` is a mappingproxy, and the
#: ``Mapping`` ABC check below costs more than the read.
_MAPPINGS = (dict, MappingProxyType)


def _attr(value: Any, name: str) -> Any:
    if value is None:
        return None
    if type(value) in _MAPPINGS:
        return value.get(name)
    allowed = ALLOWED_ATTRS.get(type(value))
    if allowed is not None and name in allowed:
        return getattr(value, name)
    if isinstance(value, Mapping):
        return value.get(name)
    kind = "date" if isinstance(value, datetime) else type(value).__name__
    raise Unreadable(f"cannot read .{name} of a {kind}", value)


def _item(container: Any, key: Any) -> Any:
    if container is None:
        return None
    if type(container) in _MAPPINGS or isinstance(container, Mapping):
        return container.get(key)
    if isinstance(container, str | list | tuple):
        try:
            return container[key]
        except IndexError:
            return None
    raise Unreadable(f"cannot index a {type(container).__name__}", container)


def _call(
    functions: Mapping[str, FunctionSpec],
    context: Context,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    spec = functions[name]
    started = time.perf_counter()
    try:
        if spec.pass_context:
            value = spec.func(context, *args, **kwargs)
        else:
            value = spec.func(*args, **kwargs)
    except Exception as exc:
        raise FunctionFailed(name, exc) from exc
    finally:
        held = time.perf_counter() - started
        if held >= BLOCKING_WARN:
            _function_held(spec, held)
    return _bounded(value)


#: Seconds a rule function may hold the event loop before it is said at WARNING
#: (as a plain hook or lookup: router.plugins.BLOCKING_WARN).
BLOCKING_WARN = 0.5
#: (plugin, function) already said to have held the event loop (bounded).
_held_said: set[tuple[str | None, str]] = set()
_plugin_log = logging.getLogger("router.plugins")


def _function_held(spec: FunctionSpec, held: float) -> None:
    """A rule function that held the event loop (``time.sleep``, ``requests``,
    a file on a slow mount): said once per function at WARNING, naming the
    plugin, as a plain lookup or hook is. Rule functions are synchronous, so
    nothing else ran meanwhile and no deadline could cut it off; it was said
    nowhere, the decision line's time alone growing."""
    key = (spec.owner, spec.name)
    if key in _held_said or len(_held_said) >= 1000:
        return
    _held_said.add(key)
    who = f"plugin {spec.owner!r}" if spec.owner is not None else "a plugin"
    _plugin_log.warning(
        "%s: its rule function %s held the event loop for %.1f s, and no call was "
        "routed and no event read meanwhile; a rule function must answer from memory "
        "(fill a cache in a timed job or a lookup, or make it a lookup) "
        "(docs/plugins.md, Async hooks; said once per function)%s",
        who,
        spec.name,
        held,
        defined_at(spec.func),
    )


_HELPERS: dict[str, Any] = {
    "__builtins__": {},
    "_attr": _attr,
    "_item": _item,
    "_call": _call,
    "_slice": slice,
    "_add": _add,
    "_sub": _sub,
    "_mult": _mult,
    "_pow": _pow,
    "_mod": _mod,
    "_div": _div,
    "_floordiv": _floordiv,
    "_in": _contains,
    "_not_in": _not_contains,
    "_collection": _collection,
}
_BOUNDED_OPS: Mapping[type[ast.AST], str] = {
    ast.Add: "_add",
    ast.Sub: "_sub",
    ast.Mult: "_mult",
    ast.Pow: "_pow",
    ast.Mod: "_mod",
    ast.Div: "_div",
    ast.FloorDiv: "_floordiv",
}


def _helper(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


class _Lower(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.expr:
        return ast.Subscript(ast.Name("_n", ast.Load()), ast.Constant(node.id), ast.Load())

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        return _helper("_attr", self.visit(node.value), ast.Constant(node.attr))

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        key = node.slice
        if isinstance(key, ast.Slice):
            parts = [
                self.visit(p) if p is not None else ast.Constant(None)
                for p in (key.lower, key.upper, key.step)
            ]
            index: ast.expr = _helper("_slice", *parts)
        else:
            index = self.visit(key)
        return _helper("_item", self.visit(node.value), index)

    def visit_Call(self, node: ast.Call) -> ast.expr:
        if not isinstance(node.func, ast.Name) or any(k.arg is None for k in node.keywords):
            raise _Unsupported
        args = ast.Tuple([self.visit(a) for a in node.args], ast.Load())
        kwargs = ast.Dict(
            [ast.Constant(k.arg) for k in node.keywords],
            [self.visit(k.value) for k in node.keywords],
        )
        return _helper(
            "_call",
            ast.Name("_f", ast.Load()),
            ast.Name("_c", ast.Load()),
            ast.Constant(node.func.id),
            args,
            kwargs,
        )

    def _collection(self, node: ast.List | ast.Tuple | ast.Set) -> ast.expr:
        if _constant_literal(node):
            return node
        return _helper("_collection", self.generic_visit(node))  # type: ignore[arg-type]

    visit_List = visit_Tuple = visit_Set = _collection

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        helper = _BOUNDED_OPS.get(type(node.op))
        left, right = self.visit(node.left), self.visit(node.right)
        if helper is not None:
            return _helper(helper, left, right)
        return ast.BinOp(left, node.op, right)

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        membership = [isinstance(op, ast.In | ast.NotIn) for op in node.ops]
        if not any(membership):
            return ast.Compare(
                self.visit(node.left), node.ops, [self.visit(c) for c in node.comparators]
            )
        if len(node.ops) != 1:
            raise _Unsupported  # 'a < b in c': rare, left to the tree walker
        name = "_in" if isinstance(node.ops[0], ast.In) else "_not_in"
        return _helper(name, self.visit(node.left), self.visit(node.comparators[0]))


def lower(
    tree: ast.expr,
) -> Callable[[dict[str, object], Context, Mapping[str, FunctionSpec]], Any] | None:
    """The checked tree as a compiled ``lambda names, context, functions: ...``,
    or None when it uses something only the tree walker handles."""
    import copy

    try:
        body = _Lower().visit(copy.deepcopy(tree))
    except _Unsupported:
        return None
    params = ast.arguments(
        posonlyargs=[],
        args=[ast.arg("_n"), ast.arg("_c"), ast.arg("_f")],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=[],
    )
    module = ast.Expression(ast.Lambda(params, body))
    ast.fix_missing_locations(module)
    function: Callable[[dict[str, object], Context, Mapping[str, FunctionSpec]], Any] = eval(
        compile(module, "<rule expression>", "eval"), dict(_HELPERS)
    )
    return function
