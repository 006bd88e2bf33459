"""Compiled rules: what validation produces and evaluation consumes.

Everything here is immutable and already checked, so evaluation never has to
ask "does this name exist": it only runs stored expression trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router.rules.decision import RuleTrace
from router.rules.expr import Expression, Template
from router.rules.registry import ActionSpec
from router.rules.schema import TriggerSpec

__all__ = ["CompiledAction", "CompiledLookup", "Rule"]


@dataclass(frozen=True, slots=True)
class CompiledLookup:
    """``owner: onec.responsible(caller.number)`` -> name, lookup and argument trees."""

    name: str
    lookup: str
    args: tuple[Expression, ...]
    kwargs: tuple[tuple[str, Expression], ...]
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class CompiledAction:
    """An action whose parameters are constants (str) or templates."""

    kind: str
    spec: ActionSpec
    params: tuple[tuple[str, str | Template], ...]
    line: int


@dataclass(frozen=True, slots=True)
class Rule:
    """One valid rule; ``order`` is its position across all files (ties in priority)."""

    name: str
    file: str
    line: int
    trigger: TriggerSpec
    priority: int
    order: int
    condition: Expression | None
    lookups: tuple[CompiledLookup, ...]
    when: Expression | None
    actions: tuple[CompiledAction, ...]
    cont: bool = False
    description: str = ""
    location: str = ""
    #: The trace entry of this rule when its ``if`` is false, made once: most
    #: rules of a call stop there, and one shared, never-mutated entry saves
    #: building thousands of identical objects per second.
    false_if_trace: RuleTrace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", f"{self.file}:{self.line}")
        object.__setattr__(
            self, "false_if_trace", RuleTrace(self.name, self.location, "false", "if")
        )

    @property
    def sort_key(self) -> tuple[int, int]:
        """Higher priority first, then file order."""
        return (-self.priority, self.order)
