"""What callrouter counts, for ``/metrics`` (Prometheus text format).

Each engine owns one :class:`Metrics` on its own ``CollectorRegistry``, never
prometheus-client's global one: tests and the demo run several engines in one
process, and a family registered twice would collide. Everything that counts
(the router, the engine, the API, plugins through ``callrouter_metrics``)
writes into that one object; the API listener serves its registry.

Labels never carry caller data: a rule's or a lookup's name comes from the
administrator's files and the plugins, and :class:`BoundedLabel` still folds
anything past a cap into ``other``, so a rule directory with thousands of
generated rules cannot blow up a Prometheus server. Event names are the ones
Asterisk's catalog documents; any other name counts as ``other``.

The routing path pays for a decision with a few dictionary lookups and
counter increments (docs/operations.md has the measured figure); children of
labelled families are cached here so the hot path does not go through
prometheus-client's label lock and validation for every event.

The reference of every family is docs/operations.md ("Metrics reference");
tests/unit/test_metrics_docs.py keeps it in step with :func:`families`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "API_RATE_LIMITS",
    "CONTENT_TYPE",
    "OTHER",
    "BoundedLabel",
    "Metrics",
    "QueueGauge",
    "exposition",
    "families",
]

#: The label value anything past a cap (or unknown) is folded into.
OTHER: Final = "other"
#: Labels a family may hold per label name before the rest count as ``other``.
LABEL_CAP: Final = 200
_LABEL_LENGTH: Final = 64
_NAME = re.compile(r"callrouter_[a-z][a-z0-9_]{0,80}")
_LABEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")

#: Seconds buckets for the request -> confirmed Redirect latency (a call waits 4 s).
DECISION_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Seconds buckets for rule evaluation and lookups (1C answers in tens of ms).
#: The last one is the shipped dialplan's wait: what was cut at a call's
#: deadline (3.7 s) still counts in a finite bucket, not in +Inf only.
LOOKUP_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 4.0)

#: Why a call took the dialplan's default route (``callrouter_fallthroughs_total``).
FALLTHROUGH_CAUSES: Final = ("no-rule", "late", "failed", "down")
#: Outcomes that send the call to the default route, and the cause each counts as.
_FALLS: Final = {"fell-through": "no-rule", "late": "late", "failed": "failed"}

#: What a 429 the API's listener answers before the app was over
#: (``callrouter_api_rate_limited_total``'s ``limit``): a bearer token's rate,
#: the live page's token's rate, and ``[api] anonymous_rate``'s buckets (a
#: client address, an IPv6 /48, a recording's signed link, the overflow
#: bucket addresses past ``anonymous_addresses`` share).
API_RATE_LIMITS: Final = ("token", "page", "address", "ipv6_48", "link", "overflow")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class BoundedLabel:
    """A label's values, capped: the first ``cap`` distinct values pass, the rest are ``other``.

    Values are cut to 64 characters; the empty string becomes ``-``.
    """

    __slots__ = ("_cap", "_seen")

    def __init__(self, cap: int = LABEL_CAP, known: Iterable[str] = ()) -> None:
        self._cap = cap
        self._seen: set[str] = set(known)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        value = value[:_LABEL_LENGTH] or "-"
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value


class QueueGauge:
    """One durable queue's depth and oldest item, as its owner last saw them.

    The owner calls :meth:`update` when it knows (after a batch, from a timed
    job), or hands :meth:`set_function` a reader of what it keeps in memory,
    called at each scrape: reading a queue's file at scrape time would block
    the event loop. The age is computed at scrape, so it grows between
    updates as it should.
    """

    __slots__ = ("_clock", "_depth", "_oldest", "_read", "name")

    def __init__(self, name: str, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._depth = 0
        self._oldest: float | None = None
        self._read: Callable[[], tuple[int, float | None]] | None = None
        self._clock = clock

    def update(self, depth: int, oldest: float | None) -> None:
        self._depth = depth
        self._oldest = oldest if depth > 0 else None

    def set_function(self, read: Callable[[], tuple[int, float | None]] | None) -> None:
        """Read ``(depth, oldest)`` from ``read`` at each scrape instead of the
        last :meth:`update` (None: back to those). It runs in the worker thread
        that renders ``/metrics`` (router/api/metrics.py), beside the event
        loop: a count the owner keeps in memory and replaces in one
        assignment, never a file or a lock held for I/O."""
        self._read = read

    def current(self) -> tuple[int, float | None]:
        """The depth and the Unix time the oldest item was queued (None when empty)."""
        if self._read is None:
            return self._depth, self._oldest
        depth, oldest = self._read()
        return depth, oldest if depth > 0 else None

    @property
    def depth(self) -> int:
        return self.current()[0]

    @property
    def oldest(self) -> float | None:
        """Unix time the oldest item was queued; None when the queue is empty."""
        return self.current()[1]

    def age(self) -> float:
        return self.scraped()[1]

    def scraped(self) -> tuple[int, float]:
        """The depth and the oldest item's age in seconds (0 when empty), read once."""
        depth, oldest = self.current()
        return depth, 0.0 if oldest is None else max(0.0, self._clock() - oldest)


