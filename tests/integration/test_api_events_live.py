"""The event feed end to end: sandbox Asterisk, the engine with [api], the 1C double.

A call from a client of the double's demo data is routed by
``onec.responsible`` to ``callrouter-dial,101``. The sandbox has no SIP, so
the test dialplan's phone is a Local channel (``Local/101@test-phones``, which
answers after a short ring and hangs up): the feed counts it as extension 101,
as it counts a queue's ``Local/101@from-queue`` member. Clients long-poll the
real listener over HTTP with real tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from callrouter_onec.double import OneCDouble

from router.api.auth import hash_token
from router.config import Config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.calls import CallPlacer
from router.testing import serving
from tests.integration._live import (
    ONEC_PASSWORD,
    admin_placer,
    example_dialplan_dialing,
    free_port,
    onec_api_config,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).parents[2]
DID = "74951234567"
CALLER = "79161234567"  # the double's «Ромашка», manager Петров at 101
TOKENS = {"t101": ["101"], "t102": ["102"], "all": ["*"]}
PHONES = """
; a phone that rings briefly, answers, talks a moment and hangs up
[test-phones]
exten => _X.,1,Wait(0.3)
 same => n,Answer()
 same => n,Wait(0.5)
 same => n,Hangup()

; a trunk's context that hands its calls to callrouter through a Local
; channel, and a dialplan that rewrites the number before the routing request
[trunk-local]
exten => _X.,1,Dial(Local/${EXTEN}@rewrite-caller)
 same => n,Hangup()
[rewrite-caller]
exten => _X.,1,Set(CALLERID(num)=8${CALLERID(num):1})
 same => n,Goto(callrouter-inbound,${EXTEN},1)

; a caller naming themselves at length (HNAME comes with the Originate)
[hostile]
exten => _X.,1,Set(CALLERID(name)=${HNAME}${HNAME}${HNAME}${HNAME})
 same => n,Goto(callrouter-inbound,${EXTEN},1)
