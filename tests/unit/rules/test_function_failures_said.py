"""A plugin rule function's failure is logged once per call by each engine
(issue 16).

The memory of failures already logged was a module-level dict: every engine
of a process shared it, so a second engine (a test's, a restart in the same
interpreter) kept quiet about its own call's failure when the first had seen
a call with the same id, and one engine's calls filled the other's bound.
It is now the evaluator's (the engine's rule book's), still once per call and
still bounded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from router.plugin_registry import plugin_registry
from router.rules import Context, RuleBook
from router.rules.context import Caller, CallInfo
from router.rules.evaluate import FUNCTION_FAILURE_MEMORY, FailuresSaid

RULES = (
    "version: 1\nrules:\n"
    "  - name: a\n    on: call\n    if: is_vip(caller.number)\n"
    "    do:\n      - redirect: {context: queues, exten: a}\n"
    "  - name: fine\n    on: call\n    priority: -1\n"
    "    do:\n      - redirect: {context: queues, exten: c}\n"
)


def _book(tmp_path: Path) -> RuleBook:
    def is_vip(number: str) -> bool:
        raise KeyError(number)

    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_function("is_vip", is_vip)
    registry.registering = None
    path = tmp_path / "vip.yaml"
    path.write_text(RULES, encoding="utf-8")
    book = RuleBook([path], registry)
    assert book.reload().errors == ()
    return book


def _route(book: RuleBook, linkedid: str) -> tuple[str, ...]:
    call = CallInfo(channel="PJSIP/trunk-1", uniqueid=linkedid, linkedid=linkedid)
    context = Context.for_call(Caller("79161234567"), "74951234567", call=call)
    return asyncio.run(book.evaluate(context)).decision.rules


def test_two_engines_each_log_their_own_call_s_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first, second = _book(tmp_path / "1"), _book(tmp_path / "2")
    assert first.said is not second.said
    with caplog.at_level("ERROR", logger="router.plugins"):
        assert _route(first, "1795460784.7") == ("fine",)
        assert _route(first, "1795460784.7") == ("fine",)  # the same call: said once
        assert _route(second, "1795460784.7") == ("fine",)  # another engine's call
    said = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    line = (
        "plugin 'shop' failed in its rule function is_vip (call 1795460784.7): "
        "KeyError('79161234567')"
    )
    assert said == [line, line]
    assert len(first.said) == len(second.said) == 1


def test_a_reloaded_book_keeps_what_was_said(tmp_path: Path) -> None:
    """The engine's reload hands its new rule book the old one's memory: a
    call in progress across a reload is not told the failure again."""
    book = _book(tmp_path)
    _route(book, "1795460784.7")
    reloaded = RuleBook(book.paths, book.registry, said=book.said)
    assert ("shop", "is_vip", "1795460784.7") in reloaded.said


def test_the_memory_is_bounded_forgetting_the_oldest() -> None:
    said = FailuresSaid(limit=3)
    assert [said.first(("p", "f", str(n))) for n in range(5)] == [True] * 5
    assert len(said) == 3
    assert not said.first(("p", "f", "4"))  # remembered: said once
    assert said.first(("p", "f", "0"))  # the oldest was forgotten
    assert len(said) == 3


def test_an_engine_s_memory_holds_at_most_the_bound(tmp_path: Path) -> None:
    book = _book(tmp_path)
    assert book.said.limit == FUNCTION_FAILURE_MEMORY == 10_000
    book.said.limit = 5  # the same code path as 10,000, without 10,000 calls
    for n in range(8):
        assert _route(book, f"1795460784.{n}") == ("fine",)
    assert len(book.said) == 5
    assert ("shop", "is_vip", "1795460784.7") in book.said
    assert ("shop", "is_vip", "1795460784.0") not in book.said


def test_an_engine_s_reload_keeps_its_memory_and_another_engine_has_its_own(
    tmp_path: Path,
) -> None:
    import asyncio as aio

    from router.engine import Engine
    from router.plugins import Plugins
    from router.testing import config_from_toml

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "all.yaml").write_text(
        "version: 1\nrules:\n  - name: all\n    on: call\n"
        "    do:\n      - redirect: {context: queues, exten: a}\n",
        encoding="utf-8",
    )

    def engine() -> Engine:
        config = config_from_toml(tmp_path, f'[router]\nrules = ["{rules}"]\n')
        return Engine(config, plugins=Plugins.load(entry_points=False))

    first, second = engine(), engine()
    aio.run(first.setup())
    aio.run(second.setup())
    said = first.rules.said
    assert said is not second.rules.said
    book = first.rules
    first.reload()
    assert first.rules is not book  # a new rule book, the same memory
    assert first.rules.said is said


# -------------------------- lookups that held the loop or were cut off: per engine too

LOOKUP_RULES = (
    "version: 1\nrules:\n"
    "  - name: owner\n    on: call\n    lookup:\n      owner: shop.owner(caller.number)\n"
    "    when: owner.found\n    do:\n      - redirect: {context: queues, exten: a}\n"
    "  - name: fine\n    on: call\n    priority: -1\n"
    "    do:\n      - redirect: {context: queues, exten: c}\n"
)


def _lookup_book(tmp_path: Path, lookup: object, said: FailuresSaid | None = None) -> RuleBook:
    tmp_path.mkdir(exist_ok=True)
    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_lookup("shop.owner", lookup)  # type: ignore[arg-type]
    registry.registering = None
    path = tmp_path / "crm.yaml"
    path.write_text(LOOKUP_RULES, encoding="utf-8")
    book = RuleBook([path], registry, said=said)
    assert book.reload().errors == ()
    return book


def test_a_lookup_that_held_the_loop_is_said_once_by_each_engine_and_across_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory of lookups said to have held the event loop was the
    process's: a second engine kept quiet about its own, and 1000 keys of one
    engine silenced every other. It is the rule book's, kept over a reload."""
    from router.rules import evaluate as evaluating

    monkeypatch.setattr(evaluating, "BLOCKING_WARN", 0.0)  # every lookup "held": no sleep

    def owner(number: str) -> object:
        return None

    first = _lookup_book(tmp_path / "1", owner)
    second = _lookup_book(tmp_path / "2", owner)
    with caplog.at_level("WARNING", logger="router.plugins"):
        for book in (first, first, second):
            assert _route(book, "1795460784.7") == ("fine",)
        reloaded = _lookup_book(tmp_path / "3", owner, said=first.said)
        assert _route(reloaded, "1795460784.8") == ("fine",)  # said before the reload
    said = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert len(said) == 2, said
    assert all(
        m.startswith("plugin 'shop': its lookup shop.owner held the event loop") for m in said
    )
    assert first.said.held == second.said.held == {("shop", "shop.owner")}


def test_a_lookup_cut_off_is_said_by_each_engine_and_not_again_after_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def owner(number: str) -> object:
        await asyncio.Event().wait()  # never answers: the deadline cuts it off
        return None

    def evaluate(book: RuleBook) -> None:
        context = Context.for_call(Caller("79161234567"), "74951234567")
        # The deadline's clock stands still; the cut-off is on the loop's time.
        outcome = asyncio.run(book.evaluate(context, deadline=1000.01, clock=lambda: 1000.0))
        assert outcome.decision.rules == ("fine",)

    first = _lookup_book(tmp_path / "1", owner)
    second = _lookup_book(tmp_path / "2", owner)
    with caplog.at_level("WARNING", logger="router.plugins"):
        for book in (first, first, second):
            evaluate(book)
        evaluate(_lookup_book(tmp_path / "3", owner, said=first.said))
    said = [r.getMessage() for r in caplog.records if r.name == "router.plugins"]
    assert len(said) == 2, said
    assert all(m.startswith("plugin 'shop': its lookup shop.owner gave no answer") for m in said)
    assert set(first.said.cut_off) == set(second.said.cut_off) == {("shop", "shop.owner")}
