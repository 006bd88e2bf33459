"""Route latency on the sandbox Asterisk: callrouter against the least code that can route.

Run: ``.venv/bin/python bench/bench_route.py`` (``--duration``, ``--rates``,
``--variants``; about 3 minutes with the defaults). ``--repeat N`` measures each
cell N times, interleaved: single cells of this shared machine move by an order
of magnitude between runs, so the table then shows medians of the repetitions'
own p50/p95/CPU and ratios that pair each repetition with the same repetition
of the reference (and in how many it was at or below). ``--baseline REV`` with
variants such as ``tcp-engine@base`` runs git revision REV's router (and 1C
plugin) beside this checkout's in the same run, to measure a change.

One Asterisk (the project's sandbox, ``timestampevents=yes``) runs the shipped
``[callrouter-inbound]`` context (``examples/asterisk/extensions.conf``); every
target context logs its ``Newexten`` and hangs up at once. A call generator in
this process originates Local-channel calls at a fixed pace (20, 50, 100 per
second for ``--duration`` seconds each) and follows them with
:class:`router.sandbox.calls.CallPlacer`. Each router variant runs alone, in its
own subprocess (so its CPU time, read from ``/proc/PID/stat``, is its own), and
the variants take turns at each rate on the same Asterisk:

* ``ajam``: the reference loop: one WaitEvent long-poll with httpx, our
  sans-I/O ``parse_rawman``, a Redirect (on the same httpx pool) for each
  ``CallRouterRequest`` UserEvent. Nothing else.
* ``ajam-2poll``: the same with two manager sessions long-polling at once (a
  client-side technique against the gap between two polls).
* ``ajam-raw``: the same loop on hand-written HTTP/1.1 keep-alive connections
  (asyncio streams, no httpx): how much of the loop is the client library.
* ``engine``: callrouter's Engine with the shipped rules (``rules/``) plus
  1,000 extra non-matching rules, the directory plugin and a warm 1C cache
  (``onec.responsible`` answered from ``ResponsibleCache``): a directory hit
  routes each call with one Redirect, exactly the AMI work the references do.
* ``tcp``: the reference loop over raw TCP AMI (port 5038) with panoramisk.
* ``tcp-engine``: the ``engine`` variant (same rules, plugins and cache) with
  ``[asterisk] url = "tcp://..."``: callrouter's native TCP AMI client
  (router/ami/tcp.py) instead of AJAM.
* ``tcp-engine+filter``: ``tcp-engine`` logged in as a user whose manager.conf
  section also has the ``eventfilter`` lines ``callrouter check
  --manager-conf`` prints (docs/asterisk.md, "Event filtering"): Asterisk then
  writes the session only the events the engine reads, header filters
  included, as it would if the user could send ``Filter``.
* ``tcp-engine+filter+life``: ``tcp-engine+filter`` with a plugin told the call
  life (``callrouter_call_event``, as the 1C plugin is): the engine then also
  reads and folds CEL and the ringing signs, and its user's lines ask for them.
  Without such a plugin (the other engine variants) it does not.
* ``engine+filter``: the same over AJAM.
* ``engine+filter+reqsession``: ``engine+filter`` with a second AJAM session
  (user ``router-requests``) whose ``eventfilter`` lines let through only the
  routing request (``UserEvent: CallRouterRequest``) and the ``Newexten`` of a
  wait step (``Application`` ``Wait``, ``MusicOnHold``, ``WaitExten``): its
  requests go through the early route (``Router.accept(early=True)``) and its
  steps feed the parking check, so the Redirect can leave as soon as that
  session has both; the main session's copy of the request only claims the
  call (bench/ANALYSIS.md, twenty-second session). Bench code only, and
  not among the default ``--variants``: measured, not kept.
* ``ajam-pipe``: ``ajam-raw`` with its polls pipelined on a connection of
  their own: the next ``WaitEvent`` is written before the last one is
  answered, so Asterisk, which reads a connection's requests one at a time,
  parks it as soon as it has written the answer before it (no kick: the
  second is not read while the first waits).
* ``engine+filter+pipe``: ``engine+filter`` whose polls are pipelined so
  (:func:`pipelined_wait_event`, the client's own parser on the answers; no
  reconnect). Bench code only, not among the default ``--variants``: a trial
  (bench/ANALYSIS.md, thirty-sixth session; the product's own version, on the
  branch ``wip/ajam-pipeline``, measured and left out).

``BENCH_POLL_TRACE=PATH`` makes each AJAM engine variant write, per HTTP
exchange, when it was sent, its answer's last read, when the exchange
returned and the answer's size, to ``PATH-PID.json``: the poll cycle, our
side and Asterisk's.

``BENCH_GC_TRACE=1`` adds to each engine variant's outcomes its cyclic
collections after the start, by generation: how many, their pauses together
and how many took 5 ms or more.

``BENCH_DIALPLAN_ORDER=ringing-first`` moves the inbound context's
``Ringing()`` from the step before the request to the context's second step
(a trial, bench/ANALYSIS.md, thirty-seventh session: the request's first-poll
share did not change, so the shipped order stays).

The engine variants' 1,000 extra rules are per-DID rules in the generic form
(``if: did == "7495..."``, no dedicated key), the form issue 16 measures.
With ``BENCH_OWNER=101`` in the environment, 1C names manager 101 for every
caller, so the engine variants route by the shipped ``owner`` rule (two
``Setvar``, ``extension_state``, a Redirect to ``callrouter-dial``) instead
of the directory: the path of a real owner routing, not the references' work.
``BENCH_STATE_CACHE=1`` adds ``[plugins.extension_state] cache = true`` to the
engine variants (not to ``@base`` ones, so ``--baseline`` at the same revision
measures the cache against no cache) and changes 101's hint state once after
each router logs in, so that its cache holds 101.

Latency is request -> landing on Asterisk's own clock: the ``Timestamp`` of the
dialplan's ``UserEvent(CallRouterRequest)`` to that of the ``Newexten`` in the
target context. "Routed" counts calls that landed in the target before the
dialplan's fail-open wait (4 s) ran out. Each router also stamps, with
``time.time()`` (the clock Asterisk stamps events with, on this machine), when
the request was in its hands and when it sent the Redirect, which splits the
latency into *delivery* (Asterisk queued the event -> router has it parsed),
*router* (decision) and *redirect* (Redirect sent -> Newexten).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_HINT,
    CALLERS,
    DID,
    RESULTS,
    BenchOneC,
    CallLifeListener,
    bench_dialplan,
    engine_config,
    make_rules_dir,
    md_table,
    pct,
    scratch_dir,
    sigterm_cleans_up,
)

VARIANTS = (
    "ajam",
    "ajam-2poll",
    "ajam-raw",
    "engine",
    "engine+filter",
    "tcp",
    "tcp-engine",
    "tcp-engine+filter",
    "tcp-engine+filter+life",
)
#: The variants that run callrouter's engine.
ENGINE_VARIANTS = (
    "engine",
    "engine+filter",
    "engine+filter+pipe",
    "engine+filter+reqsession",
    "tcp-engine",
    "tcp-engine+filter",
    "tcp-engine+filter+life",
)
#: The manager user of ``+filter`` variants: the router's classes plus the
#: ``eventfilter`` lines the engine logs at start (docs/asterisk.md).
FILTERED_USER = "router-filtered"
#: The same for ``+filter+life``: the lines of an engine with a call life listener.
FILTERED_LIFE_USER = "router-filtered-life"
#: ``+filter`` variants of ``--baseline``'s code: the lines its own engine prints
#: (a change to what the engine asks Asterisk for is measured whole).
FILTERED_BASE_USER = "router-filtered-base"
#: The request session's user (``+reqsession``): only the requests and the
#: wait steps (:func:`request_session_selection`).
REQUEST_USER = "router-requests"
#: The engine variants' extra rules: this many ``if: did == ...`` rules.
EXTRA_RULES = 1000
REDIRECT = {"Context": "callrouter-dial", "Exten": "101", "Priority": "1"}
#: The events the call generator's CallPlacer follows (router/sandbox/calls.py).
FOLLOWED = frozenset({"Newexten", "UserEvent", "Hangup", "VarSet", "Newchannel"})
WAIT = 4  # the dialplan's CALLROUTER_WAIT: the fail-open deadline


# =============================================================================== routers
# Each runs in a subprocess: ``bench_route.py --serve VARIANT``. It prints READY
# once logged in, routes until SIGTERM, then writes its timings to --out.


class Timings:
    """channel -> [t_in_hand, t_redirect_sent, t_polled, t_read] on the wall
    clock (time.time()).

    ``t_read`` (TCP): when the socket read that held the request was handed to
    the client (``data_received``), which splits *delivery* into Asterisk and
    the kernel (*to read*) and the client's own work before the request is in
    hand (*read -> in hand*).
    """

    def __init__(self) -> None:
        self.by_channel: dict[str, list[float]] = {}
        #: When the newest socket read began (set by the TCP variants).
        self.read_at = 0.0

    def seen(self, channel: str) -> bool:
        return channel in self.by_channel

    def got(self, channel: str, t: float, polled: float = 0.0) -> None:
        self.by_channel.setdefault(channel, [t, 0.0, polled, self.read_at])

    def stamp_reads(self, protocol: Any) -> None:
        """Stamp :attr:`read_at` at each ``protocol.data_received`` (a class)."""
        read = protocol.data_received

        def stamped(conn: Any, data: bytes) -> None:
            self.read_at = time.time()
            read(conn, data)

        protocol.data_received = stamped

    def sent(self, channel: str, t: float) -> None:
        self.by_channel.setdefault(channel, [t, t, 0.0])[1] = t


def _is_request(msg: Any) -> bool:
    return msg.get("Event") == "UserEvent" and msg.get("UserEvent") == "CallRouterRequest"


async def serve_ajam(
    url: str, secret: str, stop: asyncio.Event, timings: Timings, sessions: int = 1
) -> None:
    import httpx

    from router.ami.protocol import parse_rawman

    endpoint = url + "/rawman"
    tasks: set[asyncio.Task[Any]] = set()

    async def redirect(http: httpx.AsyncClient, channel: str) -> None:
        timings.sent(channel, time.time())
        await http.post(endpoint, data={"Action": "Redirect", "Channel": channel, **REDIRECT})

    async def poll(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            resp = await http.post(endpoint, data={"Action": "WaitEvent", "Timeout": "5"})
            now = time.time()
            for msg in parse_rawman(resp.content):
                if _is_request(msg):
                    channel = msg.get("Channel") or ""
                    if timings.seen(channel):  # the other session got it first
                        continue
                    timings.got(channel, now)
                    task = asyncio.create_task(redirect(http, channel))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    clients = [httpx.AsyncClient(timeout=30) for _ in range(sessions)]
    for http in clients:
        await http.post(endpoint, data={"Action": "Login", "Username": "router", "Secret": secret})
    print("READY", flush=True)
    pollers = [asyncio.create_task(poll(http)) for http in clients]
    await stop.wait()
    for task in pollers:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*pollers, *tasks, return_exceptions=True)
    for http in clients:
        await http.aclose()


class RawHTTP:
    """Just enough HTTP/1.1 keep-alive for AJAM: one request per connection at a time."""

    def __init__(self, url: str) -> None:
        m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
        assert m, url
        self.host, self.port, self.path = m.group(1), int(m.group(2)), m.group(3) + "/rawman"
        self.cookie = ""
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, form: dict[str, str]) -> bytes:
        from urllib.parse import quote

        body = "&".join(f"{k}={quote(v, safe='')}" for k, v in form.items()).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n{self.cookie}\r\n"
        ).encode()
        for attempt in (1, 2):
            conn = (
                self._idle.pop()
                if self._idle
                else await asyncio.open_connection(self.host, self.port)
            )
            reader, writer = conn
            try:
                writer.write(head + body)
                headers = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
                if attempt == 2:
                    raise
                continue
            length = 0
            for line in headers.split(b"\r\n"):
                low = line.lower()
                if low.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif low.startswith(b"set-cookie:") and b"mansession_id" in low:
                    self.cookie = (
                        "Cookie: " + line.split(b":", 1)[1].split(b";")[0].strip().decode() + "\r\n"
                    )
            data = await reader.readexactly(length)
            self._idle.append(conn)
            return data
        raise AssertionError("unreachable")


async def serve_ajam_raw(url: str, secret: str, stop: asyncio.Event, timings: Timings) -> None:
    from router.ami.protocol import parse_rawman

    http = RawHTTP(url)
    tasks: set[asyncio.Task[Any]] = set()

    async def redirect(channel: str) -> None:
        timings.sent(channel, time.time())
        await http.post({"Action": "Redirect", "Channel": channel, **REDIRECT})

    await http.post({"Action": "Login", "Username": "router", "Secret": secret})
    # Pre-warm: two idle connections ready for Redirects while the poll holds one.
    await asyncio.gather(http.post({"Action": "Ping"}), http.post({"Action": "Ping"}))
    print("READY", flush=True)

    async def poll() -> None:
        while True:
            body = await http.post({"Action": "WaitEvent", "Timeout": "5"})
            now = time.time()
            for msg in parse_rawman(body):
                if _is_request(msg):
                    channel = msg.get("Channel") or ""
                    timings.got(channel, now)
                    task = asyncio.create_task(redirect(channel))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    poller = asyncio.create_task(poll())
    await stop.wait()
    poller.cancel()
    await asyncio.gather(poller, *tasks, return_exceptions=True)


async def serve_ajam_pipe(url: str, secret: str, stop: asyncio.Event, timings: Timings) -> None:
    """``ajam-raw`` with the polls pipelined: a connection of their own on which
    the next ``WaitEvent`` is always written before the last one is answered.

    Asterisk's HTTP server reads one request of a connection at a time, so the
    second poll is not read (and kicks nothing) while the first is parked; it
    is read, and parked, as soon as the first is answered, without waiting for
    the answer to reach the router and a new poll to come back.
    """
    from urllib.parse import quote

    from router.ami.protocol import parse_rawman

    http = RawHTTP(url)
    tasks: set[asyncio.Task[Any]] = set()

    async def redirect(channel: str) -> None:
        timings.sent(channel, time.time())
        await http.post({"Action": "Redirect", "Channel": channel, **REDIRECT})

    await http.post({"Action": "Login", "Username": "router", "Secret": secret})
    await asyncio.gather(http.post({"Action": "Ping"}), http.post({"Action": "Ping"}))
    reader, writer = await asyncio.open_connection(http.host, http.port)
    body = b"Action=WaitEvent&Timeout=5"
    poll = (
        f"POST {http.path} HTTP/1.1\r\nHost: {http.host}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n{http.cookie}\r\n"
    ).encode() + body
    del quote
    print("READY", flush=True)

    async def polls() -> None:
        writer.write(poll + poll)  # two out: one parked, one queued behind it
        while True:
            headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            data = await reader.readexactly(length)
            writer.write(poll)  # keep one queued behind the one now parked
            now = time.time()
            for msg in parse_rawman(data):
                if _is_request(msg):
                    channel = msg.get("Channel") or ""
                    timings.got(channel, now)
                    task = asyncio.create_task(redirect(channel))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    poller = asyncio.create_task(polls())
    await stop.wait()
    poller.cancel()
    await asyncio.gather(poller, *tasks, return_exceptions=True)
    writer.close()


async def panoramisk_loop(port: int, secret: str, redirect: Callable[[Any, str], None]) -> Any:
    """The reference loop, logged in: panoramisk reading every event, and
    ``redirect(manager, channel)`` for each routing request (it sends the
    Redirect, and stamps what its benchmark times)."""
    from panoramisk import Manager

    manager = Manager(
        loop=asyncio.get_running_loop(),
        host="127.0.0.1",
        port=port,
        username="router",
        secret=secret,
        events="on",
        ping_delay=3600,
        ping_interval=3600,
    )

    def on_user_event(mgr: Any, event: Any) -> None:
        if event.get("UserEvent") == "CallRouterRequest":
            redirect(mgr, event.get("Channel"))

    manager.register_event("UserEvent", on_user_event)
    await manager.connect()
    for _ in range(200):
        if manager.authenticated:
            return manager
        await asyncio.sleep(0.025)
    raise SystemExit("panoramisk did not log in")


async def serve_tcp(port: int, secret: str, stop: asyncio.Event, timings: Timings) -> None:
    def redirect(manager: Any, channel: str) -> None:
        now = time.time()
        timings.got(channel, now)
        timings.sent(channel, now)
        manager.send_action({"Action": "Redirect", "Channel": channel, **REDIRECT})

    from panoramisk.ami_protocol import AMIProtocol

    timings.stamp_reads(AMIProtocol)
    manager = await panoramisk_loop(port, secret, redirect)
    print("READY", flush=True)
    await stop.wait()
    manager.close()


async def engine_filter_lines(*, life: bool = False) -> list[str]:
    """The manager.conf ``eventfilter`` lines ``callrouter check --manager-conf`` prints:
    what an administrator who follows docs/asterisk.md adds for the router's
    user when it may not send the ``Filter`` action itself."""
    from bench_engine import InstantAMI

    from router.config import load_config
    from router.engine import Engine
    from router.plugins import Plugins

    with tempfile.TemporaryDirectory(prefix="bench-filter-") as tmpdir:
        tmp = Path(tmpdir)
        rules = make_rules_dir(tmp, extra=0)
        (rules / "zz-bench-extra.yaml").write_text(did_rules(EXTRA_RULES), encoding="utf-8")
        path = engine_config(tmp, "tcp://127.0.0.1:5038", "unused", rules)
        path.write_text(path.read_text().replace("waitevent_timeout = 20\n", ""))
        onec = BenchOneC()
        engine = Engine(
            load_config(path),
            plugins=Plugins.load(
                extra=[onec, *([CallLifeListener()] if life else [])], disabled=["onec"]
            ),
            client=InstantAMI(),  # type: ignore[arg-type]
        )
        await engine.setup()
        selection = await engine.event_selection()
    return selection.manager_conf_lines()


async def baseline_filter_lines(args: argparse.Namespace) -> list[str]:
    """:func:`engine_filter_lines` of the ``--baseline`` revision's engine (its own process)."""
    env = {**os.environ, "CALLROUTER_BENCH_BASELINE": str(args.baseline_tree)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--filter-lines",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the baseline's filter lines: exit {proc.returncode}")
    return json.loads(out)


