"""The state files read back at start are read as no one else's file (issue 16).

``forwarding.json`` (the API's DND and forwarding), ``calllife.json`` (the
call life's replay mark) and ``recordings.key`` were read with a plain read: a symbolic link put at
the name was followed (another file's settings, or a secret, read as state), a
FIFO blocked the start for ever, and ``calllife.json`` had no size bound. Now
neither is followed nor read past its bound; what is no file of ours is set
aside (``router/aside.py``), never lost, and the start goes on clean (the
key, which signs recording links, is an error naming it instead). A test
that regresses to a blocking read would hang, so those reads run in a thread
that a writer opened afterwards frees.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from router.api.forwarding_state import ForwardingState
from router.calllife.model import CallEvent
from router.calllife.service import MARK_FILE, CallLife
from router.calllife.settings import HistorySettings
from router.errors import StateFileDenied
from router.recordings import RecordingSettings, recording_signer
from router.recordings.signing import KEY_NAME
from tests.unit.fifo_read import without_blocking

FORWARDING = "forwarding.json"
#: A forwarding file that sets something: read through a link, it would show.
SETTINGS_TEXT = json.dumps(
    {"version": 1, "extensions": {"101": {"dnd": True, "forward_to": None, "dial": None}}}
)
#: Asterisk's clock in the call life tests.
NOW = 1_800_000_000.0
MARK_TEXT = json.dumps({"mark": NOW - 600, "told": {}})


def _messages(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if name in r.getMessage()]


def _deny_reading(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``chmod 000`` on ``path``; as root, which that does not stop, its
    ``open`` refused as the kernel refuses any other user's."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open = os.open

    def refusing(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(name) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


def _refusal(path: Path) -> str:
    return f"[Errno 13] {path}: Permission denied: the user callrouter runs as ("


# -- forwarding.json -------------------------------------------------------------------


def test_a_link_at_forwarding_json_is_set_aside_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(SETTINGS_TEXT)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / FORWARDING).symlink_to(elsewhere)
    with caplog.at_level(logging.ERROR):
        state = ForwardingState(state_dir)
    assert list(state) == []
    aside = state_dir / "forwarding.json.bad"
    assert aside.is_symlink()
    assert os.readlink(aside) == str(elsewhere)
    assert elsewhere.read_text() == SETTINGS_TEXT  # untouched
    assert not os.path.lexists(state_dir / FORWARDING)
    assert _messages(caplog, FORWARDING) == [
        f"forwarding state {state_dir / FORWARDING} unreadable ([Errno 40] is a symbolic "
        f"link: not followed): set aside as {aside}"
    ]


def test_a_fifo_at_forwarding_json_does_not_block_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fifo = tmp_path / FORWARDING
    os.mkfifo(fifo)
    with caplog.at_level(logging.ERROR):
        state = without_blocking(lambda: ForwardingState(tmp_path), fifo)
    assert isinstance(state, ForwardingState), state
    assert list(state) == []
    assert (tmp_path / "forwarding.json.bad").is_fifo()
    assert "not a regular file (a FIFO, socket or device)" in caplog.text


def test_a_folder_at_forwarding_json_is_set_aside_with_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FORWARDING).mkdir()
    (tmp_path / FORWARDING / "kept").write_text("someone's")
    with caplog.at_level(logging.ERROR):
        state = ForwardingState(tmp_path)
    assert list(state) == []
    # A folder takes no hard link: renamed aside, with what it holds.
    assert (tmp_path / "forwarding.json.bad" / "kept").read_text() == "someone's"
    assert _messages(caplog, FORWARDING) == [
        f"forwarding state {tmp_path / FORWARDING} unreadable ([Errno 21] is a folder, "
        f"not a file): set aside as {tmp_path / 'forwarding.json.bad'}"
    ]
    state.set("101", state.get("101").__class__(dnd=True))  # and the next one is written
    assert (tmp_path / FORWARDING).is_file()


def test_a_forwarding_json_over_its_bound_is_set_aside_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = SETTINGS_TEXT + " " * (4 * 1024 * 1024)
    (tmp_path / FORWARDING).write_text(text)
    with caplog.at_level(logging.ERROR):
        state = ForwardingState(tmp_path)
    assert list(state) == []
    assert (tmp_path / "forwarding.json.bad").read_text() == text
    assert _messages(caplog, FORWARDING) == [
        f"forwarding state {tmp_path / FORWARDING} unreadable ([Errno 27] bigger than "
        f"4194304 bytes ({len(text)} bytes)): set aside as {tmp_path / 'forwarding.json.bad'}"
    ]


def test_a_forwarding_json_it_may_not_read_refuses_the_start_and_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its owner or mode is wrong, not its content: before, it was set aside
    as damaged and every extension's setting vanished until put back by hand."""
    path = tmp_path / FORWARDING
    path.write_text(SETTINGS_TEXT)
    _deny_reading(path, monkeypatch)
    with pytest.raises(StateFileDenied) as refused:
        ForwardingState(tmp_path)
    assert str(refused.value).startswith(_refusal(path))
    assert f"chmod 600 {path}" in str(refused.value)
    assert refused.value.errno == errno.EACCES
    assert sorted(p.name for p in tmp_path.iterdir()) == [FORWARDING]  # nothing set aside
    monkeypatch.undo()
    path.chmod(0o600)
    assert path.read_text() == SETTINGS_TEXT
    assert ForwardingState(tmp_path).get("101").dnd  # once given back, read as ever


