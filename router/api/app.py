"""The ASGI application: the endpoint modules, problem details, audit, OpenAPI.

:func:`build_app` includes every endpoint module of this package that exists
(``ami``, ``calls``, ``forwarding``, ``events``): each gives ``routes(ctx)``
and an ``OPENAPI`` fragment, merged here into the one document served at
``/api/v1/openapi.json``, so the document cannot describe an endpoint that is
not served, and schemathesis fuzzes exactly what is.

Failures leave as ``application/problem+json`` (RFC 9457) whatever raised
them: an :class:`ApiError`, Starlette's own 404/405, or a bug, which is
logged with its traceback and answered 500 without a word of the internals.
Every response says ``X-Content-Type-Options: nosniff``: a browser takes it
for the type it says (JSON, an SSE stream, a recording), never for a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.api import health
from router.api import metrics as metrics_endpoint
from router.api.auth import Audit, Authenticator
from router.api.context import ApiContext
from router.api.errors import (
    ANY_PATH,
    PROBLEM_SCHEMA,
    ApiError,
    problem_body,
    problem_responses,
)
from router.api.refusals import Refusals
from router.logsafe import escape_controls
from router.metrics import Metrics

__all__ = [
    "ENDPOINT_MODULES",
    "OPENAPI_PATH",
    "build_app",
    "build_starting_app",
    "openapi_document",
]

log = logging.getLogger("router.api")
audit_log = logging.getLogger("router.api.audit")

OPENAPI_PATH = "/api/v1/openapi.json"
#: The endpoint modules of router.api, included when present.
ENDPOINT_MODULES = ("ami", "calls", "forwarding", "events", "recordings", "explain", "ui")
PROBLEM_JSON = "application/problem+json"
#: What a path may be asked with while callrouter starts: each answered 503.
_EVERY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _modules() -> list[Any]:
    found = []
    for name in ENDPOINT_MODULES:
        qualified = f"router.api.{name}"
        try:
            found.append(importlib.import_module(qualified))
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
    return found


def openapi_document(modules: list[Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document: every module's fragment merged, plus the shared parts."""
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "callrouter API",
            "version": "1",
            "description": "Click-to-call, call control, forwarding, any AMI action and a "
            "live event feed. Errors are RFC 9457 problem details. See docs/api.md.",
        },
        "paths": {
            OPENAPI_PATH: {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "tags": ["meta"],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {"Problem": copy.deepcopy(PROBLEM_SCHEMA)},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `callrouter token new`",
                }
            },
        },
    }
    for module in _modules() if modules is None else modules:
        fragment: Mapping[str, Any] = module.OPENAPI
        for path, operations in fragment.get("paths", {}).items():
            document["paths"].setdefault(path, {}).update(copy.deepcopy(operations))
        for kind, entries in fragment.get("components", {}).items():
            document["components"].setdefault(kind, {}).update(copy.deepcopy(entries))
    # What any path may answer, whichever module wrote the operation: a client
    # built from the document should expect GET /calls to be 503 while
    # callrouter starts. The document itself needs no token (no 401 or 429).
    for path, operations in document["paths"].items():
        shared = problem_responses(*ANY_PATH)
        if path == OPENAPI_PATH:
            shared = {k: v for k, v in shared.items() if k not in ("401", "429")}
        for operation in operations.values():
            for status, answer in shared.items():
                operation["responses"].setdefault(status, copy.deepcopy(answer))
    return document


