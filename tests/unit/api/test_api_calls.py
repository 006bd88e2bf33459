"""Click-to-call, the live calls, hangup and transfer (issue 13), over the replay Asterisk.

The app runs on a real engine's EngineAPI (the engine on the replay), so the
click-to-call's progress is what the engine's event flow tells it, as live.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from router.api.app import build_app
from router.api.calls import IdempotencyKeys, Origination, Originations
from router.api.context import ApiContext
from router.api.dial_settings import DialSettings
from router.api.settings import ApiSettings, TokenSettings
from tests.unit.waiting import eventually

if TYPE_CHECKING:
    from router.engine import Engine
    from router.testing import EngineFactory, ReplayAsterisk
    from router.testing.replay import SentAction

pytest_plugins = ["router.testing"]

TOKENS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "t101": (("calls:create", "calls:read", "calls:hangup", "calls:transfer"), ("101",)),
    "all": (("calls:create", "calls:read", "calls:hangup", "calls:transfer"), ("*",)),
    "reader": (("calls:read",), ("*",)),
}

RULES = """version: 1
rules:
  - name: to-102
    on: call
    if: did == "74950000002"
    do:
      - redirect: {context: callrouter-dial, exten: "102"}
"""

DIALING = DialSettings(
    originate_channel="PJSIP/{extension}",
    outbound_context="outbound",
    dial_prefix="9",
    caller_id="Call {number} <{extension}>",
    originate_timeout=25,
    variables=MappingProxyType({"CALL_SOURCE": "1c"}),
)


def _token(name: str, allow: tuple[str, ...], extensions: tuple[str, ...]) -> TokenSettings:
    digest = hashlib.sha256(f"secret-{name}".encode()).digest()
    return TokenSettings(name, digest, allow, extensions, rate=1000.0, burst=1000)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


def settings(**overrides: Any) -> ApiSettings:
    tokens = {name: _token(name, *grants) for name, grants in TOKENS.items()}
    return ApiSettings(tokens=MappingProxyType(tokens), dialing=DIALING, **overrides)


@pytest.fixture
async def engine(engine_factory: EngineFactory, tmp_path: Path) -> Engine:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    # Configured as the API is in production ([api] on), so the engine asks
    # for the events the API reads (router.ami.event_filter API_EVENTS).
    return await engine_factory(rules, api=settings(port=0))


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(ApiContext(engine=engine.api, settings=settings()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        yield client


@pytest.fixture
async def patient_client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    """:func:`client` with an ``ami_timeout`` no loaded machine reaches: for the
    tests that hold an Originate until the requests racing it wait, where 1 s
    of a starved loop answered the first 503 (the call "may still be placed")."""
    app = build_app(ApiContext(engine=engine.api, settings=settings(ami_timeout=30)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        yield client


class TakenKeys:
    """Counts the requests that found their Idempotency-Key taken: each such
    request then waits for the send holding the key or answers with its call
    (``create`` does not await between the look and either), so a test holds an
    Originate until the requests racing it are there, without a wall-clock sleep."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.found = 0
        self._waits: dict[int, asyncio.Event] = {}
        real = IdempotencyKeys.lookup

        def lookup(keys: IdempotencyKeys, token: str, key: str, fingerprint: str) -> str | None:
            known = real(keys, token, key, fingerprint)
            if known is not None:
                self.found += 1
                for times, event in self._waits.items():
                    if self.found >= times:
                        event.set()
            return known

        monkeypatch.setattr(IdempotencyKeys, "lookup", lookup)

    async def reached(self, times: int) -> None:
        """Once the key was found taken ``times`` times (a hang guard of 30 s)."""
        event = self._waits.setdefault(times, asyncio.Event())
        if self.found >= times:
            event.set()
        await asyncio.wait_for(event.wait(), 30)


CallEvents = Callable[..., None]


def originated(replay: ReplayAsterisk, call_id: str, action_id: str) -> None:
    """What Asterisk reports for a click-to-call from 101: the phone's channel, its
    answer, the dial out."""
    replay.queue_event(
        Event="Newchannel",
        Channel="PJSIP/101-00000001",
        ChannelState="5",
        ChannelStateDesc="Ringing",
        CallerIDNum="101",
        Context="outbound",
        Exten="979161234567",
        Priority="1",
        Uniqueid=call_id,
        Linkedid=call_id,
    )
    replay.queue_event(
        Event="OriginateResponse",
        ActionID=action_id,
        Response="Success",
        Channel="PJSIP/101-00000001",
        Context="outbound",
        Exten="979161234567",
        Reason="4",
        Uniqueid=call_id,
    )
    replay.queue_event(
        Event="DialBegin",
        Channel="PJSIP/101-00000001",
        DestChannel="PJSIP/trunk-00000002",
        Uniqueid=call_id,
        Linkedid=call_id,
        DialString="trunk/79161234567",
    )


async def test_click_to_call_originates_the_manager_first_then_the_number(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    response = await client.post(
        "/api/v1/calls",
        json={"from": "101", "to": "+7 916 123-45-67", "variables": {"CRM_ID": "42"}},
        headers=auth("t101"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    call_id = body["id"]
    assert body["state"] == "originating"
    assert body["click_to_call"]["to"] == "79161234567"
    assert response.headers["location"] == f"/api/v1/calls/{call_id}"
    [sent] = ajam_replay.sent("Originate")
    assert sent.get("Channel") == "PJSIP/101"
    assert sent.get("Context") == "outbound"
    assert sent.get("Exten") == "979161234567"  # dial_prefix + the plan's normal form
    assert sent.get("Priority") == "1"
    assert sent.get("CallerID") == "Call 79161234567 <101>"
    assert sent.get("Timeout") == "25000"
    assert sent.get("Async") == "true"
    assert sent.get("ChannelId") == call_id
    assert sorted(sent.getall("Variable")) == ["CALL_SOURCE=1c", "CRM_ID=42"]
    action_id = sent.action_id
    assert action_id is not None

    # Progress comes from the events, not from the action's response.
    originated(ajam_replay, call_id, action_id)
    await ajam_replay.settle(engine)
    shown = (await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))).json()
    assert shown["state"] == "dialing"
    assert [p["event"] for p in shown["click_to_call"]["progress"]] == [
        "Newchannel",
        "OriginateResponse",
        "DialBegin",
    ]
    assert shown["channels"][0]["name"] == "PJSIP/101-00000001"
    assert "101" in shown["extensions"]


async def test_an_ended_click_to_call_the_manager_answered_still_says_answered(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """docs/api.md: GET /calls/{id} knows a click-to-call after it ends. Seen on the
    sandbox: a call 101 answered and talked on read "answered": true while it was up,
    then "answered": false once its channels had hung up, to a 1C that polls it."""
    response = await client.post(
        "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
    )
    call_id = response.json()["id"]
    [sent] = ajam_replay.sent("Originate")
    originated(ajam_replay, call_id, sent.action_id or "")
    for channel in ("PJSIP/101-00000001", "PJSIP/trunk-00000002"):
        ajam_replay.queue_event(
            Event="Hangup", Channel=channel, Uniqueid=call_id, Linkedid=call_id, Cause="16"
        )
    await ajam_replay.settle(engine)
    shown = (await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))).json()
    assert shown["state"] == "ended"
    assert shown["channels"] == []
    assert shown["answered"] is True


async def test_an_ended_click_to_call_nobody_answered_says_not_answered(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    response = await client.post(
        "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
    )
    call_id = response.json()["id"]
    [sent] = ajam_replay.sent("Originate")
    ajam_replay.queue_event(
        Event="OriginateResponse",
        ActionID=sent.action_id or "",
        Response="Failure",
        Channel="PJSIP/101",
        Reason="5",
        Uniqueid=call_id,
    )
    await ajam_replay.settle(engine)
    shown = (await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))).json()
    assert shown["state"] == "failed"
    assert shown["answered"] is False


async def test_the_201_is_the_call_as_queued_when_asterisk_tells_its_progress_first(
    patient_client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Asterisk may report the call's channels before it answers the Originate (seen
    live under load): the 201 still says what docs/api.md promises, "originating",
    and the progress is the GET's to show."""

    # Told after the API's own listener (its app was built first): once the
    # DialBegin is here, the call's progress is folded.
    told: list[str] = []
    engine.api.watch(lambda item, call: told.append(getattr(item, "name", "")))

    async def faster(sent: SentAction) -> dict[str, str]:
        call_id, action_id = sent.get("ChannelId") or "", sent.action_id or ""
        originated(ajam_replay, call_id, action_id)
        # The whole batch folded before the answer: waited for, not 50 ms (issue 16).
        await eventually(lambda: "DialBegin" in told, "the call's progress before the answer")
        return {}

    ajam_replay.on("Originate", faster)
    response = await patient_client.post(
        "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
    )
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "originating"
    assert response.json()["click_to_call"]["progress"] == []
    call_id = response.json()["id"]
    shown = (await patient_client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))).json()
    assert shown["state"] == "dialing"  # the race did happen: the call had moved on


async def test_click_to_call_failure_is_shown_with_asterisks_reason(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    response = await client.post(
        "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
    )
    call_id = response.json()["id"]
    [sent] = ajam_replay.sent("Originate")
    ajam_replay.queue_event(
        Event="OriginateResponse",
        ActionID=sent.action_id or "",
        Response="Failure",
        Channel="PJSIP/101",
        Reason="5",
        Uniqueid="<null>",
    )
    await ajam_replay.settle(engine)
    shown = (await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))).json()
    assert shown["state"] == "failed"
    assert shown["click_to_call"]["reason"] == "busy"


