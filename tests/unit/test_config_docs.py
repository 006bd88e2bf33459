"""docs/reference/config.md (and its Russian page) stay in step with router.toml's
readers: every key the code reads has a row, every row is a key the code reads,
and the defaults and bounds the rows give are the code's.

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
import tomllib
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
            found[current].update(re.findall(r"`([a-z][a-z0-9_]*)`", line.split("|")[1]))
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


# -- the documented defaults and bounds are the code's ---------------------------

#: The least of each table the code needs to read it; a key of the table
#: under test is added to it.
_BASE = {
    "asterisk": 'url = "http://127.0.0.1:8088/asterisk"\nusername = "u"\nsecret = "s"\n',
    "recordings": 'dir = "/var/spool/asterisk/monitor"\n',
    "history": 'cel = "sqlite:///{folder}/cel.db"\n',  # a folder that exists
}
#: Keys that only one transport takes: read beside a url of that transport.
_URL_FOR = {"verify": "tls://127.0.0.1:5039", "ping_interval": "tcp://127.0.0.1:5038"}


def rows(page: Path) -> list[tuple[str, str, str, str]]:
    """(table, key, default cell, meaning cell) for every row of the page."""
    found = []
    current: str | None = None
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `\[([a-z_.]+)\]`", line.strip())
        if heading:
            current = heading.group(1)
        elif current and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            key = re.findall(r"`([a-z][a-z0-9_]*)`", cells[0])[0]
            found.append((current, key, cells[1], cells[2]))
    return found


def literal_defaults(page: Path) -> list[tuple[str, str, str]]:
    """(table, key, TOML value) of each row whose default is one TOML value
    (`` `5` ``, `` `"text"` ``, `` `["rules"]` ``); "required", "none" and
    defaults told in words are left out."""
    out = []
    for table, key, default, _ in rows(page):
        single = re.fullmatch(r"`([^`]+)`", default)
        if not single:
            continue
        try:
            tomllib.loads(f"v = {single.group(1)}")
        except tomllib.TOMLDecodeError:
            continue  # `dir`, `state_dir/recordings.key`: another key's value
        out.append((table, key, single.group(1)))
    return out


def documented_bounds(page: Path) -> list[tuple[str, str, int, int]]:
    """(table, key, low, high) of each "10 to 86400" ("10 до 86400") a row's
    meaning gives: both ends are allowed."""
    out = []
    for table, key, _, meaning in rows(page):
        for low, high in re.findall(r"(\d[\d,]*) (?:to|до) (\d[\d,]*)", meaning):
            out.append((table, key, int(low.replace(",", "")), int(high.replace(",", ""))))
    return out


def settings_with(tmp_path: Path, table: str, key: str, value: str | None = None) -> object:
    """What the code makes of router.toml with ``key = value`` (or without the
    key) in ``table``: the whole :class:`Config`, or for a plugin's table
    that plugin's state."""
    line = f"{key} = {value}\n" if value is not None else ""
    tables = dict(_BASE)
    if key in _URL_FOR and table == "asterisk":
        tables["asterisk"] = tables["asterisk"].replace(
            "http://127.0.0.1:8088/asterisk", _URL_FOR[key]
        )
    tables.setdefault(table, "")
    text = "".join(
        f"[{name}]\n{body.format(folder=tmp_path)}{line if name == table else ''}"
        for name, body in tables.items()
    )
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path, environ={})
    if not table.startswith("plugins."):
        return config
    plugins = Plugins.load(entry_points=False)
    asyncio.run(plugins.configure(config))
    return vars(plugins.pm.get_plugin(table.split(".", 1)[1]))


API_PAGES = [REPO / "docs" / "api.md", REPO / "docs" / "ru" / "api.md"]


