"""``/metrics``: the engine's registry in Prometheus text format.

No token by default: the exposition holds counts and names from the
administrator's own files, never a caller's number, and Prometheus and Zabbix
scrape without one. ``[api] metrics_auth = true`` asks for a bearer token
with ``metrics:read`` (Prometheus: ``authorization: {credentials: ...}``).
Rendering walks every family, so it runs in a worker thread, off the loop
that routes calls; and one at a time: the scrapes that come while one renders
get that rendering. Each used to start its own thread, so a client asking for
``/metrics`` over a few connections (no token needed) kept six threads
rendering, and the loop, waiting its turn for the interpreter behind them,
routed calls 100-250 ms late instead of ~10 ms (issue 16).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.api.auth import audit_of, authorize
from router.api.context import ApiContext
from router.api.errors import ApiError
from router.metrics import CONTENT_TYPE, Metrics, exposition

__all__ = ["METRICS_PATH", "routes"]

METRICS_PATH = "/metrics"


class _Rendering:
    """The exposition, rendered by one worker thread at a time: a scrape that
    comes while a rendering runs waits for it and answers with it (its values
    are at most that rendering old), rather than start a thread of its own."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._running: asyncio.Future[bytes] | None = None

    async def latest(self) -> bytes:
        running = self._running
        if running is None:
            running = self._running = asyncio.ensure_future(
                asyncio.to_thread(exposition, self.metrics)
            )
            running.add_done_callback(self._done)
        # Shielded: a scrape whose client left does not cancel the others' rendering.
        return await asyncio.shield(running)

    def _done(self, running: asyncio.Future[bytes]) -> None:
        if self._running is running:
            self._running = None
        if not running.cancelled():
            running.exception()  # retrieved: every scrape waiting on it may have left


def routes(ctx: ApiContext) -> list[BaseRoute]:
    rendering: _Rendering | None = None

    async def metrics(request: Request) -> Response:
        nonlocal rendering
        if ctx.settings.metrics_auth:
            await authorize(request, "metrics:read")
        else:
            audit_of(request).operation = "metrics:read"
        if ctx.metrics is None:
            raise ApiError(404, "this API serves no metrics (no engine behind it)")
        if rendering is None or rendering.metrics is not ctx.metrics:
            rendering = _Rendering(ctx.metrics)
        body = await rendering.latest()
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return [Route(METRICS_PATH, metrics, methods=["GET"])]