async def test_an_originate_failure_reason_no_asterisk_sends_is_cut(
    engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Asterisk's ``Reason`` is a number (``AST_CONTROL_*``); one it does not
    name was kept as it came, in the call (kept for 1,000 calls a token) and in
    the feed's ``click_to_call``: a hostile AMI peer's 60 KB each (issue 16)."""
    from router.api.feed import EventFeed

    feed = EventFeed()
    app = build_app(ApiContext(engine=engine.api, settings=settings(), feed=feed))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        response = await client.post(
            "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
        )
        call_id = response.json()["id"]
        [sent] = ajam_replay.sent("Originate")
        ajam_replay.queue_event(
            Event="OriginateResponse",
            ActionID=sent.action_id or "",
            Response="Failure",
            Channel="PJSIP/101",
            Reason="9" * 60_000,
            Uniqueid="<null>",
        )
        await ajam_replay.settle(engine)
        shown = (await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))).json()
    assert shown["state"] == "failed"
    assert len(shown["click_to_call"]["reason"]) <= 500
    told = [e for e in feed.read(0, limit=1000).events if e.kind == "click_to_call"]
    assert [e.data["state"] for e in told] == ["failed"]
    assert len(told[0].data["reason"]) <= 500


async def test_a_token_for_101_may_not_originate_from_102(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    response = await client.post(
        "/api/v1/calls", json={"from": "102", "to": "89161234567"}, headers=auth("t101")
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "102" in response.json()["detail"]
    denied = await client.post(
        "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("reader")
    )
    assert denied.status_code == 403
    assert denied.json()["missing_permission"] == "calls:create"
    assert ajam_replay.count("Originate") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": "101&Local/666@evil", "to": "89161234567"}, "from"),
        ({"from": "101,5,U(x)", "to": "89161234567"}, "from"),
        ({"from": 101, "to": "89161234567"}, "from"),
        ({"from": "101", "to": "call me"}, "to"),
        ({"from": "101", "to": "8916\r\nAction: Command"}, "to"),
        ({"from": "101", "to": "89161234567", "variables": {"A": "x\r\nAction: Command"}}, None),
        ({"from": "101", "to": "89161234567", "variables": {"A": "1,EVIL=2"}}, None),
        ({"from": "101", "to": "89161234567", "variables": {"1BAD": "x"}}, None),
        ({"from": "101", "to": "89161234567", "variables": ["A=1"]}, "variables"),
        ({"from": "101", "to": "89161234567", "colour": "red"}, "colour"),
        ({"to": "89161234567"}, "from"),
        ({"from": "101"}, "to"),
    ],
)
async def test_untrusted_values_are_refused_with_400_naming_the_field(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk, body: dict[str, Any], field: str | None
) -> None:
    response = await client.post("/api/v1/calls", json=body, headers=auth("all"))
    assert response.status_code == 400, response.text
    problem = response.json()
    if field is None:
        assert problem["field"].startswith("variables.")
    else:
        assert problem["field"] == field
    assert ajam_replay.count("Originate") == 0


async def test_malformed_json_is_400_naming_the_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/calls",
        content=b'{"from": "101", "to": }',
        headers={**auth("all"), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["detail"]


async def test_the_same_idempotency_key_makes_one_call(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-17"}
    first = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    again = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert ajam_replay.count("Originate") == 1
    other = await client.post(
        "/api/v1/calls", json={"from": "101", "to": "89160000000"}, headers={**auth("t101"), **key}
    )
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key"
    # Keys are per token: another token's same key is another call.
    separate = await client.post("/api/v1/calls", json=body, headers={**auth("all"), **key})
    assert separate.status_code == 201
    assert separate.json()["id"] != first.json()["id"]
    assert ajam_replay.count("Originate") == 2


async def test_a_failed_originate_frees_its_idempotency_key(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    ajam_replay.on("Originate", lambda sent: [("Response", "Error"), ("Message", "No such")])
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "retry-me"}
    refused = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    assert refused.status_code == 409
    assert "Originate" in refused.json()["detail"]
    ajam_replay.on("Originate", lambda sent: None)
    retried = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    assert retried.status_code == 201


async def test_an_originate_asterisk_answers_late_keeps_its_idempotency_key(
    engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Before: an Originate past ``ami_timeout`` (a loaded Asterisk, which still
    places the call) freed its key as a refusal does, so 1C's retry after its own
    timeout rang the manager a second time."""
    release = asyncio.Event()

    async def late(sent: SentAction) -> None:
        await release.wait()

    ajam_replay.on("Originate", late)
    app = build_app(ApiContext(engine=engine.api, settings=settings(ami_timeout=0.2)))
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-1017-call-1"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        first = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        assert first.status_code == 503
        problem = first.json()
        call_id = problem["call_id"]
        assert call_id.startswith("c2c-")
        assert "may still be placed" in problem["detail"]
        assert first.headers["retry-after"] == "1"
        retried = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        assert retried.status_code == 200
        assert retried.json()["id"] == call_id
        assert retried.headers["idempotent-replayed"] == "true"
        assert ajam_replay.count("Originate") == 1
        # The call is still followed: GET answers it (not 404).
        got = await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))
        assert got.status_code == 200
        release.set()


async def test_a_late_originate_never_carried_out_fails_after_it_would_have_rung_out(
    engine: Engine, ajam_replay: ReplayAsterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: an Originate Asterisk did not answer within ``ami_timeout`` and
    never placed stayed ``originating`` for ever: in ``GET /calls/{id}``, in the
    replay of its Idempotency-Key, and 1C's panel got no end in the feed. Past
    ``originate_timeout`` + ``ami_timeout`` + a margin it is ``failed``."""
    monkeypatch.setattr("router.api.calls._GIVE_UP_MARGIN", 0.3, raising=False)
    release = asyncio.Event()

    async def late(sent: SentAction) -> None:
        await release.wait()

    ajam_replay.on("Originate", late)
    dialing = replace(DIALING, originate_timeout=1)
    app = build_app(
        ApiContext(engine=engine.api, settings=replace(settings(ami_timeout=0.2), dialing=dialing))
    )
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-1017-call-2"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        first = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        assert first.status_code == 503
        call_id = first.json()["call_id"]
        got = await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))
        assert got.json()["click_to_call"]["state"] == "originating"
        await asyncio.sleep(1.2 + 0.3 + 0.3)
        got = await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))
        view = got.json()["click_to_call"]
        assert (view["state"], view["reason"]) == ("failed", "Asterisk showed no sign of the call")
        retried = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        assert retried.status_code == 200
        assert retried.json()["state"] == "failed"
        assert ajam_replay.count("Originate") == 1
        release.set()


async def test_a_call_given_up_on_comes_back_when_asterisk_carries_it_out_late(
    engine: Engine, ajam_replay: ReplayAsterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``failed`` (no sign of the call) was for good. An Originate a
    loaded Asterisk carried out after the margin rang the manager while the
    API, the Idempotency-Key's replay and the feed said ``failed``. Now the
    call's first event brings it back: its state follows the real call, and
    the feed tells the change."""
    from router.api.feed import EventFeed

    monkeypatch.setattr("router.api.calls._GIVE_UP_MARGIN", 0.3, raising=False)
    release = asyncio.Event()

    async def late(sent: SentAction) -> None:
        await release.wait()

    ajam_replay.on("Originate", late)
    dialing = replace(DIALING, originate_timeout=1)
    feed = EventFeed()
    app = build_app(
        ApiContext(
            engine=engine.api,
            settings=replace(settings(ami_timeout=0.2), dialing=dialing),
            feed=feed,
        )
    )
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-1017-call-3"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        first = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        assert first.status_code == 503
        call_id = first.json()["call_id"]
        await asyncio.sleep(1.2 + 0.3 + 0.3)
        got = await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))
        assert got.json()["click_to_call"]["state"] == "failed"

        [sent] = ajam_replay.sent("Originate")
        originated(ajam_replay, call_id, sent.action_id or "")  # carried out after all
        release.set()
        await ajam_replay.settle(engine)
        got = await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))
        view = got.json()["click_to_call"]
        assert (view["state"], view["reason"]) == ("dialing", None)
        retried = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        assert retried.json()["state"] == "dialing"
        assert ajam_replay.count("Originate") == 1
    told = [
        (e.data["state"], e.data["reason"])
        for e in feed.read(0).events
        if e.kind == "click_to_call"
    ]
    assert told == [
        ("failed", "Asterisk showed no sign of the call"),
        ("ringing", None),
        ("answered", None),
        ("dialing", None),
    ]


def test_a_call_given_up_on_and_then_refused_by_asterisk_keeps_asterisk_s_reason() -> None:
    """A late ``OriginateResponse`` failure after the give-up: still ``failed``,
    now with Asterisk's reason, told again in the feed; a real failure is not
    brought back by a later event."""
    from router.ami.message import Event
    from router.api.feed import EventFeed

    feed = EventFeed()
    originations = Originations(feed)
    origination = Origination(
        id="c1",
        action_id="a1",
        extension="101",
        number="79161234567",
        dial="979161234567",
        created=0.0,
    )
    originations.add(origination)
    originations.give_up("c1")
    assert (origination.state, origination.reason) == (
        "failed",
        "Asterisk showed no sign of the call",
    )
    answer = {"Event": "OriginateResponse", "ActionID": "a1", "Response": "Failure", "Reason": "5"}
    originations.observe(Event(answer.items()), None)
    assert (origination.state, origination.reason) == ("failed", "busy")
    told = [(e.data["state"], e.data["reason"]) for e in feed.read(0).events]
    assert told == [("failed", "Asterisk showed no sign of the call"), ("failed", "busy")]
    channel = {"Event": "Newchannel", "Channel": "PJSIP/101-1", "Linkedid": "c1"}
    originations.observe(Event(channel.items()), None)
    assert origination.state == "failed"
    assert len(feed.read(0).events) == 2


