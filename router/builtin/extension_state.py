"""Built-in plugin: ``extension_state(ext)``, is a manager's phone free?

Asks Asterisk (AMI ``ExtensionState`` on the hint context) and maps its
numeric status to the words rules compare against. Without a hint Asterisk
answers ``-1``, which becomes ``unknown``: rules usually treat it like idle,
since a missing hint should not stop a call from ringing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from router.config import Config, SettingsReader
from router.errors import AMIError
from router.hookspecs import EngineAPI, hookimpl
from router.rules.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.facade import AMI

__all__ = ["SETTINGS", "STATES", "ExtensionState", "make_plugin", "state_name"]

#: The keys of ``[plugins.extension_state]`` (docs/reference/config.md).
SETTINGS: tuple[str, ...] = ("context",)

#: ast_extension_state values (include/asterisk/pbx.h) -> rule words.
STATES = {
    "-2": "unavailable",  # removed
    "-1": "unknown",  # no hint
    "0": "idle",
    "1": "inuse",
    "2": "busy",
    "4": "unavailable",
    "8": "ringing",
    "9": "inuse",  # in use and ringing
    "16": "onhold",
    "17": "inuse",
}


def state_name(status: str | None) -> str:
    return STATES.get((status or "").strip(), "unknown")


class ExtensionState:
    """The plugin: one per engine, asking that engine's Asterisk."""

    def __init__(self) -> None:
        self.ami: AMI | None = None
        self.context = "hints"

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        """``context``: where the phones' hints are (``exten => 101,hint,PJSIP/101``)."""
        reader = SettingsReader.for_plugin("extension_state", settings, config)
        reader.reject_unknown(SETTINGS)
        self.context = reader.string("context", "hints")

    @hookimpl
    def callrouter_startup(self, engine: EngineAPI) -> None:
        self.ami = engine.ami

    def lookup(self, extension: str) -> str | Awaitable[str]:
        """State of an extension: idle, inuse, busy, unavailable, ringing, onhold, unknown."""
        if self.ami is None or not extension:
            return "unknown"  # no question to ask: answered without a coroutine
        return self._ask(extension)

    async def _ask(self, extension: str) -> str:
        assert self.ami is not None
        try:
            result = await self.ami.send(
                "ExtensionState",
                {"Exten": str(extension), "Context": self.context},
                validate=False,
                check=False,
            )
        except AMIError:
            return "unknown"
        return state_name(result.response.get("Status"))

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_lookup("extension_state", self.lookup)


def make_plugin() -> ExtensionState:
    return ExtensionState()
