"""The documented least-privilege manager user on the real Asterisk (issue 11 item 8):
what the engine needs passes, a missing class is a privilege error on a session
that stays logged in, and the sandbox's user is the one the docs describe."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.ami.client import AJAMClient, ClientSettings
from router.errors import AMIPrivilegeError
from router.sandbox import Sandbox

if TYPE_CHECKING:
    from router.testing import EngineFactory

REPO = Path(__file__).parents[2]


def documented_write_line() -> str:
    text = (REPO / "docs" / "asterisk.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^write = [a-z,]+$", text, re.MULTILINE)
    return line


def test_the_sandbox_router_user_is_the_documented_one() -> None:
    conf = (REPO / "router" / "sandbox" / "conf" / "manager.conf").read_text(encoding="utf-8")
    section = conf.split("[router]", 1)[1].split("\n[", 1)[0]
    assert documented_write_line() in section.splitlines()


async def test_documented_user_gets_a_privilege_error_and_keeps_its_session(
    sandbox: Sandbox, sandbox_globals_kept: None
) -> None:
    """The global CALLROUTER_MODE it sets is set back after it (the session's
    Asterisk is shared: the next module would find it ``night``)."""
    settings = ClientSettings(
        url=sandbox.url, username="router", secret=sandbox.users().get("router", sandbox.secret)
    )
    async with AJAMClient(settings) as client:
        for _ in range(2):
            with pytest.raises(AMIPrivilegeError) as caught:
                await client.send("DBPut", {"Family": "callrouter", "Key": "mode", "Val": "night"})
        assert str(caught.value) == (
            "DBPut: Permission denied: the manager user 'router' "
            "needs write class system (manager.conf)"
        )
        assert client.session_generation == 1  # no re-login, so no event-stream gap
        # What the shipped rules and the engine do instead is allowed.
        await client.send("Setvar", {"Variable": "CALLROUTER_MODE", "Value": "night"})
        value = await client.send("Getvar", {"Variable": "CALLROUTER_MODE"})
        assert value.response.get("Value") == "night"
        await client.send(
            "UserEvent", {"UserEvent": "CallRouterLive", "Instance": "t"}, validate=False
        )
        assert client.session_generation == 1


async def test_a_read_only_shadow_user_starts_with_one_warning_and_no_error(
    sandbox: Sandbox,
    manager_user: Callable[..., None],
    engine_factory: EngineFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/operations.md: a read-only manager user (no ``write`` class) is enough
    in shadow mode. Asterisk 22 refuses it ``CoreShowChannels`` (write =
    reporting or system): the start says so once, as a WARNING naming what is
    lost and the class to add, not as ``ERROR reconcile at start failed``
    (issue 16), and it is the one WARNING: the dialplan check says at INFO that
    it could not read the dialplan."""
    from router.engine import LISTING_REFUSED

    manager_user(sandbox, "shadow-ro", read="call,dialplan,user", write="")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: sales\n    on: call\n    do:\n"
        "      - redirect: {context: test-sales, exten: s}\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.INFO):
        engine = await engine_factory(rules, sandbox=sandbox, username="shadow-ro", shadow=True)
        assert engine.ready.is_set()
        await engine_factory.close()  # the dialplan check at start has run by then
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        LISTING_REFUSED.format(
            reason="CoreShowChannels: Permission denied: the manager user 'shadow-ro' "
            "needs one of the write classes reporting, system (manager.conf)"
        )
    ]
    assert any(
        "the dialplan could not be read (ShowDialPlan needs write = reporting)" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
    )


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("spaced-classes", "call, dialplan, user"),
        ("prefix-classes", "cal,dialplan,user"),
        ("plain-classes", "call,dialplan,user,agent,system"),
    ],
)
def test_asterisk_takes_the_classes_as_the_manager_conf_check_reads_them(
    sandbox: Sandbox, manager_user: Callable[..., None], name: str, read: str
) -> None:
    """``callrouter check --manager-conf-file`` reads a user's ``read`` line as
    Asterisk 22 does (router.manager_conf.asterisk_classes): ``call, dialplan,
    user`` is ``call`` alone, since get_perm does not strip the items, and an
    item but the last is taken for each class it begins."""
    from router.manager_conf import asterisk_classes

    manager_user(sandbox, name, read=read, write="call")
    shown = sandbox.cli(f"manager show user {name}")
    (perm,) = re.findall(r"read perm: (\S*)", shown)
    assert set(perm.split(",")) == asterisk_classes(read)
