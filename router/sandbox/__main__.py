"""``python -m router.sandbox``: the Asterisk sandbox from a shell.

Subcommands::

    provision            make the cached Debian root with Asterisk (once, as root)
    start [NAME]         start a detached instance, print its URL (state in
                         <cache>/instances/NAME.json); --tls adds HTTPS and
                         AMI over TLS with a self-signed certificate
    stop [NAME] [--all]  stop detached instances (control socket, then signals);
                         --remove also deletes their folders, and removes a
                         folder left behind (see status) with its Asterisk
    status [NAME]        list instances: name, pid, state, URL, and the
                         instance folders left behind with no state file and
                         no live owner (a run killed or timed out before it
                         removed its sandbox, or kept by stop / run --keep)
    run [NAME]           start one in the foreground until Ctrl-C
    phones [NAME]        real SIP phones (baresip) on a running instance, in
                         the foreground until Ctrl-C, printing every call

Exit codes: 0 success, 1 a :class:`~router.errors.SandboxError` (the one-line
reason is printed), 3 ``status`` found a named instance not running, or no
instance of that name, or only a folder left behind (as LSB's ``status`` says
3 for a service that is not running: a script polling for "up" needs no second
case).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from router.errors import SandboxError
from router.sandbox import (
    InstanceFolder,
    Sandbox,
    asterisk_version,
    ensure_rootfs,
    instances_dir,
    leftovers,
)
from router.sandbox.phones import EXTENSIONS, MODES, Mode, Phones

DEFAULT_NAME = "dev"


def _cache(args: argparse.Namespace) -> Path | None:
    cache: Path | None = args.cache
    return cache


def _read_dialplan(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SandboxError(f"cannot read dialplan {path}: {exc.strerror}") from exc


def _describe(box: Sandbox) -> str:
    users = ", ".join(box.users())
    tls = (
        f"  TLS: {box.tls_url} and {box.tls_tcp_url} (trust {box.ca_file})\n"
        if box.tls_port is not None and box.tls_ami_port is not None
        else ""
    )
    return (
        f"sandbox {box.name!r}: {box.url} (AMI TCP port {box.ami_port}, pid {box.pid})\n"
        f"{tls}"
        f"  users: {users}; secret: {box.secret}\n"
        f"  log: {box.log_path}"
    )


def cmd_provision(args: argparse.Namespace) -> int:
    root = ensure_rootfs(_cache(args))
    print(f"Asterisk {asterisk_version(root)} ready in {root}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    name: str = args.name
    try:
        old = Sandbox.attach(name, cache_dir=_cache(args))
    except SandboxError:
        old = None
    if old is not None and old.running:
        if args.tls and old.tls_port is None:
            raise SandboxError(
                f"sandbox {name!r} is already running without TLS: stop it first "
                f"(python -m router.sandbox stop {name})"
            )
        if not args.quiet:
            print(f"already running\n{_describe(old)}", file=sys.stderr)
        print(old.url)
        return 0
    box = Sandbox.start(
        name=name,
        cache_dir=_cache(args),
        httptimeout=args.httptimeout,
        secret=args.secret,
        extra_dialplan=_read_dialplan(args.dialplan),
        tls=args.tls,
    )
    box.save_state()
    if not args.quiet:
        print(_describe(box), file=sys.stderr)
    print(box.url)
    return 0


def _state_names(cache: Path | None) -> list[str]:
    folder = instances_dir(cache)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _running_from(found: InstanceFolder) -> str:
    if not found.asterisk:
        return "no Asterisk runs from it"
    return "Asterisk still runs from it (pid " + ", ".join(map(str, found.asterisk)) + ")"


def _stop_left_behind(found: InstanceFolder, args: argparse.Namespace) -> None:
    """Stop the Asterisk servers (and phones) still running from a folder with
    no state file and, with ``--remove``, delete it."""
    box = Sandbox.left_behind(found.name, cache_dir=_cache(args))
    for pid in found.asterisk or (None,):
        box.pid = pid
        box.stop()
        if box.running:
            raise SandboxError(f"sandbox {found.name!r} (pid {pid}) did not stop")
    if args.remove:
        shutil.rmtree(box.inst, ignore_errors=True)
        if box.inst.exists():
            raise SandboxError(f"sandbox {found.name!r}: {box.inst} could not be removed")
    whose = (
        "left behind"
        if found.left_behind
        else f"in use by process {found.owner}, stopped as asked by name"
    )
    done = (
        "Asterisk stopped (pid " + ", ".join(map(str, found.asterisk)) + ")"
        if found.asterisk
        else "no Asterisk was running"
    )
    kept = (
        ", instance folder removed"
        if args.remove
        else f", folder {found.folder} kept (--remove deletes it)"
    )
    print(f"sandbox {found.name!r} ({whose}, no state file): {done}{kept}")


def cmd_stop(args: argparse.Namespace) -> int:
    folders = {found.name: found for found in leftovers(_cache(args))}
    if args.all:
        # Every detached instance, and every folder left behind; never the
        # folder of an in-process sandbox whose process still runs.
        names = _state_names(_cache(args))
        names += [name for name, found in folders.items() if found.left_behind]
    else:
        names = [args.name]
    for name in names:
        if not (instances_dir(_cache(args)) / f"{name}.json").exists():
            if name in folders:
                _stop_left_behind(folders[name], args)
            else:
                print(f"sandbox {name!r}: not started (no state file, no instance folder)")
            continue
        box = Sandbox.attach(name, cache_dir=_cache(args))
        was_running = box.running
        if args.remove:
            box.remove()
        else:
            box.stop()
        if box.running:
            raise SandboxError(f"sandbox {name!r} (pid {box.pid}) did not stop")
        box.forget_state()
        print(
            f"sandbox {name!r}: {'stopped' if was_running else 'was not running'}"
            + (", instance folder removed" if args.remove else "")
        )
    return 0


def _left_row(found: InstanceFolder) -> dict[str, object]:
    return {
        "name": found.name,
        "pid": found.asterisk[0] if found.asterisk else None,
        "url": None,
        "running": bool(found.asterisk),
        "left_behind": True,
        "folder": str(found.folder),
    }


def cmd_status(args: argparse.Namespace) -> int:
    cache = _cache(args)
    states = _state_names(cache)
    folders = leftovers(cache)
    left = [found for found in folders if found.left_behind]
    if args.name and args.name not in states:
        named = [found for found in folders if found.name == args.name]
        if not named:
            print(f"error: no sandbox named {args.name!r}", file=sys.stderr)
            return 3
        found = named[0]
        if not found.left_behind:
            print(
                f"sandbox {found.name!r} is in use by process {found.owner} "
                f"(an in-process sandbox: no state file); {_running_from(found)}",
                file=sys.stderr,
            )
            return 3
        left, states = [found], []
    elif args.name:
        left, states = [], [args.name]
    if not states and not left:
        print("no sandbox instances")
        return 0
    code = 0
    rows = []
    for name in states:
        box = Sandbox.attach(name, cache_dir=cache)
        if not box.running:
            code = 3 if args.name else 0
        rows.append(box.state() | {"running": box.running, "left_behind": False})
    if args.name and left:
        code = 3  # not a sandbox to use: what is left of one
    if args.json:
        print(json.dumps(rows + [_left_row(found) for found in left], indent=2))
        return code
    for row in rows:
        state = "running" if row["running"] else "stopped"
        print(f"{row['name']:<16} {state:<8} pid {row['pid']!s:<8} {row['url']}")
    for found in left:
        pid = _left_row(found)["pid"]
        print(f"{found.name:<16} {'left':<8} pid {'-' if pid is None else pid!s:<8} {found.folder}")
    if left:
        print(
            f"\n{len(left)} instance folder(s) left behind, with no state file and no "
            "live process owning them (a run killed or timed out before removing its "
            "sandbox, or a folder kept by `stop` or `run --keep`): "
            + "; ".join(f"{found.name}: {_running_from(found)}" for found in left)
            + ".\nRemove one with `python -m router.sandbox stop NAME --remove`, all "
            "with `python -m router.sandbox stop --all --remove`.",
            file=sys.stderr,
        )
    return code


def cmd_run(args: argparse.Namespace) -> int:
    box = Sandbox.start(
        name=args.name,
        cache_dir=_cache(args),
        httptimeout=args.httptimeout,
        secret=args.secret,
        extra_dialplan=_read_dialplan(args.dialplan),
        tls=args.tls,
    )
    # SIGTERM behaves like Ctrl-C so that `kill` also cleans up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(_describe(box), file=sys.stderr)
        print("press Ctrl-C to stop", file=sys.stderr, flush=True)
        print(box.url, flush=True)
        while box.running:
            time.sleep(0.5)
        print(f"Asterisk exited:\n{box.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if args.keep:
            box.stop()
        else:
            box.remove()


def _modes(values: list[str]) -> dict[str, Mode]:
    modes: dict[str, Mode] = {}
    for value in values:
        name, _, mode = value.partition("=")
        if name not in EXTENSIONS or mode not in MODES:
            raise SandboxError(
                f"--mode {value!r}: expected EXTENSION=MODE with EXTENSION one of "
                f"{', '.join(EXTENSIONS)} and MODE one of {', '.join(MODES)}"
            )
        modes[name] = mode  # type: ignore[assignment]
    return modes


def _alive(box: Sandbox) -> bool:
    return box.running


def cmd_phones(args: argparse.Namespace) -> int:
    modes = _modes(args.mode)
    box = Sandbox.attach(args.name, cache_dir=_cache(args))
    if not box.running:
        raise SandboxError(
            f"sandbox {args.name!r} is not running (python -m router.sandbox start {args.name})"
        )
    extensions = [e for e in args.extensions.split(",") if e]
    phones = Phones.start(box, extensions=extensions)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for name, mode in modes.items():
            phones[name].mode = mode
        for phone in phones.all:
            label = phone.mode if phone is not phones.pstn else "answer (the customer)"
            print(f"{phone.name:<5} registered at {phone.registrar}, {label}", flush=True)
        print("press Ctrl-C to stop the phones", file=sys.stderr, flush=True)
        told: dict[tuple[str, str], str] = {}
        while _alive(box):
            for phone in phones.all:
                for call in phone.calls:
                    state = (
                        f"ended ({call.reason}), talk {call.talk_seconds:.1f} s"
                        if call.talk_seconds is not None
                        else f"ended ({call.reason})"
                        if call.ended
                        else "answered"
                        if call.answered
                        else "ringing"
                    )
                    key = (phone.name, call.id)
                    if told.get(key) != state:
                        told[key] = state
                        way = "from" if call.direction == "in" else "to"
                        print(f"{phone.name:<5} {way} {call.remote}: {state}", flush=True)
            time.sleep(0.2)
        print("Asterisk stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        phones.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m router.sandbox",
        description="A real Asterisk 22 on loopback for tests, the demo and development.",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder (default: $CALLROUTER_SANDBOX_CACHE, "
        "/var/cache/callrouter/sandbox as root, else ~/.cache/...)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("provision", help="make the cached Asterisk root (debootstrap, as root)")
    p.set_defaults(func=cmd_provision)

    def instance_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "name",
            nargs="?",
            default=DEFAULT_NAME,
            help=f"instance name (default {DEFAULT_NAME!r})",
        )
        p.add_argument(
            "--httptimeout",
            type=int,
            default=60,
            help="manager.conf httptimeout in seconds (default 60)",
        )
        p.add_argument(
            "--secret",
            default="callrouter-sandbox",
            help="secret of the admin, router and watcher users",
        )
        p.add_argument(
            "--dialplan",
            type=Path,
            default=None,
            metavar="FILE",
            help="a file of extensions.conf lines to add, such as the shipped "
            "examples/asterisk/extensions.conf (the PSTN phone calls into its "
            "callrouter-inbound)",
        )
        p.add_argument(
            "--tls",
            action="store_true",
            help="also serve HTTPS (AJAM) and AMI over TLS, with a self-signed "
            "certificate for 127.0.0.1 (printed: the file clients must trust)",
        )

    p = sub.add_parser("start", help="start a detached instance and print its URL")
    instance_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the URL")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="stop a detached instance, or one left behind (see status)")
    p.add_argument("name", nargs="?", default=DEFAULT_NAME)
    p.add_argument(
        "--all",
        action="store_true",
        help="stop every instance with a state file and every one left behind "
        "(never an in-process sandbox whose process still runs)",
    )
    p.add_argument("--remove", action="store_true", help="also delete the instance folder")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser(
        "status",
        help="list instances and the folders left behind (exit 3 if NAME is not running)",
    )
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run an instance in the foreground until Ctrl-C")
    instance_options(p)
    p.add_argument("--keep", action="store_true", help="keep the instance folder (logs) on exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "phones", help="real SIP phones on a running instance until Ctrl-C, printing calls"
    )
    p.add_argument("name", nargs="?", default=DEFAULT_NAME)
    p.add_argument(
        "--extensions",
        default=",".join(EXTENSIONS),
        help=f"comma-separated extensions to start (default {','.join(EXTENSIONS)})",
    )
    p.add_argument(
        "--mode",
        action="append",
        default=[],
        metavar="EXT=MODE",
        help=f"start EXT in MODE ({', '.join(MODES)}); repeat for several",
    )
    p.set_defaults(func=cmd_phones)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SandboxError as exc:
        print(f"router.sandbox: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
