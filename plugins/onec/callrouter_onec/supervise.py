"""A background task that is never gone silently: logged and restarted when it dies.

The history sender is a loop that must run as long as the plugin does; an
exception nobody foresaw used to end it without a word, leaving events
pending until a restart. :class:`Supervised` runs such a loop, logs the
exception with its traceback, waits ``restart_delay`` (doubling up to
``max_delay`` while it keeps dying) and starts it again. Cancelling it (the
plugin stopping) is the only way it ends.

Local to the plugin because callrouter's public API has no supervisor yet; it
uses nothing but asyncio, so moving to a core one later is a one-line change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Supervised"]

log = logging.getLogger(__name__)

#: A run that lasted this long was healthy: the restart delay starts over.
_HEALTHY_RUN = 60.0


class Supervised:
    """One named, restarting task around ``run`` (a coroutine function)."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]], *,
                 restart_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self.name = name
        self.restart_delay = restart_delay
        self.max_delay = max_delay
        #: How often ``run`` died; for status pages and tests.
        self.restarts = 0
        self._run = run
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        """Cancel and wait; never raises, whatever state the task is in."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _supervise(self) -> None:
        delay = self.restart_delay
        while True:
            started = time.monotonic()
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = self._next_delay(started, delay)
                log.exception("%s died; restarting it in %g s", self.name, delay)
            else:
                delay = self._next_delay(started, delay)
                log.error("%s returned; restarting it in %g s", self.name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    def _next_delay(self, started: float, delay: float) -> float:
        """Count the restart; a run that was healthy for a while starts the backoff over."""
        self.restarts += 1
        return self.restart_delay if time.monotonic() - started >= _HEALTHY_RUN else delay
