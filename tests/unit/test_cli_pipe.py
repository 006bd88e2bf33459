"""The CLI in a pipeline whose reader leaves early (``callrouter actions | head``)."""

from __future__ import annotations

import subprocess
import sys


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
