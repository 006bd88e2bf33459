"""The 1C double's recordings: what the 1C side of the upload contract does, in memory.

``GET``/``PUT``/``POST {BASE}/v1/calls/{call_id}/recordings/{part}`` as
``callrouter_onec.recordings`` describes: a status (``received``), a chunk
at exactly the offset it holds (409 ``offset_mismatch`` with ``received``
otherwise), the whole file checked against its SHA-256 when complete (422
and dropped when it does not match), stored once per call, part and hash (a
repeat is ``duplicate``), and, in pull mode, the link. :attr:`stored` is what
a 1C document would hold, in order, each file once.

The fault this adds to the double's: :meth:`RecordingBox.outage` cuts the
connection in the middle of the upload, keeping the bytes before the cut
(not chunk-aligned, as a proxy dropping a request half-read would), and
keeps cutting for ``count`` more requests, or until :meth:`recover`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cut", "RecordingBox", "StoredRecording"]

_PATH = re.compile(r"/v1/calls/(?P<call>[A-Za-z0-9._-]{1,80})/recordings/(?P<part>[a-z]{1,8})")
_RANGE = re.compile(r"bytes (\d{1,15})-(\d{1,15})/(\d{1,15})")
_SHA = re.compile(r"[0-9a-f]{64}")


class Cut(Exception):
    """Close the connection without an answer (the double turns it into a reset)."""


@dataclass
class StoredRecording:
    id: str
    call_id: str
    part: str
    sha256: str
    size: int
    content_type: str
    duration: float | None
    event_id: str
    data: bytes = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "part": self.part,
            "sha256": self.sha256,
            "size": self.size,
            "content_type": self.content_type,
            "duration": self.duration,
            "event_id": self.event_id,
        }


@dataclass
class _Partial:
    sha256: str
    size: int
    data: bytearray = field(default_factory=bytearray)


Answer = tuple[int, dict[str, Any]]


def _error(status: int, code: str, message: str, **extra: Any) -> Answer:
    return status, {"error": {"code": code, "message": message}, **extra}


class RecordingBox:
    """Thread-safe: the double serves from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partial: dict[tuple[str, str], _Partial] = {}
        self._done: dict[tuple[str, str], StoredRecording] = {}
        #: Every file stored, in order; a file is here once however often it was sent.
        self.stored: list[StoredRecording] = []
        #: Pull mode: every link 1C was handed.
        self.links: list[dict[str, Any]] = []
        #: Chunk requests (PUT) received, for tests.
        self.puts = 0
        self._cut_after: int | None = None
        self._cuts_left: int | None = 0
        self._cutting = False

    # -- knobs -------------------------------------------------------------------------

    def outage(self, after: int, count: int | None = None) -> None:
        """Cut the upload once ``after`` bytes of a file are held; then cut ``count``
        more requests (None: until :meth:`recover`)."""
        with self._lock:
            self._cut_after, self._cuts_left, self._cutting = after, count, False

    def recover(self) -> None:
        with self._lock:
            self._cut_after, self._cuts_left, self._cutting = None, 0, False

    def reset(self) -> None:
        with self._lock:
            self._partial.clear()
            self._done.clear()
            self.stored.clear()
            self.links.clear()
            self.puts = 0
            self._cut_after, self._cuts_left, self._cutting = None, 0, False

    def received(self, call_id: str, part: str) -> int:
        with self._lock:
            partial = self._partial.get((call_id, part))
            return len(partial.data) if partial is not None else 0

    # -- requests ----------------------------------------------------------------------

    def route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        """The answer to a recordings request, None for any other path; raises :class:`Cut`."""
        found = _PATH.fullmatch(path)
        if found is None:
            return None
        call_id, part = found["call"], found["part"]
        with self._lock:
            if self._cutting:
                if self._cuts_left is None or self._cuts_left > 0:
                    if self._cuts_left is not None:
                        self._cuts_left -= 1
                    raise Cut
                self._cutting = False
                self._cut_after = None
            if part not in ("mix", "in", "out"):
                return _error(400, "invalid_parameter", f"unknown part {part!r}")
            if method == "GET":
                return self._status(call_id, part, headers)
            if method == "PUT":
                self.puts += 1
                return self._chunk(call_id, part, headers, body)
            if method == "POST":
                return self._link(call_id, part, body)
        return 405, {"error": {"code": "method", "message": "GET, PUT or POST"}}

    def _status(self, call_id: str, part: str, headers: dict[str, str]) -> Answer:
        done = self._done.get((call_id, part))
        if done is not None:
            return 200, {"received": done.size, "complete": True, "sha256": done.sha256}
        partial = self._partial.get((call_id, part))
        if partial is None:
            return 200, {"received": 0, "complete": False, "sha256": None}
        return 200, {"received": len(partial.data), "complete": False, "sha256": partial.sha256}

    def _chunk(self, call_id: str, part: str, headers: dict[str, str], body: bytes) -> Answer:
        sha = headers.get("x-recording-sha256", "")
        found = _RANGE.fullmatch(headers.get("content-range", "").strip())
        if not _SHA.fullmatch(sha) or found is None:
            return _error(400, "invalid_parameter", "Content-Range and X-Recording-Sha256 needed")
        start, end, size = (int(g) for g in found.groups())
        if end - start + 1 != len(body) or end >= size:
            return _error(400, "invalid_parameter", "Content-Range does not match the body")
        key = (call_id, part)
        done = self._done.get(key)
        if done is not None:
            if done.sha256 != sha:
                return _error(409, "already_stored", "another file is stored for this call")
            return 200, {"received": size, "complete": True, "duplicate": True, "id": done.id}
        partial = self._partial.get(key)
        if partial is None or partial.sha256 != sha or partial.size != size:
            partial = self._partial[key] = _Partial(sha, size)
        if start != len(partial.data):
            return _error(
                409,
                "offset_mismatch",
                f"expected a chunk at {len(partial.data)}",
                received=len(partial.data),
            )
        if self._cut_after is not None and len(partial.data) + len(body) > self._cut_after:
            keep = max(0, self._cut_after - len(partial.data))
            partial.data.extend(body[:keep])
            self._cutting = True
            raise Cut
        partial.data.extend(body)
        if len(partial.data) < size:
            return 200, {"received": len(partial.data), "complete": False}
        data = bytes(partial.data)
        del self._partial[key]
        if hashlib.sha256(data).hexdigest() != sha:
            return _error(422, "hash_mismatch", "the file's SHA-256 does not match; send it again")
        duration = headers.get("x-recording-duration") or None
        stored = StoredRecording(
            id=str(uuid.uuid4()),
            call_id=call_id,
            part=part,
            sha256=sha,
            size=size,
            content_type=headers.get("x-recording-content-type", "application/octet-stream"),
            duration=float(duration) if duration else None,
            event_id=headers.get("x-event-id", f"{call_id}/recording/{part}"),
            data=data,
        )
        self._done[key] = stored
        self.stored.append(stored)
        return 200, {"received": size, "complete": True, "duplicate": False, "id": stored.id}

    def _link(self, call_id: str, part: str, body: bytes) -> Answer:
        import json

        try:
            payload = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "invalid_json", "body is not JSON")
        if not isinstance(payload, dict) or not str(payload.get("recording_url", "")).startswith(
            ("http://", "https://")
        ):
            return _error(400, "missing_field", "recording_url is required")
        duplicate = any(link["call_id"] == call_id and link["part"] == part for link in self.links)
        self.links.append({**payload, "call_id": call_id, "part": part})
        return 200, {"result": "ok", "duplicate": duplicate}

    # -- control -----------------------------------------------------------------------

    def control(self, method: str, name: str, payload: dict[str, Any]) -> Answer | None:
        """``/_double/recordings`` (GET: what is stored), ``.../outage`` (POST, DELETE)."""
        if name == "recordings" and method == "GET":
            with self._lock:
                return 200, {
                    "stored": [s.as_dict() for s in self.stored],
                    "partial": [
                        {"call_id": c, "part": p, "received": len(v.data), "size": v.size}
                        for (c, p), v in self._partial.items()
                    ],
                    "links": list(self.links),
                }
        if name == "recordings/outage" and method == "POST":
            count = payload.get("count")
            self.outage(int(payload["after"]), None if count is None else int(count))
            return 200, {"result": "ok"}
        if name == "recordings/outage" and method == "DELETE":
            self.recover()
            return 200, {"result": "ok"}
        return None
