"""Built-in plugin: ``extension_state(ext)``, is a manager's phone free?

Asks Asterisk (AMI ``ExtensionState`` on the hint context) and maps its
numeric status to the words rules compare against. Without a hint Asterisk
answers ``-1``, which becomes ``unknown``: rules usually treat it like idle,
since a missing hint should not stop a call from ringing.

With ``cache = true`` it also reads Asterisk's ``ExtensionStatus`` events (one
for every change of a hint's state) and answers an extension whose change it
saw from memory, without the round trip: the owner rule asks it for every
call, after the 1C answer, so that round trip was most of what the owner path
cost beyond a bare Redirect (bench/ANALYSIS.md, twenty-sixth session). Only
events fill it, never an answer to ``ExtensionState`` (over AJAM an answer
may be older than an event already read), and it is emptied at every stream
gap (a change may have been missed): an extension it holds is one whose every
change since was told. A state is held for :data:`MAX_AGE` seconds at most,
since the end of a hint is never told. A user whose manager.conf lines
filter the event out gets no entries: every lookup asks, as without the
cache.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from router.config import Config, SettingsReader
from router.errors import AMIError
from router.hookspecs import EngineAPI, hookimpl
from router.rules.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.facade import AMI
    from router.ami.message import Event
    from router.ami.stream import StreamGap
    from router.calls import Call

__all__ = [
    "MAX_AGE",
    "MAX_CACHED",
    "SETTINGS",
    "STATES",
    "ExtensionState",
    "make_plugin",
    "state_name",
]

#: The keys of ``[plugins.extension_state]`` (docs/reference/config.md).
SETTINGS: tuple[str, ...] = ("context", "cache")
#: Extensions the cache holds at most (more than any PBX has phones).
MAX_CACHED = 10_000
#: Seconds a state an event told is answered from memory. Asterisk 22 tells
#: nothing when a dialplan reload (or ``dialplan remove extension``) drops a
#: hint (seen on the sandbox; it does tell a hint added or changed), so a kept
#: "busy" would skip a manager whose hint is gone, where Asterisk answers
#: "unknown", for ever; this bounds it. A phone in use changes state with
#: every call, so a busy manager's entry stays fresh; an idle one past this is
#: asked once, then held again from its next change.
MAX_AGE = 60.0

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


#: AST_EXTENSION_REMOVED and AST_EXTENSION_DEACTIVATED: the hint was removed.
_GONE = frozenset(("-2", "-1"))


def state_name(status: str | None) -> str:
    return STATES.get((status or "").strip(), "unknown")


class ExtensionState:
    """The plugin: one per engine, asking that engine's Asterisk."""

    def __init__(self) -> None:
        self.ami: AMI | None = None
        self.context = "hints"
        self.cache = False
        #: Extension -> state word, as the last ExtensionStatus told it.
        self.states: dict[str, str] = {}
        #: Extension -> when (monotonic) that event was read.
        self.told_at: dict[str, float] = {}
        #: Seconds a state told is answered from memory (:data:`MAX_AGE`).
        self.max_age = MAX_AGE

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        """``context``: where the phones' hints are (``exten => 101,hint,PJSIP/101``);
        ``cache``: answer from the ExtensionStatus events seen (module doc)."""
        reader = SettingsReader.for_plugin("extension_state", settings, config)
        reader.reject_unknown(SETTINGS)
        self.context = reader.string("context", "hints")
        self.cache = reader.boolean("cache", False)
        self.states.clear()
        self.told_at.clear()

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        return ("ExtensionStatus",) if self.cache else ()

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        if not self.cache or event.name != "ExtensionStatus":
            return
        if (event.get("Context") or "") != self.context:
            return
        exten = event.get("Exten") or ""
        status = (event.get("Status") or "").strip()
        if status in _GONE:
            # Deactivated or removed: no state to keep; the next lookup asks.
            self.states.pop(exten, None)
            self.told_at.pop(exten, None)
        elif exten and (exten in self.states or len(self.states) < MAX_CACHED):
            self.states[exten] = state_name(status)
            self.told_at[exten] = time.monotonic()

    @hookimpl
    def callrouter_stream_gap(self, gap: StreamGap) -> None:
        # A change may have been missed: every extension is asked again.
        self.states.clear()
        self.told_at.clear()

    @hookimpl
    def callrouter_startup(self, engine: EngineAPI) -> None:
        self.ami = engine.ami

    def lookup(self, extension: str) -> str | Awaitable[str]:
        """State of an extension: idle, inuse, busy, unavailable, ringing, onhold, unknown."""
        if self.ami is None or not extension:
            return "unknown"  # no question to ask: answered without a coroutine
        if self.cache:
            exten = str(extension)
            known = self.states.get(exten)
            if known is not None:
                if time.monotonic() - self.told_at[exten] < self.max_age:
                    return known  # told by its last ExtensionStatus: no round trip
                del self.states[exten], self.told_at[exten]
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
