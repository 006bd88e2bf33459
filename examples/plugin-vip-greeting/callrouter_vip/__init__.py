"""callrouter-vip: an example plugin, small enough to read in one sitting.

It adds to the rule language

* ``is_vip(number)``: a rule function, true for numbers on a configured list;
* ``vip_tag: {level: gold}``: an action that sets a channel variable on the
  routed call through ``engine.ami`` (so the dialplan can, say, play a greeting
  or pick a queue priority),

and logs one line for every routing decision about a VIP caller. It counts
the calls it tagged on callrouter's ``/metrics`` (``callrouter_vip_tagged``)
and reads its ``file`` again every ``reload`` seconds, a timed job of the
engine's (``vip:reload``), so an edited list needs no restart.

Configuration, in router.toml (the table's name is the entry point's name)::

    [plugins.vip]
    numbers = ["+7 916 123-45-67", "8 903 111-22-33"]   # any format
    file = "vip.txt"              # and/or a file: one number a line, '#' comments
    variable = "CALLROUTER_VIP"   # the channel variable vip_tag sets (the default)
    reload = 300                  # seconds between readings of the file (the default)

Without a ``[plugins.vip]`` table the plugin is installed but inert: it
registers nothing and its hooks return at once, so installing it never
changes how calls are routed.

The entry point names this module; callrouter calls :func:`make_plugin` for
each engine it builds, so two engines in one process (a test and a shadow
instance, say) never share the VIP list or the decisions seen.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router import (
    Action,
    ActionSpec,
    Call,
    Config,
    EngineAPI,
    Metrics,
    ParamSpec,
    Registry,
    RouteOutcome,
    SettingsReader,
    hookimpl,
    normalize_number,
)

if TYPE_CHECKING:  # what Metrics.counter returns: prometheus-client, a dependency of callrouter's
    from prometheus_client import Counter

__all__ = ["VipPlugin", "make_plugin", "number_key"]

__version__ = "0.1.0"

log = logging.getLogger("callrouter_vip")

DEFAULT_VARIABLE = "CALLROUTER_VIP"
DEFAULT_RELOAD = 300.0
_VARIABLE = re.compile(r"^_{0,2}[A-Za-z][A-Za-z0-9_]*$")


def number_key(number: object) -> str:
    """The last ten digits: ``+7 916 123-45-67`` and ``89161234567`` are one caller.

    callrouter's own normalization first (``router.normalize_number``), so the
    key agrees with the core's lists and the 1C plugin for every spelling,
    fullwidth and Arabic-Indic digits included.
    """
    return normalize_number(number)[-10:]


class VipPlugin:
    """The plugin object: one per engine, made by :func:`make_plugin`."""

    #: The plugin's name when registered as an object (``Plugins.load(extra=[...])``),
    #: the same as the entry point's, so settings come from ``[plugins.vip]`` either way.
    __name__ = "vip"

    def __init__(self) -> None:
        self.enabled = False
        self.numbers: frozenset[str] = frozenset()
        self.variable = DEFAULT_VARIABLE
        #: The numbers written in router.toml, and the file read again by ``vip:reload``.
        self.listed: frozenset[str] = frozenset()
        self.file: Path | None = None
        self.reload = DEFAULT_RELOAD
        #: ``callrouter_vip_tagged``: made per engine by ``callrouter_metrics``.
        self.tagged: Counter | None = None
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
        """Read ``[plugins.vip]``; refuse bad settings with a ConfigError naming the key.

        callrouter's ``SettingsReader`` gives the same messages as every other
        table (``router.toml:31: [plugins.vip] colour: unknown key; did you mean
        ...``) and takes relative file names from router.toml's folder.
        """
        if not settings:
            self.enabled = False
            return
        reader = SettingsReader.for_plugin("vip", settings, config)
        reader.reject_unknown(("numbers", "file", "variable", "reload"))
        listed = _keys(_strings(reader, "numbers"))
        file = reader.path("file")
        try:
            from_file = _keys(_read_list(file)) if file is not None else frozenset()
        except OSError as exc:
            raise reader.error("file", f"cannot read {file}: {exc.strerror}") from None
        variable = reader.string("variable", DEFAULT_VARIABLE)
        if not _VARIABLE.match(variable):
            raise reader.error("variable", f"{variable!r} is not a channel variable name")
        self.reload = reader.seconds("reload", DEFAULT_RELOAD)
        self.listed, self.file = listed, file
        self.numbers = listed | from_file
        self.variable = variable
        self.enabled = True
        log.info("vip: %d numbers, tagging with %s", len(self.numbers), self.variable)

    @hookimpl
    def callrouter_metrics(self, metrics: Metrics) -> None:
        """Add ``callrouter_vip_tagged`` to this engine's ``/metrics``.

        Kept on the plugin object: each engine has its own registry.
        """
        self.tagged = metrics.counter("callrouter_vip_tagged", "Calls vip_tag marked as VIP.")

    @hookimpl
    def callrouter_startup(self, engine: EngineAPI) -> None:
        """Read the file again every ``reload`` seconds (the first time ``reload``
        seconds from now: ``callrouter_configure`` has just read it)."""
        if self.enabled and self.file is not None:
            engine.schedule("vip:reload", self.reload_file, every=self.reload)

    async def reload_file(self) -> None:
        """The ``vip:reload`` job: the file read off the event loop. A file that
        cannot be read keeps the numbers it had (said at WARNING)."""
        if self.file is None:
            return
        try:
            from_file = _keys(await asyncio.to_thread(_read_list, self.file))
        except OSError as exc:
            log.warning("vip: cannot read %s: %s; the list stays as it was", self.file, exc)
            return
        self.numbers = self.listed | from_file

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
        if self.tagged is not None:
            self.tagged.inc()
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


def _strings(reader: SettingsReader, key: str) -> list[str]:
    """Numbers may be written as strings or, carelessly, as TOML integers."""
    value = reader.values.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise reader.error(key, "expected a list of phone numbers")
    return [str(v) for v in value]


def _keys(numbers: list[str]) -> frozenset[str]:
    return frozenset(number_key(n) for n in numbers) - {""}


def _read_list(path: Path) -> list[str]:
    """Blocking: the numbers of the file, one a line, '#' comments."""
    text = path.read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def make_plugin() -> VipPlugin:
    """What the entry point ``vip`` (this module) gives each engine: a fresh plugin."""
    return VipPlugin()
