"""``callrouter plugins``: which plugins are installed, their versions and hooks."""

from __future__ import annotations

import argparse
import json

from router.plugins import Plugins


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list plugins, versions and hooks",
        description="List the plugins callrouter loads (built-in and installed), each with its "
        "version and the hooks it implements. Reads no router.toml.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON list")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    infos = Plugins.load().info()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "version": i.version,
                        "builtin": i.builtin,
                        "hooks": list(i.hooks),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return 0
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        kind = "built-in" if info.builtin else (info.version or "?")
        hooks = ", ".join(h.removeprefix("callrouter_") for h in info.hooks)
        print(f"{info.name:<{width}}  {kind:<10}  {hooks}")
    return 0
