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


@pytest.mark.parametrize("action", [ORIGINATE, AMI_ORIGINATE, AMI_REDIRECT])
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


@pytest.mark.parametrize("action", [ORIGINATE, AMI_ORIGINATE])
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
