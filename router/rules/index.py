"""Which call rules can match a call, found by the call's numbers instead of by trying each.

A PBX with hundreds of numbers has hundreds of per-number rules, and however
the administrator writes them (``did == "7495..."``, ``"7495..." == did``,
``did in ("...", "...")``, ``caller.number in lists.vip``, ``did == "1" or
did == "2"``, ``last10(caller.number) == "9161234567"``, any of these joined
with ``and`` to other conditions) a call should only evaluate the rules whose
``if`` can be true for its numbers, plus the rules nothing can be said of
("generic"). At load time :func:`guard_of` reads each ``if`` tree for a
*guard*: a test on one of the call's keys that the whole condition cannot be
true without. :class:`CallIndex` then maps each key's values to rule
positions, and a call costs a dict lookup per key plus its candidate rules.

Results never change, only the work: a guard is a *necessary* condition (for
``a and b`` either side's, for ``a or b`` both sides' together), the
candidates keep the rules' priority order, and a call whose key is not text
(never the case for a call the engine builds) walks every call rule.
``tests/unit/rules/test_rules_index.py`` checks this against the linear walk
on random rule sets and calls (hypothesis).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router.rules.context import Context
from router.rules.expr import _call
from router.rules.model import Rule
from router.rules.registry import FunctionSpec

__all__ = ["CallIndex", "Guard", "Key", "event_guard", "guard_of"]

#: Rule functions a key or a constant may be wrapped in: pure functions of
#: their argument, so a constant is folded at load time to what the call
#: would compute, and a key is computed once per call for every rule.
_PURE = frozenset({"normalize", "last10", "digits"})
_PURE_MODULE = "router.builtin.numbers"

#: Merged candidate lists kept per set of matched keys (most calls repeat one).
_CACHE_LIMIT = 4096
#: Value sets larger than this (a list of the file) are probed per call
#: rather than copied into the index value by value.
_EXPAND_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Key:
    """One indexable value of a call: ``did`` or ``caller.number``/``caller.raw``,
    possibly through a pure number function (``last10(caller.number)``)."""

    field: str
    function: str | None = None

    def __str__(self) -> str:
        return f"{self.function}({self.field})" if self.function else self.field

    def read(self, context: Context, functions: Mapping[str, FunctionSpec]) -> object:
        """The key's value for a call, as the rule's expression would compute it."""
        if self.field == "did":
            value: object = context.did
        else:
            caller = context.caller
            value = None if caller is None else getattr(caller, self.field[len("caller.") :])
        if self.function is not None:
            value = _call(functions, context, self.function, (value,), {})
        return value


#: Values of each key the condition cannot be true without (a disjunction:
#: the rule may match when any key has one of its values).
Guard = Mapping[Key, frozenset[str]]

_FIELDS = {"did", "caller.number", "caller.raw"}


def guard_of(
    tree: ast.expr,
    lists: Mapping[str, frozenset[str]],
    functions: Mapping[str, FunctionSpec],
) -> Guard | None:
    """The guard of a checked ``if`` tree, or None when it has none (a generic rule)."""
    reader = _Reader(lists, functions)
    return reader.guard(tree)


def event_guard(
    rule: Rule, lists: Mapping[str, frozenset[str]], functions: Mapping[str, FunctionSpec]
) -> Mapping[str, frozenset[str]] | None:
    """An event rule's guard on the event's own fields (``event.cause == "19"``,
    ``event.queue in ("sales", "vip")``, joined as :func:`guard_of` joins them):
    field name (lower case, as ``event.X`` reads it) -> the values it may have.

    None when the ``if`` has none: the rule is tried for every event of its
    name. The engine checks the guard on the received event before it builds
    the rule context, so most events of a watched name cost a dict lookup.
    """
    if rule.condition is None:
        return None
    guard = _Reader(lists, functions, event=True).guard(rule.condition.tree)
    if guard is None:
        return None
    return {key.field[len("event.") :]: values for key, values in guard.items()}


class _Reader:
    def __init__(
        self,
        lists: Mapping[str, frozenset[str]],
        functions: Mapping[str, FunctionSpec],
        *,
        event: bool = False,
    ) -> None:
        self.lists = lists
        self.functions = functions
        #: Read ``event.<field>`` keys (an event rule) instead of the call's.
        self.event = event

    def guard(self, node: ast.expr) -> Guard | None:
        if isinstance(node, ast.BoolOp):
            parts = [self.guard(value) for value in node.values]
            if isinstance(node.op, ast.And):
                # Any conjunct's guard holds when the whole is true: index on
                # the one that leaves the fewest calls to try.
                known = [p for p in parts if p is not None]
                return min(known, key=_size) if known else None
            if any(p is None for p in parts):
                return None
            merged: dict[Key, frozenset[str]] = {}
            for part in parts:
                assert part is not None
                for key, values in part.items():
                    merged[key] = merged.get(key, frozenset()) | values
            return merged
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self._compare(node.left, node.ops[0], node.comparators[0])
        return None

    def _compare(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> Guard | None:
        if isinstance(op, ast.Eq):
            key, other = self.key(left), right
            if key is None:
                key, other = self.key(right), left
            if key is None:
                return None
            value = self.constant(other)
            if value is _NOT_CONSTANT or value is None:
                return None  # ``caller.number == None`` is true without a number
            # A key is text: a constant that is not text never equals it.
            return {key: frozenset((value,)) if isinstance(value, str) else frozenset()}
        if isinstance(op, ast.In):
            key = self.key(left)
            if key is None:
                return None
            values = self.members(right)
            return None if values is None else {key: values}
        return None

    def key(self, node: ast.expr) -> Key | None:
        if self.event:
            # The event's fields, plain: ``event.cause`` (EventFields reads any case).
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "event"
            ):
                return Key(f"event.{node.attr.lower()}")
            return None
        if isinstance(node, ast.Call):
            name = self._pure(node)
            if name is None:
                return None
            inner = self.key(node.args[0])
            return None if inner is None or inner.function else Key(inner.field, name)
        if isinstance(node, ast.Name) and node.id == "did":
            return Key("did")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and f"{node.value.id}.{node.attr}" in _FIELDS
        ):
            return Key(f"{node.value.id}.{node.attr}")
        return None

    def constant(self, node: ast.expr) -> Any:
        """The value of a constant (a literal, or a pure function of one), or _NOT_CONSTANT."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Call):
            name = self._pure(node)
            if name is None:
                return _NOT_CONSTANT
            arg = self.constant(node.args[0])
            if arg is _NOT_CONSTANT:
                return _NOT_CONSTANT
            try:
                return _call(self.functions, _NO_CONTEXT, name, (arg,), {})
            except Exception:  # evaluating it errs at every call too: leave it generic
                return _NOT_CONSTANT
        return _NOT_CONSTANT

    def members(self, node: ast.expr) -> frozenset[str] | None:
        """The text values of ``x in <node>`` for a literal collection or a list, else None."""
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = [self.constant(item) for item in node.elts]
            if any(v is _NOT_CONSTANT or v is None for v in values):
                return None
            return frozenset(v for v in values if isinstance(v, str))
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "lists"
        ):
            # Lists are loaded with the rules and never change under them; the
            # list itself, not a copy: the index probes large ones as they are.
            return self.lists.get(node.attr, frozenset())
        return None

    def _pure(self, node: ast.Call) -> str | None:
        if not (isinstance(node.func, ast.Name) and len(node.args) == 1 and not node.keywords):
            return None
        spec = self.functions.get(node.func.id)
        if (
            spec is None
            or spec.name not in _PURE
            or spec.pass_context
            or getattr(spec.func, "__module__", None) != _PURE_MODULE
        ):
            return None
        return spec.name


