"""docs/reference/config.md (and its Russian page) stay in step with router.toml's
readers: every key the code reads has a row, every row is a key the code reads.

Built-in plugins declare their keys in ``SETTINGS`` and refuse any other (so
the tuple is what the code reads); ``[asterisk]``, ``[router]`` and
``[plugins]`` are ``router.config``'s own lists. The 1C plugin's table is
kept in step with docs/onec.md by plugins/onec/tests/test_onec_docs.py.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from pathlib import Path

import pytest

from router import config as config_module
from router.api import settings as api_settings
from router.calllife import settings as history_settings
from router.config import load_config
from router.errors import ConfigError
from router.plugins import DEFAULT_PLUGINS, Plugins
from router.recordings import settings as recordings_settings

REPO = Path(__file__).parents[2]
PAGES = [
    REPO / "docs" / "reference" / "config.md",
    REPO / "docs" / "ru" / "reference" / "config.md",
]


def builtin_tables() -> dict[str, tuple[str, ...]]:
    """Built-in plugin name -> the keys of its table (only those with a table)."""
    tables: dict[str, tuple[str, ...]] = {}
    for dotted in DEFAULT_PLUGINS:
        module = importlib.import_module(dotted)
        plugin = module.make_plugin() if hasattr(module, "make_plugin") else module
        configure = getattr(plugin, "callrouter_configure", None)
        reads_table = (
            configure is not None and "settings" in inspect.signature(configure).parameters
        )
        settings = getattr(module, "SETTINGS", None)
        if reads_table:
            assert settings, f"{dotted} reads [plugins.NAME] but declares no SETTINGS"
        if settings:
            tables[dotted.rsplit(".", 1)[-1]] = settings
    return tables


def sections(page: Path) -> dict[str, set[str]]:
    """``## `[table]` `` heading -> the first-column keys of the table below it."""
    found: dict[str, set[str]] = {}
    current: str | None = None
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `\[([a-z_.]+)\]`", line.strip())
        if heading:
            current = heading.group(1)
            found[current] = set()
            continue
        if current and line.startswith("| `"):
            found[current].update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return found


def expected() -> dict[str, set[str]]:
    out = {section: set(keys) for section, keys in config_module._KEYS.items()}
    out["api"] = set(api_settings._KEYS)  # read by router.api.settings.read_api
    out["recordings"] = set(recordings_settings.KEYS)  # router.recordings.settings
    out["history"] = set(history_settings.KEYS)  # router.calllife.settings
    out.update({f"plugins.{name}": set(keys) for name, keys in builtin_tables().items()})
    return out


def test_the_builtin_tables_are_found() -> None:
    assert set(builtin_tables()) == {"timefuncs", "numbers", "directory", "extension_state"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_key_is_documented_and_every_documented_key_exists(page: Path) -> None:
    documented = sections(page)
    assert documented == expected()


@pytest.mark.parametrize(("name", "keys"), sorted(builtin_tables().items()))
def test_builtins_refuse_keys_they_do_not_declare(
    tmp_path: Path, name: str, keys: tuple[str, ...]
) -> None:
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1/asterisk"\nusername = "u"\n'
        f'secret = "s"\n[plugins.{name}]\nnot_a_key = 1\n'
    )
    plugins = Plugins.load(entry_points=False)
    with pytest.raises(ConfigError, match=r"not_a_key"):
        asyncio.run(plugins.configure(load_config(path)))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_index_and_the_example_point_here() -> None:
    assert "reference/config.md" in (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    assert "docs/reference/config.md" in (REPO / "examples" / "router.toml").read_text(
        encoding="utf-8"
    )


def test_the_example_says_the_tls_keys_serve_tls_urls_too() -> None:
    """examples/router.toml said its TLS keys were for an https:// url only:
    an administrator setting up tls:// (native AMI over TLS) read that
    verify was not for them, and met the untrusted-certificate error."""
    text = (REPO / "examples" / "router.toml").read_text(encoding="utf-8")
    head = text[text.index("# TLS (") : text.index("# verify = true")]
    assert "tls://" in head, head
