"""``callrouter run``: the long-running router service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from router.commands._connect import add_connection_arguments, load_from_args
from router.commands._values import a_path_of
from router.config import Config, exposed_secret_files
from router.engine import Engine, EngineOptions
from router.errors import AMIConnectionError
from router.logsafe import JsonFormatter, TextFormatter, install_redaction

__all__ = ["JsonFormatter", "TextFormatter", "register", "run", "setup_logging"]

log = logging.getLogger("router.run")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="route calls: consume AMI events, evaluate rules, act through AMI",
        description="Run the router. SIGTERM stops it (in-flight decisions finish), "
        "SIGHUP reloads the rules (a broken rule set keeps the previous one); "
        "router.toml is read at start only.",
    )
    parser.add_argument(
        "--rules",
        action="append",
        type=a_path_of,
        metavar="PATH",
        help="rule file or folder (repeatable; default from router.toml)",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        default=None,
        help="evaluate and trace every call, but never act",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="the log's lines (router.toml: log_format)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,  # `--log-level debug` as well
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="the least level logged (default: INFO)",
    )
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def setup_logging(fmt: str, level: str) -> None:
    """Log to stderr; outside values escaped (terminal injection), secrets masked."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    install_redaction()
    lean_log_records()


def lean_log_records() -> None:
    """Records without the fields neither format prints: no thread, process or
    caller lookup per record (the logging HOWTO's "Optimization"). Every
    routing decision is a log line: 28 -> 21 us a line measured (issue 16,
    docs/performance.md)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's own switch


def warn_at_start(config: Config) -> None:
    """Say so at start when a file holding a secret can be read by other users, and
    when ``[recordings] transcode`` has no encoder to run."""
    for warning in exposed_secret_files(config):
        log.warning("%s", warning)
    if config.recordings is not None:
        from router.recordings.transcode import missing_encoder

        missing = missing_encoder(config.recordings.transcode)
        if missing is not None:
            log.warning("%s: %s", config.where("recordings", "transcode"), missing)


def run(args: argparse.Namespace) -> int:
    overrides_args = load_from_args(args)
    config = overrides_args
    if args.rules or args.log_format or args.shadow is not None:
        from dataclasses import replace

        router = replace(
            config.router,
            rules=tuple(args.rules) if args.rules else config.router.rules,
            log_format=args.log_format or config.router.log_format,
            shadow=config.router.shadow if args.shadow is None else args.shadow,
        )
        config = replace(config, router=router)
    setup_logging(config.router.log_format, args.log_level)
    warn_at_start(config)
    # The service owns its process: the startup's objects may be frozen (gc).
    options = EngineOptions(
        freeze_gc=True,
        wait_for_asterisk=True,
        lock_state_dir=True,
        # A --rules path is the person's own; router.toml's is named, as check names it.
        rules_named_by="" if args.rules else config.rules_named_by(),
    )
    return asyncio.run(_serve(Engine(config, options=options)))


async def _serve(engine: Engine) -> int:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, engine.request_stop)
        loop.add_signal_handler(signal.SIGINT, engine.request_stop)
        loop.add_signal_handler(signal.SIGHUP, engine.request_reload)
    try:
        await engine.run()
    except AMIConnectionError:
        if engine.stop_requested:  # stopped while it waited for Asterisk at start
            return 0
        raise
    return 0
