"""The live page's session key and sign-outs, kept in ``[router] state_dir`` (issue 16).

The page's cookies are signed with a key (:class:`router.api.session.Sessions`).
Kept only in memory, every restart of callrouter (a change of router.toml needs
one; an upgrade) signed every operator out, and every open page reconnected
without a valid cookie, counted against its address's anonymous rate. So the
key is kept in ``state_dir/ui-sessions.json``, with the sessions signed out
(Sign out) that could still be valid: a cookie signed before a restart stays
valid after it, until its own expiry, and one signed out stays signed out.

The file is callrouter's alone: written whole under a temporary name (``O_EXCL
| O_NOFOLLOW``, 0600 whatever the umask) and renamed into place, read without
following a link (``O_NOFOLLOW``) and only when it is a regular file of
callrouter's user that nobody else may read or write (a copy of the key signs
cookies: with the token's hash, from router.toml, it makes one). Anything else
at its name refuses the start (:class:`router.errors.StateFileDenied`), the
file left as it is; a damaged file of ours (not this JSON, a key too short) is
set aside as ``ui-sessions.json.bad`` and a new key made: every session ends,
which is the safe side.

Removing the file while callrouter is stopped (``callrouter ui sign-out-all``
does it under the state folder's lock) signs every page out at the next start.
``callrouter state backup`` leaves it out: see :data:`FILE_NAME`.
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from router import jsonsafe
from router.aside import move_aside
from router.errors import StateFileDenied
from router.private_file import read_private, write_private

__all__ = ["FILE_NAME", "KEY_BYTES", "MAX_BYTES", "SessionState", "SessionStore"]

log = logging.getLogger("callrouter.api.ui")

#: The file in ``state_dir``. Not carried by ``callrouter state backup``: a
#: backup is kept longer and in more places than the state folder, and the key
#: in it would sign cookies for as long as it is kept; a session lives 12 hours
#: at most, so none is worth restoring (a restore signs every page out).
FILE_NAME: Final = "ui-sessions.json"
#: The key's length (HMAC-SHA256's block-size-free key: 32 random bytes).
KEY_BYTES: Final = 32
#: A file larger than this is not ours (a full one, 1000 sign-outs for each of
#: a few hundred tokens, is far smaller).
MAX_BYTES: Final = 4 * 1024 * 1024


@dataclass(slots=True)
class SessionState:
    """What the file holds: the key, and the sign-outs (see ``Sessions``)."""

    key: bytes
    #: Signed-out session ids by token name -> when they would end anyway.
    revoked: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Token name -> sessions issued up to this second are void.
    void_until: dict[str, int] = field(default_factory=dict)


class SessionStore:
    """``state_dir/ui-sessions.json``: :meth:`load` once at start, :meth:`save`
    at every sign-out (blocking: one small file)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def load(self) -> SessionState:
        """The kept state; a new key (written at once) when there is none, or
        the file was damaged (set aside). ``StateFileDenied`` when what is at
        the name is no file of ours: a link, a folder, another user's file, a
        file others may read or write."""
        try:
            raw = self._read()
        except FileNotFoundError:
            return self._fresh()
        try:
            return _parse(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            try:
                bad = move_aside(self.path, self.path.with_name(f"{FILE_NAME}.bad"))
            except OSError as moving:
                raise StateFileDenied(
                    errno.EIO,
                    f"{self.path}: the live page's session key is unreadable ({exc}) and "
                    f"cannot be set aside ({moving.strerror or moving}): move it away "
                    "(a new key is made at start; every page signs in again)",
                ) from None
            log.error(
                "live page: session key %s unreadable (%s): set aside as %s; a new key "
                "is made, every page signs in again",
                self.path,
                exc,
                bad,
            )
            return self._fresh()

    def save(self, state: SessionState) -> None:
        """Write ``state`` whole: a temporary file renamed over the last one."""
        data = {
            "version": 1,
            "key": state.key.hex(),
            "revoked": {name: dict(sorted(ids.items())) for name, ids in state.revoked.items()},
            "void_until": dict(state.void_until),
        }
        body = (json.dumps(data, sort_keys=True) + "\n").encode("ascii")
        write_private(self.path, body)

    def _fresh(self) -> SessionState:
        state = SessionState(secrets.token_bytes(KEY_BYTES))
        self.save(state)
        return state

    def _read(self) -> bytes:
        # At most one byte past the bound: _parse says it is too large.
        return read_private(
            self.path,
            MAX_BYTES,
            self._refused,
            "others may read or change the key that signs the page's cookies",
        )

    def _refused(self, what: str) -> StateFileDenied:
        return StateFileDenied(
            errno.EPERM,
            f"{self.path}: the live page's session key {what}; it is left as it is. "
            f"Remove it (every page signs in again), or make it callrouter's user's "
            f"with mode 0600 if it is the one callrouter made (chmod 600 {self.path}), "
            "and start again",
        )


def _parse(raw: bytes) -> SessionState:
    if len(raw) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    data = jsonsafe.loads(raw.decode("utf-8"))
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError("not a version 1 session file")
    text = data.get("key")
    if not isinstance(text, str):
        raise ValueError("no 'key'")
    key = bytes.fromhex(text)
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key is not {KEY_BYTES} bytes")
    revoked: dict[str, dict[str, int]] = {}
    table = data.get("revoked", {})
    if not isinstance(table, dict):
        raise ValueError("'revoked' is not a table")
    for name, ids in table.items():
        if not isinstance(ids, dict) or not all(
            isinstance(sid, str) and type(ends) is int for sid, ends in ids.items()
        ):
            raise ValueError(f"'revoked' of {name!r}: not session ids with times")
        revoked[name] = dict(ids)
    void = data.get("void_until", {})
    if not isinstance(void, dict) or not all(type(v) is int for v in void.values()):
        raise ValueError("'void_until' is not a table of times")
    return SessionState(key, revoked, dict(void))
