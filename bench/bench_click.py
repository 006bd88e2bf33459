"""Click-to-call: the API request -> the call's first new channel, on Asterisk's clock.

Run: ``.venv/bin/python bench/bench_click.py`` (``--calls``, ``--rate``; about
10 s with the defaults).

One sandbox Asterisk; the router (the Engine with ``[api]``) runs in this
process and serves the API on a local port. Each call is ``POST
/api/v1/calls`` from extension 101 to a number, with ``originate_channel =
Local/{extension}@sandbox-phone`` (the sandbox's phone: answers, stays on
the line; router/sandbox/conf/extensions.conf). The figure is the
``Timestamp`` Asterisk stamped the call's first ``Newchannel`` with (the
channel whose Uniqueid is the call's id, shown by ``GET /api/v1/calls/{id}``
in its progress) minus ``time.time()`` just before the request was sent:
the same clock on this machine. It spans the HTTP request, the validation,
the AMI ``Originate`` over AJAM and Asterisk creating the channel; it does
not include the router seeing the event. Each call is hung up through the
API once measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, free_port, md_table, pct, scratch_dir, sigterm_cleans_up

TOKEN = "bench-click-token"


def config_file(dest: Path, url: str, secret: str, port: int) -> Path:
    rules = dest / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    path = dest / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "router"\nsecret = "{secret}"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{dest / "state"}"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n'
        'originate_channel = "Local/{extension}@sandbox-phone"\n'
        'outbound_context = "outbound"\n'
        f'[api.tokens.bench]\nhash = "sha256:{digest}"\n'
        'allow = ["calls:create", "calls:read", "calls:hangup"]\n'
        'extensions = ["*"]\nrate = 10000\nburst = 100000\n',
        encoding="utf-8",
    )
    return path


async def first_channel_at(http: Any, call_id: str, timeout: float = 5.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = (await http.get(f"/api/v1/calls/{call_id}")).json()
        for step in shown["click_to_call"]["progress"]:
            if step["event"] == "Newchannel" and step["at"] is not None:
                return float(step["at"])
        await asyncio.sleep(0.02)
    return None


async def drive(box: Any, args: argparse.Namespace) -> dict[str, Any]:
    with scratch_dir("bench-click-") as tmp:
        return await _drive_in(tmp, box, args)


async def _drive_in(tmp: Path, box: Any, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`drive` with its files in ``tmp``."""
    import httpx

    from router.config import load_config
    from router.engine import Engine, EngineOptions
    from router.plugins import Plugins

    logging.basicConfig(level=logging.WARNING, handlers=[logging.FileHandler(tmp / "router.log")])
    port = free_port()
    engine = Engine(
        load_config(config_file(tmp, box.url, box.secret, port)),
        plugins=Plugins.load(entry_points=False),
        options=EngineOptions(watch_interval=0, live_heartbeat=0),
    )
    await engine.start()
    task = asyncio.create_task(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 10)
    latencies: list[float] = []
    missing = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10
    ) as http:
        for n in range(args.calls):
            sent = time.time()
            response = await http.post("/api/v1/calls", json={"from": "101", "to": f"8916{n:07d}"})
            if response.status_code != 201:
                raise RuntimeError(f"click-to-call refused: {response.text}")
            call_id = response.json()["id"]
            at = await first_channel_at(http, call_id)
            if at is None:
                missing += 1
            else:
                latencies.append((at - sent) * 1000)
            await http.post(f"/api/v1/calls/{call_id}/hangup")
            await asyncio.sleep(1 / args.rate)
    engine.request_stop()
    await asyncio.wait_for(task, 30)
    await engine.stop()
    return {"latencies": sorted(latencies), "missing": missing}


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    values = result["latencies"]
    row = [
        args.calls,
        len(values),
        f"{pct(values, 50):.1f}" if values else "-",
        f"{pct(values, 95):.1f}" if values else "-",
        f"{values[-1]:.1f}" if values else "-",
    ]
    return "### Click-to-call: API request -> first new channel (Asterisk's clock)\n\n" + md_table(
        ["calls", "measured", "p50 ms", "p95 ms", "max ms"], [row]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rate", type=float, default=4.0, help="calls per second")
    args = parser.parse_args()
    from router.sandbox import Sandbox

    started = time.monotonic()
    sigterm_cleans_up()
    with Sandbox.start(name=f"bench-click-{os.getpid()}") as box:
        result = asyncio.run(drive(box, args))
    text = report(result, args)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "click.md").write_text(text)
    print(f"(bench_click: {time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
