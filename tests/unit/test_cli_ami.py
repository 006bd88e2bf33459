"""``callrouter ami`` and ``callrouter events`` argument handling (no Asterisk needed)."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Iterator, Mapping
from json import loads
from pathlib import Path

import pytest

from router.ami.message import Response
from router.ami.protocol import MAX_LINE_BYTES, Action
from router.cli import main
from router.commands.ami import build_action, parse_params
from router.errors import AMIActionError, AMIValidationError
from tests.unit.native_peer import native_peer


def test_parse_params_keeps_repeats_and_refuses_junk() -> None:
    assert parse_params(["Variable=A=1", "Variable=B=2", "Channel=x"]) == [
        ("Variable", "A=1"),
        ("Variable", "B=2"),
        ("Channel", "x"),
    ]
    with pytest.raises(AMIValidationError, match="KEY=VALUE"):
        parse_params(["novalue"])


def test_build_action_validates_against_catalog() -> None:
    action = build_action(
        "originate",
        [
            ("channel", "Local/1@sink"),
            ("application", "Wait"),
            ("Variable", "A=1"),
            ("Variable", "B=2"),
        ],
        raw=False,
    )
    assert action.name == "Originate"
    assert ("Channel", "Local/1@sink") in action.params
    assert [v for k, v in action.params if k == "Variable"] == ["A=1", "B=2"]
    with pytest.raises(AMIValidationError, match="did you mean 'Context'"):
        build_action(
            "Redirect",
            [("Channel", "x"), ("Contxt", "y"), ("Exten", "1"), ("Priority", "1")],
            raw=False,
        )
    with pytest.raises(AMIValidationError, match="Originat"):
        build_action("Originat", [], raw=False)
    raw = build_action("FutureAction", [("Foo", "1")], raw=True)
    assert raw.params == (("Foo", "1"),)


def test_an_unknown_action_names_the_flag_that_skips_the_catalog(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`callrouter ami Pign`: the command line's way past the catalog is --raw;
    the Python API's, validate=False, stays in the library's own error."""
    from router.ami.catalog import load_catalog

    with pytest.raises(AMIValidationError) as caught:
        build_action("Pign", [], raw=False)
    message = str(caught.value)
    assert "did you mean 'Ping'?" in message
    assert message.endswith("can be sent with --raw")
    assert "validate=False" not in message
    code = main(["ami", "Pign", "--url", "tcp://127.0.0.1:9", "--username", "u"])
    assert code == 2  # a wrong command line (test_cli_exit_codes.py)
    err = capsys.readouterr().err
    assert "can be sent with --raw" in err
    assert "validate=False" not in err
    with pytest.raises(AMIValidationError, match=r"can be sent with validate=False$"):
        load_catalog().action("Pign")


def test_action_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ami", "Redirect", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Redirect" in out
    assert "Channel" in out


def test_unknown_parameter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "ami",
            "Ping",
            "Bogus=1",
            "--url",
            "http://127.0.0.1:9/asterisk",
            "--username",
            "u",
            "--config",
            "/nonexistent.toml",
        ]
    )
    assert code == 2  # a wrong command line: the action's usage, then one error line
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "usage: callrouter ami Ping",
        "callrouter ami: error: Ping: unknown parameter 'Bogus'",
    ]


