"""``callrouter check [PATHS] [--config PATH]``: validate like a compiler would.

It reads router.toml as ``callrouter run`` does (``./router.toml`` unless
``--config`` names another): every ``[asterisk]``, ``[router]`` and
``[plugins]`` key, every plugin's table, and the rules against the names the
plugins it selects register, without logging in to Asterisk. Every problem
is printed on its own line as ``file:line: rule 'x': message`` (the format
editors and CI understand); the exit code is 0 when clean and 1 otherwise,
so ``callrouter check`` can gate a deploy or a git hook.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.builtin.timefuncs import rules_timezone
from router.commands._connect import add_asterisk_flags, asterisk_flags, asterisk_overrides
from router.commands._conversions import state_conversions
from router.commands._offline import Offline, load_offline
from router.commands._values import a_moment, a_path, a_pattern, a_time_zone, usage_error
from router.config import COMMAND_LINE, DEFAULT_CONFIG_PATH, env_unset
from router.dialplan_lint import Finding
from router.errors import ConfigError, ConfigUnreadable
from router.logsafe import escape_controls
from router.rules import load_rules
from router.rules.cron import next_runs
from router.rules.explain import wall_time
from router.rules.ruleset import RuleSet
from router.wording import counted

if TYPE_CHECKING:  # pragma: no cover
    from router.manager_conf import UserSection

__all__ = ["config_overrides", "plugin_registry", "register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="validate router.toml and the rule files",
        description="Validate router.toml (every key and plugin table) and the rule files "
        "against the plugins it selects, without Asterisk (unless --asterisk); print "
        "every error as file:line. Exit code 0: clean, 1: errors, 2: a wrong command line.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=a_path,
        metavar="PATH",
        help="rule files or folders (default: router.toml's [router] rules)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="settings file (default: ./router.toml when there is one)",
    )
    parser.add_argument(
        "--manager-conf",
        action="store_true",
        help="when clean, also print the eventfilter lines for the user's section of "
        "Asterisk's manager.conf, for router.toml's rules and plugins "
        "(docs/asterisk.md, Event filtering)",
    )
    parser.add_argument(
        "--manager-conf-file",
        type=Path,
        metavar="FILE",
        help="when clean, also compare the eventfilter lines of the user's section of "
        "this manager.conf (e.g. /etc/asterisk/manager.conf) with the ones callrouter "
        "needs, and say which to add or remove (docs/asterisk.md, Event filtering)",
    )
    parser.add_argument(
        "--asterisk",
        action="store_true",
        help="also log in to Asterisk as `callrouter run` would and check its side: "
        "the Redirect permission, the loaded [callrouter-inbound] dialplan, UserEvents "
        "reaching the user, a live callrouter (docs/asterisk.md, Checking the setup)",
    )
    connection = parser.add_argument_group(
        "connection, for --asterisk and --manager-conf (override router.toml [asterisk])"
    )
    add_asterisk_flags(connection)
    parser.add_argument(
        "--tz", type=a_time_zone, help="instead of router.toml's [plugins.timefuncs] timezone"
    )
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="when clean, also print each schedule: rule's next runs, in the rules' zone",
    )
    parser.add_argument(
        "--at",
        type=a_moment,
        help='--schedules from this time, "YYYY-MM-DD HH:MM" in the rules\' zone (default: now)',
    )
    parser.add_argument(
        "--location-pattern",
        type=a_pattern,
        help="instead of router.toml's [router] location_pattern: literal "
        "context/exten values are checked against it",
    )
    parser.set_defaults(func=run, parser=parser)


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The command line's replacements for router.toml keys (None: not given)."""
    overrides: dict[str, object] = {}
    if hasattr(args, "url"):  # `check`'s, not `explain`'s: read as `ami` reads them
        given = asterisk_overrides(args).items()
        overrides.update((key, value) for key, value in given if value is not None)
    if getattr(args, "tz", None) is not None:
        overrides["plugins.timefuncs"] = {"timezone": args.tz}
    if getattr(args, "location_pattern", None) is not None:
        overrides["router.location_pattern"] = args.location_pattern
    return overrides


