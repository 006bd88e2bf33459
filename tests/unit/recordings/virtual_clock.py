"""A clock for the recordings' closer whose time passes only as the closer waits.

The closer (router/recordings/closer.py) decides by time: a file that held its
size 0.5 s is finished, one that grew since the close began is still written,
``close_timeout`` ends the wait. On the real clock a test of those decisions
raced the machine's load: a thread that looked at the file 0.2 s late, or a
writer task that ran late, changed the verdict. Here time moves only inside
:meth:`VirtualClock.sleep`, and what Asterisk writes meanwhile is tied to this
time (:meth:`VirtualClock.at`, :meth:`VirtualClock.every`): each test plays
the same timeline whatever the machine does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable

from router.recordings.closer import Clock

__all__ = ["VirtualClock"]

#: Time moves in steps of 2**-20 s (about 1 us), rounded up: sums and differences
#: of such times are exact in floats, so five sleeps of 0.2 s are never less
#: than the 1.0 s a deadline or a "held 1 s" compares them with.
_TICK = 2.0**-20


class VirtualClock:
    """Seconds from 0, moved on only by :meth:`sleep`, which first runs in order
    what was due meanwhile (a write at 0.5 s during a sleep from 0.4 to 0.6)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        #: What the closer takes (``Recorder.close_clock``, ``clock=``).
        self.clock = Clock(monotonic=self.monotonic, sleep=self.sleep)

    def monotonic(self) -> float:
        return self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` once time reaches ``when``."""
        heapq.heappush(self._due, (when, next(self._order), action))

    def every(
        self, interval: float, action: Callable[[], None], *, start: float | None = None
    ) -> Callable[[], None]:
        """Run ``action`` at ``start`` (now by default) and every ``interval``
        seconds after; the function returned stops it."""
        stopped = False

        def run() -> None:
            if not stopped:
                action()
                self.at(self.now + interval, run)

        def stop() -> None:
            nonlocal stopped
            stopped = True

        if start is None:
            run()
        else:
            self.at(start, run)
        return stop

    async def sleep(self, seconds: float) -> None:
        until = math.ceil((self.now + max(seconds, 0.0)) / _TICK) * _TICK
        while self._due and self._due[0][0] <= until:
            when, _, action = heapq.heappop(self._due)
            self.now = max(self.now, when)
            action()
        self.now = until
        await asyncio.sleep(0)  # the others' turn, as a real sleep gives
