"""What a 429 costs the API's event loop: a token over its own rate, and a
request without a token over its address's (``[api] anonymous_rate``).

Run: ``.venv/bin/python bench/bench_refusals.py`` (``--requests``,
``--workers``; a few seconds).

The API (:class:`~router.api.server.ApiServer` over a
:class:`~router.testing.StubEngine`) runs in this process, so its CPU is the
server's alone; a child process sends ``--requests`` requests for
``GET /api/v1/calls`` from ``--workers`` connections at once, every one
refused ``429``: the token's rate and the address's are both 1 in 1,000 s
(loopback limited too). Printed, for each case over ``--rounds`` rounds
(the cases in turn): the server's CPU microseconds per request (the least
and the median: the machine's other load only adds), the requests a second
served, and the statuses seen. Cases: ``anonymous`` (no token; a new connection each request, as the
connection of an anonymous 429 is read no more until its Retry-After),
``token`` (the same with a valid token) and ``token-keepalive`` (a valid
token, ``--workers`` keep-alive connections each sending its requests in
turn, as a client library does) (issue 16).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

TOKEN = b"cr_bench-refusals-token"
HEAD = b"GET /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n"
CASES = {
    "anonymous": (HEAD + b"Connection: close\r\n\r\n", False),
    "token": (HEAD + b"Authorization: Bearer " + TOKEN + b"\r\nConnection: close\r\n\r\n", False),
    "token-keepalive": (HEAD + b"Authorization: Bearer " + TOKEN + b"\r\n\r\n", True),
}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _one_per_connection(
    port: int, request: bytes, count: int, seen: collections.Counter[bytes]
) -> None:
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await reader.read()
        seen[answer[9:12]] += 1
        writer.close()


async def _keepalive(
    port: int, request: bytes, count: int, seen: collections.Counter[bytes]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        seen[head[9:12]] += 1
    writer.close()


def client_main(port: int, case: str, requests: int, workers: int, out: mp.Queue) -> None:
    request, keepalive = CASES[case]
    seen: collections.Counter[bytes] = collections.Counter()
    each = _keepalive if keepalive else _one_per_connection

    async def main() -> None:
        await asyncio.gather(
            *(each(port, request, requests // workers, seen) for _ in range(workers))
        )

    asyncio.run(main())
    out.put({k.decode(): v for k, v in seen.items()})


async def server_main(args: argparse.Namespace) -> None:
    from router.api.app import build_app
    from router.api.context import ApiContext
    from router.api.feed import EventFeed
    from router.api.server import ApiServer
    from router.api.settings import ApiSettings, TokenSettings
    from router.testing import StubEngine

    token = TokenSettings(
        name="busy",
        digest=hashlib.sha256(TOKEN).digest(),
        allow=("calls:read",),
        extensions=("*",),
        rate=0.001,
        burst=1,
    )
    settings = ApiSettings(
        port=0,
        tokens=MappingProxyType({"busy": token}),
        anonymous_rate=0.001,
        anonymous_burst=1,
        anonymous_loopback=True,
        max_connections=1024,
    )
    with tempfile.TemporaryDirectory() as folder:
        stub = StubEngine(state_dir=Path(folder))
        feed = EventFeed(max_events=100, retention=60)
        server = ApiServer(build_app(ApiContext(stub, settings, feed=feed)), settings)
        await server.start()
        try:
            context = mp.get_context("spawn")
            rounds: dict[str, list[tuple[float, float]]] = {case: [] for case in args.cases}
            seen: dict[str, collections.Counter[str]] = {
                case: collections.Counter() for case in args.cases
            }
            for _ in range(args.rounds):  # cases in turn: a neighbour's load spreads over all
                for case in args.cases:
                    out: mp.Queue = context.Queue()
                    child = context.Process(
                        target=client_main,
                        args=(server.port, case, args.requests, args.workers, out),
                    )
                    before, started = cpu(), time.perf_counter()
                    child.start()
                    seen[case].update(await asyncio.to_thread(out.get))  # the loop serves
                    used, wall = cpu() - before, time.perf_counter() - started
                    child.join()
                    rounds[case].append((used / args.requests * 1e6, args.requests / wall))
            for case, figures in rounds.items():
                costs = sorted(cost for cost, _ in figures)
                print(
                    f"{case:16} CPU/request min {costs[0]:4.0f} us, median "
                    f"{statistics.median(costs):4.0f} us; "
                    f"{max(rate for _, rate in figures):5.0f} requests/s at best; "
                    f"statuses {dict(seen[case])}"
                )
        finally:
            await server.stop()
            await feed.aclose()
            await stub.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    asyncio.run(server_main(parser.parse_args()))


if __name__ == "__main__":
    main()
