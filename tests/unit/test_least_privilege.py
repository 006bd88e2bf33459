"""Everything shipped stays within the manager user docs/asterisk.md documents.

Issue 11 item 8: shipped rules used ``DBPut``, which needs ``write = system``,
a class the documented user must not have; every such call was refused. Each
AMI action that shipped rules, documented examples or the engine itself send
must have a write class in the documented ``write =`` line (the catalog knows
each action's classes; an action is allowed with any one of them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from router.ami.catalog import load_catalog

REPO = Path(__file__).parents[2]
#: Rule action kinds the executor turns into one AMI action (router/executor.py).
KIND_TO_ACTION = {
    "redirect": "Redirect",
    "setvar": "Setvar",
    "hangup": "Hangup",
    "originate": "Originate",
    # Setvar of CALLROUTER_RECORD; the redirect after it adds a Setvar (docs/recordings.md).
    "record": "Setvar",
}
#: Actions the engine sends on its own: reconcile, keepalive, the live-instance heartbeat.
ENGINE_ACTIONS = (
    "Login",
    "Logoff",
    "WaitEvent",
    "Ping",
    "CoreShowChannels",
    # The recorder, after a gap and at start: what the listed channels' bridges are.
    "BridgeList",
    "Getvar",
    "UserEvent",
    "Redirect",
    "Setvar",
    "Hangup",
)


def documented_write_classes(page: Path) -> frozenset[str]:
    lines = re.findall(r"^write = ([a-z,]+)", page.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(lines) == 1, f"{page}: expected one manager.conf 'write =' line, got {lines}"
    return frozenset(lines[0].split(","))


def rule_files() -> Iterator[Path]:
    for folder in (REPO / "rules", REPO / "examples" / "rules"):
        yield from sorted(p for p in folder.rglob("*.yaml"))


def actions_in_rule_file(path: Path) -> Iterator[str]:
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for rule in document.get("rules") or ():
        for item in rule.get("do") or ():
            for kind, params in item.items():
                if kind == "ami":
                    yield str(params["action"])
                elif kind in KIND_TO_ACTION:
                    yield KIND_TO_ACTION[kind]


def actions_in_doc(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8")
    for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL):
        yield from re.findall(r"\bami: \{action: (\w+)", block)
        for kind in re.findall(r"^\s*- (\w+):", block, re.MULTILINE):
            if kind in KIND_TO_ACTION:
                yield KIND_TO_ACTION[kind]


def test_both_asterisk_pages_document_the_same_user() -> None:
    english = documented_write_classes(REPO / "docs" / "asterisk.md")
    assert english == documented_write_classes(REPO / "docs" / "ru" / "asterisk.md")
    assert not english & {"system", "command", "config", "all"}


@pytest.mark.parametrize(
    "path",
    [*rule_files(), REPO / "docs" / "rules.md", REPO / "docs" / "ru" / "rules.md"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_shipped_rules_use_only_documented_write_classes(path: Path) -> None:
    allowed = documented_write_classes(REPO / "docs" / "asterisk.md")
    catalog = load_catalog()
    found = list(actions_in_doc(path) if path.suffix == ".md" else actions_in_rule_file(path))
    refused = {
        name: catalog.action(name).write_classes
        for name in found
        if catalog.action(name).write_classes
        and not set(catalog.action(name).write_classes) & allowed
    }
    assert refused == {}, f"{path.name}: needs classes the documented user lacks"


def test_the_shipped_rules_are_seen_by_this_test() -> None:
    """The walk above finds actions (a test over nothing would pass on anything)."""
    found = {name for path in rule_files() for name in actions_in_rule_file(path)}
    assert {"Redirect", "Setvar"} <= found


def test_the_engine_needs_only_documented_write_classes() -> None:
    allowed = documented_write_classes(REPO / "docs" / "asterisk.md")
    catalog = load_catalog()
    for name in ENGINE_ACTIONS:
        classes = catalog.action(name).write_classes
        assert not classes or set(classes) & allowed, (name, classes)
