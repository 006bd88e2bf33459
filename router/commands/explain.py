"""``callrouter explain``: what the rules would do with a hypothetical call.

It reads router.toml as ``callrouter run`` does (``--config``, default
``./router.toml``), so numbers are normalized with the configured plan and
working hours are judged in the configured zone. Nothing is sent to Asterisk
or to plugins: lookups given with ``--lookup`` answer with that JSON, every
other lookup is "not provided" (its value is None), so an administrator can
replay "what if 1C says X at 20:15" safely.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from router.commands.check import plugin_registry
from router.errors import ConfigError
from router.rules import load_rules
from router.rules.explain import answer_stubs, explain_call, moment
from router.rules.registry import LookupFn, Registry
from router.rules.suggest import did_you_mean

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="show how the rules would route a call",
        description="Evaluate the rules for a hypothetical call and print the trace, "
        "with router.toml's settings and plugins; nothing is sent anywhere.",
    )
    parser.add_argument("--caller", required=True, help="caller's number, any format")
    parser.add_argument("--did", required=True, help="the number that was dialled")
    parser.add_argument("--name", default="", help="caller's name (CallerIDName)")
    parser.add_argument("--at", help='time of the call, "YYYY-MM-DD HH:MM" (default: now)')
    parser.add_argument(
        "--lookup",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="answer of a lookup, e.g. onec.responsible='{\"found\": true}'",
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        metavar="PATH",
        help="rule files or folders (default: router.toml's [router] rules)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file (default: ./router.toml when there is one)",
    )
    parser.add_argument(
        "--tz",
        help="time zone of --at and of the rules (default: "
        "router.toml's [plugins.timefuncs] timezone)",
    )
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.set_defaults(func=run)


def _lookups(registry: Registry, given: list[str]) -> Mapping[str, LookupFn] | str:
    """Stubs for every lookup, or an error message for a bad ``--lookup``."""
    answers: dict[str, Any] = {}
    for item in given:
        name, eq, text = item.partition("=")
        if not eq:
            return f"--lookup {item!r}: expected NAME=JSON"
        if name not in registry.lookups:
            return f"--lookup: unknown lookup {name!r}{did_you_mean(name, registry.lookups)}"
        try:
            answers[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"--lookup {name}: invalid JSON: {exc}"
    return answer_stubs(registry, answers)


def _when(text: str | None, registry: Registry) -> datetime | str:
    when = moment(text, registry)
    return f"--at {when}" if isinstance(when, str) else when


def run(args: argparse.Namespace) -> int:
    try:
        offline = plugin_registry(args)
    except ConfigError as exc:
        print(f"callrouter explain: {exc}")
        return 1
    for warning in offline.warnings:
        print(f"callrouter explain: warning: {warning}", file=sys.stderr)
    registry = offline.registry
    lookups = _lookups(registry, args.lookup)
    now = _when(args.at, registry)
    for problem in (lookups, now):
        if isinstance(problem, str):
            print(f"callrouter explain: {problem}")
            return 2
    assert not isinstance(lookups, str)
    assert isinstance(now, datetime)
    ruleset = load_rules(args.rules or [str(p) for p in offline.config.router.rules], registry)
    for error in ruleset.errors:
        print(f"warning: {error} (rule not loaded)" if error.rule else f"error: {error}")
    if ruleset.fatal:
        return 1
    explained = asyncio.run(
        explain_call(ruleset, args.caller, args.did, stubs=lookups, now=now, caller_name=args.name)
    )
    outcome, context, others = explained.outcome, explained.context, explained.other_did_rules
    if args.json:
        print(json.dumps(explained.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(outcome.trace.render())
    if others:
        print(
            f"  not evaluated: {len(others)} rule{'s' if len(others) != 1 else ''} "
            f"for other DIDs ({', '.join(others)}): their `did ==` / `did in` test "
            f"leaves out {context.did}"
        )
    skipped = explained.index_skipped
    if skipped:
        tested = sorted({key for _, keys in skipped for key in keys})
        print(
            f"  not evaluated: {len(skipped)} rule{'s' if len(skipped) != 1 else ''} "
            f"the index left out ({', '.join(name for name, _ in skipped)}): their `if` "
            f"tests {' / '.join(tested)}, which this call's value makes false"
        )
    decision = outcome.decision
    if decision.matched:
        print(
            f"decision: {', '.join(str(a) for a in decision.actions)} "
            f"(rules: {', '.join(decision.rules)})"
        )
    else:
        print("decision: none (no rule matched; the dialplan's own fallback takes the call)")
    return 0
