"""``callrouter history replay`` over a CEL store written as cel_sqlite3_custom does."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from router.calllife.model import CallEvent
from router.calllife.sources import open_source
from router.cli import main
from router.commands.history import parse_moment
from router.config import load_config
from router.testing.cel import Cel, answered_call, write_sqlite


def config(tmp_path: Path, cel: Path | None) -> Path:
    return cel_config(tmp_path, None if cel is None else f"sqlite://{cel}")


def cel_config(tmp_path: Path, url: str | None) -> Path:
    """router.toml in ``tmp_path``: an Asterisk and, unless None, ``[history]
    cel = url`` on line 6 (where check's errors point)."""
    path = tmp_path / "router.toml"
    history = f'[history]\ncel = "{url}"\n' if url is not None else ""
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        'secret = "s"\n' + history,
        encoding="utf-8",
    )
    return path


def missed_call() -> Cel:
    cel = Cel("pbx-1700000100.9", start=1_700_000_100.0)
    trunk = cel.channel("PJSIP/pstn", first=True, cid_num="\x1b[2J89161234567", exten="74951234567")
    legs = [cel.channel(f"PJSIP/{n}") for n in ("101", "102", "103")]
    cel.tick(20)
    for leg in legs:
        cel.hangup(leg, cause=19)
    cel.hangup(trunk, dialstatus="NOANSWER")
    cel.end()
    return cel


