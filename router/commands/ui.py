"""``callrouter ui sign-out-all [--config PATH] [--state-dir DIR]``.

The live page's sessions outlive a restart: their signing key is kept in
``[router] state_dir`` (router/api/session_store.py). This command signs every
page out: with the service stopped, it removes the key file, under the state
folder's lock (a ``callrouter run`` holds it for as long as it runs, and keeps
the key in memory, so it is refused then); the next start makes a new key,
and every cookie signed with the old one is refused. Exit code 0 when done
(or when there was no key), 1 when refused, 2 for a wrong command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from router.api.session_store import FILE_NAME
from router.commands._offline import service_state_dir, without_ami_secret
from router.config import DEFAULT_CONFIG_PATH, load_config
from router.errors import ConfigError
from router.logsafe import escape_controls
from router.staterestore import lock_state_folder

__all__ = ["register", "run_sign_out_all"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ui",
        help="the live page: sign-out-all",
        description="The live page's sign-in sessions (docs/api.md, The live page).",
    )
    actions = parser.add_subparsers(dest="ui_command", metavar="ACTION", required=True)
    out = actions.add_parser(
        "sign-out-all",
        help="end every live page session: a new signing key at the next start",
        description=(
            "Remove the live page's session key (ui-sessions.json in [router] state_dir), "
            "with callrouter stopped: the next start makes a new key, and every page, "
            "signed in before, has to sign in again. Refused, changing nothing, while a "
            "callrouter run holds the state folder's lock. Exit code 0: done, 1: refused, "
            "2: a wrong command line."
        ),
    )
    out.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help="router.toml whose [router] state_dir holds the key (default: ./router.toml)",
    )
    out.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the state folder to act on instead; router.toml is not read",
    )
    out.set_defaults(func=run_sign_out_all)


def run_sign_out_all(args: argparse.Namespace) -> int:
    given: Path | None = args.state_dir
    if given is not None:
        state_dir, where = given, "--state-dir"
    else:
        config = load_config(args.config, environ=without_ami_secret(args.config))
        state_dir = service_state_dir(config, "ui sign-out-all")
        where = config.where("router", "state_dir")
    shown = escape_controls(str(state_dir))
    try:
        lock = lock_state_folder(state_dir, key="[router] state_dir", where=where)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; stop callrouter first: a running one keeps the key in memory "
            "(systemctl stop callrouter; callrouter ui sign-out-all; systemctl start callrouter)"
        ) from None
    try:
        try:
            os.unlink(state_dir / FILE_NAME)
        except FileNotFoundError:
            print(f"{shown}: no live page session key: no page is signed in")
            return 0
        except OSError as exc:
            raise ConfigError(
                f"{shown}/{FILE_NAME}: cannot remove the live page's session key: "
                f"{exc.strerror or exc}"
            ) from None
    finally:
        os.close(lock)
    print(
        f"{shown}/{FILE_NAME}: removed; every live page signs in again once callrouter "
        "starts (a new key is made then)"
    )
    return 0
