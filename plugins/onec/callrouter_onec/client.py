"""The async HTTP client for the 1C telephony service (the contract in docs).

Thin over httpx on purpose: the one pool and the deadline live here, response
checking lives in :func:`interpret` and :mod:`.models` (no I/O), and every
lower-layer failure is mapped to :mod:`.errors` in :meth:`OneCClient._send`, so
callers only ever see :class:`OneCUnavailable` or :class:`OneCBadRequest`.

Deadlines are absolute :func:`time.monotonic` values. A call's deadline, when
given, replaces the configured total timeout: the routing engine knows how
much of the call's budget is left, the plugin does not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeVar

import httpx

from callrouter_onec.errors import OneCBadRequest, OneCUnavailable
from callrouter_onec.jsonbody import BodyError, decode_json
from callrouter_onec.models import (
    EventAck,
    Ping,
    Responsible,
    ShapeError,
    parse_error,
    parse_event_ack,
    parse_ping,
    parse_responsible,
)

__all__ = [
    "MAX_BODY",
    "OneCClient",
    "OneCSettings",
    "basic_auth_header",
    "fetch_bounded",
    "interpret",
    "read_answer",
]

#: Default bound of one answer body: the largest contract answer is under 2 KiB.
MAX_BODY = 1 << 20

T = TypeVar("T")

_REASONS = {
    401: "1C refused the credentials",
    403: "1C refused access",
    404: "no such publication or service (check the URL and default.vrd)",
    405: "method not bound in the HTTP service",
    406: "1C session pool wait timed out",
    500: "1C module or infobase error",
    502: "proxy in front of 1C failed",
    503: "1C or its proxy is unavailable",
    504: "proxy in front of 1C timed out",
}


@dataclass(frozen=True, slots=True)
class OneCSettings:
    """Where 1C is and how patient to be with it.

    ``base_url`` is the service root, ``http://host/<publication>/hs/telephony``.
    ``ibsession`` is only for publications with ``reuseSessions="use"``; with the
    recommended ``autouse`` the client sends no session header at all.
    ``retry_min_budget`` is the least time that must be left before the deadline
    for the one retry after a stale session cookie: a retry that cannot finish
    only delays the fallback. ``max_body`` bounds the bytes read of one answer
    (the read stops there, so a huge or endless body costs at most that much
    memory). ``ca_file`` is a PEM bundle that replaces the system CAs for 1C's
    TLS certificate (a company CA); ``verify=False`` turns checking off.
    """

    base_url: str
    username: str
    password: str = field(repr=False)
    connect_timeout: float = 0.5
    timeout: float = 1.5
    event_timeout: float = 5.0
    ibsession: bool = False
    retry_min_budget: float = 0.2
    max_connections: int = 10
    keepalive_expiry: float = 15.0
    verify: bool = True
    max_body: int = MAX_BODY
    ca_file: str | None = None

    def tls(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify`` gets; raises ``OSError``/``ssl.SSLError`` for a bad CA file."""
        if not self.verify:
            return False
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=self.ca_file)


def basic_auth_header(username: str, password: str) -> str:
    """Preemptive Basic credentials encoded as UTF-8.

    httpx and most clients only promise Latin-1 here; 1C users are often
    named in Cyrillic (``Маршрутизатор``), and 1C decodes the header as UTF-8.
    """
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _preview(content: bytes) -> str:
    return content[:1024].decode("utf-8-sig", errors="replace")


def interpret(status: int, content: bytes, url: str | None = None) -> object:
    """The decoded JSON of a usable answer, or the error it amounts to.

    1C writes a UTF-8 BOM before JSON in many modules, so the body is decoded
    with ``utf-8-sig``; a body that is still not JSON after that (a damaged BOM,
    a 200 with plain text, nesting or numbers past :mod:`.jsonbody`'s bounds)
    is as useless as a 500.
    """
    if 200 <= status < 300:
        try:
            return decode_json(content)
        except BodyError as exc:
            raise OneCUnavailable(
                str(exc), status=status, body=_preview(content), url=url
            ) from None
    if status == 400:
        try:
            error = parse_error(decode_json(content))
        except BodyError:
            error = None
        if error is not None:
            raise OneCBadRequest(*error, status=status, body=_preview(content), url=url)
    reason = _REASONS.get(status, "unexpected HTTP status")
    raise OneCUnavailable(reason, status=status, body=_preview(content), url=url)


