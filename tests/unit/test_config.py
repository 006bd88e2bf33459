"""router.toml -> Config: every error names the file and the key."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.ami.http import ConnectionPool
from router.config import AsteriskSettings, Config, load_config
from router.errors import ConfigError

MINIMAL = """
[asterisk]
url = "http://127.0.0.1:8088/asterisk"
username = "router"
secret = "s3cret"
"""


def write(tmp_path: Path, text: str, name: str = "router.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(
    tmp_path: Path, text: str, *, env: dict[str, str] | None = None, **overrides: object
) -> Config:
    path = write(tmp_path, text)
    return load_config(
        path, overrides={k.replace("__", "."): v for k, v in overrides.items()}, environ=env or {}
    )


def error_of(
    tmp_path: Path, text: str, *, env: dict[str, str] | None = None, **overrides: object
) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env=env, **overrides)
    return str(info.value)


# -- the happy path ------------------------------------------------------------


async def reached(settings: AsteriskSettings) -> tuple[str, str, int]:
    """The endpoint, host and port of the client built from ``[asterisk]``: the one
    place that turns the url into where requests go (native HTTP, cookie auth)."""
    client = AJAMClient(ClientSettings.from_config(settings))
    try:
        pool = client.transport
        assert isinstance(pool, ConnectionPool)
        return client.endpoint, pool.host, pool.port
    finally:
        await client.aclose()


async def test_minimal_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    ast = cfg.asterisk
    assert ast.url == "http://127.0.0.1:8088/asterisk"
    assert await reached(ast) == ("http://127.0.0.1:8088/asterisk/rawman", "127.0.0.1", 8088)
    assert ast.username == "router"
    assert ast.secret == "s3cret"
    assert ast.secret_source.endswith("router.toml")
    assert (ast.auth, ast.format, ast.verify) == ("cookie", "rawman", True)
    assert (ast.connect_timeout, ast.request_timeout, ast.waitevent_timeout) == (5.0, 10.0, 20.0)
    assert cfg.router.rules == (tmp_path / "rules",)
    assert cfg.router.state_dir == tmp_path / "state"
    assert cfg.router.log_format == "text"
    assert cfg.router.shadow is False
    assert cfg.plugins.enabled == cfg.plugins.disabled == ()  # every plugin loads
    assert cfg.path == tmp_path / "router.toml"


def test_secret_is_not_in_repr(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    assert "s3cret" not in repr(cfg)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    with pytest.raises(AttributeError):
        cfg.asterisk.url = "http://elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.plugins.settings["x"] = {}  # type: ignore[index]


async def test_full_file(tmp_path: Path) -> None:
    ca = write(tmp_path, "CA", "ca.pem")
    write(tmp_path, "CERT", "client.pem")
    write(tmp_path, "KEY", "client.key")
    cfg = load(
        tmp_path,
        f"""
[asterisk]
url = "https://pbx.example:8089/"
username = "router"
secret_env = "PBX_SECRET"
auth = "digest"
format = "mxml"
verify = "{ca}"
client_cert = "client.pem"
client_key = "client.key"
connect_timeout = 2
request_timeout = 7.5
waitevent_timeout = 30

[router]
rules = ["rules", "/etc/callrouter/rules.d"]
state_dir = "/var/lib/callrouter"
log_format = "json"
shadow = true

[plugins]
enabled = ["onec", "worktime"]
disabled = ["lists"]

