"""Rules + a trigger's context + lookups -> Decision and Trace.

Routing must fail open: a rule whose lookup fails, times out or whose
expression errors is simply not taken, and the next rule gets its turn. The
only exception that leaves this module is cancellation of the caller's task.
All lookups of one evaluation share one deadline (``time.monotonic()``), so a
slow 1C cannot hold a ringing call for longer than the budget whatever the
number of rules.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from router import eager
from router.dialplan import KnownContext, missing_target
from router.errors import FunctionFailed, LookupCutOff, LookupUnavailable
from router.request import RequestInfo
from router.rules.context import Context
from router.rules.decision import Action, Decision, LookupTrace, RuleTrace, Trace
from router.rules.expr import Evaluator, Unreadable
from router.rules.model import CompiledAction, Rule
from router.rules.registry import REQUEST_PARAM, LookupFn, Registry, wants_request
from router.source_place import defined_at

__all__ = [
    "FUNCTION_FAILURE_MEMORY",
    "NOT_PROVIDED",
    "FailuresSaid",
    "Outcome",
    "evaluate_rules",
    "may_ask",
    "request_for",
]

#: A plugin's lookup that raised a bug (not LookupUnavailable) is said where
#: its hooks' failures are, with the plugin's name and the traceback.
_plugin_log = logging.getLogger("router.plugins")

#: Error text for a lookup nobody implements (``explain`` without ``--lookup``).
NOT_PROVIDED = "not provided"
#: Seconds a plain lookup may hold the event loop before it is said at WARNING
#: (as a plain hook, router.plugins.BLOCKING_WARN).
BLOCKING_WARN = 0.5
#: Seconds of condition evaluation an evaluation that starts past its deadline gets.
LATE_START_GRACE = 0.05


#: Answers that are never awaitable, by exact type (a subclass may be).
_PLAIN = frozenset({type(None), dict, str, list, tuple, int, float, bool})


#: No dialplan listing: nothing judged (``explain``, a test, before the first audit).
_NO_LISTING: Mapping[str, KnownContext] = {}


class Outcome(NamedTuple):
    decision: Decision
    trace: Trace


class _Rejected(Exception):
    """The rule's actions could not be rendered into something executable."""


class _ActionFailed(Exception):
    """An action's ``filled`` or ``rendered`` raised something else than
    ValueError: its plugin's bug, named in the trace (:func:`_failure`)."""

    def __init__(self, action: str, what: str, exc: Exception) -> None:
        super().__init__(action, what, exc)
        self.action, self.what, self.exc = action, what, exc


_Memo = dict[tuple[Any, ...], tuple[Any, str | None]]


