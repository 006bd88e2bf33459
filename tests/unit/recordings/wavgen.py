"""Small WAV files for the recordings tests: a tone, silence, a header left open."""

from __future__ import annotations

import math
import struct
from pathlib import Path


def tone(seconds: float, freq: float = 1000.0, rate: int = 8000, amp: int = 8000) -> bytes:
    frames = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(amp * math.sin(2 * math.pi * freq * i / rate))) for i in range(frames)
    )


def wav_bytes(pcm: bytes, rate: int = 8000, *, complete: bool = True) -> bytes:
    """A 16-bit mono WAV; ``complete=False`` leaves the sizes at 0, as Asterisk's header
    reads while MixMonitor still writes."""
    data_size = len(pcm) if complete else 0
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        data_size,
    )
    return header + pcm


def write_wav(path: Path, seconds: float, *, complete: bool = True) -> Path:
    path.write_bytes(wav_bytes(tone(seconds), complete=complete))
    return path
