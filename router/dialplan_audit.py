"""Asking Asterisk's loaded dialplan whether callrouter can work with it.

Two things there lose calls with nothing in any log: an inbound context that
breaks the contract (router/dialplan_lint.py), and a rule that redirects to
a context or extension the dialplan lacks, which Asterisk accepts and then
hangs the call up ("Redirect successful", both legs gone: measured on Asterisk
22.10). ``ShowDialPlan`` (``write = reporting``, the documented user's) shows
both without touching a call. ``callrouter check --asterisk`` prints the
findings; the engine logs them at start and after each rules reload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from router.ami.numbers import ascii_float
from router.dialplan import DEFAULT_WAIT, DIAL_CONTEXT, INBOUND_CONTEXT, RECORD_CONTEXT, shown
from router.dialplan_lint import (
    Finding,
    Item,
    extension_matches,
    lint_dial,
    lint_inbound,
    lint_record,
    plain_extension,
    understood_pattern,
)
from router.errors import AMIActionError, AMIError, AMIPrivilegeError
from router.rules.ruleset import RedirectTarget
from router.wording import counted

__all__ = [
    "MARKER",
    "NO_SUCH_CONTEXT",
    "STAND_INS",
    "UNREADABLE",
    "DialplanAMI",
    "DialplanAudit",
    "ListedContext",
    "audit_dialplan",
]

#: Contexts listed at most, and extensions asked of Asterisk at most (one
#: ShowDialPlan each), at start and after each reload.
_MAX_CONTEXTS = 100
_MAX_TARGETS = 200
#: The contexts of examples/asterisk/extensions.conf: one Asterisk lacks is to
#: be pasted from there, not written.
_SHIPPED_CONTEXTS = frozenset({INBOUND_CONTEXT, DIAL_CONTEXT, RECORD_CONTEXT, "callrouter-default"})


#: How the audit's advice for a user refused ``ShowDialPlan`` begins
#: (``check --asterisk`` leaves it out when its own FAIL said so already).
UNREADABLE = "the dialplan could not be read (ShowDialPlan needs write = reporting)"


class _Listing(Protocol):
    @property
    def response(self) -> Item: ...

    @property
    def items(self) -> Sequence[Item]: ...

    @property
    def unread_items(self) -> int: ...


class DialplanAMI(Protocol):
    """What the audit needs of a client (either transport's)."""

    async def action(
        self, name: str, params: Mapping[str, str] | None = None, *, check: bool = True
    ) -> _Listing: ...


@dataclass(frozen=True, slots=True)
class DialplanAudit:
    """The verdict, and whether any of it went unread (then the findings are
    what could be read: ``callrouter_dialplan_problems`` says -1 for none)."""

    findings: list[Finding]
    unread: bool
    #: The contexts the rules redirect to, as read (those that could be):
    #: rule evaluation rejects a rule redirecting to an extension one of them
    #: surely lacks, and the executor refuses such a Redirect (confirmed).
    contexts: Mapping[str, ListedContext] = field(default_factory=dict)


async def audit_dialplan(
    client: DialplanAMI,
    targets: Sequence[RedirectTarget] = (),
    built: int = 0,
    *,
    recording: bool = False,
    forwarding: bool = False,
    stand_ins: dict[str, str] | None = None,
) -> DialplanAudit:
    """The inbound context's verdict, then ``[callrouter-record]``'s when
    ``recording`` (router.toml has ``[recordings]``), then ``[callrouter-dial]``'s
    when ``forwarding`` (router.toml has ``[api]``, which sets forwarding),
    then the targets' (``built`` more are made per call and cannot be looked up).

    ``stand_ins`` (``callrouter run``'s, never ``check``'s: a check changes
    nothing): a global of :data:`STAND_INS` the inbound context reads and
    Asterisk has no value for is set to the shipped value with ``Setvar``
    (:func:`_globals`), and recorded there by name."""
    findings, unread = await _dialplan(client, stand_ins)
    contexts: dict[str, ListedContext] = {}
    if recording:
        listing = await _show(client, {"Context": RECORD_CONTEXT})
        if listing is None:
            unread = True
        else:
            findings.extend(lint_record([] if isinstance(listing, bool) else listing.items))
    if forwarding:
        listing = await _show(client, {"Context": DIAL_CONTEXT})
        if listing is None:
            unread = True
        elif not isinstance(listing, bool):
            findings.extend(lint_dial(listing.items))
    if targets or built:
        more, unknown = await _targets(client, targets, built, contexts)
        findings.extend(more)
        unread = unread or unknown
    return DialplanAudit(findings, unread, contexts)


async def _dialplan(
    client: DialplanAMI, stand_ins: dict[str, str] | None = None
) -> tuple[list[Finding], bool]:
    try:
        listing = await client.action("ShowDialPlan", {"Context": INBOUND_CONTEXT})
    except AMIPrivilegeError:
        return [
            Finding(
                "advice",
                f"{UNREADABLE}: add reporting to the user's write line in manager.conf, or compare "
                f"[{INBOUND_CONTEXT}] with examples/asterisk/extensions.conf by hand "
                f"(asterisk -rx 'dialplan show {INBOUND_CONTEXT}')",
            )
        ], True
    except AMIActionError:
        return lint_inbound([]), False  # "Did not find context": none loaded
    except AMIError as exc:
        return [Finding("advice", f"the dialplan could not be read: {exc}")], True
    if listing.unread_items:
        # A step skipped for a line over the parser's bound: the lint would
        # take the short listing for the context and find it lacking (issue 16).
        return [Finding("advice", _short(INBOUND_CONTEXT, listing))], True
    findings = lint_inbound(listing.items)
    read: dict[str, str | None] = {}
    findings.extend(await _globals(client, listing.items, read, stand_ins))
    findings.extend(await _wait_global(client, listing.items, read))
    findings.extend(await _default_global(client, listing.items, read))
    return findings, False


#: The snippet's ``[globals]`` that its inbound context reads, and what a call
#: meets when one is not set (``[callrouter-inbound]`` pasted alone). Measured
#: on Asterisk 22.10: ``Wait()`` of nothing does not wait, and
#: ``Goto(,${CALLROUTER_DID},1)`` with no context stays in the call's own, so
#: every call ran [callrouter-inbound] again and again, a request each time
#: (32 MB of events in 2 s), until a Redirect took it away.
_GLOBALS = {
    "CALLROUTER_WAIT": "Wait(${CALLROUTER_WAIT}) does not wait, so a call does not "
    "wait for callrouter's decision",
    "CALLROUTER_DEFAULT": "Goto(${CALLROUTER_DEFAULT},...) of a call callrouter does "
    f"not route in time goes back to the top of [{INBOUND_CONTEXT}], again and again, "
    "a request each time",
}


async def _getvar(client: DialplanAMI, name: str, read: dict[str, str | None]) -> str | None:
    """The global ``name``'s value in Asterisk (``Getvar`` without a channel:
    ``write = call`` or ``reporting``), asked once an audit (``read``); None
    when it cannot be read."""
    if name not in read:
        try:
            answer = await client.action("Getvar", {"Variable": name})
        except AMIError:
            read[name] = None
        else:
            read[name] = answer.response.get("Value") or ""
    return read[name]


#: What ``callrouter run`` sets a global of :data:`_GLOBALS` to when the
#: inbound context reads it and Asterisk has none: the snippet's [globals].
STAND_INS = {
    "CALLROUTER_WAIT": f"{DEFAULT_WAIT:g}",
    "CALLROUTER_DEFAULT": "callrouter-default",
}

#: The global ``callrouter run`` sets beside the stand-ins, naming them
#: (:func:`_mark`): AMI shows a global's value, not where it came from, so
#: without it neither ``check --asterisk`` nor a restarted ``run`` could tell
#: a stand-in from the same value in [globals]. The snippet's [globals] clears
#: it (``CALLROUTER_GLOBALS_BY=``): pasting them and a ``dialplan reload``
#: make the values the file's; an Asterisk restart drops it with the values.
MARKER = "CALLROUTER_GLOBALS_BY"
#: How the marker's value begins; the names it lists follow.
_MARKED_BY = "callrouter:"


def _mark(names: Sequence[str]) -> str:
    """The marker's value for the stand-ins ``names``."""
    return _MARKED_BY + ",".join(name for name in STAND_INS if name in names)


async def _marked(client: DialplanAMI, read: dict[str, str | None]) -> frozenset[str]:
    """The globals of :data:`STAND_INS` the marker says a callrouter set
    (none when it is unset, empty, unreadable or not callrouter's)."""
    value = (await _getvar(client, MARKER, read) or "").strip()
    if not value.startswith(_MARKED_BY):
        return frozenset()
    return frozenset(value.removeprefix(_MARKED_BY).split(",")) & STAND_INS.keys()


async def _globals(
    client: DialplanAMI,
    items: Sequence[Item],
    read: dict[str, str | None],
    stand_ins: dict[str, str] | None = None,
) -> list[Finding]:
    """A failure for each of :data:`_GLOBALS` that the inbound context reads
    before it sets it itself (the snippet's own default, ``Set(NAME=${IF(...)})``
    at the top) and that Asterisk has no value for either (``Getvar`` without
    a channel: a global; ``write = call`` or ``reporting``).

    With ``stand_ins`` (``callrouter run``) such a global is set instead, to
    its :data:`STAND_INS` value (``Setvar`` without a channel: a global;
    ``write = call``, which Redirect needs too), with :data:`MARKER` naming
    it, and one failure says so: an older context pasted without its
    [globals] then waits and falls back once, instead of running again and
    again until a Redirect lands (22 to 46 times a call on Asterisk 22.10). A
    value the administrator set is never replaced; ``CALLROUTER_DEFAULT`` is
    set only when Asterisk has the context it names. Set again whenever an
    audit finds it gone (Asterisk restarted, a ``dialplan reload`` with
    ``clearglobalvars = yes``).

    A value :data:`MARKER` names and still the stand-in's is a callrouter's,
    whoever asks (``check``, a ``run`` started since): the same failure, for
    Asterisk forgets it at its next restart, when callrouter may be down."""
    own = [item for item in items if item.get("Context") == INBOUND_CONTEXT]
    findings: list[Finding] = []
    standing: list[str] = []
    for name, why in _GLOBALS.items():
        if not _read_unset(own, name):
            continue
        if stand_ins is not None:
            # An older context: from now on each reconnection audits again
            # (router/engine.py), so that globals an Asterisk restart lost are
            # set again at once, also by a standby whose peer set them first.
            stand_ins[_SEEN] = ""
        value = await _getvar(client, name, read)
        if value is None:
            continue  # not readable: the inbound verdict stands as it is
        if value.strip():
            if value == STAND_INS[name] and name in await _marked(client, read):
                standing.append(name)  # a callrouter's, not extensions.conf's
            continue
        problem = await _stand_in(client, name, stand_ins, read)
        if problem is None:
            standing.append(name)
            continue
        findings.append(
            Finding(
                "fail",
                f"[{INBOUND_CONTEXT}] reads ${{{name}}}, which Asterisk has no value for: "
                f"{why}; paste the [globals] of examples/asterisk/extensions.conf into "
                f'extensions.conf too, then `asterisk -rx "dialplan reload"`{problem}',
            )
        )
    if standing:
        findings.insert(0, Finding("fail", _standing(standing, running=stand_ins is not None)))
    return findings


def _standing(names: Sequence[str], *, running: bool) -> str:
    """The failure for the globals ``names`` a callrouter set (``running``:
    this one, ``callrouter run``'s WARNING; else ``check``'s)."""
    read = " and ".join(f"${{{name}}}" for name in names)
    values = ", ".join(f"{name}={STAND_INS[name]}" for name in names)
    plural = "s" if len(names) > 1 else ""
    if running:
        why = (
            "so that calls wait for its decision and fall back once, and sets them again "
            "whenever Asterisk loses them"
        )
    else:
        why = (
            "not the dialplan: Asterisk forgets them when it restarts, and with callrouter "
            "down then, a call runs the context again and again"
        )
    return (
        f"[{INBOUND_CONTEXT}] reads {read}, which extensions.conf does not set "
        f"(a copy of [{INBOUND_CONTEXT}] pasted without the snippet's [globals]): "
        f"callrouter set the global{plural} {values} in Asterisk (AMI Setvar; the global "
        f"{MARKER} says so), {why}; paste the [globals] of "
        "examples/asterisk/extensions.conf into extensions.conf, then "
        '`asterisk -rx "dialplan reload"` (if you have pasted [globals] since, paste '
        f"the snippet's current [globals], whose {MARKER}= line clears the mark, and "
        "reload again: an older copy leaves the mark until Asterisk restarts)"
    )


#: The key of ``stand_ins`` that says an audit found an older inbound
#: context (the engine audits again at each reconnection), not a global.
_SEEN = "(an older inbound context)"


async def _stand_in(
    client: DialplanAMI,
    name: str,
    stand_ins: dict[str, str] | None,
    read: dict[str, str | None],
) -> str | None:
    """Set the global ``name`` to its :data:`STAND_INS` value and record it in
    ``stand_ins``, :data:`MARKER` first (a stand-in never stands unmarked):
    None when done, else what to add to the failure (empty when nothing was
    to be tried: ``check``)."""
    if stand_ins is None:
        return ""
    if name == "CALLROUTER_DEFAULT":
        context = STAND_INS[name]
        listing = await _show(client, {"Context": context})
        if listing is None or isinstance(listing, bool):
            return (
                f" (callrouter did not set it: Asterisk's dialplan has no [{context}] "
                "to fall back to; paste it too)"
            )
    # Read again, not this audit's earlier answer: another callrouter (a
    # standby's audit) may have marked a stand-in since.
    read.pop(MARKER, None)
    mark = _mark([*await _marked(client, read), name])
    try:
        await client.action("Setvar", {"Variable": MARKER, "Value": mark})
        read[MARKER] = mark
        await client.action("Setvar", {"Variable": name, "Value": STAND_INS[name]})
    except AMIError as exc:
        return f" (callrouter could not set it: {exc})"
    read[name] = stand_ins[name] = STAND_INS[name]
    return None


#: The global whose value is seconds: ``Wait()`` and the deadline read it.
_WAIT = "CALLROUTER_WAIT"


async def _wait_global(
    client: DialplanAMI, items: Sequence[Item], read: dict[str, str | None]
) -> list[Finding]:
    """A finding when Asterisk's global ``CALLROUTER_WAIT`` is set but is no
    positive number of seconds (``four``, ``4s``, ``0``, ``-1``: a typo, a
    unit). Measured on Asterisk 22.10: ``Wait(four)`` does not wait, ``Wait(4s)``
    waits but ``$[${EPOCH} + 4s]`` is no deadline, and the request says
    ``Wait: four``. The context as shipped now counts such a value as none
    and waits its own 4 s (advice: the value set is not the one used); an
    older copy uses it as it is (a failure)."""
    own = [item for item in items if item.get("Context") == INBOUND_CONTEXT]
    if not any(f"${{{_WAIT}}}" in (item.get("AppData") or "") for item in own):
        return []  # the context does not read it: nothing to say
    value = await _getvar(client, _WAIT, read)
    if value is None:
        return []  # not readable: the inbound verdict stands as it is
    seconds = ascii_float(value.strip())
    if not value.strip() or (seconds is not None and seconds > 0):
        return []  # unset (_globals says whether that matters), or a number
    shown_value = shown(value)
    if _guards_wait(own):
        return [
            Finding(
                "advice",
                f"the global {_WAIT} is {shown_value}, not a positive number of seconds: "
                f"[{INBOUND_CONTEXT}] waits its default 4 s instead; set {_WAIT} in "
                "[globals] to the seconds you meant (digits, a dot for a fraction: 4, "
                '2.5; no unit), then `asterisk -rx "dialplan reload"`',
            )
        ]
    return [
        Finding(
            "fail",
            f"the global {_WAIT} is {shown_value}, not a positive number of seconds: "
            f"[{INBOUND_CONTEXT}] (a copy older than the snippet's check of it) uses it "
            "as it is: its Wait() may not wait at all and the call's deadline is wrong; "
            f"set {_WAIT} in [globals] to the seconds you meant (digits, a dot for a "
            "fraction: 4, 2.5; no unit) and paste the callrouter-* contexts of "
            "examples/asterisk/extensions.conf again, then "
            '`asterisk -rx "dialplan reload"`',
        )
    ]


#: The global naming the default route's context, and the snippet's own
#: fallback when it is empty.
_DEFAULT = "CALLROUTER_DEFAULT"
_SHIPPED_DEFAULT = "callrouter-default"
#: The characters of a dialled number the snippet keeps (``CALLROUTER_DID``).
_DID_CHARACTERS = frozenset("0123456789*#+")


async def _default_global(
    client: DialplanAMI, items: Sequence[Item], read: dict[str, str | None]
) -> list[Finding]:
    """A failure when the context the inbound context falls back to (the
    global ``CALLROUTER_DEFAULT``; ``callrouter-default`` when it is empty and
    the context defaults it itself, as the snippet does) is not in Asterisk's
    dialplan, or surely has no extension a dialled number can match (an IVR
    context with ``s`` alone). Measured on Asterisk 22.10: the snippet's
    ``Goto(my-ivx,${CALLROUTER_DID},1)`` logs ``sent to invalid extension but
    no invalid handler`` and hangs the call up, so every call callrouter does
    not route in time (callrouter down, slow, no rule matching) is lost, while
    the rest of the check said OK (issue 16)."""
    own = [item for item in items if item.get("Context") == INBOUND_CONTEXT]
    if not any(f"${{{_DEFAULT}}}" in (item.get("AppData") or "") for item in own):
        return []  # the context does not read it: a default route of its own
    value = await _getvar(client, _DEFAULT, read)
    if value is None:
        return []  # not readable: the inbound verdict stands as it is
    context = value.strip()
    raw = _read_unset(own, _DEFAULT)  # an older copy: Goto() reads the global as it is
    fix = (
        f"set {_DEFAULT} in [globals] to the context of your default route (your queue, "
        "ring group or IVR)"
    )
    reload = ', then `asterisk -rx "dialplan reload"`'
    if context != value:
        spaced = _spaced_default(value, context, raw=raw)
        if spaced is not None:
            return [Finding("fail", spaced + "; " + fix + reload)]
    if not context:
        if raw:
            return []  # no default of its own: _globals says so
        context = _SHIPPED_DEFAULT
    named = (
        f"the global {_DEFAULT} is {shown(value)}"
        if value.strip()
        else f"{_DEFAULT} is empty, so [{INBOUND_CONTEXT}] falls back to [{_SHIPPED_DEFAULT}]"
    )
    if "," in context:
        # Measured on Asterisk 22.10: Goto(callrouter-default,s,${CALLROUTER_DID},1)
        # takes s for the extension and the DID for the priority, "sent to
        # invalid extension but no invalid handler", and hangs the call up.
        return [
            Finding(
                "fail",
                f"{named}, which holds a comma: the default route is "
                f"Goto(${{{_DEFAULT}}},${{CALLROUTER_DID}},1), so Asterisk takes what "
                "follows the comma for the extension and the dialled number for the "
                "priority, and hangs up every call callrouter does not route in time "
                f"(sent to invalid extension); {_DEFAULT} names a context alone: " + fix + reload,
            )
        ]
    if context == INBOUND_CONTEXT:
        # Measured on Asterisk 22.10: the call runs the context again, a
        # request and a wait each time, until the caller hangs up.
        return [
            Finding(
                "fail",
                f"{named}, the context that sends the request itself: every call "
                "callrouter does not route in time (callrouter down or slow, no rule "
                "matching, --shadow) goes back to its top, a request and a wait again "
                "and again, until the caller hangs up; " + fix + reload,
            )
        ]
    listed = await _listed(client, context)

    if listed is False:
        return [
            Finding(
                "fail",
                f"{named}, a context Asterisk's dialplan does not have: every call "
                "callrouter does not route in time (callrouter down or slow, no rule "
                "matching, --shadow) takes its default route there and Asterisk hangs it "
                "up (sent to invalid extension); "
                + fix
                + ", or add that context to extensions.conf"
                + reload,
            )
        ]
    if isinstance(listed, ListedContext) and listed.closed and not listed.patterns:
        numbers = [name for name in listed.plain if name and set(name) <= _DID_CHARACTERS]
        if numbers and all(len(name) <= _OPTION_LENGTH for name in numbers):
            return [_options_only(named, context, listed, numbers, fix + reload)]
        if not numbers:
            # With an i extension Asterisk sends the call there ("sent to
            # invalid extension"), which an IVR's i often plays a prompt in
            # and goes back to s: the calls are not lost, only routed oddly.
            invalid = "i" in listed.plain
            return [
                Finding(
                    "advice" if invalid else "fail",
                    f"{named}, a context with no extension a dialled number can match "
                    f"(it has {', '.join(sorted(shown(n) for n in listed.plain))}): the "
                    f"default route is Goto({shown(context)},${{CALLROUTER_DID}},1), so "
                    "every call callrouter does not route in time "
                    + (
                        "goes to its i extension (an invalid-entry prompt?), not its s"
                        if invalid
                        else "is hung up (sent to invalid extension)"
                    )
                    + "; give the context a _X. extension that "
                    "goes on to its s (exten => _X.,1,Goto(s,1)), or " + fix + reload,
                )
            ]
    return []


#: An extension of a default route's context this short is an IVR's option
#: (a key pressed: ``1``, ``2``, ``#``), not a dialled number that calls
#: falling back carry (``Goto(ctx,${CALLROUTER_DID},1)``).
_OPTION_LENGTH = 2


def _options_only(
    named: str, context: str, listed: ListedContext, numbers: Sequence[str], fix: str
) -> Finding:
    """Advice for a default route's context whose only extensions a dialled
    number could match are an IVR's options (``1``, ``2``, with ``t``, ``i``
    and no ``s`` perhaps): a call falling back carries its DID, which is none
    of them, so it goes to the context's ``i`` or, with none, is hung up;
    unless the DIDs are these very numbers, which callrouter cannot tell."""
    invalid = "i" in listed.plain
    return Finding(
        "advice",
        f"{named}, a context whose only extensions a dialled number can match are "
        f"{', '.join(sorted(shown(n) for n in numbers))} (it has "
        f"{', '.join(sorted(shown(n) for n in listed.plain))}): an IVR's options? The "
        f"default route is Goto({shown(context)},${{CALLROUTER_DID}},1), so every call "
        "callrouter does not route in time whose dialled number is none of them "
        + (
            "goes to its i extension (an invalid-entry prompt?), not its menu"
            if invalid
            else "is hung up (sent to invalid extension)"
        )
        + "; give the context a _X. extension that goes on to its menu "
        "(exten => _X.,1,Goto(s,1)), or " + fix,
    )


def _spaced_default(value: str, context: str, *, raw: bool) -> str | None:
    """What a ``CALLROUTER_DEFAULT`` with spaces around it (``value``; ``context``
    without them) does to a call, or None when nothing goes wrong. The shipped
    inbound context reads it through ``${IF(...)}``, which trims the spaces
    (func_logic.c ``acf_if``): a value of spaces alone becomes no context, and
    ``Goto(,${CALLROUTER_DID},1)`` stays in the call's own context, which
    sends the request again. An older copy (``raw``) hands ``Goto()`` the value
    as it is (pbx.c ``pbx_parseable_goto`` trims nothing): the spaces are part
    of a context name Asterisk does not have, and the call is hung up (spaces
    alone are no value to it: :func:`_globals` says so)."""
    named = f"the global {_DEFAULT} is {shown(value)}"
    if raw and not context:
        return None  # as good as unset to an older copy: _globals says so
    if raw:
        return (
            f"{named}, with spaces around the context's name: "
            f"[{INBOUND_CONTEXT}] (a copy older than the snippet's default of it) hands "
            f"Goto(${{{_DEFAULT}}},${{CALLROUTER_DID}},1) the value as it is, and Asterisk "
            "takes the spaces for part of the context's name: every call callrouter does "
            "not route in time is hung up (sent to invalid extension); "
            f"paste the callrouter-* contexts of examples/asterisk/extensions.conf again"
        )
    if context:
        return None  # the shipped context's ${IF(...)} trims them: the context is read
    return (
        f"{named}, spaces alone: [{INBOUND_CONTEXT}] trims them to nothing, and "
        f"Goto(,${{CALLROUTER_DID}},1) with no context stays in [{INBOUND_CONTEXT}]: every "
        "call callrouter does not route in time goes back to its top, a request and a "
        "wait again and again, until the caller hangs up"
    )


def _guards_wait(own: Sequence[Item]) -> bool:
    """Whether the inbound context has a ``Set(CALLROUTER_WAIT=...)`` that checks
    that the value is a number (the shipped snippet's ``REGEX``)."""
    for item in own:
        target, _, value = (item.get("AppData") or "").partition("=")
        application = (item.get("Application") or "").lower()
        if application == "set" and target.strip() == _WAIT and "REGEX(" in value:
            return True
    return False


def _read_unset(own: Sequence[Item], name: str) -> bool:
    """Whether a step of the inbound context (``own``) reads ``${name}`` with
    no ``Set(name=...)`` of its extension before it: an older copy of the
    snippet, which left both to its ``[globals]``. A ``Set`` that reads it
    to set it (the snippet's ``${IF(...)}`` default) is that default, not a
    read; a ``Set`` of nothing is no default."""
    steps: dict[str, list[tuple[int, str, str]]] = {}
    for item in own:
        priority = item.get("Priority") or ""
        if priority.isascii() and priority.isdigit():
            steps.setdefault(item.get("Extension") or "", []).append(
                (int(priority), (item.get("Application") or "").lower(), item.get("AppData") or "")
            )
    read = f"${{{name}}}"
    for listed in steps.values():
        for _, application, text in sorted(listed):
            target, is_set, value = text.partition("=")
            own_default = value.strip() not in ("", read)
            if application == "set" and is_set and target.strip() == name and own_default:
                break  # set here before any read: the context's own default
            if read in text:
                return True
    return False


@dataclass(frozen=True, slots=True)
class ListedContext:
    """One context as ``ShowDialPlan`` lists it: its own extensions with a
    numbered step (a hint alone runs nothing), not those of the contexts it
    includes, which only Asterisk's own match follows. Plain names apart
    from patterns: a thousand targets against thousands of extensions cost
    a set lookup each, on the engine's loop.

    ``closed``: the listing is all there is to it (no ``include``, switch or
    anything else without an extension; no caller-ID match; every pattern
    one :func:`extension_matches` reads), so an extension it does not have
    is surely not there.

    ``missing``: Asterisk has no such context ("Did not find context"): closed
    and empty, every extension surely not there (:data:`NO_SUCH_CONTEXT`)."""

    plain: frozenset[str]
    patterns: tuple[str, ...]
    closed: bool = False
    missing: bool = False

    def has(self, exten: str) -> bool:
        return plain_extension(exten) in self.plain or any(
            extension_matches(pattern, exten) for pattern in self.patterns
        )

    def lacks(self, exten: str) -> bool:
        """Whether ``exten`` is surely not in the context: a Redirect there
        is accepted by Asterisk and hangs the call up (measured on 22.10)."""
        return self.closed and not self.has(exten)


#: A context Asterisk's dialplan does not have: a Redirect there is accepted
#: and the call hung up (measured on 22.10), as for a missing extension.
NO_SUCH_CONTEXT = ListedContext(frozenset(), (), closed=True, missing=True)


async def _show(client: DialplanAMI, params: Mapping[str, str]) -> _Listing | bool | None:
    """``ShowDialPlan``'s listing; False for "Did not find ..." (no such context
    or extension), None when it cannot be read (privilege, connection) or
    not whole (a step skipped for a line over the parser's bound: a context
    so read would look closed without it, and an extension missing)."""
    try:
        listing = await client.action("ShowDialPlan", params)
    except AMIPrivilegeError:
        return None  # the inbound check above says so
    except AMIActionError:
        return False
    except AMIError:
        return None
    return None if listing.unread_items else listing


def _short(context: str, listing: _Listing) -> str:
    """What a ``ShowDialPlan`` listing short of steps is said as."""
    unread = listing.unread_items
    return (
        f"the dialplan could not be read whole: ShowDialPlan of [{context[:80]}] lacks "
        f"{counted(unread, 'step')} of the {len(listing.items) + unread} it counts, each "
        "skipped for a line over 64 KiB (no Asterisk sends one: a broken or hostile AMI "
        "peer?); not judged"
    )


async def _listed(client: DialplanAMI, context: str) -> ListedContext | bool | None:
    """``context``'s own extensions; False: no such context; None: unreadable."""
    listing = await _show(client, {"Context": context})
    if listing is None or isinstance(listing, bool):
        return listing
    own = [item for item in listing.items if item.get("Context") == context]
    names = {item.get("Extension") or "" for item in own if _numbered(item)} - {""}
    patterns = tuple(sorted(n for n in names if n.startswith("_")))
    closed = (
        bool(names)  # nothing listed (no such answer from Asterisk): nothing to judge
        and all(item.get("Extension") for item in own)  # an include or a switch: open
        and not any("/" in n or not n.isprintable() for n in names)  # caller-ID matches
        and all(understood_pattern(p) for p in patterns)
    )
    return ListedContext(
        frozenset(plain_extension(n) for n in names if not n.startswith("_")),
        patterns,
        closed,
    )


def _numbered(item: Item) -> bool:
    priority = item.get("Priority") or ""
    return priority.isascii() and priority.isdigit()


async def _has_extension(client: DialplanAMI, context: str, exten: str) -> bool | None:
    """Asterisk's own answer, includes and patterns followed; None: unreadable."""
    listing = await _show(client, {"Context": context, "Extension": exten})
    if listing is None or isinstance(listing, bool):
        return listing
    return any(_numbered(item) for item in listing.items)  # a hint alone runs nothing


async def _targets(
    client: DialplanAMI,
    targets: Sequence[RedirectTarget],
    built: int,
    read: dict[str, ListedContext],
) -> tuple[list[Finding], bool]:
    """Each place the rules send calls to. One listing per context, the
    extensions matched against it here; only an extension that matches none
    of them is asked of Asterisk, whose answer decides (a thousand per-DID
    rules into one context cost one request)."""
    findings: list[Finding] = []
    contexts: dict[str, ListedContext | bool | None] = {}
    asked: dict[tuple[str, str], bool | None] = {}
    unknown = 0
    for target in targets:
        if target.context not in contexts:
            if len(contexts) >= _MAX_CONTEXTS:
                unknown += 1
                continue
            contexts[target.context] = await _listed(client, target.context)
            listing = contexts[target.context]
            if isinstance(listing, ListedContext):
                read[target.context] = listing
            elif listing is False:  # no such context: judged, every extension missing
                read[target.context] = NO_SUCH_CONTEXT
        listed = contexts[target.context]
        if listed is None:
            unknown += 1
            continue
        context = shown(target.context)
        if listed is False:
            fix = (
                # One of the snippet's: pasted, not written (an earlier README said
                # to paste [callrouter-inbound] alone).
                f"paste [{target.context}] of examples/asterisk/extensions.conf into "
                "extensions.conf (a copy older than it, or [callrouter-inbound] pasted "
                "alone, lacks it)"
                if target.context in _SHIPPED_CONTEXTS
                else f"correct the context in the rule, or add the context {context} to "
                "extensions.conf"
            )
            findings.append(
                Finding(
                    "fail",
                    f"{target.location}: rule {target.rule!r} redirects to context "
                    f"{context}, which Asterisk's dialplan does not have: Asterisk "
                    f"accepts the Redirect and hangs the call up; {fix} and run "
                    "asterisk -rx 'dialplan reload'",
                )
            )
            continue
        if target.exten is None or not isinstance(listed, ListedContext):
            continue
        if listed.has(target.exten):
            continue
        key = (target.context, target.exten)
        if key not in asked:
            if len(asked) >= _MAX_TARGETS:
                unknown += 1
                continue
            asked[key] = await _has_extension(client, *key)
        if asked[key] is None:
            unknown += 1
        elif asked[key] is False:
            findings.append(
                Finding(
                    "fail",
                    f"{target.location}: rule {target.rule!r} redirects to extension "
                    f"{shown(target.exten)} of context {context}, which has no such "
                    "extension: Asterisk accepts the Redirect and hangs the call up "
                    "(or sends it to that context's i extension); correct the extension "
                    f"in the rule, or add it to {context} in extensions.conf and run "
                    "asterisk -rx 'dialplan reload'",
                )
            )
    if unknown:
        findings.append(
            Finding(
                "advice",
                f"{unknown} of the rules' redirect targets could not be looked up",
            )
        )
    elif not findings:
        places = len({(t.context, t.exten) for t in targets})
        more = f" ({built} more {'is' if built == 1 else 'are'} built per call)" if built else ""
        findings.append(
            Finding(
                "ok",
                f"the rules redirect to {places} place{'s' if places != 1 else ''} "
                f"Asterisk's dialplan has{more}",
            )
        )
    return findings, bool(unknown)
