"""A rule registry filled by the plugins, as ``run``, ``check`` and ``explain`` fill it.

Tests and benchmarks that load rules validate them against the names the
loaded plugins register (built-ins, and installed plugins such as the 1C
plugin's ``onec.responsible``), through :class:`router.plugins.Plugins`: the
core declares no plugin's names itself, so there is no second way to build
a registry that could drift from production's. Not in :mod:`router.testing`
because rule tests import it at collection time, before pytest loads that
package as a plugin (it could then not rewrite its assertions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from router.config import AsteriskSettings, Config, PluginSettings
from router.plugins import Plugins
from router.rules.registry import Registry

__all__ = ["TEST_TIMEZONE", "plugin_registry"]

#: The rules' zone tests use unless told otherwise, so results do not drift with the host.
TEST_TIMEZONE = "Europe/Moscow"


def plugin_registry(
    *,
    timezone: str = TEST_TIMEZONE,
    settings: Mapping[str, Mapping[str, object]] | None = None,
    entry_points: bool = True,
    extra: Iterable[object] = (),
    disabled: Iterable[str] = (),
) -> Registry:
    """Plugins configured with ``[plugins.timefuncs] timezone`` and ``settings``, then
    registered into a fresh registry; a plugin's registration problem raises.

    ``entry_points`` loads the installed plugins too (the shipped rules ask
    ``onec.responsible``); ``extra`` adds plugin objects; ``disabled`` leaves
    plugins out by name, as ``[plugins] disabled`` does (``ami_catalog``: no
    AMI catalog, ``ami:`` actions checked for shape only). Callable with or
    without a running event loop.
    """
    tables: dict[str, Mapping[str, object]] = {"timefuncs": {"timezone": timezone}}
    tables.update(settings or {})
    config = Config(
        asterisk=AsteriskSettings(
            url="http://asterisk.test:8088/asterisk", username="router", secret="secret"
        ),
        plugins=PluginSettings(settings=tables),
    )
    plugins = Plugins.load(entry_points=entry_points, extra=extra, disabled=disabled)
    _run(plugins.configure(config))
    registry, problems = plugins.build_registry()
    if problems:
        raise AssertionError("plugins could not register: " + "; ".join(problems))
    return registry


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    # Inside an async test: configure on a loop of its own, in a worker thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()
