"""The AMI catalog against what the sandbox Asterisk really offers and answers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from router.ami.catalog import load_catalog
from router.ami.client import AJAMClient, ClientSettings
from router.sandbox import Sandbox


@pytest.fixture
async def admin(sandbox: Sandbox) -> AsyncIterator[AJAMClient]:
    settings = ClientSettings(url=sandbox.url, username="admin", secret=sandbox.secret)
    async with AJAMClient(settings) as client:
        yield client


async def test_listcommands_is_a_subset_of_the_catalog(admin: AJAMClient) -> None:
    result = await admin.action("ListCommands")
    offered = {key for key, _ in result.response.fields if key not in ("Response", "ActionID")}
    assert len(offered) > 80  # the modules the sandbox loads
    catalog = load_catalog()
    missing = {name for name in offered if name not in catalog}
    assert not missing, f"Asterisk offers actions the catalog lacks: {sorted(missing)}"


async def test_write_classes_match_listcommands(admin: AJAMClient) -> None:
    """ListCommands prints '(Priv: call,all)'; the catalog must agree for every action."""
    result = await admin.action("ListCommands")
    catalog = load_catalog()
    disagreements = []
    for name, text in result.response.fields:
        match = re.search(r"\(Priv: ([^)]*)\)\s*$", text)
        if not match or name not in catalog:
            continue
        live = {c for c in match.group(1).split(",") if c not in ("all", "<none>")}
        if set(catalog.action(name).write_classes) != live:
            disagreements.append((name, sorted(live), catalog.action(name).write_classes))
    assert not disagreements


async def test_every_read_only_no_argument_action_answers(admin: AJAMClient) -> None:
    offered = {k for k, _ in (await admin.action("ListCommands")).response.fields}
    ran = []
    for spec in load_catalog().read_only_actions(no_arguments=True):
        if spec.name not in offered:
            continue  # module not loaded in the sandbox
        result = await admin.send(spec.name, {}, check=False)
        assert result.response.status in ("Success", "Error", "Follows"), spec.name
        if result.is_list:
            assert result.complete, spec.name
        ran.append(spec.name)
    assert len(ran) >= 15, ran  # 19 with the sandbox modules of Asterisk 22.10.1


async def test_every_loaded_list_action_completes(admin: AJAMClient) -> None:
    offered = {k for k, _ in (await admin.action("ListCommands")).response.fields}
    catalog = load_catalog()
    ran = []
    for spec in catalog.list_actions():
        if spec.name not in offered or spec.needs_arguments:
            continue
        result = await admin.send(spec.name, {}, check=False)
        if not result.response.ok:
            continue  # e.g. nothing of that kind configured: an error, not a list
        assert result.is_list, spec.name
        assert result.complete, spec.name
        assert result.closing is not None
        assert result.closing.name == spec.listing.complete, spec.name  # type: ignore[union-attr]
        assert int(result.closing.get("ListItems") or len(result.items)) == len(result.items)
        ran.append(spec.name)
    assert len(ran) >= 8, ran
