"""The dialplan audit after Asterisk reloads its dialplan, on the real
Asterisk 22 (issue 16): ``module reload pbx_config`` sends ``Reload`` with
``Module: pbx_config`` (``core reload``: ``Module: All``) to a manager user
with ``read = system``; ``dialplan reload`` sends no event at all, which
this test also pins down (docs/asterisk.md says to run ``callrouter check
--asterisk`` after it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest

import router.dialplan_watch
import router.engine
from router.config import load_config
from router.sandbox import Sandbox
from router.testing import serving, shipped_dialplan
from tests.integration._live import TEST_QUEUE, quiet_engine, sales_router_toml
from tests.integration.conftest import AMI_TRANSPORTS, ami_url
from tests.unit.waiting import eventually

pytestmark = pytest.mark.integration


def audits(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(("dialplan: ", "dialplan checked at "))
    ]


async def test_a_reload_that_breaks_the_inbound_context_is_logged_at_once(
    queue_box: Sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Audits at most once a second here (10 s in service): the reload below
    # comes a second or two after the start's audit.
    monkeypatch.setattr(router.dialplan_watch, "AUDIT_INTERVAL", 1.0)
    caplog.set_level(logging.INFO, logger="router.engine")
    engine = quiet_engine(load_config(sales_router_toml(queue_box, tmp_path)))
    async with serving(engine):
        await eventually(lambda: audits(caplog), "the audit at start", 10)
        assert audits(caplog)[0].startswith("dialplan checked at start: ")
        # dialplan reload: Asterisk 22 says nothing, so nothing is checked.
        queue_box.set_dialplan(TEST_QUEUE)  # the inbound context is gone
        await asyncio.sleep(1.5)
        assert len(audits(caplog)) == 1
        await asyncio.to_thread(queue_box.cli, "module reload pbx_config")
        await eventually(lambda: len(audits(caplog)) > 1, "an audit after the reload", 5)
        assert any(
            line.startswith("dialplan: ") and "callrouter-inbound" in line
            for line in audits(caplog)[1:]
        ), audits(caplog)


async def test_a_dialplan_reload_is_caught_by_the_timed_check_logged_once(
    queue_box: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``dialplan reload`` sends no event, so the engine also looks every
    ``[router] dialplan_audit_interval`` (300 s; 1 s here, below what
    router.toml takes) and logs only what changed: the broken context once,
    not every interval, and its repair once."""
    caplog.set_level(logging.INFO, logger="router.engine")
    config = load_config(sales_router_toml(queue_box, tmp_path))
    assert config.router.dialplan_audit_interval == 300
    config = replace(config, router=replace(config.router, dialplan_audit_interval=1.0))
    engine = quiet_engine(config)
    async with serving(engine):
        await eventually(lambda: audits(caplog), "the audit at start", 10)
        assert audits(caplog)[0].startswith("dialplan checked at start: ")
        await asyncio.sleep(2.5)  # timed checks that find the same say nothing
        assert len(audits(caplog)) == 1, audits(caplog)
        await asyncio.to_thread(queue_box.set_dialplan, TEST_QUEUE)  # dialplan reload
        await eventually(lambda: len(audits(caplog)) > 1, "an audit after the reload", 5)
        await asyncio.sleep(3.5)  # three more checks, the same findings
        broken = audits(caplog)[1:]
        assert broken, audits(caplog)
        assert all(line.startswith("dialplan: ") for line in broken), broken
        assert any("callrouter-inbound" in line for line in broken), broken
        assert any(
            r.getMessage().startswith("dialplan changed since it was last checked")
            for r in caplog.records
        )
        await asyncio.to_thread(queue_box.set_dialplan, shipped_dialplan() + TEST_QUEUE)
        await eventually(lambda: len(audits(caplog)) > 1 + len(broken), "the repair logged", 5)
        await asyncio.sleep(2.5)
        (repaired,) = audits(caplog)[1 + len(broken) :]
        assert repaired.startswith("dialplan checked at the timed check: ")


@pytest.mark.parametrize("ami_transport", AMI_TRANSPORTS, indirect=True)
async def test_a_restart_that_took_a_context_away_is_logged_when_asterisk_is_back(
    queue_box: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture, ami_transport: str
) -> None:
    """Asterisk restarted (not reloaded) to take an edited extensions.conf that
    lost the rules' context: said when Asterisk is back, not by the timed look
    300 s later, while Asterisk hung up every call redirected there. The
    stream's gap asks for the look, and over TCP the login's FullyBooted too
    (over AJAM a router logging in after the boot ended gets none)."""
    caplog.set_level(logging.INFO, logger="router.engine")
    config = load_config(sales_router_toml(queue_box, tmp_path))
    config = replace(
        config, asterisk=replace(config.asterisk, url=ami_url(queue_box, ami_transport))
    )
    engine = quiet_engine(config)
    async with serving(engine):
        await eventually(lambda: audits(caplog), "the audit at start", 10)
        assert audits(caplog)[0].startswith("dialplan checked at start: ")
        # extensions.conf edited without [test-queue], and Asterisk restarted.
        await asyncio.to_thread(queue_box.set_dialplan, shipped_dialplan(), reload=False)
        await asyncio.to_thread(queue_box.restart)
        await eventually(lambda: len(audits(caplog)) > 1, "the look after the restart", 20)
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dialplan")]
        assert said[1].startswith("dialplan changed since it was last checked ("), said
        assert any(
            "redirects to context 'test-queue', which Asterisk's dialplan does not have" in line
            for line in said[2:]
        ), said
