"""Every hook a callrouter plugin can implement, in the order they run.

A plugin is a module or object with functions named like these hooks and
decorated with ``@router.hookimpl``; it is found through the entry point group
``callrouter`` or listed in ``DEFAULT_PLUGINS``. Built-in features are plugins
written exactly the same way (``router/builtin/``).

Any hook may be a coroutine function or return an awaitable: the engine awaits
it. A hook that raises is logged with the plugin's name and skipped; the
engine and the call go on. Arguments are passed by name, so an
implementation may accept only the ones it needs (pluggy's rule).
Implementations are called one by one, so pluggy's ``wrapper=True`` and
``hookwrapper=True`` implementations are refused at registration.

Life cycle::

    callrouter_configure     once, after router.toml is read
    callrouter_metrics       once, to add the plugin's metric families
    callrouter_register      once per (re)load, to add rule functions, lookups, actions
    callrouter_wanted_events once per (re)load, after register: the AMI events it reads
    callrouter_state_folders once, before the login: the plugin's own state folders to lock
    callrouter_startup       once, when connected; schedule timed jobs here
      callrouter_event         every AMI event
      callrouter_call_start    a call (Linkedid) appears
      callrouter_prefetch      a call enters the inbound context: warm caches
      callrouter_decision      a routing decision was made (and executed, or not)
      callrouter_execute       a rule asks for an action kind a plugin owns
      callrouter_notify        a rule sends ``notify: {plugin: NAME, ...}``
      callrouter_stream_gap    the event stream lost events (reconnect, overflow)
      callrouter_channels_listed  the reconcile (start, gap, takeover) listed Asterisk's channels
      callrouter_call_event    a fact of a call's life (ringing, answered, ...), from CEL
      callrouter_call_end      the call's last channel hung up
      callrouter_present_extensions  the API starts recording a call: who else is on it
    callrouter_shutdown      once, on SIGTERM / exit, only if startup was called
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from router.ami.facade import AMI
    from router.ami.message import Event
    from router.ami.stream import StreamGap
    from router.calllife.model import CallEvent
    from router.calls import Call
    from router.config import Config
    from router.metrics import Metrics
    from router.rules.decision import Action, Decision, Trace
    from router.rules.registry import Registry

__all__ = [
    "PROJECT",
    "EngineAPI",
    "EventListener",
    "LiveCalls",
    "RouteOutcome",
    "ScheduledJob",
    "StateFolder",
    "hookimpl",
    "hookspec",
]

PROJECT = "callrouter"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: What became of a routing decision (``callrouter_decision``): ``executed``
#: (the only one that moved the call), ``fell-through`` (no rule matched),
#: ``late`` (past the call's deadline, not acted on), ``shadow`` (not acted on:
#: shadow mode, or another live instance routes), ``failed`` (an action failed
#: or was not confirmed), ``caller-gone`` (the caller hung up first).
RouteOutcome = Literal["executed", "fell-through", "late", "shadow", "failed", "caller-gone"]

#: A timed job: a function of no arguments, plain or ``async``.
ScheduledJob = Callable[[], "Awaitable[object] | object"]

#: A folder of a plugin's own for its state files and the setting naming it
#: (``(path, ("plugins", "onec", "state_dir"))``): ``callrouter_state_folders``.
StateFolder = tuple[Path, tuple[str, ...]]

#: Told every event after the tracker folded it (with its call, or None), and
#: every stream gap (with None): ``EngineAPI.watch``.
EventListener = Callable[["Event | StreamGap", "Call | None"], None]


class LiveCalls(Protocol):
    """The engine's live calls, read-only: keyed by Linkedid, newest state."""

    def get(self, linkedid: str) -> Call | None:
        """The call with this Linkedid, or None (never seen, or already ended)."""
        ...

    def by_channel(self, channel: str) -> Call | None:
        """The call a channel (``PJSIP/101-00000001``) belongs to, or None."""
        ...

    def __iter__(self) -> Iterator[Call]: ...

    def __len__(self) -> int: ...


