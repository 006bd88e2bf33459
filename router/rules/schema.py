"""Stage 1 of validation: the shape of a rule file.

Keys, types, required keys and the action discriminator are checked here,
before any expression is read, the way Home Assistant runs a voluptuous
schema before it looks at entity names. Problems that make a whole file
untrustworthy (no ``version``, a misspelled top-level key) are *fatal*: the
file is refused. A problem inside one rule only disables that rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Literal

from router.dialplan import shown
from router.errors import RuleValidationError
from router.rules.cron import check_cron
from router.rules.loader import Node, RuleFile
from router.rules.registry import ActionSpec, Registry
from router.rules.suggest import did_you_mean, one_of

__all__ = [
    "FORMAT_VERSION",
    "MISSED",
    "RULE_KEYS",
    "ActionDecl",
    "FileSpec",
    "ListSpec",
    "RuleSpec",
    "TriggerSpec",
    "check_file",
]

FORMAT_VERSION = 1
TOP_KEYS = ("version", "lists", "rules")
RULE_KEYS = (
    "name",
    "description",
    "priority",
    "enabled",
    "on",
    "schedule",
    "missed",
    "if",
    "lookup",
    "when",
    "do",
    "continue",
)
LIST_KEYS = ("file", "items", "type")
LIST_TYPES = ("numbers", "dates", "text")
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[^\s'\"][^\n'\"]{0,99}$")
_GLOB = re.compile(r"^[A-Za-z0-9_*?\[\]!-]+$")


#: What a ``schedule:`` rule's ``missed:`` may say of a run callrouter could not
#: make on time (a stall over the 60 s grace, this host's clock stepped forward
#: over it): skipped (the default, as cron and systemd timers without
#: ``Persistent=``), or run once, late, however many were missed (as
#: ``Persistent=true``, anacron, apscheduler's ``coalesce``).
MISSED = ("skip", "run-once")


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """``call``, ``event`` (with a glob ``pattern``) or ``schedule`` (with ``pattern`` = cron
    and ``missed``, one of :data:`MISSED`)."""

    kind: Literal["call", "event", "schedule"]
    pattern: str = ""
    missed: Literal["skip", "run-once"] = "skip"


@dataclass(frozen=True, slots=True)
class ActionDecl:
    """One ``do:`` item whose shape is right; templates are read in stage 2."""

    kind: str
    line: int
    params: dict[str, Node]


@dataclass(frozen=True, slots=True)
class ListSpec:
    name: str
    file: str
    line: int
    type: str
    path: Path | None = None
    items: tuple[Node, ...] = ()
    #: The folder of the rule file that names ``path``: the list file must
    #: be in it, symbolic links followed.
    folder: Path | None = None


@dataclass(slots=True)
class RuleSpec:
    """A rule whose shape is right; expressions are still text."""

    name: str
    file: str
    line: int
    trigger: TriggerSpec
    actions: list[ActionDecl]
    priority: int = 0
    condition: Node | None = None
    lookups: list[tuple[str, Node]] = field(default_factory=list)
    when: Node | None = None
    cont: bool = False
    description: str = ""


@dataclass(slots=True)
class FileSpec:
    """The result of stage 1 for one file: what survived and what did not."""

    file: str
    lists: list[ListSpec] = field(default_factory=list)
    rules: list[RuleSpec] = field(default_factory=list)
    errors: list[RuleValidationError] = field(default_factory=list)
    fatal: bool = False
    #: Lists whose declaration was refused: a rule naming one is told so
    #: once ("not available"), not also that the list is unknown.
    broken_lists: list[str] = field(default_factory=list)


class _Collector:
    """Gathers every problem of one rule so the administrator fixes them in one pass."""

    def __init__(self, file: str, rule: str | None, prefix: str = "") -> None:
        self.file = file
        self.rule = rule
        self.prefix = prefix
        self.errors: list[RuleValidationError] = []

    def add(self, message: str, line: int) -> None:
        self.errors.append(
            RuleValidationError(self.prefix + message, file=self.file, line=line, rule=self.rule)
        )


def check_file(source: RuleFile, registry: Registry) -> FileSpec:
    """Runs stage 1 on a parsed file."""
    spec = FileSpec(source.display)
    root = source.root

    def fatal(message: str, line: int) -> FileSpec:
        spec.errors.append(RuleValidationError(message, file=source.display, line=line))
        spec.fatal = True
        return spec

    if root is None:
        return fatal(f"empty rule file (start it with 'version: {FORMAT_VERSION}')", 1)
    if not isinstance(root.value, dict):
        return fatal(
            f"a rule file is a mapping with 'version', 'lists' and 'rules', not a {root.kind}",
            root.line,
        )
    top = root.mapping()
    for key in top:
        if key not in TOP_KEYS:
            return fatal(f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}", root.key_lines[key])
    version = top.get("version")
    if version is None:
        return fatal(f"missing 'version: {FORMAT_VERSION}' at the top of the file", root.line)
    if version.value != FORMAT_VERSION or isinstance(version.value, bool):
        return fatal(
            f"unsupported rule format version {version.raw or version.kind} "
            f"(this callrouter reads version {FORMAT_VERSION})",
            version.line,
        )
    lists = top.get("lists")
    if lists is not None and lists.value is not None:
        if not isinstance(lists.value, dict):
            return fatal(f"'lists' must be a mapping of list names, not a {lists.kind}", lists.line)
        for name, node in lists.mapping().items():
            _check_list(name, node, lists.key_lines[name], source, spec)
    rules = top.get("rules")
    if rules is not None and rules.value is not None:
        if not isinstance(rules.value, list):
            return fatal(f"'rules' must be a list of rules, not a {rules.kind}", rules.line)
        for number, node in enumerate(rules.sequence(), start=1):
            rule = _check_rule(number, node, registry)
            if isinstance(rule, RuleSpec):
                spec.rules.append(rule)
            else:
                spec.errors.extend(rule)
    return spec


def _check_list(name: str, node: Node, key_line: int, source: RuleFile, spec: FileSpec) -> None:
    out = _Collector(source.display, None, f"list {name!r}: ")
    if not IDENTIFIER.match(name):
        out.add("list names are letters, digits and '_', starting with a letter", key_line)
        spec.errors.extend(out.errors)
        return
    before = len(spec.errors)
    _declare_list(name, node, source, spec, out, key_line)
    if len(spec.errors) > before:
        spec.broken_lists.append(name)


def _declare_list(
    name: str, node: Node, source: RuleFile, spec: FileSpec, out: _Collector, key_line: int
) -> None:
    value, kind = node.value, "numbers"
    if isinstance(value, dict):
        for key in value:
            if key not in LIST_KEYS:
                out.add(f"unknown key {key!r}{did_you_mean(key, LIST_KEYS)}", node.key_lines[key])
        kind_node = value.get("type")
        if kind_node is not None:
            if kind_node.value not in LIST_TYPES:
                out.add(
                    f"unknown list type {kind_node.raw!r}{did_you_mean(kind_node.raw, LIST_TYPES)}",
                    kind_node.line,
                )
            else:
                kind = str(kind_node.value)
        if ("file" in value) == ("items" in value):
            out.add("give either 'file' or 'items'", node.line)
        value = (
            value["file"].value
            if "file" in value
            else (value["items"].value if "items" in value else None)
        )
    if out.errors:
        spec.errors.extend(out.errors)
    elif isinstance(value, str):
        written = PurePath(value)
        if not value or written.is_absolute() or ".." in written.parts:
            # A rule editor is not to read /etc/passwd, nor to see its first
            # line quoted as a bad entry.
            out.add(
                f"a list file is a path inside the rule file's folder, like "
                f"lists/{name}.txt, not {shown(value)}",
                node.line,
            )
            spec.errors.extend(out.errors)
            return
        path = source.path.parent / written
        spec.lists.append(
            ListSpec(name, source.display, key_line, kind, path=path, folder=source.path.parent)
        )
    elif isinstance(value, list):
        bad = [
            item for item in value if isinstance(item, Node) and isinstance(item.value, dict | list)
        ]
        if bad:
            out.add("list items must be single values", bad[0].line)
            spec.errors.extend(out.errors)
        else:
            spec.lists.append(
                ListSpec(
                    name,
                    source.display,
                    key_line,
                    kind,
                    items=tuple(n for n in value if isinstance(n, Node)),
                )
            )
    else:
        out.add(f"a list is a file path or a list of items, not a {node.kind}", node.line)
        spec.errors.extend(out.errors)


def _check_rule(
    number: int, node: Node, registry: Registry
) -> RuleSpec | list[RuleValidationError]:
    if not isinstance(node.value, dict):
        out = _Collector(node.file, None, f"rule #{number}: ")
        out.add(f"a rule is a mapping with 'name', 'on' and 'do', not a {node.kind}", node.line)
        return out.errors
    keys = node.mapping()
    name_node = keys.get("name")
    name: str | None = None
    if (
        name_node is not None
        and isinstance(name_node.value, str)
        and _NAME.match(name_node.value)
        # No ESC, tab, bidi override: a name is printed in explain's trace,
        # the decision line and /metrics labels as it is written.
        and name_node.value.isprintable()
    ):
        name = name_node.value
    out = _Collector(node.file, name, "" if name else f"rule #{number}: ")
    if name_node is None:
        out.add("missing required key 'name'", node.line)
    elif name is None:
        out.add(
            "'name' must be a short one-line text without quotes or control characters",
            name_node.line,
        )

    for key in keys:
        if key not in RULE_KEYS:
            out.add(f"unknown key {key!r}{did_you_mean(key, RULE_KEYS)}", node.key_lines[key])

    enabled = _boolean(keys, "enabled", True, out)
    cont = _boolean(keys, "continue", False, out)
    priority = 0
    if "priority" in keys:
        p = keys["priority"]
        if isinstance(p.value, int) and not isinstance(p.value, bool):
            priority = p.value
        else:
            out.add(f"'priority' must be an integer, not a {p.kind}", p.line)
    description = ""
    if "description" in keys:
        d = keys["description"]
        if isinstance(d.value, str):
            description = d.value
        else:
            out.add(f"'description' must be text, not a {d.kind}", d.line)

    trigger = _trigger(keys, node, registry, out)
    condition = _expression_node(keys, "if", out)
    when = _expression_node(keys, "when", out)
    lookups = _lookups(keys, out)
    actions = _actions(keys, node, registry, out)
    _route_once(actions, keys.get("continue") if cont else None, registry, out)

    if out.errors:
        return out.errors
    if not enabled:
        return []
    assert name is not None
    assert trigger is not None
    return RuleSpec(
        name,
        node.file,
        node.line,
        trigger,
        actions,
        priority,
        condition,
        lookups,
        when,
        cont,
        description,
    )


def _boolean(keys: dict[str, Node], key: str, default: bool, out: _Collector) -> bool:
    node = keys.get(key)
    if node is None:
        return default
    if isinstance(node.value, bool):
        return node.value
    out.add(f"{key!r} must be true or false, not a {node.kind}", node.line)
    return default


def _trigger(
    keys: dict[str, Node], rule: Node, registry: Registry, out: _Collector
) -> TriggerSpec | None:
    on, schedule = keys.get("on"), keys.get("schedule")
    if on is not None and schedule is not None:
        out.add("use either 'on' or 'schedule', not both", rule.key_lines["schedule"])
        return None
    if schedule is not None:
        if not isinstance(schedule.value, str):
            out.add(
                f"'schedule' must be a cron text like \"0 19 * * mon-fri\", not a {schedule.kind}",
                schedule.line,
            )
            return None
        try:
            check_cron(schedule.value)
        except ValueError as exc:
            out.add(f"invalid schedule {shown(schedule.value)}: {exc}", schedule.line)
            return None
        missed = _missed(keys.get("missed"), out)
        return TriggerSpec("schedule", schedule.value, missed)
    if "missed" in keys:
        out.add(
            "'missed' is for 'schedule' rules (what becomes of a run callrouter could "
            "not make on time), not for 'on' rules",
            keys["missed"].line,
        )
    if on is None:
        out.add(
            "missing trigger: add 'on: call', 'on: event <Name>' or 'schedule: \"<cron>\"'",
            rule.line,
        )
        return None
    if not isinstance(on.value, str):
        out.add(f"'on' must be 'call' or 'event <Name>', not a {on.kind}", on.line)
        return None
    words = on.value.split()
    if words == ["call"]:
        return TriggerSpec("call")
    if len(words) == 2 and words[0] == "event":
        pattern = words[1]
        if not _GLOB.match(pattern):
            out.add(f"invalid event name {pattern!r}", on.line)
            return None
        names = registry.event_names
        if names is not None and not any(c in pattern for c in "*?[") and pattern not in names:
            out.add(
                f"unknown event {pattern!r}{did_you_mean(pattern, names)}; Asterisk 22 "
                "documents no such event (callrouter actions --events lists them); one "
                f"of a module it does not document is written as a glob: 'on: event {pattern}*'; "
                # A dialplan's UserEvent(CrmHangup) comes as Event: UserEvent:
                # the glob above would load and never fire for it.
                f"a UserEvent's own name (UserEvent({pattern}) in the dialplan) is tested "
                f"with 'on: event UserEvent' and 'if: event.userevent == \"{pattern}\"'",
                on.line,
            )
            return None
        return TriggerSpec("event", pattern)
    if words and words[0] == "event":
        out.add("'on: event' needs one event name or glob, like 'on: event Hangup'", on.line)
        return None
    first = words[0] if words else ""
    out.add(
        f"unknown trigger {on.value!r}{did_you_mean(first, ('call', 'event'))}; "
        "use 'call' or 'event <Name>'",
        on.line,
    )
    return None


def _missed(node: Node | None, out: _Collector) -> Literal["skip", "run-once"]:
    """A ``schedule:`` rule's ``missed:``: ``skip`` (also when not given) or ``run-once``."""
    if node is None:
        return "skip"
    if node.value == "skip":
        return "skip"
    if node.value == "run-once":
        return "run-once"
    written = shown(node.value) if isinstance(node.value, str) else f"a {node.kind}"
    hint = did_you_mean(node.value, MISSED) if isinstance(node.value, str) else ""
    out.add(f"'missed' must be 'skip' or 'run-once', not {written}{hint}", node.line)
    return "skip"


