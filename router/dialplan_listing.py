"""The dialplan as callrouter last read it, kept honest between two audits.

Rule evaluation rejects a rule whose ``redirect`` goes to an extension the
target context surely lacks (:func:`~router.dialplan.missing_target`), from
the dialplan audit's listing alone: nothing is asked of Asterisk while a
call waits. But Asterisk reports no ``dialplan reload``, so a listing can be
older than the dialplan, and an extension added since would send every call
to the next rule until the timed audit (300 s by default) read it again.

So each "surely missing" answer asks Asterisk about that one extension in
the background (``ShowDialPlan``, at most once per :data:`RECHECK_EVERY` per
extension, at most :data:`MAX_IN_FLIGHT` at once), and an extension Asterisk
has is known present from then on: only the calls routed during that round
trip take the next rule. The executor's own confirmation (it refuses a
decision only when Asterisk agrees) reads the listing quietly
(:attr:`DialplanListing.read`) and feeds what it learns back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any

from router.dialplan import KnownContext, shown

__all__ = [
    "MAX_FOUND",
    "MAX_IN_FLIGHT",
    "RECHECK_DELAY",
    "RECHECK_EVERY",
    "DialplanListing",
    "quiet",
]

log = logging.getLogger("router.dialplan")

#: Seconds before Asterisk is asked again about the same missing extension.
RECHECK_EVERY = 5.0
#: Background questions at once; more "missing" answers meanwhile ask nothing.
MAX_IN_FLIGHT = 4
#: Extensions learnt present per listing (a 1C answering a new name for
#: every call cannot grow it without bound); past it they are asked again.
MAX_FOUND = 1000
#: Seconds the background question waits, so that the call being routed
#: usually sends its own Redirect first (Asterisk runs one session's actions
#: in turn; a ShowDialPlan of one extension takes it well under a millisecond).
RECHECK_DELAY = 0.05
#: (context, extension) pairs remembered for the rate limit.
_MAX_ASKED = 4096

#: Asterisk's answer about one extension: True it has a numbered step there,
#: False it surely has none, None no answer (a timeout, no privilege).
Ask = Callable[[str, str], Awaitable[bool | None]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class _Watched:
    """One listed context whose "surely lacks" asks Asterisk again."""

    __slots__ = ("_known", "_listing", "_name", "found")

    def __init__(self, name: str, known: KnownContext, listing: DialplanListing) -> None:
        self._name = name
        self._known = known
        self._listing = listing
        #: Extensions Asterisk said it has since the listing was read.
        self.found: set[str] = set()

    @property
    def missing(self) -> bool:
        return self._known.missing

    def lacks(self, exten: str) -> bool:
        if not self.lacks_quietly(exten):
            return False
        self._listing.recheck(self._name, exten)
        return True

    def lacks_quietly(self, exten: str) -> bool:
        return exten not in self.found and self._known.lacks(exten)


class _Quiet:
    """A watched context judged without asking Asterisk again."""

    __slots__ = ("_watched",)

    def __init__(self, watched: _Watched) -> None:
        self._watched = watched

    @property
    def missing(self) -> bool:
        return self._watched.missing

    def lacks(self, exten: str) -> bool:
        return self._watched.lacks_quietly(exten)


class DialplanListing(Mapping[str, KnownContext]):
    """The audit's contexts (context name -> what it was read to hold), for
    rule evaluation; an empty one judges nothing."""

    def __init__(
        self,
        contexts: Mapping[str, KnownContext] | None = None,
        *,
        ask: Ask | None = None,
        spawn: Spawn | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._watched = {
            name: _Watched(name, known, self) for name, known in (contexts or {}).items()
        }
        #: The same, with what Asterisk said since, judged without asking it
        #: again (the executor's view: it asks Asterisk itself).
        self.read: Mapping[str, KnownContext] = {
            name: _Quiet(watched) for name, watched in self._watched.items()
        }
        self._ask = ask
        self._spawn = spawn
        self._clock = clock
        self._asked: dict[tuple[str, str], float] = {}
        self._in_flight = 0
        self._found = 0

    def __getitem__(self, context: str) -> KnownContext:
        return self._watched[context]

    def __iter__(self) -> Iterator[str]:
        return iter(self._watched)

    def __len__(self) -> int:
        return len(self._watched)

    def confirmed(self, context: str, exten: str) -> None:
        """Asterisk said it has ``exten`` in ``context``: judge it present."""
        watched = self._watched.get(context)
        if watched is not None and exten not in watched.found and self._found < MAX_FOUND:
            watched.found.add(exten)
            self._found += 1

    def recheck(self, context: str, exten: str) -> None:
        """Ask Asterisk about ``exten`` in the background, if allowed now."""
        if self._ask is None or self._spawn is None or self._in_flight >= MAX_IN_FLIGHT:
            return
        now = self._clock()
        key = (context, exten)
        if now < self._asked.get(key, -RECHECK_EVERY) + RECHECK_EVERY:
            return
        if len(self._asked) >= _MAX_ASKED:
            self._asked = {k: t for k, t in self._asked.items() if now < t + RECHECK_EVERY}
            if len(self._asked) >= _MAX_ASKED:
                return
        self._asked[key] = now
        self._in_flight += 1
        self._spawn(self._recheck(context, exten))

    async def _recheck(self, context: str, exten: str) -> None:
        ask = self._ask
        try:
            await asyncio.sleep(RECHECK_DELAY)
            present = None if ask is None else await ask(context, exten)
        finally:
            self._in_flight -= 1
        if present:
            log.info(
                "dialplan: exten %s of context %s is there now (added since the last "
                "look at the dialplan): rules redirecting there route again",
                shown(exten),
                shown(context),
            )
            self.confirmed(context, exten)


def quiet(listing: Mapping[str, KnownContext]) -> Mapping[str, KnownContext]:
    """``listing`` judged without asking Asterisk in the background."""
    return listing.read if isinstance(listing, DialplanListing) else listing
