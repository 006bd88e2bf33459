"""``[history]`` of router.toml: where Asterisk keeps CEL, and how replays run.

A leaf of plain data, read by :mod:`router.config` (which it cannot import
back, so the reader is a protocol here).
"""

from __future__ import annotations

import re
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
            path = urllib.parse.unquote(urllib.parse.urlsplit(cel).path)
            if not path or path == "/":
                raise reader.error("cel", "sqlite:///PATH needs the file's path")
            if not Path(path).is_absolute():
                path = str(reader.base_for("cel") / path)
            cel = "sqlite://" + urllib.parse.quote(path)
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
