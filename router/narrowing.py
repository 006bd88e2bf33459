"""Which AMI events the engine reads, and how few of them it parses (issue 16).

Asterisk sends a session every event of the classes it logs in with. The
engine needs a dozen names, and of some names only a few: a call makes a
``Newexten`` per dialplan step and the engine reads two of them. From the
loaded rules, the plugins' answers, the call life and the HTTP API this works
out, each time they change (start, reload):

- the *selection*: the names and classes to ask Asterisk for, with the exact
  header filters Asterisk applies itself (router/ami/event_filter.py:
  ``Events:`` at login, the ``Filter`` action over TCP, and the
  ``eventfilter`` lines ``callrouter check --manager-conf`` prints);
- the *narrowers*: for the names read only in part, the test on an event's
  raw text that says, before it is parsed, whether it is read at all
  (router.ami.protocol ``Narrower``; the client drops the rest unparsed).

Both sides keep what they cannot judge: a narrower keeps an event whose header
is missing or spelled otherwise, and each header filter lets through at least
what the narrower parses. Anyone who reads more of a name (a rule's ``on:
event``, a plugin's ``callrouter_wanted_events``, and for the channel events
the HTTP API) turns its narrowing off; ``[asterisk] events = "all"`` turns
off all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from router.ami.event_filter import (
    API_EVENTS,
    CORE_EVENTS,
    EVERYTHING,
    EventSelection,
    HeaderFilter,
    select_events,
)
from router.ami.protocol import Narrower, raw_header
from router.calllife.fold import FOLDED
from router.calllife.service import DIAL_RINGING, LIVE_EVENTS, RINGING_STATE
from router.calls import ANSWERED_STATE
from router.dialplan import PARK_APPLICATIONS

if TYPE_CHECKING:
    from router.config import Config
    from router.executor import Confirmations
    from router.parking import Parking
    from router.plugins import Plugins
    from router.rules.ruleset import RuleSet

__all__ = ["Narrowing"]


class Narrowing:
    """The engine's event selection and narrowers, from what it and its
    plugins, rules and API read (the module's docstring says how)."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins,
        rules: Callable[[], RuleSet],
        *,
        parking: Parking,
        confirmations: Confirmations,
        inbound_context: str,
    ) -> None:
        self._config = config
        self._plugins = plugins
        #: The rule set in force (a reload swaps it).
        self._rules = rules
        self._parking = parking
        self._confirmations = confirmations
        self._inbound_context = inbound_context

    async def selection(self) -> EventSelection:
        """The AMI events to ask Asterisk for: the engine's own, the rules'
        (``on: event``, ``VarSet`` when a rule reads ``call.vars``) and the
        plugins' (router/ami/event_filter.py; ``[asterisk] events``)."""
        # Asked in either mode: the answers also say which events each
        # plugin's callrouter_event is called for (Plugins.event).
        wanted = await self._plugins.wanted_events()
        if self._config.asterisk.events == "all":
            return EVERYTHING
        core = set(CORE_EVENTS)
        if self._plugins.reads_call_events():
            core |= LIVE_EVENTS  # the call life: CEL and the ringing signs
        if self._config.api is not None:
            core |= API_EVENTS
        current = self._rules()
        if current.reads_call_vars:
            core.add("VarSet")
        selection = select_events(rule_patterns=current.event_patterns, plugins=wanted, core=core)
        if selection.names is None:
            return selection
        narrowed = self._header_filters(self._narrowed(wanted))
        # Only of the events asked for: without a call life listener, no CEL.
        return replace(
            selection, narrowed=frozenset(f for f in narrowed if f.event in selection.names)
        )

    async def narrowers(self) -> dict[str, Narrower]:
        """Events the engine reads only a few of, and the test that picks them
        from an event's raw text before it is parsed (router.ami.protocol
        ``RawmanParser.narrow``).

        ``Newexten``: a call makes one per dialplan step (ten in the shipped
        inbound context and its target), and the engine needs two of them: the
        step into the inbound context (the prefetch trigger) and the landing of
        a Redirect (its confirmation). ``CEL``: the call life folds eight kinds of
        record (router/calllife/fold.py ``FOLDED``); the others (``CHAN_END``,
        ``BRIDGE_EXIT``, ``APP_*``...: a third of an answered call's) change nothing.
        ``Newstate``: the tracker needs only a leg answering (``Up``), and a
        call life listener a leg ringing (``Ringing``); the others (``Ring``,
        ``Dialing``, ``Down``...) come with every leg, some in the request's
        own read, where each one handled delays the Redirect. ``DialState``
        (asked for only for a call life listener): ``RINGING``, not the
        ``PROGRESS`` and ``PROCEEDING`` a trunk sends. The rest are dropped
        unparsed, unless a rule, a plugin or (for ``Newexten``, ``Newstate``
        and ``DialState``) the HTTP API reads them too, or ``[asterisk] events
        = "all"`` asks for everything.
        """
        narrowed = self._narrowed(await self._plugins.wanted_events())
        narrow: dict[str, Narrower] = {}
        if "Newexten" in narrowed:
            narrow["Newexten"] = self._needs_newexten
            # Not narrowed, noted: a request's channel, so that its Wait
            # step, often in the same read, is parsed (router/parking.py).
            narrow["UserEvent"] = self._parking.note_raw
        if "CEL" in narrowed:
            narrow["CEL"] = _folded_cel
        if "Newstate" in narrowed:
            ringing = RINGING_STATE in self._watched_states()
            narrow["Newstate"] = _answered_or_ringing if ringing else _answered_state
        if "DialState" in narrowed:
            narrow["DialState"] = _dial_ringing
        return narrow

    def _narrowed(self, wanted: list[Iterable[str] | None]) -> frozenset[str]:
        """The events the engine reads only a few of (:meth:`narrowers`),
        given the plugins' answers (Plugins.wanted_events)."""
        if self._config.asterisk.events == "all":
            return frozenset()
        others = select_events(rule_patterns=self._rules().event_patterns, plugins=wanted, core=())
        if others.names is None:
            return frozenset()
        # Case apart: the catalog documents ``NewExten``, Asterisk sends ``Newexten``.
        read = {name.lower() for name in others.names}
        api = self._config.api is not None
        narrowed = set()
        if "newexten" not in read and not api:
            narrowed.add("Newexten")
        if "cel" not in read:
            narrowed.add("CEL")
        if "newstate" not in read and not api:
            # Only the tracker reads it then, to see a leg answer, and the
            # call life, to see one ring (_watched_states).
            narrowed.add("Newstate")
        if "dialstate" not in read and not api:
            # Only the call life reads it then (asked for only for it): a leg
            # ringing (DialStatus RINGING, not PROGRESS or PROCEEDING).
            narrowed.add("DialState")
        return frozenset(narrowed)

    def _watched_states(self) -> frozenset[str]:
        """The ``Newstate`` states the engine reads when nothing else reads
        them: a leg answering (the tracker) and, with a call life listener,
        a leg ringing (its ringing sign, router/calllife/service.py)."""
        if self._plugins.reads_call_events():
            return frozenset({ANSWERED_STATE, RINGING_STATE})
        return frozenset({ANSWERED_STATE})

    def _header_filters(self, narrowed: frozenset[str]) -> frozenset[HeaderFilter]:
        """What Asterisk itself can drop of the narrowed events: a ``Newexten``
        at a priority no call enters a context at, a CEL record the call life
        does not fold, a ``Newstate`` other than a leg answering (or ringing,
        for a call life listener), a ``DialState`` other than ``RINGING``.
        Each filter keeps at least what :meth:`narrowers` parses (a
        Redirect's landing is at the priority its rule names)."""
        filters = set()
        if "Newexten" in narrowed:
            priorities = self._rules().landing_priorities()
            if priorities is not None:  # None: a rule's priority is a template
                filters.add(HeaderFilter("Newexten", "Priority", priorities | {"1"}))
                # And the Wait step after a request, which a Redirect waits
                # for (router/parking.py).
                # One exact filter per application, not one regular expression:
                # Asterisk checks every Newexten against it (bench/ANALYSIS.md).
                filters.update(
                    HeaderFilter("Newexten", "Application", frozenset({app}))
                    for app in PARK_APPLICATIONS
                )
        if "CEL" in narrowed:
            filters.add(HeaderFilter("CEL", "EventName", FOLDED))
        if "Newstate" in narrowed:
            # One exact filter per state, as for Newexten's applications.
            filters.update(
                HeaderFilter("Newstate", "ChannelStateDesc", frozenset({state}))
                for state in self._watched_states()
            )
        if "DialState" in narrowed:
            filters.add(HeaderFilter("DialState", "DialStatus", frozenset({DIAL_RINGING})))
        return frozenset(filters)

    def _needs_newexten(self, block: str) -> bool:
        """A ``Newexten`` the engine reads (:meth:`narrowers`); one it
        cannot judge (a header missing or spelled otherwise) is kept."""
        confirmations = self._confirmations
        parking = self._parking
        if confirmations.waiting or parking.watching:
            channel = raw_header(block, "Channel")
            if channel is None or confirmations.awaits(channel):
                return True
            if parking.expects(channel):
                parking.stepped_raw(block)  # known from here on; its later steps dropped
                return True
        priority = raw_header(block, "Priority")
        if priority is None or priority == "1":
            context = raw_header(block, "Context")
            return context is None or context == self._inbound_context
        return False


def _answered_state(block: str) -> bool:
    """A ``Newstate`` the tracker reads: a leg answering (one it cannot judge is kept)."""
    state = raw_header(block, "ChannelStateDesc")
    return state is None or state == ANSWERED_STATE


def _answered_or_ringing(block: str) -> bool:
    """A ``Newstate`` the tracker or the call life reads: a leg answering or
    ringing (one it cannot judge is kept)."""
    state = raw_header(block, "ChannelStateDesc")
    return state is None or state in (ANSWERED_STATE, RINGING_STATE)


def _dial_ringing(block: str) -> bool:
    """A ``DialState`` the call life reads: a leg ringing (one it cannot judge is kept)."""
    status = raw_header(block, "DialStatus")
    return status is None or status == DIAL_RINGING


def _folded_cel(block: str) -> bool:
    """A CEL record the call life folds (:meth:`Narrowing.narrowers`); one
    without an ``EventName`` it can find is kept, for the fold to judge."""
    name = raw_header(block, "EventName")
    return name is None or name in FOLDED
