"""The requests router/ami/hazards.py refuses do crash the Asterisk we ship
against: the guard is there for a reason, and this test says when a newer
Asterisk no longer needs it (it then fails: drop the entry and this test).

Sent over a bare socket, since every callrouter client refuses them. On a
scratch sandbox of its own: the shared one must survive.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from router.ami.hazards import HAZARDS
from router.sandbox import Sandbox


async def _action(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, **headers: str
) -> dict[str, str]:
    """Send one action, return its response's fields (events skipped)."""
    action_id = f"hazard-{time.monotonic_ns()}"
    text = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"{text}ActionID: {action_id}\r\n\r\n".encode())
    await writer.drain()
    while True:
        block = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        fields = dict(line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line)
        if fields.get("ActionID") == action_id:
            return fields


async def _read(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, action: str, **headers: str
) -> str:
    """What ``action`` answers for the ``MIXMONITOR()`` read in ``headers``: Getvar's
    ``Value``, or the ``Variable`` line of Status's one ``Status`` event."""
    answer = await _action(reader, writer, Action=action, **headers)
    if action == "Getvar":
        return answer["Value"]
    assert answer["Response"] == "Success", answer
    for _ in range(10):
        block = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        if block.startswith("Event: Status\r\n"):
            return next(line for line in block.split("\r\n") if line.startswith("Variable: "))
    raise AssertionError("no Status event")


#: The reads tried: (action, header, how), ``how`` being ``direct`` (the function
#: named in the request) or ``indirect`` (a variable set to ``${MIXMONITOR(...)}``,
#: read through EVAL inside EVAL: no MIXMONITOR in the request).
READS = [
    ("Getvar", "Variable", "direct"),
    ("Status", "Variables", "direct"),
    ("Getvar", "Variable", "indirect"),
    ("Status", "Variables", "indirect"),
]


def test_every_hazard_is_tried_here() -> None:
    assert [(h.action, h.header) for h in HAZARDS] == [
        (action, header) for action, header, _ in READS
    ]


@pytest.mark.parametrize(("action", "header", "how"), READS)
async def test_a_read_of_mixmonitor_on_a_one_leg_recording_kills_asterisk(
    scratch_sandbox: Sandbox, action: str, header: str, how: str
) -> None:
    box = scratch_sandbox
    reader, writer = await asyncio.open_connection("127.0.0.1", box.ami_port)
    try:
        await reader.readline()  # the banner
        login = await _action(
            reader, writer, Action="Login", Username="admin", Secret=box.secret, Events="off"
        )
        assert login["Response"] == "Success"
        await _action(
            reader,
            writer,
            Action="Originate",
            Channel="Local/s@sink",
            Application="Wait",
            Data="60",
            Async="true",
        )
        channel = ""
        for _ in range(50):
            listing = box.cli("core show channels concise")
            found = [line.split("!")[0] for line in listing.splitlines() if "!sink!" in line]
            if found:
                channel = found[0]
                break
            await asyncio.sleep(0.1)
        assert channel, "the Local channel did not come up"
        started = await _action(
            reader,
            writer,
            Action="MixMonitor",
            Channel=channel,
            File="",
            Options="r(/tmp/hazard-in.wav)i(HAZARD_ID)",
        )
        assert started["Response"] == "Success", started
        mixed = await _action(
            reader,
            writer,
            Action="MixMonitor",
            Channel=channel,
            File="/tmp/hazard-mix.wav",
            Options="i(HAZARD_ID)",
        )
        # A direct read names the function; an indirect one reads a variable set to
        # it through EVAL inside EVAL (EVAL(${X}) gives X's text, EVAL of that text
        # calls the function): no MIXMONITOR in the request.
        # The same read of a MixMonitor that writes a mixed file is answered; then
        # the one of the MixMonitor that writes only r().
        for mixmonitor in (mixed, started):
            call = f"MIXMONITOR({mixmonitor['MixMonitorID']},filename)"
            if how == "indirect":
                await _action(
                    reader,
                    writer,
                    Action="Setvar",
                    Channel=channel,
                    Variable="HAZARD_READ",
                    Value=f"${{{call}}}",
                )
            text = call if how == "direct" else "EVAL(${EVAL(${HAZARD_READ})})"
            if mixmonitor is mixed:
                alive = await _read(reader, writer, action, Channel=channel, **{header: text})
                assert alive.endswith("/tmp/hazard-mix.wav"), alive
        writer.write(f"Action: {action}\r\nChannel: {channel}\r\n{header}: {text}\r\n\r\n".encode())
        await writer.drain()
        for _ in range(75):  # 15 s
            if not box.running:
                break
            await asyncio.sleep(0.2)
        assert not box.running, "Asterisk survived: the hazard may be fixed in this version"
    finally:
        writer.close()
