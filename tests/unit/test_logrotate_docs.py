"""docs/operations.md's logrotate snippet works as written (hops45's trial,
issue 16): callrouter writes only to standard error, SIGHUP reopens nothing,
so a rotation by renaming left it writing the renamed file and the docs said
nothing of it. The snippet (``copytruncate``) is run by the real logrotate on
a process that logs as ``callrouter run`` does, into a file opened as the
docs' ``2>>`` opens it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
EN = REPO / "docs" / "operations.md"
RU = REPO / "docs" / "ru" / "operations.md"
SNIPPET = re.compile(r"```text\n(# /etc/logrotate\.d/callrouter\n.*?)```\n", re.S)
RUN_LINE = "# callrouter run --config /etc/callrouter/router.toml 2>>/var/log/callrouter.log"

# Logs through callrouter's own set-up, a batch before and after the rotation;
# the test creates `go` between them (no clock involved).
WRITER = """
import logging, sys, time
from pathlib import Path
from router.commands.run import setup_logging
setup_logging("text", "INFO")
log = logging.getLogger("router.decision")
folder = Path(sys.argv[1])
for i in range(50):
    log.info("before %d", i)
(folder / "ready").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
for i in range(50):
    log.info("after %d", i)
"""


def snippet(path: Path) -> str:
    found = SNIPPET.findall(path.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{path}: no single logrotate snippet"
    return str(found[0])


def test_the_logs_section_documents_append_and_copytruncate() -> None:
    text = snippet(EN)
    assert "copytruncate" in text
    assert "postrotate" not in text  # SIGHUP reopens nothing
    assert snippet(RU) == text
    for page in (EN, RU):
        assert RUN_LINE in page.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_the_documented_logrotate_snippet_rotates_a_running_log(tmp_path: Path) -> None:
    log_file = tmp_path / "callrouter.log"
    conf = tmp_path / "callrouter.conf"
    conf.write_text(
        "\n".join(snippet(EN).splitlines()[1:]).replace("/var/log/callrouter.log", str(log_file)),
        encoding="utf-8",
    )
    with open(log_file, "ab") as appended:  # what the docs' 2>> opens
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stderr=appended,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        while not (tmp_path / "ready").exists():
            assert writer.poll() is None, "the writer ended early"
            time.sleep(0.01)
        rotated = subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert rotated.returncode == 0, rotated.stderr
        (tmp_path / "go").touch()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    old = (tmp_path / "callrouter.log.1").read_bytes()
    new = log_file.read_bytes()
    assert b"\0" not in new  # appended at the truncated end, no hole
    assert [line.split(b": ")[-1] for line in old.splitlines()] == [
        b"before %d" % i for i in range(50)
    ]
    assert [line.split(b": ")[-1] for line in new.splitlines()] == [
        b"after %d" % i for i in range(50)
    ]
