"""The API's HTTP/1.1 connections, bounded in size, in number and in time.

uvicorn's own protocols leave three doors open to anyone who reaches the
listener, before any token is asked for:

* **Size.** httptools (uvicorn's C parser) takes headers of any size and
  number: 40 MiB of headers to ``/healthz`` grew the process by 600 MB. Here
  the bytes of a head are counted as they are read, and past
  :data:`MAX_HEADER_BYTES` the client gets 400 and the connection is closed.
* **Pipelining.** uvicorn queues every request that arrives while another
  is answered and reads on: one connection writing pipelined requests it
  never reads answers to grew the process by hundreds of MB. Past
  :data:`MAX_PIPELINED` queued requests the connection gets 400 and is closed.
* **Number.** Every open connection is a file descriptor, and uvicorn takes
  as many as the kernel hands it. Past ``[api] max_connections`` the open
  connection that has owed its request longest (still arriving, or idle
  between requests) is closed to make room; when every open one is being
  answered, a new one is answered 503 and closed at once.
* **Host.** uvicorn passes on every ``Host`` header and drops the authority
  of an absolute-form target (``GET http://evil.example/metrics``), so the
  Host check (:mod:`router.api.hosts`) read the first of two Host headers,
  or the Host header a target overrides, and answered an HTTP/1.1 request
  with none. Here a request with more than one ``Host``, or an HTTP/1.1 one
  with none, is answered 400 (an HTTP/1.0 one may lack it), and an
  absolute-form target's authority becomes the request's one ``Host`` (RFC
  9112 3.2, 3.2.2).
* **Time.** uvicorn starts its keep-alive timer only after a response, so a
  connection that sends nothing, half its headers or a slow body stays open
  for ever. Here a whole request (head and body) must arrive within
  :data:`REQUEST_DEADLINE` seconds of the connection or of the end of the
  previous response; and a client that takes none of what is written to it
  for :data:`WRITE_DEADLINE` seconds (an SSE stream nobody reads) is cut, so
  what it holds (a stream slot, the socket, the buffered bytes) is freed.

* **Rate.** Requests without a valid token (``/healthz``, ``/readyz``,
  ``/metrics``, every refusal), and those bearing one to a path where the app
  takes no token's rate (:func:`token_checked`: ``/healthz``, ``/readyz``, the
  OpenAPI document, ``/metrics`` without ``metrics_auth``), are counted per client address
  (:mod:`router.api.addresses`, ``[api] anonymous_rate``), a recording's
  link with a valid, unexpired signature (1C's) per link: past it the
  request is answered ``429`` by a bare app, not ours, and nothing more is
  read from that connection until its ``Retry-After`` is up. 1,200 a second
  from one address took routing from 2-3 ms to 40-180 ms. A request bearing
  a valid token whose own rate is spent (``[api.tokens.NAME] rate``) is
  answered its ``429`` by a bare app too, by the app's own token check
  (:meth:`router.api.auth.Authenticator.over_rate`, which takes nothing: the
  app takes a request it serves), rather than read, routed and audited for it
  (bench/bench_refusals.py); its connection is read on (a reverse proxy
  brings other tokens' requests on it). So is a request of the live page
  bearing a valid session, counted against the token that signed the page in
  (:mod:`router.api.page_rate`: every session of one token in its one
  bucket). Each such ``429`` is counted in
  ``callrouter_api_rate_limited_total`` by the limit it was over.
* **Framing.** httptools serves an ``HTTP/2.0`` request line as HTTP/1.1,
  reads ``Transfer-Encoding: gzip, chunked`` as chunked, and hands a chunked
  body's trailer to uvicorn, which added it to the request's headers: here
  such versions get ``505``, such codings ``501`` (:func:`refused_framing`),
  and trailers are dropped.

:class:`BoundedHttpToolsProtocol` is uvicorn's httptools protocol with those
bounds; :func:`bounded_protocol` makes the class one server passes to
``uvicorn.Config(http=...)``. httptools rather than the pure-Python h11 (which
bounds heads itself): with h11 the event feed's worst case, 100 long-polling
clients answered at once, took 2-3 times as long (bench/bench_feed.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, ClassVar

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from router.api.addresses import AddressLimiter
from router.api.app import OPENAPI_PATH
from router.api.auth import Authenticator, over_rate_detail, retry_after
from router.api.page_rate import PageRate
from router.api.settings import TokenSettings
from router.metrics import Metrics

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_PIPELINED",
    "REQUEST_DEADLINE",
    "WRITE_DEADLINE",
    "BoundedHttpToolsProtocol",
    "bounded_protocol",
    "target_host",
    "token_checked",
]

log = logging.getLogger("router.api")

#: Largest request head (request line and headers) taken; a real one is < 2 KiB.
MAX_HEADER_BYTES = 16 * 1024
#: Requests a connection may have waiting behind the one being answered
#: (HTTP/1.1 pipelining: no browser does it, 1C and curl do not); one more and
#: the connection is answered 400 and closed.
MAX_PIPELINED = 16
#: Seconds a whole request (head and body) has to arrive, counted from the
#: connection or from the end of the previous response on it.
REQUEST_DEADLINE = 10.0
#: Seconds the client may leave written bytes unread (the kernel's buffer full
#: and ours not empty) before the connection is cut.
WRITE_DEADLINE = 10.0
#: Bytes of the reads a head may span before it is refused unparsed: httptools
#: keeps a header until it ends, so an endless one is stopped here (the exact
#: bound, MAX_HEADER_BYTES, is on the parsed head; a read may also carry the
#: end of the request before, a body up to 64 KiB).
_HEAD_READS_BOUND = 4 * MAX_HEADER_BYTES + 64 * 1024
#: Seconds between two warnings about refused connections.
_WARN_EVERY = 60.0
#: The warning about connections closed to make room for new ones.
_EVICTED = (
    "API: %d connection(s) that had sent no whole request closed to make room for new ones: "
    "already %d open ([api] max_connections)"
)

#: The warning about requests bearing a valid token refused over its rate.
_TOKEN_OVER_RATE = (
    "API: %d request(s) bearing a valid token answered 429 before the app: over the token's "
    "own rate (the last: %s)"
)

#: The warning about requests refused over [api] anonymous_rate.
_OVER_RATE = (
    "API: %d request(s) without a valid token answered 429: over [api] anonymous_rate "
    "of %g a second from one client address"
)

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 37\r\n"
    b"\r\n"
    b"too many connections; retry shortly\r\n"
)


class _Refusals:
    """Connections refused past the cap: counted, warned about once a minute.

    The first refusal is said at once; those after it within the minute are
    said when the minute is up, all in one line (they were left waiting for
    a refusal a minute later, and a burst was said as its first one)."""

    def __init__(
        self,
        message: str = "API: %d connection(s) refused: already %d open ([api] max_connections)",
    ) -> None:
        #: The line, given the count since the last and the cap.
        self.message = message
        self.count = 0
        self._since_warning = 0
        self._warned_at = -_WARN_EVERY
        self._limit: float | str = 0
        #: The line due when the minute is up, for refusals since the last.
        self._due: asyncio.TimerHandle | None = None

    def note(self, limit: float | str) -> None:
        self.count += 1
        self._since_warning += 1
        self._limit = limit
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warn()
        elif self._due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: said with the next refusal
                return
            self._due = loop.call_later(self._warned_at + _WARN_EVERY - now, self._warn)

    def close(self) -> None:
        """At the server's stop: the line still due is said now, and its timer
        cancelled (it fired up to a minute after the stop, on a stopped API or
        a closed loop; issue 16)."""
        self._warn()

    def _warn(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if not self._since_warning:
            return
        log.warning(self.message, self._since_warning, self._limit)
        self._warned_at = time.monotonic()
        self._since_warning = 0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on request heads, a cap on
    connections and deadlines on requests and writes."""

    max_connections: ClassVar[int] = 256
    max_head: ClassVar[int] = MAX_HEADER_BYTES
    max_pipelined: ClassVar[int] = MAX_PIPELINED
    request_deadline: ClassVar[float] = REQUEST_DEADLINE
    write_deadline: ClassVar[float] = WRITE_DEADLINE
    refusals: ClassVar[_Refusals] = _Refusals()
    evictions: ClassVar[_Refusals] = _Refusals(_EVICTED)
    #: The rate per client address of requests without a valid token
    #: (``[api] anonymous_rate``; :mod:`router.api.addresses`), None: none.
    addresses: ClassVar[AddressLimiter | None] = None
    #: ``[api] metrics_auth``: ``/metrics`` takes a token's rate (:func:`token_checked`).
    metrics_auth: ClassVar[bool] = False
    over_rate: ClassVar[_Refusals] = _Refusals(_OVER_RATE)
    #: The served app's tokens (its :class:`~router.api.auth.Authenticator`,
    #: their rates), set by the server; None: no request is taken for a token's.
    tokens: ClassVar[Authenticator | None] = None
    token_over_rate: ClassVar[_Refusals] = _Refusals(_TOKEN_OVER_RATE)
    #: The live page's requests counted against their token's rate
    #: (:mod:`router.api.page_rate`), set by the server; None: none are.
    pages: ClassVar[PageRate | None] = None
    #: Where the 429s answered before the app are counted (the engine's
    #: ``callrouter_api_rate_limited_total``), set by the server; None: nowhere.
    metrics: ClassVar[Metrics | None] = None
    #: Whether the listener answers for a ``Host`` header's value (its
    #: :class:`router.api.hosts.TrustedHosts` check), set by the server; None:
    #: it answers for any.
    hosts: ClassVar[Callable[[str], bool] | None] = None
    #: The connections that owe a request (their request timer runs), the one
    #: owing longest first: the one closed to make room past the cap.
    owing: ClassVar[dict[BoundedHttpToolsProtocol, None]] = {}

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._request_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        #: Bytes read since the head being read began (None: a body or nothing owed).
        self._head_bytes: int | None = 0
        #: The parsed head's size so far (request line and headers).
        self._head_size = 0
        #: A request's bytes are arriving (its message begun, not complete).
        self._arriving = False
        #: What was left unwritten when the write deadline last started.
        self._unwritten = 0
        #: The request's head is complete: what comes now as a header is a
        #: chunked body's trailer.
        self._head_done = False
        #: When the connection began to owe its request (see :attr:`owing`).
        self.owing_since = 0.0
        #: Seconds to read nothing once the response under way is sent (a
        #: request over its address's rate: its Retry-After), and the timer
        #: that reads on.
        self._throttle = 0
        self._unthrottle_timer: asyncio.TimerHandle | None = None

    # -- connections -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            self.refusals.note(self.max_connections)
            transport.write(_BUSY)
            _let_go(transport)
            return
        # Bytes the kernel would not take pause the response (uvicorn's flow
        # control) and start the write deadline: with the default limit (64 KiB)
        # a few unread KiB could stay in our buffer with no deadline, and a
        # closed transport waits for its buffer to empty before it lets go.
        # (1, not 0: the TLS transport pauses at >= high, so 0 pauses it empty.)
        transport.set_write_buffer_limits(high=1, low=0)
        self._start_request_timer()

    def _make_room(self) -> bool:
        """Close the open connection that has owed its request longest (one
        whose request is still arriving, or idle between requests), so a new
        one is served: True when there was one. Refusing the new one instead
        let one client hold every place by sending a byte now and then (it
        took each back within the request deadline): the API answered nobody
        else. A client's real request arrives within milliseconds of its
        connection, so it is the newest that owes one, the last to go; a
        connection being answered (a long poll, a stream) is never closed."""
        oldest = self.oldest_owing(but=self)
        if oldest is None:
            return False
        oldest[1]()
        return True

    @classmethod
    def oldest_owing(
        cls, but: BoundedHttpToolsProtocol | None = None
    ) -> tuple[float, Callable[[], None]] | None:
        """The open connection that has owed its request longest (other than
        ``but``): since when (the loop's clock) and what closes it, counting
        it evicted; None when none owes one. The TLS handshakes
        (:mod:`router.api.handshake`) weigh it against their oldest."""
        oldest = next(
            (other for other in cls.owing if other is not but and not other.transport.is_closing()),
            None,
        )
        if oldest is None:
            return None
        return oldest.owing_since, oldest._evict

    def _evict(self) -> None:
        self._cancel_request_timer()
        self.evictions.note(self.max_connections)
        self._let_go()

    def _let_go(self) -> None:
        """Close this connection now (:func:`_let_go`); cut when it is not being
        read (over its address's rate): asyncio's TLS layer holds a client's
        close while reading is paused, and a close waited for that reading for
        ever, the slot of ``max_connections`` never given back (hreview49)."""
        if self._unthrottle_timer is not None:
            self.transport.abort()
        else:
            _let_go(self.transport)

    def shutdown(self) -> None:
        if self._unthrottle_timer is not None:
            self.transport.abort()  # as _let_go: the server stopping waited for it
        else:
            super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        if self._unthrottle_timer is not None and not self.transport.is_closing():
            self.transport.abort()  # as _let_go
        else:
            super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        self._cancel_write_timer()
        if self._unthrottle_timer is not None:
            self._unthrottle_timer.cancel()
            self._unthrottle_timer = None
        super().connection_lost(exc)

    # -- the head bound --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # httptools keeps a header's name and value until they end, and uvicorn
        # the url and every header until the head ends: counted here by the
        # reads that carried them, so no head takes more than MAX_HEADER_BYTES
        # plus one read (at most 256 KiB) before it is refused.
        # (A read may also hold the end of the request before, hence the
        # margin: the exact bound is the parsed head's, in _count_head.)
        if self._head_bytes is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > _HEAD_READS_BOUND:
                self._head_bytes = None
                self.send_400_response(f"Request head over {self.max_head} bytes.")

    def on_message_begin(self) -> None:
        # uvicorn queues a request that comes while another is answered, with
        # its scope and headers, and reads on after each answer: 256 KiB of
        # "GET / HTTP/1.1" queued 14,000 (30 MB), and a client that kept
        # writing grew the queue without end. (An exception here is
        # httptools' parse error: uvicorn answers 400 and closes.)
        if len(self.pipeline) >= self.max_pipelined:
            raise ValueError(f"more than {self.max_pipelined} pipelined requests")
        super().on_message_begin()
        self._head_size = 0
        self._head_bytes = 0
        self._arriving = True
        self._head_done = False

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url) + 12)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head that came whole in one read: its parts are counted as parsed
        # (an exception here is httptools' parse error: uvicorn answers 400).
        self._count_head(len(name) + len(value) + 4)
        if self._head_done:
            # A chunked body's trailer: uvicorn appended it to the request's
            # headers (the very list its scope holds), after the Host check and
            # while the app ran, so a trailer "Host" or "Authorization" became
            # a second one the app could read. Discarded (RFC 9110 6.5.1).
            return
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_head:
            raise ValueError(f"request head over {self.max_head} bytes")

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._head_done = True
        version = self.parser.get_http_version()
        # (An exception here is httptools' parse error: uvicorn answers 400.)
        refusal = refused_framing(self.headers, version)
        if refusal is None:
            target_host(self.headers, self.url, http_version=version)
            refusal = self._over_rate()
        if refusal is None:
            super().on_headers_complete()
            return
        # Answered by a bare app instead of ours, in its turn (after the
        # requests pipelined before it), as uvicorn answers its own 503.
        app = self.app
        self.app = refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _over_rate(self) -> _Refusal | None:
        """The 429 for a request over its token's rate (bearing a valid token,
        or a valid session of the live page on the page's paths) or, bearing
        neither, its address's; or None."""
        tokens = self.tokens
        authorization = next((v for n, v in self.headers if n == b"authorization"), None)
        bearer = None
        # A Host the listener does not go by is answered 421 before the app
        # takes anything from a token: counted by its address, as every refusal
        # before a token is accepted (else a valid token or session sent with
        # one was counted nowhere, however many; hrev50b).
        misdirected = self._misdirected()
        if tokens is not None and authorization is not None and not misdirected:
            token, wait = tokens.over_rate(authorization)
            if token is not None:
                if token_checked(self.url, metrics_auth=self.metrics_auth):
                    if not wait:
                        return None  # the app takes it from the token's rate
                    return self._token_refusal(token, wait, "token")
                bearer = token
        cookies = [v for n, v in self.headers if n == b"cookie"]
        cookie = b"; ".join(cookies) if cookies else None
        method = self.parser.get_method()
        pages = self.pages
        if pages is not None and not misdirected:
            # The live page's request, by the token that signed it in: every
            # session of one token in its one bucket (router/api/page_rate.py).
            token, wait = pages.wait(method, self.url, cookie, bearer)
            if token is not None:
                return self._token_refusal(token, wait, "page") if wait else None
        # A valid token where the app takes none (/healthz, /readyz, the
        # document, /metrics without metrics_auth) is counted by its address as
        # a request without one: not counted at all, a token holder sent them
        # without limit. 20 a second per address is far above any monitor.
        limiter = self.addresses
        if limiter is None:
            return None
        wait = limiter.wait(self.client[0] if self.client else None, method, self.url)
        if not wait:
            return None
        seconds = limiter.retry_after(wait)
        self.over_rate.note(limiter.rate)
        self._limited(limiter.refused_by)
        self._throttle = seconds
        return _Refusal(
            429,
            f"more than {limiter.rate:g} requests/s without a token, or to paths that "
            f"take none, from this address ([api] anonymous_rate); retry in {seconds} s",
            retry_after=seconds,
            close=False,
        )

    def _misdirected(self) -> bool:
        """Whether the request's ``Host`` is one the listener answers ``421``
        (the first, as :class:`router.api.hosts.TrustedHosts` reads it)."""
        hosts = type(self).hosts  # a bound check, not a method of this class
        if hosts is None:
            return False
        host = next((v for n, v in self.headers if n == b"host"), None)
        return host is not None and not hosts(host.decode("latin-1"))

    def _token_refusal(self, token: TokenSettings, wait: float, limit: str) -> _Refusal:
        """The 429 for a request of ``token`` over its rate (``limit``: ``token``
        for a bearer request, ``page`` for the live page's), answered before the
        app; its connection is read on (a reverse proxy brings other clients'
        requests on it)."""
        seconds = retry_after(wait)
        page = "'s live page" if limit == "page" else ""
        self.token_over_rate.note(f"token {token.name!r}{page}, {token.rate:g} a second")
        self._limited(limit)
        return _Refusal(429, over_rate_detail(token, seconds), retry_after=seconds, close=False)

    def _limited(self, limit: str) -> None:
        """Count a 429 answered before the app in ``callrouter_api_rate_limited_total``."""
        metrics = self.metrics
        if metrics is not None:
            metrics.api_limited(limit)

    # -- the request deadline --------------------------------------------------

    def on_message_complete(self) -> None:
        self._arriving = False
        answered = self.cycle is None or self.cycle.response_complete
        super().on_message_complete()
        if answered:
            # Answered before its body was read (a 404, a 401, a 421): the
            # connection is idle now and owes the next request, in time.
            self._start_request_timer()
        else:
            self._cancel_request_timer()  # the whole request is in, being served

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Owed from now: the rest of a request answered early, or the next
        # one; not a pipelined request that came whole and is being served.
        if self._arriving or self.cycle is None or self.cycle.response_complete:
            self._start_request_timer()
        if self._throttle and not self.transport.is_closing():
            # Over its address's rate: nothing more is read from this
            # connection until its Retry-After is up. Answering each request
            # 429 still cost the loop most of what serving it did (a 1,200/s
            # flood took 20 % of a core either way); a client that waits as
            # told loses nothing, one that does not is held by TCP instead.
            self.transport.pause_reading()
            if self._unthrottle_timer is not None:
                self._unthrottle_timer.cancel()
            self._unthrottle_timer = self.loop.call_later(self._throttle, self._unthrottle)
            self._throttle = 0

    def _unthrottle(self) -> None:
        self._unthrottle_timer = None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _start_request_timer(self) -> None:
        self._cancel_request_timer()
        if not self.transport.is_closing():
            self._request_timer = self.loop.call_later(self.request_deadline, self._request_late)
            self.owing[self] = None  # the newest owing
            self.owing_since = self.loop.time()

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        self.owing.pop(self, None)

    def _request_late(self) -> None:
        self._request_timer = None
        self.owing.pop(self, None)
        if self.transport.is_closing():
            return
        log.debug(
            "API: closing a connection from %s: no whole request in %g s",
            self.client[0] if self.client else "-",
            self.request_deadline,
        )
        self._let_go()

    # -- the write deadline ----------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._unwritten = self.transport.get_write_buffer_size()
            self._write_timer = self.loop.call_later(self.write_deadline, self._write_late)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_late(self) -> None:
        self._write_timer = None
        left = self.transport.get_write_buffer_size()
        if left < self._unwritten:
            # A slow reader, not a stalled one (a recording over a thin line):
            # it took some, so it gets another term for the rest.
            self._unwritten = left
            self._write_timer = self.loop.call_later(self.write_deadline, self._write_late)
            return
        log.info(
            "API: cut a connection from %s: it read nothing of its response for %g s",
            self.client[0] if self.client else "-",
            self.write_deadline,
        )
        _let_go(self.transport)


