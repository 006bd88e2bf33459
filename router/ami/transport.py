"""The one seam between the AJAM client and whatever carries its requests.

The client (:mod:`router.ami.client`) owns everything that is AJAM: the
session, its cookie, logging in again, the one retry of an idempotent action
on a stale connection, and the mapping of failures onto :mod:`router.errors`.
A :class:`Transport` only carries one HTTP request and brings back its
response (both types, and the errors below, live in :mod:`router.ami.http`
beside the framing, so this module imports nothing that imports it back). Three implement it:

* :class:`~router.ami.http.ConnectionPool`, the lean keep-alive HTTP/1.1
  pool production uses (cookie auth, the default);
* :class:`~router.ami.httpx_transport.HttpxTransport`, httpx for HTTP Digest,
  ``http_client = "httpx"`` and injected ``httpx`` test transports;
* :class:`~router.testing.ReplayAsterisk`, the test kit's fake Asterisk, so
  engine tests run the client code production runs.

Failures a transport may raise, and what the client makes of them (the
error contract; anything else is a bug in the transport)::

    TimeoutError           no whole answer within            -> AMITimeoutError
                           ``timeout`` (which bounds the
                           whole request: waiting for a
                           connection, connecting, reading)
    StaleConnectionError   a reused connection died before   -> retried once if the
                           answering (nothing reached            action is idempotent,
                           Asterisk)                             else AMIConnectionError
    ConnectFailedError     no connection could be opened     -> AMIConnectionError
    AuthChallengeError     the server asks for a Digest      -> AMIAuthenticationError
                           algorithm or qop not implemented
    HTTPProtocolError      bytes that are not HTTP, or over  -> AMIProtocolError
                           a bound (an ambiguous framing, a
                           malformed Digest challenge, a
                           compressed answer)
    HTTPError, OSError     the connection broke otherwise    -> AMIConnectionError

The seam is request/response plus the event long-poll, which is just
another request (``WaitEvent``): nothing in it needs a socket of a given
kind. The native TCP AMI transport (port 5038) plugs in here: it reads the
action from the form body, sends it on its socket, and answers with the
action's messages as a rawman body, ``WaitEvent`` from the events the socket
has buffered; the client's session handling, retry and error mapping then
hold for it unchanged.
"""

from __future__ import annotations

from typing import Protocol

from router.ami.http import HTTPRequest, HTTPResponse

__all__ = ["HTTPRequest", "Transport"]


class Transport(Protocol):
    """Carries one AJAM request to Asterisk and brings its response back."""

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        """Send ``request``; return the whole response (status, headers, body).

        Any HTTP status is a response, not an error: the client reads 401, 404
        and the rest. Raises only what the module docstring lists.
        """
        ...

    async def aclose(self) -> None:
        """Close idle connections; no request is sent afterwards."""
        ...
