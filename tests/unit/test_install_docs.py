"""Every ``pip install`` the docs, the examples and callrouter's own messages
show installs this repository's packages from its checkout, as README.md does.

No package index serves ``callrouter``, ``callrouter-onec`` or the example
plugin: operations.md's systemd steps said ``pip install callrouter`` and the
history pages (and the error for a missing psycopg) ``pip install
'callrouter[pgsql]'``; pip answered ``No matching distribution found for
callrouter``, or would have installed whatever someone published under that
name (issue 16).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
SOURCES = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted(p for p in (REPO / "examples").rglob("*") if p.suffix in (".md", ".toml", ".service")),
    *sorted((REPO / "router").rglob("*.py")),
    *sorted((REPO / "plugins").rglob("*.py")),
]
_PIP = re.compile(r"pip install ([^`\n#\"]+)")
_PROSE = {"in", "into", "from", "the", "next", "to", "(its"}


def distributions() -> set[str]:
    """The names of the packages this repository builds (normalized)."""
    names = set()
    for path in [REPO / "pyproject.toml", *REPO.glob("plugins/*/pyproject.toml")]:
        names.add(tomllib.loads(path.read_text("utf-8"))["project"]["name"])
    for path in REPO.glob("examples/*/pyproject.toml"):
        names.add(tomllib.loads(path.read_text("utf-8"))["project"]["name"])
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


def installs() -> list[tuple[str, str]]:
    """(where, requirement) for every argument of every ``pip install`` shown."""
    found = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _PIP.finditer(line):
                try:
                    words = shlex.split(match.group(1))
                except ValueError:  # a quote the line closes further on
                    words = match.group(1).split()
                for word in words:
                    if word in _PROSE:  # the sentence goes on: "... into callrouter's"
                        break
                    if not word.startswith("-"):
                        found.append((f"{path.relative_to(REPO)}:{number}", word.rstrip("):,")))
    return found


def test_the_installs_are_found() -> None:
    shown = {word for _, word in installs()}
    assert {"./", "./plugins/onec", "./[pgsql]"} <= shown


@pytest.mark.parametrize(("where", "requirement"), installs(), ids=lambda v: str(v))
def test_this_repositorys_packages_install_from_the_checkout(where: str, requirement: str) -> None:
    name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", requirement)[0]).lower()
    assert name not in distributions(), (
        f"{where}: pip install {requirement}: no package index serves {name}; "
        "install it from the checkout (./, ./plugins/onec, './[pgsql]')"
    )


def test_the_service_is_installed_as_the_quick_start_installs_it() -> None:
    quick = re.search(r"python3 -m venv /opt/callrouter && .*", (REPO / "README.md").read_text())
    assert quick is not None
    for page in ("operations.md", "ru/operations.md"):
        text = (REPO / "docs" / page).read_text(encoding="utf-8")
        assert f"# {quick.group(0)}\n" in text, page


def test_the_quick_start_puts_the_callrouter_it_installs_on_path() -> None:
    """hnew32's trial: README's step 2 installs into /opt/callrouter, and the
    steps after it run a bare `callrouter`, which a shell then does not find
    (`callrouter: command not found`) (issue 16)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    step = readme[readme.index("2. **Install**") : readme.index("3. **router.toml**")]
    assert "\n   export PATH=/opt/callrouter/bin:$PATH " in step
    later = readme[readme.index("3. **router.toml**") : readme.index("## Layout")]
    assert "callrouter check rules/" in later


def test_the_readme_names_every_target_make_help_lists() -> None:
    """README.md said `make help` lists "the other targets" and named seven of
    the ten (`pytest`, `sandbox-stop` and `soak` missing; issue 16): each
    target of the Makefile's help, but the two the README opens with, is in
    that list, and each one named there is in the help."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    helped = set(re.findall(r'^\t@echo "make ([a-z-]+) ', makefile, re.M))
    assert {"demo", "test", "soak", "sandbox-stop"} <= helped
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    listed = re.search(r"`make help` lists the other targets \(([^)]*)\)", readme)
    assert listed is not None
    named = set(re.findall(r"`([a-z-]+)`", listed.group(1)))
    assert named == helped - {"demo", "test"}


#: What README's layout calls each entry of examples/.
EXAMPLES = {
    "asterisk": "dialplan",
    "demo.py": "demo",
    "grafana": "Grafana dashboard",
    "onec": "1C BSL module",
    "plugin-vip-greeting": "example plugin",
    "router.toml": "router.toml",
    "rules": "rule examples",
    "systemd": "systemd unit",
    "zabbix": "Zabbix template",
}


def test_the_layout_names_every_example() -> None:
    """README's layout listed examples/ without its rule examples, Zabbix
    template and Grafana dashboard (issue 16): each entry of examples/ is
    named there, and each name stands for an entry that exists."""
    shipped = {p.name for p in (REPO / "examples").iterdir() if not p.name.startswith((".", "_"))}
    assert shipped == set(EXAMPLES)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("examples/    ") : readme.index("tests/      ")]
    named = " ".join(layout.removeprefix("examples/").split())
    for entry, words in EXAMPLES.items():
        assert words in named, f"README's layout does not name examples/{entry} ({words})"
