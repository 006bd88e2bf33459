"""The live page on the API's listener: ``/ui/``, read-only, for a token with ``ui:read``.

Plain HTML, CSS and a little JavaScript from ``router/api/ui/`` (no build
step, nothing from the internet), under a Content-Security-Policy that lets
the page load and connect to nothing but this listener and run no inline
script: a caller's name is rendered with ``textContent`` by the page, and
even a slip there could not run what it carries.

Routes (none in the OpenAPI document: they serve a browser, not a client):

* ``GET /ui/`` the page, in the language ``Accept-Language`` prefers
  (Russian or English; the page has a switch); ``/ui/static/<file>`` its files.
* ``POST /ui/login`` ``{"token": ...}`` -> the session cookie
  (:mod:`router.api.session`); ``POST /ui/logout``; ``GET /ui/session``
  says whether the cookie is valid (always 200, so the page's first look
  leaves no error in the browser's console).
* ``GET /ui/stream`` Server-Sent Events: ``hello`` (health, calls in
  progress, the recent decisions), then ``decision`` as each is taken,
  ``calls`` when a call starts, changes or ends, ``health`` within
  :data:`HEALTH_LOOK` of a change and every :data:`HEALTH_EVERY` seconds
  otherwise. It ends after :data:`STREAM_LIFETIME` with ``bye`` (and a short
  ``retry``): the browser reconnects at once, the cookie checked and renewed.
  It ends the same way within :data:`HEALTH_LOOK` seconds of its session's
  Sign out, and the reconnect is refused.
* ``POST /ui/explain``: ``POST /api/v1/explain`` for the page's cookie.

A request that changes or computes something with the cookie (and login
and logout) must carry ``X-Callrouter-UI: 1``: a header no cross-site form
can send, over a cookie no cross-site request carries (``SameSite=Strict``).

The page shows every call and decision (caller numbers and names, every
extension's calls), so only a token whose ``extensions`` is ``["*"]`` signs
in: one narrowed to some extensions is refused 403 at login, and a session
of a token narrowed since is no longer valid.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from router.api.auth import audit_of
from router.api.context import ApiContext, read_json
from router.api.errors import ApiError, single_header
from router.api.events import _Stream
from router.api.explain import explain
from router.api.live import LiveRing
from router.api.session import COOKIE, Session, Sessions, sees_everything
from router.api.session_store import SessionStore
from router.api.text import with_message_parts

__all__ = ["CSP", "OPENAPI", "STATIC", "STREAM_LIFETIME", "health", "pick_language", "routes"]

#: The page's own files.
STATIC = Path(__file__).with_name("ui")
#: The page may load and connect to this listener only, and runs no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
#: ``Cache-Control`` of a page's file asked for by its current version (``?v=``).
KEPT = "max-age=31536000, immutable"
#: Seconds one page stream stays open before the browser reconnects (and the
#: cookie is checked and renewed).
STREAM_LIFETIME = 300.0
#: Seconds between health frames (they double as the stream's heartbeat).
HEALTH_EVERY = 5.0
#: Seconds between looks at the health: a change (Asterisk lost, back again)
#: reaches the page within this, not at the next heartbeat.
HEALTH_LOOK = 1.0
#: Decisions a new page gets at once.
RECENT = 50
#: After a change, this long for its neighbours (a burst of events is one frame).
COALESCE = 0.05
UI_HEADER = "x-callrouter-ui"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}
_LANGUAGES = ("en", "ru")
#: The page's languages are whole tags with an optional quality.
_ACCEPT = re.compile(
    r"\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*"
)

#: Nothing here is part of the API's document.
OPENAPI: dict[str, Any] = {"paths": {}}


def pick_language(header: str | None) -> str:
    """``ru`` or ``en``: the one the browser prefers most (English when it names neither)."""
    best, best_q = "en", 0.0
    for part in (header or "")[:512].split(","):
        found = _ACCEPT.fullmatch(part)
        if found is None:
            continue
        language = found.group(1).lower()
        try:
            quality = float(found.group(2)) if found.group(2) else 1.0
        except ValueError:
            continue
        if language in _LANGUAGES and quality > best_q:
            best, best_q = language, quality
    return best


def health(ctx: ApiContext) -> dict[str, Any]:
    """The page's health summary: the engine's readiness (``/readyz``) and what it holds.

    ``checks`` are named (``asterisk``, ``event_stream``, ``rules``,
    ``serving``) for the page to translate; ``reasons`` are the readiness
    sentences as ``/readyz`` gives them, and so are its ``warnings`` (ready
    still: the page tells them beside the reasons, not as not ready).
    """
    engine = ctx.engine
    ruleset = ctx.rules() if ctx.rules is not None else None
    if ctx.health is not None:
        found = ctx.health()
        ready, reasons, checks = found.ready, list(found.reasons), dict(found.checks)
        warnings = list(found.warnings)
    else:
        checks = {"asterisk": engine.connected}
        if ruleset is not None:
            checks["rules"] = not ruleset.fatal
        ready, reasons, warnings = all(checks.values()), [], []
    return {
        "ready": ready,
        "reasons": reasons,
        "warnings": warnings,
        "checks": checks,
        "shadow": engine.shadow,
        "rules": len(ruleset.rules) if ruleset is not None else None,
        "rule_errors": len(ruleset.errors) if ruleset is not None else None,
        "calls": len(engine.calls),
    }


def _frame(kind: str, data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {kind}\ndata: {text}\n\n"


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class _Files:
    """The page's files, read once: only names that exist in ``STATIC`` are served.

    The page names them with :attr:`version` (``?v=``, a digest of them all),
    and a file asked for with the current one may be kept by the browser for
    good (``immutable``): a page's load without a valid cookie counts against
    its client address's ``[api] anonymous_rate``, and operators behind one NAT
    address opening the page at the start of the day each asked for all six
    (the files revalidated every time), so seven opening it at once were
    refused some (issue 16). With the files kept, a load is the page and its
    session check. Another callrouter's files have another version: a page
    loaded before an upgrade gets the new ones, not a kept old one."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, tuple[bytes, str]] = {
            path.name: (path.read_bytes(), _TYPES[path.suffix])
            for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix in _TYPES
        }
        digest = hashlib.sha256()
        for name, (body, _) in self.files.items():
            digest.update(b"%d:%s:%d:" % (len(name), name.encode(), len(body)) + body)
        #: What the page adds to its files' URLs (``?v=``).
        self.version = digest.hexdigest()[:16]

    def page(self, language: str) -> bytes:
        body, _ = self.files["index.html"]
        body = body.replace(b"{{v}}", self.version.encode("ascii"))
        return body.replace(b"{{lang}}", language.encode("ascii"))


