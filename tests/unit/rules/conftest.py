"""Shared fixture: the default registry, in a fixed time zone so tests do not drift."""

from __future__ import annotations

import pytest

from router.builtin import default_registry
from router.rules import Registry


@pytest.fixture
def registry() -> Registry:
    return default_registry(timezone="Europe/Moscow")