_API = b"/api/v1/"
_OPENAPI = OPENAPI_PATH.encode()
_RECORDINGS = b"/api/v1/recordings/"
_METRICS = b"/metrics"


def token_checked(target: bytes, *, metrics_auth: bool = False) -> bool:
    """Whether the app takes the token of a request for ``target`` (the
    request line's), and so answers ``429`` for one over its rate: every
    ``/api/v1`` path but the OpenAPI document and a recording's signed link
    (``sig``, ``expires``), and ``/metrics`` under ``[api] metrics_auth``.
    Elsewhere (``/healthz``, ``/readyz``, ``/metrics`` without it, the live
    page) a token over its rate is not refused by it: a health check must
    answer, and those never take from a token's rate; such a request is
    counted by its address instead, as one without a token."""
    path, _, query = target.partition(b"?")
    if not path.startswith(b"/"):  # absolute form (RFC 9112 3.2.2)
        try:
            parsed = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return False
        path, query = parsed.path or b"", parsed.query or b""
    path = urllib.parse.unquote_to_bytes(path)  # as uvicorn hands it to the routes
    if path == _METRICS:
        return metrics_auth
    if not path.startswith(_API) or path == _OPENAPI:
        return False
    if path.startswith(_RECORDINGS):
        names = {field.partition(b"=")[0] for field in query.split(b"&")}
        return not names & {b"sig", b"expires"}
    return True


