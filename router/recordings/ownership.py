"""Which of a call's running recordings the API may stop: its own, and only where
stopping them ends nothing else.

A call can be recorded twice at once: a rule's ``record`` (a compliance
recording the administrator requires) and an agent's ``POST
/api/v1/calls/{id}/recording`` (another part: ``legs: in`` beside the rule's
``mix``). The API's stop ends the API's MixMonitor and leaves the rule's
writing. It cannot when it could not name the API's MixMonitor alone:

- a rule or a plugin asked for a file the API's MixMonitor writes (the catalog
  made that file theirs, :meth:`~router.recordings.store.RecordingStore.start`):
  the same MixMonitor (same kept id) writes both;
- the API's file has no kept id (started by an older callrouter) and another
  recording runs on its channel: the stop would name the channel's newest
  callrouter MixMonitor (:func:`~router.recordings.mixmonitor.stop_ours`), which
  may be the rule's.

A file already being stopped (its mark, :attr:`~router.recordings.store.Recording.stop_asked_at`,
set by an earlier stop whose ``MixMonitorStop`` has not come yet) is not stopped
again: its MixMonitor is gone, a second ``StopMixMonitor`` naming it is refused
and would take the mark back (the recorder would then close every file on the
channel, the rule's too), and its id, a heap address in Asterisk, may already
be a new MixMonitor's on the channel.

Unless the mark is stale and the file says its MixMonitor lives
(:func:`stale_marks`): a stop's ``MixMonitorStop`` comes within a second, so a
mark older than :data:`STALE_STOP` whose file was written more than
:data:`WRITTEN_MARGIN` after it is a stop that never reached Asterisk (callrouter
stopped between the mark and the action). Only that MixMonitor writes the file,
so while the file is written the kept id is still its own, and stopping by it
ends nothing else.

Asterisk could be asked instead (``Getvar`` of ``MIXMONITOR(<id>,filename)``
answers the file of a living MixMonitor, empty for one that ended), but not
safely: on a MixMonitor that writes only ``r()``/``t()`` files (an API
recording of one leg) that read crashes Asterisk 22.10 (a segfault, seen on
the sandbox on 2026-12-04), and an id reused by the PBX's own such MixMonitor
would make any read of it one. callrouter never reads ``MIXMONITOR()``.

Sans-I/O over catalog rows.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Final

from router.recordings.store import Recording

__all__ = ["STALE_STOP", "WRITTEN_MARGIN", "ApiStop", "api_stop", "shares", "stale_marks"]

#: Seconds after which a stop mark whose ``MixMonitorStop`` never came is looked at
#: again (the event comes within a second of a stop Asterisk took).
STALE_STOP: Final = 30.0
#: How long after its mark a file must have been written to tell its MixMonitor
#: lives: Asterisk writes a GSM file every 20 s (a WAV every 2 s), so a living
#: one has written past this by :data:`STALE_STOP`; a stopped one closed its file
#: within a second of the mark. The rest is room for a file system's clock.
WRITTEN_MARGIN: Final = 10.0


@dataclass(frozen=True, slots=True)
class ApiStop:
    """The rows whose MixMonitor the API stops, those that go on recording, and the
    API's own already being stopped."""

    stop: tuple[Recording, ...]
    keep: tuple[Recording, ...]
    stopping: tuple[Recording, ...] = ()


def shares(row: Recording, others: list[Recording]) -> bool:
    """Could stopping ``row``'s MixMonitor end one of ``others`` (not the API's; or,
    for the stop of a call that ended, which ends one token's only, another
    token's)?"""
    if row.mixmonitor_id:
        return any(
            o.channel == row.channel and o.mixmonitor_id == row.mixmonitor_id for o in others
        )
    return any(o.channel == row.channel for o in others)


def stale_marks(rows: Iterable[Recording], now: float) -> list[Recording]:
    """The API's files whose stop mark is older than :data:`STALE_STOP` and whose
    MixMonitor has a kept id: those a stop may have missed (whether it did, their
    file's time tells: :data:`WRITTEN_MARGIN`). A file without a kept id is never
    asked again: the channel's newest id may be a rule's MixMonitor."""
    return [
        r
        for r in rows
        if r.origin.kind == "api"
        and r.mixmonitor_id
        and r.stop_asked_at is not None
        and now - r.stop_asked_at > STALE_STOP
    ]


def api_stop(rows: Iterable[Recording], *, alive: Container[int] = ()) -> ApiStop:
    """Split a call's files still being written into what the API's stop ends, what
    goes on (every file a rule, a plugin or an unknown origin started, and the API's
    own where its MixMonitor cannot be stopped alone) and the API's files an earlier
    stop is ending; ``alive``: rows of :func:`stale_marks` whose file was written
    since, stopped again (see the module docstring)."""
    running = list(rows)
    others = [r for r in running if r.origin.kind != "api"]
    stopping = [
        r
        for r in running
        if r.origin.kind == "api" and r.stop_asked_at is not None and r.id not in alive
    ]
    asked = {r.id for r in stopping}
    stop = [
        r for r in running if r.origin.kind == "api" and r.id not in asked and not shares(r, others)
    ]
    chosen = {r.id for r in stop} | asked
    return ApiStop(tuple(stop), tuple(r for r in running if r.id not in chosen), tuple(stopping))
