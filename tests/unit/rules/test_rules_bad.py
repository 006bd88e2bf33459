"""Every bad rule file is reported with its exact message, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.rules import Registry, load_rules

BAD = Path(__file__).resolve().parents[2] / "fixtures" / "rules" / "bad"
CASES = sorted(p.stem for p in BAD.glob("*.yaml"))


def test_there_are_enough_bad_files() -> None:
    assert len(CASES) >= 25
    assert all((BAD / f"{name}.expected").is_file() for name in CASES)


@pytest.mark.parametrize("name", CASES)
def test_bad_file_reports_expected_errors(
    name: str, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(BAD)
    expected = Path(f"{name}.expected").read_text(encoding="utf-8").splitlines()
    ruleset = load_rules([f"{name}.yaml"], registry)
    assert [error.render() for error in ruleset.errors] == expected
    assert expected, "a bad file must produce at least one error"
