"""The ``onec`` entry point of the ``callrouter`` group: the hooks that wire 1C in.

callrouter loads this module by its entry point (``onec``) and registers
what :func:`make_plugin` returns: one :class:`OneCPlugin` per engine, so two
engines in one process (tests) never share a client, cache or queue.

What each hook does, in life-cycle order:

* ``callrouter_configure`` reads ``[plugins.onec]`` (:func:`parse_settings`).
  Without that table the plugin stays inert: it still registers its names,
  so rules that use them validate, and the lookup answers "onec not
  configured" in the trace (the rule then takes its fallback).
* ``callrouter_register`` adds the lookup ``onec.responsible(number)`` and
  the notify target ``onec``.
* ``callrouter_startup`` opens the HTTP client, the cache and the history
  queue (SQLite in the state directory), starts the history sender and
  schedules its jobs (``engine.schedule``): a ping (health, session-pool
  warmth, and the signal that ends a history backoff early) and the optional
  warm-up of frequent callers.
* ``callrouter_prefetch`` starts the 1C request when the call enters the
  inbound context, so the rule finds it in flight or done.
* ``callrouter_call_start``, ``callrouter_event``, ``callrouter_decision``
  and ``callrouter_call_end`` fold the call into 1C's call history:
  ``ringing``, ``answered``, ``transferred``, then ``hangup`` or ``missed``,
  only for what happened on the PBX (the decision's outcome says what that
  was: docs/onec.md, "Call history"). Calls routed before a restart are
  picked up again from the history queue (:meth:`OneCPlugin.settle_open`).
* ``callrouter_notify`` posts an event a rule asks for (``notify: {plugin:
  onec, event: missed}``).
* ``callrouter_shutdown`` drains the history queue (bounded) and closes.

No hook raises into the engine for 1C's sake: history is best effort on the
call path and durable off it, and the lookup's only exceptions are
:class:`router.errors.LookupUnavailable` subclasses, which the rule engine
records as the lookup's error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callrouter_onec.cache import ResponsibleCache
from callrouter_onec.client import MAX_BODY, OneCClient, OneCSettings
from callrouter_onec.errors import OneCError, OneCUnavailable
from callrouter_onec.history import (
    EVENT_KINDS,
    FILENAME,
    MAX_AGE,
    CallRecord,
    EventKind,
    HistoryQueue,
    HistorySender,
    build_event,
)
from callrouter_onec.phone import RUSSIA, CountryRules, NumberKind, normalize
from router import SettingsReader, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from router import (
        Action,
        Call,
        Config,
        Decision,
        EngineAPI,
        Event,
        Registry,
        RequestInfo,
        RouteOutcome,
        StreamGap,
        Trace,
    )

__all__ = [
    "KEYS",
    "NAME",
    "NOT_CONFIGURED",
    "OneCConfig",
    "OneCPlugin",
    "make_plugin",
    "parse_settings",
]

log = logging.getLogger("callrouter_onec")

#: The plugin's name in rules (``onec.responsible``), router.toml and logs.
NAME = "onec"
#: The lookup this plugin registers.
LOOKUP = f"{NAME}.responsible"
#: The lookup's error while ``[plugins.onec]`` is absent.
NOT_CONFIGURED = "onec not configured: add a [plugins.onec] table to router.toml"
#: Calls routed up to this long before a restart get their end reported after it
#: (the engine's call tracker forgets a call after 4 hours too).
_OPEN_CALLS_SINCE = 4 * 3600.0
#: Seconds between checks whether such a call is still up.
_OPEN_CALLS_INTERVAL = 30.0
#: Hangup causes (Q.850) -> the contract's ``status`` of an unanswered call.
_CAUSE_STATUS = {
    "17": "BUSY",
    "18": "NOANSWER",
    "19": "NOANSWER",
    "16": "CANCEL",
    "0": "CANCEL",
    "": "CANCEL",
}
Status = Literal["ANSWER", "NOANSWER", "BUSY", "CANCEL", "FAILED"]
Direction = Literal["in", "out", "internal"]


# -- settings ------------------------------------------------------------------------------

#: Every key ``[plugins.onec]`` accepts; anything else is refused with a did-you-mean.
KEYS: tuple[str, ...] = (
    "url",
    "username",
    "password",
    "password_env",
    "connect_timeout",
    "timeout",
    "event_timeout",
    "ibsession",
    "verify",
    "ca_file",
    "max_body",
    "positive_ttl",
    "negative_ttl",
    "stale_ttl",
    "failure_threshold",
    "open_seconds",
    "state_dir",
    "events",
    "events_max_age",
    "events_retry_min",
    "events_retry_max",
    "events_retention",
    "events_max_rows",
    "events_prune_interval",
    "drain_timeout",
    "warmup",
    "warmup_numbers",
    "warmup_count",
    "ping_interval",
    "timezone",
    "country_code",
    "national_length",
    "trunk_prefix",
    "exit_prefixes",
    "internal_max_digits",
    "dial_context",
)


@dataclass(frozen=True, slots=True)
class OneCConfig:
    """``[plugins.onec]``, validated; defaults follow the contract's client rules."""

    client: OneCSettings
    positive_ttl: float = 600.0
    negative_ttl: float = 120.0
    stale_ttl: float = 86400.0
    failure_threshold: int = 5
    open_seconds: float = 30.0
    #: None: the engine's state directory.
    state_dir: Path | None = None
    events: bool = True
    events_max_age: float = MAX_AGE
    events_retry_min: float = 1.0
    events_retry_max: float = 60.0
    #: Delivered and dropped events are kept this long (duplicate detection, warm-up)...
    events_retention: float = 7 * 86400
    #: ... and at most this many of them; pruned every events_prune_interval seconds.
    events_max_rows: int = 100_000
    events_prune_interval: float = 3600.0
    drain_timeout: float = 3.0
    #: A crontab line; empty: no warm-up job.
    warmup: str = ""
    #: Numbers to warm; empty: the most frequent callers in the history queue.
    warmup_numbers: tuple[str, ...] = ()
    warmup_count: int = 200
    #: Seconds between pings; 0: no ping job.
    ping_interval: float = 60.0
    #: 1C's server zone for the zoneless times in call events; None: this machine's.
    timezone: tzinfo | None = None
    rules: CountryRules = field(default_factory=lambda: RUSSIA)
    #: The dialplan context whose extensions are phones: a redirect there rang that
    #: extension; a redirect anywhere else (a queue, an IVR) rang no extension we know.
    dial_context: str = "callrouter-dial"


