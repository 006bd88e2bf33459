"""``callrouter recordings status|retry``: what the recordings hold; send failed ones again.

``status [--config PATH] [--json]`` reads router.toml as ``run`` does (no
Asterisk needed) and the recordings catalog in ``[router] state_dir``: files
per state, bytes on disk, bytes not yet confirmed by 1C and how old the oldest
of them is, against ``[recordings] max_bytes`` and ``hard_cap_bytes``, and the
uploads the receiver gave up on, with its reason. The same figures are
:meth:`router.recordings.RecordingStore.usage` for a metrics exporter. Exit
code 0, or 1 when undelivered files are over the hard cap's half (an outage
worth a look) or the table is missing.

``retry (ID... | --failed) [--config PATH]`` asks, through the catalog
(:meth:`~router.recordings.RecordingStore.ask_retry`), for failed uploads to be
sent again, each only when its file still holds the bytes catalogued; the 1C
plugin of a running router queues them at its next step (a second), a stopped
one at its start. It touches the catalog alone, as the running service does
(SQLite, WAL), so it works either way. Exit code 0; 1 when an ID named was
not sent again (no catalog at all included), each refusal said on stderr; 2
for a command line it cannot take (neither IDs nor ``--failed``, both, an ID
that is no call id), said as argparse says one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from router.commands._offline import load_offline, refuse_another_owner, service_state_dir
from router.config import PluginSettings
from router.errors import ConfigError, RecordingError
from router.logsafe import escape_controls
from router.recordings.files import open_regular
from router.recordings.naming import check_call_id, check_part
from router.recordings.settings import RecordingSettings
from router.recordings.store import DB_NAME, Recording, RecordingStore
from router.wording import counted

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
        metavar="PATH",
        help="settings file (default: ./router.toml when there is one)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=run)
    retry = actions.add_parser(
        "retry",
        help="send failed uploads to 1C again (after 1C was fixed)",
        description=(
            "Ask for uploads the 1C plugin gave up on (1C refused them: 400, already_stored) "
            "to be sent again, each only when its file still holds the bytes catalogued. "
            "Works whether callrouter runs or not: a running one sends them within seconds, "
            "a stopped one at its start. No Asterisk needed."
        ),
    )
    retry.add_argument(
        "ids",
        nargs="*",
        metavar="ID",
        help="a call id (all its files) or CALL_ID/PART (mix, in, out)",
    )
    retry.add_argument(
        "--failed",
        action="store_true",
        help="every upload that failed (those `recordings status` lists)",
    )
    retry.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="settings file (default: ./router.toml when there is one)",
    )
    retry.set_defaults(func=run_retry, parser=retry)


#: Failed uploads ``status`` names one a line, and lists in ``--json``.
_SHOWN: Final = 10
#: The plugin that sends recordings to 1C (its ``[plugins.onec]`` table).
ONEC: Final = "onec"
_LISTED: Final = 100


#: What ``status`` and ``retry`` say without recordings (exit code 1).
_OFF = "router.toml has no [recordings] table: recordings are off"


@contextlib.contextmanager
def _catalog(state_dir: Path) -> Iterator[RecordingStore]:
    """The catalog in ``state_dir``, closed after; one SQLite cannot read (not
    a database, damaged, locked past its timeout) is the command's error, not
    a traceback (hleft33's trial: ``sqlite3.DatabaseError: file is not a
    database``)."""
    path = state_dir / DB_NAME
    try:
        store = RecordingStore(state_dir)
    except sqlite3.Error as exc:
        told = str(exc)  # named and what to do already when it is no database
        if not told.startswith(f"{path}: "):
            told = f"{path}: cannot read the recordings catalog: {told}"
        raise RecordingError(told) from None
    try:
        yield store
    except sqlite3.Error as exc:
        raise RecordingError(f"{path}: cannot read the recordings catalog: {exc}") from None
    finally:
        store.close()


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
        print(f"callrouter recordings status: error: {_OFF}", file=sys.stderr)
        return 1
    state_dir = service_state_dir(offline.config, "recordings status")
    if not (state_dir / DB_NAME).exists():
        report: dict[str, Any] = {
            "counts": {},
            "bytes_on_disk": 0,
            "undelivered_bytes": 0,
            "failed_bytes": 0,
            "oldest_undelivered_age": None,
            "oldest_waiting_age": None,
            "upload_failed": 0,
            "upload_failed_bytes": 0,
            "upload_failures": [],
        }
    else:
        with _catalog(state_dir) as store:
            usage = store.usage()
            failures = store.upload_failures(_LISTED)
        oldest = usage.oldest_undelivered_at
        now = time.time()
        report = {
            "counts": usage.counts,
            "bytes_on_disk": usage.bytes_on_disk,
            "undelivered_bytes": usage.undelivered_bytes,
            "failed_bytes": usage.failed_bytes,
            "oldest_undelivered_age": None if oldest is None else round(now - oldest),
            "oldest_waiting_age": (
                None if usage.oldest_waiting_at is None else round(now - usage.oldest_waiting_at)
            ),
            "upload_failed": usage.upload_failed,
            "upload_failed_bytes": usage.upload_failed_bytes,
            "upload_failures": [
                {
                    "call_id": r.call_id,
                    "part": r.part,
                    "file": str(r.file),
                    "size": r.size,
                    "failed_at": r.upload_failed_at,
                    "reason": r.upload_error,
                }
                for r in failures
            ],
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
    states = ("recording", "closed", "delivered", "empty", "removed", "missing", "failed")
    print("files: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in states))
    bound = f" of {_size(settings.max_bytes)} (max_bytes)" if settings.max_bytes else ""
    print(f"on disk: {_size(report['bytes_on_disk'])}{bound}")
    age = report["oldest_waiting_age"]
    waiting = f", the oldest for {age} s" if age is not None else ""
    left = report["undelivered_bytes"] - report["upload_failed_bytes"]
    print(f"not confirmed by 1C: {_size(left)}{waiting}")
    if report["upload_failed"]:
        print(
            f"failed uploads, not sent again: {counted(report['upload_failed'], 'file')}, "
            f"{_size(report['upload_failed_bytes'])} (callrouter recordings retry --failed "
            "sends them again)"
        )
        for item in report["upload_failures"][:_SHOWN]:
            print(f"  {item['call_id']}/{item['part']}: {escape_controls(item['reason'])}")
        more = report["upload_failed"] - min(_SHOWN, len(report["upload_failures"]))
        if more > 0:
            print(f"  and {more} more (--json lists {_LISTED})")
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


def _is_id(given: str) -> bool:
    """Whether ``given`` is a call id or ``CALL_ID/PART`` (checked before
    anything is read, so nothing else reaches a query)."""
    call_id, _, part = given.partition("/")
    try:
        check_call_id(call_id)
        if part:
            check_part(part)
    except ValueError:
        return False
    return True


def _wanted(store: RecordingStore, ids: list[str]) -> list[tuple[str, list[Recording]]]:
    """Each ID given (each one :func:`_is_id`) and the catalog's files it names."""
    found: list[tuple[str, list[Recording]]] = []
    for given in ids:
        call_id, _, part = given.partition("/")
        rows = [r for r in store.for_call(call_id) if not part or r.part == part]
        found.append((given, rows))
    return found


