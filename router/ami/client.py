"""The AJAM client: the manager session over the sans-I/O protocol.

It owns the HTTP manager session so callers never see it: logging in
(``mansession_id`` cookie, or HTTP Digest on ``/arawman``), logging in again
when Asterisk forgot us, retrying a request once when a pooled keep-alive
connection turned out stale (only for actions that are safe to repeat), and
mapping every transport failure onto :mod:`router.errors`. All of that is
here once, above the :class:`~router.ami.transport.Transport` seam, whichever
transport carries the bytes: the native pool (production), httpx (Digest), or
the test kit's fake Asterisk.

Asterisk answers an expired session and a missing write class with the same
``Permission denied``. Logging in again for a missing class helps nothing and
costs a session (the event queue with it: a stream gap on every call), so a
denied action is followed by a ``Ping`` on the same session, which needs no
class: if it passes, the session is alive and the action raises
:class:`~router.errors.AMIPrivilegeError` naming the missing class; if not,
the session expired, and the client logs in again and retries once.

Actions run concurrently with an outstanding ``WaitEvent`` on other pooled
connections sharing the cookie; :meth:`AJAMClient.wait_event` refuses to run
twice at once because a second WaitEvent on one session kicks the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from router import eager
from router.ami.actions import AMIActions
from router.ami.catalog import load_catalog
from router.ami.event_filter import (
    EVERYTHING,
    EventSelection,
    FilterKey,
    add_filters,
)
from router.ami.hints import login_refused_hint, tls_hint, unresolved_hint
from router.ami.http import (
    MAX_BODY,
    AuthChallengeError,
    ConnectFailedError,
    ConnectionPool,
    HTTPError,
    HTTPProtocolError,
    HTTPResponse,
    StaleConnectionError,
    UnfinishedAnswerError,
)
from router.ami.message import Event, Response
from router.ami.protocol import (
    Action,
    ActionResult,
    Narrower,
    ParamValue,
    WireFormat,
    assemble_result,
    encode_form,
    parse_body,
    split_waitevent,
)
from router.ami.transport import HTTPRequest, Transport
from router.errors import (
    AMIActionError,
    AMIAuthenticationError,
    AMIConnectionError,
    AMIEmptyAnswerError,
    AMIError,
    AMIPrivilegeError,
    AMIProtocolError,
    AMITimeoutError,
    AMIValidationError,
    ConfigError,
)
from router.logsafe import install_redaction, peer_text, register_secret

if TYPE_CHECKING:
    import httpx

    from router.config import AsteriskSettings

__all__ = ["AJAMClient", "ActionResult", "ClientSettings", "LoginListener", "is_idempotent"]

log = logging.getLogger("router.ami.client")

#: Called with no argument after each successful login, whatever asked for
#: it (the start, the event stream, an action that found its session gone),
#: inside the client's login: it must return at once (schedule work, never
#: await it). The engine asks the manager user's write classes again then.
LoginListener = Callable[[], None]

#: AJAM: ``cookie`` (Login) or ``digest``; native TCP AMI: ``plain`` or ``md5`` (Challenge).
AuthMode = Literal["cookie", "digest", "plain", "md5"]

#: The session cookie as we send it back: RFC 6265 cookie-octets only, bounded,
#: so a hostile Set-Cookie cannot inject headers or NULs into our requests.
_COOKIE = re.compile(r'mansession_id=("?)[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,256}\1')
_MAX_AGE = re.compile(r"max-age\s*=\s*([0-9]{1,9})(?![0-9])", re.IGNORECASE | re.ASCII)

#: Actions that change nothing on the PBX, so repeating one after a dropped
#: connection is harmless. Anything not here and not matching the name
#: patterns below is sent at most once.
_IDEMPOTENT = frozenset(
    name.lower()
    for name in (
        "Ping WaitEvent CoreSettings CoreStatus CoreShowChannels CoreShowChannelMap Getvar "
        "Status ListCommands ListCategories ExtensionState ExtensionStateList "
        "DeviceStateList PresenceState PresenceStateList MailboxCount MailboxStatus DBGet "
        "DBGetTree GetConfig GetConfigJSON ShowDialPlan QueueStatus QueueSummary BridgeInfo "
        "BridgeList BridgeTechnologyList ParkedCalls Parkinglots ModuleCheck Agents "
        "ConfbridgeList ConfbridgeListRooms MeetmeList MeetmeListRooms FAXSessions FAXStats "
        "VoicemailUsersList VoicemailUserStatus VoicemailBoxSummary IAXpeerlist IAXpeers "
        "IAXregistry IAXnetstats MWIGet Challenge Setvar"
    ).split()
)


def is_idempotent(action_name: str) -> bool:
    """Whether an action may be sent twice without changing its effect.

    ``Setvar`` is included (setting a value twice is setting it once);
    ``Originate``, ``Redirect``, ``Hangup``, ``UserEvent`` are not.
    """
    name = action_name.lower()
    return (
        name in _IDEMPOTENT
        or name.startswith(("pjsipshow", "show", "list", "get"))
        or name.endswith(("list", "status"))
    )


#: Asterisk's true words (``ast_true``), for ``Async``.
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})
#: Asterisk's own default ``Timeout`` of ``Originate``, in ms.
ORIGINATE_TIMEOUT_MS = 30_000
#: The longest a synchronous ``Originate`` is waited for beyond the request's
#: own timeout: a larger ``Timeout`` is given up on after this.
MAX_ORIGINATE_HOLD = 3600.0


def originate_hold(action: Action) -> float | None:
    """Seconds Asterisk may take to answer ``action`` when it is a synchronous
    ``Originate`` (no true ``Async``), or None.

    Asterisk answers one only once the call is answered or its ``Timeout``
    (ms, 30 s by default; none at all for 0 or less) passed, and over native AMI it answers nothing
    else on the session meanwhile, a ``Ping`` included: on the sandbox the
    CLI gave it up after 10 s (AJAM) and the keepalive dropped the TCP
    connection as dead after 5 s (issue 16).
    """
    if action.name.lower() != "originate":
        return None
    # manager.c reads the first of each key (astman_get_header), its leading
    # blanks skipped: ast_true(Async), and a Timeout left empty is its 30 s.
    first: dict[str, str] = {}
    for key, value in action.params:
        first.setdefault(key.lower(), _skip_blanks(value))
    if first.get("async", "").lower() in _TRUE:
        return None
    text = first.get("timeout", "")
    timeout = ORIGINATE_TIMEOUT_MS
    if text:
        # sscanf("%30d"): its leading digits, "8000ms" as 8000 (hreview48: int()
        # took it, and an empty Timeout, for 0 s, and the request was given up
        # on after request_timeout while Asterisk still held it).
        number = _LEADING_INT.match(text[:30])
        if number is None:
            return 0.0  # "Invalid timeout", answered at once
        timeout = int(number.group())
        if timeout <= 0:
            # Asterisk 22 dials with no timeout at all then (main/dial.c:
            # ast_dial_set_global_timeout keeps only one above 0, and
            # monitor_dial waits with -1): the answer comes when the call is
            # answered or fails, however long it rings. Read as 0 s, a
            # ``Timeout: -1`` was given up on after request_timeout while
            # Asterisk still held it (issue 16).
            return MAX_ORIGINATE_HOLD
    return min(timeout / 1000, MAX_ORIGINATE_HOLD)


#: What ``sscanf("%d")`` reads at the start of a text: a sign, ASCII digits.
_LEADING_INT = re.compile(r"[+-]?[0-9]+")


def _skip_blanks(text: str) -> str:
    """``text`` without its leading characters below 33, as Asterisk's
    ``ast_skip_blanks`` leaves a header's value."""
    at = 0
    while at < len(text) and ord(text[at]) < 33:
        at += 1
    return text[at:]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How to reach one Asterisk; :mod:`router.config` fills it from router.toml."""

    url: str
    username: str
    #: Never in repr(): settings end up in logs and tracebacks.
    secret: str = field(repr=False)
    auth: AuthMode = "cookie"
    format: WireFormat = "rawman"
    verify: bool | str = True
    client_cert: str | None = None
    client_key: str | None = None
    connect_timeout: float = 3.0
    request_timeout: float = 10.0
    max_connections: int = 20
    #: "native": the lean HTTP/1.1 pool of router.ami.http (cookie auth);
    #: "httpx": httpx (router.ami.httpx_transport; always used for digest auth).
    http_client: Literal["native", "httpx"] = "native"
    #: Below Asterisk's ``session_keep_alive`` (15 s) so we close idle pooled
    #: connections before Asterisk does; this prevents most stale-connection
    #: errors instead of retrying them.
    keepalive_expiry: float = 10.0
    #: Largest AJAM response body accepted (``[asterisk] max_response_bytes``),
    #: whatever its framing: a broken or hostile peer cannot fill our memory.
    max_response_bytes: int = MAX_BODY
    #: Native TCP AMI only (router.ami.tcp): a Ping when the socket was quiet
    #: for half of this, the connection declared dead after all of it.
    ping_interval: float = 5.0
    #: Native TCP AMI only: events read but not yet taken by ``wait_event``;
    #: beyond it the events read are dropped and reported as a gap (the socket
    #: is still read: the answers to actions come on it).
    max_queued_events: int = 100_000
    #: Where the secret came from (:attr:`AsteriskSettings.secret_source`:
    #: ``env:NAME``, the file, ``command line``), for a refused login's hint.
    secret_source: str = ""
    #: How long a login waits for Asterisk's answers (Login, its challenge and
    #: event filters) when shorter than ``request_timeout``: the commands a
    #: person waits on (``callrouter check --asterisk``, ``callrouter ami``) set
    #: it, so a peer that accepts and never answers fails in seconds; None (the
    #: engine): ``request_timeout``. The connection and a TCP greeting keep
    #: ``connect_timeout``.
    login_timeout: float | None = None
    #: AJAM only: the longest WaitEvent asked for (``[asterisk]
    #: waitevent_timeout``), checked against the session's lifetime at login
    #: (:func:`session_lifetime_problem`).
    waitevent_timeout: float = 20.0

    def login_wait(self) -> tuple[float, str]:
        """How long a login waits for its answers, and what sets that bound."""
        limit = self.login_timeout
        if limit is not None and limit < self.request_timeout:
            return limit, "the longest callrouter's commands wait for a login"
        return self.request_timeout, "request_timeout"

    @property
    def native(self) -> bool:
        """``tcp://`` or ``tls://``: :class:`router.ami.tcp.TCPClient` serves it."""
        return self.url.startswith(("tcp://", "tls://"))

    @classmethod
    def from_config(cls, cfg: AsteriskSettings) -> ClientSettings:
        """The client's view of router.toml's ``[asterisk]`` table."""
        return cls(
            url=cfg.url,
            username=cfg.username,
            secret=cfg.secret,
            auth=cfg.auth,
            format=cfg.format,
            verify=str(cfg.verify) if isinstance(cfg.verify, Path) else cfg.verify,
            client_cert=str(cfg.client_cert) if cfg.client_cert else None,
            client_key=str(cfg.client_key) if cfg.client_key else None,
            connect_timeout=cfg.connect_timeout,
            request_timeout=cfg.request_timeout,
            http_client=cfg.http_client,
            max_response_bytes=cfg.max_response_bytes,
            ping_interval=cfg.ping_interval,
            secret_source=cfg.secret_source,
            waitevent_timeout=cfg.waitevent_timeout,
        )