"""


def make_config(box: Sandbox, double: OneCDouble, state: Path, port: int) -> Config:
    tokens = "".join(
        f'[api.tokens.{name}]\nhash = "{hash_token("secret-" + name)}"\n'
        f'allow = ["events:read"]\nextensions = {extensions!r}\nrate = 1000\n'.replace("'", '"')
        for name, extensions in TOKENS.items()
    )
    return onec_api_config(box, double, state, port, password=ONEC_PASSWORD, tokens=tokens)


@pytest.fixture(scope="module")
def events_sandbox(sandbox: Sandbox) -> Sandbox:
    sandbox.set_dialplan(example_dialplan_dialing("test-phones") + PHONES)
    return sandbox


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(
    events_sandbox: Sandbox,
    double: OneCDouble,
    port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Engine]:
    config = make_config(events_sandbox, double, tmp_path_factory.mktemp("feed") / "state", port)
    async with serving(
        Engine(config, plugins=Plugins.load(), options=EngineOptions(watch_interval=0))
    ) as eng:
        yield eng


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placer(events_sandbox: Sandbox) -> AsyncIterator[CallPlacer]:
    async with admin_placer(events_sandbox, ignore_contexts=("callrouter-inbound",)) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module")
async def http(engine: Engine, port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client


async def poll(
    http: httpx.AsyncClient, token: str, cursor: int | None, timeout: float = 10
) -> dict[str, Any]:
    query = f"timeout={timeout:g}" + (f"&cursor={cursor}" if cursor is not None else "")
    response = await http.get(
        f"/api/v1/events?{query}", headers={"Authorization": f"Bearer secret-{token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def start_cursor(http: httpx.AsyncClient, token: str) -> int:
    """Where a client starting now begins: the cursor of an empty, immediate answer."""
    return int((await poll(http, token, None, timeout=0))["cursor"])


async def hung_up_at(http: httpx.AsyncClient, cursor: int, extension: str) -> bool:
    """The feed (a token for every extension) has told a hangup at ``extension``
    since ``cursor``."""
    events = (await poll(http, "all", cursor, timeout=0))["events"]
    return any(e["kind"] == "hangup" and e["extension"] == extension for e in events)


async def test_a_routed_call_rings_at_101_with_the_1c_card_at_a_long_polling_client(
    http: httpx.AsyncClient, placer: CallPlacer, double: OneCDouble
) -> None:
    cursor = await start_cursor(http, "t101")
    waiting = asyncio.create_task(poll(http, "t101", cursor, timeout=20))
    asked_before = len(double.requests("/v1/responsible"))
    call = await placer.place(DID, CALLER)
    await placer.wait_all([call], timeout=15)
    assert call.destination == "callrouter-dial,101"
    body = await asyncio.wait_for(waiting, 25)
    ringing = [e for e in body["events"] if e["kind"] == "ringing"]
    assert ringing, body
    event = ringing[0]
    assert event["extension"] == "101"
    assert event["call_id"]
    assert event["data"]["caller"] == CALLER
    card = event["data"]["card"]
    assert "Ромашка" in str(card), card  # the client 1C named when routing
    assert "Петров" in str(card), card
    # One 1C request served routing and the screen pop.
    assert len(double.requests("/v1/responsible")) - asked_before <= 1


async def test_a_client_that_disconnects_and_resumes_gets_every_event_exactly_once(
    http: httpx.AsyncClient, placer: CallPlacer
) -> None:
    start = await start_cursor(http, "t101")
    calls = [await placer.place(DID, CALLER) for _ in range(3)]
    await placer.wait_all(calls, timeout=15)

    received: list[int] = []
    cursor = start
    hangups = 0
    for attempt in range(200):
        if attempt % 2:
            # Drop the connection mid-wait, as a 1C job killed by a restart would.
            dropped = asyncio.create_task(poll(http, "t101", cursor, timeout=20))
            await asyncio.sleep(0.05)
            dropped.cancel()
            continue
        body = await poll(http, "t101", cursor, timeout=5)
        received += [e["cursor"] for e in body["events"]]
        hangups += sum(e["kind"] == "hangup" for e in body["events"])
        cursor = body["cursor"]
        if hangups >= len(calls):
            break
    assert hangups >= len(calls)
    # The reference: everything for 101 since start, read in one go by a token for all.
    everything = await poll(http, "all", start, timeout=0)
    reference = [e["cursor"] for e in everything["events"] if e["extension"] == "101"]
    assert received == reference[: len(received)]
    assert len(received) == len(set(received))
    kinds = [e["kind"] for e in everything["events"] if e["extension"] == "101"]
    for kind in ("ringing", "answered", "hangup"):
        assert kinds.count(kind) >= len(calls), kinds


async def test_a_token_for_102_never_sees_101s_events(
    http: httpx.AsyncClient, placer: CallPlacer
) -> None:
    start = await start_cursor(http, "t102")
    everyone = await start_cursor(http, "all")
    call = await placer.place(DID, CALLER)
    await placer.wait_all([call], timeout=15)
    # The phone hangs up within about a second: the feed has told the whole call.
    await until(lambda: hung_up_at(http, everyone, "101"), 15, "the call's hangup in the feed")
    body = await poll(http, "t102", start, timeout=0)
    assert [e for e in body["events"] if e["extension"] != "102"] == []
    refused = await http.get(
        "/api/v1/events?timeout=0&extension=101",
        headers={"Authorization": "Bearer secret-t102"},
    )
    assert refused.status_code == 403


async def test_a_callers_name_of_4000_characters_is_cut_in_every_event(
    http: httpx.AsyncClient, placer: CallPlacer
) -> None:
    """Issue 16: Asterisk keeps a caller ID whole, and so did the feed: each
    event of such a call held the 4,000-character name (10,000 events: some
    40 MB). callrouter cuts it to 500 characters where it enters."""
    start = await start_cursor(http, "all")
    await placer.client.send(
        "Originate",
        {
            "Channel": f"Local/{DID}@hostile",
            "Application": "Wait",
            "Data": "20",
            "CallerID": CALLER,
            "Async": "true",
            "Variable": [f"HNAME={'L' * 1000}"],
        },
        validate=False,
    )
    events: list[dict[str, Any]] = []
    cursor = start
    for _ in range(20):
        body = await poll(http, "all", cursor, timeout=5)
        events += body["events"]
        cursor = body["cursor"]
        named = [e for e in events if e["data"].get("caller_name", "").startswith("L")]
        if named and any(
            e["kind"] == "hangup" and e["call_id"] == named[0]["call_id"] for e in events
        ):
            break
    assert named, events
    call = named[0]["call_id"]
    ringing = [e for e in events if e["call_id"] == call and e["kind"] == "ringing"]
    assert ringing, events
    assert ringing[0]["data"]["caller_name"] == "L" * 499 + "…"
    assert ringing[0]["data"]["caller"] == CALLER
    for event in events:
        if event["call_id"] == call:
            assert event["data"].get("caller_name", "") in ("", "L" * 499 + "…"), event["kind"]
    # The hangup names the caller as the ringing did: the name was set by the
    # dialplan after the channel appeared without one (NewCallerid).
    hangups = [e for e in events if e["call_id"] == call and e["kind"] == "hangup"]
    assert hangups, events
    assert {e["data"]["caller_name"] for e in hangups} == {"L" * 499 + "…"}


async def test_a_call_a_trunk_hands_over_through_a_local_channel_has_its_rewritten_number(
    http: httpx.AsyncClient, events_sandbox: Sandbox
) -> None:
    """Issue 16: a trunk's context that dials ``Local/${EXTEN}@...`` on to
    callrouter-inbound rings that Local channel first (``DialBegin``), and the
    call kept the trunk's number from then on: the feed said ``79161234567``
    for a call routed with the ``89161234567`` its dialplan set. The routing
    request from the Local channel's ``;2`` half is the caller's."""
    start = await start_cursor(http, "all")
    async with admin_placer(events_sandbox, inbound_context="trunk-local") as trunk:
        placed = await trunk.place(DID, CALLER)
        # The call's Linkedid: the Uniqueid of its first channel, the Originate's.
        call_id = placed.uniqueid.removesuffix("-in") + "-out"
        events: list[dict[str, Any]] = []
        cursor = start
        for _ in range(20):
            body = await poll(http, "all", cursor, timeout=5)
            events += [e for e in body["events"] if e["call_id"] == call_id]
            cursor = body["cursor"]
            if any(e["kind"] == "hangup" for e in events):
                break
    mine = [e for e in events if e["extension"] == "101"]
    kinds = [e["kind"] for e in mine]
    assert "ringing" in kinds, events
    assert "hangup" in kinds, events
    assert {e["data"]["caller"] for e in mine} == {"8" + CALLER[1:]}, mine


async def test_a_client_resumes_across_a_router_restart_and_loses_nothing(
    events_sandbox: Sandbox,
    double: OneCDouble,
    placer: CallPlacer,
    engine: Engine,
    tmp_path: Path,
) -> None:
    """The feed is kept in state_dir: a second router on the same state_dir
    answers a client's old cursor with exactly the events it had not read, and
    with gap true (once): what happened while no router ran is not in the feed
    (issue 16: a 1C panel kept a call that had ended meanwhile)."""
    port = free_port()
    config = make_config(events_sandbox, double, tmp_path / "state", port)
    first = Engine(config, plugins=Plugins.load(), options=EngineOptions(watch_interval=0))
    await first.start()
    task = asyncio.ensure_future(first.serve())
    await asyncio.wait_for(first.ready.wait(), 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        start = await start_cursor(http, "t101")
        call = await placer.place(DID, CALLER)
        await placer.wait_all([call], timeout=15)
        body = await poll(http, "t101", start, timeout=10)
        assert body["events"], "no event before the restart"
        read_cursor = body["events"][0]["cursor"]  # the client read only the first one
        seen, kinds = start, set()
        for _ in range(20):  # let the call end (the phone hangs up after ~1 s)
            page = await poll(http, "all", seen, timeout=2)
            kinds |= {e["kind"] for e in page["events"]}
            seen = page["cursor"]
            if "hangup" in kinds:
                break
        before = [e["cursor"] for e in (await poll(http, "all", start, timeout=0))["events"]]
    first.request_stop()
    await asyncio.wait_for(task, 30)
    await first.stop()

    second = Engine(config, plugins=Plugins.load(), options=EngineOptions(watch_interval=0))
    await second.start()
    task = asyncio.ensure_future(second.serve())
    await asyncio.wait_for(second.ready.wait(), 10)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            resumed = await poll(http, "t101", read_cursor, timeout=0)
            everything = await poll(http, "all", start, timeout=0)
            again = await poll(http, "t101", resumed["cursor"], timeout=0)
    finally:
        second.request_stop()
        await asyncio.wait_for(task, 30)
        await second.stop()
    assert resumed["gap"]  # the restart: told on the answer that passes it
    assert everything["gap"]
    assert not again["gap"]  # once
    twice = {e["cursor"] for e in again["events"]} & {e["cursor"] for e in resumed["events"]}
    assert not twice
    kept = [e["cursor"] for e in everything["events"]]
    assert kept[: len(before)] == before  # nothing lost in the restart
    mine = [e["cursor"] for e in everything["events"] if e["extension"] == "101"]
    assert [e["cursor"] for e in resumed["events"]] == [c for c in mine if c > read_cursor]
    assert {e["kind"] for e in resumed["events"]} >= {"hangup"}
