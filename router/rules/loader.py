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
from router.textfiles import FileTooBig, read_bounded

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Node",
    "RuleFile",
    "discover",
    "load_file",
    "parse_text",
]

#: Rule files bigger than this are refused: a rule file is edited by hand.
MAX_FILE_BYTES = 1_000_000
#: YAML values (scalars, lists, mappings) in one file; the biggest realistic
#: rule file has a few thousand.
MAX_NODES = 100_000
#: Nesting of lists and mappings; rules need about six levels. PyYAML composes
#: recursively, so without this bound a file of ``[[[[...`` ends in RecursionError.
MAX_DEPTH = 40
#: The only explicit tags accepted, and only on scalars: ``!!str 0123`` is a
#: fair way to keep a number as text. Every other tag would be silently ignored
#: (mappings) or mean a constructor we do not want, so it is an error.
_STANDARD = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(f"{_STANDARD}{name}" for name in ("str", "int", "float", "bool", "null"))


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
                raise RuleValidationError(
                    "mapping keys must be plain words", file=file, line=key_line
                )
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


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors and tags and bounds size and depth.

    An alias makes the composer share one node, and our conversion to
    :class:`Node` expands every share: a 333-byte "billion laughs" file took
    20 s and 379 bytes took 3 GB. Rule files have no use for aliases (nothing
    in the format repeats that a list cannot hold), so refusing them, rather
    than bounding their expansion, keeps both the code and the error simple.
    The checks run on the parser's events, before a node is built.
    """

    def __init__(self, text: str, file: str, max_nodes: int = MAX_NODES) -> None:
        super().__init__(text)
        self.file = file
        self.max_nodes = max_nodes
        self.depth = 0
        self.nodes = 0

    def _refuse(self, message: str, event: yaml.Event) -> RuleValidationError:
        mark = event.start_mark
        return RuleValidationError(
            message, file=self.file, line=mark.line + 1 if mark is not None else 0
        )

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(
                f"YAML aliases are not allowed (*{event.anchor}): write the value out", event
            )
        tag = getattr(event, "tag", None)
        if tag is not None:
            shown = tag.replace(_STANDARD, "!!", 1) if tag.startswith(_STANDARD) else tag
            if not isinstance(event, yaml.ScalarEvent):
                raise self._refuse(f"YAML tag {shown} is not allowed on a mapping or list", event)
            if tag not in _SCALAR_TAGS:
                raise self._refuse(
                    f"YAML tag {shown} is not allowed (only !!str, !!int, "
                    "!!float, !!bool and !!null)",
                    event,
                )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise self._refuse(
                f"YAML anchors are not allowed (&{anchor}): rule files do not share values", event
            )
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self._refuse(f"too many YAML values (more than {self.max_nodes})", event)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._refuse(f"lists and mappings nested deeper than {MAX_DEPTH} levels", event)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_text(text: str, file: str, *, max_nodes: int = MAX_NODES) -> Node | None:
    """Parses one YAML document; a syntax error becomes a located error.

    Also for other YAML files an administrator writes (the directory plugin's),
    which are bigger than a rule file: ``max_nodes`` is theirs."""
    try:
        # PyYAML refuses a control character (NUL, ESC, ...) while it builds
        # the loader, before any mark exists: say where it is ourselves.
        loader = _BoundedLoader(text, file, max_nodes)
    except yaml.reader.ReaderError as exc:
        raise _unprintable(exc, text, file) from None
    try:
        root = loader.get_single_node()
        return None if root is None else _convert(root, loader, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise RuleValidationError(f"YAML syntax error: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise RuleValidationError(f"YAML error: {exc}", file=file) from None
    finally:
        loader.dispose()


def _unprintable(exc: yaml.reader.ReaderError, text: str, file: str) -> RuleValidationError:
    """``file:line: character U+001B at column 28 is not allowed in YAML ...``."""
    position = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return RuleValidationError(
        f"character U+{int(exc.character):04X} at column {column} is not allowed in YAML "
        "(a control character, perhaps pasted from a terminal): delete it, or write it "
        'as an escape in a double-quoted string ("\\x1b")',
        file=file,
        line=line,
    )


def display_path(path: Path) -> str:
    """``rules/inbound.yaml`` under the working directory, else the absolute path.

    Never a chain of ``../``: a service started from ``/`` would otherwise log
    ``../../etc/callrouter/rules/inbound.yaml``.
    """
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except (ValueError, OSError):  # outside, or the working directory is gone
        return str(absolute)


def load_file(path: Path) -> RuleFile:
    """Reads and parses one rule file; every failure is a located error."""
    display = display_path(path)
    try:
        text = read_bounded(path, MAX_FILE_BYTES).decode("utf-8")
    except FileTooBig as exc:
        raise RuleValidationError(f"file is too big ({exc.size} bytes)", file=display) from None
    except OSError as exc:
        raise RuleValidationError(
            f"cannot read rule file: {exc.strerror or exc}", file=display
        ) from None
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
