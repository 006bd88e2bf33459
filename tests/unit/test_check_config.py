"""``callrouter check --config`` and ``explain --config`` read router.toml as
``run`` does (issue 11 item 15): commands run exactly as the docs write them."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from router import hookimpl
from router.cli import main
from tests.unit import tls_files
from tests.unit.cli_code import exit_code

# The built-in plugins and the 1C plugin, not whatever else is installed
# (tests/conftest.py; test_tests_ignore_third_party_plugins.py holds it).
pytestmark = pytest.mark.usefixtures("only_shipped_plugins")

ROOT = Path(__file__).resolve().parents[2]

HOURS = """version: 1
rules:
  - name: open
    on: call
    if: workhours("mon-fri 09:00-18:00")
    do:
      - redirect: {context: queues, exten: sales}
  - name: spb
    on: call
    if: did == "78121234567"
    do:
      - redirect: {context: queues, exten: spb}
  - name: closed
    on: call
    do:
      - redirect: {context: queues, exten: night}
"""


def write(folder: Path, toml: str, rules: str = HOURS) -> Path:
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "inbound.yaml").write_text(rules)
    path = folder / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret_env = "CALLROUTER_SECRET"\n[router]\nrules = ["rules"]\n' + toml
    )
    return path


@pytest.fixture(autouse=True)
def no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """An administrator's shell: the service's secrets are not in it."""
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    monkeypatch.delenv("ONEC_PASSWORD", raising=False)


def test_check_config_of_the_shipped_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # examples/router.toml: "`callrouter check --config router.toml` validates
    # this file and the rules."
    monkeypatch.chdir(ROOT / "examples")
    assert main(["check", "--config", "router.toml"]) == 0
    out, err = capsys.readouterr()
    assert out == "router.toml (rules): 16 rules OK\n"
    assert err == (
        "callrouter check: warning: router.toml:34: [asterisk] secret_env: environment "
        "variable CALLROUTER_SECRET is not set here; callrouter run needs it "
        "(checked without it)\n"
    )


def test_check_config_as_in_operations_md(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/operations.md: callrouter check --config /etc/callrouter/router.toml
    etc = tmp_path / "etc" / "callrouter"
    etc.mkdir(parents=True)
    path = write(etc, "")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "etc/callrouter/router.toml (etc/callrouter/rules): 3 rules OK\n"
    assert err == ""


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("log_format = 'xml'\n", "[router] log_format: expected 'text' or 'json', got 'xml'"),
        (
            "[plugins]\nenabled = ['onc']\n",
            "[plugins] enabled: 'onc' is no plugin here (did you mean 'onec'?)",
        ),
        (
            "[plugins.onec]\nurl = 'http://1c/hs/t'\nusername = 'u'\npassword = ''\ntimout = 1\n",
            "[plugins.onec] timout: unknown key; did you mean 'timeout'?",
        ),
        (
            "[plugins.timefuncs]\ntimezone = 'Europe/Moskow'\n",
            "[plugins.timefuncs] timezone: unknown time zone 'Europe/Moskow'",
        ),
        (
            "[plugins.numbers]\ncountry_code = 'seven'\n",
            "[plugins.numbers] country_code: expected digits only, got 'seven'",
        ),
        (
            "[plugins.directory]\nfiles = 'd.csv'\n",
            "[plugins.directory] files: unknown key; did you mean 'file'?",
        ),
    ],
)
def test_check_config_validates_every_table(
    tmp_path: Path, toml: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, toml)
    assert main(["check", "--config", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert message in lines[0]
    assert lines[-1] == f"{path}: 1 error (configuration; rules not checked)"


@pytest.mark.parametrize("page", ["docs/operations.md", "docs/ru/operations.md"])
def test_a_config_problem_stops_the_check_at_the_first_as_documented(
    tmp_path: Path, page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/operations.md's example as a new administrator meets it (issue 16):
    two problems in router.toml take two rounds of `check`, the first line
    each time and the documented summary; the docs said one line per problem."""
    path = write(tmp_path, 'shadow = "yes"\n')
    text = path.read_text().replace('username = "router"', 'usernme = "router"')
    path.write_text(text)
    said: list[str] = []
    for _ in range(2):
        assert main(["check", "--config", str(path)]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert lines[1:] == [f"{path}: 1 error (configuration; rules not checked)"]
        said.append(lines[0])
        path.write_text(path.read_text().replace("usernme", "username"))
    assert "[asterisk] usernme: unknown key; did you mean 'username'?" in said[0]
    assert said[1].endswith("[router] shadow: expected true or false, got string 'yes'")
    docs = " ".join((ROOT / page).read_text(encoding="utf-8").split())
    assert "`router.toml: 1 error (configuration; rules not checked)`" in docs
    assert "`usernme` " in docs
    assert '`shadow = "yes"`' in docs


def test_check_config_checks_rules_against_the_plugins_it_selects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = HOURS.replace(
        'if: did == "78121234567"',
        "lookup:\n      entry: directory(caller.number)\n    when: entry",
    )
    path = write(tmp_path, "[plugins]\ndisabled = ['directory']\n", rules)
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "rule 'spb': unknown lookup 'directory'" in out, out
    path = write(tmp_path, "", rules)
    assert main(["check", "--config", str(path)]) == 0


def test_check_reads_router_toml_of_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[plugins.timefuncs]\ntimezone = 'Mars/Olympus'\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 1
    assert "unknown time zone 'Mars/Olympus'" in capsys.readouterr().out
    (tmp_path / "router.toml").unlink()
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert out == "rules: 3 rules OK\n"
    assert "no router.toml here: checked with the default settings" in err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(tmp_path / "nope.toml")]) == 1
    # A --config that is not there is the command's error (stderr, prefixed),
    # not a finding about a file nothing of which was read.
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"callrouter check: error: {tmp_path / 'nope.toml'}: no such file\n"


