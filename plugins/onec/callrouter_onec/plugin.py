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
* ``callrouter_state_folders`` makes and checks ``[plugins.onec] state_dir``
  and gives it to the engine to lock before it logs in to Asterisk.
* ``callrouter_startup`` opens the HTTP client, the cache and the history
  queue (SQLite in the state directory), starts the history sender and
  schedules its jobs (``engine.schedule``): a ping (health, session-pool
  warmth, and the signal that ends a history backoff early) and the optional
  warm-up of frequent callers.
* ``callrouter_prefetch`` starts the 1C request when the call enters the
  inbound context, so the rule finds it in flight or done.
* ``callrouter_decision`` remembers what 1C's lookup said about the caller
  (manager, client) for the call's history; a call a rule refused (a
  blacklist ``hangup``) stays out of 1C's history.
* ``callrouter_call_event`` turns each fact of a call's life (callrouter's
  CEL folding, live or replayed after a gap: ``ringing``, ``answered``,
  ``transferred``, ``hangup``, ``missed``) into 1C's history, keyed by the
  event's id, gives a missed call its owner and closes it with
  ``missed_closed`` when the customer is reached (docs/onec.md, "Call
  history").
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
import re
import ssl
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from callrouter_onec.cache import ResponsibleCache
from callrouter_onec.client import MAX_BODY, OneCClient, OneCSettings
from callrouter_onec.errors import OneCCutOff, OneCError, OneCUnavailable
from callrouter_onec.history import (
    EVENT_KINDS,
    FILENAME,
    MAX_AGE,
    CallRecord,
    EventKind,
    HistoryQueue,
    HistorySender,
    build_event,
    wait_set,
)
from callrouter_onec.history import conversion as history_conversion
from callrouter_onec.life import (
    ANONYMOUS,
    KINDS,
    CallEventLike,
    call_event_payload,
    customer_number,
    party,
)
from callrouter_onec.metrics import QUEUE_RECOUNT, OneCMetrics
from callrouter_onec.missed import (
    ANY_DID,
    MISSED_MAX_AGE,
    MISSED_MAX_ROWS,
    MissedFact,
    owner_of,
)
from callrouter_onec.models import Responsible
from callrouter_onec.phone import RUSSIA, CountryRules, normalize
from callrouter_onec.recordings import RecordingUploader, close_uploads, start_uploads
from router import ConfigError, SettingsReader, hookimpl, private_dir_problem

if TYPE_CHECKING:  # pragma: no cover
    from router import (
        Call,
        Config,
        Decision,
        EngineAPI,
        Metrics,
        Registry,
        RequestInfo,
        RouteOutcome,
        StateFolder,
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
#: Seconds at most :meth:`OneCPlugin.status` waits for the history queue
#: (on the event loop): then it shows the counts taken last.
STATUS_WAIT = 0.05
#: Seconds before the call's deadline a routing's lookup gives up on 1C: its own
#: error (naming 1C's URL) then reaches the decision, not the engine's cut-off.
#: Both are timers of the same event loop, so a few milliseconds order them;
#: each one more is a millisecond less for 1C's answer to still route the call
#: (should the loop be held past both, the engine's cut-off may come first:
#: the call is late all the same, only the line is the engine's).
DEADLINE_MARGIN = 0.01
#: The lookup's error while ``[plugins.onec]`` is absent.
NOT_CONFIGURED = "onec not configured: add a [plugins.onec] table to router.toml"


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
    "missed_owner",
    "missed_max_age",
    "missed_max_rows",
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
    #: Who owns a missed call nobody's manager owns: DID (normalized) or "*" -> extension.
    missed_owner: Mapping[str, str] = field(default_factory=dict)
    #: Open missed calls are forgotten after this long, and at most this many are kept.
    missed_max_age: float = MISSED_MAX_AGE
    missed_max_rows: int = MISSED_MAX_ROWS


def _now() -> datetime:
    return datetime.now(UTC)


#: Keys people write for "any number" in missed_owner; each gets a did-you-mean '*'.
#: What ``password_env`` holds: a variable's name, as ``[asterisk] secret_env``.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Said when ``password_env``'s variable is unset, without its name: a
#: password of letters, digits and ``_`` (``hunter``, ``QWERTY_123``) is as
#: valid a name as ``ONEC_PASSWORD``, so a name shown may be the password
#: pasted there (as ``router.config.env_unset``, which a plugin does not
#: import). The error's prefix names the file, the table and the key.
_ENV_UNSET = (
    "the environment variable it names is not set or empty (name not shown: it may be "
    "the password itself, pasted by mistake; if so, put the password in the environment "
    "and give the variable's name here)"
)


_ANY_WORDS = frozenset({"any", "all", "default", "other", "others", "else", "**", "?"})


def _missed_owner(reader: SettingsReader, rules: CountryRules) -> dict[str, str]:
    """``[plugins.onec.missed_owner]``: dialled number (or ``"*"``) -> owner's extension."""
    if not reader.has("missed_owner"):
        return {}
    table = reader.table("missed_owner")
    owners: dict[str, str] = {}
    first: dict[str, str] = {}
    for key, value in table.values.items():
        if key == ANY_DID:
            did = ANY_DID
        else:
            digits = normalize(key, rules).number
            if not digits or not any(ch.isdigit() for ch in key):
                hint = "; did you mean '*'?" if key.strip().lower() in _ANY_WORDS else ""
                raise table.error(
                    key, f"expected a dialled number (DID) or '*' for any number{hint}"
                )
            did = digits
        if not isinstance(value, str) or not (value.isascii() and value.isdigit()):
            raise table.error(
                key, f"expected the owner's extension as a string of digits, got {value!r}"
            )
        if did in first:
            raise table.error(key, f"the same number as {first[did]!r}: give each DID once")
        first[did] = key
        owners[did] = value
    return owners


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
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:  # "Invalid IPv6 URL" (an unclosed '['), a port not 0-65535
        raise reader.error(
            "url", f"expected http(s)://host[:port]/<publication>/hs/<root>, got {url!r} ({exc})"
        ) from None
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
        if _ENV_NAME.fullmatch(name) is None:
            # Most likely the password itself was pasted here: do not echo it.
            raise reader.error(
                "password_env",
                "expected the name of an environment variable (letters, digits and _), "
                "not the password itself (value not shown)",
            )
        value = environ.get(name)
        if not value:
            # An empty variable is a deployment mistake (an unset secret in a
            # unit file), not a 1C user without a password: say so at start.
            raise reader.error("password_env", _ENV_UNSET)
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
    from router import time_zone

    try:
        # As [plugins.timefuncs] timezone: a misspelled name, an abbreviation
        # ('MSK') or an offset ('UTC+3') says what to write.
        return time_zone(name)
    except ValueError as exc:
        raise reader.error("timezone", str(exc)) from None


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
    lines: Mapping[tuple[str, ...], int] | None = None,
) -> OneCConfig:
    """Validate ``[plugins.onec]``; raise :class:`ConfigError` naming the key.

    ``origin`` is the file the table came from (for messages), ``base`` the
    folder relative ``state_dir`` is taken from (the config file's, as for
    callrouter's own paths), ``lines`` where the file's keys are written
    (``Config.lines``: the messages then name the line too).
    """
    reader = SettingsReader(
        f"plugins.{NAME}",
        settings,
        {"": origin},
        base or Path.cwd(),
        lines=lines,
        path=("plugins", NAME),
    )
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
        missed_owner=_missed_owner(reader, rules),
        missed_max_age=reader.number("missed_max_age", MISSED_MAX_AGE, 0, 366 * 86400),
        missed_max_rows=reader.integer("missed_max_rows", MISSED_MAX_ROWS, 1, 10_000_000),
    )


