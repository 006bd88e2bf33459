"""DND, forwarding and presence (issue 13), over the replay Asterisk.

The settings live in two globals per extension that the shipped
``[callrouter-dial]`` reads (the sandbox test proves the dialplan honours
them); here: what is sent, what is stored, who may, and that callrouter sets
them again when Asterisk may have lost them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import httpx
import pytest

from router.ami.stream import StreamGap
from router.api import forwarding_state
from router.api.app import build_app
from router.api.context import ApiContext
from router.api.dial_settings import DialSettings
from router.api.dialing import Dialing
from router.api.feed import EventFeed
from router.api.forwarding import ForwardingService
from router.api.forwarding_state import Forwarding, ForwardingState
from router.api.settings import ApiSettings, TokenSettings
from router.testing.builders import make_event

if TYPE_CHECKING:
    from router.engine import Engine
    from router.testing import EngineFactory, ReplayAsterisk
    from router.testing.replay import SentAction

pytest_plugins = ["router.testing"]

TOKENS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "t101": (("forwarding:read", "forwarding:write", "presence:read"), ("101",)),
    "all": (("forwarding:read", "forwarding:write", "presence:read"), ("*",)),
    "reader": (("forwarding:read",), ("*",)),
}


def _token(name: str, allow: tuple[str, ...], extensions: tuple[str, ...]) -> TokenSettings:
    digest = hashlib.sha256(f"secret-{name}".encode()).digest()
    return TokenSettings(name, digest, allow, extensions, rate=1000.0, burst=1000)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-{name}"}


def settings() -> ApiSettings:
    tokens = {name: _token(name, *grants) for name, grants in TOKENS.items()}
    return ApiSettings(tokens=MappingProxyType(tokens), dialing=DialSettings(dial_prefix="9"))


@pytest.fixture
async def engine(engine_factory: EngineFactory, tmp_path: Path) -> Engine:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    return await engine_factory(rules)


@pytest.fixture
def feed() -> EventFeed:
    return EventFeed()


async def _client(engine: Engine, feed: EventFeed | None) -> httpx.AsyncClient:
    app = build_app(ApiContext(engine=engine.api, settings=settings(), feed=feed))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.fixture
async def client(engine: Engine, feed: EventFeed) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(engine, feed) as client:
        yield client


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_dnd_sets_the_global_the_dialplan_reads_and_is_stored_0600(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk, feed: EventFeed
) -> None:
    response = await client.put(
        "/api/v1/extensions/101/forwarding", json={"dnd": True}, headers=auth("t101")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"extension": "101", "dnd": True, "forward_to": None}
    assert ajam_replay.globals["CALLROUTER_DND_101"] == "1"
    assert all(not a.get("Channel") for a in ajam_replay.sent("Setvar"))  # globals: no channel
    path = engine.api.state_dir / "forwarding.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["extensions"]["101"]["dnd"] is True
    shown = await client.get("/api/v1/extensions/101/forwarding", headers=auth("t101"))
    assert shown.json() == {"extension": "101", "dnd": True, "forward_to": None}
    [event] = feed.read(0).events[-1:]
    assert (event.kind, event.extension, event.data["dnd"]) == ("dnd", "101", True)
    off = await client.put(
        "/api/v1/extensions/101/forwarding", json={"dnd": False}, headers=auth("t101")
    )
    assert off.json()["dnd"] is False
    assert ajam_replay.globals["CALLROUTER_DND_101"] == ""  # an empty value unsets it


async def test_forwarding_stores_the_normalized_number_and_dials_it_behind_the_prefix(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    response = await client.put(
        "/api/v1/extensions/101/forwarding",
        json={"forward_to": "8 (916) 123-45-67"},
        headers=auth("t101"),
    )
    assert response.json() == {"extension": "101", "dnd": False, "forward_to": "79161234567"}
    assert ajam_replay.globals["CALLROUTER_FWD_101"] == "979161234567"
    # A partial body keeps the other field; null clears the forward.
    await client.put("/api/v1/extensions/101/forwarding", json={"dnd": True}, headers=auth("t101"))
    kept = await client.get("/api/v1/extensions/101/forwarding", headers=auth("t101"))
    assert kept.json()["forward_to"] == "79161234567"
    cleared = await client.put(
        "/api/v1/extensions/101/forwarding", json={"forward_to": None}, headers=auth("t101")
    )
    assert cleared.json() == {"extension": "101", "dnd": True, "forward_to": None}
    assert ajam_replay.globals["CALLROUTER_FWD_101"] == ""


async def test_permissions_and_extension_scope(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    other = await client.put(
        "/api/v1/extensions/102/forwarding", json={"dnd": True}, headers=auth("t101")
    )
    assert other.status_code == 403
    assert (
        await client.get("/api/v1/extensions/102/forwarding", headers=auth("t101"))
    ).status_code == 403
    read_only = await client.put(
        "/api/v1/extensions/101/forwarding", json={"dnd": True}, headers=auth("reader")
    )
    assert read_only.status_code == 403
    assert read_only.json()["missing_permission"] == "forwarding:write"
    assert (await client.get("/api/v1/extensions/101/forwarding")).status_code == 401
    assert ajam_replay.count("Setvar") == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("101", {"dnd": "yes"}, "dnd"),
        ("101", {"forward_to": "call me"}, "forward_to"),
        ("101", {"forward_to": "8916\r\nAction: Command"}, "forward_to"),
        ("101", {"forward_to": 79161234567}, "forward_to"),
        ("101", {"dnd": True, "busy": True}, "busy"),
        ("10%261", {"dnd": True}, "ext"),  # "10&1"
        ("1_01", {"dnd": True}, "ext"),
    ],
)
async def test_bad_values_are_400_naming_the_field_and_nothing_is_set(
    client: httpx.AsyncClient,
    ajam_replay: ReplayAsterisk,
    engine: Engine,
    path: str,
    body: dict[str, object],
    field: str,
) -> None:
    response = await client.put(
        f"/api/v1/extensions/{path}/forwarding", json=body, headers=auth("all")
    )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert ajam_replay.count("Setvar") == 0
    assert not (engine.api.state_dir / "forwarding.json").exists()


async def test_503_when_asterisk_is_down_and_the_setting_is_not_stored(tmp_path: Path) -> None:
    from router.testing import StubEngine

    stub = StubEngine(state_dir=tmp_path, connected=False)
    app = build_app(ApiContext(engine=stub, settings=settings()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        response = await client.put(
            "/api/v1/extensions/101/forwarding", json={"dnd": True}, headers=auth("t101")
        )
    assert response.status_code == 503
    assert not (tmp_path / "forwarding.json").exists()


async def test_globals_are_set_again_after_a_gap_a_restart_and_at_start(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    await client.put(
        "/api/v1/extensions/101/forwarding",
        json={"dnd": True, "forward_to": "89161234567"},
        headers=auth("t101"),
    )
    ajam_replay.globals.clear()  # Asterisk restarted: its globals are gone
    ajam_replay.queue_event(Event="FullyBooted", Privilege="system,all", Status="Fully Booted")
    await ajam_replay.settle(engine)
    await until(lambda: ajam_replay.globals.get("CALLROUTER_DND_101") == "1")
    assert ajam_replay.globals["CALLROUTER_FWD_101"] == "979161234567"

    ajam_replay.globals.clear()
    # The engine's own handling of a stream gap tells its watchers.
    await engine._on_gap(StreamGap(since=time.time() - 5, resumed=time.time(), reason="reconnect"))
    await until(lambda: ajam_replay.globals.get("CALLROUTER_DND_101") == "1")

    # A new API on the same state_dir (callrouter restarted) sets them at start.
    ajam_replay.globals.clear()
    async with await _client(engine, None):
        await until(lambda: ajam_replay.globals.get("CALLROUTER_FWD_101") == "979161234567")


def test_a_damaged_state_file_is_set_aside_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "forwarding.json").write_text('{"version": 1, "extensions": {"1&2": {}}}')
    with caplog.at_level(logging.ERROR):
        state = ForwardingState(tmp_path)
    assert list(state) == []
    assert (tmp_path / "forwarding.json.bad").exists()
    assert any("forwarding.json" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "text",
    ["[" * 5000, '{"version": 1, "extensions": ' + '{"101": ' * 3000 + "1" + "}" * 3001],
)
def test_a_state_file_nested_past_the_parsers_limit_is_set_aside_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    """Issue 16: ``json.loads`` raised RecursionError for a ``forwarding.json``
    nested past the interpreter's limit (``[`` repeated: damaged or tampered),
    and ``except ValueError`` let it through: the API, and with it ``callrouter
    run``, did not start. It is set aside as any damaged file is."""
    (tmp_path / "forwarding.json").write_text(text)
    with caplog.at_level(logging.ERROR):
        state = ForwardingState(tmp_path)
    assert list(state) == []
    assert (tmp_path / "forwarding.json.bad").read_text() == text
    assert [r.getMessage() for r in caplog.records if "forwarding.json" in r.getMessage()] == [
        f"forwarding state {tmp_path / 'forwarding.json'} unreadable (JSON nested too deeply "
        f"(arrays or objects in each other)): set aside as {tmp_path / 'forwarding.json.bad'}"
    ]


def test_a_second_damaged_state_file_does_not_overwrite_the_first_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: both were moved to ``forwarding.json.bad`` with ``os.replace``:
    the second damaged file set aside lost the first."""
    for text in ("{first", "[second"):
        (tmp_path / "forwarding.json").write_text(text)
        with caplog.at_level(logging.ERROR):
            assert list(ForwardingState(tmp_path)) == []
    assert (tmp_path / "forwarding.json.bad").read_text() == "{first"
    assert (tmp_path / "forwarding.json.bad-2").read_text() == "[second"
    assert not (tmp_path / "forwarding.json").exists()
    assert f"set aside as {tmp_path / 'forwarding.json.bad-2'}" in caplog.text


