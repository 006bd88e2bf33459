"""DND and forwarding per extension: the file callrouter keeps, the globals Asterisk reads.

The shipped ``[callrouter-dial]`` reads two global variables per extension,
``CALLROUTER_DND_101`` and ``CALLROUTER_FWD_101`` (with ``CALLROUTER_FWDINT_101``
when the forward number is internal), set with AMI ``Setvar``
without a channel: the documented least-privilege manager user has
``write=call`` (enough for that) and no ``write=system`` (needed for AstDB's
``DBPut``). Globals do not survive an Asterisk restart, so this file in
``state_dir`` is the truth and the globals a copy callrouter re-applies after
every login and every stream gap. No I/O to Asterisk here: the API module
sends what :meth:`ForwardingState.globals_for` says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from router import dialplan, jsonsafe
from router.aside import denied_state_file, move_aside
from router.textfiles import read_bounded

__all__ = [
    "DND_PREFIX",
    "FWDINT_PREFIX",
    "FWD_PREFIX",
    "MAX_EXTENSIONS",
    "Forwarding",
    "ForwardingState",
    "is_forwardable_extension",
]

log = logging.getLogger("callrouter.api.forwarding")

#: The global variables the shipped dialplan reads (``${CALLROUTER_DND_${EXT}}``).
DND_PREFIX: Final = "CALLROUTER_DND_"
FWD_PREFIX: Final = "CALLROUTER_FWD_"
#: ``1`` when the forward number is an internal one: the dialplan dials it
#: through ``[callrouter-dial]``, not the outbound (trunk) context (the
#: dialplan lint looks for it there: router/dialplan_lint.py).
FWDINT_PREFIX: Final = dialplan.FWDINT_PREFIX
#: ``[callrouter-dial]`` filters the extension to letters and digits and dials
#: nothing else, so only such an extension can carry DND or forwarding (and
#: it is a safe variable name).
_EXTENSION: Final = re.compile(r"[A-Za-z0-9]{1,80}")
#: What a stored forward number may be: what the dialplan's FILTER keeps.
_NUMBER: Final = re.compile(r"[0-9]{1,40}")
#: A file larger than this is not ours: refused, not parsed.
_MAX_BYTES: Final = 4 * 1024 * 1024
#: Extensions that may carry a setting at once. Every change rewrites the
#: file and every gap sets two globals per extension again; and the file of
#: this many, at the longest names and numbers, stays well under _MAX_BYTES
#: (about 2.3 MB), so what was accepted is always read back at start.
MAX_EXTENSIONS: Final = 10_000
FILE_NAME: Final = "forwarding.json"


def is_forwardable_extension(extension: str) -> bool:
    """Can ``extension`` carry DND/forwarding (letters and digits, 1 to 80)?"""
    return _EXTENSION.fullmatch(extension) is not None


@dataclass(frozen=True, slots=True)
class Forwarding:
    """One extension's setting; ``forward_to`` holds the normalized number."""

    dnd: bool = False
    forward_to: str | None = None
    #: What the dialplan dials for the forward: the number behind the dial prefix.
    dial: str | None = None

    @property
    def empty(self) -> bool:
        return not self.dnd and self.forward_to is None

    def to_dict(self) -> dict[str, object]:
        return {"dnd": self.dnd, "forward_to": self.forward_to}