async def evaluate_rules(
    rules: Sequence[Rule],
    context: Context,
    registry: Registry,
    lists: Mapping[str, frozenset[str]],
    *,
    deadline: float | None = None,
    lookups: Mapping[str, LookupFn] | None = None,
    explain: bool = False,
    request: RequestInfo | Callable[[], RequestInfo] | None = None,
    dialplan: Mapping[str, KnownContext] | None = None,
    clock: Callable[[], float] = time.monotonic,
    said: FailuresSaid | None = None,
) -> Outcome:
    """Runs ``rules`` (already in priority order) for one trigger firing.

    ``lookups`` overrides the registry's implementations by name
    (``explain`` passes stubs). With ``explain`` the rules after the one that
    ended routing are listed as skipped. ``request`` is what lookups that
    declare a ``request`` parameter get, or a function making it, called
    only when such a lookup runs (the event rules' request normalizes two
    numbers, and most events match no rule); without one it is made from
    ``context`` (:func:`request_for`). ``dialplan`` is the contexts as the
    dialplan audit last read them: a rule whose ``redirect`` goes to an
    extension one of them surely lacks is rejected, and the next rule decides
    (Asterisk would accept the Redirect and hang the call up). Nothing is
    asked of Asterisk here; the executor confirms before it refuses a decision.
    ``clock`` is what ``deadline`` is measured on (a test's own clock: a loaded
    machine's pause then does not eat a short deadline before the lookup).
    ``said`` is the evaluator's memory of the plugin failures it logged (once
    per call, :class:`FailuresSaid`): the engine's, kept across its calls;
    without one, this evaluation's own.
    """
    listing = dialplan or _NO_LISTING
    started = time.perf_counter()
    names = _names(context, registry, lists)
    # Told in the rules' time zone, as `now` is (and `explain --at` takes it).
    now = names["now"]
    trace = Trace(context, now=now if isinstance(now, datetime) else None)
    evaluator = Evaluator(context, names, registry.functions)
    memo: _Memo = {}
    asked = _Asked(context, deadline, request, said)
    matched: list[str] = []
    actions: list[Action] = []
    append = trace.rules.append
    # Conditions run synchronously, so asyncio.timeout cannot stop them: each is
    # bounded (router.rules.limits), and this bounds how long they go on past
    # the deadline. A late start still gets a moment, so rules written for a
    # failed lookup (``when: x is None``) can decide, measured from one read of
    # the clock: the first rule is not looked at again (a pause between two
    # reads, a loaded machine's, ate the moment and no rule was evaluated).
    stop_at = None if deadline is None else max(deadline, clock() + LATE_START_GRACE)
    for position, rule in enumerate(rules):
        if stop_at is not None and position and not position % 32 and clock() > stop_at:
            trace.deadline_hit = True
            break
        # The ``if`` is tested inline: most rules stop here, and a coroutine per
        # rule would cost more than the condition itself.
        if rule.condition is not None:
            try:
                passed = evaluator.evaluate(rule.condition)
            except Exception as exc:  # fail open: a broken rule is skipped, never fatal
                detail = _failure(exc, registry, asked)
                append(RuleTrace(rule.name, rule.location, "error", "if", detail))
                continue
            if not passed:
                append(rule.false_if_trace)
                continue
        entry = await _run_rule(
            rule, evaluator, names, registry, lookups, deadline, memo, trace, asked, listing, clock
        )
        append(entry)
        if entry.status != "matched":
            continue
        matched.append(rule.name)
        actions.extend(entry.actions)
        if not rule.cont:
            if explain:
                trace.rules.extend(
                    RuleTrace(
                        r.name, r.location, "skipped", detail=f"routing ended at rule {rule.name!r}"
                    )
                    for r in rules[position + 1 :]
                )
            break
    trace.elapsed_us = (time.perf_counter() - started) * 1e6
    return Outcome(Decision(tuple(matched), tuple(actions)), trace)


def may_ask(
    rules: Sequence[Rule],
    context: Context,
    registry: Registry,
    lists: Mapping[str, frozenset[str]],
    lookup: str,
    dialplan: Mapping[str, KnownContext] | None = None,
) -> bool:
    """Could evaluating ``rules`` for ``context`` call the lookup ``lookup``?

    ``False`` when a rule without lookups (a blacklist ``hangup``, an
    internal-calls redirect) ends routing before any rule that asks
    ``lookup`` has a true ``if``: a prefetch of that lookup would ask a slow
    service (1C) about a caller the rules never look up. Rules with other
    lookups cannot be decided here; they are passed over, since whether they
    match or not, they do not ask ``lookup``. Errors count as in
    :func:`evaluate_rules` (the rule is not taken, a redirect to an extension
    ``dialplan`` says is missing too); ``True`` is the safe answer.
    """
    listing = dialplan or _NO_LISTING
    names = _names(context, registry, lists)
    evaluator = Evaluator(context, names, registry.functions)
    for rule in rules:
        try:
            if rule.condition is not None and not evaluator.evaluate(rule.condition):
                continue
            if any(item.lookup == lookup for item in rule.lookups):
                return True
            if rule.lookups:
                continue  # its answer is unknown here, and it does not ask ``lookup``
            if rule.when is not None and not evaluator.evaluate(rule.when):
                continue
            for action in rule.actions:
                _render(action, evaluator, rule.name, listing)
        except Exception:  # a broken rule is not taken, as in evaluate_rules
            continue
        if not rule.cont:
            return False
    return False


