"""The generator: expansion rules on a small document, and the committed outputs are fresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from router.ami import catalog_gen
from router.ami.catalog import Catalog, load_catalog

REPO = Path(__file__).resolve().parents[3]

SMALL_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<docs xmlns:xi="http://www.w3.org/2001/XInclude">
  <manager name="Login" language="en_US" module="builtin">
    <synopsis>Login Manager.</synopsis>
    <syntax>
      <parameter name="ActionID"><para>ActionID for this transaction.</para></parameter>
      <parameter name="Username" required="true"><para>Username to login with.</para></parameter>
    </syntax>
  </manager>
  <manager name="Things" language="en_US" module="res_things">
    <since><version>22.0.0</version></since>
    <synopsis>
        List   things.
    </synopsis>
    <syntax>
      <xi:include
        xpointer="xpointer(/docs/manager[@name='Login']/syntax/parameter[@name='ActionID'])"/>
      <parameter name="Mode" required="true">
        <para>How to list.</para>
        <enumlist><enum name="all"/><enum name="some"/></enumlist>
      </parameter>
    </syntax>
    <responses>
      <list-elements>
        <xi:include xpointer="xpointer(/docs/managerEvent[@name='Thing'])"/>
      </list-elements>
      <managerEvent name="ThingsComplete" language="en_US" module="res_things">
        <managerEventInstance class="EVENT_FLAG_COMMAND">
          <synopsis>End of the list.</synopsis>
          <syntax><parameter name="ListItems"/></syntax>
        </managerEventInstance>
      </managerEvent>
    </responses>
  </manager>
  <managerEvent name="Thing" language="en_US" module="res_things">
    <managerEventInstance class="EVENT_FLAG_CALL">
      <synopsis>A thing.</synopsis>
      <syntax>
        <channel_snapshot prefix="Peer"/>
        <bridge_snapshot/>
        <parameter name="Size"><para>How big.</para></parameter>
      </syntax>
    </managerEventInstance>
  </managerEvent>
</docs>
"""


def small_catalog(tmp_path: Path) -> dict[str, object]:
    xml = tmp_path / "core-en_US.xml"
    xml.write_bytes(SMALL_XML)
    return catalog_gen.build_catalog(xml, asterisk_version="99.0.0")


def test_expansion_rules(tmp_path: Path) -> None:
    catalog = Catalog(small_catalog(tmp_path))
    things = catalog.action("Things")
    assert things.synopsis == "List things."
    assert [p.name for p in things.params] == ["ActionID", "Mode"]
    assert things.listing is not None
    assert (things.listing.items, things.listing.complete) == (("Thing",), "ThingsComplete")
    fields = [f.name for f in catalog.event("Thing").fields]
    assert fields[:3] == ["PeerChannel", "PeerChannelState", "PeerChannelStateDesc"]
    assert fields[13] == "PeerLinkedid"
    assert fields[14:22] == [
        "BridgeUniqueid",
        "BridgeType",
        "BridgeTechnology",
        "BridgeCreator",
        "BridgeName",
        "BridgeNumChannels",
        "BridgeVideoSourceMode",
        "BridgeVideoSource",
    ]
    assert fields[-1] == "Size"
    assert catalog.event("thing").classes == ("call",)
    assert catalog.event("ThingsComplete").classes == ("command",)
    assert catalog.event_definition_count == 2


def test_unresolvable_structural_include_is_an_error(tmp_path: Path) -> None:
    xml = tmp_path / "core-en_US.xml"
    xml.write_bytes(SMALL_XML.replace(b"@name='Thing'])", b"@name='Nothing'])"))
    with pytest.raises(catalog_gen.GenerationError, match="selects nothing"):
        catalog_gen.build_catalog(xml, asterisk_version="99.0.0")


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = catalog_gen.dump_catalog(small_catalog(tmp_path))
    second = catalog_gen.dump_catalog(small_catalog(tmp_path))
    assert first == second
    view = catalog_gen.build_catalog(tmp_path / "core-en_US.xml", asterisk_version="99.0.0")
    assert catalog_gen.render_actions_module(view) == catalog_gen.render_actions_module(
        catalog_gen.build_catalog(tmp_path / "core-en_US.xml", asterisk_version="99.0.0")
    )


