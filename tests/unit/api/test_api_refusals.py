"""The audit of refused requests (401) is bounded per client address (issue 16).

An unauthenticated client sending requests in a loop wrote one audit line per
request: the log grew as fast as it could send. Now at most a few lines per
second per address, the rest said in one line; authenticated requests are
audited whole, and the metric counts every request. A clock the test moves.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from router.api.app import build_app
from router.api.auth import hash_token, new_token
from router.api.context import ApiContext
from router.api.refusals import BURST, Refusals
from router.api.settings import ApiSettings, TokenSettings
from router.metrics import Metrics
from router.testing import StubEngine

AUDIT = "router.api.audit"
TOKEN = new_token()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AUDIT]


def _refusals(clock: list[float], **kwargs: int) -> Refusals:
    return Refusals(logging.getLogger(AUDIT), clock=lambda: clock[0], **kwargs)


def test_a_few_401s_a_second_per_address_are_written_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    clock = [100.0]
    refusals = _refusals(clock)
    admitted = [refusals.admit("10.0.0.9") for _ in range(250)]
    assert admitted == [True] * BURST + [False] * (250 - BURST)
    assert refusals.admit("10.0.0.8")  # another address has its own
    assert _lines(caplog) == []
    clock[0] = 100.999
    refusals.tick()
    assert _lines(caplog) == []  # the window has not ended
    clock[0] = 101.0
    assert refusals.admit("10.0.0.9")  # a new window: written again
    assert _lines(caplog) == ["api 245 more 401s from 10.0.0.9 in 1 s, not written one by one"]


def test_a_window_with_nothing_unwritten_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    clock = [0.0]
    refusals = _refusals(clock)
    assert all(refusals.admit("10.0.0.9") for _ in range(BURST))
    clock[0] = 5.0
    refusals.tick()
    assert _lines(caplog) == []
    assert len(refusals) == 0


def test_the_addresses_followed_are_bounded_and_none_goes_unsaid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    clock = [0.0]
    refusals = _refusals(clock, burst=1, max_clients=3)
    for n in range(100):
        address = f"10.0.{n // 256}.{n % 256}"
        assert refusals.admit(address)
        assert not refusals.admit(address)
        assert len(refusals) <= 3
    lines = _lines(caplog)
    assert len(lines) == 97  # every address dropped said its one unwritten 401
    # Dropped at once for a newer address: not a whole second (issue 16).
    assert lines[0] == "api 1 more 401s from 10.0.0.0 in under 0.1 s, not written one by one"
    clock[0] = 1.0
    refusals.tick()
    assert len(_lines(caplog)) == 100
    assert len(refusals) == 0


# -- through the app -------------------------------------------------------------------


async def test_a_401_flood_writes_a_few_lines_and_the_metric_counts_them_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stub = StubEngine(state_dir=tmp_path)
    caplog.set_level(logging.INFO, logger=AUDIT)
    admin = TokenSettings(
        name="admin",
        digest=bytes.fromhex(hash_token(TOKEN).removeprefix("sha256:")),
        allow=("ami:*",),
        extensions=("*",),
        rate=1000,
        burst=1000,
    )
    metrics = Metrics(event_names=())
    app = build_app(ApiContext(stub, ApiSettings(tokens={"admin": admin}), metrics=metrics))
    clock = [50.0]
    app.state.refusals.clock = lambda: clock[0]
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 5555)),
            base_url="http://api.test",
        ) as client:
            for n in range(40):
                headers = {"Authorization": f"Bearer wrong{n}"} if n % 2 else {}
                assert (await client.post("/api/v1/ami/Ping", headers=headers)).status_code == 401
            ok = [
                await client.post("/api/v1/ami/Ping", headers={"Authorization": f"Bearer {TOKEN}"})
                for _ in range(20)
            ]
            assert {r.status_code for r in ok} == {200}
            clock[0] = 51.0
            await client.post("/api/v1/ami/Ping", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        await stub.aclose()
    lines = _lines(caplog)
    refused = [line for line in lines if "status=401" in line]
    assert len(refused) == BURST
    assert len([line for line in lines if "status=200" in line]) == 21  # every one
    assert lines[-2] == f"api {40 - BURST} more 401s from 10.0.0.9 in 1 s, not written one by one"
    assert "status=200" in lines[-1]
    counts = {
        tuple(sorted(sample.labels.items())): sample.value
        for family in metrics.registry.collect()
        if family.name == "callrouter_api_requests"
        for sample in family.samples
        if sample.name == "callrouter_api_requests_total"
    }
    assert counts[(("operation", "ami:Ping"), ("status", "401"))] == 40
    assert counts[(("operation", "ami:Ping"), ("status", "200"))] == 21


async def test_a_flood_that_stopped_is_summed_up_without_another_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The summary was written by the first request after the window: a
    scanner's last burst, with nothing after it, was never said."""
    caplog.set_level(logging.INFO, logger=AUDIT)
    refusals = Refusals(logging.getLogger(AUDIT), window=0.05)
    admitted = [refusals.admit("10.0.0.9") for _ in range(BURST + 3)]
    assert admitted.count(False) == 3
    for _ in range(500):  # the window's end, however slow the host
        if _lines(caplog):
            break
        await asyncio.sleep(0.01)
    assert _lines(caplog) == ["api 3 more 401s from 10.0.0.9 in 0.05 s, not written one by one"]
    assert len(refusals) == 0


