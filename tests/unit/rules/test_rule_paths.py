"""Rule paths in errors and logs: relative under the working directory, else
absolute; never a chain of ``../`` (issue 11, documentation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.plugin_registry import plugin_registry
from router.rules import load_rules

BAD = "version: 1\nrules:\n  - name: r\n    on: call\n    do:\n      - jump: {}\n"


@pytest.mark.parametrize("cwd", ["inside", "outside"])
def test_rule_file_paths_are_relative_inside_and_absolute_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd: str
) -> None:
    rules = tmp_path / "etc" / "rules"
    rules.mkdir(parents=True)
    (rules / "inbound.yaml").write_text(BAD)
    elsewhere = tmp_path / "var" / "lib" / "service"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "etc" if cwd == "inside" else elsewhere)
    (error,) = load_rules([rules], plugin_registry()).errors
    expected = "rules/inbound.yaml" if cwd == "inside" else str(rules / "inbound.yaml")
    assert error.file == expected
    assert str(error).startswith(f"{expected}:6: rule 'r': unknown action 'jump'")
    assert "../" not in str(error)
