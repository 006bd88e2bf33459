"""The engine never dies of one bad event, and never leaks its secret (issue 10, 7/12/13/15).

Each test plays the attack first (it ended ``serve()``, printed the secret or
the raw escape sequence on the code before the fix), then checks the safe
behaviour, on the replaying fake Asterisk of ``router.testing``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.ami.message import Event
from router.calls import Call, Fed
from router.config import load_config
from router.engine import Engine, EngineOptions
from router.metrics import exposition
from tests.unit.ami.tcp_fake import FakeAMI
from tests.unit.engine_tcp import engine_on_tcp

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]

RULES = """version: 1
rules:
  - name: everyone
    on: call
    do:
      - redirect: {context: callrouter-dial, exten: "101"}
"""

SECRET = "S3cr3t-0xC0FFEE-unique"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


# -- the serve guard -------------------------------------------------------------------


async def test_a_non_numeric_bridge_count_does_not_end_serve(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    """The review's crash: ``BridgeNumChannels: ²`` raised ValueError out of serve()."""
    engine = await engine_factory(rules)
    serving = engine._serve_task
    ajam_replay.queue_event(
        {
            "Event": "BridgeEnter",
            "Channel": "PJSIP/x-1",
            "Linkedid": "L1",
            "Uniqueid": "L1",
            "BridgeNumChannels": "²",
        }
    )
    channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await ajam_replay.settle(engine)
    assert serving is not None
    assert not serving.done()
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [channel]


