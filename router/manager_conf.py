"""A manager user's ``eventfilter`` lines against the events callrouter needs.

When Asterisk refuses the user ``Filter`` (no ``write = system``, as
docs/asterisk.md recommends), the only event-name filters of callrouter's
session are the ``eventfilter`` lines of the user's manager.conf section. They
are static: an ``on: event`` rule, a plugin that reads another event or a
``redirect`` to another priority needs lines the section lacks, and Asterisk
then never sends those events (a rule that never fires, a Redirect reported
``unconfirmed``); a rule removed leaves lines that let events through that
nobody reads. ``callrouter check --manager-conf-file`` compares the section
with :meth:`EventSelection.manager_conf_lines` and says what to change.

Sans-I/O: text in, findings out. The file is read as Asterisk 22's
main/config.c reads it, its quirks too (:func:`_uncommented`, :func:`_header`:
``key = value``, ``key => value``, ``;``
comments and ``;-- ... --;`` blocks (they nest; a backslash keeps a semicolon),
``[router](+)`` adding to the section, and templates: ``[router](base)``
inherits the lines ``[base](!)`` has above it, as Asterisk applies them to the
user's session); ``#include`` is not followed here (``callrouter check``
follows it, router/commands/check.py). A line in
callrouter's own form is compared exactly; a legacy regex filter
(``eventfilter = Event: Hangup``, ``!`` to exclude) is tried against an
event's first line, which is how such filters are written.
"""

from __future__ import annotations

import importlib
import re
import string
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from router.ami.event_filter import EventSelection, HeaderFilter
from router.ami.hazards import filter_options_crash
from router.wording import counted

__all__ = [
    "ConfFinding",
    "UserSection",
    "asterisk_classes",
    "compare_classes",
    "compare_disabled",
    "compare_eventfilters",
    "disabled_events",
    "include_lines",
    "section_classes",
    "section_eventfilters",
]

#: What C's ``isspace`` takes (config.c's ``ast_strip``); Python's ``str.strip``
#: takes more (``\x1c``, ``\xa0``, ...).
_C_SPACE = " \t\n\v\f\r"
#: What ``ast_skip_blanks`` skips: every byte below 33.
_BLANKS = "".join(map(chr, range(1, 33)))
#: config.c reads a line into 8192 bytes: one of this many bytes or more is
#: skipped whole ('Line N too long, skipping').
_LINE_BYTES = 8191
#: The ``;--`` comments config.c keeps open; one more on a line and it logs
#: 'Maximum nest limit of 128 reached.' for ever (seen on the sandbox).
_NEST_MAX = 128
#: Where :func:`section_eventfilters` keeps the file's first category, which an
#: empty inherited name finds (no section name has a NUL: it ends the line).
_FIRST = "\0"
#: A directive's word (``#include``): config.c takes it up to a space or a control.
_DIRECTIVE = re.compile(r"[^\x00-\x20]*")
#: ``eventfilter(CRITERIA)`` or a bare ``eventfilter`` (legacy), as a key. In
#: lower case only: manager.c takes a key for a filter when it begins with
#: ``eventfilter`` (``ast_begins_with``, case counts), and reads the options
#: and their values (``action(include)``, ``method(exact)``) with ``strcmp``.
#: On the sandbox a user whose only line was ``EventFilter(...)=`` got every
#: event.
#: Whatever follows ``eventfilter`` up to the first ``(`` is ignored
#: (``eventfilter1 = ...`` is a legacy filter, ``eventfilter2(name(X))=`` an
#: advanced one), as ``ast_begins_with`` takes the key.
_KEY = re.compile(r"eventfilter[^(]*(?:\((?P<criteria>.*)\))?")
#: The options ``manager_add_filter`` knows, by the prefix it compares
#: (``strncmp``), in the order it tries them.
_OPTIONS = ("action", "name", "header", "method")
_METHODS = ("regex", "exact", "starts_with", "ends_with", "contains", "none")
_PART = re.compile(r"(?P<name>[a-z]+)\((?P<value>[^()]*)\)")
#: Lines shown at most per finding: the rest is counted.
_SHOWN = 40
#: The longest legacy regex tried, and the most loops (``*``, ``+``, ``{2,}``)
#: in it: on a line of 60 characters three loops side by side cost at most
#: about 60**3 steps, and a loop in a loop is never tried (:func:`_tame`).
_REGEX_MAX = 512
#: The character after each backslash of a regex.
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_LOOPS_MAX = 3

#: (event, header, value) for a header filter's one value; (event, "", "") for
#: the whole event. What the lines are compared by.
_Atom = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ConfFinding:
    """One verdict on the section, and the lines to add or remove for it."""

    level: Literal["ok", "advice", "fail"]
    text: str
    lines: tuple[str, ...] = ()


class UserSection(NamedTuple):
    """A manager user's ``eventfilter`` lines as Asterisk applies them."""

    #: ``key=value``, the spaces around both dropped: the templates' lines
    #: first, as the file has them, then the section's own.
    lines: list[str]
    #: The ``#include`` lines of the file (not followed).
    includes: list[str]
    #: The templates the lines came from besides the section, in file order.
    templates: tuple[str, ...] = ()
    #: Why Asterisk refuses the whole file (config.c stops reading it and
    #: manager.conf is not loaded): a ``(+)`` or an inherited name with no
    #: section above it, with the line number.
    errors: tuple[str, ...] = ()
    #: The ``eventfilter`` lines, of any user's section, that Asterisk 22 dies
    #: of at its next ``manager reload`` or start (:class:`_Refusal`), with
    #: their line numbers.
    crashes: tuple[str, ...] = ()
    #: The file has no such user (told for its ``#include`` lines, which may
    #: hold it: FreePBX keeps its admin's own users in manager_custom.conf, or
    #: for its errors and crash lines, which count whoever's section has them).
    elsewhere: bool = False