class AJAMClient(AMIActions[ActionResult]):
    """One logged-in AJAM session with Asterisk.

    ``await client.request(Action.build("Ping"))`` or, through the typed
    catalog layer, ``await client.ping()``. Use as ``async with``; ``aclose``
    logs off.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: Transport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``: what carries the requests (tests); by default the
        native pool, or httpx for Digest auth or ``http_client = "httpx"``. An
        ``httpx`` transport (``httpx.MockTransport``) runs inside httpx."""
        self.settings = settings
        # httpx/httpcore print headers at DEBUG: keep the secret and the
        # session cookie out of every log, whatever the log level.
        register_secret(settings.secret)
        install_redaction()
        base = settings.url.rstrip("/")
        endpoint = settings.format if settings.auth == "cookie" else f"a{settings.format}"
        self._endpoint = f"{base}/{endpoint}"
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._login_lock = asyncio.Lock()
        self._wait_lock = asyncio.Lock()
        self._logged_in = settings.auth == "digest"
        #: Increases at every successful login: events queued for an older
        #: session are gone, which the event stream reports as a gap.
        self.session_generation = 0
        #: Seconds Asterisk keeps an idle session (``httptimeout``), read from
        #: the cookie's Max-Age; ``None`` until known.
        self.session_ttl: int | None = None
        self._login_listener: LoginListener | None = None
        self._closed = False
        #: What went unanswered last (a timeout, a connection that broke), until
        #: an answer comes again: then :meth:`aclose` sends no Logoff to wait on.
        self._unanswered: str | None = None
        #: Actions already reported as refused for a missing class (logged once each).
        self._denied_logged: set[str] = set()
        #: When a login and a session lost were last logged at INFO.
        self._logins_said: float | None = None
        self._relogins_said: float | None = None
        #: What times the logins' lines and their backoff (tests replace it).
        self._clock: Callable[[], float] = time.monotonic
        #: Logins in a row whose first action was refused again (Ping too):
        #: a peer that takes every login and refuses everything after it.
        self._hollow_logins = 0
        #: No login again for a refused action before this (:meth:`_hollow_login`).
        self._relogin_after: float | None = None
        #: When the backoff's WARNING was last said.
        self._hollow_said: float | None = None
        #: The session (its :attr:`session_generation`) Asterisk's answers showed
        #: gone (:meth:`_session_gone`) and no login again replaced yet: while
        #: logins again are held back, actions for it are refused unsent.
        self._lost_generation: int | None = None
        #: Whether a login WARNs of a session lifetime that makes the event
        #: stream poll busily (:func:`session_lifetime_problem`); a caller that
        #: reports it itself (``callrouter check --asterisk``) turns it off.
        self.warn_lifetime = True
        #: The events to ask for (router.ami.event_filter), applied at every
        #: login; :meth:`set_events` changes it.
        self.event_selection: EventSelection = EVERYTHING
        #: Events parsed only in part (:meth:`set_narrowing`).
        self._narrow: dict[str, Narrower] = {}
        #: The live session's class mask and include filters (``plan_filters``).
        self._session_mask = "on"
        self._session_filters: frozenset[FilterKey] | None = frozenset()
        #: Asterisk refused ``Filter`` (no ``write = system``): not asked again.
        self._filter_forbidden = False
        parts = urllib.parse.urlsplit(self._endpoint)
        if "@" in parts.netloc:
            # Never "user:password@host": it would travel in the Host header and
            # be printed wherever the endpoint is (router.config refuses it too).
            raise ConfigError(
                "Asterisk url: put no credentials in the URL; use username and secret"
            )
        self._target = parts.path or "/"
        #: The session cookie as sent back (``mansession_id=...``), whatever the transport.
        self._cookie: str | None = None
        self._transport = self._make_transport(parts, transport)
        #: Whether the transport writes a request in the caller's step and
        #: hands off itself (router.eager); others are handed off before.
        self._writes_in_step = isinstance(self._transport, ConnectionPool)

    def _make_transport(
        self, parts: urllib.parse.SplitResult, given: Transport | httpx.AsyncBaseTransport | None
    ) -> Transport:
        settings = self.settings
        needs_httpx = settings.auth == "digest" or settings.http_client == "httpx"
        if given is not None and not _is_httpx_transport(given):
            return given  # type: ignore[return-value]  # a Transport, by elimination
        verify = ajam_ssl_context(settings)
        if given is None and not needs_httpx:
            return ConnectionPool(
                parts.hostname or "127.0.0.1",
                parts.port or (443 if parts.scheme == "https" else 80),
                ssl_context=(verify if isinstance(verify, ssl.SSLContext) else _insecure_context())
                if parts.scheme == "https"
                else None,
                max_connections=settings.max_connections,
                keepalive_expiry=settings.keepalive_expiry,
                connect_timeout=settings.connect_timeout,
                max_body=settings.max_response_bytes,
                host_header=parts.netloc,
            )
        # httpx only where it is needed: no idle httpx client beside the native pool.
        from router.ami.httpx_transport import DigestAuth, HttpxTransport

        return HttpxTransport(
            f"{parts.scheme}://{parts.netloc}",
            auth=DigestAuth(settings.username, settings.secret)
            if settings.auth == "digest"
            else None,
            verify=verify,
            connect_timeout=settings.connect_timeout,
            request_timeout=settings.request_timeout,
            max_connections=settings.max_connections,
            keepalive_expiry=settings.keepalive_expiry,
            max_body=settings.max_response_bytes,
            transport=given,  # type: ignore[arg-type]  # an httpx transport or None
        )

    # -- context management --------------------------------------------------

    async def __aenter__(self) -> AJAMClient:
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
        """Log off (best effort, bounded) and close the connection pool."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._unanswered is not None:
                # A peer that has just left a request unanswered would keep
                # this close waiting too; Asterisk ends the session itself
                # at httptimeout.
                log.debug("no logoff: %s", self._unanswered)
            elif self._logged_in and self.settings.auth == "cookie":
                try:
                    await asyncio.wait_for(
                        self._post(Action("Logoff", (), self._next_id()), timeout=2.0), 3.0
                    )
                except (AMIError, TimeoutError) as exc:
                    log.debug("logoff failed: %s", exc)
        finally:
            self._logged_in = False
            await self._transport.aclose()

    # -- session ---------------------------------------------------------------

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    @property
    def endpoint(self) -> str:
        """The URL actions go to: the url plus ``/rawman`` or ``/mxml`` (``/a...`` for Digest)."""
        return self._endpoint

    @property
    def transport(self) -> Transport:
        """What carries the requests (the native pool unless Digest, httpx or a test's)."""
        return self._transport

    async def login(self) -> Response:
        """Open a manager session; raises :class:`AMIAuthenticationError` if refused."""
        async with self._login_lock:
            return await self._login_locked()

    async def _login_locked(self) -> Response:
        if self.settings.auth == "digest":
            # Digest has no Login: every request authenticates. Ping proves the
            # credentials now rather than at the first real action.
            result = await self._login_post(Action("Ping", (), self._next_id()))
            self._logged_in = True
            self.session_generation += 1
            self._session_mask, self._session_filters = "on", frozenset()
            try:
                await self._filter_session(self.event_selection)
            finally:
                tell_login(self._login_listener)  # the session stands, filtered or not
            return result.response
        self._cookie = None
        action = Action(
            "Login",
            (
                ("Username", self.settings.username),
                ("Secret", self.settings.secret),
                *self.event_selection.login_fields(),
            ),
            self._next_id(),
        )
        result = await self._login_post(action)
        if not result.response.ok:
            said = result.response.message
            hint = login_refused_hint(self.settings.username, self.settings.secret_source, said)
            raise AMIAuthenticationError(
                f"Asterisk refused login for {self.settings.username!r} at {self._endpoint}: "
                f"{peer_text(said)}{hint}"
            )
        self._logged_in = True
        self.session_generation += 1
        self._logins_said = self._said_once_a_minute(
            self._logins_said, "logged in to %s as %s", self._endpoint, self.settings.username
        )
        self._session_mask, self._session_filters = self.event_selection.mask, frozenset()
        if self.warn_lifetime:
            _warn_lifetime(self._endpoint, self.session_ttl, self.settings.waitevent_timeout)
        try:
            await self._filter_session(self.event_selection)
        finally:
            # Later actions use this session even when its filters failed.
            tell_login(self._login_listener)
        return result.response

    def _said_once_a_minute(
        self, last: float | None, message: str, *args: object, level: int = logging.INFO
    ) -> float | None:
        """``message`` at ``level`` if none was said in the last :data:`LOGIN_SAID_EVERY`
        seconds (when it was is returned), else at DEBUG: a peer that takes
        every login and refuses every action after it (Ping too) was logged in
        to again at each poll, two INFO lines a second, 14,000 an hour."""
        now = self._clock()
        if last is None or now - last >= LOGIN_SAID_EVERY:
            log.log(level, message, *args)
            return now
        log.debug(message, *args)
        return last

    async def _login_post(self, action: Action) -> ActionResult:
        """The login's action, bounded by :meth:`ClientSettings.login_wait`; no
        answer in time is said as a login that failed, with what answers there."""
        wait, bound = self.settings.login_wait()
        try:
            return await self._post(action, timeout=wait, login=True)
        except AMITimeoutError as exc:
            if isinstance(exc.__cause__, UnfinishedAnswerError):
                # Something answers HTTP there: none of the hints below.
                raise AMITimeoutError(
                    self._cannot_log_in(
                        f"{exc} ({bound}): the port answers HTTP, and trickled this "
                        "answer or held the rest of it back (not as Asterisk answers: "
                        "another server, or a proxy on the way)"
                    )
                ) from exc
            raise AMITimeoutError(
                self._cannot_log_in(
                    f"{exc} ({bound}; the connection itself: connect_timeout): nothing "
                    "answered HTTP there (a host that is down or unreachable, a firewall "
                    "dropping the port, or a port that accepts connections and never "
                    "answers: a half-open connection, another service); Asterisk's HTTP "
                    "server is http.conf bindaddr and bindport (8088) with its prefix, the "
                    "manager's own port takes a tcp:// url"
                )
            ) from exc
        except AMIConnectionError as exc:
            raise AMIConnectionError(self._cannot_log_in(str(exc))) from exc
        except AMIAuthenticationError as exc:
            raise AMIAuthenticationError(self._cannot_log_in(str(exc))) from exc
        except AMIProtocolError as exc:
            raise AMIProtocolError(self._cannot_log_in(str(exc))) from exc
        except AMIValidationError as exc:
            raise AMIValidationError(self._cannot_log_in(str(exc))) from exc

    def _cannot_log_in(self, reason: str) -> str:
        """A failed login as the commands print it: where, as whom, and what
        went wrong or unanswered, each once (``reason`` names no url: the
        login's requests say it so, router.ami.tcp likewise)."""
        where = self.settings.url.rstrip("/")
        return f"cannot log in to {where} as {self.settings.username!r}: {reason}"

    def set_login_listener(self, listener: LoginListener | None) -> None:
        """Call ``listener`` after each successful login from now on (``None``:
        no more). A login inside :meth:`request` (the session expired,
        Asterisk restarted) changes no event-stream state until the stream's
        next poll comes back, which may be a long-poll later: this says it at
        once."""
        self._login_listener = listener

    def set_urgent(
        self,
        test: Callable[[Event], bool] | None,
        *,
        marker: bytes | None = None,
        peek: Callable[[str, str], None] | None = None,
        early: Callable[[bytes, int, int], None] | None = None,
    ) -> None:
        """As :meth:`TCPClient.set_urgent`; a long-poll hands its batch over
        whole (``marker`` cuts nothing, ``peek`` is not needed: the batch is
        looked ahead whole; nor is ``early``, not offered here), and the event
        stream puts what ``test`` accepts first."""

    def _ours(self, action_id: str) -> bool:
        """An ActionID this client gave (another client's ``OriginateResponse``
        reaches every session's WaitEvent)."""
        return action_id.startswith(f"cr-{self._id_prefix}-")

    def refusal_reported(self, name: str) -> None:
        """The caller reports a ``Permission denied`` for action ``name`` itself,
        with what it costs: the client does not log it too (it logs each other
        action's first refusal)."""
        self._denied_logged.add(name.lower())

    def set_narrowing(self, narrow: Mapping[str, Narrower]) -> None:
        """Events of these names in a WaitEvent reply are parsed only when their
        narrower accepts their raw text (router.ami.protocol
        ``RawmanParser.narrow``); the engine's own reading of events it needs
        only a few of."""
        self._narrow = dict(narrow)

    async def set_events(self, selection: EventSelection) -> None:
        """Ask for ``selection``'s events from now on (a rule reload changed them).

        Applied to the live session where Asterisk allows it: the class mask
        is replaced, name filters are added; names no longer needed keep
        arriving until the next login, since a session's filters cannot be
        removed (:func:`~router.ami.event_filter.plan_filters`).
        """
        self.event_selection = selection
        # A digest client counts as logged in before its first request: its
        # first login applies the selection, once.
        if self._logged_in and self.session_generation:
            async with self._login_lock:
                await self._filter_session(selection)

    async def _filter_session(self, selection: EventSelection) -> None:
        if selection.mask != self._session_mask:
            mask = Action("Events", (("EventMask", selection.mask),), self._next_id())
            result = await self._post(mask)
            if result.response.ok:
                self._session_mask = selection.mask
                if selection.mask != "off" and result.response.get("Events") == "Off":
                    log.warning(
                        "Asterisk turned events off for the mask %r: may %r read those classes?",
                        selection.mask,
                        self.settings.username,
                    )
            else:
                log.warning(
                    "Asterisk refused the event mask %r: %s",
                    selection.mask,
                    peer_text(result.response.message),
                )
        if self._filter_forbidden:
            return
        self._session_filters, self._filter_forbidden = await add_filters(
            lambda action: self._post(action.with_action_id(self._next_id())),
            selection,
            self._session_filters,
            self.settings.username,
            log,
        )

    async def _relogin(self, seen_generation: int) -> bool:
        """Log in again unless another request already did; whether this one did."""
        async with self._login_lock:
            # Several requests may find the session gone at once: only the first
            # logs in, the others reuse its session.
            if self.session_generation != seen_generation:
                return False
            self._relogins_said = self._said_once_a_minute(
                self._relogins_said, "AJAM session expired or was lost; logging in again"
            )
            await self._login_locked()
            return True

    def _relogin_held(self) -> bool:
        """Whether a login again is held back now (:meth:`_hollow_login`)."""
        after = self._relogin_after
        return after is not None and self._clock() < after

    def _hollow_login(self) -> None:
        """A login again whose first action was refused again, Ping too: the
        peer takes every login and refuses everything after it (something between
        that drops the session cookie, or not Asterisk: Asterisk 22 answers a user
        with no class at all Ping and WaitEvent). Logging in again at each
        request helped nothing and cost a login a poll, about two a second for
        ever; from the second in a row the next one waits
        :data:`RELOGIN_BACKOFF_FIRST` s, doubling to
        :data:`RELOGIN_BACKOFF_MAX`, until an action works (:meth:`_session_works`).
        Meanwhile an action for a session known gone is not sent
        (:meth:`_held_back`); one for a session that may still live is."""
        self._hollow_logins += 1
        if self._hollow_logins < 2:
            # Once may be a session lost and a class missing, or a session
            # that does not last (a proxy dropping the cookie): not held.
            return
        delay = min(
            RELOGIN_BACKOFF_MAX, RELOGIN_BACKOFF_FIRST * 2 ** min(self._hollow_logins - 2, 16)
        )
        self._relogin_after = self._clock() + delay
        self._hollow_said = self._said_once_a_minute(
            self._hollow_said,
            "Asterisk at %s took the login as %s and refused the first action after it "
            "(Ping too) %d times in a row: something between drops the session cookie (a "
            "proxy), or this is not Asterisk (a manager user with no class at all still "
            "gets Ping); logging in again no sooner than %g s from now, until an action works",
            self._endpoint,
            self.settings.username,
            self._hollow_logins,
            delay,
            level=logging.WARNING,
        )

    def _session_works(self) -> None:
        """An action was answered other than ``Permission denied``: logins again
        are no longer held back."""
        if self._hollow_logins >= 2:
            log.info("Asterisk at %s answers actions again", self._endpoint)
        self._hollow_logins = 0
        self._relogin_after = None

    def _session_gone(self, name: str, generation: int, cookie: str | None) -> bool:
        """After ``Permission denied`` for action ``name``, sent with ``cookie``
        on session ``generation``: whether the answer itself shows the session
        gone (expired, Asterisk restarted), with no Ping to ask. Asterisk
        answers a cookie it no longer knows with a new session's cookie, not
        logged in (:meth:`_parse` takes it), and a live session's refusal with
        its own (both seen on 22.10.1); and it refuses an action no class
        guards (Ping, WaitEvent: ``Priv: <none>``) only to a session not logged
        in. Otherwise (the same cookie, an action a class guards) only a Ping
        tells an expired session from a missing class (:meth:`_session_alive`)."""
        if self.session_generation != generation:
            return False  # another request logged in meanwhile: not this answer's to say
        if cookie is not None and self._cookie != cookie:
            return True
        try:
            return not load_catalog().action(name).write_classes
        except AMIValidationError:  # an action newer than the catalog
            return False

    def _held_back(self, name: str, sent: bool) -> AMIConnectionError:
        """The session is gone and logging in again is held back
        (:meth:`_hollow_login`): the error for action ``name`` (``sent``:
        whether it went out, refused, or was not sent at all)."""
        after = self._relogin_after
        left = 0.0 if after is None else max(0.0, after - self._clock())
        return AMIConnectionError(
            f"{name}: the AJAM session at {self._endpoint} is gone (Asterisk "
            + (
                "refused this action as not logged in"
                if sent
                else "refused an earlier action as not logged in; not sent"
            )
            + f") and logging in again is held back {left:.1f} s more: Asterisk took the "
            f"last {self._hollow_logins} logins as {self.settings.username} and refused the "
            "first action after each of them as not logged in (something between drops "
            "the session cookie, or this is not Asterisk)"
        )

    # -- actions -----------------------------------------------------------------

    def _next_id(self) -> str:
        return f"cr-{self._id_prefix}-{next(self._ids)}"

    async def request(
        self,
        action: Action,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> ActionResult:
        """Send one action and return its response (with list items, complete).

        Raises :class:`AMIActionError` for ``Response: Error`` when ``check``.
        """
        if self._closed:
            raise AMIConnectionError("the AJAM client is closed")
        if action.action_id is None:
            action = action.with_action_id(self._next_id())
        if timeout is None and (hold := originate_hold(action)) is not None:
            timeout = self.settings.request_timeout + hold
        # An HTTP exchange runs under asyncio.timeout: in its own task
        # (router.eager). The native pool hands off itself, once the request
        # is written: a decision's Redirect then leaves in its request's turn.
        if not self._writes_in_step:
            await eager.hand_off()
        if not self._logged_in:
            await self.login()
        generation = self.session_generation
        cookie = self._cookie
        lost = self.settings.auth == "cookie" and self._lost_generation == generation
        if lost and self._relogin_held():
            # Asterisk has said this session is gone: the action would only be
            # refused again, and logging in again is held back.
            raise self._held_back(action.name, sent=False)
        result = None if lost else await self._post(action, timeout=timeout)
        # The session is gone, unless a Ping proves it alive; and when another
        # request logged in again while this one was out (Asterisk restarted
        # under both), the answer was the old session's: retry on the new one,
        # whatever a Ping on it says.
        if result is not None and not _denied(result):
            self._session_works()
        elif self.settings.auth == "cookie" and (
            result is None
            or self.session_generation != generation
            or self._session_gone(action.name, generation, cookie)
            or not await self._session_alive(action)
            or self.session_generation != generation
        ):
            if self.session_generation == generation and self._relogin_held():
                # Logins again are held back (a peer that refuses every action
                # after each login) and this session is gone too: said so, not
                # as a missing class; later actions for it are not sent.
                self._lost_generation = generation
                raise self._held_back(action.name, sent=True)
            logged_in = await self._relogin(generation)
            generation, cookie = self.session_generation, self._cookie
            result = await self._post(action, timeout=timeout)
            if not _denied(result):
                self._session_works()
            elif logged_in:
                self._hollow_login()
                if self._session_gone(action.name, generation, cookie):
                    # Refused as not logged in right after the login: the
                    # session was not kept. Not a missing class.
                    self._lost_generation = generation
                    if self._relogin_held():
                        raise self._held_back(action.name, sent=True)
                    raise AMIConnectionError(
                        f"{action.name}: Asterisk at {self._endpoint} refused it as not "
                        f"logged in right after a login as {self.settings.username}: the "
                        "session was not kept"
                    )
        if result is None:  # sent above, or an error was raised
            raise AssertionError("unreachable")  # pragma: no cover
        if _denied(result):
            # Digest authenticates every request, and a cookie session was just
            # proven alive (or renewed): the user lacks the action's class.
            raise self._privilege_error(action.name, result)
        if check and not result.response.ok:
            raise AMIActionError(action.name, result.response)
        return result

    async def _session_alive(self, denied: Action) -> bool:
        """After ``Permission denied``: is the session still logged in?

        ``Ping`` needs no write class, so it fails only on a session Asterisk
        no longer knows (expired, or Asterisk restarted).
        """
        if denied.name.lower() == "ping":
            return False
        try:
            probe = await self._post(Action("Ping", (), self._next_id()))
        except AMIError:
            return False
        if not _denied(probe):
            self._session_works()
        return probe.response.ok

    def _privilege_error(self, name: str, result: ActionResult) -> AMIPrivilegeError:
        error = privilege_error(name, result, self.settings.username)
        if name.lower() not in self._denied_logged:
            # Once per action: every later refusal fails its decision, logged there.
            self._denied_logged.add(name.lower())
            log.warning("%s", error)
        return error

    async def action(
        self,
        name: str,
        params: Mapping[str, ParamValue | None] | Iterable[tuple[str, str]] | None = None,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> ActionResult:
        """Send any action by name, unvalidated: the escape hatch for actions
        newer than the catalog. Prefer the typed methods (``client.originate``).
        """
        return await self.request(Action.build(name, params), check=check, timeout=timeout)

    async def wait_event(self, timeout: int = 20) -> list[Event]:
        """Long-poll once: the events queued for this session, possibly none.

        Returns as soon as Asterisk has at least one event. The wait is capped
        below the session's lifetime because Asterisk answers at once when the
        session would expire first (``httptimeout`` - 10 s).
        """
        if self._wait_lock.locked():
            raise AMIError("a WaitEvent is already outstanding on this session")
        async with self._wait_lock:
            ttl = self.session_ttl
            wait = timeout if ttl is None else max(1, min(timeout, ttl - 11))
            action = Action("WaitEvent", (("Timeout", str(wait)),))
            result = await self.request(action, timeout=wait + self.settings.request_timeout)
            messages = (result.response, *result.extra)
            _, events = split_waitevent(messages)
            return events

    # -- HTTP ----------------------------------------------------------------------

    async def _post(
        self, action: Action, *, timeout: float | None = None, login: bool = False
    ) -> ActionResult:
        """Send one action over the transport: the one retry loop, the one error mapping.

        ``login``: the login's own request, whose failures :meth:`_login_post`
        puts after the url and user, so they do not name the url again."""
        headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("User-Agent", "callrouter"),
        ]
        sent_cookie = self._cookie
        if sent_cookie:
            headers.append(("Cookie", sent_cookie))
        request = HTTPRequest("POST", self._target, tuple(headers), encode_form(action))
        wait = self.settings.request_timeout if timeout is None else timeout
        for attempt in (1, 2):
            try:
                with self._map_errors(action.name, login):
                    resp = await self._transport.exchange(request, timeout=wait)
            except (AMITimeoutError, AMIConnectionError) as exc:
                self._unanswered = str(exc)
                raise
            except _Stale as stale:
                # A keep-alive connection Asterisk closed while idle fails only
                # when reused; a fresh one will do, if repeating is safe.
                if attempt == 1 and is_idempotent(action.name):
                    log.debug(
                        "%s: stale connection (%s), retrying once", action.name, stale.__cause__
                    )
                    continue
                self._unanswered = f"{action.name}: the connection broke"
                to = "" if login else f" to {self._endpoint}"
                raise AMIConnectionError(
                    f"{action.name}: connection{to} broke: {stale.__cause__}"
                ) from stale.__cause__
            self._unanswered = None
            try:
                return self._parse(action, resp, sent_cookie, login=login)
            except AMIEmptyAnswerError as exc:
                # Under load Asterisk's temporary file may fail once: Login and
                # an action safe to repeat are sent once more. Not WaitEvent: the
                # events it took from the session's queue are lost with its
                # answer, a gap the event stream reports and reconciles.
                if attempt == 1 and _repeat_when_empty(action.name):
                    log.debug("%s, sending it once more", exc)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _map_errors(self, name: str, login: bool = False) -> Iterator[None]:
        """The seam's error contract (router.ami.transport) onto router.errors.

        A stale connection comes out as :class:`_Stale` for the retry loop to
        decide. ``login``: the texts leave the url out (:meth:`_post`).
        """
        started = time.monotonic()
        endpoint = self._endpoint
        connect = "cannot connect" if login else f"cannot connect to Asterisk at {endpoint}"
        try:
            yield
        except TimeoutError as exc:
            source = "" if login else f" from {endpoint}"
            what = (
                f"its answer{source} began and did not end"
                if isinstance(exc, UnfinishedAnswerError)
                else f"no answer{source}"
            )
            raise AMITimeoutError(
                f"{name}: {what} within {time.monotonic() - started:.1f} s"
            ) from exc
        except StaleConnectionError as exc:
            raise _Stale from exc
        except AuthChallengeError as exc:
            to = "" if login else f" to {endpoint}"
            raise AMIAuthenticationError(f"{name}: cannot authenticate{to}: {exc}") from exc
        except HTTPProtocolError as exc:
            raise AMIProtocolError(f"{name}: {exc}") from exc
        except ConnectFailedError as exc:
            raise AMIConnectionError(
                f"{connect}: {exc}{unresolved_hint(exc, self.settings.url)}"
            ) from exc
        except HTTPError as exc:
            raise AMIConnectionError(f"{name}: {exc}") from exc
        except ssl.SSLError as exc:
            raise AMIConnectionError(
                ("" if login else f"{connect}: ")
                + f"TLS: {exc}{tls_hint(exc, self.settings.verify, ajam=True)}"
            ) from exc
        except OSError as exc:
            if login and isinstance(exc, ConnectionRefusedError):
                # http.conf enabled = no refuses alike: name it, not only the
                # address and port, which may well be right.
                server = (
                    "HTTPS server is http.conf [general] tlsenable = yes and tlsbindaddr (8089)"
                    if self.settings.url.startswith("https:")
                    else "HTTP server is http.conf [general] enabled = yes, bindaddr and "
                    "bindport (8088)"
                )
                raise AMIConnectionError(
                    f"cannot connect: connection refused (nothing listens there): Asterisk's "
                    f"{server} with its prefix; asterisk -rx 'http show status' says whether "
                    "it is enabled and where"
                ) from exc
            what = (
                connect
                if isinstance(exc, ConnectionRefusedError | socket.gaierror)
                else f"{name}: connection broke" + ("" if login else f" to {endpoint}")
            )
            raise AMIConnectionError(
                f"{what}: {exc}{unresolved_hint(exc, self.settings.url)}"
            ) from exc

    def _parse(
        self,
        action: Action,
        resp: HTTPResponse,
        sent_cookie: str | None = None,
        *,
        login: bool = False,
    ) -> ActionResult:
        status = resp.status_code
        at = f" at {self._target}" if login else f" at {self._endpoint}"
        if status in (401, 403):
            user = self.settings.username
            # Which ACL: http.conf's path restrictions answer 403 before any
            # login; with Digest the manager user's deny/permit does too.
            acl = (
                "denied by an ACL: http.conf's path restrictions (a section such as "
                "[/asterisk] with type = restriction; asterisk -rx 'http show status' "
                "lists them) do not permit this host"
                + (
                    f", or manager.conf [{user}] deny/permit does not"
                    if self.settings.auth == "digest"
                    else ""
                )
            )
            raise AMIAuthenticationError(
                f"Asterisk answered HTTP {status}{'' if login else at}: "
                + ("wrong user or secret (digest)" if status == 401 else acl)
            )
        if status == 404:
            # manager.conf enabled = no answers 404 as webenabled = no does.
            raise AMIConnectionError(
                f"HTTP 404{at}: check the url prefix (http.conf 'prefix') "
                "and that manager.conf [general] has enabled = yes and webenabled = yes "
                "(asterisk -rx 'http show status' lists /PREFIX/rawman once both are on)"
            )
        if status == 413:
            raise AMIValidationError(f"{action.name}: request too large for Asterisk (HTTP 413)")
        if status != 200:
            source = "" if login else f" from {self._endpoint}"
            raise AMIConnectionError(f"{action.name}: HTTP {status}{source}")
        if not resp.content.strip():
            source = "" if login else f" from {self._endpoint}"
            kicked = (
                "; a second WaitEvent on the same session also ends the first with nothing"
                if action.name == "WaitEvent"
                else ""
            )
            raise AMIEmptyAnswerError(
                f"{action.name}: HTTP 200 with an empty body{source}: Asterisk's manager "
                "wrote no answer (it writes each AJAM answer to a temporary file in /tmp "
                f"on the Asterisk host first: is that folder full or not writable?{kicked})"
            )
        # Every Set-Cookie, not the first: a proxy in front of Asterisk may set
        # its own (SERVERID=web1) before Asterisk's session cookie. Of two
        # session cookies the last counts, as in a browser.
        cookie = next(
            (
                value
                for value in reversed(resp.headers.get_all("set-cookie"))
                if value.lstrip().startswith("mansession_id=")
            ),
            None,
        )
        # Every answer names a session; only Login's, or one to the cookie still in
        # use, is ours to keep. A request that went out on a session Asterisk has
        # since forgotten (a restart) comes back with a new one, not logged in; when
        # another request has logged in again meanwhile, taking it would undo that.
        if cookie and (action.name == "Login" or sent_cookie == self._cookie):
            value = cookie.split(";", 1)[0].strip()
            if _COOKIE.fullmatch(value) is None:
                raise AMIProtocolError(f"{action.name}: malformed mansession_id cookie")
            self._cookie = value
            match = _MAX_AGE.search(cookie)
            if match:
                self.session_ttl = int(match.group(1))
        try:
            waitevent = action.name == "WaitEvent"
            messages = parse_body(
                resp.content,
                resp.headers.get("content-type"),
                # The format asked for, not the one the peer's Content-Type names.
                expect=self.settings.format,
                max_size=self.settings.max_response_bytes,
                # Events the selection has no use for, which the class mask
                # let through (Filter needs write = system), are not parsed;
                # the reply's own WaitEventComplete carries our ActionID.
                wanted=self.event_selection.names if waitevent else None,
                narrow=self._narrow if waitevent else None,
                ours=self._ours if waitevent else None,
            )
            result = assemble_result(messages)
        except AMIProtocolError as exc:
            raise AMIProtocolError(f"{action.name}: {exc}") from None
        echoed = result.response.action_id
        if echoed is not None and action.action_id is not None and echoed != action.action_id:
            raise AMIProtocolError(
                f"{action.name}: response carries ActionID {echoed!r}, sent {action.action_id!r}"
            )
        return result


#: Seconds between the INFO lines of logins, and of sessions lost (the rest
#: are DEBUG), as for native TCP AMI (router.ami.tcp.LOG_EVERY).
LOGIN_SAID_EVERY = 60.0
#: The second login again in a row whose first action is refused again (Ping
#: too) holds the next one back this long, doubling up to RELOGIN_BACKOFF_MAX
#: until an action works (AJAMClient._hollow_login).
RELOGIN_BACKOFF_FIRST = 0.5
RELOGIN_BACKOFF_MAX = 30.0


def session_lifetime_problem(ttl: int | None, waitevent_timeout: float) -> str | None:
    """What is wrong with an AJAM session's lifetime (manager.conf ``httptimeout``,
    the cookie's Max-Age ``ttl``) for the event stream, if anything. At 10 s or
    less Asterisk answers every WaitEvent at once (it caps the wait at
    ``httptimeout - 10``): delivery degrades to busy polling, which still
    routes every call; a ``waitevent_timeout`` not below ``httptimeout - 10``
    is cut to ``httptimeout - 11`` at each poll (docs/asterisk-ajam.md).
    Neither stops routing: ``callrouter check --asterisk`` says either as
    ADVICE. ``manager reload`` (or ``core reload``; ``module reload http``
    does not read manager.conf) applies a new value, to a live session at its
    next request too (seen on 22.10.1)."""
    if ttl is None:
        return None
    if ttl <= 10:
        return (
            f"manager.conf [general] httptimeout is {ttl} s (the session cookie's Max-Age): "
            "at 10 s or less Asterisk answers every WaitEvent at once, so events are "
            "fetched by busy polling (calls are still routed; callrouter and Asterisk spend "
            "CPU on a poll each round trip); set "
            "httptimeout = 60 or more in manager.conf [general] and reload the manager "
            "(asterisk -rx 'manager reload') (docs/asterisk-ajam.md)"
        )
    if waitevent_timeout >= ttl - 10:
        return (
            f"[asterisk] waitevent_timeout ({waitevent_timeout:g} s) is not below manager.conf "
            f"[general] httptimeout ({ttl} s, the session cookie's Max-Age) - 10: each "
            f"WaitEvent waits {max(1, ttl - 11)} s at most; set httptimeout = 60 or more in "
            "manager.conf [general] (then asterisk -rx 'manager reload'), or "
            "waitevent_timeout below httptimeout - 10 (docs/asterisk-ajam.md)"
        )
    return None


#: The last session lifetime problem said, per endpoint: a WARNING once per
#: process, and again only when it changes (every login, a poll a second
#: against a peer that loses its sessions, would say it again).
_LIFETIME_SAID: dict[str, str | None] = {}


def _warn_lifetime(endpoint: str, ttl: int | None, waitevent_timeout: float) -> None:
    text = session_lifetime_problem(ttl, waitevent_timeout)
    if _LIFETIME_SAID.get(endpoint) == text:
        return
    if len(_LIFETIME_SAID) > 64:  # bounded, whatever creates clients
        _LIFETIME_SAID.clear()
    _LIFETIME_SAID[endpoint] = text
    if text is not None:
        log.warning("%s", text)


def _repeat_when_empty(action_name: str) -> bool:
    """Whether an action answered with an empty body is sent once more."""
    name = action_name.lower()
    return name == "login" or (name != "waitevent" and is_idempotent(name))


class _Stale(Exception):
    """Inside the retry loop only: the transport's :class:`StaleConnectionError`."""


def _is_httpx_transport(transport: object) -> bool:
    """Without importing httpx when it is not loaded (then it cannot be one)."""
    httpx_module = sys.modules.get("httpx")
    return httpx_module is not None and isinstance(transport, httpx_module.AsyncBaseTransport)


def privilege_error(name: str, result: ActionResult, username: str) -> AMIPrivilegeError:
    """``Permission denied`` on a live session, naming the write classes the action needs."""
    try:
        classes = load_catalog().action(name).write_classes
    except AMIValidationError:  # an action newer than the catalog
        classes = ()
    return AMIPrivilegeError(name, result.response, username=username, classes=classes)


def tell_login(listener: LoginListener | None) -> None:
    """Call a :data:`LoginListener`: a bug in it is logged, and the login,
    which succeeded, still does."""
    if listener is None:
        return
    try:
        listener()
    except Exception:
        log.exception("the login listener failed")


def denied(result: ActionResult) -> bool:
    """Asterisk's answer both to an expired AJAM session and to a missing write class."""
    return _denied(result)


def _denied(result: ActionResult) -> bool:
    return not result.response.ok and (result.response.message or "") == "Permission denied"


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ajam_ssl_context(
    settings: ClientSettings, *, named: Callable[[str], str] | None = None
) -> ssl.SSLContext | bool:
    """The AJAM transport's TLS: False with ``verify = false`` (no file is
    read then, the client certificate neither), else :func:`tls_context`."""
    if settings.verify is False:
        return False
    return tls_context(settings.verify, settings.client_cert, settings.client_key, named=named)


def _no_pass_phrase() -> bytes:
    """``load_cert_chain``'s password for an encrypted key: none, said so."""
    raise ValueError("the key is encrypted: give an unencrypted PEM key")


def tls_context(
    verify: bool | str,
    client_cert: str | None,
    client_key: str | None,
    *,
    named: Callable[[str], str] | None = None,
) -> ssl.SSLContext:
    """A verifying context with ``verify``'s CA file and the client certificate.

    A file that exists but holds no PEM certificate (a DER file, a key, the
    wrong file) is a :class:`ConfigError` naming the setting: the
    ``ssl.SSLError`` from loading it came out of ``run``, ``ami`` and
    ``check --asterisk`` as a traceback. ``named(key)``, when given, is where
    the key is written and its name (``router.toml:12: [asterisk] verify``,
    ``command line: --ca-file ([asterisk] verify)``: :meth:`Config.named`),
    put before the message as every other configuration error has it.
    """

    def error(key: str, message: str) -> ConfigError:
        return ConfigError(f"{named(key) if named else f'[asterisk] {key}'}: {message}")

    try:
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise error("verify", f"{verify!r} holds no CA certificate in PEM form ({exc})") from exc
    if client_cert:
        try:
            # A password callback, so that an encrypted key is refused: without
            # one OpenSSL asks for its pass phrase on the terminal, and `check
            # --config` or `run` in a shell waited there for ever.
            ctx.load_cert_chain(client_cert, client_key or None, password=_no_pass_phrase)
        except (ssl.SSLError, OSError, ValueError) as exc:
            files = f"{client_cert!r}" + (f" and client_key {client_key!r}" if client_key else "")
            raise error("client_cert", f"cannot load {files} (PEM files; {exc})") from exc
    return ctx
