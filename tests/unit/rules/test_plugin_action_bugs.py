"""A plugin action's own checks that raise something else than ValueError
(issue 16).

``ActionSpec(check=...)`` or ``routes=`` that raised, say, a KeyError (a
plugin reading ``params["x"]`` the rule did not write) made the whole rule
file fail: ``rules/crm.yaml: cannot load (KeyError: 'x'); please report this
as a bug``, naming neither the plugin nor the rule, and dropping the file's
other rules. It is now that rule's error, located and naming the plugin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.plugin_registry import plugin_registry
from router.rules import Context, load_rules
from router.rules.context import Caller, CallInfo
from router.rules.registry import ActionSpec, ParamSpec

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
RULES = """version: 1
rules:
  - name: tag
    on: call
    do:
      - crm_act: {y: "1"}
  - name: fine
    on: call
    do:
      - redirect: {context: queues, exten: a}
"""


def _key(params: Mapping[str, object]) -> None:
    params["x"]  # a plugin's bug: x is optional


def _routes(params: Mapping[str, object]) -> bool:
    return str(params["x"]) == "move"


@pytest.mark.parametrize(
    ("spec", "what"),
    [
        (ActionSpec("crm_act", (ParamSpec("x"), ParamSpec("y")), check=_key), "check"),
        (ActionSpec("crm_act", (ParamSpec("x"), ParamSpec("y")), routes=_routes), "routes"),
    ],
)
def test_a_plugin_action_check_that_raises_is_that_rule_s_error(
    tmp_path: Path, spec: ActionSpec, what: str
) -> None:
    registry = plugin_registry()
    registry.registering = "crm"
    registry.add_action(spec)
    registry.registering = None
    path = tmp_path / "crm.yaml"
    path.write_text(RULES, encoding="utf-8")
    ruleset = load_rules([path], registry)
    (error,) = ruleset.errors
    assert str(error) == (
        f"{path}:6: rule 'tag': action 'crm_act': plugin 'crm' failed in its {what}: KeyError('x')"
    )
    assert [rule.name for rule in ruleset.rules] == ["fine"]


def test_routes_is_asked_of_the_parameters_as_written(tmp_path: Path) -> None:
    """A ``routes`` that answers is asked once per action, and a KeyError in
    one rule leaves the next rule's error its own."""
    registry = plugin_registry()
    registry.registering = "crm"
    registry.add_action(ActionSpec("crm_act", (ParamSpec("x"),), routes=_routes))
    path = tmp_path / "crm.yaml"
    path.write_text(
        "version: 1\nrules:\n  - name: go-on\n    on: call\n    continue: true\n"
        "    do:\n      - crm_act: {x: move}\n",
        encoding="utf-8",
    )
    (error,) = load_rules([path], registry).errors
    assert "action 'crm_act' moves or ends the call, so the rule cannot have" in str(error)


def _boom_filled(params: Mapping[str, object], key: str, text: str) -> None:
    raise RuntimeError("boom in filled")


def _boom_rendered(params: Mapping[str, str]) -> None:
    raise RuntimeError("boom in rendered")


@pytest.mark.parametrize(
    ("spec", "what"),
    [
        (ActionSpec("crm_act", (ParamSpec("x"),), filled=_boom_filled), "filled"),
        (ActionSpec("crm_act", (ParamSpec("x"),), rendered=_boom_rendered), "rendered"),
    ],
)
def test_a_plugin_action_filled_or_rendered_that_raises_names_the_plugin(
    tmp_path: Path, spec: ActionSpec, what: str
) -> None:
    """A ``filled`` or ``rendered`` raising something else than ValueError is
    the plugin's bug: the rule's error (stage ``do``) names the plugin, the
    next rule routes the call."""
    registry = plugin_registry()
    registry.registering = "crm"
    registry.add_action(spec)
    registry.registering = None
    path = tmp_path / "crm.yaml"
    path.write_text(RULES.replace('{y: "1"}', '{x: "{caller.number}"}'), encoding="utf-8")
    ruleset = load_rules([path], registry)
    assert ruleset.errors == ()
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    outcome = asyncio.run(ruleset.evaluate(context, explain=True))
    assert outcome.decision.rules == ("fine",)
    tag = outcome.trace.rules[0]
    assert (tag.status, tag.stage) == ("error", "do")
    assert tag.detail == (
        f"action 'crm_act': plugin 'crm' failed in its {what}: RuntimeError('boom in {what}')"
    )


LOOKUP_RULES = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      owner: shop.owner(caller.number)
    when: owner.found
    do:
      - redirect: {context: queues, exten: a}
  - name: fine
    on: call
    do:
      - redirect: {context: queues, exten: b}
