"""The AJAM client and event stream against the real Asterisk 22 sandbox."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.message import Event
from router.ami.stream import Backoff, EventStream, StreamGap
from router.errors import AMIActionError, AMIAuthenticationError, AMIConnectionError
from router.sandbox import Sandbox
from tests.integration._live import manager_session_dropped
from tests.integration.conftest import _start_or_give_up, private_secret


def settings(box: Sandbox, user: str = "admin", **kw: object) -> ClientSettings:
    return ClientSettings(
        url=box.url, username=user, secret=str(kw.pop("secret", box.secret)), **kw
    )  # type: ignore[arg-type]


@pytest.fixture(params=["rawman", "mxml"])
async def client(sandbox: Sandbox, request: pytest.FixtureRequest) -> AsyncIterator[AJAMClient]:
    async with AJAMClient(settings(sandbox, format=request.param)) as c:
        yield c


async def next_event(
    stream_iter: AsyncIterator[Event | StreamGap], predicate: object, timeout: float = 15.0
) -> Event:
    async def find() -> Event:
        async for item in stream_iter:
            if isinstance(item, Event) and predicate(item):  # type: ignore[operator]
                return item
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout)


def caller_id() -> str:
    """A unique caller number, so this test's events stand out on a shared Asterisk."""
    return "7916" + str(uuid.uuid4().int)[:7]


async def test_login_and_ping(client: AJAMClient) -> None:
    result = await client.action("Ping")
    assert result.response["Ping"] == "Pong"
    assert client.session_ttl == 60


async def test_wrong_password_is_a_clear_error(sandbox: Sandbox) -> None:
    client = AJAMClient(settings(sandbox, secret="wrong"))
    with pytest.raises(AMIAuthenticationError, match=r"refused login for .admin.*Authentication"):
        await client.login()
    await client.aclose()


async def test_digest_auth(sandbox: Sandbox) -> None:
    async with AJAMClient(settings(sandbox, auth="digest")) as c:
        assert (await c.action("Ping")).ok
    bad = AJAMClient(settings(sandbox, auth="digest", secret="wrong"))
    with pytest.raises(AMIAuthenticationError, match="401"):
        await bad.login()
    await bad.aclose()


async def test_least_privilege_user_is_refused_originate(sandbox: Sandbox) -> None:
    async with AJAMClient(settings(sandbox, user="watcher")) as c:
        with pytest.raises(AMIActionError, match="Permission denied"):
            await c.action(
                "Originate", {"Channel": "Local/1@sink", "Application": "Wait", "Data": "1"}
            )


async def test_core_settings_and_global_variables(
    client: AJAMClient, sandbox_globals_kept: None
) -> None:
    settings_ = (await client.action("CoreSettings")).response
    assert settings_["AMIversion"].startswith("11.")
    assert settings_["AsteriskVersion"].startswith("22.")
    value = "Иванов & <Ко> 'q' a+b =c"
    await client.action("Setvar", {"Variable": "CR_IT", "Value": value})
    got = await client.action("Getvar", {"Variable": "CR_IT"})
    assert got.response["Value"] == value


async def test_call_lifecycle_originate_redirect_hangup(client: AJAMClient) -> None:
    number = caller_id()
    stream = EventStream(client, ["Newchannel", "Newexten", "UserEvent", "Hangup"])
    events = stream.__aiter__()
    await client.action(
        "Originate",
        {
            "Channel": "Local/74952293042@incoming",
            "Application": "Wait",
            "Data": "30",
            "CallerID": f"Test <{number}>",
            "Async": True,
        },
    )
    request = await next_event(
        events, lambda e: e.get("UserEvent") == "RouteRequest" and e.get("Caller") == number
    )
    channel = request["Channel"]
    listing = await client.action("CoreShowChannels")
    assert listing.complete
    assert channel in [item["Channel"] for item in listing.items]
    assert int(listing.closing["ListItems"]) == len(listing.items)  # type: ignore[index]
    await client.action(
        "Setvar", {"Channel": channel, "Variable": "CRM_MANAGER", "Value": "Пётр Петров"}
    )
    got = await client.action("Getvar", {"Channel": channel, "Variable": "CRM_MANAGER"})
    assert got.response["Value"] == "Пётр Петров"
    await client.action(
        "Redirect", {"Channel": channel, "Context": "managers", "Exten": "101", "Priority": 1}
    )
    landed = await next_event(
        events,
        lambda e: (
            e.name == "Newexten" and e.get("Channel") == channel and e.get("Context") == "managers"
        ),
    )
    assert landed["Exten"] == "101"
    await client.action("Hangup", {"Channel": channel})
    await next_event(events, lambda e: e.name == "Hangup" and e.get("Channel") == channel)
    with pytest.raises(AMIActionError, match="Channel does not exist"):
        await client.action(
            "Redirect", {"Channel": channel, "Context": "managers", "Exten": "101", "Priority": 1}
        )
    await events.aclose()  # type: ignore[attr-defined]


