"""The one-shot commands' exit codes, as docs/operations.md (+ru) and the
README list them: 0, 1, 2, 130 after Ctrl-C, 141 for a reader that left
(tests/unit/test_cli_pipe.py)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from router import cli
from tests.unit.cli_code import exit_code
from tests.unit.native_peer import native_peer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chatty_peer() -> Iterator[int]:
    """A native AMI peer that takes every action and, once logged in, sends
    one Newchannel event and nothing more."""

    def reply(head: Mapping[str, str], send: Callable[[str], None], _: int) -> None:
        answer = f"Response: Success\r\nActionID: {head.get('ActionID', '')}\r\n\r\n"
        if head.get("Action") == "Login":
            answer += "Event: Newchannel\r\nChannel: PJSIP/a-1\r\n\r\n"
        send(answer)

    with native_peer(reply) as port:
        yield port


def watching_events(port: int) -> subprocess.Popen[str]:
    """``callrouter events`` as a process reading the peer at ``port``, its
    output and errors piped as text."""
    argv = [
        *("events", "--url", f"tcp://127.0.0.1:{port}", "--username", "watcher"),
        *("--auth", "plain", "--config", "/none.toml"),
    ]
    # Started with Ctrl-C's own action, whatever this process's: a SIGINT
    # ignored here (the suite started in the background by a script, whose
    # shell ignores it for its jobs) stays ignored across exec, Python then
    # sets no KeyboardInterrupt, and the test's SIGINT did nothing: the
    # command ran on and the test failed at its 30 s wait (issue 16).
    # (Not preexec_fn: this process runs the peer's threads.)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "router.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "CALLROUTER_SECRET": "x"},
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def test_ctrl_c_ends_callrouter_events_with_130_and_no_word(chatty_peer: int) -> None:
    """hcli31's trial: Ctrl-C ended `callrouter events` with 0, as if it had
    printed its --count, while it ended every other command with 130."""
    with watching_events(chatty_peer) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        while (line := proc.stdout.readline()) not in ("Channel: PJSIP/a-1\n", ""):
            pass
        assert line, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
    assert (code, err) == (130, "")


def test_ctrl_c_while_the_commands_load_is_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hcli31's trial: Ctrl-C in the first second of any command (the commands'
    modules being imported) printed a 20-line traceback through importlib."""

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    try:
        code = cli.main(["plugins"])
    except KeyboardInterrupt:  # not left to stop pytest
        pytest.fail("the KeyboardInterrupt came out of main()")
    assert code == 130
    assert capsys.readouterr() == ("", "")


def test_the_documented_codes_are_the_real_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["plugins"]) == 0
    assert cli.main(["recordings", "status", "--config", str(tmp_path / "none.toml")]) == 1
    with pytest.raises(SystemExit) as usage:
        cli.main(["plugins", "--jsn"])
    assert usage.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    ("page", "codes"),
    [
        ("README.md", ["Exit code 0", "1 comes with", "2 with", "130 after Ctrl-C", "141 when"]),
        ("docs/operations.md", ["with 0 when", "1 on an error", "2 on a wrong", "130 when"]),
        ("docs/ru/operations.md", ["с кодом 0", "1 при ошибке", "2\nпри неверной", "130,"]),
    ],
)
def test_the_pages_list_the_codes(page: str, codes: list[str]) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for code in codes:
        assert code in text, code
    assert "141" in text


@pytest.mark.parametrize("count", ["0", "-2", "x"])
def test_events_count_is_one_or_more(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    """hcli31's trial: `callrouter events --count 0` (or -2) printed one event
    and exited 0, as --count 1 does."""
    with pytest.raises(SystemExit) as usage:
        cli.main(["events", "--count", count, "--config", "/none.toml"])
    assert usage.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "callrouter events: error: argument --count: "
        f"expected a number of events, 1 or more, got '{count}'"
    )


def test_callrouter_events_ends_when_its_reader_leaves_between_events(chatty_peer: int) -> None:
    """hcli31's trial: `callrouter events Hangup | head -1` printed its line and
    then ran on until the next event came to meet the closed pipe (on a quiet
    Asterisk, for ever); it now ends as the reader leaves, as `tail -f` does,
    with the code of a closed pipe and no word."""
    with watching_events(chatty_peer) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        # The whole event and its blank line (the command writes nothing more):
        # closed earlier, a write of it still to come would end the command.
        event = [proc.stdout.readline() for _ in range(3)]
        assert event == ["Event: Newchannel\n", "Channel: PJSIP/a-1\n", "\n"]
        proc.stdout.close()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("callrouter events ran on after its reader left")
        err = proc.stderr.read()
    assert (code, err) == (141, "")


