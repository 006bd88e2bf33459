"""Reloading rules on a running engine never stalls the event loop (issue 10, item 2).

A billion-laughs file saved into the watched folder froze the loop for 19 s
and calls in flight missed their deadlines. Now the loader refuses it at once,
and all loading runs in a worker thread while the loop keeps serving; the
previous rules stay when the new set is broken.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import router.engine
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.hookspecs import hookimpl
from router.plugins import Plugins
from router.rules.loader import display_path
from router.rules.registry import Registry

BAD = Path(__file__).resolve().parents[2] / "fixtures" / "rules" / "bad"

GOOD = """version: 1
rules:
  - name: default
    on: call
    do:
      - redirect: {context: queues, exten: sales}
"""

#: The loop must get a turn at least this often while a reload runs. On the loop
#: the reloads below block it for seconds; off it, the gaps are the GIL's
#: switch interval, which on two busy shared cores was seen at 0.54 s.
MAX_GAP = 0.5

ROOT = Path(__file__).resolve().parents[3]


def big_valid_rules(count: int) -> str:
    """A legal rule file that takes the pure-Python YAML parser a few seconds."""
    rule = (
        '  - name: r{0}\n    on: call\n    if: did == "7495{0:07d}"\n'
        '    do:\n      - redirect: {{context: sales, exten: "{0}"}}\n'
    )
    return "version: 1\nrules:\n" + "".join(rule.format(i) for i in range(count))


class _NoAsterisk:
    async def aclose(self) -> None:
        return None


def write_config(tmp_path: Path) -> Path:
    """``tmp_path/router.toml`` reading the rule folder ``tmp_path/rules``, made
    with one good rule file, ``a.yaml``; the folder."""
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "a.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\nsecret = "s"\n'
        f'[router]\nrules = ["{folder}"]\n',
        encoding="utf-8",
    )
    return folder


@pytest.fixture
async def engine(tmp_path: Path) -> Engine:
    write_config(tmp_path)
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=_NoAsterisk(),  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False),
        options=EngineOptions(watch_interval=0),
    )
    loaded = await engine.setup()
    assert [r.name for r in loaded.rules] == ["default"]
    return engine


async def gap_and_length_of(
    work: asyncio.Future[object] | asyncio.Task[object],
) -> tuple[float, float]:
    """Runs a coroutine that ticks every 20 ms until ``work`` is done: the
    longest gap between ticks and how long the work took."""
    started = time.monotonic()
    ticks = [started]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.02)
            ticks.append(time.monotonic())

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.wait_for(work, timeout=120)
    finally:
        ticker.cancel()
    ticks.append(time.monotonic())
    gap = max(later - earlier for earlier, later in itertools.pairwise(ticks))
    return gap, ticks[-1] - started


def allowed_gap(took: float) -> float:
    """Work done on the loop leaves one gap about as long as the work; off the
    loop the gaps are the scheduler's. On a loaded host both grow with the
    work's length, so the bound does too: MAX_GAP, or a quarter of the work."""
    return max(MAX_GAP, took / 4)


async def test_watched_folder_reload_of_the_bomb_keeps_the_loop_ticking(engine: Engine) -> None:
    folder = engine.rules.paths[0]
    bomb = (BAD / "yaml_alias_bomb.yaml").read_text(encoding="utf-8")
    (folder / "b.yaml").write_text(bomb, encoding="utf-8")
    gap, took = await gap_and_length_of(asyncio.ensure_future(engine._check_rule_files()))
    assert gap < allowed_gap(took)
    # the bomb is refused, so the reload is fatal and the previous rules stay
    assert [r.name for r in engine.rules.current.rules] == ["default"]


#: How long the reload's work waits for a turn of the loop. Off the loop the
#: turn comes at once (milliseconds, seconds on a host loaded to the hilt); on
#: the loop it never comes, so this is only the time such a failure takes.
LOOP_TURN_TIMEOUT = 30.0


