"""Call recordings as a built-in plugin named ``recordings``: the ``record`` action and
the closing of files (the work is in :mod:`router.recordings.recorder`)."""

from __future__ import annotations

from router.recordings.recorder import Recorder

__all__ = ["Recorder", "make_plugin"]


def make_plugin() -> Recorder:
    return Recorder()
