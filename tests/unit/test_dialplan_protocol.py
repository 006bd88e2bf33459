"""router/dialplan.py as the one source of the dialplan protocol (issue 12 item 4):
the request parsed from the UserEvent, the deadline, the request rebuilt from a
channel listing. Sans-I/O: the clocks are arguments, so no test waits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.ami.message import Event
from router.ami.protocol import parse_rawman
from router.dialplan import (
    DEADLINE_VARIABLE,
    DID_VARIABLE,
    INBOUND_CONTEXT,
    NEXT_CHARS,
    NEXT_VARIABLE,
    PART_SEPARATOR,
    RECORD_CONTEXT,
    RECORD_PATH_CHARS,
    RECORD_VARIABLE,
    REQUEST_EVENT,
    Dialplan,
    next_location,
)

ROOT = Path(__file__).parents[2]


def event(**fields: str) -> Event:
    return Event((("Event", "UserEvent"), *fields.items()))


def request_event(**extra: str) -> Event:
    """As Asterisk writes a dialplan's UserEvent(): the channel's snapshot, then its key."""
    return event(
        Channel="PJSIP/trunk-1",
        Uniqueid="1.5",
        Linkedid="1.4",
        CallerIDNum="79161234567",
        CallerIDName="<unknown>",
        Context=INBOUND_CONTEXT,
        Exten="74950000001",
        UserEvent=REQUEST_EVENT,
        DID="74950000001",
        Caller="79161234567",
        **extra,
    )


def test_the_shipped_dialplan_speaks_these_names() -> None:
    conf = (ROOT / "examples" / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    assert f"[{INBOUND_CONTEXT}]" in conf
    assert re.search(rf"UserEvent\({REQUEST_EVENT},", conf)
    assert f"Set({DEADLINE_VARIABLE}=$[${{EPOCH}} + " in conf
    assert f"Set({DID_VARIABLE}=" in conf


@pytest.mark.parametrize(
    "path",
    [
        "examples/asterisk/extensions.conf",
        "router/sandbox/dialplan/callrouter.conf",
        "docs/asterisk.md",
        "docs/ru/asterisk.md",
    ],
)
def test_the_request_is_the_last_step_before_wait(path: str) -> None:
    """Asterisk can lose a Redirect that lands while a channel steps from one
    application to the next (docs/asterisk.md, "A Redirect Asterisk can
    lose"): every copy of the snippet has the UserEvent straight before Wait,
    so one such step follows the request, not two."""
    text = (ROOT / path).read_text(encoding="utf-8")
    start = text.index(f"[{INBOUND_CONTEXT}]")
    steps = [
        line.strip()
        for line in text[start:].splitlines()[1:]
        if line.strip().startswith(("exten =>", "same =>"))
    ]
    at = next(i for i, step in enumerate(steps) if f"UserEvent({REQUEST_EVENT}," in step)
    assert steps[at + 1].startswith("same => n,Wait("), steps[at : at + 2]
    assert any(step == "same => n,Ringing()" for step in steps[:at])


def filter_chars(spec: str) -> set[str]:
    """What Asterisk's FILTER() keeps for ``spec``: ranges ``a-z``, ``\\-`` a literal dash."""
    kept: set[str] = set()
    i = 0
    while i < len(spec):
        if spec[i] == "\\":
            kept.add(spec[i + 1])
            i += 2
        elif i + 2 < len(spec) and spec[i + 1] == "-":
            kept.update(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            kept.add(spec[i])
            i += 1
    return kept


def test_the_record_step_filters_exactly_what_callrouter_may_send() -> None:
    """[callrouter-record] keeps the characters callrouter's checks allow, no more:
    a path or location Python accepts passes the FILTER unchanged, and the
    application syntax (``,``, ``(``, ``)``, ``|``, ``&``, ``$``) never does."""
    conf = (ROOT / "examples" / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    assert f"[{RECORD_CONTEXT}]" in conf
    filters = re.findall(r"\$\{FILTER\(([^,]+),\$\{(CALLROUTER_[A-Z]+)\}\)\}", conf)
    found = {variable: filter_chars(spec) for spec, variable in filters}
    assert found[RECORD_VARIABLE] == RECORD_PATH_CHARS | {PART_SEPARATOR}
    assert found[NEXT_VARIABLE] == NEXT_CHARS | {PART_SEPARATOR}
    for kept in found[RECORD_VARIABLE], found[NEXT_VARIABLE]:
        assert not kept & set(",()|&$;{}[]\"' \\\n")
    # The default path records a call a rule asked to record but sent nowhere.
    assert f"GotoIf($[${{LEN(${{{RECORD_VARIABLE}}})}} > 0]?{RECORD_CONTEXT},s,1)" in conf


def test_the_next_location_is_refused_when_the_step_would_change_it() -> None:
    assert next_location("callrouter-dial", "101", "1") == "callrouter-dial^101^1"
    assert next_location("ivr.main", "*7#", "2") == "ivr.main^*7#^2"
    for context, exten in (("a^b", "1"), ("ctx", "101,5"), ("ctx", ""), ("ctx", "1&2")):
        with pytest.raises(ValueError, match="cannot pass through callrouter-record"):
            next_location(context, exten, "1")


def test_request_from_the_user_event() -> None:
    dialplan = Dialplan()
    raw = request_event(Wait="6", Timestamp="1700000000.250")
    assert dialplan.is_request(raw)
    assert not dialplan.is_request(event(UserEvent="Other"))
    request = dialplan.request(raw)
    assert request is not None
    assert (request.channel, request.uniqueid, request.linkedid, request.key) == (
        "PJSIP/trunk-1",
        "1.5",
        "1.4",
        "1.5",
    )
    assert (request.did, request.caller, request.caller_name) == ("74950000001", "79161234567", "")
    assert (request.wait, request.timestamp) == (6.0, 1700000000.25)
    assert request.event is raw
    assert dialplan.request(event(UserEvent=REQUEST_EVENT)) is None  # no channel


def test_wait_and_timestamp_default_when_absent_or_not_plain_numbers() -> None:
    request = Dialplan(default_wait=5.0).request(request_event(Wait="nan", Timestamp="٣"))
    assert request is not None
    assert (request.wait, request.timestamp) == (5.0, None)


@pytest.mark.parametrize("wait", ["four", "4s", "", "-1", "0x4", "1e3", "4.", ".5", "+4"])
def test_a_wait_that_is_no_plain_number_is_the_default(wait: str) -> None:
    """`Wait: four` (hleft33's trial: CALLROUTER_WAIT = four in [globals]) is
    not read as a number; `Wait: 0` is one, and leaves no time to act."""
    dialplan = Dialplan(default_wait=4.0, safety_margin=0.3)
    request = dialplan.request(request_event(Wait=wait))
    assert request is not None
    assert request.wait == 4.0
    assert dialplan.deadline(request, received=50.0, now=1e9) == 50.0 + 4 - 0.3
    zero = dialplan.request(request_event(Wait="0"))
    assert zero is not None
    assert zero.wait == 0.0


def test_the_deadline_takes_the_events_age_and_the_margin_off_the_wait() -> None:
    dialplan = Dialplan(safety_margin=0.3)
    request = dialplan.request(request_event(Wait="4", Timestamp="1000.0"))
    assert request is not None
    # received at 50.0 (monotonic), 0.5 s after Asterisk stamped it (wall clock)
    assert dialplan.deadline(request, received=50.0, now=1000.5) == 50.0 - 0.5 + 4 - 0.3
    # an event older than the whole wait leaves nothing; a clock behind the stamp, all of it
    assert dialplan.deadline(request, received=50.0, now=2000.0) == 50.0 - 0.3
    assert dialplan.deadline(request, received=50.0, now=900.0) == 50.0 + 4 - 0.3
    unstamped = dialplan.request(request_event(Wait="4"))
    assert unstamped is not None
    assert dialplan.deadline(unstamped, received=50.0, now=1e9) == 50.0 + 4 - 0.3


def test_a_listed_channel_is_rebuilt_into_the_request_the_dialplan_sent() -> None:
    dialplan = Dialplan()
    item = Event(
        (
            ("Event", "CoreShowChannel"),
            ("Channel", "PJSIP/trunk-2"),
            ("Uniqueid", "2.1"),
            ("Linkedid", "2.0"),
            ("Context", INBOUND_CONTEXT),
            ("Exten", "74950000002"),
            ("Application", "Wait"),
            ("CallerIDNum", "79160000000"),
            ("CallerIDName", "Пётр"),
        )
    )
    assert dialplan.is_waiting(item)
    assert not dialplan.is_waiting(Event((("Context", INBOUND_CONTEXT), ("Application", "Dial"))))
    for parked in ("MusicOnHold", "WaitExten"):  # the other waits after a request
        assert dialplan.is_waiting(Event((("Context", INBOUND_CONTEXT), ("Application", parked))))
    # EPOCH counts whole seconds: one is taken off, and too little left is none
    assert dialplan.listed_wait("1010", now=1000.0) == 9.0
    assert dialplan.listed_wait("1001", now=1000.0) is None
    assert dialplan.listed_wait(None, now=1000.0) is None
    rebuilt = dialplan.listed_request(item, did_variable="74950000009", wait=9.0)
    request = dialplan.request(rebuilt)
    assert dialplan.is_request(rebuilt)
    assert request is not None
    assert (request.channel, request.uniqueid, request.linkedid) == ("PJSIP/trunk-2", "2.1", "2.0")
    assert (request.did, request.caller, request.caller_name, request.wait) == (
        "74950000002",
        "79160000000",
        "Пётр",
        9.0,
    )
    assert rebuilt.get("DID") == "74950000009"
    without = dialplan.listed_request(item, did_variable=None, wait=2.0)
    assert without.get("DID") == "74950000002"


def test_a_captured_userevent_action_is_not_a_request() -> None:
    """Asterisk 22.10's own output for ``Action: UserEvent`` with
    ``UserEvent: CallRouterRequest`` and ``Channel: PJSIP/101-1`` (captured on
    the sandbox, 2026-12-05): the key comes first, the sender's headers after."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
    messages = parse_rawman((fixtures / "userevent_action.rawman").read_bytes())
    [forged] = [m for m in messages if isinstance(m, Event) and m.name == "UserEvent"]
    assert Dialplan().is_request(forged)
    assert Dialplan().request(forged) is None


def test_a_request_an_ami_client_sent_is_no_request() -> None:
    """The AMI action ``UserEvent`` writes its ``UserEvent`` key first, then any
    headers its sender chose; a dialplan's ``UserEvent()`` comes after the
    channel's snapshot (both captured on the sandbox's Asterisk 22.10). A token
    with ``ami:UserEvent`` that sent a request naming a live channel made
    callrouter redirect, and hang up, that call: such a request routes nothing."""
    snapshot = {
        "Channel": "PJSIP/101-00000007",
        "Uniqueid": "1.9",
        "Linkedid": "1.9",
        "CallerIDNum": "79990000000",
        "Context": INBOUND_CONTEXT,
        "Exten": "74950000001",
    }
    forged = Event(
        (
            ("Event", "UserEvent"),
            ("Privilege", "user,all"),
            ("UserEvent", REQUEST_EVENT),
            ("ActionID", "cr-1"),
            *snapshot.items(),
        )
    )
    assert Dialplan().request(forged) is None
    real = Event(
        (
            ("Event", "UserEvent"),
            ("Privilege", "user,all"),
            *snapshot.items(),
            ("UserEvent", REQUEST_EVENT),
        )
    )
    assert Dialplan().request(real) is not None
    # mxml lower-cases the keys; the order still tells.
    lowered = Event(tuple((k.lower(), v) for k, v in forged.fields))
    assert Dialplan().request(lowered) is None
