"""Starting and stopping MixMonitor for a call: the AMI headers, and the catalog rows.

The file names come from :mod:`router.recordings.naming` (the call id, never
caller data), the folder from ``[recordings] dir``. ``legs`` picks the files:
``mix`` one file with both directions, ``in`` only what the recorded
channel's party says (MixMonitor's ``r()``), ``out`` only what that party
hears (``t()``), ``both`` all three. Each file is a row of the
:class:`~router.recordings.store.RecordingStore` before Asterisk is asked,
so the recorder knows which files to close whoever started them (a rule or
the API).

Two ways to start: a call still waiting in ``callrouter-inbound`` is handed
to the dialplan (:func:`hand_to_dialplan`: ``Setvar`` of ``CALLROUTER_RECORD``,
and its Redirect passes through ``[callrouter-record]``, which runs
``MixMonitor``), so the manager user needs only ``write = call``. A call
already talking can only be recorded with the AMI action ``MixMonitor``
(:func:`start_recording`), which Asterisk files under ``write = system``.

Both give callrouter's MixMonitor the option ``i(CALLROUTER_REC_ID)``: Asterisk
stores its id in that channel variable, and a stop (:func:`stop_ours`) reads it
back with ``Getvar`` and names it in ``StopMixMonitor``. Without a
``MixMonitorID`` Asterisk stops the newest MixMonitor of the channel, which on a
PBX that records every call itself (FreePBX) is usually the PBX's own, started
by its ``Dial`` after ours. The AMI action also answers with the id (Asterisk 22:
``MixMonitorID``, given the ``i()`` option), kept with the files
(:attr:`~router.recordings.store.Recording.mixmonitor_id`): the variable holds
only the channel's newest callrouter MixMonitor, and a rule's and the API's can
both run on one channel, so :func:`stop_recording` names a kept id first.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from router.dialplan import (
    MIXMONITOR_ID_VARIABLE,
    PART_SEPARATOR,
    RECORD_PATH_CHARS,
    RECORD_VARIABLE,
)
from router.errors import AMIActionError, RecordingError
from router.recordings.naming import FileName, file_names
from router.recordings.settings import RecordingSettings
from router.recordings.store import Origin, Recording, RecordingStore

__all__ = [
    "NO_SUCH_CHANNEL",
    "Send",
    "channel_gone",
    "dialplan_value",
    "hand_to_dialplan",
    "mixmonitor_headers",
    "start_recording",
    "stop_ours",
    "stop_recording",
]

#: An AMI send (the engine's facade, or the API's bounded one).
Send = Callable[[str, Mapping[str, Any]], Awaitable[object]]

#: A MixMonitor id as Asterisk makes them (the address of its data, ``0x7f3c2c00a8b0``:
#: one that ended may be reused by the next); anything else read back from the
#: channel or answered is not put into an action.
_MIXMONITOR_ID: Final = re.compile(r"[0-9A-Za-z._-]{1,80}")
#: Who started a recording when the caller does not say: a plugin of its own.
PLUGIN: Final = Origin("plugin")
#: The option that stores the MixMonitor's id on the channel.
ID_OPTION: Final = f"i({MIXMONITOR_ID_VARIABLE})"
#: Asterisk's ``Message`` refusing an action (``StopMixMonitor``, ``Getvar``) on a
#: channel it no longer has.
NO_SUCH_CHANNEL: Final = "No such channel"


def channel_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is Asterisk's refusal of an action on a channel it no longer has
    (:data:`NO_SUCH_CHANNEL`), as the AMI client raises it. For a stop that is a stop
    done: a MixMonitor hangs on its channel and ended with it (its files close on the
    channel's ``Hangup``)."""
    return isinstance(exc, AMIActionError) and exc.response.get("Message") == NO_SUCH_CHANNEL


def mixmonitor_headers(
    settings: RecordingSettings, channel: str, names: Iterable[FileName]
) -> dict[str, str]:
    """The ``MixMonitor`` action's headers for ``names`` on ``channel``."""
    file = ""
    options = ""
    for name in names:
        path = settings.pbx_path(name)
        if name.part == "mix":
            file = path
        elif name.part == "in":
            options += f"r({path})"
        else:
            options += f"t({path})"
    return {"Channel": channel, "File": file, "Options": options + ID_OPTION}


def dialplan_value(settings: RecordingSettings, names: Iterable[FileName]) -> str:
    """``CALLROUTER_RECORD`` for ``names``: ``mix^in^out``, full paths, empty where unused.

    ``ValueError`` for a path ``[callrouter-record]`` would not keep as it is
    (its ``FILTER`` allows letters, digits and ``/._-``): the dialplan would
    refuse it, so the rule is told now instead of a call going unrecorded.
    """
    paths = {name.part: settings.pbx_path(name) for name in names}
    for path in paths.values():
        if not set(path) <= RECORD_PATH_CHARS or ".." in path or not path.startswith("/"):
            raise ValueError(
                f"recording path {path[:80]!r} has characters the dialplan's "
                "[callrouter-record] drops (letters, digits and /._- only)"
            )
    return PART_SEPARATOR.join(paths.get(part, "") for part in ("mix", "in", "out"))


