"""The plugin asks the engine to lock ``[plugins.onec] state_dir`` as ``callrouter
run`` locks ``[router] state_dir``: two routers with state folders of their own
but this one in common both wrote its queue of events to 1C (issue 16). The
lock itself, with real engines: tests/unit/test_plugin_state_lock.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrouter_onec.double import DEFAULT_USER, OneCDouble
from callrouter_onec.plugin import OneCPlugin
from router import ConfigError
from router.testing import StubEngine, config_from_toml

#: The double's password (conftest.py's ``double`` fixture).
PASSWORD = "пароль-secret"


async def test_the_plugin_asks_for_its_own_folder_only(double: OneCDouble, tmp_path: Path) -> None:
    """No own state_dir: the queue is in [router] state_dir, which run locks."""
    text = (
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "x"\n[router]\nstate_dir = "state"\n[plugins.onec]\n'
        f'url = "{double.url}"\nusername = "{DEFAULT_USER}"\npassword = "{PASSWORD}"\n'
        "ping_interval = 0\n"
    )
    key = ("plugins", "onec", "state_dir")
    for extra, held in (("", []), ('state_dir = "onec"\n', [(tmp_path / "onec", key)])):
        config = config_from_toml(tmp_path, text + extra)
        plugin = OneCPlugin()
        plugin.callrouter_configure(config, config.plugins.for_plugin("onec"))
        engine = StubEngine(tmp_path / "state", config=config)
        await plugin.callrouter_startup(engine)  # type: ignore[arg-type]
        await plugin.callrouter_shutdown(engine)  # type: ignore[arg-type]
        assert engine.held == held


async def test_the_plugin_gives_its_folder_to_lock_before_the_login(
    double: OneCDouble, tmp_path: Path
) -> None:
    """callrouter_state_folders: its own folder, made 0700, with its key, for
    the engine to lock before it logs in; none without one, none in shadow
    mode (no queue is written), and a folder others can write in refused."""
    text = (
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "x"\n[router]\nstate_dir = "state"\n[plugins.onec]\n'
        f'url = "{double.url}"\nusername = "{DEFAULT_USER}"\npassword = "{PASSWORD}"\n'
    )
    key = ("plugins", "onec", "state_dir")
    plugin = OneCPlugin()
    config = config_from_toml(tmp_path, text)
    plugin.callrouter_configure(config, config.plugins.for_plugin("onec"))
    assert await plugin.callrouter_state_folders(shadow=False) == []
    config = config_from_toml(tmp_path, text + 'state_dir = "onec"\n')
    plugin.callrouter_configure(config, config.plugins.for_plugin("onec"))
    own = tmp_path / "onec"
    assert await plugin.callrouter_state_folders(shadow=True) == []
    assert not own.exists()
    assert await plugin.callrouter_state_folders(shadow=False) == [(own, key)]
    assert own.stat().st_mode & 0o777 == 0o700
    own.chmod(0o777)
    with pytest.raises(ConfigError, match=r"router.toml:\d+: \[plugins.onec\] state_dir: "):
        await plugin.callrouter_state_folders(shadow=False)
