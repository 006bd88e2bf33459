"""The pytest part of the kit: fixtures, loaded by ``pytest_plugins = ["router.testing"]``.

Kept apart so that ``import router.testing`` needs no pytest; the package
names this module in its own ``pytest_plugins``, which pytest follows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from router.ami.client import AJAMClient
from router.errors import SandboxError
from router.sandbox import Sandbox
from router.sandbox.phones import Phones
from router.testing.asterisk import sandbox_required, shipped_dialplan
from router.testing.engines import Engines
from router.testing.replay import ReplayAsterisk

__all__ = [
    "ajam_client",
    "ajam_replay",
    "asterisk_sandbox",
    "engine_factory",
    "phones",
    "sandbox_phones",
]


@pytest.fixture
def ajam_replay() -> ReplayAsterisk:
    """A fake Asterisk AJAM endpoint: ``transport=replay`` for clients, recorded
    ``replay.actions``, ``replay.queue_event(...)`` for WaitEvent."""
    return ReplayAsterisk()


@pytest_asyncio.fixture
async def ajam_client(ajam_replay: ReplayAsterisk) -> AsyncIterator[AJAMClient]:
    """An :class:`AJAMClient` logged in to ``ajam_replay``; logged off afterwards."""
    async with ajam_replay.client() as client:
        yield client


@pytest.fixture(scope="session")
def asterisk_sandbox() -> Iterator[Sandbox]:
    """A real Asterisk (Debian's 22) for the session, with the shipped dialplan.

    Users ``router`` (least privilege, as docs/asterisk.md), ``admin`` and
    ``watcher`` share ``sandbox.secret``, a secret of this sandbox alone: a
    router left over from another test run on the host, reconnecting to a port
    this sandbox took, cannot log in, route its calls or claim to be its live
    router (the heartbeat key derives from the secret). Skipped with the
    reason when the sandbox cannot be provisioned; fails instead under ``CI``
    or with ``CALLROUTER_REQUIRE_SANDBOX=1``.
    """
    try:
        box = Sandbox.start(
            name=f"plugin-test-{os.getpid()}",
            extra_dialplan=shipped_dialplan(),
            secret=f"plugin-test-{secrets.token_hex(8)}",
        )
    except SandboxError as exc:
        message = f"the Asterisk sandbox could not be started: {exc}"
        if sandbox_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield box
    finally:
        box.remove()


@pytest.fixture(scope="session")
def sandbox_phones(asterisk_sandbox: Sandbox) -> Iterator[Phones]:
    """Real SIP phones (baresip) 101-105 and the PSTN side on ``asterisk_sandbox``,
    for the whole session; prefer ``phones``, which resets them for each test."""
    try:
        running = Phones.start(asterisk_sandbox, extensions=("101", "102", "103", "104", "105"))
    except SandboxError as exc:
        message = f"the sandbox phones could not be started: {exc}"
        if sandbox_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def phones(sandbox_phones: Phones) -> Phones:
    """The sandbox phones, each in "answer" mode with no calls and nothing playing.

    ``phones["101"].mode = "busy"``, ``phones.pstn.call(did=..., caller=...)``,
    ``phones.pbx`` is the Asterisk they are registered with (``asterisk_sandbox``,
    shipped dialplan loaded). See :mod:`router.sandbox.phones`.
    """
    sandbox_phones.reset()
    return sandbox_phones


@pytest_asyncio.fixture
async def engine_factory(
    ajam_replay: ReplayAsterisk,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Engines]:
    """``await engine_factory(rules, plugins=[...], settings={"name": {...}})``: a
    started, serving :class:`Engine` (on ``ajam_replay`` unless ``transport=`` or
    ``sandbox=`` is given); stopped when the test ends.

    Built-in plugins are loaded; installed ones (entry points) only with
    ``entry_points=True``, so a test controls exactly which plugins run.
    """
    engines = Engines(ajam_replay, tmp_path_factory.mktemp("callrouter-state"))
    try:
        yield engines
    finally:
        await engines.close()
