"""``callrouter explain``: what the rules would do with a hypothetical call.

Nothing is sent to Asterisk or to plugins: lookups given with ``--lookup``
answer with that JSON, every other lookup is "not provided" (its value is
None), so an administrator can replay "what if 1C says X at 20:15" safely.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from router.builtin import DEFAULT_TIMEZONE
from router.builtin.timefuncs import zone
from router.commands.check import plugin_registry
from router.errors import LookupUnavailable
from router.rules import Outcome, load_rules
from router.rules.registry import LookupFn, Registry
from router.rules.ruleset import RuleSet, call_context
from router.rules.suggest import did_you_mean

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain", help="show how the rules would route a call",
        description="Evaluate the rules for a hypothetical call and print the trace.")
    parser.add_argument("--caller", required=True, help="caller's number, any format")
    parser.add_argument("--did", required=True, help="the number that was dialled")
    parser.add_argument("--name", default="", help="caller's name (CallerIDName)")
    parser.add_argument("--at", help='time of the call, "YYYY-MM-DD HH:MM" (default: now)')
    parser.add_argument("--lookup", action="append", default=[], metavar="NAME=JSON",
                        help="answer of a lookup, e.g. onec.responsible='{\"found\": true}'")
    parser.add_argument("--rules", nargs="+", default=["rules/"], metavar="PATH",
                        help="rule files or folders (default: rules/)")
    parser.add_argument("--tz", default=DEFAULT_TIMEZONE,
                        help=f"time zone of --at and of the rules (default: {DEFAULT_TIMEZONE})")
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.set_defaults(func=run)


def _stub(value: Any) -> LookupFn:
    async def answer(*_args: Any, **_kwargs: Any) -> Any:
        return value
    return answer


async def _not_provided(*_args: Any, **_kwargs: Any) -> Any:
    raise LookupUnavailable("not provided")


def _lookups(registry: Registry, given: list[str]) -> Mapping[str, LookupFn] | str:
    """Stubs for every lookup, or an error message for a bad ``--lookup``."""
    stubs: dict[str, LookupFn] = dict.fromkeys(registry.lookups, _not_provided)
    for item in given:
        name, eq, text = item.partition("=")
        if not eq:
            return f"--lookup {item!r}: expected NAME=JSON"
        if name not in registry.lookups:
            return f"--lookup: unknown lookup {name!r}{did_you_mean(name, registry.lookups)}"
        try:
            stubs[name] = _stub(json.loads(text))
        except json.JSONDecodeError as exc:
            return f"--lookup {name}: invalid JSON: {exc}"
    return stubs


def _when(text: str | None, tz: str) -> datetime | str:
    if text is None:
        return datetime.now(zone(tz))
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return f"--at {text!r}: expected \"YYYY-MM-DD HH:MM\""
    return moment if moment.tzinfo else moment.replace(tzinfo=zone(tz))


def run(args: argparse.Namespace) -> int:
    registry, _ = plugin_registry(args.tz)
    lookups = _lookups(registry, args.lookup)
    now = _when(args.at, args.tz)
    for problem in (lookups, now):
        if isinstance(problem, str):
            print(f"callrouter explain: {problem}")
            return 2
    assert not isinstance(lookups, str)
    assert isinstance(now, datetime)
    ruleset = load_rules(args.rules, registry)
    for error in ruleset.errors:
        print(f"warning: {error} (rule not loaded)" if error.rule else f"error: {error}")
    if ruleset.fatal:
        return 1
    outcome = asyncio.run(_evaluate(ruleset, args, lookups, now))
    if args.json:
        print(json.dumps({"decision": outcome.decision.to_dict(),
                          "trace": outcome.trace.to_dict()}, ensure_ascii=False, indent=2))
        return 0
    print(outcome.trace.render())
    decision = outcome.decision
    if decision.matched:
        print(f"decision: {', '.join(str(a) for a in decision.actions)} "
              f"(rules: {', '.join(decision.rules)})")
    else:
        print("decision: none (no rule matched; the dialplan's own fallback takes the call)")
    return 0


async def _evaluate(ruleset: RuleSet, args: argparse.Namespace,
                    lookups: Mapping[str, LookupFn], now: datetime) -> Outcome:
    context = call_context(ruleset.registry, args.caller, args.did, caller_name=args.name,
                           now=now)
    return await ruleset.evaluate(context, lookups=lookups, explain=True)
