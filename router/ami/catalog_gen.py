"""Build callrouter's AMI catalog from the documentation XML Asterisk ships.

Asterisk documents every manager action and event in ``core-en_US.xml``
(``doc/appdocsxml.dtd``), and that file is the only machine-readable statement
of what a given Asterisk accepts. We turn it into committed data once, so that
the router validates calls and offers typed methods without reading XML at
run time, and so that a diff of ``catalog.json`` shows exactly what changed
between Asterisk releases.

Regenerate (one command; writes the catalog, the typed method layer and the
reference pages)::

    .venv/bin/python -m router.ami.catalog_gen [--xml PATH] [--out router/ami/catalog.json]

``--check`` writes nothing and exits 1 when any committed output is stale, which
is what the unit test and CI use. The Asterisk version is read from the dpkg
database of the root the XML lives in (the sandbox); pass
``--asterisk-version`` when the XML comes from elsewhere.

``--from-catalog`` renders the typed methods and the reference pages from the
committed ``catalog.json`` instead, with no XML: after a hand edit of a
generator template, or to check them (``--from-catalog --check``) on a machine
without the sandbox. The unit tests do that on every machine.

What the XML does not say, and where we take it from instead (every entry in
the catalog names its source):

* write classes: the XML has none. :data:`WRITE_CLASSES` was extracted from the
  ``ast_manager_register_xml*`` calls of the Asterisk 22.10.1 source tree
  (``source: "asterisk-source"``).
* list actions: only 11 actions carry ``<responses>``. For the others the
  closing event was read from ``astman_send_list_complete_start`` calls in the
  same source (:data:`SOURCE_LISTS`).
* repeatable parameters: no ``<manager>`` parameter sets ``multiple``; the
  three whose text says "multiple Variable: headers are allowed" are in
  :data:`REPEATABLE`.
* alternatives (Originate's Exten/Context/Priority versus Application, ...):
  :data:`CONSTRAINTS`, each with the reason.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lxml import etree

__all__ = [
    "DEFAULT_XML",
    "build_catalog",
    "main",
    "render_actions_doc",
    "render_actions_module",
    "render_events_doc",
]

DEFAULT_XML = Path(
    "/var/cache/callrouter/sandbox/rootfs/usr/share/asterisk/documentation/core-en_US.xml"
)
_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = _ROOT / "router" / "ami" / "catalog.json"
DEFAULT_ACTIONS_MODULE = _ROOT / "router" / "ami" / "actions.py"
DEFAULT_DOCS = _ROOT / "docs" / "reference"
SCHEMA_VERSION = 1
XI_INCLUDE = "{http://www.w3.org/2001/XInclude}include"
_MAX_INCLUDE_DEPTH = 8

JSON = dict[str, Any]

# Write classes per action, from `ast_manager_register_xml*(name, EVENT_FLAG_..., handler)`
# in the Asterisk 22.10.1 source. Holding any one class is enough (manager.c checks
# `writeperm & authority`); an empty tuple means every logged-in user may call it.
WRITE_CLASSES: dict[str, tuple[str, ...]] = {
    "AGI": ("agi",),
    "AOCMessage": ("aoc",),
    "AbsoluteTimeout": ("call", "system"),
    "AgentLogoff": ("agent",),
    "Agents": ("agent",),
    "Atxfer": ("call",),
    "BlindTransfer": ("call",),
    "Bridge": ("call",),
    "BridgeDestroy": (),
    "BridgeInfo": (),
    "BridgeKick": (),
    "BridgeList": (),
    "BridgeTechnologyList": (),
    "BridgeTechnologySuspend": (),
    "BridgeTechnologyUnsuspend": (),
    "CancelAtxfer": ("call",),
    "Challenge": (),
    "Command": ("command",),
    "ConfbridgeKick": ("call",),
    "ConfbridgeList": ("reporting",),
    "ConfbridgeListRooms": ("reporting",),
    "ConfbridgeLock": ("call",),
    "ConfbridgeMute": ("call",),
    "ConfbridgeSetSingleVideoSrc": ("call",),
    "ConfbridgeStartRecord": ("system",),
    "ConfbridgeStopRecord": ("system",),
    "ConfbridgeUnlock": ("call",),
    "ConfbridgeUnmute": ("call",),
    "ControlPlayback": ("call",),
    "CoreSettings": ("reporting", "system"),
    "CoreShowChannelMap": ("reporting", "system"),
    "CoreShowChannels": ("reporting", "system"),
    "CoreStatus": ("reporting", "system"),
    "CreateConfig": ("config",),
    "DAHDIDNDoff": (),
    "DAHDIDNDon": (),
    "DAHDIDialOffhook": (),
    "DAHDIHangup": (),
    "DAHDIRestart": (),
    "DAHDIShowChannels": (),
    "DAHDIShowStatus": (),
    "DAHDITransfer": (),
    "DBDel": ("system",),
    "DBDelTree": ("system",),
    "DBGet": ("reporting", "system"),
    "DBGetTree": ("reporting", "system"),
    "DBPut": ("system",),
    "DeviceStateList": ("call", "reporting"),
    "DialplanExtensionAdd": ("system",),
    "DialplanExtensionRemove": ("system",),
    "Events": (),
    "ExtensionState": ("call", "reporting"),
    "ExtensionStateList": ("call", "reporting"),
    "FAXSession": ("call",),
    "FAXSessions": ("call",),
    "FAXStats": ("reporting",),
    "Filter": ("system",),
    "GetConfig": ("config", "system"),
    "GetConfigJSON": ("config", "system"),
    "Getvar": ("call", "reporting"),
    "Hangup": ("call", "system"),
    "IAXnetstats": ("reporting", "system"),
    "IAXpeerlist": ("reporting", "system"),
    "IAXpeers": ("reporting", "system"),
    "IAXregistry": ("reporting", "system"),
    "JabberSend": ("system",),
    "ListCategories": ("config",),
    "ListCommands": (),
    "LocalOptimizeAway": ("call", "system"),
    "LoggerRotate": ("reporting", "system"),
    "Login": (),
    "Logoff": (),
    "MWIDelete": ("call",),
    "MWIGet": ("call", "reporting"),
    "MWIUpdate": ("call",),
    "MailboxCount": ("call", "reporting"),
    "MailboxStatus": ("call", "reporting"),
    "MeetmeList": ("reporting",),
    "MeetmeListRooms": ("reporting",),
    "MeetmeMute": ("call",),
    "MeetmeUnmute": ("call",),
    "MessageSend": ("message",),
    "MixMonitor": ("system",),
    "MixMonitorMute": ("call", "system"),
    "ModuleCheck": ("system",),
    "ModuleLoad": ("system",),
    "MuteAudio": ("system",),
    "Originate": ("originate",),
    "PJSIPHangup": ("call", "system"),
    "PJSIPNotify": ("system",),
    "PJSIPQualify": ("reporting", "system"),
    "PJSIPRegister": ("reporting", "system"),
    "PJSIPSetMaintenance": ("system",),
    "PJSIPShowAors": ("system",),
    "PJSIPShowAuths": ("system",),
    "PJSIPShowContacts": ("system",),
    "PJSIPShowEndpoint": ("system",),
    "PJSIPShowEndpoints": ("system",),
    "PJSIPShowMaintenance": ("reporting", "system"),
    "PJSIPShowRegistrationInboundContactStatuses": ("system",),
    "PJSIPShowRegistrationsInbound": ("system",),
    "PJSIPShowRegistrationsOutbound": ("reporting", "system"),
    "PJSIPShowResourceLists": ("system",),
    "PJSIPShowSubscriptionsInbound": ("system",),
    "PJSIPShowSubscriptionsOutbound": ("system",),
    "PJSIPUnregister": ("reporting", "system"),
    "PRIDebugFileSet": ("system",),
    "PRIDebugFileUnset": (),
    "PRIDebugSet": (),
    "PRIShowSpans": (),
    "Park": ("call",),
    "ParkedCalls": ("call",),
    "Parkinglots": ("call",),
    "Ping": (),
    "PlayDTMF": ("call",),
    "PlayMF": ("call",),
    "PresenceState": ("call", "reporting"),
    "PresenceStateList": ("call", "reporting"),
    "QueueAdd": ("agent",),
    "QueueChangePriorityCaller": (),
    "QueueLog": ("agent",),
    "QueueMemberRingInUse": ("agent",),
    "QueuePause": ("agent",),
    "QueuePenalty": ("agent",),
    "QueueReload": (),
    "QueueRemove": ("agent",),
    "QueueReset": (),
    "QueueRule": (),
    "QueueStatus": (),
    "QueueSummary": (),
    "QueueWithdrawCaller": (),
    "Redirect": ("call",),
    "Reload": ("config", "system"),
    "SendFlash": ("call",),
    "SendText": ("call",),
    "Setvar": ("call",),
    "ShowDialPlan": ("config", "reporting"),
    "SorceryMemoryCacheExpire": ("system",),
    "SorceryMemoryCacheExpireObject": ("system",),
    "SorceryMemoryCachePopulate": ("system",),
    "SorceryMemoryCacheStale": ("system",),
    "SorceryMemoryCacheStaleObject": ("system",),
    "Status": ("call", "reporting", "system"),
    "StopMixMonitor": ("call", "system"),
    "UpdateConfig": ("config",),
    "UserEvent": ("user",),
    "VoicemailBoxSummary": ("call", "reporting"),
    "VoicemailForward": ("user",),
    "VoicemailMove": ("user",),
    "VoicemailRefresh": ("user",),
    "VoicemailRemove": ("user",),
    "VoicemailUserStatus": ("call", "reporting"),
    "VoicemailUsersList": ("call", "reporting"),
    "WaitEvent": (),
}

# List actions that the XML does not mark with <responses>: closing event and item events,
# read from astman_send_listack / astman_send_list_complete_start in the 22.10.1 source.
SOURCE_LISTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Agents": ("AgentsComplete", ("Agents",)),
    "BridgeList": ("BridgeListComplete", ("BridgeListItem",)),
    "BridgeTechnologyList": ("BridgeTechnologyListComplete", ("BridgeTechnologyListItem",)),
    "ConfbridgeList": ("ConfbridgeListComplete", ("ConfbridgeList",)),
    "ConfbridgeListRooms": ("ConfbridgeListRoomsComplete", ("ConfbridgeListRooms",)),
    "CoreShowChannelMap": ("CoreShowChannelMapComplete", ("CoreShowChannelMap",)),
    "DAHDIShowChannels": ("DAHDIShowChannelsComplete", ("DAHDIShowChannels",)),
    "DAHDIShowStatus": ("DAHDIShowStatusComplete", ("DAHDIShowStatus",)),
    "DBGet": ("DBGetComplete", ("DBGetResponse",)),
    "DBGetTree": ("DBGetTreeComplete", ("DBGetTreeResponse",)),
    "FAXSessions": ("FAXSessionsComplete", ("FAXSessionsEntry",)),
    "IAXpeerlist": ("PeerlistComplete", ("PeerEntry",)),
    "IAXpeers": ("PeerlistComplete", ("PeerEntry",)),
    "IAXregistry": ("RegistrationsComplete", ("RegistryEntry",)),
    "MWIGet": ("MWIGetComplete", ("MWIGet",)),
    "MeetmeList": ("MeetmeListComplete", ("MeetmeList",)),
    "MeetmeListRooms": ("MeetmeListRoomsComplete", ("MeetmeListRooms",)),
    "PJSIPShowMaintenance": ("PJSIPMaintenanceStatusComplete", ("PJSIPMaintenanceStatus",)),
    "PJSIPShowRegistrationInboundContactStatuses": (
        "ContactStatusDetailComplete",
        ("ContactStatusDetail",),
    ),
    "PJSIPShowRegistrationsInbound": (
        "InboundRegistrationDetailComplete",
        ("InboundRegistrationDetail",),
    ),
    "PJSIPShowRegistrationsOutbound": (
        "OutboundRegistrationDetailComplete",
        ("OutboundRegistrationDetail",),
    ),
    "PJSIPShowResourceLists": ("ResourceListDetailComplete", ("ResourceListDetail",)),
    "PJSIPShowSubscriptionsInbound": (
        "InboundSubscriptionDetailComplete",
        ("InboundSubscriptionDetail",),
    ),
    "PJSIPShowSubscriptionsOutbound": (
        "OutboundSubscriptionDetailComplete",
        ("OutboundSubscriptionDetail",),
    ),
    "PRIShowSpans": ("PRIShowSpansComplete", ("PRIShowSpans",)),
    "ParkedCalls": ("ParkedCallsComplete", ("ParkedCall",)),
    "Parkinglots": ("ParkinglotsComplete", ("Parkinglot",)),
    "QueueStatus": ("QueueStatusComplete", ("QueueParams", "QueueMember", "QueueEntry")),
    "QueueSummary": ("QueueSummaryComplete", ("QueueSummary",)),
    "ShowDialPlan": ("ShowDialPlanComplete", ("ListDialplan",)),
    "VoicemailBoxSummary": ("VoicemailBoxDetailComplete", ("VoicemailBoxDetail",)),
    "VoicemailUserStatus": ("VoicemailUserDetailComplete", ("VoicemailUserDetail",)),
    "VoicemailUsersList": ("VoicemailUserEntryComplete", ("VoicemailUserEntry",)),
}

# Actions that answer with a list only for some arguments (manager.c action_hangup).
CONDITIONAL_LISTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "Hangup": (
        "ChannelsHungupListComplete",
        ("ChannelHungup",),
        "only when Channel is a /regex/; an exact name gets a plain reply",
    ),
}

# (action, parameter) pairs that may repeat; their text says "multiple Variable: headers
# are allowed" but no <manager> parameter carries the DTD's `multiple` attribute.
REPEATABLE: frozenset[tuple[str, str]] = frozenset(
    {("Originate", "Variable"), ("MessageSend", "Variable"), ("PJSIPNotify", "Variable")}
)

# Documented enum values that are examples or templates rather than a closed set; the
# validator must not reject other values. Enums with non-literal entries such as
# "system,call,log,..." are detected automatically as well.
OPEN_ENUMS: dict[tuple[str, str], str] = {
    ("ModuleLoad", "Module"): "lists the built-in subsystems; any module name is accepted",
    ("Filter", "MatchCriteria"): "the entries are templates such as name(<event_name>)",
    ("UpdateConfig", "Options-000000"): "option words per action, combined with commas",
}

# Parameters the XML marks optional although Asterisk refuses the action without them.
REQUIRED: dict[tuple[str, str], str] = {
    (
        "CoreShowChannelMap",
        "Channel",
    ): "manager.c action_coreshowchannelmap answers 'CoreShowChannelMap requires a channel.'",
}

# Parameters whose documented names are placeholders for "any header".
PLACEHOLDERS: dict[str, tuple[str, ...]] = {"UserEvent": ("Header1", "HeaderN")}

# Alternatives the XML states only in prose. one_of: exactly one group, given in full;
# any_of: at least one group.
CONSTRAINTS: dict[str, tuple[tuple[str, tuple[tuple[str, ...], ...], str], ...]] = {
    "Originate": (
        (
            "one_of",
            (("Exten", "Context", "Priority"), ("Application",)),
            "a call goes to a dialplan location or runs an application (Data goes with "
            "Application); Exten needs Context and Priority (parameter text)",
        ),
    ),
    "AOCMessage": (
        (
            "any_of",
            (("Channel",), ("ChannelPrefix",)),
            "Channel is required unless ChannelPrefix is given (parameter text)",
        ),
    ),
    "PJSIPNotify": (
        (
            "one_of",
            (("Endpoint",), ("URI",), ("channel",)),
            "res_pjsip_notify.c manager_notify refuses none or several targets",
        ),
        (
            "one_of",
            (("Option",), ("Variable",)),
            "res_pjsip_notify.c manager_notify wants either Option or Variable, not both",
        ),
    ),
    "MessageSend": (
        (
            "any_of",
            (("Destination",), ("To",)),
            "To is the older name of Destination; one of them is needed (parameter text)",
        ),
    ),
}

# Method names the snake_case rule gets wrong (runs of capitals followed by lower case).
METHOD_NAMES: dict[str, str] = {
    "DAHDIDNDoff": "dahdi_dnd_off",
    "DAHDIDNDon": "dahdi_dnd_on",
    "IAXnetstats": "iax_netstats",
    "IAXpeerlist": "iax_peerlist",
    "IAXpeers": "iax_peers",
    "IAXregistry": "iax_registry",
    # The client owns the session (login, re-login, the one WaitEvent loop) and has
    # methods named login() and wait_event(); these raw forms stay reachable, renamed.
    "Challenge": "ami_challenge",
    "Login": "ami_login",
    "Logoff": "ami_logoff",
    "WaitEvent": "ami_wait_event",
}

# Names the AJAM client (router/ami/client.py) already uses; a generated method must not.
CLIENT_NAMES = frozenset({"send", "request", "action", "login", "wait_event", "aclose"})

# Keyword arguments every generated method has; a parameter never takes these names.
RESERVED_KWARGS = frozenset({"self", "action_id", "headers", "check"})

_CHANNEL_SNAPSHOT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Channel", "", ()),
    (
        "ChannelState",
        "A numeric code for the channel's current state, related to {p}ChannelStateDesc",
        (),
    ),
    (
        "ChannelStateDesc",
        "",
        (
            "Down",
            "Rsrvd",
            "OffHook",
            "Dialing",
            "Ring",
            "Ringing",
            "Up",
            "Busy",
            "Dialing Offhook",
            "Pre-ring",
            "Unknown",
        ),
    ),
    ("CallerIDNum", "", ()),
    ("CallerIDName", "", ()),
    ("ConnectedLineNum", "", ()),
    ("ConnectedLineName", "", ()),
    ("Language", "", ()),
    ("AccountCode", "", ()),
    ("Context", "", ()),
    ("Exten", "", ()),
    ("Priority", "", ()),
    ("Uniqueid", "", ()),
    ("Linkedid", "Uniqueid of the oldest channel associated with this channel.", ()),
)

_BRIDGE_SNAPSHOT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("BridgeUniqueid", "", ()),
    ("BridgeType", "The type of bridge", ()),
    ("BridgeTechnology", "Technology in use by the bridge", ()),
    ("BridgeCreator", "Entity that created the bridge if applicable", ()),
    ("BridgeName", "Name used to refer to the bridge by its BridgeCreator if applicable", ()),
    ("BridgeNumChannels", "Number of channels in the bridge", ()),
    (
        "BridgeVideoSourceMode",
        "The video source mode for the bridge.",
        ("none", "talker", "single"),
    ),
    (
        "BridgeVideoSource",
        "If there is a video source for the bridge, the unique ID of the "
        "channel that is the video source.",
        (),
    ),
)


class GenerationError(Exception):
    """The XML does not have the shape the DTD promises; regenerating must stop loudly."""


# --------------------------------------------------------------------------- XML expansion


def _resolve_include(include: etree._Element, root: etree._Element) -> list[etree._Element | str]:
    if include.get("href"):
        raise GenerationError(f"xi:include with href is not supported: {include.get('href')}")
    pointer = (include.get("xpointer") or "").strip()
    match = re.fullmatch(r"xpointer\((.*)\)", pointer, re.S)
    if not match:
        raise GenerationError(f"unsupported xpointer {pointer!r}")
    expr = match.group(1)
    if not expr.startswith("/"):
        expr = "/" + expr  # one include in 22.10.1 writes "docs/managerEvent[...]"
    found = root.xpath(expr)
    nodes: list[etree._Element | str] = []
    if isinstance(found, list):
        for node in found:
            if isinstance(node, etree._Element):
                nodes.append(node)
            elif isinstance(node, str):
                nodes.append(str(node))
    parent = include.getparent()
    structural = parent is not None and parent.tag in ("syntax", "list-elements", "responses")
    if not nodes and structural:
        # Prose may point at text that moved; a missing parameter or event must stop us.
        raise GenerationError(f"xpointer {pointer!r} selects nothing")
    return nodes


def _snapshot(kind: str, prefix: str) -> list[etree._Element]:
    block = _CHANNEL_SNAPSHOT if kind == "channel_snapshot" else _BRIDGE_SNAPSHOT
    made = []
    for name, para, enums in block:
        param = etree.Element("parameter", name=prefix + name)
        if enums:
            enumlist = etree.SubElement(param, "enumlist")
            for value in enums:
                etree.SubElement(enumlist, "enum", name=value)
        if para:
            etree.SubElement(param, "para").text = para.format(p=prefix)
        made.append(param)
    return made


def _expand(element: etree._Element, root: etree._Element, depth: int = 0) -> etree._Element:
    """Copy ``element`` with includes and snapshot blocks replaced, as Asterisk's xslt does."""
    if depth > _MAX_INCLUDE_DEPTH:
        raise GenerationError(f"xi:include nested deeper than {_MAX_INCLUDE_DEPTH}")
    copied = copy.deepcopy(element)
    _expand_children(copied, root, depth)
    return copied


