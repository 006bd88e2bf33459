"""``callrouter check`` and ``callrouter explain`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main
from tests.unit.cli_code import exit_code

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "rules"


def test_check_shipped_rules(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["check"]) == 0
    assert "rules OK" in capsys.readouterr().out


def test_check_examples(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["check", "examples/rules"]) == 0
    assert main(["check", str(FIXTURES / "good")]) == 0


def test_check_reports_each_error_on_its_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURES / "bad")
    assert main(["check", "unknown_function.yaml", "several_errors.yaml"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "unknown_function.yaml:5: rule 'owner': unknown function 'workhour' "
        "(did you mean 'workhours'?)"
    )
    assert len(lines) == 5
    assert lines[-1].endswith("4 errors, 0 valid rules")


def test_check_counts_in_the_singular_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new user's first rule file read "1 rules OK".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.yaml").write_text(
        "version: 1\nrules:\n  - name: night\n    on: call\n    do:\n"
        "      - redirect: {context: queues, exten: night}\n"
    )
    assert main(["check", "one.yaml"]) == 0
    assert capsys.readouterr().out == "one.yaml: 1 rule OK\n"
    (tmp_path / "bad.yaml").write_text(
        "version: 1\nrules:\n  - name: typo\n    on: call\n    if: workhour()\n"
        "    do:\n      - redirect: {context: queues, exten: night}\n"
    )
    assert main(["check", "one.yaml", "bad.yaml"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "one.yaml bad.yaml: 1 error, 1 valid rule"


def test_explain_with_stubbed_lookup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    owner = {
        "found": True,
        "client": {"name": "Romashka"},
        "manager": {"name": "Ivan", "extension": "101"},
    }
    code = main(
        [
            "explain",
            "--caller",
            "8 916 123-45-67",
            "--did",
            "74951234567",
            "--at",
            "2026-11-23 12:15",
            "--lookup",
            f"onec.responsible={json.dumps(owner)}",
            "--rules",
            "rules/",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "call from 79161234567 to 74951234567 at 2026-11-23 12:15:00" in out
    assert "lookup state = extension_state('101') -> failed: not provided" in out
    assert (
        "decision: setvar(CRM_CLIENT=Romashka, CRM_MANAGER=Ivan), "
        "redirect(context=callrouter-dial, exten=101) (rules: owner)" in out
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_explain_says_which_variables_a_setvar_left_out_and_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """hnew31's trial: 1C's answer without the client's and the manager's
    name showed `setvar()` in explain, as if the rule set no variable at all."""
    monkeypatch.chdir(ROOT)
    owner = {"found": True, "manager": {"extension": "101"}}
    argv = ["explain", "--caller", "79161234567", "--did", "74951234567"]
    argv += ["--at", "2026-11-23 12:15", "--lookup", f"onec.responsible={json.dumps(owner)}"]
    assert main([*argv, "--rules", "rules/", *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    left_out = {
        "CRM_CLIENT": "template '{owner.client.name}' gave nothing",
        "CRM_MANAGER": "template '{owner.manager.name}' gave nothing",
    }
    if as_json:
        [rule] = [r for r in json.loads(out)["trace"]["rules"] if r["status"] == "matched"]
        assert rule["actions"][0]["left_out"] == left_out
        assert "left_out" not in rule["actions"][1]
        return
    shown = (
        "setvar() [left out: CRM_CLIENT: template '{owner.client.name}' gave nothing; "
        "CRM_MANAGER: template '{owner.manager.name}' gave nothing]"
    )
    assert f"      -> {shown}\n" in out
    assert f"decision: {shown}, redirect(context=callrouter-dial, exten=101) (rules: owner)" in out


def test_explain_text_escapes_what_1c_and_the_caller_wrote(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With --ask the client's name is 1C's text, and --name is the caller's:
    # the trace and the decision line printed an ESC sequence, a line break
    # and a bidi override raw on the administrator's terminal.
    monkeypatch.chdir(ROOT)
    hostile = "Romashka\x1b]0;owned\x07\r\ndecision: none\u202e"
    owner = {"found": True, "client": {"name": hostile}, "manager": {"extension": "101"}}
    code = main(
        [
            "explain",
            "--caller",
            "8 916 123-45-67",
            "--did",
            "74951234567",
            "--at",
            "2026-11-23 12:15",
            "--name",
            hostile,
            "--lookup",
            f"onec.responsible={json.dumps(owner)}",
            "--rules",
            "rules/",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert not any(ch in out for ch in "\x1b\x07\r\u202e")
    assert "setvar(CRM_CLIENT=Romashka\\x1b]0;owned\\x07\\x0d\\x0adecision: none\\u202e" in out
    assert [line for line in out.splitlines() if line.startswith("decision:")] == [
        line for line in out.splitlines() if line.startswith("decision: setvar(")
    ]


def test_explain_after_hours_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert (
        main(
            [
                "explain",
                "--caller",
                "79161234567",
                "--did",
                "74951234567",
                "--at",
                "2026-11-23 20:15",
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["decision"]["rules"] == ["closed"]
    assert data["trace"]["rules"][-1]["status"] == "skipped"


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--lookup", "onec.responsibl={}"], "did you mean 'onec.responsible'?"),
        (["--lookup", "onec.responsible={bad"], "invalid JSON"),
        (["--lookup", "onec.responsible"], "expected NAME=JSON"),
        (["--at", "tomorrow"], 'expected "YYYY-MM-DD HH:MM"'),
    ],
)
def test_explain_bad_arguments(
    argument: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each a wrong command line, its usage first (hleft33b: the error line
    alone, while `check --tz Mars/X` was exit 1)."""
    monkeypatch.chdir(ROOT)
    assert exit_code(["explain", "--caller", "1", "--did", "2", *argument]) == 2
    said = capsys.readouterr()
    assert "\nusage: callrouter explain " in f"\n{said.err}"
    error = said.err.splitlines()[-1]
    assert error.startswith("callrouter explain: error: ")
    assert message in error
    assert said.out == ""


# Problems the loader finds in different passes, in the opposite order of
# their lines: an expression (compiled last), a duplicate name (found after
# the schema), an unknown trigger (the schema), and a list file's bad number.
OUT_OF_ORDER = """version: 1
lists:
  vip: {file: vip.txt}
rules:
  - name: a
    on: call
    if: calller.internal
    do: [hangup]
  - name: a
    on: call
    do: [hangup]
  - name: b
    on: calls
    do: [hangup]
"""


def test_check_prints_errors_in_file_then_line_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "b.yaml").write_text(OUT_OF_ORDER, encoding="utf-8")
    (tmp_path / "vip.txt").write_text("+74951234567\nnot a number\n", encoding="utf-8")
    (tmp_path / "a.yaml").write_text(OUT_OF_ORDER.replace("name: a", "name: x"), "utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "b.yaml", "a.yaml"]) == 1
    lines = capsys.readouterr().out.splitlines()[:-1]
    places = [line.split(": ", 1)[0] for line in lines]
    # Files as given (not by name), each by line; vip.txt where its list is.
    assert places == [
        "vip.txt:2",
        "b.yaml:7",
        "b.yaml:9",
        "b.yaml:13",
        "a.yaml:3",
        "a.yaml:7",
        "a.yaml:9",
        "a.yaml:13",
    ], lines
