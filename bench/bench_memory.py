"""Memory: resident set size before and after 100,000 calls through the engine.

Run: ``.venv/bin/python bench/bench_memory.py`` (``--calls N``).

Each synthetic call is the events the shipped dialplan produces for a routed
call, in order, fed to ``Engine.handle_event``: ``Newchannel``, ``Newexten``
into ``callrouter-inbound``, the ``UserEvent(CallRouterRequest)``, then (once
the engine sent its Redirect) ``Newexten`` in the target context and
``Hangup``. AMI actions are answered by a fake client (``Engine(client=...)``);
rules are the shipped ones with the directory plugin and a warm 1C cache; every
call has its own channel, Linkedid and one of 1,000 caller numbers.

RSS is VmRSS from /proc/self/status, after a full garbage collection, taken
after 2,000 warm-up calls (imports, caches, first allocations) and after the
100,000 calls. The engine's deliberately bounded memories (decision records:
10,000; channels already routed, so a request is never acted on twice:
100,000) fill up during the run; their sizes are printed so growth can be
told from a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DID, RESULTS, BenchOneC, engine_config, make_rules_dir, md_table, rss_kb


class FakeAMI:
    """Answers every action with Success, as Asterisk would for a live channel."""

    session_generation = 1

    def __init__(self) -> None:
        from router.ami.message import Response
        from router.ami.protocol import ActionResult

        self.result = ActionResult(
            Response((("Response", "Success"), ("Message", "Redirect successful")))
        )
        self.sent: dict[str, int] = {}
        self.waiting: dict[str, asyncio.Future[None]] = {}

    async def send(self, name: str, params: Any = None, **_: Any) -> Any:
        if name == "Redirect":
            channel = params["Channel"]
            future = self.waiting.pop(channel, None)
            if future is not None and not future.done():
                future.set_result(None)
        return self.result

    async def login(self) -> None: ...

    async def aclose(self) -> None: ...


def call_events(i: int, caller: str) -> tuple[list[Any], list[Any], str]:
    from router.ami.message import Event
    from router.dialplan import INBOUND_CONTEXT, REQUEST_EVENT

    stamp = f"{time.time():.6f}"
    linkedid = f"bench-{i}.1"
    channel = f"Local/{DID}@{INBOUND_CONTEXT}-{i:08x};2"
    common = [
        ("Privilege", "call,all"),
        ("Timestamp", stamp),
        ("Channel", channel),
        ("ChannelState", "4"),
        ("ChannelStateDesc", "Ring"),
        ("CallerIDNum", caller),
        ("CallerIDName", "<unknown>"),
        ("ConnectedLineNum", "<unknown>"),
        ("ConnectedLineName", "<unknown>"),
        ("Language", "en"),
        ("AccountCode", ""),
        ("Context", INBOUND_CONTEXT),
        ("Exten", DID),
        ("Priority", "1"),
        ("Uniqueid", linkedid),
        ("Linkedid", linkedid),
    ]
    before = [
        Event([("Event", "Newchannel"), *common]),
        Event(
            [
                ("Event", "Newexten"),
                *common,
                ("Extension", DID),
                ("Application", "NoOp"),
                ("AppData", "callrouter"),
            ]
        ),
        Event(
            [
                ("Event", "UserEvent"),
                *common[:-3],
                ("Priority", "5"),
                *common[-2:],
                ("UserEvent", REQUEST_EVENT),
                ("DID", DID),
                ("Caller", caller),
                ("Wait", "4"),
            ]
        ),
    ]
    target = [(k, v) for k, v in common if k not in ("Context", "Exten", "Priority")]
    after = [
        Event(
            [
                ("Event", "Newexten"),
                *target,
                ("Context", "callrouter-dial"),
                ("Exten", "101"),
                ("Priority", "1"),
                ("Extension", "101"),
                ("Application", "NoOp"),
                ("AppData", ""),
            ]
        ),
        Event(
            [
                ("Event", "Hangup"),
                *target,
                ("Context", "callrouter-dial"),
                ("Exten", "101"),
                ("Priority", "2"),
                ("Cause", "16"),
                ("Cause-txt", "Normal Clearing"),
            ]
        ),
    ]
    return before, after, channel


async def run(calls: int, warmup: int, extra: int = 0) -> list[list[object]]:
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    rules = make_rules_dir(tmp, extra=extra)
    config = load_config(engine_config(tmp, "http://127.0.0.1:9/asterisk", "x", rules))
    callers = [f"7916{n:07d}" for n in range(1000)]
    onec = BenchOneC(callers)
    await onec.warm()
    fake = FakeAMI()
    engine = Engine(
        config,
        plugins=Plugins.load(extra=[onec], disabled=["onec"]),
        client=fake,  # type: ignore[arg-type]
        options=EngineOptions(watch_interval=0),
    )
    # The directory knows every caller, so each call is routed by one Redirect.
    from router.builtin.directory import Directory

    await engine.setup()
    engine.plugins.pm.get_plugin("directory").directory = Directory(
        {c: {"extension": "101", "name": "Bench"} for c in callers}
    )

    async def one(i: int) -> None:
        before, after, channel = call_events(i, callers[i % len(callers)])
        sent = asyncio.get_running_loop().create_future()
        fake.waiting[channel] = sent
        for event in before:
            await engine.handle_event(event)
        await asyncio.wait_for(sent, 5)
        for event in after:
            await engine.handle_event(event)

    rows: list[list[object]] = []
    for i in range(warmup):
        await one(i)
    await engine.wait_idle()
    gc.collect()
    rss0 = rss_kb()
    t0 = time.process_time()
    for i in range(warmup, warmup + calls):
        await one(i)
        if i % 1000 == 0:
            await engine.wait_idle()
    await engine.wait_idle()
    cpu = time.process_time() - t0
    gc.collect()
    rss1 = rss_kb()
    outcomes: dict[str, int] = {}
    for record in engine.records:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    rows.append(["VmRSS before (after warm-up)", f"{rss0 / 1024:.1f} MB"])
    rows.append([f"VmRSS after {calls:,} calls", f"{rss1 / 1024:.1f} MB"])
    growth = (rss1 - rss0) / 1024
    rows.append(["growth", f"{growth:.1f} MB ({'meets' if growth < 5 else 'MISSES'} < 5 MB)"])
    rows.append(["calls still tracked", str(len(engine.tracker))])
    rows.append(["decision records kept (bounded 1,000)", str(len(engine.records))])
    rows.append(
        ["routed channels remembered (dropped when calls end)", str(engine.router.remembered)]
    )
    rows.append(
        ["executor redirect counters (dropped when calls end)", str(len(engine.executor.redirects))]
    )
    rows.append(["outcomes of the last records", str(outcomes)])
    rows.append(["engine CPU per call", f"{cpu / calls * 1e6:.0f} us"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument(
        "--extra-rules",
        type=int,
        default=0,
        help="add the route benchmark's non-matching rules (for profiling)",
    )
    args = parser.parse_args()
    rows = asyncio.run(run(args.calls, args.warmup, args.extra_rules))
    text = (
        "### Memory: 100,000 synthetic calls through Engine.handle_event\n\n"
        + md_table(["measure", "value"], rows)
        + "\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.md").write_text(text)


if __name__ == "__main__":
    main()
