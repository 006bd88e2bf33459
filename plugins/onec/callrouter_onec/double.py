"""A faithful stand-in for the 1C telephony HTTP service, for tests and the demo.

1C cannot run on our machines, so this server implements the contract from a
data file and reproduces 1C's real failure modes on demand (:mod:`.faults`).
It is a real HTTP/1.1 server with keep-alive, so the client is tested through
its actual pool, timeouts and byte handling rather than a mock.

In process::

    with OneCDouble(password="secret") as double:   # free loopback port
        double.url                                  # http://127.0.0.1:PORT/demo/hs/telephony
        double.faults.add("500", count=2)           # the next two requests fail
        double.faults.add("latency=3", phone="79161234567", count=None)
        double.down = True                          # close every connection unanswered
        double.stop(); double.start()               # refuse, then listen again on the same port
        double.requests("/v1/responsible/")         # what the service received
        double.event_book.receipts                  # call events, duplicates included
        print(double.story_text("1714557600.42"))   # one call's whole story, as 1C has it

Standalone: ``callrouter-onec-double --port 8081`` (``--help`` lists the knobs);
``python -m callrouter_onec.double story <call_id> --url http://127.0.0.1:8081``
prints one call's story from a running double.
Control endpoints (no auth; bind to loopback): ``GET /_double/log``,
``DELETE /_double/log``, ``GET|POST /_double/faults``, ``POST /_double/reset``,
``POST /_double/sessions/expire``, ``GET /_double/events``,
``GET /_double/story?call_id=...``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from urllib.request import urlopen

from callrouter_onec.directory import Directory, EventBook, EventError, load_directory
from callrouter_onec.faults import (
    EVENT_REFUSED,
    FAULTS,
    TRICKLE_DELAY,
    FaultPlan,
    Selected,
    decorate,
    huge_body,
    render,
)
from callrouter_onec.recording_box import Cut, RecordingBox

__all__ = [
    "DEFAULT_BASE_PATH",
    "DEFAULT_USER",
    "LoggedRequest",
    "OneCDouble",
    "build_parser",
    "format_story",
    "main",
    "story_parser",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_PATH = "/demo/hs/telephony"
DEFAULT_USER = "Маршрутизатор"
DEFAULT_PASSWORD = "demo"
REALM = 'Basic realm="1C:Enterprise 8.3"'
CONTROL = "/_double/"
#: The largest request body the double reads (Apache's LimitRequestBody, scaled to the
#: contract: events are under 2 KiB, recording chunks 1 MiB); more is 413.
MAX_REQUEST_BODY = 16 << 20
#: Seconds a client has to finish the TLS handshake, as the router's API gives
#: (:data:`router.api.handshake.HANDSHAKE_DEADLINE`); then the connection is cut.
HANDSHAKE_DEADLINE = 10.0


@dataclass
class LoggedRequest:
    """One request as the double received it; ``status`` is ``None`` when it got no answer."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str
    time: float
    status: int | None = None
    fault: str | None = None
    #: The client's ``host:port``: one value across requests means one kept-alive connection.
    peer: str = ""

    def json(self) -> Any:
        """The request body as JSON (for POSTed events)."""
        return json.loads(self.body)

    def as_dict(self) -> dict[str, Any]:
        """The request as ``GET /_double/log`` serves it: its credentials
        (``Authorization``) are shown as their scheme only, since the control
        endpoints have no auth; :attr:`OneCDouble.log` keeps them whole for tests."""
        data = asdict(self)
        auth = data["headers"].get("authorization")
        if auth is not None:
            scheme = auth.split(" ", 1)[0] if " " in auth else ""
            data["headers"]["authorization"] = f"{scheme} (hidden)".strip()
        return data


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Written after the headers without Content-Length, until the peer hangs up.
    stream: Iterator[bytes] | None = None
    #: Seconds between the body's bytes (the ``trickle`` fault); 0: all at once.
    trickle: float = 0.0


class _Drop(Exception):
    """Leave the connection without an answer (``reset`` sends a TCP RST)."""

    def __init__(self, reset: bool) -> None:
        self.reset = reset


