"""The rule engine: YAML rules -> validated, compiled rules -> decisions.

Typical use by the engine::

    registry, problems = plugins.build_registry()   # every plugin's names, built-ins too
    book = RuleBook(["rules/"], registry)
    loaded = book.reload()                   # loaded.errors: list of located errors
    outcome = await book.evaluate(
        call_context(registry, caller, did), deadline=time.monotonic() + 5)
    outcome.decision.actions                 # tuple[Action(kind, params)]
    outcome.trace.to_dict()                  # for the log

Modules: ``loader`` (YAML + lines), ``schema`` (stage 1, shape), ``validate``
(stage 2, names), ``expr`` (expressions), ``evaluate`` (semantics),
``ruleset`` (index and reload), ``decision`` (results), ``registry``.
"""

from __future__ import annotations

from router.rules.context import Caller, CallInfo, Context, EventFields
from router.rules.decision import Action, Decision, LookupTrace, RuleTrace, Trace
from router.rules.evaluate import Outcome
from router.rules.model import Rule
from router.rules.registry import (
    ActionSpec,
    AMIValidator,
    FunctionSpec,
    LookupFn,
    LookupSpec,
    ParamSpec,
    Registry,
)
from router.rules.ruleset import RuleBook, RuleSet, call_context, load_rules

__all__ = [
    "AMIValidator",
    "Action",
    "ActionSpec",
    "CallInfo",
    "Caller",
    "Context",
    "Decision",
    "EventFields",
    "FunctionSpec",
    "LookupFn",
    "LookupSpec",
    "LookupTrace",
    "Outcome",
    "ParamSpec",
    "Registry",
    "Rule",
    "RuleBook",
    "RuleSet",
    "RuleTrace",
    "Trace",
    "call_context",
    "load_rules",
]