def did_rules(n: int) -> str:
    """``n`` per-DID rules in the generic form, none matching a benchmark call."""
    parts = ["version: 1\nrules:\n"]
    parts.extend(
        f"""  - name: bench-did-{i}
    priority: 60
    on: call
    if: did == "7495{1000000 + i:07d}"
    do: [{{redirect: {{context: queues, exten: "d{i}"}}}}]
"""
        for i in range(n)
    )
    return "".join(parts)


def request_session_selection() -> Any:
    """What the ``+reqsession`` variant's second session asks for: the routing
    request and the wait steps after it, each by an exact header filter
    (``eventfilter`` lines of :data:`REQUEST_USER`; Asterisk ORs include filters,
    so a ``Wait`` in any context passes, and the client's narrower drops the
    steps of channels nobody waits for)."""
    from router.ami.event_filter import EventSelection, HeaderFilter
    from router.dialplan import PARK_APPLICATIONS, REQUEST_EVENT

    return EventSelection(
        frozenset({"UserEvent", "Newexten"}),
        frozenset({"user", "dialplan"}),
        frozenset(
            {
                HeaderFilter("UserEvent", "UserEvent", frozenset({REQUEST_EVENT})),
                *(
                    HeaderFilter("Newexten", "Application", frozenset({a}))
                    for a in PARK_APPLICATIONS
                ),
            }
        ),
    )


