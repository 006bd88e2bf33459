"""[asterisk] url with tcp:// and tls://: what is accepted, what is refused and how."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.ami.client import ClientSettings
from router.config import load_config
from router.errors import ConfigError


def load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "router.toml"
    path.write_text('[asterisk]\nusername = "router"\nsecret = "s"\n' + body, encoding="utf-8")
    return load_config(path)


def asterisk(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    return load(tmp_path, body).asterisk  # type: ignore[attr-defined]


def test_tcp_url_with_defaults(tmp_path: Path) -> None:
    cfg = asterisk(tmp_path, 'url = "tcp://127.0.0.1:5038/"\n')
    assert cfg.url == "tcp://127.0.0.1:5038"
    assert cfg.native
    assert cfg.auth == "plain"
    assert cfg.ping_interval == 5.0
    client = ClientSettings.from_config(cfg)
    assert client.native
    assert client.ping_interval == 5.0


def test_tcp_url_takes_max_response_bytes(tmp_path: Path) -> None:
    """docs/asterisk.md names it the bound of TCP's unread bytes, event lists
    and read-ahead (router/ami/tcp.py reads it): a tcp:// url refused the key,
    so only its 32 MB default could apply."""
    for url in ("tcp://127.0.0.1:5038", "tls://pbx.example:5039"):
        cfg = asterisk(tmp_path, f'url = "{url}"\nmax_response_bytes = 65536\n')
        assert cfg.max_response_bytes == 65536
        assert ClientSettings.from_config(cfg).max_response_bytes == 65536
    with pytest.raises(ConfigError, match=r"max_response_bytes: expected 65536 to"):
        asterisk(tmp_path, 'url = "tcp://h:5038"\nmax_response_bytes = 100\n')


def test_tls_url_takes_the_tls_keys_and_md5(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x", encoding="utf-8")
    cfg = asterisk(
        tmp_path,
        'url = "tls://pbx.example:5039"\nverify = "ca.pem"\nauth = "md5"\nping_interval = 2\n',
    )
    assert cfg.url == "tls://pbx.example:5039"
    assert cfg.verify == ca
    assert cfg.auth == "md5"
    assert cfg.ping_interval == 2.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'url = "tcp://127.0.0.1"\n',
            r"url: give the manager.conf port, e.g. 'tcp://127.0.0.1:5038'",
        ),
        ('url = "tls://h"\n', r"url: give the manager.conf port, e.g. 'tls://h:5039'"),
        ('url = "tcp://127.0.0.1:5038/asterisk"\n', r"url: a tcp:// url is host and port only"),
        ('url = "ftp://h:1"\n', r"url: expected http://, https://, tcp:// or tls://"),
        ('url = "tcp://127.0.0.1:5038"\nauth = "digest"\n', r"auth: expected 'plain' or 'md5'"),
        ('url = "http://h:8088/asterisk"\nauth = "md5"\n', r"auth: expected 'cookie' or 'digest'"),
        (
            'url = "tcp://h:5038"\nformat = "mxml"\n',
            r"format: applies to http:// or https:// urls only",
        ),
        ('url = "tcp://h:5038"\nwaitevent_timeout = 5\n', r"waitevent_timeout: applies to http"),
        (
            'url = "http://h:8088/asterisk"\nping_interval = 5\n',
            r"ping_interval: applies to tcp:// or tls://",
        ),
        (
            'url = "tcp://h:5038"\nverify = "ca.pem"\n',
            r"verify: TLS options need an https:// or tls:// url",
        ),
        (
            'url = "tcp://h:5038"\nverify = true\n',
            r"verify: TLS options need an https:// or tls:// url, got 'tcp://h:5038'",
        ),
        (
            'url = "http://h:8088/asterisk"\nverify = false\n',
            r"verify: TLS options need an https:// or tls:// url",
        ),
        ('url = "tcp://h:5038"\nping_interval = 0\n', r"ping_interval: expected more than 0"),
    ],
)
def test_bad_tcp_settings_are_refused_naming_the_key(
    tmp_path: Path, body: str, message: str
) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[asterisk\] " + message):
        load(tmp_path, body)


def test_every_key_of_the_other_transport_is_named_in_one_error(tmp_path: Path) -> None:
    """A router.toml switched from http:// to tcp:// by its url alone fails
    once, naming everything left to change, not once per key."""
    body = (
        'url = "tcp://h:5038"\nformat = "rawman"\nhttp_client = "native"\n'
        'waitevent_timeout = 20\nauth = "cookie"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body)
    message = str(caught.value)
    assert re.search(
        r"\[asterisk\] format: applies to http:// or https:// urls only, and url is "
        r"'tcp://h:5038'; so do http_client, waitevent_timeout; and auth 'cookie' is for "
        r"http:// or https:// urls \(here 'plain' or 'md5'\)",
        message,
    ), message


def test_an_auth_mode_of_the_other_transport_says_so(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"\[asterisk\] auth: expected 'cookie' or 'digest', "
        r"got 'md5', which applies to tcp:// or tls:// urls only",
    ):
        load(tmp_path, 'url = "http://h:8088/asterisk"\nauth = "md5"\n')
    with pytest.raises(
        ConfigError,
        match=r"ping_interval: applies to tcp:// or tls:// urls "
        r"only, and url is 'http://h:8088/asterisk'; and auth 'md5' is for",
    ):
        load(tmp_path, 'url = "http://h:8088/asterisk"\nping_interval = 5\nauth = "md5"\n')


# -- a --url on the command line of the other transport -----------------------------

AJAM_FILE = (
    'url = "https://pbx.example:8089/asterisk"\nauth = "digest"\nformat = "mxml"\n'
    'http_client = "httpx"\nwaitevent_timeout = 20\nmax_response_bytes = 65536\n'
    'verify = "ca.pem"\nclient_cert = "ca.pem"\nclient_key = "ca.pem"\n'
)


def load_with(tmp_path: Path, body: str, **overrides: object):  # type: ignore[no-untyped-def]
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    path = tmp_path / "router.toml"
    path.write_text('[asterisk]\nusername = "router"\nsecret = "s"\n' + body, encoding="utf-8")
    given = {f"asterisk.{key}": value for key, value in overrides.items()}
    return load_config(path, overrides=given, environ={}).asterisk


def test_a_command_line_tcp_url_leaves_out_the_files_ajam_and_tls_keys(tmp_path: Path) -> None:
    """`callrouter ami Ping --url tcp://...` beside an AJAM router.toml: the flag
    overrides the file, so what only AJAM or TLS reads in the file is left out."""
    cfg = load_with(tmp_path, AJAM_FILE, url="tcp://127.0.0.1:5038")
    assert cfg.url == "tcp://127.0.0.1:5038"
    assert (cfg.auth, cfg.verify, cfg.client_cert, cfg.client_key) == ("plain", True, None, None)
    assert cfg.username == "router"
    assert cfg.max_response_bytes == 65536  # a bound of both transports: kept


def test_a_command_line_tls_url_keeps_the_files_tls_keys(tmp_path: Path) -> None:
    cfg = load_with(tmp_path, AJAM_FILE, url="tls://pbx.example:5039")
    assert cfg.verify == tmp_path / "ca.pem"
    assert cfg.client_cert == tmp_path / "ca.pem"
    assert cfg.auth == "plain"


def test_a_command_line_http_url_leaves_out_the_files_tcp_keys(tmp_path: Path) -> None:
    body = 'url = "tls://pbx.example:5039"\nauth = "md5"\nping_interval = 3\nverify = false\n'
    cfg = load_with(tmp_path, body, url="http://127.0.0.1:8088/asterisk")
    assert (cfg.url, cfg.auth, cfg.verify) == ("http://127.0.0.1:8088/asterisk", "cookie", True)
    # The file's auth of the same transport stays.
    cfg = load_with(tmp_path, 'url = "tcp://h:5038"\nauth = "md5"\n', url="tls://h:5039")
    assert cfg.auth == "md5"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": "mxml"}, r"command line: \[asterisk\] format: applies to http:// or https://"),
        ({"auth": "cookie"}, r"command line: \[asterisk\] auth: expected 'plain' or 'md5'"),
        ({"verify": False}, r"command line: \[asterisk\] verify: TLS options need an https://"),
    ],
)
def test_the_command_lines_own_keys_are_still_checked(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_with(tmp_path, AJAM_FILE, url="tcp://127.0.0.1:5038", **overrides)


def test_a_file_whose_url_and_keys_disagree_is_still_refused(tmp_path: Path) -> None:
    """Only a url from the command line leaves keys out; the file's own url
    does not, even when other flags are given."""
    with pytest.raises(ConfigError, match=r"router.toml:\d+: \[asterisk\] format: applies to"):
        load_with(tmp_path, 'url = "tcp://h:5038"\nformat = "mxml"\n', username="other")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'url = "tcp://h:5038"\nwritetimeout = 100\n',
            r"\[asterisk\] writetimeout: unknown key: writetimeout is a setting of "
            r"Asterisk's manager.conf \(the manager user's section\), not of router.toml",
        ),
        (
            'url = "http://h:8088/asterisk"\nhttptimeout = 60\n',
            r"httptimeout: unknown key: httptimeout is a setting of Asterisk's "
            r"manager.conf \[general\]",
        ),
        (
            'url = "http://h:8088/asterisk"\nprefix = "asterisk"\n',
            r"prefix: unknown key: prefix is a setting of Asterisk's http.conf "
            r"\[general\]; router.toml takes it as part of url",
        ),
    ],
)
def test_an_asterisk_setting_in_router_toml_is_sent_where_it_belongs(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, body)
    assert "did you mean" not in str(caught.value)


def test_a_did_you_mean_offers_only_keys_of_the_urls_transport(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, 'url = "tcp://h:5038"\nwaitevent_timout = 5\n')
    message = str(caught.value)
    # AJAM's key is named as such, not offered as the fix.
    assert "'waitevent_timeout' is close, but applies to http:// or https:// urls only" in message
    assert "did you mean" not in message
    assert "known here: auth," in message
    assert "waitevent_timeout," not in message
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, 'url = "http://h:8088/asterisk"\nping_intervall = 5\n')
    message = str(caught.value)
    assert "'ping_interval' is close, but applies to tcp:// or tls:// urls only" in message
    assert "ping_interval," not in message
    with pytest.raises(ConfigError, match=r"did you mean 'ping_interval'"):
        load(tmp_path, 'url = "tls://h:5039"\nping_intervall = 5\n')


@pytest.mark.parametrize("url", ["tls://pbx.example:5039", "https://pbx.example:8089/asterisk"])
@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({"verify": "x.pem"}, r"\[asterisk\] verify: '.*x\.pem' holds no CA certificate in PEM"),
        ({"client_cert": "x.pem"}, r"\[asterisk\] client_cert: cannot load '.*x\.pem' \(PEM files"),
        (
            {"client_cert": "x.pem", "client_key": "x.pem"},
            r"\[asterisk\] client_cert: cannot load '.*x\.pem' and client_key '.*x\.pem'",
        ),
    ],
)
def test_a_tls_file_holding_no_pem_is_a_config_error_naming_the_key(
    tmp_path: Path, url: str, files: dict[str, str], said: str
) -> None:
    """A ``verify`` CA file or client certificate that exists but is no PEM
    (a DER file, the wrong file) came out of ``run``, ``ami`` and ``check
    --asterisk`` as an ``ssl.SSLError`` traceback, over tls:// and https://."""
    from router.ami.connect import open_client

    (tmp_path / "x.pem").write_text("not a certificate\n", encoding="utf-8")
    paths = {key: str(tmp_path / name) for key, name in files.items()}
    settings = ClientSettings(url=url, username="router", secret="x", **paths)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=said):
        open_client(settings)  # raises before any client exists: nothing to close