async def test_slow_valid_reload_runs_off_the_loop(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reload's work (``load_rules`` of the 1500 rules) asks the loop
    for a turn and waits for it: it comes only if the work runs off the loop.
    On the loop the work would block the very loop it waits for, and the turn
    never comes. No clock is read, so a loaded host cannot make it flaky."""
    loop = asyncio.get_running_loop()
    turns: list[bool] = []
    real_load_rules = router.engine.load_rules

    def load_rules_asking_the_loop(*args: Any, **kwargs: Any) -> Any:
        turned = threading.Event()
        loop.call_soon_threadsafe(turned.set)
        turns.append(turned.wait(LOOP_TURN_TIMEOUT))
        return real_load_rules(*args, **kwargs)

    monkeypatch.setattr(router.engine, "load_rules", load_rules_asking_the_loop)
    folder = engine.rules.paths[0]
    (folder / "big.yaml").write_text(big_valid_rules(1500), encoding="utf-8")
    await asyncio.wait_for(engine._check_rule_files(), timeout=120)
    assert turns == [True], "the loop had no turn while the reload's work ran"
    assert len(engine.rules.current.rules) == 1501
    assert engine.registry is engine.rules.registry


async def test_sighup_reload_runs_in_the_background(engine: Engine) -> None:
    folder = engine.rules.paths[0]
    (folder / "a.yaml").write_text(GOOD.replace("default", "renamed"), encoding="utf-8")
    engine.request_reload()
    (task,) = engine._reloads
    await asyncio.wait_for(task, timeout=60)
    assert [r.name for r in engine.rules.current.rules] == ["renamed"]


async def test_broken_reload_in_thread_keeps_the_previous_rules(engine: Engine) -> None:
    folder = engine.rules.paths[0]
    (folder / "a.yaml").write_text("version: 1\nrules: [\n", encoding="utf-8")
    loaded = await engine.reload_in_thread()
    assert loaded is not None
    assert loaded.fatal
    assert [r.name for r in engine.rules.current.rules] == ["default"]


def errors_logged(caplog: pytest.LogCaptureFixture, folder: Path) -> list[str]:
    return [
        r.getMessage().removeprefix(f"{folder}/")
        for r in caplog.records
        if r.levelno == logging.ERROR
    ]


async def test_a_reload_with_any_error_keeps_every_previous_rule(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule with an error was disabled and the rest reloaded: the calls it
    routed went down the rules after it until someone read the log, though the
    administrator meant to change that rule, not to drop it (at start, the same
    error refuses to run). Now any error refuses the reload, as a file that
    cannot be read does, and the previous rules all stay, counted as refused."""
    folder = engine.rules.paths[0]
    reloads = engine.metrics.rule_reloads
    (folder / "a.yaml").write_text(
        GOOD + "  - name: bad\n    on: call\n    if: nosuch(1)\n    do: [hangup: {}]\n",
        encoding="utf-8",
    )
    caplog.set_level(logging.INFO, logger="router.engine")
    loaded = await engine.reload_in_thread()
    assert loaded is not None
    assert not loaded.fatal  # one rule's error, not a file's
    assert errors_logged(caplog, folder) == [
        "a.yaml:9: rule 'bad': unknown function 'nosuch'",
        "rules not reloaded: 1 problem; keeping the previous 1 rule",
    ]
    assert [r.name for r in engine.rules.current.rules] == ["default"]
    assert reloads.labels("refused")._value.get() == 1
    assert reloads.labels("ok")._value.get() == 0
    # With a file that cannot be read too: both said, the previous rules stay.
    (folder / "b.yaml").write_text("version: 1\nrulez: []\n", encoding="utf-8")
    caplog.clear()
    loaded = await engine.reload_in_thread()
    assert loaded is not None
    assert loaded.fatal
    assert errors_logged(caplog, folder) == [
        "a.yaml:9: rule 'bad': unknown function 'nosuch'",
        "b.yaml:2: unknown key 'rulez' (did you mean 'rules'?)",
        "rules not reloaded: 2 problems; keeping the previous 1 rule",
    ]
    # Fixed, the reload goes through.
    (folder / "b.yaml").unlink()
    (folder / "a.yaml").write_text(GOOD.replace("default", "fixed"), encoding="utf-8")
    caplog.clear()
    await engine.reload_in_thread()
    assert errors_logged(caplog, folder) == []
    assert [r.name for r in engine.rules.current.rules] == ["fixed"]
    assert reloads.labels("ok")._value.get() == 1


async def test_the_watcher_does_not_reload_what_a_sighup_reloaded(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 16: a file saved, then SIGHUP: the watcher's next look found the
    files changed since its own last look and reloaded them again, so every
    ERROR and WARNING of the reload (and the dialplan check) came twice."""
    folder = engine.rules.paths[0]
    (folder / "a.yaml").write_text(
        GOOD + "  - name: bad\n    on: call\n    if: nosuch(\n    do: [hangup: {}]\n",
        encoding="utf-8",
    )
    caplog.set_level(logging.INFO, logger="router.engine")
    engine.request_reload()
    (task,) = engine._reloads
    await asyncio.wait_for(task, timeout=60)
    await engine._check_rule_files()  # the watcher's next tick
    reloads = engine.metrics.rule_reloads
    assert reloads.labels("refused")._value.get() == 1
    said = [r.getMessage() for r in caplog.records]
    assert sum("rule 'bad': invalid expression" in m for m in said) == 1
    assert not [m for m in said if "rule files changed" in m]
    # A file saved after that reload is the watcher's again.
    (folder / "a.yaml").write_text(GOOD.replace("default", "renamed"), encoding="utf-8")
    stat = (folder / "a.yaml").stat()
    os.utime(folder / "a.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    await engine._check_rule_files()
    assert reloads.labels("ok")._value.get() == 1
    assert [r.name for r in engine.rules.current.rules] == ["renamed"]
    await engine._check_rule_files()
    assert reloads.labels("ok")._value.get() == 1


async def test_a_sighup_after_the_watcher_reloaded_the_saved_file_says_unchanged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """hnew31's trial: a file saved, the watcher reloaded it, then the SIGHUP
    operations.md suggests reloaded and logged it again (two `reloaded N
    rules`), while the page says such a SIGHUP reloads (and logs) them once.
    Files byte for byte those of the rules in use are not loaded again."""
    folder = engine.rules.paths[0]
    reloads = engine.metrics.rule_reloads
    (folder / "a.yaml").write_text(GOOD.replace("default", "renamed"), encoding="utf-8")
    stat = (folder / "a.yaml").stat()
    os.utime(folder / "a.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    caplog.set_level(logging.INFO, logger="router.engine")
    await engine._check_rule_files()  # the watcher's tick
    in_use = engine.rules.current
    engine.request_reload()  # then the SIGHUP
    (task,) = engine._reloads
    assert await asyncio.wait_for(task, timeout=60) is in_use
    said = [r.getMessage() for r in caplog.records]
    assert [m for m in said if m.startswith(("reloaded", "rules unchanged"))] == [
        "reloaded 1 rule",
        "rules unchanged (1 rule)",
    ]
    assert engine.rules.current is in_use  # nothing swapped
    assert reloads.labels("ok")._value.get() == 1
    assert reloads.labels("unchanged")._value.get() == 1
    # Saved again without a change (a new mtime, the same bytes): the same.
    os.utime(folder / "a.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 20_000_000))
    await engine._check_rule_files()
    assert reloads.labels("unchanged")._value.get() == 2
    assert engine.rules.current is in_use


async def test_a_sighup_reloads_what_changed_in_a_list_file_or_after_a_refusal(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A changed list file is read again by a reload even when no rule file
    changed (a SIGHUP after editing it). A file fixed back to what the rules
    in use were loaded from, after a refused reload, is unchanged."""
    folder = engine.rules.paths[0]
    vip = folder / "lists" / "vip.txt"
    vip.parent.mkdir()
    vip.write_text("79161234567\n", encoding="utf-8")
    (folder / "a.yaml").write_text(
        "version: 1\nlists:\n  vip: {file: lists/vip.txt}\n" + GOOD.split("\n", 1)[1],
        encoding="utf-8",
    )
    await engine.reload_in_thread()  # the list file is named for the first time
    assert engine.rules.current.lists["vip"] == {"79161234567"}
    caplog.set_level(logging.INFO, logger="router.engine")
    caplog.clear()  # only what follows: the first reload's line may be there
    await engine.reload_in_thread()  # now it is known: unchanged
    vip.write_text("79161234567\n79161234568\n", encoding="utf-8")
    await engine.reload_in_thread()
    assert engine.rules.current.lists["vip"] == {"79161234567", "79161234568"}
    in_use = engine.rules.current
    good = (folder / "a.yaml").read_text(encoding="utf-8")
    (folder / "a.yaml").write_text(good + "  - name: [\n", encoding="utf-8")
    await engine.reload_in_thread()  # refused: the previous rules stay
    (folder / "a.yaml").write_text(good, encoding="utf-8")
    assert await engine.reload_in_thread() is in_use
    said = [r.getMessage() for r in caplog.records]
    assert [m for m in said if m.startswith(("reloaded", "rules unchanged", "rules not"))] == [
        "rules unchanged (1 rule)",
        "reloaded 1 rule",
        "rules not reloaded: 1 problem; keeping the previous 1 rule",
        "rules unchanged (1 rule)",
    ]


async def test_a_reload_that_finds_no_rule_file_keeps_the_rules_in_use(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """hops32's trial: the only rule file deleted, then SIGHUP: `reloaded 0 rules`
    at INFO, `/readyz` ready with `"rules": 0`, and every call to the default
    route. Refused as a broken file is; a file with `rules: []` still empties
    the set on purpose, and the file put back reloads."""
    folder = engine.rules.paths[0]
    reloads = engine.metrics.rule_reloads
    (folder / "a.yaml").unlink()
    caplog.set_level(logging.INFO, logger="router.engine")
    await engine.reload_in_thread()
    assert [r.name for r in engine.rules.current.rules] == ["default"]
    assert reloads.labels("refused")._value.get() == 1
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said[0].startswith(f"{folder}: no rule file (*.yaml, *.yml) here any more")
    assert said[-1] == "rules not reloaded: 1 problem; keeping the previous 1 rule"
    # operations.md quotes it for the shipped router.toml's `rules = ["rules"]`,
    # which the log names `rules` (hadmin41's trial: the docs said `rules/`)
    quoted = f"`{display_path(Path.cwd() / 'rules')}: {said[0][len(str(folder)) + 2 :]}"
    quoted = quoted.split(", where")[0] + ", ...`"
    for page in ("docs/operations.md", "docs/ru/operations.md"):
        assert quoted in (ROOT / page).read_text(encoding="utf-8"), page
    (folder / "a.yaml").write_text("version: 1\nrules: []\n", encoding="utf-8")
    await engine.reload_in_thread()
    assert engine.rules.current.rules == ()
    assert reloads.labels("ok")._value.get() == 1
    (folder / "a.yaml").unlink()
    await engine.reload_in_thread()  # nothing in use: nothing to keep
    assert reloads.labels("ok")._value.get() == 2


class _SlowToConfigure:
    """A plugin whose configure waits (a slow plugin start) and which
    registers a condition: registered twice into one registry, it is refused."""

    __name__ = "slow_to_configure"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    @hookimpl
    async def callrouter_configure(self) -> None:
        self.entered.set()
        await self.release.wait()

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        registry.add_function("slow_plugin_fn", lambda: True)


async def test_a_sighup_while_the_plugins_configure_is_applied_after_the_setup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGHUP while callrouter was still starting (a plugin's configure
    under way, no rules loaded yet) reloaded at once: it registered the plugins
    into a registry of its own and swapped in its rule book, and the start then
    registered them into that book's registry a second time and refused to
    start. The reload waits for the start's setup and runs after it (issue 16)."""
    caplog.set_level(logging.INFO)
    write_config(tmp_path)
    slow = _SlowToConfigure()
    engine = Engine(
        load_config(tmp_path / "router.toml"),
        client=_NoAsterisk(),  # type: ignore[arg-type]
        plugins=Plugins.load(entry_points=False, extra=[slow]),
        options=EngineOptions(watch_interval=0),
    )
    setup = asyncio.ensure_future(engine.setup())
    await asyncio.wait_for(slow.entered.wait(), 10)
    engine.request_reload()  # the SIGHUP, mid-start
    engine.request_reload()  # and another: one reload after the start
    if engine._reloads:  # as before: the reload ran during the start
        await asyncio.wait_for(asyncio.gather(*engine._reloads), 60)
    slow.release.set()
    loaded = await asyncio.wait_for(setup, 60)
    assert engine.setup_problems == ()
    assert [r.name for r in loaded.rules] == ["default"]
    assert engine.rules.current is loaded
    assert "slow_plugin_fn" in engine.registry.functions
    assert any("SIGHUP while callrouter is starting" in m for m in caplog.messages)
    # Applied once the start has loaded the rules: one reload, finding them unchanged.
    (task,) = engine._reloads
    assert await asyncio.wait_for(task, 60) is loaded
    assert "rules unchanged (1 rule)" in caplog.messages
