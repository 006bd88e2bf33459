"""Real SIP phones (baresip) against the sandbox Asterisk: router.sandbox.phones.

Asterisk's side of each call is read from its AMI events (DialState, DialEnd,
Newchannel, BlindTransfer, AttendedTransfer), collected by :class:`AmiEvents`
over AJAM's ``WaitEvent``; the phones' side from what each user agent saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from callrouter_onec.double import DEFAULT_USER, OneCDouble

from router.ami.protocol import BROKEN_ELEMENTS, STRAYS
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox.phones import EXTENSIONS, Phone, Phones, tone_share, tone_wav
from router.testing import shipped_dialplan
from tests.integration._live import ONEC_PASSWORD

pytestmark = pytest.mark.integration

DID = "74951234567"


class AmiEvents:
    """Every AMI event of a sandbox from now on, collected by a thread (admin user)."""

    def __init__(self, box: Sandbox) -> None:
        self.url = box.url
        self.client = httpx.Client(timeout=30)
        reply = self.client.post(
            f"{self.url}/rawman",
            data={"action": "Login", "username": "admin", "secret": box.secret},
        )
        assert "Response: Success" in reply.text, reply.text
        self.events: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.client.post(
                    f"{self.url}/rawman", data={"action": "WaitEvent", "Timeout": "1"}
                )
            except httpx.HTTPError:
                continue
            for block in reply.text.replace("\r\n", "\n").split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "Event" in fields and fields["Event"] != "WaitEventComplete":
                    with self._lock:
                        self.events.append(fields)

    def named(self, name: str, **match: str) -> list[dict[str, str]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("Event") == name and all(e.get(k) == v for k, v in match.items())
            ]

    def wait(self, name: str, timeout: float = 15.0, **match: str) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.named(name, **match)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {name} {match} within {timeout} s; saw {self.kinds()}")

    def kinds(self) -> list[str]:
        with self._lock:
            return sorted({e.get("Event", "") for e in self.events})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


@pytest.fixture
def ami(phones: Phones) -> Iterator[AmiEvents]:
    events = AmiEvents(phones.pbx)
    try:
        yield events
    finally:
        events.close()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_every_phone_and_the_pstn_side_is_registered(phones: Phones) -> None:
    contacts = phones.pbx.cli("pjsip show contacts")
    for name in (*EXTENSIONS, "pstn"):
        assert f"Contact:  {name}/sip:{name}-" in contacts, contacts


def test_a_phone_calls_a_phone_and_both_see_the_same_talk_time(
    phones: Phones, ami: AmiEvents
) -> None:
    call = phones["101"].dial("102").wait_answered()
    time.sleep(2)
    call.hangup()
    call.wait_ended()
    end = ami.wait("DialEnd", DestCallerIDNum="102")
    assert end["DialStatus"] == "ANSWER"
    assert eventually(lambda: bool(phones["102"].calls) and phones["102"].calls[-1].ended)
    callee = phones["102"].calls[-1]
    assert (callee.direction, callee.remote) == ("in", "101")
    assert call.talk_seconds is not None
    assert callee.talk_seconds is not None
    assert call.talk_seconds >= 1.5
    assert abs(call.talk_seconds - callee.talk_seconds) < 1.0


def test_a_busy_phone_answers_486_at_once_and_never_rings(phones: Phones, ami: AmiEvents) -> None:
    phones["102"].mode = "busy"
    call = phones["101"].dial("102").wait_ended()
    end = ami.wait("DialEnd", DestCallerIDNum="102")
    assert end["DialStatus"] == "BUSY"
    assert call.reason == "486 Busy Here"
    assert not ami.named("DialState", DestCallerIDNum="102", DialStatus="RINGING")
    assert not phones["102"].calls  # refused before baresip made it a call
    phones["102"].mode = "answer"
    phones["101"].dial("102").wait_answered().hangup()


@pytest.mark.parametrize("raw", ["8 (916) 123-45-67", "+7 916 123-45-67", "89161234567"])
def test_a_pstn_caller_number_reaches_asterisk_as_written(
    phones: Phones, ami: AmiEvents, raw: str
) -> None:
    call = phones.pstn.call(did=DID, caller=raw)
    channel = ami.wait("Newchannel", Exten=DID, Context="callrouter-inbound")
    assert channel["CallerIDNum"] == raw
    request = ami.wait("UserEvent", UserEvent="CallRouterRequest", Linkedid=channel["Linkedid"])
    assert request["DID"] == DID
    call.hangup()
    call.wait_ended()


def test_a_phone_that_does_not_answer_rings_until_dial_gives_up(
    phones: Phones, ami: AmiEvents
) -> None:
    phones["102"].mode = "noanswer"
    call = phones["101"].dial("03102")  # sandbox-phones: ring 102 for 3 s
    end = ami.wait("DialEnd", DestCallerIDNum="102")
    assert end["DialStatus"] == "NOANSWER"
    assert ami.named("DialState", DestCallerIDNum="102", DialStatus="RINGING")
    call.wait_ended()
    assert eventually(lambda: bool(phones["102"].calls) and phones["102"].calls[-1].ended)
    rung = phones["102"].calls[-1]
    assert rung.ringing_at is not None
    assert rung.answered_at is None


def test_a_dnd_phone_answers_480_at_once_and_never_rings(phones: Phones, ami: AmiEvents) -> None:
    phones["102"].mode = "dnd"
    call = phones["101"].dial("102").wait_ended()
    end = ami.wait("DialEnd", DestCallerIDNum="102")
    assert call.reason == "480 Temporarily Unavailable"
    assert end["DialStatus"] == "NOANSWER"
    assert not ami.named("DialState", DestCallerIDNum="102", DialStatus="RINGING")
    assert not phones["102"].calls


def test_ring_group_600_rings_three_phones_and_one_answers(phones: Phones, ami: AmiEvents) -> None:
    phones["101"].mode = "noanswer"
    phones["102"].mode = "noanswer"
    phones["103"].answer_delay = 1.0
    try:
        call = phones["104"].dial("600").wait_answered()
    finally:
        phones["103"].answer_delay = 0.0
    for name in ("101", "102", "103"):
        assert eventually(lambda name=name: bool(phones[name].calls)), name  # type: ignore[misc]
        assert phones[name].calls[-1].remote == "104"
    assert ami.wait("DialEnd", DestCallerIDNum="103")["DialStatus"] == "ANSWER"
    call.hangup()
    for name in ("101", "102"):
        assert eventually(lambda name=name: phones[name].calls[-1].ended)  # type: ignore[misc]
        assert phones[name].calls[-1].answered_at is None


def test_queue_700_is_answered_by_an_agent(phones: Phones, ami: AmiEvents) -> None:
    phones["101"].mode = "busy"
    phones["102"].mode = "noanswer"
    call = phones["104"].dial("700").wait_answered(30)
    connect = ami.wait("AgentConnect", Queue="sales")
    assert connect["Interface"] == "PJSIP/103"
    assert phones["103"].current().remote == "104"
    call.hangup()


def test_a_blind_transfer_on_the_phone_is_a_blindtransfer_in_asterisk(
    phones: Phones, ami: AmiEvents
) -> None:
    call = phones["104"].dial("101").wait_answered()
    phones["101"].blind_transfer("102")
    event = ami.wait("BlindTransfer")
    assert event["Result"] == "Success"
    assert event["TransfererCallerIDNum"] == "101"
    assert event["Extension"] == "102"
    assert eventually(lambda: any(c.answered and not c.ended for c in phones["102"].calls))
    assert phones["102"].current().remote == "104"
    assert not call.ended  # the customer's side stays up, now with 102
    call.hangup()


def test_an_attended_transfer_on_the_phone_is_an_attendedtransfer_in_asterisk(
    phones: Phones, ami: AmiEvents
) -> None:
    call = phones["104"].dial("101").wait_answered()
    consult = phones["101"].attended_transfer("102")
    event = ami.wait("AttendedTransfer")
    assert event["Result"] == "Success"
    assert event["OrigTransfererCallerIDNum"] == "101"
    assert event["SecondTransfererConnectedLineNum"] == "102"
    consult.wait_ended()
    assert eventually(lambda: all(c.ended for c in phones["101"].calls))
    assert not call.ended
    assert phones["102"].current().answered
    call.hangup()


def test_a_phone_dials_an_outside_number_through_the_trunk(phones: Phones, ami: AmiEvents) -> None:
    call = phones["101"].dial("89161234567").wait_answered()
    end = ami.wait("DialEnd", DestCallerIDNum="89161234567")
    assert end["DestChannel"].startswith("PJSIP/pstn-")
    assert end["DialStatus"] == "ANSWER"
    customer = phones.pstn.current()
    assert (customer.direction, customer.remote) == ("in", "101")
    call.hangup()
    customer.wait_ended()


def test_what_a_phone_plays_is_what_the_other_side_hears(phones: Phones, tmp_path: Path) -> None:
    phones["101"].play(tone_wav(tmp_path / "tone.wav", seconds=2.0))
    call = phones["101"].dial("102").wait_answered()
    time.sleep(2.5)
    call.hangup()
    assert eventually(lambda: phones["102"].calls[-1].ended)
    assert tone_share(phones["102"].heard_path) > 0.3
    assert tone_share(phones["101"].heard_path) < 0.05  # 102 played nothing


def test_phones_die_with_their_sandbox(scratch_sandbox: Sandbox) -> None:
    started = Phones.start(scratch_sandbox, extensions=("101",))
    pids = [agent.process.pid for agent in started.all if agent.process is not None]
    assert len(pids) == 2
    scratch_sandbox.stop()  # the phones were never stopped
    for agent in started.all:
        assert agent.process is not None
        assert agent.process.wait(10) is not None
    assert not list(scratch_sandbox.inst.glob("phones/*/pid"))
    started.stop()  # closes the control connections; nothing left to kill


OWNER_RULES = """\
version: 1
rules:
  - name: owner
    priority: 50
    on: call
    lookup:
      owner: onec.responsible(caller.number)
    when: owner.found and owner.manager.extension
    do:
      - redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}
