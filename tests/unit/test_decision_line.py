"""The decision line an operator reads (issue 11, documentation): lookups with
their timings in the text format too, and a shadow decision shows the actions
it would have taken instead of ``actions: []``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from router.ami.protocol import Action, ActionResult
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.hookspecs import hookimpl
from router.logsafe import JsonFormatter
from router.plugins import Plugins
from router.rules.registry import Registry
from tests.unit.test_engine_unit import FakeClient, request

RULES = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: crm(caller.number)
    when: owner
    do:
      - setvar: {CRM_MANAGER: "{owner}"}
      - redirect: {context: callrouter-dial, exten: "{owner}"}
"""


class Crm:
    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def crm(number: str) -> str:
            return "101"

        registry.add_lookup("crm", crm)

        def vip(number: str) -> bool:
            raise RuntimeError("the VIP list is not loaded")

        registry.add_function("vip", vip)


async def engine_for(
    tmp_path: Path, log_format: str, *, shadow: bool, rules: str = RULES
) -> Engine:
    (tmp_path / "rules.yaml").write_text(rules)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\nlog_format = "{log_format}"\n'
    )
    client = FakeClient()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=client,  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[Crm()]),
        options=EngineOptions(watch_interval=0),
        shadow=shadow,
    )
    client.engine = engine
    await engine.setup()
    return engine


async def decide(engine: Engine, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.INFO, logger="router.decision"):
        await engine.handle_event(request("Local/1@in-0;2"))
        await engine.wait_idle()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "router.decision"]
    return line


async def test_text_line_has_lookup_timings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = await decide(await engine_for(tmp_path, "text", shadow=False), caplog)
    assert " -> executed [setvar:ok, redirect:confirmed] in " in line
    lookups = line.partition("; lookups ")[2]
    assert re.fullmatch(r"owner \d+\.\d ms", lookups), line


async def test_shadow_line_shows_the_planned_actions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = await decide(await engine_for(tmp_path, "text", shadow=True), caplog)
    assert " -> shadow [setvar:planned, redirect:planned] in - ; " not in line
    assert " -> shadow [setvar:planned, redirect:planned] in -; lookups owner " in line


async def test_shadow_json_shows_the_planned_actions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_for(tmp_path, "json", shadow=True)
    data = json.loads(await decide(engine, caplog))
    assert data["outcome"] == "shadow"
    assert data["actions"] == [
        {"kind": "setvar", "status": "planned", "detail": "CRM_MANAGER=101", "ms": 0.0},
        {
            "kind": "redirect",
            "status": "planned",
            "detail": "context=callrouter-dial, exten=101",
            "ms": 0.0,
        },
    ]
    assert data["total_ms"] is None
    assert [lookup["name"] for lookup in data["lookups"]] == ["owner"]


#: A rule that fails at run time, before the one that routes: skipped, as
#: docs/rules.md says, "with `error` in the decision log".
FAILING = RULES.replace(
    "rules:\n",
    "rules:\n  - name: vip\n    priority: 10\n    on: call\n"
    "    if: vip(caller.number)\n    do: [{hangup: {}}]\n",
)


async def test_a_rule_that_failed_is_in_the_text_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_for(tmp_path, "text", shadow=False, rules=FAILING)
    line = await decide(engine, caplog)
    assert " -> executed [setvar:ok, redirect:confirmed] in " in line
    assert line.endswith(
        "; error vip (if): vip() raised RuntimeError: the VIP list is not loaded"
    ), line


async def test_a_rule_that_failed_is_in_the_json_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_for(tmp_path, "json", shadow=False, rules=FAILING)
    data = json.loads(await decide(engine, caplog))
    assert data["rule"] == "owner"
    assert data["errors"] == [
        {
            "rule": "vip",
            "stage": "if",
            "error": "vip() raised RuntimeError: the VIP list is not loaded",
        }
    ]


#: A client name as 1C may hold it (a line typed into a multi-line field): no
#: AMI header can carry it, so the Setvar is refused before it is sent.
NAMED = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: card(caller.number)
    when: owner
    do:
      - setvar: {CRM_CLIENT: "{owner.name}", CRM_MANAGER: "{owner.manager}"}
      - redirect: {context: callrouter-dial, exten: "{owner.extension}"}
