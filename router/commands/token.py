"""``callrouter token new NAME --allow OP [OP ...] --extensions PAT [PAT ...]``.

Makes an API token and prints it once, with the ``[api.tokens.NAME]`` lines
to paste into router.toml: the file keeps only the token's SHA-256, so a
lost token is replaced, never recovered. The operations and patterns are
checked as router.toml's reader checks them, so the printed lines load.
The token's own ``rate`` and ``burst`` follow, commented out: the block is
ready to paste as it is (the token then has ``[api] rate`` and ``burst``),
and a user who wants another limit for it sees where to say so. docs/api.md
shows this output exactly (tests/unit/test_api_docs.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from router.api.auth import hash_token, new_token
from router.api.settings import OPERATIONS, check_extension_pattern, check_operation

__all__ = ["register", "run"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "token",
        help="make an HTTP API token",
        description="Make tokens for the HTTP API ([api] in router.toml).",
    )
    actions = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="print a new token once and the router.toml lines that allow it",
        description="Print a new random token once, and the [api.tokens.NAME] lines "
        "(its SHA-256, operations, extensions) to paste into router.toml.",
    )
    new.add_argument("name", metavar="NAME", help="the token's name in the audit log")
    new.add_argument(
        "--allow",
        nargs="+",
        action="extend",  # --allow a --allow b grants both, not only the last
        required=True,
        metavar="OP",
        help=f"operations: {', '.join(OPERATIONS)}, ami:<Action>, ami:*",
    )
    new.add_argument(
        "--extensions",
        nargs="+",
        action="extend",
        required=True,
        metavar="PAT",
        help="extensions the token acts for and sees: 101, 1* (a prefix), * (all)",
    )
    new.set_defaults(func=run, parser=new)


def run(args: argparse.Namespace) -> int:
    problems: list[str] = []
    if not _NAME.fullmatch(args.name):
        problems.append(f"NAME {args.name!r}: letters, digits, '_', '-' and '.' only")
    problems += [p for p in map(check_operation, args.allow) if p is not None]
    problems += [p for p in map(check_extension_pattern, args.extensions) if p is not None]
    if problems:
        # A wrong command line, said as argparse says one: the usage first.
        args.parser.print_usage(sys.stderr)
        for problem in problems:
            print(f"callrouter token new: error: {problem}", file=sys.stderr)
        return 2
    token = new_token()
    print(f"token (shown once; give it to the client now): {token}")
    print()
    print("# paste into router.toml, then restart callrouter:")
    print(f"[api.tokens.{args.name}]")
    print(f'hash = "{hash_token(token)}"')
    print(f"allow = {json.dumps(list(dict.fromkeys(args.allow)))}")
    print(f"extensions = {json.dumps(list(dict.fromkeys(args.extensions)))}")
    print("# rate = 20     # optional: this token's requests per second (default: [api] rate)")
    print("# burst = 40    # optional: how many it may send at once (default: [api] burst)")
    return 0
