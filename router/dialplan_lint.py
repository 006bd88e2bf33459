"""Whether the dialplan Asterisk has loaded keeps callrouter's contract.

An Asterisk administrator pastes the snippet (``examples/asterisk/extensions.conf``)
and edits it: a `Playback` slipped in between the request and ``Wait``, a
renamed ``UserEvent``, a ``Wait`` that is the last step. Each of those routes
most calls and quietly loses some, or none, with nothing in any log; the
loaded dialplan says so before the first call (``callrouter check
--asterisk``, which reads it with ``ShowDialPlan``). The rules are those
router/dialplan.py and router/parking.py rely on:

- the inbound context asks: a ``UserEvent(CallRouterRequest, ...)`` step;
- the step right after the request is a wait (``Wait``, ``MusicOnHold``,
  ``WaitExten``): a Redirect that lands between two other steps can be lost
  (docs/asterisk.md, "A Redirect Asterisk can lose");
- a step follows the wait: the default route a call takes when callrouter
  does not answer in time (fail open), not a hang-up; and the extension does
  not end in a step that only sets or tests something (``Set``, ``NoOp``, a
  ``GotoIf`` with one branch: the snippet with its last ``Goto`` lost), after
  which Asterisk hangs the call up as it runs off the end;
- advice, not a failure: ``CALLROUTER_DEADLINE`` is set before the request
  (the reconcile after a stream gap reads it) and the request says its
  ``Wait`` (else callrouter assumes :data:`DEFAULT_WAIT` seconds).
- advice too: the request passes ``${EXTEN}``, ``${CALLERID(num)}``,
  ``${CALLERID(name)}`` or a DID variable set from one without ``FILTER()``
  (milestone 1's snippet did), with the lines to write (router/dialplan_values.py);
- advice too, with the HTTP API on: ``[callrouter-dial]`` has the branch that
  dials an internal forward through itself (``CALLROUTER_FWDINT_``); a copy
  pasted before it dials 102, the forward of 101, through the trunk.

Sans-I/O: it takes the ``ListDialplan`` items as anything with ``get``
(the client's messages, or plain dicts).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from router.dialplan import (
    DEADLINE_VARIABLE,
    DEFAULT_WAIT,
    DIAL_CONTEXT,
    FWDINT_PREFIX,
    INBOUND_CONTEXT,
    MIXMONITOR_ID_VARIABLE,
    PARK_APPLICATIONS,
    RECORD_CONTEXT,
    REQUEST_EVENT,
    shown,
)
from router.dialplan_values import Unfiltered, request_line, unfiltered

__all__ = [
    "Finding",
    "Item",
    "extension_matches",
    "lint_dial",
    "lint_inbound",
    "lint_record",
    "plain_extension",
    "understood_pattern",
]

#: The waits, as Asterisk names applications: in any case.
_PARKS = frozenset(app.lower() for app in PARK_APPLICATIONS)
#: Steps that do nothing with the call and go on to the next one: an extension
#: ending in one runs off its end, and Asterisk hangs the call up
#: (``autofallthrough``). A ``GotoIf`` with one branch is one too (below).
_PASSING = frozenset(
    {
        "answer",
        "execif",
        "log",
        "mixmonitor",
        "mset",
        "noop",
        "progress",
        "ringing",
        "set",
        "stopmixmonitor",
        "userevent",
        "verbose",
    }
    | _PARKS
)
#: Requests of one context whose values are checked for FILTER() (a context
#: has one; the check reads every step before each).
_MAX_FILTER_CHECKS = 20
#: Most steps of one extension looked at (a dialplan is the admin's, but the
#: list came over the network: bounded like everything else from there).
_MAX_STEPS = 10_000


class Item(Protocol):
    """A ``ListDialplan`` item: an AMI message, or a dict in tests."""

    def get(self, key: str, default: str | None = None, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the verdict: ``ok``, ``advice`` (works, could be better) or ``fail``."""

    level: Literal["ok", "advice", "fail"]
    text: str


@dataclass(frozen=True, slots=True)
class _Step:
    priority: int
    application: str
    data: str


def _steps(items: Iterable[Item], context: str) -> dict[str, list[_Step]]:
    """The context's extensions, each with its numbered steps in order."""
    found: dict[str, list[_Step]] = {}
    for count, item in enumerate(items):
        if count >= _MAX_STEPS:
            break
        exten = item.get("Extension")
        if item.get("Context") != context or not exten:
            continue
        priority = item.get("Priority") or ""
        if not priority.isascii() or not priority.isdigit():
            continue  # a hint, or anything that is no numbered step
        found.setdefault(exten, []).append(
            _Step(int(priority), item.get("Application") or "", item.get("AppData") or "")
        )
    for steps in found.values():
        steps.sort(key=lambda s: s.priority)
    return found


