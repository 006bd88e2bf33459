"""What SQLite runs on the event loop's thread, read instead of timed.

SQLite waits for a lock held by another process inside a statement (up to
its busy timeout), so a statement on the loop's thread is what can stall the
loop. The tests of a locked history read that none runs there; ticks of the
loop timed against 0.5 s measured the host instead, and a loaded CI machine
stalls a loop for reasons of its own (issue 16).
"""

from __future__ import annotations

import threading

from callrouter_onec.history import HistoryQueue


def statements_on_this_thread(queue: HistoryQueue) -> tuple[list[str], list[str]]:
    """The SQL statements ``queue`` runs from now on: on the calling thread, and
    on any other. A test reads both: none here, and some elsewhere, which shows
    the trace watches the connection the queue writes with (an empty list alone
    also passes for a trace that sees nothing)."""
    here = threading.get_ident()
    seen: list[str] = []
    elsewhere: list[str] = []

    def traced(statement: str) -> None:
        (seen if threading.get_ident() == here else elsewhere).append(statement)

    queue._db.set_trace_callback(traced)
    return seen, elsewhere
