"""``[api]`` of router.toml: where the API listens, its tokens, its bounds.

::

    [api]
    listen = "127.0.0.1:8089"        # host:port, [::1]:8089 for IPv6
    cert = "/etc/callrouter/api.pem"  # optional TLS: cert and key together
    key = "/etc/callrouter/api.key"
    rate = 20                         # default requests/s per token
    ami_timeout = 1.0                 # seconds an AMI action made for the API may take
    max_connections = 256             # open connections; past it a new one gets 503
    anonymous_rate = 20               # requests/s per client address without a valid token
    allowed_hosts = ["pbx.example"]   # Host names taken besides loopback ones
    health_details = "when_authorized" # what /healthz, /readyz tell without a token

    [api.tokens.crm]
    hash = "sha256:9f86d0..."         # `callrouter token new` prints these lines
    allow = ["calls:create", "ami:Status"]
    extensions = ["1*"]

:mod:`router.config` reads the table with the rest of the file, so
``callrouter check --config`` and ``callrouter run`` refuse the same mistakes
with the same ``file: [api.tokens.crm] allow: ...`` messages. This module is
plain data and validation: it imports no web framework and no engine, which
is what lets :mod:`router.config` (below the engine) depend on it.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from router.ami.catalog import load_catalog
from router.api.dial_settings import CLICK_TO_CALL_KEYS, DialSettings, read_dialing
from router.api.reader import Reader
from router.errors import AMIValidationError
from router.suggest import closest

__all__ = [
    "DEFAULT_ANONYMOUS_48_FACTOR",
    "DEFAULT_ANONYMOUS_ADDRESSES",
    "DEFAULT_ANONYMOUS_RATE",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_CONNECTIONS",
    "OPERATIONS",
    "ApiSettings",
    "Reader",
    "TokenSettings",
    "check_extension_pattern",
    "check_operation",
    "is_loopback",
    "read_api",
]

DEFAULT_LISTEN = "127.0.0.1:8089"

#: ``[api] health_details``, as Spring Boot's ``show-details``: who is told
#: the reasons behind ``/healthz`` and ``/readyz`` (Asterisk's URL, its
#: error, the manager user's name).
HealthDetails = Literal["always", "when_authorized", "never"]
HEALTH_DETAILS: tuple[HealthDetails, ...] = ("always", "when_authorized", "never")
#: Open connections to the API at most (``[api] max_connections``): well under
#: the 1024 file descriptors a service gets by default, well over what 1C and
#: a few live pages hold (each token's streams are bounded by events_waiters).
DEFAULT_MAX_CONNECTIONS = 256
#: ``[api] anonymous_rate``: requests a second one client address may send
#: without a valid token (``/healthz``, ``/readyz``, ``/metrics``, refusals),
#: far above any monitor's (Prometheus, Zabbix, a balancer ask every few
#: seconds), far below what starves routing (1,200 a second took it from
#: 2-3 ms to 40-180 ms).
DEFAULT_ANONYMOUS_RATE = 20.0
#: Client addresses whose rate is followed at once (``anonymous_addresses``).
DEFAULT_ANONYMOUS_ADDRESSES = 4096
#: ``[api] anonymous_48_factor``: an IPv6 /48's rate and burst, in /64s'. An ISP
#: delegates a /56 or a /48 to one customer (256 or 65,536 /64s, a bucket each):
#: the /48's own bucket bounds them all, and 8 hosts in different /64s of one
#: /48 still each get their whole rate at once.
DEFAULT_ANONYMOUS_48_FACTOR = 8

#: Every operation a token may be allowed, besides ``ami:<Action>`` and ``ami:*``.
OPERATIONS = (
    "calls:create",
    "calls:read",
    "calls:hangup",
    "calls:transfer",
    "calls:record",
    "forwarding:read",
    "forwarding:write",
    "presence:read",
    "events:read",
    "recordings:read",
    "metrics:read",
    "ui:read",
    "rules:explain",
)

#: An extension pattern: ``*`` alone, or dial-string characters with an optional trailing ``*``.
_PATTERN = re.compile(r"\*|[0-9A-Za-z#+_.-]{1,40}\*?")
_HASH = re.compile(r"sha256:([0-9a-f]{64})")
#: A name in ``allowed_hosts``: a DNS name or an IP address (IPv6 in brackets), no port.
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}\.?|\[[0-9A-Fa-f:.]{2,45}\]")
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})")

_KEYS = (
    "listen",
    "cert",
    "key",
    "rate",
    "burst",
    "ami_timeout",
    "events_retention",
    "events_max",
    "events_waiters",
    "events_card_lookup",
    "metrics_auth",
    "ui_session",
    "max_connections",
    "anonymous_rate",
    "anonymous_burst",
    "anonymous_addresses",
    "anonymous_loopback",
    "anonymous_48_factor",
    "allowed_hosts",
    "health_details",
    "tokens",
    *CLICK_TO_CALL_KEYS,
)
_TOKEN_KEYS = ("hash", "allow", "extensions", "rate", "burst")


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """One ``[api.tokens.NAME]``: the hash of the secret, never the secret."""

    name: str
    #: SHA-256 of the token's text (``hash = "sha256:<hex>"``).
    digest: bytes
    allow: tuple[str, ...]
    extensions: tuple[str, ...]
    #: Requests per second, refilled continuously; ``burst`` may be spent at once.
    rate: float
    burst: int

    def __repr__(self) -> str:
        return (
            f"TokenSettings(name={self.name!r}, allow={self.allow!r}, "
            f"extensions={self.extensions!r})"
        )


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The validated ``[api]`` table; its presence turns the API on."""

    host: str = "127.0.0.1"
    port: int = 8089
    cert: Path | None = None
    key: Path | None = None
    tokens: Mapping[str, TokenSettings] = field(default_factory=lambda: MappingProxyType({}))
    rate: float = 20.0
    burst: int = 40
    #: Bound on one AMI action made for an API request: past it the client gets 503.
    ami_timeout: float = 1.0
    #: Seconds the event feed keeps events for clients resuming from a cursor.
    events_retention: float = 3600.0
    #: Events the feed keeps at most (memory and its file in state_dir).
    events_max: int = 10_000
    #: Open event reads (long-polls, SSE streams) per token; 429 past it.
    events_waiters: int = 8
    #: The lookup whose answer rides on ``ringing`` as the caller card.
    events_card_lookup: str = "onec.responsible"
    #: ``/metrics`` asks for a token with ``metrics:read`` (else anyone who
    #: reaches the listener may scrape it: counts only, no caller data).
    metrics_auth: bool = False
    #: Seconds a live page's session cookie lasts since its last stream (re)connect.
    ui_session: float = 3600.0
    #: Open connections at most; past it a new one is answered 503 and closed.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Requests a second per client address without a valid token (0: no
    #: limit), ``anonymous_burst`` at once; past it 429 (router.api.addresses).
    anonymous_rate: float = DEFAULT_ANONYMOUS_RATE
    anonymous_burst: int = 2 * round(DEFAULT_ANONYMOUS_RATE)
    #: Client addresses followed at once; the one used longest ago goes past it.
    anonymous_addresses: int = DEFAULT_ANONYMOUS_ADDRESSES
    #: Whether loopback clients are limited too (a proxy, the host's monitoring).
    anonymous_loopback: bool = False
    #: An IPv6 /48's rate and burst together, as a multiple of one /64's.
    anonymous_48_factor: int = DEFAULT_ANONYMOUS_48_FACTOR
    #: Host header names taken besides the loopback ones (lowercase, no port):
    #: see :mod:`router.api.hosts`.
    allowed_hosts: tuple[str, ...] = ()
    #: Click-to-call and forwarding (router.api.calls, router.api.forwarding).
    dialing: DialSettings = field(default_factory=lambda: DialSettings())
    #: ``[api] health_details``; None: :attr:`details` chooses by the listener.
    health_details: HealthDetails | None = None

    @property
    def details(self) -> HealthDetails:
        """Who learns the health endpoints' reasons: everyone on a loopback
        listener (only this host reaches it), else only a request bearing a
        valid token; an open port tells no stranger where Asterisk is."""
        if self.health_details is not None:
            return self.health_details
        return "always" if is_loopback(self.host) else "when_authorized"

    @property
    def dial_prefix(self) -> str:
        return self.dialing.dial_prefix

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        return self.cert is not None


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``; brackets
    allowed): a listen address only this host reaches, or a ``Host`` naming
    one (router.api.hosts)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def check_operation(operation: str) -> str | None:
    """Why ``operation`` cannot be allowed, or None when it can."""
    if operation in OPERATIONS or operation == "ami:*":
        return None
    if operation.startswith("ami:"):
        name = operation[4:]
        try:
            spec = load_catalog().action(name)
        except AMIValidationError as exc:
            return str(exc).split(";")[0]
        if spec.name != name:
            return f"AMI actions are spelled as in Asterisk: did you mean 'ami:{spec.name}'?"
        return None
    known = (*OPERATIONS, "ami:*")
    match = closest(operation, known)
    hint = f"did you mean {match!r}? " if match is not None else ""
    return f"unknown operation {operation!r}; {hint}(known: {', '.join(known)}, ami:<Action>)"