def routes(ctx: ApiContext) -> list[BaseRoute]:
    # The key and the sign-outs outlive a restart (router/api/session_store.py).
    sessions = Sessions(ctx.settings, store=SessionStore(ctx.engine.state_dir))
    ctx.ui_session = sessions.token_of  # the listener's check is this app's
    files = _Files(STATIC)
    streams: dict[str, int] = {}

    def session_of(request: Request) -> Session | None:
        found = sessions.check(request.cookies.get(COOKIE))
        if found is not None:
            audit_of(request).token = found.token.name
        return found

    def require(request: Request, operation: str, *, writes: bool = False) -> Session:
        audit_of(request).operation = operation
        found = session_of(request)
        if found is None:
            raise ApiError(401, "sign in on the live page first (the session ended or is unknown)")
        # Taken before any other refusal: the listener leaves this request's
        # rate to the app (router/api/page_rate.py), so a 403 took nothing.
        authenticator = request.app.state.authenticator
        wait = authenticator.limiter.take(found.token.name, found.token.rate, found.token.burst)
        if wait > 0:
            raise ApiError(429, "too many requests; retry shortly", headers={"Retry-After": "1"})
        if writes and single_header(request, UI_HEADER, "X-Callrouter-UI") != "1":
            raise ApiError(403, f"a page request must carry the header {UI_HEADER}: 1")
        return found

    async def page(request: Request) -> Response:
        audit_of(request).operation = "ui:page"
        if request.url.path == "/ui":
            return _secured(RedirectResponse("/ui/", status_code=307))
        language = pick_language(request.headers.get("accept-language"))
        body = files.page(language)
        return _secured(Response(body, media_type="text/html; charset=utf-8"))

    async def static(request: Request) -> Response:
        audit_of(request).operation = "ui:static"
        name = request.path_params["name"]
        found = files.files.get(name)
        if found is None or name == "index.html":
            raise ApiError(404, f"no such file of the live page: {name[:80]!r}")
        body, media_type = found
        response = _secured(Response(body, media_type=media_type))
        if request.query_params.get("v") == files.version:
            # The page's own URL for this very content: kept, never asked again.
            response.headers["Cache-Control"] = KEPT
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response

    async def login(request: Request) -> Response:
        audit = audit_of(request)
        audit.operation = "ui:login"
        if single_header(request, UI_HEADER, "X-Callrouter-UI") != "1":
            raise ApiError(403, f"a page request must carry the header {UI_HEADER}: 1")
        body = await read_json(request, required=True)
        text = body.get("token")
        if not isinstance(text, str) or not text.strip() or len(text) > 256:
            raise ApiError(400, "'token': expected the token's text", field="token")
        authenticator = request.app.state.authenticator
        token = authenticator.identify(f"Bearer {text.strip()}")
        audit.token = token.name
        if not token.allows("ui:read"):
            raise ApiError(
                403,
                f"token {token.name!r} lacks the permission 'ui:read'",
                missing_permission="ui:read",
            )
        if not sees_everything(token.extensions):
            raise ApiError(
                403,
                f"token {token.name!r} covers only the extensions "
                f"{', '.join(token.extensions)}; the live page shows every call and "
                'decision, so it signs in only tokens with extensions = ["*"]',
            )
        value, session = sessions.issue(ctx.settings.tokens[token.name])
        response = _secured(JSONResponse(_session_body(session)))
        response.headers["Set-Cookie"] = sessions.cookie(value, session)
        return response

    async def logout(request: Request) -> Response:
        audit_of(request).operation = "ui:logout"
        found = session_of(request)
        if single_header(request, UI_HEADER, "X-Callrouter-UI") != "1":
            # Else any site could sign the page out with a plain form post.
            raise ApiError(403, f"a page request must carry the header {UI_HEADER}: 1")
        if found is not None:
            # Ended here, not only forgotten by this browser: a copy of the
            # cookie is refused too, and its open streams end.
            sessions.revoke(found)
        response = _secured(JSONResponse({"signed_in": False}))
        response.headers["Set-Cookie"] = sessions.cookie("", None)
        return response

    async def session(request: Request) -> Response:
        audit_of(request).operation = "ui:session"
        found = session_of(request)
        body = _session_body(found) if found else {"signed_in": False}
        return _secured(JSONResponse(body))

    async def stream(request: Request) -> Response:
        found = require(request, "ui:read")
        if ctx.live is None:
            raise ApiError(503, "the live page is not running", headers={"Retry-After": "5"})
        name = found.token.name
        limit = ctx.settings.events_waiters
        if streams.get(name, 0) >= limit:
            raise ApiError(
                429,
                f"token {name!r} already has {limit} live pages open "
                f"([api] events_waiters = {limit})",
                headers={"Retry-After": "5"},
            )
        # Renewed on every (re)connect: the session lasts while the page is open.
        value, renewed = sessions.issue(found.token, issued=found.issued, sid=found.sid)
        headers = {"X-Accel-Buffering": "no", "Set-Cookie": sessions.cookie(value, renewed)}
        if request.method == "HEAD":
            # The stream's headers, and the end (as /api/v1/events/stream): a
            # stream whose body goes nowhere held its page's place and the
            # connection for STREAM_LIFETIME, so a few HEADs locked the token's
            # live pages out for minutes.
            head = Response(media_type="text/event-stream", headers=headers)
            del head.headers["content-length"]  # the stream's length is not 0
            return _secured(head)
        streams[name] = streams.get(name, 0) + 1

        def release() -> None:
            count = streams.get(name, 1) - 1
            if count > 0:
                streams[name] = count
            else:
                streams.pop(name, None)

        response = _Stream(
            _frames(ctx, ctx.live, STREAM_LIFETIME, ended=lambda: sessions.revoked(found)),
            release=release,
            media_type="text/event-stream",
            headers=headers,
        )
        return _secured(response)

    async def explain_here(request: Request) -> Response:
        require(request, "rules:explain", writes=True)
        body = await read_json(request, required=True)
        result = await explain(ctx, body)
        with_message_parts(result.get("trace"))  # the page's own: not in /api/v1/explain
        return _secured(JSONResponse(result))

    return [
        Route("/ui", page, methods=["GET"], name="ui_root"),
        Route("/ui/", page, methods=["GET"], name="ui_page"),
        Route("/ui/static/{name}", static, methods=["GET"], name="ui_static"),
        Route("/ui/login", login, methods=["POST"], name="ui_login"),
        Route("/ui/logout", logout, methods=["POST"], name="ui_logout"),
        Route("/ui/session", session, methods=["GET"], name="ui_session"),
        Route("/ui/stream", stream, methods=["GET"], name="ui_stream"),
        Route("/ui/explain", explain_here, methods=["POST"], name="ui_explain"),
    ]


