"""``callrouter check [PATHS]``: validate rule files like a compiler would.

Every problem is printed on its own line as ``file:line: rule 'x': message``
(the format editors and CI understand); the exit code is 0 when clean and 1
otherwise, so ``callrouter check rules/`` can gate a deploy or a git hook.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from types import MappingProxyType
from typing import Any

from router.builtin import DEFAULT_TIMEZONE
from router.config import AsteriskSettings, Config, PluginSettings, RouterSettings
from router.dialplan import DEFAULT_LOCATION_PATTERN, LocationPolicy
from router.plugins import Plugins
from router.rules import Registry, load_rules

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check", help="validate rule files",
        description="Load and validate rule files; print every error as file:line.")
    parser.add_argument("paths", nargs="*", default=["rules/"], metavar="PATH",
                        help="rule files or folders (default: rules/)")
    parser.add_argument("--tz", default=DEFAULT_TIMEZONE,
                        help=f"default time zone of the rules (default: {DEFAULT_TIMEZONE})")
    parser.add_argument("--location-pattern", default=DEFAULT_LOCATION_PATTERN,
                        help="router.toml's [router] location_pattern, if it sets one: "
                             "literal context/exten values are checked against it")
    parser.set_defaults(func=run)


def plugin_registry(timezone: str, location_pattern: str = DEFAULT_LOCATION_PATTERN
                    ) -> tuple[Registry, list[str]]:
    """Names as the engine will know them: every installed plugin registers.

    So a rule using a plugin's lookup checks clean only where that plugin is
    installed, which is exactly where it will run.
    """
    plugins = Plugins.load()
    offline = Config(
        asterisk=AsteriskSettings(url="http://127.0.0.1/asterisk", username="", secret=""),
        router=RouterSettings(location_pattern=location_pattern),
        plugins=PluginSettings(settings=MappingProxyType({"timefuncs": {"timezone": timezone}})),
    )
    asyncio.run(plugins.configure(offline))
    return plugins.build_registry()


def run(args: argparse.Namespace) -> int:
    try:
        LocationPolicy.from_pattern(args.location_pattern)
    except re.error as exc:
        print(f"callrouter: --location-pattern: not a regular expression: {exc}")
        return 1
    registry, problems = plugin_registry(args.tz, args.location_pattern)
    ruleset = load_rules(args.paths, registry)
    for problem in problems:
        print(f"callrouter: {problem}")
    for error in ruleset.errors:
        print(error)
    count = len(ruleset.errors) + len(problems)
    shown = " ".join(args.paths)
    if count:
        print(f"{shown}: {count} error{'s' if count != 1 else ''}, "
              f"{len(ruleset.rules)} valid rules")
        return 1
    print(f"{shown}: {len(ruleset.rules)} rules OK")
    return 0
