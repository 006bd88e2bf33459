"""The whole life of every call from CEL, with real SIP phones (issue 14).

The engine runs in this process with a plugin that records every
``callrouter_call_event``; real baresip phones (router/sandbox/phones.py)
make the calls through the shipped dialplan and the sandbox's CEL
(cel_manager live, cel_sqlite3_custom stored). The gap tests check, for each
call the store holds, that what the plugins were told is exactly what a fresh
fold of Asterisk's own records says: every fact, each once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from router.api.auth import hash_token
from router.calllife.fold import Folder
from router.calllife.model import CallEvent, Transfer
from router.calllife.service import MARK_EVERY, MARK_FILE
from router.calllife.sources import PostgresSource, SqliteSource
from router.config import Config, load_config
from router.engine import Engine, EngineOptions
from router.errors import SandboxError
from router.hookspecs import hookimpl
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.phones import Phones
from router.sandbox.postgres import Postgres
from tests.integration._live import cli, free_port, manager_sessions, until
from tests.integration.conftest import private_secret

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).parents[2]
OWNER = "74950000101"  # routed to 101 (falls back to the queue when 101 does not answer)
GROUP = "74950000600"  # routed to the ring group 600 (101 & 102 & 103)
QUEUE = "74950000700"  # no rule: the dialplan's default route, the queue "sales"
VIA_LOCAL = "74950000111"  # routed to 101 through a Local channel kept in the call
#: A manager reached through a Local channel that stays in the call (``/n``), as
#: FreePBX's from-internal and queue members reach theirs: ``Local/101@...;1`` talks
#: with the customer, its ``;2`` half dials the phone's ``PJSIP/101``.
VIA_LOCAL_DIALPLAN = """
[sandbox-via-local]
exten => _10X,1,Dial(Local/${EXTEN}@sandbox-phones/n,30,t)
 same => n,Hangup()
"""
RULES = f"""version: 1
rules:
  - name: owner
    on: call
    when: did == "{OWNER}"
    do:
      - redirect: {{context: callrouter-dial, exten: "101"}}
  - name: group
    on: call
    when: did == "{GROUP}"
    do:
      - redirect: {{context: sandbox-phones, exten: "600"}}
  - name: via-local
    on: call
    when: did == "{VIA_LOCAL}"
    do:
      - redirect: {{context: sandbox-via-local, exten: "101"}}
"""
#: manager.conf httptimeout: short, so a frozen router's session expires in the test.
HTTPTIMEOUT = 12
SETTLE = 2.0


class Told:
    """A plugin that writes down every call event it is told."""

    __name__ = "told"

    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    @hookimpl
    def callrouter_call_event(self, event: CallEvent) -> None:
        self.events.append(event)

    def of(self, call_id: str) -> list[CallEvent]:
        return [e for e in self.events if e.call_id == call_id]

    def story(self, call_id: str) -> list[tuple[str, str | None]]:
        return [(e.kind, e.extension) for e in self.of(call_id)]


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    dialplan = (REPO / "examples" / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    pbx = Sandbox.start(
        name=f"pytest-{os.getpid()}-calllife",
        secret=private_secret(),
        httptimeout=HTTPTIMEOUT,
        extra_dialplan=dialplan + VIA_LOCAL_DIALPLAN,
    )
    try:
        yield pbx
    finally:
        pbx.remove()


@pytest.fixture(scope="module")
def phones(box: Sandbox) -> Iterator[Phones]:
    with Phones.start(box, extensions=("101", "102", "103")) as started:
        yield started


@pytest.fixture(autouse=True)
def answering(phones: Phones) -> None:
    """Every phone answering with no calls: a test that failed midway left its
    call up, and the next tests failed on it (102 still talking, channels left)."""
    phones.reset()


def make_config(box: Sandbox, folder: Path, api: str = "") -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = folder / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret = "{box.secret}"\n'
        f"waitevent_timeout = 1\n"
        f'[router]\nrules = ["{folder / "rules.yaml"}"]\nstate_dir = "{folder / "state"}"\n'
        f'[history]\ncel = "sqlite://{box.inst / "log" / "cel.db"}"\nsettle_delay = {SETTLE}\n'
        + api,
        encoding="utf-8",
    )
    return load_config(path)


class Running:
    """One in-process engine with the recording plugin."""

    def __init__(self, config: Config) -> None:
        self.told = Told()
        self.engine = Engine(
            config,
            plugins=Plugins.for_config(config, extra=[self.told]),
            options=EngineOptions(watch_interval=0, live_heartbeat=0),
        )
        self.task: asyncio.Future[None] | None = None

    async def start(self) -> Running:
        await self.engine.start()
        self.task = asyncio.ensure_future(self.engine.serve())
        await asyncio.wait_for(self.engine.ready.wait(), 10)
        return self

    async def stop(self) -> None:
        self.engine.request_stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        await self.engine.stop()

    async def kill(self) -> None:
        """As SIGKILL: no drain, no shutdown hooks, no last mark; the session dropped."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for task in list(self.engine.calllife._tasks):
            task.cancel()
        self.engine.scheduler.shutdown(wait=False)
        await self.engine.ami.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def router(box: Sandbox, tmp_path: Path) -> AsyncIterator[Running]:
    running = await Running(make_config(box, tmp_path)).start()
    try:
        yield running
    finally:
        await running.stop()