def test_the_most_extensions_at_the_longest_are_read_back_at_start(tmp_path: Path) -> None:
    """The cap keeps the file under the size a start reads: past that size
    the file would be set aside and every setting lost."""
    state = ForwardingState(tmp_path)
    longest = Forwarding(True, "7" * 40, "7" * 40)
    for n in range(forwarding_state.MAX_EXTENSIONS):
        state._items[f"{n:080d}"] = longest
    state.set("0" * 80, longest)  # a change of one already set: allowed at the cap
    with pytest.raises(ValueError, match="10000 extensions carry a setting already"):
        state.set("x", Forwarding(dnd=True))
    assert len(list(ForwardingState(tmp_path))) == forwarding_state.MAX_EXTENSIONS
    assert not (tmp_path / "forwarding.json.bad").exists()


async def test_past_the_most_extensions_a_new_one_is_409_and_asterisk_is_not_told(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forwarding_state, "MAX_EXTENSIONS", 2)
    for ext in ("101", "102"):
        ok = await client.put(
            f"/api/v1/extensions/{ext}/forwarding", json={"dnd": True}, headers=auth("all")
        )
        assert ok.status_code == 200, ok.text
    full = await client.put(
        "/api/v1/extensions/103/forwarding", json={"dnd": True}, headers=auth("all")
    )
    assert full.status_code == 409, full.text
    assert "at most 2 extensions" in full.json()["detail"]
    assert "CALLROUTER_DND_103" not in ajam_replay.globals
    # Clearing 103 (nothing set) and changing 101 still work; clearing 102 makes room.
    for ext, body in (
        ("103", {"dnd": False}),
        ("101", {"forward_to": "200"}),
        ("102", {"dnd": False}),
    ):
        answer = await client.put(
            f"/api/v1/extensions/{ext}/forwarding", json=body, headers=auth("all")
        )
        assert answer.status_code == 200, answer.text
    again = await client.put(
        "/api/v1/extensions/103/forwarding", json={"dnd": True}, headers=auth("all")
    )
    assert again.status_code == 200, again.text
    assert ajam_replay.globals["CALLROUTER_DND_103"] == "1"


