"""Soak: ``callrouter run`` as an office runs it, for half an hour or more, measured each minute.

Run: ``make soak`` (``SOAK_MINUTES=30``) or ``.venv/bin/python bench/soak_office.py``
(``--minutes 30``, ``--rate 1.5`` calls a second at most, ``--workers 4``, ``--out DIR``,
``--keep``). Needs the Asterisk sandbox with its
phones (``make provision``); takes the minutes asked plus about two. Not a
benchmark of ``run_all.py`` and not a test: it prints a table and writes
``soak.md`` and ``samples.json`` in ``--out``. Without ``--out`` they go to a new
temporary folder, removed when the run ends (also on Ctrl-C or an error) unless
``--keep`` is given or a scenario failed (``failures.jsonl`` is there to be
read); the last line says which.

What runs:

* a private sandbox Asterisk with the shipped dialplan, baresip phones 101-105
  and the PSTN side (``router.sandbox.phones``): 101, 102 and 105 answer, 103
  never answers, 104 is busy;
* the 1C double (``callrouter-onec-double``) in this process;
* ``callrouter run`` as a process with a config like an office's: the 1C plugin
  with CEL history (1C events), the HTTP API (click-to-call, the event feed),
  recordings of answered calls, metrics, the shipped sample ``rules/`` plus a
  file of this soak's rules (one DID per kind of call, above the samples);
* a watcher that long-polls ``GET /events`` with its cursor, as 1C's screen pop does;
* traffic from a few workers, a call at a time each, a phone used by one call at
  a time: answered (and recorded), missed (ring 103 for 3 s), busy (104), the
  caller hanging up while 103 rings, a blind transfer from 105 to 102 (the
  phone's REFER), the same through the API (``POST /calls/{id}/transfer``, as
  1C's button), click-to-call through the API (101 then the customer), and
  calls to a DID no soak rule routes (the samples' rules take them).

Disturbances: at 20% of the run a broken rules file and a SIGHUP, then the good
file and a SIGHUP; at 35% 1C stops for 60 s; at 50% ``manager reload`` in
Asterisk; at 65% the watcher disconnects for 60 s and resumes from its cursor.

Each minute: the router's RSS, open fds and threads (``/proc``), its
``callrouter_calls_active`` and queue depth (``/metrics``), the size of every
file in ``state_dir``, log lines that minute, calls placed and the 1C double's
receipts. At the end (traffic stopped, settle delay waited): each DID's calls
placed against calls 1C has with an end (``hangup`` or ``missed``), duplicate
receipts, ``GET /api/v1/calls`` left open, the watcher's events (no cursor twice,
no gap).

A scenario that fails is counted by kind (``failed``) and by kind and class
(``failed_by_class``), or as an expected outcome with its reason
(``expected_outcomes``) when the soak asked for what could not be, and written
to ``failures.jsonl`` in ``--out``: the error, the caller's call and 105's and
102's as the phones saw them, Asterisk's CEL of the call, and for the API
transfer the HTTP status, body and the router's log lines of the call. The
classes: ``soak`` (the soak's own doing: one worker's clean-up hung up another's
call), ``expected`` (a transfer of a call the caller had hung up: the 409 is
right), ``router`` (a 5xx, no answer, or a 4xx while the call was up),
``unknown`` (read the record). ``logs/`` keeps Asterisk's log and each baresip's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins" / "onec"))

from callrouter_onec.double import DEFAULT_USER, OneCDouble  # noqa: E402

from router.sandbox import Sandbox, listen_port  # noqa: E402
from router.sandbox.phones import Phones  # noqa: E402
from router.testing import shipped_dialplan  # noqa: E402

PASSWORD = "пароль"
TOKEN = secrets.token_urlsafe(32)
SETTLE = 2.0
#: One DID per kind of call; the soak's rules route each (priority above the samples').
DIDS = {
    "answered": "74951110001",
    "missed": "74951110002",
    "busy": "74951110003",
    "hangup_waiting": "74951110004",
    "transfer": "74951110005",
    "api_transfer": "74951110006",
    "unrouted": "74951110009",
}
CALLERS = [f"7916{n:07d}" for n in range(1000001, 1000021)] + ["8 (916) 123-45-67"]
CUSTOMER_OUT = "79160000099"

SOAK_RULES = f"""version: 1
rules:
  - name: soak-answered
    priority: 99
    on: call
    if: did == "{DIDS["answered"]}"
    lookup:
      owner: onec.responsible(caller.number)
    do:
      - record: {{legs: mix}}
      - redirect: {{context: sandbox-phones, exten: "102"}}
  - name: soak-missed
    priority: 98
    on: call
    if: did == "{DIDS["missed"]}"
    do:
      - redirect: {{context: sandbox-phones, exten: "03103"}}
  - name: soak-busy
    priority: 97
    on: call
    if: did == "{DIDS["busy"]}"
    do:
      - redirect: {{context: sandbox-phones, exten: "104"}}
  - name: soak-waiting
    priority: 96
    on: call
    if: did == "{DIDS["hangup_waiting"]}"
    do:
      - redirect: {{context: sandbox-phones, exten: "103"}}
  - name: soak-transfer
    priority: 95
    on: call
    if: did == "{DIDS["transfer"]}"
    lookup:
      owner: onec.responsible(caller.number)
    do:
      - redirect: {{context: sandbox-phones, exten: "105"}}
  - name: soak-api-transfer
    priority: 94
    on: call
    if: did == "{DIDS["api_transfer"]}"
    do:
      - redirect: {{context: sandbox-phones, exten: "105"}}
