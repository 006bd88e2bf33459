"""What a template may put into a channel, a variable's name and an
Originate's variables (issue 16).

``channel: "PJSIP/{owner.x}"`` only refused ``& , |``, spaces and control
characters, so a 1C card's ``trunk/sip:+8810123@provider`` dialled out
through a trunk; ``ami: {action: Setvar, variable: "{owner.var}"}`` let 1C
name ``DB(x/y)``; an Originate's ``Variable`` took 1C's ``,`` as a second
variable.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.plugin_registry import plugin_registry
from router.rules import Context, RuleSet, load_rules
from router.rules.context import Caller, CallInfo

REGISTRY = plugin_registry()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def ruleset_of(tmp_path: Path, action: str, trigger: str = "call") -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n"
        f"  - name: first\n    on: {trigger}\n    lookup:\n"
        "      owner: onec.responsible('79161234567')\n"
        f"    do:\n      - {action}\n"
        f"  - name: fallback\n    on: {trigger}\n"
        "    do:\n      - ami: {action: UserEvent, userevent: Fallback}\n",
        encoding="utf-8",
    )
    ruleset = load_rules([path], REGISTRY)
    assert ruleset.errors == (), ruleset.errors
    return ruleset


def decide(
    ruleset: RuleSet, answer: dict[str, Any], context: Context | None = None
) -> tuple[tuple[str, ...], list[str], list[dict[str, str]]]:
    async def responsible(*_args: object) -> dict[str, Any]:
        return answer

    if context is None:
        call = CallInfo(channel="PJSIP/trunk-00000001")
        context = Context.for_call(Caller("79161234567"), "74951234567", call=call, now=NOW)
    outcome = asyncio.run(
        ruleset.evaluate(context, lookups={"onec.responsible": responsible}, explain=True)
    )
    details = [r.detail for r in outcome.trace.rules if r.detail]
    return outcome.decision.rules, details, [dict(a.params) for a in outcome.decision.actions]


ORIGINATE = 'originate: {channel: "PJSIP/{owner.x}", application: Playback, data: hello}'
AMI_ORIGINATE = (
    'ami: {action: Originate, Channel: "PJSIP/{owner.x}", application: Playback, data: hello}'
)
AMI_REDIRECT = (
    'ami: {action: Redirect, channel: "{call.channel}", ExtraChannel: "Local/{owner.x}@inbound",'
    " context: queues, exten: a, priority: 1}"
)


AMI_BRIDGE = 'ami: {action: Bridge, channel1: "{call.channel}", channel2: "PJSIP/{owner.x}"}'
AMI_BRIDGE_FIRST = 'ami: {action: Bridge, Channel1: "PJSIP/{owner.x}", Channel2: "{call.channel}"}'
AMI_WITHDRAW = 'ami: {action: QueueWithdrawCaller, queue: support, caller: "PJSIP/{owner.x}"}'
AMI_CHANGE_PRIORITY = (
    'ami: {action: QueueChangePriorityCaller, queue: support, Caller: "PJSIP/{owner.x}",'
    " priority: 5}"
)

#: A queue member's interface is a channel (tech/name): 1C's
#: ``101&Local/666@x`` made a member that rings a second channel.
AMI_QUEUE_MEMBER = [
    'ami: {action: QueueAdd, queue: support, interface: "PJSIP/{owner.x}"}',
    'ami: {action: QueueAdd, queue: support, interface: "PJSIP/101",'
    ' StateInterface: "PJSIP/{owner.x}"}',
    'ami: {action: QueueRemove, queue: support, Interface: "PJSIP/{owner.x}"}',
    'ami: {action: QueuePause, queue: support, Interface: "PJSIP/{owner.x}", paused: "true"}',
    'ami: {action: QueuePenalty, Interface: "PJSIP/{owner.x}", penalty: "1"}',
    'ami: {action: QueueMemberRingInUse, Interface: "PJSIP/{owner.x}", RingInUse: "no"}',
    'ami: {action: QueueLog, queue: support, event: PAUSE, Interface: "PJSIP/{owner.x}"}',
    'ami: {action: AOCMessage, ChannelPrefix: "PJSIP/{owner.x}", MsgType: D, ChargeType: Free}',
]


@pytest.mark.parametrize(
    "action",
    [
        ORIGINATE,
        AMI_ORIGINATE,
        AMI_REDIRECT,
        AMI_BRIDGE,
        AMI_BRIDGE_FIRST,
        AMI_WITHDRAW,
        AMI_CHANGE_PRIORITY,
        *AMI_QUEUE_MEMBER,
    ],
)
@pytest.mark.parametrize(
    "value",
    [
        "trunk/sip:+8810123@provider",  # out through a trunk
        "101&Local/666@somecontext",
        "101/n",
        "101:5060",
        "101@other",
    ],
)
def test_a_template_fills_in_one_extension_of_a_channel(
    tmp_path: Path, action: str, value: str
) -> None:
    rules, details, _ = decide(ruleset_of(tmp_path, action), {"x": value})
    assert rules == ("fallback",)
    assert "which is not one extension's text" in details[0], details


@pytest.mark.parametrize(
    "action",
    [ORIGINATE, AMI_ORIGINATE, AMI_BRIDGE, AMI_WITHDRAW, AMI_CHANGE_PRIORITY, *AMI_QUEUE_MEMBER],
)
def test_an_extension_s_text_fills_in_a_channel(tmp_path: Path, action: str) -> None:
    rules, _, params = decide(ruleset_of(tmp_path, action), {"x": "desk.101_a-B*#+"})
    assert rules == ("first",)
    assert "PJSIP/desk.101_a-B*#+" in params[0].values()


def test_a_whole_channel_from_1c_is_refused(tmp_path: Path) -> None:
    ruleset = ruleset_of(
        tmp_path, 'originate: {channel: "{owner.x}", application: Playback, data: hello}'
    )
    rules, details, _ = decide(ruleset, {"x": "PJSIP/trunk/sip:+8810123@provider"})
    assert rules == ("fallback",)
    assert "which is not one extension's text" in details[0]


def test_the_channel_asterisk_named_passes_whole(tmp_path: Path) -> None:
    call_rule = ruleset_of(tmp_path, 'ami: {action: Hangup, Channel: "{ call.channel }"}')
    rules, _, params = decide(call_rule, {})
    assert rules == ("first",)
    assert params[0]["Channel"] == "PJSIP/trunk-00000001"

    event_rule = ruleset_of(
        tmp_path, 'ami: {action: Hangup, channel: "{event.channel}"}', trigger="event Hangup"
    )
    context = Context.for_event("Hangup", {"Channel": "PJSIP/101-0000002a"}, now=NOW)
    rules, _, params = decide(event_rule, {}, context)
    assert rules == ("first",)
    assert params[0]["channel"] == "PJSIP/101-0000002a"


@pytest.mark.parametrize(
    "action",
    [
        'ami: {action: Hangup, Channel: "{call.channel}"}',
        'ami: {action: Bridge, channel1: "{call.channel}", channel2: "PJSIP/101"}',
        'ami: {action: QueueWithdrawCaller, queue: support, Caller: "{call.channel}"}',
        'ami: {action: QueueAdd, queue: support, Interface: "{call.channel}"}',
        'ami: {action: Redirect, channel: "PJSIP/101-00000001", extrachannel: "{call.channel}",'
        " context: queues, exten: a, priority: 1}",
    ],
)
def test_a_whole_channel_from_asterisk_is_one_channel(tmp_path: Path, action: str) -> None:
    call = CallInfo(channel="PJSIP/trunk-00000001&Local/666@somecontext")
    context = Context.for_call(Caller("79161234567"), "74951234567", call=call, now=NOW)
    rules, details, _ = decide(ruleset_of(tmp_path, action), {}, context)
    assert rules == ("fallback",)
    assert "is not a single channel name" in details[0], details


def test_the_headers_naming_a_channel_are_the_catalog_s() -> None:
    """Each header a routing ``ami`` action names a channel in is held to
    one extension's text: those ending in "channel" and Bridge's
    ``Channel1``/``Channel2``, QueueWithdrawCaller's ``Caller``."""
    import json

    from router.builtin.actions import ROUTING_AMI_ACTIONS, is_channel_header

    catalog = json.loads(
        (Path(__file__).parents[3] / "router" / "ami" / "catalog.json").read_text("utf-8")
    )
    headers = {
        (name.lower(), param["name"])
        for name, action in catalog["actions"].items()
        if name.lower() in ROUTING_AMI_ACTIONS
        for param in action["params"]
    }
    named = {(action, header) for action, header in headers if is_channel_header(action, header)}
    # A header a new catalog adds to these actions is sorted here by hand.
    assert headers - named == {
        *((action, "ActionID") for action, _ in headers if action != "blindtransfer"),
        ("redirect", "Exten"),
        ("redirect", "ExtraExten"),
        ("redirect", "Context"),
        ("redirect", "ExtraContext"),
        ("redirect", "Priority"),
        ("redirect", "ExtraPriority"),
        ("hangup", "Cause"),
        ("blindtransfer", "Context"),
        ("blindtransfer", "Exten"),
        ("atxfer", "Exten"),
        ("atxfer", "Context"),
        ("pjsiphangup", "Cause"),
        ("park", "Timeout"),
        ("park", "Parkinglot"),
        ("park", "ParkingSpace"),
        ("bridge", "Tone"),
        ("bridgekick", "BridgeUniqueid"),
        ("bridgedestroy", "BridgeUniqueid"),
        ("confbridgekick", "Conference"),
        ("queuewithdrawcaller", "Queue"),
        ("queuewithdrawcaller", "WithdrawInfo"),
    }
    assert named == {
        ("redirect", "Channel"),
        ("redirect", "ExtraChannel"),
        ("hangup", "Channel"),
        ("blindtransfer", "Channel"),
        ("atxfer", "Channel"),
        ("pjsiphangup", "Channel"),
        ("park", "Channel"),
        ("park", "TimeoutChannel"),
        ("park", "AnnounceChannel"),
        ("bridge", "Channel1"),
        ("bridge", "Channel2"),
        ("bridgekick", "Channel"),
        ("confbridgekick", "Channel"),
        ("queuewithdrawcaller", "Caller"),
        ("dahdihangup", "DAHDIChannel"),
    }


