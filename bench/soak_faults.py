"""Soak with faults: ``soak_office.py``'s office plus Local-channel traffic, the live
page's stream, and faults along the way, sampled every 30 s.

Run: ``.venv/bin/python bench/soak_faults.py --minutes 45 --out DIR``.

Beyond ``soak_office.py``: a generator originates Local calls into
``callrouter-inbound`` (``--local-rate`` a second) of four kinds: routed (1C lookup,
redirect to a sink), no rule (falls through), late (1C slow for that caller, the
wait shorter) and caller-gone (the caller hangs up while 1C is asked); an SSE
client on ``/ui/stream`` (reconnecting every few minutes); the event-feed watcher
dropped every few minutes. Faults: a rules reload every 4 minutes (one broken), 1C
slow, failing and restarted, Asterisk restarted twice. Each 30 s: RSS, fds,
threads, asyncio tasks, state files, Asterisk's manager sessions, log lines. At the
end every Local call Asterisk started (CEL ``CHAN_START``) is matched with the
router's decision lines: exactly one each.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "onec"))
import soak_office as so
from callrouter_onec.faults import FaultRule, parse_faults
from callrouter_onec.phone import digits_only
from soak_office import (
    CALLERS,
    SOAK_RULES,
    TOKEN,
    Office,
    Sandbox,
    log,
)

SINK = """
[soak-sink]
exten => _X.,1,Answer()
 same => n,Wait(1)
 same => n,Hangup()
"""
LOCAL_DIDS = {"routed": "74951110020", "norule": "74951110021", "slow": "74951110022"}
LATE_CALLER = "79160007777"
GONE_CALLER = "79160008888"
LOCAL_RULES = f"""
  - name: soak-local-routed
    priority: 93
    on: call
    if: did == "{LOCAL_DIDS["routed"]}"
    lookup:
      owner: onec.responsible(caller.number)
    do:
      - redirect: {{context: soak-sink, exten: "100"}}
  - name: soak-local-slow
    priority: 92
    on: call
    if: did == "{LOCAL_DIDS["slow"]}"
    lookup:
      owner: onec.responsible(caller.number)
    do:
      - redirect: {{context: soak-sink, exten: "200"}}
