"""The router's CPU per call, replayed: a captured TCP AMI byte stream through the whole client.

Run: ``.venv/bin/python bench/bench_cpu.py`` (``--repeat R`` processes, their
median; ``--baseline REV`` also replays revision REV's router, alternated;
``--profile`` writes a cProfile of one replay; ``--capture`` makes the capture
again). The capture is made once from the sandbox and kept in
``bench/results/cpu-capture.json``.

Issue 16 asks for the router's CPU at 100 calls a second over TCP below the
bare panoramisk loop's; ``bench_route.py`` measures it live, where one run's
figure moves by a few points of a core. CPU per call is deterministic when
the input is: this benchmark records, once, every read a
``tcp-engine+filter+life`` router (``bench_route.py``'s engine with a call life
listener, logged in with the ``eventfilter`` lines of that engine) received
from the sandbox's Asterisk while ``bench_route.py``'s calls were placed at
100 a second, with each read's wall-clock time. A replay sets up the same
router (the shipped rules, 1,000 generic ``if: did == ...`` rules, the
directory, a warm 1C cache, the call life listener, decisions logged to a
file) on a fake Asterisk for its login, then hands the recorded reads to its
TCP connection's ``data_received`` one at a time, a loop turn between them,
as the socket would. What it writes goes to a fake transport that answers each
action at once (``Response: Success``, a read of its own); the captured
Redirects' landings are in the stream. Asterisk's answers to the capture's own
actions and the capture router's heartbeats are taken out of it. Each read
is handed in with the router's clock offset set so that the request's age is
what it was live.

It reports the process's CPU time (``time.process_time``) over the measured
reads (the first ``--warmup`` calls' reads are not measured) per call and per
event block read, and checks that every measured call was routed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

from _common import (
    RESULTS,
    BenchOneC,
    CallLifeListener,
    engine_config,
    make_rules_dir,
    md_table,
    scratch_dir,
    sigterm_cleans_up,
)

CAPTURE = RESULTS / "cpu-capture.json"
PANORAMISK = "panoramisk (bare loop)"
REQUEST_MARK = b"UserEvent: CallRouterRequest\r\n"
LIVE_MARK = b"UserEvent: CallRouterLive\r\n"


# ============================================================================== capture


async def _capture(box: Any, calls: int, rate: int) -> dict[str, Any]:
    with scratch_dir("bench-cpu-") as tmp:
        return await _capture_in(tmp, box, calls, rate)


async def _capture_in(tmp: Path, box: Any, calls: int, rate: int) -> dict[str, Any]:
    """:func:`_capture` with its files in ``tmp``."""
    from bench_route import (
        CALLERS,
        DID,
        EXTRA_RULES,
        FILTERED_LIFE_USER,
        TCPAMI,
        WAIT,
        did_rules,
        engine_filter_lines,
        panoramisk_loop,
    )
    from panoramisk.ami_protocol import AMIProtocol

    from router.ami import tcp
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins
    from router.sandbox.calls import CallPlacer

    box.add_manager_user(FILTERED_LIFE_USER, lines=await engine_filter_lines(life=True))
    reads: list[tuple[float, bytes]] = []
    #: What the bare panoramisk loop's session (bench_route.py's ``tcp``) read
    #: of the same calls: every event of the router user's classes.
    bare: list[tuple[float, bytes]] = []
    recording = False
    received = tcp._Connection.data_received
    bare_received = AMIProtocol.data_received

    def recorded(self: Any, data: bytes) -> None:
        if recording:
            reads.append((time.time(), data))
        received(self, data)

    def bare_recorded(self: Any, data: bytes) -> None:
        if recording:
            bare.append((time.time(), data))
        bare_received(self, data)

    tcp._Connection.data_received = recorded  # type: ignore[method-assign]
    AMIProtocol.data_received = bare_recorded  # type: ignore[method-assign]
    # It only reads here: the engine routes the calls.
    manager = await panoramisk_loop(box.ami_port, box.secret, lambda mgr, channel: None)
    logging.basicConfig(level=logging.INFO, handlers=[logging.FileHandler(tmp / "router.log")])
    rules = make_rules_dir(tmp, extra=0)
    (rules / "zz-bench-extra.yaml").write_text(did_rules(EXTRA_RULES), encoding="utf-8")
    path = engine_config(
        tmp, f"tcp://127.0.0.1:{box.ami_port}", box.secret, rules, username=FILTERED_LIFE_USER
    )
    path.write_text(path.read_text().replace("waitevent_timeout = 20\n", ""))
    onec = BenchOneC()
    await onec.warm()
    engine = Engine(
        load_config(path),
        plugins=Plugins.load(extra=[onec, CallLifeListener()], disabled=["onec"]),
        options=EngineOptions(freeze_gc=True),
    )
    await engine.start()
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    ami = TCPAMI(box.ami_port, box.secret)
    await ami.connect()
    async with CallPlacer(ami) as placer:  # type: ignore[arg-type]
        warm = [await placer.place(DID, CALLERS[i % len(CALLERS)]) for i in range(3)]
        await placer.wait_all(warm, timeout=WAIT + 2)
        await asyncio.sleep(0.5)
        recording = True
        t0 = time.monotonic()
        tasks = []
        for i in range(calls):
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
        await asyncio.sleep(3)  # the calls' last CEL records (LINKEDID_END)
        recording = False
    await ami.close()
    manager.close()
    engine.request_stop()
    await asyncio.wait_for(task, 10)
    await engine.stop()
    routed = sum(1 for c in placed if c.context == "callrouter-dial")
    outcomes: dict[str, int] = {}
    for record in engine.records:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    print(f"captured {len(reads)} reads, {routed}/{calls} calls routed, {outcomes}", flush=True)
    return {
        "calls": calls,
        "rate": rate,
        "routed": routed,
        "reads": [[t, base64.b64encode(data).decode()] for t, data in reads],
        "panoramisk_reads": [[t, base64.b64encode(data).decode()] for t, data in bare],
    }


def capture(calls: int, rate: int, name: str) -> None:
    from _common import bench_dialplan
    from bench_route import WAIT

    from router.sandbox import Sandbox

    sigterm_cleans_up()
    with Sandbox.start(name=name, extra_dialplan=bench_dialplan(WAIT)) as box:
        data = asyncio.run(_capture(box, calls, rate))
    RESULTS.mkdir(parents=True, exist_ok=True)
    CAPTURE.write_text(json.dumps(data), encoding="utf-8")


def load_reads(key: str = "reads") -> list[tuple[float, bytes]]:
    """The captured reads (``panoramisk_reads``: the bare loop's), without
    Asterisk's answers to the capture's actions (a replay's actions are
    answered by its own fake transport) nor the capture router's heartbeats
    (another instance's, to a replay)."""
    data = json.loads(CAPTURE.read_text(encoding="utf-8"))
    out: list[tuple[float, bytes]] = []
    carry = b""
    for t, text in data[key]:
        raw = carry + base64.b64decode(text)
        end = raw.rfind(b"\r\n\r\n")
        whole, carry = (raw[: end + 4], raw[end + 4 :]) if end >= 0 else (b"", raw)
        kept = [
            block + b"\r\n\r\n"
            for block in whole.split(b"\r\n\r\n")[:-1]
            if not block.startswith(b"Response: ") and LIVE_MARK not in block + b"\r\n"
        ]
        if kept:
            out.append((t, b"".join(kept)))
    return out


# =============================================================================== replay


class AnsweringTransport:
    """The connection's transport during the replay: every action written is
    answered ``Success`` at once, in a read of its own on the next loop turn."""

    def __init__(self, real: Any, conn: Any) -> None:
        self._real, self._conn = real, conn
        self._loop = asyncio.get_running_loop()
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1
        at = data.find(b"\r\nActionID: ")
        if at < 0:
            at = data.find(b"ActionID: ") - 2
        action_id = data[at + 12 : data.find(b"\r\n", at + 12)]
        answer = b"Response: Success\r\nActionID: " + action_id + b"\r\nMessage: ok\r\n\r\n"
        self._loop.call_soon(self._conn.data_received, answer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def replay(warmup: int, *, life: bool = True, profile: Path | None = None) -> dict[str, Any]:
    with scratch_dir("bench-cpu-") as tmp:
        return await _replay_in(tmp, warmup, life=life, profile=profile)


async def _replay_in(
    tmp: Path, warmup: int, *, life: bool = True, profile: Path | None = None
) -> dict[str, Any]:
    """:func:`replay` with its files in ``tmp``."""
    from bench_path import FakeAsterisk
    from bench_route import EXTRA_RULES, did_rules

    from router.commands import run as run_command
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    reads = load_reads()
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
    listener = CallLifeListener() if life else None
    engine = Engine(
        load_config(path),
        plugins=Plugins.load(extra=[onec, *([listener] if listener else [])], disabled=["onec"]),
        options=EngineOptions(freeze_gc=True, live_heartbeat=0),
    )
    await engine.start()
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    client: Any = engine.ami
    conn = client._conn
    transport = AnsweringTransport(conn.transport, conn)
    conn.transport = transport
    router = engine.router
    # Where the measured part starts: after the reads of the first `warmup` requests.
    start = _measured_from(reads, warmup)
    calls = sum(data.count(REQUEST_MARK) for _, data in reads[start:])
    blocks = sum(data.count(b"\r\n\r\n") for _, data in reads[start:])

    async def feed(part: list[tuple[float, bytes]]) -> None:
        received = conn.data_received
        for t, data in part:
            router.clock_offset = t - time.time()
            received(data)
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    await feed(reads[:start])
    await engine.wait_idle()
    records0 = len(engine.records)
    told0 = listener.told if listener else 0
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0 = time.process_time()
    await feed(reads[start:])
    await engine.wait_idle()
    cpu = time.process_time() - cpu0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    outcomes: dict[str, int] = {}
    for record in list(engine.records)[records0:]:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    engine.request_stop()
    await asyncio.wait_for(task, 10)
    await engine.stop()
    return {
        "cpu_us_per_call": cpu / calls * 1e6,
        "cpu_us_per_block": cpu / blocks * 1e6,
        "calls": calls,
        "blocks": blocks,
        "outcomes": outcomes,
        "told": (listener.told - told0) if listener else 0,
    }


def _measured_from(reads: list[tuple[float, bytes]], warmup: int) -> int:
    """The index of the read holding the request after the first ``warmup``."""
    seen = 0
    for i, (_, data) in enumerate(reads):
        seen += data.count(REQUEST_MARK)
        if seen > warmup:
            return i
    return len(reads)


async def replay_panoramisk(warmup: int) -> dict[str, Any]:
    """The bare panoramisk loop (``bench_route.py``'s ``tcp``: every event
    parsed and dispatched, a Redirect sent from its ``UserEvent`` callback) on
    what its own session read of the same calls, measured the same way."""
    from bench_path import FakeAsterisk
    from bench_route import REDIRECT, panoramisk_loop

    reads = load_reads("panoramisk_reads")
    fake = FakeAsterisk()
    await fake.start()
    redirected: list[str] = []

    def redirect(manager: Any, channel: str) -> None:
        redirected.append(channel)
        manager.send_action({"Action": "Redirect", "Channel": channel, **REDIRECT})

    manager = await panoramisk_loop(fake.port, "x", redirect)
    protocol = manager.protocol
    protocol.transport = AnsweringTransport(protocol.transport, protocol)
    start = _measured_from(reads, warmup)
    calls = sum(data.count(REQUEST_MARK) for _, data in reads[start:])
    blocks = sum(data.count(b"\r\n\r\n") for _, data in reads[start:])

    async def feed(part: list[tuple[float, bytes]]) -> None:
        received = protocol.data_received
        for _, data in part:
            received(data)
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    await feed(reads[:start])
    redirected.clear()
    cpu0 = time.process_time()
    await feed(reads[start:])
    cpu = time.process_time() - cpu0
    manager.close()
    return {
        "cpu_us_per_call": cpu / calls * 1e6,
        "cpu_us_per_block": cpu / blocks * 1e6,
        "calls": calls,
        "blocks": blocks,
        "outcomes": {"executed": len(redirected)} if len(redirected) == calls else {},
        "told": 0,
    }


# ================================================================================= main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="processes per cell (default 5)")
    parser.add_argument("--warmup", type=int, default=100, help="calls replayed unmeasured")
    parser.add_argument("--baseline", metavar="REV", help="also replay revision REV's router")
    parser.add_argument("--no-life", action="store_true", help="no call life listener")
    parser.add_argument("--profile", metavar="FILE", help="cProfile one replay into FILE")
    parser.add_argument("--capture", action="store_true", help="capture the stream again")
    parser.add_argument("--calls", type=int, default=600, help="calls captured (default 600)")
    parser.add_argument("--rate", type=int, default=100, help="capture's calls/s (default 100)")
    parser.add_argument("--sandbox-name", default=f"bench-cpu-{os.getpid()}")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--panoramisk", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture or not CAPTURE.exists():
        capture(args.calls, args.rate, args.sandbox_name)
    life = not args.no_life
    if args.once and args.panoramisk:
        print(json.dumps(asyncio.run(replay_panoramisk(args.warmup))))
        return
    if args.once or args.profile:
        out = asyncio.run(
            replay(args.warmup, life=life, profile=Path(args.profile) if args.profile else None)
        )
        print(json.dumps(out))
        return
    #: (label, baseline tree or None, the bare panoramisk loop instead)
    cells: list[tuple[str, str | None, bool]] = [
        ("this checkout", None, False),
        (PANORAMISK, None, True),
    ]
    rows: dict[str, list[dict[str, Any]]] = {"this checkout": [], PANORAMISK: []}
    with tempfile.TemporaryDirectory() as base:
        if args.baseline:
            from bench_route import export_tree

            export_tree(args.baseline, Path(base))
            cells.insert(1, (args.baseline, base, False))
            rows = {"this checkout": [], args.baseline: [], PANORAMISK: []}
        for _ in range(args.repeat):
            for label, tree, bare in cells:
                env = dict(os.environ)
                env.pop("CALLROUTER_BENCH_BASELINE", None)
                if tree is not None:
                    env["CALLROUTER_BENCH_BASELINE"] = tree
                command = [sys.executable, __file__, "--once", "--warmup", str(args.warmup)]
                out = subprocess.run(
                    [
                        *command,
                        *(["--no-life"] if not life else []),
                        *(["--panoramisk"] if bare else []),
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                assert set(result["outcomes"]) == {"executed"}, result["outcomes"]
                rows[label].append(result)
    first = rows["this checkout"][0]
    print(
        f"### The router's CPU per call, replayed ({first['calls']} calls; call life "
        f"listener: {'yes' if life else 'no'}; the bare panoramisk loop on its own session's "
        "reads of the same calls)\n"
    )
    print(
        md_table(
            [
                "router",
                "CPU per call, us (median)",
                "each run",
                "event blocks a call",
                "CPU per block, us (median)",
            ],
            [
                [
                    label,
                    statistics.median(r["cpu_us_per_call"] for r in runs),
                    ", ".join(f"{r['cpu_us_per_call']:.0f}" for r in runs),
                    runs[0]["blocks"] / runs[0]["calls"],
                    statistics.median(r["cpu_us_per_block"] for r in runs),
                ]
                for label, runs in rows.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
