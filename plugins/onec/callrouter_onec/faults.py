"""Fault knobs of the 1C double: what can go wrong with a real 1C, on demand.

A fault is named by a short spec (``500``, ``latency=0.8``, ``bom``); several
are combined with commas. They reach a request three ways, strongest first:

1. the request's own ``X-Double-Fault`` header;
2. a queued rule, for the next N requests and/or for one phone or path
   (``FaultPlan.add`` in process, ``POST /_double/faults`` over HTTP);
3. the global list (``FaultPlan.set_global``, ``--fault`` on the command line).

Latencies add up; of the other faults the strongest source wins. The bodies
are the ones 1C, Apache and nginx really send, so the client is tested
against what it will meet, not against tidy JSON errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from callrouter_onec.phone import digits_only

__all__ = [
    "FAULTS",
    "HUGE_CHUNK",
    "HUGE_LIMIT",
    "MAX_LATENCY",
    "NESTED_DEPTH",
    "TRICKLE_DELAY",
    "Fault",
    "FaultPlan",
    "FaultRule",
    "Selected",
    "huge_body",
    "parse_faults",
    "render",
]

#: Every fault the double knows, with what it does.
FAULTS: dict[str, str] = {
    "latency=S": "answer S seconds late (adds up with anything else)",
    "500": "500 text/plain from a failing BSL module",
    "401": "401 with WWW-Authenticate, as for a wrong password (the 1C user was changed)",
    "403": "403 text/plain: the 1C user has no right to the HTTP service",
    "406": "406 XML: the 1C session pool wait timed out",
    "404": "404 HTML from the web server (unpublished service)",
    "502": "502 HTML from a reverse proxy",
    "503": "503 HTML from a reverse proxy",
    "504": "504 HTML from a reverse proxy",
    "bom": "a UTF-8 BOM before the JSON (a correct client copes)",
    "bom_damaged": "a BOM re-encoded as text ('ï»¿') before the JSON",
    "text200": "200 with a plain-text error instead of JSON",
    "shape": "200 with JSON of the wrong shape",
    "reset": "TCP reset instead of an answer",
    "nested": "200 with JSON nested 100,000 levels deep (a hostile or broken 1C)",
    "huge": "200 with an endless JSON array, no Content-Length, until the client hangs up",
    "trickle": "200 whose body comes a byte every 0.1 s (Content-Length given): only a "
    "client's total timeout cuts it, never a per-read one",
    "event400": "the events endpoint refuses the event: 400 invalid_event (other "
    "endpoints answer as usual)",
    "close": "close the connection without an answer",
}
_KINDS = frozenset(k for k in FAULTS if k != "latency=S")

MODULE_ERROR = (
    "{HTTPСервис.Telephony.Модуль(42)}: Ошибка при вызове метода контекста (Выполнить): "
    "Поле объекта не обнаружено (ОсновнойМенеджер)"
)
SESSION_TIMEOUT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<exception xmlns="http://v8.1c.ru/8.1/data/core" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" clsid="{00000000-0000-0000-0000-'
    '000000000000}" reason="406"><descr>Истекло время ожидания сеанса</descr></exception>'
)
TEXT_ERROR = "Ошибка: не удалось выполнить запрос к информационной базе"
#: 1C's words when its user lacks the right to run the HTTP service.
NO_RIGHTS = "Нарушение прав доступа!"
#: What the ``event400`` fault says (as the BSL module's check of an event).
EVENT_REFUSED = "Событие не принято: значение поля event не поддерживается"
#: Seconds between the bytes of a ``trickle`` answer.
TRICKLE_DELAY = 0.1
#: Depth of the ``nested`` answer: far past Python's recursion limit.
NESTED_DEPTH = 100_000
#: The ``huge`` answer is written in chunks of this many bytes (one object, reused),
#: up to HUGE_LIMIT bytes if the client never hangs up.
HUGE_CHUNK = b"1," * 32768
HUGE_LIMIT = 1 << 30
_PROXY = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}
#: The longest ``latency=S`` (an hour: longer than any client waits).
MAX_LATENCY = 3600.0


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    latency: float = 0.0


def parse_faults(spec: str) -> list[Fault]:
    """``"latency=0.3, 500"`` -> faults; an unknown name lists the known ones."""
    faults: list[Fault] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.startswith("latency="):
            try:
                seconds = float(part.removeprefix("latency="))
            except ValueError:
                raise ValueError(f"bad latency in fault {part!r}") from None
            if seconds < 0:
                raise ValueError(f"negative latency in fault {part!r}")
            if not seconds <= MAX_LATENCY:  # nan and inf too: a handler cannot sleep them
                raise ValueError(f"latency in fault {part!r} is over {MAX_LATENCY:g} s")
            faults.append(Fault("latency", seconds))
        elif part in _KINDS:
            faults.append(Fault(part))
        else:
            known = ", ".join(sorted(FAULTS))
            raise ValueError(f"unknown fault {part!r}; known: {known}")
    return faults


@dataclass
class FaultRule:
    """Queued faults: for the next ``count`` matching requests (``None``: until cleared)."""

    faults: list[Fault]
    count: int | None = 1
    phone: str | None = None
    path: str | None = None

    def matches(self, path: str, phone: str | None) -> bool:
        if self.path is not None and not _path_matches(path, self.path):
            return False
        if self.phone is None:
            return True
        # As the data file: any spelling of the number, matched on its last 10 digits.
        return phone is not None and digits_only(phone)[-10:] == digits_only(self.phone)[-10:]

    def as_dict(self) -> dict[str, Any]:
        return {
            "faults": _spec(self.faults),
            "count": self.count,
            "phone": self.phone,
            "path": self.path,
        }


@dataclass(frozen=True, slots=True)
class Selected:
    """The faults one request gets: total latency and at most one failure."""

    latency: float = 0.0
    kind: str | None = None

    @property
    def name(self) -> str | None:
        """What the request log shows: ``latency=0.8``, ``500``, ``latency=0.8, 500``;
        ``None`` without a fault (a latency alone was logged as ``None``)."""
        parts = [f"latency={self.latency:g}"] if self.latency else []
        parts += [self.kind] if self.kind else []
        return ", ".join(parts) or None


def _spec(faults: list[Fault]) -> str:
    return ", ".join(f"latency={f.latency:g}" if f.kind == "latency" else f.kind for f in faults)


@dataclass
class FaultPlan:
    """Thread-safe: the double's handler threads consult it while a test changes it."""

    global_faults: list[Fault] = field(default_factory=list)
    rules: list[FaultRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_global(self, spec: str) -> None:
        """Replace the global faults (``""`` clears them)."""
        faults = parse_faults(spec)
        with self._lock:
            self.global_faults = faults

    def add(
        self, spec: str, *, count: int | None = 1, phone: str | None = None, path: str | None = None
    ) -> FaultRule:
        # Checked here, not when a request meets the rule: the control endpoint takes
        # any JSON, and a count of 1.5 never runs out, a phone that is a number
        # makes every lookup's handler raise (the request is left unanswered).
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise ValueError(f"count must be a whole number or None, got {count!r}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or None for no limit")
        if phone is not None and not (isinstance(phone, str) and digits_only(phone)):
            raise ValueError(f"phone must be a number written as a string, got {phone!r}")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"path must be a string, got {path!r}")
        rule = FaultRule(parse_faults(spec), count, phone, path)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.global_faults = []
            self.rules = []

    def select(self, header: str | None, path: str, phone: str | None) -> Selected:
        """Pick the faults for one request, using up one count of a matching queued rule."""
        sources: list[list[Fault]] = [parse_faults(header)] if header else []
        with self._lock:
            for rule in self.rules:
                if rule.matches(path, phone):
                    sources.append(rule.faults)
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count == 0:
                            self.rules.remove(rule)
                    break
            sources.append(list(self.global_faults))
        latency = sum(f.latency for faults in sources for f in faults)
        kind = next((f.kind for faults in sources for f in faults if f.kind != "latency"), None)
        return Selected(latency, kind)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"global": _spec(self.global_faults), "rules": [r.as_dict() for r in self.rules]}


