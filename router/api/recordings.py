"""Recordings over the API: fetch one by a signed link or a token, start and stop one.

``GET /api/v1/recordings/{call_id}/{part}`` serves one file of a call's
recording. Two ways in: the short-lived signed link
(:mod:`router.recordings.signing`, ``?expires=..&sig=..``) that the 1C plugin
hands 1C in pull mode, needing no token; or a token with ``recordings:read``
whose extensions include one of the call's (a manager's panel fetching its
own calls). The link names the call and the part, never a path: the file is
looked up in the catalog, so no parameter can reach another file. A value
that cannot be a call id or a part is 404 (as for a recording that does not
exist); a malformed ``expires`` or ``sig`` is 400, a well-formed signature
that does not verify (tampered, or expired) is 403. Single byte ranges are
honoured (206, or 416 past the end), so a player can seek. A request by a
link whose signature is valid and unexpired is counted against the
``[api] anonymous_rate`` of its address and that link, not its address's
alone (:func:`signed_link`): 1C fetches every recording so, all at once
after an outage.

``GET /api/v1/recordings/{call_id}`` lists a call's files with a fresh
signed link each (when ``[recordings] public_url`` is set).
``POST``/``DELETE /api/v1/calls/{id}/recording`` start and stop recording
a live call (``calls:record``), as the ``record`` rule action does.

A token reads a recording when one of its extensions had a leg on the call
while it was recorded (the catalog's ``extensions``, kept by the recorder; at
the start, as for a rule's, with the legs then bridged with the call's:
:attr:`~router.api.context.ApiContext.present`), not merely at some time: a
queue member who rang and was cancelled before, or a manager who transferred
the caller away before a later recording, does not. A token for every extension
(``"*"``) reads them all. The stop ends only a recording the API started (the
catalog keeps each one's origin and its MixMonitor's id): one a rule, a plugin
or an older callrouter started goes on, whoever asks, so a recording an
administrator requires is out of an agent's reach. With both on the call the
stop ends the API's and answers what still records (``still_recording``); with
nothing of the API's to stop it is 409
(:mod:`router.recordings.ownership`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Send

from router.api.auth import Token, audit_of, authorize
from router.api.calls import (
    call_extensions,
    live_extensions,
    no_such_channel,
    require_live_leg,
)
from router.api.context import read_json
from router.api.errors import (
    ApiError,
    bad_parameter,
    refuse_repeated_query,
    refuse_unknown_fields,
    refuse_unknown_query,
    single_header,
)
from router.errors import AMIError, RecordingError
from router.recordings import RecordingStore, recording_signer
from router.recordings.closer import written_after
from router.recordings.files import NotTheRecording, open_recording
from router.recordings.mixmonitor import start_recording, stop_recording
from router.recordings.naming import CALL_ID, FORMATS, LEGS, PARTS
from router.recordings.ownership import (
    STALE_STOP,
    WRITTEN_MARGIN,
    ApiStop,
    api_stop,
    shares,
    stale_marks,
)
from router.recordings.retention import folder_holds_files, note_missing
from router.recordings.store import ORIGINS, Origin, Recording

if TYPE_CHECKING:  # pragma: no cover
    from router.api.context import ApiContext
    from router.recordings.settings import RecordingSettings
    from router.recordings.signing import Signer

log = logging.getLogger("router.api")

__all__ = ["OPENAPI", "parse_range", "routes", "signed_link"]

_CHUNK: Final = 64 * 1024
_RANGE: Final = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")
#: ``empty``: a file of no sound, never sent to 1C, is still the call's file.
_SERVABLE: Final = ("closed", "delivered", "empty")
#: The files a signed link serves.
_LINKED: Final = ("closed", "delivered")
_RECORD_KEYS: Final = ("legs", "format")
#: A signed link's path, as :meth:`~router.recordings.signing.Signer.url` makes it.
_LINK_PATH: Final = b"/api/v1/recordings/"
#: The longest target :func:`signed_link` looks at: a link's is at most 19 + 64
#: + 1 + 3 of path and 9 + 12 + 5 + 64 of query, 177 bytes.
_LINK_MAX: Final = 256
_LINK_QUERY: Final = ("expires", "sig")


def signed_link(method: bytes, target: bytes, verify: Callable[[str, str, str, str], bool]) -> bool:
    """Whether a request (its method and raw target, as the request line has
    them) asks for a recording by a link :meth:`Signer.url
    <router.recordings.signing.Signer.url>` made, with a signature ``verify``
    (:meth:`Signer.verify <router.recordings.signing.Signer.verify>`) takes:
    untampered and unexpired. Only what :func:`routes`' ``fetch`` serves by
    such a link: ``GET`` or ``HEAD``, the origin-form path with a call id and a
    part, ``expires`` and ``sig`` once each and nothing else. Bounded work for
    any target: a longer one than a link's is no link, and one HMAC at most.

    The listener asks before the app sees the request
    (:mod:`router.api.addresses`): such a request is counted in a bucket of
    its own (its address's and the link's), not its address's ``[api]
    anonymous_rate``."""
    if method not in (b"GET", b"HEAD") or len(target) > _LINK_MAX:
        return False
    if not target.startswith(_LINK_PATH):
        return False
    try:
        text = target[len(_LINK_PATH) :].decode("ascii")
    except UnicodeDecodeError:
        return False
    path, mark, query = text.partition("?")
    names = path.split("/")
    if not mark or len(names) != 2:
        return False
    call_id, part = names
    if part not in PARTS or CALL_ID.fullmatch(call_id) is None:
        return False
    fields: dict[str, str] = {}
    for item in query.split("&"):
        name, equals, value = item.partition("=")
        if not equals or name not in _LINK_QUERY or name in fields:
            return False
        fields[name] = value
    if len(fields) != len(_LINK_QUERY):
        return False
    return verify(call_id, part, fields["expires"], fields["sig"])


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``header`` asks of a ``size``-byte file, inclusive; None for
    the whole file (no header, several ranges, or one we do not understand: RFC 9110
    lets a server ignore Range). ApiError 416 when it starts past the end.

    An empty file has no byte a ``Content-Range`` could name (``bytes 0--1/0`` is
    not one): ``bytes=0-0`` starts past its end (416, ``bytes */0``), and the last N
    bytes of it, which RFC 9110 14.1.2 counts as satisfiable, are the whole
    (empty) file: the Range is ignored (14.2 allows that for no content), 200.
    """
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or (not found[1] and not found[2]):
        return None
    if not found[1]:  # the last N bytes
        count = int(found[2])
        if count == 0:
            raise _unsatisfiable(size)
        if size == 0:
            return None
        return max(0, size - count), size - 1
    start = int(found[1])
    if start >= size:
        raise _unsatisfiable(size)
    end = int(found[2]) if found[2] else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


