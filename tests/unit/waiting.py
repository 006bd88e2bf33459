"""Waiting in unit tests for what the event loop does next.

A loop of a fixed number of short sleeps bounds the wait by ticks, and a
loaded CI machine (two xdist workers on two cores, a worker thread started
late) can take longer than that with nothing wrong: the run of 2026-12-03
failed so. Tests wait here on a deadline in seconds instead, far above any
honest delay; speed is measured in ``bench/``, never by a unit test's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Far above a correct run's delay (milliseconds), far below a hung test's.
DEADLINE = 15.0


async def eventually(check: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Return once ``check()`` is true; fail naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() >= end:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.005)