# -- per-call facts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the lookup said about one call's customer, for every event of the call."""

    manager_id: str | None = None
    manager_extension: str | None = None
    client_id: str | None = None
    #: Nothing of this call goes to 1C: a rule refused the caller (or shadow mode).
    silent: bool = False
    #: The caller's number as the routing request had it.
    caller: str | None = None


_NO_FACTS = _Facts()
#: Calls whose facts are kept at most (the oldest are forgotten first)...
_FACTS_MAX = 20_000
#: ... and for at most this long (the engine forgets a call after 4 hours too).
_FACTS_TTL = 4 * 3600.0
#: Calls at most waiting for a lookup of their own at once; more get no ids.
_LOOKUPS_MAX = 200
#: Calls whose routing asked 1C and whose decision has not come yet, kept at
#: most; the oldest are forgotten first.
_ROUTING_MAX = 10_000
#: How long at most an event of such a call waits for the decision, then looks
#: the caller up. The engine's routing says when it is over (``RequestInfo.done``):
#: the decision came by then, or never comes (a call the engine's tracker does
#: not know at the routing's end), so the events go on at once; this bound is
#: for a request without that signal (another caller of the lookup).
_DECISION_WAIT = 15.0
#: For such a request only: once its call has ended (``callrouter_call_end``),
#: how long past the request's deadline its events still wait for the decision.
_END_GRACE = 1.0


#: Seconds between the summaries of calls not looked up (:class:`_NotLookedUp`).
NOT_LOOKED_UP_EVERY = 60.0


