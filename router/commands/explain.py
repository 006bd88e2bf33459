"""``callrouter explain``: what the rules would do with a hypothetical call.

It reads router.toml as ``callrouter run`` does (``--config``, default
``./router.toml``), so numbers are normalized with the configured plan and
working hours are judged in the configured zone. Nothing is sent to Asterisk
or, by default, to plugins: lookups given with ``--lookup`` answer with that
JSON, every other lookup is "not provided" (its value is None), so an
administrator can replay "what if 1C says X at 20:15" safely. With ``--ask``
the plugins are started (router/commands/_asking.py) and the lookups not
given are asked as ``callrouter run`` asks them, within a call's budget, so
"why did this customer not reach their manager?" gets 1C's real answer.
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

from router.commands._asking import started
from router.commands._offline import Offline
from router.commands._values import a_moment, a_path, a_time_zone, usage_error
from router.commands.check import named_by, plugin_registry
from router.dialplan import DEFAULT_WAIT, SAFETY_MARGIN
from router.errors import ConfigError
from router.rules import load_rules
from router.rules.decision import Trace
from router.rules.explain import (
    NOT_PROVIDED,
    Explanation,
    answer_stubs,
    explain_call,
    moment,
    moment_note,
)
from router.rules.registry import LookupFn, Registry
from router.rules.ruleset import RuleSet
from router.rules.suggest import did_you_mean

__all__ = ["ASK_BUDGET", "register", "run"]

#: Seconds the asked lookups share: what a call of the shipped dialplan leaves
#: them (its wait less the engine's safety margin), as in ``callrouter run``.
ASK_BUDGET = DEFAULT_WAIT - SAFETY_MARGIN


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="show how the rules would route a call",
        description="Evaluate the rules for a hypothetical call and print the trace, "
        "with router.toml's settings and plugins; nothing is sent anywhere (with --ask, "
        "only the plugins' lookups are asked; nothing is sent to Asterisk).",
    )
    parser.add_argument("--caller", required=True, help="caller's number, any format")
    parser.add_argument("--did", required=True, help="the number that was dialled")
    parser.add_argument("--name", default="", help="caller's name (CallerIDName)")
    parser.add_argument(
        "--at", type=a_moment, help='time of the call, "YYYY-MM-DD HH:MM" (default: now)'
    )
    parser.add_argument(
        "--lookup",
        action="append",
        default=[],
        type=_a_lookup,
        metavar="NAME=JSON",
        help="answer of a lookup, e.g. onec.responsible='{\"found\": true}' "
        "(with --ask, instead of asking it)",
    )
    parser.add_argument(
        "--ask",
        action="store_true",
        help="ask the plugins' lookups (1C...) as `callrouter run` would, with their "
        f"settings and timeouts and {ASK_BUDGET:g} s for all of them, instead of "
        "answering 'not provided'; still nothing is sent to Asterisk",
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        # extend, not store: `--rules A --rules B` reads both, as run's
        # repeatable --rules does (a second one dropped the first in silence).
        action="extend",
        type=a_path,
        metavar="PATH",
        help="rule files or folders, repeatable as for run (default: router.toml's [router] rules)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="settings file (default: ./router.toml when there is one)",
    )
    parser.add_argument(
        "--tz",
        type=a_time_zone,
        help="time zone of --at and of the rules (default: "
        "router.toml's [plugins.timefuncs] timezone)",
    )
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.set_defaults(func=run, parser=parser)


def _a_lookup(text: str) -> str:
    """``--lookup``: ``NAME=JSON`` with JSON that parses, checked as the parser
    reads it (router/commands/_values.py); the name is checked against the
    plugins' lookups once they registered (:func:`_lookups`)."""
    name, eq, answer = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text[:80]!r}")
    try:
        json.loads(answer)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{name[:80]!r}: invalid JSON: {exc}") from None
    return text