async def request_session(
    engine: Any,
    config: Any,
    username: str,
    stop: asyncio.Event,
    timings: Timings,
    seen: dict[str, float],
) -> None:
    """The ``+reqsession`` variant's second AJAM session: its own WaitEvent loop,
    whose requests are routed early and whose wait steps feed the parking
    check; a failure only costs speed (the main session routes every call)."""
    from dataclasses import replace

    from router.ami.client import AJAMClient, ClientSettings
    from router.ami.protocol import raw_header
    from router.errors import AMIError

    parking, router, tracker = engine.parking, engine.router, engine.tracker
    rules, plugins = engine.rules, engine.plugins
    client = AJAMClient(replace(ClientSettings.from_config(config.asterisk), username=username))
    client.event_selection = request_session_selection()

    def wanted_step(block: str) -> bool:
        return parking.expects(raw_header(block, "Channel") or "")

    client.set_narrowing({"Newexten": wanted_step, "UserEvent": parking.note_raw})
    counts = timings.by_channel.setdefault("__rpolls", [0.0, 0.0, 0.0, 0.0])
    # A copy read after the main session has handled the call's hang-up (the
    # router then forgets it was routed) must not route it again: the keys of
    # ended calls are kept, bounded (the first run without this redirected a
    # call twice at 50/s: its copy came after the bench call had hung up).
    ended: OrderedDict[str, None] = OrderedDict()
    forget = router.forget

    def forget_noted(calls: Any) -> None:
        for call in calls:
            for leg in call.channels.values():
                ended[leg.uniqueid or leg.name] = None
        while len(ended) > 4096:
            ended.popitem(last=False)
        forget(calls)

    router.forget = forget_noted

    def may_route() -> bool:
        # Engine._route_early's conditions that do not depend on a read's bytes.
        return not (
            engine._stopping.is_set()
            or engine._listeners
            or config.api is not None
            or rules.current.reads_call_vars
            or plugins.implements("callrouter_call_start")
            or plugins.reads_event("Newchannel")
            or plugins.reads_event("Newexten")
        )

    try:
        await client.login()
        while not stop.is_set():
            polled = time.time()
            try:
                events = await client.wait_event(20)
            except AMIError:
                await asyncio.sleep(0.25)
                continue
            now = time.time()
            counts[0] += 1
            if not events:
                counts[1] += 1
                continue
            parking.scan(events)
            for ev in events:
                if ev.name == "Newexten":
                    parking.stepped(ev)
                elif _is_request(ev):
                    channel = ev.get("Channel") or ""
                    parking.requested(ev)
                    if not timings.seen(channel):
                        counts[2] += 1  # taken here first
                    timings.got(channel, now, polled)
                    seen.setdefault(channel, now)
                    if (ev.get("Uniqueid") or channel) in ended:
                        counts[3] += 1  # stale: the call has hung up
                    elif may_route():
                        router.accept(ev, tracker.by_channel(channel), early=True)
    finally:
        await client.aclose()