async def test_the_apis_stop_says_what_is_owed_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """The window cut short by the stop says the seconds it lasted: "in 3600 s"
    was said of a flood of 2.5 s (issue 16)."""
    caplog.set_level(logging.INFO, logger=AUDIT)
    clock = [10.0]
    refusals = Refusals(logging.getLogger(AUDIT), window=3600.0, clock=lambda: clock[0])
    for _ in range(BURST + 2):
        refusals.admit("10.0.0.9")
    assert refusals.admit("10.0.0.8")  # owes nothing
    clock[0] = 12.5
    refusals.close()
    assert _lines(caplog) == ["api 2 more 401s from 10.0.0.9 in 2.5 s, not written one by one"]
    assert len(refusals) == 0


def test_a_window_dropped_for_a_newer_address_says_how_long_it_lasted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    clock = [0.0]
    refusals = _refusals(clock, burst=1, max_clients=1)
    assert refusals.admit("10.0.0.1")
    assert not refusals.admit("10.0.0.1")
    clock[0] = 0.4
    assert refusals.admit("10.0.0.2")  # the first address is dropped for it
    assert _lines(caplog) == ["api 1 more 401s from 10.0.0.1 in 0.4 s, not written one by one"]


async def test_unknown_paths_and_a_token_over_its_rate_write_a_few_lines_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A path that does not exist needs no token: a loop asking for one wrote
    an audit line per request (1,400 a second, ``token=- status=404``), as a
    token over its rate did per 429. Both now count against the address's
    few lines a second; a request a token was accepted for (its call not
    found, 404) is written whole."""
    stub = StubEngine(state_dir=tmp_path)
    caplog.set_level(logging.INFO, logger=AUDIT)
    reader = TokenSettings(
        name="reader",
        digest=bytes.fromhex(hash_token(TOKEN).removeprefix("sha256:")),
        allow=("calls:read",),
        extensions=("*",),
        rate=1,
        burst=3,
    )
    app = build_app(ApiContext(stub, ApiSettings(tokens={"reader": reader})))
    clock = [50.0]
    app.state.refusals.clock = lambda: clock[0]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 5555)),
            base_url="http://api.test",
        ) as client:
            for n in range(30):
                assert (await client.get(f"/api/v1/nothing/{n}")).status_code == 404
            found = [(await client.get(f"/api/v1/calls/{n}.1", headers=auth)) for n in range(13)]
            assert [r.status_code for r in found] == [404] * 3 + [429] * 10
            clock[0] = 51.0
            assert (await client.get("/api/v1/nothing")).status_code == 404
    finally:
        await stub.aclose()
    lines = _lines(caplog)
    assert len([line for line in lines if "token=- op=- target=- status=404" in line]) == BURST + 1
    assert len([line for line in lines if "token=reader" in line and "status=404" in line]) == 3
    assert not [line for line in lines if "status=429" in line]
    assert f"api {30 - BURST + 10} more 404s, 429s from 10.0.0.9 in 1 s" in lines[-2]
    assert len(lines) == BURST + 3 + 2, lines