def read_answer(
    status: int, content: bytes, parse: Callable[[object], T], url: str | None = None
) -> T:
    """The typed answer in a body, or :class:`OneCUnavailable`/:class:`OneCBadRequest`.

    No I/O: this is everything the client does with the bytes 1C sends, so it
    is what the fuzz test drives. Nothing else escapes, whatever the bytes.
    """
    decoded = interpret(status, content, url)
    try:
        return parse(decoded)
    except ShapeError as exc:
        raise OneCUnavailable(
            f"unexpected answer: {exc}", status=status, body=_preview(content), url=url
        ) from exc
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        # The models only raise ShapeError by design; anything else is a bug
        # met on hostile input, and still only "1C unavailable".
        raise OneCUnavailable(
            f"unusable answer ({type(exc).__name__})", status=status, url=url
        ) from exc


#: What a transport failure means, for the log a 1C developer reads: httpx's
#: own text is empty for a reset (``ReadError: ``) and names no side.
_TRANSPORT = (
    (httpx.ConnectError, "cannot connect to 1C's web server"),
    (httpx.RemoteProtocolError, "1C's web server closed the connection without an answer"),
    (httpx.ReadError, "1C's web server broke the connection before its answer (reset)"),
    (httpx.WriteError, "1C's web server broke the connection while the request was sent"),
)


def transport_problem(exc: BaseException) -> str:
    """``what it means (ExceptionName: its text)`` for a failed request."""
    meaning = next((text for kind, text in _TRANSPORT if isinstance(exc, kind)), None)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{meaning} ({detail})" if meaning else detail


async def fetch_bounded(
    http: httpx.AsyncClient, method: str, url: str, limit: int, **kwargs: Any
) -> tuple[httpx.Response, bytes]:
    """Send one request and read at most ``limit`` bytes of the answer, undecoded.

    The body is streamed and the read stops at the bound: a huge or endless
    answer (a hostile 1C, a proxy error page gone wrong) costs at most
    ``limit`` bytes of memory, and the connection is dropped. The raw bytes
    are read, so a ``Content-Encoding`` nobody asked for stays compressed
    (and fails as "not UTF-8") instead of inflating past the bound. Every 1C
    request of the plugin goes through here (lookups, events, recordings).
    """
    async with http.stream(method, url, **kwargs) as response:
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise OneCUnavailable(
                f"answer of {declared} bytes is over max_body ({limit} bytes)",
                status=response.status_code,
                url=url,
            )
        if response.is_stream_consumed:  # an injected transport read it already
            if len(response.content) > limit:
                raise OneCUnavailable(
                    f"answer is over max_body ({limit} bytes)",
                    status=response.status_code,
                    url=url,
                )
            return response, response.content
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise OneCUnavailable(
                    f"answer is over max_body ({limit} bytes)",
                    status=response.status_code,
                    url=url,
                )
            chunks.append(chunk)
        return response, b"".join(chunks)


#: An RFC 6265 ``cookie-value`` (``cookie-octet``s, no quotes), bounded: the
#: only ``ibsession`` value sent back to 1C (a real one is a UUID).
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,1024}")


