"""The dialplan audit runs again when Asterisk reports a dialplan reload
(issue 16): a ``Reload`` event whose ``Module`` is ``pbx_config`` (``module
reload pbx_config``, the AMI ``Reload`` action) or ``All`` (``core reload``),
as Asterisk 22.10 sends them (checked on the sandbox; ``dialplan reload``
sends no event). A reload storm makes one audit per interval, not one each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import router.engine
from router.ami.message import Event, Response
from router.ami.protocol import ActionResult
from router.dialplan import INBOUND_CONTEXT
from router.errors import AMIActionError
from tests.unit.client_stub import EVERYONE, ClientStub, engine_on


class NoInbound(ClientStub):
    """An Asterisk whose reloaded dialplan lost ``[callrouter-inbound]``."""

    def __init__(self) -> None:
        self.inbound_asked = 0

    async def action(
        self, name: str, params: Mapping[str, Any] | None = None, **_: Any
    ) -> ActionResult:
        assert name == "ShowDialPlan", name
        context = dict(params or {}).get("Context")
        if context == INBOUND_CONTEXT:
            self.inbound_asked += 1
            raise AMIActionError(
                name, Response((("Response", "Error"), ("Message", "Did not find context")))
            )
        return ActionResult(Response((("Response", "Success"),)))


def reload(module: str) -> Event:
    return Event((("Event", "Reload"), ("Module", module), ("Status", "0")))


async def settle(engine: router.engine.Engine) -> None:
    while (task := engine._reload_audit) is not None:
        await asyncio.wait((task,))
    await asyncio.sleep(0)


@pytest.mark.parametrize("module", ["pbx_config", "pbx_config.so", "All"])
async def test_a_dialplan_reload_is_audited_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, module: str
) -> None:
    caplog.set_level(logging.WARNING, logger="router.engine")
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.handle_event(reload(module))
    await settle(engine)
    assert client.inbound_asked == 1
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dialplan: ")]
    assert warned
    assert INBOUND_CONTEXT in warned[0]


async def test_another_modules_reload_is_not(tmp_path: Path) -> None:
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    for module in ("res_pjsip.so", "manager", "cdr"):
        await engine.handle_event(reload(module))
    await settle(engine)
    assert client.inbound_asked == 0


async def test_a_reload_storm_makes_one_audit_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty reloads at once (a script reloading in a loop): the first is
    audited at once, the others by a single audit one interval later."""
    monkeypatch.setattr(router.engine, "_AUDIT_INTERVAL", 0.3)
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    for _ in range(50):
        await engine.handle_event(reload("pbx_config"))
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    assert client.inbound_asked == 1
    await settle(engine)
    assert client.inbound_asked == 2
    await asyncio.sleep(0.4)
    assert client.inbound_asked == 2  # nothing more without a reload


async def test_the_audit_waiting_for_its_turn_ends_with_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop does not wait for an audit waiting for its turn, nor counts it
    as a decision in flight."""
    monkeypatch.setattr(router.engine, "_AUDIT_INTERVAL", 30.0)
    client = NoInbound()
    engine = await engine_on(tmp_path, EVERYONE, client)
    await engine.handle_event(reload("pbx_config"))
    await settle(engine)
    await engine.handle_event(reload("pbx_config"))
    waiting = engine._reload_audit
    assert waiting is not None
    assert waiting not in engine.router.tasks
    await asyncio.wait_for(engine.stop(), 5)
    await asyncio.sleep(0)
    assert waiting.cancelled()
    assert client.inbound_asked == 1


def test_reload_is_among_the_events_asked_for() -> None:
    from router.ami.event_filter import CORE_EVENTS

    assert "Reload" in CORE_EVENTS
