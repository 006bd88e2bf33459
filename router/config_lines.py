"""Where each key of a TOML file is written: the line a configuration error names.

:mod:`tomllib` gives values, not positions, so an error in ``router.toml``
could name the file, the table and the key, not the line, while a rule file's
errors say ``rules/sales.yaml:12``. This scans the text the same ``tomllib``
has just accepted and maps every key path (``("asterisk", "url")``,
``("api", "tokens", "crm", "hash")``, a table header's own path too) to the
line it is first defined on.

Sans-I/O and cautious: what has no one line gets none, never a wrong one (an
array of tables has the line of its first ``[[header]]``, but the keys and
sub-tables of its elements repeat per element and get no line); a key inside
a multi-line string or array is text, not a key; a shape the scanner does not
expect stops it, and what follows gets no line. The file has already parsed,
so the scanner need not report errors, only stop.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["key_lines"]

_BARE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
#: Where a bare value (number, date, boolean) ends.
_VALUE_END: Final = frozenset(" \t\r\n,]}#")
#: A date a local time may follow after a space (``1979-05-27 07:32:00``).
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_ESCAPES: Final = {
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "f": "\f",
    "r": "\r",
    '"': '"',
    "\\": "\\",
}


class _Unfollowed(Exception):
    """The text took a shape the scanner does not follow: no more lines."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.found: dict[tuple[str, ...], int] = {}
        #: The arrays of tables (``[[hooks]]``): what is under them has no one line.
        self.arrays: set[tuple[str, ...]] = set()

    # -- characters ----------------------------------------------------------

    def peek(self, ahead: int = 0) -> str:
        at = self.pos + ahead
        return self.text[at] if at < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise _Unfollowed("end of text")
        self.pos += 1
        if char == "\n":
            self.line += 1
        return char

    def starts(self, word: str) -> bool:
        return self.text.startswith(word, self.pos)

    def spaces(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def blank(self) -> None:
        """Spaces, newlines and comments (inside arrays, between statements)."""
        while True:
            char = self.peek()
            if char in (" ", "\t", "\r", "\n") and char:
                self.take()
            elif char == "#":
                self.comment()
            else:
                return

    def comment(self) -> None:
        while self.peek() and self.peek() != "\n":
            self.pos += 1

    # -- keys ----------------------------------------------------------------

    def key(self) -> tuple[str, ...]:
        parts = [self.simple_key()]
        self.spaces()
        while self.peek() == ".":
            self.take()
            self.spaces()
            parts.append(self.simple_key())
            self.spaces()
        return tuple(parts)

    def simple_key(self) -> str:
        char = self.peek()
        if char == '"':
            return self.basic_string()
        if char == "'":
            return self.literal_string()
        start = self.pos
        while self.peek() in _BARE and self.peek():
            self.pos += 1
        if self.pos == start:
            raise _Unfollowed(f"no key at line {self.line}")
        return self.text[start : self.pos]

    # -- strings -------------------------------------------------------------

    def basic_string(self) -> str:
        self.take()  # "
        out: list[str] = []
        while True:
            char = self.take()
            if char == '"':
                return "".join(out)
            if char == "\n":
                raise _Unfollowed("newline in a string")
            if char == "\\":
                escape = self.take()
                if escape in _ESCAPES:
                    out.append(_ESCAPES[escape])
                elif escape in ("u", "U"):
                    digits = "".join(self.take() for _ in range(4 if escape == "u" else 8))
                    out.append(chr(int(digits, 16)))
                else:
                    raise _Unfollowed("unknown escape")
            else:
                out.append(char)

    def literal_string(self) -> str:
        self.take()  # '
        start = self.pos
        while self.peek() != "'":
            if self.take() == "\n":
                raise _Unfollowed("newline in a string")
        text = self.text[start : self.pos]
        self.take()
        return text

    def multiline_string(self, quote: str) -> None:
        self.pos += 3
        closing = quote * 3
        while not self.starts(closing):
            char = self.take()
            if char == "\\" and quote == '"':
                self.take()  # an escaped character, a quote among them
        self.pos += 3
        while self.peek() == quote:  # up to two quotes of the content before the closing
            self.pos += 1

    # -- values --------------------------------------------------------------

    def value(self, path: tuple[str, ...]) -> None:
        if self.starts('"""') or self.starts("'''"):
            self.multiline_string(self.peek())
        elif self.peek() == '"':
            self.basic_string()
        elif self.peek() == "'":
            self.literal_string()
        elif self.peek() == "[":
            self.array()
        elif self.peek() == "{":
            self.inline_table(path)
        else:
            start = self.pos
            self.bare()
            if self.pos == start:
                raise _Unfollowed(f"no value at line {self.line}")
            if (
                _DATE.fullmatch(self.text, start, self.pos)
                and self.peek() == " "
                and self.peek(1).isdigit()
            ):
                self.pos += 1  # a date and time apart by a space, as TOML allows
                self.bare()

    def bare(self) -> None:
        """A number, a boolean, a date or a time: up to a space, a comma, a bracket."""
        while self.peek() and self.peek() not in _VALUE_END:
            self.pos += 1

    def array(self) -> None:
        self.take()  # [
        while True:
            self.blank()
            if self.peek() == "]":
                self.take()
                return
            # An inline table inside an array: its keys belong to no one path.
            self.value(("<array>",))
            self.blank()
            if self.peek() == ",":
                self.take()

    def inline_table(self, path: tuple[str, ...]) -> None:
        self.take()  # {
        while True:
            self.blank()
            if self.peek() == "}":
                self.take()
                return
            self.keyval(path)
            self.blank()
            if self.peek() == ",":
                self.take()

    # -- statements ----------------------------------------------------------

    def keyval(self, table: tuple[str, ...]) -> None:
        line = self.line
        key = self.key()
        if self.peek() != "=":
            raise _Unfollowed(f"no '=' at line {line}")
        self.take()
        self.spaces()
        path = table + key
        if "<array>" not in path:
            for depth in range(len(table) + 1, len(path) + 1):
                self.found.setdefault(path[:depth], line)
        self.value(path)

    def header(self) -> tuple[str, ...] | None:
        """``[a.b]`` or ``[[a.b]]``: the table its keys go in, None when they
        repeat per element of an array of tables (and have no one line)."""
        line = self.line
        array = self.starts("[[")
        self.pos += 2 if array else 1
        self.spaces()
        header = self.key()
        closing = "]]" if array else "]"
        if not self.starts(closing):
            raise _Unfollowed(f"no {closing!r} at line {line}")
        self.pos += len(closing)
        if any(header[:depth] in self.arrays for depth in range(1, len(header) + 1)):
            return None  # in an element of an array of tables (or its next element)
        for depth in range(1, len(header)):  # [a.b] defines a as well
            self.found.setdefault(header[:depth], line)
        if array:
            self.arrays.add(header)
            self.found.setdefault(header, line)  # the first element's header
            return None
        # [a] written after [a.b]: its own header, not the one that implied it.
        self.found[header] = line
        return header

    def document(self) -> dict[tuple[str, ...], int]:
        table: tuple[str, ...] | None = ()
        while True:
            self.blank()
            if not self.peek():
                return self.found
            if self.peek() == "[":
                table = self.header()
            elif table is None:
                self.key()  # a key of an array's element: skipped with its value
                if self.peek() != "=":
                    raise _Unfollowed(f"no '=' at line {self.line}")
                self.take()
                self.spaces()
                self.value(("<array>",))
            else:
                self.keyval(table)
            self.spaces()
            if self.peek() == "#":
                self.comment()


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> the line (from 1) it is first written on, for every key and
    table header of ``text`` (valid TOML); up to where the text stops being
    followed, if it does."""
    scanner = _Scanner(text)
    try:
        return scanner.document()
    except (_Unfollowed, ValueError):
        return scanner.found
