"""Every AMI action and event Asterisk documents, as typed data with a validator.

The data is ``catalog.json``, generated from Asterisk's own ``core-en_US.xml`` by
:mod:`router.ami.catalog_gen`; this module only reads it. Validation happens
here, before anything is sent, because Asterisk reports a misspelt header by
silently ignoring it: ``Contxt: sales`` in an Originate does not fail, the
call just goes to the wrong place.

Where the XML is silent (write classes, most list actions, repeatable
parameters, alternatives such as Originate's Exten/Context/Priority versus
Application) the catalog carries data from small tables in the generator, and
each record says where it came from (``source``/``*_source`` fields).

Usage::

    catalog = load_catalog()
    spec = catalog.action("originate")          # case-insensitive, did-you-mean on typos
    params = spec.validate({"Channel": "Local/100@x", "Application": "Wait", "Data": "5"})

This module does no I/O beyond reading the packaged JSON once, and imports
neither httpx nor asyncio.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

from router.errors import AMIValidationError
from router.suggest import closest

__all__ = [
    "READ_ONLY",
    "AMIScalar",
    "AMIValue",
    "AMIVariables",
    "ActionSpec",
    "Catalog",
    "Constraint",
    "EncodedAction",
    "EventDefinition",
    "EventSpec",
    "FieldSpec",
    "ListSpec",
    "ParamSpec",
    "encode_action",
    "encode_value",
    "format_action_help",
    "load_catalog",
]

AMIScalar: TypeAlias = str | int | float | bool
"""One header value as Python code may give it; sent as text."""

AMIVariables: TypeAlias = Mapping[str, AMIScalar] | Sequence[str] | str
"""A ``Variable`` parameter: a mapping becomes one ``Variable: K=V`` header per item."""

AMIValue: TypeAlias = AMIScalar | Sequence[AMIScalar] | Mapping[str, AMIScalar]
"""Anything :func:`encode_value` turns into one or several header values."""

# Spellings Asterisk's ast_true()/ast_false() accept, so a yes/no or true/false enum
# takes any of them; we send the catalog's own spelling.
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})

READ_ONLY: frozenset[str] = frozenset(
    {
        # Session and system status.
        "Ping",
        "CoreSettings",
        "CoreStatus",
        "CoreShowChannels",
        "CoreShowChannelMap",
        "ListCommands",
        "Status",
        "Getvar",
        "ModuleCheck",
        "ExtensionState",
        "PresenceState",
        "MailboxStatus",
        "MailboxCount",
        "ShowDialPlan",
        "ExtensionStateList",
        "DeviceStateList",
        "PresenceStateList",
        "GetConfig",
        "GetConfigJSON",
        "ListCategories",
        "DBGet",
        "DBGetTree",
        # Bridges, queues, agents, parking, conferences.
        "BridgeList",
        "BridgeInfo",
        "BridgeTechnologyList",
        "QueueStatus",
        "QueueSummary",
        "QueueRule",
        "Agents",
        "ParkedCalls",
        "Parkinglots",
        "ConfbridgeList",
        "ConfbridgeListRooms",
        "MeetmeList",
        "MeetmeListRooms",
        # Voicemail, MWI, fax.
        "VoicemailUsersList",
        "VoicemailUserStatus",
        "VoicemailBoxSummary",
        "MWIGet",
        "FAXSessions",
        "FAXSession",
        "FAXStats",
        # Channel drivers.
        "IAXpeers",
        "IAXpeerlist",
        "IAXnetstats",
        "IAXregistry",
        "DAHDIShowChannels",
        "DAHDIShowStatus",
        "PRIShowSpans",
        "PJSIPShowEndpoints",
        "PJSIPShowEndpoint",
        "PJSIPShowAors",
        "PJSIPShowAuths",
        "PJSIPShowContacts",
        "PJSIPShowMaintenance",
        "PJSIPShowRegistrationsInbound",
        "PJSIPShowRegistrationInboundContactStatuses",
        "PJSIPShowRegistrationsOutbound",
        "PJSIPShowResourceLists",
        "PJSIPShowSubscriptionsInbound",
        "PJSIPShowSubscriptionsOutbound",
    }
)
"""Actions that only report state, curated by reading each one's documentation.

