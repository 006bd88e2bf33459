"""Cancelling a task and waiting for its end, without swallowing the waiter's own cancellation.

A ``stop()`` that ends a background task wrote::

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

The ``CancelledError`` meant there is the task's own end; but a cancellation
of the task that runs ``stop()`` (a shutdown cut short, a stop under a
timeout) is raised at that very ``await`` too, and was swallowed with it: the
stopper went on as if nobody had cancelled it, and whoever cancelled it waited
on (issue 16). :func:`cancel_and_wait` tells the two apart: it waits with
:func:`asyncio.wait`, which never raises for the tasks' ends and raises
``CancelledError`` only when the waiting task itself is cancelled. That also
holds in a ``finally`` block run while a cancellation propagates (no
``Task.cancelling()`` count to misread there). Public as
``router.cancel_and_wait`` (docs/plugins.md) for a plugin's own ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait", "wait_set"]


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel each of ``tasks`` and wait until every one has ended.

    A task that ends cancelled, or returns, is done with; the first task that
    raised an exception (other than its cancellation) has it raised here once
    all have ended, so a caller that says nothing of failures wraps the call
    in ``contextlib.suppress(Exception)``. When the task awaiting this is
    cancelled meanwhile, that ``CancelledError`` is raised at once (the tasks,
    cancelled already, end on their own).
    """
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    if pending:
        await asyncio.wait(pending)
    failed: BaseException | None = None
    for task in tasks:
        if task.cancelled():
            continue
        exc = task.exception()  # retrieved: no "never retrieved" at garbage collection
        if failed is None and exc is not None:
            failed = exc
    if failed is not None:
        raise failed


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; whether it is set.

    Not ``asyncio.wait_for(event.wait(), seconds)``: on Python 3.11 that
    returns normally when the event is set in the loop step its task is
    cancelled in, and the cancellation is lost: the waiter went on (another
    poll, another try) instead of ending, and a stop waited for it (issue
    16). ``asyncio.timeout`` raises ``TimeoutError`` only for its own expiry
    and lets the cancellation through.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