def _expand_children(node: etree._Element, root: etree._Element, depth: int) -> None:
    for child in list(node):
        replacement: list[etree._Element]
        if child.tag == XI_INCLUDE:
            replacement = []
            text = ""
            for target in _resolve_include(child, root):
                if isinstance(target, str):
                    text += target
                else:
                    replacement.append(_expand(target, root, depth + 1))
            if text:
                _append_text(node, child, text)
        elif child.tag in ("channel_snapshot", "bridge_snapshot"):
            replacement = _snapshot(str(child.tag), child.get("prefix") or "")
        else:
            if isinstance(child.tag, str):
                _expand_children(child, root, depth)
            continue
        index = node.index(child)
        _append_text(node, child, child.tail or "")
        node.remove(child)
        for offset, new in enumerate(replacement):
            node.insert(index + offset, new)


def _append_text(node: etree._Element, child: etree._Element, text: str) -> None:
    """Put ``text`` where ``child`` stands, so removing ``child`` keeps the prose."""
    previous = child.getprevious()
    if previous is None:
        node.text = (node.text or "") + text
    else:
        previous.tail = (previous.tail or "") + text


# --------------------------------------------------------------------------- text helpers


def _clean(text: str) -> str:
    return " ".join(text.split())


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return _clean("".join(str(t) for t in element.itertext()))


