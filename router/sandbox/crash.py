"""What a crashed sandbox phone leaves: its core file and a backtrace of it.

Debian's baresip 1.1.0 dies of SIGSEGV now and then (router/sandbox/phones.py's
module doc). Its log ends before the crash and says nothing of where, and the
crashes are rare enough that no soak has reproduced one, so every crash in a
test run or the demo has to explain itself: each phone's baresip starts with
core dumps allowed, in its own folder (so the kernel's default ``core`` pattern
writes the core there, not into the shared root), and a crash report runs
``gdb`` on the core when there is one. Without gdb, or when the kernel sends
cores elsewhere (a ``|`` pipe to systemd-coredump or apport), the report says
so and where to look instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

__all__ = [
    "BACKTRACE_TIMEOUT",
    "MAX_BACKTRACE",
    "backtrace",
    "core_files",
    "core_pattern",
    "known_cause",
    "launch_script",
    "post_mortem",
    "set_aside",
    "signal_name",
]

#: How long gdb may take over one core (it reads the binary's and libraries'
#: symbols from the sandbox root; seconds on this machine).
BACKTRACE_TIMEOUT = 60.0
#: The most of gdb's output a report keeps (every thread's stack of baresip's
#: few threads fits; a runaway recursion would not).
MAX_BACKTRACE = 16_000
#: Frames per thread.
FRAMES = 25

#: Crashes of Debian's baresip whose cause is known: what gdb shows, and what it is.
KNOWN_CRASHES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        # A thread of aufile.so jumped to address 0: the player's write handler,
        # read from a player already freed (seen in tests/fixtures/sandbox/).
        re.compile(r"^#0 +0x0+ in \?\? \(\)\n#1 +0x[0-9a-f]+ in .* from \S*/aufile\.so$", re.M),
        "baresip 1.1.0's aufile player race: the player's write thread sets its "
        "`run` flag only once it runs, so a player stopped before then (a call's "
        "audio set up twice in one step: a call on hold, an early-media stream "
        "started again) is freed under it and the thread calls a null write "
        "handler. Fixed upstream in baresip 2.0.0 (ac3f6a66, #1727); Debian "
        "sid ships 1.1.0. Not callrouter's.",
    ),
)

#: What :func:`set_aside` calls the last baresip's core.
PREVIOUS = "previous.core"

_PATTERN = Path("/proc/sys/kernel/core_pattern")


def launch_script() -> str:
    """``sh -c`` text run by chroot: cores allowed, the phone's folder as the
    working directory (``$1``), then exec of baresip (``$2``) so the process id
    stays baresip's. A hard limit below unlimited (not root) still allows that
    much."""
    return (
        'ulimit -c unlimited 2>/dev/null || ulimit -c "$(ulimit -H -c)" 2>/dev/null; '
        'cd "$1" && exec "$2" -f "$1"'
    )


def signal_name(code: int | None) -> str | None:
    """``SIGSEGV`` for a process that exited with ``-11``; None if it did not die of a signal."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def core_pattern() -> str:
    """The kernel's ``core_pattern``, or "" where it cannot be read."""
    try:
        return _PATTERN.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def core_files(folder: Path, since: float) -> list[Path]:
    """The core files written in ``folder`` since ``since`` (epoch seconds), newest first.

    The default pattern ``core`` (``core.<pid>`` with ``core_uses_pid``) lands
    in the crashed process's working directory; a pattern with ``%`` fields
    still starts with ``core`` unless an administrator changed it.
    """
    found: list[tuple[float, Path]] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        if not path.name.startswith("core"):
            continue
        try:
            stat = path.lstat()
        except OSError:
            continue
        # The kernel stamps files with a clock that may lag time.time() by a tick.
        if path.is_symlink() or not path.is_file() or stat.st_mtime < since - 0.05:
            continue
        found.append((stat.st_mtime, path))
    return [path for _, path in sorted(found, reverse=True)]