async def test_a_bad_event_is_logged_once_and_skipped(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    rules: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any exception out of the tracker (a bug nobody foresaw) costs one event, not the service."""
    engine = await engine_factory(rules)
    feed = engine.tracker.feed

    def fragile(event: Event) -> Fed:
        if event.get("Linkedid") == "P1":
            raise RuntimeError("tracker bug")
        return feed(event)

    engine.tracker.feed = fragile  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, "router.engine")
    for _ in range(50):
        # An event the engine asks for (others are dropped before parsing).
        ajam_replay.queue_event({"Event": "Newstate", "Linkedid": "P1"})
    channel = ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await ajam_replay.settle(engine)
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] == [channel]
    skipped = [r for r in caplog.records if "Newstate skipped" in r.getMessage()]
    assert len(skipped) == 1  # throttled: not one line per bad event
    assert skipped[0].exc_info is not None


async def test_spawned_task_failures_are_logged_with_their_name(
    engine_factory: EngineFactory, rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_factory(rules)

    async def broken() -> None:
        raise RuntimeError("executor bug")

    caplog.set_level(logging.ERROR, "router.engine")
    engine._spawn(broken())
    await engine.wait_idle(5)
    await asyncio.sleep(0)
    assert any(
        "failed" in r.getMessage()
        and r.exc_info is not None
        and "executor bug" in str(r.exc_info[1])
        for r in caplog.records
    )


async def test_scheduler_jobs_log_their_failures_by_name(
    engine_factory: EngineFactory, rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_factory(rules)
    job = engine.scheduler.get_job("callrouter-sweep")
    assert job is not None

    def broken_sweep(*, force_oldest: bool = False) -> tuple[Call, ...]:
        raise RuntimeError("sweep bug")

    engine.tracker.sweep = broken_sweep  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, "router.engine")
    await job.func()  # what the scheduler runs; it must not raise
    assert any("background job sweep failed" in r.getMessage() for r in caplog.records)


# -- secrets (item 12) -----------------------------------------------------------------


async def test_secret_and_session_cookie_never_reach_any_output(
    tmp_path: Path, rules: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A secret of unique bytes, DEBUG for every logger (httpx and httpcore too), both
    HTTP clients on a real socket, an engine routing a call on the replay fake: the
    secret and the cookie value appear in no log record, repr or decision."""
    from router.ami.client import AJAMClient, ClientSettings
    from router.testing import ReplayAsterisk

    cookie = "c00k1e-0xBADF00D-unique"
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "router"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    outputs: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                body = b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b'Set-Cookie: mansession_id="'
                    + cookie.encode()
                    + b'"; Version=1; Max-Age=60\r\nContent-Length: '
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for kind in ("httpx", "native"):
            settings = ClientSettings(
                url=f"http://127.0.0.1:{port}/asterisk",
                username="router",
                secret=SECRET,
                http_client=kind,
            )  # type: ignore[arg-type]
            async with AJAMClient(settings) as client:
                await client.send("Ping", {}, validate=False)
                outputs += [repr(settings), repr(client), repr(client.settings)]
    finally:
        server.close()
        await server.wait_closed()

    replay = ReplayAsterisk(secret=SECRET)
    config_file = tmp_path / "router.toml"
    config_file.write_text(
        f'[asterisk]\nurl = "{replay.url}"\nusername = "router"\nsecret = "{SECRET}"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n'
        '[plugins]\ndisabled = ["onec"]\n'  # its table is still read, and must not leak
        f'[plugins.onec]\nusername = "router"\npassword = "{SECRET}"\nurl = "http://1c.test/hs"\n',
        encoding="utf-8",
    )
    config = load_config(config_file, environ={})
    engine = Engine(
        config,
        client=AJAMClient(ClientSettings.from_config(config.asterisk), transport=replay.transport),
    )
    try:
        await engine.start()
        serving = asyncio.ensure_future(engine.serve())
        replay.inbound_call(caller="79161234567", did="74950000001")
        await replay.settle(engine)
        outputs += [
            repr(config),
            repr(config.asterisk),
            repr(config.plugins),
            repr(engine),
            repr(engine.ami.settings),
            *(repr(r.to_dict()) for r in engine.records),
        ]
        engine.request_stop()
        await asyncio.wait_for(serving, 10)
    finally:
        await engine.stop()
    assert [r.outcome for r in engine.records] == ["executed"]

    captured = capfd.readouterr()
    outputs += [captured.out, captured.err]
    outputs += [record.getMessage() for record in caplog.records]
    outputs += [caplog.text]
    assert any("httpcore" in r.name for r in caplog.records)  # the DEBUG traffic was seen
    assert any("mansession_id" in r.getMessage() for r in caplog.records)
    for text in outputs:
        assert SECRET not in text
        assert cookie not in text


@pytest.mark.parametrize(
    "bad",
    [
        f'url = "http://router:{SECRET}@127.0.0.1:1/asterisk"\nusername = "router"\n',
        f'url = "ftp://router:{SECRET}@x"\nusername = "router"\n',
        f'url = "http://router:{SECRET}/x@127.0.0.1:1/"\nusername = "router"\n',
        f'url = "http://127.0.0.1:1/asterisk"\nusername = "router"\nsecret_env = "{SECRET}"\n',
        f'url = "http://127.0.0.1:1/asterisk"\nusername = "router"\nsecret = ["{SECRET}"]\n',
        'url = "http://127.0.0.1:1/asterisk"\nusername = "router"\nconnect_timeout = 0.5\n',
    ],
)
def test_cli_error_paths_never_print_the_secret(tmp_path: Path, bad: str) -> None:
    """``callrouter run`` at DEBUG with a bad config, a refused URL, an unreachable
    Asterisk (secret from the environment): stdout and stderr hold no secret."""
    config_file = tmp_path / "router.toml"
    config_file.write_text("[asterisk]\n" + bad, encoding="utf-8")
    config_file.chmod(0o600)
    env = {**os.environ, "CALLROUTER_SECRET": SECRET}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "router.cli",
            "run",
            "--config",
            str(config_file),
            "--log-level",
            "DEBUG",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip()
    assert SECRET not in done.stdout
    assert SECRET not in done.stderr


# -- state files and secret files (item 13) -------------------------------------------


def test_world_readable_config_with_a_secret_is_warned_about(tmp_path: Path) -> None:
    from router.config import exposed_secret_files

    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\n'
        f'username = "router"\nsecret = "{SECRET}"\n',
        encoding="utf-8",
    )
    path.chmod(0o644)
    warnings = exposed_secret_files(load_config(path, environ={}))
    assert len(warnings) == 1
    assert "readable by group or others" in warnings[0]
    assert "chmod 600" in warnings[0]
    assert SECRET not in warnings[0]
    path.chmod(0o600)
    assert exposed_secret_files(load_config(path, environ={})) == []
    # A secret from the environment: the file holds none, nothing to say.
    path.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n',
        encoding="utf-8",
    )
    path.chmod(0o644)
    assert exposed_secret_files(load_config(path, environ={"CALLROUTER_SECRET": "x"})) == []