def test_parse_moment() -> None:
    assert parse_moment("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_moment("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_moment("1d", now=100_000.0) == 100_000.0 - 86400
    assert parse_moment("2026-12-01T09:00:00+00:00") == 1_796_115_600.0
    with pytest.raises(ValueError, match="'yesterday': expected a time like"):
        parse_moment("yesterday")


def test_dry_run_prints_each_calls_story(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records + missed_call().records)
    code = main(
        ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", "--dry-run",
         "--config", str(config(tmp_path, db))]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("call pbx-1700000000.1  in  89161234567 -> 74951234567")
    assert [line.split()[1] for line in lines[1:4]] == ["ringing", "answered", "hangup"]
    assert "hangup      101 ANSWER by 101, talk 20.0 s" in out
    assert lines[4].startswith("call pbx-1700000100.9  in  \\x1b[2J89161234567")  # escaped
    assert "\x1b" not in out
    assert [line.split()[1] for line in lines[5:]] == ["ringing"] * 3 + ["hangup", "missed"]


def test_dry_run_json_and_the_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records + missed_call().records)
    cfg = str(config(tmp_path, db))
    assert main(
        ["history", "replay", "--since", "2023-11-14T22:14:00+00:00",
         "--until", "2023-11-14T22:16:00+00:00", "--dry-run", "--json", "--config", cfg]
    ) == 0  # fmt: skip
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {e["call_id"] for e in events} == {"pbx-1700000100.9"}  # the first call is before
    assert [e["kind"] for e in events][-2:] == ["hangup", "missed"]
    assert all(e["replayed"] for e in events)


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry-run", "told"])
def test_replay_needs_no_ami_secret(
    dry_run: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Replay never logs in to Asterisk (history.md), yet a router.toml with
    ``secret_env``, as the systemd unit's is, refused it in a shell without
    the variable: ``[asterisk] secret_env: environment variable
    CALLROUTER_SECRET is not set or empty``, exit 1."""
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
        f'secret_env = "CALLROUTER_SECRET"\n[router]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[history]\ncel = "sqlite://{db}"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("CALLROUTER_SECRET", raising=False)
    (tmp_path / "state").mkdir()
    code = main(
        ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", *dry_run,
         "--config", str(cfg)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "pbx-1700000000.1" in out if dry_run else "1 call, 3 events" in out
    assert "CALLROUTER_SECRET" not in os.environ


def test_replay_refuses_a_state_dir_no_service_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The systemd unit's service keeps its state in $STATE_DIRECTORY, which a
    root shell lacks: with no ``state_dir`` in router.toml the replay took
    ``./state`` beside it, made it, and queued the 1C history there, a file the
    service never sends from, saying ``1 call, 3 events handed to the plugins``."""
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = config(tmp_path, db)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    argv = ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", "--config", str(cfg)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{cfg}: [router] state_dir: no folder {tmp_path / 'state'}, so callrouter run" in err
    assert 'set state_dir = "/var/lib/callrouter"' in err
    assert not (tmp_path / "state").exists()
    # --dry-run shares nothing with the service: it prints as before.
    assert main([*argv, "--dry-run"]) == 0
    # As the service (systemd's $STATE_DIRECTORY) or with the folder named: told.
    service = tmp_path / "var-lib-callrouter"
    service.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", str(service))
    assert main(argv) == 0
    assert "1 call, 3 events handed to the plugins" in capsys.readouterr().out


def test_replay_refuses_a_state_dir_another_user_owns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The systemd unit's DynamicUser owns /var/lib/callrouter; a replay run
    from a root shell created the 1C queue there as root, 0600, which the
    service could not open at its next start (systemd re-owns the folder's
    contents only when the folder is not the service's). Refused before
    anything is written, with how to run it as the service's user."""
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = config(tmp_path, db)
    state = tmp_path / "state"
    state.mkdir()
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(f'[router]\nstate_dir = "{state}"\n')
    owner = state.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # another user runs it
    argv = ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", "--config", str(cfg)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"[router] state_dir {state} belongs to uid {owner} (the service's user)" in err
    assert f"runs as uid {owner + 1}" in err
    assert "systemd-run --pipe --wait -p DynamicUser=yes -p User=callrouter" in err
    assert "runuser -u THAT_USER -- callrouter history replay" in err
    assert list(state.iterdir()) == []
    # --dry-run writes nothing: allowed; and as the owner the replay is told.
    assert main([*argv, "--dry-run"]) == 0
    monkeypatch.setattr(os, "geteuid", lambda: owner)
    assert main(argv) == 0
    assert "1 call, 3 events handed to the plugins" in capsys.readouterr().out


def test_replay_refuses_a_state_dir_others_can_write_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the service's start does (issue 16): the replay opens the 1C queue
    there by name, and another user could swap a link in and have it followed."""
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = config(tmp_path, db)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(f'[router]\nstate_dir = "{state}"\n')
    argv = ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", "--config", str(cfg)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        f"[router] state_dir: {state} is writable by its group and every user (mode 0777)"
    ) in err
    assert f"run: chmod 700 {state} (docs/security.md, Local users and files)" in err
    assert list(state.iterdir()) == []
    state.chmod(0o700)
    assert main(argv) == 0
    assert "1 call, 3 events handed to the plugins" in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another uid needs root")
def test_replay_refuses_a_plugin_state_dir_another_user_owns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plugin may queue in a folder of its own (``[plugins.onec] state_dir``,
    relative to router.toml): the replay's files there must be the service's
    user's too, so that folder is checked like ``[router] state_dir``."""
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = config(tmp_path, db)
    state = tmp_path / "state"
    state.mkdir()
    queue = tmp_path / "onec-queue"
    queue.mkdir()
    os.chown(queue, 4242, 4242)  # the service's DynamicUser
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(f'[router]\nstate_dir = "{state}"\n[plugins.onec]\nstate_dir = "onec-queue"\n')
    argv = ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", "--config", str(cfg)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{cfg}:10: [plugins.onec] state_dir {queue} belongs to uid 4242" in err
    assert f"runs as uid {os.geteuid()}" in err
    assert list(queue.iterdir()) == []
    assert list(state.iterdir()) == []


def test_no_store_configured_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["history", "replay", "--since", "1h", "--config", str(config(tmp_path, None))])
    assert code == 1
    assert "[history] cel: not set" in capsys.readouterr().err


def test_a_missing_file_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(config(tmp_path, tmp_path / "nope.db"))
    assert main(["history", "replay", "--since", "1h", "--dry-run", "--config", cfg]) == 1
    assert "[history] cel: " in capsys.readouterr().err


DOCS = [Path(__file__).parents[3] / "docs" / "history.md"]
DOCS.append(DOCS[0].parent / "ru" / "history.md")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name + ("(ru)" if "ru" in p.parts else ""))
def test_documented_replay_commands_parse(page: Path) -> None:
    """Every ``callrouter history`` command the page shows is accepted as written."""
    import shlex

    from router.cli import build_parser

    text = page.read_text(encoding="utf-8")
    commands = re.findall(r"^(callrouter history [^#\n]+?)\s*(?:#.*)?$", text, re.M)
    assert len(commands) >= 2
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert args.func is not None
        assert isinstance(args.since, float)  # parse_moment's, as --since's type


def test_the_pages_have_the_same_sections() -> None:
    english, russian = (re.findall(r"^#+ ", p.read_text(encoding="utf-8"), re.M) for p in DOCS)
    assert english == russian


def test_replay_hands_the_events_to_started_plugins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --dry-run the plugins are started (a history queue opens there),
    told every event in order, and shut down (the queue is flushed there)."""
    from router.hookspecs import EngineAPI, hookimpl
    from router.plugins import Plugins

    seen: list[str] = []

    class Queueing:
        __name__ = "queueing"

        @hookimpl
        def callrouter_startup(self, engine: EngineAPI) -> None:
            seen.append(f"startup {engine.state_dir.name} connected={engine.connected}")

        @hookimpl
        def callrouter_call_event(self, event: CallEvent) -> None:
            seen.append(f"{event.kind} {event.extension} replayed={event.replayed}")

        @hookimpl
        def callrouter_shutdown(self) -> None:
            seen.append("shutdown")

    real = Plugins.for_config.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        Plugins,
        "for_config",
        classmethod(lambda cls, config, extra=(): real(cls, config, extra=[Queueing()])),
    )
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = config(tmp_path, db)
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(f'[router]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()  # the service's, kept by callrouter run
    assert main(["history", "replay", "--since", "2023-11-14T00:00:00+00:00",
                 "--config", str(cfg)]) == 0  # fmt: skip
    assert seen == [
        "startup state connected=False",
        "ringing 101 replayed=True",
        "answered 101 replayed=True",
        "hangup 101 replayed=True",
        "shutdown",
    ]
    assert "1 call, 3 events handed to the plugins" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("cel", "said"),
    [
        ("sqlite://{tmp}", r"\[history\] cel: '.*' is a folder, not cel_sqlite3_custom's file"),
        ("sqlite://{tmp}/nope/cel.db", r"\[history\] cel: '.*cel\.db': no such folder"),
        ("postgresql://u@db:99999/asterisk", r"\[history\] cel: the postgresql:// url has a bad"),
        # hleft33's trial: an unclosed '[' was a ValueError traceback (sqlite) or
        # "a bad port" (postgresql, whose url is not quoted back: it may hold a password).
        ("sqlite://[bad/cel.db", r"\[history\] cel: not a URL \(Invalid IPv6 URL\): 'sqlite"),
        (
            "postgresql://u:pw@[db/asterisk",
            r"\[history\] cel: the postgresql:// url is not a URL \(Invalid IPv6 URL\)$",
        ),
    ],
)
def test_a_cel_store_that_cannot_be_is_told_at_load_with_its_line(
    tmp_path: Path, cel: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """These failed only when the store was read ("[history] cel: ...", no
    line): at the call life's first replay or in `callrouter history`. A file
    not there yet is no error: Asterisk creates it with its first record."""
    path = cel_config(tmp_path, cel.format(tmp=tmp_path))
    assert main(["check", "--config", str(path)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{path}:6: "), first
    assert re.search(said, first), first
    later = load_config(config(tmp_path, tmp_path / "later.db")).history
    assert later.sqlite_path == tmp_path / "later.db"


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["open", "sticky"])
def test_a_cel_store_in_a_folder_every_user_writes_is_refused_at_load(
    tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite opens cel_sqlite3_custom's file and its -journal, -wal and -shm
    by name (it reads the /proc/self/fd link it is given and opens the name
    found): in a folder every user writes (/tmp too, sticky: a name not yet
    there is anyone's to make), a FIFO at one of them held the replay's
    thread for ever, a hot journal was rolled into the store (issue 16)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    path = cel_config(tmp_path, f"sqlite://{shared}/cel.db")
    assert main(["check", "--config", str(path)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"{path}:6: [history] cel: '{shared}/cel.db': its folder '{shared}' is writable by "
        f"every user (mode {mode:04o}): any local user could put a file of their own at the "
        "database's name or its -journal, -wal or -shm, which SQLite opens by name; keep "
        "cel_sqlite3_custom's file in a folder only Asterisk's user and root may write "
        "(docs/history.md)"
    ), first
    shared.chmod(0o755)  # Asterisk's own log folder
    assert load_config(config(tmp_path, shared / "cel.db")).history.sqlite_path == shared / "cel.db"


def test_a_sqlite_url_with_four_slashes_reads_the_same_file(tmp_path: Path) -> None:
    """Issue 16, seen on the sandbox: `cel = "sqlite:////var/.../cel.db"` (four
    slashes, SQLAlchemy's way to write an absolute path) passed `check` and the
    start, and every replay then failed with SQLite's "invalid uri authority:
    var". It names the same file as three slashes do, and is read."""
    db = tmp_path / "cel.db"
    call = answered_call()
    write_sqlite(db, call.records)
    path = cel_config(tmp_path, f"sqlite:///{db}")
    history = load_config(path).history
    assert history.sqlite_path == db
    source = open_source(history)
    assert source is not None
    assert list(source.read(0)) == [call.linkedid]


def test_a_postgresql_store_without_psycopg_is_told_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    path = cel_config(tmp_path, "postgresql://u@db/asterisk")
    assert main(["check", "--config", str(path)]) == 1
    assert capsys.readouterr().out.startswith(
        f"{path}:6: [history] cel: a postgresql:// source needs psycopg 3: "
        "pip install 'psycopg>=3.1' into callrouter's environment (its pgsql extra)"
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--since", "yesterday"],
            "argument --since: 'yesterday': expected a time like '2026-12-01T09:00' or an "
            "age like '2h', '30m', '1d'",
        ),
        (["--since", "2h", "--until", "noon"], "argument --until: 'noon': expected a time"),
        (["--since", "1h", "--until", "2h"], "--until is before --since: no call is between"),
    ],
)
def test_a_time_it_cannot_take_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    """hleft33's trial: `--since yesterday` exited 1, as a runtime error, and
    named the command twice (`callrouter history replay: error: history
    replay: ...`); `--until` before `--since` replayed nothing, silently. Each
    is a usage error now: exit 2, the usage, the error, before router.toml is
    read."""
    command = ["history", "replay", *argv, "--config", str(tmp_path / "none.toml")]
    try:
        code = main(command)
    except SystemExit as exc:  # argparse's own (a type= that refuses)
        code = int(str(exc.code))
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    usage, *_, error = err.strip().splitlines()
    assert usage.startswith("usage: callrouter history replay [-h] --since SINCE"), err
    assert error.startswith(f"callrouter history replay: error: {said}"), error


