"""Plain helpers that several live tests share: rules, dialplan, ports, callers, runs.

Fixtures built on these live in ``conftest.py`` (a fixture imported into a
test module shadows its parameter, which ruff reports as F811); this module
holds only constants and functions, imported by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
from callrouter_onec.double import DEFAULT_USER, OneCDouble

from router.ami.client import AJAMClient, ClientSettings
from router.config import Config, load_config
from router.dialplan import INBOUND_CONTEXT
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.sandbox import free_port as free_port
from router.sandbox.calls import CallPlacer

REPO = Path(__file__).parents[2]
T = TypeVar("T")
#: The engine tests' rules and directory.csv.
ENGINE_FIXTURES = REPO / "tests" / "fixtures" / "engine"
#: The 1C plugin's rules: a caller's responsible manager, from 1C.
ONEC_RULES = REPO / "plugins" / "onec" / "tests" / "fixtures" / "rules"

#: The password of the in-process 1C double that conftest's ``double`` starts.
ONEC_PASSWORD = "пароль"
#: The frequency (Hz) of conftest's ``tone``: what the PSTN phone plays once a call
#: is up, for a Goertzel filter to find in a recording (test_recordings_e2e.py).
TONE_HZ = 1000

#: One rule: every call goes to the queue ``sales`` of :data:`TEST_QUEUE`.
SALES_RULES = """version: 1
rules:
  - name: sales
    on: call
    do:
      - redirect: {context: test-queue, exten: sales}
"""

#: A context that holds a call two minutes: where the test rules send calls.
TEST_QUEUE = """
[test-queue]
exten => _[a-z0-9].,1,NoOp(test-queue ${EXTEN})
 same => n,Wait(120)
"""


#: An entry for callers written as people write them: the caller ID as
#: written arrives in CALLERID(name), and goes on to callrouter-inbound.
FORMATTED_CALLER = """
[test-formatted]
exten => _X.,1,Set(CALLERID(num)=${CALLERID(name)})
 same => n,Set(CALLERID(name)=)
 same => n,Goto(callrouter-inbound,${EXTEN},1)
"""


def example_dialplan() -> str:
    """``examples/asterisk/extensions.conf``, the dialplan users copy (the
    package's copy of its snippet is :func:`router.testing.shipped_dialplan`)."""
    return (REPO / "examples" / "asterisk" / "extensions.conf").read_text()


def example_dialplan_dialing(context: str) -> str:
    """:func:`example_dialplan` dialing ``Local/<target>@context`` (a test's
    phones in the dialplan) instead of a PJSIP phone."""
    shipped = example_dialplan()
    phone = "Dial(PJSIP/${CALLROUTER_TARGET},20,t)"
    assert phone in shipped, "the shipped dial context changed: update this test's phone"
    return shipped.replace(phone, f"Dial(Local/${{CALLROUTER_TARGET}}@{context},20,t)")


@contextlib.asynccontextmanager
async def admin_placer(
    box: Sandbox,
    *,
    request_timeout: float | None = None,
    inbound_context: str = INBOUND_CONTEXT,
    ignore_contexts: Iterable[str] = (),
) -> AsyncIterator[CallPlacer]:
    """A :class:`CallPlacer` logged in as the sandbox's ``admin``; without
    ``request_timeout``, the client's own default."""
    settings = ClientSettings(url=box.url, username="admin", secret=box.secret)
    if request_timeout is not None:
        settings = replace(settings, request_timeout=request_timeout)
    async with (
        AJAMClient(settings) as client,
        CallPlacer(
            client, inbound_context=inbound_context, ignore_contexts=ignore_contexts
        ) as placer,
    ):
        yield placer


def sales_router_toml(box: Sandbox, folder: Path) -> Path:
    """``folder/router.toml`` routing by :data:`SALES_RULES` as the sandbox's ``router``."""
    rules = folder / "rules.yaml"
    rules.write_text(SALES_RULES, encoding="utf-8")
    path = folder / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret = "{box.secret}"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{folder / "state"}"\n',
        encoding="utf-8",
    )
    return path


def onec_api_config(
    box: Sandbox, double: OneCDouble, state: Path, port: int, *, password: str, tokens: str
) -> Config:
    """The engine's settings for the live page and the event feed: the sandbox's
    Asterisk, the 1C plugin's rules (:data:`ONEC_RULES`) on ``double`` (its
    password ``password``), ``[api]`` on ``port`` with ``tokens`` (its
    ``[api.tokens.*]`` tables); written beside ``state``."""
    state.mkdir(parents=True, exist_ok=True)
    path = state.parent / f"{state.name}.toml"
    path.write_text(
        f'[asterisk]\nurl = "{box.url}"\nusername = "router"\nsecret = "{box.secret}"\n'
        f'[router]\nrules = ["{ONEC_RULES}"]\nstate_dir = "{state}"\n'
        f'[plugins.onec]\nurl = "{double.url}"\nusername = "{DEFAULT_USER}"\n'
        f'password = "{password}"\ntimeout = 1.0\n'
        f'[api]\nlisten = "127.0.0.1:{port}"\n' + tokens,
        encoding="utf-8",
    )
    return load_config(path)