def api_page_defaults(page: Path) -> list[tuple[str, str, str | None]]:
    """(``api``, key, TOML value or None) of each key of api.md's table of
    ``[api]`` keys; a row naming several keys gives a value for each
    (`` `rate`, `burst` `` | `` `20`, `2 × rate` ``), None where it is told."""
    text = page.read_text(encoding="utf-8")
    start = re.search(r"^\| (?:Key in|Ключ в) `\[api\]` \|", text, re.M)
    assert start, f"{page.name}: no table of [api] keys"
    out: list[tuple[str, str, str | None]] = []
    for line in text[start.start() :].split("\n\n", 1)[0].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        keys = re.findall(r"`([a-z][a-z0-9_]*)`", cells[0])
        values = [v.strip() for v in cells[1].split(",")] if len(keys) > 1 else [cells[1]]
        for key, value in zip(keys, values + [""] * len(keys), strict=False):
            single = re.fullmatch(r"`([^`]+)`", value)
            try:
                literal = single.group(1) if single else None
                if literal is not None:
                    tomllib.loads(f"v = {literal}")
            except tomllib.TOMLDecodeError:
                literal = None
            out.append(("api", key, literal))
    return out


@pytest.mark.parametrize("page", API_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_api_md_s_table_of_keys_is_the_code_s(page: Path, tmp_path: Path) -> None:
    """docs/api.md repeats the main ``[api]`` keys: each is a key the code
    reads, with the code's default."""
    rows = api_page_defaults(page)
    unknown = [key for _, key, _ in rows if key not in expected()["api"]]
    assert not unknown, f"{page.relative_to(REPO)}: no [api] key {unknown}"
    given = [(table, key, value) for table, key, value in rows if value is not None]
    assert len(given) >= 5
    left_out = settings_with(tmp_path, "api", "listen")
    wrong = [
        f"{key} = {value}"
        for table, key, value in given
        if settings_with(tmp_path, table, key, value) != left_out
    ]
    assert not wrong, f"{page.relative_to(REPO)}: not the defaults: {wrong}"


def test_the_defaults_and_bounds_are_found() -> None:
    defaults = literal_defaults(PAGES[0])
    assert ("asterisk", "connect_timeout", "5") in defaults
    assert ("plugins.numbers", "exit_prefixes", '["810", "00"]') in defaults
    assert ("api", "ui_session", 60, 86400) in documented_bounds(PAGES[0])
    for page in PAGES:
        assert len(literal_defaults(page)) >= 50
        assert len(documented_bounds(page)) >= 7


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_default_is_the_code_s(page: Path, tmp_path: Path) -> None:
    """Writing a key with the default the page gives changes nothing: the
    page's default is the one the code uses when the key is left out."""
    wrong = []
    for table, key, value in literal_defaults(page):
        left_out = settings_with(tmp_path, table, key)
        try:
            written = settings_with(tmp_path, table, key, value)
        except ConfigError as exc:
            wrong.append(f"[{table}] {key} = {value}: refused: {exc}")
            continue
        if written != left_out:
            wrong.append(f"[{table}] {key} = {value}: not the default")
    assert not wrong, f"{page.relative_to(REPO)}: " + "; ".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_bound_is_the_code_s(page: Path, tmp_path: Path) -> None:
    """A bound "60 to 86400" means 60 and 86400 are taken, 59 and 86401 refused
    (`ui_session = 60` and `originate_timeout = 1` were refused, issue 16)."""
    wrong = []
    for table, key, low, high in documented_bounds(page):
        for value, allowed in ((low, True), (high, True), (low - 1, False), (high + 1, False)):
            try:
                settings_with(tmp_path, table, key, str(value))
            except ConfigError as exc:
                if allowed:
                    wrong.append(f"[{table}] {key} = {value}: refused: {exc}")
            else:
                if not allowed:
                    wrong.append(f"[{table}] {key} = {value}: taken")
    assert not wrong, f"{page.relative_to(REPO)} gives bounds the code does not keep: " + (
        "; ".join(wrong)
    )
