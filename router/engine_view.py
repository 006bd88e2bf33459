"""The engine as plugins see it: :class:`router.hookspecs.EngineAPI`, and no more.

The engine hands this view, not itself, to ``callrouter_startup``,
``callrouter_execute`` and ``callrouter_shutdown``, so what a plugin can
reach is exactly what the contract promises: the AMI without its session
controls, the live calls without the tracker's write side, timed jobs
without the scheduler object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.ami.facade import AMI

if TYPE_CHECKING:  # pragma: no cover
    from router.calls import Call, CallTracker
    from router.config import Config
    from router.hookspecs import EventListener, ScheduledJob

__all__ = ["CallsView", "EngineView"]


class CallsView:
    """The tracker's live calls, read-only (``get``, ``by_channel``, iteration)."""

    __slots__ = ("_tracker",)

    def __init__(self, tracker: CallTracker) -> None:
        self._tracker = tracker

    def get(self, linkedid: str) -> Call | None:
        return self._tracker.get(linkedid)

    def by_channel(self, channel: str) -> Call | None:
        return self._tracker.by_channel(channel)

    def __iter__(self) -> Iterator[Call]:
        return iter(self._tracker)

    def __len__(self) -> int:
        return len(self._tracker)


class EngineView:
    """One engine's :class:`~router.hookspecs.EngineAPI`, built from its parts."""

    __slots__ = (
        "_ami",
        "_calls",
        "_config",
        "_connected",
        "_decision",
        "_hold_state_folder",
        "_may_ask",
        "_schedule",
        "_shadow",
        "_state_dir",
        "_watch",
    )

    def __init__(
        self,
        *,
        ami: AMI,
        calls: CallsView,
        config: Config,
        state_dir: Callable[[], Path],
        schedule: Callable[..., None],
        may_ask: Callable[[Call, str], bool],
        shadow: Callable[[], bool],
        watch: Callable[[EventListener], Callable[[], None]],
        decision: Callable[[str], Mapping[str, Any] | None],
        connected: Callable[[], bool] = lambda: True,
        hold_state_folder: Callable[[Path, tuple[str, ...]], None] = lambda _path, _key: None,
    ) -> None:
        self._ami = ami
        self._calls = calls
        self._config = config
        self._state_dir = state_dir
        self._schedule = schedule
        self._may_ask = may_ask
        self._shadow = shadow
        self._watch = watch
        self._decision = decision
        self._connected = connected
        self._hold_state_folder = hold_state_folder

    @property
    def ami(self) -> AMI:
        return self._ami

    @property
    def state_dir(self) -> Path:
        return self._state_dir()

    @property
    def config(self) -> Config:
        return self._config

    @property
    def calls(self) -> CallsView:
        return self._calls

    @property
    def shadow(self) -> bool:
        return self._shadow()

    @property
    def connected(self) -> bool:
        return self._connected()

    def schedule(
        self, name: str, job: ScheduledJob, *, every: float | None = None, cron: str | None = None
    ) -> None:
        self._schedule(name, job, every=every, cron=cron)

    def may_ask(self, call: Call, lookup: str) -> bool:
        return self._may_ask(call, lookup)

    def watch(self, listener: EventListener) -> Callable[[], None]:
        return self._watch(listener)

    def decision(self, linkedid: str) -> Mapping[str, Any] | None:
        return self._decision(linkedid)

    def hold_state_folder(self, path: Path, key: tuple[str, ...]) -> None:
        self._hold_state_folder(path, key)

    def __repr__(self) -> str:
        return f"EngineView(shadow={self.shadow})"
