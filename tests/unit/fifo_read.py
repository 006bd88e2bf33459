"""A read that must not block on a FIFO, run so that a test fails rather than hangs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


def without_blocking(read: Callable[[], object], fifo: Path, *, writing: bool = False) -> object:
    """What ``read`` returns or raises, failing the test if it blocks on ``fifo``
    (``writing``: blocks opening it to write, freed by opening its read end)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(read())
        except BaseException as exc:  # the outcome under test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        if writing:  # let the blocked writer go before failing
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        else:
            with open(fifo, "wb"):  # let the blocked read end before failing
                pass
        thread.join(5)
        pytest.fail(f"{'writing' if writing else 'reading'} {fifo.name} blocked on the FIFO")
    return outcome[0]
