"""router.toml as ``callrouter run`` reads it, for commands that never log in.

``check`` and ``explain`` must normalize numbers, judge working hours and know
the plugins exactly as the service does, so they read the same file through
the same code: :func:`load_config`, :meth:`Plugins.for_config`, every plugin's
``callrouter_configure`` and ``callrouter_register``. Only Asterisk is left out.

Secrets are the one difference. The service gets them from its environment
(systemd's ``EnvironmentFile=``), which the administrator's shell usually
lacks; a variable that is not set here is reported as a warning and checked
with a stand-in value, so ``check`` judges the file, not the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from router.ami.event_filter import EventSelection
from router.config import (
    DEFAULT_CONFIG_PATH,
    MAX_CONFIG_BYTES,
    SECRET_ENV,
    Config,
    env_unset,
    load_config,
)
from router.config_lines import key_lines
from router.errors import ConfigError
from router.metrics import Metrics
from router.plugins import Plugins
from router.private_dir import private_dir_problem
from router.rules.registry import Registry
from router.textfiles import read_bounded

__all__ = [
    "Offline",
    "load_offline",
    "plugin_state_dirs",
    "refuse_another_owner",
    "service_state_dir",
    "without_ami_secret",
]

#: What stands in for a secret whose variable is not set in this shell.
_STAND_IN = "not-set-when-checked"
#: Connection settings for when there is no router.toml at all: never used.
_NO_FILE = {
    "asterisk.url": "http://127.0.0.1/asterisk",
    "asterisk.username": "check",
    "asterisk.secret": _STAND_IN,
}


@dataclass
class Offline:
    """The engine's view of its configuration, built without Asterisk."""

    config: Config
    plugins: Plugins
    registry: Registry
    #: Plugins that failed to register their names (located messages).
    problems: list[str] = field(default_factory=list)
    #: Not errors, but worth a line: unset secret variables, no router.toml.
    warnings: list[str] = field(default_factory=list)
    #: Stand-ins for the secret variables this shell lacks.
    stand_ins: dict[str, str] = field(default_factory=dict)
    #: The variable ``[asterisk]`` takes its secret from, when this shell
    #: lacks it: the secret is then a stand-in, no use for logging in.
    asterisk_secret_missing: str | None = None
    #: (where, section, key) of each secret this shell lacks, of ``[asterisk]``
    #: and of the plugins started (not of a table ``[plugins]`` leaves out):
    #: ``explain --ask`` refuses to ask a plugin with a stand-in (1C would
    #: count a failed login).
    unset_secrets: list[tuple[str, str, str]] = field(default_factory=list)
    #: The selection, once computed: `check --manager-conf-file` asks it twice.
    _selection: EventSelection | None = field(default=None, repr=False)

    def event_selection(self) -> EventSelection:
        """The events `callrouter run` would ask for, computed by an engine that
        is set up (plugins, rules) but never connects.

        That engine loads, configures and asks the plugins again: what they
        log then (a misspelt event name in ``callrouter_wanted_events``, a
        hook that raised) the load of this view said already, and check
        printed each such line two or three times."""
        if self._selection is not None:
            return self._selection
        from router.engine import Engine

        async def selection() -> EventSelection:
            engine = Engine(self.config, plugins=Plugins.for_config(self.config))
            await engine.setup()
            return await engine.event_selection()

        with _environment(self.stand_ins), _plugin_log_said():
            self._selection = asyncio.run(selection())
        return self._selection

    def manager_conf_lines(self) -> list[str]:
        """The ``eventfilter`` lines for the user's manager.conf section: the
        filters `callrouter run` would ask for with ``Filter`` actions."""
        return self.event_selection().manager_conf_lines()


@contextlib.contextmanager
def _plugin_log_said() -> Iterator[None]:
    """Drop router.plugins' log records meanwhile: said at the load already."""
    plugin_log = logging.getLogger("router.plugins")

    def said(record: logging.LogRecord) -> bool:
        return False

    plugin_log.addFilter(said)
    try:
        yield
    finally:
        plugin_log.removeFilter(said)


def _secret_variables(path: Path) -> list[tuple[str, str, str, str]]:
    """(where, section, key, variable) for every secret the file takes from the
    environment; ``where`` is the file and the line the key is on (its table's
    header when the key is left out: ``CALLROUTER_SECRET`` then)."""
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []  # load_config reports it with the file's name
    lines = key_lines(text)

    def where(*keys: str) -> str:
        line = lines.get(keys, lines.get(keys[:-1]))
        return f"{path}:{line}" if line is not None else str(path)

    found: list[tuple[str, str, str, str]] = []
    asterisk = data.get("asterisk")
    if isinstance(asterisk, dict) and "secret" not in asterisk:
        name = asterisk.get("secret_env", SECRET_ENV)
        key = "secret_env" if "secret_env" in asterisk else "secret"
        if isinstance(name, str):
            found.append((where("asterisk", key), "asterisk", key, name))
    plugins = data.get("plugins")
    for plugin, table in plugins.items() if isinstance(plugins, dict) else ():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if key.endswith("_env") and isinstance(value, str):
                found.append((where("plugins", plugin, key), f"plugins.{plugin}", key, value))
    return found


