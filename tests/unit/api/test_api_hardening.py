"""Headers that guard browsers: nosniff on every answer."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from router.api.app import build_app
from router.api.context import ApiContext
from router.api.feed import EventFeed
from router.api.live import LiveRing
from router.api.settings import ApiSettings, TokenSettings
from router.metrics import Metrics
from router.testing import StubEngine

EVERYTHING = TokenSettings(
    name="all",
    digest=hashlib.sha256(b"cr_all").digest(),
    allow=("events:read", "ami:Ping", "ui:read"),
    extensions=("*",),
    rate=1000,
    burst=1000,
)
AUTH = {"Authorization": "Bearer cr_all"}


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[StubEngine]:
    engine = StubEngine(state_dir=tmp_path)
    yield engine
    await engine.aclose()


def app_over(stub: StubEngine, **changes: Any) -> Any:
    settings = ApiSettings(tokens=MappingProxyType({"all": EVERYTHING}), **changes)
    context = ApiContext(
        stub,
        settings,
        feed=EventFeed(),
        live=LiveRing(stub),
        metrics=Metrics(event_names=()),
    )
    return build_app(context)


# -- nosniff ---------------------------------------------------------------------------


async def test_every_answer_says_nosniff(stub: StubEngine) -> None:
    """A browser must never take an answer (a caller's name in JSON, a stream,
    a problem) for a page of another type."""
    transport = httpx.ASGITransport(app=app_over(stub))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        answers = [
            await client.get("/api/v1/openapi.json"),
            await client.get("/api/v1/nowhere"),
            await client.post("/api/v1/ami/Ping"),  # 401
            await client.delete("/api/v1/events"),  # 405
            await client.get("/api/v1/events?timeout=0", headers=AUTH),
            await client.get("/api/v1/events/stream?timeout=0", headers=AUTH),
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/metrics"),
            await client.get("/ui/"),
            await client.get("/ui/static/app.js"),
            await client.get("/ui/session"),
        ]
    statuses = {answer.status_code for answer in answers}
    assert {200, 401, 404, 405} <= statuses
    for answer in answers:
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], (
            answer.request.url,
            answer.status_code,
        )
