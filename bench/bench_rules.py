"""How long one call's rule evaluation takes, at 10, 100 and 1,000 rules.

Run: ``python bench/bench_rules.py`` (``--calls N`` to change the sample).
Lookups are instant (as if answered from the engine's cache), so the figures
are the rule engine's own cost: indexing, conditions, lookups bookkeeping,
rendering actions and building the trace.

Scenarios, each with N rules in total:

* ``mixed``: a realistic set - per-DID call rules (``did == "..."``), generic
  call rules (blacklist, VIP, working hours, owner via 1C, default) and event
  and schedule rules; calls go to random DIDs. Target: median < 50 us at 1,000.
* ``per-did``: every rule is a call rule for its own DID written
  ``did == "..." and ...``, the form the index has always recognised (the
  "dedicated" form); the call's DID is the last one.
* the same 1,000 per-number rules written in the other forms the index reads
  (router/rules/index.py), each against calls that reach the last rule:
  ``did-reversed`` (``"..." == did and ...``), ``did-or`` (``did == "a" or
  did == "b"``), ``did-in`` (``did in ("a", "b")``), ``caller-eq``
  (``caller.number == "..." and not caller.internal``: before the index read
  it, the worst row at several hundred us), ``caller-last10``
  (``last10(caller.number) == "..."``), ``caller-list`` (``caller.number in
  lists.kN``). Target: median < 50 us at 1,000 for every one.
* ``linear``: every rule is generic (``caller.number[-7:] == "..."``: no
  index reads a slice) and false except the last one; nothing can be skipped, so cost grows
  with N. This is the bound to keep in mind when writing hundreds of rules no
  index can read.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.ami.catalog import load_catalog
from router.plugin_registry import plugin_registry
from router.rules import Caller, Context, RuleSet, load_rules

GENERIC = """
  - name: blacklist
    priority: 100
    on: call
    if: caller.number in lists.blacklist
    do: [{hangup: {cause: 21}}]
  - name: vip
    priority: 90
    on: call
    if: caller.number in lists.vip
    do: [{redirect: {context: queues, exten: vip}}]
  - name: closed
    priority: 80
    on: call
    if: not workhours("mon-fri 09:00-19:00", holidays=lists.holidays)
    do: [{redirect: {context: ivr, exten: closed}}]
  - name: owner
    priority: 50
    on: call
    lookup:
      owner: onec.responsible(caller.number)
      state: extension_state(owner.manager.extension)
    when: owner.found and owner.manager.extension and state in ("idle", "unknown")
    do:
      - setvar: {CRM_CLIENT: "{owner.client.name}"}
      - redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}
  - name: default
    priority: 0
    on: call
    do: [{redirect: {context: queues, exten: sales}}]
"""

HEADER = """version: 1
lists:
  blacklist: ["74950000001", "74950000002"]
  vip: ["79160000001"]
  holidays: {items: ["01-01", "01-07"], type: dates}
rules:
"""


def did(i: int) -> str:
    return f"7495{i:07d}"


def per_did_rule(i: int, priority: int = 60) -> str:
    return f"""  - name: did-{i}
    priority: {priority}
    on: call
    if: did == "{did(i)}" and workhours("mon-fri 09:00-19:00")
    do: [{{redirect: {{context: branch, exten: "{i}"}}}}]
"""


#: Fifty events Asterisk 22 documents: the loader refuses a name it does not
#: (``Event6`` made the mixed set a load error).
EVENT_NAMES = sorted(load_catalog().events)[:50]


def event_rule(i: int) -> str:
    return f"""  - name: event-{i}
    on: event {EVENT_NAMES[i % 50]}
    if: event.cause == "{i}"
    do: [{{notify: {{plugin: onec, event: e{i}}}}}]
"""


def schedule_rule(i: int) -> str:
    return f"""  - name: schedule-{i}
    schedule: "{i % 60} {i % 24} * * *"
    do: [{{ami: {{action: DBPut, family: f, key: k{i}, val: v}}}}]
