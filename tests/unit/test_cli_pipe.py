"""The CLI in a pipeline whose reader leaves early (``callrouter actions | head``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_a_reader_that_leaves_gets_no_traceback() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "router.cli", "actions"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        # Gone before the command writes (its 12 KB would fit the pipe's
        # buffer): every write of it meets a closed pipe, as past head's lines.
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert err == b"", err.decode()[-500:]
    assert code == 141  # 128 + SIGPIPE, as for a command the signal ended


def test_a_broken_pipe_of_another_socket_is_not_taken_for_the_reader_leaving(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a closed standard output ends a command quietly with 141: a
    BrokenPipeError from a socket (Asterisk or the API gone mid-command, a
    plugin's connection in callrouter run) was swallowed the same way, with
    no word of what failed and stdout pointed at /dev/null."""
    from router import cli
    from router.commands import actions

    def fails(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe (a socket)")

    monkeypatch.setattr(actions, "run", fails)
    with pytest.raises(BrokenPipeError, match="a socket"):
        cli.main(["actions"])


def test_a_reader_that_leaves_mid_output_still_ends_quietly() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "router.cli", "actions"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.read(100)  # a few lines read, then gone (head -n 2)
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert err == b"", err.decode()[-500:]
    assert code in (0, 141)  # 0 when all of it fit the pipe before the reader left
