"""Asterisk 22's error answers, for the replaying fake's action handlers
(``ajam_replay.on(action, handler)``): one builder instead of a ``denied``
written again in every test."""

from __future__ import annotations


def error(message: str) -> list[tuple[str, str]]:
    """An action's ``Response: Error`` with ``message``."""
    return [("Response", "Error"), ("Message", message)]


def denied(sent: object) -> list[tuple[str, str]]:
    """The answer to an action the manager user's classes do not allow."""
    return error("Permission denied")