async def test_stream_sees_a_calls_events_in_order(client: AJAMClient) -> None:
    number = caller_id()
    stream = EventStream(client)
    events = stream.__aiter__()
    await client.action(
        "Originate",
        {
            "Channel": "Local/74952293042@incoming",
            "Application": "Wait",
            "Data": "1",
            "CallerID": number,
            "Async": True,
        },
    )
    first = await next_event(events, lambda e: e.name == "Newchannel")
    linkedid = first["Linkedid"]
    seen: list[Event] = [first]
    while True:
        item = await next_event(events, lambda e: e.get("Linkedid") == linkedid)
        seen.append(item)
        if item.name == "UserEvent":
            await client.action("Hangup", {"Channel": item["Channel"]})
        if item.name == "Hangup" and sum(e.name == "Hangup" for e in seen) == 2:
            break
    names = [e.name for e in seen]
    assert names[0] == "Newchannel"
    assert names.index("UserEvent") < names.index("Hangup")
    # Asterisk stamps an event on the thread that raises it, before it queues
    # it: events of the two Local halves raised at once may be queued a
    # microsecond out of their stamps' order (seen in CI: 1 us). Events the
    # stream reordered would be out by a poll's worth, far more than that.
    stamps = [float(e["Timestamp"]) for e in seen]
    backwards = [(a, b) for a, b in itertools.pairwise(stamps) if b < a - 0.001]
    assert not backwards, backwards
    for channel in {e["Channel"] for e in seen if e.name == "Hangup"}:
        mine = [e.name for e in seen if e["Channel"] == channel]  # CEL's records too
        assert mine.index("Newchannel") < mine.index("Hangup"), (channel, mine)
    priorities = [
        int(e["Priority"]) for e in seen if e.name == "Newexten" and e["Context"] == "incoming"
    ]
    assert priorities == sorted(priorities)
    await events.aclose()  # type: ignore[attr-defined]


async def test_non_ascii_user_event_round_trips(client: AJAMClient) -> None:
    tag = uuid.uuid4().hex
    stream = EventStream(client, ["UserEvent"])
    events = stream.__aiter__()
    text = "Звонок от ООО «Ромашка» & <VIP> 'кавычки' \"двойные\" 100% +7"
    await client.action("UserEvent", {"UserEvent": "CRRoundTrip", "Tag": tag, "Note": text})
    got = await next_event(events, lambda e: e.get("Tag") == tag)
    assert got["Note"] == text
    assert got["UserEvent"] == "CRRoundTrip"
    await events.aclose()  # type: ignore[attr-defined]


#: manager.conf httptimeout of ``expiring_sandbox``: a session idle this long
#: expires. Under 10 s Asterisk answers a WaitEvent at once (it caps the wait at
#: httptimeout - 10 s), which only the expiry test's few polls meet.
EXPIRY = 6


@pytest.fixture
def expiring_sandbox() -> Iterator[Sandbox]:
    """A private Asterisk whose idle manager sessions expire after ``EXPIRY`` s."""
    box = _start_or_give_up(f"pytest-{os.getpid()}-expiring", httptimeout=EXPIRY)
    try:
        yield box
    finally:
        box.remove()


