"""A real Asterisk 22 on loopback, owned by the project.

Integration tests, the demo and plugin authors' tests run against the Asterisk
that Debian ships, not a mock. Provisioning makes a minimal Debian sid root with
``debootstrap`` once (about a minute, as root) and caches it outside the
repository; every :class:`Sandbox` then starts that Asterisk in seconds with
configs of its own in a private instance folder inside the root (``-C``), on
free loopback ports, so several sandboxes and another Asterisk coexist.

Usage::

    with Sandbox.start() as pbx:            # provisions on first use
        print(pbx.url)                      # http://127.0.0.1:PORT/asterisk
        pbx.cli("core show channels")

``python -m router.sandbox provision|start|stop|status`` does the same from a
shell (the Makefile and the demo use it).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from router.errors import SandboxError
from router.sandbox.ports import listen_port, rtp_ports

__all__ = [
    "InstanceFolder",
    "Sandbox",
    "SandboxError",
    "asterisk_pids",
    "default_cache_dir",
    "ensure_rootfs",
    "instances_dir",
    "leftovers",
    "listen_port",
    "tmp_on_tmpfs",
]

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).with_name("conf")
SUITE = "sid"
#: What must exist in a finished root; its absence means "provision again".
MARKER = "usr/sbin/asterisk"
#: Debian packages added to a root after debootstrap, each with a file that
#: proves it is there. A root provisioned before a package joined this list is
#: brought up to date by :func:`ensure_rootfs` (apt-get inside the chroot).
#: ``baresip-core`` is the smallest package with the SIP phones' modules
#: (ctrl_tcp, aufile, g711, account, menu); the ``baresip`` metapackage only
#: adds the GUI parts. ``asterisk-core-sounds-en-gsm`` is the smallest package
#: of Asterisk's own English prompts (``asterisk`` depends on one of its forms;
#: named here so the root has the GSM one, which modules.conf's format_gsm
#: reads): the attended transfer (AMI Atxfer, the HTTP API's attended mode)
#: plays ``pbx-transfer`` and ``beep`` and is abandoned when it cannot.
EXTRA_PACKAGES: Mapping[str, str] = {
    "baresip-core": "usr/bin/baresip",
    "asterisk-core-sounds-en-gsm": "usr/share/asterisk/sounds/en_US_f_Allison/pbx-transfer.gsm",
}
DEFAULT_SECRET = "callrouter-sandbox"
#: Starts tried on fresh ports when one chosen was taken before Asterisk bound it.
_START_TRIES = 3
#: Where manager.conf's users added by Sandbox.add_manager_user begin.
_EXTRA_USERS = "\n; -- users added by Sandbox.add_manager_user --\n"
#: manager.conf's ``[general] disabledevents`` line (Sandbox.disable_events).
_DISABLED_LINE = re.compile(r"(?m)^disabledevents =.*$")
#: In the instance folder: what :meth:`Sandbox.attach` cannot learn from the
#: state file (the users added, the events disabled, the TLS ports), written
#: whenever one of them changes.
_EXTRAS = "sandbox-extras.json"
#: In the instance folder: the process that made it (pid and start time), so
#: that the folder of an in-process sandbox (a test's, a bench's, the demo's:
#: no state file) whose process still runs is told from one left behind by a
#: process that was killed before it could remove it.
_OWNER = "sandbox-owner.json"


def default_cache_dir() -> Path:
    """Where the provisioned root lives: outside the repo, reused across runs."""
    env = os.environ.get("CALLROUTER_SANDBOX_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/callrouter/sandbox")
    return Path.home() / ".cache" / "callrouter" / "sandbox"


def instances_dir(cache_dir: Path | None = None) -> Path:
    """Where ``python -m router.sandbox start`` keeps one state file per detached instance."""
    return (cache_dir or default_cache_dir()) / "instances"


#: Where processes are looked up (tests put a folder of fake ones here).
_PROC = Path("/proc")


def _pid_runs(pid: int, marker: str, started: int | None = None) -> bool:
    """True if ``pid`` is alive, its command line mentions ``marker`` and,
    when ``started`` is given, it started then (:func:`_proc_start`).

    The marker (the instance folder) guards against a recycled pid; the
    start time against one recycled by a process whose command line names
    the folder too (another sandbox tool's, an editor's on a file there).
    A zombie has an empty command line and so counts as gone.
    """
    try:
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    if marker.encode() not in cmdline:
        return False
    return started is None or _proc_start(pid) == started


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (which may hold spaces and
    ``)``): the state first, then the parent's pid, ...; None without such a
    process."""
    try:
        return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _stat_int(pid: int, index: int) -> int | None:
    fields = _stat_fields(pid)
    try:
        return int(fields[index]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def _proc_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), or None if there is no
    such process: a pid with the same start time is the same process, not a
    recycled pid."""
    return _stat_int(pid, 19)


def _ppid(pid: int) -> int | None:
    return _stat_int(pid, 1)


def _runs_python(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name.startswith("python")


def _proc_root(pid: int) -> str | None:
    """The root directory of ``pid`` as this host sees it (a chroot's folder,
    or ``/``), or None when it cannot be read (gone, or another user's)."""
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return None


def asterisk_pids(inst_in_root: str, root: Path) -> list[int]:
    """The Asterisk servers started with this instance's ``asterisk.conf``.

    Found by their command line (``-C /srv/callrouter/NAME/etc/asterisk.conf``,
    the file exactly, so ``dev`` does not find ``dev2``'s), which is all an
    instance left behind without a state file has to find them by; the
    ``asterisk -rx`` clients that :meth:`Sandbox.cli` runs name the same file
    and are not counted. The file is the one in ``root`` (the cached root
    filesystem): read inside the process's own root (the chroot it runs in),
    so an Asterisk of another cache's instance of the same name, or one not
    chrooted naming the host's ``/srv/callrouter``, is not this one's. A
    process whose root cannot be read (another user's) is not counted.
    """
    conf = f"{inst_in_root}/etc/asterisk.conf"
    want = os.path.normpath(os.path.join(os.path.realpath(root), conf.lstrip("/")))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a in (b"-r", b"-R", b"-rx", b"-x") for a in args):
            continue
        named = [b for a, b in itertools.pairwise(args) if a == b"-C" and b.startswith(b"/")]
        if not named:
            continue
        proc_root = _proc_root(int(entry))
        if proc_root is None:
            continue
        seen = {
            os.path.normpath(os.path.join(proc_root, b.decode(errors="replace").lstrip("/")))
            for b in named
        }
        if want in seen:
            found.append(int(entry))
    return sorted(found)


