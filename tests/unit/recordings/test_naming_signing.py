"""File names from call ids only, WAV completeness, signed links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from router.recordings.naming import FileName, file_names, parse_file_name
from router.recordings.signing import Signer, load_key
from router.recordings.wav import parse_wav
from tests.unit.recordings.wavgen import tone, wav_bytes

HOSTILE = [
    "../etc/passwd",
    "..",
    "1714557600.42/../../x",
    "%2e%2e",
    "a\0b",
    "/abs/path",
    "x" * 300,
    "1714557600.42,b(x)",
    "79161234567 Иван",
    "",
    "1.2.3",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_no_hostile_call_id_names_a_file(value: str) -> None:
    with pytest.raises(ValueError, match="cannot name a recording"):
        file_names(value, "mix", "wav")


def test_names_come_from_the_call_id_part_and_format() -> None:
    names = file_names("1714557600.42", "both", "wav")
    assert [str(n) for n in names] == [
        "1714557600.42-mix.wav",
        "1714557600.42-in.wav",
        "1714557600.42-out.wav",
    ]
    assert [str(n) for n in file_names("c2c-0a1b2c3d4e5f60718293", "in", "gsm")] == [
        "c2c-0a1b2c3d4e5f60718293-in.gsm"
    ]
    assert parse_file_name("1714557600.42-out.wav") == FileName("1714557600.42", "out", "wav")
    assert parse_file_name("../1714557600.42-out.wav") is None


@pytest.mark.parametrize(("legs", "fmt"), [("stereo", "wav"), ("mix", "mp3"), ("mix", "../x")])
def test_bad_legs_or_format_is_refused(legs: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        file_names("1714557600.42", legs, fmt)


def test_a_wav_is_complete_only_when_its_header_counts_every_byte() -> None:
    pcm = tone(1.5)
    done = wav_bytes(pcm)
    info = parse_wav(done[:512])
    assert info is not None
    assert info.complete(len(done))
    assert info.duration == pytest.approx(1.5)
    open_ = wav_bytes(pcm, complete=False)
    info = parse_wav(open_[:512])
    assert info is not None
    assert not info.complete(len(open_))
    assert parse_wav(b"RIFF") is None
    assert parse_wav(b"not a wav at all, just bytes") is None


def test_a_signed_link_works_before_expiry_and_never_after_or_tampered() -> None:
    signer = Signer(b"k" * 32)
    url = signer.url("https://cr.example:8089/", "1714557600.42", "mix", ttl=60, now=1000)
    assert url.startswith("https://cr.example:8089/api/v1/recordings/1714557600.42/mix?expires=")
    query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
    assert signer.verify("1714557600.42", "mix", query["expires"], query["sig"], now=1059)
    assert not signer.verify("1714557600.42", "mix", query["expires"], query["sig"], now=1061)
    assert not signer.verify("1714557600.43", "mix", query["expires"], query["sig"], now=1000)
    assert not signer.verify("1714557600.42", "in", query["expires"], query["sig"], now=1000)
    assert not signer.verify("1714557600.42", "mix", "99999", query["sig"], now=1000)
    tampered = query["sig"][:-1] + ("0" if query["sig"][-1] != "0" else "1")
    assert not signer.verify("1714557600.42", "mix", query["expires"], tampered, now=1000)
    assert not signer.verify("1714557600.42", "mix", "-1", query["sig"], now=1000)
    assert not Signer(b"x" * 32).verify(
        "1714557600.42", "mix", query["expires"], query["sig"], now=1000
    )


def test_a_signed_link_is_valid_only_in_the_spelling_issued() -> None:
    """Issue 16: ``sig`` was compared lowercased and ``expires`` as a number, so
    the link's signature in capitals, or its expiry with leading zeros, was the
    same valid link under another spelling. Only the link as issued opens now."""
    signer = Signer(b"k" * 32)
    url = signer.url("https://cr.example:8089/", "1714557600.42", "mix", ttl=60, now=1000)
    query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
    sig, expires = query["sig"], query["expires"]
    assert signer.verify("1714557600.42", "mix", expires, sig, now=1000)
    assert sig.upper() != sig  # the key is fixed: this signature has letters a-f
    assert not signer.verify("1714557600.42", "mix", expires, sig.upper(), now=1000)
    letter = next(i for i, c in enumerate(sig) if c in "abcdef")
    mixed = sig[:letter] + sig[letter].upper() + sig[letter + 1 :]  # one capital
    assert not signer.verify("1714557600.42", "mix", expires, mixed, now=1000)
    assert not signer.verify("1714557600.42", "mix", "0" + expires, sig, now=1000)
    assert not signer.verify("1714557600.42", "mix", "00" + expires, sig, now=1000)


def test_the_key_is_generated_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "recordings.key"
    first = load_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(path) == first
    assert len(first) == 32
    path.write_text("abcd\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_key(path)


def test_a_key_file_of_no_ascii_or_too_long_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """Issue 16: non-ASCII bytes in recordings.key raised a bare UnicodeDecodeError that
    named no file; and the file was read whole, however large."""
    path = tmp_path / "recordings.key"
    path.write_bytes("ключ".encode() + b"\n")
    with pytest.raises(ValueError, match=r"recordings\.key: the recordings key must be hex"):
        load_key(path)
    path.write_bytes(b"0" * 5000)
    with pytest.raises(ValueError, match=r"recordings\.key: .* longer than 4096 bytes"):
        load_key(path)


def test_recording_key_problem_is_the_catalogs_shape_for_plugins() -> None:
    """A receiving plugin reads call ids and parts back from its own store and puts
    them into a URL path (the 1C plugin's /v1/calls/{call_id}/recordings/{part}):
    the public check says what the catalog would never have written."""
    import router

    assert router.recording_key_problem("1714557600.42", "mix") is None
    assert router.recording_key_problem("abc_1-2", "out") is None
    for call_id, part in (
        ("../../v1/responsible", "mix"),
        ("1.1?x=", "mix"),
        ("1.1", "mix/../x"),
        ("1.1", "MIX"),
        (None, "mix"),
        ("1.1", 3),
        ("", "mix"),
    ):
        problem = router.recording_key_problem(call_id, part)
        assert problem is not None, (call_id, part)
        assert "cannot name a recording" in problem or "is not one of mix, in, out" in problem


@pytest.mark.parametrize(
    "call_id",
    ["pbx.example.com-1796664974.0", "pbx-01.msk.example.ru-1733050000.42", "a.b-1.2"],
)
def test_a_linkedid_of_an_asterisk_named_by_host_name_names_files(call_id: str) -> None:
    """Issue 16: an Asterisk whose asterisk.conf ``systemname`` is a host name
    (``pbx.example.com``) prefixes every Linkedid with it; the dots made every
    ``record`` of every call fail (measured on the sandbox: no call recorded)."""
    names = file_names(call_id, "both", "wav")
    assert [str(n) for n in names] == [f"{call_id}-{p}.wav" for p in ("mix", "in", "out")]
    assert parse_file_name(f"{call_id}-in.wav") == FileName(call_id, "in", "wav")
    signer = Signer(b"k" * 32)
    url = signer.url("https://cr.example", call_id, "mix", 60, now=1000.0)
    assert f"/api/v1/recordings/{call_id}/mix?expires=1060&" in url


@pytest.mark.parametrize(
    "call_id",
    [
        "pbx..example-1.2",  # never two dots in a row
        "pbx.-1.2",
        ".pbx-1.2",
        "pbx.example-1.2.3",
        "pbx.example-1",  # a systemname with dots only before -EPOCH.SEQ
        "pbx.example",
        "pbx example-1.2",  # a space: no file name
        "АТС.пример-1.2",
        "p" * 38 + "-1234567890.1234567890123",  # over 64 characters
    ],
)
def test_a_dotted_id_names_no_file_unless_shaped_as_a_linkedid(call_id: str) -> None:
    with pytest.raises(ValueError, match=r"systemname from asterisk\.conf"):
        file_names(call_id, "mix", "wav")