async def test_an_httptimeout_under_10_s_is_a_warning_at_login(
    expiring_sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asterisk's cookie carries httptimeout as its Max-Age; at 10 s or less
    every WaitEvent comes back at once (busy polling), said at login."""
    import router.ami.client as client_module

    monkeypatch.setattr(client_module, "_LIFETIME_SAID", {}, raising=False)
    with caplog.at_level(logging.WARNING, logger="router.ami.client"):
        async with AJAMClient(settings(expiring_sandbox)) as c:
            assert c.session_ttl == EXPIRY
            started = time.monotonic()
            await c.wait_event(20)
            assert time.monotonic() - started < 5  # answered at once, not in 20 s
    said = [r.getMessage() for r in caplog.records if "httptimeout" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"manager.conf [general] httptimeout is {EXPIRY} s")


async def test_manager_reload_applies_a_new_httptimeout(expiring_sandbox: Sandbox) -> None:
    """docs/asterisk-ajam.md: after changing httptimeout, ``manager reload``
    applies it (the cookie's Max-Age), to new sessions and to a live one at its
    next request; ``module reload http`` does not (httptimeout is manager.conf's,
    not the HTTP server's)."""
    box = expiring_sandbox
    conf = box.inst / "etc" / "manager.conf"
    text = conf.read_text(encoding="utf-8")
    assert f"httptimeout = {EXPIRY}\n" in text
    conf.write_text(text.replace(f"httptimeout = {EXPIRY}\n", "httptimeout = 60\n"), "utf-8")
    async with AJAMClient(settings(box)) as live:
        assert live.session_ttl == EXPIRY
        await asyncio.to_thread(box.cli, "module reload http")
        async with AJAMClient(settings(box)) as after_http:
            assert after_http.session_ttl == EXPIRY  # not applied
        await asyncio.to_thread(box.cli, "manager reload")
        async with AJAMClient(settings(box)) as after_manager:
            assert after_manager.session_ttl == 60
        assert (await live.action("Ping")).ok
        assert live.session_ttl == 60  # the live session's next answer
        assert live.session_generation == 1  # the same session, not a login again


@pytest.mark.slow
async def test_session_expiry_is_survived(expiring_sandbox: Sandbox) -> None:
    """httptimeout=6: idle past it, the next action and the stream just carry on."""
    box = expiring_sandbox
    async with AJAMClient(settings(box)) as c:
        assert c.session_ttl is None or c.session_ttl == EXPIRY
        # Idle until the session expired and Asterisk's purge (every 5 s) dropped it.
        await manager_session_dropped(box, "admin", EXPIRY + 20)
        assert (await c.action("Ping")).ok  # re-login happened underneath
        assert c.session_generation == 2
        stream = EventStream(c, ["UserEvent"], backoff=Backoff(initial=0.1, maximum=0.5))
        items = stream.__aiter__()
        await c.action("UserEvent", {"UserEvent": "Before"})
        await next_event(items, lambda e: e["UserEvent"] == "Before")
        # Nobody polls: Asterisk drops the session and its queue.
        await manager_session_dropped(box, "admin", EXPIRY + 20)
        await c.action("UserEvent", {"UserEvent": "After"})
        gap = await asyncio.wait_for(items.__anext__(), 15)
        assert isinstance(gap, StreamGap)
        assert gap.reason == "session"
        # "After" may or may not survive (it was sent after the re-login); the
        # stream must go on either way.
        await c.action("UserEvent", {"UserEvent": "Later"})
        await next_event(items, lambda e: e["UserEvent"] == "Later")
        await items.aclose()  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_asterisk_restart_mid_stream_resumes_with_gap(scratch_sandbox: Sandbox) -> None:
    async with AJAMClient(settings(scratch_sandbox, request_timeout=3.0)) as c:
        stream = EventStream(c, ["UserEvent"], backoff=Backoff(initial=0.1, maximum=0.5))
        items = stream.__aiter__()
        await c.action("UserEvent", {"UserEvent": "BeforeRestart"})
        await next_event(items, lambda e: e["UserEvent"] == "BeforeRestart")
        poll = asyncio.ensure_future(items.__anext__())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.to_thread(scratch_sandbox.restart, down_for=1.0)
        gap = await asyncio.wait_for(poll, 30)
        assert isinstance(gap, StreamGap), gap
        assert gap.reason == "reconnect"
        assert time.monotonic() - started < 30
        await c.action("UserEvent", {"UserEvent": "AfterRestart"})
        await next_event(items, lambda e: e["UserEvent"] == "AfterRestart")
        await items.aclose()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[Sandbox]:
    box = Sandbox.start(name=f"pytest-{os.getpid()}-tls", tls=True, secret=private_secret())
    try:
        yield box
    finally:
        box.remove()


async def test_tls_with_verification(tls_sandbox: Sandbox) -> None:
    ok = ClientSettings(
        url=tls_sandbox.tls_url,
        username="admin",
        secret=tls_sandbox.secret,
        verify=str(tls_sandbox.ca_file),
    )
    async with AJAMClient(ok) as c:
        assert (await c.action("Ping")).ok
    untrusted = ClientSettings(url=tls_sandbox.tls_url, username="admin", secret=tls_sandbox.secret)
    client = AJAMClient(untrusted)
    with pytest.raises(AMIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await client.login()
    await client.aclose()


async def test_bridge_ids_of_the_channel_listing_are_bridgelists_and_a_parking_lot_is_holding(
    client: AJAMClient,
) -> None:
    """What the recorder's rebuild after a gap reads (router/recordings/bridges.py): a
    talking channel's ``BridgeId`` in ``CoreShowChannels`` is the ``BridgeUniqueid`` of a
    ``BridgeListItem`` typed as a conversation, and a parked channel's is a holding one."""
    from router.recordings.bridges import bridged_channels, conversations

    tag = "hb" + str(uuid.uuid4().int)[:8]
    number = caller_id()
    await client.action(
        "Originate",
        {
            "Channel": f"Local/{tag}t@sandbox-phone",
            "Context": "outbound",
            "Exten": number,
            "Priority": "1",
            "Async": "true",
        },
    )
    await client.action(
        "Originate",
        {"Channel": f"Local/{tag}p@sandbox-phone", "Application": "Park", "Async": "true"},
    )
    try:
        talking: set[str] = set()
        parked: set[str] = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listing = (await client.action("CoreShowChannels")).items
            bridged = bridged_channels(listing)
            talking = {b for c, b in bridged.items() if f"{tag}t@" in c or number in c}
            parked = {b for c, b in bridged.items() if f"{tag}p@" in c}
            if talking and parked:
                break
            await asyncio.sleep(0.2)
        assert talking, "the originated call never entered a bridge"
        assert parked, "the parked call never entered the parking lot"
        bridges = (await client.action("BridgeList")).items
        assert conversations(bridges, talking | parked) == talking
        # The lot is listed (with its type), not merely missing from the listing.
        assert parked <= {item.get("BridgeUniqueid") for item in bridges}
    finally:
        await client.action("Hangup", {"Channel": f"/{tag}|{number}/"}, check=False)
