"""One rule for every did-you-mean: router.toml, rule files and AMI names agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.ami.catalog import load_catalog
from router.config import load_config
from router.errors import AMIValidationError, ConfigError
from router.rules.suggest import did_you_mean
from router.suggest import closest


@pytest.mark.parametrize(
    ("word", "options", "expected"),
    [
        ("contxt", ["context", "exten", "priority"], "context"),
        ("URL", ["url", "username"], "url"),  # too short for a ratio: same word, other case
        ("zzz", ["context", "exten"], None),
        ("", ["context"], None),
    ],
)
def test_closest(word: str, options: list[str], expected: str | None) -> None:
    assert closest(word, options) == expected
    assert closest(word, iter(options)) == expected  # any iterable, read once


def test_a_typo_gets_the_same_hint_everywhere(tmp_path: Path) -> None:
    catalog = load_catalog()
    with pytest.raises(AMIValidationError, match=r"did you mean 'Redirect'\?"):
        catalog.action("Redirct")
    assert did_you_mean("Redirct", list(catalog.actions)) == " (did you mean 'Redirect'?)"
    toml = tmp_path / "router.toml"
    toml.write_text('[asterisk]\nURL = "http://pbx/asterisk"\nusername = "r"\nsecret = "s"\n')
    with pytest.raises(ConfigError, match=r"\[asterisk\] URL: unknown key; did you mean 'url'\?"):
        load_config(toml, environ={})
