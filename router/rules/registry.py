"""What plugins contribute to the rule language: functions, lookups, actions.

Rules are checked against this registry when they are loaded, so it is the
single place that says which names exist. Every plugin fills it from its
``callrouter_register`` hook, the built-ins (``router.builtin``) through the
same calls as any other, so the rules package never knows about pluggy.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import tzinfo
from typing import Any, Literal

from router.callerid import cut

__all__ = [
    "REQUEST_PARAM",
    "UNKNOWN",
    "AMIValidator",
    "ActionCheck",
    "ActionSpec",
    "ArgCheck",
    "FilledCheck",
    "FunctionSpec",
    "LookupFn",
    "LookupSpec",
    "NotifyTarget",
    "ParamSpec",
    "Registry",
    "RenderedCheck",
    "wants_request",
]

#: Raises ``router.errors.AMIValidationError`` for an action the catalog refuses.
AMIValidator = Callable[[str, Mapping[str, object]], None]
#: A fact source; arguments come from the rule's expression. An async
#: function, or a plain one returning the answer or an awaitable: an answer
#: from memory then costs no coroutine and no timer (docs/plugins.md).
LookupFn = Callable[..., Awaitable[Any] | Any]
#: Load-time check of a call's arguments; ``UNKNOWN`` stands for non-constants.
ArgCheck = Callable[..., None]
#: Load-time check of an action's parameters: constants as written, templates as their text.
ActionCheck = Callable[[Mapping[str, object]], None]
#: Evaluation-time check of the parameters templates filled in; raises ValueError.
RenderedCheck = Callable[[Mapping[str, str]], None]
#: Evaluation-time check of one value a template's ``{...}`` put into the
#: parameter (second argument), the action's parameters as written in the
#: file first (templates as their text); raises ValueError.
FilledCheck = Callable[[Mapping[str, object], str, str], None]

_DOTTED = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _Unknown:
    """Placeholder for a value only known at call time (a check must accept it)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A synchronous function rules may call in ``if``, ``when`` and templates.

    ``pass_context`` functions get the trigger's :class:`~router.rules.context.Context`
    as first argument (``workhours`` needs the call's time); ``signature``
    excludes it and is what arity is checked against at load time.
    """

    name: str
    func: Callable[..., Any]
    signature: inspect.Signature
    doc: str
    pass_context: bool = False
    check: ArgCheck | None = None
    #: The plugin that registered it (None: the core's own), for the log.
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class LookupSpec:
    """An async fact source, used only under ``lookup:``.

    ``func`` may be None for a declared-only lookup (its plugin is not
    loaded): rules using it still validate, and evaluation yields None with
    "no implementation" in the trace unless the caller supplies one.
    """

    name: str
    signature: inspect.Signature
    doc: str
    func: LookupFn | None = None
    #: ``func`` declares a ``request`` parameter: evaluation passes the request
    #: facts (:class:`router.request.RequestInfo`) by that name; rules cannot.
    wants_request: bool = False


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of an action; values always reach the engine as strings."""

    name: str
    type: Literal["str", "int", "bool"] = "str"
    required: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action kind: the discriminator key under ``do:`` and its parameters.

    ``extra`` allows parameters beyond ``params`` (``setvar`` takes any
    variable name, ``ami`` any header). ``check`` catches combinations a
    per-parameter schema cannot express.
    """

    name: str
    params: tuple[ParamSpec, ...] = ()
    doc: str = ""
    extra: bool = False
    extra_name: str = "parameter"
    check: ActionCheck | None = None
    #: Run on every evaluation with the parameters a template filled in: those
    #: values are untrusted (lookups, caller data). A ValueError rejects the
    #: rule, so the next rule gets its turn, before any action is sent.
    rendered: RenderedCheck | None = None
    #: Run on every evaluation with each value a ``{...}`` filled into a
    #: parameter, apart from the text the file wrote around it: ``data:
    #: "PJSIP/{owner.manager.extension},20"`` may hold a ``,`` the
    #: administrator wrote, never one 1C wrote. A ValueError rejects the rule.
    filled: FilledCheck | None = None
    #: The action moves or ends the routed call itself (``redirect``,
    #: ``hangup``). A rule with ``continue: true`` may not carry one, nor may
    #: one rule's ``do:`` carry two: either way a decision would move or end
    #: the call twice. A function of the parameters as written (constants,
    #: templates as their text) for a kind that routes only with some of them
    #: (``ami`` with ``action: Redirect``); the engine asks it again with the
    #: rendered parameters of a decision it carried out: a decision without
    #: such an action left the call in its wait (``CALLROUTER_DECIDED``).
    routes: bool | Callable[[Mapping[str, object]], bool] = False

    def param(self, name: str) -> ParamSpec | None:
        for spec in self.params:
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """A plugin that accepts ``notify:`` messages."""

    name: str
    doc: str = ""


#: The lookup parameter the rule engine fills with the request being decided.
REQUEST_PARAM = "request"


def wants_request(func: Callable[..., Any]) -> bool:
    """Does ``func`` take the request facts (a parameter named ``request``)?

    By name, as pluggy passes hook arguments: a lookup that needs the DID or
    the call id declares ``request`` and gets them, for call rules, event
    rules and ``explain`` alike.
    """
    try:
        param = inspect.signature(func).parameters.get(REQUEST_PARAM)
    except (TypeError, ValueError):  # a builtin without a signature takes no request
        return False
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _signature(func: Callable[..., Any], skip_first: bool) -> inspect.Signature:
    sig = inspect.signature(func)
    if skip_first:
        params = list(sig.parameters.values())[1:]
        sig = sig.replace(parameters=params)
    return sig


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ").strip()


@dataclass
class Registry:
    """Names the rule language knows; filled by built-ins and plugins.

    Registering a name twice is an error: two plugins silently fighting over
    ``directory`` would route calls by import order.
    """

    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    lookups: dict[str, LookupSpec] = field(default_factory=dict)
    actions: dict[str, ActionSpec] = field(default_factory=dict)
    notify_targets: dict[str, NotifyTarget] = field(default_factory=dict)
    ami_validator: AMIValidator | None = None
    event_names: frozenset[str] | None = None
    normalize_number: Callable[[str], str] = str.strip
    is_internal_number: Callable[[str], bool] = lambda _number: False
    timezone: tzinfo | None = None
    #: Why a name rules use is not registered, for the "unknown ..." errors:
    #: `` (plugin 'crm' is installed but not enabled in router.toml:6 [plugins]
    #: enabled)``, or "" when no plugin left out would have registered it
    #: (:meth:`router.plugins.Plugins.why_missing`).
    why_missing: Callable[[str], str] = lambda _name: ""
    #: The plugin registering now (set by ``Plugins.register_into``), and the
    #: plugin that registered each name: "'workhours' is already registered"
    #: did not say by whom, and a plugin author could not tell a built-in from
    #: another installed plugin.
    registering: str | None = None
    owners: dict[str, str] = field(default_factory=dict)

    def action_failed(self, action: str, what: str, exc: Exception) -> str:
        """A plugin action's ``check``, ``routes``, ``filled`` or ``rendered``
        raised something else than the ValueError that refuses a rule: a bug
        of that plugin, said against the rule and naming it, never as
        callrouter's."""
        owner = self.owners.get(f"action:{action}")
        who = f"plugin {owner!r}" if owner is not None else "its plugin"
        return f"action {action!r}: {who} failed in its {what}: {exc!r}"

    def checkpoint(self) -> Registry:
        """A copy to go back to with :meth:`roll_back`.

        A plugin whose ``callrouter_register`` raises half-way must leave
        nothing behind: the names it did register would be usable by rules
        while its own setup (the file or connection it failed on) is missing.
        """
        saved = copy.copy(self)
        saved.functions = dict(self.functions)
        saved.lookups = dict(self.lookups)
        saved.actions = dict(self.actions)
        saved.notify_targets = dict(self.notify_targets)
        saved.owners = dict(self.owners)
        return saved

    def added_since(self, saved: Registry) -> list[str]:
        """The functions, lookups, actions and notify targets registered since
        :meth:`checkpoint` (as rules name them)."""
        added: list[str] = []
        for mine, theirs in (
            (self.functions, saved.functions),
            (self.lookups, saved.lookups),
            (self.actions, saved.actions),
            (self.notify_targets, saved.notify_targets),
        ):
            added.extend(name for name in mine if name not in theirs)
        return added

    def roll_back(self, saved: Registry) -> None:
        """Undo everything registered or set since :meth:`checkpoint`."""
        for item in fields(self):
            setattr(self, item.name, getattr(saved, item.name))

    def add_function(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        doc: str | None = None,
        pass_context: bool = False,
        check: ArgCheck | None = None,
    ) -> None:
        if not _PLAIN.match(name):
            raise ValueError(f"function name {name!r} must be a plain identifier")
        _callable("function", name, func)
        self._unique(name)
        self.functions[name] = FunctionSpec(
            name,
            func,
            _signature(func, pass_context),
            _first_line(doc or func.__doc__),
            pass_context,
            check,
            self.registering,
        )

    def add_lookup(
        self,
        name: str,
        func: LookupFn | None = None,
        *,
        signature: Callable[..., Any] | inspect.Signature | None = None,
        doc: str | None = None,
    ) -> None:
        """Registers a lookup (async, or returning an answer or an awaitable);
        ``signature`` may be a stub function.

        A ``request`` parameter is not the rule's to give: the rule engine
        fills it with the request being decided (see :func:`wants_request`).
        """
        if not _DOTTED.match(name):
            raise ValueError(f"lookup name {name!r} must be dotted identifiers")
        if func is not None:
            _callable("lookup", name, func)
        self._unique(name)
        shape = signature if signature is not None else func
        if shape is None:
            raise ValueError(f"lookup {name!r} needs a function or a signature")
        sig = shape if isinstance(shape, inspect.Signature) else inspect.signature(shape)
        sig = sig.replace(
            parameters=[p for p in sig.parameters.values() if p.name != REQUEST_PARAM]
        )
        text = doc or (None if isinstance(shape, inspect.Signature) else shape.__doc__)
        self.lookups[name] = LookupSpec(
            name, sig, _first_line(text), func, func is not None and wants_request(func)
        )

    def add_action(self, spec: ActionSpec) -> None:
        if spec.name in self.actions:
            raise ValueError(
                f"action {spec.name!r} is already registered{self._by(f'action:{spec.name}')}"
            )
        self.actions[spec.name] = spec
        self._own(f"action:{spec.name}")

    def add_notify_target(self, name: str, doc: str = "") -> None:
        # Every plugin is told every notify: two owning one target would both act.
        if name in self.notify_targets:
            raise ValueError(
                f"notify target {name!r} is already registered{self._by(f'notify:{name}')}"
            )
        self.notify_targets[name] = NotifyTarget(name, doc)
        self._own(f"notify:{name}")

    def set_ami_validator(self, validator: AMIValidator | None) -> None:
        """Plugs in the AMI catalog; without one ``ami:`` actions are checked for shape only."""
        self.ami_validator = validator

    def set_event_names(self, names: Collection[str] | None) -> None:
        """Known AMI event names, so ``on: event Hangupp`` gets a did-you-mean."""
        self.event_names = None if names is None else frozenset(names)

    def set_numbers(
        self, normalize: Callable[[str], str], is_internal: Callable[[str], bool]
    ) -> None:
        """The number plan used for lists, ``caller.number`` and ``caller.internal``."""
        self.normalize_number = normalize
        self.is_internal_number = is_internal

    def set_timezone(self, zone: tzinfo) -> None:
        """The zone ``now`` is shown in and working hours default to."""
        self.timezone = zone

    def _unique(self, name: str) -> None:
        if name in self.functions or name in self.lookups:
            raise ValueError(f"{name!r} is already registered{self._by(name)}")
        self._own(name)

    def _own(self, key: str) -> None:
        if self.registering is not None:
            self.owners[key] = self.registering

    def _by(self, key: str) -> str:
        owner = self.owners.get(key)
        return f" by plugin {owner!r}" if owner is not None else ""


def _callable(what: str, name: str, func: object) -> None:
    """Refuse a registered name whose function is no function, naming it:
    inspect's own words (``'x' is not a callable object``) named neither."""
    if not callable(func):
        shown = cut(repr(func), 60)
        raise TypeError(f"{what} {name!r}: {shown} is not callable")
