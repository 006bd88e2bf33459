"""``callrouter run`` as a real process: frozen, Asterisk restarted, reloaded, stopped.

These use a private ``scratch_sandbox`` (``httptimeout=12``) because they
restart Asterisk and let manager sessions expire.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from router.ami.message import Event
from router.liveguard import LIVE_EVENT
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import (
    TEST_QUEUE,
    example_dialplan,
    manager_session_dropped,
    records,
    routing_rules,
    run_process,
    until,
)
from tests.integration.conftest import AMI_TRANSPORTS, SCRATCH_HTTPTIMEOUT, ami_url

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "engine"
#: What a heartbeat says (router/liveguard.py), as a replay sends it again.
_BEAT_FIELDS = (
    "UserEvent",
    "Instance",
    "Since",
    "Host",
    "Pid",
    "Interval",
    "State",
    "Beat",
    "At",
    "Sign",
)


#: docs/operations.md: "a heartbeat sent more than 30 s before it is read ... is
#: ignored" (written here, not taken from router/liveguard.py: a product that
#: took beats for fresh longer must fail the replay test, not make it wait longer).
STALE_AFTER = 30.0


async def until_stale(beat: Mapping[str, str]) -> None:
    """Waits until a heartbeat recorded from the sandbox is stale for an instance
    reading it now: sent (its ``At``, Asterisk's clock, this host's, as the sandbox
    runs here) over ``STALE_AFTER`` s ago, by a margin for the instances' estimates
    of that clock (half a Ping's round trip: router/asterisk_clock.py)."""
    stale_at = float(beat["At"]) + STALE_AFTER + 2.0
    await asyncio.sleep(max(0.0, stale_at - time.time()))


def _is_ready(rec: dict[str, object]) -> bool:
    return str(rec.get("message", "")).startswith("ready")


def _never(log_path: Path) -> str:
    return "router log never showed it:\n" + log_path.read_text()[-3000:]


class RouterProcess:
    """A ``callrouter run`` subprocess with its JSON log."""

    def __init__(self, box: Sandbox, tmp: Path, rules: Path, transport: str = "ajam") -> None:
        self.config = tmp / "router.toml"
        self.config.write_text(
            f'[asterisk]\nurl = "{ami_url(box, transport)}"\nusername = "router"\n'
            f'secret_env = "CR_SECRET"\n'
            f"request_timeout = 3\n"
            f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp / "state"}"\n'
            f'log_format = "json"\n'
            f'[plugins.directory]\nfile = "{FIXTURES / "directory.csv"}"\n',
            encoding="utf-8",
        )
        self.log_path = tmp / "router.log"
        self.secret = box.secret
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Starts it and blocks until it is ready: for sync fixtures only."""
        env = {**os.environ, "CR_SECRET": self.secret}
        self.proc = run_process(self.config, self.log_path, env)
        deadline = time.monotonic() + 20
        while (found := self._found(_is_ready)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if found is None:
            raise AssertionError(_never(self.log_path))

    async def astart(self) -> None:
        """:meth:`start` that lets the test's event loop run while it waits."""
        env = {**os.environ, "CR_SECRET": self.secret}
        self.proc = run_process(self.config, self.log_path, env)
        await self.wait_for(_is_ready, 20)

    def records(self) -> list[dict[str, object]]:
        return records(self.log_path)

    def _found(self, predicate: Callable[..., bool]) -> dict[str, object] | None:
        """The first record ``predicate`` takes; fails if the router exited."""
        for rec in self.records():
            if predicate(rec):
                return rec
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"router exited {self.proc.returncode}:\n" + self.log_path.read_text()
            )
        return None

    async def wait_for(self, predicate: Callable[..., bool], timeout: float) -> dict[str, object]:
        """Polls the log with ``asyncio.sleep``: the placer on the test's loop
        keeps reading Asterisk's events (and answering its keepalive) meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._found(predicate)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(_never(self.log_path))

    def decisions(self) -> list[dict[str, object]]:
        return [r for r in self.records() if r.get("event") == "decision"]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


@pytest.fixture
def queue_dialplan() -> str:
    # The example users copy, not the package's copy of its snippet.
    return example_dialplan() + TEST_QUEUE


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return routing_rules(tmp_path)


@pytest.fixture
def router(
    queue_box: Sandbox, tmp_path: Path, rules_dir: Path, ami_transport: str
) -> Iterator[RouterProcess]:
    proc = RouterProcess(queue_box, tmp_path, rules_dir, ami_transport)
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.slow
async def test_frozen_router_reconciles_waiting_calls_once(
    queue_box: Sandbox, router: RouterProcess, queue_placer: CallPlacer
) -> None:
    """SIGSTOP past httptimeout: the session and its queued requests are lost.
    After SIGCONT the router re-logs in, lists waiting channels and routes each once."""
    first = await queue_placer.place("74950000001", "79161234567")
    await queue_placer.wait_all([first], 10)
    assert first.destination == "callrouter-dial,101"
    router.signal(signal.SIGSTOP)
    await asyncio.sleep(2)  # let the router's outstanding 1 s WaitEvent complete unread
    waiting = [
        await queue_placer.place("74950000001", n, wait=30)
        for n in ("79161234568", "89161234569", "79031112233")
    ]
    # httptimeout=12, and Asterisk purges expired sessions every 5 s: the
    # router's session, and the requests queued for it, are gone once it is
    # no longer listed.
    await manager_session_dropped(queue_box, "router", SCRATCH_HTTPTIMEOUT + 20)
    router.signal(signal.SIGCONT)
    await queue_placer.wait_all(waiting, 20)
    assert [c.destination for c in waiting] == [
        "callrouter-dial,102",
        "callrouter-dial,103",
        "callrouter-dial,105",
    ]
    assert [c.landings for c in waiting] == [1, 1, 1]
    gaps = [r for r in router.records() if "gap" in str(r.get("message", ""))]
    assert gaps, "the router did not notice the gap"
    # The reconcile logs its count after its whole listing is walked: the
    # calls it submitted can land before the line is written.
    await router.wait_for(lambda r: "reconcile: routing 3" in str(r.get("message", "")), 5)
    for c in waiting:  # the log line follows the confirmation the placer saw
        await router.wait_for(lambda r, c=c: r.get("uniqueid") == c.uniqueid, 5)
    decided = [rec["uniqueid"] for rec in router.decisions()]
    assert all(decided.count(c.uniqueid) == 1 for c in waiting)


@pytest.mark.slow
@pytest.mark.parametrize("ami_transport", AMI_TRANSPORTS, indirect=True)
async def test_asterisk_restart_nothing_stuck_nothing_twice(
    queue_box: Sandbox, router: RouterProcess, queue_placer: CallPlacer
) -> None:
    before = [await queue_placer.place("74950000001", "79161234567", wait=20) for _ in range(2)]
    await queue_placer.wait_all(before, 10)
    await asyncio.to_thread(queue_box.restart, down_for=1.0)
    await router.wait_for(lambda r: "gap" in str(r.get("message", "")), 30)
    # The placer's own client re-logs in transparently, like the router's.
    after = [
        await queue_placer.place("74950000001", n, wait=6) for n in ("79161234568", "79160001234")
    ]
    await queue_placer.wait_all(after, 20)
    assert [c.destination for c in after] == ["callrouter-dial,102", "test-queue,sales"], (
        router.log_path.read_text()[-4000:]
    )
    assert [c.landings for c in after] == [1, 1]
    for c in after:
        await router.wait_for(lambda r, c=c: r.get("uniqueid") == c.uniqueid, 5)
    decided = [rec["uniqueid"] for rec in router.decisions()]
    assert len(decided) == len(set(decided)) == 4, "a channel was decided twice"
    listing = await queue_placer.client.send("CoreShowChannels", {}, validate=False)
    stuck = [
        i["Channel"]
        for i in listing.items
        if i.get("Context") == "callrouter-inbound" and i.get("Application") == "Wait"
    ]
    assert stuck == []


@pytest.mark.slow
@pytest.mark.parametrize("ami_transport", AMI_TRANSPORTS, indirect=True)
async def test_a_live_router_stopped_past_the_takeover_does_not_route_calls_again(
    queue_box: Sandbox,
    router: RouterProcess,
    queue_placer: CallPlacer,
    tmp_path: Path,
    rules_dir: Path,
    ami_transport: str,
) -> None:
    """``kill -STOP`` on the live router for longer than the one standing by
    waits (6 s): the other takes over and routes a call; the stopped one,
    resumed within that call's wait, reads its request and must leave it
    alone (it redirected it a second time: docs/operations.md, Two instances)."""
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = RouterProcess(queue_box, second_dir, rules_dir, ami_transport)
    await second.astart()
    try:
        await second.wait_for(lambda r: "acts as in shadow mode" in str(r.get("message", "")), 10)
        router.signal(signal.SIGSTOP)
        await second.wait_for(
            lambda r: "this one routes calls again" in str(r.get("message", "")), 15
        )
        call = await queue_placer.place("74950000001", "79161234568", wait=6)
        await queue_placer.wait_all([call], 10)
        router.signal(signal.SIGCONT)
        assert call.destination == "callrouter-dial,102"
        decided = await router.wait_for(lambda r: r.get("uniqueid") == call.uniqueid, 15)
        assert decided["outcome"] == "shadow", router.log_path.read_text()[-3000:]
        assert any("rejoins as a newcomer" in str(r.get("message", "")) for r in router.records())
        assert not any("no UserEvent" in str(r.get("message", "")) for r in router.records())
        await asyncio.sleep(1.0)
        assert call.landings == 1
        # Its decision is logged once it read the landing the placer saw.
        await second.wait_for(
            lambda r: r.get("event") == "decision" and r.get("uniqueid") == call.uniqueid, 5
        )
        [routed] = [r for r in second.decisions() if r.get("uniqueid") == call.uniqueid]
        assert routed["outcome"] == "executed"
    finally:
        await asyncio.to_thread(second.stop)


@pytest.mark.slow
@pytest.mark.parametrize("ami_transport", AMI_TRANSPORTS, indirect=True)
async def test_a_standby_taking_over_from_a_killed_router_routes_the_calls_still_waiting(
    queue_box: Sandbox,
    router: RouterProcess,
    queue_placer: CallPlacer,
    tmp_path: Path,
    rules_dir: Path,
    ami_transport: str,
) -> None:
    """Issue 16: ``kill -9`` on the live router; a call arriving before the one
    standing by takes over (6 s without a heartbeat) waited in its ``Wait``
    and took the default route. The takeover now reconciles: it is routed,
    once; the call the killed one routed before it died is not routed again."""
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = RouterProcess(queue_box, second_dir, rules_dir, ami_transport)
    await second.astart()
    try:
        await second.wait_for(lambda r: "acts as in shadow mode" in str(r.get("message", "")), 10)
        routed = await queue_placer.place("74950000001", "79161234567", wait=20)
        await queue_placer.wait_all([routed], 10)
        assert routed.destination == "callrouter-dial,101"
        assert router.proc is not None
        router.proc.kill()
        await asyncio.sleep(1.0)
        call = await queue_placer.place("74950000001", "79161234568", wait=12)
        stood_by = await second.wait_for(lambda r: r.get("uniqueid") == call.uniqueid, 10)
        assert stood_by["outcome"] == "shadow"
        await queue_placer.wait_all([call], 20)
        assert call.destination == "callrouter-dial,102", second.log_path.read_text()[-3000:]
        assert any(
            "took over from a live callrouter that went silent" in str(r.get("message", ""))
            for r in second.records()
        )
        # The reconcile logs its count after its whole listing is walked: the
        # call it submitted can land before the line is written.
        await second.wait_for(lambda r: "reconcile: routing 1 call" in str(r.get("message", "")), 5)
        await second.wait_for(
            lambda r: r.get("uniqueid") == call.uniqueid and r.get("outcome") == "executed", 5
        )
        await asyncio.sleep(1.0)
        assert (routed.landings, call.landings) == (1, 1)
        assert [r["uniqueid"] for r in second.decisions()].count(routed.uniqueid) == 1
    finally:
        await asyncio.to_thread(second.stop)


@pytest.mark.parametrize("ami_transport", AMI_TRANSPORTS, indirect=True)
async def test_reload_keeps_old_rules_when_new_ones_are_broken(
    router: RouterProcess, rules_dir: Path, queue_placer: CallPlacer
) -> None:
    rules = rules_dir / "routing.yaml"
    good = rules.read_text()
    rules.write_text("version: 1\nrules:\n  - name: broken\n    on: call\n    do: [{redirect: ")
    router.signal(signal.SIGHUP)
    await router.wait_for(lambda r: "not reloaded" in str(r.get("message", "")), 10)
    call = await queue_placer.place("74950000001", "79160002222")
    await queue_placer.wait_all([call], 10)
    assert call.destination == "test-queue,sales"  # still the old rules
    rules.write_text(good.replace("exten: sales}", "exten: sales2}"))
    await router.wait_for(
        lambda r: (
            "reloaded" in str(r.get("message", "")) and "not" not in str(r.get("message", ""))
        ),
        10,
    )  # file watcher, no signal
    call = await queue_placer.place("74950000001", "79160003333")
    await queue_placer.wait_all([call], 10)
    assert call.destination == "test-queue,sales2"


@pytest.mark.parametrize("ami_transport", AMI_TRANSPORTS, indirect=True)
async def test_sigterm_logs_off_and_exits_zero(router: RouterProcess) -> None:
    started = time.monotonic()
    assert await asyncio.to_thread(router.stop) == 0
    assert time.monotonic() - started < 10
    assert any("logged off" in str(r.get("message", "")) for r in router.records())


@pytest.mark.slow
async def test_heartbeats_recorded_and_replayed_to_a_restarted_router_change_nothing(
    queue_box: Sandbox,
    router: RouterProcess,
    queue_placer: CallPlacer,
    tmp_path: Path,
    rules_dir: Path,
    ami_transport: str,
) -> None:
    """hsec34's trial: a manager user with read = user and write = user (here the
    sandbox's admin) records the live router's signed heartbeats, waits for the
    service to restart, and replays them to the new instance, one above the
    other: the new one stood by (``acts as in shadow mode``) and the call took
    its default route. Beats sent more than 30 s before are stale now."""
    recorded: list[dict[str, str]] = []
    watch = queue_placer.observe

    def observe(event: Event) -> None:
        if event.name == "UserEvent" and event.get("UserEvent") == LIVE_EVENT:
            fields = {name: value for name, value in event.items() if name in _BEAT_FIELDS}
            if fields.get("State") == "live":
                recorded.append(fields)
        watch(event)

    queue_placer.observe = observe  # type: ignore[method-assign]
    await until(lambda: len(recorded) >= 5, 20, "five beats of the live router")
    assert len(recorded) >= 4, recorded
    await asyncio.to_thread(router.stop)
    beats = list(recorded)  # the stopped router's: not the next one's own
    # The service restarted a while later: once the first beat recorded is stale.
    await until_stale(beats[0])
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = RouterProcess(queue_box, second_dir, rules_dir, ami_transport)
    await second.astart()
    try:
        # One an interval, as the live router sent them: the call waits 6 s.
        await queue_placer.client.send("UserEvent", beats[0], validate=False)
        call = await queue_placer.place("74950000001", "79161234567", wait=6)
        for fields in beats[1:]:
            await asyncio.sleep(2)
            await until_stale(fields)  # sent an interval after the one before, or more
            await queue_placer.client.send("UserEvent", fields, validate=False)
        await queue_placer.wait_all([call], 10)
        assert any(
            "a stale CallRouterLive heartbeat was ignored" in str(r.get("message", ""))
            for r in second.records()
        )
        assert call.destination == "callrouter-dial,101", second.log_path.read_text()[-3000:]
        assert not any("shadow mode" in str(r.get("message", "")) for r in second.records())
    finally:
        await asyncio.to_thread(second.stop)
