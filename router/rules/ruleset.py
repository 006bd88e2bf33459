"""A loaded, indexed rule set, and the holder that swaps it on reload.

Rules are indexed by trigger so a call never looks at event or schedule
rules, and call rules are further indexed by the numbers their ``if`` tests
(:mod:`router.rules.index`: ``did == "74951234567"``, ``caller.number in
lists.vip``, ...): a PBX with hundreds of numbers has hundreds of per-number
rules, and a call should only walk its own number's rules plus the generic
ones. Both indexes preserve priority order exactly, so they change speed,
never results.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from router.dialplan import KnownContext
from router.errors import RuleValidationError
from router.request import RequestInfo
from router.rules.answers import answer_warnings
from router.rules.context import Caller, CallInfo, Context
from router.rules.evaluate import FailuresSaid, Outcome, evaluate_rules, may_ask
from router.rules.index import CallIndex, Key, event_guard
from router.rules.lists import MAX_LIST_FILE_BYTES, load_list
from router.rules.loader import discover, display_path, load_file
from router.rules.model import Rule
from router.rules.registry import LookupFn, Registry
from router.rules.schema import ListSpec, RuleSpec, check_file
from router.rules.validate import compile_rule
from router.textfiles import read_bounded

__all__ = [
    "RedirectTarget",
    "RuleBook",
    "RuleSet",
    "call_context",
    "load_rules",
    "source_digests",
]

_EVENT_CACHE_LIMIT = 1024


@dataclass(frozen=True)
class RuleSet:
    """An immutable, evaluated-as-a-whole set of valid rules.

    ``errors`` are the problems found while loading (their rules are left
    out); ``fatal`` says a whole file was refused, which makes a reload fail.
    """

    rules: tuple[Rule, ...]
    lists: Mapping[str, frozenset[str]]
    registry: Registry
    errors: tuple[RuleValidationError, ...] = ()
    fatal: bool = False
    _calls: CallIndex = field(default_factory=lambda: CallIndex((), {}, {}), repr=False)
    #: Some rule reads ``call.vars``: the engine then asks Asterisk for ``VarSet``.
    reads_call_vars: bool = False
    _events: tuple[Rule, ...] = field(default=(), repr=False)
    _event_cache: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _schedules: Mapping[str, Rule] = field(default_factory=dict, repr=False)
    #: Event rules' guards on the event's fields (router/rules/index.py ``event_guard``).
    _event_guards: Mapping[int, Mapping[str, frozenset[str]] | None] = field(
        default_factory=dict, repr=False
    )
    #: The list files (``lists: {x: {file: ...}}``) the set was loaded from,
    #: each with its digest taken as it was read (:func:`source_digests`).
    list_digests: Mapping[Path, str] = field(default_factory=dict, repr=False)
    #: Not errors, said at load (``check``'s warnings, the engine's WARNING):
    #: a rule reading a field of an answer its lookup declares unreadable
    #: (:func:`router.rules.answers.answer_warnings`).
    warnings: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        rules: Iterable[Rule],
        lists: Mapping[str, frozenset[str]],
        registry: Registry,
        errors: Sequence[RuleValidationError] = (),
        fatal: bool = False,
        list_digests: Mapping[Path, str] | None = None,
    ) -> RuleSet:
        ordered = tuple(sorted(rules, key=lambda r: r.sort_key))
        calls = [r for r in ordered if r.trigger.kind == "call"]
        events = tuple(r for r in ordered if r.trigger.kind == "event")
        frozen_lists = MappingProxyType(dict(lists))
        return cls(
            ordered,
            frozen_lists,
            registry,
            tuple(errors),
            fatal,
            CallIndex(calls, frozen_lists, registry.functions),
            any(_reads_call_vars(r) for r in ordered),
            events,
            {},
            MappingProxyType({r.name: r for r in ordered if r.trigger.kind == "schedule"}),
            {id(r): event_guard(r, frozen_lists, registry.functions) for r in events},
            MappingProxyType(dict(list_digests or {})),
            tuple(answer_warnings(ordered, registry)),
        )

    @classmethod
    def empty(cls, registry: Registry) -> RuleSet:
        return cls.build((), {}, registry)

    def landing_priorities(self) -> frozenset[str] | None:
        """The dialplan priorities the rules' ``redirect`` actions send calls to
        (1 when a rule names none); None when one is a template, known only
        per call. The executor confirms a Redirect by the channel's
        ``Newexten`` there, so Asterisk may drop the other steps' (router/engine.py)."""
        found: set[str] = set()
        for rule in self.rules:
            for action in rule.actions:
                if action.kind != "redirect":
                    continue
                value = dict(action.params).get("priority", "1")
                if not isinstance(value, str) or not value.strip().isdigit():
                    return None
                found.add(str(int(value)))
        return frozenset(found)

    def redirect_targets(self) -> tuple[list[RedirectTarget], int]:
        """Where the rules' ``redirect`` actions send calls, as far as the rules
        say: each one whose context is a constant (its extension too when that
        is), and how many others are built per call from a lookup.
        ``callrouter check --asterisk`` asks Asterisk's dialplan for each."""
        known: list[RedirectTarget] = []
        built = 0
        for rule in self.rules:
            for action in rule.actions:
                if action.kind != "redirect":
                    continue
                params = dict(action.params)
                context, exten = params.get("context"), params.get("exten")
                if not isinstance(context, str) or "{" in context:
                    built += 1
                    continue
                literal = exten if isinstance(exten, str) and "{" not in exten else None
                known.append(
                    RedirectTarget(context, literal, rule.name, f"{rule.file}:{action.line}")
                )
        return known, built

    @property
    def event_patterns(self) -> tuple[str, ...]:
        """Event names and globs some rule reacts to (empty: no need to watch events)."""
        return tuple(dict.fromkeys(r.trigger.pattern for r in self._events))

    def event_rules(self, name: str) -> tuple[Rule, ...]:
        """The rules an event of this name triggers, cached per name: the engine
        asks for every event, so this must cost a dict lookup, not a context."""
        cached = self._event_cache.get(name)
        if cached is None:
            cached = tuple(r for r in self._events if fnmatch.fnmatchcase(name, r.trigger.pattern))
            if len(self._event_cache) < _EVENT_CACHE_LIMIT:
                self._event_cache[name] = cached
        return cached

    def may_fire(self, name: str, fields: Callable[[str], Sequence[str]]) -> bool:
        """Whether an event of this name may fire a rule: some rule watches it
        and the event's fields pass its guard (``fields(key)``: every value of
        a key, any case; the last is what ``event.key`` reads).

        False means no rule's ``if`` can be true: the engine then builds no
        context for the event (a ``Hangup`` rule for one cause skips the rest).
        """
        rules = self.event_rules(name)
        if not rules:
            return False
        guards = self._event_guards
        for rule in rules:
            guard = guards.get(id(rule))
            if guard is None:
                return True
            for field_name, values in guard.items():
                if field_name == "event":
                    if name in values:
                        return True
                    continue
                found = fields(field_name)
                if found and found[-1] in values:
                    return True
        return False

    def index_keys(self, rule: Rule) -> tuple[Key, ...]:
        """The call's values (``did``, ``caller.number``...) that decide whether the
        index lets ``rule`` be tried; empty for a rule every call tries."""
        return self._calls.skipped_by(rule, self.lists)

    @property
    def schedules(self) -> list[tuple[str, str]]:
        """(rule name, cron) for the scheduler to fire ``Context.for_schedule``."""
        return [(name, rule.trigger.pattern) for name, rule in self._schedules.items()]

    def runs_missed_once(self, name: str) -> bool:
        """Whether the ``schedule:`` rule ``name`` makes up a run it missed, once
        (``missed: run-once``), rather than skip it."""
        rule = self._schedules.get(name)
        return rule is not None and rule.trigger.missed == "run-once"

    def rules_for(self, context: Context) -> Sequence[Rule]:
        """The rules that may react to this trigger, in priority order."""
        if context.kind == "call":
            return self._calls.candidates(context)
        if context.kind == "event":
            return self.event_rules(context.event.name if context.event is not None else "")
        rule = self._schedules.get(context.rule or "")
        return (rule,) if rule is not None else ()

    async def evaluate(
        self,
        context: Context,
        *,
        deadline: float | None = None,
        lookups: Mapping[str, LookupFn] | None = None,
        explain: bool = False,
        request: RequestInfo | Callable[[], RequestInfo] | None = None,
        dialplan: Mapping[str, KnownContext] | None = None,
        clock: Callable[[], float] = time.monotonic,
        said: FailuresSaid | None = None,
    ) -> Outcome:
        """Evaluates one trigger firing; never raises for a rule's sake.
        ``dialplan``: the contexts as the dialplan audit last read them;
        ``clock``: what ``deadline`` is measured on; ``said``: the failures
        already logged (:func:`~router.rules.evaluate.evaluate_rules`)."""
        return await evaluate_rules(
            self.rules_for(context),
            context,
            self.registry,
            self.lists,
            deadline=deadline,
            lookups=lookups,
            explain=explain,
            request=request,
            dialplan=dialplan,
            clock=clock,
            said=said,
        )

    def may_ask(
        self,
        context: Context,
        lookup: str,
        dialplan: Mapping[str, KnownContext] | None = None,
    ) -> bool:
        """Could routing ``context`` ask ``lookup``? (:func:`~router.rules.evaluate.may_ask`)"""
        return may_ask(
            self.rules_for(context), context, self.registry, self.lists, lookup, dialplan
        )


