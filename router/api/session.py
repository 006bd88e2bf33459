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
* signed (HMAC-SHA256 with a key kept in ``[router] state_dir``,
  ``ui-sessions.json``: :mod:`router.api.session_store`) over the token's
  name, its digest, a random session id and the times: it names a token, it
  is not one, and it dies when the token is replaced or removed from
  router.toml or loses ``ui:read`` or ``extensions = ["*"]`` (at the restart
  that reads router.toml). It outlives a restart of callrouter: the key
  and the sign-outs are read back, so an open page reconnects without a
  sign-in (``callrouter ui sign-out-all`` makes a new key: every page signs
  in again);
* ended on the server by Sign out: its session id is remembered as revoked
  until no renewal of it could still be valid, so a copy of the cookie (or of
  a renewal of it) taken before is refused too, not only the browser's
  forgotten (:meth:`Sessions.revoke`, at most :data:`MAX_REVOKED` per token:
  past that, a Sign out ends every session of that token made until then);
* short-lived: ``[api] ui_session`` seconds (default an hour) after the last
  time the page's stream connected (every few minutes while the page is
  open), and never more than :data:`MAX_SESSION` after the login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import cookie_parser

from router.api.session_store import SessionState, SessionStore
from router.api.settings import ApiSettings, TokenSettings

__all__ = [
    "COOKIE",
    "COOKIE_PATH",
    "MAX_REVOKED",
    "MAX_SESSION",
    "Session",
    "Sessions",
    "sees_everything",
]

log = logging.getLogger("callrouter.api.ui")

COOKIE = "callrouter_ui"
COOKIE_PATH = "/ui"
#: What a ``Cookie`` header holds when it may carry ours.
_NAME = COOKIE.encode() + b"="
#: Longest a session lives after its login, however often it is renewed.
MAX_SESSION = 12 * 3600.0
#: Largest cookie value read (a real one is about 190 bytes).
_MAX_VALUE = 512
#: Signed-out sessions remembered per token (each until it could have expired anyway).
MAX_REVOKED = 1000


def sees_everything(extensions: tuple[str, ...]) -> bool:
    """Whether patterns ``extensions`` cover every extension: what the live
    page needs, since it shows every call and decision unfiltered."""
    return "*" in extensions


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _payload(name: str, sid: str, issued: int, expires: int) -> str:
    """A cookie's first part, the one spelling :meth:`Sessions.issue` gives it."""
    text = json.dumps({"n": name, "s": sid, "i": issued, "e": expires}, separators=(",", ":"))
    return _b64(text.encode())


@dataclass(frozen=True, slots=True)
class Session:
    """A valid session: whose token, which login, when it was made, when it ends."""

    token: TokenSettings
    issued: int
    expires: int
    #: Random, made at login and kept by every renewal: what Sign out revokes.
    sid: str = ""