def test_explain_config_uses_the_zone_and_number_plan_run_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 08:00 UTC is 11:00 in Moscow (the default: open) and 18:00 in
    # Vladivostok (closed); 8 029 ... is a Belarusian number only in the
    # Belarusian plan.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    default = write(tmp_path / "a", "")
    local = write(
        tmp_path / "b",
        "[plugins.timefuncs]\ntimezone = 'Asia/Vladivostok'\n"
        "[plugins.numbers]\ncountry_code = '375'\ntrunk_prefix = '80'\n"
        "national_length = 9\n",
    )
    results = {}
    for name, path in (("default", default), ("local", local)):
        assert (
            main(
                [
                    "explain",
                    "--config",
                    str(path),
                    "--caller",
                    "80291234567",
                    "--did",
                    "74951234567",
                    "--at",
                    "2026-12-01T08:00+00:00",
                    "--json",
                ]
            )
            == 0
        )
        results[name] = json.loads(capsys.readouterr().out)
    assert results["default"]["decision"]["rules"] == ["open"]
    assert results["local"]["decision"]["rules"] == ["closed"]
    assert "from 70291234567 " in results["default"]["trace"]["trigger"]
    assert "from 375291234567 " in results["local"]["trace"]["trigger"]


def test_explain_says_which_rules_other_dids_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "")
    assert (
        main(
            [
                "explain",
                "--config",
                str(path),
                "--caller",
                "79161234567",
                "--did",
                "74951234567",
                "--at",
                "2026-12-01 20:00",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "  not evaluated: 1 rule for other DIDs (spb): their `did ==` / `did in` test "
        "leaves out 74951234567"
    ) in out
    assert (
        main(
            [
                "explain",
                "--config",
                str(path),
                "--caller",
                "79161234567",
                "--did",
                "78121234567",
                "--at",
                "2026-12-01 20:00",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "not evaluated" not in out
    assert "decision: redirect(context=queues, exten=spb) (rules: spb)" in out


def test_directory_file_is_relative_to_router_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "directory.csv").write_text("number,extension,name\n79161234567,205,Ivan\n")
    rules = (
        "version: 1\nrules:\n  - name: known\n    on: call\n    lookup:\n"
        "      entry: directory(caller.number)\n    when: entry\n    do:\n"
        '      - redirect: {context: callrouter-dial, exten: "{entry.extension}"}\n'
    )
    path = write(etc, "[plugins.directory]\nfile = 'directory.csv'\n", rules)
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert main(["check", "--config", str(path)]) == 0
    capsys.readouterr()
    (etc / "directory.csv").rename(tmp_path / "directory.csv")  # now beside the cwd only
    assert main(["check", "--config", str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{path}:8: [plugins.directory] file: cannot read {etc / 'directory.csv'}: "
        "No such file or directory"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"79161234567: {extension: 101\n",
            ":2: YAML syntax error: expected ',' or '}', but got '<stream end>'",
        ),
        (b"\xff\xfe79161234567: 101\n", ": not UTF-8 text (invalid start byte at byte 0)"),
    ],
)
def test_a_directory_file_that_is_no_yaml_or_no_text_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    """It escaped as the plugin's crash, logged, and check said OK: the engine
    would have started with an empty directory."""
    (tmp_path / "directory.yaml").write_bytes(content)
    path = write(tmp_path, "[plugins.directory]\nfile = 'directory.yaml'\n")
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{tmp_path / 'directory.yaml'}{message}",
        f"{path}: 1 error (configuration; rules not checked)",
    ]


def test_unset_secret_variables_are_warnings_and_leave_no_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    path = write(
        tmp_path,
        "[plugins.onec]\nurl = 'http://1c.local/unf/hs/telephony'\n"
        "username = 'router'\npassword_env = 'ONEC_PASSWORD'\n",
    )
    assert main(["check", "--config", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"callrouter check: warning: {path}:4: [asterisk] secret_env: environment variable "
        "CALLROUTER_SECRET is not set here; callrouter run needs it (checked without it)",
        f"callrouter check: warning: {path}:10: [plugins.onec] password_env: the environment "
        "variable it names is not set here (name not shown: it may be the secret itself, "
        "pasted by mistake; if so, put the secret in the environment and give the "
        "variable's name here); callrouter run needs it (checked without it)",
    ]
    assert "ONEC_PASSWORD" not in os.environ
    assert "CALLROUTER_SECRET" not in os.environ


def test_a_key_no_longer_used_is_named_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router.toml from an earlier version keeps [plugins.onec] dial_context,
    which loads but does nothing: check says so, with the line (issue 16)."""
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    path = write(
        tmp_path,
        "[plugins.onec]\nurl = 'http://1c.local/unf/hs/telephony'\n"
        "username = 'router'\npassword = ''\ndial_context = 'callrouter-dial'\n",
    )
    assert main(["check", "--config", str(path)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"callrouter check: warning: {path}:11: [plugins.onec] dial_context: no longer used "
        "(1C is told the extension that actually rang, wherever the call was sent); delete "
        "the line (docs/onec.md)"
    ]


def test_check_manager_conf_prints_the_lines_run_would_ask_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``callrouter check --manager-conf`` (docs/asterisk.md): the eventfilter
    lines of the engine's own selection, header filters included, for a
    user that may not send Filter; secrets need not be set in this shell."""
    import asyncio

    from router.config import load_config
    from router.engine import Engine
    from router.plugins import Plugins

    path = write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--manager-conf"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "router.toml (rules): 3 rules OK",
        "",
        "; the events callrouter asks for: add under [router]",
    ]
    monkeypatch.setenv("CALLROUTER_SECRET", "x")

    async def selection_lines() -> list[str]:
        config = load_config(path)
        engine = Engine(config, plugins=Plugins.for_config(config))
        await engine.setup()
        return (await engine.event_selection()).manager_conf_lines()

    expected = asyncio.run(selection_lines())
    assert out[3:-1] == expected
    assert "eventfilter(action(include),name(Newexten),header(Priority),method(exact))=1" in out
    # Asterisk's sample suggests a global disabledevents = Newexten: the last
    # line names every event the lines let through, which it must leave alone.
    prefix = "; [general] disabledevents must name none of: "
    assert out[-1].startswith(prefix)
    named = out[-1].removeprefix(prefix).split(", ")
    assert named == sorted(named)
    assert {"Newexten", "UserEvent", "Hangup"} <= set(named)
    assert set(named) == set(re.findall(r"name\((\w+)\)", "\n".join(expected)))


def test_check_manager_conf_with_events_all_says_there_is_nothing_to_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "")
    path = tmp_path / "router.toml"
    path.write_text(path.read_text().replace("[router]", 'events = "all"\n[router]'))
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--manager-conf"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith('; [asterisk] events = "all"')


@pytest.mark.parametrize(
    "command",
    [
        ["check", "--tz", "Europe/Moskow"],
        ["explain", "--caller", "1", "--did", "2", "--tz", "Europe/Moskow"],
    ],
    ids=["check", "explain"],
)
def test_a_bad_tz_flag_is_named_as_the_flag(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    """The zone came from the command line, not from router.toml's
    [plugins.timefuncs] timezone, which the error used to blame."""
    write(tmp_path, '[plugins.timefuncs]\ntimezone = "Europe/Moscow"\n')
    monkeypatch.chdir(tmp_path)
    assert exit_code(command) == 2
    said = capsys.readouterr()
    # A flag's value is a wrong command line, its usage first, for both.
    assert said.err.startswith(f"usage: callrouter {command[0]} ")
    assert said.err.splitlines()[-1] == (
        f"callrouter {command[0]}: error: argument "
        "--tz: unknown time zone 'Europe/Moskow' (did you mean 'Europe/Moscow'?)"
    )


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--tz", "Mars/Olympus"], "argument --tz: unknown time zone 'Mars/Olympus'"),
        (["--location-pattern", "("], "argument --location-pattern: not a regular expression: "),
        (
            ["--url", "ftp://x", "--username", "u"],
            "argument --url: expected http://, https://, tcp:// or tls://",
        ),
        (["--timeout", "-1"], "argument --timeout: expected more than 0 and at most 3600"),
        ([""], "argument PATH: an empty path (it would be the current"),
    ],
    ids=["tz", "location-pattern", "url", "timeout", "empty-path"],
)
def test_check_says_a_bad_flag_on_stderr_as_every_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    error: str,
) -> None:
    """`check --tz Mars/Olympus` printed the error on stdout among the
    findings, unprefixed, with a summary blaming the configuration; every
    other command says a bad flag on stderr as `callrouter X: error: ...`.
    A flag's value is a wrong command line: the usage, exit 2 (hleft33b:
    it was exit 1 without it, while `explain --at garbage` was 2). A
    router.toml finding still goes to stdout with its summary."""
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    assert exit_code(["check", *flags]) == 2
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.startswith("usage: callrouter check ")
    assert said.err.splitlines()[-1].startswith(f"callrouter check: error: {error}")

    (tmp_path / "router.toml").write_text("[router]\n", encoding="utf-8")
    assert main(["check"]) == 1
    said = capsys.readouterr()
    assert said.out.splitlines()[0] == "router.toml: [asterisk] url: required"
    assert said.out.splitlines()[-1] == "router.toml: 1 error (configuration; rules not checked)"
    assert "error:" not in said.err