Safe to run against a live PBX in tests. Deliberately left out although they
take no arguments: ``LoggerRotate`` and ``Reload``/``QueueReload``/``QueueReset``
(change state), ``Logoff`` (ends the session the test is using), ``WaitEvent``
(consumes the session's event queue), ``VoicemailRefresh`` (re-reads mailboxes
and fires MWI), ``MWIDelete`` (deletes), ``DAHDIRestart``, ``PRIDebugFileUnset``,
and ``Challenge``/``Login`` (session management). ``Getvar`` is read-only as an
action, but a ``SHELL()`` argument is not; the integration test passes no
arguments, so it never runs.
"""


@dataclass(frozen=True)
class Constraint:
    """A rule the XML states only in prose, such as Originate's two destinations.

    ``one_of``: exactly one group is given in full and no member of another group
    appears. ``any_of``: at least one group is given in full.
    """

    kind: str
    groups: tuple[tuple[str, ...], ...]
    why: str

    def check(self, present: Iterable[str]) -> str | None:
        given = set(present)
        full = [g for g in self.groups if all(p in given for p in g)]
        touched = [g for g in self.groups if any(p in given for p in g)]
        choices = " or ".join("+".join(g) for g in self.groups)
        if not full:
            partial = [p for g in touched for p in g if p not in given]
            hint = f" (missing {', '.join(partial)})" if partial else ""
            return f"needs {choices}{hint}"
        if self.kind == "one_of" and len(touched) > 1:
            return f"give only one of {choices}, not several"
        return None


@dataclass(frozen=True)
class ParamSpec:
    """One documented header of an action."""

    name: str
    python_name: str | None
    required: bool
    required_source: str | None
    default: str | None
    enum: tuple[str, ...]
    enum_open: str | None
    multiple: bool
    multiple_source: str | None
    kind: str
    pattern: str | None
    placeholder: bool
    description: str

    @property
    def strict_enum(self) -> tuple[str, ...]:
        """The values to enforce: empty when the documented list is only examples."""
        return () if self.enum_open else self.enum

    def matches(self, header: str) -> str | None:
        """Canonical spelling of ``header`` if this parameter accepts it, else ``None``."""
        if self.pattern is not None:
            prefix = re.match(r"[A-Za-z]+", self.name)
            if re.fullmatch(self.pattern, header, re.IGNORECASE) and prefix:
                return prefix.group(0) + header[len(prefix.group(0)) :]
            return None
        return self.name if header.lower() == self.name.lower() else None

    def canonical_value(self, value: str) -> str | None:
        """``value`` spelt as the catalog spells it, or ``None`` when the enum refuses it."""
        allowed = self.strict_enum
        if not allowed:
            return value
        for candidate in allowed:
            if candidate.lower() == value.lower():
                return candidate
        lowered = {v.lower() for v in allowed}
        if lowered <= _TRUE | _FALSE and value.lower() in _TRUE | _FALSE:
            want = _TRUE if value.lower() in _TRUE else _FALSE
            for candidate in allowed:
                if candidate.lower() in want:
                    return candidate
        return None


@dataclass(frozen=True)
class ListSpec:
    """How a list action answers: item events, then one closing event."""

    complete: str
    items: tuple[str, ...]
    source: str
    conditional: str | None


@dataclass(frozen=True)
class ActionSpec:
    """One manager action as the catalog knows it."""

    name: str
    method: str
    synopsis: str
    description: str
    module: str
    modules: tuple[str, ...]
    since: tuple[str, ...]
    params: tuple[ParamSpec, ...]
    constraints: tuple[Constraint, ...]
    open: bool
    listing: ListSpec | None
    write_classes: tuple[str, ...]
    write_classes_source: str
    see_also: tuple[str, ...]
    _by_lower: Mapping[str, ParamSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_lower", {p.name.lower(): p for p in self.params})

    @property
    def is_list(self) -> bool:
        """True when the reply is always an event list (not only for some arguments)."""
        return self.listing is not None and self.listing.conditional is None

    @property
    def required(self) -> tuple[ParamSpec, ...]:
        """Parameters that must always be given (alternatives are in ``constraints``)."""
        grouped = {p for c in self.constraints for g in c.groups for p in g}
        return tuple(p for p in self.params if p.required and p.name not in grouped)

    @property
    def needs_arguments(self) -> bool:
        return bool(self.required or self.constraints)

    def param(self, header: str) -> tuple[ParamSpec, str] | None:
        """The parameter accepting ``header`` and its canonical spelling."""
        found = self._by_lower.get(header.lower())
        if found is not None and found.pattern is None and not found.placeholder:
            return found, found.name
        for candidate in self.params:
            canonical = candidate.matches(header)
            if canonical is not None and candidate.pattern is not None:
                return candidate, canonical
        return None

    def suggest(self, header: str) -> str | None:
        """Closest documented header to a misspelt one, also matching Python spellings."""
        names: dict[str, str] = {}
        for p in self.params:
            if p.placeholder or p.pattern:
                continue
            names[p.name.lower()] = p.name
            if p.python_name:
                names[p.python_name.rstrip("_")] = p.name
        match = closest(header.lower(), names)
        return names[match] if match is not None else None

    def validate(self, params: Mapping[str, str | Sequence[str]]) -> dict[str, str | list[str]]:
        """Check ``params`` against the catalog and return them with canonical names.

        Raises :class:`AMIValidationError` naming every problem at once (missing,
        unknown with a suggestion, value outside the enum, repeated single value),
        because fixing one typo per round trip is slow. ``Action`` is dropped and
        ``ActionID`` kept as is. Repeatable parameters come back as lists.
        """
        problems: list[str] = []
        out: dict[str, str | list[str]] = {}
        for header, raw in params.items():
            lowered = header.lower()
            if lowered == "action":
                continue
            values = [raw] if isinstance(raw, str) else [str(v) for v in raw]
            if lowered == "actionid":
                if len(values) != 1:
                    problems.append("ActionID takes one value")
                else:
                    out["ActionID"] = values[0]
                continue
            found = self.param(header)
            if found is None:
                if self.open:
                    out[header] = values[0] if len(values) == 1 else values
                    continue
                hint = self.suggest(header)
                problems.append(
                    f"unknown parameter {header!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                )
                continue
            spec, canonical = found
            if canonical in out:
                problems.append(f"{canonical} given twice")
                continue
            if len(values) > 1 and not spec.multiple:
                problems.append(f"{canonical} takes one value, got {len(values)}")
                continue
            fixed: list[str] = []
            for value in values:
                good = spec.canonical_value(value)
                if good is None:
                    problems.append(
                        f"{canonical}={value!r} is not one of {', '.join(spec.strict_enum)}"
                    )
                else:
                    fixed.append(good)
            out[canonical] = fixed if spec.multiple else (fixed[0] if fixed else "")
        present = [k for k, v in out.items() if v not in ("", [])]
        for spec in self.required:
            if spec.name not in present:
                problems.append(f"missing required parameter {spec.name}")
        for constraint in self.constraints:
            problem = constraint.check(present)
            if problem:
                problems.append(problem)
        if problems:
            raise AMIValidationError(f"{self.name}: " + "; ".join(problems))
        return out


@dataclass(frozen=True)
class FieldSpec:
    """One documented header of an event."""

    name: str
    enum: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class EventDefinition:
    """One ``<managerEvent>`` element; some events are documented by several modules."""

    module: str
    classes: tuple[str, ...]
    synopsis: str
    since: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class EventSpec:
    """An event name with every documented field, merged over its definitions."""

    name: str
    classes: tuple[str, ...]
    synopsis: str
    since: tuple[str, ...]
    modules: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    definitions: tuple[EventDefinition, ...]


class EncodedAction(NamedTuple):
    """An action ready for the wire: canonical name, ordered header pairs, ActionID."""

    name: str
    params: tuple[tuple[str, str], ...]
    action_id: str | None


class Catalog:
    """Lookup over the generated catalog; build it with :func:`load_catalog`."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.asterisk_version: str = data["asterisk_version"]
        self.schema: int = data["schema"]
        self.actions: Mapping[str, ActionSpec] = {
            name: _action_from_json(raw) for name, raw in data["actions"].items()
        }
        self.events: Mapping[str, EventSpec] = {
            name: _event_from_json(raw) for name, raw in data["events"].items()
        }
        self._lower = {name.lower(): spec for name, spec in self.actions.items()}
        self._events_lower = {name.lower(): spec for name, spec in self.events.items()}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lower

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self.actions.values())

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def event_definition_count(self) -> int:
        return sum(len(e.definitions) for e in self.events.values())

    def action(self, name: str, *, bypass: str = "validate=False") -> ActionSpec:
        """The action called ``name`` in any case; a typo gets a did-you-mean.

        ``bypass`` is how the caller skips the catalog, named in the error:
        ``validate=False`` for the Python API, ``--raw`` for ``callrouter ami``.
        """
        spec = self._lower.get(name.lower())
        if spec is not None:
            return spec
        match = closest(name.lower(), self._lower)
        hint = f" (did you mean {self._lower[match].name!r}?)" if match is not None else ""
        raise AMIValidationError(
            f"unknown AMI action {name!r}{hint}; actions newer than Asterisk "
            f"{self.asterisk_version} can be sent with {bypass}"
        )

    def event(self, name: str) -> EventSpec:
        spec = self._events_lower.get(name.lower())
        if spec is None:
            match = closest(name.lower(), self._events_lower)
            hint = (
                f" (did you mean {self._events_lower[match].name!r}?)" if match is not None else ""
            )
            raise KeyError(f"unknown AMI event {name!r}{hint}")
        return spec

    def search(self, text: str = "") -> list[ActionSpec]:
        """Actions whose name or synopsis contains ``text``, any case, sorted by name."""
        needle = text.lower()
        found = [
            spec
            for spec in self.actions.values()
            if needle in spec.name.lower() or needle in spec.synopsis.lower()
        ]
        return sorted(found, key=lambda spec: spec.name.lower())

    def list_actions(self) -> list[ActionSpec]:
        """Actions that always answer with an event list ending in a closing event."""
        return [spec for spec in self.actions.values() if spec.is_list]

    def read_only_actions(self, *, no_arguments: bool = False) -> list[ActionSpec]:
        """The :data:`READ_ONLY` actions, optionally only those callable without arguments."""
        return [
            spec
            for spec in self.actions.values()
            if spec.name in READ_ONLY and not (no_arguments and spec.needs_arguments)
        ]


