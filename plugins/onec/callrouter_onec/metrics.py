"""The 1C plugin's metrics, registered through ``callrouter_metrics``.

The breaker's state is read when ``/metrics`` is scraped (``half-open`` only
while a probe is in flight), and its openings are counted as they happen, so
an opening shorter than the monitor's polling still shows; stale answers are counted as the
cache serves them; the history queue's depth and oldest event are read when
scraped from the counts the queue keeps in memory on every insert, delivery
and drop (:meth:`~callrouter_onec.history.HistoryQueue.depth`), never from its
SQLite file on the event loop; a timed job counts them from the file again
every :data:`QUEUE_RECOUNT` seconds in a worker thread, for what another
process (``callrouter history replay``) wrote meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from router import Metrics

if TYPE_CHECKING:  # pragma: no cover
    from callrouter_onec.history import HistoryQueue

__all__ = ["BREAKER_STATES", "QUEUE_RECOUNT", "OneCMetrics"]

BREAKER_STATES = ("closed", "open", "half-open")
#: Seconds between counts of the history queue's file (what other processes wrote).
QUEUE_RECOUNT = 15.0


def _is(breaker: Callable[[], str | None], state: str) -> Callable[[], float]:
    return lambda: 1.0 if breaker() == state else 0.0


class OneCMetrics:
    """The plugin's families on one engine's registry."""

    def __init__(
        self,
        metrics: Metrics,
        breaker: Callable[[], str | None],
        queue: Callable[[], HistoryQueue | None] = lambda: None,
    ) -> None:
        self.breaker_state = metrics.gauge(
            "callrouter_onec_breaker_state",
            "The 1C circuit breaker: 1 for the current state (closed, open, half-open).",
            ["state"],
        )
        for state in BREAKER_STATES:
            self.breaker_state.labels(state).set_function(_is(breaker, state))
        self.breaker_opened = metrics.counter(
            "callrouter_onec_breaker_opened",
            "Times the 1C circuit breaker opened: after failure_threshold failures in a row, "
            "and again after each failed probe.",
        )
        self.stale_answers = metrics.counter(
            "callrouter_onec_stale_answers",
            "Lookups answered from an expired cache entry while 1C was asked again.",
        )
        self.history = metrics.queue("onec_history")
        self.history.set_function(lambda: _depth(queue()))

    def opened(self) -> None:
        self.breaker_opened.inc()

    def stale(self) -> None:
        self.stale_answers.inc()

    async def recount_queue(self, queue: HistoryQueue) -> None:
        """Count the queue's waiting events from its file again (off the loop)."""
        await asyncio.to_thread(queue.recount)


def _depth(queue: HistoryQueue | None) -> tuple[int, float | None]:
    return (0, None) if queue is None else queue.depth()