def _reads_call_vars(rule: Rule) -> bool:
    """Does any expression of the rule read ``call.vars`` (fed by ``VarSet`` events)?"""
    trees = [e.tree for e in (rule.condition, rule.when) if e is not None]
    for lookup in rule.lookups:
        trees.extend(a.tree for a in lookup.args)
        trees.extend(v.tree for _, v in lookup.kwargs)
    for action in rule.actions:
        for _, value in action.params:
            if not isinstance(value, str):
                trees.extend(e.tree for e in value.expressions)
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "vars"
        and isinstance(node.value, ast.Name)
        and node.value.id == "call"
        for tree in trees
        for node in ast.walk(tree)
    )


@dataclass(frozen=True, slots=True)
class RedirectTarget:
    """A dialplan location a rule's ``redirect`` names in its text."""

    context: str
    #: None when the extension is a template, known only per call.
    exten: str | None
    rule: str
    #: ``file:line`` of the action.
    location: str


def call_context(
    registry: Registry,
    caller: str,
    did: str,
    *,
    caller_name: str = "",
    call: CallInfo | None = None,
    now: datetime | None = None,
) -> Context:
    """A call's context with numbers normalized by the registry's number plan.

    The engine and ``explain`` both build contexts here, so ``caller.number``
    is normalized exactly like the numbers in lists.
    """
    person = Caller(
        registry.normalize_number(caller), caller, caller_name, registry.is_internal_number(caller)
    )
    return Context.for_call(person, registry.normalize_number(did), call=call, now=now)