def plugin_registry(args: argparse.Namespace, *, failures_printed: bool = False) -> Offline:
    """The engine's registry as router.toml configures it (raises ConfigError);
    ``failures_printed``: the caller prints its problems (load_offline)."""
    flags = {"router.location_pattern": "--location-pattern"}
    if hasattr(args, "url"):
        flags.update(asterisk_flags(args))
    return load_offline(
        args.config,
        overrides=config_overrides(args),
        flags=flags,
        failures_printed=failures_printed,
    )


def run(args: argparse.Namespace) -> int:
    # A flag's value is checked as the parser reads it (router/commands/_values.py:
    # its usage, exit 2), before router.toml or the rules are read.
    try:
        offline = plugin_registry(args, failures_printed=True)
    except ConfigError as exc:
        # A connection flag's value (--url ftp://x, --ca-file NOT-A-PEM), or a
        # settings file that could not be read at all (--config /nonexistent,
        # a folder, not TOML): nothing in it was checked, so there is no
        # finding to list; as every other command says it.
        if isinstance(exc, ConfigUnreadable) or str(exc).startswith(f"{COMMAND_LINE}: "):
            print(f"callrouter check: error: {escape_controls(str(exc))}", file=sys.stderr)
            return 1
        print(exc)
        # Without a router.toml the flags were all there was to check.
        here = "router.toml" if DEFAULT_CONFIG_PATH.is_file() else COMMAND_LINE
        print(f"{args.config or here}: 1 error (configuration; rules not checked)")
        return 1
    for warning in offline.warnings:
        print(f"callrouter check: warning: {warning}", file=sys.stderr)
    if args.at is not None:
        start = _start(args.at, rules_timezone(offline.config))
        if isinstance(start, str):  # what was typed: a wrong command line
            return usage_error(args, "check", start)
    # The manager.conf compared below, if it is: the Asterisk check then names it.
    compared: str | None = None
    paths = args.paths or [str(p) for p in offline.config.router.rules]
    ruleset = load_rules(paths, offline.registry, named_by="" if args.paths else named_by(offline))
    for problem in offline.problems:
        print(f"callrouter: {problem}")
    state = _state_dir_problem(offline)
    if state is not None:
        print(state)
    for error in ruleset.errors:
        print(error)
    for warning in ruleset.warnings:
        print(f"callrouter check: warning: {escape_controls(warning)}", file=sys.stderr)
    converts, failed = state_conversions(offline)
    for problem in failed:
        print(f"callrouter: {problem}")
    for line in converts:  # not errors: an upgrade's expected work, said beforehand
        print(f"CONVERT {line}")
    count = len(ruleset.errors) + len(offline.problems) + (state is not None) + len(failed)
    shown = " ".join(args.paths) if args.paths else _shown(offline)
    if count:
        print(f"{shown}: {counted(count, 'error')}, {counted(len(ruleset.rules), 'valid rule')}")
    else:
        print(f"{shown}: {counted(len(ruleset.rules), 'rule')} OK")
        if args.schedules or args.at is not None:
            _print_schedules(offline, ruleset, args.at)
        if args.manager_conf:
            _print_manager_conf(offline)
        if args.manager_conf_file is not None:
            ok, made = _compare_manager_conf(
                offline, args.manager_conf_file, _suggested_flags(args)
            )
            if made:  # not when the file was not read: no comparison to point at
                compared = str(args.manager_conf_file)
            if not ok:
                count += 1
    # Asterisk's side stands on its own: worth knowing while the rules are fixed.
    flags = args.url is not None and args.username is not None
    asterisk_ok = (
        _check_asterisk(
            offline, ruleset, flags=flags, suggested=_suggested_flags(args), compared=compared
        )
        if args.asterisk
        else True
    )
    return 0 if not count and asterisk_ok else 1


def _state_dir_problem(offline: Offline) -> str | None:
    """What makes `callrouter run` refuse the state folder at start, when the
    folder exists: another local user can change what it holds (a mode such as
    0777, a folder on the way others may write in). Judged for the folder's
    owner, the user the service runs as (a root shell checking the systemd
    unit's /var/lib/callrouter trusts its DynamicUser as `run` does), as
    Engine._check_state_dir judges it (router/private_dir.py)."""
    from router.private_dir import private_dir_problem

    config = offline.config
    path = config.router.state_dir
    try:
        owner = path.stat().st_uid
        if not path.is_dir():
            return None  # run says it cannot write there: not this check's
        problem = private_dir_problem(path, me=owner)
    except OSError:
        return None  # missing (run makes it 0700) or unreadable here
    if problem is None:
        return None
    where = config.where("router", "state_dir")
    return f"{where}: [router] state_dir: {problem} (docs/security.md, Local users and files)"