def target_host(
    headers: list[tuple[bytes, bytes]], target: bytes, *, http_version: str | None = None
) -> None:
    """Leave ``headers`` (lowercase names) with the one ``Host`` the request is
    for: raise ValueError for more than one ``Host`` header, and for none in an
    HTTP/1.1 request (``http_version`` ``"1.1"``; RFC 9112 3.2: both 400; an
    HTTP/1.0 one may lack it), and put an absolute-form ``target``'s authority
    in place of any ``Host`` (3.2.2: the server uses the target's and ignores
    the header)."""
    hosts = [index for index, (name, _) in enumerate(headers) if name == b"host"]
    if len(hosts) > 1:
        raise ValueError("more than one Host header")
    if not hosts and http_version == "1.1":
        raise ValueError("HTTP/1.1 request without a Host header")
    if not target or target.startswith(b"/") or target == b"*":
        return  # origin-form, or OPTIONS *: the Host header says the host
    try:
        parsed = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise ValueError("request target is not a URL") from None
    host = parsed.host
    if not parsed.schema or not host:
        raise ValueError("request target names no host")
    authority = b"[" + host + b"]" if b":" in host else host
    if parsed.port is not None:
        authority += b":%d" % parsed.port
    for index in reversed(hosts):
        del headers[index]
    headers.append((b"host", authority))