def load_rules(paths: Iterable[Path | str], registry: Registry, *, named_by: str = "") -> RuleSet:
    """Loads files and folders: bad rules and lists are reported and left out.

    ``named_by`` follows "no such file or folder" for a path that is not
    there: where the paths came from (``router.toml [router] rules``) and what
    to do, which the bare path does not say.

    ``errors`` are in file order (as read), then line order: the checks run in
    passes (schema, lists, names, expressions), and `callrouter check` and the
    start of `callrouter run` print them as they are here.
    """
    errors: list[RuleValidationError] = []
    fatal = False
    list_specs: dict[str, ListSpec] = {}
    refused_lists: set[str] = set()
    rule_specs: list[RuleSpec] = []
    #: Each file's place in reading order, for sorting the errors.
    rank: dict[str, int] = {}
    #: A list file's error sorts where its list is defined: (rule file, line).
    anchors: dict[int, tuple[str, int]] = {}
    for base in paths:
        base = Path(base)
        if not base.exists():
            rank.setdefault(display_path(base), len(rank))
            errors.append(
                RuleValidationError(f"no such file or folder{named_by}", file=display_path(base))
            )
            fatal = True
            continue
        for path in discover([base]):
            rank.setdefault(display_path(path), len(rank))
            try:
                source = load_file(path)
                checked = check_file(source, registry)
            except RuleValidationError as exc:
                errors.append(exc)
                fatal = True
                continue
            except Exception as exc:  # a bug, not the file: still a located error, no traceback
                errors.append(_internal_error(exc, display_path(path), 0))
                fatal = True
                continue
            errors.extend(checked.errors)
            fatal = fatal or checked.fatal
            for item in checked.lists:
                first = list_specs.get(item.name)
                if first is not None:
                    errors.append(
                        RuleValidationError(
                            f"list {item.name!r} is already defined at {first.file}:{first.line}",
                            file=item.file,
                            line=item.line,
                        )
                    )
                else:
                    list_specs[item.name] = item
            rule_specs.extend(checked.rules)
            refused_lists.update(checked.broken_lists)

    lists: dict[str, frozenset[str]] = {}
    broken: set[str] = set(refused_lists)
    #: Lists kept as written, with an entry no normalized number equals.
    unnormalized: dict[str, tuple[str, str]] = {}
    #: Each list file's digest, taken just before it is read: a file saved
    #: in between differs from it, so a reload reads it again.
    digests: dict[Path, str] = {}
    for name, item in list_specs.items():
        if item.path is not None:
            digests.update(source_digests((), (item.path,)))
        try:
            lists[name] = load_list(item, registry.normalize_number)
        except RuleValidationError as exc:
            errors.append(exc)
            anchors[id(exc)] = (item.file, item.line)
            broken.add(name)
            continue
        if item.type != "numbers":
            entry = _not_normalized(lists[name], registry.normalize_number)
            if entry is not None:
                unnormalized[name] = (item.type, entry)

    rules: list[Rule] = []
    seen: dict[str, RuleSpec] = {}
    for order, spec in enumerate(rule_specs):
        first_rule = seen.get(spec.name)
        if first_rule is not None:
            errors.append(
                RuleValidationError(
                    f"duplicate rule name (first defined at {first_rule.file}:{first_rule.line})",
                    file=spec.file,
                    line=spec.line,
                    rule=spec.name,
                )
            )
            continue
        seen[spec.name] = spec
        try:
            compiled = compile_rule(spec, registry, lists, order, broken, unnormalized)
        except Exception as exc:  # a bug, not the rule: disable it with a located error
            compiled = [_internal_error(exc, spec.file, spec.line, spec.name)]
        if isinstance(compiled, Rule):
            rules.append(compiled)
        else:
            errors.extend(compiled)

    def place(error: RuleValidationError) -> tuple[int, int]:
        file, line = anchors.get(id(error), (error.file, error.line))
        return rank.get(file, len(rank)), line

    errors.sort(key=place)  # stable: one line's errors keep the order found
    return RuleSet.build(rules, lists, registry, errors, fatal, digests)


