"""``router.toml`` -> typed, frozen settings.

One file configures the service and the admin commands::

    [asterisk]
    url = "http://127.0.0.1:8088/asterisk"   # scheme, host, port and http.conf prefix
    username = "router"
    secret_env = "CALLROUTER_SECRET"          # or: secret = "..." (not both)
    auth = "cookie"                           # or "digest" (/arawman, /amxml)
    format = "rawman"                         # or "mxml"
    verify = true                             # TLS: true, false or "/path/ca.pem"
    connect_timeout = 5
    request_timeout = 10
    waitevent_timeout = 20

    [router]
    rules = ["rules"]
    state_dir = "/var/lib/callrouter"
    log_format = "text"                       # or "json"
    shadow = false

    [plugins]
    disabled = ["worktime"]
    [plugins.onec]                            # passed to the plugin as a dict
    url = "http://1c.example/hs/callrouter"

:func:`load_config` reads it with :mod:`tomllib`, applies command-line
overrides on top, and raises one :class:`~router.errors.ConfigError` naming the
file and the key for anything wrong, with a did-you-mean for unknown keys.

The secret comes, in this order, from an override (``asterisk.secret`` from
Python, or the variable named by ``--secret-env NAME`` on the command line,
which refuses ``--secret``), from the file (``secret`` or the environment
variable named by ``secret_env``), and last from the environment variable
``CALLROUTER_SECRET``. Relative paths in the file are
taken relative to the file's folder; relative paths given as overrides relative
to the working directory.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast

from router.api.settings import ApiSettings, read_api
from router.callerid import cut
from router.calllife.settings import HistorySettings, read_history
from router.config_lines import key_lines
from router.dialplan import DEFAULT_LOCATION_PATTERN, LocationPolicy
from router.errors import ConfigError, ConfigUnreadable
from router.recordings.settings import RecordingSettings, read_recordings
from router.suggest import closest
from router.textfiles import FileTooBig, read_bounded

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "SECRET_ENV",
    "AsteriskSettings",
    "Config",
    "PluginSettings",
    "RouterSettings",
    "exposed_secret_files",
    "load_config",
    "url_problem",
]

DEFAULT_CONFIG_PATH = Path("router.toml")
#: Fallback environment variable for the AMI secret.
SECRET_ENV = "CALLROUTER_SECRET"
#: Where the command line's values are said to come from in error messages.
COMMAND_LINE = "command line"

#: ``cookie``/``digest`` for http(s):// urls, ``plain``/``md5`` (Challenge) for tcp:// and tls://.
AuthMode = Literal["cookie", "digest", "plain", "md5"]
Format = Literal["rawman", "mxml"]
LogFormat = Literal["text", "json"]

#: ``[asterisk] max_response_bytes`` default: a CoreShowChannels of 10,000
#: channels is about 8 MB; bounds from 64 KiB to 1 GiB.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def env_unset(
    name: str, unset: str = "is not set or empty", *, what: str = "secret", by: str = "it"
) -> str:
    """ "the environment variable it names is not set ...": never the name
    (``by`` says what names it, when the message's prefix does not).

    A ``*_env`` value may be the ``what`` itself, pasted by mistake, and a
    password of letters, digits and ``_`` (``hunter``, ``HUNTER2``,
    ``QWERTY_123``) is as valid a name as ``ONEC_PASSWORD``: no rule on its
    spelling tells them apart, and the message goes to logs and terminals. The
    error's prefix names the file, the table and the key, which is where the
    administrator looks. Only :data:`SECRET_ENV`, callrouter's own default
    rather than anything typed, is named.
    """
    if name == SECRET_ENV:
        return f"environment variable {name} {unset}"
    return (
        f"the environment variable {by} names {unset} (name not shown: it may be the "
        f"{what} itself, pasted by mistake; if so, put the {what} in the environment "
        f"and give the variable's name here)"
    )


#: Setting names whose values are credentials: masked in repr() of the config.
_SECRET_WORDS = ("secret", "password", "passwd", "token", "key")
_URL_USERINFO = re.compile(r"(://)[^/@\s]*@")

_ENDPOINTS = ("rawman", "mxml", "manager", "arawman", "amxml", "amanager")
#: Native AMI over a socket (router/ami/tcp.py) rather than AJAM over HTTP.
TCP_SCHEMES = ("tcp", "tls")
#: Keys that only mean something to one of the two transports
#: (``max_response_bytes`` bounds both: an AJAM answer, and over TCP the
#: parser's buffer, an event list, the events read ahead and what Asterisk
#: has not read of ours, router/ami/tcp.py).
_HTTP_ONLY = ("format", "http_client", "waitevent_timeout")
_TCP_ONLY = ("ping_interval",)


@dataclass(frozen=True, slots=True)
class AsteriskSettings:
    """How to reach Asterisk: AJAM (``http(s)://``) or native AMI (``tcp://``, ``tls://``).

    ``url`` is normalised without a trailing ``/``.
    """

    url: str
    username: str
    secret: str = field(repr=False)
    #: Where the secret came from, for diagnostics: ``file``, ``env:NAME`` or ``command line``.
    secret_source: str = "file"
    auth: AuthMode = "cookie"
    format: Format = "rawman"
    #: TLS server verification: on, off, or a CA bundle file.
    verify: bool | Path = True
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    #: WaitEvent ``Timeout``; keep it under manager.conf ``httptimeout`` minus 10 s.
    waitevent_timeout: float = 20.0
    #: "native" (lean HTTP/1.1, the default) or "httpx"; digest auth always uses httpx.
    http_client: Literal["native", "httpx"] = "native"
    #: Largest AJAM response body accepted, whatever its HTTP framing.
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: tcp:// and tls:// only: a Ping when the socket has been quiet for half
    #: this long; a connection silent for this long is dead (a half-open socket).
    ping_interval: float = 5.0
    #: "auto": ask Asterisk only for the events the rules and plugins need
    #: (router/ami/event_filter.py); "all": every event the user may read.
    events: Literal["auto", "all"] = "auto"

    @property
    def native(self) -> bool:
        """True for ``tcp://`` and ``tls://``: the native AMI client, not AJAM."""
        return self.url.startswith(("tcp://", "tls://"))


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """The engine's own settings."""

    rules: tuple[Path, ...] = (Path("rules"),)
    state_dir: Path = Path("state")
    log_format: LogFormat = "text"
    #: Shadow mode: evaluate and log decisions, send no actions to Asterisk.
    shadow: bool = False
    #: A ``context`` or ``exten`` a template or lookup produced must match this
    #: whole (router/dialplan.py adds a fixed floor of forbidden characters).
    location_pattern: str = DEFAULT_LOCATION_PATTERN
    #: Seconds between the engine's looks at Asterisk's dialplan besides
    #: those at start and after reloads (``dialplan reload`` reports none);
    #: 0 turns them off. Only a change in the findings is logged.
    dialplan_audit_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """Which plugins run and each one's own table (``[plugins.NAME]``)."""

    #: Installed plugins to load (``Plugins.for_config``); empty means every
    #: installed plugin. Built-ins always load unless ``disabled``.
    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    settings: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __repr__(self) -> str:
        # Plugin tables hold credentials (the 1C password, tokens, URLs with
        # user:password@): repr() goes to logs and tracebacks, so mask them.
        masked = {
            name: {key: _masked(key, value) for key, value in table.items()}
            for name, table in self.settings.items()
        }
        return (
            f"PluginSettings(enabled={self.enabled!r}, disabled={self.disabled!r}, "
            f"settings={masked!r})"
        )

    def for_plugin(self, name: str) -> Mapping[str, object]:
        """The ``[plugins.NAME]`` table, or an empty mapping."""
        return self.settings.get(name, MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``router.toml`` says, validated."""

    asterisk: AsteriskSettings
    router: RouterSettings = field(default_factory=RouterSettings)
    plugins: PluginSettings = field(default_factory=PluginSettings)
    #: ``[api]``: the HTTP API, or None (off) when the file has no such table.
    api: ApiSettings | None = None
    #: ``[recordings]``: call recordings (router/recordings), or None (off).
    recordings: RecordingSettings | None = None
    #: ``[history]``: where Asterisk's CEL is stored, for replays (docs/history.md).
    history: HistorySettings = field(default_factory=HistorySettings)
    #: The file read, or ``None`` when there was none and overrides sufficed.
    path: Path | None = None
    #: Where each key of that file is written, for the line an error names
    #: (:func:`router.config_lines.key_lines`; plugins' settings readers take it).
    lines: Mapping[tuple[str, ...], int] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    #: The keys (``("asterisk", "verify")``) whose values the command line gave
    #: (``--ca-file``, ``--url``...): an error in one names the command line.
    from_command_line: frozenset[tuple[str, str]] = field(
        default_factory=frozenset, repr=False, compare=False
    )
    #: The flag each of those came from (``("asterisk", "verify")``:
    #: ``--ca-file``), named in its errors (:meth:`named`).
    flags: Mapping[tuple[str, str], str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    #: The SHA-256 of the very bytes of :attr:`path` these settings were parsed
    #: from, None when no file was read: a SIGHUP compares the file with it
    #: (router.toml changed, needs a restart). A digest taken later, when the
    #: engine is made, missed a save made between the read and it (issue 16).
    digest: str | None = field(default=None, repr=False, compare=False)

    def where(self, *path: str) -> str:
        """Where the key or table ``path`` (``"plugins", "enabled"``) is written,
        for a message: ``router.toml:12``, the file alone when the line is not
        known, ``command line`` for a value the command line gave (a
        ``--ca-file`` that is no PEM was blamed on router.toml, with or without
        one), ``router.toml`` when no file was read."""
        if path[:2] in self.from_command_line:
            return COMMAND_LINE
        origin = str(self.path) if self.path is not None else "router.toml"
        line = self.lines.get(path)
        return f"{origin}:{line}" if line is not None else origin

    def named(self, section: str, key: str) -> str:
        """Where ``[section] key`` is written and its name, before a message
        about its value: ``router.toml:12: [asterisk] verify``, or for a value
        a flag gave ``command line: --ca-file ([asterisk] verify)``: the
        person typed the flag, not the key."""
        flag = self.flags.get((section, key)) if (section, key) in self.from_command_line else None
        name = f"[{section}] {key}"
        return f"{self.where(section, key)}: {f'{flag} ({name})' if flag else name}"

    def rules_named_by(self) -> str:
        """What a configured rules path that is not there adds to "no such file
        or folder" (:func:`router.rules.load_rules`'s ``named_by``): the key
        that names it, the folder it is relative to, and the shipped rules to
        start from. A router.toml copied as the quick start says, without the
        rules beside it, said only ``rules: no such file or folder``; empty
        when no file was read. ``callrouter check``, ``explain`` and ``run``
        say the same."""
        if self.path is None:
            return ""
        return (
            f" (named by {self.where('router', 'rules')}: [router] rules, relative to "
            f"{self.path.resolve().parent}); copy the shipped rules/ there to start from "
            "(README, Quick start), or set [router] rules"
        )


# -- reading -----------------------------------------------------------------

_SECTIONS = ("asterisk", "router", "plugins", "api", "recordings", "history")
_KEYS: dict[str, tuple[str, ...]] = {
    "asterisk": (
        "url",
        "username",
        "secret",
        "secret_env",
        "auth",
        "format",
        "verify",
        "client_cert",
        "client_key",
        "connect_timeout",
        "request_timeout",
        "waitevent_timeout",
        "http_client",
        "max_response_bytes",
        "ping_interval",
        "events",
    ),
    "router": (
        "rules",
        "state_dir",
        "log_format",
        "shadow",
        "location_pattern",
        "dialplan_audit_interval",
    ),
    "plugins": ("enabled", "disabled"),
}


def _suggest(word: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    match = closest(word, options)
    hint = f"; did you mean {match!r}?" if match is not None else ""
    return f"{hint} (known: {', '.join(options)})"


class SettingsReader:
    """Typed access to one TOML table, every error naming the file, table and key.

    The engine reads ``[asterisk]``, ``[router]`` and ``[plugins]`` with it, and
    plugins read their own ``[plugins.NAME]`` table the same way
    (:meth:`for_plugin`), so every settings error in callrouter looks alike:
    ``router.toml: [plugins.onec] timeout: expected a number, got string '2'``.
    """

    def __init__(
        self,
        section: str,
        values: Mapping[str, object],
        origins: Mapping[str, str],
        base: Path,
        *,
        lines: Mapping[tuple[str, ...], int] | None = None,
        path: tuple[str, ...] | None = None,
        flags: Mapping[str, str] | None = None,
    ) -> None:
        self.section = section
        self.values = values
        self.origins = origins
        self.base = base
        #: The flag each key the command line gave came from (``verify``:
        #: ``--ca-file``), named in its errors.
        self.flags: Mapping[str, str] = flags if flags is not None else {}
        #: Where each key of the file is written (:func:`router.config_lines.key_lines`).
        self.lines: Mapping[tuple[str, ...], int] = lines if lines is not None else {}
        #: The table's key path in the file (``("api", "tokens", "crm")``).
        self.table_path = path if path is not None else tuple(section.split("."))

    @classmethod
    def for_plugin(
        cls, name: str, settings: Mapping[str, object], config: Config | None = None
    ) -> SettingsReader:
        """A reader over ``[plugins.NAME]``; paths are relative to the config file."""
        path = config.path if config is not None else None
        origin = str(path) if path is not None else "router.toml"
        base = path.parent if path is not None else Path.cwd()
        lines = config.lines if config is not None else None
        return cls(
            f"plugins.{name}", settings, {"": origin}, base, lines=lines, path=("plugins", name)
        )

    def where(self, key: str) -> str:
        """Where ``key`` of this table comes from, for a message: the file and the
        line it is written on (``router.toml:12``), the table's header line for a
        key missing from it, the file alone when neither is known, or the
        command line."""
        origin = self.origins.get(key, self.origins.get("", "router.toml"))
        if origin == COMMAND_LINE:
            return origin
        line = self.lines.get((*self.table_path, key))
        if line is None and key not in self.values:
            line = self.lines.get(self.table_path)
        return f"{origin}:{line}" if line is not None else origin

    def named(self, key: str) -> str:
        """``key``'s name in a message: ``[asterisk] verify``, or with the
        flag that gave it, ``--ca-file ([asterisk] verify)``."""
        name = f"[{self.section}] {key}"
        flag = self.flags.get(key) if self.origins.get(key) == COMMAND_LINE else None
        return f"{flag} ({name})" if flag else name

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {self.named(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.values

    def reject_unknown(self, known: Iterable[str]) -> None:
        """Refuse keys nobody reads, with a did-you-mean: a typo must not be ignored."""
        allowed = tuple(known)
        for key in self.values:
            if key not in allowed:
                raise self.error(key, f"unknown key{_suggest(key, allowed)}")

    def table(self, key: str) -> SettingsReader:
        """A reader over the sub-table ``[SECTION.KEY]`` (``[api.tokens.crm]``)."""
        value = self.values.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a [{self.section}.{key}] table, got {_show(value)}")
        origin = self.origins.get(key, self.origins.get("", "router.toml"))
        return SettingsReader(
            f"{self.section}.{key}",
            value,
            {"": origin},
            self.base,
            lines=self.lines,
            path=(*self.table_path, key),
        )

    def base_for(self, key: str) -> Path:
        return Path.cwd() if self.origins.get(key) == COMMAND_LINE else self.base

    def string(self, key: str, default: str | None = None, *, empty: bool = False) -> str:
        if key not in self.values:
            if default is None:
                raise self.error(key, "required")
            return default
        value = self.values[key]
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        if not empty and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in allowed:
            options = " or ".join(repr(a) for a in allowed)
            raise self.error(key, f"expected {options}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_show(value)}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number of seconds, got {_show(value)}")
        if not 0 < value <= 3600:
            raise self.error(key, f"expected more than 0 and at most 3600 seconds, got {value}")
        return float(value)

    def number(
        self,
        key: str,
        default: float,
        low: float,
        high: float,
        *,
        allow_zero: bool = False,
        low_included: bool = False,
    ) -> float:
        """A number in ``(low, high]``, or ``[low, high]`` with ``low_included``
        (a bound the docs give as "60 to 86400"); ``allow_zero`` admits 0
        meaning "off"."""
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {_show(value)}")
        above = low <= value if low_included else low < value
        if not ((above and value <= high) or (allow_zero and value == 0)):
            zero = "0 (off) or " if allow_zero else ""
            # Written out (2592000, not 2.592e+06: what the docs and the file say).
            lo, hi = f"{low:.15g}", f"{high:.15g}"
            bounds = f"{lo} to {hi}" if low_included else f"more than {lo} and at most {hi}"
            raise self.error(key, f"expected {zero}{bounds}, got {value}")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_show(value)}")
        if not low <= value <= high:
            raise self.error(key, f"expected {low} to {high}, got {value}")
        return value

    def path(self, key: str, *, must_exist: bool = False) -> Path | None:
        if key not in self.values:
            return None
        path = self.base_for(key) / self.string(key)
        if must_exist and not path.is_file():
            raise self.error(key, f"no such file: {str(path)!r}")
        return path

    def strings(
        self, key: str, default: tuple[str, ...] = (), *, digits: bool = False
    ) -> tuple[str, ...]:
        value = self.values.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a list of strings, got {_show(value)}")
        items = tuple(cast(list[str], value))
        if digits and not all(v.isascii() and v.isdigit() for v in items):
            raise self.error(key, f"expected digits only, got {list(items)!r}")
        return items


def _masked(key: str, value: object) -> object:
    if any(word in key.lower() for word in _SECRET_WORDS):
        return "<redacted>"
    if isinstance(value, str) and "@" in value:
        return _URL_USERINFO.sub(r"\1<redacted>@", value)
    return value


def _show(value: object) -> str:
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if isinstance(value, bool):
        text = str(value).lower()
    return f"{kind} {cut(text, 40)}"


#: Asterisk's own settings, put in ``[asterisk]`` by mistake: where they belong.
_USER_SECTION = "manager.conf (the manager user's section)"
_IN_URL = "; router.toml takes it as part of url"
_ASTERISK_CONF: dict[str, str] = {
    **dict.fromkeys(
        ("writetimeout", "read", "write", "eventfilter", "permit", "deny", "acl"), _USER_SECTION
    ),
    **dict.fromkeys(
        (
            "httptimeout",
            "webenabled",
            "authtimeout",
            "authlimit",
            "displayconnects",
            "timestampevents",
            "allowmultiplelogin",
            "channelvars",
        ),
        "manager.conf [general]",
    ),
    **dict.fromkeys(
        ("sessionlimit", "session_inactivity", "session_keep_alive", "enablestatic"),
        "http.conf [general]",
    ),
    **dict.fromkeys(
        ("tlsenable", "tlsbindaddr", "tlscertfile", "tlsprivatekey"),
        "manager.conf or http.conf [general]",
    ),
    "port": "manager.conf [general]" + _IN_URL,
    "bindport": "http.conf [general]" + _IN_URL,
    "prefix": "http.conf [general]" + _IN_URL,
    "bindaddr": "manager.conf or http.conf [general]" + _IN_URL,
}


def _reject_unknown_asterisk(reader: SettingsReader) -> None:
    """Like :func:`_reject_unknown`, but an Asterisk setting is sent where it
    belongs, and a did-you-mean offers the keys the url's transport takes
    (``writetimeout`` beside a tcp:// url is not ``waitevent_timeout``); a
    near miss of the other transport's key says that it does not apply."""
    known = _KEYS["asterisk"]
    url = reader.values.get("url")
    scheme = url.strip().partition("://")[0].lower() if isinstance(url, str) else ""
    other: tuple[str, ...] = ()
    kind = ""
    if scheme in TCP_SCHEMES:
        other, kind = _HTTP_ONLY, "http:// or https://"
    elif scheme in ("http", "https"):
        other, kind = _TCP_ONLY, "tcp:// or tls://"
    choices = tuple(key for key in known if key not in other)
    for key in reader.values:
        if key in known:
            continue
        where = _ASTERISK_CONF.get(key.lower())
        if where is not None:
            raise reader.error(
                key,
                f"unknown key: {key} is a setting of Asterisk's {where}, not of "
                "router.toml (docs/asterisk.md)",
            )
        near = closest(key, known)
        if near is not None and near in other:
            raise reader.error(
                key,
                f"unknown key; {near!r} is close, but applies to {kind} urls only "
                f"(known here: {', '.join(sorted(choices))})",
            )
        raise reader.error(key, f"unknown key{_suggest(key, choices)}")


def _url(reader: SettingsReader) -> str:
    raw = reader.string("url")
    if "@" in raw:
        # Checked before anything that quotes the URL back: the part before '@'
        # may be a password, and error messages end up in logs and tickets.
        raise reader.error(
            "url",
            "put no credentials in the URL (user:password@host); "
            "use username and secret or secret_env",
        )
    try:
        parts = urllib.parse.urlsplit(raw.strip())
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed '[' of a host
        raise reader.error("url", f"not a URL ({exc}): {raw!r}") from None
    if parts.scheme not in ("http", "https", *TCP_SCHEMES):
        raise reader.error("url", f"expected http://, https://, tcp:// or tls://, got {raw!r}")
    if not parts.hostname:
        raise reader.error("url", f"no host in {raw!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise reader.error("url", f"bad port in {raw!r}") from None
    if parts.username or parts.password:
        raise reader.error("url", "put no credentials in the URL; use username and secret")
    if parts.query or parts.fragment:
        raise reader.error("url", f"expected no query or fragment, got {raw!r}")
    if parts.scheme in TCP_SCHEMES:
        if parts.path.strip("/"):
            raise reader.error(
                "url",
                f"a {parts.scheme}:// url is host and port only (AMI has no path), got {raw!r}",
            )
        if parts.port is None:
            raise reader.error(
                "url",
                f"give the manager.conf port, e.g. '{parts.scheme}://{parts.netloc}:"
                f"{5038 if parts.scheme == 'tcp' else 5039}'",
            )
        return f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    last = path.rsplit("/", 1)[-1].lower()
    if last in _ENDPOINTS:
        prefix = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, path[: -len(last) - 1], "", "")
        )
        raise reader.error(
            "url", f"give the http.conf prefix, not the endpoint: drop '/{last}' (e.g. {prefix!r})"
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def url_problem(raw: str) -> str | None:
    """What ``[asterisk] url`` would say of ``raw`` (a ``--url`` checked before
    router.toml is read, router/commands/_values.py); None when it takes it."""
    reader = SettingsReader("asterisk", {"url": raw}, {"url": COMMAND_LINE}, Path.cwd())
    try:
        _url(reader)
    except ConfigError as exc:
        return str(exc).removeprefix(f"{COMMAND_LINE}: [asterisk] url: ")
    return None


def _secret_value(reader: SettingsReader) -> str:
    # Like reader.string("secret"), but a wrong value is never quoted back.
    value = reader.values["secret"]
    if not isinstance(value, str):
        kind = _show(value).split(" ", 1)[0]
        raise reader.error("secret", f"expected a string, got a {kind} (value not shown)")
    if not value.strip():
        raise reader.error("secret", "must not be empty")
    return value


def _secret(reader: SettingsReader, environ: Mapping[str, str]) -> tuple[str, str]:
    if reader.origins.get("secret") == COMMAND_LINE and reader.has("secret"):
        return _secret_value(reader), COMMAND_LINE
    if reader.has("secret") and reader.has("secret_env"):
        raise reader.error("secret", "give either secret or secret_env, not both")
    if reader.has("secret"):
        return _secret_value(reader), reader.origins.get("secret", "file")
    if reader.has("secret_env"):
        name = reader.string("secret_env")
        if _ENV_NAME.fullmatch(name) is None:
            # Most likely the secret itself was pasted here: do not echo it.
            raise reader.error(
                "secret_env",
                "expected the name of an environment variable "
                "(letters, digits and _), not the secret itself "
                "(value not shown)",
            )
        value = environ.get(name)
        if not value:
            raise reader.error("secret_env", env_unset(name))
        return value, f"env:{name}"
    value = environ.get(SECRET_ENV)
    if value:
        return value, f"env:{SECRET_ENV}"
    raise reader.error(
        "secret",
        f"required: set secret or secret_env, pass --secret-env NAME, or set {SECRET_ENV}",
    )


#: ``auth`` per transport: AJAM's modes, native AMI's.
_AUTH_MODES = {False: ("cookie", "digest"), True: ("plain", "md5")}


def _check_transport_keys(reader: SettingsReader, url: str, *, native: bool) -> None:
    """Refuse the keys of the other transport, all of them in one error: a
    router.toml switched from http:// to tcp:// (or back) would otherwise fail
    once per key left over."""
    wrong = [key for key in (_HTTP_ONLY if native else _TCP_ONLY) if reader.has(key)]
    auth = reader.values.get("auth")
    auth_wrong = isinstance(auth, str) and auth in _AUTH_MODES[not native]
    if not wrong and not auth_wrong:
        return
    kind = "http:// or https://" if native else "tcp:// or tls://"
    here = " or ".join(repr(mode) for mode in _AUTH_MODES[native])
    if not wrong:
        raise reader.error(
            "auth", f"expected {here}, got {auth!r}, which applies to {kind} urls only"
        )
    message = f"applies to {kind} urls only, and url is {url!r}"
    others = wrong[1:]
    if others:
        message += f"; so do {', '.join(others)}"
    if auth_wrong:
        message += f"; and auth {auth!r} is for {kind} urls (here {here})"
    raise reader.error(wrong[0], message)


#: TLS settings: beside a plain http:// or tcp:// url they are refused.
_TLS_KEYS = ("verify", "client_cert", "client_key")


def _for_command_line_url(reader: SettingsReader, *, native: bool, https: bool) -> SettingsReader:
    """With ``--url`` on the command line, the file's keys that do not apply to
    that url's transport are left out, not refused: ``callrouter ami Ping --url
    tcp://...`` beside an AJAM router.toml must work, as the flag overrides the
    file. Keys the command line gives itself are checked as ever, and so is a
    file whose own url and keys disagree."""
    if reader.origins.get("url") != COMMAND_LINE:
        return reader
    other = [*(_HTTP_ONLY if native else _TCP_ONLY)]
    if not https:
        other += _TLS_KEYS
    auth = reader.values.get("auth")
    if isinstance(auth, str) and auth in _AUTH_MODES[not native]:
        other.append("auth")
    dropped = {
        key for key in other if key in reader.values and reader.origins.get(key) != COMMAND_LINE
    }
    if not dropped:
        return reader
    values = {key: value for key, value in reader.values.items() if key not in dropped}
    return SettingsReader(
        reader.section,
        values,
        reader.origins,
        reader.base,
        lines=reader.lines,
        path=reader.table_path,
        flags=reader.flags,
    )


def _asterisk(reader: SettingsReader, environ: Mapping[str, str]) -> AsteriskSettings:
    _reject_unknown_asterisk(reader)
    url = _url(reader)
    native = url.startswith(tuple(f"{s}://" for s in TCP_SCHEMES))
    https = url.startswith(("https://", "tls://"))
    reader = _for_command_line_url(reader, native=native, https=https)
    _check_transport_keys(reader, url, native=native)
    verify: bool | Path = True
    if reader.has("verify"):
        raw = reader.values["verify"]
        if isinstance(raw, bool):
            verify = raw
        elif isinstance(raw, str):
            ca = reader.path("verify", must_exist=True)
            assert ca is not None
            verify = ca
        else:
            raise reader.error(
                "verify", f"expected true, false or a CA file path, got {_show(raw)}"
            )
    client_cert = reader.path("client_cert", must_exist=True)
    client_key = reader.path("client_key", must_exist=True)
    if client_key is not None and client_cert is None:
        raise reader.error("client_key", "needs client_cert too")
    for key in _TLS_KEYS:
        # ``verify = true`` too: beside a plain url it would read as a promise
        # of checked TLS that nothing keeps.
        if not https and reader.has(key):
            raise reader.error(key, f"TLS options need an https:// or tls:// url, got {url!r}")
    secret, source = _secret(reader, environ)
    return AsteriskSettings(
        url=url,
        username=reader.string("username"),
        secret=secret,
        secret_source=source,
        auth=cast(
            AuthMode,
            reader.choice("auth", _AUTH_MODES[native], _AUTH_MODES[native][0]),
        ),
        format=cast(Format, reader.choice("format", ("rawman", "mxml"), "rawman")),
        verify=verify,
        client_cert=client_cert,
        client_key=client_key,
        connect_timeout=reader.seconds("connect_timeout", 5.0),
        request_timeout=reader.seconds("request_timeout", 10.0),
        waitevent_timeout=reader.seconds("waitevent_timeout", 20.0),
        http_client=cast(
            Literal["native", "httpx"], reader.choice("http_client", ("native", "httpx"), "native")
        ),
        max_response_bytes=reader.integer(
            "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, 64 * 1024, 1024 * 1024 * 1024
        ),
        ping_interval=reader.seconds("ping_interval", 5.0),
        events=cast(Literal["auto", "all"], reader.choice("events", ("auto", "all"), "auto")),
    )


def _router(reader: SettingsReader, environ: Mapping[str, str]) -> RouterSettings:
    reader.reject_unknown(_KEYS["router"])
    rules = tuple(reader.base_for("rules") / p for p in reader.strings("rules", ("rules",)))
    if not rules:
        raise reader.error("rules", "expected at least one rules path")
    state_dir = reader.path("state_dir")
    if state_dir is None:
        # systemd's StateDirectory= sets this; otherwise beside the config file.
        state_dir = (
            Path(environ["STATE_DIRECTORY"])
            if environ.get("STATE_DIRECTORY")
            else reader.base / "state"
        )
    return RouterSettings(
        rules=rules,
        state_dir=state_dir,
        log_format=cast(LogFormat, reader.choice("log_format", ("text", "json"), "text")),
        shadow=reader.boolean("shadow", False),
        location_pattern=_location_pattern(reader),
        dialplan_audit_interval=_audit_interval(reader),
    )


def _audit_interval(reader: SettingsReader) -> float:
    """0 (off), or 10 s to a day: each look is a few ``ShowDialPlan``s, and
    more often than that Asterisk would be asked for nothing new."""
    value = reader.number("dialplan_audit_interval", 300.0, -math.inf, math.inf)
    if value != 0 and not 10 <= value <= 86400:
        raise reader.error(
            "dialplan_audit_interval",
            f"expected 0 (off) or 10 to 86400 seconds, got {value:g}",
        )
    return value


def _location_pattern(reader: SettingsReader) -> str:
    pattern = reader.string("location_pattern", DEFAULT_LOCATION_PATTERN)
    try:
        LocationPolicy.from_pattern(pattern)
    except re.error as exc:
        raise reader.error("location_pattern", f"not a regular expression: {exc}") from None
    return pattern


def _plugins(reader: SettingsReader) -> PluginSettings:
    tables: dict[str, Mapping[str, object]] = {}
    for key, value in reader.values.items():
        if key in _KEYS["plugins"]:
            continue
        if isinstance(value, dict):
            tables[key] = MappingProxyType(dict(value))
            continue
        raise ConfigError(
            f"{reader.where(key)}: [plugins] {key}: unknown key{_suggest(key, _KEYS['plugins'])}; "
            f"a plugin's own settings go in a [plugins.{key}] table"
        )
    enabled = reader.strings("enabled", ())
    disabled = reader.strings("disabled", ())
    both = sorted(set(enabled) & set(disabled))
    if both:
        raise reader.error("disabled", f"{', '.join(both)} also listed in enabled")
    return PluginSettings(enabled=enabled, disabled=disabled, settings=MappingProxyType(tables))


#: router.toml is read whole (router.textfiles): the biggest a real one gets is
#: a directory written inline ([plugins.directory] entries), a few megabytes.
MAX_CONFIG_BYTES = 8_000_000


def _read_file(path: Path) -> tuple[dict[str, object], str, str] | None:
    """The file's tables, its text (for the lines of errors) and the SHA-256 of
    the bytes they were parsed from (:attr:`Config.digest`); None: no file."""
    try:
        raw = read_bounded(path, MAX_CONFIG_BYTES)
        text = raw.decode("utf-8")
        return tomllib.loads(text), text, hashlib.sha256(raw).hexdigest()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigUnreadable(f"{path}: is a folder, not a file") from None
    except FileTooBig as exc:
        raise ConfigUnreadable(
            f"{path}: {exc.size} bytes, more than the {MAX_CONFIG_BYTES} a settings file may hold"
        ) from None
    except OSError as exc:
        raise ConfigUnreadable(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigUnreadable(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigUnreadable(f"{path}: not valid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = DEFAULT_CONFIG_PATH,
    *,
    overrides: Mapping[str, object] = MappingProxyType({}),
    flags: Mapping[str, str] = MappingProxyType({}),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` and apply ``overrides``; raise :class:`ConfigError` on any problem.

    ``overrides`` maps ``"section.key"`` (``"asterisk.url"``, ``"router.shadow"``)
    to values as they would appear in the file; ``None`` values are ignored, so
    argparse defaults can be passed through as they are. ``flags`` maps the
    same keys to the flag that gave each (``"asterisk.verify": "--ca-file"``):
    an error in the value names the flag. A missing file is an
    error only when the overrides and the environment do not supply what
    ``[asterisk]`` requires. ``environ`` defaults to :data:`os.environ`.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    file = Path(path) if path is not None else None
    name = str(file) if file is not None else COMMAND_LINE
    read = _read_file(file) if file is not None else None
    data: dict[str, object] | None = read[0] if read is not None else None
    lines = key_lines(read[1]) if read is not None else {}
    missing = file is not None and data is None

    sections: dict[str, dict[str, object]] = {s: {} for s in _SECTIONS}
    origins: dict[str, dict[str, str]] = {s: {"": name} for s in _SECTIONS}
    for section, table in (data or {}).items():
        at = f"{name}:{lines[(section,)]}" if (section,) in lines else name
        if section not in _SECTIONS:
            raise ConfigError(f"{at}: [{section}]: unknown section{_suggest(section, _SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{at}: {section}: expected a [{section}] table, got {_show(table)}")
        sections[section].update(table)
        origins[section].update(dict.fromkeys(table, name))

    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS or not key:
            raise ConfigError(
                f"{COMMAND_LINE}: override {dotted!r}: expected SECTION.KEY "
                f"with SECTION one of {', '.join(_SECTIONS)}"
            )
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        sections[section][key] = value
        origins[section][key] = COMMAND_LINE
        # The file's line for it, if any, is no longer where the value is from.
        lines = {at: line for at, line in lines.items() if at[:2] != (section, key)}
        if section == "asterisk" and key in ("secret", "secret_env"):
            # The command line wins over whichever way the file gives the secret.
            other = "secret_env" if key == "secret" else "secret"
            if origins[section].get(other) != COMMAND_LINE:
                sections[section].pop(other, None)

    ast = sections["asterisk"]
    if missing and not ("url" in ast and "username" in ast):
        # Only commands with the connection flags pass "asterisk.url" (None
        # when not given): `callrouter check` has no --url to suggest.
        hint = " (and no --url and --username given to replace it)"
        raise ConfigUnreadable(f"{name}: no such file{hint if 'asterisk.url' in overrides else ''}")

    base = file.parent if file is not None and not missing else Path.cwd()
    base = base if base.is_absolute() else Path.cwd() / base

    given_flags = {
        (section, key): flags[dotted]
        for dotted in flags
        for section, _, key in [dotted.partition(".")]
        if origins.get(section, {}).get(key) == COMMAND_LINE
    }

    def reader(section: str) -> SettingsReader:
        named = {key: flag for (table, key), flag in given_flags.items() if table == section}
        return SettingsReader(
            section, sections[section], origins[section], base, lines=lines, flags=named
        )

    return Config(
        asterisk=_asterisk(reader("asterisk"), env),
        router=_router(reader("router"), env),
        plugins=_plugins(reader("plugins")),
        api=read_api(reader("api")) if "api" in (data or {}) else None,
        history=read_history(reader("history")),
        recordings=(
            read_recordings(reader("recordings")) if "recordings" in (data or {}) else None
        ),
        path=None if missing or file is None else file,
        lines=MappingProxyType(lines),
        from_command_line=frozenset(
            (section, key)
            for section, keys in origins.items()
            for key, origin in keys.items()
            if key and origin == COMMAND_LINE
        ),
        flags=MappingProxyType(given_flags),
        digest=read[2] if read is not None else None,
    )


def _holds_secret(config: Config) -> bool:
    if config.path is not None and config.asterisk.secret_source == str(config.path):
        return True
    # ``password_env = "ONEC_PASSWORD"`` names the variable that holds the
    # secret: the file then holds none, as the docs recommend. Only a name
    # does: the password itself pasted there (as ``secret_env`` refuses) is
    # a secret in the file.
    return any(
        any(word in key.lower() for word in _SECRET_WORDS)
        and value
        and not (
            key.lower().endswith("_env")
            and isinstance(value, str)
            and _ENV_NAME.fullmatch(value) is not None
        )
        for table in config.plugins.settings.values()
        for key, value in table.items()
    )


def exposed_secret_files(config: Config) -> list[str]:
    """Warnings for files holding a secret that group or others may read.

    ``router.toml`` when it holds the AMI secret or a plugin's password or
    token, the TLS client key and the API's TLS key. A warning, not an error:
    the file may sit in a folder nobody else can enter, which we do not try to
    prove.
    """
    files: list[Path] = []
    if config.path is not None and _holds_secret(config):
        files.append(config.path)
    if config.asterisk.client_key is not None:
        files.append(config.asterisk.client_key)
    if config.api is not None and config.api.key is not None:
        files.append(config.api.key)
    if config.recordings is not None and config.recordings.key_file is not None:
        files.append(config.recordings.key_file)
    warnings: list[str] = []
    for path in files:
        try:
            info = path.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o044:
            continue
        if info.st_uid == os.geteuid():
            advice = f"run: chmod 600 {path}"
        else:
            # chmod 600 on another user's file (root's, under the systemd
            # unit's DynamicUser=) would lock callrouter itself out of it.
            advice = (
                f"it belongs to uid {info.st_uid} and callrouter runs as uid "
                f"{os.geteuid()}, so chmod 600 would lock callrouter out: put the "
                "secret in the environment instead (secret_env, password_env; "
                "systemd EnvironmentFile=, docs/operations.md)"
            )
        warnings.append(
            f"{path}: holds a secret but is readable by group or others (mode {mode:04o}); "
            + advice
        )
    return warnings