"""


@contextlib.asynccontextmanager
async def owner_router(
    phones: Phones,
    double: OneCDouble,
    folder: Path,
    asterisk: str = "",
    rule_text: str = OWNER_RULES,
) -> AsyncIterator[Engine]:
    """callrouter with the 1C plugin on the phones' Asterisk, routing by the owner
    rule (or ``rule_text``), serving until the block ends; ``asterisk``: more
    ``[asterisk]`` lines."""
    rules = folder / "rules.yaml"
    rules.write_text(rule_text, encoding="utf-8")
    state = folder / "state"
    state.mkdir()
    path = folder / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{phones.pbx.url}"\nusername = "router"\n'
        f'secret = "{phones.pbx.secret}"\n{asterisk}'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{state}"\n'
        f'[plugins.onec]\nurl = "{double.url}"\nusername = "{DEFAULT_USER}"\n'
        f'password = "{ONEC_PASSWORD}"\ntimeout = 2.0\n',
        encoding="utf-8",
    )
    engine = Engine(
        load_config(path), plugins=Plugins.load(), options=EngineOptions(watch_interval=0)
    )
    await engine.start()
    task = asyncio.ensure_future(engine.serve())
    try:
        await asyncio.wait_for(engine.ready.wait(), 15)
        yield engine
    finally:
        engine.request_stop()
        await asyncio.wait_for(task, 30)
        await engine.stop()


@pytest.fixture
async def router(phones: Phones, double: OneCDouble, tmp_path: Path) -> AsyncIterator[Engine]:
    """callrouter with the 1C plugin on the phones' Asterisk, routing by the owner rule."""
    async with owner_router(phones, double, tmp_path) as engine:
        yield engine


