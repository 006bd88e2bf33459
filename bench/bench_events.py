"""What Asterisk-side event filtering saves: events handled and router CPU.

Run: ``.venv/bin/python bench/bench_events.py`` (``--rate``, ``--duration``;
about a minute).

One sandbox Asterisk runs the shipped ``[callrouter-inbound]`` context
(``examples/asterisk/extensions.conf``) with CEL on, as bench_route.py does.
A call generator in this process originates Local-channel calls at
``--rate`` per second for ``--duration`` seconds; each time the engine (the
shipped rules, 1,000 extra non-matching rules, the directory plugin and a warm
1C cache, as bench_route's ``engine`` variant) runs alone in its own
subprocess, so its CPU time (``/proc/PID/stat``) is its own; Asterisk's is
read the same way (it runs the filters, and it serves every session, the call
generator's included). Variants:

* ``all / router``: ``[asterisk] events = "all"``, the recommended
  least-privileged ``router`` user (``read = call,dialplan,user,agent,system``):
  every event of its classes.
* ``auto / router``: ``events = "auto"`` with the same user: the ``Events:``
  class mask only, since the ``Filter`` action needs ``write = system``.
* ``auto / admin``: ``events = "auto"`` with a user that may send ``Filter``
  (and reads every class): class mask and event-name filters.

A counter wrapped around ``Engine.handle_event`` counts the events the engine
handled (those Asterisk sent and the client did not drop before parsing: a
plugin would see only the events it names). "routed" counts
calls that reached ``callrouter-dial`` before the dialplan's fail-open wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    CALLERS,
    DID,
    RESULTS,
    BenchOneC,
    bench_dialplan,
    engine_config,
    make_rules_dir,
    md_table,
    scratch_dir,
    sigterm_cleans_up,
)

VARIANTS = (("all", "router"), ("auto", "router"), ("auto", "admin"))
WAIT = 4


class Counter:
    """Counts every event the engine handles (those Asterisk sent and the client
    did not drop before parsing): :meth:`Engine.handle_event`, wrapped."""

    def __init__(self) -> None:
        self.events = 0
        self.counting = False
        self.names: dict[str, int] = {}

    def wrap(self, engine: Any) -> None:
        handle = engine.handle_event

        async def counted(event: Any) -> None:
            if self.counting:
                self.events += 1
                self.names[event.name] = self.names.get(event.name, 0) + 1
            await handle(event)

        engine.handle_event = counted


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    with scratch_dir("bench-events-") as tmp:
        return await _serve_in(tmp, args)


async def _serve_in(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`serve` with its files in ``tmp``."""
    import logging

    from router.config import load_config
    from router.engine import Engine
    from router.plugins import Plugins

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    logging.basicConfig(level=logging.INFO, handlers=[logging.FileHandler(tmp / "router.log")])
    rules = make_rules_dir(tmp, extra=1000)
    path = engine_config(tmp, args.url, args.secret, rules, username=args.user)
    path.write_text(
        path.read_text().replace("[router]\n", f'events = "{args.events}"\n[router]\n'),
        encoding="utf-8",
    )
    onec = BenchOneC()
    await onec.warm()
    counter = Counter()
    engine = Engine(load_config(path), plugins=Plugins.load(extra=[onec], disabled=["onec"]))
    counter.wrap(engine)
    await engine.start()
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    selection = engine.ami.event_selection
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: setattr(counter, "counting", True)
    )
    print("READY", flush=True)
    await stop.wait()
    engine.request_stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 10)
    await engine.stop()
    return {
        "events": counter.events,
        "mask": selection.mask,
        "names": None if selection.names is None else len(selection.names),
        "by_name": counter.names,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_variant(
    placer: Any, box: Any, events: str, user: str, rate: int, duration: float, tmp: Path
) -> list[Any]:
    out = tmp / f"{events}-{user}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--events",
        events,
        "--user",
        user,
        "--url",
        box.url,
        "--secret",
        box.secret,
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"READY":
        err = await proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"{events}/{user} did not start: {line!r} {err.decode()[-2000:]}")
    try:
        warm = [await placer.place(DID, CALLERS[i % len(CALLERS)]) for i in range(3)]
        await placer.wait_all(warm, timeout=WAIT + 2)
        proc.send_signal(signal.SIGUSR1)  # count from here: the warm-up is not measured
        await asyncio.sleep(0.1)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        asterisk0 = cpu_seconds(box.pid)
        tasks = []
        for i in range(int(rate * duration)):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(placer.place(DID, CALLERS[i % len(CALLERS)])))
        placed = [
            c
            for c in await asyncio.gather(*tasks, return_exceptions=True)
            if not isinstance(c, BaseException)
        ]
        await placer.wait_all(placed, timeout=WAIT + 3)
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        asterisk = cpu_seconds(box.pid) - asterisk0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
    stats = json.loads(out.read_text()) if out.exists() else {}
    routed = sum(1 for c in placed if c.context == "callrouter-dial")
    top = sorted(stats.get("by_name", {}).items(), key=lambda kv: -kv[1])[:12]
    print(f"{events}/{user}: {top}", file=sys.stderr)
    handled = int(stats.get("events", 0))
    return [
        f"{events} / {user}",
        str(stats.get("mask", "?")),
        "all" if stats.get("names") is None else str(stats["names"]),
        len(placed),
        routed,
        handled,
        round(handled / wall),
        round(handled / max(len(placed), 1), 1),
        round(cpu / wall * 100, 1),
        round(asterisk / wall * 100, 1),
    ]


async def drive(box: Any, args: argparse.Namespace) -> list[list[Any]]:
    from router.ami.client import AJAMClient, ClientSettings
    from router.sandbox.calls import CallPlacer

    settings = ClientSettings(url=box.url, username="admin", secret=box.secret)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with AJAMClient(settings) as ami, CallPlacer(ami) as placer:
            for variant in args.variants.split(","):
                events, user = variant.split("/")
                rows.append(
                    await run_variant(
                        placer, box, events, user, args.rate, args.duration, Path(tmp)
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--variants",
        default=",".join(f"{e}/{u}" for e, u in VARIANTS),
        help="comma-separated EVENTS/USER pairs, run in this order",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        stats = asyncio.run(serve(args))
        Path(args.out).write_text(json.dumps(stats), encoding="utf-8")
        return
    from router.sandbox import Sandbox

    started = time.monotonic()
    sigterm_cleans_up()
    with Sandbox.start(
        name=f"bench-events-{os.getpid()}", extra_dialplan=bench_dialplan(WAIT)
    ) as box:
        rows = asyncio.run(drive(box, args))
    text = (
        f"### Event filtering: events handled and router CPU "
        f"({args.rate} calls/s for {args.duration:g} s, the engine with 1,001 rules)\n\n"
        + md_table(
            [
                "events / user",
                "Events: mask",
                "names filtered",
                "calls",
                "routed",
                "events handled",
                "events/s",
                "events per call",
                "router CPU %",
                "Asterisk CPU %",
            ],
            rows,
        )
        + "\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "events.md").write_text(text)
    print(f"(bench_events: {time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
