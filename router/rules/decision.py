"""What evaluation hands back: a Decision to act on and a Trace to explain it.

The engine executes a :class:`Decision` and logs the :class:`Trace` as JSON
(``to_dict``); ``callrouter explain`` prints ``Trace.render()``. Actions carry
only strings because that is what AMI takes, and they are frozen so a
decision cannot change between being logged and being executed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from router.logsafe import escape_controls
from router.rules.context import Context

__all__ = ["Action", "Decision", "LookupTrace", "RuleStatus", "RuleTrace", "Trace"]

RuleStatus = Literal["matched", "false", "lookup_failed", "error", "rejected", "skipped"]


_NOTHING_LEFT_OUT: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Action:
    """One rendered action: ``kind`` (``redirect``...) and string parameters.

    ``left_out``: the parameters (a ``setvar``'s variables) the rule wrote
    and the action goes without, each with why (``template '{owner.client.name}'
    gave nothing``): explain and the decision line say so.
    """

    kind: str
    params: Mapping[str, str]
    rule: str = ""
    left_out: Mapping[str, str] = field(default_factory=lambda: _NOTHING_LEFT_OUT, compare=False)

    @classmethod
    def make(
        cls,
        kind: str,
        params: Mapping[str, str],
        rule: str = "",
        left_out: Mapping[str, str] | None = None,
    ) -> Action:
        return cls(
            kind,
            MappingProxyType(dict(params)),
            rule,
            MappingProxyType(dict(left_out)) if left_out else _NOTHING_LEFT_OUT,
        )

    def __hash__(self) -> int:
        return hash((self.kind, tuple(sorted(self.params.items())), self.rule))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return (self.kind, dict(self.params), self.rule) == (
            other.kind,
            dict(other.params),
            other.rule,
        )

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "params": dict(self.params), "rule": self.rule}
        if self.left_out:
            data["left_out"] = dict(self.left_out)
        return data

    def left_out_text(self) -> str:
        """``CRM_CLIENT: template '{owner.client.name}' gave nothing; ...``."""
        return "; ".join(f"{k}: {why}" for k, why in self.left_out.items())

    def __str__(self) -> str:
        """For people (``callrouter explain``): values a template filled in are
        the caller's or 1C's text, so control characters come out escaped."""
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        gone = f" [left out: {self.left_out_text()}]" if self.left_out else ""
        return escape_controls(f"{self.kind}({inner}){gone}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The actions to take; empty when every rule fell through."""

    rules: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()

    @property
    def matched(self) -> bool:
        return bool(self.rules)

    def to_dict(self) -> dict[str, Any]:
        return {"rules": list(self.rules), "actions": [a.to_dict() for a in self.actions]}


@dataclass(slots=True)
class LookupTrace:
    """One lookup: what was asked, what came back, how long it took, what failed.

    ``name`` is the rule's name for the answer (``owner``), ``lookup`` the
    registered lookup that gave it (``onec.responsible``), ``call`` the text
    shown to people: read ``lookup``, never parse ``call``. ``source`` is set
    by ``explain`` only (:mod:`router.rules.explain`): ``asked`` (the plugin's
    lookup ran), ``given`` (``--lookup``'s answer) or ``not provided``; the
    engine's own traces leave it empty, and their JSON without it.
    """

    name: str
    call: str
    value: Any = None
    ms: float = 0.0
    error: str | None = None
    reused: bool = False
    lookup: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "call": self.call,
            "value": _jsonable(self.value),
            "ms": round(self.ms, 3),
            "error": self.error,
            "reused": self.reused,
        }
        if self.source:
            data["source"] = self.source
        return data


@dataclass(slots=True)
class RuleTrace:
    """What happened to one rule; ``stage`` says which condition was false."""

    rule: str
    location: str
    status: RuleStatus
    stage: str = ""
    detail: str = ""
    lookups: list[LookupTrace] = field(default_factory=list)
    actions: tuple[Action, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "location": self.location,
            "status": self.status,
            "stage": self.stage,
            "detail": self.detail,
            "lookups": [lk.to_dict() for lk in self.lookups],
            "actions": [a.to_dict() for a in self.actions],
        }


