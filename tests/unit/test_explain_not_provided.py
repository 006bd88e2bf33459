"""``callrouter explain`` says how to answer a lookup it reports "not provided"
(issue 16): the trace's ``failed: not provided`` alone read as a broken
plugin, and did not point to ``--lookup`` or ``--ask``."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from router import Registry, hookimpl
from router.cli import main
from tests.unit.test_plugin_loading import FakeEntryPoint

RULES = """\
version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: crm.owner(caller.number)
      level: crm.level(caller.number)
    when: owner is not None
    do:
      - redirect: {context: queues, exten: owner}
  - name: default
    on: call
    do:
      - redirect: {context: queues, exten: all}
"""


class Crm:
    """``crm.owner`` runs; ``crm.level`` is declared only (no implementation here)."""

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def owner(number: str) -> str:
            return "101"

        def level(number: str) -> None: ...

        registry.add_lookup("crm.owner", owner)
        registry.add_lookup("crm.level", signature=inspect.signature(level))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points", lambda group: [FakeEntryPoint("crm", Crm())]
    )
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n',
        encoding="utf-8",
    )
    return path


def explain(config: Path, *extra: str) -> int:
    argv = ["explain", "--caller", "79161234567", "--did", "74951234567"]
    return main([*argv, "--at", "2026-11-23 12:15", "--config", str(config), *extra])


def test_not_provided_points_to_lookup_and_ask(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert explain(config) == 0
    out = capsys.readouterr().out.splitlines()
    assert "      lookup owner = crm.owner('79161234567') -> failed: not provided" in out[2]
    assert (
        "  not provided: crm.owner, crm.level (None): give an answer with "
        "--lookup crm.owner=JSON, or add --ask to ask the plugins as callrouter run would"
    ) in out


def test_given_answers_need_no_hint(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    given = ["--lookup", 'crm.owner="101"', "--lookup", "crm.level=1"]
    assert explain(config, *given) == 0
    out = capsys.readouterr().out
    assert "not provided" not in out
    assert "decision: redirect(context=queues, exten=owner) (rules: owner)" in out


def test_with_ask_a_lookup_no_plugin_implements_is_said_so(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert explain(config, "--ask") == 0
    out = capsys.readouterr().out.splitlines()
    assert any("crm.owner('79161234567') -> '101' (asked, " in line for line in out)
    assert (
        "  not provided: crm.level (None): no plugin loaded here implements it, so --ask "
        "cannot ask; give an answer with --lookup crm.level=JSON (callrouter plugins "
        "--config lists what each plugin registers)"
    ) in out


def test_json_stays_one_document(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert explain(config, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["trace"]["rules"][0]["lookups"][0]["source"] == "not provided"
