"""A stop that cancels a task and waits for its end raises its own cancellation (issue 16).

``task.cancel(); with suppress(CancelledError): await task`` swallowed a
cancellation of the stopper along with the task's own: a shutdown cut short
went on as if nobody had cancelled it. Each stop below is cancelled while the
task it stops takes its time to end; the cancellation must come out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from router import sdnotify
from router.calllife.model import CallEvent
from router.calllife.service import MARK_FILE, CallLife
from router.calllife.settings import HistorySettings
from router.clock_step import ClockStepWatch
from router.sdnotify import Notifier
from router.supervise import Supervised
from router.tasks import cancel_and_wait
from tests.unit.waiting import DEADLINE, eventually


class Stubborn:
    """A task that, cancelled, takes until :meth:`release` to end."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.released.wait())

    async def release(self) -> None:
        self.released.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _turns() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _stop_is_cancelled(stop: Callable[[], Awaitable[Any]], stubborn: Stubborn) -> None:
    """Cancel ``stop()`` while it waits for ``stubborn`` to end: it must raise."""
    await _turns()  # the stubborn task is in its wait
    stopper = asyncio.ensure_future(stop())
    await _turns()  # the stopper waits for it
    assert not stopper.done()
    stopper.cancel()
    await _turns()
    try:
        assert stopper.done()
        assert stopper.cancelled()  # before: it returned, the cancellation swallowed
    finally:
        await stubborn.release()
        await asyncio.gather(stopper, return_exceptions=True)


async def test_cancel_and_wait_swallows_the_tasks_own_end() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    task = asyncio.ensure_future(forever())
    await _turns()
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(task)  # done already: nothing more


async def test_cancel_and_wait_raises_a_tasks_failure_once_all_ended() -> None:
    async def failing() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("broke on the way out")

    async def forever() -> None:
        await asyncio.Event().wait()

    broken = asyncio.ensure_future(failing())
    other = asyncio.ensure_future(forever())
    await _turns()
    with pytest.raises(RuntimeError, match="broke on the way out"):
        await cancel_and_wait(broken, other)
    assert other.cancelled()


async def test_cancel_and_wait_in_a_finally_of_a_cancelled_task_still_waits() -> None:
    """Cleanup run while the task's own cancellation propagates: the tasks it
    stops are waited for (a ``cancelling()`` count read there would have cut
    the cleanup short)."""
    stubborn = Stubborn()
    ended: list[bool] = []

    async def owner() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await cancel_and_wait(stubborn.task)
            ended.append(stubborn.task.done())

    running = asyncio.ensure_future(owner())
    await _turns()
    running.cancel()
    await _turns()
    assert not running.done()  # waits for the stubborn task
    stubborn.released.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert ended == [True]


async def test_cancel_and_wait_raises_the_waiters_cancellation() -> None:
    stubborn = Stubborn()
    await _stop_is_cancelled(lambda: cancel_and_wait(stubborn.task), stubborn)


async def test_clock_step_watch_cancel_raises_its_cancellation() -> None:
    watch = ClockStepWatch(lambda moved: None)
    stubborn = Stubborn()
    watch._task = stubborn.task
    await _stop_is_cancelled(watch.cancel, stubborn)


async def test_sdnotify_stop_raises_its_cancellation() -> None:
    notifier = Notifier(lambda: None, lambda: True, environ={})  # type: ignore[arg-type,return-value]
    stubborn = Stubborn()
    notifier._task = stubborn.task
    await _stop_is_cancelled(notifier.stop, stubborn)


async def test_supervised_stop_raises_its_cancellation() -> None:
    async def run() -> None:
        await asyncio.Event().wait()

    supervised = Supervised("test", run)
    stubborn = Stubborn()
    supervised._task = stubborn.task
    await _stop_is_cancelled(supervised.stop, stubborn)


async def test_call_life_stop_raises_its_cancellation() -> None:
    async def emit(event: CallEvent) -> None:
        pass

    life = CallLife(HistorySettings(cel="sqlite:///nonexistent.db"), emit)
    stubborn = Stubborn()
    life._tasks.add(stubborn.task)
    await _stop_is_cancelled(life.stop, stubborn)