#: Runs shown for each schedule: rule.
_RUNS_SHOWN = 3


def _start(at: str | None, zone: tzinfo) -> datetime | str:
    """``--at`` (now when None) in ``zone``; or why not: a time its clocks
    skip (:func:`wall_time`)."""
    given = datetime.fromisoformat(at.strip()) if at is not None else None  # checked by the parser
    if given is None:
        return datetime.now(zone)
    if given.tzinfo is not None:
        return given
    try:
        return wall_time(given, zone)[0]
    except ValueError as exc:
        return f"--at {exc}"


def _print_schedules(offline: Offline, ruleset: RuleSet, at: str | None) -> None:
    """Each ``schedule:`` rule's next runs in the rules' zone, as ``run`` fires
    them (the same trigger): "when does night-mode run, and in which zone?"
    answered before the service is restarted, ``--at`` for any day."""
    if not ruleset.schedules:
        print("schedules: none (no rule has schedule:)")
        return
    # The zone the engine schedules in (with --tz, that one), timefuncs loaded or not.
    zone = rules_timezone(offline.config)
    start = _start(at, zone)
    assert not isinstance(start, str)  # a time the clocks skip was refused before
    if at is not None and start.tzinfo is zone:
        note = wall_time(start.replace(tzinfo=None), zone)[1]
        if note:  # a time the clocks show twice: which one the runs count from
            print(f"callrouter check: note: --at {note}", file=sys.stderr)
    where = {rule.name: rule.location for rule in ruleset.rules}
    for name, cron in ruleset.schedules:
        runs = ", ".join(
            when.strftime("%a %Y-%m-%d %H:%M") for when in next_runs(cron, zone, start, _RUNS_SHOWN)
        )
        # None left in the calendar cron counts (to 9999): "0 0 29 2 *" from 9997.
        runs = runs or "none before the year 10000"
        once = " (missed: run-once)" if ruleset.runs_missed_once(name) else ""
        print(f"schedule {name} [{where.get(name, '?')}] {cron!r}{once}: next {runs} ({zone})")


def _suggested_flags(args: argparse.Namespace) -> str:
    """What the ``callrouter check`` commands a finding suggests must add:
    ``--username X`` when it names the user, or they would print (or
    compare) router.toml's user's lines instead of X's."""
    username = getattr(args, "username", None)
    return f" --username {shlex.quote(username)}" if username is not None else ""


def _check_asterisk(
    offline: Offline,
    ruleset: RuleSet,
    *,
    flags: bool = False,
    suggested: str = "",
    compared: str | None = None,
) -> bool:
    """Log in as `callrouter run` would and print what Asterisk says; False
    when something there stops routing (router/commands/preflight.py).
    ``flags``: --url and --username name the Asterisk without a router.toml;
    ``suggested``: what the commands the findings suggest add (--username);
    ``compared``: the manager.conf compared above (--manager-conf-file), if any."""
    import asyncio

    from router.ami.client import ClientSettings
    from router.ami.connect import open_client
    from router.commands._connect import for_a_person
    from router.commands.preflight import check_asterisk
    from router.privileges import needed

    print()
    if offline.config.path is None and not flags:
        print(f"asterisk: {_LEVELS['fail']} no router.toml to connect with: give --config PATH")
        return False
    if offline.asterisk_secret_missing:
        print(
            f"asterisk: {_LEVELS['fail']} cannot log in: "
            + env_unset(
                offline.asterisk_secret_missing,
                "(the [asterisk] secret) is not set here",
                by="secret_env (or --secret-env)",
            )
        )
        return False

    targets, built = ruleset.redirect_targets()
    recording = offline.config.recordings is not None
    forwarding = offline.config.api is not None  # the API forwards extensions
    probes = needed(offline.config, ruleset)
    filtering = offline.config.asterisk.events == "auto"

    async def findings() -> list[Finding]:
        client = open_client(for_a_person(ClientSettings.from_config(offline.config.asterisk)))
        try:
            return await check_asterisk(
                client,
                targets=targets,
                built=built,
                recording=recording,
                forwarding=forwarding,
                probes=probes,
                filtering=filtering,
                suggested_flags=suggested,
                compared=compared,
            )
        finally:
            await client.aclose()

    found = asyncio.run(findings())
    for finding in found:
        print(f"asterisk: {_LEVELS[finding.level]} {escape_controls(finding.text)}")
    return not any(f.level == "fail" for f in found)


