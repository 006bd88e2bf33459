"""What ``callrouter run`` would convert in the state folder, for ``check``.

``run`` converts a state file an earlier version left as it opens it (the
recordings catalog's added columns, the 1C plugin's history file from before
event ids) and says so in its log after the fact; ``check`` said nothing, so
an administrator upgrading learnt of it only once done, with no backup of the
file as it was (docs/operations.md, Upgrading). Read only: nothing is
converted, made or locked here (router/state_peek.py).
"""

from __future__ import annotations

import asyncio
import sqlite3

from router.commands._offline import Offline
from router.logsafe import escape_controls
from router.recordings.store import DB_NAME, catalog_conversions

__all__ = ["state_conversions"]


def state_conversions(offline: Offline) -> tuple[list[str], list[str]]:
    """(what ``run`` would convert at start, one line per file; the plugins'
    ``callrouter_state_conversions`` failures, errors for ``check``)."""
    state_dir = offline.config.router.state_dir
    lines: list[str] = []
    try:
        lines.extend(catalog_conversions(state_dir))
    except (OSError, sqlite3.Error) as exc:
        # run sets such a file aside or refuses to start naming it: not this look's.
        lines.append(
            f"{state_dir / DB_NAME}: cannot be read to say what callrouter run would "
            f"convert: {escape_controls(str(exc))}"
        )
    plugins = offline.plugins
    before = len(plugins.answer_failures)
    lines.extend(asyncio.run(plugins.state_conversions(state_dir)))
    return lines, plugins.answer_failures[before:]
