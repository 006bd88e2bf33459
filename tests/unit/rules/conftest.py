"""Shared fixture: the registry the plugins fill, as in production, in a fixed time zone
so tests do not drift."""

from __future__ import annotations

import pytest

from router.plugin_registry import plugin_registry
from router.rules import Registry


@pytest.fixture
def registry() -> Registry:
    return plugin_registry(timezone="Europe/Moscow")