def source_digests(paths: Iterable[Path], extra: Iterable[Path] = ()) -> dict[Path, str]:
    """The SHA-256 of every file under ``paths`` (each folder's whole tree, as
    the engine's watcher sees it) and of ``extra`` (list files kept
    elsewhere), by absolute path: equal digests, equal input to a load. A file
    that cannot be read is digested as its error."""
    found: list[Path] = []
    for root in paths:
        found.extend([root] if root.is_file() else sorted(root.rglob("*")))
    digests: dict[Path, str] = {}
    for path in [*found, *extra]:
        key = Path(os.path.abspath(path))
        if key in digests or path.is_dir():
            continue
        try:  # bounded, and a FIFO or device refused unopened, as the load reads them
            digests[key] = hashlib.sha256(read_bounded(path, MAX_LIST_FILE_BYTES)).hexdigest()
        except OSError as exc:  # FileTooBig among them: the load refuses it too
            digests[key] = f"unreadable: {exc}"
    return digests


def _not_normalized(values: frozenset[str], normalize: Callable[[str], str]) -> str | None:
    """The first entry (in sorted order) that is not a normalized number, or None."""
    for value in sorted(values):
        try:
            if normalize(value) != value:
                return value
        except Exception:  # the plan fails on it for every call too
            return value
    return None


def _internal_error(
    exc: Exception, file: str, line: int, rule: str | None = None
) -> RuleValidationError:
    """``callrouter check`` and a reload never end in a traceback over a rule file."""
    return RuleValidationError(
        f"cannot load ({type(exc).__name__}: {exc}); please report this as a bug",
        file=file,
        line=line,
        rule=rule,
    )


class RuleBook:
    """Holds the live rule set and swaps it only for a loadable one.

    The engine keeps one RuleBook; ``reload()`` after a file changes. A reload
    that refuses a file (or, with ``strict``, finds any error) keeps serving
    the previous rules, so a half-saved file never empties the router.
    """

    def __init__(
        self,
        paths: Iterable[Path | str],
        registry: Registry,
        *,
        named_by: str = "",
        said: FailuresSaid | None = None,
    ) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.registry = registry
        #: :func:`load_rules`' ``named_by``: where the paths came from.
        self.named_by = named_by
        self.current = RuleSet.empty(registry)
        #: The plugin failures this book's evaluations logged, once per call:
        #: its own, not the process's (two engines in one process, a test's
        #: and the next, shared one); a reload's new book is handed the old one.
        self.said = said if said is not None else FailuresSaid()

    def reload(self, *, strict: bool = False) -> RuleSet:
        """Loads the files; returns what was loaded (check ``errors`` and ``fatal``)."""
        candidate = load_rules(self.paths, self.registry, named_by=self.named_by)
        if not candidate.fatal and not (strict and candidate.errors):
            self.current = candidate
        return candidate

    async def evaluate(
        self,
        context: Context,
        *,
        deadline: float | None = None,
        lookups: Mapping[str, LookupFn] | None = None,
        explain: bool = False,
        request: RequestInfo | Callable[[], RequestInfo] | None = None,
        dialplan: Mapping[str, KnownContext] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Outcome:
        """The current rules' :meth:`RuleSet.evaluate`; ``clock`` is what
        ``deadline`` is measured on."""
        return await self.current.evaluate(
            context,
            deadline=deadline,
            lookups=lookups,
            explain=explain,
            request=request,
            dialplan=dialplan,
            clock=clock,
            said=self.said,
        )
