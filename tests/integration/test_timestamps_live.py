"""``timestampevents = yes`` (README, docs/asterisk-ajam.md) is what tells
callrouter how old a routing request is. Without it Asterisk's events carry no
``Timestamp``: a router that fell behind (a stall; here on the sandbox a
SIGSTOP of 6 s) then took a request 6 s old for a new one and redirected the
call out of the queue of its default route. Nothing said so. Now ``callrouter
check --asterisk`` fails on it and ``callrouter run`` warns once (issue 16)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from router.ami.client import AJAMClient, ClientSettings
from router.commands.preflight import check_asterisk
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
NO_STAMP = "carry no Timestamp: set timestampevents = yes in manager.conf [general]"


def set_timestamps(box: Sandbox, on: bool) -> None:
    conf = box.inst / "etc" / "manager.conf"
    text = conf.read_text(encoding="utf-8")
    old, new = ("no", "yes") if on else ("yes", "no")
    conf.write_text(
        text.replace(f"timestampevents = {old}", f"timestampevents = {new}"), encoding="utf-8"
    )
    box.cli("manager reload")


@pytest.fixture
def box(scratch_sandbox: Sandbox) -> Sandbox:
    scratch_sandbox.set_dialplan(shipped_dialplan() + TEST_CONTEXTS)
    return scratch_sandbox


@pytest_asyncio.fixture
async def placer(box: Sandbox) -> AsyncIterator[CallPlacer]:
    settings = ClientSettings(url=box.url, username="admin", secret=box.secret, request_timeout=3.0)
    async with AJAMClient(settings) as client, CallPlacer(client) as p:
        yield p


async def check(box: Sandbox) -> list[str]:
    settings = ClientSettings(url=box.url, username="router", secret=box.secret)
    async with AJAMClient(settings) as client:
        return [f"{f.level} {f.text}" for f in await check_asterisk(client)]


async def test_check_fails_without_timestamps_and_passes_with_them(box: Sandbox) -> None:
    assert not [line for line in await check(box) if NO_STAMP in line]
    await asyncio.to_thread(set_timestamps, box, False)
    (line,) = [line for line in await check(box) if NO_STAMP in line]
    assert line.startswith("fail Asterisk's events carry no Timestamp")


async def test_run_warns_once_when_requests_carry_no_timestamp(
    box: Sandbox, placer: CallPlacer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="router")
    await asyncio.to_thread(set_timestamps, box, False)
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
    assert [c.destination for c in calls] == ["test-queue,sales"] * 2  # routing goes on
    warned = [r.getMessage() for r in caplog.records if NO_STAMP in r.getMessage()]
    assert len(warned) == 1, warned
    assert (
        "after a stall it may redirect a call that has already taken its default route"
        in (warned[0])
    )