@dataclass(slots=True)
class Trace:
    """The story of one evaluation, in rule order.

    It keeps the context rather than a description of it: formatting a date
    for every call would cost more than evaluating most rule sets.
    """

    context: Context
    rules: list[RuleTrace] = field(default_factory=list)
    elapsed_us: float = 0.0
    deadline_hit: bool = False
    #: The trigger's time as the rules saw it (``now``, in the rules' time
    #: zone), for :attr:`trigger`; None: ``context.now`` as it is.
    now: datetime | None = None

    @property
    def trigger(self) -> str:
        return self.context.describe(self.now)

    def lookup_values(self, lookup: str) -> list[Any]:
        """What the lookup registered as ``lookup`` answered in this evaluation.

        Answers of matched rules come first, then the others', each in rule
        order; failed lookups (no answer) are left out. A plugin reads its own
        lookup's answer here (the 1C plugin: the client and manager the rules
        saw) instead of parsing the trace's text.
        """
        matched: list[Any] = []
        others: list[Any] = []
        for entry in self.rules:
            into = matched if entry.status == "matched" else others
            into.extend(
                record.value
                for record in entry.lookups
                if record.lookup == lookup and record.error is None
            )
        return matched + others

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "elapsed_us": round(self.elapsed_us, 1),
            "deadline_hit": self.deadline_hit,
            "rules": [r.to_dict() for r in self.rules],
        }

    def render(self) -> str:
        """The text ``callrouter explain`` prints: one block per rule."""
        lines = [self.trigger]
        if not self.rules:
            lines.append("  no rules for this trigger")
        for entry in self.rules:
            head = {
                "matched": "MATCHED",
                "false": f"false ({entry.stage})",
                "lookup_failed": f"false ({entry.stage}), a lookup failed",
                "error": f"error ({entry.stage})",
                "rejected": "rejected",
                "skipped": "skipped",
            }[entry.status]
            lines.append(f"  {entry.rule} [{entry.location}]: {head}")
            for lookup in entry.lookups:
                again = ", reused" if lookup.reused else ""
                source = f"{lookup.source}, " if lookup.source else ""
                outcome = f"failed: {lookup.error}" if lookup.error else repr(lookup.value)
                lines.append(
                    f"      lookup {lookup.name} = {lookup.call} -> {outcome}"
                    f" ({source}{lookup.ms:.1f} ms{again})"
                )
            if entry.detail:
                lines.append(f"      {entry.detail}")
            lines.extend(f"      -> {action}" for action in entry.actions)
        if self.deadline_hit:
            lines.append("  the lookup deadline passed during evaluation")
        # A lookup's error or a rule's error may quote a plugin's or a caller's
        # text: one line each, nothing the terminal would act on.
        return "\n".join(escape_controls(line) for line in lines)


#: Types :func:`_jsonable` returns as they are, by exact type first: every
#: decision record converts its lookups' answers, and the isinstance checks
#: below (a ``Mapping`` ABC check among them) cost more than the conversion.
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, type(None)})


#: How deep :func:`_jsonable` follows containers (a lookup's answer).
_JSON_DEPTH = 32


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can hold it; never raises. A lookup's answer is a
    plugin's object: one whose ``repr`` or a key's ``str`` raised, or a dict
    holding itself (a RecursionError), failed the call's routing task, so the
    call had no decision, no ``callrouter_decision`` and no Redirect."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if depth >= _JSON_DEPTH:
        return "…"  # nested too deeply (a structure that holds itself)
    try:
        if kind is dict:
            return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
        if kind is list or kind is tuple:
            return [_jsonable(v, depth + 1) for v in value]
        if value is None or isinstance(value, str | int | float | bool):
            return value
        if isinstance(value, Mapping):
            return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(v, depth + 1) for v in value]
        return repr(value)
    except Exception:
        return f"<{kind.__name__}>"