class EngineAPI(Protocol):
    """What a plugin gets of the engine (``callrouter_startup``, ``_execute``, ``_shutdown``).

    Narrow on purpose: plugins bake this in, so it holds only what a plugin
    needs and the engine can keep promising. The AMI session, the event
    stream and the timer machinery stay the engine's.
    """

    @property
    def ami(self) -> AMI:
        """The logged-in AMI: ``send`` and one typed method per catalog action."""
        ...

    @property
    def state_dir(self) -> Path:
        """A directory private to the service's user, for the plugin's files."""
        ...

    @property
    def config(self) -> Config:
        """The whole validated ``router.toml``."""
        ...

    @property
    def calls(self) -> LiveCalls:
        """The calls the engine tracks now, read-only."""
        ...

    @property
    def shadow(self) -> bool:
        """True when this engine decides but never acts (shadow mode)."""
        ...

    @property
    def connected(self) -> bool:
        """True while logged in to Asterisk with the event stream current.

        False from the moment a poll fails until the stream resumes: an
        action sent now would most likely wait for a timeout, so callers
        that answer someone (the HTTP API) refuse at once instead.
        """
        ...

    def schedule(
        self, name: str, job: ScheduledJob, *, every: float | None = None, cron: str | None = None
    ) -> None:
        """Run ``job`` every ``every`` seconds, or on the crontab line ``cron``.

        ``cron`` is classic cron (0 and 7 are Sunday) in the rules' zone
        (``[plugins.timefuncs] timezone``), as ``schedule:`` rules. ``name``
        identifies the job: scheduling a name again replaces the job; prefix
        it with the plugin's name. A run never overlaps the previous one, runs
        missed while busy are coalesced, and a job's exception is logged with
        its name. Raises ``ValueError`` for a bad ``every`` or ``cron``, or
        for none or both of them.
        """
        ...

    def may_ask(self, call: Call, lookup: str) -> bool:
        """Could routing ``call`` now reach a rule that asks ``lookup``?

        ``False`` when the rules end routing before any such rule (a
        blacklist ``hangup``): a plugin's prefetch then leaves the caller alone.
        """
        ...

    def watch(self, listener: EventListener) -> Callable[[], None]:
        """Tell ``listener`` every event and stream gap from now on; returns the stop.

        For code that follows calls outside the hooks (the HTTP API confirms a
        click-to-call by its events and re-applies state after a gap). The
        listener runs on the event path, synchronously, after the tracker and
        the ``callrouter_event`` hooks: it must return at once. Its exceptions
        are logged and never stop the event.
        """
        ...

    def hold_state_folder(self, path: Path, key: tuple[str, ...]) -> None:
        """Lock ``path``, a folder of the plugin's own for its state files, as
        ``callrouter run`` locks ``[router] state_dir``, until the engine stops.

        ``key`` is the setting naming the folder (``("plugins", "onec",
        "state_dir")``). Under ``callrouter run``, a second router whose
        plugin keeps its files in the same folder raises ``ConfigError``
        naming ``key``'s line, the folder and the process holding it, and
        refuses to start (the two would write the same files); ``callrouter
        state restore`` into the folder is refused while it is held. Does
        nothing where the engine locks no state folder (the offline commands
        that start plugins beside the service, tests) and when ``path`` is
        a folder the engine holds already (``[router] state_dir`` itself).
        """
        ...

    def decision(self, linkedid: str) -> Mapping[str, Any] | None:
        """The latest routing decision taken for the call ``linkedid``, as logged.

        The decision log line's fields (``rule``, ``outcome``, ``actions`` ...),
        or None when none was taken (or it is older than the bounded record).
        """
        ...


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
def callrouter_metrics(metrics: Metrics) -> None:
    """Add this plugin's metric families to the engine's ``/metrics``.

    Runs once per engine, after ``callrouter_configure`` and before
    ``callrouter_startup``. Create families with ``metrics.counter(name,
    help, labels)``, ``metrics.gauge``, ``metrics.histogram`` (each returns
    the prometheus-client object to keep and update) or ``metrics.queue(name)``
    for a durable queue's depth and oldest age. Names are
    ``callrouter_<plugin>_<what>`` (counters without ``_total``); label values
    must be bounded (never a caller's number). Registering a name twice
    raises ``ValueError``. Each engine has its own registry, so keep the
    objects on the plugin instance, not in module globals. Return value ignored.
    """