def _expression_node(keys: dict[str, Node], key: str, out: _Collector) -> Node | None:
    node = keys.get(key)
    if node is None:
        return None
    if isinstance(node.value, bool):
        return Node("True" if node.value else "False", node.file, node.line, raw=node.raw)
    if not isinstance(node.value, str):
        out.add(f"{key!r} must be an expression, not a {node.kind}", node.line)
        return None
    return node


def _lookups(keys: dict[str, Node], out: _Collector) -> list[tuple[str, Node]]:
    node = keys.get("lookup")
    if node is None:
        return []
    if not isinstance(node.value, dict):
        out.add(f"'lookup' must map names to lookup calls, not a {node.kind}", node.line)
        return []
    found: list[tuple[str, Node]] = []
    for name, value in node.mapping().items():
        if not IDENTIFIER.match(name):
            out.add(f"lookup name {name!r} must be letters, digits and '_'", node.key_lines[name])
        elif not isinstance(value.value, str):
            out.add(
                f"lookup {name!r} must be a call like onec.responsible(caller.number), "
                f"not a {value.kind}",
                value.line,
            )
        else:
            found.append((name, value))
    return found


def _actions(
    keys: dict[str, Node], rule: Node, registry: Registry, out: _Collector
) -> list[ActionDecl]:
    node = keys.get("do")
    if node is None:
        out.add("missing required key 'do'", rule.line)
        return []
    if not isinstance(node.value, list) or not node.value:
        out.add("'do' must be a non-empty list of actions", node.line)
        return []
    actions: list[ActionDecl] = []
    for item in node.sequence():
        decl = _action(item, registry, out)
        if decl is not None:
            actions.append(decl)
    return actions