"""


@pytest.mark.parametrize("kind", ["async", "plain"])
def test_a_plugin_lookup_that_raises_a_bug_is_logged_naming_plugin_and_lookup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A lookup raising something else than LookupUnavailable (a KeyError: the
    plugin's bug) was only a ``failed: KeyError: 'manager'`` in the trace, under the
    rule's name for the answer: no ERROR naming the plugin or the lookup, and no
    traceback to find it by. It is said as a hook's failure is; the call still
    routes by the next rule, and the trace keeps the error."""
    from router import LookupUnavailable

    async def responsible_async(number: str) -> object:
        if number == "0":
            raise LookupUnavailable("1C is down")
        return {}["manager"]

    def responsible_plain(number: str) -> object:
        return {}["manager"]

    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_lookup("shop.owner", responsible_async if kind == "async" else responsible_plain)
    registry.registering = None
    path = tmp_path / "crm.yaml"
    path.write_text(LOOKUP_RULES, encoding="utf-8")
    ruleset = load_rules([path], registry)
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    with caplog.at_level("ERROR", logger="router.plugins"):
        outcome = asyncio.run(ruleset.evaluate(context, explain=True))
    assert outcome.decision.rules == ("fine",)
    assert outcome.trace.rules[0].lookups[0].error == "KeyError: 'manager'"
    [record] = [r for r in caplog.records if r.name == "router.plugins"]
    assert record.levelname == "ERROR"
    assert record.getMessage().startswith("plugin 'shop' failed in its lookup shop.owner")
    assert record.getMessage().endswith(": KeyError('manager')")
    assert record.exc_info is not None  # the traceback, to find the line
    if kind == "async":
        # LookupUnavailable is the lookup's way to say "no answer": no ERROR.
        caplog.clear()
        other = Context.for_call(Caller("0"), "74951234567", now=NOW)
        with caplog.at_level("ERROR", logger="router.plugins"):
            asyncio.run(ruleset.evaluate(other, explain=True))
        assert not [r for r in caplog.records if r.name == "router.plugins"]


def _shop_rules(tmp_path: Path, lookup: Any) -> Any:
    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_lookup("shop.owner", lookup)
    registry.registering = None
    path = tmp_path / "crm.yaml"
    path.write_text(LOOKUP_RULES, encoding="utf-8")
    return load_rules([path], registry)


def test_a_lookup_cut_off_by_the_deadline_is_warned_about_naming_plugin_and_lookup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lookup that hangs was only ``lookups owner ... failed: timed out`` on the
    decision line, under the rule's name for the answer: nothing said whose
    lookup hung. It is said at WARNING naming both, once a minute at most."""
    from router.rules import evaluate as evaluating

    async def hangs(number: str) -> object:
        await asyncio.sleep(30)
        return None

    ruleset = _shop_rules(tmp_path, hangs)
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)

    def clock() -> float:
        """The deadline's clock, standing still: with time.monotonic() a loaded
        machine's pause of 50 ms before the lookup made it "deadline passed before
        the lookup", with no cut-off to warn about (issue 16). The lookup is still
        cut off on the event loop's time."""
        return 1000.0

    # The engine's memory of what was said (its rule book's): one for both calls.
    said = evaluating.FailuresSaid()

    async def twice() -> Any:
        first = await ruleset.evaluate(
            context, deadline=1000.05, explain=True, clock=clock, said=said
        )
        await ruleset.evaluate(context, deadline=1000.05, explain=True, clock=clock, said=said)
        return first

    with caplog.at_level("WARNING", logger="router.plugins"):
        outcome = asyncio.run(twice())
    assert outcome.trace.deadline_hit
    assert outcome.trace.rules[0].lookups[0].error.startswith("timed out after ")
    [record] = [r for r in caplog.records if r.name == "router.plugins"]  # said once
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(
        "plugin 'shop': its lookup shop.owner gave no answer within the call's deadline"
    )
    line = hangs.__code__.co_firstlineno  # where to look, with no traceback to show it
    assert record.getMessage().endswith(f"test_plugin_action_bugs.py:{line}"), record.getMessage()


