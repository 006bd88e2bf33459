"""``callrouter plugins``: which plugins are installed, their versions and hooks.

With ``--config PATH`` (or ``--verbose``, ``./router.toml`` when there is
one) it reads router.toml as ``check`` does (router/commands/_offline.py) and
says, per plugin, the rule functions, lookups, actions and notify targets it
registers with those settings, as pytest's ``--trace-config`` and
``datasette plugins`` say what each plugin brings: before, a plugin author or
an administrator saw them only through a misspelling's did-you-mean.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router.callerid import cut
from router.errors import ConfigError
from router.logsafe import escape_controls, escape_json_line
from router.plugins import PluginNames, Plugins
from router.rules.registry import Registry


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list plugins, versions and hooks",
        description="List the plugins callrouter loads (built-in and installed), each with its "
        "version and the hooks it implements. Reads no router.toml, unless --config or "
        "--verbose is given: then it also lists, per plugin, the rule functions, lookups, "
        "actions and notify targets it registers with those settings.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON list")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="read this router.toml as `callrouter run` does and list what each plugin "
        "registers with it (implies --verbose)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="list what each plugin registers: its rule functions, lookups, actions and "
        "notify targets (reads ./router.toml when there is one)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config is not None or args.verbose:
        return _verbose(args)
    # One installed plugin that cannot be loaded refused the whole listing:
    # the others are listed, the broken one named with its error, exit 1.
    broken: dict[str, str] = {}
    plugins = Plugins.load(broken=broken)
    infos = plugins.info()
    if args.json:
        listed: list[dict[str, Any]] = [
            {"name": i.name, "version": i.version, "builtin": i.builtin, "hooks": list(i.hooks)}
            for i in infos
        ]
        listed.extend(
            {
                "name": name,
                "version": plugins.distribution_version(name),
                "builtin": False,
                "hooks": [],
                "error": error,
            }
            for name, error in broken.items()
        )
        print(json.dumps(listed, indent=2))
        for error in broken.values():
            print(f"callrouter plugins: error: {escape_controls(error)}", file=sys.stderr)
        return 1 if broken else 0
    # An installed plugin's name and version are its distribution's: an ESC
    # in them reached the terminal raw (hattack45), written as its escape.
    rows = [
        (
            escape_controls(i.name),
            "built-in" if i.builtin else escape_controls(i.version or "?"),
            ", ".join(escape_controls(h.removeprefix("callrouter_")) for h in i.hooks),
        )
        for i in infos
    ]
    rows.extend(
        (
            escape_controls(name),
            escape_controls(plugins.distribution_version(name) or "?"),
            "BROKEN: not loaded (its error below)",
        )
        for name in broken
    )
    width = max((len(name) for name, _, _ in rows), default=4)
    for name, kind, hooks in rows:
        print(f"{name:<{width}}  {kind:<10}  {hooks}")
    for error in broken.values():
        print(f"callrouter plugins: error: {escape_controls(error)}", file=sys.stderr)
    return 1 if broken else 0


def _verbose(args: argparse.Namespace) -> int:
    from router.commands._offline import load_offline

    # As the listing without --config: a broken installed plugin is named
    # with its error and the others listed, exit 1 (issue 16).
    broken: dict[str, str] = {}
    try:
        offline = load_offline(args.config, failures_printed=True, broken=broken)
    except ConfigError as exc:
        print(f"callrouter plugins: error: {escape_controls(str(exc))}", file=sys.stderr)
        return 1
    # The [asterisk] secret is of no use to this listing: not said.
    asterisk = tuple(f"{w}: [{s}] {k}:" for w, s, k in offline.unset_secrets if s == "asterisk")
    for warning in offline.warnings:
        if asterisk and warning.startswith(asterisk):
            continue
        print(f"callrouter plugins: warning: {escape_controls(warning)}", file=sys.stderr)
    registry = offline.registry
    listed = offline.plugins.names(registry)
    listed.extend(
        PluginNames(
            name,
            offline.plugins.distribution_name(name),
            offline.plugins.distribution_version(name),
            False,
            (),
            (),
            (),
            (),
            (),
            "broken",
            "not loaded (its error below)",
        )
        for name in broken
    )
    # A failed register is the plugin's own line below; the rest (a configure
    # that raised, a wanted_events answer refused) are said as check says them.
    for problem in offline.problems:
        if "callrouter_register:" not in problem:
            print(f"callrouter plugins: warning: {escape_controls(problem)}", file=sys.stderr)
    if args.json:
        # A plugin's names and docs are its own: a bidi override or a C1 control
        # (U+009B, a CSI to some terminals) in them, which json leaves raw with
        # ensure_ascii off, written as its \uXXXX escape, as every JSON
        # line a command prints (issue 16).
        entries = [_as_json(p, registry) for p in listed]
        for entry in entries:
            if entry["name"] in broken and entry["state"] == "broken":
                entry["error"] = broken[entry["name"]]
        body = json.dumps(entries, indent=2, ensure_ascii=False)
        print(escape_json_line(body))
    else:
        for number, plugin in enumerate(listed):
            if number:
                print()
            for line in _as_text(plugin, registry):
                print(escape_controls(line))
    for error in broken.values():
        print(f"callrouter plugins: error: {escape_controls(error)}", file=sys.stderr)
    return 1 if broken else 0


def _origin(plugin: PluginNames) -> str:
    """``built-in (callrouter 0.2.0)``, ``callrouter-vip 0.1.0``."""
    package = " ".join(p for p in (plugin.distribution, plugin.version) if p) or "?"
    return f"built-in ({package})" if plugin.builtin else package


def _as_text(plugin: PluginNames, registry: Registry) -> list[str]:
    state = plugin.state if plugin.state != "loaded" else ""
    note = f": {plugin.note}" if plugin.note else ""
    head = f"{plugin.name}  {_origin(plugin)}"
    if state or note:
        head += f"  [{state or 'loaded'}{note}]"
    would = " (would register)" if plugin.state == "left out" else ""
    lines = [head]
    if plugin.hooks:
        lines.append("  hooks: " + ", ".join(h.removeprefix("callrouter_") for h in plugin.hooks))
    for title, names, shown in (
        ("functions", plugin.functions, lambda n: n + _params(registry.functions[n].signature)),
        ("lookups", plugin.lookups, lambda n: n + _params(registry.lookups[n].signature)),
        ("actions", plugin.actions, lambda n: _action(registry, n)),
        ("notify targets", plugin.notify_targets, lambda n: n),
    ):
        if names:
            items = [shown(n) if _known(registry, title, n) else n for n in names]
            lines.append(f"  {title}{would}: {', '.join(items)}")
    if not _registered(plugin) and plugin.state != "broken":
        lines.append(
            "  would register no names for rules" if would else "  registers no names for rules"
        )
    return lines


def _registered(plugin: PluginNames) -> bool:
    return bool(plugin.functions or plugin.lookups or plugin.actions or plugin.notify_targets)


def _known(registry: Registry, title: str, name: str) -> bool:
    """Is ``name`` in ``registry`` (a left-out plugin's names are not)?"""
    tables: dict[str, Mapping[str, object]] = {
        "functions": registry.functions,
        "lookups": registry.lookups,
        "actions": registry.actions,
    }
    return name in tables.get(title, {})


def _params(signature: inspect.Signature) -> str:
    """``(number, zone=None)``: the arguments a rule gives, without annotations."""
    shown = []
    for param in signature.parameters.values():
        text = param.name
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            text = "*" + text
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            text = "**" + text
        elif param.default is not inspect.Parameter.empty:
            try:
                text += "=" + cut(repr(param.default), 20)
            except Exception:  # a default whose repr raises: its type will do
                text += f"=<{type(param.default).__name__}>"
        shown.append(text)
    return f"({', '.join(shown)})"


def _action(registry: Registry, name: str) -> str:
    """``redirect(context*, exten*, priority)``: * marks a required parameter."""
    spec = registry.actions[name]
    params = [p.name + ("*" if p.required else "") for p in spec.params]
    if spec.extra:
        params.append(f"any {spec.extra_name}")
    return f"{name}({', '.join(params)})"


def _as_json(plugin: PluginNames, registry: Registry) -> dict[str, Any]:
    def described(kind: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in names:
            item: dict[str, Any] = {"name": name}
            if kind == "functions" and name in registry.functions:
                spec = registry.functions[name]
                item |= {"arguments": _params(spec.signature), "doc": spec.doc}
            elif kind == "lookups" and name in registry.lookups:
                found = registry.lookups[name]
                item |= {"arguments": _params(found.signature), "doc": found.doc}
            elif kind == "actions" and name in registry.actions:
                action = registry.actions[name]
                item |= {
                    "params": [
                        {"name": p.name, "type": p.type, "required": p.required}
                        for p in action.params
                    ],
                    "extra": action.extra,
                    "doc": action.doc,
                }
            elif kind == "notify_targets" and name in registry.notify_targets:
                item["doc"] = registry.notify_targets[name].doc
            out.append(item)
        return out

    return {
        "name": plugin.name,
        "version": plugin.version,
        "builtin": plugin.builtin,
        "hooks": list(plugin.hooks),
        "distribution": plugin.distribution,
        "state": plugin.state,
        "note": plugin.note,
        "functions": described("functions", plugin.functions),
        "lookups": described("lookups", plugin.lookups),
        "actions": described("actions", plugin.actions),
        "notify_targets": described("notify_targets", plugin.notify_targets),
    }
