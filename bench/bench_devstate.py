"""A BLF flood: the router's CPU per DeviceStateChange (and ExtensionStatus, PresenceStateChange).

Run: ``.venv/bin/python bench/bench_devstate.py`` (``--rate``, ``--seconds``,
``--mix``, ``--consumers``, ``--repeat``; ``--baseline REV`` also runs
revision REV's router, alternated; ``--profile FILE`` writes a cProfile of one
``api`` run; about a minute).

A PBX with many busy-lamp fields sends a ``DeviceStateChange`` for every
change of every phone's state, and an ``ExtensionStatus`` for every hint
(issue 16: 8,000 a second measured on one). A fake Asterisk in a child
process (so this process's CPU is the router's alone) lets the engine log in
over TCP AMI, answers its actions, then writes ``--rate`` events a second
for ``--seconds`` seconds, in a write every 10 ms, in Asterisk 22's format
(``tests/fixtures/ami/waitevent_hangup.rawman``): ``--mix devstate`` only
``DeviceStateChange`` over 200 devices; ``--mix blf`` 6 in 10 of those, 3
``ExtensionStatus`` and 1 ``PresenceStateChange``. It honours the ``Filter``
actions the engine sends (an ``admin`` user that may send them), so an
event the engine did not ask for is not written when ``--filter`` is given;
without it (the recommended ``router`` user, no ``write = system``) every
event is written and the client must skip it itself.

The engine (the shipped rules, the directory plugin, a warm 1C cache) runs
in this process with a temporary config; each variant in ``--consumers``:

* ``none``: no ``[api]``, no call life listener: nothing reads these events;
* ``api``: ``[api]`` on (its event feed translates ``DeviceStateChange`` to
  ``device`` and ``ExtensionStatus`` to ``presence``);
* ``api+life``: that and a call life listener (``callrouter_call_event``);
* ``cache``: ``[plugins.extension_state] cache = true`` (reads ``ExtensionStatus``).

Printed per variant: whether the engine asked Asterisk for
``DeviceStateChange`` (its ``Filter`` actions), the process's CPU time
(``time.process_time``) over the flood and until the last event is handled,
less the same engine's CPU over an idle stretch as long, per event (us) and
as a share of a core at ``--rate``, the median of ``--repeat`` processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchOneC, engine_config, free_port, make_rules_dir, md_table, scratch_dir

CONSUMERS = ("none", "api", "api+life", "cache")
DEVICES = 200
#: Asterisk's device states, as DeviceStateChange's ``State`` writes them.
STATES = ("NOT_INUSE", "INUSE", "RINGING", "ONHOLD", "UNAVAILABLE", "BUSY", "RINGINUSE")
#: ExtensionStatus ``Status`` numbers and their ``StatusText``.
HINTS = ((0, "Idle"), (1, "InUse"), (8, "Ringing"), (16, "OnHold"), (4, "Unavailable"))


# ================================================================================ the peer


def _block(pairs: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n"


def flood_events(count: int, mix: str, start: int = 0) -> list[bytes]:
    """``count`` events of the mix, numbered from ``start``."""
    out: list[bytes] = []
    for i in range(start, start + count):
        ext = 100 + i % DEVICES
        stamp = f"{1795460784 + i / 8000:.6f}"
        kind = i % 10 if mix == "blf" else 0
        if kind < 6:
            out.append(
                b"Event: DeviceStateChange\r\nPrivilege: call,all\r\nTimestamp: %s\r\n"
                b"SystemName: pbx-1\r\nDevice: PJSIP/%d\r\nState: %s\r\n\r\n"
                % (stamp.encode(), ext, STATES[(i // DEVICES) % len(STATES)].encode())
            )
        elif kind < 9:
            status, text = HINTS[(i // DEVICES) % len(HINTS)]
            out.append(
                b"Event: ExtensionStatus\r\nPrivilege: call,all\r\nTimestamp: %s\r\n"
                b"SystemName: pbx-1\r\nExten: %d\r\nContext: ext-local\r\n"
                b"Hint: PJSIP/%d&Custom:DND%d\r\nStatus: %d\r\nStatusText: %s\r\n\r\n"
                % (stamp.encode(), ext, ext, ext, status, text.encode())
            )
        else:
            out.append(
                b"Event: PresenceStateChange\r\nPrivilege: call,all\r\nTimestamp: %s\r\n"
                b"SystemName: pbx-1\r\nPresentity: CustomPresence:%d\r\nStatus: available\r\n"
                b"Subtype: \r\nMessage: \r\n\r\n" % (stamp.encode(), ext)
            )
    return out


#: Written after the flood's last event.
END_MARK = b"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: BenchFloodEnd\r\n\r\n"


def _event_name(raw: bytes) -> bytes:
    return raw[7 : raw.index(b"\r\n")]


def peer_main(port_q: Any, rate: int, seconds: float, mix: str, honour_filters: bool) -> None:
    """The fake Asterisk: answers every action, and floods on ``Ping`` with
    ``Hold: 1`` (answered after the flood's last event)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        names: set[bytes] = set()
        filtered = False
        tasks: list[asyncio.Task[None]] = []
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                return
            h: dict[str, str] = {}
            for line in raw.decode().split("\r\n"):
                key, _, value = line.partition(": ")
                h.setdefault(key.lower(), value)
            name, aid = h.get("action", "").lower(), h.get("actionid", "")
            ok = [("Response", "Success"), ("ActionID", aid), ("Message", "ok")]
            if name == "filter":
                criteria = h.get("matchcriteria", "")
                if "name(" in criteria:
                    filtered = True
                    names.add(criteria.split("name(", 1)[1].split(")", 1)[0].encode())
                elif h.get("filter") == "Event:":
                    filtered, names = False, set()
                port_q.put(("filter", criteria))
                writer.write(_block(ok))
            elif name == "coreshowchannels":
                writer.write(
                    _block([*ok, ("EventList", "start")])
                    + _block(
                        [
                            ("Event", "CoreShowChannelsComplete"),
                            ("ActionID", aid),
                            ("EventList", "Complete"),
                            ("ListItems", "0"),
                        ]
                    )
                )
            elif name == "redirect":
                writer.write(
                    _block(
                        [("Response", "Error"), ("ActionID", aid), ("Message", "No such channel")]
                    )
                )
            elif name == "ping" and h.get("hold"):
                wanted = names if (honour_filters and filtered) else None
                tasks.append(asyncio.ensure_future(flood(writer, aid, wanted)))
            elif name == "ping":
                writer.write(_block([("Response", "Success"), ("ActionID", aid), ("Ping", "Pong")]))
            else:
                writer.write(_block(ok))

    async def flood(writer: asyncio.StreamWriter, aid: str, wanted: set[bytes] | None) -> None:
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        ticks = round(seconds / tick)
        sent = 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n in range(ticks):
            events = flood_events(per_tick, mix, n * per_tick)
            if wanted is not None:
                events = [e for e in events if _event_name(e) in wanted]
            sent += len(events)
            writer.write(b"".join(events))
            await writer.drain()
            delay = t0 + (n + 1) * tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        # The engine handles events in order: once it has handled this one, it
        # has handled the flood (the Ping's answer is read at once, ahead of
        # events still queued).
        writer.write(END_MARK)
        writer.write(_block([("Response", "Success"), ("ActionID", aid), ("Ping", f"Done {sent}")]))
        await writer.drain()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port_q.put(("port", server.sockets[0].getsockname()[1]))
        await asyncio.sleep(3600)

    asyncio.run(main())


# ================================================================================ the router


class LifeListener:
    """A ``callrouter_call_event`` plugin: the call life folds CEL for it."""

    __name__ = "bench_life"

    def __init__(self) -> None:
        from router.hookspecs import hookimpl

        self.told = 0

        def callrouter_call_event(event: Any) -> None:
            self.told += 1

        self.callrouter_call_event = hookimpl(callrouter_call_event)


async def run_once(
    args: argparse.Namespace, consumers: str, profile: Path | None
) -> dict[str, Any]:
    with scratch_dir("bench-devstate-") as tmp:
        return await _run_in(tmp, args, consumers, profile)


async def _run_in(
    tmp: Path, args: argparse.Namespace, consumers: str, profile: Path | None
) -> dict[str, Any]:
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    ctx = mp.get_context("fork")
    q: Any = ctx.Queue()
    peer = ctx.Process(
        target=peer_main, args=(q, args.rate, args.seconds, args.mix, args.filter), daemon=True
    )
    peer.start()
    try:
        kind, port = q.get(timeout=10)
        assert kind == "port"
        logging.basicConfig(level=logging.INFO, handlers=[logging.FileHandler(tmp / "router.log")])
        with_lean = __import__("router.commands.run", fromlist=["lean_log_records"])
        lean = getattr(with_lean, "lean_log_records", None)
        if lean is not None:
            lean()
        rules = make_rules_dir(tmp, extra=0)
        path = engine_config(tmp, f"tcp://127.0.0.1:{port}", "x", rules)
        text = path.read_text().replace("waitevent_timeout = 20\n", "")
        if consumers.startswith("api"):
            text += f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
        if consumers == "cache":
            text += "[plugins.extension_state]\ncache = true\n"
        path.write_text(text)
        onec = BenchOneC()
        await onec.warm()
        extra: list[Any] = [onec]
        if consumers == "api+life":
            extra.append(LifeListener())
        engine = Engine(
            load_config(path),
            plugins=Plugins.load(extra=extra, disabled=["onec"]),
            options=EngineOptions(freeze_gc=True, live_heartbeat=0),
        )
        await engine.start()
        task = asyncio.create_task(engine.serve())
        await asyncio.wait_for(engine.ready.wait(), 10)
        await asyncio.sleep(0.3)
        asked: list[str] = []
        while not q.empty():
            what, criteria = q.get()
            if what == "filter":
                asked.append(criteria)
        devstate_asked = any("name(DeviceStateChange)" in c for c in asked) if asked else None
        counts = engine.metrics.event_counts
        counted0 = sum(counts.values())
        # The engine's own CPU with nothing coming, over as long a stretch.
        idle0 = time.process_time()
        await asyncio.sleep(args.seconds)
        idle = time.process_time() - idle0
        profiler = None
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu0, t0 = time.process_time(), time.perf_counter()
        ends = counts.get("UserEvent", 0)
        done = await engine.ami.action("Ping", {"Hold": "1"}, timeout=args.seconds + 30)
        deadline = time.monotonic() + 60
        # Polled only from the Ping's answer on (a listener would cost every event).
        while counts.get("UserEvent", 0) == ends and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        await engine.wait_idle()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        sent = int(str(done.response.get("Ping")).split()[-1])
        handled = sum(counts.values()) - counted0 - 1  # not the end mark
        engine.request_stop()
        await asyncio.wait_for(task, 10)
        await engine.stop()
        log_text = (tmp / "router.log").read_text(encoding="utf-8", errors="replace")
        fell_behind = log_text.count("callrouter fell behind the events")
    finally:
        peer.terminate()
    flooded = args.rate * args.seconds
    return {
        "consumers": consumers,
        "sent": sent,
        "handled": handled,
        "fell_behind": fell_behind,
        "cpu": cpu,
        "idle": idle,
        "wall": wall,
        "us_per_event": (cpu - idle) / flooded * 1e6,
        "core_pct": (cpu - idle) / args.seconds * 100,
        "devstate_asked": devstate_asked,
    }


# ================================================================================= main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=8000, help="events a second (default 8000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="flood length (default 3)")
    parser.add_argument("--mix", choices=("devstate", "blf"), default="devstate")
    parser.add_argument(
        "--consumers",
        default="none,api",
        help=f"comma-separated variants of {', '.join(CONSUMERS)} (default none,api)",
    )
    parser.add_argument(
        "--filter",
        action="store_true",
        help="the fake Asterisk honours the engine's Filter actions (an admin user)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="processes per cell (default 3)")
    parser.add_argument("--baseline", metavar="REV", help="also run revision REV's router")
    parser.add_argument("--profile", metavar="FILE", help="cProfile one api run into FILE")
    parser.add_argument("--once", metavar="CONSUMERS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once or args.profile:
        consumers = args.once or "api"
        profile = Path(args.profile) if args.profile else None
        print(json.dumps(asyncio.run(run_once(args, consumers, profile))))
        return
    variants = [v.strip() for v in args.consumers.split(",") if v.strip()]
    for v in variants:
        if v not in CONSUMERS:
            parser.error(f"--consumers: {v!r} is not one of {', '.join(CONSUMERS)}")
    trees: list[tuple[str, str | None]] = [("this checkout", None)]
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as base:
        if args.baseline:
            from bench_route import export_tree

            export_tree(args.baseline, Path(base))
            trees.append((args.baseline, base))
        for _ in range(args.repeat):
            for variant in variants:
                for label, tree in trees:
                    env = dict(os.environ)
                    env.pop("CALLROUTER_BENCH_BASELINE", None)
                    if tree is not None:
                        env["CALLROUTER_BENCH_BASELINE"] = tree
                    command = [
                        sys.executable,
                        __file__,
                        "--once",
                        variant,
                        "--rate",
                        str(args.rate),
                        "--seconds",
                        str(args.seconds),
                        "--mix",
                        args.mix,
                        *(["--filter"] if args.filter else []),
                    ]
                    out = subprocess.run(
                        command, env=env, check=True, capture_output=True, text=True
                    ).stdout
                    rows.setdefault((variant, label), []).append(
                        json.loads(out.strip().splitlines()[-1])
                    )
    print(
        f"### A BLF flood: {args.rate:,} events/s for {args.seconds:g} s, mix {args.mix}, "
        f"Filter {'honoured' if args.filter else 'not sent/refused'} "
        f"(median of {args.repeat})\n"
    )
    print(
        md_table(
            [
                "consumers",
                "router",
                "DeviceStateChange asked for",
                "events sent",
                "events handled",
                "fell behind",
                "us per event (median)",
                "each run",
                f"% of a core at {args.rate:,}/s",
            ],
            [
                [
                    variant,
                    label,
                    {True: "yes", False: "no", None: "(no Filter)"}[runs[0]["devstate_asked"]],
                    runs[0]["sent"],
                    runs[0]["handled"],
                    sum(r["fell_behind"] for r in runs),
                    statistics.median(r["us_per_event"] for r in runs),
                    ", ".join(f"{r['us_per_event']:.1f}" for r in runs),
                    statistics.median(r["core_pct"] for r in runs),
                ]
                for (variant, label), runs in rows.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