#: How each finding's level is printed (fixed width: the texts line up).
_LEVELS = {"ok": "OK    ", "advice": "ADVICE", "fail": "FAIL  "}
#: The largest manager.conf ``--manager-conf-file`` reads (Asterisk's own is
#: a few KB).
MAX_MANAGER_CONF_BYTES = 4 * 1024 * 1024


def _print_manager_conf(offline: Offline) -> None:
    """The lines as a manager.conf fragment, after a comment naming the user,
    and the events a global ``disabledevents`` must leave alone: Asterisk's
    sample suggests disabling ``Newexten``, which callrouter waits for."""
    selection = offline.event_selection()
    lines = selection.manager_conf_lines()
    print()
    if not lines or selection.names is None:
        print('; [asterisk] events = "all" (or a plugin that reads every event): no filters')
        return
    print(f"; the events callrouter asks for: add under [{offline.config.asterisk.username}]")
    for line in lines:
        print(line)
    print(f"; [general] disabledevents must name none of: {', '.join(sorted(selection.names))}")


def _read_manager_conf(path: Path) -> str:
    """The file's text, read whole or refused, never blocking: a FIFO hung the
    command, and one past the bound was cut short silently (its [user]
    section then told missing). OSError as read_bounded raises it."""
    from router.textfiles import read_bounded

    return read_bounded(path, MAX_MANAGER_CONF_BYTES).decode("utf-8", errors="replace")


#: Files the ``#include`` lines of a manager.conf may bring in, at most.
_MAX_INCLUDED = 20
_INCLUDE = re.compile(r"#(?:include|tryinclude)[ \t]+(?P<name>.+)", re.IGNORECASE)


#: Directory entries the patterns of one ``#include`` line may look through:
#: ``#include /*/*/*/*/*/*/*/*/*/*/*/*`` walked the whole file system (over a
#: minute, with /proc). An ``/etc/asterisk/manager.d/*.conf`` looks through its
#: folder's entries, and each matched folder's for a pattern below it.
_GLOB_ENTRIES = 20_000


class _TooBroad(Exception):
    """An ``#include`` pattern that looks through more than :data:`_GLOB_ENTRIES`."""


def _glob(pattern: str) -> list[str]:
    """``glob.glob(pattern)``, sorted, looking through at most
    :data:`_GLOB_ENTRIES` directory entries (:class:`_TooBroad` past them):
    a folder at a time, a name starting with ``.`` only for a part that does."""
    import fnmatch
    import glob
    import os

    absolute = pattern.startswith("/")
    parts = [part for part in pattern.split("/") if part]
    current = ["/" if absolute else ""]
    left = _GLOB_ENTRIES
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        found: list[str] = []
        for folder in current:
            if not glob.has_magic(part):
                path = os.path.join(folder, part)
                if os.path.lexists(path) if last else os.path.isdir(path):
                    found.append(path)
                continue
            try:
                with os.scandir(folder or ".") as entries:
                    for entry in entries:
                        left -= 1
                        if left < 0:
                            raise _TooBroad
                        if entry.name.startswith(".") and not part.startswith("."):
                            continue
                        if fnmatch.fnmatchcase(entry.name, part) and (last or entry.is_dir()):
                            found.append(os.path.join(folder, entry.name))
            except OSError:
                continue
        current = found
    if pattern.endswith("/"):  # folders only, as glob names them
        current = [f"{path}/" for path in current if os.path.isdir(path)]
    return sorted(current) if parts else []


