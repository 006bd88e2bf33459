"""What the ``[api]`` readers need of :class:`router.config.SettingsReader`.

A protocol in a leaf module: :mod:`router.config` imports the ``[api]``
readers, so they cannot import it back (the architecture test forbids any
import loop, type-level ones included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from router.errors import ConfigError

__all__ = ["Reader"]


class Reader(Protocol):
    """What :func:`read_api` needs of :class:`router.config.SettingsReader`."""

    section: str
    values: Mapping[str, object]

    def error(self, key: str, message: str) -> ConfigError: ...

    def reject_unknown(self, known: Iterable[str]) -> None: ...

    def string(self, key: str, default: str | None = None, *, empty: bool = False) -> str: ...

    def number(
        self,
        key: str,
        default: float,
        low: float,
        high: float,
        *,
        allow_zero: bool = False,
        low_included: bool = False,
    ) -> float: ...

    def integer(self, key: str, default: int, low: int, high: int) -> int: ...

    def boolean(self, key: str, default: bool) -> bool: ...

    def seconds(self, key: str, default: float) -> float: ...

    def path(self, key: str, *, must_exist: bool = False) -> Path | None: ...

    def strings(
        self, key: str, default: tuple[str, ...] = (), *, digits: bool = False
    ) -> tuple[str, ...]: ...

    def table(self, key: str) -> Reader: ...