def test_unreachable_asterisk_is_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    code = main(
        [
            "ami",
            "Ping",
            "--url",
            "http://127.0.0.1:9/asterisk",
            "--username",
            "u",
            "--config",
            "/nonexistent.toml",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot connect" in err[0]


@pytest.mark.parametrize("command", ["ami", "events", "run"])
def test_a_secret_on_the_command_line_is_refused_with_what_to_use(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--secret X`` is not taken for ``--secret-env X`` (argparse's prefix
    matching would then look for an environment variable named ``X``): it is
    refused, saying why and what to write instead."""
    argv = [command, "--url", "tcp://127.0.0.1:5038", "--secret", "hunter2"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--secret: a secret on the command line is visible" in err
    assert "--secret-env NAME" in err
    assert "environment variable hunter2" not in err


@pytest.mark.parametrize("command", ["ami", "events", "run"])
def test_the_url_help_names_every_scheme(command: str) -> None:
    from router.cli import build_parser

    parser = build_parser()
    sub = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    url = next(a for a in sub.choices[command]._actions if "--url" in a.option_strings)
    for scheme in ("http://", "https://", "tcp://", "tls://"):
        assert scheme in (url.help or "")


def test_options_are_taken_only_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    """No abbreviations: ``--user`` is not ``--username`` (a later option
    sharing the prefix would silently change what an old command means)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["ami", "Ping", "--url", "tcp://127.0.0.1:5038", "--user", "router"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "callrouter ami: error: unrecognized arguments: --user (did you mean --username?), router"
    )


def test_a_tcp_url_flag_beside_the_example_router_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/asterisk.md's "Check it" command, run beside a copy of
    examples/router.toml (an AJAM file): --url overrides the file, so the
    file's AJAM-only keys are left out and the command gets as far as
    connecting (nothing listens on port 9 here)."""
    shutil.copy(Path(__file__).parents[2] / "examples" / "router.toml", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    argv = ["ami", "Ping", "--url", "tcp://127.0.0.1:9", "--username", "router"]
    code = main([*argv, "--secret-env", "CALLROUTER_SECRET"])
    assert code == 1
    err = capsys.readouterr().err
    assert "router.toml" not in err
    assert "cannot connect" in err


@pytest.mark.parametrize("raw", [[], ["--raw"]])
def test_an_action_that_crashes_asterisk_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str], raw: list[str]
) -> None:
    """Before, the guard ran only as the action was written: with Asterisk
    unreachable the error was "cannot connect", hiding why the action would
    never be sent (router/ami/hazards.py)."""
    code = main(
        [
            "ami",
            "Getvar",
            "Channel=PJSIP/101-1",
            "Variable=MIXMONITOR(0x1,filename)",
            *raw,
            "--url",
            "tcp://127.0.0.1:9",
            "--username",
            "u",
            "--config",
            "/nonexistent.toml",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "crashes Asterisk" in err
    assert "cannot connect" not in err


_HOSTILE = "\x1b[31mBad\x07\u202e" + "M" * 10240


@pytest.fixture
def hostile_peer() -> Iterator[int]:
    """A native AMI peer that takes the login and answers every other action
    ``Response: Error`` with 10 kB of ``Message`` led by ESC, BEL and a bidi
    override; served from a thread, as ``main`` runs its own event loop."""

    def reply(head: Mapping[str, str], send: Callable[[str], None], _: int) -> None:
        action_id = head.get("ActionID", "")
        if head.get("Action") == "Login":
            send(f"Response: Success\r\nActionID: {action_id}\r\n\r\n")
        else:
            send(f"Response: Error\r\nActionID: {action_id}\r\nMessage: {_HOSTILE}\r\n\r\n")

    with native_peer(reply) as port:
        yield port


def test_a_refused_actions_message_reaches_the_terminal_escaped_and_cut(
    hostile_peer: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer was printed escaped, but the error line after it quoted the
    peer's Message raw: ESC, BEL and a bidi override on the terminal, 10 kB of it."""
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    argv = ["ami", "Ping", "--url", f"tcp://127.0.0.1:{hostile_peer}", "--username", "u"]
    code = main([*argv, "--auth", "plain", "--config", "/nonexistent.toml"])
    assert code == 1
    out, err = capsys.readouterr()
    assert "Message: \\x1b[31mBad\\x07\\u202e" + "M" * 10240 in out  # the answer, whole
    assert err.startswith("callrouter ami: error: Ping: \\x1b[31mBad\\x07\\u202eMMM")
    assert not set(err) & {"\x1b", "\x07", "\u202e"}
    assert len(err) < 300


def test_an_error_quoting_a_peer_is_escaped_on_the_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error main prints may quote a peer (AMIActionError keeps
    Asterisk's Message as it came): its control characters are escaped."""

    async def refused(args: argparse.Namespace, action: Action) -> int:
        response = Response((("Response", "Error"), ("Message", "\x1b[2J\u202eno\x07")))
        raise AMIActionError(action.name, response)

    monkeypatch.setattr("router.commands.ami._send", refused)
    assert main(["ami", "Ping", "--config", "/nonexistent.toml"]) == 1
    err = capsys.readouterr().err
    assert err == "callrouter ami: error: Ping: \\x1b[2J\\u202eno\\x07\n"


@pytest.fixture
def denying_peer() -> Iterator[int]:
    """A native AMI peer that takes the login and answers every other action
    ``Permission denied``, as Asterisk does an action outside the user's write
    classes."""

    def reply(head: Mapping[str, str], send: Callable[[str], None], _: int) -> None:
        action_id = head.get("ActionID", "")
        if head.get("Action") in ("Login", "Logoff"):
            send(f"Response: Success\r\nActionID: {action_id}\r\n\r\n")
        else:
            send(f"Response: Error\r\nActionID: {action_id}\r\nMessage: Permission denied\r\n\r\n")

    with native_peer(reply) as port:
        yield port


def test_a_refused_action_is_one_line_not_also_a_client_warning(
    denying_peer: int,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hnew31's trial: `callrouter ami CoreSettings --username watcher` printed
    the refusal twice, the client's WARNING (bare, through Python's last-resort
    handler) and then the error line; README promises a one-line reason."""
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    argv = ["ami", "CoreSettings", "--url", f"tcp://127.0.0.1:{denying_peer}"]
    code = main([*argv, "--username", "watcher", "--auth", "plain", "--config", "/none.toml"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "callrouter ami: error: CoreSettings: Permission denied: the manager user 'watcher' "
        "needs one of the write classes reporting, system (manager.conf)"
    ]
    assert not [r for r in caplog.records if "Permission denied" in r.getMessage()]


@pytest.fixture
def no_contacts_peer() -> Iterator[int]:
    """A native AMI peer answering ``PJSIPShowContacts`` as Asterisk 22.10.1 did
    on the sandbox with no contact registered (bytes as read, 2026-12-07): its
    ``Message`` ends with a bare line feed."""

    def reply(head: Mapping[str, str], send: Callable[[str], None], _: int) -> None:
        aid = head.get("ActionID", "")
        if head.get("Action") != "PJSIPShowContacts":
            send(f"Response: Success\r\nActionID: {aid}\r\n\r\n")
            return
        send(f"Response: Error\r\nActionID: {aid}\r\nMessage: No Contacts found\n\r\n\r\n")

    with native_peer(reply) as port:
        yield port


def test_an_error_message_ending_in_a_line_feed_is_quoted_without_it(
    no_contacts_peer: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the error line ended `No Contacts found\\x0a`; the answer
    above it is printed whole, the line quotes the message without it."""
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    argv = ["ami", "PJSIPShowContacts", "--url", f"tcp://127.0.0.1:{no_contacts_peer}"]
    assert main([*argv, "--username", "u", "--auth", "plain", "--config", "/none.toml"]) == 1
    out, err = capsys.readouterr()
    assert "Message: No Contacts found\n" in out
    assert err.splitlines() == ["callrouter ami: error: PJSIPShowContacts: No Contacts found"]
    response = Response((("Response", "Error"), ("Message", "No Contacts found\n")))
    assert str(AMIActionError("PJSIPShowContacts", response)) == (
        "PJSIPShowContacts: No Contacts found"
    )
    assert str(AMIActionError("X", Response((("Message", " \n"),)))) == "X: no message"


@pytest.fixture
def short_listing_peer() -> Iterator[int]:
    """A native AMI peer whose ``CoreShowChannels`` lists three channels and
    counts them (``ListItems: 3``), the second with a line over 64 KiB."""

    def reply(head: Mapping[str, str], send: Callable[[str], None], _: int) -> None:
        aid = head.get("ActionID", "")
        if head.get("Action") != "CoreShowChannels":
            send(f"Response: Success\r\nActionID: {aid}\r\n\r\n")
            return
        item = "Event: CoreShowChannel\r\nActionID: {}\r\nChannel: PJSIP/{}\r\n{}\r\n"
        send(
            f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n"
            + item.format(aid, "1", "")
            + item.format(aid, "2", "ApplicationData: " + "x" * (MAX_LINE_BYTES + 10) + "\r\n")
            + item.format(aid, "3", "")
            + f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete\r\n"
            "ListItems: 3\r\n\r\n"
        )

    with native_peer(reply) as port:
        yield port


@pytest.mark.parametrize("json", [False, True], ids=["text", "json"])
def test_a_list_short_of_items_skipped_for_a_long_line_says_so_on_stderr(
    short_listing_peer: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    json: bool,
) -> None:
    """Issue 16: an item skipped for a line over the parser's bound left the
    printed list short, and nothing on the terminal said so (the parser's
    WARNING goes to the log): a note on stderr names how many it could not read."""
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    argv = ["ami", "CoreShowChannels", "--url", f"tcp://127.0.0.1:{short_listing_peer}"]
    argv += ["--username", "u", "--auth", "plain", "--config", "/nonexistent.toml"]
    assert main(argv + (["--json"] if json else [])) == 0
    out, err = capsys.readouterr()
    assert "PJSIP/1" in out
    assert "PJSIP/3" in out
    assert "PJSIP/2" not in out
    if json:
        assert loads(out)["unread_items"] == 1
        # One document, ended by a newline as every text file's last line
        # (issue 16: the shell's prompt followed it on the same line).
        assert out.endswith("}\n")
        assert not out.endswith("\n\n")
    else:
        assert out.endswith("ListItems: 3\n")
    assert err.splitlines()[-1] == (
        "callrouter ami: note: CoreShowChannels: the list above lacks 1 item of the 3 its "
        "closing event counts (ListItems), each skipped for a line over 65536 bytes (the "
        "parser's line bound)"
    )


def test_json_holds_the_lists_closing_event_as_the_text_does(
    short_listing_peer: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's trial of issue 16: `callrouter ami --json` left out an event
    list's closing event (`CoreShowChannelsComplete`, with its `ListItems`), which
    the text prints last. Both print the same blocks now; no list, no closing."""
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    argv = ["--url", f"tcp://127.0.0.1:{short_listing_peer}", "--username", "u"]
    argv += ["--auth", "plain", "--config", "/nonexistent.toml"]
    assert main(["ami", "CoreShowChannels", *argv]) == 0
    text = capsys.readouterr().out
    assert main(["ami", "CoreShowChannels", "--json", *argv]) == 0
    answer = loads(capsys.readouterr().out)
    closing = answer["closing"]
    assert closing["Event"] == "CoreShowChannelsComplete"
    assert (closing["EventList"], closing["ListItems"]) == ("Complete", "3")
    assert answer["complete"] is True
    blocks = [answer["response"], *answer["items"], closing]
    # The same blocks, field by field (each run has its own ActionID).
    shown = [
        [line.partition(": ")[0] for line in block.splitlines()] for block in text.split("\n\n")
    ]
    assert shown == [list(block) for block in blocks]
    assert "ListItems: 3\n" in text
    assert main(["ami", "Ping", "--json", *argv]) == 0
    assert loads(capsys.readouterr().out)["closing"] is None
