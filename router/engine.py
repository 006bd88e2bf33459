"""The engine: events in, decisions out, on a deadline, failing open.

Data path (docs/architecture.md)::

    AJAM WaitEvent, or a TCP read -> EventStream -> CallTracker -> plugins.event
                                  -> request event -> rules (lookups from plugins)
                                  -> Executor (AMI) -> confirmed by Newexten -> decision log

The dialplan (examples/asterisk/extensions.conf) announces each inbound call
with a ``UserEvent(CallRouterRequest)`` carrying the DID, the caller and how
long it will wait, then waits and goes to its default route (the protocol:
router/dialplan.py). Callrouter acts only before that deadline minus a safety
margin; a late decision is traced, never executed. So nothing in the dialplan
depends on callrouter being up.

The engine is the wiring and the life cycle: client, stream, tracker, rules,
plugins, scheduler, reloads, stopping. The request path (deadline,
evaluation, execution, the decision record and log line, and the reconcile
after a stream gap) is the :class:`~router.routing.Router`'s; the live-instance
guard's heartbeats are :class:`~router.live_instance.LiveInstance`'s, the write-class
probe after each login :class:`~router.privilege_watch.PrivilegeWatch`'s, and
the clock difference :func:`~router.asterisk_clock.measure_offset`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import inspect
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.combining import BaseCombiningTrigger
from apscheduler.triggers.cron import CronTrigger

from router import eager
from router.ami.client import ClientSettings
from router.ami.connect import open_client
from router.ami.event_filter import EventSelection
from router.ami.facade import AMI
from router.ami.hints import lasting_tls_failure
from router.ami.message import Event, sent_by_channel
from router.ami.protocol import LONG_LINES, Narrower, block_names, parse_rawman
from router.ami.stream import EventStream, StreamGap
from router.api.app import build_app, build_starting_app
from router.api.context import ApiContext
from router.api.feed import FILENAME as FEED_FILE
from router.api.feed import EventFeed
from router.api.intake import API_FEED, open_feed
from router.api.live import API_LIVE, LiveRing, open_live
from router.api.server import ApiServer
from router.api.settings import ApiSettings
from router.aside import not_a_file
from router.asterisk_clock import measure_offset
from router.builtin import actions as builtin_actions
from router.builtin.timefuncs import rules_timezone, time_zone
from router.callerid import cut_number
from router.calllife.model import CallEvent
from router.calllife.service import LIVE_EVENTS, CallLife
from router.calls import Call, CallTracker, dialplan_half, oversized, smuggled
from router.clock_step import (
    ClockStepWatch,
    describe_step,
    due_within_grace,
    last_run_before,
    reschedule_from_now,
)
from router.config import MAX_CONFIG_BYTES, Config
from router.dialplan import (
    DEFAULT_WAIT,
    INBOUND_CONTEXT,
    REQUEST_EVENT,
    SAFETY_MARGIN,
    Dialplan,
    LocationPolicy,
)
from router.dialplan_watch import DialplanWatch
from router.engine_view import CallsView, EngineView
from router.errors import (
    AMIAuthenticationError,
    AMIConnectionError,
    AMIError,
    AMIPrivilegeError,
    AMIProtocolError,
    ConfigError,
    RulesRefused,
    RuleValidationError,
    StartRefused,
)
from router.executor import Executor, PluginHooks
from router.health import Health, readiness
from router.hookspecs import EngineAPI, EventListener, ScheduledJob
from router.live_instance import LiveInstance
from router.liveguard import CHECK_EVENT, LIVE_EVENT, Claim, heartbeat_key
from router.logsafe import escape_controls
from router.metrics import Metrics
from router.narrowing import Narrowing
from router.parking import Parking
from router.plugins import Plugins
from router.private_dir import private_dir_problem
from router.privilege_watch import PRIVILEGE_MISSING, PrivilegeWatch
from router.recordings.store import DB_NAME as RECORDINGS_DB
from router.recordings.store import catalog_open, put_back_catalog
from router.request import RequestInfo
from router.routing import SHOWN_FAILURES, Router, RouteRecord, call_info, cut_detail
from router.rules.context import Context
from router.rules.cron import cron_trigger
from router.rules.decision import Action
from router.rules.loader import discover, display_path
from router.rules.registry import Registry
from router.rules.ruleset import RuleBook, RuleSet, call_context, load_rules, source_digests
from router.schedule_runs import KeptRuns, MissedRun
from router.sdnotify import Notifier
from router.state_file_watch import CHECK_EVERY, StateFileWatch, WatchedFile
from router.staterestore import lock_state_folder
from router.supervise import Throttle, log_task_failure, logged
from router.tasks import wait_set
from router.textfiles import read_bounded
from router.wording import counted, duration

__all__ = ["PRIVILEGE_MISSING", "Engine", "EngineOptions", "RouteRecord"]

if TYPE_CHECKING:
    from router.ami.connect import AMIClient

log = logging.getLogger("router.engine")

#: The logger of the engine's scheduler (a child of apscheduler's: the level
#: ``callrouter run`` gives apscheduler applies). A run due while the previous
#: one still goes is skipped (runs never overlap): said at DEBUG by the engine,
#: not in apscheduler's words at WARNING every interval (an Asterisk that
#: stalls is reported by the event stream).
_SCHEDULER_LOG = logging.getLogger("apscheduler.scheduler.callrouter")
#: ``Reload`` events whose ``Module`` reloads the dialplan (lower case): Asterisk
#: 22 sends one for ``module reload pbx_config`` (``pbx_config`` or
#: ``pbx_config.so``, as typed), ``core reload`` and ``module reload`` (``All``),
#: and the AMI ``Reload`` action; ``dialplan reload`` sends none.
_DIALPLAN_MODULES = frozenset(
    f"{name}{suffix}" for name in ("pbx_config", "pbx_ael", "pbx_lua") for suffix in ("", ".so")
) | {"all"}
#: While ``callrouter run`` waits for Asterisk at start, systemd's start
#: timeout is pushed on (``EXTEND_TIMEOUT_USEC``) by ``_WAIT_NOTIFY_FOR`` s
#: every ``_WAIT_NOTIFY_EVERY`` s, during a try too: one at a hung Asterisk
#: lasts ``request_timeout`` or longer (TCP: connect, greeting, login).
_WAIT_NOTIFY_EVERY = 10.0
#: Seconds late a timed job (the engine's, a plugin's, a ``schedule:`` rule's)
#: still runs, once, after a stall.
_MISFIRE_GRACE = 60
#: Seconds the timed jobs wait, after a host clock step, for Asterisk's clock
#: measured again (:meth:`Engine._clock_stepped`): the measurement's budget
#: (1 s) and a slow answer, well within the beats a standby waits for.
_MEASURE_FIRST = 2.0
_WAIT_NOTIFY_FOR = 30.0


class _QuietSkips(logging.Filter):
    """Drops apscheduler's "skipped: maximum number of running instances
    reached"; :meth:`Engine._job_skipped` says it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('Execution of job "%s" skipped')


_SCHEDULER_LOG.addFilter(_QuietSkips())


