"""``[history]`` of router.toml: where Asterisk keeps CEL, and how replays run.

A leaf of plain data, read by :mod:`router.config` (which it cannot import
back, so the reader is a protocol here).
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from router.errors import ConfigError

__all__ = ["KEYS", "HistorySettings", "read_history"]

KEYS = ("cel", "table", "settle_delay", "replay_max_age", "max_calls")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
SCHEMES = ("sqlite", "postgresql", "postgres")


class Reader(Protocol):
    """What :func:`read_history` needs of :class:`router.config.SettingsReader`."""

    section: str
    values: Mapping[str, object]

    def error(self, key: str, message: str) -> ConfigError: ...

    def reject_unknown(self, known: Iterable[str]) -> None: ...

    def string(self, key: str, default: str | None = None, *, empty: bool = False) -> str: ...

    def number(
        self, key: str, default: float, low: float, high: float, *, allow_zero: bool = False
    ) -> float: ...

    def integer(self, key: str, default: int, low: int, high: int) -> int: ...

    def base_for(self, key: str) -> Path: ...


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """How the call life is rebuilt from Asterisk's stored CEL (docs/history.md).

    ``cel`` is ``sqlite:///PATH`` (cel_sqlite3_custom, Asterisk on this host)
    or ``postgresql://USER@HOST/DB`` (cel_pgsql), or None: live CEL only, no
    replay after gaps.
    """

    cel: str | None = field(default=None, repr=False)
    #: The table cel_sqlite3_custom / cel_pgsql write.
    table: str = "cel"
    #: Seconds to wait after a gap (or start) before reading the store:
    #: Asterisk writes a record a moment after the fact.
    settle_delay: float = 5.0
    #: Replay at start goes back at most this long (seconds).
    replay_max_age: float = 86_400.0
    #: Calls followed at once (memory bound).
    max_calls: int = 10_000

    @property
    def scheme(self) -> str | None:
        return None if self.cel is None else self.cel.partition(":")[0].lower()

    @property
    def sqlite_path(self) -> Path | None:
        if self.scheme != "sqlite" or self.cel is None:
            return None
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(self.cel).path))

    @property
    def where(self) -> str:
        """The store, safe to log (a PostgreSQL password masked)."""
        if self.cel is None:
            return "(none)"
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.cel)


def _check_sqlite_path(reader: Reader, path: Path) -> None:
    """What can be told of the file before it is read (when the call life first
    replays, or ``callrouter history``): those said ``[history] cel: ...``
    with no line. A file not there yet is no error: Asterisk creates it with
    its first record."""
    if path.is_dir():
        raise reader.error("cel", f"{str(path)!r} is a folder, not cel_sqlite3_custom's file")
    if not path.parent.is_dir():
        raise reader.error("cel", f"{str(path)!r}: no such folder {str(path.parent)!r}")
    try:
        mode = os.stat(path.parent).st_mode
    except OSError:
        return  # said when the file is read
    if mode & stat.S_IWOTH:
        # SQLite opens the file, its -journal, -wal and -shm by their names:
        # every user may put a FIFO (the replay waits for ever), another
        # database or a hot journal (Asterisk rolls it into the store) at them.
        raise reader.error(
            "cel",
            f"{str(path)!r}: its folder {str(path.parent)!r} is writable by every user "
            f"(mode {stat.S_IMODE(mode):04o}): any local user could put a file of their own "
            "at the database's name or its -journal, -wal or -shm, which SQLite opens by "
            "name; keep cel_sqlite3_custom's file in a folder only Asterisk's user and root "
            "may write (docs/history.md)",
        )


def _check_postgres(reader: Reader, cel: str) -> None:
    """The driver and the url's port, checked without connecting."""
    try:
        parts = urllib.parse.urlsplit(cel)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed '[' of a host
        # Not quoted back: a postgresql:// url may hold a password.
        raise reader.error("cel", f"the postgresql:// url is not a URL ({exc})") from None
    try:
        parts.port  # noqa: B018  # raises on a bad one
    except ValueError:
        raise reader.error("cel", "the postgresql:// url has a bad port") from None
    if importlib.util.find_spec("psycopg") is None:
        raise reader.error(
            "cel",
            "a postgresql:// source needs psycopg 3: "
            "pip install 'psycopg>=3.1' into callrouter's environment (its pgsql extra)",
        )


def read_history(reader: Reader) -> HistorySettings:
    """The ``[history]`` table; every problem names the file, table and key."""
    reader.reject_unknown(KEYS)
    cel: str | None = None
    if "cel" in reader.values:
        cel = reader.string("cel").strip()
        scheme = cel.partition(":")[0].lower()
        if scheme not in SCHEMES or "://" not in cel:
            raise reader.error(
                "cel",
                f"expected 'sqlite:///path/to/cel.db' or 'postgresql://user@host/db', got {cel!r}",
            )
        if scheme == "sqlite":
            try:
                path = urllib.parse.unquote(urllib.parse.urlsplit(cel).path)
            except ValueError as exc:  # "Invalid IPv6 URL": sqlite://[x/...
                raise reader.error("cel", f"not a URL ({exc}): {cel!r}") from None
            if not path or path == "/":
                raise reader.error("cel", "sqlite:///PATH needs the file's path")
            if path.startswith("//"):
                # sqlite:////var/log/... (SQLAlchemy's way to write an absolute
                # path) is the same file; kept as //var/..., SQLite read "var"
                # as the host of its file: URI and every replay failed.
                path = "/" + path.lstrip("/")
            if not Path(path).is_absolute():
                path = str(reader.base_for("cel") / path)
            _check_sqlite_path(reader, Path(path))
            cel = "sqlite://" + urllib.parse.quote(path)
        else:
            _check_postgres(reader, cel)
    table = reader.string("table", "cel")
    if not _TABLE.fullmatch(table):
        raise reader.error(
            "table", f"expected a table name like 'cel' or 'public.cel', got {table!r}"
        )
    settle = reader.number("settle_delay", 5.0, 0, 600, allow_zero=True)
    max_age = reader.number("replay_max_age", 86_400.0, 0, 31 * 86_400, allow_zero=True)
    return HistorySettings(
        cel=cel,
        table=table,
        settle_delay=settle,
        replay_max_age=max_age,
        max_calls=reader.integer("max_calls", 10_000, 10, 1_000_000),
    )
