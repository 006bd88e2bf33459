"""docs/asterisk.md (and its Russian page) and the shipped dialplan name the
same contexts and variables.

examples/asterisk/extensions.conf is what the administrator pastes; the page
explains it line by line. A context or a ``CALLROUTER_*`` variable the snippet
has and the page does not explain is a line nobody knows the use of; one the
page names and nothing has (the snippet, callrouter's code, the shipped rule
examples) is a setting that does nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
SNIPPET = REPO / "examples" / "asterisk" / "extensions.conf"
PAGES = [REPO / "docs" / "asterisk.md", REPO / "docs" / "ru" / "asterisk.md"]
#: Where else a ``CALLROUTER_*`` name may come from: callrouter sets or reads it
#: (``CALLROUTER_DECIDED``), or a shipped rule example sets it (``CALLROUTER_MODE``).
OTHER_SOURCES = [
    *sorted((REPO / "router").rglob("*.py")),
    *sorted((REPO / "examples" / "rules").glob("*.yaml")),
]
#: A variable, or a prefix the dialplan completes (``CALLROUTER_FWD_${EXTEN}``).
_VARIABLE = re.compile(r"\bCALLROUTER_[A-Z0-9_]+")
_CONTEXT = re.compile(r"\[(callrouter-[a-z-]+)\]|(?:Goto\(|context: )(callrouter-[a-z-]+)")


def snippet_contexts() -> set[str]:
    return set(re.findall(r"^\[(callrouter-[a-z-]+)\]", SNIPPET.read_text(encoding="utf-8"), re.M))


def snippet_variables() -> set[str]:
    text = "\n".join(
        line.split(";", 1)[0] for line in SNIPPET.read_text(encoding="utf-8").splitlines()
    )
    return set(_VARIABLE.findall(text))


def test_the_snippet_is_read() -> None:
    assert snippet_contexts() == {
        "callrouter-inbound",
        "callrouter-default",
        "callrouter-dial",
        "callrouter-record",
    }
    assert {"CALLROUTER_WAIT", "CALLROUTER_DEFAULT", "CALLROUTER_DEADLINE"} <= snippet_variables()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_context_and_variable_of_the_snippet_is_explained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = sorted(
        name
        for name in snippet_contexts() | snippet_variables()
        if not re.search(
            rf"(?<![\w-]){re.escape(name)}" + ("" if name.endswith("_") else r"(?![\w-])"), text
        )
    )
    assert not missing, (
        f"{page.relative_to(REPO)} does not name {missing} ({SNIPPET.name} has them)"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_context_and_variable_the_page_names_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    contexts = {a or b for a, b in _CONTEXT.findall(text)}
    unknown = sorted(contexts - snippet_contexts())
    assert not unknown, f"{page.relative_to(REPO)} names contexts {SNIPPET.name} lacks: {unknown}"
    elsewhere = "\n".join(path.read_text(encoding="utf-8") for path in OTHER_SOURCES)
    known = snippet_variables() | set(_VARIABLE.findall(elsewhere))
    # A prefix the snippet completes (``CALLROUTER_FWD_`` + the extension).
    prefixes = tuple(name for name in known if name.endswith("_"))
    unknown = sorted(
        name
        for name in set(_VARIABLE.findall(text))
        if name not in known and not name.startswith(prefixes)
    )
    assert not unknown, (
        f"{page.relative_to(REPO)} names {unknown}: neither {SNIPPET.name}, callrouter "
        "nor the shipped rules have them"
    )
