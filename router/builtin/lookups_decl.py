"""Declarations of the lookups the shipped rules use, until plugins register them.

These are signatures only (no implementation): they let ``callrouter check``
validate ``rules/`` before the plugin system exists. When it does, each name
moves to the plugin that implements it, registered from its hook:

* ``extension_state`` and ``directory`` - built-in plugins (``router/builtin``);
* ``onec.responsible`` and the ``onec`` notify target - the 1C plugin
  (``plugins/onec``, package ``callrouter-onec``), NOT the core.

A declared lookup without an implementation evaluates to None with
"not provided" in the trace, so rules that depend on it fall through.
"""

from __future__ import annotations

from typing import Any

from router.rules.registry import Registry

__all__ = ["register"]


async def extension_state(extension: str) -> str:
    """State of an extension: idle, inuse, busy, unavailable, ringing, unknown."""
    raise NotImplementedError


async def directory(number: str) -> dict[str, Any] | None:
    """Static directory entry for a number: {"extension": "101", "name": ...}."""
    raise NotImplementedError


async def onec_responsible(number: str) -> dict[str, Any] | None:
    """1C: the client and responsible manager for a number.

    Returns {"found": bool, "client": {"name": ...}, "manager": {"name": ...,
    "extension": "101"}}.
    """
    raise NotImplementedError


def register(registry: Registry) -> None:
    """Declares the lookups (signatures only); see the module docstring."""
    registry.add_lookup("extension_state", signature=extension_state)
    registry.add_lookup("directory", signature=directory)
    # Provided by the onec plugin (plugins/onec) through its registration hook.
    registry.add_lookup("onec.responsible", signature=onec_responsible)
    registry.add_notify_target("onec", "1C: missed calls and call history")
