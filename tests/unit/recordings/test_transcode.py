"""Transcoding with the real Debian encoders, and its bounds: timeout, output, a missing
program named with its package."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from router.errors import RecordingError
from router.recordings import transcode as transcode_module
from router.recordings.closer import close_recording
from router.recordings.naming import file_names
from router.recordings.settings import RecordingSettings
from router.recordings.store import RecordingStore
from router.recordings.transcode import transcode
from tests.unit.recordings.virtual_clock import VirtualClock
from tests.unit.recordings.wavgen import write_wav
from tests.unit.waiting import DEADLINE, eventually

ENCODERS = pytest.mark.skipif(
    shutil.which("lame") is None or shutil.which("opusenc") is None,
    reason="lame and opusenc are installed by `make setup` (make encoders)",
)


@ENCODERS
@pytest.mark.parametrize("kind", ["mp3", "opus"])
async def test_a_wav_becomes_mp3_or_opus(tmp_path: Path, kind: str) -> None:
    source = write_wav(tmp_path / "1.1-mix.wav", 3.0)
    target = tmp_path / f"1.1-mix.{kind}"
    await transcode(kind, source, target, timeout=60)
    data = target.read_bytes()
    if kind == "opus":
        assert data.startswith(b"OggS")
        assert b"OpusHead" in data[:64]
    else:  # an MPEG audio frame: 11 sync bits set
        assert data[0] == 0xFF
        assert data[1] & 0xE0 == 0xE0
    # Compressed: smaller than the 16-bit PCM it came from.
    assert 0 < len(data) < source.stat().st_size // 2


def record_starts(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.subprocess.Process]:
    """The processes ``asyncio.create_subprocess_exec`` starts from now on,
    each as it is started (the encoder, to be looked at after it ends)."""
    started: list[asyncio.subprocess.Process] = []
    real = asyncio.create_subprocess_exec

    async def start(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        started.append(await real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(asyncio, "create_subprocess_exec", start)
    return started


async def test_an_encoder_past_its_timeout_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", "sleep 30"])
    write_wav(tmp_path / "a.wav", 0.1)
    with pytest.raises(RecordingError, match=r"took more than 0\.5 s"):
        await transcode("mp3", tmp_path / "a.wav", tmp_path / "a.mp3", timeout=0.5)


async def test_a_failing_encoder_is_reported_with_bounded_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noisy = "head -c 5000000 /dev/zero | tr '\\0' x >&2; exit 3"
    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", noisy])
    (tmp_path / "a.mp3").write_bytes(b"partial")
    write_wav(tmp_path / "a.wav", 0.1)
    with pytest.raises(RecordingError, match="exit 3") as caught:
        await transcode("mp3", tmp_path / "a.wav", tmp_path / "a.mp3", timeout=30)
    assert len(str(caught.value)) < 400
    assert not (tmp_path / "a.mp3").exists()


@pytest.mark.parametrize("what", ["link", "fifo"])
async def test_the_encoder_reads_the_recording_itself_never_a_link_or_fifo_at_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """The recordings folder is Asterisk's: whoever writes there could put a
    link at a WAV's name after it was looked at, and the encoder, given the
    name, followed it; ``lame`` encodes any file as raw sound, so a file only
    callrouter's user may read went to 1C as a recording (issue 16). The
    encoder now reads its standard input, the file callrouter opened."""
    secret = tmp_path / "router.toml"
    secret.write_text('secret = "hunter2"\n', encoding="utf-8")
    # A `lame` first on PATH that copies its input (the last but one argument,
    # `-` for its standard input) to its output, as the real one reads it.
    fake = tmp_path / "bin" / "lame"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\nfor a; do src=$prev; prev=$a; done\n"
        'if [ "$src" = - ]; then exec cat; else exec cat "$src"; fi\n',
        encoding="utf-8",
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    source = tmp_path / "1.1-mix.wav"
    if what == "link":
        source.symlink_to(secret)
    else:
        os.mkfifo(source)
    target = tmp_path / "1.1-mix.mp3"
    with pytest.raises(RecordingError, match=r"^cannot read 1\.1-mix\.wav: ") as caught:
        await asyncio.wait_for(transcode("mp3", source, target, timeout=5), 10)
    assert ("symbolic link" if what == "link" else "not a regular file") in str(caught.value)
    assert not target.exists()
    # The real WAV goes through as before.
    source.unlink()
    write_wav(source, 0.1)
    await transcode("mp3", source, target, timeout=5)
    assert target.read_bytes() == source.read_bytes()


def test_a_missing_encoder_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RecordingError, match=r"needs opusenc \(Debian package opus-tools\)"):
        transcode_module.command("opus")


async def test_a_failed_encoding_delivers_the_wav_instead_of_losing_the_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the row became ``failed``: no receiver ever saw the complete WAV, and
    since retention only counts closed and delivered files, it stayed on disk for good,
    outside max_bytes and hard_cap_bytes (a missing encoder, a full disk, a timeout
    did that to every recording)."""
    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", "exit 3"])
    settings = RecordingSettings(
        dir="/var/spool/asterisk/monitor", local_dir=tmp_path, transcode="mp3", close_timeout=5
    )
    store = RecordingStore(tmp_path / "state")
    (name,) = file_names("1714557600.42", "mix", "wav")
    write_wav(settings.local_path(name), 1.0)
    (row,) = store.start(
        [name],
        pbx_paths=[settings.pbx_path(name)],
        local_paths=[settings.local_path(name)],
        channel="PJSIP/trunk-00000001",
    )
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert closed.state == "closed"
    assert closed.file == settings.local_path(name)
    assert closed.content_type == "audio/wav"
    assert closed.size == settings.local_path(name).stat().st_size
    assert not settings.local_path(name).with_suffix(".mp3").exists()
    assert "delivering the WAV" in caplog.text
    assert store.usage().bytes_on_disk == closed.size


