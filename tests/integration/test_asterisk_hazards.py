"""The requests router/ami/hazards.py refuses do crash the Asterisk we ship
against: the guard is there for a reason, and this test says when a newer
Asterisk no longer needs it (it then fails: drop the entry and this test).

Sent over a bare socket, since every callrouter client refuses them. On a
scratch sandbox of its own: the shared one must survive.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

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


#: What the recorded channel runs: async AGI, so that an ``AGI`` action reaches it
#: (the sandbox loads no res_agi: each test loads it), then a wait.
DIALPLAN = """
[hazard]
exten => s,1,AGI(agi:async)
 same => n,Wait(120)

[hazard-other]
exten => s,1,Answer()
 same => n,Wait(120)
"""


@dataclass(frozen=True)
class Read:
    """One way to read ``MIXMONITOR(<id>,filename)``: ``text`` sent as ``action``'s
    ``header``, ``{call}`` standing for the function; ``value`` (when given) is first
    set in ``HAZARD_READ`` on the channel, so that the request need not name it;
    ``{channel}`` stands for the recorded channel. ``application``: what the priority
    ``DialplanExtensionAdd`` writes runs, or what ``Originate`` runs on another channel."""

    action: str
    header: str
    text: str
    value: str | None = None
    application: str = "NoOp"


CALL = "${{{call}}}"
READS = [
    Read("Getvar", "Variable", "{call}"),
    Read("Status", "Variables", "{call}"),
    # EVAL(${X}) gives X's text, EVAL of that text calls the function.
    Read("Getvar", "Variable", "EVAL(${{EVAL(${{HAZARD_READ}})}})", CALL),
    Read("Status", "Variables", "EVAL(${{EVAL(${{HAZARD_READ}})}})", CALL),
    # One EVAL: X's value taken as a name, or as an expression.
    Read("Getvar", "Variable", "EVAL(${{${{HAZARD_READ}}}})", "{call}"),
    Read("Status", "Variables", "EVAL($[${{HAZARD_READ}}])", "{call}"),
    Read("AGI", "Command", "GET VARIABLE {call}"),
    Read("AGI", "Command", "GET FULL VARIABLE ${{EVAL(${{HAZARD_READ}})}}", CALL),
    # A priority the channel is then redirected to.
    Read("DialplanExtensionAdd", "ApplicationData", CALL),
    Read("DialplanExtensionAdd", "ApplicationData", "${{EVAL(${{HAZARD_READ}})}}", CALL),
    # MixMonitor substitutes its command (^{ for ${) as it starts.
    Read("MixMonitor", "Command", "/bin/true ^{{{call}}}"),
    Read("MixMonitor", "Command", "/bin/true ^{{EVAL(^{{HAZARD_READ}})}}", CALL),
    Read("MixMonitor", "File", "/tmp/hazard-x.wav,,/bin/true ^{{{call}}}"),
    Read("MixMonitor", "File", "/tmp/hazard-x.wav,,/bin/true ^{{EVAL(^{{HAZARD_READ}})}}", CALL),
    Read("MixMonitor", "Options", "b,/bin/true ^{{{call}}}"),
    Read("MixMonitor", "Options", "b,/bin/true ^{{EVAL(^{{HAZARD_READ}})}}", CALL),
    # The MixMonitor application substitutes its command (^{ for ${) as the action
    # does, however it is started: by AGI, or by a priority DialplanExtensionAdd wrote.
    Read(
        "AGI",
        "Command",
        # Quoted: AGI splits its arguments at spaces, and EXEC passes on only the first.
        'EXEC MixMonitor "/tmp/hazard-agi.wav,,/bin/true ^{{^{{HAZARD_READ}}}}"',
        "{call}",
    ),
    Read(
        "DialplanExtensionAdd",
        "ApplicationData",
        "/tmp/hazard-dx.wav,,/bin/true ^{{^{{HAZARD_READ}}}}",
        "{call}",
        application="MixMonitor",
    ),
    # Exec substitutes its argument again: a priority's plain ${X} is then evaluated twice.
    Read(
        "DialplanExtensionAdd",
        "ApplicationData",
        "${{HAZARD_READ}}",
        "NoOp(${{{call}}})",
        application="Exec",
    ),
    # Originate runs an application on another channel; IMPORT reads the recorded one.
    Read("Originate", "Data", "NoOp(${{IMPORT({channel},{call})}})", application="Exec"),
    Read("Originate", "Data", "NoOp(${{IMPORT({channel},{call})}})", application="TryExec"),
    Read(
        "Originate",
        "Data",
        "/tmp/hazard-o.wav,,/bin/true ^{{IMPORT({channel},{call})}}",
        application="MixMonitor",
    ),
]


#: ``Filter``'s ``MatchCriteria`` that kill Asterisk 22 (``manager_add_filter``
#: reads through the NULL ``strstr(option, "(")`` answers), and one that does not.
FILTER_KILLS = "name"
FILTER_KEPT = "method(regex)"


def test_every_hazard_is_tried_here() -> None:
    """Each entry of HAZARDS refuses some read tried here (with an id of the kind
    Asterisk gives), or the Filter tried below."""
    call = "MIXMONITOR(0x7f93bc002b80,filename)"
    for known in HAZARDS:
        if known.action == "Filter":
            assert known.header == "MatchCriteria", known
            assert known.matches(FILTER_KILLS), known
            assert not known.matches(FILTER_KEPT), known
            continue
        assert any(
            read.action == known.action
            and read.header == known.header
            and (known.application is None or read.application.lower() in known.application)
            and known.matches(read.text.format(call=call, channel="Local/s@hazard-1;2"))
            for read in READS
        ), known


async def _send(
    box: Sandbox,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    channel: str,
    read: Read,
    text: str,
    label: str,
) -> None:
    """Send ``read`` with ``text``, past any client's check; a DialplanExtensionAdd's
    priority is run by a Redirect of the channel."""
    if read.action == "DialplanExtensionAdd":
        context = f"hazard-{label}"
        for priority, application, data in (("1", read.application, text), ("2", "Wait", "120")):
            added = await _action(
                reader,
                writer,
                Action="DialplanExtensionAdd",
                Context=context,
                Extension="s",
                Priority=priority,
                Application=application,
                ApplicationData=data,
            )
            assert added["Response"] == "Success", added
        writer.write(
            f"Action: Redirect\r\nChannel: {channel}\r\nContext: {context}\r\n"
            "Exten: s\r\nPriority: 1\r\n\r\n".encode()
        )
    elif read.action == "Originate":
        writer.write(
            "Action: Originate\r\nChannel: Local/s@hazard-other\r\nAsync: true\r\n"
            f"Application: {read.application}\r\nData: {text}\r\n\r\n".encode()
        )
    else:
        headers = f"Action: {read.action}\r\nChannel: {channel}\r\n"
        if read.action == "MixMonitor" and read.header != "File":
            # MixMonitor records to a File (without one it starts nothing).
            headers += f"File: /tmp/hazard-{label}.wav\r\n"
        writer.write(f"{headers}{read.header}: {text}\r\n\r\n".encode())
    await writer.drain()


@pytest.mark.parametrize(
    "read", READS, ids=lambda r: f"{r.action}-{r.header}-{r.application}-{r.text[:24]}"
)
async def test_a_read_of_mixmonitor_on_a_one_leg_recording_kills_asterisk(
    scratch_sandbox: Sandbox, read: Read
) -> None:
    box = scratch_sandbox
    box.cli("module load res_speech.so")  # res_agi needs it
    assert "Loaded" in box.cli("module load res_agi.so")
    assert "Loaded" in box.cli("module load app_exec.so")  # loaded in most Asterisks
    box.set_dialplan(DIALPLAN)
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
            Channel="Local/s@hazard",
            Application="Wait",
            Data="60",
            Async="true",
        )
        channel = ""
        for _ in range(50):
            listing = box.cli("core show channels concise")
            found = [line.split("!")[0] for line in listing.splitlines() if "!hazard!" in line]
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
        # The same read of a MixMonitor that writes a mixed file is answered (a
        # Getvar or Status with its file name); then the one of the MixMonitor that
        # writes only r().
        for mixmonitor, label in ((mixed, "mixed"), (started, "one-leg")):
            call = f"MIXMONITOR({mixmonitor['MixMonitorID']},filename)"
            if read.value is not None:
                await _action(
                    reader,
                    writer,
                    Action="Setvar",
                    Channel=channel,
                    Variable="HAZARD_READ",
                    Value=read.value.format(call=call, channel=channel),
                )
            text = read.text.format(call=call, channel=channel)
            if mixmonitor is started:
                break
            if read.action in ("Getvar", "Status"):
                alive = await _read(
                    reader, writer, read.action, Channel=channel, **{read.header: text}
                )
                assert alive.endswith("/tmp/hazard-mix.wav"), alive
            else:
                await _send(box, reader, writer, channel, read, text, label)
                await asyncio.sleep(1)
                assert box.running, "Asterisk died on the MixMonitor that writes a mixed file"
        await _send(box, reader, writer, channel, read, text, "one-leg")
        for _ in range(75):  # 15 s
            if not box.running:
                break
            await asyncio.sleep(0.2)
        assert not box.running, "Asterisk survived: the hazard may be fixed in this version"
    finally:
        writer.close()


async def test_a_filter_whose_option_has_no_parenthesis_kills_asterisk(
    scratch_sandbox: Sandbox,
) -> None:
    """``Filter`` with ``MatchCriteria: name`` (an option with no ``(``): Asterisk 22
    dies. The well-formed ``method(regex)`` is answered first, so it is the
    missing ``(`` that kills it, not the action."""
    box = scratch_sandbox
    reader, writer = await asyncio.open_connection("127.0.0.1", box.ami_port)
    try:
        await reader.readline()  # the banner
        login = await _action(
            reader, writer, Action="Login", Username="admin", Secret=box.secret, Events="off"
        )
        assert login["Response"] == "Success"
        kept = await _action(
            reader,
            writer,
            Action="Filter",
            Operation="Add",
            MatchCriteria=FILTER_KEPT,
            Filter="Event: Newexten",
        )
        assert kept["Response"] == "Success", kept
        assert box.running
        writer.write(
            f"Action: Filter\r\nOperation: Add\r\nMatchCriteria: {FILTER_KILLS}\r\n"
            "Filter: Event: Newexten\r\n\r\n".encode()
        )
        await writer.drain()
        for _ in range(75):  # 15 s
            if not box.running:
                break
            await asyncio.sleep(0.2)
        assert not box.running, "Asterisk survived: the hazard may be fixed in this version"
    finally:
        writer.close()