def _failure(exc: Exception, registry: Registry, asked: _Asked) -> str:
    """A rule's run-time error as the trace says it: ``is_vip() raised
    RuntimeError: ...`` for a function's, ``action 'crm_act': plugin 'crm'
    failed in its filled: RuntimeError(...)`` for an action's check,
    ``ZeroDivisionError: ...`` else."""
    if isinstance(exc, FunctionFailed):
        _function_failed(exc, registry, asked, asked.said)
        return str(exc)
    if isinstance(exc, _ActionFailed):
        return registry.action_failed(exc.action, exc.what, exc.exc)
    if isinstance(exc, Unreadable):  # a value no lookup answered: said as it always was
        return f"FeatureNotAvailable: {exc}"
    return f"{type(exc).__name__}: {exc}"


#: How deep and how many values into a lookup's answer :func:`_answered` looks.
_ANSWER_DEPTH = 4
_ANSWER_VALUES = 1000


def _answered(value: object, entry: RuleTrace) -> LookupTrace | None:
    """The rule's lookup whose answer is ``value`` or holds it (by identity, in
    its mappings', lists' and tuples' values, bounded), None for none."""
    budget = [_ANSWER_VALUES]

    def holds(answer: object, depth: int) -> bool:
        if answer is value:
            return True
        if depth >= _ANSWER_DEPTH or budget[0] <= 0:
            return False
        if isinstance(answer, Mapping):
            items: Any = answer.values()
        elif isinstance(answer, list | tuple):
            items = answer
        else:
            return False
        for item in items:
            budget[0] -= 1
            if budget[0] <= 0:
                return False
            if holds(item, depth + 1):
                return True
        return False

    for record in entry.lookups:
        if record.value is not None and holds(record.value, 0):
            return record
    return None


def _unreadable_answer(
    exc: Unreadable, record: LookupTrace, rule: str, registry: Registry, asked: _Asked
) -> str:
    """A rule read a field or an item of a lookup's answer that has none (the
    plugin answered a set, or an object of its own class, where the rule reads
    ``.tier``): the trace and an ERROR name the plugin and the lookup that
    answered it. ``cannot read .tier of a set`` alone did not say whose answer
    it was. Logged once per lookup and call (each time without a call, as a
    rule function's failure); the rule is not taken, the next rules decide."""
    lookup = record.lookup or record.name
    owner = registry.owners.get(lookup)
    who = f"plugin {owner!r}" if owner is not None else "a plugin"
    detail = f"{exc}: the answer of lookup {lookup} ({who}, as {record.name!r})"
    try:
        call = asked.get().linkedid
    except Exception:  # the request is only for the message: never fail on it
        call = ""
    if call and not asked.said.first((owner or "", f"lookup {lookup}", call)):
        return detail
    where = f" (call {call})" if call else ""
    kind = type(record.value).__name__
    _plugin_log.error(
        "%s: its lookup %s answered a %s, and rule %r %s%s; the rule was not taken, the "
        "next rules decide (docs/plugins.md, Isolation: a lookup answers None, a mapping, "
        "a list or a plain value)",
        who,
        lookup,
        kind,
        rule,
        exc,
        where,
    )
    return detail


def request_for(context: Context, deadline: float | None = None) -> RequestInfo:
    """The request facts a trigger's context gives, for a caller that has no better.

    The engine passes its own for a call it routes (the waiting channel);
    ``explain`` and rules without a channel get these: the caller and DID
    of the context, the call's ids where the trigger has a call.
    """
    call = context.call
    return RequestInfo(
        channel=call.channel if call else "",
        uniqueid=call.uniqueid if call else "",
        linkedid=call.linkedid if call else "",
        caller=context.caller.number if context.caller else "",
        did=context.did or "",
        deadline=deadline,
    )