class _Refusal(NamedTuple):
    """Why ``manager_add_filter`` adds no filter for a line (:func:`_refused`)."""

    why: str
    #: Asterisk 22 does not refuse it but dies of it: an option ``name``,
    #: ``header`` or ``method`` with no ``(`` (``eventfilter(name)=``) is read
    #: through the NULL that ``strstr(option, "(")`` answers, a segfault at the
    #: next ``manager reload`` or start (seen on the sandbox: 22.x as Debian
    #: ships it; only ``action`` is checked for it). Any user's line does it.
    crashes: bool = False


@dataclass(slots=True)
class _Section:
    name: str
    options: tuple[str, ...]
    lines: list[str]
    #: The header's line number in the file.
    at: int = 0
    #: Whether an ``#include`` comes above it (a name it refers to may be there).
    included: bool = False
    #: Its lines Asterisk dies of (:attr:`_Refusal.crashes`), with their numbers.
    crashes: list[str] = field(default_factory=list)
    #: Its ``read`` and ``write`` lines, in order: (key in lower case, value).
    classes: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Category:
    """What Asterisk's config parser makes of a header and its ``(+)`` sections."""

    #: Indexes of the sections: the header's first, then each ``(+)``.
    parts: list[int]
    #: ``(!)``: no user, only inherited from.
    template: bool


def section_eventfilters(text: str, user: str) -> UserSection | None:
    """:func:`_section`'s eventfilter lines of ``user`` (its docstring)."""
    return _section(text, user)[0]


def section_classes(text: str, user: str) -> tuple[str | None, str | None]:
    """The ``read`` and ``write`` values Asterisk gives the manager user
    ``user`` from ``text``: the last line of each, a template's before the
    section's own, the key in any case (manager.c's ``strcasecmp``), and an
    earlier section of the same name's when a later one sets none (manager.c
    resets only the filters there); None for a value no line sets (Asterisk's
    default: no class)."""
    classes = _section(text, user)[1]
    return classes.get("read"), classes.get("write")


#: The ``[general]`` keys read here (the last one set wins, as in manager.c).
_GENERAL_KEYS = ("disabledevents", "bindaddr", "enabled")
#: ``bindaddr`` values that listen on every interface (none given: ``[::]``).
_EVERY_INTERFACE = frozenset({"", "0.0.0.0", "::", "[::]"})


def native_bind(text: str, *, file: str = "manager.conf") -> list[ConfFinding]:
    """An ``advice`` when ``[general]`` enables the manager (``enabled = yes``,
    which AJAM needs too) with no ``bindaddr``, or one of every interface:
    Asterisk 22 then opens the native AMI port (5038) on all of them
    (``TCP Bindaddress: [::]:5038``), which README's quick start before
    issue 16 left so."""
    general = _section(text, "general")[1]
    enabled = general.get("enabled", "").strip().lower()
    if enabled not in ("yes", "true", "y", "t", "1", "on"):  # Asterisk's ast_true
        return []
    bindaddr = general.get("bindaddr", "").strip()
    if bindaddr not in _EVERY_INTERFACE:
        return []
    said = f"bindaddr = {bindaddr}" if bindaddr else "no bindaddr"
    return [
        ConfFinding(
            "advice",
            f"{file} [general] has {said}: Asterisk opens the native AMI port (5038 unless "
            "`port` says) on every interface, to every manager user's password guesses; "
            "add `bindaddr = 127.0.0.1` to [general] (callrouter over http:// or https:// "
            "does not use that port; over tcp:// from another host, bind the address it "
            "connects to), then "
            "`asterisk -rx 'manager reload'`; `asterisk -rx 'manager show settings'` shows "
            "the TCP Bindaddress in force",
        )
    ]


def disabled_events(text: str) -> str | None:
    """manager.conf ``[general] disabledevents`` as Asterisk takes it (the key
    in any case; the last one set), None when no line sets it."""
    return _section(text, "general")[1].get("disabledevents")


def include_lines(text: str) -> list[str]:
    """The ``#include``, ``#tryinclude`` and ``#exec`` lines config.c acts on in
    ``text`` (none in a comment, none after a line it stops reading at), each as
    :attr:`UserSection.includes` has it."""
    # "]" ends a header: no section is named so, so this asks for the file's lines only.
    section = _section(text, "]")[0]
    return list(section.includes) if section is not None else []


#: Events ``[general] disabledevents`` must not name, with what is lost: checked
#: whatever events callrouter asks for (with ``events = "all"`` too).
_DISABLED_LOST = {
    "UserEvent": "no routing request arrives: no call is routed",
    "Newexten": "every Redirect waits 250 ms for a Wait step that never shows and is "
    "reported unconfirmed",
}


def compare_disabled(
    value: str | None, selection: EventSelection, *, file: str = "manager.conf"
) -> list[ConfFinding]:
    """A ``fail`` naming the events ``[general] disabledevents`` turns off for
    every session that ``selection`` needs: no AMI action shows the list, and
    ``callrouter check --asterisk`` cannot tell an event Asterisk never
    raises from one that did not happen. Items are matched as Asterisk's
    ``ast_in_delimited_string`` does: blanks before an item skipped, none
    after it, case counted. A ``selection`` of every event (``[asterisk]
    events = "all"``) needs at least those no call is routed right without
    (:data:`_DISABLED_LOST`): a list naming others (noisy ones turned off on
    purpose) passes."""
    if not value:
        return []
    needed = selection.names if selection.names is not None else frozenset(_DISABLED_LOST)
    items = [raw.lstrip(_BLANKS) for raw in value.split(",")]
    off = sorted(name for name in needed if name in items)
    if not off:
        return []
    lost = _DISABLED_LOST
    why = "; ".join(f"{name}: {lost[name]}" for name in off if name in lost)
    return [
        ConfFinding(
            "fail",
            f"{file} [general] disabledevents = {value} turns off {', '.join(off)} for every "
            f"session, which callrouter needs{f' ({why})' if why else ''}: take "
            f"{'them' if len(off) > 1 else 'it'} out of the list (keep the key: Asterisk's "
            "manager reload keeps the old list when the line is gone), then "
            "`asterisk -rx 'manager reload'`; `asterisk -rx 'manager show settings'` shows "
            "the list in force",
        )
    ]


