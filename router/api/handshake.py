"""TLS handshakes on the API's listener, bounded in number and in time.

asyncio does a server's TLS handshake before the HTTP protocol hears of the
connection, and gives it 60 seconds: a client that connects and sends nothing
held a socket for a minute, uncounted by ``[api] max_connections`` (which the
HTTP protocol counts when a connection is made, that is after the handshake).
Fifty such clients against a cap of four were all still open after 15 s.

So the listener takes plain TCP and this protocol upgrades each connection
itself (``loop.start_tls``): it counts the connection from the moment it is
accepted, refuses it at once past the cap (open and handshaking ones
together), and gives the handshake :data:`HANDSHAKE_DEADLINE` seconds. Once
the handshake is done, the HTTP protocol is handed the TLS transport as if
asyncio had made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sized

from router.tasks import cancel_and_wait

__all__ = ["HANDSHAKE_DEADLINE", "Handshakes"]

log = logging.getLogger("router.api")

#: Seconds a client has to finish the TLS handshake (asyncio's default is 60).
HANDSHAKE_DEADLINE = 10.0


class Handshakes:
    """The handshakes of one listener: a protocol factory for ``create_server``
    and the tasks it runs, cancelled at :meth:`close`."""

    def __init__(
        self,
        inner: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        *,
        open_connections: Sized,
        limit: int,
        refused: Callable[[int], None],
        deadline: float = HANDSHAKE_DEADLINE,
    ) -> None:
        self._inner = inner
        self._context = context
        self._open = open_connections
        self._limit = limit
        self._refused = refused
        self.deadline = deadline
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set by :meth:`close`: a connection accepted after it is not upgraded.
        self._closed = False

    def __call__(self) -> asyncio.Protocol:
        return _Accepted(self)

    def accept(self, transport: asyncio.Transport) -> None:
        if self._closed:
            # The listener is stopping: a handshake begun now would finish after
            # uvicorn shut its connections down, and be served by a stopped server.
            transport.abort()
            return
        if len(self._open) + len(self._tasks) >= self._limit:
            # No TLS yet, so no 503 the client could read: closed at once.
            self._refused(self._limit)
            transport.abort()
            return
        # Nothing is read until start_tls has put its own protocol in place.
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._upgrade(transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        if transport.is_closing():  # the client left before its turn came
            return
        protocol = self._inner()
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                protocol,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self.deadline,
            )
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception as exc:  # a bad client, a timeout, a reset: its own loss
            log.debug("API: TLS handshake with %s failed: %r", _peer(transport), exc)
            transport.abort()
            return
        if tls is None:  # the transport closed under the handshake
            transport.abort()
            return
        protocol.connection_made(tls)

    async def close(self) -> None:
        """Cut the handshakes under way, and refuse any connection accepted from
        now on (the listener is stopping)."""
        self._closed = True
        with contextlib.suppress(Exception):
            await cancel_and_wait(*self._tasks)


class _Accepted(asyncio.Protocol):
    """A TCP connection until its handshake starts; then start_tls's own protocol
    takes the transport, and the HTTP protocol after it."""

    def __init__(self, handshakes: Handshakes) -> None:
        self._handshakes = handshakes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._handshakes.accept(transport)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a client"