def _lookups(registry: Registry, given: list[str], *, ask: bool) -> Mapping[str, LookupFn] | str:
    """Stubs for the lookups (every one, or with ``ask`` those given), or an
    error message for a bad ``--lookup``."""
    answers: dict[str, Any] = {}
    for item in given:
        name, eq, text = item.partition("=")
        if not eq:
            return f"--lookup {item!r}: expected NAME=JSON"
        if name not in registry.lookups:
            why = registry.why_missing(name) or did_you_mean(name, registry.lookups)
            return f"--lookup: unknown lookup {name!r}{why}"
        try:
            answers[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"--lookup {name}: invalid JSON: {exc}"
    return answer_stubs(registry, answers, ask=ask)


def _unset_plugin_secrets(offline: Offline) -> bool:
    """Say so when a plugin's secret is not set here: ``--ask`` would ask the
    plugin with a stand-in (1C counts the refused logins); Asterisk's own secret
    is of no use to an explanation."""
    unset = [entry for entry in offline.unset_secrets if entry[1] != "asterisk"]
    for where, section, key in unset:
        print(
            f"callrouter explain: error: --ask: {where}: [{section}] {key}: the secret is "
            "not set in this shell; set it to ask the plugin as callrouter run does "
            "(or explain without --ask)",
            file=sys.stderr,
        )
    return bool(unset)


async def _explain(
    args: argparse.Namespace,
    offline: Offline,
    ruleset: RuleSet,
    lookups: Mapping[str, LookupFn],
    now: datetime,
) -> Explanation:
    """The explanation; with ``--ask`` while the plugins run (nothing to Asterisk)."""
    if not args.ask:
        return await explain_call(
            ruleset, args.caller, args.did, stubs=lookups, now=now, caller_name=args.name
        )
    async with started(offline.plugins, offline.config):
        return await explain_call(
            ruleset,
            args.caller,
            args.did,
            stubs=lookups,
            now=now,
            caller_name=args.name,
            budget=ASK_BUDGET,
        )


def _not_provided_hint(trace: Trace, *, ask: bool) -> str:
    """How to give the lookups the trace says were ``not provided`` an answer:
    the trace alone (``failed: not provided``) read as a broken plugin, and
    sent the administrator to its code instead of to ``--lookup`` or ``--ask``."""
    names = list(
        dict.fromkeys(
            record.lookup
            for entry in trace.rules
            for record in entry.lookups
            if record.source == NOT_PROVIDED
        )
    )
    if not names:
        return ""
    shown = ", ".join(names)
    example = f"--lookup {names[0]}=JSON"
    if ask:
        # --ask asked every lookup a loaded plugin implements: these have none.
        return (
            f"  not provided: {shown} (None): no plugin loaded here implements "
            f"{'it' if len(names) == 1 else 'them'}, so --ask cannot ask; give an "
            f"answer with {example} (callrouter plugins --config lists what each "
            "plugin registers)"
        )
    return (
        f"  not provided: {shown} (None): give an answer with {example}, "
        "or add --ask to ask the plugins as callrouter run would"
    )


def _when(text: str | None, registry: Registry) -> datetime | str:
    when = moment(text, registry)
    return f"--at {when}" if isinstance(when, str) else when


def run(args: argparse.Namespace) -> int:
    try:
        offline = plugin_registry(args)
    except ConfigError as exc:
        print(f"callrouter explain: error: {exc}", file=sys.stderr)
        return 1
    for warning in offline.warnings:
        print(f"callrouter explain: warning: {warning}", file=sys.stderr)
    registry = offline.registry
    if args.ask and _unset_plugin_secrets(offline):
        return 1
    lookups = _lookups(registry, args.lookup, ask=args.ask)
    now = _when(args.at, registry)
    for problem in (lookups, now):
        if isinstance(problem, str):
            # What was typed (a lookup no plugin registers): a wrong command line.
            return usage_error(args, "explain", problem)
    assert not isinstance(lookups, str)
    assert isinstance(now, datetime)
    note = moment_note(args.at, registry)
    if note:  # a time the clocks show twice: which one the trace is for
        print(f"callrouter explain: note: --at {note}", file=sys.stderr)
    ruleset = load_rules(
        args.rules or [str(p) for p in offline.config.router.rules],
        registry,
        named_by="" if args.rules else named_by(offline),
    )
    # On stderr, as every command's warnings and errors: stdout is the trace
    # (`--json`: one JSON document, which a line before it made unreadable).
    for error in ruleset.errors:
        print(
            f"callrouter explain: warning: {error} (rule not loaded)"
            if error.rule
            else f"callrouter explain: error: {error}",
            file=sys.stderr,
        )
    if ruleset.fatal:
        return 1
    explained = asyncio.run(_explain(args, offline, ruleset, lookups, now))
    outcome, context, others = explained.outcome, explained.context, explained.other_did_rules
    if args.json:
        print(json.dumps(explained.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(outcome.trace.render())
    hint = _not_provided_hint(outcome.trace, ask=args.ask)
    if hint:
        print(hint)
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
