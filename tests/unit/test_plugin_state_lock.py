"""A plugin's own state folder (``[plugins.onec] state_dir``) is locked as
``callrouter run`` locks ``[router] state_dir`` (``EngineAPI.hold_state_folder``):
two routers with state folders of their own but this one in common both wrote
the 1C plugin's queue of events (issue 16)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from callrouter_onec.double import DEFAULT_USER, OneCDouble
from callrouter_onec.history import FILENAME

from router import ConfigError
from router.engine import EngineOptions
from router.errors import StateRestoreError
from router.statebackup import backup_state
from router.staterestore import restore_state
from router.testing import Engines, ReplayAsterisk
from tests.unit.state_lock import locking_engine

PASSWORD = "secret"

#: As ``callrouter run`` makes its engine (the lock), on the fake Asterisk.
RUN = EngineOptions(lock_state_dir=True, watch_interval=0, live_heartbeat=0, check_privileges=False)


@pytest.fixture
def double() -> Iterator[OneCDouble]:
    with OneCDouble(password=PASSWORD) as running:
        yield running


@pytest.fixture
async def engine_factory(tmp_path: Path) -> AsyncIterator[Engines]:
    engines = Engines(ReplayAsterisk(), tmp_path / "routers")
    try:
        yield engines
    finally:
        await engines.close()


def onec(double: OneCDouble, own: Path) -> dict[str, object]:
    return {
        "url": double.url,
        "username": DEFAULT_USER,
        "password": PASSWORD,
        "ping_interval": 0,
        "state_dir": str(own),
    }


async def test_a_second_router_on_the_same_plugin_state_dir_refuses_to_start(
    double: OneCDouble, engine_factory: Engines, tmp_path: Path
) -> None:
    """Two routers, each its own [router] state_dir, one [plugins.onec]
    state_dir: the second refuses to start (a real start in this process),
    naming the key, the folder and who holds it; a restore into it is refused
    while the first runs, and it is free once the first has stopped."""
    own = tmp_path / "onec"
    first = await engine_factory(
        [], entry_points=True, settings={"onec": onec(double, own)}, options=RUN
    )
    assert (own / FILENAME).exists()
    with pytest.raises(ConfigError) as refused:
        await engine_factory(
            [], entry_points=True, settings={"onec": onec(double, own)}, options=RUN
        )
    said = str(refused.value)
    assert "[plugins.onec] state_dir: " in said, said
    assert f"{own} is in use by another `callrouter run`" in said, said
    assert f"pid {os.getpid()} (" in said, said
    assert first.state_dir != own
    # Its own [router] state_dir, held already, is no second lock (one
    # flock per folder: a second one in this process would be refused).
    first.api.hold_state_folder(first.state_dir, ("router", "state_dir"))
    first.api.hold_state_folder(own, ("plugins", "onec", "state_dir"))

    # `callrouter state restore --state-dir` into it is refused meanwhile.
    backup = tmp_path / "backup"
    list(backup_state(own, backup))
    with pytest.raises(StateRestoreError) as restoring:
        restore_state(backup, own)
    assert f"{own}: in use by a running `callrouter run` (pid {os.getpid()} (" in str(
        restoring.value
    )

    # Stopped, the folder is free for the next router.
    first.request_stop()
    await engine_factory.close()
    third = await engine_factory(
        [], entry_points=True, settings={"onec": onec(double, own)}, options=RUN
    )
    assert third.state_dir != first.state_dir


async def test_the_second_router_refuses_before_it_logs_in_to_asterisk(
    double: OneCDouble, engine_factory: Engines, tmp_path: Path
) -> None:
    """The plugin's folder is locked before the login (callrouter_state_folders),
    not in callrouter_startup after it: the second router opened a second AMI
    session before refusing, which with allowmultiplelogin = no logs the
    first router's user out."""
    own = tmp_path / "onec"
    await engine_factory([], entry_points=True, settings={"onec": onec(double, own)}, options=RUN)
    replay = engine_factory.replay
    assert replay.count("Login") == 1
    with pytest.raises(ConfigError, match="is in use by another `callrouter run`"):
        await engine_factory(
            [], entry_points=True, settings={"onec": onec(double, own)}, options=RUN
        )
    assert replay.count("Login") == 1  # the second one's refused before its own


async def test_a_plugin_folder_open_to_other_users_refuses_the_start_before_the_login(
    double: OneCDouble, engine_factory: Engines, tmp_path: Path
) -> None:
    """The folder's own check runs where it is locked, before the login: a
    `[plugins.onec] state_dir` other users can write in was only logged as
    the plugin's crash in callrouter_startup, and the router routed on with
    the 1C plugin unstarted. Now the start is refused, naming the key."""
    own = tmp_path / "onec"
    own.mkdir()
    own.chmod(0o777)
    with pytest.raises(ConfigError) as refused:
        await engine_factory(
            [], entry_points=True, settings={"onec": onec(double, own)}, options=RUN
        )
    assert "[plugins.onec] state_dir: " in str(refused.value)
    assert "writable by its group and every user (mode 0777)" in str(refused.value)
    assert engine_factory.replay.count("Login") == 0
    assert list(own.iterdir()) == []


async def test_the_refused_start_is_said_once_without_a_plugin_traceback(
    double: OneCDouble,
    engine_factory: Engines,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """hnewuser46's trial: the second router's refusal was logged first as
    the plugin's crash (`ERROR router.plugins: plugin 'onec' failed in
    callrouter_startup: ConfigError(...)` and a traceback through the engine),
    then said again as `callrouter run: error: ...`: a user's setting, not
    the plugin's bug, said once, by the start."""
    own = tmp_path / "onec"
    await engine_factory([], entry_points=True, settings={"onec": onec(double, own)}, options=RUN)
    caplog.clear()
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as refused:
        await engine_factory(
            [], entry_points=True, settings={"onec": onec(double, own)}, options=RUN
        )
    assert f"{own} is in use by another `callrouter run`" in str(refused.value)
    told = [r for r in caplog.records if "is in use by another" in r.getMessage()]
    assert told == [], [r.getMessage() for r in told]
    assert [r for r in caplog.records if r.exc_info] == []


def test_a_plugin_folder_that_cannot_be_opened_is_a_config_error_naming_its_key(
    tmp_path: Path,
) -> None:
    """No traceback from a folder gone (or not listable): the start's error,
    naming the plugin's key."""
    engine = locking_engine(tmp_path, tmp_path / "state")
    engine._check_state_dir()
    try:
        with pytest.raises(ConfigError) as refused:
            engine.api.hold_state_folder(tmp_path / "gone", ("plugins", "onec", "state_dir"))
    finally:
        engine._unlock_state_dir()
    assert str(refused.value) == (
        f"{tmp_path / 'router.toml'}: [plugins.onec] state_dir: cannot open "
        f"{tmp_path / 'gone'} to lock it: No such file or directory; give the service's "
        "user a folder it may read and write (chmod 700)"
    )
