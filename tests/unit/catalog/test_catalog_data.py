"""The committed catalog holds what Asterisk 22.10.1 documents, and the lookups work."""

from __future__ import annotations

import pytest

from router.ami.catalog import READ_ONLY, load_catalog
from router.errors import AMIValidationError

CHANNEL_BLOCK = [
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
]


def test_counts_match_asterisk_22_10_1() -> None:
    catalog = load_catalog()
    assert catalog.asterisk_version == "22.10.1"
    assert len(catalog.actions) == 154
    # 185 <managerEvent> elements; VarSet and VoicemailPasswordChange are each documented
    # by three modules, so they merge into 181 event names.
    assert catalog.event_definition_count == 185
    assert len(catalog.events) == 181
    assert len(catalog.event("VarSet").definitions) == 3


def test_every_action_has_its_write_classes_from_the_source() -> None:
    catalog = load_catalog()
    assert {a.write_classes_source for a in catalog} == {"asterisk-source"}
    assert catalog.action("Originate").write_classes == ("originate",)
    assert catalog.action("Hangup").write_classes == ("call", "system")
    assert catalog.action("QueueStatus").write_classes == ()


def test_includes_are_resolved() -> None:
    catalog = load_catalog()
    # ActionID reaches most actions through an xi:include of Login's parameter (a few
    # do not document it; validation allows it everywhere anyway).
    originate = catalog.action("Originate").params[0]
    assert (originate.name, originate.description) == (
        "ActionID",
        "ActionID for this transaction. Will be returned.",
    )
    assert sum(1 for a in catalog if a.param("ActionID")) == 140
    pjsip_hangup = catalog.action("PJSIPHangup")
    assert [p.name for p in pjsip_hangup.params] == ["ActionID", "Channel", "Cause"]


def test_list_actions_and_closing_events() -> None:
    catalog = load_catalog()
    core = catalog.action("CoreShowChannels").listing
    assert core is not None
    assert (core.complete, core.items, core.source) == (
        "CoreShowChannelsComplete",
        ("CoreShowChannel",),
        "xml",
    )
    queue = catalog.action("QueueStatus").listing
    assert queue is not None
    assert queue.complete == "QueueStatusComplete"
    assert queue.items == ("QueueParams", "QueueMember", "QueueEntry")
    assert queue.source == "asterisk-source"
    hangup = catalog.action("Hangup")
    assert hangup.listing is not None
    assert hangup.listing.conditional
    listed = {a.name for a in catalog.list_actions()}
    assert "Hangup" not in listed
    assert {"CoreShowChannels", "QueueStatus", "DBGet", "BridgeList", "Status"} <= listed
    assert "Originate" not in listed


def test_channel_and_bridge_snapshots_expand_with_prefix() -> None:
    catalog = load_catalog()
    fields = [f.name for f in catalog.event("DialBegin").fields]
    assert fields == CHANNEL_BLOCK + ["Dest" + f for f in CHANNEL_BLOCK] + ["DialString"]
    enter = [f.name for f in catalog.event("BridgeEnter").fields]
    assert enter[:8] == [
        "BridgeUniqueid",
        "BridgeType",
        "BridgeTechnology",
        "BridgeCreator",
        "BridgeName",
        "BridgeNumChannels",
        "BridgeVideoSourceMode",
        "BridgeVideoSource",
    ]
    assert enter[8:22] == CHANNEL_BLOCK
    assert catalog.event("Hangup").classes == ("call",)


def test_action_lookup_is_case_insensitive_with_did_you_mean() -> None:
    catalog = load_catalog()
    assert catalog.action("originate").name == "Originate"
    assert "coreshowchannels" in catalog
    with pytest.raises(AMIValidationError, match=r"did you mean 'Originate'\?"):
        catalog.action("Orignate")
    with pytest.raises(AMIValidationError, match="validate=False"):
        catalog.action("NoSuchActionAtAll")


def test_read_only_selection_for_integration_tests() -> None:
    catalog = load_catalog()
    assert set(catalog.actions) >= READ_ONLY
    no_args = {a.name for a in catalog.read_only_actions(no_arguments=True)}
    assert {"Ping", "CoreSettings", "CoreShowChannels", "QueueStatus", "BridgeList"} <= no_args
    # Documented as optional, refused by Asterisk without it (catalog_gen.REQUIRED).
    assert "CoreShowChannelMap" not in no_args
    assert not no_args & {"Logoff", "WaitEvent", "LoggerRotate", "Reload", "Originate"}
    assert {"Getvar", "DBGet"} <= {a.name for a in catalog.read_only_actions()}


def test_search_matches_name_or_synopsis() -> None:
    catalog = load_catalog()
    assert [a.name for a in catalog.search("originate")] == ["Originate"]
    assert "QueueStatus" in {a.name for a in catalog.search("QUEUE STATUS")}
