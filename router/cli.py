"""The ``callrouter`` command: a thin dispatcher over ``router.commands``.

The CLI holds no logic a test could not reach through the modules; each
subcommand lives in its own module under :mod:`router.commands`.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import router
import router.commands
from router.errors import CallRouterError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except CallRouterError as exc:
        print(f"callrouter: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