def builtin_engine(url: str, secret: str, folder: Path, rules: str, tables: str = "") -> Engine:
    """An engine on ``url`` as the sandbox's ``router``, routing by ``rules``
    (YAML text) with the built-in plugins only and ``tables`` (more
    router.toml, e.g. ``[plugins.directory.entries...]``); no rule watcher."""
    (folder / "rules.yaml").write_text(rules, encoding="utf-8")
    path = folder / "router.toml"
    path.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "router"\nsecret = "{secret}"\n'
        f'[router]\nrules = ["{folder / "rules.yaml"}"]\n{tables}',
        encoding="utf-8",
    )
    return Engine(
        load_config(path),
        plugins=Plugins.load(entry_points=False),
        options=EngineOptions(watch_interval=0),
    )


def quiet_engine(config: Config) -> Engine:
    """An engine with no rule watcher and no live heartbeat."""
    return Engine(
        config,
        plugins=Plugins.load(),
        options=EngineOptions(watch_interval=0, live_heartbeat=0),
    )


@contextlib.asynccontextmanager
async def serving_leniently(engine: Engine) -> AsyncIterator[Engine]:
    """Serve ``engine`` once ready (10 s); stop it on the way out, whatever
    ``serve()`` ended with (waited 15 s): for tests whose point is the calls,
    unlike :func:`router.testing.serving`, which lets a failed stop fail."""
    await engine.start()
    task = asyncio.ensure_future(engine.serve())
    try:
        await asyncio.wait_for(engine.ready.wait(), 10)
        yield engine
    finally:
        engine.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await engine.stop()


def start_run(
    folder: Path, url: str, secret: str, *, rules: str = SALES_RULES, extra_toml: str = ""
) -> tuple[subprocess.Popen[bytes], Path]:
    """``callrouter run`` as a process logging JSON to ``folder/router.log``
    (the secret from the environment); ``extra_toml`` is appended to its config."""
    rules_path = folder / "rules.yaml"
    rules_path.write_text(rules, encoding="utf-8")
    config = folder / "router.toml"
    config.write_text(
        f'[asterisk]\nurl = "{url}"\nusername = "router"\nsecret_env = "CR_SECRET"\n'
        f'[router]\nrules = ["{rules_path}"]\nstate_dir = "{folder / "state"}"\n'
        'log_format = "json"\n' + extra_toml,
        encoding="utf-8",
    )
    log_path = folder / "router.log"
    return run_process(config, log_path, {**os.environ, "CR_SECRET": secret}), log_path


def run_process(config: Path, log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """``callrouter run --config config`` as a process in the environment
    ``env``, its output (and errors) appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "router.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=log,
            env=dict(env),
        )


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to a run still running, SIGKILL if it has not ended within 15 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def tail(log_path: Path) -> str:
    """The end of a run's log, for an assertion's message."""
    return log_path.read_text(encoding="utf-8")[-3000:]


def records(log_path: Path) -> list[dict[str, Any]]:
    """A JSON log's records; a line that is not JSON becomes ``{"message": line}``."""
    out: list[dict[str, Any]] = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"message": line})
    return out