@pytest.mark.parametrize("hook", ["callrouter_call_event", "callrouter_shutdown"])
def test_a_plugin_that_fails_makes_the_replay_fail(
    hook: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plugin's failure while the replay ran (the 1C plugin's shutdown cut
    off at 10 s) was said as `error:` and the command exited 0, as if the
    events were queued (issue 16): it exits 1, saying why last."""
    from router.hookspecs import hookimpl
    from router.plugins import Plugins

    class Failing:
        __name__ = "failing"

    def fails(self: object, **_: object) -> None:
        raise RuntimeError("disk gone")

    if hook == "callrouter_call_event":

        def told(self: object, event: CallEvent) -> None:
            fails(self)

        Failing.callrouter_call_event = hookimpl(told)  # type: ignore[attr-defined]
    else:

        def stopped(self: object) -> None:
            fails(self)

        Failing.callrouter_shutdown = hookimpl(stopped)  # type: ignore[attr-defined]
    real = Plugins.for_config.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        Plugins,
        "for_config",
        classmethod(lambda cls, config, extra=(): real(cls, config, extra=[Failing()])),
    )
    db = tmp_path / "cel.db"
    write_sqlite(db, answered_call().records)
    cfg = config(tmp_path, db)
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(f'[router]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()
    argv = ["history", "replay", "--since", "2023-11-14T00:00:00+00:00", "--config", str(cfg)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 call, 3 events handed to the plugins" in captured.out
    last = captured.err.strip().splitlines()[-1]
    # Every failure counts, each call's first one is said (one call here).
    times = "3 times" if hook == "callrouter_call_event" else "1 time"
    assert last.startswith(f"callrouter history replay: error: a plugin failed {times} (above)")
    assert f"callrouter history replay: error: plugin 'failing' failed in {hook}" in captured.err