def _short(text: str, limit: int = 240) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " …"


def _first_para(element: etree._Element | None) -> str:
    if element is None:
        return ""
    para = element.find("para")
    return _short(_text(para))


def _since(element: etree._Element) -> list[str]:
    return [_clean(v.text or "") for v in element.findall("since/version") if v.text]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true")


def snake_case(name: str) -> str:
    """Python spelling of an AMI name: ``CallerID`` → ``caller_id``, ``Async`` → ``async_``."""
    import keyword

    text = re.sub(r"[^0-9A-Za-z]+", "_", name)
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    text = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    text = re.sub(r"_+", "_", text).strip("_").lower()
    if keyword.iskeyword(text) or text in RESERVED_KWARGS:
        text += "_"
    return text


def _enum_values(param: etree._Element) -> list[str]:
    values: list[str] = []
    for enum in param.findall("enumlist/enum"):
        value = enum.get("name")
        if value is not None and value not in values:
            values.append(value)
    return values


# --------------------------------------------------------------------------- catalog


def _action_param(action: str, param: etree._Element) -> JSON:
    name = param.get("name") or ""
    enum = _enum_values(param)
    open_reason = OPEN_ENUMS.get((action, name))
    if enum and open_reason is None and any(not re.fullmatch(r"[\w.-]+", v) for v in enum):
        open_reason = "documented values include a pattern, not only literals"
    pattern = None
    if m := re.fullmatch(r"(.+)-000000", name):
        pattern = re.escape(m.group(1)) + r"-\d{6}"
    elif m := re.fullmatch(r"(.+)\(0\)", name):
        pattern = re.escape(m.group(1)) + r"\(\d+\)"
    multiple = _truthy(param.get("multiple"))
    multiple_source = "xml" if multiple else None
    if (action, name) in REPEATABLE:
        multiple, multiple_source = True, "table"
    placeholder = name in PLACEHOLDERS.get(action, ())
    required = _truthy(param.get("required"))
    required_source = "xml" if required else None
    if (action, name) in REQUIRED:
        required, required_source = True, "table"
    kind = "scalar"
    if multiple:
        kind = "vars" if name == "Variable" else "list"
    return {
        "name": name,
        "py": None if (pattern or placeholder or name == "ActionID") else snake_case(name),
        "required": required,
        "required_source": required_source,
        "default": param.get("default") or None,
        "enum": enum,
        "enum_open": open_reason,
        "multiple": multiple,
        "multiple_source": multiple_source,
        "kind": kind,
        "pattern": pattern,
        "placeholder": placeholder,
        "description": _first_para(param),
    }