"""


def caller(i: int) -> str:
    return f"7000{i:07d}"


#: ``if:`` of rule i in each per-number form (the index reads every one).
FORMS: dict[str, Callable[[int], str]] = {
    "per-did": lambda i: f'did == "{did(i)}" and workhours("mon-fri 09:00-19:00")',
    "did-reversed": lambda i: f'"{did(i)}" == did and workhours("mon-fri 09:00-19:00")',
    "did-or": lambda i: f'did == "{did(i)}" or did == "{did(i + 100_000)}"',
    "did-in": lambda i: f'did in ("{did(i)}", "{did(i + 100_000)}")',
    "caller-eq": lambda i: f'caller.number == "{caller(i)}" and not caller.internal',
    "caller-last10": lambda i: f'last10(caller.number) == "{caller(i)[-10:]}"',
    "caller-list": lambda i: f"caller.number in lists.k{i}",
    "linear": lambda i: f'caller.number[-7:] == "{caller(i)[-7:]}"',
}


def form_rule(form: str, i: int) -> str:
    return f"""  - name: rule-{i}
    on: call
    if: '{FORMS[form](i)}'
    do: [{{redirect: {{context: c, exten: "{i}"}}}}]
"""


def mixed(n: int) -> tuple[str, list[tuple[str, str]]]:
    body = GENERIC
    count = 5
    dids = []
    i = 0
    while count < n:
        kind = i % 10
        if kind < 6:
            body += per_did_rule(i)
            dids.append(did(i))
        elif kind < 8:
            body += event_rule(i)
        else:
            body += schedule_rule(i)
        count += 1
        i += 1
    dids.append("74959999999")  # a DID without its own rule
    return HEADER + body, [("79161234567", d) for d in dids]


def per_form(form: str) -> Callable[[int], tuple[str, list[tuple[str, str]]]]:
    """n rules of one form, and a call that only the last one matches."""

    def build(n: int) -> tuple[str, list[tuple[str, str]]]:
        head = HEADER
        if form == "caller-list":
            head = head.replace(
                "lists:\n", "lists:\n" + "".join(f'  k{i}: ["{caller(i)}"]\n' for i in range(n))
            )
        body = "".join(form_rule(form, i) for i in range(n - 1))
        body += """  - name: last
    priority: -1
    on: call
    do: [{redirect: {context: queues, exten: sales}}]
"""
        return head + body, [(caller(n - 2), did(n - 2))]

    return build


async def owner(number: str) -> dict[str, Any]:
    return {
        "found": True,
        "client": {"name": "Romashka"},
        "manager": {"name": "Ivan", "extension": "101"},
    }


async def busy(extension: str) -> str:
    return "busy"  # so the owner rule falls through to the per-DID rules


async def measure(ruleset: RuleSet, numbers: list[tuple[str, str]], calls: int) -> list[float]:
    lookups = {"onec.responsible": owner, "extension_state": busy}
    zone = ruleset.registry.timezone
    now = datetime(2026, 11, 23, 12, 0, tzinfo=zone)
    rng = random.Random(1)
    contexts = []
    for _ in range(calls):
        number, number_did = rng.choice(numbers)
        contexts.append(Context.for_call(Caller(number), number_did, now=now))
    samples = []
    clock: Callable[[], int] = time.perf_counter_ns
    for context in contexts:
        deadline = time.monotonic() + 5
        start = clock()
        outcome = await ruleset.evaluate(context, deadline=deadline, lookups=lookups)
        samples.append((clock() - start) / 1000)
        assert outcome.decision.matched
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    registry = plugin_registry()
    scenarios = {"mixed": mixed, **{form: per_form(form) for form in FORMS}}
    print(f"{'scenario':<14} {'rules':>6} {'call rules':>10} {'median us':>10} {'p95 us':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in scenarios.items():
            for n in (10, 100, 1000):
                text, numbers = build(n)
                path = Path(tmp) / f"{name}-{n}.yaml"
                path.write_text(text, encoding="utf-8")
                ruleset = load_rules([path], registry)
                assert not ruleset.errors, ruleset.errors[:3]
                calls = sum(1 for r in ruleset.rules if r.trigger.kind == "call")
                samples = asyncio.run(measure(ruleset, numbers, args.calls))
                samples.sort()
                p95 = samples[int(len(samples) * 0.95)]
                print(
                    f"{name:<14} {len(ruleset.rules):>6} {calls:>10} "
                    f"{statistics.median(samples):>10.1f} {p95:>8.1f}"
                )


if __name__ == "__main__":
    main()
