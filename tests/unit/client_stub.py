"""What the engine asks of any AMI client besides sending actions and reading
events, for tests that give the engine a client of their own, and an engine
set up on such a client."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from router.ami.message import Event, Response
from router.ami.protocol import ActionResult
from router.calllife.model import CallEvent
from router.engine import Engine, EngineOptions
from router.hookspecs import hookimpl
from router.plugins import Plugins
from router.testing.builders import make_config

#: One rule that routes every call to 101: the engine tests' usual decision.
EVERYONE = """version: 1
rules:
  - name: everyone
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""


def first_to_102(name: str, condition: str) -> str:
    """A rule ``name`` that sends a call to 102 when ``condition`` (its rule
    lines, indented as a rule's keys) holds, before :data:`EVERYONE`'s: the tests
    see from the extension which one decided."""
    head, everyone = EVERYONE.split("rules:\n")
    lines = "".join(f"    {line}\n" for line in condition.strip().splitlines())
    rule = (
        f"  - name: {name}\n    on: call\n{lines}"
        '    do:\n      - redirect: {context: callrouter-dial, exten: "102"}\n'
    )
    return f"{head}rules:\n{rule}{everyone}"


class Told:
    """A plugin told the call life, as the 1C plugin is: with one the engine
    follows CEL (without one it does not); ``events`` in the order told."""

    __name__ = "told"

    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    @hookimpl
    def callrouter_call_event(self, event: CallEvent) -> None:
        self.events.append(event)


class ClientStub:
    """A logged-in client that takes the engine's event selection and ignores
    its narrowing and urgency hints (the read-cutting marker is kept, for
    tests); subclasses add ``send`` and the reading."""

    logged_in = True
    session_generation = 1
    event_selection: Any = None
    #: Where the engine asked a socket client to cut its reads (``set_urgent``).
    urgent_marker: bytes | None = None
    urgent_peek: Any = None

    async def set_events(self, selection: Any) -> None:
        self.event_selection = selection

    def set_urgent(
        self, test: Any, *, marker: bytes | None = None, peek: Any = None, early: Any = None
    ) -> None:
        self.urgent_marker = marker
        self.urgent_peek = peek

    def set_narrowing(self, narrow: Any) -> None:
        pass

    def refusal_reported(self, name: str) -> None:
        pass

    async def login(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class ConfirmingClient(ClientStub):
    """Answers every action with Success, each kept in ``sent``; once ``engine``
    is set, a Redirect confirms itself (the engine sees the channel's Newexten
    in the context it was sent to)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.engine: Engine | None = None

    async def send(
        self, name: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> ActionResult:
        self.sent.append((name, dict(params or {})))
        if name == "Redirect" and self.engine is not None:
            p = dict(params or {})
            asyncio.get_running_loop().call_soon(
                self.engine.executor.observe,
                Event(
                    (("Event", "Newexten"), ("Channel", p["Channel"]), ("Context", p["Context"]))
                ),
            )
        return ActionResult(Response((("Response", "Success"),)))


async def engine_on(tmp_path: Path, rules: str, client: ClientStub, *plugins: object) -> Engine:
    """An engine with ``rules`` and ``plugins`` on ``client``, set up (not started):
    no rule-file watch, no live-instance heartbeat."""
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    config = make_config(state_dir=tmp_path / "state")
    config = replace(config, router=replace(config.router, rules=(path,)))
    engine = Engine(
        config,
        plugins=Plugins.load(extra=plugins),
        client=client,  # type: ignore[arg-type]
        options=EngineOptions(watch_interval=0, live_heartbeat=0),
    )
    await engine.setup()
    return engine
