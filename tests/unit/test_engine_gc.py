"""``callrouter run`` freezes what start built out of the cyclic collector's way
(EngineOptions.freeze_gc), and a reload thaws, collects and freezes again."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from router.cli import main
from router.commands import run as run_command
from router.engine import EngineOptions

if TYPE_CHECKING:
    from router.testing import EngineFactory

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: everyone
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""


@pytest.fixture
def thawed() -> Iterator[None]:
    """The test suite's process must not keep anything frozen."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_start_freezes_and_a_reload_frees_the_previous_rules(
    engine_factory: EngineFactory, tmp_path: Path, thawed: None
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    engine = await engine_factory(
        rules, options=EngineOptions(freeze_gc=True, watch_interval=0, live_heartbeat=0)
    )
    assert gc.get_freeze_count() > 0
    marker: list[Any] = []
    marker.append(marker)  # cyclic garbage made before the reload, then dropped
    del marker
    rules.write_text(RULES.replace('"101"', '"102"'), encoding="utf-8")
    engine.reload()
    assert gc.get_freeze_count() > 0
    assert gc.collect() == 0  # the reload collected; nothing left behind


async def test_engines_do_not_freeze_unless_asked(
    engine_factory: EngineFactory, tmp_path: Path, thawed: None
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    await engine_factory(rules)
    assert gc.get_freeze_count() == 0


def test_callrouter_run_asks_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    built: list[EngineOptions] = []

    class Recorder:
        def __init__(self, config: object, *, options: EngineOptions) -> None:
            built.append(options)

    def no_loop(coro: Any) -> int:
        coro.close()
        return 0

    monkeypatch.setattr(run_command, "Engine", Recorder)
    monkeypatch.setattr(run_command.asyncio, "run", no_loop)
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\nsecret = "x"\n',
        encoding="utf-8",
    )
    config.chmod(0o600)
    assert main(["run", "--config", str(config)]) == 0
    assert [o.freeze_gc for o in built] == [True]


def test_callrouter_run_logs_records_without_thread_process_or_caller(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The per-record lookups neither format prints are off in the service
    (every decision is a line), and a line still reads as before."""
    import logging

    from router.commands.run import setup_logging

    for name in ("logThreads", "logProcesses", "logMultiprocessing", "_srcfile"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored after
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    setup_logging("text", "INFO")
    assert (logging.logThreads, logging.logProcesses, logging.logMultiprocessing) == (
        False,
        False,
        False,
    )
    assert logging._srcfile is None
    record = logging.getLogger("router.decision").makeRecord(
        "router.decision", logging.INFO, "x.py", 1, "call %s", ("1.1",), None
    )
    assert record.thread is None
    assert record.processName is None
    logging.getLogger("router.decision").info("call %s from %s", "1.1", "\x1b[31m")
    line = capsys.readouterr().err.strip()
    assert line.endswith("INFO router.decision: call 1.1 from \\x1b[31m")
