"""``callrouter run`` with ``[api]`` waiting at start for an Asterisk that is
down: the API's listener is up before the wait (issue 16). It used to start
only after the login, so while the start waited ``/healthz`` and ``/readyz``
refused the connection, and a load balancer, an orchestrator or Zabbix could
not tell "starting, waiting for Asterisk" from "dead"."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from router.api.auth import hash_token
from router.sandbox import Sandbox
from tests.integration._live import free_port, logged, start_run, tail

pytestmark = pytest.mark.integration

TOKEN = "cr_wait-desk"


def start_api_run(
    folder: Path, url: str, secret: str, port: int
) -> tuple[subprocess.Popen[bytes], Path]:
    return start_run(
        folder,
        url,
        secret,
        extra_toml=f'[api]\nlisten = "127.0.0.1:{port}"\n'
        f'[api.tokens.desk]\nhash = "{hash_token(TOKEN)}"\n'
        'allow = ["ami:Ping"]\nextensions = ["*"]\n',
    )


async def answered(http: httpx.AsyncClient, path: str, timeout: float) -> httpx.Response:
    """The first answer at ``path`` (the listener may not be up yet)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return await http.get(path)
        except httpx.TransportError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)


async def test_health_answers_while_the_start_waits_and_a_stop_closes_the_listener(
    tmp_path: Path,
) -> None:
    url = "http://127.0.0.1:9/asterisk"  # discard: nothing listens
    port = free_port()
    proc, log_path = start_api_run(tmp_path, url, "s3cr3t-not-shown", port)
    base = f"http://127.0.0.1:{port}"
    try:
        await logged(proc, log_path, "Asterisk does not answer (", 20)
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            alive = await answered(http, "/healthz", 10)
            assert alive.status_code == 200, tail(log_path)
            body = alive.json()
            assert body["status"] == "alive"
            assert body["phase"] == "starting"
            assert body["detail"].startswith(
                f"waiting for Asterisk: cannot log in to {url} as 'router': "
            )
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            state = ready.json()
            assert state["status"] == "not ready"
            assert state["phase"] == "starting"
            assert state["checks"]["asterisk"] is False
            assert state["reasons"][0].startswith(
                f"waiting for Asterisk: cannot log in to {url} as 'router': "
            )
            assert "default route meanwhile" in state["reasons"][0]
            assert "not serving: callrouter is starting" in state["reasons"]
            # Every other endpoint: 503 at once, a problem saying why, no hang.
            started = time.monotonic()
            other = await http.post(
                "/api/v1/ami/Ping", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert time.monotonic() - started < 2
            assert other.status_code == 503
            assert other.headers["content-type"] == "application/problem+json"
            assert other.headers["retry-after"] == "5"
            problem = other.json()
            assert problem["phase"] == "starting"
            assert problem["detail"].startswith(
                "callrouter is starting (waiting for Asterisk: "
                f"cannot log in to {url} as 'router': "
            )
            for text in (alive.text, ready.text, other.text):
                assert "s3cr3t" not in text
        assert proc.poll() is None, tail(log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, tail(log_path)
    assert time.monotonic() - started < 3, tail(log_path)
    with socket.socket() as probe:  # the listener went with the process
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_readiness_turns_200_once_asterisk_comes_up(
    scratch_sandbox: Sandbox, tmp_path: Path
) -> None:
    box = scratch_sandbox
    await asyncio.to_thread(box.stop, phones=False)
    port = free_port()
    proc, log_path = start_api_run(tmp_path, box.url, box.secret, port)
    try:
        await logged(proc, log_path, "Asterisk does not answer (", 20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            waiting = await answered(http, "/readyz", 10)
            assert waiting.status_code == 503, tail(log_path)
            assert waiting.json()["phase"] == "starting"
            await asyncio.to_thread(box.launch)
            await logged(proc, log_path, "ready: routing calls", 20)
            end = time.monotonic() + 10
            while (ready := await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < end, ready.text
                await asyncio.sleep(0.2)
            assert ready.json()["phase"] == "running"
            alive = (await http.get("/healthz")).json()
            assert alive == {"status": "alive", "phase": "running"}
            # The API proper now: an unknown path is its own 404, not "starting".
            missing = await http.get("/api/v1/no-such-thing")
            assert missing.status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0, tail(log_path)
