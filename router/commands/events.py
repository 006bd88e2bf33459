"""``callrouter events [GLOB...]``: tail Asterisk's events live, like ``tail -f``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from router.ami.message import Event
from router.ami.stream import EventStream, StreamGap
from router.commands._connect import add_connection_arguments, client_from_args
from router.logsafe import escape_controls, escape_json_line


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "events",
        help="print Asterisk events as they happen",
        description="Tail AMI events (over AJAM or native TCP AMI, as [asterisk] url says). "
        "GLOBs filter by event name, "
        "case-insensitively: `callrouter events 'Queue*' Hangup`.",
    )
    parser.add_argument("globs", nargs="*", metavar="GLOB", default=["*"])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="exit after N events (default: run until interrupted)",
    )
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def format_event(event: Event, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(event.to_dict(), ensure_ascii=False)
    return "".join(f"{k}: {v}\n" for k, v in event.fields)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 0


async def _tail(args: argparse.Namespace) -> int:
    seen = 0
    async with client_from_args(args) as client:
        stream = EventStream(client, args.globs)
        async for item in stream:
            if isinstance(item, StreamGap):
                print(
                    f"# stream resumed after a {item.duration:.1f} s gap ({item.reason}); "
                    "events in between are lost",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            # Caller names and numbers are the caller's to choose: no raw
            # escape sequence reaches the admin's terminal.
            text = format_event(item, as_json=args.json)
            print(
                escape_json_line(text) if args.json else escape_controls(text, keep_newlines=True),
                flush=True,
            )
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0