def _open_on(path: Path) -> list[str]:
    """This process's descriptors on ``path`` (deleted or not)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            target = os.readlink(fds / fd)
            if target in (str(path), f"{path} (deleted)"):
                found.append(fd)
    return found


async def test_cancelled_while_the_output_is_created_leaves_no_file_and_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the task cancelled (the recorder stopping) while a worker
    thread created the encoder's output: the thread went on, and what it
    returned was dropped, the descriptor open for the process's life and the
    empty file left at its name."""
    asked, go, made = threading.Event(), threading.Event(), threading.Event()
    real = transcode_module.create_new

    def slow_create_new(path: Path) -> int:
        asked.set()
        go.wait(DEADLINE)
        try:
            return real(path)
        finally:
            made.set()

    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", "cat"])
    monkeypatch.setattr(transcode_module, "create_new", slow_create_new)
    source = write_wav(tmp_path / "a.wav", 0.1)
    target = tmp_path / "a.mp3"
    task = asyncio.ensure_future(transcode("mp3", source, target, timeout=30))
    # The output's creation asked, not only the source opened: a task cut while
    # the source's thread was ending never asked it, and the wait for the file
    # made below waited for ever on a loaded machine.
    try:
        await eventually(asked.is_set, "the output being created")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        go.set()
    assert await asyncio.to_thread(made.wait, DEADLINE), "the file was made"
    await eventually(
        lambda: not target.exists() and not _open_on(target),
        "the output closed and removed",
    )
    assert not _open_on(source)


async def test_cancelled_while_the_recording_is_opened_leaves_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()
    opened: list[BinaryIO] = []
    real = transcode_module.open_regular

    def slow_open_regular(path: Path) -> BinaryIO:
        go.wait()
        opened.append(real(path))
        return opened[-1]

    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", "cat"])
    monkeypatch.setattr(transcode_module, "open_regular", slow_open_regular)
    source = write_wav(tmp_path / "a.wav", 0.1)
    task = asyncio.ensure_future(transcode("mp3", source, tmp_path / "a.mp3", timeout=30))
    await asyncio.sleep(0)  # the thread started
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        # Whatever the task did, the thread is let go: a thread left in
        # go.wait() hangs the loop's close, which joins the executor's threads.
        go.set()
    try:
        await eventually(lambda: opened and opened[0].closed, "the recording closed")
    finally:
        for file in opened:
            file.close()
    assert not (tmp_path / "a.mp3").exists()


