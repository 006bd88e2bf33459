"""The loopback ports the sandbox and the integration tests listen on
(router/sandbox/ports.py): outside the kernel's ephemeral range, so an outgoing
connection made while a listener is down cannot take its port (CI: a router
killed for 20 calls could not listen on 127.0.0.1:55909 again, "Address
already in use")."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.errors import SandboxError
from router.sandbox import Sandbox, free_port, free_udp_port, listen_port, ports
from router.sandbox.phones import _free_sip_port


class Picks:
    """A stand-in for the module's random source: the indexes given, in turn."""

    def __init__(self, indexes: list[int]) -> None:
        self._indexes: Iterator[int] = iter(indexes)
        self.asked = 0

    def randrange(self, stop: int) -> int:
        self.asked += 1
        index = next(self._indexes)
        assert 0 <= index < stop
        return index


def outside(port: int, ephemeral: tuple[int, int]) -> bool:
    low, high = ephemeral
    return 1024 < port <= 65535 and not low <= port <= high


def index_of(port: int, ephemeral: tuple[int, int], top: int = 0) -> int:
    """The random index that makes :func:`listen_port` pick ``port`` (``top``:
    the highest offset of its ``also``)."""
    index = 0
    for span in ports.listen_candidates(ephemeral):
        span = range(span.start, span.stop - top)
        if port in span:
            return index + span.index(port)
        index += len(span)
    raise AssertionError(f"{port} is no candidate")


def held(kind: socket.SocketKind, ephemeral: tuple[int, int]) -> socket.socket:
    """A socket bound to a port :func:`listen_port` may pick, kept bound."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", listen_port(kind, ephemeral=ephemeral)))
    return sock


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32768\t60999\n", (32768, 60999)),
        ("20000 50000", (20000, 50000)),
        ("", ports.DEFAULT_RANGE),
        ("32768", ports.DEFAULT_RANGE),
        ("a b", ports.DEFAULT_RANGE),
        ("60999 32768", ports.DEFAULT_RANGE),
        ("0 70000", ports.DEFAULT_RANGE),
    ],
)
def test_the_range_file_is_read_and_a_bad_one_falls_back(
    tmp_path: Path, text: str, expected: tuple[int, int]
) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text, encoding="ascii")
    assert ports.ephemeral_range(path) == expected


def test_a_missing_range_file_falls_back(tmp_path: Path) -> None:
    assert ports.ephemeral_range(tmp_path / "absent") == ports.DEFAULT_RANGE


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_no_port_is_in_the_range_the_file_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: socket.SocketKind
) -> None:
    # A range other than this machine's: the file is what counts.
    fake = tmp_path / "ip_local_port_range"
    fake.write_text("12000\t64000\n", encoding="ascii")
    monkeypatch.setattr(ports, "RANGE_FILE", fake)
    chosen = {listen_port(kind) for _ in range(200)}
    assert all(outside(port, (12000, 64000)) for port in chosen), sorted(chosen)
    assert len(chosen) > 100  # at random, not the same few ports for every worker


def test_the_sandbox_ports_are_outside_this_machines_range() -> None:
    """What the sandbox (Asterisk's HTTP, AMI and SIP ports), the phones and the
    integration tests' routers get. Before, the kernel's port 0 bind: always
    inside the range."""
    ephemeral = ports.ephemeral_range()
    for _ in range(20):
        assert outside(free_port(), ephemeral)
        assert outside(free_udp_port(), ephemeral)
        sip = _free_sip_port()
        assert outside(sip, ephemeral)
        assert outside(sip + 1, ephemeral)


def test_a_range_starting_low_leaves_ports_below_it_then_above() -> None:
    chosen = {listen_port(ephemeral=(2000, 60000)) for _ in range(50)}
    assert all(1024 < port < 2000 for port in chosen), sorted(chosen)
    chosen = {listen_port(ephemeral=(1025, 60000)) for _ in range(50)}
    assert all(port > 60000 for port in chosen), sorted(chosen)


def test_a_taken_port_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    ephemeral = (40000, 60999)
    with held(socket.SOCK_STREAM, ephemeral) as taken:
        port = taken.getsockname()[1]
        free = listen_port(ephemeral=ephemeral)
        picks = Picks([index_of(port, ephemeral), index_of(free, ephemeral)])
        monkeypatch.setattr(ports, "_random", picks)
        assert listen_port(ephemeral=ephemeral) == free
        assert picks.asked == 2


def test_a_phone_port_needs_tcp_p_and_p_plus_1_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """baresip listens on UDP P, TCP P and TCP P+1 (TLS): a port whose P+1 is
    taken over TCP is passed over though UDP P is free."""
    ephemeral = (40000, 60999)
    phone = ((0, socket.SOCK_STREAM), (1, socket.SOCK_STREAM))
    taken = held(socket.SOCK_STREAM, ephemeral)
    while taken.getsockname()[1] in (ports.LOWEST, 40000, 61000):  # P = P+1 - 1: a candidate
        taken.close()
        taken = held(socket.SOCK_STREAM, ephemeral)
    with taken:
        port = taken.getsockname()[1] - 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))  # UDP P is free (else no test of P+1)
        free = listen_port(socket.SOCK_DGRAM, also=phone, ephemeral=ephemeral)
        picks = Picks([index_of(port, ephemeral, 1), index_of(free, ephemeral, 1)])
        monkeypatch.setattr(ports, "_random", picks)
        assert listen_port(socket.SOCK_DGRAM, also=phone, ephemeral=ephemeral) == free
        assert picks.asked == 2


def test_the_error_names_the_range_and_the_taken_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    ephemeral = (40000, 60999)
    with held(socket.SOCK_DGRAM, ephemeral) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(ports, "_random", Picks([index_of(port, ephemeral)] * 3))
        with pytest.raises(SandboxError) as caught:
            listen_port(socket.SOCK_DGRAM, ephemeral=ephemeral, tries=3)
    message = str(caught.value)
    assert "outside the ephemeral range 40000-60999 in 3 tries" in message
    assert f"taken: {port}, {port}, {port}" in message


def test_a_range_leaving_no_port_is_a_clear_error() -> None:
    with pytest.raises(SandboxError, match=r"ephemeral range 1024-65535 .*none between 1025"):
        listen_port(ephemeral=(1024, 65535))


def test_media_ports_are_inside_the_range_apart_from_the_listening_ones(
    tmp_path: Path,
) -> None:
    """Asterisk (rtp.conf; 5000-31000 without it, across the listening ports)
    and baresip take media ports from the upper half of the ephemeral range."""
    start, end = ports.rtp_ports((32768, 60999))
    assert (start, end) == (46884, 60999)
    assert start % 2 == 0
    box = Sandbox(root=tmp_path / "rootfs", name="rtp", http_port=free_port(), ami_port=free_port())
    box.write_configs()
    rtp = (box.inst / "etc" / "rtp.conf").read_text(encoding="utf-8")
    low, high = ports.ephemeral_range()
    start, end = ports.rtp_ports()
    assert f"rtpstart = {start}\nrtpend = {end}\n" in rtp
    assert low <= start < end <= high
