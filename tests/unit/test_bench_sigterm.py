"""A benchmark stopped by ``run_all.py``'s timeout leaves no sandbox: the
runner sends SIGTERM (then SIGKILL after a grace), and every script that
starts a sandbox turns SIGTERM into Ctrl-C, so its ``with Sandbox.start``
removes the Asterisk and the instance folder on the way out."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.bench_script import BENCH, load_bench_script

#: Those that start one themselves, or through soak_office's Office (soak_faults.py).
STARTS_A_SANDBOX = sorted(
    path.name
    for path in BENCH.glob("*.py")
    if re.search(
        r"\bSandbox\.start\(|^import soak_office\b",
        path.read_text(encoding="utf-8"),
        re.MULTILINE,
    )
)


def test_the_scripts_that_start_a_sandbox_are_found() -> None:
    found = set(STARTS_A_SANDBOX)
    assert {"bench_route.py", "bench_sip_gap.py", "soak_office.py", "soak_faults.py"} <= found


@pytest.mark.parametrize("script", STARTS_A_SANDBOX)
def test_a_script_that_starts_a_sandbox_cleans_up_on_sigterm(script: str) -> None:
    """Most had no handler: SIGTERM killed them at once, their sandbox left
    running (bench-route-27102 on the lead's host)."""
    text = (BENCH / script).read_text(encoding="utf-8")
    handler = re.search(
        r"sigterm_cleans_up\(\)|signal\.signal\(signal\.SIGTERM, signal\.default_int_handler\)",
        text,
    )
    assert handler is not None, f"{script} starts a sandbox but ends on SIGTERM without clean-up"
    if handler.group(0) == "sigterm_cleans_up()":
        start = re.search(r"\bSandbox\.start\(", text)
        assert start is not None
        # Installed in the function that starts the sandbox, before it does.
        before = text[: start.start()]
        assert before.rfind("sigterm_cleans_up()") > before.rfind("\ndef ")


@pytest.fixture
def sigterm_held() -> Iterator[None]:
    """Children start with SIGTERM blocked and unblock it once their handler is
    in place: the runner's SIGTERM waits for that, however slow the start."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def child(marker: Path, *, handler: str) -> list[str]:
    code = (
        "import signal, sys, time\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "from _common import sigterm_cleans_up\n"
        f"{handler}\n"
        "try:\n"
        "    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})\n"
        "    time.sleep(600)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').write('cleaned up')\n"
    )
    return [sys.executable, "-c", code]


@pytest.mark.usefixtures("sigterm_held")
def test_run_all_stops_a_script_over_its_budget_with_sigterm(tmp_path: Path) -> None:
    """``subprocess.run(timeout=...)`` sent SIGKILL: no clean-up could run."""
    run_all = load_bench_script("run_all.py", "bench_run_all")
    marker = tmp_path / "cleaned"
    _, err, rc = run_all.run_script(
        child(marker, handler="sigterm_cleans_up()"), timeout=0.1, grace=600
    )
    assert rc == -1
    assert "stopped with SIGTERM" in err
    assert marker.read_text() == "cleaned up"


@pytest.mark.usefixtures("sigterm_held")
def test_run_all_kills_a_script_still_running_after_the_grace(tmp_path: Path) -> None:
    run_all = load_bench_script("run_all.py", "bench_run_all")
    marker = tmp_path / "cleaned"
    ignores = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    _, err, rc = run_all.run_script(child(marker, handler=ignores), timeout=0.1, grace=0.1)
    assert rc == -1
    assert "killed: still running 0.1 s after SIGTERM" in err
    assert not marker.exists()