"""
RULES = SOAK_RULES + LOCAL_RULES


class PrefixRule(FaultRule):
    """A fault for every number that starts with ``phone`` (7 digits)."""

    def matches(self, path: str, phone: str | None) -> bool:
        return phone is not None and digits_only(phone).startswith(self.phone or "-")


class LocalCalls(threading.Thread):
    """Originates Local calls over the native AMI port (user admin), reconnecting."""

    def __init__(self, pbx: Sandbox, rate: float) -> None:
        super().__init__(daemon=True, name="local-calls")
        self.pbx = pbx
        self.rate = rate
        self.stopping = threading.Event()
        self.placed: dict[str, str] = {}  # uniqueid -> kind
        self.sent_fail = 0
        self.connects = 0
        self.prefix = f"sk{os.getpid()}"
        self.serial = 0
        self.rng = random.Random(48)
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.pbx.ami_port), timeout=5)
        sock.sendall(
            (
                "Action: Login\r\nUsername: admin\r\n"
                f"Secret: {self.pbx.secret}\r\nEvents: off\r\n\r\n"
            ).encode()
        )
        sock.settimeout(None)
        threading.Thread(target=self._drain, args=(sock,), daemon=True).start()
        self.connects += 1
        return sock

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass

    def originate(self, kind: str) -> None:
        self.serial += 1
        uid = f"{self.prefix}-{self.serial}-in"
        did = LOCAL_DIDS["routed" if kind == "routed" else "norule" if kind == "norule" else "slow"]
        if kind in ("late", "gone"):  # a new number each time: no cached 1C answer
            caller = {"late": LATE_CALLER, "gone": GONE_CALLER}[kind][:7] + str(
                self.rng.randrange(10000)
            ).zfill(4)
        else:
            caller = self.rng.choice(CALLERS[:20])
        timeout = 800 if kind == "gone" else 15000
        lines = [
            "Action: Originate",
            f"ActionID: {uid}",
            f"Channel: Local/{did}@callrouter-inbound",
            "Application: Wait",
            "Data: 1",
            f"CallerID: {caller}",
            "Async: true",
            f"Timeout: {timeout}",
            f"ChannelId: {self.prefix}-{self.serial}-out",
            f"OtherChannelId: {uid}",
            "Variable: __CALLROUTER_WAIT=1.5",
            "Variable: __CALLROUTER_DEFAULT=soak-sink",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if self.sock is None:
            self.sock = self._connect()
        self.sock.sendall(data)
        self.placed[uid] = kind

    def run(self) -> None:
        kinds = ["routed", "norule", "late", "gone"]
        weights = [60, 15, 10, 15]
        while not self.stopping.is_set():
            kind = self.rng.choices(kinds, weights)[0]
            try:
                self.originate(kind)
            except OSError:
                self.sent_fail += 1
                if self.sock is not None:
                    with contextlib.suppress(OSError):
                        self.sock.close()
                self.sock = None
                self.stopping.wait(1)
                continue
            self.stopping.wait(1 / self.rate)


class UiStream(threading.Thread):
    """The live page: logs in, reads /ui/stream, reconnects on ``bye`` or when told."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True, name="ui-stream")
        self.port = port
        self.events: Counter[str] = Counter()
        self.connects = 0
        self.errors = 0
        self.drop = threading.Event()
        self.stopping = threading.Event()
        self.conn: http.client.HTTPConnection | None = None

    def login(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(
            "POST",
            "/ui/login",
            json.dumps({"token": TOKEN}),
            {"Content-Type": "application/json", "X-Callrouter-UI": "1"},
        )
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie") or ""
        conn.close()
        if resp.status != 200 or not cookie:
            raise OSError(f"login {resp.status}")
        return cookie.split(";", 1)[0]

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                cookie = self.login()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn = conn
                conn.request("GET", "/ui/stream", headers={"Cookie": cookie})
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(f"stream {resp.status}")
                self.connects += 1
                while not self.stopping.is_set() and not self.drop.is_set():
                    line = resp.fp.readline()
                    if not line:
                        break
                    if line.startswith(b"event:"):
                        self.events[line[6:].strip().decode()] += 1
                        if line[6:].strip() == b"bye":
                            break
                conn.close()
                if self.drop.is_set():
                    self.drop.clear()
                    time.sleep(3)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                time.sleep(2)

    def force_drop(self) -> None:
        self.drop.set()
        conn = self.conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


class FaultOffice(Office):
    """soak_office's office with the sink, the UI token, a timed census and slow 1C callers."""

    token_allow = (*Office.token_allow, "ui:read")
    sandbox_label = ""
    census_every = 30.0
    census_types = True
    #: ``--local-rate``, ``--reload-every``, ``--no-faults`` (main sets them).
    local_rate = 2.5
    reload_every = 240
    no_faults = False

    def sandbox_name(self) -> str:
        return self.sandbox_label or super().sandbox_name()

    def extra_dialplan(self) -> str:
        return super().extra_dialplan() + SINK

    def prepare_double(self) -> None:
        for caller in (LATE_CALLER, GONE_CALLER):
            rule = PrefixRule(faults=parse_faults("latency=3"), count=None, phone=caller[:7])
            self.double.faults.rules.append(rule)

    def rules_text(self, rules_dir: Path) -> str:
        (rules_dir / "inbound.yaml").unlink()  # the Local "norule" calls must match nothing
        return RULES

    def started(self) -> None:
        self.ui = UiStream(self.api_port)
        self.ui.start()

    # -- faults ----------------------------------------------------------------------
    def reload(self, broken: bool = False) -> None:
        self.reloads = getattr(self, "reloads", 0) + 1
        if broken:
            log("fault: broken rules + SIGHUP, then good + SIGHUP")
            self.rules_file.write_text(so.BROKEN_RULES, encoding="utf-8")
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(5)
        else:
            log("fault: rules reload (SIGHUP)")
        self.rules_file.write_text(RULES + f"# reload {self.reloads}\n", encoding="utf-8")
        self.proc.send_signal(signal.SIGHUP)

    def onec_fault(self, fault: str, seconds: int, what: str, after: str) -> None:
        """The 1C double answers every request with ``fault`` for ``seconds``, then well."""
        log(f"fault: 1C {what} for {seconds} s")
        self.double.faults.set_global(fault)
        time.sleep(seconds)
        self.double.faults.set_global("")
        log(after)

    def onec_slow(self) -> None:
        self.onec_fault("latency=0.8", 90, "slow (latency=0.8)", "1C fast again")

    def onec_failing(self) -> None:
        self.onec_fault("500", 60, "answers 500", "1C healthy again")

    def onec_restart(self) -> None:
        log("fault: 1C down for 30 s (stop/start)")
        self.double.stop()
        time.sleep(30)
        self.double.start()
        log("1C up again")

    def asterisk_restart(self) -> None:
        log("fault: Asterisk restart (down 5 s)")
        self.pbx.restart(down_for=5)
        log("Asterisk up again")

    def feed_drop(self) -> None:
        log("fault: feed watcher disconnects for 20 s")
        self.watcher.paused.set()
        time.sleep(20)
        self.watcher.paused.clear()

    def ui_drop(self) -> None:
        log("fault: UI stream dropped")
        self.ui.force_drop()

    # -- sampling ----------------------------------------------------------------------
    def manager_sessions(self) -> Any:
        try:
            text = self.pbx.cli("manager show connected")
        except Exception as exc:  # Asterisk restarting
            return f"error {type(exc).__name__}"
        users = Counter()
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] in ("router", "admin", "watcher"):
                users[parts[0]] += 1
        return dict(users)

    def sample(self, minute: float, log_lines_before: int) -> tuple[dict[str, Any], int]:
        row, lines = super().sample(minute, log_lines_before)
        row["manager_sessions"] = self.manager_sessions()
        row["local_placed"] = len(self.local.placed) if hasattr(self, "local") else 0
        row["ui_events"] = sum(self.ui.events.values())
        row["ui_connects"] = self.ui.connects
        with contextlib.suppress(OSError, ValueError, IndexError):
            census = json.loads(self.census_path.read_text().splitlines()[-1])
            row["gc_objects_top"] = dict(list(census.get("types", {}).items())[:5])
        return row, lines

    sample_every = 30.0

    def plan(self, total: float) -> list[tuple[float, Callable[[], None]]]:
        """Rules reloads (the third broken), feed and UI stream drops, and (unless
        ``--no-faults``) 1C and Asterisk faults spread over a ``total`` seconds' run."""
        plan: list[tuple[float, Callable[[], None]]] = []
        every = self.reload_every
        for i, at in enumerate(range(every, int(total) - 60, every)):
            plan.append((at, (lambda b: lambda: self.reload(b))(i == 2)))
        if not self.no_faults:
            for at in range(360, int(total) - 120, 360):
                plan.append((at, self.feed_drop))
        for at in range(180, int(total) - 60, 180):
            plan.append((at + 20, self.ui_drop))
        if self.no_faults:
            return plan
        f = total / 2700
        plan += [
            (8 * 60 * f, self.onec_slow),
            (12 * 60 * f, self.asterisk_restart),
            (16 * 60 * f, self.onec_failing),
            (21 * 60 * f, self.onec_restart),
            (27 * 60 * f, self.asterisk_restart),
            (34 * 60 * f, self.onec_slow),
        ]
        return plan

    def traffic_started(self) -> None:
        self.local = LocalCalls(self.pbx, self.local_rate)
        self.local.start()

    def traffic_stopping(self) -> None:
        self.local.stopping.set()

    def settle(self, calm: float = 10.0, timeout: float = 120.0) -> None:
        super().settle(calm, timeout)
        time.sleep(20)

    def emit(self, row: dict[str, Any]) -> None:
        super().emit(row)
        with open(self.folder / "samples.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")

    # -- accounting ----------------------------------------------------------------------
    def accounting(self) -> dict[str, Any]:
        started: set[str] = set()
        prefix = self.local.prefix
        with contextlib.suppress(sqlite3.Error):
            con = sqlite3.connect(f"file:{self.cel}?mode=ro", uri=True)
            for (uid,) in con.execute(
                "SELECT uniqueid FROM cel WHERE eventtype='CHAN_START' AND uniqueid LIKE ?",
                (f"{prefix}-%-in",),
            ):
                started.add(uid)
        decisions: dict[str, list[str]] = {}
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if prefix not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("event") != "decision":
                continue
            d = rec
            uid = d.get("uniqueid")
            if isinstance(uid, str) and uid.startswith(prefix) and "outcome" in d:
                decisions.setdefault(uid, []).append(d["outcome"])
        by_kind: dict[str, Counter[str]] = {}
        none: Counter[str] = Counter()
        twice = []
        for uid, kind in self.local.placed.items():
            outs = decisions.get(uid, [])
            if uid not in started:
                by_kind.setdefault(kind, Counter())["never-started"] += 1
                continue
            if not outs:
                none[kind] += 1
                by_kind.setdefault(kind, Counter())["no-decision"] += 1
            else:
                if len(outs) > 1:
                    twice.append((uid, outs))
                by_kind.setdefault(kind, Counter())[outs[0]] += 1
        return {
            "local_placed": len(self.local.placed),
            "local_started": len(started),
            "local_by_kind": {k: dict(v) for k, v in by_kind.items()},
            "decided_twice": twice[:20],
            "decided_twice_count": len(twice),
            "no_decision_by_kind": dict(none),
            "local_send_failures": self.local.sent_fail,
            "local_connects": self.local.connects,
            "ui_events": dict(self.ui.events),
            "ui_connects": self.ui.connects,
            "ui_errors": self.ui.errors,
            "asterisk_channels_left": self.pbx.cli("core show channels count"),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--local-rate", type=float, default=2.5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="hsoak48", help="the sandbox's name")
    parser.add_argument("--reload-every", type=int, default=240, help="seconds between reloads")
    parser.add_argument("--census-every", type=int, default=30)
    parser.add_argument("--no-faults", action="store_true", help="reloads only")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.out.mkdir(parents=True, exist_ok=True)
    office = FaultOffice(args.out, args.rate)
    office.local_rate = args.local_rate
    office.sandbox_label = args.name
    office.reload_every = args.reload_every
    office.census_every = args.census_every
    office.no_faults = args.no_faults
    office.start()
    try:
        samples = office.run(args.minutes, args.workers)
        verdict = office.verdict()
        verdict["accounting"] = office.accounting()
    finally:
        office.stop()
    (args.out / "samples.json").write_text(json.dumps(samples, indent=1), encoding="utf-8")
    report = so.table(samples) + "\n\n```json\n" + json.dumps(verdict, indent=1, ensure_ascii=False)
    (args.out / "soak.md").write_text(report + "\n```\n", encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