def _section(text: str, user: str) -> tuple[UserSection | None, dict[str, str]]:
    """The ``eventfilter`` lines Asterisk gives the manager user ``user`` from
    ``text`` (with those of the templates it inherits), and the ``#include``
    lines of the file; None when no section makes that user (a template
    ``[user](!)`` is no user, nor is ``[general]``).

    The names are matched as Asterisk 22 matches them, without regard to
    case (config.c's categories, manager.c's ``get_manager_by_name_locked``;
    on the sandbox ``ROUTER`` logged in as ``[router]``): ``[Router]`` is
    the user ``router``, and ``[router](BASE)`` inherits ``[base]``. When
    the file has the user's section twice (``[router]`` ... ``[ROUTER]``,
    no ``(+)``), manager.c drops the first one's filters when it reads the
    second: the last section's lines are the user's (the sandbox's session
    got only the second one's events). ``[router](+)`` adds to the first
    such section above it.

    Asterisk copies a template's lines into ``[user](base)`` when it reads that
    header, so only the first ``[base]`` section above it counts (with what
    its ``(+)`` sections added above the header), and a template of a
    template too: the inheritance is walked back through the file, each
    section once, so a file of a few MB is read in a time bounded by its size.
    """
    sections: list[_Section] = []
    includes: list[str] = []
    errors: list[str] = []
    depth = 0  # inside a ;-- --; block comment, how deep (config.c: below 0 too)
    for number, raw in enumerate(text.split("\n"), 1):  # fgets: only \n ends a line
        if number == 1:
            raw = raw.removeprefix("\ufeff")  # config.c skips a UTF-8 BOM
        raw = raw.split("\0", 1)[0]  # C strings: a NUL ends the line
        if len(raw) * 4 >= _LINE_BYTES and len(raw.encode()) >= _LINE_BYTES:
            continue  # config.c: 'Line N too long, skipping'
        line, depth = _uncommented(raw, depth)
        if depth > _NEST_MAX:
            errors.append(
                f"line {number}: more than {_NEST_MAX} ';--' comments open: config.c "
                "logs 'Maximum nest limit of 128 reached.' for ever and reads no further"
            )
            break
        line = line.strip(_C_SPACE)
        if not line:
            continue
        if line.startswith("#"):
            word = _DIRECTIVE.match(line, 1)
            argument = line[word.end() :] if word is not None else ""
            if (
                word is not None
                and word.group().lower() in ("include", "tryinclude", "exec")
                and argument.strip(_C_SPACE)
            ):
                includes.append(line)
            continue
        if line.startswith("["):
            section = _header(line, number, bool(includes))
            if isinstance(section, str):
                errors.append(section)
                break  # config.c stops reading the file
            sections.append(section)
            continue
        if not sections:
            errors.append(
                f"line {number}: a line above every section (config.c: 'parse error: "
                "No category context')"
            )
            break
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip(_C_SPACE)
        value = value.removeprefix(">").strip(_C_SPACE)
        if key.lower() in ("read", "write", *_GENERAL_KEYS):  # manager.c: strcasecmp
            sections[-1].classes.append((key.lower(), value))
        if key.startswith("eventfilter"):  # manager.c: ast_begins_with, case counts
            sections[-1].lines.append(f"{key}={value}")
            refusal = _refused(f"{key}={value}")
            if refusal is not None and refusal.crashes:
                sections[-1].crashes.append(f"line {number}: {f'{key}={value}'[:120]}")
    # A category: the sections that make it, its header first, then each
    # [name](+) that adds to it. Asterisk keeps them in the file's order.
    by_name: dict[str, list[_Category]] = {}
    of: list[_Category | None] = []  # each section's category
    # By name, where the first category that is no template may be: a
    # category turns into a template, never back, so the search goes on from
    # there and the loop stays linear in the file.
    open_from: dict[str, int] = {}
    for i, section in enumerate(sections):
        name = _folded(section.name)
        template = "!" in section.options
        for base in section.options:
            if (
                base != "!"
                and not base.startswith("+")
                and not _named(by_name, base)
                and not section.included
            ):
                errors.append(
                    f"line {section.at}: [{section.name}]({base}) inherits from no section "
                    f"[{base}] above it (config.c: 'Inheritance requested, but category "
                    f"'{base}' does not exist')"
                )
        same = by_name.setdefault(name, [])
        category: _Category | None
        if not any(o.startswith("+") for o in section.options):
            category = _Category([i], template)
            same.append(category)
            by_name.setdefault(_FIRST, [category])
        else:  # config.c: added to the first category of that name that is no template
            at = open_from.get(name, 0)
            while at < len(same) and same[at].template:
                at += 1
            open_from[name] = at
            category = same[at] if at < len(same) else None
            if category is not None:
                category.parts.append(i)
                category.template |= template
            elif not section.included:
                errors.append(
                    f"line {section.at}: [{section.name}](+) adds to no section "
                    f"[{section.name}] above it that is not a template (config.c: 'Category "
                    f"addition requested, but category '{section.name}' does not exist')"
                )
        of.append(category)
    # manager.c reads every user's lines, [general] and templates being none:
    # a line Asterisk dies of is fatal in any of them.
    every = [
        c
        for name, same in by_name.items()
        if name not in ("general", _FIRST)
        for c in same
        if not c.template
    ]
    crashes = tuple(
        line
        for i in sorted(_inherited(sections, by_name, [i for c in every for i in c.parts]))
        for line in sections[i].crashes
    )
    errors.sort(key=lambda error: int(error.split(" ", 2)[1].rstrip(":")))
    # [general] disabledevents: manager.c reads it from every [general] section
    # in turn, the last one set wins.
    general_keys = {
        key: value
        for section in sections
        if _folded(section.name) == "general"
        for key, value in section.classes
        if key in _GENERAL_KEYS
    }
    if _folded(user) == "general":  # manager.c: [general] is no user
        general = UserSection([], includes, (), tuple(errors), crashes, True)
        return (general if crashes else None), general_keys
    users = [c for c in by_name.get(_folded(user), ()) if not c.template]
    if not users:
        if errors or crashes or includes:
            return UserSection([], includes, (), tuple(errors), crashes, True), general_keys
        return None, general_keys
    own = users[-1]  # manager.c drops a user's filters at each of its sections
    order = sorted(_inherited(sections, by_name, own.parts))
    lines = [line for i in order for line in sections[i].lines]
    names = (_head(sections, of[i]) for i in order if of[i] is not own)
    templates = tuple(dict.fromkeys(name for name in names if name))
    # A user's read and write stay from an earlier section of its name that
    # set them (manager.c resets only the filters there), so every one counts.
    last = {
        key: value
        for category in users
        for i in sorted(_inherited(sections, by_name, category.parts))
        for key, value in sections[i].classes
        if key not in _GENERAL_KEYS
    }
    last.update(general_keys)
    return UserSection(lines, includes, templates, tuple(errors), crashes), last


