"""What someone who can write in the recordings folder (it is Asterisk's) can put where
the next call's file will be: a symbolic link to callrouter's secrets, a FIFO, a link
where the transcoded file goes. None is read, served, uploaded, blocked on or written
through (router/recordings/files.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from router.errors import RecordingError
from router.recordings.closer import close_recording, wait_complete
from router.recordings.files import (
    NotARegularFile,
    NotTheRecording,
    OutsideFolder,
    open_recording,
)
from router.recordings.naming import file_names
from router.recordings.settings import RecordingSettings
from router.recordings.store import Recording, RecordingStore
from router.recordings.transcode import transcode
from tests.unit.recordings.virtual_clock import VirtualClock
from tests.unit.recordings.wavgen import wav_bytes, write_wav

CALL = "1714557600.42"


def recording(tmp_path: Path) -> tuple[RecordingSettings, RecordingStore, Recording]:
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    settings = RecordingSettings(
        dir="/var/spool/asterisk/monitor", local_dir=monitor, close_timeout=1.0
    )
    store = RecordingStore(tmp_path / "state")
    (name,) = file_names(CALL, "mix", "wav")
    (row,) = store.start(
        [name],
        pbx_paths=[settings.pbx_path(name)],
        local_paths=[settings.local_path(name)],
        channel="PJSIP/trunk-00000001",
    )
    return settings, store, row


async def test_a_link_at_the_recordings_name_is_not_taken_as_the_recording(
    tmp_path: Path,
) -> None:
    """Before: the link was followed, the secret it named hashed and catalogued
    ``closed``, so the 1C plugin uploaded it and the API served it."""
    settings, store, row = recording(tmp_path)
    secret = tmp_path / "secret.wav"  # a complete WAV, so only the link gives it away
    secret.write_bytes(wav_bytes(b"\x01\x02" * 4000))
    row.local_path.symlink_to(secret)
    assert await close_recording(row, settings, store) is None
    failed = store.get(CALL, "mix")
    assert failed is not None
    assert failed.state == "failed"
    assert "symbolic link" in failed.note
    assert failed.sha256 is None
    assert (failed.file, failed.size) == (None, None)  # a link is not callrouter's file


async def test_a_fifo_at_the_recordings_name_never_blocks_a_thread(tmp_path: Path) -> None:
    """Before: opening the FIFO blocked a worker thread of the default executor for
    ever (a handful of them and every ``to_thread`` of the engine waits)."""
    _, _, row = recording(tmp_path)
    os.mkfifo(row.local_path)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(OSError, match="not a regular file"):
                await wait_complete(row.local_path, "wav", 1.0)
    finally:
        # Without the fix a thread still waits in open(): a writer lets it go.
        with contextlib.suppress(OSError):
            os.close(os.open(row.local_path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.skipif(shutil.which("lame") is None, reason="lame is installed by `make setup`")
async def test_transcoding_never_writes_through_a_link_at_the_target_name(
    tmp_path: Path,
) -> None:
    """Before: lame opened ``<call>-mix.mp3`` itself and followed a link put there,
    overwriting the file it named with callrouter's rights."""
    source = write_wav(tmp_path / f"{CALL}-mix.wav", 1.0)
    victim = tmp_path / "router.toml"
    victim.write_text("[asterisk]\n", encoding="utf-8")
    target = tmp_path / f"{CALL}-mix.mp3"
    target.symlink_to(victim)
    await transcode("mp3", source, target, timeout=60)
    assert victim.read_text(encoding="utf-8") == "[asterisk]\n"
    assert not target.is_symlink()
    assert target.read_bytes()[0] == 0xFF


