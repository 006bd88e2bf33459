"""router.supervise: nothing in the background dies silently, nothing floods the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from router.supervise import Supervised, Throttle, log_task_failure, logged


async def test_supervised_task_is_logged_and_restarted_until_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    healthy = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"crash {runs}")
        healthy.set()
        await asyncio.sleep(3600)

    caplog.set_level(logging.ERROR, "router.supervise")
    task = Supervised("history sender", loop, restart_delay=0.01, max_delay=0.02)
    task.start()
    await asyncio.wait_for(healthy.wait(), 5)
    assert task.running
    assert task.restarts == 2
    died = [r for r in caplog.records if "history sender died" in r.getMessage()]
    assert len(died) == 2
    assert all(r.exc_info is not None for r in died)
    await task.stop()
    assert not task.running
    await task.stop()  # twice is fine


async def test_a_loop_that_returns_is_restarted_too(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    third = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()

    task = Supervised("poller", loop, restart_delay=0.001, max_delay=0.001)
    task.start()
    await asyncio.wait_for(third.wait(), 5)
    await task.stop()
    assert any("poller returned" in r.getMessage() for r in caplog.records)


async def test_logged_jobs_and_tasks_name_their_failures(caplog: pytest.LogCaptureFixture) -> None:
    async def job(x: int) -> None:
        raise ValueError(f"bad {x}")

    caplog.set_level(logging.ERROR, "router.supervise")
    await logged("nightly prune", job)(3)  # does not raise
    assert "background job nightly prune failed" in caplog.text
    task = asyncio.create_task(job(4), name="decision PJSIP/a-1")
    await asyncio.wait([task])
    log_task_failure(task)
    assert "task decision PJSIP/a-1 failed" in caplog.text
    assert "bad 4" in caplog.text


def test_throttle_logs_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = Throttle(logging.getLogger("t"), interval=60, clock=lambda: now[0])
    caplog.set_level(logging.ERROR, "t")
    for _ in range(1000):
        try:
            raise KeyError("x")
        except KeyError:
            throttle.exception("BridgeEnter", "event %s skipped", "BridgeEnter")
    assert len(caplog.records) == 1
    now[0] = 61.0
    try:
        raise KeyError("x")
    except KeyError:
        assert throttle.exception("BridgeEnter", "event %s skipped", "BridgeEnter")
    assert len(caplog.records) == 2
    assert "999 more like it suppressed" in caplog.records[1].getMessage()
    try:
        raise KeyError("y")
    except KeyError:
        assert throttle.exception("Hangup", "event %s skipped", "Hangup")  # another key