#: manager.c's ``perms`` labels, in its order (``all`` is every one).
_CLASS_LABELS = (
    "system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf",
    "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test", "security",
    "message", "all", "none",
)  # fmt: skip
#: The classes callrouter cannot do without (docs/asterisk.md, the manager
#: user), with what is lost.
_NEEDED = {
    "read": {
        "call": "the call tracker's events (Newchannel, Hangup, bridges) and CEL never arrive",
        "dialplan": "no Newexten arrives: every Redirect is reported unconfirmed, "
        "and the prefetch never starts",
        "user": "no routing request (UserEvent) arrives: no call is routed",
    },
    "write": {
        "call": "Asterisk refuses Redirect: no call is routed",
        "reporting": "Asterisk refuses CoreShowChannels and ShowDialPlan: calls waiting "
        "after a gap are not routed and the dialplan is not checked",
        "user": "Asterisk refuses UserEvent: the live-instance heartbeat is not sent",
    },
}
#: Write classes the manager user must never have (docs/asterisk-ajam.md).
_NEVER = ("command", "config", "all")


def asterisk_classes(value: str) -> set[str]:
    """The classes manager.c's ``get_perm`` makes of a ``read`` or ``write``
    value: each label ``ast_instring`` finds in it. That compares every item
    but the last by the item's own length (``strncmp``), so an item is taken
    for each label it begins (``cal`` is ``call``; an empty one, ``a,,b``, for
    every label) and the last item must be the label exactly; no item is
    stripped, so ``call, dialplan`` is ``call`` alone (on the sandbox,
    ``manager show user`` then said ``read perm: call``)."""
    items = value.split(",")
    found: set[str] = set()
    for label in _CLASS_LABELS:
        for number, item in enumerate(items):
            last = number == len(items) - 1
            if (item == label) if last else label.startswith(item):
                found.add(label)
                break
    if "all" in found:
        found.update(label for label in _CLASS_LABELS if label != "none")
    return found


def compare_classes(
    user: str, read: str | None, write: str | None, *, file: str = "manager.conf"
) -> list[ConfFinding]:
    """What ``[user]``'s ``read`` and ``write`` values (:func:`section_classes`)
    lack of what callrouter needs (a ``fail``), or have that it must not (an
    ``advice``); nothing when they are right. No AMI action tells a session
    its read classes, so this is the one way to see a missing ``read =
    dialplan`` before calls."""
    findings: list[ConfFinding] = []
    for kind, value in (("read", read), ("write", write)):
        have = asterisk_classes(value) if value is not None else set()
        missing = [name for name in _NEEDED[kind] if name not in have]
        shown = f"{kind} = {value}" if value is not None else f"has no {kind} line and"
        if missing:
            spaced = [
                item
                for item in (value or "").split(",")
                if item != item.strip(_C_SPACE) and item.strip(_C_SPACE) in missing
            ]
            why = "; ".join(f"{name}: {_NEEDED[kind][name]}" for name in missing)
            text = (
                f"{file} [{user}] {shown} lacks {', '.join(missing)} ({why}): add "
                f"{'them' if len(missing) > 1 else 'it'} to the {kind} line, then "
                "`asterisk -rx 'manager reload'` and restart callrouter; "
                f"`asterisk -rx 'manager show user {user}'` shows the classes Asterisk took"
            )
            if spaced:
                text += (
                    f" (Asterisk reads {', '.join(repr(i) for i in spaced)} as no class: "
                    "it does not strip the items, so write them without spaces after "
                    "the commas)"
                )
            findings.append(ConfFinding("fail", text))
        if kind == "write" and value is not None:
            risky = ["all"] if "all" in have else [n for n in _NEVER if n in have]
            if risky:
                findings.append(
                    ConfFinding(
                        "advice",
                        f"{file} [{user}] {shown} gives {', '.join(risky)}, which callrouter "
                        "never needs and which let a leaked secret run CLI commands or "
                        "rewrite the configuration: remove "
                        f"{'them' if len(risky) > 1 else 'it'} "
                        "(docs/asterisk-ajam.md, least privilege)",
                    )
                )
    return findings