@pytest.mark.parametrize("raw", ["8 (916) 123-45-67", "+7 916 123-45-67", "89161234567"])
async def test_a_customer_calling_in_reaches_the_owners_phone_which_answers(
    phones: Phones, router: Engine, raw: str
) -> None:
    """The 1C double knows 79161234567 as a client of the manager at 101."""
    call = await asyncio.to_thread(phones.pstn.call, did=DID, caller=raw)
    await asyncio.to_thread(call.wait_answered, 20)
    owner = await asyncio.to_thread(phones["101"].current)
    assert owner.remote == raw  # Asterisk passed the caller's number on as it came
    await asyncio.sleep(2)
    await asyncio.to_thread(call.hangup)
    await asyncio.to_thread(owner.wait_ended)
    await asyncio.to_thread(call.wait_ended)
    assert call.talk_seconds is not None
    assert owner.talk_seconds is not None
    assert call.talk_seconds >= 1.5
    assert abs(call.talk_seconds - owner.talk_seconds) < 1.0
    record = router.records[-1]
    assert record.channel.startswith("PJSIP/pstn-")
    assert (record.caller, record.rules) == ("79161234567", ("owner",))
    assert not any(c.calls for c in (phones["102"], phones["103"]))


def test_phones_from_a_shell_print_their_calls_and_stop_on_sigterm(
    scratch_sandbox: Sandbox,
) -> None:
    """``python -m router.sandbox phones NAME`` on a detached instance (the demo's way)."""
    scratch_sandbox.save_state()
    cache = scratch_sandbox.root.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router.sandbox",
            "--cache",
            str(cache),
            "phones",
            scratch_sandbox.name,
            "--extensions",
            "101,102",
            "--mode",
            "102=busy",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        assert eventually(lambda: any(ln.startswith("pstn ") for ln in lines), 60), lines
        assert "102   registered" in "".join(lines)
        assert "busy" in next(ln for ln in lines if ln.startswith("102"))
        with httpx.Client(timeout=10) as client:
            url = f"{scratch_sandbox.url}/rawman"
            client.post(
                url, data={"action": "Login", "username": "admin", "secret": scratch_sandbox.secret}
            )
            client.post(
                url,
                data={
                    "action": "Originate",
                    "Channel": "PJSIP/101",
                    "Application": "Wait",
                    "Data": "1",
                    "Async": "true",
                },
            )
        assert eventually(
            lambda: any("101   from" in ln and "answered" in ln for ln in lines), 20
        ), lines
        assert eventually(lambda: any("101   from" in ln and "talk" in ln for ln in lines), 20), (
            lines
        )
    finally:
        scratch_sandbox.forget_state()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0, lines
    assert not list(scratch_sandbox.inst.glob("phones/*/pid"))