_NOT_CONSTANT: Any = object()
#: Pure functions never read the context they are not passed.
_NO_CONTEXT: Any = None


def _size(guard: Guard) -> int:
    return sum(len(values) for values in guard.values())


class CallIndex:
    """Call rules by the values of their guards' keys, in priority order.

    Built once per rule set (immutable after); :meth:`candidates` is the
    per-call cost: one read per indexed key, one dict lookup per key, and one
    set lookup per large list a guard names (a 100,000-number blacklist is
    probed as the list it is, not copied into the index).
    """

    __slots__ = (
        "_cache",
        "_functions",
        "_generic",
        "_generic_positions",
        "_keys",
        "_probes",
        "_rules",
        "_tables",
    )

    def __init__(
        self,
        rules: Sequence[Rule],
        lists: Mapping[str, frozenset[str]],
        functions: Mapping[str, FunctionSpec],
    ) -> None:
        self._rules = tuple(rules)
        self._functions = functions
        keys: dict[Key, int] = {}
        tables: dict[int, dict[str, list[int]]] = {}
        probes: dict[tuple[int, int], tuple[frozenset[str], list[int]]] = {}
        generic: list[int] = []
        for position, rule in enumerate(self._rules):
            guard = None if rule.condition is None else _guard(rule, lists, functions)
            if guard is None:
                generic.append(position)
                continue
            for key, values in guard.items():
                slot = keys.setdefault(key, len(keys))
                if len(values) > _EXPAND_LIMIT:
                    probes.setdefault((slot, id(values)), (values, []))[1].append(position)
                    continue
                table = tables.setdefault(slot, {})
                for value in values:
                    table.setdefault(value, []).append(position)
        self._keys = tuple(keys)
        self._tables = tuple(
            (slot, {value: tuple(found) for value, found in table.items()})
            for slot, table in tables.items()
        )
        self._probes = tuple(
            (slot, values, tuple(found)) for (slot, _), (values, found) in probes.items()
        )
        self._generic_positions = frozenset(generic)
        self._generic = tuple(self._rules[p] for p in generic)
        self._cache: dict[tuple[tuple[int, ...], ...], tuple[Rule, ...]] = {}

    @property
    def keys(self) -> tuple[Key, ...]:
        return self._keys

    @property
    def generic(self) -> tuple[Rule, ...]:
        return self._generic

    def candidates(self, context: Context) -> Sequence[Rule]:
        """The call rules whose ``if`` may be true for this call, in priority order."""
        values: list[str | None] = []
        for key in self._keys:
            try:
                value = key.read(context, self._functions)
            except Exception:  # the rules' own evaluation will meet (and trace) the error
                return self._rules
            if type(value) is not str:
                if value is None and key.function is None:
                    values.append(None)  # no number: equal to no text, in no list
                    continue
                return self._rules
            values.append(value)
        found: list[tuple[int, ...]] = []
        for slot, table in self._tables:
            value = values[slot]
            if value is not None:
                hit = table.get(value)
                if hit is not None:
                    found.append(hit)
        for slot, members, positions in self._probes:
            value = values[slot]
            if value is not None and value in members:
                found.append(positions)
        if not found:
            return self._generic
        signature = tuple(found)
        merged = self._cache.get(signature)
        if merged is None:
            merged = tuple(self._rules[p] for p in sorted(self._generic_positions.union(*found)))
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[signature] = merged
        return merged

    def skipped_by(self, rule: Rule, lists: Mapping[str, frozenset[str]]) -> tuple[Key, ...]:
        """The keys whose values leave ``rule`` out of a call (for ``explain``)."""
        if rule.condition is None:
            return ()
        guard = _guard(rule, lists, self._functions)
        return () if guard is None else tuple(guard)


def _guard(
    rule: Rule, lists: Mapping[str, frozenset[str]], functions: Mapping[str, FunctionSpec]
) -> Guard | None:
    assert rule.condition is not None
    return guard_of(rule.condition.tree, lists, functions)
