"""Shared fixtures: a real 1C double on a free loopback port and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from callrouter_onec.client import OneCClient, OneCSettings
from callrouter_onec.double import DEFAULT_USER, OneCDouble

PASSWORD = "пароль-secret"


@pytest.fixture
def double() -> Iterator[OneCDouble]:
    with OneCDouble(password=PASSWORD) as running:
        yield running


@pytest.fixture
def settings(double: OneCDouble) -> OneCSettings:
    # Short budgets keep fault tests fast; bounds in tests stay generous.
    return OneCSettings(
        double.url, DEFAULT_USER, PASSWORD, connect_timeout=0.2, timeout=0.5, event_timeout=0.5
    )


@pytest.fixture
async def client(settings: OneCSettings) -> AsyncIterator[OneCClient]:
    async with OneCClient(settings) as opened:
        yield opened