async def test_cancelled_while_encoding_the_encoder_is_killed_and_its_output_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the task cut while the encoder ran left it running (in a
    session of its own) and writing an output nobody would take."""
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 60"
    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", script])
    source = write_wav(tmp_path / "a.wav", 0.1)
    target = tmp_path / "a.mp3"
    task = asyncio.ensure_future(transcode("mp3", source, target, timeout=60))
    # Started, and its output handed over (closed here): the task waits for it.
    await eventually(lambda: pid_file.exists() and not _open_on(target), "the encoder started")
    pid = int(pid_file.read_text(encoding="ascii"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        assert not target.exists()
        await eventually(lambda: not _alive(pid), "the encoder ended")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_cancelled_encoding_has_reaped_its_encoder_when_the_task_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: killed but not waited for, the encoder was reaped (and its
    asyncio transport closed) only by later loop turns: a stop whose loop ended
    first left an unclosed transport and stderr pipe to the garbage collector,
    which pytest's filterwarnings turned into an error in whatever test came
    next. Waited for, its transport is closed when the task's end is seen."""
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 60"
    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", script])
    started = record_starts(monkeypatch)
    source = write_wav(tmp_path / "a.wav", 0.1)
    task = asyncio.ensure_future(transcode("mp3", source, tmp_path / "a.mp3", timeout=60))
    # Both: the shell may write its pid before asyncio's start returns (its
    # pipes connected), and a cancel then is the start's, with no process to
    # look at here (the full suite on a loaded machine; issue 16).
    await eventually(lambda: pid_file.exists() and bool(started), "the encoder started")
    pid = int(pid_file.read_text(encoding="ascii"))
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
        (proc,) = started
        assert proc.returncode == -signal.SIGKILL
        assert proc._transport.is_closing()  # type: ignore[attr-defined]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie left to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_cancelled_while_the_encoder_starts_its_output_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task cut before the encoder is started: asyncio kills one it
    started meanwhile, and the output made for it is removed (issue 16)."""
    asked = asyncio.Event()
    real = asyncio.create_subprocess_exec

    async def slow_start(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        asked.set()
        await asyncio.Event().wait()  # cancelled here
        return await real(*args, **kwargs)

    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", "cat"])
    monkeypatch.setattr(asyncio, "create_subprocess_exec", slow_start)
    source = write_wav(tmp_path / "a.wav", 0.1)
    target = tmp_path / "a.mp3"
    task = asyncio.ensure_future(transcode("mp3", source, target, timeout=60))
    await asked.wait()
    assert target.exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not target.exists()
    assert not _open_on(target)
    assert not _open_on(source)


async def test_an_encoding_cancelled_again_while_its_encoder_is_reaped_removes_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the wait for the killed encoder's reaping (up to 5 s while a
    program it started in a session of its own holds its stderr) cut by a
    second cancellation (a stop cut short) skipped the output's removal: a
    half-made file nobody takes stayed at its name."""
    pid_file, held_file = tmp_path / "pid", tmp_path / "held"
    # A program of its own session holds stderr open: the killed group's pipe
    # does not end, and the reaping waits.
    script = (
        f"setsid sh -c 'echo $$ > {held_file}.tmp && mv {held_file}.tmp {held_file}"
        f" && exec sleep 60' & echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}"
        " && exec sleep 60"
    )
    monkeypatch.setattr(transcode_module, "command", lambda *a: ["sh", "-c", script])
    started = record_starts(monkeypatch)
    source = write_wav(tmp_path / "a.wav", 0.1)
    target = tmp_path / "a.mp3"
    task = asyncio.ensure_future(transcode("mp3", source, target, timeout=60))
    # ``started`` is filled once create_subprocess_exec has returned: the task
    # then waits for the encoder. The files alone can be written while it still
    # connects the pipes, and a cancellation there is asyncio's: it kills the
    # encoder and waits for its exit only, and the task was done before the
    # check below (seen under load).
    await eventually(
        lambda: pid_file.exists() and held_file.exists() and bool(started),
        "the encoder started",
    )
    pid = int(pid_file.read_text(encoding="ascii"))
    held = int(held_file.read_text(encoding="ascii"))
    # The wait for the reaping ends by the second cancellation below, not by
    # its time limit running out while a loaded host is slow to see the kill.
    monkeypatch.setattr(transcode_module, "_REAP_TIMEOUT", 24 * 3600.0)
    try:
        task.cancel()
        # Killed: the task now waits for the stderr pipe the other program holds.
        await eventually(lambda: not _alive(pid), "the encoder killed")
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not target.exists()
    finally:
        for stray in (pid, held):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)
        # The pipe ends with the other program: the encoder's transport closes
        # here, not unclosed for the garbage collector in a later test.
        await eventually(
            lambda: all(p._transport.is_closing() for p in started),  # type: ignore[attr-defined]
            "the encoder's transport closed",
        )
