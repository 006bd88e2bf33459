"""YAML rule files -> a tree of :class:`Node` stamped with file and line.

Every later error must point an administrator at ``file:line``, so we never
keep a bare Python value from YAML: PyYAML's composer gives each node a mark
and we carry it along (as Home Assistant's YAML loader does). We also read
mapping keys from their source text, because YAML 1.1 turns the key ``on`` into
``True`` and ``on: call`` is our trigger key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from router.errors import RuleValidationError

__all__ = ["Node", "RuleFile", "discover", "load_file", "parse_text"]

#: Rule files bigger than this are refused: a rule file is edited by hand.
MAX_FILE_BYTES = 2_000_000


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML value with its place in the source.

    ``value`` is a scalar (str, int, float, bool, None, date), a
    ``dict[str, Node]`` or a ``list[Node]``; ``raw`` is the scalar's source text
    (so ``0123`` in a number list is not read as an octal int); ``key_lines``
    holds the line of each mapping key, where "unknown key" errors point.
    """

    value: object
    file: str
    line: int
    raw: str = ""
    style: str | None = None
    key_lines: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The YAML type name used in error messages."""
        return type_name(self.value)

    def mapping(self) -> dict[str, Node]:
        assert isinstance(self.value, dict)
        return self.value

    def sequence(self) -> list[Node]:
        assert isinstance(self.value, list)
        return self.value


def type_name(value: object) -> str:
    """Names YAML types the way an administrator reads them, not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class RuleFile:
    """One parsed rule file; ``root`` is None when the file is empty."""

    path: Path
    display: str
    root: Node | None


def _convert(node: yaml.Node, loader: yaml.SafeLoader, file: str) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        items: dict[str, Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise RuleValidationError("mapping keys must be plain words", file=file,
                                          line=key_line)
            key = str(key_node.value)
            if key in items:
                raise RuleValidationError(f"duplicate key {key!r}", file=file, line=key_line)
            items[key] = _convert(value_node, loader, file)
            key_lines[key] = key_line
        return Node(items, file, line, key_lines=key_lines)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(item, loader, file) for item in node.value], file, line)
    assert isinstance(node, yaml.ScalarNode)
    value = loader.construct_object(node, deep=True)
    return Node(value, file, line, raw=str(node.value), style=node.style)


def parse_text(text: str, file: str) -> Node | None:
    """Parses one YAML document; a syntax error becomes a located error."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(root, loader, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise RuleValidationError(f"YAML syntax error: {problem}", file=file,
                                  line=line) from None
    except yaml.YAMLError as exc:
        raise RuleValidationError(f"YAML error: {exc}", file=file) from None
    finally:
        loader.dispose()


def display_path(path: Path) -> str:
    """Shows paths as the administrator typed them, relative when possible."""
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


def load_file(path: Path) -> RuleFile:
    """Reads and parses one rule file; every failure is a located error."""
    display = display_path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RuleValidationError(f"file is too big ({size} bytes)", file=display)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleValidationError(f"cannot read rule file: {exc.strerror or exc}",
                                  file=display) from None
    except UnicodeDecodeError:
        raise RuleValidationError("rule file is not UTF-8 text", file=display) from None
    return RuleFile(path, display, parse_text(text, display))


def _is_rule_file(path: Path) -> bool:
    return path.suffix in (".yaml", ".yml") and not path.name.startswith((".", "_"))


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Expands folders to their rule files in name order, which is rule order.

    Folders are read one level deep so ``rules/lists/`` can sit beside the rules
    without being mistaken for rules. A missing path is reported by the caller.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and _is_rule_file(p))
        else:
            yield path
