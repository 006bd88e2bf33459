"""Optional transcoding of a closed recording to MP3 (``lame``) or Opus (``opusenc``).

Both encoders are Debian packages (``lame``, ``opus-tools``) that read the WAV
Asterisk writes on their standard input, a file callrouter opened (no link
followed, a regular file), and write to their standard output, a file
callrouter created.
Each runs as a subprocess with a timeout (killed past it) and with its output
bounded: only the first bytes of stderr are kept, for the error message.
Bitrates suit speech: 32 kbit/s MP3, 24 kbit/s Opus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from router.errors import RecordingError
from router.recordings.files import create_new, open_regular

__all__ = ["ENCODERS", "command", "missing_encoder", "transcode"]

#: Target format -> the program and the Debian package that has it.
ENCODERS: Final[dict[str, tuple[str, str]]] = {
    "mp3": ("lame", "lame"),
    "opus": ("opusenc", "opus-tools"),
}
_STDERR_MAX: Final = 4096
#: Seconds an encoder killed with SIGKILL is given to be reaped and its stderr
#: pipe closed (the kernel's work; a bound all the same).
_REAP_TIMEOUT: Final = 5.0

_T = TypeVar("_T")


def missing_encoder(kind: str) -> str | None:
    """What ``callrouter check`` and a start warn of when ``transcode = kind`` has no
    encoder on PATH (every WAV is then delivered as it is), else None."""
    if kind not in ENCODERS:
        return None
    program, package = ENCODERS[kind]
    if shutil.which(program) is not None:
        return None
    return (
        f"[recordings] transcode = {kind!r} needs {program} (Debian package {package}), "
        "which is not on PATH: recordings will be delivered as WAV"
    )


def command(kind: str) -> list[str]:
    """The encoder's command line, reading its standard input and writing its
    standard output (``-``: the caller opens both files); RecordingError when
    the program is missing."""
    program, package = ENCODERS[kind]
    found = shutil.which(program)
    if found is None:
        raise RecordingError(
            f"transcode = {kind!r} needs {program} (Debian package {package}); it is not on PATH"
        )
    if kind == "mp3":
        return [found, "--quiet", "-b", "32", "-m", "m", "-", "-"]
    return [found, "--quiet", "--bitrate", "24", "-", "-"]


async def transcode(kind: str, src: Path, dst: Path, timeout: float) -> None:
    """``src`` (WAV) -> ``dst`` in ``kind``; RecordingError on failure, timeout included.

    ``src`` is opened here (:func:`~router.recordings.files.open_regular`: no
    link followed, a regular file, the open never blocks) and is the encoder's
    standard input; ``dst`` is created here, new
    (:func:`~router.recordings.files.create_new`), and is its standard output.
    The encoder opens no name in the recordings folder, which is Asterisk's:
    given ``src``'s name, it followed a link put there after the recording was
    looked at (issue 16), and ``lame`` encodes any file as raw sound, so what
    callrouter's user could read went to 1C as a recording.
    """
    argv = command(kind)
    try:
        source = await _opened(open_regular, src, lambda file: file.close())
    except OSError as exc:
        raise RecordingError(f"cannot read {src.name}: {exc.strerror or exc}") from None
    try:
        try:
            out = await _opened(create_new, dst, lambda fd: _discard(fd, dst))
        except OSError as exc:
            raise RecordingError(f"cannot create {dst.name}: {exc.strerror or exc}") from None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=source,
                stdout=out,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # killed as a group: nothing it started outlives it
            )
        except OSError as exc:
            await asyncio.to_thread(dst.unlink, missing_ok=True)
            raise RecordingError(f"cannot run {argv[0]}: {exc}") from None
        except asyncio.CancelledError:
            # An encoder started meanwhile is killed by asyncio; the output it
            # had is nobody's (issue 16).
            await asyncio.to_thread(dst.unlink, missing_ok=True)
            raise
        finally:
            os.close(out)
    finally:
        source.close()
    assert proc.stderr is not None
    stderr = bytearray()

    async def drain() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(4096):
            if len(stderr) < _STDERR_MAX:
                stderr.extend(chunk[: _STDERR_MAX - len(stderr)])

    async def killed() -> None:
        """The encoder's group killed, waited for until it is reaped and its
        stderr pipe ends, and its output removed. asyncio closes the process's
        transport only once it is reaped: one left open (a loop that ended
        first: a stop) was an unclosed transport and pipe for the garbage
        collector (issue 16)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_REAP_TIMEOUT):
                    await asyncio.gather(drain(), proc.wait())
        finally:
            # Its output is nobody's: removed even when the wait for the reaping
            # (up to _REAP_TIMEOUT) is cut by a second cancellation (a stop cut
            # short), which skipped the removal after it (issue 16).
            await asyncio.to_thread(dst.unlink, missing_ok=True)

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(drain(), proc.wait())
    except asyncio.CancelledError:
        # The task cut (the recorder stopping): the encoder, in a session of its
        # own, went on writing an output nobody takes, past callrouter's end
        # (issue 16). Killed and reaped, its output removed.
        await killed()
        raise
    except TimeoutError:
        await killed()
        raise RecordingError(f"{argv[0]} took more than {timeout:g} s on {src.name}") from None
    if proc.returncode != 0:
        await asyncio.to_thread(dst.unlink, missing_ok=True)
        said = stderr.decode("utf-8", "replace").strip()[:300]
        raise RecordingError(f"{argv[0]} failed on {src.name} (exit {proc.returncode}): {said}")


async def _opened(open_: Callable[[Path], _T], path: Path, release: Callable[[_T], object]) -> _T:
    """``open_(path)`` in a worker thread; what it opened is handed to
    ``release`` when the task awaiting it is cancelled meanwhile.

    A thread is not stopped by a cancellation: ``asyncio.to_thread`` dropped
    what it returned after the task had gone (the recorder stopping, a
    call's task cut), and the descriptor stayed open for the process's life,
    and the file ``create_new`` made stayed at its name (issue 16).
    """
    done = asyncio.get_running_loop().run_in_executor(None, open_, path)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        done.add_done_callback(lambda ended: _release_if_opened(ended, release))
        raise


def _release_if_opened(ended: asyncio.Future[_T], release: Callable[[_T], object]) -> None:
    if ended.cancelled() or ended.exception() is not None:
        return  # nothing opened (its error was the task's, which is gone)
    with contextlib.suppress(OSError):
        release(ended.result())


def _discard(fd: int, path: Path) -> None:
    """The file :func:`create_new` made, closed and removed: nobody writes it."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