def _inherited(
    sections: list[_Section], by_name: dict[str, list[_Category]], parts: list[int]
) -> set[int]:
    """The sections ``parts`` and those they inherit lines from, as config.c
    copies them (each section once: linear in the file)."""
    reached = set(parts)
    stack = list(parts)
    while stack:
        at = stack.pop()
        for base in sections[at].options:
            if base == "!" or base.startswith("+"):
                continue
            # config.c: the first category of that name, template or not, if
            # it is above the header.
            named = _named(by_name, base)
            for i in named[0].parts if named else ():
                if i < at and i not in reached:  # only what the file has above it
                    reached.add(i)
                    stack.append(i)
    return reached


def _named(by_name: dict[str, list[_Category]], base: str) -> list[_Category] | None:
    """The categories an inherited name finds (config.c's ``category_get_sep``):
    those of that name, without regard to case; an empty name, ``[x]()``,
    matches any category, so the file's first."""
    return by_name.get(_folded(base) if base else _FIRST)


def _header(line: str, number: int, included: bool) -> _Section | str:
    """A section header as config.c's ``process_text_line`` reads it, or why
    Asterisk refuses the whole file at it: the name runs to the first ``]``
    and the options, when a ``(`` follows it at once, to the first ``)``;
    neither is stripped (``[router](!, base)`` inherits `` base``, which no
    section is) and what follows is left out (``[router] (!)`` is the user
    ``router``, no template)."""
    close = line.find("]")
    if close < 0:
        return f"line {number}: no closing ']' (config.c: 'parse error: no closing ']'')"
    name, rest = line[1:close], line[close + 1 :]
    options: tuple[str, ...] = ()
    if rest.startswith("("):
        end = rest.find(")")
        if end < 0:
            return f"line {number}: no closing ')' (config.c: 'parse error: no closing ')'')"
        options = tuple(rest[1:end].split(","))
    return _Section(name, options, [], number, included)


def _head(sections: list[_Section], category: _Category | None) -> str:
    """A category's name as its header spells it."""
    return sections[category.parts[0]].name if category is not None else ""


#: ASCII letters to lower case, as C's ``strcasecmp`` compares them (no other).
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _folded(name: str) -> str:
    """A section name as Asterisk compares it (``strcasecmp``): ``Router`` is ``router``."""
    return name.translate(_ASCII_LOWER)


def _uncommented(raw: str, depth: int) -> tuple[str, int]:
    """``raw`` without its comments, and the ``;-- --;`` depth after it, as
    config.c's ``config_text_file_load`` reads them: the blocks nest; a
    backslash keeps a semicolon, in a comment too (``\\;--`` opens none); a
    line that begins inside a block is read from where the block closes.
    config.c does not check that a ``--;`` closes a block: outside one it
    is no comment (it stays in the line) and takes the depth below 0, and
    every later line is a comment until a ``;--`` brings it back to 0
    (seen on the sandbox: the sections below such a line were no users).
    Past :data:`_NEST_MAX` the depth is returned above it: config.c then
    loops for ever."""
    out: list[str] = []
    keep = depth == 0  # config.c's process_buf: this line is read
    at = 0  # config.c's new_buf: where the next ';' is looked for
    piece = 0  # where the text not yet in ``out`` begins
    while (semi := raw.find(";", at)) >= 0:
        if semi > at and raw[semi - 1] == "\\":  # escaped: the ';' is text
            if keep:
                out.append(raw[piece : semi - 1])
            piece, at = semi, semi + 1
        elif raw.startswith("--", semi + 1) and not raw.startswith("-", semi + 3):
            if depth >= _NEST_MAX:
                return "", depth + 1
            if keep:
                out.append(raw[piece:semi])
            keep, depth, at = False, depth + 1, semi + 3
        elif semi >= at + 2 and raw.startswith("--", semi - 2):
            depth, at = depth - 1, semi + 1
            if depth == 0:  # read on from here, after what was kept before the block
                keep, piece = True, at
        elif depth == 0:
            if keep:
                out.append(raw[piece:semi])
            return "".join(out), depth
        else:
            at = semi + 1
    if keep:
        out.append(raw[piece:])
    return "".join(out), depth