def _param_from_json(raw: Mapping[str, Any]) -> ParamSpec:
    return ParamSpec(
        name=raw["name"],
        python_name=raw["py"],
        required=raw["required"],
        required_source=raw["required_source"],
        default=raw["default"],
        enum=tuple(raw["enum"]),
        enum_open=raw["enum_open"],
        multiple=raw["multiple"],
        multiple_source=raw["multiple_source"],
        kind=raw["kind"],
        pattern=raw["pattern"],
        placeholder=raw["placeholder"],
        description=raw["description"],
    )


def _action_from_json(raw: Mapping[str, Any]) -> ActionSpec:
    listing = raw["list"]
    return ActionSpec(
        name=raw["name"],
        method=raw["method"],
        synopsis=raw["synopsis"],
        description=raw["description"],
        module=raw["module"],
        modules=tuple(raw["modules"]),
        since=tuple(raw["since"]),
        params=tuple(_param_from_json(p) for p in raw["params"]),
        constraints=tuple(
            Constraint(c["kind"], tuple(tuple(g) for g in c["groups"]), c["why"])
            for c in raw["constraints"]
        ),
        open=raw["open"],
        listing=None
        if listing is None
        else ListSpec(
            listing["complete"],
            tuple(listing["items"]),
            listing["source"],
            listing["conditional"],
        ),
        write_classes=tuple(raw["write_classes"]),
        write_classes_source=raw["write_classes_source"],
        see_also=tuple(raw["see_also"]),
    )


