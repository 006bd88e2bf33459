"""The live page's requests, counted against the token that signed the page in.

A request bearing a valid session cookie of the live page (an ``EventSource``
can send no token, so the page has a cookie, :mod:`router.api.session`) is a
request of the token that signed it in, as a bearer request of that token is:
it spends from that token's own bucket (``[api.tokens.NAME] rate`` and
``burst``, the app's :class:`router.api.auth.RateLimiter`), wherever it comes
from, and past it the listener answers ``429`` before the app.

Counted by its session instead (``[api] anonymous_rate`` for each), a holder of
the token signed in S times (each sign-in held only to the token's rate) and
got S times that rate on the page's files and its stream: a few hundred
sign-ins in a minute were a few thousand requests a second the app never saw.
Every session of one token now shares the token's one bucket, so the token's
``rate`` is what the page and its API clients get together, and the operators
of one office behind one NAT address still do not share that address's
anonymous rate (they share their token's, which the administrator sizes: each
page's load is about 7 requests, and ``events_waiters`` bounds its open pages).

Only the page's own paths under ``/ui/`` are counted so (the cookie's path):
a session cookie sent to the sign-in, ``/healthz``, ``/metrics`` or an
``/api/v1`` path is no page's request and is counted by its address. The
requests the app itself takes from the token's bucket (the page's stream and
its explain, :func:`router.api.ui.routes`) are only checked here, nothing
taken, as a bearer request is (:meth:`router.api.auth.Authenticator.over_rate`):
one request spends one, whoever takes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final
from urllib.parse import unquote_to_bytes

from router.api.auth import Authenticator
from router.api.settings import TokenSettings

__all__ = ["PageRate", "page_path"]

#: The live page's paths its session's requests are counted on (its cookie's
#: path, ``/ui/``): not the sign-in, which makes a session.
_PAGE: Final = b"/ui/"
_SIGN_IN: Final = b"/ui/login"
#: The page's requests (method, decoded path) the app takes from the token's
#: bucket itself (``require`` in router/api/ui.py): checked here, not taken.
_TAKEN_BY_APP: Final = frozenset(
    {
        (b"GET", b"/ui/stream"),
        (b"HEAD", b"/ui/stream"),
        (b"POST", b"/ui/explain"),
    }
)


def page_path(target: bytes) -> bytes | None:
    """The decoded path of the request line's ``target`` when it is one of the
    live page's own paths a session is counted on (as the app routes it:
    percent-decoded), else None. A session cookie sent anywhere else (the
    sign-in, ``/healthz``, ``/metrics``, an ``/api/v1`` request) is no page's
    request (hreview49b)."""
    path = target.partition(b"?")[0]
    if b"%" in path:
        path = unquote_to_bytes(path)
    if not path.startswith(_PAGE) or path.rstrip(b"/") == _SIGN_IN:
        return None
    return path


class PageRate:
    """The listener's count of the live page's requests by their token."""

    def __init__(
        self,
        tokens: Authenticator,
        sessions: Callable[[bytes], TokenSettings | None] | None = None,
    ) -> None:
        #: The app's tokens and their buckets.
        self.tokens = tokens
        #: The token whose valid session a raw ``Cookie`` header bears, or None
        #: (the page's own check, :meth:`router.api.session.Sessions.token_of`);
        #: None: the app has no live page.
        self.sessions = sessions

    def wait(
        self,
        method: bytes,
        target: bytes,
        cookie: bytes | None,
        bearer: TokenSettings | None = None,
    ) -> tuple[TokenSettings | None, float]:
        """For a request of the page bearing a valid session (or a valid token,
        ``bearer``, which the page never sends: it gets no more than a session
        does): its token and the seconds until it is within the token's rate
        again (0: it is, and one request is taken unless the app takes it).
        (None, 0) for any other request."""
        path = page_path(target)
        if path is None:
            return None, 0.0
        sessions = self.sessions
        token = sessions(cookie) if sessions is not None and cookie else None
        limiter = self.tokens.limiter
        if token is not None and (method, path) in _TAKEN_BY_APP:
            return token, limiter.waiting(token.name, token.rate, token.burst)
        # The session's token when both: the app serves the page by its cookie
        # (a bearer token alone takes nothing in the app: its 401 is taken here).
        token = token or bearer
        if token is None:
            return None, 0.0
        return token, limiter.take(token.name, token.rate, token.burst)
