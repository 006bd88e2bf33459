"""Shared helpers for the benchmarks in bench/: tables, percentiles, the machine,
the sandbox dialplan, and the rule set with 1,000 extra non-matching rules.

Not a benchmark itself (``run_all.py`` runs only ``bench_*.py``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
#: Another revision's tree (``bench_route.py --baseline REV`` extracts it) whose
#: router and 1C plugin a benchmark process imports instead of this checkout's,
#: so a change is measured beside the code before it, in one run.
BASELINE = os.environ.get("CALLROUTER_BENCH_BASELINE")
if BASELINE:
    sys.path[0:0] = [BASELINE, str(Path(BASELINE) / "plugins" / "onec")]

#: The DID every benchmark call dials, and callers that are in the directory
#: (tests/fixtures/engine/directory.csv) but that 1C does not know.
DID = "74950000001"
CALLERS = ("79161234567", "79161234568", "79161234569", "74957654321", "79031112233")
DIRECTORY_CSV = REPO / "tests" / "fixtures" / "engine" / "directory.csv"


def sigterm_cleans_up() -> None:
    """End this process on SIGTERM as on Ctrl-C: a KeyboardInterrupt, so that
    the ``with Sandbox.start(...)`` (or ``finally``) around the run removes its
    Asterisk and instance folder. Without it SIGTERM kills at once and leaves
    both (``python -m router.sandbox status`` then lists the folder as left
    behind); ``run_all.py`` stops a script over its budget with SIGTERM.
    Called just before the sandbox starts, in the process that owns it (not in
    the ``--serve`` children, which handle SIGTERM in their event loop)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# ----------------------------------------------------------------------------- output