def _refused(line: str) -> _Refusal | None:
    """Why Asterisk 22 adds no filter for ``line`` (``manager_add_filter`` in
    main/manager.c logs a WARNING and goes on without it), or None.

    An advanced line's options are the text after the key's first ``(``,
    which must end in ``)``, cut at spaces, commas and ``)`` (``strtok_r``),
    each known by its prefix (``strncmp``: ``names(X)`` is ``name``) and its
    value compared as written (``action(Include)`` is unknown). An advanced
    line has no method unless it says one, and a value then makes it refused
    (``method can't be 'none' with a filter pattern``), as does an empty
    value with a method; a legacy line needs a value. A ``!`` before the
    value is taken off first (it excludes). An option ``name``, ``header`` or
    ``method`` with no ``(`` is no refusal: Asterisk dies of it
    (:attr:`_Refusal.crashes`).
    """
    key, _, value = line.partition("=")
    pattern = value[1:] if value.startswith("!") else value
    start = key.find("(")
    if start < 0:
        return None if pattern else _Refusal("a legacy filter with no pattern")
    if filter_options_crash(key[start + 1 :]):
        return _Refusal(
            "an option name, header or method with no '(': Asterisk 22 dies of it (a "
            "segfault in manager_add_filter) at its next manager reload or start",
            crashes=True,
        )
    options = key[start + 1 :].strip()
    if not options.endswith(")"):
        return _Refusal("its options are not formatted correctly (they must end with ')')")
    found: set[str] = set()
    method = "none"
    for option in re.split(r"[ ,)]+", options):
        if not option:
            continue
        name = next((known for known in _OPTIONS if option.startswith(known)), None)
        if name is None:
            return _Refusal(f"filter option {option[:40]!r} is unknown")
        paren = option.find("(")
        given = option[paren + 1 :].strip() if paren >= 0 else ""
        if not given:
            return _Refusal(f"'{name}' parameter not formatted correctly")
        if name == "action" and given not in ("include", "exclude"):
            return _Refusal(f"'action' option {given[:40]!r} is unknown")
        if name == "method":
            if given not in _METHODS:
                return _Refusal(f"'method' option {given[:40]!r} is unknown")
            method = given
        found.add(name)
    if not found:
        return _Refusal("no action, name, header, or method option found")
    if not pattern and method != "none":
        return _Refusal(f"method can't be '{method}' with no filter pattern")
    if pattern and method == "none":
        return _Refusal(
            "method can't be 'none' with a filter pattern (an advanced line with a value "
            "must name its method)"
        )
    if not found & {"name", "header"} and method == "none":
        return _Refusal("no name or header option found and no filter pattern")
    return None


def _parse(line: str) -> tuple[bool, list[_Atom] | None, str | None]:
    """(include?, its atoms in callrouter's form or None, a legacy regex or
    None) of one ``eventfilter`` line, read as manager.c's
    ``manager_add_filter`` reads it: an option or value in another case
    (``action(Include)``) is one Asterisk refuses, a line not compared."""
    key, _, value = line.partition("=")
    criteria = _KEY.fullmatch(key)
    assert criteria is not None
    if criteria.group("criteria") is None:  # legacy: a regex, ! to exclude
        exclude = value.startswith("!")
        pattern = value[1:] if exclude else value
        return not exclude, None, pattern if _tame(pattern) else None
    parts: dict[str, str] = {}
    for part in criteria.group("criteria").split(","):
        matched = _PART.fullmatch(part.strip())
        if matched is None:
            return True, None, None
        parts[matched.group("name")] = matched.group("value")
    action = parts.get("action")
    if value.startswith("!"):  # manager.c drops it; it excludes unless action() says
        action, value = action or "exclude", value[1:]
    if action not in (None, "include", "exclude"):  # Asterisk adds no such filter
        return True, None, None
    include = action != "exclude"
    event = parts.get("name")
    if event is None or set(parts) - {"action", "name", "header", "method"}:
        return include, None, None
    header = parts.get("header")
    if header is None:
        return include, ([(event, "", "")] if value == "" else None), None
    method = parts.get("method", "none")
    if method == "exact":
        return include, [(event, header, value)], None
    regex = re.fullmatch(r"\^\(([A-Za-z0-9_|]+)\)\$", value) if method == "regex" else None
    if regex is not None:
        return include, [(event, header, v) for v in regex.group(1).split("|")], None
    return include, None, None


def _atoms(selection: EventSelection) -> dict[_Atom, str]:
    """What callrouter asks for, by atom, with the line that asks for it."""
    wanted: dict[_Atom, str] = {}
    for key in selection.include_filters():
        if isinstance(key, HeaderFilter):
            for value in sorted(key.values):
                single = HeaderFilter(key.event, key.header, frozenset({value}))
                wanted[(key.event, key.header, value)] = _line(single)
        else:
            wanted[(key, "", "")] = f"eventfilter(action(include),name({key}))="
    return wanted


def _line(key: HeaderFilter) -> str:
    return f"eventfilter({key.criteria})={key.expression}"


def _legacy_matches(regex: str, event: str) -> bool:
    """A legacy filter (:func:`_tame`) tried on the event's first line."""
    return re.search(regex, f"Event: {event}") is not None


def _tame(regex: str) -> bool:
    """Whether a legacy filter's regex is tried at all: one Python compiles, in
    which Python's reading is Asterisk's (no POSIX class such as
    ``[[:alpha:]]``, which Python reads as another set), and that cannot
    backtrack for ever (``(.*)*x`` held check on one line for good: Python's
    ``re`` has no time limit). The others are lines not compared, told as such.

    Nor one in Python's own syntax, which glibc's ``regcomp`` (Asterisk's,
    ``REG_EXTENDED``) refuses or reads otherwise: ``(?i)``, ``(?:...)`` and
    the like (refused: Asterisk adds no filter), a backslash in a bracket
    expression (``[\\w]`` is a backslash or a ``w`` there), an escaped letter
    or digit other than the GNU ones both read alike (``\\A`` is an ``A``)."""
    if len(regex) > _REGEX_MAX or any(posix in regex for posix in ("[:", "[=", "[.")):
        return False
    if "(?" in regex or ("\\" in regex and "[" in regex):
        return False
    if any(
        (char.isalnum() and char not in "wWsSbB") or char in "<>`'"
        for char in _ESCAPED.findall(regex)
    ):
        return False
    try:
        with warnings.catch_warnings():  # "possible nested set": not Asterisk's reading
            warnings.simplefilter("error")
            re.compile(regex)
            parsed = importlib.import_module("re._parser").parse(regex)
        loops = _loops(list(parsed), looped=False)
    except Exception:  # re.error, a FutureWarning, RecursionError: not tried
        return False
    return loops is not None and loops <= _LOOPS_MAX


