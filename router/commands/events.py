"""``callrouter events [GLOB...]``: tail Asterisk's events live, like ``tail -f``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator

from router.ami.message import Event
from router.ami.stream import EventStream, StreamGap
from router.ami.tcp import CONNECTION_LOST
from router.commands._connect import add_connection_arguments, client_from_args
from router.logsafe import escape_controls, escape_json_line
from router.tasks import cancel_and_wait


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "events",
        help="print Asterisk events as they happen",
        description="Tail AMI events (over AJAM or native TCP AMI, as [asterisk] url says). "
        "GLOBs filter by event name, "
        "case-insensitively: `callrouter events 'Queue*' Hangup`.",
    )
    parser.add_argument(
        "globs",
        nargs="*",
        metavar="GLOB",
        default=["*"],
        help="event names to print, * and ? as in a shell, any case (default: all)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line; a gap in the stream is {"gap": {...}}',
    )
    parser.add_argument(
        "--count",
        type=_event_count,
        metavar="N",
        help="exit after N events (default: run until interrupted)",
    )
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def _event_count(text: str) -> int:
    """``--count``: 1 or more (0 or -2 printed one event, as 1 did)."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of events, 1 or more, got {text!r}")
    return count


def format_event(event: Event, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(event.to_dict(), ensure_ascii=False)
    return "".join(f"{k}: {v}\n" for k, v in event.fields)


def format_gap(gap: StreamGap) -> str:
    """A gap as ``--json`` prints it on standard output, between the events:
    an object with no ``Event`` key but ``gap`` (operations.md)."""
    told = {
        "reason": gap.reason,
        "since": round(gap.since, 3),
        "resumed": round(gap.resumed, 3),
        "seconds": round(gap.duration, 1),
        "error": gap.error,
    }
    return json.dumps({"gap": told}, ensure_ascii=False)


def run(args: argparse.Namespace) -> int:
    # Ctrl-C ends it as it ends every command: exit code 130 (router/cli.py),
    # so a script tells an interrupted tail from one that saw its --count.
    with _loss_said_once():
        return asyncio.run(_tail(args))


def _say(line: str) -> None:
    """A line of the command's own about the stream, on standard error (standard
    output is the events': ``--json`` stays one object a line)."""
    print(line, file=sys.stderr, flush=True)


def _lost(error: str) -> None:
    _say(f"# stream lost Asterisk: {escape_controls(error)}; reconnecting")


class _NotTheLoss(logging.Filter):
    """Leaves out the native client's WARNING of a lost connection: the stream
    meets that loss too, and the command says it once, as ``# stream lost``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != CONNECTION_LOST


@contextlib.contextmanager
def _loss_said_once() -> Iterator[None]:
    tcp = logging.getLogger("router.ami.tcp")
    quiet = _NotTheLoss()
    tcp.addFilter(quiet)
    try:
        yield
    finally:
        tcp.removeFilter(quiet)


async def _tail(args: argparse.Namespace) -> int:
    """The events until --count, Ctrl-C, or the reader of a pipe leaving."""
    printing = asyncio.ensure_future(_print_events(args))
    left = asyncio.ensure_future(_reader_left())
    try:
        await asyncio.wait({printing, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not printing.done():
            await cancel_and_wait(printing)  # logs off
    if printing.cancelled():
        # As a print to that pipe would have said (router/cli.py: exit code 141).
        raise BrokenPipeError(errno.EPIPE, "the reader of standard output left")
    return printing.result()


async def _reader_left() -> None:
    """Returns once standard output is a pipe its reader closed: `callrouter
    events Hangup | head -1` ends as the reader does, like `tail -f`, not at
    the next Hangup, hours later maybe. A terminal or a file never closes."""
    try:
        fd = sys.stdout.fileno()
        pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, ValueError):
        pipe = False
    gone = asyncio.Event()
    if not pipe:
        await gone.wait()  # for ever
    # A pipe's writing end is never readable: what the loop reports for it is
    # the error condition (EPOLLERR), the reader gone.
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, gone.set)
    try:
        await gone.wait()
    finally:
        loop.remove_reader(fd)


async def _print_events(args: argparse.Namespace) -> int:
    seen = 0
    async with client_from_args(args) as client:
        # A loss and its resume are said once each, in these `#` lines: the
        # stream and the client log neither (they would say the loss thrice).
        stream = EventStream(client, args.globs, on_lost=_lost)
        async for item in stream:
            if isinstance(item, StreamGap):
                _say(
                    f"# stream resumed after a {item.duration:.1f} s gap ({item.reason}); "
                    "events in between are lost"
                )
                if args.json:
                    # A program reading the objects sees the gap too, in order.
                    print(escape_json_line(format_gap(item)), flush=True)
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
