"""Shared test set-up for the whole suite.

Everything under ``tests/integration`` is marked ``integration`` here, so
``pytest -m "not integration"`` (``make unit``) never needs Asterisk. The
sandbox fixtures live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
