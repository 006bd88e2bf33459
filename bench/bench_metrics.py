"""What counting costs the routing path (router/metrics.py), in microseconds.

Run: ``.venv/bin/python bench/bench_metrics.py`` (a few seconds, no Asterisk).

A routed call passes about a dozen AMI events through the engine
(``Newchannel``, ``Newexten`` ... ``Hangup``), each counted by name, and one
decision, counted with its rule, outcome, two latencies and its lookups. This
times exactly those calls on a registry the size of a production one (the
catalog's event names, 1,000 rules seen), so the figure in docs/operations.md
is the per-call overhead of ``/metrics`` on the hot path; a scrape renders in
a worker thread and is timed too.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table

from router.metrics import Metrics, exposition

EVENTS = (
    "Newchannel",
    "Newexten",
    "VarSet",
    "VarSet",
    "UserEvent",
    "Newexten",
    "DialBegin",
    "Newstate",
    "DialEnd",
    "BridgeEnter",
    "BridgeLeave",
    "Hangup",
)


@dataclass
class _Lookup:
    name: str = "owner"
    lookup: str = "onec.responsible"
    ms: float = 12.5
    error: str | None = None
    reused: bool = False


def per_call(metrics: Metrics, rule: str, lookups: tuple[_Lookup, ...]) -> None:
    for name in EVENTS:
        metrics.event(name)
    metrics.decided(
        (rule,), "executed", evaluate_seconds=0.0004, asterisk_seconds=0.012, lookups=lookups
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000, help="calls per timed round")
    args = parser.parse_args()
    metrics = Metrics()
    rules = [f"rule{n}" for n in range(1000)]
    lookups = (_Lookup(), _Lookup(lookup="directory", reused=True))
    for rule in rules:  # the label cache warm, as after a day of calls
        per_call(metrics, rule, lookups)
    calls = args.calls
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for n in range(calls):
            per_call(metrics, rules[n % 50], lookups)
        best = min(best, (time.perf_counter() - started) / calls)
    events = decision = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            for name in EVENTS:
                metrics.event(name)
        events = min(events, (time.perf_counter() - started) / calls)
        started = time.perf_counter()
        for n in range(calls):
            metrics.decided(
                (rules[n % 50],),
                "executed",
                evaluate_seconds=0.0004,
                asterisk_seconds=0.012,
                lookups=lookups,
            )
        decision = min(decision, (time.perf_counter() - started) / calls)
    started = time.perf_counter()
    body = exposition(metrics)
    scrape = time.perf_counter() - started
    print("### Metrics: what counting costs a routed call (bench_metrics.py)\n")
    print(
        md_table(
            ["what", "value"],
            [
                ["per routed call (12 events + 1 decision), µs", best * 1e6],
                [f"the {len(EVENTS)} events alone, µs", events * 1e6],
                ["the decision alone (2 lookups), µs", decision * 1e6],
                ["one scrape rendered, ms", scrape * 1000],
                ["scrape size, KiB", len(body) / 1024],
            ],
        )
    )


if __name__ == "__main__":
    main()