def _json(status: int, obj: object) -> _Reply:
    try:
        return _Reply(status, json.dumps(obj, ensure_ascii=False).encode())
    except UnicodeEncodeError:  # a lone surrogate in hostile test data: as an escape
        return _Reply(status, json.dumps(obj).encode())


def _error(status: int, code: str, message: str) -> _Reply:
    return _json(status, {"error": {"code": code, "message": message}})


def _text(status: int, text: str) -> _Reply:
    return _Reply(status, text.encode(), "text/plain; charset=utf-8")


class OneCDouble:
    """The double's state and server; every knob is safe to turn while it serves."""

    def __init__(
        self,
        data: Directory | str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = DEFAULT_BASE_PATH,
        username: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        ibsession: bool = False,
        session_max_age: float = 20.0,
        stale_session_status: int = 400,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.directory = data if isinstance(data, Directory) else load_directory(data)
        self.host = host
        self.port = port
        self.base_path = "/" + base_path.strip("/")
        self.username = username
        self.password = password
        self.ibsession = ibsession
        self.session_max_age = session_max_age
        self.stale_session_status = stale_session_status
        #: A server-side context: serve HTTPS (a 1C publication behind a company CA).
        self.tls = tls
        self.faults = FaultPlan()
        self.down = False
        self.event_book = EventBook()
        #: Recordings uploaded (issue 15): ``recordings.stored``, ``recordings.outage()``.
        self.recordings = RecordingBox()
        self.sessions_started = 0
        self._sessions: dict[str, float] = {}
        self._log: list[LoggedRequest] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> OneCDouble:
        """Listen (again) on ``port``; port 0 picks a free one, kept for later restarts."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.double = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"onec-double:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections: clients now get "connection refused"."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OneCDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The service base, what the client's ``base_url`` should be."""
        return self.root_url + self.base_path

    # -- observation -----------------------------------------------------------------

    @property
    def log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def requests(self, path: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        """Requests to the service (control requests excluded) whose path contains ``path``."""
        return [
            r
            for r in self.log
            if (path is None or path in r.path) and (method is None or r.method == method)
        ]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def story(self, call_id: str) -> list[dict[str, Any]]:
        """One call's events as 1C stored them (first copies), then the missed calls it closed."""
        with self._lock:
            return [dict(p) for p in self.event_book.story(call_id)]

    def story_text(self, call_id: str) -> str:
        """:meth:`story` as the lines the demo and ``double story`` print."""
        return format_story(call_id, self.story(call_id))

    def expire_sessions(self) -> None:
        """Forget every IBSession, as 1C does after ``sessionMaxAge`` of idleness."""
        with self._lock:
            self._sessions.clear()

    def reset(self) -> None:
        """Back to a fresh double: no faults, no log, no events, no sessions, up."""
        self.faults.clear()
        self.down = False
        with self._lock:
            self._log.clear()
            self._sessions.clear()
            self.event_book = EventBook()
            self.sessions_started = 0
        self.recordings.reset()

    # -- request handling (handler threads) ---------------------------------------------

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes, entry: LoggedRequest
    ) -> _Reply:
        """The whole 1C side of one request, faults included; raises :class:`_Drop`."""
        path = unquote(urlsplit(target).path)
        phone = self._phone_of(path)
        selected = self.faults.select(headers.get("x-double-fault"), path, phone)
        entry.fault = selected.name
        if self.down or selected.kind == "close":
            entry.fault = "close"
            raise _Drop(reset=False)
        if selected.latency:
            self._sleep(selected.latency)
        if selected.kind == "reset":
            raise _Drop(reset=True)
        if not (path == self.base_path or path.startswith(self.base_path + "/")):
            return _Reply(404, _not_found(path), "text/html; charset=iso-8859-1")
        proxy = self._fault_reply(selected) if selected.kind in ("502", "503", "504") else None
        if proxy is not None:  # the proxy answers before 1C ever sees the request
            return proxy
        if selected.kind == "401" or not self._authorized(headers.get("authorization")):
            return _Reply(401, b"", "text/plain", [("WWW-Authenticate", REALM)])
        extra: list[tuple[str, str]] = []
        if self.ibsession:
            stale = self._session(headers, extra)
            if stale is not None:
                return stale
        fault = self._fault_reply(selected)
        if selected.kind == "event400" and path == self.base_path + "/v1/calls/events":
            fault = _error(400, "invalid_event", EVENT_REFUSED)
        if fault is not None:
            fault.headers += extra
            return fault
        try:
            box = self.recordings.route(method, path[len(self.base_path) :], headers, body)
        except Cut:
            entry.fault = "reset"
            raise _Drop(reset=True) from None
        if box is not None:
            reply = _json(*box)
        else:
            reply = self._route(method, path[len(self.base_path) :], target, body)
        reply.headers += extra
        if 200 <= reply.status < 300:
            reply.body = decorate(selected.kind, reply.body)
            if selected.kind == "huge":
                reply.stream = huge_body()
            elif selected.kind == "trickle":
                reply.trickle = TRICKLE_DELAY
        return reply

    def _phone_of(self, path: str) -> str | None:
        prefix = self.base_path + "/v1/responsible/"
        return path[len(prefix) :] if path.startswith(prefix) else None

    @staticmethod
    def _fault_reply(selected: Selected) -> _Reply | None:
        rendered = render(selected.kind) if selected.kind else None
        if rendered is None:
            return None
        status, content_type, body = rendered
        return _Reply(status, body, content_type)

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.username and password == self.password

    def _session(self, headers: dict[str, str], extra: list[tuple[str, str]]) -> _Reply | None:
        """IBSession (``reuseSessions="use"``): start, keep, finish, or refuse a stale cookie."""
        command = headers.get("ibsession", "").strip().lower()
        cookie = _cookie(headers.get("cookie"), "ibsession")
        now = time.monotonic()
        with self._lock:
            for sid, used in list(self._sessions.items()):
                if now - used > self.session_max_age:
                    del self._sessions[sid]
            if command == "start":
                sid = uuid.uuid4().hex
                self._sessions[sid] = now
                self.sessions_started += 1
                extra.append(("Set-Cookie", f"ibsession={sid}; Path={self.base_path}"))
                return None
            if cookie is None:
                return None  # without a session 1C runs the call in a fresh one
            if cookie not in self._sessions:
                return _text(self.stale_session_status, "Сеанс не найден или завершён")
            if command == "finish":
                del self._sessions[cookie]
                extra.append(("Set-Cookie", f"ibsession=; Max-Age=0; Path={self.base_path}"))
            else:
                self._sessions[cookie] = now
        return None

    def _route(self, method: str, template: str, target: str, body: bytes) -> _Reply:
        query = dict(parse_qsl(urlsplit(target).query))
        if template.startswith("/v1/responsible/") and template.count("/") == 3:
            if method != "GET":
                return _Reply(405, b"", "text/plain", [("Allow", "GET")])
            return self._responsible(template.rsplit("/", 1)[1], query)
        if template == "/v1/calls/events":
            if method != "POST":
                return _Reply(405, b"", "text/plain", [("Allow", "POST")])
            with self._lock:
                try:
                    receipt = self.event_book.register(body)
                except EventError as exc:
                    return _error(400, exc.code, str(exc))
            return _json(200, {"result": "ok", "id": receipt.id, "duplicate": receipt.duplicate})
        if template == "/v1/ping":
            if method != "GET":
                return _Reply(405, b"", "text/plain", [("Allow", "GET")])
            now = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
            return _json(200, {"result": "ok", "version": "1.0", "time": now})
        return _text(404, "Не найден шаблон URL: " + template)

    def _responsible(self, phone: str, query: dict[str, str]) -> _Reply:
        if not (phone.isascii() and phone.isdigit() and 10 <= len(phone) <= 15):
            return _error(400, "invalid_phone", f"Номер должен содержать от 10 до 15 цифр: {phone}")
        did = query.get("did")
        if did is not None and not (did.isascii() and did.isdigit()):
            return _error(400, "invalid_parameter", f"Параметр did должен быть числом: {did}")
        return _json(200, self.directory.responsible(phone))

    # -- control endpoints --------------------------------------------------------------

    def control(self, method: str, target: str, body: bytes) -> _Reply:
        """Test-only endpoints; never logged, never faulted, answered even when down."""
        parts = urlsplit(target)
        name = parts.path[len(CONTROL) :].rstrip("/")
        query = dict(parse_qsl(parts.query))
        try:
            payload = json.loads(body.decode("utf-8-sig")) if body.strip() else {}
        except ValueError:
            return _error(400, "invalid_json", "control body is not JSON")
        if not isinstance(payload, dict):
            return _error(400, "invalid_json", "control body must be an object")
        try:
            return self._control(method, name, query, payload)
        except (ValueError, TypeError) as exc:
            return _error(400, "invalid_parameter", str(exc))

    def _control(
        self, method: str, name: str, query: dict[str, str], payload: dict[str, Any]
    ) -> _Reply:
        recordings = self.recordings.control(method, name, payload)
        if recordings is not None:
            return _json(*recordings)
        if name == "log" and method == "GET":
            found = self.requests(query.get("path"), query.get("method"))
            return _json(200, {"requests": [r.as_dict() for r in found]})
        if name == "log" and method == "DELETE":
            self.clear_log()
            return _json(200, {"result": "ok"})
        if name == "faults" and method == "POST":
            if "global" in payload:
                self.faults.set_global(str(payload["global"] or ""))
            if "down" in payload:
                self.down = bool(payload["down"])
            if payload.get("faults"):
                self.faults.add(
                    str(payload["faults"]),
                    count=payload.get("count", 1),
                    phone=payload.get("phone"),
                    path=payload.get("path"),
                )
            return _json(200, {**self.faults.as_dict(), "down": self.down})
        if name == "faults" and method == "GET":
            return _json(200, {**self.faults.as_dict(), "down": self.down, "known": FAULTS})
        if name == "faults" and method == "DELETE":
            # Clears what POST set here, ``down`` included: a double left refusing
            # every request after "clear" looks like a client bug.
            self.faults.clear()
            self.down = False
            return _json(200, {**self.faults.as_dict(), "down": self.down})
        if name == "reset" and method == "POST":
            self.reset()
            return _json(200, {"result": "ok"})
        if name == "sessions/expire" and method == "POST":
            self.expire_sessions()
            return _json(200, {"result": "ok"})
        if name == "events" and method == "GET":
            with self._lock:
                receipts = list(self.event_book.receipts)
            return _json(
                200,
                {
                    "events": [
                        {"id": r.id, "duplicate": r.duplicate, "payload": r.payload}
                        for r in receipts
                    ]
                },
            )
        if name == "story" and method == "GET":
            call_id = query.get("call_id", "")
            if not call_id:
                raise ValueError("give ?call_id=<the call's id>")
            return _json(200, {"call_id": call_id, "events": self.story(call_id)})
        return _text(404, f"no control endpoint {method} {CONTROL}{name}")


def _when(payload: Mapping[str, Any]) -> str:
    ts = payload.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return time.strftime("%H:%M:%S", time.localtime(ts))
    return "--:--:--"


def _story_line(payload: Mapping[str, Any], call_id: str) -> str:
    kind = str(payload.get("event"))
    ext = payload.get("extension")
    parts = [_when(payload), f"{kind:<13}"]
    if kind == "missed_closed":
        if payload.get("call_id") == call_id:
            parts.append(f"closed by call {payload.get('closed_by')}")
        else:  # the story of the call that reached the customer
            parts.append(f"this call closes missed call {payload.get('call_id')}")
        if ext:
            parts.append(f"(extension {ext} reached the customer)")
    elif kind == "transferred":
        transfer = payload.get("transfer") or {}
        source, target = transfer.get("from") or "?", transfer.get("to") or "?"
        parts.append(f"{transfer.get('kind', '?')}: {source} -> {target}")
    else:
        if ext:
            parts.append(f"ext {ext}")
        if kind in ("hangup", "missed"):
            parts.append(f"status {payload.get('status')}")
            if payload.get("talk_seconds") is not None:
                parts.append(f"talk {float(payload['talk_seconds']):.1f} s")
            if payload.get("hangup_by"):
                parts.append(f"hung up by {payload['hangup_by']}")
        owner = payload.get("owner")
        if kind == "missed":
            who = (owner or {}).get("extension") or (owner or {}).get("manager_id")
            parts.append(f"owner {who}" if who else "no owner")
    if payload.get("replayed"):
        parts.append("[replayed]")
    return "  ".join(parts)


def format_story(call_id: str, events: Sequence[Mapping[str, Any]]) -> str:
    """One call's story, a line per event: what the demo and ``double story`` print."""
    if not events:
        return f"call {call_id}: 1C has no events"
    first = events[0]
    head = (
        f"call {call_id} ({first.get('direction')}, {first.get('from')} -> {first.get('to')}"
        + (f", manager {first['manager_id']}" if first.get("manager_id") else "")
        + ")"
    )
    return "\n".join([head, *("  " + _story_line(p, call_id) for p in events)])


def story_parser() -> argparse.ArgumentParser:
    """The command line of ``callrouter-onec-double story`` (the docs' examples
    are parsed with it in the tests)."""
    parser = argparse.ArgumentParser(
        prog="callrouter-onec-double story",
        description="Print one call's whole story as a running 1C double stored it.",
    )
    parser.add_argument("call_id")
    parser.add_argument(
        "--url", default="http://127.0.0.1:8081", help="the double's root (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the events as JSON")
    return parser


def story_main(argv: Sequence[str]) -> int:
    """``python -m callrouter_onec.double story <call_id>``: ask a running double."""
    args = story_parser().parse_args(argv)
    query = urlencode({"call_id": args.call_id})
    try:
        with urlopen(f"{args.url.rstrip('/')}{CONTROL}story?{query}", timeout=5) as reply:
            found = json.loads(reply.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        print(f"callrouter-onec-double story: cannot ask {args.url}: {exc}", file=sys.stderr)
        return 1
    events = found.get("events", [])
    if args.json:
        print(json.dumps(events, ensure_ascii=False, indent=2))
    else:
        print(format_story(args.call_id, events))
    return 0


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def _not_found(path: str) -> bytes:
    return (
        '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        "<title>404 Not Found</title>\n</head><body>\n<h1>Not Found</h1>\n"
        f"<p>The requested URL {path} was not found on this server.</p>\n"
        "</body></html>\n"
    ).encode("utf-8", errors="replace")


class _Server(ThreadingHTTPServer):
    """Tracks connections so that :meth:`OneCDouble.stop` can cut keep-alive ones."""

    daemon_threads = True
    allow_reuse_address = True
    double: OneCDouble

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.active: set[socket.socket] = set()
        self.to_reset: set[socket.socket] = set()
        self.guard = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; with TLS, the handshake waits for the connection's own thread
        (:meth:`finish_request`): done here, one silent client stopped every other."""
        sock, address = self.socket.accept()
        tls = self.double.tls
        if tls is not None:
            sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.guard:
            self.active.add(request)
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            # One deadline for the whole handshake (CPython's timeout covers
            # every step of it), so a client sending nothing, or a byte at a
            # time, frees its thread; the handler's own timeout follows.
            request.settimeout(HANDSHAKE_DEADLINE)
            try:
                request.do_handshake()
            except OSError as exc:  # ssl.SSLError and TimeoutError included
                log.debug("1C double: TLS handshake with %s failed: %r", client_address, exc)
                return
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.guard:
            self.active.discard(request)
            reset = request in self.to_reset
            self.to_reset.discard(request)
        if reset:  # no FIN first: the peer must see a reset, not a clean close
            request.close()
        else:
            super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.guard:
            active = list(self.active)
        for sock in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("1C double: error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache/2.4.57 (Win64)"
    sys_version = ""
    timeout = 60

    @property
    def _double(self) -> OneCDouble:
        return cast(_Server, self.server).double

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("1C double: " + format, *args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        double = self._double
        declared = (self.headers.get("Content-Length") or "0").strip()
        refused: _Reply | None = None
        if not (declared.isascii() and declared.isdigit()):
            # As Apache: a length that is not a number is the client's error, and the
            # bytes after it cannot be framed, so the connection ends with the answer.
            refused = _text(400, "Bad Request: Content-Length is not a number")
        elif int(declared) > MAX_REQUEST_BODY:
            refused = _text(413, f"Request Entity Too Large: over {MAX_REQUEST_BODY} bytes")
        length = int(declared) if refused is None else 0
        body = self.rfile.read(length) if length > 0 else b""
        if urlsplit(self.path).path.startswith(CONTROL):  # never logged
            if refused is not None:
                self.close_connection = True
            self._write(refused or double.control(self.command, self.path, body))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urlsplit(self.path)
        entry = LoggedRequest(
            self.command,
            unquote(parts.path),
            dict(parse_qsl(parts.query)),
            headers,
            body.decode("utf-8", errors="replace"),
            time.time(),
            peer="{}:{}".format(*self.client_address[:2]),
        )
        double._record(entry)
        if refused is not None:  # the web server's answer: logged, never seen by "1C"
            self.close_connection = True
            entry.status = refused.status
            self._write(refused)
            return
        try:
            reply = double.handle(self.command, self.path, headers, body, entry)
        except _Drop as drop:
            self.close_connection = True
            if drop.reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                server = cast(_Server, self.server)
                with server.guard:
                    server.to_reset.add(self.connection)
            return
        entry.status = reply.status
        self._write(reply)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus the
        # peer's delayed ACK add ~40 ms to every answer and distort latency tests.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if reply.stream is not None:  # read-until-close framing: no length, then close
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            with contextlib.suppress(OSError):
                for chunk in reply.stream:
                    if self._double._stopping.is_set():
                        break
                    self.wfile.write(chunk)
            return
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.trickle:
            with contextlib.suppress(OSError):  # the client gave up: its timeout worked
                for i in range(len(reply.body)):
                    if self._double._stopping.is_set():
                        self.close_connection = True
                        return
                    self.wfile.write(reply.body[i : i + 1])
                    self._double._sleep(reply.trickle)
            return
        self.wfile.write(reply.body)

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # peer or stop() closed the socket
            super().finish()


def _loopback(host: str) -> bool:
    """Is ``host`` a loopback address or ``localhost``?"""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``callrouter-onec-double`` (``story`` has its own:
    :func:`story_parser`); the docs' examples are parsed with it in the tests."""
    parser = argparse.ArgumentParser(
        prog="callrouter-onec-double",
        description="A test double of the 1C telephony HTTP service "
        "(see docs/onec.md, The service contract).",
        epilog="Faults: " + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--data", type=Path, help="data file (default: the shipped demo.json)")
    parser.add_argument("--base-path", default=DEFAULT_BASE_PATH)
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument(
        "--password",
        default=os.environ.get("ONEC_DOUBLE_PASSWORD", DEFAULT_PASSWORD),
        help="default: $ONEC_DOUBLE_PASSWORD or 'demo'",
    )
    parser.add_argument(
        "--ibsession", action="store_true", help='behave like reuseSessions="use" (cookie sessions)'
    )
    parser.add_argument("--session-max-age", type=float, default=20.0)
    parser.add_argument("--fault", default="", help="global faults, e.g. 'latency=0.3,bom'")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``callrouter-onec-double``: serve the double until interrupted (or ``story``)."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["story"]:
        return story_main(given[1:])
    parser = build_parser()
    args = parser.parse_args(given)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s"
    )
    try:
        double = OneCDouble(
            args.data,
            host=args.host,
            port=args.port,
            base_path=args.base_path,
            username=args.user,
            password=args.password,
            ibsession=args.ibsession,
            session_max_age=args.session_max_age,
        )
        double.faults.set_global(args.fault)
    except (OSError, ValueError, KeyError) as exc:
        parser.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        double.start()
    except OSError as exc:
        print(
            f"callrouter-onec-double: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"1C double listening on {double.url} (user {double.username!r})", flush=True)
    # What every request gets: a forgotten --fault in a script otherwise looks like a broken 1C.
    print(f"global faults: {double.faults.as_dict()['global'] or 'none'}", flush=True)
    if not _loopback(args.host):
        print(
            f"callrouter-onec-double: warning: --host {args.host} is reachable from other "
            "hosts, and the control endpoints (/_double/...: faults, reset, the request "
            "log) take no password; bind it to 127.0.0.1 unless this is a closed test network",
            file=sys.stderr,
            flush=True,
        )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
