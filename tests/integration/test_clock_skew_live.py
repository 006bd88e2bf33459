"""callrouter on a host whose clock is not Asterisk's (docs/asterisk.md: AMI
over TLS "when callrouter is on another host"). A request's age is its
``Timestamp`` on Asterisk's clock against now: with this host 10 s ahead
every request looked older than its wait, every decision was ``late`` and
every call took its default route, with nothing in the log but the ``late``
lines. The engine now measures the difference (the quickest of a few
``Ping``s) at start and after each gap, allows for it and says so (issue 16)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import (
    logged,
    quiet_engine,
    records,
    sales_router_toml,
    serving_leniently,
    start_run,
    stop_process,
    tail,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("skew", [10.0, -10.0])
async def test_calls_are_routed_whatever_this_hosts_clock_says(
    queue_box: Sandbox,
    queue_placer: CallPlacer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    skew: float,
) -> None:
    caplog.set_level(logging.INFO, logger="router")
    engine = quiet_engine(load_config(sales_router_toml(queue_box, tmp_path)))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)  # this host's clock is off
    async with serving_leniently(engine):
        calls = [await queue_placer.place("74950000001", n) for n in ("79161234567", "79161234568")]
        await queue_placer.wait_all(calls, 10)
        await engine.wait_idle()
    assert [c.destination for c in calls] == ["test-queue,sales"] * 2
    assert [r.outcome for r in engine.records] == ["executed"] * 2
    side = "behind" if skew > 0 else "ahead of"
    (warned,) = [r.getMessage() for r in caplog.records if "Asterisk's clock is" in r.getMessage()]
    assert warned.startswith(f"Asterisk's clock is 10.0 s {side} this host's"), warned


async def test_an_instance_on_a_host_a_minute_off_still_stands_by_for_the_live_one(
    queue_box: Sandbox,
    queue_placer: CallPlacer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A heartbeat carries when it was sent on Asterisk's clock and another
    instance's stale by more than 30 s is ignored (a recorded one replayed,
    docs/operations.md). Each host reads Asterisk's clock with the difference it
    measured: an instance whose host is a minute ahead still hears the live
    one's beats, stands by, and its own are heard (no stale warning either side)."""
    caplog.set_level(logging.INFO, logger="router")
    first = tmp_path / "first"
    first.mkdir()
    proc, log_path = start_run(first, queue_box.url, queue_box.secret)
    try:
        await logged(proc, log_path, "ready: routing calls", 20)
        second = tmp_path / "second"
        second.mkdir()
        engine = Engine(
            load_config(sales_router_toml(queue_box, second)),
            plugins=Plugins.load(),
            options=EngineOptions(watch_interval=0),
        )
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 60.0)  # this host's clock is off
        async with serving_leniently(engine):
            await asyncio.sleep(1.5)  # settled, the other's answer heard
            call = await queue_placer.place("74950000001", "79161234567")
            await queue_placer.wait_all([call], 10)
            await engine.wait_idle()
            await asyncio.sleep(4.5)  # two more beats each way
        assert call.destination == "test-queue,sales"
        assert [r.outcome for r in engine.records] == ["shadow"], tail(log_path)
        messages = [r.getMessage() for r in caplog.records]
        assert any("acts as in shadow mode" in m for m in messages), messages
        assert not any("stale" in m for m in messages), messages
        assert not any("stale" in str(r.get("message", "")) for r in records(log_path))
        assert any(
            "another live callrouter started on this Asterisk" in str(r.get("message", ""))
            for r in records(log_path)
        ), tail(log_path)
    finally:
        stop_process(proc)
