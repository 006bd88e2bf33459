"""Background work that never dies silently, and errors that never flood the log.

The service runs for months; anything it does in the background (the event
loop over Asterisk's events, timed housekeeping, decisions spawned as tasks,
a plugin's sender loop) meets inputs nobody foresaw. Three small tools:

* :class:`Supervised` runs a long-lived loop as a named task, logs an
  exception with its traceback, waits (doubling up to ``max_delay`` while it
  keeps dying, starting over after a healthy run) and starts it again.
  Cancelling it (:meth:`Supervised.stop`) is the only way it ends.
* :func:`logged` wraps a coroutine function run by a scheduler or spawned as
  a task, so a failure is logged with the job's name instead of vanishing
  into a task nobody awaits; :func:`log_task_failure` does the same as a done
  callback for tasks already created.
* :class:`Throttle` logs a recurring failure once, then at most once per
  ``interval`` with how many were suppressed, so one bad input repeated a
  thousand times a second cannot fill the disk.

Only asyncio and logging: plugins may use it as well (``from router.supervise
import Supervised``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec

from router.tasks import cancel_and_wait

__all__ = ["Supervised", "Throttle", "log_task_failure", "logged"]

log = logging.getLogger("router.supervise")

#: A run that lasted this long was healthy: the restart delay starts over.
HEALTHY_RUN = 60.0

P = ParamSpec("P")


class Supervised:
    """One named, restarting task around ``run`` (a coroutine function)."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        *,
        restart_delay: float = 1.0,
        max_delay: float = 60.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.restart_delay = restart_delay
        self.max_delay = max_delay
        #: How often ``run`` died or returned; for status pages and tests.
        self.restarts = 0
        self._run = run
        self._log = logger or log
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        """Cancel and wait; never raises, whatever state the task is in, but a
        cancellation of the task that stops it (issue 16)."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(Exception):
            await cancel_and_wait(task)

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
                self._log.exception("%s died; restarting it in %g s", self.name, delay)
            else:
                delay = self._next_delay(started, delay)
                self._log.error("%s returned; restarting it in %g s", self.name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    def _next_delay(self, started: float, delay: float) -> float:
        self.restarts += 1
        return self.restart_delay if time.monotonic() - started >= HEALTHY_RUN else delay


def logged(
    name: str, func: Callable[P, Awaitable[None]], *, logger: logging.Logger | None = None
) -> Callable[P, Coroutine[Any, Any, None]]:
    """``func`` whose exceptions are logged with ``name`` and not raised.

    For scheduler jobs and fire-and-forget tasks: nobody awaits them, so an
    exception would otherwise end up, at best, in a generic line without the
    job's name.
    """
    target = logger or log

    @functools.wraps(func)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await func(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception:
            target.exception("background job %s failed", name)

    return run


def log_task_failure(task: asyncio.Task[Any], *, logger: logging.Logger | None = None) -> None:
    """Done callback: log a task's exception with the task's name."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        (logger or log).error(
            "task %s failed", task.get_name(), exc_info=(type(exc), exc, exc.__traceback__)
        )


#: Keys a :class:`Throttle` remembers: past it the oldest is forgotten, so that
#: failures with ever new keys cannot grow it.
_THROTTLE_KEYS = 1024


class Throttle:
    """Log a recurring failure once per ``interval`` per key, counting the rest."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        #: key -> (last logged at, suppressed since then)
        self._seen: dict[str, tuple[float, int]] = {}

    def exception(
        self, key: str, message: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        """Log ``message`` with the current traceback unless ``key`` was logged
        less than ``interval`` ago; return whether it was logged. Outside an
        ``except`` block there is no current traceback: pass the exception as
        ``exc_info`` (a task's, read in its done callback)."""
        if exc_info is None:
            return self._emit(key, message, args, self._log.exception)
        return self._emit(key, message, args, functools.partial(self._log.error, exc_info=exc_info))

    def warning(self, key: str, message: str, *args: object) -> bool:
        """:meth:`exception` at WARNING, without a traceback."""
        return self._emit(key, message, args, self._log.warning)

    def _emit(
        self, key: str, message: str, args: tuple[object, ...], say: Callable[..., None]
    ) -> bool:
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        if last is None and len(self._seen) >= _THROTTLE_KEYS:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} more like it suppressed in the last %.0f s)"
            args = (*args, now - last[0]) if last is not None else args
        say(message, *args)
        return True