class Sessions:
    """Issues and checks the page's cookies for one running API."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        key: bytes | None = None,
        store: SessionStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``store``: where the key and the sign-outs are kept across restarts
        (read now, written at every sign-out); None keeps them in memory only,
        with ``key`` or a new random one."""
        self._settings = settings
        self._clock = clock
        self._store = store
        state = store.load() if store is not None else None
        self._key = state.key if state is not None else key or secrets.token_bytes(32)
        #: Signed-out session ids by token name -> when they would end anyway.
        self._revoked: dict[str, dict[str, int]] = {}
        #: Token name -> sessions issued up to this second are void (past MAX_REVOKED).
        self._void_until: dict[str, int] = {}
        if state is not None:
            now = int(self._clock())
            for name, ids in state.revoked.items():
                alive = {sid: ends for sid, ends in ids.items() if ends > now}
                if alive:
                    self._revoked[name] = dict(list(alive.items())[:MAX_REVOKED])
            cutoff = now - int(MAX_SESSION)
            self._void_until = {n: t for n, t in state.void_until.items() if t > cutoff}

    @property
    def lifetime(self) -> float:
        return self._settings.ui_session

    def _mac(self, token: TokenSettings, sid: str, issued: int, expires: int) -> bytes:
        message = f"v2|{token.name}|{sid}|{issued}|{expires}|".encode() + token.digest
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def issue(
        self, token: TokenSettings, *, issued: int | None = None, sid: str | None = None
    ) -> tuple[str, Session]:
        """A cookie value for ``token``, and what it stands for (a renewal keeps
        ``issued`` and ``sid``; a login makes both)."""
        now = int(self._clock())
        start = now if issued is None else issued
        sid = sid or _b64(secrets.token_bytes(12))
        expires = int(min(now + self.lifetime, start + MAX_SESSION))
        payload = _payload(token.name, sid, start, expires)
        value = f"{payload}.{_b64(self._mac(token, sid, start, expires))}"
        return value, Session(token, start, expires, sid)

    def check(self, value: str | None) -> Session | None:
        """The session ``value`` stands for, or None: forged, expired, or its token changed."""
        if not value or len(value) > _MAX_VALUE or value.count(".") != 1:
            return None
        payload_text, mac_text = value.split(".")
        try:
            payload = json.loads(_unb64(payload_text))
            name, sid = payload["n"], payload["s"]
            issued, expires = payload["i"], payload["e"]
        except (ValueError, TypeError, KeyError):
            return None
        if not (
            isinstance(name, str)
            and isinstance(sid, str)
            and type(issued) is int
            and type(expires) is int
        ):
            return None
        # Compared as text, not as decoded bytes: base64 decoding skips characters
        # outside its alphabet and ignores the last character's spare bits, so
        # several cookie values decode to one MAC; only the one we issued is valid.
        token = self._settings.tokens.get(name)
        if token is None or not hmac.compare_digest(
            mac_text.encode("ascii", "replace"),
            _b64(self._mac(token, sid, issued, expires)).encode("ascii"),
        ):
            return None
        # The MAC covers the fields, not the JSON that carries them: the same
        # fields spelled otherwise (spaces, key order, escapes, an extra key,
        # UTF-16) are not the cookie we issued either.
        if payload_text != _payload(name, sid, issued, expires):
            return None
        now = self._clock()
        if now >= expires or now >= issued + MAX_SESSION or "ui:read" not in token.allow:
            return None
        if not sees_everything(token.extensions):
            return None
        session = Session(token, issued, expires, sid)
        return None if self.revoked(session) else session

    def token_of(self, cookie: bytes) -> TokenSettings | None:
        """For the listener, before the app: the token whose valid session a
        request's ``Cookie`` header (its raw value; several joined by ``; ``)
        bears, or None. The app's own check (:meth:`check`) over the cookie the
        app would read (Starlette's parser, as ``Request.cookies``): the page's
        request is counted against that token's rate
        (:mod:`router.api.page_rate`), every session of one token in one
        bucket."""
        if _NAME not in cookie:
            return None  # no cookie of ours: nothing parsed
        value = cookie_parser(cookie.decode("latin-1")).get(COOKIE)
        session = self.check(value)
        return None if session is None else session.token

    def revoked(self, session: Session) -> bool:
        """Whether ``session`` was signed out (it, or another session of its token
        when that token's revoked sessions were too many to remember)."""
        name = session.token.name
        if session.issued <= self._void_until.get(name, -1):
            return True
        return session.sid in self._revoked.get(name, {})

    def revoke(self, session: Session) -> None:
        """End ``session`` and every renewal of it, whoever holds a copy (Sign out)."""
        now = int(self._clock())
        name = session.token.name
        revoked = self._revoked.setdefault(name, {})
        for sid, ends in list(revoked.items()):
            if ends <= now:
                del revoked[sid]
        if len(revoked) >= MAX_REVOKED:
            # Too many to remember one by one: void every session of this token
            # made until now (a login in this second included; sign in again).
            self._void_until[name] = max(now, session.issued)
            revoked.clear()
        else:
            # No renewal of it is valid past its login's MAX_SESSION.
            revoked[session.sid] = session.issued + int(MAX_SESSION)
        self._save()

    def _save(self) -> None:
        """Keep the sign-outs for the next start (a copy of a signed-out cookie
        must not come back to life with a restart)."""
        if self._store is None:
            return
        state = SessionState(self._key, self._revoked, self._void_until)
        try:
            self._store.save(state)
        except OSError as exc:
            log.error(
                "live page: cannot write %s: %s; the sign-out holds until callrouter "
                "restarts, not after",
                self._store.path,
                exc,
            )

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
