"""Ingest: parse + dispatch throughput, events per second per core, rawman vs mxml vs panoramisk.

Run: ``.venv/bin/python bench/bench_ingest.py`` (``--events N``, ``--recapture``).

The input is real: the first run starts the sandbox Asterisk, originates a
burst of calls through the shipped ``[callrouter-inbound]`` context and records
every WaitEvent body of two sessions polling side by side, one on ``/rawman``
and one on ``/mxml`` (the same events in both formats). The bodies are cached
in ``bench/results/capture.json``; later runs only read the cache. The
captured bodies are replayed in order until ``--events`` events (default
100,000) went through.

Measured, single-threaded, with CPU time (``time.process_time``) so the figure
is per core and other load on the machine does not count:

* **parse**: a body -> ``Event`` objects, exactly as ``AJAMClient.wait_event``
  does it (``parse_body`` -> ``assemble_result`` -> ``split_waitevent``).
* **parse + dispatch**: plus an ``EventStream`` glob filter (``wants``) and
  ``CallTracker.feed`` for every event that passes, plus reading ``name``.
* **tcp stream (ours)**: the same bytes through the native TCP client's
  ``data_received`` (stream parser, ActionID matching, event queue).
* **panoramisk**: the same rawman bytes fed, body by body, to panoramisk's
  ``AMIProtocol.data_received`` (its TCP entry point: split into blocks,
  ``Message.from_line``, ``handle_message``); "dispatch" adds its
  ``Manager.dispatch`` glob callbacks (same patterns, a callback that only
  reads the event name, so panoramisk does less per event than our dispatch).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CALLERS, DID, RESULTS, bench_dialplan, md_table, sigterm_cleans_up

CAPTURE = RESULTS / "capture.json"
PATTERNS = (
    "Newchannel",
    "Newexten",
    "UserEvent",
    "Hangup",
    "VarSet",
    "Dial*",
    "Bridge*",
    "NewCallerid",
    "Newstate",
    "Local*",
)


# ----------------------------------------------------------------------------- capture


async def _capture(box: Any, calls: int, rate: float) -> dict[str, list[str]]:
    import httpx

    from router.ami.client import AJAMClient, ClientSettings
    from router.sandbox.calls import CallPlacer

    bodies: dict[str, list[str]] = {"rawman": [], "mxml": []}
    stop = asyncio.Event()

    async def poll(fmt: str, http: httpx.AsyncClient) -> None:
        url = f"{box.url}/{fmt}"
        await http.post(url, data={"Action": "Login", "Username": "router", "Secret": box.secret})
        while not stop.is_set():
            resp = await http.post(url, data={"Action": "WaitEvent", "Timeout": "1"})
            if b"Event" in resp.content or b"event=" in resp.content:
                bodies[fmt].append(resp.content.decode("utf-8"))

    async with httpx.AsyncClient(timeout=30) as h1, httpx.AsyncClient(timeout=30) as h2:
        pollers = [asyncio.create_task(poll("rawman", h1)), asyncio.create_task(poll("mxml", h2))]
        await asyncio.sleep(0.5)
        settings = ClientSettings(url=box.url, username="admin", secret=box.secret)
        async with AJAMClient(settings) as client, CallPlacer(client) as placer:
            placed = []
            for i in range(calls):
                placed.append(await placer.place(DID, CALLERS[i % len(CALLERS)], wait=1))
                await asyncio.sleep(1 / rate)
            await placer.wait_all(placed, timeout=10)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*pollers, return_exceptions=True)
    return bodies


def load_capture(recapture: bool = False) -> dict[str, list[str]]:
    if CAPTURE.exists() and not recapture:
        data: dict[str, list[str]] = json.loads(CAPTURE.read_text(encoding="utf-8"))
        return data
    from router.sandbox import Sandbox

    print("capturing WaitEvent bodies from the sandbox (once)...", file=sys.stderr)
    sigterm_cleans_up()
    with Sandbox.start(name="bench-capture", extra_dialplan=bench_dialplan()) as box:
        data = asyncio.run(_capture(box, calls=300, rate=60))
    RESULTS.mkdir(parents=True, exist_ok=True)
    CAPTURE.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data


# ----------------------------------------------------------------------------- runners


def ours(fmt: str, dispatch: bool) -> Callable[[bytes], int]:
    from router.ami.protocol import assemble_result, parse_body, split_waitevent
    from router.ami.stream import EventStream
    from router.calls import CallTracker

    ctype = "text/xml" if fmt == "mxml" else "text/plain"
    stream = EventStream(None, PATTERNS)  # type: ignore[arg-type]
    tracker = CallTracker()
    wants, feed = stream.wants, tracker.feed

    def run(body: bytes) -> int:
        messages = parse_body(body, ctype)
        result = assemble_result(messages)
        _, events = split_waitevent((result.response, *result.extra))
        if dispatch:
            for event in events:
                if wants(event.name):
                    feed(event)
        return len(events)

    return run


def ours_tcp() -> Callable[[bytes], int]:
    """The native TCP client's ``data_received`` (router/ami/tcp.py) on the same
    bytes: the stream parser, answer matching and the event queue, every event
    kept (no selection), as panoramisk's ``data_received`` gets them."""
    from router.ami.client import ClientSettings
    from router.ami.tcp import TCPClient, _Connection

    loop = asyncio.new_event_loop()
    client = TCPClient(ClientSettings(url="tcp://127.0.0.1:5038", username="u", secret="s"))

    async def connect() -> _Connection:
        return _Connection(client, 32 * 1024 * 1024)

    conn = loop.run_until_complete(connect())
    conn.data_received(b"Asterisk Call Manager/11.0.0\r\n")
    queue = client._events

    def run(body: bytes) -> int:
        conn.data_received(body)
        n = len(queue) - body.count(b"Event: WaitEventComplete")
        # Taken, as the engine's reader takes them: the client's bound on what
        # waits (32 MiB) counts bytes too, and at 100,000 events a run filled it,
        # so every later event was dropped and the loop never reached its count.
        queue.clear()
        client._queued_bytes = 0
        return n

    return run