async def test_a_cancelled_call_life_stop_still_writes_its_mark(tmp_path: Path) -> None:
    """The stop cut short (the shutdown's timeout, a second Ctrl-C) while a replay
    ends: the mark is written before the cancellation goes on; before, the next
    start replayed from the last timed mark."""

    async def emit(event: CallEvent) -> None:
        pass

    clock = [1_800_000_000.0]
    life = CallLife(
        HistorySettings(cel="sqlite:///nonexistent.db", settle_delay=3600),
        emit,
        clock=lambda: clock[0],
    )
    life.start(tmp_path)
    life.gap(clock[0] - 30)
    await _turns()
    assert life.listening()
    stubborn = Stubborn()
    life._tasks.add(stubborn.task)
    await _stop_is_cancelled(life.stop, stubborn)
    written = json.loads((tmp_path / MARK_FILE).read_text(encoding="utf-8"))
    assert written["mark"] == clock[0] - 30 - 10  # the gap's start, less the margin


async def test_a_cancelled_sdnotify_stop_still_says_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said: list[str] = []

    def notify(state: str, environ: Mapping[str, str]) -> bool:
        said.append(state)
        return True

    monkeypatch.setattr(sdnotify, "notify", notify)
    notifier = Notifier(lambda: None, lambda: True, environ={"NOTIFY_SOCKET": "@x"})  # type: ignore[arg-type,return-value]
    stubborn = Stubborn()
    notifier._task = stubborn.task
    await _stop_is_cancelled(notifier.stop, stubborn)
    assert said == ["STOPPING=1\nSTATUS=stopping: finishing decisions in flight"]


# ------------------------------------------------- waits on an Event let a stop through
#
# Python 3.11's ``asyncio.wait_for(event.wait(), ...)`` returns normally when
# the event is set in the loop step its task is cancelled in: the waiter went
# on as if nobody had cancelled it (issue 16). Each test below sets the event
# and cancels the waiting task in one step, with no clock involved, and the
# task must end cancelled.


async def test_wait_set_ends_cancelled_when_the_event_comes_in_the_same_step() -> None:
    from router.tasks import wait_set

    event = asyncio.Event()
    task = asyncio.ensure_future(wait_set(event, 3600))
    await eventually(lambda: event._waiters, "the wait")  # type: ignore[attr-defined]
    event.set()
    task.cancel()
    await asyncio.wait([task], timeout=DEADLINE)
    assert task.cancelled()


async def test_wait_set_says_whether_the_event_came() -> None:
    from router.tasks import wait_set

    event = asyncio.Event()
    assert await wait_set(event, 0) is False
    event.set()
    assert await wait_set(event, 3600) is True


async def test_a_replayed_waitevent_ends_cancelled_when_an_event_comes_as_the_client_stops() -> (
    None
):
    """The fake Asterisk's ``WaitEvent`` answered the events queued in the step
    its client's poll was cancelled in, the cancellation lost: the client
    polled again and its stop waited for a whole ``WaitEvent`` (30 s, or
    ``max_wait``)."""
    from router.testing.replay import ReplayAsterisk, SentAction

    replay = ReplayAsterisk()
    sent = SentAction("WaitEvent", (("Action", "WaitEvent"), ("Timeout", "3600")), "/rawman", None)
    task = asyncio.ensure_future(replay._action_waitevent(sent))
    await eventually(lambda: replay.idle, "the WaitEvent waiting")
    replay.queue_event({"Event": "FullyBooted", "Status": "Fully Booted"})
    task.cancel()
    await asyncio.wait([task], timeout=DEADLINE)
    assert task.cancelled()


async def test_a_start_waiting_for_asterisk_ends_cancelled_when_stopped_in_the_same_step(
    tmp_path: Path,
) -> None:
    """The start waits for an Asterisk that does not answer until a stop; a
    cancellation of the start in the step the stop came in was swallowed and
    the start raised the login's ``AMIConnectionError`` instead, a failed start
    where a stop was asked for."""
    from tests.unit.test_engine_wait_for_asterisk import Away, engine_at

    client = Away()
    engine = engine_at(tmp_path, "tcp://pbx:5038", client)
    task = asyncio.ensure_future(engine.start())
    try:
        await eventually(lambda: engine._stopping._waiters, "the start waiting for Asterisk")  # type: ignore[attr-defined]
        engine._stopping.set()  # what a stop request does
        task.cancel()
        await asyncio.wait([task], timeout=DEADLINE)
        assert task.cancelled()
    finally:
        await engine.stop()
