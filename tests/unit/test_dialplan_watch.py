"""router/dialplan_watch.py: audits of one engine that overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from router.dialplan_audit import INBOUND_CONTEXT, MARKER, STAND_INS
from router.dialplan_watch import DialplanWatch
from tests.unit.test_check_asterisk import older_inbound


@dataclass
class Answer:
    response: dict[str, str] = field(default_factory=dict)
    items: Sequence[dict[str, str]] = ()
    unread_items: int = 0


class SlowWriter:
    """An Asterisk whose globals the audits read at once, but whose ``Setvar``
    from the task named ``slow`` lands late: the audit beside it has set both
    stand-ins and marked them by then."""

    def __init__(self) -> None:
        self.globals: dict[str, str] = {}

    async def action(
        self, name: str, params: Mapping[str, str] | None = None, *, check: bool = True
    ) -> Answer:
        params = params or {}
        await asyncio.sleep(0)
        if name == "ShowDialPlan":
            context = params.get("Context")
            return Answer(items=older_inbound() if context == INBOUND_CONTEXT else [{}])
        if name == "Getvar":
            return Answer({"Value": self.globals.get(params["Variable"], "")})
        assert name == "Setvar"
        task = asyncio.current_task()
        if task is not None and task.get_name() == "slow":
            await asyncio.sleep(0.05)
        self.globals[params["Variable"]] = params["Value"]
        return Answer()


def watch(client: SlowWriter) -> DialplanWatch:
    rules = SimpleNamespace(redirect_targets=lambda: ((), 0))
    metrics = SimpleNamespace(dialplan_problems=SimpleNamespace(set=lambda value: None))
    return DialplanWatch(
        cast("Any", client),
        lambda: cast("Any", rules),
        cast("Any", SimpleNamespace(dialplan=None, presence=None)),
        cast("Any", metrics),
        recording=False,
        connected=lambda: True,
        stopping=asyncio.Event(),
        spawn=lambda coroutine: coroutine.close(),
        stand_in=lambda: True,
    )


async def test_two_audits_at_once_leave_every_stand_in_marked() -> None:
    """hleft34c: two audits at once (a reload's beside the start's) each read
    the marker, then each wrote it from what it had read: the later write
    dropped the name the other had added, and the stand-in it named stood
    unmarked (a later audit, or `check`, took it for extensions.conf's)."""
    asterisk = SlowWriter()
    audits = watch(asterisk)
    await asyncio.gather(
        asyncio.create_task(audits.audit("a reload"), name="slow"),
        asyncio.create_task(audits.audit("the start"), name="fast"),
    )
    assert asterisk.globals == {
        MARKER: "callrouter:CALLROUTER_WAIT,CALLROUTER_DEFAULT",
        **STAND_INS,
    }


class ReloadMidway(SlowWriter):
    """An Asterisk whose ``dialplan reload`` lands while the audit looks: the
    [globals] pasted since clear the marker after the audit has read it."""

    def __init__(self) -> None:
        super().__init__()
        self.globals = {MARKER: "callrouter:CALLROUTER_WAIT", "CALLROUTER_WAIT": "4"}

    async def action(
        self, name: str, params: Mapping[str, str] | None = None, *, check: bool = True
    ) -> Answer:
        answer = await super().action(name, params, check=check)
        if name == "Getvar" and (params or {}).get("Variable") == MARKER:
            self.globals[MARKER] = ""  # CALLROUTER_GLOBALS_BY= of the [globals] reloaded
        return answer


async def test_the_marker_is_read_again_before_it_is_written() -> None:
    """hleft34c: the marker was written from the audit's first read of it:
    a reload meanwhile that made CALLROUTER_WAIT extensions.conf's (clearing
    the mark) was undone, and the value was called a callrouter's again."""
    asterisk = ReloadMidway()
    await watch(asterisk).audit("the start")
    assert asterisk.globals[MARKER] == "callrouter:CALLROUTER_DEFAULT"
