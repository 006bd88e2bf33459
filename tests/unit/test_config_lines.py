"""Configuration errors name the line (router/config_lines.py): tomllib gives
no positions, so ``router.toml: [asterisk] url: ...`` left the administrator
to find the key; rule files already said ``rules/sales.yaml:12``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from router.builtin.timefuncs import rules_timezone
from router.config import SettingsReader, load_config
from router.config_lines import key_lines
from router.errors import ConfigError

TRICKY = '''# a comment with url = "x"
[asterisk]
url = "tcp://127.0.0.1:5038"   # trailing: secret = 1
'username' = 'router'
"secret_env" = "PBX"

[router]
rules = [
  "rules/a.yaml",  # shadow = true
  "rules/b.yaml",
]
note = """
shadow = "a key inside a string"
[not.a.table]
"""
raw = \'\'\'
state_dir = 'also text'
\'\'\'
shadow = false

[api.tokens."crm.one"]
hash = "sha256:ab"
allow = ["calls:read", "x=y"]

[plugins]
onec = { url = "http://1c/hs", timeout = 2, nested = { a = 1 } }
x.y.z = 1
escaped = "a \\" quote = 5"
'''


def test_every_key_and_header_is_on_its_line_and_text_is_no_key() -> None:
    tomllib.loads(TRICKY)  # valid TOML, as load_config has it
    lines = key_lines(TRICKY)
    assert lines[("asterisk",)] == 2
    assert lines[("asterisk", "url")] == 3
    assert lines[("asterisk", "username")] == 4
    assert lines[("asterisk", "secret_env")] == 5
    assert lines[("router", "rules")] == 8
    assert lines[("router", "note")] == 12
    assert lines[("router", "raw")] == 16
    assert lines[("router", "shadow")] == 19  # not line 13, inside the string
    assert ("router", "state_dir") not in lines
    assert ("not",) not in lines
    assert lines[("api",)] == lines[("api", "tokens")] == 21
    assert lines[("api", "tokens", "crm.one", "allow")] == 23
    assert lines[("plugins", "onec", "timeout")] == 26
    assert lines[("plugins", "onec", "nested", "a")] == 26
    assert lines[("plugins", "x", "y", "z")] == 27
    assert lines[("plugins", "escaped")] == 28
    assert ("asterisk", "secret") not in lines  # in a comment


def test_a_key_written_twice_in_two_tables_has_each_its_own_line() -> None:
    text = '[asterisk]\nurl = "a"\n[plugins.onec]\nurl = "b"\n'
    lines = key_lines(text)
    assert (lines[("asterisk", "url")], lines[("plugins", "onec", "url")]) == (2, 4)


def test_what_it_cannot_follow_gets_no_line_never_a_wrong_one() -> None:
    text = '[asterisk]\nurl = "a"\n[[hooks]]\nname = "x"\n[router]\nshadow = true\n'
    lines = key_lines(text)
    assert lines[("asterisk", "url")] == 2
    assert ("hooks", "name") not in lines  # an array of tables: one key, many lines
    assert lines[("router", "shadow")] == 6
    # A shape it does not know stops it: what came before keeps its line.
    assert key_lines('[asterisk]\nurl = "a"\n= 5\nusername = "u"\n') == {
        ("asterisk",): 1,
        ("asterisk", "url"): 2,
    }


def test_an_array_of_tables_has_its_first_header_line_and_its_elements_none() -> None:
    text = (
        "[[hooks]]\nname = 'a'\n[hooks.sub]\nk = 1\n"  # lines 1-4: the first element
        "[[hooks]]\nname = 'b'\n"  # lines 5-6: the second
        "[router]\nshadow = true\n"
    )
    tomllib.loads(text)
    lines = key_lines(text)
    # "[hooks]: expected a table, got an array" names where the array starts,
    # not the line of [hooks.sub], which belongs to one element.
    assert lines[("hooks",)] == 1
    assert not any(path[:1] == ("hooks",) and len(path) > 1 for path in lines), lines
    assert lines[("router", "shadow")] == 8


def test_a_table_written_after_its_sub_table_has_its_own_header_line() -> None:
    text = "[api.tokens.crm]\nhash = 'x'\n\n[api]\nlisten = '127.0.0.1:8080'\n"
    tomllib.loads(text)
    lines = key_lines(text)
    # A key missing from [api] names [api]'s header, not [api.tokens.crm]'s.
    assert lines[("api",)] == 4
    assert lines[("api", "tokens")] == lines[("api", "tokens", "crm")] == 1


def test_a_date_and_time_apart_by_a_space_is_one_value() -> None:
    text = "[r]\nat = 1979-05-27 07:32:00\nlist = [1979-05-27 07:32:00Z, 07:32:00]\nk = 1\n"
    tomllib.loads(text)
    lines = key_lines(text)
    assert (lines[("r", "at")], lines[("r", "list")], lines[("r", "k")]) == (2, 3, 4)


def test_windows_line_ends_and_keys_split_by_spaces_around_dots() -> None:
    text = '[ plugins . "onec" ]\r\nurl = "x"\r\n  a . b = { c = 1 }\r\n'
    tomllib.loads(text)
    lines = key_lines(text)
    assert lines[("plugins", "onec")] == 1
    assert lines[("plugins", "onec", "url")] == 2
    assert lines[("plugins", "onec", "a", "b", "c")] == 3


def _error(tmp_path: Path, text: str, **overrides: object) -> str:
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    flat = {k.replace("__", "."): v for k, v in overrides.items()}
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides=flat, environ={})
    return str(caught.value)


BASE = '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "r"\nsecret = "s"\n'


def test_errors_name_the_line_of_the_key_of_a_sub_table_and_of_a_missing_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "router.toml"
    bad_token = BASE + '[api]\n\n[api.tokens.crm]\nhash = "sha256:' + "a" * 64 + '"\n'
    bad_token += 'allow = ["calls:creat"]\nextensions = ["1"]\n'
    assert _error(tmp_path, bad_token).startswith(f"{path}:9: [api.tokens.crm] allow: ")
    # A required key missing: the line of its table's header.
    missing = '# callrouter\n[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nsecret = "s"\n'
    assert _error(tmp_path, missing) == f"{path}:2: [asterisk] username: required"
    # An unknown section: its header's line.
    assert _error(tmp_path, BASE + "\n[plugin.onec]\nurl = 1\n").startswith(
        f"{path}:6: [plugin]: unknown section"
    )


def test_a_table_written_as_an_array_of_tables_names_its_first_header(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    message = _error(tmp_path, BASE + "\n[[router]]\nshadow = true\n[[router]]\n")
    assert message == (
        f"{path}:6: router: expected a [router] table, got list [{{'shadow': True}}, {{}}]"
    )


def test_a_value_from_the_command_line_is_named_as_such_not_by_a_line(tmp_path: Path) -> None:
    message = _error(tmp_path, BASE, asterisk__url="ftp://x")
    assert message.startswith("command line: [asterisk] url: ")


def test_a_key_the_command_line_replaces_is_given_no_line_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(BASE + "[plugins.timefuncs]\ntimezone = 'Europe/Moskow'\n", encoding="utf-8")
    assert load_config(path, environ={}).where("plugins", "timefuncs", "timezone") == f"{path}:6"
    # The command line replaces the table (check --tz does): line 6 no longer
    # holds the value an error is about, and the command line does.
    overrides = {"plugins.timefuncs": {"timezone": "Mars/Base"}}
    config = load_config(path, overrides=overrides, environ={})
    assert config.where("plugins", "timefuncs", "timezone") == "command line"
    assert config.where("plugins", "enabled") == str(path)
    with pytest.raises(ConfigError) as caught:
        rules_timezone(config)
    assert str(caught.value).startswith(f"{path}: [plugins.timefuncs] timezone: unknown time zone")


def test_a_plugins_settings_reader_names_the_line_too(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(BASE + "[plugins.vip]\n\ncolour = 'blue'\n", encoding="utf-8")
    config = load_config(path, environ={})
    reader = SettingsReader.for_plugin("vip", config.plugins.for_plugin("vip"), config)
    with pytest.raises(ConfigError) as caught:
        reader.reject_unknown(("color",))
    assert str(caught.value).startswith(f"{path}:7: [plugins.vip] colour: unknown key")
    with pytest.raises(ConfigError) as caught:
        reader.string("greeting")
    assert str(caught.value) == f"{path}:5: [plugins.vip] greeting: required"