async def logged(
    proc: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float
) -> dict[str, Any]:
    """The first record whose message has ``text``; fails if the run exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for record in records(log_path):
            if text in str(record.get("message", "")):
                return record
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n" + tail(log_path))
        await asyncio.sleep(0.1)
    raise AssertionError(f"never logged {text!r}:\n" + tail(log_path))


def routing_rules(folder: Path) -> Path:
    """``folder/rules`` with the engine fixtures' routing.yaml less ``slow-crm``:
    its lookup comes from a plugin only the in-process engine tests register
    (test_engine.py), and ``callrouter run`` refuses to start on a rule whose
    lookup nobody provides (issue 11 item 7)."""
    target = folder / "rules"
    target.mkdir()
    text = (ENGINE_FIXTURES / "rules" / "routing.yaml").read_text()
    start, end = text.index("  - name: slow-crm"), text.index("  - name: owner")
    (target / "routing.yaml").write_text(text[:start] + text[end:])
    return target


async def start_engine(
    config: Config, *, shadow: bool = False, ready_timeout: float = 10.0
) -> tuple[Engine, asyncio.Future[None]]:
    """An engine for ``config`` (no rule watcher), serving and ready; stop it
    with :func:`stop_engine`. For tests that stop and start it themselves."""
    engine = Engine(
        config, plugins=Plugins.load(), shadow=shadow, options=EngineOptions(watch_interval=0)
    )
    return await start_engine_from(engine, ready_timeout)


async def start_engine_from(
    engine: Engine, ready_timeout: float = 10.0
) -> tuple[Engine, asyncio.Future[None]]:
    """:func:`start_engine` for an engine the caller built (its own plugins)."""
    await engine.start()
    task = asyncio.ensure_future(engine.serve())
    await asyncio.wait_for(engine.ready.wait(), ready_timeout)
    return engine, task


async def stop_engine(engine: Engine, task: asyncio.Future[None]) -> None:
    """Stop what :func:`start_engine` started; ``serve()`` must end within 30 s."""
    engine.request_stop()
    await asyncio.wait_for(task, 30)
    await engine.stop()


class SharedEngine:
    """A test module's one router on the shared Asterisk, which a test may stop.

    One router at a time on an Asterisk (a second would route the same calls),
    so a test that needs Asterisk without the module's router, or with a router
    of its own, stops this one (:meth:`stop`); the next test that needs it
    serving gets it started again (:meth:`serving`, a new engine from
    ``build``, on the same config and state_dir). Every test then holds in any
    order, and a run in the written order starts no engine more than before.
    """

    def __init__(self, build: Callable[[], Engine], *, ready_timeout: float = 10.0) -> None:
        self._build = build
        self._ready_timeout = ready_timeout
        self._running: tuple[Engine, asyncio.Future[None]] | None = None

    async def serving(self) -> Engine:
        """The router, serving and ready: the one that runs, or a new one."""
        if self._running is not None and self._running[1].done():
            await self.stop()  # it ended by itself: say why (its exception), if any
        if self._running is None:
            self._running = await start_engine_from(self._build(), self._ready_timeout)
        return self._running[0]

    async def stop(self) -> None:
        """Stop the router if it runs (:func:`stop_engine`); no-op otherwise."""
        running, self._running = self._running, None
        if running is not None:
            await stop_engine(*running)


async def until(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    step: float = 0.1,
) -> T:
    """The first true value of ``check()`` (awaited when it is a coroutine),
    asked every ``step`` s and once more at the deadline; fails naming ``what``
    after ``timeout`` s. The wait is on the event loop, so a call placer or an
    engine on it goes on reading Asterisk meanwhile: what a fixed sleep stood
    for, bounded, and no longer than it takes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(step)


async def cli(box: Sandbox, command: str) -> str:
    """``box.cli(command)`` off the event loop: it runs ``asterisk -rx`` and
    blocks up to its timeout, while a call placer or an engine on the loop must
    go on reading Asterisk."""
    return await asyncio.to_thread(box.cli, command)


def manager_sessions(box: Sandbox, user: str) -> int:
    """The manager sessions of ``user`` that Asterisk holds (``manager show
    connected``, AJAM sessions among them). An idle AJAM session is dropped
    once it expired (``httptimeout``) and Asterisk's next purge ran (every
    5 s), with the events queued for it: what a test waiting out the expiry
    waits for, rather than the worst case of the two. Blocking (``asterisk -rx``)."""
    shown = box.cli("manager show connected")
    return sum(1 for line in shown.splitlines() if line.split()[:1] == [user])


async def manager_session_dropped(box: Sandbox, user: str, timeout: float) -> None:
    """Waits until Asterisk holds no manager session of ``user``
    (:func:`manager_sessions`); fails after ``timeout`` s."""

    async def dropped() -> bool:
        return await asyncio.to_thread(manager_sessions, box, user) == 0

    await until(dropped, timeout, f"Asterisk dropping the manager session of {user}", step=0.5)


def dialplan_globals(box: Sandbox) -> dict[str, str]:
    """``dialplan show globals``: each global's name and value."""
    shown = box.cli("dialplan show globals")
    return dict(re.findall(r"^\s+([^\s=]+)=(.*)$", shown, re.MULTILINE))


def set_globals(box: Sandbox, values: dict[str, str]) -> None:
    """Set dialplan globals through AMI as ``admin`` (Setvar without a channel:
    any value, unlike the CLI's one word)."""
    with httpx.Client(timeout=10) as client:
        login = {"action": "Login", "username": "admin", "secret": box.secret}
        assert "Success" in client.post(f"{box.url}/rawman", data=login).text
        for name, value in values.items():
            data = {"action": "Setvar", "Variable": name, "Value": value}
            reply = client.post(f"{box.url}/rawman", data=data)
            assert "Success" in reply.text, reply.text
