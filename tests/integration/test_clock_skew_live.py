"""callrouter on a host whose clock is not Asterisk's (docs/asterisk.md: AMI
over TLS "when callrouter is on another host"). A request's age is its
``Timestamp`` on Asterisk's clock against now: with this host 10 s ahead
every request looked older than its wait, every decision was ``late`` and
every call took its default route, with nothing in the log but the ``late``
lines. The engine now measures the difference (the quickest of a few
``Ping``s) at start and after each gap, allows for it and says so (issue 16)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from router.config import load_config
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import quiet_engine, sales_router_toml, serving_leniently

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
