"""httpx behind the client's transport seam: for HTTP Digest, and ``http_client = "httpx"``.

The native pool (:mod:`router.ami.http`) is faster and is the default; httpx
stays for what it does and the pool does not: Digest authentication
(``/arawman``). An injected ``httpx`` transport (``httpx.MockTransport`` in a
test) runs through this adapter too, so it meets the same session handling,
retry and error mapping in the client as the native pool.

httpx's failures are translated here into the seam's error contract
(:mod:`router.ami.transport`); the client maps that contract onto
:mod:`router.errors`, once, for every transport. That includes what httpx's
Digest raises on a challenge it cannot answer (:class:`DigestAuth`).

As in the native pool, one deadline bounds the whole request (httpx's own
timeouts bound each read, not their sum: a reply trickled a byte at a time
would never end), and an answer is read as sent: ``Accept-Encoding:
identity`` is asked for (Asterisk compresses nothing anyway) and a compressed
answer is refused unread, since decompressing counts its bytes only after a
whole read has been inflated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Generator, Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from router.ami.http import (
    MAX_BODY,
    AuthChallengeError,
    ConnectFailedError,
    Headers,
    HTTPError,
    HTTPProtocolError,
    HTTPResponse,
    StaleConnectionError,
)
from router.ami.transport import HTTPRequest

__all__ = ["DigestAuth", "HttpxTransport", "httpx_errors"]


@contextlib.contextmanager
def httpx_errors() -> Iterator[None]:
    """httpx's exceptions, as the seam's: one mapping, also for the test kit's handlers."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TimeoutError(str(exc) or type(exc).__name__) from exc
    except httpx.ConnectError as exc:
        raise ConnectFailedError(str(exc) or type(exc).__name__) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        # A keep-alive connection the server closed while idle fails only when
        # reused; httpx does not say whether anything was sent, so these are
        # treated as stale (retried once, and only for idempotent actions).
        raise StaleConnectionError(str(exc) or type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        raise HTTPError(f"HTTP error: {exc}") from exc


class DigestAuth(httpx.DigestAuth):
    """httpx's HTTP Digest, failing on a challenge it cannot answer with the seam's errors.

    httpx raises ``KeyError`` for an algorithm it does not know (``FOO``,
    ``SHA-512-256``), ``NotImplementedError`` for ``qop="auth-int"`` alone,
    ``ValueError`` for a malformed header (``Digest ,,,=,"``),
    ``UnicodeEncodeError`` for a nonce that is not ASCII, and its own
    ``ProtocolError`` for a missing nonce or an unknown qop: none of them is
    in the seam's contract. An unsupported algorithm or qop becomes
    :class:`~router.ami.http.AuthChallengeError`, anything malformed an
    :class:`~router.ami.http.HTTPProtocolError`.
    """

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = super().auth_flow(request)
        try:
            sent = next(flow)
            while True:
                response = yield sent
                sent = flow.send(response)
        except StopIteration:
            return
        except KeyError as exc:
            raise AuthChallengeError(
                f"the Digest challenge asks for algorithm {str(exc.args[0])[:40]!r}, which "
                "is not supported (MD5, SHA, SHA-256, SHA-512 and their -sess forms are)"
            ) from exc
        except NotImplementedError as exc:
            raise AuthChallengeError(
                'the Digest challenge offers only qop="auth-int", which is not supported '
                '(qop="auth" is)'
            ) from exc
        except UnicodeError as exc:
            raise HTTPProtocolError(
                "the Digest challenge (or the username) holds characters that are not ASCII"
            ) from exc
        except httpx.ProtocolError as exc:
            if "qop" in str(exc):
                raise AuthChallengeError(
                    f'the Digest challenge offers no qop="auth": {exc}'[:200]
                ) from exc
            raise HTTPProtocolError(f"malformed Digest challenge: {exc}"[:200]) from exc
        except ValueError as exc:
            raise HTTPProtocolError(f"malformed Digest challenge: {exc}"[:200]) from exc


class HttpxTransport:
    """One ``httpx.AsyncClient`` for one Asterisk base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        verify: ssl.SSLContext | bool = True,
        connect_timeout: float = 3.0,
        request_timeout: float = 10.0,
        max_connections: int = 20,
        keepalive_expiry: float = 10.0,
        max_body: int = MAX_BODY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url
        self._max_body = max_body
        self._connect_timeout = connect_timeout
        self._http = httpx.AsyncClient(
            auth=auth,
            verify=verify,
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            transport=transport,
            # Asterisk compresses nothing; a compressed answer is refused (exchange).
            headers={"Accept-Encoding": "identity"},
            # The client keeps the session cookie itself (validated, one for
            # every transport): httpx's jar stores none, so none is sent twice.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    async def exchange(self, request: HTTPRequest, *, timeout: float | None) -> HTTPResponse:
        """Send through httpx, streaming the answer so an endless body stops at the bound.

        ``timeout`` bounds the whole request, as in the native pool: httpx's
        read timeout is per read, and a reply trickled a byte every half
        second would otherwise never time out.
        """
        async with asyncio.timeout(timeout):
            with httpx_errors():
                sent = self._http.build_request(
                    request.method,
                    self._base_url + request.target,
                    content=request.body,
                    headers=list(request.headers),
                    # Like the native pool: connecting has its own, shorter bound.
                    timeout=httpx.Timeout(timeout, connect=self._connect_timeout)
                    if timeout is not None
                    else httpx.USE_CLIENT_DEFAULT,
                )
                resp = await self._http.send(sent, stream=True)
                try:
                    _refuse_compressed(resp)
                    return HTTPResponse(
                        resp.status_code,
                        Headers(resp.headers.multi_items()),
                        await self._read_bounded(resp),
                    )
                finally:
                    await resp.aclose()

    async def _read_bounded(self, resp: httpx.Response) -> bytes:
        limit = self._max_body
        declared = resp.headers.get("content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            raise HTTPProtocolError(
                f"response body of {declared} bytes is over the limit of {limit} "
                "([asterisk] max_response_bytes)"
            )
        chunks: list[bytes] = []
        size = 0
        # No content coding to undo (_refuse_compressed let none through): the
        # bytes counted are the bytes read, nothing inflated.
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise HTTPProtocolError(
                    f"response body over {limit} bytes ([asterisk] max_response_bytes)"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._http.aclose()


def _refuse_compressed(resp: httpx.Response) -> None:
    """A content coding other than identity was not asked for: refused unread.

    Decompressing would count the bytes only after a whole read was inflated:
    3,477 bytes of ``Content-Encoding: gzip, gzip`` grew to 3.9 GB.
    """
    codings = [
        token
        for value in resp.headers.get_list("content-encoding")
        for part in value.split(",")
        if (token := part.strip(" \t").lower()) and token != "identity"
    ]
    if codings:
        raise HTTPProtocolError(
            f"compressed answer (Content-Encoding: {', '.join(codings)[:60]}), "
            "which was not asked for (Accept-Encoding: identity)"
        )
