"""The audit lines of refused requests (401), bounded per client address (issue 16).

So are those of the other refusals a client can send in a loop: every 4xx
answered to a request no token was accepted for (a path that does not
exist, 404, needs no token: a scanner's loop wrote a line per request, 1,400
a second), and every 429 (a token over its rate: past the rate, by
definition); the summary names their statuses (``api 300 more 401s, 404s
from ...``). A request a token was accepted for is audited whole.

Every API request writes one audit line (router/api/app.py). A request
without credentials, or with bad ones, is answered 401 before any token's
rate limit applies, so a client sending them in a loop (a scanner, a
misconfigured 1C with an old token) wrote a line per request: the audit log,
and the disk under it, grew as fast as the client could send. Here at most
:data:`BURST` lines of 401 per client address are written in each
:data:`WINDOW` seconds; the rest of that window is counted and said in one
line when it ends: ``api 245 more 401s from 10.0.0.9 in 1 s, not written one
by one``. Authenticated requests are audited whole, as before, and the
``callrouter_api_requests_total`` metric counts every request, 401s included.

The addresses followed are bounded (:data:`MAX_CLIENTS`): past that many in
one window (a flood from many addresses), the one followed longest is
dropped, its count said first, so memory stays bounded and no refusal goes
unsaid. A window's summary is written when it ends, by a timer (one at a
time, armed only while some window owes a summary), or by the first audited
request after it ended, whichever comes first: a flood that stopped, with no
request after it, was never summed up before. A window cut short (its address
dropped for a newer one, the API's stop) says the seconds it really lasted
(``in 0.3 s``, ``in under 0.1 s``), not the window's length.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["BURST", "MAX_CLIENTS", "WINDOW", "Refusals"]

#: 401 lines written per client address in one window.
BURST: Final = 5
#: The window's length, seconds.
WINDOW: Final = 1.0
#: Client addresses followed at once.
MAX_CLIENTS: Final = 1024


@dataclass(slots=True)
class _Window:
    started: float
    written: int = 1
    unwritten: int = 0
    #: The statuses of the refusals not written, and how many of each.
    statuses: dict[int, int] = field(default_factory=dict)


class Refusals:
    """Says which 401s get their audit line, and writes the summaries of the rest."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = BURST,
        window: float = WINDOW,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.burst = burst
        self.window = window
        self.max_clients = max_clients
        #: Monotonic seconds; a test sets its own.
        self.clock = clock
        #: Address -> its current window, oldest window first (a window ends
        #: where it began plus ``window``: the first ones end first).
        self._clients: OrderedDict[str, _Window] = OrderedDict()
        #: Fires when the oldest window owing a summary ends (None: none owes one).
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._clients)

    def tick(self) -> None:
        """Close the windows that have ended, saying what each left unwritten."""
        now = self.clock()
        while self._clients:
            address, current = next(iter(self._clients.items()))
            if now - current.started < self.window:
                break
            del self._clients[address]
            self._summary(address, current)

    def admit(self, address: str, status: int = 401) -> bool:
        """A refusal (``status``, 401 and the others the audit bounds) for
        ``address``: should its audit line be written?"""
        self.tick()
        current = self._clients.get(address)
        if current is None:
            while len(self._clients) >= self.max_clients:
                oldest, dropped = self._clients.popitem(last=False)
                self._summary(oldest, dropped, cut=True)
            self._clients[address] = _Window(self.clock())
            return True
        if current.written < self.burst:
            current.written += 1
            return True
        current.unwritten += 1
        current.statuses[status] = current.statuses.get(status, 0) + 1
        if self._timer is None:
            self._arm()
        return False

    def _arm(self) -> None:
        """Wake when the oldest window owing a summary ends (outside a loop,
        as in a test driving the clock, the next request says it)."""
        owing = next((w for w in self._clients.values() if w.unwritten), None)
        if owing is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, owing.started + self.window - self.clock())
        self._timer = loop.call_later(delay, self._ring)

    def _ring(self) -> None:
        self._timer = None
        self.tick()
        self._arm()

    def close(self) -> None:
        """Say every summary still owed, windows ended or not (the API's stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._clients:
            self._summary(*self._clients.popitem(last=False), cut=True)

    def _summary(self, address: str, ended: _Window, *, cut: bool = False) -> None:
        """Say what ``ended`` left unwritten; ``cut``: the window did not run
        its length (dropped, or the stop), so the seconds it lasted are said."""
        if not ended.unwritten:
            return
        if cut:
            lasted = min(self.window, max(0.0, self.clock() - ended.started))
            span = "under 0.1" if lasted < 0.1 else f"{round(lasted, 1):g}"
        else:
            span = f"{self.window:g}"
        self._log.info(
            "api %d more %s from %s in %s s, not written one by one",
            ended.unwritten,
            ", ".join(f"{status}s" for status in sorted(ended.statuses)),
            address,
            span,
        )
