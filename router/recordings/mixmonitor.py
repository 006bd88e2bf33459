"""Starting and stopping MixMonitor for a call: the AMI headers, and the catalog rows.

The file names come from :mod:`router.recordings.naming` (the call id, never
caller data), the folder from ``[recordings] dir``. ``legs`` picks the files:
``mix`` one file with both directions, ``in`` only what the recorded
channel's party says (MixMonitor's ``r()``), ``out`` only what that party
hears (``t()``), ``both`` all three. Each file is a row of the
:class:`~router.recordings.store.RecordingStore` before Asterisk is asked,
so the recorder knows which files to close whoever started them (a rule or
the API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from router.errors import RecordingError
from router.recordings.naming import FileName, file_names
from router.recordings.settings import RecordingSettings
from router.recordings.store import Recording, RecordingStore

__all__ = ["Send", "mixmonitor_headers", "start_recording", "stop_recording"]

#: An AMI send (the engine's facade, or the API's bounded one).
Send = Callable[[str, Mapping[str, Any]], Awaitable[object]]


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
    headers = {"Channel": channel, "File": file}
    if options:
        headers["Options"] = options
    return headers


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
) -> list[Recording]:
    """Catalog and start the recording of ``call_id`` on ``channel``.

    Returns the files started; empty when the call is already being recorded.
    ``ValueError`` for a bad call id, legs or format; the AMI error when
    Asterisk refuses (the rows are dropped again: no file will come).
    """
    if not channel or any(ch in channel for ch in ",&|()") or not channel.isprintable():
        raise ValueError(f"channel {channel[:60]!r} is not a single channel name")
    names = file_names(call_id, legs or settings.legs, fmt or settings.format)
    fresh = store.start(
        names,
        pbx_paths=[settings.pbx_path(n) for n in names],
        local_paths=[settings.local_path(n) for n in names],
        channel=channel,
        extensions=extensions,
    )
    if not fresh:
        return []
    started = [n for n in names if any(r.part == n.part for r in fresh)]
    try:
        await send("MixMonitor", mixmonitor_headers(settings, channel, started))
    except BaseException:
        for row in fresh:
            store.forget(row.id)
        raise
    return fresh


async def stop_recording(send: Send, store: RecordingStore, call_id: str) -> list[str]:
    """StopMixMonitor on every channel recording ``call_id``; the channels stopped."""
    channels = sorted({r.channel for r in store.recording(call_id)})
    if not channels:
        raise RecordingError(f"call {call_id!r} is not being recorded")
    for channel in channels:
        await send("StopMixMonitor", {"Channel": channel})
    return channels