def free_port() -> int:
    """A loopback TCP port to listen on, outside the kernel's ephemeral range
    (:func:`router.sandbox.ports.listen_port`): a listener stopped and started
    again finds it free still. A ``--baseline`` tree older than that helper gets
    a port from the kernel, as before."""
    try:
        from router.sandbox.ports import listen_port
    except ImportError:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    return listen_port()


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    text_rows = [[cell(v) for v in row] for row in rows]
    align = [
        "---:" if rows and isinstance(rows[0][i], (int, float)) else "---"
        for i in range(len(headers))
    ]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in text_rows]
    return "\n".join(out)


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine() -> dict[str, str]:
    """What the figures came from: cores, CPU model, Python, Asterisk, date."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    asterisk = "not provisioned"
    try:
        from router.sandbox import asterisk_version, default_cache_dir

        root = default_cache_dir() / "rootfs"
        if root.exists():
            asterisk = asterisk_version(root)
    except Exception:
        pass
    nproc = shutil.which("nproc")
    cores = (
        subprocess.run([nproc], capture_output=True, text=True).stdout.strip()
        if nproc
        else str(os.cpu_count())
    )
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cores (nproc)": cores,
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asterisk": asterisk,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ----------------------------------------------------------------------------- dialplan

#: The device of manager 101's hint (``devstate change`` sets it).
BENCH_HINT = "Custom:bench101"
#: Where routed calls land; each target logs its Newexten and hangs up at once,
#: so channels do not pile up during a paced run.
_TARGETS = ("callrouter-dial", "callrouter-default", "queues", "ivr", "from-internal")


def bench_dialplan(wait: int = 4, steps_after_request: int = 0) -> str:
    """The shipped ``[callrouter-inbound]`` context verbatim, plus targets that hang up.

    ``steps_after_request``: that many ``NoOp`` steps between the request and
    ``Wait`` (bench_route.py ``--race-steps``): each is a moment in which
    Asterisk can lose a Redirect (docs/asterisk.md, "A Redirect Asterisk can
    lose"), so a router that redirects before ``Wait`` loses calls there."""
    text = (REPO / "examples" / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    keep: list[str] = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            section = stripped[1 : stripped.index("]")]
        if section in ("globals", "callrouter-inbound"):
            if section == "globals" and stripped.startswith("CALLROUTER_WAIT="):
                line = f"CALLROUTER_WAIT={wait}"
            keep.append(line)
            if stripped.startswith("same => n,UserEvent(CallRouterRequest"):
                keep.extend(f" same => n,NoOp(step {k})" for k in range(steps_after_request))
    if os.environ.get("BENCH_DIALPLAN_ORDER") == "ringing-first":
        # A trial (bench/ANALYSIS.md, thirty-seventh session): Ringing() as the
        # context's second step, not the one before the request.
        ringing = [i for i, line in enumerate(keep) if line.strip() == "same => n,Ringing()"]
        first = next(i for i, line in enumerate(keep) if line.startswith("exten => _X.,1,"))
        if len(ringing) == 1:
            keep.insert(first + 1, keep.pop(ringing[0]))
    out = "\n".join(keep) + "\n"
    # The owner rule's manager (BENCH_OWNER=101) has a hint: with
    # BENCH_STATE_CACHE its state comes from ExtensionStatus events.
    out += f"\n[hints]\nexten => 101,hint,{BENCH_HINT}\n"
    for ctx in _TARGETS:
        out += (
            f"\n[{ctx}]\nexten => _[a-z0-9].,1,NoOp(bench landed ${{EXTEN}})\n"
            f" same => n,Hangup()\nexten => _X,1,NoOp(bench landed ${{EXTEN}})\n"
            f" same => n,Hangup()\n"
        )
    return out


# ----------------------------------------------------------------------------- rules

EXTRA_EVENTS = (
    "Hangup",
    "Newstate",
    "DialEnd",
    "QueueCallerAbandon",
    "AgentConnect",
    "BridgeEnter",
    "Cdr",
    "VarSet",
)


def extra_rules(n: int = 1000) -> str:
    """``n`` rules that never match a benchmark call.

    Half are per-DID rules (``did == "7495..."``, the most common kind in a
    multi-number office; indexed by DID), a quarter event rules on common
    events with false conditions (evaluated on every such event), and a
    quarter generic call rules whose condition is false, placed between the
    ``owner`` and ``directory`` rules so every call evaluates them.
    """
    parts = ["version: 1\nrules:\n"]
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):
            parts.append(f"""  - name: bench-did-{i}
    priority: 60
    on: call
    if: did == "7495{1000000 + i:07d}"
    do: [{{redirect: {{context: queues, exten: "d{i}"}}}}]
""")
        elif kind == 2:
            ev = EXTRA_EVENTS[i % len(EXTRA_EVENTS)]
            parts.append(f"""  - name: bench-event-{i}
    on: event {ev}
    if: event.cause == "9{i:04d}"
    do: [{{notify: {{plugin: onec, event: e{i}}}}}]
""")
        else:
            parts.append(f"""  - name: bench-generic-{i}
    priority: 45
    on: call
    if: caller.number == "7000{i:07d}" and not caller.internal
    do: [{{redirect: {{context: queues, exten: "g{i}"}}}}]
""")
    return "".join(parts)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new folder in the temporary directory for one run's files (its
    router.toml, rules, state and router.log), removed when the block ends,
    however it ends (an error, Ctrl-C): no benchmark keeps it, none tells the
    user to read it. Removed after the figures are taken, outside any timed part.

    A root logger handler that writes into it (``logging.basicConfig`` with a
    ``FileHandler(tmp / "router.log")``) is closed and taken off first: a later
    run in the same process then logs into its own folder, as the first did.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            name = getattr(handler, "baseFilename", None)
            if isinstance(name, str) and Path(name).is_relative_to(folder):
                root.removeHandler(handler)
                handler.close()
        shutil.rmtree(folder, ignore_errors=True)


def make_rules_dir(dest: Path, extra: int = 1000) -> Path:
    """rules/ (the shipped example rules and lists) plus ``extra`` non-matching rules.

    One change to the shipped file: the ``closed`` rule's working hours become
    ``daily`` so that results do not depend on the hour the benchmark runs at
    (otherwise after 19:00 Moscow time every call is routed by ``closed``
    and never reaches the lookups).
    """
    rules = dest / "rules"
    shutil.copytree(REPO / "rules", rules, dirs_exist_ok=True)
    inbound = rules / "inbound.yaml"
    text = inbound.read_text(encoding="utf-8")
    text = text.replace(
        'not workhours("mon-fri 09:00-19:00", holidays=lists.holidays)',
        'not workhours("daily", holidays=lists.holidays)',
    )
    inbound.write_text(text, encoding="utf-8")
    if extra:
        (rules / "zz-bench-extra.yaml").write_text(extra_rules(extra), encoding="utf-8")
    return rules


