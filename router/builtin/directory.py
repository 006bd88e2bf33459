"""Built-in plugin: a static directory mapping caller numbers to extensions.

For PBXs without a CRM, or as the fallback behind one: a CSV
(``number,extension,name``) or YAML (``{number: {extension:, name:}}``) file,
configured as ``[plugins.directory] file = "directory.csv"``. Numbers are
matched on their last ten digits, like 1C does, so ``8 916 123-45-67`` and
``+79161234567`` find the same entry. The rule lookup is ``directory(number)``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from router.builtin.numbers import last10
from router.config import Config, SettingsReader
from router.errors import ConfigError
from router.hookspecs import hookimpl
from router.rules.registry import Registry

__all__ = ["SETTINGS", "Directory", "DirectoryPlugin", "load_directory", "make_plugin"]

#: The keys of ``[plugins.directory]`` (docs/reference/config.md).
SETTINGS: tuple[str, ...] = ("file", "entries")


class Directory:
    """Number (last 10 digits) -> entry dict with at least ``extension``."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = {
            last10(k): dict(v) for k, v in (entries or {}).items()
        }

    def get(self, number: str) -> dict[str, Any] | None:
        """Directory entry for a number: {"extension": "101", "name": ...}, or None."""
        entry = self.entries.get(last10(number))
        return dict(entry) if entry is not None else None


def load_directory(path: Path, reader: SettingsReader | None = None) -> Directory:
    """Read a CSV or YAML directory; errors name the file and line.

    A file that cannot be read is router.toml's ``file`` key's error: named
    at its line through ``reader`` (:class:`SettingsReader` of the table).
    Text that is not UTF-8, or not YAML, is a ConfigError too: anything else
    escaping here was logged as the plugin's crash, and the engine started
    (and ``callrouter check`` passed) with an empty directory.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        if reader is not None:
            raise reader.error("file", message) from None
        raise ConfigError(f"[plugins.directory] file: {message}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    entries: dict[str, dict[str, Any]] = {}
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: YAML error: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of number -> entry")
        for number, entry in data.items():
            if isinstance(entry, (str, int)):
                entry = {"extension": str(entry)}
            if not isinstance(entry, dict) or "extension" not in entry:
                raise ConfigError(f"{path}: {number}: expected {{extension: ..., name: ...}}")
            entries[str(number)] = {k: None if v is None else str(v) for k, v in entry.items()}
        return Directory(entries)
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or row[0].lstrip().startswith("#") or row[0].strip().lower() == "number":
            continue
        if len(row) < 2 or not row[1].strip():
            raise ConfigError(f"{path}:{lineno}: expected number,extension[,name]")
        entries[row[0].strip()] = {
            "extension": row[1].strip(),
            "name": row[2].strip() if len(row) > 2 else "",
        }
    return Directory(entries)


class DirectoryPlugin:
    """The plugin: one per engine, with the directory its settings name."""

    def __init__(self) -> None:
        self.directory = Directory()

    @hookimpl
    def callrouter_configure(self, config: Config, settings: Mapping[str, Any]) -> None:
        """``file`` (relative to router.toml's folder) or inline ``entries``."""
        reader = SettingsReader.for_plugin("directory", settings, config)
        reader.reject_unknown(SETTINGS)
        if reader.has("file") and reader.has("entries"):
            raise reader.error("entries", "give either file or entries, not both")
        path = reader.path("file")
        if path is not None:
            self.directory = load_directory(path, reader)
            return
        entries = settings.get("entries", {})
        if not isinstance(entries, Mapping) or not all(
            isinstance(e, Mapping) and "extension" in e for e in entries.values()
        ):
            raise reader.error(
                "entries",
                "expected tables like [plugins.directory.entries."
                '"79161234567"] with extension = "101"',
            )
        self.directory = Directory(entries)

    def lookup(self, number: str) -> dict[str, Any] | None:
        """Static directory entry for a number: {"extension": "101", "name": ...}.

        A plain function: the answer is in memory, so routing spends no
        coroutine and no timer on it.
        """
        return self.directory.get(number)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_lookup("directory", self.lookup)


def make_plugin() -> DirectoryPlugin:
    return DirectoryPlugin()