class _Callbacks(Collector):
    """Families read when scraped: live calls, AMI sessions, readiness, queues."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        values = (
            ("callrouter_calls_active", "Calls (Linkedids) the engine tracks now.", m.calls_active),
            (
                "callrouter_ready",
                "1 while /readyz answers 200 (logged in, stream current, rules loaded).",
                lambda: 1.0 if m.ready() else 0.0,
            ),
        )
        for name, documentation, read in values:
            family = GaugeMetricFamily(name, documentation)
            family.add_metric([], float(read()))
            yield family
        logins = CounterMetricFamily(
            "callrouter_ami_logins",
            "AMI logins of this process, the first and every re-login (a reconnect).",
        )
        logins.add_metric([], float(m.sessions()))
        yield logins
        refused = CounterMetricFamily(
            "callrouter_events_refused",
            "AMI events and channel listing items not tracked: an identity field longer "
            "than Asterisk sends (a broken or hostile AMI peer).",
        )
        refused.add_metric([], float(m.events_refused()))
        yield refused
        skipped = CounterMetricFamily(
            "callrouter_events_skipped",
            "AMI events of this process skipped for a line over 64 KiB (no Asterisk sends "
            "one: a broken or hostile AMI peer); an event list's closing event is kept "
            "without that line, and counted.",
        )
        skipped.add_metric([], float(m.events_skipped()))
        yield skipped
        events = CounterMetricFamily(
            "callrouter_events",
            "AMI events received by name (names Asterisk does not document count as 'other').",
            labels=["name"],
        )
        for name, count in sorted(dict(m.event_counts).items()):
            events.add_metric([name], float(count))
        yield events
        depth = GaugeMetricFamily(
            "callrouter_queue_depth", "Items waiting in a durable queue.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "callrouter_queue_oldest_seconds",
            "Age of the oldest item waiting in a durable queue (0 when empty).",
            labels=["queue"],
        )
        for queue in tuple(m.queues.values()):
            waiting, age = queue.scraped()
            depth.add_metric([queue.name], float(waiting))
            oldest.add_metric([queue.name], age)
        yield depth
        yield oldest


class Metrics:
    """One engine's metrics: the built-in families and a factory for plugins' own.

    Plugins get this object in ``callrouter_metrics(metrics)`` and create
    their families with :meth:`counter`, :meth:`gauge`, :meth:`histogram` or
    :meth:`queue`; code in ``router`` (call life, recordings, transports)
    reaches it as ``engine.metrics`` and does the same.
    """

    def __init__(self, *, event_names: Iterable[str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "callrouter_decisions",
            "Routing decisions by the first matched rule ('-' when none) and outcome.",
            ["rule", "outcome"],
            registry=r,
        )
        self.fallthroughs = Counter(
            "callrouter_fallthroughs",
            "Calls sent to the dialplan's default route by cause: no-rule, late, failed, "
            "down (fell through while callrouter was stopped; counted by the reconcile at start).",
            ["cause"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "callrouter_decision_seconds",
            "Executed decisions: request UserEvent to the confirming Newexten, "
            "both on Asterisk's clock.",
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.evaluate_seconds = Histogram(
            "callrouter_evaluate_seconds",
            "Rule evaluation time of a routing request, lookups included.",
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        self.lookup_seconds = Histogram(
            "callrouter_lookup_seconds",
            "Lookup time by lookup (answers reused from an earlier rule of the call not included).",
            ["lookup"],
            buckets=LOOKUP_BUCKETS,
            registry=r,
        )
        self.lookups = Counter(
            "callrouter_lookups",
            "Lookups asked by rules, by lookup and outcome: ok, error, reused.",
            ["lookup", "outcome"],
            registry=r,
        )
        self.park_waits = Counter(
            "callrouter_park_waits",
            "Decisions by whether their channel was seen in Wait before the "
            "Redirect (router/parking.py): at-once, waited, missed (not within 250 ms: "
            "sent anyway), blind (not waited for after misses in a row), unwatched.",
            ["outcome"],
            registry=r,
        )
        self.stream_gaps = Counter(
            "callrouter_stream_gaps",
            "Event stream gaps by reason: reconnect (Asterisk unreachable), session (re-login), "
            "overflow (events dropped: callrouter fell behind).",
            ["reason"],
            registry=r,
        )
        self.reconciles = Counter(
            "callrouter_reconciles",
            "Reconciles with the channel listing, by trigger (start, gap, takeover: a standby "
            "took over from a live instance that went silent) and result (ok, failed).",
            ["trigger", "result"],
            registry=r,
        )
        self.reconcile_routed = Counter(
            "callrouter_reconcile_routed",
            "Waiting calls found by a reconcile and submitted for routing.",
            registry=r,
        )
        self.rule_reloads = Counter(
            "callrouter_rule_reloads",
            "Rule reloads by result: ok, refused (a file had errors; previous rules kept), "
            "failed (loading crashed; previous rules kept), unchanged (the files were "
            "byte for byte those of the rules in use; nothing reloaded).",
            ["result"],
            registry=r,
        )
        self.rules_loaded = Gauge(
            "callrouter_rules_loaded", "Rules in the rule set in use.", registry=r
        )
        self.dialplan_problems = Gauge(
            "callrouter_dialplan_problems",
            "What the last check of Asterisk's dialplan (at start, after each reload) "
            "found that loses calls: a broken inbound context, rule targets the "
            "dialplan lacks; -1 when it could not be read.",
            registry=r,
        )
        self.call_events = Counter(
            "callrouter_call_events",
            "Call life events (router/calllife, from CEL) told to plugins, by kind and "
            "whether they were replayed after a gap.",
            ["kind", "replayed"],
            registry=r,
        )
        self.api_requests = Counter(
            "callrouter_api_requests",
            "HTTP API requests by operation and status code.",
            ["operation", "status"],
            registry=r,
        )
        self.api_rate_limited = Counter(
            "callrouter_api_rate_limited",
            "HTTP API requests answered 429 by the listener before the app (not in "
            "callrouter_api_requests_total), by the limit they were over.",
            ["limit"],
            registry=r,
        )
        self.presence_incomplete = Counter(
            "callrouter_presence_incomplete",
            "GET /api/v1/presence answers built from an AMI list whose closing event "
            "never came (complete false), by list.",
            ["list"],
            registry=r,
        )
        #: Durable queues by name (``callrouter_queue_depth{queue=...}``).
        self.queues: dict[str, QueueGauge] = {}
        #: Read when scraped; the engine sets them.
        self.calls_active: Callable[[], float] = lambda: 0.0
        self.sessions: Callable[[], float] = lambda: 0.0
        #: The call tracker's ``refused`` (router.calls.CallTracker.refuses).
        self.events_refused: Callable[[], float] = lambda: 0.0
        #: Events skipped for a line too long (router.ami.protocol.LONG_LINES).
        self.events_skipped: Callable[[], float] = lambda: 0.0
        self.ready: Callable[[], bool] = lambda: False
        # Fixed label sets start at 0, so a dashboard or a Zabbix item sees the
        # series before the first time it happens.
        for cause in FALLTHROUGH_CAUSES:
            self.fallthroughs.labels(cause)
        for reason in ("reconnect", "session", "overflow"):
            self.stream_gaps.labels(reason)
        for trigger in ("start", "gap", "takeover"):
            for result in ("ok", "failed"):
                self.reconciles.labels(trigger, result)
        for result in ("ok", "refused", "failed", "unchanged"):
            self.rule_reloads.labels(result)
        for listed in ("ExtensionStateList", "DeviceStateList"):
            self.presence_incomplete.labels(listed)
        #: ``callrouter_api_rate_limited_total`` by limit: a fixed set, never a
        #: token's name or an address (a flood would make a series of each).
        self._limited_children = {
            limit: self.api_rate_limited.labels(limit) for limit in API_RATE_LIMITS
        }
        self.rule_label = BoundedLabel()
        self.lookup_label = BoundedLabel()
        self.operation_label = BoundedLabel()
        if event_names is None:
            from router.ami.catalog import load_catalog

            event_names = load_catalog().events
        #: Documented event names, lowercased: Asterisk's catalog spells some
        #: differently from the wire (``NewExten`` documented, ``Newexten`` sent).
        self._event_names = frozenset(name.lower() for name in event_names)
        self._spelling: dict[str, str] = {}
        #: AMI events by label: plain integers, not prometheus-client counters,
        #: whose lock would cost each of a call's dozen events a microsecond.
        self.event_counts: dict[str, int] = {}
        self._event_labels: dict[str, str] = {}
        self._decision_children: dict[tuple[str, str], Any] = {}
        #: ``callrouter_park_waits_total`` by outcome (five at most).
        self._park_children: dict[str, Any] = {}
        self._lookup_children: dict[tuple[str, bool, bool], tuple[Any, Any]] = {}
        r.register(_Callbacks(self))

    # -- the factory for plugins and other parts ---------------------------------------

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A new counter family on this engine's registry; ``name`` without ``_total``."""
        return Counter(_checked(name, labels), documentation, list(labels), registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(_checked(name, labels), documentation, list(labels), registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LOOKUP_BUCKETS,
    ) -> Histogram:
        return Histogram(
            _checked(name, labels),
            documentation,
            list(labels),
            buckets=tuple(buckets),
            registry=self.registry,
        )

    def queue(self, name: str) -> QueueGauge:
        """The depth and oldest age of the durable queue ``name`` (``onec_history``,
        ``recordings``); the same object for the same name."""
        if not _LABEL_NAME.fullmatch(name):
            raise ValueError(f"queue name {name!r}: lowercase letters, digits and '_'")
        return self.queues.setdefault(name, QueueGauge(name))

    # -- what the core counts ----------------------------------------------------------

    def event(self, name: str) -> None:
        """One AMI event received (the hot path: one dictionary update)."""
        label = self._event_labels.get(name)
        if label is None:
            key = name.lower()
            # One label per documented event, spelled as Asterisk first sent it.
            label = self._spelling.setdefault(key, name) if key in self._event_names else OTHER
            if len(self._event_labels) < 4 * LABEL_CAP:
                self._event_labels[name] = label
        counts = self.event_counts
        counts[label] = counts.get(label, 0) + 1

    def decided(
        self,
        rules: Sequence[str],
        outcome: str,
        *,
        evaluate_seconds: float | None,
        asterisk_seconds: float | None,
        lookups: Iterable[Any] = (),
        moved: bool = False,
    ) -> None:
        """One routing decision: its rule and outcome, its latencies, its lookups.

        ``asterisk_seconds`` is the request -> confirming ``Newexten`` time on
        Asterisk's clock (executed decisions only); ``lookups`` the trace's
        ``LookupTrace`` objects (``lookup``, ``ms``, ``error``, ``reused``).
        ``moved``: an action took the call away (a confirmed redirect beside a
        refused setvar): a ``failed`` decision, but no fallthrough.
        """
        key = (rules[0] if rules else "-", outcome)
        child = self._decision_children.get(key)
        if child is None:
            child = self.decisions.labels(self.rule_label(key[0]), outcome)
            if len(self._decision_children) < 4 * LABEL_CAP:
                self._decision_children[key] = child
        child.inc()
        cause = _FALLS.get(outcome)
        if cause is not None and not moved:
            self.fallthroughs.labels(cause).inc()
        if evaluate_seconds is not None:
            self.evaluate_seconds.observe(evaluate_seconds)
        if asterisk_seconds is not None and asterisk_seconds >= 0:
            self.decision_seconds.observe(asterisk_seconds)
        for lookup in lookups:
            name = str(getattr(lookup, "lookup", "") or lookup.name)
            reused = bool(getattr(lookup, "reused", False))
            failed = getattr(lookup, "error", None) is not None
            children = self._lookup_children.get((name, reused, failed))
            if children is None:
                label = self.lookup_label(name)
                outcome = "reused" if reused else ("error" if failed else "ok")
                children = (self.lookups.labels(label, outcome), self.lookup_seconds.labels(label))
                if len(self._lookup_children) < 4 * LABEL_CAP:
                    self._lookup_children[(name, reused, failed)] = children
            children[0].inc()
            if not reused:
                children[1].observe(float(getattr(lookup, "ms", 0.0)) / 1000)

    def parked(self, outcome: str) -> None:
        """How a decision found its channel's ``Wait`` step (router/parking.py):
        once per routed call, so its counter children are kept."""
        child = self._park_children.get(outcome)
        if child is None:
            child = self._park_children[outcome] = self.park_waits.labels(outcome)
        child.inc()

    def fell_while_down(self, count: int = 1) -> None:
        self.fallthroughs.labels("down").inc(count)

    def api_request(self, operation: str, status: int) -> None:
        self.api_requests.labels(self.operation_label(operation or "-"), str(status)).inc()

    def api_limited(self, limit: str) -> None:
        """A ``429`` the API's listener answered before the app (no audit line,
        no ``callrouter_api_requests_total``): ``limit`` one of
        :data:`API_RATE_LIMITS`; anything else counts as ``other``."""
        child = self._limited_children.get(limit)
        if child is None:
            child = self._limited_children.setdefault(OTHER, self.api_rate_limited.labels(OTHER))
        child.inc()


def _checked(name: str, labels: Sequence[str]) -> str:
    if not _NAME.fullmatch(name) or name.endswith("_total"):
        raise ValueError(
            f"metric name {name!r}: 'callrouter_<plugin>_<what>', lowercase, "
            "without '_total' (counters get it added)"
        )
    for label in labels:
        if not _LABEL_NAME.fullmatch(label):
            raise ValueError(f"metric {name}: label name {label!r}: lowercase letters and '_'")
    return name


def exposition(metrics: Metrics) -> bytes:
    """The registry in Prometheus text format (what ``/metrics`` answers)."""
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry)


def families(metrics: Metrics) -> Iterator[tuple[str, str]]:
    """Every family the registry holds: (name as exposed, type)."""
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        yield name, family.type