def _list_spec(name: str, manager: etree._Element) -> JSON | None:
    responses = manager.find("responses")
    if responses is not None:
        items = [e.get("name") or "" for e in responses.findall("list-elements/managerEvent")]
        finals = [e.get("name") or "" for e in responses.findall("managerEvent")]
        if len(finals) != 1:
            raise GenerationError(f"{name}: <responses> should end in one event, got {finals}")
        return {"complete": finals[0], "items": items, "source": "xml", "conditional": None}
    if name in SOURCE_LISTS:
        complete, items_t = SOURCE_LISTS[name]
        return {
            "complete": complete,
            "items": list(items_t),
            "source": "asterisk-source",
            "conditional": None,
        }
    if name in CONDITIONAL_LISTS:
        complete, items_t, when = CONDITIONAL_LISTS[name]
        return {
            "complete": complete,
            "items": list(items_t),
            "source": "asterisk-source",
            "conditional": when,
        }
    return None


def _action(manager: etree._Element, root: etree._Element) -> JSON:
    name = manager.get("name") or ""
    expanded = _expand(manager, root)
    params: list[JSON] = []
    seen: set[str] = set()
    for param in expanded.findall("syntax/parameter"):
        spec = _action_param(name, param)
        if spec["name"].lower() in seen:
            continue
        seen.add(spec["name"].lower())
        params.append(spec)
    constraints = [
        {"kind": kind, "groups": [list(g) for g in groups], "why": why}
        for kind, groups, why in CONSTRAINTS.get(name, ())
    ]
    names = {p["name"] for p in params}
    for constraint in constraints:
        for group in constraint["groups"]:
            unknown = set(group) - names
            if unknown:
                raise GenerationError(f"{name}: constraint names unknown parameters {unknown}")
    if name not in WRITE_CLASSES:
        print(f"warning: {name}: no write classes known; recorded as unknown", file=sys.stderr)
    return {
        "name": name,
        "method": METHOD_NAMES.get(name) or snake_case(name),
        "synopsis": _text(expanded.find("synopsis")),
        "description": _first_para(expanded.find("description")),
        "module": manager.get("module") or "",
        "modules": [manager.get("module") or ""],
        "since": _since(expanded),
        "params": params,
        "constraints": constraints,
        "open": name in PLACEHOLDERS,
        "list": _list_spec(name, expanded),
        "write_classes": list(WRITE_CLASSES.get(name, ())),
        "write_classes_source": "asterisk-source" if name in WRITE_CLASSES else "unknown",
        "see_also": sorted(
            {
                _clean(r.text or "")
                for r in expanded.findall("see-also/ref")
                if r.get("type") == "managerEvent"
            }
        ),
    }


