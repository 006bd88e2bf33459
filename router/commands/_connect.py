"""Connection flags shared by the commands that talk to Asterisk."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from router.ami.client import ClientSettings
from router.ami.connect import open_client
from router.commands._values import an_asterisk_url, seconds
from router.config import DEFAULT_CONFIG_PATH, Config, load_config

if TYPE_CHECKING:
    from router.ami.connect import AMIClient


#: How long the commands a person waits on (``callrouter check --asterisk``,
#: ``callrouter ami``, ``callrouter events``) wait for the answers to their
#: login, after ``connect_timeout`` for the connection (and a TCP greeting):
#: Asterisk answers a Login in milliseconds, and a peer that accepts and never
#: answers (a half-open connection) should fail in seconds, not at
#: ``request_timeout``. docs/asterisk.md, Checking the setup.
COMMAND_LOGIN_TIMEOUT: Final = 5.0


def for_a_person(settings: ClientSettings) -> ClientSettings:
    """``settings`` with the commands' bound on a login (:data:`COMMAND_LOGIN_TIMEOUT`)."""
    return replace(settings, login_timeout=COMMAND_LOGIN_TIMEOUT)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (override router.toml [asterisk])")
    group.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help="settings file (default: ./router.toml)",
    )
    add_asterisk_flags(group)


def add_asterisk_flags(group: argparse._ArgumentGroup) -> None:
    """The flags that override router.toml's ``[asterisk]`` keys, the same for
    every command that talks to Asterisk (``callrouter check`` too):
    :func:`asterisk_overrides` reads them."""
    group.add_argument(
        "--url",
        type=an_asterisk_url,
        help="AJAM base URL (http://127.0.0.1:8088/asterisk, or https://) or native AMI "
        "(tcp://127.0.0.1:5038, or tls://HOST:5039 for AMI over TLS)",
    )
    group.add_argument("--username", help="manager.conf user")
    group.add_argument(
        "--secret-env", metavar="NAME", help="read the secret from this environment variable"
    )
    group.add_argument("--secret", action=_RefuseSecret, help=argparse.SUPPRESS)
    group.add_argument(
        "--auth",
        choices=["cookie", "digest", "plain", "md5"],
        help="login: cookie or digest for http(s)://, plain or md5 for tcp:// and tls://",
    )
    group.add_argument(
        "--format", choices=["rawman", "mxml"], help="AJAM's answers (http(s):// only)"
    )
    trust = group.add_mutually_exclusive_group()
    trust.add_argument(
        "--insecure", action="store_true", default=None, help="do not verify the TLS certificate"
    )
    trust.add_argument(
        "--ca-file",
        type=Path,
        metavar="PATH",
        help="trust this CA (PEM) for a tls:// or https:// url (router.toml: verify)",
    )
    group.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="request timeout (more than 0, at most 3600)",
    )


class _RefuseSecret(argparse.Action):
    """``--secret`` is not taken: said plainly, with what to use instead."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "--secret: a secret on the command line is visible to every user of this "
            "host (ps, shell history); put it in an environment variable and give its "
            "name: --secret-env NAME (or secret_env in router.toml)"
        )


def asterisk_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The ``[asterisk]`` keys the flags of :func:`add_asterisk_flags` replace
    (None: not given, router.toml's stands)."""
    return {
        "asterisk.url": args.url,
        "asterisk.username": args.username,
        "asterisk.secret_env": args.secret_env,
        "asterisk.auth": args.auth,
        "asterisk.format": args.format,
        "asterisk.verify": False
        if args.insecure
        else (str(args.ca_file) if args.ca_file is not None else None),
        "asterisk.request_timeout": args.timeout,
    }


def asterisk_flags(args: argparse.Namespace) -> dict[str, str]:
    """The flag each of :func:`asterisk_overrides`'s keys comes from, for its
    errors: ``--ca-file ./missing.pem`` said ``command line: [asterisk]
    verify: no such file``, a key the person never typed."""
    return {
        "asterisk.url": "--url",
        "asterisk.username": "--username",
        "asterisk.secret_env": "--secret-env",
        "asterisk.auth": "--auth",
        "asterisk.format": "--format",
        "asterisk.verify": "--insecure" if args.insecure else "--ca-file",
        "asterisk.request_timeout": "--timeout",
    }


def load_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=asterisk_overrides(args), flags=asterisk_flags(args))


def client_from_args(args: argparse.Namespace) -> AMIClient:
    config = load_from_args(args)
    return open_client(
        for_a_person(ClientSettings.from_config(config.asterisk)),
        named=lambda key: config.named("asterisk", key),
    )
