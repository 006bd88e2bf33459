"""``/healthz`` and ``/readyz``: for systemd's watchdog, load balancers, Zabbix.

Outside ``/api/v1`` and its OpenAPI document on purpose: these are the
service's own, asked by machines that hold no token, so they need none and
say nothing about calls. ``/healthz`` answers 200 while the process serves
HTTP at all, with the engine's phase (``starting`` while it waits for
Asterisk, saying for what); ``/readyz`` 200 only when callrouter can route now
(router/health.py), else 503 with the reasons in JSON. Both are served from
before the login on (router.engine), so that a monitor tells a start waiting
for Asterisk from a dead process.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from router.api.auth import audit_of
from router.api.context import ApiContext

__all__ = ["HEALTH_PATH", "READY_PATH", "routes"]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


def routes(ctx: ApiContext) -> list[BaseRoute]:
    async def healthz(request: Request) -> JSONResponse:
        audit_of(request).operation = "healthz"
        alive = {"status": "alive"} if ctx.health is None else ctx.health().liveness()
        return JSONResponse(alive, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> JSONResponse:
        audit_of(request).operation = "readyz"
        if ctx.health is None:  # an API built without an engine (tests): serving is all
            return JSONResponse({"status": "ready", "reasons": []})
        health = ctx.health()
        return JSONResponse(
            health.to_dict(),
            status_code=200 if health.ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route(HEALTH_PATH, healthz, methods=["GET", "HEAD"]),
        Route(READY_PATH, readyz, methods=["GET", "HEAD"]),
    ]
