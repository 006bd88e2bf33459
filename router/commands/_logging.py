"""One log format for every one-shot command (all but ``run``).

Without a handler of its own a command's log records went to Python's
last-resort handler, which prints the bare message: a client's WARNING
(``AMI connection to ... lost: ...``) reached the terminal with nothing saying
which program said it, unlike the command's own ``callrouter check: warning:``
lines. :func:`one_shot_logging` gives them that prefix, one line each,
without a traceback, and escapes control characters (a warning may quote a
peer: Asterisk, 1C, a caller's name). ``callrouter run`` sets up the
service's log itself (router/commands/run.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from router.logsafe import escape_controls

__all__ = ["OneLine", "one_shot_logging"]


class OneLine(logging.Formatter):
    """``callrouter events: warning: AMI connection to ... lost: ...``."""

    def __init__(self, command: str) -> None:
        super().__init__()
        self._prefix = f"callrouter {command}" if command else "callrouter"

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            summary = f"{type(error).__name__}: {error}"
            # A message that names the error already (a plugin's failure is
            # logged with ``%r`` of it, for ``run``'s log) says it once here.
            if summary not in text and repr(error) not in text:
                text += f" ({summary})"
        return f"{self._prefix}: {record.levelname.lower()}: {escape_controls(text)}"


@contextlib.contextmanager
def one_shot_logging(command: str) -> Iterator[None]:
    """WARNING and above on stderr as ``callrouter COMMAND: warning: ...``
    while the command runs (removed afterwards: ``main()`` may run again in
    one process, as the tests do)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(OneLine(command))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
