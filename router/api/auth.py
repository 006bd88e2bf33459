"""Bearer tokens: who is calling, what they may do, for which extensions.

router.toml holds only SHA-256 digests of the tokens. A token is 32 random
bytes (``callrouter token new``), so a plain hash is enough: nobody can
guess such a token from its digest, and salting or stretching defends only
low-entropy secrets such as passwords. The presented token's digest is
compared with every configured digest by :func:`hmac.compare_digest`, all
of them, so neither the match nor its position shows in the timing.

Deny by default: a token may call only the operations it lists and act only
for the extensions its patterns cover. Each token has its own token bucket
(``rate`` per second, ``burst`` at once): one busy 1C server cannot starve
the others, and a leaked token cannot hammer Asterisk.

The audit line (logger ``router.api.audit``) is written once per request by
the app's middleware from :class:`Audit`, which :func:`authorize` fills in:
token name, operation, target, status. Never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from router.api.errors import ApiError, single_header
from router.api.settings import ApiSettings, TokenSettings

__all__ = [
    "Audit",
    "Authenticator",
    "RateLimiter",
    "Token",
    "audit_of",
    "authenticate",
    "authorize",
    "bearer",
    "hash_token",
    "new_token",
    "over_rate_detail",
    "retry_after",
]

#: Prefix of the tokens ``callrouter token new`` makes: easy to spot in a leak scanner.
TOKEN_PREFIX = "cr_"


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The line router.toml stores: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer(header: bytes) -> bytes | None:
    """The token an ``Authorization`` header's value presents (``Bearer
    <token>``, the scheme in any case), or None when it presents none."""
    scheme, _, presented = header.partition(b" ")
    presented = presented.strip()
    if scheme.lower() != b"bearer" or not presented:
        return None
    return presented


def pattern_matches(pattern: str, extension: str) -> bool:
    """``"*"`` any, ``"1*"`` a prefix, anything else the extension itself."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return extension.startswith(pattern[:-1])
    return extension == pattern


@dataclass(frozen=True, slots=True)
class Token:
    """An authenticated caller: the token's name and grants, never its text."""

    name: str
    operations: frozenset[str]
    extensions: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> Token:
        return cls(settings.name, frozenset(settings.allow), settings.extensions)

    def allows(self, operation: str) -> bool:
        if operation in self.operations:
            return True
        return operation.startswith("ami:") and "ami:*" in self.operations

    def sees(self, extension: str) -> bool:
        return any(pattern_matches(p, extension) for p in self.extensions)


