"""The admin CLI against the sandbox, as a subprocess, exit codes included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from router.sandbox import Sandbox


def write_config(tmp_path: Path, box: Sandbox, user: str = "admin") -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "{user}"\nsecret_env = "CR_TEST_SECRET"\n',
        encoding="utf-8",
    )
    return path


def callrouter(*args: str, secret: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CR_TEST_SECRET": secret}
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_ami_ping_and_list(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = str(write_config(tmp_path, sandbox))
    done = callrouter("ami", "Ping", "--config", cfg, secret=sandbox.secret)
    assert done.returncode == 0, done.stderr
    assert "Ping: Pong" in done.stdout
    done = callrouter("ami", "CoreShowChannels", "--json", "--config", cfg, secret=sandbox.secret)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["complete"] is True
    assert data["response"]["EventList"] == "start"


def test_wrong_secret_action_error_and_bad_param_exit_nonzero(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    cfg = str(write_config(tmp_path, sandbox))
    done = callrouter("ami", "Ping", "--config", cfg, secret="wrong")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "Authentication failed" in done.stderr
    done = callrouter(
        "ami",
        "Redirect",
        "Channel=Local/none",
        "Context=x",
        "Exten=1",
        "Priority=1",
        "--config",
        cfg,
        secret=sandbox.secret,
    )
    assert done.returncode == 1
    assert "Channel does not exist" in done.stderr
    done = callrouter("ami", "Getvar", "Varible=X", "--config", cfg, secret=sandbox.secret)
    assert done.returncode == 2  # typed wrong: the action's usage (test_cli_exit_codes.py)
    assert "did you mean 'Variable'" in done.stderr


def test_events_tails_live(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = str(write_config(tmp_path, sandbox))
    env = {**os.environ, "CR_TEST_SECRET": sandbox.secret}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.cli",
            "events",
            "UserEvent",
            "--json",
            "--count",
            "1",
            "--config",
            cfg,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            callrouter(
                "ami",
                "UserEvent",
                "UserEvent=CliTail",
                "Note=Привет",
                "--config",
                cfg,
                secret=sandbox.secret,
            )
            time.sleep(0.5)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    event = json.loads(out.strip().splitlines()[0])
    assert event["Event"] == "UserEvent"
    assert event["Note"] == "Привет"