async def call_of(
    told: Told, did: str, kind: str = "hangup", *, after: int, timeout: float = 30
) -> str:
    """The call id of the first call to ``did`` told after event number ``after``
    (the count when the test placed it), once its ``kind`` event was told."""
    found: list[str] = []

    def check() -> bool:
        found[:] = [e.call_id for e in told.events[after:] if e.did == did and e.kind == kind]
        return bool(found)

    await until(check, timeout, f"a {kind} of a call to {did}")
    return found[0]


async def no_channels(box: Sandbox) -> bool:
    """Asterisk has no channel up (asked off the event loop)."""
    return not (await cli(box, "core show channels concise")).strip()


async def quiet_since(box: Sandbox) -> float:
    """The moment to read Asterisk's stores from: after every earlier test's call is over.

    A call of the test before (a hangup a moment ago) would otherwise have records
    inside the window and be read as one of this test's calls, with records from
    before a store was attached (cel_pgsql) or a router was started.
    """
    await until(lambda: no_channels(box), 20, "no channels")
    await asyncio.sleep(0.2)  # CEL records of the last hangup leave after the channel
    return time.time()


def store_facts(box: Sandbox, since: float) -> dict[str, list[CallEvent]]:
    """What Asterisk's own records say about each call since ``since``."""
    calls = SqliteSource(box.inst / "log" / "cel.db").read(since)
    folder = Folder()
    return {k: folder.replay(k, records) for k, records in calls.items()}


def explain_calls(box: Sandbox, since: float, told: list[CallEvent], calls: set[str]) -> str:
    """The store's records and the told events of ``calls``: what a failure needs to
    be understood after the sandbox is gone (a CI log is all there is)."""
    stored = SqliteSource(box.inst / "log" / "cel.db").read(since)
    lines: list[str] = []
    for call in sorted(calls):
        lines.append(f"--- call {call}: told")
        lines += [
            f"  {e.at:.6f} {e.kind} {e.event_id} replayed={e.replayed}"
            for e in told
            if e.call_id == call
        ]
        lines.append("  stored:")
        lines += [
            f"  {r.at:.6f} {r.event} {r.uniqueid} {r.channel} {r.application} {r.extra_text}"
            for r in stored.get(call, [])
        ]
    return "\n".join(lines)


async def assert_told_exactly(told: list[CallEvent], box: Sandbox, since: float) -> None:
    """Every fact of a fresh fold of the store was told, each once, and nothing more.

    Asterisk writes the store behind the live stream, by as much as its CEL
    backends lag (most of a second on a loaded machine): the two are compared
    once they agree on which facts there are, or after ten seconds.
    """

    def ids() -> tuple[list[str], list[str]]:
        facts = store_facts(box, since)
        told_ids = sorted({e.event_id for e in told if e.call_id in facts})
        return told_ids, sorted(e.event_id for events in facts.values() for e in events)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mine, theirs = ids()
        if mine == theirs:
            break
        await asyncio.sleep(0.2)
    facts = store_facts(box, since)
    counts = Counter(e.event_id for e in told if e.call_id in facts)
    repeated = [k for k, n in counts.items() if n > 1]
    assert not repeated, f"told twice: {repeated}"
    expected = sorted(e.event_id for events in facts.values() for e in events)
    if sorted(counts) != expected:
        differ = set(counts).symmetric_difference(expected)
        calls = {e.call_id for events in facts.values() for e in events if e.event_id in differ}
        calls |= {e.call_id for e in told if e.event_id in differ}
        assert sorted(counts) == expected, explain_calls(box, since, told, calls)
    by_id = {e.event_id: e for events in facts.values() for e in events}
    for event in told:
        if event.event_id in by_id:
            stored = by_id[event.event_id]
            assert event.same_fact(stored), f"told {event}\nstored {stored}\n" + explain_calls(
                box, since, told, {event.call_id}
            )


