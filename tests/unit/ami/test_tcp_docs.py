"""docs/asterisk.md (+ru) 'Native TCP AMI': what it shows works as written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from router.cli import build_parser
from router.commands._connect import load_from_args
from router.config import load_config

REPO = Path(__file__).parents[3]
PAGES = {
    REPO / "docs" / "asterisk.md": "## Native TCP AMI",
    REPO / "docs" / "ru" / "asterisk.md": "## Родной AMI по TCP",
}


def section(page: Path, heading: str) -> str:
    text = page.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


@pytest.mark.parametrize(("page", "heading"), PAGES.items(), ids=lambda p: str(p)[-20:])
def test_the_router_toml_shown_loads_as_native_tcp(
    page: Path, heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (toml,) = blocks(section(page, heading), "toml")
    path = tmp_path / "router.toml"
    path.write_text(toml, encoding="utf-8")
    cfg = load_config(path, environ={"CALLROUTER_SECRET": "s"}).asterisk
    assert cfg.native
    assert cfg.url == "tcp://127.0.0.1:5038"
    assert cfg.auth == "md5"
    assert cfg.ping_interval == 5


@pytest.mark.parametrize(("page", "heading"), PAGES.items(), ids=lambda p: str(p)[-20:])
def test_manager_conf_and_the_check_command_as_shown(
    page: Path, heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = section(page, heading)
    (ini,) = blocks(text, "ini")
    assert re.search(r"^port = 5038$", ini, re.M)
    assert re.search(r"^writetimeout = \d+", ini, re.M)
    flat = re.sub(r"\s*\n\s*", " ", text)
    assert (
        "Asterisk refused login for 'router' at tcp://127.0.0.1:5038: Authentication failed" in flat
    )
    (command,) = re.findall(r"`(callrouter ami Ping --url tcp://[^`]+)`", flat)
    monkeypatch.chdir(tmp_path)  # no router.toml here: the flags alone suffice
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    args = build_parser().parse_args(shlex.split(command)[1:])
    cfg = load_from_args(args).asterisk
    assert cfg.url == "tcp://127.0.0.1:5038"
    assert cfg.username == "router"
    # Beside a copy of examples/router.toml (AJAM keys, auth = "cookie") too:
    # the flags override the file.
    shutil.copy(REPO / "examples" / "router.toml", tmp_path / "router.toml")
    cfg = load_from_args(args).asterisk
    assert (cfg.url, cfg.auth) == ("tcp://127.0.0.1:5038", "plain")


@pytest.mark.parametrize(("page", "heading"), PAGES.items(), ids=lambda p: str(p)[-20:])
def test_the_tls_failures_shown_are_what_the_client_says(page: Path, heading: str) -> None:
    """The two TLS hints the page quotes are the client's own words."""
    import ssl

    from router.ami.hints import tls_hint

    flat = re.sub(r"\s*\n\s*", " ", section(page, heading))
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    for exc, quoted in ((wrong, "this port does not speak TLS"),
                        (untrusted, "the certificate is not trusted")):  # fmt: skip
        assert f"; {quoted}" in flat
        assert tls_hint(exc).startswith(f"; {quoted}")
    assert 'verify = "/path/ca.pem"' in flat
    assert 'verify = "/path/ca.pem"' in tls_hint(untrusted)


def test_the_example_router_toml_switched_to_tcp_as_its_comment_says(tmp_path: Path) -> None:
    text = (REPO / "examples" / "router.toml").read_text(encoding="utf-8")
    assert '\n# url = "tcp://127.0.0.1:5038"\n' in text
    text = text.replace('\nurl = "http://127.0.0.1:8088/asterisk"\n', "\n")
    text = text.replace('\n# url = "tcp://127.0.0.1:5038"\n', '\nurl = "tcp://127.0.0.1:5038"\n')
    text = text.replace("\n# ping_interval = 5 ", "\nping_interval = 5 ")
    # "format, http_client and waitevent_timeout below are AJAM's and must go"; auth too.
    keys = ("format", "http_client", "waitevent_timeout", "auth")
    lines = [
        line for line in text.splitlines() if not line.startswith(tuple(f"{k} =" for k in keys))
    ]
    (tmp_path / "router.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for sub in ("rules", "state"):
        (tmp_path / sub).mkdir()
    for item in (REPO / "examples").iterdir():
        if item.suffix in (".csv", ".txt"):
            (tmp_path / item.name).write_text(item.read_text(encoding="utf-8"), encoding="utf-8")
    cfg = load_config(tmp_path / "router.toml", environ={"CALLROUTER_SECRET": "s"}).asterisk
    assert cfg.url == "tcp://127.0.0.1:5038"
    assert cfg.ping_interval == 5


FILTER_PAGES = {
    REPO / "docs" / "asterisk.md": "## Event filtering",
    REPO / "docs" / "ru" / "asterisk.md": "## Фильтрация событий",
}


@pytest.mark.parametrize(("page", "heading"), FILTER_PAGES.items(), ids=lambda p: str(p)[-20:])
def test_check_manager_conf_prints_what_the_page_shows(
    page: Path,
    heading: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'Event filtering': the command shown, run in examples/ as written, prints
    exactly the lines shown (they change with the example rules and plugins)."""
    from router.cli import main

    (console,) = blocks(section(page, heading), "console")
    command, *shown = [line.removeprefix("   ") for line in console.rstrip().split("\n")]
    assert command.startswith("$ callrouter ")
    monkeypatch.chdir(REPO / "examples")
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    assert main(shlex.split(command)[2:]) == 0
    assert capsys.readouterr().out.rstrip("\n").split("\n") == [
        line.strip() if not line.strip() else line for line in shown
    ]


@pytest.mark.parametrize(("page", "heading"), PAGES.items(), ids=lambda p: str(p)[-20:])
def test_the_documented_tls_check_takes_a_ca_file_without_a_router_toml(
    page: Path, heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private CA for tls:// had to go into a router.toml: the command line
    had only --insecure. ``--ca-file`` is the ``verify`` key's, for ``ami``
    and ``check --asterisk``; with ``--insecure`` it is refused."""
    flat = re.sub(r"\s*\n\s*", " ", section(page, heading))
    (command,) = re.findall(r"`(callrouter ami Ping --url tls://[^`]+)`", flat)
    words = shlex.split(command)[1:]
    assert words[-2:] == ["--ca-file", "/etc/callrouter/asterisk-ca.pem"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here\n", encoding="utf-8")
    args = build_parser().parse_args([*words[:-1], str(ca)])
    cfg = load_from_args(args).asterisk
    assert (cfg.url, str(cfg.verify)) == ("tls://pbx.example.com:5039", str(ca))
    with pytest.raises(SystemExit):
        build_parser().parse_args([*words[:-1], str(ca), "--insecure"])
    check = build_parser().parse_args(
        ["check", "--asterisk", "--url", "tls://pbx:5039", "--ca-file", str(ca)]
    )
    from router.commands.check import config_overrides

    assert config_overrides(check)["asterisk.verify"] == str(ca)
