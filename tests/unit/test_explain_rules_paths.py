"""``callrouter explain --rules`` takes its paths as ``callrouter run --rules``
does (issue 16): run's option is repeatable (docs/operations.md), but explain's
``--rules A --rules B`` kept only B, without a word, so explain showed a
decision run with the same arguments would not take."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import build_parser, main


def rules(folder: Path, name: str, exten: str, priority: int) -> Path:
    folder.mkdir()
    (folder / "rules.yaml").write_text(
        "version: 1\nrules:\n"
        f"  - name: {name}\n    priority: {priority}\n    on: call\n"
        f'    do:\n      - redirect: {{context: callrouter-dial, exten: "{exten}"}}\n',
        encoding="utf-8",
    )
    return folder


@pytest.mark.parametrize(
    "form",
    [["--rules", "first", "--rules", "second"], ["--rules", "first", "second"]],
    ids=["repeated", "one option, two paths"],
)
def test_every_path_given_is_read(
    form: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    rules(tmp_path / "first", "vip", "105", 100)
    rules(tmp_path / "second", "default", "103", 0)
    assert main(["explain", "--caller", "79161234567", "--did", "1", *form]) == 0
    out = capsys.readouterr().out
    assert "decision: redirect(context=callrouter-dial, exten=105) (rules: vip)" in out
    assert "default [" in out  # the second folder's rule is listed too


def test_explain_and_run_read_a_repeated_rules_option_alike() -> None:
    argv = ["--rules", "a", "--rules", "b"]
    run = build_parser().parse_args(["run", *argv])
    explain = build_parser().parse_args(["explain", "--caller", "1", "--did", "2", *argv])
    assert [Path(p).name for p in explain.rules] == [Path(p).name for p in run.rules] == ["a", "b"]
