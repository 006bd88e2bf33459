"""An event flood at the TCP AMI client: its CPU, and when the gap is signalled.

Run: ``.venv/bin/python bench/bench_flood.py`` (``--events``, ``--queue``,
``--per-event-us``; a few seconds).

A fake Asterisk in a child process (so this process's CPU is the client's
alone) floods ``--events`` ``Newstate`` events of about 200 bytes at a
:class:`~router.ami.tcp.TCPClient` bounded at ``--queue`` queued events, and
answers ``Ping`` actions among them. The consumer takes ``wait_event``
batches and sleeps ``--per-event-us`` an event (the engine's work, off the
CPU). Printed: the client's CPU seconds from the flood's start until a Ping
held back to the flood's end is answered (every byte read), when the gap
(``AMIEventsDropped``) is signalled, the events delivered plus those counted
dropped (their sum is the flood), and the Pings' latency during it (issue 16).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import resource
import time

from router.ami.client import ClientSettings
from router.ami.tcp import TCPClient
from router.errors import AMIEventsDropped

PAD = b"x" * 60


def peer_main(port_q: mp.Queue, total: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        flooding = False
        tasks: list[asyncio.Future[None]] = []
        held: list[str] = []
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            h = {}
            for line in raw.decode().split("\r\n"):
                if ": " in line:
                    k, v = line.split(": ", 1)
                    h[k.lower()] = v
            aid = h.get("actionid", "")
            name = h.get("action", "").lower()
            if name == "ping" and h.get("hold"):
                held.append(aid)
                if not flooding:
                    flooding = True
                    tasks.append(asyncio.ensure_future(flood(writer, held)))
                continue
            writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode())

    async def flood(writer: asyncio.StreamWriter, held: list[str]) -> None:
        chunk = []
        for i in range(total):
            chunk.append(
                b"Event: Newstate\r\nPrivilege: call,all\r\nChannel: PJSIP/1-%08d\r\n"
                b"ChannelState: 5\r\nChannelStateDesc: Ringing\r\nUniqueid: 17.%d\r\n"
                b"Linkedid: 17.%d\r\nSeq: %d\r\nPad: %s\r\n\r\n" % (i, i, i, i, PAD)
            )
            if len(chunk) == 200:
                writer.write(b"".join(chunk))
                chunk.clear()
                await writer.drain()
        writer.write(b"".join(chunk))
        for aid in held:
            writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Done\r\n\r\n".encode())
        await writer.drain()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port_q.put(server.sockets[0].getsockname()[1])
        await asyncio.sleep(3600)

    asyncio.run(main())


async def client_main(port: int, total: int, per_event: float, queue: int) -> None:
    client = TCPClient(
        ClientSettings(
            url=f"tcp://127.0.0.1:{port}",
            username="u",
            secret="s",
            max_queued_events=queue,
            request_timeout=120,
        )
    )
    await client.login()
    delivered = 0
    gap_at: float | None = None
    dropped_msg = ""
    stop = False
    gap_seen = asyncio.Event()

    async def consume() -> None:
        nonlocal delivered, gap_at, dropped_msg
        while not stop:
            try:
                events = await client.wait_event(1)
            except AMIEventsDropped as exc:
                if gap_at is None:
                    gap_at = time.perf_counter()
                    dropped_msg = str(exc)
                    gap_seen.set()
                continue
            delivered += len(events)
            await asyncio.sleep(len(events) * per_event)  # the engine's work, off-CPU

    pings: list[float] = []

    async def ping_during() -> None:
        while not stop:
            t = time.perf_counter()
            await client.action("Ping")
            pings.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)

    consumer = asyncio.ensure_future(consume())
    pinger = asyncio.ensure_future(ping_during())
    cpu0, t0 = time.process_time(), time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    done = await client.action("Ping", {"Hold": "1"})  # answered after the whole flood
    t1, cpu1 = time.perf_counter(), time.process_time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    assert done.response.get("Ping") == "Done"
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gap_seen.wait(), 20)
    stop = True
    await asyncio.sleep(1.2)
    consumer.cancel()
    pinger.cancel()
    print(
        f"flood of {total} events read in {t1 - t0:.2f} s wall, client CPU {cpu1 - cpu0:.2f} s "
        f"(user {ru1.ru_utime - ru0.ru_utime:.2f} sys {ru1.ru_stime - ru0.ru_stime:.2f})"
    )
    print(f"gap signalled after {gap_at - t0:.2f} s" if gap_at else "no gap signalled")
    print(
        f"delivered {delivered}, dropped counted {dropped_msg.split(' events')[0]}, "
        f"sum {delivered + int(dropped_msg.split(' events')[0] or 0)}"
    )
    print(f"pings during flood: {len(pings)}, max latency {max(pings) * 1000:.1f} ms")
    await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--per-event-us", type=float, default=50.0)
    ap.add_argument("--queue", type=int, default=10_000)
    args = ap.parse_args()
    q: mp.Queue = mp.Queue()
    proc = mp.Process(target=peer_main, args=(q, args.events), daemon=True)
    proc.start()
    try:
        asyncio.run(client_main(q.get(), args.events, args.per_event_us * 1e-6, args.queue))
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
