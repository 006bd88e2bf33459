"""A routing request's own path with cold caches: the engine's, beside the bare panoramisk loop's.

Run: ``.venv/bin/python bench/bench_path.py`` (``--calls N``, ``--repeat R``,
``--baseline REV`` also measures revision REV's router in the same run;
``--stages`` times the engine's path stage by stage instead; ``--burst N``
writes N calls' request reads at once instead, a burst's backlog, and times
each call from that write to its Redirect).

The route benchmark (``bench_route.py``) times a call from Asterisk's request
to the landing, through a real Asterisk, on a shared machine: there the same
code's ratio to panoramisk moves by 0.3x from run to run (bench/ANALYSIS.md,
seventh session), and the router's own part is a third of the latency. This
one takes Asterisk, the call generator and the network out and times only the
part a client library decides: from the read that holds a call's request
entering ``data_received`` to the Redirect handed to the socket.

Each call of the ingest capture (``bench_ingest.py``: real Asterisk 22 events
of the shipped ``[callrouter-inbound]`` dialplan) is written by a fake
Asterisk on a loopback socket as two reads: the call's events up to and
including its request, then the rest of the call. The engine (set up as
``bench_route.py``'s ``tcp-engine+filter``: the shipped rules, 1,000 generic
``if: did == ...`` rules, the directory, a warm 1C cache) reads only the events
its ``eventfilter`` lines let through; panoramisk (``events="on"``, a
``UserEvent`` callback that sends the Redirect, as ``bench_route.py``'s ``tcp``)
reads them all. Before each request read 32 MB of memory is written, so the
caches are as cold as after the 50 ms between two calls at 20 calls a second
on a PBX (every part of the path costs 3-4x its tight-loop figure then).
Each variant runs in its own process, the repetitions interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchOneC, engine_config, make_rules_dir, md_table, scratch_dir

#: Written before each request read: more than this machine's caches.
EVICT = bytearray(32 * 1024 * 1024)
REQUEST = "CallRouterRequest"


def evict() -> None:
    EVICT[::64] = b"\x01" * (len(EVICT) // 64)


def block(pairs: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n"


def call_reads(names: frozenset[str] | None) -> list[tuple[bytes, bytes, str]]:
    """Per captured call: (the read up to its request and its channel's Wait
    step, the rest of the call, the request's channel); ``names``: the events
    a session gets (None: all)."""
    from bench_engine import captured_events

    calls: dict[str, list[Any]] = {}
    order: list[str] = []
    for event in captured_events():
        linkedid = event.get("Linkedid") or event.get("DestLinkedid") or ""
        if not linkedid:
            continue
        if linkedid not in calls:
            calls[linkedid] = []
            order.append(linkedid)
        calls[linkedid].append(event)
    out: list[tuple[bytes, bytes, str]] = []
    for linkedid in order:
        events = [e for e in calls[linkedid] if names is None or e.name in names]
        at = next(
            (
                i
                for i, e in enumerate(events)
                if e.name == "UserEvent" and e.get("UserEvent") == REQUEST
            ),
            None,
        )
        if at is None:
            continue
        # Asterisk publishes the channel's Wait step microseconds after the
        # request (the capture's dialplan has Ringing() between them), so it
        # comes in the request's read; the engine's Redirect waits for it
        # (router/parking.py).
        channel = events[at].get("Channel")
        cut = next(
            (
                i + 1
                for i in range(at + 1, len(events))
                if events[i].name == "Newexten"
                and events[i].get("Channel") == channel
                and events[i].get("Application") == "Wait"
            ),
            at + 1,
        )
        first, rest = events[:cut], events[cut:]
        out.append(
            (
                b"".join(block(list(e.fields)) for e in first),
                b"".join(block(list(e.fields)) for e in rest),
                events[at].get("Channel") or "",
            )
        )
    return out


class FakeAsterisk:
    """Just enough of Asterisk's TCP AMI for a router to log in and route:
    every action answered ``Success`` (``CoreShowChannels`` with no channel), a
    Redirect also with the ``Newexten`` that confirms it."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.redirected: asyncio.Queue[str] = asyncio.Queue()
        self.port = 0

    async def start(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                # The peer left, or the run ended (asyncio.run cancels this task).
                return
            headers: dict[str, str] = {}
            for line in raw.decode().split("\r\n"):
                key, _, value = line.partition(": ")
                headers.setdefault(key.lower(), value)
            name, aid = headers.get("action", "").lower(), headers.get("actionid", "")
            answer = [("Response", "Success"), ("ActionID", aid), ("Message", "ok")]
            if name == "coreshowchannels":
                writer.write(
                    block([*answer, ("EventList", "start")])
                    + block(
                        [
                            ("Event", "CoreShowChannelsComplete"),
                            ("ActionID", aid),
                            ("EventList", "Complete"),
                            ("ListItems", "0"),
                        ]
                    )
                )
                continue
            if name == "redirect" and headers.get("channel", "") == PROBE_CHANNEL:
                # callrouter run's write-class probe after its login: moves no
                # call, and Asterisk answers it so (router/privileges.py).
                error = [("Response", "Error"), ("ActionID", aid)]
                writer.write(
                    block([*error, ("Message", f"Channel does not exist: {PROBE_CHANNEL}")])
                )
                continue
            writer.write(block(answer))
            if name == "redirect":
                channel = headers.get("channel", "")
                writer.write(
                    block(
                        [
                            ("Event", "Newexten"),
                            ("Privilege", "dialplan,all"),
                            ("Timestamp", f"{time.time():.6f}"),
                            ("Channel", channel),
                            ("Context", headers.get("context", "")),
                            ("Exten", headers.get("exten", "")),
                            ("Priority", "1"),
                        ]
                    )
                )
                self.redirected.put_nowait(channel)

    def write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)


#: The channel of ``callrouter run``'s ``Redirect`` probe (router/privileges.py).
PROBE_CHANNEL = "callrouter-check/no-such-channel"


class Stamps:
    """When the read holding a request arrived, and when its Redirect was written."""

    def __init__(self) -> None:
        self.armed = False
        self.read: float | None = None
        self.written: float | None = None

    def arm(self) -> None:
        self.armed, self.read, self.written = True, None, None

    def on_read(self) -> None:
        if self.armed and self.read is None:
            self.read = time.perf_counter()

    def on_written(self) -> None:
        if self.armed and self.written is None:
            self.written = time.perf_counter()


def now_stamped(data: bytes) -> bytes:
    """The request's Timestamp made now: the engine counts its deadline from it."""
    now = f"{time.time():.6f}".encode()
    out = []
    for line in data.split(b"\r\n"):
        out.append(b"Timestamp: " + now if line.startswith(b"Timestamp: ") else line)
    return b"\r\n".join(out)


async def run_calls(
    fake: FakeAsterisk, reads: list[tuple[bytes, bytes, str]], stamps: Stamps, calls: int
) -> list[float]:
    waits: list[float] = []
    for first, rest, channel in (reads * (calls // max(1, len(reads)) + 1))[:calls]:
        await asyncio.sleep(0.005)
        first = now_stamped(first)
        evict()
        stamps.arm()
        fake.write(first)
        got = await asyncio.wait_for(fake.redirected.get(), 5)
        assert got == channel, (got, channel)
        stamps.armed = False
        if stamps.read is not None and stamps.written is not None:
            waits.append((stamps.written - stamps.read) * 1e6)
        fake.write(rest)
    return waits


#: ``--burst``: when each Redirect was handed to the socket, by channel.
REDIRECTED_AT: dict[str, float] = {}


async def run_burst(fake: FakeAsterisk, reads: list[tuple[bytes, bytes, str]]) -> list[float]:
    """``--burst``: every call's read up to its request written at once (a
    backlog, as a burst leaves in the socket); for each call, the time from
    that write to its Redirect handed to the socket, in us."""
    await asyncio.sleep(0.1)
    data = b"".join(now_stamped(first) for first, _, _ in reads)
    REDIRECTED_AT.clear()
    profile = os.environ.get("BENCH_PATH_PROFILE")  # a cProfile of the burst alone
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    fake.write(data)
    for _ in reads:
        await asyncio.wait_for(fake.redirected.get(), 10)
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    waits = [(REDIRECTED_AT[channel] - started) * 1e6 for _, _, channel in reads]
    for _, rest, _ in reads:
        fake.write(rest)
    await asyncio.sleep(0.1)
    return waits


async def serve_engine(calls: int, burst: int = 0) -> list[float]:
    with scratch_dir("bench-path-") as tmp:
        return await _serve_engine_in(tmp, calls, burst)


async def _serve_engine_in(tmp: Path, calls: int, burst: int = 0) -> list[float]:
    """:func:`serve_engine` with its files in ``tmp``."""
    from bench_route import EXTRA_RULES, did_rules

    from router.ami import tcp
    from router.commands import run as run_command
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    fake = FakeAsterisk()
    await fake.start()
    logging.basicConfig(level=logging.INFO, handlers=[logging.FileHandler(tmp / "router.log")])
    lean = getattr(run_command, "lean_log_records", None)  # a --baseline may predate it
    if lean is not None:
        lean()
    rules = make_rules_dir(tmp, extra=0)
    (rules / "zz-bench-extra.yaml").write_text(did_rules(EXTRA_RULES), encoding="utf-8")
    path = engine_config(tmp, f"tcp://127.0.0.1:{fake.port}", "x", rules)
    path.write_text(path.read_text().replace("waitevent_timeout = 20\n", ""))
    onec = BenchOneC()
    await onec.warm()
    engine = Engine(
        load_config(path),
        plugins=Plugins.load(extra=[onec], disabled=["onec"]),
        options=EngineOptions(freeze_gc=True, live_heartbeat=0),
    )
    await engine.start()
    selection = await engine.event_selection()
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    stamps = Stamps()
    read, send = tcp._Connection.data_received, tcp._Connection.send

    def stamped_read(self: Any, data: bytes) -> None:
        stamps.on_read()
        read(self, data)

    def stamped_send(self: Any, action: Any) -> Any:
        future = send(self, action)
        if action.name == "Redirect":
            stamps.on_written()
            REDIRECTED_AT.setdefault(dict(action.params).get("Channel", ""), time.perf_counter())
        return future

    tcp._Connection.data_received = stamped_read  # type: ignore[method-assign]
    tcp._Connection.send = stamped_send  # type: ignore[method-assign]
    # The lines of tcp-engine+filter: Asterisk sends only these names.
    reads = call_reads(frozenset(selection.names) if selection.names is not None else None)
    await run_calls(fake, reads[:20], stamps, 20)  # warm-up: code paths, caches of answers
    if burst:
        waits = await run_burst(fake, reads[20 : 20 + burst])
    else:
        waits = await run_calls(fake, reads, stamps, calls)
    outcomes = {r.outcome for r in engine.records}
    engine.request_stop()
    await asyncio.wait_for(task, 10)
    await engine.stop()
    assert outcomes <= {"executed"}, outcomes
    return waits


async def serve_panoramisk(calls: int, burst: int = 0) -> list[float]:
    from bench_route import REDIRECT, panoramisk_loop
    from panoramisk.ami_protocol import AMIProtocol

    fake = FakeAsterisk()
    await fake.start()
    stamps = Stamps()
    read = AMIProtocol.data_received

    def stamped_read(self: Any, data: bytes) -> None:
        stamps.on_read()
        read(self, data)

    AMIProtocol.data_received = stamped_read  # type: ignore[method-assign]

    def redirect(manager: Any, channel: str) -> None:
        manager.send_action({"Action": "Redirect", "Channel": channel, **REDIRECT})
        stamps.on_written()
        REDIRECTED_AT.setdefault(channel, time.perf_counter())

    manager = await panoramisk_loop(fake.port, "x", redirect)
    reads = call_reads(None)
    await run_calls(fake, reads[:20], stamps, 20)
    if burst:
        waits = await run_burst(fake, reads[20 : 20 + burst])
    else:
        waits = await run_calls(fake, reads, stamps, calls)
    manager.close()
    return waits


VARIANTS = {"panoramisk": serve_panoramisk, "engine": serve_engine}

#: Where ``--stages`` stamps the engine's path: (module, class or None, name).
#: Each is timed at its entry and its return, in the order the path takes them.
STAGES = (
    ("router.ami.tcp", None, "_peek_wait_step"),
    ("router.engine", "Engine", "_route_early"),
    ("router.engine", None, "block_names"),
    ("router.engine", None, "parse_rawman"),
    ("router.routing", "Router", "accept"),
    ("router.routing", None, "call_info"),
    ("router.rules.ruleset", "RuleBook", "evaluate"),
    ("router.executor", "Executor", "run"),
)


def stage_stamps(marks: list[list[tuple[str, float]]], armed: list[bool]) -> None:
    """Wrap each of :data:`STAGES` so that, while ``armed[0]``, its entry and
    return are stamped into the newest list of ``marks``."""
    import importlib
    import inspect

    def mark(name: str) -> None:
        if armed[0]:
            marks[-1].append((name, time.perf_counter()))

    for module_name, owner_name, name in STAGES:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        original = getattr(owner, name)
        if inspect.iscoroutinefunction(original):

            async def stamped_async(
                *args: Any, _f: Any = original, _n: str = name, **kwargs: Any
            ) -> Any:
                mark(_n)
                try:
                    return await _f(*args, **kwargs)
                finally:
                    mark(f"{_n} returned")

            setattr(owner, name, stamped_async)
        else:

            def stamped(*args: Any, _f: Any = original, _n: str = name, **kwargs: Any) -> Any:
                mark(_n)
                try:
                    return _f(*args, **kwargs)
                finally:
                    mark(f"{_n} returned")

            setattr(owner, name, stamped)


def stages(calls: int) -> None:
    """``--stages``: the engine's path cut at :data:`STAGES`, the median time
    from each stamp to the next over ``calls`` calls (this checkout only)."""
    marks: list[list[tuple[str, float]]] = []
    armed = [False]
    stage_stamps(marks, armed)
    measuring = [False]
    on_read, on_written = Stamps.on_read, Stamps.on_written

    def read(self: Stamps) -> None:
        on_read(self)
        if self.armed and measuring[0] and not armed[0] and self.written is None:
            armed[0] = True
            marks.append([("read", time.perf_counter())])

    def written(self: Stamps) -> None:
        if armed[0]:
            marks[-1].append(("Redirect written", time.perf_counter()))
            armed[0] = False
        on_written(self)

    Stamps.on_read, Stamps.on_written = read, written  # type: ignore[method-assign]
    global run_calls
    plain = run_calls

    async def counted(*args: Any) -> list[float]:
        # The first call of run_calls is serve_engine's warm-up.
        measuring[0] = counted.runs > 0  # type: ignore[attr-defined]
        counted.runs += 1  # type: ignore[attr-defined]
        return await plain(*args)

    counted.runs = 0  # type: ignore[attr-defined]
    run_calls = counted  # type: ignore[assignment]
    asyncio.run(serve_engine(calls))
    # Calls whose path took every stage in the usual order (an early route
    # not taken has another shape): the most common sequence of names.
    shapes: dict[tuple[str, ...], list[list[tuple[str, float]]]] = {}
    for stamps in marks:
        shapes.setdefault(tuple(name for name, _ in stamps), []).append(stamps)
    shape, taken = max(shapes.items(), key=lambda item: len(item[1]))
    rows = []
    for i in range(1, len(shape)):
        spans = [(stamps[i][1] - stamps[i - 1][1]) * 1e6 for stamps in taken]
        rows.append([f"{shape[i - 1]} -> {shape[i]}", f"{statistics.median(spans):.1f}"])
    totals = [(stamps[-1][1] - stamps[0][1]) * 1e6 for stamps in taken]
    rows.append(["read -> Redirect written", f"{statistics.median(totals):.1f}"])
    print(
        f"### The engine's path in stages ({len(taken)} of {len(marks)} calls took "
        "this shape; medians)\n"
    )
    print(md_table(["stage", "p50 us"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls per run (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant, interleaved")
    parser.add_argument("--baseline", metavar="REV", help="also measure revision REV's engine")
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="N",
        help="instead: N calls' request reads written at once, each call timed from "
        "that write to its Redirect written",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument(
        "--stages",
        action="store_true",
        help="time the engine's path stage by stage instead (this checkout, one run)",
    )
    args = parser.parse_args()
    if args.stages:
        from bench_ingest import load_capture

        load_capture()
        stages(args.calls)
        return
    if args.serve:
        waits = asyncio.run(VARIANTS[args.serve](args.calls, args.burst))
        print(json.dumps(waits))
        return
    from bench_ingest import load_capture

    load_capture()  # captured from the sandbox on the first run, then cached
    runs = [("panoramisk", "panoramisk", None), ("engine", "engine", None)]
    if args.baseline:
        runs.append((f"engine at {args.baseline}", "engine", ""))
    rows: dict[str, list[list[float]]] = {label: [] for label, _, _ in runs}
    with tempfile.TemporaryDirectory() as base:
        if args.baseline:
            from bench_route import export_tree

            export_tree(args.baseline, Path(base))
        for _ in range(args.repeat):
            for label, variant, tree in runs:
                env = dict(os.environ)
                env.pop("CALLROUTER_BENCH_BASELINE", None)
                if tree is not None:
                    env["CALLROUTER_BENCH_BASELINE"] = base
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--serve",
                        variant,
                        "--calls",
                        str(args.calls),
                        "--burst",
                        str(args.burst),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                rows[label].append(sorted(json.loads(out.strip().splitlines()[-1])))

    def p(waits: list[float], q: float) -> float:
        return waits[min(len(waits) - 1, int(q * len(waits)))]

    reference = rows["panoramisk"]
    table = []
    for label, waits in rows.items():
        ratios = [
            statistics.median(w) / statistics.median(r)
            for w, r in zip(waits, reference, strict=True)
        ]
        table.append(
            [
                label,
                ", ".join(f"{statistics.median(w):.0f}" for w in waits),
                ", ".join(f"{p(w, 0.95):.0f}" for w in waits),
                ", ".join(f"{x:.2f}x" for x in ratios),
            ]
        )
    if args.burst:
        print(
            f"### A burst: {args.burst} calls' request reads written at once -> each "
            f"call's Redirect written ({args.repeat} runs of each, interleaved)\n"
        )
    else:
        print(
            "### A request's own path, cold: the read holding it -> the Redirect written "
            f"({args.calls} calls a run, {args.repeat} runs of each, interleaved)\n"
        )
    print(
        md_table(
            ["router", "p50 us (each run)", "p95 us (each run)", "p50 / panoramisk (each run)"],
            table,
        )
    )


if __name__ == "__main__":
    main()
