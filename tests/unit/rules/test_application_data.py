"""What a template may put into an application Asterisk runs (issue 16).

``originate: {application: Dial, data: "PJSIP/{owner.manager.extension},20"}``
handed 1C's ``101&Local/666@evil`` to ``Dial`` as it came: a second channel
rang, as the ``exten`` checks of ``redirect`` exist to prevent. And a template
in ``application`` let a 1C card choose what runs on the new channel.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.plugin_registry import plugin_registry
from router.rules import Context, RuleSet, load_rules
from router.rules.context import Caller

REGISTRY = plugin_registry()
NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)


def ruleset_of(tmp_path: Path, action: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n"
        "  - name: callback\n    on: call\n    lookup:\n"
        "      owner: onec.responsible(caller.number)\n"
        f"    do:\n      - {action}\n"
        "  - name: fallback\n    on: call\n"
        "    do:\n      - redirect: {context: queues, exten: sales}\n",
        encoding="utf-8",
    )
    return load_rules([path], REGISTRY)


def decide(
    ruleset: RuleSet, answer: dict[str, Any]
) -> tuple[tuple[str, ...], list[str], list[dict[str, str]]]:
    async def responsible(*_args: object) -> dict[str, Any]:
        return answer

    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    outcome = asyncio.run(
        ruleset.evaluate(context, lookups={"onec.responsible": responsible}, explain=True)
    )
    decision = outcome.decision
    details = [r.detail for r in outcome.trace.rules if r.detail]
    return decision.rules, details, [dict(a.params) for a in decision.actions]


ORIGINATE = (
    'originate: {channel: "PJSIP/100", application: Dial, '
    'data: "PJSIP/{owner.manager.extension},20"}'
)
AMI_ORIGINATE = (
    'ami: {action: Originate, channel: "PJSIP/100", application: Dial, '
    'data: "PJSIP/{owner.manager.extension},20"}'
)


@pytest.mark.parametrize("action", [ORIGINATE, AMI_ORIGINATE])
@pytest.mark.parametrize(
    "extension",
    [
        "101&Local/666@somecontext",  # a second channel
        "101,5,U(evil)",  # Dial options
        "trunk/sip:+8810123@provider",  # out through a trunk
        "101 $",
        "101\u0661",
    ],
)
def test_data_a_lookup_filled_in_must_be_one_argument(
    tmp_path: Path, action: str, extension: str
) -> None:
    ruleset = ruleset_of(tmp_path, action)
    assert ruleset.errors == (), ruleset.errors
    rules, details, _ = decide(ruleset, {"manager": {"extension": extension}})
    assert rules == ("fallback",)
    assert "which is not a single argument's text" in details[0]


@pytest.mark.parametrize("action", [ORIGINATE, AMI_ORIGINATE])
def test_data_the_file_wrote_keeps_its_commas_and_slashes(tmp_path: Path, action: str) -> None:
    ruleset = ruleset_of(tmp_path, action)
    rules, _, params = decide(ruleset, {"manager": {"extension": "desk.101_a-B*#+"}})
    assert rules == ("callback",)
    assert params[0]["data"] == "PJSIP/desk.101_a-B*#+,20"


def test_only_an_originate_s_data_is_held_to_one_argument(tmp_path: Path) -> None:
    ruleset = ruleset_of(
        tmp_path, 'ami: {action: UserEvent, userevent: Crm, data: "{owner.client.name}"}'
    )
    rules, _, _ = decide(ruleset, {"client": {"name": "Romashka, LLC / north"}})
    assert rules == ("callback",)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            'originate: {channel: "PJSIP/100", application: "{owner.app}", data: x}',
            "action 'originate': 'application' '{owner.app}' is filled in by a template",
        ),
        (
            'ami: {action: Originate, channel: "PJSIP/100", Application: "{owner.app}"}',
            "action 'ami': 'Application' '{owner.app}' is filled in by a template",
        ),
        (
            'ami: {action: "{owner.action}", channel: "PJSIP/100"}',
            "action 'ami': action '{owner.action}' is filled in by a template: "
            "write the AMI action in the rule file",
        ),
    ],
)
def test_a_template_never_names_what_runs(tmp_path: Path, action: str, message: str) -> None:
    ruleset = ruleset_of(tmp_path, action)
    (error,) = ruleset.errors
    assert str(error).startswith(f"{tmp_path / 'rules.yaml'}:8: rule 'callback': {message}")