async def test_a_file_at_the_transcode_target_that_is_not_ours_is_never_left_to_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the encoder could not create the .mp3 (a file was already at that name,
    O_EXCL), the WAV was to be delivered instead but could not be read (a link put at
    its name meanwhile): the recording failed, and the file it was said to leave was
    that .mp3, someone else's, which retention then counted and deleted. Now a failed
    recording leaves only what callrouter itself made."""
    import router.recordings.closer as closer
    from router.errors import RecordingError
    from router.recordings.retention import apply_retention

    settings, store, row = recording(tmp_path)
    settings = dataclasses.replace(settings, transcode="mp3", hard_cap_bytes=10)
    write_wav(row.local_path, 1.0)
    foreign = row.local_path.with_suffix(".mp3")
    foreign.write_bytes(b"not callrouter's" * 100)
    elsewhere = tmp_path / "elsewhere.wav"

    async def refused(kind: str, src: Path, dst: Path, timeout: float) -> None:
        os.rename(src, elsewhere)
        os.symlink(elsewhere, src)  # whoever writes Asterisk's folder
        raise RecordingError(f"cannot create {dst.name}: File exists")

    monkeypatch.setattr(closer, "transcode", refused)
    # The close's own time (virtual_clock.py): the WAV holds its 0.5 s within
    # close_timeout however late a loaded machine looks at it.
    assert await close_recording(row, settings, store, clock=VirtualClock().clock) is None
    failed = store.get(CALL, "mix")
    assert failed is not None
    assert failed.state == "failed"
    assert failed.file is None, failed.file
    apply_retention(store, settings)
    assert foreign.read_bytes() == b"not callrouter's" * 100


def _way(how: str, root: Path, elsewhere: Path) -> Path:
    """A path to ``elsewhere/f.wav`` spelt from ``root`` the way ``how`` says."""
    if how == "linked_folder":
        (root / "day").symlink_to(elsewhere, target_is_directory=True)
        return root / "day" / "f.wav"
    if how == "linked_deeper":
        (root / "day").mkdir()
        (root / "day" / "hour").symlink_to(elsewhere, target_is_directory=True)
        return root / "day" / "hour" / "f.wav"
    if how == "dotdot":
        return root / ".." / elsewhere.name / "f.wav"
    if how == "file_on_the_way":
        (root / "day").write_bytes(b"")
        return root / "day" / "f.wav"
    if how == "the_folder":
        return root
    if how == "relative":
        return Path(os.path.relpath(elsewhere / "f.wav"))
    return elsewhere / "f.wav"


@pytest.mark.parametrize(
    "how",
    [
        "linked_folder",
        "linked_deeper",
        "dotdot",
        "file_on_the_way",
        "the_folder",
        "relative",
        "outside",
    ],
)
def test_open_recording_refuses_a_path_that_leaves_the_folder(tmp_path: Path, how: str) -> None:
    """Issue 16: every name below the recordings folder is opened from the one above
    it (``O_DIRECTORY | O_NOFOLLOW``): a link or a file on the way, ``..``, a path
    elsewhere are :class:`OutsideFolder` naming the path, nothing read."""
    root, elsewhere = tmp_path / "monitor", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "f.wav").write_bytes(b"SECRET")
    path = _way(how, root, elsewhere)
    with pytest.raises(OutsideFolder) as raised:
        open_recording(root, path).close()
    assert isinstance(raised.value, NotTheRecording)
    assert str(path) in str(raised.value.strerror)


def test_open_recording_reads_below_the_folder_and_the_folder_may_be_a_link(
    tmp_path: Path,
) -> None:
    """The folder itself is the administrator's (``local_dir`` may be a link); below it
    a real folder is walked, and a link at the file's own name is not the recording."""
    real = tmp_path / "real"
    (real / "day").mkdir(parents=True)
    (real / "day" / "f.wav").write_bytes(b"RIFF")
    (real / "g.wav").write_bytes(b"RIFF2")
    (real / "link.wav").symlink_to(real / "g.wav")
    root = tmp_path / "monitor"
    root.symlink_to(real, target_is_directory=True)
    with open_recording(root, root / "day" / "f.wav") as fh:
        assert fh.read() == b"RIFF"
    with open_recording(root, real / "g.wav") as fh:  # spelt as the folder resolves
        assert fh.read() == b"RIFF2"
    with pytest.raises(NotARegularFile, match="symbolic link"):
        open_recording(root, root / "link.wav")
    with pytest.raises(FileNotFoundError):
        open_recording(root, root / "none.wav")


def test_not_the_recording_is_an_error_of_the_one_tree(tmp_path: Path) -> None:
    """``router.NotTheRecording`` is public (docs/plugins.md: a plugin that reads
    recordings): callrouter raises it on purpose, so ``except
    router.CallRouterError`` catches it as every other error of ours, drawn in
    router/errors.py's tree, and ``except OSError`` still does."""
    import router
    import router.errors
    from router.recordings import files

    assert issubclass(router.NotTheRecording, router.CallRouterError)
    assert issubclass(router.NotTheRecording, OSError)
    assert files.NotTheRecording is router.errors.NotTheRecording
    assert issubclass(files.NotARegularFile, router.CallRouterError)
    assert issubclass(files.OutsideFolder, router.CallRouterError)
    assert "NotTheRecording(OSError)" in (router.errors.__doc__ or "")
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"RIFF")
    (tmp_path / "rec").mkdir()
    with pytest.raises(router.CallRouterError):
        files.open_recording(tmp_path / "rec", outside)


async def test_no_file_names_the_folder_and_a_folder_that_is_not_there(tmp_path: Path) -> None:
    """Issue 16: a ``local_dir`` that is not where callrouter sees Asterisk's ``dir``
    failed every recording with ``c2c-...-mix.wav: no file``, naming neither the
    folder looked in nor that it does not exist."""
    missing = tmp_path / "not-mounted" / "c2c-1-mix.wav"
    with pytest.raises(RecordingError) as raised:
        await wait_complete(missing, "wav", 0.0)
    assert str(raised.value) == (
        f"c2c-1-mix.wav: no file in {missing.parent} after 0 s; that folder does not exist "
        "here: is [recordings] local_dir the folder [recordings] dir is as callrouter sees it?"
    )
    with pytest.raises(RecordingError, match=rf"^c2c-1-mix\.wav: no file in {tmp_path} after 0 s$"):
        await wait_complete(tmp_path / "c2c-1-mix.wav", "wav", 0.0)