[plugins.onec]
url = "http://1c.example/hs/callrouter"
timeout = 1.5
[plugins.onec.cache]
ttl = 60
""",
        env={"PBX_SECRET": "from-env"},
    )
    ast = cfg.asterisk
    assert ast.url == "https://pbx.example:8089"
    assert (ast.auth, ast.format) == ("digest", "mxml")
    # Digest runs over httpx; the CA and certificate above are not real ones.
    client = AJAMClient(
        ClientSettings.from_config(
            dataclasses.replace(ast, verify=False, client_cert=None, client_key=None)
        )
    )
    assert client.endpoint == "https://pbx.example:8089/amxml"
    await client.aclose()
    assert (ast.secret, ast.secret_source) == ("from-env", "env:PBX_SECRET")
    # The client names it when Asterisk refuses the login.
    assert ClientSettings.from_config(ast).secret_source == "env:PBX_SECRET"
    assert ast.verify == ca
    assert ast.client_cert == tmp_path / "client.pem"
    assert ast.client_key == tmp_path / "client.key"
    assert (ast.connect_timeout, ast.request_timeout, ast.waitevent_timeout) == (2.0, 7.5, 30.0)
    assert cfg.router.rules == (tmp_path / "rules", Path("/etc/callrouter/rules.d"))
    assert cfg.router.state_dir == Path("/var/lib/callrouter")
    assert cfg.router.log_format == "json"
    assert cfg.router.shadow is True
    # What loads from these is Plugins.for_config's (tests/unit/test_plugins_enabled.py).
    assert cfg.plugins.enabled == ("onec", "worktime")
    assert cfg.plugins.disabled == ("lists",)
    onec = cfg.plugins.for_plugin("onec")
    assert onec["url"] == "http://1c.example/hs/callrouter"
    assert onec["cache"] == {"ttl": 60}
    assert cfg.plugins.for_plugin("missing") == {}


async def test_https_default_port(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL.replace("http://127.0.0.1:8088", "https://pbx"))
    assert await reached(cfg.asterisk) == ("https://pbx/asterisk/rawman", "pbx", 443)


def test_verify_false(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL.replace("http://", "https://") + "verify = false\n")
    assert cfg.asterisk.verify is False


def test_rules_may_be_one_string(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + '[router]\nrules = "my-rules"\n')
    assert cfg.router.rules == (tmp_path / "my-rules",)


def test_state_dir_from_systemd(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, env={"STATE_DIRECTORY": "/var/lib/callrouter"})
    assert cfg.router.state_dir == Path("/var/lib/callrouter")


# -- secrets -------------------------------------------------------------------


def test_secret_and_secret_env_together_is_an_error(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL + 'secret_env = "X"\n', env={"X": "y"})
    assert (
        msg == f"{tmp_path / 'router.toml'}:5: [asterisk] secret: "
        "give either secret or secret_env, not both"
    )


def test_secret_env_unset(tmp_path: Path) -> None:
    text = MINIMAL.replace('secret = "s3cret"', 'secret_env = "PBX_SECRET"')
    msg = error_of(tmp_path, text)
    assert msg.startswith(
        f"{tmp_path / 'router.toml'}:5: [asterisk] secret_env: "
        "the environment variable it names is not set or empty"
    )
    assert "PBX_SECRET" not in msg


def test_secret_env_unset_names_callrouters_own_default(tmp_path: Path) -> None:
    """CALLROUTER_SECRET is callrouter's name, not one typed in: it is said."""
    text = MINIMAL.replace('secret = "s3cret"', 'secret_env = "CALLROUTER_SECRET"')
    msg = error_of(tmp_path, text)
    assert msg.endswith(
        "[asterisk] secret_env: environment variable CALLROUTER_SECRET is not set or empty"
    )


def test_secret_env_unset_does_not_echo_a_name_that_may_be_the_secret(tmp_path: Path) -> None:
    """``secret_env = "hunter"``: letters only, so a valid name, but variables
    are named in upper case by convention and this one is likely the secret
    itself pasted; the error said "environment variable hunter is not set"."""
    text = MINIMAL.replace('secret = "s3cret"', 'secret_env = "hunter"')
    msg = error_of(tmp_path, text)
    assert "hunter" not in msg
    assert msg.startswith(f"{tmp_path / 'router.toml'}:")
    assert "[asterisk] secret_env: the environment variable it names is not set or empty" in msg
    assert "put the secret in the environment" in msg
    # A lower-case name that is set is a name, and works.
    cfg = load(tmp_path, text, env={"hunter": "s3cret"})
    assert (cfg.asterisk.secret, cfg.asterisk.secret_source) == ("s3cret", "env:hunter")