class _QuietMisses(logging.Filter):
    """Drops apscheduler's "Run time of job "Engine._run_schedule (trigger:
    cron[...])" was missed by 0:01:42", which names no rule:
    :meth:`Engine._job_missed` says it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('Run time of job "%s" was missed')


#: apscheduler's executor (the engine's scheduler uses the default one).
logging.getLogger("apscheduler.executors.default").addFilter(_QuietMisses())

#: Logged once when the manager user may not list the calls in progress
#: (``CoreShowChannels``: ``write = reporting``); a read-only shadow user
#: (docs/operations.md) runs without it.
LISTING_REFUSED = (
    "cannot list the calls in progress ({reason}): calls already waiting when "
    "callrouter starts or its event stream reconnects are not decided, calls "
    "already up then are not tracked, and calls that fell through while no "
    "callrouter ran are not counted; give the manager user write = reporting "
    "(never system) to have them"
)


#: Runs of a timed job skipped while one run goes on before that is said at WARNING.
JOB_SKIPS_WARNED = 3


#: The longest ``every=`` of :meth:`EngineAPI.schedule`, in seconds (366 days).
MAX_EVERY: Final = 366 * 86400.0


def job_trigger(
    name: str, job: object, every: float | None, cron: str | None, config: Config
) -> tuple[Any, dict[str, Any]]:
    """``EngineAPI.schedule``'s checks, and the apscheduler trigger they give.

    One function for the engine and :class:`router.testing.StubEngine`, so a
    plugin's test refuses what ``callrouter run`` refuses. A ``job`` that cannot
    be called with no arguments (``self.refresh()``'s coroutine instead of
    ``self.refresh``, a function that takes one) is refused here, naming the job:
    it failed every run, each time as ``background job ... failed``.
    """
    if (every is None) == (cron is None):
        raise ValueError(f"job {name!r}: give every= or cron=, one of them")
    if not name or name.startswith(("rule:", "callrouter-")):
        raise ValueError(
            f"job {name!r}: name it after your plugin ('rule:' and 'callrouter-' are the engine's)"
        )
    if inspect.isawaitable(job):
        if inspect.iscoroutine(job):
            job.close()  # never awaited: no RuntimeWarning from it later
        raise ValueError(
            f"job {name!r}: got {type(job).__name__} {job!r}, not a function: pass "
            "the function itself (self.refresh, not self.refresh())"
        )
    if not callable(job):
        raise ValueError(f"job {name!r}: {job!r} is not a function of no arguments")
    try:
        inspect.signature(job).bind()
    except TypeError as exc:
        raise ValueError(
            f"job {name!r}: {getattr(job, '__qualname__', job)!r} cannot be called "
            f"with no arguments ({exc}); a job is called with none"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): called as it is
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | float) or not every > 0:
            raise ValueError(f"job {name!r}: every={every!r}, expected seconds > 0")
        if not every <= MAX_EVERY:  # inf, or past what a date holds: apscheduler fails later
            raise ValueError(
                f"job {name!r}: every={every!r}, expected at most {MAX_EVERY:g} seconds "
                "(366 days); use cron= for a rarer job"
            )
        return "interval", {"seconds": every}
    assert cron is not None
    return cron_trigger(cron, rules_timezone(config)), {}


def _not_a_folder(path: Path) -> str | None:
    """What is at ``path`` when it is there and no folder (``stat``: a link to
    a folder is one), for a message; None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # not there (made below) or said by the checks below
    if stat.S_ISDIR(mode):
        return None
    return not_a_file(mode) or "a file"


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The engine's tunables; the first four are the dialplan protocol's
    (router/dialplan.py, :meth:`dialplan`)."""

    #: ``UserEvent`` name the dialplan emits for each call to route.
    request_event: str = REQUEST_EVENT
    #: The dialplan context calls wait in; entering it triggers prefetch.
    inbound_context: str = INBOUND_CONTEXT
    #: Seconds the dialplan waits when the request does not say (header ``Wait``).
    default_wait: float = DEFAULT_WAIT
    #: Act only this long before the dialplan gives up, so a Redirect is not
    #: racing the fallback ``Goto``.
    safety_margin: float = SAFETY_MARGIN
    #: How long SIGTERM waits for decisions in flight (their confirmations included).
    drain_timeout: float = 5.0
    #: Poll interval for rule file changes (seconds; 0 disables).
    watch_interval: float = 2.0
    #: Seconds between keep-alive Pings on the action path.
    keepalive: float = 30.0
    #: Seconds between the live-instance heartbeats (router/liveguard.py); 0
    #: turns the guard off (shadow instances never run it).
    live_heartbeat: float = 2.0
    #: Check Asterisk's dialplan at start and after each reload (the inbound
    #: context, the rules' redirect targets) and log what would lose calls.
    audit_dialplan: bool = True
    #: After each login, ask Asterisk whether the manager user may send what
    #: the configuration needs (router/privileges.py; never in shadow mode).
    #: The test kit's engines turn it off, as the heartbeat: its Redirect
    #: would be counted among the ones a test expects.
    check_privileges: bool = True
    #: After asking who else is live (start, stream gap), decisions wait this
    #: long for an answer before acting.
    live_settle: float = 1.0
    #: Put what start (and a reload) built out of the cyclic collector's way
    #: (``gc.freeze``): with 1,000 rules a full collection walked about 75,000
    #: objects for 60-120 ms, a pause every call waiting then shared. Process
    #: wide, so ``callrouter run`` turns it on and embedders and tests do not.
    freeze_gc: bool = False
    #: At start, wait for an Asterisk that does not answer (a boot, a restart,
    #: a PBX under maintenance) instead of failing: ``callrouter run`` does, so
    #: that systemd's start limit does not give up on the service while
    #: Asterisk is away. A refused login still fails at once.
    wait_for_asterisk: bool = False
    #: What a rules path that is not there adds to "no such file or folder"
    #: (:meth:`router.config.Config.rules_named_by`): ``callrouter run`` names
    #: router.toml's ``[router] rules`` line, as ``check`` does; empty for
    #: paths given otherwise (``--rules``, an embedder).
    rules_named_by: str = ""
    #: Hold an exclusive lock on ``[router] state_dir`` from start to stop, so
    #: that a second ``callrouter run`` on the same folder refuses to start
    #: instead of writing the same state files (``callrouter run`` does;
    #: embedders and tests, which may run engines side by side, do not).
    lock_state_dir: bool = False

    def dialplan(self) -> Dialplan:
        return Dialplan(
            self.request_event, self.inbound_context, self.default_wait, self.safety_margin
        )


class Engine:
    """One running router: owns the client, stream, tracker, rules, plugins, scheduler."""

    def __init__(
        self,
        config: Config,
        *,
        plugins: Plugins | None = None,
        client: AMIClient | None = None,
        options: EngineOptions | None = None,
        shadow: bool | None = None,
    ) -> None:
        self._config = config
        self.options = options or EngineOptions()
        self.plugins = plugins or Plugins.for_config(config)
        self._client = client or open_client(
            ClientSettings.from_config(config.asterisk),
            named=lambda key: config.named("asterisk", key),
        )
        self._tracker = CallTracker()
        #: This engine's metrics (``/metrics``); plugins add theirs through
        #: ``callrouter_metrics``, other parts of router through this object.
        self.metrics = Metrics()
        ami = AMI(self._client)
        #: What plugins get of this engine (router.hookspecs.EngineAPI).
        self.api: EngineAPI = EngineView(
            ami=ami,
            calls=CallsView(self._tracker),
            config=config,
            state_dir=lambda: self.state_dir,
            schedule=self.schedule,
            may_ask=self.may_ask,
            shadow=lambda: self.shadow,
            watch=self.watch,
            decision=self.decision,
            connected=self._connected,
            hold_state_folder=self.hold_state_folder,
        )
        #: Listeners told every event and gap (``EngineAPI.watch``).
        self._listeners: list[EventListener] = []
        self.executor = Executor(
            self._client,
            PluginHooks(self.plugins, self.api),
            kinds=builtin_actions.EXECUTE,
            locations=LocationPolicy.from_pattern(config.router.location_pattern),
        )
        #: "Now" for rules (working hours); the demo and tests may pin it.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        #: Requesting channels, and whether each is seen in Wait: a Redirect
        #: is sent only then (router/parking.py, an Asterisk race).
        self.parking = Parking(self.options.request_event)
        #: Which events to ask Asterisk for, and which of them to parse.
        self.narrowing = Narrowing(
            config,
            self.plugins,
            lambda: self.rules.current,
            parking=self.parking,
            confirmations=self.executor.confirmations,
            inbound_context=self.options.inbound_context,
        )
        #: The live-instance guard's heartbeats (router/live_instance.py); no
        #: guard in shadow mode or when turned off.
        self.live_instance = LiveInstance(
            self._client,
            interval=self.options.live_heartbeat,
            settle=self.options.live_settle,
            connected=self._connected,
            key=heartbeat_key(config.asterisk.secret),
            on_takeover=self._took_over,
            user=config.asterisk.username,
            # (The router, made next, keeps the measured difference up to date.)
            asterisk_clock=lambda: time.time() + self.router.clock_offset,
        )
        #: The request path; the engine hands it requests and drains its tasks.
        self.router = Router(
            ami=self._client,
            tracker=self._tracker,
            executor=self.executor,
            plugins=self.plugins,
            rules=RuleBook(config.router.rules, Registry(), named_by=self.options.rules_named_by),
            dialplan=self.options.dialplan(),
            log_format=config.router.log_format,
            clock=lambda: self.clock(),
            standby=self.live_instance.standby,
            shadow=config.router.shadow if shadow is None else shadow,
            metrics=self.metrics,
            parking=self.parking,
        )
        self.metrics.calls_active = lambda: float(len(self._tracker))
        self.metrics.sessions = lambda: float(getattr(self._client, "session_generation", 0))
        self.metrics.events_refused = lambda: float(self._tracker.refused)
        self.metrics.events_skipped = lambda: float(LONG_LINES.count)
        self.metrics.ready = lambda: self.health().ready
        self._metrics_given = False
        #: systemd's READY/WATCHDOG/STATUS when run with Type=notify (router/sdnotify.py).
        self._notifier = Notifier(
            self.health, alive=lambda: self._serve_task is not None and not self._stopping.is_set()
        )
        #: A call's life from CEL: live, and rebuilt after gaps (router/calllife).
        self.calllife = CallLife(
            config.history,
            self._call_event,
            is_internal=lambda number: self.registry.is_internal_number(number),
            listening=self.plugins.reads_call_events,
        )
        # A run due while the process was stopped or starved (a paused VM, a
        # busy loop) runs once, late, within a minute: apscheduler's default,
        # 1 s, skipped it with a WARNING "Run time of job ... was missed" for
        # every job after any stall, and a schedule: rule did not run at all.
        self._scheduler = AsyncIOScheduler(
            logger=_SCHEDULER_LOG,
            job_defaults={"coalesce": True, "misfire_grace_time": _MISFIRE_GRACE},
        )
        self._scheduler.add_listener(self._job_skipped, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.add_listener(self._job_missed, EVENT_JOB_MISSED)
        self._scheduler.add_listener(self._job_ran, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        #: This host's clock stepped: the jobs dated again, Asterisk's clock measured again.
        self._clock_watch = ClockStepWatch(self._clock_stepped)
        #: ``missed: run-once`` rules whose run was missed: the last one due, until
        #: :meth:`_make_up` runs them.
        self._missed_runs: dict[str, datetime] = {}
        #: :meth:`_make_up` while it runs. A task of its own, not a scheduler
        #: job: a run missed as the job's last run ended was added as a job
        #: apscheduler refused (its one instance not counted off yet), and it
        #: waited for the next missed run (issue 16).
        self._making_up: asyncio.Task[None] | None = None
        #: The last run of each ``missed: run-once`` rule, kept in
        #: state_dir/schedule-runs.json (router/schedule_runs.py).
        self._kept_runs = KeptRuns(config.router.state_dir, self._run_once_rules)
        #: Per job: (when its run under way started, the runs skipped meanwhile).
        self._job_runs: dict[str, tuple[float, int]] = {}
        self._stream: EventStream | None = None
        #: The poll loop is handling a batch; the handling of pushed events
        #: that had to wait (both: events keep their order, _take_pushed).
        self._pulling = False
        self._pushed: asyncio.Task[bool] | None = None
        #: The live instance this one took over from when it went silent, until
        #: the event path reconciles (:meth:`_took_over`).
        self._took_over_from: Claim | None = None
        self._serve_error: AMIAuthenticationError | None = None
        self._serve_task: asyncio.Task[Any] | None = None
        #: The HTTP API's listener (``[api]``), once started.
        self._api_server: ApiServer | None = None
        self._feed: EventFeed | None = None
        #: The state files written back or said when deleted (router/state_file_watch.py).
        self._state_watch: StateFileWatch | None = None
        #: The live page's recent decisions and calls (router.api.live).
        self._live: LiveRing | None = None
        self._stopped = False
        #: router.toml's digest as read at start, and the last one a SIGHUP said
        #: was not applied (:meth:`_config_changed`).
        self._config_said: str | None = None
        # The digest of the very bytes the settings were parsed from: one
        # taken now missed a save between that read and this engine (issue
        # 16). A Config made without reading a file (tests): the file now.
        self._config_read: str | None = config.digest or self._config_digest()
        #: The state folder's descriptor holding its lock (EngineOptions.lock_state_dir).
        self._state_lock: int | None = None
        #: Plugins' own state folders' descriptors holding their locks
        #: (:meth:`hold_state_folder`), and the first one refused.
        self._plugin_locks: list[int] = []
        self._hold_refused: ConfigError | None = None
        #: A stop was asked for (SIGTERM, request_stop), not merely run:
        #: stop() after a failed start sets _stopping too.
        self._stop_asked = False
        #: SIGTERM's drain: decisions in flight finish before the stream stops.
        self._draining: asyncio.Task[None] | None = None
        #: When the first stop request's drain runs out (the loop's clock): one
        #: drain_timeout in all, whether serve() or stop() is waiting it out.
        self._drain_until: float | None = None
        #: A second SIGTERM: stop without waiting for the decisions in flight.
        self._stop_now = asyncio.Event()
        #: Why :attr:`_stop_now` was set, as the WARNING naming the decisions
        #: it cancels says it: a second stop signal, or the stop cancelled.
        self._stop_now_why = "a second stop signal"
        #: What the start does or waits for (systemd's status line while it
        #: waits, /healthz and /readyz until the engine routes).
        self._waiting_for = ""
        #: Whether the user's missing ``CoreShowChannels`` class has been logged.
        self._listing_refused = False
        #: Plugin registration problems and rule errors found by :meth:`setup`.
        self.setup_problems: tuple[str, ...] = ()
        self._stopping = asyncio.Event()
        #: The looks at Asterisk's dialplan while running (router/dialplan_watch.py).
        self.dialplan_watch = DialplanWatch(
            self._client,
            lambda: self.rules.current,
            self.executor,
            self.metrics,
            recording=config.recordings is not None,
            forwarding=config.api is not None,
            connected=self._connected,
            stopping=self._stopping,
            spawn=self._spawn,
            stand_in=lambda: not self.shadow,
        )
        #: The write-class probe of each login (router/privilege_watch.py).
        self.privileges = PrivilegeWatch(
            self._client, config, lambda: self.rules.current, self._stopping
        )
        self._rule_mtimes: dict[Path, float] = {}
        #: The digests of the files under the rule paths the rules in use were
        #: loaded from (source_digests; their list files': their own); None
        #: when not known.
        self._loaded_from: dict[Path, str] | None = None
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[Any]] = set()
        #: :meth:`setup` has registered the plugins and loaded the rules: a
        #: SIGHUP before that is applied once it has (:meth:`request_reload`).
        self._set_up = False
        self._reload_after_setup = False
        #: One log line per kind of bad event per minute, not one per event.
        self._bad_events = Throttle(log)
        self._event_rule_failures = Throttle(log)
        #: When a request no channel sent was last logged (_from_channel).
        self._forged_told = float("-inf")
        self.ready = asyncio.Event()

    # -- what the router holds ---------------------------------------------------------

    @property
    def rules(self) -> RuleBook:
        return self.router.rules

    @property
    def registry(self) -> Registry:
        return self.router.rules.registry

    @property
    def shadow(self) -> bool:
        return self.router.shadow

    @property
    def records(self) -> list[RouteRecord]:
        """The last decisions (at most 1,000), newest last: what ``EngineAPI.decision``
        answers from, and what tests, the demo and the benchmarks read; the log has them all."""
        return self.router.records

    # -- what plugins get (router.hookspecs.EngineAPI, through self.api) ----------------

    @property
    def ami(self) -> AMIClient:
        """The engine's own client (session, stream); plugins get ``api.ami``."""
        return self._client

    @property
    def scheduler(self) -> AsyncIOScheduler:
        return self._scheduler

    def schedule(
        self, name: str, job: ScheduledJob, *, every: float | None = None, cron: str | None = None
    ) -> None:
        """A plugin's timed job (``EngineAPI.schedule``): apscheduler stays ours.

        Cron lines go through the one function ``schedule:`` rules use, in the
        rules' zone; a job never overlaps itself and its failures are logged
        with its name.
        """
        trigger, options = job_trigger(name, job, every, cron, self._config)
        runs = self._job_runs

        async def run() -> None:
            runs[name] = (time.monotonic(), 0)
            try:
                result = job()
                if inspect.isawaitable(result):
                    await result
            finally:
                runs.pop(name, None)

        self._scheduler.add_job(
            logged(name, run, logger=log),
            trigger,
            id=name,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            **options,
        )

    def _check_state_dir(self) -> None:
        """Refuse to start, in one line, when the state folder cannot be written
        (read-only, or not a folder): the API's event feed and the plugins'
        stores opened there crashed the start with a traceback instead; nor when
        another local user could change what it holds (router/private_dir.py)."""
        path = self._config.router.state_dir
        probe = path / f".callrouter-start.{os.getpid()}"
        where = self._config.where("router", "state_dir")
        odd = _not_a_folder(path)
        if odd is not None:
            # "cannot write in it: File exists" said neither what nor why
            # (issue 16). Looked at with stat only: a FIFO is never opened.
            raise ConfigError(
                f"{where}: [router] state_dir: {path} is {odd}, not a folder: callrouter and "
                "its plugins keep their state in a folder there (docs/operations.md, State "
                "and backups): move it away, or give another state_dir"
            )
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            problem = private_dir_problem(path)
            if problem is None:
                # Never blocks: O_NONBLOCK makes a FIFO at the name ENXIO.
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
                os.close(os.open(probe, flags | os.O_CLOEXEC, 0o600))
                probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"{where}: [router] state_dir: cannot "
                f"write in {path}: {exc.strerror or exc}; callrouter and its plugins keep "
                f"their state there (docs/operations.md, State and backups): give the "
                f"service's user a writable folder"
            ) from None
        if problem is not None:
            # Before any file is made there. Its files are opened by name
            # (SQLite takes no descriptor): in a folder another user can write
            # in, a link swapped in between the look at a name and the open
            # would be followed (router/private_dir.py).
            raise ConfigError(
                f"{where}: [router] state_dir: {problem} (docs/security.md, Local users and files)"
            )
        if self.options.lock_state_dir:
            self._lock_state_dir(path, where)

    def _lock_state_dir(self, path: Path, where: str) -> None:
        """Lock the state folder itself (no lock file: ``flock`` on the folder's
        descriptor, dropped by the kernel when the process ends, however it
        ends): a second ``callrouter run`` with this folder, by hand beside
        the service, would write the same SQLite queues and call life mark."""
        if self._state_lock is not None:
            return
        self._state_lock = lock_state_folder(path, key="[router] state_dir", where=where)

    def hold_state_folder(self, path: Path, key: tuple[str, ...]) -> None:
        """``EngineAPI.hold_state_folder``: a plugin's own state folder locked
        as [router] state_dir is, for this run; nothing when this engine
        locks no state folder (EngineOptions.lock_state_dir) or ``path`` is
        a folder it holds already. :meth:`start` calls it before the login
        for each folder ``callrouter_state_folders`` names; from
        ``callrouter_startup`` a refusal is also kept for :meth:`start`,
        which raises it once the plugins have started: a plugin's exception
        there is only logged."""
        if self._state_lock is None:
            return
        with contextlib.suppress(OSError):  # else the lock's open says why
            seen = os.stat(path)
            for fd in (self._state_lock, *self._plugin_locks):
                if os.path.samestat(seen, os.fstat(fd)):
                    return
        shown = f"[{'.'.join(key[:-1])}] {key[-1]}" if len(key) > 1 else key[0]
        try:
            fd = lock_state_folder(path, key=shown, where=self._config.where(*key))
        except ConfigError as exc:
            refused = StartRefused(str(exc))
            self._hold_refused = self._hold_refused or refused
            raise refused from exc
        self._plugin_locks.append(fd)

    def _unlock_state_dir(self) -> None:
        locks, self._plugin_locks = self._plugin_locks, []
        for fd in locks:
            os.close(fd)
        if self._state_lock is not None:
            os.close(self._state_lock)  # closing the descriptor drops the lock
            self._state_lock = None

    def _state_files(self) -> StateFileWatch:
        """The state files callrouter itself keeps open (router/state_file_watch.py)."""
        state = self._config.router.state_dir
        return StateFileWatch(
            [
                WatchedFile(
                    state / FEED_FILE,
                    "the API's event feed: clients coming back get gap: true and "
                    "refresh their view",
                    opened=lambda: self._feed is not None,
                    put_back=self._put_back_feed,
                ),
                WatchedFile(
                    state / RECORDINGS_DB,
                    "the recordings catalog: recordings not yet delivered never reach "
                    "1C, retention no longer deletes their files, the API lists none",
                    # Open, not only configured: with the recorder off, a
                    # catalog left by an earlier run is no file in use.
                    opened=lambda: catalog_open(state / RECORDINGS_DB),
                    put_back=lambda: asyncio.to_thread(put_back_catalog, state / RECORDINGS_DB),
                ),
            ]
        )

    async def _put_back_feed(self) -> str | None:
        return await self._feed.put_back() if self._feed is not None else None

    @property
    def state_dir(self) -> Path:
        path = self._config.router.state_dir
        # Plugins keep call history here: private to the service's user.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    @property
    def config(self) -> Config:
        return self._config

    @property
    def tracker(self) -> CallTracker:
        return self._tracker

    async def _call_event(self, event: CallEvent) -> None:
        """Count a call life event (``callrouter_call_events_total``), then tell plugins."""
        self.metrics.call_events.labels(event.kind, "true" if event.replayed else "false").inc()
        await self.plugins.call_event(event)

    def health(self) -> Health:
        """What ``/readyz`` answers (router/health.py)."""
        deaf = self.live_instance.deaf
        if self._stopping.is_set():
            phase = "stopping"
        else:
            phase = "running" if self.ready.is_set() else "starting"
        live = "" if self.shadow else self.live_instance.live_elsewhere()
        return readiness(
            logged_in=bool(getattr(self._client, "logged_in", True)),
            stream_current=(
                self._stream is not None
                and not self._stream.failing
                and not self.live_instance.silent
            ),
            rule_problems=len(self.setup_problems),
            rules=len(self.rules.current.rules),
            serving=self.ready.is_set() and not self._stopping.is_set(),
            user_events=not deaf,
            unheard_for=self.live_instance.unheard_for,
            privileges=self.privileges.redirect_refused,
            privilege_warning=self.privileges.reporting_refused,
            phase=phase,
            waiting_for=self._waiting_for if phase == "starting" else "",
            role="shadow" if self.shadow else ("standby" if live else "live"),
            live_instance=live,
            user=self._config.asterisk.username,
        )

    def _connected(self) -> bool:
        """Logged in, and the event stream (once started) not failing."""
        if not getattr(self._client, "logged_in", True) or self._stopping.is_set():
            return False
        return self._stream is None or not self._stream.failing

    def may_ask(self, call: Call, lookup: str) -> bool:
        context = call_context(
            self.registry,
            call.caller_number,
            call.did,
            caller_name=call.caller_name,
            call=call_info(call, None),
            now=self.clock(),
        )
        return self.rules.current.may_ask(context, lookup, self.executor.dialplan)

    # -- life cycle ----------------------------------------------------------------

    async def setup(self) -> RuleSet:
        """Configure plugins, fill the registry, load rules. No Asterisk needed.

        Every problem is logged and kept in :attr:`setup_problems`: the same
        ones ``callrouter check`` reports, which :meth:`start` refuses.
        """
        await self.plugins.configure(self._config)
        if not self._metrics_given:  # a family registered twice would raise
            self._metrics_given = True
            await self.plugins.metrics(self.metrics)
        problems = [str(p) for p in self.plugins.register_into(self.registry)]
        digests = source_digests(self.rules.paths)
        loaded = self.rules.reload()
        self._loaded_from = digests
        problems += [str(error) for error in loaded.errors]
        for problem in problems:
            log.error("%s", problem)
        self.setup_problems = tuple(problems)
        for warning in loaded.warnings:
            log.warning("%s", warning)
        self.metrics.rules_loaded.set(len(loaded.rules))
        where = ", ".join(map(str, self.rules.paths))
        if problems:
            # "loaded 1 rule" between the errors and the refusal read as a
            # start that had gone ahead with the rules it could read.
            log.info(
                "rules not loaded: %s above (%s from %s read without one)",
                counted(len(problems), "problem"),
                counted(len(loaded.rules), "rule"),
                where,
            )
        else:
            log.info("loaded %s from %s", counted(len(loaded.rules), "rule"), where)
        self._rule_mtimes = self._scan_rule_files()
        self._set_up = True
        if self._reload_after_setup:
            self._reload_after_setup = False
            if not problems:  # else the start is refused: nothing to reload into
                self.request_reload()
        return loaded

    async def start(self) -> None:
        """Connect, start plugins and timers; after this, :meth:`serve` routes calls.

        Raises :class:`RulesRefused` before connecting when a rule file or a
        plugin has a problem: a reload keeps the previous rules, but at start
        there are none, and routing with some rules left out would send their
        calls to the default route without anyone noticing.
        """
        await self.setup()
        if self.setup_problems:
            raise RulesRefused(self.setup_problems)
        await asyncio.to_thread(self._check_state_dir)
        # Before the login: a file another user could write refuses the start.
        await asyncio.to_thread(self._kept_runs.load)
        # The plugins' own state folders, locked before the login: a second
        # router on one of them refuses here, having opened no AMI session
        # (with allowmultiplelogin = no, its login would end the first one's).
        for path, key in await self.plugins.state_folders(shadow=self.shadow):
            await asyncio.to_thread(self.hold_state_folder, path, key)
        self._waiting_for = f"logging in to Asterisk at {self._config.asterisk.url}"
        if self._config.api is not None:
            # Before the login, which may wait for Asterisk for long: /healthz
            # and /readyz say "starting, waiting for Asterisk", not "refused".
            await self._open_api(self._config.api)
        selection = await self.event_selection()
        log.info("events asked for: %s", _describe_events(selection))
        await self._client.set_events(selection)
        self._client.set_narrowing(await self.event_narrowing())
        # Refusals said once with what they cost: listing the calls in progress
        # (_refused_listing), reading the dialplan (the audit's finding).
        self._client.refusal_reported("CoreShowChannels")
        self._client.refusal_reported("ShowDialPlan")
        if not self.shadow and self.options.check_privileges:
            self.privileges.listen()
        await self._first_login()
        # Before the live claim, which falls back on this host's clock, and
        # the start's reconcile, which reads CALLROUTER_DEADLINE.
        await self._measure_clock()
        # Awaited, before any call is routed: /readyz is right from the start.
        # Each later login's probe runs in the background.
        await self.privileges.first()
        self._scheduler.start()
        self._clock_watch.start()
        # The runs missed while stopped before the kept runs are put in step
        # with the rules (a rule renamed or given another schedule since is
        # said by its kept run), and one moment for both: a run due up to it
        # is made up, one after it is the rules' jobs' own; none is both, and
        # none neither.
        started = datetime.now(UTC)
        self._runs_missed_while_stopped(started)
        self._schedule_rules(started)
        if self.options.watch_interval > 0:
            self._scheduler.add_job(
                logged("rule file watch", self._check_rule_files, logger=log),
                "interval",
                seconds=self.options.watch_interval,
                id="callrouter-watch",
                replace_existing=True,
            )
        # Timed housekeeping: the stream's polling already keeps the session
        # alive; the Ping proves the action path works, the sweep bounds memory
        # when Hangups were lost in a gap.
        self._scheduler.add_job(
            logged("keepalive", self._keepalive, logger=log),
            "interval",
            seconds=self.options.keepalive,
            id="callrouter-keepalive",
            replace_existing=True,
        )
        self._scheduler.add_job(
            logged("sweep", self._sweep, logger=log),
            "interval",
            seconds=60,
            id="callrouter-sweep",
            replace_existing=True,
        )
        interval = self._config.router.dialplan_audit_interval
        if self.options.audit_dialplan and interval > 0:
            # `dialplan reload` raises no event (DialplanWatch.reloaded): a look
            # now and then, logged only when what it finds has changed.
            self._scheduler.add_job(
                logged("dialplan audit", self.dialplan_watch.now_and_then, logger=log),
                "interval",
                seconds=interval,
                id="callrouter-dialplan-audit",
                replace_existing=True,
                coalesce=True,
                max_instances=1,
            )
        self._hold_refused = None
        await self.plugins.startup(self.api)
        if self._hold_refused is not None:
            # A plugin's own state folder another router holds: its queue
            # would be written by both (EngineAPI.hold_state_folder).
            raise self._hold_refused
        self.calllife.start(self.state_dir)
        self._scheduler.add_job(
            logged("call life mark", self.calllife.save_mark, logger=log),
            "interval",
            seconds=5,
            id="callrouter-calllife",
            replace_existing=True,
        )
        state_files = self._state_watch = self._state_files()
        self._scheduler.add_job(
            logged("state file watch", state_files.look, logger=log),
            "interval",
            seconds=CHECK_EVERY,
            id="callrouter-state-files",
            replace_existing=True,
        )
        if not self.shadow and self.options.live_heartbeat > 0:
            await self.live_instance.claim(self.router.clock_offset)
            self._scheduler.add_job(
                logged("live heartbeat", self.live_instance.heartbeat, logger=log),
                "interval",
                seconds=self.options.live_heartbeat,
                id="callrouter-live",
                replace_existing=True,
            )
        # Routing requests jump a backlog of other events: in a burst a call's
        # request does not wait for every earlier call's CEL records.
        # Over TCP a read is also cut after each request, so the request is
        # acted on before the events read with it after it are parsed; its
        # channel's Wait step among them is looked at first (router/parking.py).
        marker = f"\r\nUserEvent: {self.options.request_event}\r\n".encode()
        self._client.set_urgent(
            self._is_request, marker=marker, peek=self.parking.peek_raw, early=self._route_early
        )
        self._stream = EventStream(
            self._client,
            poll_timeout=int(self._config.asterisk.waitevent_timeout),
            urgent=self._is_request,
        )
        if self._config.api is not None:
            await self._serve_api(self._config.api)
        if self.options.freeze_gc:
            _freeze_gc("start")
        # Calls that started waiting while callrouter was down or restarting
        # are routed now if their deadline allows, like after a stream gap.
        try:
            await self.reconcile(trigger="start")
        except AMIAuthenticationError:
            raise
        except AMIPrivilegeError as exc:
            self._refused_listing(exc)
        except (AMIError, OSError) as exc:
            log.error("reconcile at start failed: %s", exc)
        if self.options.audit_dialplan:
            self._spawn(self.dialplan_watch.audit("start"))
        if self._missed_runs:  # missed while stopped: once the engine routes
            self._start_make_up()

    async def _open_api(self, settings: ApiSettings) -> None:
        """The API's listener, on this loop, before the login: its health
        endpoints answer at once, every other path 503 "starting" with what
        the start waits for (router.api.app.build_starting_app)."""
        context = ApiContext(self.api, settings, metrics=self.metrics, health=self.health)
        server = ApiServer(build_starting_app(context, lambda: self._waiting_for), settings)
        await server.start()
        self._api_server = server

    async def _serve_api(self, settings: ApiSettings) -> None:
        """The API proper on the listener :meth:`_open_api` opened, once the
        engine is started; it sees the engine only as plugins do."""
        assert self._api_server is not None, "_open_api() first"
        if self._feed is None:
            # The live event feed (router.api.intake): read back from state_dir.
            self._feed = open_feed(settings, self.state_dir, self.plugins)
        if self._live is None:
            self._live = open_live(self.plugins, self.api)
        # Registered after the plugins were asked which events they read: until
        # asked too, each got every event (a BLF flood's DeviceStateChange went
        # to the live page's counter as well as to the feed; issue 16).
        await self.plugins.wanted_events(only=(API_FEED, API_LIVE))
        context = ApiContext(
            self.api,
            settings,
            self._feed,
            metrics=self.metrics,
            health=self.health,
            live=self._live,
            rules=lambda: self.rules.current,
            # Who else is on a call (callrouter_present_extensions: the recorder's
            # bridges): a recording the API starts counts them among its readers.
            present=self.plugins.present_extensions,
        )
        self._api_server.serve(build_app(context))

    async def serve(self) -> None:
        """Consume events until :meth:`request_stop`.

        A poll's events are taken as one batch (two generator steps a poll, not
        two an event: this is the hot path), and over TCP a read's events as it
        is read (:meth:`_take_pushed`), in Asterisk's order either way; a stop
        request cancels the long-poll the loop waits in.
        """
        assert self._stream is not None, "call start() first"
        self._serve_task = asyncio.current_task()
        self._serve_error = None
        # Native TCP AMI hands events over in the read that brought them.
        self._stream.push_to(self._take_pushed)
        self.ready.set()
        self._notifier.start()
        log.info("ready: routing calls from %s (shadow=%s)", self._config.asterisk.url, self.shadow)
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume(self._stream)
                    break  # the stream ended: it was stopped
                except AMIAuthenticationError:
                    raise  # wrong credentials do not heal by retrying
                except Exception:
                    # The stream catches its own errors; this is a backstop so
                    # that nothing short of a stop request ends the service.
                    self._bad_events.exception("stream", "event stream failed; restarting it")
                    await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        finally:
            self._serve_task = None
        if self._serve_error is not None:
            raise self._serve_error

    async def _consume(self, stream: EventStream) -> None:
        # A poll's events at a time (EventStream.batches): two generator steps
        # per poll instead of two per event.
        async for batch in stream.batches():
            self._pulling = True
            try:
                pushed = self._pushed
                if pushed is not None:
                    # Events taken as they were read (_take_pushed) are older
                    # than these, and are still being handled: they finish first.
                    await asyncio.wait((pushed,))
                if await self._handle_items((batch,) if isinstance(batch, StreamGap) else batch):
                    return
            finally:
                self._pulling = False

    async def _handle_items(self, items: Sequence[Event | StreamGap]) -> bool:
        """Events and gaps in order; True when a stop was asked for meanwhile."""
        # Ahead of the handling: a request routed in this batch then knows
        # whether its channel's Wait step is in the batch too (router/parking.py).
        self.parking.scan(items)
        if self._took_over_from is not None:
            await self._reconcile_takeover()
        for item in items:
            # Each event is guarded on its own: a malformed event, or a bug it
            # triggers in the tracker, a plugin or a rule, is logged (throttled)
            # and skipped; the next event is handled as usual.
            try:
                if isinstance(item, StreamGap):
                    await self._on_gap(item)
                else:
                    await self.handle_event(item)
            except AMIAuthenticationError:
                raise
            except Exception:
                name = "gap" if isinstance(item, StreamGap) else item.name
                self._bad_events.exception(
                    f"{name[:64]}", "event %s skipped: handling it failed", name[:64]
                )
            if self._stopping.is_set():
                return True
        return False

    def _take_pushed(self, events: list[Event]) -> bool:
        """The stream's push sink (EventStream.push_to): a read's events handled
        in the read itself, the way the poll loop would have a loop turn later.

        Refused (left to the poll loop, which keeps the order) while a batch is
        being handled, by the poll loop or by an earlier push still waiting on
        something. A push that has to wait goes on in a task (router.eager).
        """
        if self._pulling or self._pushed is not None or self._stopping.is_set():
            return False
        try:
            task, _ = eager.start(self._handle_items(events), name="callrouter-events")
        except AMIAuthenticationError as exc:
            self._fatal(exc)
            return True
        except Exception:  # _handle_items guards each event: a backstop, never the socket's
            self._bad_events.exception("stream", "events read from Asterisk: handling failed")
            return True
        if task is not None:
            self._pushed = task
            task.add_done_callback(self._pushed_done)
        return True

    def _pushed_done(self, task: asyncio.Task[bool]) -> None:
        self._pushed = None
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, AMIAuthenticationError):
            self._fatal(exc)
        elif exc is not None:
            # A done callback, outside any except block: the task's exception is
            # passed, or the line had no traceback ("NoneType: None"; issue 16).
            self._bad_events.exception(
                "stream", "events read from Asterisk: handling failed", exc_info=exc
            )

    def _fatal(self, exc: AMIAuthenticationError) -> None:
        """Credentials refused while handling pushed events: :meth:`serve` ends
        with it, as when the poll loop meets it."""
        if self._serve_error is None:
            self._serve_error = exc
        self._end_serve()

    async def run(self) -> None:
        """start + serve + stop: what ``callrouter run`` does."""
        try:
            await self.start()
            await self.serve()
        finally:
            await self.stop()

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for (SIGTERM, :meth:`request_stop`).

        Not whether the engine is stopping: :meth:`run` stops it after a
        failed start too, and ``callrouter run`` would then take the start's
        error (an untrusted certificate) for a stop and exit 0 in silence.
        """
        return self._stop_asked

    def request_stop(self) -> None:
        """SIGTERM: take no new calls; finish the decisions in flight, then
        :meth:`serve` returns.

        The event stream keeps running while they finish: a Redirect is proven
        by its ``Newexten``, which arrives through the stream, so stopping it
        first would log a working Redirect as ``failed``. Bounded by
        ``drain_timeout``; a second request stops at once.
        """
        self._stop_asked = True
        if not self.router.accepting or self._serve_task is None:
            if not self.router.accepting:
                # The second request, whenever the first came (serving, or
                # still starting): stop() drains nothing more, or stops draining.
                self._stop_now.set()
            self.router.accepting = False
            self._end_serve()
            return
        self.router.accepting = False
        self._drain_until = asyncio.get_running_loop().time() + self.options.drain_timeout
        log.info(
            "stopping: no new calls; finishing %s in flight",
            counted(len(self.router.tasks), "decision"),
        )
        self._draining = asyncio.get_running_loop().create_task(
            self._drain_then_end(), name="callrouter-drain"
        )

    async def _drain_then_end(self) -> None:
        try:
            await self.live_instance.leave()
            if self.router.tasks:
                left = self.options.drain_timeout
                if self._drain_until is not None:
                    left = max(0.0, self._drain_until - asyncio.get_running_loop().time())
                await asyncio.wait(set(self.router.tasks), timeout=left)
        finally:
            self._end_serve()

    def _end_serve(self) -> None:
        self._stopping.set()
        if self._stream is not None:
            self._stream.stop()
        task = self._serve_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop(self) -> None:
        """Finish in-flight decisions (bounded), stop plugins and timers, log off."""
        if self._stopped:
            return
        self._stopped = True
        self.router.accepting = False
        self._stopping.set()
        # Each step runs whatever the previous one did: a failing plugin must not
        # leave the scheduler running or the AMI session open, and says so. A
        # cancellation (the shutdown's timeout, a second Ctrl-C) does not skip
        # them either, in the drain or in a close: each step is bounded on its
        # own (the drain by ``drain_timeout``, cut short by the cancellation as
        # by a second stop request; the plugins' hooks by ``timeout``; the
        # logoff by its 3 s), is run, and the first cancellation is raised
        # again once the AMI client is closed (issue 16).
        cancelled: asyncio.CancelledError | None = None
        for what, step in (
            ("stopping the readiness notifier", self._notifier.stop),
            ("stopping the API server", self._stop_api_server),
            ("closing the event feed", self._close_feed),
            ("leaving the live-instance guard", self.live_instance.leave),
            ("finishing the decisions in flight", self._drain_decisions),
            ("cancelling the decisions left", self._cancel_decisions_left),
            ("pausing the timers", self._pause_timers),
            ("saving the call life mark", self.calllife.stop),
            ("writing the recordings index back", self._put_back_recordings),
            ("plugin shutdown", self._shut_plugins_down),
            ("stopping the timers", self._shut_scheduler_down),
            ("closing the live-instance guard", self._close_live_instance),
        ):
            try:
                await step()
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
                if not self._stop_now.is_set():
                    self._stop_now_why = "the stop was cancelled"
                self._stop_now.set()  # no more waiting for the decisions in flight
                log.warning("stop: cancelled during %s; closing the rest first", what)
            except Exception:
                log.exception("stop: %s failed; stopping anyway", what)
        # "logged off" only when a session existed (not after a refused start).
        was_logged_in = bool(getattr(self._client, "logged_in", True))
        try:
            await self._client.aclose()
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
            log.warning("stop: cancelled while closing the AMI client")
        except Exception:
            log.exception("stop: closing the AMI client failed")
        # The state folder is free for the next start, however this stop ended.
        self._unlock_state_dir()
        if cancelled is not None:
            log.info("stopped after a cancellation")
            raise cancelled
        log.info("stopped: logged off from Asterisk" if was_logged_in else "stopped")

    async def _stop_api_server(self) -> None:
        self.dialplan_watch.cancel()
        self.privileges.cancel()
        if self._draining is not None and not self._draining.done():
            self._draining.cancel()
        if self._api_server is not None:
            # Streams and long polls end now, not cancelled after the grace.
            for waited in (self._feed, self._live):
                if waited is not None:
                    waited.end_waits()
            await self._api_server.stop()

    async def _close_feed(self) -> None:
        if self._feed is not None:
            # Deleted since the last look (less than 5 s ago): written back first.
            await self._put_back_at_stop(FEED_FILE)
            await self._feed.aclose()

    async def _drain_decisions(self) -> None:
        if self.router.tasks and not self._stop_now.is_set():
            await self._drain_in_stop()

    async def _cancel_decisions_left(self) -> None:
        """The decisions :meth:`_drain_decisions` left running are cancelled: a
        step of its own, so that a stop cancelled during the drain cancels them
        too (``_stop_now`` set: as for a second stop request)."""
        if self.router.tasks and self._stop_now.is_set():
            pending = set(self.router.tasks)
            for task in pending:
                task.cancel()
            log.warning(
                "stop: %s: %s in flight %s cancelled "
                "(a call whose Redirect was not sent yet takes the dialplan's default "
                "route; one already sent still moves the call, unconfirmed and unlogged)",
                self._stop_now_why,
                counted(len(pending), "decision"),
                "was" if len(pending) == 1 else "were",
            )
            await asyncio.wait(pending, timeout=1.0)
        elif self.router.tasks:
            pending = set(self.router.tasks)
            for task in pending:
                task.cancel()
            log.warning(
                "stop: %s still running after %.1f s %s cancelled",
                counted(len(pending), "decision"),
                self.options.drain_timeout,
                "was" if len(pending) == 1 else "were",
            )
            await asyncio.wait(pending, timeout=1.0)
        pushed = self._pushed
        if pushed is not None and not pushed.done():
            # Events taken from a read that were still waiting (a plugin hook):
            # the stream is stopped, nothing follows them.
            pushed.cancel()
            await asyncio.wait((pushed,), timeout=1.0)

    async def _pause_timers(self) -> None:
        # No timed job starts from here on: the call life and the plugins close
        # their stores next (the recorder waits up to 10 s for a retention pass
        # first), and a job started meanwhile would use one closed under it.
        # Paused, not shut down yet: that would cancel the jobs under way, the
        # retention pass the recorder waits for among them.
        if self._scheduler.running:
            self._scheduler.pause()
        await self._clock_watch.cancel()

    async def _put_back_recordings(self) -> None:
        await self._put_back_at_stop(RECORDINGS_DB)  # before the recorder closes it

    async def _shut_plugins_down(self) -> None:
        await self.plugins.shutdown(self.api)

    async def _shut_scheduler_down(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        making_up = self._making_up
        if making_up is not None and not making_up.done():
            making_up.cancel()  # as apscheduler cancels the jobs under way
            await asyncio.wait((making_up,), timeout=1.0)
        await self._kept_runs.close()

    async def _close_live_instance(self) -> None:
        self.live_instance.close()

    async def _put_back_at_stop(self, name: str) -> None:
        """The state file ``name`` written back if it was deleted or replaced
        since the last timed look, before the stop closes it."""
        watch = self._state_watch
        if watch is None:
            return
        for watched in watch.files:
            if watched.path.name == name and watched.put_back is not None and watched.opened():
                try:
                    await watch.put_back(watched)
                except Exception:
                    log.exception("stop: writing %s back failed; stopping anyway", watched.path)

    async def _drain_in_stop(self) -> None:
        """The decisions in flight finish, for ``drain_timeout`` at most; a
        second stop request meanwhile ends the wait at once."""
        timeout = self.options.drain_timeout
        if self._drain_until is not None:  # SIGTERM's drain began in serve(): what is left
            timeout = max(0.0, self._drain_until - asyncio.get_running_loop().time())
        now = asyncio.ensure_future(self._stop_now.wait())
        drained = asyncio.ensure_future(asyncio.wait(set(self.router.tasks), timeout=timeout))
        try:
            await asyncio.wait((now, drained), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (now, drained):
                waiter.cancel()
            await asyncio.wait((now, drained))

    # -- live-instance guard -----------------------------------------------------------

    def _acting(self) -> bool:
        """Whether actions of event and schedule rules may be sent now (a stall
        of this process checked first, as for a decision)."""
        return not self.shadow and self.router.accepting and self.live_instance.may_act()

    # -- rules -------------------------------------------------------------------------

    def reload(self) -> RuleSet:
        """Validated reload, done right here: a broken set keeps the old one.

        It blocks its caller for as long as loading takes; on a running
        engine use :meth:`reload_in_thread` (what the watcher and SIGHUP do).
        """
        self._rule_mtimes = self._scan_rule_files()  # the watcher does not reload these again
        self._loaded_from = None
        fresh = self._fresh_registry()
        return self._swap_rules(
            fresh, load_rules(self.rules.paths, fresh, named_by=self.rules.named_by)
        )

    async def reload_in_thread(self) -> RuleSet | None:
        """Validated reload with the reading and compiling in a worker thread.

        A rule file of the maximum size takes seconds to parse, and a hostile
        one froze the loop for 19 s before the loader had bounds: calls in
        flight have deadlines, so the loop only registers plugins into the
        fresh registry (hooks are not thread-safe) and swaps the result in.
        One reload at a time; None when loading itself failed (logged).
        """
        await asyncio.to_thread(self._config_changed)
        return await self._reload_files(watched=False)

    def _config_digest(self) -> str | None:
        """router.toml's SHA-256 (its error when it cannot be read), None for none."""
        path = self._config.path
        if path is None:
            return None
        try:
            return hashlib.sha256(read_bounded(path, MAX_CONFIG_BYTES)).hexdigest()
        except OSError as exc:
            return f"unreadable: {exc}"

    def _config_changed(self) -> None:
        """A SIGHUP reloads the rules, not router.toml: say so, once for each
        change, when the file differs from the one read at start, so that an
        edited ``shadow``, ``[asterisk]`` or plugin table is not taken for
        applied (hops45's trial: the reload said nothing of it)."""
        now = self._config_digest()
        if now is None or self._config_read is None:
            return
        if now == self._config_read:
            self._config_said = None
            return
        if now == self._config_said:
            return
        self._config_said = now
        log.warning(
            "%s changed since callrouter started: a reload reads the rule files only, "
            "not router.toml; restart callrouter to apply it (docs/operations.md, "
            "Signals and reloads)",
            self._config.path,
        )

    async def _reload_files(self, *, watched: bool) -> RuleSet | None:
        """:meth:`reload_in_thread`; ``watched``: the file watcher's, which
        reloads only files whose state no reload has read yet (None if none)."""
        async with self._reload_lock:
            # The files' state as this reload reads them: after a SIGHUP the
            # watcher then sees nothing new and does not reload (and log) the
            # same files again; a file saved while loading is reloaded next.
            files = await asyncio.to_thread(self._scan_rule_files)
            if watched and files == self._rule_mtimes:
                return None
            self._rule_mtimes = files
            # Read before the load: a file saved meanwhile differs next time.
            current = self.rules.current
            digests, lists = await asyncio.to_thread(self._digests, current)
            if digests == self._loaded_from and lists == current.list_digests:
                # Byte for byte what the rules in use were loaded from (the
                # watcher reloaded the saved file before this SIGHUP, or a
                # save without a change): nothing to swap, said once.
                self.metrics.rule_reloads.labels("unchanged").inc()
                log.info("rules unchanged (%s)", counted(len(current.rules), "rule"))
                return current
            if watched:
                log.info("rule files changed; reloading")
            fresh = self._fresh_registry()
            try:
                loaded = await asyncio.to_thread(
                    load_rules, self.rules.paths, fresh, named_by=self.rules.named_by
                )
            except Exception:  # a bug in loading must not end the engine
                self.metrics.rule_reloads.labels("failed").inc()
                log.exception(
                    "rules not reloaded: loading failed; keeping the previous %s",
                    counted(len(self.rules.current.rules), "rule"),
                )
                return None
            swapped = self._swap_rules(fresh, loaded)
            if self.rules.current is swapped:
                self._loaded_from = digests
            return swapped

    def _digests(self, rules: RuleSet) -> tuple[dict[Path, str], dict[Path, str]]:
        """The files under the rule paths and ``rules``' list files, by content: a
        reload of byte for byte what is in use swaps nothing and says so once."""
        return source_digests(self.rules.paths), source_digests((), rules.list_digests)

    def request_reload(self) -> None:
        """SIGHUP: start :meth:`reload_in_thread` (a signal handler cannot await).

        Before :meth:`setup` has loaded the rules (plugins still configuring)
        the reload waits for it: run then, it registered the plugins into a
        registry of its own and swapped in its rule book, into which the
        start then registered them a second time and refused to start
        (issue 16). It runs once the start has read the rules, where it
        finds them unchanged or loads what was saved since.
        """
        if not self._set_up:
            if not self._reload_after_setup:
                log.info(
                    "SIGHUP while callrouter is starting: the rules are reloaded "
                    "once the start has loaded them"
                )
            self._reload_after_setup = True
            return
        task = asyncio.get_running_loop().create_task(
            self.reload_in_thread(), name="callrouter-reload"
        )
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _fresh_registry(self) -> Registry:
        fresh = Registry()
        for problem in self.plugins.register_into(fresh):
            log.error("%s", problem)
        return fresh

    def _swap_rules(self, fresh: Registry, loaded: RuleSet) -> RuleSet:
        errors = list(loaded.errors) or self._all_rule_files_gone(loaded)
        for error in errors:
            log.error("%s", error)
        if errors:
            # Any error refuses the whole reload, as one at start refuses to run:
            # a rule left out would send its calls down the rules after it (or
            # to the default route) until someone read the log, where the
            # previous version of the rule, which the administrator meant to
            # change, not to drop, goes on routing them.
            self.metrics.rule_reloads.labels("refused").inc()
            log.error(
                "rules not reloaded: %s; keeping the previous %s",
                counted(len(errors), "problem"),
                counted(len(self.rules.current.rules), "rule"),
            )
            return loaded
        # The failures logged once per call stay said: a call in progress
        # across the reload is not told its plugin's failure a second time.
        book = RuleBook(self.rules.paths, fresh, named_by=self.rules.named_by, said=self.rules.said)
        book.current = loaded
        self.router.rules = book
        for warning in loaded.warnings:
            log.warning("%s", warning)
        self.metrics.rule_reloads.labels("ok").inc()
        self.metrics.rules_loaded.set(len(loaded.rules))
        log.info("reloaded %s", counted(len(loaded.rules), "rule"))
        if self.options.freeze_gc:
            # The previous rules are garbage now; what is frozen is never
            # collected, so thaw, collect once, and freeze the new set.
            gc.unfreeze()
            _freeze_gc("reload")
        if self._scheduler.running:
            self._schedule_rules()
            self._spawn(self._refilter())
            if self.options.audit_dialplan:
                self._spawn(self.dialplan_watch.audit("reload"))
        return loaded

    def _all_rule_files_gone(self, loaded: RuleSet) -> list[RuleValidationError]:
        """A reload that finds no rule file at all under the rule paths while
        rules are in use: refused as a broken file is. The folder emptied by a
        deploy half done, or the file deleted by mistake, would otherwise route
        every call to the default route, said only as ``reloaded 0 rules`` at
        INFO while ``/readyz`` stayed ready. A file with ``rules: []`` is how
        to route nothing on purpose."""
        if loaded.rules or not self.rules.current.rules:
            return []
        if any(True for _ in discover(path for path in self.rules.paths if path.exists())):
            return []
        return [
            RuleValidationError(
                f"no rule file (*.yaml, *.yml) here any more, where "
                f"{counted(len(self.rules.current.rules), 'rule')} came from: a reload does "
                f"not drop every rule; put the file back (a file with 'rules: []' routes "
                f"nothing on purpose)",
                file=display_path(path),
            )
            for path in self.rules.paths
        ]

    def _dialplan_reloaded(self) -> None:
        """Asterisk reloaded its dialplan (a ``Reload`` event)."""
        if self.options.audit_dialplan:
            self.dialplan_watch.reloaded()

    async def event_selection(self) -> EventSelection:
        """The AMI events to ask Asterisk for, with the header filters Asterisk
        applies itself (router/narrowing.py)."""
        return await self.narrowing.selection()

    async def event_narrowing(self) -> dict[str, Narrower]:
        """The events read only in part, each with its test on the raw text
        (router/narrowing.py)."""
        return await self.narrowing.narrowers()

    def _route_early(self, data: bytes, start: int, end: int) -> None:
        """A socket read holding one routing request after other events, before
        any of it is parsed (the TCP client's ``set_urgent(early=...)``): the
        request is decided, and its Redirect written, from its own text first
        when none of those events could change the decision.

        At 20 calls a second the request's read also holds its channel's step
        into the inbound context and the call's new channels; parsed and
        handled first, they cost the Redirect a fifth of the router's part
        (bench/ANALYSIS.md, eleventh session). They change what the tracker
        knows, which a decision reads only through ``call.vars`` (VarSet); and
        what plugins and event rules see, which the decision does not wait
        for when none reads them. So the request goes first only when the
        rules do not read ``call.vars``, no event rule and no plugin reads any
        of those events (nor the HTTP API or a watcher), no plugin implements
        ``callrouter_call_start`` and nothing is queued. Either way every
        event, the request included, is then handled in Asterisk's order as
        ever; the request's second coming only claims its call
        (Router.accept). The call life folds those events in that order too,
        and ``callrouter_decision`` still comes after them: the Redirect's
        confirmation is read after them.
        """
        if (
            self._pulling
            or self._pushed is not None
            or self._stopping.is_set()
            or self._listeners
            or self._config.api is not None
        ):
            return
        rules = self.rules.current
        plugins = self.plugins
        if rules.reads_call_vars or plugins.implements("callrouter_call_start"):
            return
        for name in block_names(data, start):  # distinct: two or three
            if plugins.reads_event(name) or rules.event_rules(name):
                return
        try:
            messages = parse_rawman(data[start:end])
        except AMIProtocolError:
            return  # the read's own parse reports it
        event = messages[0]
        if (
            len(messages) != 1
            or type(event) is not Event
            or not self._is_request(event)
            or oversized(event) is not None  # refused (and said) in order
            or smuggled(event) is not None  # as is a key a caller's number brought in
            or self._tracker.impostor(event) is not None  # and a made-up one
        ):
            return
        channel = event.get("Channel") or ""
        self.parking.requested(event)
        self.router.accept(event, self._tracker.by_channel(channel), early=True)

    def _is_request(self, event: Event) -> bool:
        """A routing request (the dialplan's ``UserEvent``): it jumps a backlog.

        Taken ahead of the events before it (only when more than a batch of
        them waits), a request may reach the tracker before its channel's
        ``Newchannel``: the request carries the channel's snapshot, so the
        call is tracked from it, and the rest follows.
        """
        return (
            event.name == "UserEvent"
            and event.get("UserEvent") == self.options.request_event
            and self._from_channel(event)
        )

    def _from_channel(self, event: Event) -> bool:
        """Whether a channel's dialplan sent the request (router.dialplan
        ``sent_by_channel``); an AMI client's is ignored, with a warning at
        most once a minute."""
        if sent_by_channel(event):
            return True
        now = time.monotonic()
        if now - self._forged_told >= 60.0:
            self._forged_told = now
            log.warning(
                "a %s UserEvent sent through AMI (not by a channel's dialplan) is ignored: "
                "it named channel %s; look for an AMI client or API token with UserEvent",
                self.options.request_event,
                escape_controls((event.get("Channel") or "-")[:80]),
            )
        return False

    async def _refilter(self) -> None:
        """After a reload: the new rules may need other events (an ``on: event``
        rule added or removed). The raw-text narrowers and a wider selection
        apply at once; a narrower one only at the next login, since Asterisk
        cannot remove a session's filters."""
        self._client.set_narrowing(await self.event_narrowing())
        selection = await self.event_selection()
        if selection == self._client.event_selection:
            return
        log.info("rules changed the events asked for: %s", _describe_events(selection))
        try:
            await self._client.set_events(selection)
        except AMIError as exc:  # the next login asks for them anyway
            log.warning("could not change the event filter now: %s", exc)

    def _scan_rule_files(self) -> dict[Path, float]:
        found: dict[Path, float] = {}
        for root in self.rules.paths:
            files = [root] if root.is_file() else sorted(root.rglob("*"))
            for path in files:
                if path.is_file():
                    with contextlib.suppress(OSError):
                        found[path] = path.stat().st_mtime
        return found

    async def _check_rule_files(self) -> None:
        current = await asyncio.to_thread(self._scan_rule_files)  # stat calls: off the loop
        if current != self._rule_mtimes:
            await self._reload_files(watched=True)

    async def _keepalive(self) -> None:
        # Bounded by half the interval, as the heartbeat: never two at once.
        bound = self.options.keepalive / 2
        try:
            await asyncio.wait_for(self._client.send("Ping", {}, validate=False), bound)
        except AMIError as exc:  # the client's own timeout among them
            log.warning("keepalive Ping failed: %s", exc)
        except TimeoutError:
            log.warning("keepalive Ping failed: no answer within %g s", bound)

    def _job_skipped(self, event: JobSubmissionEvent) -> None:
        """A timed job was due while its previous run still went: that run is
        skipped (:data:`_SCHEDULER_LOG`), said at DEBUG. A run that has made
        :data:`JOB_SKIPS_WARNED` runs skipped is said once at WARNING: a job
        that hangs (an ``await`` with no bound) ran never again, and nothing
        but a DEBUG line told its plugin."""
        log.debug("job %s: the previous run is still going; this one is skipped", event.job_id)
        job = str(event.job_id)
        started, skipped = self._job_runs.get(job, (None, 0))
        if started is None:
            return
        skipped += 1
        self._job_runs[job] = (started, skipped)
        if skipped == JOB_SKIPS_WARNED:
            log.warning(
                "background job %s: its run started %.0f s ago still runs, and the %d runs "
                "due since were skipped; bound what it waits for (asyncio.wait_for) by its "
                "interval (docs/plugins.md, Timed jobs)",
                job,
                time.monotonic() - started,
                skipped,
            )

    def _job_missed(self, event: JobExecutionEvent) -> None:
        """A run more than the grace late (a stall over 60 s, this host's clock
        stepped forward past it): said naming the rule or job, the time it was
        due and the next one (apscheduler's own WARNING named
        ``Engine._run_schedule (trigger: cron[...])``, not which rule), and made
        up once for a ``schedule:`` rule with ``missed: run-once``. With
        ``coalesce``, ``scheduled_run_time`` is the last of the runs missed."""
        self._run_missed(str(event.job_id), event.scheduled_run_time, datetime.now(UTC))

    def _run_missed(self, job_id: str, due: datetime, now: datetime) -> None:
        """A run of ``job_id`` due at ``due`` (the last missed) that did not run:
        made up once (:meth:`_make_up`) if its rule says ``missed: run-once``,
        else skipped; said either way."""
        name = job_id[5:] if job_id.startswith("rule:") else None
        once = name is not None and self.rules.current.runs_missed_once(name)
        self._say_skipped(job_id, due, now, made_up=once)
        if name is not None and once:
            self._missed_runs[name] = max(due, self._missed_runs.get(name, due))
            self._start_make_up()

    def _start_make_up(self) -> None:
        """Run :meth:`_make_up` unless it runs: then its loop takes the run
        just added. Nothing can come between its last look at
        :attr:`_missed_runs` and its task being done (no ``await``), so a run
        added is either seen by it or starts a new one."""
        if self._stopping.is_set():
            return
        if self._making_up is None or self._making_up.done():
            self._making_up = asyncio.get_running_loop().create_task(
                self._make_up(), name="callrouter make-up runs"
            )

    async def _make_up(self) -> None:
        """The runs missed by ``missed: run-once`` rules, once each, one after the
        other, in the order their last missed runs were due: a night-mode due at
        19:00 after a day-mode due at 09:00 leaves night mode, as on time; run
        together, either could have ended last. Each run made up is kept as the
        rule's last run (router/schedule_runs.py): made up once, not again at
        the next start."""
        while self._missed_runs:
            name = min(self._missed_runs, key=lambda n: (self._missed_runs[n], n))
            due = self._missed_runs.pop(name)
            if self.rules.current.runs_missed_once(name):  # not reloaded away meanwhile
                await logged(f"schedule {name}", self._run_schedule, logger=log)(name)
                self._kept_runs.record(name, due)

    def _job_ran(self, event: JobExecutionEvent) -> None:
        """A ``schedule:`` rule's run ran (or failed): kept as its last run when
        it says ``missed: run-once`` (router/schedule_runs.py)."""
        job_id = str(event.job_id)
        if job_id.startswith("rule:"):
            self._kept_runs.record(job_id[5:], event.scheduled_run_time)

    def _run_once_rules(self) -> dict[str, tuple[str, str]]:
        """The ``missed: run-once`` rules now: their cron text and zone name."""
        rules = self.rules.current
        zone_name = str(rules_timezone(self._config))
        return {
            name: (cron, zone_name)
            for name, cron in rules.schedules
            if rules.runs_missed_once(name)
        }

    def _runs_missed_while_stopped(self, now: datetime) -> None:
        """At start: the runs ``missed: run-once`` rules missed while callrouter
        was not running (counted from the last runs kept in state_dir), said,
        and queued to be made up once, in the order they were due; a rule
        renamed, set to ``skip``, given another schedule, or whose run is too
        old, is only said."""
        for missed in self._kept_runs.missed(
            now, lambda cron, name: cron_trigger(cron, time_zone(name))
        ):
            self._say_missed_while_stopped(missed, now)
            if missed.made_up:
                self._missed_runs[missed.name] = missed.due

    def _say_missed_while_stopped(self, missed: MissedRun, now: datetime) -> None:
        zone = rules_timezone(self._config)
        log.warning(
            "schedule %s: the run due at %s was missed while callrouter was not running, "
            "%s late (%s; its last run kept was due at %s)",
            missed.name,
            missed.due.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
            duration((now - missed.due).total_seconds()),
            "run once now, as its rule says missed: run-once"
            if missed.why_not is None
            else f"not made up: {missed.why_not}",
            missed.since.last.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
        )

    def _say_skipped(self, job_id: str, due: datetime, now: datetime, *, made_up: bool) -> None:
        """The WARNING of a run not made on time, in the rules' zone: skipped, or
        (``made_up``) run once now."""
        what = f"schedule {job_id[5:]}" if job_id.startswith("rule:") else f"job {job_id}"
        zone = rules_timezone(self._config)
        late = (now - due).total_seconds()
        job = self._scheduler.get_job(job_id)
        upcoming = job.next_run_time if job is not None else None
        log.warning(
            "%s: the run due at %s was %s, %s late (%s: the process stopped for more "
            "than %d s, or this host's clock stepped forward over it)%s",
            what,
            due.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
            "missed" if made_up else "skipped",
            duration(late),
            "run once now, as its rule says missed: run-once" if made_up else "not made up",
            _MISFIRE_GRACE,
            f"; next run {upcoming.astimezone(zone).strftime('%Y-%m-%d %H:%M:%S %Z')}"
            if upcoming is not None
            else "",
        )

    async def _sweep(self) -> None:
        dropped = self._tracker.sweep()
        if dropped:
            log.info("dropped %s whose Hangup never arrived", counted(len(dropped), "call"))
            await self.router.end_calls(dropped)

    def _schedule_rules(self, now: datetime | None = None) -> None:
        """A job for each ``schedule:`` rule, its first run the first after
        ``now`` (default: this moment): at start, the runs due up to ``now``
        are the ones made up (:meth:`_runs_missed_while_stopped`)."""
        now = now or datetime.now(UTC)
        for job in self._scheduler.get_jobs():
            if job.id.startswith("rule:"):
                job.remove()
        # A rule new or given another schedule counts its runs from now.
        self._kept_runs.sync(now)
        after = now + timedelta(microseconds=1)
        # Classic cron in the rules' zone, through the same function that
        # validated it at load (router/rules/cron.py): check and run agree.
        timezone = rules_timezone(self._config)
        for name, cron in self.rules.current.schedules:
            try:
                trigger = cron_trigger(cron, timezone)
            except ValueError as exc:
                log.error("rule %r: schedule %r: %s", name, cron, exc)
                continue
            first = trigger.get_next_fire_time(None, after)
            self._scheduler.add_job(
                logged(f"schedule {name}", self._run_schedule, logger=log),
                trigger,
                args=[name],
                id=f"rule:{name}",
                replace_existing=True,
                # None would add the job paused: a cron that never fires again
                # is left to apscheduler, which drops it.
                **({"next_run_time": first} if first is not None else {}),
            )

    async def _run_schedule(self, name: str) -> None:
        outcome = await self.rules.evaluate(
            Context.for_schedule(name, now=self.clock()), dialplan=self.executor.dialplan
        )
        if outcome.decision.actions and not self.shadow:
            await self.live_instance.settle()  # a run due in a stall or a gap
        if outcome.decision.actions and self._acting():
            results = await self.executor.run(outcome.decision.actions, None, None)
            log.info("schedule %s: %s", name, [r.to_dict() for r in results])

    # -- events ------------------------------------------------------------------------

    def watch(self, listener: EventListener) -> Callable[[], None]:
        """``EngineAPI.watch``: ``listener`` is told every event and gap until stopped."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def _tell(self, item: Event | StreamGap, call: Call | None) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(item, call)
            except Exception:
                self._bad_events.exception("listener", "an event listener failed")

    def decision(self, linkedid: str) -> dict[str, Any] | None:
        """``EngineAPI.decision``: the newest decision record for the call, as logged."""
        for record in reversed(self.router.records):
            if record.linkedid == linkedid:
                return record.to_dict()
        return None

    async def handle_event(self, event: Event) -> None:
        """One event through the tracker, plugins and, if it asks, routing."""
        name = event.name
        if (
            name == "UserEvent"
            and event.get("UserEvent") in (LIVE_EVENT, CHECK_EVENT)
            and smuggled(event) is None
        ):
            # Routers' heartbeats are for the guard only, and check --asterisk's
            # probe for the check's session: neither for rules or plugins. A
            # call's request whose caller's or dialled number brought in a
            # ``UserEvent: CallRouterLive`` line (read first) is no heartbeat:
            # the tracker refuses it and says why, not the guard blaming a
            # forged heartbeat (hreview48).
            if event.get("UserEvent") == LIVE_EVENT:
                self.live_instance.observe(event)
            return
        self.metrics.event(name)
        if name == "Reload" and (event.get("Module") or "").lower() in _DIALPLAN_MODULES:
            self._dialplan_reloaded()
        elif name == "FullyBooted" and self.options.audit_dialplan:
            self.dialplan_watch.look_again(
                "Asterisk finished booting after callrouter had read its dialplan", booted=True
            )
        if name == "CEL":
            await self._cel(event)
            return
        fed = self._tracker.feed(event)
        if fed.refused:
            # A field longer than Asterisk sends (router.calls.oversized), a
            # key a caller's number brought in (router.calls.smuggled): no
            # Asterisk's event, so no plugin, rule or request keeps what it
            # says either. A request so refused fails open: the call takes
            # the dialplan's default route when its wait ends.
            return
        call = fed.call
        if fed.ended:  # a channel that hung up can ask for nothing more
            self.router.forget(fed.ended)
        if fed.forgotten:
            self.router.forget_channels(fed.forgotten)
        early = self.router.early
        if not (early and name == "Newexten" and event.get("Channel") in early):
            # (A step read before an early request is not its Redirect's landing.)
            self.executor.observe(event)
        if name == "Newexten":
            self.parking.stepped(event)
        elif name == "Hangup":
            self.parking.forget(event.get("Channel") or "")
            self.router.hung_up(event.get("Channel") or "")
        if fed.started and call is not None:
            await self.plugins.call_start(call)
        if self.plugins.reads_event(name):
            await self.plugins.event(event, call)
        if name in LIVE_EVENTS and self.plugins.reads_call_events():
            await self.calllife.ingest(name, event)
        if self._listeners:
            self._tell(event, call)
        if self._is_request(event):
            if call is not None:
                self._tracker.requested(call, event)
            self.parking.requested(event)
            if self.router.accept(event, call) and self.router.starting:
                # The routing stopped before a lookup's I/O (router.eager): let
                # it start that now, rather than after the rest of this batch.
                await asyncio.sleep(0)
        elif (
            call is not None
            and name in ("Newchannel", "Newexten")
            and not call.routed
            and "prefetch" not in call.extra
            and event.get("Context") == self.options.inbound_context
            and _starts_prefetch(name, event.get("Channel") or "")
        ):
            # The channel appeared in, or entered, the inbound context: the
            # request follows in a moment, so plugins start slow lookups now.
            call.extra["prefetch"] = True
            # A Local channel's ;2 half (a trunk dialled Local/...) is the
            # one that will send the request: the caller's leg, whose number
            # (its dialplan may have rewritten it) the lookups start with. Not
            # its ;1 half, which appears in this context too, with the DID
            # as its number once the Dial connects it.
            if dialplan_half(event.get("Channel") or ""):
                self._tracker.requested(call, event)
            if not call.did:
                # Cut as the routing request's DID (router.callerid): an exten
                # of Asterisk's is up to 80 characters; the API says 64 at most.
                call.did = cut_number(event.get("Exten") or "")
            await self.plugins.prefetch(call)
        if self.rules.current.may_fire(name, event.getall):
            await self._event_rules(event, call)
        for ended in fed.ended:
            await self.plugins.call_end(ended)

    async def _cel(self, event: Event) -> None:
        """A CEL record: plugins, the call life, listeners and event rules only.

        CEL records are the call life's (router/calllife), not the tracker's:
        a CHAN_END or LINKEDID_END after the call's last Hangup would start a
        call that never ends. Nine come with an answered call, so the rest of
        :meth:`handle_event` (tracker, Redirect confirmations, requests,
        prefetch), which no CEL record concerns, is not walked for them.
        """
        if self._tracker.refuses(event) or self._tracker.impostor(event) is not None:
            # No Asterisk's (router.calls.oversized, router.calls.smuggled, a
            # record a caller's number made up: CallTracker.impostor).
            return
        call = self._tracker.get(event.get("LinkedID") or "")
        if self.plugins.reads_event("CEL"):
            await self.plugins.event(event, call)
        if self.plugins.reads_call_events():
            await self.calllife.ingest("CEL", event)
        if self._listeners:
            self._tell(event, call)
        if self.rules.current.may_fire("CEL", event.getall):
            await self._event_rules(event, call)

    async def _event_rules(self, event: Event, call: Call | None) -> None:
        context = Context.for_event(
            event.name, dict(event.fields), call=call_info(call, None), now=self.clock()
        )
        # Lookups that take the request get the call's own numbers, not a guess;
        # made only when such a lookup runs (most events match no rule).
        request = None if call is None else (lambda: self._event_request(event, call))
        outcome = await self.rules.evaluate(
            context, request=request, dialplan=self.executor.dialplan
        )
        if outcome.decision.actions and self._acting():
            self._spawn(self._event_actions(event.name, outcome.decision.actions, call))

    async def _event_actions(self, name: str, actions: Sequence[Action], call: Call | None) -> None:
        """An event rule's actions: no decision line tells how they went, so
        one that went wrong is a WARNING, once a minute per rule and action."""
        results = await self.executor.run(actions, call, None)  # none after a channel gone
        for action, result in zip(actions, results, strict=False):
            if result.status in SHOWN_FAILURES:
                self._event_rule_failures.warning(
                    f"{action.rule}/{action.kind}",
                    "event rule %r on %s: %s %s: %s",
                    *(action.rule, name, action.kind, result.status, cut_detail(result.detail)),
                )

    def _event_request(self, event: Event, call: Call) -> RequestInfo:
        return RequestInfo(
            channel=event.get("Channel") or call.waiting_channel or "",
            uniqueid=event.get("Uniqueid") or "",
            linkedid=call.linkedid,
            caller=self.registry.normalize_number(call.caller_number),
            did=self.registry.normalize_number(call.did) if call.did else "",
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Actions in flight are the router's to drain, whoever started them."""
        self.router.spawn(coro)

    # -- a takeover ------------------------------------------------------------------------

    def _took_over(self, gone: Claim) -> None:
        """The live instance this one stood by for went silent (it died): the
        calls that arrived meanwhile and still wait are routed (LiveGuard's
        ``on_takeover``; not after one that left). The reconcile runs on the
        event path, before the next events are handled (this one's own
        heartbeat comes back within the interval), as after a gap: events
        handled while the listing is taken would be older than it, and the
        tracker would end calls that started meanwhile."""
        self._took_over_from = gone

    async def _reconcile_takeover(self) -> None:
        gone, self._took_over_from = self._took_over_from, None
        if gone is None or self._stopping.is_set():
            return
        stood_by = self.router.forget_stood_by()
        log.warning(
            "took over from a live callrouter that went silent (%s): reconciling "
            "the calls still waiting (%s stood by for)",
            escape_controls(gone.describe()),
            counted(stood_by, "call"),
        )
        try:
            await self.reconcile(trigger="takeover")
        except AMIAuthenticationError:
            raise
        except AMIPrivilegeError as exc:
            self._refused_listing(exc)
        except (AMIError, OSError) as exc:
            # The reconcile after the reconnect routes them if they still wait.
            log.error("reconcile at takeover failed: %s", exc)
        except Exception:  # a plugin's channels_listed, the tracker: never the event path
            self._bad_events.exception("takeover", "reconcile at takeover failed")

    # -- gaps ----------------------------------------------------------------------------

    async def _on_gap(self, gap: StreamGap) -> None:
        self.metrics.stream_gaps.labels(gap.reason).inc()
        self._tracker.new_session()  # Asterisk may have restarted (CallTracker.impostor)
        (log.debug if gap.quiet else log.warning)(
            "event stream gap of %.1f s (%s): reconciling", gap.duration, gap.reason
        )
        self.live_instance.probe()
        await self.plugins.stream_gap(gap)
        self.calllife.gap(gap.since)
        self._tell(gap, None)
        if gap.reason != "overflow" and self.options.audit_dialplan:
            # Asterisk may have restarted, with an edited extensions.conf, and
            # without the globals callrouter set for an older inbound context
            # (router/dialplan_audit.py).
            self.dialplan_watch.look_again(
                f"callrouter lost Asterisk for {gap.duration:.1f} s: a restart may have changed it",
                say_all=bool(self.dialplan_watch.stand_ins),
            )
        try:
            await self.reconcile(trigger="gap")
        except AMIPrivilegeError as exc:
            self._refused_listing(exc)
        except (AMIError, OSError) as exc:
            if isinstance(exc, AMIAuthenticationError):
                raise
            log.error("reconcile after gap failed: %s", exc)
        # A new login of the gap was probed when the client told of it
        # (PrivilegeWatch.logged_in), beside this reconcile rather than before it.

    async def _first_login(self) -> None:
        """Log in at start; with ``wait_for_asterisk``, until Asterisk answers.

        Calls take the dialplan's default route meanwhile, as with no
        callrouter at all. Said at once as a WARNING with the reason (an
        unreachable host, HTTP 404 or 503 from an Asterisk still starting, a
        TLS handshake cut short), again every minute, and in systemd's status
        line; a stop signal ends the wait. A certificate not trusted or a port
        that does not speak TLS ends the start at once, as a refused login does.
        """
        url = self._config.asterisk.url
        delay, since, told = 0.5, time.monotonic(), 0.0
        keeper: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    await self._client.login()
                except AMIConnectionError as exc:
                    if (
                        not self.options.wait_for_asterisk
                        or self._stopping.is_set()
                        # A certificate not trusted, a port without TLS: a setting
                        # to change, said once by the exit, not a WARNING a minute.
                        or lasting_tls_failure(exc)
                    ):
                        raise
                    if not told or time.monotonic() - told >= 60:
                        # The client's words name the url and the user (said once).
                        log.warning(
                            "Asterisk does not answer (%s): waiting for it%s; calls "
                            "take the dialplan's default route meanwhile",
                            exc,
                            f" for {time.monotonic() - since:.0f} s now" if told else "",
                        )
                        told = time.monotonic()
                    self._waiting_for = f"waiting for Asterisk: {exc}"
                    if keeper is None:
                        keeper = asyncio.get_running_loop().create_task(
                            self._keep_start_alive(), name="callrouter-start-wait"
                        )
                    # Not wait_for: a cancellation in the step the stop was
                    # set in was swallowed, and the start raised the login's
                    # error for a stop (router.tasks.wait_set).
                    if await wait_set(self._stopping, delay):
                        raise  # stopped while waiting: no further try
                    delay = min(delay * 2, 1.0)
                    continue
                self._waiting_for = f"logged in to Asterisk at {url}: starting"
                if told:
                    log.info(
                        "Asterisk answers at %s after %.0f s: starting",
                        url,
                        time.monotonic() - since,
                    )
                return
        finally:
            if keeper is not None:
                keeper.cancel()
                await asyncio.wait((keeper,))

    async def _keep_start_alive(self) -> None:
        """While the start waits for Asterisk: systemd's start timeout pushed
        on, on a timer rather than after each try, which may last longer than
        any extension given before it; the status line says why."""
        while True:
            self._notifier.waiting(self._waiting_for, _WAIT_NOTIFY_FOR)
            await asyncio.sleep(_WAIT_NOTIFY_EVERY)

    async def _clock_stepped(self, seconds: float) -> None:
        """This host's clock stepped (router/clock_step.py): apscheduler would hold
        every timed job (the heartbeat among them) as long as a step back, and a
        request's age would be off by the step until the next gap.

        Asterisk's clock is measured before the jobs are dated again: the
        heartbeat they run at once is dated on it (``At``), and a standby ignores
        a beat more than 30 s off its own reading (router/liveguard.py). Nothing
        tells beforehand whether Asterisk's clock stepped too (the same host) or
        not (another host, this one's clock put right): only the Ping does.
        The jobs wait for it :data:`_MEASURE_FIRST` s at most: a Ping that hangs
        (up to ``request_timeout``) must not hold a step back's heartbeat until
        the standby takes over; the measurement goes on meanwhile."""
        measuring = asyncio.ensure_future(self._measure_clock())
        try:
            await asyncio.wait({measuring}, timeout=_MEASURE_FIRST)
            # Cron runs a step forward jumped over: dated again, they are not
            # made up, and were said nowhere (hsched48's trial).
            now = datetime.now(UTC)
            jumped = [
                (job.id, job.next_run_time, last_run_before(job.trigger, job.next_run_time, now))
                for job in self._scheduler.get_jobs()
                if seconds > 0
                and isinstance(job.trigger, CronTrigger | BaseCombiningTrigger)
                and job.next_run_time is not None
                and job.next_run_time <= now
                # One late by less than the grace runs now (reschedule_from_now).
                and not due_within_grace(job, now)
            ]
            jobs = reschedule_from_now(self._scheduler, seconds) if self._scheduler.running else 0
            log.warning(
                "this host's clock was stepped %s: %s dated again from now, and "
                "Asterisk's clock is measured again",
                describe_step(seconds),
                counted(jobs, "timed job"),
            )
            # Made up (missed: run-once) for the last run jumped over, as
            # apscheduler's coalesce runs one after a stall; else said skipped.
            for job_id, due, last in jumped:
                name = str(job_id)
                once = name.startswith("rule:") and self.rules.current.runs_missed_once(name[5:])
                if once:
                    self._run_missed(name, last, now)
                else:
                    self._say_skipped(name, due, now, made_up=False)
            try:
                await measuring
            except Exception:  # the next gap measures it again
                log.exception("measuring Asterisk's clock after the step failed")
        finally:
            measuring.cancel()  # the watch stopped (the engine stops): no orphan

    async def _measure_clock(self) -> None:
        """How far Asterisk's clock is from this host's (router/asterisk_clock.py)."""
        self.router.clock_offset = await measure_offset(self._client, self.router.clock_offset)

    def _refused_listing(self, exc: AMIPrivilegeError) -> None:
        """The manager user may not list channels: a setting, not a failure of
        the moment; said once, as what is lost and what to add. The probe of
        each login (router/privilege_watch.py) says it first, naming the
        class: then no second WARNING."""
        if self._listing_refused or self.privileges.reporting_refused:
            log.debug("reconcile skipped: %s", exc)
            return
        self._listing_refused = True
        log.warning("%s", LISTING_REFUSED.format(reason=exc))

    async def reconcile(self, trigger: str = "gap") -> int:
        """Route the channels still waiting, track the live calls the stream has
        not shown, end the gone ones (:meth:`Router.reconcile`); counted by
        ``trigger`` (``start`` also counts the calls that fell through while
        no callrouter ran; ``gap``; ``takeover``, from a live instance that
        went silent)."""
        if trigger != "start":  # the start measured it just before
            await self._measure_clock()
        try:
            submitted = await self.router.reconcile(count_fallen=trigger == "start")
        except Exception:
            self.metrics.reconciles.labels(trigger, "failed").inc()
            raise
        self.metrics.reconciles.labels(trigger, "ok").inc()
        self.metrics.reconcile_routed.inc(submitted)
        return submitted

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait for in-flight routing tasks, so that what they decided can be read
        (the test kit's ``settle``, the demo, the benchmarks); :meth:`stop` drains
        them itself, bounded (:meth:`_drain_in_stop`)."""
        if self.router.tasks:
            await asyncio.wait(set(self.router.tasks), timeout=timeout)


def _starts_prefetch(name: str, channel: str) -> bool:
    """Whether ``channel``'s ``Newchannel`` or ``Newexten`` (``name``) in the
    inbound context starts the prefetch: any channel's, but a ``Local``
    channel's only by its ``;2`` half's first step. Asterisk creates both
    halves (in the inbound context when it is the Local's) before the Dial or
    ``Originate`` gives them the caller's number, and the ``;1`` half's own
    steps are those of the Originate's application: a prefetch started there
    asked about no number, and never again (an Originate'd call, issue 16).
    The ``;2`` half's first step comes after the number is set: it is the
    caller's leg, which sends the routing request."""
    if not channel.startswith("Local/"):
        return True
    return name == "Newexten" and dialplan_half(channel)


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    log_task_failure(task, logger=log)


def _freeze_gc(when: str) -> None:
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.debug(
        "gc: %d objects frozen at %s in %.0f ms",
        gc.get_freeze_count(),
        when,
        (time.perf_counter() - started) * 1000,
    )


def _describe_events(selection: EventSelection) -> str:
    """For the log: what an administrator copies into manager.conf eventfilter lines."""
    if selection.names is None:
        return f"every event (Events: {selection.mask})"
    return f"{', '.join(sorted(selection.names))} (Events: {selection.mask})"
