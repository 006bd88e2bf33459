"""Signed, short-lived links to one recording: HMAC-SHA256 over call id, part and expiry.

The link names the recording by call id and part, never by a path, and
carries ``expires`` (Unix seconds) and ``sig``. Verifying recomputes the MAC
and compares in constant time, so a tampered id, part, expiry or signature,
and an expired link, all fail the same way. The key is 32 random bytes from
``[recordings] key_file`` or generated into ``state_dir`` (0600) on first use:
rotating it (deleting the file) revokes every link handed out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from router.recordings.naming import check_call_id, check_part
from router.textfiles import FileTooBig, read_bounded

__all__ = ["KEY_NAME", "Signer", "load_key"]

KEY_NAME: Final = "recordings.key"
_MIN_KEY: Final = 16
#: Bytes of the key file read at most (a 64-digit key and a newline need 65).
_MAX_KEY_FILE: Final = 4096


def _read_key(path: Path, *, follow_symlinks: bool = True) -> str:
    """The key file's text, at most :data:`_MAX_KEY_FILE` bytes of ASCII; a ValueError
    naming the file for anything else (a UnicodeDecodeError named no file): a
    FIFO, folder or device at its name (the read would block, or never end), and
    a symbolic link when not ``follow_symlinks`` (issue 16)."""
    try:
        data = read_bounded(path, _MAX_KEY_FILE, follow_symlinks=follow_symlinks)
    except FileTooBig:
        raise ValueError(
            f"{path}: the recordings key file is longer than {_MAX_KEY_FILE} bytes"
        ) from None
    except OSError as exc:
        if exc.filename is not None:  # the system's own error names the file
            raise
        raise ValueError(f"{path}: the recordings key file {exc.strerror}") from None
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the recordings key must be hex (ASCII)") from None


def load_key(path: Path, *, create: bool = True, follow_symlinks: bool = True) -> bytes:
    """The signing key in ``path`` (hex), made 0600 on first use when ``create``.

    ``follow_symlinks=False`` for the key callrouter keeps in its ``state_dir``,
    where it never makes a link: one at its name is refused, not followed."""
    try:
        text = _read_key(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        if not create:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
        text = _read_key(path, follow_symlinks=follow_symlinks)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: the recordings key must be hex") from None
    if len(key) < _MIN_KEY:
        raise ValueError(f"{path}: the recordings key must be at least {_MIN_KEY} bytes")
    return key


@dataclass(frozen=True, slots=True)
class Signer:
    key: bytes = b""

    def signature(self, call_id: str, part: str, expires: int) -> str:
        message = f"{call_id}\n{part}\n{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def url(self, base: str, call_id: str, part: str, ttl: float, now: float | None = None) -> str:
        """``base``/api/v1/recordings/{call_id}/{part}?expires=..&sig=.."""
        check_call_id(call_id)
        check_part(part)
        expires = int((time.time() if now is None else now) + ttl)
        sig = self.signature(call_id, part, expires)
        return (
            f"{base.rstrip('/')}/api/v1/recordings/{quote(call_id)}/{part}"
            f"?expires={expires}&sig={sig}"
        )

    def verify(
        self, call_id: str, part: str, expires: str, sig: str, now: float | None = None
    ) -> bool:
        """True only for an untampered link that has not expired, in the exact
        spelling :meth:`url` gives it: ``expires`` without leading zeros and
        ``sig`` in lowercase hex (another spelling of the same values is refused,
        as a tampered link is)."""
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return False
        if expires != str(int(expires)):
            return False
        if not (sig.isascii() and len(sig) == 64):
            return False
        expected = self.signature(call_id, part, int(expires))
        if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
            return False
        return int(expires) > (time.time() if now is None else now)