def _list_reply(sent: SentAction, event: str, items: list[dict[str, str]]) -> bytes:
    aid = sent.action_id or ""
    blocks = [f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n"]
    for item in items:
        fields = "".join(f"{k}: {v}\r\n" for k, v in item.items())
        blocks.append(f"Event: {event}\r\nActionID: {aid}\r\n{fields}\r\n")
    blocks.append(
        f"Event: {event}ListComplete\r\nActionID: {aid}\r\nEventList: Complete\r\n"
        f"ListItems: {len(items)}\r\n\r\n"
    )
    return "".join(blocks).encode()


async def test_presence_joins_hint_and_device_state_with_dnd_for_extensions_the_token_sees(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    ajam_replay.on(
        "ExtensionStateList",
        lambda sent: _list_reply(
            sent,
            "ExtensionStatus",
            [
                {
                    "Exten": "101",
                    "Context": "hints",
                    "Hint": "PJSIP/101",
                    "Status": "1",
                    "StatusText": "InUse",
                },
                {
                    "Exten": "102",
                    "Context": "hints",
                    "Hint": "PJSIP/102",
                    "Status": "0",
                    "StatusText": "Idle",
                },
            ],
        ).replace(b"Event: ExtensionStatusListComplete", b"Event: ExtensionStateListComplete"),
    )
    ajam_replay.on(
        "DeviceStateList",
        lambda sent: _list_reply(
            sent,
            "DeviceStateChange",
            [
                {"Device": "PJSIP/101", "State": "INUSE"},
                {"Device": "PJSIP/102", "State": "NOT_INUSE"},
            ],
        ).replace(b"Event: DeviceStateChangeListComplete", b"Event: DeviceStateListComplete"),
    )
    await client.put("/api/v1/extensions/101/forwarding", json={"dnd": True}, headers=auth("t101"))
    mine = (await client.get("/api/v1/presence", headers=auth("t101"))).json()["extensions"]
    assert mine == [
        {
            "extension": "101",
            "state": "InUse",
            "hint": "PJSIP/101",
            "device_state": "INUSE",
            "dnd": True,
            "forward_to": None,
        }
    ]
    everyone = (await client.get("/api/v1/presence", headers=auth("all"))).json()["extensions"]
    assert [e["extension"] for e in everyone] == ["101", "102"]
    assert everyone[1]["device_state"] == "NOT_INUSE"
    assert (await client.get("/api/v1/presence", headers=auth("reader"))).status_code == 403


async def test_a_misspelt_field_is_named_with_the_closest(client: httpx.AsyncClient) -> None:
    """``forwardTo`` (a 1C developer's camelCase) is not silently ignored, and the
    problem says which field was meant."""
    refused = await client.put(
        "/api/v1/extensions/101/forwarding", json={"forwardTo": "102"}, headers=auth("t101")
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == "forwardTo"
    assert refused.json()["did_you_mean"] == "forward_to"


async def test_forwarding_to_an_internal_number_goes_through_the_internal_dial_context(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """``forward_to`` 102 was dialled as ``Local/102@<outbound_context>``, which a real
    trunk's context does not know (issue 16). Internal as a transfer decides it
    (the number plan), it is flagged for ``[callrouter-dial]``, which dials it as
    an extension, behind no dial prefix; an outside number is not flagged."""
    response = await client.put(
        "/api/v1/extensions/101/forwarding", json={"forward_to": "102"}, headers=auth("t101")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"extension": "101", "dnd": False, "forward_to": "102"}
    assert ajam_replay.globals["CALLROUTER_FWD_101"] == "102"
    assert ajam_replay.globals["CALLROUTER_FWDINT_101"] == "1"

    # Set again after Asterisk lost its globals, from the file (which stores no flag).
    ajam_replay.globals.clear()
    ajam_replay.queue_event(Event="FullyBooted", Privilege="system,all", Status="Fully Booted")
    await ajam_replay.settle(engine)
    await until(lambda: ajam_replay.globals.get("CALLROUTER_FWDINT_101") == "1")

    await client.put(
        "/api/v1/extensions/101/forwarding",
        json={"forward_to": "89161234567"},
        headers=auth("t101"),
    )
    assert ajam_replay.globals["CALLROUTER_FWD_101"] == "979161234567"
    assert ajam_replay.globals["CALLROUTER_FWDINT_101"] == ""


async def test_a_forward_that_loops_is_400_and_nothing_is_set(
    client: httpx.AsyncClient, engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """101 forwarded to itself was accepted (issue 16); so would be 102 -> 101 while
    101 -> 102: through ``[callrouter-dial]`` each dials the other without end."""
    itself = await client.put(
        "/api/v1/extensions/101/forwarding", json={"forward_to": "101"}, headers=auth("all")
    )
    assert itself.status_code == 400, itself.text
    assert itself.json()["field"] == "forward_to"
    assert itself.json()["detail"] == "forward_to: 101 cannot forward to itself (a loop)"
    assert ajam_replay.count("Setvar") == 0
    assert not (engine.api.state_dir / "forwarding.json").exists()

    for ext, to in (("101", "102"), ("102", "103")):
        done = await client.put(
            f"/api/v1/extensions/{ext}/forwarding", json={"forward_to": to}, headers=auth("all")
        )
        assert done.status_code == 200, done.text
    sent = ajam_replay.count("Setvar")
    back = await client.put(
        "/api/v1/extensions/103/forwarding", json={"forward_to": "101"}, headers=auth("all")
    )
    assert back.status_code == 400, back.text
    assert back.json()["detail"] == (
        "forward_to: 101 forwards back to 103 (103 -> 101 -> 102 -> 103): a loop"
    )
    assert ajam_replay.count("Setvar") == sent
    stored = await client.get("/api/v1/extensions/103/forwarding", headers=auth("all"))
    assert stored.json()["forward_to"] is None


async def test_a_stored_forward_that_loops_keeps_dialling_out_and_is_named_at_start(
    engine: Engine, ajam_replay: ReplayAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade (issue 16): a forwarding.json written before internal forwards
    went through ``[callrouter-dial]`` and before loops were refused may hold
    101 -> 101, or 102 -> 103 -> 102. Re-applied at start with
    ``CALLROUTER_FWDINT_*`` set, the pasted new ``[callrouter-dial]`` would dial
    Local channels round and round (40 for one call on the sandbox); they keep
    dialling through the outbound context as the version that stored them did,
    with one WARNING each saying what to do.
    A stored internal forward that does not loop is flagged as a new one is."""
    (engine.api.state_dir / "forwarding.json").write_text(
        json.dumps(
            {
                "version": 1,
                "extensions": {
                    "101": {"dnd": False, "forward_to": "101", "dial": "101"},
                    "102": {"dnd": False, "forward_to": "103", "dial": "103"},
                    "103": {"dnd": False, "forward_to": "102", "dial": "102"},
                    "104": {"dnd": False, "forward_to": "105", "dial": "105"},
                },
            }
        ),
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="router.api.forwarding"):
        async with await _client(engine, None):
            await until(lambda: ajam_replay.globals.get("CALLROUTER_FWDINT_104") == "1")
            await until(lambda: "CALLROUTER_FWDINT_103" in ajam_replay.globals)
            for ext, to in (("101", "101"), ("102", "103"), ("103", "102")):
                assert ajam_replay.globals[f"CALLROUTER_FWD_{ext}"] == to
                assert ajam_replay.globals[f"CALLROUTER_FWDINT_{ext}"] == ""
            # A second re-apply (a gap) says it no more.
            ajam_replay.globals.clear()
            ajam_replay.queue_event(Event="FullyBooted", Privilege="system,all", Status="x")
            await ajam_replay.settle(engine)
            await until(lambda: "CALLROUTER_FWDINT_103" in ajam_replay.globals)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3, warned
    assert warned[0] == (
        "forwarding of 101 in "
        f"{engine.api.state_dir / 'forwarding.json'}, stored by an earlier callrouter, "
        "loops (forward_to: 101 cannot forward to itself (a loop)): it is dialled through "
        "the outbound context as before, not through [callrouter-dial]; clear it or "
        "forward it to a number outside the loop (PUT /api/v1/extensions/101/forwarding)"
    )
    assert "(102 -> 103 -> 102)" in warned[1]


async def test_a_burst_of_reloads_and_gaps_reapplies_the_globals_at_most_twice(
    engine: Engine, ajam_replay: ReplayAsterisk
) -> None:
    """An Asterisk whose events overflow the queue makes a stream gap of every
    poll, each ``module reload`` sends a ``Reload`` (``core reload`` one, with
    ``Module: All``, on the sandbox's Asterisk 22), and a hostile AMI peer
    sends as many as it likes: each spawned a re-apply of its
    own, every one of them setting three globals for each of up to 10,000
    stored extensions (issue 16). One runs at a time and one more waits for
    it: a burst asks for at most that second run, which sets what the burst
    may have cleared."""
    ctx = ApiContext(engine=engine.api, settings=settings(), feed=None)
    service = ForwardingService(ctx, Dialing(engine.api.config, "9"))
    try:
        for ext in ("101", "102", "103"):
            service.state.set(ext, Forwarding(dnd=True))
        before = ajam_replay.count("Setvar")
        for _ in range(50):
            service._observe(make_event("Reload", Module="x", Status="0"), None)
        for _ in range(50):
            service._observe(StreamGap(time.time() - 1, time.time(), "reconnect"), None)
        while service._tasks:
            await asyncio.gather(*list(service._tasks))
        runs = (ajam_replay.count("Setvar") - before) // 9
        assert 1 <= runs <= 2, runs
        assert ajam_replay.globals["CALLROUTER_DND_103"] == "1"
    finally:
        service.stop_watching()


async def test_presence_says_how_many_list_items_were_skipped_for_a_long_line(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16: an ``ExtensionStateList`` item skipped for a line over 64 KiB
    (no Asterisk sends one: a broken or hostile AMI peer) left its extension
    ``Unknown``, as if it had no hint, and nothing in the answer said the list
    was short: ``unread_items`` counts the items both lists lack."""
    items = [
        {"Exten": "101", "Context": "hints", "Hint": "PJSIP/101", "StatusText": "InUse"},
        {"Exten": "102", "Context": "hints", "Hint": "PJSIP/" + "2" * 70_000, "StatusText": "Idle"},
    ]
    ajam_replay.on(
        "ExtensionStateList",
        lambda sent: _list_reply(sent, "ExtensionStatus", items).replace(
            b"Event: ExtensionStatusListComplete", b"Event: ExtensionStateListComplete"
        ),
    )
    ajam_replay.on(
        "DeviceStateList",
        lambda sent: _list_reply(
            sent, "DeviceStateChange", [{"Device": "PJSIP/101", "State": "INUSE"}]
        ).replace(b"Event: DeviceStateChangeListComplete", b"Event: DeviceStateListComplete"),
    )
    await client.put("/api/v1/extensions/102/forwarding", json={"dnd": True}, headers=auth("all"))
    answer = (await client.get("/api/v1/presence", headers=auth("all"))).json()
    assert [(e["extension"], e["state"]) for e in answer["extensions"]] == [
        ("101", "InUse"),
        ("102", "Unknown"),
    ]
    assert answer["unread_items"] == 1
    del items[1]
    answer = (await client.get("/api/v1/presence", headers=auth("all"))).json()
    assert answer["unread_items"] == 0


async def test_presence_says_a_list_cut_before_its_closing_event_is_partial(
    client: httpx.AsyncClient,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: an AMI client that hands over a list without its closing
    event (``complete`` false: the interface allows it; the shipped clients
    answer 503 instead) had its items used as all of Asterisk's: an extension
    cut off the list was missing from the answer as if it had no hint. The
    answer now says ``complete: false``."""
    from router.ami import client as ami_client
    from router.ami.protocol import assemble_result

    monkeypatch.setattr(
        ami_client, "assemble_result", lambda messages: assemble_result(messages, strict=False)
    )
    cut = True

    def states(sent: SentAction) -> bytes:
        whole = _list_reply(
            sent,
            "ExtensionStatus",
            [
                {"Exten": "101", "Context": "hints", "Hint": "PJSIP/101", "StatusText": "InUse"},
                {"Exten": "102", "Context": "hints", "Hint": "PJSIP/102", "StatusText": "Idle"},
            ],
        )
        if cut:  # the second item and the closing event never came
            item = b"Event: ExtensionStatus\r\n"
            return whole[: whole.index(item, whole.index(item) + 1)]
        return whole.replace(
            b"Event: ExtensionStatusListComplete", b"Event: ExtensionStateListComplete"
        )

    ajam_replay.on("ExtensionStateList", states)
    ajam_replay.on(
        "DeviceStateList",
        lambda sent: _list_reply(
            sent, "DeviceStateChange", [{"Device": "PJSIP/101", "State": "INUSE"}]
        ).replace(b"Event: DeviceStateChangeListComplete", b"Event: DeviceStateListComplete"),
    )
    # The shipped AJAM client refuses the cut body: 503, nothing passed off.
    with monkeypatch.context() as shipped:
        shipped.setattr(ami_client, "assemble_result", assemble_result)
        refused = await client.get("/api/v1/presence", headers=auth("all"))
    assert refused.status_code == 503
    answer = (await client.get("/api/v1/presence", headers=auth("all"))).json()
    assert [e["extension"] for e in answer["extensions"]] == ["101"]
    assert answer["complete"] is False
    assert answer["unread_items"] == 0
    assert any(
        "ExtensionStateList answered 1 item without its closing event" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )
    cut = False
    answer = (await client.get("/api/v1/presence", headers=auth("all"))).json()
    assert [e["extension"] for e in answer["extensions"]] == ["101", "102"]
    assert answer["complete"] is True


async def test_a_list_cut_answer_after_answer_is_warned_once_per_episode(
    engine: Engine,
    feed: EventFeed,
    ajam_replay: ReplayAsterisk,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: every presence answer built from a cut list logged a WARNING,
    and a 1C panel polls presence every few seconds: the log flooded with the
    one line. Said once until the list comes whole again (said at INFO),
    then once more when it is cut again; a counter counts every such answer."""
    from router.ami import client as ami_client
    from router.ami.protocol import assemble_result

    monkeypatch.setattr(
        ami_client, "assemble_result", lambda messages: assemble_result(messages, strict=False)
    )
    cut = True

    def states(sent: SentAction) -> bytes:
        whole = _list_reply(
            sent,
            "ExtensionStatus",
            [{"Exten": "101", "Context": "hints", "Hint": "PJSIP/101", "StatusText": "Idle"}],
        ).replace(b"Event: ExtensionStatusListComplete", b"Event: ExtensionStateListComplete")
        return whole[: whole.index(b"Event: ExtensionStateListComplete")] if cut else whole

    ajam_replay.on("ExtensionStateList", states)
    ajam_replay.on(
        "DeviceStateList",
        lambda sent: _list_reply(
            sent, "DeviceStateChange", [{"Device": "PJSIP/101", "State": "INUSE"}]
        ).replace(b"Event: DeviceStateChangeListComplete", b"Event: DeviceStateListComplete"),
    )
    app = build_app(
        ApiContext(engine=engine.api, settings=settings(), feed=feed, metrics=engine.metrics)
    )
    counter = engine.metrics.presence_incomplete.labels("ExtensionStateList")

    def said(level: int) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == level and r.getMessage().startswith("presence: AMI")
        ]

    caplog.set_level(logging.INFO, logger="router.api.forwarding")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as polling:

        async def complete() -> bool:
            answer = await polling.get("/api/v1/presence", headers=auth("all"))
            assert answer.status_code == 200
            return bool(answer.json()["complete"])

        assert [await complete() for _ in range(5)] == [False] * 5
        assert said(logging.WARNING) == [
            "presence: AMI ExtensionStateList answered 1 item without its closing event: "
            "the answer says complete false (not said again until it answers whole; "
            "callrouter_presence_incomplete_total counts each)"
        ]
        assert counter._value.get() == 5
        cut = False
        assert await complete()
        assert await complete()
        assert said(logging.INFO) == [
            "presence: AMI ExtensionStateList answers whole again, after 5 answers "
            "without its closing event"
        ]
        cut = True
        assert not await complete()
    assert len(said(logging.WARNING)) == 2  # a new episode is said again
    assert counter._value.get() == 6
    assert engine.metrics.presence_incomplete.labels("DeviceStateList")._value.get() == 0


async def test_presence_tells_a_device_state_cut_not_once_per_extension_whole(
    client: httpx.AsyncClient, ajam_replay: ReplayAsterisk
) -> None:
    """Issue 16: one device's state is told for every extension whose hint
    names it. A hostile AMI peer's device with a 60 KB state and 300 hints
    naming it (a 330 KB list) was answered with 18 MB: the state is cut to 32
    characters, as no state of Asterisk's is longer."""
    items = [
        {"Exten": str(1000 + i), "Context": "hints", "Hint": "PJSIP/x", "StatusText": "Idle"}
        for i in range(300)
    ]
    ajam_replay.on(
        "ExtensionStateList",
        lambda sent: _list_reply(sent, "ExtensionStatus", items).replace(
            b"Event: ExtensionStatusListComplete", b"Event: ExtensionStateListComplete"
        ),
    )
    ajam_replay.on(
        "DeviceStateList",
        lambda sent: _list_reply(
            sent,
            "DeviceStateChange",
            [{"Device": "PJSIP/x", "State": "Z" * 60_000}, {"Device": "PJSIP/y", "State": "BUSY"}],
        ).replace(b"Event: DeviceStateChangeListComplete", b"Event: DeviceStateListComplete"),
    )
    response = await client.get("/api/v1/presence", headers=auth("all"))
    assert response.status_code == 200
    extensions = response.json()["extensions"]
    assert len(extensions) == 300
    assert {e["device_state"] for e in extensions} == {"Z" * 31 + "…"}
    assert len(response.content) < 300 * 200