def _included(path: Path, include: str) -> list[Path]:
    """The files an ``#include`` or ``#tryinclude`` line names, as config.c finds
    them: the name unquoted (``"..."``, ``<...>``), a relative one in the
    directory of the file (Asterisk's configuration directory, where
    manager.conf is), a pattern expanded in order; a pattern that matches
    nothing is the name itself, which cannot be read (config.c's glob with
    ``GLOB_NOCHECK``: an ``#include`` of it makes Asterisk refuse the file).
    ``#exec`` runs a program: never followed. :class:`_TooBroad` for a pattern
    that looks through more than :data:`_GLOB_ENTRIES` directory entries."""
    import glob

    match = _INCLUDE.fullmatch(include.strip())
    if match is None:
        return []
    name = match.group("name").strip(" \t").strip('<>"')
    if not name:
        return []
    target = Path(name) if Path(name).is_absolute() else path.parent / name
    if glob.has_magic(str(target)):
        matched = _glob(str(target))[:_MAX_INCLUDED]
        return [Path(p) for p in matched] if matched else [target]
    return [target]


#: How deep ``#include`` lines are followed for ``[general]`` (a file that
#: includes a file that includes ...); config.c has no bound but its stack.
_INCLUDE_DEPTH = 8


def _expanded(
    conf: Path, text: str
) -> tuple[str, list[Path], list[tuple[Path, Path, str]], list[tuple[Path, str]]]:
    """``text`` (manager.conf ``conf``) with each ``#include`` and ``#tryinclude``
    line config.c acts on replaced by the text of the files it names, as config.c
    reads them: in place, so lines with no header of their own go on the section
    above (FreePBX's ``#include manager_general_additional.conf`` in ``[general]``),
    and nested, a relative name always in ``conf``'s folder (Asterisk's
    configuration directory, where config.c looks for every relative name). At most
    :data:`_INCLUDE_DEPTH` deep and :data:`_MAX_INCLUDED` files; a file already being
    read further up (a cycle) is not read again, and one that cannot be read is left
    out. The text, the files read, in order, and those an ``#include`` (not a
    ``#tryinclude``) names that cannot be read, as (the file naming it, the file,
    why): Asterisk then refuses the whole manager.conf (measured on 22.10:
    ``The file 'missing.conf' was listed as a #include but it does not exist``,
    ``Unable to open AMI configuration manager.conf``; a reload keeps the old users),
    and the lines whose pattern looks through too much to follow (:class:`_TooBroad`),
    as (the file, the line)."""
    import os

    from router.manager_conf import include_lines

    read: list[Path] = []
    missing: list[tuple[Path, Path, str]] = []
    broad: list[tuple[Path, str]] = []

    def expand(path: Path, body: str, within: tuple[str, ...]) -> str:
        live = set(include_lines(body))
        if not live:
            return body
        out: list[str] = []
        for line in body.split("\n"):
            directive = line.split(";", 1)[0].strip()
            if directive not in live:
                out.append(line)
                continue
            out.append(";")  # the line itself, gone (its number kept)
            if len(within) >= _INCLUDE_DEPTH:
                continue
            try:
                candidates = _included(conf, directive)
            except _TooBroad:
                broad.append((path, directive))
                continue
            for candidate in candidates:
                real = os.path.realpath(candidate)
                if len(read) >= _MAX_INCLUDED or real in within:
                    continue
                try:
                    sub = _read_manager_conf(candidate)
                except OSError as exc:
                    if not directive.lower().startswith("#tryinclude"):
                        missing.append((path, candidate, str(exc.strerror or exc)))
                    continue
                read.append(candidate)
                out.append(expand(candidate, sub, (*within, real)))
        return "\n".join(out)

    return expand(conf, text, (os.path.realpath(conf),)), read, missing, broad


