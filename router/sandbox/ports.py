"""Loopback ports to listen on later, chosen outside the kernel's ephemeral range.

A port found free by binding port 0 comes from the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default): the
range the kernel hands out as the local port of every outgoing connection. A
test that picks such a port, stops its listener (kills the router, restarts
Asterisk) and listens on it again later finds it taken, now and then, by an
outgoing connection made meanwhile (seen in CI: "cannot listen on
127.0.0.1:55909: Address already in use" after a router was killed for tens of
seconds). :func:`listen_port` picks ports below that range, where the kernel
never places an outgoing connection, at random (two processes rarely pick the
same one) and checks each by binding it.

Media (RTP) ports are the opposite case: Asterisk and baresip bind them when a
call starts and try another one when the first is taken, so the sandbox puts
them inside the ephemeral range (:func:`rtp_ports`), away from the ports
chosen here.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from pathlib import Path

from router.errors import SandboxError

#: Where Linux keeps the range of local ports of outgoing connections.
RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Linux's default range, used when :data:`RANGE_FILE` cannot be read.
DEFAULT_RANGE = (32768, 60999)
#: The lowest port chosen: well above the well-known and registered services
#: one may run on a developer's machine (1024 is the floor when the ephemeral
#: range starts lower than this).
LOWEST = 10000
#: How many ports :func:`listen_port` tries before it gives up.
TRIES = 100

_random = random.SystemRandom()  # never reseeded by a test plugin: workers differ


def ephemeral_range(path: Path | None = None) -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (low, high),
    read from ``path`` (:data:`RANGE_FILE`).

    :data:`DEFAULT_RANGE` when the file is missing or does not hold two port
    numbers in order (not Linux, a sandboxed /proc).
    """
    try:
        text = (RANGE_FILE if path is None else path).read_text(encoding="ascii")
        low, high = (int(word) for word in text.split())
    except (OSError, UnicodeDecodeError, ValueError):
        return DEFAULT_RANGE
    if not 1 <= low <= high <= 65535:
        return DEFAULT_RANGE
    return low, high


def listen_candidates(ephemeral: tuple[int, int]) -> list[range]:
    """The port ranges :func:`listen_port` chooses from: below the ephemeral
    range, from :data:`LOWEST` (from 1025 when the range starts lower); above
    it only when nothing is left below; empty ranges left out."""
    low, high = ephemeral
    floor = LOWEST if low > LOWEST else 1025
    for span in (range(floor, low), range(high + 1, 65536)):
        if len(span) > 1:
            return [span]
    return []


def rtp_ports(ephemeral: tuple[int, int] | None = None) -> tuple[int, int]:
    """The media port range for the sandbox's Asterisk and phones: the upper
    half of the ephemeral range (never a port :func:`listen_port` returns)."""
    low, high = ephemeral_range() if ephemeral is None else ephemeral
    start = (low + high) // 2
    start += start % 2  # RTP takes even ports, RTCP the odd one after
    return (start, high) if high - start >= 2 else (low, high)


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick(spans: Sequence[range], index: int) -> int:
    for span in spans:
        if index < len(span):
            return span[index]
        index -= len(span)
    raise IndexError(index)


def listen_port(
    kind: socket.SocketKind = socket.SOCK_STREAM,
    *,
    also: Sequence[tuple[int, socket.SocketKind]] = (),
    ephemeral: tuple[int, int] | None = None,
    tries: int = TRIES,
) -> int:
    """A loopback port P free for ``kind`` (TCP by default) right now, outside
    the ephemeral range, to listen on later.

    ``also`` names more sockets that must be free too, as (offset, kind): a
    baresip phone listens on UDP P, TCP P and TCP P+1, so it asks for
    ``listen_port(SOCK_DGRAM, also=((0, SOCK_STREAM), (1, SOCK_STREAM)))``.
    ``ephemeral`` overrides the range read from :data:`RANGE_FILE`.

    Raises :class:`~router.errors.SandboxError` when no port is free in
    ``tries`` random picks, or when the ephemeral range leaves no port to pick.
    """
    low, high = ephemeral_range() if ephemeral is None else ephemeral
    top = max((offset for offset, _kind in also), default=0)
    spans = [span for span in listen_candidates((low, high)) if len(span) > top]
    spans = [range(span.start, span.stop - top) for span in spans]
    if not spans:
        raise SandboxError(
            f"no loopback port to listen on outside the ephemeral range {low}-{high}"
            f" ({RANGE_FILE}): it leaves none between 1025 and 65535"
        )
    total = sum(len(span) for span in spans)
    taken: list[int] = []
    for _ in range(min(tries, total)):
        port = _pick(spans, _random.randrange(total))
        if _bindable(port, kind) and all(_bindable(port + off, k) for off, k in also):
            return port
        taken.append(port)
    shown = ", ".join(str(port) for port in taken[:5]) + (", ..." if len(taken) > 5 else "")
    raise SandboxError(
        f"found no free loopback port outside the ephemeral range {low}-{high}"
        f" in {len(taken)} tries (taken: {shown})"
    )