def _runs_off(step: _Step) -> bool:
    """Whether a call that reaches ``step`` as an extension's last one runs off
    its end: the step only sets or tests something, or is a ``GotoIf`` whose
    destinations (after the last ``?``: a condition may hold ``:``, as the
    snippet's regex match does) name no second branch, taken when it is false."""
    application = step.application.lower()
    if application == "gotoif":
        return "?" in step.data and ":" not in step.data.rsplit("?", 1)[1]
    return application in _PASSING


def _is_request(step: _Step, request_event: str) -> bool:
    return (
        step.application.lower() == "userevent"
        and step.data.split(",", 1)[0].strip() == request_event
    )


def lint_inbound(
    items: Iterable[Item],
    *,
    context: str = INBOUND_CONTEXT,
    request_event: str = REQUEST_EVENT,
) -> list[Finding]:
    """The verdict on ``context`` from ``ShowDialPlan``'s ``ListDialplan`` items."""
    extensions = _steps(items, context)
    where = f"[{context}]"
    if not extensions:
        return [
            Finding(
                "fail",
                f"{where} has no steps in Asterisk's dialplan: paste it from "
                "examples/asterisk/extensions.conf into extensions.conf, send the "
                'inbound calls there, then `asterisk -rx "dialplan reload"`',
            )
        ]
    findings: list[Finding] = []
    asking = 0
    for exten, steps in sorted(extensions.items()):
        for step in steps:
            if not _is_request(step, request_event):
                continue
            asking += 1
            at = f"{where} {shown(exten)} priority {step.priority}"
            findings.extend(_request_verdict(at, step, steps))
            if asking > _MAX_FILTER_CHECKS:
                continue  # each check reads the steps before: bounded, as the listing is
            before = [(s.priority, s.application, s.data) for s in steps]
            found = unfiltered([b for b in before if b[0] < step.priority], step.data)
            if found:
                findings.append(Finding("advice", _unfiltered_advice(at, step, found)))
    if not asking:
        findings.append(
            Finding(
                "fail",
                f"{where} sends no UserEvent({request_event},...): no call there asks "
                "callrouter; the snippet's request step is missing or renamed: paste it "
                "again from examples/asterisk/extensions.conf, then "
                '`asterisk -rx "dialplan reload"`',
            )
        )
    return findings


def _request_verdict(at: str, step: _Step, steps: list[_Step]) -> list[Finding]:
    """The verdict on one request step ``step`` of an extension's ``steps``:
    a wait right after it, a default route after that; then advice."""
    findings: list[Finding] = []
    by_priority = {s.priority: s for s in steps}
    parks = ", ".join(sorted(PARK_APPLICATIONS))
    wait = by_priority.get(step.priority + 1)
    if wait is None:
        findings.append(
            Finding(
                "fail",
                f"{at}: nothing follows the request: the call hangs up "
                f"at once instead of waiting for callrouter ({parks}); put the "
                "snippet's Wait and default route after it "
                "(examples/asterisk/extensions.conf)",
            )
        )
        return findings
    if wait.application.lower() not in _PARKS:
        findings.append(
            Finding(
                "fail",
                f"{at}: the step after the request is {shown(wait.application)}, "
                f"not a wait ({parks}): Asterisk can lose a Redirect that lands "
                'between two steps (docs/asterisk.md, "A Redirect Asterisk can '
                'lose"); put the wait right after the request',
            )
        )
        return findings
    if by_priority.get(step.priority + 2) is None:
        findings.append(
            Finding(
                "fail",
                f"{at}: nothing follows {wait.application}: a call callrouter "
                "does not route in time hangs up instead of taking its default "
                "route; add the snippet's default-route steps after it",
            )
        )
        return findings
    last = steps[-1]
    if _runs_off(last):
        findings.append(
            Finding(
                "fail",
                f"{at}: the extension ends with {shown(last.application)} at "
                f"priority {last.priority}, which goes on to a next step there "
                "is not: a call callrouter does not route in time hangs up "
                "there instead of taking its default route; end it as the "
                "snippet does, with Goto(${CALLROUTER_DEFAULT},${CALLROUTER_DID},1)",
            )
        )
        return findings
    findings.append(
        Finding(
            "ok",
            f"{at}: the request, then {wait.application}, then the default route",
        )
    )
    before = [s for s in steps if s.priority < step.priority]
    if not any(
        s.application.lower() == "set" and s.data.startswith(f"{DEADLINE_VARIABLE}=")
        for s in before
    ):
        findings.append(
            Finding(
                "advice",
                f"{at}: no Set({DEADLINE_VARIABLE}=...) before the request: after "
                "an event stream gap callrouter cannot tell how long such a call "
                "still waits, and leaves it to its default route; set it before "
                "the request as examples/asterisk/extensions.conf does",
            )
        )
    keys = {part.split(":", 1)[0].strip() for part in step.data.split(",")[1:]}
    if "Wait" not in keys:
        findings.append(
            Finding(
                "advice",
                f"{at}: the request does not say its Wait: callrouter assumes "
                f"{DEFAULT_WAIT:g} s, which must not be longer than the wait; add "
                "Wait: ${CALLROUTER_WAIT} to the UserEvent as "
                "examples/asterisk/extensions.conf does",
            )
        )
    return findings