async def test_the_sandbox_store_has_the_documented_indexes(box: Sandbox) -> None:
    """The sandbox gives cel.db the two indexes docs/history.md tells
    administrators to add (router.sandbox ``index_cel_store``), so the replays
    of these tests search the store as a production one's should."""
    con = sqlite3.connect(f"file:{box.cel_store}?mode=ro", uri=True)
    try:
        indexes = {
            row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        plan = [
            row[3]
            for row in con.execute(
                "EXPLAIN QUERY PLAN " + SqliteSource(box.cel_store).query, (0, 1)
            )
        ]
    finally:
        con.close()
    assert {"cel_time", "cel_linkedid"} <= indexes, indexes
    assert not any(step.startswith("SCAN cel") for step in plan), plan


# -- the flows of the must-show ------------------------------------------------


async def test_answered_by_the_owner_with_the_phones_talk_time(
    router: Running, phones: Phones
) -> None:
    mark = len(router.told.events)
    call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="8 (916) 123-45-67")
    await asyncio.to_thread(call.wait_answered, 20)
    await asyncio.sleep(2.5)
    await asyncio.to_thread(phones["101"].hangup)
    await asyncio.to_thread(call.wait_ended, 10)
    call_id = await call_of(router.told, OWNER, after=mark)
    assert router.told.story(call_id) == [
        ("ringing", "101"),
        ("answered", "101"),
        ("hangup", "101"),
    ]
    hangup = router.told.of(call_id)[-1]
    assert hangup.external == "8 (916) 123-45-67"
    assert (hangup.direction, hangup.status, hangup.hangup_by) == ("in", "ANSWER", "101")
    phone = phones["101"].calls[-1]
    assert phone.talk_seconds is not None
    assert hangup.talk_seconds is not None
    assert abs(hangup.talk_seconds - phone.talk_seconds) < 1.0


async def test_on_a_user_with_its_own_eventfilter_lines_the_ringing_is_still_told(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    """The lines ``callrouter check --manager-conf`` prints for a router told
    the call life (as with the 1C plugin) have Asterisk send a ``Newstate``
    only for a leg answering or ringing and a ``DialState`` only for
    ``RINGING``: the manager's phone is still told ringing, then answered."""
    config = make_config(box, tmp_path)
    probe = Engine(config, plugins=Plugins.for_config(config, extra=[Told()]))
    await probe.setup()
    lines = (await probe.event_selection()).manager_conf_lines()
    for line in (
        "eventfilter(action(include),name(Newstate),header(ChannelStateDesc),method(exact))=Up",
        "eventfilter(action(include),name(Newstate),header(ChannelStateDesc),method(exact))=Ringing",
        "eventfilter(action(include),name(DialState),header(DialStatus),method(exact))=RINGING",
    ):
        assert line in lines
    box.add_manager_user("router-life-lines", lines=lines)
    path = tmp_path / "router.toml"
    path.write_text(
        path.read_text().replace('username = "router"', 'username = "router-life-lines"')
    )
    running = await Running(load_config(path)).start()
    try:
        call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="8 916 555-01-02")
        await asyncio.to_thread(call.wait_answered, 20)
        await asyncio.to_thread(phones["101"].hangup)
        await asyncio.to_thread(call.wait_ended, 10)
        call_id = await call_of(running.told, OWNER, after=0)
        assert running.told.story(call_id) == [
            ("ringing", "101"),
            ("answered", "101"),
            ("hangup", "101"),
        ]
    finally:
        await running.stop()


async def test_busy_owner_falls_back_and_101_never_rings(router: Running, phones: Phones) -> None:
    phones["101"].mode = "busy"
    phones["103"].mode = "noanswer"
    # A person takes a moment to pick up: an answer within a millisecond would cancel
    # the queue's leg to 101 before 101's "busy" came back, and a leg cancelled
    # because another phone answered is a phone that rang (docs/history.md); a CI
    # run under load hit exactly that. test_onec_call_life_e2e does the same.
    phones["102"].answer_delay = 1.0
    try:
        mark = len(router.told.events)
        call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="89161234567")
        await asyncio.to_thread(call.wait_answered, 40)
        await asyncio.sleep(1)
        await asyncio.to_thread(call.hangup)
    finally:
        phones["102"].answer_delay = 0.0
    call_id = await call_of(router.told, OWNER, after=mark)
    story = router.told.story(call_id)
    assert ("ringing", "101") not in story
    assert ("answered", "102") in story
    assert story[-1] == ("hangup", "102")


