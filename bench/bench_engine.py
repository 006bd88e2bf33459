"""The engine's own CPU per call, without sockets: captured events in, decisions out.

Run: ``.venv/bin/python bench/bench_engine.py`` (``--rounds N``, best of N
passes in a process; ``--repeat R`` processes of each cell, alternated, as a
single process's figure moves by a fifth on this shared machine;
``--baseline REV`` also runs git revision REV's router beside this checkout's).

The route benchmark (``bench_route.py``) measures the whole process against a
real Asterisk, where parsing, socket writes and a loaded machine blur what the
engine itself costs. This one feeds the events of 300 real calls (the capture
of ``bench_ingest.py``, restricted to the engine's event selection) straight
into the engine (a read at a time, as the TCP client hands them) of an
engine set up as ``bench_route.py``'s engine variants are (the shipped rules,
1,000 generic ``if: did == ...`` rules, the directory, a warm 1C cache, every
decision logged to a file), with the 9 CEL records of an answered call added
to each captured call, on an AMI stand-in that answers at once and confirms
each Redirect with its ``Newexten``. The capture's dialplan had ``Ringing()``
between the request and ``Wait``; the feed puts the steps in the shipped
dialplan's order, the request read with its ``Wait`` step (router/parking.py).
It reports the CPU time per call (every event of the call and its decision,
the bookkeeping after the Redirect included) and how long after its request
event was handed in the Redirect left (p50): the decision's own share of the
route latency; each without and with a call life listener (as with the 1C
plugin: then the CEL records are folded and their events told).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchOneC,
    CallLifeListener,
    engine_config,
    make_rules_dir,
    md_table,
    scratch_dir,
)

WARMUP = 2000  # events fed before measuring (caches, code paths)


class InstantAMI:
    """What the engine needs of a client: ``send`` answers Success at once; a
    Redirect's ``Newexten`` is handed to the engine on the next loop turn."""

    logged_in = True
    session_generation = 1
    event_selection: Any = None

    def __init__(self) -> None:
        from router.ami.protocol import RawmanParser

        self.engine: Any = None
        self.redirected_at: list[float] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        #: As a TCP client reads: bytes through the parser, with the engine's
        #: selection and narrowing, then each message to the engine.
        self.parser = RawmanParser()

    async def deliver(self, data: bytes) -> None:
        events = list(self.parser.feed(data))
        handle_items = getattr(self.engine, "_handle_items", None)  # a --baseline may predate it
        if handle_items is not None:
            await handle_items(events)
        else:
            for event in events:
                await self.engine.handle_event(event)

    async def set_events(self, selection: Any) -> None:
        self.event_selection = selection

    def set_urgent(self, test: Any, *, marker: bytes | None = None, peek: Any = None) -> None:
        pass

    def set_narrowing(self, narrow: Any) -> None:
        self.parser.narrow = narrow or None

    def refusal_reported(self, name: str) -> None:
        pass

    async def login(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def send(self, name: str, params: Any = None, **_: Any) -> Any:
        from router.ami.message import Event
        from router.ami.protocol import assemble_result, parse_body

        if name == "Redirect":
            self.redirected_at.append(time.perf_counter())
            landed = Event(
                (
                    ("Event", "Newexten"),
                    ("Channel", params["Channel"]),
                    ("Context", params["Context"]),
                    ("Exten", params.get("Exten", "")),
                    ("Priority", "1"),
                    ("Timestamp", f"{time.time():.6f}"),
                )
            )
            task = asyncio.ensure_future(self.deliver(wire(landed)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return assemble_result(
            parse_body(b"Response: Success\r\nMessage: ok\r\n\r\n", "text/plain")
        )


def wire(event: Any) -> bytes:
    """An event as Asterisk writes it on a TCP AMI session."""
    return "".join(f"{k}: {v}\r\n" for k, v in event.fields).encode() + b"\r\n"


def captured_events() -> list[Any]:
    from bench_ingest import load_capture

    from router.ami.protocol import assemble_result, parse_body, split_waitevent

    events: list[Any] = []
    for body in load_capture()["rawman"]:
        result = assemble_result(parse_body(body.encode("utf-8"), "text/plain"))
        events.extend(split_waitevent((result.response, *result.extra))[1])
    return events


def shipped_order(events: list[Any]) -> list[Any]:
    """The capture's dialplan had ``Ringing()`` between the request and
    ``Wait``; the shipped one (router/sandbox/dialplan/callrouter.conf) rings
    before the request, so the channel's ``Wait`` step follows it at once. The
    channel's steps between the two move before the request."""
    out = list(events)
    at = 0
    while at < len(out):
        # By position, not from a list made first: a move shifts the events after it.
        if out[at].name == "UserEvent":
            channel = out[at].get("Channel")
            wait = next((i for i in range(at + 1, len(out)) if _is_wait_of(out[i], channel)), None)
            if wait is not None:
                between = [e for e in out[at + 1 : wait] if e.get("Channel") == channel]
                others = [e for e in out[at + 1 : wait] if e.get("Channel") != channel]
                out[at : wait + 1] = [*between, out[at], out[wait], *others]
                at += len(between)
        at += 1
    return out


def _is_wait_of(event: Any, channel: str | None) -> bool:
    return bool(
        event.name == "Newexten"
        and event.get("Channel") == channel
        and event.get("Application") == "Wait"
    )


def with_cel(events: list[Any]) -> list[Any]:
    """The capture predates CEL over AMI: after each request's ``Wait`` step,
    the 9 CEL records of an answered call (``router.testing.cel``) under that
    call's Linkedid, as cel_manager sends them, so the call life's work is in
    the figure."""
    from router.ami.message import Event
    from router.testing.cel import answered_call, as_ami

    records = [as_ami(record) for record in answered_call().records]
    out: list[Any] = []
    asked: dict[str, str] = {}  # requesting channel -> its Linkedid
    for event in events:
        out.append(event)
        if event.name == "UserEvent":
            asked[event.get("Channel") or ""] = event.get("Linkedid") or ""
        elif event.name == "Newexten" and event.get("Application") == "Wait":
            linkedid = asked.pop(event.get("Channel") or "", None)
            if linkedid is None:
                continue
            for fields in records:
                cel = dict(fields, LinkedID=linkedid, UniqueID=f"{linkedid}-{fields['UniqueID']}")
                out.append(Event(tuple(cel.items())))
    return out


async def measure(rounds: int, *, life: bool = False) -> tuple[float, float]:
    """(CPU microseconds per call, request -> Redirect p50 in microseconds), best round."""
    with scratch_dir("bench-engine-") as tmp:
        return await _measure_in(tmp, rounds, life=life)


async def _measure_in(tmp: Path, rounds: int, *, life: bool = False) -> tuple[float, float]:
    """:func:`measure` with its files in ``tmp``."""
    from bench_route import EXTRA_RULES, did_rules

    from router.ami.message import Event
    from router.commands import run as run_command
    from router.config import load_config
    from router.engine import Engine
    from router.plugins import Plugins

    logging.basicConfig(level=logging.INFO, handlers=[logging.FileHandler(tmp / "router.log")])
    lean = getattr(run_command, "lean_log_records", None)  # a --baseline may predate it
    if lean is not None:
        lean()  # as callrouter run's logging
    rules = make_rules_dir(tmp, extra=0)
    (rules / "zz-bench-extra.yaml").write_text(did_rules(EXTRA_RULES), encoding="utf-8")
    path = engine_config(tmp, "tcp://127.0.0.1:5038", "unused", rules)
    path.write_text(path.read_text().replace("waitevent_timeout = 20\n", ""))
    onec = BenchOneC()
    await onec.warm()
    ami = InstantAMI()
    engine = Engine(
        load_config(path),
        plugins=Plugins.load(
            extra=[onec, *([CallLifeListener()] if life else [])], disabled=["onec"]
        ),
        client=ami,
    )
    ami.engine = engine
    await engine.setup()
    await engine.plugins.startup(engine.api)
    selection = await engine.event_selection()
    ami.parser.wanted = selection.names
    narrowing = getattr(engine, "event_narrowing", None)  # a --baseline may predate it
    ami.set_narrowing(await narrowing() if narrowing is not None else {})
    events = with_cel(shipped_order(captured_events()))
    # Each event's bytes, as one read of the socket, but a request with the
    # Wait step right after it (as a TCP client reads them nearly always: the
    # two are published microseconds apart). A request's Timestamp is filled
    # in when it is fed (made now, not at capture time).
    wired: list[tuple[bool, Any]] = []
    for event in events:
        last = wired[-1] if wired else None
        if (
            last is not None
            and last[0]
            and not last[1][1]
            and _is_wait_of(event, last[1][0].get("Channel"))
        ):
            wired[-1] = (True, (last[1][0], wire(event)))
        elif event.name == "UserEvent":
            wired.append((True, (event, b"")))
        else:
            wired.append((False, wire(event)))
    requests: list[float] = []

    async def feed(batch: list[Any]) -> None:
        for is_request, item in batch:
            if is_request:
                request, step = item
                now = f"{time.time():.6f}"
                item = (
                    wire(
                        Event(tuple((k, now if k == "Timestamp" else v) for k, v in request.fields))
                    )
                    + step
                )
                requests.append(time.perf_counter())
            await ami.deliver(item)
            # A read at a time, as from a socket: between two reads the loop
            # runs what waits (a decision waiting for its channel's Wait step,
            # router/parking.py, is sent when that step is read, not after the
            # whole capture).
            await asyncio.sleep(0)
        await engine.wait_idle()

    await feed(wired[:WARMUP])
    calls = sum(1 for is_request, _ in wired[WARMUP:] if is_request)
    best_cpu, best_p50 = float("inf"), float("inf")
    for _ in range(rounds):
        requests.clear()
        ami.redirected_at.clear()
        engine.router._routed.clear()  # the same channels ask again
        started = time.process_time()
        await feed(wired[WARMUP:])
        cpu = (time.process_time() - started) / calls * 1e6
        waits = sorted(
            (sent - asked) * 1e6 for asked, sent in zip(requests, ami.redirected_at, strict=True)
        )
        best_cpu = min(best_cpu, cpu)
        best_p50 = min(best_p50, waits[len(waits) // 2])
    outcomes = {r.outcome for r in engine.records}
    assert outcomes == {"executed"}, outcomes
    return best_cpu, best_p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="best of N passes (default 3)")
    parser.add_argument("--baseline", metavar="REV", help="also measure revision REV's router")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each cell, alternated (one process each; default 3)",
    )
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--life", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bench_ingest import load_capture

    # Captured from the sandbox on a first run (its own event loop), then
    # cached: it cannot be made inside measure()'s running loop.
    load_capture()
    if args.once:
        cpu, p50 = asyncio.run(measure(args.rounds, life=args.life))
        print(f"{cpu:.0f} {p50:.0f}")
        return
    revisions = [("this checkout", None)] + ([(args.baseline, "")] if args.baseline else [])
    #: Each router without and with a call life listener, alternated.
    cells = [(label, tree, life) for label, tree in revisions for life in (False, True)]
    rows: dict[tuple[str, bool], list[tuple[float, float]]] = {
        (label, life): [] for label, _, life in cells
    }
    with tempfile.TemporaryDirectory() as base:
        if args.baseline:
            from bench_route import export_tree

            export_tree(args.baseline, Path(base))
        for _ in range(args.repeat):
            for label, tree, life in cells:
                env = dict(os.environ)
                env.pop("CALLROUTER_BENCH_BASELINE", None)
                if tree is not None:
                    env["CALLROUTER_BENCH_BASELINE"] = base
                command = [sys.executable, __file__, "--once", "--rounds", str(args.rounds)]
                out = subprocess.run(
                    [*command, *(["--life"] if life else [])],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                rows[label, life].append((float(out[0]), float(out[1])))
    print("### The engine alone: captured calls through the engine, no sockets\n")
    print(
        md_table(
            [
                "router",
                "call life listener",
                "CPU per call, us (each run)",
                "request -> Redirect p50, us (each run)",
            ],
            [
                [
                    label,
                    "yes" if life else "no",
                    ", ".join(f"{cpu:.0f}" for cpu, _ in runs),
                    ", ".join(f"{p50:.0f}" for _, p50 in runs),
                ]
                for (label, life), runs in rows.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
