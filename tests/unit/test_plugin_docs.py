"""docs/plugins.md and the hooks stay in step (datasette's tests/test_docs.py).

Every hookspec has a ``### <hookname>`` section in the plugin guide that
shows its typed signature as hookspecs.py declares it, and a
``test_hook_<hookname>`` in tests/unit/test_hooks.py; a section for a hook
that no longer exists is an error too. Every hook implementation shipped in
the tree (the built-ins, the 1C plugin, the example plugin) takes only
arguments its spec passes (datasette's signature check).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router import hookspecs
from router.plugins import DEFAULT_PLUGINS, Plugins

REPO = Path(__file__).parents[2]
GUIDE = REPO / "docs" / "plugins.md"
HOOK_TESTS = Path(__file__).with_name("test_hooks.py")

HOOKS = sorted(
    name
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("callrouter_")
)


def documented() -> list[str]:
    return re.findall(r"^### (callrouter_\w+)\s*$", GUIDE.read_text(encoding="utf-8"), re.M)


def section(hook: str) -> str:
    """The guide's text under ``### hook``, whitespace collapsed to single spaces."""
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(rf"^### {hook}\s*$(.*?)(?=^#{{1,3}} |\Z)", text, re.M | re.S)
    assert found is not None, f"docs/plugins.md needs a '### {hook}' section"
    return " ".join(found.group(1).split())


def typed_signature(func: Callable[..., Any]) -> str:
    """``def name(arg: Type, ...) -> Return`` as hookspecs.py writes it (annotations are
    strings there: ``from __future__ import annotations``)."""
    sig = inspect.signature(func)
    params = ", ".join(f"{name}: {param.annotation}" for name, param in sig.parameters.items())
    return f"def {func.__name__}({params}) -> {sig.return_annotation}"


def shipped_plugins() -> Plugins:
    """The built-ins, the installed 1C plugin and the example plugin, as the engine loads them."""
    spec = importlib.util.spec_from_file_location(
        "callrouter_vip_signatures",
        REPO / "examples" / "plugin-vip-greeting" / "callrouter_vip" / "__init__.py",
    )
    assert spec is not None
    assert spec.loader is not None
    vip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vip)
    return Plugins.load(entry_points=True, extra=[vip.VipPlugin()])


def hooks_with_a_test() -> set[str]:
    tree = ast.parse(HOOK_TESTS.read_text(encoding="utf-8"))
    return {
        node.name.removeprefix("test_hook_")
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_hook_")
    }


def test_hooks_are_found() -> None:
    assert "callrouter_register" in HOOKS
    assert len(HOOKS) == len(set(HOOKS)) >= 12


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    assert hook in documented(), f"docs/plugins.md needs a '### {hook}' section"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook: str) -> None:
    assert hook in hooks_with_a_test(), f"tests/unit/test_hooks.py needs test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_section_shows_the_typed_signature(hook: str) -> None:
    expected = typed_signature(getattr(hookspecs, hook))
    assert "Any" not in expected.partition("->")[2], f"{hook}: the return type says nothing"
    assert expected in section(hook), (
        f"docs/plugins.md '### {hook}' must show the signature hookspecs.py declares:\n"
        f"    {expected}"
    )


def test_hook_signatures_are_typed_with_the_contracts_types() -> None:
    """No ``Any`` for what the project has a type for (decision, trace, action, outcome)."""
    for hook in HOOKS:
        for name, param in inspect.signature(getattr(hookspecs, hook)).parameters.items():
            if name != "settings":  # a TOML table: its values are any TOML value
                assert "Any" not in str(param.annotation), f"{hook}({name}: {param.annotation})"
    decision = inspect.signature(hookspecs.callrouter_decision).parameters
    assert [str(p.annotation) for p in decision.values()] == [
        "Call",
        "Decision | None",
        "Trace | None",
        "RouteOutcome",
    ]


def test_every_shipped_hookimpl_takes_only_its_specs_arguments() -> None:
    plugins = shipped_plugins()
    seen: dict[str, set[str]] = {}
    for hook in HOOKS:
        caller = getattr(plugins.pm.hook, hook)
        assert caller.spec is not None
        allowed = set(caller.spec.argnames)
        for impl in caller.get_hookimpls():
            extra = set(impl.argnames) - allowed
            assert not extra, (
                f"plugin {impl.plugin_name!r}: {hook} takes {sorted(extra)}, "
                f"which the spec does not pass (it passes {sorted(allowed)})"
            )
            assert not impl.wrapper
            assert not impl.hookwrapper
            seen.setdefault(impl.plugin_name, set()).add(hook)
    builtins = {dotted.rsplit(".", 1)[-1] for dotted in DEFAULT_PLUGINS}
    assert builtins <= set(seen)
    assert {"onec", "vip"} <= set(seen)  # the 1C plugin and the example are checked too
    assert "callrouter_decision" in seen["onec"]
    assert "callrouter_execute" in seen["vip"]