def test_every_header_naming_a_queue_member_or_a_channel_prefix_is_a_channel() -> None:
    """Beyond the routing actions: a queue member's ``Interface`` and
    ``StateInterface`` (tech/name) and ``AOCMessage``'s ``ChannelPrefix``, in
    every action of the catalog that has one, are held as ``Channel`` is."""
    import json

    from router.builtin.actions import is_channel_header

    catalog = json.loads(
        (Path(__file__).parents[3] / "router" / "ami" / "catalog.json").read_text("utf-8")
    )
    shaped = {
        (name, param["name"])
        for name, action in catalog["actions"].items()
        for param in action["params"]
        if param["name"].lower() in ("interface", "stateinterface", "channelprefix")
    }
    assert {
        ("QueueAdd", "Interface"),
        ("QueueAdd", "StateInterface"),
        ("QueueRemove", "Interface"),
        ("QueuePause", "Interface"),
        ("QueuePenalty", "Interface"),
        ("AOCMessage", "ChannelPrefix"),
    } <= shaped
    assert [pair for pair in sorted(shaped) if not is_channel_header(*pair)] == []


@pytest.mark.parametrize(
    "channel",
    [
        "/^PJSIP/(101|102)-.*$/",
        # {{ }}: a regex's braces, written in the file; no template in it.
        "/^PJSIP/(101|102)-[0-9a-f]{{8}}$/",
    ],
)
def test_a_written_hangup_regex_goes_as_written(tmp_path: Path, channel: str) -> None:
    """Asterisk's Hangup takes ``Channel: /regex/`` (every channel it matches).
    The administrator wrote it: its '|' is theirs, not 1C's second channel;
    one with a regex's {{8}} was refused as a channel a template filled in."""
    ruleset = ruleset_of(tmp_path, f'ami: {{action: Hangup, channel: "{channel}"}}')
    rules, details, params = decide(ruleset, {})
    assert rules == ("first",), details
    assert params[0]["channel"] == channel.replace("{{", "{").replace("}}", "}")


