"""The double and issue 14's history contract: event ids, the new fields, a call's story."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from callrouter_onec.client import basic_auth_header
from callrouter_onec.double import OneCDouble

BASE: dict[str, Any] = {
    "event": "ringing",
    "event_id": "1.1/ringing/101",
    "call_id": "1.1",
    "direction": "in",
    "from": "79161234567",
    "to": "74951234567",
    "extension": "101",
    "ts": 1714557601,
}


def post(double: OneCDouble, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        double.url + "/v1/calls/events",
        content=json.dumps(body).encode(),
        headers={
            "Authorization": basic_auth_header(double.username, double.password),
            "Content-Type": "application/json",
        },
        timeout=5,
    )


def test_event_id_is_the_idempotency_key_when_present(double: OneCDouble) -> None:
    first = post(double, BASE).json()
    second = post(double, {**BASE, "event_id": "1.1/ringing/102", "extension": "102"}).json()
    again = post(double, BASE).json()
    assert (first["duplicate"], second["duplicate"], again["duplicate"]) == (False, False, True)
    assert again["id"] == first["id"]
    assert second["id"] != first["id"]
    # without an event id, (call_id, event) is the key, as before
    plain = {k: v for k, v in BASE.items() if k != "event_id"}
    assert post(double, plain).json()["duplicate"] is False
    assert post(double, plain).json()["duplicate"] is True
    assert len(double.event_book.receipts) == 5
    assert len(double.event_book.events("1.1")) == 3


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"event_id": ""}, "invalid_event", "event_id"),
        ({"event": "transferred", "transfer": {"kind": "sideways"}}, "invalid_event", "transfer"),
        ({"transfer": {"kind": "blind", "from": 101}}, "invalid_event", "transfer.from"),
        ({"talk_seconds": "long"}, "invalid_event", "talk_seconds"),
        ({"replayed": "yes"}, "invalid_event", "replayed"),
        ({"owner": {"extension": 101}}, "invalid_event", "owner"),
        (
            {"event": "missed_closed", "closed_at": "2024-05-01T12:00:00"},
            "missing_field",
            "closed_by",
        ),
        ({"event": "missed_closed", "closed_by": "2.1"}, "missing_field", "closed_at"),
    ],
)
def test_new_fields_are_checked_with_the_contracts_codes(
    double: OneCDouble, change: dict[str, Any], code: str, words: str
) -> None:
    response = post(double, {**BASE, **change})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert double.event_book.receipts == []


def test_every_new_kind_and_field_is_taken(double: OneCDouble) -> None:
    for body in (
        {**BASE, "talk_seconds": None, "replayed": True, "hangup_by": None},
        {
            **BASE,
            "event": "transferred",
            "event_id": "1.1/transferred/1",
            "transfer": {"kind": "attended", "from": "101", "to": "102"},
        },
        {
            **BASE,
            "event": "missed_closed",
            "event_id": "1.0/missed_closed",
            "call_id": "1.0",
            "closed_by": "1.1",
            "closed_at": "2024-05-01T12:00:07",
            "owner": {"manager_id": None, "extension": "105", "source": "missed_owner"},
        },
    ):
        assert post(double, body).status_code == 200, body


def test_a_calls_story_in_process_over_http_and_from_the_command_line(
    double: OneCDouble,
) -> None:
    events = [
        BASE,
        {**BASE, "event": "answered", "event_id": "1.1/answered", "ts": 1714557607},
        {
            **BASE,
            "event": "transferred",
            "event_id": "1.1/transferred/1",
            "extension": "102",
            "transfer": {"kind": "blind", "from": "101", "to": "102"},
            "ts": 1714557660,
        },
        {
            **BASE,
            "event": "hangup",
            "event_id": "1.1/hangup",
            "extension": "102",
            "status": "ANSWER",
            "talk_seconds": 183.0,
            "hangup_by": "external",
            "ts": 1714557790,
        },
        {
            **BASE,
            "event": "missed_closed",
            "event_id": "0.9/missed_closed",
            "call_id": "0.9",
            "closed_by": "1.1",
            "closed_at": "2024-05-01T12:00:07",
        },
    ]
    for body in events:
        assert post(double, body).status_code == 200
    post(double, BASE)  # a duplicate is no part of the story
    story = double.story("1.1")
    assert [e["event"] for e in story] == [
        "ringing",
        "answered",
        "transferred",
        "hangup",
        "missed_closed",
    ]
    text = double.story_text("1.1")
    lines = text.splitlines()
    assert lines[0] == "call 1.1 (in, 79161234567 -> 74951234567)"
    assert "ringing        ext 101" in lines[1]
    assert "blind: 101 -> 102" in lines[3]
    assert "status ANSWER  talk 183.0 s  hung up by external" in lines[4]
    assert "this call closes missed call 0.9" in lines[5]
    assert "closed by call 1.1" in double.story_text("0.9")
    served = httpx.get(double.root_url + "/_double/story", params={"call_id": "1.1"}, timeout=5)
    assert served.json() == {"call_id": "1.1", "events": story}
    assert httpx.get(double.root_url + "/_double/story", timeout=5).status_code == 400
    printed = subprocess.run(
        [sys.executable, "-m", "callrouter_onec.double", "story", "1.1", "--url", double.root_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert printed.stdout.strip() == text
    as_json = subprocess.run(
        [
            sys.executable,
            "-m",
            "callrouter_onec.double",
            "story",
            "1.1",
            "--json",
            "--url",
            double.root_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(as_json.stdout) == story
    nobody = subprocess.run(
        [
            sys.executable,
            "-m",
            "callrouter_onec.double",
            "story",
            "1.1",
            "--url",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nobody.returncode == 1
    assert "cannot ask http://127.0.0.1:9" in nobody.stderr
