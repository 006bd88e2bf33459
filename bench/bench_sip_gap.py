"""How early a real SIP call shows its caller before its routing request.

Run: ``.venv/bin/python bench/bench_sip_gap.py`` (``--calls N``; about a
second a call). Not part of ``make bench``: it measures Asterisk, not callrouter.

The route benchmark places calls as Local channels (AMI ``Originate``), whose
``Newchannel`` carries no caller number: the caller appears at the requesting
channel's first dialplan step, in the request's own read (bench/ANALYSIS.md,
twelfth session). A call from a SIP trunk is made with the caller's number.
Here the sandbox's PSTN phone (baresip) calls the shipped
``[callrouter-inbound]`` dialplan over SIP, and a plain TCP AMI session (no
callrouter) records, per call, the trunk channel's ``Newchannel`` and the
request ``UserEvent``: the gap between them on Asterisk's clock and on
arrival, and what the ``Newchannel`` says. A decision taken at that
``Newchannel`` would be that much ahead of the request.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, md_table, sigterm_cleans_up

REQUEST = "CallRouterRequest"


class Recorder:
    """A TCP AMI session that keeps every event with its arrival time."""

    def __init__(self, port: int, secret: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.sendall(f"Action: Login\r\nUsername: admin\r\nSecret: {secret}\r\n\r\n".encode())
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                block, buf = buf.split(b"\r\n\r\n", 1)
                fields: dict[str, Any] = {}
                for line in block.decode("utf-8", "replace").split("\r\n"):
                    key, _, value = line.partition(": ")
                    fields.setdefault(key, value)
                if "Event" in fields:
                    fields["_arrived"] = time.time()
                    self.events.append(fields)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def gaps(events: list[dict[str, Any]]) -> list[tuple[float, float, str, str]]:
    """Per call: (Asterisk-clock gap ms, arrival gap ms, the Newchannel's caller, its Exten)."""
    first: dict[str, dict[str, Any]] = {}
    out = []
    for event in events:
        linkedid = event.get("Linkedid", "")
        if not str(event.get("Channel", "")).startswith("PJSIP/pstn"):
            continue
        if event.get("Event") == "Newchannel":
            first.setdefault(linkedid, event)
        elif event.get("Event") == "UserEvent" and event.get("UserEvent") == REQUEST:
            new = first.get(linkedid)
            if new is not None:
                out.append(
                    (
                        (float(event["Timestamp"]) - float(new["Timestamp"])) * 1000,
                        (event["_arrived"] - new["_arrived"]) * 1000,
                        str(new.get("CallerIDNum", "")),
                        str(new.get("Exten", "")),
                    )
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="SIP calls to place (default 20)")
    args = parser.parse_args()

    from router.sandbox import Sandbox
    from router.sandbox.phones import Phones

    dialplan = (REPO / "examples" / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    sigterm_cleans_up()
    box = Sandbox.start(name=f"bench-sip-{time.time_ns()}", extra_dialplan=dialplan)
    try:
        recorder = Recorder(box.ami_port, box.secret)
        try:
            with Phones.start(box) as phones:
                for n in range(args.calls):
                    call = phones.pstn.call(did="74950000001", caller=f"8916{n:07d}")
                    time.sleep(0.5)  # past the request; nobody routes it
                    call.hangup()
                    time.sleep(0.3)
        finally:
            time.sleep(0.3)
            recorder.close()
    finally:
        box.remove()
    found = gaps(recorder.events)
    if not found:
        raise SystemExit("no call's Newchannel and request were seen")
    named = sum(1 for _, _, caller, _ in found if caller.isdigit())
    rows = [
        [
            "Asterisk's clock",
            statistics.median(g[0] for g in found),
            min(g[0] for g in found),
            max(g[0] for g in found),
        ],
        [
            "arrival at an AMI client",
            statistics.median(g[1] for g in found),
            min(g[1] for g in found),
            max(g[1] for g in found),
        ],
    ]
    print(
        f"### A SIP call's Newchannel -> its routing request ({len(found)} calls; "
        f"the Newchannel named the caller in {named})\n"
    )
    print(md_table(["measured on", "p50 ms", "min ms", "max ms"], rows))


if __name__ == "__main__":
    main()