def test_snake_case() -> None:
    assert catalog_gen.snake_case("CallerID") == "caller_id"
    assert catalog_gen.snake_case("Async") == "async_"
    assert catalog_gen.snake_case("From") == "from_"
    assert catalog_gen.snake_case("Content-Type") == "content_type"
    assert catalog_gen.snake_case("PJSIPShowEndpoints") == "pjsip_show_endpoints"
    assert catalog_gen.snake_case("DAHDIChannel") == "dahdi_channel"


COMMITTED = (
    REPO / "router" / "ami" / "catalog.json",
    REPO / "router" / "ami" / "actions.py",
    REPO / "docs" / "reference",
)


def test_committed_outputs_render_from_the_committed_catalog() -> None:
    """On every machine, no XML needed: catalog.json is in the generator's own form, and
    actions.py and the reference pages are what it renders from that catalog."""
    catalog_json, actions_module, docs = COMMITTED
    text = catalog_json.read_text("utf-8")
    assert catalog_gen.dump_catalog(json.loads(text)) == text
    files = catalog_gen.rendered(text, actions_module, docs)
    assert set(files) == {actions_module, docs / "ami-actions.md", docs / "ami-events.md"}
    stale = [
        str(p.relative_to(REPO))
        for p, rendered in files.items()
        if p.read_text("utf-8") != rendered
    ]
    assert not stale, f"regenerate with: python -m router.ami.catalog_gen --from-catalog ({stale})"


def test_from_catalog_check_finds_a_hand_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog_json, actions_module, docs = COMMITTED
    shutil.copy(catalog_json, tmp_path / "catalog.json")
    shutil.copy(actions_module, tmp_path / "actions.py")
    shutil.copytree(docs, tmp_path / "docs")
    args = [
        "--from-catalog",
        "--out",
        str(tmp_path / "catalog.json"),
        "--actions-module",
        str(tmp_path / "actions.py"),
        "--docs",
        str(tmp_path / "docs"),
    ]
    assert catalog_gen.main([*args, "--check"]) == 0
    assert "stale: none" in capsys.readouterr().out
    events = tmp_path / "docs" / "ami-events.md"
    events.write_text(events.read_text("utf-8").replace("## AgentCalled", "## AgentCalls"), "utf-8")
    assert catalog_gen.main([*args, "--check"]) == 1
    assert f"stale: {events}" in capsys.readouterr().out
    assert catalog_gen.main(args) == 0  # renders it back
    assert events.read_text("utf-8") == (docs / "ami-events.md").read_text("utf-8")
    assert (tmp_path / "catalog.json").read_bytes() == catalog_json.read_bytes()


needs_xml = pytest.mark.skipif(
    not catalog_gen.DEFAULT_XML.is_file(),
    reason=f"Asterisk documentation XML not found at {catalog_gen.DEFAULT_XML} "
    "(build the sandbox: router.sandbox)",
)


@needs_xml
def test_committed_outputs_equal_a_fresh_generation() -> None:
    fresh = catalog_gen.build_catalog(catalog_gen.DEFAULT_XML)
    assert catalog_gen.dump_catalog(fresh) == catalog_gen.dump_catalog(
        catalog_gen.build_catalog(catalog_gen.DEFAULT_XML)
    )
    files = catalog_gen.outputs(
        fresh,
        REPO / "router" / "ami" / "catalog.json",
        REPO / "router" / "ami" / "actions.py",
        REPO / "docs" / "reference",
    )
    stale = [str(p.relative_to(REPO)) for p, text in files.items() if p.read_text("utf-8") != text]
    assert not stale, f"regenerate with: python -m router.ami.catalog_gen (stale: {stale})"


@needs_xml
def test_check_mode_reports_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert catalog_gen.main(["--check"]) == 0
    assert "stale: none" in capsys.readouterr().out


def test_packaged_catalog_loads_once() -> None:
    assert load_catalog() is load_catalog()
