"""The shipped ``[callrouter-record]`` on a real Asterisk 22, handed hostile values;
and the least-privilege user's AMI rights to recordings.

callrouter only ever writes paths of letters, digits and ``/._-`` into
``CALLROUTER_RECORD`` and a checked location into ``CALLROUTER_NEXT``
(tests/unit/recordings). These tests put what callrouter never would there (a
``,`` that adds a MixMonitor option, a ``)t(`` that adds a second file, ``..``,
``&`` in the target) and check what the dialplan does on its own: nothing is
recorded from a value its FILTER would change, a bad target takes the default
route, and a good value is recorded and goes on to its target. No call is held
up either way. The values come from ``[globals]`` of a test context, so the
shipped file is used exactly as written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from router.ami.client import AJAMClient, ClientSettings
from router.errors import AMIActionError, AMIPrivilegeError
from router.recordings.mixmonitor import start_recording
from router.recordings.settings import RecordingSettings
from router.recordings.store import RecordingStore
from router.sandbox import Sandbox
from router.testing.asterisk import shipped_dialplan

pytestmark = pytest.mark.integration

FOLDER = "spool/monitor/rectest"


def record_contexts(box: Sandbox) -> str:
    d = f"{box.inst_in_root}/{FOLDER}"
    cases = {
        # case: (CALLROUTER_RECORD, CALLROUTER_NEXT)
        "1": (f"{d}/c1-mix.wav^^", "record-target^t-1*#^2"),
        "2": (f"{d}/../c2-mix.wav^^", "record-target^t-1*#^2"),
        "3": (f"{d}/c3-mix.wav,v(4)^^", "record-target^t-1*#^2"),
        "4": (f"^{d}/c4-in.wav)t({d}/c4-evil.wav^", "record-target^t-1*#^2"),
        "5": (f"{d}/c5-mix.wav^^", "record-target^t-1*#&Local/1@record-target^2"),
        "6": (f"{d}/c6-mix.wav^^", ""),
        "7": (f"^^{d}/c7-out.wav", "record-target^t-1*#^x"),
        "8": ("", "record-target^t-1*#^2"),
    }
    globals_ = "\n".join(
        f"RECTEST_REC_{case}={rec}\nRECTEST_NEXT_{case}={nxt}" for case, (rec, nxt) in cases.items()
    )
    return f"""
[globals]
{globals_}

; Case N: a channel with the case's values, sent into the shipped step.
[record-test]
exten => _X,1,Answer()
 same => n,Set(RECTEST_CASE=${{EXTEN}})
 same => n,Set(CALLROUTER_DID=74951234567)
 same => n,Set(CALLROUTER_DEFAULT=record-default)
 same => n,Set(CALLROUTER_RECORD=${{RECTEST_REC_${{EXTEN}}}})
 same => n,Set(CALLROUTER_NEXT=${{RECTEST_NEXT_${{EXTEN}}}})
 same => n,Goto(callrouter-record,s,1)

[record-target]
exten => t-1*#,1,UserEvent(RecordTest,Case: ${{RECTEST_CASE}},Where: wrong-priority)
 same => n,UserEvent(RecordTest,Case: ${{RECTEST_CASE}},Where: target)
 same => n,Wait(1)
 same => n,Hangup()

[record-default]
exten => _X.,1,UserEvent(RecordTest,Case: ${{RECTEST_CASE}},Where: default)
 same => n,Wait(1)
 same => n,Hangup()
