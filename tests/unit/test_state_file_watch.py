"""State files deleted or replaced while ``callrouter run`` runs (router/state_file_watch.py).

The API's event feed (``api-events.sqlite3``) and the recordings catalog
(``recordings.sqlite``) deleted or copied over while the service ran were
silent: SQLite went on with the file it had open, and the next start lost its
events or the catalog with no word (issue 16). A file with no way back is said
once, a WARNING naming the file and the loss; the feed and the catalog are now
written back (tests/unit/test_state_file_write_back.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import pytest

from router.api.feed import FILENAME
from router.api.settings import ApiSettings
from router.state_file_watch import StateFileWatch, WatchedFile

if TYPE_CHECKING:
    from router.testing import EngineFactory

pytest_plugins = ["router.testing"]

RULES = "version: 1\nrules: []\n"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_deleted_file_is_said_once_naming_it_and_the_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "recordings.sqlite"
    path.write_bytes(b"catalog")
    watch = StateFileWatch([WatchedFile(path, "the recordings catalog")])
    assert watch.check() == 0
    path.unlink()
    assert watch.check() == 1
    assert watch.check() == 0  # once
    (said,) = warnings(caplog)
    assert said.startswith(f"{path} was deleted while callrouter ran: ")
    assert "loses the recordings catalog" in said


def test_a_file_copied_over_is_said_as_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / FILENAME
    path.write_bytes(b"feed")
    watch = StateFileWatch([WatchedFile(path, "the API's event feed")])
    backup = tmp_path / "backup"
    backup.write_bytes(b"older feed")
    backup.replace(path)
    assert watch.check() == 1
    assert watch.check() == 0
    (said,) = warnings(caplog)
    assert said.startswith(f"{path} was replaced while callrouter ran: ")


def test_a_file_not_in_use_is_not_watched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Left by an earlier run with [recordings] on; off now: it may go.
    path = tmp_path / "recordings.sqlite"
    path.write_bytes(b"catalog")
    watch = StateFileWatch([WatchedFile(path, "the recordings catalog", opened=lambda: False)])
    path.unlink()
    assert watch.check() == 0
    assert not warnings(caplog)


def test_a_file_that_cannot_be_looked_at_is_said_so_not_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: EACCES from ``stat`` (a ``chmod`` of the state folder) was said as
    "deleted", naming a loss that had not happened."""
    path = tmp_path / "recordings.sqlite"
    path.write_bytes(b"catalog")
    watch = StateFileWatch([WatchedFile(path, "the recordings catalog")])
    real = os.stat

    def stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if os.fspath(target) == os.fspath(path):  # type: ignore[call-overload]
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(target, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patched:
        patched.setattr(os, "stat", stat)
        assert watch.check() == 1
        assert watch.check() == 0  # once
    assert watch.check() == 0  # in sight again, the same file
    (said,) = warnings(caplog)
    assert said.startswith(f"{path} cannot be looked at: Permission denied; ")
    assert "deleted" not in said
    path.unlink()
    assert watch.check() == 1  # a deletion after it is still said
    assert warnings(caplog)[-1].startswith(f"{path} was deleted while callrouter ran: ")


async def test_the_running_engine_writes_its_feed_file_back_and_says_it(
    engine_factory: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    engine = await engine_factory(rules, api=ApiSettings(tokens=MappingProxyType({}), port=0))
    path = engine.state_dir / FILENAME
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.05)
    assert path.exists()
    job = engine.scheduler.get_job("callrouter-state-files")
    assert job is not None
    await asyncio.sleep(0.2)
    await job.func()  # the next look, due every 5 s
    path.unlink()
    await asyncio.to_thread(lambda: None)
    await job.func()
    said = [w for w in warnings(caplog) if "while callrouter ran" in w]
    assert len(said) == 1, said
    assert said[0].startswith(f"{path} was deleted while callrouter ran: ")
    # Written back from the open file now, no longer only said (hleft35).
    assert "written again from the open file" in said[0]
    assert path.exists()