#: The transfer coding the API takes (RFC 9112 7): anything else before it
#: is 501, and a body not ending in it has no length we could tell.
_CHUNKED = b"chunked"


def refused_framing(headers: list[tuple[bytes, bytes]], http_version: str) -> _Refusal | None:
    """The answer for a request whose version or framing is not served, or None.

    httptools serves ``HTTP/2.0`` (and ``HTTP/0.9``) request lines as HTTP/1.1
    and reads ``Transfer-Encoding: gzip, chunked`` as plain chunked, handing
    the app compressed bytes for a body. So (RFC 9110 15.6.6, RFC 9112 6.1):

    * a major version other than 1: ``505``;
    * ``Transfer-Encoding`` in an HTTP/1.0 request: ``400`` (its framing is
      faulty, whatever the value);
    * ``chunked`` applied more than once, or not last: ``400`` (raised: the
      body's length is unknown; httptools refuses most such already);
    * any other coding besides ``chunked`` (``gzip``, ``deflate``): ``501``.

    Each closes the connection: what follows the head cannot be trusted to
    be where the next request begins."""
    if not http_version.startswith("1."):
        return _Refusal(
            505,
            f"HTTP/{http_version[:8]} is not supported: this API speaks HTTP/1.1 (and 1.0)",
        )
    codings: list[bytes] = []
    for name, value in headers:
        if name == b"transfer-encoding":
            # Empty list elements are no codings (RFC 9110 5.6.1): llhttp takes
            # ", chunked" for chunked, and so must this.
            codings.extend(c for c in (c.strip().lower() for c in value.split(b",")) if c)
    if not codings:
        return None
    if http_version == "1.0":
        raise ValueError("Transfer-Encoding in an HTTP/1.0 request")
    if codings[-1] != _CHUNKED or codings.count(_CHUNKED) != 1:
        raise ValueError("a Transfer-Encoding not ending in one chunked")
    if len(codings) == 1:
        return None  # chunked alone
    others = sorted({c.decode("latin-1")[:40] for c in codings[:-1]})
    return _Refusal(
        501,
        f"transfer coding {', '.join(others)} is not supported: send the body as is, "
        "with Content-Length or Transfer-Encoding: chunked alone",
    )


