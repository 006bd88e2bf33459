"""1C lookups: what ``onec.responsible`` adds to a call, hit or miss, and coalescing.

Run: ``.venv/bin/python bench/bench_onec.py`` (``--samples N``; about 15 s).

The 1C double (``callrouter_onec.double``, a real HTTP/1.1 server) runs in its
own process so that its threads do not share our interpreter's lock; the
plugin's :class:`OneCClient` (keep-alive httpx pool) and
:class:`ResponsibleCache` run here, as in the router.

* **hit**: ``ResponsibleCache.lookup`` of a number answered before (in memory).
* **miss, 0 ms / 50 ms**: the entry is dropped before each lookup, so each one
  is a real request to the double, which answers at once or after a 50 ms
  ``latency`` fault (its server-side delay).
* **coalescing**: 100 concurrent lookups of one number not in the cache;
  "requests sent" comes from the double's own request log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, free_port, md_table, pct

NUMBER = "+7 916 123-45-67"  # in the double's demo data: a client with manager ext. 101
PASSWORD = "bench"


def _control(
    root: str, method: str, path: str, body: dict[str, object] | None = None
) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        root + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


async def run(samples: int, root: str, base: str) -> list[list[object]]:
    from callrouter_onec.cache import ResponsibleCache
    from callrouter_onec.client import OneCClient, OneCSettings
    from callrouter_onec.double import DEFAULT_USER

    rows: list[list[object]] = []
    settings = OneCSettings(base, DEFAULT_USER, PASSWORD, timeout=2.0)
    async with OneCClient(settings) as client:
        cache = ResponsibleCache(client)
        answer = await cache.lookup(NUMBER)  # warm: connection open, entry cached
        if answer is None or not answer.found or answer.extension != "101":
            raise SystemExit(f"the double did not answer as its demo data says: {answer}")

        hits = []
        for _ in range(samples * 20):
            t = time.perf_counter_ns()
            await cache.lookup(NUMBER)
            hits.append((time.perf_counter_ns() - t) / 1000)
        hits.sort()
        rows.append(
            [
                "hit (in memory)",
                len(hits),
                f"{pct(hits, 50):.1f} us",
                f"{pct(hits, 95):.1f} us",
                f"{pct(hits, 99):.1f} us",
                "0",
            ]
        )

        for delay in (0, 50):
            _control(
                root,
                "POST",
                "/_double/faults",
                {"global": f"latency={delay / 1000}" if delay else ""},
            )
            _control(root, "DELETE", "/_double/log")
            misses = []
            for _ in range(samples):
                cache.invalidate(NUMBER)
                t = time.perf_counter_ns()
                await cache.lookup(NUMBER, deadline=time.monotonic() + 2)
                misses.append((time.perf_counter_ns() - t) / 1e6)
            misses.sort()
            sent = len(json.loads(json.dumps(_control(root, "GET", "/_double/log")))["requests"])
            rows.append(
                [
                    f"miss, double answers in {delay} ms",
                    len(misses),
                    f"{pct(misses, 50):.2f} ms",
                    f"{pct(misses, 95):.2f} ms",
                    f"{pct(misses, 99):.2f} ms",
                    str(sent),
                ]
            )
        _control(root, "POST", "/_double/faults", {"global": "latency=0.05"})
        for label in ("100 concurrent lookups, one number (50 ms 1C)",):
            cache.invalidate(NUMBER)
            _control(root, "DELETE", "/_double/log")
            t = time.perf_counter()
            answers = await asyncio.gather(
                *(cache.lookup(NUMBER, deadline=time.monotonic() + 2) for _ in range(100))
            )
            took = (time.perf_counter() - t) * 1000
            log = _control(root, "GET", "/_double/log")["requests"]
            assert all(a is not None and a.extension == "101" for a in answers)
            sent = len(log)  # type: ignore[arg-type]
            rows.append(
                [
                    label,
                    100,
                    f"{took:.2f} ms (all)",
                    "-",
                    "-",
                    f"{sent} {'(coalesced)' if sent == 1 else '(NOT coalesced)'}",
                ]
            )
        _control(root, "POST", "/_double/faults", {"global": ""})
        await cache.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "callrouter_onec.double",
            "--port",
            str(port),
            "--password",
            PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _control(root, "GET", "/_double/faults")
                break
            except OSError:
                time.sleep(0.05)
        from callrouter_onec.double import DEFAULT_BASE_PATH

        rows = asyncio.run(run(args.samples, root, root + "/" + DEFAULT_BASE_PATH.strip("/")))
    finally:
        proc.terminate()
        proc.wait(10)
    text = (
        "### 1C lookups (`onec.responsible` through ResponsibleCache and OneCClient, "
        "double in its own process)\n\n"
        + md_table(["case", "lookups", "p50", "p95", "p99", "requests sent to 1C"], rows)
        + "\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "onec.md").write_text(text)


if __name__ == "__main__":
    main()
