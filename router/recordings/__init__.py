"""Call recordings: MixMonitor by rule or API, a catalog, retention, signed links.

The core side of issue 15. :mod:`.naming` derives file names from the call's
id, :mod:`.settings` reads ``[recordings]``, :mod:`.mixmonitor` starts and
stops recording, :mod:`.closer` waits for Asterisk to finish a file (and
transcodes it), :mod:`.store` is the catalog that a receiver (the 1C plugin)
polls and confirms, :mod:`.retention` bounds the disk, :mod:`.signing` makes
the short-lived links the API serves. :mod:`.recorder` ties them to the engine
as a built-in plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from router.recordings.settings import RecordingSettings
from router.recordings.signing import KEY_NAME, Signer, load_key
from router.recordings.store import Recording, RecordingStore, UsageReport

if TYPE_CHECKING:  # pragma: no cover
    from router.config import Config

__all__ = [
    "Recording",
    "RecordingSettings",
    "RecordingStore",
    "Signer",
    "UsageReport",
    "load_key",
    "open_recordings",
    "recording_signer",
]


def open_recordings(config: Config, state_dir: Path) -> RecordingStore | None:
    """The catalog of an engine whose config has ``[recordings]``, else None.

    What a receiving plugin calls in ``callrouter_startup``:
    ``open_recordings(engine.config, engine.state_dir)``.
    """
    if config.recordings is None:
        return None
    return RecordingStore(state_dir)


def recording_signer(settings: RecordingSettings, state_dir: Path) -> Signer:
    """The link signer: ``[recordings] key_file``, or ``state_dir/recordings.key`` (made 0600)."""
    if settings.key_file is not None:  # the administrator's: may be a link
        return Signer(load_key(settings.key_file))
    return Signer(load_key(state_dir / KEY_NAME, follow_symlinks=False))