class _Asked:
    """The request for lookups that want one, made at most once per evaluation,
    and the evaluator's memory of failures already logged."""

    __slots__ = ("_context", "_deadline", "_request", "said")

    def __init__(
        self,
        context: Context,
        deadline: float | None,
        request: RequestInfo | Callable[[], RequestInfo] | None,
        said: FailuresSaid | None = None,
    ) -> None:
        self._context = context
        self._deadline = deadline
        self._request = request
        self.said = said if said is not None else FailuresSaid()

    def get(self) -> RequestInfo:
        request = self._request
        if request is None:
            request = self._request = request_for(self._context, self._deadline)
        elif not isinstance(request, RequestInfo):
            request = self._request = request()
        return request


def _names(
    context: Context, registry: Registry, lists: Mapping[str, frozenset[str]]
) -> dict[str, object]:
    names = context.names()
    names["lists"] = lists
    zone = registry.timezone
    if zone is not None and context.now.tzinfo is not zone:
        names["now"] = (
            context.now.astimezone(zone) if context.now.tzinfo else context.now.replace(tzinfo=zone)
        )
    return names


async def _run_rule(
    rule: Rule,
    evaluator: Evaluator,
    names: dict[str, object],
    registry: Registry,
    lookups: Mapping[str, LookupFn] | None,
    deadline: float | None,
    memo: _Memo,
    trace: Trace,
    asked: _Asked,
    listing: Mapping[str, KnownContext],
    clock: Callable[[], float],
) -> RuleTrace:
    """Everything after a true ``if``: lookups, ``when``, rendering."""
    entry = RuleTrace(rule.name, rule.location, "false")
    stage = "lookup"
    try:
        failed = False
        if rule.lookups:
            evaluator.names = dict(names)
            failed = await _resolve(
                rule, evaluator, registry, lookups, deadline, memo, entry, trace, asked, clock
            )
        stage = "when"
        if rule.when is not None and not evaluator.evaluate(rule.when):
            entry.status = "lookup_failed" if failed else "false"
            entry.stage = stage
            return entry
        stage = "do"
        entry.actions = tuple(
            _render(action, evaluator, rule.name, listing) for action in rule.actions
        )
        entry.status = "matched"
    except _Rejected as exc:
        entry.status = "rejected"
        entry.stage = stage
        entry.detail = str(exc)
    except Exception as exc:  # fail open: a broken rule is skipped, never fatal
        entry.status = "error"
        entry.stage = stage
        if isinstance(exc, Unreadable) and (answered := _answered(exc.value, entry)):
            entry.detail = _unreadable_answer(exc, answered, rule.name, registry, asked)
        else:
            entry.detail = _failure(exc, registry, asked)
    finally:
        evaluator.names = names
    return entry


async def _resolve(
    rule: Rule,
    evaluator: Evaluator,
    registry: Registry,
    lookups: Mapping[str, LookupFn] | None,
    deadline: float | None,
    memo: _Memo,
    entry: RuleTrace,
    trace: Trace,
    asked: _Asked,
    clock: Callable[[], float],
) -> bool:
    """Resolves the rule's lookups in order; returns True if any failed."""
    failed = False
    scope = evaluator.names
    evaluate = evaluator.evaluate
    for lookup in rule.lookups:
        args = tuple([evaluate(a) for a in lookup.args])
        kwargs = tuple([(k, evaluate(v)) for k, v in lookup.kwargs]) if lookup.kwargs else ()
        record = LookupTrace(
            lookup.name, _describe(lookup.lookup, args, kwargs), lookup=lookup.lookup
        )
        key: tuple[Any, ...] = (lookup.lookup, args, kwargs)
        try:
            hit = memo.get(key)
        except TypeError:  # an unhashable argument: do not share the answer
            key, hit = (), None
        if hit is not None:
            record.value, record.error = hit
            record.reused = True
        else:
            record.value, record.error, hit_deadline = await _call_lookup(
                lookup.lookup, args, dict(kwargs), registry, lookups, deadline, record, asked, clock
            )
            trace.deadline_hit = trace.deadline_hit or hit_deadline
            if key:
                memo[key] = (record.value, record.error)
        failed = failed or record.error is not None
        scope[lookup.name] = record.value
        entry.lookups.append(record)
    return failed


