"""Start and stop: a broken rule set refuses to start (issue 11 item 7); SIGTERM
finishes and confirms the decisions in flight before the stream stops (item 10)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.engine import Engine, EngineOptions
from router.errors import RulesRefused
from router.hookspecs import hookimpl
from router.rules.registry import Registry
from tests.unit.cli_code import run_cli
from tests.unit.state_lock import holding, locking_engine

if TYPE_CHECKING:
    from router.testing import EngineFactory, ReplayAsterisk

pytest_plugins = ["router.testing"]


GOOD = """version: 1
rules:
  - name: default
    on: call
    do:
      - redirect: {context: queues, exten: sales}
"""
# Three problems in two files: an expression that does not parse, an unknown
# lookup, and a file that is not YAML at all.
BROKEN = """version: 1
rules:
  - name: vip
    on: call
    if: caller.number ==
    do:
      - redirect: {context: queues, exten: vip}
  - name: owner
    on: call
    lookup:
      who: no_such_lookup(caller.number)
    do:
      - redirect: {context: queues, exten: owner}
"""
NOT_YAML = "version: 1\nrules:\n  - name: x\n    do: [{redirect: "


def write_rules(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a-good.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "b-broken.yaml").write_text(BROKEN, encoding="utf-8")
    (folder / "c-not-yaml.yaml").write_text(NOT_YAML, encoding="utf-8")
    return folder


async def test_start_refuses_rules_with_problems_before_logging_in(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "rules")
    with pytest.raises(RulesRefused) as caught:
        await engine_factory(rules)
    problems = caught.value.problems
    assert len(problems) == 3
    assert all(":" in p and p.split(":")[0].endswith(".yaml") for p in problems)
    assert sorted(p.split(":")[0].rsplit("/", 1)[-1] for p in problems) == [
        "b-broken.yaml",
        "b-broken.yaml",
        "c-not-yaml.yaml",
    ]
    assert all(p.split(":")[1].isdigit() for p in problems), problems  # file:line
    # In file, then line order, as `callrouter check` prints them; the YAML
    # error is found in an earlier pass than b-broken.yaml's expressions.
    places = [(p.split(":")[0].rsplit("/", 1)[-1], int(p.split(":")[1])) for p in problems]
    assert places == [("b-broken.yaml", 5), ("b-broken.yaml", 11), ("c-not-yaml.yaml", 4)]
    assert ajam_replay.count("Login") == 0  # refused before touching Asterisk


def write_run_config(tmp_path: Path, state_dir: Path) -> Path:
    """``tmp_path/router.toml`` for ``callrouter run`` with one good rule file,
    ``state_dir`` on line 7, an Asterisk that is not there and the API on a
    free port: for a start refused before it touches Asterisk."""
    (tmp_path / "rules.yaml").write_text(GOOD, encoding="utf-8")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    config = tmp_path / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "http://127.0.0.1:9/asterisk"\nusername = "u"\n'
        f'secret_env = "CR_SECRET"\n[router]\nrules = ["{tmp_path / "rules.yaml"}"]\n'
        f'state_dir = "{state_dir}"\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return config


def test_callrouter_run_refuses_to_start_and_agrees_with_check(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules")
    config = tmp_path / "router.toml"
    # Port 9 (discard): nothing listens; a refused start must not even try.
    config.write_text(
        f'[asterisk]\nurl = "http://127.0.0.1:9/asterisk"\nusername = "u"\n'
        f'secret_env = "CR_SECRET"\n[router]\nrules = ["{rules}"]\n'
        f'state_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    run = run_cli("run", "--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "ready" not in run.stderr
    assert "callrouter run: error: not started: 3 problems" in run.stderr
    assert "logged off" not in run.stderr  # it never logged in
    check = run_cli("check", str(rules), cwd=tmp_path)
    assert check.returncode == 1
    checked = [line for line in check.stdout.splitlines() if ".yaml:" in line]
    assert len(checked) == 3
    for line in checked:  # the same problems, one line each, file:line first
        assert sum(line in logged for logged in run.stderr.splitlines()) == 1, line


def test_callrouter_run_names_the_line_of_a_rules_folder_that_is_not_there(
    tmp_path: Path,
) -> None:
    """hleft33's trial: `run` with router.toml's [router] rules naming a folder
    that is not there said only `rules: no such file or folder`, where `check`
    and `explain` name router.toml's line and say what to do (issue 16)."""
    config = tmp_path / "router.toml"
    config.write_text(
        '[asterisk]\nurl = "http://127.0.0.1:9/asterisk"\nusername = "u"\n'
        'secret_env = "CR_SECRET"\n[router]\nrules = ["rules"]\n'
        f'state_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    hint = (
        f"rules: no such file or folder (named by {config}:6: [router] rules, relative "
        f"to {tmp_path.resolve()}); copy the shipped rules/ there to start from "
        "(README, Quick start), or set [router] rules"
    )
    check = run_cli("check", "--config", str(config), cwd=tmp_path)
    assert check.returncode == 1
    assert check.stdout.splitlines()[0] == hint
    run = run_cli("run", "--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"ERROR router.engine: {hint}\n" in run.stderr
    assert "callrouter run: error: not started: 1 problem" in run.stderr
    # A --rules path is the person's own: no router.toml line is named.
    run = run_cli("run", "--config", str(config), "--rules", "nowhere", cwd=tmp_path)
    assert run.returncode == 1
    assert "ERROR router.engine: nowhere: no such file or folder\n" in run.stderr


def test_callrouter_run_refuses_a_state_folder_it_cannot_write_in_one_line(
    tmp_path: Path,
) -> None:
    """hops32's trial: a read-only state folder (a tmpfs remounted ro) crashed
    `callrouter run` with a traceback from the API's event feed, after a plugin's
    own. Here the folder cannot be made (its parent is a file), which root
    cannot bypass as it does a mode: refused before touching Asterisk, one line."""
    (tmp_path / "taken").write_text("a file, not a folder\n", encoding="utf-8")
    config = write_run_config(tmp_path, tmp_path / "taken" / "state")
    run = run_cli("run", "--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert (
        f"callrouter run: error: {config}:7: [router] state_dir: cannot write in "
        f"{tmp_path / 'taken' / 'state'}: Not a directory;"
    ) in run.stderr
    assert "logged in" not in run.stderr  # refused before touching Asterisk


def test_callrouter_run_refuses_a_state_folder_another_run_holds(tmp_path: Path) -> None:
    """hops45's trial: a second `callrouter run` on the service's state_dir (one
    started by hand beside it) went live, stood by, and wrote the same 1C
    history queue and call life mark. The folder is now locked from start to
    stop: here the test holds the lock as a running service would (issue 16)."""
    import fcntl

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = write_run_config(tmp_path, state)
    held = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            run = run_cli("run", "--config", str(config), cwd=tmp_path)
        except subprocess.TimeoutExpired:  # without the lock: waits for Asterisk
            pytest.fail("a second callrouter run on a locked state_dir went on starting")
    finally:
        os.close(held)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert (
        f"callrouter run: error: {config}:7: [router] state_dir: {state} is in use by "
        f"another `callrouter run` (the service, or one started by hand with this state "
        f"folder) or a `callrouter state restore`; pid {os.getpid()} ("
    ) in run.stderr
    assert (
        ") holds its lock; two would write the same state files: stop the other one "
        "first (a restore: let it end), or give this one a state_dir of its own "
        "(docs/operations.md, Two instances on one Asterisk)\n"
    ) in run.stderr
    assert "logged in" not in run.stderr  # refused before touching Asterisk


def test_callrouter_run_names_the_process_holding_its_state_folder(tmp_path: Path) -> None:
    """hnewuser45's trial: a `callrouter run` started while `callrouter state
    restore` ran (it takes the folder's lock) said the folder was in use by
    another `callrouter run`, which no `ps` showed. The refusal names the
    holder's pid and command line, and the restore (issue 16)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = write_run_config(tmp_path, state)
    code = (
        "import fcntl,os,sys;fcntl.flock(os.open('.',0),2);print('held',flush=True);"
        "sys.stdin.read()"
    )
    with holding(code, "state-restore-stand-in", ready="held", cwd=state) as holder:
        run = run_cli("run", "--config", str(config), cwd=tmp_path)
    assert run.returncode == 1
    said = run.stderr
    assert "or a `callrouter state restore`; " in said
    assert f"; pid {holder.pid} ({sys.executable} -c " in said
    assert "state-restore-stand-in) holds its lock; two would write" in said


async def test_the_state_folder_lock_is_held_until_stop(tmp_path: Path) -> None:
    """The lock taken at start is dropped by stop: a restart in the same
    process (and the next service start) finds the folder free."""
    import fcntl

    state = tmp_path / "state"
    engine = locking_engine(tmp_path, state)
    await asyncio.to_thread(engine._check_state_dir)
    probe = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        await engine.stop()
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    finally:
        os.close(probe)


async def test_a_stop_cancelled_on_its_way_still_frees_the_state_folder(tmp_path: Path) -> None:
    """A stop cancelled during the call life's stop (the shutdown's timeout, a
    second Ctrl-C) closes the rest and raises the cancellation: the state
    folder's lock goes too, so an embedder's next engine on it may start."""
    import fcntl

    state = tmp_path / "state"
    engine = locking_engine(tmp_path, state)
    await asyncio.to_thread(engine._check_state_dir)
    in_calllife = asyncio.Event()

    async def stuck() -> None:
        in_calllife.set()
        await asyncio.Event().wait()

    engine.calllife.stop = stuck  # type: ignore[method-assign]
    stopping = asyncio.ensure_future(engine.stop())
    await in_calllife.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    probe = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free
    finally:
        os.close(probe)


async def test_a_reload_says_router_toml_changed_since_start_is_not_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """hops45's trial: `shadow = true` added to router.toml, then SIGHUP: the
    reload said `rules unchanged` and nothing of router.toml, which is read at
    start only. Now a WARNING says so, once for each change (issue 16)."""
    from router.config import load_config

    config = write_run_config(tmp_path, tmp_path / "state")
    engine = Engine(load_config(config, environ={"CR_SECRET": "s"}))
    await engine.setup()
    said = f"{config} changed since callrouter started: a reload reads the rule files only"
    try:
        await engine.reload_in_thread()
        assert said not in caplog.text  # the file as read at start
        original = config.read_text(encoding="utf-8")
        config.write_text(original.replace("[router]\n", "[router]\nshadow = true\n"))
        await engine.reload_in_thread()
        warnings = [r for r in caplog.records if r.getMessage().startswith(said)]
        assert [r.levelname for r in warnings] == ["WARNING"]
        assert "restart callrouter to apply it" in warnings[0].getMessage()
        await engine.reload_in_thread()  # the same change: said once
        assert sum(r.getMessage().startswith(said) for r in caplog.records) == 1
        config.write_text(original, encoding="utf-8")  # put back: nothing to say
        await engine.reload_in_thread()
        assert sum(r.getMessage().startswith(said) for r in caplog.records) == 1
    finally:
        await engine.stop()


async def test_a_save_between_the_read_and_the_engine_is_said_at_the_next_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """router.toml's digest was taken when the engine was made, not from the
    bytes the settings were parsed from: a save in between (an edit while
    the service starts) was taken for the file in use, and a SIGHUP never
    said it needs a restart (issue 16)."""
    from router.config import load_config

    config = write_run_config(tmp_path, tmp_path / "state")
    loaded = load_config(config, environ={"CR_SECRET": "s"})
    original = config.read_text(encoding="utf-8")
    config.write_text(original.replace("[router]\n", "[router]\nshadow = true\n"))
    engine = Engine(loaded)
    await engine.setup()
    said = f"{config} changed since callrouter started: a reload reads the rule files only"
    try:
        await engine.reload_in_thread()
        assert sum(r.getMessage().startswith(said) for r in caplog.records) == 1
        config.write_text(original, encoding="utf-8")  # the file read: nothing to say
        await engine.reload_in_thread()
        assert sum(r.getMessage().startswith(said) for r in caplog.records) == 1
    finally:
        await engine.stop()


class SlowLookup:
    """A lookup that takes ``seconds`` (0.4 s): SIGTERM arrives while the
    decision waits for it; ``finished`` tells whether it came to its end."""

    def __init__(self, seconds: float = 0.4) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.finished = False

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        async def slow_owner(number: str) -> str:
            self.started.set()
            await asyncio.sleep(self.seconds)
            self.finished = True
            return "101"

        registry.add_lookup("slow_owner", slow_owner)


SLOW = """version: 1
rules:
  - name: owner
    on: call
    lookup:
      ext: slow_owner(caller.number)
    when: ext
    do:
      - redirect: {context: callrouter-dial, exten: "{ext}"}
