"""The real Asterisk in tests: the shipped dialplan, and whether a sandbox must start."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHIPPED_DIALPLAN", "sandbox_required", "shipped_dialplan"]

#: The dialplan snippet of ``examples/asterisk/extensions.conf``, shipped in the package.
SHIPPED_DIALPLAN = Path(__file__).parents[1] / "sandbox" / "dialplan" / "callrouter.conf"


def shipped_dialplan() -> str:
    """The text of the shipped dialplan snippet (contexts ``callrouter-*``)."""
    return SHIPPED_DIALPLAN.read_text(encoding="utf-8")


def sandbox_required() -> bool:
    """True when a sandbox that cannot start must fail the run instead of skipping it."""
    ci = os.environ.get("CI", "").strip().lower()
    required = os.environ.get("CALLROUTER_REQUIRE_SANDBOX", "").strip()
    return ci not in ("", "0", "false", "no") or required == "1"
