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
