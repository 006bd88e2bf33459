"""Load time: a rule reading a field of an answer its lookup declares unreadable.

A plugin's lookup annotated ``-> set[str]`` or ``-> Customer`` (a dataclass)
answers what no rule can read a field of: ``when: owner.tier == "gold"`` is
then ``cannot read .tier of a set`` at every call, and the rule is never
taken (router/rules/evaluate.py names the plugin then, at run time). When the
annotation says so, that is known when the rules load: ``check`` and the
start say it as a warning naming the rule, the plugin and the lookup. Only a
warning: an annotation may be wrong where the answer is right, and the rule
fails open anyway. An annotation that cannot be resolved, or says ``Any``, an
ABC or a protocol, says nothing.
"""

from __future__ import annotations

import ast
import collections.abc
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from router.rules.context import ALLOWED_ATTRS
from router.rules.expr import Expression, Template
from router.rules.model import Rule
from router.rules.registry import Registry

__all__ = ["answer_warnings", "declared_answer"]

#: Awaitables whose first (or only) argument is what awaiting them gives.
_AWAITED = {collections.abc.Awaitable: 0, collections.abc.Coroutine: 2}
#: Classes a rule may index (``owner[0]``, ``owner["tier"]``), besides mappings.
_INDEXABLE = (str, list, tuple)


def declared_answer(func: object) -> tuple[type, ...] | None:
    """The classes ``func``'s return annotation says it answers (None left out,
    awaitables unwrapped), or None when it does not say, or says something
    that is not a plain class (``Any``, a type variable, ``object``)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation naming what cannot be imported here
        return None
    if "return" not in hints:
        return None
    found: list[type] = []
    for kind in _members(hints["return"], depth=0):
        if kind is None:
            return None
        found.append(kind)
    return tuple(found) or None


def _members(hint: Any, depth: int) -> Iterator[type | None]:
    """The classes of ``hint``; None for a member that is not a known class."""
    if depth > 4:
        yield None
        return
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(hint):
            yield from _members(arg, depth + 1)
        return
    if origin in _AWAITED:
        args = typing.get_args(hint)
        index = _AWAITED[origin]
        yield from _members(args[index], depth + 1) if len(args) > index else iter([None])
        return
    if hint is None or hint is types.NoneType:
        return
    kind = origin if isinstance(origin, type) else hint
    if not isinstance(kind, type) or kind is object or getattr(kind, "_is_protocol", False):
        yield None
        return
    if kind.__module__ in ("collections.abc", "typing") and not issubclass(kind, Mapping):
        yield None  # an ABC (Iterable, Sequence): the answer may be a mapping all the same
        return
    yield kind


def _unreadable(kind: type, read: str) -> bool:
    """Can a rule not read ``.field`` (``read`` "attr") or ``[key]`` ("item") of a ``kind``?"""
    if issubclass(kind, Mapping) or kind in ALLOWED_ATTRS:
        return False
    return read == "attr" or not issubclass(kind, _INDEXABLE)


def _trees(rule: Rule, after: int) -> Iterator[tuple[int, ast.AST]]:
    """(line, tree) of what may read the answer of the rule's lookup number
    ``after``: the later lookups' arguments, ``when``, the actions' templates."""
    for lookup in rule.lookups[after + 1 :]:
        for expression in (*lookup.args, *(value for _, value in lookup.kwargs)):
            yield lookup.line, expression.tree
    if rule.when is not None:
        yield rule.line, rule.when.tree
    for action in rule.actions:
        for _, value in action.params:
            if isinstance(value, Template):
                for part in value.expressions:
                    if isinstance(part, Expression):
                        yield action.line, part.tree


def _first_read(name: str, tree: ast.AST) -> tuple[str, str] | None:
    """("attr", ".tier") or ("item", "[...]"): the first read of a field of ``name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript):
            value = node.value
            if isinstance(value, ast.Name) and value.id == name:
                if isinstance(node, ast.Attribute):
                    return "attr", f".{node.attr}"
                return "item", "[...]"
    return None


def answer_warnings(rules: Sequence[Rule], registry: Registry) -> list[str]:
    """One line per rule reading a field of an answer its lookup declares
    unreadable: ``rules/vip.yaml:3: rule 'vip': reads owner.tier, but lookup
    crm.owner of plugin 'crm' is declared to answer a set (-> set[str]) ...``."""
    warnings: list[str] = []
    declared: dict[str, tuple[type, ...] | None] = {}
    for rule in rules:
        for index, lookup in enumerate(rule.lookups):
            spec = registry.lookups.get(lookup.lookup)
            if spec is None or spec.func is None:
                continue
            if lookup.lookup not in declared:
                declared[lookup.lookup] = declared_answer(spec.func)
            kinds = declared[lookup.lookup]
            if not kinds:
                continue
            for line, tree in _trees(rule, index):
                found = _first_read(lookup.name, tree)
                if found is None or not all(_unreadable(k, found[0]) for k in kinds):
                    continue
                read, shown = found
                owner = registry.owners.get(lookup.lookup)
                who = f"plugin {owner!r}" if owner is not None else "a plugin"
                names = " or ".join(k.__name__ for k in kinds)
                what = f"read {shown}" if read == "attr" else "index"
                warnings.append(
                    f"{rule.file}:{line}: rule {rule.name!r}: reads {lookup.name}{shown}, but "
                    f"lookup {lookup.lookup} of {who} is declared to answer a {names}, of "
                    f"which a rule cannot {what}: the rule would never be taken (docs/plugins.md,"
                    " Isolation)"
                )
                break
    return warnings