# -- calllife.json ---------------------------------------------------------------------


def _life(max_calls: int = 10_000) -> CallLife:
    async def emit(event: CallEvent) -> None:
        pass

    # A store that is never read here (nothing is replayed from no mark).
    settings = HistorySettings(cel="sqlite:///nonexistent.db", settle_delay=0, max_calls=max_calls)
    return CallLife(settings, emit, clock=lambda: NOW)


def _aside(state_dir: Path) -> Path:
    return state_dir / f"{MARK_FILE}.unreadable-{int(NOW)}"


def _read_mark(state_dir: Path, max_calls: int = 10_000) -> float | None:
    service = _life(max_calls)
    service._state_dir = state_dir  # what start() sets, without its replay
    return service.read_mark()


def test_a_link_at_calllife_json_is_set_aside_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(MARK_TEXT)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / MARK_FILE).symlink_to(elsewhere)
    assert _read_mark(state_dir) is None
    assert os.readlink(_aside(state_dir)) == str(elsewhere)
    assert elsewhere.read_text() == MARK_TEXT
    assert not os.path.lexists(state_dir / MARK_FILE)
    assert _messages(caplog, MARK_FILE) == [
        f"call life: {state_dir / MARK_FILE} unreadable (is a symbolic link: not followed): "
        f"set aside as {_aside(state_dir)}; no replay from it"
    ]


def test_a_fifo_at_calllife_json_does_not_block_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fifo = tmp_path / MARK_FILE
    os.mkfifo(fifo)
    assert without_blocking(lambda: _read_mark(tmp_path), fifo) is None
    assert _aside(tmp_path).is_fifo()
    assert _messages(caplog, MARK_FILE) == [
        f"call life: {fifo} unreadable (not a regular file (a FIFO, socket or device)): "
        f"set aside as {_aside(tmp_path)}; no replay from it"
    ]


async def test_a_folder_at_calllife_json_is_set_aside_and_the_mark_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the folder stayed: every mark written after failed on it, so a
    restart never had a mark again."""
    (tmp_path / MARK_FILE).mkdir()
    (tmp_path / MARK_FILE / "kept").write_text("someone's")
    service = _life()
    service.listening = lambda: True  # type: ignore[method-assign]
    service.start(tmp_path)
    await service.stop()
    assert (_aside(tmp_path) / "kept").read_text() == "someone's"
    assert json.loads((tmp_path / MARK_FILE).read_text())["mark"] == NOW
    assert _messages(caplog, f"{MARK_FILE} unreadable") == [
        f"call life: {tmp_path / MARK_FILE} unreadable (is a folder, not a file): "
        f"set aside as {_aside(tmp_path)}; no replay from it"
    ]


def test_a_calllife_json_over_its_bound_is_set_aside_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bound follows ``max_calls``: the largest mark that many told calls
    make is read (below), one byte more is not."""
    limit = 4096 + 10 * (12 * 151 + 48)
    text = MARK_TEXT + " " * (limit + 1 - len(MARK_TEXT))
    (tmp_path / MARK_FILE).write_text(text)
    assert _read_mark(tmp_path, max_calls=10) is None
    assert _aside(tmp_path).read_text() == text
    assert _messages(caplog, MARK_FILE) == [
        f"call life: {tmp_path / MARK_FILE} unreadable (bigger than {limit} bytes "
        f"({limit + 1} bytes)): set aside as {_aside(tmp_path)}; no replay from it"
    ]


