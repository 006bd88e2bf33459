"""A fake Asterisk AJAM endpoint for tests, demos and benchmarks; no pytest needed.

:class:`ReplayAsterisk` answers AJAM actions as Asterisk 22 does and plugs
into the AJAM client's transport seam (:class:`~router.ami.transport.Transport`),
so a client or an engine built on it runs the code production runs: the
session, its cookie, logging in again, the retry of a stale connection and
the error mapping. Only the bytes on a socket are left out.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from router.ami.client import AJAMClient, ClientSettings
from router.ami.http import Headers, HTTPResponse
from router.ami.httpx_transport import httpx_errors
from router.ami.message import Event
from router.ami.protocol import parse_rawman
from router.ami.transport import HTTPRequest
from router.config import AsteriskSettings
from router.dialplan import (
    DEADLINE_VARIABLE,
    DID_VARIABLE,
    INBOUND_CONTEXT,
    MIXMONITOR_ID_VARIABLE,
    NEXT_VARIABLE,
    PART_SEPARATOR,
    RECORD_CONTEXT,
    REQUEST_EVENT,
)
from router.privileges import DIALPLAN, ORIGINATE, REDIRECT, REPORTING
from router.tasks import wait_set

if TYPE_CHECKING:
    from router.engine import Engine

#: The privilege probes :attr:`SentAction.probe` recognises.
PROBES = (REDIRECT, ORIGINATE, REPORTING, DIALPLAN)

__all__ = ["ActionHandler", "FakeChannel", "ReplayAsterisk", "Reply", "SentAction"]

_URL = "http://asterisk.test:8088/asterisk"
_CRLF = "\r\n"

#: What an ``on()`` handler may return: fields of a Success response, a whole
#: response as (key, value) pairs, raw rawman bytes, a whole HTTP response
#: (:class:`~router.ami.http.HTTPResponse`, or an ``httpx.Response``), or None
#: for the built-in answer.
Reply = Mapping[str, str] | list[tuple[str, str]] | bytes | HTTPResponse | httpx.Response | None
ActionHandler = Callable[["SentAction"], Reply | Awaitable[Reply]]


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True, slots=True)
class SentAction(Mapping[str, str]):
    """One action as the fake Asterisk received it (form fields, in order).

    A read-only mapping of those fields, ``Action`` and ``ActionID`` among
    them, looked up in any case as Asterisk does (``sent["channel"]``,
    ``dict(sent)``): a header sent more than once (``Variable``) gives its
    first value, :meth:`getall` all of them; :attr:`fields` is what was sent.
    """

    name: str
    fields: tuple[tuple[str, str], ...]
    path: str
    cookie: str | None

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def __iter__(self) -> Iterator[str]:
        """The field names in the order sent, each once (as first spelled)."""
        seen: set[str] = set()
        for k, _ in self.fields:
            low = k.lower()
            if low not in seen:
                seen.add(low)
                yield k

    def __len__(self) -> int:
        return len({k.lower() for k, _ in self.fields})

    @property
    def probe(self) -> bool:
        """Whether this is one of ``callrouter run``'s privilege probes
        (router.privileges: a ``Redirect`` of a channel no driver makes, an
        ``Originate`` with no ``Channel``, a ``CoreStatus``, ``callrouter check``'s
        ``ShowDialPlan`` of no context), which act on no call."""
        for p in PROBES:
            if self.name.lower() != p.action.lower():
                continue
            if not p.params:
                return self.get("Channel") is None
            return all(self.get(k) == v for k, v in p.params.items())
        return False

    def getall(self, key: str) -> list[str]:
        low = key.lower()
        return [v for k, v in self.fields if k.lower() == low]

    def __getitem__(self, key: str) -> str:
        """First value of a field, looked up case-insensitively (like Asterisk)."""
        if isinstance(key, str):
            low = key.lower()
            for k, v in self.fields:
                if k.lower() == low:
                    return v
        raise KeyError(key)

    def params(self) -> dict[str, str]:
        """Fields without ``Action`` and ``ActionID`` (last value wins)."""
        return {k: v for k, v in self.fields if k.lower() not in ("action", "actionid")}


@dataclass(slots=True)
class FakeChannel:
    """A channel the fake Asterisk believes exists (from queued events and actions)."""

    name: str
    uniqueid: str
    linkedid: str
    context: str = ""
    exten: str = ""
    priority: str = "1"
    state: str = "4"
    state_desc: str = "Ring"
    caller_num: str = ""
    caller_name: str = ""
    application: str = ""
    app_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    #: The bridge it is in (``BridgeEnter``'s ``BridgeUniqueid``), or "".
    bridge: str = ""


def _shipped_globals() -> dict[str, str]:
    from router.testing.asterisk import dialplan_globals, shipped_dialplan

    return dialplan_globals(shipped_dialplan())


def _block(pairs: Iterable[tuple[str, str]]) -> str:
    out = []
    for key, value in pairs:
        clean = str(value).replace("\r", " ").replace("\n", " ")
        out.append(f"{key}: {clean}{_CRLF}")
    return "".join(out) + _CRLF


# --------------------------------------------------------------------------- the fake


class ReplayAsterisk:
    """A fake Asterisk AJAM endpoint (``/rawman``, cookie sessions), a client transport.

    ``replay.client()`` (or ``AJAMClient(settings, transport=replay)``) talks
    to it through the same client code as to a real Asterisk; any number of
    clients may share one fake, each with its own session.

    It answers ``Login``, ``Logoff``, ``Ping``, ``Setvar``, ``Getvar``,
    ``Redirect``, ``Hangup``, ``Originate``, ``UserEvent``, ``ExtensionState``,
    ``CoreShowChannels``, ``BridgeList``, ``ShowDialPlan`` and ``WaitEvent`` as Asterisk 22
    does (same messages, same errors for unknown channels and actions, ``Permission denied``
    without a session); anything else gets Asterisk's "Invalid/unknown command" unless
    a handler is added with :meth:`on`. It keeps the channels it has announced
    through queued events, and the bridges they entered, so ``CoreShowChannels``
    (with each channel's ``BridgeId``), ``BridgeList`` and ``Getvar`` answer from
    them; with ``auto_confirm`` a ``Redirect`` moves the channel and queues its
    ``Newexten`` in the target context, and a ``Hangup`` queues the ``Hangup``
    event, as the real dialplan would.

    Use from one event loop at a time; queue events from that loop's thread.
    """

    def __init__(
        self,
        *,
        username: str = "router",
        secret: str = "secret",
        url: str = _URL,
        httptimeout: int = 60,
        auto_confirm: bool = True,
        restamp: bool = True,
        max_wait: float | None = None,
        system_name: str = "callrouter-replay",
    ) -> None:
        self.username = username
        self.secret = secret
        self.url = url.rstrip("/")
        self.httptimeout = httptimeout
        self.auto_confirm = auto_confirm
        #: Give recorded events the current ``Timestamp`` when delivered, so
        #: deadlines computed from it behave as they would live.
        self.restamp = restamp
        #: Cap on how long an empty ``WaitEvent`` blocks (None: its ``Timeout``).
        self.max_wait = max_wait
        self.system_name = system_name
        #: The manager user's ``read`` classes; None reads all. An event whose
        #: ``Privilege`` names a class outside them is never delivered, as
        #: Asterisk 22 delivers none to a session lacking its class (a user
        #: without ``read = user`` never gets a ``UserEvent``).
        self.read: frozenset[str] | None = None
        #: Every action received, in order (``Login`` and ``WaitEvent`` included).
        self.actions: list[SentAction] = []
        #: Channels Asterisk would list now, by name.
        self.channels: dict[str, FakeChannel] = {}
        #: Global variables (``Setvar`` without a channel): at first the
        #: ``[globals]`` of the shipped dialplan, loaded as ``ShowDialPlan`` shows it.
        self.globals: dict[str, str] = _shipped_globals()
        #: Bridges Asterisk would list now: ``BridgeUniqueid`` -> (type, technology).
        self.bridges: dict[str, tuple[str, str]] = {}
        self._queue: list[Event] = []
        self._sessions: set[str] = set()
        self._handlers: dict[str, ActionHandler] = {}
        self._wakeup: asyncio.Event | None = None
        self._waiting = 0
        self._ids = itertools.count(1)
        self._epoch = int(time.time())
        self._prefix = urlsplit(self.url).path.rstrip("/")

    @property
    def transport(self) -> ReplayAsterisk:
        """What to give a client as ``transport=``: this fake itself."""
        return self

    # -- client side -------------------------------------------------------------

    def settings(self, **overrides: object) -> ClientSettings:
        """Client settings pointing at this fake (``ClientSettings`` keywords override)."""
        base: dict[str, object] = {
            "url": self.url,
            "username": self.username,
            "secret": self.secret,
        }
        base.update(overrides)
        return ClientSettings(**base)  # type: ignore[arg-type]

    def client(self, **overrides: object) -> AJAMClient:
        """A new, not yet logged-in client over this fake's transport."""
        return AJAMClient(self.settings(**overrides), transport=self.transport)

    def asterisk_settings(self) -> AsteriskSettings:
        """``router.toml [asterisk]`` as an engine built on this fake needs it."""
        return AsteriskSettings(url=self.url, username=self.username, secret=self.secret)

    # -- assertions -----------------------------------------------------------------

    def sent(self, name: str | None = None, *, probes: bool = False) -> list[SentAction]:
        """Actions received, optionally only those named ``name`` (any case).

        The engine's privilege probes (:attr:`SentAction.probe`; an engine
        built with ``options=`` probes after each login) act on no call and
        are left out unless ``probes`` is true, so that ``count("Redirect")``
        counts the calls routed whatever the engine's options.
        """
        low = None if name is None else name.lower()
        return [
            a
            for a in self.actions
            if (low is None or a.name.lower() == low) and (probes or not a.probe)
        ]

    def count(self, name: str, *, probes: bool = False) -> int:
        """How many ``name`` actions were received: ``count("Redirect") == 1``
        (privilege probes left out unless ``probes``, as in :meth:`sent`)."""
        return len(self.sent(name, probes=probes))

    def clear(self) -> None:
        """Forget the recorded actions (not the sessions, channels or queued events)."""
        self.actions.clear()

    @property
    def logged_in(self) -> bool:
        return bool(self._sessions)

    def expire_session(self) -> None:
        """Forget every session, as Asterisk does after ``httptimeout`` or a restart:
        the next request is answered ``Permission denied`` and the client logs in again."""
        self._sessions.clear()

    # -- events -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events queued and not yet fetched by a WaitEvent."""
        return len(self._queue)

    def queue_event(
        self, event: str | Mapping[str, str] | Event | None = None, /, **fields: str
    ) -> Event:
        """Queue one event for the next ``WaitEvent``.

        ``event`` is the event's name, as ``make_event`` takes it
        (``queue_event("Hangup", Channel="PJSIP/1-01", Cause="16")``), an
        :class:`~router.ami.message.Event` or a mapping whose ``Event`` key
        names it (keyword arguments add fields:
        ``queue_event(Event="Hangup", Channel="PJSIP/1-01", Cause="16")``).
        ``Privilege``, ``Timestamp`` and ``SystemName`` are added when missing.
        The fake's channel list follows the event (``Newchannel``, ``Newexten``,
        ``VarSet``, ``Newstate``, ``BridgeEnter``, ``BridgeLeave``, ``Hangup``).
        """
        if isinstance(event, str):  # the name, as make_event("Hangup", ...) takes it
            event = {"Event": event}
        source = event.fields if isinstance(event, Event) else (event or {}).items()
        pairs: list[tuple[str, str]] = list(source)
        pairs.extend(fields.items())
        pairs.extend(self._channel_ids(pairs))
        keys = {k.lower() for k, _ in pairs}
        if "event" not in keys:
            raise ValueError(f"an event needs an 'Event' field: {pairs!r}")
        pairs.sort(key=lambda kv: kv[0].lower() != "event")  # Event first, the rest in order
        if "privilege" not in keys:
            pairs.insert(1, ("Privilege", "call,all"))
        if "timestamp" not in keys:
            pairs.insert(2, ("Timestamp", f"{time.time():.6f}"))
        if "systemname" not in keys:
            pairs.insert(3, ("SystemName", self.system_name))
        queued = Event(tuple((str(k), str(v)) for k, v in pairs))
        self._apply(queued)
        if self.read is None or self._readable(queued):
            self._queue.append(queued)
            self._wake()
        return queued

    def _channel_ids(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``Uniqueid`` and ``Linkedid`` of the channel an event names, where it
        leaves them out and this fake knows the channel: Asterisk sends them with
        every channel's event, and the engine ties an event to its call by them
        (a ``queue_event("Hangup", Channel=...)`` without them ended no call)."""
        given = {k.lower(): v for k, v in pairs}
        chan = self.channels.get(given.get("channel") or "")
        if chan is None:
            return []
        added = []
        if "uniqueid" not in given and chan.uniqueid:
            added.append(("Uniqueid", chan.uniqueid))
        if "linkedid" not in given and chan.linkedid:
            added.append(("Linkedid", chan.linkedid))
        return added

    def _readable(self, event: Event) -> bool:
        classes = {c.strip().lower() for c in (event.get("Privilege") or "").split(",")}
        return classes - {"all", ""} <= (self.read or frozenset())

    def queue_events(self, events: Iterable[Mapping[str, str] | Event]) -> list[Event]:
        """Queue several events, in order."""
        return [self.queue_event(e) for e in events]

    def queue_rawman(self, data: bytes | str | os.PathLike[str]) -> list[Event]:
        """Queue the events of a recorded rawman body (bytes or a file path).

        Responses in it (a recorded ``WaitEvent``'s own ``Response``) and the
        ``WaitEventComplete`` marker are skipped: they are framing.
        """
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        out: list[Event] = []
        for message in parse_rawman(body):
            if type(message) is not Event or message.name == "WaitEventComplete":
                continue
            fields = [(k, v) for k, v in message.fields if k.lower() != "actionid"]
            if self.restamp:
                fields = [
                    (k, f"{time.time():.6f}") if k.lower() == "timestamp" else (k, v)
                    for k, v in fields
                ]
            out.append(self.queue_event(Event(fields)))
        return out

    def add_channel(
        self,
        name: str,
        *,
        context: str = "default",
        exten: str = "s",
        caller: str = "",
        caller_name: str = "",
        linkedid: str | None = None,
    ) -> FakeChannel:
        """Announce a channel (queues its ``Newchannel``); returns the fake's record."""
        uniqueid = f"{self.system_name}-{self._epoch}.{next(self._ids)}"
        self.queue_event(
            {
                "Event": "Newchannel",
                "Channel": name,
                "ChannelState": "4",
                "ChannelStateDesc": "Ring",
                "CallerIDNum": caller or "<unknown>",
                "CallerIDName": caller_name or "<unknown>",
                "ConnectedLineNum": "<unknown>",
                "ConnectedLineName": "<unknown>",
                "Language": "en",
                "AccountCode": "",
                "Context": context,
                "Exten": exten,
                "Priority": "1",
                "Uniqueid": uniqueid,
                "Linkedid": linkedid or uniqueid,
            }
        )
        return self.channels[name]

    def inbound_call(
        self,
        *,
        caller: str,
        did: str,
        caller_name: str = "",
        wait: float = 4.0,
        channel: str | None = None,
        context: str = INBOUND_CONTEXT,
        request_event: str = REQUEST_EVENT,
        announce: bool = True,
    ) -> str:
        """Play what the shipped dialplan does for one inbound call; returns the channel.

        Queues ``Newchannel``, the ``Newexten`` into ``callrouter-inbound``, the
        ``VarSet`` of ``CALLROUTER_DID`` and ``CALLROUTER_DEADLINE``, the
        ``UserEvent(CallRouterRequest)`` with ``DID``, ``Caller`` and ``Wait`` (passed
        through ``FILTER()`` as the dialplan does; the snapshot keeps them as given), and
        leaves the channel in ``Wait`` (as ``CoreShowChannels`` will show it).
        With ``announce=False`` the channel is there but its events are lost, as
        in a stream gap: only ``CoreShowChannels`` and ``Getvar`` know of it.
        """
        name = channel or f"PJSIP/trunk-{next(self._ids):08x}"
        emit = self.queue_event if announce else self._silently
        uniqueid = f"{self.system_name}-{self._epoch}.{next(self._ids)}"
        emit(
            {
                "Event": "Newchannel",
                "Channel": name,
                "ChannelState": "4",
                "ChannelStateDesc": "Ring",
                "CallerIDNum": caller,
                "CallerIDName": caller_name or "<unknown>",
                "Context": context,
                "Exten": did,
                "Priority": "1",
                "Uniqueid": uniqueid,
                "Linkedid": uniqueid,
            }
        )
        chan = self.channels[name]
        common = {
            "Channel": name,
            "Uniqueid": chan.uniqueid,
            "Linkedid": chan.linkedid,
            "CallerIDNum": caller,
            "CallerIDName": caller_name or "<unknown>",
            "Context": context,
            "Exten": did,
        }
        deadline = str(int(time.time() + wait))
        emit(
            {
                "Event": "Newexten",
                **common,
                "Priority": "1",
                "Extension": did,
                "Application": "NoOp",
                "AppData": "callrouter",
            }
        )
        for variable, value in (
            (DID_VARIABLE, _dial_filter(did, "0123456789*#+")),
            (DEADLINE_VARIABLE, deadline),
        ):
            emit(
                {
                    "Event": "VarSet",
                    "Privilege": "dialplan,all",
                    **common,
                    "Variable": variable,
                    "Value": value,
                }
            )
        emit(
            {
                "Event": "UserEvent",
                "Privilege": "user,all",
                **common,
                "Priority": "6",
                "UserEvent": request_event,
                "DID": _dial_filter(did, "0123456789*#+"),
                "Caller": _dial_filter(caller, "0123456789+"),
                "Wait": f"{wait:g}",
            }
        )
        emit(
            {
                "Event": "Newexten",
                **common,
                "Priority": "7",
                "Extension": did,
                "Application": "Wait",
                "AppData": f"{wait:g}",
            }
        )
        return name

    def _silently(self, fields: Mapping[str, str]) -> Event:
        event = Event(tuple(fields.items()))
        self._apply(event)
        return event

    def observe(self, event: Event) -> None:
        """Take ``event`` as one that already happened: the channel list follows
        it, nothing is queued for ``WaitEvent``. How the calls a test builds
        (:class:`~router.testing.CallTimeline` on a :class:`~router.testing.StubEngine`)
        become channels this fake knows."""
        self._apply(event)

    def hangup(
        self, channel: str, *, cause: str = "16", cause_txt: str = "Normal Clearing"
    ) -> None:
        """The far end hangs up ``channel``: queues its ``Hangup`` event."""
        chan = self.channels.get(channel)
        self.queue_event(
            {
                "Event": "Hangup",
                "Channel": channel,
                "Uniqueid": chan.uniqueid if chan else "",
                "Linkedid": chan.linkedid if chan else "",
                "Cause": cause,
                "Cause-txt": cause_txt,
            }
        )

    def _apply(self, event: Event) -> None:
        name = event.name
        channel = event.get("Channel") or ""
        if name == "Newchannel" and channel:
            self.channels[channel] = FakeChannel(
                channel,
                event.get("Uniqueid") or "",
                event.get("Linkedid") or "",
                context=event.get("Context") or "",
                exten=event.get("Exten") or "",
                priority=event.get("Priority") or "1",
                state=event.get("ChannelState") or "",
                state_desc=event.get("ChannelStateDesc") or "",
                caller_num=event.get("CallerIDNum") or "",
                caller_name=event.get("CallerIDName") or "",
            )
            return
        chan = self.channels.get(channel)
        if chan is None:
            if name == "VarSet" and channel in ("", "none"):
                self.globals[event.get("Variable") or ""] = event.get("Value") or ""
            return
        if name == "Hangup":
            self._leave_bridge(chan)
            del self.channels[channel]
        elif name == "BridgeEnter":
            self._leave_bridge(chan)
            chan.bridge = event.get("BridgeUniqueid") or ""
            if chan.bridge:
                self.bridges[chan.bridge] = (
                    event.get("BridgeType") or "basic",
                    event.get("BridgeTechnology") or "simple_bridge",
                )
        elif name == "BridgeLeave":
            self._leave_bridge(chan)
        elif name == "Newexten":
            chan.context = event.get("Context") or chan.context
            chan.exten = event.get("Exten") or chan.exten
            chan.priority = event.get("Priority") or chan.priority
            chan.application = event.get("Application") or ""
            chan.app_data = event.get("AppData") or ""
        elif name == "VarSet":
            chan.variables[event.get("Variable") or ""] = event.get("Value") or ""
        elif name == "Newstate":
            chan.state = event.get("ChannelState") or chan.state
            chan.state_desc = event.get("ChannelStateDesc") or chan.state_desc

    def _leave_bridge(self, chan: FakeChannel) -> None:
        """``chan`` leaves its bridge; Asterisk destroys a bridge its last channel left
        (a parking lot's or a ConfBridge's too, once empty)."""
        bridge, chan.bridge = chan.bridge, ""
        if bridge and not any(c.bridge == bridge for c in self.channels.values()):
            self.bridges.pop(bridge, None)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def idle(self) -> bool:
        """No event queued and a WaitEvent waiting: its consumer has handled all before."""
        return not self._queue and self._waiting > 0

    async def consumed(self, timeout: float = 5.0) -> None:
        """Wait until every queued event was fetched and the consumer polls again."""
        deadline = time.monotonic() + timeout
        while not self.idle:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self._queue)} events still queued after {timeout} s "
                    "(is anything polling WaitEvent?)"
                )
            await asyncio.sleep(0.005)

    async def settle(self, engine: Engine, timeout: float = 10.0) -> None:
        """Wait until ``engine`` has handled every queued event and finished the
        routing it started, including events those actions caused (``Newexten``)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.consumed(max(0.01, deadline - time.monotonic()))
            await engine.wait_idle(max(0.01, deadline - time.monotonic()))
            if self.idle:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"engine did not settle within {timeout} s")

    # -- custom answers -----------------------------------------------------------------

    def on(self, action: str, handler: ActionHandler) -> None:
        """Answer ``action`` with ``handler(sent)`` (sync or async) instead of the default.

        The handler returns the fields of a ``Response: Success`` (a mapping), a
        whole response as pairs (``[("Response", "Error"), ("Message", "...")]``),
        raw rawman bytes, a whole HTTP response (:class:`~router.ami.http.HTTPResponse`
        or an ``httpx.Response``), or None for the built-in answer. It may raise
        what a transport raises to simulate a broken connection
        (:mod:`router.ami.transport`: ``TimeoutError``,
        :class:`~router.ami.http.StaleConnectionError`, ...) or an ``httpx``
        exception, mapped as the httpx transport maps it.
        """
        self._handlers[action.lower()] = handler

    # -- HTTP -------------------------------------------------------------------------

    def _response(self, body: str | bytes, session: str | None) -> HTTPResponse:
        headers = [("Content-Type", "text/plain")]
        if session is not None:
            headers.append(
                ("Set-Cookie", f'mansession_id="{session}"; Version=1; Max-Age={self.httptimeout}')
            )
        content = body.encode("utf-8") if isinstance(body, str) else body
        return HTTPResponse(200, Headers(headers), content)

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        """The transport seam: answer one AJAM request, within ``timeout`` as a socket would."""
        async with asyncio.timeout(timeout):
            return await self._handle(request)

    async def aclose(self) -> None:
        """Nothing to close: a client's ``aclose`` leaves the fake to the other clients."""

    async def _handle(self, request: HTTPRequest) -> HTTPResponse:
        path, _, query = request.target.partition("?")
        fields = tuple(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        if not fields and query:
            fields = tuple(parse_qsl(query, keep_blank_values=True))
        cookie = request.header("cookie")
        action_name = next((v for k, v in fields if k.lower() == "action"), "")
        sent = SentAction(action_name, fields, path, cookie)
        self.actions.append(sent)
        if path != f"{self._prefix}/rawman":
            return HTTPResponse(
                404, Headers([("Content-Type", "text/html")]), b"<title>404 Not Found</title>"
            )
        session = _session_of(cookie)
        live = session if session in self._sessions else None
        low = action_name.lower()
        aid = sent.action_id
        if low == "login":
            return self._login(sent)
        if live is None:
            # As Asterisk's manager.c: an unknown cookie gets a new session, not
            # logged in, and that session's cookie comes with the refusal.
            return self._response(self._error(aid, "Permission denied"), secrets.token_hex(4))
        custom = self._handlers.get(low)
        if custom is not None:
            with httpx_errors():
                reply = custom(sent)
                if inspect.isawaitable(reply):
                    reply = await reply
            if low == "mixmonitor" and isinstance(reply, Mapping) and _succeeds(reply):
                # As Asterisk 22: the new MixMonitor's id on the channel (its i()
                # option) and in the answer, unless the handler names one.
                mixmonitor_id = self._mixmonitor_started(sent)
                if mixmonitor_id and not any(str(k).lower() == "mixmonitorid" for k in reply):
                    reply = {**reply, "MixMonitorID": mixmonitor_id}
            answer = self._custom(reply, aid, live)
            if answer is not None:
                return answer
        method = getattr(self, f"_action_{low}", None)
        if method is None:
            return self._response(
                self._error(
                    aid,
                    f"Invalid/unknown command: {action_name}. Use Action: ListCommands "
                    "to show available commands.",
                ),
                live,
            )
        if low == "waitevent":
            return self._response(await self._action_waitevent(sent), live)
        if low == "logoff":
            self._sessions.discard(live)
        body: str = method(sent)
        return self._response(body, live)

    def _custom(self, reply: object, aid: str | None, session: str) -> HTTPResponse | None:
        if reply is None:
            return None
        if isinstance(reply, HTTPResponse):
            return reply
        if isinstance(reply, httpx.Response):
            return HTTPResponse(
                reply.status_code, Headers(reply.headers.multi_items()), reply.content
            )
        if isinstance(reply, bytes):
            return self._response(reply, session)
        if isinstance(reply, Mapping):
            pairs = [(str(k), str(v)) for k, v in reply.items()]
            if not any(k.lower() == "response" for k, _ in pairs):
                pairs.insert(0, ("Response", "Success"))
            return self._response(self._with_id(pairs, aid), session)
        if isinstance(reply, list):
            return self._response(self._with_id([(str(k), str(v)) for k, v in reply], aid), session)
        raise TypeError(f"an on() handler returned {type(reply).__name__}")

    @staticmethod
    def _with_id(pairs: list[tuple[str, str]], aid: str | None) -> str:
        if aid is not None and not any(k.lower() == "actionid" for k, _ in pairs):
            pairs = [pairs[0], ("ActionID", aid), *pairs[1:]]
        return _block(pairs)

    def _ok(self, aid: str | None, *pairs: tuple[str, str]) -> str:
        return self._with_id([("Response", "Success"), *pairs], aid)

    def _error(self, aid: str | None, message: str) -> str:
        return self._with_id([("Response", "Error"), ("Message", message)], aid)

    def _login(self, sent: SentAction) -> HTTPResponse:
        if sent.get("Username") != self.username or sent.get("Secret") != self.secret:
            return self._response(self._error(sent.action_id, "Authentication failed"), None)
        session = secrets.token_hex(4)
        self._sessions.add(session)
        return self._response(
            self._ok(sent.action_id, ("Message", "Authentication accepted")), session
        )

    # One method per action: the name after ``_action_`` is the action, lower-case.

    def _action_logoff(self, sent: SentAction) -> str:
        return self._with_id(
            [("Response", "Goodbye"), ("Message", "Thanks for all the fish.")], sent.action_id
        )

    def _action_ping(self, sent: SentAction) -> str:
        return self._ok(sent.action_id, ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}"))

    def _action_events(self, sent: SentAction) -> str:
        # As Asterisk 22: any mask but "off" (or one of unknown classes) is "On".
        mask = (sent.get("EventMask") or "").strip().lower()
        return self._ok(sent.action_id, ("Events", "Off" if mask in ("", "off") else "On"))

    def _action_filter(self, sent: SentAction) -> str:
        # Accepted and recorded (``sent("Filter")``); the fake's events are not filtered.
        return self._ok(sent.action_id, ("Message", "Success"))

    def _action_setvar(self, sent: SentAction) -> str:
        variable = sent.get("Variable") or ""
        if not variable:
            return self._error(sent.action_id, "No variable specified")
        value = sent.get("Value") or ""
        channel = sent.get("Channel")
        if channel:
            chan = self.channels.get(channel)
            if chan is None:
                return self._error(sent.action_id, "No such channel")
            chan.variables[variable] = value
        else:
            self.globals[variable] = value
        return self._ok(sent.action_id, ("Message", "Variable Set"))

    def _action_getvar(self, sent: SentAction) -> str:
        variable = sent.get("Variable") or ""
        if not variable:
            return self._error(sent.action_id, "No variable specified")
        channel = sent.get("Channel")
        if channel:
            chan = self.channels.get(channel)
            if chan is None:
                return self._error(sent.action_id, "No such channel")
            value = chan.variables.get(variable, "")
            if variable == "CHANNEL(state)" and not value:  # as Asterisk: the state now
                value = chan.state_desc
        else:
            value = self.globals.get(variable, "")
        return self._ok(sent.action_id, ("Variable", variable), ("Value", value))

    def _mixmonitor_started(self, sent: SentAction) -> str | None:
        """As app_mixmonitor's ``i(<variable>)``: the new MixMonitor's id on the channel
        (Asterisk 22 answers the AMI action with it too, as ``MixMonitorID``); None
        without the option."""
        found = re.search(r"(?:^|\))i\(([^)]*)\)", sent.get("Options") or "")
        if not found:
            return None
        chan = self.channels.get(sent.get("Channel") or "")
        mixmonitor_id = f"mixmonitor-{secrets.token_hex(4)}"
        if chan is not None:
            chan.variables[found.group(1)] = mixmonitor_id
        return mixmonitor_id

    def _action_redirect(self, sent: SentAction) -> str:
        channel = sent.get("Channel") or ""
        if not channel:
            return self._error(sent.action_id, "Channel not specified")
        chan = self.channels.get(channel)
        if chan is None:
            return self._error(sent.action_id, f"Channel does not exist: {channel}")
        context = sent.get("Context") or chan.context
        hops = [(context, sent.get("Exten") or chan.exten, sent.get("Priority") or "1", "NoOp")]
        if context == RECORD_CONTEXT:
            # As the shipped [callrouter-record]: MixMonitor (its i() option stores
            # its id), then on to CALLROUTER_NEXT.
            hops[0] = (*hops[0][:3], "MixMonitor")
            chan.variables[MIXMONITOR_ID_VARIABLE] = f"mixmonitor-{chan.uniqueid}"
            target = chan.variables.get(NEXT_VARIABLE, "").split(PART_SEPARATOR)
            if len(target) == 3 and all(target):
                hops.append((target[0], target[1], target[2], "NoOp"))
        for context, exten, priority, application in hops if self.auto_confirm else ():
            self.queue_event(
                {
                    "Event": "Newexten",
                    "Privilege": "dialplan,all",
                    "Channel": channel,
                    "ChannelState": chan.state,
                    "ChannelStateDesc": chan.state_desc,
                    "CallerIDNum": chan.caller_num,
                    "CallerIDName": chan.caller_name,
                    "Context": context,
                    "Exten": exten,
                    "Priority": priority,
                    "Uniqueid": chan.uniqueid,
                    "Linkedid": chan.linkedid,
                    "Extension": exten,
                    "Application": application,
                    "AppData": "",
                }
            )
        return self._ok(sent.action_id, ("Message", "Redirect successful"))

    def _action_hangup(self, sent: SentAction) -> str:
        channel = sent.get("Channel") or ""
        if not channel:
            return self._error(sent.action_id, "No channel specified")
        if channel not in self.channels:
            return self._error(sent.action_id, "No such channel")
        if self.auto_confirm:
            cause = sent.get("Cause") or "16"
            self.hangup(channel, cause=cause, cause_txt="Normal Clearing" if cause == "16" else "")
        return self._ok(sent.action_id, ("Message", "Channel Hungup"))

    def _action_originate(self, sent: SentAction) -> str:
        if not sent.get("Channel"):
            return self._error(sent.action_id, "Channel not specified")
        if not (sent.get("Application") or (sent.get("Context") and sent.get("Exten"))):
            return self._error(sent.action_id, "Application or Exten/Context not specified")
        return self._ok(sent.action_id, ("Message", "Originate successfully queued"))

    def _action_userevent(self, sent: SentAction) -> str:
        name = sent.get("UserEvent") or ""
        if not name:
            return self._error(sent.action_id, "UserEvent not specified")
        extra = [
            (k, v) for k, v in sent.fields if k.lower() not in ("action", "actionid", "userevent")
        ]
        self.queue_event(
            {"Event": "UserEvent", "Privilege": "user,all", "UserEvent": name, **dict(extra)}
        )
        return self._ok(sent.action_id, ("Message", "Event Sent"))

    def _action_showdialplan(self, sent: SentAction) -> str:
        """The shipped snippet's ``callrouter-inbound`` (and its other
        ``callrouter-*`` contexts) as loaded; any other context exists with
        any extension, as on a PBX whose dialplan has every rule's target
        (``on("ShowDialPlan", ...)`` plays one that lacks some)."""
        from router.testing.asterisk import dialplan_steps, shipped_dialplan

        aid = sent.action_id or ""
        context = sent.get("Context") or ""
        exten = sent.get("Extension")
        if context.startswith("callrouter-"):
            items = dialplan_steps(shipped_dialplan(), context)
            if not items:
                return self._error(aid, f"Did not find context {context}")
            if exten is not None and exten not in {i["Extension"] for i in items}:
                return self._error(aid, f"Did not find extension {exten}@{context}")
        elif context:
            # One pattern step that matches any extension, as Asterisk lists it.
            items = [
                {
                    "Event": "ListDialplan",
                    "Context": context,
                    "Extension": "_.",
                    "Priority": "1",
                    "Application": "NoOp",
                    "AppData": "",
                    "Registrar": "pbx_config",
                }
            ]
        else:
            items = []
        blocks = [
            self._with_id(
                [
                    ("Response", "Success"),
                    ("EventList", "start"),
                    ("Message", "DialPlan list will follow"),
                ],
                aid,
            )
        ]
        blocks.extend(_block([*item.items(), ("ActionID", aid)]) for item in items)
        blocks.append(
            _block(
                [
                    ("Event", "ShowDialPlanComplete"),
                    ("EventList", "Complete"),
                    ("ListItems", str(len(items))),
                    ("ListExtensions", str(len({i["Extension"] for i in items}))),
                    ("ListPriorities", str(len(items))),
                    ("ListContexts", "1" if items else "0"),
                    ("ActionID", aid),
                ]
            )
        )
        return "".join(blocks)

    def _action_extensionstate(self, sent: SentAction) -> str:
        return self._ok(
            sent.action_id,
            ("Message", "Extension Status"),
            ("Exten", sent.get("Exten") or ""),
            ("Context", sent.get("Context") or ""),
            ("Hint", ""),
            ("Status", "-1"),
            ("StatusText", "Unknown"),
        )

    def _action_coreshowchannels(self, sent: SentAction) -> str:
        aid = sent.action_id or ""
        blocks = [
            self._with_id(
                [
                    ("Response", "Success"),
                    ("EventList", "start"),
                    ("Message", "Channels will follow"),
                ],
                aid,
            )
        ]
        now = time.monotonic()
        for chan in self.channels.values():
            seconds = int(now - chan.created)
            blocks.append(
                _block(
                    [
                        ("Event", "CoreShowChannel"),
                        ("ActionID", aid),
                        ("Channel", chan.name),
                        ("ChannelState", chan.state),
                        ("ChannelStateDesc", chan.state_desc),
                        ("CallerIDNum", chan.caller_num or "<unknown>"),
                        ("CallerIDName", chan.caller_name or "<unknown>"),
                        ("ConnectedLineNum", "<unknown>"),
                        ("ConnectedLineName", "<unknown>"),
                        ("Language", "en"),
                        ("AccountCode", ""),
                        ("Context", chan.context),
                        ("Exten", chan.exten),
                        ("Priority", chan.priority),
                        ("Uniqueid", chan.uniqueid),
                        ("Linkedid", chan.linkedid),
                        ("Application", chan.application),
                        ("ApplicationData", chan.app_data),
                        (
                            "Duration",
                            f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}",
                        ),
                        ("BridgeId", chan.bridge),
                    ]
                )
            )
        blocks.append(
            _block(
                [
                    ("Event", "CoreShowChannelsComplete"),
                    ("ActionID", aid),
                    ("EventList", "Complete"),
                    ("ListItems", str(len(self.channels))),
                ]
            )
        )
        return "".join(blocks)

    def _action_bridgelist(self, sent: SentAction) -> str:
        aid = sent.action_id or ""
        wanted = (sent.get("BridgeType") or "").lower()
        listed = [
            (bridge, kind, technology)
            for bridge, (kind, technology) in self.bridges.items()
            if not wanted or kind.lower() == wanted
        ]
        blocks = [
            self._with_id(
                [
                    ("Response", "Success"),
                    ("EventList", "start"),
                    ("Message", "Bridge listing will follow"),
                ],
                aid,
            )
        ]
        for bridge, kind, technology in listed:
            blocks.append(
                _block(
                    [
                        ("Event", "BridgeListItem"),
                        ("ActionID", aid),
                        ("BridgeUniqueid", bridge),
                        ("BridgeType", kind),
                        ("BridgeTechnology", technology),
                        ("BridgeCreator", "<unknown>"),
                        ("BridgeName", "<unknown>"),
                        (
                            "BridgeNumChannels",
                            str(sum(c.bridge == bridge for c in self.channels.values())),
                        ),
                        ("BridgeVideoSourceMode", "none"),
                    ]
                )
            )
        blocks.append(
            _block(
                [
                    ("Event", "BridgeListComplete"),
                    ("ActionID", aid),
                    ("EventList", "Complete"),
                    ("ListItems", str(len(listed))),
                ]
            )
        )
        return "".join(blocks)

    async def _action_waitevent(self, sent: SentAction) -> str:
        try:
            timeout = float(sent.get("Timeout") or "30")
        except ValueError:
            timeout = 30.0
        if self.max_wait is not None:
            timeout = min(timeout, self.max_wait)
        deadline = time.monotonic() + timeout
        self._waiting += 1
        try:
            while not self._queue:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup = asyncio.Event()
                # Not wait_for: a cancellation (the client stopping) in the
                # step an event came in was swallowed, the answer went out, and
                # the client polled again, a stop held up by a whole WaitEvent.
                if not await wait_set(self._wakeup, remaining):
                    break
        finally:
            self._waiting -= 1
        events, self._queue = self._queue, []
        aid = sent.action_id
        parts = [self._ok(aid, ("Message", "Waiting for Event completed."))]
        now = f"{time.time():.6f}"
        for event in events:
            pairs = [
                (k, now) if self.restamp and k.lower() == "timestamp" else (k, v)
                for k, v in event.fields
            ]
            parts.append(_block(pairs))
        parts.append(self._with_id([("Event", "WaitEventComplete")], aid))
        return "".join(parts)


def _dial_filter(value: str, allowed: str) -> str:
    """Asterisk's ``FILTER(allowed,value)``: keep only the allowed characters."""
    return "".join(ch for ch in value if ch in allowed)


def _succeeds(reply: Mapping[Any, Any]) -> bool:
    """Does an on() handler's mapping answer ``Response: Success`` (its default)?"""
    response = next((v for k, v in reply.items() if str(k).lower() == "response"), "Success")
    return str(response).lower() == "success"


def _session_of(cookie: str | None) -> str | None:
    for part in (cookie or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "mansession_id":
            return value.strip('"')
    return None
