"""A rule reading a field of an answer its lookup declares unreadable is said
when the rules load, naming the plugin and the lookup (issue 16).

A lookup annotated ``-> set[str]`` or ``-> Customer`` (a dataclass) where a
rule reads ``owner.tier`` fails at every call (``cannot read .tier of a
set``); the annotation says so at load. A warning, not an error: the
annotation may be wrong where the answer is right, and the rule fails open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import pytest

from router.cli import main
from router.plugin_registry import plugin_registry
from router.rules import load_rules
from router.rules.answers import declared_answer

RULES = """version: 1
rules:
  - name: vip
    on: call
    lookup:
      owner: shop.owner(caller.number)
    when: owner{read} == "gold"
    do:
      - redirect: {{context: queues, exten: a}}
"""


@dataclass
class Customer:
    tier: str


class Row(NamedTuple):
    tier: str


class Typed(TypedDict):
    tier: str


async def as_set(number: str) -> set[str]:
    return {"gold"}


async def as_customer(number: str) -> Customer | None:
    return None


def as_awaitable(number: str) -> Awaitable[Customer]:
    raise NotImplementedError


def as_row(number: str) -> Row:
    return Row("gold")


def as_dict(number: str) -> dict[str, Any] | None:
    return None


def as_typed(number: str) -> Typed:
    return {"tier": "gold"}


def as_any(number: str) -> Any:
    return None


def as_iterable(number: str) -> Iterable[str]:
    return ()


def as_list(number: str) -> list[str]:
    return []


def unannotated(number):  # type: ignore[no-untyped-def]
    return None


def _load(tmp_path: Path, func: Any, read: str = ".tier") -> tuple[str, ...]:
    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_lookup("shop.owner", func)
    registry.registering = None
    path = tmp_path / "shop.yaml"
    path.write_text(RULES.format(read=read), encoding="utf-8")
    ruleset = load_rules([path], registry)
    assert ruleset.errors == ()
    assert [rule.name for rule in ruleset.rules] == ["vip"]  # kept: a warning only
    return ruleset.warnings


@pytest.mark.parametrize(
    ("func", "kind", "read"),
    [
        (as_set, "set", ".tier"),
        (as_customer, "Customer", ".tier"),
        (as_awaitable, "Customer", ".tier"),
        (as_row, "Row", ".tier"),
        (as_list, "list", ".tier"),
        (as_set, "set", '["tier"]'),
    ],
)
def test_a_declared_unreadable_answer_is_said_at_load(
    tmp_path: Path, func: Any, kind: str, read: str
) -> None:
    [warning] = _load(tmp_path, func, read)
    shown, what = (".tier", "read .tier") if read == ".tier" else ("[...]", "index")
    assert warning == (
        f"{tmp_path / 'shop.yaml'}:3: rule 'vip': reads owner{shown}, but lookup shop.owner of "
        f"plugin 'shop' is declared to answer a {kind}, of which a rule cannot {what}: the "
        "rule would never be taken (docs/plugins.md, Isolation)"
    )


@pytest.mark.parametrize(
    "func", [as_dict, as_typed, as_any, as_iterable, unannotated, lambda number: None]
)
def test_a_readable_or_unknown_answer_says_nothing(tmp_path: Path, func: Any) -> None:
    assert _load(tmp_path, func) == ()


def test_a_list_may_be_indexed(tmp_path: Path) -> None:
    assert _load(tmp_path, as_list, "[0]") == ()


def test_declared_answer_unwraps_and_gives_up_on_what_it_cannot_name() -> None:
    assert declared_answer(as_customer) == (Customer,)
    assert declared_answer(as_awaitable) == (Customer,)
    assert declared_answer(as_typed) == (Typed,)
    assert issubclass(Typed, Mapping)  # a TypedDict is read as the dict it is
    assert declared_answer(as_any) is None
    assert declared_answer(unannotated) is None


def test_check_and_the_start_say_it_as_a_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """check exits 0 with the line on stderr; the engine logs it at WARNING."""
    import asyncio

    from router import hookimpl
    from router.engine import Engine
    from router.plugins import Plugins
    from router.testing import config_from_toml
    from tests.unit.test_plugin_loading import FakeEntryPoint

    class Shop:
        __name__ = "shop"

        @hookimpl
        def callrouter_register(self, registry: Any) -> None:
            registry.add_lookup("shop.owner", as_set)

    monkeypatch.setattr(
        "router.plugins.metadata.entry_points", lambda group: [FakeEntryPoint("shop", Shop())]
    )
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shop.yaml").write_text(RULES.format(read=".tier"), encoding="utf-8")
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\n'
        f'secret_env = "CALLROUTER_SECRET"\n[router]\nrules = ["{rules}"]\n'
        f'state_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    assert main(["check", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    said = f"{rules / 'shop.yaml'}:3: rule 'vip': reads owner.tier, but lookup shop.owner"
    assert f"callrouter check: warning: {said}" in captured.err, captured.err
    assert "1 rule OK" in captured.out

    engine = Engine(
        config_from_toml(tmp_path, f'[router]\nrules = ["{rules}"]\n'),
        plugins=Plugins.load(entry_points=False, extra=[Shop()]),
    )
    with caplog.at_level(logging.WARNING, logger="router.engine"):
        asyncio.run(engine.setup())
    assert [r.levelname for r in caplog.records if r.getMessage().startswith(said)] == ["WARNING"]