def _load_tls_files(config: Config) -> None:
    """The ``[asterisk]`` TLS files loaded as the client would at ``run``
    (router/ami/connect.py), its ConfigError with the key's line."""
    from router.ami.client import ClientSettings
    from router.ami.connect import load_tls_files

    load_tls_files(
        ClientSettings.from_config(config.asterisk),
        named=lambda key: config.named("asterisk", key),
    )


@contextlib.contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """``os.environ`` plus stand-ins, for plugins that read it in configure."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield os.environ
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def service_state_dir(config: Config, command: str) -> Path:
    """``[router] state_dir`` for a command that shares it with the running
    service (``history replay`` queues there, ``recordings status`` reads the
    catalog); ConfigError when the folder does not exist.

    Under the systemd unit the service's folder is ``$STATE_DIRECTORY``, which
    a shell lacks: without ``state_dir`` in router.toml the command took
    ``./state`` beside router.toml, which no service ever used, and read it as
    empty (``recordings status``: nothing on disk) or queued history in it for
    nobody to send. A folder that does not exist is never the service's.
    """
    path = config.router.state_dir
    if path.is_dir():
        return path
    raise ConfigError(
        f"{config.where('router', 'state_dir')}: [router] state_dir: no folder {path}, "
        f"so callrouter run keeps no state there for `callrouter {command}`; under "
        "systemd the service's is $STATE_DIRECTORY (StateDirectory=callrouter: "
        '/var/lib/callrouter), which a shell lacks: set state_dir = "/var/lib/callrouter" '
        "in router.toml's [router] (docs/operations.md)"
    )


def refuse_another_owner(
    config: Config, path: Path, command: str, key: tuple[str, ...] = ("router", "state_dir")
) -> None:
    """ConfigError when ``path`` (the service's state folder, set by router.toml's
    ``key``) belongs to another user than the one running ``command``, which
    writes there.

    The systemd unit's service runs as a DynamicUser that owns
    /var/lib/callrouter. Run from a root shell, ``history replay`` created the
    1C plugin's queue (and its -wal and -shm) there as root, 0600, and systemd
    re-owns the folder's contents only when the folder itself is not the
    service's: the service then failed to open its own queue at the next start.
    """
    owner = path.stat().st_uid
    me = os.geteuid()
    table, name = ".".join(key[:-1]), key[-1]
    if owner == me:
        # As the service: held to what its start holds the folder to, since
        # the command opens SQLite files there by name (router/private_dir.py).
        problem = private_dir_problem(path)
        if problem is not None:
            raise ConfigError(
                f"{config.where(*key)}: [{table}] {name}: {problem} "
                "(docs/security.md, Local users and files)"
            )
        return
    raise ConfigError(
        f"{config.where(*key)}: [{table}] {name} {path} belongs to "
        f"uid {owner} (the service's user), and `callrouter {command}` runs as uid {me}: "
        f"the files it makes there would be uid {me}'s, mode 0600, and the service could "
        "not open them. Run it as the service's user: under the systemd unit "
        "(DynamicUser=yes), systemd-run --pipe --wait -p DynamicUser=yes -p User=callrouter "
        "-p StateDirectory=callrouter -p EnvironmentFile=/etc/callrouter/callrouter.env "
        f"/opt/callrouter/bin/callrouter {command} ... --config /etc/callrouter/router.toml; "
        f"with a fixed User=, runuser -u THAT_USER -- callrouter {command} ... "
        "(docs/history.md)"
    )


def plugin_state_dirs(config: Config) -> list[tuple[tuple[str, ...], Path]]:
    """Every ``[plugins.NAME] state_dir`` router.toml sets, as the plugins read
    it (relative to router.toml's folder), with its key: the folders a plugin
    writes in instead of ``[router] state_dir`` (the 1C plugin's queue)."""
    base = config.path.parent if config.path is not None else Path.cwd()
    found: list[tuple[tuple[str, ...], Path]] = []
    for name, table in sorted(config.plugins.settings.items()):
        value = table.get("state_dir")
        if isinstance(value, str) and value:
            found.append((("plugins", name, "state_dir"), base / value))
    return found


def without_ami_secret(path: Path) -> dict[str, str]:
    """``os.environ`` with a stand-in for the ``[asterisk]`` secret's variable
    when this shell lacks it: for commands that never log in to Asterisk
    (``history replay``), which need router.toml, not the AMI secret. The
    plugins' secrets are left as they are: a plugin started for real needs its own.
    """
    environ = dict(os.environ)
    for _where, section, _key, name in _secret_variables(path):
        if section == "asterisk" and name and not environ.get(name):
            environ[name] = _STAND_IN
    return environ


def load_offline(
    path: Path | None,
    *,
    overrides: Mapping[str, object] | None = None,
    flags: Mapping[str, str] | None = None,
    failures_printed: bool = False,
    broken: dict[str, str] | None = None,
) -> Offline:
    """Read router.toml (``path``; None: ``./router.toml`` if there is one) and
    configure every plugin it selects; raises ConfigError like ``run`` would
    (naming the flag of ``flags`` that gave a value: ``load_config``).

    ``failures_printed``: the caller prints ``Offline.problems``, so a plugin
    hook's failure there is not logged too (``Plugins.failures_printed``).
    ``broken``: an installed plugin that cannot be loaded is left out and its
    error put there (``Plugins.load``), not raised (``callrouter plugins``)."""
    warnings: list[str] = []
    given = dict(overrides or {})
    if path is None:
        if DEFAULT_CONFIG_PATH.is_file():
            path = DEFAULT_CONFIG_PATH
        else:
            warnings.append(
                f"no {DEFAULT_CONFIG_PATH} here: checked with the default "
                "settings (give --config PATH)"
            )
    # (where it is named, section, key, variable)
    found: list[tuple[str, str, str, str]] = []
    if path is None:
        # The stand-ins fill in what the flags (--url, --username,
        # --secret-env) leave out, never replace them. With --url the secret
        # is CALLROUTER_SECRET's unless --secret-env names another, as for run.
        connect = given.get("asterisk.url") is not None
        named = given.get("asterisk.secret_env") is not None
        for dotted, value in _NO_FILE.items():
            if given.get(dotted) is None and not (
                dotted == "asterisk.secret" and (connect or named)
            ):
                given[dotted] = value
        if connect and not named:
            found.append(("--url", "asterisk", "secret", SECRET_ENV))
    else:
        found = _secret_variables(path)
    stand_ins: dict[str, str] = {}
    asterisk_missing = None
    chosen = given.get("asterisk.secret_env")
    if isinstance(chosen, str):  # --secret-env: that variable, not the file's
        found = [("--secret-env", "asterisk", "secret_env", chosen)] + [
            entry for entry in found if entry[1] != "asterisk"
        ]
    lacking = [entry for entry in found if entry[3] and not os.environ.get(entry[3])]
    for _where, section, _key, name in lacking:
        stand_ins[name] = _STAND_IN
        if section == "asterisk":
            asterisk_missing = name
    with _environment(stand_ins) as environ:
        config = load_config(path, overrides=given, flags=flags or {}, environ=environ)
        _load_tls_files(config)
        plugins = Plugins.for_config(config, broken=broken)
        plugins.failures_printed = failures_printed
        asyncio.run(plugins.configure(config))
    # The table of a plugin [plugins] leaves out (disabled, or not in
    # enabled) is read by nothing: callrouter run starts no such plugin, so
    # its secret is neither needed nor asked for by explain --ask.
    unset: list[tuple[str, str, str]] = []
    for where, section, key, name in lacking:
        plugin = section.removeprefix("plugins.")
        if plugin != section and not plugins.pm.has_plugin(plugin):
            continue
        unset.append((where, section, key))
        warnings.append(
            f"{where}: [{section}] {key}: {env_unset(name, 'is not set here')}; "
            "callrouter run needs it (checked without it)"
        )
    registry, problems = plugins.build_registry()
    problems[:0] = plugins.configure_failures
    # What run asks each plugin next: a misspelt event name is said now, not
    # only in run's log (its callrouter_event would never be called for it).
    with _environment(stand_ins):
        asyncio.run(plugins.wanted_events(warn=False))
        # And its metric families, on a registry of their own: a name run
        # would refuse (``ValueError``) is the plugin's error now.
        asyncio.run(plugins.metrics(Metrics()))
    warnings.extend(plugins.unknown_event_warnings)
    problems[len(plugins.configure_failures) : len(plugins.configure_failures)] = (
        plugins.answer_failures
    )
    if config.recordings is not None:
        from router.recordings.transcode import missing_encoder

        missing = missing_encoder(config.recordings.transcode)
        if missing is not None:
            warnings.append(f"{config.where('recordings', 'transcode')}: {missing}")
    return Offline(
        config, plugins, registry, problems, warnings, stand_ins, asterisk_missing, unset
    )