@pytest.mark.parametrize(
    "action",
    [
        'redirect: {context: "a;b{{x}}", exten: "101"}',
        'redirect: {context: "sales", exten: "101&{{x}}"}',
        'ami: {action: Redirect, channel: "{call.channel}", context: "a,b{{x}}", exten: "1", '
        'priority: "1"}',
    ],
)
def test_a_written_location_with_literal_braces_is_checked(tmp_path: Path, action: str) -> None:
    """A location written with ``{{ }}`` (braces, no template) is the file's text: it is
    checked at load as any written one. The load skipped every value with a ``{`` and the
    render checks only what a template filled in, so ``a;b{x}`` went to Asterisk unchecked."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"version: 1\nrules:\n  - name: first\n    on: call\n    do:\n      - {action}\n",
        encoding="utf-8",
    )
    (error,) = load_rules([path], REGISTRY).errors
    assert "is not a safe dialplan location" in str(error)


@pytest.mark.parametrize(
    "channel",
    [
        "/^PJSIP/{owner.x}-.*$/",  # 1C's '.*' would match every channel
        "/^PJSIP/(101|{owner.x})-.*$/",
        "/^PJSIP/(101|102)-[0-9a-f]{8}$/",  # {8} was a template giving '8'
    ],
)
def test_a_template_fills_no_part_of_a_hangup_regex(tmp_path: Path, channel: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: first\n    on: call\n    do:\n"
        f'      - ami: {{action: Hangup, channel: "{channel}"}}\n',
        encoding="utf-8",
    )
    (error,) = load_rules([path], REGISTRY).errors
    assert "a Hangup's /regex/ channel is written whole in the rule file" in str(error)
    assert "write a regex's braces as {{ and }}" in str(error)


@pytest.mark.parametrize("verb", ["Setvar", "Getvar"])
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("{owner.var}", "DB(crm/owner)"),  # an AstDB write
        ("{owner.var}", "SHELL(id)"),
        ("{owner.var}", "1ABC"),
        ("{owner.var}", "A B"),
        ("CRM_{owner.var}", "X(y)"),
        ("DB(crm/{owner.var})", "x)=1"),
    ],
)
def test_a_template_names_no_function(tmp_path: Path, verb: str, variable: str, value: str) -> None:
    action = f'ami: {{action: {verb}, channel: "{{call.channel}}", Variable: "{variable}"}}'
    if verb == "Setvar":
        action = action[:-1] + ", value: '1'}"
    rules, details, _ = decide(ruleset_of(tmp_path, action), {"var": value})
    assert rules == ("fallback",)
    assert "which is not a plain variable name" in details[0], details


@pytest.mark.parametrize(
    ("variable", "value", "sent"),
    [
        ("{owner.var}", "__CRM_CLIENT", "__CRM_CLIENT"),
        ("CRM_{owner.var}", "12", "CRM_12"),
        ("DB(crm/{owner.var})", "79161234567", "DB(crm/79161234567)"),  # the file's DB()
    ],
)
def test_a_template_fills_in_a_plain_name(
    tmp_path: Path, variable: str, value: str, sent: str
) -> None:
    action = (
        f'ami: {{action: Setvar, channel: "{{call.channel}}", variable: "{variable}", value: x}}'
    )
    rules, _, params = decide(ruleset_of(tmp_path, action), {"var": value})
    assert rules == ("first",)
    assert params[0]["variable"] == sent


def test_the_builtin_setvar_names_are_the_file_s(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: r\n    on: call\n"
        '    do:\n      - setvar: {"{caller.name}": x}\n',
        encoding="utf-8",
    )
    (error,) = load_rules([path], REGISTRY).errors
    assert "'{caller.name}' is not a channel variable name" in str(error)


AMI_VARIABLES = (
    'ami: {{action: Originate, channel: PJSIP/100, application: Playback, Variable: "{}"}}'
)


def test_an_originate_s_variables_take_no_comma_from_a_template(tmp_path: Path) -> None:
    ruleset = ruleset_of(tmp_path, AMI_VARIABLES.format("CRM_CLIENT={owner.name},CRM_X=1"))
    rules, details, _ = decide(ruleset, {"name": "Romashka,DB(x/y)=1"})
    assert rules == ("fallback",)
    assert "a ',' would start another variable" in details[0], details
    rules, _, params = decide(ruleset, {"name": "Romashka = LLC"})
    assert rules == ("first",)
    assert params[0]["Variable"] == "CRM_CLIENT=Romashka = LLC,CRM_X=1"


@pytest.mark.parametrize(
    "variable", ["{owner.var}", "{owner.name}=1", "A=1,{owner.var}=2", "CRM_{owner.id}=x"]
)
def test_an_originate_s_variable_names_are_the_file_s(tmp_path: Path, variable: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: r\n    on: call\n"
        "    lookup:\n      owner: onec.responsible(caller.number)\n"
        f"    do:\n      - {AMI_VARIABLES.format(variable)}\n",
        encoding="utf-8",
    )
    (error,) = load_rules([path], REGISTRY).errors
    assert "has a variable name filled in by a template: write each NAME=" in str(error)


@pytest.mark.parametrize("cause", ["{int(did)}", "{owner.cause}", "1{owner.cause}"])
def test_a_hangup_cause_a_template_fills_in_is_a_q850_code(tmp_path: Path, cause: str) -> None:
    ruleset = ruleset_of(tmp_path, f'hangup: {{cause: "{cause}"}}')
    rules, details, _ = decide(ruleset, {"cause": "999"})
    assert rules == ("fallback",)
    assert "is not a Q.850 cause code (0-127)" in details[0], details
    if cause != "{int(did)}":
        for bad in ("-1", "128", "\u0662\u0661"):
            assert decide(ruleset, {"cause": bad})[0] == ("fallback",), bad


def test_a_hangup_cause_in_range_is_sent(tmp_path: Path) -> None:
    ruleset = ruleset_of(tmp_path, 'hangup: {cause: "{owner.cause}"}')
    for cause in ("0", "21", "127"):
        rules, _, params = decide(ruleset, {"cause": cause})
        assert rules == ("first",)
        assert params[0]["cause"] == cause


AMI_HANGUP = 'ami: {{action: Hangup, channel: "{{call.channel}}", cause: "{}"}}'


@pytest.mark.parametrize("cause", ["{int(did)}", "{owner.cause}"])
def test_an_ami_hangup_cause_a_template_fills_in_is_a_q850_code(tmp_path: Path, cause: str) -> None:
    """As ``hangup``'s: ``{int(did)}`` sent ``Cause: 74951234567`` (issue 16)."""
    ruleset = ruleset_of(tmp_path, AMI_HANGUP.format(cause))
    rules, details, _ = decide(ruleset, {"cause": "999"})
    assert rules == ("fallback",)
    assert details[0] == (
        f"action 'ami': cause {'74951234567' if 'did' in cause else '999'!r} "
        "is not a Q.850 cause code (0-127)"
    ), details
    if cause == "{owner.cause}":
        for bad in ("-1", "128", "abc", "\u0662\u0661"):
            assert decide(ruleset, {"cause": bad})[0] == ("fallback",), bad
        for good in ("0", "21", "127"):
            rules, _, params = decide(ruleset, {"cause": good})
            assert rules == ("first",)
            assert params[0]["cause"] == good


@pytest.mark.parametrize(
    ("cause", "error"),
    [
        ("999", "cause '999' is not a Q.850 cause code (0-127)"),
        ("abc", "cause 'abc' is not a Q.850 cause code (0-127)"),
        (
            "1{owner.cause}",
            "cause '1{owner.cause}': a Hangup's cause is written in the file or filled in "
            'whole by one template, like "{owner.cause}"',
        ),
    ],
)
def test_an_ami_hangup_cause_written_in_the_file_is_checked_at_load(
    tmp_path: Path, cause: str, error: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: first\n    on: call\n    lookup:\n"
        "      owner: onec.responsible('79161234567')\n"
        f"    do:\n      - {AMI_HANGUP.format(cause)}\n",
        encoding="utf-8",
    )
    (problem,) = load_rules([path], REGISTRY).errors
    assert str(problem).endswith(f"rule 'first': action 'ami': {error}"), problem