class _Refusal:
    """A bare ASGI app answering one status as problem details (RFC 9457),
    without our app and its middleware: cheap, for a flood of them."""

    _TITLES: ClassVar[dict[int, str]] = {
        429: "Too Many Requests",
        501: "Not Implemented",
        505: "HTTP Version Not Supported",
    }

    def __init__(
        self, status: int, detail: str, *, retry_after: int | None = None, close: bool = True
    ) -> None:
        self.status = status
        body = {
            "type": "about:blank",
            "title": self._TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
        }
        self.body = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if close:
            headers.append((b"connection", b"close"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def _let_go(transport: asyncio.Transport) -> None:
    """Close ``transport`` now: gently when all is written, else cut (close
    would wait for a client that does not read, which is to say for ever)."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


class _QuietBadRequests(logging.Filter):
    """uvicorn logs a WARNING for every request it cannot parse, and two for
    every request asking for an ``Upgrade`` (``websocket``, ``h2c``): anyone
    who reaches the port can send thousands a second (a log filled by
    strangers). So one such line a minute passes for each, saying how many
    were held back, and uvicorn's advice to install a WebSocket library (the
    API serves none, on purpose: ``ws="none"``) never does."""

    MESSAGE = "Invalid HTTP request received."
    UPGRADE = "Unsupported upgrade request."
    ADVICE = "No supported WebSocket library detected."

    def __init__(self) -> None:
        super().__init__()
        self._held = {self.MESSAGE: 0, self.UPGRADE: 0}
        self._passed_at = {self.MESSAGE: -_WARN_EVERY, self.UPGRADE: -_WARN_EVERY}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if not isinstance(message, str):
            return True
        if message.startswith(self.ADVICE):
            return False
        if message not in self._held:
            return True
        now = time.monotonic()
        if now - self._passed_at[message] < _WARN_EVERY:
            self._held[message] += 1
            return False
        if self._held[message]:
            record.msg = f"{message} ({self._held[message]} more in the last minute not logged)"
        self._passed_at[message], self._held[message] = now, 0
        return True


_QUIET = _QuietBadRequests()


def bounded_protocol(
    *,
    max_connections: int,
    request_deadline: float | None = None,
    write_deadline: float | None = None,
    addresses: AddressLimiter | None = None,
    metrics_auth: bool = False,
) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for one server: its own bounds, its own refusal count
    (the deadlines default to :data:`REQUEST_DEADLINE` and :data:`WRITE_DEADLINE`),
    its own rate per address (``addresses``; None: none); ``metrics_auth``:
    ``[api] metrics_auth``, whether ``/metrics`` takes a token's rate."""

    class Bounded(BoundedHttpToolsProtocol):
        pass

    Bounded.max_connections = max_connections
    Bounded.request_deadline = REQUEST_DEADLINE if request_deadline is None else request_deadline
    Bounded.write_deadline = WRITE_DEADLINE if write_deadline is None else write_deadline
    Bounded.refusals = _Refusals()
    Bounded.evictions = _Refusals(_EVICTED)
    Bounded.owing = {}
    Bounded.addresses = addresses
    Bounded.metrics_auth = metrics_auth
    Bounded.over_rate = _Refusals(_OVER_RATE)
    Bounded.tokens = None
    Bounded.token_over_rate = _Refusals(_TOKEN_OVER_RATE)
    Bounded.pages = None
    Bounded.metrics = None
    Bounded.hosts = None
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _QUIET not in uvicorn_log.filters:
        uvicorn_log.addFilter(_QUIET)
    Bounded.__name__ = Bounded.__qualname__ = "BoundedHttpToolsProtocol"
    return Bounded