def _with_included(
    path: Path,
    text: str,
    user: str,
    includes: list[str],
    *,
    top: Path | None = None,
    prefix: tuple[str, ...] = (),
    within: tuple[str, ...] = (),
    looked: list[str] | None = None,
) -> tuple[Path, UserSection] | str | None:
    """The section of ``user`` in a file ``text``'s ``#include`` lines name, read
    as Asterisk reads it there: after the lines above the ``#include``, whose
    templates and sections its headers may name. The last file that has the
    user wins, as the last section does in one file. A file that lacks the user
    is looked into in turn (a file it #includes, :data:`_INCLUDE_DEPTH` deep, a
    cycle not followed; a relative name in ``top``'s folder, as config.c finds
    every one). A string: why none does; None: an included file has lines
    Asterisk refuses or dies of (told). ``prefix``: the lines read before
    ``text`` (the including files' above it)."""
    import os

    from router.manager_conf import include_lines, section_eventfilters

    top = top or path
    within = within or (os.path.realpath(path),)
    raw = text.split("\n")
    found: tuple[Path, UserSection] | None = None
    looked = [] if looked is None else looked
    live = set(includes)  # as config.c reads them: none in a comment
    for number, line in enumerate(raw):
        directive = line.split(";", 1)[0].strip()
        if directive not in live or len(looked) >= _MAX_INCLUDED:
            continue
        line = directive
        try:
            candidates = _included(top, line)
        except _TooBroad:
            continue  # told by _compare_manager_conf (_expanded)
        for candidate in candidates:
            if len(looked) >= _MAX_INCLUDED:
                break
            real = os.path.realpath(candidate)
            if real in within:
                continue  # a cycle: config.c would read it again and again
            looked.append(str(candidate))
            try:
                sub = _read_manager_conf(candidate)
            except OSError:
                continue  # told by _compare_manager_conf (_expanded)
            lines_above = (*prefix, *raw[:number])
            above = "\n".join(lines_above)
            offset = len(lines_above)
            combined = f"{above}\n{sub}" if offset else sub
            section = section_eventfilters(combined, user)
            if section is None:
                continue
            if not _told_broken(candidate, section, offset=offset):
                return None
            if not section.elsewhere:
                # Its own #include lines only, not those above it in the other file.
                before = section_eventfilters(above, user) if offset else None
                skip = len(before.includes) if before is not None else 0
                found = (candidate, section._replace(includes=section.includes[skip:]))
            elif len(within) < _INCLUDE_DEPTH and (nested := include_lines(sub)):
                deeper = _with_included(
                    candidate,
                    sub,
                    user,
                    nested,
                    top=top,
                    prefix=lines_above,
                    within=(*within, real),
                    looked=looked,
                )
                if deeper is None:
                    return None
                if not isinstance(deeper, str):
                    found = deeper
    if found is None:
        shown = ", ".join(escape_controls(name[:120]) for name in looked[:5])
        shown += ", ..." if len(looked) > 5 else ""
        return f"nor the {len(looked)} file(s) its #include lines name ({shown or 'none'})"
    return found


def _told_broken(path: Path, found: UserSection, *, offset: int = 0) -> bool:
    """Print the file's errors and crash lines (FAIL); False when it has any.
    ``offset``: the lines of the including file read before this one."""

    def shown(message: str) -> str:
        number, sep, rest = message.partition(": ")
        if offset and sep and number.startswith("line ") and number[5:].isdigit():
            return f"line {int(number[5:]) - offset}: {rest}"
        return message

    for error in found.errors:
        print(
            f"manager.conf: {_LEVELS['fail']} {path}: {escape_controls(shown(error))}: "
            "Asterisk refuses the whole file at its next reload (no manager user is read "
            "from it)"
        )
    for crash in found.crashes:
        print(
            f"manager.conf: {_LEVELS['fail']} {path}: {escape_controls(shown(crash))}: "
            "Asterisk 22 dies of this eventfilter line (a segfault in main/manager.c "
            "manager_add_filter: an option name, header or method with no '(') at its next "
            "manager reload or start, whichever user's section has it; write name(...), "
            "header(...), method(...)"
        )
    return not (found.errors or found.crashes)