def _event_definition(event: etree._Element, root: etree._Element) -> tuple[JSON, list[JSON]]:
    expanded = _expand(event, root)
    classes: list[str] = []
    since: list[str] = []
    synopsis = ""
    fields: list[JSON] = []
    seen: set[str] = set()
    for instance in expanded.findall("managerEventInstance"):
        cls = (instance.get("class") or "").removeprefix("EVENT_FLAG_").lower()
        if cls and cls not in classes:
            classes.append(cls)
        since.extend(v for v in _since(instance) if v not in since)
        synopsis = synopsis or _text(instance.find("synopsis"))
        for param in instance.findall("syntax/parameter"):
            fname = param.get("name") or ""
            if fname in seen:
                continue
            seen.add(fname)
            fields.append(
                {"name": fname, "enum": _enum_values(param), "description": _first_para(param)}
            )
    definition = {
        "module": event.get("module") or "",
        "classes": classes,
        "synopsis": synopsis,
        "since": since,
        "fields": [f["name"] for f in fields],
    }
    return definition, fields


def _detect_version(xml: Path) -> tuple[str, str] | None:
    for parent in xml.resolve().parents:
        status = parent / "var" / "lib" / "dpkg" / "status"
        if status.is_file():
            for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                if re.search(r"^Package: asterisk$", stanza, re.M):
                    raw = re.search(r"^Version: (.+)$", stanza, re.M)
                    if raw:
                        upstream = re.sub(r"^\d+:", "", raw.group(1).strip())
                        return re.split(r"[+~-]", upstream)[0], raw.group(1).strip()
            return None
    return None


