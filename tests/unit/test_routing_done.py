"""A routing says when it is over (issue 16): ``RequestInfo.done``.

The engine tells ``callrouter_decision`` only for a call its tracker knows at
the routing's end. A plugin that holds a call's history back until the
decision (the 1C plugin) could not tell "not yet" from "never" and waited 15 s
for a call the tracker never knew. The request a lookup gets now carries a
future that completes when the routing is over: after the decision, if one
comes, never before it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from router.calls import Call
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.hookspecs import hookimpl
from router.plugins import Plugins
from router.request import RequestInfo
from router.rules.registry import Registry
from tests.unit.test_engine_unit import FakeClient, request

RULES = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: crm(caller.number)
    when: owner
    do:
      - redirect: {context: callrouter-dial, exten: "{owner}"}
"""


class Crm:
    """A lookup that keeps the request it was asked with; a decision recorder."""

    def __init__(self) -> None:
        self.requests: list[RequestInfo] = []
        self.decided: list[tuple[str, bool]] = []

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def crm(number: str, request: RequestInfo | None = None) -> str:
            assert request is not None
            self.requests.append(request)
            await asyncio.sleep(0)
            return "101"

        registry.add_lookup("crm", crm)

    @hookimpl
    def callrouter_decision(self, call: Call, decision: Any, trace: Any, outcome: str) -> None:
        done = self.requests[-1].done
        assert done is not None
        self.decided.append((call.linkedid, done.done()))


async def engine_for(tmp_path: Path, crm: Crm) -> Engine:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
    )
    client = FakeClient()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=client,  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[crm]),
        options=EngineOptions(watch_interval=0),
    )
    client.engine = engine
    await engine.setup()
    return engine


async def test_a_routing_is_over_after_its_decision(tmp_path: Path) -> None:
    crm = Crm()
    engine = await engine_for(tmp_path, crm)
    await engine.handle_event(request("PJSIP/trunk-1"))
    await engine.wait_idle()
    (asked,) = crm.requests
    assert asked.done is not None
    assert asked.done.done()
    # The decision was told while the routing was not over yet.
    assert crm.decided == [("PJSIP/trunk-1", False)]


async def test_a_routing_of_a_call_nobody_tracks_is_over_without_a_decision(
    tmp_path: Path,
) -> None:
    crm = Crm()
    engine = await engine_for(tmp_path, crm)
    # Routed from the request's own text, the call never reached the tracker.
    assert engine.router.accept(request("PJSIP/trunk-2"), None, early=True)
    await engine.wait_idle()
    (asked,) = crm.requests
    assert asked.linkedid == "PJSIP/trunk-2"
    assert asked.done is not None
    assert asked.done.done()
    assert crm.decided == []  # and none will come: done says so