def engine_config(dest: Path, url: str, secret: str, rules: Path, username: str = "router") -> Path:
    path = dest / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "{username}"\nsecret = "{secret}"\n'
        f"waitevent_timeout = 20\n"
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{dest / "state"}"\n'
        f'[plugins.directory]\nfile = "{DIRECTORY_CSV}"\n'
        # BENCH_STATE_CACHE=1: extension_state answers from ExtensionStatus events.
        + (
            "[plugins.extension_state]\ncache = true\n"
            if os.environ.get("BENCH_STATE_CACHE")
            else ""
        ),
        encoding="utf-8",
    )
    return path


class BenchOneC:
    """``onec.responsible`` served from the 1C plugin's :class:`ResponsibleCache`,
    warmed before the run, so every lookup is an in-memory cache hit."""

    __name__ = "bench_onec"

    def __init__(
        self, numbers: Sequence[str] = CALLERS, *, found: bool = False, owner: str | None = None
    ) -> None:
        """``owner``: 1C names this extension as every caller's manager, so the
        shipped ``owner`` rule routes the calls (two ``Setvar`` and a Redirect
        to ``callrouter-dial``) instead of the directory (one Redirect);
        ``BENCH_OWNER`` in the environment sets it for ``bench_route.py``."""
        from callrouter_onec.cache import ResponsibleCache
        from callrouter_onec.models import Client, Manager, Responsible

        if owner is not None:
            found = True
        client = Client("c-1", "company", "ООО «Ромашка»") if owner is not None else None
        manager = Manager("m-1", "Иванов Иван", owner) if owner is not None else None

        outer = self
        self.fetches = 0

        class Source:
            async def responsible(
                self,
                phone: str,
                *,
                did: str | None = None,
                call_id: str | None = None,
                deadline: float | None = None,
            ) -> Responsible:
                outer.fetches += 1
                return Responsible(found=found, phone=phone, client=client, manager=manager)

        self.cache = ResponsibleCache(Source())
        self.numbers = list(numbers)

    async def warm(self) -> None:
        await self.cache.warm(self.numbers)

    def callrouter_register(self, registry: Any) -> None:
        cache = self.cache

        async def ask(number: str) -> dict[str, Any] | None:
            answer = await cache.lookup(number)
            return answer.as_dict() if answer is not None else None

        def responsible(number: str) -> dict[str, Any] | Awaitable[dict[str, Any] | None] | None:
            """1C: the client and responsible manager for a number (bench cache).

            As the 1C plugin's lookup: a fresh cached answer as it is, else awaitable.
            """
            answer = cache.fresh(number)
            return answer.as_dict() if answer is not None else ask(number)

        registry.add_lookup("onec.responsible", responsible)
        registry.add_notify_target("onec", "1C (benchmark stand-in: never called)")

    def callrouter_notify(self, target: str, params: Any, call: Any) -> None:
        """Carries out ``notify`` to ``onec`` as the 1C plugin does (the shipped
        rules may name it); the benchmark's calls never reach it. Without it,
        every run warned that the target reaches no one."""


class CallLifeListener:
    """What the 1C plugin's ``callrouter_call_event`` does on the event path: the
    event onto a bounded queue (sending it to 1C happens off that path). With
    it the engine follows the call life (CEL and the ringing signs), as it does
    for a router with the 1C plugin; without it nobody is told, and it does not."""

    __name__ = "bench_call_life"

    def __init__(self) -> None:
        import collections

        self.queue: collections.deque[Any] = collections.deque(maxlen=10_000)
        self.told = 0

    def callrouter_call_event(self, event: Any) -> None:
        self.queue.append(event)
        self.told += 1


def _mark_hooks() -> None:
    from router.hookspecs import hookimpl

    BenchOneC.callrouter_register = hookimpl(BenchOneC.callrouter_register)  # type: ignore[method-assign]
    BenchOneC.callrouter_notify = hookimpl(BenchOneC.callrouter_notify)  # type: ignore[method-assign]
    CallLifeListener.callrouter_call_event = hookimpl(  # type: ignore[method-assign]
        CallLifeListener.callrouter_call_event
    )


_mark_hooks()
