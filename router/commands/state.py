"""``callrouter state backup TARGET [--config PATH] [--state-dir DIR]``.

A consistent copy of ``[router] state_dir`` while the service runs
(router/statebackup.py says how and why not ``cp``); docs/operations.md,
"State and backups", says what each file is and how to restore them.
Exit code 0 when every file was copied or left out for a reason printed, 1
when one could not be copied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from router.commands._offline import service_state_dir, without_ami_secret
from router.commands._values import a_path_of
from router.config import DEFAULT_CONFIG_PATH, load_config
from router.logsafe import escape_controls
from router.statebackup import Copied, backup_state, source_problem
from router.wording import counted

__all__ = ["register", "run_backup"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "state",
        help="the state folder ([router] state_dir): backup",
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
    backup.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help="router.toml whose [router] state_dir is copied (default: ./router.toml)",
    )
    backup.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="copy this folder instead (a plugin's own state_dir); router.toml is not read",
    )
    backup.set_defaults(func=run_backup)


def run_backup(args: argparse.Namespace) -> int:
    source: Path | None = args.state_dir
    if source is None:
        # Never logs in: the AMI secret, which a root shell lacks, is not asked for.
        config = load_config(args.config, environ=without_ami_secret(args.config))
        source = service_state_dir(config, "state backup")
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
        name = escape_controls(result.name)  # a file name is not ours to trust
        if isinstance(result, Copied):
            copied += 1
            how = "SQLite online backup, checked" if result.kind == "sqlite" else "copied"
            print(f"{name}: {result.size} bytes ({how})")
        else:
            print(f"{name}: left out: {result.why}")
    print(f"{counted(copied, 'file')} of {source} backed up in {args.target}")
    return 0
