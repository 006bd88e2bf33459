"""``callrouter recordings status [--config FILE] [--json]``: what the recordings hold.

Reads router.toml as ``run`` does (no Asterisk needed) and the recordings
catalog in ``[router] state_dir``: files per state, bytes on disk, bytes not
yet confirmed by 1C and how old the oldest of them is, against
``[recordings] max_bytes`` and ``hard_cap_bytes``. The same figures are
:meth:`router.recordings.RecordingStore.usage` for a metrics exporter. Exit
code 0, or 1 when undelivered files are over the hard cap's half (an
outage worth a look) or the table is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from router.commands._offline import load_offline, service_state_dir
from router.recordings.store import DB_NAME, RecordingStore

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "recordings",
        help="call recordings: files, bytes, delivery to 1C",
        description="Call recordings ([recordings] in router.toml).",
    )
    actions = parser.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        help="files per state, disk usage, what 1C has not confirmed yet",
        description="Print the recordings catalog's figures (no Asterisk needed).",
    )
    status.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file (default: ./router.toml when there is one)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=run)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    offline = load_offline(args.config)
    settings = offline.config.recordings
    if settings is None:
        print("callrouter recordings: router.toml has no [recordings] table: recordings are off")
        return 1
    state_dir = service_state_dir(offline.config, "recordings status")
    if not (state_dir / DB_NAME).exists():
        report: dict[str, Any] = {
            "counts": {},
            "bytes_on_disk": 0,
            "undelivered_bytes": 0,
            "failed_bytes": 0,
            "oldest_undelivered_age": None,
        }
    else:
        store = RecordingStore(state_dir)
        try:
            usage = store.usage()
        finally:
            store.close()
        oldest = usage.oldest_undelivered_at
        report = {
            "counts": usage.counts,
            "bytes_on_disk": usage.bytes_on_disk,
            "undelivered_bytes": usage.undelivered_bytes,
            "failed_bytes": usage.failed_bytes,
            "oldest_undelivered_age": None if oldest is None else round(time.time() - oldest),
        }
    report["max_bytes"] = settings.max_bytes
    report["hard_cap_bytes"] = settings.hard_cap_bytes
    report["mode"] = settings.mode
    worrying = bool(
        settings.hard_cap_bytes and report["undelivered_bytes"] > settings.hard_cap_bytes // 2
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 1 if worrying else 0
    counts = report["counts"]
    states = ("recording", "closed", "delivered", "removed", "failed")
    print("files: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in states))
    bound = f" of {_size(settings.max_bytes)} (max_bytes)" if settings.max_bytes else ""
    print(f"on disk: {_size(report['bytes_on_disk'])}{bound}")
    age = report["oldest_undelivered_age"]
    waiting = f", the oldest for {age} s" if age is not None else ""
    print(f"not confirmed by 1C: {_size(report['undelivered_bytes'])}{waiting}")
    if report["failed_bytes"]:
        until = (
            f"deleted {settings.max_age_days:g} days after they failed"
            if settings.max_age_days
            else "kept, as max_age_days is 0"
        )
        print(f"left by failed recordings: {_size(report['failed_bytes'])} on disk, {until}")
    if worrying:
        print(
            "warning: undelivered recordings are over half of hard_cap_bytes "
            f"({_size(settings.hard_cap_bytes)}); is 1C reachable?"
        )
    return 1 if worrying else 0