def _compare_manager_conf(offline: Offline, path: Path, suggested: str = "") -> tuple[bool, bool]:
    """Print what to change in the user's eventfilter lines of manager.conf
    ``path`` (router/manager_conf.py). Returns (ok, compared): ok is False on
    a failure (events callrouter needs are filtered out, or the file cannot be
    read); compared says whether the user's lines were compared, for the
    Asterisk check's advice points at that comparison then and asks for one
    otherwise (a file not read, a user it lacks). ``suggested``: what
    the commands the findings suggest add (--username). A user the file lacks
    is looked for in the files its ``#include`` lines name (FreePBX keeps the
    admin's own users in manager_custom.conf)."""
    from router.manager_conf import (
        compare_classes,
        compare_disabled,
        compare_eventfilters,
        disabled_events,
        native_bind,
        section_classes,
        section_eventfilters,
    )

    user = offline.config.asterisk.username
    print()
    try:
        text = _read_manager_conf(path)
    except OSError as exc:
        print(f"manager.conf: {_LEVELS['fail']} cannot read {path}: {exc.strerror or exc}")
        return False, False
    found = section_eventfilters(text, user)
    if found is None:
        print(
            f"manager.conf: {_LEVELS['fail']} {path} has no [{user}] section (the manager "
            "user of router.toml [asterisk] username, or --username)"
        )
        return False, False
    if not _told_broken(path, found):
        return False, False
    # [general] as Asterisk reads it: with what the #include lines bring in.
    general, read, missing, broad = _expanded(path, text)
    for including, directive in broad:
        print(
            f"manager.conf: {_LEVELS['advice']} {escape_controls(str(including)[:120])}: "
            f"{escape_controls(directive[:120])} looks through more than "
            f"{_GLOB_ENTRIES:,} files and folders: not followed (the [general] lines "
            "and users of the files it names are not checked); name the files, or a "
            "pattern in one folder (manager.d/*.conf)"
        )
    for including, candidate, why in missing:
        print(
            f"manager.conf: {_LEVELS['fail']} {escape_controls(str(including)[:120])}: cannot "
            f"read {escape_controls(str(candidate)[:120])}, which it #includes: "
            f"{escape_controls(why)}: "
            'Asterisk refuses the whole manager.conf ("was listed as a #include but it does '
            'not exist"; a manager reload keeps the users it had); '
            "correct the name, or write #tryinclude for a file that may be absent, then "
            "`asterisk -rx 'manager reload'`"
        )
    shown = "manager.conf"
    if read:
        names = ", ".join(escape_controls(p.name[:60]) for p in read[:3])
        shown += f" (with {names}{', ...' if len(read) > 3 else ''})"
    found_in: Path | None = None
    classes_text = text
    if found.elsewhere:
        included = _with_included(path, text, user, found.includes)
        if included is None:
            return False, False
        if isinstance(included, str):
            print(
                f"manager.conf: {_LEVELS['advice']} {path} has no [{user}] section, "
                f"{included}: run this command again with --manager-conf-file naming the "
                f"file that has [{user}]"
            )
            return not missing, False
        path, found = included
        found_in = path
        try:  # its read and write lines, after the templates above (as Asterisk reads it)
            classes_text = f"{text}\n{_read_manager_conf(path)}"
        except OSError:
            classes_text = ""
        print(f"manager.conf: {_LEVELS['ok']} [{user}] is in {path}, which the file #includes")
    lines, includes, templates = found.lines, found.includes, found.templates
    if includes:
        print(
            f"manager.conf: {_LEVELS['advice']} {path}: {len(includes)} #include line(s) not "
            "followed: eventfilter lines in those files are not compared"
        )
    findings = compare_eventfilters(
        user,
        lines,
        offline.event_selection(),
        templates,
        suggested_flags=suggested,
        # The file the lines are in, where the findings' lines go.
        file=path.name if found_in is not None else "manager.conf",
    )
    findings = [
        *compare_classes(
            user,
            *section_classes(classes_text, user),
            file=path.name if found_in is not None else "manager.conf",
        ),
        *compare_disabled(disabled_events(general), offline.event_selection(), file=shown),
        *native_bind(general, file=shown),
        *findings,
    ]
    for finding in findings:
        print(f"manager.conf: {_LEVELS[finding.level]} {escape_controls(finding.text)}")
        for line in finding.lines:
            print(f"    {escape_controls(line)}")
    return not missing and not any(f.level == "fail" for f in findings), True


def named_by(offline: Offline) -> str:
    """What a configured rules path that is not there adds to "no such file
    or folder" (:meth:`router.config.Config.rules_named_by`)."""
    return offline.config.rules_named_by()


def _shown(offline: Offline) -> str:
    from router.rules.loader import display_path

    rules = " ".join(display_path(p) for p in offline.config.router.rules)
    path = offline.config.path
    return f"{display_path(path)} ({rules})" if path is not None else rules
