"""Mutation fuzzing of every parser of Asterisk-side bytes: only documented errors escape.

Seeds are the real captures in ``tests/fixtures/ami`` (both AJAM formats), also
wrapped in the three HTTP framings the native client reads (Content-Length,
chunked with random chunk sizes, read until close). Each input is one seed
mutated a few times by a ``random.Random`` with a fixed seed (hypothesis costs
too much per example for 100,000 of them) and goes through:

* the AMI layer (:mod:`router.ami.protocol`): ``parse_rawman``, ``parse_mxml``,
  the incremental ``RawmanParser`` with and without the TCP banner, under random
  chunking; then ``assemble_result``, ``split_waitevent`` and ``ListCollector``.
  Only :class:`~router.errors.AMIProtocolError` may escape;
* the HTTP framing (:class:`router.ami.http.ResponseParser`) under random
  chunking, then the body parser: only ``HTTPError`` (its
  ``HTTPProtocolError``) and ``AMIProtocolError`` may escape;
* the call tracker (:mod:`router.calls`), fed every event that parsed: nothing
  may escape at all.

The run is ``INPUTS`` inputs, the same ones every run (a fixed seed), however
long they take: a time budget made the count depend on how busy the machine
was (59,136 in 30 s on a loaded CI-sized host, below the floor). On the code before issue 10 it
fails within the first few thousand inputs (``²`` in the HTTP status line or
``Content-Length`` raised ``ValueError``; a non-numeric ``BridgeNumChannels``
raised it from the tracker).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from router.ami.http import HTTPError, ResponseParser
from router.ami.message import Event, Message, Response
from router.ami.protocol import (
    ListCollector,
    RawmanParser,
    assemble_result,
    parse_body,
    parse_mxml,
    parse_rawman,
    split_waitevent,
)
from router.calls import CallTracker
from router.errors import AMIProtocolError

FIXTURES = Path(__file__).parents[2] / "fixtures" / "ami"
SEED = 20261201
INPUTS = 100_000

#: Bytes that broke parsers before, or that parsers treat specially.
INTERESTING = [
    "²".encode("latin-1"),
    "²".encode(),
    "٣".encode(),
    "１".encode(),
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b": ",
    b" ",
    b"-",
    b"+",
    b"_",
    b"0x",
    b"<",
    b">",
    b"&",
    b'"',
    b"'",
    b"=",
    b";",
    b"\xff",
    b"\xc3",
    b"nan",
    b"inf",
    b"1e999",
    b"99999999999999999999",
    b"-1",
    b"Event: ",
    b"Response: ",
    b"EventList: start",
    b"EventList: Complete",
    b"BridgeNumChannels: ",
    b"Linkedid: ",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"HTTP/1.1 ",
    b"<generic ",
    b"/>",
    b"<response>",
    b"&amp;",
    b"<!DOCTYPE x [",
]
NON_ASCII_DIGITS = [
    "²".encode("latin-1"),
    "³".encode("latin-1"),
    "²".encode(),
    "٣".encode(),
    "１".encode(),
]


def _seeds() -> tuple[list[bytes], list[bytes]]:
    bodies = [
        p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.suffix in (".rawman", ".mxml")
    ]
    # The captures have no bridge; one BridgeEnter per capture's first channel
    # lets the mutations reach the tracker's BridgeNumChannels.
    call = (FIXTURES / "waitevent_call.rawman").read_bytes()
    bridge = (
        b"Event: BridgeEnter\r\nPrivilege: call,all\r\nBridgeUniqueid: b-1\r\n"
        b"BridgeNumChannels: 2\r\nChannel: PJSIP/trunk-00000001\r\n"
        b"Linkedid: 1700000000.1\r\nUniqueid: 1700000000.1\r\n\r\n"
    )
    blocks = call.split(b"\r\n\r\n")
    short = b"\r\n\r\n".join([blocks[0], blocks[1]]) + b"\r\n\r\n" + bridge
    bodies += [short + b"Event: WaitEventComplete\r\n\r\n", short * 2]
    return bodies, [body for body in bodies if len(body) <= 4096]


def _http(rng: random.Random, body: bytes) -> bytes:
    kind = rng.choice(("text/plain", "text/xml")) if body.lstrip()[:1] == b"<" else "text/plain"
    head = (
        b"HTTP/1.1 200 OK\r\nServer: Asterisk/22.5.0\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT"
        b"\r\nConnection: Keep-Alive\r\nCache-Control: no-cache, no-store\r\n"
        b"Content-Type: " + kind.encode() + b"\r\n"
        b'Set-Cookie: mansession_id="5c2a06ad"; Version=1; Max-Age=60\r\n'
    )
    framing = rng.randrange(3)
    if framing == 0:
        return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    if framing == 1:
        out = [head + b"Transfer-Encoding: chunked\r\n\r\n"]
        pos = 0
        while pos < len(body):
            size = rng.randint(1, 700)
            part = body[pos : pos + size]
            out.append(f"{len(part):x}".encode() + b"\r\n" + part + b"\r\n")
            pos += size
        out.append(b"0\r\n\r\n")
        return b"".join(out)
    return head.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n" + body


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # insert something interesting
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op == 2 and buf:  # delete a run
            del buf[pos : pos + rng.randint(1, 64)]
        elif op == 3 and buf:  # duplicate a run
            end = min(len(buf), pos + rng.randint(1, 256))
            buf[pos:pos] = buf[pos:end]
        elif op == 4:  # truncate
            del buf[pos:]
        elif op == 5:  # splice in part of another seed
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            buf[pos:pos] = other[start : start + rng.randint(1, 512)]
        else:  # a digit becomes a non-ASCII digit, or a number grows huge
            digits = [
                i
                for i in range(max(0, pos - 400), min(len(buf), pos + 400))
                if 0x30 <= buf[i] <= 0x39
            ]
            if digits:
                at = rng.choice(digits)
                buf[at : at + 1] = (
                    rng.choice(NON_ASCII_DIGITS) if op < 8 else b"99999999999999999999"
                )
    return bytes(buf)


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    if rng.random() < 0.5:
        return [data]
    out, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 256)
        out.append(data[pos : pos + size])
        pos += size
    return out


def _fold(tracker: CallTracker, messages: list[Message]) -> None:
    """Events into the tracker; nothing may escape it."""
    for msg in messages:
        if isinstance(msg, Event):
            tracker.feed(msg)


def _ami_messages(messages: list[Message], tracker: CallTracker) -> None:
    with contextlib.suppress(AMIProtocolError):
        assemble_result(messages)
    with contextlib.suppress(AMIProtocolError):
        split_waitevent(messages)
    collector = ListCollector(max_items=1000)
    for msg in messages:
        if isinstance(msg, Response) and msg.action_id:
            collector.expect(msg.action_id)
        try:
            collector.feed(msg)
        except AMIProtocolError:
            break
    _fold(tracker, messages)


def _whole_body(rng: random.Random, data: bytes, tracker: CallTracker) -> None:
    parse = parse_mxml if data.lstrip()[:1] == b"<" and rng.random() < 0.8 else parse_rawman
    try:
        messages = parse(data)
    except AMIProtocolError:
        return
    _ami_messages(messages, tracker)


def _stream(rng: random.Random, data: bytes, tracker: CallTracker) -> None:
    banner = rng.random() < 0.3
    if banner:
        data = b"Asterisk Call Manager/9.0.0\r\n" + data
    parser = RawmanParser(banner=banner, max_buffer=1 << 20)
    messages: list[Message] = []
    try:
        for chunk in _chunks(rng, data):
            messages += parser.feed(chunk)
        parser.close()
    except AMIProtocolError:
        pass
    _ami_messages(messages, tracker)


def _http_response(rng: random.Random, data: bytes, tracker: CallTracker) -> None:
    parser = ResponseParser(max_body=1 << 20, max_head=8192)
    try:
        response = None
        for chunk in _chunks(rng, data):
            response = parser.feed(chunk)
            if response is not None:
                break
        if response is None:
            response = parser.finish()
    except HTTPError:
        return
    try:
        messages = parse_body(response.content, response.headers.get("content-type"))
    except AMIProtocolError:
        return
    _ami_messages(messages, tracker)


Target = Callable[[random.Random, bytes, CallTracker], None]


@pytest.mark.slow
def test_asterisk_side_parsers_raise_only_documented_errors() -> None:
    rng = random.Random(SEED)
    bodies, small = _seeds()
    # Bodies for the AMI parsers; the same bodies in HTTP framing for the client's.
    framed = [_http(rng, body) for body in small for _ in range(4)]
    plans: list[tuple[Target, list[bytes]]] = [
        (_whole_body, small),
        (_stream, small),
        (_http_response, framed),
        (_http_response, framed),
    ]
    tracker = CallTracker(max_calls=500)
    count = 0
    while count < INPUTS:
        target, pool = plans[count % len(plans)]
        seed = rng.choice(pool if rng.random() < 0.97 else bodies)
        data = _mutate(rng, seed, pool)
        try:
            target(rng, data, tracker)
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(
                f"input #{count} ({target.__name__}, seed {SEED}) raised "
                f"{type(exc).__name__}: {exc}\n{data[:600]!r}"
            ) from exc
        count += 1
    assert len(tracker) <= 500
