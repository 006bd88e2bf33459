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


def statements_on_this_thread(queue: HistoryQueue) -> list[str]:
    """The SQL statements ``queue`` runs on the calling thread from now on."""
    here = threading.get_ident()
    seen: list[str] = []

    def traced(statement: str) -> None:
        if threading.get_ident() == here:
            seen.append(statement)

    queue._db.set_trace_callback(traced)
    return seen
