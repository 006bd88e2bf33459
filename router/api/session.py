"""The live page's session: a token exchanged once for a short-lived signed cookie.

A browser's ``EventSource`` cannot send an ``Authorization`` header, and a
token in a URL ends up in histories, proxies' logs and Referer headers. So
the page's login form posts the token once (JSON, never a query string) and
gets a cookie that is:

* ``HttpOnly``: the page's script cannot read it, so an injected script
  could not carry it away;
* ``SameSite=Strict`` and ``Path=/ui``: sent only by the page itself to the
  page's own paths, never by another site's form or link, never to the API's
  bearer endpoints; ``Secure`` when the listener has TLS;
* signed (HMAC-SHA256 with a key made at start and kept only in memory) over
  the token's name, its digest and the times: it names a token, it is not
  one, and it dies when the token is replaced or removed from router.toml,
  loses ``ui:read`` or ``extensions = ["*"]``, or callrouter restarts;
* short-lived: ``[api] ui_session`` seconds (default an hour) after the last
  time the page's stream connected (every few minutes while the page is
  open), and never more than :data:`MAX_SESSION` after the login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.api.settings import ApiSettings, TokenSettings

__all__ = ["COOKIE", "COOKIE_PATH", "MAX_SESSION", "Session", "Sessions", "sees_everything"]

COOKIE = "callrouter_ui"
COOKIE_PATH = "/ui"
#: Longest a session lives after its login, however often it is renewed.
MAX_SESSION = 12 * 3600.0
#: Largest cookie value read (a real one is about 150 bytes).
_MAX_VALUE = 512


def sees_everything(extensions: tuple[str, ...]) -> bool:
    """Whether patterns ``extensions`` cover every extension: what the live
    page needs, since it shows every call and decision unfiltered."""
    return "*" in extensions


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session: whose token, when it was made, when it ends."""

    token: TokenSettings
    issued: int
    expires: int


class Sessions:
    """Issues and checks the page's cookies for one running API."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._key = key or secrets.token_bytes(32)
        self._clock = clock

    @property
    def lifetime(self) -> float:
        return self._settings.ui_session

    def _mac(self, token: TokenSettings, issued: int, expires: int) -> bytes:
        message = f"v1|{token.name}|{issued}|{expires}|".encode() + token.digest
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def issue(self, token: TokenSettings, *, issued: int | None = None) -> tuple[str, Session]:
        """A cookie value for ``token``, and what it stands for (a renewal keeps ``issued``)."""
        now = int(self._clock())
        start = now if issued is None else issued
        expires = int(min(now + self.lifetime, start + MAX_SESSION))
        payload = json.dumps({"n": token.name, "i": start, "e": expires}, separators=(",", ":"))
        value = f"{_b64(payload.encode())}.{_b64(self._mac(token, start, expires))}"
        return value, Session(token, start, expires)

    def check(self, value: str | None) -> Session | None:
        """The session ``value`` stands for, or None: forged, expired, or its token changed."""
        if not value or len(value) > _MAX_VALUE or value.count(".") != 1:
            return None
        payload_text, mac_text = value.split(".")
        try:
            payload = json.loads(_unb64(payload_text))
            mac = _unb64(mac_text)
            name, issued, expires = payload["n"], payload["i"], payload["e"]
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(name, str) and type(issued) is int and type(expires) is int):
            return None
        token = self._settings.tokens.get(name)
        if token is None or not hmac.compare_digest(mac, self._mac(token, issued, expires)):
            return None
        now = self._clock()
        if now >= expires or now >= issued + MAX_SESSION or "ui:read" not in token.allow:
            return None
        if not sees_everything(token.extensions):
            return None
        return Session(token, issued, expires)

    def cookie(self, value: str, session: Session | None) -> str:
        """The ``Set-Cookie`` header: ``session`` None clears the cookie."""
        max_age = 0 if session is None else max(0, session.expires - int(self._clock()))
        parts = [
            f"{COOKIE}={value}",
            f"Path={COOKIE_PATH}",
            f"Max-Age={max_age}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if self._settings.tls:
            parts.append("Secure")
        return "; ".join(parts)
