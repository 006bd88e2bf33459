"""Every environment variable the code reads is named in the docs.

A variable read and not documented is a setting nobody can find (systemd's
``WATCHDOG_USEC`` was one: operations.md named ``WatchdogSec`` only); one
documented and no longer read is a setting that does nothing. The names are
collected from the source (``os.environ.get("NAME")``, ``environ["NAME"]``,
``os.getenv("NAME")``, or a module constant holding the name); the ones
router.toml names (``secret_env``, ``password_env``) are the administrator's.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
CODE = [
    *sorted((REPO / "router").rglob("*.py")),
    *sorted((REPO / "plugins" / "onec" / "callrouter_onec").rglob("*.py")),
]
DOCS = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "plugins" / "onec" / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted((REPO / "examples").rglob("*.md")),
]


def _reads_environ(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return "environ" in text or text == "env"


def read_by_the_code() -> dict[str, str]:
    """Variable name -> the first ``file:line`` that reads it."""
    found: dict[str, str] = {}
    for path in CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            key: ast.expr | None = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and _reads_environ(node.func.value)
                and node.args
            ) or (
                isinstance(node, ast.Call) and ast.unparse(node.func) == "os.getenv" and node.args
            ):
                key = node.args[0]
            elif isinstance(node, ast.Subscript) and _reads_environ(node.value):
                key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                name = key.value
            elif isinstance(key, ast.Name) and key.id in constants:
                name = constants[key.id]
            else:
                continue  # a name router.toml gives: the administrator's
            found.setdefault(name, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


READ = read_by_the_code()


def documented_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def test_the_variables_are_found() -> None:
    assert {"CALLROUTER_SECRET", "STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC"} <= set(READ)
    assert "ONEC_DOUBLE_PASSWORD" in READ


@pytest.mark.parametrize("name", sorted(READ))
def test_every_variable_the_code_reads_is_documented(name: str) -> None:
    pattern = rf"(?<![\w$]){name}(?!\w)|\${name}\b"
    named = re.search(pattern, documented_text()) is not None
    assert named, (
        f"{READ[name]} reads the environment variable {name}, which no page names "
        "(README.md, CONTRIBUTING.md, docs/, examples/, plugins/onec/README.md)"
    )


def test_every_callrouter_variable_the_docs_name_is_read() -> None:
    """A ``CALLROUTER_*`` name in a sentence about the environment that the code
    does not read: a setting that does nothing. The dialplan's ``CALLROUTER_*``
    channel variables and globals are Asterisk's (``CALLROUTER_WAIT = 4`` in
    ``[globals]``), so only names the docs give as environment variables
    (``export``, systemd's ``Environment=``) are compared."""
    text = documented_text()
    named = set(re.findall(r"(?:export |Environment=\"?)(CALLROUTER_[A-Z_]+)=", text))
    assert "CALLROUTER_SECRET" in named
    unread = sorted(named - set(READ))
    assert not unread, f"the docs set {unread} in the environment, and nothing reads them"