REPO = Path(__file__).parents[2]


def _section(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return [part.split("```", 1)[0] for part in section.split(f"```{lang}\n")[1:]]


def test_the_documented_example_runs_as_written_in_both_languages() -> None:
    english = _section(REPO / "docs" / "asterisk.md", "## The sandbox phones")
    russian = _section(REPO / "docs" / "ru" / "asterisk.md", "## Телефоны песочницы")
    [code] = _blocks(english, "python")
    assert _blocks(russian, "python") == [code]

    def commands(section: str) -> list[str]:
        return [ln.split("#")[0].strip() for ln in _blocks(section, "sh")[0].splitlines()]

    assert commands(russian) == commands(english)
    assert "python -m router.sandbox phones dev --mode 102=busy" in commands(english)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "('101'," in done.stdout  # 103 saw 101's call


def test_phones_keep_working_across_an_asterisk_restart(scratch_sandbox: Sandbox) -> None:
    with Phones.start(scratch_sandbox, extensions=("101", "102")) as phones:
        scratch_sandbox.restart()
        assert all(agent.running for agent in phones.all)
        phones["101"].dial("102").wait_answered().hangup()


def test_a_phone_whose_baresip_died_is_started_again_by_reset(scratch_sandbox: Sandbox) -> None:
    with Phones.start(scratch_sandbox, extensions=("101", "102")) as phones:
        dead = phones["102"].process
        assert dead is not None
        dead.kill()
        dead.wait(10)
        phones.reset()
        assert phones["102"].running
        assert phones["101"].dial("102").wait_answered().answered


def test_a_crashed_phone_reports_the_backtrace_of_its_core(scratch_sandbox: Sandbox) -> None:
    """Debian's baresip dies of SIGSEGV now and then; its log says nothing of where,
    so the report of a crash reads the core it left in its own folder."""
    phone = Phone(scratch_sandbox, "101")
    phone.launch()
    try:
        phone.wait_registered()
        assert phone.process is not None
        phone.process.send_signal(signal.SIGSEGV)
        phone.process.wait(10)
        assert phone.crashed == "SIGSEGV"
        report = phone.crash_report(5)
        assert (phone.folder / "core").is_file(), report
        assert f"SIGSEGV: backtrace of {phone.folder / 'core'}" in report
        if shutil.which("gdb") or (scratch_sandbox.root / "usr/bin/gdb").is_file():
            assert "Program terminated with signal SIGSEGV" in report
            assert "re_main" in report  # baresip's main loop, from the root's libre
        else:
            assert "gdb is not installed" in report

        phone.relaunch()  # killed: no core, and the old one is not this process's
        assert phone.process is not None
        phone.process.kill()
        phone.process.wait(10)
        assert phone.crashed == "SIGKILL"
        assert "SIGKILL: no core file" in phone.crash_report(5)
    finally:
        phone.stop()


def test_a_phone_that_dials_while_a_call_is_held_does_not_crash(
    scratch_sandbox: Sandbox,
) -> None:
    """Debian's baresip 1.1.0 died of SIGSEGV every time it dialled while one of
    its calls was held: its aufile player's start race
    (router.sandbox.crash.KNOWN_CRASHES, a gdb capture of it in
    tests/fixtures/sandbox). The phones use no aufile player, so it lives, holds,
    and the second call is answered."""
    with Phones.start(scratch_sandbox, extensions=("101", "102", "103")) as phones:
        dialler = phones["101"]
        for _ in range(4):  # with the aufile player it crashed in 1 to 4 of 4 rounds
            first = dialler.dial("102").wait_answered()
            dialler.command("hold")
            time.sleep(0.3)
            second = dialler.dial("103").wait_answered(5)
            assert dialler.running, dialler.crash_report(10)
            assert second.answered
            second.hangup()
            first.hangup()
            second.wait_ended()
            first.wait_ended()
        assert dialler.crashed is None, dialler.crash_report(10)


def test_the_pstn_side_calls_in_again_after_its_baresip_was_started_again(
    scratch_sandbox: Sandbox,
) -> None:
    scratch_sandbox.set_dialplan(shipped_dialplan())
    with Phones.start(scratch_sandbox, extensions=("101",)) as phones:
        phones.pstn.call(did=DID, caller="8 (916) 123-45-67").hangup()
        dead = phones.pstn.process
        assert dead is not None
        dead.kill()
        dead.wait(10)
        phones.reset()
        ami = AmiEvents(scratch_sandbox)
        try:
            call = phones.pstn.call(did=DID, caller="+7 916 123-45-67")
            channel = ami.wait("Newchannel", Exten=DID, Context="callrouter-inbound")
            assert channel["CallerIDNum"] == "+7 916 123-45-67"
            call.hangup()
        finally:
            ami.close()


def test_a_port_taken_before_baresip_binds_it_is_replaced(scratch_sandbox: Sandbox) -> None:
    phone = Phone(scratch_sandbox, "101")
    taken = phone.sip_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief:
        thief.bind(("127.0.0.1", taken))
        try:
            phone.launch()
            phone.wait_registered()
            assert phone.sip_port != taken
            assert "Address already in use" not in phone.log_tail()  # the log of the retry
        finally:
            phone.stop()


def test_a_busy_customer_refuses_a_call_from_a_phone(phones: Phones, ami: AmiEvents) -> None:
    phones.pstn.mode = "busy"
    call = phones["101"].dial("89161234567").wait_ended(20)
    assert call.answered_at is None
    assert ami.wait("DialEnd", DestCallerIDNum="89161234567")["DialStatus"] == "BUSY"


def test_the_phones_hints_show_their_real_state(phones: Phones) -> None:
    """What ``[plugins.extension_state] context = "sandbox-phones"`` reads (docs/asterisk.md)."""

    def state(exten: str) -> str:
        with httpx.Client(timeout=10) as client:
            url = f"{phones.pbx.url}/rawman"
            client.post(
                url, data={"action": "Login", "username": "admin", "secret": phones.pbx.secret}
            )
            reply = client.post(
                url,
                data={"action": "ExtensionState", "Exten": exten, "Context": "sandbox-phones"},
            )
        return dict(ln.split(": ", 1) for ln in reply.text.splitlines() if ": " in ln)["StatusText"]

    assert state("101") == "Idle"
    call = phones["102"].dial("101").wait_answered()
    assert eventually(lambda: state("101") == "InUse")
    call.hangup()
    assert eventually(lambda: state("101") == "Idle")


@pytest.mark.parametrize(
    "injected",
    ["79161234567\r\nExten: 74950000009", "79161234567\r\n\r\nEvent: Junk\r\n\r\ngarbage"],
)
async def test_a_caller_number_with_line_breaks_is_not_routed_and_cuts_nothing(
    phones: Phones, router: Engine, injected: str
) -> None:
    """Issue 16 (hattack46): Asterisk 22 writes ``CallerIDNum`` into AMI as the
    SIP ``From`` user carried it, decoded: ``%0D%0A`` is a line break in every
    event of the call. An ``Exten`` so brought in came before the channel's own
    and the call was routed (the owner rule read the number's first line);
    a blank line cut every event in two, and the part after it failed the
    read. Now the request is refused (the call waits and takes the default
    route), and the next caller is routed as ever."""
    before = len(router.records)
    await call_within_its_wait(phones, injected)
    assert len(router.records) == before
    await the_owner_routes_the_next_caller(phones, router)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("UserEvent%3A%20Other", "UserEvent"),
        # hcase48: in another spelling, which a rule asking ``uniqueid`` read
        # first; only keys spelled alike counted as twice.
        ("uniqueid%3A%20victim", "Uniqueid"),
    ],
)
async def test_a_dialled_number_whose_line_renames_the_request_is_refused_as_such(
    phones: Phones, router: Engine, caplog: pytest.LogCaptureFixture, line: str, key: str
) -> None:
    """hreview48: PJSIP decodes the request URI's user too, and the shipped
    ``_X.`` takes ``74951234567%0D%0AUserEvent%3A%20Other``: Asterisk 22 wrote
    ``UserEvent: Other`` after the snapshot's ``Exten`` in every event of the
    call, read first, so the request was silently no request (and one named
    CallRouterLive was taken for a forged heartbeat). Each such event is
    refused by the tracker, saying so; the next caller is routed as ever."""
    caplog.set_level(logging.WARNING, logger="router.calls")
    before, refused = len(router.records), router.tracker.refused
    uri = f"sip:{DID}%0D%0A{line}@{phones.pstn.registrar}"
    call = await asyncio.to_thread(phones.pstn.dial, uri)
    await asyncio.sleep(3.0)  # most of the snippet's 4 s wait, as call_within_its_wait
    await asyncio.to_thread(call.hangup)
    await asyncio.to_thread(call.wait_ended)
    assert len(router.records) == before
    assert router.tracker.refused > refused
    said = [r.getMessage() for r in caplog.records if r.name == "router.calls"]
    assert any(f"with two {key} lines is not tracked" in m for m in said), said
    await the_owner_routes_the_next_caller(phones, router)