async def _call_lookup(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    registry: Registry,
    lookups: Mapping[str, LookupFn] | None,
    deadline: float | None,
    record: LookupTrace,
    asked: _Asked,
    clock: Callable[[], float],
) -> tuple[Any, str | None, bool]:
    """(value, error, deadline passed); the value is None whenever there is an error."""
    func = lookups.get(name) if lookups is not None and name in lookups else None
    if func is not None:
        takes_request = wants_request(func)
    else:
        spec = registry.lookups.get(name)
        func = spec.func if spec is not None else None
        takes_request = spec is not None and spec.wants_request
    if func is None:
        return None, NOT_PROVIDED, False
    if takes_request:
        kwargs[REQUEST_PARAM] = asked.get()
    remaining = None if deadline is None else deadline - clock()
    if remaining is not None and remaining <= 0:
        return None, "deadline passed before the lookup", True
    started = time.perf_counter()
    timer: asyncio.Timeout | None = None
    try:
        try:
            result = func(*args, **kwargs)
        finally:
            if time.perf_counter() - started >= BLOCKING_WARN:
                _lookup_held(name, registry, time.perf_counter() - started, func, asked.said)
        # Most answers are plain values: no awaitable check (an ABC test) for them.
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            if remaining is None:
                result = await result
            else:
                async with eager.timeout(remaining) as timer:
                    result = await result
        return result, None, False
    except TimeoutError as exc:
        if timer is None or not timer.expired():
            # The lookup's own TimeoutError (its client's wait_for): its
            # failure, not the call's deadline, which has time left for the
            # next rules; said as any other exception of a lookup.
            record.ms = (time.perf_counter() - started) * 1000
            _lookup_failed(name, registry, asked, exc)
            return None, f"TimeoutError: {exc}" if str(exc) else "TimeoutError", False
        record.ms = (time.perf_counter() - started) * 1000
        _lookup_cut_off(name, registry, asked, record.ms, func)
        return None, f"timed out after {record.ms:.0f} ms", True
    except LookupUnavailable as exc:  # the expected way to say "no answer"
        # LookupCutOff: the lookup itself gave up at the call's deadline.
        return None, str(exc) or "unavailable", isinstance(exc, LookupCutOff)
    except Exception as exc:
        record.ms = (time.perf_counter() - started) * 1000  # the lookup's time, not the log's
        _lookup_failed(name, registry, asked, exc)
        return None, f"{type(exc).__name__}: {exc}", False
    finally:
        if not record.ms:
            record.ms = (time.perf_counter() - started) * 1000


def _lookup_failed(name: str, registry: Registry, asked: _Asked, exc: Exception) -> None:
    """A lookup raised something else than ``LookupUnavailable`` (its way to say
    "no answer"): a bug of its plugin. The trace keeps the error as for any failed
    lookup, and the log says it as a hook's failure is said, naming the plugin and
    the lookup, with the traceback: the decision line named only the rule's name
    for the answer (``lookups owner failed: KeyError: 'x'``), and nothing showed
    where in the plugin it raised."""
    owner = registry.owners.get(name)
    who = f"plugin {owner!r}" if owner is not None else "a plugin"
    try:
        call = asked.get().linkedid
    except Exception:  # the request is only for the message: never fail on it
        call = ""
    where = f" (call {call})" if call else ""
    _plugin_log.error("%s failed in its lookup %s%s: %r", who, name, where, exc, exc_info=exc)


#: Keys a :class:`FailuresSaid` remembers before it forgets the oldest.
FUNCTION_FAILURE_MEMORY = 10_000