def _same_file(if_range: str, rec: Recording) -> bool:
    """Whether an ``If-Range`` names this file: its strong ETag exactly (a weak
    one, ``W/"..."``, or a date never does: RFC 9110 13.1.5)."""
    return rec.sha256 is not None and if_range.strip() == f'"{rec.sha256}"'


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        f"the range starts past the end of the recording ({size} bytes)",
        headers={"Content-Range": f"bytes */{size}"},
    )


def _not_found(call_id: str) -> ApiError:
    return ApiError(404, f"no recording {call_id[:60]!r} that this request may fetch")


def _still_recording(call_id: str, part: str) -> ApiError:
    return ApiError(
        409,
        f"recording {call_id!r} ({part}) is still being recorded: it can be fetched once "
        f"the call ends or its recording stops (GET /api/v1/recordings/{call_id} tells "
        "each file's state)",
        state="recording",
    )


def _ended(ctx: ApiContext, token: Token, call_id: str) -> bool:
    """Whether ``call_id`` is a call that ended which GET /calls/{id} still shows
    ``token`` (a click-to-call it placed): answered as ended, not as unknown."""
    known = ctx.ended_call(call_id) if ctx.ended_call is not None else None
    return known is not None and any(token.sees(e) for e in known)


def _has_ended(call_id: str, what: str) -> ApiError:
    return ApiError(409, f"call {call_id!r} has ended: {what}", state="ended")


def _none_for(ctx: ApiContext, token: Token, call_id: str) -> ApiError:
    """The 404 of no recording ``token`` may read: why, for a call it sees (live,
    or ended and still shown by GET /calls/{id}); the same as for no call else."""
    call = ctx.engine.calls.get(call_id)
    if (call is not None and any(token.sees(e) for e in call_extensions(call, None))) or _ended(
        ctx, token, call_id
    ):
        return ApiError(
            404,
            f"call {call_id!r} has no recording this token may read: none was made "
            "while one of its extensions was on the call",
        )
    return _not_found(call_id)