"""


@pytest_asyncio.fixture
async def admin(sandbox: Sandbox) -> AsyncIterator[tuple[Sandbox, AJAMClient]]:
    sandbox.set_dialplan(shipped_dialplan() + record_contexts(sandbox))
    client = AJAMClient(ClientSettings(url=sandbox.url, username="admin", secret=sandbox.secret))
    await client.login()
    try:
        yield sandbox, client
    finally:
        await client.aclose()


async def run_case(client: AJAMClient, case: str) -> tuple[str, bool]:
    """Where case ``case`` landed, and whether a MixMonitor started on it."""
    await client.send(
        "Originate",
        {
            "Channel": f"Local/{case}@record-test",
            "Application": "Wait",
            "Data": "2",
            "Async": "true",
        },
    )
    started = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for event in await client.wait_event(timeout=2):
            channel = event.get("Channel") or ""
            if event.name == "MixMonitorStart" and channel.startswith(f"Local/{case}@record-test"):
                started = True
            if event.get("UserEvent") == "RecordTest" and event.get("Case") == case:
                await asyncio.sleep(0.5)  # a MixMonitorStart queued behind it
                for late in await client.wait_event(timeout=1):
                    if late.name == "MixMonitorStart" and (late.get("Channel") or "").startswith(
                        f"Local/{case}@record-test"
                    ):
                        started = True
                return event.get("Where") or "", started
    raise AssertionError(f"case {case}: no RecordTest event within 20 s")


async def test_hostile_values_are_never_recorded_and_never_hold_the_call(
    admin: tuple[Sandbox, AJAMClient],
) -> None:
    box, client = admin
    folder = box.inst / FOLDER
    expected = {
        "1": ("target", True),  # a good value: recorded, on to the target
        "2": ("target", False),  # ".." in a path
        "3": ("target", False),  # "," would add a MixMonitor option
        "4": ("target", False),  # ")t(" would add a second file
        "5": ("default", True),  # "&" in the target: recorded, default route
        "6": ("default", True),  # no target (the wait ended): recorded, default route
        "7": ("default", True),  # a priority that is not a number
        "8": ("target", False),  # nothing to record
    }
    seen = {case: await run_case(client, case) for case in expected}
    assert seen == expected
    await asyncio.sleep(1.5)  # the last recordings are closed
    names, escaped = await asyncio.to_thread(files, box.inst, folder)
    assert names == ["c1-mix.wav", "c5-mix.wav", "c6-mix.wav", "c7-out.wav"]
    assert escaped == []  # nothing outside the folder either


def files(inst: Path, folder: Path) -> tuple[list[str], list[str]]:
    """The files in the recordings folder, and the cases' files anywhere else."""
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    escaped = [
        str(p)
        for pattern in ("c2-*", "c3-*", "c4-*", "c8-*")
        for p in inst.rglob(pattern)
        if p.parent != folder
    ]
    return names, escaped


async def test_the_router_user_may_stop_a_recording_but_not_start_one_over_ami(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """What docs/asterisk.md says of the least-privilege user, on Asterisk 22 itself:
    MixMonitor (the API's live-call recording) is write class system and refused
    with the class named, nothing left in the catalog; StopMixMonitor (call or
    system) is allowed, so its only error is the missing channel."""
    client = AJAMClient(ClientSettings(url=sandbox.url, username="router", secret=sandbox.secret))
    await client.login()
    store = RecordingStore(tmp_path)
    settings = RecordingSettings(dir=f"{sandbox.inst_in_root}/{FOLDER}", local_dir=tmp_path)
    try:
        with pytest.raises(AMIPrivilegeError) as refused:
            await start_recording(
                lambda name, headers: client.send(name, headers),
                store,
                settings,
                call_id="1714557800.1",
                channel="PJSIP/101-00000001",
            )
        with pytest.raises(AMIActionError) as stopped:
            await client.send("StopMixMonitor", {"Channel": "PJSIP/101-00000001"})
        alive = await client.send("Ping")
    finally:
        await client.aclose()
        store.close()
    assert refused.value.classes == ("system",)
    assert str(refused.value) == (
        "MixMonitor: Permission denied: the manager user 'router' needs write class "
        "system (manager.conf)"
    )
    assert RecordingStore(tmp_path).recording() == []
    assert not isinstance(stopped.value, AMIPrivilegeError)
    assert "Permission denied" not in str(stopped.value)
    assert alive.response.ok  # the session was kept, not "healed" by a new login