def _holds_catalogued(rec: Recording, settings: RecordingSettings) -> str:
    """Why ``rec``'s file cannot be sent as catalogued; empty when it can (its first
    ``size`` bytes have the catalogued SHA-256; in pull mode, nothing after them)."""
    if rec.file is None or rec.size is None or rec.sha256 is None:
        return "the catalog has no complete file for it"
    try:
        with open_regular(rec.file) as fh:
            on_disk = fh.seek(0, 2)
            if on_disk < rec.size:
                return f"{rec.file} holds {on_disk} bytes, fewer than the {rec.size} catalogued"
            if settings.mode == "pull" and on_disk != rec.size:
                return f"{rec.file} holds {on_disk} bytes, not the {rec.size} catalogued"
            fh.seek(0)
            digest = hashlib.sha256()
            left = rec.size
            while left > 0 and (data := fh.read(min(1 << 20, left))):
                digest.update(data)
                left -= len(data)
    except FileNotFoundError:
        return f"{rec.file} is gone"
    except OSError as exc:
        return f"cannot read {rec.file}: {exc.strerror or exc}"
    if digest.hexdigest() != rec.sha256:
        return f"{rec.file} no longer holds the bytes catalogued (other SHA-256)"
    return ""


def _why_not(rec: Recording) -> str:
    """Why a file not ``closed`` is not sent again."""
    if rec.state == "delivered":
        return f"1C has it already (delivered to {rec.receiver or 'the receiver'})"
    if rec.state == "recording":
        return "still being recorded"
    if rec.state == "failed":
        return f"the recording itself failed ({rec.note[:200]}): no complete file to send"
    if rec.state == "empty":
        return f"it has no sound, never sent to 1C ({rec.note[:200]})"
    if rec.state == "missing":
        return f"its file was deleted outside callrouter ({rec.note[:200]})"
    return f"its file was removed ({rec.note[:200]})"