@dataclass(frozen=True)
class InstanceFolder:
    """An instance folder without a state file (see :func:`leftovers`)."""

    name: str
    folder: Path
    #: The live process using it (its in-process owner), or None when the
    #: process that made it has ended: the folder is left behind.
    owner: int | None
    #: Asterisk servers still running from it.
    asterisk: tuple[int, ...]

    @property
    def left_behind(self) -> bool:
        return self.owner is None


def _owner(folder: Path, asterisk: Iterable[int]) -> int | None:
    """The live process that owns an instance folder, or None.

    The owner file names the process that made the folder (written by
    :meth:`Sandbox.start` before anything else), and counts while a process
    with that pid and start time runs (a zombie, killed and not yet reaped by
    init, does not). A folder from before the owner file
    counts as owned while one of its Asterisk servers has a parent that is
    the Python process that started it (an orphan's parent becomes
    init, or a subreaper such as ``systemd --user``, neither of them Python).
    """
    try:
        owner = json.loads((folder / _OWNER).read_text(encoding="utf-8"))
        pid, started = int(owner["pid"]), int(owner["started"])
    except FileNotFoundError:
        for server in asterisk:
            parent = _ppid(server)
            if (
                parent is not None
                and parent > 1
                and _runs_python(parent)
                and not _pid_exited(parent)
            ):
                return parent
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable (half-written by a process killed while writing it): no owner.
        return None
    return pid if _proc_start(pid) == started and not _pid_exited(pid) else None


def leftovers(cache_dir: Path | None = None) -> list[InstanceFolder]:
    """The instance folders under the cached root that have no state file.

    Each says whether a live process still owns it (an in-process sandbox of a
    running test, bench or demo) or it was left behind by one that ended
    without removing it (killed by SIGKILL, or a timeout), and which Asterisk
    servers still run from it. Symbolic links are not instance folders.
    """
    cache = cache_dir or default_cache_dir()
    srv = cache / "rootfs" / "srv" / "callrouter"
    states = instances_dir(cache)
    try:
        entries = sorted(srv.iterdir())
    except OSError:
        return []
    found = []
    for folder in entries:
        if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
            continue  # not an instance (a claim being made, a link elsewhere)
        if (states / f"{folder.name}.json").exists():
            continue
        servers = asterisk_pids(f"/srv/callrouter/{folder.name}", cache / "rootfs")
        found.append(
            InstanceFolder(
                name=folder.name,
                folder=folder,
                owner=_owner(folder, servers),
                asterisk=tuple(servers),
            )
        )
    return found


