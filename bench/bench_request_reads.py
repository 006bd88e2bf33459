"""How a routing request's three events reach a TCP AMI client: in one read or apart.

Run: ``.venv/bin/python bench/bench_request_reads.py`` (``--rates``, ``--seconds``;
about 10 s a rate). Not part of ``make bench``: it measures Asterisk, not callrouter.

The request's dialplan step raises two events: its ``Newexten`` (``Application:
UserEvent``, the request's text in ``AppData``) as the step starts, then the
``UserEvent`` itself; the next step's ``Newexten`` (``Application: Wait``) is
what a Redirect waits for (router/parking.py). A router that took the request
from the first of them would start deciding that much earlier: this counts, per
call placed at a fixed pace (Local channels into the shipped
``[callrouter-inbound]``, as bench_route.py does), whether the first two come in
one socket read, whether the last two do, and how far apart they arrive when
they do not (bench/ANALYSIS.md, forty-sixth session).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_dialplan, md_table, sigterm_cleans_up

REQUEST = "CallRouterRequest"
INBOUND = "callrouter-inbound"


def _session(port: int, secret: str, *, events: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.recv(100)  # the banner
    sock.sendall(
        f"Action: Login\r\nUsername: admin\r\nSecret: {secret}\r\n"
        f"Events: {'on' if events else 'off'}\r\n\r\n".encode()
    )
    return sock


class Reads:
    """A TCP AMI session that keeps every read with its arrival time."""

    def __init__(self, port: int, secret: str) -> None:
        self.reads: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._sock = _session(port, secret, events=True)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            self.reads.append((time.perf_counter(), data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def _header(block: str, name: str) -> str | None:
    for line in block.split("\r\n"):
        if line.startswith(name + ": "):
            return line[len(name) + 2 :]
    return None


def per_call(reads: list[tuple[float, bytes]]) -> list[dict[str, tuple[int, float]]]:
    """Per requesting channel: its three events' (read number, arrival)."""
    calls: dict[str, dict[str, tuple[int, float]]] = {}
    rest = b""
    for number, (arrived, data) in enumerate(reads):
        rest += data
        while b"\r\n\r\n" in rest:
            raw, rest = rest.split(b"\r\n\r\n", 1)
            block = raw.decode("utf-8", "replace")
            if _header(block, "Context") != INBOUND:
                continue
            event, app = _header(block, "Event"), _header(block, "Application")
            kind = None
            if event == "Newexten" and app == "UserEvent":
                kind = "step"
            elif event == "UserEvent" and _header(block, "UserEvent") == REQUEST:
                kind = "request"
            elif event == "Newexten" and app == "Wait":
                kind = "wait"
            if kind is not None:
                calls.setdefault(_header(block, "Uniqueid") or "", {})[kind] = (number, arrived)
    return [c for c in calls.values() if len(c) == 3]


def _apart(calls: list[dict[str, tuple[int, float]]], first: str, then: str) -> list[float]:
    return [(c[then][1] - c[first][1]) * 1e6 for c in calls if c[first][0] != c[then][0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,50,100", help="calls a second (default 20,50,100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate (default 10)")
    args = parser.parse_args()

    from router.sandbox import Sandbox

    sigterm_cleans_up()
    rows = []
    box = Sandbox.start(name=f"bench-reads-{time.time_ns()}", extra_dialplan=bench_dialplan(4))
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            reads = Reads(box.ami_port, box.secret)
            placer = _session(box.ami_port, box.secret, events=False)
            try:
                time.sleep(0.3)
                for n in range(int(rate * args.seconds)):
                    placer.sendall(
                        f"Action: Originate\r\nChannel: Local/7495{n % 10000:07d}@{INBOUND}\r\n"
                        f"Application: Wait\r\nData: 1\r\nCallerID: <8916{n:07d}>\r\n"
                        f"Async: true\r\nActionID: r{n}\r\n\r\n".encode()
                    )
                    time.sleep(1 / rate)
                time.sleep(6)  # every call's wait over
            finally:
                placer.close()
                reads.close()
            calls = per_call(reads.reads)
            if not calls:
                raise SystemExit(f"{rate:g}/s: no call's three events were seen")
            step_request = _apart(calls, "step", "request")
            request_wait = _apart(calls, "request", "wait")
            rows.append(
                [
                    f"{rate:g}",
                    len(calls),
                    f"{100 * len(step_request) / len(calls):.0f}%",
                    statistics.median(step_request) if step_request else "-",
                    f"{100 * len(request_wait) / len(calls):.0f}%",
                    statistics.median(request_wait) if request_wait else "-",
                ]
            )
    finally:
        box.remove()
    print("### A request's step, request and Wait step: one read or apart (TCP AMI)\n")
    print(
        md_table(
            [
                "calls/s",
                "calls",
                "step, request apart",
                "p50 us apart",
                "request, Wait apart",
                "p50 us apart",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
