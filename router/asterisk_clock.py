"""How far Asterisk's wall clock is from this host's (``Router.clock_offset``).

A request's age is its ``Timestamp`` against now, and a listed channel's wait
its ``CALLROUTER_DEADLINE`` against now: both are on Asterisk's clock.
callrouter on another host whose clock is a few seconds ahead took every
request for late (each call to its default route); one behind took old
requests for new ones. The engine measures the difference at start and after
each gap from a ``Ping``, whose answer carries Asterisk's time to the
microsecond (whatever ``timestampevents`` says, and for any manager user).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from router.ami.numbers import ascii_float
from router.errors import AMIError

if TYPE_CHECKING:
    from router.ami.connect import AMIClient

__all__ = ["measure_offset"]

log = logging.getLogger("router.engine")

#: A Ping's answer holds Asterisk's time somewhere in its round trip, so the
#: difference is known to half the round trip. Up to this many Pings, the
#: quickest believed; one answered within ``QUICK`` s ends the measurement,
#: and so does ``BUDGET`` s spent (the reconcile waits for it); when even the
#: quickest took over ``SLOWEST`` s, nothing is learnt and the difference
#: known stays, unless it is off by more than that round trip (a host clock
#: stepped since: 3 hours off, against an answer good to 2 s).
PINGS = 3
QUICK = 0.02
BUDGET = 1.0
SLOWEST = 0.5


async def measure_offset(client: AMIClient, known: float) -> float:
    """The difference to use from now on (Asterisk's clock minus this host's).

    ``known`` is the one in use: it stays when nothing could be learnt (no
    answer, no ``Timestamp``, only slow answers). A difference within 0.1 s,
    or within half the round trip, counts as none. A change is logged: a
    WARNING naming the difference, or an INFO when the clocks agree again.
    """
    best: tuple[float, float] | None = None  # (round trip, difference)
    began = time.time()
    for _ in range(PINGS):
        sent = time.time()
        try:
            answer = await client.send("Ping", {}, validate=False)
        except AMIError:
            break  # the difference known stays (none: this host's clock, as before)
        received = time.time()
        value = ascii_float(answer.response.get("Timestamp"))
        if value is None:
            break
        trip = max(0.0, received - sent)
        if best is None or trip < best[0]:
            best = (trip, value - (sent + received) / 2)
        if trip <= QUICK or received - began >= BUDGET:
            break
    if best is None:
        return known
    trip, offset = best
    if trip > SLOWEST and abs(offset - known) <= trip:
        # A busy Asterisk or a slow network: an answer read at once and
        # delivered late looked like a clock half the round trip behind. (One
        # further off than the round trip itself says the known one is wrong.)
        log.info("Asterisk's clock not measured: its quickest Ping answer took %.1f s", trip)
        return known
    if abs(offset) <= max(0.1, trip / 2):
        offset = 0.0
    if abs(offset - known) <= 0.1 and (offset == 0.0) == (known == 0.0):
        return known
    if offset:
        log.warning(
            "Asterisk's clock is %.1f s %s this host's: callrouter reads the age "
            "of routing requests on Asterisk's clock and allows for the "
            "difference; keep both hosts' clocks in step (NTP)",
            abs(offset),
            "ahead of" if offset > 0 else "behind",
        )
    else:
        log.info("Asterisk's clock and this host's agree again")
    return offset