def _session_body(session: Session) -> dict[str, Any]:
    return {"signed_in": True, "token": session.token.name, "expires": session.expires}


async def _frames(
    ctx: ApiContext,
    ring: LiveRing,
    lifetime: float,
    *,
    ended: Callable[[], bool] = lambda: False,
) -> AsyncIterator[str]:
    """The page's stream: a snapshot, then every change, for ``lifetime`` seconds,
    or until ``ended()`` says its session was signed out (checked at least every
    :data:`HEALTH_LOOK` seconds; the browser's reconnect is then refused)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    version = ring.version
    recent = ring.decisions()[-RECENT:]
    sent = ring.last_id
    shown = health(ctx)
    yield "retry: 3000\n\n" + _frame(
        "hello", {"health": shown, "calls": ring.calls(), "decisions": recent}
    )
    health_at = loop.time()
    while (left := deadline - loop.time()) > 0:
        now_version = await ring.wait(version, timeout=min(HEALTH_LOOK, HEALTH_EVERY, left))
        if ring.ending:
            # callrouter is stopping: the browser comes back after the usual 3 s.
            return
        if ended():
            break
        out: list[str] = []
        if now_version != version:
            await asyncio.sleep(COALESCE)
            version = ring.version
            for entry in ring.decisions(sent):
                out.append(_frame("decision", entry))
                sent = entry["id"]
            out.append(_frame("calls", ring.calls()))
        # A change of the health goes at once (the page says "not ready" as the
        # event stream is lost, "ready" as it is back); unchanged, every
        # HEALTH_EVERY seconds as the stream's heartbeat.
        current = health(ctx)
        if current != shown or loop.time() - health_at >= HEALTH_EVERY:
            out.append(_frame("health", current))
            shown, health_at = current, loop.time()
        if out:
            yield "".join(out)
    # A planned end: the browser reconnects after 10 ms, not the 3 s it waits
    # after a failure (the next stream sets that back), so the page has no gap.
    yield "retry: 10\n" + _frame("bye", {})
