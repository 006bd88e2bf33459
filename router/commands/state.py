"""``callrouter state backup TARGET`` and ``callrouter state restore BACKUP``
(each ``[--config PATH] [--state-dir DIR]``).

``backup``: a consistent copy of ``[router] state_dir`` while the service
runs (router/statebackup.py says how and why not ``cp``). ``restore``: that
copy put back, exactly, with the service stopped (router/staterestore.py).
docs/operations.md, "State and backups", says what each file is. Exit code 0
when done, 1 when a file could not be copied or the restore was refused
(the error names the file), 2 for a wrong command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from router.commands._offline import service_state_dir, without_ami_secret
from router.commands._values import a_path_of
from router.config import DEFAULT_CONFIG_PATH, load_config
from router.logsafe import escape_controls
from router.statebackup import Copied, backup_state, source_problem
from router.staterestore import restore_state
from router.wording import counted

__all__ = ["register", "run_backup", "run_restore"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "state",
        help="the state folder ([router] state_dir): backup, restore",
        description="The files callrouter and its plugins keep in [router] state_dir.",
    )
    actions = parser.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    backup = actions.add_parser(
        "backup",
        help="copy state_dir into a new folder, SQLite files consistently, while it runs",
        description=(
            "Copy every file of [router] state_dir into TARGET (a new or empty folder, "
            "made 0700; files 0600): SQLite files with SQLite's online backup, checked. "
            "Safe while callrouter runs; needs no Asterisk."
        ),
    )
    backup.add_argument(
        "target", type=a_path_of, metavar="TARGET", help="a new folder, outside the state folder"
    )
    _state_dir_options(backup, done="copied", instead="copy this folder instead")
    backup.set_defaults(func=run_backup)
    restore = actions.add_parser(
        "restore",
        help="put a backup back into state_dir exactly, with the service stopped",
        description=(
            "Make [router] state_dir hold exactly the files of BACKUP, a folder "
            "`callrouter state backup` made: its manifest's files checked (size, SHA-256, "
            "SQLite's quick_check), copied under temporary names, then renamed into place, "
            "owned by the state folder's owner, 0600. What the folder held before is moved "
            "(never deleted) into a new folder in it, before-restore-TIME. Refused, changing "
            "nothing, while a callrouter run holds the state folder's lock (it does for as "
            "long as it runs, with or without a file open there) or a process holds a file "
            "there locked, or when the backup is not a whole one; a callrouter run started "
            "meanwhile refuses to start. Needs no Asterisk."
        ),
    )
    restore.add_argument(
        "backup",
        type=a_path_of,
        metavar="BACKUP",
        help="the folder `callrouter state backup` made",
    )
    _state_dir_options(restore, done="restored", instead="restore into this folder instead")
    restore.set_defaults(func=run_restore)


def _state_dir_options(parser: argparse.ArgumentParser, *, done: str, instead: str) -> None:
    """``--config`` and ``--state-dir``, the folder an action works on
    (:func:`_state_dir`): the state_dir of router.toml is ``done``, or the
    folder given does ``instead``."""
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"router.toml whose [router] state_dir is {done} (default: ./router.toml)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help=f"{instead} (a plugin's own state_dir); router.toml is not read",
    )


def _state_dir(args: argparse.Namespace, command: str) -> Path:
    given: Path | None = args.state_dir
    if given is not None:
        return given
    # Never logs in: the AMI secret, which a root shell lacks, is not asked for.
    config = load_config(args.config, environ=without_ami_secret(args.config))
    return service_state_dir(config, command)


def _shown(name: str) -> str:
    """A file name or path as printed: not ours to trust (an ESC, a newline
    written as its escape), and a name that is not UTF-8 with its bytes as
    ``\\xNN``: Python holds them as lone surrogates, which a UTF-8 terminal's
    strict stdout refused with a traceback (hattack45), after the backup or
    the restore was done when the path was the folder's (issue 16)."""
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate no file name's byte stands for
        raw = name.encode("utf-8", "backslashreplace")
    return escape_controls(raw.decode("utf-8", "backslashreplace"))


def run_backup(args: argparse.Namespace) -> int:
    source = _state_dir(args, "state backup")
    problem = source_problem(source)
    if problem is not None:
        # Warned, not refused: an older install's folder is what an upgrade
        # backs up first, and reading it changes nothing there.
        print(
            f"callrouter state backup: warning: `callrouter run` refuses this state "
            f"folder: {escape_controls(problem)} (docs/security.md, Local users and "
            "files); backing it up all the same",
            file=sys.stderr,
        )
    copied = 0
    for result in backup_state(source, args.target):
        name = _shown(result.name)  # a file name is not ours to trust
        if isinstance(result, Copied):
            copied += 1
            how = "SQLite online backup, checked" if result.kind == "sqlite" else "copied"
            print(f"{name}: {result.size} bytes ({how})")
        else:
            print(f"{name}: left out: {result.why}")
    target = _shown(str(args.target))
    print(f"{counted(copied, 'file')} of {_shown(str(source))} backed up in {target}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args, "state restore")
    report = restore_state(args.backup, state_dir)
    backup, folder = _shown(str(args.backup)), _shown(str(state_dir))
    if report.made_by is None:
        print(
            f"{backup}: no manifest (a backup made before callrouter 0.2.0): its files "
            "are restored as they are, SQLite files checked with quick_check"
        )
    for restored in report.restored:
        name = _shown(restored.name)
        how = "SQLite quick_check ok" if restored.kind == "sqlite" else "copied"
        checked = ", SHA-256 as in the manifest" if report.made_by is not None else ""
        print(f"{name}: {restored.size} bytes restored ({how}{checked})")
    for name in report.replaced:
        print(f"{_shown(name)}: replaced; the earlier file moved aside")
    for name in report.moved_aside:
        print(f"{_shown(name)}: moved aside: not in the backup")
    for name in report.folders_kept:
        print(f"{_shown(name)}: a folder, left where it is (a backup holds none)")
    made = f" (made by {escape_controls(report.made_by)})" if report.made_by else ""
    print(f"{counted(len(report.restored), 'file')} of {backup}{made} restored in {folder}")
    if report.aside is not None:
        print(f"what {folder} held before is in {_shown(str(report.aside))}")
    return 0