def test_a_transcode_without_its_encoder_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: check passed in silence, and every recording then failed at its close
    (now delivered as WAV, with an error each time)."""
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **kw: None if name == "lame" else real_which(name)
    )
    path = write(tmp_path, '[recordings]\ndir = "/var/spool/asterisk/monitor"\ntranscode = "mp3"\n')
    assert main(["check", "--config", str(path)]) == 0
    err = capsys.readouterr().err
    assert (
        f"callrouter check: warning: {path}:9: [recordings] transcode = 'mp3' needs lame "
        "(Debian package lame), which is not on PATH: recordings will be delivered as WAV"
    ) in err


def test_check_takes_the_connection_flags_of_the_other_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: "command-line flags (--url, --username, --secret-env, ...)
    override the file". ``check --asterisk`` and ``--manager-conf`` connect as
    (or write for) router.toml's user; they refused the flags (issue 16), so a
    TCP check beside an AJAM router.toml, or another manager user, needed a
    second router.toml. The file here is the example's, with AJAM-only keys."""
    from router.cli import build_parser
    from router.commands.check import plugin_registry

    monkeypatch.chdir(ROOT / "examples")
    monkeypatch.setenv("OTHER_SECRET", "s")
    argv = [
        "check",
        "--config",
        "router.toml",
        "--asterisk",
        "--url",
        "tcp://127.0.0.1:5038",
        "--username",
        "adm1",
        "--secret-env",
        "OTHER_SECRET",
    ]
    offline = plugin_registry(build_parser().parse_args(argv))
    assert offline.config.asterisk.url == "tcp://127.0.0.1:5038"
    assert offline.config.asterisk.username == "adm1"
    assert offline.asterisk_secret_missing is None
    monkeypatch.delenv("OTHER_SECRET")
    assert plugin_registry(build_parser().parse_args(argv)).asterisk_secret_missing == (
        "OTHER_SECRET"
    )
    assert main([*argv[:3], "--manager-conf", "--username", "adm1"]) == 0
    assert "; the events callrouter asks for: add under [adm1]" in capsys.readouterr().out


