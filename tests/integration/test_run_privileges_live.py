"""The manager user's write classes asked right after the login, on the real
Asterisk 22 (issue 16): a user without ``write = call`` was only reported when
the first call's ``Redirect`` was refused, every call meanwhile taking its
default route. Now the start logs an ERROR naming the user and the class, and
``/readyz`` says the same until a login that has it; ``originate`` is asked
for where the configuration dials (``[api]``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from router.config import load_config
from router.engine import Engine, EngineOptions
from router.plugins import Plugins
from router.sandbox import Sandbox
from router.testing import serving
from tests.integration._live import SALES_RULES, free_port

pytestmark = pytest.mark.integration


def engine_as(
    box: Sandbox, user: str, tmp_path: Path, *, api: bool = False, shadow: bool = False
) -> Engine:
    tmp_path.mkdir(exist_ok=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(SALES_RULES, encoding="utf-8")
    path = tmp_path / "router.toml"
    text = (
        f'[asterisk]\nurl = "{box.url}"\nusername = "{user}"\nsecret = "{box.secret}"\n'
        f'[router]\nrules = ["{rules}"]\nstate_dir = "{tmp_path / "state"}"\n'
        f"shadow = {'true' if shadow else 'false'}\n"
    )
    if api:
        text += f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
    path.write_text(text, encoding="utf-8")
    return Engine(
        load_config(path),
        plugins=Plugins.load(),
        options=EngineOptions(watch_interval=0, live_heartbeat=0, audit_dialplan=False),
    )


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_user_without_write_call_is_an_error_at_start_and_not_ready(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The sandbox's watcher: read = call, write = none.
    caplog.set_level(logging.INFO)
    async with serving(engine_as(sandbox, "watcher", tmp_path)) as engine:
        (error,) = [e for e in errors(caplog) if "Redirect" in e]
        assert error.startswith(
            "Asterisk refuses the manager user 'watcher' Redirect (write = call missing "
            "in manager.conf): no call is routed: each takes the dialplan's default route; "
            "add call to the write line of manager.conf [watcher] (beside the classes there)"
        )
        health = engine.health()
        assert not health.ready
        assert health.checks["privileges"] is False
        assert error in health.reasons
    # The client's own WARNING for the first refusal is not said beside it.
    assert not any(
        r.levelno == logging.WARNING and "Redirect: Permission denied" in r.getMessage()
        for r in caplog.records
    )


async def test_a_user_without_originate_is_an_error_with_api_but_routes(
    sandbox: Sandbox,
    manager_user: Callable[..., None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager_user(sandbox, "no-originate", write="call,user,reporting")
    caplog.set_level(logging.INFO)
    async with serving(engine_as(sandbox, "no-originate", tmp_path, api=True)) as engine:
        assert errors(caplog) == [
            "Asterisk refuses the manager user 'no-originate' Originate (write = originate "
            "missing in manager.conf): the API's click-to-call and the rules' originate "
            "actions fail; add originate to the write line of manager.conf [no-originate] "
            "(beside the classes there), run asterisk -rx 'manager reload', then restart "
            "callrouter (a session keeps the classes it logged in with)"
        ]
        assert engine.health().checks["privileges"] is True
        assert engine.health().ready


async def test_the_documented_user_and_a_shadow_instance_hear_nothing(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serving(engine_as(sandbox, "router", tmp_path / "a", api=True)) as engine:
        assert engine.health().ready, engine.health().reasons
    # Shadow mode never acts: a read-only user is enough (docs/operations.md).
    async with serving(engine_as(sandbox, "watcher", tmp_path / "b", shadow=True)):
        pass
    assert errors(caplog) == []


async def test_a_user_without_write_reporting_is_one_warning_a_login_and_stays_ready(
    sandbox: Sandbox,
    manager_user: Callable[..., None],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asterisk 22 refuses ``CoreStatus`` without ``write = reporting`` (or
    system), as it refuses ``CoreShowChannels``: the start says so once, naming
    the class and what is lost, before the start's reconcile is refused (no
    second WARNING for it); /readyz stays ready with the sentence in its
    ``warnings``."""
    from router.privilege_watch import PRIVILEGE_MISSING
    from router.privileges import REPORTING

    manager_user(sandbox, "no-reporting", write="call,originate,user")
    caplog.set_level(logging.INFO)
    async with serving(engine_as(sandbox, "no-reporting", tmp_path)) as engine:
        text = PRIVILEGE_MISSING.format(
            user="no-reporting", action="CoreStatus", cls="reporting", lost=REPORTING.lost
        )
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert [w for w in warned if "reporting" in w or "CoreShowChannels" in w] == [text]
        health = engine.health()
        assert health.ready, health.reasons
        assert health.warnings == (text,)
    assert errors(caplog) == []