"""


class Card:
    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def card(number: str) -> dict[str, str]:
            return {"name": "ООО «Ёж»\nдоставка", "manager": "Петров", "extension": "101"}

        registry.add_lookup("card", card)


class CheckingClient(FakeClient):
    """Refuses what the real client refuses before sending (router.ami.protocol)."""

    async def send(
        self, name: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> ActionResult:
        Action.build(name, params).pairs()
        return await super().send(name, params, **kw)


async def test_a_failed_action_says_why_in_the_text_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The text line said only ``setvar:failed``: which variable, and why, was in
    the JSON line alone (issue 16, the 1C developer's trial)."""
    (tmp_path / "rules.yaml").write_text(NAMED)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
    )
    client = CheckingClient()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=client,  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[Card()]),
        options=EngineOptions(watch_interval=0),
        shadow=False,
    )
    client.engine = engine
    await engine.setup()
    line = await decide(engine, caplog)
    assert " -> failed [setvar:failed, redirect:confirmed] in " in line, line
    assert (
        "; setvar failed: CRM_CLIENT: Setvar: parameter 'Value' contains a line break, "
        "which would inject headers"
    ) in line, line
    assert "redirect confirmed" not in line  # only what went wrong is spelled out


@pytest.mark.parametrize("page", ["docs/operations.md", "docs/ru/operations.md"])
def test_the_documented_json_line_has_every_key_the_line_has(page: str) -> None:
    """hnew31's trial: the JSON decision line of a real call ended with
    `"rejected": [], "errors": []`, which the example in Logs left out, though
    its table documents both."""
    from router.executor import ActionOutcome
    from router.routing import RouteRecord

    text = (Path(__file__).parents[2] / page).read_text(encoding="utf-8")
    block = re.search(r'```json\n(\{"event": "decision".*?)```', text, re.S)
    assert block is not None, f"{page} shows no JSON decision line"
    shown = json.loads(block.group(1))
    real = RouteRecord(
        "PJSIP/trunk-00000012",
        "1.1",
        "1.0",
        "79161234567",
        "74951234567",
        ("owner",),
        "executed",
        [ActionOutcome("redirect", "confirmed", "callrouter-dial,101", 7.5)],
        [
            {
                "name": "entry",
                "call": "directory('79161234567')",
                "value": None,
                "ms": 0.04,
                "error": None,
                "reused": False,
            }
        ],
        0.3,
        31.4,
        3697.7,
    ).to_dict()
    # The line as `--log-format json` writes it: the record, then when.
    logged = logging.LogRecord(
        "router.decision", logging.INFO, __file__, 1, json.dumps(real), None, None
    )
    line = json.loads(JsonFormatter().format(logged))
    assert list(line) == [*real, "ts"]
    assert line["ts"] == round(logged.created, 3)
    assert list(shown) == list(line)
    assert list(shown["actions"][0]) == list(real["actions"][0])
    assert list(shown["lookups"][0]) == list(real["lookups"][0])


#: The docs' owner rule (rules.md) with 1C's answer lacking the client.
EMPTY = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: card(caller.number)
    when: owner
    do:
      - setvar: {CRM_CLIENT: "{owner.client.name}"}
      - redirect: {context: callrouter-dial, exten: "{owner.manager.extension}"}
"""


class NoClient:
    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def card(number: str) -> dict[str, Any]:
            return {"found": True, "manager": {"extension": "101"}}

        registry.add_lookup("card", card)


async def empty_engine(tmp_path: Path, log_format: str, *, shadow: bool = False) -> Engine:
    (tmp_path / "rules.yaml").write_text(EMPTY)
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{tmp_path / "rules.yaml"}"]\nlog_format = "{log_format}"\n'
    )
    client = FakeClient()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=client,  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[NoClient()]),
        options=EngineOptions(watch_interval=0),
        shadow=shadow,
    )
    client.engine = engine
    await engine.setup()
    return engine


LEFT_OUT = {"CRM_CLIENT": "template '{owner.client.name}' gave nothing"}


async def test_a_setvar_whose_template_gave_nothing_says_so_in_the_text_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """hnew31's trial: every variable of the setvar left out (1C's answer has
    no client) ran as `setvar:ok` having set nothing, and said nothing of it."""
    engine = await empty_engine(tmp_path, "text")
    line = await decide(engine, caplog)
    assert " -> executed [setvar:ok, redirect:confirmed] in " in line
    assert line.endswith(
        "; setvar left out CRM_CLIENT: template '{owner.client.name}' gave nothing"
    ), line
    assert not [s for s in engine._client.sent if s[0] == "Setvar"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("shadow", [False, True])
async def test_a_setvar_whose_template_gave_nothing_says_so_in_the_json_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shadow: bool
) -> None:
    engine = await empty_engine(tmp_path, "json", shadow=shadow)
    data = json.loads(await decide(engine, caplog))
    [setvar, redirect] = data["actions"]
    assert setvar["status"] == ("planned" if shadow else "ok")
    assert setvar["left_out"] == LEFT_OUT
    assert "left_out" not in redirect


@pytest.mark.parametrize("page", ["rules.md", "ru/rules.md", "operations.md", "ru/operations.md"])
def test_the_docs_show_what_was_left_out_as_explain_and_the_log_say(page: str) -> None:
    """rules.md's explain line and both pages' text-line suffix are the code's."""
    from router.rules.decision import Action as Rendered

    text = (Path(__file__).resolve().parents[2] / "docs" / page).read_text(encoding="utf-8")
    flat = " ".join(text.split())
    suffix = "; setvar left out CRM_CLIENT: template '{owner.client.name}' gave nothing"
    assert f"`{suffix}`" in flat
    if "rules.md" in page:
        action = Rendered.make("setvar", {}, "owner", LEFT_OUT)
        assert f"```text\n      -> {action}\n```" in text