def _catalog(
    store: RecordingStore,
    settings: RecordingSettings,
    *,
    call_id: str,
    channel: str,
    legs: str | None,
    fmt: str | None,
    extensions: Iterable[str],
    origin: Origin,
) -> tuple[list[Recording], list[FileName]]:
    """The fresh catalog rows and their names; both empty when already recording."""
    names = file_names(call_id, legs or settings.legs, fmt or settings.format)
    if not channel or any(ch in channel for ch in ",&|()") or not channel.isprintable():
        raise ValueError(f"channel {channel[:60]!r} is not a single channel name")
    fresh = store.start(
        names,
        pbx_paths=[settings.pbx_path(n) for n in names],
        local_paths=[settings.local_path(n) for n in names],
        channel=channel,
        extensions=extensions,
        origin=origin,
    )
    return fresh, [n for n in names if any(r.part == n.part for r in fresh)]


async def hand_to_dialplan(
    send: Send,
    store: RecordingStore,
    settings: RecordingSettings,
    *,
    call_id: str,
    channel: str,
    legs: str | None = None,
    fmt: str | None = None,
    extensions: Iterable[str] = (),
    origin: Origin = PLUGIN,
) -> list[Recording]:
    """Catalog the recording of ``call_id`` and tell the waiting ``channel`` its files.

    The caller then routes the channel's Redirect through ``[callrouter-record]``
    (:attr:`~router.calls.Call.redirect_via`), which starts MixMonitor. Returns
    the files, empty when the call is already being recorded; ``ValueError``
    for a bad call id, legs, format or folder; the AMI error when Asterisk
    refuses the ``Setvar`` (the rows are dropped again).
    """
    fresh, started = _catalog(
        store,
        settings,
        call_id=call_id,
        channel=channel,
        legs=legs,
        fmt=fmt,
        extensions=extensions,
        origin=origin,
    )
    if not fresh:
        return []
    try:
        value = dialplan_value(settings, started)
        await send("Setvar", {"Channel": channel, "Variable": RECORD_VARIABLE, "Value": value})
    except BaseException:
        for row in fresh:
            store.forget(row.id)
        raise
    return fresh


async def start_recording(
    send: Send,
    store: RecordingStore,
    settings: RecordingSettings,
    *,
    call_id: str,
    channel: str,
    legs: str | None = None,
    fmt: str | None = None,
    extensions: Iterable[str] = (),
    origin: Origin = PLUGIN,
) -> list[Recording]:
    """Catalog and start the recording of ``call_id`` on ``channel`` (AMI ``MixMonitor``).

    For a live call (the API's operation): Asterisk files the action under
    ``write = system``; without it the AMI answers ``Permission denied`` and
    the client raises :class:`~router.errors.AMIPrivilegeError` naming the
    class. Returns the files started; empty when the call is already being
    recorded. ``ValueError`` for a bad call id, legs or format; the AMI error
    when Asterisk refuses (the rows are dropped again: no file will come).
    """
    fresh, started = _catalog(
        store,
        settings,
        call_id=call_id,
        channel=channel,
        legs=legs,
        fmt=fmt,
        extensions=extensions,
        origin=origin,
    )
    if not fresh:
        return []
    try:
        await _name_unnamed(send, store, channel, {r.id for r in fresh})
        answer = await send("MixMonitor", mixmonitor_headers(settings, channel, started))
    except BaseException:
        for row in fresh:
            store.forget(row.id)
        raise
    mixmonitor_id = _header(answer, "MixMonitorID")
    if _MIXMONITOR_ID.fullmatch(mixmonitor_id) is None:
        return fresh  # an Asterisk that does not say: stops read the channel variable
    store.set_mixmonitor_id((r.id for r in fresh), mixmonitor_id)
    return [dataclasses.replace(r, mixmonitor_id=mixmonitor_id) for r in fresh]


async def _name_unnamed(send: Send, store: RecordingStore, channel: str, fresh: set[int]) -> None:
    """Keep the id of the channel's running callrouter MixMonitor for its files without
    one, before a new MixMonitor's ``i()`` overwrites the variable that holds it.

    A rule's ``[callrouter-record]`` MixMonitor is known only by that variable; once
    the API's started on the same channel the variable names the API's, and every
    later stop of the rule's files (``max_duration``) would stop the API's instead,
    leaving the rule's unbounded. One ``Getvar``, only when such files run there.
    """
    unnamed = [
        r.id for r in store.recording_on((channel,)) if not r.mixmonitor_id and r.id not in fresh
    ]
    if not unnamed:
        return
    answer = await send("Getvar", {"Channel": channel, "Variable": MIXMONITOR_ID_VARIABLE})
    mixmonitor_id = _header(answer, "Value")
    if _MIXMONITOR_ID.fullmatch(mixmonitor_id) is not None:
        store.set_mixmonitor_id(unnamed, mixmonitor_id)