class _NotLookedUp:
    """Calls told to 1C without ids because their own lookup failed: the first
    at INFO, the rest of each minute at DEBUG and in one INFO summary with
    their count when the minute is over (then the next one is said again).

    With 1C down, every replayed or outbound call said its own INFO line: a
    replay after an hour's gap logged thousands.
    """

    def __init__(self, every: float = NOT_LOOKED_UP_EVERY) -> None:
        self.every = every
        #: Calls not looked up since the last line said at INFO.
        self.count = 0
        self.last = ""
        self._timer: asyncio.TimerHandle | None = None

    def said(self, call_id: str, reason: str) -> None:
        if self._timer is None:
            log.info(
                "onec: call %s was not looked up (%s); 1C gets its history without "
                "manager_id and client_id (more such calls within %.0f s are counted "
                "in one line)",
                call_id,
                reason,
                self.every,
            )
            self._timer = asyncio.get_running_loop().call_later(self.every, self.summary)
            return
        self.count += 1
        self.last = reason
        log.debug("onec: call %s was not looked up either (%s)", call_id, reason)

    def summary(self, *, again: bool = True) -> None:
        """The minute is over: the count of calls since the last line, if any."""
        self._timer = None
        if not self.count:
            return
        log.info(
            "onec: %d more calls were not looked up in the last %.0f s (the last: %s); "
            "1C gets their history without manager_id and client_id",
            self.count,
            self.every,
            self.last,
        )
        self.count = 0
        if again:
            self._timer = asyncio.get_running_loop().call_later(self.every, self.summary)

    def close(self) -> None:
        """The plugin stops: the count not said yet is said now."""
        if self._timer is not None:
            self._timer.cancel()
            self.summary(again=False)


@dataclass(slots=True)
class _Routing:
    """A call whose routing asked 1C: ``decided`` is set when its decision
    came (or will not); ``deadline`` is its request's (``time.monotonic()``);
    ``signalled``: the routing says when it is over (``RequestInfo.done``)."""

    deadline: float
    signalled: bool = False
    decided: asyncio.Event = field(default_factory=asyncio.Event)


def _facts_of(answer: Mapping[str, Any] | None) -> _Facts:
    manager_id, client_id = _ids(answer)
    return _Facts(manager_id, _manager_extension(answer), client_id)


def _responsible_answer(trace: Trace | None) -> Mapping[str, Any] | None:
    """The ``onec.responsible`` answer the rules saw: the matched rule's first."""
    if trace is None:
        return None
    return next(
        (value for value in trace.lookup_values(LOOKUP) if isinstance(value, Mapping)), None
    )


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


async def _say_undelivered(sender: HistorySender) -> None:
    """The shutdown's one count of the call events not delivered: those in the
    file (sent after the restart) and those still in memory, which a full or
    read-only folder kept out of it (the stop gives up on them: its ERRORs
    name the first and the total). It said "0 not delivered" just before those
    ERRORs, counting the file alone."""
    stored = await asyncio.to_thread(sender.queue.pending_count)
    waiting = sender.waiting
    if not waiting:
        log.info("onec: %d call events not delivered yet; sent after the restart", stored)
        return
    log.warning(
        "onec: %d call events not delivered yet: %d in %s, sent after the restart, and "
        "%d in memory never stored there (%s), given up at this stop; callrouter "
        "history replay rebuilds those from CEL",
        stored + waiting,
        stored,
        sender.queue.path,
        waiting,
        sender.store_failing or "the file is slow to write",
    )


#: The setting naming the plugin's own state folder.
_STATE_DIR_KEY: tuple[str, ...] = ("plugins", NAME, "state_dir")


