"""Shared test set-up for the whole suite.

Everything under ``tests/integration`` is marked ``integration`` here, so
``pytest -m "not integration"`` (``make unit``) never needs Asterisk. The
sandbox fixtures live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"

# The test kit is every test's plugin: a test module that imports
# router.testing at run time (StubEngine) would otherwise import it before
# pytest could rewrite it, and each later module's
# ``pytest_plugins = ["router.testing"]`` would fail on the
# PytestAssertRewriteWarning (filterwarnings = error).
pytest_plugins = ["router.testing"]


@pytest.fixture(autouse=True)
def _root_log_level() -> Iterator[None]:
    """``callrouter run`` run in-process sets the root logger's level for the
    process (router/commands/run.py): a later test in the same worker then got
    INFO records it had not asked for (a reload test's log, read with caplog,
    held one reload too many, depending on which file ran before it)."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


#: The installed plugins (entry points) the tests know: the 1C plugin, which
#: ``make install`` installs from plugins/onec (the docs' rules ask its
#: ``onec.responsible``), by entry point and distribution.
SHIPPED_ENTRY_POINTS = frozenset({("onec", "callrouter-onec")})


@pytest.fixture
def only_shipped_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugin discovery finds the built-ins and the 1C plugin only, whatever
    else is installed in the virtualenv: a plugin author's own plugin (the
    example's ``vip``, a CRM plugin) would add names the guides do not list
    and tables ``callrouter check --config`` would want, and fail tests that
    hold the docs to what the repository ships. Other entry points, and a
    fake one a test installs after this, are left as they are."""
    found = metadata.entry_points

    def entry_points(**params: Any) -> Iterable[metadata.EntryPoint]:
        points = found(**params)
        if params.get("group") != "callrouter":
            return points
        return [
            point
            for point in points
            if point.dist is not None
            and (point.name, point.dist.name.replace("_", "-").lower()) in SHIPPED_ENTRY_POINTS
        ]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