def check_extension_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not an extension pattern, or None when it is."""
    if _PATTERN.fullmatch(pattern):
        return None
    return (
        f"bad extension pattern {pattern!r}: expected an extension ('101'), "
        "a prefix with a trailing * ('1*'), or '*' for all"
    )


#: A dotted quad, right or wrong: such a host is an IPv4 address or nothing.
_DOTTED = re.compile(r"[0-9.]+")


def _listen(reader: Reader) -> tuple[str, int]:
    """``listen`` as the server will bind it. The host is checked here, with
    no socket and no DNS: ``300.1.1.1`` or ``[::g]`` failed only when the
    server started, as ``[api] listen: cannot listen on ...`` with no line."""
    text = reader.string("listen", DEFAULT_LISTEN)
    found = _LISTEN.fullmatch(text)
    port = int(found.group("port")) if found else 0
    if found is None or not 0 < port < 65536:
        raise reader.error(
            "listen", f"expected HOST:PORT like {DEFAULT_LISTEN!r} or '[::1]:8089', got {text!r}"
        )
    v6, host = found.group("v6"), found.group("host")
    try:
        if v6 is not None:
            ipaddress.IPv6Address(v6)
        elif _DOTTED.fullmatch(host):
            ipaddress.IPv4Address(host)
        elif not _HOST_NAME.fullmatch(host) or host.startswith("[") or len(host) > 253:
            raise ValueError(host)
    except ValueError:
        raise reader.error(
            "listen",
            f"{(v6 or host)[:80]!r} is not an IP address or a host name "
            f"(expected HOST:PORT like {DEFAULT_LISTEN!r} or '[::1]:8089')",
        ) from None
    return v6 or host, port


def _tls_files(reader: Reader, cert: Path, key: Path) -> None:
    """Load ``cert`` and ``key`` as the server will, so that a file that is no
    PEM, or a key of another certificate, is told with its line by ``check``
    and at ``run``'s start (the server said ``[api] cert/key: cannot load``,
    naming no line, only as it started). No password is asked for: an
    encrypted key would make OpenSSL prompt on the terminal."""

    def no_password() -> bytes:
        raise ValueError("the key is encrypted; give an unencrypted key")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(cert))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise reader.error("cert", f"{str(cert)!r} holds no PEM certificate ({exc})") from None
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise reader.error(
            "key",
            f"cannot load {str(key)!r} as the key of cert {str(cert)!r} (an "
            f"unencrypted PEM private key of that certificate; {exc})",
        ) from None


def _allowed_hosts(reader: Reader) -> tuple[str, ...]:
    names = reader.strings("allowed_hosts")
    for name in names:
        if not _HOST_NAME.fullmatch(name) or len(name) > 253:
            raise reader.error(
                "allowed_hosts",
                f"expected host names like 'pbx.example' or '10.0.0.5' (no scheme, no port), "
                f"got {name[:80]!r}",
            )
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names))


def _token(reader: Reader, name: str, rate: float, burst: int) -> TokenSettings:
    reader.reject_unknown(_TOKEN_KEYS)
    text = reader.string("hash")
    digest = _HASH.fullmatch(text)
    if digest is None:
        raise reader.error(
            "hash",
            "expected 'sha256:' and 64 lowercase hex digits (`callrouter token new` prints it); "
            "the token itself never goes in this file",
        )
    allow = reader.strings("allow")
    if not allow:
        raise reader.error(
            "allow", "required: the operations this token may call (deny by default)"
        )
    for operation in allow:
        problem = check_operation(operation)
        if problem is not None:
            raise reader.error("allow", problem)
    extensions = reader.strings("extensions")
    if not extensions:
        raise reader.error(
            "extensions", "required: the extensions this token acts for ('101', '1*', or '*')"
        )
    for pattern in extensions:
        problem = check_extension_pattern(pattern)
        if problem is not None:
            raise reader.error("extensions", problem)
    return TokenSettings(
        name=name,
        digest=bytes.fromhex(digest.group(1)),
        allow=allow,
        extensions=extensions,
        rate=reader.number("rate", rate, 0, 10_000),
        burst=reader.integer("burst", max(burst, 1), 1, 100_000),
    )


def read_api(reader: Reader) -> ApiSettings:
    """The ``[api]`` table, every problem naming the file, table and key."""
    reader.reject_unknown(_KEYS)
    host, port = _listen(reader)
    cert = reader.path("cert", must_exist=True)
    key = reader.path("key", must_exist=True)
    if (cert is None) != (key is None):
        missing = "key" if key is None else "cert"
        raise reader.error(missing, "TLS needs both cert and key")
    if cert is not None and key is not None:
        _tls_files(reader, cert, key)
    rate = reader.number("rate", 20.0, 0, 10_000)
    burst = reader.integer("burst", max(2 * round(rate), 1), 1, 100_000)
    tokens: dict[str, TokenSettings] = {}
    raw = reader.values.get("tokens", {})
    if not isinstance(raw, dict):
        raise reader.error("tokens", "expected [api.tokens.NAME] tables")
    tables = reader.table("tokens")
    for name in raw:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise tables.error(name, "token names are letters, digits, '_', '-' and '.'")
        tokens[name] = _token(tables.table(name), name, rate, burst)
    seen: dict[bytes, str] = {}
    for token in tokens.values():
        if token.digest in seen:
            raise tables.table(token.name).error(
                "hash",
                f"the same hash as [api.tokens.{seen[token.digest]}]: give each its own token",
            )
        seen[token.digest] = token.name
    anonymous_rate = reader.number(
        "anonymous_rate", DEFAULT_ANONYMOUS_RATE, 0, 100_000, allow_zero=True
    )
    return ApiSettings(
        host=host,
        port=port,
        cert=cert,
        key=key,
        tokens=MappingProxyType(tokens),
        rate=rate,
        burst=burst,
        ami_timeout=reader.number("ami_timeout", 1.0, 0, 60),
        events_retention=reader.number("events_retention", 3600.0, 0, 7 * 86400),
        events_max=reader.integer("events_max", 10_000, 1, 1_000_000),
        events_waiters=reader.integer("events_waiters", 8, 1, 10_000),
        events_card_lookup=reader.string("events_card_lookup", "onec.responsible"),
        metrics_auth=reader.boolean("metrics_auth", False),
        ui_session=reader.number("ui_session", 3600.0, 60, 86400, low_included=True),
        max_connections=reader.integer("max_connections", DEFAULT_MAX_CONNECTIONS, 1, 10_000),
        anonymous_rate=anonymous_rate,
        anonymous_burst=reader.integer(
            "anonymous_burst", max(2 * round(anonymous_rate), 1), 1, 100_000
        ),
        anonymous_addresses=reader.integer(
            "anonymous_addresses", DEFAULT_ANONYMOUS_ADDRESSES, 1, 1_000_000
        ),
        anonymous_loopback=reader.boolean("anonymous_loopback", False),
        anonymous_48_factor=reader.integer(
            "anonymous_48_factor", DEFAULT_ANONYMOUS_48_FACTOR, 1, 65_536
        ),
        allowed_hosts=_allowed_hosts(reader),
        dialing=read_dialing(reader),
        health_details=_health_details(reader),
    )


def _health_details(reader: Reader) -> HealthDetails | None:
    if "health_details" not in reader.values:
        return None
    text = reader.string("health_details")
    for choice in HEALTH_DETAILS:
        if text == choice:
            return choice
    match = closest(text, HEALTH_DETAILS)
    hint = f"did you mean {match!r}? " if match is not None else ""
    message = f"unknown value {text!r}; {hint}(one of: {', '.join(HEALTH_DETAILS)})"
    raise reader.error("health_details", message)