def test_a_lookup_s_own_timeout_is_its_failure_not_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lookup whose own client timed out (``asyncio.wait_for`` inside it) was
    taken for the call's deadline: ``timed out after 20 ms`` and the trace's
    ``deadline_hit``, so a call no rule then matched was ``late`` rather than
    ``fell-through`` with plenty of time left. It is the lookup's failure,
    logged naming the plugin, and the deadline is not said to have passed."""

    async def own_timeout(number: str) -> object:
        return await asyncio.wait_for(asyncio.sleep(30), 0.02)

    ruleset = _shop_rules(tmp_path, own_timeout)
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)

    async def once() -> Any:
        deadline = time.monotonic() + 5
        return await ruleset.evaluate(context, deadline=deadline, explain=True)

    with caplog.at_level("ERROR", logger="router.plugins"):
        outcome = asyncio.run(once())
    assert not outcome.trace.deadline_hit
    assert outcome.decision.rules == ("fine",)
    assert outcome.trace.rules[0].lookups[0].error == "TimeoutError"
    [record] = [r for r in caplog.records if r.name == "router.plugins"]
    assert record.getMessage().startswith("plugin 'shop' failed in its lookup shop.owner")


def _held_said_once(
    ruleset: Any, caplog: pytest.LogCaptureFixture, said: str, function: Callable[..., object]
) -> None:
    """Two calls evaluated by ``ruleset``: 'fine' decides, and one WARNING of
    router.plugins, starting ``said``, names where ``function`` is written (the
    warning carries no traceback, so it names the file and line, as a hook's
    registration problem does)."""
    from router.rules.evaluate import FailuresSaid

    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW)
    memory = FailuresSaid()  # the engine's (its rule book's): one for both calls
    with caplog.at_level("WARNING", logger="router.plugins"):
        for _ in range(2):
            outcome = asyncio.run(ruleset.evaluate(context, explain=True, said=memory))
    assert outcome.decision.rules == ("fine",)
    [record] = [r for r in caplog.records if r.name == "router.plugins"]
    assert record.getMessage().startswith(said), record.getMessage()
    line = function.__code__.co_firstlineno
    assert record.getMessage().endswith(f"test_plugin_action_bugs.py:{line}"), record.getMessage()


def test_a_plain_lookup_that_holds_the_loop_is_named_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain lookup that waited (``time.sleep``, ``requests.get``) held every
    other call and event, and the deadline could not cut it off; the decision
    line only showed its time. Said at WARNING naming plugin and lookup, once."""
    from router.rules import evaluate as evaluating

    monkeypatch.setattr(evaluating, "BLOCKING_WARN", 0.02)

    def blocks(number: str) -> object:
        time.sleep(0.03)
        return None

    _held_said_once(
        _shop_rules(tmp_path, blocks),
        caplog,
        "plugin 'shop': its lookup shop.owner held the event loop",
        blocks,
    )


def _vip_rules(tmp_path: Path, is_vip: Callable[[str], bool], *, also_not_vip: bool = False) -> Any:
    """Rules on plugin 'shop''s rule function ``is_vip``: ``a`` (priority 20)
    when it says yes, with ``also_not_vip`` ``b`` (10) when it says no, else
    ``fine``: each of a and b asks it."""
    registry = plugin_registry()
    registry.registering = "shop"
    registry.add_function("is_vip", is_vip)
    registry.registering = None
    not_vip = (
        "  - name: b\n    priority: 10\n    on: call\n    if: not is_vip(caller.number)\n"
        "    do:\n      - redirect: {context: queues, exten: b}\n"
    )
    path = tmp_path / "vip.yaml"
    path.write_text(
        "version: 1\nrules:\n"
        "  - name: a\n    priority: 20\n    on: call\n    if: is_vip(caller.number)\n"
        "    do:\n      - redirect: {context: queues, exten: a}\n"
        + (not_vip if also_not_vip else "")
        + "  - name: fine\n    on: call\n    do:\n      - redirect: {context: queues, exten: c}\n",
        encoding="utf-8",
    )
    return load_rules([path], registry)


def test_a_plugin_rule_function_that_raises_is_logged_naming_plugin_and_function(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin's rule function raising (its bug) was only ``is_vip() raised
    KeyError: ...`` in the trace: no ERROR naming the plugin, no traceback,
    while a lookup's bug is said so. It is said as a lookup's is, once per
    function and call however many rules use it; the next rule still decides."""

    def is_vip(number: str) -> bool:
        return {}[number]  # type: ignore[no-any-return]

    ruleset = _vip_rules(tmp_path, is_vip, also_not_vip=True)
    assert ruleset.errors == ()
    call = CallInfo(channel="PJSIP/trunk-1", uniqueid="1795460784.7", linkedid="1795460784.7")
    context = Context.for_call(Caller("79161234567"), "74951234567", now=NOW, call=call)
    with caplog.at_level("ERROR", logger="router.plugins"):
        outcome = asyncio.run(ruleset.evaluate(context, explain=True))
    assert outcome.decision.rules == ("fine",)
    assert outcome.trace.rules[0].detail == "is_vip() raised KeyError: '79161234567'"
    [record] = [r for r in caplog.records if r.name == "router.plugins"]  # two rules, one line
    assert record.levelname == "ERROR"
    assert record.getMessage() == (
        f"plugin 'shop' failed in its rule function is_vip (call {call.linkedid}): "
        "KeyError('79161234567')"
    )
    assert record.exc_info is not None
    assert record.exc_info[2] is not None  # the traceback shows where in the plugin


def test_a_rule_function_that_holds_the_loop_is_named_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin's rule function that waited (``time.sleep``, a file on a slow
    mount) held every call and event as a plain lookup does, and was said
    nowhere: the decision line's time alone grew. Said at WARNING naming the
    plugin, the function and where it is written, once per function (every
    call counts as holding here: the bound is 0)."""
    from router.rules import expr

    monkeypatch.setattr(expr, "BLOCKING_WARN", 0.0)
    monkeypatch.setattr(expr, "_held_said", set())

    def is_vip(number: str) -> bool:
        return False

    _held_said_once(
        _vip_rules(tmp_path, is_vip),
        caplog,
        "plugin 'shop': its rule function is_vip held the event loop for ",
        is_vip,
    )
