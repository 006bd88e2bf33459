"""``callrouter run`` under a low open-files limit (``ulimit -n 64``) while API
clients hold connections: the calls are still routed.

The API took up to ``[api] max_connections`` (256) connections, so 80 idle
clients took every file the process may open: the Redirects' AMI connections
failed with ``Too many open files`` and 17 calls of 20 took their default
route, while asyncio logged the failed accepts 100,000 times in 20 s. The cap
is now lowered to the limit less the files routing keeps (issue 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from tests.integration._live import SALES_RULES, free_port, logged, records, stop_process, tail

pytestmark = pytest.mark.integration

LIMIT = 64


def _low_limit() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _run_limited(config: Path, log_path: Path, secret: str) -> subprocess.Popen[bytes]:
    """``callrouter run`` with at most :data:`LIMIT` open files, as under ``ulimit -n``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "router.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=log,
            env={**os.environ, "CR_SECRET": secret},
            preexec_fn=_low_limit,
        )


async def test_api_clients_holding_connections_leave_files_for_routing(
    queue_box: Sandbox, queue_placer: CallPlacer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SALES_RULES, encoding="utf-8")
    port = free_port()
    config = tmp_path / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "{queue_box.url}"\nusername = "router"\nsecret_env = "CR_SECRET"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n'
        f'log_format = "json"\n[api]\nlisten = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    log_path = tmp_path / "router.log"
    proc = _run_limited(config, log_path, queue_box.secret)
    held: list[socket.socket] = []
    try:
        lowered = await logged(proc, log_path, "[api] max_connections 256 lowered to", 20)
        assert lowered["level"] == "WARNING"
        assert f"the open-files limit is {LIMIT}" in lowered["message"]
        await logged(proc, log_path, "ready: routing calls", 20)
        await asyncio.sleep(1.5)  # past the live-instance settle time
        for _ in range(80):  # idle clients: each holds a connection open
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        await asyncio.sleep(0.5)
        calls = [await queue_placer.place("74950000001", f"7916000{i:04d}") for i in range(20)]
        await queue_placer.wait_all(calls, 20)
        assert [c.destination for c in calls] == ["test-queue,sales"] * 20, tail(log_path)
        accepts = [
            r for r in records(log_path) if "out of system resource" in str(r.get("message"))
        ]
        assert len(accepts) <= 1, tail(log_path)
        assert proc.poll() is None, tail(log_path)
    finally:
        for sock in held:
            sock.close()
        await asyncio.to_thread(stop_process, proc)
        await queue_placer.hangup_all()
