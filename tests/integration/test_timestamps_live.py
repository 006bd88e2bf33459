"""``timestampevents = yes`` (README, docs/asterisk-ajam.md) is what tells
callrouter how old a routing request is. Without it Asterisk's events carry no
``Timestamp``: a router that fell behind (a stall; here on the sandbox a
SIGSTOP of 6 s) then took a request 6 s old for a new one and redirected the
call out of the queue of its default route. Nothing said so. Now ``callrouter
check --asterisk`` fails on it and ``callrouter run`` warns once (issue 16)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.commands.preflight import check_asterisk
from router.config import load_config
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import quiet_engine, sales_router_toml, serving_leniently

pytestmark = pytest.mark.integration

NO_STAMP = "carry no Timestamp: set timestampevents = yes in manager.conf [general]"


def set_timestamps(box: Sandbox, on: bool) -> None:
    conf = box.inst / "etc" / "manager.conf"
    text = conf.read_text(encoding="utf-8")
    old, new = ("no", "yes") if on else ("yes", "no")
    conf.write_text(
        text.replace(f"timestampevents = {old}", f"timestampevents = {new}"), encoding="utf-8"
    )
    box.cli("manager reload")


async def check(box: Sandbox) -> list[str]:
    settings = ClientSettings(url=box.url, username="router", secret=box.secret)
    async with AJAMClient(settings) as client:
        return [f"{f.level} {f.text}" for f in await check_asterisk(client)]


async def test_check_fails_without_timestamps_and_passes_with_them(queue_box: Sandbox) -> None:
    assert not [line for line in await check(queue_box) if NO_STAMP in line]
    await asyncio.to_thread(set_timestamps, queue_box, False)
    (line,) = [line for line in await check(queue_box) if NO_STAMP in line]
    assert line.startswith("fail Asterisk's events carry no Timestamp")


async def test_run_warns_once_when_requests_carry_no_timestamp(
    queue_box: Sandbox,
    queue_placer: CallPlacer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="router")
    await asyncio.to_thread(set_timestamps, queue_box, False)
    engine = quiet_engine(load_config(sales_router_toml(queue_box, tmp_path)))
    async with serving_leniently(engine):
        calls = [await queue_placer.place("74950000001", n) for n in ("79161234567", "79161234568")]
        await queue_placer.wait_all(calls, 10)
        await engine.wait_idle()
    assert [c.destination for c in calls] == ["test-queue,sales"] * 2  # routing goes on
    warned = [r.getMessage() for r in caplog.records if NO_STAMP in r.getMessage()]
    assert len(warned) == 1, warned
    assert (
        "after a stall it may redirect a call that has already taken its default route"
        in (warned[0])
    )