async def call_within_its_wait(phones: Phones, caller: str) -> None:
    """A call from ``caller``, hung up after most of the snippet's 4 s wait (a
    decision takes milliseconds), before it ends: its default route rings the
    sandbox's phones with that number, and a blank line in it crashes baresip
    1.1 (signal 11), the sandbox's phones, not callrouter (hattack46)."""
    call = await asyncio.to_thread(phones.pstn.call, did=DID, caller=caller)
    await asyncio.sleep(3.0)
    await asyncio.to_thread(call.hangup)
    await asyncio.to_thread(call.wait_ended)


async def the_owner_routes_the_next_caller(phones: Phones, router: Engine) -> None:
    """A customer's call answered, and routed by the owner rule."""
    call = await asyncio.to_thread(phones.pstn.call, did=DID, caller="89161234567")
    await asyncio.to_thread(call.wait_answered, 20)
    await asyncio.to_thread(call.hangup)
    await asyncio.to_thread(call.wait_ended)
    record = router.records[-1]
    assert (record.caller, record.rules) == ("79161234567", ("owner",))


@pytest.mark.parametrize(
    "number",
    [
        "79161234567\r\n\r\nEvent: Junk\r\n\r\ngarbage",
        # hmxml49: a key Asterisk writes too, in another case: one attribute
        # twice; a line with no key: an attribute with no name; a control byte.
        "79161234567\r\nuniqueid: x",
        "79161234567\r\n: x",
        "7916\x01123",
    ],
)
async def test_over_mxml_a_caller_number_that_breaks_its_events_costs_no_poll(
    phones: Phones,
    double: OneCDouble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    number: str,
) -> None:
    """Issue 16: Asterisk 22's mxml is its rawman text cut at blank lines
    (manager.c xml_translate), so a number with one made the rest of each
    event of the call an element that is no AMI message, and the whole poll
    failed (its events lost, the session dropped), at each step of the call.
    Measured on Asterisk 22: "event stream lost Asterisk: ... WaitEvent: block
    starts with 'opaque_data'", and the gap's reconcile failed alike (its
    CoreShowChannels lists the call). Now the element is skipped, the stream
    stays, and the next caller is routed as ever.

    hmxml49: a number that makes the element no XML (``uniqueid`` twice, an
    attribute without a name, a control byte) made the whole answer no XML:
    "event stream lost Asterisk: bad reply from Asterisk: WaitEvent: malformed
    mxml: Attribute uniqueid redefined", every other event of the poll lost,
    at each step of the call. Now that element alone is skipped, unread."""
    async with owner_router(phones, double, tmp_path, 'format = "mxml"\n') as router:
        generation = router.ami.session_generation
        skipped = STRAYS.count + BROKEN_ELEMENTS.count
        before = len(router.records)
        await call_within_its_wait(phones, number)
        assert len(router.records) == before  # the call is not routed
        await the_owner_routes_the_next_caller(phones, router)
        assert router.ami.session_generation == generation
        lost = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [m for m in lost if "event stream lost" in m or "opaque_data" in m], lost
        # The cut events' tails, or the broken elements: skipped.
        assert STRAYS.count + BROKEN_ELEMENTS.count > skipped


