"""Every hook a callrouter plugin can implement, in the order they run.

A plugin is a module or object with functions named like these hooks and
decorated with ``@router.hookimpl``; it is found through the entry point group
``callrouter`` or listed in ``DEFAULT_PLUGINS``. Built-in features are plugins
written exactly the same way (``router/builtin/``).

Any hook may be a coroutine function or return an awaitable: the engine awaits
it. A hook that raises is logged with the plugin's name and skipped; the
engine and the call go on. Arguments are passed by name, so an
implementation may accept only the ones it needs (pluggy's rule).

Life cycle::

    callrouter_configure     once, after router.toml is read
    callrouter_register      once per (re)load, to add rule functions, lookups, actions
    callrouter_startup       once, when connected; add scheduler jobs here
      callrouter_event         every AMI event
      callrouter_call_start    a call (Linkedid) appears
      callrouter_prefetch      a call enters the inbound context: warm caches
      callrouter_decision      a routing decision was made (and executed, or not)
      callrouter_execute       a rule asks for an action kind a plugin owns
      callrouter_notify        a rule sends ``notify: {plugin: NAME, ...}``
      callrouter_stream_gap    the event stream lost events (reconnect)
      callrouter_call_end      the call's last channel hung up
    callrouter_shutdown      once, on SIGTERM / exit
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.message import Event
    from router.ami.stream import StreamGap
    from router.calls import Call
    from router.config import Config
    from router.engine import EngineAPI
    from router.rules.registry import Registry

PROJECT = "callrouter"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def callrouter_configure(config: Config, settings: Mapping[str, Any]) -> None:
    """Read this plugin's settings, once, before anything connects.

    Runs right after router.toml is loaded, before ``callrouter_register``.
    ``settings`` is the plugin's own ``[plugins.NAME]`` table (empty if
    absent); ``config`` is the whole validated configuration. Raise
    :class:`router.ConfigError` naming the key to refuse bad settings: the
    engine then refuses to start with that message. Return value ignored.
    """


@hookspec
def callrouter_register(registry: Registry) -> None:
    """Add rule functions, lookups, actions and notify targets.

    Runs when rules are loaded and again on every reload, before the rule
    files are validated, so every name a rule uses must be registered here:
    ``registry.add_function(name, func)``, ``registry.add_lookup(name, func)``,
    ``registry.add_action(ActionSpec(...))``, ``registry.add_notify_target(name)``.
    Registering a name another plugin already registered is an error reported
    against this plugin. Return value ignored.
    """


@hookspec
def callrouter_startup(engine: EngineAPI) -> None:
    """The engine is connected to Asterisk and about to route calls.

    ``engine.ami`` is the logged-in AMI client (the whole typed action API),
    ``engine.scheduler`` the running apscheduler ``AsyncIOScheduler`` for
    timed work (keep-alive, cache warm-up, scheduled rules),
    ``engine.state_dir`` a directory the plugin may write to. May be async;
    the engine waits for it (bounded) before taking calls. Return value ignored.
    """


@hookspec
def callrouter_event(event: Event, call: Call | None) -> None:
    """Every AMI event the engine receives, in order.

    ``call`` is the tracked call the event belongs to (by Linkedid), already
    updated with this event, or None for events of no call. Runs on the hot
    path: return quickly and hand slow work to a task. Return value ignored.
    """


@hookspec
def callrouter_call_start(call: Call) -> None:
    """A new call (a new Linkedid) was seen. Return value ignored."""


@hookspec
def callrouter_prefetch(call: Call) -> None:
    """The call's channel entered the inbound context; a routing request follows.

    Start slow lookups now (1C, CRM) so the answer is cached when the rules
    ask, typically a few hundred milliseconds later. Must not block: start a
    task and return. Return value ignored.
    """


@hookspec
def callrouter_decision(call: Call, decision: Any, trace: Any, outcome: str) -> None:
    """A routing decision was made for ``call``.

    ``decision`` and ``trace`` are the rule engine's objects (see
    ``docs/rules.md``); ``outcome`` is ``executed``, ``shadow`` (not acted on:
    shadow mode), ``late`` (past the call's deadline, not acted on),
    ``fell-through`` (no rule matched), ``failed`` or ``caller-gone`` (the
    caller hung up first; the call may have ended before this hook runs).
    For logging, metrics and call history: only ``executed`` moved the call.
    Return value ignored.
    """


@hookspec(firstresult=True)
def callrouter_execute(action: Any, call: Call, engine: EngineAPI) -> Any:
    """Carry out an action kind that is not built in.

    ``action`` has ``kind`` and ``params`` (rendered strings). The plugin that
    registered the kind returns a truthy outcome description (or awaitable of
    one); others return None. First non-None result wins; if nobody answers,
    the trace says the action had no executor.
    """


@hookspec
def callrouter_notify(target: str, params: Mapping[str, str], call: Call | None) -> None:
    """A rule's ``notify:`` action addressed ``target`` (a notify target name).

    Plugins whose target this is not return at once. Off the routing path:
    the engine does not wait for more than a short bound. Return value ignored.
    """


@hookspec
def callrouter_stream_gap(gap: StreamGap) -> None:
    """The event stream reconnected and events in between were lost.

    The engine reconciles its own state (waiting calls); plugins that keep
    state from events reconcile theirs. Return value ignored.
    """


@hookspec
def callrouter_call_end(call: Call) -> None:
    """The call's last channel hung up (or it timed out of the tracker).

    ``call.timeline`` holds what happened; ``call.answered`` whether anyone
    answered. Return value ignored.
    """


@hookspec
def callrouter_shutdown(engine: EngineAPI) -> None:
    """The engine is stopping (SIGTERM or exit): flush queues, close clients.

    Awaited with a bound; the AMI client is still logged in. Return value ignored.
    """
