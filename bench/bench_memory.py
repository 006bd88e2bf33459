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

``--call-life`` (not in run_all.py: 100,000 calls take about 105 s) adds what
an office runs per call, to read the plateau a real-time soak cannot reach:
``.venv/bin/python bench/bench_memory.py --call-life`` (``--every N``: calls
between checkpoints). Each call is then an answered inbound call with its CEL
records (the engine's own call life folds them: ringing, answered, hangup),
``DialBegin`` / ``DialEnd`` of extension 101 (the API feed's intake publishes
its ringing and hangup into an in-memory event feed), the 1C plugin's facts
kept per call (a real ``OneCPlugin``'s ``_remember``; its sender, the SQLite
queue and the HTTP posts to 1C, is not run) and a click-to-call of one of ten
API tokens (``Originations``). It prints VmRSS after a full garbage
collection every ``--every`` calls with each bounded memory's size, and at the
end each memory's deep size against its cap; it writes
``results/memory_call_life.md``.

``--diagnose`` (with ``--call-life``) adds, at each checkpoint, where the
memory sits: pymalloc's arenas and the bytes in their blocks, glibc malloc's
heap (``mallinfo2``: in use, free) and its mmapped blocks, and the tables of the
call life's event ids; ``--tracemalloc`` adds tracemalloc's traced total (a
slower run), ``--trim`` calls ``malloc_trim(0)`` at each checkpoint and reads
VmRSS again (it changes the run from there on). A step of VmRSS that malloc's
"free" column takes is memory malloc keeps, not memory in use
(bench/ANALYSIS.md, thirty-ninth session).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DID,
    RESULTS,
    BenchOneC,
    engine_config,
    make_rules_dir,
    md_table,
    rss_kb,
    scratch_dir,
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class Allocators:
    """Where the process's memory sits, for ``--diagnose``: Python's own
    allocator (pymalloc's arenas and the bytes in their blocks,
    ``sys._debugmallocstats``), glibc's malloc (``mallinfo2``: its heap, what
    of it is in use and free, its mmapped blocks), ``tracemalloc``'s traced
    total when it runs, and ``malloc_trim(0)`` to tell free memory malloc keeps
    from memory in use."""

    def __init__(self) -> None:
        self.libc: Any = None
        try:
            libc = ctypes.CDLL(None)
            libc.mallinfo2.restype = _MallInfo2
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            self.libc = libc
        except (OSError, AttributeError):  # not glibc (2.33 or later)
            pass

    def pymalloc(self) -> dict[str, int]:
        """pymalloc's arenas in use and the bytes in their allocated blocks."""
        with tempfile.TemporaryFile() as out:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            out.seek(0)
            text = out.read().decode()
        found: dict[str, int] = {}
        for key, pattern in (
            ("arenas", r"# arenas allocated current\s*=\s*([\d,]+)"),
            ("blocks", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
            ("free", r"# bytes in available blocks\s*=\s*([\d,]+)"),
        ):
            match = re.search(pattern, text)
            found[key] = int(match.group(1).replace(",", "")) if match else -1
        return found

    def glibc(self) -> dict[str, int]:
        if self.libc is None:
            return {}
        info = self.libc.mallinfo2()
        return {name: int(getattr(info, name)) for name, _ in _MallInfo2._fields_}

    def trim(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)


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


def cel(name: str, stamp: str, uniqueid: str, linkedid: str, channel: str, **more: str) -> Any:
    """One ``Event: CEL`` as cel_manager writes it."""
    from router.ami.message import Event

    return Event(
        [
            ("Event", "CEL"),
            ("Privilege", "call,all"),
            ("Timestamp", stamp),
            ("EventName", name),
            ("AccountCode", ""),
            ("CallerIDnum", more.get("caller", "")),
            ("CallerIDname", ""),
            ("CallerIDani", more.get("caller", "")),
            ("CallerIDrdnis", ""),
            ("CallerIDdnid", ""),
            ("Exten", more.get("exten", "")),
            ("Context", more.get("context", "")),
            ("Channel", channel),
            ("Application", more.get("app", "")),
            ("AppData", ""),
            ("EventTime", stamp),
            ("AMAFlags", "DOCUMENTATION"),
            ("UniqueID", uniqueid),
            ("LinkedID", linkedid),
            ("Userfield", ""),
            ("Peer", ""),
            ("PeerAccount", ""),
            ("Extra", more.get("extra", "")),
        ]
    )


def life_events(i: int, caller: str, stamp: str) -> tuple[list[Any], list[Any], list[Any]]:
    """What an office's answered inbound call adds: its CEL records (the call
    life's), ``DialBegin`` / ``DialEnd`` of extension 101 (the API feed's
    ``ringing``) and the phone's own ``Hangup``; before the routing request,
    between the landing and the caller's Hangup, and after it."""
    from router.ami.message import Event
    from router.dialplan import INBOUND_CONTEXT

    linkedid = f"bench-{i}.1"
    trunk = f"Local/{DID}@{INBOUND_CONTEXT}-{i:08x};2"  # the routed channel: the caller
    phone_id = f"bench-{i}.2"
    phone = f"PJSIP/101-{i:08x}"
    first = [
        cel(
            "CHAN_START",
            stamp,
            linkedid,
            linkedid,
            trunk,
            caller=caller,
            exten=DID,
            context="from-trunk",
        ),
    ]
    dial = [
        ("Privilege", "call,all"),
        ("Timestamp", stamp),
        ("Channel", trunk),
        ("CallerIDNum", caller),
        ("Uniqueid", linkedid),
        ("Linkedid", linkedid),
        ("DestChannel", phone),
        ("DestCallerIDNum", "101"),
        ("DestUniqueid", phone_id),
        ("DestLinkedid", linkedid),
        ("DialString", "101"),
    ]
    hangup = json.dumps({"hangupcause": 16, "hangupsource": phone, "dialstatus": "ANSWER"})
    middle = [
        cel("CHAN_START", stamp, phone_id, linkedid, phone, exten="101"),
        Event([("Event", "DialBegin"), *dial]),
        cel("ANSWER", stamp, phone_id, linkedid, phone, exten="101"),
        cel("ANSWER", stamp, linkedid, linkedid, trunk, caller=caller, exten=DID),
        Event([("Event", "DialEnd"), *dial, ("DialStatus", "ANSWER")]),
        cel("BRIDGE_ENTER", stamp, linkedid, linkedid, trunk, caller=caller),
        cel("BRIDGE_ENTER", stamp, phone_id, linkedid, phone),
        cel("BRIDGE_EXIT", stamp, phone_id, linkedid, phone),
        cel("HANGUP", stamp, phone_id, linkedid, phone, extra=hangup),
        Event(
            [
                ("Event", "Hangup"),
                ("Privilege", "call,all"),
                ("Timestamp", stamp),
                ("Channel", phone),
                ("CallerIDNum", "101"),
                ("Uniqueid", phone_id),
                ("Linkedid", linkedid),
                ("Cause", "16"),
            ]
        ),
        cel("CHAN_END", stamp, phone_id, linkedid, phone),
        cel("BRIDGE_EXIT", stamp, linkedid, linkedid, trunk),
        cel("HANGUP", stamp, linkedid, linkedid, trunk, caller=caller, extra=hangup),
        cel("CHAN_END", stamp, linkedid, linkedid, trunk),
    ]
    last = [cel("LINKEDID_END", stamp, linkedid, linkedid, trunk, caller=caller)]
    return first, middle, last


def call_events(i: int, caller: str, life: bool = False) -> tuple[list[Any], list[Any], str]:
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
    if life:
        first, middle, last = life_events(i, caller, stamp)
        before[:0] = first
        after[1:1] = middle
        after += last
    return before, after, channel


class OfficeMemories:
    """What an office runs per call besides the routing, for ``--call-life``.

    The call life is the engine's own (``engine.calllife``: the fold, fed by the
    CEL records through ``Engine.handle_event``); it is followed because this
    plugin reads the call events, as the 1C plugin does. Each call's first event
    puts the facts the 1C plugin keeps per call (``OneCPlugin._remember``, as its
    decision hook and its own lookups do) into a real :class:`OneCPlugin`; its
    sender (the SQLite history queue and the HTTP posts to 1C) is not run: it
    needs the 1C double over the network, and its queue is on disk. The API's
    event feed is the real :class:`FeedIntake` plugin over an in-memory
    :class:`EventFeed` (the file behind it is on disk), and every call is also a
    click-to-call of one of ten API tokens in a real :class:`Originations`.
    """

    __name__ = "bench_office"

    def __init__(self, onec: Any, answers: Any) -> None:
        from callrouter_onec.plugin import OneCPlugin

        self.plugin = OneCPlugin()
        self.answers = answers
        self.onec = onec
        self.told = 0

    def callrouter_wants_call_events(self) -> bool:
        return True

    def callrouter_call_event(self, event: Any) -> None:
        from callrouter_onec.plugin import _facts_of

        self.told += 1
        if self.plugin._recall(event.call_id) is None:
            answer = self.onec.cache.fresh(self.answers(event.call_id))
            self.plugin._remember(
                event.call_id, _facts_of(answer.as_dict() if answer is not None else None)
            )


def _mark_office_hooks() -> None:
    from router.hookspecs import hookimpl

    for name in ("callrouter_wants_call_events", "callrouter_call_event"):
        setattr(OfficeMemories, name, hookimpl(getattr(OfficeMemories, name)))


def id_tables(seen: Any) -> int:
    """Bytes of the hash tables of the call life's event ids (``SeenIds``): one
    set of them all before the thirty-ninth session, a few sets since."""
    if hasattr(seen, "_ids"):
        return sys.getsizeof(seen._ids)
    return sum(map(sys.getsizeof, [seen._young, *seen._closed]))


def deep_size(root: object) -> int:
    """Bytes of ``root`` and everything it holds (each object once)."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (bool, type)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)) or hasattr(obj, "maxlen"):
            stack.extend(obj)  # type: ignore[call-overload]
        elif not isinstance(obj, (str, bytes, int, float)):
            slots = getattr(type(obj), "__slots__", ())
            stack.extend(getattr(obj, n) for n in slots if hasattr(obj, n))
            stack.extend(getattr(obj, "__dict__", {}).values())
    return total


@dataclass(frozen=True)
class Diagnose:
    """``--diagnose``: where the memory sits at each checkpoint (see :class:`Allocators`)."""

    on: bool = False
    #: ``--tracemalloc``: trace every allocation from the start (slower, and its
    #: own traces add to VmRSS, not to the traced total).
    trace: bool = False
    #: ``--trim``: ``malloc_trim(0)`` at each checkpoint, VmRSS again after it
    #: (it changes the run from there on: a run of its own).
    trim: bool = False


async def run(
    calls: int,
    warmup: int,
    extra: int = 0,
    life: bool = False,
    every: int = 10_000,
    diagnose: Diagnose = Diagnose(),
) -> tuple[list[list[object]], list[list[object]], list[list[object]], list[list[object]]]:
    with scratch_dir("bench-memory-") as tmp:
        return await _run_in(tmp, calls, warmup, extra, life, every, diagnose)


async def _run_in(
    tmp: Path,
    calls: int,
    warmup: int,
    extra: int = 0,
    life: bool = False,
    every: int = 10_000,
    diagnose: Diagnose = Diagnose(),
) -> tuple[list[list[object]], list[list[object]], list[list[object]], list[list[object]]]:
    """:func:`run` with its files in ``tmp``."""
    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    rules = make_rules_dir(tmp, extra=extra)
    config = load_config(engine_config(tmp, "http://127.0.0.1:9/asterisk", "x", rules))
    callers = [f"7916{n:07d}" for n in range(1000)]
    onec = BenchOneC(callers)
    await onec.warm()
    fake = FakeAMI()
    extra_plugins: list[Any] = []
    office: OfficeMemories | None = None
    if life:
        from router.api.calls import Origination, Originations
        from router.api.feed import EventFeed
        from router.api.intake import FeedIntake

        _mark_office_hooks()

        def caller_of(call_id: str) -> str:
            return callers[int(call_id.removeprefix("bench-").partition(".")[0]) % len(callers)]

        office = OfficeMemories(onec, caller_of)
        feed = EventFeed()
        intake = FeedIntake(feed)
        originations = Originations(feed)
        extra_plugins = [office, intake]
    engine = Engine(
        config,
        plugins=Plugins.load(extra=[onec, *extra_plugins], disabled=["onec"]),
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
        before, after, channel = call_events(i, callers[i % len(callers)], life)
        sent = asyncio.get_running_loop().create_future()
        fake.waiting[channel] = sent
        for event in before:
            await engine.handle_event(event)
        await asyncio.wait_for(sent, 5)
        for event in after:
            await engine.handle_event(event)
        if life:
            originations.add(
                Origination(
                    id=f"bench-{i}.1",
                    action_id=f"callrouter-originate-{i:012d}",
                    extension="101",
                    number=callers[i % len(callers)],
                    dial="PJSIP/101",
                    created=time.time(),
                    owner=f"token-{i % 10}",
                )
            )

    def memories() -> list[tuple[str, int, int, object]]:
        """(name, size, cap, the object holding it) of each bounded memory."""
        from callrouter_onec import plugin as onec_plugin

        from router.api import calls as api_calls
        from router.api import intake as api_intake

        folder = engine.calllife.folder
        assert office is not None
        return [
            (
                "call life: event ids told (Folder._emitted)",
                len(folder._emitted),
                folder.max_emitted,
                folder._emitted,
            ),
            (
                "call life: ended calls (Folder._ended)",
                len(folder._ended),
                folder.max_calls,
                folder._ended,
            ),
            (
                "call life: calls followed (Folder._calls)",
                len(folder._calls),
                folder.max_calls,
                folder._calls,
            ),
            (
                "1C plugin: facts per call (OneCPlugin._facts)",
                len(office.plugin._facts),
                onec_plugin._FACTS_MAX,
                office.plugin._facts,
            ),
            (
                "API: click-to-calls, 10 tokens (Originations)",
                len(originations._by_id),
                10 * api_calls._KEPT,
                (originations._by_id, originations._by_action, originations._by_owner),
            ),
            (
                "API: event feed in memory (EventFeed)",
                len(feed),
                feed.max_events,
                (feed._events, feed._cursors, feed._dropped),
            ),
            (
                "API: feed intake calls (FeedIntake._calls)",
                len(intake._calls),
                api_intake._CALLS_MAX,
                intake._calls,
            ),
            ("engine: decision records", len(engine.records), 0, engine.records),
        ]

    rows: list[list[object]] = []
    curve: list[list[object]] = []
    sizes: list[list[object]] = []
    diag: list[list[object]] = []
    allocators = Allocators()
    mib = 1024 * 1024

    def checkpoint(done: int) -> None:
        """One row of ``--diagnose``: VmRSS beside what each allocator holds."""
        rss = rss_kb() / 1024
        row: list[object] = [f"{done:,}", f"{rss:.1f}"]
        if diagnose.trace:
            row.append(f"{tracemalloc.get_traced_memory()[0] / mib:.1f}")
        py = allocators.pymalloc()
        if py["arenas"] < 0:  # not printed while tracemalloc wraps the allocator
            row += ["-", "-", "-"]
        else:
            row += [str(py["arenas"]), f"{py['blocks'] / mib:.1f}", f"{py['free'] / mib:.1f}"]
        libc = allocators.glibc()
        if libc:
            row += [
                f"{libc['arena'] / mib:.1f}",
                f"{libc['uordblks'] / mib:.1f}",
                f"{libc['fordblks'] / mib:.1f}",
                f"{libc['hblkhd'] / mib:.1f} ({libc['hblks']})",
            ]
        row.append(f"{id_tables(engine.calllife.folder._emitted) / mib:.1f}")
        if diagnose.trim:
            before = rss_kb() / 1024
            allocators.trim()
            row.append(f"{before:.1f} -> {rss_kb() / 1024:.1f}")
        diag.append(row)

    for i in range(warmup):
        await one(i)
    await engine.wait_idle()
    gc.collect()
    rss0 = rss_kb()
    t0 = time.process_time()
    if life:
        curve.append([0, f"{rss0 / 1024:.1f}", *(f"{m[1]:,}" for m in memories()[:7])])
        if diagnose.on:
            checkpoint(0)
    for i in range(warmup, warmup + calls):
        await one(i)
        if i % 1000 == 0:
            await engine.wait_idle()
        done = i - warmup + 1
        if life and done % every == 0:
            await engine.wait_idle()
            gc.collect()
            curve.append(
                [f"{done:,}", f"{rss_kb() / 1024:.1f}", *(f"{m[1]:,}" for m in memories()[:7])]
            )
            if diagnose.on:
                checkpoint(done)
    await engine.wait_idle()
    cpu = time.process_time() - t0
    gc.collect()
    rss1 = rss_kb()
    if life:
        for name, size, cap, holder in memories()[:7]:
            used = deep_size(holder)
            sizes.append(
                [
                    name,
                    f"{size:,}",
                    f"{cap:,}",
                    f"{used / 1e6:.1f} MB",
                    f"{used / max(size, 1):.0f} B" if size else "-",
                ]
            )
    outcomes: dict[str, int] = {}
    for record in engine.records:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    rows.append(["VmRSS before (after warm-up)", f"{rss0 / 1024:.1f} MB"])
    rows.append([f"VmRSS after {calls:,} calls", f"{rss1 / 1024:.1f} MB"])
    growth = (rss1 - rss0) / 1024
    if life:  # bounded memories fill: the checkpoints below show where it levels off
        rows.append(["growth (the bounded memories below filling)", f"{growth:.1f} MB"])
    else:
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
    if life:
        assert office is not None
        rows.append(["call events told (call life)", f"{office.told:,}"])
    rows.append(["engine CPU per call", f"{cpu / calls * 1e6:.0f} us"])
    return rows, curve, sizes, diag


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
    parser.add_argument(
        "--call-life",
        action="store_true",
        help="also what an office runs per call (call life, 1C facts, API feed and "
        "click-to-calls); RSS every --every calls; writes memory_call_life.md",
    )
    parser.add_argument("--every", type=int, default=10_000, help="calls between checkpoints")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="with --call-life: at each checkpoint, the memories' deep size, pymalloc's "
        "arenas and glibc malloc's heap beside VmRSS",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="--diagnose with tracemalloc's traced total"
    )
    parser.add_argument(
        "--trim",
        action="store_true",
        help="--diagnose, and malloc_trim(0) at each checkpoint (VmRSS after it too)",
    )
    args = parser.parse_args()
    diagnose = Diagnose(
        on=args.diagnose or args.tracemalloc or args.trim, trace=args.tracemalloc, trim=args.trim
    )
    if diagnose.on and not args.call_life:
        parser.error("--diagnose, --tracemalloc and --trim go with --call-life")
    if diagnose.trace:
        tracemalloc.start()
    rows, curve, sizes, diag = asyncio.run(
        run(args.calls, args.warmup, args.extra_rules, args.call_life, args.every, diagnose)
    )
    if not args.call_life:
        text = (
            "### Memory: 100,000 synthetic calls through Engine.handle_event\n\n"
            + md_table(["measure", "value"], rows)
            + "\n"
        )
        print(text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "memory.md").write_text(text)
        return
    short = ["_emitted", "_ended", "_calls", "1C _facts", "Originations", "feed", "intake"]
    text = (
        f"### Memory with the call life: {args.calls:,} synthetic office calls\n\n"
        + md_table(["measure", "value"], rows)
        + "\n\nVmRSS (after gc) and each bounded memory's size, every "
        + f"{args.every:,} calls:\n\n"
        + md_table(["calls", "VmRSS MB", *short], curve)
        + "\n\nAt the end, each memory against its cap (deep size: the container, "
        + "keys and values, each object once):\n\n"
        + md_table(["memory", "size", "cap", "bytes", "per entry"], sizes)
        + "\n"
    )
    if diagnose.on:
        headers = ["calls", "VmRSS"]
        headers += ["traced"] if diagnose.trace else []
        headers += ["pymalloc arenas", "in blocks", "blocks free"]
        headers += ["malloc heap", "in use", "free", "mmapped (blocks)", "_emitted's set tables"]
        headers += ["VmRSS -> after malloc_trim(0)"] if diagnose.trim else []
        text += (
            "\nWhere the memory sits at each checkpoint (MB = MiB; pymalloc's arenas "
            + "are 1 MiB each; malloc's heap is its brk arena, mmapped blocks apart):\n\n"
            + md_table(headers, diag)
            + "\n"
        )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_call_life.md").write_text(text)


if __name__ == "__main__":
    main()
