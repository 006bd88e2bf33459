"""router.eager: a coroutine's first step in the caller's loop turn, the rest in a task."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from router import eager

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="caller")


async def test_a_coroutine_without_waits_finishes_inside_start() -> None:
    done: list[str] = []

    async def work() -> None:
        done.append("ran")

    task, handed_off = eager.start(work())
    assert task is None
    assert not handed_off
    assert done == ["ran"]


async def test_the_first_step_runs_before_callbacks_already_queued() -> None:
    """The point of it: a routing request does not wait behind earlier work."""
    order: list[str] = []
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def route() -> str:
        order.append("sent")
        return await answer

    asyncio.get_running_loop().call_soon(order.append, "queued before")
    task, handed_off = eager.start(route())
    order.append("start returned")
    assert task is not None
    assert not handed_off
    answer.set_result("confirmed")
    assert await task == "confirmed"
    assert order == ["sent", "start returned", "queued before"]


async def test_a_hand_off_ends_the_first_step_and_the_rest_runs_in_the_task() -> None:
    seen: list[object] = []

    async def work() -> str:
        seen.append("before")
        await eager.hand_off()
        seen.append(asyncio.current_task())
        return "rest"

    task, handed_off = eager.start(work())
    if eager.NATIVE:  # 3.12+: the standard eager task needs no hand-off and runs on
        assert (task, handed_off) == (None, False)
        assert seen[0] == "before"
        assert isinstance(seen[1], asyncio.Task)
        return
    assert task is not None
    assert handed_off
    assert await task == "rest"
    assert seen == ["before", task]


async def test_hand_off_outside_an_eager_start_does_not_suspend() -> None:
    order: list[str] = []
    asyncio.get_running_loop().call_soon(order.append, "callback")
    await eager.hand_off()
    order.append("after hand-off")
    await asyncio.sleep(0)
    assert order == ["after hand-off", "callback"]


async def test_a_timeout_in_the_first_step_cancels_the_coroutine_not_the_caller() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def slow() -> str:
        try:
            async with eager.timeout(0.05):
                await never
        except TimeoutError:
            return "timed out"
        return "answered"

    task, _ = eager.start(slow())
    assert task is not None
    await asyncio.sleep(0.2)  # the caller (this test's task) is not cancelled
    assert await task == "timed out"


async def test_an_error_before_the_first_wait_is_raised_by_start() -> None:
    async def broken() -> None:
        raise ValueError("bad rule")

    with pytest.raises(ValueError, match="bad rule"):
        eager.start(broken())


async def test_an_error_after_the_first_wait_is_the_tasks() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def later() -> None:
        await gate
        raise ValueError("after")

    task, _ = eager.start(later())
    assert task is not None
    gate.set_result(None)
    with pytest.raises(ValueError, match="after"):
        await task


async def test_cancelling_the_task_reaches_the_coroutine() -> None:
    cleaned: list[str] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        try:
            await never
        finally:
            cleaned.append("finally")

    task, _ = eager.start(waits())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


@pytest.mark.parametrize("hand_off", [True, False])
async def test_cancelling_the_task_before_its_first_step_reaches_the_coroutine(
    hand_off: bool,
) -> None:
    """Cancelled before the rest ever ran (the engine stopping in the same
    turn): the coroutine's ``finally`` runs then, not whenever the collector
    finds it (a connection written on and never read would stay open)."""
    cleaned: list[str] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        try:
            if hand_off:
                await eager.hand_off()
            await never
        finally:
            cleaned.append("finally")

    task, _ = eager.start(waits())
    assert task is not None
    task.cancel()  # no loop turn: the task has not taken its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


async def test_context_set_in_the_first_step_is_the_coroutines_not_the_callers() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def sets() -> str:
        MARK.set("route")
        await gate
        return MARK.get()

    task, _ = eager.start(sets())
    assert task is not None
    assert MARK.get() == "caller"
    gate.set_result(None)
    assert await task == "route"


async def test_values_sent_and_exceptions_thrown_pass_through_the_rest() -> None:
    """The task drives the rest with what each awaited future gives."""
    first: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    second: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def two() -> int:
        a = await first
        try:
            await second
        except KeyError:
            return a + 100
        return a

    task, _ = eager.start(two())
    assert task is not None
    first.set_result(1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second.set_exception(KeyError("x"))
    assert await task == 101


async def test_a_task_made_in_the_first_step_is_not_in_an_eager_start() -> None:
    """Its hand-offs do nothing: it runs as any task does."""
    order: list[str] = []

    async def child() -> None:
        await eager.hand_off()  # would be a yield if the child thought it was starting
        order.append("child after hand-off")

    async def parent() -> None:
        task = asyncio.ensure_future(child())
        asyncio.get_running_loop().call_soon(order.append, "callback")
        await task

    task, _ = eager.start(parent())
    assert task is not None
    await task
    assert order == ["child after hand-off", "callback"]


async def test_an_eager_start_inside_a_first_step_keeps_the_outer_one_handing_off() -> None:
    seen: list[object] = []

    async def inner() -> None:
        seen.append("inner")

    async def outer() -> None:
        eager.start(inner())
        await eager.hand_off()  # still the outer first step: ends it here
        seen.append(asyncio.current_task())

    task, handed_off = eager.start(outer())
    if eager.NATIVE:  # 3.12+: no hand-off is needed, the outer one runs to its end
        assert (task, handed_off) == (None, False)
        assert seen[0] == "inner"
        assert isinstance(seen[1], asyncio.Task)
        return
    assert task is not None
    assert handed_off
    await task
    assert seen == ["inner", task]


async def test_begin_runs_the_first_step_now_and_the_rest_in_the_awaiting_task() -> None:
    seen: list[object] = []

    async def poll() -> str:
        seen.append("written")
        await eager.hand_off()
        seen.append(asyncio.current_task())
        return "answer"

    begun = eager.begin(poll())
    assert seen == ["written"]  # before anything is awaited
    assert await begun == "answer"
    assert seen[1] is asyncio.current_task()  # no task of its own


async def test_an_answer_buffered_before_the_await_is_read_without_a_loop_turn() -> None:
    """The AJAM poll begun ahead of a batch: its answer, come while the batch
    was handled, is read the moment the stream asks, no task's end to wait for."""
    buffered: list[str] = []

    async def poll() -> str:
        await eager.hand_off()  # the pool's, once the request is written
        if buffered:
            return buffered.pop()
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        return await waiter

    begun = eager.begin(poll())
    buffered.append("events")
    steps = begun.__await__()
    with pytest.raises(StopIteration) as finished:
        steps.send(None)  # the first send finishes it: nothing was waited for
    assert finished.value.value == "events"