def _header(answer: object, name: str) -> str:
    """The header ``name`` of an action's answer; empty when there is none."""
    response = getattr(answer, "response", None)
    get = getattr(response, "get", None)
    value = get(name) if callable(get) else None
    return value if isinstance(value, str) else ""


async def stop_ours(send: Send, channel: str) -> str:
    """``StopMixMonitor`` of callrouter's own MixMonitor on ``channel``; its id.

    The id comes from the channel variable the ``i()`` option filled. A
    :class:`~router.errors.RecordingError` when there is none (a MixMonitor
    started by a ``[callrouter-record]`` older than the ``i()`` option): then
    nothing is stopped, since a stop without the id could end the PBX's own
    recording instead. The AMI error when Asterisk refuses (the id is no
    longer on the channel: that MixMonitor already ended).
    """
    answer = await send("Getvar", {"Channel": channel, "Variable": MIXMONITOR_ID_VARIABLE})
    mixmonitor_id = _header(answer, "Value")
    if _MIXMONITOR_ID.fullmatch(mixmonitor_id) is None:
        raise RecordingError(
            f"{channel}: no id of callrouter's MixMonitor in {MIXMONITOR_ID_VARIABLE} "
            f"(got {mixmonitor_id[:40]!r}), so it is not stopped: a StopMixMonitor without "
            "one could stop the PBX's own recording. Update [callrouter-record] from "
            f"examples/asterisk/extensions.conf (its MixMonitor has {ID_OPTION})"
        )
    await send("StopMixMonitor", {"Channel": channel, "MixMonitorID": mixmonitor_id})
    return mixmonitor_id


async def stop_recording(
    send: Send,
    store: RecordingStore,
    call_id: str,
    rows: Iterable[Recording] | None = None,
    *,
    done: set[int] | None = None,
    gone: Callable[[BaseException], bool] = channel_gone,
) -> list[str]:
    """Stop the MixMonitors writing ``rows`` (by default every file of ``call_id`` still
    being written); the channels stopped.

    A MixMonitor whose id the catalog kept is stopped by it; the others by the id
    on the channel (:func:`stop_ours`, once a channel). The rows are marked first
    (:meth:`~router.recordings.store.RecordingStore.ask_stop`), so that the
    recorder closes them, and not another MixMonitor's files, on the channel's
    ``MixMonitorStop`` (which names no MixMonitor); the mark is taken back when
    Asterisk refuses.

    A refusal that says the channel is gone (``gone``: by default
    :func:`channel_gone`; the API's send raises its own errors) is a stop done, not
    a failure: the MixMonitor ended with its channel, the rows keep their marks and
    the channel counts as stopped. Any other failure raises at once, the later
    MixMonitors not tried; ``done``, when given, has by then the ids of the rows
    whose MixMonitor was stopped (or ended with its channel), so that a caller
    knows which rows a stop that failed part way did stop: a stale mark the caller
    renewed is put back only for the others.
    """
    found = store.recording(call_id) if rows is None else list(rows)
    if not found:
        raise RecordingError(f"call {call_id!r} is not being recorded")
    groups: dict[tuple[str, str], list[Recording]] = {}
    for row in found:
        groups.setdefault((row.channel, row.mixmonitor_id), []).append(row)
    stopped: set[str] = set()
    unnamed: set[str] = set()
    ended: set[str] = set()
    for (channel, mixmonitor_id), group in sorted(groups.items()):
        if not mixmonitor_id and channel in unnamed:
            continue
        ids = [r.id for r in group]
        if not mixmonitor_id:
            unnamed.add(channel)
            ids = [r.id for r in found if r.channel == channel and not r.mixmonitor_id]
        marked = store.ask_stop(ids)  # not those an earlier stop marked: see ask_stop
        if channel not in ended:  # gone: its every MixMonitor ended with it
            try:
                if mixmonitor_id:
                    await send(
                        "StopMixMonitor", {"Channel": channel, "MixMonitorID": mixmonitor_id}
                    )
                else:
                    await stop_ours(send, channel)
            except BaseException as exc:
                if not gone(exc):
                    store.ask_stop(marked, asked=False)
                    raise
                ended.add(channel)
        stopped.add(channel)
        if done is not None:
            done.update(ids)
    return sorted(stopped)