def _route_once(
    actions: list[ActionDecl], cont: Node | None, registry: Registry, out: _Collector
) -> None:
    """A decision moves or ends the call once: ``continue: true`` is for rules
    that tag the call (``setvar``) and go on, and one rule's ``do:`` routes it
    at most once. ``explain`` showed ``decision: redirect(queues,a), hangup(),
    redirect(queues,b)`` for a ``continue: true`` rule's redirect and the
    rules after it."""
    first: ActionDecl | None = None
    for decl in actions:
        spec = registry.actions[decl.kind]
        try:
            routes = spec.routes(_written(decl)) if callable(spec.routes) else spec.routes
        except Exception as exc:
            out.add(_plugin_failed(registry, spec, "routes", exc), decl.line)
            continue
        if not routes:
            continue
        if cont is not None:
            out.add(
                f"action {decl.kind!r} moves or ends the call, so the rule cannot have "
                f"'continue: true' (line {cont.line}): a later rule would route the call "
                "again; 'continue: true' is for rules that tag the call (setvar) and go on",
                decl.line,
            )
        elif first is not None:
            out.add(
                f"action {decl.kind!r} routes the call a second time ({first.kind!r} at "
                f"line {first.line} already does): a rule moves or ends a call once",
                decl.line,
            )
        else:
            first = decl


