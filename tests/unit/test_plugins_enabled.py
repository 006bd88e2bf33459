"""``[plugins] enabled`` and ``disabled`` are honoured (issue 11 item 14): only the
listed installed plugins load, built-ins always; an unknown name is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import Config, load_config
from router.engine import Engine
from router.errors import ConfigError
from router.plugins import Plugins
from tests.unit.test_plugin_loading import Counter, FakeEntryPoint

BUILTINS = {
    "timefuncs",
    "numbers",
    "textfuncs",
    "actions",
    "directory",
    "extension_state",
    "ami_catalog",
    "recordings",
}


@pytest.fixture(autouse=True)
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two installed plugins, 'onec' and 'crm', whatever this machine has."""
    monkeypatch.setattr(
        "router.plugins.metadata.entry_points",
        lambda group: [FakeEntryPoint("onec", Counter()), FakeEntryPoint("crm", Counter())],
    )


def config(tmp_path: Path, plugins: str) -> Config:
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\nusername = "u"\n'
        f'secret = "s"\n[plugins]\n{plugins}'
    )
    return load_config(path)


def names(plugins: Plugins) -> set[str]:
    return {info.name for info in plugins.info()}


def test_enabled_loads_only_the_listed_plugins_and_every_builtin(tmp_path: Path) -> None:
    loaded = names(Plugins.for_config(config(tmp_path, 'enabled = ["onec"]\n')))
    assert loaded == BUILTINS | {"onec"}


def test_empty_enabled_loads_every_installed_plugin(tmp_path: Path) -> None:
    assert names(Plugins.for_config(config(tmp_path, ""))) == BUILTINS | {"onec", "crm"}


def test_disabled_wins_over_enabled_defaults_and_can_drop_a_builtin(tmp_path: Path) -> None:
    loaded = names(Plugins.for_config(config(tmp_path, 'disabled = ["crm", "directory"]\n')))
    assert loaded == (BUILTINS - {"directory"}) | {"onec"}


def test_the_engine_loads_what_router_toml_selects(tmp_path: Path) -> None:
    engine = Engine(config(tmp_path, 'enabled = ["crm"]\n'))
    assert names(engine.plugins) == BUILTINS | {"crm"}


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (
            'enabled = ["onc"]\n',
            "6: [plugins] enabled: 'onc' is no plugin here (did you mean 'onec'?); known: actions, "
            "ami_catalog, crm, directory, extension_state, numbers, onec, recordings, textfuncs, "
            "timefuncs "
            "(callrouter plugins lists them)",
        ),
        (
            '# what not to load\nenabled = []\n\ndisabled = [\n  "timefunc",\n]\n',
            "9: [plugins] disabled: 'timefunc' is no plugin here (did you mean 'timefuncs'?)",
        ),
        (
            'enabled = []\n[plugins.numbrs]\ncountry_code = "7"\n',
            "7: [plugins.numbrs]: no plugin 'numbrs' is installed (did you mean 'numbers'?)",
        ),
    ],
)
def test_unknown_names_are_errors_with_did_you_mean(
    tmp_path: Path, plugins: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Plugins.for_config(config(tmp_path, plugins))
    # router.toml:LINE: where the name or the table is written.
    assert str(info.value).startswith(f"{tmp_path / 'router.toml'}:{message}")