def _open(folder: Path, path: Path) -> tuple[BinaryIO, int]:
    """The recording open and its size: a regular file below ``folder`` (``[recordings]
    local_dir``), reached without following a link on the way (:func:`open_recording`)."""
    handle = open_recording(folder, path)
    try:
        return handle, os.fstat(handle.fileno()).st_size
    except BaseException:
        handle.close()
        raise


async def _file_chunks(
    handle: BinaryIO,
    start: int,
    length: int,
    served: Callable[[], Awaitable[object]] | None = None,
    sha256: str | None = None,
    what: str = "a recording",
) -> AsyncIterator[bytes]:
    """``length`` bytes of ``handle`` from ``start`` (closed at the end); then
    ``served()``, once the server took every one of them (the generator resumes
    after the last chunk only when its send returned) and, with ``sha256``, only
    when what it took hashes to that. A client that disconnects first cancels the
    stream, and a file shorter than it was ends it early: ``served`` is not called."""
    digest = hashlib.sha256() if served is not None and sha256 is not None else None
    try:
        await asyncio.to_thread(handle.seek, start)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(handle.read, min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            if digest is not None:
                digest.update(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)
    if left != 0 or served is None:
        return
    if digest is not None and digest.hexdigest() != sha256:
        log.error(
            "recordings: %s served by its signed link is not the file catalogued (SHA-256 %s,"
            " catalogued %s): something replaced it at its name; not counted as delivered",
            what,
            digest.hexdigest()[:16],
            sha256[:16] if sha256 else "",
        )
        return
    await served()


class _ClosingStream(StreamingResponse):
    """A streamed recording whose file is closed when the client goes away.

    Starlette cancels the streaming task on a disconnect and leaves the body's
    generator suspended at its ``yield``: the recording stayed open until the
    garbage collector finalized the generator, a descriptor per download cut
    short (and a ResourceWarning where the loop had closed by then). Closed
    here, shielded from that cancellation, so :func:`_file_chunks` runs its
    ``finally`` at once."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


class _Recordings:
    """The catalog and the signer, opened on first use (the API may start before a
    recording was ever made)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._store: RecordingStore | None = None
        self._signer: Signer | None = None

    @property
    def settings(self) -> RecordingSettings:
        settings = self.ctx.engine.config.recordings
        if settings is None:
            raise ApiError(404, "recordings are off: router.toml has no [recordings] table")
        return settings

    @property
    def store(self) -> RecordingStore:
        if self._store is None:
            self.settings  # noqa: B018 - 404 when recordings are off
            self._store = RecordingStore(self.ctx.engine.state_dir)
        return self._store

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = recording_signer(self.settings, self.ctx.engine.state_dir)
        return self._signer

    def load_signer(self) -> None:
        """The signer read now, when recordings are on, so the listener can check
        links (:meth:`verified`); a key that cannot be read is said by the
        request that needs it, as before."""
        if self.ctx.engine.config.recordings is None:
            return
        try:
            self.signer  # noqa: B018 - loads it
        except (OSError, ValueError) as exc:
            log.debug("api: the recordings key is not read yet: %s", exc)

    def verified(self, call_id: str, part: str, expires: str, sig: str) -> bool:
        """Whether a link verifies, by the signer already read (never a file read
        here: the listener asks for every request, before any rate), and while
        recordings are on."""
        signer = self._signer
        if signer is None or self.ctx.engine.config.recordings is None:
            return False
        return signer.verify(call_id, part, expires, sig)

    def link(self, rec: Recording) -> str | None:
        base = self.settings.public_url
        if base is None:
            return None
        return self.signer.url(base, rec.call_id, rec.part, self.settings.url_ttl)

    def view(self, rec: Recording) -> dict[str, Any]:
        return {
            "call_id": rec.call_id,
            "part": rec.part,
            "state": rec.state,
            "content_type": rec.content_type,
            "size": rec.size,
            "duration": rec.duration,
            "sha256": rec.sha256,
            "origin": rec.origin.kind,
            # A signed link serves no empty file (1C's, above): fetched with the token.
            "url": self.link(rec) if rec.state in _LINKED and rec.file is not None else None,
            "note": rec.note,
        }


def _ids(request: Request) -> tuple[str, str | None]:
    call_id = str(request.path_params["call_id"])
    part = request.path_params.get("part")
    if CALL_ID.fullmatch(call_id) is None or (part is not None and part not in PARTS):
        raise _not_found(call_id)
    return call_id, None if part is None else str(part)


def _visible(token: Token, rec: Recording) -> bool:
    """Whether ``token`` may read ``rec``: one of its extensions was on the call while
    it was recorded; a token for every extension (``"*"``) reads every recording."""
    return "*" in token.extensions or any(token.sees(ext) for ext in rec.extensions)


def _started_by(token: Token, rows: list[Recording]) -> frozenset[int]:
    """The ids of ``rows`` the API started for ``token`` (its name is kept in
    the origin: ``token NAME (extensions)``; names are plain words). A token for
    every extension (``"*"``, the supervisor's) may stop any of them: it sees
    every recording, and on a live call it could stop them all too."""
    prefix = f"token {token.name} ("
    every = "*" in token.extensions
    return frozenset(
        r.id for r in rows if r.origin.kind == "api" and (every or r.origin.by.startswith(prefix))
    )


def _only(plan: ApiStop, ids: frozenset[int]) -> ApiStop:
    """``plan`` stopping only the rows ``ids``: the API's others go on. Nor one of
    ``ids`` whose stop could end another's: a MixMonitor with no kept id is
    stopped by the channel's newest callrouter id (:func:`shares`), which may be
    another token's recording on the same channel."""
    theirs = [r for r in (*plan.stop, *plan.keep, *plan.stopping) if r.id not in ids]
    stop = tuple(r for r in plan.stop if r.id in ids and not shares(r, theirs))
    chosen = {r.id for r in stop}
    return ApiStop(
        stop,
        plan.keep + tuple(r for r in plan.stop if r.id not in chosen),
        tuple(r for r in plan.stopping if r.id in ids),
    )


def _not_ours(call_id: str, kept: tuple[Recording, ...]) -> ApiError:
    """409 when nothing of the call the API may stop is being written (``kept`` all
    goes on: see :mod:`router.recordings.ownership`)."""
    others = sorted({r.origin.kind for r in kept if r.origin.kind != "api"})
    if not others and kept:  # a call that ended: another token's recording beside it
        return ApiError(
            409,
            f"call {call_id!r}: the recording this token started has no kept MixMonitor "
            "id and another token's runs on its channel, so it cannot be stopped alone "
            "(it ends with the call or after [recordings] max_duration)",
        )
    if not others:
        return ApiError(409, f"call {call_id!r} is not being recorded")
    what = {
        "rule": "a rule",
        "plugin": "a plugin",
        "unknown": "an older callrouter (origin unknown)",
    }
    shared = any(r.origin.kind == "api" for r in kept)
    return ApiError(
        409,
        f"call {call_id!r} is being recorded by {' and '.join(what[o] for o in others)}, "
        "not through the API: the API stops only recordings it started "
        "(this one ends with the call or after [recordings] max_duration)"
        + (
            "; the API's file of it is written by the same MixMonitor, so it goes on too"
            if shared
            else ""
        ),
        origin=others[0],
    )


@dataclass(frozen=True, slots=True)
class _Restop:
    """Stale stop marks this request renewed (:func:`_restop_stale`): each row's mark
    before, and the time they were renewed to; put back when the stop fails."""

    marks: dict[int, float]
    at: float


async def _restop_stale(
    store: RecordingStore, rows: list[Recording], plan: ApiStop
) -> tuple[ApiStop, _Restop | None]:
    """The plan again with the API's files whose earlier stop never reached Asterisk
    (a stale mark, the file written since: :func:`~router.recordings.ownership.stale_marks`),
    their marks renewed, so that only this request stops them; else ``plan``. With it
    the marks renewed, for :func:`_unrenew` should the stop fail."""
    now = time.time()
    stale = stale_marks(plan.stopping, now)
    if not stale:
        return plan, None
    written = await asyncio.to_thread(
        lambda: [
            r.id
            for r in stale
            if r.stop_asked_at is not None
            and written_after(r.local_path, r.stop_asked_at + WRITTEN_MARGIN)
        ]
    )
    alive = store.renew_stop(written, marked_before=now - STALE_STOP, now=now)
    if not alive:
        return plan, None
    log.warning(
        "recordings: call %s: the API's earlier stop of %s never reached Asterisk (its file"
        " is still written); stopping it again",
        stale[0].call_id,
        ", ".join(sorted(r.part for r in stale if r.id in alive)),
    )
    before = {r.id: r.stop_asked_at for r in stale if r.id in alive}
    marks = {rid: mark for rid, mark in before.items() if mark is not None}
    return api_stop(rows, alive=set(alive)), _Restop(marks, now)


def _unrenew(
    store: RecordingStore,
    call_id: str,
    renewed: _Restop,
    exc: BaseException,
    stopped: Collection[int],
) -> None:
    """A stop again failed (Asterisk refused it, or was out of reach): put back the
    marks it renewed, so the next request tries again at once rather than
    :data:`~router.recordings.ownership.STALE_STOP` seconds later; once, a WARNING.
    Not those of ``stopped``, the rows whose MixMonitor this request did stop
    before the failure (a stop of several MixMonitors, one refused after another
    was stopped): put back, their stale mark would have the next request stop the
    ended MixMonitor's id again. Only a mark still the renewed one is put back
    (compare and set), and the row stays marked either way: a ``MixMonitorStop``
    that does come still closes it."""
    marks = {rid: mark for rid, mark in renewed.marks.items() if rid not in stopped}
    if not marks:
        return  # what it stopped again is stopped; another file's stop failed
    back = store.unrenew_stop(marks, renewed_at=renewed.at)
    log.warning(
        "recordings: call %s: stopping the API's recording again failed (%s); %s",
        call_id,
        str(exc)[:200] or type(exc).__name__,
        "the next stop tries again" if back else "its stop mark changed meanwhile",
    )


def routes(ctx: ApiContext) -> list[BaseRoute]:
    recordings = _Recordings(ctx)
    recordings.load_signer()
    ctx.recording_link = partial(signed_link, verify=recordings.verified)

    async def fetch(request: Request) -> Response:
        call_id, part = _ids(request)
        assert part is not None
        audit = audit_of(request)
        audit.operation, audit.target = "recordings:read", call_id
        query = request.query_params
        refuse_unknown_query(query.keys(), ("expires", "sig"))
        refuse_repeated_query((name for name, _ in query.multi_items()), ("expires", "sig"))
        signed = "sig" in query or "expires" in query
        if signed or "expires" in query:
            expires, sig = query.get("expires", ""), query.get("sig", "")
            if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
                raise bad_parameter("expires", "Unix seconds", expires)
            if not (re.fullmatch(r"[0-9a-f]{64}", sig)):
                raise bad_parameter("sig", "64 hex digits")  # no echo: it is a credential
            if not recordings.signer.verify(call_id, part, expires, sig):
                raise ApiError(403, "the link is expired or its signature does not match")
            audit.token = "signed-link"
            rec = recordings.store.get(call_id, part)
        else:
            token = await authorize(request, "recordings:read")
            rec = recordings.store.get(call_id, part)
            if rec is not None and not _visible(token, rec):
                rec = None
            if rec is None and not any(
                _visible(token, r) for r in recordings.store.for_call(call_id)
            ):
                raise _none_for(ctx, token, call_id)
        if rec is not None and rec.state == "recording":
            # Asterisk still writes it: what would be served is a file cut short
            # (a WAV whose header says it is empty), and a 404 read as "no such
            # recording". Told only to a link or token that may read it.
            raise _still_recording(call_id, part)
        if rec is None or rec.state not in _SERVABLE or rec.file is None:
            raise _not_found(call_id)
        if signed and rec.state == "empty":
            # The signed link is 1C's (pull mode: the call's hang-up carries one while
            # the file is still being written); 1C wants no recording of no sound.
            raise ApiError(404, f"recording {call_id!r} has no sound (empty): not sent to 1C")
        try:
            handle, size = await asyncio.to_thread(_open, recordings.settings.local_dir, rec.file)
        except NotTheRecording as exc:
            # Not the recording: a catalog row naming a file elsewhere, or a link
            # someone with write access to the recordings folder put on the way.
            log.warning("api: recording %s/%s not served: %s", call_id, part, exc.strerror)
            raise ApiError(404, f"recording {call_id!r} is no longer kept") from None
        except FileNotFoundError:
            # Deleted by hand: the catalog says so from now on (one WARNING). Not
            # when its folder is gone or empty (a mount gone, its empty mount point
            # left: the file comes back with it; retention decides about those).
            if await asyncio.to_thread(folder_holds_files, rec.file.parent):
                await asyncio.to_thread(
                    note_missing, recordings.store, rec, "found by a download", time.time()
                )
            raise ApiError(404, f"recording {call_id!r} is no longer kept") from None
        except OSError:
            raise ApiError(404, f"recording {call_id!r} is no longer kept") from None
        try:
            return await _answer(request, rec, handle, size, signed=signed)
        except BaseException:
            await asyncio.to_thread(handle.close)
            raise

    async def _answer(
        request: Request, rec: Recording, handle: BinaryIO, size: int, *, signed: bool
    ) -> Response:
        """The answer serving ``handle``; it owns ``handle`` once it returns a stream."""
        assert rec.file is not None
        asked = single_header(request, "range", "Range")
        if_range = single_header(request, "if-range", "If-Range")
        if asked is not None and if_range is not None and not _same_file(if_range, rec):
            # RFC 9110 13.1.5: a client resuming a download of another file (its
            # ETag, a date: none is sent) gets the whole file, never a piece of
            # this one to splice onto what it holds.
            asked = None
        wanted = parse_range(asked, size)
        headers = {
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-store",
            "Content-Disposition": f'attachment; filename="{rec.file.name}"',
        }
        if rec.sha256:
            headers["ETag"] = f'"{rec.sha256}"'
        start, end, status = 0, size - 1, 200
        if wanted is not None:
            start, end = wanted
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        media = rec.content_type or "application/octet-stream"
        if request.method == "HEAD":
            await asyncio.to_thread(handle.close)
            return Response(status_code=status, headers=headers, media_type=media)
        confirm = None
        if signed and wanted is None and recordings.settings.mode == "pull" and rec.sha256:
            # Pull mode: 1C has the file once a signed link served all of it. Not a
            # BackgroundTask: Starlette runs those after a client disconnected mid-body.
            confirm = partial(
                asyncio.to_thread,
                recordings.store.confirm,
                rec.call_id,
                rec.part,
                rec.sha256,
                "pull",
            )
        return _ClosingStream(
            _file_chunks(
                handle, start, end - start + 1, confirm, rec.sha256, f"{rec.call_id} {rec.part}"
            ),
            status_code=status,
            headers=headers,
            media_type=media,
        )

    async def list_call(request: Request) -> JSONResponse:
        call_id, _ = _ids(request)
        token = await authorize(request, "recordings:read")
        audit_of(request).target = call_id
        rows = [r for r in recordings.store.for_call(call_id) if _visible(token, r)]
        if not rows:
            raise _none_for(ctx, token, call_id)
        return JSONResponse({"call_id": call_id, "files": [recordings.view(r) for r in rows]})

    async def start(request: Request) -> JSONResponse:
        call_id = str(request.path_params["id"])
        token = await authorize(request, "calls:record")
        call = ctx.engine.calls.get(call_id)
        if call is None and _ended(ctx, token, call_id):
            raise _has_ended(call_id, "there is nothing left to record")
        if call is None or not any(token.sees(e) for e in call_extensions(call, None)):
            raise ApiError(404, f"no call {call_id[:80]!r} that this token may see")
        body = await read_json(request)
        refuse_unknown_fields(body, _RECORD_KEYS)
        legs, fmt = body.get("legs"), body.get("format")
        # Text before the lookup: a JSON array or object is unhashable (a 500).
        if legs is not None and (not isinstance(legs, str) or legs not in LEGS):
            raise ApiError(400, f"legs: expected one of {', '.join(LEGS)}", field="legs")
        if fmt is not None and (not isinstance(fmt, str) or fmt not in FORMATS):
            raise ApiError(400, f"format: expected one of {', '.join(FORMATS)}", field="format")
        # After the body's await: the token's extension must be on the call now,
        # not only once (a queue's ring, a transfer, a conference it left).
        require_live_leg(token, call)
        if CALL_ID.fullmatch(call_id) is None:
            raise ApiError(409, "this call's id cannot name a recording")
        channel = call.waiting_channel or next(
            (c.name for c in call.channels.values() if not c.hung_up), ""
        )
        if not channel:
            raise ApiError(409, f"call {call_id!r} has no live channel to record")
        settings, store = recordings.settings, recordings.store
        ctx.require_asterisk()
        live = live_extensions(call)
        mine = sorted(e for e in live if token.sees(e))
        # Who may read it: as for a rule's, the legs then bridged with the call's too
        # (a leg of an older call keeps that call's Linkedid, and its BridgeEnter came
        # while nothing was recorded: the live legs alone would miss it).
        readers = live | await ctx.present(call) if ctx.present is not None else live
        try:
            started = await start_recording(
                lambda name, headers: ctx.send(name, headers),
                store,
                settings,
                call_id=call_id,
                channel=channel,
                legs=legs,
                fmt=fmt,
                extensions=readers,
                origin=Origin("api", f"token {token.name} ({', '.join(mine)})"),
            )
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        if not started:
            raise ApiError(409, f"call {call_id!r} is already being recorded")
        return JSONResponse(
            {"call_id": call_id, "files": [recordings.view(r) for r in started]}, status_code=201
        )

    async def stop(request: Request) -> JSONResponse:
        call_id = str(request.path_params["id"])
        token = await authorize(request, "calls:record")
        call = ctx.engine.calls.get(call_id)
        store = recordings.store
        # Read before any answer, whatever the call: a 404 for a live call the
        # token may not see then costs what one for no call costs, and its
        # time tells no call apart from one in progress.
        rows = store.recording(call_id)
        # A call that ended while the recorded channel lives on (an attended
        # transfer into an application renames it into another call): only the
        # token that started the recording may stop it then, nobody's leg
        # being on the call any more.
        own = _started_by(token, rows) if call is None else None
        if call is None and not own:
            if _ended(ctx, token, call_id):
                raise _has_ended(call_id, "its recordings stopped with it")
            raise ApiError(404, f"no call {call_id[:80]!r} that this token may see")
        if call is not None:
            if not any(token.sees(e) for e in call_extensions(call, None)):
                raise ApiError(404, f"no call {call_id[:80]!r} that this token may see")
            require_live_leg(token, call)
        plan, renewed = api_stop(rows), None
        if own is not None:
            plan = _only(plan, own)
        if not plan.stop and plan.stopping:
            plan, renewed = await _restop_stale(store, rows, plan)
            if own is not None:
                plan = _only(plan, own)
        if not plan.stop and plan.stopping:
            raise ApiError(
                409,
                f"call {call_id!r}: the API's recording is already being stopped "
                f"({', '.join(sorted(r.part for r in plan.stopping))})",
            )
        if not plan.stop:
            raise _not_ours(call_id, plan.keep)
        done: set[int] = set()  # the rows stopped, should a later MixMonitor's stop fail
        try:
            ctx.require_asterisk()
            channels = await stop_recording(
                lambda n, h: ctx.send(n, h),
                store,
                call_id,
                plan.stop,
                done=done,
                gone=no_such_channel,
            )
        except BaseException as exc:
            if renewed is not None:
                _unrenew(store, call_id, renewed, exc, done)
            # A stop that failed part way says which files it did stop: the next
            # DELETE stops only the rest, and the client should not think the
            # first ones still record.
            failed: ApiError | None = None
            if isinstance(exc, RecordingError):
                failed = ApiError(409, str(exc))
            elif isinstance(exc, AMIError):  # pragma: no cover - ctx.send maps these
                failed = ApiError(503, str(exc))
            elif isinstance(exc, ApiError):
                failed = exc
            if failed is not None and done:
                failed.extra["stopped_files"] = sorted(r.part for r in plan.stop if r.id in done)
            if failed is None or failed is exc:
                raise
            raise failed from None
        # What goes on (a rule's compliance recording), as the catalog has it now.
        going = [r for r in store.recording(call_id) if r.id in {k.id for k in plan.keep}]
        return JSONResponse(
            {
                "call_id": call_id,
                "stopped": channels,
                "files": [recordings.view(r) for r in plan.stop],
                "still_recording": [recordings.view(r) for r in going],
            },
            status_code=202,
        )

    return [
        Route("/api/v1/recordings/{call_id}/{part}", fetch, methods=["GET", "HEAD"]),
        Route("/api/v1/recordings/{call_id}", list_call, methods=["GET"]),
        Route("/api/v1/calls/{id}/recording", start, methods=["POST"]),
        Route("/api/v1/calls/{id}/recording", stop, methods=["DELETE"]),
    ]


_PROBLEM: Final[dict[str, Any]] = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _PROBLEM for code in codes}