def _written(decl: ActionDecl) -> dict[str, object]:
    return {key: node.value for key, node in decl.params.items()}


def _action(item: Node, registry: Registry, out: _Collector) -> ActionDecl | None:
    if isinstance(item.value, str):
        kind, params_node = item.value, None
    elif isinstance(item.value, dict) and len(item.value) == 1:
        kind, params_node = next(iter(item.mapping().items()))
    elif isinstance(item.value, dict):
        found = ", ".join(repr(k) for k in item.mapping())
        out.add(
            f"an action is one key naming it, found {len(item.value)}: {found} "
            "(start each action with its own '-')",
            item.line,
        )
        return None
    else:
        out.add(f"an action is a mapping like 'redirect: {{...}}', not a {item.kind}", item.line)
        return None
    spec = registry.actions.get(kind)
    if spec is None:
        hint = (
            registry.why_missing(kind)
            or did_you_mean(kind, registry.actions)
            or f"; known actions: {one_of(registry.actions)}"
        )
        out.add(f"unknown action {kind!r}{hint}", item.line)
        return None
    params: dict[str, Node] = {}
    if params_node is not None and params_node.value is not None:
        if not isinstance(params_node.value, dict):
            out.add(
                f"action {kind!r} takes a mapping of parameters, not a {params_node.kind}",
                params_node.line,
            )
            return None
        params = params_node.mapping()
    before = len(out.errors)
    _check_params(spec, item, params, out, registry)
    return ActionDecl(kind, item.line, params) if len(out.errors) == before else None