def _loops(items: list[tuple[Any, Any]], *, looped: bool) -> int | None:
    """The loops of a parsed regex (``re._parser``'s tree), None for a loop or
    an alternative inside a loop (``(.*)*``, ``(.|\\s)*``: exponential)."""
    count = 0
    for op, value in items:
        name = str(op)
        inner: list[list[tuple[Any, Any]]] = []
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            if value[1] > 1:
                if looped:
                    return None
                found = _loops(list(value[2]), looped=True)
                if found is None:
                    return None
                count += found + 1
                continue
            inner = [value[2]]
        elif name == "BRANCH":
            if looped:
                return None
            inner = list(value[1])
        elif name == "SUBPATTERN":
            inner = [value[3]]
        elif name in ("ASSERT", "ASSERT_NOT"):
            inner = [value[1]]
        elif name == "ATOMIC_GROUP":
            inner = [value]
        elif name == "GROUPREF_EXISTS":
            inner = [branch for branch in value[1:] if branch is not None]
        for sub in inner:
            found = _loops(list(sub), looped=looped)
            if found is None:
                return None
            count += found
    return count


def _covered(atom: _Atom, have: set[_Atom], legacy: Iterable[str]) -> bool:
    event, header, value = atom
    if (event, "", "") in have or atom in have:
        return True
    if header and any(h[0] == event and h[1] == header and h[2] == value for h in have):
        return True
    return any(_legacy_matches(regex, event) for regex in legacy)


def _shown(lines: Iterable[str]) -> tuple[str, ...]:
    listed = list(lines)
    if len(listed) <= _SHOWN:
        return tuple(listed)
    return (*listed[:_SHOWN], f"; ... and {len(listed) - _SHOWN} more")


def compare_eventfilters(
    user: str,
    lines: list[str],
    selection: EventSelection,
    templates: tuple[str, ...] = (),
    *,
    suggested_flags: str = "",
    file: str = "manager.conf",
) -> list[ConfFinding]:
    """What to change in ``[user]``'s ``eventfilter`` ``lines`` (from
    :func:`section_eventfilters`) so that they let through what ``selection``
    asks for, and no more. A ``fail`` drops events callrouter needs. The
    findings name the ``templates`` the lines came from too: a line to
    remove may be in one of them. ``suggested_flags`` (`` --username X``)
    go into the command a finding suggests, so that it prints the lines for
    the same user. Lines Asterisk refuses (:func:`_refused`) filter nothing:
    they are told apart and the others compared as Asterisk applies them.
    ``file`` names the file the section is in: an included one
    (``manager_custom.conf`` on FreePBX, which rewrites manager.conf) is
    where the lines go, not the manager.conf the findings said."""
    refused: list[tuple[str, str]] = []
    kept: list[str] = []
    for line in lines:
        why = _refused(line)
        if why is None:
            kept.append(line)
        else:
            refused.append((line, why.why))
    findings = _compare(
        user, kept, selection, templates, suggested_flags=suggested_flags, file=file
    )
    if not refused:
        return findings
    section = f"{file} [{user}]"
    told = ConfFinding(
        "advice",
        f"{section}: Asterisk refuses {counted(len(refused), 'eventfilter line')} (main/manager.c "
        f"logs a WARNING at each manager reload and adds no filter; {refused[0][1]}"
        + (", and so on" if len(refused) > 1 else "")
        + "): they filter nothing; fix or remove them",
        _shown(f"{line}  ; {why}" for line, why in refused),
    )
    return [told, *(f for f in findings if f.level != "ok" or kept)]