class _RejectAll(DefaultCookiePolicy):
    """httpx keeps cookies per client; the session cookie is managed by hand instead."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


class OneCClient:
    """One keep-alive pool to one 1C publication; share it, close it with :meth:`aclose`.

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests).
    """

    def __init__(
        self, settings: OneCSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._base = settings.base_url.rstrip("/")
        self._session: str | None = None
        self._http = httpx.AsyncClient(
            transport=transport,
            headers={
                "Accept": "application/json",
                "Authorization": basic_auth_header(settings.username, settings.password),
                # A compressed body would be inflated past max_body before it is counted.
                "Accept-Encoding": "identity",
                "User-Agent": "callrouter-onec",
            },
            cookies=CookieJar(policy=_RejectAll()),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
                keepalive_expiry=settings.keepalive_expiry,
            ),
            follow_redirects=False,
            verify=settings.tls(),
            trust_env=False,
        )

    async def __aenter__(self) -> OneCClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def session(self) -> str | None:
        """The current ``ibsession`` cookie (IBSession mode only)."""
        return self._session

    async def responsible(
        self,
        phone: str,
        *,
        did: str | None = None,
        call_id: str | None = None,
        deadline: float | None = None,
    ) -> Responsible:
        """Who looks after ``phone`` (normalized digits, see :mod:`.phone`).

        ``did`` (the dialled number) is sent only when it is ASCII digits, the
        only form the contract takes; the cache normalizes it before.
        """
        if not (phone.isascii() and phone.isdigit()):
            raise OneCBadRequest(
                "invalid_phone", f"not a normalized number: {phone!r}", status=None
            )
        if did is not None and not (did.isascii() and did.isdigit()):
            did = None  # the contract's did is digits; 1C refuses anything else (400)
        params = {k: v for k, v in (("did", did), ("call_id", call_id)) if v}
        return await self._send(
            "GET",
            f"/v1/responsible/{phone}",
            parse_responsible,
            params=params,
            budget=self.settings.timeout,
            deadline=deadline,
        )

    async def post_event(
        self, event: Mapping[str, Any], *, deadline: float | None = None
    ) -> EventAck:
        """Register one call event; a repeat of (call_id, event) is acknowledged as duplicate."""
        body = json.dumps(event, ensure_ascii=False).encode("utf-8")
        return await self._send(
            "POST",
            "/v1/calls/events",
            parse_event_ack,
            content=body,
            budget=self.settings.event_timeout,
            deadline=deadline,
        )

    async def ping(self, *, deadline: float | None = None) -> Ping:
        """Health check; also warms 1C's session pool before the first call arrives."""
        return await self._send(
            "GET", "/v1/ping", parse_ping, budget=self.settings.timeout, deadline=deadline
        )

    async def aclose(self) -> None:
        """Close the pool, ending the 1C session first if we hold one (best effort)."""
        if self._session is not None:
            # Best effort: 1C also expires an idle session on its own after sessionMaxAge.
            # The answer is of no use, so none of it is read (nor inflated): the
            # headers are enough for 1C to have ended the session.
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with (
                    asyncio.timeout(0.5),
                    self._http.stream(
                        "GET",
                        f"{self._base}/v1/ping",
                        timeout=0.5,
                        headers={"IBSession": "finish", "Cookie": f"ibsession={self._session}"},
                    ),
                ):
                    pass
            self._session = None
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        parse: Callable[[object], T],
        *,
        budget: float,
        deadline: float | None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> T:
        end = deadline if deadline is not None else time.monotonic() + budget
        url = self._base + path
        retried = False
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise OneCUnavailable("deadline passed before 1C could be asked", url=url)
            headers = {"Content-Type": "application/json; charset=utf-8"} if content else {}
            sent_session = self._session if self.settings.ibsession else None
            if sent_session is not None:
                headers["Cookie"] = f"ibsession={sent_session}"
            elif self.settings.ibsession:
                headers["IBSession"] = "start"
            timeout = httpx.Timeout(
                remaining, connect=min(self.settings.connect_timeout, remaining)
            )
            try:
                async with asyncio.timeout(remaining):
                    response, body = await self._fetch(
                        method,
                        url,
                        params=params,
                        content=content,
                        headers=headers,
                        timeout=timeout,
                    )
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise OneCUnavailable(f"no answer within {remaining:.2f} s", url=url) from exc
            except (httpx.HTTPError, OSError) as exc:
                raise OneCUnavailable(transport_problem(exc), url=url) from exc
            if self.settings.ibsession:
                self._remember_session(response)
            if sent_session is not None and self._stale_session(response, body):
                if self._session == sent_session:
                    self._session = None
                if not retried and end - time.monotonic() >= self.settings.retry_min_budget:
                    retried = True
                    continue
            return read_answer(response.status_code, body, parse, url)

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
        return await fetch_bounded(self._http, method, url, self.settings.max_body, **kwargs)

    def _remember_session(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                continue
            morsel = jar.get("ibsession")
            if morsel is not None:
                expired = morsel["max-age"] in ("0", "-1") or not morsel.value
                # Sent back in every request's Cookie header: a value that is no
                # cookie value (SimpleCookie unquotes "\015\012" to CR LF and
                # "\303" to non-ASCII text, which httpx cannot send) is not kept,
                # and the next request starts a session anew.
                usable = _COOKIE_VALUE.fullmatch(morsel.value) is not None
                self._session = None if expired or not usable else morsel.value
                return

    @staticmethod
    def _stale_session(response: httpx.Response, body: bytes) -> bool:
        """1C answers a stale cookie with 400 or 500 and text, never with a contract error."""
        if response.status_code not in (400, 500):
            return False
        if response.status_code == 400:
            try:
                return parse_error(decode_json(body)) is None
            except BodyError:
                return True
        return True