@hookspec
def callrouter_register(registry: Registry) -> None:
    """Add rule functions, lookups, actions and notify targets.

    Runs when rules are loaded and again on every reload that finds a rule or
    list file changed (an unchanged set is kept as it is, with no hook
    called), before the rule files are validated, so every name a rule uses
    must be registered here:
    ``registry.add_function(name, func)``, ``registry.add_lookup(name, func)``,
    ``registry.add_action(ActionSpec(...))``, ``registry.add_notify_target(name)``.
    Registering a name another plugin already registered is an error reported
    against this plugin. Return value ignored.
    """


@hookspec
def callrouter_state_folders(shadow: bool) -> Iterable[StateFolder] | None:
    """The folders of this plugin's own that hold its state files, to lock
    before the engine logs in to Asterisk.

    Runs once per start, after ``callrouter_configure`` and once ``[router]
    state_dir`` is checked (and, under ``callrouter run``, locked), before any
    connection to Asterisk; not from ``callrouter check``. ``shadow`` is True
    when this engine decides but never acts (a plugin that writes nothing
    then may return none). Return ``(path, key)`` pairs, ``key`` the setting
    naming the folder (``("plugins", "onec", "state_dir")``): the engine
    locks each as :meth:`EngineAPI.hold_state_folder` does, so a second
    router whose plugin keeps its files in the same folder refuses to start
    with that ``ConfigError`` before it opens a second AMI session (with
    ``allowmultiplelogin = no`` in manager.conf that session would log the
    first router's user out). Make the folder here if it may be missing (the
    lock opens it), off the event loop for anything slow. Raise
    :class:`router.ConfigError` naming the key to refuse the folder (not
    writable, open to other users): the engine refuses to start with that
    message. None or an empty iterable: no folder of its own. Any other
    exception, or an answer that is not such pairs, is logged and the
    plugin's folders are not locked before the login (a
    ``hold_state_folder`` in ``callrouter_startup`` still locks them then).
    """


@hookspec
def callrouter_state_conversions(state_dir: Path) -> Iterable[str] | None:
    """What ``callrouter run`` would convert in this plugin's state files at
    its next start (a file an earlier version of the plugin left, in an older
    schema), for ``callrouter check`` to say before ``run`` does it: one line
    each, naming the file. ``run`` converts as it opens the file and says so
    in its log after the fact; the administrator upgrading wants to know
    beforehand, to back the state up (docs/operations.md, Upgrading).

    Called by ``callrouter check`` only, after ``callrouter_configure``;
    ``state_dir`` is ``[router] state_dir``. Read only: change, make and lock
    nothing (open a SQLite file with :func:`router.peek_db`, which makes no
    ``-wal`` or ``-shm`` beside it). None or an empty iterable: nothing to
    convert. An exception or an answer that is not lines is counted by
    ``check`` as the plugin's error.
    """


@hookspec
def callrouter_startup(engine: EngineAPI) -> None:
    """The engine is connected to Asterisk and about to route calls.

    ``engine`` is the plugin's :class:`EngineAPI`: ``engine.ami`` the
    logged-in AMI (``send`` and the typed action methods),
    ``engine.schedule(name, job, every=..., cron=...)`` for timed work
    (keep-alive, cache warm-up), ``engine.state_dir`` a directory the plugin
    may write to, ``engine.calls`` the live calls. May be async; the engine
    waits for it (bounded) before taking calls. Return value ignored.
    """