async def test_ring_group_nobody_answers_is_one_missed_call(
    router: Running, phones: Phones
) -> None:
    for name in ("101", "102", "103"):
        phones[name].mode = "noanswer"
    mark = len(router.told.events)
    call = await asyncio.to_thread(phones.pstn.call, did=GROUP, caller="+7 916 000-11-22")
    await until(
        lambda: all(p.calls and not p.calls[-1].ended for p in phones), 20, "three phones ringing"
    )
    await asyncio.sleep(1)
    await asyncio.to_thread(call.hangup)
    call_id = await call_of(router.told, GROUP, "missed", after=mark)
    events = router.told.of(call_id)
    assert sorted(e.extension or "" for e in events if e.kind == "ringing") == ["101", "102", "103"]
    assert [e.kind for e in events].count("missed") == 1
    assert events[-1].kind == "missed"
    assert events[-1].status == "CANCEL"
    assert events[-1].hangup_by == "external"


async def test_queue_call_answered_by_an_agent(router: Running, phones: Phones) -> None:
    phones["101"].mode = "noanswer"
    phones["103"].mode = "noanswer"
    mark = len(router.told.events)
    call = await asyncio.to_thread(phones.pstn.call, did=QUEUE, caller="89161230000")
    await asyncio.to_thread(call.wait_answered, 30)
    await asyncio.sleep(1)
    await asyncio.to_thread(call.hangup)
    call_id = await call_of(router.told, QUEUE, after=mark)
    story = router.told.story(call_id)
    assert ("answered", "102") in story
    assert story[-1] == ("hangup", "102")
    assert "missed" not in [kind for kind, _ in story]


async def test_blind_and_attended_transfers_on_the_phone(router: Running, phones: Phones) -> None:
    mark = len(router.told.events)
    call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="89161234500")
    await asyncio.to_thread(call.wait_answered, 20)
    await asyncio.sleep(1)
    await asyncio.to_thread(phones["101"].blind_transfer, "102")
    await until(lambda: any(e.kind == "answered" and e.extension == "102" and e.did == OWNER
                            for e in router.told.events[mark:]), 20, "102 answering")  # fmt: skip
    await asyncio.to_thread(call.hangup)
    blind = await call_of(router.told, OWNER, after=mark)
    [transfer] = [e.transfer for e in router.told.of(blind) if e.kind == "transferred"]
    assert transfer == Transfer("blind", "101", "102")
    assert router.told.of(blind)[-1].extension == "102"

    before = len(router.told.events)
    call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="89161234501")
    await asyncio.to_thread(call.wait_answered, 20)
    await asyncio.sleep(1)
    await asyncio.to_thread(phones["101"].attended_transfer, "102")
    await asyncio.sleep(2)
    await asyncio.to_thread(call.hangup)
    await until(
        lambda: any(e.kind == "hangup" and e.did == OWNER for e in router.told.events[before:]),
        20,
        "the customer's hangup",
    )
    attended = next(e.call_id for e in router.told.events[before:] if e.did == OWNER)
    [transfer] = [e.transfer for e in router.told.of(attended) if e.kind == "transferred"]
    assert transfer == Transfer("attended", "101", "102")
    hangup = router.told.of(attended)[-1]
    assert (hangup.kind, hangup.extension, hangup.hangup_by) == ("hangup", "102", "external")


# -- gaps -------------------------------------------------------------------------------


def place_mixed(phones: Phones, count: int) -> None:
    """``count`` calls of every kind, one after another (blocking: the phones' threads).

    Calls to OWNER are answered by 101 whether the router routes them (to 101)
    or not (the dialplan's default, the queue: 102 and 103 do not answer then).
    """

    def modes(**wanted: str) -> None:
        for name in ("101", "102", "103"):
            phones[name].mode = wanted.get(f"p{name}", "answer")  # type: ignore[assignment]

    def wait_for(what: str, check: Callable[..., bool], *args: object) -> None:
        """The phones' own view, polled: no fixed pause where the fact can be seen."""
        deadline = time.monotonic() + 20
        while not check(*args):
            if time.monotonic() > deadline:
                raise AssertionError(f"waited 20 s for {what}")
            time.sleep(0.05)

    def all_rung(seen: dict[str, int]) -> bool:
        """Each phone has a call newer than the ``seen`` count, and it rang."""
        return all(
            len(phones[name].calls) > count and phones[name].calls[-1].ringing_at is not None
            for name, count in seen.items()
        )

    def picked_up(name: str, before: int) -> bool:
        calls = phones[name].calls
        return len(calls) > before and calls[-1].answered

    kinds = ["answered", "missed", "blind", "internal"]
    for n in range(count):
        kind = kinds[n % len(kinds)]
        caller = f"8916555{n:04d}"
        if kind == "answered":
            modes(p102="noanswer", p103="noanswer")
            call = phones.pstn.call(did=OWNER, caller=caller).wait_answered(30)
            time.sleep(0.5)
            call.hangup()
        elif kind == "missed":
            modes(p101="noanswer", p102="noanswer", p103="noanswer")
            seen = {name: len(phones[name].calls) for name in ("101", "102", "103")}
            call = phones.pstn.call(did=GROUP, caller=caller)
            wait_for("the ring group's three phones ringing", all_rung, seen)
            time.sleep(0.3)
            call.hangup()
        elif kind == "blind":
            modes(p102="noanswer", p103="noanswer")
            call = phones.pstn.call(did=OWNER, caller=caller).wait_answered(30)
            modes()
            time.sleep(0.5)
            before = len(phones["102"].calls)
            phones["101"].blind_transfer("102")
            wait_for("102 answering the transferred call", picked_up, "102", before)
            time.sleep(0.3)
            call.hangup()
        else:
            modes()
            try:
                call = phones["102"].dial("103").wait_answered(20)
            except Exception as exc:
                raise AssertionError(f"{exc}\n--- 102\n{phones['102'].log_tail(40)}") from exc
            time.sleep(0.5)
            call.hangup()
        call.wait_ended(15)
        modes()
        time.sleep(0.3)


