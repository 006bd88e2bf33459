"""Stage 2 of validation: every name in every expression, against what exists.

simpleeval would only notice ``workhour(...)`` when a call arrives at 3 a.m.;
like rule-engine we parse each expression with ``ast`` when the file loads and
check every name, field and call against the trigger, the lookups declared
above it, the lists and the registry, with a did-you-mean for typos. The
parsed trees are kept, so the check and the run use the same compiled form.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from router.errors import RuleValidationError
from router.rules.context import FIELDS, TRIGGER_NAMES
from router.rules.expr import Expression, ExpressionError, Template, dotted_name
from router.rules.loader import Node
from router.rules.model import CompiledAction, CompiledLookup, Rule
from router.rules.registry import UNKNOWN, Registry
from router.rules.schema import RuleSpec
from router.rules.suggest import did_you_mean

__all__ = ["compile_rule"]

_ALL_TRIGGER_NAMES = {name for names in TRIGGER_NAMES.values() for name in names}


@dataclass(frozen=True, slots=True)
class _Scope:
    """What one expression may see, and why something else is missing."""

    place: str
    trigger: str
    visible: frozenset[str]
    later_lookups: frozenset[str]
    in_if: bool


class _Checker:
    def __init__(
        self,
        spec_name: str,
        file: str,
        registry: Registry,
        lists: Collection[str],
        trigger: str,
        broken: Collection[str] = (),
    ) -> None:
        self.rule = spec_name
        self.broken = broken
        self.file = file
        self.registry = registry
        self.lists = lists
        self.trigger = trigger
        self.base = frozenset((*TRIGGER_NAMES[trigger], "lists"))
        self.errors: list[RuleValidationError] = []
        self.line = 0
        self.unnormalized: Mapping[str, tuple[str, str]] = {}

    def error(self, message: str, line: int) -> None:
        # A name used twice in one expression (``t.tier == "a" or t.tier == "b"``
        # with ``t`` a lookup, in 'if') is one mistake: said once, not a line each.
        if any(e.detail == message and e.line == line for e in self.errors):
            return
        self.errors.append(RuleValidationError(message, file=self.file, line=line, rule=self.rule))

    def scope(
        self, place: str, lookups: Collection[str], later: Collection[str], in_if: bool = False
    ) -> _Scope:
        return _Scope(place, self.trigger, self.base | frozenset(lookups), frozenset(later), in_if)

    # --- parsing ---------------------------------------------------------------------

    def parse(self, node: Node, place: str) -> Expression | None:
        line = _line(node)
        try:
            return Expression.parse(str(node.value))
        except ExpressionError as exc:
            self.error(f"invalid expression in {place}: {exc}", line)
            return None

    # --- names -----------------------------------------------------------------------

    def check(self, tree: ast.AST, scope: _Scope, line: int) -> None:
        self.line = line
        self._visit(tree, scope)

    def _visit(self, node: ast.AST, scope: _Scope) -> None:
        if isinstance(node, ast.Name):
            self._name(node.id, scope)
        elif isinstance(node, ast.Attribute):
            self._attribute(node, scope)
        elif isinstance(node, ast.Call):
            self._call(node, scope)
        else:
            if isinstance(node, ast.Compare):
                self._compare(node, scope)
            for child in ast.iter_child_nodes(node):
                self._visit(child, scope)

    def _compare(self, node: ast.Compare, scope: _Scope) -> None:
        """A text field against a number written in the rule (``event.cause
        == 19``), or a number field against text (``now.hour == "9"``): never
        equal, so the rule silently never matched; ordered, it failed every call."""
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            for field, other in ((left, right), (right, left)):
                root = field.value if isinstance(field, ast.Attribute) else field
                if not (isinstance(root, ast.Name) and root.id in scope.visible):
                    continue  # an unknown name is reported as such
                problem = _mismatch(field, op, other) or self._unnormalized(field, op, other)
                if problem is not None:
                    self.error(problem, self.line)
                    break
            left = right

    def _unnormalized(self, field: ast.expr, op: ast.cmpop, other: ast.expr) -> str | None:
        """``did == "+7 495 123-45-67"``: ``did`` and ``caller.number`` are
        normalized (``74951234567``), so a number written otherwise never
        equals them; the rule loaded and never matched."""
        name = _NORMALIZED.get(ast.unparse(field))
        if name is None or not isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
            return None
        if isinstance(op, ast.In | ast.NotIn) and _is_list(other):
            assert isinstance(other, ast.Attribute)
            found = self.unnormalized.get(other.attr)
            if found is None:
                return None
            kind, entry = found
            if kind == "dates":
                return f"list {other.attr!r} holds dates, which {name!r} (a number) never equals"
            return (
                f"list {other.attr!r} is {kind}, kept as written, and holds "
                f"{json.dumps(entry, ensure_ascii=False)}, which {name!r} (normalized) never "
                f"equals; make it a list of numbers (no 'type: {kind}'), whose entries are "
                "normalized as the call's are"
            )
        if isinstance(op, ast.In | ast.NotIn) and isinstance(other, ast.Tuple | ast.List | ast.Set):
            items = other.elts
        elif isinstance(op, ast.Eq | ast.NotEq):
            items = [other]
        else:
            return None
        texts = [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        fixed = {text: self._normalized(text) for text in texts}
        if all(fixed[text] == text for text in texts):
            return None
        symbol = _SYMBOLS[type(op)]
        bad = next(text for text in texts if fixed[text] != text)
        if not fixed[bad]:
            hint = "; caller.raw is the number as the caller sent it" if name != "did" else ""
            return (
                f"{name!r} holds digits only (normalized), so {json.dumps(bad)} never "
                f"equals it{hint}"
            )
        if isinstance(op, ast.Eq | ast.NotEq):
            written = json.dumps(fixed[bad])
        else:
            assert isinstance(other, ast.Tuple | ast.List | ast.Set)
            written = _sequence(
                other,
                [
                    json.dumps(fixed.get(e.value) or e.value)
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    else ast.unparse(e)
                    for e in items
                ],
            )
        return (
            f"{name!r} is normalized ({json.dumps(bad)} arrives as "
            f"{json.dumps(fixed[bad])}), so {json.dumps(bad)} never equals it; "
            f"write {name} {symbol} {written}"
        )

    def _normalized(self, text: str) -> str:
        try:
            return self.registry.normalize_number(text)
        except Exception:  # a plugin's plan that fails here fails for every call too
            return text

    def _name(self, name: str, scope: _Scope) -> bool:
        if name in scope.visible:
            return True
        line = self.line
        if name in self.registry.functions:
            self.error(f"function {name!r} must be called: {name}(...)", line)
        elif name in scope.later_lookups and scope.in_if:
            self.error(
                f"lookup {name!r} is not resolved yet in 'if'; use it in 'when' or in actions", line
            )
        elif name in scope.later_lookups:
            self.error(f"lookup {name!r} is used before it is declared", line)
        elif name in _ALL_TRIGGER_NAMES:
            providers = [k for k, names in TRIGGER_NAMES.items() if name in names]
            shown = " or ".join(
                f"'on: {k}'" if k != "schedule" else "'schedule'" for k in providers
            )
            self.error(
                f"{name!r} is not available for {_trigger_text(self.trigger)} (only for {shown})",
                line,
            )
        else:
            self.error(f"unknown name {name!r}{did_you_mean(name, scope.visible)}", line)
        return False

    def _attribute(self, node: ast.Attribute, scope: _Scope) -> None:
        if not isinstance(node.value, ast.Name):
            self._visit(node.value, scope)
            return
        root = node.value.id
        if not self._name(root, scope):
            return
        if root == "lists":
            if node.attr in self.broken:
                self.error(f"list {node.attr!r} is not available (it has errors)", self.line)
            elif node.attr not in self.lists:
                self.error(
                    f"unknown list {node.attr!r}{did_you_mean(node.attr, self.lists)}", self.line
                )
            return
        fields = FIELDS.get(root)
        if fields is None:
            return
        if not fields:
            self.error(f"{root!r} is a plain value and has no fields", self.line)
        elif node.attr not in fields:
            self.error(
                f"unknown field {node.attr!r} of {root!r}{did_you_mean(node.attr, fields)}",
                self.line,
            )

    def _call(self, node: ast.Call, scope: _Scope) -> None:
        registry = self.registry
        name = dotted_name(node.func)
        for child in (*node.args, *(k.value for k in node.keywords)):
            self._visit(child, scope)
        if name is not None and name in registry.lookups:
            self.error(
                f"{name!r} is a lookup: declare it under 'lookup:' and use the name you give it",
                self.line,
            )
            return
        if isinstance(node.func, ast.Attribute):
            assert name is None or "." in name
            root = name.split(".")[0] if name else ""
            if name is None or root in scope.visible:
                self.error(
                    f"method calls are not allowed; {_as_function(node, registry)}", self.line
                )
            else:
                options = [*registry.functions, *registry.lookups]
                why = registry.why_missing(name) or did_you_mean(name, options)
                self.error(f"unknown function {name!r}{why}", self.line)
            return
        assert name is not None
        spec = registry.functions.get(name)
        if spec is None:
            why = registry.why_missing(name) or did_you_mean(name, registry.functions)
            self.error(f"unknown function {name!r}{why}", self.line)
            return
        self._arguments(name, spec.signature, node, spec.check)

    def _arguments(
        self, name: str, signature: inspect.Signature, node: ast.Call, check: object = None
    ) -> None:
        args = [_constant(a) for a in node.args]
        kwargs = {k.arg: _constant(k.value) for k in node.keywords if k.arg}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            self.error(f"wrong arguments for {name!r}: {exc}", self.line)
            return
        if callable(check):
            try:
                check(*args, **kwargs)
            except ValueError as exc:
                self.error(str(exc), self.line)

    # --- lookups and actions ---------------------------------------------------------

    def lookup(self, name: str, node: Node, scope: _Scope) -> CompiledLookup | None:
        if name in _ALL_TRIGGER_NAMES or name == "lists" or name in self.registry.functions:
            self.error(f"lookup name {name!r} hides a built-in name; choose another", node.line)
            return None
        expression = self.parse(node, f"lookup {name!r}")
        if expression is None:
            return None
        tree, line = expression.tree, _line(node)
        self.line = line
        target = dotted_name(tree.func) if isinstance(tree, ast.Call) else None
        if target is None:
            self.error(
                f"lookup {name!r} must be a call of a lookup, like onec.responsible(caller.number)",
                line,
            )
            return None
        assert isinstance(tree, ast.Call)
        spec = self.registry.lookups.get(target)
        if spec is None:
            if target in self.registry.functions:
                self.error(
                    f"{target!r} is a function, not a lookup: use it in 'if' or 'when'", line
                )
            else:
                registry = self.registry
                why = registry.why_missing(target) or did_you_mean(target, registry.lookups)
                self.error(f"unknown lookup {target!r}{why}", line)
            return None
        before = len(self.errors)
        for child in (*tree.args, *(k.value for k in tree.keywords)):
            self._visit(child, scope)
        self._arguments(target, spec.signature, tree)
        if len(self.errors) != before:
            return None
        args = tuple(Expression(ast.unparse(a), a) for a in tree.args)
        kwargs = tuple(
            (k.arg, Expression(ast.unparse(k.value), k.value)) for k in tree.keywords if k.arg
        )
        return CompiledLookup(name, target, args, kwargs, str(node.value), line)

    def action(
        self, kind: str, line: int, params: Mapping[str, Node], scope: _Scope
    ) -> CompiledAction | None:
        spec = self.registry.actions[kind]
        compiled: list[tuple[str, str | Template]] = []
        before = len(self.errors)
        for key, node in params.items():
            value = node.value
            if isinstance(value, str) and ("{" in value or "}" in value):
                place = f"action {kind!r} parameter {key!r}"
                try:
                    template = Template.parse(value)
                except ExpressionError as exc:
                    self.error(f"invalid template in {place}: {exc}", _line(node))
                    continue
                for expression in template.expressions:
                    self.check(expression.tree, scope, _line(node))
                compiled.append((key, template))
            else:
                compiled.append((key, _scalar_text(value)))
        if len(self.errors) != before:
            return None
        return CompiledAction(kind, spec, tuple(compiled), line)


#: Fields that are always text (``event.<any>`` too) and always whole numbers.
_TEXT_FIELDS: frozenset[tuple[str, str]] = frozenset(
    [("caller", f) for f in ("number", "raw", "name")]
    + [("call", f) for f in ("channel", "uniqueid", "linkedid", "context", "exten")]
)
#: The call's values that are normalized by the number plan (rules.md).
_NORMALIZED = {"did": "did", "caller.number": "caller.number"}
_NUMBER_FIELDS: frozenset[tuple[str, str]] = frozenset(
    ("now", f) for f in ("year", "month", "day", "hour", "minute", "second")
)


def _field_kind(node: ast.expr) -> tuple[str, str] | None:
    """``("text", "event.cause")``, ``("number", "now.hour")`` or None."""
    if isinstance(node, ast.Name) and node.id == "did":
        return "text", "did"
    if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
        return None
    root, attr = node.value.id, node.attr
    if root == "event" or (root, attr) in _TEXT_FIELDS:
        return "text", f"{root}.{attr}"
    if (root, attr) in _NUMBER_FIELDS:
        return "number", f"{root}.{attr}"
    return None


def _is_list(node: ast.expr) -> bool:
    """``lists.<name>``."""
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "lists"
    )


def _literal_kind(node: ast.expr) -> str | None:
    signed = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
    if isinstance(node, ast.UnaryOp) and signed:
        node = node.operand
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    if isinstance(node.value, str):
        return None if signed else "text"  # -"9" fails on its own
    return "number" if isinstance(node.value, int | float) else None


_SYMBOLS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _mismatch(field: ast.expr, op: ast.cmpop, other: ast.expr) -> str | None:
    """Why comparing ``field`` with the literal ``other`` by ``op`` is a sure
    mistake (``event.cause == 19``), with the comparison to write, or None."""
    found = _field_kind(field)
    symbol = _SYMBOLS.get(type(op))
    if found is None or symbol is None:
        return None
    kind, name = found
    wrong = "number" if kind == "text" else "text"
    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(other, ast.Tuple | ast.List | ast.Set):
            return None
        if not any(_literal_kind(e) == wrong for e in other.elts):
            return None
        fixed = [_as(kind, e) if _literal_kind(e) == wrong else _show(e) for e in other.elts]
        fix = (
            f"compare with {_PLURAL[kind]}"
            if None in fixed
            else f"write {name} {symbol} {_sequence(other, [str(f) for f in fixed])}"
        )
        shown_items = _sequence(other, [_show(e) for e in other.elts])
        return (
            f"{name!r} is {_KINDS[kind]}, and {shown_items} holds "
            f"{_PLURAL[wrong]} it never equals; {fix}"
        )
    if _literal_kind(other) != wrong:
        return None
    fixed_value = _as(kind, other)
    if isinstance(op, ast.Eq | ast.NotEq):
        always = "false" if isinstance(op, ast.Eq) else "true"
        fix = (
            f"compare with {_KINDS[kind]}"
            if fixed_value is None
            else f"write {name} {symbol} {fixed_value}"
        )
        return (
            f"{name!r} is {_KINDS[kind]} and {_show(other)} is {_KINDS[wrong]}: never "
            f"equal, so {symbol!r} is always {always}; {fix}"
        )
    if kind == "text":
        fix = f"write int({name}) {symbol} {ast.unparse(other)}"
    elif fixed_value is None:
        fix = f"compare with {_KINDS[kind]}"
    else:
        fix = f"write {name} {symbol} {fixed_value}"
    return (
        f"{name!r} is {_KINDS[kind]} and {_show(other)} is {_KINDS[wrong]}: "
        f"{symbol!r} between them fails on every call; {fix}"
    )


_KINDS = {"text": "text", "number": "a number"}
_WHOLE = re.compile(r"[+-]?[0-9]{1,30}")
_PLURAL = {"text": "text", "number": "numbers"}


def _sequence(node: ast.Tuple | ast.List | ast.Set, items: list[str]) -> str:
    brackets = {ast.Tuple: "()", ast.List: "[]", ast.Set: "{}"}[type(node)]
    one = "," if len(items) == 1 and isinstance(node, ast.Tuple) else ""
    return f"{brackets[0]}{', '.join(items)}{one}{brackets[1]}"


def _show(node: ast.expr) -> str:
    """A literal as the rule would write it: text in double quotes."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return json.dumps(node.value, ensure_ascii=False)
    return ast.unparse(node)


