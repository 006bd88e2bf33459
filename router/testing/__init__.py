"""Test helpers for plugin authors: a fake Asterisk, engines on it, and a pytest plugin.

Importing :mod:`router.testing` needs no pytest, so a demo or a benchmark can
use the fake (:class:`ReplayAsterisk`) and :class:`Engines` too. As a pytest
plugin (like tox's ``tox.pytest``), enable it in your plugin's
``tests/conftest.py``::

    pytest_plugins = ["router.testing"]

or on the command line with ``pytest -p router.testing``. The fixtures need
``pytest-asyncio`` (callrouter's ``test`` extra):

``ajam_replay``
    A :class:`ReplayAsterisk`: a fake Asterisk on the AJAM client's transport
    seam, so clients and engines on it run the same session, cookie, retry and
    error-mapping code as against a real Asterisk. It answers AJAM actions with
    real rawman framing and a ``mansession_id`` cookie, records every action
    sent (``replay.sent("Redirect")``) and hands queued events to
    ``WaitEvent`` (``replay.queue_event(...)``, ``replay.queue_rawman(path)``,
    ``replay.inbound_call(...)``).
``ajam_client``
    An :class:`~router.ami.client.AJAMClient` logged in over ``ajam_replay``.
``asterisk_sandbox``
    A real Asterisk for the whole session (:mod:`router.sandbox`) with the
    shipped dialplan (:data:`SHIPPED_DIALPLAN`). Skipped with the reason when it
    cannot be provisioned, unless ``CI`` is set or ``CALLROUTER_REQUIRE_SANDBOX=1``
    (then the test fails with the reason).
``engine_factory``
    ``await engine_factory(rules, plugins=[MyPlugin()], settings={...})`` builds,
    starts and serves an :class:`~router.engine.Engine` against ``ajam_replay``
    (or ``transport=``, or ``sandbox=``); the fixture stops it after the test.

A typical test::

    async def test_vip_calls_are_tagged(ajam_replay, engine_factory):
        engine = await engine_factory(RULES, plugins=[VipPlugin()],
                                      settings={"vip": {"numbers": ["+79161234567"]}})
        channel = ajam_replay.inbound_call(caller="+79161234567", did="74951234567")
        await ajam_replay.settle(engine)
        assert ajam_replay.count("Redirect") == 1
        assert engine.records[-1].outcome == "executed"

For a hook's unit test, :mod:`~router.testing.builders` makes its arguments
without ``router`` internals: ``make_call()``, ``make_decision(("redirect",
{...}))``, ``make_trace(lookups={"onec.responsible": answer})``,
``make_event("Hangup", ...)``, a :class:`CallTimeline` to play a call's
events, ``config_from_toml(tmp_path, text)``, and :class:`StubEngine`, an
``EngineAPI`` that records the jobs a plugin schedules.

The package: :mod:`~router.testing.replay` (the fake),
:mod:`~router.testing.engines`, :mod:`~router.testing.builders`,
:mod:`~router.testing.asterisk` (the shipped dialplan),
:mod:`~router.testing.fixtures` (the only module importing pytest).
Import from ``router.testing`` itself: the submodules may move.
"""

from __future__ import annotations

from router.ami.http import StaleConnectionError
from router.sandbox import Sandbox
from router.testing.asterisk import SHIPPED_DIALPLAN, sandbox_required, shipped_dialplan
from router.testing.builders import (
    CallTimeline,
    ScheduledRun,
    StubEngine,
    config_from_toml,
    load_plugins,
    make_call,
    make_config,
    make_decision,
    make_event,
    make_trace,
)
from router.testing.engines import EngineFactory, Engines, serving
from router.testing.replay import ActionHandler, FakeChannel, ReplayAsterisk, Reply, SentAction

#: pytest follows this when it loads ``router.testing`` as a plugin.
pytest_plugins = ["router.testing.fixtures"]

__all__ = [
    "SHIPPED_DIALPLAN",
    "ActionHandler",
    "CallTimeline",
    "EngineFactory",
    "Engines",
    "FakeChannel",
    "ReplayAsterisk",
    "Reply",
    "Sandbox",
    "ScheduledRun",
    "SentAction",
    "StaleConnectionError",
    "StubEngine",
    "config_from_toml",
    "load_plugins",
    "make_call",
    "make_config",
    "make_decision",
    "make_event",
    "make_trace",
    "sandbox_required",
    "serving",
    "shipped_dialplan",
]
