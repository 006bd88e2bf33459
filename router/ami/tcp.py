"""Native AMI over a socket (``tcp://host:5038``, ``tls://host:5039``).

Why a client of its own rather than a :class:`~router.ami.transport.Transport`
behind the AJAM client: over TCP Asterisk *pushes* every event the moment it
is queued, and answers actions on the same socket, matched by ActionID.
Emulating AJAM on top (a form body parsed back into an action, a rawman
body built for each answer, ``WaitEvent`` replies assembled from the socket's
buffer) costs an encode and a parse per action and per batch of events for
nothing; measured with ``bench/bench_route.py`` the per-event work is what
separates callrouter from a bare loop. So this module offers the same
surface the engine uses from :class:`~router.ami.client.AJAMClient`
(``login``, ``request``, ``send`` and the typed actions, ``wait_event``,
``session_generation``, ``logged_in``, ``aclose``) with the same error
contract (:mod:`router.errors`), and :func:`router.ami.connect.open_client`
picks one by the url's scheme. The event stream (:mod:`router.ami.stream`)
and the engine's reconcile after a gap run unchanged over either.

The protocol layer is the sans-I/O one: :class:`~router.ami.protocol.RawmanParser`
(with the banner), :func:`~router.ami.protocol.encode_rawman` and
:class:`~router.ami.protocol.ListCollector` for event lists interleaved with
other events. The socket layer is one :class:`asyncio.Protocol` (no stream
reader in between: ``data_received`` parses and hands results over directly).

Connection life:

* Login with the plain secret or the MD5 challenge (``auth = "md5"``), with
  ``Events:`` and then ``Filter`` actions from :attr:`TCPClient.event_selection`
  (:mod:`router.ami.event_filter`, as the AJAM client does), so Asterisk
  sends only what the rules and plugins need.
* Keepalive: a ``Ping`` once the socket was quiet for half of
  ``ping_interval``; no whole message for a whole ``ping_interval`` means the
  peer is gone without a FIN (a half-open socket), and the connection is
  dropped then, not when the kernel gives up hours later. A byte now and
  then is not life: a peer trickling one message forever is dropped too.
* A lost connection fails the actions in flight (an action that is safe to
  repeat is sent once more on a fresh connection), and ``wait_event`` raises
  once the events read before the loss are taken: the event stream then backs
  off, and its next poll connects and logs in again, which starts a new
  session (``session_generation``) and makes the stream report a gap, so the
  engine reconciles. An action may log in first: that session's events are
  held until the loss is reported, so the stream never sees them before it.
* Bounded: the parser's buffer (``max_response_bytes``), each line, each
  event list (items and bytes), the events read but not yet taken
  (``max_queued_events``, and ``max_response_bytes`` as read), and what we
  wrote that Asterisk has not read (``max_response_bytes``: past it the
  session is stuck and the connection is dropped).
  At the bound of queued events the socket is still read (the answers to
  actions come on it, behind the events: a reconcile must not wait for the
  consumer to catch up), but the events read are dropped until the queue
  has been taken (counted off the bytes, not parsed: in a flood that parse
  was the CPU; only the answers among them are parsed); ``wait_event`` then raises
  :class:`~router.errors.AMIEventsDropped`, which the event stream reports
  as a gap (``overflow``), so the engine reconciles, as AJAM's stream does
  for an answer over ``max_response_bytes``. Never unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import cast

from router.ami.actions import AMIActions
from router.ami.client import (
    ClientSettings,
    LoginListener,
    denied,
    is_idempotent,
    originate_hold,
    privilege_error,
    tell_login,
    tls_context,
)
from router.ami.event_filter import (
    EVERYTHING,
    EventSelection,
    FilterKey,
    add_filters,
)
from router.ami.hints import (
    login_refused_hint,
    silent_port_hint,
    tls_hint,
    unresolved_hint,
)
from router.ami.message import Event, Message, Response
from router.ami.protocol import (
    Action,
    ActionResult,
    LeftOutItem,
    ListCollector,
    Narrower,
    ParamValue,
    RawmanParser,
    UnreadableAnswer,
    encode_rawman,
)
from router.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionError,
    AMIError,
    AMIEventsDropped,
    AMIProtocolError,
    AMITimeoutError,
    AMIValidationError,
    ConfigError,
)
from router.logsafe import install_redaction, peer_text, register_secret

__all__ = ["CONNECTION_LOST", "TCPClient"]

log = logging.getLogger("router.ami.tcp")

#: ``early(data, start, end)`` of :meth:`TCPClient.set_urgent`.
Early = Callable[[bytes, int, int], None]

#: Largest event list one action may produce (a CoreShowChannels of a huge PBX).
MAX_LIST_ITEMS = 1_000_000
#: Events handed over by one ``wait_event``: in a burst the engine routes the
#: first calls while later events wait, as a callback-per-event loop would.
MAX_BATCH = 64
#: Seconds between two WARNINGs of a lost connection (and two INFOs of a
#: login): a peer that takes every login and then breaks the session (a bad
#: byte, a line too long) is met again about every second, and the stream
#: logs the outage once (router/ami/stream.py); the rest go to DEBUG, counted.
LOG_EVERY = 60.0
#: That WARNING's text: ``callrouter events`` leaves it out, since it says the
#: loss its stream met itself (router/commands/events.py).
CONNECTION_LOST = "AMI connection to %s lost: %s%s"


class _Lost(AMIConnectionError):
    """The connection an action was sent on is gone. Caught inside this module
    (an idempotent action is resent, a login is reported with its endpoint);
    an :class:`AMIConnectionError`, so that one escaping by a path not foreseen
    is still the public error every caller handles, never a crash."""


class _Connection(asyncio.Protocol):
    """One socket to Asterisk: parses what arrives, matches answers to actions."""

    def __init__(self, owner: TCPClient, max_buffer: int) -> None:
        self._owner = owner
        self._parser = RawmanParser(max_buffer=max_buffer, banner=True)
        #: Events read but not taken, in bytes as read, before more are dropped.
        self.max_queued_bytes = max_buffer
        self._parser.ours = self._awaits
        self._collector = ListCollector(max_items=MAX_LIST_ITEMS, max_bytes=max_buffer)
        self._pending: dict[str, asyncio.Future[ActionResult]] = {}
        #: ActionIDs whose event list is being collected.
        self._lists: set[str] = set()
        #: ActionIDs whose event list outgrew its bound: their action failed,
        #: their items are dropped until the list's closing event (kept in
        #: :attr:`_lists` meanwhile, so that none reaches the event stream).
        self._discarding: set[str] = set()
        self._loop = asyncio.get_running_loop()
        #: The keepalive's seconds (:class:`TCPClient`'s ``clock``; the loop's time).
        self.clock: Callable[[], float] = owner._clock or self._loop.time
        self.banner: asyncio.Future[str] = self._loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.last_rx = self.clock()
        #: When an action on it last went unanswered (a timeout): with nothing
        #: read since, the peer is not answering and a Logoff would only wait.
        self.unanswered_at: float | None = None
        #: ActionID -> until when Asterisk may answer nothing on this session:
        #: a synchronous Originate in flight (client.originate_hold).
        self.holds: dict[str, float] = {}
        self.lost = False
        self.error: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, by create_connection's contract; uvloop's does not
        # subclass asyncio.Transport, so no isinstance check.
        self.transport = cast("asyncio.Transport", transport)
        if self.error is not None:  # dropped while it was being made (aclose)
            self.transport.abort()
            return
        # What Asterisk has not read is bounded as what it sends us is:
        # past it, pause_writing drops the connection.
        self.transport.set_write_buffer_limits(high=self.max_queued_bytes)

    def data_received(self, data: bytes) -> None:
        marker = self._owner.urgent_marker
        if marker is not None:
            # An urgent event (a routing request) is handed over, and acted
            # on, before the blocks after it in this read are even parsed.
            # The read is cut at a block boundary, so nothing changes order;
            # a marker that is not a header line only cuts in vain. A read
            # with several is a backlog (a burst): left whole, so that its
            # requests jump its other events (set_urgent), as they would not
            # in parts handed over one by one.
            at = data.find(marker)
            if at >= 0:
                end = data.find(b"\r\n\r\n", at + len(marker) - 2)
                if end >= 0 and data.find(marker, end) < 0:
                    rest = end + 4 < len(data)
                    if rest:
                        peek = self._owner.urgent_peek
                        if peek is not None:
                            _peek_wait_step(data, at, end + 4, peek)
                    early = self._owner.urgent_early
                    if early is not None:
                        self._early(early, data, at, end + 4)
                    if rest:
                        self._take(data[: end + 4])
                        data = data[end + 4 :]
        self._take(data)

    def _early(self, early: Early, data: bytes, at: int, end: int) -> None:
        """Offer ``early`` the urgent block ending at ``end`` when whole events
        come before it in this read and nothing read before waits: the
        engine may act on it before they are parsed (:meth:`TCPClient.set_urgent`)."""
        start = data.rfind(b"\r\n\r\n", 0, at)
        owner = self._owner
        if (
            start < 0
            or self._parser.pending
            or owner._events
            or owner._urgent
            or owner._unreported is not None  # a new session's gap is reported first
            or owner._dropping is not None  # events are being dropped: the gap first
        ):
            return
        try:
            early(data, start + 4, end)
        except Exception:  # the owner's to guard; never the socket's
            log.exception("acting on an urgent event early failed")

    def _take(self, data: bytes) -> None:
        parser = self._parser
        counted = 0
        strays = parser.strays
        try:
            if self._owner._dropping is None:
                messages = parser.feed(data)
            else:
                # Every event read now is dropped, whatever the path
                # (TCPClient._events_arrived): the parser counts them rather
                # than parse them (a flood's whole CPU), and parses answers.
                before = parser.dropped
                parser.dropping = True
                try:
                    messages = parser.feed(data)
                finally:
                    parser.dropping = False
                counted = parser.dropped - before
                self._owner._dropped += counted
        except AMIProtocolError as exc:
            self.drop(f"bad data from Asterisk: {exc}")
            return
        if messages or counted or not (parser.pending or parser.strays != strays):
            # Alive is a message read whole (the keepalive's Ping answer at
            # least), not a byte: a peer trickling one message forever, or a
            # byte now and then, is as dead as a silent one; so is one
            # sending blocks that are no AMI message (skipped, protocol.py).
            self.last_rx = self.clock()
        if not self.banner.done() and parser.banner is not None:
            self.banner.set_result(parser.banner)
        if messages:
            self._route(messages, len(data))

    def eof_received(self) -> bool | None:
        self.error = self.error or "Asterisk closed the connection"
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.error is None:
            self.error = f"connection lost: {exc}" if exc else "Asterisk closed the connection"
        failure = _Lost(self.error)
        if not self.banner.done():
            self.banner.set_exception(failure)
            self.banner.exception()  # retrieved: nobody may be awaiting it any more
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        self._owner._connection_lost(self)

    def pause_writing(self) -> None:
        # Asterisk reads each action as it comes: a peer that leaves this
        # much unread (while it may still send, which keeps the keepalive
        # content) is stuck, and every action on it would time out, its bytes
        # kept for as long as the connection lives. A new session serves.
        self.drop(
            f"Asterisk has not read the last {self.max_queued_bytes} bytes sent to it "
            "(max_response_bytes): the session is stuck"
        )

    # -- answers and events --------------------------------------------------------

    def _awaits(self, action_id: str) -> bool:
        """An action of this connection waits for messages with this ActionID."""
        return action_id in self._pending or action_id in self._discarding

    def _route(self, messages: list[Message], size: int) -> None:
        events: list[Event] = []
        for msg in messages:
            if type(msg) is Event:
                # Only an action's list takes events (and building the
                # message's index for its ActionID is not free).
                action_id = msg.action_id if self._lists else None
                if action_id is None or action_id not in self._lists:
                    events.append(msg)
                    continue
            elif type(msg) is LeftOutItem:
                # An item left out for a line over the parser's bound: its
                # list counts it; it is no event for the stream (issue 16).
                if msg.action_id not in self._lists:
                    continue
            elif not isinstance(msg, Response):  # pragma: no cover - the parser makes these
                continue
            self._answer(msg)
        if events:
            self._owner._events_arrived(self, events, size)

    def _answer(self, msg: Message) -> None:
        action_id = msg.action_id
        if action_id is not None and action_id in self._discarding:
            if (msg.event_list or "").lower() == "complete":
                self._discarding.discard(action_id)
                self._lists.discard(action_id)
            return
        if action_id is None or action_id not in self._pending:
            return  # a keepalive Ping's answer, or one for an action given up on
        try:
            done = self._collector.feed(msg)
        except AMIProtocolError as exc:
            if action_id not in self._lists:  # pragma: no cover - only a list's items raise
                self.drop(f"bad event list from Asterisk: {exc}")
                return
            # A list over its bound (a DBGetTree of a large AstDB tree): only
            # its action fails, as an AJAM answer over max_response_bytes does;
            # the session, and the events that route calls on it, serve on
            # (on the sandbox a 41 MB DBGetTree dropped the connection; issue 16).
            self._collector.forget(action_id)
            self._discarding.add(action_id)
            future = self._pending.pop(action_id)
            if not future.done():
                future.set_exception(
                    AMIProtocolError(
                        f"its event list is too large: {exc} ([asterisk] max_response_bytes); "
                        "the rest of it is skipped, the connection serves on"
                    )
                )
            return
        if done is None:
            if isinstance(msg, Response):
                self._lists.add(action_id)  # a list starts: its items follow as events
            return
        self._lists.discard(action_id)
        future = self._pending.pop(action_id)
        if not future.done():
            response = done[1].response
            if type(response) is UnreadableAnswer:
                # A line of it over the parser's bound: only its action
                # fails, the connection serves on (issue 16).
                future.set_exception(response.error())
            else:
                future.set_result(done[1])

    # -- sending ---------------------------------------------------------------------

    def send(self, action: Action) -> asyncio.Future[ActionResult]:
        """Write ``action``; the future completes with its (whole) result."""
        assert action.action_id is not None
        data = encode_rawman(action)  # AMIValidationError before anything is sent
        if self.lost or self.error is not None or self.transport is None:
            # Dropped (or closed by Asterisk) but not yet told connection_lost:
            # a write now would only make asyncio complain of a closed socket.
            raise _Lost(self.error or "not connected")
        future: asyncio.Future[ActionResult] = self._loop.create_future()
        self._pending[action.action_id] = future
        self._collector.expect(action.action_id)
        self.transport.write(data)
        return future

    def want(self, names: frozenset[str] | None, narrow: Mapping[str, Narrower]) -> None:
        """Parse only these events (``None``: all), those in ``narrow`` only
        when their narrower accepts them; Asterisk may send more."""
        self._parser.wanted = names
        self._parser.narrow = narrow or None

    def unfinished(self) -> str:
        """What a timeout adds when bytes came that end no message: a peer
        ending them otherwise (bare LF) looked as if it had sent nothing."""
        size = self._parser.buffered
        if not size:
            return ""
        return (
            f"; {size} bytes came after the last whole message and end none "
            "(AMI ends each message with an empty line, CR LF CR LF)"
        )

    def collecting(self, action_id: str) -> int | None:
        """Items of the open event list of ``action_id`` so far (``None``: none open)."""
        return self._collector.collecting(action_id)

    def answering(self) -> bool:
        """Whether the peer has said something whole since an action went unanswered."""
        return self.unanswered_at is None or self.last_rx > self.unanswered_at

    def forget(self, action_id: str) -> None:
        """An action given up on (timeout): its late answer is dropped."""
        self._pending.pop(action_id, None)
        if action_id not in self._discarding:  # its items still come: not events
            self._lists.discard(action_id)
        self._collector.forget(action_id)

    def ping(self, action_id: str) -> None:
        if not self.lost and self.error is None and self.transport is not None:
            self.transport.write(encode_rawman(Action("Ping", (), action_id)))

    def drop(self, why: str) -> None:
        """Close at once (no FIN handshake to wait for: the peer may be gone)."""
        if self.error is None:
            self.error = why
        if self.transport is not None and not self.lost:
            self.transport.abort()


class TCPClient(AMIActions[ActionResult]):
    """One logged-in native AMI session: ``async with TCPClient(settings) as ami``.

    ``clock`` and ``sleep``: the keepalive's time (when a message was last read,
    how long it waits): the event loop's by default. A test gives its own, so
    that a stall of the process is a jump of that clock, and the machine's own
    delays are none.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        register_secret(settings.secret)
        install_redaction()
        parts = urllib.parse.urlsplit(settings.url)
        if "@" in parts.netloc:
            # Before anything quotes the url back: the part before '@' may be a password.
            raise ConfigError(
                "Asterisk url: put no credentials in the URL; use username and secret"
            )
        if parts.scheme not in ("tcp", "tls") or not parts.hostname:
            raise ConfigError(f"not a tcp:// or tls:// url: {settings.url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"Asterisk url: bad port in {settings.url!r}") from None
        if settings.auth not in ("plain", "md5", "cookie"):
            raise ConfigError(
                f"auth = {settings.auth!r} is for http(s):// urls; "
                "tcp:// and tls:// take 'plain' or 'md5'"
            )
        self._host = parts.hostname
        self._port = port or (5039 if parts.scheme == "tls" else 5038)
        self._ssl = tcp_ssl_context(settings) if parts.scheme == "tls" else None
        self._endpoint = f"{parts.scheme}://{parts.netloc}"
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._conn: _Connection | None = None
        #: The connection a login is under way on (not yet :attr:`_conn`).
        self._connecting: _Connection | None = None
        #: Its connect and TLS handshake, while under way (aclose cancels it).
        self._opening: asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]] | None = (
            None
        )
        self._login_lock = asyncio.Lock()
        self._wait_lock = asyncio.Lock()
        self._events: deque[Event] = deque()
        #: Events handed over before the rest of a backlog (:meth:`set_urgent`).
        self._urgent: deque[Event] = deque()
        self._urgent_test: Callable[[Event], bool] | None = None
        #: Where a read is cut so an urgent event goes first (:meth:`set_urgent`).
        self.urgent_marker: bytes | None = None
        #: Shown an urgent event and its channel's Wait step ahead (:meth:`set_urgent`).
        self.urgent_peek: Callable[[str, str], None] | None = None
        #: Offered an urgent event before the events read with it ahead of it (:meth:`set_urgent`).
        self.urgent_early: Early | None = None
        self._wakeup: asyncio.Future[None] | None = None
        #: Takes a read's events in the read itself (:meth:`set_push`).
        self._push: Callable[[list[Event]], bool] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        #: A connection was lost and ``wait_event`` has not said so yet.
        self._unreported: str | None = None
        #: That connection: a newer one's events are held until it is reported.
        self._lost_conn: _Connection | None = None
        #: ``wait_event`` was called: an event stream reads this client, and
        #: says a lost connection itself (:meth:`_connection_lost` logs it at DEBUG).
        self._polled = False
        #: Events of a session logged in while a loss was unreported.
        self._held: list[Event] = []
        self._held_bytes = 0
        #: What the queued events took on the wire (about: a read's length).
        self._queued_bytes = 0
        #: When events began to be dropped for a full queue (wall clock), and
        #: how many: ``wait_event`` reports it once the queue is taken.
        self._dropping: float | None = None
        self._dropped = 0
        #: Successful logins; :attr:`session_generation` follows it once the
        #: stream has been told of the loss before the latest login.
        self._logins = 0
        self._login_listener: LoginListener | None = None
        self._denied_logged: set[str] = set()
        #: When a loss and a login were last logged above DEBUG, and how many
        #: losses went to DEBUG since (:data:`LOG_EVERY`).
        self._loss_logged: float | None = None
        self._losses_unlogged = 0
        self._login_logged: float | None = None
        #: Increases at every successful login: a new connection is a new
        #: session, and events of the old one that were never read are gone.
        #: A login while a loss is unreported counts once it is reported.
        self.session_generation = 0
        #: The ``Asterisk Call Manager/x.y.z`` greeting of the current connection.
        self.banner: str | None = None
        #: The events to ask for (router.ami.event_filter), applied at every
        #: login; :meth:`set_events` changes it.
        self.event_selection: EventSelection = EVERYTHING
        #: Whether someone chose this session's events (:meth:`set_events`, the
        #: engine before its plugins' startup hooks), EVERYTHING too.
        self._events_chosen = False
        self._narrow: dict[str, Narrower] = {}
        #: The live session's class mask and include filters (``plan_filters``).
        self._session_mask = "on"
        self._session_filters: frozenset[FilterKey] | None = frozenset()
        #: Asterisk refused ``Filter`` (no ``write = system``): not asked again.
        self._filter_forbidden = False

    # -- context management ------------------------------------------------------------

    async def __aenter__(self) -> TCPClient:
        await self.login()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Log off (best effort, bounded) and close the socket."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._connecting is not None:
            self._connecting.drop("the AMI client is closed")
        opening = self._opening
        if opening is not None and not opening.done():
            # The connect or TLS handshake itself: cancelled, its socket is
            # closed, and the login waiting for it fails now, not at connect_timeout.
            opening.cancel()
            await asyncio.wait((opening,))
        if conn is not None and not conn.lost:
            if conn.answering():
                with contextlib.suppress(_Lost, AMIError, TimeoutError):
                    await asyncio.wait_for(conn.send(Action("Logoff", (), self._next_id())), 2.0)
            else:  # dropping the socket ends the session as well
                log.debug("no logoff: %s left an action unanswered", self._endpoint)
            conn.drop("closed")
        self._conn = None
        self._wake()

    # -- session ---------------------------------------------------------------------

    @property
    def logged_in(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.lost

    @property
    def actions_in_order(self) -> bool:
        """Whether an action sent now is written at once, behind the ones sent
        before it, on the one session Asterisk reads and runs an action at a
        time: then a Redirect written right behind a Setvar runs after it
        (the executor does not wait for the Setvar's answer). Not while the
        session is being opened again: the actions then wait for the login,
        and which goes first is not promised."""
        return self.logged_in

    @property
    def endpoint(self) -> str:
        """Where the socket goes: ``tcp://host:port`` or ``tls://host:port``."""
        return self._endpoint

    async def login(self) -> Response:
        """Connect and log in; raises :class:`AMIAuthenticationError` if refused."""
        async with self._login_lock:
            return await self._connect()

    async def _connected(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.lost:
            return conn
        if self._closed:
            raise AMIConnectionError("the AMI client is closed")
        async with self._login_lock:
            conn = self._conn
            if conn is None or conn.lost:  # nobody reconnected while we waited
                await self._connect()
            assert self._conn is not None
            return self._conn

    async def _connect(self) -> Response:
        if self._closed:
            raise AMIConnectionError("the AMI client is closed")
        conn = _Connection(self, self.settings.max_response_bytes)
        conn.want(self.event_selection.names, self._narrow)
        # aclose drops it: a login in another task (an action reconnecting at
        # stop) then fails at once, instead of finishing after the close with
        # a logged-in socket nobody closes. Cancelled, its socket goes too.
        self._connecting = conn
        try:
            return await self._open(conn)
        except BaseException:
            conn.drop("login failed")  # the first reason given stays
            raise
        finally:
            self._connecting = None

    async def _open(self, conn: _Connection) -> Response:
        settings = self.settings
        loop = asyncio.get_running_loop()
        connected = False
        try:
            # One deadline for the connect, the TLS handshake and the greeting.
            async with asyncio.timeout(settings.connect_timeout):
                # A task of its own, so that aclose can cut it short: the
                # socket is closed with it, and the login fails at once.
                opening = loop.create_task(
                    loop.create_connection(
                        lambda: conn,
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl is not None else None,
                    )
                )
                self._opening = opening
                try:
                    await opening
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._closed and (task is None or not task.cancelling()):
                        # aclose cancelled the connect, not our caller.
                        raise AMIConnectionError("the AMI client is closed") from None
                    raise
                finally:
                    self._opening = None
                connected = True
                self.banner = await asyncio.shield(conn.banner)
        except ssl.SSLError as exc:
            raise AMIConnectionError(
                self._cannot_log_in(f"TLS: {exc}{tls_hint(exc, settings.verify)}")
            ) from exc
        except TimeoutError as exc:
            if not connected:
                # The connect itself (or its TLS handshake) never ended: a
                # host that is down or a firewall dropping the port, not (as
                # the greeting's hint said) a port that waits for us to speak.
                step = "connection" if self._ssl is None else "connection or TLS handshake"
                raise AMITimeoutError(
                    self._cannot_log_in(
                        f"no {step} within {settings.connect_timeout:g} s (connect_timeout): "
                        "nothing answered there (a host that is down or unreachable, a "
                        "firewall dropping the port"
                        + (")" if self._ssl is None else ", or a port that never answers TLS)")
                    )
                ) from exc
            raise AMITimeoutError(
                self._cannot_log_in(
                    f"no AMI greeting within {settings.connect_timeout:g} s (connect_timeout); "
                    "a port that waits for its client to speak first sends none: "
                    f"{silent_port_hint(self._ssl is not None)}"
                )
            ) from exc
        except ConnectionRefusedError as exc:
            raise AMIConnectionError(
                self._cannot_log_in(
                    "cannot connect: connection refused (nothing listens there): check "
                    "manager.conf [general] (enabled = yes, port, bindaddr; tlsenable and "
                    "tlsbindaddr for tls://) and asterisk -rx 'manager show settings'"
                )
            ) from exc
        except (OSError, _Lost) as exc:
            raise AMIConnectionError(
                self._cannot_log_in(f"cannot connect: {exc}{unresolved_hint(exc, settings.url)}")
            ) from exc
        try:
            # One deadline for the whole login (Challenge, Login, the event
            # mask and each Filter), not request_timeout for each step.
            wait, bound = settings.login_wait()
            async with asyncio.timeout(wait):
                response = await self._authenticate(conn)
        except _Lost as exc:
            raise AMIConnectionError(self._cannot_log_in(str(exc))) from exc
        except TimeoutError as exc:
            raise AMITimeoutError(
                self._cannot_log_in(
                    f"the login (Login, its challenge and event filters) did not end within "
                    f"{wait:g} s ({bound})"
                    + (
                        conn.unfinished()
                        or ": the port greeted as AMI does, then did not answer in time (a "
                        "connection gone half-open, or an Asterisk too busy to answer)"
                    )
                )
            ) from exc
        if self._closed:  # its answer came, but after aclose
            raise AMIConnectionError("the AMI client is closed")
        old, self._conn = self._conn, conn
        if old is not None and not old.lost:
            old.drop("replaced")
        self._logins += 1
        if self._unreported is None:
            self.session_generation = self._logins
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._keepalive())
        now = time.monotonic()
        if self._login_logged is None or now - self._login_logged >= LOG_EVERY:
            self._login_logged = now
            log.info("logged in to %s as %s", self._endpoint, settings.username)
        else:
            log.debug("logged in to %s as %s", self._endpoint, settings.username)
        tell_login(self._login_listener)
        return response

    def _cannot_log_in(self, reason: str) -> str:
        """A failed login as the commands print it: where, as whom, and what
        went wrong or unanswered, each once (a refusal says it its own way)."""
        return f"cannot log in to {self._endpoint} as {self.settings.username!r}: {reason}"

    def set_login_listener(self, listener: LoginListener | None) -> None:
        """As :meth:`AJAMClient.set_login_listener`: told at each login,
        also one an action makes on a fresh connection while the lost one
        is not reported yet (``session_generation`` counts it only then)."""
        self._login_listener = listener

    async def _authenticate(self, conn: _Connection) -> Response:
        settings = self.settings
        params: list[tuple[str, str]] = [("Username", settings.username)]
        if settings.auth == "md5":
            challenge = await self._exchange(
                conn, Action("Challenge", (("AuthType", "MD5"),), self._next_id()), None
            )
            text = challenge.response.get("Challenge")
            if not challenge.ok or not text:
                raise AMIAuthenticationError(
                    self._cannot_log_in(
                        f"Asterisk gave no MD5 challenge: {peer_text(challenge.response.message)}"
                    )
                )
            key = hashlib.md5((text + settings.secret).encode(), usedforsecurity=False)
            params += [("AuthType", "MD5"), ("Key", key.hexdigest())]
        else:
            params.append(("Secret", settings.secret))
        params.extend(self.event_selection.login_fields())
        result = await self._exchange(conn, Action("Login", tuple(params), self._next_id()), None)
        if not result.ok:
            said = result.response.message
            hint = login_refused_hint(settings.username, settings.secret_source, said)
            raise AMIAuthenticationError(
                f"Asterisk refused login for {settings.username!r} at {self._endpoint}: "
                f"{peer_text(said)}{hint}"
            )
        self._session_mask, self._session_filters = self.event_selection.mask, frozenset()
        await self._filter_session(conn, self.event_selection)
        return result.response

    async def set_events(self, selection: EventSelection) -> None:
        """Ask for ``selection``'s events from now on (as :meth:`AJAMClient.set_events`).

        The class mask is replaced on the live session, name filters are
        added; names no longer needed arrive until the next login.
        """
        self.event_selection = selection
        self._events_chosen = True
        conn = self._conn
        if conn is not None:
            conn.want(selection.names, self._narrow)
        if conn is not None and not conn.lost:
            async with self._login_lock:
                try:
                    await self._filter_session(conn, selection)
                except _Lost as exc:
                    # The next login asks for the selection anyway.
                    raise AMIConnectionError(
                        f"event filters for {self._endpoint}: connection lost: {exc}"
                    ) from exc

    def refusal_reported(self, name: str) -> None:
        """The caller reports a ``Permission denied`` for action ``name`` itself,
        with what it costs: the client does not log it too (it logs each other
        action's first refusal)."""
        self._denied_logged.add(name.lower())

    def set_narrowing(self, narrow: Mapping[str, Narrower]) -> None:
        """Events of these names are parsed only when their narrower accepts
        their raw text (router.ami.protocol ``RawmanParser.narrow``); the
        engine's own reading of events it needs only a few of."""
        self._narrow = dict(narrow)
        conn = self._conn
        if conn is not None:
            conn.want(self.event_selection.names, self._narrow)

    async def _filter_session(self, conn: _Connection, selection: EventSelection) -> None:
        if selection.mask != self._session_mask:
            mask = Action("Events", (("EventMask", selection.mask),), self._next_id())
            result = await self._exchange(conn, mask, None)
            if result.response.ok:
                self._session_mask = selection.mask
            else:
                log.warning(
                    "Asterisk refused the event mask %r: %s",
                    selection.mask,
                    peer_text(result.response.message),
                )
        if self._filter_forbidden:
            return
        self._session_filters, self._filter_forbidden = await add_filters(
            lambda action: self._exchange(conn, action.with_action_id(self._next_id()), None),
            selection,
            self._session_filters,
            self.settings.username,
            log,
        )

    def _connection_lost(self, conn: _Connection) -> None:
        """Called by the protocol: the socket is gone (by Asterisk, us, or the network)."""
        if conn is not self._conn or self._closed:
            return
        now = time.monotonic()
        last = self._loss_logged
        if self._polled:
            # An event stream reads this client: it says the loss, once an
            # outage, with this url and reason (router/ami/stream.py), and a
            # WARNING here too told the service log each loss twice.
            log.debug("AMI connection to %s lost: %s", self._endpoint, conn.error)
        elif last is None or now - last >= LOG_EVERY:
            more = self._losses_unlogged
            self._loss_logged, self._losses_unlogged = now, 0
            log.warning(
                CONNECTION_LOST,
                self._endpoint,
                conn.error,
                f" ({more} more losses in the last {now - last:.0f} s)" if more and last else "",
            )
        else:
            self._losses_unlogged += 1
            log.debug("AMI connection to %s lost: %s", self._endpoint, conn.error)
        if self._unreported is not None and self._held:
            # A session that began and ended inside a gap the stream has not
            # heard of yet: its events are the gap's, and the reconcile after
            # it (run with the next session live) stands for them. Handed over
            # after it, they would undo what it found (a channel long gone).
            self._held.clear()
            self._held_bytes = 0
        self._unreported = conn.error or "connection lost"
        self._lost_conn = conn
        self._wake()

    def _report_loss(self) -> AMIConnectionError:
        """The error ``wait_event`` raises for the unreported loss; from then
        on the session logged in since (if any) is the stream's."""
        why, self._unreported, self._lost_conn = self._unreported, None, None
        self.session_generation = self._logins
        if self._held:
            self._events.extend(self._held)
            self._queued_bytes += self._held_bytes
            self._held.clear()
            self._held_bytes = 0
        return AMIConnectionError(f"AMI connection to {self._endpoint}: {why}")

    def _report_dropped(self) -> AMIEventsDropped:
        """The error ``wait_event`` raises once the events queued before the
        first dropped one are taken; from then on events are queued again."""
        since, dropped = self._dropping or time.time(), self._dropped
        self._dropping, self._dropped = None, 0
        return AMIEventsDropped(
            f"{dropped} events from {self._endpoint} dropped unhandled: callrouter fell "
            f"behind ({self.settings.max_queued_events} events or "
            f"{self.settings.max_response_bytes} bytes were waiting)",
            since=since,
        )

    def _events_arrived(self, conn: _Connection, events: list[Event], size: int) -> None:
        if self._unreported is not None and conn is not self._lost_conn:
            # A session logged in (by an action) before the stream was told
            # that the last one was lost: its events come after that news,
            # so the stream sees the old session's events, one gap, then these.
            if self._dropping is not None or (
                len(self._held) >= self.settings.max_queued_events
                or self._held_bytes >= conn.max_queued_bytes
            ):
                self._drop_events(events)
                return
            self._held.extend(events)
            self._held_bytes += size
            return
        push = self._push
        if (
            push is not None
            and conn is self._conn
            and not (self._events or self._urgent or self._closed)
            and self._unreported is None
            and self._dropping is None
            and push(events)
        ):
            return  # taken in this read: nothing queued, nobody woken
        if self._dropping is not None or (
            len(self._events) + len(self._urgent) >= self.settings.max_queued_events
            or self._queued_bytes >= conn.max_queued_bytes
        ):
            self._drop_events(events)
            return
        test = self._urgent_test
        if test is None or len(self._events) <= MAX_BATCH:
            self._events.extend(events)  # no backlog: in the order they came
        else:
            for event in events:
                (self._urgent if test(event) else self._events).append(event)
        self._queued_bytes += size
        self._wake()

    def _drop_events(self, events: list[Event]) -> None:
        """The queue is full: ``events`` are dropped, and so is every event
        after them until the queue is taken and the gap reported (an event
        kept after a dropped one would be handled as if nothing came between).
        The socket is still read, so the answers to actions are not held up."""
        if self._dropping is None:
            self._dropping = time.time()
            log.warning(
                "callrouter fell behind the events from %s (%d events or %d bytes waiting "
                "to be handled): dropping the events read until they are, then reconciling",
                self._endpoint,
                self.settings.max_queued_events,
                self.settings.max_response_bytes,
            )
        self._dropped += len(events)

    def set_push(self, push: Callable[[list[Event]], bool] | None) -> None:
        """Offer each read's events to ``push`` before queueing them for
        :meth:`wait_event` (:meth:`router.ami.stream.EventStream.push_to`).

        Offered only while nothing is queued, so events keep the order they
        were read in; ``push`` returns False to have them queued after all.
        It runs inside the socket's read callback and must not raise.
        """
        self._push = push

    def set_urgent(
        self,
        test: Callable[[Event], bool] | None,
        *,
        marker: bytes | None = None,
        peek: Callable[[str, str], None] | None = None,
        early: Early | None = None,
    ) -> None:
        """Events ``test`` accepts jump a backlog (more than one batch queued):
        the engine's routing requests, so that in a burst a call's request
        does not wait behind every earlier call's other events. Without a
        backlog every event keeps its place.

        ``marker``: a header line only such events carry, ``\\r\\n`` on both
        sides (``b"\\r\\nUserEvent: CallRouterRequest\\r\\n"``). A read holding
        one is then cut after its block, and the two parts handed over in
        turn: a request read with the next call's events (at 20 calls a
        second a read holds six or seven) is acted on before they are
        parsed. A read holding several is a backlog and stays whole.

        ``peek``: called with the raw text of such a cut's urgent event and of
        its channel's ``Newexten`` for ``Wait`` when that is in the rest of
        the read, before either is parsed (the step a Redirect waits for,
        router/parking.py).

        ``early``: called with a read holding one such event and whole events
        before it (``early(data, start, end)``: the event's block is
        ``data[start:end]``), before any of it is parsed, when nothing read
        before is still queued. The owner may act on the event from its raw
        text there (router/engine.py ``_route_early``); every event of the
        read, that one included, is then handed over in order as ever. It
        must not raise.
        """
        self._urgent_test = test
        self.urgent_marker = marker if marker else None
        self.urgent_peek = peek
        self.urgent_early = early

    def _wake(self) -> None:
        if self._wakeup is not None:
            _settle(self._wakeup)

    async def _keepalive(self) -> None:
        """Ping a quiet socket; drop one that stays silent for ``ping_interval``."""
        interval = self.settings.ping_interval
        clock = self._clock or asyncio.get_running_loop().time
        wake_at = clock()
        while not self._closed:
            conn = self._conn
            if conn is None or conn.lost:
                return  # the next login starts a new watchdog
            now = clock()
            held = max(conn.holds.values(), default=now)
            if held > now:
                # A synchronous Originate in flight: Asterisk answers nothing
                # on the session, a Ping included, until it ends (its own wait
                # is bounded); silence then is no sign of a dead connection.
                wake_at = now + min(held - now, interval / 2)
                await self._sleep(wake_at - now)
                continue
            quiet = now - conn.last_rx
            if now - wake_at > interval / 2:
                # We are the slow side (this process was stopped or starved
                # past its timer): silence proves nothing about Asterisk, so
                # ask and judge half an interval later.
                conn.last_rx = now - interval / 2
                quiet = interval / 2
            if quiet >= interval:
                conn.drop(
                    f"no data from Asterisk for {quiet:.1f} s (ping_interval {interval:g} s): "
                    "the connection is dead without having been closed"
                )
                return
            if quiet >= interval / 2:
                conn.ping(self._next_id())
                delay = interval - quiet
            else:
                delay = interval / 2 - quiet
            wake_at = now + delay
            await self._sleep(delay)

    # -- actions ---------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"cr-{self._id_prefix}-{next(self._ids)}"

    async def _exchange(
        self, conn: _Connection, action: Action, timeout: float | None
    ) -> ActionResult:
        wait = self.settings.request_timeout if timeout is None else timeout
        future = conn.send(action)
        if originate_hold(action) is not None:
            conn.holds[action.action_id or ""] = conn.clock() + wait
        # A timer on the answer's own future: asyncio.wait_for would add a
        # waiter future and two callbacks to every action on the hot path.
        timer = asyncio.get_running_loop().call_later(wait, _expire, future)
        try:
            return await future
        except TimeoutError as exc:
            conn.unanswered_at = conn.clock()
            items = conn.collecting(action.action_id or "")
            if items is not None:
                # Answered, but its list never closed: "no answer" misled
                # (AJAM says "no closing 'EventList: Complete'" for the same).
                raise AMITimeoutError(
                    f"{action.name}: its event list from {self._endpoint} did not end within "
                    f"{wait:g} s: {items} items and no closing 'EventList: Complete'"
                ) from exc
            raise AMITimeoutError(
                f"{action.name}: no answer from {self._endpoint} within {wait:g} s"
                f"{conn.unfinished()}"
            ) from exc
        except AMIProtocolError as exc:
            # Its answer could not be read (UnreadableAnswer): as AJAM says it.
            raise AMIProtocolError(f"{action.name}: {exc}") from None
        finally:
            timer.cancel()
            conn.holds.pop(action.action_id or "", None)
            if not future.done() or future.cancelled() or future.exception() is not None:
                conn.forget(action.action_id or "")

    async def request(
        self,
        action: Action,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> ActionResult:
        """Send one action and return its response (with list items, complete).

        Raises :class:`AMIActionError` for ``Response: Error`` when ``check``,
        :class:`~router.errors.AMIPrivilegeError` for ``Permission denied``
        (a TCP session does not expire: that answer always means a missing class).
        """
        if self._closed:
            raise AMIConnectionError("the AMI client is closed")
        if action.action_id is None:
            action = action.with_action_id(self._next_id())
        if (hold := originate_hold(action)) is not None:
            if self._reads_events():
                raise AMIValidationError(
                    f"{action.name}: a synchronous Originate (no Async: true) holds this "
                    "native AMI session until the call is answered or its Timeout passes "
                    f"({hold:g} s), and the session's events with it, those that route calls "
                    "among them; send it with Async: true (its result comes as an "
                    "OriginateResponse event with its ActionID)"
                )
            if timeout is None:
                timeout = self.settings.request_timeout + hold
        for attempt in (1, 2):
            conn = await self._connected()
            try:
                result = await self._exchange(conn, action, timeout)
            except _Lost as exc:
                # The answer is lost with the connection; whether Asterisk
                # acted is unknown, so only an action safe to repeat is resent.
                if attempt == 1 and is_idempotent(action.name) and not self._closed:
                    log.debug("%s: connection lost (%s), sending it again", action.name, exc)
                    continue
                raise AMIConnectionError(
                    f"{action.name}: connection to {self._endpoint} broke: {exc}"
                ) from None
            break
        else:  # pragma: no cover - the loop breaks or raises
            raise AssertionError("unreachable")
        if denied(result):
            error = privilege_error(action.name, result, self.settings.username)
            if action.name.lower() not in self._denied_logged:
                self._denied_logged.add(action.name.lower())
                log.warning("%s", error)
            raise error
        if check and not result.response.ok:
            raise AMIActionError(action.name, result.response)
        return result

    def _reads_events(self) -> bool:
        """Whether something reads this session's events: a stream polls them
        or takes them pushed, or chose the events it wants (the engine does,
        before its plugins' startup hooks run and its stream starts)."""
        # Chosen, not only narrowed: with [asterisk] events = "all" (or a
        # plugin wanting every event) the engine's choice is EVERYTHING, and a
        # plugin's startup hook held the session it reads (hreview48).
        return self._polled or self._push is not None or self._events_chosen

    async def action(
        self,
        name: str,
        params: Mapping[str, ParamValue | None] | Iterable[tuple[str, str]] | None = None,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> ActionResult:
        """Any action by name, unvalidated (as :meth:`AJAMClient.action`)."""
        return await self.request(Action.build(name, params), check=check, timeout=timeout)

    # -- events ----------------------------------------------------------------------

    async def wait_event(self, timeout: int = 20) -> list[Event]:
        """The events read since the last call; waits up to ``timeout`` s for one.

        The same contract as AJAM's long-poll, so :class:`~router.ami.stream.EventStream`
        drives both: after a lost connection the events read before it come
        first, then one call raises :class:`AMIConnectionError`, and the next
        connects and logs in again (a new ``session_generation``). After
        events were dropped for a full queue, the events queued before them
        come first, then one call raises :class:`AMIEventsDropped` (a gap on
        the same session).
        """
        if self._wait_lock.locked():
            raise AMIError("a wait_event is already outstanding on this client")
        self._polled = True
        async with self._wait_lock:
            if not (self._events or self._urgent):
                if self._unreported is not None:
                    raise self._report_loss()
                if self._dropping is not None:
                    raise self._report_dropped()
                conn = await self._connected()
                if not (self._events or self._urgent):
                    await self._wait_for_events(conn, timeout)
            else:
                # Events were waiting: let the decisions they started run
                # (their Redirects) before handing over the next batch.
                await asyncio.sleep(0)
            urgent, queue = self._urgent, self._events
            events = list(urgent)
            urgent.clear()
            if len(queue) <= MAX_BATCH:
                events.extend(queue)
                queue.clear()
                self._queued_bytes = 0
            else:  # a burst: in slices, so routing is not behind a whole backlog
                before = len(queue)
                events.extend(queue.popleft() for _ in range(MAX_BATCH))
                self._queued_bytes = self._queued_bytes * len(queue) // before
            if not events and self._unreported is not None:
                raise self._report_loss()
            return events

    async def _wait_for_events(self, conn: _Connection, timeout: float) -> None:
        # One bare future and one timer per wait: this runs once per batch of
        # events, so no Task (asyncio.wait_for) and no asyncio.Event.
        loop = asyncio.get_running_loop()
        waiter = self._wakeup = loop.create_future()
        timer = loop.call_later(timeout, _settle, waiter)
        try:
            if not (self._events or self._urgent or conn.lost or self._closed):
                await waiter
        finally:
            timer.cancel()
            self._wakeup = None


_CHANNEL = b"\r\nChannel: "
_NEWEXTEN = b"Event: Newexten\r\n"
#: The lines of the applications a requesting channel waits in
#: (router/dialplan.py ``PARK_APPLICATIONS``; a test keeps the two in step).
PARK_LINES: tuple[bytes, ...] = (
    b"\r\nApplication: Wait\r\n",
    b"\r\nApplication: MusicOnHold\r\n",
    b"\r\nApplication: WaitExten\r\n",
)
#: Blocks of the requesting channel looked through for its Wait step.
_STEPS_LOOKED_AT = 4


def _peek_wait_step(data: bytes, at: int, after: int, peek: Callable[[str, str], None]) -> None:
    """Show ``peek`` the urgent block at ``at`` (ending at ``after``) and its
    channel's ``Newexten`` for ``Wait``, when that is in the rest of this read
    (among the channel's next few blocks), before either is parsed.

    A Redirect is sent only once the requesting channel is seen in ``Wait``
    (router/parking.py). Asterisk publishes that step microseconds after the
    request, so it is usually in the same read; seen here, it is known when
    the decision is ready, and the events between are still parsed after the
    Redirect is written. Both texts as a narrower gets them (lines joined by
    ``\\n``, router.ami.protocol ``Narrower``).
    """
    start = data.rfind(b"\r\n\r\n", 0, at)
    start = 0 if start < 0 else start + 4
    line = data.find(_CHANNEL, start - 2 if start >= 2 else 0, after)
    if line < 0:
        return
    line_end = data.find(b"\r\n", line + len(_CHANNEL))
    if line_end < 0 or line_end >= after:
        return
    needle = data[line : line_end + 2]
    pos = after - 2
    for _ in range(_STEPS_LOOKED_AT):
        found = data.find(needle, pos)
        if found < 0:
            return
        block = data.rfind(b"\r\n\r\n", after - 4, found)
        end = data.find(b"\r\n\r\n", found)
        if block < 0 or end < 0:
            return
        if data.startswith(_NEWEXTEN, block + 4):
            for park in PARK_LINES:
                if data.find(park, found, end + 2) >= 0:
                    peek(
                        _narrower_text(data[start : after - 4]),
                        _narrower_text(data[block + 4 : end]),
                    )
                    return
        pos = end + 2


def _narrower_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\r\n", "\n")


def _expire(future: asyncio.Future[ActionResult]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def tcp_ssl_context(
    settings: ClientSettings, *, named: Callable[[str], str] | None = None
) -> ssl.SSLContext:
    """Verified by default, as for https: ``verify`` is True, False or a CA file
    (``named``: :func:`router.ami.client.tls_context`)."""
    verify = settings.verify
    ctx = tls_context(verify, settings.client_cert, settings.client_key, named=named)
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