#: Longest request line suggested as it is (a longer one is the snippet's to copy).
_MAX_LINE = 300


def _unfiltered_advice(at: str, step: _Step, found: list[Unfiltered]) -> str:
    """The advice on a request passing a value from outside unfiltered
    (router/dialplan_values.py): what it passes, and the lines to write."""
    passed = []
    for fault in found:
        through = (
            ""
            if fault.via is None
            else f" ({fault.source} through ${{{fault.via}}}, set unfiltered at priority "
            f"{fault.set_at})"
        )
        passed.append(f"{shown(fault.part)}{through}")
    rewrites: list[str] = []
    sets: list[str] = []
    for fault in found:
        line = fault.fix()
        if line is None:
            continue
        if fault.via is not None:
            wanted, into = f"priority {fault.set_at} as `{line}`", rewrites
        else:
            wanted, into = f"`same => n,{line}`", sets
        if wanted not in into:
            into.append(wanted)
    write = [f"write {w}" for w in rewrites]
    if sets:
        write.append(f"write {' and '.join(sets)} before the request")
    if any(f.via is None or f.kind == "name" for f in found):
        line = request_line(step.data, found)
        write.append(
            f"write the request as `same => n,{line}`"
            if len(line) <= _MAX_LINE
            else "write the request as examples/asterisk/extensions.conf does"
        )
    name = (
        " (a caller's name is left out: callrouter reads it from the channel's own "
        "snapshot, CallerIDName, which Asterisk escapes)"
        if any(f.kind == "name" for f in found)
        else ""
    )
    return (
        f"{at}: the request passes {' and '.join(passed)} unfiltered: the caller writes "
        "these, and a comma in one sends request keys of the caller's choosing (a caller ID "
        "of 1,Wait: 0 sends Wait: 0 before the request's own); "
        + "; ".join(write)
        + name
        + ', as examples/asterisk/extensions.conf does (docs/asterisk.md, "Values from '
        'outside are filtered"), then `asterisk -rx "dialplan reload"`'
    )


#: Longest extension pattern translated (a dialplan's are a few characters).
_MAX_PATTERN = 200


#: MixMonitor's option that stores its id in ``CALLROUTER_REC_ID``, among its options
#: (after the file: ``${CALLROUTER_REC_OPTIONS}i(CALLROUTER_REC_ID)`` in the snippet).
_ID_OPTION = re.compile(rf",.*i\(\s*{MIXMONITOR_ID_VARIABLE}\s*\)")