async def test_a_retry_racing_a_refused_originate_is_not_told_the_call_was_made(
    patient_client: httpx.AsyncClient,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a retry (1C's client timing out first) that came while the first
    request's Originate was out was answered 200 with that call at once; Asterisk
    then refused it, so the retry's 200 named a call never placed (its GET 404)."""
    client = patient_client
    out, taken = asyncio.Event(), TakenKeys(monkeypatch)
    # The first Originate is refused once the retry found its key taken; the
    # retry's own at once.
    held = iter([1])

    async def refused(sent: SentAction) -> list[tuple[str, str]]:
        out.set()
        await taken.reached(next(held, 0))
        return [("Response", "Error"), ("Message", "Extension does not exist.")]

    ajam_replay.on("Originate", refused)
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-18"}
    first = asyncio.ensure_future(
        client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    )
    await asyncio.wait_for(out.wait(), 30)  # the first Originate is out
    retried = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    answered = await first
    assert answered.status_code == 409, answered.text
    # The retry waited for the first's answer: refused, the key was free, so it
    # tried for itself (and was refused too), never told of a call that is not.
    assert retried.status_code == 409, retried.text
    assert ajam_replay.count("Originate") == 2


async def test_two_retries_racing_a_refused_originate_are_not_told_the_call_was_made(
    patient_client: httpx.AsyncClient,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hreview35: two retries waited for the first request's answer; refused, the
    first woken placed the call again, and the second, finding the key taken by
    that try, was answered 200 with it at once: refused as well, a call never
    placed. Each retry waits for whichever send holds the key."""
    client = patient_client
    out, taken = asyncio.Event(), TakenKeys(monkeypatch)
    # Each Originate is refused once the race it stages is on: the first's once
    # both retries found the key taken, the first woken's try once the other
    # found the key taken by it, the last at once.
    held = iter([2, 3])

    async def refused(sent: SentAction) -> list[tuple[str, str]]:
        out.set()
        await taken.reached(next(held, 0))
        return [("Response", "Error"), ("Message", "Extension does not exist.")]

    ajam_replay.on("Originate", refused)
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-18b"}

    def post() -> asyncio.Future[httpx.Response]:
        return asyncio.ensure_future(
            client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
        )

    first = post()
    await asyncio.wait_for(out.wait(), 30)  # the first Originate is out
    retries = [post(), post()]
    answered = await first
    assert answered.status_code == 409, answered.text
    answers = [await retry for retry in retries]
    assert [answer.status_code for answer in answers] == [409, 409], [a.text for a in answers]
    assert ajam_replay.count("Originate") == 3


async def test_a_request_that_fails_before_its_originate_leaves_no_retry_waiting(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key and its pending send were registered before the call's view was
    built: anything raising there left the key taken by a send that never
    happens, and every retry with it waited for ever. Registered only next to the
    send, a retry places the call."""
    from router.api import calls

    real = calls._call_view
    failures = iter([RuntimeError("a view that cannot be built")])

    def once_broken(*args: Any, **kwargs: Any) -> Any:
        for error in failures:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(calls, "_call_view", once_broken)
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-19"}
    first = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    assert first.status_code == 500
    assert ajam_replay.count("Originate") == 0
    retried = await asyncio.wait_for(
        client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key}), 5
    )
    assert retried.status_code == 201, retried.text
    assert ajam_replay.count("Originate") == 1


async def test_a_retry_racing_the_originate_gets_the_call_once_asterisk_queued_it(
    patient_client: httpx.AsyncClient,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = patient_client
    out, taken = asyncio.Event(), TakenKeys(monkeypatch)

    async def slow(sent: SentAction) -> None:
        out.set()
        await taken.reached(1)  # queued once the retry found the key taken

    ajam_replay.on("Originate", slow)
    body = {"from": "101", "to": "89161234567"}
    key = {"Idempotency-Key": "order-19"}
    first = asyncio.ensure_future(
        client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    )
    await asyncio.wait_for(out.wait(), 30)  # the first Originate is out
    retried = await client.post("/api/v1/calls", json=body, headers={**auth("t101"), **key})
    placed = await first
    assert (placed.status_code, retried.status_code) == (201, 200)
    assert retried.json()["id"] == placed.json()["id"]
    assert ajam_replay.count("Originate") == 1


async def test_503_at_once_when_asterisk_is_not_connected(tmp_path: Path) -> None:
    from router.testing import StubEngine

    stub = StubEngine(state_dir=tmp_path, connected=False)
    app = build_app(ApiContext(engine=stub, settings=settings()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        response = await client.post(
            "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert stub.replay.count("Originate") == 0


async def inbound_to(
    replay: ReplayAsterisk, engine: Engine, extension: str, did: str, *, answered: bool = True
) -> tuple[str, str]:
    """An inbound call now talking to ``extension`` (or still ringing there, with
    ``answered=False``): (linkedid, the phone's channel)."""
    trunk = replay.inbound_call(caller="+79161234567", did=did)
    await replay.settle(engine)
    call = engine.api.calls.by_channel(trunk)
    assert call is not None
    phone = f"PJSIP/{extension}-0000{len(replay.channels):04d}"
    replay.queue_event(
        Event="Newchannel",
        Channel=phone,
        ChannelState="5",
        ChannelStateDesc="Ringing",
        CallerIDNum=extension,
        Context="from-internal",
        Exten=extension,
        Priority="1",
        Uniqueid=f"{call.linkedid}.{extension}",
        Linkedid=call.linkedid,
    )
    # Answered: the ``Newstate`` Asterisk sends before the DialEnd 1C hears as
    # ``answered`` (a leg still ringing is refused a transfer at once). Not yet
    # bridged: a test that needs its bridge queues the ``BridgeEnter``.
    if answered:
        replay.queue_event("Newstate", Channel=phone, ChannelState="6", ChannelStateDesc="Up")
    await replay.settle(engine)
    return call.linkedid, phone


async def test_calls_are_listed_only_to_tokens_that_see_an_extension_of_theirs(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    mine, _ = await inbound_to(ajam_replay, engine, "101", "74950000001")
    theirs, _ = await inbound_to(ajam_replay, engine, "102", "74950000002")
    listed = (await client.get("/api/v1/calls", headers=auth("t101"))).json()["calls"]
    assert [c["id"] for c in listed] == [mine]
    assert listed[0]["caller"] == "+79161234567"
    assert listed[0]["did"] == "74950000001"
    everyone = (await client.get("/api/v1/calls", headers=auth("all"))).json()["calls"]
    assert {c["id"] for c in everyone} == {mine, theirs}
    routed = next(c for c in everyone if c["id"] == theirs)
    assert routed["rule"] == "to-102"  # the decision record of the call
    assert routed["outcome"] == "executed"
    assert "102" in routed["extensions"]
    hidden = await client.get(f"/api/v1/calls/{theirs}", headers=auth("t101"))
    assert hidden.status_code == 404  # not 403: another's call does not exist for this token
    assert (await client.get("/api/v1/calls/nope", headers=auth("all"))).status_code == 404


async def test_hangup_hangs_up_every_live_channel_of_a_visible_call(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    theirs, _ = await inbound_to(ajam_replay, engine, "102", "74950000003")
    refused = await client.post(f"/api/v1/calls/{theirs}/hangup", headers=auth("t101"))
    assert refused.status_code == 404
    assert ajam_replay.count("Hangup") == 0
    done = await client.post(f"/api/v1/calls/{mine}/hangup", headers=auth("t101"))
    assert done.status_code == 202
    assert phone in done.json()["hung_up"]
    hung = {a.get("Channel") for a in ajam_replay.sent("Hangup")}
    assert hung == set(done.json()["hung_up"])
    assert len(hung) == 2  # the trunk and the phone


async def test_hangup_of_a_bridged_call_is_202_when_the_peer_went_with_the_first_leg(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Hanging up one leg of a bridged call ends its peer too (seen on the sandbox):
    the next Hangup then finds no such channel. That is the request done, not a 409."""
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    hung: list[str] = []

    def hangup(sent: SentAction) -> list[tuple[str, str]] | None:
        if hung:
            return [("Response", "Error"), ("Message", "No such channel")]
        hung.append(sent.get("Channel") or "")
        return None

    ajam_replay.on("Hangup", hangup)
    done = await client.post(f"/api/v1/calls/{mine}/hangup", headers=auth("t101"))
    assert done.status_code == 202, done.text
    assert phone in done.json()["hung_up"]
    assert ajam_replay.count("Hangup") == 2


async def test_hangup_is_409_when_asterisk_has_none_of_the_calls_channels(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    mine, _ = await inbound_to(ajam_replay, engine, "101", "74950000001")
    ajam_replay.on("Hangup", lambda sent: [("Response", "Error"), ("Message", "No such channel")])
    refused = await client.post(f"/api/v1/calls/{mine}/hangup", headers=auth("t101"))
    assert refused.status_code == 409
    assert refused.json()["detail"] == "Asterisk refused Hangup: No such channel"


async def test_hangup_needs_a_live_leg_of_the_tokens_extension_not_one_that_left(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """A leg that hung up keeps the call visible (it was 101's), never in 101's hands.

    A queue rang 101 and 102; 101 stopped ringing, 102 answered and talks to the
    customer. The call still lists 101's old leg, and once that let 101's token
    hang up 102's conversation by naming the call's id.
    """
    call_id, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    ajam_replay.queue_event(
        Event="Hangup",
        Channel=phone,
        Uniqueid=f"{call_id}.101",
        Linkedid=call_id,
        Cause="26",
    )
    await ajam_replay.settle(engine)
    ajam_replay.queue_event(
        Event="Newchannel",
        Channel="PJSIP/102-00000009",
        ChannelState="6",
        ChannelStateDesc="Up",
        CallerIDNum="102",
        Context="from-internal",
        Exten="102",
        Priority="1",
        Uniqueid=f"{call_id}.102",
        Linkedid=call_id,
    )
    await ajam_replay.settle(engine)
    seen = await client.get(f"/api/v1/calls/{call_id}", headers=auth("t101"))
    assert seen.status_code == 200  # 101 was on it: it may still read it
    refused = await client.post(f"/api/v1/calls/{call_id}/hangup", headers=auth("t101"))
    assert refused.status_code == 409, refused.text
    assert "no live leg" in refused.json()["detail"]
    assert "102" not in refused.text
    assert ajam_replay.count("Hangup") == 0
    done = await client.post(f"/api/v1/calls/{call_id}/hangup", headers=auth("all"))
    assert done.status_code == 202
    assert "PJSIP/102-00000009" in done.json()["hung_up"]


@pytest.mark.parametrize(("mode", "action"), [("blind", "BlindTransfer"), ("attended", "Atxfer")])
async def test_transfer_acts_from_the_extensions_leg_into_the_dial_context(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    mode: str,
    action: str,
) -> None:
    ajam_replay.on(action, lambda sent: {"Message": "Transfer started"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    # What Asterisk 22 reads back for a leg its Dial or Queue let transfer (option t).
    ajam_replay.channels[phone].variables["CHANNEL(dtmf_features)"] = "T"
    response = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": mode}, headers=auth("t101")
    )
    assert response.status_code == 202, response.text
    [sent] = ajam_replay.sent(action)
    # The extension's own leg: its bridge partner, the customer, is who moves.
    assert sent.get("Channel") == phone
    assert sent.get("Context") == "callrouter-dial"  # DND and forwarding of 102 apply
    assert sent.get("Exten") == "102"
    outside = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "89161234567", "mode": mode},
        headers=auth("t101"),
    )
    assert outside.status_code == 202
    assert outside.json()["context"] == "outbound"
    assert outside.json()["exten"] == "979161234567"
    bad = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102&Local/1@x", "mode": mode},
        headers=auth("t101"),
    )
    assert bad.status_code == 400
    assert bad.json()["field"] == "to"
    wrong_mode = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": "warm"}, headers=auth("t101")
    )
    assert wrong_mode.json()["field"] == "mode"


async def test_an_attended_transfer_from_a_leg_that_may_not_transfer_is_refused_not_lost(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Asterisk answers Atxfer "successfully queued" and then does nothing on a leg
    dialled without option t (seen on Asterisk 22 with real phones): a 409 that says
    so, instead of a 202 for a transfer that never happens."""
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    ajam_replay.on("BlindTransfer", lambda sent: {"Message": "Transfer succeeded"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    # Talking with the customer: in the bridge Asterisk gives the leg its features in.
    ajam_replay.queue_event(
        "BridgeEnter", Channel=phone, BridgeUniqueid="b-1", BridgeNumChannels="2"
    )
    await ajam_replay.settle(engine)
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102", "mode": "attended"},
        headers=auth("t101"),
    )
    assert refused.status_code == 409, refused.text
    assert "option t" in refused.json()["detail"]
    assert refused.json()["field"] == "mode"
    assert ajam_replay.sent("Atxfer") == []
    # A channel's: the dialplan audit at start reads the snippet's globals too.
    [asked] = [g for g in ajam_replay.sent("Getvar") if g.get("Channel")]
    assert (asked.get("Channel"), asked.get("Variable")) == (phone, "CHANNEL(dtmf_features)")
    ajam_replay.channels[phone].variables["CHANNEL(dtmf_features)"] = "TH"  # t plus h
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102", "mode": "attended"},
        headers=auth("t101"),
    )
    assert done.status_code == 202, done.text
    assert len(ajam_replay.sent("Atxfer")) == 1
    # A blind transfer needs no feature on the leg (AMI BlindTransfer acts itself).
    ajam_replay.channels[phone].variables["CHANNEL(dtmf_features)"] = ""
    blind = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": "blind"}, headers=auth("t101")
    )
    assert blind.status_code == 202, blind.text


async def _leg(replay: ReplayAsterisk, engine: Engine, call_id: str, channel: str) -> None:
    """One more live channel on the call, up (a Local half, a phone's leg)."""
    replay.queue_event(
        Event="Newchannel",
        Channel=channel,
        ChannelState="6",
        ChannelStateDesc="Up",
        CallerIDNum="",
        Context="from-internal",
        Exten="s",
        Priority="1",
        Uniqueid=f"{call_id}.{channel}",
        Linkedid=call_id,
    )
    await replay.settle(engine)


async def test_a_transfer_without_from_is_the_one_extension_s_not_the_customer_s_line(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """docs/api.md: ``from`` only when the call has several extensions. A token for
    every extension ("*") also sees the customer's line (PJSIP/trunk-...), and
    got 400 "say which extension transfers" on a call with one manager on it."""
    ajam_replay.on("BlindTransfer", lambda sent: {"Message": "Transfer succeeded"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("all")
    )
    assert done.status_code == 202, done.text
    assert done.json()["channel"] == phone
    assert [a.get("Channel") for a in ajam_replay.sent("BlindTransfer")] == [phone]


def _like_asterisk_blind_transfer(
    replay: ReplayAsterisk, phone: str, then: Callable[[], object]
) -> Callable[[SentAction], object]:
    """Asterisk's BlindTransfer: ``Transfer invalid`` for a leg in no bridge (and
    ``then()`` runs a moment after that first refusal), else success."""

    def answer(sent: SentAction) -> object:
        if replay.channels.get(phone) is None or not replay.channels[phone].bridge:
            if len(replay.sent("BlindTransfer")) == 1:
                asyncio.get_running_loop().call_later(0.036, then)
            return [("Response", "Error"), ("Message", "Transfer invalid")]
        return {"Message": "Transfer succeeded"}

    return answer


def _bridge(replay: ReplayAsterisk, *channels: str) -> Callable[[], object]:
    """Asterisk bridging the customer's line and the phone's leg, as ``Dial`` does."""

    def enter() -> None:
        for count, channel in enumerate(channels, 1):
            replay.queue_event(
                "BridgeEnter",
                Channel=channel,
                BridgeUniqueid="b-1",
                BridgeType="basic",
                BridgeTechnology="simple_bridge",
                BridgeNumChannels=str(count),
            )

    return enter


@pytest.mark.parametrize("phone_first", [False, True])
async def test_a_blind_transfer_right_after_the_answer_waits_for_the_bridge(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk, phone_first: bool
) -> None:
    """1C transfers the moment it hears ``answered``; Asterisk bridges the legs some
    milliseconds later (36 ms on a loaded host) and refused the BlindTransfer in
    between: 409 "Transfer invalid". The API waits for the bridge and sends it again."""
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]
    order = (phone, trunk) if phone_first else (trunk, phone)
    ajam_replay.on(
        "BlindTransfer",
        _like_asterisk_blind_transfer(ajam_replay, phone, _bridge(ajam_replay, *order)),
    )
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert done.status_code == 202, done.text
    assert [a.get("Channel") for a in ajam_replay.sent("BlindTransfer")] == [phone, phone]
    # Bridged now, it goes through at once.
    again = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103"}, headers=auth("t101")
    )
    assert again.status_code == 202, again.text
    assert len(ajam_replay.sent("BlindTransfer")) == 3


async def test_a_blind_transfer_waiting_for_the_bridge_moves_no_call_that_ended(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """The manager hangs up instead of being bridged: 409, and no second BlindTransfer."""
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")

    def hang_up() -> None:
        ajam_replay.queue_event("Hangup", Channel=phone, Cause="16")

    ajam_replay.on("BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, hang_up))
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert refused.status_code == 409, refused.text
    assert "nothing was transferred" in refused.json()["detail"]
    assert len(ajam_replay.sent("BlindTransfer")) == 1


async def test_a_blind_transfer_waits_for_the_bridge_only_so_long(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leg that enters no bridge in time keeps Asterisk's refusal (409); a leg that
    was in a bridge already is refused at once, with no wait. No Dial of the call
    was seen (no ``Newexten``): the bound of an unknown application governs."""
    monkeypatch.setattr("router.api.calls.BRIDGE_WAIT_UNKNOWN", 0.2)
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    ajam_replay.on("BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, lambda: None))
    started = asyncio.get_running_loop().time()
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert refused.status_code == 409, refused.text
    assert "Transfer invalid" in refused.json()["detail"]
    assert "entered no bridge" in refused.json()["detail"]
    assert 0.2 <= asyncio.get_running_loop().time() - started < 2
    assert len(ajam_replay.sent("BlindTransfer")) == 1
    ajam_replay.queue_event(
        "BridgeEnter", Channel=phone, BridgeUniqueid="b-2", BridgeNumChannels="2"
    )
    await ajam_replay.settle(engine)
    ajam_replay.on(
        "BlindTransfer", lambda sent: [("Response", "Error"), ("Message", "Transfer invalid")]
    )
    # A wait now would take 30 s: "at once" is then told from a wait by far more
    # than a loaded machine's delay (a 0.2 s bound failed when it paused that long).
    monkeypatch.setattr("router.api.calls.BRIDGE_WAIT_UNKNOWN", 30.0)
    started = asyncio.get_running_loop().time()
    at_once = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert at_once.status_code == 409, at_once.text
    assert at_once.json()["detail"] == "Asterisk refused BlindTransfer: Transfer invalid"
    assert asyncio.get_running_loop().time() - started < 10
    assert len(ajam_replay.sent("BlindTransfer")) == 2


def _dialed(replay: ReplayAsterisk, engine: Engine, call_id: str, phone: str) -> str:
    """The customer's line in ``Dial``, which rang ``phone`` (``Newexten``,
    ``DialBegin``), as Asterisk tells it: the line's name."""
    call = engine.api.calls.get(call_id)
    assert call is not None
    [trunk] = [c for c in call.channels if c != phone]
    replay.queue_event(
        "Newexten",
        Channel=trunk,
        Context="callrouter-dial",
        Exten="101",
        Priority="3",
        Application="Dial",
        AppData="PJSIP/101,30,tU(announce)",
        Linkedid=call_id,
    )
    replay.queue_event("DialBegin", Channel=trunk, DestChannel=phone, Linkedid=call_id)
    return trunk


@pytest.mark.parametrize("mode", ["blind", "attended"])
async def test_a_transfer_waits_past_2_s_while_the_dial_that_bridges_the_leg_runs(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """A Dial's ``U()`` gosub (or ``A()`` announcement, a Queue's gosub) holds the
    answered leg out of its bridge for seconds: the transfer got 409 after 2 s.
    It waits as long as the Dial that will bridge it runs (up to 15 s), and goes
    through once it is bridged."""
    monkeypatch.setattr("router.api.calls.BRIDGE_WAIT_UNKNOWN", 0.2)  # not this bound
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    trunk = _dialed(ajam_replay, engine, mine, phone)
    await ajam_replay.settle(engine)
    bridge = _bridge(ajam_replay, trunk, phone)

    def late() -> None:  # the gosub's 2.5 s, then Dial bridges the two
        asyncio.get_running_loop().call_later(2.5, bridge)

    if mode == "blind":
        ajam_replay.on("BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, late))
    else:
        ajam_replay.on("Getvar", _features_at_the_bridge(ajam_replay, phone, late, delay=0))
    started = asyncio.get_running_loop().time()
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": mode}, headers=auth("t101")
    )
    assert done.status_code == 202, done.text
    assert asyncio.get_running_loop().time() - started >= 2.5
    sent = ajam_replay.sent("BlindTransfer" if mode == "blind" else "Atxfer")
    assert [a.get("Channel") for a in sent][-1] == phone


@pytest.mark.parametrize("mode", ["blind", "attended"])
@pytest.mark.parametrize("how", ["hangs up", "goes on"])
async def test_a_transfer_is_refused_at_once_when_the_dial_that_would_bridge_ends(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    how: str,
) -> None:
    """The customer hangs up, or the Dial returns and the dialplan goes on
    (``Playback``), while the leg waits for its bridge: none is coming, 409 at
    once, not at the end of the wait; nothing is transferred."""
    # Either wait, the Dial's 15 s or one with no Dial known, is far past the bound.
    monkeypatch.setattr("router.api.calls.BRIDGE_WAIT_UNKNOWN", 30.0)
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    trunk = _dialed(ajam_replay, engine, mine, phone)
    await ajam_replay.settle(engine)

    def ends() -> None:
        if how == "hangs up":
            ajam_replay.queue_event("Hangup", Channel=trunk, Cause="16", Linkedid=mine)
        else:
            ajam_replay.queue_event(
                "Newexten",
                Channel=trunk,
                Context="callrouter-dial",
                Exten="101",
                Priority="4",
                Application="Playback",
                AppData="vm-goodbye",
                Linkedid=mine,
            )

    if mode == "blind":
        ajam_replay.on("BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, ends))
    else:
        ajam_replay.on("Getvar", _features_at_the_bridge(ajam_replay, phone, ends, delay=0.3))
    started = asyncio.get_running_loop().time()
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": mode}, headers=auth("t101")
    )
    took = asyncio.get_running_loop().time() - started
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    which = "hung up" if how == "hangs up" else "went on to Playback"
    assert f"{trunk}, which rang it, {which}: no bridge is coming" in detail, detail
    # At once, not at the end of the wait (15 s, or 30 here): far below it,
    # whatever the load (1.5 s against the 2 s wait measured the host; issue 16).
    assert took < 7, took
    assert len(ajam_replay.sent("BlindTransfer")) == (1 if mode == "blind" else 0)
    assert ajam_replay.sent("Atxfer") == []


async def test_the_wait_while_the_dial_runs_is_bounded(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Dial that never bridges the answered leg: 409 at :data:`BRIDGE_WAIT`."""
    monkeypatch.setattr("router.api.calls.BRIDGE_WAIT", 0.3)
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    _dialed(ajam_replay, engine, mine, phone)
    await ajam_replay.settle(engine)
    ajam_replay.on("BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, lambda: None))
    started = asyncio.get_running_loop().time()
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert refused.status_code == 409, refused.text
    assert "entered no bridge with the other side within 0.3 s" in refused.json()["detail"]
    assert 0.3 <= asyncio.get_running_loop().time() - started < 1.5
    assert len(ajam_replay.sent("BlindTransfer")) == 1


def _features_at_the_bridge(
    replay: ReplayAsterisk, phone: str, bridge: Callable[[], object], *, delay: float = 0.036
) -> Callable[[SentAction], object]:
    """Asterisk's Getvar of ``CHANNEL(dtmf_features)``: empty until the leg is
    bridged (Asterisk gives it Dial's option t as it bridges it); ``bridge()``
    runs a moment after the first ask, and sets the feature too."""

    def enter() -> None:
        replay.channels[phone].variables["CHANNEL(dtmf_features)"] = "T"
        bridge()

    def answer(sent: SentAction) -> object:
        asked = [g for g in replay.sent("Getvar") if g.get("Channel") == phone]
        if len(asked) == 1:
            asyncio.get_running_loop().call_later(delay, enter)
        return None  # the built-in answer: the leg's variables now

    return answer


@pytest.mark.parametrize("phone_first", [False, True])
async def test_an_attended_transfer_right_after_the_answer_waits_for_the_bridge(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk, phone_first: bool
) -> None:
    """As the blind one: 1C transfers the moment it hears ``answered``, before Asterisk
    bridged the leg and gave it its transfer feature; the API said 409 "may not
    transfer ... option t" of a Dial that has it (seen on the sandbox). It now waits
    for the bridge, asks again and sends the Atxfer."""
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]
    order = (phone, trunk) if phone_first else (trunk, phone)
    ajam_replay.on(
        "Getvar", _features_at_the_bridge(ajam_replay, phone, _bridge(ajam_replay, *order))
    )
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102", "mode": "attended"},
        headers=auth("t101"),
    )
    assert done.status_code == 202, done.text
    assert len([g for g in ajam_replay.sent("Getvar") if g.get("Channel") == phone]) == 2
    assert [a.get("Channel") for a in ajam_replay.sent("Atxfer")] == [phone]


async def test_an_attended_transfer_waiting_for_the_bridge_moves_no_call_and_waits_so_long(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leg that enters no bridge in time is refused (409, the feature it lacks and
    why); a leg that hangs up meanwhile is not transferred (409): no Atxfer either way.
    No Dial of the call was seen: the bound of an unknown application governs."""
    monkeypatch.setattr("router.api.calls.BRIDGE_WAIT_UNKNOWN", 0.2)
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    started = asyncio.get_running_loop().time()
    late = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102", "mode": "attended"},
        headers=auth("t101"),
    )
    assert late.status_code == 409, late.text
    assert "option t" in late.json()["detail"]
    assert "entered no bridge with the other side within 0.2 s" in late.json()["detail"]
    assert 0.2 <= asyncio.get_running_loop().time() - started < 2

    def hang_up() -> None:
        ajam_replay.queue_event("Hangup", Channel=phone, Cause="16")

    ajam_replay.on("Getvar", _features_at_the_bridge(ajam_replay, phone, hang_up))
    ajam_replay.clear()
    gone = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102", "mode": "attended"},
        headers=auth("t101"),
    )
    assert gone.status_code == 409, gone.text
    assert "nothing was transferred" in gone.json()["detail"]
    assert ajam_replay.sent("Atxfer") == []


@pytest.mark.parametrize("mode", ["blind", "attended"])
async def test_a_transfer_from_a_leg_still_ringing_is_refused_at_once(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk, mode: str
) -> None:
    """101 rings, has not answered: no bridge is coming. The blind transfer Asterisk
    refused ("Transfer invalid") waited 2 s for one; the attended one said the Dial
    lacked option t. Both are a 409 at once that says the leg has not answered."""
    ajam_replay.on(
        "BlindTransfer", lambda sent: [("Response", "Error"), ("Message", "Transfer invalid")]
    )
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001", answered=False)
    started = asyncio.get_running_loop().time()
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": mode}, headers=auth("t101")
    )
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert f"{phone} has not answered (Asterisk's state: Ringing)" in detail
    assert "nothing was transferred" in detail
    assert asyncio.get_running_loop().time() - started < 1
    if mode == "blind":  # Asterisk's refusal first, as docs/api.md shows it
        assert detail.startswith("Asterisk refused BlindTransfer: Transfer invalid: ")
        assert len(ajam_replay.sent("BlindTransfer")) == 1
    assert ajam_replay.sent("Atxfer") == []


async def test_a_blind_transfer_while_the_leg_is_alone_in_its_bridge_waits_for_the_other(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Dial puts the phone's leg into the bridge first and the caller's a moment
    later; a BlindTransfer in between finds no one to move and Asterisk answers
    ``Transfer failed`` (not ``Transfer invalid``): the API passed that on as 409,
    1 of 56 API transfers in a 12-minute office soak. It now waits for the other
    side to join, as for a leg in no bridge yet, and sends it again."""
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]

    def answer(sent: SentAction) -> object:
        if len(ajam_replay.sent("BlindTransfer")) == 1:  # the phone's leg alone in it
            asyncio.get_running_loop().call_later(0.036, _bridge(ajam_replay, phone, trunk))
            return [("Response", "Error"), ("Message", "Transfer failed")]
        return {"Message": "Transfer succeeded"}

    ajam_replay.on("BlindTransfer", answer)
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert done.status_code == 202, done.text
    assert [a.get("Channel") for a in ajam_replay.sent("BlindTransfer")] == [phone, phone]
    # Bridged with the caller, a refusal is Asterisk's answer: passed on at once.
    await _transfer_failed_at_once(client, ajam_replay, mine)


async def test_a_blind_transfer_of_a_leg_seen_alone_in_its_bridge_waits_for_the_other(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """The engine already saw the phone's leg enter its bridge alone
    (``BridgeNumChannels: 1``), the caller's leg not in yet, when the transfer
    came: Asterisk's ``Transfer failed`` was passed on as 409 at once, the leg
    counting as bridged. It now waits for the other side to join that bridge
    and sends it again; once the two share it, a refusal is passed on at once."""
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]
    _bridge(ajam_replay, phone)()
    await ajam_replay.settle(engine)
    tracked = engine.api.calls.get(mine).channels  # type: ignore[union-attr]
    assert (tracked[phone].bridge, tracked[phone].bridge_channels) == ("b-1", 1)

    await _blind_transfer_resent_once_joined(client, ajam_replay, mine, phone, trunk)
    assert tracked[phone].bridge_channels == 2
    # Sharing its bridge with the caller, a refusal is Asterisk's answer: at once.
    await _transfer_failed_at_once(client, ajam_replay, mine)


async def test_a_blind_transfer_of_a_leg_left_alone_in_its_bridge_waits_for_the_other(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """The phone's leg shared its bridge with the caller's, and the caller's leg
    walked out of it (``BridgeLeave``, ``BridgeNumChannels: 1``), to come back a
    moment later: the engine did not ask Asterisk for ``BridgeLeave``, so it kept
    the count 2 and passed Asterisk's ``Transfer failed`` on as 409 at once. It
    now hears the leave, waits for the other side to join again and resends."""
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]
    _bridge(ajam_replay, phone, trunk)()
    ajam_replay.queue_event(
        "BridgeLeave", Channel=trunk, BridgeUniqueid="b-1", BridgeNumChannels="1"
    )
    await ajam_replay.settle(engine)
    tracked = engine.api.calls.get(mine).channels  # type: ignore[union-attr]
    left_alone = (tracked[phone].bridge_channels, tracked[trunk].bridge)

    await _blind_transfer_resent_once_joined(client, ajam_replay, mine, phone, trunk)
    assert left_alone == (1, "")  # what the tracker made of the leave
    assert tracked[phone].bridge_channels == 2
    await _transfer_failed_at_once(client, ajam_replay, mine)


async def test_an_attended_transfer_of_a_leg_seen_alone_in_its_bridge_waits_for_the_other(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """As the blind one: the engine saw the phone's leg enter its bridge alone
    (``BridgeNumChannels: 1``), and Asterisk read back no transfer feature on it
    yet; the API answered 409 "may not transfer ... option t" at once, the leg
    counting as bridged. It now waits for the other side to join that bridge,
    reads the feature again and sends the Atxfer; a leg that shares its bridge
    and lacks the feature is refused at once."""
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]
    _bridge(ajam_replay, phone)()
    await ajam_replay.settle(engine)
    tracked = engine.api.calls.get(mine).channels  # type: ignore[union-attr]
    assert (tracked[phone].bridge, tracked[phone].bridge_channels) == ("b-1", 1)

    def join() -> None:
        ajam_replay.queue_event(
            "BridgeEnter", Channel=trunk, BridgeUniqueid="b-1", BridgeNumChannels="2"
        )

    ajam_replay.on("Getvar", _features_at_the_bridge(ajam_replay, phone, join))
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "102", "mode": "attended"},
        headers=auth("t101"),
    )
    assert done.status_code == 202, done.text
    assert len([g for g in ajam_replay.sent("Getvar") if g.get("Channel") == phone]) == 2
    assert [a.get("Channel") for a in ajam_replay.sent("Atxfer")] == [phone]
    assert tracked[phone].bridge_channels == 2
    # Sharing its bridge with the caller, a leg without the feature: at once.
    await _attended_refused_at_once(client, ajam_replay, mine, phone)


async def _attended_refused_at_once(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk, call_id: str, phone: str
) -> None:
    """An attended transfer from a leg bridged with the caller that Asterisk reads
    back no transfer feature on: 409 "may not transfer" at once, the feature read
    once, no Atxfer."""
    ajam_replay.clear()
    ajam_replay.on("Getvar", lambda sent: None)  # the leg's variables as they are
    ajam_replay.channels[phone].variables["CHANNEL(dtmf_features)"] = ""
    refused = await client.post(
        f"/api/v1/calls/{call_id}/transfer",
        json={"to": "103", "mode": "attended"},
        headers=auth("t101"),
    )
    assert refused.status_code == 409, refused.text
    assert "option t" in refused.json()["detail"]
    assert "entered no bridge" not in refused.json()["detail"]
    assert len([g for g in ajam_replay.sent("Getvar") if g.get("Channel") == phone]) == 1
    assert ajam_replay.sent("Atxfer") == []


@pytest.mark.parametrize("mode", ["blind", "attended"])
async def test_a_transfer_the_instant_the_phone_answers_asks_asterisk_whether_it_rings(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk, mode: str
) -> None:
    """The phone answered and the transfer was asked at once (the office soak's
    API transfer, as a CRM button the phone drives): Asterisk had the leg ``Up``
    and was bridging it, but its ``Newstate`` had not reached the engine yet,
    whose tracker still said ``Ringing``. The API answered 409 "has not answered
    (Asterisk's state: Ringing)", 1 of 50 such transfers in a 12-minute soak. It
    now asks Asterisk the leg's state and, as for any answered leg, waits for the
    bridge and transfers."""
    ajam_replay.on("Atxfer", lambda sent: {"Message": "Atxfer successfully queued"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001", answered=False)
    [trunk] = [c for c in engine.api.calls.get(mine).channels if c != phone]  # type: ignore[union-attr]
    # Asterisk answered the leg; the events that say so are not in yet.
    ajam_replay.channels[phone].state, ajam_replay.channels[phone].state_desc = "6", "Up"
    tracked = engine.api.calls.get(mine).channels[phone]  # type: ignore[union-attr]
    assert tracked.state == "Ringing"

    def events_arrive() -> None:
        ajam_replay.queue_event("Newstate", Channel=phone, ChannelState="6", ChannelStateDesc="Up")
        _bridge(ajam_replay, trunk, phone)()

    if mode == "blind":
        ajam_replay.on(
            "BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, events_arrive)
        )
    else:
        ajam_replay.on("Getvar", _features_at_the_bridge(ajam_replay, phone, events_arrive))
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "102", "mode": mode}, headers=auth("t101")
    )
    assert done.status_code == 202, done.text
    asked = [g.get("Variable") for g in ajam_replay.sent("Getvar") if g.get("Channel") == phone]
    assert "CHANNEL(state)" in asked
    sent = ajam_replay.sent("BlindTransfer" if mode == "blind" else "Atxfer")
    assert [a.get("Channel") for a in sent] == [phone] * (2 if mode == "blind" else 1)


async def test_the_calling_side_rings_until_its_call_is_answered(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """101 placed the call: its leg is ``Ring`` until its Dial answers it, which
    Asterisk does a moment *after* the DialEnd 1C hears as ``answered``. Before the
    answer the transfer is refused at once; after it, it waits for the bridge."""
    phone = "PJSIP/101-0000000a"
    leg = ajam_replay.add_channel(phone, context="from-internal", exten="89161234567")
    trunk = "PJSIP/trunk-0000000b"
    ajam_replay.queue_event(
        "Newchannel",
        Channel=trunk,
        ChannelState="5",
        ChannelStateDesc="Ringing",
        Context="from-internal",
        Exten="89161234567",
        Uniqueid=f"{leg.linkedid}.trunk",
        Linkedid=leg.linkedid,
    )
    await ajam_replay.settle(engine)
    ajam_replay.on("BlindTransfer", _like_asterisk_blind_transfer(ajam_replay, phone, lambda: None))
    rings = await client.post(
        f"/api/v1/calls/{leg.linkedid}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert rings.status_code == 409, rings.text
    assert "has not answered (Asterisk's state: Ring)" in rings.json()["detail"]
    # The far end answers: 1C hears ``answered`` (DialEnd) while 101's own leg is
    # still ``Ring``; Asterisk bridges the two a moment later.
    ajam_replay.queue_event("Newstate", Channel=trunk, ChannelState="6", ChannelStateDesc="Up")
    ajam_replay.queue_event(
        "DialEnd", Channel=phone, DestChannel=trunk, DialStatus="ANSWER", Linkedid=leg.linkedid
    )
    await ajam_replay.settle(engine)
    ajam_replay.clear()
    ajam_replay.on(
        "BlindTransfer",
        _like_asterisk_blind_transfer(ajam_replay, phone, _bridge(ajam_replay, trunk, phone)),
    )
    done = await client.post(
        f"/api/v1/calls/{leg.linkedid}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert done.status_code == 202, done.text
    assert [a.get("Channel") for a in ajam_replay.sent("BlindTransfer")] == [phone, phone]


async def test_an_extension_reached_through_local_channels_is_one_leg(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """A dialplan that dials the manager through a Local channel (FreePBX's
    from-internal): the customer's line, Local/101@...;1 bridged with it, ;2 and
    the phone's PJSIP/101 leg. The ;1 half is the one whose partner is the
    customer; the token for 101 got 400 even with ``from``."""
    ajam_replay.on("BlindTransfer", lambda sent: {"Message": "Transfer succeeded"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    half = "Local/101@from-internal-0000000a"
    await _leg(ajam_replay, engine, mine, f"{half};1")
    await _leg(ajam_replay, engine, mine, f"{half};2")
    for token, body in (("t101", {}), ("t101", {"from": "101"}), ("all", {})):
        done = await client.post(
            f"/api/v1/calls/{mine}/transfer", json={"to": "102", **body}, headers=auth(token)
        )
        assert done.status_code == 202, (token, body, done.text)
        assert done.json()["channel"] == f"{half};1"
    assert phone in engine.api.calls.get(mine).channels  # type: ignore[union-attr]


async def test_two_extensions_on_the_call_still_need_from(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """Genuinely ambiguous: 101 and 102 both on the call (a consultation, a
    conference). Without ``from`` it is a 400 naming the legs; with it, 101's."""
    ajam_replay.on("BlindTransfer", lambda sent: {"Message": "Transfer succeeded"})
    mine, phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    await _leg(ajam_replay, engine, mine, "PJSIP/102-0000000b")
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103"}, headers=auth("all")
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == "from"
    assert "say which extension transfers" in refused.json()["detail"]
    assert phone in refused.json()["detail"]
    assert "PJSIP/102-0000000b" in refused.json()["detail"]
    assert ajam_replay.sent("BlindTransfer") == []
    done = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103", "from": "101"}, headers=auth("all")
    )
    assert done.status_code == 202, done.text
    assert done.json()["channel"] == phone
    # The same extension twice (two phones' legs of 101): no ``from`` can tell them apart.
    await _leg(ajam_replay, engine, mine, "PJSIP/101-0000000c")
    twice = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103", "from": "101"}, headers=auth("all")
    )
    assert twice.status_code == 400
    assert "extension 101 is on it more than once" in twice.json()["detail"]


async def test_click_to_call_progress_reaches_the_event_feed_of_its_extension(
    engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    from router.api.feed import EventFeed

    feed = EventFeed()
    app = build_app(ApiContext(engine=engine.api, settings=settings(), feed=feed))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        response = await client.post(
            "/api/v1/calls", json={"from": "101", "to": "89161234567"}, headers=auth("t101")
        )
    call_id = response.json()["id"]
    [sent] = ajam_replay.sent("Originate")
    originated(ajam_replay, call_id, sent.action_id or "")
    await ajam_replay.settle(engine)
    mine = [e for e in feed.read(0).events if e.kind == "click_to_call"]
    assert [e.data["state"] for e in mine] == ["ringing", "answered", "dialing"]
    assert {(e.extension, e.call_id) for e in mine} == {("101", call_id)}


def _load(tmp_path: Path, api: str) -> Any:
    from router.config import load_config

    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "u"\nsecret = "s"\n'
        f"[api]\n{api}",
        encoding="utf-8",
    )
    return load_config(path)


def test_click_to_call_keys_are_read_from_router_toml(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'originate_channel = "Local/{extension}@phones"\noutbound_context = "trunk-out"\n'
        'dial_prefix = "9"\ncaller_id = "{number} <{extension}>"\noriginate_timeout = 20\n'
        'idempotency_ttl = 600\n[api.variables]\nCALL_SOURCE = "1c"\n',
    )
    dialing = config.api.dialing
    assert dialing.originate_channel == "Local/{extension}@phones"
    assert dialing.outbound_context == "trunk-out"
    assert dialing.dial_prefix == "9"
    assert dialing.caller_id == "{number} <{extension}>"
    assert (dialing.originate_timeout, dialing.idempotency_ttl) == (20, 600)
    assert dict(dialing.variables) == {"CALL_SOURCE": "1c"}
    assert _load(tmp_path, "").api.dialing == DialSettings()


@pytest.mark.parametrize(
    ("api", "key"),
    [
        ('originate_channel = "PJSIP/101"\n', "originate_channel"),
        ('originate_channel = "PJSIP/{exten}"\n', "originate_channel"),
        ('outbound_context = "out,1"\n', "outbound_context"),
        ('dial_prefix = "9,"\n', "dial_prefix"),
        ('caller_id = "{secret}"\n', "caller_id"),
        ("originate_timeout = 0\n", "originate_timeout"),
        ('[api.variables]\n"A-B" = "x"\n', "variables"),
        ('[api.variables]\nA = "x\\ny"\n', "variables"),
    ],
)
def test_bad_click_to_call_keys_are_refused_naming_the_key(
    tmp_path: Path, api: str, key: str
) -> None:
    from router.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"\[api\].*{key}"):
        _load(tmp_path, api)


def test_a_dial_seen_before_the_originate_response_still_tells_answered_first() -> None:
    """Asterisk may report the Dial before OriginateResponse: the feed keeps the order."""
    from router.api.calls import Origination

    origination = Origination(
        id="c1",
        action_id="a1",
        extension="101",
        number="79161234567",
        dial="79161234567",
        created=0.0,
    )
    assert origination.advance("ringing") == ["ringing"]
    assert origination.advance("dialing") == ["answered", "dialing"]
    assert origination.advance("answered") == []  # the late OriginateResponse moves nothing
    assert origination.advance("connected") == ["connected"]
    assert origination.advance("ended") == ["ended"]
    assert origination.advance("connected") == []


async def test_a_token_placing_many_calls_forgets_its_own_not_another_s(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the remembered click-to-calls (1,000) and Idempotency-Keys (10,000)
    were shared by all tokens: one token placing calls with new keys pushed out
    another's, whose GET /calls/{id} then said 404 and whose retry placed a
    second call. Here both bounds are 3 and one token places 10 calls."""
    from router.api import calls

    monkeypatch.setattr(calls, "_KEPT", 3)
    monkeypatch.setattr(calls, "_IDEMPOTENCY_MAX", 3)
    app = build_app(ApiContext(engine=engine.api, settings=settings()))
    body = {"from": "102", "to": "89161234567"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        theirs = await client.post(
            "/api/v1/calls", json=body, headers={**auth("all"), "Idempotency-Key": "order-1"}
        )
        assert theirs.status_code == 201, theirs.text
        call_id = theirs.json()["id"]
        mine = [
            await client.post(
                "/api/v1/calls",
                json={"from": "101", "to": f"8916123450{i}"},
                headers={**auth("t101"), "Idempotency-Key": f"k{i}"},
            )
            for i in range(10)
        ]
        assert [r.status_code for r in mine] == [201] * 10
        shown = await client.get(f"/api/v1/calls/{call_id}", headers=auth("all"))
        retried = await client.post(
            "/api/v1/calls", json=body, headers={**auth("all"), "Idempotency-Key": "order-1"}
        )
        own_oldest = await client.get(f"/api/v1/calls/{mine[0].json()['id']}", headers=auth("all"))
        own_retry = await client.post(
            "/api/v1/calls",
            json={"from": "101", "to": "89161234500"},
            headers={**auth("t101"), "Idempotency-Key": "k0"},
        )
    assert shown.status_code == 200, shown.text
    assert (retried.status_code, retried.json()["id"]) == (200, call_id)
    # The flooding token's own oldest are the ones forgotten.
    assert own_oldest.status_code == 404
    assert own_retry.status_code == 201


def _origination(call_id: str, owner: str) -> Origination:
    return Origination(
        id=call_id,
        action_id=f"a-{call_id}",
        extension="101",
        number="79161234567",
        dial="79161234567",
        created=0.0,
        owner=owner,
    )


def test_one_token_s_click_to_calls_never_push_out_another_s() -> None:
    """Before: 1,000 calls were remembered for all tokens together, so one token
    placing many made another's recent call unknown (404) to GET /calls/{id}."""
    kept = Originations(kept=3)
    kept.add(_origination("theirs", "crm"))
    for i in range(10):
        kept.add(_origination(f"mine-{i}", "flood"))
    assert kept.get("theirs") is not None
    assert [kept.get(f"mine-{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3
    kept.discard("theirs")
    assert kept.get("theirs") is None
    kept.add(_origination("again", "crm"))
    assert kept.get("again") is not None


def test_one_token_s_idempotency_keys_never_push_out_another_s() -> None:
    """Before: 10,000 keys for all tokens together: one token sending many new keys
    made another's retry place a second call."""
    now = [0.0]
    keys = IdempotencyKeys(ttl=60, clock=lambda: now[0], kept=3)
    keys.remember("crm", "order-1", "body", "c-crm")
    for i in range(10):
        keys.remember("flood", f"k{i}", "body", f"c{i}")
    assert keys.lookup("crm", "order-1", "body") == "c-crm"
    assert keys.lookup("flood", "k0", "body") is None  # its own oldest went
    assert keys.lookup("flood", "k9", "body") == "c9"
    # The TTL still applies, to each token's keys.
    now[0] = 61
    assert keys.lookup("crm", "order-1", "body") is None
    assert keys.lookup("flood", "k9", "body") is None


@pytest.mark.parametrize(
    ("body", "field", "hint"),
    [
        ({"form": "101", "to": "89161234567"}, "form", "from"),
        ({"from": "101", "to": "89161234567", "variabels": {}}, "variabels", "variables"),
        ({"from": "101", "to": "89161234567", "colour": "red"}, "colour", None),
    ],
)
async def test_a_misspelt_click_to_call_field_is_named_with_the_closest(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, hint: str | None
) -> None:
    """A 1C developer's typo gets ``did_you_mean``, as a misspelt query parameter
    does: the module's error text ("возможно, имелось в виду ...") reads it."""
    response = await client.post("/api/v1/calls", json=body, headers=auth("all"))
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["field"] == field
    assert problem.get("did_you_mean") == hint
    if hint:
        assert f"did you mean {hint!r}?" in problem["detail"]


async def test_a_misspelt_transfer_field_is_named_with_the_closest(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    mine, _phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    refused = await client.post(
        f"/api/v1/calls/{mine}/transfer",
        json={"to": "103", "form": "101"},
        headers=auth("all"),
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == "form"
    assert refused.json()["did_you_mean"] == "from"
    long = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103", "x" * 5000: 1}, headers=auth("all")
    )
    assert long.status_code == 400
    assert len(long.json()["detail"]) < 200, "the client's key is cut, not echoed whole"
    assert ajam_replay.sent("BlindTransfer") == []


async def test_a_transfer_s_from_errors_name_the_extensions_to_choose_from(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """A 1C developer got "the call has several legs this token acts for
    (PJSIP/102-..., Local/103@...;1, Local/103@...;2, PJSIP/103-...)" and, for a
    ``from`` not on the call, "the call has no live leg of an extension this token
    acts for" though 102 was: neither said what ``from`` to send (issue 16)."""
    mine, _phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    await _leg(ajam_replay, engine, mine, "PJSIP/102-0000000b")
    several = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103"}, headers=auth("all")
    )
    assert several.status_code == 400
    assert '("from": one of 101, 102)' in several.json()["detail"]
    absent = await client.post(
        f"/api/v1/calls/{mine}/transfer", json={"to": "103", "from": "105"}, headers=auth("all")
    )
    assert absent.status_code == 409
    assert absent.json()["detail"] == (
        "from: extension 105 has no live leg on the call "
        "(this token's extensions on it now: 101, 102)"
    )
    assert ajam_replay.sent("BlindTransfer") == []


async def test_a_call_that_started_at_asterisk_s_s_shows_no_did(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """A click-to-call's trunk leg starts at ``s`` in the trunk's (inbound) context,
    and ``GET /calls/{id}`` said ``"did": "s"`` (issue 16)."""
    mine, _ = await inbound_to(ajam_replay, engine, "101", "74950000001")
    call = engine.api.calls.get(mine)
    assert call is not None
    call.did = "s"
    shown = (await client.get(f"/api/v1/calls/{mine}", headers=auth("all"))).json()
    assert shown["did"] is None


async def test_the_audit_line_names_the_call_a_request_acts_on(
    client: httpx.AsyncClient,
    engine: Engine,
    ajam_replay: ReplayAsterisk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hangups and transfers were audited ``target=-``: the log said a token hung
    up a call, not which one (recordings already named it) (issue 16)."""
    ajam_replay.on("Hangup", lambda sent: {"Message": "Channel Hungup"})
    mine, _phone = await inbound_to(ajam_replay, engine, "101", "74950000001")
    caplog.set_level(logging.INFO, logger="router.api.audit")
    await client.get(f"/api/v1/calls/{mine}", headers=auth("all"))
    await client.post(f"/api/v1/calls/{mine}/transfer", json={"to": "x y"}, headers=auth("all"))
    await client.post(f"/api/v1/calls/{mine}/hangup", headers=auth("all"))
    await client.post(f"/api/v1/calls/{mine}/hangup", headers=auth("t101" + "-nope"))
    lines = [r.getMessage() for r in caplog.records if r.name == "router.api.audit"]
    assert [line.split(" status=")[0] for line in lines] == [
        f"api token=all op=calls:read target={mine}",
        f"api token=all op=calls:transfer target={mine}",
        f"api token=all op=calls:hangup target={mine}",
        f"api token=- op=calls:hangup target={mine}",
    ]


def test_whether_a_bridge_is_coming_for_an_answered_leg() -> None:
    """The decision of the wait: the leg's own Dial (it placed the call) or the
    Dial/Queue that rang it still running means a bridge is coming; that
    channel hung up or gone on to another application means none is; no
    application seen of either is unknown (the short bound)."""
    from router.api.calls import _bridge_coming
    from router.calls import Call, Channel

    def call_with(leg: Channel, *others: Channel) -> Call:
        call = Call("1.1", 0.0)
        for chan in (leg, *others):
            call.channels[chan.name] = chan
        return call

    def leg(**kw: Any) -> Channel:
        return Channel("PJSIP/101-01", "1.2", state="Up", **kw)

    def trunk(**kw: Any) -> Channel:
        return Channel("PJSIP/trunk-01", "1.1", state="Up", **kw)

    rang = {"dialed_by": "PJSIP/trunk-01"}
    for app in ("Dial", "Queue", "dial", "FollowMe"):
        assert _bridge_coming(call_with(leg(**rang), trunk(application=app)), "PJSIP/101-01") == (
            "bridging",
            f"PJSIP/trunk-01 in {app}",
        )
    # In its U() gosub the leg runs Wait or Playback itself: the Dial still runs.
    assert _bridge_coming(
        call_with(leg(application="Wait", **rang), trunk(application="Dial")), "PJSIP/101-01"
    )[0] == ("bridging")
    # The leg placed the call: its own Dial.
    assert _bridge_coming(call_with(leg(application="Dial")), "PJSIP/101-01")[0] == "bridging"
    assert _bridge_coming(
        call_with(leg(**rang), trunk(application="Playback")), "PJSIP/101-01"
    ) == ("left", "PJSIP/trunk-01, which rang it, went on to Playback")
    assert _bridge_coming(
        call_with(leg(**rang), trunk(application="Dial", hung_up=True)), "PJSIP/101-01"
    ) == ("left", "PJSIP/trunk-01, which rang it, hung up")
    assert _bridge_coming(call_with(leg(**rang), trunk()), "PJSIP/101-01") == ("unknown", "")
    assert _bridge_coming(call_with(leg(), trunk(application="Dial")), "PJSIP/101-01") == (
        "unknown",
        "",
    )  # who rang it not seen: not taken for the one that did
    assert _bridge_coming(call_with(leg(hung_up=True, **rang)), "PJSIP/101-01") == ("hung up", "")
    assert _bridge_coming(None, "PJSIP/101-01") == ("hung up", "")


def test_the_tracker_follows_each_channels_application_and_who_rang_it() -> None:
    """What the decision reads: a channel's application from its last
    ``Newexten``, and the channel whose ``DialBegin`` rang it."""
    from router.calls import CallTracker
    from router.testing.builders import make_event

    tracker = CallTracker()
    # (Asterisk writes a channel's Uniqueid with its every event.)
    trunk = {"Channel": "PJSIP/trunk-01", "Uniqueid": "1.1"}
    phone = {"Channel": "PJSIP/101-01", "Uniqueid": "1.2"}
    for name, fields in (
        ("Newchannel", trunk),
        ("Newexten", {**trunk, "Application": "Dial", "Context": "c"}),
        ("Newchannel", phone),
        ("DialBegin", {**trunk, "DestChannel": "PJSIP/101-01"}),
        ("Newexten", {**phone, "Application": "Wait", "Context": "g"}),
    ):
        tracker.feed(make_event(name, Linkedid="1.1", **fields))
    call = tracker.get("1.1")
    assert call is not None
    assert call.channels["PJSIP/trunk-01"].application == "Dial"
    assert call.channels["PJSIP/trunk-01"].dialed_by == ""
    assert call.channels["PJSIP/101-01"].application == "Wait"
    assert call.channels["PJSIP/101-01"].dialed_by == "PJSIP/trunk-01"


def test_a_click_to_call_keeps_no_progress_until_its_first_event_then_the_last_32() -> None:
    """An empty ``deque(maxlen=32)`` is 760 B, made for every click-to-call kept
    (1,000 a token) though most never pass any event: it is made with the first
    event now, and still keeps the last 32, the oldest going first."""
    from router.ami.message import Event

    originations = Originations()
    origination = _origination("c1", "crm")
    originations.add(origination)
    assert origination.progress is None
    assert origination.to_dict()["progress"] == []
    for n in range(40):
        channel = {"Event": "Newchannel", "Channel": f"PJSIP/101-{n}", "Linkedid": "c1"}
        originations.observe(Event(channel.items()), None)
    shown = origination.to_dict()["progress"]
    assert [p["channel"] for p in shown] == [f"PJSIP/101-{n}" for n in range(8, 40)]


async def _blind_transfer_resent_once_joined(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk, call_id: str, phone: str, trunk: str
) -> None:
    """A blind transfer of ``phone``'s leg, alone in bridge b-1: Asterisk
    refuses the first "Transfer failed", ``trunk`` (re)joins the bridge 36 ms
    later, and the transfer sent again is accepted: 202, sent twice."""

    def answer(sent: SentAction) -> object:
        if len(ajam_replay.sent("BlindTransfer")) == 1:  # the phone's leg alone in it

            def join() -> None:
                ajam_replay.queue_event(
                    "BridgeEnter", Channel=trunk, BridgeUniqueid="b-1", BridgeNumChannels="2"
                )

            asyncio.get_running_loop().call_later(0.036, join)
            return [("Response", "Error"), ("Message", "Transfer failed")]
        return {"Message": "Transfer succeeded"}

    ajam_replay.on("BlindTransfer", answer)
    done = await client.post(
        f"/api/v1/calls/{call_id}/transfer", json={"to": "102"}, headers=auth("t101")
    )
    assert done.status_code == 202, done.text
    assert [a.get("Channel") for a in ajam_replay.sent("BlindTransfer")] == [phone, phone]


async def _transfer_failed_at_once(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk, call_id: str
) -> None:
    """A blind transfer of a leg bridged with the caller that Asterisk refuses
    "Transfer failed": passed on as 409 at once, sent once, no wait."""
    ajam_replay.clear()
    ajam_replay.on(
        "BlindTransfer", lambda sent: [("Response", "Error"), ("Message", "Transfer failed")]
    )
    failed = await client.post(
        f"/api/v1/calls/{call_id}/transfer", json={"to": "103"}, headers=auth("t101")
    )
    assert failed.status_code == 409, failed.text
    assert failed.json()["detail"] == "Asterisk refused BlindTransfer: Transfer failed"
    assert len(ajam_replay.sent("BlindTransfer")) == 1