def _as(kind: str, literal: ast.expr) -> str | None:
    """The literal as ``kind`` would have it (``"19"`` for 19, ``9`` for
    "9"), or None for text that is no number."""
    if kind == "text":
        return json.dumps(ast.unparse(literal))
    assert isinstance(literal, ast.Constant)
    text = str(literal.value).strip()
    return str(int(text)) if _WHOLE.fullmatch(text) else None


def _line(node: Node) -> int:
    """Block scalars (``|``, ``>``) start on the line after their key."""
    return node.line + (1 if node.style in ("|", ">") else 0)


def _constant(node: ast.expr) -> object:
    return node.value if isinstance(node, ast.Constant) else UNKNOWN


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _trigger_text(kind: str) -> str:
    return "'schedule' rules" if kind == "schedule" else f"'on: {kind}'"


def compile_rule(
    spec: RuleSpec,
    registry: Registry,
    lists: Collection[str],
    order: int,
    broken: Collection[str] = (),
    unnormalized: Mapping[str, tuple[str, str]] | None = None,
) -> Rule | list[RuleValidationError]:
    """Checks every expression of a shape-valid rule and compiles it.

    ``broken`` names lists that failed to load, for a clearer message than
    "unknown list". ``unnormalized``: the lists (``text``, ``dates``) holding
    an entry that is no normalized number, as (type, entry), so ``did in
    lists.x`` is not left to never match.
    """
    checker = _Checker(spec.name, spec.file, registry, lists, spec.trigger.kind, broken)
    checker.unnormalized = unnormalized or {}
    lookup_names = [name for name, _ in spec.lookups]

    condition = None
    if spec.condition is not None:
        condition = checker.parse(spec.condition, "'if'")
        if condition is not None:
            checker.check(
                condition.tree,
                checker.scope("'if'", (), lookup_names, in_if=True),
                _line(spec.condition),
            )

    lookups: list[CompiledLookup] = []
    for index, (name, node) in enumerate(spec.lookups):
        scope = checker.scope(f"lookup {name!r}", lookup_names[:index], lookup_names[index:])
        compiled = checker.lookup(name, node, scope)
        if compiled is not None:
            lookups.append(compiled)

    full = checker.scope("'when'", lookup_names, ())
    when = None
    if spec.when is not None:
        when = checker.parse(spec.when, "'when'")
        if when is not None:
            checker.check(when.tree, full, _line(spec.when))

    actions = [checker.action(a.kind, a.line, a.params, full) for a in spec.actions]
    if checker.errors:
        return checker.errors
    return Rule(
        spec.name,
        spec.file,
        spec.line,
        spec.trigger,
        spec.priority,
        order,
        condition,
        tuple(lookups),
        when,
        tuple(a for a in actions if a is not None),
        spec.cont,
        spec.description,
    )


def _as_function(node: ast.Call, registry: Registry) -> str:
    """``caller.name.lower()`` as the function call to write instead, when
    there is that function: ``write lower(caller.name)``."""
    assert isinstance(node.func, ast.Attribute)
    method = node.func.attr
    if method not in registry.functions:
        return "use a function such as match()"
    args = ", ".join(ast.unparse(a) for a in (node.func.value, *node.args, *node.keywords))
    return f"write {method}({args})"
