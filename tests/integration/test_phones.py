"""Real SIP phones (baresip) against the sandbox Asterisk: router.sandbox.phones.

Asterisk's side of each call is read from its AMI events (DialState, DialEnd,
Newchannel, BlindTransfer, AttendedTransfer), collected by :class:`AmiEvents`
over AJAM's ``WaitEvent``; the phones' side from what each user agent saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from router.sandbox import Sandbox
from router.sandbox.phones import EXTENSIONS, Phones

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
