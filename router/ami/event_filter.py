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

Filters can be added to a session but never removed, so a selection that
narrows takes effect at the next login; one that widens is applied at once
(:func:`plan_filters`). Like the rest of ``router/ami``
this module does no I/O: the clients send what it builds.
"""

from __future__ import annotations

import fnmatch
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
#: (``Newexten``) and the prefetch trigger (``Newchannel``/``Newexten`` in the
#: inbound context). Reconcile reads ``CoreShowChannels``' list, which is an
#: action's answer and never filtered.
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
        "Shutdown",
    }
)

#: The HTTP API when ``[api]`` is on: the event feed (router.api.intake),
#: click-to-call progress (router.api.calls) and forwarding's re-apply after
#: a reload (router.api.forwarding).
API_EVENTS: frozenset[str] = frozenset(
    {
        "AttendedTransfer",
        "BlindTransfer",
        "BridgeEnter",
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


@dataclass(frozen=True, slots=True)
class EventSelection:
    """The events one session should get: exact ``names`` and the ``classes`` they are in.

    ``None`` means no restriction: every event, every class the user may read.
    """

    names: frozenset[str] | None
    classes: frozenset[str] | None

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

    def manager_conf_lines(self) -> list[str]:
        """The same name filters as manager.conf ``eventfilter`` lines for the user."""
        if self.names is None:
            return []
        return [f"eventfilter(action(include),name({name}))=" for name in sorted(self.names)]


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
    want: frozenset[str] | None, added: frozenset[str] | None
) -> tuple[tuple[Action, ...], frozenset[str] | None]:
    """The ``Filter`` actions that bring a session as close to ``want`` as Asterisk allows.

    ``added`` is what the session has: the names of its include filters
    (empty: none, so every event passes), or None once every name passes
    for good (a match-all filter, or filters refused). Returns the actions
    and the session's filters after them. Filters only add: a session with
    include filters can be widened (more names, or a match-all filter for
    ``want`` None) but not narrowed; the names it no longer needs still
    arrive until the next login, and the engine's own dispatch ignores them.
    """
    if want is None:
        if added:
            return (match_all_filter(),), None
        return (), added
    if added is None:
        return (), None
    missing = want - added
    return tuple(_include(name) for name in sorted(missing)), added | missing


async def add_filters(
    send: Callable[[Action], Awaitable[ActionResult]],
    selection: EventSelection,
    added: frozenset[str] | None,
    username: str,
    log: logging.Logger,
) -> tuple[frozenset[str] | None, bool]:
    """Send :func:`plan_filters`' actions through ``send`` (the client's own, over
    AJAM or TCP; it gives each its ActionID); the session's filters after them,
    and whether Asterisk refused ``Filter`` for lack of ``write = system``.
    ``log`` is the client's, so the lines name the transport that wrote them.

    A refusal part-way lets every event through rather than lose one the
    filters already added would have dropped.
    """
    actions, after = plan_filters(selection.names, added)
    added_any = bool(added)
    for action in actions:
        result = await send(action)
        if result.response.ok:
            added_any = True
            continue
        forbidden = filter_refused(result.response)
        if forbidden:
            log.info(
                "event names are not filtered: the Filter action needs write = system "
                "for %r; the class mask %r still applies (docs/asterisk.md)",
                username,
                selection.mask,
            )
        else:
            log.warning("Asterisk refused an event filter: %s", result.response.message)
        if added_any:
            await send(match_all_filter())
        return None, forbidden
    return after, False


def _include(name: str) -> Action:
    # Advanced filter (Asterisk 22.1+): the event's name only. An empty
    # Filter is required with method none; a non-empty one would be refused.
    return Action(
        "Filter",
        (("Operation", "Add"), ("MatchCriteria", f"action(include),name({name})"), ("Filter", "")),
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
