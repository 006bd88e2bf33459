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

    def error(self, message: str, line: int) -> None:
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
            for child in ast.iter_child_nodes(node):
                self._visit(child, scope)

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
) -> Rule | list[RuleValidationError]:
    """Checks every expression of a shape-valid rule and compiles it.

    ``broken`` names lists that failed to load, for a clearer message than
    "unknown list".
    """
    checker = _Checker(spec.name, spec.file, registry, lists, spec.trigger.kind, broken)
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