def freeze_while_calling(phones: Phones, box: Sandbox, count: int) -> None:
    """Called from the event loop without awaiting: the engine is frozen (as by
    SIGSTOP) while the phones' own threads make calls, and until Asterisk dropped
    the engine's session (past httptimeout, at its next purge) with its queued events."""
    place_mixed(phones, count)
    deadline = time.monotonic() + HTTPTIMEOUT + 20
    while manager_sessions(box, "router"):
        if time.monotonic() > deadline:
            raise AssertionError("Asterisk kept the frozen router's manager session")
        time.sleep(0.5)


@pytest.mark.slow
async def test_router_killed_while_calls_happen(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    since = await quiet_since(box)
    config = make_config(box, tmp_path)
    first = await Running(config).start()
    # The mark is written at the first start, then every MARK_EVERY s: killed
    # once the timed save wrote it.
    mark = tmp_path / "state" / MARK_FILE
    started = mark.read_text(encoding="utf-8")
    await until(lambda: mark.read_text(encoding="utf-8") != started, MARK_EVERY + 10, "a mark")
    await first.kill()
    # Nobody is there to decide: each inbound call would wait the shipped 4 s for it.
    await cli(box, "dialplan set global CALLROUTER_WAIT 0.2")
    try:
        await asyncio.to_thread(place_mixed, phones, 20)
    finally:
        await cli(box, "dialplan set global CALLROUTER_WAIT 4")
    second = await Running(config).start()
    try:
        facts = store_facts(box, since)
        assert len(facts) >= 20
        expected = sum(len(v) for v in facts.values())
        await until(
            lambda: len({e.event_id for e in second.told.events}) >= expected,
            SETTLE + 20,
            "the replay of the calls made while the router was down",
        )
        assert all(e.replayed for e in second.told.events)
        await assert_told_exactly(second.told.events, box, since)
    finally:
        await second.stop()


@pytest.mark.slow
async def test_frozen_router_whose_session_expired_tells_every_call_once(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    since = await quiet_since(box)
    running = await Running(make_config(box, tmp_path)).start()
    try:
        await asyncio.to_thread(place_mixed, phones, 2)  # live
        await asyncio.sleep(2)
        freeze_while_calling(phones, box, 4)
        await until(lambda: bool(store_facts(box, since)), 5, "calls in the store")
        facts = store_facts(box, since)
        expected = sum(len(v) for v in facts.values())
        await until(
            lambda: len({e.event_id for e in running.told.events}) >= expected,
            SETTLE + 30,
            "the calls of the expired session",
        )
        await assert_told_exactly(running.told.events, box, since)
        assert any(e.replayed for e in running.told.events)
    finally:
        await running.stop()


async def test_a_first_start_does_not_tell_a_call_already_up(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    """A router with no history yet starts while 101 talks on a queue call: it
    sees only that call's end, which told from there was a call with no answer
    and no talk time. It tells nothing of it, and the next call whole."""
    since = await quiet_since(box)
    phones["101"].mode = "answer"
    for name in ("102", "103"):
        phones[name].mode = "noanswer"
    try:
        # No router: the call waits out CALLROUTER_WAIT and takes the default route.
        up = await asyncio.to_thread(phones.pstn.call, did=QUEUE, caller="89165550100")
        await asyncio.to_thread(up.wait_answered, 30)
        running = await Running(make_config(box, tmp_path)).start()
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(up.hangup)
            await asyncio.to_thread(up.wait_ended, 15)
            after = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="89165550101")
            await asyncio.to_thread(after.wait_answered, 30)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(after.hangup)
            await asyncio.to_thread(after.wait_ended, 15)
            told_of = running.told.of

            def ended_in_store_and_told() -> bool:
                """The second call's end written (the CEL backends may lag) and told."""
                calls = list(store_facts(box, since).items())
                return len(calls) == 2 and all(
                    any(e.kind == "hangup" for e in events)
                    for events in (calls[1][1], told_of(calls[1][0]))
                )

            await until(ended_in_store_and_told, SETTLE + 20, "the second call's end")
            facts = store_facts(box, since)
            first, second = facts  # in the order they began
            await asyncio.sleep(1)  # the first call's end came before the second's
            assert told_of(first) == []
            told = [e.event_id for e in told_of(second)]
            assert sorted(told) == sorted(e.event_id for e in facts[second])
        finally:
            await running.stop()
    finally:
        for name in ("101", "102", "103"):
            phones[name].mode = "answer"


@pytest.mark.slow
async def test_asterisk_restart_every_call_told_once(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    since = await quiet_since(box)
    running = await Running(make_config(box, tmp_path)).start()
    try:
        await asyncio.to_thread(place_mixed, phones, 2)
        # Restart Asterisk alone (Sandbox.restart would stop the phones with it).
        await cli(box, "core stop now")
        await until(lambda: not box.running, 20, "Asterisk stopping")
        await asyncio.sleep(1)
        await asyncio.to_thread(box.launch)
        await asyncio.sleep(2)  # the phones' contacts come back from astdb
        await asyncio.to_thread(place_mixed, phones, 4)
        facts = store_facts(box, since)
        expected = sum(len(v) for v in facts.values())
        await until(
            lambda: len({e.event_id for e in running.told.events}) >= expected,
            SETTLE + 30,
            "every call across the restart",
        )
        await assert_told_exactly(running.told.events, box, since)
    finally:
        await running.stop()


@pytest.mark.slow
async def test_asterisk_restart_is_a_gap_in_the_api_feed(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    """Issue 16: what Asterisk emitted while callrouter had lost its event stream
    never reaches the feed; a client behind the loss got the events after it
    with gap false. Now a cursor from before is told the gap once, also one of a
    token scoped to an extension nothing happened to; one from after is not."""
    port = free_port()
    api = (
        f'[api]\nlisten = "127.0.0.1:{port}"\n'
        f'[api.tokens.all]\nhash = "{hash_token("secret-all")}"\nallow = ["events:read"]\n'
        'extensions = ["*"]\n'
        f'[api.tokens.t109]\nhash = "{hash_token("secret-t109")}"\nallow = ["events:read"]\n'
        'extensions = ["109"]\n'
    )
    running = await Running(make_config(box, tmp_path, api)).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def poll(token: str, cursor: int | None) -> dict[str, Any]:
                params = {"timeout": "0", "limit": "1000"}
                if cursor is not None:
                    params["cursor"] = str(cursor)
                answer = await http.get(
                    "/api/v1/events",
                    params=params,
                    headers={"Authorization": f"Bearer secret-{token}"},
                )
                assert answer.status_code == 200, answer.text
                body: dict[str, Any] = answer.json()
                return body

            before = {token: (await poll(token, None))["cursor"] for token in ("all", "t109")}
            await cli(box, "core stop now")
            await until(lambda: not box.running, 20, "Asterisk stopping")
            await asyncio.sleep(1)
            await asyncio.to_thread(box.launch)
            await asyncio.sleep(2)  # the phones' contacts come back from astdb
            told: dict[str, dict[str, Any]] = {}

            async def gap_told() -> bool:
                told["all"] = await poll("all", before["all"])
                return bool(told["all"]["gap"])

            await until(lambda: gap_told(), 60, "the stream gap told in the feed")
            scoped = await poll("t109", before["t109"])
            assert scoped["gap"], scoped  # the stretch is everyone's
            for token, page in (("all", told["all"]), ("t109", scoped)):
                again = await poll(token, page["cursor"])
                assert not again["gap"], again  # told once
                seen = {e["cursor"] for e in page["events"]}
                assert not seen & {e["cursor"] for e in again["events"]}  # nothing twice
            after = (await poll("all", None))["cursor"]
            assert not (await poll("all", after))["gap"]  # a reader after it: nothing
    finally:
        await running.stop()


async def leg_of(box: Sandbox, extension: str) -> str:
    """The channel of ``extension``'s phone that is up and bridged now
    (PJSIP/101-0000002a).

    Bridged, not only up: Asterisk refuses a BlindTransfer of a leg that is not
    in a bridge yet ("Transfer invalid"), and the caller hears the answer before
    Dial bridges the two legs; on a loaded host that took 36 ms, and the
    transfer sent in between failed (a CI-like run with two files side by side).
    """
    found: list[str] = []

    async def check() -> bool:
        text = await cli(box, "core show channels concise")
        # Channel!Context!Exten!Prio!State!App!Data!CID!Acct!PeerAcct!AMA!Secs!BridgeID!...
        rows = [line.split("!") for line in text.splitlines()]
        found[:] = [
            row[0]
            for row in rows
            if row[0].startswith(f"PJSIP/{extension}-")
            and len(row) > 12
            and row[4] == "Up"
            and row[12]
        ]
        return bool(found)

    await until(lambda: check(), 10, f"{extension}'s leg up and bridged")
    return found[0]


async def test_blind_transfer_through_ami_as_the_http_api_makes_it(
    router: Running, phones: Phones, box: Sandbox
) -> None:
    """``POST /calls/{id}/transfer`` sends BlindTransfer from the extension's leg
    (router/api/calls.py): the same action here. (Its attended form, Atxfer, is
    test_onec_call_life_e2e.py's test_an_attended_transfer_through_the_http_api_...)"""
    mark = len(router.told.events)
    call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="89161234502")
    await asyncio.to_thread(call.wait_answered, 20)
    leg = await leg_of(box, "101")
    await router.engine.ami.send(
        "BlindTransfer", {"Channel": leg, "Context": "sandbox-phones", "Exten": "102"}
    )
    await until(lambda: any(e.kind == "answered" and e.extension == "102" and e.did == OWNER
                            for e in router.told.events[mark:]), 20, "102 answering")  # fmt: skip
    await asyncio.to_thread(call.hangup)
    blind = await call_of(router.told, OWNER, after=mark)
    [transfer] = [e.transfer for e in router.told.of(blind) if e.kind == "transferred"]
    assert transfer == Transfer("blind", "101", "102")


async def test_the_http_apis_transfers_from_a_star_token_without_from_on_real_phones(
    box: Sandbox, phones: Phones, tmp_path: Path
) -> None:
    """``POST /calls/{id}/transfer`` without ``from`` by a token for every extension
    (``*``), which sees the customer's trunk leg too (docs/api.md): blind from
    101's ``PJSIP/101`` leg when the customer comes in on the PJSIP trunk, and
    attended (Atxfer) from the ``Local/101@...;1`` half when 101 is reached
    through a Local channel kept in the call; the customer ends up talking to 102."""
    port = free_port()
    api = (
        f'[api]\nlisten = "127.0.0.1:{port}"\n[api.tokens.all]\n'
        f'hash = "{hash_token("secret-all")}"\nallow = ["calls:read", "calls:transfer"]\n'
        'extensions = ["*"]\n'
    )
    router = await Running(make_config(box, tmp_path, api)).start()
    headers = {"Authorization": "Bearer secret-all"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for did, mode, leg in ((OWNER, "blind", "PJSIP/101-"), (VIA_LOCAL, "attended",
                                   "Local/101@sandbox-phones-")):  # fmt: skip
                mark = len(router.told.events)
                taken = len(phones["102"].calls)
                call = await asyncio.to_thread(phones.pstn.call, did=did, caller="89161234503")
                await asyncio.to_thread(call.wait_answered, 20)
                call_id = await call_of(router.told, did, "answered", after=mark)
                moved = await http.post(
                    f"/api/v1/calls/{call_id}/transfer",
                    json={"to": "102", "mode": mode},
                    headers=headers,
                )
                assert moved.status_code == 202, moved.text
                assert moved.json()["channel"].startswith(leg), moved.text
                await until(
                    lambda taken=taken: (
                        len(phones["102"].calls) > taken and phones["102"].calls[-1].answered
                    ),
                    20,
                    f"102 answering the {mode} transfer",
                )
                if mode == "attended":  # 101 completes it by hanging up (docs/api.md)
                    await asyncio.to_thread(phones["101"].hangup)
                await until(lambda: all(c.ended for c in phones["101"].calls), 10, "101 out")
                await asyncio.sleep(1)
                assert not call.ended, f"the customer was hung up, not moved ({mode})"
                assert not phones["102"].calls[-1].ended
                await asyncio.to_thread(call.hangup)
                ended = await call_of(router.told, did, after=mark)
                [transfer] = [e.transfer for e in router.told.of(ended) if e.kind == "transferred"]
                assert transfer == Transfer(mode, "101", "102")
    finally:
        await router.stop()


@pytest.mark.parametrize("end", ["caller_hangs_up", "target_times_out"])
async def test_a_blind_transfer_nobody_takes_is_the_targets_missed_in_the_feed_only(
    box: Sandbox, phones: Phones, tmp_path: Path, end: str
) -> None:
    """101 answers the customer and blind-transfers the call to 103, which rings and
    never answers; the customer hangs up, or the dialplan's Dial gives up and hangs the
    customer up (router/sandbox/conf/extensions.conf: after 30 s at 103, after 5 s at
    05103, which rings 103 as 103 does and is what this case dials). docs/api.md: the
    feed's ``missed`` is an extension's ringing that ended unanswered, ``answered_by``
    the one who transferred it here: 103's ``missed`` with ``answered_by`` 101.
    docs/onec.md: ``missed`` is one per inbound call *no* extension answered; 101 did,
    so 1C's story has 103's ``ringing``, no ``missed``, and the ``hangup`` with status
    ``ANSWER``."""
    port = free_port()
    api = (
        f'[api]\nlisten = "127.0.0.1:{port}"\n[api.tokens.all]\n'
        f'hash = "{hash_token("secret-all")}"\nallow = ["events:read"]\n'
        'extensions = ["*"]\n'
    )
    phones["103"].mode = "noanswer"
    router = await Running(make_config(box, tmp_path, api)).start()
    try:
        mark = len(router.told.events)
        rang = len(phones["103"].calls)
        call = await asyncio.to_thread(phones.pstn.call, did=OWNER, caller="89161234504")
        await asyncio.to_thread(call.wait_answered, 20)
        await leg_of(box, "101")
        target = "05103" if end == "target_times_out" else "103"
        await asyncio.to_thread(phones["101"].blind_transfer, target)
        await until(
            lambda: len(phones["103"].calls) > rang and not phones["103"].calls[-1].ended,
            20,
            "103 ringing",
        )
        if end == "caller_hangs_up":
            await asyncio.sleep(2)
            await asyncio.to_thread(call.hangup)
        call_id = await call_of(router.told, OWNER, after=mark, timeout=45)
        await until(lambda: no_channels(box), 20, "every channel gone")
        story = router.told.story(call_id)
        assert ("ringing", "103") in story, story
        assert ("transferred", "101") in story, story
        assert "missed" not in [kind for kind, _ in story], story
        hangup = router.told.of(call_id)[-1]
        # Nobody was on the call at its end: 101 left it, 103 never took it.
        assert (hangup.kind, hangup.status, hangup.extension) == ("hangup", "ANSWER", None), story
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def feed() -> list[dict[str, object]]:
                answer = await http.get(
                    "/api/v1/events",
                    params={"cursor": "0", "timeout": "0", "limit": "1000"},
                    headers={"Authorization": "Bearer secret-all"},
                )
                assert answer.status_code == 200, answer.text
                return [e for e in answer.json()["events"] if e["call_id"] == call_id]

            async def target_ended() -> bool:
                return any(
                    e["extension"] == "103" and e["kind"] in ("missed", "answered", "hangup")
                    for e in await feed()
                )

            await until(lambda: target_ended(), 15, "103's end in the feed")
            events = await feed()
        of_103 = [(e["kind"], e["data"]) for e in events if e["extension"] == "103"]
        kinds = [kind for kind, _ in of_103]
        assert kinds == ["ringing", "missed"], [(e["kind"], e["extension"]) for e in events]
        missed = of_103[1][1]
        assert isinstance(missed, dict)
        assert missed["answered_by"] == "101", missed
        assert missed["status"] == ("CANCEL" if end == "caller_hangs_up" else "NOANSWER"), missed
    finally:
        await router.stop()


@pytest.fixture(scope="module")
def pg(box: Sandbox) -> Iterator[Postgres]:
    """Debian's PostgreSQL on loopback, written to by the sandbox's cel_pgsql."""
    folder = Path(tempfile.mkdtemp(prefix="callrouter-pg-"))
    try:
        started = Postgres.start(folder)
    except SandboxError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        if ci or os.environ.get("CALLROUTER_REQUIRE_SANDBOX", "").strip() == "1":
            pytest.fail(str(exc), pytrace=False)  # as conftest.py does for the sandbox
        pytest.skip(str(exc))
    try:
        started.create_cel_table()
        started.attach(box)
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_cel_pgsql_tells_the_same_story_as_the_sqlite_file(
    router: Running, phones: Phones, box: Sandbox, pg: Postgres
) -> None:
    """A remote Asterisk's store (cel_pgsql into real PostgreSQL, read with psycopg)
    folds into exactly the facts the local file gives, for calls of every kind."""
    since = await quiet_since(box)
    await asyncio.to_thread(place_mixed, phones, 4)
    await asyncio.sleep(1)
    local = store_facts(box, since)
    calls = await asyncio.to_thread(PostgresSource(pg.dsn).read, since)
    folder = Folder()
    remote = {k: folder.replay(k, records) for k, records in calls.items()}
    assert len(remote) >= 4
    assert sorted(remote) == sorted(local)
    for call_id, events in local.items():
        assert [e.event_id for e in remote[call_id]] == [e.event_id for e in events]
        for mine, theirs in zip(remote[call_id], events, strict=True):
            assert mine.same_fact(theirs), mine.event_id