async def serve_engine(
    url: str,
    secret: str,
    stop: asyncio.Event,
    timings: Timings,
    username: str = "router",
    *,
    life: bool = False,
    request_user: str | None = None,
    pipe: bool = False,
) -> None:
    with scratch_dir("bench-engine-") as tmp:
        await _serve_engine_in(
            tmp,
            url,
            secret,
            stop,
            timings,
            username,
            life=life,
            request_user=request_user,
            pipe=pipe,
        )


async def _serve_engine_in(
    tmp: Path,
    url: str,
    secret: str,
    stop: asyncio.Event,
    timings: Timings,
    username: str = "router",
    *,
    life: bool = False,
    request_user: str | None = None,
    pipe: bool = False,
) -> None:
    """:func:`serve_engine` with its files in ``tmp``."""
    import logging

    from router.commands import run as run_command
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    # A real service logs every decision: keep that cost, into a file.
    handler = logging.FileHandler(tmp / "router.log")
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    lean = getattr(run_command, "lean_log_records", None)  # a --baseline may predate it
    if lean is not None:
        lean()  # as callrouter run's logging
    rules = make_rules_dir(tmp, extra=0)
    (rules / "zz-bench-extra.yaml").write_text(did_rules(EXTRA_RULES), encoding="utf-8")
    path = engine_config(tmp, url, secret, rules, username=username)
    if url.startswith("tcp://"):  # a long-poll setting AJAM alone has
        path.write_text(path.read_text().replace("waitevent_timeout = 20\n", ""))
    config = load_config(path)
    # BENCH_OWNER=101: 1C names a manager for every caller, so the owner rule
    # routes (Setvar, Setvar, Redirect) instead of the directory (Redirect).
    onec = BenchOneC(owner=os.environ.get("BENCH_OWNER") or None)
    await onec.warm()
    listener = CallLifeListener() if life else None
    # As `callrouter run` builds it (router/commands/run.py): it owns its process.
    engine = Engine(
        config,
        plugins=Plugins.load(extra=[onec, *([listener] if listener else [])], disabled=["onec"]),
        options=EngineOptions(freeze_gc=True),
    )
    await engine.start()
    gc_pauses = _trace_gc() if os.environ.get("BENCH_GC_TRACE") else None
    # Stamps for the latency split, outside the engine: when a poll's events
    # are in hand (parsed) and when the Redirect leaves.
    client = engine.ami
    wait_event, send = client.wait_event, client.send

    # A long poll's own figures: over TCP a wait_event only takes what the
    # socket queued while the engine was busy (its reads are pushed).
    long_poll = not url.startswith("tcp://")
    if not long_poll:
        from router.ami import tcp

        connection = getattr(tcp, "_Connection", None)  # a --baseline may predate it
        if connection is not None:
            timings.stamp_reads(connection)
    else:
        # Over AJAM the last read of the poll's answer: *(to read)* is then
        # Asterisk's wake, its answer and the kernel, *(read -> in hand)* the
        # client's HTTP framing, parse and the stream's hand-over.
        from router.ami import http as ami_http

        connection = getattr(ami_http, "_Connection", None)
        if connection is not None:
            timings.stamp_reads(connection)

    async def stamped_wait_event(timeout: int = 20) -> list[Any]:
        polled = time.time() if long_poll else 0.0
        events = await wait_event(timeout)
        now = time.time()
        if long_poll:
            counts = timings.by_channel.setdefault("__polls", [0.0, 0.0, 0.0])
            counts[0] += 1
            if not events:
                counts[1] += 1
        for ev in events:
            # The name first (read off the first line): the bench's own scan of
            # every event is not the router's work (panoramisk's stamps run in
            # its UserEvent callback only).
            if ev.name == "UserEvent" and _is_request(ev):
                timings.got(ev.get("Channel") or "", now, polled)
                main_seen[ev.get("Channel") or ""] = now
        return events

    redirects: dict[str, int] = {}
    #: ``+reqsession``: when each session had each request (the lead, in the split).
    main_seen: dict[str, float] = {}
    side_seen: dict[str, float] = {}

    async def stamped_send(name: str, params: Any = None, **kw: Any) -> Any:
        if name == "Redirect":
            timings.sent(params["Channel"], time.time())
            redirects[params["Channel"]] = redirects.get(params["Channel"], 0) + 1
        return await send(name, params, **kw)

    if pipe:
        wait_event = pipelined_wait_event(client)
    client.wait_event = stamped_wait_event  # type: ignore[method-assign]
    trace: list[Any] = []
    if os.environ.get("BENCH_POLL_TRACE") and long_poll:
        from router.ami import http as ami_http

        pool_exchange = ami_http.ConnectionPool.exchange
        data_received = ami_http._Connection.data_received
        last_read = [0.0]

        def traced_data(conn: Any, data: bytes) -> None:
            last_read[0] = time.time()
            data_received(conn, data)

        async def traced_exchange(pool: Any, request: Any, *, timeout: Any) -> Any:
            t0 = time.time()
            resp = await pool_exchange(pool, request, timeout=timeout)
            kind = "W" if b"WaitEvent" in request.body else request.body[7:20].decode()
            trace.append((kind, t0, last_read[0], time.time(), len(resp.content)))
            return resp

        cast(Any, ami_http.ConnectionPool).exchange = traced_exchange
        cast(Any, ami_http._Connection).data_received = traced_data
    client.send = stamped_send  # type: ignore[method-assign]
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    side = None
    if request_user is not None:
        side = asyncio.create_task(
            request_session(engine, config, request_user, stop, timings, side_seen)
        )
    push = getattr(client, "_push", None)
    if push is not None:
        # Over TCP the engine takes a read's events in the read itself
        # (EventStream.push_to): stamped there, as wait_event's are.
        def stamped_push(events: list[Any]) -> bool:
            now = time.time()
            for ev in events:
                if ev.name == "UserEvent" and _is_request(ev):
                    timings.got(ev.get("Channel") or "", now)
            return bool(push(events))

        cast(Any, client)._push = stamped_push
    early = getattr(client, "urgent_early", None)
    if early is not None:
        # A request read after other events may be acted on from its raw text
        # before the read is parsed (Engine._route_early): in hand from then.
        def stamped_early(data: bytes, start: int, end: int) -> None:
            now = time.time()
            block = data[start:end]
            if b"\r\nUserEvent: CallRouterRequest\r\n" in block:
                at = block.find(b"\r\nChannel: ")
                if at >= 0:
                    channel = block[at + 11 : block.find(b"\r\n", at + 11)]
                    timings.got(channel.decode(), now)
            early(data, start, end)

        cast(Any, client).urgent_early = stamped_early
    print("READY", flush=True)
    await stop.wait()
    if side is not None:
        side.cancel()
        with contextlib.suppress(BaseException):
            await side
    engine.request_stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
    await engine.stop()
    outcomes: dict[str, int] = {}
    for record in engine.records:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    if side_seen:
        # How much sooner the request session had each request than the main one.
        timings.by_channel["__lead"] = [
            (main_seen[ch] - t) * 1000 for ch, t in side_seen.items() if ch in main_seen
        ]
    twice = sum(1 for n in redirects.values() if n > 1)
    if twice:
        outcomes["(redirected more than once)"] = twice
    taken = timings.by_channel.get("__rpolls")
    if taken is not None:
        outcomes["(request session took it first)"] = int(taken[2])
        if taken[3]:
            outcomes["(request session: stale copies dropped)"] = int(taken[3])
    if listener is not None:  # shown with the outcomes: zero would mean no call life
        outcomes["(call life events told)"] = listener.told
    waits = getattr(engine.metrics, "park_waits", None)  # a --baseline may predate it
    if waits is not None:
        # How the Redirects found their channel's Wait step (router/parking.py).
        for outcome in ("at-once", "waited", "missed", "blind"):
            count = int(waits.labels(outcome)._value.get())
            if count:
                outcomes[f"(Wait step {outcome})"] = count
    if gc_pauses is not None:
        # Collections after the start (its gc.freeze), by generation: how many,
        # their pauses together (us) and those of 5 ms or more (BENCH_GC_TRACE=1).
        for gen, pauses in sorted(gc_pauses.items()):
            outcomes[f"(gc gen{gen} collections)"] = len(pauses)
            outcomes[f"(gc gen{gen} us in all)"] = round(sum(pauses) * 1000)
            outcomes[f"(gc gen{gen} pauses of 5 ms or more)"] = sum(p >= 5 for p in pauses)
    print("OUTCOMES " + json.dumps(outcomes), file=sys.stderr, flush=True)
    if trace:
        dump = Path(os.environ["BENCH_POLL_TRACE"] + f"-{os.getpid()}.json")
        await asyncio.to_thread(dump.write_text, json.dumps(trace))
    if onec.fetches > len(onec.numbers):
        print(f"1C cache missed {onec.fetches - len(onec.numbers)} times", file=sys.stderr)


