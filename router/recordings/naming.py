"""Recording file names: derived from the call's stable id, never from caller data.

Sans-I/O. A file name is built only from a call id that matched
:data:`CALL_ID` (an Asterisk Linkedid such as ``1714557600.42``, or a
click-to-call id such as ``c2c-0a1b...``), a part (``mix``, ``in``, ``out``)
and an extension from a fixed table. Whatever a caller can influence (caller
ID, DID, a 1C answer) never reaches a path, so no value can climb out of the
recordings folder or hand MixMonitor a second option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CALL_ID",
    "CONTENT_TYPES",
    "FORMATS",
    "LEGS",
    "PARTS",
    "SYSTEMNAME_MAX",
    "FileName",
    "check_call_id",
    "check_part",
    "file_names",
    "parse_file_name",
    "recording_key_problem",
]

#: An id a recording may be named after: letters, digits, ``_`` and ``-``
#: (no dot, no slash), then optionally ``.`` and digits (a Linkedid's sequence);
#: or a Linkedid of an Asterisk whose ``systemname`` (asterisk.conf) is a host
#: name with dots, ``pbx.example.com-1733050000.42``: that name (single dots
#: between letters and digits, never ``..``), ``-``, digits, ``.``, digits. At most
#: 64 characters either way (1C's module takes no longer ``call_id``).
CALL_ID: Final = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9_-]{0,47}(?:\.[0-9]{1,12})?"
    r"|[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?=[A-Za-z0-9])){0,37}-[0-9]{1,12}\.[0-9]{1,12})"
)
#: The longest ``systemname`` a Linkedid :data:`CALL_ID` takes begins with
#: (its ``{0,37}`` and first character): with ``-``, twelve digits, ``.`` and
#: twelve more, 64 characters. ``check --asterisk`` names it, for a longer one
#: is a host name of the right characters all the same (hreview48: the
#: sandbox's ``asterisk-production-node-01.msk.example.com`` was told to use
#: the very characters it had).
SYSTEMNAME_MAX: Final = 38

Leg = Literal["mix", "both", "in", "out"]
Part = Literal["mix", "in", "out"]

#: ``legs`` of the ``record`` action: which files one recording makes.
LEGS: Final[dict[str, tuple[Part, ...]]] = {
    "mix": ("mix",),
    "both": ("mix", "in", "out"),
    "in": ("in",),
    "out": ("out",),
}
PARTS: Final[tuple[Part, ...]] = ("mix", "in", "out")

#: The formats Asterisk writes (``format`` of the ``record`` action) and the
#: compressed ones callrouter transcodes to, with their Content-Type.
CONTENT_TYPES: Final[dict[str, str]] = {
    "wav": "audio/wav",
    "gsm": "audio/x-gsm",
    "ulaw": "audio/basic",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
}
FORMATS: Final[tuple[str, ...]] = ("wav", "gsm", "ulaw")

_NAME: Final = re.compile(
    r"(?P<call>" + CALL_ID.pattern + r")-(?P<part>mix|in|out)\.(?P<ext>wav|gsm|ulaw|mp3|opus)"
)


def check_call_id(value: str) -> str:
    """``value`` if it may name a recording; ``ValueError`` naming it otherwise."""
    if not isinstance(value, str) or CALL_ID.fullmatch(value) is None:
        shown = repr(value[:60]) if isinstance(value, str) else type(value).__name__
        raise ValueError(
            f"call id {shown} cannot name a recording (expected {CALL_ID.pattern}; "
            "a Linkedid begins with Asterisk's systemname from asterisk.conf, which may "
            "then hold only letters, digits, '_', '-' and single dots)"
        )
    return value


def check_part(value: str) -> Part:
    if value not in PARTS:
        shown = repr(value[:20]) if isinstance(value, str) else type(value).__name__
        raise ValueError(f"part {shown} is not one of {', '.join(PARTS)}")
    return value


def recording_key_problem(call_id: object, part: object) -> str | None:
    """Why ``call_id`` and ``part`` cannot name a recording (as the catalog
    writes them: :data:`CALL_ID`, one of :data:`PARTS`), or None. For a
    receiving plugin reading them back from its own store: a damaged or
    tampered row must not choose a URL path (``../..``, ``?``, ``#``)."""
    try:
        check_call_id(call_id)  # type: ignore[arg-type]
        check_part(part)  # type: ignore[arg-type]
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class FileName:
    """One recording file's name: ``<call id>-<part>.<format>``."""

    call_id: str
    part: Part
    format: str

    def __post_init__(self) -> None:
        check_call_id(self.call_id)
        check_part(self.part)
        if self.format not in CONTENT_TYPES:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(CONTENT_TYPES)}")

    def __str__(self) -> str:
        return f"{self.call_id}-{self.part}.{self.format}"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def file_names(call_id: str, legs: str, fmt: str) -> tuple[FileName, ...]:
    """The files a ``record`` of ``call_id`` makes; ``ValueError`` for a bad value."""
    if legs not in LEGS:
        raise ValueError(f"legs {legs!r} is not one of {', '.join(LEGS)}")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return tuple(FileName(check_call_id(call_id), part, fmt) for part in LEGS[legs])


def parse_file_name(name: str) -> FileName | None:
    """The :class:`FileName` a bare file name is, or None (not one of ours)."""
    found = _NAME.fullmatch(name)
    if found is None:
        return None
    return FileName(found["call"], check_part(found["part"]), found["ext"])