def build_catalog(xml: Path, asterisk_version: str | None = None) -> JSON:
    """Parse ``xml`` into the catalog dictionary that ``catalog.json`` serialises."""
    data = xml.read_bytes()
    package = None
    if asterisk_version is None:
        detected = _detect_version(xml)
        if detected is None:
            raise GenerationError(
                f"cannot tell the Asterisk version of {xml}; pass --asterisk-version"
            )
        asterisk_version, package = detected
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(data, parser)

    actions: dict[str, JSON] = {}
    for manager in root.findall("manager"):
        spec = _action(manager, root)
        known = actions.get(spec["name"])
        if known is None:
            actions[spec["name"]] = spec
            continue
        # app_voicemail, app_voicemail_imap and app_voicemail_odbc document the same
        # actions; they are build variants of one module, so the first definition stands.
        if known["params"] != spec["params"]:
            raise GenerationError(f"{spec['name']}: definitions in two modules differ")
        known["modules"].append(spec["module"])

    events: dict[str, JSON] = {}
    for event in root.iter("managerEvent"):
        definition, fields = _event_definition(event, root)
        name = event.get("name") or ""
        merged = events.setdefault(
            name,
            {
                "name": name,
                "classes": [],
                "synopsis": definition["synopsis"],
                "since": [],
                "modules": [],
                "fields": [],
                "definitions": [],
            },
        )
        merged["definitions"].append(definition)
        for key in ("classes", "since", "modules"):
            values = definition[key] if key != "modules" else [definition["module"]]
            merged[key].extend(v for v in values if v not in merged[key])
        have = {f["name"] for f in merged["fields"]}
        merged["fields"].extend(f for f in fields if f["name"] not in have)

    missing = sorted(set(WRITE_CLASSES) - set(actions))
    if missing:
        print(f"note: write-class table names actions this XML lacks: {missing}", file=sys.stderr)

    return {
        "schema": SCHEMA_VERSION,
        "generator": "python -m router.ami.catalog_gen",
        "asterisk_version": asterisk_version,
        "asterisk_package": package,
        "xml": {"file": xml.name, "sha256": hashlib.sha256(data).hexdigest()},
        "counts": {
            "actions": len(actions),
            "action_definitions": len(root.findall("manager")),
            "events": len(events),
            "event_definitions": sum(len(e["definitions"]) for e in events.values()),
        },
        "actions": dict(sorted(actions.items())),
        "events": dict(sorted(events.items())),
    }