def test_no_secret_anywhere(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL.replace('secret = "s3cret"', ""))
    assert "[asterisk] secret: required" in msg
    assert "CALLROUTER_SECRET" in msg
    # The command line refuses --secret (router/commands/_connect.py): name the flag it takes.
    assert "pass --secret-env NAME" in msg
    assert "--secret," not in msg


def test_the_example_and_the_docstring_name_the_secret_flag_the_command_line_takes() -> None:
    import router.config

    example = (Path(__file__).parents[2] / "examples" / "router.toml").read_text("utf-8")
    for text in (example, router.config.__doc__ or ""):
        assert re.search(r"--secret(?!-env)", text.replace("refuses ``--secret``", "")) is None
    assert "--secret-env NAME wins" in example


def test_callrouter_secret_is_the_fallback(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, MINIMAL.replace('secret = "s3cret"', ""), env={"CALLROUTER_SECRET": "fallback"}
    )
    assert (cfg.asterisk.secret, cfg.asterisk.secret_source) == (
        "fallback",
        "env:CALLROUTER_SECRET",
    )


def test_file_secret_beats_fallback(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, env={"CALLROUTER_SECRET": "fallback"})
    assert cfg.asterisk.secret == "s3cret"


@pytest.mark.parametrize(
    "pasted", ["HUNTER2", "QWERTY", "X7K2P9", "QWERTY_123", "PBX_SECRET", "_AMI_SECRET_2"]
)
def test_secret_env_unset_never_echoes_the_name(tmp_path: Path, pasted: str) -> None:
    """An all-capitals password pasted into ``secret_env`` is a valid name,
    and so is one with ``_`` in it (``QWERTY_123``): no spelling tells a
    password from a variable's name, so the error names the file, the table
    and the key, never the value (issue 16)."""
    text = MINIMAL.replace('secret = "s3cret"', f'secret_env = "{pasted}"')
    msg = error_of(tmp_path, text)
    assert pasted not in msg
    assert msg.startswith(
        f"{tmp_path / 'router.toml'}:5: [asterisk] secret_env: "
        "the environment variable it names is not set or empty"
    )


def test_secret_env_from_the_command_line_unset_is_not_echoed(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL, asterisk__secret_env="QWERTY_123")
    assert "QWERTY_123" not in msg
    assert msg.startswith("command line: [asterisk] secret_env: the environment variable it names")


def test_command_line_secret_beats_secret_env(tmp_path: Path) -> None:
    text = MINIMAL.replace('secret = "s3cret"', 'secret_env = "UNSET"')
    cfg = load(tmp_path, text, asterisk__secret="flag")
    assert (cfg.asterisk.secret, cfg.asterisk.secret_source) == ("flag", "command line")


# -- overrides and a missing file ----------------------------------------------


def test_overrides_win(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL,
        asterisk__url="http://10.0.0.5:8088/ast",
        asterisk__username="other",
        router__shadow=True,
        asterisk__format=None,
    )
    assert cfg.asterisk.url == "http://10.0.0.5:8088/ast"
    assert cfg.asterisk.username == "other"
    assert cfg.router.shadow is True
    assert cfg.asterisk.format == "rawman"  # None means "flag not given"


def test_missing_file_with_overrides(tmp_path: Path) -> None:
    cfg = load_config(
        tmp_path / "absent.toml",
        environ={"CALLROUTER_SECRET": "x"},
        overrides={"asterisk.url": "http://127.0.0.1:8088/asterisk", "asterisk.username": "router"},
    )
    assert cfg.path is None
    assert cfg.asterisk.secret == "x"


