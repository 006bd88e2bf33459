"""The parse_rawman fast path proposed for router/ami/protocol.py, kept here so
bench_ingest.py can show its figure next to the current parser's.

Same output (messages, classes, errors for truncated or malformed bodies) on
every captured body and every tests/fixtures/ami/*.rawman; differs only in
working on the decoded text block by block (str.split, as panoramisk does)
instead of byte line by byte line through RawmanParser.
"""

from __future__ import annotations

from router.ami.message import Event, Message, Response
from router.ami.protocol import MAX_BODY_BYTES, MAX_LINE_BYTES
from router.errors import AMIProtocolError

__all__ = ["fast_parse_rawman"]


def fast_parse_rawman(body: bytes, *, max_size: int = MAX_BODY_BYTES) -> list[Message]:
    if len(body) > max_size:
        raise AMIProtocolError(f"body of {len(body)} bytes exceeds the limit of {max_size}")
    if body and not body.endswith(b"\n"):
        raise AMIProtocolError("body ends in the middle of a line (truncated)")
    text = body.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    long_possible = len(body) > MAX_LINE_BYTES
    out: list[Message] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        pairs: list[tuple[str, str]] = []
        opaque: list[str] = []
        for line in block.split("\n"):
            if not line:
                continue
            if long_possible and len(line.encode()) > MAX_LINE_BYTES:
                raise AMIProtocolError(f"line exceeds {MAX_LINE_BYTES}")
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key or key != key.strip():
                opaque.append(line)
                continue
            pairs.append((key, value[1:] if value[:1] == " " else value))
        if not pairs:
            raise AMIProtocolError(f"block without any 'Key: Value' line: {opaque[:1]!r}")
        first = pairs[0][0].lower()
        cls: type[Message]
        if first == "event":
            cls = Event
        elif first == "response":
            cls = Response
        else:
            raise AMIProtocolError(
                f"block starts with {pairs[0][0]!r}, expected 'Response' or 'Event'")
        if opaque:
            pairs.append(("opaque_data", "\n".join(opaque)))
        out.append(cls(pairs))
    if not out:
        raise AMIProtocolError("empty body: no AMI message")
    return out