_EXPLAIN = ["explain", "--caller", "1", "--did", "2", "--config", "/none.toml"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["check", "--tz", "Mars/X"], "argument --tz: unknown time zone 'Mars/X'"),
        (["check", "--timeout", "-1"], "argument --timeout: expected more than 0"),
        (["check", "--url", "ftp://x"], "argument --url: expected http://, https://"),
        (["check", ""], "argument PATH: an empty path (it would be the current folder)"),
        (["events", "--timeout", "0", "--config", "/none.toml"], "argument --timeout: "),
        (["ami", "Ping", "--url", "ftp://x", "--config", "/none.toml"], "argument --url: "),
        (["ami", "Pign", "--config", "/none.toml"], "unknown AMI action 'Pign' (did you mean"),
        (["ami", "Ping", "Foo=1", "--config", "/none.toml"], "Ping: unknown parameter 'Foo'"),
        (["ami", "Ping", "Foo", "--config", "/none.toml"], "parameter 'Foo': expected KEY=VALUE"),
        (["ami", "Pign", "--help"], "unknown AMI action 'Pign' (did you mean 'Ping'?)"),
        (["run", "--rules", "", "--config", "/none.toml"], "argument --rules: an empty path"),
        ([*_EXPLAIN, "--at", "garbage"], 'argument --at: expected "YYYY-MM-DD HH:MM"'),
        ([*_EXPLAIN, "--lookup", "x"], "argument --lookup: expected NAME=JSON, got 'x'"),
        ([*_EXPLAIN, "--tz", "Mars/X"], "argument --tz: unknown time zone 'Mars/X'"),
        ([*_EXPLAIN, "--rules", ""], "argument --rules: an empty path"),
        (
            ["token", "new", "bad name", "--allow", "calls:read", "--extensions", "1"],
            "NAME 'bad name': letters, digits",
        ),
        (["state", "backup", "", "--state-dir", "/none"], "argument TARGET: an empty path"),
        (["state", "restore", "", "--state-dir", "/none"], "argument BACKUP: an empty path"),
    ],
    ids=lambda value: " ".join(value)[:40] if isinstance(value, list) else "",
)
def test_a_bad_value_on_the_command_line_is_a_usage_error_in_every_command(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """hleft33b's trial: `check --tz Mars/X`, `--timeout -1` and `--url ftp://x`
    exited 1 (after reading router.toml: with none, `events --timeout -1` said
    the file was missing), `explain --at garbage` and `token new 'bad name'`
    2 without the usage, and `run --rules ''` routed by the rule files of the
    current folder. One rule now (docs/operations.md): what was typed wrong is
    a wrong command line, the usage and `callrouter CMD: error: ...`, exit 2,
    before any file is read. hnew33's trial: `callrouter ami Pign` and `ami
    Ping Foo=1`, the action and parameters the catalog checks before anything
    is sent, still exited 1 with no usage, as if Asterisk had refused them."""
    assert exit_code(argv) == 2
    out, err = capsys.readouterr()
    command = " ".join(argv[:2]) if argv[0] in ("token", "state") else argv[0]
    assert out == ""
    assert err.startswith(f"usage: callrouter {command} "), err
    assert err.splitlines()[-1].startswith(f"callrouter {command}: error: {error}"), err


def test_an_actions_search_that_finds_nothing_is_said_as_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """hleft33b's trial: `callrouter actions xyz` said `no action matches 'xyz'`
    with no `callrouter actions: error:` before it, as no other command does;
    exit 1 stays (found nothing, as grep)."""
    assert cli.main(["actions", "xyz"]) == 1
    assert cli.main(["actions", "--events", "xyz"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("callrouter actions: error: no action matches 'xyz' (Asterisk ")
    assert lines[1].startswith("callrouter actions: error: no event matches 'xyz' (Asterisk ")


@pytest.mark.parametrize("page", ["docs/operations.md", "docs/ru/operations.md"])
def test_the_bad_values_operations_md_lists_for_check_are_its_own(
    page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """hnew33's trial: docs/operations.md (+ru) gave `--rules ''` as a bad
    value of `callrouter check`, which has no `--rules` (its rule paths are
    PATH): typed as written, it said `unrecognized argument: --rules`. Each
    value the paragraph lists is one `check` takes and refuses as a value."""
    text = (ROOT / page).read_text(encoding="utf-8")
    start = text.index("(`--tz Mars/Olympus`")
    listed = re.findall(r"`([^`]+)`", text[start : text.index(")", start + 1)])
    assert len(listed) == 5, listed
    for typed in listed:
        argv = ["check", *shlex.split(typed), "--config", "/none.toml"]
        assert exit_code(argv) == 2, typed
        err = capsys.readouterr().err
        named = typed.split()[0] if typed.startswith("--") else "PATH"
        assert f"callrouter check: error: argument {named}: " in err, (typed, err)


@pytest.mark.parametrize("page", ["docs/operations.md", "docs/ru/operations.md"])
def test_the_quoted_ami_usage_error_is_the_real_one(
    page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exit-code paragraph quotes `callrouter ami Pign`'s error (exit 2)."""
    text = " ".join((ROOT / page).read_text(encoding="utf-8").split())
    quoted = "callrouter ami: error: unknown AMI action 'Pign' (did you mean 'Ping'?)"
    assert f"`{quoted} ...`" in text
    assert exit_code(["ami", "Pign", "--config", "/none.toml"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(quoted)