def test_check_takes_the_connection_flags_of_ami_and_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hcli31's trial: `callrouter check --asterisk --url tls://127.0.0.1:PORT
    --insecure` failed with `unrecognized arguments: --insecure`: check had
    --url, --username, --secret-env and --ca-file only, `ami` and `events` also
    --auth, --format, --insecure and --timeout. Now the same flags, read alike."""
    from router.cli import build_parser
    from router.commands.check import plugin_registry

    monkeypatch.chdir(ROOT / "examples")
    monkeypatch.setenv("OTHER_SECRET", "s")
    common = ["--config", "router.toml", "--username", "adm1", "--secret-env", "OTHER_SECRET"]
    tls = ["--url", "tls://127.0.0.1:5039", "--insecure", "--auth", "md5", "--timeout", "3.5"]
    asterisk = plugin_registry(build_parser().parse_args(["check", "--asterisk", *common, *tls]))
    cfg = asterisk.config.asterisk
    assert (cfg.url, cfg.verify, cfg.auth, cfg.request_timeout) == (
        "tls://127.0.0.1:5039",
        False,
        "md5",
        3.5,
    )
    ajam = ["--url", "http://127.0.0.1:8088/asterisk", "--auth", "digest", "--format", "mxml"]
    cfg = plugin_registry(build_parser().parse_args(["check", *common, *ajam])).config.asterisk
    assert (cfg.auth, cfg.format) == ("digest", "mxml")
    # And, as for `ami`, the secret never on the command line.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", *common, "--secret", "s"])
    # Every connection flag of `ami` and `events`, a new one too.
    import argparse

    from router.commands._connect import add_connection_arguments

    theirs = argparse.ArgumentParser()
    add_connection_arguments(theirs)
    subcommands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    checks = {o for a in subcommands.choices["check"]._actions for o in a.option_strings}
    assert {o for a in theirs._actions for o in a.option_strings} <= checks


def test_the_connection_flags_count_without_a_router_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no router.toml here the flags were replaced by check's stand-in
    settings: ``--manager-conf --username adm1`` wrote the lines for a user
    named "check", and ``--asterisk --url ... --username ... --secret-env``
    said "no router.toml to connect with", though ``run`` and ``ami`` connect
    with these flags alone (issue 16)."""
    from router.cli import build_parser
    from router.commands.check import plugin_registry

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        "version: 1\nrules:\n  - name: a\n    on: call\n"
        "    do:\n      - redirect: {context: queues, exten: sales}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OTHER_SECRET", "s")
    assert main(["check", "--manager-conf", "--username", "adm1"]) == 0
    assert "; the events callrouter asks for: add under [adm1]" in capsys.readouterr().out
    flags = ["--url", "tcp://127.0.0.1:5038", "--username", "adm1", "--secret-env", "OTHER_SECRET"]
    offline = plugin_registry(build_parser().parse_args(["check", "--asterisk", *flags]))
    assert offline.config.asterisk.url == "tcp://127.0.0.1:5038"
    assert offline.config.asterisk.username == "adm1"
    assert offline.config.asterisk.secret == "s"
    monkeypatch.delenv("OTHER_SECRET")
    offline = plugin_registry(build_parser().parse_args(["check", "--asterisk", *flags]))
    assert offline.asterisk_secret_missing == "OTHER_SECRET"
    capsys.readouterr()
    assert main(["check", "--asterisk", *flags]) == 1
    out = capsys.readouterr().out
    assert "no router.toml to connect with" not in out
    assert "OTHER_SECRET" not in out
    assert (
        "cannot log in: the environment variable secret_env (or --secret-env) names "
        "(the [asterisk] secret) is not set here"
    ) in out
    # --url and --username without --secret-env: CALLROUTER_SECRET, as for run.
    two = flags[:4]
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    offline = plugin_registry(build_parser().parse_args(["check", "--asterisk", *two]))
    assert offline.asterisk_secret_missing == "CALLROUTER_SECRET"
    monkeypatch.setenv("CALLROUTER_SECRET", "t")
    offline = plugin_registry(build_parser().parse_args(["check", "--asterisk", *two]))
    assert (offline.asterisk_secret_missing, offline.config.asterisk.secret) == (None, "t")


def test_check_does_not_echo_a_password_pasted_into_an_env_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``password_env = "<the password>"``: check warned "environment
    variable <the password> is not set here" before the plugin refused the
    value without showing it (issue 16)."""
    pasted = "Pa$$w0rd-1C!"
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        '[plugins.onec]\nurl = "http://1c.local/unf/hs/telephony"\nusername = "c"\n'
        f'password_env = "{pasted}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("CALLROUTER_SECRET", "x")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    assert pasted not in captured.out + captured.err
    assert "(value not shown)" in captured.out


def test_check_does_not_echo_a_lower_case_env_name_that_is_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``password_env = "hunter"`` (a valid name, likely the password itself):
    check's warning said "environment variable hunter is not set here"."""
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret_env = "swordfish"\n'
        '[plugins.onec]\nurl = "http://1c.local/unf/hs/telephony"\nusername = "c"\n'
        'password_env = "hunter"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("hunter", raising=False)
    monkeypatch.delenv("swordfish", raising=False)
    monkeypatch.chdir(tmp_path)
    main(["check", "--config", str(path), "--asterisk"])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "hunter" not in out
    assert "swordfish" not in out
    assert "[plugins.onec] password_env: the environment variable it names is not set here" in out
    assert (
        "cannot log in: the environment variable secret_env (or --secret-env) names "
        "(the [asterisk] secret) is not set here"
    ) in out


def _self_signed(folder: Path) -> tuple[Path, Path]:
    return tls_files.self_signed(folder, "good", alt=None)


@pytest.mark.parametrize("url", ["tls://pbx.example:5039", "https://pbx.example:8089/asterisk"])
@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ('verify = "bad.pem"\n', ":4: [asterisk] verify: '{bad}' holds no CA certificate in PEM"),
        (
            'verify = "good.pem"\nclient_cert = "bad.pem"\n',
            ":5: [asterisk] client_cert: cannot load '{bad}' (PEM files",
        ),
        (
            'verify = "good.pem"\nclient_cert = "good.pem"\nclient_key = "bad.pem"\n',
            ":5: [asterisk] client_cert: cannot load '{good}' and client_key '{bad}'",
        ),
    ],
)
def test_check_config_loads_the_tls_files_as_run_would(
    tmp_path: Path, url: str, keys: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's ``verify`` file that was no PEM passed ``check --config``
    (without --asterisk nothing loaded it) and failed only at ``run``."""
    cert, _ = _self_signed(tmp_path)
    (tmp_path / "bad.pem").write_text("not a certificate\n", encoding="utf-8")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "inbound.yaml").write_text(HOURS)
    path = tmp_path / "router.toml"
    head = f'[asterisk]\nurl = "{url}"\nusername = "router"\n'
    path.write_text(head + keys + 'secret = "s"\n[router]\nrules = ["rules"]\n')
    assert main(["check", "--config", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    expected = said.format(bad=tmp_path / "bad.pem", good=cert)
    assert lines[0].startswith(f"{path}{expected}"), lines
    assert lines[-1] == f"{path}: 1 error (configuration; rules not checked)"


@pytest.mark.parametrize("with_file", [False, True], ids=["no router.toml", "router.toml"])
@pytest.mark.parametrize("command", ["ami", "check"])
def test_a_ca_file_that_is_no_pem_is_blamed_on_the_command_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    with_file: bool,
    command: str,
) -> None:
    """``--ca-file NOT-A-PEM`` said ``router.toml: [asterisk] verify: ...``,
    with no router.toml there at all, or one that has no ``verify``: an
    administrator looked for a key that was never written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    if with_file:
        (tmp_path / "router.toml").write_text(
            '[asterisk]\nurl = "tcp://127.0.0.1:5038"\nusername = "router"\n', encoding="utf-8"
        )
    (tmp_path / "bad.pem").write_text("not a certificate\n", encoding="utf-8")
    flags = ["--url", "tls://127.0.0.1:1", "--username", "router", "--ca-file", "bad.pem"]
    argv = ["ami", "Ping", *flags] if command == "ami" else ["check", "--asterisk", *flags]
    code = main(argv)
    said = capsys.readouterr()
    text = said.out + said.err
    assert code != 0
    bad = tmp_path / "bad.pem"
    assert f"command line: --ca-file ([asterisk] verify): '{bad}' holds no CA certificate" in text
    assert "router.toml: [asterisk] verify" not in text
    # A flag's error is the command's own, on stderr, for check as for ami.
    assert said.err.splitlines()[-1].startswith(
        f"callrouter {command}: error: command line: --ca-file ([asterisk] verify): '{bad}' holds"
    )
    assert said.out == ""


@pytest.mark.parametrize("command", ["check", "ami", "events"])
def test_a_missing_ca_file_names_the_flag_and_the_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """``--ca-file ./missing.pem`` said ``command line: [asterisk] verify: no
    such file``: a key the person never typed. The flag is named, with the
    path it was read as."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLROUTER_SECRET", "s")
    (tmp_path / "router.toml").write_text(
        '[asterisk]\nurl = "tls://127.0.0.1:1"\nusername = "router"\n', encoding="utf-8"
    )
    argv = {
        "check": ["check", "--asterisk"],
        "ami": ["ami", "Ping"],
        "events": ["events"],
    }[command]
    assert main([*argv, "--ca-file", "./missing.pem"]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.splitlines() == [
        f"callrouter {command}: error: command line: --ca-file ([asterisk] verify): "
        f"no such file: '{tmp_path / 'missing.pem'}'"
    ]


def test_check_config_passes_tls_files_that_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _self_signed(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "inbound.yaml").write_text(HOURS)
    path = tmp_path / "router.toml"
    path.write_text(
        '[asterisk]\nurl = "tls://pbx.example:5039"\nusername = "router"\nsecret = "s"\n'
        'verify = "good.pem"\nclient_cert = "good.pem"\nclient_key = "good.key"\n'
        '[router]\nrules = ["rules"]\n'
    )
    assert main(["check", "--config", str(path)]) == 0
    assert capsys.readouterr().out.endswith(": 3 rules OK\n")


@pytest.mark.parametrize("url", ["tls://pbx.example:5039", "https://pbx.example:8089/asterisk"])
def test_check_config_refuses_an_encrypted_client_key_without_a_prompt(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenSSL asks for an encrypted key's pass phrase on the terminal when it
    is given no password callback: ``check --config`` (and ``run``) in an
    administrator's shell printed 'Enter PEM pass phrase:' and waited there."""
    cert, key = _self_signed(tmp_path)
    tls_files.encrypted_key(key, tmp_path / "enc.key", "secret")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "inbound.yaml").write_text(HOURS)
    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "router"\nsecret = "s"\n'
        'verify = "good.pem"\nclient_cert = "good.pem"\nclient_key = "enc.key"\n'
        '[router]\nrules = ["rules"]\n'
    )
    assert main(["check", "--config", str(path)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{path}:6: [asterisk] client_cert: cannot load '{cert}'"), first
    assert first.endswith("(PEM files; the key is encrypted: give an unencrypted PEM key)")


def _install_crm(monkeypatch: pytest.MonkeyPatch, make: Callable[[], object]) -> None:
    """The one installed plugin: 'crm' (package callrouter-crm 1.0), ``make()``
    at each load of its entry point, whatever this machine has installed."""

    class Entry:
        name, value = "crm", "callrouter_crm"
        dist = SimpleNamespace(name="callrouter-crm", version="1.0")

        def load(self) -> object:
            return make()

    monkeypatch.setattr("router.plugins.metadata.entry_points", lambda group: [Entry()])


class _CrashesOnSettings:
    """An installed plugin whose callrouter_configure has a bug."""

    __name__ = "crm"

    @hookimpl
    def callrouter_configure(self, settings: Mapping[str, Any]) -> None:
        settings["url"]  # a KeyError when the table lacks it


def test_check_fails_when_a_plugin_crashes_on_its_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """run logs such a plugin and starts it unconfigured (docs/plugins.md);
    check printed its traceback and then 'rules OK', exit 0 (issue 16)."""

    _install_crm(monkeypatch, _CrashesOnSettings)
    path = write(tmp_path, "[plugins.crm]\ntoken = 'x'\n")
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        "callrouter: plugin 'crm': callrouter_configure raised KeyError('url'), so "
        "callrouter run would start it without its settings; defined at "
    ) in out, out
    line = _CrashesOnSettings.callrouter_configure.__code__.co_firstlineno
    assert f"test_check_config.py:{line}\n" in out, out
    assert out.splitlines()[-1].endswith(": 1 error, 3 valid rules"), out


@pytest.mark.parametrize("command", ["check", "plugins"])
def test_a_plugin_s_crash_on_its_settings_is_said_once(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """check (and plugins --config) printed the failure in its own words and
    then again as the log's ERROR line on stderr (``callrouter check: error:
    plugin 'crm' failed in callrouter_configure: KeyError('url')``): one
    problem said twice, in two wordings. It is said once, in check's words."""

    _install_crm(monkeypatch, _CrashesOnSettings)
    path = write(tmp_path, "[plugins.crm]\ntoken = 'x'\n")
    main([command, "--config", str(path)])
    captured = capsys.readouterr()
    both = captured.out + captured.err
    assert both.count("KeyError('url')") == 1, both
    assert "callrouter_configure raised KeyError('url'), so callrouter run would start" in both


class _WrongAnswers:
    """An installed plugin whose hooks asked once at start answer wrongly."""

    __name__ = "crm"

    def __init__(self, hook: str) -> None:
        self.hook = hook

    @hookimpl
    def callrouter_wanted_events(self) -> object:
        return "Hangup" if self.hook == "wanted_events" else ("Hangup",)

    @hookimpl
    def callrouter_event(self, event: Any) -> None:
        return None

    @hookimpl
    def callrouter_wants_call_events(self) -> object:
        return "yes" if self.hook == "wants_call_events" else True

    @hookimpl
    def callrouter_call_event(self, event: Any) -> None:
        return None

    @hookimpl
    def callrouter_metrics(self, metrics: Any) -> None:
        if self.hook == "metrics":
            metrics.counter("crm_calls_total", "Calls.")


@pytest.mark.parametrize(
    ("hook", "said"),
    [
        (
            "wanted_events",
            "callrouter: plugin 'crm': callrouter_wanted_events failed with TypeError(\"expected "
            "event names or None, got 'Hangup'\"), so callrouter run would give it every event",
        ),
        (
            "wants_call_events",
            "callrouter: plugin 'crm': callrouter_wants_call_events failed with TypeError("
            "\"expected True, False or None, got 'yes'\"), so callrouter run would tell it "
            "call events",
        ),
        (
            "metrics",
            "callrouter: plugin 'crm': callrouter_metrics failed with ValueError(\"metric name "
            "'crm_calls_total': ",
        ),
    ],
)
def test_check_fails_when_a_plugin_answers_a_start_hook_wrongly(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    hook: str,
    said: str,
) -> None:
    """run logs each at ERROR and goes on without the answer; check printed the
    same ``error:`` line and then 'rules OK', exit 0 (a bad metric name it did
    not even ask), so a plugin's CI passed what run complains of (issue 16)."""

    _install_crm(monkeypatch, functools.partial(_WrongAnswers, hook))
    path = write(tmp_path, "[plugins.crm]\ntoken = 'x'\n")
    assert main(["check", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert said in out, out
    # Said once: not again as run's ERROR line on stderr.
    assert f"callrouter_{hook}" not in captured.err, captured.err
    if hook != "metrics":  # run's ERROR line names where the hook is written
        import asyncio

        from router.plugins import Plugins
        from router.testing import make_config

        plugins = Plugins.load(defaults=(), entry_points=False, extra=[_WrongAnswers(hook)])
        with caplog.at_level("ERROR", logger="router.plugins"):
            asyncio.run(plugins.configure(make_config({})))
            asyncio.run(plugins.wanted_events())
        line = getattr(_WrongAnswers, f"callrouter_{hook}").__code__.co_firstlineno
        [error] = [
            r.getMessage() for r in caplog.records if f"callrouter_{hook}:" in r.getMessage()
        ]
        assert error.endswith(f"test_check_config.py:{line}"), error
    # ... and where the hook is written, as for a hook's registration problem:
    # the answer was checked by callrouter, so no traceback pointed there.
    line = getattr(_WrongAnswers, f"callrouter_{hook}").__code__.co_firstlineno
    [said_line] = [text for text in out.splitlines() if said.split("\n")[0] in text]
    assert said_line.endswith(f"test_check_config.py:{line}"), out
    assert out.splitlines()[-1].endswith(": 1 error, 3 valid rules"), out


def test_the_guides_start_hook_lines_are_what_check_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/plugins.md quotes check's lines for a plugin's wrong answer and its
    crash on its settings, each naming the hook's file and line: the lines
    check prints are those, but for the file and line (issue 16)."""
    guide = " ".join((Path(__file__).parents[2] / "docs" / "plugins.md").read_text().split())
    quoted = {
        "wanted_events": re.search(
            r"`(callrouter: plugin 'crm': callrouter_wanted_events[^`]*)`", guide
        ),
        "configure": re.search(r"`(callrouter: plugin 'crm': callrouter_configure[^`]*)`", guide),
    }
    for hook, found in quoted.items():
        assert found is not None, hook
        doc_line = found.group(1)
        make = _CrashesOnSettings if hook == "configure" else functools.partial(_WrongAnswers, hook)
        _install_crm(monkeypatch, make)
        path = write(tmp_path, "[plugins.crm]\ntoken = 'x'\n")
        assert main(["check", "--config", str(path)]) == 1
        out = capsys.readouterr().out
        doc_start, _, doc_where = doc_line.partition("; defined at ")
        assert doc_where, doc_line
        [printed] = [line for line in out.splitlines() if line.startswith(doc_start)]
        assert re.fullmatch(re.escape(doc_start) + r"; defined at \S+\.py:\d+", printed), printed