def _digit_string(reader: SettingsReader, key: str, default: str, *, empty: bool = False) -> str:
    value = reader.string(key, default, empty=empty)
    if value and not (value.isascii() and value.isdigit()):
        raise reader.error(key, f"expected digits only, got {value!r}")
    return value


def _url(reader: SettingsReader) -> str:
    url = reader.string("url").strip()
    if "@" in url:
        # Checked before anything quotes the URL back: what precedes '@' may be
        # a password, and error messages end up in logs and tickets.
        raise reader.error(
            "url",
            "put no credentials in the URL (user:password@host); use username and password_env",
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise reader.error(
            "url", f"expected http(s)://host[:port]/<publication>/hs/<root>, got {url!r}"
        )
    if parts.query or parts.fragment:
        raise reader.error("url", f"give the service root without ?query or #fragment: {url!r}")
    path = parts.path.rstrip("/")
    for template in ("/v1/responsible", "/v1/ping", "/v1/calls", "/v1"):
        if template in path:
            root = path[: path.index(template)]
            raise reader.error(
                "url",
                f"give the service root, not a method: "
                f"{urllib.parse.urlunsplit(parts._replace(path=root))!r}",
            )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _password(reader: SettingsReader, environ: Mapping[str, str]) -> str:
    if reader.has("password") and reader.has("password_env"):
        raise reader.error("password_env", "give either password or password_env, not both")
    if reader.has("password_env"):
        name = reader.string("password_env")
        value = environ.get(name)
        if not value:
            # An empty variable is a deployment mistake (an unset secret in a
            # unit file), not a 1C user without a password: say so at start.
            raise reader.error("password_env", f"environment variable {name} is not set or empty")
        return value
    if reader.has("password"):
        given = reader.values["password"]
        if not isinstance(given, str):  # the type only: the value is a secret
            raise reader.error("password", f"expected a string, got {type(given).__name__}")
        return given  # a 1C user may have no password
    raise reader.error(
        "password", "required: set password or password_env (the environment variable holding it)"
    )


def _zone(reader: SettingsReader) -> tzinfo | None:
    if not reader.has("timezone"):
        return None
    name = reader.string("timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.error(
            "timezone", f"unknown time zone {name!r} (an IANA name such as 'Europe/Moscow')"
        ) from None


def _cron(reader: SettingsReader) -> str:
    text = reader.string("warmup", "", empty=True).strip()
    if text:
        from router import check_cron

        try:
            check_cron(text)  # classic cron, as callrouter's schedule: rules
        except ValueError as exc:
            raise reader.error("warmup", f"not a crontab line ({exc}): {text!r}") from None
    return text


def parse_settings(
    settings: Mapping[str, object],
    *,
    origin: str = "router.toml",
    base: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> OneCConfig:
    """Validate ``[plugins.onec]``; raise :class:`ConfigError` naming the key.

    ``origin`` is the file the table came from (for messages), ``base`` the
    folder relative ``state_dir`` is taken from (the config file's, as for
    callrouter's own paths).
    """
    reader = SettingsReader(f"plugins.{NAME}", settings, {"": origin}, base or Path.cwd())
    reader.reject_unknown(KEYS)
    env = os.environ if environ is None else environ
    connect = reader.number("connect_timeout", 0.5, 0, 60)
    timeout = reader.number("timeout", 1.5, 0, 60)
    if connect > timeout:
        raise reader.error(
            "connect_timeout", f"{connect:g} s is longer than timeout ({timeout:g} s)"
        )
    ca_file: str | None = None
    if reader.has("ca_file"):
        ca_path = reader.path("ca_file", must_exist=True)
        assert ca_path is not None
        try:
            ssl.create_default_context(cafile=str(ca_path))
        except (OSError, ssl.SSLError) as exc:
            raise reader.error(
                "ca_file", f"not a PEM CA bundle: {str(ca_path)!r} ({type(exc).__name__}: {exc})"
            ) from None
        ca_file = str(ca_path)
    client = OneCSettings(
        base_url=_url(reader),
        username=reader.string("username"),
        password=_password(reader, env),
        connect_timeout=connect,
        timeout=timeout,
        event_timeout=reader.number("event_timeout", 5.0, 0, 120),
        ibsession=reader.boolean("ibsession", False),
        verify=reader.boolean("verify", True),
        max_body=reader.integer("max_body", MAX_BODY, 1024, 1 << 30),
        ca_file=ca_file,
    )
    if ca_file is not None and not client.verify:
        raise reader.error("ca_file", "verify = false checks no certificate; drop one of them")
    positive = reader.number("positive_ttl", 600.0, 0, 7 * 86400)
    negative = reader.number("negative_ttl", 120.0, 0, 7 * 86400)
    stale = reader.number("stale_ttl", 86400.0, 0, 30 * 86400)
    if stale < max(positive, negative):
        raise reader.error(
            "stale_ttl",
            f"{stale:g} s is shorter than the fresh TTLs "
            "(positive_ttl, negative_ttl): nothing would be stale",
        )
    retry_min = reader.number("events_retry_min", 1.0, 0, 3600)
    retry_max = reader.number("events_retry_max", 60.0, 0, 3600)
    if retry_min > retry_max:
        raise reader.error(
            "events_retry_min", f"{retry_min:g} s is longer than events_retry_max ({retry_max:g} s)"
        )
    state_dir = None
    if reader.has("state_dir"):
        state_dir = (base or Path.cwd()) / reader.string("state_dir")
    code = _digit_string(reader, "country_code", RUSSIA.country_code)
    rules = CountryRules(
        country_code=code,
        national_length=reader.integer("national_length", RUSSIA.national_length, 4, 14),
        trunk_prefix=_digit_string(reader, "trunk_prefix", RUSSIA.trunk_prefix, empty=True),
        exit_prefixes=reader.strings("exit_prefixes", digits=True)
        if reader.has("exit_prefixes")
        else RUSSIA.exit_prefixes,
        internal_max_digits=reader.integer("internal_max_digits", RUSSIA.internal_max_digits, 0, 9),
    )
    return OneCConfig(
        client=client,
        positive_ttl=positive,
        negative_ttl=negative,
        stale_ttl=stale,
        failure_threshold=reader.integer("failure_threshold", 5, 1, 1000),
        open_seconds=reader.number("open_seconds", 30.0, 0, 3600),
        state_dir=state_dir,
        events=reader.boolean("events", True),
        events_max_age=reader.number("events_max_age", MAX_AGE, 0, 30 * 86400),
        events_retry_min=retry_min,
        events_retry_max=retry_max,
        events_retention=reader.number("events_retention", 7 * 86400.0, 0, 366 * 86400),
        events_max_rows=reader.integer("events_max_rows", 100_000, 100, 100_000_000),
        events_prune_interval=reader.number("events_prune_interval", 3600.0, 1, 86400),
        drain_timeout=reader.number("drain_timeout", 3.0, 0, 60, allow_zero=True),
        warmup=_cron(reader),
        warmup_numbers=reader.strings("warmup_numbers"),
        warmup_count=reader.integer("warmup_count", 200, 1, 100_000),
        ping_interval=reader.number("ping_interval", 60.0, 0, 86400, allow_zero=True),
        timezone=_zone(reader),
        rules=rules,
        dial_context=reader.string("dial_context", "callrouter-dial"),
    )


# -- per-call history state ----------------------------------------------------------------


#: What 1C is told about a call, by the decision's outcome (docs/onec.md):
#: ``routed``: everything (callrouter redirected it); ``final``: only its end (it
#: took the dialplan's default route); ``silent``: nothing (shadow, a rule hung up).
Mode = Literal["", "routed", "final", "silent"]


@dataclass(slots=True)
class _Track:
    """What the plugin remembers about one call (in ``call.extra["onec"]``)."""

    started_at: datetime
    #: "": no decision for this call (outbound, internal, before our start): not history.
    mode: Mode = ""
    extension: str | None = None
    manager_id: str | None = None
    client_id: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    causes: dict[str, str] = field(default_factory=dict)
    submitted: set[str] = field(default_factory=set)
    #: (from, to) as 1C got them before a restart; None: from the call.
    numbers: tuple[str, str] | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _responsible_answer(trace: Trace | None) -> Mapping[str, Any] | None:
    """The ``onec.responsible`` answer the rules saw: the matched rule's first."""
    if trace is None:
        return None
    return next(
        (value for value in trace.lookup_values(LOOKUP) if isinstance(value, Mapping)), None
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_local(value: object) -> datetime | None:
    """A time from a queued payload: 1C's zoneless local time, as it was sent."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _manager_extension(answer: Mapping[str, Any] | None) -> str | None:
    manager = answer.get("manager") if answer else None
    if isinstance(manager, Mapping) and isinstance(manager.get("extension"), str):
        return cast(str, manager["extension"])
    return None


def _ids(answer: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    if not answer:
        return None, None
    manager = answer.get("manager")
    client = answer.get("client")
    manager_id = manager.get("id") if isinstance(manager, Mapping) else None
    client_id = client.get("id") if isinstance(client, Mapping) else None
    return (
        manager_id if isinstance(manager_id, str) else None,
        client_id if isinstance(client_id, str) else None,
    )


# -- the plugin ----------------------------------------------------------------------------


class OneCPlugin:
    """All of the plugin's state and hooks; one instance per engine process."""

    def __init__(self) -> None:
        self.config: OneCConfig | None = None
        self.client: OneCClient | None = None
        self.cache: ResponsibleCache | None = None
        self.queue: HistoryQueue | None = None
        self.sender: HistorySender | None = None
        #: Last ping: True (answered), False (failed), None (not pinged yet).
        self.healthy: bool | None = None
        self._engine: EngineAPI | None = None
        #: Calls routed before a restart whose end 1C has not heard (call id ->
        #: event -> payload), until the engine sees them again or they are gone.
        self._open: dict[str, dict[str, dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- configure / register ----------------------------------------------------------

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        """Validate ``[plugins.onec]``; an absent table leaves the plugin inert."""
        if NAME not in config.plugins.settings:
            self.config = None
            return
        path = config.path
        self.config = parse_settings(
            settings,
            origin=str(path) if path is not None else "router.toml",
            base=path.parent if path is not None else None,
        )

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        """The lookup and the notify target exist whether or not 1C is configured,
        so rules that use them validate on every installation."""
        registry.add_lookup(LOOKUP, self.responsible)
        registry.add_notify_target(NAME, "1C: call events (missed, ...) into 1C's call history")

    # -- the lookup ------------------------------------------------------------------------

    async def responsible(
        self, number: str, request: RequestInfo | None = None
    ) -> dict[str, Any] | None:
        """1C: the client and responsible manager for a number.

        Returns the contract's answer as nested dicts ({"found": ..., "client":
        {"name": ...}, "manager": {"name": ..., "extension": "101"}}), or None
        for an internal or unusable number. Raises LookupUnavailable (the rule
        takes its fallback) when 1C gives no answer and nothing is cached.
        ``request`` is filled by callrouter (not the rule): the DID and call id
        1C logs with the question.
        """
        cache = self.cache
        if cache is None:
            raise OneCUnavailable(
                NOT_CONFIGURED
                if self.config is None
                else "onec not started: the engine is not connected yet"
            )
        did = request.did or None if request is not None else None
        call_id = request.linkedid or None if request is not None else None
        # The rule engine cancels this await at the call's deadline; the cache
        # shields the shared request, so the answer still lands in the cache.
        answer = await cache.lookup(str(number), did=did, call_id=call_id)
        return None if answer is None else answer.as_dict()

    # -- life cycle ------------------------------------------------------------------------

    @hookimpl
    async def callrouter_startup(self, engine: EngineAPI) -> None:
        """Open the client, cache and history queue; schedule ping and warm-up."""
        self._engine = engine
        await self._close()  # a second engine in one process starts from scratch
        config = self.config
        if config is None:
            log.info("onec: no [plugins.onec] table; the plugin is inert")
            return
        self.client = OneCClient(config.client)
        self.cache = ResponsibleCache(
            self.client,
            positive_ttl=config.positive_ttl,
            negative_ttl=config.negative_ttl,
            stale_ttl=config.stale_ttl,
            failure_threshold=config.failure_threshold,
            open_seconds=config.open_seconds,
            rules=config.rules,
        )
        if engine.shadow:
            # Shadow mode: nothing happens to calls, so 1C hears nothing; the
            # history file (perhaps a live instance's) is not even opened.
            log.info("onec: shadow mode: no call history is sent to 1C")
        elif config.events:
            path = Path(config.state_dir or engine.state_dir) / FILENAME
            # Off the loop: another process may hold the database's lock.
            self.queue = await asyncio.to_thread(
                HistoryQueue,
                path,
                retention=config.events_retention,
                max_rows=config.events_max_rows,
            )
            self.sender = HistorySender(
                self.queue,
                self.client.post_event,
                max_age=config.events_max_age,
                base_delay=config.events_retry_min,
                max_delay=config.events_retry_max,
                prune_interval=config.events_prune_interval,
            )
            self.sender.start()
            pending = await asyncio.to_thread(self.queue.pending_count)
            if pending:
                log.info("onec: %d call events left by the last run; sending them", pending)
            self._open = await asyncio.to_thread(
                self.queue.open_calls, time.time() - _OPEN_CALLS_SINCE
            )
            if self._open:
                log.info(
                    "onec: %d calls routed before the restart have no end in 1C yet; "
                    "following them",
                    len(self._open),
                )
                await self.settle_open()
                engine.schedule("onec:open-calls", self.settle_open, every=_OPEN_CALLS_INTERVAL)
        if config.ping_interval:
            engine.schedule("onec:ping", self.ping, every=config.ping_interval)
        if config.warmup:
            # Classic cron in the rules' zone ([plugins.timefuncs] timezone):
            # the engine schedules it as it does schedule: rules.
            engine.schedule("onec:warmup", self.warm_up, cron=config.warmup)
        # The first ping warms 1C's session pool; startup must not wait for it.
        self._spawn(self.ping())
        log.info("onec: asking %s as %s", config.client.base_url, config.client.username)

    @hookimpl
    async def callrouter_shutdown(self, engine: EngineAPI) -> None:
        """Deliver what 1C can take now (bounded), then close; the rest stays on disk."""
        sender, config = self.sender, self.config
        try:
            if (
                sender is not None
                and config is not None
                and config.drain_timeout
                and sender.failures == 0
                and self.healthy is not False
                and sender.running
                and not await sender.drain(config.drain_timeout)
            ):
                log.info(
                    "onec: %d call events not delivered yet; sent after the restart",
                    await asyncio.to_thread(sender.queue.pending_count),
                )
        except Exception:
            log.exception("onec: could not drain the call history; closing anyway")
        finally:
            await self._close()

    async def _close(self) -> None:
        """Release everything; each step runs even when an earlier one failed."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._open = {}
        sender, self.sender = self.sender, None
        queue, self.queue = self.queue, None
        cache, self.cache = self.cache, None
        client, self.client = self.client, None
        steps: list[tuple[str, Any]] = [
            ("history sender", sender.stop if sender is not None else None),
            (
                "history database",
                (lambda: asyncio.to_thread(queue.close)) if queue is not None else None,
            ),
            ("cache", cache.aclose if cache is not None else None),
            ("HTTP client", client.aclose if client is not None else None),
        ]
        for what, close in steps:
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.exception("onec: closing the %s failed", what)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- scheduled jobs --------------------------------------------------------------------

    async def ping(self) -> bool:
        """Health check: logs 1C going away and coming back; a success ends a history backoff."""
        client = self.client
        if client is None:
            return False
        try:
            await client.ping()
        except OneCError as exc:
            if self.healthy is not False:
                log.warning("onec: 1C does not answer its ping: %s", exc)
            self.healthy = False
            return False
        if self.healthy is False:
            log.info("onec: 1C answers its ping again")
        self.healthy = True
        if self.sender is not None and self.sender.failures:
            self.sender.retry_now()
        return True

    async def warm_up(self) -> int:
        """Refresh the configured numbers, or the most frequent recent callers; returns how many."""
        cache, config = self.cache, self.config
        if cache is None or config is None:
            return 0
        numbers = list(config.warmup_numbers)
        if not numbers and self.queue is not None:
            numbers = await asyncio.to_thread(self.queue.frequent_callers, config.warmup_count)
        await cache.warm(numbers)
        log.info("onec: warm-up asked 1C about %d numbers", len(numbers))
        return len(numbers)

    def status(self) -> dict[str, Any]:
        """A snapshot for status pages and tests."""
        return {
            "configured": self.config is not None,
            "started": self.cache is not None,
            "healthy": self.healthy,
            "breaker": self.cache.breaker.state.value if self.cache is not None else None,
            "events": self.queue.counts() if self.queue is not None else {},
        }

    # -- routing path ----------------------------------------------------------------------

    @hookimpl
    def callrouter_prefetch(self, call: Call) -> None:
        """Start the 1C request now; the rules ask a few hundred milliseconds later."""
        cache = self.cache
        if cache is None or not call.caller_number:
            return
        engine = self._engine
        if engine is not None:
            try:
                if not engine.may_ask(call, LOOKUP):
                    return  # e.g. a blacklisted caller: 1C is not asked about them
            except Exception:  # a prefetch is an optimisation: when in doubt, ask
                log.exception(
                    "onec: could not tell whether the rules ask 1C about call %s", call.linkedid
                )
        did = call.did or next((c.exten for c in call.channels.values() if c.exten), None)
        cache.prefetch(call.caller_number, did=did or None, call_id=call.linkedid)

    # -- call history ----------------------------------------------------------------------

    def _track(self, call: Call) -> _Track:
        track = call.extra.get(NAME)
        if not isinstance(track, _Track):
            track = _Track(started_at=_now())
            call.extra[NAME] = track
        return track

    @hookimpl
    def callrouter_call_start(self, call: Call) -> None:
        if self.sender is None:
            return
        track = self._track(call)
        known = self._open.pop(call.linkedid, None)
        if known is not None:
            self._resume(track, known)

    def _resume(self, track: _Track, known: Mapping[str, Mapping[str, Any]]) -> None:
        """A call routed before a restart, still up: go on from what 1C was told."""
        ringing = known["ringing"]
        track.mode = "routed"
        track.started_at = _parse_local(ringing.get("started_at")) or track.started_at
        track.extension = _str_or_none(ringing.get("extension"))
        track.manager_id = _str_or_none(ringing.get("manager_id"))
        track.client_id = _str_or_none(ringing.get("client_id"))
        track.numbers = (str(ringing.get("from") or ""), str(ringing.get("to") or ""))
        answered = known.get("answered")
        if answered is not None:
            track.answered_at = _parse_local(answered.get("answered_at")) or _now()
        track.submitted.update(known)

    @hookimpl
    def callrouter_stream_gap(self, gap: StreamGap) -> None:
        """Calls that ended during the gap are the engine's; those from before a restart ours."""
        if self._open:
            self._spawn(self.settle_open())

    async def settle_open(self) -> int:
        """Finish the calls routed before a restart: returns how many got their end now.

        The history queue knows the calls whose ``ringing`` 1C got and whose end
        it did not. One still up is tracked again once the engine sees it (the
        engine's reconcile lists live channels); one no channel belongs to any
        more ended while callrouter was down: 1C gets its final event now, with
        what is known (``hangup`` if its ``answered`` was sent, else ``missed``;
        ``ended_at`` is when this was noticed).
        """
        engine, sender = self._engine, self.sender
        if not self._open or engine is None or sender is None:
            return 0
        try:
            listing = await engine.ami.send("CoreShowChannels", {}, validate=False)
        except Exception as exc:
            log.warning(
                "onec: could not list channels to finish calls from before the "
                "restart (tried again later): %s",
                exc,
            )
            return 0
        live = {item.get("Linkedid") or "" for item in listing.items}
        finished = 0
        for call_id, known in list(self._open.items()):
            call = engine.calls.get(call_id)
            if call is not None:
                self._open.pop(call_id, None)
                self._resume(self._track(call), known)
            elif call_id not in live:
                self._open.pop(call_id, None)
                finished += self._finish_unseen(call_id, known)
        if finished:
            log.info(
                "onec: %d calls routed before the restart ended meanwhile; 1C gets their end now",
                finished,
            )
        return finished

    def _finish_unseen(self, call_id: str, known: Mapping[str, Mapping[str, Any]]) -> int:
        ringing, answered = known["ringing"], known.get("answered")
        started = _parse_local(ringing.get("started_at")) or _now()
        direction = ringing.get("direction")
        record = CallRecord(
            call_id=call_id,
            direction=direction if direction in ("in", "out", "internal") else "in",
            from_number=str(ringing.get("from") or ""),
            to_number=str(ringing.get("to") or ""),
            started_at=started,
            extension=_str_or_none(ringing.get("extension")),
            manager_id=_str_or_none(ringing.get("manager_id")),
            client_id=_str_or_none(ringing.get("client_id")),
            answered_at=_parse_local(answered.get("answered_at")) if answered else None,
            ended_at=_now(),
            status="ANSWER" if answered else "NOANSWER",
        )
        kind: EventKind = "hangup" if answered else "missed"
        try:
            assert self.sender is not None
            self.sender.submit(
                build_event(kind, record, tz=self.config.timezone if self.config else None)
            )
        except Exception:
            log.exception("onec: could not queue %s of call %s", kind, call_id)
            return 0
        return 1

    @hookimpl
    def callrouter_event(self, event: Event, call: Call | None) -> None:
        """Answer, transfer and hangup causes; only cheap bookkeeping on this hot path."""
        if self.sender is None:
            return
        name = event.name
        if name in ("BlindTransfer", "AttendedTransfer"):
            self._transfer(event)
            return
        if call is None:
            return
        track = self._track(call)
        if name == "Hangup":
            track.causes[event.get("Channel") or ""] = event.get("Cause") or ""
        if call.answered and track.answered_at is None:
            track.answered_at = _now()
            if track.mode == "routed":
                self._submit("answered", call, track)

    def _transfer(self, event: Event) -> None:
        """A transfer names its calls in prefixed fields (``TransfererLinkedid``)."""
        if event.get("Result") not in (None, "Success") or self._engine is None:
            return
        target = event.get("Extension") or event.get("TransferTargetCallerIDNum") or None
        for key, value in event.fields:
            if not key.endswith("Linkedid") or not value:
                continue
            call = self._engine.calls.get(value)
            if call is None:
                continue
            track = self._track(call)
            if track.mode == "routed" and call.answered:
                self._submit("transferred", call, track, extension=target)

    @hookimpl
    def callrouter_decision(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        """Tell 1C what the decision made happen, and nothing else.

        ``executed`` with a redirect: the call rings where it was sent
        (``ringing`` now, the rest as it happens); with a ``hangup``: a rule
        refused the caller, nothing rang, 1C hears nothing. ``shadow``: nothing
        happened. ``late``, ``fell-through``, ``failed``, ``caller-gone`` and an
        executed decision without a redirect: the call stays on the dialplan's
        default route, where callrouter does not know who rings; 1C gets only its
        end (``hangup`` or ``missed``, no extension, no manager).
        """
        if self.sender is None:
            return
        track = self._track(call)
        if track.mode:
            return  # the call's first decision said what happened to it
        actions = decision.actions if outcome == "executed" and decision is not None else ()
        kinds = [action.kind for action in actions]
        if outcome == "shadow" or "hangup" in kinds:
            track.mode = "silent"
            return
        answer = _responsible_answer(trace)
        manager_id, track.client_id = _ids(answer)
        if "redirect" not in kinds:
            track.mode = "final"
        else:
            track.mode = "routed"
            track.extension = self._extension(actions)
            # The manager is the call's only if it rang the manager's own extension.
            if track.extension is not None and track.extension == _manager_extension(answer):
                track.manager_id = manager_id
            self._submit("ringing", call, track)
            if track.answered_at is not None:
                self._submit("answered", call, track)
        if call.ended is not None:  # the caller hung up before the decision (caller-gone)
            self._end(call, track)

    def _extension(self, actions: Sequence[Action]) -> str | None:
        """The extension the call rang: the last redirect's, if into the dial context."""
        context = self.config.dial_context if self.config else "callrouter-dial"
        found: str | None = None
        for action in actions:
            if action.kind != "redirect":
                continue
            exten = action.params.get("exten", "")
            found = exten if action.params.get("context") == context and exten else None
        return found

    @hookimpl
    def callrouter_call_end(self, call: Call) -> None:
        if self.sender is None:
            return
        self._end(call, self._track(call))

    def _end(self, call: Call, track: _Track) -> None:
        if track.mode not in ("routed", "final"):
            return  # not routed (outbound, internal, before our start), shadow, refused
        track.ended_at = track.ended_at or _now()
        if track.mode == "routed":
            self._submit("ringing", call, track)  # no-op if sent; keeps 1C's order if not
        self._submit("hangup" if call.answered else "missed", call, track)

    def _record(
        self,
        call: Call,
        track: _Track,
        *,
        status: Status | None = None,
        extension: str | None = None,
        final: bool = False,
    ) -> CallRecord:
        rules = self.config.rules if self.config else RUSSIA
        caller = normalize(call.caller_number, rules)
        did = normalize(call.did, rules) if call.did else None
        direction: Direction = "internal" if caller.kind is NumberKind.INTERNAL else "in"
        if final and status is None:
            status = self._status(call, track)
        from_number = caller.number or call.caller_number
        to_number = (did.number if did and did.number else call.did) or ""
        if track.numbers is not None:  # a call picked up after a restart: as 1C knows it
            from_number, to_number = track.numbers
        return CallRecord(
            call_id=call.linkedid,
            direction=direction,
            from_number=from_number,
            to_number=to_number,
            started_at=track.started_at,
            extension=extension or track.extension,
            manager_id=track.manager_id,
            client_id=track.client_id,
            answered_at=track.answered_at,
            ended_at=(track.ended_at or _now()) if final else None,
            status=status,
        )

    @staticmethod
    def _status(call: Call, track: _Track) -> Status:
        if call.answered or track.answered_at is not None:
            return "ANSWER"
        waiting = call.waiting_channel or ""
        cause = track.causes.get(waiting)
        if cause is None:
            cause = next(reversed(track.causes.values()), "") if track.causes else ""
        return cast(Status, _CAUSE_STATUS.get(cause, "FAILED"))

    def _submit(
        self, kind: EventKind, call: Call, track: _Track, *, extension: str | None = None
    ) -> None:
        """Queue one event; never raises (history must not disturb a call)."""
        if kind in track.submitted or self.sender is None:
            return
        try:
            record = self._record(
                call, track, extension=extension, final=kind in ("hangup", "missed")
            )
            payload = build_event(kind, record, tz=self.config.timezone if self.config else None)
            self.sender.submit(payload)
        except Exception:
            log.exception("onec: could not queue %s of call %s", kind, call.linkedid)
            return
        track.submitted.add(kind)

    # -- notify ----------------------------------------------------------------------------

    @hookimpl
    def callrouter_notify(self, target: str, params: Mapping[str, str], call: Call | None) -> None:
        """``notify: {plugin: onec, event: missed, ...}``: one event into 1C's history.

        With a call, the event is the call's own (idempotent with the one the
        plugin posts itself at hangup); a ``hangup`` or ``missed`` for a call
        the plugin reports itself waits for the call's real end instead. Without
        a call, ``number``, ``to``, ``extension`` and ``call_id`` come from the
        parameters.
        """
        if target != NAME:
            return
        sender = self.sender
        if sender is None:
            log.warning(
                "onec: notify %s ignored: %s",
                dict(params),
                NOT_CONFIGURED if self.config is None else "call events are off",
            )
            return
        kind = params.get("event", "missed")
        if kind not in EVENT_KINDS:
            log.warning("onec: notify: unknown event %r (known: %s)", kind, ", ".join(EVENT_KINDS))
            return
        event_kind: EventKind = kind
        if call is not None:
            track = self._track(call)
            if kind in ("hangup", "missed") and track.mode in ("routed", "final"):
                # The plugin posts this call's end itself when the call ends, as it
                # was: a leg's "no answer" mid-call (cause 19 before a queue
                # answers) is not the end of the call.
                log.debug(
                    "onec: notify %s for call %s left to the call's own end", kind, call.linkedid
                )
                return
            self._submit(event_kind, call, track, extension=params.get("extension") or None)
            return
        rules = self.config.rules if self.config else RUSSIA
        number = params.get("number", "")
        now = _now()
        record = CallRecord(
            call_id=params.get("call_id")
            or f"notify-{normalize(number, rules).number}-{int(now.timestamp())}",
            direction="in",
            from_number=normalize(number, rules).number or number,
            to_number=normalize(params.get("to", ""), rules).number or params.get("to", ""),
            started_at=now,
            extension=params.get("extension") or None,
            ended_at=now if kind in ("hangup", "missed") else None,
        )
        try:
            sender.submit(
                build_event(event_kind, record, tz=self.config.timezone if self.config else None)
            )
        except Exception:
            log.exception("onec: could not queue notify %s", dict(params))


def make_plugin() -> OneCPlugin:
    """The entry point's factory: one plugin (client, cache, history) per engine."""
    return OneCPlugin()