def _pid_exited(pid: int) -> bool:
    """True once ``pid`` is a zombie or gone (not merely past its command line).

    The state in ``/proc/PID/stat`` is its main thread's: that one can have
    exited (a zombie, its command line empty) while another thread still runs
    the process's exit, as Asterisk's shutdown does, and its parent cannot
    reap it yet. So a zombie counts only once it is the last of its threads.
    """
    fields = _stat_fields(pid)
    try:
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return True
    return not fields or (fields[0] in ("Z", "X") and threads <= 1)


def _run(cmd: list[str], what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise SandboxError(f"{what}: {cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"{what}: {' '.join(cmd)} took longer than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SandboxError(f"{what}: {' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout


def _ensure_debootstrap() -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise SandboxError(
            "cannot provision the Asterisk sandbox: debootstrap is missing and this machine "
            "has no apt-get to install it (install debootstrap, or point "
            "CALLROUTER_SANDBOX_CACHE at an already provisioned root)"
        )
    _run(["apt-get", "update", "-qq"], "installing debootstrap", 600)
    _run(["apt-get", "install", "-y", "-qq", "debootstrap"], "installing debootstrap", 600)
    found = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if not found:
        raise SandboxError("apt-get installed debootstrap but it is not on PATH")
    return found


def tmp_on_tmpfs(root: Path) -> bool:
    """Mount a tmpfs on the root's ``/tmp`` unless something is mounted there.

    Asterisk writes every AJAM answer through a temporary file
    (``/tmp/ast-http-XXXXXX``, made and unlinked per request): on a disk file
    system that costs each poll and each action 20-40 us (docs/asterisk-ajam.md).
    Debian's own ``/tmp`` is a tmpfs since Debian 13, so the sandbox mirrors a
    PBX host here. Best effort: without the privilege to mount, ``/tmp`` stays
    as it is. The mount outlives the instances (the root is shared by them, and
    the files in it are unlinked as soon as they are made); True when a tmpfs
    is there now.
    """
    tmp = root / "tmp"
    if os.path.ismount(tmp):
        return True
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    # Instances start side by side (a test run's workers): one mount, not one each.
    with open(root.parent / ".tmpfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.ismount(tmp):
            return True
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m,mode=1777,nosuid,nodev", "tmpfs", str(tmp)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if done.returncode != 0:
        log.debug("sandbox: /tmp stays on disk: %s", done.stderr.strip())
    return os.path.ismount(tmp)


def ensure_rootfs(cache_dir: Path | None = None, *, quiet: bool = False) -> Path:
    """Return a root with Debian sid's Asterisk in it, making it if needed.

    Safe to call from several processes at once: a lock file serialises the
    one-time ``debootstrap``, and the root appears under its final name only
    when complete, so an interrupted run is redone rather than half-used.
    """
    cache = cache_dir or default_cache_dir()
    root = cache / "rootfs"
    if (root / MARKER).exists() and (not _missing_packages(root) or os.geteuid() != 0):
        # Without root a missing extra package is left missing: Asterisk still
        # runs, and what needs the package says so (Phones.start).
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / MARKER).exists():
            _install_missing(root, quiet=quiet)
            return root
        if os.geteuid() != 0:
            raise SandboxError(
                f"cannot provision the Asterisk sandbox in {root}: debootstrap needs root "
                "(run `sudo make sandbox` once, or set CALLROUTER_SANDBOX_CACHE to a "
                "provisioned root)"
            )
        debootstrap = _ensure_debootstrap()
        tmp = cache / "rootfs.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        if not quiet:
            print(
                f"provisioning Asterisk into {root} (debootstrap, about a minute)...",
                file=sys.stderr,
                flush=True,
            )
        include = ",".join(["asterisk", *EXTRA_PACKAGES])
        _run(
            [debootstrap, "--variant=minbase", f"--include={include}", SUITE, str(tmp)],
            f"debootstrap of Debian sid with {include} (needs the Debian mirror)",
            1800,
        )
        if not (tmp / MARKER).exists():
            raise SandboxError(f"debootstrap finished but {tmp / MARKER} is missing")
        _install_missing(tmp, quiet=quiet)
        tmp.rename(root)
    return root


def _missing_packages(root: Path) -> list[str]:
    return [name for name, proof in EXTRA_PACKAGES.items() if not (root / proof).exists()]


def _install_missing(root: Path, *, quiet: bool) -> None:
    """Install :data:`EXTRA_PACKAGES` that ``root`` lacks, with apt-get inside the chroot.

    Called under the provisioning lock. A root made before a package was added
    here has stale package lists, so a failed install is retried once after
    ``apt-get update``.
    """
    missing = _missing_packages(root)
    if not missing:
        return
    if os.geteuid() != 0:
        raise SandboxError(
            f"the Asterisk sandbox in {root} lacks {', '.join(missing)} and installing "
            "it needs root (run `sudo make sandbox` once)"
        )
    if not quiet:
        print(
            f"installing {', '.join(missing)} into {root} (apt-get in the chroot)...",
            file=sys.stderr,
            flush=True,
        )
    install = [
        "chroot",
        str(root),
        "/usr/bin/env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        *missing,
    ]
    what = f"installing {', '.join(missing)} into the sandbox root (needs the Debian mirror)"
    try:
        _run(install, what, 1200)
    except SandboxError:
        _run(["chroot", str(root), "/usr/bin/apt-get", "update", "-qq"], what, 600)
        _run(install, what, 1200)
    still = _missing_packages(root)
    if still:
        raise SandboxError(f"apt-get installed {', '.join(missing)} but {still} still lack files")


def stop_phone_orphans(pbx: Sandbox) -> int:
    """Kill phones left running for ``pbx`` (by their pid files); how many were killed.

    The sandbox calls this when it stops (it lives here, not in :mod:`router.sandbox.phones`, so the
    sandbox never imports the phones), so a test that never stopped its
    phones leaves no baresip behind. A pid counts only while its command line
    still names the instance folder and it started when the file says (a
    recycled pid is left alone).
    """
    folder = pbx.inst / "phones"
    killed = 0
    for pid_file in folder.glob("*/pid") if folder.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            # "PID START": the start time too (a file of an older version: none).
            pid, *start = pid_file.read_text(encoding="utf-8").split()
            started = int(start[0]) if start else None
            if _pid_runs(int(pid), pbx.inst_in_root, started):
                os.killpg(int(pid), signal.SIGKILL)
                killed += 1
        pid_file.unlink(missing_ok=True)
    return killed


def free_port() -> int:
    """A loopback TCP port nobody listens on right now, outside the kernel's
    ephemeral range (:func:`router.sandbox.ports.listen_port`): still free
    after a restart of whatever listens on it."""
    return listen_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A loopback UDP port nobody has bound right now (SIP's transport),
    outside the ephemeral range like :func:`free_port`."""
    return listen_port(socket.SOCK_DGRAM)


def asterisk_version(root: Path) -> str:
    """The packaged Asterisk version, read from dpkg's status file (no chroot needed)."""
    status = (root / "var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    for block in status.split("\n\n"):
        if block.startswith("Package: asterisk\n"):
            for line in block.splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    return "unknown"


@dataclass
class Sandbox:
    """One running Asterisk in the cached root, with configs of its own."""

    root: Path
    name: str
    http_port: int
    ami_port: int
    secret: str = DEFAULT_SECRET
    httptimeout: int = 60
    extra_dialplan: str = ""
    #: HTTPS port when started with ``tls=True`` (a self-signed certificate for
    #: 127.0.0.1, made with the openssl command); see :attr:`ca_file`.
    tls_port: int | None = None
    #: Native AMI over TLS (manager.conf ``tlsbindaddr``) when started with
    #: ``tls=True``, with the same certificate; see :attr:`tls_tcp_url`.
    tls_ami_port: int | None = None
    #: PJSIP's UDP port on 127.0.0.1, where the sandbox phones register
    #: (:mod:`router.sandbox.phones`); 0 for an instance saved before phones.
    sip_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: Asterisk's pid; kept apart from ``process`` so that an instance started by
    #: another process (``python -m router.sandbox start``) can be attached to.
    pid: int | None = None
    #: When :attr:`pid` started (``/proc/PID/stat`` field 22, clock ticks after
    #: boot): a recycled pid whose command line names the instance folder too
    #: is not taken for Asterisk. None for a state file of an older version.
    pid_started: int | None = None
    #: manager.conf sections added with :meth:`add_manager_user`, kept across
    #: rewrites of the configs.
    extra_users: dict[str, str] = field(default_factory=dict)
    #: manager.conf ``[general] disabledevents``, set with :meth:`disable_events`.
    disabled_events: tuple[str, ...] = ()

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        name: str | None = None,
        cache_dir: Path | None = None,
        httptimeout: int = 60,
        extra_dialplan: str = "",
        secret: str = DEFAULT_SECRET,
        timeout: float = 60.0,
        tls: bool = False,
    ) -> Sandbox:
        """Provision if needed, write configs, start Asterisk, wait for AJAM."""
        root = ensure_rootfs(cache_dir)
        box = cls(
            root=root,
            name=name or f"sb-{os.getpid()}-{secrets.token_hex(3)}",
            http_port=free_port(),
            ami_port=free_port(),
            secret=secret,
            httptimeout=httptimeout,
            extra_dialplan=extra_dialplan,
            tls_port=free_port() if tls else None,
            tls_ami_port=free_port() if tls else None,
            sip_port=free_udp_port(),
        )
        try:
            box.claim()
            for attempt in range(_START_TRIES):
                if attempt:
                    # Free when chosen, bound by another process before Asterisk
                    # bound it (test sessions start sandboxes and phones at once):
                    # Asterisk starts anyway, without that transport.
                    box.stop()
                    box.http_port, box.ami_port, box.sip_port = (
                        free_port(),
                        free_port(),
                        free_udp_port(),
                    )
                    if tls:
                        box.tls_port, box.tls_ami_port = free_port(), free_port()
                box.write_configs()
                since = box.log_path.stat().st_size if box.log_path.exists() else 0
                box.launch(timeout=timeout)
                taken = box.bind_failures(since)
                if not taken:
                    return box
            raise SandboxError(
                f"sandbox {box.name!r} found no free ports in {_START_TRIES} tries: "
                + "; ".join(taken)
            )
        except BaseException:
            # The error carries the log tail; leave no half-started Asterisk behind.
            box.remove()
            raise

    def bind_failures(self, since: int = 0) -> list[str]:
        """The lines of Asterisk's log from byte ``since`` on saying a port of its
        was taken ("Transport 'transport-udp' could not be started: Address
        already in use", seen in CI: the phones then never registered)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "Address already in use" in line]

    def claim(self) -> None:
        """Record this process as the instance folder's owner (:func:`leftovers`):
        while it runs, the folder is in use, not left behind."""
        owner = json.dumps({"pid": os.getpid(), "started": _proc_start(os.getpid())}) + "\n"
        if not self.inst.exists():
            # Made aside and renamed, so the folder never shows without its
            # owner (a `stop --all --remove` at that moment would take it).
            staging = self.inst.with_name(f".{self.name}.{os.getpid()}.claim")
            staging.mkdir(parents=True, exist_ok=True)
            (staging / _OWNER).write_text(owner)
            try:
                staging.rename(self.inst)
                return
            except OSError:  # made by another process meanwhile
                shutil.rmtree(staging, ignore_errors=True)
        path = self.inst / _OWNER
        tmp = path.with_suffix(".tmp")
        tmp.write_text(owner)
        tmp.replace(path)

    @classmethod
    def left_behind(cls, name: str, *, cache_dir: Path | None = None) -> Sandbox:
        """An instance folder without a state file, to stop and remove.

        ``name`` must be one of :func:`leftovers`' (so it names a folder in the
        root, never a path elsewhere); its Asterisk, if one still runs, is the
        one found by its command line. The ports are not known (0).
        """
        for found in leftovers(cache_dir):
            if found.name == name:
                box = cls(
                    root=found.folder.parent.parent.parent,
                    name=name,
                    http_port=0,
                    ami_port=0,
                    pid=found.asterisk[0] if found.asterisk else None,
                    # Found now by its command line: its start time now.
                    pid_started=_proc_start(found.asterisk[0]) if found.asterisk else None,
                )
                return box
        raise SandboxError(f"no instance folder named {name!r} without a state file")

    @classmethod
    def attach(cls, name: str, *, cache_dir: Path | None = None) -> Sandbox:
        """Rebuild a detached instance from its state file (see :meth:`save_state`).

        The result can be inspected, stopped, restarted and removed like one
        this process started; ``running`` checks the pid recorded in the file.
        The users added with :meth:`add_manager_user`, the events turned off
        with :meth:`disable_events`, the TLS ports and the extra dialplan come
        back from the instance folder, so changing one keeps the others.
        """
        path = instances_dir(cache_dir) / f"{name}.json"
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            box = cls(
                root=Path(state["root"]),
                name=str(state["name"]),
                http_port=int(state["http_port"]),
                ami_port=int(state["ami_port"]),
                secret=str(state["secret"]),
                httptimeout=int(state.get("httptimeout", 60)),
                sip_port=int(state.get("sip_port", 0)),
                pid=int(state["pid"]) if state.get("pid") is not None else None,
                pid_started=(
                    int(state["pid_started"]) if state.get("pid_started") is not None else None
                ),
            )
        except FileNotFoundError as exc:
            raise SandboxError(f"no sandbox named {name!r}: {path} does not exist") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SandboxError(f"sandbox state file {path} is unreadable: {exc}") from exc
        box._load_extras()
        return box

    def _save_extras(self) -> None:
        """Write what :meth:`_load_extras` restores, atomically, into the instance folder."""
        extras = {
            "extra_users": self.extra_users,
            "disabled_events": list(self.disabled_events),
            "tls_port": self.tls_port,
            "tls_ami_port": self.tls_ami_port,
        }
        path = self.inst / _EXTRAS
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(extras, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _load_extras(self) -> None:
        """Restore the users added, the events disabled and the TLS ports of an
        instance another process started: without them the next
        :meth:`add_manager_user` would rewrite manager.conf without the earlier
        users. An instance from before this file has none of them."""
        dialplan = self.inst / "etc" / "extensions_extra.conf"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            self.extra_dialplan = dialplan.read_text(encoding="utf-8")
        path = self.inst / _EXTRAS
        try:
            extras = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise SandboxError(f"sandbox file {path} is unreadable: {exc}") from exc
        try:
            users = extras["extra_users"]
            events = extras["disabled_events"]
            ports = (extras["tls_port"], extras["tls_ami_port"])
            if not (
                isinstance(users, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in users.items())
                and isinstance(events, list)
                and all(isinstance(e, str) for e in events)
                and all(p is None or (isinstance(p, int) and 0 < p < 65536) for p in ports)
            ):
                raise TypeError("unexpected values")
        except (KeyError, TypeError) as exc:
            raise SandboxError(f"sandbox file {path} is unreadable: {exc}") from exc
        self.extra_users = dict(users)
        self.disabled_events = tuple(events)
        self.tls_port, self.tls_ami_port = ports

    @property
    def state_path(self) -> Path:
        """This instance's state file: the cache folder is the root's parent."""
        return self.root.parent / "instances" / f"{self.name}.json"

    def state(self) -> dict[str, object]:
        """What a detached instance needs to be found again, as JSON-ready values."""
        return {
            "name": self.name,
            "pid": self.pid,
            "pid_started": self.pid_started,
            "url": self.url,
            "http_port": self.http_port,
            "ami_port": self.ami_port,
            "sip_port": self.sip_port,
            "secret": self.secret,
            "httptimeout": self.httptimeout,
            "root": str(self.root),
        }

    def save_state(self) -> Path:
        """Write :meth:`state` atomically to :attr:`state_path` and return the path."""
        path = self.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    def forget_state(self) -> None:
        """Delete the state file, if any."""
        self.state_path.unlink(missing_ok=True)

    @property
    def inst_in_root(self) -> str:
        """The instance folder as Asterisk sees it inside the chroot."""
        return f"/srv/callrouter/{self.name}"

    @property
    def inst(self) -> Path:
        """The same folder as seen from the host."""
        return self.root / self.inst_in_root.lstrip("/")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/asterisk"

    @property
    def tcp_url(self) -> str:
        """Native AMI on the manager.conf port: ``tcp://127.0.0.1:PORT``."""
        return f"tcp://127.0.0.1:{self.ami_port}"

    @property
    def log_path(self) -> Path:
        return self.inst / "log" / "messages.log"

    @property
    def console_log_path(self) -> Path:
        return self.inst / "console.log"

    def users(self) -> Mapping[str, str]:
        """manager.conf users and their secret (all share the sandbox secret)."""
        users = {"admin": self.secret, "router": self.secret, "watcher": self.secret}
        users.update(dict.fromkeys(self.extra_users, self.secret))
        return users

    def add_manager_user(
        self,
        name: str,
        *,
        read: str = "call,dialplan,user,agent,system",
        write: str = "call,originate,user,reporting",
        lines: Iterable[str] = (),
    ) -> None:
        """A manager.conf user with the sandbox secret and extra ``lines`` (such as
        the ``eventfilter`` lines callrouter logs at start), applied at once.

        The defaults are the ``router`` user's classes: a second router user
        that differs only in what ``lines`` add.
        """
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name) or name in ("admin", "router"):
            raise ValueError(f"manager user name {name!r}: lower-case letters, digits, - and _")
        body = [f"[{name}]", f"secret = {self.secret}", f"read = {read}", f"write = {write}"]
        body.extend(line for line in lines if "\n" not in line)
        self.extra_users[name] = "\n".join(body) + "\n"
        self._write_manager_users()
        if self.running:
            self.cli("manager reload")

    def remove_manager_user(self, name: str) -> None:
        """Take back a user :meth:`add_manager_user` added, applied at once (a
        name it did not add: nothing), so that a test leaves a shared sandbox
        with the users it found."""
        if self.extra_users.pop(name, None) is None:
            return
        self._write_manager_users()
        if self.running:
            self.cli("manager reload")

    def disable_events(self, names: Iterable[str]) -> None:
        """Turn ``names`` off for every session (``[general] disabledevents``),
        applied at once; no names turns none off. For the benchmarks: what an
        administrator can do to cut what Asterisk raises (docs/asterisk.md)."""
        chosen = tuple(dict.fromkeys(names))
        for name in chosen:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
                raise ValueError(f"disabledevents: {name!r} is not an event name")
        self.disabled_events = chosen
        self._write_manager_users()
        if self.running:
            self.cli("manager reload")

    def _write_manager_users(self) -> None:
        conf = self.inst / "etc" / "manager.conf"
        text = conf.read_text(encoding="utf-8").split(_EXTRA_USERS, 1)[0]
        # Always the key, empty for none: Asterisk 22's reload keeps the last
        # value when the key is gone.
        line = f"disabledevents = {','.join(self.disabled_events)}"
        text = _DISABLED_LINE.sub(lambda _: line, text, count=1)
        if self.extra_users:
            text += _EXTRA_USERS + "\n" + "\n".join(self.extra_users.values())
        conf.write_text(text, encoding="utf-8")
        # Beside it, for attach(): another process may add the next user.
        self._save_extras()

    def write_configs(self) -> None:
        if not self.sip_port:
            self.sip_port = free_udp_port()
        rtp_start, rtp_end = rtp_ports()
        values = {
            "{inst}": self.inst_in_root,
            "{http_port}": str(self.http_port),
            "{ami_port}": str(self.ami_port),
            "{sip_port}": str(self.sip_port),
            "{httptimeout}": str(self.httptimeout),
            "{secret}": self.secret,
            "{tls}": self._tls_lines(),
            "{ami_tls}": self._ami_tls_lines(),
            "{rtp_start}": str(rtp_start),
            "{rtp_end}": str(rtp_end),
        }
        for sub in ("etc", "lib", "log", "run", "spool", "cache"):
            (self.inst / sub).mkdir(parents=True, exist_ok=True)
        for conf in sorted(CONF_DIR.glob("*.conf")):
            text = conf.read_text(encoding="utf-8")
            for key, value in values.items():
                text = text.replace(key, value)
            (self.inst / "etc" / conf.name).write_text(text, encoding="utf-8")
        self.set_dialplan(self.extra_dialplan, reload=False)
        self._write_manager_users()

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate clients must trust for the TLS port."""
        return self.inst / "etc" / "tls-cert.pem"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise SandboxError("this sandbox was started without tls=True")
        return f"https://127.0.0.1:{self.tls_port}/asterisk"

    @property
    def tls_tcp_url(self) -> str:
        """Native AMI over TLS: ``tls://127.0.0.1:PORT`` (trust :attr:`ca_file`)."""
        if self.tls_ami_port is None:
            raise SandboxError("this sandbox was started without tls=True")
        return f"tls://127.0.0.1:{self.tls_ami_port}"

    def _ami_tls_lines(self) -> str:
        """manager.conf's TLS listener, with the certificate :meth:`_tls_lines` made."""
        if self.tls_ami_port is None:
            return ""
        return (
            f"tlsenable = yes\ntlsbindaddr = 127.0.0.1:{self.tls_ami_port}\n"
            f"tlscertfile = {self.inst_in_root}/etc/tls-cert.pem\n"
            f"tlsprivatekey = {self.inst_in_root}/etc/tls-key.pem\n"
        )

    def _tls_lines(self) -> str:
        if self.tls_port is None:
            return ""
        key = self.inst / "etc" / "tls-key.pem"
        (self.inst / "etc").mkdir(parents=True, exist_ok=True)
        if not shutil.which("openssl") and shutil.which("apt-get") and os.geteuid() == 0:
            _run(["apt-get", "install", "-y", "-qq", "openssl"], "installing openssl", 600)
        _run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(self.ca_file),
            ],
            "making the sandbox's TLS certificate",
            60,
        )
        return (
            f"tlsenable = yes\ntlsbindaddr = 127.0.0.1:{self.tls_port}\n"
            f"tlscertfile = {self.inst_in_root}/etc/tls-cert.pem\n"
            f"tlsprivatekey = {self.inst_in_root}/etc/tls-key.pem\n"
        )

    def set_dialplan(self, text: str, *, reload: bool = True) -> None:
        """Replace the per-instance dialplan include and reload it if running."""
        self.extra_dialplan = text
        (self.inst / "etc" / "extensions_extra.conf").write_text(text, encoding="utf-8")
        if reload and self.running:
            self.cli("dialplan reload")

    def launch(self, *, timeout: float = 60.0) -> None:
        """Start the Asterisk process and return once AJAM answers."""
        if self.running:
            return
        tmp_on_tmpfs(self.root)
        console = open(self.console_log_path, "ab")  # noqa: SIM115 - lives with the process
        try:
            self.process = subprocess.Popen(
                [
                    "chroot",
                    str(self.root),
                    "/usr/sbin/asterisk",
                    "-f",
                    "-n",
                    "-C",
                    f"{self.inst_in_root}/etc/asterisk.conf",
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        # chroot execs asterisk, so this pid is Asterisk's own.
        self.pid = self.process.pid
        # Kept through chroot's exec: the fork's time, Asterisk's own.
        self.pid_started = _proc_start(self.pid)
        if self.state_path.exists():
            # A detached instance (``start``, or one attached and restarted):
            # ``stop NAME`` and ``status`` read the pid from its state.
            self.save_state()
        self.wait_ready(timeout)
        self.index_cel_store()

    @property
    def cel_store(self) -> Path:
        """The file cel_sqlite3_custom writes (conf/cel_sqlite3_custom.conf)."""
        return self.inst / "log" / "cel.db"

    def index_cel_store(self) -> bool:
        """Give the CEL store the indexes docs/history.md asks administrators
        for, so that the sandbox's replays read as a production store's should
        (an index search, not a scan that holds Asterisk's writer back).

        False when the store or its table is not there yet (cel_sqlite3_custom
        not loaded): nothing to index then."""
        from router.calllife.sources import CEL_INDEXES

        if not self.cel_store.exists():
            return False
        con = sqlite3.connect(self.cel_store, timeout=5)
        try:
            con.executescript(CEL_INDEXES)
        except sqlite3.OperationalError as exc:
            log.warning("sandbox %s: CEL store not indexed: %s", self.name, exc)
            return False
        finally:
            con.close()
        return True

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SandboxError(
                    f"Asterisk exited with {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            if self._ajam_answers():
                with contextlib.suppress(SandboxError):
                    self.cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        raise SandboxError(
            f"AJAM did not answer on {self.url} within {timeout:.0f} s:\n" + self.log_tail()
        )

    def _ajam_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/rawman?action=Ping", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and _pid_runs(self.pid, self.inst_in_root, self.pid_started)

    def _wait_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for Asterisk to exit; True if it did."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        # Its command line empties when its memory is released, before it has
        # finished exiting: wait (briefly) until it is a zombie or gone, so its
        # parent sees it exited once stop() returns.
        settle = min(deadline, time.monotonic() + 2.0)
        while self.pid is not None and not _pid_exited(self.pid) and time.monotonic() < settle:
            time.sleep(0.01)
        return True

    def _signal(self, sig: signal.Signals) -> None:
        if self.pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def stop(self, *, timeout: float = 10.0, phones: bool = True) -> None:
        """Stop Asterisk: a polite ``core stop now``, then SIGTERM, then SIGKILL.

        Phones (:mod:`router.sandbox.phones`) still running for this instance
        are killed first, so no user agent outlives its Asterisk; a restart
        (``phones=False``) leaves them be, and they find Asterisk again on the
        same port (their registrations are kept in its AstDB).
        """

        if phones:
            stop_phone_orphans(self)
        if not self.running:
            return
        try:
            self.cli("core stop now", timeout=timeout / 2)
            asked = True
        except SandboxError:
            # No control socket answered: Asterisk was not asked, so waiting
            # for it to stop by itself would only delay the SIGTERM.
            asked = False
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if asked and self._wait_gone(timeout / 2):
                break
            self._signal(sig)
            asked = True
        self._wait_gone(timeout)

    def kill(self) -> None:
        """Kill Asterisk at once, as a crash would."""
        if self.running:
            self._signal(signal.SIGKILL)
            self._wait_gone(10)

    def restart(self, *, down_for: float = 0.0, timeout: float = 60.0) -> None:
        """Stop and start the same instance (same ports, same configs; phones stay)."""
        self.stop(phones=False)
        if down_for:
            time.sleep(down_for)
        self.launch(timeout=timeout)

    def remove(self) -> None:
        """Stop and delete the instance folder (the cached root stays)."""
        self.stop()
        shutil.rmtree(self.inst, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    # -- inspection -----------------------------------------------------------

    def cli(self, command: str, *, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command through the instance's control socket."""
        return _run(
            [
                "chroot",
                str(self.root),
                "/usr/sbin/asterisk",
                "-C",
                f"{self.inst_in_root}/etc/asterisk.conf",
                "-rx",
                command,
            ],
            f"asterisk -rx {command!r}",
            timeout,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of Asterisk's own log, for failed tests and start-up errors."""
        out: list[str] = []
        for path in (self.console_log_path, self.log_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                out.append(f"--- {path} (last {lines} lines)")
                out.extend(text[-lines:])
        return "\n".join(out) or "(no Asterisk log was written)"