def _event_from_json(raw: Mapping[str, Any]) -> EventSpec:
    return EventSpec(
        name=raw["name"],
        classes=tuple(raw["classes"]),
        synopsis=raw["synopsis"],
        since=tuple(raw["since"]),
        modules=tuple(raw["modules"]),
        fields=tuple(
            FieldSpec(f["name"], tuple(f["enum"]), f["description"]) for f in raw["fields"]
        ),
        definitions=tuple(
            EventDefinition(
                d["module"],
                tuple(d["classes"]),
                d["synopsis"],
                tuple(d["since"]),
                tuple(d["fields"]),
            )
            for d in raw["definitions"]
        ),
    )


@functools.cache
def load_catalog(path: Path | None = None) -> Catalog:
    """The packaged catalog (or the one at ``path``), parsed once per process."""
    if path is None:
        text = resources.files("router.ami").joinpath("catalog.json").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return Catalog(json.loads(text))


def _scalar(value: AMIScalar, spec: ParamSpec | None) -> str:
    if isinstance(value, bool):
        if spec is not None and {v.lower() for v in spec.enum} == {"yes", "no"}:
            return "yes" if value else "no"
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise AMIValidationError(f"cannot send {type(value).__name__} as an AMI header value")


def encode_value(value: AMIValue, spec: ParamSpec | None = None) -> str | list[str]:
    """Python value → header value(s).

    ``True``/``False`` become ``true``/``false`` (``yes``/``no`` where the enum says
    so), numbers their decimal text, a mapping one ``K=V`` per item (the form
    Asterisk wants for ``Variable``), any other sequence one header per element.
    """
    if type(value) is str:  # nearly every header: no ABC check on the way
        return value
    if isinstance(value, Mapping):
        return [f"{k}={_scalar(v, None)}" for k, v in value.items()]
    if isinstance(value, str | bool | int | float):
        return _scalar(value, spec)
    return [_scalar(v, spec) for v in value]


