"""Answers from 1C on a latency budget: a call must never wait for a slow 1C.

A fresh answer is served from memory; a stale one is served at once while a
background request refreshes it (stale-while-revalidate), because last hour's
manager is a far better route than the fallback; concurrent lookups of one
number share one request; and after ``failure_threshold`` failures in a row
the circuit breaker stops asking 1C for ``open_seconds``, so a dead 1C costs
callers nothing, then lets a single probe through (half-open).

``clock`` (injectable for tests) drives TTLs and the breaker. Deadlines are
absolute :func:`time.monotonic` values, shared with the engine (``monotonic``
is injectable for tests too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from callrouter_onec.errors import OneCBadRequest, OneCCutOff, OneCUnavailable
from callrouter_onec.models import Responsible
from callrouter_onec.phone import RUSSIA, CountryRules, normalize

__all__ = [
    "BreakerState",
    "BreakerTicket",
    "CircuitBreaker",
    "ResponsibleCache",
    "ResponsibleSource",
    "ringable",
]

log = logging.getLogger(__name__)

#: What no ``[router] location_pattern`` lets through: router.dialplan's fixed
#: floor (printable ASCII without space and the characters Asterisk parses as
#: syntax; the length is the pattern's) and the extensions Asterisk runs itself. Plugins may not
#: import router.dialplan; tests/unit/test_onec_location_floor.py checks the two agree.
_NEVER_IN_LOCATION = frozenset(",&|;:()[]{}$^\"'`\\@/<>=!?%~")
_RUN_BY_ASTERISK = frozenset({"h", "i", "t", "T", "e"})


def ringable(extension: str) -> bool:
    """Whether some ``location_pattern`` could let a rule ring ``extension``."""
    return (
        extension != ""
        and extension not in _RUN_BY_ASTERISK
        and all("!" <= c <= "~" and c not in _NEVER_IN_LOCATION for c in extension)
    )


class ResponsibleSource(Protocol):
    """What the cache needs from :class:`~callrouter_onec.client.OneCClient`."""

    async def responsible(
        self,
        phone: str,
        *,
        did: str | None = None,
        call_id: str | None = None,
        deadline: float | None = None,
    ) -> Responsible: ...


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerTicket:
    """What :meth:`CircuitBreaker.allow` gives one request that may go to 1C,
    handed back with its outcome (:meth:`~CircuitBreaker.success`,
    :meth:`~CircuitBreaker.failure`, :meth:`~CircuitBreaker.release`): it
    tells the half-open probe from a request let through before the breaker
    opened (issue 16)."""

    __slots__ = ("probe",)

    def __init__(self, *, probe: bool) -> None:
        #: Whether this request is the probe of an open breaker.
        self.probe = probe

    def __repr__(self) -> str:
        return f"BreakerTicket(probe={self.probe})"


class CircuitBreaker:
    """Counts failures in a row; open means "do not even try" until ``open_seconds`` pass.

    As pybreaker and resilience4j report it, the breaker stays ``open`` after
    ``open_seconds`` until a request actually goes to 1C: it is ``half-open``
    only while that probe is in flight, so a breaker nobody has tried again
    (no call came, or 1C still fails) never reads as half-way closed.
    ``on_open`` is told each time the breaker opens (after the failures in a
    row, and again after each failed probe): a counter a monitor polling once
    a minute cannot miss, however short the opening.

    Each request that may go gets a :class:`BreakerTicket` from :meth:`allow`
    and hands it back with its outcome. While the breaker is open only the
    probe's own outcome counts: a request let through before it opened (a
    straggler) that is cancelled, fails or succeeds meanwhile neither lets a
    second probe go nor is taken for the probe's verdict.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[], object] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        #: The probe in flight, the one request whose outcome ends half-open.
        self._probe: BreakerTicket | None = None
        self._on_open = on_open

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._probe is not None:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def probe_due(self) -> bool:
        """Open for ``open_seconds`` already: the next request goes as the probe."""
        return (
            self._opened_at is not None
            and self._probe is None
            and self._clock() - self._opened_at >= self.open_seconds
        )

    def allow(self) -> BreakerTicket | None:
        """May a request go to 1C now? Its ticket if so (handed back with its
        outcome), None if not. Once open, only one probe at a time, when due."""
        if self._opened_at is None:
            return BreakerTicket(probe=False)
        if self.probe_due:
            self._probe = BreakerTicket(probe=True)
            return self._probe
        return None

    def _counts(self, ticket: BreakerTicket) -> bool:
        """Whether the outcome of ``ticket``'s request counts: any while the
        breaker is closed, only the probe's while it is open."""
        return self._opened_at is None or ticket is self._probe

    # The ticket is required, and named: an outcome told without it (allow()
    # read as a bool, as before tickets) was taken for a straggler's and
    # ignored while half-open, which then lasted for good (issue 16).

    def success(self, *, ticket: BreakerTicket) -> None:
        """1C answered ``ticket``'s request."""
        if not self._counts(ticket):
            return  # a straggler: the probe decides
        if self._opened_at is not None:
            log.info("1C is answering again; circuit closed")
        self._failures = 0
        self._opened_at = None
        self._probe = None

    def release(self, *, ticket: BreakerTicket) -> None:
        """``ticket``'s request ended without a verdict (cancelled): when it
        was the probe, let the next probe through.

        Without this a cancelled half-open probe would leave the breaker
        half-open for good while 1C is healthy; any other request's release
        leaves the probe in flight alone (a second one went beside it).
        """
        if ticket is self._probe:
            self._probe = None

    def failure(self, *, ticket: BreakerTicket) -> None:
        """1C failed ``ticket``'s request."""
        if not self._counts(ticket):
            return  # a straggler: not the probe's failure, and open already
        self._failures += 1
        probe_failed = ticket is self._probe
        self._probe = None
        if probe_failed or self._failures >= self.failure_threshold:
            log.warning(
                "1C failed %d times in a row; not asking it for %g s",
                self._failures,
                self.open_seconds,
            )
            if self._on_open is not None:
                self._on_open()
            self._opened_at = self._clock()


