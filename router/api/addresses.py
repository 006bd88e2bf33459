"""A rate per client address for requests that bear no valid token.

``/healthz``, ``/readyz``, ``/metrics`` (without ``metrics_auth``), the OpenAPI
document and every refusal (a 401, a 404) are answered to anyone who reaches
the listener, and each costs the event loop that routes calls: 1,200 such
requests a second from one address pushed routing latency from 2-3 ms to
40-180 ms. So each client address has a token bucket
(``[api] anonymous_rate`` a second, ``anonymous_burst`` at once) for the
requests that carry no valid token; past it the request is answered ``429``
with ``Retry-After`` before the app sees it (:mod:`router.api.protocol`), for
a fraction of what the app's answer costs. A request bearing a valid token is
never counted here: its token has its own rate (:mod:`router.api.auth`). Nor is
one for a recording by a signed link whose signature is valid and unexpired
(:func:`router.api.recordings.signed_link`, one HMAC for any target): 1C in
pull mode fetches every recording so, with no token, and after an outage it
fetches them all at once from one address. A link with a bad or expired
signature is counted as any request without a token.

Loopback addresses are not limited unless ``anonymous_loopback`` says so: a
reverse proxy on the same host (the setup docs/api.md recommends) brings every
client from 127.0.0.1, and the monitoring on the host itself must never be
refused. IPv6 clients are counted by their /64, which one host usually holds
whole. The table holds at most ``anonymous_addresses`` addresses; past that,
the one used longest ago goes (a bucket left alone for ``burst / rate``
seconds is full again, as a new one).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Iterable

__all__ = ["AddressLimiter"]


class AddressLimiter:
    """Token buckets by client address, for requests without a valid token."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        addresses: int,
        loopback: bool = False,
        digests: Iterable[bytes] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.addresses = addresses
        self.loopback = loopback
        self._digests = tuple(digests)
        self._clock = clock
        #: key -> (tokens left, when last counted); the least recently used first.
        self._buckets: dict[str, tuple[float, float]] = {}
        #: Whether a request (its method and raw target) asks for a recording
        #: by a link with a valid, unexpired signature: not counted, as a token
        #: is not (the API's own, :func:`router.api.recordings.signed_link`,
        #: set once its app is served). None: no request is such a link.
        self.links: Callable[[bytes, bytes], bool] | None = None
        #: Requests refused since the start (``callrouter_api_requests_total`` counts them too).
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(
        self,
        address: str | None,
        authorization: bytes | None,
        method: bytes = b"",
        target: bytes = b"",
    ) -> float:
        """Spend one request of ``address``'s bucket: 0 when it may be served,
        else the seconds until one would be. A request bearing a configured
        token (``authorization``, the header's value) is not counted, nor one
        whose ``method`` and ``target`` (the request line's) are a recording's
        validly signed link (:attr:`links`)."""
        if address is None or self.rate <= 0:
            return 0.0
        key = _key(address, self.loopback)
        if key is None:
            return 0.0
        if authorization is not None and self._valid(authorization):
            return 0.0
        links = self.links
        if links is not None and target and links(method, target):
            return 0.0
        now = self._clock()
        buckets = self._buckets
        found = buckets.pop(key, None)
        if found is None:
            tokens = float(self.burst)
            if len(buckets) >= self.addresses:
                del buckets[next(iter(buckets))]  # the one used longest ago
        else:
            tokens = min(float(self.burst), found[0] + (now - found[1]) * self.rate)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        self.refused += 1
        return (1.0 - tokens) / self.rate

    def retry_after(self, wait: float) -> int:
        """``Retry-After``'s whole seconds for a wait of ``wait`` seconds."""
        return max(1, math.ceil(wait))

    def _valid(self, authorization: bytes) -> bool:
        scheme, _, presented = authorization.partition(b" ")
        presented = presented.strip()
        if scheme.lower() != b"bearer" or not presented or not self._digests:
            return False
        digest = hashlib.sha256(presented).digest()
        found = False
        for known in self._digests:  # every one compared, as router.api.auth does
            if hmac.compare_digest(digest, known):
                found = True
        return found


def _key(address: str, loopback: bool) -> str | None:
    """The bucket an address counts in (an IPv6 one by its /64, an IPv4 one
    mapped into IPv6 as itself), or None when it is not limited (loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]  # not an IP (a Unix socket's path): counted as is
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and not loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
