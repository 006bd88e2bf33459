"""The whole life of every call, from Asterisk's CEL, live and after gaps.

``model`` (CallEvent, CelRecord), ``fold`` (the per-Linkedid state machine,
no I/O), ``sources`` (reading stored CEL: SQLite, PostgreSQL), ``replay``
(after a gap, at start, on demand) and ``service`` (what the engine runs).
docs/history.md describes the model and the event ids.
"""

from router.calllife.model import CallEvent, CelRecord, Transfer

__all__ = ["CallEvent", "CelRecord", "Transfer"]