class ForwardingState:
    """The extensions' settings, persisted in ``state_dir/forwarding.json`` (0600).

    A damaged file is logged naming it and set aside (``.bad``; ``.bad-2``, ...
    when one is there already), never fatal: forwarding is a convenience,
    routing must start anyway. So is what is no file of ours at its name: a
    symbolic link (set aside itself, never followed), a FIFO or a folder, a
    file over 4 MiB. A file callrouter may not read (its owner or mode) is
    no damaged one: :class:`router.errors.StateFileDenied`, the file kept.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._items: dict[str, Forwarding] = {}
        self._load()

    def get(self, extension: str) -> Forwarding:
        return self._items.get(extension, Forwarding())

    def __iter__(self) -> Iterator[tuple[str, Forwarding]]:
        return iter(sorted(self._items.items()))

    def full_for(self, extension: str, value: Forwarding) -> bool:
        """Would storing ``value`` take an extension past :data:`MAX_EXTENSIONS`?"""
        return (
            not value.empty and extension not in self._items and len(self._items) >= MAX_EXTENSIONS
        )

    def set(self, extension: str, value: Forwarding) -> None:
        """Remember ``value`` for ``extension`` and write the file at once."""
        if not is_forwardable_extension(extension):
            raise ValueError(f"extension {extension!r} cannot carry forwarding")
        if value.dial is not None and _NUMBER.fullmatch(value.dial) is None:
            raise ValueError(f"forward number {value.dial!r} is not digits only")
        if self.full_for(extension, value):
            raise ValueError(f"{MAX_EXTENSIONS} extensions carry a setting already")
        if value.empty:
            self._items.pop(extension, None)
        else:
            self._items[extension] = value
        self._save()

    @staticmethod
    def globals_for(extension: str, value: Forwarding, *, internal: bool = False) -> dict[str, str]:
        """The globals to ``Setvar`` for ``extension`` (an empty value unsets one);
        ``internal``: the forward number is an extension of this PBX."""
        return {
            DND_PREFIX + extension: "1" if value.dnd else "",
            FWD_PREFIX + extension: value.dial or "",
            FWDINT_PREFIX + extension: "1" if internal and value.dial else "",
        }

    def _load(self) -> None:
        try:
            # No link followed, a regular file only (a FIFO blocked the start
            # for ever), at most _MAX_BYTES read (issue 16).
            raw = read_bounded(self.path, _MAX_BYTES, follow_symlinks=False)
            data = jsonsafe.loads(raw.decode("utf-8"))
            items = _parse(data)
        except FileNotFoundError:
            return
        except PermissionError as exc:
            # Its owner or mode, not its content: kept, and the start refused
            # (set aside, every setting vanished until put back by hand).
            raise denied_state_file(self.path, exc) from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            try:
                bad = move_aside(self.path, self.path.with_suffix(".json.bad"))
            except OSError as moving:
                log.error(
                    "forwarding state %s unreadable (%s), left in place: %s", self.path, exc, moving
                )
                return
            log.error("forwarding state %s unreadable (%s): set aside as %s", self.path, exc, bad)
            return
        self._items = items

    def _save(self) -> None:
        data = {
            "version": 1,
            "extensions": {
                ext: {"dnd": v.dnd, "forward_to": v.forward_to, "dial": v.dial}
                for ext, v in sorted(self._items.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".forwarding.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _parse(data: object) -> dict[str, Forwarding]:
    """The file's ``extensions`` table; ``ValueError`` naming the first bad entry."""
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError("not a version 1 forwarding file")
    table = data.get("extensions")
    if not isinstance(table, dict):
        raise ValueError("'extensions' is not a table")
    items: dict[str, Forwarding] = {}
    for ext, entry in table.items():
        if not is_forwardable_extension(ext) or not isinstance(entry, dict):
            raise ValueError(f"extension {ext!r}: not letters and digits with a table")
        dnd = entry.get("dnd", False)
        forward_to = entry.get("forward_to")
        dial = entry.get("dial")
        if not isinstance(dnd, bool):
            raise ValueError(f"extension {ext!r}: 'dnd' is not true or false")
        for key, value in (("forward_to", forward_to), ("dial", dial)):
            if value is not None and (not isinstance(value, str) or not _NUMBER.fullmatch(value)):
                raise ValueError(f"extension {ext!r}: {key!r} is not digits only")
        if (forward_to is None) != (dial is None):
            raise ValueError(f"extension {ext!r}: 'forward_to' and 'dial' go together")
        items[ext] = Forwarding(dnd, forward_to, dial)
    return items
