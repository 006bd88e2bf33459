"""Which ``Host`` the API answers to: a guard against DNS rebinding.

A page on another site cannot read the API's answers (no CORS), unless its
name comes to point at the listener: a name that resolves to the attacker's
server, then, a moment later, to 127.0.0.1. The browser then sends the page's
requests to the loopback listener as the attacker's own origin, and reads
``/metrics``, ``/readyz``, the OpenAPI document and ``/ui/`` (the endpoints
that ask for no token). What gives it away is the ``Host`` header: it names
the attacker's site.

So on a loopback listener (``127.0.0.1``, ``::1``, ``localhost``) a request
is answered only when its ``Host`` names loopback (``localhost``,
``127.0.0.1``, ``[::1]``, any port) or a name in ``[api] allowed_hosts``;
any other is answered ``421 Misdirected Request``. A listener on another
address is reached by names this module cannot guess, so there the check is
off unless ``allowed_hosts`` is set (then it is on, with those names, the
loopback ones and the listen address). An HTTP/1.0 request with no ``Host``
(old tools; no browser sends one) is answered; an HTTP/1.1 one is answered
400 before it gets here (RFC 9112 3.2, :mod:`router.api.protocol`).

:class:`TrustedHosts` wraps the app where it is served
(:class:`router.api.server.ApiServer`): the check belongs to the listener.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from router.api.errors import problem_body
from router.api.settings import ApiSettings, is_loopback
from router.logsafe import escape_controls

__all__ = ["TrustedHosts", "canonical", "host_name", "is_loopback", "trusted_hosts"]

log = logging.getLogger("router.api")

#: Seconds between two warnings about refused Host headers.
_WARN_EVERY = 60.0


def host_name(value: str) -> str | None:
    """The name a ``Host`` header value gives, lowercase, without its port
    (IPv6 in brackets); None when it is not a host at all."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        # An empty port is a port left out (RFC 3986 3.2.3).
        if rest and not (rest.startswith(":") and (rest[1:].isdigit() or rest == ":")):
            return None
        return canonical(name)
    name, colon, port = value.partition(":")
    if colon and port and not (port.isascii() and port.isdigit()):
        return None
    name = name.rstrip(".")
    return name or None


def canonical(name: str) -> str:
    """An IPv6 literal in its one spelling (``[2001:DB8:0::1]`` is
    ``[2001:db8::1]``); any other name as it is."""
    if name.startswith("[") and name.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(name[1:-1]).compressed}]"
        except ValueError:
            return name
    return name


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def trusted_hosts(settings: ApiSettings) -> frozenset[str] | None:
    """The names a listener with ``settings`` answers to (loopback ones besides),
    or None when any will do (not loopback, no ``allowed_hosts``)."""
    if not is_loopback(settings.host) and not settings.allowed_hosts:
        return None
    names = {"localhost", *(canonical(_bracketed(h.lower())) for h in settings.allowed_hosts)}
    try:
        unspecified = ipaddress.ip_address(settings.host).is_unspecified
    except ValueError:
        unspecified = False
    if not unspecified:
        names.add(canonical(_bracketed(settings.host.lower())))
    return frozenset(names)


class TrustedHosts:
    """Answers ``421`` to a request whose ``Host`` the listener does not go by."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed
        self._warned_at = -_WARN_EVERY
        self._refused = 0

    def accepts(self, value: str) -> bool:
        name = host_name(value)
        return name is not None and (name in self.allowed or is_loopback(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if host is None or self.accepts(host.decode("latin-1")):
            await self.app(scope, receive, send)
            return
        shown = host.decode("latin-1")[:100]
        self._warn(shown)
        response = JSONResponse(
            problem_body(
                421,
                f"this listener does not answer for the host {shown!r} "
                "(add it to [api] allowed_hosts if it is yours)",
            ),
            status_code=421,
            media_type="application/problem+json",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )
        await response(scope, receive, send)

    def _warn(self, shown: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            log.warning(
                "API: refused %d request(s) for a Host it does not go by, last %r "
                "(DNS rebinding, or a name to add to [api] allowed_hosts)",
                self._refused,
                escape_controls(shown),
            )
            self._warned_at = now
            self._refused = 0