def test_a_plugin_password_from_the_environment_is_no_secret_in_the_file(
    tmp_path: Path,
) -> None:
    """``password_env`` names a variable (docs/onec.md recommends it): a
    router.toml with only such names must not be called a file that holds a
    secret; a plugin's ``password`` written in it still is."""
    from router.config import exposed_secret_files

    path = tmp_path / "router.toml"
    head = '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
    plugin = '[plugins.onec]\nurl = "http://1c.local/unf/hs/telephony"\nusername = "c"\n'
    path.write_text(head + plugin + 'password_env = "ONEC_PASSWORD"\n', encoding="utf-8")
    path.chmod(0o644)
    environ = {"CALLROUTER_SECRET": "x", "ONEC_PASSWORD": "y"}
    assert exposed_secret_files(load_config(path, environ=environ)) == []
    path.write_text(head + plugin + f'password = "{SECRET}"\n', encoding="utf-8")
    warnings = exposed_secret_files(load_config(path, environ=environ))
    assert [w.split(":")[0] for w in warnings] == [str(path)]


def test_a_secret_file_of_another_user_is_not_advised_chmod_600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the systemd unit callrouter runs as a DynamicUser= and reads
    root's router.toml: chmod 600 would lock it out of its own configuration
    at the next restart. The warning says to move the secret instead."""
    from router import config as config_module
    from router.config import exposed_secret_files

    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\n'
        f'username = "router"\nsecret = "{SECRET}"\n',
        encoding="utf-8",
    )
    path.chmod(0o644)
    owner = path.stat().st_uid
    monkeypatch.setattr(config_module.os, "geteuid", lambda: owner + 61934)
    (warning,) = exposed_secret_files(load_config(path, environ={}))
    assert "chmod 600 would lock callrouter out" in warning
    assert "put the secret in the environment instead (secret_env" in warning
    assert "run: chmod 600" not in warning
    assert SECRET not in warning


def test_a_secret_pasted_into_a_plugin_env_key_is_still_a_secret_in_the_file(
    tmp_path: Path,
) -> None:
    """Only a variable's name makes a ``*_env`` key no secret: the password
    itself pasted there (``password_env = "..."``, the usual slip, which
    ``secret_env`` refuses as "not the secret itself") is a secret readable
    by group or others, and was no longer warned about (issue 16)."""
    from router.config import exposed_secret_files

    path = tmp_path / "router.toml"
    head = '[asterisk]\nurl = "http://127.0.0.1:8088/asterisk"\nusername = "router"\n'
    plugin = '[plugins.onec]\nurl = "http://1c.local/unf/hs/telephony"\nusername = "c"\n'
    environ = {"CALLROUTER_SECRET": "x"}
    for pasted in ("Pa$$w0rd-1C!", "correct horse battery staple"):
        path.write_text(head + plugin + f'password_env = "{pasted}"\n', encoding="utf-8")
        path.chmod(0o644)
        warnings = exposed_secret_files(load_config(path, environ=environ))
        assert [w.split(":")[0] for w in warnings] == [str(path)], pasted


def test_cli_run_warns_at_start(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "http://127.0.0.1:1/asterisk"\n'
        f'username = "router"\nsecret = "{SECRET}"\nconnect_timeout = 0.5\n',
        encoding="utf-8",
    )
    path.chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "holds a secret but is readable by group or others (mode 0644)" in done.stderr
    assert SECRET not in done.stderr


async def test_state_dir_is_created_private(
    tmp_path: Path, ajam_replay: ReplayAsterisk, rules: Path
) -> None:
    from router.config import Config, RouterSettings
    from router.plugins import Plugins

    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        engine = Engine(
            Config(
                asterisk=ajam_replay.asterisk_settings(),
                router=RouterSettings(rules=(rules,), state_dir=state),
            ),
            plugins=Plugins.load(entry_points=False),
            client=ajam_replay.client(),
        )
        assert engine.state_dir == state
    finally:
        os.umask(old)
    await engine.ami.aclose()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


# -- control characters in the text log (item 15) ---------------------------------------


async def test_escape_sequences_from_the_caller_are_escaped_in_the_text_log(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    rules: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from router.logsafe import TextFormatter

    hostile = "7916\x1b]0;pwned\x07\x1b[2J\u202e1234\n2026-12-01 fake line\x9b31m"
    engine = await engine_factory(rules)
    caplog.set_level(logging.INFO, "router.decision")
    ajam_replay.inbound_call(caller=hostile, did="7495\x1b[31m0000001")
    await ajam_replay.settle(engine)
    lines = [r for r in caplog.records if r.name == "router.decision"]
    assert lines
    formatter = TextFormatter("%(message)s")
    for record in lines:
        for text in (record.getMessage(), formatter.format(record)):
            for raw in ("\x1b", "\x07", "\u202e", "\n", "\x9b"):
                assert raw not in text


def test_formatters_escape_controls_in_every_line() -> None:
    from router.logsafe import JsonFormatter, TextFormatter

    record = logging.LogRecord(
        "router.engine",
        logging.WARNING,
        __file__,
        1,
        "caller %s",
        ("\x1b[2J\x85\u2028\u2066x\x7f",),
        None,
    )
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    assert text == "WARNING caller \\x1b[2J\\x85\\u2028\\u2066x\\x7f"
    line = JsonFormatter().format(record)
    for raw in ("\x1b", "\x85", "\u2028", "\u2066", "\x7f"):
        assert raw not in line
    import json

    assert json.loads(line)["message"] == "caller \x1b[2J\x85\u2028\u2066x\x7f"
    decision = logging.LogRecord(
        "router.decision", logging.INFO, __file__, 1, '{"caller": "\u2028\x9b"}', None, None
    )
    assert json.loads(JsonFormatter().format(decision)) == {
        "caller": "\u2028\x9b",
        "ts": round(decision.created, 3),
    }
    assert "\u2028" not in JsonFormatter().format(decision)


async def test_stop_finishes_and_says_so_when_plugin_shutdown_fails(
    engine_factory: EngineFactory, rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await engine_factory(rules)

    async def broken(engine: object, *, timeout: float = 10.0) -> None:
        raise RuntimeError("plugin shutdown bug")

    engine.plugins.shutdown = broken  # type: ignore[method-assign]
    engine.request_stop()
    await engine.stop()
    assert not engine.scheduler.running
    assert not engine.ami.logged_in
    assert any(
        "plugin shutdown failed" in r.getMessage() and r.exc_info is not None
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("part", "step", "said"),
    [
        # During the call life's stop: the plugins' shutdown, the scheduler and
        # the AMI logoff were skipped.
        ("calllife", "stop", "saving the call life mark"),
        # In the stop's first half (the API server, the feed, the live-instance
        # guard, the drain): every close after it was skipped, the state
        # folder's lock kept.
        ("live_instance", "leave", "leaving the live-instance guard"),
    ],
)
async def test_a_stop_cancelled_on_its_way_still_closes_the_rest(
    engine_factory: EngineFactory,
    rules: Path,
    caplog: pytest.LogCaptureFixture,
    part: str,
    step: str,
    said: str,
) -> None:
    """A cancellation (the shutdown's timeout, a second Ctrl-C) that hits the
    stop in one of its steps skipped every close after it (issue 16): they all
    run, then the cancellation is raised, and the WARNING names the step."""
    engine = await engine_factory(rules)
    entered = asyncio.Event()
    shut_down: list[object] = []

    async def stuck() -> None:
        entered.set()
        await asyncio.Event().wait()

    async def shutdown(engine: object, *, timeout: float = 10.0) -> None:
        shut_down.append(engine)

    setattr(getattr(engine, part), step, stuck)
    engine.plugins.shutdown = shutdown  # type: ignore[method-assign]
    assert engine.ami.logged_in
    stopping = asyncio.ensure_future(engine.stop())
    await entered.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert stopping.cancelled()
    assert shut_down == [engine.api]
    assert not engine.scheduler.running
    assert not engine.ami.logged_in
    assert any(f"cancelled during {said}" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("only_shipped_plugins")
async def test_a_listing_whose_closing_event_has_a_line_too_long_stops_no_reconcile_over_tcp(
    tmp_path: Path,
) -> None:
    """Issue 16: over ``tcp://`` the ``CoreShowChannelsComplete`` closing the
    listing, with a line of over 64 KiB (a hostile AMI peer's), was skipped:
    the list never ended and every reconcile waited for it until its action
    timed out. The list ends; the reconcile at start succeeds, on the first
    session."""

    def hostile(fake: FakeAMI) -> None:
        fake.long_closing = "x" * (70 * 1024)

    async with engine_on_tcp(tmp_path, RULES, setup=hostile) as (engine, fake, _):
        text = exposition(engine.metrics).decode()
        assert 'callrouter_reconciles_total{result="ok",trigger="start"} 1.0' in text
        assert 'callrouter_reconciles_total{result="failed",trigger="start"} 0.0' in text
        assert fake.logins == 1


async def test_a_stop_cancelled_during_the_drain_cancels_the_decisions_and_closes(
    engine_factory: EngineFactory, rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop cancelled while it waits for the decisions in flight cancels them
    (as a second stop request does) and closes the rest: the drain and the
    cancelling of what it left are steps of their own (issue 16)."""
    engine = await engine_factory(
        rules, options=EngineOptions(watch_interval=0, live_heartbeat=0, drain_timeout=3600)
    )
    decision = asyncio.ensure_future(asyncio.sleep(3600))  # a lookup that never ends
    engine.router._track(decision)
    draining = asyncio.Event()
    drain = engine._drain_in_stop

    async def drain_in_stop() -> None:
        draining.set()
        await drain()

    engine._drain_in_stop = drain_in_stop  # type: ignore[method-assign]
    stopping = asyncio.ensure_future(engine.stop())
    await draining.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert decision.cancelled()
    assert not engine.scheduler.running
    assert not engine.ami.logged_in
    # Said as what happened: no second stop signal came.
    said = [r.getMessage() for r in caplog.records if "in flight was cancelled" in r.getMessage()]
    assert said, caplog.text
    assert said[0].startswith("stop: the stop was cancelled: 1 decision in flight was cancelled")


@pytest.mark.parametrize("field", ["CallerIDNum", "Exten"])
async def test_a_request_whose_number_brought_a_heartbeat_name_in_is_refused_as_such(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    rules: Path,
    caplog: pytest.LogCaptureFixture,
    field: str,
) -> None:
    """hreview48, measured on the sandbox's Asterisk 22: a call to
    ``sip:74951234567%0D%0AUserEvent%3A%20CallRouterLive@...`` made its request
    read as a router's heartbeat (the first ``UserEvent`` line is the dialled
    number's): the guard took it and warned of a heartbeat "forged by a
    manager user, an API token or a rule", and the tracker never saw the key
    twice. A caller's line is the tracker's to refuse, naming it."""
    engine = await engine_factory(rules)
    number = {"CallerIDNum": "79161234567", "Exten": "74950000001"}
    number[field] += "\r\nUserEvent: CallRouterLive"
    ajam_replay.queue_rawman(
        "Event: UserEvent\r\nPrivilege: user,all\r\nChannel: PJSIP/pstn-00000000\r\n"
        f"ChannelState: 4\r\nChannelStateDesc: Ring\r\nCallerIDNum: {number['CallerIDNum']}\r\n"
        "CallerIDName: <unknown>\r\nConnectedLineNum: <unknown>\r\n"
        "ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\n"
        f"Context: callrouter-inbound\r\nExten: {number['Exten']}\r\nPriority: 8\r\n"
        "Uniqueid: sandbox-1796665865.0\r\nLinkedid: sandbox-1796665865.0\r\n"
        "UserEvent: CallRouterRequest\r\nDID: 74950000001\r\nWait: 4\r\n\r\n".encode()
    )
    await ajam_replay.settle(engine)
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "CallRouterLive heartbeat" in m], said
    assert engine.tracker.refused == 1
    assert any("with two UserEvent lines is not tracked" in m for m in said), said