@dataclass(slots=True)
class _Entry:
    value: Responsible
    stored: float
    ttl: float


class ResponsibleCache:
    """The lookup the plugin exposes as ``onec.responsible(number)``.

    ``stale_ttl`` bounds how old an answer may still be served while 1C is
    unavailable; ``max_entries`` bounds memory in a long-running process (the
    least recently used number is forgotten first).
    """

    def __init__(
        self,
        source: ResponsibleSource,
        *,
        positive_ttl: float = 600.0,
        negative_ttl: float = 120.0,
        stale_ttl: float = 86400.0,
        max_entries: int = 50_000,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        rules: CountryRules = RUSSIA,
        clock: Callable[[], float] = time.monotonic,
        on_stale: Callable[[], object] | None = None,
        on_open: Callable[[], object] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        #: What a lookup's ``deadline`` is measured on.
        self._monotonic = monotonic
        #: Told each time a stale answer is served (the plugin's metrics).
        self._on_stale = on_stale
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.stale_ttl = stale_ttl
        self.max_entries = max_entries
        self.rules = rules
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold,
            open_seconds=open_seconds,
            clock=clock,
            on_open=on_open,
        )
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Responsible]] = {}
        self._background: set[asyncio.Task[Responsible]] = set()

    def fresh(self, number: str) -> Responsible | None:
        """The answer for a caller ID when the cache holds it within its TTL,
        without waiting for anything; ``None`` otherwise (then ask
        :meth:`lookup`, which also knows stale answers, 1C and the breaker)."""
        phone = normalize(number, self.rules)
        if not phone.lookup:
            return None
        entry = self._entries.get(phone.number)
        if entry is None or self._clock() - entry.stored >= entry.ttl:
            return None
        self._entries.move_to_end(phone.number)
        return entry.value

    async def lookup(
        self,
        number: str,
        *,
        did: str | None = None,
        call_id: str | None = None,
        deadline: float | None = None,
    ) -> Responsible | None:
        """The answer for a caller ID as written; ``None`` for internal or unusable numbers.

        Raises :class:`OneCUnavailable` only when there is neither an answer in
        time nor a stale one to fall back on (:class:`OneCCutOff` when
        ``deadline`` came first).
        """
        value, _ = await self.aged(number, did=did, call_id=call_id, deadline=deadline)
        return value

    async def aged(
        self,
        number: str,
        *,
        did: str | None = None,
        call_id: str | None = None,
        deadline: float | None = None,
    ) -> tuple[Responsible | None, float | None]:
        """:meth:`lookup`, and the age in seconds of a stale answer it served
        (``None`` for a fresh one): the decision line marks what the metric counts."""
        phone = normalize(number, self.rules)
        if not phone.lookup:
            return None, None
        key = phone.number
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None:
            age = now - entry.stored
            if age < entry.ttl:
                self._entries.move_to_end(key)
                return entry.value, None
            if age < self.stale_ttl:
                self._refresh(key, did, call_id)
                if self._on_stale is not None:
                    self._on_stale()
                return entry.value, age
            del self._entries[key]
        remaining = None if deadline is None else deadline - self._monotonic()
        if remaining is not None and remaining <= 0:
            raise OneCCutOff("deadline passed before 1C could be asked")
        task = self._inflight.get(key) or self._start(key, did, call_id)
        if task is None:
            raise OneCUnavailable("circuit open: 1C failed repeatedly, not asking it now")
        try:
            # shield: one caller's deadline must not cancel the request others share,
            # and a late answer still fills the cache for the next call.
            return await asyncio.wait_for(asyncio.shield(task), remaining), None
        except TimeoutError:
            raise OneCCutOff(f"no answer from 1C within the call's {remaining:.2f} s") from None

    def prefetch(self, number: str, *, did: str | None = None, call_id: str | None = None) -> None:
        """Start the lookup early (at ``Newchannel``) so routing finds it done; never waits."""
        phone = normalize(number, self.rules)
        if not phone.lookup:
            return
        entry = self._entries.get(phone.number)
        if entry is not None and self._clock() - entry.stored < entry.ttl:
            return
        self._refresh(phone.number, did, call_id)

    async def warm(self, numbers: Iterable[str]) -> list[str]:
        """Refresh frequent callers ahead of their calls (a scheduled job), one at a time.

        Returns the numbers 1C did not answer: those it failed, and, once the
        breaker is open (1C down), every number after, not asked at all. One at
        a time, so a warm-up never puts more than one request on 1C.
        """
        left: list[str] = []
        pending = list(numbers)
        for index, number in enumerate(pending):
            phone = normalize(number, self.rules)
            if not phone.lookup:
                continue
            task = self._inflight.get(phone.number) or self._start(phone.number, None, None)
            if task is None:
                # Circuit open: 1C is down; the rest waits until it answers again.
                return left + pending[index:]
            await asyncio.wait([task])
            if task.cancelled() or isinstance(task.exception(), OneCUnavailable):
                left.append(number)
        return left

    def peek(self, number: str) -> Responsible | None:
        """The cached answer, fresh or stale, without asking 1C."""
        phone = normalize(number, self.rules)
        entry = self._entries.get(phone.number) if phone.lookup else None
        return entry.value if entry is not None else None

    def invalidate(self, number: str | None = None) -> None:
        """Forget one number (or everything), e.g. after a manager change in 1C."""
        if number is None:
            self._entries.clear()
        else:
            self._entries.pop(normalize(number, self.rules).number, None)

    async def aclose(self) -> None:
        """Cancel background refreshes; the process is going away."""
        tasks = list(self._background) + list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _refresh(self, key: str, did: str | None, call_id: str | None) -> None:
        if key not in self._inflight:
            self._start(key, did, call_id)

    def _did(self, did: str | None) -> str | None:
        """The dialled number as the contract takes it (digits), or ``None``.

        The engine gives the channel's extension as the trunk wrote it
        (``+74951234567``, ``8 (495) ...``, ``s``); 1C refuses anything but
        digits with 400 invalid_parameter, which would cost every call to
        that line its manager. A DID without digits is left out: it is only
        for 1C's log.
        """
        if not did:
            return None
        number = normalize(did, self.rules).number
        return number if number and len(number) <= self.rules.max_digits else None

    def _start(
        self, key: str, did: str | None, call_id: str | None
    ) -> asyncio.Task[Responsible] | None:
        ticket = self.breaker.allow()
        if ticket is None:
            return None
        did = self._did(did)
        task = asyncio.create_task(self._fetch(key, did, call_id, ticket), name=f"onec:{key}")
        self._inflight[key] = task
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Responsible]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: a prefetch nobody awaits must not warn

    async def _fetch(
        self, key: str, did: str | None, call_id: str | None, ticket: BreakerTicket
    ) -> Responsible:
        # Every way out of this request settles the breaker: success, failure, or
        # (cancelled) release. An exception nobody foresaw counts as a failure and
        # reaches callers as OneCUnavailable, so a rule still takes its fallback.
        try:
            value = await self._source.responsible(key, did=did, call_id=call_id)
        except OneCBadRequest:
            self.breaker.success(ticket=ticket)  # 1C answered; the number is what it refused
            raise
        except OneCUnavailable as exc:
            self.breaker.failure(ticket=ticket)
            log.debug("1C lookup of %s failed: %s", key, exc)
            raise
        except Exception as exc:
            self.breaker.failure(ticket=ticket)
            log.warning("1C lookup of %s failed unexpectedly: %s: %s", key, type(exc).__name__, exc)
            raise OneCUnavailable(f"unexpected error: {type(exc).__name__}") from exc
        except BaseException:
            self.breaker.release(ticket=ticket)
            raise
        finally:
            self._inflight.pop(key, None)
        self.breaker.success(ticket=ticket)
        self._store(key, value)
        _check_extension(key, value)
        return value

    def _store(self, key: str, value: Responsible) -> None:
        ttl = self.positive_ttl if value.found else self.negative_ttl
        self._entries[key] = _Entry(value, self._clock(), ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _check_extension(key: str, value: Responsible) -> None:
    """A WARNING when 1C names an extension no rule can ring.

    The routing refuses it anyway (the decision line says ``exten '101,2' is
    not a safe dialplan location``), but that line names neither 1C nor the
    manager: this one tells the 1C developer where the value came from and
    what to fix. Once per answer fetched, so at most once per ``positive_ttl``
    per number.
    """
    manager = value.manager
    if manager is None or manager.extension is None:
        return
    if ringable(manager.extension):
        return
    log.warning(
        "1C answered %s with manager %s, whose extension %s no rule can ring (an extension "
        "is letters, digits and *#+_-, no spaces, commas or brackets): the call goes to the "
        "next rule; fix the manager's ВнутреннийНомер in ТелефонияВнутренниеНомера",
        key,
        _shown(manager.name),
        _shown(manager.extension),
    )


def _shown(value: str) -> str:
    """Escaped by ``repr`` and cut at 40 characters: 1C's text in a log line."""
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"
