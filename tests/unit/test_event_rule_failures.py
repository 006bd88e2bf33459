"""An ``on: event`` rule's action that goes wrong is said: no decision line
tells it (hnew31's trial: a rule whose template made the UserEvent name
``CallRouterLive`` was refused, as security.md says, and nothing anywhere
showed it)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.ami.message import Event
from router.commands.preflight import PROBE_EVENT
from router.engine import EngineOptions
from router.hookspecs import hookimpl

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

REPO = Path(__file__).parents[2]

RULES = """version: 1
rules:
  - name: tell-crm
    on: event Hangup
    do:
      - ami: {action: UserEvent, userevent: "{event.x}"}
"""


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "tell-crm" in r.getMessage()
    ]


async def test_a_failed_event_rule_action_is_a_warning_once_a_minute(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    await engine_factory(
        tmp_path / "rules.yaml", options=EngineOptions(watch_interval=0, live_heartbeat=0)
    )
    for n in range(3):
        ajam_replay.queue_event("Hangup", Channel=f"PJSIP/9-0{n}", Cause="16", X="CallRouterLive")
    for _ in range(200):
        if _said(caplog):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    said = _said(caplog)
    assert len(said) == 1, said
    assert "event rule 'tell-crm' on Hangup: ami failed: " in said[0]
    assert "CallRouterLive" in said[0]
    assert ajam_replay.count("UserEvent") == 0  # refused, as security.md says
    # The line operations.md (and its Russian twin) lists among those worth alerting on.
    for page in ("docs/operations.md", "docs/ru/operations.md"):
        text = " ".join((REPO / page).read_text(encoding="utf-8").split())
        shown = re.search(r"`(event rule 'NAME' on EVENT: [^`]*)`", text)
        assert shown is not None, f"{page} does not show the line"
        pattern = re.escape(shown.group(1))
        for word, value in (("NAME", "[^']+"), ("EVENT", r"\w+"), ("KIND", r"\w+")):
            pattern = pattern.replace(word, value)
        assert re.fullmatch(pattern.replace("REASON", ".+"), said[0]), (page, said[0])


async def test_an_event_rule_whose_actions_work_says_nothing(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    await engine_factory(
        tmp_path / "rules.yaml", options=EngineOptions(watch_interval=0, live_heartbeat=0)
    )
    ajam_replay.queue_event("Hangup", Channel="PJSIP/9-01", Cause="16", X="CrmHangup")
    for _ in range(200):
        if ajam_replay.count("UserEvent"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert ajam_replay.count("UserEvent") == 1
    assert not _said(caplog)


class _Reader:
    """A plugin that reads every UserEvent."""

    def __init__(self) -> None:
        self.__name__ = "reader"
        self.seen: list[str] = []

    @hookimpl
    def callrouter_wanted_events(self) -> list[str]:
        return ["UserEvent"]

    @hookimpl
    def callrouter_event(self, event: Event, call: object) -> None:
        self.seen.append(event.get("UserEvent") or "")


async def test_check_asterisk_probe_reaches_no_rule_and_no_plugin(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    """hnew31's trial: `callrouter check --asterisk` run beside the service (as
    asterisk.md suggests after every dialplan reload) fired the live router's
    `on: event UserEvent` rule with its probe, `UserEvent(CallRouterCheck)`;
    like the heartbeats, it is callrouter's own and no rule's or plugin's."""
    (tmp_path / "rules.yaml").write_text(
        "version: 1\nrules:\n  - name: seen\n    on: event UserEvent\n    do:\n"
        '      - ami: {action: Setvar, variable: "SEEN_{event.userevent}", value: "1"}\n'
    )
    reader = _Reader()
    await engine_factory(
        tmp_path / "rules.yaml",
        plugins=[reader],
        options=EngineOptions(watch_interval=0, live_heartbeat=0),
    )
    ajam_replay.queue_event("UserEvent", UserEvent=PROBE_EVENT, Token="0a1b2c3d4e5f")
    ajam_replay.queue_event("UserEvent", UserEvent="CrmHangup")
    for _ in range(200):
        if ajam_replay.count("Setvar"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert [a.get("Variable") for a in ajam_replay.sent("Setvar")] == ["SEEN_CrmHangup"]
    assert reader.seen == ["CrmHangup"]
