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

from router.builtin.numbers import last10
from router.config import Config, SettingsReader
from router.errors import ConfigError, RuleValidationError
from router.hookspecs import hookimpl
from router.rules.loader import Node, parse_text
from router.rules.registry import Registry
from router.textfiles import FileTooBig, read_bounded

__all__ = [
    "MAX_DIRECTORY_BYTES",
    "MAX_DIRECTORY_NODES",
    "SETTINGS",
    "Directory",
    "DirectoryPlugin",
    "load_directory",
    "make_plugin",
]

#: The keys of ``[plugins.directory]`` (docs/reference/config.md).
SETTINGS: tuple[str, ...] = ("file", "entries")
#: The directory file is read whole, at start and at each reload: 100,000
#: entries of a number, an extension and a name take about 5 MB.
MAX_DIRECTORY_BYTES = 8_000_000
#: YAML values in a directory file (an entry is up to seven: its number, its
#: mapping, two keys and their values, maybe a third): rule files' bound is 100,000.
MAX_DIRECTORY_NODES = 1_000_000


class Directory:
    """Number (last 10 digits) -> entry dict with at least ``extension``."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = {
            last10(k): dict(v) for k, v in (entries or {}).items()
        }

    def get(self, number: str) -> dict[str, Any] | None:
        """Directory entry for a number: {"extension": "101", "name": ...}, or None.

        A number without digits, or cut (:func:`router.callerid.was_cut`), is
        nobody's: not an entry written without digits either."""
        key = last10(number)
        entry = self.entries.get(key) if key else None
        return dict(entry) if entry is not None else None


def load_directory(path: Path, reader: SettingsReader | None = None) -> Directory:
    """Read a CSV or YAML directory; errors name the file and line.

    A file that cannot be read is router.toml's ``file`` key's error: named
    at its line through ``reader`` (:class:`SettingsReader` of the table).
    Text that is not UTF-8, or not YAML, is a ConfigError too: anything else
    escaping here was logged as the plugin's crash, and the engine started
    (and ``callrouter check`` passed) with an empty directory. The file is
    bounded (:data:`MAX_DIRECTORY_BYTES`) and its YAML is read as rule files are
    (:func:`router.rules.loader.parse_text`: no aliases or anchors, a bounded
    number of values): with yaml.safe_load, a 466-byte "billion laughs" file
    gave one entry a 72 MB name as its entries were turned into text, and each
    line more ten times that.
    """
    text = _read_bounded(path, reader)
    if path.suffix.lower() in (".yaml", ".yml"):
        return Directory(_yaml_entries(text, path))
    entries: dict[str, dict[str, Any]] = {}
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


def _read_bounded(path: Path, reader: SettingsReader | None) -> str:
    """The file's text, at most :data:`MAX_DIRECTORY_BYTES` of it read."""
    try:
        data = read_bounded(path, MAX_DIRECTORY_BYTES)
    except FileTooBig:
        raise ConfigError(
            f"{path}: bigger than {MAX_DIRECTORY_BYTES} bytes, the directory's bound "
            "(a CRM lookup suits a directory that big)"
        ) from None
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        if reader is not None:
            raise reader.error("file", message) from None
        raise ConfigError(f"[plugins.directory] file: {message}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _yaml_entries(text: str, path: Path) -> dict[str, dict[str, Any]]:
    """``{number: {extension:, name:}}`` (or ``number: extension``) from YAML text."""
    try:
        root = parse_text(text, str(path), max_nodes=MAX_DIRECTORY_NODES)
    except RuleValidationError as exc:
        raise ConfigError(str(exc)) from None
    if root is None:
        return {}
    if not isinstance(root.value, dict):
        raise ConfigError(f"{path}: expected a mapping of number -> entry")
    entries: dict[str, dict[str, Any]] = {}
    for number, node in root.mapping().items():
        line = root.key_lines[number]
        if isinstance(node.value, str | int):
            entries[number] = {"extension": _text(node)}
            continue
        if not isinstance(node.value, dict) or "extension" not in node.value:
            raise ConfigError(f"{path}:{line}: {number}: expected {{extension: ..., name: ...}}")
        entry: dict[str, Any] = {}
        for key, field in node.mapping().items():
            if isinstance(field.value, dict | list):
                raise ConfigError(
                    f"{path}:{node.key_lines[key]}: {number}: {key}: expected a text, "
                    f"not a {field.kind}"
                )
            entry[key] = None if field.value is None else _text(field)
        entries[number] = entry
    return entries


def _text(node: Node) -> str:
    """A scalar as written: ``0101`` stays ``0101`` (YAML 1.1 reads it as octal 65)."""
    return node.raw if node.raw else str(node.value)


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
