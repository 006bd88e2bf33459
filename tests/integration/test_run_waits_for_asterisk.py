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
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from router.ami.client import AJAMClient, ClientSettings
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


def start_run(folder: Path, url: str, secret: str) -> tuple[subprocess.Popen[bytes], Path]:
    rules = folder / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    config = folder / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "router"\nsecret_env = "CR_SECRET"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{folder / "state"}"\n'
        'log_format = "json"\n',
        encoding="utf-8",
    )
    log_path = folder / "router.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "CR_SECRET": secret},
        )
    return proc, log_path


def tail(log_path: Path) -> str:
    return log_path.read_text(encoding="utf-8")[-3000:]


def records(log_path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"message": line})
    return out


async def logged(
    proc: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for record in records(log_path):
            if text in str(record.get("message", "")):
                return record
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n" + tail(log_path))
        await asyncio.sleep(0.1)
    raise AssertionError(f"never logged {text!r}:\n" + tail(log_path))


async def test_run_started_while_asterisk_is_down_waits_then_routes(
    box: Sandbox, placer: CallPlacer, tmp_path: Path
) -> None:
    await asyncio.to_thread(box.stop, phones=False)
    proc, log_path = start_run(tmp_path, box.url, box.secret)
    try:
        waiting = await logged(proc, log_path, "Asterisk does not answer at", 20)
        assert waiting["level"] == "WARNING"
        assert "waiting for it; calls take the dialplan's default route" in waiting["message"]
        await asyncio.sleep(3)
        assert proc.poll() is None, tail(log_path)  # still there
        await asyncio.to_thread(box.launch)
        await logged(proc, log_path, "ready: routing calls", 15)
        await asyncio.sleep(1.5)  # past the live-instance settle time
        call = await placer.place("74950000001", "79161234567")
        await placer.wait_all([call], 10)
        assert call.destination == "test-queue,sales", tail(log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0


async def test_a_stop_signal_ends_the_wait_with_status_0(tmp_path: Path) -> None:
    proc, log_path = start_run(tmp_path, "http://127.0.0.1:9/asterisk", "s")
    try:
        await logged(proc, log_path, "Asterisk does not answer at", 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, tail(log_path)
    assert time.monotonic() - started < 3
