"""Named lists (blacklist, VIP, holidays) read once, when rules load.

Numbers are normalized with the registry's number plan so ``8 (916) 123-45-67``
in a file matches the caller ``79161234567``; dates are checked so a holiday
typo is reported with its line instead of silently never matching.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

from router.dialplan import shown
from router.errors import RuleValidationError
from router.rules.loader import Node, display_path
from router.rules.schema import ListSpec
from router.textfiles import FileTooBig, read_bounded

__all__ = ["MAX_LIST_FILE_BYTES", "MAX_LIST_ITEMS", "load_list"]

MAX_LIST_ITEMS = 1_000_000
#: A million numbers with comments fit; a list file is read whole.
MAX_LIST_FILE_BYTES = 64_000_000
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")
#: What a number is written with besides its digits: 8 (916) 123-45-67,
#: +7 916 123.45.67 (and the fullwidth plus).
_NUMBER_MARKS = frozenset(" \t+-().\uff0b")


def _lines(spec: ListSpec) -> Iterator[tuple[str, str, int]]:
    """(text, file, line) of every entry; ``#`` starts a comment in files."""
    if spec.path is None:
        for node in spec.items:
            yield _item_text(node), node.file, node.line
        return
    where = display_path(spec.path)
    if spec.folder is not None and not _inside(spec.path, spec.folder):
        raise RuleValidationError(
            f"list {spec.name!r}: {where} leads out of the rule file's folder "
            "(a symbolic link?): a list file is kept with the rules",
            file=spec.file,
            line=spec.line,
        )
    try:
        text = read_bounded(spec.path, MAX_LIST_FILE_BYTES).decode("utf-8")
    except FileTooBig:
        raise RuleValidationError(
            f"list {spec.name!r}: {where} is bigger than {MAX_LIST_FILE_BYTES} bytes",
            file=spec.file,
            line=spec.line,
        ) from None
    except OSError as exc:
        raise RuleValidationError(
            f"list {spec.name!r}: cannot read {where}: {exc.strerror or exc}",
            file=spec.file,
            line=spec.line,
        ) from None
    except UnicodeDecodeError:
        raise RuleValidationError(
            f"list {spec.name!r}: {where} is not UTF-8 text", file=spec.file, line=spec.line
        ) from None
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            yield entry, where, number


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop: read_bounded says so
        return True


def _item_text(node: Node) -> str:
    if isinstance(node.value, date):
        return node.value.isoformat()
    return node.raw if node.raw else str(node.value)


def _date(entry: str) -> str:
    """``YYYY-MM-DD`` for one day, ``MM-DD`` for every year."""
    match = _MONTH_DAY.match(entry)
    if match:
        date(2000, int(match[1]), int(match[2]))  # 2000 is a leap year: 02-29 is fine
        return entry
    return date.fromisoformat(entry).isoformat()


#: Dates as people write them: 31.12.2026 and 31.12 (day first, as in Russia),
#: 2026/12/31, 2026.12.31 and 2026-1-5.
_DAY_FIRST = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})(?:\.([0-9]{4}))?")
_YEAR_FIRST = re.compile(r"([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})")


def _date_hint(entry: str) -> str:
    """`` (did you mean '2026-12-31'?)`` for a date written another way, or ``""``."""
    day_first = _DAY_FIRST.fullmatch(entry)
    year_first = _YEAR_FIRST.fullmatch(entry)
    if day_first:
        day, month, year = day_first.groups()
        meant = f"{month:0>2}-{day:0>2}" if year is None else f"{year}-{month:0>2}-{day:0>2}"
    elif year_first:
        year, month, day = year_first.groups()
        meant = f"{year}-{month:0>2}-{day:0>2}"
    else:
        return ""
    try:
        _date(meant)
    except ValueError:
        return ""
    return f" (did you mean {meant!r}?)"


def _number(entry: str, normalize: Callable[[str], str]) -> str:
    """A numbers list's entry: digits and the marks numbers are written with.

    Normalizing alone read ``1-800-FLOWERS`` as ``1800``, ``abc 123`` as
    ``123`` and a line of ``/etc/passwd`` as a number.
    """
    if any(not (ch.isdecimal() or ch in _NUMBER_MARKS) for ch in entry):
        raise ValueError
    value = normalize(entry)
    if not value:
        raise ValueError
    return value


def load_list(spec: ListSpec, normalize: Callable[[str], str]) -> frozenset[str]:
    """Reads and converts one list; the first bad entry is a located error,
    quoted escaped and cut short (:func:`router.dialplan.shown`)."""
    items: set[str] = set()
    for entry, file, line in _lines(spec):
        try:
            if spec.type == "numbers":
                value = _number(entry, normalize)
            elif spec.type == "dates":
                value = _date(entry)
            else:
                value = entry
        except ValueError:
            what = (
                "a phone number (digits, spaces and +-().)"
                if spec.type == "numbers"
                else "a date (YYYY-MM-DD or MM-DD)"
            )
            hint = _date_hint(entry) if spec.type == "dates" else ""
            raise RuleValidationError(
                f"list {spec.name!r}: not {what}: {shown(entry)}{hint}", file=file, line=line
            ) from None
        items.add(value)
        if len(items) > MAX_LIST_ITEMS:
            raise RuleValidationError(
                f"list {spec.name!r}: more than {MAX_LIST_ITEMS} items", file=file, line=line
            )
    return frozenset(items)