#: Every call to the company number goes to 101's phone, whoever calls.
DID_RULES = f"""\
version: 1
rules:
  - name: sales
    priority: 50
    on: call
    when: did == "{DID}"
    do:
      - redirect: {{context: callrouter-dial, exten: "101"}}
"""


#: How the made-up request names the victim's channel: as Asterisk wrote it,
#: or as Asterisk's lookup still finds it (hrev50: any ASCII case; after a
#: blank, which Asterisk skips before an action's value).
_SPELLINGS = {
    "as is": lambda name: name,
    "lower case": lambda name: name.lower(),
    "after a space": lambda name: " " + name,
}


@pytest.mark.parametrize(
    ("fmt", "spelling"),
    [("rawman", "as is"), ("mxml", "as is"), ("rawman", "lower case"), ("rawman", "after a space")],
)
async def test_a_caller_number_cannot_make_up_a_request_for_a_call_in_progress(
    phones: Phones,
    ami: AmiEvents,
    double: OneCDouble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fmt: str,
    spelling: str,
) -> None:
    """hmxml49: a blank line in a caller's number ends each event of the call
    there, and the lines after it make an event of their own, which the rest
    of the real event completes (its Uniqueid, Linkedid, UserEvent key...).
    On Asterisk 22 the SIP ``From`` user ``1%0D%0A%0D%0AEvent:%20UserEvent%0D%0A
    Channel:%20PJSIP/103-...`` (79 bytes decoded: PJSIP's bound) made the
    call's request read as one of the channel 103 talks on, a call in progress
    between two phones: callrouter decided it (a record for that channel),
    and a rule routing the company number by itself redirected it (the talk
    cut, 103's leg sent to ring 101). Now an event naming a tracked channel
    under another Uniqueid than its own is refused, saying so; the talk goes
    on, and the next caller is routed as ever."""
    caplog.set_level(logging.WARNING, logger="router.calls")
    async with owner_router(phones, double, tmp_path, f'format = "{fmt}"\n', DID_RULES) as router:
        talk = await asyncio.to_thread(phones["102"].dial, "103")
        await asyncio.to_thread(talk.wait_answered, 10)
        assert eventually(
            lambda: any(e["Channel"].startswith("PJSIP/103-") for e in ami.named("Newchannel"))
        )
        [victim] = [
            e["Channel"] for e in ami.named("Newchannel") if e["Channel"].startswith("PJSIP/103-")
        ]
        number = f"1\r\n\r\nEvent: UserEvent\r\nChannel: {_SPELLINGS[spelling](victim)}"
        line = await asyncio.to_thread(phones.pstn._caller_line, number)
        before = len(router.records)
        attack = await asyncio.to_thread(
            phones.pstn._dial, f"sip:{DID}@{phones.pstn.registrar}", line, 10.0
        )
        await asyncio.sleep(3.0)  # most of the snippet's 4 s wait, as call_within_its_wait
        await asyncio.to_thread(attack.hangup)
        await asyncio.to_thread(attack.wait_ended)
        assert [r.channel for r in router.records[before:]] == []
        assert not ami.named("Newexten", Channel=victim, Context="callrouter-dial")
        assert not ami.named("Hangup", Channel=victim)  # still talking
        said = [r.getMessage() for r in caplog.records if r.name == "router.calls"]
        how = "with another Uniqueid" if spelling == "as is" else "spelled"
        assert any(f"naming the channel {victim} {how}" in m for m in said), said
        await asyncio.to_thread(talk.hangup)
        await asyncio.to_thread(talk.wait_ended)


