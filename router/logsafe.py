"""Log lines that outside values cannot forge, and that never carry a secret.

Two threats, both from values we do not control reaching the log:

* Terminal injection and line forging. The caller's number and name come
  from whoever places the SIP call; an ``ESC [`` sequence in them repaints the
  terminal of an admin who runs ``tail -f``, a newline forges a second log
  line, a bidi override reorders what the admin reads, and an invisible
  character (a zero-width space, a tag character) hides text or makes two
  names that read the same differ. :func:`escape_controls` writes every such
  character as a visible ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN`` escape; the
  text and JSON formatters of ``callrouter run`` apply it to every line. The
  joiners real names need stay: ZWNJ and ZWJ (U+200C, U+200D: Persian and
  Indic spellings, emoji sequences) and the variation selectors.
* Credentials. httpcore logs response headers at DEBUG, including the AMI
  session cookie (``mansession_id``), which is as good as the secret for as
  long as the session lives. :func:`install_redaction` puts a filter on the
  HTTP libraries' loggers that masks it, plus every secret registered with
  :func:`register_secret`, before any handler sees the record.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from types import TracebackType

from router.callerid import cut

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

__all__ = [
    "INVISIBLE",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "ThrottledWarning",
    "escape_controls",
    "escape_json_line",
    "install_redaction",
    "redact",
    "register_secret",
]

#: The bidi embeddings, overrides, isolates and marks (the "Trojan Source"
#: characters), the Arabic letter mark, and the line and paragraph separators.
_BIDI = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
#: Characters that show nothing: the soft hyphen, the Mongolian vowel separator,
#: the zero-width space, the word joiner and invisible operators, the deprecated
#: format controls (U+206A-206F), the Hangul fillers (U+3164, U+FFA0: a "blank"
#: name), the byte order mark (zero-width no-break space), the interlinear
#: annotation marks, the musical format controls (U+1D173-1D17A), and the tag
#: characters (U+E0000-E007F, text no font draws). Not ZWNJ/ZWJ (U+200C,
#: U+200D), which Persian and Indic names and emoji sequences need.
_INVISIBLE = (
    "\u00ad\u180e\u200b\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb"
    "\U0001d173-\U0001d17a\U000e0000-\U000e007f"
)
#: C0 controls except tab, DEL, C1 controls, and the two sets above.
_UNSAFE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}]")
#: The same, but newlines stay: used for tracebacks, which are multi-line by design.
_UNSAFE_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_INVISIBLE}]")
#: What json.dumps(ensure_ascii=False) leaves raw: DEL, C1, bidi, invisible.
_UNSAFE_JSON = re.compile(f"[\x7f-\x9f{_BIDI}{_INVISIBLE}]")
#: The invisible characters alone: the logs escape them, the live page shows
#: names as people wrote them (router/api/ui/app.js escapes the rest).
INVISIBLE = re.compile(f"[{_INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character past U+FFFF as its UTF-16 surrogates
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control, separator, bidi and invisible character made visible."""
    pattern = _UNSAFE_MULTILINE if keep_newlines else _UNSAFE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


#: Characters of a peer's own text (Asterisk's ``Message``) quoted in an error
#: or a log line: a hostile or broken peer may send 64 KB of it at every login.
PEER_TEXT_MAX = 200


def peer_text(text: str | None, default: str = "no reason given") -> str:
    """A peer's text, as an error or a log line quotes it: at most
    :data:`PEER_TEXT_MAX` characters, control characters escaped, without
    trailing white space (Asterisk 22 ends some messages with a line feed,
    ``No Contacts found\\n``, which the line quoted as a trailing ``\\x0a``)."""
    if not text or not (text := text.rstrip()):
        return default
    return escape_controls(cut(text, PEER_TEXT_MAX))


def escape_json_line(line: str) -> str:
    """A JSON document with the characters json leaves raw written as ``\\uNNNN``.

    Such characters can only occur inside JSON strings, where the escape is
    valid and decodes to the same value.
    """
    if _UNSAFE_JSON.search(line) is None:
        return line
    return _UNSAFE_JSON.sub(_json_escape, line)


class TextFormatter(logging.Formatter):
    """The text format of ``callrouter run``, with outside values escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: _ExcInfo) -> str:
        return escape_controls(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return escape_controls(super().formatStack(stack_info), keep_newlines=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; decision lines are already JSON and pass
    through, with the time they were logged added as their last key, ``ts``
    (as every other line has it): a file log (``2>>``) has no other."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "router.decision" and message.startswith("{"):
            if message.startswith('{"') and message.endswith("}"):
                message = f'{message[:-1]}, "ts": {round(record.created, 3)}}}'
            return escape_json_line(message)
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return escape_json_line(json.dumps(data, ensure_ascii=False))


_COOKIE = re.compile(r"(mansession_id\s*=\s*)[^;,\s'\"\\]*(?:\"[^\"]*\")?", re.IGNORECASE)
_secrets: set[str] = set()
#: Loggers that print HTTP traffic; filters on a logger only see its own records,
#: so each one that exists is listed.
_HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class ThrottledWarning:
    """When a warning that a flood of peer-made events may ask for was last
    said, and how many occurrences were kept quiet since: said at most once
    every ``every`` seconds, the next one counts the quiet ones. A hostile
    peer's flood is then one line a minute, not one an event."""

    __slots__ = ("_clock", "_every", "_quiet", "_told")

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._told: float | None = None
        self._quiet = 0

    def due(self, count: int = 1) -> str | None:
        """``count`` more occurrences: None while the warning was said less
        than ``every`` seconds ago (they are counted for the next one), else
        the tail the warning says now: ``"; N more since the last warning"``
        for the N kept quiet since, ``""`` when there were none."""
        now = self._clock()
        if self._told is not None and now - self._told < self._every:
            self._quiet += count
            return None
        quiet, self._quiet, self._told = self._quiet, 0, now
        return f"; {quiet} more since the last warning" if quiet else ""


def register_secret(value: str) -> None:
    """Mask ``value`` wherever the HTTP libraries' loggers would print it."""
    if len(value) >= 4:  # masking "a" everywhere would make logs unreadable
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` without session cookies or registered secrets."""
    text = _COOKIE.sub(r"\1<redacted>", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True


_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Put the redacting filter on the HTTP libraries' loggers (idempotent)."""
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
