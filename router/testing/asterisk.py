"""The real Asterisk in tests: the shipped dialplan, and whether a sandbox must start."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "SHIPPED_DIALPLAN",
    "dialplan_globals",
    "dialplan_steps",
    "sandbox_required",
    "shipped_dialplan",
]

#: The dialplan snippet of ``examples/asterisk/extensions.conf``, shipped in the package.
SHIPPED_DIALPLAN = Path(__file__).parents[1] / "sandbox" / "dialplan" / "callrouter.conf"


def shipped_dialplan() -> str:
    """The text of the shipped dialplan snippet (contexts ``callrouter-*``)."""
    return SHIPPED_DIALPLAN.read_text(encoding="utf-8")


def dialplan_steps(text: str, context: str) -> list[dict[str, str]]:
    """``context``'s steps in an extensions.conf ``text`` as ``ShowDialPlan``
    lists them (``ListDialplan`` fields), numbered as pbx_config numbers
    ``exten =>`` and ``same => n`` lines. Enough for the snippet's plain
    syntax (no ``#include``, templates or ``n(label)`` jumps)."""
    items: list[dict[str, str]] = []
    section, exten, priority = "", "", 0
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            section = line[1 : line.index("]")]
            continue
        match = re.match(r"(exten|same)\s*=>\s*(.*)", line)
        if section != context or not match:
            continue
        if match[1] == "exten":
            exten, first, step = match[2].split(",", 2)
            priority = int(first)
        else:
            label, step = match[2].split(",", 1)
            priority += 1
        app, _, data = step.partition("(")
        item = {
            "Event": "ListDialplan",
            "Context": context,
            "Extension": exten,
            "Priority": str(priority),
            "Application": app,
            "AppData": data[:-1] if data.endswith(")") else data,
            "Registrar": "pbx_config",
        }
        if match[1] == "same" and "(" in label:
            item["ExtensionLabel"] = label[label.index("(") + 1 : label.rindex(")")]
        items.append(item)
    return items


def dialplan_globals(text: str) -> dict[str, str]:
    """The ``[globals]`` of an extensions.conf ``text`` as Asterisk sets them
    when it loads it (``NAME=value``, a ``;`` comment and spaces around cut)."""
    found: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            section = line[1 : line.index("]")]
            continue
        name, equals, value = line.partition("=")
        if section == "globals" and equals and name.strip():
            found[name.strip()] = value.strip().removeprefix(">").strip()
    return found


def sandbox_required() -> bool:
    """True when a sandbox that cannot start must fail the run instead of skipping it."""
    ci = os.environ.get("CI", "").strip().lower()
    required = os.environ.get("CALLROUTER_REQUIRE_SANDBOX", "").strip()
    return ci not in ("", "0", "false", "no") or required == "1"