"""
BROKEN_RULES = "version: 1\nrules:\n  - name: soak-answered\n    priority: [oops\n"


#: Runs ``callrouter run`` with a thread that writes, every ``every`` seconds, a line
#: of ``census.jsonl``: the asyncio tasks alive, and the length of every container
#: attribute of every router / 1C plugin object, summed per ``Class.attr``. A
#: ``Class.attr`` that only grows is where to look for a leak. Its arguments, before
#: callrouter's own: the census file, the seconds between rows, and ``types`` (or
#: ``-``): each row also counts every object by type (the 60 most common) and gives
#: ``gc.get_count()``. Opt-ins for a hunt, none of them a leak test's default:
#: ``SOAK_COLLECT=1`` a full collection before each count (leaks, not garbage),
#: ``SOAK_TASK_NAMES=1`` the live tasks by name, a file ``<census file>.tm``
#: tracemalloc's top growth since that file appeared. A row that failed is
#: ``{"tasks": null, "error": ...}``, and the census goes on.
CENSUS = r"""
import asyncio, collections, gc, json, os, sys, threading, time, tracemalloc
out = sys.argv.pop(1)
every = float(sys.argv.pop(1))
by_type = sys.argv.pop(1) == "types"
def census():
    snap0 = None
    while True:
        time.sleep(every)
        try:
            sizes = collections.Counter()
            types = collections.Counter()
            gc.unfreeze()  # the engine freezes what it loaded (gc.freeze): count that too
            if os.environ.get("SOAK_COLLECT"):
                gc.collect()  # count only what a full collection leaves: leaks, not garbage
            for obj in gc.get_objects():
                t = type(obj)
                mod = getattr(t, "__module__", None)
                if by_type:
                    types[f"{mod}.{getattr(t, '__qualname__', t.__name__)}"] += 1
                if not isinstance(mod, str) or not mod.startswith(("router", "callrouter_onec")):
                    continue
                try:
                    attrs = list(vars(obj).items())
                except Exception:
                    slots = [s for k in t.__mro__ for s in getattr(k, "__slots__", ())]
                    attrs = [(s, getattr(obj, s, None)) for s in slots if isinstance(s, str)]
                for name, value in attrs:
                    if isinstance(value, (dict, list, set, collections.deque, frozenset, tuple)):
                        try:
                            sizes[t.__qualname__ + "." + name] += len(value)
                        except Exception:
                            pass
            # Only len(): holding the tasks from this thread, even for a moment
            # (list(), a copy), kept finished tasks alive for good in CPython
            # 3.11, and the census counted a leak of its own making.
            # SOAK_TASK_NAMES=1 names the live ones all the same (then not a leak test).
            live = len(asyncio.tasks._all_tasks)
            row = {"t": time.time(), "tasks": live, "sizes": sizes}
            if os.environ.get("SOAK_TASK_NAMES"):
                names = collections.Counter()
                for task in list(asyncio.tasks._all_tasks):
                    if not task.done():
                        names[getattr(task.get_coro(), "__qualname__", "?")[:80]] += 1
                row["task_names"] = names
            if by_type:
                row["types"] = dict(types.most_common(60))
                row["gc"] = gc.get_count()
            if os.path.exists(out + ".tm") and not tracemalloc.is_tracing():
                tracemalloc.start(12)
                snap0 = tracemalloc.take_snapshot()
            elif tracemalloc.is_tracing():
                snap = tracemalloc.take_snapshot()
                top = snap.compare_to(snap0, "traceback")[:8]
                row["tracemalloc"] = [
                    {"size_diff": s.size_diff, "count_diff": s.count_diff,
                     "tb": [f"{f.filename}:{f.lineno}" for f in s.traceback][-12:]}
                    for s in top
                ]
            with open(out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except Exception as exc:
            with open(out, "a") as fh:
                fh.write(json.dumps({"t": time.time(), "tasks": None, "error": repr(exc)}) + "\n")
threading.Thread(target=census, daemon=True, name="census").start()
sys.argv[0] = "callrouter"
from router.cli import main
sys.exit(main())
"""


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
        return out


class Watcher(threading.Thread):
    """Long-polls the event feed with its cursor; ``paused`` drops the connection."""

    def __init__(self, api: Api) -> None:
        super().__init__(daemon=True, name="watcher")
        self.api = api
        self.cursor: int | None = None
        self.kinds: Counter[str] = Counter()
        self.cursors: Counter[int] = Counter()
        self.gaps = 0
        self.errors = 0
        self.paused = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.paused.is_set():
                time.sleep(0.5)
                continue
            path = "/api/v1/events?timeout=5&limit=500"
            if self.cursor is not None:
                path += f"&cursor={self.cursor}"
            try:
                status, body = self.api.request("GET", path, timeout=15)
            except OSError:
                self.errors += 1
                time.sleep(1)
                continue
            if status != 200 or not isinstance(body, dict):
                self.errors += 1
                time.sleep(1)
                continue
            for event in body["events"]:
                self.cursors[event["cursor"]] += 1
                self.kinds[event["kind"]] += 1
            self.gaps += bool(body.get("gap"))
            self.cursor = body["cursor"]


class ScenarioFailed(RuntimeError):
    """A step of a scenario failed; ``facts`` is what was seen of its call."""

    def __init__(self, message: str, facts: dict[str, Any]) -> None:
        super().__init__(message)
        self.facts = facts


def classify(kind: str, facts: dict[str, Any]) -> tuple[str, str]:
    """(class, reason) of a failed scenario: ``soak`` (the soak's own doing),
    ``expected`` (Asterisk or a phone did what it should with what was asked),
    ``router``, ``phone`` (baresip), or ``unknown``."""
    if kind not in ("transfer", "api_transfer") or not facts:
        return "unknown", "no facts recorded"
    if facts.get("hung_up_by_click") is not None:
        return "soak", "another worker's click-to-call clean-up hung up this call"
    pstn = facts["pstn_call"]
    http = facts.get("http")
    if http is not None and "sent" in http:
        status = http["status"]
        ended = pstn["ended"]
        if ended is not None and ended <= http["sent"]:
            return "expected", f"{status}: the caller hung up before the transfer was asked"
        if status == 0 or status >= 500:
            return "router", f"{status or 'no answer'} while the call was up"
        if status != 202:
            return "router", f"{status} while the call was up"
    mine = [c for c in facts.get("phone_105", []) if c["direction"] == "in"]
    if pstn["ended"] is not None and not any(c["answered"] is not None for c in mine):
        return "unknown", f"the caller's call ended ({pstn['reason']}) with 105 never up"
    if mine and all(c["ended"] is not None for c in mine):
        return "unknown", f"105's call ended before the transfer ({mine[-1]['reason']})"
    if not mine:
        return "unknown", "105 never saw the call"
    return "unknown", "105 saw the call but not up"


class Office:
    def __init__(self, folder: Path, rate: float) -> None:
        self.folder = folder
        self.rate = rate
        self.placed: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        #: Failures by kind and class (``soak``, ``router``, ``phone``, ``unknown``).
        self.failed_by_class: Counter[str] = Counter()
        #: Outcomes the scenario cannot avoid (an answer the soak asked for in vain), by reason.
        self.expected: Counter[str] = Counter()
        #: The calls the click-to-call scenario hung up: call id -> (worker, time).
        self.click_hangups: dict[str, tuple[int, float]] = {}
        self.busy_phones: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.rng = random.Random(35)

    # -- set-up --------------------------------------------------------------------------

    #: What the soak's API token may do; the census program run around ``callrouter run``.
    token_allow: tuple[str, ...] = ("calls:create", "calls:read", "calls:transfer", "events:read")
    census_source = CENSUS
    #: The census's arguments (``CENSUS``): seconds between rows, objects by type too.
    census_every = 60.0
    census_types = False

    def start(self) -> None:
        """The sandbox, phones, 1C double and ``callrouter run``, in steps a soak
        that does more (``soak_faults.py``) overrides one by one."""
        log("starting the sandbox Asterisk and phones")
        self.pbx = Sandbox.start(name=self.sandbox_name(), extra_dialplan=self.extra_dialplan())
        self.phones = Phones.start(self.pbx, extensions=("101", "102", "103", "104", "105"))
        self.phones["103"].mode = "noanswer"
        self.phones["104"].mode = "busy"
        self.double = OneCDouble(password=PASSWORD).start()
        self.prepare_double()
        self.state = self.folder / "state"
        rules_dir = self.folder / "rules"
        shutil.copytree(REPO / "rules", rules_dir)
        self.rules_file = rules_dir / "soak.yaml"
        self.rules_file.write_text(self.rules_text(rules_dir), encoding="utf-8")
        port = listen_port()
        self.api_port = port
        self.api = Api(port)
        monitor = "spool/monitor/callrouter"
        cel = self.pbx.inst / "log" / "cel.db"
        self.cel = cel
        allow = ", ".join(f'"{scope}"' for scope in self.token_allow)
        self.config = self.folder / "router.toml"
        self.config.write_text(
            f'[asterisk]\nurl = "{self.pbx.url}"\nusername = "router"\nsecret_env = "CR_SECRET"\n'
            f'[router]\nrules = ["{rules_dir}"]\nstate_dir = "{self.state}"\n'
            'log_format = "json"\n'
            f'[history]\ncel = "sqlite://{cel}"\nsettle_delay = {SETTLE}\n'
            f'[recordings]\ndir = "{self.pbx.inst_in_root}/{monitor}"\n'
            f'local_dir = "{self.pbx.inst / monitor}"\nafter_delivery = "delete"\n'
            f'[api]\nlisten = "127.0.0.1:{port}"\noutbound_context = "sandbox-phones"\n'
            f'[api.tokens.soak]\nhash = "sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
            f"allow = [{allow}]\n"
            'extensions = ["*"]\n'
            f'[plugins.onec]\nurl = "{self.double.url}"\nusername = "{DEFAULT_USER}"\n'
            f'password = "{PASSWORD}"\n'
            "[plugins.onec.missed_owner]\n'*' = \"105\"\n",
            encoding="utf-8",
        )
        self.config.chmod(0o600)  # it holds the 1C password
        self.log_path = self.folder / "router.log"
        self.census_path = self.folder / "census.jsonl"
        env = {**os.environ, "CR_SECRET": self.pbx.secret, "PYTHONPATH": str(REPO)}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    self.census_source,
                    *self.census_args(),
                    "run",
                    "--config",
                    str(self.config),
                ],
                stdout=out,
                stderr=out,
                env=env,
                cwd=REPO,
            )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                status, _ = self.api.request("GET", "/readyz", timeout=2)
                if status == 200:
                    break
            if self.proc.poll() is not None:
                raise SystemExit(f"callrouter run exited:\n{self.tail()}")
            time.sleep(0.5)
        else:
            raise SystemExit(f"callrouter run never became ready:\n{self.tail()}")
        self.watcher = Watcher(self.api)
        self.watcher.start()
        self.started()
        log(f"router pid {self.proc.pid} ready; folder {self.folder}")

    def sandbox_name(self) -> str:
        return f"soak-{os.getpid()}"

    def extra_dialplan(self) -> str:
        return shipped_dialplan()

    def prepare_double(self) -> None:
        """Faults given to the 1C double before the router starts (none here)."""

    def rules_text(self, rules_dir: Path) -> str:
        """The soak's own rules file, written beside the shipped rules in ``rules_dir``."""
        return SOAK_RULES

    def census_args(self) -> list[str]:
        return [
            str(self.census_path),
            f"{self.census_every:g}",
            "types" if self.census_types else "-",
        ]

    def started(self) -> None:
        """Once the router is ready and the watcher reads its feed (nothing more here)."""

    def tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        self.watcher.stopping.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.phones.stop()
        self.double.stop()
        # Asterisk's and the phones' logs, for the failures (failures.jsonl) to be read against.
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        for source, name in [
            (self.pbx.log_path, "asterisk.log"),
            *((phone.log_path, f"baresip-{phone.name}.log") for phone in self.phones.all),
        ]:
            with contextlib.suppress(OSError):
                shutil.copyfile(source, logs / name)
        self.pbx.remove()

    # -- traffic -------------------------------------------------------------------------

    def _take(self, names: tuple[str, ...]) -> bool:
        with self.lock:
            if self.busy_phones & set(names):
                return False
            self.busy_phones |= set(names)
            return True

    def _give(self, names: tuple[str, ...]) -> None:
        with self.lock:
            self.busy_phones -= set(names)

    def record_failure(self, worker: int, kind: str, exc: Exception) -> None:
        """Count a failed scenario by its class and write what is known of it to
        ``failures.jsonl`` (the full error, the phones' and Asterisk's view)."""
        facts = exc.facts if isinstance(exc, ScenarioFailed) else {}
        verdict, why = classify(kind, facts)
        with self.lock:
            if verdict == "expected":  # not a failure: what Asterisk and the API should do
                self.expected[f"{kind}: {why}"] += 1
            else:
                self.failed[kind] += 1
                self.failed_by_class[f"{kind}:{verdict}"] += 1
        record = {
            "t": time.strftime("%H:%M:%S"),
            "worker": worker,
            "kind": kind,
            "class": verdict,
            "why": why,
            "error": str(exc)[:4000],
            **facts,
        }
        with open(self.folder / "failures.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        log(f"worker {worker}: {kind} failed [{verdict}: {why}]: {str(exc).splitlines()[0]:.160}")

    def transfer_facts(self, call: Any, started: float, kind: str = "transfer") -> dict[str, Any]:
        """The transfer call as the PSTN side, 105, 102, Asterisk (CEL) and the router saw it."""

        def seen(each: Any) -> dict[str, Any]:
            def rel(at: float | None) -> float | None:
                return None if at is None else round(at - started, 2)

            return {
                "id": each.id,
                "direction": each.direction,
                "remote": each.remote,
                "started": rel(each.started_at),
                "answered": rel(each.answered_at),
                "ended": rel(each.ended_at),
                "reason": each.reason,
            }

        with self.lock:
            hung_up = self.click_hangups.get(call.id)
        facts: dict[str, Any] = {
            "pstn_call": seen(call),
            "hung_up_by_click": None
            if hung_up is None
            else {"worker": hung_up[0], "at": round(hung_up[1] - started, 2)},
        }
        for name in ("105", "102"):
            facts[f"phone_{name}"] = [
                seen(c) for c in self.phones[name].calls if c.started_at >= started - 1
            ]
        facts["asterisk_cel"] = self.cel_rows(started, kind)
        return facts

    def api_transfer(self, call: Any, started: float) -> None:
        """1C's transfer button: ``POST /calls/{id}/transfer`` of the call 105 answered,
        to 102; 102 must answer it. Any other outcome is a ScenarioFailed with the
        answer the API gave."""
        kind = "api_transfer"
        status, body = self.api.request("GET", "/api/v1/calls")
        calls = body.get("calls", []) if isinstance(body, dict) else []
        mine = [c for c in calls if c.get("did") == DIDS[kind] and c.get("state") != "ended"]
        if status != 200 or len(mine) != 1:
            facts = self.transfer_facts(call, started, kind)
            facts["http"] = {"op": "GET /calls", "status": status, "found": len(mine)}
            raise ScenarioFailed(f"the call to find: {status}, {len(mine)} found", facts)
        call_id = str(mine[0]["id"])
        sent = time.time()
        try:
            status, body = self.api.request(
                "POST", f"/api/v1/calls/{call_id}/transfer", {"to": "102"}, timeout=40
            )
        except OSError as exc:  # no answer in 40 s (the API bounds it far lower)
            status, body = 0, f"no answer: {exc}"
        answered = None
        if status == 202:
            deadline = time.monotonic() + 10
            while answered is None and time.monotonic() < deadline:
                answered = next(
                    (c for c in self.phones["102"].calls if c.started_at >= sent and c.answered),
                    None,
                )
                time.sleep(0.1)
        if status != 202 or answered is None:
            facts = self.transfer_facts(call, started, kind)
            facts["http"] = {
                "op": f"POST /calls/{call_id}/transfer",
                "status": status,
                "body": body,
                "sent": round(sent - started, 2),
                "ms": round((time.time() - sent) * 1000),
            }
            facts["router_log"] = self.router_lines(call_id)
            what = f"{status} {body}" if status != 202 else "202, but 102 never answered"
            raise ScenarioFailed(f"transfer of {call_id}: {what}", facts)

    def router_lines(self, call_id: str) -> list[str]:
        """The router's log lines that name ``call_id`` (its decision, warnings, audit)."""
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return [line.strip()[:600] for line in fh if call_id in line][-30:]

    def cel_rows(self, started: float, kind: str = "transfer") -> list[str]:
        """Asterisk's CEL of the transfer DID's calls begun since ``started``."""
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(self.pbx.inst / "log" / "cel.db", 5)) as db:
                rows = db.execute(
                    "SELECT eventtime, eventtype, channame, appname, appdata, exten, peer, "
                    "eventextra FROM cel WHERE linkedid IN (SELECT linkedid FROM cel "
                    "WHERE exten = ? AND CAST(eventtime AS REAL) >= ?) ORDER BY eventtime",
                    (DIDS[kind], started - 1),
                ).fetchall()
        except sqlite3.Error as exc:
            return [f"CEL not read: {exc}"]
        return [
            f"{float(r[0]) - started:+.2f} {r[1]} {r[2]} {r[3]}({r[4]}) exten={r[5]} "
            f"peer={r[6]} {str(r[7])[:120]}"
            for r in rows[:60]
        ]

    def scenario(self, kind: str, worker: int = -1) -> None:
        rng = self.rng
        caller = rng.choice(CALLERS)
        pstn = self.phones.pstn
        if kind == "click":
            asked = time.time()
            status, body = self.api.request(
                "POST", "/api/v1/calls", {"from": "101", "to": CUSTOMER_OUT}
            )
            if status >= 300:
                raise RuntimeError(f"click-to-call: {status} {body}")
            time.sleep(rng.uniform(3, 5))
            # This call's legs only: 101's, and the customer's (the PSTN side's
            # incoming calls; one click-to-call at a time, as 101 is taken). The
            # PSTN side's last three calls, hung up before, were often another
            # worker's call to a DID, and a transfer then found no call up on 105.
            since = [c for c in self.phones["101"].calls if c.started_at >= asked]
            since += [c for c in pstn.calls if c.direction == "in" and c.started_at >= asked]
            for call in since:
                if not call.ended:
                    with self.lock:
                        self.click_hangups[call.id] = (worker, time.time())
                    with contextlib.suppress(Exception):
                        call.hangup()
            return
        started = time.time()
        call = pstn.call(did=DIDS[kind], caller=caller)
        try:
            if kind == "answered":
                call.wait_answered(15)
                time.sleep(rng.uniform(1, 3))
            elif kind == "transfer":
                call.wait_answered(15)
                time.sleep(0.5)
                phone = self.phones["105"]
                try:
                    phone.blind_transfer("102")  # the call up on 105 (Phone.current)
                except Exception as exc:
                    raise ScenarioFailed(str(exc), self.transfer_facts(call, started)) from exc
                time.sleep(rng.uniform(1.5, 3))
            elif kind == "api_transfer":
                call.wait_answered(15)
                self.api_transfer(call, started)
                time.sleep(rng.uniform(1.5, 3))
            elif kind in ("missed", "busy"):
                call.wait_ended(15)
            elif kind == "hangup_waiting":
                time.sleep(rng.uniform(1.5, 3))
            elif kind == "unrouted":
                time.sleep(2)
        finally:
            if not call.ended:
                with contextlib.suppress(Exception):
                    call.hangup()
            with contextlib.suppress(Exception):
                call.wait_ended(10)

    PHONES: ClassVar[dict[str, tuple[str, ...]]] = {
        "answered": ("102",),
        "missed": ("103",),
        "busy": (),
        "hangup_waiting": ("103",),
        "transfer": ("105", "102"),
        "api_transfer": ("105", "102"),
        "click": ("101",),
        "unrouted": (),
    }
    WEIGHTS: ClassVar[dict[str, int]] = {
        "answered": 5,
        "missed": 2,
        "busy": 2,
        "hangup_waiting": 2,
        "transfer": 2,
        "api_transfer": 2,
        "click": 2,
        "unrouted": 1,
    }

    def worker(self, index: int) -> None:
        rng = random.Random(index)
        kinds = list(self.WEIGHTS)
        weights = list(self.WEIGHTS.values())
        while not self.stopping.is_set():
            kind = rng.choices(kinds, weights)[0]
            phones = self.PHONES[kind]
            if not self._take(phones):
                time.sleep(0.05)
                continue
            started = time.monotonic()
            try:
                with self.lock:
                    self.placed[kind] += 1
                self.scenario(kind, index)
            except Exception as exc:  # a soak counts failures and goes on
                self.record_failure(index, kind, exc)
            finally:
                time.sleep(0.5)  # the phones' BYE/200 settle
                self._give(phones)
            # pace: the workers together place at most `rate` calls a second
            pause = max(0.0, self.workers / self.rate - (time.monotonic() - started))
            self.stopping.wait(pause)

    # -- measuring ---------------------------------------------------------------------

    def sample(self, minute: float, log_lines_before: int) -> tuple[dict[str, Any], int]:
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        lines = self.log_path.read_bytes().count(b"\n")
        files = {
            str(p.relative_to(self.state)): p.stat().st_size
            for p in sorted(self.state.rglob("*"))
            if p.is_file()
        }
        try:
            metrics = self.api.metrics()
        except OSError:
            metrics = {}
        active = sum(v for k, v in metrics.items() if k.startswith("callrouter_calls_active"))
        queue = sum(v for k, v in metrics.items() if k.startswith("callrouter_queue_depth"))
        with self.lock:
            placed = sum(self.placed.values())
        tasks = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            tasks = json.loads(self.census_path.read_text().splitlines()[-1])["tasks"]
        row = {
            "minute": round(minute, 1),
            "rss_kb": int(fields["VmRSS"].split()[0]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"]),
            "asyncio_tasks": tasks,
            "calls_active": active,
            "queue_depth": queue,
            "log_lines": lines - log_lines_before,
            "placed": placed,
            "onec_receipts": len(self.double.event_book.receipts),
            "feed_events": sum(self.watcher.kinds.values()),
            "state_files": files,
        }
        return row, lines

    # -- the run -----------------------------------------------------------------------

    #: Seconds between samples while the soak runs.
    sample_every = 60.0

    def run(self, minutes: float, workers: int) -> list[dict[str, Any]]:
        """The workers' calls for ``minutes``, the disturbances of :meth:`plan` along
        the way, a sample each :attr:`sample_every` seconds; then 1C settled and a last
        sample. Steps a soak that does more (``soak_faults.py``) adds to."""
        self.workers = workers
        samples: list[dict[str, Any]] = []
        start = time.monotonic()
        row, lines = self.sample(0, 0)
        samples.append(row)
        self.emit(row)
        threads = [
            threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(workers)
        ]
        for t in threads:
            t.start()
        self.traffic_started()
        total = minutes * 60
        plan = sorted(self.plan(total), key=lambda p: p[0])
        next_sample = self.sample_every
        while time.monotonic() - start < total:
            elapsed = time.monotonic() - start
            while plan and elapsed >= plan[0][0]:
                _, action = plan.pop(0)
                threading.Thread(target=action, daemon=True).start()
            if elapsed >= next_sample:
                row, lines = self.sample(elapsed / 60, lines)
                samples.append(row)
                self.emit(row)
                next_sample += self.sample_every
            if self.proc.poll() is not None:
                raise SystemExit(f"callrouter run exited {self.proc.returncode}:\n{self.tail()}")
            time.sleep(1)
        self.traffic_stopping()
        self.stopping.set()
        for t in threads:
            t.join(60)
        log("traffic stopped; waiting for 1C to settle")
        self.settle()
        row, lines = self.sample((time.monotonic() - start) / 60, lines)
        samples.append(row)
        self.emit(row)
        return samples

    def plan(self, total: float) -> list[tuple[float, Callable[[], None]]]:
        """The disturbances of a ``total`` seconds' run: (seconds in, what)."""
        return [
            (0.20 * total, self.bad_reload),
            (0.35 * total, self.onec_outage),
            (0.50 * total, self.manager_reload),
            (0.65 * total, self.watcher_drop),
        ]

    def traffic_started(self) -> None:
        """Once the workers call (nothing more here)."""

    def traffic_stopping(self) -> None:
        """Before the workers are told to stop (nothing more here)."""

    def emit(self, row: dict[str, Any]) -> None:
        """A sample as it is taken: logged (without the state files)."""
        log(json.dumps({k: v for k, v in row.items() if k != "state_files"}))

    def settle(self, calm: float = 10.0, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        seen, since = len(self.double.event_book.receipts), time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.5)
            now = len(self.double.event_book.receipts)
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= calm:
                return

    # -- disturbances --------------------------------------------------------------------

    def bad_reload(self) -> None:
        log("disturbance: broken rules file + SIGHUP, then the good one + SIGHUP")
        self.rules_file.write_text(BROKEN_RULES, encoding="utf-8")
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(5)
        self.rules_file.write_text(SOAK_RULES, encoding="utf-8")
        self.proc.send_signal(signal.SIGHUP)

    def onec_outage(self) -> None:
        log("disturbance: 1C down for 60 s")
        self.double.stop()
        time.sleep(60)
        self.double.start()
        log("1C up again")

    def manager_reload(self) -> None:
        log("disturbance: asterisk manager reload")
        self.pbx.cli("manager reload")

    def watcher_drop(self) -> None:
        log("disturbance: the watcher disconnects for 60 s")
        self.watcher.paused.set()
        time.sleep(60)
        self.watcher.paused.clear()
        log("watcher back")

    # -- the verdict ---------------------------------------------------------------------

    def verdict(self) -> dict[str, Any]:
        receipts = list(self.double.event_book.receipts)
        dupes = sum(1 for r in receipts if r.duplicate)
        events = self.double.event_book.events()
        by_call: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_call.setdefault(str(event["call_id"]), []).append(dict(event))
        ended: Counter[str] = Counter()
        open_in_1c: Counter[str] = Counter()
        for story in by_call.values():
            first = story[0]
            did = first.get("to")
            kind = next((k for k, v in DIDS.items() if v == did), None)
            if kind is None and first.get("direction") == "out":
                kind = "click"
            kind = kind or f"other:{did}"
            if any(e["event"] in ("hangup", "missed") for e in story):
                ended[kind] += 1
            else:
                open_in_1c[kind] += 1
        status, calls = self.api.request("GET", "/api/v1/calls")
        open_calls = calls.get("calls", calls) if isinstance(calls, dict) else calls
        return {
            "placed": dict(self.placed),
            "failed": dict(self.failed),
            "failed_by_class": dict(self.failed_by_class),
            "expected_outcomes": dict(self.expected),
            "ended_in_1c": dict(ended),
            "not_ended_in_1c": dict(open_in_1c),
            "duplicate_receipts": dupes,
            "api_calls_open": open_calls if status == 200 else f"{status} {calls}",
            "feed": dict(self.watcher.kinds),
            "feed_cursor_twice": sum(1 for c in self.watcher.cursors.values() if c > 1),
            "feed_gaps": self.watcher.gaps,
            "watcher_errors": self.watcher.errors,
            "log_levels": self.log_levels(),
        }

    def log_levels(self) -> dict[str, Any]:
        levels: Counter[str] = Counter()
        worst: Counter[str] = Counter()
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                levels["non-json"] += 1
                continue
            level = str(rec.get("level", rec.get("levelname", "?")))
            levels[level] += 1
            if level in ("WARNING", "ERROR", "CRITICAL"):
                worst[str(rec.get("message", ""))[:120]] += 1
        return {"levels": dict(levels), "top_warnings": worst.most_common(15)}


def table(samples: list[dict[str, Any]]) -> str:
    first, last = samples[0], samples[-1]
    keys = [
        "rss_kb",
        "fds",
        "threads",
        "asyncio_tasks",
        "calls_active",
        "queue_depth",
        "log_lines",
        "placed",
    ]
    keys += ["onec_receipts", "feed_events"]
    rows = ["| measure | start | end |", "|---|---|---|"]
    rows += [f"| {k} | {first[k]} | {last[k]} |" for k in keys]
    names = sorted(set(first["state_files"]) | set(last["state_files"]))
    rows += [
        f"| state/{n} | {first['state_files'].get(n, '-')} | {last['state_files'].get(n, '-')} |"
        for n in names
    ]
    return "\n".join(rows)


def settle(folder: Path, keep: bool) -> str:
    """Remove the run's temporary ``folder`` unless ``keep`` or a scenario failed
    (its ``failures.jsonl``); what became of it, as the run's last line."""
    failures = folder / "failures.jsonl"
    if keep or failures.exists():
        why = "--keep" if keep else f"{failures.name}: scenarios failed"
        return f"soak: kept {folder} ({why}); remove it when read"
    shutil.rmtree(folder, ignore_errors=True)
    return f"soak: removed {folder} (--keep or --out DIR keeps it)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=1.5, help="calls a second at most")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="the results' folder, kept")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="without --out: keep the temporary folder (removed at the end otherwise)",
    )
    args = parser.parse_args()
    # SIGTERM (and SIGINT, which a background shell ignores) ends the run with its clean-up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = args.out or Path(tempfile.mkdtemp(prefix="soak-office-"))
    try:
        return soak(folder, args)
    finally:
        if args.out is None:
            print(settle(folder, args.keep), flush=True)


def soak(folder: Path, args: argparse.Namespace) -> int:
    """The run, its results in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    office = Office(folder, args.rate)
    office.start()
    try:
        samples = office.run(args.minutes, args.workers)
        verdict = office.verdict()
    finally:
        office.stop()
    (folder / "samples.json").write_text(json.dumps(samples, indent=1), encoding="utf-8")
    report = table(samples) + "\n\n```json\n" + json.dumps(verdict, indent=1, ensure_ascii=False)
    report += "\n```\n"
    (folder / "soak.md").write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
