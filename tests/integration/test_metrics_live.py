"""``/metrics``, ``/readyz`` and systemd's notify protocol from ``callrouter run``
on a real Asterisk, scraped over real HTTP as Prometheus would.

A private scratch sandbox: calls are placed with the shipped dialplan (its
default route made to hold the call), so what the counters say can be
compared with what happened to each call, and a call that falls through while
callrouter is stopped is still up when it starts again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import admin_placer, example_dialplan, free_port, run_process

pytestmark = pytest.mark.integration

ROUTED = "74950000001"
UNROUTED = "74950000002"
RULES = f"""version: 1
rules:
  - name: sales
    on: call
    if: did == "{ROUTED}"
    do:
      - redirect: {{context: test-sales, exten: "s"}}
"""
#: The default route holds the call (the shipped one queues it, and the
#: sandbox's queue has nobody): still up when callrouter starts again.
TEST_CONTEXTS = """
[test-sales]
exten => s,1,NoOp(test-sales)
 same => n,Wait(120)

[test-default]
exten => _X.,1,NoOp(test-default ${EXTEN})
 same => n,Wait(120)
"""


class Router:
    """``callrouter run`` with ``[api]``, its JSON log, and a fake systemd socket."""

    def __init__(self, box: Sandbox, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.rules = folder / "rules.yaml"
        self.rules.write_text(RULES, encoding="utf-8")
        self.folder, self.url = folder, box.url
        self.config = folder / "router.toml"
        self.log = folder / "router.log"
        self.secret = box.secret
        self.notify_path = str(folder / "notify")
        self.systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.systemd.bind(self.notify_path)
        self.systemd.setblocking(False)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # A free port at each start: the suite runs in parallel, and a port let
        # go at a stop can be another test's client port by the restart.
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config.write_text(
            f'[asterisk]\nurl = "{self.url}"\nusername = "router"\nsecret_env = "CR_SECRET"\n'
            f'[router]\nrules = ["{self.rules}"]\nstate_dir = "{self.folder / "state"}"\n'
            f'log_format = "json"\n[api]\nlisten = "127.0.0.1:{self.port}"\n',
            encoding="utf-8",
        )
        env = {
            **os.environ,
            "CR_SECRET": self.secret,
            "NOTIFY_SOCKET": self.notify_path,
            "WATCHDOG_USEC": "2000000",  # a ping every second
        }
        env.pop("WATCHDOG_PID", None)
        self.proc = run_process(self.config, self.log, env)

    def notifications(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.systemd.recv(4096).decode())
            except BlockingIOError:
                return out

    async def wait_ready(self, timeout: float = 30) -> list[str]:
        """Until systemd is told READY=1; what it was told by then."""
        seen: list[str] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            seen += self.notifications()
            if "READY=1" in seen:
                return seen
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("router exited:\n" + self.log.read_text())
            await asyncio.sleep(0.05)
        raise AssertionError("no READY=1:\n" + self.log.read_text()[-3000:])

    def decisions(self) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "decision":
                found.append(record)
        return found

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            return await http.get(path)

    async def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        response = await self.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return out

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return None if self.proc is None else self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.systemd.close()


Scraped = dict[str, dict[tuple[tuple[str, str], ...], float]]


def value(scraped: Scraped, metric: str, **labels: str) -> float:
    return scraped.get(metric, {}).get(tuple(sorted(labels.items())), 0.0)


@pytest.fixture
def box(scratch_sandbox: Sandbox) -> Sandbox:
    shipped = example_dialplan()
    default = "CALLROUTER_DEFAULT=callrouter-default"
    assert default in shipped
    scratch_sandbox.set_dialplan(
        shipped.replace(default, "CALLROUTER_DEFAULT=test-default") + TEST_CONTEXTS
    )
    return scratch_sandbox


@pytest_asyncio.fixture
async def placer(box: Sandbox) -> AsyncIterator[CallPlacer]:
    async with admin_placer(box) as p:
        yield p


@pytest.fixture
def router(box: Sandbox, tmp_path: Path) -> Iterator[Router]:
    running = Router(box, tmp_path / "router")
    try:
        yield running
    finally:
        running.close()


async def test_metrics_move_with_calls_and_count_what_fell_through_while_down(
    router: Router, placer: CallPlacer
) -> None:
    router.start()
    told = await router.wait_ready()
    assert "STATUS=routing calls (1 rule)" in told
    ready = await router.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "asterisk": True,
        "event_stream": True,
        "user_events": True,
        "privileges": True,
        "rules": True,
        "serving": True,
    }
    assert (await router.get("/healthz")).status_code == 200
    before = await router.scrape()
    assert value(before, "callrouter_ready") == 1
    assert value(before, "callrouter_reconciles_total", trigger="start", result="ok") == 1

    # Two calls routed by the rule, one that no rule takes (its 1 s wait ends;
    # it stays up on the default route across the restart below).
    calls = [
        await placer.place(ROUTED, "79161234567"),
        await placer.place(ROUTED, "79161234568"),
        await placer.place(UNROUTED, "79161234569", wait=1, hold=120),
    ]
    await placer.wait_all(calls, 20)
    assert [c.destination for c in calls] == [
        "test-sales,s",
        "test-sales,s",
        f"test-default,{UNROUTED}",
    ]
    for _ in range(100):  # the decision lines follow the landings within moments
        if len(router.decisions()) >= 3:
            break
        await asyncio.sleep(0.1)
    after = await router.scrape()
    assert value(after, "callrouter_decisions_total", rule="sales", outcome="executed") == 2
    assert value(after, "callrouter_decisions_total", rule="-", outcome="fell-through") == 1
    assert value(after, "callrouter_fallthroughs_total", cause="no-rule") == 1
    assert value(after, "callrouter_fallthroughs_total", cause="late") == 0
    # Counted as no-rule, and marked so: no later start counts it as down.
    assert calls[2].variables.get("CALLROUTER_FELL")
    assert calls[2].variables.get("CALLROUTER_DECIDED") == "fell-through"
    # The histogram on Asterisk's clock moved by the two executed decisions; each
    # took what the calls measured themselves (request -> landing), within 4 s.
    assert value(after, "callrouter_decision_seconds_count") == 2
    total = value(after, "callrouter_decision_seconds_sum")
    measured = sum((c.latency_ms or 0) for c in calls[:2]) / 1000
    assert 0 < total < 4
    assert abs(total - measured) < 0.5, (total, measured)
    assert value(after, "callrouter_decision_seconds_bucket", le="+Inf") == 2
    assert value(after, "callrouter_evaluate_seconds_count") == 3
    assert value(after, "callrouter_events_total", name="UserEvent") >= 3
    assert value(after, "callrouter_events_total", name="Newexten") > value(
        before, "callrouter_events_total", name="Newexten"
    )
    assert value(after, "callrouter_calls_active") >= 3  # still up, holding
    assert value(after, "callrouter_api_requests_total", operation="readyz", status="200") == 1
    assert (
        value(after, "callrouter_api_requests_total", operation="metrics:read", status="200") == 1
    )
    for routed in calls[:2]:
        await placer.client.send("Hangup", {"Channel": routed.channel}, validate=False)

    # callrouter stops; a call arrives, waits 1 s for nobody and falls through.
    assert await asyncio.to_thread(router.stop) == 0
    assert any(n.startswith("STOPPING=1") for n in router.notifications())
    down = await placer.place(ROUTED, "79161234570", wait=1, hold=120)
    await placer.wait_all([down], 20)
    assert down.destination == f"test-default,{ROUTED}"
    assert down.variables.get("CALLROUTER_FELL")

    # Started again: the reconcile at start finds the call and counts it; not
    # the one that fell through while callrouter ran, still up too (issue 16).
    router.start()
    await router.wait_ready()
    again = await router.scrape()
    assert value(again, "callrouter_fallthroughs_total", cause="down") == 1
    assert value(again, "callrouter_reconciles_total", trigger="start", result="ok") == 1
    assert value(again, "callrouter_decisions_total", rule="sales", outcome="executed") == 0
    # The watchdog pings while it serves (WATCHDOG_USEC 2 s: one a second).
    await asyncio.sleep(2.5)
    assert "WATCHDOG=1" in router.notifications()
    await placer.hangup_all()