def _path_matches(path: str, wanted: str) -> bool:
    """The end of the request's path, or a leading part of an endpoint up to a
    ``/``: ``/v1/responsible`` is every lookup (the number follows it)."""
    if path.endswith(wanted):
        return True
    part = wanted.rstrip("/") + "/"
    return part != "/" and part in path


def render(kind: str) -> tuple[int, str, bytes] | None:
    """``(status, content type, body)`` of a fault that replaces the answer, else ``None``."""
    if kind == "500":
        return 500, "text/plain; charset=utf-8", MODULE_ERROR.encode()
    if kind == "403":
        return 403, "text/plain; charset=utf-8", NO_RIGHTS.encode()
    if kind == "406":
        return 406, "application/xml; charset=utf-8", SESSION_TIMEOUT.encode()
    if kind == "404":
        return 404, "text/html; charset=iso-8859-1", _html(404, "Not Found")
    if kind in ("502", "503", "504"):
        status = int(kind)
        return status, "text/html", _html(status, _PROXY[status])
    if kind == "text200":
        return 200, "text/plain; charset=utf-8", TEXT_ERROR.encode()
    return None


def decorate(kind: str | None, body: bytes) -> bytes:
    """Faults that spoil a JSON body rather than replace it."""
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    if kind == "bom_damaged":
        return "\ufeff".encode().decode("cp1252").encode() + body
    if kind == "shape":
        return '{"result": "error", "message": "Нет данных"}'.encode()
    if kind == "nested":
        return b"[" * NESTED_DEPTH + b"]" * NESTED_DEPTH
    return body


def huge_body() -> Iterator[bytes]:
    """The ``huge`` answer: ``[1,1,1,...`` without end (the same chunk object every time,
    so the double itself uses no memory for it)."""
    yield b"["
    sent = 0
    while sent < HUGE_LIMIT:
        yield HUGE_CHUNK
        sent += len(HUGE_CHUNK)
    yield b"1]"


def _html(status: int, reason: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
