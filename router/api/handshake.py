"""TLS handshakes on the API's listener, bounded in number and in time.

asyncio does a server's TLS handshake before the HTTP protocol hears of the
connection, and gives it 60 seconds: a client that connects and sends nothing
held a socket for a minute, uncounted by ``[api] max_connections`` (which the
HTTP protocol counts when a connection is made, that is after the handshake).
Fifty such clients against a cap of four were all still open after 15 s.

So the listener takes plain TCP and this protocol upgrades each connection
itself (``loop.start_tls``): it counts the connection from the moment it is
accepted (open and handshaking ones together against the cap), and gives the
handshake :data:`HANDSHAKE_DEADLINE` seconds. Past the cap the connection
that has waited longest without a request, a handshake still under way or an
open one owing its request (:mod:`router.api.protocol`), is closed to make
room, as over plain HTTP: refusing the new one instead let one client that
kept the cap's worth of handshakes unfinished (each dropped after 10 s, then
opened again) shut everyone else out. Only when none waits is the new one
closed. Once the handshake is done, the HTTP protocol is handed the TLS
transport as if asyncio had made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sized

from router.tasks import cancel_and_wait

__all__ = ["HANDSHAKE_DEADLINE", "Handshakes", "Waiting"]

log = logging.getLogger("router.api")

#: Seconds a client has to finish the TLS handshake (asyncio's default is 60).
HANDSHAKE_DEADLINE = 10.0

#: An open connection that owes its request: since when (the loop's clock),
#: and what closes it.
Waiting = tuple[float, Callable[[], None]]


def _none_waiting() -> Waiting | None:
    return None


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
        owing: Callable[[], Waiting | None] = _none_waiting,
        evicted: Callable[[int], None] | None = None,
    ) -> None:
        self._inner = inner
        self._context = context
        self._open = open_connections
        self._limit = limit
        self._refused = refused
        self.deadline = deadline
        self._tasks: set[asyncio.Task[None]] = set()
        #: The handshakes under way and since when (the loop's clock), the
        #: oldest first: counted against the cap, the oldest closed past it.
        self._pending: dict[asyncio.Task[None], tuple[float, asyncio.Transport]] = {}
        #: The open connection that has owed its request longest, if any.
        self._owing = owing
        self._evicted = evicted or refused
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
        if len(self._open) + len(self._pending) >= self._limit and not self._make_room():
            # No TLS yet, so no 503 the client could read: closed at once.
            self._refused(self._limit)
            transport.abort()
            return
        # Nothing is read until start_tls has put its own protocol in place.
        transport.pause_reading()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._upgrade(transport))
        self._tasks.add(task)
        self._pending[task] = (loop.time(), transport)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pending.pop(task, None)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a request: the
        oldest handshake under way or the open connection owing its request
        longest, whichever began to wait first. True when there was one."""
        handshake = next(iter(self._pending.items()), None)
        owing = self._owing()
        if handshake is None and owing is None:
            return False
        if handshake is not None and (owing is None or handshake[1][0] <= owing[0]):
            self._evicted(self._limit)
            task, (_since, transport) = handshake
            del self._pending[task]  # no longer counted: closed now
            # Aborted here too: a task cancelled before it ran never would.
            transport.abort()
            task.cancel()
        else:
            assert owing is not None
            owing[1]()  # counted and said by the HTTP protocol
        return True

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        if transport.is_closing():  # the client left before its turn came
            return
        protocol = self._inner()
        # asyncio's TLS layer hands the client's first bytes to its protocol as
        # the handshake completes, before start_tls returns: a request written
        # right after the client's Finished (one read) reached the HTTP protocol
        # before its connection_made, which answered it with no transport, an
        # error (hreview49). Held until it is made.
        early = _Early(protocol)
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                early,
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
        early.made(tls)

    async def close(self) -> None:
        """Cut the handshakes under way, and refuse any connection accepted from
        now on (the listener is stopping)."""
        self._closed = True
        with contextlib.suppress(Exception):
            await cancel_and_wait(*self._tasks)

    def __len__(self) -> int:
        """The handshakes under way (counted against the cap)."""
        return len(self._pending)


class _Early(asyncio.Protocol):
    """The HTTP protocol's stand-in while start_tls finishes: what the TLS layer
    delivers before the protocol is made (the request that came with the
    handshake's last bytes, the client's close) is held, and given to it once
    :meth:`made` has made it; the TLS transport then speaks to it directly."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._held: list[bytes] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._held.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return True  # kept open for the protocol to answer, as it would say

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    def made(self, tls: asyncio.Transport) -> None:
        """The protocol made on ``tls``, then given what came before."""
        inner = self._inner
        tls.set_protocol(inner)
        inner.connection_made(tls)
        if self._held:
            held, self._held = b"".join(self._held), []
            inner.data_received(held)
        if self._lost is not None:
            inner.connection_lost(self._lost[0])
            return
        if self._eof and not tls.is_closing() and not inner.eof_received():
            tls.close()


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