def test_missing_file_without_overrides(tmp_path: Path) -> None:
    """The connection flags are named only to a command that has them (its
    overrides carry "asterisk.url", None when the flag is not given)."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml", environ={})
    assert str(info.value) == f"{tmp_path / 'absent.toml'}: no such file"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml", environ={}, overrides={"asterisk.url": None})
    assert str(info.value).endswith(
        "absent.toml: no such file (and no --url and --username given to replace it)"
    )


def test_check_of_a_missing_file_names_no_flag_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.cli import main

    assert main(["check", "--config", str(tmp_path / "missing.toml")]) == 1
    # The command's error (stderr), no longer a finding on stdout.
    err = capsys.readouterr().err
    assert "missing.toml: no such file" in err
    assert "--url" not in err
    assert "--username" not in err


def test_no_path_at_all(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        environ={},
        overrides={
            "asterisk.url": "http://127.0.0.1:1/asterisk",
            "asterisk.username": "u",
            "asterisk.secret": "s",
        },
    )
    assert cfg.path is None
    assert cfg.router.rules == (Path.cwd() / "rules",)


def test_bad_override_is_named(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL, asterisk__url="ftp://x")
    assert (
        msg
        == "command line: [asterisk] url: expected http://, https://, tcp:// or tls://, got 'ftp://x'"
    )


def test_bad_override_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL, nosuch=1)
    assert "override 'nosuch'" in msg


def test_default_path_is_router_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MINIMAL)
    assert load_config(environ={}).path == Path("router.toml")


def test_default_environ_is_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(os.environ, "CALLROUTER_SECRET", "from-os")
    cfg = load_config(write(tmp_path, MINIMAL.replace('secret = "s3cret"', "")))
    assert cfg.asterisk.secret == "from-os"


# -- errors name the file and the key --------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'url = "ftp://x"',
            "[asterisk] url: expected http://, https://, tcp:// or tls://, got 'ftp://x'",
        ),
        ('url = "http://"', "[asterisk] url: no host in 'http://'"),
        ('url = "http://h:99999/a"', "[asterisk] url: bad port in 'http://h:99999/a'"),
        # hleft33's trial: an unclosed '[' was a ValueError traceback in every command.
        (
            'url = "http://[pbx/asterisk"',
            "[asterisk] url: not a URL (Invalid IPv6 URL): 'http://[pbx/asterisk'",
        ),
        ('url = "tcp://[::1:5038"', "[asterisk] url: not a URL (Invalid IPv6 URL)"),
        ('url = "http://u:p@h/a"', "[asterisk] url: put no credentials in the URL"),
        ('url = "http://h/a?x=1"', "[asterisk] url: expected no query or fragment"),
        (
            'url = "http://h:8088/asterisk/rawman"',
            "[asterisk] url: give the http.conf prefix, not the endpoint: drop '/rawman' "
            "(e.g. 'http://h:8088/asterisk')",
        ),
        ("url = 8088", "[asterisk] url: expected a string, got integer 8088"),
        ('username = ""', "[asterisk] username: must not be empty"),
        ('auth = "basic"', "[asterisk] auth: expected 'cookie' or 'digest', got 'basic'"),
        ('format = "json"', "[asterisk] format: expected 'rawman' or 'mxml', got 'json'"),
        ("verify = 1", "[asterisk] verify: expected true, false or a CA file path, got integer 1"),
        ("connect_timeout = 0", "[asterisk] connect_timeout: expected more than 0"),
        (
            "request_timeout = true",
            "[asterisk] request_timeout: expected a number of seconds, got boolean true",
        ),
        (
            'waitevent_timeout = "20"',
            "[asterisk] waitevent_timeout: expected a number of seconds, got string '20'",
        ),
        ("usrname = 'x'", "[asterisk] usrname: unknown key; did you mean 'username'?"),
        ("secert = 'x'", "[asterisk] secert: unknown key; did you mean 'secret'?"),
    ],
)
def test_asterisk_errors(tmp_path: Path, line: str, expected: str) -> None:
    key = line.split("=")[0].strip()
    lines = [ln for ln in MINIMAL.splitlines() if not ln.startswith(f"{key} ")]
    msg = error_of(tmp_path, "\n".join([*lines, line]) + "\n")
    # The file, the line the key is written on (the last), the table and the key.
    assert msg.startswith(f"{tmp_path / 'router.toml'}:{len(lines) + 1}: {expected}"), msg


def test_missing_username(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL.replace('username = "router"', ""))
    assert msg.endswith("[asterisk] username: required")


def test_missing_asterisk_section(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[router]\nshadow = true\n")
    assert msg.endswith("[asterisk] url: required")


def test_missing_ca_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("http://", "https://") + 'verify = "nope.pem"\n'
    msg = error_of(tmp_path, text)
    assert "[asterisk] verify: no such file:" in msg
    assert "nope.pem" in msg


def test_tls_options_need_https(tmp_path: Path) -> None:
    write(tmp_path, "CERT", "c.pem")
    msg = error_of(tmp_path, MINIMAL + 'client_cert = "c.pem"\n')
    assert "[asterisk] client_cert: TLS options need an https:// or tls:// url" in msg


def test_client_key_needs_cert(tmp_path: Path) -> None:
    write(tmp_path, "KEY", "k.pem")
    msg = error_of(tmp_path, MINIMAL.replace("http://", "https://") + 'client_key = "k.pem"\n')
    assert "[asterisk] client_key: needs client_cert too" in msg


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[router]\nlog_format = "xml"', "[router] log_format: expected 'text' or 'json'"),
        ('[router]\nshadow = "yes"', "[router] shadow: expected true or false, got string 'yes'"),
        ("[router]\nrules = [1]", "[router] rules: expected a list of strings, got list [1]"),
        ("[router]\nrules = []", "[router] rules: expected at least one rules path"),
        ("[router]\nrule = []", "[router] rule: unknown key; did you mean 'rules'?"),
        ("[plugins]\nenable = ['a']", "[plugins] enable: unknown key; did you mean 'enabled'?"),
        (
            "[plugins]\nenabled = ['a']\ndisabled = ['a']",
            "[plugins] disabled: a also listed in enabled",
        ),
        ("[plugin.onec]\nurl = 'x'", "[plugin]: unknown section; did you mean 'plugins'?"),
        ('asterisk = "x"', "asterisk: expected a [asterisk] table, got string 'x'"),
    ],
)
def test_section_errors(tmp_path: Path, section: str, expected: str) -> None:
    text = MINIMAL + section + "\n" if section.startswith("[") else section + "\n"
    msg = error_of(tmp_path, text)
    # Each case's key is on the text's last line; an unknown section's header above it.
    line = len(text.splitlines()) - ("unknown section" in expected)
    assert msg.startswith(f"{tmp_path / 'router.toml'}:{line}: {expected}"), msg


def test_invalid_toml(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[asterisk\nurl=")
    assert msg.startswith(f"{tmp_path / 'router.toml'}: not valid TOML:")
    assert "line 1" in msg


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_bytes(b'[asterisk]\nurl = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ={})


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path, environ={})


def test_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "router.toml"
    cfg = load_config(example, environ={"CALLROUTER_SECRET": "x"})
    assert cfg.asterisk.username == "router"
    assert cfg.asterisk.secret_source == "env:CALLROUTER_SECRET"


# -- secrets never echoed, bounds configurable (issue 10 items 8, 12) ----------------

UNIQUE = "S3cr3t-0xC0FFEE-unique"


@pytest.mark.parametrize(
    "line",
    [
        f'url = "http://router:{UNIQUE}@127.0.0.1:8088/asterisk"',
        f'url = "ftp://router:{UNIQUE}@127.0.0.1"',  # refused for the scheme before
        f'url = "http://router:{UNIQUE}@h:x/a"',  # ... or the port
        f'url = "http://router:{UNIQUE}/x@h/a"',  # '/' in the password
        f'url = "http://router:{UNIQUE}@h/a?x=1"',
    ],
)
def test_urls_with_credentials_are_refused_without_echoing_them(tmp_path: Path, line: str) -> None:
    lines = [ln for ln in MINIMAL.splitlines() if not ln.startswith("url ")]
    msg = error_of(tmp_path, "\n".join([*lines, line]) + "\n")
    assert "[asterisk] url: put no credentials in the URL" in msg
    assert UNIQUE not in msg


@pytest.mark.parametrize(
    "line",
    [
        f'secret = ["{UNIQUE}"]',
        f"secret = {{ value = '{UNIQUE}' }}",
        f'secret_env = "{UNIQUE}"',  # the secret pasted where its variable's name goes
    ],
)
def test_secret_errors_never_echo_the_value(tmp_path: Path, line: str) -> None:
    lines = [ln for ln in MINIMAL.splitlines() if not ln.startswith("secret ")]
    msg = error_of(tmp_path, "\n".join([*lines, line]) + "\n")
    assert "(value not shown)" in msg
    assert UNIQUE not in msg


def test_plugin_credentials_are_masked_in_repr(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL + f'[plugins.onec]\npassword = "{UNIQUE}"\n'
        f'api_token = "{UNIQUE}"\n'
        f'url = "http://u:{UNIQUE}@1c/hs"\ntimeout = 2\n',
    )
    for text in (repr(cfg), repr(cfg.plugins), str(cfg)):
        assert UNIQUE not in text
    assert "timeout': 2" in repr(cfg.plugins)
    assert cfg.plugins.for_plugin("onec")["password"] == UNIQUE  # the value itself is intact


def test_max_response_bytes(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL).asterisk.max_response_bytes == 32 * 1024 * 1024
    cfg = load(tmp_path, MINIMAL + "max_response_bytes = 1048576\n")
    assert cfg.asterisk.max_response_bytes == 1048576
    from router.ami.client import ClientSettings

    assert ClientSettings.from_config(cfg.asterisk).max_response_bytes == 1048576
    msg = error_of(tmp_path, MINIMAL + "max_response_bytes = 100\n")
    assert "[asterisk] max_response_bytes: expected 65536 to 1073741824, got 100" in msg


def test_dialplan_audit_interval_is_off_or_10_s_to_a_day(tmp_path: Path) -> None:
    """The periodic look at Asterisk's dialplan (``dialplan reload`` reports
    nothing): every 5 minutes unless router.toml says otherwise (issue 16)."""
    assert load(tmp_path, MINIMAL).router.dialplan_audit_interval == 300.0
    for value, expected in (("0", 0.0), ("10", 10.0), ("86400", 86400.0), ("60.5", 60.5)):
        text = MINIMAL + f"[router]\ndialplan_audit_interval = {value}\n"
        assert load(tmp_path, text).router.dialplan_audit_interval == expected
    for value in ("5", "0.5", "-1", "86401"):
        text = MINIMAL + f"[router]\ndialplan_audit_interval = {value}\n"
        assert error_of(tmp_path, text).endswith(
            f"dialplan_audit_interval: expected 0 (off) or 10 to 86400 seconds, got {value}"
        ), value
    text = MINIMAL + '[router]\ndialplan_audit_interval = "5m"\n'
    assert "dialplan_audit_interval: expected a number, got" in error_of(tmp_path, text)


def test_a_long_wrong_value_is_cut_as_callrouter_cuts_its_texts(tmp_path: Path) -> None:
    """Issue 16: config cut a wrong value's repr to 37 characters and "...",
    while every other error quoting a value (a hook's, a registration's, a
    card's) ends in router.cut's "…" at its length: one cut, one mark."""
    from router import cut

    value = ["number-" + str(n) for n in range(20)]
    text = MINIMAL + f"[router]\nrules = {value!r}\nshadow = {value!r}\n".replace("'", '"')
    msg = error_of(tmp_path, text)
    shown = cut(repr(value), 40)
    assert msg.endswith(f"[router] shadow: expected true or false, got list {shown}"), msg
    assert shown.endswith("…")
    assert len(shown) == 40


def test_a_short_wrong_value_is_shown_whole(tmp_path: Path) -> None:
    """40 characters are shown whole (the cut begins at 41)."""
    value = "x" * 38  # its repr, quotes included, is 40 characters
    msg = error_of(tmp_path, MINIMAL + f'[router]\nshadow = "{value}"\n')
    assert msg.endswith(f"[router] shadow: expected true or false, got string {value!r}"), msg


def test_a_bound_of_a_million_or_more_is_written_out(tmp_path: Path) -> None:
    """`[history] replay_max_age = 9999999` was refused "at most 2.6784e+06":
    the docs and the file write seconds in full (issue 16)."""
    message = error_of(
        tmp_path,
        MINIMAL + f'[history]\ncel = "sqlite:///{tmp_path}/cel.db"\nreplay_max_age = 9999999\n',
    )
    assert "at most 2678400, got 9999999" in message, message
    assert "e+" not in message
