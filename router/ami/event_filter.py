"""Which AMI events callrouter asks Asterisk for, and how to ask for them.

Asterisk sends a manager session every event its user may read unless told
otherwise, and on a busy PBX many of them (``VarSet``, ``DeviceStateChange``,
``NewCallerid``, ``RTCP*``, ``DTMF*``, ``Agent*``) are events nobody in
callrouter reacts to: each costs Asterisk a write, the wire its bytes and us a
parse. So the engine computes the events it needs (:func:`select_events`:
the core's own, the ``on: event`` rules', each plugin's
``callrouter_wanted_events``) and asks for only those, in the two ways Asterisk
offers per session (docs/asterisk.md, "Event filtering"):

* the class mask, ``Events: call,user,...`` in ``Login`` and the ``Events``
  action later (no write class needed): coarse, a class carries many events;
* event-name filters, the ``Filter`` action with ``MatchCriteria:
  action(include),name(X)`` (Asterisk 22.1+): exact, but the action needs
  ``write = system``, which we do not recommend giving callrouter. When
  refused, :func:`filter_refused` says so and the class mask alone applies;
  an administrator can give the same filters as ``eventfilter`` lines in
  manager.conf (:meth:`EventSelection.manager_conf_lines`).

Of some events the engine reads only a few (router/narrowing.py):
``Newexten``, one per dialplan step, of which it needs the steps at the
priorities a call enters a context at; ``CEL``, of which the call life folds
eight kinds; ``Newstate`` and ``DialState``, of which it reads a leg answering
or ringing. Their name filters then also name a header (:class:`HeaderFilter`,
``header(Priority)``, ``header(EventName)``), so Asterisk does not write the
rest at all: 7 of the 10 ``Newexten`` of a call.

Filters can be added to a session but never removed, so a selection that
narrows takes effect at the next login; one that widens is applied at once
(:func:`plan_filters`). Like the rest of ``router/ami``
this module does no I/O: the clients send what it builds.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.ami.message import Response
from router.ami.protocol import Action, ActionResult

if TYPE_CHECKING:
    import logging

__all__ = [
    "API_EVENTS",
    "CORE_EVENTS",
    "EVERYTHING",
    "MASK_CLASSES",
    "EventSelection",
    "FilterKey",
    "HeaderFilter",
    "add_filters",
    "class_of",
    "filter_refused",
    "match_all_filter",
    "plan_filters",
    "select_events",
]

#: What the engine itself reads: the routing request and the routers'
#: heartbeat (``UserEvent``), the call tracker (channels, their contexts and
#: states, answers, hangups), the executor's confirmation of a redirect
#: (``Newexten``), the prefetch trigger (``Newchannel``/``Newexten`` in the
#: inbound context) and the dialplan audit after Asterisk reloads its dialplan
#: (``Reload``) or ends a boot it read part of (``FullyBooted``). Reconcile
#: reads ``CoreShowChannels``' list, which is an action's answer and never
#: filtered.
CORE_EVENTS: frozenset[str] = frozenset(
    {
        "UserEvent",
        "Newchannel",
        "Newexten",
        "Newstate",
        "Hangup",
        "DialEnd",
        "BridgeEnter",
        "FullyBooted",
        "Reload",
        "Shutdown",
    }
)

#: The HTTP API when ``[api]`` is on: the event feed (router.api.intake),
#: click-to-call progress (router.api.calls) and forwarding's re-apply after
#: a reload (router.api.forwarding). ``BridgeLeave`` with ``BridgeEnter``: a
#: transfer waits for the other side of a leg the tracker counts alone in its
#: bridge (router.api.calls), also one left alone when the other side walked out.
API_EVENTS: frozenset[str] = frozenset(
    {
        "AttendedTransfer",
        "BlindTransfer",
        "BridgeEnter",
        "BridgeLeave",
        "DeviceStateChange",
        "DialBegin",
        "DialEnd",
        "ExtensionStatus",
        "FullyBooted",
        "Hangup",
        "Newchannel",
        "Newexten",
        "OriginateResponse",
        "Reload",
    }
)

#: The class of events the catalog documents without one, as Asterisk 22
#: sends them (the ``Privilege`` header; checked by the sandbox test
#: ``test_event_filter_sandbox``).
_CLASS_OF: Mapping[str, tuple[str, ...]] = {
    "Newexten": ("dialplan",),
    "VarSet": ("dialplan",),
}


#: What a header filter's values may hold: a priority, a CEL event name.
#: Anything else would need escaping in a regex and in manager.conf.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_]+")
#: What an AMI event's name holds (``AOC-D`` has the only hyphen of the catalog).
_EVENT_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class HeaderFilter:
    """Only the ``event`` events whose ``header`` is exactly one of ``values``.

    An advanced filter (Asterisk 22.1+): ``name()`` selects the event by its
    hash, ``header()`` confines the match to that header's value, so Asterisk
    checks one short string, not the event's text.
    """

    event: str
    header: str
    values: frozenset[str]

    def __post_init__(self) -> None:
        if not self.values or not all(_PLAIN_VALUE.fullmatch(v) for v in self.values):
            raise ValueError(f"header filter values must be letters, digits or _: {self.values}")

    @property
    def criteria(self) -> str:
        """The ``MatchCriteria`` of the Filter action (and of the manager.conf line)."""
        method = "exact" if len(self.values) == 1 else "regex"
        return f"action(include),name({self.event}),header({self.header}),method({method})"

    @property
    def expression(self) -> str:
        """The match expression: the value itself, or ``^(a|b)$``."""
        if len(self.values) == 1:
            return next(iter(self.values))
        return "^(" + "|".join(sorted(self.values)) + ")$"


#: One include filter of a session: an event name (all of its events), or a
#: header filter (some of them).
FilterKey = str | HeaderFilter


@dataclass(frozen=True, slots=True)
class EventSelection:
    """The events one session should get: exact ``names`` and the ``classes`` they are in.

    ``None`` means no restriction: every event, every class the user may read.
    ``narrowed``: of the named events, those wanted only in part, each with
    the header filters that say which (its event is among ``names``; an
    event passes when any of its filters lets it).
    """

    names: frozenset[str] | None
    classes: frozenset[str] | None
    narrowed: frozenset[HeaderFilter] = frozenset()

    @property
    def everything(self) -> bool:
        return self.names is None and self.classes is None

    @property
    def mask(self) -> str:
        """The ``Events:`` value of Login and of the ``Events`` action."""
        if self.classes is None:
            return "on"
        return ",".join(sorted(self.classes)) if self.classes else "off"

    def login_fields(self) -> tuple[tuple[str, str], ...]:
        """Headers to add to ``Login`` (none for every event: Asterisk's default)."""
        return () if self.classes is None else (("Events", self.mask),)

    def wants(self, name: str) -> bool:
        return self.names is None or name in self.names

    def include_filters(self) -> tuple[FilterKey, ...]:
        """The session's include filters, sorted by event name: a name, or its
        header filter where the event is narrowed. A name no Asterisk event
        has (a plugin's answer with a bracket or a line break) gets none: it
        would match nothing, and in a filter or a manager.conf line it would
        end the criteria early or start a line of its own."""
        if self.names is None:
            return ()
        by_event: dict[str, list[HeaderFilter]] = {}
        for found in sorted(self.narrowed, key=lambda f: (f.event, f.header, sorted(f.values))):
            if found.event in self.names:
                by_event.setdefault(found.event, []).append(found)
        keys: list[FilterKey] = []
        for name in sorted(self.names):
            if _EVENT_NAME.fullmatch(name):
                # Several header filters of one event: it passes any of them.
                keys.extend(by_event.get(name) or (name,))
        return tuple(keys)

    def manager_conf_lines(self) -> list[str]:
        """The same filters as manager.conf ``eventfilter`` lines for the user."""
        return [_conf_line(key) for key in self.include_filters()]


def _conf_line(key: FilterKey) -> str:
    if isinstance(key, HeaderFilter):
        return f"eventfilter({key.criteria})={key.expression}"
    return f"eventfilter(action(include),name({key}))="


#: No restriction (``[asterisk] events = "all"``, or someone wants everything).
EVERYTHING = EventSelection(None, None)


#: The classes Asterisk's ``Events`` mask knows (manager.c ``perms[]``). A
#: name it does not know is silently dropped, and a mask of only unknown
#: names is "off": no events at all.
MASK_CLASSES: frozenset[str] = frozenset(
    "system call log verbose command agent user config dtmf reporting cdr dialplan "
    "originate agi cc aoc test security message".split()
)


def class_of(name: str, events: Mapping[str, Iterable[str]]) -> tuple[str, ...] | None:
    """The classes an event is sent under, or None when unknown (then every class)."""
    known = _CLASS_OF.get(name)
    if known is not None:
        return known
    classes = tuple(events.get(name) or ())
    if not classes or not set(classes) <= MASK_CLASSES:
        return None
    return classes


def _expand(pattern: str, known: Iterable[str]) -> set[str] | None:
    """A rule's event name or glob as names; None when it cannot be listed."""
    if not any(ch in pattern for ch in "*?["):
        return {pattern}
    if pattern.strip("*") == "":
        return None  # every event, also those no catalog lists
    matched = {name for name in known if fnmatch.fnmatchcase(name, pattern)}
    return matched or None


def select_events(
    *,
    rule_patterns: Iterable[str] = (),
    plugins: Iterable[Iterable[str] | None] = (),
    core: Iterable[str] = CORE_EVENTS,
    catalog: Mapping[str, Iterable[str]] | None = None,
) -> EventSelection:
    """The events to ask Asterisk for.

    ``rule_patterns`` are the ``on: event`` names and globs of the loaded
    rules (a glob becomes the catalog's names it matches); ``plugins`` holds
    each plugin's answer (None: that plugin wants every event, and so the
    session gets every event); ``core`` the engine's own; ``catalog`` maps
    event names to their classes (default: :mod:`router.ami.catalog`).
    An event whose class is unknown lets every class through, never loses it.
    """
    if catalog is None:
        catalog = _catalog_classes()
    names: set[str] = set(core)
    for pattern in rule_patterns:
        found = _expand(pattern, catalog)
        if found is None:
            return EVERYTHING
        names |= found
    for answer in plugins:
        if answer is None:
            return EVERYTHING
        for pattern in answer:
            found = _expand(pattern, catalog)
            if found is None:
                return EVERYTHING
            names |= found
    classes: set[str] = set()
    for name in names:
        found_classes = class_of(name, catalog)
        if found_classes is None:
            return EventSelection(frozenset(names), None)
        classes.update(found_classes)
    return EventSelection(frozenset(names), frozenset(classes))


def plan_filters(
    want: frozenset[str] | None,
    added: frozenset[FilterKey] | None,
    narrowed: frozenset[HeaderFilter] = frozenset(),
) -> tuple[tuple[Action, ...], frozenset[FilterKey] | None]:
    """The ``Filter`` actions that bring a session as close to ``want`` as Asterisk allows.

    ``added`` is what the session has: its include filters (empty: none, so
    every event passes), or None once every event passes for good (a
    match-all filter, or filters refused). ``narrowed``: header filters for
    some of ``want``'s names (:class:`EventSelection`). Returns the actions
    and the session's filters after them. Filters only add: a session with
    include filters can be widened (more names, a header filter's event in
    full, or a match-all filter for ``want`` None) but not narrowed; what it
    no longer needs still arrives until the next login, and the engine's own
    dispatch ignores it.
    """
    if want is None:
        if added:
            return (match_all_filter(),), None
        return (), added
    if added is None:
        return (), None
    missing = [
        key
        for key in EventSelection(want, None, narrowed).include_filters()
        if not _covered(key, added)
    ]
    return tuple(_include(key) for key in missing), added | frozenset(missing)


def _covered(key: FilterKey, added: frozenset[FilterKey]) -> bool:
    """Does the session already let through every event ``key`` would?"""
    if key in added:
        return True
    if not isinstance(key, HeaderFilter):
        return False
    return key.event in added or any(
        isinstance(have, HeaderFilter)
        and (have.event, have.header) == (key.event, key.header)
        and key.values <= have.values
        for have in added
    )


async def add_filters(
    send: Callable[[Action], Awaitable[ActionResult]],
    selection: EventSelection,
    added: frozenset[FilterKey] | None,
    username: str,
    log: logging.Logger,
) -> tuple[frozenset[FilterKey] | None, bool]:
    """Send :func:`plan_filters`' actions through ``send`` (the client's own, over
    AJAM or TCP; it gives each its ActionID); the session's filters after them,
    and whether Asterisk refused ``Filter`` for lack of ``write = system``.
    ``log`` is the client's, so the lines name the transport that wrote them.

    A refusal part-way lets every event through rather than lose one the
    filters already added would have dropped.
    """
    actions, after = plan_filters(selection.names, added, selection.narrowed)
    added_any = bool(added)
    for action in actions:
        result = await send(action)
        if result.response.ok:
            added_any = True
            continue
        forbidden = filter_refused(result.response)
        if forbidden:
            # Not "event names are not filtered": the user's eventfilter lines
            # in manager.conf may filter them, which this session cannot see.
            log.info(
                "callrouter does not filter event names itself: the Filter action "
                "needs write = system for %r; the class mask %r applies, and the "
                "user's eventfilter lines in manager.conf if it has any (`callrouter "
                "check --manager-conf-file /etc/asterisk/manager.conf`, or the one in "
                "Asterisk's configuration directory, compares them with the events "
                "callrouter needs; docs/asterisk.md)",
                username,
                selection.mask,
            )
        else:
            log.warning("Asterisk refused an event filter: %s", result.response.message)
        if added_any:
            await send(match_all_filter())
        return None, forbidden
    return after, False


def _include(key: FilterKey) -> Action:
    if isinstance(key, HeaderFilter):
        return Action(
            "Filter",
            (("Operation", "Add"), ("MatchCriteria", key.criteria), ("Filter", key.expression)),
        )
    # Advanced filter (Asterisk 22.1+): the event's name only. An empty
    # Filter is required with method none; a non-empty one would be refused.
    return Action(
        "Filter",
        (("Operation", "Add"), ("MatchCriteria", f"action(include),name({key})"), ("Filter", "")),
    )


def match_all_filter() -> Action:
    """An include filter every event matches (a legacy regex on the event's
    text): how a filtered session is opened up again without a new login."""
    return Action("Filter", (("Operation", "Add"), ("Filter", "Event:")))


def filter_refused(response: Response) -> bool:
    """True when Asterisk refused a ``Filter`` for lack of ``write = system``."""
    return not response.ok and (response.message or "").lower() == "permission denied"


def _catalog_classes() -> Mapping[str, tuple[str, ...]]:
    from router.ami.catalog import load_catalog

    return {name: spec.classes for name, spec in load_catalog().events.items()}
