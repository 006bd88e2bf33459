"""The plugin manager: pluggy underneath, one typed method per hook on top.

Built-in features are listed in :data:`DEFAULT_PLUGINS` and registered exactly
like third-party plugins found through the ``callrouter`` entry point group
(datasette's and llm's pattern). Callers never touch pluggy: they call
:class:`Plugins` methods, which

* await hooks that are coroutines or return awaitables (datasette's
  ``await_me_maybe``), and
* call each implementation on its own, so one plugin raising is logged with
  its name and the others still run: a broken plugin never stops a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import importlib
import inspect
import itertools
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import pluggy

from router import eager, hookspecs
from router.callerid import cut, cut_text
from router.errors import ConfigError, PluginError, StartRefused
from router.logsafe import INVISIBLE, escape_controls
from router.rules.suggest import did_you_mean
from router.source_place import defined_at as _defined_at

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.message import Event
    from router.ami.stream import StreamGap
    from router.calllife.model import CallEvent
    from router.calls import Call
    from router.config import Config
    from router.hookspecs import EngineAPI, RouteOutcome, StateFolder
    from router.metrics import Metrics
    from router.rules.decision import Action, Decision, Trace
    from router.rules.registry import Registry

__all__ = ["DEFAULT_PLUGINS", "PluginInfo", "PluginNames", "Plugins"]

log = logging.getLogger("router.plugins")

#: Built-in plugins, registered first and exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "router.builtin.timefuncs",
    "router.builtin.numbers",
    "router.builtin.textfuncs",
    "router.builtin.actions",
    "router.builtin.directory",
    "router.builtin.extension_state",
    "router.builtin.ami_catalog",
    "router.builtin.recordings",
)

#: How long a hook on the call path may take before the engine stops waiting.
HOOK_TIMEOUT = 2.0
#: How long ``callrouter_configure`` may take: it runs before ``run``, ``check``
#: and ``explain`` do anything, so a hung one would hang them, silently.
CONFIGURE_TIMEOUT = 30.0
#: What ``callrouter_present_extensions`` may name: an extension, as a token is
#: scoped to one (no path, no header, no control character).
_PRESENT_EXTENSION = re.compile(r"[0-9A-Za-z_+.-]{1,80}")
#: Extensions taken from one plugin's answer at most (a conference, with room).
MAX_PRESENT = 1_000
#: Seconds a plain (not ``async``) hook may hold the event loop before it is
#: said at WARNING: nothing else runs meanwhile, and no cut-off can stop it.
BLOCKING_WARN = 0.5
#: Hooks that run before the first event is read or after routing stopped:
#: a plain one that waits (a driver's connect) delays the start or the stop
#: only, which their own limits bound; not said to hold the loop.
#: ``callrouter_metrics`` runs once, in the engine's setup (and ``check``).
_BEFORE_AND_AFTER = frozenset({"callrouter_metrics", "callrouter_startup", "callrouter_shutdown"})
#: How many (plugin, call, hook) failures are remembered to log each only once
#: (the oldest forgotten first).
_FAILURE_MEMORY = 10_000
#: Event names whose listeners are remembered (AMI has a few hundred).
_EVENT_NAMES_MAX = 4096
#: ``callrouter_event``'s arguments in the order the hookspec has them: an
#: implementation taking both is called with them as keywords, no dict built
#: per call (issue 16: a BLF flood calls the API's feed 8,000 times a second).
_EVENT_ARGS = ("event", "call")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool


@dataclass(frozen=True, slots=True)
class PluginNames:
    """What one plugin gives the rules with one router.toml (``callrouter
    plugins --config``): the names it registered, by kind, and whether rules
    can use them (``state``: ``loaded``, ``failed``, ``left out``, with
    ``note`` saying why). A plugin left out lists what it would register."""

    name: str
    #: The distribution that installs it (``callrouter`` for a built-in), or None.
    distribution: str | None
    version: str | None
    builtin: bool
    hooks: tuple[str, ...]
    functions: tuple[str, ...]
    lookups: tuple[str, ...]
    actions: tuple[str, ...]
    notify_targets: tuple[str, ...]
    state: str
    note: str = ""


class Plugins:
    """Typed facade over a pluggy ``PluginManager`` for the ``callrouter`` project."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._builtin: set[str] = set()
        #: :meth:`startup` ran and :meth:`shutdown` has not yet.
        self._started = False
        self._versions: dict[str, str | None] = {}
        #: The distribution of each installed plugin, loaded or left out.
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        #: Where each plugin came from, for the error when two share a name.
        self._origins: dict[str, str] = {}
        #: (plugin, call or "", hook) of the failures logged, oldest first.
        self._failed: dict[tuple[str, str, str], None] = {}
        #: Every failure of a plugin's hook, logged or not (once per call and
        #: hook is logged): a one-shot command's exit code says whether any came.
        self.hook_failures = 0
        self._impl_cache: dict[str, list[pluggy.HookImpl]] = {}
        #: Each plugin's ``callrouter_wanted_events`` answer as last asked
        #: (:meth:`wanted_events`; None: every event), and per event name the
        #: ``callrouter_event`` implementations that asked for it.
        self._wanted: dict[str, tuple[str, ...] | None] = {}
        self._event_impls: dict[str, list[pluggy.HookImpl]] = {}
        #: Plugins whose ``callrouter_wants_call_events`` said no (:meth:`configure`).
        self._not_told: frozenset[str] = frozenset()
        #: Installed or built-in plugins ``[plugins]`` left out, by name: the
        #: key that did it (``enabled``, ``disabled``), whether built in, and how
        #: to get the plugin object (:meth:`why_missing`).
        self._left_out: dict[str, tuple[str, bool, Callable[[], object]]] = {}
        #: Where ``[plugins] enabled`` and ``disabled`` are written (for_config).
        self._where: dict[str, str] = {}
        #: The names each left-out plugin would register, once asked.
        self._left_out_names: dict[str, str] | None = None
        #: Whether each of those names is a function, lookup, action or notify target.
        self._left_out_kinds: dict[str, str] = {}
        #: Plugins whose ``callrouter_register`` raised, with the error.
        self._register_failed: dict[str, str] = {}
        #: What each ``callrouter_configure`` that raised (not a ConfigError)
        #: raised: ``run`` starts the plugin unconfigured, ``check`` says so.
        self.configure_failures: list[str] = []
        #: What each ``callrouter_wanted_events``, ``callrouter_wants_call_events``
        #: or ``callrouter_metrics`` that failed raised, and what ``run`` then
        #: does without its answer: ``check`` counts each as an error.
        self.answer_failures: list[str] = []
        #: True when the caller prints ``configure_failures`` and
        #: ``answer_failures`` itself (``check``, ``plugins --config``): those
        #: failures are then not logged too, which said each one twice, once in
        #: the caller's words and once as the log's ``failed in`` line.
        self.failures_printed = False
        #: Names a failed ``callrouter_register`` had registered (and lost) -> the plugin.
        self._failed_names: dict[str, str] = {}
        #: The ``[plugins.NAME]`` tables router.toml has, once configured
        #: (None before): :meth:`why_missing` names a loaded plugin without one.
        self._tables: frozenset[str] | None = None
        #: The configuration :meth:`configure` was given: a left-out plugin is
        #: configured with its own table before it is asked for its names.
        self._config: Config | None = None
        self._config_name = "router.toml"
        #: The plugins that registered at least one name at the last registration.
        self._registered_any: frozenset[str] = frozenset()
        #: (plugin, hook) already said to have held the event loop.
        self._blocked: set[tuple[str, str]] = set()
        #: What was said of plugins registering an action kind or a notify
        #: target with no hook to carry it out, in order (``check`` prints it).
        self.registration_warnings: list[str] = []
        #: (plugin, name) of the unknown event names already warned about.
        self._unknown_events: set[tuple[str, str]] = set()
        #: What was said of them, in order (``callrouter check`` prints it).
        self.unknown_event_warnings: list[str] = []

    # -- loading -----------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        defaults: Iterable[str] = DEFAULT_PLUGINS,
        entry_points: bool = True,
        extra: Iterable[object] = (),
        disabled: Iterable[str] = (),
        enabled: Iterable[str] = (),
        broken: dict[str, str] | None = None,
    ) -> Plugins:
        """Register built-ins, installed plugins (entry points) and ``extra`` objects.

        A non-empty ``enabled`` limits the installed plugins to those named;
        built-ins are always loaded (rules need them), unless ``disabled``.
        An installed plugin that cannot be loaded (not importable, its
        ``make_plugin()`` raised, refused as registered) raises
        :class:`PluginError`: ``run`` must not start without it. With
        ``broken`` (``callrouter plugins``' listing) it is left out and its
        error put there by name instead: one broken plugin refused the whole
        listing, the working plugins' versions and hooks unsaid.
        """
        plugins = cls()
        blocked = set(disabled)
        chosen = set(enabled)
        for dotted in defaults:
            module = importlib.import_module(dotted)
            name = dotted.rsplit(".", 1)[-1]
            if name in blocked or dotted in blocked:
                plugins._left_out[name] = ("disabled", True, partial(_builtin_object, module))
                continue
            plugins.register(
                _builtin_object(module),
                name=name,
                builtin=True,
                origin=f"the built-in {dotted}",
            )
        if entry_points:
            for ep in metadata.entry_points(group=hookspecs.PROJECT):
                dist = ep.dist
                plugins._dists.setdefault(
                    ep.name,
                    (dist.name, dist.version) if dist is not None else (None, None),
                )
                if ep.name in blocked or (chosen and ep.name not in chosen):
                    key = "disabled" if ep.name in blocked else "enabled"
                    plugins._left_out[ep.name] = (key, False, partial(_entry_point_object, ep))
                    continue
                try:
                    plugins._load_entry_point(ep)
                except PluginError as exc:
                    if broken is None:
                        raise
                    broken[ep.name] = str(exc)
        for obj in extra:
            plugins.register(obj)
        plugins.pm.check_pending()
        return plugins

    @classmethod
    def for_config(
        cls,
        config: Config,
        *,
        extra: Iterable[object] = (),
        broken: dict[str, str] | None = None,
    ) -> Plugins:
        """The plugins ``router.toml``'s ``[plugins]`` table selects.

        A name in ``enabled`` or ``disabled``, or a ``[plugins.NAME]`` table,
        that is neither a built-in nor an installed plugin is a typo or a
        missing package: refused with a did-you-mean, because ignoring it
        would run plugins the administrator meant to switch off (or leave the
        one they configured uninstalled). ``broken``: as :meth:`load`'s
        (``callrouter plugins --config`` lists the others).
        """
        known = {dotted.rsplit(".", 1)[-1] for dotted in DEFAULT_PLUGINS}
        known.update(ep.name for ep in metadata.entry_points(group=hookspecs.PROJECT))
        settings = config.plugins
        for key, names in (("enabled", settings.enabled), ("disabled", settings.disabled)):
            for name in names:
                if name not in known:
                    raise ConfigError(
                        f"{config.where('plugins', key)}: [plugins] {key}: "
                        f"{name!r} is no plugin here"
                        f"{did_you_mean(name, known)}; known: {', '.join(sorted(known))} "
                        "(callrouter plugins lists them)"
                    )
        for name in settings.settings:
            if name not in known:
                raise ConfigError(
                    f"{config.where('plugins', name)}: [plugins.{name}]: "
                    f"no plugin {name!r} is installed"
                    f"{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"
                )
        plugins = cls.load(
            enabled=settings.enabled, disabled=settings.disabled, extra=extra, broken=broken
        )
        plugins._where = {key: config.where("plugins", key) for key in ("enabled", "disabled")}
        return plugins

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        """Import, make and register one installed plugin; :class:`PluginError`
        naming it and how to start without it when that fails."""
        try:
            obj = _entry_point_object(ep)
        except _FactoryFailed as failed:
            exc = failed.__cause__
            raise PluginError(
                ep.name,
                f"its make_plugin() raised {exc!r}{_defined_at(failed.factory)}; " + _turn_off(ep),
            ) from exc
        except Exception as exc:
            raise PluginError(
                ep.name,
                f"cannot be imported: {exc!r}{_raised_at(exc)}; {_turn_off(ep)}",
            ) from exc
        dist = ep.dist
        self.register(
            obj,
            name=ep.name,
            version=dist.version if dist is not None else None,
            origin=_entry_point_origin(ep),
        )

    def register(
        self,
        plugin: object,
        *,
        name: str | None = None,
        builtin: bool = False,
        version: str | None = None,
        origin: str | None = None,
    ) -> str:
        """Add one plugin; refuse what the facade cannot call faithfully.

        Each implementation is called on its own (isolation, timeouts), so
        pluggy's wrappers would never wrap anything: a ``wrapper=True``
        ``callrouter_execute`` used to be taken for an executor and its
        generator returned as the action's outcome. Refused, naming the hook.
        """
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        origin = origin or _object_origin(plugin)
        if self.pm.has_plugin(plugin_name):
            first = self._origins.get(plugin_name, "another plugin")
            raise PluginError(
                plugin_name,
                f"two plugins have this name: {first} and {origin}; "
                "each plugin needs a name of its own",
            )
        if plugin is None:
            raise PluginError(
                plugin_name,
                "the plugin object is None (a make_plugin() that returns nothing?); "
                "its hooks would never run",
            )
        for hook in _wrapper_hooks(self.pm, plugin):
            raise PluginError(
                plugin_name,
                f"{hook} is a pluggy wrapper (wrapper=True or "
                "hookwrapper=True); callrouter calls each "
                "implementation on its own, so wrappers are not "
                "supported: make it a plain @hookimpl",
            )
        problem = _hook_problem(self.pm, plugin) or _passing_problem(self.pm, plugin)
        if problem:
            raise PluginError(plugin_name, problem)
        try:
            self.pm.register(plugin, name=plugin_name)
        except pluggy.PluginValidationError as exc:  # an argument the hook does not pass
            message = _argument_problem(self.pm, plugin) or " ".join(str(exc).split())
            raise PluginError(plugin_name, message) from exc
        self._impl_cache.clear()
        self._event_impls.clear()
        if builtin:
            self._builtin.add(plugin_name)
        self._versions[plugin_name] = version
        self._origins[plugin_name] = origin
        return plugin_name

    def distribution_name(self, name: str) -> str | None:
        """The package that installed the plugin ``name`` (None: unknown), loaded or not."""
        return self._dists.get(name, (None, None))[0]

    def distribution_version(self, name: str) -> str | None:
        """The version of the package that installed the plugin ``name`` (None:
        unknown), loaded or not: ``callrouter plugins`` names a broken one's."""
        return self._dists.get(name, (None, None))[1]

    def info(self) -> list[PluginInfo]:
        """What ``callrouter plugins`` prints: name, version, hooks implemented."""
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda p: p[0]):
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            out.append(PluginInfo(name, self._versions.get(name), hooks, name in self._builtin))
        return out

    def names(self, registry: Registry) -> list[PluginNames]:
        """Per plugin, by name, what it registered into ``registry`` (filled
        by :meth:`register_into`), or would register when ``[plugins]`` left
        it out: what ``callrouter plugins --config`` prints. Before, only a
        misspelt name in a rule showed them, through its did-you-mean."""
        from router import __version__

        owned: dict[str, dict[str, list[str]]] = {}

        def add(plugin: str | None, kind: str, name: str) -> None:
            if plugin is not None:
                owned.setdefault(plugin, {}).setdefault(kind, []).append(name)

        owners = registry.owners
        for name in registry.functions:
            add(owners.get(name), "functions", name)
        for name in registry.lookups:
            add(owners.get(name), "lookups", name)
        for name in registry.actions:
            add(owners.get(f"action:{name}"), "actions", name)
        for name in registry.notify_targets:
            add(owners.get(f"notify:{name}"), "notify_targets", name)
        if self._left_out:
            if self._left_out_names is None:
                self._left_out_names = self._names_left_out()
            for name, plugin in self._left_out_names.items():
                add(plugin, self._left_out_kinds.get(name, "functions"), name)
        hooks = {info.name: info.hooks for info in self.info()}
        out: list[PluginNames] = []
        for plugin in sorted({*hooks, *self._left_out}):
            builtin = plugin in self._builtin or (
                plugin in self._left_out and self._left_out[plugin][1]
            )
            dist, version = (
                ("callrouter", __version__) if builtin else self._dists.get(plugin, (None, None))
            )
            if version is None and not builtin:
                version = self._versions.get(plugin)
            mine = owned.get(plugin, {})
            state, note = "loaded", ""
            if plugin in self._left_out:
                state, note = "left out", self._left_out_note(plugin)
            elif plugin in self._register_failed:
                state, note = "failed", self._register_failed[plugin]
            elif not mine and not builtin and plugin in self._tables_missing():
                note = (
                    f"registered nothing; {self._config_name} gives it no settings "
                    f"([plugins.{plugin}]), which it may need"
                )
            out.append(
                PluginNames(
                    plugin,
                    dist,
                    version,
                    builtin,
                    hooks.get(plugin, ()),
                    tuple(sorted(mine.get("functions", ()))),
                    tuple(sorted(mine.get("lookups", ()))),
                    tuple(sorted(mine.get("actions", ()))),
                    tuple(sorted(mine.get("notify_targets", ()))),
                    state,
                    note,
                )
            )
        return out

    def _tables_missing(self) -> frozenset[str]:
        """Loaded plugins router.toml gives no ``[plugins.NAME]`` table (once configured)."""
        if self._tables is None:
            return frozenset()
        return frozenset(name for name in self._versions if name not in self._tables)

    def _left_out_note(self, plugin: str) -> str:
        """``not enabled in router.toml:6 [plugins] enabled`` (as :meth:`why_missing`)."""
        key, _, _ = self._left_out[plugin]
        state = "not enabled" if key == "enabled" else "disabled"
        where = self._where.get(key)
        return f"{state} in {where} [plugins] {key}" if where else f"{state} ([plugins] {key})"

    # -- calling -----------------------------------------------------------

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        # Asked for every event: cached until the next register().
        impls = self._impl_cache.get(hook_name)
        if impls is None:
            # pluggy calls the last registered first; keep its order.
            impls = list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))
            if hook_name == "callrouter_call_event" and self._not_told:
                # Those that said no in callrouter_wants_call_events.
                impls = [i for i in impls if i.plugin_name not in self._not_told]
            self._impl_cache[hook_name] = impls
        return impls

    def _report(
        self, hook: str, impl: pluggy.HookImpl, exc: BaseException, scope: str | None
    ) -> None:
        # Once per call and hook (once per hook for events of no call): a plugin
        # that fails on every event must not flood the log, and its bug in one
        # hook must not hide another in a hook that runs later in every call
        # (a callrouter_event failing first kept a callrouter_call_end's unsaid).
        if isinstance(exc, StartRefused):
            return  # the engine's start raises it, as the start's own error
        self.hook_failures += 1
        key = (impl.plugin_name, scope or "", hook)
        if key in self._failed:
            return
        if len(self._failed) >= _FAILURE_MEMORY:
            self._failed.pop(next(iter(self._failed)))
        self._failed[key] = None
        log.error(
            "plugin %r failed in %s%s: %r%s",
            impl.plugin_name,
            hook,
            f" (call {scope})" if scope else "",
            exc,
            "" if _raised_in(exc, impl.function) else _defined_at(impl.function),
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    def _held(self, hook: str, impl: pluggy.HookImpl, started: float) -> None:
        """Say, once per plugin and hook, that a plain hook held the event loop
        for ``BLOCKING_WARN`` or longer (``time.sleep``, ``requests``, a
        blocking driver): every call's routing and every event waited, and
        the hook's cut-off could not stop it, without a word naming whom."""
        held = time.perf_counter() - started
        key = (impl.plugin_name, hook)
        if held < BLOCKING_WARN or key in self._blocked or hook in _BEFORE_AND_AFTER:
            return
        if len(self._blocked) < _FAILURE_MEMORY:
            self._blocked.add(key)
        log.warning(
            "plugin %r: %s held the event loop for %.1f s, and no call was routed and no "
            "event read meanwhile; a plain function that waits (time.sleep, requests, a "
            "blocking driver) must await instead or hand the wait to asyncio.to_thread "
            "(docs/plugins.md, Async hooks; said once per hook)%s",
            impl.plugin_name,
            hook,
            held,
            _defined_at(impl.function),
        )

    async def _call_one(
        self,
        hook: str,
        impl: pluggy.HookImpl,
        kwargs: Mapping[str, Any],
        *,
        scope: str | None = None,
        timeout: float | None = HOOK_TIMEOUT,
    ) -> Any:
        """One plugin's answer, awaited; None when it raised (logged, as by
        :meth:`_call_each`, which inlines this on the event path)."""
        started = time.perf_counter()
        try:
            try:
                value = impl.function(**{name: kwargs[name] for name in impl.argnames})
            finally:
                if time.perf_counter() - started >= BLOCKING_WARN:
                    self._held(hook, impl, started)
            if value is not None and inspect.isawaitable(value):
                async with _CutOff(timeout):
                    value = await value
        except Exception as exc:
            self._report(hook, impl, exc, scope)
            return None
        return value

    async def _call_each(
        self,
        hook: str,
        kwargs: Mapping[str, Any],
        *,
        scope: str | None = None,
        timeout: float | None = HOOK_TIMEOUT,
        firstresult: bool = False,
    ) -> list[Any]:
        impls = self._impls(hook)
        if not impls:
            return []
        results: list[Any] = []
        for impl in impls:
            args = {name: kwargs[name] for name in impl.argnames}
            started = time.perf_counter()
            try:
                try:
                    value = impl.function(**args)
                finally:
                    if time.perf_counter() - started >= BLOCKING_WARN:
                        self._held(hook, impl, started)
                if value is not None and inspect.isawaitable(value):
                    # In this task (no task per hook call, as wait_for would make).
                    async with _CutOff(timeout):
                        value = await value
            except Exception as exc:
                self._report(hook, impl, exc, scope)
                continue
            if value is not None:
                results.append(value)
                if firstresult:
                    break
        return results

    # -- one method per hook ------------------------------------------------

    async def configure(self, config: Config) -> None:
        """A plugin refusing its settings (ConfigError) stops the start with its
        message; a plugin that crashes here is logged and kept, like a crash in
        any other hook: its other hooks may still work, and the engine must start."""
        self._tables = frozenset(k for k, v in config.plugins.settings.items() if v)
        self._config = config
        self._config_name = config.path.name if config.path is not None else "router.toml"
        for impl in self._impls("callrouter_configure"):
            kwargs = {
                "config": config,
                "settings": config.plugins.settings.get(impl.plugin_name, {}),
            }
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                value = impl.function(**args)
                if inspect.isawaitable(value):
                    async with _CutOff(CONFIGURE_TIMEOUT):
                        await value
            except ConfigError:
                raise
            except Exception as exc:
                if not self.failures_printed:
                    self._report("callrouter_configure", impl, exc, None)
                self.configure_failures.append(
                    f"plugin {impl.plugin_name!r}: callrouter_configure raised {exc!r}, "
                    "so callrouter run would start it without its settings"
                    + _defined_at(impl.function)
                )
        await self._ask_who_wants_call_events()

    async def _ask_who_wants_call_events(self) -> None:
        """Each ``callrouter_wants_call_events``, once the plugins are configured:
        a plugin that says no is not told call events (:meth:`reads_call_events`)."""
        not_told: set[str] = set()
        for impl in self._impls("callrouter_wants_call_events"):
            try:
                value = impl.function()
                if inspect.isawaitable(value):
                    async with _CutOff(HOOK_TIMEOUT):
                        value = await value
                if value is not None and not isinstance(value, bool):
                    raise TypeError(f"expected True, False or None, got {value!r}")
            except Exception as exc:
                if not self.failures_printed:
                    self._report("callrouter_wants_call_events", impl, exc, None)
                self._answer_failed(
                    "callrouter_wants_call_events", impl, exc, "would tell it call events"
                )
                continue
            if value is False:
                not_told.add(impl.plugin_name)
        self._not_told = frozenset(not_told)
        self._impl_cache.pop("callrouter_call_event", None)

    def build_registry(self) -> tuple[Registry, list[str]]:
        """A fresh registry filled by every plugin, and the problems met doing it."""
        from router.rules.registry import Registry

        registry = Registry()
        return registry, self.register_into(registry)

    def register_into(self, registry: Registry) -> list[str]:
        """Fill ``registry``; return located problems instead of stopping at the first.

        The caller reports them (the engine logs each, ``check`` prints each):
        logged here too, each was said twice, the second time unlocated."""
        problems: list[str] = []
        registry.why_missing = self.why_missing
        self._register_failed.clear()
        self._failed_names.clear()
        # Registration order (built-ins first): on a name clash the newcomer
        # gets the error, so installing a plugin never silently replaces a built-in.
        for impl in reversed(self._impls("callrouter_register")):
            registry.registering = impl.plugin_name
            saved = registry.checkpoint()
            try:
                _register_one(impl, registry)
                self._check_carried_out(impl.plugin_name, registry, saved)
            except Exception as exc:
                # All or nothing: what it registered before failing goes too,
                # and a rule naming it is told whose it was.
                for name in registry.added_since(saved):
                    if len(self._failed_names) < _FAILURE_MEMORY:
                        self._failed_names[name] = impl.plugin_name
                registry.roll_back(saved)
                problems.append(f"plugin {impl.plugin_name!r}: callrouter_register: {exc}")
                self._register_failed[impl.plugin_name] = f"callrouter_register: {exc}"
            finally:
                registry.registering = None
        self._registered_any = frozenset(registry.owners.values())
        return problems

    def _check_carried_out(self, plugin: str, registry: Registry, saved: Registry) -> None:
        """Warn when ``plugin`` registered an action kind without implementing
        ``callrouter_execute``, or a notify target without ``callrouter_notify``:
        the rules load, and then every such action is ``no-executor`` and
        every such notification goes nowhere, with no word at start."""
        if plugin in self._builtin:
            return  # the built-in kinds are the executor's own
        missing = [
            (f"the action {kind!r}", "callrouter_execute", f"every {kind!r} would end no-executor")
            for kind in registry.actions
            if kind not in saved.actions
        ] + [
            (
                f"the notify target {target!r}",
                "callrouter_notify",
                f"every notify to {target!r} would reach no one",
            )
            for target in registry.notify_targets
            if target not in saved.notify_targets
        ]
        for what, hook, result in missing:
            if any(i.plugin_name == plugin for i in self._impls(hook)):
                continue
            message = (
                f"plugin {plugin!r}: registers {what} but implements no {hook}, so "
                f"{result}; add the hook, or let the plugin that carries it out register it"
            )
            if message in self.registration_warnings or len(self.registration_warnings) >= 1000:
                continue
            self.registration_warnings.append(message)
            log.warning("%s", message)

    def why_missing(self, name: str) -> str:
        """Why the function, lookup, action or notify target ``name`` is not
        registered, when a plugin explains it; "" when none does.

        `` (plugin 'crm' is installed but not enabled in router.toml:6 [plugins]
        enabled)`` or `` (plugin 'crm' failed to load: callrouter_register:
        ...)``: "unknown lookup 'crm.owner'" alone sends the administrator
        looking for a typo. A failed plugin is named for the names it owns by
        their prefix (``crm.``, the target ``crm``); a plugin left out is asked
        which names it registers, into a registry of its own, on the first
        unknown name (only then is a left-out plugin imported), and named by
        prefix when that fails.
        """
        failed = self._failed_names.get(name)
        if failed is not None and failed in self._register_failed:
            return f" (plugin {failed!r} failed to load: {self._register_failed[failed]})"
        for plugin, error in self._register_failed.items():
            if _owns(plugin, name):
                return f" (plugin {plugin!r} failed to load: {error})"
        loaded = self._loaded_owner(name)
        if loaded:
            return loaded
        if not self._left_out:
            return ""
        if self._left_out_names is None:
            self._left_out_names = self._names_left_out()
        owner = self._left_out_names.get(name)
        if owner is None:
            owner = next((plugin for plugin in self._left_out if _owns(plugin, name)), None)
        if owner is None:
            return ""
        key, builtin, _ = self._left_out[owner]
        what = "built in" if builtin else "installed"
        state = "not enabled" if key == "enabled" else "disabled"
        where = self._where.get(key)
        place = f"in {where} [plugins] {key}" if where else f"([plugins] {key})"
        return f" (plugin {owner!r} is {what} but {state} {place})"

    def _loaded_owner(self, name: str) -> str:
        """`` (plugin 'crm' is loaded but registered nothing; ...)`` when a
        loaded plugin that registered no name owns ``name`` by its prefix, or "".

        A plugin inert without its ``[plugins.NAME]`` table (docs/plugins.md,
        Packaging) registers nothing: the rule naming its lookup was told
        ``unknown lookup 'crm.owner'`` alone, which reads as a typo."""
        for plugin in self._versions:
            if (
                not _owns(plugin, name)
                or not self.pm.has_plugin(plugin)
                or plugin in self._registered_any  # it registered others: a typo
            ):
                continue
            if self._tables is not None and plugin not in self._tables:
                return (
                    f" (plugin {plugin!r} is loaded but registered nothing; "
                    f"{self._config_name} gives it no settings ([plugins.{plugin}]), "
                    "which it may need)"
                )
            return f" (plugin {plugin!r} is loaded but registered nothing)"
        return ""

    def _names_left_out(self) -> dict[str, str]:
        """name -> the left-out plugin that registers it (the first one)."""
        from router.rules.registry import Registry

        owners: dict[str, str] = {}
        for plugin, (_, _, make) in self._left_out.items():
            scratch, registry = Plugins(), Registry()
            try:
                scratch.register(make(), name=plugin)
            except Exception as exc:  # its import fails: named by prefix only
                log.debug("left-out plugin %r not loaded to name its names: %r", plugin, exc)
                continue
            # With its own table first: a plugin inert without its settings (as
            # docs/plugins.md, Packaging, asks) registered nothing here, so a
            # rule naming its ``vip_tag`` was not told the plugin was left out,
            # and ``plugins --config`` said it "would register no names".
            for impl in scratch._impls("callrouter_configure"):
                with contextlib.suppress(Exception):
                    _configure_one(impl, self._config, plugin)
            for impl in scratch._impls("callrouter_register"):
                # What it registers before a failure still counts.
                with contextlib.suppress(Exception):
                    _register_one(impl, registry)
            for kind, names in (
                ("functions", registry.functions),
                ("lookups", registry.lookups),
                ("actions", registry.actions),
                ("notify_targets", registry.notify_targets),
            ):
                for name in names:
                    if name not in owners:
                        owners[name] = plugin
                        self._left_out_kinds[name] = kind
        return owners

    async def state_folders(self, *, shadow: bool) -> list[StateFolder]:
        """Every plugin's ``callrouter_state_folders``: the folders of their
        own the engine locks before it logs in. A plugin refusing its folder
        (ConfigError) stops the start with its message; one that crashes or
        answers something else than ``(path, key)`` pairs is logged and
        gives none (its ``callrouter_startup`` may still lock them)."""
        folders: list[StateFolder] = []
        kwargs = {"shadow": shadow}
        for impl in self._impls("callrouter_state_folders"):
            try:
                value = impl.function(**{name: kwargs[name] for name in impl.argnames})
                if inspect.isawaitable(value):
                    async with _CutOff(CONFIGURE_TIMEOUT):  # at start, as configure
                        value = await value
                answer = [] if value is None else _state_folders(value)
            except ConfigError:
                raise
            except Exception as exc:
                self._report("callrouter_state_folders", impl, exc, None)
                continue
            folders.extend(answer)
        return folders

    async def state_conversions(self, state_dir: Path) -> list[str]:
        """Every plugin's ``callrouter_state_conversions``: what ``run`` would
        convert in its state files at start, a line each, prefixed with the
        plugin's name (``callrouter check``). A hook that raises, is cut off or
        answers something else than lines is an :attr:`answer_failures` entry
        and gives none."""
        lines: list[str] = []
        hook = "callrouter_state_conversions"
        for impl in self._impls(hook):
            try:
                value = impl.function(
                    **{name: state_dir for name in impl.argnames if name == "state_dir"}
                )
                if inspect.isawaitable(value):
                    async with _CutOff(HOOK_TIMEOUT):
                        value = await value
                answer = [] if value is None else _lines(value)
            except Exception as exc:
                if not self.failures_printed:
                    self._report(hook, impl, exc, None)
                self._answer_failed(hook, impl, exc, "may convert its files unsaid")
                continue
            lines.extend(f"plugin {impl.plugin_name!r}: {line}" for line in answer)
        return lines

    async def startup(self, engine: EngineAPI) -> None:
        self._started = True
        await self._call_each("callrouter_startup", {"engine": engine}, timeout=30.0)

    async def shutdown(self, engine: EngineAPI, *, timeout: float = 10.0) -> None:
        """``callrouter_shutdown``, once, and only after :meth:`startup`: a
        start refused before it (rule problems, a failed login) shuts down
        no plugin, which then never sees a shutdown without its startup."""
        if not self._started:
            return
        self._started = False
        await self._call_each("callrouter_shutdown", {"engine": engine}, timeout=timeout)

    async def event(self, event: Event, call: Call | None) -> None:
        """``callrouter_event`` of the plugins that want this event (by name).

        The hot path: a plugin that said which events it reads
        (``callrouter_wanted_events``) is not called for the others, so most
        events of a call cost a dict lookup, not a call per plugin.
        """
        name = event.name
        impls = self._impls_for_event(name)
        if not impls:
            return
        scope = call.linkedid if call else None
        for impl in impls:
            started = time.perf_counter()
            try:
                try:
                    if impl.argnames == _EVENT_ARGS:  # the usual signature: no dict made
                        value = impl.function(event=event, call=call)
                    else:
                        value = impl.function(
                            **{arg: event if arg == "event" else call for arg in impl.argnames}
                        )
                finally:
                    if time.perf_counter() - started >= BLOCKING_WARN:
                        self._held("callrouter_event", impl, started)
                if value is not None and inspect.isawaitable(value):
                    async with _CutOff(HOOK_TIMEOUT):
                        await value
            except Exception as exc:
                self._report("callrouter_event", impl, exc, scope)

    def reads_event(self, name: str) -> bool:
        """Whether :meth:`event` calls any plugin for events named ``name``: the
        engine asks first, and most of a call's events then cost no coroutine."""
        return bool(self._impls_for_event(name))

    def _impls_for_event(self, name: str) -> list[pluggy.HookImpl]:
        cached = self._event_impls.get(name)
        if cached is not None:
            return cached
        impls = [
            impl
            for impl in self._impls("callrouter_event")
            if _wants(self._wanted.get(impl.plugin_name), name)
        ]
        if len(self._event_impls) < _EVENT_NAMES_MAX:
            self._event_impls[name] = impls
        return impls

    async def wanted_events(
        self, *, warn: bool = True, only: Collection[str] | None = None
    ) -> list[Iterable[str] | None]:
        """Each event-reading plugin's ``callrouter_wanted_events`` (None: every event).

        A name no event has is logged (``warn``) and kept in
        :attr:`unknown_event_warnings` either way: ``callrouter check`` prints
        them, so a misspelt name is found before ``run``.

        A plugin with ``callrouter_event`` and no answer (no such hook, or
        it raised, or returned something that is not names) wants every
        event: filtering must never hide one from a plugin that did not ask.

        ``only``: ask just these plugins (registered after the others were
        asked: the HTTP API's), keeping the others' answers as they were.
        """
        answers: dict[str, tuple[str, ...] | None] = {
            impl.plugin_name: None
            for impl in self._impls("callrouter_event")
            if only is None or impl.plugin_name in only
        }
        for impl in self._impls("callrouter_wanted_events"):
            if only is not None and impl.plugin_name not in only:
                continue
            names: tuple[str, ...] | None = None
            try:
                value = impl.function()
                if inspect.isawaitable(value):
                    async with _CutOff(HOOK_TIMEOUT):
                        value = await value
                if value is not None:
                    if isinstance(value, str) or not isinstance(value, Iterable):
                        raise TypeError(f"expected event names or None, got {value!r}")
                    names = tuple(value)
                    if not all(isinstance(name, str) for name in names):
                        raise TypeError(f"expected event names or None, got {names!r}")
            except Exception as exc:
                if not self.failures_printed:
                    self._report("callrouter_wanted_events", impl, exc, None)
                self._answer_failed(
                    "callrouter_wanted_events", impl, exc, "would give it every event"
                )
                names = None
            if names:
                self._warn_unknown_events(impl.plugin_name, names, warn=warn)
            answers[impl.plugin_name] = names
        # What :meth:`event` dispatches by from now on (a plugin registered
        # later, with no answer yet, gets every event).
        self._wanted = answers if only is None else {**self._wanted, **answers}
        self._event_impls.clear()
        return list(self._wanted.values())

    def _warn_unknown_events(self, plugin: str, names: Iterable[str], *, warn: bool) -> None:
        """A name in ``callrouter_wanted_events`` that no event has: a rule's
        ``on: event Hangupp`` is refused with a did-you-mean, and the plugin's
        misspelling left its ``callrouter_event`` silent without a word. Said
        once per plugin and name: the answers are asked at every reload."""
        known = _known_events()
        for name in names:
            if any(c in name for c in "*?[") or name in known:
                continue
            if (plugin, name) in self._unknown_events or len(self._unknown_events) >= 1000:
                continue
            self._unknown_events.add((plugin, name))
            message = (
                f"plugin {plugin!r}: callrouter_wanted_events names {name!r}"
                f"{did_you_mean(name, known)}, an event Asterisk 22 does not document "
                "(callrouter actions --events lists them), so its callrouter_event may "
                "never be called for it; write an event of a module Asterisk does not "
                f"document as a glob, {name + '*'!r}"
            )
            self.unknown_event_warnings.append(message)
            if warn:
                log.warning("%s", message)

    async def call_start(self, call: Call) -> None:
        await self._call_each("callrouter_call_start", {"call": call}, scope=call.linkedid)

    async def prefetch(self, call: Call) -> None:
        await self._call_each("callrouter_prefetch", {"call": call}, scope=call.linkedid)

    async def decision(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        await self._call_each(
            "callrouter_decision",
            {"call": call, "decision": decision, "trace": trace, "outcome": outcome},
            scope=call.linkedid,
        )

    async def execute(self, action: Action, call: Call, engine: EngineAPI) -> Any:
        """The first plugin answering wins; one that raises fails the action
        (the trace says ``failed`` with its name) rather than passing it on."""
        kwargs = {"action": action, "call": call, "engine": engine}
        for impl in self._impls("callrouter_execute"):
            started = time.perf_counter()
            try:
                try:
                    value = impl.function(**{name: kwargs[name] for name in impl.argnames})
                finally:
                    if time.perf_counter() - started >= BLOCKING_WARN:
                        self._held("callrouter_execute", impl, started)
                if inspect.isawaitable(value):
                    async with _CutOff(HOOK_TIMEOUT):
                        value = await value
            except Exception as exc:
                self._report("callrouter_execute", impl, exc, call.linkedid)
                raise PluginError(impl.plugin_name, f"{action.kind}: {exc!r}") from exc
            if value is None:
                continue
            if isinstance(value, str) and value:
                return cut_text(str.__str__(value))  # a plain text, at most 500 characters
            # False or "" is no description of what was done: it was taken
            # for one, and the trace said "ok" of an action that had not run.
            # Nor is 42, a dict or b"..." (the hook's type is str | None): shown
            # with str(), whose own exception failed the action naming no plugin.
            problem = TypeError(
                f"returned {_answer_shown(value)}: expected a description of what was "
                "done (a text), or None when the action is not yours (raise to fail it)"
            )
            self._report("callrouter_execute", impl, problem, call.linkedid)
            raise PluginError(impl.plugin_name, f"{action.kind}: {problem}")
        return None

    async def notify(self, target: str, params: Mapping[str, str], call: Call | None) -> None:
        await self._call_each(
            "callrouter_notify",
            {"target": target, "params": params, "call": call},
            scope=call.linkedid if call else None,
        )

    async def stream_gap(self, gap: StreamGap) -> None:
        await self._call_each("callrouter_stream_gap", {"gap": gap})

    async def channels_listed(self, channels: Sequence[Event]) -> None:
        await self._call_each("callrouter_channels_listed", {"channels": channels})

    async def metrics(self, metrics: Metrics) -> None:
        hook = "callrouter_metrics"
        for impl in self._impls(hook):
            started = time.perf_counter()
            try:
                try:
                    value = impl.function(
                        **{name: metrics for name in impl.argnames if name == "metrics"}
                    )
                finally:
                    if time.perf_counter() - started >= BLOCKING_WARN:
                        self._held(hook, impl, started)
                if value is not None and inspect.isawaitable(value):
                    async with _CutOff(HOOK_TIMEOUT):
                        await value
            except Exception as exc:
                if not self.failures_printed:
                    self._report(hook, impl, exc, None)
                self._answer_failed(hook, impl, exc, "would serve /metrics without its families")

    def _answer_failed(
        self, hook: str, impl: pluggy.HookImpl, exc: BaseException, consequence: str
    ) -> None:
        """Keep a failure of a hook asked once at start, for ``callrouter check``
        to count as an error: it was logged, and check still said all was OK."""
        message = f"plugin {impl.plugin_name!r}: {hook} failed with {exc!r}, so callrouter run "
        message += consequence + _defined_at(impl.function)
        if message not in self.answer_failures and len(self.answer_failures) < 1000:
            self.answer_failures.append(message)

    async def call_event(self, event: CallEvent) -> None:
        await self._call_each("callrouter_call_event", {"event": event}, scope=event.call_id)

    def implements(self, hook_name: str) -> bool:
        """Whether any plugin implements the hook ``hook_name``."""
        return bool(self._impls(hook_name))

    def reads_call_events(self) -> bool:
        """Whether any plugin implements ``callrouter_call_event`` (and did not
        say no in ``callrouter_wants_call_events``). Without one the call life
        has nobody to tell: the engine then neither asks Asterisk for CEL nor
        folds it (router/calllife/service.py ``CallLife``)."""
        return bool(self._impls("callrouter_call_event"))

    async def present_extensions(self, call: Call) -> set[str]:
        """Every plugin's ``callrouter_present_extensions`` for ``call``, merged.

        Only extensions count (text matching what a token is scoped to), at most
        :data:`MAX_PRESENT` from one plugin: an answer becomes who may read a
        recording, so a plugin's mistake (a string for a list, a channel name)
        must not widen it; the mistake is logged with the plugin's name."""
        found: set[str] = set()
        hook = "callrouter_present_extensions"
        for impl in self._impls(hook):
            answers = await self._call_one(hook, impl, {"call": call}, scope=call.linkedid)
            if answers is None:
                continue
            if isinstance(answers, str | bytes) or not isinstance(answers, Iterable):
                log.warning(
                    "plugin %r: %s returned %s, not a list of extensions; left out%s",
                    impl.plugin_name,
                    hook,
                    type(answers).__name__,
                    _defined_at(impl.function),
                )
                continue
            bad = 0
            try:
                named = list(itertools.islice(answers, MAX_PRESENT + 1))
            except Exception as exc:  # a generator that fails half-way
                self._report(hook, impl, exc, call.linkedid)
                continue
            for count, extension in enumerate(named):
                if count >= MAX_PRESENT:
                    log.warning(
                        "plugin %r: %s named more than %d extensions; the rest left out%s",
                        impl.plugin_name,
                        hook,
                        MAX_PRESENT,
                        _defined_at(impl.function),
                    )
                    break
                if isinstance(extension, str) and _PRESENT_EXTENSION.fullmatch(extension):
                    found.add(extension)
                else:
                    bad += 1
            if bad:
                log.warning(
                    "plugin %r: %s named %d values that are no extension; left out%s",
                    impl.plugin_name,
                    hook,
                    bad,
                    _defined_at(impl.function),
                )
        return found

    async def call_end(self, call: Call) -> None:
        # The call's failure memory is kept (bounded, oldest first out): a hook
        # that runs after the call ended, such as a late decision, must not log
        # the same plugin's failure for the same call a second time.
        await self._call_each("callrouter_call_end", {"call": call}, scope=call.linkedid)


def _state_folders(value: object) -> list[StateFolder]:
    """A ``callrouter_state_folders`` answer checked: ``(path, key)`` pairs,
    ``key`` a non-empty tuple of texts; TypeError naming what came instead."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"expected (path, key) pairs or None, got {value!r}")
    folders: list[StateFolder] = []
    for item in value:
        if not (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], os.PathLike)
            and isinstance(item[1], tuple)
            and item[1]
            and all(isinstance(part, str) for part in item[1])
        ):
            raise TypeError(f"expected (path, key) pairs or None, got the item {item!r}")
        folders.append((Path(item[0]), item[1]))
    return folders


@functools.cache
def _known_events() -> frozenset[str]:
    """The events a plugin may name: the AMI catalog's and the engine's own, as
    for rules (router/builtin/ami_catalog.py)."""
    from router.ami.catalog import load_catalog
    from router.ami.event_filter import API_EVENTS, CORE_EVENTS

    return frozenset({*load_catalog().events, *CORE_EVENTS, *API_EVENTS})


class _CutOff:
    """:class:`router.eager.timeout` whose ``TimeoutError`` says the hook was cut
    off, and after how long: the log's ``TimeoutError()`` alone did not tell
    the engine's limit from a timeout of the plugin's own."""

    __slots__ = ("_delay", "_inner", "_timer")

    def __init__(self, delay: float | None) -> None:
        self._delay = delay
        self._inner = eager.timeout(delay)
        self._timer: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        self._timer = await self._inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except TimeoutError as error:
            if self._timer is None or not self._timer.expired():
                raise
            raise TimeoutError(
                f"cut off: no answer within {self._delay:g} s (docs/plugins.md, Async hooks)"
            ) from error


def _builtin_object(module: ModuleType) -> object:
    """A built-in with settings or state has a factory, so every engine gets its
    own instance; stateless ones are the module."""
    factory = getattr(module, "make_plugin", None)
    return factory() if callable(factory) else module


class _FactoryFailed(Exception):
    """A plugin module's ``make_plugin()`` raised (the cause): said as its
    failure, not as "cannot be imported", which sent its author to the imports."""

    def __init__(self, factory: object) -> None:
        super().__init__("make_plugin() raised")
        self.factory = factory


def _entry_point_object(ep: metadata.EntryPoint) -> object:
    """The installed plugin's object: what the entry point names, or what its
    module's ``make_plugin`` makes. Raises what importing it raises, and
    :class:`_FactoryFailed` from what ``make_plugin`` raises."""
    obj = ep.load()
    factory = getattr(obj, "make_plugin", None)
    if isinstance(obj, ModuleType) and callable(factory):
        try:
            obj = factory()
        except Exception as exc:
            raise _FactoryFailed(factory) from exc
    return obj


def _raised_at(exc: BaseException) -> str:
    """``"; raised at FILE:LINE"``: the line of the plugin's own code that failed to
    import (its ``import`` of a missing dependency), not importlib's; "" when no
    such line is in the traceback (the entry point names a module that is not
    there). FILE is relative to the current folder when it is under it."""
    machinery = os.path.dirname(importlib.__file__ or "")
    every = traceback.extract_tb(exc.__traceback__)
    # Only what ran below this module's own call of the entry point: for a
    # module that is not there, the line left was ours (ep.load()), which
    # sent the plugin's author into callrouter's code (hattack45).
    ours = [number for number, frame in enumerate(every) if frame.filename == __file__]
    frames = [
        frame
        for frame in (every[ours[-1] + 1 :] if ours else every)
        if not frame.filename.startswith("<")
        and not (machinery and frame.filename.startswith(machinery + os.sep))
    ]
    if not frames:
        return ""
    path = frames[-1].filename
    with contextlib.suppress(ValueError, OSError):
        shorter = os.path.relpath(path)
        if not shorter.startswith(".."):
            path = shorter
    return f"; raised at {path}:{frames[-1].lineno}"


#: A distribution's name as pip takes it (PEP 508): any other is no name to
#: paste after ``pip uninstall`` (``evil; rm -rf ~``), nor one pip could remove.
_PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def _turn_off(ep: metadata.EntryPoint) -> str:
    """How to start without an installed plugin that cannot be loaded: lines
    to paste, so the names in them are the distribution's metadata's, quoted
    for where they go (hattack45)."""
    dist = ep.dist
    name = getattr(dist, "name", None)
    uninstall = (
        f", or pip uninstall {name}"
        if isinstance(name, str) and _PROJECT_NAME.fullmatch(name)
        else ""
    )
    disabled = _toml_string(ep.name)
    return f"to start without it: [plugins] disabled = [{disabled}] in router.toml{uninstall}"


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: a quote or backslash escaped, and every
    character that is not printable (a control, an escape sequence's ESC, a
    bidi or invisible one) written as its ``\\uXXXX`` escape."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and not INVISIBLE.match(char):
            out.append(char)
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _register_one(impl: pluggy.HookImpl, registry: Registry) -> None:
    """One plugin's ``callrouter_register`` into ``registry``; raises what it raises."""
    value = impl.function(**dict.fromkeys(impl.argnames, registry))
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never run: no "never awaited" warning later
        raise TypeError("callrouter_register must not be async")


def _configure_one(impl: pluggy.HookImpl, config: Config | None, plugin: str) -> None:
    """A left-out plugin's ``callrouter_configure`` with its own table, to ask
    what it would register; only a plain one (an async one is not run here:
    its names are then those it registers unconfigured)."""
    if config is None:
        return
    kwargs = {"config": config, "settings": config.plugins.settings.get(plugin, {})}
    value = impl.function(**{name: kwargs[name] for name in impl.argnames})
    if inspect.iscoroutine(value):
        value.close()  # never run: no "never awaited" warning later


def _owns(plugin: str, name: str) -> bool:
    """Is ``name`` (``crm.owner``, the notify target ``crm``) in ``plugin``'s namespace?"""
    return name == plugin or name.startswith(f"{plugin}.")


def _wants(patterns: tuple[str, ...] | None, name: str) -> bool:
    """Does a plugin that answered ``patterns`` (names or globs; None: every
    event) read the event ``name``? Globs match as in the event selection."""
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _wrapper_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """The callrouter hooks ``plugin`` implements as pluggy wrappers."""
    found = []
    for attr in dir(plugin):
        if not attr.startswith("callrouter_"):
            continue
        try:
            opts = pm.parse_hookimpl_opts(plugin, attr)
        except Exception:  # an attribute that cannot be read is pluggy's to report
            continue
        if opts and (opts.get("wrapper") or opts.get("hookwrapper")):
            found.append(attr)
    return found


def _hook_problem(pm: pluggy.PluginManager, plugin: object) -> str:
    """What is wrong with ``plugin``'s hooks, in words, or "".

    pluggy would report a misspelt hook only from ``check_pending``, as a
    traceback naming the plugin's ``repr``, and ignores a hook function left
    unmarked: the plugin then loads and never hears of that hook. Both are a
    plugin author's first mistakes, so both are named here, with the hook.
    """
    specs = {name: caller.spec for name, caller in vars(pm.hook).items() if caller.spec}
    for attr in sorted(dir(plugin)):
        try:
            opts = pm.parse_hookimpl_opts(plugin, attr)
            func = getattr(plugin, attr)
        except Exception:  # an attribute that cannot be read is pluggy's to report
            continue
        spec = specs.get(attr)
        if opts is None:
            if spec is not None and callable(func):
                return (
                    f"{attr} is not marked with @hookimpl (from router import hookimpl), "
                    f"so it would never be called{_defined_at(func)}"
                )
            continue
        if spec is None:
            if opts.get("optionalhook"):
                continue
            return (
                f"{attr} is marked @hookimpl but is no callrouter hook"
                f"{did_you_mean(attr, specs)}; the hooks are in router/hookspecs.py "
                f"and docs/plugins.md{_defined_at(func)}"
            )
    return ""


def _marked_hooks(
    pm: pluggy.PluginManager, plugin: object
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """``plugin``'s functions marked @hookimpl for a callrouter hook, by name:
    (the hook's name, the arguments the hook passes, the function). An attribute
    that cannot be read is left out: pluggy reports it."""
    specs = {name: caller.spec for name, caller in vars(pm.hook).items() if caller.spec}
    for attr in sorted(dir(plugin)):
        spec = specs.get(attr)
        if spec is None:
            continue
        try:
            if pm.parse_hookimpl_opts(plugin, attr) is None:
                continue
            func = getattr(plugin, attr)
        except Exception:
            continue
        yield attr, spec.argnames, func


def _argument_problem(pm: pluggy.PluginManager, plugin: object) -> str:
    """The hook whose implementation asks for an argument the hook does not
    pass, in words (pluggy refused it; its message names neither the
    arguments there are nor the plugin's name), or "" when none is found."""
    for attr, passed, func in _marked_hooks(pm, plugin):
        try:
            args = _required_args(func)
        except Exception:
            continue
        extra = [name for name in args if name not in passed]
        if extra:
            return (
                f"{attr}({', '.join(args)}): "
                f"{', '.join(repr(name) for name in extra)} is no argument of the hook; "
                f"it passes {', '.join(passed) or 'none'}, by name{_defined_at(func)}"
            )
    return ""


def _passing_problem(pm: pluggy.PluginManager, plugin: object) -> str:
    """The hook whose implementation names one of the hook's arguments in a way
    pluggy never passes, in words, or "".

    pluggy passes only the required positional-or-keyword parameters: one
    with a default (``call=None``, as the hook's ``Call | None`` invites) was
    left at its default on every call, silently, and a keyword-only one
    (after ``*``) failed every call with a ``TypeError``. callrouter calls each
    implementation with the hook's arguments by name, so a positional-only one
    (before ``/``) failed every call with a ``TypeError`` too."""
    for attr, passed, func in _marked_hooks(pm, plugin):
        try:
            params = list(inspect.signature(func).parameters.values())
        except Exception:  # pluggy reports what it cannot read
            continue
        for param in params:
            if param.name not in passed:
                continue
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                return (
                    f"{attr}: its argument {param.name!r} is positional-only (before '/'), "
                    "but callrouter passes the hook's arguments by name, so every call "
                    f"would fail; drop the '/'{_defined_at(func)}"
                )
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                return (
                    f"{attr}: its argument {param.name!r} is keyword-only (after '*'), "
                    "but the hook passes only arguments named before any '*', so every "
                    f"call would fail; drop the '*'{_defined_at(func)}"
                )
            if param.default is not inspect.Parameter.empty:  # positional-or-keyword
                try:
                    shown = cut(repr(param.default), 80)
                except Exception:
                    shown = f"<{type(param.default).__name__}>"
                return (
                    f"{attr}: its argument {param.name!r} has a default "
                    f"({shown}), so pluggy never passes it and it "
                    f"would always be that default; drop the default{_defined_at(func)}"
                )
    return ""


def _raised_in(exc: BaseException, func: object) -> bool:
    """Whether ``exc``'s traceback (or one it was raised from) passes through the
    file ``func`` is written in: then the logged traceback shows the plugin's
    file and line. An answer callrouter found wrong (``callrouter_execute``
    returning 42, a ``callrouter_wanted_events`` of one text) fails with an
    error of callrouter's own, whose traceback never reached the plugin."""
    target = getattr(func, "__func__", func)
    try:
        path = inspect.getsourcefile(target)  # type: ignore[arg-type]
    except TypeError:
        return True  # nowhere to point at: say nothing more
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == path:
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def _required_args(func: Callable[..., Any]) -> list[str]:
    """The arguments pluggy will pass by name: those without a default."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    names = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
    ]
    if names and names[0] in ("self", "cls") and not inspect.ismethod(func):
        names = names[1:]  # a class registered as the plugin: pluggy drops it too
    return names


def _entry_point_origin(ep: metadata.EntryPoint) -> str:
    """``callrouter-vip 0.1.0 (entry point vip = callrouter_vip)``."""
    dist = ep.dist
    package = f"{dist.name} {dist.version}" if dist is not None else "a package"
    return f"{package} (entry point {ep.name} = {ep.value})"


def _object_origin(plugin: object) -> str:
    """A plugin given as an object (``extra=``, a test's ``plugins=[...]``)."""
    if isinstance(plugin, ModuleType):
        return f"the module {plugin.__name__}"
    kind = type(plugin)
    return f"the object {kind.__module__}.{kind.__qualname__}"


def _answer_shown(value: object) -> str:
    """A hook's wrong answer for its message: its repr, cut, never raising."""
    try:
        shown = repr(value)
    except Exception:
        shown = f"<{type(value).__name__}>"
    shown = cut(shown, 80)
    return shown if isinstance(value, bool) else f"{shown} ({type(value).__name__})"


#: Lines a plugin's ``callrouter_state_conversions`` may give, and their length.
_MAX_LINES = 100
_MAX_LINE = 1000


def _lines(value: object) -> list[str]:
    """``callrouter_state_conversions``' answer: lines of text, bounded."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"expected lines of text or None, got {value!r}")
    lines: list[str] = []
    for line in value:
        if not isinstance(line, str):
            raise TypeError(f"expected lines of text or None, got {line!r} among them")
        if len(lines) >= _MAX_LINES:
            raise ValueError(f"more than {_MAX_LINES} lines")
        lines.append(escape_controls(line[:_MAX_LINE]))
    return lines