@hookspec
def callrouter_event(event: Event, call: Call | None) -> None:
    """Every AMI event the engine receives that this plugin wants, in order:
    those its ``callrouter_wanted_events`` names, or all without that hook.

    ``call`` is the tracked call the event belongs to (by Linkedid), already
    updated with this event, or None for events of no call, and for a
    ``UserEvent`` sent with the AMI action rather than by a channel's
    dialplan: its ``Channel`` and ``Linkedid`` are its sender's words. Runs on the hot
    path: return quickly and hand slow work to a task. Return value ignored.
    """


@hookspec
def callrouter_wanted_events() -> Iterable[str] | None:
    """The AMI events this plugin's ``callrouter_event`` reads, so Asterisk
    sends no others (``[asterisk] events = "auto"``, docs/asterisk.md).

    Runs at start and at every rule reload that loads (not one that finds
    the files unchanged), after ``callrouter_register``.
    Return event names (``"Hangup"``) or globs (``"Queue*"``, matched against
    the AMI catalog's names); an empty iterable if it reads none. ``None``
    means every event: the session then gets all events whatever the rules
    and the other plugins need. The engine calls this plugin's
    ``callrouter_event`` only for the events named (dispatch by name). A
    plugin that implements ``callrouter_event`` without this hook, or whose
    hook raises, is taken to want every event, so filtering never hides an
    event from a plugin that did not ask.
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
def callrouter_decision(
    call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
) -> None:
    """A routing decision was made for ``call``.

    ``decision`` holds the matched rules and their actions, ``trace`` how the
    rules were evaluated (``trace.lookup_values(name)``: the answers a lookup
    gave); both are None when evaluation did not finish in time. ``outcome``
    is a :data:`RouteOutcome`: ``executed``, ``shadow`` (not acted on),
    ``late`` (past the call's deadline, not acted on), ``fell-through`` (no
    rule matched), ``failed`` or ``caller-gone`` (the caller hung up first;
    the call may have ended before this hook runs). For logging, metrics and
    call history: only ``executed`` moved the call. Return value ignored.
    """


@hookspec(firstresult=True)
def callrouter_execute(
    action: Action, call: Call, engine: EngineAPI
) -> str | Awaitable[str | None] | None:
    """Carry out an action kind that is not built in.

    ``action`` has ``kind`` and ``params`` (rendered strings). The plugin that
    registered the kind returns a short description of what it did (or an
    awaitable of one); others return None: the kind is not theirs. First
    non-None result wins (``firstresult``); if nobody answers, the trace says
    the action had no executor. Raising fails the action, named by plugin, and
    so does a falsy answer (``False``, ``""``): it describes nothing done.
    """


@hookspec
def callrouter_notify(target: str, params: Mapping[str, str], call: Call | None) -> None:
    """A rule's ``notify:`` action addressed ``target`` (a notify target name).

    Plugins whose target this is not return at once. Off the routing path:
    the engine does not wait for more than a short bound. Return value ignored.
    """


@hookspec
def callrouter_stream_gap(gap: StreamGap) -> None:
    """The event stream lost events: it reconnected, the session was replaced, or
    events were dropped for a full queue (``gap.reason``: ``reconnect``,
    ``session``, ``overflow``).

    The engine reconciles its own state (waiting calls); plugins that keep
    state from events reconcile theirs. Return value ignored.
    """


@hookspec
def callrouter_channels_listed(channels: Sequence[Event]) -> None:
    """Asterisk's channels, as the engine's reconcile just listed them.

    Runs at start, after every stream gap (after ``callrouter_stream_gap``) and
    when an instance standing by takes over from a live one that went silent,
    once the tracker has taken the listing and before the calls still waiting
    are routed again; not when the listing failed or was refused (the manager
    user lacks ``write = reporting``). ``channels`` holds the ``CoreShowChannel``
    items (``Channel``, ``Uniqueid``, ``Linkedid``, ``Context``, ``BridgeId``, ...)
    in Asterisk's order: what Asterisk says, untrusted text. An item whose
    ``Channel``, ``Uniqueid``, ``Linkedid``, ``Context`` or ``Exten`` is longer
    than Asterisk sends (``router.calls.IDENTITY_LIMITS``; a hostile or broken
    AMI peer), or whose ``Priority`` is no integer, is left out, as the events
    the tracker refuses are; one with a line over 64 KiB was skipped before
    (router.ami.protocol), so a channel missing here is not proof it is gone.
    A plugin that keeps state from events rebuilds it
    from here, with no listing of its own.

    The listing is older than every event handled after the hook returns.
    Runs on the event path (events wait for it): return at once; slow work
    (an AMI action) goes to a task, and what that task puts back must not undo
    what the events told meanwhile. Return value ignored.
    """


@hookspec
def callrouter_call_event(event: CallEvent) -> None:
    """A fact of a call's life: ringing, answered, transferred, hangup, missed.

    Built from Asterisk's CEL (docs/history.md), live and, after a gap or at
    start, from the CEL store (``event.replayed`` is then True). In order per
    call (``event.call_id``, the Linkedid); each ``event.event_id`` at most
    once per process, and the same fact has the same id live and replayed,
    so a receiver that outlives the process deduplicates by it. Runs on the
    event path, synchronously: return at once and hand slow work (network,
    disk) to a queue or task. Return value ignored.

    Implementing it is what turns the call life on: while no plugin does
    (or every one that does says no in ``callrouter_wants_call_events``),
    the engine asks Asterisk for no CEL, folds none and replays none (it
    would tell nobody), and leaves the replay mark where the last listener
    left it.
    """


@hookspec
def callrouter_wants_call_events() -> bool | None:
    """Whether this plugin's ``callrouter_call_event`` is to be told now.

    Runs at start, once every plugin is configured. False: the plugin has
    nothing to do with call events in this configuration (the 1C plugin
    without a ``[plugins.onec]`` table), so it is not told them, and when no
    other plugin is, the call life stays off (no CEL asked for, folded or
    replayed). True or None, no such hook, or one that raises: it is told.
    """


@hookspec
def callrouter_call_end(call: Call) -> None:
    """The call's last channel hung up (or it timed out of the tracker).

    ``call.timeline`` holds what happened; ``call.answered`` whether anyone
    answered. Return value ignored.
    """


@hookspec
def callrouter_present_extensions(call: Call) -> Iterable[str] | None:
    """The phones on ``call`` now that its own legs do not show.

    Asked when the API starts recording ``call`` (``POST
    /api/v1/calls/{id}/recording``): every extension returned is counted
    among the recording's readers (a token scoped to it may fetch the file),
    beside the call's live legs. A leg bridged in from another call keeps
    that call's Linkedid, so only whoever follows Asterisk's bridges (the
    built-in recordings plugin) or a conference knows it is there. Runs on
    the request's path: answer from memory. Return the extensions (1 to 80
    letters, digits, ``_``, ``+``, ``.`` or ``-``; at most 1,000; anything
    else is left out and logged), or None.
    """


@hookspec
def callrouter_shutdown(engine: EngineAPI) -> None:
    """The engine is stopping (SIGTERM or exit): flush queues, close clients.

    Called once, and only after ``callrouter_startup`` was (also when that
    raised or timed out: close what it got to open): a start refused before
    it (a rule file's or a plugin's problem, ``RulesRefused``; a failed
    login) calls no shutdown either, so a plugin never gets this without its
    startup. Awaited with a bound; the AMI client is still logged in, and no
    timed job (``EngineAPI.schedule``) starts any more, so none finds closed
    what this hook closes. Return value ignored.
    """
