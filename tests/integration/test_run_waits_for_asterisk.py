"""``callrouter run`` started while Asterisk is away (a boot where Asterisk
comes up later, a PBX restart or upgrade while the service restarts). It used
to exit at once (`cannot connect to Asterisk`): under the systemd unit,
``Restart=always`` with ``RestartSec=2`` then used up ``StartLimitBurst=10`` in
about half a minute, systemd gave up, and callrouter stayed down after
Asterisk came back, though the unit says "callrouter reconnects whenever it
comes back". Now it waits, says why, and starts when Asterisk answers
(issue 16)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import logged, start_run, tail

pytestmark = pytest.mark.integration


async def test_run_started_while_asterisk_is_down_waits_then_routes(
    queue_box: Sandbox, queue_placer: CallPlacer, tmp_path: Path
) -> None:
    await asyncio.to_thread(queue_box.stop, phones=False)
    proc, log_path = start_run(tmp_path, queue_box.url, queue_box.secret)
    try:
        waiting = await logged(proc, log_path, "Asterisk does not answer (", 20)
        assert waiting["level"] == "WARNING"
        assert "waiting for it; calls take the dialplan's default route" in waiting["message"]
        await asyncio.sleep(3)
        assert proc.poll() is None, tail(log_path)  # still there
        await asyncio.to_thread(queue_box.launch)
        await logged(proc, log_path, "ready: routing calls", 15)
        await asyncio.sleep(1.5)  # past the live-instance settle time
        call = await queue_placer.place("74950000001", "79161234567")
        await queue_placer.wait_all([call], 10)
        assert call.destination == "test-queue,sales", tail(log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0


async def test_a_stop_signal_ends_the_wait_with_status_0(tmp_path: Path) -> None:
    proc, log_path = start_run(tmp_path, "http://127.0.0.1:9/asterisk", "s")
    try:
        await logged(proc, log_path, "Asterisk does not answer (", 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, tail(log_path)
    assert time.monotonic() - started < 3