def encode_action(
    name: str,
    params: Mapping[str, AMIValue | None],
    *,
    action_id: str | None = None,
    validate: bool = True,
    catalog: Catalog | None = None,
) -> EncodedAction:
    """Convert, check and order an action call; the common path of every typed method.

    ``None`` values are dropped so optional keyword arguments need no special
    casing. With ``validate=False`` the name and headers go out as given (after
    value conversion): the escape hatch for actions newer than the catalog.
    """
    spec: ActionSpec | None = None
    if validate:
        spec = (catalog or load_catalog()).action(name)
        name = spec.name
    converted: dict[str, str | list[str]] = {}
    for header, value in params.items():
        if value is None:
            continue
        found = spec.param(header) if spec is not None else None
        converted[header] = encode_value(value, found[0] if found else None)
    checked = spec.validate(converted) if spec is not None else converted
    pairs: list[tuple[str, str]] = []
    for header, value in checked.items():
        if header.lower() == "actionid":
            if action_id is not None and action_id != value:
                raise AMIValidationError(f"{name}: two different ActionIDs given")
            action_id = value if isinstance(value, str) else ",".join(value)
            continue
        if header.lower() == "action":
            continue
        for item in [value] if isinstance(value, str) else value:
            pairs.append((header, item))
    return EncodedAction(name, tuple(pairs), action_id)


def format_action_help(spec: ActionSpec) -> str:
    """Help text for one action: usage, synopsis, facts, and a parameter table."""
    usage = [f"usage: callrouter ami {spec.name}"]
    for p in spec.params:
        if p.name == "ActionID":
            continue
        token = f"{p.name}=VALUE"
        usage.append(token if p in spec.required else f"[{token}]")
    lines = [textwrap.fill(" ".join(usage), width=88, subsequent_indent="    "), ""]
    lines.append(spec.synopsis)
    if spec.description and spec.description != spec.synopsis:
        lines += ["", textwrap.fill(spec.description, width=88)]
    lines.append("")
    since = ", ".join(spec.since) or "?"
    lines.append(f"Module: {', '.join(spec.modules)} (since {since})")
    lines.append(f"Write class: {', '.join(spec.write_classes) or 'none needed'}")
    lines.append(f"Python: await ami.{spec.method}(...)")
    if spec.listing is not None:
        items = ", ".join(spec.listing.items) or "items"
        when = f" ({spec.listing.conditional})" if spec.listing.conditional else ""
        lines.append(f"Reply: a list{when} of {items}, closed by {spec.listing.complete}")
    for c in spec.constraints:
        word = "exactly one of" if c.kind == "one_of" else "at least one of"
        choices = " or ".join("+".join(g) for g in c.groups)
        lines.append(
            textwrap.fill(f"Give {word} {choices}: {c.why}", width=88, subsequent_indent="  ")
        )
    if spec.open:
        lines.append("Any further headers are passed on.")
    params = [p for p in spec.params if p.name != "ActionID"]
    if params:
        lines += ["", "Parameters:"]
        width = max(len(p.name) for p in params)
        for p in params:
            facts = []
            if p in spec.required:
                facts.append("required")
            if p.default:
                facts.append(f"default {p.default}")
            if p.strict_enum:
                facts.append("one of " + ", ".join(p.strict_enum))
            elif p.enum:
                facts.append("e.g. " + ", ".join(p.enum))
            if p.multiple:
                facts.append("repeatable")
            text = p.description + (f" [{'; '.join(facts)}]" if facts else "")
            lines.append(
                textwrap.fill(
                    text,
                    width=88,
                    initial_indent=f"  {p.name:<{width}}  ",
                    subsequent_indent=" " * (width + 4),
                )
            )
    return "\n".join(lines) + "\n"