def test_no_section_for_a_hook_that_does_not_exist() -> None:
    headings = documented()
    assert sorted(set(headings) - set(HOOKS)) == []
    assert len(headings) == len(set(headings)), "a hook is documented twice"


def test_hook_sections_follow_the_life_cycle_order() -> None:
    # The guide lists hooks in the order hookspecs.py defines them (when they run).
    in_source = [
        name
        for name, _ in sorted(
            (
                (n, f)
                for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
                if n.startswith("callrouter_")
            ),
            key=lambda item: item[1].__code__.co_firstlineno,
        )
    ]
    assert documented() == in_source


def hook_examples() -> list[tuple[int, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every ``callrouter_*`` function in the guide's Python examples, with its line."""
    text = GUIDE.read_text(encoding="utf-8")
    found = []
    for block in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        first = text.count("\n", 0, block.start(1)) + 1
        try:
            tree = ast.parse(block.group(1))
        except SyntaxError:
            continue  # a hook's bare signature, checked above
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name.startswith("callrouter_")
            ):
                found.append((first + node.lineno - 1, node))
    return found


def test_hook_examples_take_what_their_hook_passes() -> None:
    """A copied example runs: pluggy refuses an argument the spec does not pass,
    and a body that reads ``self`` needs the method's ``self``."""
    examples = hook_examples()
    assert len(examples) >= len(HOOKS)
    problems = []
    for line, func in examples:
        spec = getattr(hookspecs, func.name, None)
        if spec is None:
            problems.append(f"docs/plugins.md:{line}: {func.name} is no hook")
            continue
        params = [arg.arg for arg in func.args.args]
        extra = set(params) - set(inspect.signature(spec).parameters) - {"self"}
        if extra:
            problems.append(f"docs/plugins.md:{line}: {func.name} takes {sorted(extra)}")
        reads_self = any(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(func))
        if reads_self and params[:1] != ["self"]:
            problems.append(f"docs/plugins.md:{line}: {func.name} reads self without taking it")
    assert problems == []


async def test_explain_calls_a_plugins_lookup_only_when_asked_as_the_guide_says(
    tmp_path: Path,
) -> None:
    """A plugin author reading that ``explain`` passes the lookup a request ran explain
    to try their lookup and got "not provided": explain answers with stubs, unless
    ``--ask`` (``answer_stubs(ask=True)``), which calls it with the call's request."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from router import Registry, RequestInfo, hookimpl
    from router.rules import load_rules
    from router.rules.explain import answer_stubs, explain_call
    from router.testing import load_plugins, make_config

    asked: list[str] = []
    requests: list[RequestInfo] = []

    async def owner(number: str, request: RequestInfo | None = None) -> dict[str, str]:
        asked.append(number)
        if request is not None:
            requests.append(request)
        return {"extension": "101"}

    class Crm:
        __name__ = "crm"

        @hookimpl
        def callrouter_register(self, registry: Registry) -> None:
            registry.add_lookup("crm.owner", owner)

    plugins = load_plugins(Crm())
    await plugins.configure(make_config())
    registry = Registry()
    assert plugins.register_into(registry) == []
    (tmp_path / "r.yaml").write_text(
        "version: 1\nrules:\n  - name: owner\n    on: call\n    lookup:\n"
        "      owner: crm.owner(caller.number)\n    when: owner.extension\n"
        '    do:\n      - redirect: {context: callrouter-dial, exten: "{owner.extension}"}\n',
        encoding="utf-8",
    )
    ruleset = load_rules([tmp_path], registry)
    assert not ruleset.errors
    stubs = answer_stubs(registry, {})
    assert isinstance(stubs, dict)
    explained = await explain_call(
        ruleset,
        "+79161234567",
        "74951234567",
        stubs=stubs,
        now=datetime(2026, 11, 23, 12, tzinfo=ZoneInfo("Europe/Moscow")),
    )
    assert asked == []
    assert not explained.outcome.decision.matched
    assert explained.outcome.trace.rules[0].lookups[0].source == "not provided"
    # explain --ask: the lookup is called, with the call's request and a deadline.
    stubs = answer_stubs(registry, {}, ask=True)
    assert stubs == {}
    explained = await explain_call(
        ruleset,
        "+79161234567",
        "74951234567",
        stubs=stubs,
        now=datetime(2026, 11, 23, 12, tzinfo=ZoneInfo("Europe/Moscow")),
        budget=3.7,
    )
    assert asked == ["79161234567"]
    assert [(r.did, r.caller, r.channel, r.deadline is not None) for r in requests] == [
        ("74951234567", "79161234567", "", True)
    ]
    record = explained.outcome.trace.rules[0].lookups[0]
    assert (record.source, record.value) == ("asked", {"extension": "101"})
    assert explained.outcome.decision.matched
    guide = " ".join(GUIDE.read_text(encoding="utf-8").split())
    assert (
        "`callrouter explain` (and the API's explain) does not call a lookup, yours "
        "included, unless asked to" in guide
    )
    assert "`callrouter explain --ask` does call it, as `callrouter run` would" in guide
    assert "a `request` with the caller, the DID and a deadline" in guide
    assert "`callrouter explain` the caller and DID it was given" not in guide


def test_every_stream_gap_reason_is_documented_for_the_gap_hook() -> None:
    """The reasons the event stream gives a gap (router/ami/stream.py) are those
    the guide lists for ``callrouter_stream_gap``: a plugin that tells them apart
    (a reconnect from an overflow) must know every one."""
    source = (REPO / "router" / "ami" / "stream.py").read_text(encoding="utf-8")
    reasons = set(re.findall(r'yield StreamGap\(.*?"(\w+)"', source))
    assert reasons >= {"reconnect", "session", "overflow"}, reasons
    section = GUIDE.read_text(encoding="utf-8").split("### callrouter_stream_gap", 1)[1]
    listed = re.search(r"`reason` \(([^)]*)\)", section)
    assert listed is not None
    assert set(re.findall(r"`(\w+)`", listed.group(1))) == reasons


def test_what_the_guide_has_a_plugin_call_is_public() -> None:
    """A plugin imports ``router`` and only ``router`` (the guide says so, and
    the import-linter contract holds the shipped plugins to it): the guide told
    plugins to call ``router.dialplan.location_problem(params, LocationPolicy())``,
    an internal module's, with a policy that is not the router.toml's."""
    import router

    text = GUIDE.read_text(encoding="utf-8")
    called = set(re.findall(r"\b(router(?:\.\w+)+)\(", text))
    assert "router.parse_number" in called
    not_public = sorted(
        name for name in called if name.count(".") != 1 or name[7:] not in router.__all__
    )
    assert not_public == [], f"plugins.md has plugins call internal {not_public}"
    for name in called:
        assert callable(getattr(router, name[7:])), name


def test_the_settings_reader_the_guide_lists_is_the_one_shipped(tmp_path: Path) -> None:
    """Each member of ``router.SettingsReader`` the guide lists exists, and the way it
    shows to read a table whose keys the plugin does not know (``values``) works with
    errors naming the line (issue 16: a new plugin author had no documented way to
    read such a table but the raw mapping, whose errors name nothing)."""
    from router import ConfigError, SettingsReader
    from router.testing import config_from_toml

    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("Besides `reject_unknown(keys)`, the reader has")
    paragraph = text[start : text.index("\n\n", start)]
    members = set(re.findall(r"`([a-z_]+)(?:\(|`)", paragraph))
    assert {"reject_unknown", "table", "values", "error", "strings"} <= members
    reader = SettingsReader.for_plugin("vip", {})
    missing = sorted(name for name in members if not hasattr(reader, name))
    assert missing == [], f"plugins.md lists SettingsReader members it lacks: {missing}"

    example = re.search(
        r"`(\{number: owners\.string\(number\) for number in owners\.values\})`", paragraph
    )
    assert example is not None
    config = config_from_toml(tmp_path, '[plugins.vip.owners]\n"79161234567" = "101"\n"7916" = 5\n')
    reader = SettingsReader.for_plugin("vip", config.plugins.settings["vip"], config)
    owners = reader.table("owners")
    with pytest.raises(
        ConfigError, match=r"router\.toml:3: \[plugins\.vip\.owners\] 7916: expected a string"
    ):
        eval(example.group(1), {"owners": owners})
    assert SettingsReader.for_plugin("vip", {}).table("owners").values == {}


def test_the_settings_reader_bounds_are_as_the_guide_says() -> None:
    """The guide listed ``integer`` and ``number`` with bounds and no word of which
    are included: a plugin author's ``number("delay", 0.0, 0.0, 10.0)`` refused
    the absent key's own default, ``expected more than 0``. It says so now, and
    the keywords that admit the low bound or 0; this holds the reader to it."""
    from router import ConfigError, SettingsReader

    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    assert '`number("delay", 0.0, 0.0, 10.0)` refuses 0, the default too' in text
    assert "`low_included=True` admits low" in text
    assert "`allow_zero=True` admits 0 besides" in text
    assert "(low to high, both included)" in text
    absent = SettingsReader.for_plugin("vip", {})
    with pytest.raises(ConfigError, match="expected more than 0 and at most 10"):
        absent.number("delay", 0.0, 0.0, 10.0)
    assert absent.number("delay", 0.0, 0.0, 10.0, low_included=True) == 0.0
    assert (
        SettingsReader.for_plugin("vip", {"delay": 0}).number(
            "delay", 1.0, 0.5, 10.0, allow_zero=True
        )
        == 0.0
    )
    assert absent.integer("tries", 0, 0, 5) == 0
    assert absent.integer("tries", 5, 0, 5) == 5