def set_aside(folder: Path) -> None:
    """Before a phone's baresip starts again: the newest core of the last one
    becomes ``previous.core`` (older ones go), so a later report never reads a
    core of another process, and a phone that crashes over and over in a long
    session keeps two cores at most, not one per crash."""
    cores = core_files(folder, 0.0)
    with contextlib.suppress(OSError):  # a report less, never a phone less
        for core in cores[1:]:
            core.unlink(missing_ok=True)
        if cores:
            cores[0].replace(folder / PREVIOUS)


def _gdb_command(root: Path, binary_in_root: str, core: Path) -> list[str] | None:
    """gdb on this host reading the sandbox root's libraries, else gdb inside the root."""
    # The root's libthread_db lists every thread; debuginfod (names for the
    # frames of Debian's stripped binaries) only where the environment names a
    # server, since a lookup without network would wait out the timeout.
    debuginfod = "on" if os.environ.get("DEBUGINFOD_URLS") else "off"
    settings = ["set pagination off", "set confirm off", f"set debuginfod enabled {debuginfod}"]
    host = shutil.which("gdb")
    if host is not None:
        args = [host, "-batch", "-nx", "-iex", f"set sysroot {root}"]
        args += ["-iex", f"set auto-load safe-path {root}"]
        binary = str(root / binary_in_root.lstrip("/"))
        core_arg = str(core)
    elif (root / "usr/bin/gdb").is_file():
        args = ["chroot", str(root), "/usr/bin/gdb", "-batch", "-nx"]
        args += ["-iex", "set auto-load safe-path /"]
        binary = binary_in_root
        try:
            core_arg = "/" + str(core.relative_to(root))
        except ValueError:
            return None
    else:
        return None
    for setting in settings:
        args += ["-iex", setting]
    args += ["-ex", f"thread apply all bt {FRAMES}", binary, core_arg]
    return args


def backtrace(root: Path, binary_in_root: str, core: Path) -> str:
    """Every thread's stack in ``core`` of ``binary_in_root`` (bounded in time and size)."""
    command = _gdb_command(root, binary_in_root, core)
    if command is None:
        return f"(gdb is not installed: the core is kept at {core}; apt install gdb to read it)"
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BACKTRACE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"(gdb took over {BACKTRACE_TIMEOUT:.0f} s on {core}; the core is kept)"
    except OSError as exc:
        return f"(gdb could not run on {core}: {exc})"
    text = (done.stdout + done.stderr).decode("utf-8", "replace")
    # gdb's chatter about symbol files it could not find says nothing of the crash.
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith(("warning: ", "Download failed"))
    ]
    out = "\n".join(lines)
    if len(out) > MAX_BACKTRACE:
        out = out[:MAX_BACKTRACE] + f"\n... (cut at {MAX_BACKTRACE} characters)"
    return out or f"(gdb printed nothing for {core}, exit status {done.returncode})"


def known_cause(backtrace_text: str) -> str | None:
    """What the crash in ``backtrace_text`` is, when it is one of :data:`KNOWN_CRASHES`."""
    for pattern, cause in KNOWN_CRASHES:
        if pattern.search(backtrace_text):
            return cause
    return None


def post_mortem(
    *, root: Path, binary_in_root: str, folder: Path, since: float, code: int | None
) -> str:
    """What to add to a crashed phone's report: its core's backtrace, or why there is none."""
    name = signal_name(code)
    if name is None:
        return ""
    cores = core_files(folder, since)
    if cores:
        core = cores[0]
        size = core.stat().st_size if core.exists() else 0
        text = backtrace(root, binary_in_root, core)
        cause = known_cause(text)
        known = f"\n--- a known crash: {cause}" if cause else ""
        return f"--- {name}: backtrace of {core} ({size // 1024} KiB)\n{text}{known}"
    pattern = core_pattern()
    if pattern.startswith("|"):
        where = (
            f"the kernel pipes cores to {pattern[1:].split()[0]!r} "
            "(kernel.core_pattern): coredumpctl list baresip, or that tool's own store"
        )
    elif pattern.startswith("/"):
        where = f"the kernel writes cores to {pattern!r} (kernel.core_pattern)"
    else:
        where = (
            f"none in {folder} (kernel.core_pattern {pattern!r}; the core may have been "
            "too large for the disk or the limit)"
        )
    return f"--- {name}: no core file: {where}"
