"""One-shot commands print their log records as `callrouter COMMAND: warning: ...`
(router/commands/_logging.py), not as Python's bare last-resort lines."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from router.cli import main
from tests.unit.native_peer import native_peer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def oversized_event_peer() -> Iterator[int]:
    """A native AMI peer that takes every action; on its first connection it
    then sends an event of 1,003 lines (the client drops the connection, with
    a WARNING), on the next one an ordinary event."""

    def reply(head: Mapping[str, str], send: Callable[[str], None], connection: int) -> None:
        send(f"Response: Success\r\nActionID: {head.get('ActionID', '')}\r\n\r\n")
        if head.get("Action") == "Login":  # the event once the session is up
            event = (
                "Event: Flood\r\n" + "X: y\r\n" * 1002 + "\r\n"
                if connection == 1
                else "Event: Newchannel\r\nChannel: PJSIP/a-1\r\n\r\n"
            )
            threading.Timer(0.3, send, (event,)).start()

    with native_peer(reply) as port:
        yield port


def _events(port: int, *more: str) -> subprocess.CompletedProcess[str]:
    """`callrouter events --count 1` against the peer, as a real process: under
    pytest the root logger has handlers, and no last resort is used."""
    argv = [
        *("events", "--count", "1", *more, "--url", f"tcp://127.0.0.1:{port}"),
        *("--username", "watcher", "--auth", "plain", "--config", "/none.toml"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "CALLROUTER_SECRET": "x"},
    )


FLOOD = (
    "bad data from Asterisk: an event of 1003 lines, more than 1000 "
    "(Asterisk's largest has well under 200): 'Event: Flood'"
)


def test_callrouter_events_says_a_loss_and_its_resume_once_each(
    oversized_event_peer: int,
) -> None:
    """hcli31's trial: one lost connection was told four times on stderr: the
    client's `callrouter events: warning: AMI connection to ... lost: ...`, the
    stream's `warning: event stream lost Asterisk: ...` and `warning: event
    stream resumed after 0.9 s`, then the command's own `# stream resumed
    after a 0.9 s gap ...`. Now the command says each once, in `#` lines."""
    done = _events(oversized_event_peer)
    assert done.returncode == 0, done.stderr
    assert "Channel: PJSIP/a-1" in done.stdout
    peer = f"tcp://127.0.0.1:{oversized_event_peer}"
    told = re.sub(r"after a \d+\.\d s gap", "after a N s gap", done.stderr).splitlines()
    assert told == [
        f"# stream lost Asterisk: AMI connection to {peer}: {FLOOD}; reconnecting",
        "# stream resumed after a N s gap (reconnect); events in between are lost",
    ]


def test_callrouter_events_json_tells_a_gap_on_standard_output(
    oversized_event_peer: int,
) -> None:
    """hcli31's trial: `events --json` said a gap on standard error only, in
    `#` lines: a program reading the objects could not see the loss and the
    resume. The gap is an object of its own, before the events after it."""
    done = _events(oversized_event_peer, "--json")
    assert done.returncode == 0, done.stderr
    gap, event = (json.loads(line) for line in done.stdout.splitlines())
    assert event["Event"] == "Newchannel"
    told = gap["gap"]
    assert set(gap) == {"gap"}
    assert (told["reason"], told["error"]) == (
        "reconnect",
        f"AMI connection to tcp://127.0.0.1:{oversized_event_peer}: {FLOOD}",
    )
    assert told["since"] <= told["resumed"]
    assert 0 < told["seconds"] < 30
    # The `#` lines stay, for the person watching.
    assert "# stream resumed after a " in done.stderr


@pytest.mark.parametrize("page", ["operations.md", "ru/operations.md"])
def test_the_operations_page_shows_a_json_gap_as_printed(page: str) -> None:
    """docs/operations.md (+ru) shows the object `events --json` prints of a gap."""
    from router.ami.stream import StreamGap
    from router.commands.events import format_gap

    error = "AMI connection to tcp://127.0.0.1:5038: Asterisk closed the connection"
    shown = format_gap(StreamGap(1764968400.125, 1764968401.031, "reconnect", error))
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert f"```json\n{shown}\n```" in text


@pytest.mark.parametrize("page", ["operations.md", "ru/operations.md"])
def test_the_operations_page_shows_the_lines_of_a_loss_as_printed(
    oversized_event_peer: int, page: str
) -> None:
    """docs/operations.md (+ru) shows what `callrouter events` prints of a loss."""
    done = _events(oversized_event_peer)
    shown = done.stderr.replace(f"127.0.0.1:{oversized_event_peer}", "127.0.0.1:5038")
    shown = re.sub(r"after a \d+\.\d s gap", "after a 0.9 s gap", shown)
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert f"```text\n{shown}```" in text


def test_every_one_shot_command_logs_one_escaped_line_with_its_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler is the command's own: named after it, one line (no
    traceback), control characters escaped, gone once the command is done."""

    def warn(args: object) -> int:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("router.ami.tcp").exception("peer said \x1b[2Jhi")
        logging.getLogger("router.ami.tcp").info("not shown")
        return 0

    monkeypatch.setattr("router.commands.ami.run", warn)  # what `ami` runs
    handlers = list(logging.getLogger().handlers)
    assert main(["ami", "Ping"]) == 0
    assert capsys.readouterr().err == (
        "callrouter ami: error: peer said \\x1b[2Jhi (ValueError: boom)\n"
    )
    assert logging.getLogger().handlers == handlers


@pytest.mark.parametrize("page", ["operations.md", "ru/operations.md"])
def test_the_operations_page_shows_the_line_as_printed(page: str) -> None:
    """docs/operations.md (+ru), Logs: the example is what the formatter makes."""
    from router.commands._logging import OneLine

    record = logging.LogRecord(
        "router.ami.tcp",
        logging.WARNING,
        __file__,
        1,
        "AMI connection to %s lost: %s%s",
        (
            "tcp://127.0.0.1:5038",
            "bad data from Asterisk: an event of 1003 lines, more than 1000 "
            "(Asterisk's largest has well under 200): 'Event: Flood'",
            "",
        ),
        None,
    )
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert f"```text\n{OneLine('ami').format(record)}\n```" in text