class FailuresSaid:
    """The (plugin, function, call) whose failure was logged: once per call,
    bounded at ``limit`` keys (the oldest forgotten first).

    Owned by whoever evaluates (the engine's :class:`~router.rules.ruleset.RuleBook`,
    carried over a reload; one per evaluation without one): a module-level
    memory was shared by every engine of a process, so a second engine (a
    test's, a restart in the same interpreter) kept quiet about a failure in a
    call of its own with the same id, and one engine's calls filled the other's
    bound.
    """

    __slots__ = ("_keys", "cut_off", "held", "limit")

    def __init__(self, limit: int = FUNCTION_FAILURE_MEMORY) -> None:
        self.limit = limit
        self._keys: dict[tuple[str, str, str], None] = {}
        #: (plugin, lookup) said to have held the event loop (once each, bounded).
        self.held: set[tuple[str | None, str]] = set()
        #: (plugin, lookup) -> when its cut-off was last said (once a minute, bounded).
        self.cut_off: dict[tuple[str | None, str], float] = {}

    def first(self, key: tuple[str, str, str]) -> bool:
        """True the first time ``key`` is seen (it is then remembered)."""
        keys = self._keys
        if key in keys:
            return False
        if len(keys) >= self.limit:
            keys.pop(next(iter(keys)))
        keys[key] = None
        return True

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


def _function_failed(
    exc: FunctionFailed, registry: Registry, asked: _Asked, said: FailuresSaid
) -> None:
    """A plugin's rule function raised: a bug of its plugin, said as a failed
    lookup is, naming the plugin and the function, with the traceback. The
    trace alone kept ``is_vip() raised KeyError: 'x'``, in the decision line of
    each call: no ERROR, nothing naming the plugin, nothing showing where in it
    it raised. Once per function and call (a function in several rules, or in a
    rule of every event of a call, is one line; without a call, each time); the
    core's own functions, owned by no plugin, are the rules' business and stay in
    the trace."""
    owner = registry.owners.get(exc.function)
    if owner is None:
        return
    try:
        call = asked.get().linkedid
    except Exception:  # the request is only for the message: never fail on it
        call = ""
    # A schedule rule, explain: no call to say it once for.
    if call and not said.first((owner, exc.function, call)):
        return
    where = f" (call {call})" if call else ""
    _plugin_log.error(
        "plugin %r failed in its rule function %s%s: %r",
        owner,
        exc.function,
        where,
        exc.error,
        exc_info=exc.error,
    )


#: (plugin, lookup) keys a :class:`FailuresSaid` keeps of held or cut-off lookups.
_LOOKUPS_SAID = 1000


def _lookup_held(
    name: str, registry: Registry, held: float, func: object, memory: FailuresSaid
) -> None:
    """A plain lookup that held the event loop (``time.sleep``, ``requests``):
    said once per lookup at WARNING, naming the plugin. Nothing else ran
    meanwhile, and the call's deadline could not cut it off. ``memory``: the
    engine's (its rule book's), not the process's."""
    owner = registry.owners.get(name)
    key = (owner, name)
    if key in memory.held or len(memory.held) >= _LOOKUPS_SAID:
        return
    memory.held.add(key)
    who = f"plugin {owner!r}" if owner is not None else "a plugin"
    _plugin_log.warning(
        "%s: its lookup %s held the event loop for %.1f s, and no call was routed and no "
        "event read meanwhile; a plain function that waits (time.sleep, requests, a "
        "blocking driver) must await instead or hand the wait to asyncio.to_thread "
        "(docs/plugins.md, Async hooks; said once per lookup)%s",
        who,
        name,
        held,
        defined_at(func),
    )


#: A CRM that is down cuts off every call's lookup, and the log must not say
#: it for every call: once in this many seconds per (plugin, lookup).
_CUT_OFF_EVERY = 60.0


