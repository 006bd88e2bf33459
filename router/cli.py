"""The ``callrouter`` command: a thin dispatcher over ``router.commands``.

The CLI holds no logic a test could not reach through the modules; each
subcommand lives in its own module under :mod:`router.commands`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import select
import sys
from collections.abc import Sequence

import router
import router.commands
from router.commands._logging import one_shot_logging
from router.errors import CallRouterError
from router.logsafe import escape_controls
from router.suggest import closest


class _Parser(argparse.ArgumentParser):
    """Options only as written: argparse would take ``--secret X`` for
    ``--secret-env X`` (a prefix) and complain about an environment variable
    named ``X``. Every subcommand's parser is one of these (add_subparsers
    makes its parsers of the parent's class)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    # A typo gets a did-you-mean, as a rule file's or an AMI action's does:
    # argparse (before 3.14) only lists the choices, and leaves an unknown
    # option to the top parser, whose usage is not the subcommand's.

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, but what this parser (a subcommand's included) does
        not know is an error here, named with this parser's usage: nothing
        in callrouter leaves arguments for another parser."""
        parsed, extras = super().parse_known_args(args, namespace)
        scattered = self.get_default("scattered")
        if extras and scattered:
            # `callrouter ami Ping --json X=1`: a list of values that an option
            # split (argparse takes one run of positionals) is still one list.
            values = [e for e in extras if "=" in e and not e.startswith("-")]
            extras = [e for e in extras if e not in values]
            setattr(parsed, scattered, [*getattr(parsed, scattered), *values])
        if extras:
            self.error(self._unrecognized(extras))
        return parsed, extras

    def _unrecognized(self, extras: list[str]) -> str:
        known = {o.lstrip("-"): o for o in self._option_string_actions if o.startswith("--")}
        said = []
        for extra in extras:
            option = extra.partition("=")[0]
            near = closest(option.lstrip("-"), known) if option.startswith("-") else None
            said.append(f"{extra} (did you mean {known[near]}?)" if near else extra)
        plural = "s" if len(said) > 1 else ""
        return f"unrecognized argument{plural}: {', '.join(said)}"

    def _check_value(self, action: argparse.Action, value: object) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            choices = map(str, action.choices or ())
            near = closest(value, choices) if isinstance(value, str) else None
            if near is None:
                raise
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r} (did you mean {near!r}?)"
            ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="callrouter",
        description="Route Asterisk calls with declarative rules and plugins.",
    )
    parser.add_argument("--version", action="version", version=f"callrouter {router.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(router.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"router.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # Importing every command takes most of a second: a Ctrl-C meanwhile
        # is a Ctrl-C like any other, not a traceback through importlib.
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return 130
    func = getattr(args, "func", None)
    if func is None:
        # No command: a usage error (exit 2), said where argparse says one,
        # on stderr, with the list of commands to choose from.
        parser.print_help(sys.stderr)
        print("callrouter: error: a COMMAND is required", file=sys.stderr)
        return 2
    # `run` sets up the service's log itself; every other command gets one
    # format, not Python's bare last-resort lines (router/commands/_logging.py).
    # Named as the command's error lines are (`callrouter history replay:`),
    # not by its first word alone (`callrouter history: error: ...`).
    logs = (
        one_shot_logging(_named(args).removeprefix("callrouter "))
        if args.command != "run"
        else contextlib.nullcontext()
    )
    try:
        with logs:
            code: int = func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except CallRouterError as exc:
        # An error may quote a peer (Asterisk's Message, 1C, an API): never
        # a raw ESC, BEL or bidi override on the terminal.
        print(
            f"{_named(args)}: error: {escape_controls(str(exc), keep_newlines=True)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_broken():
            raise  # a socket's (Asterisk, the API, a plugin's): not the reader leaving
        # The reader left (callrouter actions | head): no traceback, and the
        # exit code of a command SIGPIPE ended. Python flushes stdout again at
        # exit, so it is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13
    return code


def _named(args: argparse.Namespace) -> str:
    """``callrouter token new``: the command an error line is of, as argparse
    names it in its own (``callrouter token new: error: ...``)."""
    words = [args.command]
    for key in (
        "history_command",
        "recordings_command",
        "state_command",
        "token_command",
        "ui_command",
    ):
        if getattr(args, key, None) is not None:
            words.append(getattr(args, key))
    return " ".join(["callrouter", *words])


def _stdout_broken() -> bool:
    """Whether standard output is a pipe its reader closed (what a BrokenPipeError
    from a print means), rather than the error coming from some other socket."""
    try:
        sys.stdout.flush()  # what a closed pipe refused is still buffered: refused again
        fd = sys.stdout.fileno()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, 0)  # only what is always reported: POLLERR, the reader gone
    return any(events & select.POLLERR for _, events in poller.poll(0))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
