"""Shared test set-up for the whole suite.

Everything under ``tests/integration`` is marked ``integration`` here, so
``pytest -m "not integration"`` (``make unit``) never needs Asterisk. The
sandbox fixtures live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"

# The test kit is every test's plugin: a test module that imports
# router.testing at run time (StubEngine) would otherwise import it before
# pytest could rewrite it, and each later module's
# ``pytest_plugins = ["router.testing"]`` would fail on the
# PytestAssertRewriteWarning (filterwarnings = error).
pytest_plugins = ["router.testing"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