def _lookup_cut_off(name: str, registry: Registry, asked: _Asked, ms: float, func: object) -> None:
    """The call's deadline cut off a lookup that had not answered: said at
    WARNING with the plugin's name and the lookup's, at most once a minute per
    lookup. The decision line named only the rule's name for the answer
    (``lookups owner ... failed: timed out``), not whose lookup hung."""
    owner = registry.owners.get(name)
    now = time.monotonic()
    key = (owner, name)
    memory = asked.said.cut_off  # the engine's, not the process's
    said = memory.get(key)
    if said is not None and now - said < _CUT_OFF_EVERY:
        return
    if len(memory) >= _LOOKUPS_SAID:
        memory.pop(next(iter(memory)))
    memory[key] = now
    who = f"plugin {owner!r}" if owner is not None else "a plugin"
    try:
        call = asked.get().linkedid
    except Exception:  # the request is only for the message: never fail on it
        call = ""
    where = f" (call {call})" if call else ""
    _plugin_log.warning(
        "%s: its lookup %s gave no answer within the call's deadline, cut off after "
        "%.0f ms%s; the rules went on without it (docs/plugins.md, Async hooks; said at "
        "most once a minute per lookup)%s",
        who,
        name,
        ms,
        where,
        defined_at(func),
    )


def _describe(name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> str:
    if not kwargs:
        return f"{name}({', '.join(map(repr, args))})"
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs]
    return f"{name}({', '.join(shown)})"


def _render(
    action: CompiledAction, evaluator: Evaluator, rule: str, listing: Mapping[str, KnownContext]
) -> Action:
    params: dict[str, str] = {}
    #: Parameters a lone ``{expr}`` gave nothing for (None: a field the
    #: answer lacks): left out, and said so (a required one rejects the rule).
    left_out: dict[str, str] = {}
    check_filled = action.spec.filled
    parts: list[str] | None = None if check_filled is None else []
    for key, value in action.params:
        if isinstance(value, str):
            params[key] = value
            continue
        text = evaluator.render(value, parts)
        if parts:
            assert check_filled is not None
            written = {k: v if isinstance(v, str) else v.source for k, v in action.params}
            try:
                for part in parts:
                    check_filled(written, key, part)
            except ValueError as exc:  # a 1C answer's ',' in an application's data
                raise _Rejected(f"action {action.kind!r}: {exc}") from None
            except Exception as exc:
                raise _ActionFailed(action.kind, "filled", exc) from exc
            parts.clear()
        if text is None:
            left_out[key] = f"template {value.source!r} gave nothing"
            continue
        spec = action.spec.param(key)
        if spec is not None and spec.type == "int" and not text.strip().lstrip("-").isdigit():
            raise _Rejected(
                f"action {action.kind!r}: parameter {key!r} is {text!r}, not an integer"
            )
        params[key] = text
    for spec in action.spec.params:
        if spec.required and not params.get(spec.name):
            source = dict(action.params).get(spec.name)
            shown = (
                f" ({source.source!r} gave nothing)"
                if source is not None and not isinstance(source, str)
                else ""
            )
            raise _Rejected(f"action {action.kind!r}: parameter {spec.name!r} is empty{shown}")
    if action.spec.rendered is not None:
        # Only what a template filled in: values written in the file were checked at
        # load. A value with no expression ("[0-9a-f]{{8}}": literal braces) is
        # written in the file as much as one without braces (a Hangup's written
        # /regex/ channel with '|' was refused as a channel 1C named).
        filled = {
            key: params[key]
            for key, value in action.params
            if not isinstance(value, str) and value.expressions and key in params
        }
        try:
            action.spec.rendered(filled)
        except ValueError as exc:  # e.g. a lookup's extension that is not a safe location
            raise _Rejected(f"action {action.kind!r}: {exc}") from None
        except Exception as exc:
            raise _ActionFailed(action.kind, "rendered", exc) from exc
    if listing and action.kind == "redirect":
        # Written in the file or filled in: the listing judges both (a dict
        # lookup, then a set lookup). It may be older than a `dialplan reload`,
        # which Asterisk reports to nobody: then the next rule routes the call
        # until the audit reads the dialplan again (docs/rules.md).
        problem = missing_target(params, listing)
        if problem is not None:
            raise _Rejected(f"action 'redirect': {problem} (as the dialplan audit last read it)")
    return Action.make(action.kind, params, rule, left_out)
