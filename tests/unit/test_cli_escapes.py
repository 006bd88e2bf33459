"""``callrouter ami`` and ``callrouter events`` never print a caller's escape sequences raw
(issue 10 item 15): the text they show comes from whoever placed the call."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

import httpx
import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.cli import main

if TYPE_CHECKING:
    from router.testing import ReplayAsterisk

pytest_plugins = ["router.testing"]

HOSTILE = "Ivan\x1b]0;owned\x07\x1b[2J\u202eevil\x9b1m"
RAW = ("\x1b", "\x07", "\u202e", "\x9b")


def test_ami_answer_is_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = (
            f"Response: Success\r\nVariable: CALLERID(name)\r\nValue: {HOSTILE}\r\n\r\n"
        ).encode()
        return httpx.Response(
            200, content=body, headers={"Set-Cookie": 'mansession_id="abc"; Version=1; Max-Age=60'}
        )

    def client(args: argparse.Namespace) -> AJAMClient:
        return AJAMClient(
            ClientSettings(
                url="http://pbx.test/asterisk", username="u", secret="s", http_client="httpx"
            ),
            transport=httpx.MockTransport(handler),
        )

    monkeypatch.setattr("router.commands.ami.client_from_args", client)
    for extra in ([], ["--json"]):
        assert main(["ami", "Getvar", "Channel=PJSIP/a-1", "Variable=CALLERID(name)", *extra]) == 0
        out = capsys.readouterr().out
        for raw in RAW:
            assert raw not in out
        if extra:
            assert json.loads(out)["response"]["Value"] == HOSTILE  # decodes to the value
        else:
            assert "Ivan\\x1b]0;owned\\x07" in out


def test_events_are_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ajam_replay: ReplayAsterisk
) -> None:
    replay = ajam_replay
    replay.queue_event(
        {
            "Event": "Newchannel",
            "Channel": "PJSIP/a-1",
            "Linkedid": "L1",
            "Uniqueid": "L1",
            "CallerIDName": HOSTILE,
            "CallerIDNum": "7916",
        }
    )
    monkeypatch.setattr("router.commands.events.client_from_args", lambda args: replay.client())
    assert main(["events", "Newchannel", "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert "CallerIDName" in out
    for raw in RAW:
        assert raw not in out