async def test_begin_of_a_coroutine_without_waits_keeps_its_result() -> None:
    async def quick() -> int:
        return 7

    assert await eager.begin(quick()) == 7


async def test_an_error_of_the_first_step_is_raised_when_awaited() -> None:
    async def broken() -> None:
        raise ConnectionResetError("connection is closed")

    begun = eager.begin(broken())  # not raised here: the awaiting code handles it
    with pytest.raises(ConnectionResetError):
        await begun


async def test_closing_a_begun_coroutine_cancels_it_where_it_waits() -> None:
    cleaned: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def poll() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            cleaned.append("cancelled")
            raise
        finally:
            cleaned.append("finally")

    begun = eager.begin(poll())
    begun.close()
    assert cleaned == ["cancelled", "finally"]
    begun.close()  # twice: nothing more


async def test_closing_a_coroutine_begun_up_to_its_hand_off_runs_its_cleanup() -> None:
    cleaned: list[str] = []

    async def poll() -> None:
        try:
            await eager.hand_off()
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    eager.begin(poll()).close()
    assert cleaned == ["finally"]


async def test_a_coroutine_that_waits_again_when_cancelled_is_closed() -> None:
    cleaned: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            try:
                await asyncio.sleep(10)  # waits again: nobody resumes it
            finally:
                cleaned.append("closed")

    eager.begin(stubborn()).close()
    assert cleaned == ["closed"]