def _trace_gc() -> dict[int, list[float]]:
    """``BENCH_GC_TRACE``: each cyclic collection's pause, by generation (gc.callbacks)."""
    import gc

    pauses: dict[int, list[float]] = {}
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.setdefault(info["generation"], []).append(
                (time.perf_counter() - started[0]) * 1000
            )

    gc.callbacks.append(timed)
    return pauses


def pipelined_wait_event(client: Any) -> Callable[[int], Coroutine[Any, Any, list[Any]]]:
    """A trial (``+pipe``): the AJAM client's polls pipelined on a connection of
    their own, as ``serve_ajam_pipe`` does, its answers read by the client's own
    parser (filters, narrowing, ActionIDs). No reconnect: a bench trial only."""
    from router.ami.http import Headers, HTTPResponse
    from router.ami.protocol import Action, encode_form, split_waitevent

    lane: list[Any] = []
    sent: list[Any] = []

    def write_poll(writer: Any) -> None:
        action = Action("WaitEvent", (("Timeout", "20"),), client._next_id())
        body = encode_form(action)
        head = (
            f"POST {client._target} HTTP/1.1\r\nHost: {client._transport.host_header}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nUser-Agent: callrouter\r\n"
            f"Cookie: {client._cookie}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        sent.append((action, client._cookie))

    async def wait(timeout: int = 20) -> list[Any]:
        try:
            return await wait_once()
        except BaseException as exc:
            print(f"PIPE wait ended: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise

    async def wait_once() -> list[Any]:
        if not lane:
            pool = client._transport
            lane.extend(await asyncio.open_connection(pool.host, pool.port))
            write_poll(lane[1])
        reader, writer = lane
        write_poll(writer)  # one parked, one queued behind it
        head = await reader.readuntil(b"\r\n\r\n")
        items = []
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name:
                items.append((name, value.strip()))
        headers = Headers(items)
        content = await reader.readexactly(int(headers.get("content-length") or 0))
        action, cookie = sent.pop(0)
        try:
            result = client._parse(action, HTTPResponse(200, headers, content), cookie)
        except Exception as exc:
            print(f"PIPE {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise
        return split_waitevent((result.response, *result.extra))[1]

    return wait


def pin_rest(asterisk_pid: int, router_cpu: int) -> None:
    """Asterisk (every thread) and this generator on every core but ``router_cpu``.

    With ``--pin`` each router variant runs alone on its core, the same for the
    references and the engine: what a router costs when nothing else evicts its
    caches between two calls (``CPUAffinity=`` in a systemd unit).
    """
    rest = set(os.sched_getaffinity(0)) - {router_cpu}
    if not rest:
        raise SystemExit(f"--pin {router_cpu}: no core left for Asterisk and the generator")
    for task in Path(f"/proc/{asterisk_pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), rest)
    os.sched_setaffinity(0, rest)


async def serve(args: argparse.Namespace) -> None:
    pin = os.environ.get("CALLROUTER_BENCH_PIN")
    if pin:
        os.sched_setaffinity(0, {int(pin)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    timings = Timings()
    variant = args.serve.split("@", 1)[0]  # "tcp-engine@base": the baseline's code
    filtered = FILTERED_BASE_USER if args.serve.endswith("@base") else FILTERED_USER
    if variant == "ajam":
        await serve_ajam(args.url, args.secret, stop, timings)
    elif variant == "ajam-2poll":
        await serve_ajam(args.url, args.secret, stop, timings, sessions=2)
    elif variant == "ajam-pipe":
        await serve_ajam_pipe(args.url, args.secret, stop, timings)
    elif variant == "ajam-raw":
        await serve_ajam_raw(args.url, args.secret, stop, timings)
    elif variant == "tcp":
        await serve_tcp(args.ami_port, args.secret, stop, timings)
    elif variant == "engine":
        await serve_engine(args.url, args.secret, stop, timings)
    elif variant == "tcp-engine":
        await serve_engine(f"tcp://127.0.0.1:{args.ami_port}", args.secret, stop, timings)
    elif variant == "engine+filter":
        await serve_engine(args.url, args.secret, stop, timings, filtered)
    elif variant == "engine+filter+pipe":
        await serve_engine(args.url, args.secret, stop, timings, filtered, pipe=True)
    elif variant == "engine+filter+reqsession":
        await serve_engine(
            args.url, args.secret, stop, timings, filtered, request_user=REQUEST_USER
        )
    elif variant == "tcp-engine+filter":
        await serve_engine(f"tcp://127.0.0.1:{args.ami_port}", args.secret, stop, timings, filtered)
    elif variant == "tcp-engine+filter+life":
        await serve_engine(
            f"tcp://127.0.0.1:{args.ami_port}",
            args.secret,
            stop,
            timings,
            FILTERED_LIFE_USER,
            life=True,
        )
    else:
        raise SystemExit(f"unknown variant {variant}")
    Path(args.out).write_text(json.dumps(timings.by_channel))  # noqa: ASYNC240 - after the run


# =============================================================================== driver


class TCPAMI:
    """The call generator's AMI connection: raw TCP (port 5038), our RawmanParser.

    Just what :class:`CallPlacer` needs (``send`` and ``wait_event``); over TCP
    rather than AJAM so the generator costs Asterisk and the CPU as little as
    possible and leaves both to the router being measured: it asks only for
    the events CallPlacer follows (:data:`FOLLOWED`). A session Asterisk closes
    (its ``writetimeout`` when this process stalls) fails every pending and
    later action at once and stops the run: a run once hung on it, each
    placement and hangup waiting out its own timeout.
    """

    session_generation = 1

    def __init__(self, port: int, secret: str) -> None:
        self.port, self.secret = port, secret
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = 0
        self.lost: str | None = None

    async def connect(self) -> None:
        from router.ami.event_filter import plan_filters, select_events
        from router.ami.protocol import RawmanParser

        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        parser = RawmanParser(banner=True)

        async def read() -> None:
            try:
                while data := await self._reader.read(65536):
                    for msg in parser.feed(data):
                        future = self._pending.pop(msg.get("ActionID") or "", None)
                        if future is not None and msg.get("Response") is not None:
                            if not future.done():
                                future.set_result(msg)
                        elif msg.get("Event") is not None:
                            self._events.put_nowait(msg)
                self.lost = "closed by Asterisk"
            except Exception as exc:  # a parse error or a reset: the session is over
                self.lost = f"{type(exc).__name__}: {exc}"
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(self.lost))
            self._pending.clear()
            print(f"call generator: AMI session lost ({self.lost})", file=sys.stderr, flush=True)

        self._task = asyncio.create_task(read())
        wanted = select_events(core=FOLLOWED)
        reply = await self.send(
            "Login", {"Username": "admin", "Secret": self.secret, "Events": wanted.mask}
        )
        assert reply.get("Response") == "Success", reply
        actions, _ = plan_filters(wanted.names, frozenset())
        for action in actions:  # admin may send Filter: only the followed events
            await self.send(action.name, dict(action.params))

    async def send(self, name: str, params: Any = None, **_: Any) -> Any:
        from router.ami.protocol import Action, encode_rawman

        if self.lost is not None:
            raise ConnectionError(f"call generator's AMI session: {self.lost}")
        self._ids += 1
        action_id = f"gen-{self._ids}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        self._writer.write(encode_rawman(Action.build(name, params or {}, action_id=action_id)))
        return await asyncio.wait_for(future, 10)

    async def wait_event(self, timeout: int = 20) -> list[Any]:
        try:
            first = await asyncio.wait_for(self._events.get(), timeout)
        except TimeoutError:
            return []
        out = [first]
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def close(self) -> None:
        self._task.cancel()
        self._writer.close()


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: system time is the syscalls' share."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def _waited(values: list[float]) -> str:
    """AJAM: the share of requests queued before the poll that took them, and their p50."""
    late = sorted(v for v in values if v > 0)
    share = len(late) / len(values) * 100
    return f"{share:.0f}% (p50 {pct(late, 50) if late else 0.0:.2f} ms)"


@dataclass
class Cell:
    variant: str
    rate: int
    calls: int = 0
    routed: int = 0
    fail_open: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    delivery: list[float] = field(default_factory=list)
    router: list[float] = field(default_factory=list)
    redirect: list[float] = field(default_factory=list)
    #: TCP: *delivery* split at the socket read that held the request.
    to_read: list[float] = field(default_factory=list)
    read_in_hand: list[float] = field(default_factory=list)
    #: AJAM: how long the request waited in Asterisk for the poll that took it
    #: (0 when that poll was out before the request was queued).
    poll_wait: list[float] = field(default_factory=list)
    #: ``+reqsession``: main session's copy minus the request session's (ms).
    lead: list[float] = field(default_factory=list)
    polls: str = ""
    cpu: float = 0.0
    cpu_sys: float = 0.0
    wall: float = 0.0
    asterisk_cpu: float = 0.0
    generator_cpu: float = 0.0
    note: str = ""
    #: Which repetition of the cell (``--repeat``): ratios pair the same repetition.
    rep: int = 0


#: ``--pin``: the core each router variant runs on (None: no pinning).
PIN: int | None = None


async def start_router(
    variant: str, box: Any, out: Path, baseline: Path | None = None
) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env.pop("CALLROUTER_BENCH_BASELINE", None)
    env.pop("CALLROUTER_BENCH_PIN", None)
    if PIN is not None:
        env["CALLROUTER_BENCH_PIN"] = str(PIN)
    if variant.endswith("@base"):
        if baseline is None:
            raise SystemExit(f"{variant}: give --baseline REV")
        env["CALLROUTER_BENCH_BASELINE"] = str(baseline)
        # The cache is measured against the same code without it.
        env.pop("BENCH_STATE_CACHE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        variant,
        "--url",
        box.url,
        "--secret",
        box.secret,
        "--ami-port",
        str(box.ami_port),
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"READY":
        err = await proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"{variant} did not start: {line!r} {err.decode()[-2000:]}")
    if env.get("BENCH_STATE_CACHE"):
        # A change of 101's state the logged-in router hears (ExtensionStatus):
        # its extension_state cache then holds 101.
        for state in ("INUSE", "NOT_INUSE"):
            await asyncio.to_thread(box.cli, f"devstate change {BENCH_HINT} {state}")
        await asyncio.sleep(0.5)
    return proc


async def run_cell(
    placer: Any,
    box: Any,
    variant: str,
    rate: int,
    duration: float,
    tmp: Path,
    profile: str | None = None,
    burst: int = 0,
    baseline: Path | None = None,
) -> Cell:
    """One variant at one pace; ``rate`` 0 places ``burst`` calls at once instead."""
    cell = Cell(variant, rate)
    out = tmp / f"{variant}-{rate}.json"
    proc = await start_router(variant, box, out, baseline)
    try:
        # Warm-up (not counted): connections opened, caches and code paths hot.
        warm = [await placer.place(DID, CALLERS[i % len(CALLERS)]) for i in range(3)]
        await placer.wait_all(warm, timeout=WAIT + 2)
        await asyncio.sleep(0.2)
        n = int(rate * duration) if rate else burst
        spy = None
        if profile and variant in profile.split(","):
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                *(["--nonblocking"] if os.environ.get("BENCH_PROFILE_NONBLOCKING") else []),
                "--pid",
                str(proc.pid),
                "-d",
                str(int(duration + 3)),
                "-r",
                os.environ.get(
                    "BENCH_PROFILE_RATE", "250"
                ),  # samples per second: enough for a 5 s cell
                *(["--gil"] if os.environ.get("BENCH_PROFILE_GIL") else []),
                "-f",
                "speedscope",
                "-o",
                str(RESULTS / f"profile-{variant}-{rate}.json"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(0.5)
        sys0 = cpu_split(proc.pid)[1]
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        ast0, gen0 = cpu_seconds(box.pid), time.process_time()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.monotonic() if rate else 0
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(placer.place(DID, CALLERS[i % len(CALLERS)])))
        placed = [
            c
            for c in await asyncio.gather(*tasks, return_exceptions=True)
            if not isinstance(c, BaseException)
        ]
        await placer.wait_all(placed, timeout=WAIT + 3)
        cell.cpu, cell.wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        cell.cpu_sys = cpu_split(proc.pid)[1] - sys0
        cell.asterisk_cpu = cpu_seconds(box.pid) - ast0
        cell.generator_cpu = time.process_time() - gen0
        if spy is not None:
            await spy.wait()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        except TimeoutError:
            proc.kill()
            err = b""
    outcomes = re.search(rb"OUTCOMES (.*)", err or b"")
    for line in re.findall(rb"PIPE .*", err or b"")[:5]:  # the +pipe trial's errors
        print(f"  {variant} {rate}/s: {line.decode()}", file=sys.stderr)
    if outcomes:
        cell.note = outcomes.group(1).decode()
    stamps = json.loads(out.read_text()) if out.exists() else {}
    cell.calls = len(placed)
    counted = stamps.pop("__polls", None)
    if counted:
        cell.polls = f"{counted[0]:.0f} ({counted[1]:.0f} empty)"
    cell.lead = stamps.pop("__lead", [])
    counted = stamps.pop("__rpolls", None)
    if counted:
        cell.polls += f", request session {counted[0]:.0f} ({counted[1]:.0f} empty)"
    for call in placed:
        if call.context == "callrouter-dial" and call.latency_ms is not None:
            cell.routed += 1
            cell.latencies.append(call.latency_ms)
            st = stamps.get(call.channel)
            if st and call.requested_at and call.landed_at and st[1]:
                cell.delivery.append((st[0] - call.requested_at) * 1000)
                cell.router.append((st[1] - st[0]) * 1000)
                cell.redirect.append((call.landed_at - st[1]) * 1000)
                if len(st) > 2 and st[2]:
                    cell.poll_wait.append(max(0.0, st[2] - call.requested_at) * 1000)
                if len(st) > 3 and st[3]:
                    cell.to_read.append((st[3] - call.requested_at) * 1000)
                    cell.read_in_hand.append((st[0] - st[3]) * 1000)
        elif call.context is not None:
            cell.fail_open += 1
        else:
            cell.lost += 1
    for values in (cell.latencies, cell.delivery, cell.router, cell.redirect):
        values.sort()
    return cell


async def drive(box: Any, args: argparse.Namespace) -> list[Cell]:
    from router.sandbox.calls import CallPlacer

    cells: list[Cell] = []
    if any("+filter" in v.split("@", 1)[0] for v in args.variants):
        box.add_manager_user(FILTERED_USER, lines=await engine_filter_lines())
    if any(v.split("@", 1)[0].endswith("+reqsession") for v in args.variants):
        box.add_manager_user(
            REQUEST_USER,
            read="user,dialplan",
            write="user",
            lines=request_session_selection().manager_conf_lines(),
        )
    if any(v.endswith("+filter@base") for v in args.variants):
        box.add_manager_user(FILTERED_BASE_USER, lines=await baseline_filter_lines(args))
    if any(v.split("@", 1)[0].endswith("+life") for v in args.variants):
        box.add_manager_user(FILTERED_LIFE_USER, lines=await engine_filter_lines(life=True))
    if args.pin is not None:
        pin_rest(box.pid, args.pin)
    ami = TCPAMI(box.ami_port, box.secret)
    await ami.connect()
    with tempfile.TemporaryDirectory(prefix="bench-route-") as tmpdir:
        async with CallPlacer(ami) as placer:  # type: ignore[arg-type]
            rounds = [
                (rate, rep)
                for rate in [*args.rates, *([0] if args.burst else [])]
                for rep in range(args.repeat)
            ]
            for round_no, (rate, rep) in enumerate(rounds):
                # Rotate the order at each round so no variant always goes first.
                order = (
                    args.variants[round_no % len(args.variants) :]
                    + args.variants[: round_no % len(args.variants)]
                )
                for variant in order:
                    cell = await _bounded_cell(
                        run_cell(
                            placer,
                            box,
                            variant,
                            rate,
                            args.duration,
                            Path(tmpdir),
                            args.profile,
                            burst=args.burst,
                            baseline=args.baseline_tree,
                        ),
                        Cell(variant, rate),
                        args.duration,
                    )
                    cell.rep = rep
                    cells.append(cell)
                    if ami.lost is not None:
                        raise SystemExit(
                            f"the call generator's AMI session was lost ({ami.lost}) "
                            f"during {variant} at {rate}/s: the figures after it are void"
                        )
                    print(
                        f"  {variant:<11} {rate:>3}/s: {cell.routed}/{cell.calls} routed, "
                        f"p50 {pct(cell.latencies, 50):.2f} ms, "
                        f"cpu {cell.cpu / max(cell.wall, 1e-9) * 100:.0f}% "
                        f"(sys {cell.cpu_sys / max(cell.wall, 1e-9) * 100:.0f}%)"
                        + (f", polls {cell.polls}" if cell.polls else "")
                        + (
                            f", waited for the poll {_waited(cell.poll_wait)}"
                            if cell.poll_wait
                            else ""
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
    await ami.close()
    return cells


async def _bounded_cell(work: Coroutine[Any, Any, Cell], empty: Cell, duration: float) -> Cell:
    """One cell, given up (and its router stopped) when it takes far longer
    than it should: a run once hung between cells with nothing left to wait
    for; every task's stack is printed so the next one says where."""
    try:
        return await asyncio.wait_for(work, duration + WAIT + 120)
    except TimeoutError:
        print(f"  {empty.variant} {empty.rate}/s: cell hung; tasks:", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        return empty


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(cells: list[Cell], args: argparse.Namespace) -> str:
    # The ratios are to the bare panoramisk loop when it ran (issue 16's yardstick),
    # each repetition against the same repetition of it (they ran side by side),
    # and the median of those is shown with how many repetitions were at or below.
    base = "tcp" if "tcp" in args.variants else "ajam"
    rows = []
    for rate in [*args.rates, *([0] if args.burst else [])]:
        refs = {c.rep: c for c in cells if c.variant == base and c.rate == rate}
        for variant in args.variants:
            mine = sorted(
                (x for x in cells if x.variant == variant and x.rate == rate), key=lambda x: x.rep
            )
            if not mine:
                continue
            pooled = sorted(v for c in mine for v in c.latencies)
            p50 = _median([pct(c.latencies, 50) for c in mine if c.latencies])
            p95 = _median([pct(c.latencies, 95) for c in mine if c.latencies])
            x50s: list[float] = []
            x95s: list[float] = []
            for c in mine:
                r = refs.get(c.rep)
                if r is not None and r.latencies and c.latencies:
                    x50s.append(pct(c.latencies, 50) / pct(r.latencies, 50))
                    x95s.append(pct(c.latencies, 95) / pct(r.latencies, 95))
            cpu = _median([c.cpu / c.wall for c in mine if c.wall])
            cpu_sys = _median([c.cpu_sys / c.wall for c in mine if c.wall])
            calls = sum(c.calls for c in mine)
            routed = sum(c.routed for c in mine)
            rows.append(
                [
                    f"{rate}/s" if rate else f"burst {args.burst}",
                    variant,
                    calls,
                    f"{100 * routed / calls:.1f}%" if calls else "-",
                    p50,
                    p95,
                    pct(pooled, 99),
                    pooled[-1] if pooled else float("nan"),
                    f"{_median(x50s):.2f}x ({sum(x <= 1 for x in x50s)}/{len(x50s)})",
                    f"{_median(x95s):.2f}x ({sum(x <= 1 for x in x95s)}/{len(x95s)})",
                    f"{100 * cpu:.0f}% ({100 * cpu_sys:.0f}%)",
                    f"{100 * _median([c.asterisk_cpu / c.wall for c in mine if c.wall]):.0f}%",
                    f"{100 * _median([c.generator_cpu / c.wall for c in mine if c.wall]):.0f}%",
                ]
            )
    main = md_table(
        [
            "rate",
            "router",
            "calls",
            "routed in time",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            f"p50 / {base} (at or below)",
            f"p95 / {base} (at or below)",
            "router CPU (sys)",
            "Asterisk CPU",
            "generator CPU",
        ],
        rows,
    )
    split_rows = []
    for variant in args.variants:
        mine = [c for c in cells if c.variant == variant]
        for part in (
            "delivery",
            "to_read",
            "read_in_hand",
            "router",
            "redirect",
            "poll_wait",
            "lead",
        ):
            values = sorted(v for c in mine for v in getattr(c, part))
            if values:
                label = PART_LABELS.get(part, part)
                split_rows.append(
                    [variant, label, pct(values, 50), pct(values, 95), pct(values, 99), len(values)]
                )
    split = md_table(["router", "part", "p50 ms", "p95 ms", "p99 ms", "calls"], split_rows)
    # One line per variant and rate, the repetitions' outcomes added up.
    merged: dict[tuple[str, int], dict[str, int]] = {}
    for c in cells:
        if c.variant.split("@", 1)[0] in ENGINE_VARIANTS and c.note:
            into = merged.setdefault((c.variant, c.rate), {})
            for outcome, count in json.loads(c.note).items():
                into[outcome] = into.get(outcome, 0) + count
    notes = [
        f"- {variant} outcomes at {f'{rate}/s' if rate else 'the burst'}: {json.dumps(counts)}"
        for (variant, rate), counts in merged.items()
    ]
    each = (
        f"{args.duration:g} s per cell"
        if args.repeat == 1
        else f"{args.repeat} repetitions of {args.duration:g} s per cell, interleaved; "
        "p50, p95 and CPU are medians of the repetitions' own, a ratio pairs each "
        "repetition with the same one of the reference"
    )
    title = "Route latency: UserEvent -> Newexten in target, Asterisk clock"
    if getattr(args, "race_steps", 0):
        title = (
            f"Lost Redirects: {args.race_steps} NoOp steps between the request and Wait "
            '("routed in time" below 100 %: calls Asterisk hung up or sent astray)'
        )
    if getattr(args, "disabled_events", None):
        title += f"; Asterisk's [general] disabledevents = {','.join(args.disabled_events)}"
    if getattr(args, "pin", None) is not None:
        title += f"; each router alone on core {args.pin}, Asterisk and the generator on the rest"
    return (
        f"### {title} ({each})\n\n{main}\n\n"
        "### Where the time goes (all rates pooled; wall clock of the same machine)\n\n"
        "*delivery*: request event stamped by Asterisk -> events parsed in the router; "
        "*router*: -> Redirect sent; *redirect*: -> Newexten stamped by Asterisk; "
        "*poll_wait* (AJAM): how long the request was queued in Asterisk before the "
        "poll that took it was sent (0 when that poll was out first); over TCP "
        "(and for the engine over AJAM, at the last read of the poll's answer) "
        "*delivery* is also split at the socket read that held the request: "
        "*(to read)* Asterisk and the kernel, *(read -> in hand)* the client's own "
        "work before it (panoramisk: parsing the read up to its callback; the engine: "
        "finding the request's block); *request session's lead* (``+reqsession``): "
        "how much sooner the request session had the request than the main session "
        "(negative: later).\n\n"
        f"{split}\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )


#: How the split table names the parts that divide another.
PART_LABELS = {
    "to_read": "(to read)",
    "read_in_hand": "(read -> in hand)",
    "lead": "request session's lead",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each cell this many times, interleaved (medians and paired ratios)",
    )
    parser.add_argument("--rates", default="20,50,100")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--burst", type=int, default=100, help="then this many calls at once (0: none)"
    )
    parser.add_argument(
        "--profile",
        help="py-spy these variants (comma-separated) into "
        "bench/results/profile-VARIANT-RATE.json (speedscope)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the variants named VARIANT@base (e.g. tcp-engine@base) on the "
        "router and 1C plugin of git revision REV, beside this checkout's, in one run",
    )
    parser.add_argument(
        "--race-steps",
        type=int,
        default=0,
        metavar="N",
        help="N NoOp steps between the request and Wait, where Asterisk can lose a "
        "Redirect (docs/asterisk.md); the table goes to bench/results/route-race.md",
    )
    parser.add_argument(
        "--disabled-events",
        metavar="NAMES",
        default="",
        help="comma-separated events Asterisk raises for nobody (manager.conf "
        "[general] disabledevents, docs/asterisk.md): the events no variant reads",
    )
    parser.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="run each router variant alone on core CPU, Asterisk and the generator "
        "on the others (the same for every variant)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--ami-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--filter-lines", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.filter_lines:  # baseline_filter_lines: this process runs the baseline's code
        print(json.dumps(asyncio.run(engine_filter_lines())))
        return
    if args.serve:
        asyncio.run(serve(args))
        return
    global PIN
    PIN = args.pin
    args.rates = [int(r) for r in args.rates.split(",") if r]
    args.variants = [v for v in args.variants.split(",") if v]
    args.disabled_events = [e for e in args.disabled_events.split(",") if e]
    args.baseline_tree = None
    with contextlib.ExitStack() as stack:
        if args.baseline:
            args.baseline_tree = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            export_tree(args.baseline, args.baseline_tree)
        run(args)


def export_tree(rev: str, dest: Path) -> None:
    """The router and the 1C plugin as they are at ``rev`` (git archive), into ``dest``."""
    import subprocess

    archive = subprocess.run(
        [
            "git",
            "-C",
            str(Path(__file__).resolve().parent.parent),
            "archive",
            rev,
            "router",
            "plugins/onec/callrouter_onec",
        ],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def run(args: argparse.Namespace) -> None:
    from router.sandbox import Sandbox

    started = time.monotonic()
    sigterm_cleans_up()
    with Sandbox.start(
        name=f"bench-route-{os.getpid()}",
        extra_dialplan=bench_dialplan(WAIT, steps_after_request=args.race_steps),
    ) as box:
        if args.disabled_events:
            box.disable_events(args.disabled_events)
        cells = asyncio.run(drive(box, args))
    text = report(cells, args)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("route-race.md" if args.race_steps else "route.md")).write_text(text)
    print(f"(bench_route: {time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