def _full_below(folder: Path, monkeypatch: pytest.MonkeyPatch, *, times: int = -1) -> None:
    """``folder``'s filesystem reads full (no byte free) the first ``times`` it is
    asked (-1: always); every other as it is."""
    real = os.statvfs
    asked = 0

    def statvfs(path: object) -> os.statvfs_result:
        nonlocal asked
        found = real(path)  # type: ignore[arg-type]
        if Path(str(path)) != folder:
            return found
        asked += 1
        if times >= 0 and asked > times:
            return found
        values = list(found)
        values[4] = 0  # f_bavail
        return os.statvfs_result(values)

    monkeypatch.setattr(os, "statvfs", statvfs)


async def test_a_recording_closed_on_a_full_disk_is_said_to_be_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16, measured on the sandbox (a 100 KiB tmpfs as the recordings folder):
    MixMonitor's writes failed part way (``No space left on device`` in Asterisk's
    log) and still closed a consistent WAV of 6.4 s of a 10 s call, which was
    catalogued and sent to 1C with an INFO line, nothing saying it lacked the end."""
    settings, store, row = recording(tmp_path)
    write_wav(row.local_path, 1.0)
    _full_below(row.local_path.parent, monkeypatch)
    caplog.set_level("INFO", logger="router.recordings")
    closed = await close_recording(row, settings, store, clock=VirtualClock().clock)
    assert closed is not None
    assert closed.state == "closed"  # what Asterisk wrote is still the recording
    (said,) = [r for r in caplog.records if "closed:" in r.getMessage()]
    assert said.levelname == "WARNING"
    assert f"it may be cut short: the filesystem of {row.local_path.parent} was full" in (
        said.getMessage()
    )


async def test_a_recording_failed_on_a_full_disk_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the next call's file on that full disk stayed empty; it failed
    ``incomplete after 30 s``, nothing naming the disk."""
    settings, store, row = recording(tmp_path)
    row.local_path.write_bytes(b"")
    _full_below(row.local_path.parent, monkeypatch)
    assert await close_recording(row, settings, store, clock=VirtualClock().clock) is None
    failed = store.get(CALL, "mix")
    assert failed is not None
    assert failed.state == "failed"
    assert failed.note.startswith(f"{CALL}-mix.wav: incomplete after 1 s; the filesystem of ")
    assert "was full (0 bytes free)" in failed.note


async def test_a_disk_full_as_the_call_ended_is_named_though_freed_before_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, measured on the sandbox: the file begun on the full disk failed 30 s
    later, by when retention had deleted a delivered file there; the disk had room
    again and the reason said only ``incomplete after 30 s``."""
    settings, store, row = recording(tmp_path)
    row.local_path.write_bytes(b"")
    _full_below(row.local_path.parent, monkeypatch, times=1)
    assert await close_recording(row, settings, store, clock=VirtualClock().clock) is None
    failed = store.get(CALL, "mix")
    assert failed is not None
    assert "was full (0 bytes free)" in failed.note, failed.note


async def test_a_disk_with_room_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, store, row = recording(tmp_path)
    write_wav(row.local_path, 1.0)
    caplog.set_level("INFO", logger="router.recordings")
    assert await close_recording(row, settings, store, clock=VirtualClock().clock) is not None
    (said,) = [r for r in caplog.records if "closed:" in r.getMessage()]
    assert said.levelname == "INFO"
    assert "cut short" not in said.getMessage()


async def test_no_file_in_a_read_only_folder_says_it_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, measured on the sandbox (the recordings folder remounted read-only):
    MixMonitor could not create the file (``Cannot open`` in Asterisk's log), the call
    went on, and the failure said only ``no file in ... after 30 s``."""
    real = os.statvfs

    def statvfs(path: object) -> os.statvfs_result:
        found = real(path)  # type: ignore[arg-type]
        if Path(str(path)) != tmp_path:
            return found
        values = list(found)
        values[8] = found.f_flag | os.ST_RDONLY
        return os.statvfs_result(values)

    monkeypatch.setattr(os, "statvfs", statvfs)
    with pytest.raises(RecordingError) as raised:
        await wait_complete(tmp_path / "c2c-1-mix.wav", "wav", 0.0)
    assert str(raised.value) == (
        f"c2c-1-mix.wav: no file in {tmp_path} after 0 s; that folder is on a read-only "
        "filesystem: Asterisk cannot create recordings in it (its log says "
        "'app_mixmonitor.c: Cannot open ...')"
    )