async def test_a_long_error_is_cut_as_callrouter_cuts_its_texts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the decision line cut a rule's error (and an action's detail)
    to 197 characters and "...", its own cut beside router.cut's "…": now
    router.cut's, at the same 200 characters, in the text and the JSON line."""
    from router import cut

    said = "the VIP list is not loaded: " + "x" * 400

    def vip(number: str) -> bool:
        raise RuntimeError(said)

    original = Crm.callrouter_register

    def register(self: Crm, registry: Registry) -> None:
        original(self, registry)
        registry.functions.pop("vip", None)
        registry.add_function("vip", vip)

    monkeypatch.setattr(Crm, "callrouter_register", hookimpl(register))
    error = cut(f"vip() raised RuntimeError: {said}", 200)
    assert error.endswith("x…")
    line = await decide(await engine_for(tmp_path, "text", shadow=False, rules=FAILING), caplog)
    assert line.endswith(f"; error vip (if): {error}"), line
    caplog.clear()
    engine = await engine_for(tmp_path, "json", shadow=False, rules=FAILING)
    data = json.loads(await decide(engine, caplog))
    assert data["errors"] == [{"rule": "vip", "stage": "if", "error": error}]


STALE_RULES = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: crm(caller.number)
    when: owner.extension
    do:
      - redirect: {context: callrouter-dial, exten: "{owner.extension}"}
"""


@pytest.mark.parametrize(("stale", "shown"), [(412, " stale 412 s"), (None, ""), (True, "")])
async def test_a_stale_answer_is_marked_in_the_text_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    stale: object,
    shown: str,
) -> None:
    """Issue 16: a plugin's cache served an expired answer while it asked again
    (the 1C plugin counts it in ``callrouter_onec_stale_answers_total``): the
    answer's ``stale`` (its age in seconds) shows in the line as ``stale 412 s``."""

    def register(self: Crm, registry: Registry) -> None:
        async def crm(number: str) -> dict[str, object]:
            return {"extension": "101", "stale": stale}

        registry.add_lookup("crm", crm)

    monkeypatch.setattr(Crm, "callrouter_register", hookimpl(register))
    line = await decide(await engine_for(tmp_path, "text", shadow=False, rules=STALE_RULES), caplog)
    lookups = line.partition("; lookups ")[2]
    assert re.fullmatch(rf"owner \d+\.\d ms{shown}", lookups), line


async def test_a_lookup_that_gives_up_at_the_deadline_is_late_in_its_own_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a lookup that honours the call's deadline itself raises
    ``LookupCutOff``: the call counts as late, as when the engine cuts a lookup
    off, the line keeps the lookup's words, and no WARNING blames the plugin."""
    from router import LookupCutOff

    def register(self: Crm, registry: Registry) -> None:
        async def crm(number: str) -> str:
            raise LookupCutOff("no answer from the CRM within the call's remaining 3.70 s")

        registry.add_lookup("crm", crm)

    monkeypatch.setattr(Crm, "callrouter_register", hookimpl(register))
    rules = RULES + (
        "  - name: fallback\n    on: call\n    do:\n"
        "      - redirect: {context: callrouter-dial, exten: '100'}\n"
    )
    with caplog.at_level(logging.WARNING):
        engine = await engine_for(tmp_path, "text", shadow=False, rules=rules)
        line = await decide(engine, caplog)
    # The fallback matched, but after the lookup said the deadline came: late, not sent.
    assert " -> late [redirect:planned] in " in line, line
    assert "failed: no answer from the CRM within the call's remaining 3.70 s" in line, line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