def panoramisk(dispatch: bool) -> Callable[[bytes], int]:
    from panoramisk import Manager
    from panoramisk.ami_protocol import AMIProtocol

    class Transport:
        def write(self, data: bytes) -> None: ...
        def close(self) -> None: ...

    manager = Manager(loop=asyncio.new_event_loop())
    manager.callbacks.clear()
    manager.patterns = []
    counted = [0]

    def callback(mgr: Any, event: Any) -> None:
        event.event  # noqa: B018 - read the name, as our dispatch does

    if dispatch:
        for pattern in PATTERNS:
            manager.register_event(pattern, callback)
    protocol = AMIProtocol()
    protocol.connection_made(Transport())
    protocol.factory = manager
    protocol.encoding = "utf8"
    protocol.version = "11.0.0"  # skip banner sniffing, as after a TCP login
    original = manager.dispatch

    def counting_dispatch(event: Any) -> Any:
        counted[0] += 1
        return original(event)

    manager.dispatch = counting_dispatch  # type: ignore[method-assign]

    def run(body: bytes) -> int:
        before = counted[0]
        protocol.data_received(body)
        return counted[0] - before - body.count(b"Event: WaitEventComplete")

    return run


def measure(run: Callable[[bytes], int], bodies: list[bytes], target: int) -> tuple[int, float]:
    gc.collect()
    events = 0
    start = time.process_time()
    while events < target:
        before = events
        for body in bodies:
            events += run(body)
            if events >= target:
                break
        if events == before:  # a whole capture and not one event: never ends
            raise SystemExit(f"{run!r} took no event from a whole pass of the capture")
    return events, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--recapture", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    args = parser.parse_args()
    capture = load_capture(args.recapture)
    raw = [b.encode("utf-8") for b in capture["rawman"]]
    xml = [b.encode("utf-8") for b in capture["mxml"]]
    n_events = sum(b.count(b"\r\nEvent: ") + b.startswith(b"Event: ") for b in raw) - len(raw)
    runs: list[tuple[str, str, Callable[[bytes], int], list[bytes]]] = [
        ("rawman (ours)", "parse", ours("rawman", False), raw),
        ("mxml (ours)", "parse", ours("mxml", False), xml),
        ("panoramisk", "parse", panoramisk(False), raw),
        ("tcp stream (ours)", "parse", ours_tcp(), raw),
        ("rawman (ours)", "parse + dispatch", ours("rawman", True), raw),
        ("mxml (ours)", "parse + dispatch", ours("mxml", True), xml),
        ("panoramisk", "parse + dispatch", panoramisk(True), raw),
    ]
    results: dict[tuple[str, str], float] = {}
    for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
        for name, stage, run, bodies in runs:
            events, cpu = measure(run, bodies, args.events)
            rate = events / cpu
            results[(name, stage)] = max(results.get((name, stage), 0.0), rate)
    rows = []
    for name, stage, _, _ in runs:
        rate = results[(name, stage)]
        pano = results[("panoramisk", stage)]
        rows.append(
            [name, stage, round(rate), f"{rate / pano:.2f}x", "yes" if rate >= 50_000 else "NO"]
        )
    text = (
        f"### Ingest: events per second per core ({args.events:,} events from a real "
        f"capture of {n_events:,} events in {len(raw)} WaitEvent bodies, best of "
        f"{args.repeat})\n\n"
        + md_table(["parser", "stage", "events/s/core", "vs panoramisk", ">= 50k"], rows)
        + "\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.md").write_text(text)


if __name__ == "__main__":
    main()
