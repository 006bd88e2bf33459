"""The API served by ``callrouter run`` on a real Asterisk, over real HTTP.

A private scratch sandbox, because the last test stops Asterisk under the
running router: the API must then answer 503 within a second, not hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.api.auth import hash_token
from router.sandbox import Sandbox
from tests.integration._live import free_port, records, run_process

DESK = "cr_live-desk-101"
ADMIN = "cr_live-admin"


class Router:
    """``callrouter run`` with ``[api]`` on a free port, logging JSON to a file."""

    def __init__(self, box: Sandbox, tmp: Path) -> None:
        rules = tmp / "rules.yaml"
        rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
        self.port = free_port()
        self.config = tmp / "router.toml"
        self.config.write_text(
            f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret_env = "CR_SECRET"\n'
            f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp / "state"}"\n'
            'log_format = "json"\n'
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[api.tokens.desk]\nhash = "{hash_token(DESK)}"\n'
            'allow = ["ami:CoreShowChannels", "ami:Ping"]\nextensions = ["101"]\n'
            f'[api.tokens.admin]\nhash = "{hash_token(ADMIN)}"\n'
            'allow = ["ami:*"]\nextensions = ["*"]\n',
            encoding="utf-8",
        )
        self.log = tmp / "router.log"
        self.proc = run_process(self.config, self.log, {**os.environ, "CR_SECRET": box.secret})
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.wait_log(lambda rec: str(rec.get("message", "")).startswith("ready"), 30)

    def records(self) -> list[dict[str, object]]:
        return records(self.log)

    def wait_log(self, predicate: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(rec) for rec in self.records()):  # type: ignore[operator]
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"router exited:\n{self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError("not in the router's log:\n" + self.log.read_text()[-3000:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return -9
        return self.proc.returncode


@pytest.fixture
def router(scratch_sandbox: Sandbox, tmp_path: Path) -> Iterator[Router]:
    running = Router(scratch_sandbox, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def post(router: Router, action: str, token: str, body: object = None) -> httpx.Response:
    return httpx.post(
        f"{router.url}/ami/{action}",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=10,
    )


def test_the_api_over_real_http_on_a_real_asterisk(
    router: Router, scratch_sandbox: Sandbox
) -> None:
    # A scoped token may do what it names, on the real Asterisk.
    listed = post(router, "CoreShowChannels", DESK)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    assert listed.json()["response"]["EventList"] == "start"

    # Without ami:Command: 403 naming the permission; nothing reaches Asterisk.
    denied = post(router, "Command", DESK, {"Command": "core show uptime"})
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["missing_permission"] == "ami:Command"

    # With ami:* the token may, but the least-privilege AMI user may not:
    # Asterisk's refusal, told apart from the token's by its title.
    refused = post(router, "Command", ADMIN, {"Command": "core show uptime"})
    assert refused.status_code == 403
    assert refused.json()["title"] == "Forbidden by Asterisk"
    assert "write class command" in refused.json()["detail"]
    assert "missing_permission" not in refused.json()
    pong = post(router, "Ping", ADMIN)
    assert pong.status_code == 200, pong.text
    assert pong.json()["response"]["Ping"] == "Pong"

    # An unknown action: 404 with the closest name.
    unknown = post(router, "CoreShowChanels", ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["did_you_mean"] == "CoreShowChannels"

    # Malformed JSON: 400 naming the problem and where.
    broken = httpx.post(
        f"{router.url}/ami/Ping",
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        content=b'{"a": 1,}',
        timeout=10,
    )
    assert broken.status_code == 400
    assert broken.json()["detail"].startswith("malformed JSON: ")
    assert broken.json()["column"] == 9

    # The audit log names the token, never its text.
    text = router.log.read_text()
    assert "api token=desk op=ami:Command target=Command status=403" in text
    assert DESK not in text
    assert ADMIN not in text

    # Asterisk stops: every request answers 503 within a second, none hangs.
    scratch_sandbox.stop()
    for _ in range(5):
        started = time.monotonic()
        gone = post(router, "CoreShowChannels", DESK)
        elapsed = time.monotonic() - started
        assert gone.status_code == 503, gone.text
        assert gone.headers["retry-after"] == "1"
        assert elapsed < 1.0, elapsed
        time.sleep(0.3)

    # SIGTERM stops the router and its listener together.
    assert router.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{router.url}/openapi.json", timeout=5)