_CALL_ID: Final = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "description": "The call's id (its Linkedid)",
    "schema": {"type": "string"},
}
_FILE: Final = {
    "type": "object",
    "required": ["call_id", "part", "state"],
    "properties": {
        "call_id": {"type": "string"},
        "part": {"type": "string", "enum": list(PARTS)},
        "state": {"type": "string"},
        "content_type": {"type": ["string", "null"]},
        "size": {"type": ["integer", "null"]},
        "duration": {"type": ["number", "null"]},
        "sha256": {"type": ["string", "null"]},
        "origin": {
            "type": "string",
            "enum": list(ORIGINS),
            "description": "Who started it; the API's stop ends only 'api' ones",
        },
        "url": {"type": ["string", "null"], "description": "A signed link, short-lived"},
        "note": {
            "type": "string",
            "description": "Why the file is in its state (empty, missing, failed, removed)",
        },
    },
}
_FILES: Final = {
    "description": "The call's recording files",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["call_id", "files"],
                "properties": {
                    "call_id": {"type": "string"},
                    "files": {"type": "array", "items": _FILE},
                },
            }
        }
    },
}
_AUDIO: Final = {
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in ("audio/wav", "audio/mpeg", "audio/ogg", "audio/x-gsm", "audio/basic")
    }
}
_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The call's Linkedid",
    "schema": {"type": "string"},
}

