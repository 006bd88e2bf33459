"""An engine logged in to the fake Asterisk over TCP (tests/unit/ami/tcp_fake.py),
for tests that look at when the Redirect is written against how much of a read
was parsed by then (issue 16: the request's read cut, the early route)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from tests.unit.ami.tcp_fake import FakeAMI


@asynccontextmanager
async def engine_on_tcp(
    tmp_path: Path,
    rules_text: str,
    plugins: Iterable[object] = (),
    setup: Callable[[FakeAMI], None] | None = None,
) -> AsyncIterator[tuple[Engine, FakeAMI, list[int]]]:
    """An engine logged in to a fake Asterisk over TCP; the list gets, for each
    Redirect written, how many unwanted events the parser had dropped by then
    (counted from when the engine is yielded). ``setup`` gets the fake before
    the engine starts (a misbehaviour for its start's reconcile)."""
    fake = await FakeAMI(secret="s").start()
    if setup is not None:
        setup(fake)
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text, encoding="utf-8")
    config = tmp_path / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "{fake.url}"\nusername = "router"\nsecret = "s"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n'
        '[plugins]\ndisabled = ["onec"]\n',
        encoding="utf-8",
    )
    engine = Engine(
        load_config(config, environ={}),
        plugins=Plugins.load(extra=list(plugins), disabled=["onec"]),
        options=EngineOptions(watch_interval=0, live_heartbeat=0),
    )
    dropped: list[int] = []
    try:
        await engine.start()
        task = asyncio.create_task(engine.serve())
        await asyncio.wait_for(engine.ready.wait(), 5)
        conn = engine.ami._conn  # type: ignore[union-attr]
        assert conn is not None
        send = conn.send
        start = conn._parser.skipped

        def sending(action: Any) -> Any:
            if action.name == "Redirect":
                dropped.append(conn._parser.skipped - start)
            return send(action)

        conn.send = sending  # type: ignore[method-assign]
        # The stream takes reads in the read only once a poll has come back.
        fake.push(("Event", "Hangup"), ("Channel", "PJSIP/b-00000002"))
        for _ in range(200):
            if engine._stream is not None and engine._stream.events_seen:
                break
            await asyncio.sleep(0.01)
        start = conn._parser.skipped
        yield engine, fake, dropped
        engine.request_stop()
        await asyncio.wait_for(task, 5)
    finally:
        await engine.stop()
        await fake.stop()
