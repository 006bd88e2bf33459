"""``callrouter ami ACTION key=value ...``: run any AMI action from a shell.

Parameters are checked against the AMI catalog before anything is sent, so a
typo gets a did-you-mean instead of a confusing answer from Asterisk;
``--raw`` skips the check for actions newer than the catalog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from router.ami.catalog import format_action_help, load_catalog
from router.ami.protocol import MAX_LINE_BYTES, Action, ActionResult
from router.commands._connect import add_connection_arguments, client_from_args
from router.commands._values import usage_error
from router.errors import AMIValidationError
from router.logsafe import escape_controls, escape_json_line, peer_text
from router.wording import counted

#: How the command line skips the catalog (the Python API: ``validate=False``).
RAW = "--raw"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ami",
        help="run an AMI action and print its answer",
        description="Run one AMI action (over AJAM or native TCP AMI, as [asterisk] url says) and "
        "print the response and list items. "
        "`callrouter ami ACTION --help` shows the action's parameters.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action="store_true", help="show help and exit")
    parser.add_argument(
        "action",
        nargs="?",
        metavar="ACTION",
        help="action name, e.g. Ping, CoreShowChannels (`callrouter actions` lists them)",
    )
    parser.add_argument(
        "params",
        nargs="*",
        metavar="KEY=VALUE",
        help="action parameters; repeat a key to send it several times",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--raw", action="store_true", help="do not validate against the AMI catalog"
    )
    add_connection_arguments(parser)
    # KEY=VALUE anywhere: `callrouter ami Ping --json X=1` (router/cli.py).
    parser.set_defaults(func=run, parser=parser, scattered="params")


def parse_params(items: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AMIValidationError(f"parameter {item!r}: expected KEY=VALUE")
        pairs.append((key, value))
    return pairs


def build_action(name: str, pairs: list[tuple[str, str]], *, raw: bool) -> Action:
    """Validate against the catalog (canonical names and case) unless ``raw``."""
    if raw:
        return Action(name, tuple(pairs))
    spec = load_catalog().action(name, bypass=RAW)
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    params = spec.validate({k: v[0] if len(v) == 1 else v for k, v in grouped.items()})
    flat: list[tuple[str, str]] = []
    for key, val in params.items():
        flat.extend((key, v) for v in (val if isinstance(val, list) else [val]))
    return Action(spec.name, tuple(flat))


def render_text(result: ActionResult) -> str:
    blocks = [result.response, *result.items]
    if result.closing is not None:
        blocks.append(result.closing)
    return "\n".join("".join(f"{k}: {v}\n" for k, v in b.fields) for b in blocks)


def render_json(result: ActionResult) -> str:
    """The answer as :func:`render_text` prints it: the response, the list's
    items and its closing event (``closing``; null for no list, or one whose
    closing event never came), which holds what no item says (``ListItems``,
    a ``...Complete`` event's totals)."""
    return json.dumps(
        {
            "response": result.response.to_dict(),
            "items": [i.to_dict() for i in result.items],
            "closing": None if result.closing is None else result.closing.to_dict(),
            "complete": result.complete,
            "unread_items": result.unread_items,
        },
        ensure_ascii=False,
        indent=2,
    )


def run(args: argparse.Namespace) -> int:
    if not args.action:
        if args.help:
            args.parser.print_help()
            return 0
        return usage_error(args, "ami", "an ACTION is required (see `callrouter actions`)")
    try:
        if args.help:
            print(format_action_help(load_catalog().action(args.action, bypass=RAW)))
            return 0
        action = build_action(args.action, parse_params(args.params), raw=args.raw)
    except AMIValidationError as exc:
        # What was typed (an action or parameter the catalog does not know, no
        # KEY=VALUE): a wrong command line, as a flag's value is
        # (router/commands/_values.py), said before any file is read.
        return _typed_wrong(args, str(exc))
    # Every header checked before connecting (line breaks, NUL, what crashes
    # Asterisk: router/ami/hazards.py), so a refused action needs no Asterisk;
    # a refusal of what would be sent, exit 1, as Asterisk's own would be.
    action.pairs()
    return asyncio.run(_send(args, action))


def _typed_wrong(args: argparse.Namespace, message: str) -> int:
    """:func:`usage_error` with the action's own usage line when the catalog
    knows the action (``callrouter ami Ping Foo=1``), the command's otherwise."""
    try:
        spec = None if args.raw else load_catalog().action(args.action, bypass=RAW)
    except AMIValidationError:
        spec = None
    if spec is None:
        return usage_error(args, "ami", message)
    print(format_action_help(spec).partition("\n\n")[0], file=sys.stderr)
    print(f"callrouter ami: error: {message}", file=sys.stderr)
    return 2


async def _send(args: argparse.Namespace, action: Action) -> int:
    async with client_from_args(args) as client:
        client.refusal_reported(action.name)  # the error line below says it, once
        result = await client.request(action, check=False)
    # Answers carry caller-chosen text (names, numbers): escaped for the terminal.
    # The text ends with its last field's newline; the JSON document is ended
    # with one, as a text file's last line is (issue 16: the shell's prompt
    # followed it on the same line, and `wc -l` counted one line short).
    print(
        escape_json_line(render_json(result)) + "\n"
        if args.json
        else escape_controls(render_text(result), keep_newlines=True),
        end="",
    )
    if unread := result.unread_items:
        # The list above is short: those items were skipped (each said in a
        # WARNING of the parser), and a reader would take it for all (issue 16).
        print(
            f"callrouter ami: note: {action.name}: the list above lacks {counted(unread, 'item')} "
            f"of the {len(result.items) + unread} its closing event counts (ListItems), each "
            f"skipped for a line over {MAX_LINE_BYTES} bytes (the parser's line bound)",
            file=sys.stderr,
        )
    if not result.ok:
        print(
            # The answer above is whole (escaped); this line quotes it in part.
            f"callrouter ami: error: {action.name}: {peer_text(result.response.message, 'failed')}",
            file=sys.stderr,
        )
        return 1
    return 0