def _check_own_state_dir(path: Path, where: str) -> None:
    """``[plugins.onec] state_dir``, made 0700 when missing; ConfigError when
    a user other than root and callrouter's could change what it holds: the
    queues are SQLite files opened by name (router/private_dir.py)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = private_dir_problem(path)
    if problem is not None:
        raise ConfigError(
            f"{where}: [plugins.onec] state_dir: {problem} "
            "(docs/security.md, Local users and files)"
        )


class OneCPlugin:
    """All of the plugin's state and hooks; one instance per engine process."""

    #: The plugin's name when registered as an object (a plugin author's test:
    #: ``engine_factory(rules, plugins=[make_plugin()], settings={"onec": ...})``),
    #: the entry point's, so its settings come from ``[plugins.onec]`` either way.
    __name__ = NAME

    def __init__(self) -> None:
        self.config: OneCConfig | None = None
        #: Where ``[plugins.onec] state_dir`` is written (``router.toml:17``).
        self._state_dir_where = "router.toml"
        #: ``[router] shadow`` as configured: ``run`` then opens no history file.
        self._shadow = False
        self.client: OneCClient | None = None
        self.cache: ResponsibleCache | None = None
        self.queue: HistoryQueue | None = None
        self.sender: HistorySender | None = None
        #: The plugin's metric families (``callrouter_metrics``), one engine's.
        self.metrics: OneCMetrics | None = None
        #: Last ping: True (answered), False (failed), None (not pinged yet).
        self.healthy: bool | None = None
        self._engine: EngineAPI | None = None
        #: What the lookup said per call id (monotonic time remembered, facts).
        self._facts: OrderedDict[str, tuple[float, _Facts]] = OrderedDict()
        #: Calls whose events wait for a lookup of their own, in arrival order.
        self._waiting: dict[str, list[CallEventLike]] = {}
        #: Calls whose routing asked 1C: set when their decision came.
        self._routing: OrderedDict[str, _Routing] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The calls' lookups of their own in flight (their events wait for them).
        self._lookups: set[asyncio.Task[Any]] = set()
        #: Calls whose own lookup failed: one INFO line, then a summary a minute.
        self._not_looked_up = _NotLookedUp()
        #: Recordings into 1C (callrouter_onec/recordings.py), when [recordings] is on.
        self.uploads: RecordingUploader | None = None
        #: Numbers the last warm-up could not refresh, 1C being unavailable: asked
        #: again after a ping 1C answers (:meth:`ping`), until a warm-up gets them.
        self.warmup_left: list[str] = []
        #: One warm-up at a time (the scheduled one, or the one after an outage).
        self._warming: asyncio.Lock | None = None
        self._warming_again = False

    # -- configure / register ----------------------------------------------------------

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        """Validate ``[plugins.onec]``; an absent table leaves the plugin inert."""
        if NAME not in config.plugins.settings:
            self.config = None
            return
        self._state_dir_where = config.where(*_STATE_DIR_KEY)
        self._shadow = config.router.shadow
        path = config.path
        self.config = parse_settings(
            settings,
            origin=str(path) if path is not None else "router.toml",
            base=path.parent if path is not None else None,
            lines=config.lines,
        )
        if "dial_context" in settings:
            # Accepted so that a file written for it still loads, but it does
            # nothing since 1C is told the extension that rang: check and run
            # said nothing, so the administrator kept a line they thought
            # picked the context 1C hears of (issue 16).
            log.warning(
                "%s: [plugins.%s] dial_context: no longer used (1C is told the extension "
                "that actually rang, wherever the call was sent); delete the line (docs/onec.md)",
                config.where("plugins", NAME, "dial_context"),
                NAME,
            )

    @hookimpl
    def callrouter_metrics(self, metrics: Metrics) -> None:
        """Breaker state and openings, stale answers, the history queue (metrics.py)."""
        self.metrics = OneCMetrics(
            metrics,
            breaker=lambda: self.cache.breaker.state.value if self.cache else None,
            queue=lambda: self.queue,
        )

    async def _queue_metrics(self) -> None:
        if self.metrics is not None and self.queue is not None:
            await self.metrics.recount_queue(self.queue)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        """The lookup and the notify target exist whether or not 1C is configured,
        so rules that use them validate on every installation."""
        registry.add_lookup(LOOKUP, self.lookup)
        registry.add_notify_target(NAME, "1C: call events (missed, ...) into 1C's call history")

    # -- the lookup ------------------------------------------------------------------------

    def lookup(
        self, number: str, request: RequestInfo | None = None
    ) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None:
        """1C: the client and responsible manager for a number.

        Returns the contract's answer as nested dicts ({"found": ..., "client":
        {"name": ...}, "manager": {"name": ..., "extension": "101"}}), or None
        for an internal or unusable number. Raises LookupUnavailable (the rule
        takes its fallback) when 1C gives no answer and nothing is cached.
        ``request`` is filled by callrouter (not the rule): the DID and call id
        1C logs with the question.
        """
        # What ``onec.responsible`` runs: a fresh cached answer as it is (most
        # calls; then routing spends no coroutine and no timer on 1C), anything
        # else as :meth:`responsible`'s awaitable (a lookup may be either).
        if request is not None and request.deadline is not None and request.linkedid:
            self._routed_here(request.linkedid, request.deadline, request.done)
        cache = self.cache
        if cache is not None:
            answer = cache.fresh(str(number))
            if answer is not None:
                return _answer(answer, None)
        return self.responsible(number, request)

    def _routed_here(
        self, call_id: str, deadline: float, done: asyncio.Future[None] | None = None
    ) -> None:
        """The rules routing call ``call_id`` ask 1C: its decision names the
        ids 1C is told, so an event of its life that comes before the decision
        (the caller hung up while the rules waited for 1C) waits for it rather
        than asking 1C itself (:meth:`_look_up_then_post`), until the routing
        is over (``done``): a decision that comes, comes before that."""
        if self.sender is None or call_id in self._routing:
            return
        if done is not None and done.done():
            return  # asked after its routing (a lookup's own task): nothing to wait for
        routing = _Routing(deadline, signalled=done is not None)
        self._routing[call_id] = routing
        while len(self._routing) > _ROUTING_MAX:
            self._routing.popitem(last=False)
        if done is not None:
            done.add_done_callback(lambda _: self._no_more_decision(call_id, routing))

    async def responsible(
        self, number: str, request: RequestInfo | None = None
    ) -> dict[str, Any] | None:
        """1C: the client and responsible manager for a number (:meth:`lookup`, awaited)."""
        cache = self.cache
        if cache is None:
            raise OneCUnavailable(
                NOT_CONFIGURED
                if self.config is None
                else "onec not started: the engine is not connected yet"
            )
        did = request.did or None if request is not None else None
        call_id = request.linkedid or None if request is not None else None
        deadline = request.deadline if request is not None else None
        if deadline is None:
            # The cache shields the shared request: cancelled, its answer
            # still lands in the cache.
            answer, stale = await cache.aged(str(number), did=did, call_id=call_id)
            return None if answer is None else _answer(answer, stale)
        # The plugin gives up just before the rule engine would cut it off at the
        # call's deadline, so the decision line says it was 1C, where, and why,
        # not "timed out after 3699 ms" with a WARNING blaming the plugin.
        wait = deadline - time.monotonic()
        try:
            answer, stale = await cache.aged(
                str(number), did=did, call_id=call_id, deadline=deadline - DEADLINE_MARGIN
            )
        except OneCCutOff:
            raise self._cut_off(str(number), wait) from None
        return None if answer is None else _answer(answer, stale)

    def _cut_off(self, number: str, wait: float) -> OneCCutOff:
        """What the decision line says when the call's deadline cut the lookup:
        the request's path (never a password: the URL has none), the wait, and
        whether ``timeout`` is what to change."""
        config, cache = self.config, self.cache
        key = normalize(number, cache.rules).number if cache is not None else number
        path = urllib.parse.urlsplit(config.client.base_url).path if config is not None else ""
        timeout = config.client.timeout if config is not None else 0.0
        message = (
            f"no answer from 1C to GET {path}/v1/responsible/{key} within the call's "
            f"remaining {max(wait, 0.0):.2f} s: the call's deadline cut the lookup off"
        )
        if timeout >= wait:
            message += (
                f"; [plugins.onec] timeout ({timeout:g} s) is at or above that wait: set it "
                "below the dialplan's wait for the decision (docs/onec.md, timeout)"
            )
        return OneCCutOff(message)

    # -- life cycle ------------------------------------------------------------------------

    @hookimpl
    def callrouter_state_conversions(self, state_dir: Path) -> list[str]:
        """What ``callrouter run`` would convert at start, for ``callrouter
        check``, read only: the history file from before event ids (milestone
        1's), converted by the start that opens it. Nothing when ``run`` would
        not open it (no ``[plugins.onec]``, ``events = false``, shadow mode)."""
        config = self.config
        if config is None or not config.events or self._shadow:
            return []
        line = history_conversion(Path(config.state_dir or state_dir))
        return [] if line is None else [line]

    @hookimpl
    async def callrouter_state_folders(self, shadow: bool) -> list[StateFolder]:
        """``[plugins.onec] state_dir``, made and checked, for the engine to lock
        before it logs in: a second router on it refuses with no AMI session
        opened. None of its own (the queues go to [router] state_dir, which
        the engine holds), or shadow mode (it writes no queue): nothing."""
        config = self.config
        if config is None or config.state_dir is None or shadow:
            return []
        await asyncio.to_thread(_check_own_state_dir, config.state_dir, self._state_dir_where)
        return [(config.state_dir, _STATE_DIR_KEY)]

    @hookimpl
    async def callrouter_startup(self, engine: EngineAPI) -> None:
        """Open the client, cache and history queue; schedule ping and warm-up."""
        self._engine = engine
        await self._close()  # a second engine in one process starts from scratch
        config = self.config
        if config is None:
            log.info("onec: no [plugins.onec] table; the plugin is inert")
            return
        if config.state_dir is not None and not engine.shadow:
            # Its own folder for the queues, held to what the engine holds
            # [router] state_dir to: no other user may change what it holds.
            await asyncio.to_thread(
                _check_own_state_dir,
                config.state_dir,
                engine.config.where(*_STATE_DIR_KEY),
            )
            # Locked as callrouter run locks [router] state_dir: two routers
            # with folders of their own but this one in common would both
            # write its queue (a restore into it is refused meanwhile). The
            # engine locked it already before its login (callrouter_state_folders):
            # this is for one that did not ask (an embedder's, StubEngine).
            await asyncio.to_thread(engine.hold_state_folder, config.state_dir, _STATE_DIR_KEY)
        self.client = OneCClient(config.client)
        self.cache = ResponsibleCache(
            self.client,
            positive_ttl=config.positive_ttl,
            negative_ttl=config.negative_ttl,
            stale_ttl=config.stale_ttl,
            failure_threshold=config.failure_threshold,
            open_seconds=config.open_seconds,
            rules=config.rules,
            on_stale=self.metrics.stale if self.metrics is not None else None,
            on_open=self.metrics.opened if self.metrics is not None else None,
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
                missed_max_age=config.missed_max_age,
                missed_max_rows=config.missed_max_rows,
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
            if self.metrics is not None:
                engine.schedule("onec:metrics", self._queue_metrics, every=QUEUE_RECOUNT)
            pending = await asyncio.to_thread(self.queue.pending_count)
            if pending:
                log.info("onec: %d call events left by the last run; sending them", pending)
        if not engine.shadow:
            self.uploads = await start_uploads(
                engine,
                config.client,
                config.state_dir,
                retry_min=config.events_retry_min,
                retry_max=config.events_retry_max,
            )
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
        """Deliver what 1C can take now (bounded), then close; the rest stays on disk.

        The events of calls still waiting for their own lookup are not in the
        queue yet: the drain waits for those lookups first, within the same
        ``drain_timeout``. It drained an empty queue at once, and `callrouter
        history replay`, whose calls all wait so, delivered none of them (issue 16).
        """
        sender, config = self.sender, self.config
        try:
            if (
                sender is not None
                and config is not None
                and config.drain_timeout
                and sender.failures == 0
                and self.healthy is not False
                and sender.running
            ):
                end = time.monotonic() + config.drain_timeout
                lookups = [task for task in self._lookups if not task.done()]
                if lookups:
                    await asyncio.wait(lookups, timeout=config.drain_timeout)
                if not await sender.drain(max(0.0, end - time.monotonic())):
                    await _say_undelivered(sender)
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
        self._facts.clear()
        self._waiting.clear()
        self._routing.clear()
        self._not_looked_up.close()
        sender, self.sender = self.sender, None
        queue, self.queue = self.queue, None
        cache, self.cache = self.cache, None
        client, self.client = self.client, None
        uploads, self.uploads = self.uploads, None
        steps: list[tuple[str, Any]] = [
            ("recordings uploader", (lambda: close_uploads(uploads)) if uploads else None),
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        if self.warmup_left and not self._warming_again:
            # A warm-up met 1C down: the numbers it could not refresh go now, one
            # at a time as ever, and never beside another warm-up.
            self._warming_again = True
            self._spawn(self._warm_again())
        return True

    async def warm_up(self) -> int:
        """Refresh the configured numbers, or the most frequent recent callers;
        returns how many of them are done (1C answered, or nothing to ask)."""
        cache, config = self.cache, self.config
        if cache is None or config is None:
            return 0
        numbers = list(config.warmup_numbers)
        if not numbers and self.queue is not None:
            numbers = await asyncio.to_thread(self.queue.frequent_callers, config.warmup_count)
        return await self._warm(numbers, again=False)

    async def _warm_again(self) -> None:
        try:
            await self._warm(None, again=True)
        finally:
            self._warming_again = False

    async def _warm(self, numbers: list[str] | None, *, again: bool) -> int:
        """Warm ``numbers`` (None: what the last warm-up left, read once it is done)."""
        cache, config = self.cache, self.config
        if cache is None or config is None:
            return 0
        if self._warming is None:
            self._warming = asyncio.Lock()
        async with self._warming:
            if numbers is None:
                numbers = list(self.warmup_left)
                if not numbers:
                    return 0  # a scheduled run got them meanwhile
            left = await cache.warm(numbers)
            # A scheduled run's numbers replace what an earlier one left.
            self.warmup_left = left
        done = len(numbers) - len(left)
        what = "warm-up after 1C came back" if again else "warm-up"
        if not left:
            log.info("onec: %s asked 1C about %d numbers", what, len(numbers))
        else:
            log.warning(
                "onec: %s: 1C unavailable, %d of %d numbers not refreshed; %s",
                what,
                len(left),
                len(numbers),
                "asked again after a ping 1C answers"
                if config.ping_interval
                else "asked at the next scheduled warm-up (ping_interval is 0)",
            )
        return done

    def status(self) -> dict[str, Any]:
        """A snapshot for status pages and tests."""
        return {
            "configured": self.config is not None,
            "started": self.cache is not None,
            "healthy": self.healthy,
            "breaker": self.cache.breaker.state.value if self.cache is not None else None,
            # Asked on the event loop: a bounded wait, not the whole of a
            # file copy (HistoryQueue.put_back holds the queue meanwhile).
            "events": self.queue.counts(wait=STATUS_WAIT) if self.queue is not None else {},
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

    @hookimpl
    def callrouter_decision(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        """Remember what 1C's lookup said about the caller; a refused caller stays silent.

        The history itself comes from the call's life (:meth:`callrouter_call_event`),
        whatever route the call took; the decision only adds the manager and client
        the rules were told about, so 1C need not be asked twice. A ``hangup`` rule
        (a blacklist) refused the caller: nothing of that call goes to 1C, not even
        a missed call (nobody is to call them back).
        """
        try:
            self._decided(call, decision, trace, outcome)
        finally:
            routing = self._routing.pop(call.linkedid, None)
            if routing is not None:
                routing.decided.set()  # its events waiting for these facts go on

    @hookimpl
    def callrouter_call_end(self, call: Call) -> None:
        """A call whose routing asked 1C ended. The engine's routing says when it
        is over (:meth:`_no_more_decision`); for a request that does not, its
        events wait for the decision until :data:`_END_GRACE` past the
        request's deadline, no longer (not the whole :data:`_DECISION_WAIT`)."""
        routing = self._routing.get(call.linkedid)
        if routing is not None and not routing.signalled:
            wait = max(0.0, routing.deadline - time.monotonic()) + _END_GRACE
            self._spawn(self._give_up_on_decision(call.linkedid, routing, wait))

    async def _give_up_on_decision(self, call_id: str, routing: _Routing, wait: float) -> None:
        await asyncio.sleep(wait)
        self._no_more_decision(call_id, routing)

    def _no_more_decision(self, call_id: str, routing: _Routing) -> None:
        """The routing is over and its decision did not come (a call the
        engine's tracker did not know at its end: it ended before its events
        were read, or was never tracked): its events go on now, the caller
        looked up, rather than after :data:`_DECISION_WAIT`. A no-op for one
        whose decision came (that removed it and set ``decided`` already)."""
        if self._routing.get(call_id) is routing:
            del self._routing[call_id]
        routing.decided.set()

    def _decided(
        self, call: Call, decision: Decision | None, trace: Trace | None, outcome: RouteOutcome
    ) -> None:
        if self.sender is None:
            return
        known = self._recall(call.linkedid)
        if known is not None and known.silent:
            return
        actions = decision.actions if outcome == "executed" and decision is not None else ()
        if outcome == "shadow" or any(action.kind == "hangup" for action in actions):
            self._remember(call.linkedid, _Facts(silent=True))
            return
        facts = _facts_of(_responsible_answer(trace))
        self._remember(call.linkedid, replace(facts, caller=call.caller_number or None))

    @hookimpl
    def callrouter_wants_call_events(self) -> bool:
        """Told the call life only when it sends 1C the call history: without a
        ``[plugins.onec]`` table, or with ``events = false``, the engine need
        not follow CEL for this plugin (about 7 % of a core at 100 calls/s)."""
        return self.config is not None and bool(self.config.events)

    @hookimpl
    def callrouter_call_event(self, event: CallEventLike) -> None:
        """One fact of a call's life, live or replayed, into the history queue.

        Runs on the event loop for every event: only dictionary work here, the
        SQLite write happens on the history's own thread. A call nobody looked up
        (outbound, or routed while callrouter was down and now replayed) gets one
        lookup of its own first (cached, bounded, skipped while 1C's breaker is
        open); its events wait for it in order.
        """
        if self.sender is None or self.config is None:
            return
        try:
            waiting = self._waiting.get(event.call_id)
            if waiting is not None:
                waiting.append(event)
                return
            facts = self._recall(event.call_id)
            number = customer_number(event, self.config.rules)
            if (
                facts is None
                and number is not None
                and self.cache is not None
                and len(self._waiting) < _LOOKUPS_MAX
            ):
                self._waiting[event.call_id] = [event]
                lookup = self._spawn(self._look_up_then_post(event.call_id, number, event.did))
                self._lookups.add(lookup)
                lookup.add_done_callback(self._lookups.discard)
                return
            if facts is None and number is not None:
                # Too many lookups at once: this call goes without ids, all its events.
                facts = _NO_FACTS
                self._remember(event.call_id, facts)
            self._post(event, facts or _NO_FACTS)
        except Exception:
            log.exception("onec: could not queue %s of call %s", event.kind, event.call_id)

    async def _look_up_then_post(self, call_id: str, number: str, did: str | None) -> None:
        facts = _NO_FACTS
        cache, config = self.cache, self.config
        try:
            routing = self._routing.get(call_id)
            if routing is not None:
                # This router routes the call: its decision names the ids (or
                # none, as for a caller who hung up while 1C was asked), so
                # the history does not depend on which came first.
                # Not wait_for: a cancellation (the plugin stopping) in the step
                # the decision came in was swallowed, and the lookup went on.
                await wait_set(routing.decided, _DECISION_WAIT)
                if self._recall(call_id) is not None:
                    return
            if cache is not None and config is not None:
                bound = max(1.0, 2 * config.client.timeout)
                answer = await asyncio.wait_for(
                    cache.lookup(number, did=did or None, call_id=call_id), bound
                )
                facts = _facts_of(answer.as_dict() if answer is not None else None)
        except (OneCError, TimeoutError) as exc:
            self._not_looked_up.said(call_id, str(exc) or type(exc).__name__)
        except Exception:
            log.exception("onec: looking up call %s failed", call_id)
        finally:
            events = self._waiting.pop(call_id, [])
            known = self._recall(call_id)  # a decision may have come meanwhile
            facts = known if known is not None else facts
            self._remember(call_id, facts)
            for event in events:
                try:
                    self._post(event, facts)
                except Exception:
                    log.exception("onec: could not queue %s of call %s", event.kind, call_id)

    def _post(self, event: CallEventLike, facts: _Facts) -> None:
        sender, config = self.sender, self.config
        if sender is None or config is None or facts.silent:
            return
        if event.kind not in KINDS:
            log.debug("onec: call event %r of call %s is not history", event.kind, event.call_id)
            return
        if event.kind == "hangup" and event.direction == "in" and event.status != "ANSWER":
            return  # its ``missed`` (one per such call) tells 1C the end, with an owner
        rules = config.rules
        known = facts.caller if facts.caller and event.direction == "in" else None
        owner = None
        if event.kind == "missed":
            did = normalize(event.did, rules).number or event.did if event.did else None
            owner = owner_of(facts.manager_id, facts.manager_extension, did, config.missed_owner)
        payload = call_event_payload(
            event,
            rules=rules,
            tz=config.timezone,
            manager_id=facts.manager_id,
            client_id=facts.client_id,
            owner=owner,
            caller=known,
        )
        if self.uploads is not None and event.kind in ("hangup", "missed"):
            payload["recording_url"] = self.uploads.link_for(event.call_id)
        number = customer_number(event, rules, known)
        fact = None
        if number is not None and event.kind == "missed" and event.direction == "in":
            fact = MissedFact(number, event.started_at or event.at)
        elif number is not None and event.kind == "answered":
            fact = MissedFact(number, event.answered_at or event.at)
        sender.submit_call_event(payload, fact)

    def _remember(self, call_id: str, facts: _Facts) -> None:
        self._facts[call_id] = (time.monotonic(), facts)
        self._facts.move_to_end(call_id)
        while len(self._facts) > _FACTS_MAX:
            self._facts.popitem(last=False)

    def _recall(self, call_id: str) -> _Facts | None:
        found = self._facts.get(call_id)
        if found is None:
            return None
        if time.monotonic() - found[0] > _FACTS_TTL:
            del self._facts[call_id]
            return None
        return found[1]

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
        rules = self.config.rules if self.config else RUSSIA
        if call is not None:
            facts = self._recall(call.linkedid)
            if facts is None or not facts.silent:
                # The call's own life tells 1C everything about it, once: a rule's
                # notify (a leg's "no answer" mid-call) must not add a second story.
                log.debug(
                    "onec: notify %s for call %s left to the call's own history",
                    kind,
                    call.linkedid,
                )
                return
            # A refused caller is silent unless a rule asks for this event itself.
            now = _now()
            record = CallRecord(
                call_id=call.linkedid,
                direction="in",
                from_number=party(call.caller_number, rules) or ANONYMOUS,
                to_number=party(call.did, rules) or "unknown",
                started_at=now,
                extension=params.get("extension") or None,
                ended_at=now if kind in ("hangup", "missed") else None,
            )
            payload = build_event(
                event_kind, record, tz=self.config.timezone if self.config else None
            )
            payload["event_id"] = f"{call.linkedid}/notify/{kind}"
            try:
                sender.submit(payload)
            except Exception:
                log.exception("onec: could not queue notify %s", dict(params))
            return
        number = params.get("number", "")
        now = _now()
        # The call id is made of what 1C is told of the number (up to 32 characters):
        # the whole of a long one went over the contract's 64, and 1C refused the event.
        caller = party(number, rules) or ANONYMOUS
        record = CallRecord(
            call_id=params.get("call_id") or f"notify-{caller}-{int(now.timestamp())}",
            direction="in",
            from_number=caller,
            to_number=party(params.get("to"), rules) or "",
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


def _answer(answer: Responsible, stale: float | None) -> dict[str, Any]:
    """The lookup's answer for rules: the contract's fields, and ``stale``, the
    age in whole seconds of an answer served from an expired cache entry while
    1C is asked again (``None`` for a fresh one; the decision line says
    ``stale 412 s``, and ``callrouter_onec_stale_answers_total`` counts it)."""
    shown = answer.as_dict()
    shown["stale"] = None if stale is None else int(stale)
    return shown


def make_plugin() -> OneCPlugin:
    """The entry point's factory: one plugin (client, cache, history) per engine."""
    return OneCPlugin()