def _plugin_failed(registry: Registry, spec: ActionSpec, what: str, exc: Exception) -> str:
    """A plugin's ``check`` or ``routes`` raised something else than the
    ValueError that refuses a rule: that rule's error (the file's other rules
    load), naming the plugin (:meth:`Registry.action_failed`)."""
    return registry.action_failed(spec.name, what, exc)


def _check_params(
    spec: ActionSpec, item: Node, params: dict[str, Node], out: _Collector, registry: Registry
) -> None:
    prefix = f"action {spec.name!r}: "
    values: dict[str, object] = {}
    for key, value in params.items():
        param = spec.param(key)
        if param is None and not spec.extra:
            names = [p.name for p in spec.params]
            out.add(f"{prefix}unknown parameter {key!r}{did_you_mean(key, names)}", value.line)
            continue
        if isinstance(value.value, dict | list) or value.value is None:
            out.add(
                f"{prefix}parameter {key!r} must be a single value, not a {value.kind}", value.line
            )
            continue
        templated = isinstance(value.value, str) and "{" in value.value
        values[key] = value.value
        if param is None or templated:
            continue
        if param.type == "int" and not _is_int(value.value):
            out.add(f"{prefix}parameter {key!r} must be an integer, not a {value.kind}", value.line)
        elif param.type == "bool" and not isinstance(value.value, bool):
            out.add(
                f"{prefix}parameter {key!r} must be true or false, not a {value.kind}", value.line
            )
    for param in spec.params:
        if param.required and param.name not in params:
            out.add(f"{prefix}missing required parameter {param.name!r}", item.line)
    if spec.extra and not spec.params and not params:
        out.add(f"{prefix}needs at least one {spec.extra_name}", item.line)
    if out.errors:
        return
    if spec.check is None:
        return
    try:
        spec.check(values)
    except ValueError as exc:  # AMIValidationError from the catalog is a ValueError too
        out.add(f"{prefix}{exc}", item.line)
    except Exception as exc:
        out.add(_plugin_failed(registry, spec, "check", exc), item.line)


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()
