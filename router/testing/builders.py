"""Builders for what hooks receive: calls, decisions, traces, an engine stand-in.

A plugin's unit test builds its hook arguments here instead of reaching into
``router.calls`` or ``router.rules``: those are internals that change with
every refactor; these builders keep their signatures. Calls are made by
feeding AMI events to the engine's own call tracker, so the timeline a hook
reads is the one the engine would give it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from router.ami.client import AJAMClient
from router.ami.facade import AMI
from router.ami.message import Event
from router.calls import Call, CallTracker
from router.config import AsteriskSettings, Config, PluginSettings, RouterSettings, load_config
from router.engine import job_trigger
from router.engine_view import CallsView
from router.plugins import DEFAULT_PLUGINS, Plugins
from router.rules.context import Caller, Context
from router.rules.decision import Action, Decision, LookupTrace, RuleStatus, RuleTrace, Trace
from router.testing.replay import ReplayAsterisk

if TYPE_CHECKING:
    from router.hookspecs import EventListener, ScheduledJob

__all__ = [
    "CallTimeline",
    "ScheduledRun",
    "StubEngine",
    "config_from_toml",
    "load_plugins",
    "make_call",
    "make_config",
    "make_decision",
    "make_event",
    "make_trace",
]

CALLER = "79161234567"
DID = "74951234567"


def make_event(name: str, /, **fields: str) -> Event:
    """An AMI event: ``make_event("Hangup", Channel="PJSIP/1-01", Cause="16")``."""
    return Event((("Event", name), *fields.items()))


class CallTimeline(CallsView):
    """Live calls built as the engine builds them: events fed to its call tracker.

    Also what :class:`StubEngine` offers as ``engine.calls`` (read with
    ``get``, ``by_channel``, iteration). With ``replay``, that fake Asterisk
    sees every event fed too, so the calls' channels are ones it knows: a hook
    that acts on them through ``engine.ami`` gets Asterisk's answers, not
    "No such channel" (a :class:`StubEngine` passes its own).
    """

    def __init__(self, replay: ReplayAsterisk | None = None) -> None:
        super().__init__(CallTracker())
        self.replay = replay

    def feed(self, event: Event) -> Call | None:
        """Fold one event in; the call the engine would pass to ``callrouter_event``
        with it, or None (an event of no call, or one the engine passes without)."""
        event = self._with_ids(event)
        if self.replay is not None:
            self.replay.observe(event)
        return self._tracker.feed(event).call

    def _with_ids(self, event: Event) -> Event:
        """The event with its channel's ``Uniqueid`` and ``Linkedid`` where it
        leaves them out (``make_event("Hangup", Channel=...)``) and the channel
        is one of these calls': Asterisk sends them with every channel's event,
        and the tracker ties an event to its call by them, so without them a
        Hangup ended no call."""
        channel = event.get("Channel")
        if not channel or (event.get("Linkedid") and event.get("Uniqueid")):
            return event
        call = self._tracker.by_channel(channel)
        if call is None:
            return event
        added: list[tuple[str, str]] = []
        chan = call.channels.get(channel)
        if not event.get("Uniqueid") and chan is not None and chan.uniqueid:
            # Each on its own: the tracker refuses a live channel's event
            # without its Uniqueid as one a caller's number made up (hrev50).
            added.append(("Uniqueid", chan.uniqueid))
        if not event.get("Linkedid"):
            added.append(("Linkedid", call.linkedid))
        return Event((*event.fields, *added)) if added else event

    def inbound_call(
        self,
        *,
        linkedid: str = "1714557600.42",
        caller: str = CALLER,
        did: str = DID,
        routed: bool = True,
    ) -> Call:
        """A call as the engine holds it after its routing request: the caller's
        channel waiting in ``callrouter-inbound`` (``call.waiting_channel``)."""
        channel = f"Local/{did}@callrouter-inbound-{linkedid};2"
        call = self.feed(
            make_event(
                "Newchannel",
                Channel=channel,
                Uniqueid=linkedid,
                Linkedid=linkedid,
                CallerIDNum=caller,
                ChannelStateDesc="Ring",
                Context="callrouter-inbound",
                Exten=did,
                Priority="1",
            )
        )
        if call is None:  # pragma: no cover - the tracker always starts a call here
            raise AssertionError("the call tracker did not start a call")
        call.did = did
        call.routed = routed
        call.waiting_channel = channel
        return call


def make_call(
    *, linkedid: str = "1714557600.42", caller: str = CALLER, did: str = DID, routed: bool = True
) -> Call:
    """One routed call on a fresh :class:`CallTimeline` (its own tracker); no
    fake Asterisk knows its channel (:meth:`StubEngine.make_call` makes one that does)."""
    return CallTimeline().inbound_call(linkedid=linkedid, caller=caller, did=did, routed=routed)


def make_decision(*actions: tuple[str, Mapping[str, str]] | Action, rule: str = "rule") -> Decision:
    """What rule ``rule`` decided: ``make_decision(("redirect", {"exten": "101"}))``.

    No actions: every rule fell through (``Decision()``).
    """
    built = tuple(a if isinstance(a, Action) else Action.make(a[0], a[1], rule) for a in actions)
    return Decision((rule,) if built else (), built)


def make_trace(
    *,
    caller: str = CALLER,
    did: str = DID,
    lookups: Mapping[str, object] | Iterable[tuple[str, object]] = (),
    rule: str = "rule",
    location: str = "rules.yaml:1",
    status: RuleStatus = "matched",
) -> Trace:
    """The trace of a call's evaluation in which ``rule`` asked ``lookups``.

    ``lookups`` maps a registered lookup name to its answer
    (``{"onec.responsible": {...}}``), as ``Trace.lookup_values`` returns them.
    """
    trace = Trace(Context.for_call(Caller(caller), did))
    entry = RuleTrace(rule, location, status)
    pairs = lookups.items() if isinstance(lookups, Mapping) else lookups
    for name, answer in pairs:
        entry.lookups.append(
            LookupTrace(name.rpartition(".")[2], f"{name}({caller!r})", answer, lookup=name)
        )
    trace.rules.append(entry)
    return trace


def make_config(
    settings: Mapping[str, Mapping[str, object]] | None = None, *, state_dir: Path | None = None
) -> Config:
    """A ``router.toml`` with plugin tables ``settings`` (``{"vip": {...}}``)."""
    router = RouterSettings(state_dir=state_dir) if state_dir is not None else RouterSettings()
    return Config(
        asterisk=AsteriskSettings(
            url="http://asterisk.test:8088/asterisk", username="router", secret="secret"
        ),
        router=router,
        plugins=PluginSettings(settings=settings or {}),
    )


def config_from_toml(
    directory: Path, text: str, *, environ: Mapping[str, str] | None = None
) -> Config:
    """``text`` written to ``directory/router.toml`` and read as ``callrouter run``
    reads it: errors name that file and the key, relative paths resolve there.
    ``[asterisk]`` is filled in when ``text`` has none, after it: an error's
    ``router.toml:LINE`` is then the line of ``text`` the test wrote."""
    if "[asterisk]" not in text:
        text += (
            '\n[asterisk]\nurl = "http://asterisk.test:8088/asterisk"\n'
            'username = "router"\nsecret = "secret"\n'
        )
    path = directory / "router.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=dict(environ or {}))


def load_plugins(
    *extra: object,
    defaults: Iterable[str] = DEFAULT_PLUGINS,
    entry_points: bool = False,
    disabled: Iterable[str] = (),
) -> Plugins:
    """The plugin manager as the engine loads it: ``extra`` plugin objects, the
    built-ins (``defaults``), installed plugins only with ``entry_points=True``.

    ``await plugins.configure(config)`` runs ``callrouter_configure`` (settings
    errors raise), ``plugins.register_into(registry)`` the registration.
    """
    return Plugins.load(
        defaults=defaults, entry_points=entry_points, extra=extra, disabled=disabled
    )


class ScheduledRun(NamedTuple):
    """A job a plugin scheduled on a :class:`StubEngine`; run it with :meth:`run`.

    A tuple too: ``job, every, cron = stub.jobs["onec:warmup"]``.
    """

    job: ScheduledJob
    every: float | None
    cron: str | None

    async def run(self) -> object:
        result = self.job()
        return await result if inspect.isawaitable(result) else result


@dataclass
class StubEngine:
    """The smallest :class:`~router.hookspecs.EngineAPI` for a plugin's unit tests.

    Jobs are recorded in :attr:`jobs`, not run: the test runs them
    (``await engine.jobs["vip:reload"].run()``). ``asks`` answers ``may_ask``.
    ``ami`` talks to :attr:`replay`, a :class:`ReplayAsterisk` (logging in on
    first use), through the client code the engine uses; assign ``stub.ami``
    to put a double of your own there instead. The calls of :attr:`calls`
    (:meth:`make_call`) are channels :attr:`replay` knows.
    """

    state_dir: Path
    config: Config = field(default_factory=make_config)
    calls: CallTimeline = field(default_factory=CallTimeline)
    shadow: bool = False
    #: What ``connected`` answers: set False to play an Asterisk that is down.
    connected: bool = True
    asks: bool = True
    replay: ReplayAsterisk = field(default_factory=ReplayAsterisk)
    jobs: dict[str, ScheduledRun] = field(default_factory=dict)
    listeners: list[EventListener] = field(default_factory=list)
    decisions: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The folders a plugin asked to hold (``hold_state_folder``), with their keys.
    held: list[tuple[Path, tuple[str, ...]]] = field(default_factory=list)
    _client: AJAMClient | None = field(default=None, init=False, repr=False)
    _ami: AMI | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.calls.replay is None:
            self.calls.replay = self.replay

    def make_call(
        self,
        *,
        linkedid: str = "1714557600.42",
        caller: str = CALLER,
        did: str = DID,
        routed: bool = True,
    ) -> Call:
        """:func:`make_call` on this engine: the call is in :attr:`calls`, and its
        channel is one :attr:`replay` knows (``Setvar``, ``Redirect`` ... on it work)."""
        return self.calls.inbound_call(linkedid=linkedid, caller=caller, did=did, routed=routed)

    @property
    def ami(self) -> AMI:
        if self._ami is None:
            self._client = self.replay.client()
            self._ami = AMI(self._client)
        return self._ami

    @ami.setter
    def ami(self, value: AMI) -> None:
        self._ami = value

    async def aclose(self) -> None:
        """Log the stub's AMI session off the fake, if one was opened."""
        if self._client is not None:
            await self._client.aclose()

    def schedule(
        self, name: str, job: ScheduledJob, *, every: float | None = None, cron: str | None = None
    ) -> None:
        """Record the job, after the engine's own checks (its name, one of
        every/cron, the crontab line, a function of no arguments): a mistake
        ``callrouter run`` refuses is refused in the test too."""
        job_trigger(name, job, every, cron, self.config)
        self.jobs[name] = ScheduledRun(job, every, cron)

    def may_ask(self, call: Call, lookup: str) -> bool:
        return self.asks

    def watch(self, listener: EventListener) -> Callable[[], None]:
        """Record the listener in :attr:`listeners`; the test tells it events."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def hold_state_folder(self, path: Path, key: tuple[str, ...]) -> None:
        """Record the folder and its key in :attr:`held`; no lock is taken (the
        engine locks none outside ``callrouter run``)."""
        self.held.append((path, key))

    def decision(self, linkedid: str) -> Mapping[str, Any] | None:
        """The record in :attr:`decisions` for ``linkedid``, if the test put one."""
        return self.decisions.get(linkedid)
