"""``/metrics``: the engine's registry in Prometheus text format.

No token by default: the exposition holds counts and names from the
administrator's own files, never a caller's number, and Prometheus and Zabbix
scrape without one. ``[api] metrics_auth = true`` asks for a bearer token
with ``metrics:read`` (Prometheus: ``authorization: {credentials: ...}``).
Rendering walks every family, so it runs in a worker thread, off the loop
that routes calls.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from router.api.auth import audit_of, authorize
from router.api.context import ApiContext
from router.api.errors import ApiError
from router.metrics import CONTENT_TYPE, exposition

__all__ = ["METRICS_PATH", "routes"]

METRICS_PATH = "/metrics"


def routes(ctx: ApiContext) -> list[BaseRoute]:
    async def metrics(request: Request) -> Response:
        if ctx.settings.metrics_auth:
            await authorize(request, "metrics:read")
        else:
            audit_of(request).operation = "metrics:read"
        if ctx.metrics is None:
            raise ApiError(404, "this API serves no metrics (no engine behind it)")
        body = await asyncio.to_thread(exposition, ctx.metrics)
        return Response(body, media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return [Route(METRICS_PATH, metrics, methods=["GET"])]
