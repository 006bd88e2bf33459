"""``[recordings]`` of router.toml: where the PBX writes, what to make, how long to keep.

::

    [recordings]
    dir = "/var/spool/asterisk/monitor/callrouter"   # as Asterisk sees it
    local_dir = "/mnt/pbx/monitor/callrouter"        # as callrouter sees it (default: dir)
    format = "wav"                                   # what MixMonitor writes
    legs = "mix"                                     # mix | both | in | out
    max_duration = 14400                             # seconds; 0: no bound
    transcode = "off"                                # off | mp3 | opus
    mode = "push"                                    # push (upload to 1C) | pull (signed URL)
    public_url = "https://callrouter.example:8089"   # pull: the API as 1C reaches it
    after_delivery = "keep"                          # keep | delete | move
    max_bytes = 0                                    # 0: no bound

Plain data, read by :mod:`router.config` with the rest of the file (so
``callrouter check`` refuses the same mistakes as ``run``); it imports
nothing of the engine, the API or the plugins.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from router.dialplan import RECORD_PATH_CHARS
from router.errors import ConfigError
from router.recordings.naming import FORMATS, LEGS, FileName

__all__ = ["KEYS", "RecordingSettings", "read_recordings"]

KEYS: Final = (
    "dir",
    "local_dir",
    "format",
    "legs",
    "transcode",
    "transcode_timeout",
    "close_timeout",
    "max_duration",
    "mode",
    "public_url",
    "url_ttl",
    "key_file",
    "after_delivery",
    "move_to",
    "max_bytes",
    "max_age_days",
    "hard_cap_bytes",
)
TRANSCODE: Final = ("off", "mp3", "opus")
MODES: Final = ("push", "pull")
AFTER: Final = ("keep", "delete", "move")
_TB: Final = 1 << 50
#: The bounds of ``max_duration`` and ``url_ttl``, both included (docs/reference/config.md).
_MINUTE: Final = 60
_WEEK: Final = 7 * 86400


class Reader(Protocol):
    """What :func:`read_recordings` needs of :class:`router.config.SettingsReader`."""

    section: str
    values: Mapping[str, object]

    def error(self, key: str, message: str) -> ConfigError: ...

    def reject_unknown(self, known: Iterable[str]) -> None: ...

    def string(self, key: str, default: str | None = None, *, empty: bool = False) -> str: ...

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str: ...

    def number(
        self, key: str, default: float, low: float, high: float, *, allow_zero: bool = False
    ) -> float: ...

    def integer(self, key: str, default: int, low: int, high: int) -> int: ...

    def path(self, key: str, *, must_exist: bool = False) -> Path | None: ...


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """``[recordings]``, validated."""

    #: The folder MixMonitor writes to, as Asterisk sees it (absolute, POSIX).
    dir: str
    #: The same folder as callrouter sees it (same host, or a shared mount).
    local_dir: Path
    format: str = "wav"
    legs: str = "mix"
    transcode: str = "off"
    transcode_timeout: float = 120.0
    #: How long after the call's end the file may take to be complete.
    close_timeout: float = 30.0
    #: Seconds a recording may run before callrouter stops it (0: no bound).
    max_duration: float = 14400.0
    mode: str = "push"
    public_url: str | None = None
    url_ttl: float = 900.0
    key_file: Path | None = None
    after_delivery: str = "keep"
    move_to: Path | None = None
    max_bytes: int = 0
    max_age_days: float = 0.0
    hard_cap_bytes: int = 0

    def pbx_path(self, name: FileName) -> str:
        """Where Asterisk writes ``name``: what MixMonitor is told."""
        return posixpath.join(self.dir, str(name))

    def local_path(self, name: FileName) -> Path:
        """Where callrouter reads ``name``."""
        return self.local_dir / str(name)


def _seconds(reader: Reader, key: str, default: float, *, off: bool = False) -> float:
    """``key``: 60 to 604800 seconds, both included, or 0 when ``off`` (no bound)."""
    value = reader.values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise reader.error(key, f"expected a number of seconds, got {str(value)[:40]!r}")
    if not (_MINUTE <= value <= _WEEK or (off and value == 0)):
        zero = "0 (no bound) or " if off else ""
        raise reader.error(key, f"expected {zero}{_MINUTE} to {_WEEK} seconds, got {value:g}")
    return float(value)


def read_recordings(reader: Reader) -> RecordingSettings:
    """``[recordings]`` -> :class:`RecordingSettings`; a :class:`ConfigError` naming the key."""
    reader.reject_unknown(KEYS)
    pbx_dir = reader.string("dir")
    # The shipped dialplan's [callrouter-record] FILTERs the paths it is handed
    # to these characters and refuses '..': a folder it would change is refused here.
    if not pbx_dir.startswith("/") or ".." in pbx_dir or not set(pbx_dir) <= RECORD_PATH_CHARS:
        raise reader.error(
            "dir",
            "expected an absolute path of letters, digits and /._- without '..' "
            f"(what the dialplan's [callrouter-record] keeps), got {pbx_dir!r}",
        )
    pbx_dir = pbx_dir.rstrip("/") or "/"
    local = reader.path("local_dir") or Path(pbx_dir)
    fmt = reader.choice("format", FORMATS, "wav")
    legs = reader.choice("legs", tuple(LEGS), "mix")
    transcode = reader.choice("transcode", TRANSCODE, "off")
    mode = reader.choice("mode", MODES, "push")
    public_url = reader.string("public_url") if "public_url" in reader.values else None
    if public_url is not None:
        if not public_url.startswith(("http://", "https://")) or any(
            ch.isspace() or ch in "?#" for ch in public_url
        ):
            raise reader.error(
                "public_url", f"expected http(s)://host[:port][/prefix], got {public_url!r}"
            )
        public_url = public_url.rstrip("/")
    if mode == "pull" and public_url is None:
        raise reader.error(
            "public_url", 'required with mode = "pull" (the API\'s address as 1C reaches it)'
        )
    after = reader.choice("after_delivery", AFTER, "keep")
    move_to = reader.path("move_to")
    if after == "move" and move_to is None:
        raise reader.error("move_to", 'required with after_delivery = "move"')
    max_bytes = reader.integer("max_bytes", 0, 0, _TB)
    hard_cap = reader.integer("hard_cap_bytes", 0, 0, _TB)
    if hard_cap and max_bytes and hard_cap < max_bytes:
        raise reader.error(
            "hard_cap_bytes", f"must be 0 or at least max_bytes ({max_bytes}), got {hard_cap}"
        )
    return RecordingSettings(
        dir=pbx_dir,
        local_dir=local,
        format=fmt,
        legs=legs,
        transcode=transcode,
        transcode_timeout=reader.number("transcode_timeout", 120.0, 0, 3600),
        close_timeout=reader.number("close_timeout", 30.0, 0, 3600),
        max_duration=_seconds(reader, "max_duration", 14400.0, off=True),
        mode=mode,
        public_url=public_url,
        url_ttl=_seconds(reader, "url_ttl", 900.0),
        key_file=reader.path("key_file"),
        after_delivery=after,
        move_to=move_to,
        max_bytes=max_bytes,
        max_age_days=reader.number("max_age_days", 0, 0, 36500, allow_zero=True),
        hard_cap_bytes=hard_cap,
    )
