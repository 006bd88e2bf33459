"""Event feed latency: Asterisk's timestamp of a ringing -> in a long-polling client's hands.

Run: ``.venv/bin/python bench/bench_feed.py`` (``--clients``, ``--rate``,
``--duration``; about 20 s with the defaults).

One sandbox Asterisk (``timestampevents=yes``); the router runs in its own
subprocess (the Engine with ``[api]``, the shipped rules, the bench's 1C
stand-in) and serves the API on a local port. This process holds
``--clients`` long-polling HTTP clients (one keep-alive connection each, each
with its own cursor, as 100 1C sessions or browser tabs would) and places
calls at ``--rate`` per second on average (Poisson arrivals, fixed seed): each
dials ``Local/<ext>@bench-phone``, which rings for a second unanswered; its
``DialBegin`` becomes a ``ringing`` event for that extension.

Latency is, for every client and every ringing event, the client's
``time.time()`` when the response is parsed minus the event's ``ts``: the
``Timestamp`` Asterisk stamped ``DialBegin`` with (the same clock, on this
machine). It spans Asterisk queueing the event, the router's AJAM poll, the
engine and the feed, the HTTP answer, and the client's parse. The issue's
target: p95 <= 50 ms with 100 clients. Two scenarios: every client watching
extension 101 (each ringing answers 100 waiting requests at once: the worst
case), and each client watching its own extension (an office).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    BenchOneC,
    engine_config,
    free_port,
    make_rules_dir,
    md_table,
    pct,
    scratch_dir,
    sigterm_cleans_up,
)

TOKEN = "bench-feed-token"
DIALPLAN = """
[bench-ring]
exten => _X.,1,Dial(Local/${EXTEN}@bench-phone,5)
 same => n,Hangup()

[bench-phone]
exten => _X.,1,Wait(1)
 same => n,Hangup()
