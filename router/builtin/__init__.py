"""Built-in rule functions, actions and lookup declarations.

Each module has a plain ``register(registry, ...)`` so the plugin system can
later call it from a pluggy hook implementation, exactly like a third-party
plugin; :func:`default_registry` is the stand-in used until then (and by
``callrouter check``/``explain``).
"""

from __future__ import annotations

from router.builtin import actions, lookups_decl, numbers, textfuncs, timefuncs
from router.builtin.numbers import NumberPlan
from router.builtin.timefuncs import DEFAULT_TIMEZONE
from router.rules.registry import Registry

__all__ = ["DEFAULT_TIMEZONE", "NumberPlan", "default_registry", "register_builtins"]


def register_builtins(registry: Registry, *, timezone: str = DEFAULT_TIMEZONE,
                      plan: NumberPlan | None = None) -> None:
    """Functions and actions of the core (no lookups: those come from plugins)."""
    numbers.register(registry, plan or NumberPlan())
    timefuncs.register(registry, timezone)
    textfuncs.register(registry)
    actions.register(registry)


def default_registry(*, timezone: str = DEFAULT_TIMEZONE, plan: NumberPlan | None = None,
                     declare_lookups: bool = True) -> Registry:
    """The registry ``check`` and ``explain`` use until plugins fill it from hooks.

    ``declare_lookups`` adds the signatures of ``extension_state``,
    ``directory`` and ``onec.responsible`` (see :mod:`router.builtin.lookups_decl`).
    """
    registry = Registry()
    register_builtins(registry, timezone=timezone, plan=plan)
    if declare_lookups:
        lookups_decl.register(registry)
    return registry
