"""Which ``ami`` actions move or end the call (``ActionSpec.routes``, issue 16).

Only ``Redirect``, ``Hangup``, ``BlindTransfer`` and ``Atxfer`` were told
to: ``ami: {action: Park, channel: "{call.channel}"}`` in a ``continue: true``
rule loaded, and a later rule's ``redirect`` joined the same decision. The
AMI actions Asterisk 22 documents as moving or ending a channel are now
marked; rules.md and its Russian twin name each one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.ami.catalog import load_catalog
from router.builtin.actions import ROUTING_AMI_ACTIONS
from router.plugin_registry import plugin_registry
from router.rules import load_rules

REGISTRY = plugin_registry()
DOCS = Path(__file__).resolve().parents[3] / "docs"

#: Headers each routing action needs to load (the catalog checks them).
ROUTING = {
    "Redirect": 'channel: "{call.channel}", context: queues, exten: a, priority: 1',
    "Hangup": 'channel: "{call.channel}"',
    "BlindTransfer": 'channel: "{call.channel}", context: queues, exten: a',
    "Atxfer": 'channel: "{call.channel}", context: queues, exten: a',
    "PJSIPHangup": 'channel: "{call.channel}", cause: "486"',
    "Park": 'channel: "{call.channel}"',
    "Bridge": 'channel1: "{call.channel}", channel2: PJSIP/101-00000001',
    "BridgeKick": 'channel: "{call.channel}"',
    "BridgeDestroy": "bridgeuniqueid: abc",
    "ConfbridgeKick": 'conference: "1", channel: all',
    "QueueWithdrawCaller": 'queue: sales, caller: "{call.channel}"',
    "DAHDIHangup": 'dahdichannel: "1"',
}

#: Actions that do not surely move or end a channel: a rule may tag with them.
TAGGING = {
    "Originate": "channel: PJSIP/100, application: Playback, data: hello",
    "AbsoluteTimeout": 'channel: "{call.channel}", timeout: "60"',
    "Setvar": 'channel: "{call.channel}", variable: X, value: "1"',
    "PlayDTMF": 'channel: "{call.channel}", digit: "1"',
}


def load(tmp_path: Path, action: str, headers: str) -> tuple[str, ...]:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: tag\n    on: call\n    continue: true\n"
        f"    do:\n      - ami: {{action: {action}, {headers}}}\n"
        "  - name: route\n    on: call\n    do:\n      - redirect: {context: queues, exten: b}\n",
        encoding="utf-8",
    )
    return tuple(str(error) for error in load_rules([path], REGISTRY).errors)


def test_the_table_is_the_routing_set() -> None:
    assert {name.lower() for name in ROUTING} == ROUTING_AMI_ACTIONS
    catalog = {name.lower() for name in load_catalog().actions}
    assert ROUTING_AMI_ACTIONS.issubset(catalog)


@pytest.mark.parametrize("action", sorted(ROUTING))
def test_a_routing_ami_action_cannot_go_on(tmp_path: Path, action: str) -> None:
    (error,) = load(tmp_path, action, ROUTING[action])
    assert error.endswith(
        "rule 'tag': action 'ami' moves or ends the call, so the rule cannot have "
        "'continue: true' (line 5): a later rule would route the call again; "
        "'continue: true' is for rules that tag the call (setvar) and go on"
    ), error


@pytest.mark.parametrize("action", sorted(TAGGING))
def test_an_ami_action_that_routes_nothing_may_go_on(tmp_path: Path, action: str) -> None:
    assert load(tmp_path, action, TAGGING[action]) == ()


@pytest.mark.parametrize("page", ["rules.md", "ru/rules.md"])
def test_rules_md_names_every_routing_ami_action(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(
        "A decision moves or ends the call once."
        if page == "rules.md"
        else "Решение переводит или завершает звонок один раз."
    )
    paragraph = text[start : text.index("\n\n", start)]
    missing = [name for name in ROUTING if f"`{name}`" not in paragraph]
    assert missing == [], f"docs/{page} does not name {missing}"
