"""Run every benchmark, write bench/results/latest.md and docs/performance.md.

Run: ``.venv/bin/python bench/run_all.py`` (what ``make bench`` does; under 10
minutes on a 2-core machine). ``--quick`` shortens every benchmark (a smoke
run, figures not for quoting).

Each benchmark is a plain script run in its own process, one after the other
(the machine is shared: nothing runs side by side except within a benchmark,
where that is the point). Their markdown tables are collected in order, under
a description of the machine they came from.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, machine, md_table

BENCH = REPO / "bench"
DOC = REPO / "docs" / "performance.md"

#: (script, normal arguments, --quick arguments, budget in seconds)
PLAN: list[tuple[str, list[str], list[str], int]] = [
    ("bench_ingest.py", [], ["--events", "20000", "--repeat", "1"], 120),
    ("bench_rules.py", ["--calls", "2000"], ["--calls", "200"], 120),
    ("bench_onec.py", [], ["--samples", "20"], 90),
    ("bench_memory.py", [], ["--calls", "5000", "--warmup", "500"], 240),
    ("bench_tracker.py", [], ["--calls", "2000"], 120),
    ("bench_engine.py", [], ["--rounds", "1", "--repeat", "1"], 120),
    ("bench_path.py", [], ["--calls", "50", "--repeat", "1"], 120),
    # The same path cut in stages: where its time goes, for work on it.
    ("bench_path.py", ["--stages"], ["--stages", "--calls", "50"], 60),
    # The router's CPU per call on a captured TCP stream (issue 16's CPU target).
    ("bench_cpu.py", [], ["--repeat", "1"], 180),
    (
        "bench_route.py",
        [
            "--duration",
            "4",
            # Three: the medians are then a repetition's own figure, and a
            # ratio's "at or below" count says more than one of two.
            "--repeat",
            "3",
            "--variants",
            "tcp,tcp-engine,tcp-engine+filter,tcp-engine+filter+life,engine,engine+filter,ajam",
        ],
        ["--duration", "1", "--rates", "20,100"],
        900,
    ),
    (
        # The same with 100 NoOp steps between the request and Wait: a Redirect
        # sent before Wait can land between two of them and be lost (docs/asterisk.md).
        "bench_route.py",
        [
            "--race-steps",
            "100",
            "--rates",
            "40",
            "--duration",
            "30",
            "--burst",
            "0",
            "--variants",
            "tcp,tcp-engine+filter",
        ],
        [
            *("--race-steps", "100", "--rates", "40", "--duration", "2", "--burst", "0"),
            *("--variants", "tcp,tcp-engine+filter"),
        ],
        180,
    ),
    ("bench_feed.py", [], ["--duration", "1", "--clients", "20"], 90),
    ("bench_events.py", [], ["--duration", "2", "--rate", "20"], 120),
    ("bench_click.py", [], ["--calls", "5"], 60),
    ("bench_metrics.py", [], ["--calls", "5000"], 60),
]

INTRO = """# Performance

What callrouter costs, measured side by side with references in one run on one
machine (`make bench`, or `.venv/bin/python bench/run_all.py`; each script in
`bench/` also runs alone and prints its own table). The machine is shared and
noisy: quote ratios between rows of one run rather than absolute figures
across runs. How each figure is taken is in the docstring of its script.

Targets (issue 7): overhead against the reference loop p50 <= 1.10x and
p95 <= 1.20x; 100 calls/s with every call routed before the deadline and the
router under half a core; ingest >= 50,000 events/s per core and >= 2x
panoramisk; rules median < 50 us per call at 1,000 rules; memory growth
< 5 MB across 100,000 calls.
"""


def rules_table(text: str) -> str:
    """bench_rules.py prints a plain table; turn it into markdown."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 5:
            name, rules, calls, median, p95 = parts
            rows.append(
                [
                    name,
                    int(rules),
                    int(calls),
                    float(median),
                    float(p95),
                    ""
                    if int(rules) < 1000 or name == "linear"
                    else ("yes" if float(median) < 50 else "NO"),
                ]
            )
    return (
        "### Rules: evaluation time per call (lookups instant)\n\n"
        + md_table(
            [
                "scenario",
                "rules",
                "call rules",
                "median us",
                "p95 us",
                "target < 50 us (1,000; not linear)",
            ],
            rows,
        )
        + "\n"
    )


#: Seconds a script over its budget has, after SIGTERM, to clean up (its
#: sandbox's Asterisk and instance folder) before SIGKILL.
GRACE = 30.0


def run_script(
    cmd: list[str], *, timeout: float, grace: float = GRACE, cwd: Path = REPO
) -> tuple[str, str, int]:
    """Run one benchmark; its stdout, stderr and exit code (-1: timed out).

    A script over ``timeout`` gets SIGTERM, which the scripts that start a
    sandbox turn into Ctrl-C (``_common.sigterm_cleans_up``): they remove it on
    their way out. Only one still running ``grace`` seconds later is killed.
    ``subprocess.run``'s timeout sent SIGKILL at once, which left the sandbox's
    Asterisk running and its instance folder behind.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=grace)
            how = "stopped with SIGTERM"
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            how = f"killed: still running {grace:g} s after SIGTERM"
        return out, f"{err[-1500:]}\ntimed out after {timeout:g} s ({how})", -1
    return out, err, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated script names (default: all)")
    args = parser.parse_args()
    started = time.monotonic()
    sections: list[str] = []
    timings: list[list[object]] = []
    failed = []
    for script, normal, quick, budget in PLAN:
        if args.only and script not in args.only.split(","):
            continue
        cmd = [sys.executable, str(BENCH / script), *(quick if args.quick else normal)]
        print(f"== {script}", file=sys.stderr, flush=True)
        t = time.monotonic()
        out, err, rc = run_script(cmd, timeout=budget * 2)
        took = time.monotonic() - t
        timings.append([script, round(took, 1), budget, "ok" if rc == 0 else f"FAILED ({rc})"])
        sys.stderr.write(err[-3000:] if rc else "")
        if rc != 0:
            failed.append(script)
            sections.append(f"### {script}: failed (exit {rc})\n\n```\n{err[-1500:]}\n```\n")
            continue
        sections.append(rules_table(out) if script == "bench_rules.py" else out.strip() + "\n")
        print(sections[-1], flush=True)
    info = machine()
    total = time.monotonic() - started
    header = (
        "## Machine\n\n"
        + md_table(["", ""], [[k, v] for k, v in info.items()])
        + "\n\n## Results\n\n"
    )
    footer = (
        "\n### Run\n\n"
        + md_table(["script", "seconds", "budget s", "status"], timings)
        + f"\n\nTotal: {total:.0f} s"
        + (" (quick run: not for quoting)" if args.quick else "")
        + ".\n"
    )
    body = header + "\n".join(sections) + footer
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text("# Benchmark results\n\n" + body, encoding="utf-8")
    analysis = BENCH / "ANALYSIS.md"
    extra = "\n" + analysis.read_text(encoding="utf-8") if analysis.exists() else ""
    if not args.quick and not args.only:
        DOC.write_text(INTRO + "\n" + body + extra, encoding="utf-8")
    print(
        f"wrote {RESULTS / 'latest.md'}"
        + ("" if args.quick or args.only else f" and {DOC}")
        + f" in {total:.0f} s",
        file=sys.stderr,
    )
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