def _problem(
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    **extra: object,
) -> Response:
    return JSONResponse(
        problem_body(status, detail, title=title, **extra),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _problem(exc.status, exc.detail, exc.headers, title=exc.title, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        detail = f"no such endpoint: {request.url.path} (the document is at {OPENAPI_PATH})"
    elif exc.status_code == 405:
        # Starlette's Allow names the first route on the path only; a path
        # served by several routes (GET and POST apart) allows them all.
        allowed = ", ".join(_methods_at(request))
        exc = HTTPException(405, headers={**(exc.headers or {}), "Allow": allowed})
        detail = f"{request.method} is not allowed here; allowed: {allowed}"
    else:
        detail = str(exc.detail)
    return _problem(exc.status_code, detail, exc.headers)


def _methods_at(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


class AuditMiddleware:
    """One audit line per request, and 500 as a problem for anything unforeseen.

    The line is written when the response starts (a feed stream is audited
    when it opens, not hours later when it closes) and says who (the token's
    name), what (operation, target), how it ended (status): never the token.
    Refused requests (401, 429, and any 4xx before a token was accepted)
    from one client address are written a few a second at most, the rest
    counted in one line (router/api/refusals.py); the metric counts every
    request.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics | None = None, refusals: Refusals | None = None
    ) -> None:
        self.app = app
        #: Requests counted by operation and status (``callrouter_api_requests_total``).
        self.metrics = metrics
        self.refusals = refusals if refusals is not None else Refusals(audit_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        audit = Audit()
        scope.setdefault("state", {})["audit"] = audit
        started = time.perf_counter()
        sent = False

        async def send_audited(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.start" and not sent:
                sent = True
                status = int(message["status"])
                if not _bounded(status, audit):
                    self.refusals.tick()  # the summaries of floods that have ended
                    _write_audit(scope, audit, status, started)
                elif self.refusals.admit(_client(scope), status):
                    _write_audit(scope, audit, status, started)
                if self.metrics is not None:
                    self.metrics.api_request(audit.operation, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except ClientDisconnect:
            # The client went away (or was cut: no whole request in time,
            # router.api.protocol) before its body was read: nobody to answer.
            log.debug("API request %s %s: the client left", scope.get("method"), scope.get("path"))
        except asyncio.CancelledError:
            # The server is stopping and cut this request short (a hung AMI
            # action, a long poll): answer it rather than drop the connection.
            # The request's own task ends here, so nothing waits on the cancel.
            if sent:
                # An event stream is cut mid-body: end the body, so the client
                # sees the stream end and reconnects with Last-Event-ID, rather
                # than uvicorn logging the cancellation as a failure.
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            stopping = _problem(503, "callrouter is stopping; retry shortly", {"Retry-After": "1"})
            await stopping(scope, receive, send_audited)
        except Exception:
            log.exception("API request %s %s failed", scope.get("method"), scope.get("path"))
            if sent:
                raise
            response = _problem(500, "internal error: the callrouter log has the details")
            await response(scope, receive, send_audited)


class NoSniffMiddleware:
    """``X-Content-Type-Options: nosniff`` on every response that has none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_marked)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return escape_controls(str(client[0])[:96]) if client else "-"


def _bounded(status: int, audit: Audit) -> bool:
    """Whether a request's audit line counts against its address's few a
    second (router/api/refusals.py): a 401, a 429 (a token over its rate),
    or any other 4xx answered before a token was accepted (an unknown path's
    404 needs none)."""
    return status in (401, 429) or (400 <= status < 500 and audit.token == "-")


def _write_audit(scope: Scope, audit: Audit, status: int, started: float) -> None:
    audit_log.info(
        "api token=%s op=%s target=%s status=%d client=%s ms=%.1f",
        escape_controls(audit.token[:64]),
        escape_controls(audit.operation[:96]),
        escape_controls(audit.target[:96]),
        status,
        _client(scope),
        (time.perf_counter() - started) * 1000,
    )


def build_app(ctx: ApiContext) -> Starlette:
    """The API over ``ctx``: every present endpoint module, the document, the handlers."""
    modules = _modules()
    # Encoded once: the document does not change while the app runs, and
    # encoding its 40 KiB for every request (anyone may ask, no token) held
    # the loop that routes calls ~3 ms a time (issue 16).
    document = JSONResponse(openapi_document(modules)).body

    async def openapi(request: Request) -> Response:
        audit = request.scope["state"].get("audit")
        if isinstance(audit, Audit):
            audit.operation = "openapi"
        return Response(document, media_type="application/json")

    routes: list[BaseRoute] = [Route(OPENAPI_PATH, openapi, methods=["GET"])]
    for module in modules:
        routes.extend(module.routes(ctx))
    # The service's own endpoints, outside /api/v1 and its document (router.api.health).
    routes.extend(health.routes(ctx))
    routes.extend(metrics_endpoint.routes(ctx))
    return _starlette(routes, ctx)


def build_starting_app(ctx: ApiContext, starting: Callable[[], str]) -> Starlette:
    """What the listener answers while the engine starts (router.engine), a
    wait for Asterisk included: ``/healthz``, ``/readyz`` and ``/metrics`` as
    ever, and 503 with ``starting()`` (what the start waits for) at every other
    path, at once, rather than a refused connection or a request that hangs.
    The endpoints proper need a logged-in engine and its plugins started."""

    async def not_yet(request: Request) -> Response:
        audit = request.scope["state"].get("audit")
        if isinstance(audit, Audit):
            audit.operation = "starting"
        what = f" ({starting()})" if health.details_shown(request, ctx) else ""
        raise ApiError(
            503,
            f"callrouter is starting{what}; retry shortly",
            headers={"Retry-After": "5"},
            phase="starting",
        )

    routes: list[BaseRoute] = [*health.routes(ctx), *metrics_endpoint.routes(ctx)]
    routes.append(Route("/{path:path}", not_yet, methods=_EVERY_METHOD))
    return _starlette(routes, ctx)


def _starlette(routes: list[BaseRoute], ctx: ApiContext) -> Starlette:
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    # One per app, kept on its state (a test sets its clock).
    app.state.refusals = Refusals(audit_log)
    app.add_middleware(AuditMiddleware, metrics=ctx.metrics, refusals=app.state.refusals)
    # Outside the audit: its own 500 and 503 answers are marked too.
    app.add_middleware(NoSniffMiddleware)
    app.state.ctx = ctx
    app.state.authenticator = Authenticator(ctx.settings)
    return app
