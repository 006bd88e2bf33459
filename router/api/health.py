"""``/healthz`` and ``/readyz``: for systemd's watchdog, load balancers, Zabbix.

Outside ``/api/v1`` and its OpenAPI document on purpose: these are the
service's own, asked by machines that hold no token, so they need none and
say nothing about calls. ``/healthz`` answers 200 while the process serves
HTTP at all, with the engine's phase (``starting`` while it waits for
Asterisk, saying for what); ``/readyz`` 200 only when callrouter is ready
(router/health.py), else 503 with the reasons in JSON. Ready is not routing:
the body's ``role`` says whether this instance routes (``live``), stands by
while another live instance on the same Asterisk routes (``standby``, ready:
it takes over when that one goes) or routes nothing (``shadow``);
``/readyz?role=live`` answers 200 only to the one routing, for a balancer
that wants only that one (as Patroni's ``/primary``). Both are served from
before the login on (router.engine), so that a monitor tells a start waiting
for Asterisk from a dead process.

What they tell beyond yes or no (the reasons: Asterisk's URL and error, the
manager user's name) follows ``[api] health_details`` (:func:`details_shown`):
on a listener others reach, only to a request bearing a valid token, as
Spring Boot Actuator's ``show-details: when-authorized``. Without details the
failing checks are still named (``checks``), which is what a monitor acts on.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from router.api.auth import audit_of, authenticate
from router.api.context import ApiContext
from router.api.errors import ApiError, bad_parameter, refuse_repeated_query, refuse_unknown_query
from router.health import ROLES
from router.suggest import closest

__all__ = ["HEALTH_PATH", "READY_PATH", "details_shown", "routes"]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


def details_shown(request: Request, ctx: ApiContext) -> bool:
    """Whether this request may be told the reasons (``[api] health_details``).

    ``when_authorized``: a valid token in ``Authorization``, any permission;
    a missing, unknown or rate-limited one gets the answer without details,
    never an error: a health check must answer."""
    policy = ctx.settings.details
    if policy != "when_authorized":
        return policy == "always"
    if "authorization" not in request.headers:
        return False
    try:
        authenticate(request)  # the API's own check: digests, rate, the audit's name
    except ApiError:
        return False
    return True


def _meant_as_role(request: Request) -> list[str]:
    """The query parameters of ``request`` other than ``role`` that look meant
    as it: a name close to it (``rol``, ``Role``, ``roles``) or a value that is
    a role (``?mode=live``). Monitoring tools add parameters of their own to
    defeat caches (``_``, ``nocache``, ``ts``): those are not refused."""
    return [
        name
        for name, value in request.query_params.multi_items()
        if name != "role" and (closest(name, ("role",)) is not None or value in ROLES)
    ]


def routes(ctx: ApiContext) -> list[BaseRoute]:
    async def healthz(request: Request) -> JSONResponse:
        audit_of(request).operation = "healthz"
        alive = (
            {"status": "alive"}
            if ctx.health is None
            else ctx.health().liveness(details=details_shown(request, ctx))
        )
        return JSONResponse(alive, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> JSONResponse:
        audit_of(request).operation = "readyz"
        # A misspelt ``?rol=live`` read as a bare /readyz is 200 from a standby:
        # the balancer would send calls' API traffic to the instance not routing.
        # Any other parameter (a monitor's cache-buster, ``?_=1733456789``) is
        # no question this endpoint answers: ignored, as /healthz ignores it.
        refuse_unknown_query(_meant_as_role(request), ("role",))
        refuse_repeated_query((name for name, _ in request.query_params.multi_items()), ("role",))
        role = request.query_params.get("role")
        if role is not None and role not in ROLES:
            raise bad_parameter("role", f"one of {', '.join(ROLES)}", role)
        if ctx.health is None:  # an API built without an engine (tests): serving is all
            return JSONResponse({"status": "ready", "reasons": []})
        health = ctx.health()
        ok = health.ready if role is None else health.in_role(role)
        return JSONResponse(
            health.to_dict(details=details_shown(request, ctx)),
            status_code=200 if ok else 503,
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route(HEALTH_PATH, healthz, methods=["GET", "HEAD"]),
        Route(READY_PATH, readyz, methods=["GET", "HEAD"]),
    ]
