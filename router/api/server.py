"""Serving the API from the engine's own event loop with uvicorn.

No second process and no thread: the endpoints read the engine's live state
without locks, and a request costs no hop. Three things uvicorn would do on
its own are taken away from it:

* Signals. ``uvicorn.Server.serve`` installs SIGINT/SIGTERM handlers with
  ``signal.signal``, which would take SIGTERM (drain, then stop) and SIGHUP
  (reload) from the engine. :class:`_Server` installs none.
* The listening socket. uvicorn calls ``sys.exit(1)`` when it cannot bind;
  we bind first and raise :class:`~router.errors.ConfigError` naming
  ``[api] listen``.
* Logging. ``log_config=None`` leaves our handlers in charge (uvicorn's
  loggers propagate to them); its access log is off because the API writes
  its own audit line per request (``router.api.audit``).

And what it would take from anyone who reaches the port: the HTTP protocol
is httptools with a bound on request heads, a cap on connections and deadlines
for requests and writes (:mod:`router.api.protocol`), TLS handshakes are
counted against that cap and bounded in time (:mod:`router.api.handshake`),
and the app answers only for the ``Host`` names the listener goes by
(:mod:`router.api.hosts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import time
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from router.api import handshake
from router.api.addresses import AddressLimiter
from router.api.auth import Authenticator
from router.api.handshake import Handshakes
from router.api.hosts import TrustedHosts, trusted_hosts
from router.api.page_rate import PageRate
from router.api.protocol import BoundedHttpToolsProtocol, bounded_protocol
from router.api.refusals import Refusals
from router.api.settings import ApiSettings
from router.errors import ConfigError
from router.metrics import Metrics
from router.tasks import cancel_and_wait

__all__ = ["FILES_KEPT", "ApiServer", "address_limiter", "connections_within"]

log = logging.getLogger("router.api")

#: Seconds open requests (long polls, SSE streams) get to finish at stop.
GRACEFUL_STOP = 2

#: Open files callrouter keeps for itself beside the API's connections: the
#: AMI pool (20) and event stream, the plugins' HTTP clients (1C), the SQLite
#: files of the state folder, CEL, the rule watcher, the log.
FILES_KEPT = 48

#: The fewest connections the API keeps, however low the open-files limit.
_FEWEST_CONNECTIONS = 8


def connections_within(wanted: int, open_files: int | None = None) -> int:
    """``[api] max_connections`` as the open-files limit allows it (``ulimit -n``,
    ``LimitNOFILE=``; ``open_files``, else the process's soft limit).

    Past the limit every ``accept``, ``connect`` and ``open`` fails: API clients
    holding connections took the files routing needs (the AMI connections of a
    call's Redirect), so calls fell to their default route, and asyncio logged
    the failed accepts thousands of times a second. So the API leaves
    :data:`FILES_KEPT` files to the rest, and says so once, at start.
    """
    if open_files is None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return wanted
        open_files = soft
    allowed = max(_FEWEST_CONNECTIONS, open_files - FILES_KEPT)
    if wanted <= allowed:
        return wanted
    log.warning(
        "[api] max_connections %d lowered to %d: the open-files limit is %d (ulimit -n, "
        "systemd's LimitNOFILE=), and callrouter keeps %d of them for Asterisk, plugins "
        "and its files, or API clients could take the files routing needs and calls "
        "would take their default route; raise the limit to %d or more to have %d",
        wanted,
        allowed,
        open_files,
        FILES_KEPT,
        wanted + FILES_KEPT,
        wanted,
    )
    return allowed


def address_limiter(settings: ApiSettings) -> AddressLimiter | None:
    """``[api] anonymous_rate`` and its keys as the protocol applies them
    (:mod:`router.api.addresses`); None when the rate is 0 (no limit)."""
    if settings.anonymous_rate <= 0:
        return None
    return AddressLimiter(
        rate=settings.anonymous_rate,
        burst=settings.anonymous_burst,
        addresses=settings.anonymous_addresses,
        loopback=settings.anonymous_loopback,
        factor=settings.anonymous_48_factor,
    )


class _AcceptStorm(logging.Filter):
    """asyncio logs ``socket.accept() out of system resource`` (out of open
    files) for every try, and Python 3.11's accept loop tries again up to the
    backlog's times in each turn, each try scheduling more: 100,000 ERROR lines
    in 20 s were seen. One a minute passes, saying how many were held back."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self) -> None:
        super().__init__()
        self._held = 0
        self._passed_at = -60.0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if not isinstance(message, str) or not message.startswith(self.MESSAGE):
            return True
        now = time.monotonic()
        if now - self._passed_at < 60.0:
            self._held += 1
            return False
        held, self._held, self._passed_at = self._held, 0, now
        record.msg = (
            f"{self.MESSAGE}: the open-files limit (ulimit -n, LimitNOFILE=) is reached"
            + (f" ({held} more in the last minute not logged)" if held else "")
            + message[len(self.MESSAGE) :]
        )
        record.exc_info = record.exc_text = None  # the same OSError every time
        return True


_ACCEPT_STORM = _AcceptStorm()


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the engine owns the process's
    signals), and with TLS handshakes done by :mod:`router.api.handshake`."""

    protocol_class: type[BoundedHttpToolsProtocol]
    handshakes: Handshakes | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if config.ssl is None or sockets is None:
            await super().startup(sockets)
            return
        # uvicorn would hand the context to create_server, and asyncio would
        # hold each handshake for 60 s, uncounted: the listener takes plain TCP
        # and the handshakes are ours, counted and bounded.
        await self.lifespan.startup()
        protocol_class = self.protocol_class

        def http_protocol() -> asyncio.Protocol:
            return protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        self.handshakes = Handshakes(
            http_protocol,
            config.ssl,
            open_connections=self.server_state.connections,
            limit=protocol_class.max_connections,
            refused=protocol_class.refusals.note,
            deadline=handshake.HANDSHAKE_DEADLINE,
            owing=protocol_class.oldest_owing,
            evicted=protocol_class.evictions.note,
        )
        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(self.handshakes, sock=sock, backlog=config.backlog)
            for sock in sockets
        ]
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.handshakes is not None:
            # No new connection first (uvicorn closes the listeners again, a
            # no-op): one accepted while the handshakes are cut is not upgraded.
            for server in getattr(self, "servers", ()):
                server.close()
            await self.handshakes.close()
        await super().shutdown(sockets)


class _Current:
    """The app the listener serves now: uvicorn hands each connection the app
    it loaded once, and a connection kept alive across :meth:`ApiServer.serve`
    must reach the new app too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class ApiServer:
    """One listener for the API app: :meth:`start` before the engine's login
    (with the app that answers while it starts), :meth:`serve` the API proper
    once the engine is started, :meth:`stop` at engine stop."""

    def __init__(self, app: ASGIApp, settings: ApiSettings) -> None:
        self.settings = settings
        self._current = _Current(app)
        served: ASGIApp = self._current
        allowed = trusted_hosts(settings)
        if allowed is not None:
            served = TrustedHosts(served, allowed)
        #: ``[api] max_connections``, or fewer under a low open-files limit.
        self.max_connections = connections_within(settings.max_connections)
        self._addresses = address_limiter(settings)
        protocol_class = bounded_protocol(
            max_connections=self.max_connections,
            addresses=self._addresses,
            metrics_auth=settings.metrics_auth,
        )
        self._protocol_class = protocol_class
        if isinstance(served, TrustedHosts):
            # Its 421 takes nothing from a token: the listener counts such a
            # request by its address (router/api/protocol.py).
            protocol_class.hosts = served.accepts
        self._link_check(app)
        asyncio_log = logging.getLogger("asyncio")
        if _ACCEPT_STORM not in asyncio_log.filters:
            asyncio_log.addFilter(_ACCEPT_STORM)
        self._config = uvicorn.Config(
            served,
            # httptools with our bounds on heads, connections and time
            # (router/api/protocol.py): uvicorn's own take any of them.
            http=protocol_class,
            host=settings.host,
            port=settings.port,
            ssl_certfile=str(settings.cert) if settings.cert else None,
            ssl_keyfile=str(settings.key) if settings.key else None,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_STOP,
        )
        self._server = _Server(self._config)
        self._server.protocol_class = protocol_class
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (the configured one once started)."""
        if self._socket is None:
            return self.settings.port
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind and serve; raise ConfigError when the address or TLS files are unusable."""
        try:
            self._config.load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[api] cert/key: cannot load the TLS certificate: {exc}") from None
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        try:
            self._socket = socket.create_server(
                (self.settings.host, self.settings.port), family=family, backlog=1024
            )
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EADDRINUSE:
                # Most often the service itself, and this a manual run of its
                # router.toml: the one mistake the live-instance guard is for,
                # which never gets that far when the API is on.
                hint = (
                    "; another program listens there, such as a callrouter already "
                    "running with this router.toml: a second instance (standing by, "
                    "or --shadow) needs a configuration of its own, with another "
                    "[api] listen and state_dir (docs/operations.md, Two instances)"
                )
            raise ConfigError(
                f"[api] listen: cannot listen on {self.settings.listen}: "
                f"{exc.strerror or exc}{hint}"
            ) from None
        # Accepted connections inherit it (Linux). asyncio sets TCP_NODELAY only
        # on sockets whose proto is IPPROTO_TCP, and create_server's is 0: without
        # this, a response's body waits for the client's delayed ACK of its
        # headers (Nagle), 40 ms on every long-poll answer.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket]), name="callrouter-api"
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConfigError(f"[api] listen: the API server on {self.settings.listen} ended")
            await asyncio.sleep(0.01)
        scheme = "https" if self.settings.tls else "http"
        log.info("API listening on %s://%s/api/v1", scheme, self.settings.listen)

    def serve(self, app: ASGIApp) -> None:
        """Answer every request from now on with ``app``, on the same listener."""
        self._link_check(app)
        self._current.app = app

    def _link_check(self, app: ASGIApp) -> None:
        """The rate per address (:mod:`router.api.addresses`) counts a request
        for a recording by a link ``app`` signed validly (its context's
        ``recording_link``; the starting app serves none) by its link; one
        bearing a valid session of ``app``'s live page (its ``ui_session``)
        counts against its token's rate; a request whose token is over its
        rate is answered before the app by ``app``'s own token check and
        buckets (its state's ``authenticator``), and counted in its
        context's ``metrics``."""
        authenticator = getattr(getattr(app, "state", None), "authenticator", None)
        if not isinstance(authenticator, Authenticator):
            authenticator = None
        ctx = getattr(getattr(app, "state", None), "ctx", None)
        protocol_class = self._protocol_class
        protocol_class.tokens = authenticator
        # The live page's requests by the token that signed it in (a bearer
        # request to the page's paths too): router/api/page_rate.py.
        protocol_class.pages = (
            None
            if authenticator is None
            else PageRate(authenticator, getattr(ctx, "ui_session", None))
        )
        metrics = getattr(ctx, "metrics", None)
        protocol_class.metrics = metrics if isinstance(metrics, Metrics) else None
        if self._addresses is not None:
            self._addresses.links = getattr(ctx, "recording_link", None)

    async def stop(self) -> None:
        """Stop taking requests; open ones get a bounded moment, then are cut."""
        task = self._task
        if task is None:
            return
        self._task = None
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), GRACEFUL_STOP + 1.0)
        except TimeoutError:
            self._server.force_exit = True
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)
        except Exception:
            log.exception("API server failed while stopping")
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            # The connections refused past the cap and not yet said (router/api/protocol.py).
            self._server.protocol_class.refusals.close()
            self._server.protocol_class.evictions.close()
            self._server.protocol_class.over_rate.close()
            self._server.protocol_class.token_over_rate.close()
            # The 401s counted and not yet summed up (router/api/refusals.py).
            refusals = getattr(getattr(self._current.app, "state", None), "refusals", None)
            if isinstance(refusals, Refusals):
                refusals.close()