def _onec_off(plugins: PluginSettings) -> str:
    """Why the 1C plugin, the one that sends recordings, would not run; "" when it would."""
    if ONEC not in plugins.settings:
        return f"router.toml has no [plugins.{ONEC}] table: the 1C plugin is off"
    if ONEC in plugins.disabled:
        return f"[plugins] disabled lists {ONEC!r}: the 1C plugin is off"
    if plugins.enabled and ONEC not in plugins.enabled:
        return f"[plugins] enabled does not list {ONEC!r}: the 1C plugin is off"
    return ""


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """A command line ``retry`` cannot take, said as argparse says one: its
    usage and ``callrouter recordings retry: error: ...`` on stderr, exit 2
    (before anything is read: router.toml, the catalog)."""
    args.parser.print_usage(sys.stderr)
    print(f"callrouter recordings retry: error: {message}", file=sys.stderr)
    return 2


def run_retry(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.failed):
        return _usage_error(
            args,
            "give the call ids (CALL_ID or CALL_ID/PART) or --failed, not both"
            if args.ids
            else "give the call ids (CALL_ID or CALL_ID/PART) or --failed",
        )
    for given in args.ids:
        if not _is_id(given):
            return _usage_error(
                args,
                f"{escape_controls(given)!r} is neither a call id "
                "(1733050000.42) nor CALL_ID/PART (1733050000.42/mix)",
            )
    offline = load_offline(args.config)
    settings = offline.config.recordings
    if settings is None:
        print(f"callrouter recordings retry: error: {_OFF}", file=sys.stderr)
        return 1
    off = _onec_off(offline.config.plugins)
    if off:
        # Nothing would take the request up: saying "queued for 1C again" would be
        # a promise nobody keeps, so nothing is asked.
        raise ConfigError(
            f"{off}: nothing would send the files to 1C; "
            "nothing was asked (turn the 1C plugin on, then run this again)"
        )
    if offline.config.router.shadow:
        # A shadow router uploads nothing (the 1C plugin starts no uploads in
        # shadow mode): "queued for 1C again" would be a promise nobody keeps.
        raise ConfigError(
            f"{offline.config.where('router', 'shadow')}: "
            "[router] shadow = true: a shadow callrouter sends no recordings to 1C; nothing "
            "was asked (run this with the live instance's --config)"
        )
    state_dir = service_state_dir(offline.config, "recordings retry")
    # It writes in the service's catalog (and SQLite's -wal/-shm beside it when the
    # service is stopped): as the service's user only.
    refuse_another_owner(offline.config, state_dir, "recordings retry")
    if not (state_dir / DB_NAME).exists():
        nothing = f"no recordings catalog in {state_dir}: nothing was recorded, nothing to send"
        if args.ids:  # the calls named are not there: an error (exit 1)
            print(f"callrouter recordings retry: error: {nothing}", file=sys.stderr)
            return 1
        print(nothing)  # --failed: none failed, nothing to do
        return 0
    sent = 0
    refused = False
    with _catalog(state_dir) as store:
        if args.failed:
            asked: list[tuple[str, list[Recording]]] = [
                (f"{r.call_id}/{r.part}", [r]) for r in store.upload_failures(1_000_000)
            ]
            if not asked:
                print("no failed uploads: nothing to send again")
        else:
            asked = _wanted(store, args.ids)
        for given, rows in asked:
            if not rows:
                print(f"{given}: no recording of that call in the catalog", file=sys.stderr)
                refused = True
            for rec in rows:
                name = f"{rec.call_id}/{rec.part}"
                why = _why_not(rec) if rec.state != "closed" else _holds_catalogued(rec, settings)
                if why:
                    print(f"{name}: not sent again: {escape_controls(why)}", file=sys.stderr)
                    refused = True
                    continue
                if not store.ask_retry([rec.id]):
                    print(f"{name}: not sent again: it is no longer closed", file=sys.stderr)
                    refused = True
                    continue
                sent += 1
                was = (
                    f"it failed: {escape_controls(rec.upload_error)}"
                    if rec.upload_error
                    else "no failed upload was recorded for it: one still waiting is "
                    "unaffected, one an older callrouter gave up on goes again"
                )
                print(f"{name}: queued for 1C again ({was})")
    if sent:
        print(
            f"{counted(sent, 'file')} to send again: a running callrouter's 1C plugin queues "
            "them within seconds, a stopped one at its start (its log says `queued for 1C "
            "again`); `callrouter recordings status` shows how it went"
        )
    return 1 if refused and not args.failed else 0
