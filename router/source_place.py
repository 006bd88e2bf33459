"""Where a plugin's function is written, for the messages that name it.

A message about a plugin's mistake names the plugin, the hook or lookup, and
the file and line of the function, so the author opens the right file of an
installed package; the registration problems said it, and so do the warnings
and failures of a running engine (router.plugins, router.rules.evaluate).
"""

from __future__ import annotations

import contextlib
import inspect
import os

__all__ = ["defined_at"]


def defined_at(func: object) -> str:
    """``"; defined at FILE:LINE"`` of a plugin's function, for a message about it
    (the plugin's name alone did not say which file of an installed package to
    open), or "" when the source cannot be told (a builtin, a lambda's class).
    FILE is relative to the current folder when it is under it; never raises."""
    target = getattr(func, "__func__", func)
    try:
        path = inspect.getsourcefile(target)  # type: ignore[arg-type]
        line = target.__code__.co_firstlineno  # type: ignore[attr-defined]
    except (TypeError, AttributeError):
        return ""
    if not path:
        return ""
    # ValueError: another drive (Windows); OSError: the working folder was removed
    # under a running service (os.getcwd raises). The whole path is said then: this
    # runs while a plugin's mistake is reported, which must not fail in its turn.
    with contextlib.suppress(ValueError, OSError):
        shorter = os.path.relpath(path)
        if not shorter.startswith(".."):
            path = shorter
    return f"; defined at {path}:{line}"
