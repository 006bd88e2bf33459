"""Waiting in the 1C plugin's tests for what the event loop does next.

The twin of the main suite's ``tests/unit/waiting.py`` (this suite runs on its
own, from ``plugins/onec``, and cannot import that one). A fixed sleep before
an assert, or a loop of a fixed number of short sleeps, bounds the wait by
ticks, and a loaded CI machine (two xdist workers on two cores, a worker
thread started late) can take longer than that with nothing wrong (issue 16).
Tests wait here on a deadline in seconds instead, far above any honest delay;
speed is measured in ``bench/``, never by a unit test's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Far above a correct run's delay (milliseconds), far below a hung test's.
DEADLINE = 15.0


async def eventually(check: Callable[[], object], what: str) -> None:
    """Return once ``check()`` is true; fail naming ``what`` after :data:`DEADLINE` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not check():
        if loop.time() >= end:
            raise AssertionError(f"{what}: not within {DEADLINE:g} s")
        await asyncio.sleep(0.005)
