"""The call tracker's cost per new call, with 1,000 and with 100,000 calls tracked.

Run: ``.venv/bin/python bench/bench_tracker.py`` (``--calls N`` new calls per size).

Each size fills a :class:`~router.calls.CallTracker` with ``max_calls`` = that
size (calls whose Hangup never came, the worst case: every new call has to
evict one), then times ``N`` more calls of three events each (``Newchannel``,
``Newexten``, ``VarSet``). Before issue 10 eviction scanned every tracked call
(``min()`` over 100,000 calls): 9.4 ms per new call at 100,000. The figure
must now be flat: the same microseconds per call at both sizes.
"""

from __future__ import annotations

import argparse
import time

from router.ami.message import Event
from router.calls import CallTracker
from router.dialplan import DID_VARIABLE, INBOUND_CONTEXT


def _events(i: int) -> list[Event]:
    common = (
        ("Channel", f"PJSIP/trunk-{i:08x}"),
        ("Linkedid", f"call-{i}"),
        ("Uniqueid", f"call-{i}"),
        ("CallerIDNum", "79161234567"),
        ("CallerIDName", "<unknown>"),
    )
    return [
        Event(
            (
                ("Event", "Newchannel"),
                *common,
                ("ChannelStateDesc", "Ring"),
                ("Context", INBOUND_CONTEXT),
                ("Exten", "74950000001"),
            )
        ),
        Event(
            (
                ("Event", "Newexten"),
                *common,
                ("Context", INBOUND_CONTEXT),
                ("Exten", "74950000001"),
                ("Priority", "1"),
                ("Application", "NoOp"),
            )
        ),
        Event((("Event", "VarSet"), *common, ("Variable", DID_VARIABLE), ("Value", "74950000001"))),
    ]


def per_call_us(size: int, calls: int) -> float:
    tracker = CallTracker(max_calls=size)
    for i in range(size):
        for event in _events(i):
            tracker.feed(event)
    assert len(tracker) == size
    batch = [_events(size + i) for i in range(calls)]
    started = time.perf_counter()
    for events in batch:
        for event in events:
            tracker.feed(event)
    elapsed = time.perf_counter() - started
    assert len(tracker) == size
    return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    print("### Call tracker: cost per new call when full (target: flat)\n")
    print("| tracked calls (full) | per new call |")
    print("|---:|---:|")
    for size in (1_000, 100_000):
        print(f"| {size:,} | {per_call_us(size, args.calls):.1f} µs |")


if __name__ == "__main__":
    main()
