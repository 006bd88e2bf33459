"""``callrouter actions [SEARCH]``: what the AMI can do, from the catalog, offline.

An admin writing a rule or a plugin needs the action names and parameters
without a PBX at hand; the catalog has them for the Asterisk version it was
generated from. :func:`~router.ami.catalog.format_action_help` (re-exported here) is shared
with ``callrouter ami ACTION --help`` so both commands describe an action the
same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from router.ami.catalog import format_action_help, load_catalog

__all__ = ["format_action_help", "register", "run"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "actions",
        help="list the AMI actions Asterisk documents",
        description="List AMI actions (or events) with their synopses. SEARCH filters by a "
        "case-insensitive substring of the name or synopsis.",
    )
    parser.add_argument(
        "search",
        nargs="?",
        default="",
        metavar="SEARCH",
        help="part of a name or synopsis, any case: queue, originate",
    )
    parser.add_argument("--events", action="store_true", help="list events instead of actions")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    needle: str = args.search
    rows: list[tuple[str, str]]
    if args.events:
        rows = sorted(
            (
                (e.name, e.synopsis)
                for e in catalog.events.values()
                if needle.lower() in e.name.lower() or needle.lower() in e.synopsis.lower()
            ),
            key=lambda row: row[0].lower(),
        )
    else:
        rows = [(a.name, a.synopsis) for a in catalog.search(needle)]
    if not rows:
        kind = "event" if args.events else "action"
        # Found nothing, as grep: exit 1, said as every command's error is.
        print(
            f"callrouter actions: error: no {kind} matches {needle!r} "
            f"(Asterisk {catalog.asterisk_version})",
            file=sys.stderr,
        )
        return 1
    width = max(len(name) for name, _ in rows)
    for name, synopsis in rows:
        print(f"{name:<{width}}  {synopsis}")
    return 0
