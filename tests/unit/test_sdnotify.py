"""systemd's notify protocol (router/sdnotify.py) against a fake NOTIFY_SOCKET:
a Unix datagram socket the test reads, as systemd's would be."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.health import Health, readiness
from router.sdnotify import Notifier, notify, watchdog_interval

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting now."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


def test_notify_reaches_a_path_socket(systemd: tuple[socket.socket, str]) -> None:
    sock, path = systemd
    assert notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(100) == b"READY=1"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"callrouter-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("STATUS=hello", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STATUS=hello"


def test_without_systemd_nothing_is_sent_and_nothing_raises(tmp_path: Path) -> None:
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "nan"}) is None
    assert watchdog_interval({}) is None


async def test_ready_then_watchdog_only_while_alive_then_stopping(
    systemd: tuple[socket.socket, str],
) -> None:
    sock, path = systemd
    state = {"alive": True, "ready": True}

    def health() -> Health:
        return readiness(
            logged_in=True,
            stream_current=state["ready"],
            rule_problems=0,
            rules=2,
            serving=True,
        )

    notifier = Notifier(
        health,
        alive=lambda: state["alive"],
        environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"},  # ping every 0.05 s
    )
    notifier.start()
    await asyncio.sleep(0.3)
    first = received(sock)
    assert first[:2] == ["STATUS=routing calls (2 rules)", "READY=1"]
    assert first.count("WATCHDOG=1") >= 2
    state["ready"] = False  # Asterisk went away: status says so, pings go on
    await asyncio.sleep(0.3)
    second = received(sock)
    assert second[0] == (
        "STATUS=not ready: the event stream is not current: Asterisk does not answer its polls"
    )
    assert "WATCHDOG=1" in second
    state["alive"] = False  # the engine stopped serving: no more pings
    await asyncio.sleep(0.2)
    received(sock)
    await asyncio.sleep(0.3)
    assert "WATCHDOG=1" not in received(sock)
    await notifier.stop()
    assert received(sock) == ["STOPPING=1\nSTATUS=stopping: finishing decisions in flight"]


async def test_the_status_line_tells_a_warning_briefly_and_when_it_is_gone(
    systemd: tuple[socket.socket, str],
) -> None:
    """A manager user without ``write = reporting`` is ready (/readyz's
    ``warnings``); ``systemctl status`` said only ``routing calls``."""
    from router.privilege_watch import PRIVILEGE_MISSING
    from router.privileges import REPORTING

    sock, path = systemd
    warning = PRIVILEGE_MISSING.format(
        user="router", action="CoreStatus", cls="reporting", lost=REPORTING.lost
    )
    state = {"warning": warning}

    def health() -> Health:
        return readiness(
            logged_in=True,
            stream_current=True,
            rule_problems=0,
            rules=2,
            serving=True,
            privilege_warning=state["warning"],
            user="router",
        )

    notifier = Notifier(
        health, alive=lambda: True, environ={"NOTIFY_SOCKET": path}, status_every=0.05
    )
    notifier.start()
    assert received(sock)[:2] == [
        "STATUS=routing calls (2 rules); 1 warning: manager user router lacks write = reporting",
        "READY=1",
    ]
    state["warning"] = ""  # manager.conf fixed, a new login
    await asyncio.sleep(0.2)
    assert received(sock) == ["STATUS=routing calls (2 rules)"]
    await notifier.stop()
    # Not ready, the warning still said after the reasons.
    state["warning"] = warning
    down = readiness(
        logged_in=True,
        stream_current=False,
        rule_problems=0,
        rules=2,
        serving=True,
        privilege_warning=warning,
        user="router",
    )
    assert down.status_line() == (
        "not ready: the event stream is not current: Asterisk does not answer its polls; "
        "1 warning: manager user router lacks write = reporting"
    )


async def test_the_engine_tells_systemd_it_is_ready_and_stopping(
    systemd: tuple[socket.socket, str],
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine = await engine_factory(rules)
    assert sock.recv(200).decode() == "STATUS=routing calls (0 rules)"
    assert sock.recv(200).decode() == "READY=1"
    engine.request_stop()
    await engine.stop()
    assert sock.recv(200).decode().startswith("STOPPING=1")


UNIT = Path(__file__).parents[2] / "examples" / "systemd" / "callrouter.service"


def test_the_shipped_unit_waits_for_ready_and_has_a_watchdog() -> None:
    lines = [line.strip() for line in UNIT.read_text(encoding="utf-8").splitlines()]
    settings = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"  # `callrouter run` is the main process
    watchdog = int(settings["WatchdogSec"])
    # systemd passes WatchdogSec as WATCHDOG_USEC: callrouter pings twice per period.
    assert watchdog_interval({"WATCHDOG_USEC": str(watchdog * 1_000_000)}) == watchdog / 2


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_shipped_unit(tmp_path: Path) -> None:
    unit = tmp_path / "callrouter.service"
    unit.write_bytes(UNIT.read_bytes())
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (checked.stdout + checked.stderr).splitlines()
        # The binary is installed by the admin (docs/operations.md), not here.
        if "/opt/callrouter/bin/callrouter" not in line
    ]
    assert complaints == []


async def test_waiting_for_asterisk_at_start_extends_the_start_timeout(
    systemd: tuple[socket.socket, str],
) -> None:
    """``callrouter run`` waits for an Asterisk that does not answer at start
    (issue 16): before READY=1 it tells systemd why, and pushes the start
    timeout on, so Type=notify does not kill it for being slow to start."""
    sock, path = systemd

    def health() -> Health:
        return readiness(
            logged_in=False, stream_current=False, rule_problems=0, rules=2, serving=False
        )

    notifier = Notifier(health, lambda: True, environ={"NOTIFY_SOCKET": path})
    notifier.waiting("waiting for Asterisk at http://pbx:8088/asterisk: refused", 10.5)
    assert received(sock) == [
        "STATUS=waiting for Asterisk at http://pbx:8088/asterisk: refused\n"
        "EXTEND_TIMEOUT_USEC=10500000"
    ]
    notifier.start()
    try:
        received(sock)
        notifier.waiting("not after READY", 10)
        assert received(sock) == []
    finally:
        await notifier.stop()
