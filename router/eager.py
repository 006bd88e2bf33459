"""Starting a coroutine in the caller's loop turn: eager tasks, on Python 3.11 too.

A routing request is parsed in one turn of the event loop; a task made for it
starts only after every callback already queued, and at 100 calls a second
those are earlier calls' bookkeeping (their answers, decision lines, metrics):
the Redirect waited about 120 us behind them in the route benchmark, 325 us in
bench_engine (docs/performance.md). Python 3.12's eager tasks run a new task's
first step at once, up to its first real wait; :func:`start` does that on 3.12
and later, and on 3.11 runs the first step itself and hands the rest to a task.

On 3.11 the current task during that first step is the caller's, so anything
that binds to the current task (``asyncio.timeout``, ``asyncio.current_task``)
must not run in it. Code on the routing path therefore awaits
:func:`hand_off` first, or uses :class:`timeout` here, which does: outside an
eager start both cost nothing and do not suspend.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["NATIVE", "Begun", "begin", "hand_off", "start", "timeout"]

T = TypeVar("T")

#: Python 3.12+: the standard library's eager tasks do the work.
NATIVE = sys.version_info >= (3, 12)

#: True only while :func:`start` runs a coroutine's first step itself (3.11).
#: A plain global, not a context variable: tasks made during that step copy
#: the context, and must not think they are in it.
_starting = False


class _HandOff:
    """Awaited: in a first step run by :func:`start` (3.11), ends it there, so
    what follows runs in the coroutine's own task; anywhere else, nothing."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        if _starting:
            yield  # start() sees the bare yield and moves the rest into a task


_HAND_OFF = _HandOff()


def hand_off() -> _HandOff:
    """Await before code that needs to run in the coroutine's own task."""
    return _HAND_OFF


class timeout:
    """``asyncio.timeout(delay)``, entered in the coroutine's own task.

    ``asyncio.timeout`` cancels the task that entered it; in an eager first
    step on 3.11 that would be the caller (the engine's event consumer).
    """

    __slots__ = ("_delay", "_inner")

    def __init__(self, delay: float | None) -> None:
        self._delay = delay
        self._inner: asyncio.Timeout | None = None

    async def __aenter__(self) -> asyncio.Timeout:
        await _HAND_OFF
        self._inner = asyncio.timeout(self._delay)
        return await self._inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._inner is not None
        await self._inner.__aexit__(exc_type, exc, tb)


def start(
    coro: Coroutine[Any, Any, T], *, name: str | None = None
) -> tuple[asyncio.Task[T] | None, bool]:
    """Run ``coro`` now up to its first wait; the rest runs in a task.

    Returns that task, or None when ``coro`` finished in its first step, and
    whether the first step stopped at a :func:`hand_off` rather than at a real
    wait (the rest then starts on the loop's next turn: a caller may yield to
    let it). An exception raised in the first step is raised here, as if the
    coroutine had been called; a later one is the task's.
    """
    loop = asyncio.get_running_loop()
    if NATIVE:  # pragma: no cover - the project's CI runs 3.11
        factory: Any = asyncio.eager_task_factory  # type: ignore[attr-defined,unused-ignore]
        task: asyncio.Task[T] = factory(loop, coro, name=name)
        if not task.done():
            return task, False
        if task.cancelled():
            raise asyncio.CancelledError
        exc = task.exception()
        if exc is not None:
            raise exc
        return None, False
    global _starting
    context = contextvars.copy_context()  # what the first step sets stays the coroutine's
    outer, _starting = _starting, True
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:
        return None, False
    except BaseException:
        coro.close()
        raise
    finally:
        _starting = outer
    rest = loop.create_task(_resume(coro, waiting), name=name, context=context)
    # A task cancelled before its first step never enters _resume, which
    # would leave ``coro`` suspended where the first step stopped, its
    # ``finally`` blocks unrun until the collector finds it: closed here.
    # A no-op for a coroutine that finished.
    rest.add_done_callback(lambda _: coro.close())
    return rest, waiting is None


async def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    # The rest of a coroutine whose first step start() ran, in its task.
    result: T = await Begun(coro, waiting)
    return result


class Begun(Generic[T]):
    """A coroutine whose first step already ran (:func:`begin`, or :func:`start`
    for its task): awaiting it runs the rest in the awaiting task, first what
    that step waits for, then the coroutine itself, step by step;
    :meth:`close` ends it unawaited."""

    __slots__ = ("_coro", "_error", "_result", "_waiting")

    def __init__(
        self,
        coro: Coroutine[Any, Any, T] | None,
        waiting: Any = None,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        self._coro = coro
        self._waiting = waiting
        self._result = result
        self._error = error

    def __await__(self) -> Generator[Any, Any, T]:
        coro, self._coro = self._coro, None
        error, self._error = self._error, None
        if error is not None:
            raise error
        if coro is None:
            result: T = self._result
            return result
        waiting, self._waiting = self._waiting, None
        try:
            if waiting is None:  # a hand-off: go on at once, now in the awaiting task
                waiting = coro.send(None)
            while True:
                try:
                    sent = yield waiting
                except BaseException as exc:  # cancellation, or the loop closing us
                    waiting = coro.throw(exc)
                else:
                    waiting = coro.send(sent)
        except StopIteration as stop:
            done: T = stop.value
            return done

    def close(self) -> None:
        """End it unawaited, as a cancelled task ends: ``CancelledError`` where
        it waits, so its cleanup runs now; whatever that raises is dropped."""
        coro, self._coro = self._coro, None
        self._waiting = self._error = None
        if coro is None:
            return
        try:
            coro.throw(asyncio.CancelledError())
        except BaseException:  # the cancellation itself, or its cleanup's
            return
        coro.close()  # it waited again while cancelled: no one will resume it


def begin(coro: Coroutine[Any, Any, T]) -> Begun[T]:
    """Run ``coro`` now up to its first wait; awaiting the result runs the rest.

    Unlike :func:`start`, no task is made: the caller awaits the rest itself,
    later, in its own task, so the first step may already do what binds to
    that task. Made for a request written now and read later (the AJAM event
    stream's next poll, router/ami/stream.py): the write leaves in this loop
    turn, and an answer that arrives before the caller awaits it is read at
    once, with no task's completion to wait a loop turn for. An exception of
    the first step is raised when the result is awaited, as it would be had
    the caller awaited ``coro`` itself.
    """
    global _starting
    outer, _starting = _starting, True
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return Begun(None, result=stop.value)
    except BaseException as exc:
        coro.close()
        return Begun(None, error=exc)
    finally:
        _starting = outer
    return Begun(coro, waiting)