async def test_a_calllife_json_it_may_not_read_refuses_the_start_and_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, it was set aside as unreadable and the start went on with no
    mark: the calls that ended while callrouter was down were never told."""
    path = tmp_path / MARK_FILE
    path.write_text(MARK_TEXT)
    _deny_reading(path, monkeypatch)
    service = _life()
    service.listening = lambda: True  # type: ignore[method-assign]
    with pytest.raises(StateFileDenied) as refused:
        service.start(tmp_path)
    await service.stop()
    assert str(refused.value).startswith(_refusal(path))
    assert os.listdir(tmp_path) == [MARK_FILE]  # nothing set aside
    monkeypatch.undo()
    path.chmod(0o600)
    assert path.read_text() == MARK_TEXT  # not written over either


def test_the_largest_mark_max_calls_can_write_is_read_back(tmp_path: Path) -> None:
    """Told calls at the longest Linkedid, every character written as a
    surrogate pair (``ensure_ascii``): within the bound."""
    told = {f"{n:02d}" + "\U0001f600" * 149: NOW - 1e-7 * n for n in range(10)}
    text = json.dumps({"mark": NOW - 600.123456789, "told": told}) + "\n"
    (tmp_path / MARK_FILE).write_text(text)
    assert len(text) > 10 * 12 * 149
    assert _read_mark(tmp_path, max_calls=10) == NOW - 600.123456789
    assert not _aside(tmp_path).exists()


# -- recordings.key --------------------------------------------------------------------

KEY = "ab" * 32 + "\n"


def _settings(key_file: Path | None = None) -> RecordingSettings:
    return RecordingSettings(dir="/nonexistent", local_dir=Path("/nonexistent"), key_file=key_file)


def test_a_link_at_the_state_dirs_recordings_key_is_refused_not_followed(tmp_path: Path) -> None:
    """The key signs every recording link: one read through a link someone put
    in state_dir (to a key they know) would let them sign links themselves."""
    elsewhere = tmp_path / "known.key"
    elsewhere.write_text(KEY)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / KEY_NAME).symlink_to(elsewhere)
    with pytest.raises(ValueError, match="symbolic link") as refused:
        recording_signer(_settings(), state_dir)
    assert str(refused.value) == (
        f"{state_dir / KEY_NAME}: the recordings key file is a symbolic link: not followed"
    )
    assert elsewhere.read_text() == KEY


def test_a_fifo_or_folder_at_recordings_key_is_an_error_naming_it_not_a_hang(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / KEY_NAME
    os.mkfifo(fifo)
    outcome = without_blocking(lambda: recording_signer(_settings(), tmp_path), fifo)
    assert isinstance(outcome, ValueError), outcome
    assert str(outcome) == (
        f"{fifo}: the recordings key file not a regular file (a FIFO, socket or device)"
    )
    fifo.unlink()
    fifo.mkdir()
    with pytest.raises(ValueError, match=r"recordings\.key: the recordings key file is a folder"):
        recording_signer(_settings(), tmp_path)


def test_the_administrators_key_file_may_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "real.key").write_text(KEY)
    (tmp_path / "linked.key").symlink_to(tmp_path / "real.key")
    signer = recording_signer(_settings(tmp_path / "linked.key"), tmp_path / "state")
    assert signer.key == bytes.fromhex(KEY)
    assert not (tmp_path / "state").exists()  # no key of its own made