class RateLimiter:
    """Token buckets by name: ``rate`` per second, up to ``burst`` saved up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, name: str, rate: float, burst: int) -> float:
        """Spend one request; 0 when allowed, else the seconds until one is."""
        now = self._clock()
        tokens, then = self._buckets.get(name, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / rate

    def waiting(self, name: str, rate: float, burst: int) -> float:
        """What :meth:`take` would answer, nothing taken: 0 when a request may
        be served, else the seconds until one may."""
        found = self._buckets.get(name)
        if found is None:
            return 0.0
        tokens = min(float(burst), found[0] + (self._clock() - found[1]) * rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate


@dataclass(slots=True)
class Audit:
    """What the audit line says about one request; filled in as it is handled."""

    token: str = "-"
    operation: str = "-"
    target: str = "-"
    outcome: str = ""


class Authenticator:
    """The configured tokens, their digests and their rate limits."""

    def __init__(self, settings: ApiSettings, limiter: RateLimiter | None = None) -> None:
        self._tokens = tuple(settings.tokens.values())
        self.limiter = limiter or RateLimiter()

    def identify(self, header: str | None) -> Token:
        """The token an ``Authorization`` header carries; 401 when none matches,
        429 when it is over its rate."""
        return self.admit(self.match(header))

    def match(self, header: str | None) -> TokenSettings:
        """The token an ``Authorization`` header carries, its rate not yet
        taken (:meth:`admit`); 401 when none matches."""
        if header is None:
            raise _unauthorized("no Authorization header: send 'Authorization: Bearer <token>'")
        presented = bearer(header.encode("utf-8", "surrogateescape"))
        if presented is None:
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        found = self.find(presented)
        if found is None:
            raise _unauthorized("unknown token")
        return found

    def find(self, presented: bytes) -> TokenSettings | None:
        """The configured token whose text ``presented`` is, or None. The one
        check of a token's text: the app's (:meth:`match`) and the listener's,
        before the app (:mod:`router.api.protocol`), are this one."""
        digest = hashlib.sha256(presented).digest()
        found: TokenSettings | None = None
        for settings in self._tokens:
            # Every digest is compared: no early exit that times the match.
            if hmac.compare_digest(digest, settings.digest):
                found = settings
        return found

    def over_rate(self, authorization: bytes) -> tuple[TokenSettings | None, float]:
        """For the listener, before the app: the configured token an
        ``Authorization`` header's raw value bears (None: none) and the seconds
        until it is within its rate again (0: it is; nothing is taken, the
        app's :meth:`admit` takes its request)."""
        presented = bearer(authorization)
        found = None if presented is None else self.find(presented)
        if found is None:
            return None, 0.0
        return found, self.limiter.waiting(found.name, found.rate, found.burst)

    def admit(self, token: TokenSettings) -> Token:
        """``token`` if it is within its rate (one request taken); else 429."""
        wait = self.limiter.take(token.name, token.rate, token.burst)
        if wait > 0:
            seconds = retry_after(wait)
            raise ApiError(
                429, over_rate_detail(token, seconds), headers={"Retry-After": str(seconds)}
            )
        return Token.from_settings(token)

    def names(self) -> Iterable[str]:
        return (t.name for t in self._tokens)


def retry_after(wait: float) -> int:
    """``Retry-After``'s whole seconds for a wait of ``wait`` seconds."""
    return max(1, math.ceil(wait))


def over_rate_detail(token: TokenSettings, seconds: int) -> str:
    """The 429's ``detail`` for ``token`` over its rate, the app's and the listener's."""
    return (
        f"token {token.name!r} is over its rate of {token.rate:g} requests/s; retry in {seconds} s"
    )


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="callrouter"'})


def audit_of(conn: HTTPConnection) -> Audit:
    """The request's audit record (made by the middleware, or here in bare tests)."""
    state = conn.scope.setdefault("state", {})
    audit = state.get("audit")
    if not isinstance(audit, Audit):
        audit = state["audit"] = Audit()
    return audit


def authenticate(conn: HTTPConnection) -> Token:
    """The caller's token (401/429), remembered for the rest of the request."""
    state = conn.scope.setdefault("state", {})
    token = state.get("token")
    if isinstance(token, Token):
        return token
    authenticator: Authenticator = conn.app.state.authenticator
    found = authenticator.match(single_header(conn, "authorization", "Authorization"))
    # Named before its rate is taken: the audit line of a 429 names the token
    # (its name, never its secret), as a 403's does.
    audit_of(conn).token = found.name
    token = state["token"] = authenticator.admit(found)
    return token


async def authorize(conn: HTTPConnection, operation: str, extension: str | None = None) -> Token:
    """The caller's token if it may do ``operation`` (for ``extension``); else 401/403/429.

    Records operation and target for the audit line first, so a refused
    request is audited with what it tried.
    """
    audit = audit_of(conn)
    audit.operation = operation
    if extension is not None:
        audit.target = extension
    token = authenticate(conn)
    if not token.allows(operation):
        raise ApiError(
            403,
            f"token {token.name!r} lacks the permission {operation!r}",
            missing_permission=operation,
        )
    if extension is not None and not token.sees(extension):
        raise ApiError(
            403,
            f"token {token.name!r} may not act for extension {extension!r} "
            f"(its extensions: {', '.join(token.extensions)})",
            extension=extension,
        )
    return token
