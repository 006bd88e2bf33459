"""What a recording file says about itself: complete yet, and how long.

Sans-I/O over the file's first bytes and its size. Asterisk's ``format_wav``
writes the RIFF and ``data`` sizes when it closes the file (and while
writing, every so often), so a WAV is complete when its header accounts for
every byte on disk; the other formats have no header, so the recorder falls
back to a size that stopped growing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["WavInfo", "parse_wav"]

#: Enough of the file for the header Asterisk writes (44 bytes) and a few chunks more.
HEADER_BYTES = 512


@dataclass(frozen=True, slots=True)
class WavInfo:
    channels: int
    rate: int
    bits: int
    #: The ``data`` chunk's size as the header says, and where its bytes start.
    data_size: int
    data_offset: int
    #: The RIFF size field (file size - 8 when complete).
    riff_size: int

    @property
    def byte_rate(self) -> int:
        return self.rate * self.channels * max(1, self.bits // 8)

    @property
    def duration(self) -> float:
        return self.data_size / self.byte_rate if self.byte_rate else 0.0

    def complete(self, file_size: int) -> bool:
        """The header accounts for every byte: Asterisk closed the file."""
        return self.riff_size + 8 == file_size and self.data_offset + self.data_size == file_size


def parse_wav(head: bytes) -> WavInfo | None:
    """The PCM WAV header in ``head``, or None when it is not one (yet)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    riff_size = struct.unpack_from("<I", head, 4)[0]
    offset = 12
    fmt: tuple[int, int, int] | None = None
    while offset + 8 <= len(head):
        chunk, size = head[offset : offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt " and body + 16 <= len(head):
            _, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, body)
            fmt = (channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                return None
            return WavInfo(fmt[0], fmt[1], fmt[2], size, body, riff_size)
        offset = body + size + (size & 1)
    return None