"""


async def test_sigterm_finishes_and_confirms_the_decision_in_flight(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SLOW, encoding="utf-8")
    slow = SlowLookup()
    engine: Engine = await engine_factory(
        rules,
        plugins=[slow],
        serve=False,
        options=EngineOptions(
            watch_interval=0, live_heartbeat=0, check_privileges=False, drain_timeout=30
        ),
    )
    caplog.set_level(logging.INFO, "router.engine")
    serving = asyncio.ensure_future(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 5)
    ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await asyncio.wait_for(slow.started.wait(), 5)
    engine.request_stop()  # SIGTERM mid-decision
    # hops45's trial: "finishing 1 decisions in flight" (issue 16).
    assert "stopping: no new calls; finishing 1 decision in flight" in caplog.messages
    later = ajam_replay.inbound_call(caller="79161234568", did="74950000001")
    await asyncio.wait_for(serving, 10)  # the 0.4 s lookup, not the 30 s drain_timeout
    ended = time.monotonic()
    (record,) = engine.records  # the call after SIGTERM was not taken
    assert record.outcome == "executed"
    assert [(a.kind, a.status) for a in record.actions] == [("redirect", "confirmed")]
    assert [r["Channel"] for r in ajam_replay.sent("Redirect")] != [later]
    assert not engine.router.tasks  # nothing left for stop() to drain or cancel
    await engine.stop()
    # Plugins, scheduler, logoff: no waiting left. Milliseconds when right; the
    # bound is far below the 30 s drain_timeout a stop that drained again would
    # wait, and far above what a loaded machine stretches them to (it was 1 s;
    # issue 16).
    assert time.monotonic() - ended < 10


async def test_sigterm_with_nothing_in_flight_stops_at_once(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD, encoding="utf-8")
    engine: Engine = await engine_factory(rules, serve=False)
    serving = asyncio.ensure_future(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 5)
    engine.request_stop()
    # The long-poll (20 s) is cancelled, not waited out: milliseconds when right,
    # and a loaded machine's seconds still well below the poll (it was 1 s; issue 16).
    await asyncio.wait_for(serving, 5.0)


async def test_a_second_sigterm_stops_without_waiting(
    engine_factory: EngineFactory, ajam_replay: ReplayAsterisk, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SLOW, encoding="utf-8")
    slow = SlowLookup(seconds=60)
    engine: Engine = await engine_factory(
        rules,
        plugins=[slow],
        serve=False,
        options=EngineOptions(watch_interval=0, live_heartbeat=0, drain_timeout=30),
    )
    serving = asyncio.ensure_future(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 5)
    ajam_replay.inbound_call(caller="79161234567", did="74950000001")
    await asyncio.wait_for(slow.started.wait(), 5)
    engine.request_stop()
    engine.request_stop()
    # Neither the 60 s lookup nor the 30 s drain_timeout is waited for: the
    # lookup is still under way when serve() returns (0.3 s against a 0.4 s
    # lookup was a race a loaded machine lost; issue 16).
    await asyncio.wait_for(serving, 10)
    assert not slow.finished


DRAIN = 3.0


async def test_one_sigterm_drains_for_drain_timeout_in_all(
    engine_factory: EngineFactory,
    ajam_replay: ReplayAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/operations.md: decisions in flight get drain_timeout. serve() waited
    it out, then stop() waited a whole drain_timeout again for the same
    decisions: twice as long as documented before the process ended."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n", encoding="utf-8")
    engine: Engine = await engine_factory(
        rules,
        serve=False,
        options=EngineOptions(watch_interval=0, live_heartbeat=0, drain_timeout=DRAIN),
    )
    serving = asyncio.ensure_future(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), 5)
    decision = asyncio.ensure_future(asyncio.sleep(30))  # a lookup that never ends
    engine.router._track(decision)
    loop = asyncio.get_running_loop()
    began = loop.time()
    engine.request_stop()
    await asyncio.wait_for(serving, 5 * DRAIN)  # a bound on a hang only
    await engine.stop()
    took = loop.time() - began
    # drain_timeout, never less; late on a loaded machine, but twice it is the
    # bug: 3 s gives the host 3 s of slack (1 s gave it 0.7 s; issue 16).
    assert 0.9 * DRAIN <= took < 2 * DRAIN, took
    assert decision.cancelled()
    # One decision is "1 decision ... was", not "1 decisions" (issue 16).
    assert "stop: 1 decision still running after 3.0 s was cancelled" in caplog.messages


class _Lifecycle:
    """Records its startup and shutdown; ``fail_register`` breaks its register."""

    def __init__(
        self, name: str, *, fail_register: bool = False, fail_startup: bool = False
    ) -> None:
        self.__name__ = name
        self.calls: list[str] = []
        self.fail_register = fail_register
        self.fail_startup = fail_startup

    @hookimpl
    def callrouter_register(self, registry: Registry) -> None:
        if self.fail_register:
            raise RuntimeError("boom in register")

    @hookimpl
    def callrouter_startup(self) -> None:
        self.calls.append("startup")
        if self.fail_startup:
            raise RuntimeError("boom in startup")

    @hookimpl
    def callrouter_shutdown(self) -> None:
        self.calls.append("shutdown")


async def test_a_refused_start_shuts_down_no_plugin(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """A start refused (here: a plugin's register raised) ran no startup, so
    no plugin gets a shutdown either (hookspecs.callrouter_shutdown)."""
    (tmp_path / "rules.yaml").write_text(GOOD, encoding="utf-8")
    broken, bystander = _Lifecycle("broken", fail_register=True), _Lifecycle("bystander")
    with pytest.raises(RulesRefused):
        await engine_factory(tmp_path / "rules.yaml", plugins=[broken, bystander])
    assert broken.calls == []
    assert bystander.calls == []


async def test_shutdown_follows_a_startup_once(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    """Each plugin whose startup was called gets one shutdown, even one whose
    startup raised (it may have opened something before)."""
    (tmp_path / "rules.yaml").write_text(GOOD, encoding="utf-8")
    good, failing = _Lifecycle("good"), _Lifecycle("failing", fail_startup=True)
    engine = await engine_factory(tmp_path / "rules.yaml", plugins=[good, failing], serve=False)
    assert good.calls == failing.calls == ["startup"]
    await engine.stop()
    await engine.stop()
    assert good.calls == failing.calls == ["startup", "shutdown"]


def test_a_state_folder_that_cannot_be_opened_to_lock_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state folder its user may write in but not read (0300: the write
    probe passes, root is never refused) failed the lock's open with a
    PermissionError traceback; it is the start's error naming the line."""
    from router.config import load_config
    from router.errors import ConfigError

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = write_run_config(tmp_path, state)
    engine = Engine(
        load_config(config, environ={"CR_SECRET": "s"}),
        options=EngineOptions(lock_state_dir=True),
    )
    real_open = os.open

    def no_listing(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_DIRECTORY and Path(str(path)) == state:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_listing)
    with pytest.raises(ConfigError) as refused:
        engine._check_state_dir()
    assert str(refused.value) == (
        f"{config}:7: [router] state_dir: cannot open {state} to lock it: Permission "
        "denied; give the service's user a folder it may read and write (chmod 700)"
    )


@pytest.mark.parametrize("made", ["fifo", "file"])
def test_a_state_dir_that_is_no_folder_is_said_as_what_it_is(tmp_path: Path, made: str) -> None:
    """A FIFO or a file at state_dir's name was "cannot write in STATE: File
    exists", neither what nor why (issue 16); said as what it is, never
    opened (a FIFO blocks no start: the look is a stat)."""
    from router.errors import ConfigError

    state = tmp_path / "state"
    if made == "fifo":
        os.mkfifo(state)
    else:
        state.write_bytes(b"")
    engine = locking_engine(tmp_path, state)
    with pytest.raises(ConfigError) as refused:
        engine._check_state_dir()
    what = "a FIFO, socket or device" if made == "fifo" else "a file"
    assert str(refused.value) == (
        f"{tmp_path / 'router.toml'}:6: [router] state_dir: {state} is {what}, not a folder: "
        "callrouter and its plugins keep their state in a folder there (docs/operations.md, "
        "State and backups): move it away, or give another state_dir"
    )