def lint_record(items: Iterable[Item], *, context: str = RECORD_CONTEXT) -> list[Finding]:
    """The verdict on ``[callrouter-record]`` (``[recordings]`` on) from its items.

    Its ``MixMonitor`` must store its id with ``i(CALLROUTER_REC_ID)``: callrouter
    stops its own recording by that id (``max_duration``, the API's stop) and, with
    none, stops nothing (a stop without the id could end the PBX's own recording).
    A ``[callrouter-record]`` copied before the option records but is never stopped
    early, which only this check says before a long call shows it.
    """
    where = f"[{context}]"
    steps = [step for found in _steps(items, context).values() for step in found]
    mixmonitors = [s for s in steps if s.application.lower() == "mixmonitor"]
    if not steps:
        return [
            Finding(
                "fail",
                f"{where} is not in the dialplan: a call a rule records is redirected "
                "there and Asterisk hangs it up (paste it from "
                "examples/asterisk/extensions.conf)",
            )
        ]
    if not mixmonitors:
        return [
            Finding(
                "fail",
                f"{where} has no MixMonitor step: nothing is recorded; paste it again "
                "from examples/asterisk/extensions.conf",
            )
        ]
    missing = [s for s in mixmonitors if not _ID_OPTION.search(s.data)]
    if missing:
        return [
            Finding(
                "advice",
                f"{where} priority {missing[0].priority}: MixMonitor without "
                f"i({MIXMONITOR_ID_VARIABLE}) (a copy older than that option): it records, "
                "but callrouter can never stop it early, neither after [recordings] "
                "max_duration nor by the API; update it from examples/asterisk/extensions.conf",
            )
        ]
    return [Finding("ok", f"{where}: MixMonitor stores its id in {MIXMONITOR_ID_VARIABLE}")]


def lint_dial(items: Iterable[Item], *, context: str = DIAL_CONTEXT) -> list[Finding]:
    """The verdict on ``[callrouter-dial]`` with the HTTP API on (it forwards).

    The API flags a forward to an internal number with ``CALLROUTER_FWDINT_101``
    and the shipped context dials such a number through itself; a copy pasted
    before that branch ignores the flag and dials 102 through the outbound
    (trunk) context, which does not know it: the call forwarded to a colleague
    fails, or leaves by the trunk. Nothing is said when the context is not
    loaded (a rule redirecting there is checked as the rules' targets are).
    """
    steps = [step for found in _steps(items, context).values() for step in found]
    if not steps:
        return []
    where = f"[{context}]"
    if any(FWDINT_PREFIX in step.data for step in steps):
        return [Finding("ok", f"{where} dials an internal forward through itself")]
    return [
        Finding(
            "advice",
            f"{where} has no {FWDINT_PREFIX}${{...}} branch (a copy older than it): "
            "forwarding an extension to an internal number through the HTTP API "
            '(PUT /api/v1/extensions/101/forwarding {"forward_to": "102"}) dials 102 '
            "through the outbound context, the trunk, which does not know it; paste "
            f"{where} again from examples/asterisk/extensions.conf and run "
            "asterisk -rx 'dialplan reload'",
        )
    ]


def extension_matches(pattern: str, exten: str) -> bool:
    """Whether ``exten`` would run under the dialplan extension ``pattern``, as
    Asterisk's ``ast_extension_match`` decides it for the common forms: a
    plain name (``-`` ignored), or ``_`` with ``X`` ``Z`` ``N``
    (any case), ``[...]`` with ranges, ``.`` (one or more) and ``!`` (zero
    or more). Leaning to no: a caller asks Asterisk itself when this says no.
    """
    if not pattern.startswith("_"):
        return plain_extension(pattern) == plain_extension(exten)
    compiled = _pattern(pattern[1:])
    return compiled is not None and compiled.fullmatch(plain_extension(exten)) is not None


def understood_pattern(pattern: str) -> bool:
    """Whether :func:`extension_matches` reads ``pattern`` (``_...``) as
    Asterisk does, so that its no is Asterisk's no."""
    return _pattern(pattern[1:]) is not None


def plain_extension(name: str) -> str:
    """An extension as Asterisk compares it: ``-`` is a separator for the eye."""
    return name.replace("-", "")


@functools.lru_cache(maxsize=1024)
def _pattern(body: str) -> re.Pattern[str] | None:
    """The regular expression for a pattern after its ``_``; None when it
    is too long or not one this understands."""
    if len(body) > _MAX_PATTERN:
        return None
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        upper = char.upper()
        if upper == "X":
            out.append("[0-9]")
        elif upper == "Z":
            out.append("[1-9]")
        elif upper == "N":
            out.append("[2-9]")
        elif char == ".":
            out.append(".+")
            break  # the rest of the pattern is never reached
        elif char == "!":
            out.append(".*")
            break
        elif char == "-":
            pass  # a separator for the eye; a space is a character
        elif char == "[":
            end = body.find("]", i + 1)
            if end < 0:
                return None
            members = body[i + 1 : end]
            cls = "".join(
                re.escape(m) if m != "-" or k in (0, len(members) - 1) else "-"
                for k, m in enumerate(members)
            )
            out.append(f"[{cls}]" if cls else "(?!)")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:  # a range such as [5-1]: Asterisk matches nothing with it
        return None
