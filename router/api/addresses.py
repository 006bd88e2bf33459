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
not counted here where the app takes its token's rate (the protocol tells, by
the app's own check, :meth:`router.api.auth.Authenticator.over_rate`, and
:func:`router.api.protocol.token_checked`): that rate the protocol answers
the same way, ``429`` before the app. To ``/healthz``, ``/readyz``, the
OpenAPI document or ``/metrics`` without ``metrics_auth`` (no token's rate
taken) it is counted here as one without a token: not counted at all, a
token holder sent them without any limit (issue 16). One for a
recording by a signed link whose signature is valid and unexpired
(:func:`router.api.recordings.signed_link`, one HMAC for any target) is
counted in a bucket of its address (an IPv6 one's /48) and that link's own: 1C in pull mode
fetches every recording so, with no token, and after an outage it fetches
them all at once from one address, each by its own link; one link asked for
over and over (leaked: it is valid for ``url_ttl``) is held to the rate. A
link with a bad or expired signature is counted as any request without a
token.

Loopback addresses are not limited unless ``anonymous_loopback`` says so: a
reverse proxy on the same host (the setup docs/api.md recommends) brings every
client from 127.0.0.1, and the monitoring on the host itself must never be
refused. IPv6 clients are counted by their /64, which one host usually holds
whole, and by their /48 as well: an ISP delegates a /56 or a /48 to one
customer (256 or 65,536 /64s), so a bucket per /64 alone let one delegation
multiply its share by as many. Each /48 has a bucket of its own,
``anonymous_48_factor`` times the rate and burst of one /64 (8 by default),
that every request of its /64s also spends from: hosts in different /64s of
one /48 (a site's subnets, neighbours behind one provider's /48) each get
their whole rate until the /48's is spent, and the /48 as a whole never more
than its own. A request refused by the /48's bucket makes no /64 bucket. An
IPv4 address mapped into IPv6 (``::ffff:192.0.2.1``) counts as the IPv4
address itself.

A request that bears a valid session cookie of the live page, to one of the
page's own paths, is not counted here: it is a request of the token that
signed the page in, counted in that token's bucket (:mod:`router.api.page_rate`).
A bogus, expired or signed-out cookie, or a valid one sent anywhere else, is
counted as any request without a token.

The table holds at most ``anonymous_addresses`` buckets (a /48's counts as
one). A new key takes the place of the bucket used longest ago only when that
one has been left alone for ``burst / rate`` seconds (full again, as a new one
would be). While the table is full of buckets still in use, a key without one
gets none: its request spends from one overflow bucket (the rate and burst of
one address) that every such key shares. Evicting instead gave whoever held
more addresses than the table a full bucket with every request, so no limit
at all; now such a flood spends the overflow's rate, and the addresses
already in the table keep theirs (a new client may be refused until the flood
stops and the table's buckets refill). A /48's bucket is used by each request
of its /64s, so their own churn never pushes it out.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from router.api import auth

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
        factor: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.addresses = addresses
        self.loopback = loopback
        #: An IPv6 /48's rate and burst as a multiple of one /64's (``[api] anonymous_48_factor``).
        self.factor = factor
        self._clock = clock
        #: key -> (tokens left, when last counted); the least recently used first.
        self._buckets: dict[str, tuple[float, float]] = {}
        #: Whether a request (its method and raw target) asks for a recording
        #: by a link with a valid, unexpired signature: counted in a bucket of
        #: its own (the API's own, :func:`router.api.recordings.signed_link`,
        #: set once its app is served). None: no request is such a link.
        self.links: Callable[[bytes, bytes], bool] | None = None
        #: The bucket every key without one shares while the table is full of
        #: buckets in use: (tokens left, when last counted).
        self._overflow: tuple[float, float] | None = None
        #: Requests refused since the start.
        self.refused = 0
        #: Which bucket refused the last request refused, for
        #: ``callrouter_api_rate_limited_total``'s ``limit``: ``address``,
        #: ``ipv6_48``, ``link`` or ``overflow`` (a few names, never a key).
        self.refused_by = "address"

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(
        self,
        address: str | None,
        method: bytes = b"",
        target: bytes = b"",
    ) -> float:
        """Spend one request of ``address``'s bucket (one bearing no valid
        token): 0 when it may be served, else the seconds until one would be.
        One whose ``method`` and ``target`` (the request line's) are a
        recording's validly signed link (:attr:`links`) is counted in a bucket
        of its address and link."""
        if address is None or self.rate <= 0:
            return 0.0
        keys = _keys(address, self.loopback)
        if keys is None:
            return 0.0
        key, wider = keys
        links = self.links
        if links is not None and target and links(method, target):
            # Each link in a bucket of its own (its path: the recording), not
            # the address's nor its /48's: 1C fetching a hundred recordings at
            # once gets each, while one link asked for again and again is held
            # to the rate. Not counted at all, one leaked link (valid for
            # url_ttl) served its file as often as anyone asked (hreview49).
            # Only links the API signed have such buckets: no one can mint more.
            # An IPv6 client's by its /48, not its /64: a leaked link asked for
            # from each /64 of a delegation had a bucket in each, and none in
            # the /48's (hrev50); 1C, one host, is in one /64 of one /48.
            path = target.partition(b"?")[0].decode("ascii", "replace")
            key, wider = f"{wider or key} {path[:_LINK_KEY_MAX]}", None
            kind = "link"
        else:
            kind = "address"
        now = self._clock()
        buckets = self._buckets
        wide_rate, wide_burst = self.rate * self.factor, self.burst * self.factor
        missing = (wider is not None and wider not in buckets) + (key not in buckets)
        if missing and not self._room(missing, now):
            # The table full of buckets in use: no new one (evicting one gave a
            # flood from more addresses than the table a full bucket with each
            # request); what has none spends from the overflow bucket.
            if wider is not None and wider not in buckets:
                if key not in buckets:
                    key, wider = _OVERFLOW, None
                else:
                    wider, wide_rate, wide_burst = _OVERFLOW, self.rate, self.burst
            else:
                key = _OVERFLOW
        if wider is not None:
            # The /48 first: refused there, no bucket is made for the /64 (a
            # delegation's 65,536 /64s would fill the table with full ones).
            tokens = self._tokens(wider, wide_rate, wide_burst, now)
            if tokens < 1.0:
                self.refused_by = "overflow" if wider is _OVERFLOW else "ipv6_48"
                return self._refuse(wider, tokens, now, wide_rate)
        own = self._tokens(key, self.rate, self.burst, now)
        if own < 1.0:
            if wider is not None:
                self._keep(wider, tokens, now)  # nothing spent: still the newest used
            self.refused_by = "overflow" if key is _OVERFLOW else kind
            return self._refuse(key, own, now, self.rate)
        self._keep(key, own - 1.0, now)
        if wider is not None:
            self._keep(wider, tokens - 1.0, now)  # after its /64: newer than any of them
        return 0.0

    def _room(self, needed: int, now: float) -> bool:
        """Whether ``needed`` new buckets may be made at ``now``: the table has
        room, or the buckets they would push out (the ones used longest ago)
        have been left alone for ``burst / rate`` seconds, full again."""
        buckets = self._buckets
        evicted = len(buckets) + needed - self.addresses
        if evicted <= 0:
            return True
        idle = self.burst / self.rate
        for _, (_, then) in zip(range(evicted), buckets.values(), strict=False):
            if now - then < idle:
                return False
        return True

    def _tokens(self, key: str, rate: float, burst: int, now: float) -> float:
        """What ``key``'s bucket holds at ``now`` (a full one when it has none)."""
        found = self._overflow if key is _OVERFLOW else self._buckets.get(key)
        if found is None:
            return float(burst)
        return min(float(burst), found[0] + (now - found[1]) * rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        """``key``'s bucket holds ``tokens`` at ``now``, the newest used; a new
        one past the table's bound pushes out the one used longest ago (only
        one full again: :meth:`wait` asks :meth:`_room` first)."""
        if key is _OVERFLOW:
            self._overflow = (tokens, now)
            return
        buckets = self._buckets
        if buckets.pop(key, None) is None:
            while buckets and len(buckets) >= self.addresses:
                del buckets[next(iter(buckets))]
        buckets[key] = (tokens, now)

    def _refuse(self, key: str, tokens: float, now: float, rate: float) -> float:
        self._keep(key, tokens, now)
        self.refused += 1
        return (1.0 - tokens) / rate

    def retry_after(self, wait: float) -> int:
        """``Retry-After``'s whole seconds for a wait of ``wait`` seconds."""
        return auth.retry_after(wait)


#: The most of a link's path a bucket's key holds (a link's is at most 87 bytes).
_LINK_KEY_MAX = 128
#: The overflow bucket's key (never in the table: no address or link is it).
_OVERFLOW = "\x00overflow"


def _keys(address: str, loopback: bool) -> tuple[str, str | None] | None:
    """The buckets an address counts in: its own (an IPv6 one's /64, an IPv4
    one mapped into IPv6 as itself) and, for IPv6, its /48's; None when it is
    not limited (loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64], None  # not an IP (a Unix socket's path): counted as is
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and not loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        bits = int(ip)
        return (
            str(ipaddress.IPv6Network((bits >> 64 << 64, 64))),
            str(ipaddress.IPv6Network((bits >> 80 << 80, 48))),
        )
    return str(ip), None