#: This module's part of ``/api/v1/openapi.json``.
OPENAPI: dict[str, Any] = {
    "paths": {
        "/api/v1/recordings/{call_id}/{part}": {
            "get": {
                "operationId": "getRecording",
                "summary": "One recording file, by a signed link or a token (recordings:read)",
                "description": "409 (the problem's state 'recording') while Asterisk still "
                "writes the file: it is served once the call ends or its recording stops.",
                "parameters": [
                    _CALL_ID,
                    {
                        "name": "part",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(PARTS)},
                    },
                    {"name": "expires", "in": "query", "schema": {"type": "string"}},
                    {"name": "sig", "in": "query", "schema": {"type": "string"}},
                    {"name": "Range", "in": "header", "schema": {"type": "string"}},
                    {"name": "If-Range", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "The whole file", **_AUDIO},
                    "206": {"description": "The byte range asked for", **_AUDIO},
                    **_errors(400, 401, 403, 404, 409, 416, 429),
                },
            }
        },
        "/api/v1/recordings/{call_id}": {
            "get": {
                "operationId": "listRecordings",
                "summary": "A call's recording files, each with a signed link (recordings:read)",
                "parameters": [_CALL_ID],
                "responses": {"200": _FILES, **_errors(401, 403, 404, 429)},
            }
        },
        "/api/v1/calls/{id}/recording": {
            "post": {
                "operationId": "startRecording",
                "summary": "Record a live call (MixMonitor) (calls:record)",
                "parameters": [_ID],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "legs": {"type": "string", "enum": list(LEGS)},
                                    "format": {"type": "string", "enum": list(FORMATS)},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {**_FILES, "description": "Recording started"},
                    **_errors(400, 401, 403, 404, 409, 413, 429, 503),
                },
            },
            "delete": {
                "operationId": "stopRecording",
                "summary": "Stop recording a live call (StopMixMonitor) (calls:record)",
                "description": "Only the recordings the API started: one a rule or a plugin "
                "started goes on (listed in still_recording); with nothing of the API's to "
                "stop, 409 with the problem's origin. A call that ended while its recording "
                "goes on (the recorded channel renamed into another call by an attended "
                "transfer): only the token that started it, or one for every extension, "
                "may stop it, else 404.",
                "parameters": [_ID],
                "responses": {
                    "202": {
                        "description": "StopMixMonitor sent; the file is closed and delivered",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["call_id", "stopped", "files", "still_recording"],
                                    "properties": {
                                        "call_id": {"type": "string"},
                                        "stopped": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                            "description": "The channels whose MixMonitor "
                                            "was stopped, or had ended with the channel (Asterisk "
                                            "answered 'No such channel': it hung up just before)",
                                        },
                                        "files": {
                                            "type": "array",
                                            "items": _FILE,
                                            "description": "The files stopped (closed and "
                                            "delivered as usual)",
                                        },
                                        "still_recording": {
                                            "type": "array",
                                            "items": _FILE,
                                            "description": "The call's files that go on "
                                            "being written (a rule's, a plugin's)",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    **_errors(401, 403, 404, 409, 429, 503),
                },
            },
        },
    }
}
