"""callrouter-vip: an example plugin, small enough to read in one sitting.

It adds to the rule language

* ``is_vip(number)``: a rule function, true for numbers on a configured list;
* ``vip_tag: {level: gold}``: an action that sets a channel variable on the
  routed call through ``engine.ami`` (so the dialplan can, say, play a greeting
  or pick a queue priority),

and logs one line for every routing decision about a VIP caller.

Configuration, in router.toml (the table's name is the entry point's name)::

    [plugins.vip]
    numbers = ["+7 916 123-45-67", "8 903 111-22-33"]   # any format
    file = "vip.txt"              # and/or a file: one number a line, '#' comments
    variable = "CALLROUTER_VIP"   # the channel variable vip_tag sets (the default)

Without a ``[plugins.vip]`` table the plugin is installed but inert: it
registers nothing and its hooks return at once, so installing it never
changes how calls are routed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from router import (
    Action,
    ActionSpec,
    Call,
    Config,
    ConfigError,
    EngineAPI,
    ParamSpec,
    Registry,
    RouteOutcome,
    hookimpl,
    normalize_number,
)

__all__ = ["VipPlugin", "plugin"]

__version__ = "0.1.0"

log = logging.getLogger("callrouter_vip")

DEFAULT_VARIABLE = "CALLROUTER_VIP"
_VARIABLE = re.compile(r"^_{0,2}[A-Za-z][A-Za-z0-9_]*$")


def number_key(number: object) -> str:
    """The last ten digits: ``+7 916 123-45-67`` and ``89161234567`` are one caller.

    callrouter's own normalization first (``router.normalize_number``), so the
    key agrees with the core's lists and the 1C plugin for every spelling,
    fullwidth and Arabic-Indic digits included.
    """
    return normalize_number(number)[-10:]


class VipPlugin:
    """The plugin object; the entry point ``vip`` names :data:`plugin`, one instance."""

    #: The plugin's name when registered as an object (``Plugins.load(extra=[...])``),
    #: the same as the entry point's, so settings come from ``[plugins.vip]`` either way.
    __name__ = "vip"

    def __init__(self) -> None:
        self.enabled = False
        self.numbers: frozenset[str] = frozenset()
        self.variable = DEFAULT_VARIABLE
        #: Decisions about VIP callers seen (outcome per call), for tests and status.
        self.decisions: list[tuple[str, str]] = []

    # -- the rule function -----------------------------------------------------

    def is_vip(self, number: object) -> bool:
        """True when the number is on the VIP list (any format)."""
        key = number_key(number)
        return bool(key) and key in self.numbers

    # -- hooks ---------------------------------------------------------------------

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        """Read ``[plugins.vip]``; refuse bad settings with a ConfigError naming the key."""
        if not settings:
            self.enabled = False
            return
        unknown = sorted(set(settings) - {"numbers", "file", "variable"})
        if unknown:
            raise ConfigError(
                f"[plugins.vip] {unknown[0]}: unknown setting (known: numbers, file, variable)"
            )
        numbers: list[str] = list(_strings(settings.get("numbers", []), "numbers"))
        file = settings.get("file")
        if file is not None:
            if not isinstance(file, str) or not file:
                raise ConfigError("[plugins.vip] file: expected a file name")
            base = config.path.parent if config.path is not None else Path.cwd()
            numbers.extend(_read_list(base / file))
        variable = settings.get("variable", DEFAULT_VARIABLE)
        if not isinstance(variable, str) or not _VARIABLE.match(variable):
            raise ConfigError(
                f"[plugins.vip] variable: {variable!r} is not a channel variable name"
            )
        keys = {number_key(n) for n in numbers}
        keys.discard("")
        self.numbers = frozenset(keys)
        self.variable = variable
        self.enabled = True
        log.info("vip: %d numbers, tagging with %s", len(self.numbers), self.variable)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        """Add ``is_vip(number)`` and the ``vip_tag`` action (only when configured)."""
        if not self.enabled:
            return
        registry.add_function("is_vip", self.is_vip)
        registry.add_action(
            ActionSpec(
                "vip_tag",
                (ParamSpec("level", doc="the value to set, default 1"),),
                doc="Mark the routed call as a VIP call (a channel variable).",
            )
        )

    @hookimpl
    async def callrouter_execute(self, action: Action, call: Call, engine: EngineAPI) -> str | None:
        """Carry out ``vip_tag``; any other action kind is not ours (None)."""
        if not self.enabled or action.kind != "vip_tag":
            return None
        channel = call.waiting_channel
        if not channel:
            raise ValueError("vip_tag needs the routed channel")
        level = action.params.get("level") or "1"
        await engine.ami.setvar(channel=channel, variable=self.variable, value=level)
        return f"{self.variable}={level} on {channel}"

    @hookimpl
    def callrouter_decision(self, call: Call, outcome: RouteOutcome) -> None:
        """Log what happened to VIP callers (pluggy passes only the arguments named)."""
        if not self.enabled or not self.is_vip(call.caller_number):
            return
        self.decisions.append((call.linkedid, outcome))
        log.info(
            "vip: call %s from %s to %s: %s", call.linkedid, call.caller_number, call.did, outcome
        )


def _strings(value: object, key: str) -> Iterable[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise ConfigError(f"[plugins.vip] {key}: expected a list of phone numbers")
    return [str(v) for v in value]


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[plugins.vip] file: cannot read {path}: {exc.strerror}") from None
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


#: What the entry point ``vip`` loads.
plugin = VipPlugin()