class _MisspeltEvent:
    """An installed plugin that reads an event it misspells."""

    __name__ = "crm"

    @hookimpl
    def callrouter_wanted_events(self) -> tuple[str, ...]:
        return ("Hangupp",)

    @hookimpl
    def callrouter_event(self, event: Any) -> None:
        return None


@pytest.mark.parametrize("flags", [[], ["--manager-conf"], ["--manager-conf-file"]])
def test_check_says_a_plugins_misspelt_event_once(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
) -> None:
    """`check --manager-conf` printed the plugin's warning twice and
    `--manager-conf-file` three times: the lines the manager.conf needs came
    from an engine that loaded and asked the plugins again (issue 16)."""

    _install_crm(monkeypatch, _MisspeltEvent)
    path = write(tmp_path, "")
    if flags == ["--manager-conf-file"]:
        conf = tmp_path / "manager.conf"
        conf.write_text("[general]\nenabled = yes\nbindaddr = 127.0.0.1\n\n[router]\nsecret = x\n")
        flags = [*flags, str(conf)]
    main(["check", "--config", str(path), *flags])
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "names 'Hangupp'" in line]
    assert len(said) == 1, err


def test_check_fails_a_state_folder_run_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hdocs48's trial: operations.md says `check` reads router.toml as `run`
    does and validates every [router] key, and a deploy script runs it before a
    restart; a state_dir others may write in (0777) passed `check` with
    `10 rules OK`, and `run` then refused to start on it (issue 16). `check`
    says what `run` says, with its line, and exits 1; once fixed, it passes."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, f'state_dir = "{state}"\n')
    assert main(["check", "--config", "router.toml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"router.toml:7: [router] state_dir: {state} is writable by its group and every "
        "user (mode 0777): another user can put a symbolic link where callrouter's state "
        "files go and have callrouter write wherever it points; run: chmod 700 "
        f"{state} (docs/security.md, Local users and files)",
        "router.toml (rules): 1 error, 3 valid rules",
    ]
    state.chmod(0o700)
    assert main(["check", "--config", "router.toml"]) == 0
    assert capsys.readouterr().out == "router.toml (rules): 3 rules OK\n"


def test_check_leaves_a_missing_state_folder_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state_dir not made yet is no error: `run` makes it 0700."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, f'state_dir = "{tmp_path / "not-yet"}"\n')
    assert main(["check", "--config", "router.toml"]) == 0
    assert capsys.readouterr().out == "router.toml (rules): 3 rules OK\n"
    assert not (tmp_path / "not-yet").exists()
