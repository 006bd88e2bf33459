"""docs/security.md stays true: the files it cites exist and the settings it names are real.

The page is what an auditor reads first; a renamed test or setting would make
it quietly wrong, so every reference is checked against the tree and the
config schemas.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router import config as config_module
from router.api import session, settings

ROOT = Path(__file__).resolve().parents[2]
CITED_FILE = r"`((?:tests|plugins|router|bench|examples)/[\w./-]+\.(?:py|conf|md))`"
PAGES = [ROOT / "docs" / "security.md", ROOT / "docs" / "ru" / "security.md"]


def _onec_keys() -> set[str]:
    plugin = pytest.importorskip("callrouter_onec.plugin")
    return set(plugin.KEYS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name + "/" + p.name)
def test_cited_files_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    cited = set(re.findall(CITED_FILE, text))
    assert cited, "the page cites no file: the pattern is wrong"
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert not missing, f"{page.name} cites files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name + "/" + p.name)
def test_named_settings_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    named = set(re.findall(r"\[(asterisk|router|plugins\.onec)\] (\w+)", text))
    assert named, "the page names no setting: the pattern is wrong"
    onec = _onec_keys()
    unknown = []
    for section, key in sorted(named):
        known = onec if section == "plugins.onec" else set(config_module._KEYS[section])
        if key not in known:
            unknown.append(f"[{section}] {key}")
    assert not unknown, f"{page.name} names settings the code does not read: {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name + "/" + p.name)
def test_the_page_names_the_live_pages_cookie_and_the_connection_cap_as_they_are(
    page: Path,
) -> None:
    """What the page warns of (the cookie goes to every port of its host name;
    the connection cap is one for all addresses) names the real cookie and cap."""
    text = page.read_text(encoding="utf-8")
    assert f"(`{session.COOKIE}`,\n`Path={session.COOKIE_PATH}`)" in text
    assert f"`[api] max_connections` ({settings.DEFAULT_MAX_CONNECTIONS})" in text


def test_default_location_pattern_matches_the_page() -> None:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert f"`{config_module.DEFAULT_LOCATION_PATTERN}`" in text


@pytest.mark.parametrize("command", ["run", "check", "ami", "events"])
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.parent.name + "/" + p.name)
def test_the_quoted_refusal_of_a_secret_on_the_command_line_is_the_real_one(
    page: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.cli import main

    text = " ".join(page.read_text(encoding="utf-8").split())
    [quoted] = re.findall(
        r"`(--secret: a secret on the command line[^`]+)`, exit code 2", text
    ) or re.findall(r"`(--secret: a secret on the command line[^`]+)`, код выхода 2", text)
    with pytest.raises(SystemExit) as exit_:
        main([command, "--secret", "x"])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2
    assert said == f"callrouter {command}: error: {quoted}"
