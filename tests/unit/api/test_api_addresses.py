"""The rate per client address of requests without a valid token
(:mod:`router.api.addresses`): its buckets, its keys, its bound."""

from __future__ import annotations

import hashlib

from router.api.addresses import AddressLimiter
from router.api.auth import Authenticator, RateLimiter
from router.api.settings import ApiSettings, TokenSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **changes: object) -> AddressLimiter:
    settings: dict[str, object] = {"rate": 2.0, "burst": 3, "addresses": 8, "clock": clock}
    settings.update(changes)
    return AddressLimiter(**settings)  # type: ignore[arg-type]


def test_an_address_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    limits = limiter(clock)
    assert [limits.wait("192.0.2.7") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limits.wait("192.0.2.7") == 0.5  # one in 1/rate s
    assert limits.retry_after(0.5) == 1
    assert limits.retry_after(1.2) == 2  # whole seconds, never sooner than the wait
    assert limits.wait("192.0.2.8") == 0.0  # another address: its own bucket
    clock.now += 0.5
    assert limits.wait("192.0.2.7") == 0.0
    assert limits.wait("192.0.2.7") > 0
    assert limits.refused == 2


def test_loopback_is_not_limited_unless_asked() -> None:
    clock = Clock()
    free = limiter(clock, burst=1)
    for address in ("127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"):
        assert [free.wait(address) for _ in range(100)] == [0.0] * 100, address
    assert len(free) == 0
    limited = limiter(clock, burst=1, loopback=True)
    assert limited.wait("127.0.0.1") == 0.0
    assert limited.wait("127.0.0.1") > 0


def test_an_ipv6_client_is_counted_by_its_64_and_a_mapped_ipv4_as_itself() -> None:
    clock = Clock()
    limits = limiter(clock, burst=2)
    assert limits.wait("2001:db8:1:2::1") == 0.0
    assert limits.wait("2001:db8:1:2:ffff::99") == 0.0  # the same /64
    assert limits.wait("2001:db8:1:2::5%eth0") > 0
    assert limits.wait("2001:db8:1:3::1") == 0.0  # another /64
    assert limits.wait("::ffff:192.0.2.1") == 0.0
    assert limits.wait("192.0.2.1") == 0.0
    assert limits.wait("192.0.2.1") > 0


def test_a_delegated_prefix_cannot_multiply_its_share_by_its_64s() -> None:
    """An ISP delegates a /56 or a /48 to one customer: with a bucket per /64
    alone, one client cycling through its /64s had 256 or 65,536 times the
    rate. Each /48 has a bucket of its own (``factor`` times a /64's) that
    each of its /64s spends from too (issue 16)."""
    clock = Clock()
    limits = limiter(clock, rate=1.0, burst=2, factor=4, addresses=1000)
    served = [limits.wait(f"2001:db8:7:{n:x}::1") == 0.0 for n in range(256)]
    assert served.count(True) == 8  # the /48's burst: 4 times 2, not 256 times 2
    # Refused by the /48 before the /64: no bucket made for each /64 tried.
    assert len(limits) == 1 + 8  # the /48 and the 8 /64s served
    # Its rate too: 4 a second in all however many /64s ask, not 1 each.
    clock.now += 1.0
    served = [limits.wait(f"2001:db8:7:{n:x}::1") == 0.0 for n in range(256, 512)]
    assert served.count(True) == 4
    # Another /48: its own buckets, whole.
    assert [limits.wait("2001:db8:8::1") for _ in range(2)] == [0.0, 0.0]


def test_hosts_in_different_64s_of_one_48_each_get_their_whole_rate() -> None:
    """Different users' /64s on one /48 (a site's subnets, neighbours behind
    one provider's /48) each get a /64's burst and rate, up to the /48's."""
    clock = Clock()
    limits = limiter(clock, rate=1.0, burst=2, factor=4, addresses=1000)
    for host in ("2001:db8:9:1::1", "2001:db8:9:2::1"):
        assert [limits.wait(host) for _ in range(2)] == [0.0, 0.0], host
        assert limits.wait(host) == 1.0  # its own /64's rate, not the /48's
    # A /64 refused by its own bucket spent nothing of the /48's: two more
    # /64s still get theirs whole.
    for host in ("2001:db8:9:3::1", "2001:db8:9:4::1"):
        assert [limits.wait(host) for _ in range(2)] == [0.0, 0.0], host
    assert limits.wait("2001:db8:9:5::1") == 0.25  # the /48's: 1 in 1/(4 x 1) s
    clock.now += 1.0
    assert limits.wait("2001:db8:9:1::1") == 0.0


def test_a_48_is_not_pushed_out_of_the_table_by_its_own_64s() -> None:
    """The table's bound holds /48s and /64s alike; a /48's bucket is used by
    every request of its /64s, so cycling them never pushes it out (which
    would hand the /48 a full bucket again)."""
    clock = Clock()
    limits = limiter(clock, rate=1.0, burst=1, factor=2, addresses=3)
    served = [limits.wait(f"2001:db8:a:{n:x}::1") == 0.0 for n in range(1000)]
    assert served.count(True) == 2
    assert len(limits) <= 3
    limits = limiter(clock, rate=1.0, burst=1, factor=2, addresses=1)
    for n in range(10):
        limits.wait(f"2001:db8:b:{n:x}::1")
        assert len(limits) == 1


def test_an_ipv4_address_mapped_into_ipv6_shares_the_ipv4_ones_bucket() -> None:
    """``::ffff:192.0.2.1`` (a dual-stack listener's view of an IPv4 client)
    is the IPv4 address itself, in either spelling: no /64 or /48 of ::ffff:0:0/96
    that all IPv4 clients would share."""
    clock = Clock()
    limits = limiter(clock, burst=3)
    assert limits.wait("::ffff:192.0.2.1") == 0.0
    assert limits.wait("::ffff:c000:201") == 0.0
    assert limits.wait("192.0.2.1") == 0.0
    assert limits.wait("::ffff:192.0.2.1") > 0
    assert limits.wait("::ffff:192.0.2.2") == 0.0  # another IPv4 client: its own
    assert len(limits) == 2


def test_the_listeners_token_check_is_the_apps_and_takes_nothing() -> None:
    """Before the app, the listener tells a request bearing a configured token
    (not counted per address; answered 429 when its own rate is spent) by the
    app's own check (Authenticator.over_rate), which takes nothing from the
    token's bucket: the app takes the request it serves (issue 16)."""
    clock = Clock()
    good = TokenSettings(
        name="good",
        digest=hashlib.sha256(b"cr_good").digest(),
        allow=("calls:read",),
        extensions=("*",),
        rate=1.0,
        burst=2,
    )
    tokens = Authenticator(ApiSettings(tokens={"good": good}), RateLimiter(clock))
    for header in (b"Bearer cr_good", b"bearer  cr_good "):
        assert tokens.over_rate(header) == (good, 0.0), header
    # A wrong token, another scheme, the token in another header's place: none.
    for header in (b"Bearer cr_bad", b"Basic cr_good", b"cr_good", b"Bearer "):
        assert tokens.over_rate(header) == (None, 0.0), header
    assert tokens.match("Bearer cr_good") is good  # the app's, over the same find
    assert [tokens.over_rate(b"Bearer cr_good")[1] for _ in range(10)] == [0.0] * 10
    tokens.admit(good)
    tokens.admit(good)
    assert tokens.over_rate(b"Bearer cr_good") == (good, 1.0)
    clock.now += 0.5
    assert tokens.over_rate(b"Bearer cr_good") == (good, 0.5)
    clock.now += 0.5
    assert tokens.over_rate(b"Bearer cr_good") == (good, 0.0)
    tokens.admit(good)  # within its rate again: taken once, by the app


def test_the_table_is_bounded_and_an_idle_address_used_longest_ago_goes() -> None:
    clock = Clock()
    limits = limiter(clock, burst=1, addresses=4)
    for n in range(1000):
        limits.wait(f"10.0.{n // 256}.{n % 256}")
    assert len(limits) == 4
    limits = limiter(clock, burst=1, addresses=2)  # full again after burst / rate = 0.5 s
    limits.wait("192.0.2.1")
    limits.wait("192.0.2.2")
    clock.now += 0.5
    assert limits.wait("192.0.2.1") == 0.0  # used again: now the newest
    limits.wait("192.0.2.3")  # the table full: 192.0.2.2, full again, goes
    assert limits.wait("192.0.2.1") > 0
    assert limits.wait("192.0.2.3") > 0  # its own bucket, spent
    clock.now += 0.5
    assert limits.wait("192.0.2.2") == 0.0  # forgotten: a new bucket


def test_more_addresses_than_the_table_share_one_overflow_bucket() -> None:
    """Past ``anonymous_addresses``, the bucket used longest ago was pushed
    out for each new address: one request each from more addresses than the
    table holds got a full bucket every time, no limit at all. While the
    table is full of buckets in use, an address without one spends from one
    overflow bucket they all share, and those in the table keep theirs
    (issue 16)."""
    clock = Clock()
    limits = limiter(clock, rate=1.0, burst=2, addresses=4)
    flood = [f"10.1.{n // 256}.{n % 256}" for n in range(1000)]
    served = [limits.wait(address) == 0.0 for address in flood]
    assert served.count(True) == 4 + 2  # the table's 4, the overflow's burst of 2
    assert len(limits) == 4
    assert limits.wait("192.0.2.9") > 0  # a newcomer too, while the flood goes on
    # The flood's rate is the overflow's: 1 a second for all its addresses.
    clock.now += 1.0
    served = [limits.wait(address) == 0.0 for address in flood[4:]]
    assert served.count(True) == 1
    # An address in the table keeps its own bucket through the flood.
    assert [limits.wait(flood[0]) for _ in range(3)] == [0.0, 0.0, 1.0]
    # Its buckets left alone burst / rate seconds (full again): they go for new ones.
    clock.now += 2.0
    assert [limits.wait("192.0.2.9") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert len(limits) == 4


def test_new_48s_past_the_table_spend_from_the_overflow_bucket_alone() -> None:
    """An IPv6 flood from many /48s: each new /48 and its /64 would make two
    buckets; past the table's bound neither is made, and the request spends
    once from the overflow bucket. A new /64 of a /48 in the table spends
    from its /48's and the overflow's (issue 16)."""
    clock = Clock()
    limits = limiter(clock, rate=1.0, burst=2, factor=4, addresses=4)
    served = [limits.wait(f"2001:db8:{n:x}::1") == 0.0 for n in range(1000)]
    assert served.count(True) == 2 + 2  # two /48s with their /64s, the overflow's 2
    assert len(limits) == 4
    clock.now += 1.0  # the overflow: one more; the first /48: 4 more
    assert limits.wait("2001:db8:0:1::1") == 0.0  # /48 in the table, new /64: overflow
    assert limits.wait("2001:db8:0:2::1") > 0  # the overflow spent
    assert [limits.wait("2001:db8::1") for _ in range(2)] == [0.0, 0.0]  # its own /64


def test_a_validly_signed_link_from_ipv6_spends_nothing_of_its_48() -> None:
    """1C on IPv6 fetching a hundred recordings by their links after an outage:
    each link has its own bucket, and the /48's is left for other requests
    (counted there too, the links would have used up the /48's burst)."""
    limits = limiter(Clock(), rate=1.0, burst=1, factor=2, addresses=1000)
    limits.links = lambda method, target: target.startswith(b"/good/")
    targets = [b"/good/%d?expires=1&sig=x" % n for n in range(100)]
    assert [limits.wait("2001:db8:5::1", b"GET", t) for t in targets] == [0.0] * 100
    assert limits.wait("2001:db8:5:1::1") == 0.0  # the /48's burst of 2 whole
    assert limits.wait("2001:db8:5:2::1") == 0.0


def test_a_rate_of_zero_limits_nothing() -> None:
    limits = limiter(Clock(), rate=0.0, burst=1)
    assert [limits.wait("192.0.2.7") for _ in range(10)] == [0.0] * 10
    assert len(limits) == 0


def test_a_validly_signed_recording_link_is_counted_by_itself_a_bogus_one_is_not() -> None:
    """1C fetches every recording by its signed link, with no token: after an
    outage, more than the burst at once from one address. A link the check
    takes (router.api.recordings.signed_link) is counted in a bucket of its
    own, so a hundred links all pass; every other target, a bogus link's, is
    counted as the address's (issue 16). hreview49: a valid link was not
    counted at all, so one leaked link (valid for url_ttl) was served as often
    as one address asked: past its burst it is 429 too."""
    clock = Clock()
    limits = limiter(clock, burst=1, addresses=1000)
    asked: list[tuple[bytes, bytes]] = []

    def links(method: bytes, target: bytes) -> bool:
        asked.append((method, target))
        return target.startswith(b"/good/")

    limits.links = links
    targets = [b"/good/%d?expires=1&sig=x" % n for n in range(100)]
    assert [limits.wait("192.0.2.7", b"GET", t) for t in targets] == [0.0] * 100
    assert limits.wait("192.0.2.7", b"GET", b"/good/7?expires=2&sig=y") > 0
    clock.now += 1.0
    assert limits.wait("192.0.2.7", b"GET", targets[7]) == 0.0
    assert limits.wait("192.0.2.7", b"GET", targets[7]) > 0
    assert limits.wait("192.0.2.7", b"GET", b"/bad") == 0.0
    assert limits.wait("192.0.2.7", b"GET", b"/bad") > 0
    assert limits.wait("192.0.2.7") > 0  # no target: no link
    assert asked[-1] == (b"GET", b"/bad")


def test_a_leaked_link_asked_for_from_each_64_of_a_48_shares_one_bucket() -> None:
    """A signed link is counted by its address and itself, an IPv6 address by
    its /48: a leaked link asked for from 1,000 /64s of one delegation (a /48
    holds 65,536) is held to one link's rate, as from one address. Before
    (hrev50) each /64 had a bucket of its own for it, and the /48's bucket
    was not spent either: 1,000 times the rate."""
    limits = limiter(Clock(), rate=1.0, burst=1, addresses=10_000)
    limits.links = lambda method, target: target.startswith(b"/good/")
    link = b"/good/7?expires=1&sig=x"
    served = [limits.wait(f"2001:db8:5:{n:x}::1", b"GET", link) == 0.0 for n in range(1000)]
    assert served.count(True) == 1
    # Another /48's client, and another link of the same /48, keep theirs.
    assert limits.wait("2001:db8:6::1", b"GET", link) == 0.0
    assert limits.wait("2001:db8:5::1", b"GET", b"/good/8?expires=1&sig=x") == 0.0