def dump_catalog(catalog: JSON) -> str:
    """Serialise deterministically: sorted keys, fixed indent, one trailing newline."""
    return json.dumps(catalog, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- actions.py

_MODULE_HEAD = '''\
"""Typed AMI actions: one ``async`` method per action Asterisk {version} documents.

GENERATED by ``python -m router.ami.catalog_gen`` from ``catalog.json``; edit
the generator, not this file. The methods exist for IDE completion, type
checking and docstrings; each one only maps Python keyword names to AMI
headers and calls :meth:`AMIActions.send`, which converts values, validates
against the catalog and hands an ``Action`` to the client's ``request``.

Python names are the snake_case of the AMI names (``CallerID`` → ``caller_id``,
``Async`` → ``async_``); the docstring of each argument names its header.
``ActionID`` is the ``action_id`` argument everywhere. Actions newer than the
catalog: ``await ami.send("NewAction", {{...}}, validate=False)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from router.ami.catalog import AMIScalar, AMIValue, AMIVariables, encode_action
from router.ami.protocol import Action

__all__ = ["ACTION_METHODS", "AMIActions", "ActionResultLike", "MessageLike"]


class MessageLike(Protocol):
    """What the typed layer needs of ``router.ami.message.Message``."""

    def get(self, key: str) -> str | None: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


class ActionResultLike(Protocol):
    """What the typed layer needs of ``router.ami.client.ActionResult``.

    For a list action ``items`` holds every list item and ``complete`` says the
    closing event arrived.
    """

    @property
    def response(self) -> MessageLike: ...

    @property
    def items(self) -> Sequence[MessageLike]: ...

    @property
    def complete(self) -> bool: ...


R = TypeVar("R", bound=ActionResultLike)


class AMIActions(Generic[R]):
    """Mixin giving a client one typed method per catalog action.

    Mixed into both clients (``router.ami.client.AJAMClient``,
    ``router.ami.tcp.TCPClient``) and into the facade plugins get
    (``router.ami.facade.AMI``), so that all three check an action against the
    catalog the same way; each provides ``request(action, *, check=True)``,
    which every typed method ends in. A list action's result carries its
    items, and ``complete`` says whether its closing event came.
    """

    __slots__ = ()

    if TYPE_CHECKING:

        async def request(self, action: Action, *, check: bool = True) -> R: ...

    async def send(
        self,
        name: str,
        params: Mapping[str, AMIValue | None] | None = None,
        *,
        action_id: str | None = None,
        validate: bool = True,
        check: bool = True,
    ) -> R:
        """Send any action by its AMI name; ``validate=False`` skips the catalog."""
        encoded = encode_action(name, params or {{}}, action_id=action_id, validate=validate)
        action = Action(encoded.name, encoded.params, encoded.action_id)
        return await self.request(action, check=check)
'''


def _doc_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', "'''")


def _wrap(text: str, indent: int, hang: int = 0) -> list[str]:
    return textwrap.wrap(
        _doc_line(text),
        width=100,
        initial_indent=" " * indent,
        subsequent_indent=" " * (indent + hang),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [" " * indent]


def _annotation(param: JSON) -> str:
    if param["kind"] == "vars":
        return "AMIVariables"
    if param["kind"] == "list":
        return "AMIScalar | Sequence[AMIScalar]"
    return "AMIScalar"


def _method(action: JSON) -> list[str]:
    grouped = {p for c in action["constraints"] for g in c["groups"] for p in g}
    args: list[tuple[str, str, bool, JSON]] = []
    for param in action["params"]:
        if param["py"] is None:
            continue
        required = param["required"] and param["name"] not in grouped
        args.append((param["py"], _annotation(param), required, param))
    extra = action["open"] or any(p["pattern"] for p in action["params"])
    lines = [f"    async def {action['method']}("]
    lines.append("        self,")
    lines.append("        *,")
    for py, annotation, required, _ in args:
        default = "" if required else " | None = None"
        lines.append(f"        {py}: {annotation}{default},")
    if extra:
        lines.append("        headers: Mapping[str, AMIValue] | None = None,")
    lines.append("        action_id: str | None = None,")
    lines.append("    ) -> R:")
    # Docstring: synopsis, description, facts, arguments.
    doc = [*_wrap(action["synopsis"] or action["name"], 11)]
    doc[0] = '        """' + doc[0].lstrip()
    doc[1:] = [line[3:] for line in doc[1:]]
    if action["description"] and action["description"] != action["synopsis"]:
        doc += ["", *_wrap(action["description"], 8)]
    classes = ", ".join(action["write_classes"]) or "none needed"
    doc += [
        "",
        *_wrap(f"AMI ``{action['name']}`` from {action['module']}; write class: {classes}.", 8),
    ]
    listing = action["list"]
    if listing:
        items = ", ".join(f"``{i}``" for i in listing["items"]) or "its items"
        when = f" ({listing['conditional']})" if listing["conditional"] else ""
        doc += _wrap(
            f"Answers with a list{when}: {items}, closed by "
            f"``{listing['complete']}``; the result holds them all.",
            8,
        )
    for constraint in action["constraints"]:
        choices = " or ".join("+".join(g) for g in constraint["groups"])
        word = "exactly one of" if constraint["kind"] == "one_of" else "at least one of"
        doc += _wrap(f"Give {word}: {choices}.", 8)
    if args or extra:
        doc += ["", "        Args:"]
        for py, _, required, param in args:
            facts = [f"``{param['name']}``"]
            if required:
                facts.append("required")
            if param["default"]:
                facts.append(f"default {param['default']}")
            if param["strict_enum"]:
                facts.append("one of " + ", ".join(param["strict_enum"]))
            if param["multiple"]:
                facts.append("repeatable")
            text = f"{py}: {param['description'] or param['name']} ({'; '.join(facts)})"
            doc += _wrap(text, 12, 4)
        if extra:
            names = [p["name"] for p in action["params"] if p["pattern"] or p["placeholder"]]
            doc += _wrap("headers: further headers, e.g. " + ", ".join(names), 12, 4)
        doc += _wrap("action_id: ``ActionID`` to correlate the reply and later events.", 12, 4)
    doc.append('        """')
    lines += doc
    lines.append("        return await self.send(")
    lines.append(f'            "{action["name"]}",')
    lines.append("            {")
    for py, _, _, param in args:
        lines.append(f'                "{param["name"]}": {py},')
    if extra:
        lines.append("                **(headers or {}),")
    lines.append("            },")
    lines.append("            action_id=action_id,")
    lines.append("        )")
    return lines


def render_actions_module(catalog: JSON) -> str:
    """Python source of ``router/ami/actions.py`` for ``catalog``."""
    out = [_MODULE_HEAD.format(version=catalog["asterisk_version"])]
    methods: dict[str, str] = {}
    for action in catalog["actions"].values():
        if action["method"] in methods or action["method"] in CLIENT_NAMES:
            raise GenerationError(f"method name {action['method']} is taken")
        methods[action["method"]] = action["name"]
        for param in action["params"]:
            param["strict_enum"] = [] if param["enum_open"] else param["enum"]
        out.append("")
        out.extend(_method(action))
    out.append("")
    out.append("")
    out.append("ACTION_METHODS: Mapping[str, str] = {")
    for action in catalog["actions"].values():
        entry = f'    "{action["name"]}": "{action["method"]}",'
        if len(entry) > 100:
            entry = f'    "{action["name"]}":\n        "{action["method"]}",'
        out.append(entry)
    out.append("}")
    out.append('"""AMI action name → method name on :class:`AMIActions`."""')
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _regen_note(catalog: JSON) -> list[str]:
    return [
        f"Generated from Asterisk {catalog['asterisk_version']}'s `core-en_US.xml` "
        f"(sha256 `{catalog['xml']['sha256'][:16]}…`) by `router/ami/catalog_gen.py`; "
        "do not edit. Regenerate with:",
        "",
        "```sh",
        ".venv/bin/python -m router.ami.catalog_gen --xml PATH/core-en_US.xml",
        "```",
        "",
    ]


def render_actions_doc(catalog: JSON) -> str:
    """Markdown reference of every action."""
    actions = dict(sorted(catalog["actions"].items(), key=lambda kv: kv[0].lower()))
    lines = ["# AMI actions", ""]
    lines += _regen_note(catalog)
    lines += [
        f"{len(actions)} actions. *Write classes* come from the Asterisk source "
        "(`ast_manager_register_xml` calls), since the XML has none; holding any one "
        "listed class is enough, and *none* means any logged-in user may call it. "
        "List replies marked *source* were read from the Asterisk source, the others "
        "from the XML's `<responses>`. From Python every action is a method of "
        "`AMIActions` (snake_case name, keyword arguments as in the *Python* column).",
        "",
        "| Action | Synopsis |",
        "|---|---|",
    ]
    for action in actions.values():
        anchor = action["name"].lower()
        lines.append(f"| [{action['name']}](#{anchor}) | {_cell(action['synopsis'])} |")
    for action in actions.values():
        lines += ["", f"## {action['name']}", "", action["synopsis"], ""]
        if action["description"] and action["description"] != action["synopsis"]:
            lines += [action["description"], ""]
        modules = ", ".join(f"`{m}`" for m in action["modules"])
        classes = ", ".join(action["write_classes"]) or "none"
        lines.append(f"- Module: {modules}; since {', '.join(action['since']) or '?'}")
        lines.append(f"- Write class: {classes}")
        lines.append(f"- Python: `await ami.{action['method']}(...)`")
        listing = action["list"]
        if listing:
            items = ", ".join(f"`{i}`" for i in listing["items"]) or "items"
            when = f" ({listing['conditional']})" if listing["conditional"] else ""
            source = "source" if listing["source"] != "xml" else "XML"
            lines.append(
                f"- List reply{when}: {items}, closed by `{listing['complete']}` ({source})"
            )
        for constraint in action["constraints"]:
            choices = " or ".join("+".join(g) for g in constraint["groups"])
            word = "exactly one of" if constraint["kind"] == "one_of" else "at least one of"
            lines.append(f"- Give {word} {choices}: {constraint['why']}")
        if action["open"]:
            lines.append("- Accepts any further headers.")
        params = [p for p in action["params"] if p["name"] != "ActionID"]
        if params:
            lines += [
                "",
                "| Parameter | Python | Required | Default | Values | Description |",
                "|---|---|---|---|---|---|",
            ]
            for p in params:
                values = ", ".join(f"`{v}`" for v in p["enum"])
                if p["enum"] and p["enum_open"]:
                    values += " (examples)"
                if p["multiple"]:
                    values = (values + "; " if values else "") + "repeatable"
                lines.append(
                    f"| `{p['name']}` | {('`' + p['py'] + '`') if p['py'] else '`headers`'} "
                    f"| {'yes' if p['required'] else ''} | {_cell(p['default'] or '')} "
                    f"| {_cell(values)} | {_cell(p['description'])} |"
                )
    return "\n".join(lines) + "\n"


def render_events_doc(catalog: JSON) -> str:
    """Markdown reference of every event."""
    events = dict(sorted(catalog["events"].items(), key=lambda kv: kv[0].lower()))
    lines = ["# AMI events", ""]
    lines += _regen_note(catalog)
    lines += [
        f"{len(events)} event names from {catalog['counts']['event_definitions']} "
        "`<managerEvent>` definitions (some events, such as VarSet, are documented by "
        "several modules; their fields are merged here). Every event also carries "
        "`Event` and `Privilege`. Channel blocks (`channel_snapshot`) are expanded to "
        "Channel, ChannelState, …, Linkedid with their prefix, bridge blocks to "
        "BridgeUniqueid, …, BridgeVideoSource, as Asterisk's `appdocsxml.xslt` does.",
        "",
        "| Event | Class | Synopsis |",
        "|---|---|---|",
    ]
    for event in events.values():
        lines.append(
            f"| [{event['name']}](#{event['name'].lower()}) "
            f"| {', '.join(event['classes'])} | {_cell(event['synopsis'])} |"
        )
    for event in events.values():
        lines += ["", f"## {event['name']}", "", event["synopsis"] or "", ""]
        lines.append(
            f"- Class: {', '.join(event['classes']) or '?'}; "
            f"module: {', '.join(f'`{m}`' for m in event['modules'])}"
        )
        if event["fields"]:
            lines += ["", "| Field | Values | Description |", "|---|---|---|"]
            for f in event["fields"]:
                values = ", ".join(f"`{v}`" for v in f["enum"])
                lines.append(f"| `{f['name']}` | {_cell(values)} | {_cell(f['description'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def outputs(catalog: JSON, out: Path, actions_module: Path, docs: Path) -> dict[Path, str]:
    """Every file one regeneration writes, with its content."""
    text = dump_catalog(catalog)
    return {out: text, **rendered(text, actions_module, docs)}


def rendered(catalog_text: str, actions_module: Path, docs: Path) -> dict[Path, str]:
    """The files rendered from a catalog's JSON text: the typed methods and the pages.

    From the text, not the object, so that a catalog read back from disk and a
    fresh one render alike, and nothing a renderer adds leaks into the JSON."""
    view = json.loads(catalog_text)
    return {
        actions_module: render_actions_module(view),
        docs / "ami-actions.md": render_actions_doc(view),
        docs / "ami-events.md": render_events_doc(view),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.ami.catalog_gen",
        description="Regenerate the AMI catalog, typed actions and reference docs.",
    )
    parser.add_argument(
        "--xml", type=Path, default=DEFAULT_XML, help="core-en_US.xml (default: the sandbox's)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="catalog JSON to write")
    parser.add_argument("--actions-module", type=Path, default=DEFAULT_ACTIONS_MODULE)
    parser.add_argument(
        "--docs",
        type=Path,
        default=DEFAULT_DOCS,
        help="folder for ami-actions.md and ami-events.md",
    )
    parser.add_argument("--asterisk-version", help="override the detected Asterisk version")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any output is out of date"
    )
    parser.add_argument(
        "--from-catalog",
        action="store_true",
        help="no XML: render the actions module and the docs from --out",
    )
    args = parser.parse_args(argv)
    try:
        if args.from_catalog:
            text = args.out.read_text("utf-8")
            catalog = json.loads(text)
            files = rendered(text, args.actions_module, args.docs)
        else:
            catalog = build_catalog(args.xml, args.asterisk_version)
            files = outputs(catalog, args.out, args.actions_module, args.docs)
    except (GenerationError, OSError, etree.XMLSyntaxError, json.JSONDecodeError) as exc:
        print(f"catalog_gen: {exc}", file=sys.stderr)
        return 2
    stale = []
    for path, content in files.items():
        current = path.read_text("utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, "utf-8")
    counts = catalog["counts"]
    verb = "stale" if args.check else "written"
    print(
        f"Asterisk {catalog['asterisk_version']}: {counts['actions']} actions, "
        f"{counts['events']} events ({counts['event_definitions']} definitions); "
        f"{verb}: {', '.join(str(p) for p in stale) or 'none'}"
    )
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
