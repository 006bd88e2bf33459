"""`[callrouter-inbound]` pasted without the snippet's `[globals]`, on the
real Asterisk 22 (issue 16, hnew32's trial of README's quick start, which
said to paste that context alone): `Wait()` of nothing did not wait and
`Goto(,did,1)` ran the context again and again, while `callrouter check
--asterisk` said the context was OK. It fails it now, and passes the whole
snippet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.cli import main
from router.sandbox import Sandbox
from router.testing import shipped_dialplan
from tests.integration._live import TEST_QUEUE, sales_router_toml

pytestmark = pytest.mark.integration


def inbound_alone() -> str:
    """The shipped `[callrouter-inbound]` as a reader of the old README pasted it."""
    text = shipped_dialplan()
    start = text.index("[callrouter-inbound]")
    end = text.index("\n[", start)
    return text[start:end] + "\n"


@pytest.fixture
def queue_dialplan() -> str:
    return inbound_alone() + TEST_QUEUE


def test_check_fails_the_inbound_context_without_its_globals(
    queue_box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sales_router_toml(queue_box, tmp_path)
    assert "CALLROUTER_WAIT=" not in queue_box.cli("dialplan show globals")
    assert main(["check", "--config", str(config), "--asterisk"]) == 1
    fails = re.findall(r"^asterisk: FAIL +(.*)$", capsys.readouterr().out, re.M)
    assert [line.split(",")[0] for line in fails] == [
        "[callrouter-inbound] reads ${CALLROUTER_WAIT}",
        "[callrouter-inbound] reads ${CALLROUTER_DEFAULT}",
    ], fails
    assert "again and again" in fails[1]
    # The whole snippet, as README now says: its [globals] set both.
    queue_box.set_dialplan(shipped_dialplan() + TEST_QUEUE)
    assert main(["check", "--config", str(config), "--asterisk"]) == 0, capsys.readouterr().out
    assert "asterisk: FAIL" not in capsys.readouterr().out