async def test_office_call_shapes_bring_no_event_refused_as_made_up(
    phones: Phones,
    ami: AmiEvents,
    double: OneCDouble,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hreview49b: Asterisk 22 swaps a channel's name with its Uniqueid (a
    masquerade: ``*8``'s pickup, a park, a transfer), so no real event of these
    shapes names a tracked channel under another Uniqueid than its own: none is
    refused as one a caller's number made up (CallTracker.impostor)."""
    caplog.set_level(logging.WARNING, logger="router.calls")
    async with owner_router(phones, double, tmp_path, "", DID_RULES) as router:
        # *8 picks up 101 ringing (a masquerade of 102's channel into the ringing leg).
        phones["101"].mode = "noanswer"
        call = await asyncio.to_thread(phones.pstn.call, did=DID, caller="89161234567")
        assert await asyncio.to_thread(eventually, lambda: bool(router.records), 15)
        assert eventually(lambda: bool(phones["101"].calls and phones["101"].calls[-1].ringing_at))
        await asyncio.to_thread(lambda: phones["102"].dial("*8").wait_answered(10))
        await asyncio.to_thread(call.wait_answered, 10)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(call.hangup)
        await asyncio.to_thread(call.wait_ended, 10)
        phones["101"].mode = "answer"
        # Parked by a blind transfer to 7000, taken back at 701.
        call = await asyncio.to_thread(phones.pstn.call, did=DID, caller="89161234567")
        await asyncio.to_thread(call.wait_answered, 15)
        await asyncio.to_thread(phones["101"].blind_transfer, "7000")
        assert eventually(lambda: all(c.ended for c in phones["101"].calls))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(lambda: phones["102"].dial("701").wait_answered(10))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(call.hangup)
        await asyncio.to_thread(call.wait_ended, 10)
        # An attended transfer of the routed call from 101 to 103.
        call = await asyncio.to_thread(phones.pstn.call, did=DID, caller="89161234567")
        await asyncio.to_thread(call.wait_answered, 15)
        consult = await asyncio.to_thread(phones["101"].attended_transfer, "103")
        await asyncio.to_thread(consult.wait_ended)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(call.hangup)
        await asyncio.to_thread(call.wait_ended, 10)
        # A blind transfer of the routed call from 101 to 102.
        call = await asyncio.to_thread(phones.pstn.call, did=DID, caller="89161234567")
        await asyncio.to_thread(call.wait_answered, 15)
        await asyncio.to_thread(phones["101"].blind_transfer, "102")
        assert eventually(lambda: any(c.answered and not c.ended for c in phones["102"].calls))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(call.hangup)
        await asyncio.to_thread(call.wait_ended, 10)
        await asyncio.sleep(1.0)
        kinds = set(ami.kinds())
        assert {"Pickup", "ParkedCall", "AttendedTransfer", "BlindTransfer"} <= kinds, kinds
        said = [r.getMessage() for r in caplog.records if "another Uniqueid" in r.getMessage()]
        assert said == []
        assert router._tracker.refused == 0
