"""callrouter on a host whose clock is not Asterisk's (docs/asterisk.md: AMI
over TLS "when callrouter is on another host"). A request's age is its
``Timestamp`` on Asterisk's clock against now: with this host 10 s ahead
every request looked older than its wait, every decision was ``late`` and
every call took its default route, with nothing in the log but the ``late``
lines. The engine now measures the difference (the quickest of a few
``Ping``s) at start and after each gap, allows for it and says so (issue 16)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from router.ami.client import AJAMClient, ClientSettings
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from router.testing import shipped_dialplan

pytestmark = pytest.mark.integration

RULES = """version: 1
rules:
  - name: sales
    on: call
    do:
      - redirect: {context: test-queue, exten: sales}
"""
TEST_CONTEXTS = """
[test-queue]
exten => _[a-z0-9].,1,NoOp(test-queue ${EXTEN})
 same => n,Wait(120)
"""


@pytest.fixture
def box(scratch_sandbox: Sandbox) -> Sandbox:
    scratch_sandbox.set_dialplan(shipped_dialplan() + TEST_CONTEXTS)
    return scratch_sandbox


@pytest_asyncio.fixture
async def placer(box: Sandbox) -> AsyncIterator[CallPlacer]:
    settings = ClientSettings(url=box.url, username="admin", secret=box.secret, request_timeout=3.0)
    async with AJAMClient(settings) as client, CallPlacer(client) as p:
        yield p


@pytest.mark.parametrize("skew", [10.0, -10.0])
async def test_calls_are_routed_whatever_this_hosts_clock_says(
    box: Sandbox,
    placer: CallPlacer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    skew: float,
) -> None:
    caplog.set_level(logging.INFO, logger="router")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret = "{box.secret}"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    engine = Engine(
        load_config(path),
        plugins=Plugins.load(),
        options=EngineOptions(watch_interval=0, live_heartbeat=0),
    )
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)  # this host's clock is off
    await engine.start()
    task = asyncio.ensure_future(engine.serve())
    try:
        await asyncio.wait_for(engine.ready.wait(), 10)
        calls = [await placer.place("74950000001", n) for n in ("79161234567", "79161234568")]
        await placer.wait_all(calls, 10)
        await engine.wait_idle()
    finally:
        engine.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await engine.stop()
    assert [c.destination for c in calls] == ["test-queue,sales"] * 2
    assert [r.outcome for r in engine.records] == ["executed"] * 2
    side = "behind" if skew > 0 else "ahead of"
    (warned,) = [r.getMessage() for r in caplog.records if "Asterisk's clock is" in r.getMessage()]
    assert warned.startswith(f"Asterisk's clock is 10.0 s {side} this host's"), warned
