"""A crashed sandbox phone's post-mortem (router/sandbox/crash.py): which core
is its own, what gdb is asked and how much of its answer is kept, and what the
report says when there is no core or no gdb. The real crash and gdb run in
tests/integration/test_phones.py."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from router.sandbox import crash


def _core(folder: Path, name: str, age: float = 0.0) -> Path:
    path = folder / name
    path.write_bytes(b"\x7fELF core")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def _fake_gdb(tmp_path: Path, output: str) -> Path:
    """A stand-in gdb that records its arguments and prints ``output``."""
    script = tmp_path / "bin" / "gdb"
    script.parent.mkdir()
    (tmp_path / "out.txt").write_text(output, encoding="utf-8")
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args.txt\ncat {tmp_path}/out.txt\n',
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_only_cores_written_since_the_start_count_newest_first(tmp_path: Path) -> None:
    _core(tmp_path, "core.12", age=600)  # an earlier baresip's
    newer = _core(tmp_path, "core.14", age=1)
    newest = _core(tmp_path, "core")
    _core(tmp_path, "baresip.log")
    (tmp_path / "core.link").symlink_to(newest)
    (tmp_path / "core.dir").mkdir()
    assert crash.core_files(tmp_path, time.time() - 60) == [newest, newer]


def test_a_start_sets_the_last_core_aside_and_drops_older_ones(tmp_path: Path) -> None:
    _core(tmp_path, "core.12", age=600)
    _core(tmp_path, "core", age=5)
    crash.set_aside(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [crash.PREVIOUS]
    assert crash.core_files(tmp_path, 0.0) == []  # never read as the new process's


def test_no_signal_no_post_mortem(tmp_path: Path) -> None:
    _core(tmp_path, "core")
    for code in (None, 0, 1):
        assert (
            crash.post_mortem(
                root=tmp_path,
                binary_in_root="/usr/bin/baresip",
                folder=tmp_path,
                since=0,
                code=code,
            )
            == ""
        )


def test_the_backtrace_of_the_core_is_read_with_the_roots_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gdb = _fake_gdb(
        tmp_path,
        "warning: Could not load shared library symbols for linux-vdso.so.1.\n"
        "Program terminated with signal SIGSEGV, Segmentation fault.\n"
        "#0  0x00007f in aufile_write () from /root/usr/lib/baresip/modules/aufile.so\n",
    )
    monkeypatch.setattr(crash.shutil, "which", lambda name: str(gdb))
    monkeypatch.delenv("DEBUGINFOD_URLS", raising=False)
    folder = tmp_path / "phone"
    folder.mkdir()
    core = _core(folder, "core")
    report = crash.post_mortem(
        root=tmp_path, binary_in_root="/usr/bin/baresip", folder=folder, since=0, code=-11
    )
    assert report.startswith(f"--- SIGSEGV: backtrace of {core} (0 KiB)\n")
    assert "#0  0x00007f in aufile_write ()" in report
    assert "warning:" not in report  # gdb's chatter about symbol files is left out
    args = (tmp_path / "args.txt").read_text(encoding="utf-8").splitlines()
    # the sandbox root's libraries, set before the core loads; no network lookups
    assert args[args.index("-iex") + 1] == f"set sysroot {tmp_path}"
    assert "set debuginfod enabled off" in args
    assert args[-2:] == [str(tmp_path / "usr/bin/baresip"), str(core)]
    assert "thread apply all bt 25" in args


def test_debuginfod_is_asked_where_the_environment_names_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gdb = _fake_gdb(tmp_path, "#0 main ()\n")
    monkeypatch.setattr(crash.shutil, "which", lambda name: str(gdb))
    monkeypatch.setenv("DEBUGINFOD_URLS", "https://debuginfod.debian.net")
    crash.backtrace(tmp_path, "/usr/bin/baresip", _core(tmp_path, "core"))
    assert "set debuginfod enabled on" in (tmp_path / "args.txt").read_text(encoding="utf-8")


def test_a_long_backtrace_is_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gdb = _fake_gdb(tmp_path, "#1 frame\n" * (crash.MAX_BACKTRACE // 4))
    monkeypatch.setattr(crash.shutil, "which", lambda name: str(gdb))
    text = crash.backtrace(tmp_path, "/usr/bin/baresip", _core(tmp_path, "core"))
    assert len(text) < crash.MAX_BACKTRACE + 100
    assert text.endswith(f"... (cut at {crash.MAX_BACKTRACE} characters)")


def test_gdb_inside_the_root_when_the_host_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crash.shutil, "which", lambda name: None)
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/gdb").write_text("", encoding="utf-8")
    core = _core(tmp_path, "core")
    command = crash._gdb_command(tmp_path, "/usr/bin/baresip", core)
    assert command is not None
    assert command[:3] == ["chroot", str(tmp_path), "/usr/bin/gdb"]
    assert command[-2:] == ["/usr/bin/baresip", "/core"]  # paths as the root sees them


def test_without_gdb_the_report_says_where_the_core_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crash.shutil, "which", lambda name: None)
    core = _core(tmp_path, "core")
    text = crash.backtrace(tmp_path, "/usr/bin/baresip", core)
    assert text == f"(gdb is not installed: the core is kept at {core}; apt install gdb to read it)"


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        (
            "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t",
            "the kernel pipes cores to '/usr/lib/systemd/systemd-coredump' "
            "(kernel.core_pattern): coredumpctl list baresip",
        ),
        ("/var/crash/core.%p", "the kernel writes cores to '/var/crash/core.%p'"),
        ("core", "none in "),
    ],
)
def test_no_core_says_where_the_kernel_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str, said: str
) -> None:
    pattern_file = tmp_path / "core_pattern"
    pattern_file.write_text(pattern + "\n", encoding="utf-8")
    monkeypatch.setattr(crash, "_PATTERN", pattern_file)
    folder = tmp_path / "phone"
    folder.mkdir()
    report = crash.post_mortem(
        root=tmp_path, binary_in_root="/usr/bin/baresip", folder=folder, since=0, code=-6
    )
    assert report.startswith("--- SIGABRT: no core file: ")
    assert said in report


def test_signal_names() -> None:
    assert crash.signal_name(-11) == "SIGSEGV"
    assert crash.signal_name(-99) == "signal 99"
    assert crash.signal_name(0) is None
    assert crash.signal_name(None) is None


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sandbox"


def test_the_aufile_player_race_is_named_from_a_real_backtrace() -> None:
    """gdb's output on the core of Debian's baresip 1.1.0 that dialled while a
    call was held (tests/integration/test_phones.py makes it crash so)."""
    text = (FIXTURES / "baresip-1.1.0-aufile-race.gdb.txt").read_text(encoding="utf-8")
    cause = crash.known_cause(text)
    assert cause is not None
    assert cause.startswith("baresip 1.1.0's aufile player race")
    assert "baresip 2.0.0 (ac3f6a66" in cause


def test_another_crash_is_not_named() -> None:
    """A baresip killed by SIGSEGV in its main loop: frame 0 is no null jump."""
    idle = (
        "Program terminated with signal SIGSEGV, Segmentation fault.\n"
        "#0  0x00007faf677f4a02 in ?? () from /root/usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "#2  0x00007faf6787624d in epoll_wait () from /root/usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "#4  0x00007faf679cc41e in re_main () from /root/usr/lib/x86_64-linux-gnu/libre.so.1\n"
    )
    assert crash.known_cause(idle) is None
    # a null jump from another library is not the aufile race either
    other = "#0  0x0000000000000000 in ?? ()\n#1  0x00007f in ?? () from /r/ausine.so\n"
    assert crash.known_cause(other) is None


def test_a_report_names_a_known_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (FIXTURES / "baresip-1.1.0-aufile-race.gdb.txt").read_text(encoding="utf-8")
    gdb = _fake_gdb(tmp_path, text)
    monkeypatch.setattr(crash.shutil, "which", lambda name: str(gdb))
    folder = tmp_path / "phone"
    folder.mkdir()
    _core(folder, "core")
    report = crash.post_mortem(
        root=tmp_path, binary_in_root="/usr/bin/baresip", folder=folder, since=0, code=-11
    )
    assert report.splitlines()[-1].startswith(
        "--- a known crash: baresip 1.1.0's aufile player race"
    )
