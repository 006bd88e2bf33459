"""Engines for tests: built on the fake Asterisk (or a sandbox), started, stopped."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from router.ami.client import ClientSettings
from router.ami.connect import open_client
from router.calllife.settings import HistorySettings
from router.config import AsteriskSettings, Config, PluginSettings, RouterSettings
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.testing.replay import ReplayAsterisk

if TYPE_CHECKING:
    import httpx

    from router.ami.transport import Transport
    from router.api.settings import ApiSettings
    from router.recordings.settings import RecordingSettings
    from router.sandbox import Sandbox

__all__ = ["EngineFactory", "Engines", "serving"]


def _rule_paths(
    rules: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> tuple[Path, ...]:
    if isinstance(rules, str | os.PathLike):
        return (Path(rules),)
    return tuple(Path(r) for r in rules)


@dataclass
class Engines:
    """Builds, starts and serves engines on one fake (or a sandbox); stops them all.

    The ``engine_factory`` fixture is one of these. Outside pytest (a demo, a
    benchmark): ``engines = Engines(ReplayAsterisk(), state_root)``,
    ``engine = await engines(rules, plugins=[...])``, then ``await engines.close()``.
    """

    replay: ReplayAsterisk
    state_root: Path
    running: list[tuple[Engine, asyncio.Task[None] | None]] = field(default_factory=list)
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def __call__(
        self,
        rules: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        plugins: Iterable[object] = (),
        settings: Mapping[str, Mapping[str, object]] | None = None,
        transport: Transport | httpx.AsyncBaseTransport | None = None,
        sandbox: Sandbox | None = None,
        username: str = "router",
        shadow: bool = False,
        options: EngineOptions | None = None,
        entry_points: bool = False,
        serve: bool = True,
        api: ApiSettings | None = None,
        recordings: RecordingSettings | None = None,
        ami: Literal["ajam", "tcp"] = "ajam",
        history: HistorySettings | None = None,
        state_dir: Path | None = None,
    ) -> Engine:
        """A started engine on ``rules``, serving unless ``serve=False``.

        On the fake Asterisk unless ``transport=`` (any client transport) or
        ``sandbox=`` (a real Asterisk) is given. Built-in plugins are loaded;
        installed ones (entry points) only with ``entry_points=True``.
        ``api`` turns the HTTP API on (``[api]``), served while the engine runs.
        ``recordings`` is ``[recordings]`` (the ``record`` action and the catalog).
        ``history`` is ``[history]`` (the CEL store replays read, docs/history.md).
        ``ami="tcp"`` reaches the sandbox over native AMI (``sandbox.tcp_url``)
        instead of AJAM, so a test can run over both transports.
        ``state_dir`` is ``[router] state_dir`` (a new folder for each engine
        unless given: give an earlier engine's, ``engine.state_dir``, once it
        stopped, for a restart).
        """
        if ami == "tcp" and sandbox is None:
            raise ValueError("ami='tcp' needs sandbox= (the fake Asterisk speaks AJAM)")
        if sandbox is not None and transport is not None:
            raise ValueError("give either transport= or sandbox=, not both")
        if sandbox is not None:
            asterisk = AsteriskSettings(
                url=sandbox.tcp_url if ami == "tcp" else sandbox.url,
                username=username,
                auth="plain" if ami == "tcp" else "cookie",
                secret=sandbox.users().get(username, sandbox.secret),
            )
        else:
            asterisk = self.replay.asterisk_settings()
        if transport is None and sandbox is None:
            transport = self.replay.transport
        config = Config(
            asterisk=asterisk,
            router=RouterSettings(
                rules=_rule_paths(rules),
                state_dir=state_dir or self.state_root / f"engine{next(self._numbers)}",
                shadow=shadow,
            ),
            plugins=PluginSettings(
                settings=MappingProxyType(
                    {k: MappingProxyType(dict(v)) for k, v in (settings or {}).items()}
                )
            ),
            api=api,
            recordings=recordings,
            history=history or HistorySettings(),
        )
        client = open_client(ClientSettings.from_config(asterisk), transport=transport)
        engine = Engine(
            config,
            plugins=Plugins.load(extra=plugins, entry_points=entry_points),
            client=client,
            # One fake Asterisk, one engine: no file watcher, no live-instance
            # heartbeats, no privilege probe (give options= to test those).
            options=options
            or EngineOptions(watch_interval=0, live_heartbeat=0, check_privileges=False),
        )
        task: asyncio.Task[None] | None = None
        try:
            await engine.start()
            if serve:
                task = asyncio.ensure_future(engine.serve())
                # asyncio.timeout, not wait_for: a test's cancellation in the
                # step the engine got ready is not swallowed (router.tasks.wait_set).
                async with asyncio.timeout(10):
                    await engine.ready.wait()
        except BaseException:
            await engine.stop()
            raise
        self.running.append((engine, task))
        return engine

    async def close(self) -> None:
        for engine, task in reversed(self.running):
            engine.request_stop()
            if task is not None:
                try:
                    await asyncio.wait_for(task, 10)
                except TimeoutError:  # pragma: no cover - a stuck serve loop
                    task.cancel()
            await engine.stop()
        self.running.clear()


#: The ``engine_factory`` fixture's type: ``await engine_factory(rules, ...)``.
EngineFactory = Engines


@asynccontextmanager
async def serving(
    engine: Engine, *, ready_timeout: float = 10.0, stop_timeout: float = 30.0
) -> AsyncIterator[Engine]:
    """Start ``engine``, serve it until it is ready, and stop it on the way out.

    For an engine built from a config of its own (a router.toml the test wrote);
    :class:`Engines` builds and serves engines from rules and settings.
    """
    task: asyncio.Task[None] | None = None
    try:
        await engine.start()
        task = asyncio.ensure_future(engine.serve())
        async with asyncio.timeout(ready_timeout):
            await engine.ready.wait()
        yield engine
    finally:
        engine.request_stop()
        if task is not None:
            await asyncio.wait_for(task, stop_timeout)
        await engine.stop()