def _compare(
    user: str,
    lines: list[str],
    selection: EventSelection,
    templates: tuple[str, ...],
    *,
    suggested_flags: str,
    file: str,
) -> list[ConfFinding]:
    then = "then `asterisk -rx 'manager reload'` and restart callrouter"
    includes: set[_Atom] = set()
    include_lines: dict[_Atom, str] = {}
    legacy: list[str] = []
    excludes: list[tuple[str, list[_Atom] | None, str | None]] = []
    unread: list[str] = []
    for line in lines:
        include, atoms, regex = _parse(line)
        if not include:
            excludes.append((line, atoms, regex))
        elif atoms is not None:
            includes.update(atoms)
            for atom in atoms:
                include_lines.setdefault(atom, line)
        elif regex is not None:
            legacy.append(regex)
        else:
            unread.append(line)
    findings: list[ConfFinding] = []
    section = f"{file} [{user}]"
    if templates:
        named = ", ".join(f"[{name}]" for name in templates)
        section += f" (with its template{'s' if len(templates) > 1 else ''} {named})"
    if selection.names is None:
        if includes or legacy or unread:
            findings.append(
                ConfFinding(
                    "fail",
                    f'{section}: callrouter reads every event ([asterisk] events = "all", or '
                    "a plugin that reads every event), but the section's eventfilter lines "
                    f"let only some through: remove them, {then}",
                    _shown(line for line in lines if _parse(line)[0]),
                )
            )
        return findings + _excluded(section, excludes, None, then)
    wanted = _atoms(selection)
    needed = {atom[0] for atom in wanted}
    if not lines:
        return [
            ConfFinding(
                "advice",
                f"{section} has no eventfilter lines: unless it may send Filter (write = "
                "system), callrouter gets every event of the user's read classes; add "
                f"these (`callrouter check --manager-conf{suggested_flags}`), then "
                "`asterisk -rx 'manager "
                "reload'` and restart callrouter",
                _shown(selection.manager_conf_lines()),
            )
        ]
    if not (includes or legacy or unread):
        # Only excludes: every other event of the user's read classes passes.
        findings.append(
            ConfFinding(
                "advice",
                f"{section}: its eventfilter lines only exclude, so every other event of "
                "the user's read classes passes (unless it may send Filter, write = "
                f"system); add these (`callrouter check --manager-conf{suggested_flags}`), "
                f"{then}",
                _shown(selection.manager_conf_lines()),
            )
        )
    if includes or legacy or unread:  # with no include line, every event passes
        missing = [atom for atom in wanted if not _covered(atom, includes, legacy)]
        if missing and not unread:
            names = sorted({atom[0] for atom in missing})
            findings.append(
                ConfFinding(
                    "fail",
                    f"{section}: its eventfilter lines filter out events callrouter now "
                    f"needs ({', '.join(names)}; a rule or plugin added since they were "
                    f"written): add these lines, {then}",
                    _shown(wanted[atom] for atom in missing),
                )
            )
        elif missing:
            findings.append(
                ConfFinding(
                    "advice",
                    f"{section}: no line in callrouter's form lets through "
                    f"{', '.join(sorted({atom[0] for atom in missing}))}; unless the lines "
                    "not compared (below) do, add these",
                    _shown(wanted[atom] for atom in missing),
                )
            )
    stale = [
        line
        for atom, line in include_lines.items()
        if atom not in wanted
        and not (atom[1] == "" and atom[0] in needed and _partly(atom, wanted))
    ]
    wider = [
        line
        for atom, line in include_lines.items()
        if atom[1] == "" and atom[0] in needed and _partly(atom, wanted)
    ]
    if stale:
        findings.append(
            ConfFinding(
                "advice",
                f"{section}: {len(stale)} eventfilter line(s) let through events callrouter "
                f"no longer asks for: remove them, {then}",
                _shown(dict.fromkeys(stale)),
            )
        )
    if wider:
        findings.append(
            ConfFinding(
                "advice",
                f"{section}: these lines let through every event of a name callrouter "
                "reads only a few of (Asterisk writes them all): replace them with the "
                f"header lines `callrouter check --manager-conf{suggested_flags}` prints",
                _shown(dict.fromkeys(wider)),
            )
        )
    if unread:
        findings.append(
            ConfFinding(
                "advice",
                f"{section}: {len(unread)} eventfilter line(s) not in a form callrouter "
                "compares (left as they are; check them by hand)",
                _shown(unread),
            )
        )
    findings.extend(_excluded(section, excludes, wanted, then))
    if not findings:
        findings.append(
            ConfFinding(
                "ok",
                f"{section}: its {len(lines)} eventfilter line(s) let through what "
                "callrouter asks for, and no more",
            )
        )
    return findings


def _partly(atom: _Atom, wanted: dict[_Atom, str]) -> bool:
    """A whole-name line where callrouter asks for only some of the event."""
    return atom not in wanted and any(w[0] == atom[0] and w[1] for w in wanted)


def _catalog_events() -> tuple[str, ...]:
    """Every event Asterisk 22 documents (router/ami/catalog.json)."""
    from router.ami.catalog import load_catalog

    return tuple(load_catalog().events)


def _excluded(
    section: str,
    excludes: list[tuple[str, list[_Atom] | None, str | None]],
    wanted: dict[_Atom, str] | None,
    then: str,
) -> list[ConfFinding]:
    """Exclude lines that drop an event callrouter needs (``wanted`` None: it
    needs every event).

    A header line (``name(E),header(H)``, ``method(exact)`` or
    ``^(A|B)$``) drops only the ``E`` events whose ``H`` has an excluded
    value (manager.c compares the header's value, not the event): it fails
    only for a value callrouter asks for, or when callrouter reads every
    ``E``. When callrouter asks for ``E`` by another header, whether the
    line drops one it needs depends on both headers' values: advice, as
    for an exclude line not in a form compared (``method(starts_with)``, a
    legacy regex not tried), which was left out in silence.
    """
    dropping: list[str] = []
    names: set[str] = set()
    maybe: list[str] = []
    maybe_names: set[str] = set()
    unread: list[str] = []
    needed = None if wanted is None else {atom[0] for atom in wanted}
    for line, atoms, regex in excludes:
        hit: set[str] = set()
        doubt: set[str] = set()
        if atoms is not None:
            for event, header, value in atoms:
                if wanted is None:
                    hit.add(event)
                elif not header or (event, "", "") in wanted or (event, header, value) in wanted:
                    hit |= {event} & (needed or set())
                elif any(w[0] == event and w[1] != header for w in wanted):
                    doubt.add(event)
        elif regex is not None:
            # Reading every event, callrouter needs what the line drops: the
            # catalog's events it matches are named (it said "((any))").
            among = _catalog_events() if needed is None else needed
            hit = {n for n in among if _legacy_matches(regex, n)}
            if needed is None and not hit:
                hit = {"events the AMI catalog does not list"}
        else:
            unread.append(line)
        if hit:
            dropping.append(line)
            names |= hit
        elif doubt:
            maybe.append(line)
            maybe_names |= doubt
    findings: list[ConfFinding] = []
    if dropping:
        findings.append(
            ConfFinding(
                "fail",
                f"{section}: exclude lines drop events callrouter needs "
                f"({', '.join(sorted(names))}): remove them, {then}",
                _shown(dropping),
            )
        )
    if maybe:
        findings.append(
            ConfFinding(
                "advice",
                f"{section}: exclude lines on a header callrouter does not select "
                f"{', '.join(sorted(maybe_names))} by may drop some it needs (those whose "
                "header has the excluded value): check them by hand",
                _shown(maybe),
            )
        )
    if unread:
        findings.append(
            ConfFinding(
                "advice",
                f"{section}: {len(unread)} exclude line(s) not in a form callrouter "
                "compares: they may drop events callrouter needs (check them by hand)",
                _shown(unread),
            )
        )
    return findings
