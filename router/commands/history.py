"""``callrouter history replay``: rebuild calls from Asterisk's stored CEL.

The same folding the running router does after a gap (router/calllife):
read every call with a CEL record in the window from ``[history] cel``,
fold each whole call, and either print each call's story (``--dry-run``) or
hand the events to the plugins' ``callrouter_call_event`` (the 1C plugin
queues them; its queue and 1C drop what they already have, by event id).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path

from router.calllife.fold import Folder
from router.calllife.model import CallEvent
from router.calllife.sources import open_source
from router.commands._offline import (
    plugin_state_dirs,
    refuse_another_owner,
    service_state_dir,
    without_ami_secret,
)
from router.config import DEFAULT_CONFIG_PATH, Config, load_config
from router.errors import ConfigError
from router.logsafe import escape_controls, escape_json_line
from router.plugins import Plugins
from router.wording import counted

__all__ = ["parse_moment", "register"]

_AGO = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(text: str, *, now: float | None = None) -> float:
    """``2h`` / ``30m`` / ``1d`` ago, or an ISO time (no zone: this host's zone).

    Raises ValueError naming what was given.
    """
    value = text.strip()
    match = _AGO.fullmatch(value)
    current = time.time() if now is None else now
    if match is not None:
        return current - float(match.group("n")) * _UNITS[match.group("unit")]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected a time like '2026-12-01T09:00' or an age like '2h', '30m', '1d'"
        ) from None
    return moment.timestamp()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "history",
        help="call history from Asterisk's CEL",
        description="Call history read from the CEL store ([history] in router.toml): "
        "docs/history.md.",
    )
    sub = parser.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    replay = sub.add_parser(
        "replay",
        help="rebuild calls from the CEL store and tell the plugins (or print with --dry-run)",
        description="Rebuild every call with a CEL record between --since and --until, and tell "
        "the plugins what they were not told yet (1C's history among others); --dry-run only "
        "prints each call's story.",
    )
    replay.add_argument(
        "--since", required=True, type=_moment, help="ISO time or an age: 2h, 30m, 1d"
    )
    replay.add_argument("--until", type=_moment, help="ISO time or an age (default: now)")
    replay.add_argument("--dry-run", action="store_true", help="print each call's story only")
    replay.add_argument("--json", action="store_true", help="one JSON object per event")
    replay.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help="router.toml (default: ./router.toml)",
    )
    replay.set_defaults(func=run_replay, parser=replay)


def _moment(text: str) -> float:
    """``--since``/``--until``: :func:`parse_moment`; one it cannot read is a
    usage error, as argparse says one (exit 2, the usage): it was exit 1,
    ``callrouter history replay: error: history replay: ...``."""
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_replay(args: argparse.Namespace) -> int:
    since: float = args.since
    until: float | None = args.until
    if until is not None and until < since:
        args.parser.print_usage(sys.stderr)
        print(
            "callrouter history replay: error: --until is before --since: no call is "
            "between them (an age counts back from now: --since 2h --until 1h)",
            file=sys.stderr,
        )
        return 2
    # Replay never logs in: the AMI secret, which the service gets from its
    # environment and a root shell usually lacks, is not asked for.
    config = load_config(args.config, environ=without_ami_secret(args.config))
    source = open_source(config.history)
    if source is None:
        raise ConfigError(
            f"{config.path or args.config}: [history] cel: not set; give the CEL store "
            "(sqlite:///path or postgresql://...), see docs/history.md"
        )
    calls = source.read(since, until)
    folder = Folder(max_calls=max(config.history.max_calls, len(calls) + 1))
    stories: list[tuple[str, list[CallEvent]]] = [
        (linkedid, folder.replay(linkedid, records)) for linkedid, records in calls.items()
    ]
    if args.dry_run:
        _print(stories, as_json=args.json)
        return 0
    # The queue the service sends from, in a folder that is the service's:
    # what this command creates there must be the service's user's too.
    state_dir = service_state_dir(config, "history replay")
    refuse_another_owner(config, state_dir, "history replay")
    # A plugin may queue in a folder of its own ([plugins.onec] state_dir):
    # the same holds there.
    for key, own in plugin_state_dirs(config):
        if own.is_dir():
            refuse_another_owner(config, own, "history replay", key)
    told, failed = asyncio.run(_tell(config, [e for _, events in stories for e in events]))
    print(f"{counted(len(stories), 'call')}, {counted(told, 'event')} handed to the plugins")
    if failed:
        # Said above, each as `error:`; a script must not read that as done.
        print(
            f"callrouter history replay: error: a plugin failed {counted(failed, 'time')} "
            "(above): what it was handed may not all be queued or sent",
            file=sys.stderr,
        )
        return 1
    return 0


async def _tell(config: Config, events: list[CallEvent]) -> tuple[int, int]:
    """Hand ``events`` to the plugins as a running router would, then shut them down.

    Plugins that queue history (the 1C plugin) open their queue in
    ``callrouter_startup`` and flush it in ``callrouter_shutdown``, so they get
    both, with an engine that never connects to Asterisk: its ``api`` has the
    same ``state_dir`` (a queue file the running router shares), ``schedule``
    and ``config``; ``connected`` is False. Returns the events told and how
    many times a plugin's hook failed meanwhile.
    """
    from router.engine import Engine  # the CLI's other commands do not need it

    engine = Engine(config, plugins=Plugins.for_config(config))
    await engine.setup()
    await engine.plugins.startup(engine.api)
    try:
        for event in events:
            await engine.plugins.call_event(event)
    finally:
        await engine.plugins.shutdown(engine.api)
        await engine.ami.aclose()
    return len(events), engine.plugins.hook_failures


def _print(stories: list[tuple[str, list[CallEvent]]], *, as_json: bool) -> None:
    for linkedid, events in stories:
        if as_json:
            for event in events:
                print(escape_json_line(json.dumps(event.to_dict(), ensure_ascii=False)))
            continue
        first = events[0] if events else None
        head = f"call {linkedid}"
        if first is not None:
            started = datetime.fromtimestamp(first.started_at).isoformat(timespec="seconds")
            head += f"  {first.direction}  {first.external or '-'} -> {first.did or '-'}  {started}"
        # Numbers come from whoever placed the call: no escape sequence reaches the terminal.
        print(escape_controls(head))
        for event in events:
            print("  " + escape_controls(describe(event)))


def describe(event: CallEvent) -> str:
    """One line of a call's story, as ``--dry-run`` prints it."""
    at = datetime.fromtimestamp(event.at).strftime("%H:%M:%S.%f")[:-3]
    text = f"{at}  {event.kind:<11}"
    if event.kind == "transferred" and event.transfer is not None:
        t = event.transfer
        text += f" {t.kind} {t.from_extension or '?'} -> {t.to_extension or '?'}"
    elif event.extension:
        text += f" {event.extension}"
    if event.kind in ("hangup", "missed"):
        text += f" {event.status}"
        if event.hangup_by:
            text += f" by {event.hangup_by}"
        if event.talk_seconds is not None:
            text += f", talk {event.talk_seconds:.1f} s"
    return text
