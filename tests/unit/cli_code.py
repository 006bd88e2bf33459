"""The exit code of ``callrouter ARGV``, whether argparse (a value its type
refused: ``SystemExit``) or the command (its return value) ended it."""

from __future__ import annotations

from collections.abc import Sequence

from router.cli import main


def exit_code(argv: Sequence[str]) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
