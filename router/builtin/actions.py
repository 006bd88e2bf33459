"""The built-in actions: what a rule can ask the engine to do, declared and
executed here, as a plugin's actions would be.

Each kind has its shape (:data:`ACTIONS`, registered by the
:class:`BuiltinActions` plugin, so rules are checked and ``explain`` runs
without any Asterisk) and its executor (:data:`EXECUTE`, which the engine hands
the :class:`~router.executor.Executor`): adding a built-in action means one
spec and one function in this file. Header names come from the AMI catalog.

Every parameter naming a dialplan location (``context``, ``exten`` of
``redirect``, ``originate`` and of an ``ami`` action) is held to the
:class:`~router.dialplan.LocationPolicy`: when the rule loads for a value
written in the file, and on every evaluation for a value a template filled in
(a 1C answer is not the administrator's text). A rendered value that fails
rejects the rule, so the next rule (the administrator's fallback) routes the
call; the executor checks again before it sends anything.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from typing import TYPE_CHECKING, Final

from router import eager
from router.ami.catalog import load_catalog
from router.ami.own_session import session_action_problem
from router.ami.protocol import ActionResult
from router.dialplan import (
    NEXT_VARIABLE,
    LocationPolicy,
    argument_problem,
    location_problem,
    next_location,
    shown,
)
from router.errors import AMIValidationError
from router.executor import ActionOutcome, ActionRun, ExecuteAction, event_timestamp
from router.hookspecs import hookimpl
from router.rules.expr import Template
from router.rules.registry import ActionCheck, ActionSpec, FilledCheck, ParamSpec, Registry

if TYPE_CHECKING:  # pragma: no cover
    from router.config import Config

__all__ = ["ACTIONS", "EXECUTE", "BuiltinActions", "make_plugin", "register"]

_VARIABLE = re.compile(r"^_{0,2}[A-Za-z][A-Za-z0-9_]*(\([A-Za-z0-9_,-]*\))?$")


def _template(value: object) -> bool:
    return isinstance(value, str) and "{" in value


def _location_checks(
    policy: LocationPolicy,
) -> tuple[Callable[[Mapping[str, object]], None], Callable[[Mapping[str, str]], None]]:
    def at_load(params: Mapping[str, object]) -> None:
        problem = location_problem(params, policy, templates=False) or location_problem(
            _written_braces(params), policy
        )
        if problem is not None:
            raise ValueError(problem)

    def rendered(params: Mapping[str, str]) -> None:
        problem = location_problem(params, policy, templates=True)
        if problem is not None:
            raise ValueError(problem)

    return at_load, rendered


def _written_braces(params: Mapping[str, object]) -> dict[str, str]:
    """The values holding ``{`` that no template fills in (``sales{{x}}``: a
    brace written as ``{{``), as the text they stand for. Checked at load as
    any written value: at render only what a template filled in is checked
    (router.rules.evaluate), and a load-time check skips every ``{``, so such
    a location was checked nowhere."""
    written: dict[str, str] = {}
    for key, value in params.items():
        if not _template(value):
            continue
        try:
            template = Template.parse(str(value))
        except ValueError:  # reported where the template is compiled
            continue
        if not template.expressions:
            written[key] = "".join(p for p in template.parts if isinstance(p, str))
    return written


def _check_originate(params: Mapping[str, object]) -> None:
    has_app = "application" in params
    has_exten = "context" in params and "exten" in params
    if has_app == has_exten:
        raise ValueError("give either 'context' and 'exten', or 'application'")
    _written_application(params)


def _written_application(params: Mapping[str, object]) -> None:
    """The application a call runs is the rule's to name, as its location is:
    a 1C card or a caller's name must not choose ``Dial`` or ``ChanSpy``."""
    for key, value in params.items():
        if key.lower() == "application" and _template(value):
            raise ValueError(
                f"{key!r} {shown(str(value))} is filled in by a template: write the "
                "application in the rule file (a template may fill in its 'data')"
            )


def _data_part(params: Mapping[str, object], key: str, text: str) -> None:
    """``originate``'s ``data``: what a template filled in is one argument's text."""
    if key.lower() == "data":
        problem = argument_problem(key, text)
        if problem is not None:
            raise ValueError(problem)


def _ami_data_part(params: Mapping[str, object], key: str, text: str) -> None:
    """An ``ami`` ``Originate``'s ``Data``, as ``originate``'s."""
    if str(params.get("action", "")).lower() == "originate":
        _data_part(params, key, text)


#: A channel wholly filled in from one of these is the channel Asterisk named
#: in the event or the routed call (``ami: {action: Hangup, channel:
#: "{event.channel}"}``), not a value from 1C or the caller.
_OWN_CHANNELS: Final = frozenset({"event.channel", "call.channel"})


def _whole_template(value: object) -> str | None:
    """The expression of a value written as exactly one ``{expr}``, else None."""
    if not isinstance(value, str):
        return None
    if (
        value.startswith("{")
        and not value.startswith("{{")
        and value.endswith("}")
        and value.count("{") == 1
        and value.count("}") == 1
    ):
        return "".join(value[1:-1].split()).lower()
    return None


#: Headers that name a channel without ending in "channel", by action (Asterisk
#: 22's catalog): ``Bridge``'s two channels, the queue caller's channel, a
#: queue member's ``Interface`` (tech/name: ``QueueAdd`` with
#: ``PJSIP/101&Local/666@x`` added a member that rings a second channel) and
#: ``StateInterface``, and ``AOCMessage``'s ``ChannelPrefix`` (a channel's
#: name, or its beginning).
_MEMBER: Final = frozenset({"interface"})
_OTHER_CHANNEL_HEADERS: Final = {
    "bridge": frozenset({"channel1", "channel2"}),
    "queuewithdrawcaller": frozenset({"caller"}),
    "queuechangeprioritycaller": frozenset({"caller"}),
    "queueadd": frozenset({"interface", "stateinterface"}),
    "queueremove": _MEMBER,
    "queuepause": _MEMBER,
    "queuepenalty": _MEMBER,
    "queuememberringinuse": _MEMBER,
    "queuelog": _MEMBER,
    "aocmessage": frozenset({"channelprefix"}),
}


def is_channel_header(action: str, header: str) -> bool:
    """Whether an action's header names a channel: ``Channel``,
    ``ExtraChannel`` and any other ``...Channel``, ``Bridge``'s
    ``Channel1``/``Channel2``, a queue action's ``Caller``, a queue member's
    ``Interface`` and ``StateInterface``, ``AOCMessage``'s ``ChannelPrefix``."""
    name = header.lower()
    return name.endswith("channel") or name in _OTHER_CHANNEL_HEADERS.get(
        action.strip().lower(), ()
    )


def _channel_part(params: Mapping[str, object], key: str, text: str) -> None:
    """What a template puts into a channel (``channel: "PJSIP/{...}"``) is one
    extension's text: a 1C card's ``trunk/sip:+88...@host`` in ``PJSIP/{...}``
    would dial out through a trunk, its ``101&Local/666@x`` ring a second
    channel. A channel that is wholly ``{event.channel}`` or ``{call.channel}``
    comes from Asterisk and passes if it is one channel. Each header naming a
    channel is held so (:func:`is_channel_header`), ``Bridge``'s ``Channel2``
    as ``Redirect``'s ``Channel``."""
    if not is_channel_header(str(params.get("action", "")), key):
        return
    if _whole_template(params.get(key)) in _OWN_CHANNELS:
        problem = _single_channel_problem(key, text)
        if problem is not None:
            raise ValueError(problem)
        return
    if argument_problem(key, text) is not None:
        raise ValueError(
            f"{key} filled in with {shown(text)}, which is not one extension's text "
            "(letters, digits and *#+_.-): a template fills in the extension of a "
            'channel the rule file writes, like "PJSIP/{owner.manager.extension}"; '
            "a whole channel only from {event.channel} or {call.channel}"
        )


#: AMI actions whose ``Variable`` header names one variable (a function is
#: run when it is read or written: ``DB(x/y)``, ``SHELL(...)``).
_VARIABLE_NAME_ACTIONS: Final = frozenset({"setvar", "getvar"})
_PLAIN_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_PART: Final = re.compile(r"[A-Za-z0-9_]*")


def _variable_part(params: Mapping[str, object], key: str, text: str) -> None:
    """What a template puts into an ``ami`` action's ``Variable``.

    ``Setvar``'s (``Getvar``'s) is a variable's name: a 1C card must not name
    ``DB(x/y)`` (an AstDB write) or a function that runs a command, so what
    a template fills in is a plain name, or a part of one; a function the
    rule file writes (``DB(crm/{owner.id})``) stays. ``Originate``'s is
    ``NAME=value,...``, which Asterisk splits on ``,``: the names are the
    file's (:func:`_originate_variable_names`), and a value a template fills
    in may hold no ``,``, which would start another variable.
    """
    if key.lower() != "variable":
        return
    action = str(params.get("action", "")).lower()
    if action in _VARIABLE_NAME_ACTIONS:
        whole = _whole_template(params.get(key)) is not None
        if (_PLAIN_NAME if whole else _NAME_PART).fullmatch(text) is None:
            raise ValueError(
                f"{key} filled in with {shown(text)}, which is not a plain variable name "
                "(letters, digits and _, not starting with a digit): a template never "
                "names a function such as DB() or SHELL()"
            )
    elif action == "originate" and "," in text:
        raise ValueError(f"{key} filled in with {shown(text)}: a ',' would start another variable")


def _originate_variable_names(params: Mapping[str, object]) -> None:
    """The names in an ``ami`` ``Originate``'s ``Variable: NAME={...},...`` are
    written in the rule file: a template fills in values only."""
    if str(params.get("action", "")).lower() != "originate":
        return
    for key, value in params.items():
        if key.lower() != "variable" or not _template(value):
            continue
        try:
            parts = Template.parse(str(value)).parts
        except ValueError:  # reported where the template is compiled
            continue
        in_name = True
        for part in parts:
            if isinstance(part, str):
                for ch in part:
                    if ch == "=" and in_name:
                        in_name = False
                    elif ch == ",":
                        in_name = True
            elif in_name:
                raise ValueError(
                    f"{key!r} {shown(str(value))} has a variable name filled in by a "
                    "template: write each NAME= in the rule file (a template may fill in "
                    "the values: CRM_CLIENT={owner.client.name})"
                )


def _all_of(*checks: FilledCheck) -> FilledCheck:
    def check(params: Mapping[str, object], key: str, text: str) -> None:
        for one in checks:
            one(params, key, text)

    return check


def _check_setvar(params: Mapping[str, object]) -> None:
    for name in params:
        if not _VARIABLE.match(name):
            raise ValueError(f"{name!r} is not a channel variable name")


def _check_hangup(params: Mapping[str, object]) -> None:
    cause = params.get("cause")
    if cause is not None and not _template(cause) and not 0 <= int(str(cause)) <= 127:
        raise ValueError(f"cause {cause} is not a Q.850 cause code (0-127)")


_CAUSE: Final = re.compile(r"[0-9]{1,3}")


def _rendered_hangup(params: Mapping[str, str]) -> None:
    """A cause a template filled in (``cause: "{int(did)}"`` gave
    99999999999) is a Q.850 code as one written in the file is: Asterisk
    takes 0-127 and drops any other cause with a NOTICE."""
    cause = params.get("cause")
    if cause is not None and (_CAUSE.fullmatch(cause.strip()) is None or int(cause) > 127):
        raise ValueError(f"cause {shown(cause)} is not a Q.850 cause code (0-127)")


def _is_ami_hangup(params: Mapping[str, object]) -> bool:
    return str(params.get("action", "")).strip().lower() == "hangup"


def _q850(key: str, value: object) -> None:
    text = str(value).strip()
    if _CAUSE.fullmatch(text) is None or int(text) > 127:
        raise ValueError(f"{key} {shown(str(value))} is not a Q.850 cause code (0-127)")


def _written_hangup_cause(params: Mapping[str, object]) -> None:
    """An ``ami`` ``Hangup``'s ``Cause`` is a Q.850 code, as ``hangup``'s is:
    one written in the file is checked now, and one a template fills in is
    wholly that template's (``cause: "{int(did)}"``), so that
    :func:`_hangup_cause_part` sees the whole cause on every evaluation."""
    if not _is_ami_hangup(params):
        return
    for key, value in params.items():
        if key.lower() != "cause":
            continue
        if not _template(value):
            _q850(key, value)
        elif _whole_template(value) is None:
            raise ValueError(
                f"{key} {shown(str(value))}: a Hangup's cause is written in the file or "
                'filled in whole by one template, like "{owner.cause}"'
            )


def _written_hangup_channel(params: Mapping[str, object]) -> None:
    """An ``ami`` ``Hangup``'s ``Channel`` as a ``/regex/`` (Asterisk hangs up
    every channel it matches) is written whole in the file: a template's
    extension text there is a pattern too (``.*`` matches every channel), and
    a regex's ``{8}`` read as a template silently became ``8``."""
    if not _is_ami_hangup(params):
        return
    for key, value in params.items():
        if key.lower() != "channel" or not _template(value):
            continue
        text = str(value).strip()
        if not (len(text) > 1 and text.startswith("/") and text.endswith("/")):
            continue
        try:
            expressions = Template.parse(text).expressions
        except ValueError:  # reported where the template is compiled
            continue
        if expressions:
            raise ValueError(
                f"{key} {shown(str(value))}: a Hangup's /regex/ channel is written whole in "
                "the rule file, a template fills in no part of it (write a regex's braces "
                "as {{ and }}: [0-9a-f]{{8}})"
            )


def _hangup_cause_part(params: Mapping[str, object], key: str, text: str) -> None:
    """A cause a template filled into an ``ami`` ``Hangup`` (``{int(did)}``
    gave 99999999999, which Asterisk drops with a NOTICE) rejects the rule
    unless it is 0-127."""
    if key.lower() == "cause" and _is_ami_hangup(params):
        _q850(key, text)


REDIRECT = ActionSpec(
    "redirect",
    (
        ParamSpec("context", required=True, doc="dialplan context"),
        ParamSpec("exten", required=True, doc="extension in that context"),
        ParamSpec("priority", "int", doc="priority, default 1"),
    ),
    doc="Send the call to a dialplan location (AMI Redirect of the routed channel).",
    routes=True,
)

ORIGINATE = ActionSpec(
    "originate",
    (
        ParamSpec("channel", required=True, doc="channel to dial, e.g. PJSIP/101"),
        ParamSpec("context"),
        ParamSpec("exten"),
        ParamSpec("priority", "int"),
        ParamSpec("application"),
        ParamSpec("data"),
        ParamSpec("timeout", "int", doc="milliseconds to wait for an answer"),
        ParamSpec("callerid"),
        ParamSpec("account"),
    ),
    doc="Start a new call (AMI Originate), e.g. a callback.",
    check=_check_originate,
)

SETVAR = ActionSpec(
    "setvar",
    doc="Set channel variables on the routed call (AMI Setvar), one per key.",
    extra=True,
    extra_name="variable",
    check=_check_setvar,
)

HANGUP = ActionSpec(
    "hangup",
    (ParamSpec("cause", "int", doc="Q.850 cause, e.g. 21 call rejected"),),
    doc="Hang up the routed call (AMI Hangup).",
    check=_check_hangup,
    rendered=_rendered_hangup,
    routes=True,
)

NOTIFY_PARAMS = (
    ParamSpec("plugin", required=True, doc="plugin to tell"),
    ParamSpec("event", required=True, doc="what happened"),
)

ACTIONS = (REDIRECT, ORIGINATE, SETVAR, HANGUP)


def _channel_problem(params: Mapping[str, object]) -> str | None:
    """A channel a template filled in must be one channel: ``&`` would add a
    second one to ``Originate`` and ``,`` would start its options."""
    value = next((v for k, v in params.items() if k.lower() == "channel"), None)
    if value is None:
        return None
    return _single_channel_problem("channel", str(value))


def _single_channel_problem(key: str, text: str) -> str | None:
    if (
        not text
        or len(text) > 200
        or any(ch in ",&|" or not ch.isprintable() or ch.isspace() for ch in text)
    ):
        return f"{key} {shown(text)} is not a single channel name"
    return None


#: AMI actions that move or end a channel: an ``ami`` action sending one
#: routes the call as ``redirect`` or ``hangup`` do (ActionSpec.routes).
#: Only those that surely do, by Asterisk 22's documentation (the catalog):
#: ``PJSIPHangup`` hangs up as ``Hangup`` does; ``Park`` parks the channel;
#: ``Bridge`` takes both channels out of the dialplan into a new bridge;
#: ``BridgeKick``, ``BridgeDestroy`` and ``ConfbridgeKick`` put a bridge's or
#: conference's channels back to the dialplan or hang them up;
#: ``QueueWithdrawCaller`` takes the caller out of the queue back to the
#: dialplan; ``DAHDIHangup`` hangs a DAHDI channel up. Not here: ``Originate``
#: (a new call), ``AbsoluteTimeout`` (a hangup later, or none with 0),
#: ``AgentLogoff`` (``Soft`` keeps the calls), ``CancelAtxfer``,
#: ``LocalOptimizeAway``, ``DAHDITransfer`` (a flash hook), ``DAHDIRestart``
#: (the driver, not a call), ``AGI`` and ``Command`` (whatever they run).
ROUTING_AMI_ACTIONS: Final = frozenset(
    {
        "redirect",
        "hangup",
        "blindtransfer",
        "atxfer",
        "pjsiphangup",
        "park",
        "bridge",
        "bridgekick",
        "bridgedestroy",
        "confbridgekick",
        "queuewithdrawcaller",
        "dahdihangup",
    }
)


def _ami_routes(params: Mapping[str, object]) -> bool:
    return str(params.get("action", "")).lower() in ROUTING_AMI_ACTIONS


def _both(first: ActionCheck | None, second: ActionCheck) -> ActionCheck:
    if first is None:
        return second

    def check(params: Mapping[str, object]) -> None:
        first(params)
        second(params)

    return check


def register(registry: Registry, policy: LocationPolicy | None = None) -> None:
    """Adds the built-in actions; ``ami`` and ``notify`` consult the registry when checked.

    ``policy`` is ``[router] location_pattern`` (the default pattern without one).
    """
    at_load, locations = _location_checks(policy or LocationPolicy())

    def rendered(params: Mapping[str, str]) -> None:
        locations(params)
        problem = _channel_problem(params)
        if problem is not None:
            raise ValueError(problem)

    for spec in ACTIONS:
        if spec.name in ("redirect", "originate"):
            spec = replace(spec, check=_both(spec.check, at_load), rendered=rendered)
        if spec.name == "originate":
            spec = replace(spec, filled=_all_of(_data_part, _channel_part))
        registry.add_action(spec)

    def check_ami(params: Mapping[str, object]) -> None:
        at_load(params)
        if _template(params["action"]):
            raise ValueError(
                f"action {shown(str(params['action']))} is filled in by a template: "
                "write the AMI action in the rule file"
            )
        _written_application(params)
        _originate_variable_names(params)
        _written_hangup_cause(params)
        _written_hangup_channel(params)
        # Sent on the engine's own session (router/ami/own_session.py).
        problem = session_action_problem(
            str(params["action"]), {k: v for k, v in params.items() if k != "action"}
        )
        if problem is not None:
            raise ValueError(problem)
        # Without a catalog only the shape is known; with one, a typo in the action
        # or a header is caught now (the catalog raises AMIValidationError).
        validator = registry.ami_validator
        if validator is not None:
            fields = {k: v for k, v in params.items() if k != "action"}
            validator(str(params["action"]), fields)

    def check_notify(params: Mapping[str, object]) -> None:
        plugin = str(params["plugin"])
        targets = registry.notify_targets
        if not _template(plugin) and plugin not in targets:
            from router.rules.suggest import did_you_mean

            why = registry.why_missing(plugin) or did_you_mean(plugin, targets)
            raise ValueError(f"no plugin {plugin!r} takes notifications{why}")

    registry.add_action(
        ActionSpec(
            "ami",
            (ParamSpec("action", required=True, doc="AMI action name, e.g. DBPut"),),
            doc="Run any AMI action; other keys are its headers.",
            extra=True,
            extra_name="header",
            check=check_ami,
            rendered=rendered,
            filled=_all_of(_ami_data_part, _channel_part, _variable_part, _hangup_cause_part),
            routes=_ami_routes,
        )
    )
    registry.add_action(
        ActionSpec(
            "notify",
            NOTIFY_PARAMS,
            doc="Tell a plugin something happened (e.g. a missed call).",
            extra=True,
            check=check_notify,
        )
    )


# -- executing them ---------------------------------------------------------------------


async def _redirect(run: ActionRun) -> ActionOutcome:
    params = run.params
    target = params.get("channel") or run.channel
    if not target:
        return ActionOutcome("redirect", "failed", "no channel to redirect")
    context = params["context"]
    exten = params.get("exten", "s")
    priority = params.get("priority", "1")
    headers = {"Channel": target, "Context": context, "Exten": exten, "Priority": priority}
    call = run.call
    via = call.redirect_via if call is not None and target == call.waiting_channel else None
    if via is not None:
        # A step first (``record``: [callrouter-record] starts MixMonitor), then
        # the target, which the step reads from CALLROUTER_NEXT.
        await run.ami.send(
            "Setvar",
            {
                "Channel": target,
                "Variable": NEXT_VARIABLE,
                "Value": next_location(context, exten, priority),
            },
            validate=False,
        )
        headers.update(Context=via, Exten="s", Priority="1")
    confirmations = run.confirmations
    future = confirmations.expect(target, context)
    try:
        # Unvalidated: the headers are fixed here and the locations were
        # checked by the executor; this is the hot path.
        await run.ami.send("Redirect", headers, validate=False)
    except BaseException:
        confirmations.drop(target, future)
        raise
    if call is not None and via is not None:
        call.redirect_via = None
    shown_target = f"{context},{exten}" + (f" (through {via})" if via else "")
    landed = await confirmations.wait(target, future)
    if landed is None:
        return ActionOutcome(
            "redirect",
            "unconfirmed",
            f"{shown_target}: no Newexten within {confirmations.timeout:.0f} s",
        )
    confirmed = ActionOutcome("redirect", "confirmed", shown_target)
    confirmed.event_timestamp = event_timestamp(landed)
    return confirmed


async def _setvar(run: ActionRun) -> ActionOutcome:
    # Every variable's Setvar is written at once, in this step (router.eager),
    # and the answers awaited together: one round trip to Asterisk before the
    # Redirect that follows, not one a variable (the shipped owner rule sets
    # two: CRM_CLIENT and CRM_MANAGER). They set different variables, so
    # their order does not matter, over TCP or AJAM's separate connections.
    async def setvar(name: str, value: str) -> ActionResult:
        # Unvalidated: the catalog calls Value required, and an empty value
        # is how a rule clears a variable.
        try:
            return await run.ami.send(
                "Setvar", {"Channel": run.channel, "Variable": name, "Value": value}, validate=False
            )
        except AMIValidationError as exc:
            # Refused before sending (a line break or NUL in a value a lookup
            # gave, such as a client name from 1C): "Setvar: parameter 'Value'"
            # alone does not say which of the rule's variables it was.
            raise AMIValidationError(f"{name}: {exc}") from exc

    items = list(run.params.items())
    ahead: list[asyncio.Task[ActionResult]] = []
    last: Exception | None = None
    try:
        for name, value in items[:-1]:
            task, _ = eager.start(setvar(name, value), name=f"Setvar {name}")
            if task is not None:
                ahead.append(task)
        if items:
            await setvar(*items[-1])
    except asyncio.CancelledError:
        for task in ahead:
            task.cancel()
        raise
    except Exception as exc:
        last = exc
    # Each answer is read, so no failure goes unretrieved; the first failure
    # in the rule's order is the outcome's.
    answers = await asyncio.gather(*ahead, return_exceptions=True)
    failed = next((a for a in [*answers, last] if isinstance(a, BaseException)), None)
    if failed is not None:
        raise failed
    return ActionOutcome("setvar", "ok", ", ".join(run.params))


async def _hangup(run: ActionRun) -> ActionOutcome:
    target = run.params.get("channel") or run.channel
    if not target:
        return ActionOutcome("hangup", "failed", "no channel to hang up")
    await run.ami.send(
        "Hangup", {"Channel": target, "Cause": run.params.get("cause")}, validate=False
    )
    return ActionOutcome("hangup", "ok", target)


@cache
def _originate_headers() -> dict[str, str]:
    """Rule parameter (the header in any case, or its Python name such as
    ``caller_id``) -> the header, from the catalog."""
    names: dict[str, str] = {}
    for param in load_catalog().action("Originate").params:
        names[param.name.lower()] = param.name
        if param.python_name:
            names[param.python_name] = param.name
    return names


async def _originate(run: ActionRun) -> ActionOutcome:
    names = _originate_headers()
    # A key the catalog does not know goes as written: validation names it.
    headers = {
        names.get(key.lower(), names.get(key, key)): value for key, value in run.params.items()
    }
    headers.setdefault("Async", "true")
    await run.ami.send("Originate", headers)
    return ActionOutcome("originate", "ok", headers.get("Channel", ""))


async def _ami(run: ActionRun) -> ActionOutcome:
    params = run.params
    name = params.pop("action", "")
    if not name:
        raise AMIValidationError("ami action without 'action'")
    problem = session_action_problem(name, params)
    if problem is not None:
        # A name filled in by a template: refused at load when written out.
        raise AMIValidationError(problem)
    result = await run.ami.send(name, params)
    return ActionOutcome("ami", "ok", f"{name}: {result.response.message or 'Success'}")


async def _notify(run: ActionRun) -> ActionOutcome:
    params = run.params
    target = params.pop("plugin", "")
    await run.plugins.notify(target, params, run.call)
    return ActionOutcome("notify", "ok", target)


#: The executor of each built-in kind.
EXECUTE: Mapping[str, ExecuteAction] = {
    "redirect": _redirect,
    "setvar": _setvar,
    "hangup": _hangup,
    "originate": _originate,
    "ami": _ami,
    "notify": _notify,
}


class BuiltinActions:
    """The built-in actions as a plugin: one instance per engine, because the
    location pattern comes from that engine's ``router.toml``."""

    def __init__(self) -> None:
        self.policy = LocationPolicy()

    @hookimpl
    def callrouter_configure(self, config: Config) -> None:
        self.policy = LocationPolicy.from_pattern(config.router.location_pattern)

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        register(registry, self.policy)


def make_plugin() -> BuiltinActions:
    return BuiltinActions()