"""


async def serve(args: argparse.Namespace) -> None:
    """The router side, in its own process: the Engine with [api] on ``args.port``."""
    with scratch_dir("bench-feed-") as tmp:
        await _serve_in(tmp, args)


async def _serve_in(tmp: Path, args: argparse.Namespace) -> None:
    """:func:`serve` with its files in ``tmp``."""
    import logging

    from router.config import load_config
    from router.engine import Engine
    from router.plugins import Plugins

    logging.basicConfig(level=logging.WARNING, handlers=[logging.FileHandler(tmp / "router.log")])
    path = engine_config(tmp, args.url, args.secret, make_rules_dir(tmp, extra=0))
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    with path.open("a", encoding="utf-8") as toml:
        toml.write(
            f'[api]\nlisten = "127.0.0.1:{args.port}"\nevents_waiters = {args.clients + 10}\n'
            f'[api.tokens.bench]\nhash = "sha256:{digest}"\nallow = ["events:read"]\n'
            'extensions = ["1*", "2*"]\nrate = 10000\nburst = 100000\n'
        )
    onec = BenchOneC()
    await onec.warm()
    engine = Engine(load_config(path), plugins=Plugins.load(extra=[onec], disabled=["onec"]))
    await engine.start()
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)  # the driver closes our stdin
    await stop.wait()
    engine.request_stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
    await engine.stop()


async def client_loop(
    port: int,
    extension: str,
    stop: asyncio.Event,
    latencies: list[float],
    counts: list[int],
) -> None:
    """One long-polling client on its own keep-alive connection.

    Plain asyncio streams rather than an HTTP library: the figure is the
    router's, and 1C's ``HTTPСоединение`` is native code; a Python client
    library would add its own milliseconds per answer, times 100 clients
    sharing this process.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    cursor: int | None = None
    try:
        while not stop.is_set():
            query = f"timeout=5&extension={extension}"
            if cursor is not None:
                query += f"&cursor={cursor}"
            writer.write(
                f"GET /api/v1/events?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = json.loads(await reader.readexactly(length))
            now = time.time()
            if status != 200:
                counts[1] += 1
                await asyncio.sleep(0.1)
                continue
            for event in body["events"]:
                if event["kind"] == "ringing":
                    latencies.append((now - event["ts"]) * 1000)
                    counts[0] += 1
            cursor = body["cursor"]
    finally:
        writer.close()


#: (name, the extension each client watches, the extensions calls ring)
SCENARIOS: list[tuple[str, Callable[[int], str], Callable[[int], str]]] = [
    # Worst case: every client sees every ringing (100 screens on one extension).
    ("all clients watch 101", lambda i: "101", lambda n: "101"),
    # An office: each client watches its own extension; calls ring them in turn.
    ("each client its own extension", lambda i: str(101 + i), lambda n: str(101 + n % 100)),
]


async def scenario(
    box: Any,
    port: int,
    args: argparse.Namespace,
    watch: Callable[[int], str],
    ring: Callable[[int], str],
) -> dict[str, Any]:
    from router.ami.client import AJAMClient, ClientSettings

    latencies: list[float] = []
    counts = [0, 0]  # deliveries, errors
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(client_loop(port, watch(i), stop, latencies, counts))
        for i in range(args.clients)
    ]
    await asyncio.sleep(1.0)  # every client is waiting
    settings = ClientSettings(url=box.url, username="admin", secret=box.secret)
    placed = 0
    pacing = random.Random(13)
    async with AJAMClient(settings) as ami:
        started = time.monotonic()
        while time.monotonic() - started < args.duration:
            await ami.send(
                "Originate",
                {
                    "Channel": f"Local/{ring(placed)}@bench-ring",
                    "Application": "Wait",
                    "Data": "1",
                    "Async": "true",
                },
                validate=False,
            )
            placed += 1
            # Poisson arrivals (fixed seed): paced calls would line one call's
            # end up with the next one's ringing on every call, a pattern no PBX has.
            await asyncio.sleep(pacing.expovariate(args.rate))
        await asyncio.sleep(2.0)  # the last ringings arrive
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    watched = {watch(i) for i in range(args.clients)}
    expected = sum(sum(watch(i) == ring(n) for i in range(args.clients)) for n in range(placed))
    return {
        "placed": placed,
        "expected": expected if watched else 0,
        "latencies": sorted(latencies),
        "errors": counts[1],
    }


async def drive(box: Any, args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--url",
        box.url,
        "--secret",
        box.secret,
        "--port",
        str(port),
        "--clients",
        str(args.clients),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"READY":
        raise RuntimeError(f"the router did not start: {line!r}")
    results = []
    try:
        for name, watch, ring in SCENARIOS:
            results.append((name, await scenario(box, port, args, watch, ring)))
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
    return results


def report(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = []
    for name, result in results:
        values = result["latencies"]
        p95 = pct(values, 95) if values else float("nan")
        rows.append(
            [
                name,
                args.clients,
                f"{args.rate:g}",
                result["placed"],
                f"{len(values)} / {result['expected']}",
                f"{pct(values, 50):.1f}" if values else "-",
                f"{p95:.1f}",
                f"{values[-1]:.1f}" if values else "-",
                "yes" if values and p95 <= 50 else "NO",
            ]
        )
    return "### Event feed: ringing, Asterisk's timestamp -> long-polling client\n\n" + md_table(
        [
            "scenario",
            "clients",
            "calls/s",
            "calls",
            "deliveries",
            "p50 ms",
            "p95 ms",
            "max ms",
            "p95 <= 50 ms",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="calls per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of calls per scenario")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args))
        return
    from router.sandbox import Sandbox

    started = time.monotonic()
    sigterm_cleans_up()
    with Sandbox.start(name=f"bench-feed-{os.getpid()}", extra_dialplan=DIALPLAN) as box:
        results = asyncio.run(drive(box, args))
    text = report(results, args)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feed.md").write_text(text)
    print(f"(bench_feed: {time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
